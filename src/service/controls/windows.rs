//! Send windows: setting one (which replaces the window set before for the same tenant, channel
//! and topic, in the same transaction) and removing one. Both are changes to the controls like a
//! halt: audited, versioned, propagated, and confirmed or not.

use super::{Changed, channel_names};
use crate::{
    audit::Action,
    domain::{
        ReceiptId,
        control::{ChannelSet, Control, Ended, SendWindow, WindowParts, time_of_day},
    },
    service::{ServiceError, Suppressions},
};
use serde_json::json;

/// A send window as asked for.
#[derive(Debug, Clone)]
pub(crate) struct NewWindow {
    pub(crate) tenant: String,
    /// Empty: every channel.
    pub(crate) channels: ChannelSet,
    pub(crate) topic: String,
    pub(crate) start: String,
    pub(crate) end: String,
    pub(crate) time_zone: String,
    pub(crate) reason: String,
}

impl Suppressions {
    #[tracing::instrument(name = "set_send_window", skip_all, err)]
    pub(crate) async fn set_send_window(
        &self,
        new: NewWindow,
        actor: String,
    ) -> Result<Changed<SendWindow>, ServiceError> {
        let now = self.now();
        let window = SendWindow::new(
            ReceiptId::new(now),
            WindowParts {
                tenant: &new.tenant,
                channels: new.channels,
                topic: &new.topic,
                start: &new.start,
                end: &new.end,
                zone: &new.time_zone,
                reason: &new.reason,
            },
            actor.clone(),
            now,
        )?;
        let replaced: Vec<ReceiptId> = self
            .inner
            .store
            .controls(Some(&window.tenant))
            .await?
            .into_iter()
            .filter_map(|c| match c {
                Control::Window(w) if w.ended.is_none() && w.same_place(&window) => Some(w.id),
                _ => None,
            })
            .collect();
        let end = Ended {
            at: now,
            by: actor,
            reason: format!("replaced by {}", window.id),
        };
        let replaces: Vec<_> = replaced.iter().map(|id| (*id, end.clone())).collect();
        let detail = json!({
            "reason": window.reason,
            "channels": channel_names(window.channels),
            "start": time_of_day(window.start),
            "end": time_of_day(window.end),
            "time_zone": window.zone.name(),
            "replaces": replaced.iter().map(ReceiptId::to_string).collect::<Vec<_>>(),
        });
        let (control, propagation) = self
            .create(
                Control::Window(window),
                &replaces,
                Action::SetSendWindow,
                detail,
                now,
            )
            .await?;
        let Control::Window(control) = control else {
            unreachable!("built as a window")
        };
        Ok(Changed {
            control,
            propagation,
        })
    }

    #[tracing::instrument(name = "remove_send_window", skip_all, err)]
    pub(crate) async fn remove_send_window(
        &self,
        id: ReceiptId,
        reason: &str,
        actor: String,
    ) -> Result<Changed<SendWindow>, ServiceError> {
        let action = Action::RemoveSendWindow;
        match self.end(id, "send window", reason, actor, action).await? {
            (Control::Window(control), propagation) => Ok(Changed {
                control,
                propagation,
            }),
            _ => unreachable!("end checks the kind"),
        }
    }
}
