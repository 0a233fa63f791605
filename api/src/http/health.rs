//! Liveness and readiness probes.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::app::AppData;

/// `/healthz`: the process is alive (no dependency checks).
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// `/readyz`: the database answers and every embedded migration is applied.
pub async fn readyz(data: web::Data<Arc<AppData>>) -> HttpResponse {
    if data.shutting_down() {
        return HttpResponse::ServiceUnavailable().json(json!({ "status": "shutting down" }));
    }
    match tokio::time::timeout(
        Duration::from_secs(2),
        till_domain::db::check_ready(&data.pool),
    )
    .await
    {
        Ok(Ok(())) => HttpResponse::Ok()
            .json(json!({ "status": "ready", "database": "ok", "migrations": "current" })),
        Ok(Err(reason)) => {
            tracing::warn!(%reason, "not ready");
            HttpResponse::ServiceUnavailable()
                .json(json!({ "status": "unready", "reason": reason }))
        }
        Err(_) => HttpResponse::ServiceUnavailable()
            .json(json!({ "status": "unready", "reason": "database check timed out" })),
    }
}
