//! Group commits: the worker's batches (the records, their audit entries and a checkpoint, in one
//! round trip planned on the last head, or in one transaction under the head's lock) and the expiry
//! sweep, which logs under the same lock; and inserting records inside a transaction, which imports
//! share.

use super::{Context, Row, Store, StoreError, audit, audit::AuditTx, unnest};
use crate::{
    audit::{Action, AuditEntry, AuditLog},
    domain::{Millis, Suppression, scope::channel_code},
};
use sqlx::{Postgres, QueryBuilder, Sqlite, Transaction};

/// The audit head a writer's last commit left behind, which its next commit may plan on (see
/// [`Store::commit`]). Empty at first: the first commit reads the head under its lock.
#[derive(Debug, Default)]
pub struct AuditHint(Option<audit::Head>);

/// What a group commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// Rows the store did not have before (redeliveries add none).
    pub inserted: u64,
    /// In one round trip planned on the hint; else in a transaction under the audit head's lock.
    pub at_once: bool,
}

/// Rows in one `VALUES` insert on SQLite, which binds at most 32766 parameters per statement (16 a
/// record), and ids in one `IN` list. PostgreSQL binds a batch of records as arrays (`unnest`) and
/// inserts it whole.
pub(super) const INSERT_CHUNK: usize = 500;

/// The most expiries one sweep logs ([`Store::log_expiries`]): a fixed `LIMIT` (see the module
/// doc of `store`).
macro_rules! expiries_per_sweep {
    () => {
        500
    };
}

/// Inserting records inside a transaction, skipping those already present: the worker's commits
/// under the audit head's lock, and imports (`import_batch` set). A trait because each engine's
/// transaction is its own type and each engine inserts a batch its own way.
pub(super) trait InsertRecords {
    /// Inserts `records` tagged with `committed_at` and `import_batch`; returns the receipt ids that
    /// were new.
    async fn insert_records(
        &mut self,
        records: &[Suppression],
        committed_at: Millis,
        import_batch: Option<&str>,
    ) -> Result<Vec<String>, StoreError>;
}

impl InsertRecords for Transaction<'_, Postgres> {
    async fn insert_records(
        &mut self,
        records: &[Suppression],
        committed_at: Millis,
        import_batch: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        unnest::insert_records(&mut **self, records, committed_at, import_batch).await
    }
}

impl InsertRecords for Transaction<'_, Sqlite> {
    async fn insert_records(
        &mut self,
        records: &[Suppression],
        committed_at: Millis,
        import_batch: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let mut inserted = Vec::with_capacity(records.len());
        for chunk in records.chunks(INSERT_CHUNK) {
            let mut insert = QueryBuilder::new(concat!(
                "INSERT INTO suppressions (",
                columns!(),
                ", committed_at, import_batch, sealed_identifier) "
            ));
            insert.push_values(chunk, |mut row, s| {
                row.push_bind(s.receipt.to_string())
                    .push_bind(s.subject.0.to_vec())
                    .push_bind(s.scope.tenant.clone())
                    .push_bind(i32::from(channel_code(s.scope.channel)))
                    .push_bind(s.scope.topic.clone())
                    .push_bind(s.scope.campaign.clone())
                    .push_bind(i32::from(s.reason.code()))
                    .push_bind(i32::from(s.source.code()))
                    .push_bind(s.actor.clone())
                    .push_bind(s.received_at)
                    .push_bind(s.effective_at)
                    .push_bind(s.expires_at)
                    .push_bind(s.idempotency_key.clone())
                    .push_bind(committed_at)
                    .push_bind(import_batch.map(str::to_owned))
                    .push_bind(s.sealed.as_ref().map(|x| x.0.clone()));
            });
            insert.push(" ON CONFLICT DO NOTHING RETURNING receipt_id");
            let new: Vec<String> = insert
                .build_query_scalar()
                .fetch_all(&mut **self)
                .await
                .context("inserting a batch")?;
            inserted.extend(new);
        }
        Ok(inserted)
    }
}

impl Store {
    /// Writes a batch atomically (the worker's group commit): the records, one audit entry for each
    /// new record, the Merkle subtrees those entries complete, and a signed checkpoint of the new
    /// tree head. Records already present (same receipt, or same tenant and idempotency key) are
    /// skipped, with no audit entry, which makes redelivery harmless. `trace_ids` (same order, may be
    /// empty) name the trace of the request behind each record. Returns how many rows were new.
    ///
    /// `hint` is the audit head this writer's last commit left. On PostgreSQL a batch commits in one
    /// round trip planned on it (`audit::commit_at_once`) whenever that is still the head and every
    /// record is new, the common case; otherwise, and on SQLite, in a transaction under the head's
    /// lock. Either way `hint` is left at the head this commit wrote.
    #[tracing::instrument(name = "INSERT suppressions", skip_all, fields(
        otel.kind = "client", db.system = self.engine(), db.operation = "INSERT",
        db.sql.table = "suppressions", suppressd.records = batch.len() as i64))]
    pub async fn commit(
        &self,
        batch: &[Suppression],
        trace_ids: &[String],
        committed_at: Millis,
        log: &AuditLog,
        hint: &mut AuditHint,
    ) -> Result<Committed, StoreError> {
        let locked = |inserted: usize| Committed {
            inserted: inserted as u64,
            at_once: false,
        };
        if batch.is_empty() {
            return Ok(locked(0));
        }
        if let Store::Postgres(pool) = self {
            if log.unaudited() {
                // The baseline of the audit cost: the same one round trip, records only.
                let inserted = unnest::insert_records(pool, batch, committed_at, None).await?;
                return Ok(Committed {
                    inserted: inserted.len() as u64,
                    at_once: true,
                });
            }
            if let Some(head) = hint.0.take()
                && let Some(next) =
                    audit::commit_at_once(pool, batch, trace_ids, committed_at, log, head).await?
            {
                hint.0 = Some(next);
                return Ok(Committed {
                    inserted: batch.len() as u64,
                    at_once: true,
                });
            }
        }
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.context("beginning a batch")?;
            let mut inserted = tx.insert_records(batch, committed_at, None).await?;
            if inserted.len() < batch.len() {
                // A record skipped for its idempotency key alone, which another person's or
                // another scope's record holds (the key was reused where Redis could not see it:
                // another slot group), is a request of its own: kept without the key, so that no
                // acknowledged opt-out is lost. A redelivery (its receipt stored) or a true replay
                // (same person and scope) stays skipped.
                let skipped: Vec<&Suppression> = batch
                    .iter()
                    .filter(|s| !inserted.contains(&s.receipt.to_string()))
                    .collect();
                let mut keyless = Vec::new();
                for s in skipped {
                    let Some(key) = &s.idempotency_key else { continue };
                    let holder: Option<(String, Vec<u8>, i32, String, String)> = sqlx::query_as(
                        "SELECT receipt_id, subject, channel, topic, campaign FROM suppressions \
                         WHERE tenant = $1 AND idempotency_key = $2",
                    )
                    .bind(&s.scope.tenant)
                    .bind(key)
                    .fetch_optional(&mut *tx)
                    .await
                    .context("reading an idempotency key's record")?;
                    let Some((receipt, subject, channel, topic, campaign)) = holder else { continue };
                    let same_request = receipt == s.receipt.to_string()
                        || (subject == s.subject.0.to_vec()
                            && channel == i32::from(channel_code(s.scope.channel))
                            && topic == s.scope.topic
                            && campaign == s.scope.campaign);
                    if !same_request {
                        tracing::warn!(
                            receipt = %s.receipt,
                            "an idempotency key reused for another opt-out; kept without the key"
                        );
                        keyless.push(Suppression { idempotency_key: None, ..s.clone() });
                    }
                }
                if !keyless.is_empty() {
                    inserted.extend(tx.insert_records(&keyless, committed_at, None).await?);
                }
            }
            if inserted.is_empty() || log.unaudited() {
                tx.commit().await.context("committing a batch")?;
                return Ok(locked(inserted.len()));
            }
            let head = tx.lock_head().await?;
            let new: std::collections::HashSet<&str> = inserted.iter().map(String::as_str).collect();
            let traces = trace_ids.iter().map(String::as_str).chain(std::iter::repeat(""));
            let entries = batch
                .iter()
                .zip(traces)
                .filter(|(s, _)| new.contains(s.receipt.to_string().as_str()))
                .enumerate()
                .map(|(k, (s, trace))| AuditEntry::opt_out(head.seq(k), committed_at, s, trace))
                .collect::<Vec<_>>();
            let next = tx
                .append_audit_as(head, entries, log, committed_at, audit::Shape::of_batches(log))
                .await?;
            tx.commit().await.context("committing a batch")?;
            hint.0 = Some(next);
            Ok(locked(inserted.len()))
        })
    }

    /// Records that expired by `now` and have no `expire` audit entry yet get one, up to
    /// `expiries_per_sweep!` per call, in one transaction under the audit head's lock (so two
    /// replicas never log one expiry twice). Returns how many were logged; the worker calls it
    /// between batches.
    pub async fn log_expiries(&self, now: Millis, log: &AuditLog) -> Result<u64, StoreError> {
        let due_sql = concat!(
            "SELECT ",
            columns!(),
            " FROM suppressions s \
             WHERE expires_at IS NOT NULL AND expires_at <= $1 \
               AND (ended_at IS NULL OR ended_at > expires_at) \
               AND NOT EXISTS (SELECT 1 FROM audit_log a \
                               WHERE a.receipt_id = s.receipt_id AND a.action = 'expire') \
             ORDER BY expires_at, receipt_id LIMIT ",
            expiries_per_sweep!()
        );
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.context("beginning an expiry batch")?;
            let head = tx.lock_head().await?;
            let due: Vec<Row> = sqlx::query_as(due_sql)
                .bind(now)
                .fetch_all(&mut *tx)
                .await
                .context("finding expired records")?;
            if due.is_empty() {
                tx.rollback().await.context("ending an expiry batch")?;
                return Ok(0);
            }
            let records = due.into_iter().map(Row::into_suppression).collect::<Result<Vec<_>, _>>()?;
            let entries: Vec<_> = records
                .iter()
                .enumerate()
                .map(|(k, s)| AuditEntry::about(Action::Expire, head.seq(k), now, s, ""))
                .collect();
            tx.append_audit(head, entries, log, now).await?;
            tx.commit().await.context("committing an expiry batch")?;
            Ok(records.len() as u64)
        })
    }
}
