//! GraphQL over HTTP (the GraphQL-over-HTTP spec): POST with a JSON body, GET for
//! queries only, `application/graphql-response+json` responses with meaningful status
//! codes, batches up to a limit, and read-your-writes through `X-Consistency-Token`.

use std::net::IpAddr;
use std::sync::Arc;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use async_graphql::parser::types::OperationType;
use async_graphql::{Request, Variables};
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::{json, Value};
use till_domain::event_log::LogPoint;

use crate::app::AppData;
use crate::auth::{AuthError, Principal};
use crate::graphql::cost::{self, charge_unpriced, Charged};
use crate::graphql::error::{self, Code};
use crate::graphql::fixed_cost::FirstSight;
use crate::graphql::{operations, RequestInfo};

use super::documents::{Documents, Operation, Parsed, Refused};

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json; charset=utf-8";
const JSON: &str = "application/json; charset=utf-8";

/// The response media type negotiated from `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Media {
    GraphqlResponse,
    Json,
}

impl Media {
    pub(super) fn content_type(self) -> &'static str {
        match self {
            Media::GraphqlResponse => GRAPHQL_RESPONSE,
            Media::Json => JSON,
        }
    }
}

fn negotiate(req: &HttpRequest) -> Option<Media> {
    let Some(accept) = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
    else {
        return Some(Media::Json);
    };
    let types: Vec<String> = accept
        .split(',')
        .map(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .collect();
    if types
        .iter()
        .any(|t| t == "application/graphql-response+json")
    {
        Some(Media::GraphqlResponse)
    } else if types
        .iter()
        .any(|t| t == "application/json" || t == "*/*" || t == "application/*")
    {
        // Legacy clients (and `*/*`) get application/json, as the spec recommends.
        Some(Media::Json)
    } else {
        None
    }
}

/// A whole-request error in GraphQL response shape.
pub(super) fn request_error(
    status: StatusCode,
    media: Media,
    code: Code,
    message: &str,
) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, media.content_type()))
        .json(
            json!({ "errors": [{ "message": message, "extensions": { "code": code.as_str() } }] }),
        )
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Params {
    query: Option<Value>,
    operation_name: Option<Value>,
    variables: Option<Value>,
    extensions: Option<Value>,
}

/// Turns raw parameters into an async-graphql request (resolving persisted
/// documents), or says what is wrong.
pub(super) fn to_request(p: Params, docs: &Documents) -> Result<Operation, Refused> {
    let bad = |m: &str| Refused {
        code: Code::BadUserInput,
        message: m.to_owned(),
    };
    let query = match p.query {
        Some(Value::String(q)) => Some(q),
        None | Some(Value::Null) => None,
        Some(_) => return Err(bad("`query` must be a string")),
    };
    let extensions = match p.extensions {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => Some(v),
        Some(_) => return Err(bad("`extensions` must be an object")),
    };
    let query = docs.resolve(query, extensions.as_ref())?;
    let mut op = docs.request(query);
    match p.operation_name {
        None | Some(Value::Null) => {}
        Some(Value::String(name)) => op.request = op.request.operation_name(name),
        Some(_) => return Err(bad("`operationName` must be a string")),
    }
    match p.variables {
        None | Some(Value::Null) => {}
        Some(v @ Value::Object(_)) => op.request = op.request.variables(Variables::from_json(v)),
        Some(_) => return Err(bad("`variables` must be an object")),
    }
    Ok(op)
}

/// A JSON request object into an async-graphql request.
pub(super) fn from_json(body: Value, docs: &Documents) -> Result<Operation, Refused> {
    let params = serde_json::from_value::<Params>(body).map_err(|e| Refused {
        code: Code::BadUserInput,
        message: e.to_string(),
    })?;
    to_request(params, docs)
}

/// The answer to a request whose document could not be resolved.
pub(super) fn refusal(media: Media, r: &Refused) -> HttpResponse {
    request_error(StatusCode::BAD_REQUEST, media, r.code, &r.message)
}

/// The client's address: the peer, or when the peer is a trusted proxy, the
/// right-most `X-Forwarded-For` hop that is not itself a trusted proxy.
pub(super) fn client_ip(req: &HttpRequest, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let mut client = peer;
    // Several header lines are one list in order (RFC 9110), and each proxy appends
    // to its end: walk the lines from the last one, each from its right.
    let lines: Vec<_> = req.headers().get_all("x-forwarded-for").collect();
    for value in lines.into_iter().rev() {
        let Ok(text) = value.to_str() else {
            return Some(client);
        };
        for hop in text.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) if is_trusted(&ip) => client = ip,
                Ok(ip) => return Some(ip),
                Err(_) => return Some(client),
            }
        }
    }
    Some(client)
}

/// Common preamble: media type, principal, consistency wait.
async fn prepare(req: &HttpRequest, data: &AppData) -> Result<(Media, RequestInfo), HttpResponse> {
    let Some(media) = negotiate(req) else {
        return Err(HttpResponse::NotAcceptable()
            .insert_header((header::CONTENT_TYPE, JSON))
            .json(json!({ "errors": [{ "message": "accept application/graphql-response+json or application/json", "extensions": { "code": "BAD_USER_INPUT" } }] })));
    };
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let principal = data.auth.principal(auth).await.map_err(|e| {
        if matches!(e, AuthError::Unavailable) {
            let mut r = request_error(
                StatusCode::SERVICE_UNAVAILABLE,
                media,
                Code::ServiceUnavailable,
                &e.to_string(),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        }
        let mut r = request_error(
            StatusCode::UNAUTHORIZED,
            media,
            Code::Unauthenticated,
            &e.to_string(),
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
        r
    })?;
    let mut reads = None;
    if let Some(raw) = req.headers().get("x-consistency-token") {
        let point = raw
            .to_str()
            .ok()
            .and_then(LogPoint::from_token)
            .ok_or_else(|| {
                request_error(
                    StatusCode::BAD_REQUEST,
                    media,
                    Code::BadUserInput,
                    "X-Consistency-Token is not a token from a mutation payload",
                )
            })?;
        let wait = data.api.consistency_wait;
        let following = data.api.reads.following(point, wait).await;
        let Ok(following) = following else {
            let mut r = request_error(
                StatusCode::SERVICE_UNAVAILABLE,
                media,
                Code::ServiceUnavailable,
                &format!(
                    "the read models did not reach the consistency token within {} ms; retry shortly",
                    wait.as_millis()
                ),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return Err(r);
        };
        // With read replicas: wait (bounded, holding no connection) for one that has
        // replayed the projector's commit covering the token; the primary serves the
        // request otherwise. Its reads never see less than the token either way.
        following.caught_up_replica().await;
        reads = Some(following);
    }
    Ok((
        media,
        RequestInfo {
            principal,
            // The id in the request's log lines and X-Request-Id; it also correlates the
            // events the request appends.
            request_id: req
                .extensions()
                .get::<tracing_actix_web::RequestId>()
                .map(|r| **r)
                .unwrap_or_else(uuid::Uuid::now_v7),
            idempotency: None,
            client_ip: client_ip(req, &data.trusted_proxies),
            reads,
        },
    ))
}

fn with_context(request: Request, info: &RequestInfo) -> Request {
    request.data(info.clone())
}

/// Executes one request with its per-request context; every error gets a code.
///
/// A query whose document passed full validation before skips the rules that depend
/// on the document alone:
/// - when its cost depends on the variables, it runs on `AppData::known`, which
///   repeats only that analysis (cost, depth) and the guard;
/// - when its cost is fixed (`graphql::fixed_cost`), it runs on `AppData::priced`,
///   with no extension: this function charges the cost noted on its first run, and
///   limits its time and counts it as the guard would.
///
/// The one rule that also looks at variables checks their values against the arguments
/// they feed; on those schemas a bad value is caught instead when the argument is read,
/// as an error async-graphql raises without a code. Such a response is thrown away and
/// the request runs again with full validation, so the client gets the same request
/// error as on first sight (queries have no effects; the rate limit is charged and the
/// operation counted once). A bad variable that is never read as an argument (only in
/// `@skip`/`@include`, or below a null parent) is not caught this way
/// (docs/security.md).
pub(super) async fn execute_one(
    data: &AppData,
    op: Operation,
    info: &RequestInfo,
) -> async_graphql::Response {
    let Operation { request, parsed } = op;
    let missing = parsed
        .as_ref()
        .and_then(|p| p.missing_variable(request.operation_name.as_deref(), &request.variables));
    if let Some((name, ty)) = missing {
        let mut response = async_graphql::Response::from_errors(vec![error::request(
            Code::BadUserInput,
            format!("variable `${name}` of required type `{ty}` was not provided"),
        )]);
        if let Some(limiter) = &data.rate {
            charge_unpriced(limiter, info, &mut response);
        }
        return response;
    }
    let known = parsed
        .as_ref()
        .filter(|p| p.validated() && p.selects_query(request.operation_name.as_deref()));
    let response = match known {
        Some(parsed) => {
            let again = (
                request.query.clone(),
                request.operation_name.clone(),
                request.variables.clone(),
            );
            let first = match parsed.fixed_cost() {
                Some(cost) => run_priced(data, parsed, request, info, cost).await,
                None => data.known.execute(with_context(request, info)).await,
            };
            if first.errors.iter().all(has_code) {
                first
            } else {
                let (query, operation_name, variables) = again;
                let mut request = Request::new(query).variables(variables).data(Charged);
                if let Some(name) = operation_name {
                    request = request.operation_name(name);
                }
                request.set_parsed_query(parsed.document().clone());
                let mut full = data.schema.execute(with_context(request, info)).await;
                if let Some(cost) = first.extensions.get("cost") {
                    full.extensions
                        .entry("cost".to_owned())
                        .or_insert_with(|| cost.clone());
                }
                full
            }
        }
        None => {
            let mut request = with_context(request, info);
            // Only a document kept parsed can remember its cost.
            let seen = parsed.as_ref().map(|_| Arc::new(FirstSight::default()));
            if let Some(seen) = &seen {
                request = request.data(seen.clone());
            }
            let response = data.schema.execute(request).await;
            if response.errors.is_empty() {
                if let Some(parsed) = &parsed {
                    parsed.mark_validated(seen.and_then(|s| s.fixed_cost()));
                }
            }
            response
        }
    };
    let mut response = with_codes(response);
    if let Some(limiter) = &data.rate {
        charge_unpriced(limiter, info, &mut response);
    }
    response
}

/// Runs a validated query of fixed `cost` on the schema without the guard, doing the
/// guard's work around it: the charge (refused with THROTTLED before anything runs), the
/// time limit, and the operation's span and metrics. The alias and root-field limits
/// held on its first run and depend on its text alone. The time limit, span and
/// duration cover the request's preparation (fast validation) too, which the guard's
/// execute hook did not: microseconds for a document kept parsed.
async fn run_priced(
    data: &AppData,
    parsed: &Parsed,
    request: Request,
    info: &RequestInfo,
    cost: usize,
) -> async_graphql::Response {
    let charge = match &data.rate {
        Some(limiter) => match limiter.pay(info, cost) {
            (charge, Ok(())) => Some(charge),
            (charge, Err(refused)) => {
                let mut response = async_graphql::Response::from_errors(vec![refused]);
                cost::report(&charge, &mut response);
                return response;
            }
        },
        None => None,
    };
    let name = parsed
        .operation_name(request.operation_name.as_deref())
        .map(str::to_owned);
    let mut response = operations::observe(
        Some(OperationType::Query),
        name.as_deref(),
        data.query_timeout,
        true,
        data.priced.execute(with_context(request, info)),
    )
    .await;
    if let Some(charge) = charge {
        cost::report(&charge, &mut response);
    }
    response
}

/// True when an error carries a code: every error Till raises does; async-graphql's
/// own (input coercion, validation) do not.
fn has_code(e: &async_graphql::ServerError) -> bool {
    e.extensions
        .as_ref()
        .is_some_and(|x| x.get("code").is_some())
}

/// One operation, or a batch of them (run concurrently, answered in order).
pub(super) enum Operations {
    Single(Box<Operation>),
    Batch(Vec<Operation>),
}

async fn execute(data: &AppData, media: Media, info: RequestInfo, ops: Operations) -> HttpResponse {
    let (single, response) = match ops {
        Operations::Single(op) => (
            true,
            async_graphql::BatchResponse::Single(execute_one(data, *op, &info).await),
        ),
        Operations::Batch(ops) => (
            false,
            async_graphql::BatchResponse::Batch(
                futures_util::future::join_all(
                    ops.into_iter().map(|op| execute_one(data, op, &info)),
                )
                .await,
            ),
        ),
    };
    render(media, single, &response)
}

/// Serializes a response with the status code the media type calls for.
pub(super) fn render(
    media: Media,
    single: bool,
    response: &async_graphql::BatchResponse,
) -> HttpResponse {
    let throttled = throttled_for(response);
    let status = match (response, single, media) {
        // The caller's rate-limit bucket could not pay: 429 whatever the media type.
        _ if throttled.is_some() => StatusCode::TOO_MANY_REQUESTS,
        // The request never reached execution: parse or validation failure.
        (async_graphql::BatchResponse::Single(r), true, Media::GraphqlResponse)
            if r.data == async_graphql::Value::Null
                && !r.errors.is_empty()
                && r.errors.iter().all(|e| e.path.is_empty()) =>
        {
            StatusCode::BAD_REQUEST
        }
        // Nothing could be answered because a dependency is down: say so at the HTTP
        // level too, so load balancers and clients back off.
        (async_graphql::BatchResponse::Single(r), true, _) if whole_request_unavailable(r) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::OK,
    };
    let serialized = if status == StatusCode::BAD_REQUEST {
        // The request never executed: the spec wants no `data` entry at all.
        serde_json::to_value(response).and_then(|mut v| {
            if let Some(map) = v.as_object_mut() {
                map.remove("data");
            }
            serde_json::to_vec(&v)
        })
    } else {
        serde_json::to_vec(response)
    };
    let body = match serialized {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "response serialization failed");
            return request_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                media,
                Code::Internal,
                "internal error",
            );
        }
    };
    let mut builder = HttpResponse::build(status);
    builder.insert_header((header::CONTENT_TYPE, media.content_type()));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        builder.insert_header((header::RETRY_AFTER, "1"));
    }
    if let Some(secs) = throttled {
        builder.insert_header((header::RETRY_AFTER, secs.to_string()));
    }
    builder.body(body)
}

/// Seconds to wait when every operation of the request was refused as THROTTLED.
fn throttled_for(response: &async_graphql::BatchResponse) -> Option<u64> {
    let retry_after = |r: &async_graphql::Response| {
        let e = r.errors.first()?.extensions.as_ref()?;
        if e.get("code")? != &async_graphql::Value::from(Code::Throttled.as_str()) {
            return None;
        }
        match e.get("retryAfter")? {
            async_graphql::Value::Number(n) => n.as_u64(),
            _ => None,
        }
    };
    match response {
        async_graphql::BatchResponse::Single(r) => retry_after(r),
        async_graphql::BatchResponse::Batch(rs) => rs
            .iter()
            .map(retry_after)
            .collect::<Option<Vec<u64>>>()
            .and_then(|v| v.into_iter().max()),
    }
}

/// Gives every error a code: errors from parsing, validation and the depth and
/// complexity limits come without one from async-graphql; they are the client's.
fn with_codes(mut r: async_graphql::Response) -> async_graphql::Response {
    for e in &mut r.errors {
        if !has_code(e) {
            let code = if e.path.is_empty() {
                Code::BadUserInput
            } else {
                Code::Internal
            };
            e.extensions
                .get_or_insert_with(Default::default)
                .set("code", code.as_str());
        }
    }
    r
}

/// True when every error is SERVICE_UNAVAILABLE and no root field has data.
fn whole_request_unavailable(r: &async_graphql::Response) -> bool {
    let no_data = match &r.data {
        async_graphql::Value::Null => true,
        async_graphql::Value::Object(fields) => {
            fields.values().all(|v| *v == async_graphql::Value::Null)
        }
        _ => false,
    };
    no_data
        && !r.errors.is_empty()
        && r.errors.iter().all(|e| {
            e.extensions
                .as_ref()
                .and_then(|x| x.get("code"))
                .is_some_and(|c| {
                    *c == async_graphql::Value::from(Code::ServiceUnavailable.as_str())
                })
        })
}

/// `POST /graphql`.
pub async fn post(
    req: HttpRequest,
    payload: web::Payload,
    data: web::Data<Arc<AppData>>,
) -> HttpResponse {
    let (media, info) = match prepare(&req, &data).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if content_type != "application/json" && content_type != "application/graphql+json" {
        return request_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            media,
            Code::BadUserInput,
            "send the request as Content-Type: application/json",
        );
    }
    let bad = |m: &str| request_error(StatusCode::BAD_REQUEST, media, Code::BadUserInput, m);
    let body = match payload.to_bytes_limited(data.max_body_bytes).await {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => return bad("the request body could not be read"),
        Err(_) => {
            return request_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                media,
                Code::BadUserInput,
                &format!(
                    "the request body is larger than {} bytes",
                    data.max_body_bytes
                ),
            )
        }
    };
    let idempotency_key = match super::idempotency::key_from(&req) {
        Ok(k) => k,
        Err(m) => return bad(m),
    };
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return bad("the body is not valid JSON"),
    };
    // Keys are scoped to an account; anonymous callers share no scope, so their keys
    // are ignored rather than risk replaying one client's result to another.
    if let (Some(key), Value::Object(_), Principal::User { .. }) =
        (&idempotency_key, &value, info.principal)
    {
        return super::idempotency::run(&data, media, info, key, value).await;
    }
    let batch = match value {
        Value::Array(_) if idempotency_key.is_some() => {
            return bad("an Idempotency-Key covers one request, not a batch");
        }
        Value::Array(items) => {
            if items.is_empty() {
                return bad("an empty batch");
            }
            if items.len() > data.max_batch {
                return bad(&format!(
                    "a batch holds at most {} operations",
                    data.max_batch
                ));
            }
            let mut requests = Vec::with_capacity(items.len());
            for item in items {
                match from_json(item, &data.documents) {
                    Ok(r) => requests.push(r),
                    Err(r) => return refusal(media, &r),
                }
            }
            Operations::Batch(requests)
        }
        v @ Value::Object(_) => match from_json(v, &data.documents) {
            Ok(r) => Operations::Single(Box::new(r)),
            Err(r) => return refusal(media, &r),
        },
        _ => return bad("the body must be a JSON object (or an array for a batch)"),
    };
    execute(&data, media, info, batch).await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetParams {
    query: Option<String>,
    operation_name: Option<String>,
    variables: Option<String>,
    extensions: Option<String>,
}

/// `GET /graphql`: queries only; a mutation is refused with 405 (GET must be safe).
pub async fn get(req: HttpRequest, data: web::Data<Arc<AppData>>) -> HttpResponse {
    let (media, info) = match prepare(&req, &data).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if data.csrf_prevention && !forces_preflight(&req) {
        return request_error(
            StatusCode::BAD_REQUEST,
            media,
            Code::BadUserInput,
            "GET requests must carry a non-empty `GraphQL-Require-Preflight` (or \
             `Apollo-Require-Preflight` / `X-Apollo-Operation-Name`) header; this protects \
             against cross-site request forgery",
        );
    }
    let bad = |m: &str| request_error(StatusCode::BAD_REQUEST, media, Code::BadUserInput, m);
    let params = match web::Query::<GetParams>::from_query(req.query_string()) {
        Ok(p) => p.into_inner(),
        Err(_) => return bad("malformed query string"),
    };
    let parse_json = |s: Option<String>, what: &str| -> Result<Option<Value>, String> {
        match s {
            None => Ok(None),
            Some(s) => serde_json::from_str::<Value>(&s)
                .map(Some)
                .map_err(|_| format!("`{what}` is not valid JSON")),
        }
    };
    let variables = match parse_json(params.variables, "variables") {
        Ok(v) => v,
        Err(m) => return bad(&m),
    };
    let extensions = match parse_json(params.extensions, "extensions") {
        Ok(v) => v,
        Err(m) => return bad(&m),
    };
    let mut op = match to_request(
        Params {
            query: params.query.map(Value::String),
            operation_name: params.operation_name.clone().map(Value::String),
            variables,
            extensions,
        },
        &data.documents,
    ) {
        Ok(r) => r,
        Err(r) => return refusal(media, &r),
    };
    if let Ok(doc) = op.request.parsed_query() {
        let op_type = match params.operation_name.as_deref() {
            Some(name) => doc
                .operations
                .iter()
                .find(|(n, _)| n.map(|n| n.as_str()) == Some(name))
                .map(|(_, op)| op.node.ty),
            None => doc.operations.iter().next().map(|(_, op)| op.node.ty),
        };
        if matches!(
            op_type,
            Some(OperationType::Mutation | OperationType::Subscription)
        ) {
            return HttpResponse::MethodNotAllowed()
                .insert_header((header::ALLOW, "POST"))
                .insert_header((header::CONTENT_TYPE, media.content_type()))
                .json(json!({ "errors": [{ "message": "mutations are only accepted over POST", "extensions": { "code": "BAD_USER_INPUT" } }] }));
        }
    }
    execute(&data, media, info, Operations::Single(Box::new(op))).await
}

/// True when the request carries a header a browser cannot send cross-site without a
/// CORS preflight (Apollo's CSRF prevention rule for requests with no content type).
fn forces_preflight(req: &HttpRequest) -> bool {
    [
        "graphql-require-preflight",
        "apollo-require-preflight",
        "x-apollo-operation-name",
    ]
    .iter()
    .any(|h| req.headers().get(*h).is_some_and(|v| !v.is_empty()))
}

/// Any other method on `/graphql`.
pub async fn method_not_allowed() -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .insert_header((header::ALLOW, "GET, POST"))
        .finish()
}

/// `GET /schema.graphql`: the SDL.
pub async fn sdl(data: web::Data<Arc<AppData>>) -> HttpResponse {
    if !data.conveniences.explorer {
        return HttpResponse::NotFound().finish();
    }
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(data.sdl.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn ip(s: &str) -> Option<IpAddr> {
        s.parse().ok()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = ["10.0.0.0/8"]
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
        let from = |peer: &str, xff: Option<&str>| {
            let mut r = TestRequest::default().peer_addr(
                format!("{peer}:4000")
                    .parse()
                    .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into()),
            );
            if let Some(x) = xff {
                r = r.insert_header(("x-forwarded-for", x));
            }
            client_ip(&r.to_http_request(), &trusted)
        };
        // A direct client cannot choose its address.
        assert_eq!(from("203.0.113.5", Some("1.2.3.4")), ip("203.0.113.5"));
        // Through the proxy: the right-most hop that is not a proxy; spoofed hops to
        // its left are ignored.
        assert_eq!(
            from("10.1.1.1", Some("1.2.3.4, 198.51.100.7, 10.2.2.2")),
            ip("198.51.100.7")
        );
        assert_eq!(from("10.1.1.1", None), ip("10.1.1.1"));
        assert_eq!(from("10.1.1.1", Some("garbage")), ip("10.1.1.1"));
    }

    /// A proxy that appends its own `X-Forwarded-For` line (instead of extending the
    /// client's) puts the address it saw last: the client's own line is to the left.
    #[test]
    fn an_appended_forwarded_for_line_is_read_from_the_end() {
        let trusted: Vec<IpNet> = ["10.0.0.0/8"]
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
        let r = TestRequest::default()
            .peer_addr(([10, 1, 1, 1], 4000).into())
            .append_header(("x-forwarded-for", "1.2.3.4"))
            .append_header(("x-forwarded-for", "198.51.100.7"))
            .to_http_request();
        assert_eq!(client_ip(&r, &trusted), ip("198.51.100.7"));
    }
}
