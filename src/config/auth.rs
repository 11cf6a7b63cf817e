//! Who may call `serve` and over what: the key file, the development switch that turns
//! authentication off, and the gRPC port's TLS and mTLS. The rules between them are checked in
//! [`super`], beside the addresses they restrict.

use super::parse_interval;
use clap::Args;
use std::{path::PathBuf, time::Duration};

/// Authentication and TLS: `--keys`, `--strict-key-file`, `--dev-no-auth` and `--tls-*`.
#[derive(Args, Clone, Debug)]
pub struct AuthSettings {
    /// The key file (TOML): principals with hashed API keys, roles, tenants, certificate subjects,
    /// and the opt-out token keys. Reloaded on SIGHUP and when the file changes. Required unless
    /// --dev-no-auth.
    #[arg(long, env = "SUPPRESSD_KEYS")]
    pub keys: Option<PathBuf>,

    /// Refuse to start when the key file is readable or writable by group or others (without it:
    /// a loud warning at start-up).
    #[arg(long, env = "SUPPRESSD_STRICT_KEY_FILE")]
    pub strict_key_file: bool,

    /// DEVELOPMENT ONLY: no authentication; every caller is an admin. Refuses to listen on anything
    /// but a loopback address.
    #[arg(long, env = "SUPPRESSD_DEV_NO_AUTH")]
    pub dev_no_auth: bool,

    /// PEM certificate chain of the gRPC server; with --tls-key turns TLS on.
    #[arg(long, env = "SUPPRESSD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of the gRPC server.
    #[arg(long, env = "SUPPRESSD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificates that sign client certificates: turns mTLS on (a client without a
    /// certificate from this CA is refused at the handshake). Subjects map to principals by CN.
    #[arg(long, env = "SUPPRESSD_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// How long a client has, from connecting, to finish the TLS handshake (e.g. `10s`); a
    /// connection that has not is closed, so that connections which never finish cannot pile up.
    #[arg(long, env = "SUPPRESSD_TLS_HANDSHAKE_TIMEOUT", default_value = "10s",
          value_parser = parse_interval)]
    pub tls_handshake_timeout: Duration,
}
