//! The answer to a GraphQL-over-HTTP request: the media type negotiated from `Accept`,
//! and the status code each outcome gets under it.

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use serde_json::json;

use crate::graphql::error::Code;
use crate::graphql::execution::documents::Refused;

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json; charset=utf-8";
pub(crate) const JSON: &str = "application/json; charset=utf-8";

/// The response media type negotiated from `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Media {
    GraphqlResponse,
    Json,
}

impl Media {
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Media::GraphqlResponse => GRAPHQL_RESPONSE,
            Media::Json => JSON,
        }
    }
}

pub(crate) fn negotiate(req: &HttpRequest) -> Option<Media> {
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
pub(crate) fn request_error(
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

/// The answer to a request whose document could not be resolved.
pub(crate) fn refusal(media: Media, r: &Refused) -> HttpResponse {
    request_error(StatusCode::BAD_REQUEST, media, r.code, &r.message)
}

/// Serializes a response with the status code the media type calls for.
pub(crate) fn render(
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
