//! Every metric name, in one place, and the process-wide Prometheus recorder behind `/metrics`.
//!
//! Code records through the `metrics` facade (`metrics::counter!(names::X, …)`). Until
//! `prometheus` installs the recorder (the admin port is configured), those calls go to the
//! facade's no-op recorder and cost next to nothing. Label values are always drawn from small, fixed
//! sets (method names, status codes, reasons): never an identifier.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::{sync::OnceLock, time::Duration};

/// The metric names (docs/operations.md lists them with their labels).
pub mod names {
    /// Calls answered, by `rpc_service`, `rpc_method` and gRPC `code` (`OK`, `UNAVAILABLE`, …).
    pub(crate) const RPC_REQUESTS: &str = "suppressd_rpc_requests_total";
    /// Call latency from the request's headers to the response's status, by service and method.
    pub(crate) const RPC_DURATION: &str = "suppressd_rpc_duration_seconds";
    /// Checks answered, by `answer_source`: `cache`, `cache+store` or `store`.
    pub(crate) const CHECKS: &str = "suppressd_checks_total";
    /// New opt-outs recorded (visible and queued), by `reason` and `source`.
    pub(crate) const OPT_OUTS: &str = "suppressd_opt_outs_total";
    /// 1 when the cache carries a complete rebuild's marker, 0 when checks may fall to the store.
    pub(crate) const CACHE_COMPLETE: &str = "suppressd_cache_complete";
    /// 1 while this replica rebuilds the cache.
    pub(crate) const REBUILD_RUNNING: &str = "suppressd_cache_rebuild_running";
    /// Records copied from the store by the current (or last) rebuild of this replica.
    pub(crate) const REBUILD_RECORDS: &str = "suppressd_cache_rebuild_records";
    /// Rebuild attempts that did work, by `outcome`: `rebuilt`, `interrupted`, `failed`.
    pub(crate) const REBUILDS: &str = "suppressd_cache_rebuilds_total";
    /// Entries in the write-behind stream: opt-outs not yet committed (read or not).
    pub(crate) const STREAM_LENGTH: &str = "suppressd_writebehind_stream_length";
    /// Entries delivered to a worker and not yet acknowledged.
    pub(crate) const PENDING: &str = "suppressd_writebehind_pending_entries";
    /// Age of the oldest entry delivered to a worker and not yet acknowledged (0 when none).
    pub(crate) const OLDEST_PENDING_AGE: &str = "suppressd_writebehind_oldest_pending_age_seconds";
    /// Records per store transaction of the worker.
    pub(crate) const BATCH_SIZE: &str = "suppressd_writebehind_batch_size";
    /// Time the store took to commit one batch, by `path`: `at_once` (one round trip) or `locked`
    /// (a transaction under the audit head's lock: the first commit, or after another writer).
    pub(crate) const COMMIT_DURATION: &str = "suppressd_writebehind_commit_duration_seconds";
    /// Records the worker committed that the store did not have (redeliveries add none).
    pub(crate) const COMMITTED: &str = "suppressd_writebehind_committed_total";
    /// Undecodable entries moved to the dead-letter stream.
    pub(crate) const DEAD_LETTERS: &str = "suppressd_writebehind_dead_letters_total";
    /// Stream entries of a newer format version, left unacknowledged for a newer worker.
    pub(crate) const NEWER_ENTRIES: &str = "suppressd_writebehind_newer_entries_total";
    /// Cached values this version cannot read (a newer layout's, or damaged): their checks were
    /// answered from the store.
    pub(crate) const UNREADABLE_VALUES: &str = "suppressd_cache_unreadable_values_total";
    /// Failed Redis operations, by `operation`.
    pub(crate) const REDIS_ERRORS: &str = "suppressd_redis_errors_total";
    /// Failed store operations, by `operation`.
    pub(crate) const STORE_ERRORS: &str = "suppressd_store_errors_total";
    /// Time since this replica last confirmed that its controls (halts, mandatory declarations) are
    /// current, from the store or from the snapshot published in Redis.
    pub(crate) const CONTROLS_AGE: &str = "suppressd_controls_snapshot_age_seconds";
    /// 1 while this replica's controls are stale (not confirmed within `--controls-stale-after`):
    /// it then answers no check with "send".
    pub(crate) const CONTROLS_STALE: &str = "suppressd_controls_stale";
    /// Checks refused (`UNAVAILABLE`) because this replica's controls were stale.
    pub(crate) const CHECKS_REFUSED_STALE: &str = "suppressd_checks_refused_stale_controls_total";
    /// Control changes (halts, resumes, declarations, revocations), by how far they had reached
    /// when the call returned (`confirmed`, `unconfirmed`).
    pub(crate) const CONTROL_PROPAGATIONS: &str = "suppressd_control_propagations_total";
    /// Checks a control decided, by which (`halt`, `mandatory`, `send_window`, `consent`).
    pub(crate) const CONTROL_ANSWERS: &str = "suppressd_control_answers_total";
    /// Consent look-ups of checks under a consent requirement, by `outcome` (`consented`,
    /// `no_consent`, `failed`).
    pub(crate) const CONSENT_LOOKUPS: &str = "suppressd_consent_lookups_total";
    /// Halts made by halt triggers, by `outcome` (`halted`, or `failed`: tried again later).
    pub(crate) const TRIGGER_FIRINGS: &str = "suppressd_halt_trigger_firings_total";
    /// Checks and opt-outs counted for halt triggers that could not be added in Redis (it was
    /// unreachable at a flush): lost to the triggers' windows.
    pub(crate) const TRIGGER_COUNTS_LOST: &str = "suppressd_halt_trigger_counts_lost_total";
    /// 1 while this replica answers checks from its near-cache, else 0.
    pub(crate) const NEAR_CACHE_SERVING: &str = "suppressd_near_cache_serving";
    /// Records this replica's near-cache copied when it last loaded.
    pub(crate) const NEAR_CACHE_ENTRIES: &str = "suppressd_near_cache_loaded_records";
    /// A person's opt-outs the store took directly because Redis could not, by `reason`.
    pub(crate) const UNCACHED_OPT_OUTS: &str = "suppressd_uncached_opt_outs_total";
    /// 1 while this replica answers checks from the cache; 0 while it answers them all from the
    /// store (Redis failed, or the store holds opt-outs the cache may lack).
    pub(crate) const CACHE_TRUSTED: &str = "suppressd_cache_trusted";
    /// Provider webhooks on the HTTP front, by `provider` and `outcome` (`opted_out`, `opted_in`,
    /// `help`, `ignored`, `unsigned`, `bad_signature`, `stale`, `unknown_number`, `malformed`,
    /// `unavailable`, `failed`).
    pub(crate) const INBOUND_EVENTS: &str = "suppressd_inbound_events_total";
    /// `WatchChanges` streams open on this replica.
    pub(crate) const WATCHERS: &str = "suppressd_watch_streams";
    /// Webhook delivery attempts, by `outcome`: `delivered`, `failed` (retried later) or `parked`
    /// (the failure budget ran out).
    pub(crate) const DELIVERIES: &str = "suppressd_webhook_deliveries_total";
    /// For each destination, how long its last delivered change waited between its commit and
    /// the receiver's 2xx, by `destination` (the destination id).
    pub(crate) const DELIVERY_LAG: &str = "suppressd_delivery_lag_seconds";
    /// Records whose legal deadline is near (pending, due within the margin) or missed, by
    /// `regime` and `state` (`near`, `missed`), among those received within the longest window;
    /// recomputed from the store every `--deadlines-refresh`.
    pub(crate) const DEADLINES: &str = "suppressd_deadlines";
    /// The same, judged at each webhook destination (against when the record's opt-out reached
    /// it), by `destination`, `regime` and `state`: records the destination wants, received since
    /// it was registered.
    pub(crate) const DESTINATION_DEADLINES: &str = "suppressd_destination_deadlines";

    /// Every name above: what dashboards and docs/operations.md may refer to.
    pub const ALL: &[&str] = &[
        RPC_REQUESTS,
        RPC_DURATION,
        CHECKS,
        OPT_OUTS,
        CACHE_COMPLETE,
        REBUILD_RUNNING,
        REBUILD_RECORDS,
        REBUILDS,
        STREAM_LENGTH,
        PENDING,
        OLDEST_PENDING_AGE,
        BATCH_SIZE,
        COMMIT_DURATION,
        COMMITTED,
        DEAD_LETTERS,
        NEWER_ENTRIES,
        UNREADABLE_VALUES,
        REDIS_ERRORS,
        STORE_ERRORS,
        CONTROLS_AGE,
        CONTROLS_STALE,
        CHECKS_REFUSED_STALE,
        CONTROL_PROPAGATIONS,
        CONTROL_ANSWERS,
        CONSENT_LOOKUPS,
        TRIGGER_FIRINGS,
        TRIGGER_COUNTS_LOST,
        NEAR_CACHE_SERVING,
        NEAR_CACHE_ENTRIES,
        UNCACHED_OPT_OUTS,
        CACHE_TRUSTED,
        INBOUND_EVENTS,
        WATCHERS,
        DELIVERIES,
        DELIVERY_LAG,
        DEADLINES,
        DESTINATION_DEADLINES,
    ];
}

/// Latency buckets, in seconds: a cache hit is ~0.1–1 ms, a store fallback or a DURABLE opt-out
/// milliseconds to seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Batch-size buckets, in records (the batch is at most 10,000).
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 10000.0,
];
/// How often histograms are compacted between scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The handle in `cell`, made by `make` on first use, from suppressd's recorder (installed then if
/// no admin endpoint has). For the metrics of every call: with labels, `counter!` and `histogram!`
/// look their series up in the registry each time (callgrind: 2,000 instructions a check).
pub(crate) fn once<T>(cell: &OnceLock<T>, make: impl FnOnce() -> T) -> &T {
    cell.get_or_init(|| {
        prometheus();
        make()
    })
}

/// The process-wide recorder, installed on first use. Every application in the process (tests run
/// several) shares it; a metric set outside suppressd's recorder (another global one installed
/// first) makes this panic, which is a wiring bug, not a runtime condition.
pub(crate) fn prometheus() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(names::BATCH_SIZE.into()), BATCH_BUCKETS)
            })
            .expect("bucket lists are not empty")
            .install_recorder()
            .expect("no other metrics recorder is installed");
        describe();
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                }
            })
            .expect("spawning the metrics upkeep thread");
        handle
    })
}

fn describe() {
    use names::*;
    describe_counter!(
        RPC_REQUESTS,
        "gRPC calls answered, by service, method and status code"
    );
    describe_histogram!(RPC_DURATION, Unit::Seconds, "gRPC call latency");
    describe_counter!(CHECKS, "Checks answered, by where the answer came from");
    describe_counter!(OPT_OUTS, "New opt-outs recorded, by reason and source");
    describe_gauge!(WATCHERS, "WatchChanges streams open on this replica");
    describe_counter!(DELIVERIES, "Webhook delivery attempts, by outcome");
    describe_gauge!(
        DELIVERY_LAG,
        Unit::Seconds,
        "Commit-to-delivery time of each destination's last delivered change"
    );
    describe_gauge!(CACHE_COMPLETE, "1 if the cache is complete, else 0");
    describe_gauge!(REBUILD_RUNNING, "1 while this replica rebuilds the cache");
    describe_gauge!(
        REBUILD_RECORDS,
        "Records copied by this replica's current or last rebuild"
    );
    describe_counter!(REBUILDS, "Cache rebuilds, by outcome");
    describe_gauge!(
        STREAM_LENGTH,
        "Opt-outs in the write-behind stream, not yet committed"
    );
    describe_gauge!(
        PENDING,
        "Stream entries delivered to a worker, not yet acknowledged"
    );
    describe_gauge!(
        OLDEST_PENDING_AGE,
        Unit::Seconds,
        "Age of the oldest unacknowledged delivered entry"
    );
    describe_histogram!(
        BATCH_SIZE,
        Unit::Count,
        "Records per write-behind transaction"
    );
    describe_histogram!(
        COMMIT_DURATION,
        Unit::Seconds,
        "Store commit time of one batch"
    );
    describe_counter!(
        COMMITTED,
        "Records newly committed by the write-behind worker"
    );
    describe_counter!(DEAD_LETTERS, "Undecodable stream entries dead-lettered");
    describe_counter!(
        NEWER_ENTRIES,
        "Stream entries of a newer format left unacknowledged for a newer worker"
    );
    describe_counter!(
        UNREADABLE_VALUES,
        "Cached values this version cannot read; their checks were answered from the store"
    );
    describe_counter!(REDIS_ERRORS, "Failed Redis operations, by operation");
    describe_counter!(
        STORE_ERRORS,
        "Failed durable store operations, by operation"
    );
    describe_gauge!(
        CONTROLS_AGE,
        Unit::Seconds,
        "Time since this replica last confirmed its controls are current (store or Redis)"
    );
    describe_gauge!(
        CONTROLS_STALE,
        "1 while this replica's controls are stale: it answers no check with send"
    );
    describe_counter!(
        CHECKS_REFUSED_STALE,
        "Checks refused as UNAVAILABLE because this replica's controls were stale"
    );
    describe_counter!(
        CONTROL_ANSWERS,
        "Checks a control decided: halted, let through by a declaration, not now, or no consent"
    );
    describe_counter!(
        CONSENT_LOOKUPS,
        "Consent look-ups of checks under a consent requirement, by outcome"
    );
    describe_counter!(
        CONTROL_PROPAGATIONS,
        "Control changes by how far they had reached when the call returned"
    );
    describe_counter!(
        TRIGGER_FIRINGS,
        "Halts made by halt triggers, by outcome (halted, failed)"
    );
    describe_counter!(
        TRIGGER_COUNTS_LOST,
        "Checks and opt-outs counted for halt triggers but lost because Redis was unreachable"
    );
    describe_gauge!(
        NEAR_CACHE_SERVING,
        "1 while this replica answers checks from its near-cache"
    );
    describe_gauge!(
        NEAR_CACHE_ENTRIES,
        "Records copied by this replica's near-cache when it last loaded"
    );
    describe_counter!(
        UNCACHED_OPT_OUTS,
        "A person's opt-outs the store took directly while Redis could not, by reason"
    );
    describe_gauge!(
        CACHE_TRUSTED,
        "1 while this replica answers checks from the cache, 0 while from the store"
    );
    describe_counter!(
        INBOUND_EVENTS,
        "Provider webhooks on the HTTP front, by provider and outcome"
    );
}
