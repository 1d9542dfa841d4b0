//! Runs decision jobs: fan-out to parties, evaluation, result storage.
//!
//! [`Engine`] is the coordinator's shared state; its work is split by
//! responsibility: [`jobs`] runs a job from spawn (or recovery after a
//! restart) to its recorded end, [`caches`] holds the keys, plans and model
//! files decoded once, [`fanout`] asks the parties for their contributions
//! (and stands in for absent ones), [`verify`] checks each
//! contribution's signature and, in strict mode, its proofs, and
//! [`evaluate`] evaluates the jobs waiting under one key set together.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use jointscore_circuits::PlanKind;
use jointscore_circuits::fhe::PublicKey;
use jointscore_circuits::proof::Crs;
use jointscore_identity::Consortium;
use jointscore_monitor::Compiled;
use jointscore_net::NodeTls;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Code;
use tonic::transport::Channel;

use crate::commit::Committer;
use crate::config::CoordinatorConfig;
use crate::drain::JobTasks;
use crate::error::{CoordinatorError, Result};
use crate::ledger::Ledger;
use crate::store::JobStore;

mod caches;
mod evaluate;
mod fanout;
mod jobs;
mod verify;

/// Shared state of the running coordinator: the store, the bounds on work
/// in flight, and keys and plans decoded once.
pub(crate) struct Engine {
    pub(crate) store: Arc<dyn JobStore>,
    /// The store's writer: every job write and ledger entry, committed a
    /// batch at a time.
    pub(crate) commits: Committer,
    pub(crate) config: CoordinatorConfig,
    queue: Arc<Semaphore>,
    eval: Arc<Semaphore>,
    /// Jobs whose contributions are in, waiting for an evaluation worker.
    waiting: evaluate::EvalQueue,
    evaluation_keys: Mutex<caches::KeyCache>,
    public_keys: Mutex<HashMap<String, PublicKey>>,
    plans: Mutex<HashMap<(String, PlanKind), Arc<Compiled>>>,
    /// Model files by id, as parties are sent them with every request.
    models: Mutex<HashMap<String, Arc<str>>>,
    /// Decompressing an evaluation key takes seconds: one at a time, so two
    /// jobs for a key not yet cached do not both pay for it.
    key_load: tokio::sync::Mutex<()>,
    /// Bumped whenever a job ends, so long polls wake without polling.
    ended: tokio::sync::watch::Sender<u64>,
    /// One HTTP/2 connection per party address, reused across jobs.
    channels: Mutex<HashMap<String, Channel>>,
    /// Key uploads are buffered whole (tens of MB) and decompressed: one at
    /// a time, so concurrent uploads cannot exhaust memory.
    pub(crate) registrations: tokio::sync::Mutex<()>,
    /// The consortium, when contributions, key sets and requests must be
    /// signed.
    pub(crate) consortium: Option<Arc<Consortium>>,
    /// Mutual TLS, when the consortium runs it: parties are dialled only
    /// over it, and each must present its own listed certificate.
    pub(crate) tls: Option<NodeTls>,
    /// The audit ledger, when the coordinator has an identity key.
    pub(crate) ledger: Option<Arc<Ledger>>,
    /// Strict mode: the consortium's CRS; every contribution must carry
    /// proofs that verify against it for its request.
    crs: Option<Arc<Crs>>,
    /// The jobs running, drained at shutdown.
    pub(crate) tasks: JobTasks,
    /// In a worker process, its name: it runs jobs it claimed under a
    /// lease, and writes a job's end only while it holds the lease.
    pub(crate) worker: Option<String>,
}

/// A job's failure with the status code it ends with.
pub(crate) fn failed(code: Code, reason: String) -> CoordinatorError {
    CoordinatorError::JobFailed { code: code as i32, reason }
}

fn lock<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>> {
    m.lock().map_err(|_| CoordinatorError::Store("cache lock poisoned by an earlier panic".into()))
}

impl Engine {
    #[expect(clippy::too_many_arguments, reason = "one constructor, called once, from `server::assemble`")]
    pub(crate) fn new(
        store: Arc<dyn JobStore>,
        commits: Committer,
        config: CoordinatorConfig,
        consortium: Option<Arc<Consortium>>,
        tls: Option<NodeTls>,
        ledger: Option<Ledger>,
        crs: Option<Arc<Crs>>,
        worker: Option<String>,
    ) -> Arc<Engine> {
        Arc::new(Engine {
            worker,
            evaluation_keys: Mutex::new(caches::KeyCache::new(config.key_cache)),
            queue: Arc::new(Semaphore::new(config.queue_capacity)),
            eval: Arc::new(Semaphore::new(config.eval_workers)),
            waiting: evaluate::EvalQueue::default(),
            store,
            commits,
            config,
            public_keys: Mutex::new(HashMap::new()),
            plans: Mutex::new(HashMap::new()),
            models: Mutex::new(HashMap::new()),
            key_load: tokio::sync::Mutex::new(()),
            ended: tokio::sync::watch::Sender::new(0),
            channels: Mutex::new(HashMap::new()),
            registrations: tokio::sync::Mutex::new(()),
            consortium,
            tls,
            ledger: ledger.map(Arc::new),
            crs,
            tasks: JobTasks::default(),
        })
    }

    /// Whether decision jobs are left in the store for worker processes
    /// (a front end with `evaluation = "workers"`).
    pub(crate) fn external(&self) -> bool {
        self.worker.is_none() && self.config.evaluation == crate::config::Evaluation::Workers
    }

    /// A place in the queue, or `Busy` when it is full.
    pub(crate) fn reserve(&self) -> Result<OwnedSemaphorePermit> {
        self.queue.clone().try_acquire_owned().map_err(|_| CoordinatorError::Busy(self.config.queue_capacity))
    }
}

/// A party's message as it may be stored, logged and shown to lenders:
/// at most 512 bytes, control characters replaced.
pub(crate) fn bounded(message: &str) -> String {
    let mut out: String = message.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if out.len() > 512 {
        let mut end = 512;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    }
    out
}

pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
