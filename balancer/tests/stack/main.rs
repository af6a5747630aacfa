//! The balancer as operators run it: real processes on loopback ports.
//!
//! Replicas are either real `ecanteen-api` processes on one SQLite file, or small HTTP
//! backends inside the test (for behaviour a real replica cannot be made to show on
//! demand, such as being slow).
// Panicking on a broken expectation is what a test is for.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

mod failover;
mod faults;
mod hangups;
mod hostile;
mod hosts;
mod limits;
mod operations;
mod overload;
mod proxying;
mod secrets;
mod selection;
mod startup;
mod tracing;
mod wire;
