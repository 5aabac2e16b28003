//! Faults between the server and PostgreSQL, through a TCP proxy the test controls: while the
//! database is unreachable every call answers `UNAVAILABLE` (never `INTERNAL`, which is for
//! bugs) telling the client to retry with the same id, `/readyz` answers 503, and once the
//! database is back the same calls succeed, a transfer retried with its id applies once, and
//! the ledger is consistent.

use std::{
    net::SocketAddr,
    str::FromStr as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tonic::Code;

use crate::helpers::*;

/// Forwards connections to PostgreSQL until cut: then every open connection is dropped and new
/// ones are closed as they arrive, until restored.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    kill: watch::Sender<u64>,
}

impl Proxy {
    async fn start() -> Self {
        let server = sqlx::postgres::PgConnectOptions::from_str(&server_url()).unwrap();
        let upstream: SocketAddr = tokio::net::lookup_host((server.get_host(), server.get_port()))
            .await
            .expect("the PostgreSQL host resolves")
            .next()
            .expect("an address");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let (kill, _) = watch::channel(0u64);
        let (cut_flag, killer) = (cut.clone(), kill.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if cut_flag.load(Ordering::SeqCst) {
                    continue; // dropped: the connection closes at once
                }
                let mut dead = killer.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = dead.changed() => {}
                    }
                });
            }
        });
        Proxy { port, cut, kill }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.kill.send_modify(|generation| *generation += 1);
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

async fn readyz(app: &TestApp) -> u16 {
    reqwest::get(format!("http://{}/readyz", app.addr))
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn with_the_database_gone_calls_are_unavailable_and_a_retry_applies_once_when_it_returns() {
    let proxy = Proxy::start().await;
    let app = TestApp::spawn_through(proxy.port, &[]).await;
    let (banker, user) = (app.banker().await, unique("ft"));
    let token = app.signed_in(&user, &[]).await.access_token;
    let from = app.open_account(&token, "USD").await.account_id;
    let to = app.open_account(&token, "USD").await.account_id;
    app.deposit(&banker, &from, 1_000).await;
    assert_eq!(readyz(&app).await, 200);

    proxy.cut();
    let transfer = transfer_request(&from, &to, 250);
    let mut codes = Vec::new();
    for _ in 0..3 {
        let answer = app
            .transfers()
            .create_transfer(authed(&token, transfer.clone()))
            .await;
        let status = answer.expect_err("no database, no transfer");
        codes.push(status.code());
        if status.code() == Code::Unavailable {
            assert!(
                status.message().contains("retry") && status.message().contains("same id"),
                "{}",
                status.message()
            );
        }
    }
    // Reads and sign-ins too: unavailable (or out of time), never a bug.
    codes.push(app.get_account(&token, &from).await.unwrap_err().code());
    codes.push(app.login(&user, PASSWORD).await.unwrap_err().code());
    assert!(
        codes
            .iter()
            .all(|c| matches!(c, Code::Unavailable | Code::DeadlineExceeded)),
        "{codes:?}"
    );
    assert!(codes.contains(&Code::Unavailable), "{codes:?}");
    assert_eq!(readyz(&app).await, 503, "not ready without the database");

    proxy.restore();
    let back = eventually(Duration::from_secs(10), || async {
        readyz(&app).await == 200
    })
    .await;
    assert!(back.is_some(), "ready again once the database is back");
    // The same transfer, resent with its id: applied once, whatever the failed attempts did.
    let done = eventually(Duration::from_secs(10), || async {
        app.transfers()
            .create_transfer(authed(&token, transfer.clone()))
            .await
            .is_ok()
    })
    .await;
    assert!(
        done.is_some(),
        "the retry succeeds once the database is back"
    );
    app.transfers()
        .create_transfer(authed(&token, transfer.clone()))
        .await
        .unwrap();
    assert_eq!(app.balance(&token, &from).await, 750);
    assert_eq!(app.balance(&token, &to).await, 250);
    let report = app.verify().await;
    assert!(report.is_consistent(), "{report:?}");
}
