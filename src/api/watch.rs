//! `WatchChanges`: the handler validates the start and the filter, checks the tenants against the
//! caller (a key restricted to tenants must name them, and sees only those), and turns the
//! service's channel of audit entries into the response stream. Backpressure is the channel's: the
//! transport takes the next change only when HTTP/2 lets it send.

use super::{SuppressionApi, auth, convert::timestamp, status::Refusal, suppression::principal};
use crate::{
    audit::AuditEntry,
    domain::Invalid,
    proto,
    service::{
        ServiceError,
        watch::{Start, WatchFilter},
    },
};
use std::pin::Pin;
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

/// The response stream of `WatchChanges`.
pub(crate) type ChangeStream = Pin<Box<dyn Stream<Item = Result<proto::Change, Status>> + Send>>;

impl SuppressionApi {
    pub(super) async fn watch_changes_impl(
        &self,
        request: Request<proto::WatchChangesRequest>,
    ) -> Result<Response<ChangeStream>, Status> {
        let principal = principal(&request)?;
        let proto::WatchChangesRequest {
            start,
            tenants,
            kinds,
        } = request.into_inner();
        let start = match start {
            None => Start::Head,
            Some(proto::watch_changes_request::Start::AfterSeq(seq)) => Start::After(seq),
            Some(proto::watch_changes_request::Start::FromBeginning(true)) => Start::Beginning,
            Some(proto::watch_changes_request::Start::FromBeginning(false)) => {
                return Err(ServiceError::from(Invalid::new(
                    "from_beginning",
                    "set it to true, or leave start unset to begin at the head",
                ))
                .into());
            }
        };
        let filter = WatchFilter::parse(tenants, kinds).map_err(ServiceError::from)?;
        if filter.tenants().is_empty() && !principal.may_use_every_tenant() {
            return Err(Refusal::PermissionDenied(format!(
                "principal {:?} may use only some tenants: name them in tenants",
                principal.name
            ))
            .into());
        }
        auth::authorize_tenants(&principal, filter.tenants().iter().map(String::as_str))?;
        let changes = self.service.watch_changes(start, filter).await?;
        let stream = ReceiverStream::new(changes).map(|change| match change {
            Ok(entry) => Ok(change_to_proto(entry)),
            Err(e) => Err(Status::from(e)),
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

fn change_to_proto(entry: AuditEntry) -> proto::Change {
    let AuditEntry {
        v: _,
        seq,
        time,
        actor,
        action,
        tenant,
        subject,
        channel,
        topic,
        campaign,
        reason,
        source,
        receipt,
        trace_id,
        expires_at,
        detail,
    } = entry;
    proto::Change {
        seq,
        kind: action,
        recorded_at: Some(timestamp(time)),
        actor,
        subject_hash: subject,
        scope: Some(proto::Scope {
            tenant,
            channel: channel.into(),
            topic,
            campaign,
        }),
        // The log stores the proto's numbers (0 where a change has none).
        reason: reason.into(),
        source: source.into(),
        receipt_id: receipt,
        expires_at: expires_at.map(timestamp),
        detail: detail.unwrap_or_default(),
        trace_id,
    }
}
