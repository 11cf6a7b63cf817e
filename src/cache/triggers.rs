//! Halt triggers' counts in Redis: one hash per trigger (`{prefix}trigger:<id>`), a field per
//! time slot and figure (`<slot>:c` checks, `<slot>:o` opt-outs, `<slot>:x` complaints), and
//! `floor`, the last slot that no longer counts (the trigger fired then, or a halt covered it).
//! Every replica adds what it counted into the current slot and reads the window's sums back in
//! one script ([`Cache::add_trigger_counts`]), so the sums are the whole deployment's. Slots
//! older than the window are deleted as they pass, and the hash expires a window after its last
//! write, so a removed trigger leaves nothing behind.
//!
//! What the figures mean and when they fire is the domain's (`domain::control::HaltTrigger`);
//! this module only adds and sums.

use super::{Cache, CacheError, Context};
use crate::domain::{ReceiptId, control::Figures};
use redis::Script;
use std::sync::LazyLock;

/// Adds ARGV[3..5] (checks, opt-outs, complaints) into slot ARGV[1], then sums the slots of the
/// window (the ARGV[2] slots up to ARGV[1], above `floor`), deleting those before it. With ARGV[7]
/// = 1 (a halt covers the trigger) it only moves `floor` to ARGV[1]. Answers
/// `{checks, opt_outs, complaints, floor}` (`floor` -1 when unset).
static COUNT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local key, now = KEYS[1], tonumber(ARGV[1])
          if ARGV[7] == '1' then
            redis.call('HSET', key, 'floor', now)
            redis.call('PEXPIRE', key, ARGV[6])
            return {0, 0, 0, now}
          end
          if ARGV[3] ~= '0' then redis.call('HINCRBY', key, now .. ':c', ARGV[3]) end
          if ARGV[4] ~= '0' then redis.call('HINCRBY', key, now .. ':o', ARGV[4]) end
          if ARGV[5] ~= '0' then redis.call('HINCRBY', key, now .. ':x', ARGV[5]) end
          redis.call('PEXPIRE', key, ARGV[6])
          local floor = tonumber(redis.call('HGET', key, 'floor') or '-1')
          local first = now - tonumber(ARGV[2]) + 1
          local from = math.max(first, floor + 1)
          local sums, old = {0, 0, 0}, {}
          local all = redis.call('HGETALL', key)
          for i = 1, #all, 2 do
            local slot, kind = string.match(all[i], '^(%d+):(%a)$')
            if slot then
              slot = tonumber(slot)
              if slot < first then
                table.insert(old, all[i])
              elseif slot >= from then
                local n = tonumber(all[i + 1])
                if kind == 'c' then sums[1] = sums[1] + n
                elseif kind == 'o' then sums[2] = sums[2] + n
                else sums[3] = sums[3] + n end
              end
            end
          end
          if #old > 0 then redis.call('HDEL', key, unpack(old)) end
          return {sums[1], sums[2], sums[3], floor}",
    )
});

/// Moves `floor` to ARGV[2] if it is still ARGV[1]: the one replica whose claim succeeds fires
/// the trigger, so two replicas that saw the threshold crossed at once make one halt.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local floor = tonumber(redis.call('HGET', KEYS[1], 'floor') or '-1')
          if floor ~= tonumber(ARGV[1]) then return 0 end
          redis.call('HSET', KEYS[1], 'floor', ARGV[2])
          return 1",
    )
});

/// Where a trigger's window stands after an add: the deployment's sums, and the floor they were
/// read above (what a claim must still find).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub(crate) figures: Figures,
    pub(crate) floor: i64,
}

/// One add: the slot it goes in, how many slots the window spans, and how long the hash lives.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slots {
    pub(crate) now: i64,
    pub(crate) span: i64,
    pub(crate) ttl_ms: i64,
}

impl Cache {
    /// Adds this replica's counts to the trigger's current slot and reads the window's sums;
    /// `covered`: a halt covers the trigger, so nothing counts and the window restarts now.
    pub(crate) async fn add_trigger_counts(
        &self,
        trigger: ReceiptId,
        slots: Slots,
        counted: Figures,
        covered: bool,
    ) -> Result<Window, CacheError> {
        let (checks, opt_outs, complaints, floor): (u64, u64, u64, i64) = COUNT
            .key(self.keys.trigger_counts(trigger))
            .arg(slots.now)
            .arg(slots.span)
            .arg(counted.checks)
            .arg(counted.opt_outs)
            .arg(counted.complaints)
            .arg(slots.ttl_ms)
            .arg(if covered { "1" } else { "0" })
            .invoke_async(&mut self.conn())
            .await
            .context("adding trigger counts")?;
        Ok(Window {
            figures: Figures {
                checks,
                opt_outs,
                complaints,
            },
            floor,
        })
    }

    /// Claims the firing of a trigger whose window was read above `floor`: `true` for exactly
    /// one claimant; the window then restarts after slot `now`.
    pub(crate) async fn claim_trigger(
        &self,
        trigger: ReceiptId,
        floor: i64,
        now: i64,
    ) -> Result<bool, CacheError> {
        let claimed: i64 = CLAIM
            .key(self.keys.trigger_counts(trigger))
            .arg(floor)
            .arg(now)
            .invoke_async(&mut self.conn())
            .await
            .context("claiming a trigger")?;
        Ok(claimed == 1)
    }
}
