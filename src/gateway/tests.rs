//! Gateway tests on small protos compiled here (with protox), independent of tally's API:
//! rule errors at start-up, every request form (path, query, body field), response bodies,
//! trailers-only and streamed answers.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response};
use http_body_util::BodyExt as _;
use prost_reflect::{DescriptorPool, DynamicMessage};
use serde_json::{Value as Json, json};

use super::{
    ApiInfo, Gateway, GatewayOptions,
    matcher::{Match, Matcher},
    request, response,
    rules::{self, Route},
};

/// A proto file with `service` spliced in, beside messages every case uses.
fn proto(service: &str) -> String {
    format!(
        r#"syntax = "proto3";
package demo.v1;
import "google/api/annotations.proto";
import "google/protobuf/timestamp.proto";
enum Color {{ COLOR_UNSPECIFIED = 0; COLOR_RED = 1; COLOR_BLUE = 2; }}
message Inner {{ string label = 1; int64 count = 2; }}
message Thing {{
  string name = 1;
  int64 size = 2;
  Color color = 3;
  repeated string tags = 4;
  Inner inner = 5;
  google.protobuf.Timestamp at = 6;
  bool flag = 7;
  double ratio = 8;
}}
message GetThingRequest {{ string name = 1; Inner inner = 2; repeated string tags = 3;
  Color color = 4; int32 page_size = 5; google.protobuf.Timestamp at = 6; bool flag = 7; }}
message PutThingRequest {{ string name = 1; Thing thing = 2; string note = 3; }}
{service}
"#
    )
}

/// Compiles `source` (as `demo.proto`) with the vendored google/api protos.
fn compile(source: &str) -> Vec<u8> {
    let dir = std::env::temp_dir().join(format!("tally-gateway-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("demo.proto"), source).unwrap();
    let vendored = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
    let mut compiler =
        protox::Compiler::new([dir.as_path(), std::path::Path::new(vendored)]).expect("compiler");
    compiler.include_imports(true);
    compiler
        .open_file("demo.proto")
        .expect("the test proto compiles");
    let bytes = compiler.encode_file_descriptor_set();
    let _ = std::fs::remove_dir_all(&dir);
    bytes
}

const SERVICE: &str = r#"service Things {
  rpc GetThing(GetThingRequest) returns (Thing) {
    option (google.api.http) = {get: "/v1/things/{name=shelves/*/things/*}"};
  }
  rpc PutThing(PutThingRequest) returns (Thing) {
    option (google.api.http) = {put: "/v1/things/{name}" body: "thing" response_body: "inner"};
  }
  rpc WatchThings(GetThingRequest) returns (stream Thing) {
    option (google.api.http) = {get: "/v1/things:watch"};
  }
  rpc Upload(stream Thing) returns (Thing) {
    option (google.api.http) = {post: "/v1/things:upload" body: "*"};
  }
}"#;

fn demo() -> (DescriptorPool, Matcher<Route>) {
    let pool = DescriptorPool::decode(compile(&proto(SERVICE)).as_slice()).unwrap();
    let routes = rules::load(&pool).expect("rules load");
    (pool, routes)
}

fn gateway_error(service: &str) -> String {
    let options = GatewayOptions {
        body_bytes_max: 1024,
        body_read_timeout: std::time::Duration::from_secs(1),
        cors_allowed_origins: vec![],
        info: ApiInfo {
            title: "demo".into(),
            version: "1".into(),
            description: String::new(),
            public_methods: vec![],
        },
    };
    match Gateway::new(&compile(&proto(service)), options) {
        Ok(_) => panic!("the rules should be refused"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn conflicting_or_unparsable_rules_fail_start_up_naming_the_method() {
    let conflict = gateway_error(
        r#"service S {
  rpc A(GetThingRequest) returns (Thing) { option (google.api.http) = {get: "/v1/x/{name}"}; }
  rpc B(GetThingRequest) returns (Thing) { option (google.api.http) = {get: "/v1/x/{tags}"}; }
}"#,
    );
    assert!(conflict.contains("demo.v1.S.B"), "{conflict}");
    let unparsable = gateway_error(
        r#"service S {
  rpc A(GetThingRequest) returns (Thing) { option (google.api.http) = {get: "/v1/{name"}; }
}"#,
    );
    assert!(unparsable.contains("demo.v1.S.A"), "{unparsable}");
    let unknown_field = gateway_error(
        r#"service S {
  rpc A(GetThingRequest) returns (Thing) { option (google.api.http) = {get: "/v1/{nope}"}; }
}"#,
    );
    assert!(unknown_field.contains("demo.v1.S.A") && unknown_field.contains("nope"));
    let get_with_body = gateway_error(
        r#"service S {
  rpc A(GetThingRequest) returns (Thing) { option (google.api.http) = {get: "/v1/a" body: "*"}; }
}"#,
    );
    assert!(
        get_with_body.contains("must not have a body"),
        "{get_with_body}"
    );
}

#[test]
fn client_streaming_rpcs_are_skipped_and_server_streaming_ones_routed() {
    let (_, routes) = demo();
    let names: Vec<&str> = routes.routes().map(|(_, _, r)| r.method.name()).collect();
    assert_eq!(names, ["GetThing", "PutThing", "WatchThings"]);
}

fn found<'a>(
    routes: &'a Matcher<Route>,
    method: Method,
    path: &str,
) -> (&'a Route, super::Captures) {
    match routes.find(&method, path) {
        Match::Found { target, variables } => (target, variables),
        other => panic!("{method} {path}: {other:?}"),
    }
}

fn to_json(message: &DynamicMessage) -> Json {
    serde_json::to_value(message).unwrap()
}

#[test]
fn path_query_and_body_build_one_message_by_the_json_mapping() {
    let (_, routes) = demo();
    let (route, vars) = found(&routes, Method::GET, "/v1/things/shelves/s%201/things/t1");
    let query = "inner.label=x&inner.count=12&tags=a&tags=b&color=COLOR_BLUE&pageSize=7\
                 &at=2026-11-21T02:00:00Z&flag=true";
    let message = request::build_message(route, vars, Some(query), b"").unwrap();
    assert_eq!(
        to_json(&message),
        json!({
            "name": "shelves/s 1/things/t1",
            "inner": {"label": "x", "count": "12"},
            "tags": ["a", "b"],
            "color": "COLOR_BLUE",
            "pageSize": 7,
            "at": "2026-11-21T02:00:00Z",
            "flag": true,
        })
    );
    // Proto names in the query and a numeric enum are accepted too.
    let (route, vars) = found(&routes, Method::GET, "/v1/things/shelves/a/things/b");
    let message = request::build_message(route, vars, Some("page_size=3&color=1"), b"").unwrap();
    assert_eq!(to_json(&message)["color"], "COLOR_RED");

    // body: "thing" — the body is that field; int64 as a number or a string.
    let (route, vars) = found(&routes, Method::PUT, "/v1/things/t9");
    let body = br#"{"size": 5, "inner": {"count": "6"}, "at": "2026-01-02T03:04:05.5+01:00"}"#;
    let message = request::build_message(route, vars, Some("note=hi"), body).unwrap();
    assert_eq!(
        to_json(&message),
        json!({
            "name": "t9",
            "thing": {"size": "5", "inner": {"count": "6"}, "at": "2026-01-02T02:04:05.500Z"},
            "note": "hi",
        })
    );
}

#[test]
fn bad_requests_are_refused_with_a_reason_naming_the_input() {
    let (_, routes) = demo();
    let get = |query: &str| {
        let (route, vars) = found(&routes, Method::GET, "/v1/things/shelves/a/things/b");
        request::build_message(route, vars, Some(query), b"")
            .err()
            .map(|e| e.0)
            .unwrap_or_default()
    };
    // Parameters that name no field are ignored (a mailed link's `utm_source`, a cache-buster).
    assert_eq!(get("nope=1&utm_source=mail&_=17"), "");
    assert!(get("pageSize=abc").contains("page_size"));
    assert!(get("pageSize=1&pageSize=2").contains("twice"));
    assert!(get("color=GREEN").contains("COLOR_RED"));
    assert!(get("flag=yes").contains("true or false"));
    assert!(get("name=x").contains("path"));
    let (route, vars) = found(&routes, Method::PUT, "/v1/things/t9");
    let err = request::build_message(route, vars.clone(), None, br#"{"bogus": 1}"#).unwrap_err();
    assert!(err.0.contains("bogus"), "{}", err.0);
    let err = request::build_message(route, vars, None, b"{").unwrap_err();
    assert!(err.0.starts_with("malformed JSON"), "{}", err.0);
    // A body on a rule without one is ignored, however malformed.
    let (route, vars) = found(&routes, Method::GET, "/v1/things/shelves/a/things/b");
    let message = request::build_message(route, vars, None, b"{ not json").unwrap();
    assert_eq!(
        message.get_field_by_name("name").unwrap().as_str(),
        Some("shelves/a/things/b")
    );
}

fn framed(message: &DynamicMessage) -> Bytes {
    request::frame(message)
}

fn thing(pool: &DescriptorPool, json: Json) -> DynamicMessage {
    let desc = pool.get_message_by_name("demo.v1.Thing").unwrap();
    DynamicMessage::deserialize(desc, json).unwrap()
}

/// A gRPC answer body: the frames, then trailers with `status`.
fn answer(frames: Vec<Bytes>, status: i32, message: &str) -> Response<tonic::body::Body> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(status));
    trailers.insert("grpc-message", HeaderValue::from_str(message).unwrap());
    let mut parts: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> = frames
        .into_iter()
        .map(|f| Ok(http_body::Frame::data(f)))
        .collect();
    parts.push(Ok(http_body::Frame::trailers(trailers)));
    let stream = futures_util::stream::iter(parts);
    Response::new(tonic::body::Body::new(http_body_util::StreamBody::new(
        stream,
    )))
}

async fn body_text(response: Response<tonic::body::Body>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn a_response_body_rule_returns_only_that_field() {
    let (pool, routes) = demo();
    let (route, _) = found(&routes, Method::PUT, "/v1/things/t");
    let message = thing(&pool, json!({"name": "t", "inner": {"label": "in"}}));
    let out = response::unary(route, &pool, answer(vec![framed(&message)], 0, "")).await;
    assert_eq!(out.status(), 200);
    let json: Json = serde_json::from_str(&body_text(out).await).unwrap();
    assert_eq!(json, json!({"label": "in", "count": "0"}));
}

#[tokio::test]
async fn errors_in_trailers_or_headers_become_json_with_a_decoded_message() {
    let (pool, routes) = demo();
    let (route, _) = found(&routes, Method::PUT, "/v1/things/t");
    let out = response::unary(route, &pool, answer(vec![], 9, "not%20ready%3A%20later")).await;
    assert_eq!(out.status(), 400);
    let json: Json = serde_json::from_str(&body_text(out).await).unwrap();
    assert_eq!(
        json,
        json!({"code": 9, "message": "not ready: later", "details": []})
    );

    // Trailers-only: the status is in the headers and the body is empty.
    let mut trailers_only = Response::new(tonic::body::Body::empty());
    trailers_only
        .headers_mut()
        .insert("grpc-status", HeaderValue::from(16));
    let out = response::unary(route, &pool, trailers_only).await;
    assert_eq!(out.status(), 401);
}

#[tokio::test]
async fn server_streaming_answers_are_newline_delimited_json_ending_with_any_error() {
    let (pool, routes) = demo();
    let (route, _) = found(&routes, Method::GET, "/v1/things:watch");
    assert!(route.server_streaming());
    let frames = vec![
        framed(&thing(&pool, json!({"name": "a"}))),
        framed(&thing(&pool, json!({"name": "b", "size": "2"}))),
    ];
    let out = response::streaming(
        route.clone(),
        pool.clone(),
        answer(frames.clone(), 14, "gone"),
        response::Framing::Ndjson,
    );
    assert_eq!(out.headers()["content-type"], "application/x-ndjson");
    let text = body_text(out).await;
    let lines: Vec<Json> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines,
        [
            json!({"name": "a", "size": "0", "color": "COLOR_UNSPECIFIED", "tags": [],
                   "flag": false, "ratio": 0.0, "inner": null, "at": null}),
            json!({"name": "b", "size": "2", "color": "COLOR_UNSPECIFIED", "tags": [],
                   "flag": false, "ratio": 0.0, "inner": null, "at": null}),
            json!({"error": {"code": 14, "message": "gone", "details": []}}),
        ]
    );

    // The same answer as Server-Sent Events: one `data:` event per message, then the error.
    let mut headers = HeaderMap::new();
    headers.insert(
        "accept",
        HeaderValue::from_static("text/html, text/event-stream;q=0.9"),
    );
    let framing = response::Framing::for_request(&headers);
    assert_eq!(framing, response::Framing::EventStream);
    let out = response::streaming(route.clone(), pool, answer(frames, 14, "gone"), framing);
    assert_eq!(out.headers()["content-type"], "text/event-stream");
    assert_eq!(out.headers()["cache-control"], "no-cache");
    let text = body_text(out).await;
    let events: Vec<&str> = text.split_terminator("\n\n").collect();
    assert_eq!(events.len(), 3, "{text}");
    assert!(events[0].starts_with("data: {\"name\":\"a\""), "{text}");
    assert_eq!(
        events[2],
        r#"event: error
data: {"code":14,"message":"gone","details":[]}"#
    );
    assert_eq!(
        response::Framing::for_request(&HeaderMap::new()),
        response::Framing::Ndjson
    );
}
