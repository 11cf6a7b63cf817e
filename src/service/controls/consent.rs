//! Consent requirements: requiring consent for a tenant's topic (on one channel or all) and
//! dropping the requirement. Both are changes to the controls like a halt: audited, versioned,
//! published in Redis, propagated, and confirmed or not; a replica that cannot confirm its controls
//! lets nothing go, so it cannot miss a requirement either. A second requirement of the same tenant,
//! channel and topic is refused (it would change nothing), naming the one in force.

use super::{Changed, channel_names};
use crate::{
    audit::Action,
    domain::{
        ReceiptId,
        control::{ChannelSet, ConsentRequirement, Control},
    },
    service::{ServiceError, Suppressions},
};
use serde_json::json;

/// A consent requirement as asked for.
#[derive(Debug, Clone)]
pub(crate) struct NewRequirement {
    pub(crate) tenant: String,
    /// Empty: every channel.
    pub(crate) channels: ChannelSet,
    pub(crate) topic: String,
    pub(crate) reason: String,
}

impl Suppressions {
    #[tracing::instrument(name = "require_consent", skip_all, err)]
    pub(crate) async fn require_consent(
        &self,
        new: NewRequirement,
        actor: String,
    ) -> Result<Changed<ConsentRequirement>, ServiceError> {
        let now = self.now();
        let place = (new.tenant.as_str(), new.channels, new.topic.as_str());
        let requirement =
            ConsentRequirement::new(ReceiptId::new(now), place, &new.reason, actor, now)?;
        let existing = self
            .inner
            .store
            .controls(Some(&requirement.tenant))
            .await?
            .into_iter()
            .find_map(|c| match c {
                Control::Consent(r) if r.ended.is_none() && r.same_place(&requirement) => {
                    Some(r.id)
                }
                _ => None,
            });
        if let Some(id) = existing {
            return Err(ServiceError::Precondition(format!(
                "consent is already required there, by requirement {id}"
            )));
        }
        let detail = json!({
            "reason": requirement.reason,
            "channels": channel_names(requirement.channels),
        });
        let control = Control::Consent(requirement);
        let (control, propagation) = self
            .create(control, &[], Action::RequireConsent, detail, now)
            .await?;
        let Control::Consent(control) = control else {
            unreachable!("built as a consent requirement")
        };
        Ok(Changed {
            control,
            propagation,
        })
    }

    #[tracing::instrument(name = "drop_consent_requirement", skip_all, err)]
    pub(crate) async fn drop_consent_requirement(
        &self,
        id: ReceiptId,
        reason: &str,
        actor: String,
    ) -> Result<Changed<ConsentRequirement>, ServiceError> {
        let action = Action::DropConsentRequirement;
        match self
            .end(id, "consent requirement", reason, actor, action)
            .await?
        {
            (Control::Consent(control), propagation) => Ok(Changed {
                control,
                propagation,
            }),
            _ => unreachable!("end checks the kind"),
        }
    }
}
