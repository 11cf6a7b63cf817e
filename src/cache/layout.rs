//! The one place that knows how things are laid out in Redis: key names, field names and the binary
//! value of a cached record. Every other module asks here.
//!
//! Active suppressions live in small hashes bucketed by the subject hash's leading bits (listpack
//! encoded while a bucket stays under `hash-max-listpack-entries`), so all candidate scopes of one
//! check are fields of one key and one `HMGET` reads them. Each bucket also holds a marker field,
//! written only by a complete rebuild: a bucket without it (flushed, restarted empty, evicted) cannot
//! answer "not suppressed", whatever else it holds.

use crate::domain::{Match, Millis, Reason, ReceiptId, Scope, Source, SubjectHash};
use sha2::{Digest, Sha256};

/// The field in every bucket that says the bucket holds every active suppression of its subjects.
/// Real fields are 16 bytes, so this one cannot collide with them.
pub const MARKER_FIELD: &[u8] = b"complete";

/// Key names under one prefix, so that several deployments (or tests) share a Redis without meeting.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
    bucket_bits: u8,
}

impl Keys {
    pub fn new(prefix: &str, bucket_bits: u8) -> Self {
        Self {
            prefix: prefix.to_owned(),
            bucket_bits,
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn bucket_count(&self) -> u32 {
        1 << self.bucket_bits
    }

    /// The bucket a subject's records live in: the subject hash's leading bits.
    pub fn bucket_of(&self, subject: &SubjectHash) -> u32 {
        let lead = u32::from_be_bytes([subject.0[0], subject.0[1], subject.0[2], subject.0[3]]);
        lead >> (32 - u32::from(self.bucket_bits))
    }

    /// The layout (bucket bits) is part of the name: a process started with other bits finds no
    /// marked bucket and rebuilds, instead of reading buckets laid out differently.
    pub fn bucket(&self, index: u32) -> String {
        format!("{}b{}:{index:x}", self.prefix, self.bucket_bits)
    }

    pub fn bucket_for(&self, subject: &SubjectHash) -> String {
        self.bucket(self.bucket_of(subject))
    }

    /// The write-behind stream: every accepted opt-out, until the store has committed it.
    pub fn stream(&self) -> String {
        format!("{}stream", self.prefix)
    }

    /// Entries that could not be decoded, kept for a person to look at rather than dropped.
    pub fn dead_letters(&self) -> String {
        format!("{}dead-letters", self.prefix)
    }

    /// Idempotency keys are the caller's strings: hashed, so that key names stay short and bounded.
    pub fn idempotency(&self, tenant: &str, key: &str) -> String {
        let mut h = Sha256::new();
        h.update(tenant.as_bytes());
        h.update([0]);
        h.update(key.as_bytes());
        format!("{}idem:{}", self.prefix, hex::encode(&h.finalize()[..16]))
    }

    /// Present while a receipt is accepted but may not be committed yet.
    pub fn receipt(&self, id: ReceiptId) -> String {
        format!("{}rcpt:{id}", self.prefix)
    }

    /// The generation of the current (or running) rebuild; a flush removes it, which is how a rebuild
    /// notices that what it wrote so far is gone.
    pub fn generation(&self) -> String {
        format!("{}generation", self.prefix)
    }

    /// Set to the generation once a rebuild has marked every bucket.
    pub fn complete(&self) -> String {
        format!("{}complete", self.prefix)
    }

    /// Counts opt-outs ever written to this Redis. It only grows, so a Redis that answers with a
    /// smaller count than a replica has already seen has gone back in time: a stale replica was
    /// promoted, or an old snapshot was loaded.
    pub fn writes(&self) -> String {
        format!("{}writes", self.prefix)
    }

    /// The lease that lets one replica at a time rebuild.
    pub fn rebuild_lease(&self) -> String {
        format!("{}rebuild-lease", self.prefix)
    }

    /// Pub/sub channel on which workers announce committed receipts to waiting `OptOut` calls.
    pub fn durable_channel(&self) -> String {
        format!("{}durable", self.prefix)
    }

    /// Hash of replica name → the controls version it has loaded and when it last looked: what a
    /// halt waits on before it returns.
    pub fn controls_seen(&self) -> String {
        format!("{}controls-seen", self.prefix)
    }
}

/// The hash field of one (subject, scope): 16 bytes of SHA-256 over the keyed subject hash and the
/// scope's canonical form. The subject hash is already keyed, so this needs no secret of its own.
pub fn field(subject: &SubjectHash, scope: &Scope) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(subject.0);
    h.update(scope.canonical());
    let digest = h.finalize();
    let mut out = [0; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

const VALUE_VERSION: u8 = 1;
/// Byte offset of the expiry in a value; the Lua merge rule reads it there (1-based: 4).
const EXPIRES_AT: usize = 3;
pub const VALUE_LEN: usize = 3 + 8 + 8 + 8 + 16;
/// Byte offset of the receipt id (16 bytes) in a value; the retract script reads it there.
pub const RECEIPT_AT: usize = EXPIRES_AT + 24;

/// The cached form of a record: what a check answers with, minus the scope (which the check already
/// knows, since it asked for that field). Fixed layout, big-endian:
/// `version | reason | source | expires_ms (0 = never) | received_ms | effective_ms | receipt (16)`.
pub fn encode_value(m: &Match) -> Vec<u8> {
    let mut out = Vec::with_capacity(VALUE_LEN);
    out.extend_from_slice(&[VALUE_VERSION, m.reason.code(), m.source.code()]);
    out.extend_from_slice(&m.expires_at.unwrap_or(0).to_be_bytes());
    out.extend_from_slice(&m.received_at.to_be_bytes());
    out.extend_from_slice(&m.effective_at.to_be_bytes());
    out.extend_from_slice(m.receipt.as_bytes());
    out
}

/// Reads a cached value back; `None` for anything this version did not write.
pub fn decode_value(scope: Scope, bytes: &[u8]) -> Option<Match> {
    if bytes.len() != VALUE_LEN || bytes[0] != VALUE_VERSION {
        return None;
    }
    let int = |at: usize| -> Millis { i64::from_be_bytes(bytes[at..at + 8].try_into().unwrap()) };
    let expires = int(EXPIRES_AT);
    Some(Match {
        scope,
        reason: Reason::from_code(bytes[1])?,
        source: Source::from_code(bytes[2])?,
        expires_at: (expires != 0).then_some(expires),
        received_at: int(EXPIRES_AT + 8),
        effective_at: int(EXPIRES_AT + 16),
        receipt: ReceiptId::from_bytes(bytes[RECEIPT_AT..].try_into().unwrap()),
    })
}

/// The merge rule for one field, shared by the opt-out script and the rebuild script so that both
/// settle on the same record: a permanent record is never replaced; an expiring one is replaced by a
/// permanent one or by one that expires later.
const MERGE_FN: &str = r"
local function merge(bucket, field, value)
  local old = redis.call('HGET', bucket, field)
  if old then
    local old_exp = struct.unpack('>I8', old, 4)
    if old_exp == 0 then return 0 end
    local new_exp = struct.unpack('>I8', value, 4)
    if new_exp ~= 0 and new_exp <= old_exp then return 0 end
  end
  redis.call('HSET', bucket, field, value)
  return 1
end
";

/// Records one opt-out atomically: idempotency check, cache write, stream append, receipt marker.
///
/// KEYS: bucket, stream, idempotency key, receipt key, write counter.
/// ARGV: use idempotency ("1"/"0"), field, value, receipt id, stream payload, TTL ms of the
/// idempotency and receipt keys, backlog limit (0 = none).
/// Returns `{0, receipt, writes}` for a replay, `{1, stream id, writes}` when recorded, `{2, length,
/// writes}` when the backlog is over the limit (nothing written); `writes` is the write counter.
pub fn opt_out_script() -> String {
    format!(
        "{MERGE_FN}{}",
        r"
local writes = tonumber(redis.call('GET', KEYS[5]) or '0')
if ARGV[1] == '1' then
  local prior = redis.call('GET', KEYS[3])
  if prior then return {0, prior, writes} end
end
local limit = tonumber(ARGV[7])
if limit > 0 then
  local backlog = redis.call('XLEN', KEYS[2])
  if backlog >= limit then return {2, tostring(backlog), writes} end
end
merge(KEYS[1], ARGV[2], ARGV[3])
local id = redis.call('XADD', KEYS[2], '*', 'r', ARGV[5])
if ARGV[1] == '1' then redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[6]) end
redis.call('SET', KEYS[4], id, 'PX', ARGV[6])
return {1, id, redis.call('INCR', KEYS[5])}
"
    )
}

/// Writes one record from the store into the cache during a rebuild (KEYS: bucket; ARGV: field,
/// value). Also used by the worker to re-apply what it committed, so that a record committed just
/// after a flush reaches the rebuilt cache.
pub fn merge_script() -> String {
    format!("{MERGE_FN}return merge(KEYS[1], ARGV[1], ARGV[2])")
}

/// Takes ended records out of one field: if the field holds one of the ended receipts, it is
/// removed and refilled from the records that remain active (by the merge rule); a field that holds
/// something else (a newer opt-out) is left as it is.
///
/// KEYS: bucket. ARGV: field, n, n ended receipt ids (16 bytes each), then the remaining values.
/// Returns 1 if the field changed.
pub fn retract_script() -> String {
    format!(
        "{MERGE_FN}{}",
        r"
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then return 0 end
local receipt = string.sub(current, RECEIPT_FROM, RECEIPT_FROM + 15)
local n = tonumber(ARGV[2])
for i = 3, 2 + n do
  if ARGV[i] == receipt then
    redis.call('HDEL', KEYS[1], ARGV[1])
    for j = 3 + n, #ARGV do merge(KEYS[1], ARGV[1], ARGV[j]) end
    return 1
  end
end
return 0
"
        .replace("RECEIPT_FROM", &(RECEIPT_AT + 1).to_string())
    )
}

/// Removes the marker from buckets (KEYS), so that none answers "absent" until a rebuild marked it
/// again: what a replica does on finding that Redis went back in time.
pub const UNMARK_SCRIPT: &str = r"
for i = 1, #KEYS do redis.call('HDEL', KEYS[i], 'complete') end
return 1
";

/// Raises the write counter to at least ARGV[1] (KEYS: counter), after markers were removed, so that
/// replicas stop seeing Redis as stale once it has been repaired.
pub const RAISE_WRITES_SCRIPT: &str = r"
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
";

/// Marks buckets complete, but only while the rebuild's generation is still current: if Redis was
/// flushed mid-rebuild, the generation is gone and no bucket is marked.
///
/// KEYS: generation, buckets… ARGV: generation.
pub const MARK_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
for i = 2, #KEYS do redis.call('HSET', KEYS[i], 'complete', ARGV[1]) end
return 1
";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Channel;

    #[test]
    fn values_round_trip() {
        let scope = Scope::parse("t", Some(Channel::Sms), "x", "").unwrap();
        for expires_at in [None, Some(1_900_000_000_000)] {
            let m = Match {
                scope: scope.clone(),
                reason: Reason::Bounce,
                source: Source::SmsKeyword,
                received_at: 1_800_000_000_000,
                effective_at: 1_800_000_000_007,
                expires_at,
                receipt: ReceiptId::new(1_800_000_000_000),
            };
            let bytes = encode_value(&m);
            assert_eq!(bytes.len(), VALUE_LEN);
            assert_eq!(decode_value(scope.clone(), &bytes), Some(m));
        }
    }

    #[test]
    fn buckets_cover_the_range() {
        let keys = Keys::new("p:", 4);
        assert_eq!(keys.bucket_of(&SubjectHash([0xff; 32])), 15);
        assert_eq!(keys.bucket_of(&SubjectHash([0; 32])), 0);
    }

    #[test]
    fn the_marker_cannot_be_a_record_field() {
        assert_ne!(MARKER_FIELD.len(), 16);
        assert!(MARK_SCRIPT.contains(std::str::from_utf8(MARKER_FIELD).unwrap()));
    }
}
