//! `GetReceipt`: DURABLE when the store has the record, ACCEPTED while Redis remembers it as queued.

use super::{ReceiptState, ReceiptView, ServiceError, Suppressions};
use crate::domain::ReceiptId;

impl Suppressions {
    /// The current state of a receipt. The store is asked first and, if Redis no longer knows the
    /// receipt, once more: the worker may have committed it between the two look-ups.
    #[tracing::instrument(name = "receipt", skip_all)]
    pub async fn receipt(&self, id: ReceiptId) -> Result<ReceiptView, ServiceError> {
        let inner = &self.inner;
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
            return durable(s.received_at).await;
        }
        match inner.cache.is_pending(id).await {
            Ok(true) => Ok(ReceiptView {
                id,
                // A receipt id is a UUIDv7: it carries the time it was issued.
                accepted_at: accepted_at_of(id),
                state: ReceiptState::Accepted,
                proof: None,
            }),
            Ok(false) if first.is_ok() => match inner.store.receipt(id).await? {
                Some(s) => durable(s.received_at).await,
                None => Err(ServiceError::NotFound(format!("no receipt {id}"))),
            },
            Ok(false) => Err(ServiceError::Unavailable {
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
    id.0.get_timestamp()
        .map(|t| {
            let (secs, nanos) = t.to_unix();
            secs as i64 * 1000 + i64::from(nanos / 1_000_000)
        })
        .unwrap_or_default()
}
