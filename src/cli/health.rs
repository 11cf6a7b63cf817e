//! `suppressd health`: asks a running server's `grpc.health.v1.Health` about one service and turns
//! the answer into an exit code, so that a container HEALTHCHECK or a script needs no grpcurl.
//!
//! SERVING exits 0; anything else exits non-zero with one line that says what was found: NOT_SERVING,
//! a service the server does not know, no answer within the timeout, a refused connection. It
//! never retries: the orchestrator that runs it decides how many failures count.

use crate::cli::args::HealthArgs;
use anyhow::{Context, bail};
use std::time::Duration;
use suppressd_client::{ClientConfig, Deadlines};
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
    // The client crate's connection, as every client command: TLS when a CA or a client
    // certificate is given or the URL says https://, within the timeout.
    let mut config = ClientConfig::new(server).deadlines(Deadlines {
        connect: Duration::from_millis(timeout_ms),
        ..Deadlines::default()
    });
    if let Some(domain) = tls_domain {
        config = config.domain_name(domain);
    }
    if let Some(ca) = &tls_ca {
        config = config.ca_file(ca)?;
    }
    if let (Some(cert), Some(key)) = (&tls_cert, &tls_key) {
        config = config.identity_files(cert, key)?;
    }
    let url = config.url();
    let channel = config
        .channel()
        .await
        .with_context(|| format!("no health answer from {url}: cannot connect"))?;
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: service.clone(),
    });
    request.set_timeout(Duration::from_millis(timeout_ms));
    let reply = HealthClient::new(channel).check(request).await;
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
