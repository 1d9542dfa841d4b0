//! Lender key sets: what registering one checks and keeps.

use std::sync::Arc;

use jointscore_audit::{EntryKind, Event};
use jointscore_circuits::fhe::{EvaluationKey, PublicKey};

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
        let KeyRegistration { key_id: announced, lender, public: public_bytes, evaluation: evaluation_bytes } =
            registration;
        let public = PublicKey::from_bytes(&public_bytes)?;
        if public.id() != announced {
            return Err(CoordinatorError::Precondition(format!(
                "key id {announced} does not match the public key sent, whose id is {}",
                public.id()
            )));
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
            Some(existing) if existing == evaluation_bytes => Ok(false),
            Some(_) => Err(CoordinatorError::Conflict(format!("key set {id}"))),
            None => store.put_key_set(&id, &owner, &public_bytes, &evaluation_bytes).map(|()| true),
        })
        .await
        .map_err(|e| CoordinatorError::Transport(format!("key storage task failed: {e}")))??;
        if stored {
            self.cache_keys(public, evaluation)?;
            if let Some(ledger) = &self.ledger {
                ledger.append(Event {
                    kind: EntryKind::KeyRegistration,
                    lender: Some(lender.clone()),
                    key_id: Some(key_id.clone()),
                    ..Event::default()
                })?;
            }
        }
        tracing::info!(key_id = %key_id, lender = %lender, "key set registered");
        Ok(key_id)
    }
}
