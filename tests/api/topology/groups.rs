//! Slot groups on Redis Cluster (issue 20 item 1): a deployment's keys spread over the masters, a
//! batch whose subjects span groups is answered in order through Redis, and a group whose master
//! lost its keys is rebuilt alone, failing closed meanwhile while the other groups keep their
//! markers.

use super::nodes::{Cluster, node_cmd};
use crate::{failures::wait_until, helpers::*};
use std::{collections::BTreeSet, time::Duration};
use suppressd::{
    cache::layout::{Group, Keys},
    domain::{Pepper, Recipient, RecipientKind},
    proto::{self, Channel},
};

/// The app on a Cluster, every check through Redis (the near-cache off), so the per-group reads
/// are what answers.
async fn app_on(seeds: &str) -> TestApp {
    let seeds = seeds.to_owned();
    spawn_app_with(
        Backend::Sqlite,
        suppressd::domain::Clock::System,
        move |s| {
            s.redis.redis_url = seeds;
            s.redis.redis_cluster = true;
            s.no_near_cache = true;
        },
    )
    .await
}

fn group_of(keys: &Keys, address: &str) -> Group {
    let pepper = Pepper::new(PEPPER.as_bytes()).unwrap();
    keys.group_of(&pepper.subject(&Recipient::parse(RecipientKind::Email, address).unwrap()))
}

fn everywhere() -> proto::Scope {
    scope("acme", Channel::Unspecified, "", "")
}

fn check(address: &str) -> proto::CheckSuppressedRequest {
    proto::CheckSuppressedRequest {
        recipient: Some(email(address)),
        scope: Some(scope("acme", Channel::Email, "recall", "")),
        ..Default::default()
    }
}

/// The ports of the nodes that say they are masters.
fn masters(seeds: &str) -> Vec<u16> {
    seeds
        .split(',')
        .filter_map(|url| url.rsplit(':').next()?.parse().ok())
        .filter(|port| {
            node_cmd::<String>(*port, redis::cmd("INFO").arg("replication"))
                .is_ok_and(|info| info.contains("role:master"))
        })
        .collect()
}

async fn wait_complete(app: &TestApp) {
    let cache = app.cache().await;
    wait_until("the cache is complete", Duration::from_secs(30), || {
        let cache = cache.clone();
        async move { cache.is_complete().await.unwrap_or(false) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployments_keys_spread_over_the_masters() {
    let seeds = super::shared_cluster().await;
    let mut app = app_on(&seeds).await;
    wait_complete(&app).await;
    for i in 0..40 {
        app.opt_out(opt_out_request(
            email(&format!("s{i}@example.com")),
            everywhere(),
        ))
        .await;
    }
    let pattern = format!("{{{}*", app.prefix());
    let holding: Vec<(u16, usize)> = masters(&seeds)
        .into_iter()
        .map(|port| {
            let keys: Vec<String> = node_cmd(port, redis::cmd("KEYS").arg(&pattern)).unwrap();
            (port, keys.len())
        })
        .collect();
    assert_eq!(holding.len(), 3, "three masters: {holding:?}");
    assert!(
        holding.iter().all(|(_, n)| *n > 0),
        "every master holds some of the deployment's keys: {holding:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_spanning_groups_is_answered_in_order_through_redis() {
    let seeds = super::shared_cluster().await;
    let mut app = app_on(&seeds).await;
    wait_complete(&app).await;
    let keys = app.cache().await.keys().clone();
    assert_eq!(keys.group_count(), 16, "the default on Cluster");
    // Every third person opts out.
    for i in (0..80).step_by(3) {
        let mut req = opt_out_request(email(&format!("b{i}@example.com")), everywhere());
        req.durability = proto::Durability::Accepted as i32;
        app.opt_out(req).await;
    }
    // People in a shuffled order, so that neighbours in the batch are in different groups.
    let people: Vec<usize> = (0..300).map(|k| (k * 37) % 80).collect();
    let groups: BTreeSet<Group> = people
        .iter()
        .map(|i| group_of(&keys, &format!("b{i}@example.com")))
        .collect();
    assert!(groups.len() >= 8, "the batch spans groups: {groups:?}");
    let answers = app
        .client
        .check_suppressed_batch(proto::CheckSuppressedBatchRequest {
            checks: people
                .iter()
                .map(|i| check(&format!("b{i}@example.com")))
                .collect(),
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(answers.len(), people.len());
    for (i, answer) in people.iter().zip(&answers) {
        assert_eq!(answer.suppressed, i % 3 == 0, "b{i}@example.com");
    }
}

/// One master (and, by replication, its replica) flushed: the groups it served lose their keys
/// and markers. Their checks fail closed (from the store, never "send" for an opted-out person)
/// until the rebuild puts them back; the rebuild writes only those groups, so the other groups
/// keep the generation they were complete from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_master_has_its_groups_rebuilt_alone_and_never_says_send() {
    let cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    let seeds = cluster.seeds();
    let mut app = app_on(&seeds).await;
    wait_complete(&app).await;
    let cache = app.cache().await;
    let keys = cache.keys().clone();
    let people: Vec<String> = (0..60).map(|i| format!("f{i}@example.com")).collect();
    for person in &people {
        app.opt_out(opt_out_request(email(person), everywhere()))
            .await;
    }
    let generations = || async {
        let mut all = Vec::new();
        for g in keys.groups() {
            all.push(cache.complete_generation(g.group()).await.unwrap());
        }
        all
    };
    let before = generations().await;
    assert!(before.iter().all(Option::is_some), "every group complete");

    // The master of group 0's slot, and every group it serves.
    let master_of = |g: Group| cluster.master_of(cluster.slot(&keys.group(g).complete())).0;
    let flushed_master = master_of(0);
    let flushed: BTreeSet<Group> = (0..keys.group_count())
        .filter(|&g| master_of(g) == flushed_master)
        .collect();
    assert!(
        flushed.len() < keys.group_count() as usize,
        "the other masters serve groups too"
    );
    let in_flushed: Vec<&String> = people
        .iter()
        .filter(|p| flushed.contains(&group_of(&keys, p)))
        .collect();
    assert!(!in_flushed.is_empty(), "people in the flushed groups");

    let () = node_cmd(flushed_master, &redis::cmd("FLUSHALL")).unwrap();
    // At once and until the rebuild is done: every opted-out person is suppressed (or the check
    // refuses), never "send".
    let mut checked = 0;
    loop {
        let rebuilt = cache.is_complete().await.unwrap_or(false);
        for person in &in_flushed {
            match app.client.check_suppressed(check(person)).await {
                Ok(r) => assert!(r.into_inner().suppressed, "{person}: a false send"),
                Err(s) => assert_eq!(s.code(), tonic::Code::Unavailable, "{person}: {s}"),
            }
            checked += 1;
        }
        if rebuilt {
            break;
        }
    }
    assert!(checked >= in_flushed.len());
    let after = generations().await;
    for g in 0..keys.group_count() {
        let (b, a) = (&before[g as usize], &after[g as usize]);
        if flushed.contains(&g) {
            assert!(a.is_some() && a != b, "group {g} was rebuilt");
        } else {
            assert_eq!(a, b, "group {g} kept its markers and was not rebuilt");
        }
    }
    for person in &people {
        let r = app.client.check_suppressed(check(person)).await.unwrap();
        assert!(r.into_inner().suppressed, "{person} after the rebuild");
    }
}
