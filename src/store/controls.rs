//! The `controls` table (halts, mandatory declarations, send windows, consent requirements, halt
//! triggers) and `control_head`, the
//! version every replica polls. What only one kind has lives in `params`, a small JSON object. Each change is one transaction: the row, the version bump, and its audit entry, so
//! a replica that sees the new version sees the change, and the log never misses one.

use super::{Context, Store, StoreError, audit::AuditTx};
use crate::{
    audit::{AuditEntry, AuditLog},
    domain::{
        Invalid, Millis, ReceiptId,
        control::{
            ChannelSet, ConsentRequirement, Control, Ended, Halt, HaltTrigger,
            MandatoryDeclaration, SendWindow, Zone,
        },
    },
};

const HALT: &str = "halt";
const MANDATORY: &str = "mandatory";
const WINDOW: &str = "window";
const CONSENT: &str = "consent";
const TRIGGER: &str = "trigger";

macro_rules! control_columns {
    () => {
        "id, kind, tenant, topic, campaign, channels, reason, approver, actor, created_at, \
         expires_at, ended_at, ended_by, end_reason, params"
    };
}

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
struct Row {
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
    fn into_control(self) -> Result<Control, StoreError> {
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
struct NewRow<'a> {
    id: String,
    kind: &'static str,
    tenant: &'a str,
    topic: &'a str,
    campaign: &'a str,
    channels: i32,
    reason: &'a str,
    approver: &'a str,
    actor: &'a str,
    created_at: Millis,
    expires_at: Option<Millis>,
    params: String,
}

fn new_row(control: &Control) -> NewRow<'_> {
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

const BUMP: &str = "UPDATE control_head SET version = version + 1 WHERE id = 1";
const END: &str = "UPDATE controls SET ended_at = $1, ended_by = $2, end_reason = $3 \
                   WHERE id = $4 AND ended_at IS NULL";

impl Store {
    /// The version of the controls: it moves with every change.
    pub(crate) async fn controls_version(&self) -> Result<i64, StoreError> {
        let sql = "SELECT version FROM control_head WHERE id = 1";
        on_pool!(self, pool => sqlx::query_scalar(sql).fetch_one(pool).await)
            .context("reading the controls version")
    }

    /// The version, then every control not ended (declarations possibly expired). Read in that
    /// order, a change landing in between is seen now and reloaded once more at the next poll.
    pub(crate) async fn controls_in_force(&self) -> Result<(i64, Vec<Control>), StoreError> {
        let version = self.controls_version().await?;
        let sql = concat!(
            "SELECT ",
            control_columns!(),
            " FROM controls WHERE ended_at IS NULL ORDER BY id"
        );
        let rows: Vec<Row> = on_pool!(self, pool => sqlx::query_as(sql).fetch_all(pool).await)
            .context("reading the controls in force")?;
        let controls = rows
            .into_iter()
            .map(Row::into_control)
            .collect::<Result<_, _>>()?;
        Ok((version, controls))
    }

    /// Every control of a tenant (or of all tenants), ended ones included, oldest first.
    pub(crate) async fn controls(&self, tenant: Option<&str>) -> Result<Vec<Control>, StoreError> {
        let sql = concat!(
            "SELECT ",
            control_columns!(),
            " FROM controls WHERE $1 OR tenant = $2 ORDER BY id"
        );
        let rows: Vec<Row> = on_pool!(self, pool => sqlx::query_as(sql)
            .bind(tenant.is_none())
            .bind(tenant.unwrap_or_default())
            .fetch_all(pool)
            .await)
        .context("listing controls")?;
        rows.into_iter().map(Row::into_control).collect()
    }

    pub(crate) async fn control(&self, id: ReceiptId) -> Result<Option<Control>, StoreError> {
        let sql = concat!(
            "SELECT ",
            control_columns!(),
            " FROM controls WHERE id = $1"
        );
        let row: Option<Row> = on_pool!(self, pool => sqlx::query_as(sql)
            .bind(id.to_string())
            .fetch_optional(pool)
            .await)
        .context("reading a control")?;
        row.map(Row::into_control).transpose()
    }

    /// Stores a new control, ends the ones it `replaces` (if still in force), bumps the version
    /// and appends `entry` (numbered here), in one transaction.
    pub(crate) async fn insert_control(
        &self,
        control: &Control,
        replaces: &[(ReceiptId, Ended)],
        entry: AuditEntry,
        log: &AuditLog,
    ) -> Result<(), StoreError> {
        let r = new_row(control);
        let sql = concat!(
            "INSERT INTO controls (",
            control_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL, NULL, NULL, $12)"
        );
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.context("beginning a control change")?;
            sqlx::query(sql)
                .bind(&r.id)
                .bind(r.kind)
                .bind(r.tenant)
                .bind(r.topic)
                .bind(r.campaign)
                .bind(r.channels)
                .bind(r.reason)
                .bind(r.approver)
                .bind(r.actor)
                .bind(r.created_at)
                .bind(r.expires_at)
                .bind(&r.params)
                .execute(&mut *tx)
                .await
                .context("inserting a control")?;
            for (id, ended) in replaces {
                sqlx::query(END)
                    .bind(ended.at)
                    .bind(&ended.by)
                    .bind(&ended.reason)
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await
                    .context("ending a replaced control")?;
            }
            sqlx::query(BUMP).execute(&mut *tx).await.context("bumping the controls version")?;
            let head = tx.lock_head().await?;
            let entry = AuditEntry { seq: head.seq(0), ..entry };
            tx.append_audit(head, [entry], log, control_time(control)).await?;
            tx.commit().await.context("committing a control change")
        })
    }

    /// Ends a control that is still in force, bumps the version and appends `entry`, in one
    /// transaction. `false` when it was not in force (ended meanwhile): nothing changed.
    pub(crate) async fn end_control(
        &self,
        id: ReceiptId,
        ended: &Ended,
        entry: AuditEntry,
        log: &AuditLog,
    ) -> Result<bool, StoreError> {
        let sql = END;
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.context("beginning a control change")?;
            let changed = sqlx::query(sql)
                .bind(ended.at)
                .bind(&ended.by)
                .bind(&ended.reason)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await
                .context("ending a control")?
                .rows_affected();
            if changed == 0 {
                tx.rollback().await.context("abandoning a control change")?;
                return Ok(false);
            }
            sqlx::query(BUMP).execute(&mut *tx).await.context("bumping the controls version")?;
            let head = tx.lock_head().await?;
            let entry = AuditEntry { seq: head.seq(0), ..entry };
            tx.append_audit(head, [entry], log, ended.at).await?;
            tx.commit().await.context("committing a control change")?;
            Ok(true)
        })
    }
}

fn control_time(control: &Control) -> Millis {
    control.created().1
}
