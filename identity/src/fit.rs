//! What a fit session's members sign: the lender its request (spec,
//! training rows and the key its labels are encrypted under), and every
//! participant of the Gram round its key for that round. Parties check
//! both, so a coordinator can neither invent a fit nor slip its own key
//! into the round and read a party's masked columns.

use serde::{Deserialize, Serialize};

use crate::consortium::{Consortium, Role};
use crate::envelope::encode_fields;
use crate::error::Result;
use crate::key::{NodeKey, SIGNATURE_BYTES};

/// Domain tag of fit requests.
pub const FIT_REQUEST_DOMAIN: &str = "jointscore/fit-request/v1";
/// Domain tag of Gram-round keys.
pub const FIT_KEY_DOMAIN: &str = "jointscore/fit-key/v1";

/// A lender's request to fit a scorecard jointly.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FitRequest {
    /// Random per session, hex.
    pub fit_id: String,
    /// The lender, as the consortium file names it.
    pub lender: String,
    /// The fit spec's id.
    pub spec_id: String,
    /// Training rows.
    pub rows: u64,
    /// The labels' public key, hex.
    pub label_key: String,
    /// SHA-256 (hex) of the training subjects and the encrypted labels as
    /// sent.
    pub rows_sha256: String,
    /// When the lender signed, in milliseconds since the unix epoch.
    pub time_ms: u64,
}

impl FitRequest {
    /// The signed bytes: every field length-prefixed, in order, the
    /// numbers last.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        encode_fields(&mut out, &[&self.fit_id, &self.lender, &self.spec_id, &self.label_key, &self.rows_sha256]);
        out.extend_from_slice(&self.rows.to_le_bytes());
        out.extend_from_slice(&self.time_ms.to_le_bytes());
        out
    }

    /// The lender's signature.
    pub fn sign(&self, key: &NodeKey) -> [u8; SIGNATURE_BYTES] {
        key.sign(FIT_REQUEST_DOMAIN, &self.to_bytes())
    }

    /// Checks that `lender`, a current lender member of `consortium`,
    /// signed exactly this request (`now` in unix seconds). Freshness is
    /// the verifier's to check.
    pub fn verify(&self, consortium: &Consortium, signature: &[u8], now: u64) -> Result<()> {
        consortium.verify(&self.lender, Role::Lender, now, FIT_REQUEST_DOMAIN, &self.to_bytes(), signature)
    }
}

/// A participant's key for one Gram round.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FitKey {
    /// The fit session.
    pub fit_id: String,
    /// The round's session bytes, hex.
    pub session: String,
    /// The participant's number in the round.
    pub participant: u32,
    /// Its member name.
    pub name: String,
    /// Its key, hex.
    pub key: String,
}

impl FitKey {
    /// The signed bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        encode_fields(&mut out, &[&self.fit_id, &self.session, &self.name, &self.key]);
        out.extend_from_slice(&self.participant.to_le_bytes());
        out
    }

    /// The participant's signature.
    pub fn sign(&self, key: &NodeKey) -> [u8; SIGNATURE_BYTES] {
        key.sign(FIT_KEY_DOMAIN, &self.to_bytes())
    }

    /// Checks that `name`, a current member with `role`, signed exactly
    /// this key.
    pub fn verify(&self, consortium: &Consortium, role: Role, signature: &[u8], now: u64) -> Result<()> {
        consortium.verify(&self.name, role, now, FIT_KEY_DOMAIN, &self.to_bytes(), signature)
    }
}
