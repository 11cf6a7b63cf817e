//! Audit blocks: the entries one commit appends, stored as one row instead of one row each (SPEC §8,
//! issue 24: a row and its receipt index per entry were most of what the log cost the write path).
//!
//! A block's `entries` are, for each entry, its fields as a JSON array in the order of the canonical
//! encoding (that encoding without the field names, which were a third of its bytes; `detail` last
//! and only when present), followed by `\n` (compact JSON never holds a raw newline). Its `hashes`
//! are, for each entry in turn, one byte `n` and then the `n` stored hashes of that entry (its leaf
//! hash, then the hashes of the aligned subtrees it completes, as an `audit_log` row's `hashes`
//! column). Nothing in a block is trusted on reading: each entry's leaf is recomputed from its
//! fields, as for a row, and a block that does not even decode is reported as corrupt.

use super::AuditEntry;
use serde::Serialize;

/// An encoded block: `entries` and `hashes` as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Encoded {
    pub entries: Vec<u8>,
    pub hashes: Vec<u8>,
}

impl Encoded {
    /// Starts an empty block with room for `n` entries.
    pub fn with_capacity(n: usize) -> Encoded {
        Encoded {
            entries: Vec::with_capacity(n * 240),
            hashes: Vec::with_capacity(n * 66),
        }
    }

    /// Adds one entry and its stored hashes (concatenated).
    pub fn push(&mut self, e: &AuditEntry, hashes: &[u8]) {
        let line = Line(
            e.v,
            e.seq,
            e.time,
            &e.actor,
            &e.action,
            &e.tenant,
            &e.subject,
            e.channel,
            &e.topic,
            &e.campaign,
            e.reason,
            e.source,
            &e.receipt,
            &e.trace_id,
            e.expires_at,
            e.detail.as_deref(),
        );
        serde_json::to_writer(&mut self.entries, &line).expect("an audit entry always serializes");
        self.entries.push(b'\n');
        self.hashes.push((hashes.len() / 32) as u8);
        self.hashes.extend_from_slice(hashes);
    }
}

/// An entry's line: its fields in the order of [`AuditEntry`], as a JSON array, which
/// [`AuditEntry`]'s derived `Deserialize` reads back as it reads the canonical object.
#[derive(Serialize)]
struct Line<'a>(
    u8,
    u64,
    i64,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    u8,
    &'a str,
    &'a str,
    u8,
    u8,
    &'a str,
    &'a str,
    Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")] Option<&'a str>,
);

/// The entries of a block whose first entry is `first_seq`, each with its stored hashes; or why the
/// stored bytes are no block (an entry that does not parse, a count of hashes that runs past the
/// end, entries and hash groups that differ in number, an entry out of sequence).
pub(crate) fn decode(
    first_seq: u64,
    entries: &[u8],
    hashes: &[u8],
) -> Result<Vec<(AuditEntry, Vec<u8>)>, String> {
    let mut out = Vec::new();
    let mut groups = hashes;
    let lines = entries.strip_suffix(b"\n").unwrap_or(entries);
    if entries.is_empty() {
        return Err("an empty block".into());
    }
    for (k, line) in lines.split(|&b| b == b'\n').enumerate() {
        let entry: AuditEntry = serde_json::from_slice(line)
            .map_err(|e| format!("entry {k} of the block does not parse: {e}"))?;
        let expected = first_seq + k as u64;
        if entry.seq != expected {
            return Err(format!(
                "entry {k} of the block is numbered {}, not {expected}",
                entry.seq
            ));
        }
        let (&n, rest) = groups
            .split_first()
            .ok_or_else(|| format!("no hashes for entry {k} of the block"))?;
        let len = usize::from(n) * 32;
        if n == 0 || rest.len() < len {
            return Err(format!("entry {k}'s hashes are cut short"));
        }
        out.push((entry, rest[..len].to_vec()));
        groups = &rest[len..];
    }
    if !groups.is_empty() {
        return Err("the block has more hash groups than entries".into());
    }
    Ok(out)
}

/// The stored hashes of entry `seq` of a block whose first entry is `first_seq`, without decoding
/// its entries (proofs need only these).
pub(crate) fn hashes_of(first_seq: u64, hashes: &[u8], seq: u64) -> Option<&[u8]> {
    let mut groups = hashes;
    for _ in first_seq..seq {
        let (&n, rest) = groups.split_first()?;
        groups = rest.get(usize::from(n) * 32..)?;
    }
    let (&n, rest) = groups.split_first()?;
    rest.get(..usize::from(n) * 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, receipt: &str) -> AuditEntry {
        AuditEntry {
            v: AuditEntry::VERSION,
            seq,
            time: 1_700_000_000_000,
            actor: "api".into(),
            action: "opt_out".into(),
            tenant: "acme".into(),
            subject: "ab".repeat(32),
            channel: 1,
            topic: "news".into(),
            campaign: String::new(),
            reason: 1,
            source: 2,
            receipt: receipt.into(),
            trace_id: String::new(),
            expires_at: None,
            detail: None,
        }
    }

    fn block(first: u64, hash_counts: &[usize]) -> (Vec<AuditEntry>, Vec<Vec<u8>>, Encoded) {
        let mut encoded = Encoded::with_capacity(hash_counts.len());
        let (mut entries, mut hashes) = (Vec::new(), Vec::new());
        for (k, &n) in hash_counts.iter().enumerate() {
            let e = entry(first + k as u64, &format!("r{k}"));
            let h: Vec<u8> = (0..n * 32).map(|i| (i + k) as u8).collect();
            encoded.push(&e, &h);
            entries.push(e);
            hashes.push(h);
        }
        (entries, hashes, encoded)
    }

    #[test]
    fn a_block_decodes_to_the_entries_and_hashes_it_was_made_of() {
        let (mut entries, hashes, mut encoded) = block(41, &[1, 2, 1, 4]);
        let with_detail = AuditEntry {
            detail: Some("grounds, with \"quotes\"\nand a newline".into()),
            ..entry(45, "r4")
        };
        encoded.push(&with_detail, &[9; 32]);
        entries.push(with_detail);
        let hashes: Vec<Vec<u8>> = hashes.into_iter().chain([vec![9; 32]]).collect();
        let decoded = decode(41, &encoded.entries, &encoded.hashes).unwrap();
        assert_eq!(
            decoded,
            entries.into_iter().zip(hashes.clone()).collect::<Vec<_>>()
        );
        for (k, h) in hashes.iter().enumerate() {
            assert_eq!(hashes_of(41, &encoded.hashes, 41 + k as u64), Some(&h[..]));
        }
        assert_eq!(hashes_of(41, &encoded.hashes, 46), None);
        // Without the names: a third shorter than the canonical encoding.
        let line = encoded.entries.split(|&b| b == b'\n').next().unwrap();
        assert!(line.len() * 3 < entry(41, "r0").canonical().len() * 2);
    }

    #[test]
    fn a_damaged_block_is_refused_with_the_reason() {
        let (_, _, encoded) = block(7, &[1, 2, 1]);
        let err = |entries: &[u8], hashes: &[u8]| decode(7, entries, hashes).unwrap_err();
        assert!(err(&encoded.entries, &encoded.hashes[..40]).contains("cut short"));
        let mut extra = encoded.hashes.clone();
        extra.push(1);
        extra.extend([0; 32]);
        assert!(err(&encoded.entries, &extra).contains("more hash groups"));
        let mut mangled = encoded.entries.clone();
        mangled[3] = b'{';
        assert!(err(&mangled, &encoded.hashes).contains("does not parse"));
        assert!(
            decode(8, &encoded.entries, &encoded.hashes)
                .unwrap_err()
                .contains("numbered 7")
        );
        assert!(err(b"", b"").contains("empty"));
    }
}
