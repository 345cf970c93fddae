//! Test-only crate: integration tests against real servers on loopback (`tests/`), and, as
//! they land, interop tests against real third-party peers (go-control-plane, Envoy, grpcio).

#![forbid(unsafe_code)]
