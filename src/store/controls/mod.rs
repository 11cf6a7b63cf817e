//! The `controls` table (halts, mandatory declarations, send windows, consent requirements, halt
//! triggers) and `control_head`, the version every replica polls. Each change is one transaction:
//! the row, the version bump, and its audit entry, so a replica that sees the new version sees the
//! change, and the log never misses one. How a control fits a row is in `row`.

mod row;

use super::{Context, Store, StoreError, audit::AuditTx};
use crate::{
    audit::{AuditEntry, AuditLog},
    domain::{
        Millis, ReceiptId,
        control::{Control, Ended},
    },
};
use row::{Row, new_row};

macro_rules! control_columns {
    () => {
        "id, kind, tenant, topic, campaign, channels, reason, approver, actor, created_at, \
         expires_at, ended_at, ended_by, end_reason, params"
    };
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

    /// What a controls poll reads, in one statement: the controls version, and whether any record
    /// is marked uncached (which a pass must write into the cache, `service::uncached`).
    pub(crate) async fn controls_version_and_marks(&self) -> Result<(i64, bool), StoreError> {
        let sql = "SELECT version, EXISTS (SELECT 1 FROM uncached) FROM control_head WHERE id = 1";
        on_pool!(self, pool => sqlx::query_as(sql).fetch_one(pool).await)
            .context("reading the controls version and the uncached marks")
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
