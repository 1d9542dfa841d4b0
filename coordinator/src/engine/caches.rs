//! What the engine decodes once and keeps: keys of registered key sets,
//! plans and the model files parties are sent.

use std::sync::Arc;

use jointscore_circuits::PlanKind;
use jointscore_circuits::fhe::{EvaluationKey, PublicKey};
use jointscore_monitor::Compiled;

use super::{Engine, lock};
use crate::error::{CoordinatorError, Result};

impl Engine {
    /// Caches keys decoded at registration, so the first job does not
    /// decompress them again.
    pub(crate) fn cache_keys(&self, public: PublicKey, evaluation: EvaluationKey) -> Result<()> {
        lock(&self.evaluation_keys)?.insert(public.id().to_string(), Arc::new(evaluation));
        lock(&self.public_keys)?.insert(public.id().to_string(), public);
        Ok(())
    }

    /// Keeps a model file and its plan as checked when a request was
    /// accepted: its job starts before the store holds them (see
    /// [`Engine::spawn`]), and need not read them back.
    pub(crate) fn remember_model(&self, model_id: &str, toml: &str, plan: Compiled) -> Result<()> {
        lock(&self.models)?.entry(model_id.to_string()).or_insert_with(|| toml.into());
        lock(&self.plans)?.entry((model_id.to_string(), plan.kind())).or_insert_with(|| Arc::new(plan));
        Ok(())
    }

    /// The plan for a stored model (or monitor spec).
    pub(crate) fn plan(&self, model_id: &str, kind: PlanKind) -> Result<Arc<Compiled>> {
        let cache_key = (model_id.to_string(), kind);
        if let Some(plan) = lock(&self.plans)?.get(&cache_key) {
            return Ok(plan.clone());
        }
        let plan = Arc::new(Compiled::new(&self.model_toml(model_id)?, model_id, kind)?);
        lock(&self.plans)?.insert(cache_key, plan.clone());
        Ok(plan)
    }

    /// A stored model's file, read from the store once.
    pub(super) fn model_toml(&self, model_id: &str) -> Result<Arc<str>> {
        if let Some(toml) = lock(&self.models)?.get(model_id) {
            return Ok(toml.clone());
        }
        let toml: Arc<str> = self
            .store
            .model(model_id)?
            .ok_or_else(|| {
                CoordinatorError::Store(format!("model {model_id} of an accepted job is missing from the store"))
            })?
            .into();
        lock(&self.models)?.insert(model_id.to_string(), toml.clone());
        Ok(toml)
    }

    /// A registered key set's public key.
    pub(crate) fn public_key(&self, key_id: &str) -> Result<PublicKey> {
        if let Some(key) = lock(&self.public_keys)?.get(key_id) {
            return Ok(key.clone());
        }
        let bytes = self.store.public_key(key_id)?.ok_or_else(|| unknown_key(key_id))?;
        let key = PublicKey::from_bytes(&bytes)?;
        lock(&self.public_keys)?.insert(key_id.to_string(), key.clone());
        Ok(key)
    }

    /// A registered key set's evaluation key, decompressed once.
    pub(super) async fn evaluation_key(&self, key_id: &str) -> Result<Arc<EvaluationKey>> {
        if let Some(key) = lock(&self.evaluation_keys)?.get(key_id) {
            return Ok(key.clone());
        }
        let _loading = self.key_load.lock().await;
        if let Some(key) = lock(&self.evaluation_keys)?.get(key_id) {
            return Ok(key.clone());
        }
        let public = self.public_key(key_id)?;
        let (store, id) = (self.store.clone(), key_id.to_string());
        // Reading tens of MB and decompressing: off the async workers.
        let key = tokio::task::spawn_blocking(move || {
            let bytes = store.evaluation_key(&id)?.ok_or_else(|| unknown_key(&id))?;
            Ok::<_, CoordinatorError>(EvaluationKey::from_compressed_bytes(&bytes, &public)?)
        })
        .await
        .map_err(|e| CoordinatorError::Transport(format!("key decompression task failed: {e}")))??;
        let key = Arc::new(key);
        lock(&self.evaluation_keys)?.insert(key_id.to_string(), key.clone());
        Ok(key)
    }
}

fn unknown_key(key_id: &str) -> CoordinatorError {
    CoordinatorError::Precondition(format!(
        "key set {key_id} is not registered; the lender registers it first (`jointscore lender register`)"
    ))
}

/// Decompressed evaluation keys (about 180 MB each), at most `capacity`;
/// the least recently used is dropped first (a job holding it keeps its
/// `Arc` until it ends).
pub(crate) struct KeyCache {
    capacity: usize,
    /// Most recently used last.
    keys: Vec<(String, Arc<EvaluationKey>)>,
}

impl KeyCache {
    pub(crate) fn new(capacity: usize) -> KeyCache {
        KeyCache { capacity: capacity.max(1), keys: Vec::new() }
    }

    /// The key, now the most recently used.
    pub(crate) fn get(&mut self, key_id: &str) -> Option<Arc<EvaluationKey>> {
        let at = self.keys.iter().position(|(id, _)| id == key_id)?;
        let entry = self.keys.remove(at);
        let key = entry.1.clone();
        self.keys.push(entry);
        Some(key)
    }

    /// Holds `key`, dropping the least recently used beyond the capacity.
    pub(crate) fn insert(&mut self, key_id: String, key: Arc<EvaluationKey>) {
        self.keys.retain(|(id, _)| *id != key_id);
        self.keys.push((key_id, key));
        while self.keys.len() > self.capacity {
            let (dropped, _) = self.keys.remove(0);
            tracing::debug!(key_id = %dropped, "evaluation key dropped from the cache (least recently used)");
        }
    }
}
