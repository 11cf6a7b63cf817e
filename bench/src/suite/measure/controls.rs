//! Checks with a realistic set of controls loaded against the same server with none (SPEC §8, issue
//! 19): some hundreds of halts of other campaigns, mandatory declarations of other topics, and send
//! windows of other tenants and channels, consent requirements of other topics and tenants (so a
//! check asks the index whether its notice needs consent, and it does not), plus one window that
//! applies to every measured check (open all day but one minute, in America/New_York), so each
//! check pays for the scans and for one time zone conversion. Halt triggers too: one on the measured campaign, so every check counts for it
//! (a threshold its checks never reach), and the rest on other campaigns and tenants. The answers
//! are the same with and without them.
//!
//! Runs alternate around the loading, as the tracing rows do: none, loaded, none again, each for
//! throughput (closed loop) and p50 at concurrency 1; the loaded runs are compared with the mean of
//! the two unloaded ones, so that drift on a shared machine lands on both sides.

use super::{Placement, Rig};
use crate::suite::{
    fixtures::{CAMPAIGN, TENANT, TOPIC},
    load::{Ctx, Load, ok_rps, p, us},
    table::Row,
};
use suppressd::proto::{self, Channel, suppression_client::SuppressionClient};
use tonic::transport::Channel as GrpcChannel;

/// How many of each kind a full run loads (a smoke run, a tenth).
const HALTS: usize = 300;
const DECLARATIONS: usize = 100;
const WINDOWS: usize = 200;
const CONSENT_TOPICS: usize = 100;
const TRIGGERS: usize = 200;

/// What was loaded, to take it away again.
struct Loaded {
    halts: Vec<String>,
    declarations: Vec<String>,
    windows: Vec<String>,
    consent: Vec<String>,
    triggers: Vec<String>,
}

async fn load_controls(
    client: &mut SuppressionClient<GrpcChannel>,
    scale: usize,
) -> anyhow::Result<Loaded> {
    let mut loaded = Loaded {
        halts: Vec::new(),
        declarations: Vec::new(),
        windows: Vec::new(),
        consent: Vec::new(),
        triggers: Vec::new(),
    };
    for i in 0..HALTS / scale {
        // Other campaigns of the measured tenant and topic, and other tenants' campaigns.
        let tenant = if i % 2 == 0 {
            TENANT.to_owned()
        } else {
            format!("t{i}")
        };
        let halt = client
            .halt_campaign(proto::HaltCampaignRequest {
                tenant,
                topic: TOPIC.into(),
                campaign: format!("HALTED-{i}"),
                channels: vec![],
                reason: "benchmark".into(),
            })
            .await?
            .into_inner();
        loaded.halts.push(halt.halt_id);
    }
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64
        + 86_400;
    for i in 0..DECLARATIONS / scale {
        let d = client
            .declare_mandatory(proto::DeclareMandatoryRequest {
                tenant: TENANT.into(),
                topic: format!("recall-{i}"),
                channels: vec![Channel::Postal as i32],
                legal_basis: "benchmark".into(),
                approver: "benchmark".into(),
                expires_at: Some(prost_types::Timestamp {
                    seconds: expires,
                    nanos: 0,
                }),
                ignore_send_windows: false,
            })
            .await?
            .into_inner();
        loaded.declarations.push(d.declaration_id);
    }
    for i in 0..WINDOWS / scale {
        // The first applies to every measured check; the others to other tenants or channels.
        let (tenant, channel, start, end) = match i {
            0 => (TENANT.to_owned(), Channel::Email, "00:00", "23:59"),
            _ if i % 2 == 0 => (format!("t{i}"), Channel::Email, "08:00", "21:00"),
            _ => (TENANT.to_owned(), Channel::Sms, "08:00", "21:00"),
        };
        let topic = if i < 2 {
            String::new()
        } else {
            format!("topic-{i}")
        };
        let w = client
            .set_send_window(proto::SetSendWindowRequest {
                tenant,
                channel: channel as i32,
                topic,
                start: start.into(),
                end: end.into(),
                time_zone: "America/New_York".into(),
                reason: "benchmark".into(),
            })
            .await?
            .into_inner();
        loaded.windows.push(w.window_id);
    }
    for i in 0..CONSENT_TOPICS / scale {
        // Other topics of the measured tenant, and the measured topic of other tenants.
        let (tenant, topic) = if i % 2 == 0 {
            (TENANT.to_owned(), format!("consent-topic-{i}"))
        } else {
            (format!("t{i}"), TOPIC.to_owned())
        };
        let r = client
            .require_consent(proto::RequireConsentRequest {
                tenant,
                channel: Channel::Email as i32,
                topic,
                reason: "benchmark".into(),
            })
            .await?
            .into_inner();
        loaded.consent.push(r.requirement_id);
    }
    for i in 0..TRIGGERS / scale {
        // The first watches the measured campaign; the others other campaigns and tenants.
        let (tenant, campaign) = match i {
            0 => (TENANT.to_owned(), CAMPAIGN.to_owned()),
            _ if i % 2 == 0 => (format!("t{i}"), format!("WATCHED-{i}")),
            _ => (TENANT.to_owned(), format!("WATCHED-{i}")),
        };
        let t = client
            .set_halt_trigger(proto::SetHaltTriggerRequest {
                tenant,
                topic: TOPIC.into(),
                campaign,
                window_seconds: 600,
                max_opt_outs: 1_000_000_000,
                max_complaints: 0,
                max_opt_out_rate: 0.0,
                min_checks: 0,
                reason: "benchmark".into(),
            })
            .await?
            .into_inner();
        loaded.triggers.push(t.trigger_id);
    }
    Ok(loaded)
}

async fn unload(client: &mut SuppressionClient<GrpcChannel>, loaded: Loaded) -> anyhow::Result<()> {
    for halt_id in loaded.halts {
        let reason = "benchmark done".into();
        client
            .resume_campaign(proto::ResumeCampaignRequest { halt_id, reason })
            .await?;
    }
    for declaration_id in loaded.declarations {
        let reason = "benchmark done".into();
        client
            .revoke_mandatory(proto::RevokeMandatoryRequest {
                declaration_id,
                reason,
            })
            .await?;
    }
    for window_id in loaded.windows {
        let reason = "benchmark done".into();
        client
            .remove_send_window(proto::RemoveSendWindowRequest { window_id, reason })
            .await?;
    }
    for requirement_id in loaded.consent {
        let reason = "benchmark done".into();
        client
            .drop_consent_requirement(proto::DropConsentRequirementRequest {
                requirement_id,
                reason,
            })
            .await?;
    }
    for trigger_id in loaded.triggers {
        let reason = "benchmark done".into();
        client
            .remove_halt_trigger(proto::RemoveHaltTriggerRequest { trigger_id, reason })
            .await?;
    }
    Ok(())
}

/// Throughput (calls/s) and p50 at concurrency 1 (ns) of the check workload, as it stands.
async fn measure(cx: &mut Ctx, rig: &Rig<'_>, name: &str) -> anyhow::Result<(f64, u64)> {
    let checking = rig.checking;
    let one = Load {
        concurrency: 1,
        ..checking
    };
    let many = cx
        .load(&format!("controls-{name}"), rig.server_addr, checking)
        .await?;
    // Placed as the check rows' c=1 runs are: unpinned, a run lands on one core or two.
    let _pinned = rig.place(Placement::Apart)?;
    let single = cx
        .load(&format!("controls-{name}-c1"), rig.server_addr, one)
        .await?;
    Ok((ok_rps(&many), p(&single, 50)))
}

pub(super) async fn controls_rows(cx: &mut Ctx, rig: &Rig<'_>, smoke: bool) -> anyhow::Result<()> {
    eprintln!("CheckSuppressed with controls loaded vs none…");
    let scale = if smoke { 10 } else { 1 };
    let channel = GrpcChannel::from_shared(format!("http://{}", rig.server_addr))?
        .connect()
        .await?;
    let mut client = SuppressionClient::new(channel);
    let none1 = measure(cx, rig, "none").await?;
    let loaded = load_controls(&mut client, scale).await?;
    let counts = (
        loaded.halts.len(),
        loaded.declarations.len(),
        loaded.windows.len(),
        loaded.consent.len(),
        loaded.triggers.len(),
    );
    let with = measure(cx, rig, "loaded").await?;
    unload(&mut client, loaded).await?;
    let none2 = measure(cx, rig, "none-2").await?;
    let none_rps = (none1.0 + none2.0) / 2.0;
    let none_p50 = (none1.1 + none2.1) / 2;
    let (h, d, w, c, t) = counts;
    let what = format!(
        "{h} halts, {d} mandatory declarations, {w} send windows, {c} consent topics, \
         {t} halt triggers"
    );
    let ratio = with.0 / none_rps.max(1.0);
    cx.report.rows.push(Row::new(
        "controls_check_throughput_ratio",
        &format!("CheckSuppressed throughput with controls loaded vs none ({what})"),
        ratio,
        format!("{ratio:.2} ({:.0}/s)", with.0),
        format!(
            "none: {none_rps:.0}/s (mean of {:.0}/s before and {:.0}/s after)",
            none1.0, none2.0
        ),
    ));
    let p50_ratio = with.1 as f64 / none_p50.max(1) as f64;
    cx.report.rows.push(Row::new(
        "controls_check_p50_ratio",
        "CheckSuppressed p50 at c=1 with controls loaded vs none",
        p50_ratio,
        format!("{p50_ratio:.2}× ({})", us(with.1)),
        format!(
            "none: {} (mean of {} before and {} after)",
            us(none_p50),
            us(none1.1),
            us(none2.1)
        ),
    ));
    Ok(())
}
