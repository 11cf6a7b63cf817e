//! Bulk imports and their rollback: summaries, duplicates, rejections with their lines, the batch on
//! every record, one audit entry per change, and the promise that a rollback takes back only what the
//! import created (SPEC §5, invariant 6).

use crate::{helpers::*, processes::PrivateRedis};
use suppressd::{
    domain::Clock,
    proto::{self, Channel, Reason},
    store::Store,
};
use tonic::Code;

/// An import row with the usual defaults (USER_REQUEST, source unset = IMPORT).
fn row(line: u64, address: &str, scope: proto::Scope) -> proto::ImportRow {
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

fn at(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

fn marketing() -> proto::Scope {
    scope("", Channel::Email, "marketing", "")
}

async fn import(client: &mut Client, rows: Vec<proto::ImportRow>) -> proto::ImportSummary {
    client
        .import_suppressions(tokio_stream::iter(rows))
        .await
        .expect("the import succeeds")
        .into_inner()
}

async fn rollback(client: &mut Client, batch_id: &str) -> proto::RollbackSummary {
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
async fn count(app: &TestApp, sql: &'static str, param: &str) -> i64 {
    match app.store().await {
        Store::Postgres(pool) => sqlx::query_scalar(sql).bind(param).fetch_one(&pool).await,
        Store::Sqlite(pool) => sqlx::query_scalar(sql).bind(param).fetch_one(&pool).await,
    }
    .unwrap()
}

async fn an_import_counts_duplicates_and_names_rejected_lines(backend: Backend) {
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
    let mut redis = PrivateRedis::start().await;
    let mut app = spawn_app_with(backend, Clock::System, |s| s.redis_url = redis.url()).await;
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

async fn a_rollback_takes_back_only_what_the_import_created(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let sms = scope("", Channel::Sms, "", "");
    // Before the import: Ann left marketing email herself (the scope her import row names, with
    // another reason), Bob left every SMS.
    app.opt_out(opt_out_request(email("ann@example.com"), marketing()))
        .await;
    app.opt_out(opt_out_request(email("bob@example.com"), sms.clone()))
        .await;
    let mut ann = row(1, "ann@example.com", marketing());
    ann.reason = Reason::Legal as i32;
    let mut dan = row(4, "dan@example.com", scope("", Channel::Email, "", "RC-9"));
    dan.reason = Reason::Operator as i32;
    dan.expires_at = at(4_000_000_000);
    let rows = vec![
        ann,
        row(2, "bob@example.com", marketing()),
        row(3, "cat@example.com", marketing()),
        dan,
    ];
    let summary = import(&mut app.client, rows).await;
    assert_eq!((summary.imported, summary.duplicates), (4, 0));
    // After the import: Cat leaves marketing email herself, the scope her import row named.
    app.opt_out(opt_out_request(email("cat@example.com"), marketing()))
        .await;
    let rows_before = app.rows(None).await;

    let first = rollback(&mut app.client, &summary.batch_id).await;

    assert_eq!((first.removed, first.already_ended), (4, 0));
    let own = [
        ("ann@example.com", marketing()),
        ("bob@example.com", scope("", Channel::Sms, "recall", "")),
        ("cat@example.com", marketing()),
    ];
    let import_only = [
        ("bob@example.com", marketing()),
        (
            "dan@example.com",
            scope("", Channel::Email, "recall", "RC-9"),
        ),
    ];
    for pass in ["cache", "store"] {
        for (who, s) in own.clone() {
            assert!(app.is_suppressed(email(who), s).await, "{who} ({pass})");
        }
        for (who, s) in import_only.clone() {
            assert!(!app.is_suppressed(email(who), s).await, "{who} ({pass})");
        }
        // The same answers from the store alone: checks fall back to it while Redis is empty.
        app.flush_redis();
    }
    let batch = summary.batch_id.as_str();
    let ended = "SELECT COUNT(*) FROM suppressions WHERE import_batch = $1 \
                 AND ended_at IS NOT NULL AND ended_by = 'rollback'";
    assert_eq!(count(&app, ended, batch).await, 4, "ended, not deleted");
    let untouched = "SELECT COUNT(*) FROM suppressions WHERE import_batch IS NULL \
                     AND ended_at IS NULL AND $1 <> ''";
    assert_eq!(
        count(&app, untouched, batch).await,
        3,
        "every own opt-out stays"
    );
    assert_eq!(app.rows(None).await, rows_before);
    let audited = "SELECT COUNT(*) FROM audit_log WHERE action = 'rollback' \
                   AND actor = 'admin' AND detail = $1";
    assert_eq!(
        count(&app, audited, &format!("batch {batch}: wrong file")).await,
        4
    );
    let history = app
        .client
        .list_suppressions(proto::ListSuppressionsRequest {
            recipient: Some(email("cat@example.com")),
            tenant: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let states: Vec<(i32, Vec<&str>)> = history
        .records
        .iter()
        .map(|h| {
            (
                h.state,
                h.events.iter().map(|e| e.action.as_str()).collect(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            (
                proto::RecordState::RolledBack as i32,
                vec!["import", "rollback"]
            ),
            (proto::RecordState::Active as i32, vec!["opt_out"]),
        ],
        "the import's record, then her own: {history:?}"
    );

    let again = rollback(&mut app.client, batch).await;
    assert_eq!((again.removed, again.already_ended), (0, 4));
    let audited_any = "SELECT COUNT(*) FROM audit_log WHERE action = 'rollback' OR $1 = ''";
    assert_eq!(count(&app, audited_any, batch).await, 4);
    let listed = app
        .client
        .list_imports(proto::ListImportsRequest { limit: 1 })
        .await
        .unwrap()
        .into_inner()
        .batches;
    assert!(listed[0].rolled_back_at.is_some());
    assert_eq!(listed[0].rolled_back_by, "admin");
}

async fn a_rollback_stops_an_import_still_streaming(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let mut client = app.client.clone();
    let call = tokio::spawn(async move {
        client
            .import_suppressions(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    // One full chunk, then wait until it is committed (the batch's count says so).
    for i in 0..1_000 {
        tx.send(row(i + 1, &format!("s{i}@example.com"), marketing()))
            .await
            .unwrap();
    }
    let batch = loop {
        let listed = app
            .client
            .list_imports(proto::ListImportsRequest { limit: 1 })
            .await
            .unwrap()
            .into_inner()
            .batches;
        if let Some(b) = listed.into_iter().find(|b| b.imported == 1_000) {
            break b.batch_id;
        }
        tokio::task::yield_now().await;
    };

    let rolled = rollback(&mut app.client, &batch).await;
    for i in 1_000..2_500 {
        if tx
            .send(row(i + 1, &format!("s{i}@example.com"), marketing()))
            .await
            .is_err()
        {
            break; // the server stopped reading
        }
    }
    drop(tx);
    let stopped = call.await.unwrap().unwrap_err();

    assert_eq!(rolled.removed, 1_000);
    assert_eq!(stopped.code(), Code::Aborted, "{stopped:?}");
    let active = "SELECT COUNT(*) FROM suppressions WHERE import_batch = $1 AND ended_at IS NULL";
    assert_eq!(count(&app, active, &batch).await, 0);
    for i in [0, 999, 1_000, 2_499] {
        let who = format!("s{i}@example.com");
        assert!(!app.is_suppressed(email(&who), marketing()).await, "{who}");
    }
}

async fn rolling_back_an_unknown_batch_is_not_found(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut admin = app.client.clone();
    let unknown = admin
        .rollback_import(proto::RollbackImportRequest {
            batch_id: uuid::Uuid::new_v4().to_string(),
            reason: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    for (batch_id, reason) in [
        (uuid::Uuid::new_v4().to_string(), " "),
        ("nope".into(), "x"),
    ] {
        let invalid = admin
            .rollback_import(proto::RollbackImportRequest {
                batch_id,
                reason: reason.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(invalid.code(), Code::InvalidArgument);
    }
}

on_both_stores!(
    a_rollback_takes_back_only_what_the_import_created,
    rolling_back_an_unknown_batch_is_not_found,
    a_rollback_stops_an_import_still_streaming,
    an_import_counts_duplicates_and_names_rejected_lines,
    an_import_larger_than_a_chunk_deduplicates_across_chunks,
    only_an_admin_imports_rolls_back_or_lists,
    an_import_while_redis_is_unreachable_is_refused_and_stores_nothing,
);

/// Runs the real binary against the app; returns its exit success, stdout and stderr.
async fn suppressd(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_suppressd"))
        .args(args)
        .args(["--server", &app.addr.to_string(), "--api-key", ADMIN_KEY])
        .output()
        .await
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.success(), text(out.stdout), text(out.stderr))
}

/// The value of a `name: value` line of the printed summary.
fn field<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
        .unwrap_or_else(|| panic!("no {name} in {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_imports_csv_and_json_lines_and_prints_the_summary() {
    let mut app = spawn_app(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("people.csv");
    std::fs::write(
        &csv,
        "recipient_type,recipient,tenant,channel,topic,campaign,reason,source,received_at,expires_at\n\
         email,a@example.com,,email,marketing,,user_request,,2024-01-02T03:04:05Z,\n\
         email,b@example.com,,,,,COMPLAINT,SUPPORT_AGENT,,\n\
         email,A@example.com,,email,marketing,,user_request,,,\n\
         fax,123,,,,,user_request,,,\n\
         email,not-an-address,,,,,user_request,,,\n\
         email,\"c@example.com\",,sms,,,bounce,,,2099-01-01T00:00:00Z\n\
         email,d@example.com\n",
    )
    .unwrap();

    let (ok, out, err) = suppressd(&app, &["import", csv.to_str().unwrap()]).await;

    assert!(ok, "{out}{err}");
    assert_eq!(
        ["imported", "duplicates", "rejected"].map(|n| field(&out, n)),
        ["3", "1", "3"],
        "{out}"
    );
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("line ")).collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("line 5: recipient_type: unknown value"),
        "{out}"
    );
    assert!(lines[1].starts_with("line 6: recipient.email: "), "{out}");
    assert_eq!(
        lines[2],
        "line 8: bad CSV: 2 fields where the header has 10"
    );
    for (who, s) in [
        ("a@example.com", marketing()),
        ("b@example.com", scope("", Channel::Voice, "any", "")),
        ("c@example.com", scope("", Channel::Sms, "any", "")),
    ] {
        assert!(app.is_suppressed(email(who), s).await, "{who}");
    }

    let jsonl = dir.path().join("people.jsonl");
    std::fs::write(
        &jsonl,
        "{\"recipient_type\":\"phone\",\"recipient\":\"+1 415 555 0100\",\"channel\":\"sms\",\"reason\":\"user_request\"}\n\
         {\"recipient_type\":\"email\",\"recipient\":\"x@example.com\",\"topic\":\"recall\",\"reason\":\"legal\"}\n\
         \n\
         not json\n\
         {\"recipient_type\":\"email\",\"recipient\":\"y@example.com\",\"reason\":\"legal\",\"colour\":\"red\"}\n",
    )
    .unwrap();
    let (ok, out, err) = suppressd(&app, &["import", jsonl.to_str().unwrap()]).await;
    assert!(ok, "{out}{err}");
    assert_eq!(
        ["imported", "duplicates", "rejected"].map(|n| field(&out, n)),
        ["2", "0", "2"],
        "{out}"
    );
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("line ")).collect();
    assert!(lines[0].starts_with("line 4: bad JSON: "), "{out}");
    assert!(
        lines[1].starts_with("line 5: bad JSON: unknown field `colour`"),
        "{out}"
    );
    let phone = proto::Recipient {
        id: Some(proto::recipient::Id::Phone("+14155550100".into())),
    };
    assert!(
        app.is_suppressed(phone, scope("", Channel::Sms, "x", ""))
            .await
    );

    let (ok, listed, _) = suppressd(&app, &["imports", "list"]).await;
    assert!(ok);
    assert_eq!(
        listed.lines().count(),
        3,
        "a header and two batches: {listed}"
    );
    assert!(
        listed
            .lines()
            .nth(1)
            .unwrap()
            .starts_with(field(&out, "batch_id"))
    );
}
