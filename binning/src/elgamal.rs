//! Exponential ElGamal on ristretto255: additively homomorphic encryption of
//! small integers, decrypted by baby-step giant-step.

use std::collections::HashMap;
use std::fmt;

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_TABLE;
use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoBasepointTable, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::Identity;
use rand_core::{CryptoRng, RngCore};
use rayon::prelude::*;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, Result};

/// Bytes of one encoded ciphertext (two points).
pub const CIPHERTEXT_BYTES: usize = 64;

/// The lender's decryption key. Zeroized on drop; `Debug` hides it.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SecretKey(Scalar);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<secret>)")
    }
}

/// The key anyone encrypts or re-randomises under: `h = x·G`, with a
/// precomputed table for fast fixed-base multiplication.
#[derive(Clone)]
pub struct PublicKey {
    point: RistrettoPoint,
    table: std::sync::Arc<RistrettoBasepointTable>,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({:02x?})", &self.to_bytes()[..8])
    }
}

/// `(r·G, m·G + r·h)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ciphertext {
    c1: RistrettoPoint,
    c2: RistrettoPoint,
}

impl SecretKey {
    /// A fresh key pair.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> (SecretKey, PublicKey) {
        let x = Scalar::random(rng);
        let sk = SecretKey(x);
        let pk = PublicKey::from_point(&x * RISTRETTO_BASEPOINT_TABLE);
        (sk, pk)
    }

    /// Decrypts a ciphertext known to hold a value in `0..=max`.
    pub fn decrypt(&self, c: &Ciphertext, table: &DlogTable) -> Result<u64> {
        table.solve(c.c2 - c.c1 * self.0)
    }
}

impl PublicKey {
    fn from_point(point: RistrettoPoint) -> PublicKey {
        PublicKey { point, table: std::sync::Arc::new(RistrettoBasepointTable::create(&point)) }
    }

    /// Encoded form.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.point.compress().to_bytes()
    }

    /// Reads a public key; refuses non-canonical encodings and the identity.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<PublicKey> {
        let p = CompressedRistretto(*bytes).decompress().ok_or(Error::InvalidEncoding("public key"))?;
        if p == RistrettoPoint::identity() {
            return Err(Error::InvalidEncoding("public key"));
        }
        Ok(PublicKey::from_point(p))
    }

    /// Encrypts `m` with fresh randomness.
    pub fn encrypt<R: RngCore + CryptoRng>(&self, m: u64, rng: &mut R) -> Ciphertext {
        let r = Scalar::random(rng);
        Ciphertext {
            c1: &r * RISTRETTO_BASEPOINT_TABLE,
            c2: &Scalar::from(m) * RISTRETTO_BASEPOINT_TABLE + &r * &*self.table,
        }
    }

    /// Encrypts many bits in parallel, each with fresh randomness from the
    /// operating system's generator.
    pub fn encrypt_bits(&self, bits: &[bool]) -> Vec<Ciphertext> {
        bits.par_chunks(1024)
            .flat_map_iter(|chunk| {
                let mut rng = rand_core::OsRng;
                // A bit needs no multiplication for its message part.
                chunk
                    .iter()
                    .map(move |&b| {
                        let mut c = self.encrypt(0, &mut rng);
                        if b {
                            c.c2 += RISTRETTO_BASEPOINT_TABLE.basepoint();
                        }
                        c
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The same plaintext under fresh randomness: `c + Enc(0)`.
    pub fn rerandomize<R: RngCore + CryptoRng>(&self, c: &Ciphertext, rng: &mut R) -> Ciphertext {
        c.add(&self.encrypt(0, rng))
    }
}

impl Ciphertext {
    /// Encryption of zero with no randomness: the neutral element of `add`.
    pub fn zero() -> Ciphertext {
        Ciphertext { c1: RistrettoPoint::identity(), c2: RistrettoPoint::identity() }
    }

    /// Homomorphic addition of the plaintexts.
    pub fn add(&self, other: &Ciphertext) -> Ciphertext {
        Ciphertext { c1: self.c1 + other.c1, c2: self.c2 + other.c2 }
    }

    /// Encoded form.
    pub fn to_bytes(&self) -> [u8; CIPHERTEXT_BYTES] {
        let mut out = [0u8; CIPHERTEXT_BYTES];
        out[..32].copy_from_slice(self.c1.compress().as_bytes());
        out[32..].copy_from_slice(self.c2.compress().as_bytes());
        out
    }

    /// Reads a ciphertext; refuses non-canonical point encodings.
    pub fn from_bytes(bytes: &[u8; CIPHERTEXT_BYTES]) -> Result<Ciphertext> {
        let point = |b: &[u8]| {
            let mut a = [0u8; 32];
            a.copy_from_slice(b);
            CompressedRistretto(a).decompress().ok_or(Error::InvalidEncoding("ciphertext"))
        };
        Ok(Ciphertext { c1: point(&bytes[..32])?, c2: point(&bytes[32..])? })
    }
}

/// Baby-step giant-step table for discrete logarithms in `0..=max`.
pub struct DlogTable {
    baby: HashMap<[u8; 32], u64>,
    step: u64,
    max: u64,
}

impl DlogTable {
    /// A table for values up to `max` (`~sqrt(max)` points).
    pub fn new(max: u64) -> DlogTable {
        let step = ((max + 1) as f64).sqrt().ceil() as u64;
        let step = step.max(1);
        let mut baby = HashMap::with_capacity(step as usize);
        let mut p = RistrettoPoint::identity();
        for j in 0..step {
            baby.insert(p.compress().to_bytes(), j);
            p += RISTRETTO_BASEPOINT_TABLE.basepoint();
        }
        DlogTable { baby, step, max }
    }

    /// `m` with `p = m·G`, if `m <= max`.
    fn solve(&self, p: RistrettoPoint) -> Result<u64> {
        let giant = &Scalar::from(self.step) * RISTRETTO_BASEPOINT_TABLE;
        let mut q = p;
        for i in 0..=self.max / self.step {
            if let Some(&j) = self.baby.get(&q.compress().to_bytes()) {
                let m = i * self.step + j;
                if m <= self.max {
                    return Ok(m);
                }
            }
            q -= giant;
        }
        Err(Error::OutOfRange(self.max))
    }
}
