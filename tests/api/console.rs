//! The web console and the API explorer as the real server serves them: the security headers
//! on every page, asset and error, content-hashed assets cached for a year, HTML revalidated,
//! and the files outside the auth layer (no token needed, nothing audited). That the pages
//! work under these headers is the browser test's part (scripts/console-test.sh).

use crate::helpers::TestApp;

async fn get(app: &TestApp, path: &str) -> reqwest::Response {
    reqwest::get(format!("http://{}{path}", app.addr))
        .await
        .unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("{} has no {name}", response.url()))
        .to_str()
        .unwrap()
}

/// What every answer under /console and /docs must say.
fn assert_secure(response: &reqwest::Response) {
    let csp = header(response, "content-security-policy");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(directive), "{}: {csp}", response.url());
    }
    // No inline script or style, no eval, anywhere.
    assert!(!csp.contains("unsafe-"), "{}: {csp}", response.url());
    assert_eq!(header(response, "x-frame-options"), "DENY");
    assert_eq!(header(response, "x-content-type-options"), "nosniff");
    assert_eq!(header(response, "referrer-policy"), "no-referrer");
}

/// The `/console/assets/...` and `/docs/assets/...` paths a page names.
fn assets_of(html: &str) -> Vec<String> {
    html.split('"')
        .filter(|s| s.starts_with("/console/assets/") || s.starts_with("/docs/assets/"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_console_and_the_explorer_are_served_with_strict_headers_and_hashed_immutable_assets() {
    let app = TestApp::spawn().await;
    for (page, at_least) in [("/console", 3), ("/console/", 3), ("/docs", 4)] {
        let response = get(&app, page).await;
        assert_eq!(response.status(), 200, "{page}");
        assert_secure(&response);
        assert_eq!(header(&response, "cache-control"), "no-cache", "{page}");
        assert!(header(&response, "content-type").starts_with("text/html"));
        let html = response.text().await.unwrap();
        assert!(!html.contains("<script>"), "{page} has an inline script");
        assert!(!html.contains(" style="), "{page} has an inline style");
        let assets = assets_of(&html);
        assert!(assets.len() >= at_least, "{page} names {assets:?}");
        for asset in assets {
            let response = get(&app, &asset).await;
            assert_eq!(response.status(), 200, "{asset}");
            assert_secure(&response);
            assert_eq!(
                header(&response, "cache-control"),
                "public, max-age=31536000, immutable",
                "{asset}"
            );
            // name.<16 hex digits>.ext
            let file = asset.rsplit('/').next().unwrap();
            let parts: Vec<&str> = file.split('.').collect();
            assert!(
                parts.len() >= 3
                    && parts[parts.len() - 2].len() == 16
                    && parts[parts.len() - 2]
                        .chars()
                        .all(|c| c.is_ascii_hexdigit()),
                "{asset} has no content hash"
            );
        }
    }
    // The explorer differs from the console's policy only by data: images (Swagger UI's icons).
    let explorer = get(&app, "/docs").await;
    assert!(header(&explorer, "content-security-policy").contains("img-src 'self' data:"));
    let console = get(&app, "/console").await;
    assert!(header(&console, "content-security-policy").contains("img-src 'self';"));
}

#[tokio::test]
async fn unknown_console_paths_are_404_with_the_same_headers_and_the_config_names_the_currencies() {
    let app = TestApp::spawn().await;
    let missing = get(&app, "/console/assets/app.0000000000000000.js").await;
    assert_eq!(missing.status(), 404);
    assert_secure(&missing);
    let config = get(&app, "/console/config.json").await;
    assert_eq!(config.status(), 200);
    assert_secure(&config);
    let config: serde_json::Value = config.json().await.unwrap();
    let usd = config["currencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["code"] == "USD")
        .expect("USD is a default currency");
    assert_eq!(usd["exponent"], 2);
    // Not a method of the console: 405 naming the allowed ones.
    let post = reqwest::Client::new()
        .post(format!("http://{}/console", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
    assert_eq!(header(&post, "allow"), "GET, HEAD");
}
