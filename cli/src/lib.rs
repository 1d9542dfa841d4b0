//! The library half of the `jointscore` command: the sample book and the
//! local cluster harness that the quickstart, `bench e2e` and the network
//! tests share.

pub mod cluster;
pub mod sample;
