//! What every jointscore node shares beyond the wire format.
//!
//! `jointscore-proto` is the wire alone (generated messages and services,
//! chunked streams) and depends on no jointscore crate. This crate is the
//! glue the services (coordinator, party, lender) share on top of it:
//!
//! - [`NodeTls`]: mutual TLS between consortium members, for tonic servers
//!   and clients, and the role check of each call ([`NodeTls::admit`]);
//! - [`strict_crs`]: the CRS a consortium in strict mode pins, as nodes
//!   load it at start;
//! - [`plan_from_wire`] / [`plan_to_wire`]: the planner's plan kinds and
//!   their wire values;
//! - [`Health`], [`reflection`] and [`request_span`]: what every node
//!   serves beside its own service (`grpc.health.v1`, server reflection)
//!   and the tracing span each call runs in; [`incoming`]: connections a
//!   graceful shutdown can cut when its grace period ends;
//! - [`fit`]: fit sessions' messages to and from the learn and binning
//!   crates' types.

pub mod fit;
mod plan;
mod serve;
mod strict;
mod tls;

pub use plan::{plan_from_wire, plan_to_wire};
pub use serve::{
    Cut, CuttableStream, Health, MembersOnly, Reflection, ServerTask, cut_calls, incoming, reflection, request_span,
    server_ended, server_served,
};
pub use strict::strict_crs;
pub use tls::{NodeTls, Target, endpoint};
