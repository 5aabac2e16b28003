//! The web console (`/console`) and the API explorer (`/docs`): static files embedded in the
//! binary, served by one tower layer in front of everything else.
//!
//! Why a layer of its own, outermost: these are files, not calls, so they skip the gateway, the
//! audit trail, the concurrency slots and the auth layer (the console's own API calls go
//! through all of those like any client's). Why embedded: `cargo build` and `make run` need no
//! Node.js and no files beside the binary; the console is hand-written ES modules and CSS, so
//! there is nothing to generate (docs/console.md says more).
//!
//! At start-up every asset gets a content-hashed name (`app.<hash>.js`), served
//! `immutable` for a year; the HTML pages that name them are `no-cache` (revalidated by ETag),
//! so a new binary's assets are picked up on the next load and never mixed with old ones. A
//! module's imports of other modules are rewritten to their hashed names, so the hash of a
//! module covers what it imports.
//!
//! Every answer carries the security headers: a strict Content-Security-Policy (scripts and
//! styles from this origin only, no inline script, no eval, no framing), `X-Frame-Options:
//! DENY`, `nosniff` and `Referrer-Policy: no-referrer` (a verification link's code must not
//! leak to anyone). The explorer's policy differs in one point only, written down at
//! [`EXPLORER_CSP`].

use std::{
    collections::HashMap,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use sha2::{Digest as _, Sha256};
use tower::{Layer, Service};

/// Where the console and the explorer are served.
pub const CONSOLE_PATH: &str = "/console";
pub const EXPLORER_PATH: &str = "/docs";
const CONSOLE_ASSETS: &str = "/console/assets/";
const EXPLORER_ASSETS: &str = "/docs/assets/";
/// What the console reads at start: the environment and the currency table.
pub const CONSOLE_CONFIG_PATH: &str = "/console/config.json";

/// The console's policy: everything from this origin only, nothing inline, no eval, no
/// plugins, no `<base>`, forms only to this origin, never framed.
pub const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; font-src 'self'; manifest-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
/// The explorer's: the console's, plus `data:` images. Swagger UI's stylesheet draws its icons
/// as `data:image/svg+xml` backgrounds; a `data:` image cannot run script, so this is the
/// narrowest exception that keeps the page whole. No inline script, no eval, no inline style
/// sheet.
pub const EXPLORER_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const REVALIDATE: &str = "no-cache";

/// One embedded source file.
struct Source {
    /// The name pages and modules refer to (`app.js`).
    name: &'static str,
    bytes: &'static [u8],
}

macro_rules! source {
    ($dir:literal, $name:literal) => {
        Source {
            name: $name,
            bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/", $dir, "/", $name)),
        }
    };
}

/// The console's files, leaves first: a module may import only those listed before it.
const CONSOLE_SOURCES: &[Source] = &[
    source!("src/console/assets", "app.css"),
    source!("src/console/assets", "favicon.svg"),
    source!("src/console/assets", "format.js"),
    source!("src/console/assets", "api.js"),
    source!("src/console/assets", "ui.js"),
    source!("src/console/assets", "app.js"),
];
const CONSOLE_PAGE: &str = include_str!("assets/index.html");

/// The explorer: Swagger UI as published (vendor/swagger-ui/), and our start-up script.
const EXPLORER_SOURCES: &[Source] = &[
    source!("vendor/swagger-ui", "swagger-ui.css"),
    source!("vendor/swagger-ui", "swagger-ui-bundle.js"),
    source!("src/console/assets", "explorer.css"),
    source!("src/console/assets", "explorer.js"),
    source!("src/console/assets", "favicon.svg"),
];
const EXPLORER_PAGE: &str = include_str!("assets/explorer.html");

/// What the console is told about the server it runs against.
#[derive(Debug, Clone)]
pub struct ConsoleOptions {
    /// `development` or `production`: the console explains where mail goes in development.
    pub environment: String,
    /// The ledger's currencies and their exponents, to format and parse amounts.
    pub currencies: Vec<(String, u8)>,
}

struct Asset {
    body: Bytes,
    content_type: &'static str,
    cache_control: &'static str,
    etag: HeaderValue,
    csp: &'static str,
}

/// Every file, by the path it is served at; built once at start-up.
pub struct Console {
    assets: HashMap<String, Asset>,
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("json") => "application/json",
        Some("html") => "text/html; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    hash[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// `app.js` → `app.<hash>.js`.
fn hashed_name(name: &str, hash: &str) -> String {
    match name.rsplit_once('.') {
        Some((stem, ext)) => format!("{stem}.{hash}.{ext}"),
        None => format!("{name}.{hash}"),
    }
}

fn etag(bytes: &[u8]) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{}\"", digest(bytes)))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// Hashes `sources` in order into `assets` under `prefix`; returns each name's served path.
/// A JavaScript module's `"./name.js"` imports of earlier sources become their hashed names.
fn add_hashed(
    assets: &mut HashMap<String, Asset>,
    prefix: &str,
    sources: &[Source],
    csp: &'static str,
) -> Vec<(&'static str, String)> {
    let mut served: Vec<(&'static str, String)> = Vec::new();
    for source in sources {
        let mut body = source.bytes.to_vec();
        if source.name.ends_with(".js")
            && let Ok(text) = std::str::from_utf8(source.bytes)
        {
            let mut text = text.to_owned();
            for (name, path) in &served {
                let hashed = path.rsplit('/').next().unwrap_or(path);
                text = text.replace(&format!("\"./{name}\""), &format!("\"./{hashed}\""));
            }
            body = text.into_bytes();
        }
        let path = format!("{prefix}{}", hashed_name(source.name, &digest(&body)));
        assets.insert(
            path.clone(),
            Asset {
                etag: etag(&body),
                body: Bytes::from(body),
                content_type: content_type(source.name),
                cache_control: IMMUTABLE,
                csp,
            },
        );
        served.push((source.name, path));
    }
    served
}

/// `page` with every `{{name}}` replaced by the served path of `name`.
fn render_page(page: &str, served: &[(&'static str, String)]) -> String {
    let mut page = page.to_owned();
    for (name, path) in served {
        page = page.replace(&format!("{{{{{name}}}}}"), path);
    }
    page
}

fn revalidated(body: Vec<u8>, content_type: &'static str, csp: &'static str) -> Asset {
    Asset {
        etag: etag(&body),
        body: Bytes::from(body),
        content_type,
        cache_control: REVALIDATE,
        csp,
    }
}

impl Console {
    pub fn new(options: &ConsoleOptions) -> Self {
        let mut assets = HashMap::new();
        let console = add_hashed(&mut assets, CONSOLE_ASSETS, CONSOLE_SOURCES, CONSOLE_CSP);
        let page = render_page(CONSOLE_PAGE, &console).into_bytes();
        for path in [CONSOLE_PATH.to_owned(), format!("{CONSOLE_PATH}/")] {
            assets.insert(
                path,
                revalidated(page.clone(), "text/html; charset=utf-8", CONSOLE_CSP),
            );
        }
        let config = serde_json::json!({
            "environment": options.environment,
            "currencies": options
                .currencies
                .iter()
                .map(|(code, exponent)| serde_json::json!({ "code": code, "exponent": exponent }))
                .collect::<Vec<_>>(),
        });
        assets.insert(
            CONSOLE_CONFIG_PATH.to_owned(),
            revalidated(
                serde_json::to_vec(&config).unwrap_or_default(),
                "application/json",
                CONSOLE_CSP,
            ),
        );
        let explorer = add_hashed(&mut assets, EXPLORER_ASSETS, EXPLORER_SOURCES, EXPLORER_CSP);
        assets.insert(
            EXPLORER_PATH.to_owned(),
            revalidated(
                render_page(EXPLORER_PAGE, &explorer).into_bytes(),
                "text/html; charset=utf-8",
                EXPLORER_CSP,
            ),
        );
        Self { assets }
    }

    /// Whether `path` is ours to answer (anything under `/console`, the explorer's page and
    /// assets), whatever the method.
    fn owns(path: &str) -> bool {
        path == CONSOLE_PATH
            || path.starts_with("/console/")
            || path == EXPLORER_PATH
            || path.starts_with(EXPLORER_ASSETS)
    }

    /// The answer to a request for a path we own.
    fn answer(&self, method: &Method, path: &str, headers: &HeaderMap) -> Response<Bytes> {
        let Some(asset) = self.assets.get(path) else {
            return plain(StatusCode::NOT_FOUND, "not found\n", CONSOLE_CSP);
        };
        if method != Method::GET && method != Method::HEAD {
            let mut response = plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "only GET and HEAD here\n",
                asset.csp,
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        let fresh = headers
            .get(header::IF_NONE_MATCH)
            .is_some_and(|tag| tag.as_bytes() == asset.etag.as_bytes());
        let (status, body) = if fresh {
            (StatusCode::NOT_MODIFIED, Bytes::new())
        } else if method == Method::HEAD {
            (StatusCode::OK, Bytes::new())
        } else {
            (StatusCode::OK, asset.body.clone())
        };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        let h = response.headers_mut();
        secure(h, asset.csp);
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(asset.cache_control),
        );
        h.insert(header::ETAG, asset.etag.clone());
        if method == Method::HEAD && !fresh {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(asset.body.len()));
        }
        response
    }

    /// The served paths and sizes of the hashed assets, for tests and logs.
    pub fn asset_paths(&self) -> impl Iterator<Item = (&str, usize)> {
        self.assets
            .iter()
            .filter(|(_, asset)| asset.cache_control == IMMUTABLE)
            .map(|(path, asset)| (path.as_str(), asset.body.len()))
    }
}

/// The headers every answer of ours carries.
fn secure(h: &mut HeaderMap, csp: &'static str) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
}

fn plain(status: StatusCode, text: &'static str, csp: &'static str) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from_static(text.as_bytes()));
    *response.status_mut() = status;
    let h = response.headers_mut();
    secure(h, csp);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(REVALIDATE));
    response
}

#[derive(Clone)]
pub struct ConsoleLayer {
    console: Arc<Console>,
}

impl ConsoleLayer {
    pub fn new(console: Arc<Console>) -> Self {
        Self { console }
    }
}

impl<S> Layer<S> for ConsoleLayer {
    type Service = ConsoleService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConsoleService {
            inner,
            console: self.console.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ConsoleService<S> {
    inner: S,
    console: Arc<Console>,
}

impl<S> Service<Request<tonic::body::Body>> for ConsoleService<S>
where
    S: Service<Request<tonic::body::Body>, Response = Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<tonic::body::Body>) -> Self::Future {
        let mut inner = crate::service::take_ready(&mut self.inner);
        if !Console::owns(request.uri().path()) {
            return Box::pin(async move { inner.call(request).await });
        }
        let response =
            self.console
                .answer(request.method(), request.uri().path(), request.headers());
        Box::pin(async move {
            Ok(response.map(|body| tonic::body::Body::new(http_body_util::Full::new(body))))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn console() -> Console {
        Console::new(&ConsoleOptions {
            environment: "development".into(),
            currencies: vec![("USD".into(), 2), ("JPY".into(), 0)],
        })
    }

    fn get(console: &Console, path: &str) -> Response<Bytes> {
        console.answer(&Method::GET, path, &HeaderMap::new())
    }

    #[test]
    fn the_page_names_hashed_assets_that_are_served_immutable() {
        let console = console();
        let page = get(&console, CONSOLE_PATH);
        assert_eq!(page.headers()[header::CACHE_CONTROL], "no-cache");
        let html = std::str::from_utf8(page.body()).unwrap();
        assert!(!html.contains("{{"), "an unreplaced placeholder: {html}");
        let script = html
            .split('"')
            .find(|s| s.starts_with("/console/assets/app.") && s.ends_with(".js"))
            .expect("the page loads app.<hash>.js");
        let asset = get(&console, script);
        assert_eq!(asset.status(), StatusCode::OK);
        assert_eq!(asset.headers()[header::CACHE_CONTROL], IMMUTABLE);
        // Its imports point at hashed modules that exist.
        let code = std::str::from_utf8(asset.body()).unwrap();
        for import in code.split('"').filter(|s| s.starts_with("./")) {
            let path = format!("{CONSOLE_ASSETS}{}", &import[2..]);
            assert_eq!(get(&console, &path).status(), StatusCode::OK, "{path}");
        }
    }

    #[test]
    fn every_answer_carries_the_security_headers_and_a_matching_etag_is_304() {
        let console = console();
        for path in [
            CONSOLE_PATH,
            EXPLORER_PATH,
            "/console/nothing",
            CONSOLE_CONFIG_PATH,
        ] {
            let response = get(&console, path);
            assert_eq!(
                response.headers()[header::X_FRAME_OPTIONS],
                "DENY",
                "{path}"
            );
            let csp = response.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap();
            assert!(csp.contains("frame-ancestors 'none'"), "{path}");
            assert!(!csp.contains("unsafe"), "{path}: {csp}");
        }
        let page = get(&console, CONSOLE_PATH);
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, page.headers()[header::ETAG].clone());
        let again = console.answer(&Method::GET, CONSOLE_PATH, &headers);
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    }

    #[test]
    fn the_config_lists_the_currencies_with_their_exponents() {
        let config: serde_json::Value =
            serde_json::from_slice(get(&console(), CONSOLE_CONFIG_PATH).body()).unwrap();
        assert_eq!(config["currencies"][1]["code"], "JPY");
        assert_eq!(config["currencies"][1]["exponent"], 0);
        assert_eq!(config["environment"], "development");
    }
}
