//! The one place that knows how things are laid out in Redis: key names, field names and the binary
//! value of a cached record. Every other module asks here.
//!
//! Active suppressions live in small hashes bucketed by the subject hash's leading bits (listpack
//! encoded while a bucket stays under `hash-max-listpack-entries`), so all candidate scopes of one
//! check are fields of one key and one `HMGET` reads them. Each bucket also holds a marker field,
//! written only by a complete rebuild: a bucket without it (flushed, restarted empty, evicted) cannot
//! answer "not suppressed", whatever else it holds.

use crate::domain::{
    Channel, Match, Millis, Notice, Reason, ReceiptId, Scope, Source, SubjectHash,
    scope::channel_code,
};
use sha2::{Digest, Sha256};

/// The field in every bucket that says the bucket holds every active suppression of its subjects.
/// Real fields are [`FIELD_LEN`] bytes, so this one cannot collide with them.
pub const MARKER_FIELD: &[u8] = b"complete";

/// The version of the bucket layout (field length and value encoding), part of every bucket's name.
/// Bump it whenever either changes.
const LAYOUT: u8 = 2;

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

    /// The layout (its version and the bucket bits) is part of the name: a process started with
    /// other bits, or one that lays fields and values out differently, finds no marked bucket and
    /// rebuilds, instead of reading buckets laid out differently.
    pub fn bucket(&self, index: u32) -> String {
        format!("{}v{LAYOUT}b{}:{index:x}", self.prefix, self.bucket_bits)
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

    /// The change feed: every write that changes a bucket field (an opt-out, an import, an opt-in's
    /// or a rollback's retraction) appends the field's new value here, numbered by
    /// [`change_seq`](Self::change_seq), for the replicas' near-caches to follow (`cache::near`).
    pub fn changes(&self) -> String {
        format!("{}changes", self.prefix)
    }

    /// The number of the last change fed: consecutive, so a follower tells a gap from a quiet feed.
    pub fn change_seq(&self) -> String {
        format!("{}change-seq", self.prefix)
    }

    /// Hash of replica name → `applied:renewed_at:renewal` for every replica with a near-cache: the
    /// last change it applied and its lease, which writers wait on before they return.
    pub fn near_replicas(&self) -> String {
        format!("{}near-replicas", self.prefix)
    }

    /// Counts lease renewals; only grows, so a Redis that lost leases answers with less.
    pub fn near_renewals(&self) -> String {
        format!("{}near-renewals", self.prefix)
    }

    /// TESTS ONLY: an order to the near-cache's stall failpoint (`NearCache::with_stall_failpoint`).
    #[cfg(feature = "failpoints")]
    pub fn near_stall_failpoint(&self) -> String {
        format!("{}failpoint-near-stall", self.prefix)
    }
}

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
    field_of(
        subject,
        &scope.tenant,
        scope.channel,
        &scope.topic,
        &scope.campaign,
    )
}

/// [`field`] from the parts of a scope, without building one: the hot path hashes eight candidate
/// scopes per check and allocates none of them. Hashes exactly the bytes of [`Scope::canonical`].
fn field_of(
    subject: &SubjectHash,
    tenant: &str,
    channel: Option<Channel>,
    topic: &str,
    campaign: &str,
) -> Field {
    let mut h = Sha256::new();
    h.update(subject.0);
    h.update(tenant.as_bytes());
    h.update([0, channel_code(channel), 0]);
    h.update(topic.as_bytes());
    h.update([0]);
    h.update(campaign.as_bytes());
    let digest = h.finalize();
    let mut out = [0; FIELD_LEN];
    out.copy_from_slice(&digest[..FIELD_LEN]);
    out
}

/// The fields of a notice's candidate scopes, in the order of [`Notice::candidates`], without
/// allocating: the first `n` entries are used.
pub fn candidate_fields(subject: &SubjectHash, notice: &Notice) -> ([Field; 8], usize) {
    let mut out = [[0; FIELD_LEN]; 8];
    let mut n = 0;
    let campaigns: &[&str] = if notice.campaign.is_empty() {
        &[""]
    } else {
        &[notice.campaign.as_str(), ""]
    };
    for channel in [Some(notice.channel), None] {
        for topic in [notice.topic.as_str(), ""] {
            for campaign in campaigns {
                out[n] = field_of(subject, &notice.tenant, channel, topic, campaign);
                n += 1;
            }
        }
    }
    (out, n)
}

/// Byte offset of the expiry in a value (6 bytes, big-endian milliseconds, 0 = never); the Lua merge
/// rule reads it there (1-based: 2).
const EXPIRES_AT: usize = 1;
const EXPIRES_LEN: usize = 6;
/// Byte offset of the 16-byte receipt id in a value, for Lua scripts that need it (1-based: 8).
pub const RECEIPT_AT: usize = EXPIRES_AT + EXPIRES_LEN;
/// The fixed part of a value; two varints follow.
const FIXED_LEN: usize = RECEIPT_AT + 16;
/// A value's usual length: both time deltas fit one byte (received at the receipt's own time,
/// effective within 63 ms of it).
pub const VALUE_LEN: usize = FIXED_LEN + 2;
/// The largest expiry 6 bytes hold (year 10889).
const MAX_EXPIRES: i64 = (1 << 48) - 1;

/// The cached form of a record: what a check answers with, minus the scope (which the check already
/// knows, since it asked for that field). Layout (version [`LAYOUT`], which is part of the bucket
/// names, so a value of another layout is never read):
/// `reason << 4 | source | expires_ms (6 B, 0 = never) | receipt (16 B) |
///  zigzag varint (received_ms − the receipt's own timestamp) | zigzag varint (effective − received)`.
/// Receipt ids are UUIDv7 stamped with the receive time, so both deltas are usually 0 and a value is
/// 25 bytes (version 1 took 43).
pub fn encode_value(m: &Match) -> Vec<u8> {
    let mut out = Vec::with_capacity(VALUE_LEN);
    out.push(m.reason.code() << 4 | m.source.code());
    let expires = m.expires_at.unwrap_or(0).clamp(0, MAX_EXPIRES);
    out.extend_from_slice(&expires.to_be_bytes()[8 - EXPIRES_LEN..]);
    out.extend_from_slice(m.receipt.as_bytes());
    put_varint(
        &mut out,
        m.received_at.wrapping_sub(receipt_millis(&m.receipt)),
    );
    put_varint(&mut out, m.effective_at.wrapping_sub(m.received_at));
    out
}

/// Reads a cached value back; `None` for anything this layout did not write.
pub fn decode_value(scope: Scope, bytes: &[u8]) -> Option<Match> {
    if bytes.len() < FIXED_LEN {
        return None;
    }
    let mut expires = [0; 8];
    expires[8 - EXPIRES_LEN..].copy_from_slice(&bytes[EXPIRES_AT..RECEIPT_AT]);
    let expires = i64::from_be_bytes(expires);
    let receipt = ReceiptId::from_bytes(bytes[RECEIPT_AT..FIXED_LEN].try_into().ok()?);
    let mut rest = &bytes[FIXED_LEN..];
    let received_at = receipt_millis(&receipt).wrapping_add(take_varint(&mut rest)?);
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

/// The Unix milliseconds in a receipt id's leading 48 bits (a UUIDv7's timestamp).
fn receipt_millis(receipt: &ReceiptId) -> Millis {
    let b = receipt.as_bytes();
    i64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
}

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

/// The merge rule for one field, shared by the opt-out script and the rebuild script so that both
/// settle on the same record: a permanent record is never replaced; an expiring one is replaced by a
/// permanent one or by one that expires later.
const MERGE_FN: &str = r"
local function merge(bucket, field, value)
  local old = redis.call('HGET', bucket, field)
  if old then
    local old_exp = struct.unpack('>I6', old, 2)
    if old_exp == 0 then return 0 end
    local new_exp = struct.unpack('>I6', value, 2)
    if new_exp ~= 0 and new_exp <= old_exp then return 0 end
  end
  redis.call('HSET', bucket, field, value)
  return 1
end
";

/// How many changes the feed keeps (about: trimmed with `~`). A near-cache further behind than this
/// finds a gap in the numbers and loads again.
pub const CHANGES_KEPT: u64 = 100_000;

/// Appends a field's new value (empty: removed) to the change feed. Every script that calls it
/// takes the feed and its counter as its last two KEYS. Returns the change's number.
fn feed_fn() -> String {
    format!(
        r"
local function feed(field, value)
  local seq = redis.call('INCR', KEYS[#KEYS])
  redis.call('XADD', KEYS[#KEYS - 1], 'MAXLEN', '~', '{CHANGES_KEPT}', '*', 's', seq, 'f', field, 'v', value)
  return seq
end
"
    )
}

/// Redis's clock in milliseconds, for the near-cache leases.
pub const NOW_MS_FN: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
";

/// `leases(reply)`: appends Redis's clock (ms), the renewal count and the near-cache leases to
/// `reply`, what a writer waits on (`cache::near`); the registry and the counter are the KEYS at
/// these (1-based) positions.
pub fn leases_fn(registry: usize, renewals: usize) -> String {
    format!(
        r"{NOW_MS_FN}
local function leases(reply)
  table.insert(reply, now_ms())
  table.insert(reply, tonumber(redis.call('GET', KEYS[{renewals}]) or '0'))
  table.insert(reply, redis.call('HGETALL', KEYS[{registry}]))
  return reply
end
"
    )
}

/// Records one opt-out atomically: idempotency check, cache write, stream append, receipt marker,
/// and the change feed when the field changed.
///
/// KEYS: bucket, stream, idempotency key, receipt key, write counter, near-cache leases, their
/// renewal counter, change feed, change counter.
/// ARGV: use idempotency ("1"/"0"), field, value, receipt id, stream payload, TTL ms of the
/// idempotency and receipt keys, backlog limit (0 = none).
/// Every reply ends with Redis's clock (ms), the renewal count and the leases, which is what the
/// writer then waits on (`cache::near`), read after the write in the same round trip.
/// Returns `{0, receipt, writes, last change}` for a replay (its own change is at most that),
/// `{1, stream id, writes, change}` when recorded, `{2, length, writes, 0}` when the backlog is over
/// the limit (nothing written); `writes` is the write counter, `change` the number of the change fed
/// (0 when the field kept a stronger record).
pub fn opt_out_script() -> String {
    format!(
        "{MERGE_FN}{}{}{}",
        feed_fn(),
        leases_fn(6, 7),
        r"
local writes = tonumber(redis.call('GET', KEYS[5]) or '0')
if ARGV[1] == '1' then
  local prior = redis.call('GET', KEYS[3])
  if prior then return leases({0, prior, writes, tonumber(redis.call('GET', KEYS[9]) or '0')}) end
end
local limit = tonumber(ARGV[7])
if limit > 0 then
  local backlog = redis.call('XLEN', KEYS[2])
  if backlog >= limit then return leases({2, tostring(backlog), writes, 0}) end
end
local change = 0
if merge(KEYS[1], ARGV[2], ARGV[3]) == 1 then change = feed(ARGV[2], ARGV[3]) end
local id = redis.call('XADD', KEYS[2], '*', 'r', ARGV[5])
if ARGV[1] == '1' then redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[6]) end
redis.call('SET', KEYS[4], id, 'PX', ARGV[6])
return leases({1, id, redis.call('INCR', KEYS[5]), change})
"
    )
}

/// Writes one record from the store into the cache: for imports, for the worker re-applying what it
/// committed (so that a record committed just after a flush reaches the rebuilt cache), and for the
/// rebuild. KEYS: bucket, then (when fed) the change feed and its counter; ARGV: field, value.
/// Returns the number of the change fed, 0 when the field kept its record or nothing was fed.
///
/// A rebuild does not feed: it only puts back what Redis lost, which every near-cache that is
/// serving already holds, and a near-cache stops serving (and loads again) when Redis loses data.
pub fn merge_script() -> String {
    format!(
        "{MERGE_FN}{}{}",
        feed_fn(),
        r"
if merge(KEYS[1], ARGV[1], ARGV[2]) == 0 or #KEYS == 1 then return 0 end
return feed(ARGV[1], ARGV[2])
"
    )
}

/// Takes ended records out of one field: if the field holds one of the ended receipts, it is
/// removed and refilled from the records that remain active (by the merge rule); a field that holds
/// something else (a newer opt-out) is left as it is.
///
/// KEYS: bucket, change feed, change counter. ARGV: field, n, n ended receipt ids (16 bytes each),
/// then the remaining values. Returns the number of the change fed, 0 if the field did not change.
pub fn retract_script() -> String {
    format!(
        "{MERGE_FN}{}{}",
        feed_fn(),
        r"
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then return 0 end
local receipt = string.sub(current, RECEIPT_FROM, RECEIPT_FROM + 15)
local n = tonumber(ARGV[2])
for i = 3, 2 + n do
  if ARGV[i] == receipt then
    redis.call('HDEL', KEYS[1], ARGV[1])
    for j = 3 + n, #ARGV do merge(KEYS[1], ARGV[1], ARGV[j]) end
    return feed(ARGV[1], redis.call('HGET', KEYS[1], ARGV[1]) or '')
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
    fn buckets_cover_the_range() {
        let keys = Keys::new("p:", 4);
        assert_eq!(keys.bucket_of(&SubjectHash([0xff; 32])), 15);
        assert_eq!(keys.bucket_of(&SubjectHash([0; 32])), 0);
    }

    #[test]
    fn every_reason_and_source_fits_its_half_byte() {
        for code in 0..=u8::MAX {
            assert!(Reason::from_code(code).is_none() || code < 16);
            assert!(Source::from_code(code).is_none() || code < 16);
        }
    }

    #[test]
    fn the_merge_rule_reads_the_expiry_where_values_keep_it() {
        assert!(MERGE_FN.contains(&format!("'>I{EXPIRES_LEN}', old, {}", EXPIRES_AT + 1)));
        assert!(MERGE_FN.contains(&format!("'>I{EXPIRES_LEN}', value, {}", EXPIRES_AT + 1)));
    }

    #[test]
    fn the_marker_cannot_be_a_record_field() {
        assert_ne!(MARKER_FIELD.len(), FIELD_LEN);
        assert!(MARK_SCRIPT.contains(std::str::from_utf8(MARKER_FIELD).unwrap()));
    }
}
