//! The one place that knows how things are laid out in Redis: key names, field names and the binary
//! value of a cached record. Every other module asks here.
//!
//! Active suppressions live in small hashes bucketed by the subject hash's leading bits (listpack
//! encoded while a bucket stays under `hash-max-listpack-entries`), so all candidate scopes of one
//! check are fields of one key and one `HMGET` reads them. Each bucket also holds a marker field,
//! written only by a complete rebuild: a bucket without it (flushed, restarted empty, evicted) cannot
//! answer "not suppressed", whatever else it holds.
//!
//! `keys` names every key (`slots` chooses the slot groups' hash tags), `codec` lays out fields and
//! values, `scripts` holds the Lua that writes them; what they share (the marker field, the layout
//! version, a layout's name) is here. Which layouts a replica writes and reads while a deployment
//! changes its layout is `cache::layouts`' business.

mod codec;
mod keys;
mod scripts;
mod slots;

pub use codec::{FIELD_LEN, Field, VALUE_LEN, candidate_fields, field};
pub(crate) use codec::{decode_values, encode_value};
pub(crate) use keys::lead;
pub use keys::{Group, GroupKeys, Keys};
pub use scripts::MERGE_BATCH;
pub(crate) use scripts::{
    MARK_SCRIPT, NOW_MS_FN, RAISE_WRITES_SCRIPT, UNMARK_SCRIPT, leases_fn, merge_script,
    opt_out_script, retract_script,
};

/// The field in every bucket that says the bucket holds every active suppression of its subjects.
/// Real fields are [`FIELD_LEN`] bytes, so this one cannot collide with them.
pub const MARKER_FIELD: &[u8] = b"complete";

/// The version of the bucket layout (field length and value encoding), part of every bucket's name.
/// Bump it whenever either changes.
const LAYOUT: u8 = 2;

/// A bucket layout: the layout version and the bucket bits, the two things in a bucket's name
/// (`{prefix}v{version}b{bits}:{index}`). Written `v2b16`, as in the names; that is also how
/// replicas announce it (`cache::layouts`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Layout {
    pub version: u8,
    pub bits: u8,
}

impl Layout {
    /// This build's layout version with `bits` bucket bits.
    pub fn with_bits(bits: u8) -> Layout {
        Layout {
            version: LAYOUT,
            bits,
        }
    }

    /// Whether this build can write (and read) it: its version is this build's. A layout of
    /// another version is only ever named, never written.
    pub fn is_known(&self) -> bool {
        self.version == LAYOUT && (1..=24).contains(&self.bits)
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{}b{}", self.version, self.bits)
    }
}

impl std::str::FromStr for Layout {
    type Err = ();

    fn from_str(s: &str) -> Result<Layout, ()> {
        let (version, bits) = s
            .strip_prefix('v')
            .and_then(|s| s.split_once('b'))
            .ok_or(())?;
        Ok(Layout {
            version: version.parse().map_err(drop)?,
            bits: bits.parse().map_err(drop)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layout_is_named_as_in_bucket_names() {
        let layout = Layout::with_bits(16);
        assert_eq!(layout.to_string(), "v2b16");
        assert_eq!("v2b16".parse(), Ok(layout));
        assert_eq!("v3b7".parse::<Layout>().map(|l| l.is_known()), Ok(false));
        assert!("b16".parse::<Layout>().is_err());
        assert!(
            Keys::new("p:", 16)
                .bucket(0)
                .starts_with(&format!("p:{layout}:"))
        );
    }
}
