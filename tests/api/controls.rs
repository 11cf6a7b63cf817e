//! Issue 5, parts 1 and 4: campaign halts and mandatory declarations, through the generated client
//! against the real server (and, in [`load`], two real replica processes under check load).

mod consent;
mod load;
mod mandatory;
mod stale;
mod trigger_changes;
mod triggers;
mod validation;
mod windows;

use crate::{
    helpers::*,
    processes::{PrivatePostgres, PrivateRedis},
};
use suppressd::{
    audit::AuditLog,
    domain::Clock,
    proto::{self, Channel},
    service::audit::verify_log,
};
use tokio::sync::oneshot;
use tonic::Code;

const HOUR: i64 = 3_600_000;

/// Replica B: another server in this process, on A's store and Redis prefix, named `name`.
pub(crate) async fn replica_b(
    a: &TestApp,
    name: &str,
) -> (Client, tonic::transport::Channel, oneshot::Sender<()>) {
    let mut settings = a.settings.clone();
    settings.replica_name = Some(name.to_owned());
    let built = suppressd::startup::Application::build(&settings, a.clock.clone())
        .await
        .expect("replica B builds");
    let addr = built.local_addr();
    let (stop, stopped) = oneshot::channel();
    tokio::spawn(built.run_until(async {
        let _ = stopped.await;
    }));
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    (connect(addr).await, channel, stop)
}

pub fn halt_request(
    tenant: &str,
    topic: &str,
    campaign: &str,
    reason: &str,
) -> proto::HaltCampaignRequest {
    proto::HaltCampaignRequest {
        tenant: tenant.into(),
        topic: topic.into(),
        campaign: campaign.into(),
        channels: vec![],
        reason: reason.into(),
    }
}

pub fn declaration(
    topic: &str,
    channels: &[Channel],
    expires_at: i64,
) -> proto::DeclareMandatoryRequest {
    proto::DeclareMandatoryRequest {
        tenant: "acme".into(),
        topic: topic.into(),
        channels: channels.iter().map(|c| *c as i32).collect(),
        legal_basis: "49 U.S.C. 30118 safety recall".into(),
        approver: "general counsel".into(),
        expires_at: Some(prost_types::Timestamp {
            seconds: expires_at / 1000,
            nanos: 0,
        }),
        ignore_send_windows: false,
    }
}

fn resume_request(halt_id: &str, reason: &str) -> proto::ResumeCampaignRequest {
    proto::ResumeCampaignRequest {
        halt_id: halt_id.into(),
        reason: reason.into(),
    }
}

fn revoke_request(id: &str, reason: &str) -> proto::RevokeMandatoryRequest {
    proto::RevokeMandatoryRequest {
        declaration_id: id.into(),
        reason: reason.into(),
    }
}

/// Asserts the answer is a suppression by the halt `id`, with the halt as its record.
/// Every control of `tenant`, ended ones included.
pub async fn all_controls(client: &mut Client, tenant: &str) -> proto::ListControlsResponse {
    client
        .list_controls(proto::ListControlsRequest {
            tenant: tenant.into(),
            include_ended: true,
        })
        .await
        .unwrap()
        .into_inner()
}

pub fn assert_halted(answer: &proto::CheckSuppressedResponse, id: &str) {
    assert!(answer.suppressed, "{answer:?}");
    assert_eq!(answer.halt.as_ref().map(|h| h.halt_id.as_str()), Some(id));
    let matched = answer
        .matched
        .as_ref()
        .expect("the halt is the matched record");
    assert_eq!(matched.receipt_id, id);
    assert_eq!(matched.reason, proto::Reason::Operator as i32);
    assert_eq!(matched.source, proto::Source::Api as i32);
}

async fn a_halt_survives_restarts_and_redis_loss(backend: Backend) {
    let mut redis = PrivateRedis::start().await;
    let url = redis.url();
    let mut app = spawn_app_with(backend, Clock::System, |s| s.redis.redis_url = url).await;
    let notice = scope("acme", Channel::Sms, "recall", "RC-7");
    let halt = app
        .client
        .halt_campaign(halt_request("acme", "", "RC-7", "wrong recipients list"))
        .await
        .unwrap()
        .into_inner();
    assert!(halt.channels.is_empty(), "every channel");
    assert_halted(
        &app.check(email("p@example.com"), notice.clone()).await,
        &halt.halt_id,
    );

    app.restart().await;
    assert_halted(
        &app.check(email("p@example.com"), notice.clone()).await,
        &halt.halt_id,
    );

    // Redis gone: checks answer from the store, and the halt still holds.
    redis.kill();
    assert_halted(
        &app.check(email("p@example.com"), notice.clone()).await,
        &halt.halt_id,
    );
    // A halt made while Redis is away holds too.
    let second = app
        .client
        .halt_campaign(halt_request("acme", "recall", "RC-9", "duplicate send"))
        .await
        .unwrap()
        .into_inner();
    let rc9 = scope("acme", Channel::Email, "recall", "RC-9");
    assert_halted(
        &app.check(email("p@example.com"), rc9.clone()).await,
        &second.halt_id,
    );
    // Back empty, and the replica restarted meanwhile: still halted.
    redis.restart().await;
    app.restart().await;
    assert_halted(
        &app.check(email("p@example.com"), notice.clone()).await,
        &halt.halt_id,
    );
    assert_halted(
        &app.check(email("p@example.com"), rc9).await,
        &second.halt_id,
    );
    // Other campaigns and tenants are untouched.
    let other = app
        .check(
            email("p@example.com"),
            scope("acme", Channel::Sms, "recall", "RC-8"),
        )
        .await;
    assert!(!other.suppressed && other.halt.is_none());
    let tenant = app
        .check(
            email("p@example.com"),
            scope("beta", Channel::Sms, "recall", "RC-7"),
        )
        .await;
    assert!(!tenant.suppressed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halt_holds_while_the_store_is_unreachable() {
    let pg = PrivatePostgres::start().await;
    let url = pg.url();
    let mut app = spawn_app_with(Backend::Postgres, Clock::System, |s| s.store_url = url).await;
    app.wait_cache_complete().await;
    let halt = app
        .client
        .halt_campaign(halt_request("acme", "recall", "", "wrong letter"))
        .await
        .unwrap()
        .into_inner();
    pg.stop_immediate();
    // Across many polls of the unreachable store, every answer still names the halt.
    let notice = scope("acme", Channel::Postal, "recall", "");
    for _ in 0..12 {
        assert_halted(
            &app.check(email("q@example.com"), notice.clone()).await,
            &halt.halt_id,
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let status = app
        .client
        .resume_campaign(resume_request(&halt.halt_id, "fixed"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    pg.start_again().await;
    app.client
        .resume_campaign(resume_request(&halt.halt_id, "fixed"))
        .await
        .unwrap();
    assert!(!app.is_suppressed(email("q@example.com"), notice).await);
}

async fn each_change_is_one_verifiable_audit_entry(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let halt = app
        .client
        .halt_campaign(halt_request("acme", "recall", "RC-1", "wrong list"))
        .await
        .unwrap()
        .into_inner();
    app.client
        .resume_campaign(resume_request(&halt.halt_id, "list fixed"))
        .await
        .unwrap();
    let future = suppressd::domain::clock::system_now() + HOUR;
    let d = app
        .client
        .declare_mandatory(declaration("recall", &[Channel::Postal], future))
        .await
        .unwrap()
        .into_inner();
    app.client
        .revoke_mandatory(revoke_request(&d.declaration_id, "closed"))
        .await
        .unwrap();

    let store = app.store().await;
    let rows = store.audit_rows(-1, 100).await.unwrap();
    let got: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.action.as_str(), r.receipt_id.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("halt", halt.halt_id.as_str()),
            ("resume", halt.halt_id.as_str()),
            ("declare_mandatory", d.declaration_id.as_str()),
            ("revoke_mandatory", d.declaration_id.as_str()),
        ]
    );
    assert!(
        rows.iter()
            .all(|r| r.subject.is_empty() && r.actor == "admin")
    );
    assert!(rows[0].detail.as_deref().unwrap().contains("wrong list"));
    assert!(
        rows[2]
            .detail
            .as_deref()
            .unwrap()
            .contains("general counsel")
    );
    let report = verify_log(&store, AuditLog::development().verifier(), None)
        .await
        .unwrap();
    assert_eq!((report.entries, report.problem), (4, None));
}

on_both_stores!(
    a_halt_survives_restarts_and_redis_loss,
    each_change_is_one_verifiable_audit_entry,
);

pub async fn suppressd(args: &[&str]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_suppressd"))
        .args(args)
        .env("SUPPRESSD_API_KEY", ADMIN_KEY)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "suppressd {args:?}: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_halts_resumes_and_lists() {
    let mut app = spawn_app(Backend::Sqlite).await;
    let server = app.addr.to_string();
    let notice = || scope("acme", Channel::Email, "recall", "RC-3");
    let out = suppressd(&[
        "halt",
        "--server",
        &server,
        "--tenant",
        "acme",
        "--campaign",
        "RC-3",
        "--channel",
        "email",
        "--reason",
        "bad batch",
        "--json",
    ])
    .await;
    let halt: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = halt["halt_id"].as_str().unwrap().to_owned();
    assert_eq!(halt["channels"], serde_json::json!(["email"]));
    assert_halted(&app.check(email("c@example.com"), notice()).await, &id);

    let out = suppressd(&["resume", &id, "--server", &server, "--reason", "fixed"]).await;
    assert!(out.contains("resume_reason: fixed"), "{out}");
    assert!(!app.is_suppressed(email("c@example.com"), notice()).await);

    let out = suppressd(&[
        "controls", "list", "--server", &server, "--tenant", "acme", "--all",
    ])
    .await;
    assert!(
        out.contains(&id) && out.contains("resumed_by: admin"),
        "{out}"
    );
    let out = suppressd(&["controls", "list", "--server", &server, "--tenant", "acme"]).await;
    assert_eq!(out, "no controls\n");
}
