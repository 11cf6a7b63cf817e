//! `suppressd consent require|drop|record`: consent-required topics (admin) and a person's consent
//! (write) from a shell. Each is a gRPC client of a running replica, so a change from here is
//! validated, authorized, audited and propagated exactly like one from any other client.

use super::{
    channel, client,
    controls::{channel_names, propagation_json, render, time},
    refused,
    rights::person,
    scope,
};
use crate::{
    cli::args::{ConsentCommand, RecordConsentArgs},
    proto,
};
use serde_json::{Value, json};

pub async fn consent(command: ConsentCommand) -> anyhow::Result<String> {
    match command {
        ConsentCommand::Require {
            tenant,
            channel: ch,
            topic,
            reason,
            server,
        } => {
            let request = proto::RequireConsentRequest {
                tenant,
                channel: channel(ch) as i32,
                topic,
                reason,
            };
            let mut client = client(&server.server).await?;
            let r = client.require_consent(request).await.map_err(refused)?;
            Ok(render(server.json, requirement_json(&r.into_inner())))
        }
        ConsentCommand::Drop {
            requirement_id,
            reason,
            server,
        } => {
            let request = proto::DropConsentRequirementRequest {
                requirement_id,
                reason,
            };
            let mut client = client(&server.server).await?;
            let r = client
                .drop_consent_requirement(request)
                .await
                .map_err(refused)?;
            Ok(render(server.json, requirement_json(&r.into_inner())))
        }
        ConsentCommand::Record(RecordConsentArgs {
            recipient,
            scope: scope_args,
            source,
            proof,
            obtained_by,
            server,
        }) => {
            let request = proto::RecordConsentRequest {
                recipient: Some(person(&recipient)?),
                scope: Some(scope(&scope_args)),
                evidence: Some(proto::ConsentEvidence {
                    source,
                    proof,
                    actor: obtained_by,
                }),
            };
            let mut client = client(&server.server).await?;
            let c = client.record_consent(request).await.map_err(refused)?;
            Ok(render(server.json, consent_json(&c.into_inner())))
        }
    }
}

pub(super) fn requirement_json(r: &proto::ConsentRequirement) -> Value {
    json!({
        "requirement_id": r.requirement_id,
        "tenant": r.tenant,
        "channel": if r.channel == 0 { "every".to_owned() } else { channel_names(&[r.channel]).join("") },
        "topic": r.topic,
        "reason": r.reason,
        "required_by": r.required_by,
        "required_at": time(&r.required_at),
        "dropped_at": time(&r.dropped_at),
        "dropped_by": r.dropped_by,
        "drop_reason": r.drop_reason,
        "propagation": propagation_json(&r.propagation),
    })
}

fn consent_json(c: &proto::Consent) -> Value {
    let s = c.scope.clone().unwrap_or_default();
    let e = c.evidence.clone().unwrap_or_default();
    json!({
        "consent_id": c.consent_id,
        "tenant": s.tenant,
        "channel": if s.channel == 0 { "every".to_owned() } else { channel_names(&[s.channel]).join("") },
        "topic": s.topic,
        "campaign": s.campaign,
        "source": e.source,
        "proof": e.proof,
        "obtained_by": e.actor,
        "recorded_by": c.recorded_by,
        "recorded_at": time(&c.recorded_at),
    })
}
