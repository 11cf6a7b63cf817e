//! The client and operator commands of the `suppressd` binary (everything but `serve`): thin edges
//! that parse arguments, call the library or a running server, print, and choose the exit code.

pub mod args;
pub mod audit;
pub mod consent;
pub mod controls;
pub mod health;
pub mod import;
pub mod keys;
pub mod receipt;
pub mod rights;
pub mod triggers;

use crate::{
    cli::args::{ChannelArg, RecipientArgs, ScopeArgs, ServerArgs},
    proto::{self, suppression_client::SuppressionClient},
};
use anyhow::Context;
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

/// A client of a running server that sends the configured API key with every call.
pub(crate) type Client = SuppressionClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer <key>` to every call (nothing without a key).
#[derive(Clone)]
pub(crate) struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// Connects to `--server` with `--api-key`.
pub(crate) async fn client(args: &ServerArgs) -> anyhow::Result<Client> {
    let url = if args.server.contains("://") {
        args.server.clone()
    } else {
        format!("http://{}", args.server)
    };
    let channel = Channel::from_shared(url.clone())
        .with_context(|| format!("the server address {url:?}"))?
        .connect()
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let bearer = args
        .api_key
        .as_deref()
        .map(|key| format!("Bearer {key}").parse())
        .transpose()
        .context("the API key must be printable ASCII")?;
    Ok(SuppressionClient::with_interceptor(channel, Bearer(bearer)))
}

/// A refused call as one line: the gRPC code and the server's message.
pub(crate) fn refused(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}

/// The recipient named on the command line, as the server will read it (it normalizes).
pub(crate) fn recipient(args: &RecipientArgs) -> Option<proto::Recipient> {
    use proto::recipient::Id;
    let RecipientArgs {
        email,
        phone,
        user_id,
        push_token,
        postal_address,
    } = args.clone();
    let id = email
        .map(Id::Email)
        .or(phone.map(Id::Phone))
        .or(user_id.map(Id::UserId))
        .or(push_token.map(Id::PushToken))
        .or(postal_address.map(Id::PostalAddress))?;
    Some(proto::Recipient { id: Some(id) })
}

pub(crate) fn channel(c: Option<ChannelArg>) -> proto::Channel {
    match c {
        None => proto::Channel::Unspecified,
        Some(ChannelArg::Email) => proto::Channel::Email,
        Some(ChannelArg::Sms) => proto::Channel::Sms,
        Some(ChannelArg::Push) => proto::Channel::Push,
        Some(ChannelArg::Voice) => proto::Channel::Voice,
        Some(ChannelArg::Postal) => proto::Channel::Postal,
    }
}

pub(crate) fn scope(args: &ScopeArgs) -> proto::Scope {
    proto::Scope {
        tenant: args.tenant.clone(),
        channel: channel(args.channel) as i32,
        topic: args.topic.clone(),
        campaign: args.campaign.clone(),
    }
}

/// A timestamp as RFC 3339 (UTC, milliseconds), or "-" when unset.
pub(crate) fn time(t: Option<prost_types::Timestamp>) -> String {
    t.and_then(|t| {
        let ms = t.seconds * 1000 + i64::from(t.nanos / 1_000_000);
        rfc3339(ms)
    })
    .unwrap_or_else(|| "-".into())
}

fn rfc3339(ms: i64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    t.format(&time::format_description::well_known::Rfc3339)
        .ok()
}
