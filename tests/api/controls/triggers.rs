//! Automatic halts (issue 19 item 3): two replicas share the store and Redis; checks and opt-outs
//! of a campaign arrive at both. A trigger whose threshold they cross halts the campaign on both,
//! with the trigger as the actor and the figures on the audit log, once; one whose threshold they
//! stay below never fires, also after every count has reached Redis; counts Redis could not take
//! are counted as lost. Setting, listing and refusing triggers: `trigger_changes`.

use super::*;
use crate::failures::wait_until;
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};
use suppressd::cache::layout::Keys;

/// How long anything here may take on a slow, shared machine: generous, and never a measure.
const PATIENCE: Duration = Duration::from_secs(30);

pub(super) fn trigger_request(campaign: &str) -> proto::SetHaltTriggerRequest {
    proto::SetHaltTriggerRequest {
        tenant: "acme".into(),
        topic: "recall".into(),
        campaign: campaign.into(),
        window_seconds: 600,
        max_opt_outs: 0,
        max_complaints: 0,
        max_opt_out_rate: 0.0,
        min_checks: 0,
        reason: "a wrong mailing shows in opt-outs".into(),
    }
}

fn notice(campaign: &str) -> proto::Scope {
    scope("acme", Channel::Email, "recall", campaign)
}

fn person(i: usize) -> proto::Recipient {
    email(&format!("person{i}@example.com"))
}

/// Every opt-out and check a trigger's counts in Redis hold (all slots, whatever the floor):
/// (checks, opt-outs, complaints).
fn flushed(app: &TestApp, trigger_id: &str) -> (u64, u64, u64) {
    let key = Keys::new(app.prefix(), 0).trigger_counts(trigger_id);
    let mut conn = redis::Client::open(redis_url())
        .unwrap()
        .get_connection()
        .unwrap();
    let fields: Vec<(String, String)> = redis::cmd("HGETALL").arg(&key).query(&mut conn).unwrap();
    let mut sums = (0, 0, 0);
    for (field, value) in fields {
        let n: u64 = value.parse().unwrap();
        match field.rsplit_once(':').map(|(_, kind)| kind) {
            Some("c") => sums.0 += n,
            Some("o") => sums.1 += n,
            Some("x") => sums.2 += n,
            _ => {}
        }
    }
    sums
}

/// The halts of acme made by the trigger `id`, ended ones included.
async fn halts_by(client: &mut Client, id: &str) -> Vec<proto::Halt> {
    let actor = format!("trigger:{id}");
    let listed = all_controls(client, "acme").await;
    listed
        .halts
        .into_iter()
        .filter(|h| h.halted_by == actor)
        .collect()
}

/// Sets a trigger through replica B (which then answers by it), and sees that A, which has
/// reported for long, confirmed it too: from then on both count for it.
async fn set_on_both(b: &mut Client, req: proto::SetHaltTriggerRequest) -> proto::HaltTrigger {
    let trigger = b.set_halt_trigger(req).await.unwrap().into_inner();
    let propagation = trigger.propagation.as_ref().unwrap();
    assert_eq!(
        (propagation.outcome, propagation.confirmed_replicas.len()),
        (proto::PropagationOutcome::Confirmed as i32, 2),
        "{propagation:?}"
    );
    trigger
}

async fn check(
    client: &mut Client,
    recipient: proto::Recipient,
    campaign: &str,
) -> proto::CheckSuppressedResponse {
    let req = proto::CheckSuppressedRequest {
        recipient: Some(recipient),
        scope: Some(notice(campaign)),
        ..Default::default()
    };
    client.check_suppressed(req).await.unwrap().into_inner()
}

/// Opts `people` out of the campaign through the replicas in turn; every other one a complaint.
async fn opt_out_of(clients: &mut [Client], campaign: &str, people: std::ops::Range<usize>) {
    for i in people {
        let mut req = opt_out_request(person(i), notice(campaign));
        if i % 2 == 0 {
            req.reason = proto::Reason::Complaint as i32;
        }
        let n = clients.len();
        clients[i % n].opt_out(req).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_fires_once_under_load_on_every_replica_and_the_halt_names_it_and_its_figures() {
    let mut app = spawn_app(Backend::Postgres).await;
    let (b, _, _stop_b) = replica_b(&app, "replica-b").await;
    let mut trigger = trigger_request("RC-9");
    trigger.max_opt_outs = 10;
    let trigger = set_on_both(&mut b.clone(), trigger).await;

    // Both replicas kept busy with checks of the campaign (people 100.. never opt out).
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for (r, client) in [app.client.clone(), b.clone()].into_iter().enumerate() {
        for t in 0..2 {
            let (mut client, stop) = (client.clone(), stop.clone());
            load.push(tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let req = proto::CheckSuppressedRequest {
                        recipient: Some(person(100 + (r * 2 + t) * 1_000 + i % 50)),
                        scope: Some(notice("RC-9")),
                        ..Default::default()
                    };
                    // Counted whatever the answer: on a loaded machine a replica whose controls
                    // turned stale refuses (fails closed), which is not what this test is about.
                    let _ = client.check_suppressed(req).await;
                    i += 1;
                }
            }));
        }
    }
    // Ten opt-outs are not more than ten: nothing fires, once they all reached Redis.
    let mut clients = [app.client.clone(), b.clone()];
    opt_out_of(&mut clients, "RC-9", 0..10).await;
    let id = trigger.trigger_id.clone();
    wait_until("ten opt-outs counted", PATIENCE, || {
        let got = flushed(&app, &id);
        async move { got.1 == 10 }
    })
    .await;
    assert!(halts_by(&mut app.client, &id).await.is_empty());

    // The eleventh fires it: every replica then answers by the trigger's halt.
    opt_out_of(&mut clients, "RC-9", 10..11).await;
    wait_until("the trigger halted the campaign", PATIENCE, || {
        let (mut client, id) = (app.client.clone(), id.clone());
        async move { !halts_by(&mut client, &id).await.is_empty() }
    })
    .await;
    let halt = halts_by(&mut app.client, &id).await.pop().unwrap();
    assert_eq!(
        (halt.topic.as_str(), halt.campaign.as_str()),
        ("recall", "RC-9")
    );
    assert!(halt.channels.is_empty(), "every channel: {halt:?}");
    assert!(
        halt.reason.contains("11 opt-outs exceed 10"),
        "{}",
        halt.reason
    );
    // Nobody waits on a trigger's halt the way HaltCampaign's caller does: each replica answers
    // by it once its next poll loads it.
    for client in [app.client.clone(), b.clone()] {
        wait_until("every replica answers by the halt", PATIENCE, || {
            let mut client = client.clone();
            let req = proto::CheckSuppressedRequest {
                recipient: Some(person(7_777)),
                scope: Some(notice("RC-9")),
                ..Default::default()
            };
            // A refusal (a replica stale under load fails closed) is not an answer yet.
            async move {
                let answer = client.check_suppressed(req).await;
                answer.is_ok_and(|a| a.get_ref().halt.is_some())
            }
        })
        .await;
        let answer = check(&mut client.clone(), person(7_777), "RC-9").await;
        assert_halted(&answer, &halt.halt_id);
    }

    // On the record: the halt's actor is the trigger, its detail the figures that fired it.
    let rows = app.store().await.audit_rows(-1, 1_000).await.unwrap();
    let entry = rows
        .iter()
        .find(|r| r.action == "halt" && r.receipt_id == halt.halt_id)
        .expect("the halt's audit entry");
    assert_eq!(entry.actor, format!("trigger:{id}"));
    let detail: serde_json::Value = serde_json::from_str(entry.detail.as_deref().unwrap()).unwrap();
    let fired = &detail["fired"];
    assert_eq!(fired["trigger"], id.as_str());
    assert_eq!(fired["opt_outs"], 11);
    assert_eq!(fired["complaints"], 6);
    assert_eq!(fired["window_seconds"], 600);
    assert!(fired["checks"].as_u64().unwrap() > 0, "{fired}");
    assert!(
        rows.iter()
            .any(|r| r.action == "set_halt_trigger" && r.receipt_id == id)
    );

    // Resumed, it stays resumed: the figures that fired it do not fire it again, nor does the
    // load that goes on (checks, no more opt-outs), once the counts since have reached Redis.
    app.client
        .resume_campaign(resume_request(&halt.halt_id, "mailing checked"))
        .await
        .unwrap();
    let checks_then = flushed(&app, &id).0;
    wait_until("more checks counted after the resume", PATIENCE, || {
        let got = flushed(&app, &id);
        async move { got.0 > checks_then + 200 }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let made = halts_by(&mut app.client, &id).await;
    assert_eq!(made.len(), 1, "one halt: {made:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_below_its_rate_or_its_minimum_of_checks_never_fires() {
    let mut app = spawn_app(Backend::Postgres).await;
    let (b, _, _stop_b) = replica_b(&app, "replica-b").await;
    let mut trigger = trigger_request("RC-5");
    trigger.max_opt_out_rate = 0.2;
    trigger.min_checks = 40;
    let trigger = set_on_both(&mut b.clone(), trigger).await;
    let id = trigger.trigger_id.clone();
    let mut clients = [app.client.clone(), b.clone()];

    // Five opt-outs of twenty checks: a quarter, but the window holds too few checks.
    for i in 0..20 {
        let n = clients.len();
        check(&mut clients[i % n], person(1_000 + i), "RC-5").await;
    }
    opt_out_of(&mut clients, "RC-5", 0..5).await;
    wait_until("twenty checks and five opt-outs counted", PATIENCE, || {
        let got = flushed(&app, &id);
        async move { got.0 == 20 && got.1 == 5 }
    })
    .await;
    assert!(halts_by(&mut app.client, &id).await.is_empty());

    // Enough checks now, and eight of a hundred and twenty is below a fifth.
    for i in 20..120 {
        let n = clients.len();
        check(&mut clients[i % n], person(1_000 + i), "RC-5").await;
    }
    opt_out_of(&mut clients, "RC-5", 5..8).await;
    wait_until("every count reached Redis", PATIENCE, || {
        let got = flushed(&app, &id);
        async move { got.0 == 120 && got.1 == 8 }
    })
    .await;
    assert!(halts_by(&mut app.client, &id).await.is_empty());
    // Opt-outs of another campaign, or of the whole topic, do not name this one.
    clients[0]
        .opt_out(opt_out_request(person(9_000), notice("RC-6")))
        .await
        .unwrap();
    clients[1]
        .opt_out(opt_out_request(person(9_001), notice("")))
        .await
        .unwrap();
    let answer = check(&mut clients[0], person(9_002), "RC-5").await;
    assert!(!answer.suppressed, "{answer:?}");
    wait_until("the last check counted", PATIENCE, || {
        let got = flushed(&app, &id);
        async move { got.0 == 121 }
    })
    .await;
    assert_eq!(flushed(&app, &id).1, 8);
    assert!(halts_by(&mut app.client, &id).await.is_empty());
}

/// `suppressd_halt_trigger_counts_lost_total` as the admin port shows it (0 before the first).
async fn counts_lost(admin: std::net::SocketAddr) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(admin).await.unwrap();
    let ask = b"GET /metrics HTTP/1.1\r\nHost: suppressd\r\nConnection: close\r\n\r\n";
    stream.write_all(ask).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
        .lines()
        .find_map(|l| l.strip_prefix("suppressd_halt_trigger_counts_lost_total "))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_that_cannot_reach_redis_are_dropped_and_counted_as_lost() {
    let mut redis = PrivateRedis::start().await;
    let url = redis.url();
    let mut app = spawn_app_with(Backend::Postgres, Clock::System, |s| {
        s.redis.redis_url = url;
        s.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let admin = app.admin.expect("the admin port is bound");
    let mut trigger = trigger_request("RC-8");
    trigger.max_opt_outs = 1;
    app.client.set_halt_trigger(trigger).await.unwrap();
    let before = counts_lost(admin).await;

    // Redis gone: checks still answer (from the store), and count; their flush cannot land.
    redis.kill();
    let mut answered = 0.0;
    for i in 0..20 {
        let req = proto::CheckSuppressedRequest {
            recipient: Some(person(i)),
            scope: Some(notice("RC-8")),
            ..Default::default()
        };
        if app.client.check_suppressed(req).await.is_ok() {
            answered += 1.0;
        }
    }
    assert!(answered > 0.0, "checks answer from the store");
    wait_until(
        "the dropped counts are counted as lost",
        PATIENCE,
        || async move { counts_lost(admin).await >= before + answered },
    )
    .await;
}
