//! # ecanteen-loadtest: the paper's experiment, replayed
//!
//! The 2023 Flask e-canteen was load-tested with Locust, ramping from 1 to 100 users; 20 %
//! of its requests failed and the average answer took 7.8 s. This crate replays that
//! scenario against a running stack (usually the balancer), measures it the same way,
//! and checks at the end that no acknowledged stock change was lost or doubled.
//!
//! It is built on tokio, the workspace's one test client (`ecanteen-test-client`, over
//! reqwest) and HDR histograms rather than goose (the Rust
//! counterpart of Locust): the run needs per-user state that outlives the run (the
//! acknowledged stock changes, fed into the ledger check), a capacity mode that re-runs
//! the load in steps, and the paper's exact tables as text, CSV, JSON and HTML; with goose
//! each of those would be written around its own runner and report anyway.
//!
//! # Layout
//!
//! - [`cli`]: the command line (`scenario` and `capacity`);
//! - [`api`]: one simulated partner's requests, over REST or GraphQL, sent through the
//!   test client, each timed, recorded and, when refused, waited out;
//! - [`scenario`]: the paper's user journey, the ramp and the end of the run;
//! - [`capacity`]: closed-loop steps of reads or stock changes, up to the bound;
//! - [`curve`]: the overload curve over a sweep of scenario runs;
//! - [`attack`]: hostile clients at their budgets while honest partners work;
//! - [`invariant`]: the ledger check that ends every run;
//! - [`metrics`]: what is recorded per request, per route and per second;
//! - [`report`]: the paper's tables and charts as text, CSV, JSON and HTML.

pub mod api;
pub mod attack;
pub mod capacity;
pub mod cli;
pub mod curve;
pub mod invariant;
pub mod metrics;
pub mod report;
pub mod scenario;
