//! `suppressd import FILE`, `suppressd rollback BATCH_ID` and `suppressd imports list`: the operator's
//! side of bulk imports, through the generated client like any other caller.
//!
//! The file is streamed, never loaded whole: a blocking thread reads and parses it into a bounded
//! channel that feeds the client stream, so memory stays flat and the server's flow control paces
//! the reader. One rule for bad lines: a line the CLI cannot turn into a row (bad CSV or JSON, an
//! unknown recipient type, channel, reason or source, a malformed timestamp) is rejected here with
//! its line number; everything else goes to the server, which rejects what it cannot accept. The
//! summary shows both kinds, by line.

mod file;

use super::{client, refused, time};
use crate::cli::args::{Format, ImportArgs, RollbackArgs, ServerArgs};
use crate::proto;
use anyhow::{Context, bail};

use file::{Counting, ReadOutcome, Rejected, read_csv, read_jsonl};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::{
    fs::File,
    io::BufReader,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::sync::mpsc;

/// Rows parsed ahead of the server: enough to keep the stream busy, small enough to stay flat.
const AHEAD: usize = 2_048;

/// How an import went, as its exit status (the command's help documents the codes): a script must
/// be able to tell a partial or empty import from a complete one without parsing the summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportStatus {
    /// Every row was imported, or was a duplicate of an active record.
    Complete = 0,
    /// Some rows were rejected; the others were imported.
    SomeRejected = 3,
    /// Nothing was imported: every row was rejected, or the file held none.
    NothingImported = 4,
}

impl ImportStatus {
    fn of(rows: u64, rejected: u64) -> ImportStatus {
        match rejected {
            _ if rows == 0 || rejected >= rows => ImportStatus::NothingImported,
            0 => ImportStatus::Complete,
            _ => ImportStatus::SomeRejected,
        }
    }
}

/// `suppressd import FILE`: streams the file to the server; the summary to print, and the status.
pub async fn import(args: ImportArgs) -> anyhow::Result<(String, ImportStatus)> {
    let format = match args.format {
        Some(f) => f,
        None => format_of(&args.file)?,
    };
    let file = File::open(&args.file).with_context(|| format!("opening {:?}", args.file))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let read = Arc::new(AtomicU64::new(0));
    let reader = BufReader::with_capacity(
        256 * 1024,
        Counting {
            inner: file,
            read: read.clone(),
        },
    );
    let mut client = client(&args.server).await?;
    let (tx, rx) = mpsc::channel(AHEAD);
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    // The reader hands its sender back, so that on a read error the stream is still open when the
    // call is dropped: the batch stays unfinished instead of ending as if the file were complete.
    let parse = tokio::task::spawn_blocking(move || {
        let outcome = match format {
            Format::Csv => read_csv(reader, &tx, &counter),
            Format::Jsonl => read_jsonl(reader, &tx, &counter),
        };
        (outcome, tx)
    });
    let call = tokio::spawn(async move {
        client
            .import_suppressions(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    let bar = progress(size);
    let started = Instant::now();
    let ticker = {
        let (bar, sent, read) = (bar.clone(), sent.clone(), read.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                bar.set_position(read.load(Ordering::Relaxed));
                let rows = sent.load(Ordering::Relaxed);
                let rate = rows as f64 / started.elapsed().as_secs_f64().max(0.001);
                bar.set_message(format!("{rows} rows, {rate:.0} rows/s"));
            }
        })
    };
    let (outcome, tx) = parse.await.context("the file reader panicked")?;
    ticker.abort();
    bar.finish_and_clear();
    let outcome = match outcome {
        Ok(outcome) => outcome,
        // The server stopped reading: its answer says why.
        Err(_) if call.is_finished() => ReadOutcome::default(),
        Err(e) => {
            call.abort();
            drop(tx);
            return Err(e.context(
                "the file could not be read to its end; the import was cancelled (its batch is \
                 listed unfinished: roll it back if it imported anything)",
            ));
        }
    };
    drop(tx);
    let summary = call
        .await
        .context("the import call panicked")?
        .map_err(refused)?
        .into_inner();
    let status = ImportStatus::of(outcome.rows, summary.rejected + outcome.local_count);
    Ok((report(summary, outcome, started.elapsed(), &args)?, status))
}

/// `suppressd rollback BATCH_ID --reason R`.
pub async fn rollback(args: RollbackArgs) -> anyhow::Result<String> {
    let mut client = client(&args.server).await?;
    let s = client
        .rollback_import(proto::RollbackImportRequest {
            batch_id: args.batch_id,
            reason: args.reason,
        })
        .await
        .map_err(refused)?
        .into_inner();
    Ok(format!(
        "batch_id: {}\nremoved: {}\nalready_ended: {}\n",
        s.batch_id, s.removed, s.already_ended
    ))
}

/// `suppressd imports list`.
pub async fn list(limit: u32, server: &ServerArgs) -> anyhow::Result<String> {
    let mut client = client(server).await?;
    let batches = client
        .list_imports(proto::ListImportsRequest { limit })
        .await
        .map_err(refused)?
        .into_inner()
        .batches;
    let mut out = format!(
        "{:<36}  {:<16}  {:<24}  {:<24}  {:>9}  {:>10}  {:>8}  rolled back\n",
        "batch", "by", "started", "finished", "imported", "duplicates", "rejected"
    );
    for b in batches {
        let rolled = match b.rolled_back_at {
            Some(at) => format!("{} by {}", time(Some(at)), b.rolled_back_by),
            None => "-".into(),
        };
        out.push_str(&format!(
            "{:<36}  {:<16}  {:<24}  {:<24}  {:>9}  {:>10}  {:>8}  {rolled}\n",
            b.batch_id,
            b.imported_by,
            time(b.started_at),
            time(b.finished_at),
            b.imported,
            b.duplicates,
            b.rejected
        ));
    }
    Ok(out)
}

fn format_of(path: &Path) -> anyhow::Result<Format> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("csv") => Ok(Format::Csv),
        Some("jsonl" | "ndjson") => Ok(Format::Jsonl),
        _ => {
            bail!("cannot tell the format of {path:?} from its extension: pass --format csv|jsonl")
        }
    }
}

fn progress(size: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {binary_bytes}/{binary_total_bytes} {msg}",
    )
    .expect("a valid template");
    bar.set_style(style);
    bar
}

/// The printed summary: counts first (one `name: value` a line), then rejected lines in line order.
fn report(
    s: proto::ImportSummary,
    local: ReadOutcome,
    elapsed: Duration,
    args: &ImportArgs,
) -> anyhow::Result<String> {
    let mut rejections: Vec<Rejected> = s
        .rejections
        .into_iter()
        .map(|r| Rejected {
            line: r.line,
            problem: r.problem,
        })
        .chain(local.local)
        .collect();
    rejections.sort_by_key(|r| r.line);
    let rejected = s.rejected + local.local_count;
    let rate = local.rows as f64 / elapsed.as_secs_f64().max(0.001);
    let mut out = format!(
        "batch_id: {}\nimported: {}\nduplicates: {}\nrejected: {rejected}\nrows: {} in {:.1} s \
         ({rate:.0} rows/s)\n",
        s.batch_id,
        s.imported,
        s.duplicates,
        local.rows,
        elapsed.as_secs_f64()
    );
    for r in rejections.iter().take(args.show_rejections) {
        out.push_str(&format!("line {}: {}\n", r.line, r.problem));
    }
    let known = rejections.len() as u64;
    if rejected > args.show_rejections as u64 {
        out.push_str(&format!(
            "… {} more rejected lines{}\n",
            rejected - (args.show_rejections as u64).min(known),
            if args.rejections_file.is_some() {
                ""
            } else {
                " (--rejections-file to keep them)"
            }
        ));
    }
    if let Some(path) = &args.rejections_file {
        let mut w = csv::Writer::from_path(path).with_context(|| format!("writing {path:?}"))?;
        w.write_record(["line", "problem"])?;
        for r in &rejections {
            w.write_record([r.line.to_string(), r.problem.clone()])?;
        }
        w.flush()?;
        if known < rejected {
            out.push_str(&format!(
                "{path:?} holds the first {known} of {rejected} rejections (the server reports \
                 its first 1,000)\n"
            ));
        }
    }
    Ok(out)
}
