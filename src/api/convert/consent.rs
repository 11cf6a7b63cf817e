//! Consent requirements, consents and the "no consent" answer, between proto and domain. Kept
//! apart from `controls` by topic; the same rules hold (complete destructuring, errors naming the
//! field as the caller wrote it).

use super::{
    channel, channel_to_proto, controls::propagation_to_proto, opt_out_scope, recipient, timestamp,
};
use crate::{
    domain::{
        Channel, Invalid, ReceiptId, Scope,
        consent::{Consent, Evidence},
        control::{ChannelSet, ConsentRequirement, Ended},
    },
    proto,
    service::{
        consent::NewConsent,
        controls::{Changed, NewRequirement},
    },
};

pub(crate) fn require(req: proto::RequireConsentRequest) -> Result<NewRequirement, Invalid> {
    let proto::RequireConsentRequest {
        tenant,
        channel: code,
        topic,
        reason,
    } = req;
    Ok(NewRequirement {
        tenant,
        channels: channel(code)
            .map_err(|e| Invalid::new("channel", e.message))?
            .map_or(ChannelSet::EVERY, |c| ChannelSet::of([c])),
        topic,
        reason,
    })
}

pub(crate) fn drop_requirement(
    req: proto::DropConsentRequirementRequest,
) -> Result<(ReceiptId, String), Invalid> {
    let proto::DropConsentRequirementRequest {
        requirement_id,
        reason,
    } = req;
    let id = super::controls::id("requirement_id", &requirement_id, "RequireConsent")?;
    Ok((id, reason))
}

pub(crate) fn record(req: proto::RecordConsentRequest) -> Result<NewConsent, Invalid> {
    let proto::RecordConsentRequest {
        recipient: r,
        scope,
        evidence,
    } = req;
    let recipient = recipient(r)?;
    let scope = opt_out_scope(scope)?;
    let proto::ConsentEvidence {
        source,
        proof,
        actor,
    } = evidence.ok_or_else(|| Invalid::new("evidence", "is required"))?;
    Ok(NewConsent {
        recipient,
        scope,
        evidence: Evidence::parse(&source, &proof, &actor)?,
    })
}

/// One channel, or every channel (said as the request says it: unspecified).
fn one_channel(channels: ChannelSet) -> proto::Channel {
    match channels.iter().collect::<Vec<_>>()[..] {
        [one] if channels != ChannelSet::EVERY => channel_to_proto(Some(one)),
        _ => channel_to_proto(None),
    }
}

pub(crate) fn requirement_to_proto(r: ConsentRequirement) -> proto::ConsentRequirement {
    let ConsentRequirement {
        id,
        tenant,
        channels,
        topic,
        reason,
        actor,
        at,
        ended,
    } = r;
    let (dropped_at, dropped_by, drop_reason) = match ended {
        Some(Ended { at, by, reason }) => (Some(timestamp(at)), by, reason),
        None => (None, String::new(), String::new()),
    };
    proto::ConsentRequirement {
        requirement_id: id.to_string(),
        tenant,
        channel: one_channel(channels) as i32,
        topic,
        reason,
        required_by: actor,
        required_at: Some(timestamp(at)),
        dropped_at,
        dropped_by,
        drop_reason,
        propagation: None,
    }
}

/// A changed requirement, with how far the change had reached.
pub(crate) fn changed_requirement_to_proto(
    changed: Changed<ConsentRequirement>,
) -> proto::ConsentRequirement {
    let Changed {
        control,
        propagation,
    } = changed;
    proto::ConsentRequirement {
        propagation: Some(propagation_to_proto(propagation)),
        ..requirement_to_proto(control)
    }
}

fn scope_to_proto(s: Scope) -> proto::Scope {
    let Scope {
        tenant,
        channel,
        topic,
        campaign,
    } = s;
    proto::Scope {
        tenant,
        channel: channel_to_proto(channel) as i32,
        topic,
        campaign,
    }
}

pub(crate) fn consent_to_proto(c: Consent) -> proto::Consent {
    let Consent {
        id,
        subject: _,
        scope,
        evidence: Evidence {
            source,
            proof,
            actor,
        },
        recorded_by,
        at,
    } = c;
    // A token's listing withholds the evidence (all parts empty): no message then.
    let evidence = (!source.is_empty()).then_some(proto::ConsentEvidence {
        source,
        proof,
        actor,
    });
    proto::Consent {
        consent_id: id.to_string(),
        scope: Some(scope_to_proto(scope)),
        evidence,
        recorded_by,
        recorded_at: Some(timestamp(at)),
    }
}

/// What a check under a requirement answers for a person without consent: suppressed, `matched`
/// describing the requirement (reason NO_CONSENT, source API, receipt = its id) on the notice's
/// channel, and the requirement itself.
pub(crate) fn no_consent(
    r: &ConsentRequirement,
    channel: Channel,
) -> (proto::SuppressionRecord, proto::ConsentRequirement) {
    let matched = proto::SuppressionRecord {
        scope: Some(proto::Scope {
            tenant: r.tenant.clone(),
            channel: channel_to_proto(Some(channel)) as i32,
            topic: r.topic.clone(),
            campaign: String::new(),
        }),
        reason: proto::Reason::NoConsent as i32,
        source: proto::Source::Api as i32,
        received_at: Some(timestamp(r.at)),
        expires_at: None,
        receipt_id: r.id.to_string(),
        effective_at: Some(timestamp(r.at)),
        import_batch: String::new(),
    };
    (matched, requirement_to_proto(r.clone()))
}
