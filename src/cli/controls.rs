//! `suppressd halt|resume|mandatory|window|controls` (`trigger`: [`super::triggers`]): the operator's levers from a shell. Each is a gRPC
//! client of a running replica with an admin key, so a change from here is validated, authorized,
//! audited and propagated exactly like one from any other client.

use super::{channel, client, consent::requirement_json, refused, triggers::trigger_json};
use crate::{
    cli::args::{
        ChannelArg, ControlsCommand, HaltArgs, MandatoryCommand, ResumeArgs, WindowCommand,
    },
    domain::clock::system_now,
    proto,
};
use anyhow::{Context, bail};
use serde_json::{Value, json};

fn channel_codes(channels: &[ChannelArg]) -> Vec<i32> {
    channels.iter().map(|c| channel(Some(*c)) as i32).collect()
}

/// `30d`, `12h`, `90m`, `45s` → milliseconds.
pub(super) fn span_ms(text: &str) -> anyhow::Result<i64> {
    let (n, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 = n
        .parse()
        .with_context(|| format!("{text:?}: expected a number and a unit (s, m, h, d)"))?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => bail!("{text:?}: the unit must be s, m, h or d"),
    };
    n.checked_mul(unit_ms).context("too long")
}

pub async fn halt(args: HaltArgs) -> anyhow::Result<String> {
    let HaltArgs {
        tenant,
        topic,
        campaign,
        channels,
        reason,
        server,
    } = args;
    let halt = client(&server.server)
        .await?
        .halt_campaign(proto::HaltCampaignRequest {
            tenant,
            topic,
            campaign,
            channels: channel_codes(&channels),
            reason,
        })
        .await
        .map_err(refused)?
        .into_inner();
    Ok(render(server.json, halt_json(&halt)))
}

pub async fn resume(args: ResumeArgs) -> anyhow::Result<String> {
    let ResumeArgs {
        halt_id,
        reason,
        server,
    } = args;
    let halt = client(&server.server)
        .await?
        .resume_campaign(proto::ResumeCampaignRequest { halt_id, reason })
        .await
        .map_err(refused)?
        .into_inner();
    Ok(render(server.json, halt_json(&halt)))
}

pub async fn mandatory(command: MandatoryCommand) -> anyhow::Result<String> {
    match command {
        MandatoryCommand::Declare {
            tenant,
            topic,
            channels,
            legal_basis,
            approver,
            expires_in,
            ignore_send_windows,
            server,
        } => {
            let expires_at = system_now() + span_ms(&expires_in)?;
            let d = client(&server.server)
                .await?
                .declare_mandatory(proto::DeclareMandatoryRequest {
                    tenant,
                    topic,
                    channels: channel_codes(&channels),
                    legal_basis,
                    approver,
                    expires_at: Some(prost_types::Timestamp {
                        seconds: expires_at.div_euclid(1000),
                        nanos: 0,
                    }),
                    ignore_send_windows,
                })
                .await
                .map_err(refused)?
                .into_inner();
            Ok(render(server.json, declaration_json(&d)))
        }
        MandatoryCommand::Revoke {
            declaration_id,
            reason,
            server,
        } => {
            let d = client(&server.server)
                .await?
                .revoke_mandatory(proto::RevokeMandatoryRequest {
                    declaration_id,
                    reason,
                })
                .await
                .map_err(refused)?
                .into_inner();
            Ok(render(server.json, declaration_json(&d)))
        }
    }
}

pub async fn window(command: WindowCommand) -> anyhow::Result<String> {
    let (window, json) = match command {
        WindowCommand::Set {
            tenant,
            channel: ch,
            topic,
            start,
            end,
            time_zone,
            reason,
            server,
        } => {
            let request = proto::SetSendWindowRequest {
                tenant,
                channel: channel(ch) as i32,
                topic,
                start,
                end,
                time_zone,
                reason,
            };
            let mut client = client(&server.server).await?;
            let window = client.set_send_window(request).await.map_err(refused)?;
            (window.into_inner(), server.json)
        }
        WindowCommand::Remove {
            window_id,
            reason,
            server,
        } => {
            let request = proto::RemoveSendWindowRequest { window_id, reason };
            let mut client = client(&server.server).await?;
            let window = client.remove_send_window(request).await.map_err(refused)?;
            (window.into_inner(), server.json)
        }
    };
    Ok(render(json, window_json(&window)))
}

pub async fn controls(command: ControlsCommand) -> anyhow::Result<String> {
    let ControlsCommand::List {
        tenant,
        all,
        server,
    } = command;
    let list = client(&server.server)
        .await?
        .list_controls(proto::ListControlsRequest {
            tenant,
            include_ended: all,
        })
        .await
        .map_err(refused)?
        .into_inner();
    let value = json!({
        "halts": list.halts.iter().map(halt_json).collect::<Vec<_>>(),
        "mandatory": list.mandatory.iter().map(declaration_json).collect::<Vec<_>>(),
        "windows": list.windows.iter().map(window_json).collect::<Vec<_>>(),
        "consent_required": list.consent_required.iter().map(requirement_json).collect::<Vec<_>>(),
        "triggers": list.triggers.iter().map(trigger_json).collect::<Vec<_>>(),
    });
    if server.json {
        return Ok(render(true, value));
    }
    let mut out = String::new();
    for h in &list.halts {
        out += &render(false, halt_json(h));
        out.push('\n');
    }
    for d in &list.mandatory {
        out += &render(false, declaration_json(d));
        out.push('\n');
    }
    for w in &list.windows {
        out += &render(false, window_json(w));
        out.push('\n');
    }
    for r in &list.consent_required {
        out += &render(false, requirement_json(r));
        out.push('\n');
    }
    for t in &list.triggers {
        out += &render(false, trigger_json(t));
        out.push('\n');
    }
    if out.is_empty() {
        out = "no controls\n".into();
    }
    Ok(out)
}

/// RFC 3339 (UTC, seconds) of a proto timestamp; civil date from days per Howard Hinnant.
pub(super) fn time(t: &Option<prost_types::Timestamp>) -> Value {
    let Some(t) = t else { return Value::Null };
    let (days, secs) = (t.seconds.div_euclid(86_400), t.seconds.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    json!(format!(
        "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z"
    ))
}

pub(super) fn channel_names(codes: &[i32]) -> Vec<String> {
    codes
        .iter()
        .map(|c| {
            proto::Channel::try_from(*c).map_or_else(
                |_| c.to_string(),
                |c| {
                    c.as_str_name()
                        .trim_start_matches("CHANNEL_")
                        .to_lowercase()
                },
            )
        })
        .collect()
}

fn halt_json(h: &proto::Halt) -> Value {
    json!({
        "halt_id": h.halt_id,
        "tenant": h.tenant,
        "topic": h.topic,
        "campaign": h.campaign,
        "channels": if h.channels.is_empty() { vec!["every".to_owned()] } else { channel_names(&h.channels) },
        "reason": h.reason,
        "halted_by": h.halted_by,
        "halted_at": time(&h.halted_at),
        "resumed_at": time(&h.resumed_at),
        "resumed_by": h.resumed_by,
        "resume_reason": h.resume_reason,
        "propagation": propagation_json(&h.propagation),
    })
}

/// How far a change had reached: `confirmed by a, b`, or `UNCONFIRMED …` naming the replicas that
/// did not load it (they answer no check with "send" until they do).
pub(super) fn propagation_json(p: &Option<proto::Propagation>) -> Value {
    let Some(p) = p else { return Value::Null };
    let confirmed = p.confirmed_replicas.join(", ");
    if p.outcome == proto::PropagationOutcome::Confirmed as i32 {
        return json!(format!("confirmed by {confirmed}"));
    }
    let why = if p.unconfirmed_replicas.is_empty() {
        p.detail.clone()
    } else {
        format!(
            "not loaded within the bound by {} (they answer no check with send until they do)",
            p.unconfirmed_replicas.join(", ")
        )
    };
    json!(format!("UNCONFIRMED: {why}; confirmed by {confirmed}"))
}

fn declaration_json(d: &proto::MandatoryDeclaration) -> Value {
    json!({
        "declaration_id": d.declaration_id,
        "tenant": d.tenant,
        "topic": d.topic,
        "channels": channel_names(&d.channels),
        "legal_basis": d.legal_basis,
        "approver": d.approver,
        "expires_at": time(&d.expires_at),
        "declared_by": d.declared_by,
        "declared_at": time(&d.declared_at),
        "revoked_at": time(&d.revoked_at),
        "revoked_by": d.revoked_by,
        "revoke_reason": d.revoke_reason,
        "ignore_send_windows": d.ignore_send_windows,
        "propagation": propagation_json(&d.propagation),
    })
}

fn window_json(w: &proto::SendWindow) -> Value {
    json!({
        "window_id": w.window_id,
        "tenant": w.tenant,
        "channel": if w.channel == 0 { "every".to_owned() } else { channel_names(&[w.channel]).join("") },
        "topic": w.topic,
        "start": w.start,
        "end": w.end,
        "time_zone": w.time_zone,
        "reason": w.reason,
        "set_by": w.set_by,
        "set_at": time(&w.set_at),
        "removed_at": time(&w.removed_at),
        "removed_by": w.removed_by,
        "remove_reason": w.remove_reason,
        "propagation": propagation_json(&w.propagation),
    })
}

/// JSON, or one `key: value` line per field that is set.
pub(super) fn render(as_json: bool, value: Value) -> String {
    if as_json {
        return format!("{value:#}\n");
    }
    let mut out = String::new();
    if let Value::Object(fields) = value {
        for (key, v) in fields {
            let text = match v {
                Value::Null => continue,
                Value::String(s) if s.is_empty() => continue,
                Value::String(s) => s,
                Value::Array(items) => items
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
                other => other.to_string(),
            };
            out += &format!("{key}: {text}\n");
        }
    }
    out
}
