//! Liveness is not readiness: `liveness` says the process answers, whatever Redis and the store do;
//! readiness ("", `readiness`, `suppress.v1.Suppression`) follows them. And `suppressd health`, the
//! container HEALTHCHECK, turns the answer into its exit code.

use crate::{
    helpers::*,
    processes::{PrivatePostgres, PrivateRedis, Replica, ReplicaConfig, free_port},
};
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};
use suppressd::startup::health::{LIVENESS, READINESS};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

async fn status(channel: Channel, service: &str) -> Option<ServingStatus> {
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(reply.into_inner().status).ok()
}

/// Runs `suppressd health --server ADDR ARGS…`: its exit code, standard output and standard error.
pub async fn health_command(addr: SocketAddr, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_suppressd"))
        .args(["health", "--server", &addr.to_string()])
        .args(args)
        .env_remove("SUPPRESSD_SERVER")
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_stays_serving_while_redis_and_the_store_are_gone() {
    let pg = PrivatePostgres::start().await;
    let mut redis = PrivateRedis::start().await;
    let prefix = format!("t{}:", uuid::Uuid::new_v4().simple());
    let replica = Replica::start(&ReplicaConfig::new(&pg.url(), &redis.url(), &prefix)).await;
    let channel = replica.channel().await;
    for service in [LIVENESS, READINESS, "", "suppress.v1.Suppression"] {
        assert_eq!(
            status(channel.clone(), service).await,
            Some(ServingStatus::Serving),
            "{service:?} at start"
        );
    }

    redis.kill();
    pg.stop_immediate();
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(channel.clone(), "").await != Some(ServingStatus::NotServing) {
        assert!(
            Instant::now() < deadline,
            "readiness never turned NOT_SERVING"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    for service in [READINESS, "suppress.v1.Suppression"] {
        assert_eq!(
            status(channel.clone(), service).await,
            Some(ServingStatus::NotServing),
            "{service:?} without Redis and the store"
        );
    }
    assert_eq!(
        status(channel.clone(), LIVENESS).await,
        Some(ServingStatus::Serving),
        "liveness does not follow the dependencies"
    );
    let (code, _, stderr) = health_command(replica.addr, &[]).await;
    assert_eq!(code, 1, "readiness NOT_SERVING exits 1: {stderr}");
    assert!(stderr.contains("NOT_SERVING"), "{stderr}");
    let (code, stdout, stderr) = health_command(replica.addr, &["--service", LIVENESS]).await;
    assert_eq!(code, 0, "liveness SERVING exits 0: {stderr}");
    assert!(stdout.starts_with("SERVING"), "{stdout}");

    redis.restart().await;
    pg.start_again().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while health_command(replica.addr, &[]).await.0 != 0 {
        assert!(Instant::now() < deadline, "readiness never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_command_exits_zero_only_when_serving() {
    let app = spawn_app(Backend::Sqlite).await;
    for service in [&[][..], &["--service", LIVENESS], &["--service", READINESS]] {
        let (code, stdout, stderr) = health_command(app.addr, service).await;
        assert_eq!(code, 0, "{service:?}: {stderr}");
        assert!(stdout.starts_with("SERVING"), "{stdout}");
    }

    let (code, _, stderr) = health_command(app.addr, &["--service", "nope"]).await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains("does not know the health service \"nope\""),
        "{stderr}"
    );

    let nobody: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (code, _, stderr) = health_command(nobody, &["--timeout-ms", "500"]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot connect"), "{stderr}");
}

/// A drain turns readiness off first and leaves liveness on: a liveness probe must not kill a
/// replica that is finishing its calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_turns_readiness_off_and_leaves_liveness_on() {
    let db = TestDb::new(Backend::Sqlite).await;
    let prefix = format!("t{}:", uuid::Uuid::new_v4().simple());
    let mut replica = Replica::start(&ReplicaConfig::new(&db.url, redis_url(), &prefix)).await;
    let channel = replica.channel().await;
    let watch = |service: &str| {
        let (mut health, service) = (HealthClient::new(channel.clone()), service.to_owned());
        async move {
            let mut stream = health
                .watch(HealthCheckRequest { service })
                .await
                .unwrap()
                .into_inner();
            let first = stream.message().await.unwrap().unwrap().status;
            assert_eq!(first, ServingStatus::Serving as i32);
            stream
        }
    };
    let (mut readiness, mut liveness) = (watch("").await, watch(LIVENESS).await);
    replica.terminate();
    let next = tokio::time::timeout(Duration::from_secs(5), readiness.message())
        .await
        .expect("readiness changes before the connection closes")
        .unwrap()
        .unwrap();
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    // Liveness says nothing more until the stream ends with the process (the grace period is 3 s).
    let during = tokio::time::timeout(Duration::from_secs(5), liveness.message()).await;
    if let Ok(Ok(Some(change))) = during {
        panic!("liveness changed during the drain: {change:?}");
    }
    assert!(replica.wait().await.success());
    delete_prefix(redis_url(), &prefix);
}
