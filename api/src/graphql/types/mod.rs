//! GraphQL object types, every one of them: thin wrappers over read-model views and
//! domain records, with `From` between them (row, domain and GraphQL types stay
//! separate). Mutation payloads are in `graphql::payloads`; inputs beside the
//! resolvers that take them.

pub mod catalog;
pub mod connection;
pub mod customer;
pub mod jobs;
pub mod money;
pub mod node;
pub mod order;
pub mod projections;
pub mod reports;
pub mod scalars;
