//! `DURABLE` opt-outs waiting for their commit. Any replica's worker may commit a record, so workers
//! announce committed receipts (through the cache, which owns that pub/sub protocol) and every
//! replica's listener wakes its own waiters. A missed announcement costs only latency: a waiter that times out asks the store.

use crate::{cache::Cache, domain::ReceiptId};
use std::{collections::HashMap, sync::Mutex, time::Duration};
use tokio::sync::oneshot;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
pub(crate) struct Waiters {
    waiting: Mutex<HashMap<ReceiptId, oneshot::Sender<()>>>,
}

impl Waiters {
    /// Returns a receiver that completes when `id` is announced as committed.
    pub(crate) fn register(&self, id: ReceiptId) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().expect("waiters lock").insert(id, tx);
        rx
    }

    pub(crate) fn forget(&self, id: ReceiptId) {
        self.waiting.lock().expect("waiters lock").remove(&id);
    }

    /// Wakes the waiters of these receipts, if they are on this replica.
    pub(crate) fn committed(&self, ids: impl IntoIterator<Item = ReceiptId>) {
        let mut waiting = self.waiting.lock().expect("waiters lock");
        for id in ids {
            if let Some(tx) = waiting.remove(&id) {
                let _ = tx.send(());
            }
        }
    }

    /// Listens for announcements until shutdown, resubscribing whenever Redis drops the connection.
    /// `ready` is cancelled once the first subscription is in place.
    pub(crate) async fn listen(
        &self,
        cache: Cache,
        ready: CancellationToken,
        shutdown: CancellationToken,
    ) {
        while !shutdown.is_cancelled() {
            let announcements = match cache.commit_announcements().await {
                Ok(announcements) => announcements,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot subscribe to commit announcements; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(250)) => continue,
                        _ = shutdown.cancelled() => return,
                    }
                }
            };
            ready.cancel();
            let mut announcements = std::pin::pin!(announcements);
            loop {
                tokio::select! {
                    committed = announcements.next() => match committed {
                        Some(ids) => self.committed(ids),
                        None => break,
                    },
                    _ = shutdown.cancelled() => return,
                }
            }
            tracing::warn!("commit announcements interrupted; resubscribing");
        }
    }
}
