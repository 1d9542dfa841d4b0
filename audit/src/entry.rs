//! One ledger entry: what the coordinator records and how it seals it.

use jointscore_identity::{Consortium, IdentityError, NodeKey, Role};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{AuditError, Result};

/// Domain tag of the coordinator's signature on an entry's hash, and the
/// prefix of the bytes an entry's hash is taken over.
pub const ENTRY_DOMAIN: &str = "jointscore/audit-entry/v1";
/// Largest serialized entry accepted when decoding (64 KiB).
pub const ENTRY_LIMIT: usize = 64 << 10;
/// Largest `detail` kept when sealing, in bytes; longer text is cut on a
/// character boundary.
pub const DETAIL_LIMIT: usize = 512;
/// The `prev` of the first entry, and the hash of an empty log: 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Hex digits of a SHA-256 hash.
const HASH_HEX: usize = 64;
/// Hex digits of an ed25519 signature.
const SIGNATURE_HEX: usize = 128;

/// What kind of event an entry records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A node registered a key (a lender's TFHE key set, a node identity).
    KeyRegistration,
    /// A party approved a model id for use with its data.
    ModelApproval,
    /// A lender asked for a decision on a subject. The default, so that a
    /// `Event { .., ..Default::default() }` reads as the common case; name
    /// the kind explicitly anyway.
    #[default]
    DecisionRequest,
    /// A party contributed encrypted inputs to a job.
    Contribution,
    /// The coordinator returned an encrypted result.
    Result,
    /// A secure-aggregation round completed (or was abandoned).
    Aggregation,
    /// A private set intersection session ran.
    Psi,
    /// A joint scorecard fit ran over the services (or failed).
    Fit,
    /// The coordinator refused a request or a contribution.
    Refusal,
    /// A lender reported the alerts a monitoring job's result raised
    /// (signed by the lender: the coordinator cannot know them).
    Alert,
}

/// A member's signature over a message it signed for its own purpose (a
/// party's contribution envelope, a lender's request), carried in an entry so
/// anyone can check who vouched for what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attestation {
    /// The signer's name in the consortium.
    pub node: String,
    /// The role it signed in.
    pub role: Role,
    /// The domain tag it signed under.
    pub domain: String,
    /// The signed message, hex.
    pub message: String,
    /// The ed25519 signature, hex.
    pub signature: String,
}

impl Attestation {
    /// Records that `node`, acting as `role`, signed `message` under
    /// `domain` with `signature` (as received, e.g. with a contribution).
    pub fn new(node: &str, role: Role, domain: &str, message: &[u8], signature: &[u8]) -> Attestation {
        Attestation {
            node: node.into(),
            role,
            domain: domain.into(),
            message: hex::encode(message),
            signature: hex::encode(signature),
        }
    }

    /// Checks that `node` is a current member with `role` at `now` (unix
    /// seconds) and signed exactly `message` under `domain`.
    pub fn verify(&self, consortium: &Consortium, now: u64) -> Result<(), IdentityError> {
        let bad = || IdentityError::BadSignature { node: self.node.clone(), what: self.domain.clone() };
        let message = hex::decode(&self.message).map_err(|_| bad())?;
        let signature = hex::decode(&self.signature).map_err(|_| bad())?;
        consortium.verify(&self.node, self.role, now, &self.domain, &message, &signature)
    }
}

/// An event the coordinator records, before sealing it into an [`Entry`].
/// (Named apart from `jointscore_circuits::Record`, a subject's features.)
/// Holds names, ids and hashes — never ciphertexts, features or scores.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// The kind of event.
    pub kind: EntryKind,
    /// When it happened, in milliseconds since the unix epoch (the
    /// coordinator's clock).
    pub time_ms: u64,
    /// The lender concerned.
    pub lender: Option<String>,
    /// The subject concerned: for decisions, the lender's commitment to it
    /// (`jointscore_identity::LenderRequest::subject_commitment`), never the
    /// subject itself, since every member reads the ledger.
    pub subject: Option<String>,
    /// The lender's request id, for decision events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The consent record a party relied on, for contribution events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<String>,
    /// The parties concerned.
    pub parties: Vec<String>,
    /// The coordinator's job.
    pub job_id: Option<String>,
    /// The model id.
    pub model_id: Option<String>,
    /// The lender's key set.
    pub key_id: Option<String>,
    /// SHA-256 (hex) of the bytes concerned: a ciphertext list, a result.
    pub digest: Option<String>,
    /// Short free text, such as a refusal's reason; cut to
    /// [`DETAIL_LIMIT`] bytes when sealed.
    pub detail: String,
    /// Signatures by members over their own messages.
    pub attestations: Vec<Attestation>,
}

/// One sealed entry of the ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Its position in the log, from 0.
    pub seq: u64,
    /// The previous entry's hash ([`GENESIS`] for the first).
    pub prev: String,
    /// What it records.
    pub record: Event,
    /// SHA-256 (hex) of the canonical encoding of `seq`, `prev` and
    /// `record`.
    pub hash: String,
    /// The coordinator's ed25519 signature (hex) over `hash` under
    /// [`ENTRY_DOMAIN`].
    pub signature: String,
}

/// The fields an entry's hash covers, in their fixed order.
#[derive(Serialize)]
struct Canonical<'a> {
    seq: u64,
    prev: &'a str,
    record: &'a Event,
}

impl Entry {
    /// Seals `record` after `prev` (`None`: the first entry, seq 0, prev
    /// [`GENESIS`]) with the coordinator's key. `detail` is cut to
    /// [`DETAIL_LIMIT`] bytes first.
    pub fn seal(mut record: Event, prev: Option<&Entry>, key: &NodeKey) -> Entry {
        truncate(&mut record.detail, DETAIL_LIMIT);
        let (seq, prev) = match prev {
            Some(p) => (p.seq + 1, p.hash.clone()),
            None => (0, GENESIS.to_string()),
        };
        let mut entry = Entry { seq, prev, record, hash: String::new(), signature: String::new() };
        entry.hash = entry.compute_hash();
        entry.signature = hex::encode(key.sign(ENTRY_DOMAIN, entry.hash.as_bytes()));
        entry
    }

    /// SHA-256 (hex) of the canonical encoding of (seq, prev, record), as
    /// verifiers recompute it.
    ///
    /// The encoding is the length-prefixed [`ENTRY_DOMAIN`] followed by the
    /// compact JSON of `{seq, prev, record}`. JSON of derive-serialized
    /// structs is unambiguous and stable here: field order is the
    /// declaration order, every string is quoted with deterministic
    /// escaping, absent options are written as `null` (nothing is skipped),
    /// and there are no maps whose order could vary. Changing a field of
    /// [`Event`] changes every hash; the golden test catches that, and such
    /// a change needs a new domain version.
    pub fn compute_hash(&self) -> String {
        let canonical = Canonical { seq: self.seq, prev: &self.prev, record: &self.record };
        let mut hasher = Sha256::new();
        hasher.update((ENTRY_DOMAIN.len() as u32).to_le_bytes());
        hasher.update(ENTRY_DOMAIN.as_bytes());
        // Serializing strings, integers, options and vectors into a Vec
        // cannot fail, so the default is never taken.
        hasher.update(serde_json::to_vec(&canonical).unwrap_or_default());
        hex::encode(hasher.finalize())
    }

    /// Whether the entry concerns `node`: it is the lender, one of the
    /// parties, or an attester.
    pub fn concerns(&self, node: &str) -> bool {
        let r = &self.record;
        r.lender.as_deref() == Some(node)
            || r.parties.iter().any(|p| p == node)
            || r.attestations.iter().any(|a| a.node == node)
    }

    /// The entry's JSON form, on one line.
    pub fn to_json(&self) -> String {
        // As in `compute_hash`: these types always serialize.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Decodes an entry, refusing input over [`ENTRY_LIMIT`] bytes, unknown
    /// fields, trailing data, and hashes or signatures that are not
    /// lowercase hex of the right length. Decoding checks form only; use
    /// [`verify_chain`](crate::verify_chain) for authenticity.
    pub fn from_json(text: &str) -> Result<Entry> {
        if text.len() > ENTRY_LIMIT {
            return Err(AuditError::Malformed(format!(
                "an entry of {} bytes is larger than the {ENTRY_LIMIT}-byte limit",
                text.len()
            )));
        }
        let entry: Entry = serde_json::from_str(text).map_err(|e| AuditError::Malformed(format!("entry: {e}")))?;
        for (field, value, digits) in [
            ("prev", &entry.prev, HASH_HEX),
            ("hash", &entry.hash, HASH_HEX),
            ("signature", &entry.signature, SIGNATURE_HEX),
        ] {
            if !is_lower_hex(value, digits) {
                return Err(AuditError::Malformed(format!(
                    "entry {}: `{field}` is not {digits} lowercase hex digits",
                    entry.seq
                )));
            }
        }
        Ok(entry)
    }
}

/// Whether `s` is exactly `digits` lowercase hex digits.
pub(crate) fn is_lower_hex(s: &str, digits: usize) -> bool {
    s.len() == digits && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Cuts `s` to at most `limit` bytes, on a character boundary.
fn truncate(s: &mut String, limit: usize) {
    if s.len() > limit {
        let mut end = limit;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}
