//! Start, restart, health, reflection, and a cache that lost what it held.

use crate::helpers::*;
use suppressd::proto::{self, Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

async fn durable_opt_outs_survive_a_restart_with_redis_flushed(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let people: Vec<_> = (0..20)
        .map(|i| email(&format!("r{i}@example.com")))
        .collect();
    for p in &people {
        app.opt_out(opt_out_request(
            p.clone(),
            scope("acme", Channel::Unspecified, "", ""),
        ))
        .await;
    }
    app.stop().await;
    app.flush_redis();
    app.start().await;
    let notice = scope("acme", Channel::Postal, "recall", "RC-9");
    // Answered at once (from the store while the cache rebuilds) …
    for p in &people {
        assert!(app.is_suppressed(p.clone(), notice.clone()).await);
    }
    assert!(
        !app.is_suppressed(email("new@example.com"), notice.clone())
            .await
    );
    // … and from the rebuilt cache afterwards.
    app.wait_cache_complete().await;
    let cache = app.cache().await;
    let store_rows = app.rows(None).await;
    assert_eq!(store_rows, 20);
    for p in &people {
        assert!(app.is_suppressed(p.clone(), notice.clone()).await);
    }
    assert!(cache.is_complete().await.unwrap());
}

async fn a_flush_while_running_falls_back_to_the_store_then_rebuilds(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let kim = email("kim@example.com");
    let notice = scope("", Channel::Sms, "news", "");
    app.opt_out(opt_out_request(
        kim.clone(),
        scope("", Channel::Sms, "", ""),
    ))
    .await;
    app.wait_cache_complete().await;
    app.flush_redis();
    assert!(
        app.is_suppressed(kim.clone(), notice.clone()).await,
        "from the store"
    );
    assert!(
        !app.is_suppressed(email("lee@example.com"), notice.clone())
            .await
    );
    app.wait_cache_complete().await;
    assert!(
        app.is_suppressed(kim, notice).await,
        "from the rebuilt cache"
    );
}

async fn health_and_reflection_are_served(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut health = HealthClient::new(app.channel().await);
    for service in ["", "suppress.v1.Suppression"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }

    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut reflection = ServerReflectionClient::new(app.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reflection reply");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"suppress.v1.Suppression".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );

    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest as AlphaRequest,
        server_reflection_client::ServerReflectionClient as AlphaClient,
        server_reflection_request::MessageRequest as AlphaMessage,
    };
    let mut alpha = AlphaClient::new(app.channel().await);
    let request = AlphaRequest {
        host: String::new(),
        message_request: Some(AlphaMessage::FileContainingSymbol(
            "suppress.v1.Suppression".into(),
        )),
    };
    let mut replies = alpha
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    assert!(
        replies
            .message()
            .await
            .unwrap()
            .unwrap()
            .message_response
            .is_some()
    );
    let _ = proto::FILE_DESCRIPTOR_SET;
}

on_both_stores!(
    durable_opt_outs_survive_a_restart_with_redis_flushed,
    a_flush_while_running_falls_back_to_the_store_then_rebuilds,
    health_and_reflection_are_served,
);

/// `Health/Watch` sends a status when it changes, not on every poll of the dependencies (which
/// runs every half second): a healthy server says SERVING once, then nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_watch_sends_changes_only() {
    let app = spawn_app(Backend::Sqlite).await;
    let channel = app.channel().await;
    let mut watch = HealthClient::new(channel)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let repeated = tokio::time::timeout(std::time::Duration::from_secs(2), watch.message()).await;
    assert!(
        repeated.is_err(),
        "a repeated status without a change: {repeated:?}"
    );
}
