//! The secrets and TLS the process runs with, loaded first so a bad one fails before anything
//! connects: the key file, the pepper, the audit signer and the gRPC port's certificates.

use crate::{
    audit::AuditLog,
    auth::{KeyStore, KeyTable},
    config::ServeSettings,
    domain::Pepper,
};
use anyhow::Context;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// The secrets and TLS settings the process runs with; the development ones are announced loudly.
pub(super) struct Secrets {
    pub(super) keys: KeyStore,
    pub(super) tls: Option<ServerTlsConfig>,
    pub(super) pepper: Pepper,
    pub(super) audit_log: AuditLog,
}

impl Secrets {
    pub(super) fn load(settings: &ServeSettings) -> anyhow::Result<Secrets> {
        let key_store = match &settings.auth.keys {
            Some(path) => KeyStore::load(path)?,
            // Only with --dev-no-auth (which refuses a key file): a token key made for this run,
            // so a developer can issue and follow unsubscribe links; they stop working at restart.
            None => {
                let mut keys = KeyTable::default();
                let id = format!("dev-{:08x}", rand::random::<u32>());
                keys.tokens.add(&id, &rand::random(), true)?;
                KeyStore::fixed(keys)
            }
        };
        if settings.auth.dev_no_auth {
            tracing::warn!(
                "!!! --dev-no-auth: authentication is OFF and every caller is an admin. Listening on \
             loopback only. Never run like this outside a developer machine !!!"
            );
        }
        let tls = tls_config(settings)?;
        let (pepper, dev_pepper) = settings.secrets.pepper()?;
        if dev_pepper {
            tracing::warn!(
                "!!! SUPPRESSD_PEPPER is not set: using the DEVELOPMENT pepper. Recipient hashes are \
             guessable; never run like this with real data !!!"
            );
        }
        let (audit_log, dev_audit_key) = settings.audit_log()?;
        if dev_audit_key {
            tracing::warn!(
                "!!! SUPPRESSD_AUDIT_SIGNING_KEY is not set: audit checkpoints are signed with the \
             DEVELOPMENT key, which anyone can use to forge them !!!"
            );
        }
        Ok(Secrets {
            keys: key_store,
            tls,
            pepper,
            audit_log,
        })
    }
}

/// The gRPC server's TLS: a certificate and key, for mTLS the CA that client certificates must
/// chain to (a client without one is refused at the handshake), and the handshake's deadline.
fn tls_config(settings: &ServeSettings) -> anyhow::Result<Option<ServerTlsConfig>> {
    let (Some(cert), Some(key)) = (&settings.auth.tls_cert, &settings.auth.tls_key) else {
        return Ok(None);
    };
    let read = |path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    };
    let mut tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(read(cert)?, read(key)?))
        .timeout(settings.auth.tls_handshake_timeout);
    if let Some(ca) = &settings.auth.tls_client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(Some(tls))
}
