#!/usr/bin/env python3
"""An independent check of suppressd's audit log hashing, with nothing but the standard library.

Reads the JSON of `suppressd audit export` and checks, per RFC 9162: every entry's leaf hash
(SHA-256 of 0x00 || entry), every inclusion proof against the checkpoint's root, and, for a complete
export (`--all`), the root recomputed from all entries. Exits 0 and prints the root when all agree.
The checkpoint's Ed25519 signature is not checked here (the standard library has no Ed25519).
"""
import base64
import hashlib
import json
import sys


def leaf(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def mth(leaves):
    """RFC 9162 §2.1.1: the Merkle tree hash of a list of leaf hashes."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return node(mth(leaves[:k]), mth(leaves[k:]))


def verify_inclusion(index, size, leaf_hash, proof, root):
    """RFC 9162 §2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def main(path):
    export = json.load(open(path))
    body = export["checkpoint"].split("\n")
    size, root = int(body[1]), base64.b64decode(body[2])
    assert size == export["tree_size"], "the checkpoint and the export disagree on the size"
    assert root == base64.b64decode(export["root_hash"]), "the checkpoint and the export disagree on the root"
    leaves = []
    for e in export["entries"]:
        h = leaf(e["entry"].encode("utf-8"))
        assert h == base64.b64decode(e["leaf_hash"]), f"entry {e['log_index']}: leaf hash differs"
        proof = [base64.b64decode(p) for p in e["inclusion_proof"]]
        assert verify_inclusion(e["log_index"], size, h, proof, root), f"entry {e['log_index']}: not included"
        leaves.append((e["log_index"], h))
    if len(leaves) == size:
        leaves.sort()
        assert [i for i, _ in leaves] == list(range(size)), "the export is not the whole log"
        assert mth([h for _, h in leaves]) == root, "the recomputed root differs"
    print(base64.b64encode(root).decode())


if __name__ == "__main__":
    main(sys.argv[1])
