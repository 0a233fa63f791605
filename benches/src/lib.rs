//! Shared set-up for the criterion benches: a database of their own (an ephemeral
//! PostgreSQL cluster, as in tests) with a small catalog.

// (Bench helpers live in `benches/common/mod.rs`, included by each bench.)
