//! Where the server is and how to prove who we are: the URL, TLS trust, the mTLS identity and the
//! API key; plus the deadlines and retry policy of the calls. Building a config reads no file and
//! connects to nothing; [`ClientConfig::channel`] does both, once.
//!
//! The API key never appears in `Debug` output or error messages, and its header is marked
//! sensitive so that HTTP/2 header compression never indexes it.

use crate::{ClientError, retry::RetryPolicy};
use std::{fmt, path::Path, time::Duration};
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::Interceptor,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

/// How long each kind of call may take in all, retries included. Checks sit on a sender's hot path
/// (the server answers in about a millisecond); an opt-out with `DURABLE` waits for the store's
/// commit (the server's `--durable-wait-ms`, 2 s by default) before it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// `CheckSuppressed`, `CheckSuppressedBatch` (each call of up to 1,000).
    pub check: Duration,
    /// `OptOut`, `IssueOptOutToken`, `GetReceipt`.
    pub write: Duration,
    /// Establishing the connection (TCP and TLS).
    pub connect: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            check: Duration::from_secs(2),
            write: Duration::from_secs(10),
            connect: Duration::from_secs(5),
        }
    }
}

/// Everything needed to reach one suppressd deployment.
#[derive(Clone)]
pub struct ClientConfig {
    pub(crate) server: String,
    ca_pem: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    domain: Option<String>,
    api_key: Option<String>,
    pub(crate) deadlines: Deadlines,
    pub(crate) retry: RetryPolicy,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("server", &self.server)
            .field("ca", &self.ca_pem.as_ref().map(|_| "PEM"))
            .field("client_certificate", &self.identity.is_some())
            .field("domain", &self.domain)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("deadlines", &self.deadlines)
            .field("retry", &self.retry)
            .finish()
    }
}

impl ClientConfig {
    /// `server` is a URL (`https://suppressd.internal:50051`) or `host:port`, which means plaintext
    /// `http://` unless a CA or client certificate is given.
    pub fn new(server: impl Into<String>) -> Self {
        ClientConfig {
            server: server.into(),
            ca_pem: None,
            identity: None,
            domain: None,
            api_key: None,
            deadlines: Deadlines::default(),
            retry: RetryPolicy::default(),
        }
    }

    /// Trust this CA (PEM) for the server's certificate instead of the public roots.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// [`ca_pem`](Self::ca_pem) from a file.
    pub fn ca_file(self, path: impl AsRef<Path>) -> Result<Self, ClientError> {
        Ok(self.ca_pem(read(path.as_ref())?))
    }

    /// For mTLS: present this certificate and key (PEM).
    pub fn identity_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.identity = Some((cert.into(), key.into()));
        self
    }

    /// [`identity_pem`](Self::identity_pem) from files.
    pub fn identity_files(
        self,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, ClientError> {
        Ok(self.identity_pem(read(cert.as_ref())?, read(key.as_ref())?))
    }

    /// The name the server's certificate must carry, when it is not the host of the URL.
    pub fn domain_name(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    /// The API key sent with every call (`authorization: Bearer <key>`).
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    pub fn deadlines(mut self, deadlines: Deadlines) -> Self {
        self.deadlines = deadlines;
        self
    }

    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    fn tls(&self) -> bool {
        self.ca_pem.is_some() || self.identity.is_some() || self.server.starts_with("https://")
    }

    /// The URL connected to: `server` as given when it has a scheme, else with the scheme TLS asks.
    pub fn url(&self) -> String {
        if self.server.contains("://") {
            self.server.clone()
        } else if self.tls() {
            format!("https://{}", self.server)
        } else {
            format!("http://{}", self.server)
        }
    }

    /// The `authorization` interceptor for this config's key (checked to be a valid header value).
    pub fn bearer(&self) -> Result<Bearer, ClientError> {
        let value = self
            .api_key
            .as_deref()
            .map(|key| {
                let mut value: MetadataValue<Ascii> =
                    format!("Bearer {key}").parse().map_err(|_| {
                        ClientError::Config("the API key must be printable ASCII".into())
                    })?;
                value.set_sensitive(true);
                Ok::<_, ClientError>(value)
            })
            .transpose()?;
        Ok(Bearer(value))
    }

    /// Connects (TCP, then TLS when asked), within the connect deadline.
    pub async fn channel(&self) -> Result<Channel, ClientError> {
        let url = self.url();
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| ClientError::Config(format!("the server address {url:?}: {e}")))?
            .connect_timeout(self.deadlines.connect)
            .tcp_nodelay(true);
        if url.starts_with("https://") {
            let mut tls = ClientTlsConfig::new();
            tls = match &self.ca_pem {
                Some(pem) => tls.ca_certificate(Certificate::from_pem(pem)),
                None => tls.with_webpki_roots(),
            };
            if let Some((cert, key)) = &self.identity {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            if let Some(domain) = &self.domain {
                tls = tls.domain_name(domain.clone());
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| ClientError::Config(format!("the TLS settings: {e}")))?;
        } else if self.ca_pem.is_some() || self.identity.is_some() {
            return Err(ClientError::Config(format!(
                "{url} is plaintext, but TLS files were given: use https://"
            )));
        }
        endpoint
            .connect()
            .await
            .map_err(|e| ClientError::Connect(format!("connecting to {url}: {}", chain(&e))))
    }
}

/// Adds `authorization: Bearer <key>` to every call (nothing without a key). Public so that code
/// calling RPCs this crate does not wrap can reuse the connection and the key.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl fmt::Debug for Bearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Bearer(<redacted>)"
        } else {
            "Bearer(None)"
        })
    }
}

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

fn read(path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|e| ClientError::Config(format!("reading {}: {e}", path.display())))
}

/// An error with its sources, on one line (tonic's transport error says little on its own).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
