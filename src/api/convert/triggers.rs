//! Halt triggers between proto and domain, beside `controls` (whose helpers they share); the same
//! rules hold: complete destructuring, errors naming the field as the caller wrote it. The
//! thresholds are checked by the domain (`HaltTrigger::new`), which names the same fields.

use super::{
    controls::{ended_parts, id, propagation_to_proto},
    timestamp,
};
use crate::{
    domain::{Invalid, ReceiptId, Scope, control::HaltTrigger},
    proto,
    service::controls::{Changed, NewTrigger},
};

pub(crate) fn trigger(req: proto::SetHaltTriggerRequest) -> NewTrigger {
    let proto::SetHaltTriggerRequest {
        tenant,
        topic,
        campaign,
        window_seconds,
        max_opt_outs,
        max_complaints,
        max_opt_out_rate,
        min_checks,
        reason,
    } = req;
    NewTrigger {
        tenant,
        topic,
        campaign,
        window_seconds: u64::from(window_seconds),
        max_opt_outs,
        max_complaints,
        max_opt_out_rate,
        min_checks,
        reason,
    }
}

pub(crate) fn remove_trigger(
    req: proto::RemoveHaltTriggerRequest,
) -> Result<(ReceiptId, String), Invalid> {
    let proto::RemoveHaltTriggerRequest { trigger_id, reason } = req;
    Ok((id("trigger_id", &trigger_id, "SetHaltTrigger")?, reason))
}

/// The tenant a listing is for (checked as an opt-out's would be), and whether to include what
/// has ended.
pub(crate) fn list_triggers(
    req: proto::ListHaltTriggersRequest,
) -> Result<(String, bool), Invalid> {
    let proto::ListHaltTriggersRequest {
        tenant,
        include_ended,
    } = req;
    Scope::parse(&tenant, None, "", "").map_err(|e| Invalid {
        field: e.field.trim_start_matches("scope.").to_owned(),
        message: e.message,
    })?;
    Ok((tenant, include_ended))
}

pub(crate) fn trigger_to_proto(t: HaltTrigger) -> proto::HaltTrigger {
    let max_opt_out_rate = t.max_opt_out_rate();
    let HaltTrigger {
        id,
        tenant,
        topic,
        campaign,
        window_ms,
        max_opt_outs,
        max_complaints,
        max_rate_ppm: _,
        min_checks,
        reason,
        actor,
        at,
        ended,
        counts: _,
    } = t;
    let (removed_at, removed_by, remove_reason) = ended_parts(ended);
    proto::HaltTrigger {
        trigger_id: id.to_string(),
        tenant,
        topic,
        campaign,
        window_seconds: u32::try_from(window_ms / 1000).unwrap_or(u32::MAX),
        max_opt_outs,
        max_complaints,
        max_opt_out_rate,
        min_checks,
        reason,
        set_by: actor,
        set_at: Some(timestamp(at)),
        removed_at,
        removed_by,
        remove_reason,
        propagation: None,
    }
}

/// A changed trigger, with how far the change had reached.
pub(crate) fn changed_trigger_to_proto(changed: Changed<HaltTrigger>) -> proto::HaltTrigger {
    let Changed {
        control,
        propagation,
    } = changed;
    proto::HaltTrigger {
        propagation: Some(propagation_to_proto(propagation)),
        ..trigger_to_proto(control)
    }
}
