//! The `till` application: HTTP host, GraphQL schema (thin resolvers), HTTP concerns,
//! configuration and CLI. Business rules live in `till-domain`, projections in
//! `till-read-models`.

// The futures of mutation resolvers nest a command's layers (retry, transaction, body)
// inside async-graphql's own; computing their layout needs more than the default 128.
#![recursion_limit = "256"]

pub mod app;
pub mod auth;
pub mod background;
pub mod buckets;
pub mod cli;
pub mod config;
pub mod graphql;
pub mod heap;
pub mod http;
pub mod jobs;
pub mod local_commits;
pub mod metrics;
pub mod networks;
pub mod rebuilds;
pub mod secret;
pub mod seed;
pub mod telemetry;
pub mod webhook_signatures;
