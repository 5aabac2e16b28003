//! `tally bench`: a load generator that speaks gRPC (or JSON through the gateway) to a running
//! server.
//!
//! It logs in (the user must be a banker or admin: it deposits), opens and funds `--accounts`
//! accounts (or reuses the ones `--accounts-file` lists), then runs `--clients` concurrent
//! clients for `--seconds`. Each call is one CreateTransfer, or with `--batch N` one
//! CreateTransfers of N transfers, between random accounts (`uniform`) or only among the first
//! `--hot-accounts` (`hot`, where nearly every transfer conflicts).
//!
//! By default each client sends its next call as soon as the last one is answered (closed
//! loop). With `--rate R` the clients together send R calls per second on a fixed schedule and
//! a call's latency runs from the time it was due, not from when it was sent: a slow answer that
//! delays the calls behind it shows in their latencies instead of hiding them (no coordinated
//! omission).
//!
//! It prints transfers per second, call latency percentiles, the server-side retries (from the
//! `tally-attempts` response metadata) and errors by status code, counted per transfer;
//! `--summary-json` adds the same as one JSON line for scripts (`scripts/bench.sh`).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use serde::Serialize;
use tonic::{Code, Request, metadata::MetadataValue, transport::Channel};
use uuid::Uuid;

use crate::{
    ledger::transfers::TRANSFERS_PER_CALL_MAX,
    proto::ATTEMPTS_HEADER,
    proto::tally_v1::{
        self as pb, account_service_client::AccountServiceClient,
        create_transfer_result::Result as ItemResult, session_service_client::SessionServiceClient,
        transfer_service_client::TransferServiceClient,
    },
};

/// Tasks that open and fund the accounts side by side: enough to fill the server's group
/// commit with deposits, few enough not to matter next to the run's clients.
const SETUP_TASKS: usize = 8;
/// Largest amount of one bench transfer, in minor units; with the default funding no account
/// runs dry within any run this tool allows.
const TRANSFER_AMOUNT_MAX: i64 = 100;
/// The most calls per second `--rate` accepts.
const RATE_MAX: i64 = 1_000_000;
/// google.rpc.Code FAILED_PRECONDITION: a ledger rule refused the transfer.
const FAILED_PRECONDITION: i32 = Code::FailedPrecondition as i32;
/// The proto3 JSON name of a recorded transfer that a ledger rule failed.
const JSON_STATUS_FAILED: &str = "TRANSFER_STATUS_FAILED";
const MICROS_PER_MILLI: f64 = 1_000.0;
/// The report's labels column.
const LABEL_WIDTH: usize = 16;
/// How long a bench hold may wait for its post (it is posted at once).
const HOLD_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// The generated tonic client over HTTP/2.
    Grpc,
    /// HTTP/1.1 JSON through the gateway (`POST /v1/transfers`, `POST
    /// /v1/transfers:batchCreate`, `GET /v1/accounts/{id}`).
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Operation {
    /// CreateTransfer (or CreateTransfers, with `--batch`) between two accounts of the pool.
    Transfer,
    /// GetAccount of one account of the pool.
    GetAccount,
    /// A hold (CreateTransfer with `pending`) and then its PostTransfer: two calls per
    /// transfer, counted as one (gRPC only).
    HoldPost,
    /// GetAccountBalance of one account of the pool at a random instant of the last
    /// `--history-seconds` (gRPC only).
    BalanceAt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Any two of the accounts.
    Uniform,
    /// Only the first `--hot-accounts` accounts.
    Hot,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The server, as an http:// URL (h2c).
    #[arg(
        long,
        env = "TALLY_BENCH_ADDR",
        value_name = "TALLY_BENCH_ADDR",
        default_value = "http://127.0.0.1:8080"
    )]
    pub addr: String,
    /// A banker or admin.
    #[arg(
        long,
        env = "TALLY_BENCH_USERNAME",
        value_name = "TALLY_BENCH_USERNAME"
    )]
    pub username: String,
    #[arg(
        long,
        env = "TALLY_BENCH_PASSWORD",
        value_name = "TALLY_BENCH_PASSWORD",
        hide_env_values = true
    )]
    pub password: String,
    /// Accounts to open and fund (or to read from `--accounts-file`).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(2..=100_000))]
    pub accounts: u32,
    /// Reuse accounts: when this file exists, its first `--accounts` lines are the account ids;
    /// when it does not, the accounts are opened and funded and their ids written to it.
    #[arg(long, value_name = "PATH")]
    pub accounts_file: Option<PathBuf>,
    /// Only make the accounts ready (open and fund them, writing `--accounts-file`), then exit.
    #[arg(long, requires = "accounts_file")]
    pub setup_only: bool,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub clients: u32,
    /// How long the clients run.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub seconds: u64,
    #[arg(long, value_enum, default_value_t = Mode::Uniform)]
    pub mode: Mode,
    #[arg(long, value_enum, default_value_t = Protocol::Grpc)]
    pub protocol: Protocol,
    #[arg(long, value_enum, default_value_t = Operation::Transfer)]
    pub operation: Operation,
    /// Transfers per call: 1 sends CreateTransfer, more send CreateTransfers of that many
    /// (independent items, not linked, not atomic).
    #[arg(long, default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=TRANSFERS_PER_CALL_MAX as i64))]
    pub batch: u32,
    /// Calls per second across all clients, on a fixed schedule; latency counts from when each
    /// call was due. Unset: each client calls again as soon as it is answered.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=RATE_MAX))]
    pub rate: Option<u32>,
    /// Accounts the hot mode uses.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(2..=1_000))]
    pub hot_accounts: u32,
    #[arg(long, default_value = "USD")]
    pub currency: String,
    /// Deposited into each account before the run, in minor units.
    #[arg(long, default_value_t = 100_000_000)]
    pub initial_balance: i64,
    /// `--operation balance-at` asks for instants this far back at most.
    #[arg(long, default_value_t = 7_200, value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub history_seconds: u64,
    /// HTTP/2 connections the clients share.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub connections: u32,
    /// After the report, print the run as one line of JSON.
    #[arg(long)]
    pub summary_json: bool,
    /// A process on this machine (the server) whose CPU time over the run is reported: utime
    /// plus stime from `/proc/PID/stat` (Linux), read just before the clients start and just
    /// after they finish, so the login and account setup are not counted.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Also read the change feed's Redis stream at this URL over the run and report its lag
    /// (from each event's transaction to its arrival here).
    #[arg(long, value_name = "REDIS_URL", requires = "feed_stream")]
    pub feed_redis_url: Option<String>,
    /// The stream `--feed-redis-url` reads (the server's TALLY_EVENTS_STREAM).
    #[arg(long, value_name = "STREAM")]
    pub feed_stream: Option<String>,
    /// Also watch the first account of the pool (WatchAccount) and report its events' lag.
    #[arg(long)]
    pub watch_lag: bool,
}

mod lag;

/// How long the lag consumers keep reading after the clients stop, for the run's last events.
const LAG_TAIL: Duration = Duration::from_secs(2);

fn authed<T>(token: &str, message: T) -> anyhow::Result<Request<T>> {
    let mut request = Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {token}").parse()?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

/// What one transfer (or read) of a call came to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    /// Refused by a ledger rule: FAILED_PRECONDITION, or recorded with status FAILED.
    Refused,
    /// Not applied; the status code's name (`Aborted`, ...) or what went wrong on the wire.
    Error(String),
}

/// One call's answer.
#[derive(Debug)]
struct Answer {
    /// Transaction attempts the server reported for the call (1 when it reported none). Every
    /// transfer of a call shares one transaction: the engine never splits a submission.
    attempts: u64,
    /// One per transfer (or read) the call carried.
    outcomes: Vec<Outcome>,
}

impl Answer {
    /// The whole call failed: every transfer it carried has the same outcome.
    fn failed(outcome: Outcome, items: usize) -> Self {
        Self {
            attempts: 1,
            outcomes: vec![outcome; items],
        }
    }
}

#[derive(Debug, Default)]
struct Tally {
    /// Per call, microseconds from when it was due (when it was sent, in a closed loop) to its
    /// answer.
    latencies_us: Vec<u64>,
    succeeded: u64,
    refused: u64,
    /// Server-side transaction retries, summed over the transfers whose transaction committed
    /// (succeeded or refused): a retried batch of 100 counts 100.
    retries: u64,
    /// Transfers (or reads) not applied, by status code.
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn record(&mut self, latency: Duration, answer: Answer) {
        self.latencies_us.push(latency.as_micros() as u64);
        let retries = answer.attempts.saturating_sub(1);
        for outcome in answer.outcomes {
            match outcome {
                Outcome::Succeeded => {
                    self.succeeded += 1;
                    self.retries += retries;
                }
                Outcome::Refused => {
                    self.refused += 1;
                    self.retries += retries;
                }
                Outcome::Error(code) => *self.errors.entry(code).or_default() += 1,
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.succeeded += other.succeeded;
        self.refused += other.refused;
        self.retries += other.retries;
        for (code, n) in other.errors {
            *self.errors.entry(code).or_default() += n;
        }
    }
}

/// One run, as `--summary-json` prints it. Latencies are per call, in milliseconds.
#[derive(Debug, Serialize)]
struct Summary {
    operation: Operation,
    protocol: Protocol,
    mode: Mode,
    clients: u32,
    /// Transfers per call.
    batch: u32,
    /// The calls per second asked for; none in a closed loop.
    rate: Option<u32>,
    accounts: usize,
    seconds: f64,
    calls: u64,
    succeeded: u64,
    refused: u64,
    retries: u64,
    errors: BTreeMap<String, u64>,
    /// The `Aborted` count of `errors`: retries exhausted, certainly not applied.
    aborted: u64,
    /// Succeeded transfers (or reads) per second.
    per_second: f64,
    /// CPU time `--server-pid` spent over the run, in clock ticks (`getconf CLK_TCK` a second).
    server_cpu_ticks: Option<u64>,
    calls_per_second: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    mean_ms: f64,
    /// With `--feed-redis-url`: the Redis stream's lag over the run.
    stream_lag: Option<lag::Lags>,
    /// With `--watch-lag`: a WatchAccount stream's lag over the run.
    watch_lag: Option<lag::Lags>,
}

impl Summary {
    fn new(
        args: &BenchArgs,
        accounts: usize,
        tally: &Tally,
        elapsed: Duration,
        server_cpu_ticks: Option<u64>,
    ) -> Self {
        let mut sorted = tally.latencies_us.clone();
        sorted.sort_unstable();
        let secs = elapsed.as_secs_f64();
        let calls = sorted.len() as u64;
        let mean_ms = if sorted.is_empty() {
            0.0
        } else {
            sorted.iter().sum::<u64>() as f64 / sorted.len() as f64 / MICROS_PER_MILLI
        };
        Self {
            operation: args.operation,
            protocol: args.protocol,
            mode: args.mode,
            clients: args.clients,
            batch: args.batch,
            rate: args.rate,
            accounts,
            seconds: secs,
            calls,
            succeeded: tally.succeeded,
            refused: tally.refused,
            retries: tally.retries,
            aborted: tally
                .errors
                .get(&format!("{:?}", Code::Aborted))
                .copied()
                .unwrap_or(0),
            errors: tally.errors.clone(),
            per_second: per_second(tally.succeeded, secs),
            server_cpu_ticks,
            calls_per_second: per_second(calls, secs),
            p50_ms: percentile(&sorted, 50.0),
            p90_ms: percentile(&sorted, 90.0),
            p99_ms: percentile(&sorted, 99.0),
            max_ms: sorted.last().copied().unwrap_or(0) as f64 / MICROS_PER_MILLI,
            mean_ms,
            stream_lag: None,
            watch_lag: None,
        }
    }
}

fn per_second(n: u64, secs: f64) -> f64 {
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

/// The combinations of options that make no sense.
fn check_options(args: &BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.batch == 1 || args.operation == Operation::Transfer,
        "--batch applies to --operation transfer only"
    );
    anyhow::ensure!(
        !matches!(args.operation, Operation::HoldPost | Operation::BalanceAt)
            || args.protocol == Protocol::Grpc,
        "--operation {:?} speaks gRPC only",
        args.operation
    );
    anyhow::ensure!(
        args.mode == Mode::Uniform || args.hot_accounts <= args.accounts,
        "--hot-accounts ({}) is more than --accounts ({})",
        args.hot_accounts,
        args.accounts
    );
    Ok(())
}

/// `--connections` HTTP/2 connections to the server, and an access token of the bench user.
async fn connect(args: &BenchArgs) -> anyhow::Result<(Vec<Channel>, String)> {
    let mut channels = Vec::new();
    for _ in 0..args.connections {
        channels.push(
            Channel::from_shared(args.addr.clone())?
                .connect()
                .await
                .with_context(|| format!("connecting to {}", args.addr))?,
        );
    }
    let token = SessionServiceClient::new(channels[0].clone())
        .login(pb::LoginRequest {
            username: args.username.clone(),
            password: args.password.clone(),
        })
        .await
        .context("login")?
        .into_inner()
        .access_token;
    Ok((channels, token))
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    check_options(&args)?;
    let (channels, token) = connect(&args).await?;
    let accounts = ready_accounts(&args, &channels[0], &token).await?;
    if args.setup_only {
        eprintln!("bench: {} accounts ready", accounts.len());
        return Ok(());
    }
    let pool: Vec<String> = match args.mode {
        Mode::Uniform => accounts,
        Mode::Hot => accounts
            .into_iter()
            .take(args.hot_accounts as usize)
            .collect(),
    };
    let pacing = match args.rate {
        Some(rate) => format!("paced at {rate} calls/s in total"),
        None => "closed loop".to_owned(),
    };
    eprintln!(
        "bench: {} clients ({pacing}), {:?} x{} {:?} over {:?}, {:?} mode over {} accounts, {} s",
        args.clients,
        args.operation,
        args.batch,
        args.protocol,
        args.addr,
        args.mode,
        pool.len(),
        args.seconds
    );
    // One HTTP/1.1 keep-alive pool shared by the JSON clients (one connection per client).
    let http = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(args.clients as usize)
        .build()?;

    let server_ticks_before = args.server_pid.map(cpu_ticks).transpose()?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let since = time::OffsetDateTime::now_utc();
    let stream_lag = match (&args.feed_redis_url, &args.feed_stream) {
        (Some(url), Some(stream)) => Some(tokio::spawn(lag::stream(
            url.clone(),
            stream.clone(),
            since,
            deadline + LAG_TAIL,
        ))),
        _ => None,
    };
    let watch_lag = args.watch_lag.then(|| {
        tokio::spawn(lag::watch(
            channels[0].clone(),
            token.clone(),
            pool[0].clone(),
            since,
            deadline + LAG_TAIL,
        ))
    });
    let mut tasks = Vec::new();
    for i in 0..args.clients as usize {
        let target = Target {
            channel: channels[i % channels.len()].clone(),
            http: http.clone(),
            base: args.addr.trim_end_matches('/').to_owned(),
            protocol: args.protocol,
            operation: args.operation,
            batch: args.batch as usize,
            token: token.clone(),
            currency: args.currency.clone(),
            history: Duration::from_secs(args.history_seconds),
        };
        let schedule = args.rate.map(|rate| Schedule {
            start: started,
            index: i as u64,
            clients: u64::from(args.clients),
            rate: f64::from(rate),
        });
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            client(target, pool, schedule, deadline).await
        }));
    }
    let mut total = Tally::default();
    for task in tasks {
        total.merge(task.await??);
    }
    let elapsed = started.elapsed();
    let server_cpu_ticks = match (args.server_pid, server_ticks_before) {
        (Some(pid), Some(before)) => Some(cpu_ticks(pid)?.saturating_sub(before)),
        _ => None,
    };
    let mut summary = Summary::new(&args, pool.len(), &total, elapsed, server_cpu_ticks);
    if let Some(task) = stream_lag {
        summary.stream_lag = Some(task.await??);
    }
    if let Some(task) = watch_lag {
        summary.watch_lag = Some(task.await??);
    }
    print!("{}", report(&summary));
    if args.summary_json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(())
}

/// The accounts of the run: read from `--accounts-file` when it exists, else opened, funded and
/// (with `--accounts-file`) written there.
async fn ready_accounts(
    args: &BenchArgs,
    channel: &Channel,
    token: &str,
) -> anyhow::Result<Vec<String>> {
    if let Some(path) = &args.accounts_file
        && path.exists()
    {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        return account_ids(&text, args.accounts as usize)
            .with_context(|| format!("in {}", path.display()));
    }
    let ids = open_accounts(args, channel, token).await?;
    if let Some(path) = &args.accounts_file {
        write_accounts(path, &ids)?;
    }
    Ok(ids)
}

/// The first `wanted` account ids of an accounts file (one per line).
fn account_ids(text: &str, wanted: usize) -> anyhow::Result<Vec<String>> {
    let ids: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .take(wanted)
        .map(str::to_owned)
        .collect();
    anyhow::ensure!(
        ids.len() == wanted,
        "{} account ids, fewer than --accounts {wanted}",
        ids.len()
    );
    Ok(ids)
}

fn write_accounts(path: &Path, ids: &[String]) -> anyhow::Result<()> {
    let mut text = ids.join("\n");
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Opens and funds `--accounts` accounts with [`SETUP_TASKS`] tasks side by side; the ids come
/// back in the order of the accounts' names (`bench 0`, `bench 1`, ...).
async fn open_accounts(
    args: &BenchArgs,
    channel: &Channel,
    token: &str,
) -> anyhow::Result<Vec<String>> {
    let n = args.accounts as usize;
    let mut tasks = Vec::new();
    for first in 0..SETUP_TASKS.min(n) {
        let (channel, token) = (channel.clone(), token.to_owned());
        let (currency, balance) = (args.currency.clone(), args.initial_balance);
        tasks.push(tokio::spawn(async move {
            let mut accounts = AccountServiceClient::new(channel);
            let mut opened = Vec::new();
            for i in (first..n).step_by(SETUP_TASKS) {
                let account = accounts
                    .create_account(authed(
                        &token,
                        pb::CreateAccountRequest {
                            currency: currency.clone(),
                            owner: None,
                            name: Some(format!("bench {i}")),
                            overdraft_limit: None,
                        },
                    )?)
                    .await
                    .context("opening an account (is TALLY_ACCOUNTS_PER_OWNER_MAX high enough?)")?
                    .into_inner();
                accounts
                    .deposit(authed(
                        &token,
                        pb::DepositRequest {
                            account_id: account.account_id.clone(),
                            request_id: Uuid::new_v4().to_string(),
                            amount: balance,
                            memo: Some("bench funding".into()),
                        },
                    )?)
                    .await
                    .context("funding an account (the bench user must be a banker or admin)")?;
                opened.push((i, account.account_id));
            }
            anyhow::Ok(opened)
        }));
    }
    let mut ids = vec![String::new(); n];
    for task in tasks {
        for (i, id) in task.await?? {
            ids[i] = id;
        }
    }
    Ok(ids)
}

/// Where and how one client sends its calls.
struct Target {
    channel: Channel,
    http: reqwest::Client,
    base: String,
    protocol: Protocol,
    operation: Operation,
    batch: usize,
    token: String,
    currency: String,
    /// How far back `--operation balance-at` asks.
    history: Duration,
}

/// When the calls of one paced client are due: client `index` of `clients` sends its k-th call
/// at `start + (index + k * clients) / rate` seconds, so together the clients send `rate` calls
/// per second, evenly interleaved.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    start: Instant,
    index: u64,
    clients: u64,
    rate: f64,
}

impl Schedule {
    fn offset(&self, k: u64) -> Duration {
        Duration::from_secs_f64((self.index + k * self.clients) as f64 / self.rate)
    }
}

async fn client(
    target: Target,
    pool: Vec<String>,
    schedule: Option<Schedule>,
    deadline: Instant,
) -> anyhow::Result<Tally> {
    let mut transfers = TransferServiceClient::new(target.channel.clone());
    let mut accounts = AccountServiceClient::new(target.channel.clone());
    let mut tally = Tally::default();
    for k in 0.. {
        let due = match &schedule {
            Some(schedule) => {
                let due = schedule.start + schedule.offset(k);
                if due >= deadline {
                    break;
                }
                // Late (the last answer came after this call was due): send at once, and the
                // lateness counts in this call's latency.
                tokio::time::sleep_until(due.into()).await;
                due
            }
            None => {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                now
            }
        };
        let answer = match target.operation {
            Operation::Transfer => {
                let batch: Vec<_> = (0..target.batch)
                    .map(|_| random_transfer(&pool, &target.currency))
                    .collect();
                send_transfers(&target, &mut transfers, batch).await?
            }
            Operation::GetAccount => {
                let account_id = pool[rand::random_range(0..pool.len())].clone();
                get_account(&target, &mut accounts, account_id).await?
            }
            Operation::HoldPost => {
                hold_and_post(
                    &target,
                    &mut transfers,
                    random_transfer(&pool, &target.currency),
                )
                .await?
            }
            Operation::BalanceAt => {
                let account_id = pool[rand::random_range(0..pool.len())].clone();
                let back = target.history.mul_f64(rand::random::<f64>());
                let as_of = std::time::SystemTime::now() - back;
                balance_at(&target, &mut accounts, account_id, as_of).await?
            }
        };
        tally.record(due.elapsed(), answer);
    }
    Ok(tally)
}

fn random_transfer(pool: &[String], currency: &str) -> pb::CreateTransferRequest {
    let from = rand::random_range(0..pool.len());
    let to = (from + rand::random_range(1..pool.len())) % pool.len();
    pb::CreateTransferRequest {
        transfer_id: Uuid::new_v4().to_string(),
        from_account_id: pool[from].clone(),
        to_account_id: pool[to].clone(),
        amount: rand::random_range(1..=TRANSFER_AMOUNT_MAX),
        currency: currency.to_owned(),
        memo: None,
        linked: false,
        pending: false,
        timeout: None,
    }
}

/// One CreateTransfer (a batch of one) or one CreateTransfers call.
async fn send_transfers(
    target: &Target,
    client: &mut TransferServiceClient<Channel>,
    mut batch: Vec<pb::CreateTransferRequest>,
) -> anyhow::Result<Answer> {
    let items = batch.len();
    Ok(match (target.protocol, items) {
        (Protocol::Grpc, 1) => {
            let request = authed(&target.token, batch.pop().expect("one transfer"))?;
            match client.create_transfer(request).await {
                Ok(response) => Answer {
                    attempts: grpc_attempts(response.metadata()),
                    outcomes: vec![transfer_outcome(response.get_ref().status)],
                },
                Err(status) => Answer::failed(status_outcome(status.code() as i32), 1),
            }
        }
        (Protocol::Grpc, _) => {
            let request = authed(
                &target.token,
                pb::CreateTransfersRequest {
                    transfers: batch,
                    atomic: false,
                },
            )?;
            match client.create_transfers(request).await {
                Ok(response) => Answer {
                    attempts: grpc_attempts(response.metadata()),
                    outcomes: batch_outcomes(response.get_ref()),
                },
                Err(status) => Answer::failed(status_outcome(status.code() as i32), items),
            }
        }
        (Protocol::Json, 1) => {
            let body = json_transfer(&batch[0]);
            let sent = target
                .http
                .post(format!("{}/v1/transfers", target.base))
                .bearer_auth(&target.token)
                .json(&body)
                .send()
                .await;
            json_answer(sent, 1, |body| vec![json_transfer_outcome(body)]).await
        }
        (Protocol::Json, _) => {
            let body = serde_json::json!({
                "transfers": batch.iter().map(json_transfer).collect::<Vec<_>>(),
            });
            let sent = target
                .http
                .post(format!("{}/v1/transfers:batchCreate", target.base))
                .bearer_auth(&target.token)
                .json(&body)
                .send()
                .await;
            json_answer(sent, items, |body| json_batch_outcomes(body, items)).await
        }
    })
}

/// A hold, then its post of the whole amount; one outcome for the pair, the attempts of both.
async fn hold_and_post(
    target: &Target,
    client: &mut TransferServiceClient<Channel>,
    transfer: pb::CreateTransferRequest,
) -> anyhow::Result<Answer> {
    let hold = pb::CreateTransferRequest {
        pending: true,
        timeout: Some(HOLD_TIMEOUT.try_into()?),
        ..transfer
    };
    let held = match client.create_transfer(authed(&target.token, hold)?).await {
        Ok(response) => response,
        Err(status) => return Ok(Answer::failed(status_outcome(status.code() as i32), 1)),
    };
    let attempts = grpc_attempts(held.metadata());
    let post = pb::PostTransferRequest {
        transfer_id: held.into_inner().transfer_id,
        amount: None,
    };
    Ok(
        match client.post_transfer(authed(&target.token, post)?).await {
            Ok(response) => Answer {
                // The pair retried as often as both calls did.
                attempts: attempts + grpc_attempts(response.metadata()) - 1,
                outcomes: vec![transfer_outcome(response.get_ref().status)],
            },
            Err(status) => Answer::failed(status_outcome(status.code() as i32), 1),
        },
    )
}

async fn balance_at(
    target: &Target,
    client: &mut AccountServiceClient<Channel>,
    account_id: String,
    as_of: std::time::SystemTime,
) -> anyhow::Result<Answer> {
    let request = pb::GetAccountBalanceRequest {
        account_id,
        as_of: Some(as_of.into()),
    };
    Ok(
        match client
            .get_account_balance(authed(&target.token, request)?)
            .await
        {
            Ok(_) => Answer {
                attempts: 1,
                outcomes: vec![Outcome::Succeeded],
            },
            Err(status) => Answer::failed(status_outcome(status.code() as i32), 1),
        },
    )
}

async fn get_account(
    target: &Target,
    client: &mut AccountServiceClient<Channel>,
    account_id: String,
) -> anyhow::Result<Answer> {
    Ok(match target.protocol {
        Protocol::Grpc => {
            let request = authed(&target.token, pb::GetAccountRequest { account_id })?;
            match client.get_account(request).await {
                Ok(_) => Answer {
                    attempts: 1,
                    outcomes: vec![Outcome::Succeeded],
                },
                Err(status) => Answer::failed(status_outcome(status.code() as i32), 1),
            }
        }
        Protocol::Json => {
            let sent = target
                .http
                .get(format!("{}/v1/accounts/{account_id}", target.base))
                .bearer_auth(&target.token)
                .send()
                .await;
            json_answer(sent, 1, |_| vec![Outcome::Succeeded]).await
        }
    })
}

fn grpc_attempts(metadata: &tonic::metadata::MetadataMap) -> u64 {
    metadata
        .get(ATTEMPTS_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// A recorded transfer: succeeded, or failed by a ledger rule.
fn transfer_outcome(status: i32) -> Outcome {
    if status == pb::TransferStatus::Failed as i32 {
        Outcome::Refused
    } else {
        Outcome::Succeeded
    }
}

/// A google.rpc.Code other than OK.
fn status_outcome(code: i32) -> Outcome {
    if code == FAILED_PRECONDITION {
        Outcome::Refused
    } else {
        Outcome::Error(format!("{:?}", Code::from_i32(code)))
    }
}

/// Per item: a recorded transfer by its status, an error by its code.
fn batch_outcomes(response: &pb::CreateTransfersResponse) -> Vec<Outcome> {
    response
        .results
        .iter()
        .map(|result| match &result.result {
            Some(ItemResult::Transfer(transfer)) => transfer_outcome(transfer.status),
            Some(ItemResult::Error(status)) => status_outcome(status.code),
            None => Outcome::Error("empty result".into()),
        })
        .collect()
}

fn json_transfer(t: &pb::CreateTransferRequest) -> serde_json::Value {
    serde_json::json!({
        "transferId": t.transfer_id,
        "fromAccountId": t.from_account_id,
        "toAccountId": t.to_account_id,
        // proto3 JSON spells an int64 as a string.
        "amount": t.amount.to_string(),
        "currency": t.currency,
    })
}

fn json_transfer_outcome(transfer: &serde_json::Value) -> Outcome {
    if transfer["status"] == JSON_STATUS_FAILED {
        Outcome::Refused
    } else {
        Outcome::Succeeded
    }
}

/// Per item of a `CreateTransfersResponse` in proto3 JSON; a malformed body fails every item.
fn json_batch_outcomes(body: &serde_json::Value, items: usize) -> Vec<Outcome> {
    match body["results"].as_array() {
        Some(results) if results.len() == items => results
            .iter()
            .map(|result| {
                if result.get("transfer").is_some() {
                    json_transfer_outcome(&result["transfer"])
                } else {
                    match result["error"]["code"].as_i64() {
                        Some(code) => status_outcome(code as i32),
                        None => Outcome::Error("malformed result".into()),
                    }
                }
            })
            .collect(),
        _ => vec![Outcome::Error("malformed response".into()); items],
    }
}

/// The body is read to the end either way, so the connection goes back to the pool. An error
/// is told by the gRPC code in its JSON body (the gateway answers 400 for FAILED_PRECONDITION
/// and INVALID_ARGUMENT alike).
async fn json_answer(
    sent: reqwest::Result<reqwest::Response>,
    items: usize,
    outcomes: impl FnOnce(&serde_json::Value) -> Vec<Outcome>,
) -> Answer {
    /// Printed once per process, so a dead server does not flood the terminal.
    static TRANSPORT_ERROR_SHOWN: AtomicBool = AtomicBool::new(false);
    let response = match sent {
        Ok(response) => response,
        Err(err) => {
            if !TRANSPORT_ERROR_SHOWN.swap(true, Ordering::Relaxed) {
                eprintln!("bench: transport error: {err}");
            }
            return Answer::failed(Outcome::Error("transport".into()), items);
        }
    };
    let status = response.status();
    let attempts = response
        .headers()
        .get(format!("grpc-metadata-{ATTEMPTS_HEADER}"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let body = response.json::<serde_json::Value>().await.ok();
    match body {
        Some(body) if status.is_success() => Answer {
            attempts,
            outcomes: outcomes(&body),
        },
        Some(body) if body["code"].is_i64() => Answer::failed(
            status_outcome(body["code"].as_i64().unwrap_or(0) as i32),
            items,
        ),
        _ => Answer::failed(Outcome::Error(format!("HTTP {}", status.as_u16())), items),
    }
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    stat_cpu_ticks(&stat).with_context(|| format!("no utime and stime in {path}"))
}

/// utime + stime from the text of `/proc/PID/stat` (proc(5): fields 14 and 15). The command
/// name, field 2, is in parentheses and may hold spaces, so fields are counted after its `)`.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    /// utime's place among the fields after the command name (field 3, the state, is 0).
    const UTIME_AFTER_COMM: usize = 11;
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let utime: u64 = fields.nth(UTIME_AFTER_COMM)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64 / MICROS_PER_MILLI
}

fn report(s: &Summary) -> String {
    let unit = match s.operation {
        Operation::Transfer => "transfers/s",
        Operation::GetAccount => "reads/s",
        Operation::HoldPost => "holds posted/s",
        Operation::BalanceAt => "balances/s",
    };
    let pacing = match s.rate {
        Some(rate) => format!("paced, {rate} calls/s asked in total"),
        None => "closed loop".to_owned(),
    };
    let due = if s.rate.is_some() {
        ", from when it was due"
    } else {
        ""
    };
    let errors = if s.errors.is_empty() {
        "none".to_owned()
    } else {
        format!("{:?} (ABORTED {})", s.errors, s.aborted)
    };
    let lines = [
        (
            "operation",
            format!(
                "{:?} over {:?}, {} per call",
                s.operation, s.protocol, s.batch
            ),
        ),
        ("mode", format!("{:?} over {} accounts", s.mode, s.accounts)),
        ("clients", format!("{} ({pacing})", s.clients)),
        ("duration", format!("{:.1} s", s.seconds)),
        (
            unit,
            format!(
                "{:.0} ({} succeeded, {} refused by a rule; {} calls, {:.0} calls/s)",
                s.per_second, s.succeeded, s.refused, s.calls, s.calls_per_second
            ),
        ),
        (
            "latency ms",
            format!(
                "p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}  mean {:.2} (per call{due})",
                s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms, s.mean_ms
            ),
        ),
        (
            "retries",
            format!(
                "{} (server-side transaction retries, per transfer)",
                s.retries
            ),
        ),
        ("errors", errors),
        (
            "server CPU",
            match s.server_cpu_ticks {
                Some(ticks) => format!("{ticks} clock ticks (utime + stime of --server-pid)"),
                None => "not measured (no --server-pid)".to_owned(),
            },
        ),
    ];
    let lags = [
        ("stream lag ms", &s.stream_lag),
        ("watch lag ms", &s.watch_lag),
    ];
    let lags = lags.iter().filter_map(|(label, lags)| {
        lags.as_ref().map(|l| {
            (
                *label,
                format!(
                    "p50 {:.2}  p99 {:.2}  max {:.2} ({} events, from their transaction)",
                    l.p50_ms, l.p99_ms, l.max_ms, l.events
                ),
            )
        })
    });
    lines
        .into_iter()
        .chain(lags)
        .map(|(label, value)| format!("{label:<LABEL_WIDTH$}{value}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> BenchArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let mut argv = vec!["bench", "--username", "u", "--password", "p"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).expect("valid arguments").bench
    }

    fn transfer(status: pb::TransferStatus) -> pb::CreateTransferResult {
        pb::CreateTransferResult {
            result: Some(ItemResult::Transfer(pb::Transfer {
                status: status as i32,
                ..Default::default()
            })),
        }
    }

    fn error(code: Code) -> pb::CreateTransferResult {
        pb::CreateTransferResult {
            result: Some(ItemResult::Error(tonic_types::pb::Status {
                code: code as i32,
                ..Default::default()
            })),
        }
    }

    #[test]
    fn percentiles_pick_ranks() {
        let v: Vec<u64> = (1..=100).map(|i| i * 1_000).collect();
        assert_eq!(percentile(&v, 50.0), 51.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn batch_results_count_per_item() {
        let response = pb::CreateTransfersResponse {
            results: vec![
                transfer(pb::TransferStatus::Succeeded),
                transfer(pb::TransferStatus::Failed),
                error(Code::Aborted),
                error(Code::FailedPrecondition),
                transfer(pb::TransferStatus::Succeeded),
            ],
        };
        assert_eq!(
            batch_outcomes(&response),
            vec![
                Outcome::Succeeded,
                Outcome::Refused,
                Outcome::Error("Aborted".into()),
                Outcome::Refused,
                Outcome::Succeeded,
            ]
        );
    }

    #[test]
    fn json_batch_results_count_per_item() {
        let body = serde_json::json!({"results": [
            {"transfer": {"status": "TRANSFER_STATUS_SUCCEEDED"}},
            {"transfer": {"status": "TRANSFER_STATUS_FAILED"}},
            {"error": {"code": 10, "message": "retry"}},
        ]});
        assert_eq!(
            json_batch_outcomes(&body, 3),
            vec![
                Outcome::Succeeded,
                Outcome::Refused,
                Outcome::Error("Aborted".into())
            ]
        );
        // A body that does not answer every item fails them all, rather than miscounting.
        assert_eq!(
            json_batch_outcomes(&body, 4),
            vec![Outcome::Error("malformed response".into()); 4]
        );
    }

    #[test]
    fn tally_counts_transfers_and_their_retries() {
        let mut tally = Tally::default();
        tally.record(
            Duration::from_millis(3),
            Answer {
                attempts: 3,
                outcomes: vec![Outcome::Succeeded, Outcome::Refused, Outcome::Succeeded],
            },
        );
        tally.record(
            Duration::from_millis(1),
            Answer::failed(Outcome::Error("Aborted".into()), 2),
        );
        let mut other = Tally::default();
        other.record(
            Duration::from_millis(2),
            Answer {
                attempts: 1,
                outcomes: vec![Outcome::Error("Unavailable".into())],
            },
        );
        tally.merge(other);
        assert_eq!((tally.succeeded, tally.refused), (2, 1));
        // Two retries each for the three transfers whose transaction committed.
        assert_eq!(tally.retries, 6);
        assert_eq!(
            tally.errors,
            BTreeMap::from([("Aborted".into(), 2), ("Unavailable".into(), 1)])
        );

        let args = args(&["--batch", "3", "--clients", "2"]);
        let s = Summary::new(&args, 10, &tally, Duration::from_secs(2), Some(7));
        assert_eq!((s.calls, s.succeeded, s.aborted), (3, 2, 2));
        assert_eq!((s.per_second, s.calls_per_second), (1.0, 1.5));
        assert_eq!((s.p50_ms, s.max_ms, s.mean_ms), (2.0, 3.0, 2.0));
        let json: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        // The fields scripts/bench.sh reads.
        for field in [
            "per_second",
            "p50_ms",
            "p99_ms",
            "mean_ms",
            "retries",
            "aborted",
            "server_cpu_ticks",
        ] {
            assert!(json[field].is_number(), "{field} in {json}");
        }
        assert_eq!(json["protocol"], "grpc");
        assert_eq!(json["errors"]["Aborted"], 2);
        let text = report(&s);
        assert!(
            text.contains("transfers/s     1 (2 succeeded, 1 refused"),
            "{text}"
        );
        assert!(text.contains("ABORTED 2"), "{text}");
    }

    #[test]
    fn paced_clients_interleave_evenly() {
        let start = Instant::now();
        let at = |index, k| {
            Schedule {
                start,
                index,
                clients: 4,
                rate: 100.0,
            }
            .offset(k)
        };
        // 100 calls/s over 4 clients: one call every 10 ms in all, every 40 ms per client.
        assert_eq!(at(0, 0), Duration::ZERO);
        assert_eq!(at(1, 0), Duration::from_millis(10));
        assert_eq!(at(3, 0), Duration::from_millis(30));
        assert_eq!(at(0, 1), Duration::from_millis(40));
        assert_eq!(at(2, 25), Duration::from_millis(1_020));
    }

    #[test]
    fn cpu_ticks_are_fields_14_and_15() {
        // A command name with a space and a parenthesis, as proc(5) allows.
        let stat = "4242 (tally (x) y) S 1 4242 4242 0 -1 4194560 1208 0 0 0 1500 230 0 0 20 0 \
                    11 0 123 456 789";
        assert_eq!(stat_cpu_ticks(stat), Some(1_730));
        assert_eq!(stat_cpu_ticks("4242 (tally) S 1 2"), None);
        assert!(cpu_ticks(std::process::id()).is_ok());
    }

    #[test]
    fn accounts_files_give_their_first_ids() {
        let text = "a\nb\n\nc\n";
        assert_eq!(account_ids(text, 2).unwrap(), vec!["a", "b"]);
        assert_eq!(account_ids(text, 3).unwrap(), vec!["a", "b", "c"]);
        assert!(account_ids(text, 4).is_err());
    }

    #[test]
    fn options_parse() {
        let a = args(&["--batch", "100", "--rate", "500", "--accounts-file", "ids"]);
        assert_eq!((a.batch, a.rate), (100, Some(500)));
        assert_eq!(args(&[]).batch, 1);
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let too_big = (TRANSFERS_PER_CALL_MAX + 1).to_string();
        let base = ["bench", "--username", "u", "--password", "p"];
        assert!(Cli::try_parse_from(base.iter().copied().chain(["--batch", &too_big])).is_err());
        assert!(Cli::try_parse_from(base.iter().copied().chain(["--setup-only"])).is_err());
    }
}
