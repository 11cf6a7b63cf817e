//! `suppressd health`: asks a running server's `grpc.health.v1.Health` about one service and turns
//! the answer into an exit code, so that a container HEALTHCHECK or a script needs no grpcurl.
//!
//! SERVING exits 0; anything else exits non-zero with one line that says what was found: NOT_SERVING,
//! a service the server does not know, no answer within the timeout, a refused connection. It
//! never retries: the orchestrator that runs it decides how many failures count.

use crate::cli::args::HealthArgs;
use anyhow::{Context, bail};
use std::time::Duration;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Asks once; `Ok` (a line naming the service) only when the answer is SERVING.
pub async fn health(args: HealthArgs) -> anyhow::Result<String> {
    let HealthArgs {
        server,
        service,
        timeout_ms,
        tls_ca,
        tls_cert,
        tls_key,
        tls_domain,
    } = args;
    let named = if service.is_empty() {
        "the server (\"\")".to_owned()
    } else {
        format!("{service:?}")
    };
    let tls = tls_ca.is_some() || tls_cert.is_some();
    let url = if server.contains("://") {
        server.clone()
    } else if tls {
        format!("https://{server}")
    } else {
        format!("http://{server}")
    };
    let timeout = Duration::from_millis(timeout_ms);
    let mut endpoint = Endpoint::from_shared(url.clone())
        .with_context(|| format!("the server address {url:?}"))?
        .connect_timeout(timeout)
        .timeout(timeout);
    if tls || url.starts_with("https://") {
        let read = |path: &std::path::Path| {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))
        };
        let mut config = ClientTlsConfig::new().with_enabled_roots();
        if let Some(ca) = &tls_ca {
            config = config.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let (Some(cert), Some(key)) = (&tls_cert, &tls_key) {
            config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        if let Some(domain) = tls_domain {
            config = config.domain_name(domain);
        }
        endpoint = endpoint.tls_config(config).context("the TLS settings")?;
    }
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("no health answer from {url}: cannot connect"))?;
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.clone(),
        })
        .await;
    let status = match reply {
        Ok(reply) => reply.into_inner().status,
        Err(s) if s.code() == tonic::Code::NotFound => {
            bail!("{url} does not know the health service {named}")
        }
        Err(s) => bail!(
            "no health answer from {url}: {:?}: {}",
            s.code(),
            s.message()
        ),
    };
    match ServingStatus::try_from(status) {
        Ok(ServingStatus::Serving) => Ok(format!("SERVING: {named} at {url}\n")),
        Ok(other) => bail!("{}: {named} at {url}", other.as_str_name()),
        Err(_) => bail!("unknown status {status}: {named} at {url}"),
    }
}
