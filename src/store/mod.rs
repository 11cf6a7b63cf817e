//! The durable store: PostgreSQL in production, SQLite as the embedded single-node default. It owns
//! every SQL statement and the migrations, and is the source of truth the cache is rebuilt from.
//!
//! Both engines run the same SQL (integers for times and codes, `$n` placeholders, which SQLite reads
//! as numbered parameters), so one [`Store`] enum dispatches each statement to whichever pool it holds.
//! Batch inserts are the exception: PostgreSQL binds a batch as one array per column (`unnest`),
//! SQLite, which has no arrays, as rows of `VALUES`.
//! A statement the service runs on a timer writes a fixed `LIMIT` into its SQL (a macro, so that
//! it stays `&'static str`) rather than binding it: SQLite prepares a statement again each time a
//! `LIMIT` parameter is bound, even to the same value.
//! Writes are idempotent: a redelivered stream entry hits the primary key or the idempotency index and
//! changes nothing.

use crate::{
    domain::{
        Channel, Invalid, Millis, Notice, Reason, ReceiptId, Scope, Source, SubjectHash,
        Suppression,
    },
    telemetry::metrics::names,
};
use sqlx::{
    PgPool, SqlitePool,
    postgres::PgPoolOptions,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use std::{str::FromStr, time::Duration};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {context}")]
    Db {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("store migrations")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("store URL {0:?} is neither postgres:// nor sqlite://")]
    UnknownScheme(String),
    #[error("store row {receipt}: {problem}")]
    Corrupt { receipt: String, problem: String },
    #[error("creating the directory for the SQLite file")]
    Directory(#[source] std::io::Error),
}

trait Context<T> {
    fn context(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, sqlx::Error> {
    fn context(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| {
            // Every store failure passes here once: the one place that counts them.
            metrics::counter!(names::STORE_ERRORS, "operation" => context).increment(1);
            StoreError::Db { context, source }
        })
    }
}

/// A pool on one of the two engines. Cloning shares the pool.
#[derive(Clone, Debug)]
pub enum Store {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Runs the same expression against whichever pool the store holds; both arms are type-checked.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            Store::Postgres($pool) => $body,
            Store::Sqlite($pool) => $body,
        }
    };
}

/// The columns of a record, as a macro so that statements stay `&'static str` (sqlx refuses dynamic SQL).
macro_rules! columns {
    () => {
        "receipt_id, subject, tenant, channel, topic, campaign, reason, source, actor, \
         received_at, effective_at, expires_at, idempotency_key"
    };
}

// After the macros above, which they use.
#[macro_use]
pub(crate) mod audit;
mod commit;
mod confirmations;
mod consents;
mod controls;
pub(crate) mod destinations;
pub(crate) mod records;
pub(crate) mod uncached;
mod unnest;
mod vault;

pub use commit::{AuditHint, Committed};
use commit::{INSERT_CHUNK, InsertRecords};
pub(crate) use vault::Erased;

#[derive(sqlx::FromRow)]
struct Row {
    receipt_id: String,
    subject: Vec<u8>,
    tenant: String,
    channel: i32,
    topic: String,
    campaign: String,
    reason: i32,
    source: i32,
    actor: String,
    received_at: i64,
    effective_at: i64,
    expires_at: Option<i64>,
    idempotency_key: Option<String>,
}

impl Row {
    fn into_suppression(self) -> Result<Suppression, StoreError> {
        let corrupt = |problem: &str| StoreError::Corrupt {
            receipt: self.receipt_id.clone(),
            problem: problem.to_owned(),
        };
        let code = |v: i32| u8::try_from(v).ok();
        let channel = match self.channel {
            0 => None,
            c => Some(
                code(c)
                    .and_then(Channel::from_code)
                    .ok_or_else(|| corrupt("channel"))?,
            ),
        };
        let scope = Scope::parse(&self.tenant, channel, &self.topic, &self.campaign)
            .map_err(|e: Invalid| corrupt(&e.to_string()))?;
        Ok(Suppression {
            receipt: ReceiptId::parse("receipt_id", &self.receipt_id)
                .map_err(|_| corrupt("receipt_id"))?,
            subject: SubjectHash::from_slice(&self.subject).ok_or_else(|| corrupt("subject"))?,
            scope,
            reason: code(self.reason)
                .and_then(Reason::from_code)
                .ok_or_else(|| corrupt("reason"))?,
            source: code(self.source)
                .and_then(Source::from_code)
                .ok_or_else(|| corrupt("source"))?,
            actor: self.actor,
            received_at: self.received_at,
            effective_at: self.effective_at,
            expires_at: self.expires_at,
            idempotency_key: self.idempotency_key,
            // Read only where it is needed (`sealed_identifier`), never with a record.
            sealed: None,
        })
    }
}

/// Runs the migrations this release knows. Migrations newer than it knows (applied by a newer
/// release rolling out beside it) are ignored rather than refused: a release only adds what the
/// one before ignores (docs/compatibility.md), so an older replica that restarts mid-rollout keeps
/// working against the newer schema.
async fn migrate<'a, A>(mut migrator: sqlx::migrate::Migrator, pool: A) -> Result<(), StoreError>
where
    A: sqlx::Acquire<'a>,
    <A::Connection as std::ops::Deref>::Target: sqlx::migrate::Migrate,
{
    migrator.set_ignore_missing(true);
    migrator.run(pool).await?;
    Ok(())
}

impl Store {
    /// Connects to `postgres://…` or `sqlite://…` (the file and its directory are created if missing;
    /// WAL with full sync, so a commit survives power loss) and runs the migrations.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        let store = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(2))
                .connect(url)
                .await
                .context("connecting to PostgreSQL")?;
            migrate(sqlx::migrate!("./migrations/postgres"), &pool).await?;
            Store::Postgres(pool)
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .context("parsing the SQLite URL")?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(5));
            if let Some(dir) = options
                .get_filename()
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir).map_err(StoreError::Directory)?;
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(options)
                .await
                .context("opening the SQLite file")?;
            migrate(sqlx::migrate!("./migrations/sqlite"), &pool).await?;
            Store::Sqlite(pool)
        } else {
            return Err(StoreError::UnknownScheme(url.to_owned()));
        };
        Ok(store)
    }

    pub(crate) fn engine(&self) -> &'static str {
        match self {
            Store::Postgres(_) => "postgresql",
            Store::Sqlite(_) => "sqlite",
        }
    }

    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(drop))
            .context("ping")
    }

    /// The record behind a receipt, if it has been committed.
    #[tracing::instrument(name = "SELECT suppressions", skip_all, fields(
        otel.kind = "client", db.system = self.engine(), db.operation = "SELECT",
        db.sql.table = "suppressions"))]
    pub(crate) async fn receipt(&self, id: ReceiptId) -> Result<Option<Suppression>, StoreError> {
        let sql = concat!(
            "SELECT ",
            columns!(),
            " FROM suppressions WHERE receipt_id = $1"
        );
        let row: Option<Row> = on_pool!(self, pool => sqlx::query_as(sql)
            .bind(id.to_string())
            .fetch_optional(pool)
            .await)
        .context("reading a receipt")?;
        row.map(Row::into_suppression).transpose()
    }

    /// The committed record that an idempotency key was first used for, within a tenant.
    #[tracing::instrument(name = "SELECT suppressions", skip_all, fields(
        otel.kind = "client", db.system = self.engine(), db.operation = "SELECT",
        db.sql.table = "suppressions"))]
    pub(crate) async fn by_idempotency_key(
        &self,
        tenant: &str,
        key: &str,
    ) -> Result<Option<Suppression>, StoreError> {
        let sql = concat!(
            "SELECT ",
            columns!(),
            " FROM suppressions WHERE tenant = $1 AND idempotency_key = $2"
        );
        let row: Option<Row> = on_pool!(self, pool => sqlx::query_as(sql)
            .bind(tenant)
            .bind(key)
            .fetch_optional(pool)
            .await)
        .context("reading an idempotency key")?;
        row.map(Row::into_suppression).transpose()
    }

    /// Every active record of one subject that covers a notice: the store's answer to a check, used
    /// when the cache cannot answer.
    #[tracing::instrument(name = "SELECT suppressions", skip_all, fields(
        otel.kind = "client", db.system = self.engine(), db.operation = "SELECT",
        db.sql.table = "suppressions"))]
    pub(crate) async fn covering(
        &self,
        subject: &SubjectHash,
        notice: &Notice,
        now: Millis,
    ) -> Result<Vec<Suppression>, StoreError> {
        let sql = concat!(
            "SELECT ",
            columns!(),
            " FROM suppressions \
             WHERE subject = $1 AND tenant = $2 \
               AND (channel = 0 OR channel = $3) \
               AND (topic = '' OR topic = $4) \
               AND (campaign = '' OR campaign = $5) \
               AND ended_at IS NULL AND (expires_at IS NULL OR expires_at > $6)"
        );
        let rows: Vec<Row> = on_pool!(self, pool => sqlx::query_as(sql)
            .bind(subject.0.to_vec())
            .bind(&notice.tenant)
            .bind(i32::from(notice.channel.code()))
            .bind(&notice.topic)
            .bind(&notice.campaign)
            .bind(now)
            .fetch_all(pool)
            .await)
        .context("reading covering records")?;
        rows.into_iter().map(Row::into_suppression).collect()
    }

    /// One page of active records committed at or after `committed_since`, in receipt order, after
    /// `after`: how the cache is rebuilt without holding the whole set in memory or a cursor open
    /// for minutes.
    #[tracing::instrument(name = "SELECT suppressions", skip_all, fields(
        otel.kind = "client", db.system = self.engine(), db.operation = "SELECT",
        db.sql.table = "suppressions"))]
    pub(crate) async fn active_page(
        &self,
        after: Option<ReceiptId>,
        committed_since: Millis,
        limit: usize,
        now: Millis,
    ) -> Result<Vec<Suppression>, StoreError> {
        let sql = concat!(
            "SELECT ",
            columns!(),
            " FROM suppressions \
             WHERE receipt_id > $1 AND committed_at >= $2 \
               AND ended_at IS NULL AND (expires_at IS NULL OR expires_at > $3) \
             ORDER BY receipt_id LIMIT $4"
        );
        let after = after.map(|id| id.to_string()).unwrap_or_default();
        let rows: Vec<Row> = on_pool!(self, pool => sqlx::query_as(sql)
            .bind(after)
            .bind(committed_since)
            .bind(now)
            .bind(limit as i64)
            .fetch_all(pool)
            .await)
        .context("reading a page of active records")?;
        rows.into_iter().map(Row::into_suppression).collect()
    }

    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }
}

// Last, after the macros it uses.
pub(crate) mod imports;
