//! `suppressd audit keygen|verify|export`.

use crate::{
    audit::note::{Checkpoint, NoteSigner, NoteVerifier},
    domain::{Pepper, Recipient},
    service::audit as log,
};
use anyhow::{Context, bail};

/// A new signing key and its public key, as C2SP note keys.
pub fn keygen(name: &str) -> anyhow::Result<String> {
    let (signer, verifier) = NoteSigner::generate(name)?;
    Ok(format!(
        "# keep secret; give to `suppressd serve` as SUPPRESSD_AUDIT_SIGNING_KEY\n{signer}\n\
         # publish; verifiers use it with --public-key\n{verifier}\n"
    ))
}

/// Checks the whole log; `Err` (a non-zero exit) names the first bad index.
pub async fn verify(
    store_url: &str,
    public_key: &str,
    trusted_checkpoint: Option<&str>,
) -> anyhow::Result<String> {
    let verifier = NoteVerifier::parse(public_key).context("parsing the public key")?;
    let trusted: Option<Checkpoint> = match trusted_checkpoint {
        Some(file) => {
            let note = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
            Some(
                verifier
                    .verify(&note)
                    .context("the trusted checkpoint is not signed by the key")?,
            )
        }
        None => None,
    };
    let store = log::open_store(store_url).await?;
    let report = log::verify_log(&store, verifier, trusted).await?;
    match report.problem {
        None => Ok(format!(
            "OK: {} entries, {} checkpoints verified\n",
            report.entries, report.checkpoints
        )),
        Some(p) => bail!("TAMPERED at index {}: {}", p.index, p.what),
    }
}

/// One person's entries (or all, with `recipient: None`) with proofs, as JSON.
pub async fn export(
    store_url: &str,
    pepper: &Pepper,
    who: Option<(&Recipient, &str)>,
) -> anyhow::Result<String> {
    let store = log::open_store(store_url).await?;
    let subject = who.map(|(r, tenant)| (pepper.subject(r), tenant));
    let export = log::export(&store, subject.as_ref().map(|(s, t)| (s, *t)))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(serde_json::to_string_pretty(&export)?)
}
