//! The identifier vault's use cases: sealing a person's raw identifier when an opt-out asks to keep
//! it for delivery, revealing it for a destination that needs it, and `ForgetPerson`, which
//! destroys it with the person's free text while the block stays.
//!
//! The raw value exists in clear only inside [`Suppressions::seal`] and in what
//! [`Suppressions::reveal`] returns; it is never logged, traced or written anywhere but sealed.
//! What must not happen here: revealing to anything but a delivery to a `needs_identifier`
//! destination (the caller's duty), or erasing a hash (the person would stop being suppressed).

use super::{ServiceError, Suppressions};
use crate::{
    domain::{ReceiptId, Recipient, SealedIdentifier, SubjectHash},
    store::Erased,
};

/// The one door to kept identifiers, for what delivers to destinations registered as
/// `needs_identifier`: nothing else holds one. Cheap to clone.
#[derive(Clone)]
pub struct Vault {
    service: Suppressions,
}

impl Vault {
    pub(crate) fn new(service: Suppressions) -> Vault {
        Vault { service }
    }

    /// The identifier kept with the record `receipt` (see [`Suppressions::reveal`]); `Ok(None)`
    /// for a receipt id that is not one.
    pub async fn reveal(&self, receipt: &str) -> Result<Option<String>, ServiceError> {
        match ReceiptId::parse("receipt", receipt) {
            Ok(id) => self.service.reveal(id).await,
            Err(_) => Ok(None),
        }
    }
}

impl Suppressions {
    /// `recipient`'s identifier sealed for the record `receipt`; FAILED_PRECONDITION without a
    /// sealing key (without a vault key nothing raw is kept).
    pub(super) fn seal(
        &self,
        recipient: &Recipient,
        receipt: ReceiptId,
    ) -> Result<SealedIdentifier, ServiceError> {
        self.inner
            .vault
            .seal(recipient.value_for_vault(), &receipt.to_string())
            .ok_or_else(|| {
                ServiceError::Precondition(
                    "keep_identifier_for_delivery: no vault key with seal = true is configured \
                     in the key file, so no raw identifier can be kept"
                        .into(),
                )
            })
    }

    /// The raw identifier kept with the record `receipt`, for a delivery to a destination
    /// registered as `needs_identifier`, and for nothing else. `None` when none was kept, it was
    /// erased (`ForgetPerson`), the record is not committed yet, or the key that sealed it is no
    /// longer listed (logged, without the blob).
    #[tracing::instrument(name = "reveal", skip_all, fields(suppressd.receipt_id = %receipt))]
    pub(crate) async fn reveal(&self, receipt: ReceiptId) -> Result<Option<String>, ServiceError> {
        let Some(blob) = self.store().sealed_identifier(receipt).await? else {
            return Ok(None);
        };
        match self.inner.vault.open(&blob, &receipt.to_string()) {
            Ok(identifier) => Ok(Some(identifier)),
            Err(e) => {
                tracing::warn!(error = %e, "a kept identifier could not be opened");
                Ok(None)
            }
        }
    }

    /// Destroys what identifies the person beyond the keyed hash, within `tenant`: every sealed
    /// identifier of their records and the free text of their audit entries; records one `erasure`
    /// entry by `actor`. Their records and hashes stay, so they stay suppressed, and every proof
    /// still verifies. Opt-outs still queued are committed first, so none lands with an identifier
    /// after the erasure. Repeating it erases nothing more (and logs that it did nothing).
    #[tracing::instrument(name = "forget_person", skip_all, err)]
    pub(crate) async fn forget_person(
        &self,
        subject: SubjectHash,
        tenant: &str,
        actor: &str,
    ) -> Result<Erased, ServiceError> {
        self.queued_committed().await?;
        let now = self.now();
        Ok(self
            .store()
            .erase_person(&subject, tenant, actor, now, self.audit_log())
            .await?)
    }
}
