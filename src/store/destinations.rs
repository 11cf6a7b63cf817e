//! The `destinations` and `deliveries` tables: where changes go, how far each destination got in
//! the audit log, and which change reached which destination when.
//!
//! A destination is delivered by one replica at a time: the one holding its lease. Every write
//! that moves a destination on names the lease owner in its `WHERE`, so a replica that lost its
//! lease (it stalled past it, another took over) changes nothing. A delivery row and the cursor
//! move in one transaction, so after a crash the next owner resumes exactly after the last change
//! recorded as delivered.

use super::{Context, Row, Store, StoreError};
use crate::domain::{Millis, Suppression};

macro_rules! destination_columns {
    () => {
        "destination_id, url, tenants, kinds, secret, created_by, created_at, delivered_seq, \
         failures, parked_at, last_error, needs_identifier"
    };
}

/// A destination as stored. `tenants` and `kinds` are JSON arrays (empty: every one).
#[derive(sqlx::FromRow, Debug, Clone)]
pub struct DestinationRow {
    pub destination_id: String,
    pub url: String,
    pub tenants: String,
    pub kinds: String,
    /// The signing secret (`whsec_…`).
    pub secret: String,
    pub created_by: String,
    pub created_at: i64,
    /// The last audit `seq` delivered or not wanted (-1: none).
    pub delivered_seq: i64,
    /// Failed attempts at the change after `delivered_seq`, since its last success.
    pub failures: i32,
    /// Set once the failure budget ran out: no attempts until an admin resumes it.
    pub parked_at: Option<i64>,
    pub last_error: String,
    /// Its deliveries carry the person's identifier, opened from the vault.
    pub needs_identifier: bool,
}

/// A change delivered to a destination.
#[derive(sqlx::FromRow, Debug, Clone)]
pub struct DeliveryRow {
    pub destination_id: String,
    pub seq: i64,
    pub receipt_id: String,
    pub delivered_at: i64,
    pub attempts: i32,
}

impl Store {
    /// Adds a destination whose cursor starts after `after_seq`.
    pub(crate) async fn insert_destination(&self, row: &DestinationRow) -> Result<(), StoreError> {
        let sql = "INSERT INTO destinations (destination_id, url, tenants, kinds, secret, \
                   created_by, created_at, delivered_seq, failures, next_attempt_at, last_error, \
                   lease_owner, lease_until, needs_identifier) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, 0, '', '', 0, $9)";
        on_pool!(self, pool => sqlx::query(sql)
            .bind(&row.destination_id)
            .bind(&row.url)
            .bind(&row.tenants)
            .bind(&row.kinds)
            .bind(&row.secret)
            .bind(&row.created_by)
            .bind(row.created_at)
            .bind(row.delivered_seq)
            .bind(row.needs_identifier)
            .execute(pool)
            .await
            .map(|_| ()))
        .context("inserting a destination")?;
        Ok(())
    }

    /// Destinations not removed, oldest first.
    pub(crate) async fn destinations(&self) -> Result<Vec<DestinationRow>, StoreError> {
        let sql = concat!(
            "SELECT ",
            destination_columns!(),
            " FROM destinations WHERE removed_at IS NULL ORDER BY created_at, destination_id"
        );
        on_pool!(self, pool => sqlx::query_as(sql).fetch_all(pool).await)
            .context("reading destinations")
    }

    /// Marks a destination removed (its deliveries stay); false if there was none to remove.
    pub(crate) async fn remove_destination(
        &self,
        id: &str,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE destinations SET removed_at = $2 \
                   WHERE destination_id = $1 AND removed_at IS NULL";
        let done = on_pool!(self, pool => sqlx::query(sql).bind(id).bind(now).execute(pool).await
            .map(|r| r.rows_affected()))
        .context("removing a destination")?;
        Ok(done == 1)
    }

    /// Unparks a destination: attempts start again at once, with a fresh failure budget.
    pub(crate) async fn resume_destination(&self, id: &str) -> Result<bool, StoreError> {
        let sql = "UPDATE destinations SET parked_at = NULL, failures = 0, next_attempt_at = 0 \
                   WHERE destination_id = $1 AND removed_at IS NULL";
        let done = on_pool!(self, pool => sqlx::query(sql).bind(id).execute(pool).await
            .map(|r| r.rows_affected()))
        .context("resuming a destination")?;
        Ok(done == 1)
    }

    /// Takes (or renews) the lease of a destination that is due for an attempt: the destination as
    /// it stands if this replica now holds it until `until`, else `None` (another replica holds it,
    /// it is parked, removed, or backing off).
    pub(crate) async fn lease_destination(
        &self,
        id: &str,
        owner: &str,
        now: Millis,
        until: Millis,
    ) -> Result<Option<DestinationRow>, StoreError> {
        let sql = concat!(
            "UPDATE destinations SET lease_owner = $2, lease_until = $4 \
             WHERE destination_id = $1 AND removed_at IS NULL AND parked_at IS NULL \
             AND next_attempt_at <= $3 AND (lease_owner = $2 OR lease_until < $3) RETURNING ",
            destination_columns!()
        );
        on_pool!(self, pool => sqlx::query_as(sql)
            .bind(id).bind(owner).bind(now).bind(until)
            .fetch_optional(pool).await)
        .context("leasing a destination")
    }

    /// Records delivered changes (none: only passes over changes not wanted) and moves the cursor
    /// to `cursor` (at or after the last of them), in one transaction, if `owner` still holds
    /// the lease; false if it does not (nothing written). A page of deliveries costs one commit.
    pub(crate) async fn record_deliveries(
        &self,
        id: &str,
        owner: &str,
        cursor: i64,
        delivered: &[DeliveryRow],
    ) -> Result<bool, StoreError> {
        // Passing over changes not wanted leaves the failure count alone: it is the count of the
        // change after the cursor, which a delivery ends.
        let advance = if delivered.is_empty() {
            "UPDATE destinations SET delivered_seq = $3 \
             WHERE destination_id = $1 AND lease_owner = $2 AND delivered_seq < $3"
        } else {
            "UPDATE destinations SET delivered_seq = $3, failures = 0, next_attempt_at = 0, \
             last_error = '' WHERE destination_id = $1 AND lease_owner = $2 AND delivered_seq < $3"
        };
        let insert =
            "INSERT INTO deliveries (destination_id, seq, receipt_id, delivered_at, attempts) ";
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            let moved = sqlx::query(advance)
                .bind(id).bind(owner).bind(cursor)
                .execute(&mut *tx).await?.rows_affected();
            if moved == 1 {
                // SQLite binds at most 32766 parameters per statement; a page is far below.
                for chunk in delivered.chunks(1_000) {
                    let mut q = sqlx::QueryBuilder::new(insert);
                    q.push_values(chunk, |mut row, d| {
                        row.push_bind(d.destination_id.clone())
                            .push_bind(d.seq)
                            .push_bind(d.receipt_id.clone())
                            .push_bind(d.delivered_at)
                            .push_bind(d.attempts);
                    });
                    q.push(" ON CONFLICT DO NOTHING");
                    q.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
            }
            Ok(moved == 1)
        }.await)
        .context("recording deliveries")
    }

    /// Records a failed attempt: the next one not before `next_attempt_at`, or parked at `park_at`
    /// when the budget ran out.
    pub(crate) async fn record_failure(
        &self,
        id: &str,
        owner: &str,
        error: &str,
        next_attempt_at: Millis,
        park_at: Option<Millis>,
    ) -> Result<(), StoreError> {
        let sql = "UPDATE destinations SET failures = failures + 1, next_attempt_at = $4, \
                   last_error = $3, parked_at = $5 \
                   WHERE destination_id = $1 AND lease_owner = $2";
        on_pool!(self, pool => sqlx::query(sql)
            .bind(id).bind(owner).bind(error).bind(next_attempt_at).bind(park_at)
            .execute(pool).await.map(|_| ()))
        .context("recording a failed delivery")?;
        Ok(())
    }

    /// Every delivery of the changes of these receipts.
    pub(crate) async fn deliveries_of(
        &self,
        receipt_id: &str,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        let sql = "SELECT destination_id, seq, receipt_id, delivered_at, attempts \
                   FROM deliveries WHERE receipt_id = $1 ORDER BY seq, destination_id";
        on_pool!(self, pool => sqlx::query_as(sql).bind(receipt_id).fetch_all(pool).await)
            .context("reading deliveries")
    }

    /// The records received since `since` (in force since the destination was registered) whose
    /// change did not reach the destination within `slower_than` of receipt: those whose legal
    /// clocks, judged at the destination, may be near or missed. Each with when its first change
    /// reached it, if it has.
    pub(crate) async fn late_deliveries(
        &self,
        id: &str,
        since: Millis,
        slower_than: Millis,
    ) -> Result<Vec<(Suppression, Option<Millis>)>, StoreError> {
        #[derive(sqlx::FromRow)]
        struct Late {
            #[sqlx(flatten)]
            row: Row,
            delivered_at: Option<i64>,
        }
        let sql = concat!(
            "SELECT ",
            columns!(),
            ", (SELECT MIN(d.delivered_at) FROM deliveries d \
               WHERE d.destination_id = $1 AND d.receipt_id = s.receipt_id) AS delivered_at \
             FROM suppressions s \
             WHERE s.received_at >= $2 \
             AND s.effective_at >= (SELECT created_at FROM destinations WHERE destination_id = $1) \
             AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.destination_id = $1 \
               AND d.receipt_id = s.receipt_id AND d.delivered_at - s.received_at <= $3)"
        );
        let rows: Vec<Late> = on_pool!(self, pool => sqlx::query_as(sql)
            .bind(id).bind(since).bind(slower_than)
            .fetch_all(pool).await)
        .context("reading late deliveries")?;
        rows.into_iter()
            .map(|l| Ok((l.row.into_suppression()?, l.delivered_at)))
            .collect()
    }
}
