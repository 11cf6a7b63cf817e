//! The arguments of `suppressd import`, `rollback` and `imports`.

use super::ServerArgs;
use clap::{Args, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(
    after_help = "Exit status: 0 when every row was imported (or was a duplicate); 3 when \
    some rows were rejected and the others imported; 4 when nothing was imported: every row was \
    rejected, or the file held no rows; 1 when the import could not run (file, server, \
    permissions)."
)]
pub struct ImportArgs {
    /// A CSV file with a header row, or JSON lines (one object per line), with the columns
    /// recipient_type, recipient, tenant, channel, topic, campaign, reason, source, received_at,
    /// expires_at.
    pub(crate) file: PathBuf,
    /// The file's format; by default from its extension (.csv, .jsonl, .ndjson).
    #[arg(long, value_enum)]
    pub(crate) format: Option<Format>,
    /// Rejected lines printed in the summary.
    #[arg(long, default_value_t = 20)]
    pub(crate) show_rejections: usize,
    /// Also write every rejection the summary knows (line,problem as CSV) to this file.
    #[arg(long)]
    pub(crate) rejections_file: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Csv,
    Jsonl,
}

#[derive(Args, Debug)]
pub struct RollbackArgs {
    /// The batch id `suppressd import` printed.
    pub(crate) batch_id: String,
    /// Why the import is rolled back (recorded in the audit log).
    #[arg(long)]
    pub(crate) reason: String,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Subcommand, Debug)]
pub enum ImportsCommand {
    /// Lists import batches, newest first.
    List {
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        server: ServerArgs,
    },
}
