//! GraphQL object types: thin wrappers over read-model views, with `From` between
//! them (row, domain and GraphQL types stay separate).

pub mod catalog;
pub mod connection;
pub mod customer;
pub mod money;
pub mod node;
pub mod order;
pub mod reports;
pub mod scalars;
