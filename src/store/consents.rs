//! The `consents` table: a person's recorded consents, each written in one transaction with its
//! audit entry, and the one question a check asks of them, "does a consent cover this notice?".
//!
//! That question carries the revocation rule (`domain::consent`): a consent counts only if no
//! opt-out of the person's own covering the notice was received at or after it, whether that
//! opt-out holds or was ended by an opt-in; rolled-back imports revoke nothing, since a rollback
//! takes back what the system did. Being a query over what is stored, the rule needs no write when
//! an opt-out arrives. A check whose opt-out is not yet in the store is answered by the cache
//! before it gets here (an active opt-out suppresses, whatever the consents).

use super::{Context, Store, StoreError, audit::AuditTx};
use crate::{
    audit::{AuditEntry, AuditLog},
    domain::{
        Channel, Invalid, Notice, Reason, ReceiptId, Scope, SubjectHash,
        consent::{Consent, Evidence},
        scope::channel_code,
    },
};

macro_rules! consent_columns {
    () => {
        "consent_id, subject, tenant, channel, topic, campaign, source, proof, evidence_actor, \
         actor, received_at"
    };
}

#[derive(sqlx::FromRow)]
struct Row {
    consent_id: String,
    subject: Vec<u8>,
    tenant: String,
    channel: i32,
    topic: String,
    campaign: String,
    source: String,
    proof: String,
    evidence_actor: String,
    actor: String,
    received_at: i64,
}

impl Row {
    fn into_consent(self) -> Result<Consent, StoreError> {
        let corrupt = |problem: &str| StoreError::Corrupt {
            receipt: self.consent_id.clone(),
            problem: problem.to_owned(),
        };
        let channel = match self.channel {
            0 => None,
            c => Some(
                u8::try_from(c)
                    .ok()
                    .and_then(Channel::from_code)
                    .ok_or_else(|| corrupt("channel"))?,
            ),
        };
        let scope = Scope::parse(&self.tenant, channel, &self.topic, &self.campaign)
            .map_err(|e: Invalid| corrupt(&e.to_string()))?;
        Ok(Consent {
            id: ReceiptId::parse("consent_id", &self.consent_id)
                .map_err(|_| corrupt("consent_id"))?,
            subject: SubjectHash::from_slice(&self.subject).ok_or_else(|| corrupt("subject"))?,
            scope,
            evidence: Evidence {
                source: self.source,
                proof: self.proof,
                actor: self.evidence_actor,
            },
            recorded_by: self.actor,
            at: self.received_at,
        })
    }
}

impl Store {
    /// Stores a consent and appends `entry` (numbered here), in one transaction.
    #[tracing::instrument(name = "INSERT consents", skip_all, fields(
        otel.kind = "client", db.system = self.engine(), db.operation = "INSERT",
        db.sql.table = "consents"))]
    pub(crate) async fn insert_consent(
        &self,
        c: &Consent,
        entry: AuditEntry,
        log: &AuditLog,
    ) -> Result<(), StoreError> {
        let sql = concat!(
            "INSERT INTO consents (",
            consent_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        );
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.context("beginning a consent")?;
            sqlx::query(sql)
                .bind(c.id.to_string())
                .bind(c.subject.0.to_vec())
                .bind(&c.scope.tenant)
                .bind(i32::from(channel_code(c.scope.channel)))
                .bind(&c.scope.topic)
                .bind(&c.scope.campaign)
                .bind(&c.evidence.source)
                .bind(&c.evidence.proof)
                .bind(&c.evidence.actor)
                .bind(&c.recorded_by)
                .bind(c.at)
                .execute(&mut *tx)
                .await
                .context("inserting a consent")?;
            let head = tx.lock_head().await?;
            let entry = AuditEntry { seq: head.seq(0), ..entry };
            tx.append_audit(head, [entry], log, c.at).await?;
            tx.commit().await.context("committing a consent")
        })
    }

    /// Whether a consent of `subject` covers the notice and no later opt-out of the person's own
    /// revoked it: the one extra look-up of a check under a consent requirement.
    #[tracing::instrument(name = "SELECT consents", skip_all, fields(
        otel.kind = "client", db.system = self.engine(), db.operation = "SELECT",
        db.sql.table = "consents"))]
    pub(crate) async fn consented(
        &self,
        subject: &SubjectHash,
        notice: &Notice,
    ) -> Result<bool, StoreError> {
        let sql = "SELECT c.consent_id FROM consents c \
             WHERE c.subject = $1 AND c.tenant = $2 \
               AND (c.channel = 0 OR c.channel = $3) \
               AND (c.topic = '' OR c.topic = $4) \
               AND (c.campaign = '' OR c.campaign = $5) \
               AND NOT EXISTS (SELECT 1 FROM suppressions s \
                   WHERE s.subject = c.subject AND s.tenant = c.tenant \
                     AND (s.channel = 0 OR s.channel = $3) \
                     AND (s.topic = '' OR s.topic = $4) \
                     AND (s.campaign = '' OR s.campaign = $5) \
                     AND s.reason IN ($6, $7, $8) \
                     AND s.received_at >= c.received_at \
                     AND (s.ended_by IS NULL OR s.ended_by <> 'rollback')) \
             LIMIT 1";
        let own =
            [Reason::UserRequest, Reason::Complaint, Reason::Legal].map(|r| i32::from(r.code()));
        let found: Option<String> = on_pool!(self, pool => sqlx::query_scalar(sql)
            .bind(subject.0.to_vec())
            .bind(&notice.tenant)
            .bind(i32::from(notice.channel.code()))
            .bind(&notice.topic)
            .bind(&notice.campaign)
            .bind(own[0])
            .bind(own[1])
            .bind(own[2])
            .fetch_optional(pool)
            .await)
        .context("reading consents")?;
        Ok(found.is_some())
    }

    /// Every consent of one person within a tenant, oldest first (for `ListSuppressions`).
    pub(crate) async fn consents_of(
        &self,
        subject: &SubjectHash,
        tenant: &str,
    ) -> Result<Vec<Consent>, StoreError> {
        let sql = concat!(
            "SELECT ",
            consent_columns!(),
            " FROM consents WHERE subject = $1 AND tenant = $2 ORDER BY received_at, consent_id"
        );
        let rows: Vec<Row> = on_pool!(self, pool => sqlx::query_as(sql)
            .bind(subject.0.to_vec())
            .bind(tenant)
            .fetch_all(pool)
            .await)
        .context("reading a person's consents")?;
        rows.into_iter().map(Row::into_consent).collect()
    }
}
