//! Protobuf's wire format, as much of it as the span encoder needs: varints, fixed-width numbers,
//! strings, and nested messages written in one pass. It knows nothing of OTLP.

/// Protobuf's wire format, writing into a `Vec`. Fields holding their default value are left out,
/// as proto3 encoders do.
pub(super) struct Writer(pub(super) Vec<u8>);

pub(super) const VARINT: u8 = 0;
pub(super) const FIXED64: u8 = 1;
pub(super) const LEN: u8 = 2;
pub(super) const FIXED32: u8 = 5;

/// Writes `v` as a varint into `out`; returns how many bytes it took.
fn put_varint(out: &mut [u8; 10], mut v: u64) -> usize {
    let mut n = 0;
    while v >= 0x80 {
        out[n] = v as u8 | 0x80;
        v >>= 7;
        n += 1;
    }
    out[n] = v as u8;
    n + 1
}

impl Writer {
    pub(super) fn varint(&mut self, v: u64) {
        if v < 0x80 {
            self.0.push(v as u8); // keys and most lengths
            return;
        }
        let mut bytes = [0; 10];
        let n = put_varint(&mut bytes, v);
        self.0.extend_from_slice(&bytes[..n]);
    }

    pub(super) fn key(&mut self, field: u32, wire: u8) {
        self.varint(u64::from(field << 3 | u32::from(wire)));
    }

    pub(super) fn uint(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.key(field, VARINT);
            self.varint(v);
        }
    }

    pub(super) fn fixed64(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.key(field, FIXED64);
            self.0.extend_from_slice(&v.to_le_bytes());
        }
    }

    pub(super) fn fixed32(&mut self, field: u32, v: u32) {
        if v != 0 {
            self.key(field, FIXED32);
            self.0.extend_from_slice(&v.to_le_bytes());
        }
    }

    pub(super) fn bytes(&mut self, field: u32, b: &[u8]) {
        if !b.is_empty() {
            self.key(field, LEN);
            self.varint(b.len() as u64);
            self.0.extend_from_slice(b);
        }
    }

    pub(super) fn string(&mut self, field: u32, s: &str) {
        self.bytes(field, s.as_bytes());
    }

    /// A nested message, written in one pass: its body goes after room for the longest length
    /// prefix, which is then written and the body moved up against it.
    pub(super) fn message(&mut self, field: u32, body: impl FnOnce(&mut Writer)) {
        const ROOM: usize = 5; // the varint of a u32 length
        self.key(field, LEN);
        let at = self.0.len();
        self.0.extend_from_slice(&[0; ROOM]);
        body(self);
        let len = self.0.len() - at - ROOM;
        let mut prefix = [0; 10];
        let n = put_varint(&mut prefix, len as u64);
        self.0[at..at + n].copy_from_slice(&prefix[..n]);
        self.0.copy_within(at + ROOM.., at + n);
        self.0.truncate(self.0.len() - (ROOM - n));
    }
}

/// How many bytes `v` takes as a varint: one per 7 significant bits.
pub(super) fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_lengths_are_what_is_written() {
        let edges = [0, 1, 127, 128, 16_383, 16_384, 1 << 35, u64::MAX];
        for v in edges {
            assert_eq!(varint_len(v), put_varint(&mut [0; 10], v), "{v}");
        }
    }

    #[test]
    fn a_nested_message_longer_than_a_one_byte_length_is_framed_right() {
        // Bodies of 127, 128 and 16,384 bytes: length prefixes of one, two and three bytes.
        for len in [0, 1, 127, 128, 16_383, 16_384, 300_000] {
            let mut w = Writer(Vec::new());
            w.message(1, |w| w.0.extend(std::iter::repeat_n(b'x', len)));
            let mut expected = Vec::new();
            prost::encoding::bytes::encode(1, &vec![b'x'; len], &mut expected);
            assert_eq!(w.0, expected, "body of {len} bytes");
        }
    }
}
