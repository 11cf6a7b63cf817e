//! The legal clocks' gauges: how many records' deadlines are near or missed, per regime, refreshed
//! from the store on a timer. A record is judged against its effective time (when checks began to
//! see it) in `suppressd_deadlines`, and against the time its opt-out reached each webhook
//! destination that wants it in `suppressd_destination_deadlines`.

use super::{ServiceError, Suppressions};
use crate::{
    domain::deadline::{Deadline, DeadlineState, Regime},
    telemetry::metrics::names,
};
use std::{collections::BTreeMap, time::Duration};
use tokio_util::sync::CancellationToken;

/// Near and missed counts of one regime.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DeadlineCounts {
    pub(crate) near: u64,
    pub(crate) missed: u64,
}

impl DeadlineCounts {
    /// Counts `deadline` if it is near or missed.
    fn count(&mut self, deadline: &Deadline) {
        match deadline.state {
            DeadlineState::Missed => self.missed += 1,
            DeadlineState::Pending if deadline.near => self.near += 1,
            DeadlineState::Pending | DeadlineState::Met => {}
        }
    }
}

impl Suppressions {
    /// Counts the records received within the longest window whose deadline is near or missed, and
    /// sets `suppressd_deadlines` (every regime's gauges, zero included).
    pub(crate) async fn count_deadlines(
        &self,
    ) -> Result<BTreeMap<Regime, DeadlineCounts>, ServiceError> {
        let rules = self.deadline_rules();
        let now = self.now();
        let records = self
            .store()
            .slow_records(now - rules.longest_reach(), rules.shortest_window())
            .await?;
        let mut counts: BTreeMap<Regime, DeadlineCounts> = rules
            .rules
            .iter()
            .map(|r| (r.regime, Default::default()))
            .collect();
        for record in &records {
            for d in rules.deadlines(record, Some(record.effective_at), now) {
                counts.entry(d.regime).or_default().count(&d);
            }
        }
        for (regime, c) in &counts {
            let regime = regime.as_str();
            metrics::gauge!(names::DEADLINES, "regime" => regime, "state" => "near")
                .set(c.near as f64);
            metrics::gauge!(names::DEADLINES, "regime" => regime, "state" => "missed")
                .set(c.missed as f64);
        }
        Ok(counts)
    }

    /// The same counts per webhook destination, each record judged against when its opt-out
    /// reached the destination (only records whose opt-out the destination wants, received since
    /// it was registered); sets `suppressd_destination_deadlines`.
    pub(crate) async fn count_destination_deadlines(
        &self,
    ) -> Result<BTreeMap<String, BTreeMap<Regime, DeadlineCounts>>, ServiceError> {
        let rules = self.deadline_rules();
        let now = self.now();
        let mut all = BTreeMap::new();
        for destination in self.list_destinations().await? {
            let late = self
                .store()
                .late_deliveries(
                    &destination.id,
                    now - rules.longest_reach(),
                    rules.shortest_window(),
                )
                .await?;
            let mut counts: BTreeMap<Regime, DeadlineCounts> = rules
                .rules
                .iter()
                .map(|r| (r.regime, Default::default()))
                .collect();
            for (record, delivered_at) in late
                .iter()
                .filter(|(record, _)| destination.wants.covers_opt_out(record))
            {
                for d in rules.deadlines(record, *delivered_at, now) {
                    counts.entry(d.regime).or_default().count(&d);
                }
            }
            for (regime, c) in &counts {
                let labels = |state: &'static str| {
                    [
                        ("destination", destination.id.clone()),
                        ("regime", regime.as_str().to_owned()),
                        ("state", state.to_owned()),
                    ]
                };
                metrics::gauge!(names::DESTINATION_DEADLINES, &labels("near")).set(c.near as f64);
                metrics::gauge!(names::DESTINATION_DEADLINES, &labels("missed"))
                    .set(c.missed as f64);
            }
            all.insert(destination.id, counts);
        }
        Ok(all)
    }

    /// Recounts every `every` until `stop`; a failed count keeps the last gauges and says why.
    pub(crate) async fn deadline_loop(self, every: Duration, stop: CancellationToken) {
        loop {
            if let Err(e) = self.count_deadlines().await {
                tracing::warn!(error = %e, "deadline gauges not refreshed");
            }
            if let Err(e) = self.count_destination_deadlines().await {
                tracing::warn!(error = %e, "destination deadline gauges not refreshed");
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }
}
