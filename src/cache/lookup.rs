//! The checks' read of the cache: the candidate fields of each check, asked in one pipeline per
//! slot group (all groups at once: on Cluster, each to the node that holds it) with the marker of
//! their buckets and the group's write counter, and decoded into [`Lookup`]s, in the checks' order. It reports
//! whether a bucket was complete and never decides what an absent record means: that is the
//! service's call.

use super::{Cache, CacheError, Context, layout, layout::Group};
use crate::domain::{Match, Notice, SubjectHash};
use layout::MARKER_FIELD;
use redis::RedisError;
use smallvec::SmallVec;

/// One value per check of a call, inline for a single check (most calls), which then allocates
/// none of them.
pub type PerCheck<T> = SmallVec<[T; 1]>;

/// One check, as the cache sees it: the bucket and the fields of every candidate scope. The scopes
/// themselves are only built for fields that hold a record (most checks find none).
pub struct Probe<'a> {
    /// The subject hash's first four bytes, which its bucket is cut from in whichever layout the
    /// check reads: the key is only needed when Redis is asked (the near-cache is not).
    lead: u32,
    /// The bucket's slot group.
    pub(crate) group: Group,
    pub(super) notice: &'a Notice,
    pub(super) fields: [layout::Field; 8],
    pub(super) n: usize,
}

/// What the cache knows about one check.
#[derive(Debug)]
pub struct Lookup {
    /// The bucket carries the marker: absent records really are absent.
    pub complete: bool,
    /// Covering records found, expired ones included (the service filters by its clock).
    pub found: Vec<Match>,
    /// A covering field holds a value this version cannot read (a newer layout's, or damaged).
    /// It says someone is suppressed but not how: the check must not answer "send" unless the
    /// store explains it (`service::check`).
    pub unreadable: bool,
}

/// What one round trip of checks found.
#[derive(Debug)]
pub struct Lookups {
    pub checks: PerCheck<Lookup>,
    /// The write counter of each group asked, as Redis has it (see
    /// [`GroupKeys::writes`](layout::GroupKeys::writes)).
    pub writes: Vec<(Group, u64)>,
}

impl Cache {
    pub fn probe<'a>(&self, subject: &SubjectHash, notice: &'a Notice) -> Probe<'a> {
        let (fields, n) = layout::candidate_fields(subject, notice);
        Probe {
            lead: layout::lead(subject),
            group: self.keys.group_of(subject),
            notice,
            fields,
            n,
        }
    }

    /// Reads every probe, and the write counter of each group they touch: one pipeline per
    /// group, all sent at once (with one group, one round trip).
    #[tracing::instrument(name = "HMGET", skip_all, fields(
        otel.kind = "client", db.system = "redis", db.operation = "HMGET",
        db.redis.pipeline_length = probes.len() as i64))]
    pub async fn lookup(&self, probes: &[Probe<'_>]) -> Result<Lookups, CacheError> {
        let mut groups: Vec<Group> = probes.iter().map(|p| p.group).collect();
        groups.sort_unstable();
        groups.dedup();
        let asked = groups.iter().map(|&group| {
            let probes: Vec<&Probe<'_>> = probes.iter().filter(|p| p.group == group).collect();
            self.lookup_group(group, probes)
        });
        let answered = futures_util::future::try_join_all(asked).await?;
        // Back into the checks' order: each group's answers come in the order of its probes.
        let mut by_group: Vec<std::vec::IntoIter<Candidates>> = Vec::with_capacity(groups.len());
        let mut writes = Vec::with_capacity(groups.len());
        for (group, (replies, w)) in groups.iter().zip(answered) {
            by_group.push(replies.into_iter());
            writes.push((*group, w));
        }
        let checks = probes
            .iter()
            .map(|probe| {
                let at = groups.binary_search(&probe.group).expect("asked");
                let values = by_group[at].next().expect("one reply per probe");
                decode(probe, values)
            })
            .collect();
        Ok(Lookups { checks, writes })
    }

    /// One group's probes and write counter, in one pipeline, from the layout the group's
    /// checks read; after the buckets, that layout's state (`cache::layouts`): unless it is still
    /// `ok`, no bucket read vouches for an absence.
    async fn lookup_group(
        &self,
        group: Group,
        probes: Vec<&Probe<'_>>,
    ) -> Result<(Vec<Candidates>, u64), CacheError> {
        let plan = self.layouts.plan();
        let (layout, keys) = plan.read(group);
        let mut pipe = redis::pipe();
        for probe in &probes {
            pipe.cmd("HMGET")
                .arg(keys.bucket(keys.bucket_of_lead(probe.lead)))
                .arg(MARKER_FIELD);
            for field in &probe.fields[..probe.n] {
                pipe.arg(&field[..]);
            }
        }
        pipe.hget(keys.group(group).layouts(), layout.to_string());
        pipe.get(keys.group(group).writes());
        let (mut replies, ok, writes) = pipe
            .query_async::<redis::Value>(&mut self.conn())
            .await
            .and_then(|v| split_lookup_reply(v, probes.len()))
            .context("HMGET candidates")?;
        if !ok {
            for reply in &mut replies {
                if let Some(marker) = reply.first_mut() {
                    *marker = None;
                }
            }
        }
        Ok((replies, writes.unwrap_or(0)))
    }
}

/// What one probe's `HMGET` found.
fn decode(probe: &Probe<'_>, values: Candidates) -> Lookup {
    let mut values = values.into_iter();
    let complete = values.next().flatten().is_some();
    if values.as_slice().iter().all(Option::is_none) {
        return Lookup {
            complete,
            found: Vec::new(),
            unreadable: false,
        };
    }
    let (found, unreadable) = layout::decode_values(
        values
            .enumerate()
            .filter_map(|(k, v)| Some((probe.notice.candidate(k), v?))),
    );
    Lookup {
        complete,
        found,
        unreadable,
    }
}

/// One `HMGET` reply: the marker, then one value per candidate scope.
type Candidates = Vec<Option<Vec<u8>>>;

/// Splits a lookup pipeline's reply: one `HMGET` reply per probe, the layout's state (whether it
/// is `ok`), then the write counter.
fn split_lookup_reply(
    reply: redis::Value,
    probes: usize,
) -> Result<(Vec<Candidates>, bool, Option<u64>), RedisError> {
    let redis::Value::Array(mut items) = reply else {
        return Err((redis::ErrorKind::Parse, "a pipeline answers with an array").into());
    };
    if items.len() != probes + 2 {
        return Err((redis::ErrorKind::Parse, "one reply per command").into());
    }
    let writes = items.pop().expect("checked length");
    let state: Option<String> = redis::from_redis_value(items.pop().expect("checked length"))?;
    let hmget = items
        .into_iter()
        .map(redis::from_redis_value)
        .collect::<Result<_, _>>()?;
    let ok = state.is_some_and(|s| s.starts_with("ok:"));
    Ok((hmget, ok, redis::from_redis_value(writes)?))
}
