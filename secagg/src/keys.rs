//! Key agreement on ristretto255 and authenticated encryption of shares.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use curve25519_dalek::Scalar;
use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::traits::IsIdentity;
use hkdf::Hkdf;
use rand_core::CryptoRngCore;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::PartyId;

/// A round's id: binds every derived key to the round, so nothing carries
/// over from one round to another. Fresh and unpredictable per round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionId(pub [u8; 16]);

pub(crate) const MASK_LABEL: &[u8] = b"jointscore.secagg.v1.mask";
pub(crate) const ENCRYPT_LABEL: &[u8] = b"jointscore.secagg.v1.encrypt";

/// A secret scalar and its public point; the secret is wiped on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct KeyPair {
    pub(crate) secret: Scalar,
    #[zeroize(skip)]
    pub(crate) public: [u8; 32],
}

impl KeyPair {
    /// A fresh key pair from `rng`.
    pub fn generate(rng: &mut impl CryptoRngCore) -> KeyPair {
        let secret = Scalar::random(rng);
        KeyPair { public: RistrettoPoint::mul_base(&secret).compress().to_bytes(), secret }
    }

    /// The public point's canonical encoding.
    pub fn public(&self) -> [u8; 32] {
        self.public
    }

    /// The key this pair shares with `peer` for `label` in `session`
    /// ([`agree`] with this pair's secret).
    pub fn shared_key(
        &self,
        peer: &RistrettoPoint,
        label: &[u8],
        session: &SessionId,
        a: PartyId,
        b: PartyId,
    ) -> [u8; 32] {
        agree(&self.secret, peer, label, session, a, b)
    }
}

/// A public key from the wire: canonical encoding, not the identity.
pub fn decode_public(bytes: &[u8; 32]) -> Option<RistrettoPoint> {
    CompressedRistretto(*bytes).decompress().filter(|p| !p.is_identity())
}

/// The key two parties share: HKDF-SHA-256 over their Diffie–Hellman point,
/// salted with the session, labelled with the purpose and both ids (in
/// order, so both ends derive the same key).
pub fn agree(
    secret: &Scalar,
    public: &RistrettoPoint,
    label: &[u8],
    session: &SessionId,
    a: PartyId,
    b: PartyId,
) -> [u8; 32] {
    let mut shared = (secret * public).compress().to_bytes();
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    let mut info = label.to_vec();
    info.extend_from_slice(&lo.to_be_bytes());
    info.extend_from_slice(&hi.to_be_bytes());
    let mut out = [0u8; 32];
    // 32 bytes is far below HKDF-SHA-256's 8160-byte limit: cannot fail.
    let _ = Hkdf::<Sha256>::new(Some(&session.0), &shared).expand(&info, &mut out);
    shared.zeroize();
    out
}

/// The nonce and associated data of one direction of one pair: the key is
/// shared by both directions, the nonce is not.
fn nonce_and_aad(session: &SessionId, from: PartyId, to: PartyId) -> ([u8; 12], Vec<u8>) {
    let mut nonce = [0u8; 12];
    nonce[..4].copy_from_slice(&from.to_be_bytes());
    nonce[4..8].copy_from_slice(&to.to_be_bytes());
    let mut aad = session.0.to_vec();
    aad.extend_from_slice(&nonce[..8]);
    (nonce, aad)
}

/// Encrypts `plain` from `from` to `to` under their shared `key`
/// (ChaCha20-Poly1305; the nonce and associated data name the session and
/// the direction, so a message cannot be replayed the other way or into
/// another session).
pub fn seal(key: &[u8; 32], session: &SessionId, from: PartyId, to: PartyId, plain: &[u8]) -> Vec<u8> {
    let (nonce, aad) = nonce_and_aad(session, from, to);
    ChaCha20Poly1305::new(Key::from_slice(key))
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad: &aad })
        // Encryption fails only for messages beyond 2^38 bytes.
        .unwrap_or_default()
}

/// Decrypts what [`seal`] sealed; `None` when authentication fails.
pub fn open(key: &[u8; 32], session: &SessionId, from: PartyId, to: PartyId, sealed: &[u8]) -> Option<Vec<u8>> {
    let (nonce, aad) = nonce_and_aad(session, from, to);
    ChaCha20Poly1305::new(Key::from_slice(key))
        .decrypt(Nonce::from_slice(&nonce), Payload { msg: sealed, aad: &aad })
        .ok()
}
