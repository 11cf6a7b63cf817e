//! The latency row measured by a client that knows nothing of us: `h2load` (Debian's
//! `nghttp2-client`), sending the same gRPC request over HTTP/2, one at a time, to the server and to
//! the empty handler. A check is a unary gRPC call, which is an HTTP/2 POST of a length-prefixed
//! protobuf with `content-type: application/grpc`; h2load sends such a body as it is, and writes
//! every request's duration to a log, from which the p50 is taken here.
//!
//! h2load does not read gRPC trailers (a refused call is still HTTP 200), so the same request is
//! first sent through the suite's own client, which must get OK: the row times answers, not
//! refusals.

use super::{Alternated, Placement, Rig};
use crate::suite::{
    fixtures::{CAMPAIGN, TENANT, TOPIC, email},
    load::{Ctx, Load, ok_count, us},
    table::Row,
};
use anyhow::{Context, bail};
use prost::Message;
use std::{net::SocketAddr, path::Path, process::Command, time::Duration};
use suppressd::proto;

/// The Debian package that ships h2load.
const PACKAGE: &str = "nghttp2-client";

/// p50 at concurrency 1 of CheckSuppressed vs the empty handler, by h2load.
pub(super) async fn outside_rows(
    cx: &mut Ctx,
    rig: &Rig<'_>,
    out: &Path,
    requests: u64,
) -> anyhow::Result<()> {
    if Command::new("h2load").arg("--version").output().is_err() {
        cx.report.warnings.push(format!(
            "h2load is not installed (Debian package {PACKAGE}): the outside-client row is missing"
        ));
        return Ok(());
    }
    let request = proto::CheckSuppressedRequest {
        recipient: Some(proto::Recipient {
            id: Some(proto::recipient::Id::Email(email(0))),
        }),
        scope: Some(proto::Scope {
            tenant: TENANT.into(),
            channel: proto::Channel::Email as i32,
            topic: TOPIC.into(),
            campaign: CAMPAIGN.into(),
        }),
        ..Default::default()
    };
    // The same request through our own client first: it must be answered OK on both.
    let json = serde_json::json!([{
        "recipient": {"email": email(0)},
        "scope": {"tenant": TENANT, "channel": "CHANNEL_EMAIL", "topic": TOPIC, "campaign": CAMPAIGN},
    }])
    .to_string();
    let probe = Load {
        data: &json,
        concurrency: 1,
        duration: Duration::from_millis(200),
        ..rig.checking
    };
    for (name, addr) in [
        ("outside-probe", rig.server_addr),
        ("outside-probe-baseline", rig.baseline_addr),
    ] {
        let report = cx.load(name, addr, probe).await?;
        if ok_count(&report) == 0 || ok_count(&report) < report.count {
            bail!("{name}: the request h2load will send is not answered OK");
        }
    }

    let body = out.join("h2load-check.bin");
    let message = request.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    std::fs::write(&body, framed).context("writing the h2load request body")?;

    eprintln!("CheckSuppressed at concurrency 1 by h2load…");
    let at_one = |placement: Placement| -> anyhow::Result<Alternated> {
        let _pinned = rig.place(placement)?;
        let p50 = |run: &str, addr: SocketAddr| {
            let name = format!("h2load-{run}-{}", placement.name());
            h2load_p50(out, &name, addr, &body, requests)
        };
        let base1 = p50("baseline", rig.baseline_addr)?;
        let check1 = p50("check", rig.server_addr)?;
        let check2 = p50("check-2", rig.server_addr)?;
        let base2 = p50("baseline-2", rig.baseline_addr)?;
        Ok(Alternated {
            placement,
            base: [base1, base2],
            check: [check1, check2],
        })
    };
    let apart = at_one(Placement::Apart)?;
    let together = at_one(Placement::Together)?;
    cx.report.rows.push(Row::new(
        "check_p50_ratio_h2load",
        "CheckSuppressed p50 at c=1 vs empty handler, by h2load (an outside client, on another CPU)",
        apart.ratio(),
        format!("{:.2}× ({})", apart.ratio(), us(apart.check())),
        format!(
            "h2load -c1 -m1, {requests} requests per run, alternating; {}; {}",
            apart.detail(),
            together.detail(),
        ),
    ));
    Ok(())
}

/// Runs h2load once and returns the p50 of its requests, in nanoseconds.
fn h2load_p50(
    out: &Path,
    name: &str,
    addr: SocketAddr,
    body: &Path,
    requests: u64,
) -> anyhow::Result<u64> {
    let log = out.join(format!("{name}.log"));
    // h2load appends to its log: a previous run's, in the same directory, would be read as this
    // run's requests.
    if let Err(e) = std::fs::remove_file(&log)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        return Err(e).context("removing the previous h2load log");
    }
    let url = format!("http://{addr}/suppress.v1.Suppression/CheckSuppressed");
    let output = Command::new("h2load")
        .args(["-n", &requests.to_string(), "-c", "1", "-m", "1"])
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .arg("-d")
        .arg(body)
        .arg("--log-file")
        .arg(&log)
        .arg(&url)
        .output()
        .context("running h2load")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || !stdout.contains(&format!("{requests} succeeded")) {
        bail!("{name}: h2load did not complete every request:\n{stdout}");
    }
    // h2load counts HTTP statuses, and a gRPC error is an HTTP 200 too: its status comes in a
    // trailers-only response, without a message. Every answer here has one (five bytes of framing
    // at least), so fewer bytes of data than that are errors.
    if data_bytes(&stdout).is_none_or(|bytes| bytes < 5 * requests) {
        bail!(
            "{name}: some of h2load's requests were answered without a message (gRPC errors):\n{stdout}"
        );
    }
    // Each line: start time (µs since the epoch), HTTP status, duration (µs).
    let text = std::fs::read_to_string(&log).context("reading the h2load log")?;
    let mut durations: Vec<u64> = text
        .lines()
        .filter_map(|line| line.split('\t').nth(2)?.trim().parse().ok())
        .collect();
    if durations.len() as u64 != requests {
        bail!(
            "{name}: {} durations in the h2load log for {requests} requests",
            durations.len()
        );
    }
    durations.sort_unstable();
    Ok(durations[durations.len() / 2] * 1_000)
}

/// The bytes of DATA frames h2load received, from its `traffic:` line (`…, 97.66KB (100000) data`).
fn data_bytes(stdout: &str) -> Option<u64> {
    let traffic = stdout.lines().find(|l| l.starts_with("traffic:"))?;
    let before = traffic.strip_suffix(" data")?;
    let (_, count) = before.rsplit_once('(')?;
    count.strip_suffix(')')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::data_bytes;

    #[test]
    fn the_data_bytes_are_read_from_h2loads_traffic_line() {
        let stdout = "requests: 20000 total, 20000 started, 20000 done, 20000 succeeded, 0 failed\n\
             traffic: 703.24KB (720118) total, 58.65KB (60058) headers (space savings 95.77%), \
             97.66KB (100000) data\n";
        assert_eq!(data_bytes(stdout), Some(100_000));
        assert_eq!(
            data_bytes("traffic: 0B (0) total, 0B (0) headers, 0B (0) data"),
            Some(0)
        );
        assert_eq!(data_bytes("requests: 1 total"), None);
    }
}
