//! The shared harness: every test gets the real server on port 0, its own database (a fresh
//! PostgreSQL database or a fresh SQLite file) and its own Redis key prefix on the shared Redis.
//! Authentication is on, as in production: each app has its own key file with the principals below,
//! and `TestApp.client` sends the admin key with every call.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{LazyLock, OnceLock},
    time::Duration,
};
use suppressd::{
    cache::Cache,
    config::ServeSettings,
    domain::Clock,
    proto::{self, suppression_client::SuppressionClient},
    startup::Application,
    store::Store,
};
use tempfile::TempDir;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{service::interceptor::InterceptedService, transport::Channel};

/// The shared Redis: `SUPPRESSD_TEST_REDIS_URL`, default `redis://127.0.0.1:6379` (`scripts/test`
/// points it at a private redis-server when none answers there).
pub fn redis_url() -> &'static str {
    static URL: LazyLock<String> =
        LazyLock::new(|| env_or("SUPPRESSD_TEST_REDIS_URL", "redis://127.0.0.1:6379"));
    &URL
}

/// The PostgreSQL admin URL each test creates its own database with: `SUPPRESSD_TEST_PG_URL`,
/// default `postgres://postgres@127.0.0.1:5432/postgres` (trust auth for user `postgres`).
pub fn pg_admin_url() -> &'static str {
    static URL: LazyLock<String> = LazyLock::new(|| {
        env_or(
            "SUPPRESSD_TEST_PG_URL",
            "postgres://postgres@127.0.0.1:5432/postgres",
        )
    });
    &URL
}

/// The URL of database `name` on the admin URL's server (same user, host, port and parameters).
pub fn pg_database_url(name: &str) -> String {
    let admin = pg_admin_url();
    let (base, query) = admin
        .split_once('?')
        .map_or((admin, None), |(b, q)| (b, Some(q)));
    let authority = base.find("://").map_or(0, |at| at + 3);
    let path = base[authority..]
        .find('/')
        .map_or(base.len(), |at| authority + at);
    match query {
        Some(query) => format!("{}/{name}?{query}", &base[..path]),
        None => format!("{}/{name}", &base[..path]),
    }
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

pub const PEPPER: &str = "test-pepper-0123456789abcdef";

/// The API keys of the harness's principals (the key file holds only their hashes).
pub const ADMIN_KEY: &str = "sk_test_admin_3b1f0c9e8d7a6b5c4d3e2f1a0b9c8d7e";
pub const CHECK_KEY: &str = "sk_test_check_5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d";
pub const WRITE_KEY: &str = "sk_test_write_7e6d5c4b3a291807f6e5d4c3b2a19081";
/// Restricted to tenant "acme".
pub const ACME_CHECK_KEY: &str = "sk_test_acmechk_0f1e2d3c4b5a69788796a5b4c3d2e1f0";
pub const ACME_WRITE_KEY: &str = "sk_test_acmewr_1a2b3c4d5e6f708192a3b4c5d6e7f809";
/// An admin whose key names one tenant, `acme`.
pub const ACME_ADMIN_KEY: &str = "sk_test_acmeadm_9c8b7a6f5e4d3c2b1a09f8e7d6c5b4a3";
/// Role `watch` only: the stream of changes, nothing else.
pub const WATCH_KEY: &str = "sk_test_watch_4d5e6f708192a3b4c5d6e7f8091a2b3c";
/// The token key the harness's key file issues with.
pub const TOKEN_KEY: (&str, [u8; 32]) = ("k1", [0x11; 32]);

/// The key file's text: the seven principals and the given token keys (`(id, secret, issues)`).
pub fn key_file_text(token_keys: &[(&str, [u8; 32], bool)]) -> String {
    let principal = |name: &str, roles: &str, tenants: &str, key: &str| {
        format!(
            "[[principal]]\nname = \"{name}\"\nroles = [{roles}]\n{tenants}key_sha256 = [\"{}\"]\n\n",
            suppressd::auth::hash_key(key)
        )
    };
    let acme = "tenants = [\"acme\"]\n";
    let mut text = String::new();
    text += &principal("admin", "\"admin\"", "", ADMIN_KEY);
    text += &principal("checker", "\"check\"", "", CHECK_KEY);
    text += &principal("writer", "\"write\"", "", WRITE_KEY);
    text += &principal("acme-checker", "\"check\"", acme, ACME_CHECK_KEY);
    text += &principal("acme-writer", "\"write\"", acme, ACME_WRITE_KEY);
    text += &principal("acme-admin", "\"admin\"", acme, ACME_ADMIN_KEY);
    text += &principal("watcher", "\"watch\"", "", WATCH_KEY);
    for (id, secret, issue) in token_keys {
        text += &format!(
            "[[token_key]]\nid = \"{id}\"\nsecret = \"{}\"\nissue = {issue}\n\n",
            hex::encode(secret)
        );
    }
    text
}

/// One key file for every replica process of the test binary (they never change it).
pub fn shared_key_file() -> &'static str {
    static FILE: OnceLock<(TempDir, String)> = OnceLock::new();
    &FILE
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("keys.toml");
            std::fs::write(&path, key_file_text(&[(TOKEN_KEY.0, TOKEN_KEY.1, true)])).unwrap();
            let path = path.display().to_string();
            (dir, path)
        })
        .1
}

/// Sends `authorization: Bearer <key>` with every call, or no credentials at all.
#[derive(Clone)]
pub struct Bearer(pub Option<String>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(key) = &self.0 {
            let value = format!("Bearer {key}")
                .parse()
                .expect("a valid header value");
            req.metadata_mut().insert("authorization", value);
        }
        Ok(req)
    }
}

/// The generated client with a key attached to every call.
pub type Client = SuppressionClient<InterceptedService<Channel, Bearer>>;

pub fn client_with(channel: Channel, key: Option<&str>) -> Client {
    SuppressionClient::with_interceptor(channel, Bearer(key.map(str::to_owned)))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database of one test's own; dropped with the test.
pub struct TestDb {
    pub url: String,
    pg_name: Option<String>,
    _dir: Option<TempDir>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}/suppressd.db", dir.path().display());
                TestDb {
                    url,
                    pg_name: None,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let name = format!("suppressd_test_{}", uuid::Uuid::new_v4().simple());
                let admin = sqlx::PgPool::connect(pg_admin_url()).await.unwrap();
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&admin)
                    .await
                    .unwrap();
                admin.close().await;
                TestDb {
                    url: pg_database_url(&name),
                    pg_name: Some(name),
                    _dir: None,
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Drop runs outside any runtime we may block: clean up on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(admin) = sqlx::PgPool::connect(pg_admin_url()).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&admin).await;
                    admin.close().await;
                }
            });
        })
        .join();
    }
}

/// Deletes every key under a prefix (never FLUSHALL: the Redis is shared). `redis_url` may be a
/// Cluster's seed list: each node then deletes the keys it holds (named `{prefix}…` and, for slot
/// groups, `{prefixgN.n}…` there).
pub fn delete_prefix(redis_url: &str, prefix: &str) {
    let (urls, pattern) = if redis_url.contains(',') {
        (redis_url.split(',').collect(), format!("{{{prefix}*"))
    } else {
        (vec![redis_url], format!("{prefix}*"))
    };
    for url in urls {
        let Ok(client) = redis::Client::open(url) else {
            continue;
        };
        let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(500)) else {
            continue;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query(&mut conn)
            .unwrap_or_default();
        for chunk in keys.chunks(500) {
            let _: Result<(), _> = redis::cmd("DEL").arg(chunk).query(&mut conn);
        }
    }
}

tokio::task_local! {
    /// Set by [`on_cluster!`]: the seed list of the Redis Cluster the test's apps use instead of
    /// the shared standalone Redis.
    pub static ON_CLUSTER: String;
    /// Set by [`in_audit_blocks!`]: the test's apps store the worker's batches as audit blocks
    /// (`--audit-blocks`).
    pub static AUDIT_BLOCKS: ();
}

pub fn settings(store_url: &str, redis_url: &str, prefix: &str) -> ServeSettings {
    let mut s = ServeSettings::defaults();
    s.listen = "127.0.0.1:0".parse().unwrap();
    s.redis.redis_url = redis_url.to_owned();
    s.redis.redis_prefix = prefix.to_owned();
    s.store_url = store_url.to_owned();
    s.secrets.pepper = Some(PEPPER.to_owned());
    s.auth.keys = Some(PathBuf::from(shared_key_file()));
    s.cache_bucket_bits = 6;
    s.write_behind.durable_wait_ms = 5_000;
    s.shutdown_grace_ms = 5_000;
    s
}

/// A running server and a client connected to it.
pub struct TestApp {
    pub addr: SocketAddr,
    /// The admin (metrics) port, when the test configured one.
    pub admin: Option<SocketAddr>,
    /// The HTTP front's address, when the test configured one (`http_listen`).
    pub http_addr: Option<SocketAddr>,
    /// Sends the admin key with every call.
    pub client: Client,
    pub settings: ServeSettings,
    pub clock: Clock,
    pub db: TestDb,
    /// Holds this app's own key file (`key_file()`), which a test may rewrite.
    keys_dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
    /// The near-cache of the running application, when it has one.
    pub near: Option<std::sync::Arc<suppressd::cache::near::NearCache>>,
    /// The running application's identifier vault.
    pub vault: Option<suppressd::service::Vault>,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, Clock::System, |_| {}).await
}

pub async fn spawn_app_with(
    backend: Backend,
    clock: Clock,
    tweak: impl FnOnce(&mut ServeSettings),
) -> TestApp {
    let db = TestDb::new(backend).await;
    let prefix = format!("t{}:", uuid::Uuid::new_v4().simple());
    let mut settings = settings(&db.url, redis_url(), &prefix);
    let keys_dir = tempfile::tempdir().unwrap();
    let key_file = keys_dir.path().join("keys.toml");
    std::fs::write(
        &key_file,
        key_file_text(&[(TOKEN_KEY.0, TOKEN_KEY.1, true)]),
    )
    .unwrap();
    settings.auth.keys = Some(key_file);
    if let Ok(seeds) = ON_CLUSTER.try_with(String::clone) {
        settings.redis.redis_url = seeds;
        settings.redis.redis_cluster = true;
    }
    settings.audit_blocks = AUDIT_BLOCKS.try_with(|_| ()).is_ok();
    tweak(&mut settings);
    let mut app = TestApp {
        addr: "127.0.0.1:0".parse().unwrap(),
        admin: None,
        http_addr: None,
        client: client_with(
            Channel::from_static("http://127.0.0.1:1").connect_lazy(),
            Some(ADMIN_KEY),
        ),
        settings,
        clock,
        db,
        keys_dir,
        stop: None,
        handle: None,
        near: None,
        vault: None,
    };
    app.start().await;
    app
}

impl TestApp {
    pub async fn start(&mut self) {
        let app = Application::build(&self.settings, self.clock.clone())
            .await
            .expect("the application builds");
        self.addr = app.local_addr();
        self.near = app.near_cache();
        self.vault = Some(app.vault());
        self.admin = app.admin_addr();
        self.http_addr = app.http_addr();
        let (tx, rx) = oneshot::channel();
        self.stop = Some(tx);
        self.handle = Some(tokio::spawn(app.run_until(async {
            let _ = rx.await;
        })));
        self.client = if self.settings.auth.tls_cert.is_some() {
            // A TLS test connects with its own CA (tests/api/tls.rs).
            client_with(
                Channel::from_static("http://127.0.0.1:1").connect_lazy(),
                None,
            )
        } else {
            connect(self.addr).await
        };
    }

    /// Graceful shutdown, as on SIGTERM.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.await.unwrap().unwrap();
        }
    }

    pub async fn restart(&mut self) {
        self.stop().await;
        self.start().await;
    }

    /// This app's key file (unless the test pointed `keys` elsewhere).
    pub fn key_file(&self) -> PathBuf {
        self.keys_dir.path().join("keys.toml")
    }

    /// A plaintext channel to this app, for clients other than the harness's own.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// A client of this app that sends `key` (or no credentials) with every call.
    pub async fn client_with_key(&self, key: Option<&str>) -> Client {
        let channel = Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .expect("the client connects");
        client_with(channel, key)
    }

    pub fn prefix(&self) -> &str {
        &self.settings.redis.redis_prefix
    }

    /// What an empty Redis looks like to this test: every key of its prefix gone.
    pub fn flush_redis(&self) {
        delete_prefix(&self.settings.redis.redis_url, self.prefix());
    }

    pub async fn store(&self) -> Store {
        Store::connect(&self.settings.store_url).await.unwrap()
    }

    pub async fn cache(&self) -> Cache {
        let topology = self.settings.redis_topology().unwrap();
        Cache::connect(&topology, self.settings.cache_keys().unwrap())
            .await
            .unwrap()
    }

    /// Rows in the store, optionally for one receipt.
    pub async fn rows(&self, receipt: Option<&str>) -> i64 {
        let sql = "SELECT COUNT(*) FROM suppressions WHERE $1 = '' OR receipt_id = $1";
        let receipt = receipt.unwrap_or_default();
        match self.store().await {
            Store::Postgres(pool) => sqlx::query_scalar(sql).bind(receipt).fetch_one(&pool).await,
            Store::Sqlite(pool) => sqlx::query_scalar(sql).bind(receipt).fetch_one(&pool).await,
        }
        .unwrap()
    }

    /// Who recorded a receipt's row, and its source code (the proto's numbering).
    pub async fn actor_and_source(&self, receipt: &str) -> (String, i64) {
        let sql = "SELECT actor, CAST(source AS BIGINT) FROM suppressions WHERE receipt_id = $1";
        match self.store().await {
            Store::Postgres(pool) => sqlx::query_as(sql).bind(receipt).fetch_one(&pool).await,
            Store::Sqlite(pool) => sqlx::query_as(sql).bind(receipt).fetch_one(&pool).await,
        }
        .unwrap()
    }

    /// Waits until a rebuild has marked the cache complete. The rebuild runs in the background by
    /// design; this polls the marker, it does not guess a duration.
    /// Waits until this replica answers checks from its near-cache.
    pub async fn wait_near_cache_serving(&self) {
        let near = self.near.clone().expect("the near-cache is on");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !near.serving() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the near-cache never served"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn wait_cache_complete(&self) {
        let cache = self.cache().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !cache.is_complete().await.unwrap() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "cache never became complete"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn opt_out(&mut self, req: proto::OptOutRequest) -> proto::Receipt {
        self.client
            .opt_out(req)
            .await
            .expect("opt-out succeeds")
            .into_inner()
            .receipt
            .expect("a receipt")
    }

    pub async fn is_suppressed(
        &mut self,
        recipient: proto::Recipient,
        scope: proto::Scope,
    ) -> bool {
        self.check(recipient, scope).await.suppressed
    }

    pub async fn check(
        &mut self,
        recipient: proto::Recipient,
        scope: proto::Scope,
    ) -> proto::CheckSuppressedResponse {
        self.client
            .check_suppressed(proto::CheckSuppressedRequest {
                recipient: Some(recipient),
                scope: Some(scope),
                ..Default::default()
            })
            .await
            .expect("check succeeds")
            .into_inner()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        delete_prefix(
            &self.settings.redis.redis_url,
            &self.settings.redis.redis_prefix,
        );
    }
}

/// A client that sends the admin key with every call.
pub async fn connect(addr: SocketAddr) -> Client {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("the client connects");
    client_with(channel, Some(ADMIN_KEY))
}

/// Writes a file in place (the server notices the change by its modification time and length).
pub fn rewrite(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

pub fn email(address: &str) -> proto::Recipient {
    proto::Recipient {
        id: Some(proto::recipient::Id::Email(address.to_owned())),
    }
}

pub fn phone(number: &str) -> proto::Recipient {
    proto::Recipient {
        id: Some(proto::recipient::Id::Phone(number.to_owned())),
    }
}

pub fn scope(tenant: &str, channel: proto::Channel, topic: &str, campaign: &str) -> proto::Scope {
    proto::Scope {
        tenant: tenant.to_owned(),
        channel: channel as i32,
        topic: topic.to_owned(),
        campaign: campaign.to_owned(),
    }
}

pub fn opt_out_request(recipient: proto::Recipient, scope: proto::Scope) -> proto::OptOutRequest {
    proto::OptOutRequest {
        recipient: Some(recipient),
        scope: Some(scope),
        reason: proto::Reason::UserRequest as i32,
        source: proto::Source::Link as i32,
        idempotency_key: String::new(),
        durability: proto::Durability::Durable as i32,
        expires_at: None,
        token: String::new(),
        keep_identifier_for_delivery: false,
    }
}

/// Generates one `#[tokio::test]` per store for each behaviour, so the same suite runs on both.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            )*
        }
    };
}

/// Runs each test on both stores again with `--audit-blocks` (the worker's batches stored as one
/// audit block each): for tests of what reads the audit log, which must find every entry in either
/// shape.
macro_rules! in_audit_blocks {
    ($($name:ident),* $(,)?) => {
        mod blocks {
            mod sqlite {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        $crate::helpers::AUDIT_BLOCKS
                            .scope((), super::super::$name($crate::helpers::Backend::Sqlite))
                            .await
                    }
                )*
            }
            mod postgres {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        $crate::helpers::AUDIT_BLOCKS
                            .scope((), super::super::$name($crate::helpers::Backend::Postgres))
                            .await
                    }
                )*
            }
        }
    };
}

/// Runs each test on a private Redis Cluster (3 masters + 3 replicas, one for the whole test
/// binary, `topology::shared_cluster`) with a SQLite store: what `on_both_stores!` does for the
/// stores, for the topology. For tests that reach Redis only through the service.
macro_rules! on_cluster {
    ($($name:ident),* $(,)?) => {
        mod cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let seeds = $crate::topology::shared_cluster().await;
                    $crate::helpers::ON_CLUSTER
                        .scope(seeds, super::$name($crate::helpers::Backend::Sqlite))
                        .await
                }
            )*
        }
    };
}

/// Imports run one at a time: an import commits 1,000-row chunks and waits for every near-cache to
/// apply each one (3 s at most), and several at once in a debug build on 2 shared cores can miss
/// that bound (UNAVAILABLE "not yet confirmed by every replica"). Held for the whole test.
pub async fn one_import_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static IMPORTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    IMPORTS.lock().await
}
