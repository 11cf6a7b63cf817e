//! How much one replica takes on at once: the per-principal rate limit and the separate
//! concurrency budgets of checks, writes and anonymous audit reads.

use clap::Args;

/// The rate limit and the concurrency budgets; beyond them a call gets RESOURCE_EXHAUSTED.
#[derive(Args, Clone, Debug)]
pub struct LimitSettings {
    /// Requests per second each principal may make (a burst of the same size); 0 = no limit.
    /// Beyond it: RESOURCE_EXHAUSTED.
    #[arg(long, env = "SUPPRESSD_RATE_LIMIT_PER_PRINCIPAL", default_value_t = 0)]
    pub rate_limit_per_principal: u32,

    /// Checks in flight at once in this process; more are shed with RESOURCE_EXHAUSTED.
    #[arg(long, env = "SUPPRESSD_MAX_CONCURRENT_CHECKS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_checks: u32,

    /// Opt-outs and other writes in flight at once; a budget of their own, so a flood of checks
    /// never sheds an opt-out.
    #[arg(long, env = "SUPPRESSD_MAX_CONCURRENT_WRITES", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_writes: u32,

    /// Anonymous audit reads (GetCheckpoint, GetConsistencyProof) in flight at once: a budget of
    /// their own, so a flood of them sheds neither checks nor opt-outs. Their anonymous rate bucket
    /// is their own too.
    #[arg(long, env = "SUPPRESSD_MAX_CONCURRENT_AUDIT_READS", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_audit_reads: u32,
}
