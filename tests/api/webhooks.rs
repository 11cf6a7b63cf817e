//! Webhook destinations: a real HTTP receiver in the test verifies every webhook's signature with
//! its own code (HMAC-SHA256 computed here from the Standard Webhooks text, not with the server's
//! signing code) and fails on purpose: retries, parking, resumption, delivery state on receipts,
//! one delivery per change across two replicas, and exactly one delivered record per change after
//! the delivering replica is killed mid-delivery.

use crate::{
    helpers::*,
    imports::marketing,
    processes::{Replica, ReplicaConfig},
};
use axum::{extract::State, http::HeaderMap, routing::post};
use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use std::{
    collections::BTreeSet,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};
use suppressd::{domain::Clock, proto, store::Store};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub verified: bool,
    pub body: serde_json::Value,
    /// What the receiver answered.
    pub accepted: bool,
}

/// The receiver: answers 500 to the next `fail` requests, holds each answer `delay_ms`.
#[derive(Default)]
pub struct Receiver {
    pub got: Mutex<Vec<Received>>,
    pub fail: AtomicU32,
    pub delay_ms: AtomicU64,
}

impl Receiver {
    pub async fn start() -> (Arc<Receiver>, String) {
        let receiver = Arc::new(Receiver::default());
        let app = axum::Router::new()
            .route("/hook", post(receive))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, format!("http://{addr}/hook"))
    }

    pub fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// The distinct webhook ids accepted so far.
    pub fn accepted_ids(&self) -> BTreeSet<String> {
        self.got()
            .into_iter()
            .filter(|r| r.accepted)
            .map(|r| r.id)
            .collect()
    }

    /// Polls until `done` holds for what was received (the deliveries run in the background).
    pub async fn wait_for(&self, what: &str, done: impl Fn(&[Received]) -> bool) {
        for _ in 0..1_200 {
            if done(&self.got()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{what}: never happened; received {:?}", self.got());
    }
}

/// Verifies per the Standard Webhooks text: the key is the base64 after `whsec_`; the signed
/// content is `{webhook-id}.{webhook-timestamp}.{body}`; the header holds space-separated
/// `v1,<base64>` signatures.
fn verify(headers: &HeaderMap, body: &[u8]) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(ts), Some(sigs)) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    ) else {
        return false;
    };
    let key = STANDARD
        .decode(SECRET.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    let fresh = ts
        .parse::<i64>()
        .is_ok_and(|t| (t - time_now()).abs() < 300);
    fresh && sigs.split(' ').any(|s| s == expected)
}

fn time_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    let delay = receiver.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let accepted = receiver
        .fail
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_err();
    receiver.got.lock().unwrap().push(Received {
        id: headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        verified: verify(&headers, &body),
        body: serde_json::from_slice(&body).unwrap_or_default(),
        accepted,
    });
    if accepted {
        axum::http::StatusCode::NO_CONTENT
    } else {
        axum::http::StatusCode::INTERNAL_SERVER_ERROR
    }
}

pub fn register(url: &str) -> proto::RegisterDestinationRequest {
    proto::RegisterDestinationRequest {
        url: url.to_owned(),
        tenants: vec![],
        kinds: vec![],
        secret: SECRET.to_owned(),
        needs_identifier: false,
    }
}

pub fn fast_delivery(s: &mut suppressd::config::ServeSettings) {
    s.changes.delivery_interval = Duration::from_millis(20);
    s.changes.delivery_backoff_base = Duration::from_millis(20);
    s.changes.delivery_backoff_max = Duration::from_millis(100);
    s.changes.delivery_failure_budget = 3;
}

/// The receipt once its first destination has it delivered (the delivery row is written just
/// after the receiver answers).
async fn delivered_receipt(app: &mut TestApp, id: &str) -> proto::Receipt {
    for _ in 0..400 {
        let r = receipt(app, id).await;
        if r.deliveries.first().map(|d| d.state) == Some(proto::DeliveryState::Delivered as i32) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("receipt {id} never showed a delivery");
}

async fn receipt(app: &mut TestApp, id: &str) -> proto::Receipt {
    app.client
        .get_receipt(proto::GetReceiptRequest {
            receipt_id: id.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn changes_arrive_signed_in_log_order_and_receipts_say_when(backend: Backend) {
    let mut app = spawn_app_with(backend, Clock::System, fast_delivery).await;
    let (receiver, url) = Receiver::start().await;
    let before = app
        .opt_out(opt_out_request(email("before@example.com"), marketing()))
        .await;
    let destination = app
        .client
        .register_destination(register(&url))
        .await
        .unwrap()
        .into_inner();
    let mut receipts = Vec::new();
    for i in 0..5 {
        let r = app
            .opt_out(opt_out_request(
                email(&format!("p{i}@example.com")),
                marketing(),
            ))
            .await;
        receipts.push(r.receipt_id);
    }

    receiver
        .wait_for("five webhooks", |got| got.len() >= 5)
        .await;
    let got = receiver.got();
    let shown = delivered_receipt(&mut app, &receipts[4]).await;
    let unwanted = receipt(&mut app, &before.receipt_id).await;
    let listed = app
        .client
        .list_destinations(proto::ListDestinationsRequest {})
        .await
        .unwrap()
        .into_inner()
        .destinations;

    assert_eq!(destination.secret, SECRET);
    assert!(got.iter().all(|r| r.verified), "{got:?}");
    // Registered after the first opt-out: it gets the changes from then on, in log order.
    let ids: Vec<_> = got.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["evt_1", "evt_2", "evt_3", "evt_4", "evt_5"]);
    let bodies: Vec<_> = got
        .iter()
        .map(|r| r.body["data"]["receipt_id"].clone())
        .collect();
    assert_eq!(bodies, receipts);
    assert_eq!(got[0].body["type"], "suppression.opt_out");
    assert_eq!(got[0].body["data"]["channel"], "email");
    assert_eq!(got[0].body["data"]["reason"], "user_request");
    let text = format!("{got:?}");
    assert!(!text.contains("example.com"), "no raw identifier: {text}");
    assert_eq!(shown.deliveries.len(), 1);
    assert_eq!(
        shown.deliveries[0].destination_id,
        destination.destination_id
    );
    assert_eq!(
        shown.deliveries[0].state,
        proto::DeliveryState::Delivered as i32
    );
    assert!(shown.deliveries[0].delivered_at.is_some());
    assert!(
        unwanted.deliveries.is_empty(),
        "made before the destination: not its concern"
    );
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].secret, "", "a listing never shows the secret");
    assert_eq!(listed[0].delivered_seq, Some(5));
}

async fn failures_are_retried_then_park_and_an_admin_resumes(backend: Backend) {
    let mut app = spawn_app_with(backend, Clock::System, fast_delivery).await;
    let (receiver, url) = Receiver::start().await;
    let destination = app
        .client
        .register_destination(register(&url))
        .await
        .unwrap()
        .into_inner();
    receiver.fail.store(u32::MAX, Ordering::SeqCst);
    let first = app
        .opt_out(opt_out_request(email("a@example.com"), marketing()))
        .await;
    let second = app
        .opt_out(opt_out_request(email("b@example.com"), marketing()))
        .await;

    // Three failures in a row (the budget) park it.
    receiver
        .wait_for("three attempts", |got| got.len() >= 3)
        .await;
    let mut parked = None;
    for _ in 0..200 {
        let listed = app
            .client
            .list_destinations(proto::ListDestinationsRequest {})
            .await
            .unwrap()
            .into_inner()
            .destinations;
        if listed[0].state == proto::DestinationState::Parked as i32 {
            parked = Some(listed[0].clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let parked = parked.expect("the destination parks");
    let while_parked = receipt(&mut app, &first.receipt_id).await;
    let attempts = receiver.got();
    // Back up, and resumed: both changes arrive, the first retried ones first.
    receiver.fail.store(1, Ordering::SeqCst);
    app.client
        .resume_destination(proto::ResumeDestinationRequest {
            destination_id: destination.destination_id.clone(),
        })
        .await
        .unwrap();
    receiver
        .wait_for("both delivered", |got| {
            got.iter().filter(|r| r.accepted).count() >= 2
        })
        .await;
    let after = delivered_receipt(&mut app, &second.receipt_id).await;

    assert_eq!(attempts.len(), 3, "no attempt while parked: {attempts:?}");
    assert!(attempts.iter().all(|r| r.id == "evt_0" && r.verified));
    assert_eq!(parked.failures, 3);
    assert!(parked.last_error.contains("500"), "{}", parked.last_error);
    assert_eq!(parked.delivered_seq, None, "nothing skipped");
    assert_eq!(
        while_parked.deliveries[0].state,
        proto::DeliveryState::Parked as i32
    );
    let accepted: Vec<_> = receiver
        .got()
        .into_iter()
        .filter(|r| r.accepted)
        .map(|r| r.id)
        .collect();
    assert_eq!(accepted, ["evt_0", "evt_1"]);
    assert_eq!(
        after.deliveries[0].state,
        proto::DeliveryState::Delivered as i32
    );
}

async fn registering_checks_the_url_secret_and_kinds(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client.clone();
    let refuse = |req: proto::RegisterDestinationRequest| {
        let mut client = client.clone();
        async move { client.register_destination(req).await.unwrap_err() }
    };

    let bad_url = refuse(register("ftp://example.com/x")).await;
    let bad_secret = refuse(proto::RegisterDestinationRequest {
        secret: "not-a-secret".into(),
        ..register("https://example.com/x")
    })
    .await;
    let bad_kind = refuse(proto::RegisterDestinationRequest {
        kinds: vec!["opted_out".into()],
        ..register("https://example.com/x")
    })
    .await;
    let made = client
        .register_destination(proto::RegisterDestinationRequest {
            secret: String::new(),
            ..register("https://example.com/x")
        })
        .await
        .unwrap()
        .into_inner();
    let mut writer = app.client_with_key(Some(WRITE_KEY)).await;
    let denied = writer
        .register_destination(register("https://example.com/x"))
        .await
        .unwrap_err();
    client
        .remove_destination(proto::RemoveDestinationRequest {
            destination_id: made.destination_id.clone(),
        })
        .await
        .unwrap();
    let left = client
        .list_destinations(proto::ListDestinationsRequest {})
        .await
        .unwrap()
        .into_inner()
        .destinations;

    assert_eq!(bad_url.code(), tonic::Code::InvalidArgument);
    assert!(bad_url.message().contains("url"), "{}", bad_url.message());
    assert!(
        bad_secret.message().contains("secret"),
        "{}",
        bad_secret.message()
    );
    assert!(
        bad_kind.message().contains("kinds"),
        "{}",
        bad_kind.message()
    );
    assert!(made.secret.starts_with("whsec_"), "the server made one");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert!(left.is_empty());
}

on_both_stores!(
    changes_arrive_signed_in_log_order_and_receipts_say_when,
    failures_are_retried_then_park_and_an_admin_resumes,
    registering_checks_the_url_secret_and_kinds,
);

in_audit_blocks!(changes_arrive_signed_in_log_order_and_receipts_say_when,);

async fn delivered_rows(store: &Store, destination: &str) -> Vec<i64> {
    let sql = "SELECT seq FROM deliveries WHERE destination_id = $1 ORDER BY seq";
    match store {
        Store::Postgres(pool) => {
            sqlx::query_scalar(sql)
                .bind(destination)
                .fetch_all(pool)
                .await
        }
        Store::Sqlite(pool) => {
            sqlx::query_scalar(sql)
                .bind(destination)
                .fetch_all(pool)
                .await
        }
    }
    .unwrap()
}

async fn lease_owner(store: &Store, destination: &str) -> String {
    let sql = "SELECT lease_owner FROM destinations WHERE destination_id = $1";
    match store {
        Store::Postgres(pool) => {
            sqlx::query_scalar(sql)
                .bind(destination)
                .fetch_one(pool)
                .await
        }
        Store::Sqlite(pool) => {
            sqlx::query_scalar(sql)
                .bind(destination)
                .fetch_one(pool)
                .await
        }
    }
    .unwrap()
}

fn replica_config(db: &TestDb, prefix: &str, name: &str) -> ReplicaConfig {
    ReplicaConfig::new(&db.url, redis_url(), prefix)
        .with("SUPPRESSD_REPLICA_NAME", name)
        .with("SUPPRESSD_DELIVERY_INTERVAL", "20ms")
        .with("SUPPRESSD_DELIVERY_TIMEOUT", "1s")
        .with("SUPPRESSD_DELIVERY_BACKOFF_BASE", "20ms")
}

/// Two replicas over one PostgreSQL, opt-outs through both: each change reaches the receiver
/// exactly once (no replica delivers what the other did), in log order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_deliver_the_same_change_twice() {
    let db = TestDb::new(Backend::Postgres).await;
    let prefix = format!("t{}:", uuid::Uuid::new_v4().simple());
    let a = Replica::start(&replica_config(&db, &prefix, "replica-a")).await;
    let b = Replica::start(&replica_config(&db, &prefix, "replica-b")).await;
    let (receiver, url) = Receiver::start().await;
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    ca.register_destination(register(&url)).await.unwrap();
    let changes = 40;
    for i in 0..changes {
        let client = if i % 2 == 0 { &mut ca } else { &mut cb };
        client
            .opt_out(opt_out_request(
                email(&format!("t{i}@example.com")),
                marketing(),
            ))
            .await
            .unwrap();
    }

    receiver
        .wait_for("every change", |got| got.len() >= changes)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await; // room for a duplicate to show up
    let got = receiver.got();

    let ids: Vec<_> = got.iter().map(|r| r.id.clone()).collect();
    let expected: Vec<_> = (0..changes).map(|s| format!("evt_{s}")).collect();
    assert_eq!(ids, expected);
    assert!(got.iter().all(|r| r.verified));
    delete_prefix(redis_url(), &prefix);
}

/// The replica delivering a destination is killed while a POST is under way. The other takes
/// the lease once it runs out and resumes after the last change recorded as delivered: the
/// receiver may see that one change twice (same webhook-id), every change arrives, in order, and
/// the store records exactly one delivery per change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_delivery_leaves_one_delivered_record_per_change() {
    let db = TestDb::new(Backend::Postgres).await;
    let prefix = format!("t{}:", uuid::Uuid::new_v4().simple());
    let mut a = Replica::start(&replica_config(&db, &prefix, "replica-a")).await;
    let mut b = Replica::start(&replica_config(&db, &prefix, "replica-b")).await;
    let (receiver, url) = Receiver::start().await;
    // Slow answers, so the kill lands mid-POST.
    receiver.delay_ms.store(150, Ordering::SeqCst);
    let mut client = a.client().await;
    let destination = client
        .register_destination(register(&url))
        .await
        .unwrap()
        .into_inner();
    let changes = 20;
    for i in 0..changes {
        client
            .opt_out(opt_out_request(
                email(&format!("k{i}@example.com")),
                marketing(),
            ))
            .await
            .unwrap();
    }
    receiver
        .wait_for("a few deliveries", |got| got.len() >= 4)
        .await;
    let store = Store::connect(&db.url).await.unwrap();
    let holder = lease_owner(&store, &destination.destination_id).await;
    if holder == "replica-a" {
        a.kill();
    } else {
        b.kill();
    }

    receiver
        .wait_for("every change", |got| {
            got.iter()
                .filter(|r| r.accepted)
                .map(|r| r.id.as_str())
                .collect::<BTreeSet<_>>()
                .len()
                >= changes
        })
        .await;
    // The row of the last change is written just after the receiver answered it.
    let mut rows = Vec::new();
    for _ in 0..400 {
        rows = delivered_rows(&store, &destination.destination_id).await;
        if rows.len() >= changes {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let got = receiver.got();

    assert_eq!(rows, (0..changes as i64).collect::<Vec<_>>());
    let expected: BTreeSet<_> = (0..changes).map(|s| format!("evt_{s}")).collect();
    assert_eq!(receiver.accepted_ids(), expected);
    // In order: each change first arrives after every earlier one. After the kill, the changes
    // the killed replica delivered but had not yet recorded arrive again, in order, before any
    // new one.
    let seqs: Vec<u64> = got
        .iter()
        .map(|r| r.id.trim_start_matches("evt_").parse().unwrap())
        .collect();
    let mut first = Vec::new();
    for &seq in &seqs {
        if !first.contains(&seq) {
            first.push(seq);
        }
    }
    assert!(first.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert_eq!(first[0], 0, "{seqs:?}");
    let replays: Vec<_> = seqs.windows(2).filter(|w| w[1] < w[0]).collect();
    assert!(replays.len() <= 1, "one replay, after the kill: {seqs:?}");
    assert!(got.iter().all(|r| r.verified));
    delete_prefix(redis_url(), &prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_adds_lists_resumes_and_removes_destinations() {
    let app = spawn_app(Backend::Sqlite).await;
    let server = app.addr.to_string();
    let out = crate::controls::suppressd(&[
        "destinations",
        "add",
        "https://crm.example.com/hook",
        "--tenant",
        "acme",
        "--kind",
        "opt_out",
        "--server",
        &server,
        "--json",
    ])
    .await;
    let added: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = added["destination_id"].as_str().unwrap().to_owned();
    let listed = crate::controls::suppressd(&["destinations", "list", "--server", &server]).await;
    let resumed =
        crate::controls::suppressd(&["destinations", "resume", &id, "--server", &server]).await;
    crate::controls::suppressd(&["destinations", "remove", &id, "--server", &server]).await;
    let after = crate::controls::suppressd(&["destinations", "list", "--server", &server]).await;

    assert!(
        added["secret"].as_str().unwrap().starts_with("whsec_"),
        "{out}"
    );
    assert_eq!(added["tenants"], serde_json::json!(["acme"]));
    assert!(
        listed.contains(&id) && listed.contains("state: active"),
        "{listed}"
    );
    assert!(!listed.contains("whsec_"), "{listed}");
    assert!(resumed.contains(&id), "{resumed}");
    assert_eq!(after, "no destinations\n");
}
