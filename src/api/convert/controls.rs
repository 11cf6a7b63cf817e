//! Halts, mandatory declarations, send windows (halt triggers: `triggers`) and the answers they
//! shape, between proto and domain. Kept apart
//! from the rest of `convert` by topic; the same rules hold (complete destructuring, errors naming
//! the field as the caller wrote it).

pub(crate) use super::triggers::{
    changed_trigger_to_proto, list_triggers, remove_trigger, trigger, trigger_to_proto,
};
use super::{channel, channel_to_proto, match_to_proto, millis, timestamp};
use crate::{
    domain::{
        Invalid, ReceiptId,
        control::{Answer, ChannelSet, Ended, Halt, MandatoryDeclaration, SendWindow, time_of_day},
    },
    proto,
    service::controls::{Changed, ControlList, NewDeclaration, NewHalt, NewWindow, Propagation},
};

/// A list of channels; `CHANNEL_UNSPECIFIED` is refused (an empty list is how to say "every").
fn channels(codes: &[i32]) -> Result<ChannelSet, Invalid> {
    let mut set = Vec::with_capacity(codes.len());
    for (i, code) in codes.iter().enumerate() {
        let field = format!("channels[{i}]");
        match channel(*code) {
            Ok(Some(c)) => set.push(c),
            Ok(None) => return Err(Invalid::new(field, "CHANNEL_UNSPECIFIED is not a channel")),
            Err(e) => return Err(Invalid::new(field, e.message)),
        }
    }
    Ok(ChannelSet::of(set))
}

fn channels_to_proto(set: ChannelSet) -> Vec<i32> {
    set.iter()
        .map(|c| channel_to_proto(Some(c)) as i32)
        .collect()
}

pub(super) fn id(field: &str, raw: &str, what: &str) -> Result<ReceiptId, Invalid> {
    if raw.is_empty() {
        return Err(Invalid::new(field, "is required"));
    }
    ReceiptId::parse(field, raw)
        .map_err(|_| Invalid::new(field, format!("must be an id as returned by {what}")))
}

pub(crate) fn halt(req: proto::HaltCampaignRequest) -> Result<NewHalt, Invalid> {
    let proto::HaltCampaignRequest {
        tenant,
        topic,
        campaign,
        channels: codes,
        reason,
    } = req;
    Ok(NewHalt {
        tenant,
        topic,
        campaign,
        channels: channels(&codes)?,
        reason,
    })
}

pub(crate) fn resume(req: proto::ResumeCampaignRequest) -> Result<(ReceiptId, String), Invalid> {
    let proto::ResumeCampaignRequest { halt_id, reason } = req;
    Ok((id("halt_id", &halt_id, "HaltCampaign")?, reason))
}

pub(crate) fn declare(req: proto::DeclareMandatoryRequest) -> Result<NewDeclaration, Invalid> {
    let proto::DeclareMandatoryRequest {
        tenant,
        topic,
        channels: codes,
        legal_basis,
        approver,
        expires_at,
        ignore_send_windows,
    } = req;
    Ok(NewDeclaration {
        tenant,
        topic,
        channels: channels(&codes)?,
        legal_basis,
        approver,
        expires_at: expires_at.map(|t| millis("expires_at", t)).transpose()?,
        ignore_send_windows,
    })
}

pub(crate) fn revoke(req: proto::RevokeMandatoryRequest) -> Result<(ReceiptId, String), Invalid> {
    let proto::RevokeMandatoryRequest {
        declaration_id,
        reason,
    } = req;
    Ok((
        id("declaration_id", &declaration_id, "DeclareMandatory")?,
        reason,
    ))
}

/// The tenant a listing is for, and whether to include what has ended.
pub(crate) fn list(req: proto::ListControlsRequest) -> (String, bool) {
    let proto::ListControlsRequest {
        tenant,
        include_ended,
    } = req;
    (tenant, include_ended)
}

pub(super) fn ended_parts(
    ended: Option<Ended>,
) -> (Option<prost_types::Timestamp>, String, String) {
    match ended {
        Some(Ended { at, by, reason }) => (Some(timestamp(at)), by, reason),
        None => (None, String::new(), String::new()),
    }
}

pub(crate) fn halt_to_proto(h: Halt) -> proto::Halt {
    let Halt {
        id,
        tenant,
        topic,
        campaign,
        channels,
        reason,
        actor,
        at,
        ended,
    } = h;
    let (resumed_at, resumed_by, resume_reason) = ended_parts(ended);
    proto::Halt {
        halt_id: id.to_string(),
        tenant,
        topic,
        campaign,
        // Every channel is said as the request says it: no channels.
        channels: if channels == ChannelSet::EVERY {
            Vec::new()
        } else {
            channels_to_proto(channels)
        },
        reason,
        halted_by: actor,
        halted_at: Some(timestamp(at)),
        resumed_at,
        resumed_by,
        resume_reason,
        propagation: None,
    }
}

pub(crate) fn declaration_to_proto(d: MandatoryDeclaration) -> proto::MandatoryDeclaration {
    let MandatoryDeclaration {
        id,
        tenant,
        topic,
        channels,
        legal_basis,
        approver,
        actor,
        at,
        expires_at,
        ended,
        ignore_send_windows,
    } = d;
    let (revoked_at, revoked_by, revoke_reason) = ended_parts(ended);
    proto::MandatoryDeclaration {
        declaration_id: id.to_string(),
        tenant,
        topic,
        channels: channels_to_proto(channels),
        legal_basis,
        approver,
        expires_at: Some(timestamp(expires_at)),
        declared_by: actor,
        declared_at: Some(timestamp(at)),
        revoked_at,
        revoked_by,
        revoke_reason,
        propagation: None,
        ignore_send_windows,
    }
}

pub(crate) fn window(req: proto::SetSendWindowRequest) -> Result<NewWindow, Invalid> {
    let proto::SetSendWindowRequest {
        tenant,
        channel: code,
        topic,
        start,
        end,
        time_zone,
        reason,
    } = req;
    Ok(NewWindow {
        tenant,
        channels: channel(code)
            .map_err(|e| Invalid::new("channel", e.message))?
            .map_or(ChannelSet::EVERY, |c| ChannelSet::of([c])),
        topic,
        start,
        end,
        time_zone,
        reason,
    })
}

pub(crate) fn remove_window(
    req: proto::RemoveSendWindowRequest,
) -> Result<(ReceiptId, String), Invalid> {
    let proto::RemoveSendWindowRequest { window_id, reason } = req;
    Ok((id("window_id", &window_id, "SetSendWindow")?, reason))
}

pub(crate) fn window_to_proto(w: SendWindow) -> proto::SendWindow {
    let SendWindow {
        id,
        tenant,
        channels,
        topic,
        start,
        end,
        zone,
        reason,
        actor,
        at,
        ended,
    } = w;
    let (removed_at, removed_by, remove_reason) = ended_parts(ended);
    // One channel, or every channel (said as the request says it: unspecified).
    let channel = match channels.iter().collect::<Vec<_>>()[..] {
        [one] if channels != ChannelSet::EVERY => channel_to_proto(Some(one)),
        _ => channel_to_proto(None),
    };
    proto::SendWindow {
        window_id: id.to_string(),
        tenant,
        channel: channel as i32,
        topic,
        start: time_of_day(start),
        end: time_of_day(end),
        time_zone: zone.name().to_owned(),
        reason,
        set_by: actor,
        set_at: Some(timestamp(at)),
        removed_at,
        removed_by,
        remove_reason,
        propagation: None,
    }
}

/// A changed send window, with how far the change had reached.
pub(crate) fn changed_window_to_proto(changed: Changed<SendWindow>) -> proto::SendWindow {
    let Changed {
        control,
        propagation,
    } = changed;
    proto::SendWindow {
        propagation: Some(propagation_to_proto(propagation)),
        ..window_to_proto(control)
    }
}

pub(crate) fn propagation_to_proto(p: Propagation) -> proto::Propagation {
    let outcome = if p.is_confirmed() {
        proto::PropagationOutcome::Confirmed
    } else {
        proto::PropagationOutcome::Unconfirmed
    };
    let Propagation {
        confirmed,
        unconfirmed,
        unknown,
    } = p;
    proto::Propagation {
        outcome: outcome as i32,
        confirmed_replicas: confirmed,
        unconfirmed_replicas: unconfirmed,
        detail: unknown.unwrap_or_default(),
    }
}

/// A changed halt, with how far the change had reached.
pub(crate) fn changed_halt_to_proto(changed: Changed<Halt>) -> proto::Halt {
    let Changed {
        control,
        propagation,
    } = changed;
    proto::Halt {
        propagation: Some(propagation_to_proto(propagation)),
        ..halt_to_proto(control)
    }
}

/// A changed declaration, with how far the change had reached.
pub(crate) fn changed_declaration_to_proto(
    changed: Changed<MandatoryDeclaration>,
) -> proto::MandatoryDeclaration {
    let Changed {
        control,
        propagation,
    } = changed;
    proto::MandatoryDeclaration {
        propagation: Some(propagation_to_proto(propagation)),
        ..declaration_to_proto(control)
    }
}

pub(crate) fn list_to_proto(list: ControlList) -> proto::ListControlsResponse {
    let ControlList {
        halts,
        mandatory,
        windows,
        consent,
        triggers,
    } = list;
    proto::ListControlsResponse {
        halts: halts.into_iter().map(halt_to_proto).collect(),
        mandatory: mandatory.into_iter().map(declaration_to_proto).collect(),
        windows: windows.into_iter().map(window_to_proto).collect(),
        consent_required: consent
            .into_iter()
            .map(super::consent::requirement_to_proto)
            .collect(),
        triggers: triggers.into_iter().map(trigger_to_proto).collect(),
    }
}

pub fn answer_to_proto(answer: Answer) -> proto::CheckSuppressedResponse {
    let none = proto::CheckSuppressedResponse {
        suppressed: false,
        matched: None,
        halt: None,
        mandatory: None,
        window: None,
        not_before: None,
        confirms_receipt_id: String::new(),
        consent_required: None,
    };
    match answer {
        Answer::Send => none,
        Answer::Suppressed(m) => proto::CheckSuppressedResponse {
            suppressed: true,
            matched: Some(match_to_proto(m)),
            ..none
        },
        Answer::Halted { halt, channel } => proto::CheckSuppressedResponse {
            suppressed: true,
            matched: Some(match_to_proto(halt.as_match(channel))),
            halt: Some(halt_to_proto(Halt::clone(&halt))),
            ..none
        },
        Answer::Confirms(m) => proto::CheckSuppressedResponse {
            confirms_receipt_id: m.receipt.to_string(),
            ..none
        },
        Answer::NotNow { window, not_before } => proto::CheckSuppressedResponse {
            suppressed: true,
            window: Some(window_to_proto(SendWindow::clone(&window))),
            not_before: Some(timestamp(not_before)),
            ..none
        },
        Answer::NoConsent {
            requirement,
            channel,
        } => {
            let (matched, requirement) = super::consent::no_consent(&requirement, channel);
            proto::CheckSuppressedResponse {
                suppressed: true,
                matched: Some(matched),
                consent_required: Some(requirement),
                ..none
            }
        }
        Answer::Overridden {
            declaration,
            overridden,
        } => proto::CheckSuppressedResponse {
            mandatory: Some(proto::MandatoryOverride {
                declaration: Some(declaration_to_proto(MandatoryDeclaration::clone(
                    &declaration,
                ))),
                overridden: Some(match_to_proto(overridden)),
            }),
            ..none
        },
    }
}
