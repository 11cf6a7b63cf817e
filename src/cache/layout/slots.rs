//! The hash tags of slot groups, chosen rather than left to chance: group `g`'s tag is the first
//! `{prefix}g{g}.{n}` whose slot lies in the `g`-th of `G` equal slot ranges. Plain tags would leave
//! the masters uneven (the default prefix's 16 tags `suppressd:g0` … `suppressd:g15` fall 3, 5 and
//! 8 on three masters); these fall in order over the slot space, so masters that split it evenly
//! (as `redis-cli --cluster create` does) get nearly even shares of the groups.

use super::Group;

/// Slots in a Redis Cluster.
const SLOTS: u32 = 16_384;

/// Group `g`'s hash tag: the first `{prefix}g{g}.{n}` whose slot is in the `g`-th of the `2^bits`
/// equal slot ranges (see the module doc). About `2^bits` tries each; found for any prefix in
/// practice, and if not within a bound, the last one tried.
pub(super) fn group_tag(prefix: &str, g: Group, bits: u8) -> String {
    let mut tag = String::new();
    for n in 0..(64u32 << bits) {
        tag = format!("{prefix}g{g}.{n}");
        if (u32::from(slot_of_tag(&tag)) << bits) / SLOTS == g {
            break;
        }
    }
    tag
}

/// The Cluster slot of a hash tag: CRC16 (XMODEM) mod 16384, as the Cluster specification says.
pub(super) fn slot_of_tag(tag: &str) -> u16 {
    let mut crc: u16 = 0;
    for b in tag.bytes() {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % SLOTS as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{Topology, layout::Keys};

    /// The default 16 groups of the default prefix spread over the three masters of a cluster
    /// created by `redis-cli --cluster create` (slots 0-5460, 5461-10922, 10923-16383): 5 or 6 each.
    #[test]
    fn the_default_groups_spread_evenly_over_three_masters() {
        assert_eq!(
            slot_of_tag("123456789"),
            0x31c3,
            "the CRC16 of the Cluster spec"
        );
        let keys = Keys::for_topology(
            "suppressd:",
            16,
            16,
            &Topology::Cluster(vec!["redis://x".into()]),
        );
        let mut per_master = [0; 3];
        for g in keys.groups() {
            let name = g.stream();
            let tag = &name[1..name.find('}').unwrap()];
            let master = match slot_of_tag(tag) {
                0..=5460 => 0,
                5461..=10922 => 1,
                _ => 2,
            };
            per_master[master] += 1;
        }
        assert!(
            per_master.iter().all(|&n| n == 5 || n == 6),
            "{per_master:?}"
        );
    }
}
