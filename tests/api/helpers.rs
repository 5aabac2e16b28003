//! `TestApp`: a running tally on port 0 against its own fresh database, plus one method per
//! thing tests do often.

use std::{net::SocketAddr, time::Duration};

use base64::Engine as _;
use clap::Parser as _;
use sqlx::{Connection as _, PgConnection, PgPool, postgres::PgPoolOptions};
use tally::{
    app::Application,
    app::ServeSettings,
    cli::{Cli, Command},
    config::Environment,
    proto::tally_v1::{
        self as pb, account_service_client::AccountServiceClient,
        role_service_client::RoleServiceClient, session_service_client::SessionServiceClient,
        transfer_service_client::TransferServiceClient, user_service_client::UserServiceClient,
    },
};
use tokio::sync::oneshot;
use tonic::{Code, Request, Status, metadata::MetadataValue, transport::Channel};
use uuid::Uuid;

/// The token key every test server uses, so tests can mint tokens of their own.
pub const TEST_KEY: [u8; 32] = [7; 32];
pub const PASSWORD: &str = "correct horse battery";

/// The server that holds test databases: `DATABASE_URL`'s server, or the local default.
pub fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The Redis of `REDIS_URL`, or the local default.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| tally::config::REDIS_URL_DEFAULT.to_owned())
}

/// `url` with its database name replaced.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{database}?{q}"),
        None => format!("{base}/{database}"),
    }
}

/// A fresh, empty database; dropped when the guard is.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let name = format!("tally_test_{}", Uuid::new_v4().simple());
        let admin_url = with_database(&server_url(), "postgres");
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .expect("connect to the PostgreSQL server of DATABASE_URL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        let url = with_database(&server_url(), &name);
        TestDatabase { name, url }
    }

    pub async fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(10)
            .connect(&self.url)
            .await
            .expect("connect to the test database")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs outside async; a short-lived thread with its own runtime does the I/O.
        let admin_url = with_database(&server_url(), "postgres");
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let mut admin = PgConnection::connect(&admin_url).await?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await?;
                Ok::<_, sqlx::Error>(())
            })?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .join();
    }
}

/// The change feed's Redis stream of the servers on `db`.
pub fn events_stream(db: &TestDatabase) -> String {
    format!("tally:test:events:{}", db.name)
}

/// Serve settings as `tally serve` would parse them, with test-friendly defaults.
pub fn settings(database_url: &str, extra: &[&str]) -> ServeSettings {
    let key = base64::engine::general_purpose::STANDARD.encode(TEST_KEY);
    let mut argv = vec![
        "tally",
        "serve",
        "--listen-addr",
        "127.0.0.1:0",
        "--database-url",
        database_url,
        "--token-key",
        &key,
        "--shutdown-drain-secs",
        "5",
        // Every test's calls come from 127.0.0.1; the rate limit tests lower these again.
        "--rate-auth-per-minute",
        "1000000",
        "--rate-writes-per-second",
        "10000000",
    ];
    argv.extend_from_slice(extra);
    match Cli::try_parse_from(argv)
        .expect("test arguments parse")
        .command
    {
        Command::Serve(args) => args
            .settings(Environment::Development)
            .expect("test settings are valid"),
        _ => unreachable!("serve was parsed"),
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    /// The Redis mail queue this server pushes to (unique per test, so parallel tests and a
    /// `make run` worker on the same Redis never take each other's jobs).
    pub settings: ServeSettings,
    pub channel: Channel,
    pub pool: PgPool,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    // Last: the database outlives the server and pool that use it.
    pub db: std::sync::Arc<TestDatabase>,
}

impl TestApp {
    /// A migrated fresh database and a server on it.
    pub async fn spawn() -> Self {
        Self::spawn_with(&[]).await
    }

    pub async fn spawn_with(extra: &[&str]) -> Self {
        let db = TestDatabase::create().await;
        let pool = db.pool().await;
        tally::db::migrate_up(&pool)
            .await
            .expect("migrations apply");
        Self::spawn_on(std::sync::Arc::new(db), pool, extra).await
    }

    /// A migrated fresh database and a server whose pool reaches it through `127.0.0.1:port`
    /// (a proxy the test controls), giving up on a connection after a second.
    pub async fn spawn_through(port: u16, extra: &[&str]) -> Self {
        use std::str::FromStr as _;
        let db = TestDatabase::create().await;
        let direct = db.pool().await;
        tally::db::migrate_up(&direct)
            .await
            .expect("migrations apply");
        direct.close().await;
        let options = sqlx::postgres::PgConnectOptions::from_str(&db.url)
            .expect("a PostgreSQL URL")
            .host("127.0.0.1")
            .port(port);
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(1))
            .connect_with(options)
            .await
            .expect("connect through the proxy");
        Self::spawn_on(std::sync::Arc::new(db), pool, extra).await
    }

    /// A second server (another replica) on the same database.
    pub async fn replica(&self, extra: &[&str]) -> Self {
        Self::spawn_on(self.db.clone(), self.db.pool().await, extra).await
    }

    async fn spawn_on(db: std::sync::Arc<TestDatabase>, pool: PgPool, extra: &[&str]) -> Self {
        let queue = format!("tally:test:{}", Uuid::new_v4().simple());
        // One change-feed stream per database (its replicas share it, as in production).
        let stream = events_stream(&db);
        let redis_url = redis_url();
        // A short lease: a job stranded in Redis (a consumer restarted under load) is queued
        // again within seconds rather than the production default of minutes.
        let mut flags = vec![
            "--mail-queue",
            &queue,
            "--redis-url",
            &redis_url,
            "--outbox-lease-secs",
            "10",
            "--events-stream",
            &stream,
        ];
        flags.extend_from_slice(extra);
        let settings = settings(&db.url, &flags);
        let app = Application::build_with_pool(settings.clone(), pool.clone())
            .await
            .expect("application builds");
        let addr = app.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("valid uri")
            .connect()
            .await
            .expect("connect to the test server");
        TestApp {
            addr,
            settings,
            channel,
            pool,
            stop: Some(stop),
            server: Some(server),
            db,
        }
    }

    /// Triggers shutdown and waits for the server to finish draining.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.server.take() {
            Some(server) => server.await?,
            None => Ok(()),
        }
    }

    pub fn users(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.channel.clone())
    }

    pub fn sessions(&self) -> SessionServiceClient<Channel> {
        SessionServiceClient::new(self.channel.clone())
    }

    pub fn roles(&self) -> RoleServiceClient<Channel> {
        RoleServiceClient::new(self.channel.clone())
    }

    pub fn accounts(&self) -> AccountServiceClient<Channel> {
        AccountServiceClient::new(self.channel.clone())
    }

    pub fn transfers(&self) -> TransferServiceClient<Channel> {
        TransferServiceClient::new(self.channel.clone())
    }

    /// `CreateAccount` with `request`, as the holder of `token`: the account or the refusal.
    pub async fn create_account(
        &self,
        token: &str,
        request: pb::CreateAccountRequest,
    ) -> Result<pb::Account, Status> {
        self.accounts()
            .create_account(authed(token, request))
            .await
            .map(|r| r.into_inner())
    }

    /// Opens an account in `currency` for the holder of `token`.
    pub async fn open_account(&self, token: &str, currency: &str) -> pb::Account {
        self.create_account(token, account_request(currency, None, None, None))
            .await
            .expect("open account")
    }

    /// `GetAccount` as the holder of `token`: the account or the refusal.
    pub async fn get_account(&self, token: &str, account_id: &str) -> Result<pb::Account, Status> {
        self.accounts()
            .get_account(authed(
                token,
                pb::GetAccountRequest {
                    account_id: account_id.into(),
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    /// The first page (the server's default size) of an account's entries, newest first.
    pub async fn entries(&self, token: &str, account_id: &str) -> Result<Vec<pb::Entry>, Status> {
        self.accounts()
            .list_entries(authed(
                token,
                pb::ListEntriesRequest {
                    account_id: account_id.into(),
                    ..Default::default()
                },
            ))
            .await
            .map(|r| r.into_inner().entries)
    }

    /// A deposit of `amount` with a fresh request id: the transfer or the refusal.
    pub async fn try_deposit(
        &self,
        token: &str,
        account_id: &str,
        amount: i64,
    ) -> Result<pb::Transfer, Status> {
        self.accounts()
            .deposit(authed(
                token,
                pb::DepositRequest {
                    account_id: account_id.into(),
                    request_id: Uuid::new_v4().to_string(),
                    amount,
                    memo: None,
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    /// Deposits `amount` with a banker's or admin's token.
    pub async fn deposit(&self, token: &str, account_id: &str, amount: i64) -> pb::Transfer {
        self.try_deposit(token, account_id, amount)
            .await
            .expect("deposit")
    }

    /// `CreateTransfer` with `request`, as the holder of `token`.
    pub async fn create_transfer(
        &self,
        token: &str,
        request: pb::CreateTransferRequest,
    ) -> Result<pb::Transfer, Status> {
        self.transfers()
            .create_transfer(authed(token, request))
            .await
            .map(|r| r.into_inner())
    }

    /// A USD transfer of `amount` from `from` to `to` with a fresh id.
    pub async fn transfer(
        &self,
        token: &str,
        from: &str,
        to: &str,
        amount: i64,
    ) -> Result<pb::Transfer, Status> {
        self.create_transfer(token, transfer_request(from, to, amount))
            .await
    }

    /// `GetTransfer` as the holder of `token`: the transfer or the refusal.
    pub async fn get_transfer(
        &self,
        token: &str,
        transfer_id: &str,
    ) -> Result<pb::Transfer, Status> {
        self.transfers()
            .get_transfer(authed(
                token,
                pb::GetTransferRequest {
                    transfer_id: transfer_id.into(),
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    /// The set-up most ledger tests start from: a banker's token, a new customer's token, and
    /// `N` USD accounts of that customer, each funded by a deposit of its amount (0: none).
    pub async fn customer_with_accounts<const N: usize>(
        &self,
        prefix: &str,
        funding: [i64; N],
    ) -> (String, String, [String; N]) {
        let banker = self.banker().await;
        let owner = self.signed_in(&unique(prefix), &[]).await.access_token;
        let mut accounts = Vec::with_capacity(N);
        for amount in funding {
            let account = self.open_account(&owner, "USD").await.account_id;
            if amount > 0 {
                self.deposit(&banker, &account, amount).await;
            }
            accounts.push(account);
        }
        let accounts = accounts.try_into().expect("N accounts");
        (banker, owner, accounts)
    }

    /// Places a hold of `amount` from `from` to `to` for `timeout`.
    pub async fn hold(
        &self,
        token: &str,
        from: &str,
        to: &str,
        amount: i64,
        timeout: Duration,
    ) -> Result<pb::Transfer, Status> {
        self.transfers()
            .create_transfer(authed(token, hold_request(from, to, amount, timeout)))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn account(&self, token: &str, account_id: &str) -> pb::Account {
        self.get_account(token, account_id)
            .await
            .expect("get account")
    }

    pub async fn balance(&self, token: &str, account_id: &str) -> i64 {
        self.account(token, account_id).await.balance
    }

    /// The ledger invariants, as `tally verify` computes them.
    pub async fn verify(&self) -> tally::ledger::verify::Report {
        tally::ledger::verify::run(&self.pool)
            .await
            .expect("verify runs")
    }

    pub async fn create_user(&self, username: &str) -> pb::User {
        self.users()
            .create_user(pb::CreateUserRequest {
                username: username.into(),
                full_name: format!("{username} tester"),
                email: format!("{username}@example.com"),
                password: PASSWORD.into(),
            })
            .await
            .expect("create user")
            .into_inner()
    }

    /// `GetUser` of `username` as the holder of `token`: the user or the refusal.
    pub async fn get_user(&self, token: &str, username: &str) -> Result<pb::User, Status> {
        self.users()
            .get_user(authed(
                token,
                pb::GetUserRequest {
                    username: username.into(),
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn login(&self, username: &str, password: &str) -> Result<pb::LoginResponse, Status> {
        self.sessions()
            .login(pb::LoginRequest {
                username: username.into(),
                password: password.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// `RefreshSession` with `refresh_token`: the new pair or the refusal.
    pub async fn refresh(&self, refresh_token: &str) -> Result<pb::RefreshSessionResponse, Status> {
        self.sessions()
            .refresh_session(pb::RefreshSessionRequest {
                refresh_token: refresh_token.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// `RevokeSession` of `session_id` as the holder of `token`.
    pub async fn revoke_session(
        &self,
        token: &str,
        session_id: &str,
    ) -> Result<pb::RevokeSessionResponse, Status> {
        self.sessions()
            .revoke_session(authed(
                token,
                pb::RevokeSessionRequest {
                    session_id: session_id.into(),
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    /// Creates a user, grants `roles` through the database as `tally admin` would, logs in.
    pub async fn signed_in(&self, username: &str, roles: &[&str]) -> pb::LoginResponse {
        self.create_user(username).await;
        for role in roles {
            sqlx::query(
                "INSERT INTO user_roles (user_id, role) \
                 SELECT id, $2 FROM users WHERE username = $1 ON CONFLICT DO NOTHING",
            )
            .bind(username)
            .bind(role)
            .execute(&self.pool)
            .await
            .expect("grant role");
        }
        self.login(username, PASSWORD).await.expect("login")
    }

    /// A fresh user with the banker role, signed in: its access token.
    pub async fn banker(&self) -> String {
        self.signed_in(&unique("banker"), &["banker"])
            .await
            .access_token
    }

    pub async fn count(&self, table: &'static str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&self.pool)
            .await
            .expect("count rows")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Leave the shared Redis as we found it (a dead throwaway Redis just times out).
        let _ = forget_queue(&self.settings.queue.redis_url, &self.settings.queue.queue);
    }
}

/// Deletes every Redis key of a test's mail queue.
fn forget_queue(redis_url: &str, queue: &str) -> redis::RedisResult<()> {
    use redis::Commands as _;
    let client = redis::Client::open(redis_url)?;
    let mut conn = client.get_connection_with_timeout(Duration::from_millis(500))?;
    let keys: Vec<String> = conn
        .scan_match::<_, String>(format!("{queue}:*"))?
        .collect::<Result<_, _>>()?;
    if !keys.is_empty() {
        conn.del::<_, ()>(keys)?;
    }
    Ok(())
}

/// A `CreateAccountRequest` in `currency`, for `owner` (None: the caller), with an optional
/// name and overdraft limit.
pub fn account_request(
    currency: &str,
    owner: Option<&str>,
    name: Option<&str>,
    overdraft_limit: Option<i64>,
) -> pb::CreateAccountRequest {
    pb::CreateAccountRequest {
        currency: currency.into(),
        owner: owner.map(Into::into),
        name: name.map(Into::into),
        overdraft_limit,
    }
}

/// A USD transfer request with a fresh id.
pub fn transfer_request(from: &str, to: &str, amount: i64) -> pb::CreateTransferRequest {
    pb::CreateTransferRequest {
        transfer_id: Uuid::new_v4().to_string(),
        from_account_id: from.into(),
        to_account_id: to.into(),
        amount,
        currency: "USD".into(),
        memo: None,
        linked: false,
        pending: false,
        timeout: None,
    }
}

/// A USD hold request with a fresh id, waiting at most `timeout`.
pub fn hold_request(
    from: &str,
    to: &str,
    amount: i64,
    timeout: Duration,
) -> pb::CreateTransferRequest {
    pb::CreateTransferRequest {
        pending: true,
        timeout: Some(timeout.try_into().expect("a small duration")),
        ..transfer_request(from, to, amount)
    }
}

/// `message` with `authorization: Bearer <token>`.
pub fn authed<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {token}").parse().expect("ascii token");
    request.metadata_mut().insert("authorization", value);
    request
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", &Uuid::new_v4().simple().to_string()[..8])
}

/// Calls `f` until it yields `Some`, for at most `within`; returns how long it took.
pub async fn eventually<F, Fut>(within: Duration, mut f: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while started.elapsed() <= within {
        if f().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// The ErrorInfo reason of a status, if any.
pub fn reason(status: &Status) -> Option<String> {
    use tonic_types::StatusExt as _;
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
}

pub fn assert_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> Status {
    match result {
        Ok(v) => panic!("expected {code:?}, got OK {v:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "unexpected status: {status:?}");
            status
        }
    }
}

/// `tally serve` as its own process (the debug binary) on a fresh database: for what must be
/// measured from outside, such as the server's memory.
pub struct ServerProcess {
    pub child: tokio::process::Child,
    pub channel: Channel,
    port: u16,
    /// Dropped after the child (fields drop in order), so the database outlives the server.
    pub _db: TestDatabase,
}

impl ServerProcess {
    /// Starts the binary with `args` after `serve`, migrating its own database, and waits until
    /// it is ready.
    pub async fn spawn(args: &[&str]) -> Self {
        let db = TestDatabase::create().await;
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let listen = format!("127.0.0.1:{port}");
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tally"))
            .args(["serve", "--migrate", "true", "--listen-addr", &listen])
            .args(args)
            .env("DATABASE_URL", &db.url)
            .env("REDIS_URL", redis_url())
            .env("RUST_LOG", "warn")
            .env_remove("TALLY_TOKEN_KEY")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start tally serve");
        let url = format!("http://{listen}/readyz");
        let ready = eventually(Duration::from_secs(30), || {
            let url = url.clone();
            async move {
                reqwest::get(&url)
                    .await
                    .map(|r| r.status() == 200)
                    .unwrap_or(false)
            }
        })
        .await;
        assert!(ready.is_some(), "the server never became ready");
        let channel = Channel::from_shared(format!("http://{listen}"))
            .unwrap()
            .connect()
            .await
            .expect("connect to the server");
        Self {
            child,
            channel,
            port,
            _db: db,
        }
    }

    /// The port the server listens on.
    pub fn channel_port(&self) -> u16 {
        self.port
    }

    /// The server's peak resident set so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let pid = self.child.id().expect("the server is running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status")
    }
}
