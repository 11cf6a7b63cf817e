//! The right edge of the tree as the log's appender keeps it between appends: enough to add leaves,
//! name every aligned subtree they complete (for the store to keep) and give the new tree head,
//! without reading the tree back. It owns the frontier's serialized form (the audit head's row); it
//! computes no proofs: those are built from the stored subtrees, in the parent module.

use super::{Hash, empty_root, node_hash};

/// The right edge of a tree being appended to: the roots of its complete subtrees, largest first.
/// Appending returns every aligned subtree it completes, for the store to keep.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// (level, hash), levels strictly decreasing.
    edge: Vec<(u32, Hash)>,
}

impl Frontier {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one leaf hash; returns the completed subtrees as (level, index, hash), the leaf first.
    pub fn push(&mut self, leaf: Hash) -> Vec<(u32, u64, Hash)> {
        let mut completed = vec![(0, self.size, leaf)];
        self.edge.push((0, leaf));
        while self.edge.len() >= 2 {
            let (rl, right) = self.edge[self.edge.len() - 1];
            let (ll, left) = self.edge[self.edge.len() - 2];
            if ll != rl {
                break;
            }
            self.edge.truncate(self.edge.len() - 2);
            let hash = node_hash(&left, &right);
            let level = rl + 1;
            completed.push((level, self.size >> level, hash));
            self.edge.push((level, hash));
        }
        self.size += 1;
        completed
    }

    pub fn root(&self) -> Hash {
        let mut hashes = self.edge.iter().rev().map(|(_, h)| *h);
        let Some(mut r) = hashes.next() else {
            return empty_root();
        };
        for h in hashes {
            r = node_hash(&h, &r);
        }
        r
    }

    /// Serialized as the concatenated hashes (their levels follow from the size's bits).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.edge.iter().flat_map(|(_, h)| *h).collect()
    }

    pub fn from_bytes(size: u64, bytes: &[u8]) -> Option<Frontier> {
        let levels: Vec<u32> = (0..64).rev().filter(|l| size >> l & 1 == 1).collect();
        if bytes.len() != levels.len() * 32 {
            return None;
        }
        let edge = levels
            .into_iter()
            .zip(bytes.chunks(32))
            .map(|(l, h)| (l, h.try_into().expect("32-byte chunks")))
            .collect();
        Some(Frontier { size, edge })
    }
}
