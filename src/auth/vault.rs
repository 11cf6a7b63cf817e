//! The identifier vault's keys: how a person's raw identifier is sealed for the destinations that
//! cannot work from a keyed hash (an ESP's own suppression list needs the address), and opened
//! again only to deliver to them.
//!
//! A sealed identifier is ChaCha20-Poly1305 (`ring`) under a vault key of its own, never the
//! pepper: `0x01 ‖ len(key id) ‖ key id ‖ 12-byte random nonce ‖ ciphertext+tag`. The receipt id
//! of the record is the associated data, so a blob copied onto another record does not open. The
//! key id travels in the blob, so rotation is "add a key with `seal = true`, move the flag off the
//! old one, keep the old one while records sealed under it should still be delivered". Random
//! nonces are safe for far more opt-outs than one key should seal (about 2^32); rotate long before.
//!
//! Keys are never printed: [`VaultKeys`] has a `Debug` that shows key ids only, and a failure to
//! open says nothing about the plaintext. Without a vault key nothing raw is kept.

use anyhow::{Context, bail, ensure};
use ring::aead::{CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use std::{collections::BTreeMap, fmt};

/// The format byte of a sealed identifier.
const FORMAT: u8 = 1;
/// Key ids are short labels (`2026-11`): one length byte in the blob.
const MAX_KEY_ID: usize = 64;

/// The vault keys of one key file: every key opens, one seals.
#[derive(Default)]
pub(crate) struct VaultKeys {
    keys: BTreeMap<String, LessSafeKey>,
    sealing: Option<String>,
}

impl fmt::Debug for VaultKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultKeys")
            .field("ids", &self.keys.keys().collect::<Vec<_>>())
            .field("sealing", &self.sealing)
            .finish()
    }
}

impl VaultKeys {
    /// Adds a 32-byte key under `id`; `seal` makes it the one new identifiers are sealed with.
    pub(crate) fn add(&mut self, id: &str, secret: &[u8; 32], seal: bool) -> anyhow::Result<()> {
        ensure!(
            !id.is_empty() && id.len() <= MAX_KEY_ID && id.chars().all(|c| c.is_ascii_graphic()),
            "a vault key id is 1 to {MAX_KEY_ID} printable ASCII characters"
        );
        ensure!(!self.keys.contains_key(id), "vault key id listed twice");
        if seal {
            ensure!(self.sealing.is_none(), "two vault keys have seal = true");
            self.sealing = Some(id.to_owned());
        }
        let key = UnboundKey::new(&CHACHA20_POLY1305, secret)
            .map_err(|_| anyhow::anyhow!("not a ChaCha20-Poly1305 key"))?;
        self.keys.insert(id.to_owned(), LessSafeKey::new(key));
        Ok(())
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// `identifier` sealed under the sealing key and bound to `receipt`, or `None` without one.
    pub(crate) fn seal(&self, identifier: &str, receipt: &str) -> Option<Vec<u8>> {
        let id = self.sealing.as_deref()?;
        let key = &self.keys[id];
        let nonce: [u8; NONCE_LEN] = rand::random();
        let mut sealed = Vec::with_capacity(2 + id.len() + NONCE_LEN + identifier.len() + 16);
        sealed.push(FORMAT);
        sealed.push(id.len() as u8);
        sealed.extend_from_slice(id.as_bytes());
        sealed.extend_from_slice(&nonce);
        let mut body = identifier.as_bytes().to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            ring::aead::Aad::from(receipt.as_bytes()),
            &mut body,
        )
        .expect("sealing a short identifier cannot fail");
        sealed.extend_from_slice(&body);
        Some(sealed)
    }

    /// The identifier sealed in `blob` for `receipt`, with whichever listed key sealed it.
    pub(crate) fn open(&self, blob: &[u8], receipt: &str) -> anyhow::Result<String> {
        let (&format, rest) = blob.split_first().context("empty")?;
        if format != FORMAT {
            bail!("unknown sealed format {format}");
        }
        let (&id_len, rest) = rest.split_first().context("truncated")?;
        let id_len = usize::from(id_len);
        ensure!(rest.len() >= id_len + NONCE_LEN, "truncated");
        let (id, rest) = rest.split_at(id_len);
        let id = std::str::from_utf8(id).context("key id")?;
        let key = self
            .keys
            .get(id)
            .with_context(|| format!("sealed with vault key {id:?}, which is not listed"))?;
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| anyhow::anyhow!("nonce"))?;
        let mut body = body.to_vec();
        let plain = key
            .open_in_place(nonce, ring::aead::Aad::from(receipt.as_bytes()), &mut body)
            .map_err(|_| anyhow::anyhow!("does not open with vault key {id:?} for this record"))?;
        String::from_utf8(plain.to_vec()).context("not text")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(list: &[(&str, u8, bool)]) -> VaultKeys {
        let mut keys = VaultKeys::default();
        for (id, byte, seal) in list {
            keys.add(id, &[*byte; 32], *seal).unwrap();
        }
        keys
    }

    #[test]
    fn a_sealed_identifier_opens_for_its_record_only() {
        let keys = keys(&[("k1", 7, true)]);
        let blob = keys.seal("ada@example.com", "r1").unwrap();
        assert!(!blob.windows(3).any(|w| w == b"ada"));
        assert_eq!(keys.open(&blob, "r1").unwrap(), "ada@example.com");
        assert!(keys.open(&blob, "r2").is_err());
        let mut altered = blob.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(keys.open(&altered, "r1").is_err());
    }

    #[test]
    fn a_rotated_key_still_opens_what_the_old_one_sealed() {
        let old = keys(&[("k1", 7, true)]);
        let blob = old.seal("+15005550006", "r1").unwrap();
        let rotated = keys(&[("k1", 7, false), ("k2", 9, true)]);
        assert_eq!(rotated.open(&blob, "r1").unwrap(), "+15005550006");
        let newer = rotated.seal("+15005550006", "r1").unwrap();
        assert_eq!(&newer[2..4], b"k2");
        let dropped = keys(&[("k2", 9, true)]);
        let err = dropped.open(&blob, "r1").unwrap_err().to_string();
        assert!(err.contains("\"k1\""), "{err}");
    }

    #[test]
    fn without_a_sealing_key_nothing_is_sealed() {
        assert!(VaultKeys::default().seal("x", "r").is_none());
        assert!(keys(&[("k1", 7, false)]).seal("x", "r").is_none());
        let debug = format!("{:?}", keys(&[("k1", 7, true)]));
        assert!(debug.contains("k1") && !debug.contains("7, 7"), "{debug}");
    }
}
