//! A rough, opt-in throughput comparison of the same RPCs over gRPC and over HTTP JSON (debug
//! build, one machine). Not a benchmark of record (that is `tally bench`, which does not exist
//! yet); it shows the gateway's overhead. Run with
//! `cargo test --test api gateway::throughput -- --ignored --nocapture`.

use std::time::{Duration, Instant};

use futures_util::{StreamExt as _, stream};
use tally::proto::tally_v1 as pb;

use crate::helpers::*;

const CALLS: usize = 2_000;
const CONCURRENCY: usize = 32;

async fn rate<F, Fut>(label: &str, call: F) -> f64
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    let ok = stream::iter(0..CALLS)
        .map(|_| call())
        .buffer_unordered(CONCURRENCY)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    let elapsed = started.elapsed().max(Duration::from_millis(1));
    assert_eq!(ok, CALLS, "{label}: some calls failed");
    let per_sec = CALLS as f64 / elapsed.as_secs_f64();
    println!("{label:<28} {per_sec:>8.0} calls/s");
    per_sec
}

#[tokio::test]
#[ignore = "a measurement, not a check; run on demand"]
async fn json_versus_grpc_throughput() {
    let app = TestApp::spawn().await;
    let me = unique("tp");
    let login = app.signed_in(&me, &[]).await;
    let token = login.access_token.clone();
    let http = reqwest::Client::new();
    let base = format!("http://{}", app.addr);

    for (rpc, path) in [
        ("ListRoles", "/v1/roles".to_owned()),
        ("GetUser", format!("/v1/users/{me}")),
    ] {
        let grpc = rate(&format!("{rpc} over gRPC"), || {
            let (mut roles, mut users) = (app.roles(), app.users());
            let (token, me) = (token.clone(), me.clone());
            async move {
                match rpc {
                    "ListRoles" => roles
                        .list_roles(authed(&token, pb::ListRolesRequest {}))
                        .await
                        .is_ok(),
                    _ => users
                        .get_user(authed(&token, pb::GetUserRequest { username: me }))
                        .await
                        .is_ok(),
                }
            }
        })
        .await;
        let json = rate(&format!("{rpc} over HTTP JSON"), || {
            let request = http.get(format!("{base}{path}")).bearer_auth(&token);
            async move {
                match request.send().await {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                }
            }
        })
        .await;
        println!("{rpc}: JSON / gRPC = {:.2}", json / grpc);
    }
}
