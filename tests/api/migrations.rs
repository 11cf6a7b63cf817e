//! Expand, then contract: a release only adds what the release before it ignores, so the previous
//! release's queries keep working against the current schema while both run during a rollout
//! (docs/compatibility.md). The previous release's SQL is kept as a fixture
//! (`scripts/release-queries`); each statement that prepares against the schema that release
//! migrated to must still prepare against the current one, on both stores.

use crate::helpers::*;
use sqlx::{Executor, SqlSafeStr, migrate::Migrator};
use std::path::Path;
use suppressd::store::Store;

/// The previous release's statements and the last migration it knew.
fn fixture(release: &str) -> (Vec<String>, i64) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("release-{release}"))
        .join("queries.sql");
    let text = std::fs::read_to_string(&path).unwrap();
    let last = text
        .lines()
        .find_map(|l| l.strip_prefix("-- migrations: "))
        .expect("the fixture names its last migration")
        .parse()
        .unwrap();
    let statements = text
        .split("\n-- next\n")
        .skip(1)
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    (statements, last)
}

/// A migrator holding only the migrations up to `last` (what that release shipped: migrations
/// never change once released, which sqlx's checksums enforce).
async fn migrator_through(dir: &str, last: i64) -> (Migrator, tempfile::TempDir) {
    let copy = tempfile::tempdir().unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    for entry in std::fs::read_dir(source).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let version: i64 = name.split('_').next().unwrap().parse().unwrap();
        if version <= last {
            std::fs::copy(&path, copy.path().join(&name)).unwrap();
        }
    }
    (Migrator::new(copy.path()).await.unwrap(), copy)
}

async fn prepares<'e, E: Executor<'e>>(executor: E, sql: &str) -> Result<(), String> {
    executor
        .prepare(sqlx::AssertSqlSafe(sql.to_owned()).into_sql_str())
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

on_both_stores!(the_previous_releases_queries_prepare_on_the_current_schema);

async fn the_previous_releases_queries_prepare_on_the_current_schema(backend: Backend) {
    let (statements, last) = fixture("v0.1.0");
    let db = TestDb::new(backend).await;
    let dir = match backend {
        Backend::Postgres => "migrations/postgres",
        Backend::Sqlite => "migrations/sqlite",
    };
    let (old, _copy) = migrator_through(dir, last).await;

    // The release's own schema: what of its SQL prepares there is what it runs.
    let mut known = Vec::new();
    match backend {
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            old.run(&pool).await.unwrap();
            for sql in &statements {
                if prepares(&pool, sql).await.is_ok() {
                    known.push(sql.as_str());
                }
            }
            pool.close().await;
        }
        Backend::Sqlite => {
            let options = db
                .url
                .parse::<sqlx::sqlite::SqliteConnectOptions>()
                .unwrap();
            let pool = sqlx::SqlitePool::connect_with(options.create_if_missing(true))
                .await
                .unwrap();
            old.run(&pool).await.unwrap();
            for sql in &statements {
                if prepares(&pool, sql).await.is_ok() {
                    known.push(sql.as_str());
                }
            }
            pool.close().await;
        }
    }
    assert!(
        known.len() >= 25,
        "only {} of {} statements prepare on the release's own schema: is the fixture right?",
        known.len(),
        statements.len()
    );

    // The current release migrates the same database forward, as a rollout does.
    drop(
        Store::connect(&db.url)
            .await
            .expect("the current migrations apply"),
    );
    let mut broken = Vec::new();
    match backend {
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            for sql in &known {
                if let Err(e) = prepares(&pool, sql).await {
                    broken.push(format!("{sql}\n  -> {e}"));
                }
            }
        }
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
            for sql in &known {
                if let Err(e) = prepares(&pool, sql).await {
                    broken.push(format!("{sql}\n  -> {e}"));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "the previous release's SQL no longer prepares on the current schema:\n{}",
        broken.join("\n")
    );
}

/// A release that meets migrations newer than it knows (a newer release rolled out beside it)
/// starts anyway, instead of refusing as sqlx does by default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_with_migrations_newer_than_this_release_still_opens() {
    let db = TestDb::new(Backend::Postgres).await;
    drop(Store::connect(&db.url).await.unwrap());
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    // What a next release's migration 9999 leaves behind: a new table, and its row in the ledger.
    pool.execute("CREATE TABLE next_release_things (id BIGINT PRIMARY KEY)")
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, \
         execution_time) VALUES (9999, 'next release', now(), true, '\\x00', 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    Store::connect(&db.url)
        .await
        .expect("a newer schema (expanded only) still opens");
}
