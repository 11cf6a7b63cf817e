//! The Rust client crate (`suppressd-client`) against the real server: TLS + mTLS + an API key,
//! the fail-closed decision, batches beyond the server's 1,000, idempotent opt-outs, the
//! `google.rpc` details of failures (decoded with tonic-types), and an outage of Redis and the store
//! during which the client never says "send".

use crate::{helpers::*, processes::*, tls::Pki};
use std::time::Duration;
use suppressd_client::{
    Client, ClientConfig, ClientError, Deadlines, Decision, DoNotSend, StatusExt,
    proto::{self as cp, recipient::Id},
    retry::RetryPolicy,
};
use tonic::Code;

fn who(address: &str) -> cp::Recipient {
    cp::Recipient {
        id: Some(Id::Email(address.into())),
    }
}

fn news_email(address: &str) -> cp::CheckSuppressedRequest {
    cp::CheckSuppressedRequest {
        recipient: Some(who(address)),
        scope: Some(cp::Scope {
            channel: cp::Channel::Email as i32,
            topic: "news".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn leave_everything(address: &str) -> cp::OptOutRequest {
    cp::OptOutRequest {
        recipient: Some(who(address)),
        scope: Some(cp::Scope::default()),
        reason: cp::Reason::UserRequest as i32,
        source: cp::Source::Api as i32,
        ..Default::default()
    }
}

async fn plain_client(app: &TestApp, key: Option<&str>) -> Client {
    let mut config = ClientConfig::new(app.addr.to_string());
    if let Some(key) = key {
        config = config.api_key(key);
    }
    Client::connect(config).await.expect("connects")
}

/// The `ErrorInfo.reason` of a failed call, checking its domain.
fn reason_of(error: &ClientError) -> String {
    let details = error.details();
    let info = details
        .error_info()
        .expect("every failure carries ErrorInfo");
    assert_eq!(info.domain, "suppressd.dev");
    info.reason.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_decides_opts_out_and_reads_receipts_over_mtls_with_a_key() {
    let pki = Pki::new();
    let app = pki.app(true).await;
    let (cert, key) = pki.ca.issue("mailer.internal", &[], true);
    let config = ClientConfig::new(format!("https://127.0.0.1:{}", app.addr.port()))
        .ca_pem(pki.ca.cert_pem.clone())
        .identity_pem(cert, key)
        .domain_name("localhost")
        .api_key(ADMIN_KEY);
    assert!(
        !format!("{config:?}").contains(ADMIN_KEY),
        "Debug redacts the key"
    );
    let client = Client::connect(config).await.expect("mTLS connects");

    assert!(
        client
            .decide(news_email("jane@example.com"))
            .await
            .may_send()
    );
    let receipt = client
        .opt_out(leave_everything("jane@example.com"))
        .await
        .unwrap();
    assert_eq!(receipt.state, cp::ReceiptState::Durable as i32);
    match client.decide(news_email("Jane@Example.com")).await {
        Decision::DoNotSend(DoNotSend::Suppressed(answer)) => {
            assert_eq!(answer.matched.unwrap().receipt_id, receipt.receipt_id)
        }
        other => panic!("expected suppressed, got {other}"),
    }
    let fetched = client.get_receipt(&receipt.receipt_id).await.unwrap();
    assert_eq!(fetched.receipt_id, receipt.receipt_id);

    // This server's key file has no issuing token key: a precondition, with its reason code.
    let refused = client
        .issue_opt_out_token(cp::IssueOptOutTokenRequest {
            recipient: Some(who("jane@example.com")),
            scope: Some(cp::Scope::default()),
            ttl: None,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason_of(&refused), "NOT_CONFIGURED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_beyond_a_thousand_are_split_and_answered_in_order() {
    let app = spawn_app(Backend::Sqlite).await;
    let client = plain_client(&app, Some(ADMIN_KEY)).await;
    for i in [0, 999, 1000, 2499] {
        client
            .opt_out(leave_everything(&format!("p{i}@example.com")))
            .await
            .unwrap();
    }
    let checks: Vec<_> = (0..2500)
        .map(|i| news_email(&format!("p{i}@example.com")))
        .collect();
    let answers = client.check_batch(checks.clone()).await.unwrap();
    assert_eq!(answers.len(), 2500);
    let suppressed: Vec<usize> = (0..2500).filter(|&i| answers[i].suppressed).collect();
    assert_eq!(suppressed, [0, 999, 1000, 2499]);
    let decisions = client.decide_batch(checks).await;
    assert_eq!(decisions.iter().filter(|d| d.may_send()).count(), 2496);
    assert!(!decisions[1000].may_send());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opt_outs_with_the_same_idempotency_key_return_the_first_receipt() {
    let app = spawn_app(Backend::Sqlite).await;
    let client = plain_client(&app, Some(WRITE_KEY)).await;
    let mut request = leave_everything("once@example.com");
    request.idempotency_key = "unsub-7f3a".into();
    let first = client.opt_out(request.clone()).await.unwrap();
    let again = client.opt_out(request).await.unwrap();
    assert_eq!(first.receipt_id, again.receipt_id);
    // Without a key the client makes one per call: two calls, two receipts, each safe to retry.
    let a = client.opt_out(leave_everything("twice@example.com")).await;
    let b = client.opt_out(leave_everything("twice@example.com")).await;
    assert_ne!(a.unwrap().receipt_id, b.unwrap().receipt_id);
    let token = client
        .issue_opt_out_token(cp::IssueOptOutTokenRequest {
            recipient: Some(who("once@example.com")),
            scope: Some(cp::Scope::default()),
            ttl: None,
        })
        .await;
    assert_eq!(token.map(|t| t.token.is_empty()).ok(), Some(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_carry_reason_codes_field_violations_and_no_send() {
    let app = spawn_app(Backend::Sqlite).await;
    let checker = plain_client(&app, Some(CHECK_KEY)).await;

    // INVALID_ARGUMENT: the field path in BadRequest, the message as it always was.
    let mut bad = news_email("x");
    bad.recipient = Some(cp::Recipient {
        id: Some(Id::Phone("12".into())),
    });
    let error = checker.check(bad.clone()).await.unwrap_err();
    let ClientError::Status(status) = &error else {
        panic!("{error}")
    };
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("recipient.phone: "),
        "{status:?}"
    );
    let violations = status.get_details_bad_request().unwrap().field_violations;
    assert_eq!(violations[0].field, "recipient.phone");
    assert_eq!(reason_of(&error), "INVALID_FIELD");
    assert!(!checker.decide(bad).await.may_send());

    // UNAUTHENTICATED, PERMISSION_DENIED, NOT_FOUND.
    let anonymous = plain_client(&app, None).await;
    let error = anonymous
        .check(news_email("a@example.com"))
        .await
        .unwrap_err();
    assert_eq!(
        (error.code(), reason_of(&error).as_str()),
        (Code::Unauthenticated, "UNAUTHENTICATED")
    );
    assert!(
        !anonymous
            .decide(news_email("a@example.com"))
            .await
            .may_send()
    );
    let error = checker
        .opt_out(leave_everything("a@example.com"))
        .await
        .unwrap_err();
    assert_eq!(
        (error.code(), reason_of(&error).as_str()),
        (Code::PermissionDenied, "PERMISSION_DENIED")
    );
    let writer = plain_client(&app, Some(WRITE_KEY)).await;
    let error = writer
        .get_receipt(&uuid::Uuid::now_v7().to_string())
        .await
        .unwrap_err();
    assert_eq!(
        (error.code(), reason_of(&error).as_str()),
        (Code::NotFound, "NOT_FOUND")
    );
    assert!(error.retry_after().is_none(), "nothing to retry");
}

/// Statuses the gRPC library raises rather than suppressd (an unknown method, a request over the
/// size cap) carry `ErrorInfo` too, chosen by their code, with their message unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_the_grpc_library_raises_carry_details_too() {
    let app = spawn_app(Backend::Sqlite).await;

    // UNIMPLEMENTED: a service this server does not have.
    let mut grpc = tonic::client::Grpc::new(app.channel().await);
    grpc.ready().await.unwrap();
    let status = grpc
        .unary::<cp::CheckSuppressedRequest, cp::CheckSuppressedResponse, _>(
            tonic::Request::new(news_email("a@example.com")),
            http::uri::PathAndQuery::from_static("/suppress.v1.NoSuchService/Check"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(
        (info.reason.as_str(), info.domain.as_str()),
        ("UNIMPLEMENTED", "suppressd.dev")
    );

    // OUT_OF_RANGE: a request over the server's 4 MiB cap, refused before any handler sees it.
    let checker = plain_client(&app, Some(CHECK_KEY)).await;
    let mut huge = news_email("a@example.com");
    huge.scope.as_mut().unwrap().topic = "x".repeat(5 * 1024 * 1024);
    let error = checker.check(huge.clone()).await.unwrap_err();
    assert_eq!(error.code(), Code::OutOfRange, "{error}");
    assert_eq!(reason_of(&error), "MESSAGE_TOO_LARGE");
    assert!(!checker.decide(huge).await.may_send());
}

/// Redis killed and PostgreSQL stopped under a replica: no decision of the client is "send", for a
/// person who opted out or not; the replica's answer, once it has found out, is UNAVAILABLE with its
/// reason code and RetryInfo, and from then on it comes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_and_the_store_down_the_client_never_says_send() {
    let pg = PrivatePostgres::start().await;
    let mut redis = PrivateRedis::start().await;
    let prefix = format!("t{}:", uuid::Uuid::new_v4().simple());
    let replica = Replica::start(&ReplicaConfig::new(&pg.url(), &redis.url(), &prefix)).await;
    let config = ClientConfig::new(replica.addr.to_string())
        .api_key(ADMIN_KEY)
        .retry(RetryPolicy {
            max_attempts: 2,
            ..RetryPolicy::default()
        });
    let client = Client::connect(config).await.unwrap();
    let opted: Vec<String> = (0..5).map(|i| format!("gone{i}@example.com")).collect();
    for person in &opted {
        client.opt_out(leave_everything(person)).await.unwrap();
    }

    redis.kill();
    pg.stop_immediate();
    // With the default 2 s deadline the client gives up before the replica has found out (it
    // waits on Redis and then on the store's pool): "do not send", as a timeout.
    for person in opted
        .iter()
        .map(String::as_str)
        .chain(["never-opted@example.com"])
    {
        let decision = client.decide(news_email(person)).await;
        assert!(
            !decision.may_send(),
            "a false send for {person}: {decision}"
        );
    }
    // A patient client sees the replica's own answer: UNAVAILABLE, with its details.
    let patient = Client::connect(
        ClientConfig::new(replica.addr.to_string())
            .api_key(ADMIN_KEY)
            .retry(RetryPolicy::none())
            .deadlines(Deadlines {
                check: Duration::from_secs(15),
                ..Deadlines::default()
            }),
    )
    .await
    .unwrap();
    let mut unavailable = None;
    for person in opted
        .iter()
        .map(String::as_str)
        .chain(["never-opted@example.com"])
    {
        match patient.decide(news_email(person)).await {
            Decision::DoNotSend(DoNotSend::NoAnswer(error))
                if error.code() == Code::Unavailable =>
            {
                unavailable = Some(error)
            }
            decision => assert!(
                !decision.may_send(),
                "a false send for {person}: {decision}"
            ),
        }
    }
    let error = unavailable.expect("the replica answers UNAVAILABLE when it cannot know");
    assert_eq!(reason_of(&error), "UNAVAILABLE");
    assert!(error.retry_after().is_some(), "RetryInfo on UNAVAILABLE");
    // Now that it knows, it fails fast: within the default deadline, every check gets the
    // replica's own UNAVAILABLE rather than the client's timeout (while the store keeps failing, a
    // check's read of it gets 250 ms, not the pool's acquire timeout).
    for person in opted
        .iter()
        .map(String::as_str)
        .chain(["never-opted@example.com"])
    {
        let error = client.check(news_email(person)).await.unwrap_err();
        assert_eq!(
            (error.code(), reason_of(&error).as_str()),
            (Code::Unavailable, "UNAVAILABLE"),
            "{person}: {error}"
        );
    }
    // A write fails closed too: an error, never a receipt.
    assert!(
        client
            .opt_out(leave_everything("late@example.com"))
            .await
            .is_err()
    );
}

/// Over a rate limit of 2 a second, the server's RetryInfo (1 s) is what the client waits: every
/// check of a retrying client gets through, while a client that never retries sees RATE_LIMITED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_calls_are_retried_after_the_servers_retry_info() {
    let app = spawn_app_with(Backend::Sqlite, suppressd::domain::Clock::System, |s| {
        s.limits.rate_limit_per_principal = 2;
    })
    .await;
    let config = ClientConfig::new(app.addr.to_string()).api_key(CHECK_KEY);
    let impatient = Client::connect(config.clone().retry(RetryPolicy::none()))
        .await
        .unwrap();
    let mut refused = None;
    for _ in 0..10 {
        if let Err(error) = impatient.check(news_email("r@example.com")).await {
            refused = Some(error);
            break;
        }
    }
    let error = refused.expect("10 quick calls against 2/s");
    assert_eq!(error.code(), Code::ResourceExhausted);
    assert_eq!(reason_of(&error), "RATE_LIMITED");
    assert_eq!(error.retry_after(), Some(Duration::from_secs(1)));

    let patient = Client::connect(config.deadlines(Deadlines {
        check: Duration::from_secs(5),
        ..Deadlines::default()
    }))
    .await
    .unwrap();
    for i in 0..6 {
        let decision = patient.decide(news_email("r@example.com")).await;
        assert!(decision.may_send(), "check {i}: {decision}");
    }
}
