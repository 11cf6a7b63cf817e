//! The one HTTP call of a delivery: POST the signed body, with a timeout; any 2xx is delivered,
//! anything else (another status, no answer, a refused connection) is a failed attempt.

use super::sign;
use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use std::{sync::Arc, time::Duration};

/// A client for webhooks: HTTPS verified against the Web PKI, or plain HTTP.
#[derive(Clone)]
pub(crate) struct Poster {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl Poster {
    pub(crate) fn new(timeout: Duration) -> anyhow::Result<Poster> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(Arc::new(rustls::crypto::ring::default_provider()))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Poster {
            client: Client::builder(TokioExecutor::new()).build(https),
            timeout,
        })
    }

    /// POSTs one change, signed with `key`, at `now_seconds`.
    pub(crate) async fn post(
        &self,
        url: &str,
        key: &[u8],
        id: &str,
        now_seconds: i64,
        body: Vec<u8>,
    ) -> anyhow::Result<()> {
        let signature = sign::signature(key, id, now_seconds, &body);
        let request = http::Request::post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "suppressd")
            .header("webhook-id", id)
            .header("webhook-timestamp", now_seconds.to_string())
            .header("webhook-signature", signature)
            .body(Full::new(Bytes::from(body)))?;
        let response = tokio::time::timeout(self.timeout, self.client.request(request))
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {:?}", self.timeout))??;
        anyhow::ensure!(
            response.status().is_success(),
            "answered {}",
            response.status()
        );
        Ok(())
    }
}
