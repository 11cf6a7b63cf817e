//! Checking the log, with nothing but its rows, its checkpoints and the public key. Pure: the caller
//! feeds rows in sequence order (`LogCheck::row`) and gets a [`LogReport`] naming the first bad
//! index; `verify_receipt` checks one saved receipt fully offline.

use super::{
    AuditEntry,
    merkle::{self, Frontier, Hash},
    note::{Checkpoint, NoteVerifier},
};

/// The first thing found wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The first log index that cannot be trusted.
    pub index: u64,
    pub what: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogReport {
    pub entries: u64,
    pub checkpoints: u64,
    pub problem: Option<Problem>,
}

/// A stored checkpoint as the checker sees it: the columns and the signed note.
#[derive(Debug, Clone)]
pub(crate) struct StoredCheckpoint {
    pub(crate) size: u64,
    pub(crate) root: Vec<u8>,
    pub(crate) note: String,
}

/// Recomputes the tree from the rows and holds every checkpoint against it.
pub(crate) struct LogCheck {
    verifier: NoteVerifier,
    frontier: Frontier,
    /// Checkpoints not yet reached, smallest first.
    pending: std::collections::VecDeque<StoredCheckpoint>,
    trusted: Option<Checkpoint>,
    /// The size of the last checkpoint that verified.
    vouched: u64,
    checked: u64,
    problem: Option<Problem>,
    /// Erased entries not yet vouched for by an erasure entry: index → hash of what remains.
    erased: std::collections::BTreeMap<u64, Hash>,
}

impl LogCheck {
    /// `trusted`: a checkpoint kept from earlier (verified with the same key), which the log must
    /// extend; it is what catches a history rewritten and re-signed with the right key.
    pub(crate) fn new(
        verifier: NoteVerifier,
        mut checkpoints: Vec<StoredCheckpoint>,
        trusted: Option<Checkpoint>,
    ) -> LogCheck {
        checkpoints.sort_by_key(|c| c.size);
        LogCheck {
            verifier,
            frontier: Frontier::default(),
            pending: checkpoints.into(),
            trusted,
            vouched: 0,
            checked: 0,
            problem: None,
            erased: Default::default(),
        }
    }

    fn fail(&mut self, index: u64, what: String) {
        if self.problem.is_none() {
            self.problem = Some(Problem { index, what });
        }
    }

    pub(crate) fn failed(&self) -> bool {
        self.problem.is_some()
    }

    /// Feeds the next row: its sequence number, the entry its columns encode (or why they encode
    /// none), the leaf hash stored for it, and whether its free text was erased (then the stored
    /// leaf stands in for the recomputed one, and a later erasure entry must vouch for the rest).
    pub(crate) fn row(
        &mut self,
        seq: i64,
        entry: Result<AuditEntry, String>,
        stored_leaf: Option<Hash>,
        erased: bool,
    ) {
        if self.failed() {
            return;
        }
        let index = self.frontier.size();
        if seq != index as i64 {
            let what = if seq > index as i64 {
                format!("entry {index} is missing (the next row is {seq})")
            } else {
                format!("entry {seq} appears again or out of order")
            };
            return self.fail(index, what);
        }
        let entry = match entry {
            Ok(e) if e.seq == index => e,
            Ok(e) => return self.fail(index, format!("entry {index} says it is entry {}", e.seq)),
            Err(why) => return self.fail(index, format!("entry {index} is malformed: {why}")),
        };
        if entry.action == super::Action::Erasure.as_str()
            && let Err(what) = self.vouch(&entry)
        {
            return self.fail(index, what);
        }
        let leaf = match (erased, stored_leaf) {
            (true, Some(stored)) => {
                self.erased.insert(index, entry.remains_hash());
                stored
            }
            _ => entry.leaf_hash(),
        };
        if stored_leaf != Some(leaf) {
            return self.fail(
                index,
                format!("entry {index} does not match its recorded leaf hash"),
            );
        }
        self.frontier.push(leaf);
        self.check_reached_checkpoints();
    }

    /// Crosses off the erased entries an erasure entry names, if what remains of each is what it
    /// recorded.
    fn vouch(&mut self, entry: &AuditEntry) -> Result<(), String> {
        let erasure = entry
            .detail
            .as_deref()
            .and_then(super::Erasure::parse)
            .ok_or_else(|| format!("erasure entry {} has no readable detail", entry.seq))?;
        for (index, remains) in erasure.entries {
            match self.erased.get(&index) {
                Some(found) if hex::encode(found) == remains => {
                    self.erased.remove(&index);
                }
                Some(_) => {
                    return Err(format!(
                        "entry {index} was changed after its free text was erased"
                    ));
                }
                // Erased by this entry but its text is still there, or not erased at all: the
                // entry matched its leaf, so nothing is lost.
                None => {}
            }
        }
        Ok(())
    }

    fn check_reached_checkpoints(&mut self) {
        let size = self.frontier.size();
        while self.pending.front().is_some_and(|c| c.size <= size) {
            let stored = self.pending.pop_front().expect("checked");
            self.checked += 1;
            let first_unvouched = self.vouched;
            let root = self.frontier.root();
            let verdict = match self.verifier.verify(&stored.note) {
                Err(e) => Err(format!("checkpoint of size {}: {e}", stored.size)),
                Ok(cp) if stored.size != size || cp.size != size => Err(format!(
                    "checkpoint of size {} does not fit the log",
                    stored.size
                )),
                Ok(cp) if cp.root != root || stored.root != root => Err(format!(
                    "checkpoint of size {size} does not match the entries: one of entries \
                     {first_unvouched}..{size} was changed"
                )),
                Ok(_) => Ok(()),
            };
            match verdict {
                Ok(()) => self.vouched = size,
                Err(what) => return self.fail(first_unvouched, what),
            }
        }
        if let Some(t) = &self.trusted
            && t.size == size
            && t.root != self.frontier.root()
        {
            let what = format!(
                "the log does not extend the trusted checkpoint of size {size}: its first {size} \
                 entries were rewritten"
            );
            self.fail(0, what);
        }
    }

    /// Closes the check once every row was fed; `head_size` is what the store says the log holds.
    pub(crate) fn finish(mut self, head_size: u64) -> LogReport {
        let size = self.frontier.size();
        if let Some((&index, _)) = self.erased.iter().next()
            && !self.failed()
        {
            self.fail(
                index,
                format!("entry {index} has no free text and no erasure entry that says why"),
            );
        }
        if let Some(c) = self.pending.front().cloned() {
            self.fail(
                size,
                format!("checkpoint of size {} but the log ends at {size}", c.size),
            );
        }
        if let Some(t) = self.trusted.clone()
            && t.size > size
        {
            self.fail(
                size,
                format!(
                    "the log was cut short: the trusted checkpoint has {} entries",
                    t.size
                ),
            );
        }
        if self.vouched < size {
            self.fail(
                self.vouched,
                format!(
                    "entries {}..{size} are covered by no checkpoint",
                    self.vouched
                ),
            );
        }
        if head_size != size {
            self.fail(
                size.min(head_size),
                format!("the head says {head_size} entries, the rows {size}"),
            );
        }
        LogReport {
            entries: size,
            checkpoints: self.checked,
            problem: self.problem,
        }
    }
}

/// A receipt's proof, as saved by its holder.
#[derive(Debug, Clone)]
pub(crate) struct ReceiptProof {
    pub(crate) receipt_id: String,
    pub(crate) log_index: u64,
    pub(crate) entry: Vec<u8>,
    pub(crate) leaf_hash: Hash,
    pub(crate) inclusion_proof: Vec<Hash>,
    pub(crate) checkpoint: String,
    pub(crate) tree_size: u64,
}

/// Checks a receipt with nothing but the log's public key: the entry is the receipt's, hashes to the
/// leaf, and the leaf is in the tree whose head the key signed. Returns that checkpoint.
pub(crate) fn verify_receipt(
    p: &ReceiptProof,
    verifier: &NoteVerifier,
) -> Result<Checkpoint, String> {
    let cp = verifier.verify(&p.checkpoint).map_err(|e| e.to_string())?;
    if cp.size != p.tree_size {
        return Err(format!(
            "the proof is for size {}, the checkpoint for {}",
            p.tree_size, cp.size
        ));
    }
    let entry: AuditEntry = serde_json::from_slice(&p.entry)
        .map_err(|e| format!("the entry is not an audit entry: {e}"))?;
    if entry.receipt != p.receipt_id || entry.seq != p.log_index {
        return Err("the entry belongs to another receipt or index".into());
    }
    if merkle::leaf_hash(&p.entry) != p.leaf_hash {
        return Err("the entry does not hash to the leaf".into());
    }
    if !merkle::verify_inclusion(
        p.log_index,
        cp.size,
        &p.leaf_hash,
        &p.inclusion_proof,
        &cp.root,
    ) {
        return Err("the inclusion proof does not lead to the signed root".into());
    }
    Ok(cp)
}

/// Checks that a newer signed checkpoint extends an older one.
pub(crate) fn verify_growth(
    old: &Checkpoint,
    new_note: &str,
    proof: &[Hash],
    verifier: &NoteVerifier,
) -> Result<Checkpoint, String> {
    let new = verifier.verify(new_note).map_err(|e| e.to_string())?;
    if !merkle::verify_consistency(old.size, new.size, &old.root, &new.root, proof) {
        return Err(format!(
            "the log of {} entries does not extend the checkpoint of {}: history was rewritten",
            new.size, old.size
        ));
    }
    Ok(new)
}
