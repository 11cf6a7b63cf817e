//! The identifier vault and erasure: a raw identifier kept for delivery is stored only sealed (never
//! in the store's tables, Redis or the logs in clear), opens through the vault only, still opens
//! after a key rotation, is not kept without a vault key; `ForgetPerson` destroys it and the free
//! text about the person, the person stays suppressed, and the audit log still verifies.

use crate::helpers::*;
use crate::processes::{Replica, ReplicaConfig};
use suppressd::{
    audit::AuditLog,
    proto::{self, Channel, Durability},
    service::audit::verify_log,
    store::Store,
};
use tonic::Code;

const K1: [u8; 32] = [0x51; 32];
const K2: [u8; 32] = [0x52; 32];

/// The harness's key file with these vault keys (`(id, secret, seal)`).
fn key_file_with_vault(vault_keys: &[(&str, [u8; 32], bool)]) -> String {
    let mut text = key_file_text(&[(TOKEN_KEY.0, TOKEN_KEY.1, true)]);
    for (id, secret, seal) in vault_keys {
        text += &format!(
            "\n[[vault_key]]\nid = \"{id}\"\nsecret = \"{}\"\nseal = {seal}\n",
            hex::encode(secret)
        );
    }
    text
}

/// A running app whose key file holds these vault keys.
async fn with_vault(backend: Backend, vault_keys: &[(&str, [u8; 32], bool)]) -> TestApp {
    let mut app = spawn_app(backend).await;
    rewrite(&app.key_file(), &key_file_with_vault(vault_keys));
    app.restart().await;
    app
}

fn kept(address: &str, topic: &str) -> proto::OptOutRequest {
    proto::OptOutRequest {
        keep_identifier_for_delivery: true,
        durability: Durability::Durable as i32,
        ..opt_out_request(email(address), scope("acme", Channel::Email, topic, ""))
    }
}

async fn reveal(app: &TestApp, receipt: &str) -> Option<String> {
    app.vault.as_ref().unwrap().reveal(receipt).await.unwrap()
}

/// Everything the store holds, as text: every row of every table (PostgreSQL), or the database
/// files' bytes (SQLite).
async fn store_dump(url: &str) -> String {
    match Store::connect(url).await.unwrap() {
        Store::Postgres(pool) => {
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = 'public'",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            let mut dump = String::new();
            for table in tables {
                let sql =
                    format!("SELECT coalesce(string_agg(t::text, E'\\n'), '') FROM \"{table}\" t");
                let rows: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                dump += &rows;
            }
            dump
        }
        Store::Sqlite(pool) => {
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            let mut dump = String::new();
            for table in tables {
                let columns: Vec<String> =
                    sqlx::query_scalar("SELECT name FROM pragma_table_info($1)")
                        .bind(&table)
                        .fetch_all(&pool)
                        .await
                        .unwrap();
                // quote() prints text as text and a blob as X'…' (hex).
                let row = columns
                    .iter()
                    .map(|c| format!("quote(\"{c}\")"))
                    .collect::<Vec<_>>()
                    .join(" || ',' || ");
                let sql = format!("SELECT {row} FROM \"{table}\"");
                let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .fetch_all(&pool)
                    .await
                    .unwrap();
                dump += &rows.join("\n").to_lowercase();
            }
            dump
        }
    }
}

/// Whether `dump` holds `secret` in clear, as text or as the hex a binary column prints.
fn holds(dump: &str, secret: &str) -> bool {
    let dump = dump.to_lowercase();
    dump.contains(&secret.to_lowercase()) || dump.contains(&hex::encode(secret))
}

async fn a_kept_identifier_opens_only_through_the_vault(backend: Backend) {
    const ADDRESS: &str = "vault-kept-7f3a@example.com";
    let mut app = with_vault(backend, &[("k1", K1, true)]).await;
    let receipt = app.opt_out(kept(ADDRESS, "news")).await;
    assert_eq!(receipt.state, proto::ReceiptState::Durable as i32);
    assert_eq!(
        reveal(&app, &receipt.receipt_id).await.as_deref(),
        Some(ADDRESS)
    );

    // An opt-out that did not ask keeps nothing.
    let plain = app
        .opt_out(opt_out_request(
            email("vault-plain@example.com"),
            scope("acme", Channel::Email, "news", ""),
        ))
        .await;
    assert_eq!(reveal(&app, &plain.receipt_id).await, None);

    let dump = store_dump(&app.settings.store_url).await;
    assert!(
        !holds(&dump, ADDRESS),
        "the store holds the identifier in clear"
    );
    assert!(
        dump.contains(&receipt.receipt_id),
        "the dump reads the records"
    );
    let redis = redis_dump(&app);
    assert!(
        !holds(&redis, ADDRESS),
        "Redis holds the identifier in clear"
    );
}

/// Every value under the app's prefix in Redis, as text.
fn redis_dump(app: &TestApp) -> String {
    let client = redis::Client::open(app.settings.redis.redis_url.as_str()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", app.prefix()))
        .query(&mut conn)
        .unwrap();
    let mut dump = String::new();
    for key in keys {
        let dumped: Option<Vec<u8>> = redis::cmd("DUMP").arg(&key).query(&mut conn).unwrap();
        dump += &String::from_utf8_lossy(&dumped.unwrap_or_default());
    }
    dump
}

async fn a_rotated_key_still_opens_what_the_old_one_sealed(backend: Backend) {
    let mut app = with_vault(backend, &[("k1", K1, true)]).await;
    let old = app.opt_out(kept("rotate-old@example.com", "news")).await;

    rewrite(
        &app.key_file(),
        &key_file_with_vault(&[("k1", K1, false), ("k2", K2, true)]),
    );
    app.restart().await;
    let new = app.opt_out(kept("rotate-new@example.com", "news")).await;
    assert_eq!(
        reveal(&app, &old.receipt_id).await.as_deref(),
        Some("rotate-old@example.com")
    );
    assert_eq!(
        reveal(&app, &new.receipt_id).await.as_deref(),
        Some("rotate-new@example.com")
    );

    // Once the old key is dropped, what it sealed no longer opens; the new key's still does.
    rewrite(&app.key_file(), &key_file_with_vault(&[("k2", K2, true)]));
    app.restart().await;
    assert_eq!(reveal(&app, &old.receipt_id).await, None);
    assert_eq!(
        reveal(&app, &new.receipt_id).await.as_deref(),
        Some("rotate-new@example.com")
    );
}

async fn without_a_vault_key_nothing_raw_is_kept(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let status = app
        .client
        .opt_out(kept("no-vault@example.com", "news"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("vault key"), "{status:?}");
    assert_eq!(app.rows(None).await, 0, "a refused opt-out records nothing");

    // A key that opens but does not seal is not enough either.
    rewrite(&app.key_file(), &key_file_with_vault(&[("k1", K1, false)]));
    app.restart().await;
    let status = app
        .client
        .opt_out(kept("no-vault@example.com", "news"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);

    // A token carries no identifier to keep.
    let token = crate::tokens::issue(
        &mut app.client,
        "no-vault@example.com",
        scope("acme", Channel::Email, "news", ""),
        600,
    )
    .await;
    let mut req = kept("", "news");
    req.recipient = None;
    req.scope = None;
    req.token = token;
    let status = app.client.opt_out(req).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("keep_identifier_for_delivery"));
}

async fn forget_person_erases_what_identifies_and_keeps_the_block(backend: Backend) {
    const ADDRESS: &str = "forget-me-5c1e@example.com";
    const GROUNDS: &str = "called support as Jane Q. Forgetme from +15005550123";
    let mut app = with_vault(backend, &[("k1", K1, true)]).await;
    let news = app.opt_out(kept(ADDRESS, "news")).await;
    let offers = app.opt_out(kept(ADDRESS, "offers")).await;
    app.client
        .opt_in(proto::OptInRequest {
            recipient: Some(email(ADDRESS)),
            scope: Some(scope("acme", Channel::Email, "offers", "")),
            token: String::new(),
            reason: GROUNDS.into(),
        })
        .await
        .expect("an admin opts the person back in with grounds");
    assert!(holds(&store_dump(&app.settings.store_url).await, GROUNDS));

    let erased = app
        .client
        .forget_person(proto::ForgetPersonRequest {
            recipient: Some(email(ADDRESS)),
            tenant: "acme".into(),
        })
        .await
        .expect("an admin may erase a person")
        .into_inner();
    assert_eq!(erased.identifiers_erased, 2);
    assert_eq!(erased.entries_erased, 1, "the opt-in's grounds");

    assert_eq!(reveal(&app, &news.receipt_id).await, None);
    assert_eq!(reveal(&app, &offers.receipt_id).await, None);
    assert!(
        app.is_suppressed(email(ADDRESS), scope("acme", Channel::Email, "news", ""))
            .await,
        "the person stays suppressed"
    );
    let dump = store_dump(&app.settings.store_url).await;
    assert!(
        !holds(&dump, GROUNDS),
        "the grounds are gone from the store"
    );

    // The log still verifies, and the erasure is on it.
    let store = app.store().await;
    let verifier = AuditLog::development().verifier();
    let report = verify_log(&store, verifier.clone(), None).await.unwrap();
    assert_eq!(report.problem, None);
    assert_eq!(report.entries, erased.log_index + 1);
    let history = app
        .client
        .list_suppressions(proto::ListSuppressionsRequest {
            recipient: Some(email(ADDRESS)),
            tenant: "acme".into(),
            token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .records;
    assert_eq!(history.len(), 2, "every record stays");
    assert!(
        history
            .iter()
            .flat_map(|h| &h.events)
            .all(|e| e.detail.is_empty())
    );

    // Repeating it erases nothing more, and the log still verifies.
    let again = app
        .client
        .forget_person(proto::ForgetPersonRequest {
            recipient: Some(email(ADDRESS)),
            tenant: "acme".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((again.identifiers_erased, again.entries_erased), (0, 0));
    let report = verify_log(&store, verifier.clone(), None).await.unwrap();
    assert_eq!(report.problem, None);

    // What remains of an erased entry is still tamper-evident: the erasure entry vouches for it.
    let sql = "UPDATE audit_log SET topic = 'altered' WHERE erased_at IS NOT NULL";
    match &store {
        Store::Postgres(pool) => sqlx::query(sql).execute(pool).await.map(drop),
        Store::Sqlite(pool) => sqlx::query(sql).execute(pool).await.map(drop),
    }
    .unwrap();
    let report = verify_log(&store, verifier, None).await.unwrap();
    let problem = report.problem.expect("an altered erased entry is caught");
    assert!(problem.what.contains("erased"), "{problem:?}");
}

async fn forget_person_needs_an_admin(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut writer = app.client_with_key(Some(WRITE_KEY)).await;
    let status = writer
        .forget_person(proto::ForgetPersonRequest {
            recipient: Some(email("x@example.com")),
            tenant: "acme".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let mut admin = app.client.clone();
    let status = admin
        .forget_person(proto::ForgetPersonRequest {
            recipient: None,
            tenant: "acme".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("recipient"), "{status:?}");
}

on_both_stores!(
    only_a_needs_identifier_destination_gets_the_identifier,
    a_kept_identifier_opens_only_through_the_vault,
    a_rotated_key_still_opens_what_the_old_one_sealed,
    without_a_vault_key_nothing_raw_is_kept,
    forget_person_erases_what_identifies_and_keeps_the_block,
    forget_person_needs_an_admin,
);

in_audit_blocks!(forget_person_erases_what_identifies_and_keeps_the_block,);

/// The logs of a replica at debug level never carry a kept identifier, through an opt-out that
/// keeps it, a listing and an erasure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_identifier_never_reaches_the_logs() {
    const ADDRESS: &str = "vault-log-9d2b@example.com";
    let db = TestDb::new(Backend::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    std::fs::write(&keys, key_file_with_vault(&[("k1", K1, true)])).unwrap();
    let prefix = format!("t{}:", uuid::Uuid::new_v4().simple());
    let config = ReplicaConfig::new(&db.url, redis_url(), &prefix)
        .with("SUPPRESSD_KEYS", keys.to_str().unwrap())
        .with("RUST_LOG", "debug");
    let replica = Replica::start(&config).await;
    let mut client = replica.client().await;
    let receipt = client
        .opt_out(kept(ADDRESS, "news"))
        .await
        .unwrap()
        .into_inner()
        .receipt
        .unwrap();
    assert_eq!(receipt.state, proto::ReceiptState::Durable as i32);
    client
        .list_suppressions(proto::ListSuppressionsRequest {
            recipient: Some(email(ADDRESS)),
            tenant: "acme".into(),
            token: String::new(),
        })
        .await
        .unwrap();
    client
        .forget_person(proto::ForgetPersonRequest {
            recipient: Some(email(ADDRESS)),
            tenant: "acme".into(),
        })
        .await
        .unwrap();
    let log = replica.log();
    assert!(
        log.contains("DEBUG") || log.contains("debug"),
        "the log is at debug level"
    );
    assert!(!log.contains(ADDRESS) && !log.contains("vault-log-9d2b"));
    delete_prefix(redis_url(), &prefix);
}

/// The identifier reaches only a destination registered as `needs_identifier`, and only for an
/// opt-out that kept it; another destination of the same changes never sees it.
async fn only_a_needs_identifier_destination_gets_the_identifier(backend: Backend) {
    use crate::webhooks::{Receiver, fast_delivery, register};
    let mut app = spawn_app_with(backend, suppressd::domain::Clock::System, fast_delivery).await;
    rewrite(&app.key_file(), &key_file_with_vault(&[("k1", K1, true)]));
    app.restart().await;
    let (needs, needs_url) = Receiver::start().await;
    let (plain, plain_url) = Receiver::start().await;
    let registered = app
        .client
        .register_destination(proto::RegisterDestinationRequest {
            needs_identifier: true,
            ..register(&needs_url)
        })
        .await
        .unwrap()
        .into_inner();
    assert!(registered.needs_identifier);
    app.client
        .register_destination(register(&plain_url))
        .await
        .unwrap();

    let kept_receipt = app
        .opt_out(kept("ann@example.com", "news"))
        .await
        .receipt_id;
    let other = app
        .opt_out(opt_out_request(
            email("bob@example.com"),
            scope("acme", Channel::Email, "news", ""),
        ))
        .await
        .receipt_id;
    for receiver in [&needs, &plain] {
        receiver
            .wait_for("both opt-outs delivered", |got| {
                got.iter().filter(|r| r.accepted).count() >= 2
            })
            .await;
    }
    let identifier_of = |receiver: &Receiver, receipt: &str| {
        receiver
            .got()
            .into_iter()
            .find(|r| r.body["data"]["receipt_id"] == receipt)
            .expect("delivered")
            .body["data"]
            .get("identifier")
            .cloned()
    };
    assert_eq!(
        identifier_of(&needs, &kept_receipt),
        Some(serde_json::json!("ann@example.com"))
    );
    assert_eq!(
        identifier_of(&needs, &other),
        None,
        "bob's opt-out kept nothing"
    );
    let plain_text = format!("{:?}", plain.got());
    assert!(
        !plain_text.contains("example.com"),
        "a destination without needs_identifier never sees one: {plain_text}"
    );
}
