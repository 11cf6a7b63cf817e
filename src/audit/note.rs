//! Signed checkpoints in the C2SP formats: the `tlog-checkpoint` body (origin, tree size, base64 root
//! hash) inside a `signed-note` with Ed25519 signatures, and the note key encodings
//! (`PRIVATE+KEY+name+id+key` for the signer, `name+id+key` for verifiers). Anyone with the verifier
//! key can check a checkpoint with standard tooling.

use super::merkle::Hash;
use base64::{Engine, engine::general_purpose::STANDARD as B64};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256};

/// The signature algorithm byte of Ed25519 note keys.
const ED25519: u8 = 0x01;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("malformed key: {0}")]
    Key(&'static str),
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
    #[error("no valid signature by {0}")]
    Unsigned(String),
}

/// A tree head: what a checkpoint commits to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl Checkpoint {
    pub(crate) fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }

    fn parse_body(body: &str) -> Result<Checkpoint, NoteError> {
        let mut lines = body.split('\n');
        let origin = lines.next().filter(|l| !l.is_empty());
        let origin = origin.ok_or(NoteError::Malformed("origin"))?.to_owned();
        let size = lines
            .next()
            .and_then(|l| l.parse().ok())
            .ok_or(NoteError::Malformed("tree size"))?;
        let root = lines
            .next()
            .and_then(|l| B64.decode(l).ok())
            .and_then(|b| b.try_into().ok())
            .ok_or(NoteError::Malformed("root hash"))?;
        Ok(Checkpoint { origin, size, root })
    }
}

fn key_id(name: &str, public: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ED25519]);
    h.update(public.as_bytes());
    h.finalize()[..4].try_into().expect("4 bytes")
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('+') && name.chars().all(|c| c.is_ascii_graphic())
}

/// Parses `prefix name+hexid+base64(0x01‖key)`, checking the id.
fn parse_key(s: &str, private: bool) -> Result<(String, [u8; 4], [u8; 32]), NoteError> {
    let rest = if private {
        s.strip_prefix("PRIVATE+KEY+")
            .ok_or(NoteError::Key("expected PRIVATE+KEY+…"))?
    } else {
        s
    };
    // The key's base64 may itself contain '+': split off name and id only.
    let mut parts = rest.trim().splitn(3, '+');
    let (Some(name), Some(id), Some(key), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(NoteError::Key("expected name+id+key"));
    };
    if !valid_name(name) {
        return Err(NoteError::Key("name"));
    }
    let id: [u8; 4] = hex::decode(id)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(NoteError::Key("id"))?;
    let key = B64.decode(key).map_err(|_| NoteError::Key("base64"))?;
    let (&alg, key) = key.split_first().ok_or(NoteError::Key("empty key"))?;
    if alg != ED25519 {
        return Err(NoteError::Key("only Ed25519 keys are supported"));
    }
    let key: [u8; 32] = key.try_into().map_err(|_| NoteError::Key("length"))?;
    Ok((name.to_owned(), id, key))
}

/// Signs checkpoints. Holds the private key; never logged.
#[derive(Clone)]
pub struct NoteSigner {
    name: String,
    key: SigningKey,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NoteSigner({}, <secret>)", self.name)
    }
}

impl NoteSigner {
    pub fn parse(s: &str) -> Result<NoteSigner, NoteError> {
        let (name, id, seed) = parse_key(s, true)?;
        let key = SigningKey::from_bytes(&seed);
        if key_id(&name, &key.verifying_key()) != id {
            return Err(NoteError::Key("id does not match the key"));
        }
        Ok(NoteSigner { name, key })
    }

    /// A signer from a 32-byte Ed25519 seed.
    pub(crate) fn from_seed(name: &str, seed: [u8; 32]) -> NoteSigner {
        NoteSigner {
            name: name.to_owned(),
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// A new key pair: (signer key, verifier key), both as strings.
    pub fn generate(name: &str) -> Result<(String, String), NoteError> {
        if !valid_name(name) {
            return Err(NoteError::Key("name"));
        }
        let signer = NoteSigner {
            name: name.to_owned(),
            key: SigningKey::from_bytes(&rand::random()),
        };
        Ok((signer.encode(), signer.verifier().encode()))
    }

    fn encode(&self) -> String {
        let id = key_id(&self.name, &self.key.verifying_key());
        let mut key = vec![ED25519];
        key.extend_from_slice(self.key.as_bytes());
        format!(
            "PRIVATE+KEY+{}+{}+{}",
            self.name,
            hex::encode(id),
            B64.encode(key)
        )
    }

    pub(crate) fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// The signed note of a checkpoint.
    pub fn sign(&self, checkpoint: &Checkpoint) -> String {
        let body = checkpoint.body();
        let signature = self.key.sign(body.as_bytes());
        let mut sig = key_id(&self.name, &self.key.verifying_key()).to_vec();
        sig.extend_from_slice(&signature.to_bytes());
        format!("{body}\n\u{2014} {} {}\n", self.name, B64.encode(sig))
    }
}

/// Checks checkpoints signed by one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key: VerifyingKey,
}

impl NoteVerifier {
    pub fn parse(s: &str) -> Result<NoteVerifier, NoteError> {
        let (name, id, key) = parse_key(s, false)?;
        let key =
            VerifyingKey::from_bytes(&key).map_err(|_| NoteError::Key("not an Ed25519 key"))?;
        if key_id(&name, &key) != id {
            return Err(NoteError::Key("id does not match the key"));
        }
        Ok(NoteVerifier { name, key })
    }

    pub(crate) fn encode(&self) -> String {
        let mut key = vec![ED25519];
        key.extend_from_slice(self.key.as_bytes());
        format!(
            "{}+{}+{}",
            self.name,
            hex::encode(key_id(&self.name, &self.key)),
            B64.encode(key)
        )
    }

    /// The checkpoint of a note, if this key signed it.
    pub fn verify(&self, note: &str) -> Result<Checkpoint, NoteError> {
        let (body, signatures) = note
            .split_once("\n\n")
            .ok_or(NoteError::Malformed("no signature block"))?;
        let body = format!("{body}\n");
        let id = key_id(&self.name, &self.key);
        let signed = signatures.lines().any(|line| {
            let Some(rest) = line.strip_prefix("\u{2014} ") else {
                return false;
            };
            let Some((name, sig)) = rest.split_once(' ') else {
                return false;
            };
            let Ok(sig) = B64.decode(sig) else {
                return false;
            };
            name == self.name
                && sig.len() == 68
                && sig[..4] == id
                && Signature::from_slice(&sig[4..])
                    .is_ok_and(|s| self.key.verify(body.as_bytes(), &s).is_ok())
        });
        if !signed {
            return Err(NoteError::Unsigned(self.name.clone()));
        }
        Checkpoint::parse_body(&body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_checkpoint_verifies_and_any_change_does_not() {
        let (signer, verifier) = NoteSigner::generate("suppressd.test").unwrap();
        let signer = NoteSigner::parse(&signer).unwrap();
        let verifier = NoteVerifier::parse(&verifier).unwrap();
        assert_eq!(signer.verifier(), verifier);
        let cp = Checkpoint {
            origin: "suppressd.test/log".into(),
            size: 42,
            root: [7; 32],
        };
        let note = signer.sign(&cp);
        assert!(note.starts_with("suppressd.test/log\n42\n"));
        assert_eq!(verifier.verify(&note), Ok(cp));
        let altered = note.replacen("\n42\n", "\n43\n", 1);
        assert!(verifier.verify(&altered).is_err());
        let (_, other) = NoteSigner::generate("suppressd.test").unwrap();
        assert!(NoteVerifier::parse(&other).unwrap().verify(&note).is_err());
    }

    #[test]
    fn keys_with_a_wrong_id_are_refused() {
        let (signer, verifier) = NoteSigner::generate("k").unwrap();
        let bad = verifier.replacen("+", "+00", 1);
        assert!(NoteVerifier::parse(&bad).is_err());
        let parts: Vec<_> = signer.split('+').collect();
        let wrong_id = format!("PRIVATE+KEY+k+00000000+{}", parts[4]);
        assert!(NoteSigner::parse(&wrong_id).is_err());
    }
}
