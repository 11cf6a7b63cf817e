//! A real suppressd for the load generator to load: the service library's `Application` on port 0,
//! with authentication on (one admin key), a fresh SQLite store and its own key prefix on the test
//! Redis (`SUPPRESSD_TEST_REDIS_URL`, as in the service's own tests).

use std::{net::SocketAddr, time::Duration};
use suppressd::{
    cache::{Cache, layout::Keys},
    config::ServeSettings,
    domain::Clock,
    startup::Application,
};
use tempfile::TempDir;
use tokio::sync::oneshot;

pub const ADMIN_KEY: &str = "sk_test_admin_3b1f0c9e8d7a6b5c4d3e2f1a0b9c8d7e";

pub fn redis_url() -> String {
    std::env::var("SUPPRESSD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A running server; stopped when dropped.
pub struct TestApp {
    pub addr: SocketAddr,
    settings: ServeSettings,
    _dir: TempDir,
    _stop: oneshot::Sender<()>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_, _| {}).await
}

/// The same, after `tweak` adjusted the settings (it gets the app's own temporary folder).
pub async fn spawn_app_with(tweak: impl FnOnce(&mut ServeSettings, &std::path::Path)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("keys.toml");
    let entry = format!(
        "[[principal]]\nname = \"admin\"\nroles = [\"admin\"]\nkey_sha256 = [\"{}\"]\n",
        suppressd::auth::hash_key(ADMIN_KEY)
    );
    std::fs::write(&key_file, entry).unwrap();
    let mut settings = ServeSettings::defaults();
    settings.listen = "127.0.0.1:0".parse().unwrap();
    settings.redis.redis_url = redis_url();
    settings.redis.redis_prefix = format!("bt{}:", uuid::Uuid::new_v4().simple());
    settings.store_url = format!("sqlite://{}", dir.path().join("store.db").display());
    settings.secrets.pepper = Some("bench-test-pepper-0123456789".into());
    settings.auth.keys = Some(key_file);
    settings.cache_bucket_bits = 6;
    tweak(&mut settings, dir.path());
    let app = Application::build(&settings, Clock::System)
        .await
        .expect("the application builds");
    let addr = app.local_addr();
    let (stop, stopped) = oneshot::channel();
    tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        settings,
        _dir: dir,
        _stop: stop,
    }
}

impl TestApp {
    /// Rows in the store (what the worker committed).
    pub async fn rows(&self) -> i64 {
        let pool = sqlx::SqlitePool::connect(&self.settings.store_url)
            .await
            .unwrap();
        let rows = sqlx::query_scalar("SELECT COUNT(*) FROM suppressions")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        rows
    }

    /// Waits until the rebuild marked the cache complete (it runs in the background by design).
    pub async fn wait_cache_complete(&self) {
        let keys = Keys::new(
            &self.settings.redis.redis_prefix,
            self.settings.cache_bucket_bits,
        );
        let cache = Cache::connect_url(&self.settings.redis.redis_url, keys)
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !cache.is_complete().await.unwrap() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "cache never became complete"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A CA and a server certificate for localhost signed by it (PEM), made with rcgen.
pub struct Pki {
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
}

impl Pki {
    pub fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "suppressd-bench test CA");
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut server =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        server
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = server.signed_by(&key, &issuer).unwrap();
        Pki {
            ca_pem,
            server_cert_pem: cert.pem(),
            server_key_pem: key.serialize_pem(),
        }
    }

    /// A server with this PKI's certificate.
    pub async fn app(&self) -> TestApp {
        spawn_app_with(|s, dir| {
            let cert = dir.join("server.pem");
            let key = dir.join("server.key");
            std::fs::write(&cert, &self.server_cert_pem).unwrap();
            std::fs::write(&key, &self.server_key_pem).unwrap();
            s.auth.tls_cert = Some(cert);
            s.auth.tls_key = Some(key);
        })
        .await
    }
}
