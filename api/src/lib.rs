//! # e-canteen: one inventory replica
//!
//! Canteen partners register, log in, and manage their products and stock through
//! GraphQL, and the original service's integrators through REST routes under `/ecanteen`. A replica keeps nothing another replica needs: sessions, login throttling,
//! idempotency records, pictures and the change feeds all live in the database (SQLite on one
//! host, PostgreSQL across many), so any replica can serve any request.
//!
//! # Layout
//!
//! - [`domain`]: typed values parsed once at the edge (`Username`, `Price`, `StockDelta`…);
//! - [`error`]: the one error enum and its stable codes;
//! - [`db`]: the SQLite/PostgreSQL pools, migrations, and how one code path serves both;
//! - [`service`]: every operation and rule (users, tokens, products, stock, pictures),
//!   no HTTP;
//! - [`sessions`]: partner sessions: the database-backed store and the typed session;
//! - [`events`]: live updates: one feed tailer per replica, fanned out to subscribers;
//! - [`graphql`]: the async-graphql schema, one module per area, merged;
//! - [`http`]: the axum router: `/graphql` (and its WebSocket), the REST routes under
//!   `/ecanteen`, pictures, health, metrics, sessions and auth;
//! - [`config`]: flags and `ECANTEEN_…` variables;
//! - [`startup`]: build, serve and drain a replica;
//! - [`telemetry`]: structured logs.
//!
//! `main.rs` only parses the configuration and runs [`startup::Application`].
//!
//! # Which layer may use which
//!
//! Dependencies point one way, from the edge inwards:
//! `http` → `graphql` → `sessions`, `events` → `service` → `db` → `domain`, `error`.
//! `db` knows no service rule and no session; `service` knows no transport; `graphql`
//! never imports `http` (the HTTP layer hands it what it needs as request data). A
//! test (`layers::dependencies_point_one_way`) reads the sources and fails on an import
//! that climbs.

pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod events;
pub mod graphql;
pub mod http;
pub mod service;
pub mod sessions;
pub mod startup;
pub mod telemetry;
