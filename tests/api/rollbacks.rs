//! Rolling back an import takes back exactly what it created and nothing a person created, before
//! or after (SPEC §5, invariant 6); it stops an import still streaming; it can be repeated.

use crate::{helpers::*, imports::*};
use suppressd::proto::{self, Channel, Reason};
use tonic::Code;

async fn a_rollback_takes_back_only_what_the_import_created(backend: Backend) {
    let _one = one_import_at_a_time().await;
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
    let _one = one_import_at_a_time().await;
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

async fn rolling_back_an_unknown_import_is_not_found(backend: Backend) {
    let _one = one_import_at_a_time().await;
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

/// An admin whose key names tenants sees and rolls back only import batches whose records all belong
/// to them (and its own): another tenant's records are out of its reach, whoever imported them.
async fn a_tenant_admin_rolls_back_only_its_tenants_imports(backend: Backend) {
    let _one = one_import_at_a_time().await;
    let mut app = spawn_app(backend).await;
    let acme = |topic: &str| scope("acme", Channel::Email, topic, "");
    let other = scope("globex", Channel::Email, "news", "");
    // The unrestricted admin imports for two tenants, and for acme alone.
    let both = import(
        &mut app.client,
        vec![
            row(1, "ann@example.com", acme("news")),
            row(2, "bob@example.com", other.clone()),
        ],
    )
    .await;
    let acme_only = import(
        &mut app.client,
        vec![row(1, "cat@example.com", acme("news"))],
    )
    .await;
    let mut tenant_admin = app.client_with_key(Some(ACME_ADMIN_KEY)).await;
    let own = import(
        &mut tenant_admin,
        vec![
            row(1, "dan@example.com", acme("news")),
            row(2, "eve@example.com", other.clone()),
        ],
    )
    .await;
    assert_eq!((own.imported, own.rejected), (1, 1), "globex row refused");

    let listed = |client: &mut Client| {
        let mut client = client.clone();
        async move {
            let mut ids: Vec<String> = client
                .list_imports(proto::ListImportsRequest { limit: 0 })
                .await
                .unwrap()
                .into_inner()
                .batches
                .into_iter()
                .map(|b| b.batch_id)
                .collect();
            ids.sort();
            ids
        }
    };
    let mut visible = vec![acme_only.batch_id.clone(), own.batch_id.clone()];
    visible.sort();
    assert_eq!(listed(&mut tenant_admin).await, visible);
    assert_eq!(listed(&mut app.client).await.len(), 3);
    // Newer batches it may not see do not crowd its own out of a short list.
    for i in 0..3 {
        import(
            &mut app.client,
            vec![row(1, &format!("later{i}@example.com"), other.clone())],
        )
        .await;
    }
    let newest_visible = tenant_admin
        .list_imports(proto::ListImportsRequest { limit: 1 })
        .await
        .unwrap()
        .into_inner()
        .batches;
    assert_eq!(newest_visible.len(), 1);
    assert_eq!(newest_visible[0].batch_id, own.batch_id);

    let refused = tenant_admin
        .rollback_import(proto::RollbackImportRequest {
            batch_id: both.batch_id.clone(),
            reason: "not mine".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("globex"),
        "{}",
        refused.message()
    );
    assert!(app.is_suppressed(email("bob@example.com"), other).await);
    assert!(
        app.is_suppressed(email("ann@example.com"), acme("news"))
            .await
    );

    for batch in [&acme_only.batch_id, &own.batch_id] {
        assert_eq!(rollback(&mut tenant_admin, batch).await.removed, 1);
    }
    assert!(
        !app.is_suppressed(email("cat@example.com"), acme("news"))
            .await
    );
}

on_both_stores!(
    a_rollback_takes_back_only_what_the_import_created,
    rolling_back_an_unknown_import_is_not_found,
    a_rollback_stops_an_import_still_streaming,
    a_tenant_admin_rolls_back_only_its_tenants_imports,
);

/// The tenants a tenant admin's rollback is checked against are those of every record the batch
/// will ever hold: a chunk committing while the rollback starts (here, a transaction holding the
/// batch's row, as a chunk's does, that adds a globex record once the rollback waits on it) is seen
/// by the check, and the refused rollback leaves the batch unmarked. Checked before marking, it
/// would pass on acme alone and then roll back the globex record too.
#[tokio::test]
async fn a_tenant_admins_rollback_sees_a_chunk_committed_as_it_starts() {
    let _one = one_import_at_a_time().await;
    let mut app = spawn_app(Backend::Postgres).await;
    let acme = scope("acme", Channel::Email, "news", "");
    let batch = import(
        &mut app.client,
        vec![row(1, "ann@example.com", acme.clone())],
    )
    .await
    .batch_id;
    let suppressd::store::Store::Postgres(pool) = app.store().await else {
        unreachable!("a PostgreSQL app")
    };
    let mut chunk = pool.begin().await.unwrap();
    sqlx::query("UPDATE imports SET imported = imported + 1 WHERE batch_id = $1")
        .bind(&batch)
        .execute(&mut *chunk)
        .await
        .unwrap();

    let mut tenant_admin = app.client_with_key(Some(ACME_ADMIN_KEY)).await;
    let request = proto::RollbackImportRequest {
        batch_id: batch.clone(),
        reason: "mine?".into(),
    };
    let rollback = tokio::spawn(async move { tenant_admin.rollback_import(request).await });
    // Until the rollback waits on the batch's row.
    let waiting = "SELECT count(*) FROM pg_stat_activity \
                   WHERE datname = current_database() AND wait_event_type = 'Lock'";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while sqlx::query_scalar::<_, i64>(waiting)
        .fetch_one(&pool)
        .await
        .unwrap()
        == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the rollback never waited"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    sqlx::query(
        "INSERT INTO suppressions (receipt_id, subject, tenant, channel, topic, campaign, reason, \
         source, actor, received_at, effective_at, committed_at, import_batch) \
         SELECT gen_random_uuid()::text, subject, 'globex', channel, topic, campaign, reason, \
         source, actor, received_at, effective_at, committed_at, import_batch \
         FROM suppressions WHERE import_batch = $1",
    )
    .bind(&batch)
    .execute(&mut *chunk)
    .await
    .unwrap();
    chunk.commit().await.unwrap();

    let refused = rollback.await.unwrap().unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("globex"),
        "{}",
        refused.message()
    );
    let marked: Option<i64> =
        sqlx::query_scalar("SELECT rolled_back_at FROM imports WHERE batch_id = $1")
            .bind(&batch)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        marked, None,
        "a refused rollback leaves the batch as it was"
    );
    assert!(app.is_suppressed(email("ann@example.com"), acme).await);
}

on_cluster!(
    a_rollback_takes_back_only_what_the_import_created,
    rolling_back_an_unknown_import_is_not_found,
    a_rollback_stops_an_import_still_streaming,
    a_tenant_admin_rolls_back_only_its_tenants_imports,
);
