//! `suppressd check` and `suppressd opt-out`: what a sending service asks and records, for a human.
//! Both go through the client crate (`suppressd-client`), so a person at a terminal gets exactly
//! the decision, deadlines and retries a service gets: "send" only on an OK answer saying not
//! suppressed, and an opt-out retried only under an idempotency key.

use crate::cli::{
    args::{
        ChannelArg, ReasonArg, RecipientArgs, ScopeArgs, SendCheckArgs, SendOptOutArgs, SourceArg,
    },
    client_config_with_files, time,
};
use serde_json::json;
use suppressd_client::{
    Client, ClientError, Decision, DoNotSend,
    proto::{self, recipient::Id},
};

/// The exit status of `check` when the notice may go.
pub const SEND: i32 = 0;
/// The exit status of `check` when the server said it must not (suppressed).
pub const SUPPRESSED: i32 = 1;
/// The exit status of `check` when there was no usable answer: do not send either.
pub const NO_ANSWER: i32 = 3;

/// Asks once (with the client's retries); the text to print and the exit status.
pub async fn check(args: SendCheckArgs) -> anyhow::Result<(String, i32)> {
    let SendCheckArgs {
        server,
        recipient,
        tenant,
        channel,
        topic,
        campaign,
        time_zone,
        json,
    } = args;
    let request = proto::CheckSuppressedRequest {
        recipient: Some(recipient_of(&recipient)?),
        scope: Some(proto::Scope {
            tenant,
            channel: channel_of(Some(channel)) as i32,
            topic,
            campaign,
        }),
        time_zone,
        ..Default::default()
    };
    let decision = match client_config_with_files(&server) {
        Ok(config) => match Client::connect(config).await {
            Ok(client) => client.decide(request).await,
            Err(e) => Decision::from_answer(Err(e)),
        },
        Err(e) => Decision::from_answer(Err(ClientError::Config(format!("{e:#}")))),
    };
    let status = match &decision {
        Decision::Send(_) => SEND,
        Decision::DoNotSend(DoNotSend::Suppressed(_)) => SUPPRESSED,
        Decision::DoNotSend(DoNotSend::NoAnswer(_)) => NO_ANSWER,
    };
    let text = if json {
        format!(
            "{}\n",
            serde_json::to_string_pretty(&decision_json(&decision))?
        )
    } else {
        decision_table(&decision)
    };
    Ok((text, status))
}

fn decision_json(decision: &Decision) -> serde_json::Value {
    match decision {
        Decision::Send(answer) => json!({
            "decision": "send",
            "suppressed": false,
            "mandatory": answer.mandatory.as_ref().and_then(|m| m.declaration.as_ref()).map(|d| d.declaration_id.clone()),
            "confirms_receipt_id": Some(&answer.confirms_receipt_id).filter(|id| !id.is_empty()),
        }),
        Decision::DoNotSend(DoNotSend::Suppressed(answer)) => json!({
            "decision": "do_not_send",
            "suppressed": true,
            "matched": answer.matched.as_ref().map(|m| json!({
                "receipt_id": m.receipt_id,
                "reason": reason_name(m.reason),
                "received_at": time(m.received_at),
            })),
            "halt_id": answer.halt.as_ref().map(|h| h.halt_id.clone()),
            "not_before": answer.not_before.map(|t| time(Some(t))),
            "consent_required": answer.consent_required.is_some(),
        }),
        Decision::DoNotSend(DoNotSend::NoAnswer(error)) => json!({
            "decision": "do_not_send",
            "error": {
                "code": format!("{:?}", error.code()),
                "reason": error.reason(),
                "message": error.to_string(),
            },
        }),
    }
}

fn decision_table(decision: &Decision) -> String {
    let mut rows: Vec<(&str, String)> = Vec::new();
    match decision {
        Decision::Send(answer) => {
            rows.push(("decision", "SEND".into()));
            if let Some(d) = answer
                .mandatory
                .as_ref()
                .and_then(|m| m.declaration.as_ref())
            {
                rows.push(("mandatory", d.declaration_id.clone()));
            }
            if !answer.confirms_receipt_id.is_empty() {
                rows.push(("confirms", answer.confirms_receipt_id.clone()));
            }
        }
        Decision::DoNotSend(DoNotSend::Suppressed(answer)) => {
            rows.push(("decision", "DO NOT SEND (suppressed)".into()));
            if let Some(halt) = &answer.halt {
                rows.push(("halt", halt.halt_id.clone()));
            }
            if let Some(m) = &answer.matched {
                rows.push(("receipt", m.receipt_id.clone()));
                rows.push(("reason", reason_name(m.reason).into()));
                rows.push(("received", time(m.received_at)));
            }
            if answer.not_before.is_some() {
                rows.push(("not before", time(answer.not_before)));
            }
        }
        Decision::DoNotSend(DoNotSend::NoAnswer(error)) => {
            rows.push(("decision", "DO NOT SEND (no answer)".into()));
            rows.push(("error", error.to_string()));
            if let Some(reason) = error.reason() {
                rows.push(("reason", reason));
            }
        }
    }
    table(&rows)
}

/// Records the opt-out; the receipt as a table or JSON.
pub async fn opt_out(args: SendOptOutArgs) -> anyhow::Result<String> {
    let SendOptOutArgs {
        server,
        recipient,
        scope,
        reason,
        source,
        idempotency_key,
        accepted,
        json,
    } = args;
    let request = proto::OptOutRequest {
        recipient: Some(recipient_of(&recipient)?),
        scope: Some(scope_of(&scope)),
        reason: reason_of(reason) as i32,
        source: source_of(source) as i32,
        idempotency_key: idempotency_key.unwrap_or_default(),
        durability: if accepted {
            proto::Durability::Accepted
        } else {
            proto::Durability::Durable
        } as i32,
        ..Default::default()
    };
    let client = Client::connect(client_config_with_files(&server)?).await?;
    let receipt = client.opt_out(request).await.map_err(refused)?;
    let state = proto::ReceiptState::try_from(receipt.state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("RECEIPT_STATE_")
                .to_owned()
        })
        .unwrap_or_else(|_| receipt.state.to_string());
    Ok(if json {
        let value = json!({
            "receipt_id": receipt.receipt_id,
            "state": state,
            "accepted_at": time(receipt.accepted_at),
        });
        format!("{}\n", serde_json::to_string_pretty(&value)?)
    } else {
        table(&[
            ("receipt", receipt.receipt_id.clone()),
            ("state", state),
            ("accepted", time(receipt.accepted_at)),
        ])
    })
}

/// A failed call as one line: the code, the server's reason code, its message.
pub(crate) fn refused(error: ClientError) -> anyhow::Error {
    match error.reason() {
        Some(reason) => anyhow::anyhow!("{error} [{reason}]"),
        None => anyhow::anyhow!("{error}"),
    }
}

fn table(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect()
}

fn recipient_of(args: &RecipientArgs) -> anyhow::Result<proto::Recipient> {
    let RecipientArgs {
        email,
        phone,
        user_id,
        push_token,
        postal_address,
    } = args.clone();
    let id = email
        .map(Id::Email)
        .or(phone.map(Id::Phone))
        .or(user_id.map(Id::UserId))
        .or(push_token.map(Id::PushToken))
        .or(postal_address.map(Id::PostalAddress))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "name the recipient: --email, --phone, --user-id, --push-token or --postal-address"
            )
        })?;
    Ok(proto::Recipient { id: Some(id) })
}

fn scope_of(args: &ScopeArgs) -> proto::Scope {
    proto::Scope {
        tenant: args.tenant.clone(),
        channel: channel_of(args.channel) as i32,
        topic: args.topic.clone(),
        campaign: args.campaign.clone(),
    }
}

fn channel_of(c: Option<ChannelArg>) -> proto::Channel {
    match c {
        None => proto::Channel::Unspecified,
        Some(ChannelArg::Email) => proto::Channel::Email,
        Some(ChannelArg::Sms) => proto::Channel::Sms,
        Some(ChannelArg::Push) => proto::Channel::Push,
        Some(ChannelArg::Voice) => proto::Channel::Voice,
        Some(ChannelArg::Postal) => proto::Channel::Postal,
    }
}

fn reason_of(r: ReasonArg) -> proto::Reason {
    match r {
        ReasonArg::UserRequest => proto::Reason::UserRequest,
        ReasonArg::Complaint => proto::Reason::Complaint,
        ReasonArg::Bounce => proto::Reason::Bounce,
        ReasonArg::Legal => proto::Reason::Legal,
        ReasonArg::Operator => proto::Reason::Operator,
    }
}

fn source_of(s: SourceArg) -> proto::Source {
    match s {
        SourceArg::Link => proto::Source::Link,
        SourceArg::OneClick => proto::Source::OneClick,
        SourceArg::SmsKeyword => proto::Source::SmsKeyword,
        SourceArg::SupportAgent => proto::Source::SupportAgent,
        SourceArg::Api => proto::Source::Api,
        SourceArg::Import => proto::Source::Import,
        SourceArg::PreferenceSignal => proto::Source::PreferenceSignal,
    }
}

fn reason_name(reason: i32) -> &'static str {
    proto::Reason::try_from(reason)
        .map(|r| r.as_str_name().trim_start_matches("REASON_"))
        .unwrap_or("UNKNOWN")
}
