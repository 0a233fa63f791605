//! The api crate's integration tests: a real server on a random port against a real
//! PostgreSQL database of its own per test.

// Tests: a failed unwrap is the failure wanted, with the error's Debug.
#![allow(clippy::unwrap_used)]

mod accounts;
mod documents;
mod embedded;
mod federation;
mod graphql_http;
mod idempotency;
mod job_leases;
mod mutation_style;
mod observability;
mod oidc;
mod orders;
mod payments;
mod perimeter;
mod rebuilds;
mod replicas;
mod scale_out;
mod schema;
mod security;
mod seed;
mod sessions;
mod support;
mod throttling;
mod tls;
mod traces;
mod webhooks;
mod websockets;
mod worker;
