//! What a lender signs: the registration of its key set, and each decision
//! request. A party checks both before it encrypts anything, so a
//! coordinator that substitutes its own key set, invents a request or
//! replays one is refused by the party itself.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::consortium::{Consortium, Role};
use crate::envelope::encode_fields;
use crate::error::{IdentityError, Result};
use crate::key::{NodeKey, SIGNATURE_BYTES};

/// Domain tag of key registrations.
pub const KEY_REGISTRATION_DOMAIN: &str = "jointscore/key-registration/v1";
/// Domain tag of decision requests.
pub const REQUEST_DOMAIN: &str = "jointscore/decision-request/v1";
/// Domain tag of subject commitments.
const SUBJECT_COMMITMENT_DOMAIN: &str = "jointscore/subject-commitment/v1";
/// Domain tag of absent-list commitments.
const ABSENT_COMMITMENT_DOMAIN: &str = "jointscore/absent-commitment/v1";
/// Bytes of a request's commitment salt.
pub const SALT_BYTES: usize = 32;

/// A lender's statement that a key set is its own: the key set's id (the
/// full SHA-256 over its public keys and its evaluation key), the lender's
/// member name and the consortium's name. Signed with the lender's
/// identity key, it is what lets a party tell the lender's key set from
/// one the coordinator made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRegistration {
    /// The key set's id, 64 hex digits.
    pub key_id: String,
    /// The lender, as the consortium file names it.
    pub lender: String,
    /// The consortium's name: a registration made for one consortium does
    /// not verify in another.
    pub consortium: String,
}

impl KeyRegistration {
    /// The signed bytes: every field length-prefixed, in order.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        encode_fields(&mut out, &[&self.key_id, &self.lender, &self.consortium]);
        out
    }

    /// The lender's signature.
    pub fn sign(&self, key: &NodeKey) -> [u8; SIGNATURE_BYTES] {
        key.sign(KEY_REGISTRATION_DOMAIN, &self.to_bytes())
    }

    /// Checks that `lender`, a current lender member of `consortium` (this
    /// consortium, by name), signed exactly this registration. `now` is in
    /// unix seconds.
    pub fn verify(&self, consortium: &Consortium, signature: &[u8], now: u64) -> Result<()> {
        if self.consortium != consortium.name {
            return Err(IdentityError::Consortium(format!(
                "the key set {} was registered for consortium `{}`, not `{}`",
                self.key_id, self.consortium, consortium.name
            )));
        }
        consortium.verify(&self.lender, Role::Lender, now, KEY_REGISTRATION_DOMAIN, &self.to_bytes(), signature)
    }
}

/// A decision request in the lender's words. The coordinator forwards it
/// unchanged with the lender's signature; every party verifies it before
/// contributing. The salt lets the ledger show commitments to the subject
/// and the absent list instead of the values, which the lender can open to
/// an auditor by showing the salt.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LenderRequest {
    /// The lender's idempotency key for the request.
    pub request_id: String,
    /// The lender, as the consortium file names it.
    pub lender: String,
    /// The lender's key set.
    pub key_id: String,
    /// The model's id.
    pub model_id: String,
    /// The plan kind, as the model file spells it (`pushdown`,
    /// `coordinator-side`).
    pub plan: String,
    /// Whose records are asked for.
    pub subject: String,
    /// Parties named absent. Signed sorted and without repeats, so the
    /// coordinator's normalisation does not break the signature.
    pub absent: Vec<String>,
    /// When the lender signed, in milliseconds since the unix epoch.
    pub time_ms: u64,
    /// Random per request, hex ([`SALT_BYTES`] bytes): the commitments'
    /// salt.
    pub salt: String,
}

impl LenderRequest {
    /// The absent list as it is signed: sorted, without repeats.
    pub fn canonical_absent(&self) -> Vec<String> {
        let mut absent = self.absent.clone();
        absent.sort();
        absent.dedup();
        absent
    }

    /// The signed bytes: every field length-prefixed, in order, the absent
    /// list counted, the time last.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        encode_fields(
            &mut out,
            &[&self.request_id, &self.lender, &self.key_id, &self.model_id, &self.plan, &self.subject, &self.salt],
        );
        let absent = self.canonical_absent();
        out.extend_from_slice(&(absent.len() as u32).to_le_bytes());
        encode_fields(&mut out, &absent.iter().map(String::as_str).collect::<Vec<_>>());
        out.extend_from_slice(&self.time_ms.to_le_bytes());
        out
    }

    /// A fresh random salt, hex.
    pub fn fresh_salt() -> String {
        let mut salt = [0u8; SALT_BYTES];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut salt);
        hex::encode(salt)
    }

    /// The lender's signature.
    pub fn sign(&self, key: &NodeKey) -> [u8; SIGNATURE_BYTES] {
        key.sign(REQUEST_DOMAIN, &self.to_bytes())
    }

    /// Checks that `lender`, a current lender member of `consortium`, signed
    /// exactly this request, and that its salt is well formed. `now` is in
    /// unix seconds. Freshness and replays are the verifier's to check: it
    /// knows its window and what it has seen.
    pub fn verify(&self, consortium: &Consortium, signature: &[u8], now: u64) -> Result<()> {
        if self.salt.len() != 2 * SALT_BYTES || hex::decode(&self.salt).is_err() {
            return Err(IdentityError::BadSignature { node: self.lender.clone(), what: "request salt".into() });
        }
        consortium.verify(&self.lender, Role::Lender, now, REQUEST_DOMAIN, &self.to_bytes(), signature)
    }

    /// The commitment to the subject the ledger shows: SHA-256 over a
    /// domain tag, the salt and the subject, hex. Hiding without the salt;
    /// binding to one subject.
    pub fn subject_commitment(&self) -> String {
        commit(SUBJECT_COMMITMENT_DOMAIN, &self.salt, &[&self.subject])
    }

    /// The commitment to the absent list the ledger shows.
    pub fn absent_commitment(&self) -> String {
        let absent = self.canonical_absent();
        commit(ABSENT_COMMITMENT_DOMAIN, &self.salt, &absent.iter().map(String::as_str).collect::<Vec<_>>())
    }
}

/// SHA-256 over `domain`, the salt and the fields, each length-prefixed.
fn commit(domain: &str, salt: &str, fields: &[&str]) -> String {
    let mut out = Vec::new();
    encode_fields(&mut out, &[domain, salt]);
    out.extend_from_slice(&(fields.len() as u32).to_le_bytes());
    encode_fields(&mut out, fields);
    hex::encode(Sha256::digest(out))
}

/// Opens a subject commitment: whether `subject` under `salt` is the
/// committed value. What an auditor runs with the salt a lender shows.
pub fn opens_subject(commitment: &str, subject: &str, salt: &str) -> bool {
    commit(SUBJECT_COMMITMENT_DOMAIN, salt, &[subject]) == commitment
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consortium(lender: &NodeKey, party: &NodeKey) -> Consortium {
        Consortium::from_toml(&format!(
            "name = \"c\"\n[[member]]\nname = \"lender\"\nrole = \"lender\"\npublic_key = \"{}\"\n[[member]]\nname = \
             \"bank\"\nrole = \"party\"\npublic_key = \"{}\"\n",
            lender.public_hex(),
            party.public_hex()
        ))
        .expect("consortium")
    }

    fn request() -> LenderRequest {
        LenderRequest {
            request_id: "r1".into(),
            lender: "lender".into(),
            key_id: "ab".repeat(32),
            model_id: "m".into(),
            plan: "pushdown".into(),
            subject: "seller-1".into(),
            absent: vec!["bank".into()],
            time_ms: 1_000,
            salt: LenderRequest::fresh_salt(),
        }
    }

    #[test]
    fn a_request_signature_covers_every_field_and_only_a_lender_signs() {
        let (l, p) = (NodeKey::generate(), NodeKey::generate());
        let c = consortium(&l, &p);
        let r = request();
        let sig = r.sign(&l);
        r.verify(&c, &sig, 0).expect("verifies");
        let changes: [fn(&mut LenderRequest); 9] = [
            |r| r.request_id.push('x'),
            |r| r.key_id = "cd".repeat(32),
            |r| r.model_id.push('x'),
            |r| r.plan = "coordinator-side".into(),
            |r| r.subject.push('x'),
            |r| r.absent.clear(),
            |r| r.time_ms += 1,
            |r| r.salt = LenderRequest::fresh_salt(),
            |r| {
                r.request_id = "r1seller-1".into();
                r.subject = String::new();
            },
        ];
        for change in changes {
            let mut other = r.clone();
            change(&mut other);
            assert!(matches!(other.verify(&c, &sig, 0), Err(IdentityError::BadSignature { .. })), "{other:?}");
        }
        // The order and repeats of the absent list do not matter.
        let mut reordered = r.clone();
        reordered.absent = vec!["bank".into(), "bank".into()];
        reordered.verify(&c, &sig, 0).expect("same canonical list");
        // A party's key cannot sign as a lender, nor a party pose as one.
        let mut posing = r.clone();
        posing.lender = "bank".into();
        let e = posing.verify(&c, &posing.sign(&p), 0).unwrap_err();
        assert!(matches!(e, IdentityError::WrongRole { .. }), "{e}");
        let mut bad_salt = r.clone();
        bad_salt.salt = "zz".into();
        assert!(bad_salt.verify(&c, &bad_salt.sign(&l), 0).is_err());
    }

    #[test]
    fn commitments_hide_behind_the_salt_and_open_with_it() {
        let r = request();
        let commitment = r.subject_commitment();
        assert_eq!(commitment.len(), 64);
        assert!(!commitment.contains("seller"));
        assert!(opens_subject(&commitment, "seller-1", &r.salt));
        assert!(!opens_subject(&commitment, "seller-2", &r.salt));
        let mut other = r.clone();
        other.salt = LenderRequest::fresh_salt();
        assert_ne!(other.subject_commitment(), commitment, "a fresh salt, a fresh commitment");
        assert!(!opens_subject(&commitment, "seller-1", &other.salt));
        let mut none = r.clone();
        none.absent.clear();
        assert_ne!(none.absent_commitment(), r.absent_commitment());
    }

    #[test]
    fn a_key_registration_is_bound_to_its_lender_and_consortium() {
        let (l, p) = (NodeKey::generate(), NodeKey::generate());
        let c = consortium(&l, &p);
        let reg = KeyRegistration { key_id: "ab".repeat(32), lender: "lender".into(), consortium: "c".into() };
        let sig = reg.sign(&l);
        reg.verify(&c, &sig, 0).expect("verifies");
        let mut other = reg.clone();
        other.key_id = "cd".repeat(32);
        assert!(matches!(other.verify(&c, &sig, 0), Err(IdentityError::BadSignature { .. })));
        let mut elsewhere = reg.clone();
        elsewhere.consortium = "d".into();
        let e = elsewhere.verify(&c, &elsewhere.sign(&l), 0).unwrap_err();
        assert!(e.to_string().contains("not `c`"), "{e}");
        // A coordinator's own key set, signed by anyone but a lender.
        let forged = KeyRegistration { lender: "bank".into(), ..reg.clone() };
        assert!(forged.verify(&c, &forged.sign(&p), 0).is_err());
        let stranger = NodeKey::generate();
        assert!(matches!(reg.verify(&c, &reg.sign(&stranger), 0), Err(IdentityError::BadSignature { .. })));
    }
}
