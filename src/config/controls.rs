//! How fast halts, mandatory declarations and halt triggers reach this replica, and how long it
//! trusts them unconfirmed. That the trust outlasts several polls is checked in [`super`].

use super::parse_interval;
use clap::Args;
use std::time::Duration;

/// `--controls-poll`, `--controls-stale-after` and `--trigger-flush`.
#[derive(Args, Clone, Debug)]
pub struct ControlSettings {
    /// How often this replica polls the store for changed halts and mandatory declarations
    /// (e.g. `25ms`, `1s`). A change waits for every live replica before it returns; this bounds how
    /// long a replica cut off from Redis takes to follow.
    #[arg(long, env = "SUPPRESSD_CONTROLS_POLL", default_value = "25ms",
          value_parser = parse_interval)]
    pub(crate) controls_poll: Duration,

    /// How long this replica trusts its halts and mandatory declarations without confirming them
    /// (from the store, or from the snapshot other replicas publish in Redis). Past it the controls
    /// are stale: no check answers "send" (UNAVAILABLE instead), mandatory declarations stop
    /// overriding opt-outs, and health says NOT_SERVING, until a confirmation comes. At least
    /// four polls.
    #[arg(long, env = "SUPPRESSD_CONTROLS_STALE_AFTER", default_value = "1s",
          value_parser = parse_interval)]
    pub(crate) controls_stale_after: Duration,

    /// How often this replica adds what it counted for halt triggers (checks, opt-outs,
    /// complaints) into Redis and asks whether a trigger's threshold is crossed: a trigger fires
    /// at most this long after its figures cross it (e.g. `250ms`, `1s`).
    #[arg(long, env = "SUPPRESSD_TRIGGER_FLUSH", default_value = "250ms",
          value_parser = parse_interval)]
    pub(crate) trigger_flush: Duration,
}
