//! Fit sessions (`Coordinator.Fit`, `Party.Fit`): each step's message,
//! then the bytes it declares in `data` frames.

use tonic::{Status, Streaming};

use crate::chunk::{Assembler, CHUNK_SIZE};
use crate::v1::FitFrame;
use crate::v1::fit_frame::Part;

/// Bytes `part` declares will follow it in `data` frames; `None` when the
/// declared lengths overflow.
pub fn fit_declared(part: &Part) -> Option<u64> {
    match part {
        Part::Open(o) => o.subjects_len.checked_add(o.labels_len),
        Part::Binned(b) => Some(b.sums_len),
        Part::Masked(s) | Part::Inbox(s) | Part::Contribution(s) => Some(s.total_len),
        _ => Some(0),
    }
}

/// `part`, then `data` in frames of at most [`CHUNK_SIZE`] bytes (none
/// when `data` is empty).
pub fn fit_frames(part: Part, data: &[u8]) -> Vec<FitFrame> {
    let mut frames = vec![FitFrame { part: Some(part) }];
    frames.extend(data.chunks(CHUNK_SIZE).map(|c| FitFrame { part: Some(Part::Data(c.to_vec())) }));
    frames
}

/// The next step of a fit session and the bytes it declared, refused over
/// `limit`; `None` when the stream ended cleanly between steps.
pub async fn next_fit(stream: &mut Streaming<FitFrame>, limit: u64) -> Result<Option<(Part, Vec<u8>)>, Status> {
    let part = match stream.message().await? {
        None => return Ok(None),
        Some(FitFrame { part: Some(Part::Data(_)) | None }) => {
            return Err(Status::invalid_argument("a fit session sent data frames without a step before them"));
        }
        Some(FitFrame { part: Some(part) }) => part,
    };
    let declared =
        fit_declared(&part).ok_or_else(|| Status::invalid_argument("a fit step declares more bytes than exist"))?;
    let mut bytes = Assembler::new("fit step data", declared, limit)?;
    let mut got = 0u64;
    while got < declared {
        match stream.message().await? {
            Some(FitFrame { part: Some(Part::Data(data)) }) => {
                got += data.len() as u64;
                bytes.push(&data)?;
            }
            Some(_) => return Err(Status::invalid_argument("a fit step's data ended before the bytes it declared")),
            None => return Err(Status::unavailable("the fit session ended in the middle of a step")),
        }
    }
    Ok(Some((part, bytes.finish()?)))
}
