//! How opt-outs travel from Redis to the store: how long a DURABLE opt-out waits, when ACCEPTED ones
//! are refused, and the write-behind worker's batch and claim settings.

use clap::Args;
use std::time::Duration;

/// The write path's flags: the durable wait, the backlog limit and the worker's.
#[derive(Args, Clone, Debug)]
pub struct WriteBehindSettings {
    /// How long a DURABLE opt-out waits for the store before answering ACCEPTED, in milliseconds.
    #[arg(long, env = "SUPPRESSD_DURABLE_WAIT_MS", default_value_t = 2_000)]
    pub durable_wait_ms: u64,

    /// Uncommitted opt-outs above which ACCEPTED-only opt-outs are refused with UNAVAILABLE (0 = no
    /// limit). DURABLE opt-outs are not refused: their receipt tells the truth.
    #[arg(long, env = "SUPPRESSD_BACKLOG_LIMIT", default_value_t = 100_000)]
    pub(crate) backlog_limit: u64,

    /// Most opt-outs the worker commits in one transaction.
    #[arg(long, env = "SUPPRESSD_WORKER_BATCH", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) worker_batch: u32,

    /// How long an entry may stay unacknowledged by a worker before another replica claims it, in
    /// milliseconds.
    #[arg(long, env = "SUPPRESSD_WORKER_CLAIM_IDLE_MS", default_value_t = 5_000)]
    pub(crate) worker_claim_idle_ms: u64,
}

impl WriteBehindSettings {
    pub(crate) fn durable_wait(&self) -> Duration {
        Duration::from_millis(self.durable_wait_ms)
    }

    pub(crate) fn worker_claim_idle(&self) -> Duration {
        Duration::from_millis(self.worker_claim_idle_ms)
    }
}
