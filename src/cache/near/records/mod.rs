//! One shard of the near-cache's records, stored densely: a hash map of boxed values took 136 B per
//! record per replica (the suite, at a million), where the field and the value are 37.
//!
//! - **A sorted base.** Records whose value has the usual length ([`VALUE_LEN`]) sit in one vector,
//!   field and value inline (36 B, no pointer, no allocation of their own): of the field, only the
//!   bytes after the first, since the first picks the shard and is the same for all of its records.
//!   The base is sorted by those bytes, with a directory that maps their leading bits to a run of
//!   about four entries: a look-up reads the directory, then one short
//!   run, as a hash table reads a control group, then a slot. Fields are keyed hashes (SHA-256 of
//!   the keyed subject and a scope), uniform and out of anyone's aim, so runs stay short.
//! - **Changes beside it.** What the change feed writes goes to a small hash map, checked first,
//!   where a removal is a tombstone; after as many writes as a thirty-second of the base (at
//!   least 1,024) it is merged into a new base. Values of another length (backdated times make
//!   them longer) stay in that map.
//!
//! - **In a mapping of its own** ([`base`]): in the kernel's small pages, not on the heap.
//!
//! Hand-written rather than a crate: what makes it small is the fixed-size value inline and the
//! directory over uniform keys, which a general map cannot assume. Its tests hold it to a
//! `HashMap` under the same random writes.

use crate::cache::layout::{FIELD_LEN, Field, VALUE_LEN};
use base::Base;
use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
};

mod base;

/// The changes beside the base, by field.
type Changes = HashMap<Field, Option<Box<[u8]>>, BuildHasherDefault<FieldHasher>>;

/// Base entries per directory slot, on average.
const PER_SLOT: usize = 4;
/// Changes since the last merge that always fit beside the base before a merge.
const MIN_MERGE: usize = 1_024;

/// A field without its first byte (the shard's): what the base stores and orders by.
type Key = [u8; KEY_LEN];
const KEY_LEN: usize = FIELD_LEN - 1;

/// A record of the base: its key, then its value, inline.
type Entry = [u8; ENTRY_LEN];
const ENTRY_LEN: usize = KEY_LEN + VALUE_LEN;

/// The base entries a field is among if the base holds it (from the directory); none by default.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Run<'a>(&'a [Entry]);

impl Run<'_> {
    /// Reads a byte of every cache line the run spans, and returns one made of them all: the loads
    /// of several runs, one after another with nothing between them that waits on their bytes,
    /// are fetched from memory together (the caller passes the result to `black_box`, so that
    /// they are made). A run of four entries spans three or four lines; reading only its first
    /// and last entry left the lines between to be fetched by the binary search, one look-up
    /// after another (8 look-ups over 256 shards of a million records: about 850 ns a check
    /// that way, 600 ns this way; at ten million, 1,190 and 1,080 ns).
    pub(super) fn touch(&self) -> u8 {
        let bytes = self.0.as_flattened();
        let last = bytes.last().copied().unwrap_or(0);
        bytes.iter().step_by(64).fold(last, |t, &b| t ^ b)
    }
}

/// The records of one shard.
#[derive(Default)]
pub(super) struct Records {
    /// Records with a value of [`VALUE_LEN`] bytes, ordered by key.
    base: Base,
    /// `directory[s]..directory[s + 1]` are the base entries whose key's [`prefix`] has `s` as its
    /// leading bits (`prefix >> shift`).
    directory: Vec<u32>,
    shift: u32,
    /// Changes not yet merged (`None`: removed), and values of another length.
    changes: Changes,
    /// Writes since the last merge.
    writes: usize,
}

impl Records {
    /// The value of `field`, if the shard holds one: a look-up of one field alone, for the tests.
    /// Every field of a shard has the same first byte (the shard's).
    #[cfg(test)]
    fn get(&self, field: &Field) -> Option<&[u8]> {
        self.get_in(field, self.locate(field))
    }

    /// The first step of a look-up: the run of base entries that holds `field` if the base does,
    /// as the directory says. A look-up is `locate`, then [`get_in`](Self::get_in); a check takes
    /// the steps for all its fields together (`copy`), so that the memory each step reads is
    /// fetched for all of them at once rather than one field after another.
    pub(super) fn locate(&self, field: &Field) -> Run<'_> {
        let at = slot(prefix(key(field)), self.shift);
        match self.directory.get(at..at + 2) {
            Some(&[from, to]) => Run(&self.base.entries()[from as usize..to as usize]),
            _ => Run::default(),
        }
    }

    /// The last step of a look-up: the value of `field`, from the changes beside the base, else
    /// from `run`, which [`locate`](Self::locate) found for `field` in these records.
    pub(super) fn get_in<'a>(&'a self, field: &Field, run: Run<'a>) -> Option<&'a [u8]> {
        if !self.changes.is_empty()
            && let Some(change) = self.changes.get(field)
        {
            return change.as_deref();
        }
        let key = key(field);
        let at = run.0.binary_search_by(|e| key_of(e).cmp(key)).ok()?;
        Some(&run.0[at][KEY_LEN..])
    }

    pub(super) fn insert(&mut self, field: Field, value: Box<[u8]>) {
        self.changes.insert(field, Some(value));
        self.wrote();
    }

    pub(super) fn remove(&mut self, field: &Field) {
        self.changes.insert(*field, None);
        self.wrote();
    }

    pub(super) fn clear(&mut self) {
        *self = Records::default();
    }

    fn wrote(&mut self) {
        self.writes += 1;
        if self.writes >= MIN_MERGE.max(self.base.len() / 32) {
            self.merge();
        }
    }

    /// A new base from the old one and the changes; values of another length stay beside it.
    fn merge(&mut self) {
        let mut changes: Vec<(Field, Option<Box<[u8]>>)> = self.changes.drain().collect();
        changes.sort_unstable_by(|a, b| key(&a.0).cmp(key(&b.0)));
        let old = std::mem::take(&mut self.base);
        let mut base = Base::with_capacity(old.len() + changes.len());
        let mut old = old.entries().iter().peekable();
        for (field, value) in changes {
            let key = key(&field);
            while let Some(e) = old.next_if(|e| key_of(e) < key) {
                base.push(*e);
            }
            old.next_if(|e| key_of(e) == key);
            match value.as_deref().map(<[u8; VALUE_LEN]>::try_from) {
                Some(Ok(value)) => base.push(entry(key, &value)),
                Some(Err(_)) => {
                    self.changes.insert(field, value);
                }
                None => {}
            }
        }
        for e in old {
            base.push(*e);
        }
        self.index(base);
        self.writes = 0;
    }

    /// Installs `base` (sorted) and builds its directory.
    fn index(&mut self, base: Base) {
        let bits = (base.len() / PER_SLOT).max(1).ilog2();
        let slots = 1usize << bits;
        self.shift = 64 - bits;
        let mut directory = Vec::with_capacity(slots + 1);
        for (i, e) in base.entries().iter().enumerate() {
            let s = slot(prefix(key_of(e)), self.shift);
            while directory.len() <= s {
                directory.push(i as u32);
            }
        }
        directory.resize(slots + 1, base.len() as u32);
        self.directory = directory;
        self.base = base;
    }
}

/// Builds a shard's records from a full copy, then sorts them once.
#[derive(Default)]
pub(super) struct Loading {
    base: Base,
    others: Changes,
}

impl Loading {
    /// Room for about `records` records.
    pub(super) fn new(records: usize) -> Loading {
        Loading {
            base: Base::with_capacity(records),
            others: Changes::default(),
        }
    }

    pub(super) fn push(&mut self, field: Field, value: &[u8]) {
        match <[u8; VALUE_LEN]>::try_from(value) {
            Ok(value) => {
                if !self.others.is_empty() {
                    self.others.remove(&field);
                }
                self.base.push(entry(key(&field), &value));
            }
            Err(_) => {
                self.others.insert(field, Some(value.into()));
            }
        }
    }

    pub(super) fn finish(mut self) -> Records {
        // In place: a stable sort would take half as much memory again. A field appears once in
        // a copy (it lives in one bucket); were one repeated, either value says the same person
        // opted out, and one of them is kept.
        self.base.sort_dedup();
        let mut records = Records {
            changes: self.others,
            ..Records::default()
        };
        records.index(self.base);
        records
    }
}

/// Hashes a field by taking its last eight bytes as they are: fields are keyed hashes, uniform and
/// out of anyone's aim (see the module doc), so hashing them again (SipHash, the map's default)
/// only spends time; the first byte is the shard's, the same for every field of a map.
#[derive(Default)]
struct FieldHasher(u64);

impl Hasher for FieldHasher {
    fn write(&mut self, bytes: &[u8]) {
        // A field hashes as its length, then its bytes (`Hash for [u8; N]`); only the bytes count.
        if let Some(tail) = bytes.last_chunk::<8>() {
            self.0 = u64::from_ne_bytes(*tail);
        }
    }

    fn write_usize(&mut self, _length: usize) {}

    fn finish(&self) -> u64 {
        self.0
    }
}

/// An entry of `key` and `value`.
fn entry(key: &Key, value: &[u8; VALUE_LEN]) -> Entry {
    let mut e = [0; ENTRY_LEN];
    e[..KEY_LEN].copy_from_slice(key);
    e[KEY_LEN..].copy_from_slice(value);
    e
}

/// An entry's key.
fn key_of(entry: &Entry) -> &Key {
    entry[..KEY_LEN]
        .try_into()
        .expect("an entry starts with its key")
}

/// The field's bytes after the first.
fn key(field: &Field) -> &Key {
    field[1..]
        .try_into()
        .expect("a field is one byte longer than a key")
}

/// A key's first eight bytes as a number: what the directory reads.
fn prefix(key: &Key) -> u64 {
    u64::from_be_bytes(key[..8].try_into().expect("eight bytes"))
}

fn slot(prefix: u64, shift: u32) -> usize {
    prefix.checked_shr(shift).unwrap_or(0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    fn value(rng: &mut StdRng) -> Box<[u8]> {
        // Mostly the usual length; now and then a longer one, as a backdated record's.
        let len = if rng.random_bool(0.1) {
            VALUE_LEN + rng.random_range(1..8)
        } else {
            VALUE_LEN
        };
        (0..len).map(|_| rng.random()).collect()
    }

    /// Fields of one shard share their first byte, as the near-cache's shards do.
    fn field(rng: &mut StdRng, keys: u32) -> Field {
        let mut f = [7; 12];
        let k = rng.random_range(0..keys);
        let mut mix = StdRng::seed_from_u64(u64::from(k));
        mix.fill(&mut f[1..]);
        f
    }

    fn agree(records: &Records, model: &HashMap<Field, Box<[u8]>>, rng: &mut StdRng, keys: u32) {
        for (f, v) in model {
            assert_eq!(records.get(f), Some(&v[..]));
        }
        for _ in 0..200 {
            let f = field(rng, keys * 2);
            assert_eq!(records.get(&f), model.get(&f).map(|v| &v[..]));
        }
    }

    #[test]
    fn answers_as_a_hash_map_through_loads_writes_and_merges() {
        for (seed, keys) in [(1, 10), (2, 3_000), (3, 40_000)] {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut model = HashMap::new();
            for _ in 0..keys {
                model.insert(field(&mut rng, keys), value(&mut rng));
            }
            // A copy holds each field once; fields repeat only in the writes that follow.
            let mut loading = Loading::new(model.len() / 2);
            for (f, v) in &model {
                loading.push(*f, v);
            }
            let mut records = loading.finish();
            agree(&records, &model, &mut rng, keys);
            // Enough writes for several merges, with removals of present and absent fields.
            for i in 0..(keys as usize * 3).max(5_000) {
                let f = field(&mut rng, keys * 2);
                if rng.random_bool(0.3) {
                    records.remove(&f);
                    model.remove(&f);
                } else {
                    let v = value(&mut rng);
                    records.insert(f, v.clone());
                    model.insert(f, v);
                }
                if i % 997 == 0 {
                    agree(&records, &model, &mut rng, keys);
                }
            }
            agree(&records, &model, &mut rng, keys);
            records.merge();
            agree(&records, &model, &mut rng, keys);
        }
    }

    #[test]
    fn an_empty_or_cleared_shard_holds_nothing() {
        let mut rng = StdRng::seed_from_u64(9);
        let mut records = Records::default();
        assert_eq!(records.get(&field(&mut rng, 5)), None);
        let f = field(&mut rng, 5);
        records.insert(f, value(&mut rng));
        assert!(records.get(&f).is_some());
        records.clear();
        assert_eq!(records.get(&f), None);
        assert_eq!(Loading::default().finish().get(&f), None);
    }

    #[test]
    fn the_base_holds_a_record_in_its_field_but_the_first_byte_and_its_value() {
        assert_eq!(size_of::<Entry>(), FIELD_LEN - 1 + VALUE_LEN);
    }
}
