//! The `jointscore.v1` gRPC protocol: generated messages and services, and
//! the helpers every service uses to stream large byte strings in bounded
//! chunks.
//!
//! This crate is the wire format alone: it depends on no other jointscore
//! crate, so anyone can build a client from it. What the nodes share on top
//! of it (mutual TLS, plan kinds on the wire, the strict-mode CRS) is in
//! `jointscore-net`.
//!
//! Keys and ciphertext lists are far larger than gRPC's default 4 MB message
//! limit (a compressed evaluation key is ~25 MB), so they travel as a header
//! that declares their exact size followed by chunks of at most
//! [`CHUNK_SIZE`] bytes. A receiver uses an [`Assembler`] with a cap for the
//! kind of bytes it expects: a declared size over the cap, more bytes than
//! declared or fewer are refused before anything is decoded.

mod chunk;
mod fit;
mod psi;
mod result;

pub use chunk::{Assembler, CHUNK_SIZE, ChunkError, MESSAGE_LIMIT, chunks, collect};
pub use fit::{fit_declared, fit_frames, next_fit};
pub use psi::{collect_psi_open, psi_open_messages};
pub use result::{collect_result, job_result_messages, next_job};

/// Generated code for package `jointscore.v1`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("jointscore.v1");
}

/// The encoded `FileDescriptorSet` of `jointscore.v1` (and what it
/// imports), for gRPC server reflection: register it with
/// `tonic_reflection::server::Builder::register_encoded_file_descriptor_set`.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/jointscore_descriptor.bin"));
