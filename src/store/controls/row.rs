//! How a control is laid out in its row: the kind, the columns every kind has, and the `params`
//! JSON of what only one kind has.

use crate::domain::{
    Invalid, Millis, ReceiptId,
    control::{
        ChannelSet, ConsentRequirement, Control, Ended, Halt, HaltTrigger, MandatoryDeclaration,
        SendWindow, Zone,
    },
};
use crate::store::StoreError;

const HALT: &str = "halt";
const MANDATORY: &str = "mandatory";
const WINDOW: &str = "window";
const CONSENT: &str = "consent";
const TRIGGER: &str = "trigger";

/// The `params` of a declaration.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct DeclarationParams {
    #[serde(default)]
    ignore_send_windows: bool,
}

/// The `params` of a send window.
#[derive(serde::Serialize, serde::Deserialize)]
struct WindowParams {
    start: u16,
    end: u16,
    zone: Zone,
}

/// The `params` of a halt trigger: its window and thresholds.
#[derive(serde::Serialize, serde::Deserialize)]
struct TriggerParams {
    window_ms: Millis,
    max_opt_outs: u64,
    max_complaints: u64,
    max_rate_ppm: u64,
    min_checks: u64,
}

#[derive(sqlx::FromRow)]
pub(super) struct Row {
    id: String,
    kind: String,
    tenant: String,
    topic: String,
    campaign: String,
    channels: i32,
    reason: String,
    approver: String,
    actor: String,
    created_at: i64,
    expires_at: Option<i64>,
    ended_at: Option<i64>,
    ended_by: Option<String>,
    end_reason: Option<String>,
    params: String,
}

impl Row {
    pub(super) fn into_control(self) -> Result<Control, StoreError> {
        let corrupt = |problem: &str| StoreError::Corrupt {
            receipt: self.id.clone(),
            problem: problem.to_owned(),
        };
        let id = ReceiptId::parse("id", &self.id).map_err(|_: Invalid| corrupt("id"))?;
        let channels = u8::try_from(self.channels)
            .ok()
            .and_then(ChannelSet::from_bits)
            .ok_or_else(|| corrupt("channels"))?;
        let ended = self.ended_at.map(|at| Ended {
            at,
            by: self.ended_by.clone().unwrap_or_default(),
            reason: self.end_reason.clone().unwrap_or_default(),
        });
        match self.kind.as_str() {
            HALT => Ok(Control::Halt(Halt {
                id,
                tenant: self.tenant,
                topic: self.topic,
                campaign: self.campaign,
                channels,
                reason: self.reason,
                actor: self.actor,
                at: self.created_at,
                ended,
            })),
            MANDATORY => Ok(Control::Mandatory(MandatoryDeclaration {
                id,
                tenant: self.tenant,
                topic: self.topic,
                channels,
                expires_at: self.expires_at.ok_or_else(|| corrupt("expires_at"))?,
                ignore_send_windows: serde_json::from_str::<DeclarationParams>(&self.params)
                    .map_err(|_| corrupt("params"))?
                    .ignore_send_windows,
                legal_basis: self.reason,
                approver: self.approver,
                actor: self.actor,
                at: self.created_at,
                ended,
            })),
            WINDOW => {
                let WindowParams { start, end, zone } =
                    serde_json::from_str(&self.params).map_err(|_| corrupt("params"))?;
                Ok(Control::Window(SendWindow {
                    id,
                    tenant: self.tenant,
                    channels,
                    topic: self.topic,
                    start,
                    end,
                    zone,
                    reason: self.reason,
                    actor: self.actor,
                    at: self.created_at,
                    ended,
                }))
            }
            CONSENT => Ok(Control::Consent(ConsentRequirement {
                id,
                tenant: self.tenant,
                channels,
                topic: self.topic,
                reason: self.reason,
                actor: self.actor,
                at: self.created_at,
                ended,
            })),
            TRIGGER => {
                let TriggerParams {
                    window_ms,
                    max_opt_outs,
                    max_complaints,
                    max_rate_ppm,
                    min_checks,
                } = serde_json::from_str(&self.params).map_err(|_| corrupt("params"))?;
                Ok(Control::Trigger(HaltTrigger {
                    id,
                    tenant: self.tenant,
                    topic: self.topic,
                    campaign: self.campaign,
                    window_ms,
                    max_opt_outs,
                    max_complaints,
                    max_rate_ppm,
                    min_checks,
                    reason: self.reason,
                    actor: self.actor,
                    at: self.created_at,
                    ended,
                    counts: Default::default(),
                }))
            }
            _ => Err(corrupt("kind")),
        }
    }
}

/// The columns of a new control, whichever kind it is.
pub(super) struct NewRow<'a> {
    pub(super) id: String,
    pub(super) kind: &'static str,
    pub(super) tenant: &'a str,
    pub(super) topic: &'a str,
    pub(super) campaign: &'a str,
    pub(super) channels: i32,
    pub(super) reason: &'a str,
    pub(super) approver: &'a str,
    pub(super) actor: &'a str,
    pub(super) created_at: Millis,
    pub(super) expires_at: Option<Millis>,
    pub(super) params: String,
}

pub(super) fn new_row(control: &Control) -> NewRow<'_> {
    match control {
        Control::Halt(h) => NewRow {
            id: h.id.to_string(),
            kind: HALT,
            tenant: &h.tenant,
            topic: &h.topic,
            campaign: &h.campaign,
            channels: i32::from(h.channels.bits()),
            reason: &h.reason,
            approver: "",
            actor: &h.actor,
            created_at: h.at,
            expires_at: None,
            params: "{}".into(),
        },
        Control::Mandatory(d) => NewRow {
            id: d.id.to_string(),
            kind: MANDATORY,
            tenant: &d.tenant,
            topic: &d.topic,
            campaign: "",
            channels: i32::from(d.channels.bits()),
            reason: &d.legal_basis,
            approver: &d.approver,
            actor: &d.actor,
            created_at: d.at,
            expires_at: Some(d.expires_at),
            params: serde_json::json!({"ignore_send_windows": d.ignore_send_windows}).to_string(),
        },
        Control::Window(w) => NewRow {
            id: w.id.to_string(),
            kind: WINDOW,
            tenant: &w.tenant,
            topic: &w.topic,
            campaign: "",
            channels: i32::from(w.channels.bits()),
            reason: &w.reason,
            approver: "",
            actor: &w.actor,
            created_at: w.at,
            expires_at: None,
            params: serde_json::to_string(&WindowParams {
                start: w.start,
                end: w.end,
                zone: w.zone.clone(),
            })
            .expect("window params serialize"),
        },
        Control::Consent(r) => NewRow {
            id: r.id.to_string(),
            kind: CONSENT,
            tenant: &r.tenant,
            topic: &r.topic,
            campaign: "",
            channels: i32::from(r.channels.bits()),
            reason: &r.reason,
            approver: "",
            actor: &r.actor,
            created_at: r.at,
            expires_at: None,
            params: "{}".into(),
        },
        Control::Trigger(t) => NewRow {
            id: t.id.to_string(),
            kind: TRIGGER,
            tenant: &t.tenant,
            topic: &t.topic,
            campaign: &t.campaign,
            channels: i32::from(ChannelSet::EVERY.bits()),
            reason: &t.reason,
            approver: "",
            actor: &t.actor,
            created_at: t.at,
            expires_at: None,
            params: serde_json::to_string(&TriggerParams {
                window_ms: t.window_ms,
                max_opt_outs: t.max_opt_outs,
                max_complaints: t.max_complaints,
                max_rate_ppm: t.max_rate_ppm,
                min_checks: t.min_checks,
            })
            .expect("trigger params serialize"),
        },
    }
}
