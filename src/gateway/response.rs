//! Turns the gRPC answer of a synthetic call back into HTTP JSON.
//!
//! The status comes from the trailers, or from the headers of a trailers-only response (the
//! auth layer rejects that way). `grpc-message` is percent-decoded; `grpc-status-details-bin`
//! is decoded as a `google.rpc.Status` from the descriptor pool, so its details come out as
//! JSON with `@type` (ErrorInfo, BadRequest, ...). Success bodies are the proto3 JSON of the
//! response message (or of its `response_body` field) with every field emitted; server-streaming
//! answers are newline-delimited JSON, one message per line, with a failure after the first
//! message as a last line `{"error": {...}}`, or Server-Sent Events for a client that accepts
//! `text/event-stream` ([`Framing`]).

use base64::Engine as _;
use bytes::{Buf, Bytes, BytesMut};
use futures_util::StreamExt as _;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::BodyExt as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, Kind, MessageDescriptor, ReflectMessage as _, SerializeOptions,
};
use serde_json::{Value as Json, json};
use tonic::Code;

use super::rules::Route;
use crate::error::http_status;

/// `-bin` metadata is standard base64, padded or not depending on the sender.
const BASE64_ANY_PADDING: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// A gRPC status as the gateway answers it.
#[derive(Debug, Clone)]
pub struct GrpcStatus {
    pub code: Code,
    pub message: String,
    pub details_bin: Option<Bytes>,
}

impl GrpcStatus {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details_bin: None,
        }
    }

    /// Reads `grpc-status`, `grpc-message` and `grpc-status-details-bin` from headers or
    /// trailers; `None` when there is no `grpc-status`.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let code = headers
            .get("grpc-status")?
            .to_str()
            .ok()?
            .parse::<i32>()
            .ok()?;
        let message = headers
            .get("grpc-message")
            .map(|v| {
                percent_encoding::percent_decode(v.as_bytes())
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .unwrap_or_default();
        let details_bin = headers
            .get("grpc-status-details-bin")
            .and_then(|v| BASE64_ANY_PADDING.decode(v.as_bytes()).ok())
            .map(Bytes::from);
        Some(Self {
            code: Code::from_i32(code),
            message,
            details_bin,
        })
    }

    /// `{"code": N, "message": "...", "details": [...]}`.
    pub fn to_json(&self, pool: &DescriptorPool) -> Json {
        json!({
            "code": self.code as i32,
            "message": self.message,
            "details": self.details(pool),
        })
    }

    fn details(&self, pool: &DescriptorPool) -> Json {
        let Some(bin) = &self.details_bin else {
            return json!([]);
        };
        let decoded = pool
            .get_message_by_name("google.rpc.Status")
            .and_then(|desc| DynamicMessage::decode(desc, bin.clone()).ok())
            .and_then(|status| to_json(&status).ok());
        match decoded.as_ref().and_then(|s| s.get("details")) {
            Some(details) => details.clone(),
            // Details whose types the pool does not know still reach the client, encoded.
            None => json!([{
                "@type": "type.googleapis.com/google.rpc.Status",
                "value": base64::engine::general_purpose::STANDARD.encode(bin),
            }]),
        }
    }

    /// The HTTP error response of this status, with `Retry-After` (whole seconds, at least 1)
    /// when the status carries a `google.rpc.RetryInfo`.
    pub fn into_response(self, pool: &DescriptorPool) -> Response<tonic::body::Body> {
        let status = http_status(self.code);
        let mut response = json_response(status, &self.to_json(pool));
        if let Some(seconds) = self.retry_after_secs() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }

    fn retry_after_secs(&self) -> Option<u64> {
        use tonic_types::StatusExt as _;
        let bin = self.details_bin.clone()?;
        let status = tonic::Status::with_details(self.code, self.message.clone(), bin);
        let delay = status.get_details_retry_info()?.retry_delay?;
        Some(delay.as_secs() + u64::from(delay.subsec_nanos() > 0)).map(|s| s.max(1))
    }
}

/// The proto3 JSON of `message` with every field present, as grpc-gateway writes it
/// (protojson's `EmitUnpopulated`): scalars, lists and maps at their defaults (`"0"`, `""`,
/// `false`, `[]`, `{}`), an unset message field as `null`; only a oneof's members (proto3
/// `optional` fields among them) stay out while unset. So `BigInt(account.balance)` and
/// `resp.entries.length` work on every answer.
fn to_json(message: &DynamicMessage) -> Result<Json, serde_json::Error> {
    let mut json = message.serialize_with_options(
        serde_json::value::Serializer,
        &SerializeOptions::new().skip_default_fields(false),
    )?;
    null_unset_messages(&message.descriptor(), &mut json);
    Ok(json)
}

/// The JSON the gateway writes for `message`, a message of tally's protos named `full_name`:
/// for what publishes messages outside an HTTP answer (the change feed's Redis stream), so
/// they read exactly like the API's answers.
pub fn json_string<M: prost::Message>(full_name: &str, message: &M) -> anyhow::Result<String> {
    use anyhow::Context as _;
    static POOL: std::sync::OnceLock<DescriptorPool> = std::sync::OnceLock::new();
    let pool = POOL.get_or_init(|| {
        DescriptorPool::decode(crate::proto::FILE_DESCRIPTOR_SET)
            .expect("the embedded descriptor set decodes")
    });
    let descriptor = pool
        .get_message_by_name(full_name)
        .with_context(|| format!("no message {full_name} in the descriptor set"))?;
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())?;
    Ok(serde_json::to_string(&to_json(&dynamic)?)?)
}

/// Adds `null` for every unset singular message field outside a oneof, through nested messages
/// (the serializer emits scalar defaults but leaves unset messages out).
fn null_unset_messages(descriptor: &MessageDescriptor, json: &mut Json) {
    // The well-known types have JSON forms of their own (a Timestamp is a string).
    if descriptor.package_name() == "google.protobuf" {
        return;
    }
    let Json::Object(object) = json else {
        return;
    };
    for field in descriptor.fields() {
        let Kind::Message(inner) = field.kind() else {
            continue;
        };
        let Some(value) = object.get_mut(field.json_name()) else {
            // A oneof's members stay out while unset.
            if !field.is_list() && !field.is_map() && field.containing_oneof().is_none() {
                object.insert(field.json_name().to_owned(), Json::Null);
            }
            continue;
        };
        match value {
            Json::Array(items) => {
                for item in items {
                    null_unset_messages(&inner, item);
                }
            }
            Json::Object(entries) if field.is_map() => {
                if let Some(Kind::Message(value_type)) = inner.get_field(2).map(|f| f.kind()) {
                    for entry in entries.values_mut() {
                        null_unset_messages(&value_type, entry);
                    }
                }
            }
            value => null_unset_messages(&inner, value),
        }
    }
}

pub fn json_response(status: StatusCode, body: &Json) -> Response<tonic::body::Body> {
    let mut bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    bytes.push(b'\n');
    let mut response = Response::new(tonic::body::Body::new(http_body_util::Full::new(
        Bytes::from(bytes),
    )));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The JSON of one response message, or of its `response_body` field.
fn message_json(route: &Route, payload: Bytes) -> Result<Json, GrpcStatus> {
    let message = DynamicMessage::decode(route.method.output(), payload)
        .map_err(|e| GrpcStatus::new(Code::Internal, format!("undecodable response: {e}")))?;
    let internal = |e: serde_json::Error| GrpcStatus::new(Code::Internal, e.to_string());
    match &route.response_body {
        None => to_json(&message).map_err(internal),
        Some(field) => {
            let whole = to_json(&message).map_err(internal)?;
            Ok(whole.get(field.json_name()).cloned().unwrap_or(Json::Null))
        }
    }
}

/// Splits complete frames off the front of `buf`.
fn next_frame(buf: &mut BytesMut) -> Result<Option<Bytes>, GrpcStatus> {
    if buf.len() < 5 {
        return Ok(None);
    }
    if buf[0] != 0 {
        // The synthetic request advertises no compression, so none may come back.
        return Err(GrpcStatus::new(Code::Internal, "compressed response frame"));
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if buf.len() < 5 + len {
        return Ok(None);
    }
    buf.advance(5);
    Ok(Some(buf.split_to(len).freeze()))
}

/// Converts the answer of a unary call.
pub async fn unary(
    route: &Route,
    pool: &DescriptorPool,
    response: Response<tonic::body::Body>,
) -> Response<tonic::body::Body> {
    let (parts, body) = response.into_parts();
    if let Some(status) = GrpcStatus::from_headers(&parts.headers) {
        // Trailers-only: the call was refused before any message.
        return status.into_response(pool);
    }
    let collected = match body.collect().await {
        Ok(collected) => collected,
        Err(e) => {
            return GrpcStatus::new(Code::Unavailable, format!("the call failed: {e}"))
                .into_response(pool);
        }
    };
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let status = GrpcStatus::from_headers(&trailers)
        .unwrap_or_else(|| GrpcStatus::new(Code::Internal, "the answer carried no grpc-status"));
    if status.code != Code::Ok {
        return status.into_response(pool);
    }
    let mut buf = BytesMut::from(collected.to_bytes());
    let result = next_frame(&mut buf).and_then(|frame| {
        let payload = frame
            .ok_or_else(|| GrpcStatus::new(Code::Internal, "the answer carried no message"))?;
        message_json(route, payload)
    });
    match result {
        Ok(json) => {
            let mut response = json_response(StatusCode::OK, &json);
            forward_metadata(&parts.headers, response.headers_mut());
            response
        }
        Err(status) => status.into_response(pool),
    }
}

/// A response of an inner layer to a request that was not gRPC, as JSON: one in gRPC's shape
/// (tonic's answer to an unknown method, say) becomes the JSON error of its status, so no JSON
/// caller ever receives `application/grpc`. Anything else passes as it is.
pub async fn json_only(
    pool: &DescriptorPool,
    response: Response<tonic::body::Body>,
) -> Response<tonic::body::Body> {
    let grpc_shaped = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"));
    if !grpc_shaped {
        return response;
    }
    let (parts, body) = response.into_parts();
    let status = match GrpcStatus::from_headers(&parts.headers) {
        Some(status) => Some(status),
        None => body
            .collect()
            .await
            .ok()
            .and_then(|collected| collected.trailers().and_then(GrpcStatus::from_headers)),
    };
    match status {
        Some(status) if status.code != Code::Ok => status,
        // A gRPC message is no answer to a JSON request either.
        _ => GrpcStatus::new(
            Code::Unimplemented,
            "this path is a gRPC method; call it with a gRPC client or through its HTTP route",
        ),
    }
    .into_response(pool)
}

/// Response metadata the handler set reaches HTTP clients as `Grpc-Metadata-<name>` headers,
/// as grpc-gateway does; the gRPC protocol's own headers stay behind.
fn forward_metadata(from: &http::HeaderMap, to: &mut http::HeaderMap) {
    for (name, value) in from {
        let name = name.as_str();
        if name.starts_with("grpc-") || name == "content-type" || name == "te" {
            continue;
        }
        if let Ok(forwarded) = http::HeaderName::try_from(format!("grpc-metadata-{name}")) {
            to.append(forwarded, value.clone());
        }
    }
}

/// How a server-streaming answer is written over HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `application/x-ndjson`: one message per line; a failure is a last line `{"error": ...}`.
    Ndjson,
    /// `text/event-stream` (Server-Sent Events, for `Accept: text/event-stream`): one `data:`
    /// event per message (with `id:` when it carries a `sequence`); a failure is a last
    /// `event: error`.
    EventStream,
}

impl Framing {
    /// Server-Sent Events when the client asks for them, else NDJSON.
    pub fn for_request(headers: &HeaderMap) -> Self {
        let wants_events = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|media| {
                media
                    .split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
            });
        if wants_events {
            Framing::EventStream
        } else {
            Framing::Ndjson
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Framing::Ndjson => "application/x-ndjson",
            Framing::EventStream => "text/event-stream",
        }
    }

    /// One message (or, with `error`, the failure that ends the stream).
    fn frame(self, json: &Json, error: bool) -> Bytes {
        let text = serde_json::to_string(json).unwrap_or_default();
        Bytes::from(match (self, error) {
            (Framing::Ndjson, false) => format!("{text}\n"),
            (Framing::Ndjson, true) => format!("{{\"error\":{text}}}\n"),
            (Framing::EventStream, false) => match event_id(json) {
                Some(id) => format!("id: {id}\ndata: {text}\n\n"),
                None => format!("data: {text}\n\n"),
            },
            (Framing::EventStream, true) => format!("event: error\ndata: {text}\n\n"),
        })
    }
}

/// A streamed message's top-level `sequence` (a uint64, so a JSON string), written as its
/// Server-Sent Event's `id:`: a reconnecting `EventSource` sends it back as `Last-Event-ID`
/// (see [`super::request::resume_after_last_event`]).
fn event_id(json: &Json) -> Option<&str> {
    json.get("sequence")?
        .as_str()
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
}

/// Converts the answer of a server-streaming call into NDJSON or Server-Sent Events.
pub fn streaming(
    route: Route,
    pool: DescriptorPool,
    response: Response<tonic::body::Body>,
    framing: Framing,
) -> Response<tonic::body::Body> {
    let (parts, body) = response.into_parts();
    if let Some(status) = GrpcStatus::from_headers(&parts.headers) {
        return status.into_response(&pool);
    }
    struct State {
        body: http_body_util::BodyStream<tonic::body::Body>,
        buf: BytesMut,
        done: bool,
    }
    let state = State {
        body: http_body_util::BodyStream::new(body),
        buf: BytesMut::new(),
        done: false,
    };
    let line = move |json: Json, error: bool| {
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(framing.frame(&json, error)))
    };
    let stream = futures_util::stream::unfold(state, move |mut state| {
        let (route, pool) = (route.clone(), pool.clone());
        async move {
            loop {
                if state.done {
                    return None;
                }
                match next_frame(&mut state.buf) {
                    Ok(Some(payload)) => {
                        let frame = match message_json(&route, payload) {
                            Ok(json) => line(json, false),
                            Err(status) => {
                                state.done = true;
                                line(status.to_json(&pool), true)
                            }
                        };
                        return Some((frame, state));
                    }
                    Ok(None) => {}
                    Err(status) => {
                        state.done = true;
                        return Some((line(status.to_json(&pool), true), state));
                    }
                }
                let error = match state.body.next().await {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => {
                            state.buf.extend_from_slice(&data);
                            continue;
                        }
                        Err(frame) => frame
                            .into_trailers()
                            .ok()
                            .and_then(|t| GrpcStatus::from_headers(&t))
                            .filter(|s| s.code != Code::Ok),
                    },
                    Some(Err(e)) => Some(GrpcStatus::new(Code::Unavailable, e.to_string())),
                    None => None,
                };
                state.done = true;
                if let Some(status) = error {
                    return Some((line(status.to_json(&pool), true), state));
                }
                return None;
            }
        }
    });
    let mut response = Response::new(tonic::body::Body::new(http_body_util::StreamBody::new(
        stream,
    )));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(framing.content_type()),
    );
    // Every message as it comes: no cache, and no buffering in a proxy (nginx honours this).
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// The message descriptor of `google.rpc.Status`, when the pool has it (OpenAPI uses it).
pub fn status_descriptor(pool: &DescriptorPool) -> Option<MessageDescriptor> {
    pool.get_message_by_name("google.rpc.Status")
}
