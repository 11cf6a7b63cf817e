//! Batch inserts on PostgreSQL: a batch is bound as one array per column and its rows are selected
//! from `UNNEST` of those arrays. The statement text then stays the same whatever the batch size, so
//! each connection prepares and plans it once, and it carries one parameter per column. With rows of
//! `VALUES` every new batch size was a new statement to parse and plan, and each execution set up a
//! parameter expression per column and row (over 2,000 for a worker batch of 64 with its entries).
//! SQLite has no arrays and keeps `VALUES` (see the callers).
//!
//! Each `push_select` binds its columns in the order of the matching column list (`columns!` or
//! `audit_columns!`), which the `INSERT` in front of it names.

use super::{Context, StoreError};
use crate::{
    audit::AuditEntry,
    domain::{Millis, Suppression, scope::channel_code},
};
use sqlx::{PgExecutor, Postgres, QueryBuilder};

/// One column of a batch: `field` of every row, in order.
fn column<R, T>(rows: &[R], field: impl Fn(&R) -> T) -> Vec<T> {
    rows.iter().map(field).collect()
}

/// Records as the columns of `columns!`, one array each.
struct RecordColumns {
    receipt_id: Vec<String>,
    subject: Vec<Vec<u8>>,
    tenant: Vec<String>,
    channel: Vec<i32>,
    topic: Vec<String>,
    campaign: Vec<String>,
    reason: Vec<i32>,
    source: Vec<i32>,
    actor: Vec<String>,
    received_at: Vec<i64>,
    effective_at: Vec<i64>,
    expires_at: Vec<Option<i64>>,
    idempotency_key: Vec<Option<String>>,
    sealed_identifier: Vec<Option<Vec<u8>>>,
}

impl RecordColumns {
    fn new(records: &[Suppression]) -> RecordColumns {
        RecordColumns {
            receipt_id: column(records, |s| s.receipt.to_string()),
            subject: column(records, |s| s.subject.0.to_vec()),
            tenant: column(records, |s| s.scope.tenant.clone()),
            channel: column(records, |s| i32::from(channel_code(s.scope.channel))),
            topic: column(records, |s| s.scope.topic.clone()),
            campaign: column(records, |s| s.scope.campaign.clone()),
            reason: column(records, |s| i32::from(s.reason.code())),
            source: column(records, |s| i32::from(s.source.code())),
            actor: column(records, |s| s.actor.clone()),
            received_at: column(records, |s| s.received_at),
            effective_at: column(records, |s| s.effective_at),
            expires_at: column(records, |s| s.expires_at),
            idempotency_key: column(records, |s| s.idempotency_key.clone()),
            sealed_identifier: column(records, |s| s.sealed.as_ref().map(|x| x.0.clone())),
        }
    }

    /// The rows as a `SELECT` of the columns of `columns!` and `sealed_identifier`, then
    /// `committed_at` and `import_batch`, which are the same for the whole batch and bound once.
    fn push_select(self, q: &mut QueryBuilder<Postgres>, at: Millis, batch: Option<&str>) {
        q.push("SELECT *, ")
            .push_bind(at)
            .push("::bigint, ")
            .push_bind(batch.map(str::to_owned))
            .push("::text FROM UNNEST(");
        q.separated(", ")
            .push_bind(self.receipt_id)
            .push_unseparated("::text[]")
            .push_bind(self.subject)
            .push_unseparated("::bytea[]")
            .push_bind(self.tenant)
            .push_unseparated("::text[]")
            .push_bind(self.channel)
            .push_unseparated("::integer[]")
            .push_bind(self.topic)
            .push_unseparated("::text[]")
            .push_bind(self.campaign)
            .push_unseparated("::text[]")
            .push_bind(self.reason)
            .push_unseparated("::integer[]")
            .push_bind(self.source)
            .push_unseparated("::integer[]")
            .push_bind(self.actor)
            .push_unseparated("::text[]")
            .push_bind(self.received_at)
            .push_unseparated("::bigint[]")
            .push_bind(self.effective_at)
            .push_unseparated("::bigint[]")
            .push_bind(self.expires_at)
            .push_unseparated("::bigint[]")
            .push_bind(self.idempotency_key)
            .push_unseparated("::text[]")
            .push_bind(self.sealed_identifier)
            .push_unseparated("::bytea[]");
        q.push(")");
    }
}

/// The insert of `records` that skips those already present (same receipt, or same tenant and
/// idempotency key) and returns `returning` of each new row; with `only_if`, a condition, nothing
/// unless it holds. Every PostgreSQL path writes records with this one statement shape, the
/// unaudited baseline included, so that the audit log's measured cost is the log's alone.
pub(super) fn push_insert_records(
    q: &mut QueryBuilder<Postgres>,
    records: &[Suppression],
    committed_at: Millis,
    import_batch: Option<&str>,
    only_if: Option<&str>,
    returning: &str,
) {
    q.push(concat!(
        "INSERT INTO suppressions (",
        columns!(),
        ", sealed_identifier, committed_at, import_batch) "
    ));
    RecordColumns::new(records).push_select(q, committed_at, import_batch);
    if let Some(condition) = only_if {
        q.push(" WHERE ").push(condition);
    }
    q.push(" ON CONFLICT DO NOTHING RETURNING ").push(returning);
}

/// Inserts `records` in one statement, skipping those already present, and returns the receipt ids
/// that were new.
pub(super) async fn insert_records<'e>(
    executor: impl PgExecutor<'e>,
    records: &[Suppression],
    committed_at: Millis,
    import_batch: Option<&str>,
) -> Result<Vec<String>, StoreError> {
    let mut q = QueryBuilder::new("");
    push_insert_records(
        &mut q,
        records,
        committed_at,
        import_batch,
        None,
        "receipt_id",
    );
    q.build_query_scalar()
        .fetch_all(executor)
        .await
        .context("inserting a batch")
}

/// Audit entries (each with its Merkle hashes) as the columns of `audit_columns!`, one array each.
pub(super) struct EntryColumns {
    seq: Vec<i64>,
    recorded_at: Vec<i64>,
    actor: Vec<String>,
    action: Vec<String>,
    tenant: Vec<String>,
    subject: Vec<Vec<u8>>,
    channel: Vec<i32>,
    topic: Vec<String>,
    campaign: Vec<String>,
    reason: Vec<i32>,
    source: Vec<i32>,
    receipt_id: Vec<String>,
    trace_id: Vec<String>,
    expires_at: Vec<Option<i64>>,
    detail: Vec<Option<String>>,
    hashes: Vec<Vec<u8>>,
}

impl EntryColumns {
    pub(crate) fn new(entries: &[(AuditEntry, Vec<u8>)]) -> EntryColumns {
        EntryColumns {
            seq: column(entries, |(e, _)| e.seq as i64),
            recorded_at: column(entries, |(e, _)| e.time),
            actor: column(entries, |(e, _)| e.actor.clone()),
            action: column(entries, |(e, _)| e.action.clone()),
            tenant: column(entries, |(e, _)| e.tenant.clone()),
            subject: column(entries, |(e, _)| {
                hex::decode(&e.subject).unwrap_or_default()
            }),
            channel: column(entries, |(e, _)| i32::from(e.channel)),
            topic: column(entries, |(e, _)| e.topic.clone()),
            campaign: column(entries, |(e, _)| e.campaign.clone()),
            reason: column(entries, |(e, _)| i32::from(e.reason)),
            source: column(entries, |(e, _)| i32::from(e.source)),
            receipt_id: column(entries, |(e, _)| e.receipt.clone()),
            trace_id: column(entries, |(e, _)| e.trace_id.clone()),
            expires_at: column(entries, |(e, _)| e.expires_at),
            detail: column(entries, |(e, _)| e.detail.clone()),
            hashes: column(entries, |(_, hashes)| hashes.clone()),
        }
    }

    /// The rows as a `SELECT` of the columns of `audit_columns!`.
    pub(crate) fn push_select(self, q: &mut QueryBuilder<Postgres>) {
        q.push("SELECT * FROM UNNEST(");
        q.separated(", ")
            .push_bind(self.seq)
            .push_unseparated("::bigint[]")
            .push_bind(self.recorded_at)
            .push_unseparated("::bigint[]")
            .push_bind(self.actor)
            .push_unseparated("::text[]")
            .push_bind(self.action)
            .push_unseparated("::text[]")
            .push_bind(self.tenant)
            .push_unseparated("::text[]")
            .push_bind(self.subject)
            .push_unseparated("::bytea[]")
            .push_bind(self.channel)
            .push_unseparated("::integer[]")
            .push_bind(self.topic)
            .push_unseparated("::text[]")
            .push_bind(self.campaign)
            .push_unseparated("::text[]")
            .push_bind(self.reason)
            .push_unseparated("::integer[]")
            .push_bind(self.source)
            .push_unseparated("::integer[]")
            .push_bind(self.receipt_id)
            .push_unseparated("::text[]")
            .push_bind(self.trace_id)
            .push_unseparated("::text[]")
            .push_bind(self.expires_at)
            .push_unseparated("::bigint[]")
            .push_bind(self.detail)
            .push_unseparated("::text[]")
            .push_bind(self.hashes)
            .push_unseparated("::bytea[]");
        q.push(")");
    }
}
