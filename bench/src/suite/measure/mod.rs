//! The measurements, in the order they run: load the population into PostgreSQL, time the cache
//! rebuild and weigh it in Redis, then the load runs, each against the real server and its baseline
//! with the same client settings, one after the other (never at once: they would share 2 cores).
//!
//! Each group of rows is a function of its own, run in that order over a [`Rig`] (the server and the
//! baseline, started once): the rebuild and Redis memory (`rebuild`), a second replica's near-cache
//! load and memory (`near`), checks and batches (`checks`),
//! checks with controls loaded against none (`controls`), the same loads on a Redis Cluster and on
//! the previous connection layer (`topology`), opt-outs
//! and what the audit log costs them (`writes`), their webhook delivery to one destination
//! (`delivery`), tracing (`traced`), and last the CPU per call the earlier groups measured.

mod checks;
mod controls;
mod delivery;
mod near;
mod outside;
mod rebuild;
mod topology;
mod traced;
mod writes;

use super::{
    Bins, Only, Sizes, SuiteSettings, fixtures, load,
    load::{Ctx, Load},
    procs::{PgDatabase, Pinned, PrivateRedis, Proc, free_port},
    table::{Row, SuiteReport},
};
use std::{collections::BTreeMap, net::SocketAddr, path::Path};
use suppressd::{cache::layout::Keys, domain::Pepper};

const PEPPER: &str = "suppressd-benchmark-pepper-0123456789";
const PREFIX: &str = "bench:";
/// The variables every `suppressd serve` of the suite starts with.
/// Every server logs at the default level, `info`, as it ships (set, so that a developer's own
/// `RUST_LOG` does not change what is measured).
/// Every server runs as a deployment whose replicas all read audit blocks would: the worker's batches
/// stored as one block each (`--audit-blocks`). Through the environment, which a release without
/// the flag ignores, so that `--server-bin` can still run one.
const ENV: [(&str, &str); 3] = [
    ("RUST_LOG", "info"),
    ("SUPPRESSD_PEPPER", PEPPER),
    ("SUPPRESSD_AUDIT_BLOCKS", "true"),
];
/// Buckets of 40 to 80 entries, as the README advises (2^bits buckets): a check's `HMGET` scans its
/// bucket's listpack once per field, so Redis CPU per check grows with the bucket, while below ~30
/// entries the per-key overhead pushes memory per entry up.
fn bucket_bits(entries: u64) -> u8 {
    let buckets = (entries / 40).max(2);
    (63 - buckets.leading_zeros()).clamp(1, 24) as u8
}

/// Where the suite runs and what it loads: what every group of rows starts its processes with.
struct Setup<'a> {
    bins: &'a Bins,
    out: &'a Path,
    sizes: &'a Sizes,
    redis: &'a PrivateRedis,
    db: &'a PgDatabase,
    pepper: Pepper,
    keys: Keys,
    bits: u8,
}

impl<'a> Setup<'a> {
    fn new(
        bins: &'a Bins,
        out: &'a Path,
        sizes: &'a Sizes,
        redis: &'a PrivateRedis,
        db: &'a PgDatabase,
    ) -> anyhow::Result<Setup<'a>> {
        let pepper = Pepper::new(PEPPER)?;
        let bits = bucket_bits(sizes.entries);
        let keys = Keys::new(PREFIX, bits);
        Ok(Setup {
            bins,
            out,
            sizes,
            redis,
            db,
            pepper,
            keys,
            bits,
        })
    }

    /// The arguments of a `suppressd serve` on this Redis and database, listening on `listen`.
    fn serve_args(&self, listen: SocketAddr) -> Vec<String> {
        [
            "serve",
            "--listen",
            &listen.to_string(),
            "--redis-url",
            &self.redis.url,
            "--redis-prefix",
            PREFIX,
            "--store-url",
            &self.db.url,
            "--cache-bucket-bits",
            &self.bits.to_string(),
            // A private server on loopback: measured without authentication (its cost is a SHA-256
            // and a table look-up per call), which is what `--dev-no-auth` allows there.
            "--dev-no-auth",
        ]
        .map(str::to_owned)
        .to_vec()
    }
}

/// The processes every load runs against, started once: the server under test (its cache rebuilt)
/// and the empty-handler baseline; and the check workload the other loads are variations of.
struct Rig<'a> {
    setup: &'a Setup<'a>,
    server_addr: SocketAddr,
    server: Proc,
    baseline_addr: SocketAddr,
    baseline: Proc,
    checking: Load<'a>,
}

impl Rig<'_> {
    /// The check workload against both processes for `--warmup`, which no row reads.
    async fn warm_up(&self, cx: &mut Ctx) -> anyhow::Result<()> {
        let (sizes, checking) = (self.setup.sizes, self.checking);
        let (baseline_addr, server_addr) = (self.baseline_addr, self.server_addr);
        if !sizes.warmup.is_zero() {
            let warmup = Load {
                duration: sizes.warmup,
                ..checking
            };
            cx.load("warmup-baseline", baseline_addr, warmup).await?;
            cx.load("warmup-server", server_addr, warmup).await?;
        }
        Ok(())
    }

    /// Holds both servers to the second CPU and the client (this process, with the `h2load` it
    /// starts) to the first or to the same one, until the guard drops. A call at concurrency 1
    /// wakes the server, then the client: on this kind of VM a wake-up across cores costs several
    /// times a whole call on one core, so an unpinned run measures where the scheduler put the
    /// two (bench/README, "Concurrency 1").
    fn place(&self, placement: Placement) -> anyhow::Result<Pinned> {
        let client = match placement {
            Placement::Apart => 0,
            Placement::Together => 1,
        };
        Pinned::new(&[
            (self.server.pid(), 1),
            (self.baseline.pid(), 1),
            (std::process::id(), client),
        ])
    }

    async fn stop(self) {
        self.baseline.stop().await;
        self.server.stop().await;
    }
}

/// Where a run at concurrency 1 puts its client: on another CPU than the servers, as a client on
/// another machine is, or on theirs, where a call costs its CPU and no wake-up across cores.
#[derive(Clone, Copy, Debug)]
enum Placement {
    Apart,
    Together,
}

impl Placement {
    /// How run names and rows tell them apart.
    fn name(self) -> &'static str {
        match self {
            Placement::Apart => "apart",
            Placement::Together => "together",
        }
    }
}

/// The p50s of four runs at concurrency 1 with one placement, in the order they ran: empty
/// handler, suppressd, suppressd, empty handler, so that a machine that speeds up or slows down
/// over the four moves both sides alike (single pairs spread 1.01–1.18× on the same code).
struct Alternated {
    placement: Placement,
    base: [u64; 2],
    check: [u64; 2],
}

impl Alternated {
    fn base(&self) -> u64 {
        (self.base[0] + self.base[1]) / 2
    }

    fn check(&self) -> u64 {
        (self.check[0] + self.check[1]) / 2
    }

    fn ratio(&self) -> f64 {
        self.check() as f64 / self.base().max(1) as f64
    }

    /// The runs behind [`Self::ratio`], for a row's detail.
    fn detail(&self) -> String {
        format!(
            "client {}: {:.2}×, empty handler {} ({}, {}), suppressd {}, {}",
            match self.placement {
                Placement::Apart => "on the other CPU",
                Placement::Together => "on the servers' CPU",
            },
            self.ratio(),
            load::us(self.base()),
            load::us(self.base[0]),
            load::us(self.base[1]),
            load::us(self.check[0]),
            load::us(self.check[1]),
        )
    }
}

/// Runs every group of rows, in order, into `cx`'s report; with `--only`, one group alone. On an
/// error the rows measured before it stay in the report.
pub async fn measure(
    cx: &mut Ctx,
    bins: &Bins,
    out: &Path,
    sizes: &Sizes,
    settings: &SuiteSettings,
    redis: &PrivateRedis,
    db: &PgDatabase,
) -> anyhow::Result<()> {
    let setup = Setup::new(bins, out, sizes, redis, db)?;
    let (server_addr, server) = rebuild::rebuild_rows(cx, &setup).await?;
    if matches!(settings.only, None | Some(Only::Near)) {
        let near = near::near_rows(cx, &setup, &server).await;
        if settings.only.is_some() {
            server.proc.stop().await;
            return near;
        }
        near?;
    }
    let server = server.proc;
    let (baseline_addr, baseline) = start_baseline(&setup).await?;

    let checks = fixtures::draw(sizes.check_pool, 1, sizes.entries);
    let check_data = fixtures::check_data(&checks);
    let check_probes: Vec<_> = checks
        .iter()
        .map(|d| fixtures::probe(&setup.pepper, &setup.keys, d[0]))
        .collect();
    let (c, d) = (sizes.concurrency, sizes.run);
    let checking = Load {
        call: "CheckSuppressed",
        data: &check_data,
        concurrency: c,
        connections: sizes.connections,
        duration: d,
        rps: None,
    };
    let rig = Rig {
        setup: &setup,
        server_addr,
        server,
        baseline_addr,
        baseline,
        checking,
    };
    rig.warm_up(cx).await?;
    let serve_args = |listen: SocketAddr| setup.serve_args(listen);
    let traced = traced::Traced {
        bin: &bins.server,
        out,
        args: &serve_args,
        env: &ENV,
    };
    // Against the untraced server started above; last in a full run, alone with --only tracing.
    let measure_tracing = async |cx: &mut Ctx| {
        traced::tracing_rows(
            cx,
            &traced,
            (rig.server_addr, &rig.server),
            checking,
            sizes.warmup,
        )
        .await
    };
    if settings.only == Some(Only::Tracing) {
        let tracing = measure_tracing(cx).await;
        rig.stop().await;
        cx.report.rows.extend(tracing?);
        return Ok(());
    }

    let opt_out_data = fixtures::opt_out_data();
    let opting_out = Load {
        call: "OptOut",
        data: &opt_out_data,
        ..checking
    };
    if settings.only == Some(Only::Delivery) {
        let delivery =
            delivery::delivery_rows(cx, &rig, opting_out, settings.smoke, settings.delivery_rate)
                .await;
        rig.stop().await;
        return delivery;
    }

    if settings.only == Some(Only::Controls) {
        let controls = controls::controls_rows(cx, &rig, settings.smoke).await;
        rig.stop().await;
        return controls;
    }

    if settings.only == Some(Only::Writes) {
        let writes = async {
            let base = cx.load("baseline", rig.baseline_addr, checking).await?;
            let opted = writes::opt_out_rows(cx, &rig, opting_out, load::ok_rps(&base)).await?;
            writes::audit_rows(cx, &rig, opting_out, opted.rps).await
        }
        .await;
        rig.stop().await;
        return writes;
    }

    let outside_requests = if settings.smoke { 200 } else { 20_000 };
    let checked = async {
        let checked = checks::check_rows(cx, &rig, &check_probes).await?;
        outside::outside_rows(cx, &rig, out, outside_requests).await?;
        anyhow::Ok(checked)
    }
    .await;
    if settings.only == Some(Only::Checks) {
        rig.stop().await;
        cx.report.rows.push(check_cpu_row(&checked?));
        return Ok(());
    }
    let checked = checked?;
    let batched = checks::batch_rows(cx, &rig).await?;
    controls::controls_rows(cx, &rig, settings.smoke).await?;
    topology::topology_rows(cx, &rig, &settings.redis_server).await?;
    // OptOut, DURABLE, on PostgreSQL; then the same load without the audit log.
    let opted = writes::opt_out_rows(cx, &rig, opting_out, checked.base_rps).await?;
    writes::audit_rows(cx, &rig, opting_out, opted.rps).await?;
    // Webhook delivery of the same opt-outs, open loop; its destination is removed afterwards.
    delivery::delivery_rows(cx, &rig, opting_out, settings.smoke, settings.delivery_rate).await?;

    let tracing = measure_tracing(cx).await?;
    cx.report.rows.extend(tracing);
    cx.report
        .rows
        .extend(cpu_rows(&checked, batched, opted.cpu));
    rig.stop().await;
    Ok(())
}

/// The report before any row: when, how, on what machine.
pub(super) fn heading(settings: &SuiteSettings, sizes: &Sizes) -> SuiteReport {
    SuiteReport {
        date: crate::report::now_rfc3339(),
        mode: match (settings.smoke, settings.only) {
            (_, Some(Only::Checks)) => "check rows only",
            (_, Some(Only::Tracing)) => "tracing rows only",
            (_, Some(Only::Delivery)) => "delivery rows only",
            (_, Some(Only::Writes)) => "write rows only",
            (_, Some(Only::Near)) => "near-cache rows only",
            (_, Some(Only::Controls)) => "controls rows only",
            (true, None) => "smoke",
            (false, None) => "full",
        }
        .into(),
        machine: machine(),
        layout: "server, baseline, Redis and the load client share the machine's cores, \
                 unpinned, except the runs of CPU per check and at concurrency 1 (their rows say)"
            .into(),
        entries: sizes.entries,
        rows: Vec::new(),
        warnings: Vec::new(),
        runs: BTreeMap::new(),
    }
}

/// The empty handler: what suppressd's check rows are compared with.
async fn start_baseline(setup: &Setup<'_>) -> anyhow::Result<(SocketAddr, Proc)> {
    let (bins, out) = (setup.bins, setup.out);
    let baseline_addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let baseline_args = [
        "baseline".to_owned(),
        "--listen".into(),
        baseline_addr.to_string(),
    ];
    let mut baseline = Proc::spawn(
        "suppressd-bench baseline",
        &bins.bench,
        &baseline_args,
        &ENV,
        &out.join("baseline.log"),
    )?;
    baseline.wait_listening(baseline_addr).await?;
    Ok((baseline_addr, baseline))
}

/// What the check rows measured that later rows compare with.
struct Checked {
    /// The empty handler's closed-loop throughput (calls/s).
    base_rps: f64,
    /// The empty handler's CPU per call (µs).
    base_cpu: f64,
    cpu: Cpu,
}

/// CPU per call (µs) of the server and of Redis over one group's runs.
#[derive(Clone, Copy)]
struct Cpu {
    server: f64,
    redis: f64,
}

/// CPU per call of each kind, last in the table: what the runs of the groups above cost.
fn cpu_rows(checked: &Checked, batch: Cpu, opt: Cpu) -> [Row; 3] {
    let (batch_cpu, batch_redis_cpu) = (batch.server, batch.redis);
    let (opt_cpu, opt_redis_cpu) = (opt.server, opt.redis);
    [
        check_cpu_row(checked),
        Row::new(
            "server_cpu_us_per_batch_check",
            "server CPU per check in a batch",
            batch_cpu,
            format!("{batch_cpu:.1} µs"),
            format!("Redis {batch_redis_cpu:.1} µs"),
        ),
        Row::new(
            "server_cpu_us_per_opt_out",
            "server CPU per OptOut call (worker included)",
            opt_cpu,
            format!("{opt_cpu:.1} µs"),
            format!("Redis {opt_redis_cpu:.1} µs"),
        ),
    ]
}

/// Server CPU per `CheckSuppressed` call, beside the empty handler's.
fn check_cpu_row(checked: &Checked) -> Row {
    let (server_cpu, base_cpu, check_redis_cpu) =
        (checked.cpu.server, checked.base_cpu, checked.cpu.redis);
    Row::new(
        "server_cpu_us_per_check",
        "server CPU per CheckSuppressed call",
        server_cpu,
        format!("{server_cpu:.1} µs"),
        format!("empty handler {base_cpu:.1} µs; Redis {check_redis_cpu:.1} µs"),
    )
}

/// CPU count and model, for the table's heading.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    // Other work on the machine skews every figure; the load average says how much there was.
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    format!("{cpus} cores ({model}), load average {load} at start")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_forty_to_eighty() {
        assert_eq!(bucket_bits(1_000_000), 14);
        assert_eq!(bucket_bits(100_000), 11);
        assert_eq!(bucket_bits(2_000), 5);
        assert_eq!(bucket_bits(10), 1);
    }
}
