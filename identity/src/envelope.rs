//! The envelope a party signs for each contribution.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::consortium::{Consortium, Role};
use crate::error::Result;
use crate::key::{NodeKey, SIGNATURE_BYTES};

/// Domain tag of contribution signatures.
pub const CONTRIBUTION_DOMAIN: &str = "jointscore/contribution/v2";

/// Domain tag of contribution proofs' metadata.
pub const PROOF_DOMAIN: &str = "jointscore/contribution-proof/v2";

/// The request a contribution answers: what its signature and, in strict
/// mode, its zero-knowledge proof are bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContributionBinding {
    /// The lender's request it answers (`LenderRequest::request_id`).
    pub request_id: String,
    /// The lender that signed the request.
    pub lender: String,
    /// The coordinator's job.
    pub job_id: String,
    /// The commitment to the subject (`LenderRequest::subject_commitment`):
    /// the envelope lands in the ledger every member reads, so it never
    /// names the subject in the clear.
    pub subject: String,
    /// The model id.
    pub model_id: String,
    /// The lender's key set.
    pub key_id: String,
    /// The contributing party.
    pub party: String,
    /// The consent record the party relied on (its id at the party), empty
    /// where the party keeps no consent records.
    pub consent: String,
}

/// Every field length-prefixed, in order, so no two field lists share an
/// encoding.
pub(crate) fn encode_fields(out: &mut Vec<u8>, fields: &[&str]) {
    for field in fields {
        out.extend_from_slice(&(field.len() as u32).to_le_bytes());
        out.extend_from_slice(field.as_bytes());
    }
}

impl ContributionBinding {
    /// The binding of party `party`'s answer to `request` in the
    /// coordinator's job `job_id`, relying on consent record `consent`
    /// (empty: none). The subject appears as the request's commitment.
    pub fn answering(request: &crate::LenderRequest, job_id: &str, party: &str, consent: &str) -> ContributionBinding {
        ContributionBinding {
            request_id: request.request_id.clone(),
            lender: request.lender.clone(),
            job_id: job_id.into(),
            subject: request.subject_commitment(),
            model_id: request.model_id.clone(),
            key_id: request.key_id.clone(),
            party: party.into(),
            consent: consent.into(),
        }
    }

    /// The metadata a proof is bound to: the domain tag, then every field.
    /// A proof made for one request does not verify for another.
    pub fn proof_metadata(&self) -> Vec<u8> {
        let mut out = PROOF_DOMAIN.as_bytes().to_vec();
        encode_fields(
            &mut out,
            &[
                &self.request_id,
                &self.lender,
                &self.job_id,
                &self.subject,
                &self.model_id,
                &self.key_id,
                &self.party,
                &self.consent,
            ],
        );
        out
    }

    /// The envelope over the serialized list whose SHA-256 (hex, see
    /// [`ciphertext_sha256`]) is `ciphertext_sha256`, signed at `time_ms`.
    pub fn envelope(self, ciphertext_sha256: String, time_ms: u64) -> ContributionEnvelope {
        ContributionEnvelope {
            request_id: self.request_id,
            lender: self.lender,
            job_id: self.job_id,
            subject: self.subject,
            model_id: self.model_id,
            key_id: self.key_id,
            party: self.party,
            consent: self.consent,
            ciphertext_sha256,
            time_ms,
        }
    }
}

/// SHA-256 of a serialized ciphertext list, hex: what an envelope binds.
pub fn ciphertext_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// What a party attests for one contribution. Binding the lender's request,
/// the job, subject, model and lender key set means a signed contribution
/// cannot be replayed into another request, and the hash binds the exact
/// ciphertext bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContributionEnvelope {
    /// The lender's request it answers.
    pub request_id: String,
    /// The lender that signed the request.
    pub lender: String,
    /// The coordinator's job the contribution answers.
    pub job_id: String,
    /// The commitment to the subject (never the subject itself).
    pub subject: String,
    /// The model id.
    pub model_id: String,
    /// The lender's key set the ciphertexts are under.
    pub key_id: String,
    /// The contributing party (its name in the model and the consortium).
    pub party: String,
    /// The consent record the party relied on, empty where it keeps none.
    #[serde(default)]
    pub consent: String,
    /// SHA-256 of the serialized ciphertext list, hex.
    pub ciphertext_sha256: String,
    /// When the party signed, in milliseconds since the unix epoch.
    pub time_ms: u64,
}

impl ContributionEnvelope {
    /// The signed bytes: every field length-prefixed, in order, so no two
    /// envelopes share an encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        encode_fields(
            &mut out,
            &[
                &self.request_id,
                &self.lender,
                &self.job_id,
                &self.subject,
                &self.model_id,
                &self.key_id,
                &self.party,
                &self.consent,
                &self.ciphertext_sha256,
            ],
        );
        out.extend_from_slice(&self.time_ms.to_le_bytes());
        out
    }

    /// The party's signature.
    pub fn sign(&self, key: &NodeKey) -> [u8; SIGNATURE_BYTES] {
        key.sign(CONTRIBUTION_DOMAIN, &self.to_bytes())
    }

    /// Checks that the named party, a current party member, signed exactly
    /// this envelope.
    pub fn verify(&self, consortium: &Consortium, signature: &[u8], now: u64) -> Result<()> {
        consortium.verify(&self.party, Role::Party, now, CONTRIBUTION_DOMAIN, &self.to_bytes(), signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::IdentityError;

    #[test]
    fn a_signature_covers_every_field() {
        let key = NodeKey::generate();
        let consortium = Consortium::from_toml(&format!(
            "name = \"t\"\n[[member]]\nname = \"bank\"\nrole = \"party\"\npublic_key = \"{}\"\n",
            key.public_hex()
        ))
        .expect("consortium");
        let envelope = ContributionEnvelope {
            request_id: "r".into(),
            lender: "l".into(),
            job_id: "job-1".into(),
            subject: "s".into(),
            model_id: "m".into(),
            key_id: "k".into(),
            party: "bank".into(),
            consent: "c".into(),
            ciphertext_sha256: "ab".repeat(32),
            time_ms: 7,
        };
        let sig = envelope.sign(&key);
        envelope.verify(&consortium, &sig, 0).expect("verifies");
        let changes: [fn(&mut ContributionEnvelope); 10] = [
            |e| e.request_id.push('x'),
            |e| e.lender.push('x'),
            |e| e.consent.push('x'),
            |e| e.job_id.push('x'),
            |e| e.subject.push('x'),
            |e| e.model_id.push('x'),
            |e| e.key_id.push('x'),
            |e| e.ciphertext_sha256 = "cd".repeat(32),
            |e| e.time_ms += 1,
            // Moving bytes between fields changes the encoding too.
            |e| {
                e.job_id = "job-1s".into();
                e.subject = String::new();
            },
        ];
        for change in changes {
            let mut other = envelope.clone();
            change(&mut other);
            assert!(matches!(other.verify(&consortium, &sig, 0), Err(IdentityError::BadSignature { .. })));
        }
        let mut impostor = envelope.clone();
        impostor.party = "platform".into();
        assert_eq!(impostor.verify(&consortium, &sig, 0).unwrap_err(), IdentityError::UnknownNode("platform".into()));
    }

    /// A proof's metadata names every field of the request, and moving bytes
    /// between fields changes it; the envelope it makes is the signed one.
    #[test]
    fn proof_metadata_binds_every_field() {
        let binding = ContributionBinding {
            request_id: "r".into(),
            lender: "l".into(),
            job_id: "job-1".into(),
            subject: "s".into(),
            model_id: "m".into(),
            key_id: "k".into(),
            party: "bank".into(),
            consent: String::new(),
        };
        let metadata = binding.proof_metadata();
        assert!(metadata.starts_with(PROOF_DOMAIN.as_bytes()));
        let changes: [fn(&mut ContributionBinding); 9] = [
            |b| b.request_id = "r2".into(),
            |b| b.lender = "m".into(),
            |b| b.consent = "c".into(),
            |b| b.job_id = "job-2".into(),
            |b| b.subject = "t".into(),
            |b| b.model_id = "n".into(),
            |b| b.key_id = "l".into(),
            |b| b.party = "platform".into(),
            |b| {
                b.job_id = "job-1s".into();
                b.subject = String::new();
            },
        ];
        for change in changes {
            let mut other = binding.clone();
            change(&mut other);
            assert_ne!(other.proof_metadata(), metadata, "{other:?}");
        }
        let envelope = binding.envelope(ciphertext_sha256(b"list"), 7);
        assert_eq!((envelope.job_id.as_str(), envelope.party.as_str(), envelope.time_ms), ("job-1", "bank", 7));
        assert_eq!(envelope.ciphertext_sha256, hex::encode(Sha256::digest(b"list")));
    }
}
