//! Lender key sets: what registering one checks and keeps.

use std::sync::Arc;

use jointscore_audit::{EntryKind, Event};
use jointscore_circuits::fhe::{EvaluationKey, PublicKey};
use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::error::{CoordinatorError, Result};

/// A key set as a lender uploads it, reassembled from its chunks.
pub(crate) struct KeyRegistration {
    /// The id the lender says the key set has.
    pub(crate) key_id: String,
    /// The lender registering it.
    pub(crate) lender: String,
    /// The public key's bytes (untrusted until decoded).
    pub(crate) public: Vec<u8>,
    /// The compressed evaluation key's bytes (untrusted until decoded).
    pub(crate) evaluation: Vec<u8>,
    /// The lender's signature over (key id, lender, consortium).
    pub(crate) signed: SignedRegistration,
}

/// What a lender signed when it registered a key set, kept beside it and
/// forwarded to every party that asks (`GetKeyRegistration`): parties
/// check it themselves, so a key set the coordinator made cannot pass as a
/// lender's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRegistration {
    /// The consortium the lender registered it in.
    pub consortium: String,
    /// The lender's ed25519 signature, hex; empty without an identity.
    pub signature: String,
}

impl SignedRegistration {
    /// The statement signed, for the key set `key_id` of `lender`.
    pub fn statement(&self, key_id: &str, lender: &str) -> jointscore_identity::KeyRegistration {
        jointscore_identity::KeyRegistration {
            key_id: key_id.into(),
            lender: lender.into(),
            consortium: self.consortium.clone(),
        }
    }
}

impl Engine {
    /// Registers a key set and answers its id.
    ///
    /// Both keys are decoded with bounded, conformance-checked
    /// deserialization; a public key whose id is not the one announced is
    /// `FAILED_PRECONDITION`. Registering the same key set again is
    /// accepted and changes nothing; the same id with another evaluation key
    /// is `ALREADY_EXISTS`: nothing binds an evaluation key to its public
    /// key, so a registered key set cannot be replaced (otherwise anyone
    /// could swap in an evaluation key of their own and the lender would
    /// decrypt garbage without noticing). A new key set is recorded in the
    /// ledger.
    pub(crate) async fn register_keys(self: &Arc<Self>, registration: KeyRegistration) -> Result<String> {
        let KeyRegistration { key_id: announced, lender, public: public_bytes, evaluation: evaluation_bytes, signed } =
            registration;
        let public = PublicKey::from_bytes(&public_bytes)?;
        if public.id() != announced {
            return Err(CoordinatorError::Precondition(format!(
                "key id {announced} does not match the public key sent, whose id is {}",
                public.id()
            )));
        }
        // In a consortium a key set belongs to the lender that signed it;
        // the parties check the same signature before they encrypt.
        if let Some(consortium) = &self.consortium {
            let signature = hex::decode(&signed.signature).unwrap_or_default();
            if signature.is_empty() {
                return Err(CoordinatorError::Unauthenticated(format!(
                    "the registration of key set {announced} is not signed: in a consortium a lender signs its key \
                     sets with its identity key (`--identity`)"
                )));
            }
            signed
                .statement(&announced, &lender)
                .verify(consortium, &signature, crate::now_s())
                .map_err(|e| CoordinatorError::Unauthenticated(format!("key set {announced}: {e}")))?;
        }
        // Decompression is CPU work: keep it off the async workers.
        let (evaluation, evaluation_bytes, public) = tokio::task::spawn_blocking(move || {
            EvaluationKey::from_compressed_bytes(&evaluation_bytes, &public).map(|k| (k, evaluation_bytes, public))
        })
        .await
        .map_err(|e| CoordinatorError::Transport(format!("key decompression task failed: {e}")))??;
        let key_id = public.id().to_string();
        let store = self.store.clone();
        let (id, owner) = (key_id.clone(), lender.clone());
        let stored = tokio::task::spawn_blocking(move || match store.evaluation_key(&id)? {
            // The same keys again by their owner change nothing; by anyone
            // else, they are not theirs to register.
            Some(existing) if existing == evaluation_bytes => match store.key_owner(&id)? {
                Some(registered) if registered != owner => {
                    Err(CoordinatorError::Conflict(format!("key set {id} (registered by another lender)")))
                }
                _ => Ok(false),
            },
            Some(_) => Err(CoordinatorError::Conflict(format!("key set {id}"))),
            None => store.put_key_set(&id, &owner, &signed, &public_bytes, &evaluation_bytes).map(|()| true),
        })
        .await
        .map_err(|e| CoordinatorError::Transport(format!("key storage task failed: {e}")))??;
        if stored {
            self.cache_keys(public, evaluation)?;
            if let Some(ledger) = &self.ledger {
                ledger
                    .append(Event {
                        kind: EntryKind::KeyRegistration,
                        lender: Some(lender.clone()),
                        key_id: Some(key_id.clone()),
                        ..Event::default()
                    })
                    .await?;
            }
        }
        tracing::info!(key_id = %key_id, lender = %lender, "key set registered");
        Ok(key_id)
    }
}
