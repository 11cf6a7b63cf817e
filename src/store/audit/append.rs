//! The append path of the audit log: lock (or plan on) the head, extend the Merkle frontier with new
//! entries, sign a checkpoint of the new tree head, and write entries, checkpoint and head together.
//! It owns every write to the audit tables and the head's lock that orders them; it must not read
//! the log beyond the head it appends under (reads are in `read`).
//!
//! An append is one statement on PostgreSQL (entries, checkpoint and head together, as data-modifying
//! CTEs), because round trips are what the audit log costs the write path; SQLite, which has no round
//! trips, takes three plain statements. The worker goes one step further ([`commit_at_once`]): its
//! records and their append in one autocommitted statement, planned on the head it last wrote instead
//! of one read under the lock, and refused whole when that head has moved.

use crate::{
    audit::{
        AuditEntry, AuditLog, block,
        merkle::{Frontier, Hash},
        note::Checkpoint,
    },
    domain::Suppression,
    store::{
        Context, StoreError,
        unnest::{EntryColumns, push_insert_records},
    },
    telemetry::propagation,
};
use sqlx::{Postgres, QueryBuilder, Sqlite, Transaction};

const LOCK_HEAD_PG: &str = "SELECT size, frontier FROM audit_head WHERE id = 1 FOR UPDATE";
const LOCK_HEAD_SQLITE: &str = "SELECT size, frontier FROM audit_head WHERE id = 1";

/// The log's head as locked in a transaction: entries appended now are numbered from `size`.
#[derive(Debug)]
pub(crate) struct Head {
    pub size: i64,
    pub frontier: Vec<u8>,
}

impl Head {
    /// The sequence number of the `k`-th entry appended under this head.
    pub fn seq(&self, k: usize) -> u64 {
        self.size as u64 + k as u64
    }
}
/// What one commit appends: each entry with its hashes (as rows, or as one block), the checkpoint,
/// the new head.
pub(crate) struct Append {
    pub entries: Vec<(AuditEntry, Vec<u8>)>,
    /// The entries as one block (`audit_blocks`) instead of rows (`audit_log`).
    pub block: Option<block::Encoded>,
    pub size: u64,
    pub root: Hash,
    pub frontier: Vec<u8>,
    pub note: String,
    /// The appending span's `traceparent` (empty when traces are off): what a delivery of these
    /// entries links to.
    pub span: String,
}

impl Append {
    /// The head this append leaves behind.
    pub fn head(&self) -> Head {
        Head {
            size: self.size as i64,
            frontier: self.frontier.clone(),
        }
    }
}

/// How an append stores its entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// One `audit_log` row each: every append but the worker's batches, and those too unless
    /// `--audit-blocks`.
    Rows,
    /// One `audit_blocks` row for the whole append (all its entries must share one time, which a
    /// block is found by).
    Block,
}

impl Shape {
    /// How the worker's batches of opt-outs are stored under `log`.
    pub fn of_batches(log: &AuditLog) -> Shape {
        if log.blocks {
            Shape::Block
        } else {
            Shape::Rows
        }
    }
}

/// Extends the tree stored in `head` with `entries` and signs a checkpoint of the new tree head
/// with `log`'s key.
fn plan_append(
    head: &Head,
    entries: impl IntoIterator<Item = AuditEntry>,
    log: &AuditLog,
    shape: Shape,
) -> Result<Append, StoreError> {
    let corrupt = || StoreError::Corrupt {
        receipt: "audit_head".into(),
        problem: "the frontier does not match the size".into(),
    };
    let size = u64::try_from(head.size).map_err(|_| corrupt())?;
    let mut frontier = Frontier::from_bytes(size, &head.frontier).ok_or_else(corrupt)?;
    let entries = entries.into_iter();
    let mut block =
        (shape == Shape::Block).then(|| block::Encoded::with_capacity(entries.size_hint().0));
    let entries: Vec<_> = entries
        .map(|entry| {
            let hashes: Vec<u8> = frontier
                .push(entry.leaf_hash())
                .into_iter()
                .flat_map(|(_, _, h)| h)
                .collect();
            if let Some(block) = &mut block {
                block.push(&entry, &hashes);
            }
            (entry, hashes)
        })
        .collect();
    let (size, root) = (frontier.size(), frontier.root());
    Ok(Append {
        block: block.filter(|_| !entries.is_empty()),
        entries,
        size,
        root,
        frontier: frontier.to_bytes(),
        note: log.signer.sign(&Checkpoint {
            origin: log.origin.clone(),
            size,
            root,
        }),
        span: propagation::current_carrier()
            .and_then(|mut c| c.remove("traceparent"))
            .unwrap_or_default(),
    })
}

/// The audit log's part of a store transaction: lock the head, append entries under it.
pub(crate) trait AuditTx {
    /// Locks the head until the transaction ends, so appends from several replicas never interleave.
    async fn lock_head(&mut self) -> Result<Head, StoreError>;

    async fn write_audit(&mut self, append: &Append, now: i64) -> Result<(), StoreError>;

    /// Appends `entries` (numbered from `head`), their Merkle hashes, and a checkpoint of the new
    /// tree head signed with `log`'s key.
    async fn append_audit(
        &mut self,
        head: Head,
        entries: impl IntoIterator<Item = AuditEntry>,
        log: &AuditLog,
        now: i64,
    ) -> Result<Head, StoreError> {
        self.append_audit_as(head, entries, log, now, Shape::Rows)
            .await
    }

    /// [`append_audit`](Self::append_audit), its entries stored in `shape`.
    async fn append_audit_as(
        &mut self,
        head: Head,
        entries: impl IntoIterator<Item = AuditEntry>,
        log: &AuditLog,
        now: i64,
        shape: Shape,
    ) -> Result<Head, StoreError> {
        let append = plan_append(&head, entries, log, shape)?;
        self.write_audit(&append, now).await?;
        Ok(append.head())
    }
}

impl AuditTx for Transaction<'_, Postgres> {
    async fn lock_head(&mut self) -> Result<Head, StoreError> {
        let (size, frontier) = sqlx::query_as(LOCK_HEAD_PG)
            .fetch_one(&mut **self)
            .await
            .context("locking the audit head")?;
        Ok(Head { size, frontier })
    }

    async fn write_audit(&mut self, a: &Append, now: i64) -> Result<(), StoreError> {
        let mut q = QueryBuilder::new("WITH ");
        push_append(&mut q, a, now, None);
        q.push(" SELECT 1");
        q.build()
            .execute(&mut **self)
            .await
            .context("appending to the audit log")?;
        Ok(())
    }
}

/// The data-modifying CTEs of an append on PostgreSQL, named `entries`, `checkpoint` and `head`
/// (`head` yields a row only if the head still had the size the append was planned from); with
/// `only_if`, a condition, none of them writes anything unless it holds.
fn push_append(q: &mut QueryBuilder<Postgres>, a: &Append, now: i64, only_if: Option<&str>) {
    let from = a.entries.first().map_or(a.size, |(e, _)| e.seq) as i64;
    let gate = only_if.map(|c| format!(" WHERE {c}")).unwrap_or_default();
    match &a.block {
        None => {
            q.push(concat!(
                "entries AS (INSERT INTO audit_log (",
                audit_columns!(),
                ") "
            ));
            EntryColumns::new(&a.entries).push_select(q);
        }
        Some(block) => {
            q.push(
                "entries AS (INSERT INTO audit_blocks \
                 (last_seq, first_seq, committed_at, entries, hashes) SELECT ",
            )
            .push_bind(a.size as i64 - 1)
            .push(", ")
            .push_bind(from)
            .push(", ")
            .push_bind(now)
            .push(", ")
            .push_bind(block.entries.clone())
            .push(", ")
            .push_bind(block.hashes.clone());
        }
    }
    q.push(&gate)
        .push(
            "), checkpoint AS (INSERT INTO audit_checkpoints (size, root, note, created_at, span) \
             SELECT ",
        )
        .push_bind(a.size as i64)
        .push(", ")
        .push_bind(a.root.to_vec())
        .push(", ")
        .push_bind(a.note.clone())
        .push(", ")
        .push_bind(now)
        .push(", ")
        .push_bind(a.span.clone())
        .push(&gate)
        .push("), head AS (UPDATE audit_head SET size = ")
        .push_bind(a.size as i64)
        .push(", frontier = ")
        .push_bind(a.frontier.clone())
        .push(" WHERE id = 1 AND size = ")
        .push_bind(from);
    if let Some(condition) = only_if {
        q.push(" AND ").push(condition);
    }
    q.push(" RETURNING 1)");
}

/// The worker's commit of new opt-outs on PostgreSQL in one round trip: the records, their audit
/// entries, the checkpoint and the head in one autocommitted statement, planned on the head this
/// worker last wrote (`head`) instead of one read under the head's lock. It holds only if every
/// record is new and the head has not moved; otherwise the statement writes nothing, and this
/// returns `None` for the caller to commit under the lock. The statement first locks the head and
/// checks it, so the usual refusal passes quietly; a record already stored makes it raise
/// (`suppressd_refuse`) and roll back whole. Returns the head it leaves behind.
pub(crate) async fn commit_at_once(
    pool: &sqlx::PgPool,
    batch: &[Suppression],
    trace_ids: &[String],
    committed_at: i64,
    log: &AuditLog,
    head: Head,
) -> Result<Option<Head>, StoreError> {
    let traces = trace_ids
        .iter()
        .map(String::as_str)
        .chain(std::iter::repeat(""));
    let entries = batch
        .iter()
        .zip(traces)
        .enumerate()
        .map(|(k, (s, trace))| AuditEntry::opt_out(head.seq(k), committed_at, s, trace));
    let append = plan_append(&head, entries, log, Shape::of_batches(log))?;
    // `planned`: the head, locked until the statement ends, is the one planned on. Everything
    // below writes only if it holds, so the usual refusal (another replica's worker moved the
    // head) changes nothing and raises nothing. A record already stored (a redelivery, after a
    // crash) is found only by the insert: then `suppressd_refuse` rolls the statement back.
    let mut q =
        QueryBuilder::new("WITH planned AS (SELECT 1 FROM audit_head WHERE id = 1 AND size = ");
    q.push_bind(head.size).push(" FOR UPDATE), new AS (");
    let planned = "EXISTS (SELECT 1 FROM planned)";
    push_insert_records(&mut q, batch, committed_at, None, Some(planned), "1");
    q.push("), ");
    push_append(&mut q, &append, committed_at, Some(planned));
    q.push(" SELECT CASE WHEN NOT ")
        .push(planned)
        .push(" THEN 0 WHEN (SELECT count(*) FROM new) <> ")
        .push_bind(batch.len() as i64)
        .push(
            " OR (SELECT count(*) FROM head) <> 1 \
             THEN suppressd_refuse('a record was already stored, or the audit head moved') \
             ELSE 1 END",
        );
    match q.build_query_scalar::<i32>().fetch_one(pool).await {
        Ok(1) => Ok(Some(append.head())),
        Ok(_) => Ok(None),
        Err(sqlx::Error::Database(e))
            if matches!(e.code().as_deref(), Some(REFUSED | TAKEN | DEADLOCK)) =>
        {
            Ok(None)
        }
        Err(e) => Err(e).context("committing a batch with its audit entries"),
    }
}

/// `suppressd_refuse`'s error code (migration 0006); PostgreSQL's for a unique key already taken; and
/// for a deadlock victim (a writer under the head's lock waiting on this statement's entries while it
/// waits on the head: not seen, as the head is updated before the entries are written, but the
/// statement was rolled back whole either way).
const REFUSED: &str = "SDR01";
const TAKEN: &str = "23505";
const DEADLOCK: &str = "40P01";

impl AuditTx for Transaction<'_, Sqlite> {
    async fn lock_head(&mut self) -> Result<Head, StoreError> {
        let (size, frontier) = sqlx::query_as(LOCK_HEAD_SQLITE)
            .fetch_one(&mut **self)
            .await
            .context("reading the audit head")?;
        Ok(Head { size, frontier })
    }

    async fn write_audit(&mut self, a: &Append, now: i64) -> Result<(), StoreError> {
        if let Some(block) = &a.block {
            let first = a.entries.first().map_or(a.size, |(e, _)| e.seq);
            sqlx::query(
                "INSERT INTO audit_blocks (last_seq, first_seq, committed_at, entries, hashes) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(a.size as i64 - 1)
            .bind(first as i64)
            .bind(now)
            .bind(&block.entries)
            .bind(&block.hashes)
            .execute(&mut **self)
            .await
            .context("appending an audit block")?;
        }
        // SQLite binds at most 32766 parameters per statement: 16 per entry.
        let rows = if a.block.is_some() {
            &[][..]
        } else {
            &a.entries[..]
        };
        for chunk in rows.chunks(1_000) {
            let mut q =
                QueryBuilder::new(concat!("INSERT INTO audit_log (", audit_columns!(), ") "));
            q.push_values(chunk, |mut row, (e, hashes)| {
                row.push_bind(e.seq as i64)
                    .push_bind(e.time)
                    .push_bind(e.actor.clone())
                    .push_bind(e.action.clone())
                    .push_bind(e.tenant.clone())
                    .push_bind(hex::decode(&e.subject).unwrap_or_default())
                    .push_bind(i32::from(e.channel))
                    .push_bind(e.topic.clone())
                    .push_bind(e.campaign.clone())
                    .push_bind(i32::from(e.reason))
                    .push_bind(i32::from(e.source))
                    .push_bind(e.receipt.clone())
                    .push_bind(e.trace_id.clone())
                    .push_bind(e.expires_at)
                    .push_bind(e.detail.clone())
                    .push_bind(hashes.clone());
            });
            q.build()
                .execute(&mut **self)
                .await
                .context("appending audit entries")?;
        }
        sqlx::query(
            "INSERT INTO audit_checkpoints (size, root, note, created_at, span) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(a.size as i64)
        .bind(a.root.to_vec())
        .bind(&a.note)
        .bind(now)
        .bind(&a.span)
        .execute(&mut **self)
        .await
        .context("storing a checkpoint")?;
        sqlx::query("UPDATE audit_head SET size = $1, frontier = $2 WHERE id = 1")
            .bind(a.size as i64)
            .bind(&a.frontier)
            .execute(&mut **self)
            .await
            .context("advancing the audit head")?;
        Ok(())
    }
}
