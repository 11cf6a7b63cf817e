//! The topology rows (issue 20), all in the same run as the others: the check and batch loads
//! against suppressd on a private 3-master Redis Cluster next to suppressd on the standalone Redis
//! (target ≥ 0.9×); and, with the near-cache off so that every check reaches Redis, suppressd on
//! deadpool (the service's connection layer) next to `suppressd-bench serve-connection-manager`
//! (the same server on redis-rs's `ConnectionManager`, the layer before), so that what the change
//! costs shows. Pairs run one after the other, alternating, never at once.

use super::{ENV, PREFIX, Rig, Setup};
use crate::suite::{
    fixtures,
    load::{Ctx, Load, cpu_per_call, ok_count, ok_rps},
    procs::{Proc, free_port},
    table::Row,
};
use anyhow::{Context, bail};
use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};
use suppressd::cache::{Cache, Topology, layout::Keys};

/// Three cluster masters (no replicas: the rows measure serving, and replicas would take CPU from
/// the two cores the rest shares).
const MASTERS: usize = 3;

pub(super) async fn topology_rows(
    cx: &mut Ctx,
    rig: &Rig<'_>,
    redis_server: &Path,
) -> anyhow::Result<()> {
    let setup = rig.setup;
    let sizes = setup.sizes;
    let draws = fixtures::draw(sizes.batch_pool, sizes.batch_size, sizes.entries);
    let batch_data = fixtures::batch_data(&draws);
    let checking = rig.checking;
    let batching = Load {
        call: "CheckSuppressedBatch",
        data: &batch_data,
        concurrency: sizes.batch_concurrency,
        ..checking
    };

    // Cluster vs standalone: the product as shipped (near-cache on) on both.
    eprintln!("starting a {MASTERS}-master Redis Cluster…");
    let cluster = PrivateCluster::start(redis_server, setup.out).await?;
    let cluster_args = |listen: SocketAddr, near_cache: bool| {
        let mut args = setup.serve_args(listen);
        let at = args.iter().position(|a| a == "--redis-url").expect("url") + 1;
        args[at] = cluster.seeds();
        args.push("--redis-cluster".into());
        if !near_cache {
            args.push("--no-near-cache".into());
        }
        args
    };
    let on_cluster_addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let mut on_cluster = Proc::spawn(
        "suppressd serve (cluster)",
        &setup.bins.server,
        &cluster_args(on_cluster_addr, true),
        &ENV,
        &setup.out.join("server-cluster.log"),
    )?;
    on_cluster.wait_listening(on_cluster_addr).await?;
    let topology = Topology::Cluster(cluster.seed_list());
    // The server's default number of slot groups (`--redis-slot-groups`).
    let groups = suppressd::config::ServeSettings::defaults()
        .redis
        .redis_slot_groups;
    let keys = Keys::for_topology(PREFIX, setup.bits, groups, &topology);
    wait_complete(&topology, &keys, sizes.rebuild_limit).await?;
    warm_up(cx, on_cluster_addr, checking, sizes.warmup).await?;
    let pairs = [("check", checking), ("batch", batching)];
    for (what, load) in pairs {
        let [alone, clustered] = side_by_side(
            cx,
            what,
            load,
            sizes.batch_size,
            [
                ("standalone", rig.server_addr, &rig.server),
                ("cluster", on_cluster_addr, &on_cluster),
            ],
        )
        .await?;
        let (a, c) = (alone.rate, clustered.rate);
        cx.report.rows.push(Row::new(
            &format!("cluster_{what}_throughput_ratio"),
            &format!(
                "{} on a {MASTERS}-master Redis Cluster vs standalone",
                title(what)
            ),
            c / a,
            format!("{:.2} ({c:.0}/s)", c / a),
            format!(
                "standalone {a:.0}/s; near-cache on (the default); server CPU {:.1} vs {:.1} µs \
                 per {}; means of two runs each, alternating",
                clustered.cpu,
                alone.cpu,
                unit(what)
            ),
        ));
    }
    on_cluster.stop().await;

    // Every check through Redis: deadpool vs ConnectionManager on the standalone Redis, and the
    // cluster on the same terms.
    let near_off = |listen: SocketAddr| {
        let mut args = setup.serve_args(listen);
        args.push("--no-near-cache".into());
        args
    };
    let deadpool_addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let deadpool = start(
        setup,
        "suppressd serve (no near-cache)",
        &near_off(deadpool_addr),
        deadpool_addr,
        "server-no-near-cache.log",
    )
    .await?;
    let manager_addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let mut manager_args = near_off(manager_addr);
    manager_args[0] = "serve-connection-manager".into();
    let mut manager = Proc::spawn(
        "suppressd-bench serve-connection-manager",
        &setup.bins.bench,
        &manager_args,
        &ENV,
        &setup.out.join("server-connection-manager.log"),
    )?;
    manager.wait_listening(manager_addr).await?;
    let cluster_near_off_addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let cluster_near_off = start(
        setup,
        "suppressd serve (cluster, no near-cache)",
        &cluster_args(cluster_near_off_addr, false),
        cluster_near_off_addr,
        "server-cluster-no-near-cache.log",
    )
    .await?;
    warm_up(cx, deadpool_addr, checking, sizes.warmup).await?;
    warm_up(cx, manager_addr, checking, sizes.warmup).await?;
    warm_up(cx, cluster_near_off_addr, checking, sizes.warmup).await?;
    for (what, load) in pairs {
        let [old, new, clustered] = side_by_side(
            cx,
            what,
            load,
            sizes.batch_size,
            [
                ("connection-manager", manager_addr, &manager),
                ("deadpool", deadpool_addr, &deadpool),
                (
                    "cluster-no-near-cache",
                    cluster_near_off_addr,
                    &cluster_near_off,
                ),
            ],
        )
        .await?;
        let (o, n, c) = (old.rate, new.rate, clustered.rate);
        cx.report.rows.push(Row::new(
            &format!("deadpool_{what}_throughput_ratio"),
            &format!(
                "{} through Redis (no near-cache): deadpool vs ConnectionManager",
                title(what)
            ),
            n / o,
            format!("{:.2} ({n:.0}/s)", n / o),
            format!(
                "ConnectionManager (`serve-connection-manager`) {o:.0}/s; server CPU {:.1} vs \
                 {:.1} µs per {}; means of two runs each, alternating",
                new.cpu,
                old.cpu,
                unit(what)
            ),
        ));
        cx.report.rows.push(Row::new(
            &format!("cluster_{what}_redis_path_ratio"),
            &format!(
                "{} through Redis (no near-cache): {MASTERS}-master Cluster vs standalone",
                title(what)
            ),
            c / n,
            format!("{:.2} ({c:.0}/s)", c / n),
            format!(
                "standalone, deadpool {n:.0}/s; server CPU {:.1} vs {:.1} µs per {}",
                clustered.cpu,
                new.cpu,
                unit(what)
            ),
        ));
    }
    cluster_near_off.stop().await;
    manager.stop().await;
    deadpool.stop().await;
    cluster.stop().await;
    Ok(())
}

/// One side of a comparison: its rate (calls/s, or recipients/s for batches) and the server's CPU
/// per call (or per recipient), in µs.
struct Side {
    rate: f64,
    cpu: f64,
}

/// Runs `load` against each side forward, then backward (A, B, B, A): a machine that speeds up or
/// slows down over the runs moves every side alike. Each side's figures are over its two runs.
async fn side_by_side<const N: usize>(
    cx: &mut Ctx,
    what: &str,
    load: Load<'_>,
    batch: usize,
    sides: [(&str, SocketAddr, &Proc); N],
) -> anyhow::Result<[Side; N]> {
    let mut totals = [(0.0, 0u64, Duration::ZERO); N];
    let order = (0..N).chain((0..N).rev());
    for (round, i) in order.enumerate() {
        let (name, addr, proc) = sides[i];
        let cpu = proc.cpu();
        let report = cx
            .load(&format!("{what}-{name}-{}", round / N + 1), addr, load)
            .await?;
        let units = if what == "check" { 1 } else { batch as u64 };
        totals[i].0 += rate(&report, what, batch) / 2.0;
        totals[i].1 += ok_count(&report) * units;
        totals[i].2 += proc.cpu() - cpu;
    }
    Ok(totals.map(|(rate, units, cpu)| Side {
        rate,
        cpu: cpu_per_call(cpu, units),
    }))
}

fn unit(what: &str) -> &'static str {
    if what == "check" { "call" } else { "recipient" }
}

fn title(what: &str) -> &'static str {
    if what == "check" {
        "CheckSuppressed/s"
    } else {
        "CheckSuppressedBatch recipients/s"
    }
}

/// Calls per second, or recipients per second for batches.
fn rate(r: &crate::Report, what: &str, batch: usize) -> f64 {
    if what == "check" {
        ok_rps(r)
    } else {
        ok_rps(r) * batch as f64
    }
}

async fn warm_up(
    cx: &mut Ctx,
    addr: SocketAddr,
    load: Load<'_>,
    warmup: Duration,
) -> anyhow::Result<()> {
    if !warmup.is_zero() {
        cx.load(
            &format!("warmup-{addr}"),
            addr,
            Load {
                duration: warmup,
                ..load
            },
        )
        .await?;
    }
    Ok(())
}

async fn start(
    setup: &Setup<'_>,
    name: &'static str,
    args: &[String],
    addr: SocketAddr,
    log: &str,
) -> anyhow::Result<Proc> {
    let mut proc = Proc::spawn(name, &setup.bins.server, args, &ENV, &setup.out.join(log))?;
    proc.wait_listening(addr).await?;
    Ok(proc)
}

/// Waits until the cache on `topology` is complete (the rebuild marked it).
async fn wait_complete(topology: &Topology, keys: &Keys, limit: Duration) -> anyhow::Result<()> {
    let cache = Cache::connect(topology, keys.clone())
        .await
        .context("connecting to the cluster")?;
    let deadline = Instant::now() + limit;
    while !cache.is_complete().await? {
        if Instant::now() > deadline {
            bail!("the cache rebuild on the cluster did not complete within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// A private Redis Cluster: `MASTERS` `redis-server --cluster-enabled yes` joined by
/// `redis-cli --cluster create`.
struct PrivateCluster {
    ports: Vec<u16>,
    nodes: Vec<Proc>,
}

impl PrivateCluster {
    async fn start(program: &Path, out: &Path) -> anyhow::Result<PrivateCluster> {
        let dir = out.join("cluster");
        std::fs::create_dir_all(&dir)?;
        let mut ports = Vec::new();
        let mut nodes = Vec::new();
        for _ in 0..MASTERS {
            let port = free_port()?;
            let args: Vec<String> = [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &format!("nodes-{port}.conf"),
                "--save",
                "",
                "--appendonly",
                "no",
                "--maxmemory-policy",
                "noeviction",
                "--dir",
                &dir.display().to_string(),
            ]
            .map(str::to_owned)
            .to_vec();
            let mut node = Proc::spawn(
                "redis-server (cluster)",
                program,
                &args,
                &[],
                &dir.join(format!("redis-{port}.log")),
            )?;
            node.wait_listening(([127, 0, 0, 1], port).into()).await?;
            ports.push(port);
            nodes.push(node);
        }
        let cli = program.with_file_name("redis-cli");
        let cli = if cli.exists() {
            cli
        } else {
            "redis-cli".into()
        };
        let created = tokio::process::Command::new(cli)
            .arg("--cluster")
            .arg("create")
            .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .await
            .context("running redis-cli --cluster create")?;
        if !created.status.success() {
            bail!(
                "redis-cli --cluster create: {}",
                String::from_utf8_lossy(&created.stdout)
            );
        }
        let cluster = PrivateCluster { ports, nodes };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cluster.ok().await {
            if Instant::now() > deadline {
                bail!("the benchmark's Redis Cluster did not become ok");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(cluster)
    }

    async fn ok(&self) -> bool {
        for port in &self.ports {
            let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}")) else {
                return false;
            };
            let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                return false;
            };
            let info: Result<String, _> = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut conn)
                .await;
            if !info.is_ok_and(|i| i.contains("cluster_state:ok")) {
                return false;
            }
        }
        true
    }

    fn seed_list(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    fn seeds(&self) -> String {
        self.seed_list().join(",")
    }

    async fn stop(self) {
        for node in self.nodes {
            node.stop().await;
        }
    }
}
