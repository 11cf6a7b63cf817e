//! Confirmations: a person who opts out is told so, and the telling is evidence (issue 21 item 3).
//!
//! A confirmation is an audit entry of action `confirmation` carrying the opt-out's receipt, subject
//! and scope (so the person's history lists it with the record, and `audit export` carries it), the
//! confirming actor, and in `detail` how and when the person was told: the channel, the SHA-256 of
//! the message as sent, when it was sent and the provider's message id. suppressd records its own
//! (the SMS reply to a STOP, the one-click confirmation page); senders record theirs with
//! `RecordConfirmation`. Recording the same confirmation twice leaves one entry.
//!
//! The confirmation message itself may go despite the opt-out, once: a check of purpose
//! `OPT_OUT_CONFIRMATION` whose only obstacle is the person's own opt-out received within
//! [`CONFIRM_WITHIN`] is answered "send", naming the receipt; the first such answer claims the
//! receipt in Redis (`SET NX`, kept as long as the window), so a second one blocks. If Redis cannot
//! be asked, the opt-out blocks: a confirmation lost is better than a second message.

use super::{
    ReceiptState, ReceiptView, ServiceError, Suppressions,
    check::{Answer, Check, Purpose},
};
use crate::{
    audit::{Action, AuditEntry},
    domain::{Channel, Invalid, Millis, Reason, ReceiptId},
    store::audit::AuditRow,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How long after an opt-out its confirmation may still go.
pub(crate) const CONFIRM_WITHIN: Millis = 5 * 60 * 1000;
/// The actor of the confirmations suppressd sends itself.
pub(crate) const SELF: &str = "suppressd";
const MAX_MESSAGE_ID: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Confirmation {
    pub(crate) receipt: ReceiptId,
    pub(crate) channel: Channel,
    /// Lower-case hex.
    pub(crate) content_sha256: String,
    pub(crate) sent_at: Millis,
    pub(crate) provider_message_id: String,
    pub(crate) actor: String,
    /// The entry's index in the log (0 until recorded).
    pub(crate) log_index: u64,
}

/// What the entry's `detail` holds, as compact JSON in this field order.
#[derive(Serialize, Deserialize)]
struct Particulars {
    channel: u8,
    content_sha256: String,
    sent_at: Millis,
    provider_message_id: String,
}

impl Confirmation {
    /// A confirmation as a caller states it; `field` prefixes the names in errors.
    pub(crate) fn new(
        receipt: ReceiptId,
        channel: Option<Channel>,
        content_sha256: &str,
        sent_at: Option<Millis>,
        provider_message_id: &str,
        actor: &str,
        now: Millis,
    ) -> Result<Confirmation, Invalid> {
        let channel = channel.ok_or_else(|| Invalid::new("channel", "is required"))?;
        let hash = content_sha256.trim().to_ascii_lowercase();
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Invalid::new(
                "content_sha256",
                "must be the message's SHA-256 as 64 hex digits",
            ));
        }
        let sent_at = sent_at.ok_or_else(|| Invalid::new("sent_at", "is required"))?;
        // A minute of clock skew between the sender and us.
        if sent_at > now + 60_000 {
            return Err(Invalid::new("sent_at", "lies in the future"));
        }
        if provider_message_id.len() > MAX_MESSAGE_ID {
            return Err(Invalid::new(
                "provider_message_id",
                format!("is longer than {MAX_MESSAGE_ID} bytes"),
            ));
        }
        Ok(Confirmation {
            receipt,
            channel,
            content_sha256: hash,
            sent_at,
            provider_message_id: provider_message_id.to_owned(),
            actor: actor.to_owned(),
            log_index: 0,
        })
    }

    /// One suppressd sent itself: `text` on `channel` at `sent_at`, answering `answered` (the
    /// provider's message it replied to, or what it answered).
    pub(crate) fn own(
        receipt: ReceiptId,
        channel: Channel,
        text: &str,
        sent_at: Millis,
        answered: &str,
    ) -> Confirmation {
        Confirmation {
            receipt,
            channel,
            content_sha256: hex::encode(Sha256::digest(text.as_bytes())),
            sent_at,
            provider_message_id: answered.to_owned(),
            actor: SELF.to_owned(),
            log_index: 0,
        }
    }

    fn detail(&self) -> String {
        serde_json::to_string(&Particulars {
            channel: self.channel.code(),
            content_sha256: self.content_sha256.clone(),
            sent_at: self.sent_at,
            provider_message_id: self.provider_message_id.clone(),
        })
        .expect("particulars serialize")
    }

    fn from_row(row: AuditRow) -> Option<Confirmation> {
        let p: Particulars = serde_json::from_str(row.detail.as_deref()?).ok()?;
        Some(Confirmation {
            receipt: ReceiptId::parse("receipt", &row.receipt_id).ok()?,
            channel: Channel::from_code(p.channel)?,
            content_sha256: p.content_sha256,
            sent_at: p.sent_at,
            provider_message_id: p.provider_message_id,
            actor: row.actor,
            log_index: row.seq as u64,
        })
    }
}

impl Suppressions {
    /// Commits `confirmation` to the log, for a caller who may see only the tenants `may_see`
    /// accepts. The opt-out must be in the store (DURABLE).
    #[tracing::instrument(name = "confirmation", skip_all, err)]
    pub(crate) async fn record_confirmation(
        &self,
        confirmation: Confirmation,
        may_see: impl Fn(&str) -> bool,
    ) -> Result<Confirmation, ServiceError> {
        let inner = &self.inner;
        let id = confirmation.receipt;
        let not_found = || ServiceError::NotFound(format!("no receipt {id}"));
        let record = match inner.store.receipt(id).await? {
            Some(record) if may_see(&record.scope.tenant) => record,
            Some(_) => return Err(not_found()),
            None => {
                return match inner.cache.queued_tenant(id).await {
                    Ok(Some(Some(tenant))) if may_see(&tenant) => {
                        Err(ServiceError::Precondition(format!(
                            "receipt {id} is not DURABLE yet; record its confirmation once \
                             GetReceipt says DURABLE"
                        )))
                    }
                    _ => Err(not_found()),
                };
            }
        };
        let entry = AuditEntry {
            actor: confirmation.actor.clone(),
            ..AuditEntry::about(Action::Confirmation, 0, self.now(), &record, "")
        }
        .with_detail(confirmation.detail());
        let log_index = inner
            .store
            .append_confirmation(entry, self.audit_log())
            .await?;
        Ok(Confirmation {
            log_index,
            ..confirmation
        })
    }

    /// Lets the confirmation of a person's own recent opt-out through, once: for each check of
    /// purpose [`Purpose::OptOutConfirmation`] that the opt-out alone blocks. Not while this
    /// replica's controls are stale (a halt it has not seen may cover the message).
    pub(super) async fn let_confirmations_through(
        &self,
        checks: &[Check],
        answers: &mut [Answer],
        now: Millis,
    ) {
        if checks.iter().all(|c| c.purpose == Purpose::Notice) || self.controls_stale() {
            return;
        }
        for (check, answer) in checks.iter().zip(answers.iter_mut()) {
            let Answer::Suppressed(m) = answer else {
                continue;
            };
            let recent = (0..=CONFIRM_WITHIN).contains(&(now - m.received_at));
            if check.purpose != Purpose::OptOutConfirmation
                || m.reason != Reason::UserRequest
                || !recent
            {
                continue;
            }
            let window = std::time::Duration::from_millis(CONFIRM_WITHIN as u64);
            match self.inner.cache.claim_confirmation(m.receipt, window).await {
                Ok(true) => *answer = Answer::Confirms(m.clone()),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e,
                    "could not claim an opt-out's confirmation; the opt-out blocks it"),
            }
        }
    }

    /// Records the confirmation suppressd itself is sending for `receipt` (see [`Confirmation::own`]).
    /// Best effort: the person is told and the opt-out stands either way; an opt-out not yet
    /// DURABLE (the store slow past the wait) or a store failure leaves it unrecorded, logged.
    pub(crate) async fn record_own_confirmation(
        &self,
        receipt: &ReceiptView,
        channel: Channel,
        text: &str,
        answered: &str,
    ) {
        if receipt.state != ReceiptState::Durable {
            tracing::warn!(receipt = %receipt.id,
                "the opt-out is not durable yet; its confirmation is sent but not recorded");
            return;
        }
        let own = Confirmation::own(receipt.id, channel, text, self.now(), answered);
        if let Err(e) = self.record_confirmation(own, |_| true).await {
            tracing::warn!(receipt = %receipt.id, error = format!("{e:#}"),
                "could not record the confirmation sent for an opt-out");
        }
    }

    /// The confirmations of the opt-out `id`, oldest first.
    pub(crate) async fn confirmations(
        &self,
        id: ReceiptId,
    ) -> Result<Vec<Confirmation>, ServiceError> {
        let rows = self.inner.store.confirmations_of(id).await?;
        Ok(rows
            .into_iter()
            .filter_map(Confirmation::from_row)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stated(hash: &str, sent_at: Option<Millis>, id: &str) -> Result<Confirmation, Invalid> {
        Confirmation::new(
            ReceiptId::new(0),
            Some(Channel::Sms),
            hash,
            sent_at,
            id,
            "sender",
            1_000_000,
        )
    }

    #[test]
    fn each_bad_field_is_named() {
        let hash = "a".repeat(64);
        let field = |r: Result<Confirmation, Invalid>| r.unwrap_err().field;
        assert_eq!(field(stated("abc", Some(0), "")), "content_sha256");
        assert_eq!(
            field(stated(&"g".repeat(64), Some(0), "")),
            "content_sha256"
        );
        assert_eq!(field(stated(&hash, None, "")), "sent_at");
        assert_eq!(
            field(stated(&hash, Some(1_000_000 + 61_000), "")),
            "sent_at"
        );
        assert_eq!(
            field(stated(&hash, Some(0), &"x".repeat(257))),
            "provider_message_id"
        );
        assert!(stated(&hash.to_uppercase(), Some(1_000_000), "SM1").is_ok());
    }
}
