//! Key names: every key this service keeps in Redis, formatted here and nowhere else, under one
//! prefix.

use super::LAYOUT;
use crate::cache::Topology;
use crate::domain::{ReceiptId, SubjectHash};
use sha2::{Digest, Sha256};

/// Key names under one prefix, so that several deployments (or tests) share a Redis without meeting.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
    bucket_bits: u8,
}

impl Keys {
    pub fn new(prefix: &str, bucket_bits: u8) -> Self {
        Self {
            prefix: prefix.to_owned(),
            bucket_bits,
        }
    }

    /// The layout for a topology. On Redis Cluster the prefix becomes every key's hash tag
    /// (`{prefix}…`), so that every key lands in one slot: each script and pipeline touches one
    /// slot, as Cluster requires, and a check stays one round trip to one node. Standalone and
    /// Sentinel keep the plain names.
    pub fn for_topology(prefix: &str, bucket_bits: u8, topology: &Topology) -> Self {
        if topology.is_cluster() {
            Self::new(&format!("{{{prefix}}}"), bucket_bits)
        } else {
            Self::new(prefix, bucket_bits)
        }
    }

    /// The prefix every key name starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn bucket_count(&self) -> u32 {
        1 << self.bucket_bits
    }

    /// The bucket a subject's records live in: the subject hash's leading bits.
    pub(crate) fn bucket_of(&self, subject: &SubjectHash) -> u32 {
        let lead = u32::from_be_bytes([subject.0[0], subject.0[1], subject.0[2], subject.0[3]]);
        lead >> (32 - u32::from(self.bucket_bits))
    }

    /// The layout (its version and the bucket bits) is part of the name: a process started with
    /// other bits, or one that lays fields and values out differently, finds no marked bucket and
    /// rebuilds, instead of reading buckets laid out differently.
    pub(crate) fn bucket(&self, index: u32) -> String {
        format!("{}v{LAYOUT}b{}:{index:x}", self.prefix, self.bucket_bits)
    }

    pub fn bucket_for(&self, subject: &SubjectHash) -> String {
        self.bucket(self.bucket_of(subject))
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
        format!("{}idem:{}", self.prefix, hex::encode(&h.finalize()[..16]))
    }

    /// Present while a receipt is accepted but may not be committed yet.
    pub(crate) fn receipt(&self, id: ReceiptId) -> String {
        format!("{}rcpt:{id}", self.prefix)
    }

    /// Present once an opt-out's confirmation was let through (`service::confirmations`).
    pub(crate) fn confirmed(&self, id: ReceiptId) -> String {
        format!("{}confirmed:{id}", self.prefix)
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Standalone (and Sentinel) names are what they always were; on Cluster every name opens with
    /// the prefix as its hash tag, so one deployment's keys share a slot.
    #[test]
    fn cluster_names_carry_the_prefix_as_hash_tag_and_standalone_names_are_unchanged() {
        let standalone = Keys::for_topology("p:", 4, &Topology::Standalone("redis://x".into()));
        assert_eq!(standalone.bucket(10), "p:v2b4:a");
        assert_eq!(standalone.stream(), "p:stream");
        let cluster = Keys::for_topology("p:", 4, &Topology::Cluster(vec!["redis://x".into()]));
        for name in [
            cluster.bucket(10),
            cluster.stream(),
            cluster.writes(),
            cluster.changes(),
            cluster.idempotency("t", "k"),
            cluster.near_replicas(),
        ] {
            assert!(name.starts_with("{p:}"), "{name}");
        }
    }

    #[test]
    fn buckets_cover_the_range() {
        let keys = Keys::new("p:", 4);
        assert_eq!(keys.bucket_of(&SubjectHash([0xff; 32])), 15);
        assert_eq!(keys.bucket_of(&SubjectHash([0; 32])), 0);
    }
}
