//! Opt-out tokens: what a sender puts into an unsubscribe link so that the person can opt out without
//! an API key. A token is a PASETO `v4.local` token (XChaCha20 + BLAKE2b-MAC, via the `pasetors`
//! crate): the payload is encrypted, so it reveals nothing about the person, not even the keyed
//! hash; any altered byte fails authentication. It carries the subject's keyed hash, the opt-out
//! scope, the purpose and the expiry. The purpose is also the PASETO *implicit assertion*, so a
//! token minted for another purpose fails authentication outright, before its payload is read.
//! The footer (authenticated, not encrypted) names the key id, so several keys can verify while
//! one issues: rotation is "add a new issuing key, keep the old one until its tokens expired,
//! remove it".

use crate::domain::{Channel, Millis, Scope, SubjectHash};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use pasetors::{
    Local, keys::SymmetricKey, token::UntrustedToken, version4::LocalToken, version4::V4,
};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Longer than any token this service issues; anything longer is refused before it is parsed.
pub(crate) const MAX_TOKEN_LEN: usize = 1024;

/// What a token allows. Only `OptOut` is issued today; `OptIn` is reserved for the verified opt-in
/// flow, and exists so that a token of one purpose can never be spent on the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    OptOut,
    OptIn,
}

impl Purpose {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Purpose::OptOut => "opt_out",
            Purpose::OptIn => "opt_in",
        }
    }

    fn implicit_assertion(self) -> Vec<u8> {
        format!("suppressd.v1.{}", self.as_str()).into_bytes()
    }
}

/// Why a token was refused. The caller is told only "invalid token" (UNAUTHENTICATED); the variant
/// is for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token was issued with a key this service does not hold")]
    UnknownKey,
    #[error("the token failed authentication (altered, another key, or another purpose)")]
    Forged,
    #[error("the token has expired")]
    Expired,
    #[error("no token key is configured to issue tokens")]
    NoIssuingKey,
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    pub(crate) subject: SubjectHash,
    pub(crate) scope: Scope,
    pub purpose: Purpose,
    pub expires_at: Millis,
    /// The id of the key that issued it.
    pub(crate) key_id: String,
}

/// The encrypted payload. Short field names keep the link short.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    pur: String,
    sub: String,
    ten: String,
    ch: u8,
    top: String,
    cam: String,
    exp: Millis,
}

#[derive(Serialize, Deserialize)]
struct Footer {
    kid: String,
}

struct TokenKey {
    id: String,
    key: SymmetricKey<V4>,
}

/// The token keys of the key file: every one verifies, the one marked `issue` issues.
#[derive(Default)]
pub struct TokenKeys {
    keys: Vec<TokenKey>,
    issuer: Option<usize>,
}

impl fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        write!(f, "TokenKeys({ids:?})")
    }
}

impl TokenKeys {
    pub fn add(&mut self, id: &str, secret: &[u8; 32], issue: bool) -> anyhow::Result<()> {
        anyhow::ensure!(
            !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_graphic()),
            "a token key id is 1 to 64 printable ASCII characters"
        );
        anyhow::ensure!(
            self.keys.iter().all(|k| k.id != id),
            "token key id appears twice"
        );
        if issue {
            anyhow::ensure!(self.issuer.is_none(), "only one token key may issue");
            self.issuer = Some(self.keys.len());
        }
        let key = SymmetricKey::<V4>::from(secret).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        self.keys.push(TokenKey {
            id: id.to_owned(),
            key,
        });
        Ok(())
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub(crate) fn can_issue(&self) -> bool {
        self.issuer.is_some()
    }

    /// Mints a token with the issuing key.
    pub fn issue(
        &self,
        subject: SubjectHash,
        scope: &Scope,
        purpose: Purpose,
        expires_at: Millis,
    ) -> Result<String, TokenError> {
        let key = &self.keys[self.issuer.ok_or(TokenError::NoIssuingKey)?];
        let payload = Payload {
            pur: purpose.as_str().to_owned(),
            sub: URL_SAFE_NO_PAD.encode(subject.0),
            ten: scope.tenant.clone(),
            ch: crate::domain::scope::channel_code(scope.channel),
            top: scope.topic.clone(),
            cam: scope.campaign.clone(),
            exp: expires_at,
        };
        let footer = serde_json::to_vec(&Footer {
            kid: key.id.clone(),
        })
        .expect("a footer always serializes");
        let message = serde_json::to_vec(&payload).expect("a payload always serializes");
        LocalToken::encrypt(
            &key.key,
            &message,
            Some(&footer),
            Some(&purpose.implicit_assertion()),
        )
        .map_err(|_| TokenError::NoIssuingKey)
    }

    /// Checks a token for `purpose` at time `now`: well-formed, issued by a key held here,
    /// unaltered, for this purpose, not expired. Only then are its claims returned.
    pub fn verify(
        &self,
        token: &str,
        purpose: Purpose,
        now: Millis,
    ) -> Result<TokenClaims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let untrusted =
            UntrustedToken::<Local, V4>::try_from(token).map_err(|_| TokenError::Malformed)?;
        let footer: Footer = serde_json::from_slice(untrusted.untrusted_footer())
            .map_err(|_| TokenError::Malformed)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == footer.kid)
            .ok_or(TokenError::UnknownKey)?;
        let trusted = LocalToken::decrypt(
            &key.key,
            &untrusted,
            None,
            Some(&purpose.implicit_assertion()),
        )
        .map_err(|_| TokenError::Forged)?;
        // From here on the payload is authentic: a parse failure is a token of another format
        // version, not an attack.
        let payload: Payload =
            serde_json::from_str(trusted.payload()).map_err(|_| TokenError::Malformed)?;
        if payload.pur != purpose.as_str() {
            return Err(TokenError::Forged);
        }
        if payload.exp <= now {
            return Err(TokenError::Expired);
        }
        let subject = URL_SAFE_NO_PAD
            .decode(&payload.sub)
            .ok()
            .and_then(|b| SubjectHash::from_slice(&b))
            .ok_or(TokenError::Malformed)?;
        let channel = match payload.ch {
            0 => None,
            code => Some(Channel::from_code(code).ok_or(TokenError::Malformed)?),
        };
        let scope = Scope::parse(&payload.ten, channel, &payload.top, &payload.cam)
            .map_err(|_| TokenError::Malformed)?;
        Ok(TokenClaims {
            subject,
            scope,
            purpose,
            expires_at: payload.exp,
            key_id: key.id.clone(),
        })
    }
}

/// The idempotency key of an opt-out by token: one token records one opt-out, however often the
/// person clicks or the mail client retries. A hash, so the token itself is not stored.
pub(crate) fn idempotency_key(token: &str) -> String {
    use sha2::{Digest, Sha256};
    format!(
        "token:{}",
        hex::encode(&Sha256::digest(token.as_bytes())[..20])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(list: &[(&str, u8, bool)]) -> TokenKeys {
        let mut keys = TokenKeys::default();
        for (id, fill, issue) in list {
            keys.add(id, &[*fill; 32], *issue).unwrap();
        }
        keys
    }

    fn scope() -> Scope {
        Scope::parse("acme", Some(Channel::Email), "marketing", "").unwrap()
    }

    #[test]
    fn a_token_round_trips_and_hides_the_subject() {
        let keys = keys(&[("k1", 1, true)]);
        let subject = SubjectHash([7; 32]);
        let token = keys
            .issue(subject, &scope(), Purpose::OptOut, 2_000)
            .unwrap();
        assert!(
            token.starts_with("v4.local.") && token.len() < 400,
            "{token}"
        );
        assert!(!token.contains(&URL_SAFE_NO_PAD.encode(subject.0)));
        assert!(!token.contains("acme") && !token.contains("marketing"));
        let claims = keys.verify(&token, Purpose::OptOut, 1_000).unwrap();
        assert_eq!((claims.subject, claims.scope), (subject, scope()));
        assert_eq!(claims.key_id, "k1");
    }

    #[test]
    fn expiry_purpose_and_keys_are_enforced() {
        let old = keys(&[("k1", 1, true)]);
        let token = old
            .issue(SubjectHash([7; 32]), &scope(), Purpose::OptOut, 2_000)
            .unwrap();
        assert_eq!(
            old.verify(&token, Purpose::OptOut, 2_000),
            Err(TokenError::Expired)
        );
        assert_eq!(
            old.verify(&token, Purpose::OptIn, 1_000),
            Err(TokenError::Forged)
        );
        let rotated = keys(&[("k2", 2, true), ("k1", 1, false)]);
        assert!(rotated.verify(&token, Purpose::OptOut, 1_000).is_ok());
        let removed = keys(&[("k2", 2, true)]);
        assert_eq!(
            removed.verify(&token, Purpose::OptOut, 1_000),
            Err(TokenError::UnknownKey)
        );
        let same_id_other_secret = keys(&[("k1", 9, true)]);
        assert_eq!(
            same_id_other_secret.verify(&token, Purpose::OptOut, 1_000),
            Err(TokenError::Forged)
        );
        assert_eq!(
            old.verify("v4.local.", Purpose::OptOut, 0),
            Err(TokenError::Malformed)
        );
    }
}
