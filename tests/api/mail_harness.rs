//! Real services for the mail tests: an SMTP server process (aiosmtpd, through
//! scripts/smtp_sink.py), throwaway `redis-server` processes, and the worker, in-process
//! (the same composition as `tally worker`) or as the real binary.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::OnceLock,
    time::Duration,
};

use clap::Parser as _;
use tally::{
    cli::{Cli, Command},
    config::{Environment, WorkerSettings},
    jobs::{JobMetrics, worker::Worker},
};
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::{Child, Command as Process},
    sync::oneshot,
};
use uuid::Uuid;

use crate::helpers::TestApp;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The venv python with aiosmtpd, installed once per test run by the project's own script.
fn smtp_python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = std::process::Command::new(format!("{ROOT}/scripts/tools.sh"))
            .arg("aiosmtpd")
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/tools.sh aiosmtpd");
        assert!(out.status.success(), "scripts/tools.sh aiosmtpd failed");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

/// A scratch folder removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One received mail: the verification id, the code and the link it carries.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    pub to: String,
    pub verification_id: String,
    pub code: String,
    pub link: String,
}

/// aiosmtpd on a free port, storing what it accepts in its own folder.
pub struct SmtpSink {
    pub port: u16,
    dir: TempDir,
    _child: Child,
}

impl SmtpSink {
    /// `flags`: see scripts/smtp_sink.py (`--refuse-first N`, `--refuse-always`, ...).
    pub async fn start(flags: &[&str]) -> Self {
        let dir = TempDir::new("tally-smtp");
        let mut child = Process::new(smtp_python())
            .arg(format!("{ROOT}/scripts/smtp_sink.py"))
            .arg("--dir")
            .arg(&dir.0)
            .args(flags)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the SMTP sink");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("SMTP sink starts within 20 s")
            .unwrap()
            .expect("SMTP sink prints its port");
        let port = line
            .strip_prefix("LISTENING ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected SMTP sink output {line:?}"));
        SmtpSink {
            port,
            dir,
            _child: child,
        }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// DATA commands seen, accepted or refused.
    pub fn attempts(&self) -> usize {
        std::fs::read_to_string(self.dir.0.join("attempts"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    /// Every accepted mail, parsed.
    pub fn mails(&self) -> Vec<ReceivedMail> {
        let mut mails = Vec::new();
        for entry in std::fs::read_dir(&self.dir.0).unwrap().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "txt") {
                let text = std::fs::read_to_string(&path).unwrap();
                let raw = std::fs::read_to_string(path.with_extension("eml")).unwrap();
                mails.push(parse_mail(&raw, &text));
            }
        }
        mails
    }

    /// Waits until at least `count` mails arrived (or `within` passed); returns them all.
    pub async fn wait_for(&self, count: usize, within: Duration) -> Vec<ReceivedMail> {
        let started = std::time::Instant::now();
        loop {
            let mails = self.mails();
            if mails.len() >= count || started.elapsed() > within {
                return mails;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn parse_mail(raw: &str, text: &str) -> ReceivedMail {
    let to = raw
        .lines()
        .find_map(|l| l.strip_prefix("To: "))
        .expect("a To header")
        .trim()
        .to_owned();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name:?} line in {text}"))
            .trim()
            .to_owned()
    };
    let link = text
        .lines()
        .find(|l| l.contains("/v1/verify_email?"))
        .unwrap_or_else(|| panic!("no link in {text}"))
        .trim()
        .to_owned();
    assert!(raw.contains("text/html"), "no HTML part in {raw}");
    ReceivedMail {
        to,
        verification_id: field("verification_id: "),
        code: field("code: "),
        link,
    }
}

/// A `redis-server` of our own on a free port, for outages we can cause.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = RedisServer { port, child: None };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on the same port, with no persistence, and waits until it answers.
    pub async fn restart(&mut self) {
        let child = Process::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server on PATH (scripts/services.sh installs it)");
        self.child = Some(child);
        let started = std::time::Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }
}

/// `tally worker` settings for `app`'s database and queue, with fast test timings.
pub fn worker_settings(app: &TestApp, smtp_url: &str, extra: &[&str]) -> WorkerSettings {
    let mut argv = worker_argv(app, smtp_url);
    argv.extend(extra.iter().map(|s| s.to_string()));
    match Cli::try_parse_from(argv)
        .expect("worker arguments parse")
        .command
    {
        Command::Worker(args) => args
            .settings(Environment::Development)
            .expect("worker settings are valid"),
        _ => unreachable!("worker was parsed"),
    }
}

/// The command line of a test worker (program name first).
pub fn worker_argv(app: &TestApp, smtp_url: &str) -> Vec<String> {
    [
        "tally",
        "worker",
        "--database-url",
        &app.db.url,
        "--redis-url",
        &app.settings.queue.redis_url,
        "--mail-queue",
        &app.settings.queue.queue,
        "--smtp-url",
        smtp_url,
        "--smtp-timeout-ms",
        "2000",
        "--outbox-lease-secs",
        "10",
        "--outbox-sweep-interval-ms",
        "100",
        "--queue-poll-ms",
        "100",
        "--mail-backoff-base-ms",
        "50",
        "--mail-backoff-max-ms",
        "400",
        "--public-url",
        "https://tally.example.com/",
        "--shutdown-drain-secs",
        "10",
        // Many workers share this process: each gets its own free port.
        "--metrics-addr",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A worker running in this process.
pub struct TestWorker {
    pub metrics: std::sync::Arc<JobMetrics>,
    /// The worker's `/metrics` listener.
    pub metrics_addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestWorker {
    pub async fn spawn(app: &TestApp, smtp_url: &str, extra: &[&str]) -> Self {
        // TEST_LOG=debug shows what the worker does (`cargo test -- --nocapture`).
        if let Ok(filter) = std::env::var("TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
        let worker =
            Worker::build_with_pool(worker_settings(app, smtp_url, extra), app.pool.clone())
                .expect("worker builds");
        let metrics = worker.metrics();
        let metrics_addr = worker
            .metrics_addr()
            .expect("the metrics listener is bound");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(worker.run_until_stopped(async {
            let _ = stopped.await;
        }));
        TestWorker {
            metrics,
            metrics_addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
