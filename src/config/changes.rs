//! How changes reach other systems (docs/webhooks.md): how often a caught-up `WatchChanges` stream
//! asks the store, and how webhooks are delivered, retried and parked.

use super::parse_interval;
use clap::Args;
use std::time::Duration;

/// `--watch-poll` and the `--delivery-*` flags.
#[derive(Args, Clone, Debug)]
pub struct ChangeSettings {
    /// How often a `WatchChanges` stream that has caught up with the audit log asks the store for
    /// newer entries (e.g. `100ms`): the most a watcher waits for a change another replica
    /// committed.
    #[arg(long, env = "SUPPRESSD_WATCH_POLL", default_value = "100ms",
          value_parser = parse_interval)]
    pub watch_poll: Duration,

    /// How often each replica looks for webhook destinations with changes to deliver.
    #[arg(long, env = "SUPPRESSD_DELIVERY_INTERVAL", default_value = "200ms",
          value_parser = parse_interval)]
    pub delivery_interval: Duration,

    /// Failed attempts in a row after which a webhook destination is parked (its changes kept,
    /// none dropped) until an admin resumes it (`ResumeDestination`).
    #[arg(long, env = "SUPPRESSD_DELIVERY_FAILURE_BUDGET", default_value_t = 12,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub delivery_failure_budget: u32,

    /// The delay before the first retry of a failed webhook; each next one doubles (with jitter:
    /// half to all of it), up to --delivery-backoff-max.
    #[arg(long, env = "SUPPRESSD_DELIVERY_BACKOFF_BASE", default_value = "1s",
          value_parser = parse_interval)]
    pub delivery_backoff_base: Duration,

    #[arg(long, env = "SUPPRESSD_DELIVERY_BACKOFF_MAX", default_value = "300s",
          value_parser = parse_interval)]
    pub delivery_backoff_max: Duration,

    /// How long one webhook POST may take before it counts as failed. A destination's lease (one
    /// replica delivers it at a time) lasts two of these plus --delivery-interval.
    #[arg(long, env = "SUPPRESSD_DELIVERY_TIMEOUT", default_value = "10s",
          value_parser = parse_interval)]
    pub delivery_timeout: Duration,
}
