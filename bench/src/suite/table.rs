//! The suite's results: one row per line of SPEC §8 (plus informational rows), each with the baseline
//! measured in the same run, written as JSON and as a markdown table, and checked against the
//! committed thresholds (`bench/thresholds.json`).

use crate::Report;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, fmt::Write, path::Path};

/// One measured line.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    /// The key of its threshold, if it has one.
    pub id: String,
    pub what: String,
    /// `None` when it could not be measured in this run (`shown` says why).
    pub value: Option<f64>,
    pub shown: String,
    /// The baseline(s) from the same run.
    pub baseline: String,
    /// The target, from the thresholds file ("—" for informational rows).
    pub target: String,
    /// Whether the target holds; `None` for informational rows.
    pub holds: Option<bool>,
}

impl Row {
    pub fn new(id: &str, what: &str, value: f64, shown: String, baseline: String) -> Row {
        Row {
            id: id.into(),
            what: what.into(),
            value: Some(value),
            shown,
            baseline,
            target: "—".into(),
            holds: None,
        }
    }

    /// This row as measured, but not to be judged against its target: its value is withheld, and
    /// its text says why beside what was measured.
    pub fn not_judged(self, why: &str) -> Row {
        Row {
            value: None,
            shown: format!("not judged: {} {why}", self.shown),
            ..self
        }
    }

    pub fn not_measured(id: &str, what: &str, why: &str) -> Row {
        Row {
            id: id.into(),
            what: what.into(),
            value: None,
            shown: format!("n/a: {why}"),
            baseline: "—".into(),
            target: "—".into(),
            holds: None,
        }
    }
}

/// A bound from SPEC §8.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Threshold {
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    /// The target as SPEC §8 words it.
    pub target: String,
    /// Other bounds for larger runs, by the least population they apply to (a rebuild's time grows
    /// with the records it copies).
    #[serde(default)]
    pub from_entries: BTreeMap<u64, Threshold>,
}

impl Threshold {
    fn holds(&self, v: f64) -> bool {
        self.min.is_none_or(|m| v >= m) && self.max.is_none_or(|m| v <= m)
    }

    /// The bound for a run over `entries` records.
    fn at(&self, entries: u64) -> &Threshold {
        self.from_entries
            .range(..=entries)
            .next_back()
            .map_or(self, |(_, t)| t)
    }
}

pub type Thresholds = BTreeMap<String, Threshold>;

pub fn read_thresholds(path: &Path) -> anyhow::Result<Thresholds> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the thresholds {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Everything a run measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SuiteReport {
    pub date: String,
    pub mode: String,
    pub machine: String,
    pub layout: String,
    pub entries: u64,
    pub rows: Vec<Row>,
    /// Calls that failed during the measured runs; a benchmark with failures is not a clean result.
    pub warnings: Vec<String>,
    /// Every load run, as ghz reports it (without per-call details).
    pub runs: BTreeMap<String, Report>,
}

impl SuiteReport {
    /// Fills in each row's target and verdict from the thresholds.
    pub fn judge(&mut self, thresholds: &Thresholds) {
        for row in &mut self.rows {
            if let Some(t) = thresholds.get(&row.id).map(|t| t.at(self.entries)) {
                row.target = t.target.clone();
                row.holds = Some(row.value.is_some_and(|v| t.holds(v)));
            }
        }
    }

    /// Rows whose target does not hold (unmeasured rows included: they cannot be shown to hold), and
    /// thresholds that no row measured.
    pub fn shortfalls(&self, thresholds: &Thresholds) -> Vec<String> {
        let mut out: Vec<String> = self
            .rows
            .iter()
            .filter(|r| r.holds == Some(false))
            .map(|r| format!("{}: {} (target {})", r.what, r.shown, r.target))
            .collect();
        for id in thresholds.keys() {
            if !self.rows.iter().any(|r| &r.id == id) {
                out.push(format!("{id}: no row measured it"));
            }
        }
        out
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Benchmark ({} run, {}), {}. {}.\n",
            self.mode, self.date, self.machine, self.layout
        );
        s.push_str("| what | suppressd | baseline (same run) | target | holds |\n");
        s.push_str("|---|---|---|---|---|\n");
        for r in &self.rows {
            let holds = match r.holds {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "—",
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {holds} |",
                r.what, r.shown, r.baseline, r.target
            );
        }
        for w in &self.warnings {
            let _ = writeln!(s, "\nwarning: {w}");
        }
        s
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(self)?)?;
        std::fs::write(dir.join("report.md"), self.markdown())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report of one row, at `entries`.
    fn report_of(entries: u64, row: Row) -> SuiteReport {
        SuiteReport {
            date: String::new(),
            mode: String::new(),
            machine: String::new(),
            layout: String::new(),
            entries,
            rows: vec![row],
            warnings: Vec::new(),
            runs: BTreeMap::new(),
        }
    }

    #[test]
    fn a_larger_run_is_judged_by_the_bound_for_its_size() {
        let thresholds: Thresholds = serde_json::from_str(
            r#"{"rebuild_seconds": {"max": 20, "target": "20 s",
                "from_entries": {"10000000": {"max": 120, "target": "120 s"}}}}"#,
        )
        .unwrap();
        let t = &thresholds["rebuild_seconds"];
        for (entries, max) in [(1_000_000, 20.0), (9_999_999, 20.0), (10_000_000, 120.0)] {
            assert_eq!(t.at(entries).max, Some(max), "at {entries}");
        }
        let rebuild = Row::new(
            "rebuild_seconds",
            "rebuild",
            69.0,
            "69 s".into(),
            String::new(),
        );
        let mut report = report_of(10_000_000, rebuild);
        report.judge(&thresholds);
        assert_eq!(report.rows[0].holds, Some(true));
        assert_eq!(report.rows[0].target, "120 s");
    }

    #[test]
    fn a_row_not_judged_keeps_what_it_measured_and_cannot_hold() {
        let thresholds: Thresholds =
            serde_json::from_str(r#"{"cost_pct": {"max": 10, "target": "10 %"}}"#).unwrap();
        let row = Row::new("cost_pct", "cost", 2.0, "2.0 %".into(), String::new())
            .not_judged("with spans dropped");
        assert_eq!(row.shown, "not judged: 2.0 % with spans dropped");
        let mut report = report_of(1_000_000, row);
        report.judge(&thresholds);
        assert_eq!(report.rows[0].holds, Some(false));
        assert_eq!(report.shortfalls(&thresholds).len(), 1);
    }
}
