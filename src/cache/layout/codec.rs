//! A record's hash field and its cached value, byte by byte: what the near-cache, the checks and
//! the Lua scripts all read.

use crate::domain::{
    Channel, Match, Notice, Reason, ReceiptId, Scope, Source, SubjectHash,
    scope::{MAX_NAME, MAX_TENANT, channel_code},
};
use sha2::{Digest, Sha256};

/// Bytes of a record's hash field. 96 bits keep a false match out of reach: two of a bucket's ~250
/// records share a field with probability about 250² / 2⁹⁷ (10⁻²⁵), and since fields derive from the
/// keyed subject hash nobody can aim for one without the pepper. Anything shorter than 16 B saves
/// Redis memory on every entry (SPEC §8: at most 48 B per suppression).
pub const FIELD_LEN: usize = 12;

/// A record's hash field in its bucket.
pub type Field = [u8; FIELD_LEN];

/// The hash field of one (subject, scope): the first [`FIELD_LEN`] bytes of SHA-256 over the keyed
/// subject hash and the scope's canonical form. The subject hash is already keyed, so this needs no
/// secret of its own.
pub fn field(subject: &SubjectHash, scope: &Scope) -> Field {
    Message::new(subject, &scope.tenant).field(scope.channel, &scope.topic, &scope.campaign)
}

/// The fields of a notice's candidate scopes, in the order of `Notice::candidates`, without
/// allocating: the first `n` entries are used.
pub fn candidate_fields(subject: &SubjectHash, notice: &Notice) -> ([Field; 8], usize) {
    let mut out = [[0; FIELD_LEN]; 8];
    let mut n = 0;
    let campaigns: &[&str] = if notice.campaign.is_empty() {
        &[""]
    } else {
        &[notice.campaign.as_str(), ""]
    };
    let mut message = Message::new(subject, &notice.tenant);
    for channel in [Some(notice.channel), None] {
        for topic in [notice.topic.as_str(), ""] {
            for campaign in campaigns {
                out[n] = message.field(channel, topic, campaign);
                n += 1;
            }
        }
    }
    (out, n)
}

/// Room for the longest message a field hashes (a subject and a scope at `Scope::parse`'s limits)
/// with SHA-256's padding (a `0x80` byte, then the length in 8 bytes), in whole 64-byte blocks.
const MESSAGE_ROOM: usize = (32 + MAX_TENANT + 3 + 2 * MAX_NAME + 1 + 9).div_ceil(64) * 64;

/// The SHA-256 messages of one subject's fields, laid out in their padded blocks by hand and
/// compressed with `sha2`'s own block function: the subject and the tenant, which every candidate
/// of a check shares, are written once, and each field writes only its channel, topic and campaign
/// after them. The same digest as `Sha256` (tests hold it to it), for about a sixth less time than
/// its buffering and finalising, which a check pays eight times.
struct Message<'a> {
    subject: &'a SubjectHash,
    tenant: &'a str,
    bytes: [u8; MESSAGE_ROOM],
}

impl<'a> Message<'a> {
    fn new(subject: &'a SubjectHash, tenant: &'a str) -> Message<'a> {
        let mut bytes = [0; MESSAGE_ROOM];
        bytes[..32].copy_from_slice(&subject.0);
        // A tenant too long for the room leaves every field of it to `Sha256` (below).
        if 32 + tenant.len() + 9 <= MESSAGE_ROOM {
            bytes[32..32 + tenant.len()].copy_from_slice(tenant.as_bytes());
        }
        Message {
            subject,
            tenant,
            bytes,
        }
    }

    /// The field of this subject and tenant with `channel`, `topic` and `campaign`, whose bytes
    /// follow the tenant's as in `Scope::canonical`.
    fn field(&mut self, channel: Option<Channel>, topic: &str, campaign: &str) -> Field {
        let tail = [
            &[0, channel_code(channel), 0][..],
            topic.as_bytes(),
            &[0],
            campaign.as_bytes(),
        ];
        let mut at = 32 + self.tenant.len();
        let len = at + tail.iter().map(|part| part.len()).sum::<usize>();
        let end = (len + 9).div_ceil(64) * 64;
        if end > MESSAGE_ROOM {
            // Longer than any scope `Scope::parse` accepts.
            let mut h = Sha256::new().chain_update(self.subject.0);
            h.update(self.tenant.as_bytes());
            for part in tail {
                h.update(part);
            }
            return h.finalize()[..FIELD_LEN]
                .try_into()
                .expect("FIELD_LEN bytes");
        }
        for part in tail {
            self.bytes[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        self.bytes[len] = 0x80;
        self.bytes[len + 1..end - 8].fill(0);
        self.bytes[end - 8..end].copy_from_slice(&(len as u64 * 8).to_be_bytes());
        let mut state = SHA256_IV;
        for block in self.bytes[..end].chunks_exact(64) {
            sha2::compress256(&mut state, std::slice::from_ref(block.into()));
        }
        let mut out = [0; FIELD_LEN];
        for (bytes, word) in out.chunks_exact_mut(4).zip(state) {
            bytes.copy_from_slice(&word.to_be_bytes());
        }
        out
    }
}

/// SHA-256's initial hash value (FIPS 180-4, 5.3.3).
const SHA256_IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// Byte offset of the expiry in a value (6 bytes, big-endian milliseconds, 0 = never); the Lua merge
/// rule reads it there (1-based: 2).
pub(super) const EXPIRES_AT: usize = 1;
pub(super) const EXPIRES_LEN: usize = 6;
/// Byte offset of the 16-byte receipt id in a value, for Lua scripts that need it (1-based: 8).
pub(crate) const RECEIPT_AT: usize = EXPIRES_AT + EXPIRES_LEN;
/// The fixed part of a value; two varints follow.
const FIXED_LEN: usize = RECEIPT_AT + 16;
/// A value's usual length: both time deltas fit one byte (received at the receipt's own time,
/// effective within 63 ms of it).
pub const VALUE_LEN: usize = FIXED_LEN + 2;
/// The largest expiry 6 bytes hold (year 10889).
const MAX_EXPIRES: i64 = (1 << 48) - 1;

/// The cached form of a record: what a check answers with, minus the scope (which the check already
/// knows, since it asked for that field). Layout (version [`LAYOUT`](super::LAYOUT), which is part of the bucket
/// names, so a value of another layout is never read):
/// `reason << 4 | source | expires_ms (6 B, 0 = never) | receipt (16 B) |
///  zigzag varint (received_ms − the receipt's own timestamp) | zigzag varint (effective − received)`.
/// Receipt ids are UUIDv7 stamped with the receive time, so both deltas are usually 0 and a value is
/// 25 bytes (version 1 took 43).
pub(crate) fn encode_value(m: &Match) -> Vec<u8> {
    let mut out = Vec::with_capacity(VALUE_LEN);
    out.push(m.reason.code() << 4 | m.source.code());
    let expires = m.expires_at.unwrap_or(0).clamp(0, MAX_EXPIRES);
    out.extend_from_slice(&expires.to_be_bytes()[8 - EXPIRES_LEN..]);
    out.extend_from_slice(m.receipt.as_bytes());
    put_varint(&mut out, m.received_at.wrapping_sub(m.receipt.millis()));
    put_varint(&mut out, m.effective_at.wrapping_sub(m.received_at));
    out
}

/// Reads a cached value back; `None` for anything this layout did not write.
pub(crate) fn decode_value(scope: Scope, bytes: &[u8]) -> Option<Match> {
    if bytes.len() < FIXED_LEN {
        return None;
    }
    let mut expires = [0; 8];
    expires[8 - EXPIRES_LEN..].copy_from_slice(&bytes[EXPIRES_AT..RECEIPT_AT]);
    let expires = i64::from_be_bytes(expires);
    let receipt = ReceiptId::from_bytes(bytes[RECEIPT_AT..FIXED_LEN].try_into().ok()?);
    let mut rest = &bytes[FIXED_LEN..];
    let received_at = receipt.millis().wrapping_add(take_varint(&mut rest)?);
    let effective_at = received_at.wrapping_add(take_varint(&mut rest)?);
    if !rest.is_empty() {
        return None;
    }
    Some(Match {
        scope,
        reason: Reason::from_code(bytes[0] >> 4)?,
        source: Source::from_code(bytes[0] & 0x0f)?,
        expires_at: (expires != 0).then_some(expires),
        received_at,
        effective_at,
        receipt,
    })
}

/// Decodes the values found for some candidate scopes, and says whether any could not be read.
/// A value this version cannot read (written by a newer layout, or damaged) must not count as
/// absent: the caller treats the bucket as unable to vouch for an absence, and the check falls
/// back to the store. Each such value is counted in `suppressd_cache_unreadable_values_total`.
pub(crate) fn decode_values<V: AsRef<[u8]>>(
    values: impl IntoIterator<Item = (Scope, V)>,
) -> (Vec<Match>, bool) {
    let mut unreadable = false;
    let found = values
        .into_iter()
        .filter_map(|(scope, v)| {
            let decoded = decode_value(scope, v.as_ref());
            if decoded.is_none() {
                unreadable = true;
                metrics::counter!(crate::telemetry::metrics::names::UNREADABLE_VALUES).increment(1);
            }
            decoded
        })
        .collect();
    (found, unreadable)
}

/// The Unix milliseconds in a receipt id's leading 48 bits (a UUIDv7's timestamp).
fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn take_varint(bytes: &mut &[u8]) -> Option<i64> {
    let mut z = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        z |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Channel, Millis};

    fn record(scope: &Scope, received_at: Millis, expires_at: Option<Millis>) -> Match {
        Match {
            scope: scope.clone(),
            reason: Reason::Bounce,
            source: Source::SmsKeyword,
            received_at,
            effective_at: received_at + 7,
            expires_at,
            receipt: ReceiptId::new(1_800_000_000_000),
        }
    }

    #[test]
    fn values_round_trip() {
        let scope = Scope::parse("t", Some(Channel::Sms), "x", "").unwrap();
        for expires_at in [None, Some(1_900_000_000_000)] {
            let m = record(&scope, 1_800_000_000_000, expires_at);
            let bytes = encode_value(&m);
            assert_eq!(bytes.len(), VALUE_LEN);
            assert_eq!(decode_value(scope.clone(), &bytes), Some(m));
        }
    }

    #[test]
    fn backdated_and_odd_times_round_trip_in_longer_values() {
        let scope = Scope::parse("t", None, "", "").unwrap();
        for received_at in [0, 1_000_000_000_000, 1_800_000_000_001, i64::MAX / 2] {
            let mut m = record(&scope, received_at, Some(MAX_EXPIRES));
            m.effective_at = received_at - 5_000;
            let bytes = encode_value(&m);
            assert_eq!(decode_value(scope.clone(), &bytes), Some(m));
        }
    }

    #[test]
    fn values_of_another_length_are_refused() {
        let scope = Scope::parse("t", None, "", "").unwrap();
        let bytes = encode_value(&record(&scope, 1_800_000_000_000, None));
        assert_eq!(decode_value(scope.clone(), &bytes[..FIXED_LEN]), None);
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(decode_value(scope, &long), None);
    }

    #[test]
    fn candidate_fields_are_the_fields_of_the_candidates() {
        let subject = SubjectHash([7; 32]);
        for campaign in ["", "RC-1"] {
            let notice = Notice::parse("acme", Some(Channel::Email), "recall", campaign).unwrap();
            let (fields, n) = candidate_fields(&subject, &notice);
            let expected: Vec<Field> = notice
                .candidates()
                .iter()
                .map(|s| field(&subject, s))
                .collect();
            assert_eq!(&fields[..n], &expected[..]);
        }
    }

    #[test]
    fn a_field_hashes_the_subject_then_the_canonical_scope() {
        // Every padding case: messages of one to seven blocks, ending on either side of where the
        // length no longer fits the last block, and scopes longer than `Scope::parse` accepts.
        let subject = SubjectHash([7; 32]);
        let names = |max: usize| (0..=max).filter(move |n| n % 9 == 0 || n % 64 >= 50 || *n == max);
        for tenant in names(MAX_TENANT + 80) {
            for (topic, campaign) in names(MAX_NAME + 70).zip(names(MAX_NAME + 70).rev()) {
                for channel in [None, Some(Channel::Sms)] {
                    let scope = Scope {
                        tenant: "t".repeat(tenant.max(1)),
                        channel,
                        topic: "p".repeat(topic),
                        campaign: "c".repeat(campaign),
                    };
                    let digest = Sha256::new()
                        .chain_update(subject.0)
                        .chain_update(scope.canonical())
                        .finalize();
                    assert_eq!(
                        field(&subject, &scope)[..],
                        digest[..FIELD_LEN],
                        "{scope:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_reason_and_source_fits_its_half_byte() {
        for code in 0..=u8::MAX {
            assert!(Reason::from_code(code).is_none() || code < 16);
            assert!(Source::from_code(code).is_none() || code < 16);
        }
    }
}
