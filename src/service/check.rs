//! `CheckSuppressed`: one Redis round trip for all checks of a call; the store only for checks whose
//! bucket cannot vouch for an absence.

use super::{ServiceError, Suppressions};
use crate::{
    cache::{CacheError, Lookups, PerCheck, layout::Group},
    domain::{Match, Notice, Recipient, SubjectHash, best_match, control::Zone},
    telemetry::{
        call::CallSpan,
        metrics::{self, names},
    },
};
use ::metrics::Counter;
use std::sync::OnceLock;

/// One notice about to be sent to one recipient.
#[derive(Debug, Clone)]
pub(crate) struct Check {
    pub(crate) recipient: Recipient,
    pub(crate) notice: Notice,
    /// The recipient's time zone, for send windows (else each window's own).
    pub(crate) zone: Option<Zone>,
    pub(crate) purpose: Purpose,
}

/// Why the sender asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Purpose {
    /// A notice.
    #[default]
    Notice,
    /// The message that confirms a person's opt-out (`service::confirmations`).
    OptOutConfirmation,
}

/// The answer to one check: send, an opt-out, a halt, a mandatory override, not now, or no consent
/// (`domain::control`).
pub(crate) use crate::domain::control::Answer;

/// Where the answers of a call came from: a trace attribute and a metric label, so that an SRE sees
/// when the service is running on its slower, store-backed path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AnswerSource {
    Cache,
    /// Some checks fell to the store (their bucket was not marked complete).
    Mixed,
    /// Redis could not be read; every answer came from the store.
    Store,
}

impl AnswerSource {
    /// Every source, in declaration order (`source as usize` indexes it).
    const ALL: [AnswerSource; 3] = [
        AnswerSource::Cache,
        AnswerSource::Mixed,
        AnswerSource::Store,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AnswerSource::Cache => "cache",
            AnswerSource::Mixed => "cache+store",
            AnswerSource::Store => "store",
        }
    }
}

/// Why the cache did not answer a call.
#[derive(Debug, thiserror::Error)]
enum Unanswered {
    #[error(transparent)]
    Failed(CacheError),
    #[error("the cache is doubted until it holds what the store took alone")]
    Doubted,
}

impl Suppressions {
    /// Answers each check. Records `suppressd.checks` and `suppressd.answer_source` on the call
    /// (its log fields and its server span): a span of its own per check was a third of what
    /// tracing every call cost, and told nothing the server span does not.
    pub(crate) async fn check(&self, checks: &[Check]) -> Result<Vec<Answer>, ServiceError> {
        // Taken once, before the awaits: it is the call's, which a later poll holds as well.
        let span = CallSpan::current();
        span.record_i64("suppressd.checks", checks.len() as i64);
        let inner = &self.inner;
        let subjects: PerCheck<SubjectHash> = checks
            .iter()
            .map(|c| inner.pepper.subject(&c.recipient))
            .collect();
        let probes: PerCheck<_> = checks
            .iter()
            .zip(&subjects)
            .map(|(c, s)| inner.cache.probe(s, &c.notice))
            .collect();
        let now = self.now();
        // Whether this replica may trust its controls, judged before it reads them: the controls
        // read next are at least as new as those the last confirmation vouched for. Judged only
        // after, a check on a replica just turning fresh again could read the controls it held
        // while stale and be let through by the confirmation of the ones that replaced them.
        let fresh = !self.controls_stale();
        // Halts and mandatory declarations, as this replica holds them (no allocation: a guard).
        let controls = self.controls();
        #[cfg(feature = "failpoints")]
        if inner.settings.check_pause_failpoint
            && let Some(ms) = inner
                .cache
                .check_pause_failpoint(&inner.settings.replica)
                .await
        {
            tracing::warn!(ms, "failpoint: a check pauses after reading the controls");
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        let decide = |m: Option<Match>, check: &Check| {
            controls.decide(m, &check.notice, check.zone.as_ref(), now, false)
        };
        // This replica's near-cache answers when it can vouch; otherwise Redis, then the store. Only
        // the store while the cache is doubted (a Redis failure, or opt-outs the store took alone).
        let trusted = inner.doubt.trusted();
        let near = trusted.then(|| inner.near.lookup(&probes)).flatten();
        let from_memory = near.is_some();
        let keys = inner.cache.keys();
        // The write counters this replica saw, by group, read before Redis is asked (see
        // `Cache::writes_seen`); only for the Redis path.
        let mut seen = Vec::new();
        let looked_up = match near {
            Some(checks) => Ok(Lookups {
                checks,
                writes: Vec::new(),
            }),
            None if trusted => {
                seen.extend((0..keys.group_count()).map(|g| inner.cache.writes_seen(g)));
                inner
                    .cache
                    .lookup(&probes)
                    .await
                    .map_err(Unanswered::Failed)
            }
            None => Err(Unanswered::Doubted),
        };
        let (answers, source) = match looked_up {
            Ok(lookups) => {
                // A group that lost writes this replica saw vouches for nothing, markers or not.
                // (The near-cache reads no counter: it stops answering when Redis loses data.)
                let stale: Vec<Group> = lookups
                    .writes
                    .iter()
                    .filter(|&&(g, writes)| {
                        !from_memory && inner.rebuild.went_back(g, seen[g as usize], writes)
                    })
                    .map(|&(g, _)| g)
                    .collect();
                let mut answers = Vec::with_capacity(checks.len());
                let mut fell_back = false;
                for ((lookup, check), subject) in
                    lookups.checks.into_iter().zip(checks).zip(&subjects)
                {
                    let group = keys.group_of(subject);
                    if lookup.complete && !stale.contains(&group) && !lookup.unreadable {
                        answers.push(decide(best_match(lookup.found, now), check));
                        continue;
                    }
                    if lookup.unreadable {
                        // A value this version cannot read says someone opted out, not who or how:
                        // only the store may explain it; otherwise nothing here may say "send".
                        let stored = self.stored_matches(subject, check).await?;
                        if stored.is_empty() {
                            return Err(ServiceError::unavailable(
                                "a cached suppression is in a format this version cannot read \
                                 (a newer replica's, or damaged); do not send",
                                anyhow::anyhow!(
                                    "bucket {} holds an unreadable value",
                                    keys.bucket_for(subject)
                                ),
                            ));
                        }
                        fell_back = true;
                        let found = lookup.found.into_iter().chain(stored);
                        answers.push(decide(best_match(found, now), check));
                        continue;
                    }
                    // The bucket cannot vouch for an absence: what it holds is true (it was written
                    // by a live opt-out), what it lacks may be in the store.
                    fell_back = true;
                    inner.rebuild.suspect(group, &keys.bucket_for(subject));
                    let stored = self.stored_matches(subject, check).await?;
                    let found = lookup.found.into_iter().chain(stored);
                    answers.push(decide(best_match(found, now), check));
                }
                let source = if fell_back {
                    AnswerSource::Mixed
                } else {
                    AnswerSource::Cache
                };
                (answers, source)
            }
            Err(cache_error) => {
                if let Unanswered::Failed(e) = &cache_error {
                    inner.doubt.doubt();
                    tracing::warn!(error = %e, "Redis unreadable; answering from the store");
                }
                let mut answers = Vec::with_capacity(checks.len());
                for (check, subject) in checks.iter().zip(&subjects) {
                    let stored = self.stored_matches(subject, check).await.map_err(|_| {
                        ServiceError::unavailable(
                            "neither Redis nor the durable store can answer; do not send",
                            anyhow::anyhow!("{cache_error:#}"),
                        )
                    })?;
                    answers.push(decide(best_match(stored, now), check));
                }
                (answers, AnswerSource::Store)
            }
        };
        // Under a consent requirement, the store says whether the person consented (`consent`).
        let mut answers = self.with_consents(answers, checks, &subjects).await?;
        self.let_confirmations_through(checks, &mut answers, now)
            .await;
        // A replica that cannot vouch for its controls lets nothing go (`controls::fresh`).
        let answers = self.unless_stale(answers, fresh)?;
        span.record_str("suppressd.answer_source", source.as_str());
        static CHECKS: [OnceLock<Counter>; AnswerSource::ALL.len()] =
            [const { OnceLock::new() }; AnswerSource::ALL.len()];
        metrics::once(
            &CHECKS[source as usize],
            || ::metrics::counter!(names::CHECKS, "answer_source" => source.as_str()),
        )
        .increment(checks.len() as u64);
        Ok(answers)
    }

    async fn stored_matches(
        &self,
        subject: &SubjectHash,
        check: &Check,
    ) -> Result<Vec<Match>, ServiceError> {
        let breaker = &self.inner.store_breaker;
        let read = self
            .inner
            .store
            .covering(subject, &check.notice, self.now());
        let read = match breaker.limit() {
            None => read.await.map_err(ServiceError::from),
            Some(limit) => match tokio::time::timeout(limit, read).await {
                Ok(read) => read.map_err(ServiceError::from),
                Err(_) => Err(ServiceError::unavailable(
                    "the durable store is unavailable",
                    anyhow::anyhow!("no answer within {limit:?}, after a failure"),
                )),
            },
        };
        match read {
            Ok(records) => {
                breaker.answered();
                Ok(records.iter().map(Match::from).collect())
            }
            Err(e) => {
                breaker.failed();
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::AnswerSource;

    #[test]
    fn every_answer_source_indexes_its_own_counter() {
        for (i, source) in AnswerSource::ALL.into_iter().enumerate() {
            assert_eq!(source as usize, i, "{}", source.as_str());
        }
    }
}
