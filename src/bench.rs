//! `tally bench`: a load generator that speaks gRPC to a running server.
//!
//! It logs in (the user must be a banker or admin: it deposits), opens `--accounts` accounts,
//! funds each by a deposit, then runs `--clients` concurrent clients doing transfers for
//! `--seconds`: between random accounts (`uniform`) or only among the first `--hot-accounts`
//! (`hot`, where nearly every transfer conflicts). It prints transfers per second, latency
//! percentiles, the server-side retries (from the `tally-attempts` response metadata) and
//! errors by status code.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use tonic::{Code, Request, metadata::MetadataValue, transport::Channel};
use uuid::Uuid;

use crate::proto::tally_v1::{
    self as pb, account_service_client::AccountServiceClient,
    session_service_client::SessionServiceClient, transfer_service_client::TransferServiceClient,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// The generated tonic client over HTTP/2.
    Grpc,
    /// HTTP/1.1 JSON through the gateway (`POST /v1/transfers`, `GET /v1/accounts/{id}`).
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Operation {
    /// CreateTransfer between two accounts of the pool.
    Transfer,
    /// GetAccount of one account of the pool.
    GetAccount,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
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
    /// Accounts to open and fund.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(2..=100_000))]
    pub accounts: u32,
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
    /// Accounts the hot mode uses.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(2..=1_000))]
    pub hot_accounts: u32,
    #[arg(long, default_value = "USD")]
    pub currency: String,
    /// Deposited into each account before the run, in minor units.
    #[arg(long, default_value_t = 100_000_000)]
    pub initial_balance: i64,
    /// HTTP/2 connections the clients share.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub connections: u32,
}

fn authed<T>(token: &str, message: T) -> anyhow::Result<Request<T>> {
    let mut request = Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {token}").parse()?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

#[derive(Debug, Default)]
struct Tally {
    latencies_us: Vec<u64>,
    succeeded: u64,
    refused: u64,
    retries: u64,
    errors: BTreeMap<String, u64>,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
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

    let accounts = open_accounts(&args, &channels[0], &token).await?;
    let pool: Vec<String> = match args.mode {
        Mode::Uniform => accounts,
        Mode::Hot => accounts
            .into_iter()
            .take(args.hot_accounts as usize)
            .collect(),
    };
    eprintln!(
        "bench: {} clients, {:?} {:?} over {:?}, {:?} mode over {} accounts, {} s",
        args.clients,
        args.operation,
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

    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.clients as usize {
        let target = Target {
            channel: channels[i % channels.len()].clone(),
            http: http.clone(),
            base: args.addr.trim_end_matches('/').to_owned(),
            protocol: args.protocol,
            operation: args.operation,
        };
        let (token, pool, currency) = (token.clone(), pool.clone(), args.currency.clone());
        tasks.push(tokio::spawn(async move {
            client(target, token, pool, currency, deadline).await
        }));
    }
    let mut total = Tally::default();
    for task in tasks {
        let t = task.await??;
        total.latencies_us.extend(t.latencies_us);
        total.succeeded += t.succeeded;
        total.refused += t.refused;
        total.retries += t.retries;
        for (code, n) in t.errors {
            *total.errors.entry(code).or_default() += n;
        }
    }
    report(&args, &total, started.elapsed());
    Ok(())
}

async fn open_accounts(
    args: &BenchArgs,
    channel: &Channel,
    token: &str,
) -> anyhow::Result<Vec<String>> {
    let mut accounts_client = AccountServiceClient::new(channel.clone());
    let mut ids = Vec::new();
    for i in 0..args.accounts {
        let account = accounts_client
            .create_account(authed(
                token,
                pb::CreateAccountRequest {
                    currency: args.currency.clone(),
                    owner: None,
                    name: Some(format!("bench {i}")),
                },
            )?)
            .await
            .context("opening an account (is TALLY_ACCOUNTS_PER_OWNER_MAX high enough?)")?
            .into_inner();
        accounts_client
            .deposit(authed(
                token,
                pb::DepositRequest {
                    account_id: account.account_id.clone(),
                    request_id: Uuid::new_v4().to_string(),
                    amount: args.initial_balance,
                    memo: Some("bench funding".into()),
                },
            )?)
            .await
            .context("funding an account (the bench user must be a banker or admin)")?;
        ids.push(account.account_id);
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
}

/// What one call came to.
enum Outcome {
    /// Succeeded after this many server-side transaction attempts (1 for reads).
    Ok(u64),
    /// Refused by a ledger rule (FAILED_PRECONDITION).
    Refused,
    Error(String),
}

async fn client(
    target: Target,
    token: String,
    pool: Vec<String>,
    currency: String,
    deadline: Instant,
) -> anyhow::Result<Tally> {
    let mut transfers = TransferServiceClient::new(target.channel.clone());
    let mut accounts = AccountServiceClient::new(target.channel.clone());
    let mut tally = Tally::default();
    while Instant::now() < deadline {
        let from = rand::random_range(0..pool.len());
        let to = (from + rand::random_range(1..pool.len())) % pool.len();
        let request = pb::CreateTransferRequest {
            transfer_id: Uuid::new_v4().to_string(),
            from_account_id: pool[from].clone(),
            to_account_id: pool[to].clone(),
            amount: rand::random_range(1..=100),
            currency: currency.clone(),
            memo: None,
            linked: false,
        };
        let sent = Instant::now();
        let outcome = match (target.protocol, target.operation) {
            (Protocol::Grpc, Operation::Transfer) => {
                grpc_outcome(transfers.create_transfer(authed(&token, request)?).await)
            }
            (Protocol::Grpc, Operation::GetAccount) => grpc_outcome(
                accounts
                    .get_account(authed(
                        &token,
                        pb::GetAccountRequest {
                            account_id: pool[from].clone(),
                        },
                    )?)
                    .await,
            ),
            (Protocol::Json, Operation::Transfer) => {
                let body = serde_json::json!({
                    "transferId": request.transfer_id,
                    "fromAccountId": request.from_account_id,
                    "toAccountId": request.to_account_id,
                    "amount": request.amount.to_string(),
                    "currency": request.currency,
                });
                json_outcome(
                    target
                        .http
                        .post(format!("{}/v1/transfers", target.base))
                        .bearer_auth(&token)
                        .json(&body)
                        .send()
                        .await,
                )
                .await
            }
            (Protocol::Json, Operation::GetAccount) => {
                json_outcome(
                    target
                        .http
                        .get(format!("{}/v1/accounts/{}", target.base, pool[from]))
                        .bearer_auth(&token)
                        .send()
                        .await,
                )
                .await
            }
        };
        tally.latencies_us.push(sent.elapsed().as_micros() as u64);
        match outcome {
            Outcome::Ok(attempts) => {
                tally.succeeded += 1;
                tally.retries += attempts.saturating_sub(1);
            }
            Outcome::Refused => tally.refused += 1,
            Outcome::Error(code) => *tally.errors.entry(code).or_default() += 1,
        }
    }
    Ok(tally)
}

fn grpc_outcome<T>(result: Result<tonic::Response<T>, tonic::Status>) -> Outcome {
    match result {
        Ok(response) => Outcome::Ok(
            response
                .metadata()
                .get(crate::api::transfers::ATTEMPTS_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1),
        ),
        Err(status) if status.code() == Code::FailedPrecondition => Outcome::Refused,
        Err(status) => Outcome::Error(format!("{:?}", status.code())),
    }
}

/// The gateway answers 400 for FAILED_PRECONDITION and for INVALID_ARGUMENT, so a refusal is
/// told apart by the gRPC code in the JSON error body.
async fn json_outcome(result: reqwest::Result<reqwest::Response>) -> Outcome {
    /// google.rpc.Code FAILED_PRECONDITION.
    const FAILED_PRECONDITION: i64 = 9;
    match result {
        Ok(response) if response.status().is_success() => Outcome::Ok(
            response
                .headers()
                .get(format!(
                    "grpc-metadata-{}",
                    crate::api::transfers::ATTEMPTS_HEADER
                ))
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1),
        ),
        Ok(response) if response.status() == reqwest::StatusCode::BAD_REQUEST => {
            let code = response
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|body| body["code"].as_i64());
            match code {
                Some(FAILED_PRECONDITION) => Outcome::Refused,
                other => Outcome::Error(format!("HTTP 400, code {other:?}")),
            }
        }
        Ok(response) => Outcome::Error(format!("HTTP {}", response.status().as_u16())),
        Err(err) => Outcome::Error(format!("transport: {err}")),
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64 / 1_000.0
}

fn report(args: &BenchArgs, t: &Tally, elapsed: Duration) {
    let mut sorted = t.latencies_us.clone();
    sorted.sort_unstable();
    let calls = sorted.len() as f64;
    let secs = elapsed.as_secs_f64();
    println!(
        "operation       {:?} over {:?}",
        args.operation, args.protocol
    );
    println!("mode            {:?}", args.mode);
    println!("clients         {}", args.clients);
    println!("duration        {secs:.1} s");
    println!(
        "calls/s         {:.0} succeeded ({} succeeded, {} refused by a rule, {:.0} calls/s)",
        t.succeeded as f64 / secs,
        t.succeeded,
        t.refused,
        calls / secs
    );
    println!(
        "latency ms      p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        percentile(&sorted, 50.0),
        percentile(&sorted, 90.0),
        percentile(&sorted, 99.0),
        sorted.last().copied().unwrap_or(0) as f64 / 1_000.0
    );
    println!(
        "retries         {} (server-side transaction retries)",
        t.retries
    );
    if t.errors.is_empty() {
        println!("errors          none");
    } else {
        println!("errors          {:?}", t.errors);
    }
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_pick_ranks() {
        let v: Vec<u64> = (1..=100).map(|i| i * 1_000).collect();
        assert_eq!(percentile(&v, 50.0), 51.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
