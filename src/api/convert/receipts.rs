//! Receipts and the audit log's answers between proto and service values: a receipt id asked for,
//! a receipt with its inclusion proof, a signed checkpoint, a consistency proof. Kept apart from the
//! rest of `convert` by topic; the same rules hold (complete destructuring, errors naming the field
//! as the caller wrote it). Proofs are only carried across: they are built and checked in `audit`.

use super::{channel, channel_to_proto, millis, timestamp};
use crate::{
    audit::{merkle::Hash, verify::ReceiptProof},
    domain::{Invalid, Millis, ReceiptId},
    proto,
    service::{ReceiptState, ReceiptView, audit::CheckpointView, confirmations::Confirmation},
};

pub(crate) fn receipt_id(req: proto::GetReceiptRequest) -> Result<ReceiptId, Invalid> {
    let proto::GetReceiptRequest { receipt_id } = req;
    ReceiptId::parse("receipt_id", &receipt_id)
}

pub(crate) fn receipt_to_proto(r: ReceiptView) -> proto::Receipt {
    let ReceiptView {
        id,
        accepted_at,
        state,
        proof,
    } = r;
    proto::Receipt {
        proof: proof.map(proof_to_proto),
        confirmations: Vec::new(),
        deliveries: Vec::new(),
        receipt_id: id.to_string(),
        accepted_at: Some(timestamp(accepted_at)),
        state: match state {
            ReceiptState::Accepted => proto::ReceiptState::Accepted,
            ReceiptState::Durable => proto::ReceiptState::Durable,
        } as i32,
    }
}

fn proof_to_proto(p: ReceiptProof) -> proto::AuditProof {
    let ReceiptProof {
        receipt_id: _,
        log_index,
        entry,
        leaf_hash,
        inclusion_proof,
        checkpoint,
        tree_size,
    } = p;
    proto::AuditProof {
        log_index,
        entry,
        leaf_hash: leaf_hash.to_vec(),
        inclusion_proof: inclusion_proof.iter().map(|h| h.to_vec()).collect(),
        checkpoint,
        tree_size,
    }
}

pub(crate) fn checkpoint_to_proto(c: CheckpointView) -> proto::SignedCheckpoint {
    let CheckpointView { note, size, root } = c;
    proto::SignedCheckpoint {
        note,
        tree_size: size,
        root_hash: root.to_vec(),
    }
}

pub(crate) fn consistency_to_proto(
    (old_size, new_size, hashes): (u64, u64, Vec<Hash>),
) -> proto::ConsistencyProof {
    proto::ConsistencyProof {
        old_size,
        new_size,
        hashes: hashes.iter().map(|h| h.to_vec()).collect(),
    }
}

/// A confirmation as a sender states it, recorded as `actor` at `now`.
pub(crate) fn confirmation(
    req: proto::RecordConfirmationRequest,
    actor: &str,
    now: Millis,
) -> Result<Confirmation, Invalid> {
    let proto::RecordConfirmationRequest {
        receipt_id,
        channel: told_by,
        content_sha256,
        sent_at,
        provider_message_id,
    } = req;
    let receipt = ReceiptId::parse("receipt_id", &receipt_id)?;
    let told_by = channel(told_by).map_err(|e| Invalid::new("channel", e.message))?;
    let sent_at = sent_at.map(|t| millis("sent_at", t)).transpose()?;
    Confirmation::new(
        receipt,
        told_by,
        &content_sha256,
        sent_at,
        &provider_message_id,
        actor,
        now,
    )
}

pub(crate) fn confirmation_to_proto(c: Confirmation) -> proto::Confirmation {
    let Confirmation {
        receipt,
        channel,
        content_sha256,
        sent_at,
        provider_message_id,
        actor,
        log_index,
    } = c;
    proto::Confirmation {
        receipt_id: receipt.to_string(),
        channel: channel_to_proto(Some(channel)) as i32,
        content_sha256,
        sent_at: Some(timestamp(sent_at)),
        provider_message_id,
        actor,
        log_index,
    }
}

/// A record's delivery to one webhook destination.
pub(crate) fn delivery_to_proto(
    d: crate::service::delivery::DeliveryView,
) -> proto::DestinationDelivery {
    use crate::service::delivery::{DeliveryState, DeliveryView};
    let DeliveryView {
        destination_id,
        state,
        opt_out: _,
    } = d;
    let (state, delivered_at) = match state {
        DeliveryState::Pending => (proto::DeliveryState::Pending, None),
        DeliveryState::Delivered(at) => (proto::DeliveryState::Delivered, Some(timestamp(at))),
        DeliveryState::Parked => (proto::DeliveryState::Parked, None),
    };
    proto::DestinationDelivery {
        destination_id,
        state: state as i32,
        delivered_at,
        deadlines: Vec::new(),
    }
}
