//! The Lua scripts that write buckets, the write-behind stream and the change feed, each in one
//! atomic call, and the functions they share (the merge rule, the feed, Redis's clock).

use super::codec::RECEIPT_AT;

/// The merge rule for one field, shared by the opt-out script and the rebuild script so that both
/// settle on the same record: a permanent record is never replaced; an expiring one is replaced by a
/// permanent one or by one that expires later. Returns 1 when it wrote (else 0) and the value the
/// field holds after.
const MERGE_FN: &str = r"
local function merge(bucket, field, value)
  local old = redis.call('HGET', bucket, field)
  if old then
    local old_exp = struct.unpack('>I6', old, 2)
    if old_exp == 0 then return 0, old end
    local new_exp = struct.unpack('>I6', value, 2)
    if new_exp ~= 0 and new_exp <= old_exp then return 0, old end
  end
  redis.call('HSET', bucket, field, value)
  return 1, value
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

/// `keep(layouts, names)`: removes from the group's layout hash (`GroupKeys::layouts`) every
/// layout this write does not write (`names`), complete or being filled: from now on it may lack
/// this write, so no check may trust it (`cache::layouts`). Returns the position in `names` of a
/// complete layout it writes (0: none), and whether the hash exists (it does once a replica that
/// keeps it has seen the group; `.` stays in it).
///
/// `write_all(...)` merges the value into the field of every bucket and says whether any changed,
/// and what the field now holds in the bucket at `at` (that complete layout's, the one every
/// near-cache's copy agrees with, else the first); `feed_layouts(...)` then feeds that value, as
/// the merges left it (no read after them). A write that finds no complete layout among its own
/// in a kept hash first skips a change number, so that every near-cache sees a gap and loads
/// again from a complete layout (or stops answering until there is one).
const LAYOUTS_FN: &str = r"
local function keep(layouts, names)
  local all = redis.call('HGETALL', layouts)
  local primary = 0
  for i = 1, #all, 2 do
    if all[i] ~= '.' then
      local at = 0
      for j = 1, #names do if names[j] == all[i] then at = j end end
      if at == 0 then
        redis.call('HDEL', layouts, all[i])
      elseif primary == 0 and string.sub(all[i + 1], 1, 3) == 'ok:' then
        primary = at
      end
    end
  end
  return primary, #all > 0
end
local function write_all(buckets, field, value, at)
  local changed, now = false, nil
  for i = 1, #buckets do
    local wrote, held = merge(buckets[i], field, value)
    if wrote == 1 then changed = true end
    if i == at then now = held end
  end
  return changed, now
end
local function feed_layouts(primary, kept, field, value)
  if kept and primary == 0 then redis.call('INCR', KEYS[#KEYS]) end
  return feed(field, value)
end
";

/// Records one opt-out atomically: idempotency check, cache write (in the bucket of every layout
/// it writes), stream append, receipt marker, and the change feed when the field changed.
///
/// KEYS: stream, idempotency key (when ARGV[1] is "0", any key of the group: it is not read),
/// receipt key, near-cache leases, their renewal counter, the group's layouts, one bucket per layout
/// written, write counter, change feed, change counter.
/// ARGV: use idempotency ("1"/"0"), field, value, receipt id, stream payload, TTL ms of the
/// idempotency and receipt keys, backlog limit (0 = none), then the names of the layouts written
/// (one per bucket, in the same order).
/// Every reply ends with Redis's clock (ms), the renewal count and the leases, which is what the
/// writer then waits on (`cache::near`), read after the write in the same round trip.
/// Returns `{0, receipt, writes, last change}` for a replay (its own change is at most that),
/// `{1, stream id, writes, change}` when recorded, `{2, length, writes, 0}` when the backlog is over
/// the limit (nothing written); `writes` is the write counter, `change` the number of the change fed
/// (0 when the field kept a stronger record).
pub(crate) fn opt_out_script() -> String {
    format!(
        "{MERGE_FN}{}{}{LAYOUTS_FN}{}",
        feed_fn(),
        leases_fn(4, 5),
        r"
local buckets, names = {}, {}
for i = 1, #ARGV - 7 do buckets[i] = KEYS[6 + i]; names[i] = ARGV[7 + i] end
local function writes_now() return tonumber(redis.call('GET', KEYS[#KEYS - 2]) or '0') end
if ARGV[1] == '1' then
  local prior = redis.call('GET', KEYS[2])
  if prior then return leases({0, prior, writes_now(), tonumber(redis.call('GET', KEYS[#KEYS]) or '0')}) end
end
local limit = tonumber(ARGV[7])
if limit > 0 then
  local backlog = redis.call('XLEN', KEYS[1])
  if backlog >= limit then return leases({2, tostring(backlog), writes_now(), 0}) end
end
local change, writes = 0, 0
local primary, kept = keep(KEYS[6], names)
local changed, now = write_all(buckets, ARGV[2], ARGV[3], math.max(primary, 1))
if changed then
  change, writes = feed_layouts(primary, kept, ARGV[2], now)
else
  writes = redis.call('INCR', KEYS[#KEYS - 2])
end
local id = redis.call('XADD', KEYS[1], '*', 'r', ARGV[5])
if ARGV[1] == '1' then redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[6]) end
redis.call('SET', KEYS[3], id, 'PX', ARGV[6])
return leases({1, id, writes, change})
"
    )
}

/// Writes records from the store into the cache: for imports, for the worker re-applying what it
/// committed (so that a record committed just after a flush reaches the rebuilt cache), and for the
/// rebuild. One call writes a batch of records of one group (at most [`MERGE_BATCH`]): per record,
/// a call cost Redis more than the record's own writes.
///
/// The worker's calls also settle the stream entries of the records they merged: after the merges,
/// `XACK` and `XDEL` them and announce their receipts as durable. In the same script, so that an
/// entry is never acknowledged unless its record was merged (a merge refused, say by `OOM` under
/// `noeviction`, ends the script before it); in a pipeline Redis would run the `XACK` after the
/// failed call.
///
/// KEYS: the group's layouts, then for each record one bucket per layout written, then (when
/// settling) the group's stream, then (when fed) the write counter, the change feed and its
/// counter. ARGV: k, n, s, the k names of the layouts written, each of the n records' field and
/// value, then (s > 0) the s stream entries to settle, the announcements' channel and the
/// announcement. Returns the number of the last change fed, 0 when every field kept its record or
/// nothing was fed.
///
/// A rebuild does not feed: it only puts back what Redis lost, which every near-cache that is
/// serving already holds, and a near-cache stops serving (and loads again) when Redis loses data.
/// Nor does it touch the layouts' hash: it copies what the store holds into the layouts it fills,
/// which tells no other layout anything new.
pub(crate) fn merge_script() -> String {
    format!(
        "{MERGE_FN}{}{LAYOUTS_FN}{}",
        feed_fn(),
        r"
local k, n, s = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local names = {}
for i = 1, k do names[i] = ARGV[3 + i] end
local stream = 1 + n * k + (s > 0 and 1 or 0)
local fed = #KEYS > stream
local primary, kept = 0, false
if fed then primary, kept = keep(KEYS[1], names) end
local change = 0
for r = 0, n - 1 do
  local buckets = {}
  for i = 1, k do buckets[i] = KEYS[1 + r * k + i] end
  local field = ARGV[4 + k + 2 * r]
  local changed, now = write_all(buckets, field, ARGV[5 + k + 2 * r], math.max(primary, 1))
  if changed and fed then
    change = feed_layouts(primary, kept, field, now)
  end
end
if s > 0 then
  local ids = {}
  for i = 1, s do ids[i] = ARGV[3 + k + 2 * n + i] end
  redis.call('XACK', KEYS[stream], CONSUMER_GROUP, unpack(ids))
  redis.call('XDEL', KEYS[stream], unpack(ids))
  redis.call('PUBLISH', ARGV[#ARGV - 1], ARGV[#ARGV])
end
return change
"
        .replace(
            "CONSUMER_GROUP",
            &format!("'{}'", crate::cache::stream::GROUP)
        )
    )
}

/// The most records one call of [`merge_script`] writes: a script holds Redis while it runs, and
/// a rebuild merges thousands at a time.
pub const MERGE_BATCH: usize = 128;

/// Takes ended records out of one field, in every layout written: if the field holds one of the
/// ended receipts, it is removed and refilled from the records that remain active (by the merge
/// rule); a field that holds something else (a newer opt-out) is left as it is.
///
/// KEYS: the group's layouts, one bucket per layout written, write counter, change feed, change
/// counter. ARGV: field, k, the k names of the layouts written, n, n ended receipt ids (16 bytes
/// each), then the remaining values. Returns the number of the change fed, 0 if no field changed.
pub(crate) fn retract_script() -> String {
    format!(
        "{MERGE_FN}{}{LAYOUTS_FN}{}",
        feed_fn(),
        r"
local k = tonumber(ARGV[2])
local buckets, names = {}, {}
for i = 1, k do buckets[i] = KEYS[1 + i]; names[i] = ARGV[2 + i] end
local primary, kept = keep(KEYS[1], names)
local n = tonumber(ARGV[3 + k])
local ended = {}
for i = 4 + k, 3 + k + n do ended[ARGV[i]] = true end
local changed = false
for b = 1, k do
  local current = redis.call('HGET', buckets[b], ARGV[1])
  if current and ended[string.sub(current, RECEIPT_FROM, RECEIPT_FROM + 15)] then
    redis.call('HDEL', buckets[b], ARGV[1])
    for j = 4 + k + n, #ARGV do merge(buckets[b], ARGV[1], ARGV[j]) end
    changed = true
  end
end
if not changed then return 0 end
local now = redis.call('HGET', buckets[math.max(primary, 1)], ARGV[1]) or ''
local change = feed_layouts(primary, kept, ARGV[1], now)
return change
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
