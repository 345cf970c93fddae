//! Test-only crate: integration tests against real servers on loopback (`tests/`), interop tests
//! against real third-party peers (go-control-plane in `gocp/`, Envoy), and the in-process ADS
//! server those tests and the benches share.

#![forbid(unsafe_code)]

pub mod ads;
pub mod envoy;
pub mod gocp;
