//! JSON → protobuf request mapping (src/gateway/request.rs `build_message`) on tally's real
//! routes, as the gateway runs it: the request line is routed by the real matcher, its captures,
//! query string and body become the RPC's request message.
//!
//! Input: the first line is `METHOD /raw/path[?query]`; every byte after it is the body.
//!
//! What must hold, besides never panicking:
//! - a refusal carries a message (it becomes the 400's text);
//! - a message built is re-encodable: its protobuf bytes decode to a message with the same
//!   bytes; its canonical JSON (what the response side writes) reads back, by the same mapping,
//!   to the same bytes; `frame` wraps it in one gRPC frame of the right length;
//! - the path binds its fields: a string field named by a path variable holds the value the
//!   path captured, whatever the body or the query said.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use prost_reflect::{DynamicMessage, ReflectMessage as _, Value};
use tally::gateway::{matcher::Match, request};
use tally_fuzz::{ROUTES, first_line};

fuzz_target!(|data: &[u8]| {
    let Some((line, body)) = first_line(data) else {
        return;
    };
    let Some((method, target)) = line.split_once(' ') else {
        return;
    };
    let Ok(method) = http::Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let Match::Found {
        target: route,
        variables,
    } = ROUTES.find(&method, path)
    else {
        return;
    };
    let message = match request::build_message(route, variables.clone(), query, body) {
        Ok(message) => message,
        Err(request::BadRequest(reason)) => {
            assert!(!reason.is_empty(), "{line}: a refusal without a reason");
            return;
        }
    };
    let input = route.method.input();
    assert_eq!(
        message.descriptor(),
        input,
        "{line}: not the RPC's request message"
    );

    let bytes = message.encode_to_vec();
    let decoded = DynamicMessage::decode(input.clone(), bytes.as_slice())
        .unwrap_or_else(|e| panic!("{line}: the message's own bytes do not decode: {e}"));
    assert_eq!(
        decoded.encode_to_vec(),
        bytes,
        "{line}: bytes differ after a decode"
    );

    let json = serde_json::to_value(&message)
        .unwrap_or_else(|e| panic!("{line}: the message has no JSON form: {e}"));
    let from_json = DynamicMessage::deserialize(input.clone(), json.clone())
        .unwrap_or_else(|e| panic!("{line}: its JSON {json} does not read back: {e}"));
    assert_eq!(
        from_json.encode_to_vec(),
        bytes,
        "{line}: {json} reads back as another message"
    );

    let framed = request::frame(&message);
    assert_eq!(framed.len(), 5 + bytes.len(), "{line}");
    assert_eq!(framed[0], 0, "{line}: a compressed frame");
    assert_eq!(
        u32::from_be_bytes([framed[1], framed[2], framed[3], framed[4]]) as usize,
        bytes.len(),
        "{line}: the frame's length prefix"
    );
    assert_eq!(&framed[5..], bytes.as_slice(), "{line}");

    for ((_, value), chain) in variables.iter().zip(&route.path_fields) {
        let mut current = message.clone();
        let mut leaf = None;
        for (i, field) in chain.iter().enumerate() {
            let got = current.get_field(field).into_owned();
            if i + 1 == chain.len() {
                leaf = Some(got);
            } else if let Value::Message(inner) = got {
                current = inner;
            }
        }
        if let Some(Value::String(got)) = leaf {
            assert_eq!(
                &got, value,
                "{line}: the path's value of {}",
                route.template_text
            );
        }
    }
});
