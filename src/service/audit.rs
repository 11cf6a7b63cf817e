//! Proofs from the audit log — what `GetReceipt`, `GetCheckpoint` and `GetConsistencyProof` answer —
//! and the whole-log check and export behind `suppressd audit verify|export`.

use super::ServiceError;
use crate::{
    audit::{
        merkle::{self, Hash, Nodes},
        note::{Checkpoint, NoteVerifier},
        verify::{LogCheck, LogReport, ReceiptProof, StoredCheckpoint},
    },
    domain::{ReceiptId, SubjectHash},
    store::{Store, StoreError, audit::AuditRow},
};
use serde::Serialize;

/// Rows read per page when checking the whole log.
const VERIFY_PAGE: usize = 5_000;

/// A signed tree head.
#[derive(Debug, Clone)]
pub(crate) struct CheckpointView {
    pub(crate) note: String,
    pub(crate) size: u64,
    pub(crate) root: Hash,
}

fn corrupt(what: impl Into<String>) -> ServiceError {
    ServiceError::Internal(anyhow::anyhow!("audit log: {}", what.into()))
}

/// Runs a proof computation against the stored subtrees it needs (found by a dry run).
async fn with_nodes<T>(store: &Store, run: impl Fn(&dyn Nodes) -> T) -> Result<T, ServiceError> {
    let keys = merkle::needed_nodes(|n| {
        run(n);
    });
    let found = store.audit_nodes(&keys).await?;
    if let Some(missing) = keys.iter().find(|k| !found.contains_key(k)) {
        return Err(corrupt(format!("subtree {missing:?} is missing")));
    }
    Ok(run(&|level: u32, index: u64| found[&(level, index)]))
}

pub(crate) async fn latest_checkpoint(
    store: &Store,
) -> Result<Option<CheckpointView>, ServiceError> {
    let Some(row) = store.latest_checkpoint().await? else {
        return Ok(None);
    };
    Ok(Some(CheckpointView {
        note: row.note,
        size: row.size as u64,
        root: row
            .root
            .try_into()
            .map_err(|_| corrupt("a checkpoint root is not 32 bytes"))?,
    }))
}

/// The proof that one entry is in the tree of `checkpoint`.
async fn prove(
    store: &Store,
    row: &AuditRow,
    checkpoint: &CheckpointView,
) -> Result<ReceiptProof, ServiceError> {
    let entry = row.entry().map_err(corrupt)?;
    let index = entry.seq;
    let size = checkpoint.size;
    let inclusion_proof = with_nodes(store, |n| merkle::inclusion_proof(n, index, size)).await?;
    Ok(ReceiptProof {
        receipt_id: entry.receipt.clone(),
        log_index: index,
        leaf_hash: entry.leaf_hash(),
        entry: entry.canonical(),
        inclusion_proof,
        checkpoint: checkpoint.note.clone(),
        tree_size: size,
    })
}

/// A durable receipt's audit entry with its inclusion proof against the latest checkpoint.
pub(crate) async fn receipt_proof(
    store: &Store,
    id: ReceiptId,
) -> Result<Option<ReceiptProof>, ServiceError> {
    let Some(row) = store.audit_row_for(&id.to_string(), "opt_out").await? else {
        return Ok(None);
    };
    let Some(checkpoint) = latest_checkpoint(store).await? else {
        return Err(corrupt("an entry exists but no checkpoint"));
    };
    prove(store, &row, &checkpoint).await.map(Some)
}

/// Proof that the tree of `new_size` extends the tree of `old_size`; `new_size` 0 is the latest.
pub(crate) async fn consistency_proof(
    store: &Store,
    old_size: u64,
    new_size: u64,
) -> Result<(u64, u64, Vec<Hash>), ServiceError> {
    let latest = latest_checkpoint(store).await?.map_or(0, |c| c.size);
    let new_size = if new_size == 0 { latest } else { new_size };
    if new_size > latest {
        return Err(crate::domain::Invalid::new(
            "new_size",
            format!("the log has {latest} signed entries"),
        )
        .into());
    }
    if old_size > new_size {
        return Err(crate::domain::Invalid::new("old_size", "must not exceed new_size").into());
    }
    let proof = with_nodes(store, |n| merkle::consistency_proof(n, old_size, new_size)).await?;
    Ok((old_size, new_size, proof))
}

/// The store at `url`, for the offline audit commands (`suppressd audit verify|export`), which read
/// the log where it lies rather than through a server.
pub(crate) async fn open_store(url: &str) -> Result<Store, StoreError> {
    Store::connect(url).await
}

/// Recomputes the whole log from the store and holds every checkpoint (and a trusted one) against it.
pub async fn verify_log(
    store: &Store,
    verifier: NoteVerifier,
    trusted: Option<Checkpoint>,
) -> Result<LogReport, StoreError> {
    let checkpoints = store
        .audit_checkpoints()
        .await?
        .into_iter()
        .map(|c| StoredCheckpoint {
            size: c.size.max(0) as u64,
            root: c.root,
            note: c.note,
        })
        .collect();
    let mut check = LogCheck::new(verifier, checkpoints, trusted);
    let mut after = -1;
    while !check.failed() {
        let rows = store.audit_rows(after, VERIFY_PAGE).await?;
        let Some(last) = rows.last() else { break };
        after = last.seq;
        for row in rows {
            check.row(
                row.seq,
                row.entry(),
                row.stored_hash(0),
                row.erased_at.is_some(),
            );
        }
    }
    let head = store.audit_size().await?;
    Ok(check.finish(head.max(0) as u64))
}

/// One person's entries with proofs, for a regulator: checkable with the public key alone.
#[derive(Debug, Serialize)]
pub struct Export {
    pub(crate) checkpoint: String,
    pub(crate) tree_size: u64,
    pub root_hash: String,
    pub entries: Vec<ExportedEntry>,
}

#[derive(Debug, Serialize)]
pub struct ExportedEntry {
    pub(crate) log_index: u64,
    /// The canonical entry, exactly the bytes that were hashed.
    pub(crate) entry: String,
    pub(crate) leaf_hash: String,
    pub(crate) inclusion_proof: Vec<String>,
}

/// Exports the entries of one subject in one tenant, or of the whole log (`subject: None`).
pub async fn export(
    store: &Store,
    subject: Option<(&SubjectHash, &str)>,
) -> Result<Export, ServiceError> {
    let Some(checkpoint) = latest_checkpoint(store).await? else {
        return Err(ServiceError::NotFound("the audit log is empty".into()));
    };
    let rows = match subject {
        Some((s, tenant)) => store.audit_rows_for_subject(&s.0, tenant).await?,
        None => {
            let mut all = Vec::new();
            loop {
                let page = store
                    .audit_rows(all.last().map_or(-1, |r: &AuditRow| r.seq), VERIFY_PAGE)
                    .await?;
                if page.is_empty() {
                    break;
                }
                all.extend(page);
            }
            all
        }
    };
    let b64 = |h: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, h);
    let mut entries = Vec::with_capacity(rows.len());
    for row in rows
        .iter()
        .filter(|r| (r.seq.max(0) as u64) < checkpoint.size)
    {
        let p = prove(store, row, &checkpoint).await?;
        entries.push(ExportedEntry {
            log_index: p.log_index,
            entry: String::from_utf8(p.entry).map_err(|_| corrupt("an entry is not UTF-8"))?,
            leaf_hash: b64(&p.leaf_hash),
            inclusion_proof: p.inclusion_proof.iter().map(|h| b64(h)).collect(),
        });
    }
    Ok(Export {
        tree_size: checkpoint.size,
        root_hash: b64(&checkpoint.root),
        checkpoint: checkpoint.note,
        entries,
    })
}
