//! Redis Sentinel drills: the master killed under load (the Sentinels promote its replica and the
//! replicas follow without a restart), and a promoted replica that missed acknowledged writes,
//! which the write counter must catch (docs/architecture.md, "Redis that went back in time").

use super::{
    Drill, everywhere,
    nodes::{MASTER_NAME, Sentinels, node_cmd, signal_node, signal_pid},
    notice, under_load,
};
use crate::helpers::*;
use std::time::{Duration, Instant};
use suppressd::proto::{self, ReceiptState};

fn sentinel_env() -> [(&'static str, &'static str); 1] {
    [("SUPPRESSD_REDIS_SENTINEL_MASTER", MASTER_NAME)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_under_load_loses_no_durable_opt_out_and_never_says_send() {
    let nodes = tokio::task::spawn_blocking(Sentinels::start).await.unwrap();
    let prefix = format!("s{}:", uuid::Uuid::new_v4().simple());
    let drill = Drill::start(&nodes.urls(), &prefix, &sentinel_env()).await;
    under_load(
        &drill,
        "sentinel failover",
        async {
            signal_node(nodes.master, "KILL");
            let nodes = &nodes;
            tokio::task::block_in_place(|| nodes.wait_promoted(nodes.replica));
        },
        Duration::from_secs(3),
    )
    .await;
}

/// The replica is frozen while opt-outs are acknowledged, so it never receives them; then the
/// master dies and the Sentinels promote the replica. The promoted Redis still carries the
/// completeness markers but lacks those records and has a smaller write counter than the
/// service saw: the service must answer from the store meanwhile, remove the markers, rebuild,
/// and raise the counter back (which the test reads as the proof that the check fired).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_replica_that_lost_writes_is_caught_by_the_write_counter() {
    let nodes = tokio::task::spawn_blocking(Sentinels::start).await.unwrap();
    let prefix = format!("s{}:", uuid::Uuid::new_v4().simple());
    let drill = Drill::start(&nodes.urls(), &prefix, &sentinel_env()).await;
    let mut client = drill.a.client().await;
    let mut checker = drill.b.client().await;
    let writes_key = format!("{prefix}writes");
    let complete_key = format!("{prefix}complete");
    let complete =
        || node_cmd::<Option<String>>(nodes.master, redis::cmd("GET").arg(&complete_key));
    let deadline = Instant::now() + Duration::from_secs(20);
    let generation = loop {
        if let Ok(Some(generation)) = complete() {
            break generation;
        }
        assert!(Instant::now() < deadline, "the cache became complete");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let opt_out = |who: String| opt_out_request(email(&who), everywhere());
    for i in 0..5 {
        client
            .opt_out(opt_out(format!("kept{i}@example.com")))
            .await
            .unwrap();
    }
    // Let the replica catch up, then freeze it and cut its link (the master drops it; what was
    // already in the replica's socket buffer stays there): what follows never reaches it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let frozen = signal_node(nodes.replica, "STOP");
    let _: redis::Value = node_cmd(
        nodes.master,
        redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("replica"),
    )
    .unwrap();
    let mut missed = Vec::new();
    for i in 0..10 {
        let who = format!("missed{i}@example.com");
        let receipt = client
            .opt_out(opt_out(who.clone()))
            .await
            .unwrap()
            .into_inner()
            .receipt
            .unwrap();
        assert_eq!(receipt.state, ReceiptState::Durable as i32);
        missed.push(who);
    }
    let seen: u64 = node_cmd::<Option<u64>>(nodes.master, redis::cmd("GET").arg(&writes_key))
        .unwrap()
        .unwrap();
    signal_node(nodes.master, "KILL");
    signal_pid(frozen, "CONT");
    let check = |who: &str| proto::CheckSuppressedRequest {
        time_zone: String::new(),
        recipient: Some(email(who)),
        scope: Some(notice()),
        purpose: 0,
    };
    // While the Sentinels fail over and the service notices: never "send" for anyone acknowledged.
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut false_sends = 0;
    loop {
        for who in &missed {
            for c in [&mut client, &mut checker] {
                if let Ok(r) = c.check_suppressed(check(who)).await {
                    false_sends += u32::from(!r.get_ref().suppressed);
                }
            }
        }
        let raised = nodes.current_master() == Some(nodes.replica)
            && node_cmd::<Option<u64>>(nodes.replica, redis::cmd("GET").arg(&writes_key))
                .ok()
                .flatten()
                .is_some_and(|w| w >= seen);
        if raised {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the write counter was raised back to {seen}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(false_sends, 0, "no acknowledged opt-out answered as send");
    // The cache is rebuilt from the store (a new generation: nothing else removes the markers of
    // a Redis that kept them), and everyone is suppressed, from memory too.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(
        node_cmd::<Option<String>>(nodes.replica, redis::cmd("GET").arg(&complete_key)),
        Ok(Some(g)) if g != generation
    ) {
        assert!(Instant::now() < deadline, "the cache was rebuilt");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let everyone: Vec<String> = (0..5)
        .map(|i| format!("kept{i}@example.com"))
        .chain(missed.iter().cloned())
        .collect();
    for who in &everyone {
        for c in [&mut client, &mut checker] {
            let r = c.check_suppressed(check(who)).await.expect("check");
            assert!(
                r.get_ref().suppressed,
                "{who} is suppressed after the failover"
            );
        }
    }
}
