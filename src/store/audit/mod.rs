//! The audit tables: entries (each carrying the Merkle hashes its leaf completes), signed checkpoints,
//! and the head row that serializes appends (locked `FOR UPDATE` on PostgreSQL; SQLite has one writer
//! anyway).
//!
//! Two halves over the same tables: `append` writes them (the head, entries, checkpoints) and is the
//! only code that does; `read` is the [`Store`](super::Store)'s read-only view of them, for proofs
//! and verification. The column list both name lives here, once.

macro_rules! audit_columns {
    () => {
        "seq, recorded_at, actor, action, tenant, subject, channel, topic, campaign, reason, source, \
         receipt_id, trace_id, expires_at, detail, hashes"
    };
}

mod append;
mod read;

pub(super) use append::{AuditTx, Head, Shape, commit_at_once};
pub use read::AuditRow;
