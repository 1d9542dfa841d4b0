//! Streaming a PSI session's encoded set: a header, then whole 32-byte
//! points in chunks.

use tonic::{Status, Streaming};

use crate::chunk::{Assembler, CHUNK_SIZE};
use crate::v1::psi_open_chunk::Part;
use crate::v1::{PsiOpenChunk, PsiSession};

/// Bytes of one encoded point.
const POINT: u64 = 32;

/// A session header, then the encoded set (`POINT`-byte points) in chunks
/// of at most [`CHUNK_SIZE`] bytes; a chunk never splits a point.
pub fn psi_open_messages(header: PsiSession, set: &[u8]) -> Vec<PsiOpenChunk> {
    let mut messages = vec![PsiOpenChunk { part: Some(Part::Header(header)) }];
    messages.extend(set.chunks(CHUNK_SIZE).map(|c| PsiOpenChunk { part: Some(Part::Points(c.to_vec())) }));
    messages
}

/// Reads a session header and the encoded set it declares, refusing a set
/// of more than `max_points` points, a missing or second header, and any
/// size other than the declared one.
pub async fn collect_psi_open(
    mut stream: Streaming<PsiOpenChunk>,
    max_points: u64,
) -> Result<(PsiSession, Vec<u8>), Status> {
    let header = match stream.message().await? {
        Some(PsiOpenChunk { part: Some(Part::Header(h)) }) => h,
        _ => return Err(Status::invalid_argument("a PSI session must start with its header")),
    };
    let declared = header.set_len.checked_mul(POINT).ok_or_else(|| {
        Status::invalid_argument(format!("a set of {} points is more than can be held", header.set_len))
    })?;
    let mut set = Assembler::new("PSI encoded set", declared, max_points.saturating_mul(POINT))?;
    while let Some(chunk) = stream.message().await? {
        match chunk.part {
            Some(Part::Points(points)) => set.push(&points)?,
            _ => return Err(Status::invalid_argument("a PSI session sent a second header")),
        }
    }
    Ok((header, set.finish()?))
}
