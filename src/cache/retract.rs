//! Taking ended records (an opt-in, a rollback) out of the cache. A cache field holds one record per
//! (subject, scope); when that record ends, the field is refilled from what remains active in the
//! store, so a person's own opt-out of the same scope takes over from an import's record.

use super::{Cache, CacheError, Context, layout};
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
    /// Applies each retraction atomically per field (one script call each, pipelined). Returns the
    /// last change fed to the near-caches (0: no field changed). A field that holds a record not
    /// among the ended ones (written since) is left alone.
    #[tracing::instrument(name = "EVALSHA", skip_all, fields(
        otel.kind = "client", db.system = "redis", db.operation = "EVALSHA",
        suppressd.script = "retract", db.redis.pipeline_length = retractions.len() as i64))]
    pub(crate) async fn retract(&self, retractions: &[Retraction]) -> Result<u64, CacheError> {
        if retractions.is_empty() {
            return Ok(0);
        }
        let mut conn = self.conn();
        RETRACT
            .load_async(&mut conn)
            .await
            .context("loading the retract script")?;
        let mut pipe = redis::pipe();
        for r in retractions {
            let call = pipe
                .cmd("EVALSHA")
                .arg(RETRACT.get_hash())
                .arg(4)
                .arg(self.keys.bucket_for(&r.subject))
                .arg(self.keys.writes())
                .arg(self.keys.changes())
                .arg(self.keys.change_seq())
                .arg(&layout::field(&r.subject, &r.scope)[..])
                .arg(r.ended.len());
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
        Ok(changes.into_iter().max().unwrap_or(0))
    }
}
