//! # ecanteen-balancer: the front door
//!
//! A pingora reverse proxy over any number of `ecanteen-api` replicas. Replicas are
//! stateless, so any of them can serve any request; the balancer spreads requests,
//! keeps away from replicas that fail, and never replays a write.
//!
//! # Layout
//!
//! - [`config`]: flags and `ECANTEEN_BALANCER_…` variables;
//! - [`upstream`]: replicas, health state, leases, round robin and least connections
//!   (and the races they accept);
//! - [`proxy`]: the request path on pingora-core (one task per request: lease, pooled
//!   connection, request and answer, retries, errors, WebSocket tunnels);
//! - [`keepalive`]: idle connections to the replicas, kept per worker thread;
//! - [`routes`]: what the balancer knows of the replicas' routes (envelopes, body
//!   bounds, which writes honour an `Idempotency-Key`, which may become a WebSocket);
//! - [`retry`]: whether a failed attempt is sent again (one pure function);
//! - [`refusal`]: what the balancer answers itself, in the route's envelope;
//! - [`forwarding`]: what changes in a request and its answer on the way through;
//! - [`tracecontext`]: the W3C `traceparent` continued or started, for the logs;
//! - [`limits`]: rate limits per client IP and per partner (429);
//! - [`connections`]: caps on client connections, in all and per address;
//! - [`client_addr`]: the client's address, from `X-Forwarded-For` behind trusted
//!   proxies;
//! - [`health`]: active `GET /readyz` probes with rise/fall;
//! - [`discovery`]: the upstreams file, re-read when it changes;
//! - [`spawn`]: `--spawn N`, local replicas started and supervised;
//! - [`admin`]: `/status` and `/metrics`;
//! - [`metrics`]: the balancer-wide counters and latency histogram;
//! - [`server`]: assembling all of it into a pingora `Server`.

pub mod admin;
pub mod client_addr;
pub mod config;
pub mod connections;
pub mod discovery;
pub mod forwarding;
pub mod health;
pub mod keepalive;
pub mod limits;
pub mod metrics;
pub mod proxy;
pub mod refusal;
pub mod retry;
pub mod routes;
pub mod server;
pub mod spawn;
pub mod tracecontext;
pub mod upstream;
