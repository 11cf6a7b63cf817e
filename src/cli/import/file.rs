//! Reading an import file: CSV with a header row, or JSON lines, one row at a time into the bounded
//! channel that feeds the client stream. A line that cannot become a row is rejected here, by line.

use crate::proto;
use anyhow::{Context, bail};
use std::{
    cell::RefCell,
    collections::VecDeque,
    io::{BufRead, Read},
    rc::Rc,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};
use tokio::sync::mpsc;

/// Local rejections kept for the summary (the server keeps its first 1,000 too).
const MAX_LOCAL_REJECTIONS: usize = 1_000;

/// One line that created nothing.
pub(super) struct Rejected {
    pub(crate) line: u64,
    pub(crate) problem: String,
}

/// Counts the bytes the parser has read, for the progress bar.
pub(super) struct Counting<R> {
    pub(crate) inner: R,
    pub(crate) read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// What the reader thread hands back once the file is read.
#[derive(Default)]
pub(super) struct ReadOutcome {
    pub(crate) rows: u64,
    pub(crate) local: Vec<Rejected>,
    pub(crate) local_count: u64,
}

/// One row of the file, before it is checked: every column as text (absent = empty).
#[derive(serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct FileRow {
    recipient_type: String,
    recipient: String,
    tenant: String,
    channel: String,
    topic: String,
    campaign: String,
    reason: String,
    source: String,
    received_at: String,
    expires_at: String,
}

/// Sends one parsed line, or keeps its rejection. `false` once the server stopped reading.
fn deliver(
    line: u64,
    parsed: anyhow::Result<FileRow>,
    tx: &mpsc::Sender<proto::ImportRow>,
    sent: &AtomicU64,
    outcome: &mut ReadOutcome,
) -> bool {
    outcome.rows += 1;
    match parsed.and_then(|r| to_proto(line, r)) {
        Ok(row) => {
            if tx.blocking_send(row).is_err() {
                return false;
            }
            sent.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            outcome.local_count += 1;
            if outcome.local.len() < MAX_LOCAL_REJECTIONS {
                outcome.local.push(Rejected {
                    line,
                    problem: format!("{e:#}"),
                });
            }
        }
    }
    true
}

/// Reads CSV with a header row. The header is checked before any row is sent (an unknown column is
/// a wrong file, not a bad line); a record's line is where it starts, so a quoted field spanning
/// lines still names the line the operator finds it on.
pub(super) fn read_csv(
    reader: impl Read,
    tx: &mpsc::Sender<proto::ImportRow>,
    sent: &AtomicU64,
) -> anyhow::Result<ReadOutcome> {
    let (reader, mut lines) = Newlines::wrap(reader);
    let mut csv = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(reader);
    let headers = csv.headers().context("reading the CSV header row")?.clone();
    for name in &headers {
        if !COLUMNS.contains(&name) {
            bail!(
                "unknown column {name:?} in the header row (known: {})",
                COLUMNS.join(", ")
            );
        }
    }
    for required in ["recipient_type", "recipient"] {
        if !headers.iter().any(|h| h == required) {
            bail!("the header row lacks the column {required:?}");
        }
    }
    let mut outcome = ReadOutcome::default();
    let mut record = csv::StringRecord::new();
    loop {
        let start = csv.position().byte();
        let parsed = match csv.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => record
                .deserialize::<FileRow>(Some(&headers))
                .map_err(|e| anyhow::anyhow!("{}", csv_problem(&e))),
            Err(e) if e.is_io_error() => return Err(e).context("reading the file"),
            Err(e) => Err(anyhow::anyhow!("{}", csv_problem(&e))),
        };
        let line = lines.line_at(record.position().map_or(start, |p| p.byte()));
        if !deliver(line, parsed, tx, sent, &mut outcome) {
            break;
        }
    }
    Ok(outcome)
}

/// Line numbers of CSV records, counted here because the csv crate's cannot be trusted: it starts
/// a record's position where its parser resumed, which after a CRLF (RFC 4180's and Excel's line
/// ending) is the LF, and before a blank line is that line. The reader notes where each LF is and
/// where each line with content starts; a record is on the first line with content at or after its
/// position. Only marks not yet passed are kept, so memory stays flat.
struct Newlines<R> {
    inner: R,
    read: u64,
    after_lf: bool,
    marks: Rc<RefCell<Marks>>,
}

#[derive(Default)]
struct Marks {
    lfs: VecDeque<u64>,
    starts: VecDeque<u64>,
}

/// The counting side of [`Newlines`].
struct LineCount {
    marks: Rc<RefCell<Marks>>,
    passed: u64,
}

impl<R: Read> Newlines<R> {
    fn wrap(inner: R) -> (Newlines<R>, LineCount) {
        let marks = Rc::new(RefCell::new(Marks::default()));
        let count = LineCount {
            marks: marks.clone(),
            passed: 0,
        };
        let reader = Newlines {
            inner,
            read: 0,
            after_lf: true,
            marks,
        };
        (reader, count)
    }
}

impl<R: Read> Read for Newlines<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut marks = self.marks.borrow_mut();
        for (i, &byte) in buf[..n].iter().enumerate() {
            let at = self.read + i as u64;
            match byte {
                b'\n' => marks.lfs.push_back(at),
                b'\r' => {}
                _ if self.after_lf => marks.starts.push_back(at),
                _ => {}
            }
            self.after_lf = byte == b'\n' || (self.after_lf && byte == b'\r');
        }
        self.read += n as u64;
        Ok(n)
    }
}

impl LineCount {
    /// The 1-based line of a record the csv crate positions at `offset`; offsets must not go
    /// backwards.
    fn line_at(&mut self, offset: u64) -> u64 {
        let mut marks = self.marks.borrow_mut();
        while marks.starts.front().is_some_and(|&s| s < offset) {
            marks.starts.pop_front();
        }
        let start = marks.starts.front().copied().unwrap_or(offset);
        while marks.lfs.front().is_some_and(|&lf| lf < start) {
            marks.lfs.pop_front();
            self.passed += 1;
        }
        self.passed + 1
    }
}

/// A CSV error as a rejection, without the byte offsets and record numbers csv adds.
fn csv_problem(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("bad CSV: {len} fields where the header has {expected_len}"),
        csv::ErrorKind::Deserialize { err, .. } => format!("bad CSV: {}", err.kind()),
        csv::ErrorKind::Utf8 { .. } => "bad CSV: not UTF-8".into(),
        _ => format!("bad CSV: {e}"),
    }
}

/// Reads JSON lines: one object a line, blank lines skipped. A line that is not valid UTF-8 is a
/// rejected line; any other read error ends the import.
pub(super) fn read_jsonl(
    reader: impl BufRead,
    tx: &mpsc::Sender<proto::ImportRow>,
    sent: &AtomicU64,
) -> anyhow::Result<ReadOutcome> {
    let mut outcome = ReadOutcome::default();
    for (i, text) in reader.lines().enumerate() {
        let line = i as u64 + 1;
        let text = match text {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                let parsed = Err(anyhow::anyhow!("bad JSON: not UTF-8"));
                if !deliver(line, parsed, tx, sent, &mut outcome) {
                    break;
                }
                continue;
            }
            Err(e) => return Err(e).context("reading the file"),
        };
        if text.trim().is_empty() {
            continue;
        }
        let parsed =
            serde_json::from_str::<FileRow>(&text).map_err(|e| anyhow::anyhow!("bad JSON: {e}"));
        if !deliver(line, parsed, tx, sent, &mut outcome) {
            break;
        }
    }
    Ok(outcome)
}

/// The columns a file may have, in CSV and JSON alike.
const COLUMNS: [&str; 10] = [
    "recipient_type",
    "recipient",
    "tenant",
    "channel",
    "topic",
    "campaign",
    "reason",
    "source",
    "received_at",
    "expires_at",
];

/// Looks a name up among a proto enum's values, with or without its prefix, in any case.
fn named<E>(
    column: &str,
    value: &str,
    prefix: &str,
    parse: fn(&str) -> Option<E>,
) -> anyhow::Result<E> {
    let upper = value.trim().to_ascii_uppercase();
    let full = if upper.starts_with(prefix) {
        upper.clone()
    } else {
        format!("{prefix}{upper}")
    };
    parse(&full).with_context(|| format!("{column}: unknown value {value:?}"))
}

/// A file row as the import message; only names are checked here, values are the server's to judge.
fn to_proto(line: u64, r: FileRow) -> anyhow::Result<proto::ImportRow> {
    use proto::recipient::Id;
    let value = r.recipient;
    let id = match r.recipient_type.trim().to_ascii_lowercase().as_str() {
        "email" => Id::Email(value),
        "phone" => Id::Phone(value),
        "user_id" => Id::UserId(value),
        "push_token" => Id::PushToken(value),
        "postal_address" => Id::PostalAddress(value),
        other => bail!(
            "recipient_type: unknown value {other:?} (email, phone, user_id, push_token or \
             postal_address)"
        ),
    };
    let channel = match r.channel.trim() {
        "" | "all" | "ALL" => proto::Channel::Unspecified,
        c => named("channel", c, "CHANNEL_", proto::Channel::from_str_name)?,
    };
    let reason = match r.reason.trim() {
        "" => proto::Reason::Unspecified, // the server says it is required
        v => named("reason", v, "REASON_", proto::Reason::from_str_name)?,
    };
    let source = match r.source.trim() {
        "" => proto::Source::Unspecified, // the server takes it as IMPORT
        v => named("source", v, "SOURCE_", proto::Source::from_str_name)?,
    };
    let time = |column: &str, v: &str| -> anyhow::Result<Option<prost_types::Timestamp>> {
        match v.trim() {
            "" => Ok(None),
            t => t
                .parse()
                .map(Some)
                .map_err(|_| anyhow::anyhow!("{column}: {t:?} is not an RFC 3339 time")),
        }
    };
    Ok(proto::ImportRow {
        line,
        recipient: Some(proto::Recipient { id: Some(id) }),
        scope: Some(proto::Scope {
            tenant: r.tenant,
            channel: channel as i32,
            topic: r.topic,
            campaign: r.campaign,
        }),
        reason: reason as i32,
        source: source as i32,
        received_at: time("received_at", &r.received_at)?,
        expires_at: time("expires_at", &r.expires_at)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The line of every row sent and every row rejected, as the operator would count lines.
    fn lines_of(text: &str) -> (Vec<u64>, Vec<u64>) {
        let (tx, mut rx) = mpsc::channel(1_000);
        let outcome = read_csv(text.as_bytes(), &tx, &AtomicU64::new(0)).unwrap();
        drop(tx);
        let mut sent = Vec::new();
        while let Ok(row) = rx.try_recv() {
            sent.push(row.line);
        }
        (sent, outcome.local.iter().map(|r| r.line).collect())
    }

    /// RFC 4180 and Excel end lines with CRLF: the lines named are the same as with LF, also after
    /// a quoted field that spans lines.
    #[test]
    fn csv_lines_are_counted_alike_with_crlf_and_lf() {
        let lf = "recipient_type,recipient,tenant\n\
                  email,a@example.com,t\n\
                  fax,b@example.com,t\n\
                  email,\"c@example.com\",\"multi\nline\"\n\
                  email,d@example.com\n\
                  email,e@example.com,t\n\
                  nope,f@example.com,t\n";
        let crlf = lf.replace('\n', "\r\n");
        let expected = (vec![2, 4, 7], vec![3, 6, 8]);
        assert_eq!(lines_of(lf), expected);
        assert_eq!(lines_of(&crlf), expected);
        // A blank line is skipped, and still counted.
        let blank = lf.replace("email,e@example.com,t\n", "\nemail,e@example.com,t\n");
        let expected = (vec![2, 4, 8], vec![3, 6, 9]);
        assert_eq!(lines_of(&blank), expected);
        assert_eq!(lines_of(&blank.replace('\n', "\r\n")), expected);
    }
}
