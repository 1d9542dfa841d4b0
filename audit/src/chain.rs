//! Verifying the chain, the signed head and a node's receipts; filtering.

use jointscore_identity::{Consortium, NodeKey, verify_with};
use serde::{Deserialize, Serialize};

use crate::entry::{ENTRY_DOMAIN, Entry, EntryKind, GENESIS, is_lower_hex};
use crate::error::{AuditError, Result};

/// Domain tag of the coordinator's signature on a [`Head`].
pub const HEAD_DOMAIN: &str = "jointscore/audit-head/v1";

/// The coordinator's signed statement of the log's length and last hash. A
/// member that keeps the latest head it was given detects a log later cut
/// short or rewritten before that point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Head {
    /// Entries in the log.
    pub len: u64,
    /// The last entry's hash ([`GENESIS`] for an empty log).
    pub hash: String,
    /// The coordinator's ed25519 signature (hex) under [`HEAD_DOMAIN`].
    pub signature: String,
}

/// The bytes a head's signature covers: the length (8 bytes, little endian)
/// then the hash's hex digits. The length is fixed-width, so the encoding is
/// unambiguous.
fn head_message(len: u64, hash: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + hash.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(hash.as_bytes());
    out
}

impl Head {
    /// The head of `entries`, signed with the coordinator's key.
    pub fn of(entries: &[Entry], key: &NodeKey) -> Head {
        let hash = entries.last().map_or(GENESIS, |e| e.hash.as_str());
        Head::signed(entries.len() as u64, hash, key)
    }

    /// The head of a log of `len` entries whose last has hash `hash`, for a
    /// holder that keeps only the last entry.
    pub fn signed(len: u64, hash: &str, key: &NodeKey) -> Head {
        let signature = hex::encode(key.sign(HEAD_DOMAIN, &head_message(len, hash)));
        Head { len, hash: hash.to_string(), signature }
    }

    /// Checks that the consortium's coordinator signed this head.
    pub fn verify(&self, consortium: &Consortium) -> Result<()> {
        if !is_lower_hex(&self.hash, GENESIS.len()) {
            return Err(AuditError::Malformed("head: `hash` is not 64 lowercase hex digits".into()));
        }
        let coordinator = consortium.coordinator()?;
        let signature = hex::decode(&self.signature).map_err(|_| bad_head_signature(&coordinator.name))?;
        verify_with(
            &coordinator.public_key,
            HEAD_DOMAIN,
            &head_message(self.len, &self.hash),
            &signature,
            &coordinator.name,
            HEAD_DOMAIN,
        )?;
        Ok(())
    }
}

fn bad_head_signature(node: &str) -> AuditError {
    AuditError::Identity(jointscore_identity::IdentityError::BadSignature {
        node: node.into(),
        what: HEAD_DOMAIN.into(),
    })
}

/// Checks the whole chain with only the consortium file. For entry `i`, in
/// this order: it carries seq `i` (else [`AuditError::OutOfOrder`]), its
/// `prev` is entry `i-1`'s hash (else [`AuditError::Broken`]), its hash
/// recomputes (else [`AuditError::Edited`]), the coordinator's signature
/// verifies (else [`AuditError::Unsigned`]), and every attestation verifies:
/// the attester is a member with the stated role, neither revoked nor expired
/// at the entry's time (`time_ms / 1000`), and signed those bytes (else
/// [`AuditError::Attestation`]). The error names the first entry at fault.
///
/// So an entry deleted from the middle shows as `OutOfOrder` at its position
/// (the next entry's seq is one too high); the same deletion with the rest
/// renumbered shows as `Broken`, and re-sealing them needs the coordinator's
/// key.
pub fn verify_chain(entries: &[Entry], consortium: &Consortium) -> Result<()> {
    use jointscore_identity::IdentityError;
    let coordinator = consortium.coordinator()?;
    let mut prev = GENESIS;
    for (index, entry) in entries.iter().enumerate() {
        let index = index as u64;
        let seq = entry.seq;
        if seq != index {
            return Err(AuditError::OutOfOrder { index, seq });
        }
        if entry.prev != prev {
            return Err(AuditError::Broken { seq });
        }
        if entry.compute_hash() != entry.hash {
            return Err(AuditError::Edited { seq });
        }
        let signature = hex::decode(&entry.signature).map_err(|_| AuditError::Unsigned { seq })?;
        verify_with(
            &coordinator.public_key,
            ENTRY_DOMAIN,
            entry.hash.as_bytes(),
            &signature,
            &coordinator.name,
            ENTRY_DOMAIN,
        )
        .map_err(|_| AuditError::Unsigned { seq })?;
        let now = entry.record.time_ms / 1000;
        for attestation in &entry.record.attestations {
            let failed = |source| AuditError::Attestation { seq, node: attestation.node.clone(), source };
            attestation.verify(consortium, now).map_err(failed)?;
            if entry.record.kind == EntryKind::Contribution && !binds_contribution(&entry.record, attestation) {
                // A genuine envelope from another job, subject or ciphertext
                // must not vouch for this entry.
                return Err(failed(IdentityError::BadSignature {
                    node: attestation.node.clone(),
                    what: "contribution envelope, which is not this entry's".into(),
                }));
            }
        }
        prev = &entry.hash;
    }
    Ok(())
}

/// [`verify_chain`], then: the head is signed by the coordinator, the log
/// holds at least the head's length (else [`AuditError::Truncated`]), and
/// the entry at `head.len - 1` has the head's hash (else
/// [`AuditError::HeadMismatch`]). A log that grew since the head passes.
pub fn verify_with_head(entries: &[Entry], head: &Head, consortium: &Consortium) -> Result<()> {
    verify_chain(entries, consortium)?;
    head.verify(consortium)?;
    let len = entries.len() as u64;
    if len < head.len {
        return Err(AuditError::Truncated { len, head_len: head.len });
    }
    let hash = match head.len {
        0 => GENESIS,
        n => entries[(n - 1) as usize].hash.as_str(),
    };
    if hash != head.hash {
        return Err(AuditError::HeadMismatch { len: head.len });
    }
    Ok(())
}

/// Checks that every receipt (an entry a node kept when it was sealed) is in
/// the log at its seq, unchanged (else [`AuditError::MissingReceipt`]). This
/// checks presence only: verify the log itself with [`verify_chain`].
pub fn verify_receipts(entries: &[Entry], receipts: &[Entry]) -> Result<()> {
    for receipt in receipts {
        let present = usize::try_from(receipt.seq).ok().and_then(|i| entries.get(i)) == Some(receipt);
        if !present {
            return Err(AuditError::MissingReceipt { seq: receipt.seq });
        }
    }
    Ok(())
}

/// Which entries to show (for `jointscore audit show`); every filter given
/// must match, `None` matches any entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only entries about this subject.
    pub subject: Option<String>,
    /// Only entries naming this party among their parties, or attested by it.
    pub party: Option<String>,
    /// Only entries for this lender.
    pub lender: Option<String>,
}

/// The entries matching every filter given, in log order.
pub fn filter<'a>(entries: &'a [Entry], filter: &Filter) -> Vec<&'a Entry> {
    entries
        .iter()
        .filter(|e| {
            let r = &e.record;
            filter.subject.as_ref().is_none_or(|s| r.subject.as_ref() == Some(s))
                && filter.lender.as_ref().is_none_or(|l| r.lender.as_ref() == Some(l))
                && filter
                    .party
                    .as_ref()
                    .is_none_or(|p| r.parties.contains(p) || r.attestations.iter().any(|a| &a.node == p))
        })
        .collect()
}

/// Whether a contribution entry's attestation signs the envelope of this
/// very entry: its request, lender, job, subject commitment, model, key
/// set, party, consent and ciphertext digest (the signing time is the envelope's own, its last 8 bytes).
fn binds_contribution(record: &crate::entry::Event, attestation: &crate::entry::Attestation) -> bool {
    let Ok(message) = hex::decode(&attestation.message) else { return false };
    let Some(time) = message.len().checked_sub(8).and_then(|at| message[at..].try_into().ok()) else {
        return false;
    };
    let field = |f: &Option<String>| f.clone().unwrap_or_default();
    let envelope = jointscore_identity::ContributionEnvelope {
        request_id: field(&record.request_id),
        lender: field(&record.lender),
        job_id: field(&record.job_id),
        subject: field(&record.subject),
        model_id: field(&record.model_id),
        key_id: field(&record.key_id),
        party: attestation.node.clone(),
        consent: field(&record.consent),
        ciphertext_sha256: field(&record.digest),
        time_ms: u64::from_le_bytes(time),
    };
    attestation.domain == jointscore_identity::CONTRIBUTION_DOMAIN
        && record.parties == [attestation.node.clone()]
        && envelope.to_bytes() == message
}
