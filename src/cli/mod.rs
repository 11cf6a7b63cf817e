//! The client and operator commands of the `suppressd` binary (everything but `serve`): thin edges
//! that parse arguments, call the library or a running server, print, and choose the exit code.

pub mod args;
pub mod audit;
pub mod consent;
pub mod controls;
pub mod destinations;
pub mod health;
pub mod import;
pub mod keys;
pub mod receipt;
pub mod rights;
pub mod triggers;

pub mod send;

use crate::{
    cli::args::{ChannelArg, RecipientArgs, ScopeArgs, ServerArgs, TlsArgs},
    proto::{self, suppression_client::SuppressionClient},
};
use anyhow::Context;
use suppressd_client::{Bearer, ClientConfig};
use tonic::{service::interceptor::InterceptedService, transport::Channel};

/// A client of a running server that sends the configured API key with every call: the server
/// crate's generated client over the client crate's connection (TLS, mTLS, key), so every command
/// reaches a production server the same way.
pub(crate) type Client = SuppressionClient<InterceptedService<Channel, Bearer>>;

/// What `--server`, `--cacert`, `--cert`, `--key`, `--tls-domain` and `--api-key` say, as the
/// client crate's configuration, with the certificate files read (nothing connected yet).
pub(crate) fn client_config_with_files(args: &ServerArgs) -> anyhow::Result<ClientConfig> {
    let mut config = tls_config(&args.server, &args.tls)?;
    if let Some(key) = &args.api_key {
        config = config.api_key(key.clone());
    }
    Ok(config)
}

/// A keyless client configuration: the server and how it is trusted.
pub(crate) fn tls_config(server: &str, tls: &TlsArgs) -> anyhow::Result<ClientConfig> {
    let mut config = ClientConfig::new(server);
    if let Some(domain) = &tls.tls_domain {
        config = config.domain_name(domain.clone());
    }
    if let Some(ca) = &tls.cacert {
        config = config.ca_file(ca)?;
    }
    if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
        config = config.identity_files(cert, key)?;
    }
    Ok(config)
}

/// Connects to `--server` with the TLS files and `--api-key`.
pub(crate) async fn client(args: &ServerArgs) -> anyhow::Result<Client> {
    let config = client_config_with_files(args)?;
    let channel = config.channel().await?;
    let bearer = config.bearer().context("the API key")?;
    Ok(SuppressionClient::with_interceptor(channel, bearer))
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
