//! ristretto255 pieces: hashing items to the group, session keys, and
//! exponentiation of point lists with strict decoding.

use std::fmt;

use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use rand_core::{CryptoRng, RngCore};
use rayon::prelude::*;
use sha2::Sha512;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{Error, Result};

/// Domain-separation tag of the hash to the group; part of the protocol
/// version: both sides must use the same.
pub const DOMAIN: &[u8] = b"jointscore/psi/v1/hash-to-ristretto255";

/// Bytes of one encoded point on the wire.
pub const POINT_BYTES: usize = 32;

/// `H(item)`: SHA-512 of the tag, the item's length and the item, mapped to
/// the group (Elligator, as `RistrettoPoint::hash_from_bytes`).
pub fn hash_to_group(item: &[u8]) -> RistrettoPoint {
    let mut input = Vec::with_capacity(DOMAIN.len() + 8 + item.len());
    input.extend_from_slice(DOMAIN);
    input.extend_from_slice(&(item.len() as u64).to_le_bytes());
    input.extend_from_slice(item);
    RistrettoPoint::hash_from_bytes::<Sha512>(&input)
}

/// A party's secret exponent for one session. Zeroized on drop; `Debug`
/// does not print it.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SessionKey(Scalar);

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(<secret>)")
    }
}

impl SessionKey {
    /// A fresh uniformly random non-zero scalar.
    pub fn random<R: RngCore + CryptoRng>(rng: &mut R) -> SessionKey {
        loop {
            let s = Scalar::random(rng);
            if s != Scalar::ZERO {
                return SessionKey(s);
            }
        }
    }

    /// `H(item)^k` for every item, encoded, in order.
    pub(crate) fn hash_and_raise<T: AsRef<[u8]> + Sync>(&self, items: &[T]) -> Vec<[u8; POINT_BYTES]> {
        let half = self.half();
        items
            .par_chunks(CHUNK)
            .flat_map_iter(|chunk| {
                let points: Vec<RistrettoPoint> =
                    chunk.iter().map(|item| hash_to_group(item.as_ref()) * *half).collect();
                compress_doubled(&points)
            })
            .collect()
    }

    /// `p^k` for every received point, in order; refuses any point that is
    /// not a canonical encoding of a group element.
    pub(crate) fn raise(&self, points: &[[u8; POINT_BYTES]], what: &'static str) -> Result<Vec<[u8; POINT_BYTES]>> {
        let half = self.half();
        let chunks: Vec<Vec<[u8; POINT_BYTES]>> = points
            .par_chunks(CHUNK)
            .enumerate()
            .map(|(c, chunk)| {
                let raised = chunk
                    .iter()
                    .enumerate()
                    .map(|(i, bytes)| {
                        // Canonical encodings only; the identity is no honest
                        // party's point (it would be the hash of nothing).
                        CompressedRistretto(*bytes)
                            .decompress()
                            .filter(|p| !p.is_identity())
                            .map(|p| p * *half)
                            .ok_or(Error::InvalidPoint { what, index: c * CHUNK + i })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(compress_doubled(&raised))
            })
            .collect::<Result<_>>()?;
        Ok(chunks.concat())
    }

    /// `k / 2`: raising to it and doubling lets a whole chunk of points be
    /// compressed with one shared field inversion (the group has odd order,
    /// so `2 * (k / 2) = k`).
    fn half(&self) -> Zeroizing<Scalar> {
        Zeroizing::new(self.0 * Scalar::from(2u8).invert())
    }
}

/// Points per batch compression; large enough to amortise the inversion,
/// small enough to spread over the rayon pool.
const CHUNK: usize = 512;

/// Encodings of `2 * p` for every point, with one batched inversion.
fn compress_doubled(points: &[RistrettoPoint]) -> Vec<[u8; POINT_BYTES]> {
    RistrettoPoint::double_and_compress_batch(points).into_iter().map(|c| c.to_bytes()).collect()
}
