//! A whole jointscore consortium on loopback, and the sample book it serves.
//!
//! [`cluster::Cluster`] starts a coordinator and one party node per model
//! party, each with its own SQLite store in a temporary directory and its
//! own columns of a generated book ([`sample::subjects`]), all talking real
//! gRPC (mutual TLS by default), plus a lender with a fresh key set. The
//! integration tests of the services use it as their harness; the
//! quickstart and `jointscore bench e2e` run the same system, so what the
//! tests check is what a newcomer runs.

pub mod cluster;
pub mod history;
pub mod sample;
