//! `WatchChanges`: every change in audit log order, from a cursor, the beginning or the head; live
//! changes follow; filters by tenant and kind; resumption after a cut stream and after the watched
//! replica is killed, with no gap and no reordering; a slow watcher held back, not dropped; the
//! `watch` role; keyed hashes only, never a raw identifier.

use crate::{
    controls::halt_request,
    helpers::*,
    imports::{import, marketing, row},
    processes::{Replica, ReplicaConfig},
};
use std::time::Duration;
use suppressd::proto::{self, Channel};
use tonic::{Code, Streaming};

pub fn from_beginning() -> proto::WatchChangesRequest {
    proto::WatchChangesRequest {
        start: Some(proto::watch_changes_request::Start::FromBeginning(true)),
        ..Default::default()
    }
}

pub fn after(seq: u64) -> proto::WatchChangesRequest {
    proto::WatchChangesRequest {
        start: Some(proto::watch_changes_request::Start::AfterSeq(seq)),
        ..Default::default()
    }
}

pub async fn watch(
    client: &mut Client,
    req: proto::WatchChangesRequest,
) -> Streaming<proto::Change> {
    client
        .watch_changes(req)
        .await
        .expect("the watch starts")
        .into_inner()
}

/// The next `n` changes of a stream. The timeout only keeps a broken stream from hanging the
/// test; nothing is asserted about time.
pub async fn take(stream: &mut Streaming<proto::Change>, n: usize) -> Vec<proto::Change> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(60), stream.message())
            .await
            .unwrap_or_else(|_| panic!("no change after {} of {n}", got.len()));
        got.push(
            next.expect("the stream is healthy")
                .expect("the stream goes on"),
        );
    }
    got
}

fn seqs(changes: &[proto::Change]) -> Vec<u64> {
    changes.iter().map(|c| c.seq).collect()
}

async fn opt_out_email(app: &mut TestApp, address: &str) -> String {
    app.opt_out(opt_out_request(email(address), marketing()))
        .await
        .receipt_id
}

async fn every_change_in_log_order_then_live_ones(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let first = opt_out_email(&mut app, "first@example.com").await;
    app.client
        .halt_campaign(halt_request("acme", "recall", "RC-1", "wrong list"))
        .await
        .unwrap();
    let second = opt_out_email(&mut app, "second@example.com").await;

    let mut stream = watch(&mut app.client, from_beginning()).await;
    let before = take(&mut stream, 3).await;
    // Made while the watch is open: it follows them.
    let live = opt_out_email(&mut app, "live@example.com").await;
    let after_live = take(&mut stream, 1).await;

    assert_eq!(seqs(&before), [0, 1, 2]);
    assert_eq!(seqs(&after_live), [3]);
    let kinds: Vec<_> = before.iter().map(|c| c.kind.as_str()).collect();
    assert_eq!(kinds, ["opt_out", "halt", "opt_out"]);
    assert_eq!(before[0].receipt_id, first);
    assert_eq!(before[2].receipt_id, second);
    assert_eq!(after_live[0].receipt_id, live);
    let change = &after_live[0];
    assert_eq!(change.scope, Some(marketing()));
    assert_eq!(change.reason, proto::Reason::UserRequest as i32);
    assert_eq!(change.source, proto::Source::Link as i32);
    assert!(change.recorded_at.is_some());
    assert_eq!(change.subject_hash.len(), 64, "a hex SHA-256");
    assert!(change.subject_hash.bytes().all(|b| b.is_ascii_hexdigit()));
    let halt = &before[1];
    assert_eq!(halt.subject_hash, "", "a halt is about no person");
    assert_eq!(halt.scope.as_ref().unwrap().campaign, "RC-1");
    // Nowhere in the payload is the raw identifier.
    let text = format!("{before:?}{after_live:?}");
    assert!(!text.contains("example.com"), "{text}");
}

async fn a_watch_without_start_begins_at_the_head(backend: Backend) {
    let mut app = spawn_app(backend).await;
    opt_out_email(&mut app, "old@example.com").await;
    opt_out_email(&mut app, "older@example.com").await;

    let mut stream = watch(&mut app.client, proto::WatchChangesRequest::default()).await;
    let new = opt_out_email(&mut app, "new@example.com").await;
    let got = take(&mut stream, 1).await;

    assert_eq!(seqs(&got), [2]);
    assert_eq!(got[0].receipt_id, new);
}

async fn a_cut_watch_resumes_after_its_cursor_with_no_gap(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let _one_import = one_import_at_a_time().await;
    let rows = (0..1_200)
        .map(|i| row(i + 1, &format!("p{i}@example.com"), marketing()))
        .collect();
    import(&mut app.client, rows).await;

    // Cut after a few hundred (more than a page of the server's reader), then resume twice.
    let mut first = watch(&mut app.client, from_beginning()).await;
    let mut got = take(&mut first, 700).await;
    drop(first);
    let mut second = watch(&mut app.client, after(got.last().unwrap().seq)).await;
    got.extend(take(&mut second, 300).await);
    drop(second);
    let mut third = watch(&mut app.client, after(got.last().unwrap().seq)).await;
    got.extend(take(&mut third, 200).await);

    assert_eq!(seqs(&got), (0..1_200).collect::<Vec<_>>());
    assert!(got.iter().all(|c| c.kind == "import"));
}

async fn filters_by_tenant_and_kind(backend: Backend) {
    let mut app = spawn_app(backend).await;
    app.opt_out(opt_out_request(
        email("a@example.com"),
        scope("acme", Channel::Email, "marketing", ""),
    ))
    .await;
    app.opt_out(opt_out_request(
        email("b@example.com"),
        scope("other", Channel::Email, "marketing", ""),
    ))
    .await;
    app.client
        .halt_campaign(halt_request("acme", "recall", "RC-2", "wrong list"))
        .await
        .unwrap();
    let last = app
        .opt_out(opt_out_request(
            email("c@example.com"),
            scope("acme", Channel::Sms, "", ""),
        ))
        .await;

    let mut acme_opt_outs = watch(
        &mut app.client,
        proto::WatchChangesRequest {
            tenants: vec!["acme".into()],
            kinds: vec!["opt_out".into()],
            ..from_beginning()
        },
    )
    .await;
    let got = take(&mut acme_opt_outs, 2).await;

    assert_eq!(seqs(&got), [0, 3]);
    assert_eq!(got[1].receipt_id, last.receipt_id);

    let refused = app
        .client
        .watch_changes(proto::WatchChangesRequest {
            kinds: vec!["opted_out".into()],
            ..from_beginning()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("kinds"), "{}", refused.message());
    assert!(
        refused.message().contains("opted_out"),
        "{}",
        refused.message()
    );
}

async fn the_watch_role_watches_and_does_nothing_else(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut watcher = app.client_with_key(Some(WATCH_KEY)).await;
    let mut writer = app.client_with_key(Some(WRITE_KEY)).await;
    let mut acme_admin = app.client_with_key(Some(ACME_ADMIN_KEY)).await;

    watch(&mut watcher, from_beginning()).await;
    let halt = watcher
        .halt_campaign(halt_request("acme", "recall", "RC-3", "x"))
        .await
        .unwrap_err();
    let write = writer.watch_changes(from_beginning()).await.unwrap_err();
    // A key restricted to tenants must name them, and only its own.
    let unnamed = acme_admin
        .watch_changes(from_beginning())
        .await
        .unwrap_err();
    let foreign = acme_admin
        .watch_changes(proto::WatchChangesRequest {
            tenants: vec!["other".into()],
            ..from_beginning()
        })
        .await
        .unwrap_err();
    acme_admin
        .watch_changes(proto::WatchChangesRequest {
            tenants: vec!["acme".into()],
            ..from_beginning()
        })
        .await
        .expect("its own tenant");

    assert_eq!(halt.code(), Code::PermissionDenied);
    assert_eq!(write.code(), Code::PermissionDenied);
    assert_eq!(unnamed.code(), Code::PermissionDenied);
    assert_eq!(foreign.code(), Code::PermissionDenied);
}

/// A watcher that stops reading while far more changes than any buffer holds pile up gets every
/// one of them, in order, once it reads again: the server waited for it instead of dropping.
async fn a_slow_watcher_is_held_back_not_dropped(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let _one_import = one_import_at_a_time().await;
    let mut stream = watch(&mut app.client, from_beginning()).await;
    let total = 3_000u64;
    let rows = (0..total)
        .map(|i| row(i + 1, &format!("s{i}@example.com"), marketing()))
        .collect();
    // The watcher reads nothing while all of these are committed.
    import(&mut app.client, rows).await;

    let got = take(&mut stream, total as usize).await;

    assert_eq!(seqs(&got), (0..total).collect::<Vec<_>>());
}

on_both_stores!(
    every_change_in_log_order_then_live_ones,
    a_watch_without_start_begins_at_the_head,
    a_cut_watch_resumes_after_its_cursor_with_no_gap,
    filters_by_tenant_and_kind,
    the_watch_role_watches_and_does_nothing_else,
    a_slow_watcher_is_held_back_not_dropped,
);

in_audit_blocks!(
    every_change_in_log_order_then_live_ones,
    a_cut_watch_resumes_after_its_cursor_with_no_gap,
);

/// Two replicas over one PostgreSQL; opt-outs keep coming through the second while the first,
/// which a client watches, is killed mid-stream. The client resumes on the second from its
/// cursor: every change of the log arrives exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_resumes_on_another_replica_after_its_replica_is_killed() {
    let db = TestDb::new(Backend::Postgres).await;
    let prefix = format!("t{}:", uuid::Uuid::new_v4().simple());
    let config = ReplicaConfig::new(&db.url, redis_url(), &prefix);
    let mut watched = Replica::start(&config).await;
    let other = Replica::start(&config).await;
    let mut writer = other.client().await;
    let opt_outs = 60u64;
    let writes = tokio::spawn(async move {
        for i in 0..opt_outs {
            writer
                .opt_out(opt_out_request(
                    email(&format!("r{i}@example.com")),
                    marketing(),
                ))
                .await
                .expect("the opt-out is taken");
        }
    });

    let mut client = watched.client().await;
    let mut stream = watch(&mut client, from_beginning()).await;
    let mut got = take(&mut stream, 20).await;
    watched.kill();
    // Whatever the dead replica had sent is kept; the rest comes from the other one.
    while let Ok(Some(change)) = stream.message().await {
        got.push(change);
    }
    let mut client = other.client().await;
    let mut resumed = watch(&mut client, after(got.last().unwrap().seq)).await;
    writes.await.unwrap();
    let rest = opt_outs as usize - got.len();
    got.extend(take(&mut resumed, rest).await);

    assert_eq!(seqs(&got), (0..opt_outs).collect::<Vec<_>>());
    delete_prefix(redis_url(), &prefix);
}
