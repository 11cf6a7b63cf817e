//! How the client commands reach a server: its address and the API key they present.

use crate::proto::suppression_client::SuppressionClient;
use anyhow::Context;
use clap::Args;
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

#[derive(Args, Debug, Clone)]
pub struct Remote {
    /// The gRPC server (host:port, or a URL).
    #[arg(long, env = "SUPPRESSD_SERVER", default_value = "127.0.0.1:50051")]
    pub server: String,
    /// The API key sent as `authorization: Bearer <key>`.
    #[arg(long, env = "SUPPRESSD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

/// Adds the API key to every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type Client = SuppressionClient<InterceptedService<Channel, Bearer>>;

pub async fn client(remote: &Remote) -> anyhow::Result<Client> {
    let url = if remote.server.contains("://") {
        remote.server.clone()
    } else {
        format!("http://{}", remote.server)
    };
    let bearer = match &remote.api_key {
        Some(key) => Some(
            format!("Bearer {key}")
                .parse()
                .context("the API key is not a valid header value")?,
        ),
        None => None,
    };
    let channel = Channel::from_shared(url.clone())
        .context("parsing the server address")?
        .connect()
        .await
        .with_context(|| format!("connecting to {url}"))?;
    Ok(SuppressionClient::with_interceptor(channel, Bearer(bearer)))
}
