//! The near-cache rows: how long a replica that starts on a complete cache takes to copy it into
//! memory (from process start until its `suppressd_near_cache_serving` gauge says 1), and what the
//! copy weighs per suppression (the resident memory of that replica against one started with
//! `--no-near-cache` on the same Redis and store, divided by the entries). Both replicas run beside
//! the suite's server, which has loaded its own copy before the timed one starts.

use super::{ENV, Setup};
use crate::suite::{
    load::Ctx,
    procs::{Proc, free_port},
    table::Row,
};
use anyhow::{Context, bail};
use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The longest wait for a near-cache to load.
const LOAD_LIMIT: Duration = Duration::from_secs(600);

/// A `suppressd serve` with its admin endpoint, so that its gauges can be read.
pub(super) struct Watched {
    pub(super) proc: Proc,
    admin: SocketAddr,
}

impl Watched {
    /// Starts `suppressd serve` with `extra` arguments and an admin endpoint on a free port.
    pub(super) async fn start(
        setup: &Setup<'_>,
        name: &'static str,
        listen: SocketAddr,
        extra: &[&str],
        log: &str,
    ) -> anyhow::Result<Watched> {
        let mut args = setup.serve_args(listen);
        args.extend(extra.iter().map(|&a| a.to_owned()));
        let log = setup.out.join(log);
        Watched::spawn(name, &setup.bins.server, args, &ENV, &log, listen).await
    }

    /// Starts `program args…` (a `serve` of suppressd or of one of this crate's baselines) with
    /// an admin endpoint on a free port, once it listens on `listen`.
    pub(super) async fn spawn(
        name: &'static str,
        program: &Path,
        mut args: Vec<String>,
        env: &[(&str, &str)],
        log: &Path,
        listen: SocketAddr,
    ) -> anyhow::Result<Watched> {
        let admin: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        args.extend(["--admin-listen".to_owned(), admin.to_string()]);
        let mut proc = Proc::spawn(name, program, &args, env, log)?;
        proc.wait_listening(listen).await?;
        proc.wait_listening(admin).await?;
        Ok(Watched { proc, admin })
    }

    /// Waits until the replica answers checks from its near-cache.
    pub(super) async fn wait_near_serving(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + LOAD_LIMIT;
        while gauge(self.admin, "suppressd_near_cache_serving").await? != Some(1.0) {
            if Instant::now() > deadline {
                bail!("the near-cache did not load within {LOAD_LIMIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

/// Times a second replica's near-cache load and weighs its copy. `server` is the suite's server,
/// whose own copy is waited for first so that the two loads do not share the cores.
pub(super) async fn near_rows(
    cx: &mut Ctx,
    setup: &Setup<'_>,
    server: &Watched,
) -> anyhow::Result<()> {
    server.wait_near_serving().await?;
    eprintln!("timing a second replica's near-cache load…");
    let started = Instant::now();
    let near = Watched::start(
        setup,
        "suppressd serve (second replica)",
        ([127, 0, 0, 1], free_port()?).into(),
        &[],
        "server-near.log",
    )
    .await?;
    near.wait_near_serving().await?;
    let loaded = started.elapsed();
    let far = Watched::start(
        setup,
        "suppressd serve (no near-cache)",
        ([127, 0, 0, 1], free_port()?).into(),
        &["--no-near-cache"],
        "server-far.log",
    )
    .await?;
    // Both idle now: what differs between them is the copy.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let weighed = rss(near.proc.pid()).zip(rss(far.proc.pid()));
    near.proc.stop().await;
    far.proc.stop().await;
    let entries = setup.sizes.entries;
    cx.report.rows.push(Row::new(
        "near_cache_load_seconds",
        &format!("near-cache load at start, {entries} entries"),
        loaded.as_secs_f64(),
        format!("{:.1} s", loaded.as_secs_f64()),
        "from process start on a complete cache; checks go through Redis meanwhile".into(),
    ));
    let what = format!("near-cache memory per suppression, per replica ({entries} entries)");
    cx.report.rows.push(match weighed {
        Some((near, far)) => {
            let per_entry = near.saturating_sub(far) as f64 / entries as f64;
            Row::new(
                "near_cache_bytes_per_entry",
                &what,
                per_entry,
                format!("{per_entry:.1} B"),
                format!(
                    "resident memory {} MiB, against {} MiB with --no-near-cache",
                    near >> 20,
                    far >> 20
                ),
            )
        }
        None => Row::not_measured("near_cache_bytes_per_entry", &what, "no /proc/PID/status"),
    });
    Ok(())
}

/// A process's resident memory in bytes (`VmRSS` of `/proc/PID/status`).
fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: u64 = kib.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// One unlabelled gauge of a Prometheus `/metrics` page, or `None` when the page lacks it. A plain
/// HTTP/1.0 GET: the bench crate needs no HTTP client for one line of text.
async fn gauge(admin: SocketAddr, name: &str) -> anyhow::Result<Option<f64>> {
    let mut conn = tokio::net::TcpStream::connect(admin)
        .await
        .context("connecting to the admin endpoint")?;
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: suppressd\r\n\r\n")
        .await?;
    let mut page = String::new();
    conn.read_to_string(&mut page)
        .await
        .context("reading /metrics")?;
    Ok(page.lines().find_map(|l| {
        let value = l.strip_prefix(name)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    }))
}
