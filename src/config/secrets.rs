//! The secrets `serve` keys and signs with: the recipient-hash pepper and the audit log's name and
//! signing key, each with a development stand-in that start-up announces loudly.

use crate::domain::Pepper;
use clap::Args;

/// The configured pepper, or the development one (and `true` to say it is).
pub fn pepper_or_development(pepper: Option<&str>) -> anyhow::Result<(Pepper, bool)> {
    match pepper {
        Some(secret) => Ok((Pepper::new(secret.as_bytes())?, false)),
        None => Ok((Pepper::new(DEV_PEPPER.as_bytes())?, true)),
    }
}

/// The development pepper: only for a developer's machine. Start-up warns loudly when it is used.
const DEV_PEPPER: &str = "suppressd-development-pepper-do-not-use";

/// `--pepper`, `--audit-origin` and `--audit-signing-key`; the values of the secret ones never show
/// in `--help`.
#[derive(Args, Clone, Debug)]
pub struct SecretSettings {
    /// Secret keying the recipient hash (at least 16 bytes). Without it a development pepper is used
    /// and start-up warns. Changing it orphans every record: keep it for the life of the data.
    #[arg(long, env = "SUPPRESSD_PEPPER", hide_env_values = true)]
    pub pepper: Option<String>,

    /// Name of the audit log, the first line of every signed checkpoint.
    #[arg(long, env = "SUPPRESSD_AUDIT_ORIGIN", default_value = "suppressd")]
    pub audit_origin: String,

    /// Ed25519 key that signs audit checkpoints, as a C2SP note signer key
    /// (`PRIVATE+KEY+name+id+base64`; `suppressd audit keygen` makes one). Without it a development
    /// key is used, with a loud warning: anyone can forge its checkpoints.
    #[arg(long, env = "SUPPRESSD_AUDIT_SIGNING_KEY", hide_env_values = true)]
    pub audit_signing_key: Option<String>,
}

impl SecretSettings {
    /// The configured pepper, or the development one (and `true` to say it is).
    pub fn pepper(&self) -> anyhow::Result<(Pepper, bool)> {
        pepper_or_development(self.pepper.as_deref())
    }
}
