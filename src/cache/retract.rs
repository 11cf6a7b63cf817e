//! Taking ended records (an opt-in, a rollback) out of the cache. A cache field holds one record per
//! (subject, scope); when that record ends, the field is refilled from what remains active in the
//! store, so a person's own opt-out of the same scope takes over from an import's record.

use super::{Cache, CacheError, Context, GroupMerged, Merged, layout, layout::Group};
use crate::domain::{Match, ReceiptId, Scope, SubjectHash};
use redis::Script;
use std::sync::LazyLock;

static RETRACT: LazyLock<Script> = LazyLock::new(|| Script::new(&layout::retract_script()));

/// One field to fix: the records of it that ended, and those that remain active.
#[derive(Debug, Clone)]
pub struct Retraction {
    pub(crate) subject: SubjectHash,
    pub(crate) scope: Scope,
    pub(crate) ended: Vec<ReceiptId>,
    pub(crate) remaining: Vec<Match>,
}

impl Cache {
    /// Applies each retraction atomically per field (one script call each, one pipeline per slot
    /// group, all at once). Returns the last change fed to the near-caches in each group (0: no
    /// field changed; the write counters are not reported). A field that holds a record not among
    /// the ended ones (written since) is left alone.
    #[tracing::instrument(name = "EVALSHA", skip_all, fields(
        otel.kind = "client", db.system = "redis", db.operation = "EVALSHA",
        suppressd.script = "retract", db.redis.pipeline_length = retractions.len() as i64))]
    pub(crate) async fn retract(&self, retractions: &[Retraction]) -> Result<Merged, CacheError> {
        let mut groups: Vec<(Group, Vec<&Retraction>)> = Vec::new();
        for r in retractions {
            let group = self.keys.group_of(&r.subject);
            match groups.iter_mut().find(|(g, _)| *g == group) {
                Some((_, of_group)) => of_group.push(r),
                None => groups.push((group, vec![r])),
            }
        }
        let done = groups
            .into_iter()
            .map(|(group, retractions)| self.retract_group(group, retractions));
        Ok(Merged {
            groups: futures_util::future::try_join_all(done).await?,
        })
    }

    async fn retract_group(
        &self,
        group: Group,
        retractions: Vec<&Retraction>,
    ) -> Result<GroupMerged, CacheError> {
        let keys = self.keys.group(group);
        let plan = self.layouts.plan();
        let names = plan.write_names();
        let mut conn = self.conn();
        // On Cluster, `SCRIPT LOAD` goes to every master.
        RETRACT
            .load_async(&mut conn)
            .await
            .context("loading the retract script")?;
        let mut pipe = redis::pipe();
        for r in retractions {
            let call = pipe
                .cmd("EVALSHA")
                .arg(RETRACT.get_hash())
                .arg(4 + plan.writes.len())
                .arg(keys.layouts());
            for (_, layout) in &plan.writes {
                call.arg(layout.bucket_for(&r.subject));
            }
            call.arg(keys.writes())
                .arg(keys.changes())
                .arg(keys.change_seq())
                .arg(&layout::field(&r.subject, &r.scope)[..])
                .arg(names.len());
            for name in &names {
                call.arg(name);
            }
            call.arg(r.ended.len());
            for id in &r.ended {
                call.arg(&id.as_bytes()[..]);
            }
            for m in &r.remaining {
                call.arg(layout::encode_value(m));
            }
        }
        let changes: Vec<u64> = pipe
            .query_async(&mut conn)
            .await
            .context("retracting records")?;
        Ok(GroupMerged {
            group,
            writes: 0,
            change: changes.into_iter().max().unwrap_or(0),
        })
    }
}
