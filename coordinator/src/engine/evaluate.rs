//! The evaluation queue: jobs whose contributions are in wait for an
//! evaluation worker, and a worker evaluates every job waiting under the
//! same key set together (`EvaluationKey::evaluate_batch`, level by level,
//! so every core stays busy where one decision's level is narrower than the
//! machine). Each job still gets its own result, report and error.
//!
//! There is no queue task: a job that gets a worker evaluates whatever
//! waits (the oldest job's key set first), its own job among them or not;
//! a job whose work another took waits for the answer sent to it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jointscore_circuits::Program;
use jointscore_circuits::fhe::{BatchItem, Contribution, EncryptedResult, EvalReport, EvaluationKey};
use jointscore_monitor::Compiled;
use tokio::sync::oneshot;

use super::{Engine, lock};
use crate::error::{CoordinatorError, Result};

/// Most decisions evaluated in one batch: bounds the ciphertexts held at
/// once and how long the first of a batch waits for the last.
const BATCH_LIMIT: usize = 32;

/// An evaluation's outcome, as a job receives it, and its batch's wall
/// time: expansion, circuit and sealing the outputs (the report's `expand`
/// and `circuit` leave the sealing out).
type Evaluated = Result<(EncryptedResult, EvalReport, Duration)>;

/// One job waiting for evaluation.
pub(crate) struct Waiting {
    key_id: String,
    key: Arc<EvaluationKey>,
    plan: Arc<Compiled>,
    contributions: Vec<Contribution>,
    answer: oneshot::Sender<Evaluated>,
}

/// The jobs waiting, oldest first.
#[derive(Default)]
pub(crate) struct EvalQueue(std::sync::Mutex<VecDeque<Waiting>>);

impl Engine {
    /// Evaluates `plan` on `contributions` under the key set `key_id`, in a
    /// batch with the other jobs waiting under that key set, at most
    /// `eval_workers` batches at a time. TFHE work runs on the blocking
    /// pool, never on the async workers.
    pub(super) async fn evaluate(
        &self,
        key_id: &str,
        key: Arc<EvaluationKey>,
        plan: Arc<Compiled>,
        contributions: Vec<Contribution>,
    ) -> Evaluated {
        let (answer, mut answered) = oneshot::channel();
        lock(&self.waiting.0)?.push_back(Waiting { key_id: key_id.to_string(), key, plan, contributions, answer });
        loop {
            let _worker =
                self.eval.acquire().await.map_err(|_| CoordinatorError::Transport("evaluation pool closed".into()))?;
            let batch = self.next_batch()?;
            if batch.is_empty() {
                // Nothing waits, so this job's evaluation is under way in
                // another worker's batch.
                break;
            }
            // The blocking task answers every job itself, so a batch whose
            // leading job is stopped (a shutdown) still answers the others.
            tokio::task::spawn_blocking(move || evaluate_batch(batch))
                .await
                .map_err(|e| CoordinatorError::Transport(format!("evaluation task failed: {e}")))?;
            match answered.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => continue,
                done => return done.unwrap_or_else(|_| Err(lost())),
            }
        }
        answered.await.unwrap_or_else(|_| Err(lost()))
    }

    /// Takes the jobs to evaluate next: every job waiting under the oldest
    /// job's key set, oldest first, at most [`BATCH_LIMIT`].
    fn next_batch(&self) -> Result<Vec<Waiting>> {
        let mut waiting = lock(&self.waiting.0)?;
        let Some(key_id) = waiting.front().map(|w| w.key_id.clone()) else { return Ok(Vec::new()) };
        let mut batch = Vec::new();
        let mut rest = VecDeque::with_capacity(waiting.len());
        for w in waiting.drain(..) {
            if w.key_id == key_id && batch.len() < BATCH_LIMIT {
                batch.push(w);
            } else {
                rest.push_back(w);
            }
        }
        *waiting = rest;
        Ok(batch)
    }
}

fn lost() -> CoordinatorError {
    CoordinatorError::Transport("an evaluation batch ended without answering a job".into())
}

/// Evaluates a batch (one key set) and answers each job.
fn evaluate_batch(batch: Vec<Waiting>) {
    let Some(key) = batch.first().map(|w| w.key.clone()) else { return };
    let items: Vec<BatchItem<'_>> =
        batch.iter().map(|w| (&*w.plan as &dyn Program, w.contributions.as_slice())).collect();
    let start = Instant::now();
    let outcomes = key.evaluate_batch(&items);
    let wall = start.elapsed();
    drop(items);
    let mut outcomes = outcomes.into_iter();
    for w in batch {
        let outcome = outcomes.next().unwrap_or_else(|| Err(jointscore_circuits::Error::Internal("no outcome".into())));
        // A job stopped meanwhile no longer listens.
        let _ = w.answer.send(outcome.map(|(result, report)| (result, report, wall)).map_err(CoordinatorError::from));
    }
}
