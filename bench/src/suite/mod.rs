//! `suppressd bench-suite`: SPEC §8 measured side by side with its baselines, in one run.
//!
//! It starts what it needs — a private `redis-server` on a free port, a fresh PostgreSQL database on
//! the shared server, `suppressd serve` and the empty-handler baseline as child processes of this
//! binary — loads the population, measures every row ([`measure`]), writes `report.json` and
//! `report.md` to `--out`, and with `--check` exits non-zero if any target of
//! `bench/thresholds.json` does not hold. `--smoke` runs the same steps with tiny sizes, in seconds,
//! so the suite is exercised by the test suite and cannot rot. `scripts/bench` builds in release mode
//! and runs it.

mod fixtures;
mod load;
mod measure;
pub(crate) mod otlp_sink;
mod procs;
mod raw;
mod table;

pub use table::{Row, SuiteReport, Threshold, Thresholds, read_thresholds};

use anyhow::Context;
use clap::Args;
use std::{path::PathBuf, time::Duration};

#[derive(Args, Clone, Debug)]
pub struct SuiteSettings {
    /// Tiny sizes and sub-second runs: checks that every step works, measures nothing worth keeping.
    #[arg(long)]
    pub smoke: bool,

    /// Compare with the thresholds file and exit non-zero on any shortfall.
    #[arg(long)]
    pub check: bool,

    /// The targets (SPEC §8).
    #[arg(long, default_value = "bench/thresholds.json")]
    pub thresholds: PathBuf,

    /// Where report.json, report.md and the processes' logs go.
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,

    /// Admin URL of the PostgreSQL server on which a fresh database is created and dropped.
    #[arg(
        long,
        env = "SUPPRESSD_BENCH_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub pg_admin_url: String,

    /// The redis-server program for the private Redis.
    #[arg(long, default_value = "redis-server")]
    pub redis_server: PathBuf,

    /// The suppressd binary to measure (default: `suppressd` beside this program, as
    /// `cargo build --release --workspace` leaves it).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,

    /// The suppressd-bench binary that serves the baselines (default: this program).
    #[arg(long)]
    pub bench_bin: Option<PathBuf>,

    /// Opt-outs loaded before measuring (default 1,000,000; 2,000 with --smoke).
    #[arg(long)]
    pub entries: Option<u64>,

    /// Length of each measured load run, e.g. `10s` (default 10s; 300ms with --smoke).
    #[arg(long, value_parser = crate::args::parse_go_duration)]
    pub duration: Option<Duration>,

    /// Measures one group of rows only (after the population, the rebuild and the warm-up), for a
    /// quicker loop while working on it. Hidden: its report is not a run of the suite.
    #[arg(long, hide = true, value_enum)]
    pub only: Option<Only>,

    /// The offered `OptOut` rate of the webhook delivery rows, per second (default 2,000; 1,000
    /// with --smoke).
    #[arg(long)]
    pub delivery_rate: Option<f64>,
}

/// The groups of rows `--only` can pick.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Only {
    /// `CheckSuppressed` against the empty handler (throughput, latency, CPU per call), by the
    /// suite's client and by h2load.
    Checks,
    /// The tracing cost rows.
    Tracing,
    /// The webhook delivery rows.
    Delivery,
    /// `OptOut` `DURABLE` and the audit log's cost.
    Writes,
    /// The near-cache's load time and memory.
    Near,
    /// `CheckSuppressed` with controls loaded against none.
    Controls,
}

impl SuiteSettings {
    /// The defaults, with `--smoke` as given: how tests build settings.
    pub fn defaults(smoke: bool) -> SuiteSettings {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            suite: SuiteSettings,
        }
        let mut s = <Only as clap::Parser>::parse_from(["bench-suite"]).suite;
        s.smoke = smoke;
        s
    }
}

/// The sizes of one run.
#[derive(Clone, Debug)]
pub struct Sizes {
    pub entries: u64,
    pub run: Duration,
    pub warmup: Duration,
    /// Workers of the throughput runs (ghz's default is 50).
    pub concurrency: u32,
    pub connections: u32,
    pub batch_concurrency: u32,
    pub batch_size: usize,
    /// Distinct requests cycled through (round-robin `--data` arrays).
    pub check_pool: usize,
    pub batch_pool: usize,
    /// Longest wait for the cache rebuild.
    pub rebuild_limit: Duration,
}

impl Sizes {
    fn of(s: &SuiteSettings) -> Sizes {
        let (entries, run, warmup, concurrency, connections, batch_concurrency, pools) = if s.smoke
        {
            (
                2_000,
                Duration::from_millis(300),
                Duration::ZERO,
                8,
                1,
                2,
                (50, 5),
            )
        } else {
            (
                1_000_000,
                Duration::from_secs(10),
                Duration::from_secs(2),
                50,
                2,
                8,
                (2_000, 100),
            )
        };
        let entries = s.entries.unwrap_or(entries);
        Sizes {
            entries,
            run: s.duration.unwrap_or(run),
            warmup,
            concurrency,
            connections,
            batch_concurrency,
            batch_size: 100,
            check_pool: pools.0,
            batch_pool: pools.1,
            // 60 µs per entry (ten minutes at 10 M): the suite rebuilds a cache more than once,
            // and a later rebuild shares the cores with servers still running.
            rebuild_limit: Duration::from_secs(300).max(Duration::from_micros(60 * entries)),
        }
    }
}

/// The programs the suite starts: the service it measures, and this crate's binary for the
/// baselines (the empty handlers, the service without its audit log).
pub struct Bins {
    pub server: PathBuf,
    pub bench: PathBuf,
}

impl Bins {
    fn of(s: &SuiteSettings) -> anyhow::Result<Bins> {
        let here = std::env::current_exe()?;
        let bench = s.bench_bin.clone().unwrap_or_else(|| here.clone());
        let server = match &s.server_bin {
            Some(bin) => bin.clone(),
            None => here.with_file_name("suppressd"),
        };
        for bin in [&server, &bench] {
            anyhow::ensure!(
                bin.exists(),
                "{} does not exist: build it (`cargo build --release --workspace`) or name it with \
                 --server-bin / --bench-bin",
                bin.display()
            );
        }
        Ok(Bins { server, bench })
    }
}

/// Runs the suite: sets up, measures, always tears down, writes the reports (on an error, with the
/// rows measured before it).
pub async fn run(s: &SuiteSettings) -> anyhow::Result<SuiteReport> {
    let sizes = Sizes::of(s);
    std::fs::create_dir_all(&s.out)?;
    let out = std::fs::canonicalize(&s.out)?;
    let redis = procs::PrivateRedis::start(&s.redis_server, &out).await?;
    let db = match procs::PgDatabase::create(&s.pg_admin_url).await {
        Ok(db) => db,
        Err(e) => {
            redis.stop().await;
            return Err(e);
        }
    };
    let bins = match Bins::of(s) {
        Ok(bins) => bins,
        Err(e) => {
            redis.stop().await;
            db.drop_now().await;
            return Err(e);
        }
    };
    let mut cx = load::Ctx {
        report: measure::heading(s, &sizes),
    };
    // SIGINT or SIGTERM ends the run as an error does: the processes it started are dropped (and
    // so killed), its Redis stopped, its database dropped, and the rows measured so far written.
    let measured = tokio::select! {
        measured = measure::measure(&mut cx, &bins, &out, &sizes, s, &redis, &db) => measured,
        () = suppressd::startup::shutdown_signal() => {
            Err(anyhow::anyhow!("stopped by a signal (SIGINT or SIGTERM)"))
        }
    };
    redis.stop().await;
    db.drop_now().await;
    let mut report = cx.report;
    if let Err(e) = &measured {
        // What was measured before the error is kept: a scale run may fail after many minutes.
        report.warnings.push(format!(
            "the run stopped early, so rows after the last one here were not measured: {e:#}"
        ));
    }
    if s.thresholds.exists() {
        report.judge(&read_thresholds(&s.thresholds)?);
    }
    report.write(&out)?;
    measured.with_context(|| {
        format!(
            "the rows measured before the error are in {}",
            out.join("report.md").display()
        )
    })?;
    Ok(report)
}

/// `suppressd-bench suite`: runs, prints the table, and with `--check` fails on any shortfall.
pub async fn main(s: SuiteSettings) -> anyhow::Result<()> {
    let report = run(&s).await?;
    println!("{}", report.markdown());
    println!(
        "reports written to {}/report.json and report.md",
        s.out.display()
    );
    if s.check {
        let shortfalls = report.shortfalls(&read_thresholds(&s.thresholds)?);
        if !shortfalls.is_empty() {
            for f in &shortfalls {
                eprintln!("shortfall: {f}");
            }
            anyhow::bail!("{} target(s) of SPEC §8 do not hold", shortfalls.len());
        }
        println!("every target of {} holds", s.thresholds.display());
    }
    Ok(())
}
