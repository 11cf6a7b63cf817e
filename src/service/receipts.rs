//! `GetReceipt`: DURABLE when the store has the record, ACCEPTED while Redis remembers it as queued;
//! either only for a caller who may see the record's tenant (to anyone else a receipt of another
//! tenant does not exist, so ids cannot be probed across tenants).

use super::{ReceiptState, ReceiptView, ServiceError, Suppressions};
use crate::domain::ReceiptId;

impl Suppressions {
    /// The current state of a receipt. The store is asked first and, if Redis no longer knows the
    /// receipt, once more: the worker may have committed it between the two look-ups.
    pub(crate) async fn receipt(&self, id: ReceiptId) -> Result<ReceiptView, ServiceError> {
        self.receipt_for(id, |_| true).await
    }

    /// [`Self::receipt`], for a caller who may see only the tenants `may_see` accepts.
    #[tracing::instrument(name = "receipt", skip_all)]
    pub(crate) async fn receipt_for(
        &self,
        id: ReceiptId,
        may_see: impl Fn(&str) -> bool,
    ) -> Result<ReceiptView, ServiceError> {
        let inner = &self.inner;
        let not_found = || ServiceError::NotFound(format!("no receipt {id}"));
        let durable = |accepted_at| async move {
            Ok(ReceiptView {
                id,
                accepted_at,
                state: ReceiptState::Durable,
                proof: super::audit::receipt_proof(&inner.store, id).await?,
            })
        };
        let first = inner.store.receipt(id).await;
        if let Ok(Some(s)) = &first {
            return match may_see(&s.scope.tenant) {
                true => durable(s.received_at).await,
                false => Err(not_found()),
            };
        }
        match inner.cache.queued_tenant(id).await {
            Ok(Some(Some(tenant))) if may_see(&tenant) => Ok(ReceiptView {
                id,
                // A receipt id is a UUIDv7: it carries the time it was issued.
                accepted_at: accepted_at_of(id),
                state: ReceiptState::Accepted,
                proof: None,
            }),
            Ok(Some(Some(_))) => Err(not_found()),
            // Not queued, or its entry just left the stream: the store has it now, or nobody does.
            Ok(_) if first.is_ok() => match inner.store.receipt(id).await? {
                Some(s) if may_see(&s.scope.tenant) => durable(s.received_at).await,
                _ => Err(not_found()),
            },
            Ok(_) => Err(ServiceError::Unavailable {
                message: "the durable store is unavailable; the receipt's state is unknown".into(),
                cause: None,
            }),
            Err(e) => Err(ServiceError::Unavailable {
                message: "Redis is unavailable; the receipt's state is unknown".into(),
                cause: Some(e.into()),
            }),
        }
    }
}

fn accepted_at_of(id: ReceiptId) -> i64 {
    id.millis()
}
