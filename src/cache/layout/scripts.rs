//! The Lua scripts that write buckets, the write-behind stream and the change feed, each in one
//! atomic call, and the functions they share (the merge rule, the feed, Redis's clock).

use super::codec::RECEIPT_AT;

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
pub(crate) const CHANGES_KEPT: u64 = 100_000;

/// Appends a field's new value (empty: removed) to the change feed, and bumps the write counter
/// with it: the change carries the counter (`w`), so that a replica that only follows the feed
/// still learns how far the counter went (a Redis that lost this change lost the bump too). Every
/// script that calls it takes the write counter, the feed and the feed's counter as its last three
/// KEYS. Returns the change's number and the write counter.
fn feed_fn() -> String {
    format!(
        r"
local function feed(field, value)
  local writes = redis.call('INCR', KEYS[#KEYS - 2])
  local seq = redis.call('INCR', KEYS[#KEYS])
  redis.call('XADD', KEYS[#KEYS - 1], 'MAXLEN', '~', '{CHANGES_KEPT}', '*', 's', seq, 'f', field, 'v', value, 'w', writes)
  return seq, writes
end
"
    )
}

/// Redis's clock in milliseconds, for the near-cache leases.
pub(crate) const NOW_MS_FN: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
";

/// `leases(reply)`: appends Redis's clock (ms), the renewal count and the near-cache leases to
/// `reply`, what a writer waits on (`cache::near`); the registry and the counter are the KEYS at
/// these (1-based) positions.
pub(crate) fn leases_fn(registry: usize, renewals: usize) -> String {
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
/// KEYS: bucket, stream, idempotency key, receipt key, near-cache leases, their renewal counter,
/// write counter, change feed, change counter.
/// ARGV: use idempotency ("1"/"0"), field, value, receipt id, stream payload, TTL ms of the
/// idempotency and receipt keys, backlog limit (0 = none).
/// Every reply ends with Redis's clock (ms), the renewal count and the leases, which is what the
/// writer then waits on (`cache::near`), read after the write in the same round trip.
/// Returns `{0, receipt, writes, last change}` for a replay (its own change is at most that),
/// `{1, stream id, writes, change}` when recorded, `{2, length, writes, 0}` when the backlog is over
/// the limit (nothing written); `writes` is the write counter, `change` the number of the change fed
/// (0 when the field kept a stronger record).
pub(crate) fn opt_out_script() -> String {
    format!(
        "{MERGE_FN}{}{}{}",
        feed_fn(),
        leases_fn(5, 6),
        r"
local writes = tonumber(redis.call('GET', KEYS[7]) or '0')
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
if merge(KEYS[1], ARGV[2], ARGV[3]) == 1 then
  change, writes = feed(ARGV[2], ARGV[3])
else
  writes = redis.call('INCR', KEYS[7])
end
local id = redis.call('XADD', KEYS[2], '*', 'r', ARGV[5])
if ARGV[1] == '1' then redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[6]) end
redis.call('SET', KEYS[4], id, 'PX', ARGV[6])
return leases({1, id, writes, change})
"
    )
}

/// Writes one record from the store into the cache: for imports, for the worker re-applying what it
/// committed (so that a record committed just after a flush reaches the rebuilt cache), and for the
/// rebuild. KEYS: bucket, then (when fed) the write counter, the change feed and its counter; ARGV:
/// field, value.
/// Returns the number of the change fed, 0 when the field kept its record or nothing was fed.
///
/// A rebuild does not feed: it only puts back what Redis lost, which every near-cache that is
/// serving already holds, and a near-cache stops serving (and loads again) when Redis loses data.
pub(crate) fn merge_script() -> String {
    format!(
        "{MERGE_FN}{}{}",
        feed_fn(),
        r"
if merge(KEYS[1], ARGV[1], ARGV[2]) == 0 or #KEYS == 1 then return 0 end
local change = feed(ARGV[1], ARGV[2])
return change
"
    )
}

/// Takes ended records out of one field: if the field holds one of the ended receipts, it is
/// removed and refilled from the records that remain active (by the merge rule); a field that holds
/// something else (a newer opt-out) is left as it is.
///
/// KEYS: bucket, write counter, change feed, change counter. ARGV: field, n, n ended receipt ids (16 bytes each),
/// then the remaining values. Returns the number of the change fed, 0 if the field did not change.
pub(crate) fn retract_script() -> String {
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
    local change = feed(ARGV[1], redis.call('HGET', KEYS[1], ARGV[1]) or '')
    return change
  end
end
return 0
"
        .replace("RECEIPT_FROM", &(RECEIPT_AT + 1).to_string())
    )
}

/// Removes the marker from buckets (KEYS), so that none answers "absent" until a rebuild marked it
/// again: what a replica does on finding that Redis went back in time.
pub(crate) const UNMARK_SCRIPT: &str = r"
for i = 1, #KEYS do redis.call('HDEL', KEYS[i], 'complete') end
return 1
";

/// Raises the write counter to at least ARGV[1] (KEYS: counter), after markers were removed, so that
/// replicas stop seeing Redis as stale once it has been repaired.
pub(crate) const RAISE_WRITES_SCRIPT: &str = r"
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
";

/// Marks buckets complete, but only while the rebuild's generation is still current: if Redis was
/// flushed mid-rebuild, the generation is gone and no bucket is marked.
///
/// KEYS: generation, buckets… ARGV: generation.
pub(crate) const MARK_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
for i = 2, #KEYS do redis.call('HSET', KEYS[i], 'complete', ARGV[1]) end
return 1
";

#[cfg(test)]
mod tests {
    use super::super::{
        FIELD_LEN, MARKER_FIELD,
        codec::{EXPIRES_AT, EXPIRES_LEN},
    };
    use super::*;

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
