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
//! values, `scripts` holds the Lua that writes them; what they share (the marker field, the layout version) is here.

mod codec;
mod keys;
mod scripts;
mod slots;

pub use codec::{FIELD_LEN, Field, VALUE_LEN, candidate_fields, field};
pub(crate) use codec::{decode_values, encode_value};
pub use keys::{Group, GroupKeys, Keys};
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
