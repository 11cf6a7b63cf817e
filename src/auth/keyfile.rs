//! The key file (TOML). It holds no API key, only its SHA-256; it does hold the opt-out token keys,
//! so it is a secret file (mode 0600). Example:
//!
//! ```toml
//! [[principal]]
//! name = "mailer"                  # recorded as the actor of its opt-outs
//! roles = ["check", "write"]       # check | write | watch | admin
//! tenants = ["acme"]               # optional: only these tenants (absent = every tenant)
//! key_sha256 = ["9f2c…"]           # hex SHA-256 of each valid key (two during a rotation)
//! cert_cn = ["mailer.internal"]    # optional: client-certificate subjects (mTLS) that are this principal
//!
//! [[token_key]]
//! id = "2026-11"                   # travels in the token's footer
//! secret = "…64 hex digits…"       # 32 random bytes (PASETO v4.local key)
//! issue = true                     # exactly one key issues; every listed key verifies
//!
//! [[vault_key]]                    # seals raw identifiers kept for delivery (see `vault`)
//! id = "2026-11"                   # travels in the sealed blob
//! secret = "…64 hex digits…"       # 32 random bytes (ChaCha20-Poly1305); never the pepper
//! seal = true                      # at most one key seals; every listed key opens
//!
//! [[inbound]]                      # an SMS provider account (see `inbound`)
//! provider = "twilio"
//! secret = "…"
//! tenant = "acme"
//! numbers = ["+15005550006"]
//! ```
//!
//! Every rule is checked at load, so a reload either swaps in a whole valid table or nothing.

use super::{KeyTable, Principal, Role, TokenKeys};
use anyhow::{Context, bail, ensure};
use serde::Deserialize;
use std::{collections::BTreeSet, sync::Arc};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    principal: Vec<PrincipalEntry>,
    #[serde(default)]
    token_key: Vec<TokenKeyEntry>,
    #[serde(default)]
    inbound: Vec<super::inbound::InboundEntry>,
    #[serde(default)]
    vault_key: Vec<VaultKeyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VaultKeyEntry {
    id: String,
    secret: String,
    #[serde(default)]
    seal: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalEntry {
    name: String,
    roles: Vec<String>,
    tenants: Option<Vec<String>>,
    #[serde(default)]
    key_sha256: Vec<String>,
    #[serde(default)]
    cert_cn: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenKeyEntry {
    id: String,
    secret: String,
    #[serde(default)]
    issue: bool,
}

/// Parses and checks a key file's text.
pub(crate) fn parse(text: &str) -> anyhow::Result<KeyTable> {
    let file: File = toml::from_str(text).context("not a valid key file")?;
    let mut keys = KeyTable::default();
    let mut names = BTreeSet::new();
    for entry in file.principal {
        let PrincipalEntry {
            name,
            roles,
            tenants,
            key_sha256,
            cert_cn,
        } = entry;
        ensure!(
            !name.trim().is_empty() && name.len() <= 128,
            "a principal needs a name of 1 to 128 bytes"
        );
        ensure!(
            names.insert(name.clone()),
            "principal {name:?} appears twice"
        );
        ensure!(!roles.is_empty(), "principal {name:?} has no roles");
        let roles = roles
            .iter()
            .map(|r| Role::parse(r))
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("principal {name:?}"))?;
        ensure!(
            !key_sha256.is_empty() || !cert_cn.is_empty(),
            "principal {name:?} has neither key_sha256 nor cert_cn: nobody could be it"
        );
        let principal = Arc::new(Principal::new(
            name.clone(),
            roles,
            tenants.map(|t| t.into_iter().collect()),
        ));
        for hash in key_sha256 {
            let bytes: [u8; 32] = hex::decode(hash.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .with_context(|| {
                    format!("principal {name:?}: key_sha256 must be 64 hex digits (a SHA-256)")
                })?;
            if keys.by_key_hash.insert(bytes, principal.clone()).is_some() {
                bail!("principal {name:?}: a key hash is listed twice");
            }
        }
        for cn in cert_cn {
            ensure!(!cn.is_empty(), "principal {name:?}: empty cert_cn");
            if keys
                .by_cert_cn
                .insert(cn.clone(), principal.clone())
                .is_some()
            {
                bail!("certificate subject {cn:?} is mapped twice");
            }
        }
    }
    let mut tokens = TokenKeys::default();
    for entry in file.token_key {
        let TokenKeyEntry { id, secret, issue } = entry;
        let secret: [u8; 32] = hex::decode(secret.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .with_context(|| format!("token_key {id:?}: secret must be 64 hex digits"))?;
        tokens
            .add(&id, &secret, issue)
            .with_context(|| format!("token_key {id:?}"))?;
    }
    ensure!(
        tokens.is_empty() || tokens.can_issue(),
        "token keys are listed but none has issue = true"
    );
    keys.tokens = tokens;
    keys.inbound = super::inbound::accounts(file.inbound)?;
    for entry in file.vault_key {
        let VaultKeyEntry { id, secret, seal } = entry;
        let secret: [u8; 32] = hex::decode(secret.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .with_context(|| format!("vault_key {id:?}: secret must be 64 hex digits"))?;
        keys.vault
            .add(&id, &secret, seal)
            .with_context(|| format!("vault_key {id:?}"))?;
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::hash_key;

    fn file(extra: &str) -> String {
        format!(
            "[[principal]]\nname = \"mailer\"\nroles = [\"check\"]\ntenants = [\"acme\"]\n\
             key_sha256 = [\"{}\"]\ncert_cn = [\"mailer.internal\"]\n{extra}",
            hash_key("sk_one")
        )
    }

    #[test]
    fn a_key_and_a_certificate_map_to_the_principal() {
        let keys = parse(&file("")).unwrap();
        let p = keys.by_api_key("sk_one").unwrap();
        assert_eq!(p.name, "mailer");
        assert!(p.has(Role::Check) && !p.has(Role::Write) && p.may_use_tenant("acme"));
        assert!(keys.by_api_key("sk_two").is_none());
        assert_eq!(keys.by_cert_cn("mailer.internal").unwrap().name, "mailer");
    }

    fn inbound(provider: &str, secret: &str, numbers: &str) -> String {
        format!(
            "[[inbound]]\nprovider = \"{provider}\"\nsecret = \"{secret}\"\ntenant = \"acme\"\n\
             numbers = {numbers}\n"
        )
    }

    #[test]
    fn an_inbound_account_is_found_by_its_number() {
        let keys = parse(&inbound("twilio", "tok", "[\"+15005550006\"]")).unwrap();
        let account = keys
            .inbound
            .for_number(super::super::inbound::Provider::Twilio, "+15005550006")
            .unwrap();
        assert_eq!(account.tenant, "acme");
        assert!(
            keys.inbound
                .for_number(super::super::inbound::Provider::Sms, "+15005550006")
                .is_none()
        );
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        let cases = [
            (
                file("[[principal]]\nname=\"mailer\"\nroles=[\"check\"]\ncert_cn=[\"x\"]"),
                "twice",
            ),
            (
                "[[principal]]\nname=\"a\"\nroles=[\"boss\"]\ncert_cn=[\"x\"]".into(),
                "unknown role",
            ),
            (
                "[[principal]]\nname=\"a\"\nroles=[\"check\"]".into(),
                "nobody could be it",
            ),
            (
                "[[principal]]\nname=\"a\"\nroles=[\"check\"]\nkey_sha256=[\"abc\"]".into(),
                "64 hex",
            ),
            ("[[token_key]]\nid=\"k\"\nsecret=\"00\"".into(), "64 hex"),
            (
                format!("[[token_key]]\nid=\"k\"\nsecret=\"{}\"", "11".repeat(32)),
                "issue = true",
            ),
            (
                "[[principal]]\nname=\"a\"\nrole=[\"check\"]".into(),
                "not a valid key file",
            ),
            (
                inbound("vonage", "t", "[\"+15005550006\"]"),
                "unknown provider",
            ),
            (inbound("sms", "not-whsec", "[\"+15005550006\"]"), "whsec_"),
            (inbound("twilio", "t", "[\"5005550006\"]"), "E.164"),
            (inbound("twilio", "t", "[]"), "no numbers"),
            ("[[vault_key]]\nid=\"v\"\nsecret=\"00\"".into(), "64 hex"),
            (
                format!(
                    "[[vault_key]]\nid=\"v\"\nsecret=\"{0}\"\nseal=true\n\
                     [[vault_key]]\nid=\"w\"\nsecret=\"{0}\"\nseal=true",
                    "11".repeat(32)
                ),
                "two vault keys",
            ),
            (
                inbound("twilio", "t", "[\"+15005550006\"]")
                    + &inbound("twilio", "u", "[\"+15005550006\"]"),
                "listed twice",
            ),
        ];
        for (text, want) in cases {
            let err = format!("{:#}", parse(&text).unwrap_err());
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
