//! The HTTP JSON gateway against the real server: every RPC answers the same over JSON as over
//! gRPC (compared as decoded messages, error codes and ErrorInfo reasons included), auth is
//! identical, the HTTP error shapes and statuses, and `/openapi.json` routes all answer.
//!
//! The gRPC side is driven by the descriptor set too (prost-reflect builds the request from
//! the same JSON), so one table of cases covers every RPC (`parity.rs`; to add a case once an
//! RPC is implemented, add a row to its `cases`). `http_surface.rs` covers what only HTTP has;
//! `grpc_gateway.rs` what HTTP JSON clients expect from grpc-gateway.

mod grpc_gateway;
mod http_surface;
mod parity;
mod throughput;

use bytes::{Buf as _, BufMut as _};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage};
use serde_json::{Value as Json, json};
use tally::proto::FILE_DESCRIPTOR_SET;
use tonic::{
    Request,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    metadata::MetadataValue,
};

use crate::helpers::*;

/// Passes already-encoded messages through tonic's client untouched.
#[derive(Default, Clone, Copy)]
pub(super) struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

/// An answer in a transport-neutral form: the message as proto3 JSON, or the error's code,
/// message and ErrorInfo reasons.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Answer {
    Ok(Json),
    Err {
        code: i32,
        message: String,
        reasons: Vec<String>,
    },
}

pub(super) fn pool() -> DescriptorPool {
    DescriptorPool::decode(FILE_DESCRIPTOR_SET).expect("descriptor set")
}

/// Calls `method` (`tally.v1.UserService/GetUser`) over gRPC with the request given as JSON.
pub(super) async fn grpc(
    app: &TestApp,
    method: &str,
    request: &Json,
    token: Option<&str>,
) -> Answer {
    let pool = pool();
    let (service, name) = method.split_once('/').expect("service/method");
    let descriptor = pool
        .get_service_by_name(service)
        .and_then(|s| s.methods().find(|m| m.name() == name))
        .expect("method exists");
    let message = DynamicMessage::deserialize(descriptor.input(), request.clone())
        .expect("the case's request is valid proto3 JSON");
    let mut call = Request::new(message.encode_to_vec());
    if let Some(token) = token {
        let value: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
        call.metadata_mut().insert("authorization", value);
    }
    let mut client = tonic::client::Grpc::new(app.channel.clone());
    client.ready().await.expect("channel ready");
    let path = http::uri::PathAndQuery::try_from(format!("/{method}")).unwrap();
    match client.unary(call, path, RawCodec).await {
        Ok(response) => {
            let decoded =
                DynamicMessage::decode(descriptor.output(), response.into_inner().as_slice())
                    .expect("response decodes");
            Answer::Ok(serde_json::to_value(&decoded).unwrap())
        }
        Err(status) => Answer::Err {
            code: status.code() as i32,
            message: status.message().to_owned(),
            reasons: reason(&status).into_iter().collect(),
        },
    }
}

/// Calls the JSON route; returns the HTTP status and the answer.
pub(super) async fn http_json(
    app: &TestApp,
    method: &str,
    path: &str,
    body: Option<&Json>,
    token: Option<&str>,
) -> (u16, Json) {
    let client = reqwest::Client::new();
    let url = format!("http://{}{path}", app.addr);
    let mut request = client.request(method.parse().unwrap(), url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.expect("http call");
    let status = response.status().as_u16();
    let json = response.json::<Json>().await.unwrap_or(Json::Null);
    (status, json)
}

/// The response message of `method` (`tally.v1.UserService/GetUser`).
pub(super) fn output_of(method: &str) -> prost_reflect::MessageDescriptor {
    let (service, name) = method.split_once('/').expect("service/method");
    pool()
        .get_service_by_name(service)
        .and_then(|s| s.methods().find(|m| m.name() == name))
        .expect("method exists")
        .output()
}

/// Every field of `message` that the gateway must emit (all but unset oneof members) is a key
/// of `json`, through nested messages: `"0"`, `""`, `false`, `[]` and `null` included.
pub(super) fn assert_every_field_present(
    message: &prost_reflect::MessageDescriptor,
    json: &Json,
    context: &str,
) {
    if message.package_name() == "google.protobuf" {
        return;
    }
    let object = json.as_object().unwrap_or_else(|| {
        panic!(
            "{context}: {} is not an object: {json}",
            message.full_name()
        )
    });
    for field in message.fields() {
        let value = object.get(field.json_name());
        if field.containing_oneof().is_none() {
            assert!(
                value.is_some(),
                "{context}: `{}` of {} is missing from {json}",
                field.json_name(),
                message.full_name()
            );
        }
        let (Some(value), prost_reflect::Kind::Message(inner)) = (value, field.kind()) else {
            continue;
        };
        match value {
            Json::Array(items) => items
                .iter()
                .for_each(|item| assert_every_field_present(&inner, item, context)),
            Json::Null => {}
            _ if field.is_map() => {}
            value => assert_every_field_present(&inner, value, context),
        }
    }
}

/// An HTTP answer in the neutral form; a success is decoded as `output` (so it must be valid
/// proto3 JSON of it) and compared as the message it decodes to.
pub(super) fn answer_of(
    status: u16,
    json: Json,
    output: &prost_reflect::MessageDescriptor,
) -> Answer {
    if status == 200 {
        let message = DynamicMessage::deserialize(output.clone(), json.clone())
            .unwrap_or_else(|e| panic!("not proto3 JSON of {}: {e}: {json}", output.full_name()));
        return Answer::Ok(serde_json::to_value(&message).unwrap());
    }
    let reasons = json["details"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo")
        .filter_map(|d| d["reason"].as_str().map(str::to_owned))
        .collect();
    Answer::Err {
        code: json["code"].as_i64().unwrap_or(-1) as i32,
        message: json["message"].as_str().unwrap_or("").to_owned(),
        reasons,
    }
}

/// Values that differ between two calls by nature (tokens, ids, clocks) are blanked.
pub(super) fn normalise(answer: Answer, names: &[(&str, &str)]) -> Answer {
    const VOLATILE: &[&str] = &[
        "sessionId",
        "accessToken",
        "refreshToken",
        "accessTokenExpiresAt",
        "refreshTokenExpiresAt",
        "createdAt",
        "passwordChangedAt",
        "expiresAt",
        // Server-assigned per call: a new account's id and every row's change time.
        "accountId",
        "updatedAt",
        "quoteId",
        "monitorId",
        "webhookId",
    ];
    fn walk(v: &mut Json, names: &[(&str, &str)]) {
        match v {
            Json::Object(map) => {
                for (key, value) in map.iter_mut() {
                    if VOLATILE.contains(&key.as_str()) {
                        *value = json!("<volatile>");
                    } else {
                        walk(value, names);
                    }
                }
            }
            Json::Array(items) => items.iter_mut().for_each(|i| walk(i, names)),
            Json::String(s) => {
                for (from, to) in names {
                    *s = s.replace(from, to);
                }
            }
            _ => {}
        }
    }
    match answer {
        Answer::Ok(mut json) => {
            walk(&mut json, names);
            Answer::Ok(json)
        }
        err => err,
    }
}
