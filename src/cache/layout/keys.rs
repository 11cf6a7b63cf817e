//! Key names: every key this service keeps in Redis, formatted here and nowhere else, under one
//! prefix.
//!
//! **Slot groups.** On Redis Cluster a script, a pipeline and a multi-key command must touch one
//! slot. The keys of a deployment are therefore split into `G` slot groups (a power of two,
//! `--redis-slot-groups`): group `g` owns the buckets whose index starts with `g`'s bits (so a
//! subject's group is a pure function of its hash), and beside them everything a write to those
//! buckets touches in the same script — the idempotency and receipt keys, the write-behind stream,
//! the change feed and its counter, the write counter, the near-cache leases and the completeness
//! markers. Every key of a group carries the group's hash tag (`{prefix}` with `G = 1`,
//! `{prefixg3.17}` beyond), so an opt-out stays one atomic script, a check one round trip to one
//! node, and the groups spread over the masters. [`GroupKeys`] names one group's keys.
//!
//! The groups' tags are chosen so that they fall in order over the slot space (`slots`).
//! What belongs to the whole deployment (controls, halt triggers, the rebuild lease, the commit
//! channel) keeps the prefix's own tag. Standalone and Sentinel have one group and no tag: their
//! names are what they always were.

use super::{LAYOUT, Layout, slots::group_tag};
use crate::cache::Topology;
use crate::domain::{ReceiptId, SubjectHash, recipient::hex_digits};
use sha2::{Digest, Sha256};

/// A slot group's number, `0..G`.
pub type Group = u32;

/// Key names under one prefix, so that several deployments (or tests) share a Redis without meeting.
#[derive(Clone, Debug)]
pub struct Keys {
    /// What every deployment-wide name starts with (`{prefix}` on Cluster).
    prefix: String,
    /// What each group's names start with, by group.
    groups: Vec<GroupKeys>,
    bucket_bits: u8,
    group_bits: u8,
}

/// The names of one slot group's keys: all share one hash tag on Cluster.
#[derive(Clone, Debug)]
pub struct GroupKeys {
    group: Group,
    prefix: String,
    bucket_bits: u8,
    group_bits: u8,
}

impl Keys {
    /// One group, plain names: a standalone Redis (or Sentinel).
    pub fn new(prefix: &str, bucket_bits: u8) -> Self {
        Self::with_groups(prefix, bucket_bits, 0, |_| prefix.to_owned())
    }

    fn with_groups(
        deployment: &str,
        bucket_bits: u8,
        group_bits: u8,
        group_prefix: impl Fn(Group) -> String,
    ) -> Self {
        Self {
            prefix: deployment.to_owned(),
            groups: (0..1u32 << group_bits)
                .map(|group| GroupKeys {
                    group,
                    prefix: group_prefix(group),
                    bucket_bits,
                    group_bits,
                })
                .collect(),
            bucket_bits,
            group_bits,
        }
    }

    /// The layout for a topology. On Redis Cluster every name carries a hash tag: the prefix for
    /// deployment-wide keys, and with `groups > 1` the prefix and the group's number for a group's
    /// keys (`{prefix}` when there is one group). Standalone and Sentinel keep the plain names and
    /// one group, whatever `groups` says. `groups` is a power of two, at most the bucket count.
    pub fn for_topology(prefix: &str, bucket_bits: u8, groups: u32, topology: &Topology) -> Self {
        if !topology.is_cluster() {
            return Self::new(prefix, bucket_bits);
        }
        let group_bits = groups.max(1).trailing_zeros().min(u32::from(bucket_bits)) as u8;
        let deployment = format!("{{{prefix}}}");
        Self::with_groups(&deployment, bucket_bits, group_bits, |g| {
            if group_bits == 0 {
                deployment.clone()
            } else {
                format!("{{{}}}", group_tag(prefix, g, group_bits))
            }
        })
    }

    /// The prefix every deployment-wide key name starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// How many slot groups the keys are split into.
    pub fn group_count(&self) -> u32 {
        1 << self.group_bits
    }

    /// Every group's names, in group order.
    pub fn groups(&self) -> &[GroupKeys] {
        &self.groups
    }

    /// One group's names.
    pub fn group(&self, group: Group) -> &GroupKeys {
        &self.groups[group as usize]
    }

    /// The bucket layout these names are of.
    pub fn layout(&self) -> Layout {
        Layout::with_bits(self.bucket_bits)
    }

    /// The same names with other bucket bits: another layout's buckets, in the same slot groups
    /// (a subject's group is its hash's leading group bits, whatever the bucket bits), so that one
    /// script may write a subject's bucket of both layouts. `None` when `bits` cannot hold the
    /// groups (fewer bucket bits than group bits), or for a layout of another version.
    pub fn for_layout(&self, layout: Layout) -> Option<Keys> {
        if !layout.is_known() || layout.bits < self.group_bits {
            return None;
        }
        let mut keys = self.clone();
        keys.bucket_bits = layout.bits;
        for g in &mut keys.groups {
            g.bucket_bits = layout.bits;
        }
        Some(keys)
    }

    /// The bucket a subject's records live in: the subject hash's leading bits.
    pub(crate) fn bucket_of(&self, subject: &SubjectHash) -> u32 {
        self.bucket_of_lead(lead(subject))
    }

    /// The bucket of a subject whose hash starts with `lead` (its first four bytes).
    pub(crate) fn bucket_of_lead(&self, lead: u32) -> u32 {
        lead >> (32 - u32::from(self.bucket_bits))
    }

    /// The group a bucket belongs to: its index's leading bits.
    pub(crate) fn group_of_bucket(&self, bucket: u32) -> Group {
        bucket >> (self.bucket_bits - self.group_bits)
    }

    /// The group of a subject's bucket, and so of its records, idempotency keys and stream entries.
    pub fn group_of(&self, subject: &SubjectHash) -> Group {
        self.group_of_bucket(self.bucket_of(subject))
    }

    /// The names of the group a subject belongs to.
    pub fn group_for(&self, subject: &SubjectHash) -> &GroupKeys {
        self.group(self.group_of(subject))
    }

    /// A bucket's name (in its group).
    pub(crate) fn bucket(&self, index: u32) -> String {
        self.group(self.group_of_bucket(index)).bucket(index)
    }

    pub fn bucket_for(&self, subject: &SubjectHash) -> String {
        self.bucket(self.bucket_of(subject))
    }

    /// Present once an opt-out's confirmation was let through (`service::confirmations`).
    pub(crate) fn confirmed(&self, id: ReceiptId) -> String {
        format!("{}confirmed:{id}", self.prefix)
    }

    /// Hash of replica name → the layouts it reads, wants and writes, and when it said so (Redis's
    /// clock): how replicas learn which layouts to write while the layout changes
    /// (`cache::layouts`).
    pub(crate) fn layout_replicas(&self) -> String {
        format!("{}layout-replicas", self.prefix)
    }

    /// The lease that lets one replica at a time rebuild.
    pub(crate) fn rebuild_lease(&self) -> String {
        format!("{}rebuild-lease", self.prefix)
    }

    /// Pub/sub channel on which workers announce committed receipts to waiting `OptOut` calls.
    pub(crate) fn durable_channel(&self) -> String {
        format!("{}durable", self.prefix)
    }

    /// Hash of replica name → the controls version it has loaded and when it last looked: what a
    /// halt waits on before it returns.
    pub(crate) fn controls_seen(&self) -> String {
        format!("{}controls-seen", self.prefix)
    }

    /// Hash of the controls in force as last published (`version`, `snapshot`): how a change
    /// reaches a replica cut from the store (`cache::controls`).
    pub(crate) fn controls(&self) -> String {
        format!("{}controls", self.prefix)
    }

    /// Hash of one halt trigger's counts, by time slot, summed by every replica
    /// (`cache::triggers`).
    pub fn trigger_counts(&self, trigger: impl std::fmt::Display) -> String {
        format!("{}trigger:{trigger}", self.prefix)
    }

    /// TESTS ONLY: an order to the near-cache's stall failpoint (`NearCache::with_stall_failpoint`).
    #[cfg(feature = "failpoints")]
    pub fn near_stall_failpoint(&self) -> String {
        format!("{}failpoint-near-stall", self.prefix)
    }

    /// TESTS ONLY: what one replica's controls poller is cut from (`store`, `store+redis`).
    #[cfg(feature = "failpoints")]
    pub fn controls_cut_failpoint(&self, replica: &str) -> String {
        format!("{}failpoint-controls-cut:{replica}", self.prefix)
    }

    /// TESTS ONLY: how long (ms) one replica's next check pauses after reading its controls.
    #[cfg(feature = "failpoints")]
    pub fn check_pause_failpoint(&self, replica: &str) -> String {
        format!("{}failpoint-check-pause:{replica}", self.prefix)
    }
}

impl GroupKeys {
    /// The group's number.
    pub fn group(&self) -> Group {
        self.group
    }

    /// The indexes of this group's buckets.
    pub(crate) fn buckets(&self) -> std::ops::Range<u32> {
        let per_group = 1u32 << (self.bucket_bits - self.group_bits);
        self.group * per_group..(self.group + 1) * per_group
    }

    /// The layout (its version and the bucket bits) is part of the name: a process started with
    /// other bits, or one that lays fields and values out differently, finds no marked bucket and
    /// rebuilds, instead of reading buckets laid out differently.
    pub(crate) fn bucket(&self, index: u32) -> String {
        format!("{}v{LAYOUT}b{}:{index:x}", self.prefix, self.bucket_bits)
    }

    /// Hash of layout name → `ok:{generation}` or `fill:{generation}`: the layouts whose buckets
    /// hold every active suppression of the group, and those being filled (`cache::layouts`).
    /// Every write removes the layouts it does not write, in the same script.
    pub(crate) fn layouts(&self) -> String {
        format!("{}layouts", self.prefix)
    }

    /// The write-behind stream: every accepted opt-out, until the store has committed it.
    pub(crate) fn stream(&self) -> String {
        format!("{}stream", self.prefix)
    }

    /// Entries that could not be decoded, kept for a person to look at rather than dropped.
    pub(crate) fn dead_letters(&self) -> String {
        format!("{}dead-letters", self.prefix)
    }

    /// Idempotency keys are the caller's strings: hashed, so that key names stay short and bounded.
    pub(crate) fn idempotency(&self, tenant: &str, key: &str) -> String {
        let mut h = Sha256::new();
        h.update(tenant.as_bytes());
        h.update([0]);
        h.update(key.as_bytes());
        format!("{}idem:{}", self.prefix, hex_digits(&h.finalize()[..16]))
    }

    /// Present while a receipt is accepted but may not be committed yet.
    pub(crate) fn receipt(&self, id: ReceiptId) -> String {
        format!("{}rcpt:{id}", self.prefix)
    }

    /// The generation of the current (or running) rebuild; a flush removes it, which is how a rebuild
    /// notices that what it wrote so far is gone.
    pub fn generation(&self) -> String {
        format!("{}generation", self.prefix)
    }

    /// Set to the generation once a rebuild has marked every bucket.
    pub fn complete(&self) -> String {
        format!("{}complete", self.prefix)
    }

    /// Counts opt-outs ever written to this Redis. It only grows, so a Redis that answers with a
    /// smaller count than a replica has already seen has gone back in time: a stale replica was
    /// promoted, or an old snapshot was loaded.
    pub(crate) fn writes(&self) -> String {
        format!("{}writes", self.prefix)
    }

    /// The change feed: every write that changes a bucket field (an opt-out, an import, an opt-in's
    /// or a rollback's retraction) appends the field's new value here, numbered by
    /// [`change_seq`](Self::change_seq), for the replicas' near-caches to follow (`cache::near`).
    pub(crate) fn changes(&self) -> String {
        format!("{}changes", self.prefix)
    }

    /// The number of the last change fed: consecutive, so a follower tells a gap from a quiet feed.
    pub(crate) fn change_seq(&self) -> String {
        format!("{}change-seq", self.prefix)
    }

    /// Hash of replica name → `applied:renewed_at:renewal` for every replica with a near-cache: the
    /// last change it applied and its lease, which writers wait on before they return.
    pub(crate) fn near_replicas(&self) -> String {
        format!("{}near-replicas", self.prefix)
    }

    /// Counts lease renewals; only grows, so a Redis that lost leases answers with less.
    pub(crate) fn near_renewals(&self) -> String {
        format!("{}near-renewals", self.prefix)
    }
}

/// A subject hash's first four bytes: what its bucket is cut from, in any layout.
pub(crate) fn lead(subject: &SubjectHash) -> u32 {
    u32::from_be_bytes([subject.0[0], subject.0[1], subject.0[2], subject.0[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(groups: u32) -> Keys {
        Keys::for_topology(
            "p:",
            4,
            groups,
            &Topology::Cluster(vec!["redis://x".into()]),
        )
    }

    /// Standalone (and Sentinel) names are exactly what they always were, whatever the groups
    /// asked for: a running deployment sees no layout change.
    #[test]
    fn standalone_names_are_unchanged() {
        let keys = Keys::for_topology("p:", 4, 16, &Topology::Standalone("redis://x".into()));
        assert_eq!(keys.group_count(), 1);
        let g = keys.group_for(&SubjectHash([0xff; 32]));
        let id = ReceiptId::new(1_800_000_000_000);
        assert_eq!(keys.bucket(10), "p:v2b4:a");
        assert_eq!(g.stream(), "p:stream");
        assert_eq!(g.dead_letters(), "p:dead-letters");
        assert_eq!(g.receipt(id), format!("p:rcpt:{id}"));
        assert_eq!(
            g.idempotency("t", "k"),
            "p:idem:".to_owned() + &hex::encode(&Sha256::digest(b"t\0k")[..16])
        );
        assert_eq!(g.generation(), "p:generation");
        assert_eq!(g.complete(), "p:complete");
        assert_eq!(g.writes(), "p:writes");
        assert_eq!(g.changes(), "p:changes");
        assert_eq!(g.change_seq(), "p:change-seq");
        assert_eq!(g.near_replicas(), "p:near-replicas");
        assert_eq!(g.near_renewals(), "p:near-renewals");
        assert_eq!(keys.confirmed(id), format!("p:confirmed:{id}"));
        assert_eq!(keys.rebuild_lease(), "p:rebuild-lease");
        assert_eq!(keys.durable_channel(), "p:durable");
        assert_eq!(keys.controls(), "p:controls");
        assert_eq!(keys.layout_replicas(), "p:layout-replicas");
        assert_eq!(g.layouts(), "p:layouts");
        assert_eq!(g.buckets(), 0..16);
    }

    /// On Cluster with one group every name opens with the prefix as its hash tag (one slot).
    #[test]
    fn one_cluster_group_is_the_prefix_as_hash_tag() {
        let keys = cluster(1);
        let g = keys.group(0);
        for name in [
            keys.bucket(10),
            g.stream(),
            g.writes(),
            g.changes(),
            g.idempotency("t", "k"),
            g.near_replicas(),
            keys.controls(),
        ] {
            assert!(name.starts_with("{p:}"), "{name}");
        }
    }

    /// With groups, each group's keys share the group's tag, and a bucket is in the group of its
    /// leading bits; deployment-wide keys keep the prefix's tag.
    #[test]
    fn cluster_groups_tag_their_keys_and_own_their_buckets() {
        let keys = cluster(4);
        assert_eq!(keys.group_count(), 4);
        assert_eq!(keys.group(2).buckets(), 8..12);
        for g in keys.groups() {
            let tag = format!("{{{}}}", group_tag("p:", g.group(), 2));
            let slot = u32::from(super::super::slots::slot_of_tag(&tag[1..tag.len() - 1]));
            assert!(tag.starts_with(&format!("{{p:g{}.", g.group())), "{tag}");
            for name in [
                g.stream(),
                g.writes(),
                g.changes(),
                g.complete(),
                g.near_replicas(),
            ] {
                assert!(name.starts_with(&tag), "{name}");
            }
            for b in g.buckets() {
                assert!(keys.bucket(b).starts_with(&tag));
            }
            // In the group's quarter of the slots.
            assert_eq!(slot * 4 / 16_384, g.group(), "{tag}");
        }
        assert_eq!(keys.controls(), "{p:}controls");
        let subject = SubjectHash([0x9f; 32]);
        assert_eq!(keys.group_of(&subject), 2);
        // More groups than buckets: one bucket per group.
        assert_eq!(cluster(64).group_count(), 16);
        // Another layout's buckets of a subject share the subject's group and its tag.
        let wider = keys.for_layout(super::super::Layout::with_bits(5)).unwrap();
        assert_eq!(wider.group_of(&subject), 2);
        let tag = |n: String| n[..=n.find('}').unwrap()].to_owned();
        assert_eq!(tag(wider.bucket_for(&subject)), tag(keys.group(2).stream()));
        assert_ne!(wider.bucket_for(&subject), keys.bucket_for(&subject));
        assert!(
            keys.for_layout(super::super::Layout::with_bits(1))
                .is_none()
        );
    }

    #[test]
    fn buckets_cover_the_range() {
        let keys = Keys::new("p:", 4);
        assert_eq!(keys.bucket_of(&SubjectHash([0xff; 32])), 15);
        assert_eq!(keys.bucket_of(&SubjectHash([0; 32])), 0);
    }
}
