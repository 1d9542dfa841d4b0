//! Bounded streaming of large byte strings.

use tonic::{Status, Streaming};

use crate::v1::Chunk;

/// Largest chunk a sender puts in one message.
pub const CHUNK_SIZE: usize = 1 << 20;

/// The decoding limit every service sets: one chunk plus room for the
/// envelope, or a request carrying a model file (models are capped well below
/// this by the receiving service).
pub const MESSAGE_LIMIT: usize = 2 << 20;

/// Why a streamed byte string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChunkError {
    /// The sender declared (or sent) more than the receiver accepts.
    #[error("{what} of {len} bytes exceeds the limit of {limit} bytes")]
    Oversized {
        /// What was being received.
        what: &'static str,
        /// Declared or received size.
        len: u64,
        /// The receiver's cap.
        limit: u64,
    },
    /// More bytes arrived than the header declared.
    #[error("{what}: more bytes than the {declared} declared")]
    Overrun {
        /// What was being received.
        what: &'static str,
        /// The size the header declared.
        declared: u64,
    },
    /// The stream ended before the declared size was reached.
    #[error("{what} is truncated: {got} of {declared} declared bytes arrived")]
    Truncated {
        /// What was being received.
        what: &'static str,
        /// Bytes that arrived.
        got: u64,
        /// The size the header declared.
        declared: u64,
    },
}

impl From<ChunkError> for Status {
    fn from(e: ChunkError) -> Status {
        Status::invalid_argument(e.to_string())
    }
}

/// Collects one declared-size byte string from chunks, refusing anything
/// over the cap or different from the declared size. Memory grows with what
/// actually arrives, never with what a sender claims.
#[derive(Debug)]
pub struct Assembler {
    what: &'static str,
    declared: u64,
    buf: Vec<u8>,
}

impl Assembler {
    /// Starts receiving `declared` bytes of `what`, refused at once if that
    /// exceeds `limit`.
    pub fn new(what: &'static str, declared: u64, limit: u64) -> Result<Assembler, ChunkError> {
        if declared > limit {
            return Err(ChunkError::Oversized { what, len: declared, limit });
        }
        Ok(Assembler { what, declared, buf: Vec::new() })
    }

    /// Appends a chunk.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), ChunkError> {
        if self.buf.len() as u64 + chunk.len() as u64 > self.declared {
            return Err(ChunkError::Overrun { what: self.what, declared: self.declared });
        }
        self.buf.extend_from_slice(chunk);
        Ok(())
    }

    /// The bytes, once exactly the declared size has arrived.
    pub fn finish(self) -> Result<Vec<u8>, ChunkError> {
        if self.buf.len() as u64 != self.declared {
            return Err(ChunkError::Truncated { what: self.what, got: self.buf.len() as u64, declared: self.declared });
        }
        Ok(self.buf)
    }
}

/// Splits `bytes` into [`Chunk`] messages of at most [`CHUNK_SIZE`] bytes.
/// An empty string is one empty chunk, so a receiver always sees a message.
pub fn chunks(bytes: &[u8]) -> Vec<Chunk> {
    if bytes.is_empty() {
        return vec![Chunk { data: Vec::new() }];
    }
    bytes.chunks(CHUNK_SIZE).map(|c| Chunk { data: c.to_vec() }).collect()
}

/// Reads a plain [`Chunk`] stream whose total size is unknown in advance,
/// refusing it as soon as it passes `limit`.
pub async fn collect(mut stream: Streaming<Chunk>, what: &'static str, limit: u64) -> Result<Vec<u8>, Status> {
    let mut buf = Vec::new();
    while let Some(chunk) = stream.message().await? {
        if buf.len() as u64 + chunk.data.len() as u64 > limit {
            return Err(ChunkError::Oversized { what, len: buf.len() as u64 + chunk.data.len() as u64, limit }.into());
        }
        buf.extend_from_slice(&chunk.data);
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assembles_exactly_the_declared_size() {
        let data: Vec<u8> = (0..(CHUNK_SIZE * 2 + 17)).map(|i| i as u8).collect();
        let mut a = Assembler::new("key", data.len() as u64, 1 << 30).expect("within limit");
        for c in chunks(&data) {
            assert!(c.data.len() <= CHUNK_SIZE);
            a.push(&c.data).expect("within declared size");
        }
        assert_eq!(a.finish().expect("complete"), data);
    }

    #[test]
    fn refuses_oversized_overrun_and_truncated() {
        assert_eq!(
            Assembler::new("key", 11, 10).unwrap_err(),
            ChunkError::Oversized { what: "key", len: 11, limit: 10 }
        );
        let mut a = Assembler::new("key", 4, 10).expect("within limit");
        a.push(b"abc").expect("fits");
        assert_eq!(a.push(b"de").unwrap_err(), ChunkError::Overrun { what: "key", declared: 4 });
        assert_eq!(a.finish().unwrap_err(), ChunkError::Truncated { what: "key", got: 3, declared: 4 });
        let status: Status = ChunkError::Overrun { what: "key", declared: 4 }.into();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn empty_bytes_are_one_empty_chunk() {
        assert_eq!(chunks(&[]).len(), 1);
    }
}
