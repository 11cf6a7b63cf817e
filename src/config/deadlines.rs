//! The legal deadlines' settings: the rules file (read and checked at start-up) and how often the
//! deadline gauges are recomputed.

use super::parse_interval;
use crate::domain::deadline::DeadlineRules;
use anyhow::Context;
use clap::Args;
use std::{path::PathBuf, time::Duration};

/// `--deadlines-file` and `--deadlines-refresh`.
#[derive(Args, Clone, Debug)]
pub struct DeadlineSettings {
    /// Legal deadline rules (TOML: time zone, "near" margin, and per regime its window, channels
    /// and holidays); without it the statutory windows in UTC with no holidays. See
    /// docs/deadlines.md.
    #[arg(long, env = "SUPPRESSD_DEADLINES_FILE")]
    pub deadlines_file: Option<PathBuf>,

    /// How often the deadline gauges (`suppressd_deadlines`) are recomputed from the store.
    #[arg(long, env = "SUPPRESSD_DEADLINES_REFRESH", default_value = "60s",
          value_parser = parse_interval)]
    pub deadlines_refresh: Duration,
}

impl DeadlineSettings {
    /// The deadline rules: the file's, or the defaults. A bad file stops start-up.
    pub(crate) fn rules(&self) -> anyhow::Result<DeadlineRules> {
        let Some(path) = &self.deadlines_file else {
            return Ok(DeadlineRules::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the deadlines file {}", path.display()))?;
        DeadlineRules::parse(&text)
            .map_err(|e| anyhow::anyhow!("in the deadlines file {}: {e}", path.display()))
    }
}
