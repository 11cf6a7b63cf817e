//! RFC 9162 Merkle tree hashing (§2.1): leaf `H(0x00‖entry)`, node `H(0x01‖left‖right)`, the tree
//! head, inclusion and consistency proofs, and their verification. Pure functions.
//!
//! Proof generation reads the hashes of *aligned complete subtrees* (level `l`, index `i` covers
//! leaves `i·2^l … (i+1)·2^l − 1`) through [`Nodes`]; the store keeps exactly those, so a proof costs
//! O(log² n) look-ups rather than reading every leaf. [`needed_nodes`] tells which ones to fetch.
//! Appending, which produces those subtrees, is [`Frontier`]'s (in `frontier`).

mod frontier;

pub use frontier::Frontier;
use sha2::{Digest, Sha256};
use std::{cell::RefCell, collections::BTreeSet};

pub(crate) type Hash = [u8; 32];

pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry);
    h.finalize().into()
}

pub(crate) fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The hash of the empty tree.
pub(crate) fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two smaller than `n` (n ≥ 2).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The hash of an aligned complete subtree: `level` 0 is a leaf hash.
pub(crate) trait Nodes {
    fn node(&self, level: u32, index: u64) -> Hash;
}

impl<F: Fn(u32, u64) -> Hash> Nodes for F {
    fn node(&self, level: u32, index: u64) -> Hash {
        self(level, index)
    }
}

/// MTH(D[start:end]), from aligned complete subtrees.
fn range_hash(nodes: &dyn Nodes, start: u64, end: u64) -> Hash {
    let n = end - start;
    if n == 0 {
        return empty_root();
    }
    if n.is_power_of_two() && start.is_multiple_of(n) {
        return nodes.node(n.trailing_zeros(), start / n);
    }
    let k = split(n);
    node_hash(
        &range_hash(nodes, start, start + k),
        &range_hash(nodes, start + k, end),
    )
}

/// PATH(m, D[start:end]) of RFC 9162 §2.1.3.1.
fn path(nodes: &dyn Nodes, m: u64, start: u64, end: u64, out: &mut Vec<Hash>) {
    let n = end - start;
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < k {
        path(nodes, m, start, start + k, out);
        out.push(range_hash(nodes, start + k, end));
    } else {
        path(nodes, m - k, start + k, end, out);
        out.push(range_hash(nodes, start, start + k));
    }
}

pub(crate) fn inclusion_proof(nodes: &dyn Nodes, index: u64, size: u64) -> Vec<Hash> {
    let mut out = Vec::new();
    if index < size {
        path(nodes, index, 0, size, &mut out);
    }
    out
}

/// SUBPROOF(m, D[start:end], b) of RFC 9162 §2.1.4.1.
fn subproof(nodes: &dyn Nodes, m: u64, start: u64, end: u64, whole: bool, out: &mut Vec<Hash>) {
    let n = end - start;
    if m == n {
        if !whole {
            out.push(range_hash(nodes, start, end));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(nodes, m, start, start + k, whole, out);
        out.push(range_hash(nodes, start + k, end));
    } else {
        subproof(nodes, m - k, start + k, end, false, out);
        out.push(range_hash(nodes, start, start + k));
    }
}

pub(crate) fn consistency_proof(nodes: &dyn Nodes, old_size: u64, new_size: u64) -> Vec<Hash> {
    let mut out = Vec::new();
    if 0 < old_size && old_size < new_size {
        subproof(nodes, old_size, 0, new_size, true, &mut out);
    }
    out
}

/// The aligned subtrees a computation reads, found by running it once against a recorder.
pub(crate) fn needed_nodes(run: impl FnOnce(&dyn Nodes)) -> Vec<(u32, u64)> {
    let seen = RefCell::new(BTreeSet::new());
    let recorder = |level: u32, index: u64| {
        seen.borrow_mut().insert((level, index));
        [0u8; 32]
    };
    run(&recorder);
    seen.into_inner().into_iter().collect()
}

/// RFC 9162 §2.1.3.2.
pub(crate) fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> bool {
    if index >= size {
        return false;
    }
    let (mut fnode, mut snode, mut r) = (index, size - 1, *leaf);
    for p in proof {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && &r == root
}

/// RFC 9162 §2.1.4.2. An empty old tree is consistent with anything (with an empty proof).
pub(crate) fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old_size > new_size {
        return false;
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    if old_size == 0 {
        return proof.is_empty();
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && &fr == old_root && &sr == new_root
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// MTH(D[0:size]) of RFC 9162 §2.1.1 straight from the stored nodes: the reference the
    /// frontier's running root is checked against (the log itself only needs the frontier's).
    fn root(nodes: &dyn Nodes, size: u64) -> Hash {
        range_hash(nodes, 0, size)
    }

    /// The leaves of the certificate-transparency reference tests.
    fn ct_leaves() -> Vec<Vec<u8>> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|h| hex::decode(h).unwrap())
        .collect()
    }

    /// Every aligned complete subtree of a list of leaves, as the store would keep them.
    fn all_nodes(leaves: &[Vec<u8>]) -> HashMap<(u32, u64), Hash> {
        let mut f = Frontier::default();
        leaves
            .iter()
            .flat_map(|l| f.push(leaf_hash(l)))
            .map(|(l, i, h)| ((l, i), h))
            .collect()
    }

    #[test]
    fn roots_match_the_reference_vectors() {
        let expected = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let leaves = ct_leaves();
        let nodes = all_nodes(&leaves);
        let get = |l: u32, i: u64| nodes[&(l, i)];
        let mut frontier = Frontier::default();
        for (n, want) in expected.iter().enumerate() {
            frontier.push(leaf_hash(&leaves[n]));
            let size = n as u64 + 1;
            assert_eq!(hex::encode(root(&get, size)), *want, "size {size}");
            assert_eq!(hex::encode(frontier.root()), *want, "frontier size {size}");
            let restored = Frontier::from_bytes(size, &frontier.to_bytes()).unwrap();
            assert_eq!(restored, frontier);
        }
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn every_inclusion_and_consistency_proof_verifies_and_tampering_fails() {
        let leaves: Vec<Vec<u8>> = (0..33u8).map(|i| vec![i; (i % 5) as usize]).collect();
        let nodes = all_nodes(&leaves);
        let get = |l: u32, i: u64| nodes[&(l, i)];
        for size in 1..=leaves.len() as u64 {
            let r = root(&get, size);
            for index in 0..size {
                let leaf = leaf_hash(&leaves[index as usize]);
                let proof = inclusion_proof(&get, index, size);
                assert!(
                    verify_inclusion(index, size, &leaf, &proof, &r),
                    "{index}/{size}"
                );
                assert!(!verify_inclusion(index, size, &[7; 32], &proof, &r));
                if let Some(first) = proof.first() {
                    let mut bad = proof.clone();
                    bad[0] = node_hash(first, first);
                    assert!(!verify_inclusion(index, size, &leaf, &bad, &r));
                }
            }
            for old in 1..=size {
                let old_root = root(&get, old);
                let proof = consistency_proof(&get, old, size);
                assert!(
                    verify_consistency(old, size, &old_root, &r, &proof),
                    "{old}->{size}"
                );
                if old < size {
                    assert!(!verify_consistency(old, size, &[9; 32], &r, &proof));
                    assert!(!verify_consistency(old, size, &old_root, &[9; 32], &proof));
                }
            }
        }
    }

    #[test]
    fn agrees_with_ct_merkle() {
        use ct_merkle::mem_backed_tree::MemoryBackedTree;
        let mut tree = MemoryBackedTree::<sha2_11::Sha256, Vec<u8>>::new();
        let leaves: Vec<Vec<u8>> = (0..21u8).map(|i| vec![i, i + 1]).collect();
        let nodes = all_nodes(&leaves);
        let get = |l: u32, i: u64| nodes[&(l, i)];
        for (n, leaf) in leaves.iter().enumerate() {
            tree.push(leaf.clone());
            let size = n as u64 + 1;
            assert_eq!(
                tree.root().as_bytes().as_slice(),
                root(&get, size).as_slice()
            );
            let theirs = tree.prove_inclusion(0);
            let ours: Vec<u8> = inclusion_proof(&get, 0, size).concat();
            assert_eq!(theirs.as_bytes(), ours.as_slice());
        }
    }

    #[test]
    fn needed_nodes_are_few_and_sufficient() {
        let leaves: Vec<Vec<u8>> = (0..1000u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let nodes = all_nodes(&leaves);
        let needed = needed_nodes(|n| {
            inclusion_proof(n, 617, 1000);
        });
        assert!(needed.len() <= 30, "{}", needed.len());
        let subset: HashMap<_, _> = needed.iter().map(|k| (*k, nodes[k])).collect();
        let get = |l: u32, i: u64| subset[&(l, i)];
        let full = |l: u32, i: u64| nodes[&(l, i)];
        assert_eq!(
            inclusion_proof(&get, 617, 1000),
            inclusion_proof(&full, 617, 1000)
        );
    }
}
