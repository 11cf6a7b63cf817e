//! TLS and mTLS with certificates made in the test (rcgen): a CA, a server certificate for
//! localhost, client certificates. Under mTLS a client certificate's CN is the principal; a client
//! without a certificate (or with one from another CA) never gets past the handshake.

use crate::helpers::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use std::path::PathBuf;
use suppressd::{
    config::ServeSettings,
    domain::Clock,
    proto::{self, Channel as ProtoChannel},
};
use tempfile::TempDir;
use tonic::{
    Code,
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};

pub struct Ca {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate and its key (PEM) for `cn`, valid for the given names, for a server or client.
    pub fn issue(&self, cn: &str, names: &[&str], client: bool) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

pub struct Pki {
    pub ca: Ca,
    dir: TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        Pki {
            ca: Ca::new("suppressd test CA"),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn write(&self, name: &str, pem: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path
    }

    /// Starts an app with a server certificate from this CA; with `mtls`, client certificates of
    /// this CA are required and CN "mailer.internal" is the principal "mailer" (role check+write).
    pub async fn app(&self, mtls: bool) -> TestApp {
        self.app_with(mtls, |_| {}).await
    }

    /// [`Pki::app`] with more settings.
    pub async fn app_with(&self, mtls: bool, tweak: impl FnOnce(&mut ServeSettings)) -> TestApp {
        let (cert, key) = self
            .ca
            .issue("localhost", &["localhost", "127.0.0.1"], false);
        let cert = self.write("server.pem", &cert);
        let key = self.write("server.key", &key);
        let ca = self.write("ca.pem", &self.ca.cert_pem);
        let keys = self.write(
            "keys.toml",
            &format!(
                "{}[[principal]]\nname = \"mailer\"\nroles = [\"check\", \"write\"]\n\
                 cert_cn = [\"mailer.internal\"]\n",
                key_file_text(&[])
            ),
        );
        let mut app = spawn_app_with(Backend::Sqlite, Clock::System, |s| {
            s.auth.tls_cert = Some(cert);
            s.auth.tls_key = Some(key);
            s.auth.tls_client_ca = mtls.then_some(ca);
            s.auth.keys = Some(keys);
            tweak(s);
        })
        .await;
        // The harness's plaintext client cannot talk to a TLS port; give it a TLS one.
        app.client = client_with(
            self.channel(&app, None).await.expect("TLS connects"),
            Some(ADMIN_KEY),
        );
        app
    }

    /// A TLS channel trusting this CA, optionally presenting a client certificate.
    pub async fn channel(
        &self,
        app: &TestApp,
        identity: Option<(String, String)>,
    ) -> Result<Channel, tonic::transport::Error> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca.cert_pem))
            .domain_name("localhost");
        if let Some((cert, key)) = identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        Channel::from_shared(format!("https://127.0.0.1:{}", app.addr.port()))
            .unwrap()
            .tls_config(tls)?
            .connect()
            .await
    }
}

fn check() -> proto::CheckSuppressedRequest {
    proto::CheckSuppressedRequest {
        recipient: Some(email("tls@example.com")),
        scope: Some(scope("", ProtoChannel::Email, "news", "")),
        ..Default::default()
    }
}

/// The code of one check over `channel`, or None when the call could not even be made.
async fn check_code(channel: Result<Channel, tonic::transport::Error>, key: Option<&str>) -> Code {
    let Ok(channel) = channel else {
        return Code::Unavailable;
    };
    match client_with(channel, key).check_suppressed(check()).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_keyed_calls_and_refuses_plaintext() {
    let pki = Pki::new();
    let mut app = pki.app(false).await;
    assert!(
        !app.is_suppressed(
            email("tls@example.com"),
            scope("", ProtoChannel::Email, "news", "")
        )
        .await
    );
    assert_eq!(
        check_code(pki.channel(&app, None).await, None).await,
        Code::Unauthenticated
    );

    // Plaintext HTTP/2 to the TLS port gets no answer: an error, or silence (a client with no
    // deadline of its own waited on it for good in one CI run), never an OK.
    let plain = Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect()
        .await;
    let answered = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        check_code(plain, Some(ADMIN_KEY)),
    )
    .await;
    assert!(
        answered.is_err() || answered.is_ok_and(|code| code != Code::Ok),
        "a plaintext call was answered"
    );
    // A client that trusts another CA refuses the server.
    let stranger = Pki::new();
    assert_ne!(
        check_code(stranger.channel(&app, None).await, Some(ADMIN_KEY)).await,
        Code::Ok
    );
}

/// A connection that never starts its handshake (a port scanner, a stuck or hostile client) is
/// closed at `--tls-handshake-timeout`, and one that stalls halfway too; the server goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_closes_connections_that_do_not_finish_the_handshake() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = Pki::new();
    let mut app = pki
        .app_with(false, |s| {
            s.auth.tls_handshake_timeout = std::time::Duration::from_millis(500)
        })
        .await;
    // The first bytes of a ClientHello (a handshake record of 512 bytes), and no more.
    let halfway: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01];
    for sent in [&[][..], halfway] {
        let mut silent = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        silent.write_all(sent).await.unwrap();
        // Without a deadline the server would wait for good: the read would time out instead.
        let closed = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            let mut buf = [0u8; 64];
            loop {
                match silent.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "a connection that sent {} bytes was still open after 20 s",
            sent.len()
        );
    }
    assert!(
        !app.is_suppressed(
            email("tls@example.com"),
            scope("", ProtoChannel::Email, "news", "")
        )
        .await,
        "still serving"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_maps_the_certificate_to_a_principal_and_refuses_clients_without_one() {
    let pki = Pki::new();
    let app = pki.app(true).await;

    // The certificate alone authenticates: CN mailer.internal is the principal "mailer".
    let mailer = pki.ca.issue("mailer.internal", &[], true);
    let mut client = client_with(pki.channel(&app, Some(mailer.clone())).await.unwrap(), None);
    client
        .check_suppressed(check())
        .await
        .expect("a mapped certificate may check");
    let receipt = client
        .opt_out(opt_out_request(
            email("tls@example.com"),
            scope("", ProtoChannel::Email, "", ""),
        ))
        .await
        .expect("and opt out")
        .into_inner()
        .receipt
        .unwrap();
    assert_eq!(app.actor_and_source(&receipt.receipt_id).await.0, "mailer");

    // A valid certificate whose subject the key file does not know is not a principal.
    let unknown = pki.ca.issue("intruder.internal", &[], true);
    assert_eq!(
        check_code(pki.channel(&app, Some(unknown)).await, None).await,
        Code::Unauthenticated
    );
    // No certificate, or one from another CA: refused at the handshake, even with a valid key.
    assert_ne!(
        check_code(pki.channel(&app, None).await, Some(ADMIN_KEY)).await,
        Code::Ok
    );
    let other_ca = Ca::new("another CA");
    let foreign = other_ca.issue("mailer.internal", &[], true);
    assert_ne!(
        check_code(pki.channel(&app, Some(foreign)).await, Some(ADMIN_KEY)).await,
        Code::Ok
    );
    // The server is still serving after refusing them.
    let mut again = client_with(pki.channel(&app, Some(mailer)).await.unwrap(), None);
    again
        .check_suppressed(check())
        .await
        .expect("still serving");
    assert_eq!(app.rows(None).await, 1);
}

/// `suppressd health` (the container HEALTHCHECK) against a TLS server and an mTLS one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_command_speaks_tls_and_mtls() {
    use crate::probes::health_command;
    let pki = Pki::new();
    let ca = pki.write("ca.pem", &pki.ca.cert_pem);
    let ca = ca.to_str().unwrap();

    let tls = pki.app(false).await;
    let (code, _, stderr) = health_command(tls.addr, &["--tls-ca", ca]).await;
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = health_command(
        tls.addr,
        &[
            "--tls-ca",
            ca,
            "--tls-domain",
            "localhost",
            "--service",
            "liveness",
        ],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let (code, _, _) = health_command(tls.addr, &["--timeout-ms", "1000"]).await;
    assert_eq!(code, 1, "plaintext to a TLS port");

    let mtls = pki.app(true).await;
    let (code, _, _) = health_command(mtls.addr, &["--tls-ca", ca, "--timeout-ms", "1000"]).await;
    assert_eq!(code, 1, "no client certificate, no handshake");
    let (cert, key) = pki.ca.issue("prober.internal", &[], true);
    let (cert, key) = (
        pki.write("prober.pem", &cert),
        pki.write("prober.key", &key),
    );
    let (code, stdout, stderr) = health_command(
        mtls.addr,
        &[
            "--tls-ca",
            ca,
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("SERVING"), "{stdout}");
}
