//! The `till` application: HTTP host, GraphQL schema (thin resolvers), HTTP concerns,
//! configuration and CLI. Business rules live in `till-domain`, projections in
//! `till-read-models`.

pub mod app;
pub mod auth;
pub mod buckets;
pub mod cli;
pub mod commit_times;
pub mod config;
pub mod graphql;
pub mod heap;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod rebuilds;
pub mod seed;
pub mod telemetry;
