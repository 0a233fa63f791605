//! Reading a GraphQL-over-HTTP request: its parameters (resolving persisted
//! documents) and the preamble every request passes: the media type, the principal and
//! the consistency wait.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpRequest, HttpResponse};
use async_graphql::Variables;
use serde::Deserialize;
use serde_json::{json, Value};
use till_domain::event_log::LogPoint;

use super::response::{negotiate, request_error, Media, JSON};
use crate::auth::AuthError;
use crate::graphql::error::Code;
use crate::graphql::execution::documents::{Documents, Operation, Refused};
use crate::graphql::RequestInfo;
use crate::http::clients::client_ip;
use crate::http::state::AppData;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Params {
    /// The document (or none, with a persisted query's hash).
    pub(crate) query: Option<Value>,
    /// Which of its operations runs.
    pub(crate) operation_name: Option<Value>,
    /// The variables, an object.
    pub(crate) variables: Option<Value>,
    /// Extensions (`persistedQuery`).
    pub(crate) extensions: Option<Value>,
}

/// Turns raw parameters into an async-graphql request (resolving persisted
/// documents), or says what is wrong.
pub(crate) fn to_request(p: Params, docs: &Documents) -> Result<Operation, Refused> {
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
pub(crate) fn from_json(body: Value, docs: &Documents) -> Result<Operation, Refused> {
    let params = serde_json::from_value::<Params>(body).map_err(|e| Refused {
        code: Code::BadUserInput,
        message: e.to_string(),
    })?;
    to_request(params, docs)
}

/// Common preamble: media type, principal, consistency wait.
pub(crate) async fn prepare(
    req: &HttpRequest,
    data: &AppData,
) -> Result<(Media, RequestInfo), HttpResponse> {
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
