//! `suppressd opt-in`, `opt-in-token` and `records`: a person's rights, from the command line of a
//! support agent or a data-protection officer, through a running server.

use super::{client, recipient, refused, scope, time};
use crate::{
    cli::args::{OptInArgs, OptInTokenArgs, RecordsArgs},
    proto,
};
use anyhow::bail;
use std::fmt::Write;

pub async fn opt_in(args: OptInArgs) -> anyhow::Result<String> {
    let request = match &args.token {
        Some(token) => proto::OptInRequest {
            recipient: None,
            scope: None,
            token: token.clone(),
            reason: String::new(),
        },
        None => proto::OptInRequest {
            recipient: Some(person(&args.recipient)?),
            scope: Some(scope(&args.scope)),
            token: String::new(),
            reason: args.reason.clone().unwrap_or_default(),
        },
    };
    let removed = client(&args.server)
        .await?
        .opt_in(request)
        .await
        .map_err(refused)?
        .into_inner()
        .removed;
    if removed.is_empty() {
        return Ok(
            "nothing to remove: no active opt-out of the person's own for that scope\n".into(),
        );
    }
    let mut out = format!(
        "opted in: {} opt-out(s) no longer suppress\n",
        removed.len()
    );
    for r in &removed {
        writeln!(out, "  {}", record_line(r))?;
    }
    Ok(out)
}

pub async fn opt_in_token(args: OptInTokenArgs) -> anyhow::Result<String> {
    let response = client(&args.server)
        .await?
        .issue_opt_in_token(proto::IssueOptInTokenRequest {
            recipient: Some(person(&args.recipient)?),
            scope: Some(scope(&args.scope)),
            ttl: args
                .ttl_secs
                .map(|seconds| prost_types::Duration { seconds, nanos: 0 }),
        })
        .await
        .map_err(refused)?
        .into_inner();
    Ok(format!(
        "{}\nexpires {}\n",
        response.token,
        time(response.expires_at)
    ))
}

pub async fn records(args: RecordsArgs) -> anyhow::Result<String> {
    let request = match &args.token {
        Some(token) => proto::ListSuppressionsRequest {
            recipient: None,
            tenant: String::new(),
            token: token.clone(),
        },
        None => proto::ListSuppressionsRequest {
            recipient: Some(person(&args.recipient)?),
            tenant: args.tenant.clone(),
            token: String::new(),
        },
    };
    let records = client(&args.server)
        .await?
        .list_suppressions(request)
        .await
        .map_err(refused)?
        .into_inner()
        .records;
    let mut out = format!("{} record(s)\n", records.len());
    for h in records {
        let state = proto::RecordState::try_from(h.state)
            .map(|s| {
                s.as_str_name()
                    .trim_start_matches("RECORD_STATE_")
                    .to_lowercase()
            })
            .unwrap_or_else(|_| h.state.to_string());
        let line = h.record.as_ref().map(record_line).unwrap_or_default();
        writeln!(out, "{line}  [{state}]")?;
        for e in h.events {
            let index = e.log_index.map_or("-".into(), |i| format!("#{i}"));
            writeln!(
                out,
                "    {} {:<17} by {} (log {index}) {}",
                time(e.at),
                e.action,
                e.actor,
                e.detail
            )?;
        }
    }
    Ok(out)
}

pub(super) fn person(args: &crate::cli::args::RecipientArgs) -> anyhow::Result<proto::Recipient> {
    match recipient(args) {
        Some(r) => Ok(r),
        None => bail!(
            "name the person: --email, --phone, --user-id, --push-token or --postal-address (or give --token)"
        ),
    }
}

/// One record on one line: receipt, scope, reason, source, received.
fn record_line(r: &proto::SuppressionRecord) -> String {
    let s = r.scope.clone().unwrap_or_default();
    let channel = proto::Channel::try_from(s.channel)
        .map(|c| {
            c.as_str_name()
                .trim_start_matches("CHANNEL_")
                .to_lowercase()
        })
        .unwrap_or_default();
    let reason = proto::Reason::try_from(r.reason)
        .map(|c| c.as_str_name().trim_start_matches("REASON_").to_lowercase())
        .unwrap_or_default();
    let mut line = format!(
        "{} tenant={:?} channel={} topic={:?} campaign={:?} reason={} received={}",
        r.receipt_id,
        s.tenant,
        channel.replace("unspecified", "*"),
        s.topic,
        s.campaign,
        reason,
        time(r.received_at)
    );
    if !r.import_batch.is_empty() {
        line += &format!(" import={}", r.import_batch);
    }
    line
}
