//! Bulk imports: summaries, duplicates (within the file and against existing records), rejections
//! with their lines and precise problems, the batch on every record, one audit entry per record, the
//! roles, and what happens when Redis is away. Shared helpers for the rollback and CLI tests too.

use crate::{helpers::*, processes::PrivateRedis};
use suppressd::{
    domain::Clock,
    proto::{self, Channel, Reason},
    store::Store,
};
use tonic::Code;

/// An import row with the usual defaults (USER_REQUEST, source unset = IMPORT).
pub fn row(line: u64, address: &str, scope: proto::Scope) -> proto::ImportRow {
    proto::ImportRow {
        line,
        recipient: Some(email(address)),
        scope: Some(scope),
        reason: Reason::UserRequest as i32,
        source: 0,
        received_at: None,
        expires_at: None,
    }
}

pub fn at(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

pub fn marketing() -> proto::Scope {
    scope("", Channel::Email, "marketing", "")
}

pub async fn import(client: &mut Client, rows: Vec<proto::ImportRow>) -> proto::ImportSummary {
    client
        .import_suppressions(tokio_stream::iter(rows))
        .await
        .expect("the import succeeds")
        .into_inner()
}

pub async fn rollback(client: &mut Client, batch_id: &str) -> proto::RollbackSummary {
    client
        .rollback_import(proto::RollbackImportRequest {
            batch_id: batch_id.to_owned(),
            reason: "wrong file".into(),
        })
        .await
        .expect("the rollback succeeds")
        .into_inner()
}

/// One integer from the store, with one text parameter.
pub async fn count(app: &TestApp, sql: &'static str, param: &str) -> i64 {
    match app.store().await {
        Store::Postgres(pool) => sqlx::query_scalar(sql).bind(param).fetch_one(&pool).await,
        Store::Sqlite(pool) => sqlx::query_scalar(sql).bind(param).fetch_one(&pool).await,
    }
    .unwrap()
}

async fn an_import_counts_duplicates_and_names_rejected_lines(backend: Backend) {
    let _one = one_import_at_a_time().await;
    let mut app = spawn_app(backend).await;
    app.opt_out(opt_out_request(email("before@example.com"), marketing()))
        .await;
    let mut own_expiry = row(6, "e@example.com", marketing());
    own_expiry.expires_at = at(4_000_000_000);
    let mut future = row(7, "f@example.com", marketing());
    future.received_at = at(4_000_000_000);
    let mut no_reason = row(8, "g@example.com", marketing());
    no_reason.reason = 0;
    let mut bounce = row(
        9,
        "bounce@example.com",
        scope("", Channel::Unspecified, "", ""),
    );
    bounce.reason = Reason::Bounce as i32;
    bounce.expires_at = at(4_000_000_000);
    bounce.received_at = at(1_700_000_000);
    let mut complaint = row(10, "a@example.com", marketing());
    complaint.reason = Reason::Complaint as i32;
    let rows = vec![
        row(2, "a@example.com", marketing()),
        row(3, " A@Example.com ", marketing()), // the same person, normalized: a duplicate
        row(4, "before@example.com", marketing()), // opted out before: a duplicate
        row(5, "not-an-address", marketing()),
        own_expiry,
        future,
        no_reason,
        bounce,
        complaint, // same scope, another reason: a record of its own
    ];

    let summary = import(&mut app.client, rows).await;

    assert_eq!(
        (summary.imported, summary.duplicates, summary.rejected),
        (3, 2, 4)
    );
    let rejections: Vec<(u64, &str)> = summary
        .rejections
        .iter()
        .map(|r| (r.line, r.problem.as_str()))
        .collect();
    assert_eq!(rejections[0].0, 5);
    assert!(
        rejections[0].1.starts_with("recipient.email: "),
        "{rejections:?}"
    );
    assert_eq!(
        rejections[1..],
        [
            (
                6,
                "expires_at: only BOUNCE and OPERATOR suppressions may expire; a person's own \
                 opt-out never does"
            ),
            (7, "received_at: must not lie in the future"),
            (8, "reason: is required"),
        ]
    );
    let batch = summary.batch_id.as_str();
    let tagged = "SELECT COUNT(*) FROM suppressions WHERE import_batch = $1";
    assert_eq!(count(&app, tagged, batch).await, 3);
    assert_eq!(
        app.rows(None).await,
        4,
        "nothing for rejected or duplicate rows"
    );
    let imported_from = "SELECT COUNT(*) FROM suppressions WHERE import_batch = $1 \
                         AND source = 6 AND actor = 'admin'";
    assert_eq!(count(&app, imported_from, batch).await, 3);
    let backdated = "SELECT COUNT(*) FROM suppressions WHERE import_batch = $1 \
                     AND received_at = 1700000000000 AND expires_at = 4000000000000";
    assert_eq!(count(&app, backdated, batch).await, 1);
    let audited = "SELECT COUNT(*) FROM audit_log WHERE action = 'import' AND detail = $1";
    assert_eq!(count(&app, audited, batch).await, 3);
    let any_import = "SELECT COUNT(*) FROM audit_log WHERE action = 'import' OR detail = $1";
    assert_eq!(count(&app, any_import, batch).await, 3);

    for (who, scope) in [
        ("a@example.com", marketing()),
        (
            "bounce@example.com",
            scope("", Channel::Sms, "recall", "RC-1"),
        ),
    ] {
        assert!(app.is_suppressed(email(who), scope).await, "{who}");
    }
    // A check answered by an imported record names its batch; one answered by an opt-out, none.
    for (who, scope, named) in [
        ("a@example.com", marketing(), batch),
        ("before@example.com", marketing(), ""),
    ] {
        let answer = app.check(email(who), scope).await;
        let matched = answer.matched.expect("suppressed");
        assert_eq!(matched.import_batch, named, "{who}");
    }
    assert!(!app.is_suppressed(email("f@example.com"), marketing()).await);
    let listed = app
        .client
        .list_imports(proto::ListImportsRequest { limit: 0 })
        .await
        .unwrap()
        .into_inner()
        .batches;
    assert_eq!(listed.len(), 1);
    let b = &listed[0];
    assert_eq!(
        (
            b.batch_id.as_str(),
            b.imported_by.as_str(),
            b.imported,
            b.duplicates,
            b.rejected
        ),
        (batch, "admin", 3, 2, 4)
    );
    assert!(b.finished_at.is_some() && b.rolled_back_at.is_none());
}

async fn an_import_larger_than_a_chunk_deduplicates_across_chunks(backend: Backend) {
    let _one = one_import_at_a_time().await;
    let mut app = spawn_app(backend).await;
    let n = 2_500;
    let rows: Vec<_> = (0..n)
        .map(|i| row(i + 1, &format!("p{}@example.com", i % 2_000), marketing()))
        .collect();

    let summary = import(&mut app.client, rows).await;

    assert_eq!(
        (summary.imported, summary.duplicates, summary.rejected),
        (2_000, 500, 0)
    );
    assert!(
        app.is_suppressed(email("p1999@example.com"), marketing())
            .await
    );
    let audited = "SELECT COUNT(*) FROM audit_log WHERE action = 'import' AND detail = $1";
    assert_eq!(count(&app, audited, &summary.batch_id).await, 2_000);
}

async fn only_an_admin_imports_rolls_back_or_lists(backend: Backend) {
    let _one = one_import_at_a_time().await;
    let app = spawn_app(backend).await;
    let mut writer = app.client_with_key(Some(WRITE_KEY)).await;
    let refused = writer
        .import_suppressions(tokio_stream::iter(vec![row(
            1,
            "a@example.com",
            marketing(),
        )]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let refused = writer
        .rollback_import(proto::RollbackImportRequest {
            batch_id: uuid::Uuid::new_v4().to_string(),
            reason: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let refused = writer
        .list_imports(proto::ListImportsRequest { limit: 0 })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(app.rows(None).await, 0);
}

async fn an_import_while_redis_is_unreachable_is_refused_and_stores_nothing(backend: Backend) {
    let _one = one_import_at_a_time().await;
    let mut redis = PrivateRedis::start().await;
    let mut app = spawn_app_with(backend, Clock::System, |s| s.redis.redis_url = redis.url()).await;
    app.wait_cache_complete().await;
    let first = import(
        &mut app.client,
        vec![row(1, "early@example.com", marketing())],
    )
    .await;
    assert_eq!(first.imported, 1);
    redis.kill();

    let refused = app
        .client
        .import_suppressions(tokio_stream::iter(vec![row(
            1,
            "late@example.com",
            marketing(),
        )]))
        .await
        .unwrap_err();

    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("import batch"),
        "{}",
        refused.message()
    );
    // Nothing reached the store that the cache lacks: no false "send" once Redis is back.
    assert_eq!(app.rows(None).await, 1);
    let batches = app
        .client
        .list_imports(proto::ListImportsRequest { limit: 10 })
        .await
        .unwrap()
        .into_inner()
        .batches;
    assert_eq!(batches.len(), 2, "the refused batch is listed");
    assert_eq!((batches[0].imported, batches[0].finished_at), (0, None));
}

/// A standard client streams one row per message, each in its own small DATA frame, as fast as
/// flow control lets it (grpcio does). While a chunk commits the handler reads nothing, so the
/// frames wait in h2, which counts small buffered frames against a connection budget and sends
/// GOAWAY when it runs out: the import must still go through whole. A raw HTTP/2 client, so the
/// framing is the one such a client uses (tonic's own client coalesces messages into large frames).
async fn an_import_streamed_one_small_frame_per_row_at_full_speed_completes(backend: Backend) {
    let _one = one_import_at_a_time().await;
    use prost::Message;
    let app = spawn_app(backend).await;
    let n: u64 = 5_000;
    let tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let (h2, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut h2 = h2.ready().await.unwrap();
    let request = http::Request::post(format!(
        "http://{}/suppress.v1.Suppression/ImportSuppressions",
        app.addr
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .header("authorization", format!("Bearer {ADMIN_KEY}"))
    .body(())
    .unwrap();
    let (response, mut send) = h2.send_request(request, false).unwrap();
    for i in 0..n {
        let message = row(i + 1, &format!("flood{i}@example.com"), marketing()).encode_to_vec();
        let mut frame = Vec::with_capacity(5 + message.len());
        frame.push(0);
        frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
        frame.extend_from_slice(&message);
        if let Err(e) = send.send_data(frame.into(), false) {
            panic!(
                "row {i} could not be sent ({e}); the server: {:?}",
                response.await.err()
            );
        }
    }
    send.send_data(bytes::Bytes::new(), true).unwrap();

    let response = response.await.expect("the server answers (no GOAWAY)");
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    let mut body = response.into_body();
    let mut payload = Vec::new();
    while let Some(data) = body.data().await {
        let data = data.expect("the response body arrives whole");
        body.flow_control().release_capacity(data.len()).unwrap();
        payload.extend_from_slice(&data);
    }
    // A failure may come trailers-only, its status among the headers.
    let trailers = body.trailers().await.unwrap().unwrap_or(headers);
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.to_str().unwrap()),
        Some("0"),
        "grpc-message: {:?}",
        trailers.get("grpc-message")
    );
    assert!(payload.len() >= 5, "one response message");
    let summary = proto::ImportSummary::decode(&payload[5..]).unwrap();
    assert_eq!(
        (summary.imported, summary.duplicates, summary.rejected),
        (n, 0, 0)
    );
    let audited = "SELECT COUNT(*) FROM audit_log WHERE action = 'import' AND detail = $1";
    assert_eq!(count(&app, audited, &summary.batch_id).await, n as i64);
}

on_both_stores!(
    an_import_counts_duplicates_and_names_rejected_lines,
    an_import_larger_than_a_chunk_deduplicates_across_chunks,
    only_an_admin_imports_rolls_back_or_lists,
    an_import_while_redis_is_unreachable_is_refused_and_stores_nothing,
);

/// The framing is the transport's, not the store's: one store is enough, and the flood is heavy
/// for a 2-core machine running the rest of the suite beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_frame_flood_import_completes() {
    an_import_streamed_one_small_frame_per_row_at_full_speed_completes(Backend::Sqlite).await;
}

on_cluster!(
    an_import_counts_duplicates_and_names_rejected_lines,
    only_an_admin_imports_rolls_back_or_lists,
);
