//! The OpenAPI 3.1 document of the routes, generated from the same descriptors and rules the
//! gateway serves, so it cannot drift from them.
//!
//! Schemas follow the proto3 JSON mapping: lowerCamelCase property names, 64-bit integers as
//! decimal strings, enums by name, well-known types by their JSON form. Unknown properties are
//! refused, as the gateway refuses them. In requests no property is `required` (proto3 has no
//! required fields); in responses every property is, as the gateway emits every field (an unset
//! message as `null`), except the members of a oneof, which appear only when set. A message
//! used both ways gets a second schema for responses, `<name>.Response`. `OUTPUT_ONLY` fields
//! are `readOnly`. Descriptions are the proto comments.

use std::collections::{BTreeMap, BTreeSet};

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor};
use prost_types::FileDescriptorProto;
use serde_json::{Map, Value as Json, json};

use super::{
    matcher::Matcher,
    rules::{BodyRule, Route},
};

/// How deep query parameters are flattened into nested messages.
const QUERY_DEPTH_MAX: usize = 3;

/// What the document says about the API as a whole.
#[derive(Debug, Clone)]
pub struct ApiInfo {
    pub title: String,
    pub version: String,
    pub description: String,
    /// gRPC paths (`/pkg.Service/Method`) callable without a token.
    pub public_methods: Vec<String>,
}

/// The proto comment attached to the element at `path` of `file`.
fn comment(file: &FileDescriptorProto, path: &[i32]) -> Option<String> {
    let info = file.source_code_info.as_ref()?;
    let location = info.location.iter().find(|l| l.path == path)?;
    let text = location.leading_comments.as_deref()?.trim();
    let joined = text.lines().map(str::trim).collect::<Vec<_>>().join(" ");
    (!joined.is_empty()).then_some(joined)
}

fn method_comment(method: &MethodDescriptor) -> Option<String> {
    comment(method.parent_file().file_descriptor_proto(), method.path())
}

fn schema_ref(name: &str) -> Json {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// Which side of a call a schema describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Request,
    Response,
}

/// Collects message schemas as they are referenced.
#[derive(Default)]
struct Schemas {
    schemas: BTreeMap<String, Json>,
    /// Messages some request carries: their response schemas take another name.
    in_requests: BTreeSet<String>,
}

/// Adds `message` and every message its fields hold to `into`.
fn reachable(message: &MessageDescriptor, into: &mut BTreeSet<String>) {
    if !into.insert(message.full_name().to_owned()) {
        return;
    }
    for field in message.fields() {
        if let Kind::Message(inner) = field.kind() {
            reachable(&inner, into);
        }
    }
}

impl Schemas {
    fn message(&mut self, message: &MessageDescriptor, side: Side) -> Json {
        if let Some(inline) = well_known(message) {
            return inline;
        }
        let name = match side {
            Side::Response if self.in_requests.contains(message.full_name()) => {
                format!("{}.Response", message.full_name())
            }
            _ => message.full_name().to_owned(),
        };
        if !self.schemas.contains_key(&name) {
            // Placeholder first: recursive messages refer to themselves.
            self.schemas.insert(name.clone(), json!({}));
            let mut properties = Map::new();
            let mut required = Vec::new();
            for field in message.fields() {
                let mut schema = self.field(&field, side);
                if side == Side::Response && field.containing_oneof().is_none() {
                    required.push(Json::String(field.json_name().to_owned()));
                    if matches!(field.kind(), Kind::Message(_))
                        && !field.is_list()
                        && !field.is_map()
                    {
                        schema = json!({ "anyOf": [schema, { "type": "null" }] });
                    }
                }
                if let (Some(text), Json::Object(map)) = (
                    comment(field.parent_file().file_descriptor_proto(), field.path()),
                    &mut schema,
                ) {
                    map.insert("description".into(), Json::String(text));
                }
                if super::rules::field_behaviors(&field)
                    .contains(&super::rules::behavior::OUTPUT_ONLY)
                    && let Json::Object(map) = &mut schema
                {
                    map.insert("readOnly".into(), Json::Bool(true));
                }
                properties.insert(field.json_name().to_owned(), schema);
            }
            let mut schema = json!({
                "type": "object",
                "properties": properties,
                "additionalProperties": false,
            });
            if !required.is_empty() {
                schema["required"] = Json::Array(required);
            }
            if let Some(text) = comment(
                message.parent_file().file_descriptor_proto(),
                message.path(),
            ) {
                schema["description"] = Json::String(text);
            }
            self.schemas.insert(name.clone(), schema);
        }
        schema_ref(&name)
    }

    fn field(&mut self, field: &FieldDescriptor, side: Side) -> Json {
        if field.is_map() {
            let value = match field.kind() {
                Kind::Message(entry) => entry
                    .get_field_by_name("value")
                    .map(|v| self.single(&v.kind(), side))
                    .unwrap_or_else(|| json!({})),
                _ => json!({}),
            };
            return json!({ "type": "object", "additionalProperties": value });
        }
        let single = self.single(&field.kind(), side);
        if field.is_list() {
            json!({ "type": "array", "items": single })
        } else {
            single
        }
    }

    fn single(&mut self, kind: &Kind, side: Side) -> Json {
        match kind {
            Kind::Double | Kind::Float => json!({ "type": "number" }),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                json!({ "type": "integer", "format": "int32" })
            }
            Kind::Uint32 | Kind::Fixed32 => {
                json!({ "type": "integer", "format": "int64", "minimum": 0, "maximum": u32::MAX })
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                json!({ "type": "string", "format": "int64", "pattern": "^-?[0-9]{1,19}$" })
            }
            Kind::Uint64 | Kind::Fixed64 => {
                json!({ "type": "string", "format": "uint64", "pattern": "^[0-9]{1,20}$" })
            }
            Kind::Bool => json!({ "type": "boolean" }),
            Kind::String => json!({ "type": "string" }),
            Kind::Bytes => json!({ "type": "string", "contentEncoding": "base64" }),
            Kind::Enum(e) => {
                let names: Vec<String> = e.values().map(|v| v.name().to_owned()).collect();
                json!({ "type": "string", "enum": names })
            }
            Kind::Message(m) => self.message(m, side),
        }
    }
}

/// The JSON form of the well-known types, inline.
fn well_known(message: &MessageDescriptor) -> Option<Json> {
    Some(match message.full_name() {
        "google.protobuf.Timestamp" => json!({ "type": "string", "format": "date-time" }),
        "google.protobuf.Duration" => {
            json!({ "type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$" })
        }
        "google.protobuf.FieldMask" => json!({ "type": "string" }),
        "google.protobuf.Empty" => json!({ "type": "object", "additionalProperties": false }),
        "google.protobuf.Struct" => json!({ "type": "object" }),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.ListValue" => json!({ "type": "array" }),
        "google.protobuf.Any" => json!({
            "type": "object",
            "properties": { "@type": { "type": "string" } },
            "additionalProperties": true,
        }),
        "google.protobuf.BoolValue" => json!({ "type": ["boolean", "null"] }),
        "google.protobuf.StringValue" => json!({ "type": ["string", "null"] }),
        "google.protobuf.BytesValue" => json!({ "type": ["string", "null"] }),
        "google.protobuf.DoubleValue" | "google.protobuf.FloatValue" => {
            json!({ "type": ["number", "null"] })
        }
        "google.protobuf.Int32Value" | "google.protobuf.UInt32Value" => {
            json!({ "type": ["integer", "null"] })
        }
        "google.protobuf.Int64Value" | "google.protobuf.UInt64Value" => {
            json!({ "type": ["string", "null"], "pattern": "^-?[0-9]+$" })
        }
        _ => return None,
    })
}

fn is_query_leaf(field: &FieldDescriptor) -> bool {
    match field.kind() {
        Kind::Message(m) => well_known(&m).is_some() && !m.full_name().ends_with("Struct"),
        _ => true,
    }
}

/// Query parameters of `message`: scalar fields, flattened through nested messages.
fn query_parameters(
    schemas: &mut Schemas,
    message: &MessageDescriptor,
    prefix: &str,
    route: &Route,
    depth: usize,
    out: &mut Vec<Json>,
) {
    for field in message.fields() {
        if field.is_map() {
            continue;
        }
        if depth == 0 {
            let bound_by_path = route
                .path_fields
                .iter()
                .any(|p| p.len() == 1 && p[0] == field);
            let bound_by_body = matches!(&route.body, BodyRule::Field(f) if *f == field);
            if bound_by_path || bound_by_body {
                continue;
            }
        }
        let name = format!("{prefix}{}", field.json_name());
        if is_query_leaf(&field) {
            let mut parameter = json!({
                "name": name,
                "in": "query",
                "required": false,
                "schema": schemas.field(&field, Side::Request),
            });
            if field.is_list() {
                parameter["explode"] = Json::Bool(true);
            }
            if let Some(text) = comment(field.parent_file().file_descriptor_proto(), field.path()) {
                parameter["description"] = Json::String(text);
            }
            out.push(parameter);
        } else if let Kind::Message(inner) = field.kind()
            && !field.is_list()
            && depth + 1 < QUERY_DEPTH_MAX
        {
            query_parameters(schemas, &inner, &format!("{name}."), route, depth + 1, out);
        }
    }
}

fn operation(schemas: &mut Schemas, route: &Route, id: String, info: &ApiInfo) -> Json {
    let method = &route.method;
    let input = method.input();
    let mut parameters = Vec::new();
    for (variable, chain) in route.template.variables.iter().zip(&route.path_fields) {
        let leaf = chain
            .last()
            .expect("rules resolve every variable to a field");
        parameters.push(json!({
            "name": variable.field_path.join("."),
            "in": "path",
            "required": true,
            "schema": schemas.field(leaf, Side::Request),
        }));
    }
    if route.body != BodyRule::Whole {
        query_parameters(schemas, &input, "", route, 0, &mut parameters);
    }
    let summary = method_comment(method).unwrap_or_else(|| method.name().to_owned());
    let mut op = json!({
        "operationId": id,
        "tags": [method.parent_service().name()],
        "summary": format!("{} ({})", method.name(), method.full_name()),
        "description": summary,
        "parameters": parameters,
    });
    let request_schema = match &route.body {
        BodyRule::None => None,
        BodyRule::Whole => Some(schemas.message(&input, Side::Request)),
        BodyRule::Field(field) => Some(schemas.field(field, Side::Request)),
    };
    if let Some(schema) = request_schema {
        op["requestBody"] = json!({
            "required": false,
            "content": { "application/json": { "schema": schema } },
        });
    }
    let response_schema = match &route.response_body {
        None => schemas.message(&method.output(), Side::Response),
        Some(field) => schemas.field(field, Side::Response),
    };
    let content_type = if route.server_streaming() {
        "application/x-ndjson"
    } else {
        "application/json"
    };
    op["responses"] = json!({
        "200": {
            "description": "OK",
            "content": { content_type: { "schema": response_schema } },
        },
        "default": {
            "description": "An error: the gRPC status code, its message and details.",
            "content": { "application/json": { "schema": schema_ref("Status") } },
        },
    });
    if info.public_methods.contains(&route.grpc_path) {
        op["security"] = json!([]);
    }
    op
}

/// The OpenAPI 3.1 document of every route in `matcher`.
pub fn document(matcher: &Matcher<Route>, info: &ApiInfo) -> Json {
    let mut schemas = Schemas::default();
    for (_, _, route) in matcher.routes() {
        // Whatever a request can carry: its body, path and query all set fields of the input.
        reachable(&route.method.input(), &mut schemas.in_requests);
    }
    let mut paths: BTreeMap<String, Map<String, Json>> = BTreeMap::new();
    let mut ids: BTreeMap<String, usize> = BTreeMap::new();
    for (http_method, template, route) in matcher.routes() {
        let base = format!(
            "{}_{}",
            route.method.parent_service().name(),
            route.method.name()
        );
        let seen = ids.entry(base.clone()).or_insert(0);
        let id = if *seen == 0 {
            base
        } else {
            format!("{base}_{seen}")
        };
        *seen += 1;
        let op = operation(&mut schemas, route, id, info);
        paths
            .entry(template.openapi_path())
            .or_default()
            .insert(http_method.as_str().to_ascii_lowercase(), op);
    }
    let mut components = Map::new();
    for (name, schema) in schemas.schemas {
        components.insert(name, schema);
    }
    components.insert(
        "Status".into(),
        json!({
            "type": "object",
            "description": "An error: `code` is the google.rpc.Code (gRPC status) number.",
            "properties": {
                "code": { "type": "integer", "format": "int32" },
                "message": { "type": "string" },
                "details": { "type": "array", "items": {
                    "type": "object",
                    "properties": { "@type": { "type": "string" } },
                    "required": ["@type"],
                    "additionalProperties": true,
                } },
            },
            "required": ["code", "message", "details"],
        }),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": info.title,
            "version": info.version,
            "description": info.description,
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearerAuth": { "type": "http", "scheme": "bearer" },
            },
        },
        "security": [{ "bearerAuth": [] }],
    })
}

#[cfg(test)]
mod tests {
    use prost_reflect::DescriptorPool;

    use super::*;

    fn doc() -> Json {
        let pool = DescriptorPool::decode(crate::proto::FILE_DESCRIPTOR_SET).unwrap();
        let matcher = super::super::rules::load(&pool).unwrap();
        document(
            &matcher,
            &ApiInfo {
                title: "t".into(),
                version: "1".into(),
                description: String::new(),
                public_methods: vec!["/tally.v1.SessionService/Login".into()],
            },
        )
    }

    #[test]
    fn routes_parameters_and_schemas_follow_the_rules() {
        let doc = doc();
        assert_eq!(doc["openapi"], "3.1.0");
        let get_user = &doc["paths"]["/v1/users/{username}"]["get"];
        assert_eq!(get_user["parameters"][0]["name"], "username");
        assert_eq!(get_user["parameters"][0]["in"], "path");
        let login = &doc["paths"]["/v1/sessions"]["post"];
        assert_eq!(login["security"], json!([]));
        assert_eq!(
            login["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/tally.v1.LoginRequest"
        );
        // Requests require nothing; responses carry every field, an unset message as null.
        assert!(doc["components"]["schemas"]["tally.v1.LoginRequest"]["required"].is_null());
        let user = &doc["components"]["schemas"]["tally.v1.User"];
        assert_eq!(
            user["properties"]["createdAt"]["anyOf"],
            json!([{"type": "string", "format": "date-time"}, {"type": "null"}])
        );
        assert_eq!(user["properties"]["fullName"]["type"], "string");
        assert_eq!(user["properties"]["roles"]["readOnly"], true);
        assert!(user["properties"]["fullName"]["readOnly"].is_null());
        let required: Vec<&str> = user["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|name| name.as_str().unwrap())
            .collect();
        assert_eq!(
            required,
            [
                "username",
                "fullName",
                "email",
                "emailVerified",
                "roles",
                "createdAt",
                "passwordChangedAt"
            ]
        );
        // A oneof's members are not required: they appear only when set.
        let result = &doc["components"]["schemas"]["tally.v1.CreateTransferResult"];
        assert!(result["required"].is_null(), "{result}");
        let list = &doc["paths"]["/v1/accounts"]["get"]["parameters"];
        let names: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"pageSize"), "{names:?}");
        assert!(doc["paths"]["/v1/users/{username}:resendVerification"]["post"].is_object());
    }
}
