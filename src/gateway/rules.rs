//! Reads every `google.api.http` rule (and its `additional_bindings`) out of a descriptor
//! pool and checks it against the method's messages: path variables and `body` must name
//! fields of the request, `response_body` a field of the response. A rule that does not parse
//! or does not fit, or two rules claiming the same method and path, fail start-up with a
//! message naming the method.

use http::Method;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
    Value,
};

use super::{
    matcher::Matcher,
    template::{Segment, Template},
};

/// Where the request body goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyRule {
    /// No body: every field comes from the path and the query.
    None,
    /// `body: "*"`: the body is the whole request message.
    Whole,
    /// `body: "field"`: the body is this field; the rest comes from path and query.
    Field(FieldDescriptor),
}

/// One HTTP binding of one RPC.
#[derive(Debug, Clone)]
pub struct Route {
    pub method: MethodDescriptor,
    /// `/package.Service/Method`.
    pub grpc_path: String,
    pub http_method: Method,
    pub template_text: String,
    pub template: Template,
    pub body: BodyRule,
    pub response_body: Option<FieldDescriptor>,
    /// Path variables resolved to their field chains.
    pub path_fields: Vec<Vec<FieldDescriptor>>,
    /// On an update (PATCH or PUT with `body: "*"`), the names (proto and JSON) of the
    /// resource's fields that a body may carry and the request ignores: the response message's
    /// `OUTPUT_ONLY`, `IMMUTABLE` and `IDENTIFIER` fields the request has no field for. So a
    /// resource read with GET, changed and sent back is accepted (read-modify-write).
    pub ignored_on_update: Vec<String>,
}

impl Route {
    pub fn server_streaming(&self) -> bool {
        self.method.is_server_streaming()
    }
}

/// `google.api.FieldBehavior` values (google/api/field_behavior.proto) the gateway acts on.
pub mod behavior {
    pub const OUTPUT_ONLY: i32 = 3;
    pub const IMMUTABLE: i32 = 5;
    pub const IDENTIFIER: i32 = 8;
}

/// The `google.api.field_behavior` values of `field` (empty when it has none).
pub fn field_behaviors(field: &FieldDescriptor) -> Vec<i32> {
    let Some(extension) = field
        .parent_pool()
        .get_extension_by_name("google.api.field_behavior")
    else {
        return Vec::new();
    };
    let options = field.options();
    if !options.has_extension(&extension) {
        return Vec::new();
    }
    match options.get_extension(&extension).as_ref() {
        Value::List(values) => values.iter().filter_map(Value::as_enum_number).collect(),
        _ => Vec::new(),
    }
}

/// See [`Route::ignored_on_update`].
fn ignored_on_update(
    method: &MethodDescriptor,
    http_method: &Method,
    body: &BodyRule,
) -> Vec<String> {
    let update = matches!(*http_method, Method::PATCH | Method::PUT) && *body == BodyRule::Whole;
    if !update {
        return Vec::new();
    }
    let input = method.input();
    method
        .output()
        .fields()
        .filter(|field| {
            field_behaviors(field).iter().any(|b| {
                [
                    behavior::OUTPUT_ONLY,
                    behavior::IMMUTABLE,
                    behavior::IDENTIFIER,
                ]
                .contains(b)
            })
        })
        .filter(|field| {
            input.get_field_by_name(field.name()).is_none()
                && input.get_field_by_json_name(field.json_name()).is_none()
        })
        .flat_map(|field| [field.name().to_owned(), field.json_name().to_owned()])
        .collect()
}

#[derive(Debug, thiserror::Error)]
#[error("google.api.http rule of {method}: {message}")]
pub struct RuleError {
    pub method: String,
    pub message: String,
}

/// Resolves a dotted field path (proto or JSON names) against `message`.
pub fn resolve_field_path(
    message: &MessageDescriptor,
    path: &[impl AsRef<str>],
) -> Result<Vec<FieldDescriptor>, String> {
    let mut chain = Vec::with_capacity(path.len());
    let mut current = message.clone();
    for (i, name) in path.iter().enumerate() {
        let name = name.as_ref();
        let field = current
            .get_field_by_name(name)
            .or_else(|| current.get_field_by_json_name(name))
            .ok_or_else(|| format!("`{name}` is not a field of {}", current.full_name()))?;
        if i + 1 < path.len() {
            match field.kind() {
                Kind::Message(m) if !field.is_list() && !field.is_map() => current = m,
                _ => return Err(format!("`{name}` is not a singular message field")),
            }
        }
        chain.push(field);
    }
    Ok(chain)
}

/// Every route of every service in `pool`, as a matcher.
pub fn load(pool: &DescriptorPool) -> Result<Matcher<Route>, RuleError> {
    let mut matcher = Matcher::default();
    let Some(http_ext) = pool.get_extension_by_name("google.api.http") else {
        tracing::warn!("the descriptor set lacks google.api.http; no HTTP routes");
        return Ok(matcher);
    };
    for service in pool.services() {
        for method in service.methods() {
            let options = method.options();
            if !options.has_extension(&http_ext) {
                continue;
            }
            if method.is_client_streaming() {
                tracing::info!(
                    rpc = method.full_name(),
                    "client and bidi streaming RPCs are not transcoded; skipping its HTTP rule"
                );
                continue;
            }
            let Value::Message(rule) = options.get_extension(&http_ext).into_owned() else {
                continue;
            };
            let mut rules = vec![rule.clone()];
            if let Some(Value::List(more)) = rule
                .get_field_by_name("additional_bindings")
                .map(|v| v.into_owned())
            {
                rules.extend(more.into_iter().filter_map(|v| match v {
                    Value::Message(m) => Some(m),
                    _ => None,
                }));
            }
            for rule in rules {
                let route = route(&method, &rule).map_err(|message| RuleError {
                    method: method.full_name().to_owned(),
                    message,
                })?;
                let (http_method, template) = (route.http_method.clone(), route.template.clone());
                let text = format!("{} {}", route.http_method, route.template_text);
                matcher
                    .insert(http_method, template, route)
                    .map_err(|other| RuleError {
                        method: method.full_name().to_owned(),
                        message: format!("{text} conflicts with {}", other.method.full_name()),
                    })?;
            }
        }
    }
    Ok(matcher)
}

fn string_field(message: &DynamicMessage, name: &str) -> String {
    message
        .get_field_by_name(name)
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn route(method: &MethodDescriptor, rule: &DynamicMessage) -> Result<Route, String> {
    let mut pattern = None;
    for (name, http_method) in [
        ("get", Method::GET),
        ("put", Method::PUT),
        ("post", Method::POST),
        ("delete", Method::DELETE),
        ("patch", Method::PATCH),
    ] {
        if rule.has_field_by_name(name) {
            pattern = Some((http_method, string_field(rule, name)));
        }
    }
    if rule.has_field_by_name("custom")
        && let Some(Value::Message(custom)) =
            rule.get_field_by_name("custom").map(|v| v.into_owned())
    {
        let kind = string_field(&custom, "kind");
        let http_method = Method::from_bytes(kind.as_bytes())
            .map_err(|_| format!("custom kind `{kind}` is not an HTTP method"))?;
        pattern = Some((http_method, string_field(&custom, "path")));
    }
    let (http_method, template_text) = pattern.ok_or("the rule names no HTTP method")?;
    let template = Template::parse(&template_text).map_err(|e| e.to_string())?;
    let input = method.input();
    let mut path_fields = Vec::new();
    for variable in &template.variables {
        let chain = resolve_field_path(&input, &variable.field_path)?;
        let leaf = chain.last().ok_or("empty field path")?;
        if leaf.is_list() || leaf.is_map() || matches!(leaf.kind(), Kind::Message(_)) {
            return Err(format!(
                "path variable `{}` must be a singular scalar field",
                variable.field_path.join(".")
            ));
        }
        let multi = variable.end - variable.start > 1
            || template.segments.get(variable.start) == Some(&Segment::DoubleWildcard);
        if multi && !matches!(leaf.kind(), Kind::String) {
            return Err(format!(
                "multi-segment variable `{}` must be a string",
                variable.field_path.join(".")
            ));
        }
        path_fields.push(chain);
    }
    let body = match string_field(rule, "body").as_str() {
        "" => BodyRule::None,
        "*" => BodyRule::Whole,
        name => {
            let field = input.get_field_by_name(name).ok_or(format!(
                "body `{name}` is not a field of {}",
                input.full_name()
            ))?;
            BodyRule::Field(field)
        }
    };
    if body != BodyRule::None && (http_method == Method::GET || http_method == Method::DELETE) {
        return Err(format!("{http_method} must not have a body"));
    }
    let response_body = match string_field(rule, "response_body").as_str() {
        "" => None,
        name => Some(method.output().get_field_by_name(name).ok_or(format!(
            "response_body `{name}` is not a field of {}",
            method.output().full_name()
        ))?),
    };
    Ok(Route {
        ignored_on_update: ignored_on_update(method, &http_method, &body),
        grpc_path: format!("/{}/{}", method.parent_service().full_name(), method.name()),
        method: method.clone(),
        http_method,
        template_text,
        template,
        body,
        response_body,
        path_fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tally_rpc_gets_at_least_one_route() {
        let pool = DescriptorPool::decode(crate::proto::FILE_DESCRIPTOR_SET).unwrap();
        let matcher = load(&pool).expect("the rules load");
        for service in pool.services().filter(|s| s.package_name() == "tally.v1") {
            for method in service.methods() {
                assert!(
                    matcher.routes().any(|(_, _, r)| r.method == method),
                    "{} has no route",
                    method.full_name()
                );
            }
        }
        // VerifyEmail's additional binding is a route of its own.
        let verify: Vec<_> = matcher
            .routes()
            .filter(|(_, _, r)| r.method.name() == "VerifyEmail")
            .map(|(m, _, r)| format!("{m} {}", r.template_text))
            .collect();
        assert_eq!(
            verify,
            ["POST /v1/users:verifyEmail", "GET /v1/verify_email"]
        );
    }

    #[test]
    fn field_paths_resolve_by_proto_or_json_name() {
        let pool = DescriptorPool::decode(crate::proto::FILE_DESCRIPTOR_SET).unwrap();
        let login = pool.get_message_by_name("tally.v1.LoginResponse").unwrap();
        let chain = resolve_field_path(&login, &["user", "fullName"]).unwrap();
        assert_eq!(chain[1].name(), "full_name");
        assert!(resolve_field_path(&login, &["user", "nope"]).is_err());
        assert!(resolve_field_path(&login, &["session_id", "x"]).is_err());
    }
}
