//! Limits: a burst of checks beyond the in-flight budget is shed with RESOURCE_EXHAUSTED while
//! opt-outs (their own budget) and health keep answering; a principal over its rate limit is
//! refused without slowing anyone else.

use crate::helpers::*;
use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};
use suppressd::{
    domain::Clock,
    proto::{self, Channel},
};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

fn batch(n: usize) -> proto::CheckSuppressedBatchRequest {
    proto::CheckSuppressedBatchRequest {
        checks: (0..n)
            .map(|i| proto::CheckSuppressedRequest {
                recipient: Some(email(&format!("load-{i}@example.com"))),
                scope: Some(scope("", Channel::Email, "news", "")),
                ..Default::default()
            })
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_checks_is_shed_while_opt_outs_and_health_carry_on() {
    let app = spawn_app_with(Backend::Sqlite, Clock::System, |s| {
        s.limits.max_concurrent_checks = 4;
        s.limits.max_concurrent_writes = 2;
    })
    .await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let burst_over = Arc::new(AtomicBool::new(false));

    // Health, polled all through the burst.
    let health = {
        let (mut health, over) = (HealthClient::new(channel.clone()), burst_over.clone());
        tokio::spawn(async move {
            let mut answers = Vec::new();
            while !over.load(Ordering::SeqCst) {
                let status = health
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .map(|r| r.into_inner().status)
                    .map_err(|s| s.code());
                answers.push(status);
            }
            answers
        })
    };
    // Opt-outs within their own budget (two at a time), all through the burst.
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (mut client, over) = (
                client_with(channel.clone(), Some(WRITE_KEY)),
                burst_over.clone(),
            );
            tokio::spawn(async move {
                let mut codes = Vec::new();
                let mut i = 0;
                while !over.load(Ordering::SeqCst) || i < 3 {
                    let req = opt_out_request(
                        email(&format!("w{w}-{i}@example.com")),
                        scope("", Channel::Email, "", ""),
                    );
                    codes.push(client.opt_out(req).await.map(|_| ()).map_err(|s| s.code()));
                    i += 1;
                }
                codes
            })
        })
        .collect();

    // The burst: 64 batches of 1,000 checks at once against a budget of 4.
    let burst: Vec<_> = (0..64)
        .map(|_| {
            let mut client = client_with(channel.clone(), Some(CHECK_KEY));
            tokio::spawn(async move {
                match client.check_suppressed_batch(batch(1_000)).await {
                    Ok(_) => Code::Ok,
                    Err(status) => status.code(),
                }
            })
        })
        .collect();
    let mut codes = Vec::new();
    for call in burst {
        codes.push(call.await.unwrap());
    }
    burst_over.store(true, Ordering::SeqCst);

    let shed = codes
        .iter()
        .filter(|c| **c == Code::ResourceExhausted)
        .count();
    let answered = codes.iter().filter(|c| **c == Code::Ok).count();
    assert!(shed > 0, "a burst beyond the budget is shed: {codes:?}");
    assert!(answered >= 4, "the budget's worth is answered: {codes:?}");
    assert_eq!(
        shed + answered,
        codes.len(),
        "nothing but OK or RESOURCE_EXHAUSTED: {codes:?}"
    );

    let health = health.await.unwrap();
    assert!(!health.is_empty());
    assert!(
        health
            .iter()
            .all(|s| *s == Ok(ServingStatus::Serving as i32)),
        "health stays SERVING under overload: {health:?}"
    );
    let mut opt_outs = 0;
    for writer in writers {
        for code in writer.await.unwrap() {
            assert_eq!(code, Ok(()), "no opt-out is shed by a flood of checks");
            opt_outs += 1;
        }
    }
    assert_eq!(app.rows(None).await, opt_outs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_over_its_rate_limit_is_refused_and_others_are_not() {
    let app = spawn_app_with(Backend::Sqlite, Clock::System, |s| {
        s.limits.rate_limit_per_principal = 2;
    })
    .await;
    let mut checker = app.client_with_key(Some(CHECK_KEY)).await;
    let mut codes = Vec::new();
    for _ in 0..20 {
        let code = match checker.check_suppressed_batch(batch(1)).await {
            Ok(_) => Code::Ok,
            Err(status) => {
                if status.code() == Code::ResourceExhausted {
                    assert!(status.message().contains("checker"), "{}", status.message());
                }
                status.code()
            }
        };
        codes.push(code);
    }
    let limited = codes
        .iter()
        .filter(|c| **c == Code::ResourceExhausted)
        .count();
    // A burst of 2, then 2 a second: even a slow machine answers at most a handful of 20 calls.
    assert!(limited >= 10, "20 quick calls against 2/s: {codes:?}");
    assert_eq!(codes[0], Code::Ok);

    // Another principal has its own bucket.
    let mut admin = app.client_with_key(Some(ADMIN_KEY)).await;
    admin
        .check_suppressed_batch(batch(1))
        .await
        .expect("another principal is not limited by the checker's calls");
}

/// Anonymous audit reads have a rate bucket of their own: a flood of them leaves a person's token
/// opt-out its bucket (it shared one with them, so the opt-out was RESOURCE_EXHAUSTED).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_anonymous_audit_reads_never_starves_a_persons_opt_out() {
    let mut app = spawn_app_with(Backend::Sqlite, Clock::System, |s| {
        s.limits.rate_limit_per_principal = 2;
    })
    .await;
    let token = crate::tokens::issue(
        &mut app.client,
        "flooded@example.com",
        scope("acme", proto::Channel::Email, "news", ""),
        3600,
    )
    .await;
    let mut anonymous = app.client_with_key(None).await;
    let mut limited = 0;
    for _ in 0..20 {
        match anonymous
            .get_consistency_proof(proto::GetConsistencyProofRequest {
                old_size: 0,
                new_size: 0,
            })
            .await
        {
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(status.message().contains("audit"), "{}", status.message());
                limited += 1;
            }
            _ => {}
        }
    }
    assert!(
        limited >= 10,
        "20 quick reads against 2/s: {limited} limited"
    );
    anonymous
        .opt_out(crate::tokens::by_token(&token))
        .await
        .expect("the person's opt-out is not starved by the reads");
}
