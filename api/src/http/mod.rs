//! HTTP concerns: the GraphQL-over-HTTP endpoint, GraphiQL, SDL, health probes.

pub mod graphiql;
pub mod graphql;
pub mod health;
pub mod idempotency;

use actix_web::web;

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/graphql")
            .route(web::post().to(graphql::post))
            .route(web::get().to(graphql::get))
            .route(web::route().to(graphql::method_not_allowed)),
    )
    .route("/schema.graphql", web::get().to(graphql::sdl))
    .route("/healthz", web::get().to(health::healthz))
    .route("/readyz", web::get().to(health::readyz))
    .configure(graphiql::configure);
}
