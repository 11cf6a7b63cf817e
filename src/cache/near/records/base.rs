//! A shard's base entries (sorted by `super`), in an anonymous memory mapping in the kernel's
//! small pages rather than on the heap: the allocator's arena uses transparent huge pages, in
//! which a shard's unused room and the transient memory of the load around it stayed resident
//! (the suite at ten million: 44.4 B a record with the base on the heap, 37.8 B in mappings).
//! Room a load leaves is never touched, so never resident, and a replaced base is unmapped at
//! once.

use super::{ENTRY_LEN, Entry, key_of};
use memmap2::{Advice, MmapMut, MmapOptions};

/// Base entries, in an anonymous mapping (none while empty).
#[derive(Default)]
pub(super) struct Base {
    map: Option<MmapMut>,
    len: usize,
}

impl Base {
    /// Room for `entries`, mapped but not touched: only the pages written become resident.
    pub(super) fn with_capacity(entries: usize) -> Base {
        if entries == 0 {
            return Base::default();
        }
        let map = MmapOptions::new()
            .len(entries * ENTRY_LEN)
            .map_anon()
            .expect("mapping memory for the near-cache");
        // Where the kernel puts every large mapping in huge pages, untouched room would be
        // resident too; a kernel without them refuses the advice, which changes nothing.
        let _ = map.advise(Advice::NoHugePage);
        Base {
            map: Some(map),
            len: 0,
        }
    }

    pub(super) fn entries(&self) -> &[Entry] {
        match &self.map {
            Some(map) => &map.as_chunks().0[..self.len],
            None => &[],
        }
    }

    pub(super) fn entries_mut(&mut self) -> &mut [Entry] {
        match &mut self.map {
            Some(map) => &mut map.as_chunks_mut().0[..self.len],
            None => &mut [],
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    fn capacity(&self) -> usize {
        self.map.as_ref().map_or(0, |map| map.len() / ENTRY_LEN)
    }

    pub(super) fn push(&mut self, entry: Entry) {
        if self.len == self.capacity() {
            let mut bigger = Base::with_capacity((self.len * 2).max(64));
            bigger.len = self.len;
            bigger.entries_mut().copy_from_slice(self.entries());
            *self = bigger;
        }
        self.len += 1;
        *self.entries_mut().last_mut().expect("just made room") = entry;
    }

    /// Sorts by key and keeps one entry per key.
    pub(super) fn sort_dedup(&mut self) {
        let entries = self.entries_mut();
        entries.sort_unstable_by(|a, b| key_of(a).cmp(key_of(b)));
        let mut kept = 0;
        for i in 0..entries.len() {
            if kept == 0 || key_of(&entries[i]) != key_of(&entries[kept - 1]) {
                entries[kept] = entries[i];
                kept += 1;
            }
        }
        self.len = kept;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_grows_past_its_room_and_keeps_its_entries() {
        let mut base = Base::with_capacity(3);
        for i in 0..1_000u16 {
            let mut e = [0; ENTRY_LEN];
            e[..2].copy_from_slice(&(999 - i).to_be_bytes());
            base.push(e);
            base.push(e);
        }
        base.sort_dedup();
        assert_eq!(base.len(), 1_000);
        for (i, e) in base.entries().iter().enumerate() {
            assert_eq!(e[..2], (i as u16).to_be_bytes());
        }
    }
}
