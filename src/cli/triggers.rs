//! `suppressd trigger set|remove|list`: halt triggers from a shell, as a gRPC client of a running
//! replica with an admin key, like the other operator commands (`super::controls`).

use super::{
    client,
    controls::{propagation_json, render, span_ms, time},
    refused,
};
use crate::{cli::args::TriggerCommand, proto};
use anyhow::Context;
use serde_json::{Value, json};

pub async fn trigger(command: TriggerCommand) -> anyhow::Result<String> {
    match command {
        TriggerCommand::Set {
            tenant,
            topic,
            campaign,
            window,
            max_opt_outs,
            max_complaints,
            max_rate,
            min_checks,
            reason,
            server,
        } => {
            let seconds = span_ms(&window)? / 1000;
            let request = proto::SetHaltTriggerRequest {
                tenant,
                topic,
                campaign,
                window_seconds: u32::try_from(seconds).context("--window is too long")?,
                max_opt_outs,
                max_complaints,
                max_opt_out_rate: max_rate,
                min_checks,
                reason,
            };
            let mut client = client(&server.server).await?;
            let set = client.set_halt_trigger(request).await.map_err(refused)?;
            Ok(render(server.json, trigger_json(&set.into_inner())))
        }
        TriggerCommand::Remove {
            trigger_id,
            reason,
            server,
        } => {
            let request = proto::RemoveHaltTriggerRequest { trigger_id, reason };
            let mut client = client(&server.server).await?;
            let removed = client.remove_halt_trigger(request).await.map_err(refused)?;
            Ok(render(server.json, trigger_json(&removed.into_inner())))
        }
        TriggerCommand::List {
            tenant,
            all,
            server,
        } => {
            let request = proto::ListHaltTriggersRequest {
                tenant,
                include_ended: all,
            };
            let mut client = client(&server.server).await?;
            let list = client.list_halt_triggers(request).await.map_err(refused)?;
            let triggers = list.into_inner().triggers;
            if server.json {
                let all: Vec<Value> = triggers.iter().map(trigger_json).collect();
                return Ok(render(true, json!({ "triggers": all })));
            }
            if triggers.is_empty() {
                return Ok("no halt triggers\n".into());
            }
            Ok(triggers
                .iter()
                .map(|t| render(false, trigger_json(t)) + "\n")
                .collect())
        }
    }
}

/// A trigger for printing; thresholds that are not set (0) are left out of the text.
pub(super) fn trigger_json(t: &proto::HaltTrigger) -> Value {
    let set = |n: u64| (n > 0).then_some(n);
    json!({
        "trigger_id": t.trigger_id,
        "tenant": t.tenant,
        "topic": t.topic,
        "campaign": t.campaign,
        "window_seconds": t.window_seconds,
        "max_opt_outs": set(t.max_opt_outs),
        "max_complaints": set(t.max_complaints),
        "max_opt_out_rate": (t.max_opt_out_rate > 0.0).then_some(t.max_opt_out_rate),
        "min_checks": set(t.min_checks),
        "reason": t.reason,
        "set_by": t.set_by,
        "set_at": time(&t.set_at),
        "removed_at": time(&t.removed_at),
        "removed_by": t.removed_by,
        "remove_reason": t.remove_reason,
        "propagation": propagation_json(&t.propagation),
    })
}
