//! Redis Cluster drills: a master killed under load (its replica takes over), and a slot that
//! holds one of the deployment's slot groups migrated to another master under load (`redis-cli
//! --cluster reshard`, so callers meet `ASK` and `MOVED`). Each on a cluster of its own.

use super::{Drill, nodes::Cluster, under_load};
use std::{process::Command, time::Duration};
use suppressd::cache::{Topology, layout::Keys};

const CLUSTER: [(&str, &str); 1] = [("SUPPRESSD_REDIS_CLUSTER", "true")];

/// The hash tags of a deployment's slot groups (the default 16).
fn group_tags(prefix: &str) -> Vec<String> {
    let keys = Keys::for_topology(prefix, 16, 16, &Topology::Cluster(vec![String::new()]));
    keys.groups().iter().map(|g| g.complete()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_master_killed_under_load_loses_no_durable_opt_out_and_never_says_send() {
    let cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    let prefix = format!("k{}:", uuid::Uuid::new_v4().simple());
    let drill = Drill::start(&cluster.seeds(), &prefix, &CLUSTER).await;
    // The master of the first slot group's slot (it serves about a third of the groups).
    let slot = cluster.slot(&group_tags(&prefix)[0]);
    let (master, _) = cluster.master_of(slot);
    under_load(
        &drill,
        "cluster master killed",
        async {
            super::nodes::signal_node(master, "KILL");
            let cluster = &cluster;
            tokio::task::block_in_place(|| {
                cluster.wait_until("a replica took over the slot", || {
                    cluster
                        .try_master_of(slot)
                        .is_some_and(|(p, _)| p != master)
                });
                cluster.wait_ok();
            });
        },
        Duration::from_secs(3),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_resharded_under_load_lose_nothing_and_never_say_send() {
    let cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    // A prefix with a group whose slot is among the first a reshard of 200 slots takes from its
    // master.
    let (prefix, slot) = loop {
        let prefix = format!("r{}:", uuid::Uuid::new_v4().simple());
        let lowest = group_tags(&prefix)
            .iter()
            .map(|tag| cluster.slot(tag))
            .min()
            .unwrap();
        if lowest < 100 {
            break (prefix, lowest);
        }
    };
    let drill = Drill::start(&cluster.seeds(), &prefix, &CLUSTER).await;
    let (from_port, from) = cluster.master_of(slot);
    let (_, to) = cluster.other_master(from_port);
    under_load(
        &drill,
        "slots resharded",
        async {
            let out = tokio::task::spawn_blocking(move || {
                Command::new("redis-cli")
                    .args(["--cluster", "reshard", &format!("127.0.0.1:{from_port}")])
                    .args(["--cluster-from", &from, "--cluster-to", &to])
                    .args(["--cluster-slots", "200", "--cluster-yes"])
                    .output()
                    .expect("redis-cli is installed")
            })
            .await
            .unwrap();
            assert!(
                out.status.success(),
                "reshard: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        },
        Duration::from_secs(2),
    )
    .await;
    assert_ne!(
        cluster.master_of(slot).0,
        from_port,
        "the group's slot moved during the load"
    );
}
