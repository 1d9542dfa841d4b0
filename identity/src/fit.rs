//! What a fit session's members sign: the lender its request (spec,
//! training rows, the key its labels are encrypted under and its sealing
//! key), every party its sealing key for the fit, and every participant of
//! the Gram round its key for that round. Parties and the lender check
//! them, so a coordinator can neither invent a fit nor slip its own key
//! in and read a party's bins, WoE tables or masked columns.

use serde::{Deserialize, Serialize};

use crate::consortium::{Consortium, Role};
use crate::envelope::encode_fields;
use crate::error::Result;
use crate::key::{NodeKey, SIGNATURE_BYTES};

/// Domain tag of fit requests.
pub const FIT_REQUEST_DOMAIN: &str = "jointscore/fit-request/v2";
/// Domain tag of a party's sealing key for one fit.
pub const FIT_SEAL_KEY_DOMAIN: &str = "jointscore/fit-seal-key/v1";
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
    /// The lender's ephemeral key for this fit, hex: the parties seal
    /// their bins to it.
    pub seal_key: String,
}

impl FitRequest {
    /// The signed bytes: every field length-prefixed, in order, the
    /// numbers last.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        encode_fields(
            &mut out,
            &[&self.fit_id, &self.lender, &self.spec_id, &self.label_key, &self.rows_sha256, &self.seal_key],
        );
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

/// A party's ephemeral key for sealing its bins to the lender (and
/// opening its WoE tables) in one fit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FitSealKey {
    /// The fit session.
    pub fit_id: String,
    /// The party's member name.
    pub name: String,
    /// Its key, hex.
    pub key: String,
}

impl FitSealKey {
    /// The signed bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        encode_fields(&mut out, &[&self.fit_id, &self.name, &self.key]);
        out
    }

    /// The party's signature.
    pub fn sign(&self, key: &NodeKey) -> [u8; SIGNATURE_BYTES] {
        key.sign(FIT_SEAL_KEY_DOMAIN, &self.to_bytes())
    }

    /// Checks that `name`, a current party member, signed exactly this key.
    pub fn verify(&self, consortium: &Consortium, signature: &[u8], now: u64) -> Result<()> {
        consortium.verify(&self.name, Role::Party, now, FIT_SEAL_KEY_DOMAIN, &self.to_bytes(), signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consortium(members: &[(&str, &str, &NodeKey)]) -> Consortium {
        let mut text = String::from("name = \"test\"\n");
        for (name, role, key) in members {
            text.push_str(&format!(
                "[[member]]\nname = \"{name}\"\nrole = \"{role}\"\npublic_key = \"{}\"\n",
                key.public_hex()
            ));
        }
        Consortium::from_toml(&text).expect("consortium")
    }

    #[test]
    fn fit_requests_and_round_keys_verify_only_as_signed_by_their_member() {
        let (lender, bank) = (NodeKey::generate(), NodeKey::generate());
        let c = consortium(&[
            ("coordinator", "coordinator", &NodeKey::generate()),
            ("lender", "lender", &lender),
            ("bank", "party", &bank),
        ]);
        let request = FitRequest {
            fit_id: "f1".into(),
            lender: "lender".into(),
            spec_id: "s".into(),
            rows: 300,
            label_key: "ab".into(),
            rows_sha256: "cd".into(),
            time_ms: 7,
            seal_key: "01".into(),
        };
        let signature = request.sign(&lender);
        request.verify(&c, &signature, 1).expect("the lender's request");
        assert!(FitRequest { rows: 301, ..request.clone() }.verify(&c, &signature, 1).is_err());
        assert!(FitRequest { seal_key: "02".into(), ..request.clone() }.verify(&c, &signature, 1).is_err());
        assert!(FitRequest { lender: "bank".into(), ..request.clone() }.verify(&c, &request.sign(&bank), 1).is_err());

        let key =
            FitKey { fit_id: "f1".into(), session: "00".into(), participant: 0, name: "bank".into(), key: "ef".into() };
        let signature = key.sign(&bank);
        key.verify(&c, Role::Party, &signature, 1).expect("the bank's key");
        assert!(key.verify(&c, Role::Lender, &signature, 1).is_err(), "another role");
        assert!(FitKey { participant: 1, ..key.clone() }.verify(&c, Role::Party, &signature, 1).is_err());
        let forged = FitKey { name: "bank".into(), ..key.clone() }.sign(&lender);
        assert!(key.verify(&c, Role::Party, &forged, 1).is_err(), "signed by another member");

        let seal = FitSealKey { fit_id: "f1".into(), name: "bank".into(), key: "aa".into() };
        let signature = seal.sign(&bank);
        seal.verify(&c, &signature, 1).expect("the bank's sealing key");
        assert!(FitSealKey { key: "bb".into(), ..seal.clone() }.verify(&c, &signature, 1).is_err(), "another key");
        assert!(seal.verify(&c, &seal.sign(&lender), 1).is_err(), "signed by the lender");
        assert!(FitSealKey { name: "lender".into(), ..seal.clone() }.verify(&c, &seal.sign(&lender), 1).is_err());
        assert_ne!(seal.sign(&bank).to_vec(), key.sign(&bank).to_vec());
    }
}
