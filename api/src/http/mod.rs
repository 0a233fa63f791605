//! HTTP concerns: the GraphQL-over-HTTP endpoint, GraphiQL, SDL, health probes.

pub mod clients;
pub mod fake_provider;
pub mod graphiql;
pub mod graphql;
pub mod health;
pub mod payment_webhooks;
pub mod state;
pub mod subscriptions;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::DefaultHeaders;
use actix_web::middleware::Next;
use actix_web::web;
use actix_web::HttpMessage;
use tracing_actix_web::RequestId;

/// CORS for the configured browser origins only (none by default). Preflights are
/// answered for GET and POST with the headers clients send.
pub fn cors(origins: &[String]) -> actix_cors::Cors {
    let mut cors = actix_cors::Cors::default()
        .allowed_methods(["GET", "POST"])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            header::HeaderName::from_static("idempotency-key"),
            header::HeaderName::from_static("x-consistency-token"),
            header::HeaderName::from_static("graphql-require-preflight"),
            header::HeaderName::from_static("apollo-require-preflight"),
            header::HeaderName::from_static("x-apollo-operation-name"),
        ])
        .expose_headers([
            header::HeaderName::from_static("idempotent-replayed"),
            header::RETRY_AFTER,
        ])
        .max_age(600);
    for origin in origins {
        cors = cors.allowed_origin(origin);
    }
    cors
}

/// Headers every response carries (a page may set its own, stricter ones).
pub fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add((header::REFERRER_POLICY, "no-referrer"))
        .add((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        ))
        .add((header::CACHE_CONTROL, "no-store"))
}

/// Echoes the request id (the one in every log line of the request) as `X-Request-Id`,
/// so a client's report can be matched with the logs.
pub async fn request_id_header(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = req.extensions().get::<RequestId>().map(|r| r.to_string());
    let mut res = next.call(req).await?;
    if let Some(value) = id.and_then(|id| header::HeaderValue::from_str(&id).ok()) {
        res.headers_mut()
            .insert(header::HeaderName::from_static("x-request-id"), value);
    }
    Ok(res)
}

/// Counts and times every request by route pattern (bounded) and status.
pub async fn record_metrics(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = std::time::Instant::now();
    let route = req
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let res = next.call(req).await?;
    let status = res.status().as_u16().to_string();
    metrics::counter!("till_http_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("till_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    Ok(res)
}

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/graphql")
            .route(web::post().to(graphql::post))
            .route(
                web::get()
                    .guard(actix_web::guard::fn_guard(|ctx| {
                        ctx.head()
                            .headers()
                            .get(header::UPGRADE)
                            .and_then(|v| v.to_str().ok())
                            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
                    }))
                    .to(subscriptions::websocket),
            )
            .route(web::get().to(graphql::get))
            .route(web::route().to(graphql::method_not_allowed)),
    )
    .route("/schema.graphql", web::get().to(graphql::sdl))
    .route(
        "/webhooks/payments",
        web::post().to(payment_webhooks::payments),
    )
    .route(
        "/fake-provider/charges",
        web::post().to(fake_provider::charges),
    )
    .route(
        "/fake-provider/refunds",
        web::post().to(fake_provider::refunds),
    )
    .route("/healthz", web::get().to(health::healthz))
    .route("/readyz", web::get().to(health::readyz_public))
    .configure(graphiql::configure);
}
