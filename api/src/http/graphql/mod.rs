//! GraphQL over HTTP (the GraphQL-over-HTTP spec): POST with a JSON body, GET for
//! queries only, `application/graphql-response+json` responses with meaningful status
//! codes, batches up to a limit, and read-your-writes through `X-Consistency-Token`.

mod idempotency;
mod request;
mod response;

use std::sync::Arc;

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use async_graphql::parser::types::OperationType;
use serde::Deserialize;
use serde_json::{json, Value};

use request::from_json;
use request::{prepare, to_request, Params};
use response::{refusal, render, request_error, Media};

use crate::auth::Principal;
use crate::graphql::error::Code;
use crate::graphql::execution::Operations;
use crate::http::state::AppData;

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
    let idempotency_key = match idempotency::key_from(&req) {
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
        return idempotency::run(&data, media, info, key, value).await;
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
                match from_json(item, &data.graphql.documents) {
                    Ok(r) => requests.push(r),
                    Err(r) => return refusal(media, &r),
                }
            }
            Operations::Batch(requests)
        }
        v @ Value::Object(_) => match from_json(v, &data.graphql.documents) {
            Ok(r) => Operations::Single(Box::new(r)),
            Err(r) => return refusal(media, &r),
        },
        _ => return bad("the body must be a JSON object (or an array for a batch)"),
    };
    let single = matches!(batch, Operations::Single(_));
    render(media, single, &data.graphql.execute(batch, &info).await)
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
        &data.graphql.documents,
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
    let response = data
        .graphql
        .execute(Operations::Single(Box::new(op)), &info)
        .await;
    render(media, true, &response)
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
