//! Liveness, readiness and metrics, shared by `till serve` (on its main port, or on the
//! admin port when `TILL_ADMIN_LISTEN` is set) and `till worker` (admin port only).
//! The main port's `/readyz` answers only the status; the detail is the admin port's.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::json;

use crate::metrics::Scrape;

/// What the probes and the scrape look at.
pub struct AdminState {
    /// Pool, caches and projections.
    pub scrape: Scrape,
    /// Set when shutdown begins (readiness turns unready).
    pub shutting_down: Arc<AtomicBool>,
    /// Readiness fails when a projection is further behind than this (None: no check).
    pub max_lag: Option<Duration>,
}

/// `/healthz`: the process is alive (no dependency checks).
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// `/readyz` on the admin port (and in `till worker`): not shutting down, the database
/// answers, every embedded migration is applied, and no projection is hopelessly
/// behind; says why not (the database's error, the pending migrations, the projection
/// that is behind) and how far each projection lags.
pub async fn readyz(state: web::Data<Arc<AdminState>>) -> HttpResponse {
    let (ready, detail) = readiness(&state).await;
    respond(ready, detail)
}

/// `/readyz` on the public port: the same check, answering only `{"status": ...}`.
/// The reasons (database error text, pending migration versions, projection lag) are
/// for operators: on the admin port (`TILL_ADMIN_LISTEN`) and in the log.
pub async fn readyz_public(state: web::Data<Arc<AdminState>>) -> HttpResponse {
    let (ready, detail) = readiness(&state).await;
    let status = detail
        .get("status")
        .cloned()
        .unwrap_or_else(|| json!("unready"));
    respond(ready, json!({ "status": status }))
}

fn respond(ready: bool, body: serde_json::Value) -> HttpResponse {
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Whether this process is ready, and the detail.
async fn readiness(state: &AdminState) -> (bool, serde_json::Value) {
    if state.shutting_down.load(Ordering::Acquire) {
        return (false, json!({ "status": "shutting down" }));
    }
    let pool = &state.scrape.pool;
    match tokio::time::timeout(Duration::from_secs(2), till_domain::db::check_ready(pool)).await {
        Ok(Ok(())) => {}
        Ok(Err(reason)) => {
            tracing::warn!(%reason, "not ready");
            return (false, json!({ "status": "unready", "reason": reason }));
        }
        Err(_) => {
            tracing::warn!("not ready: the database check timed out");
            return (
                false,
                json!({ "status": "unready", "reason": "database check timed out" }),
            );
        }
    }
    let mut projections = serde_json::Map::new();
    if let Some(max) = state.max_lag {
        let status = tokio::time::timeout(
            Duration::from_secs(2),
            state.scrape.reads.projection_status(),
        )
        .await;
        if let Ok(Ok(status)) = status {
            for s in &status {
                projections.insert(
                    s.name.to_owned(),
                    json!({ "lagEvents": s.lag_events, "lagSeconds": s.lag_seconds }),
                );
            }
            if let Some(s) = status.iter().find(|s| s.lag_seconds > max.as_secs_f64()) {
                tracing::warn!(
                    projection = s.name,
                    lag_seconds = s.lag_seconds,
                    "not ready: projection behind"
                );
                return (
                    false,
                    json!({
                        "status": "unready",
                        "reason": format!("projection {} is {:.0} s behind the log", s.name, s.lag_seconds),
                        "projections": projections,
                    }),
                );
            }
        }
    }
    let mut detail = json!({
        "status": "ready",
        "database": "ok",
        "migrations": "current",
        "projections": projections,
    });
    // Read replicas are shown, not required: reads fall back to the primary.
    let replicas = state.scrape.reads.sources().status();
    if !replicas.is_empty() {
        detail["replicas"] = json!(replicas);
    }
    (true, detail)
}

/// `/metrics`: Prometheus text format.
pub async fn metrics(state: web::Data<Arc<AdminState>>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.scrape.render().await)
}

/// Registers `/healthz`, `/readyz` and `/metrics`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

/// Serves the probes and metrics on their own address (the admin port).
pub fn serve_admin(
    addr: SocketAddr,
    state: Arc<AdminState>,
) -> std::io::Result<actix_web::dev::Server> {
    let data = web::Data::new(state);
    Ok(
        HttpServer::new(move || App::new().app_data(data.clone()).configure(routes))
            .workers(1)
            .disable_signals()
            .shutdown_timeout(5)
            .bind(addr)?
            .run(),
    )
}
