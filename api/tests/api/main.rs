//! Integration tests of one replica, through its full HTTP stack (no sockets, except in
//! `lifecycle`). Every test that touches data runs on SQLite and on PostgreSQL.
// Panicking on a broken expectation is what a test is for.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod caching;
mod cancellation;
mod client;
mod concurrency;
mod feed_order;
mod fuzz;
mod graphql_over_http;
mod layers;
mod lifecycle;
mod live;
mod migrations;
mod overload;
mod parity;
mod password;
mod persisted;
mod pictures;
mod products;
mod protection;
mod report;
mod rest;
mod schema;
mod sessions;
mod stock;
mod tenancy;
mod tokens;
mod users;
