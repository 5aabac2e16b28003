//! Builds the request message of a matched route from the body, the path variables and the
//! query string, then wraps it as a synthetic gRPC request.
//!
//! Everything is first assembled as one JSON value and handed to prost-reflect, which applies
//! the canonical proto3 JSON mapping (proto and lowerCamelCase names, int64 as string or
//! number, RFC 3339 timestamps, enums by name) and rejects unknown fields. Path and query
//! values are strings; they are turned into the JSON type their field expects first.
//!
//! The synthetic request is HTTP/2 `POST /package.Service/Method` with `content-type:
//! application/grpc`, `te: trailers` and one uncompressed 5-byte-framed message, so it passes
//! the same layers (limits, auth) and handlers as a call from a gRPC client. The original
//! request's extensions (the connection's peer address among them) travel along.

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Version, header};
use prost::Message as _;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value as Json};

use super::{
    matcher::Captures,
    rules::{BodyRule, Route, resolve_field_path},
};

/// Headers passed through as gRPC metadata, as they are.
const FORWARDED_HEADERS: &[&str] = &[
    "authorization",
    "user-agent",
    "x-request-id",
    "traceparent",
    "tracestate",
    // The client address behind trusted proxies (crate::limits::client).
    "x-forwarded-for",
];
/// `Grpc-Metadata-Foo: v` arrives as metadata `foo: v` (grpc-gateway's convention).
const METADATA_PREFIX: &str = "grpc-metadata-";

/// Counts the query parameters ignored because they name no field.
pub const QUERY_IGNORED_METRIC: &str = "tally_gateway_query_parameters_ignored_total";

/// Why a request could not be turned into a message: always `INVALID_ARGUMENT`.
#[derive(Debug)]
pub struct BadRequest(pub String);

/// The request field a Server-Sent Events client's `Last-Event-ID` stands for, when the query
/// left it unset: a stream whose messages carry a `sequence` (written as each event's `id:`)
/// resumes after the last one the browser's `EventSource` saw.
pub const RESUME_FIELD: &str = "after_sequence";

/// Sets [`RESUME_FIELD`] from `Last-Event-ID` when the request has that field and it is unset.
pub fn resume_after_last_event(
    message: &mut DynamicMessage,
    headers: &http::HeaderMap,
) -> Result<(), BadRequest> {
    let Some(last) = headers.get("last-event-id") else {
        return Ok(());
    };
    use prost_reflect::ReflectMessage as _;
    let Some(field) = message.descriptor().get_field_by_name(RESUME_FIELD) else {
        return Ok(());
    };
    if message.has_field(&field) {
        return Ok(()); // the query said where to resume
    }
    let text = last.to_str().unwrap_or_default().trim();
    if text.is_empty() {
        return Ok(());
    }
    let value: u64 = text.parse().map_err(|_| {
        BadRequest(format!(
            "Last-Event-ID: {text:?} is not an event id this stream sent (a sequence)"
        ))
    })?;
    match field.kind() {
        prost_reflect::Kind::Uint64 => {
            message.set_field(&field, prost_reflect::Value::U64(value));
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Builds the request message. `body` is the raw request body (already size-checked).
pub fn build_message(
    route: &Route,
    variables: Captures,
    query: Option<&str>,
    body: &[u8],
) -> Result<DynamicMessage, BadRequest> {
    let input = route.method.input();
    let body_json = match route.body {
        // A body on a rule without one is ignored, as grpc-gateway does: SDK wrappers and
        // tools send `{}` with every GET and DELETE.
        BodyRule::None => None,
        _ if body.iter().all(u8::is_ascii_whitespace) => None,
        _ => Some(body_json(route, &input, body)?),
    };
    let mut root = Json::Object(Map::new());
    match (&route.body, body_json) {
        (BodyRule::Whole, Some(json)) => root = json,
        (BodyRule::Field(field), Some(json)) => set(&mut root, std::slice::from_ref(field), json),
        (_, _) => {}
    }

    for ((_, value), chain) in variables.into_iter().zip(&route.path_fields) {
        let leaf = chain
            .last()
            .ok_or_else(|| BadRequest("empty path variable".into()))?;
        let json = scalar_json(leaf, &value)?;
        set(&mut root, chain, json);
    }

    if let Some(query) = query {
        apply_query(route, &input, query, &mut root)?;
    }

    DynamicMessage::deserialize(input, root).map_err(|e| BadRequest(e.to_string()))
}

/// The body as JSON, strictly parsed and spelt once, with the fields an update ignores removed.
fn body_json(route: &Route, input: &MessageDescriptor, body: &[u8]) -> Result<Json, BadRequest> {
    let mut json =
        super::strict::parse(body).map_err(|e| BadRequest(format!("malformed JSON body: {e}")))?;
    // The body's own fields, before path and query fill in theirs.
    let body_message = match &route.body {
        BodyRule::Field(field) => match field.kind() {
            Kind::Message(message) => Some(message),
            _ => None,
        },
        _ => Some(input.clone()),
    };
    if route.body == BodyRule::Whole {
        let Json::Object(object) = &mut json else {
            return Err(BadRequest("the request body must be a JSON object".into()));
        };
        for name in &route.ignored_on_update {
            if object.remove(name).is_some() {
                tracing::debug!(field = %name, "ignored an output-only field of the resource");
            }
        }
    }
    if let Some(message) = body_message {
        super::strict::check_spellings(&message, &json).map_err(BadRequest)?;
    }
    Ok(json)
}

/// Sets the fields a query string names (`a.b=` nested, repeated names for a list); a field the
/// path or the body already binds, or a singular field given twice, is refused.
fn apply_query(
    route: &Route,
    input: &MessageDescriptor,
    query: &str,
    root: &mut Json,
) -> Result<(), BadRequest> {
    let mut seen: Vec<String> = Vec::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let names: Vec<&str> = key.split('.').collect();
        let chain = match resolve_field_path(input, &names) {
            Ok(chain) => chain,
            Err(_) if names_no_field(input, names[0]) => {
                // Mail systems append `utm_*` to links, caches `_=<time>`: ignored, as
                // grpc-gateway does, but counted so a misspelt parameter can be found.
                metrics::counter!(QUERY_IGNORED_METRIC).increment(1);
                tracing::debug!(parameter = %key, "ignored a query parameter that names no field");
                continue;
            }
            Err(e) => return Err(BadRequest(format!("query parameter `{key}`: {e}"))),
        };
        let leaf = chain
            .last()
            .ok_or_else(|| BadRequest("empty query parameter".into()))?;
        let bound_by_body = match &route.body {
            BodyRule::Whole => true,
            BodyRule::Field(f) => chain[0] == *f,
            BodyRule::None => false,
        };
        if bound_by_body || route.path_fields.iter().any(|p| chain.starts_with(p)) {
            return Err(BadRequest(format!(
                "query parameter `{key}`: the field is set by the path or the body"
            )));
        }
        let canonical: String = chain.iter().map(|f| f.name()).collect::<Vec<_>>().join(".");
        let json = scalar_json(leaf, &value)?;
        if leaf.is_list() {
            push(root, &chain, json);
        } else if seen.contains(&canonical) {
            return Err(BadRequest(format!("query parameter `{key}` given twice")));
        } else {
            seen.push(canonical);
            set(root, &chain, json);
        }
    }
    Ok(())
}

/// Whether `name` is neither the proto nor the JSON name of a field of `message`.
fn names_no_field(message: &MessageDescriptor, name: &str) -> bool {
    message.get_field_by_name(name).is_none() && message.get_field_by_json_name(name).is_none()
}

/// The JSON value a path or query string stands for, by the field's type.
fn scalar_json(field: &FieldDescriptor, text: &str) -> Result<Json, BadRequest> {
    kind_json(&field.kind(), field.name(), text)
}

fn kind_json(kind: &Kind, name: &str, text: &str) -> Result<Json, BadRequest> {
    Ok(match kind {
        Kind::Bool => match text {
            "true" => Json::Bool(true),
            "false" => Json::Bool(false),
            _ => return Err(BadRequest(format!("`{name}` must be true or false"))),
        },
        Kind::Double | Kind::Float => match text.parse::<f64>() {
            Ok(n) if n.is_finite() => serde_json::Number::from_f64(n)
                .map(Json::Number)
                .unwrap_or_else(|| Json::String(text.to_owned())),
            // "NaN", "Infinity" and garbage: the JSON mapping decides.
            _ => Json::String(text.to_owned()),
        },
        Kind::Enum(e) => match text.parse::<i32>() {
            Ok(n) => Json::Number(n.into()),
            Err(_) if e.get_value_by_name(text).is_some() => Json::String(text.to_owned()),
            Err(_) => {
                let names: Vec<String> = e.values().map(|v| v.name().to_owned()).collect();
                return Err(BadRequest(format!(
                    "`{name}` must be one of {}",
                    names.join(", ")
                )));
            }
        },
        Kind::Message(message) => match message.full_name() {
            "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.FieldMask" => Json::String(text.to_owned()),
            wrapper if is_wrapper(message) => {
                let inner = message
                    .get_field_by_name("value")
                    .ok_or_else(|| BadRequest(format!("`{wrapper}` has no value")))?;
                return kind_json(&inner.kind(), name, text);
            }
            other => {
                return Err(BadRequest(format!(
                    "`{name}` ({other}) cannot be set from the path or the query"
                )));
            }
        },
        Kind::String | Kind::Bytes => Json::String(text.to_owned()),
        // Integers as strings are canonical proto3 JSON for every integer type; checked here
        // so the error can name the parameter.
        integer => {
            let fits = match integer {
                Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => text.parse::<i32>().is_ok(),
                Kind::Uint32 | Kind::Fixed32 => text.parse::<u32>().is_ok(),
                Kind::Uint64 | Kind::Fixed64 => text.parse::<u64>().is_ok(),
                _ => text.parse::<i64>().is_ok(),
            };
            if !fits {
                return Err(BadRequest(format!("`{name}` must be an integer in range")));
            }
            Json::String(text.to_owned())
        }
    })
}

fn is_wrapper(message: &MessageDescriptor) -> bool {
    message.package_name() == "google.protobuf"
        && message.name().ends_with("Value")
        && message.fields().len() == 1
}

/// The object at `chain`'s parent, creating objects on the way. A key given under the other
/// spelling (proto name vs JSON name) is moved to the JSON name so it is not set twice.
fn parent<'a>(root: &'a mut Json, chain: &[FieldDescriptor]) -> &'a mut Map<String, Json> {
    let mut object = root;
    for field in &chain[..chain.len().saturating_sub(1)] {
        let map = ensure_object(object);
        let existing = map
            .remove(field.name())
            .or_else(|| map.remove(field.json_name()));
        let slot = map
            .entry(field.json_name().to_owned())
            .or_insert(existing.unwrap_or_else(|| Json::Object(Map::new())));
        object = slot;
    }
    ensure_object(object)
}

fn ensure_object(value: &mut Json) -> &mut Map<String, Json> {
    if !value.is_object() {
        *value = Json::Object(Map::new());
    }
    match value {
        Json::Object(map) => map,
        _ => unreachable!("made an object above"),
    }
}

fn set(root: &mut Json, chain: &[FieldDescriptor], json: Json) {
    let Some(leaf) = chain.last() else { return };
    let map = parent(root, chain);
    map.remove(leaf.name());
    map.insert(leaf.json_name().to_owned(), json);
}

fn push(root: &mut Json, chain: &[FieldDescriptor], json: Json) {
    let Some(leaf) = chain.last() else { return };
    let map = parent(root, chain);
    let slot = map
        .entry(leaf.json_name().to_owned())
        .or_insert_with(|| Json::Array(Vec::new()));
    match slot {
        Json::Array(items) => items.push(json),
        other => *other = Json::Array(vec![json]),
    }
}

/// One gRPC length-prefixed message: flag 0 (uncompressed), big-endian length, payload.
pub fn frame(message: &DynamicMessage) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    // Bounded by the body limit, far below u32::MAX.
    buf.put_u32(len as u32);
    message.encode(&mut buf).expect("BytesMut grows as needed");
    buf.freeze()
}

/// The synthetic gRPC request for `route`, keeping the original's extensions; `deadline` is
/// what is left of the client's `grpc-timeout`, passed on so the handler's layers end the call
/// in time too.
pub fn grpc_request(
    route: &Route,
    headers: &HeaderMap,
    extensions: http::Extensions,
    framed: Bytes,
    deadline: Option<std::time::Duration>,
) -> Request<tonic::body::Body> {
    let mut request = Request::new(tonic::body::Body::new(http_body_util::Full::new(framed)));
    *request.method_mut() = http::Method::POST;
    *request.version_mut() = Version::HTTP_2;
    *request.uri_mut() = http::Uri::try_from(route.grpc_path.as_str())
        .unwrap_or_else(|_| http::Uri::from_static("/"));
    *request.extensions_mut() = extensions;
    let out = request.headers_mut();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    out.insert(header::TE, HeaderValue::from_static("trailers"));
    if let Some(deadline) = deadline {
        out.insert(
            crate::proto::GRPC_TIMEOUT_HEADER,
            crate::proto::grpc_timeout_value(deadline),
        );
    }
    for name in FORWARDED_HEADERS {
        for value in headers.get_all(*name) {
            out.append(HeaderName::from_static(name), value.clone());
        }
    }
    for (name, value) in headers {
        if let Some(stripped) = name.as_str().strip_prefix(METADATA_PREFIX)
            // The protocol's own headers are not the client's to set, nor is the address the
            // proxies recorded.
            && !stripped.starts_with("grpc-")
            && !matches!(
                stripped,
                "content-type" | "te" | "content-length" | "x-forwarded-for"
            )
            && let Ok(name) = HeaderName::from_bytes(stripped.as_bytes())
        {
            out.append(name, value.clone());
        }
    }
    request
}
