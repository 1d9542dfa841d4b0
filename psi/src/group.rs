//! ristretto255 pieces: hashing items to the group, session keys, and
//! exponentiation of point lists with strict decoding.

use std::fmt;

use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use rand_core::{CryptoRng, RngCore};
use rayon::prelude::*;
use sha2::{Digest, Sha512};
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
    // Fed to the hash piece by piece: the same digest as hashing the
    // concatenation, without copying every item into a buffer first.
    let hash = Sha512::new().chain_update(DOMAIN).chain_update((item.len() as u64).to_le_bytes()).chain_update(item);
    RistrettoPoint::from_hash(hash)
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
        let mut out = vec![[0u8; POINT_BYTES]; items.len()];
        out.par_chunks_mut(CHUNK).zip(items.par_chunks(CHUNK)).for_each(|(out, chunk)| {
            let points: Vec<RistrettoPoint> = chunk.iter().map(|item| hash_to_group(item.as_ref()) * *half).collect();
            compress_doubled_into(&points, out);
        });
        out
    }

    /// `p^k` for every received point, in order; refuses any point that is
    /// not a canonical encoding of a non-identity group element.
    pub(crate) fn raise(&self, points: &[[u8; POINT_BYTES]], what: &'static str) -> Result<Vec<[u8; POINT_BYTES]>> {
        raise_by(&self.half(), points, what)
    }

    /// `p^(1/k)` for every received point, in order (undoes this key's
    /// blinding: `(H(x)^(k b))^(1/k) = H(x)^b`); the same strict decoding
    /// as [`SessionKey::raise`].
    pub(crate) fn unblind(&self, points: &[[u8; POINT_BYTES]], what: &'static str) -> Result<Vec<[u8; POINT_BYTES]>> {
        // `k` is non-zero, so it has an inverse; `invert` is constant-time.
        let inverse = Zeroizing::new(self.0.invert());
        raise_by(&Zeroizing::new(*inverse * half_of_one()), points, what)
    }

    /// `k / 2`: raising to it and doubling lets a whole chunk of points be
    /// compressed with one shared field inversion (the group has odd order,
    /// so `2 * (k / 2) = k`).
    fn half(&self) -> Zeroizing<Scalar> {
        Zeroizing::new(self.0 * half_of_one())
    }
}

/// `1 / 2` in the scalar field.
fn half_of_one() -> Scalar {
    Scalar::from(2u8).invert()
}

/// `p^(2 half)` for every point, decoded strictly (canonical, not the
/// identity: the identity is no honest party's point, it would be the hash
/// of nothing) and written straight into the output, one chunk per task.
/// On error, the first invalid point's index.
fn raise_by(half: &Scalar, points: &[[u8; POINT_BYTES]], what: &'static str) -> Result<Vec<[u8; POINT_BYTES]>> {
    let decode = |bytes: &[u8; POINT_BYTES]| CompressedRistretto(*bytes).decompress().filter(|p| !p.is_identity());
    let mut out = vec![[0u8; POINT_BYTES]; points.len()];
    let all_valid = out.par_chunks_mut(CHUNK).zip(points.par_chunks(CHUNK)).try_for_each(|(out, chunk)| {
        let raised = chunk.iter().map(|bytes| decode(bytes).map(|p| p * half)).collect::<Option<Vec<_>>>()?;
        compress_doubled_into(&raised, out);
        Some(())
    });
    if all_valid.is_none() {
        // Tasks stop at the first invalid point each sees, not the first
        // overall: find that one (only on this error path).
        let index = points.par_iter().position_first(|p| decode(p).is_none()).unwrap_or(0);
        return Err(Error::InvalidPoint { what, index });
    }
    Ok(out)
}

/// Points per batch compression; large enough to amortise the inversion,
/// small enough to spread over the rayon pool.
const CHUNK: usize = 512;

/// Writes the encoding of `2 * p` for every point into `out` (as long as
/// `points`), with one batched inversion.
fn compress_doubled_into(points: &[RistrettoPoint], out: &mut [[u8; POINT_BYTES]]) {
    for (slot, c) in out.iter_mut().zip(RistrettoPoint::double_and_compress_batch(points)) {
        *slot = c.to_bytes();
    }
}

/// Whether `bytes` can be a ristretto255 encoding of a group element other
/// than the identity, judged from its bytes alone: a canonical,
/// non-negative field element (below `2^255 - 19`, lowest bit clear), not
/// zero. A full decoding (a square root) is what tells whether it is a
/// point; this is for points that are only compared, never multiplied,
/// where a non-point can never equal an honest encoding.
pub(crate) fn plausible_encoding(bytes: &[u8; POINT_BYTES]) -> bool {
    let top = bytes[31];
    // `2^255 - 19` is `ed ff … ff 7f` little-endian: at or above it is not
    // canonical.
    let below_p = top < 0x7f || (top == 0x7f && (bytes[1..31].iter().any(|&b| b != 0xff) || bytes[0] < 0xed));
    below_p && bytes[0] & 1 == 0 && bytes.iter().any(|&b| b != 0)
}
