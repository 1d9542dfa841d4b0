//! `coordinator.toml`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{CoordinatorError, Result};

/// The coordinator's configuration.
///
/// ```toml
/// listen = "127.0.0.1:7100"
/// store = "coordinator.sqlite"   # relative to this file
/// queue_capacity = 64            # decisions in flight before RESOURCE_EXHAUSTED
/// eval_workers = 1               # joint circuits evaluated at once
/// party_deadline_ms = 30000      # per party, connection included
/// lenders = ["bank", "bank2"]    # consortium lenders (their party nodes keep
///                                # asset registries) for duplicate-financing checks
/// consortium = "consortium.toml" # members and keys: contributions must be signed
/// identity = "coordinator.key"   # this node's identity key (`jointscore consortium init`)
/// shutdown_grace_ms = 20000      # on SIGTERM: how long calls and jobs in flight may finish
/// ```
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// Socket address to serve on; port 0 picks a free one.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Where registrations, models, jobs and the ledger are kept: a SQLite
    /// file (one coordinator process), or a PostgreSQL database
    /// (`postgres://user@host:5432/db`: several front ends and workers on
    /// one database; docs/scale.md).
    pub store: PathBuf,
    /// Decisions accepted but not finished, at most; a new one beyond this
    /// is refused with RESOURCE_EXHAUSTED so the lender backs off.
    #[serde(default = "default_queue")]
    pub queue_capacity: usize,
    /// Joint circuits evaluated concurrently. TFHE evaluation already uses
    /// every core (rayon), so on a small machine one at a time gives the
    /// best latency; raise it on machines with many cores.
    #[serde(default = "default_workers")]
    pub eval_workers: usize,
    /// How long one party may take to answer a contribution request,
    /// connecting included; a party that misses it fails the job.
    #[serde(default = "default_deadline")]
    pub party_deadline_ms: u64,
    /// The consortium's lenders, by the names their party nodes register
    /// under. Only they may run duplicate-financing checks, and a check
    /// asks every other one of them. Empty: no checks.
    #[serde(default)]
    pub lenders: Vec<String>,
    /// The consortium file (relative to this file). When set, every
    /// contribution must carry a valid signature by its party, a current
    /// party member; unset, contributions are taken unsigned (a
    /// single-operator or test deployment).
    #[serde(default)]
    pub consortium: Option<PathBuf>,
    /// This coordinator's identity key file (relative to this file).
    #[serde(default)]
    pub identity: Option<PathBuf>,
    /// How long a party may take to open a PSI session: it hashes and
    /// exponentiates its whole set (about 30 s per million items on two
    /// cores).
    #[serde(default = "default_psi_open_deadline")]
    pub psi_open_deadline_ms: u64,
    /// At shutdown (SIGTERM, Ctrl-C), how long calls and jobs in flight
    /// may take to finish; a job still running then is stopped and left
    /// unfinished in the store, and the next start resumes it. Keep it
    /// under the supervisor's kill timeout (Kubernetes: 30 s by default).
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_ms: u64,
    /// Who evaluates decision jobs: `local` (this process, the default),
    /// or `workers`: this front end accepts and answers, and
    /// `jointscore coordinator worker` processes on the same PostgreSQL
    /// database claim the jobs ([docs/scale.md]).
    #[serde(default)]
    pub evaluation: Evaluation,
    /// A worker's lease on a job it claimed: renewed every third of it
    /// while the worker runs the job; a worker that stops (killed, cut
    /// off) loses the job to another one once it runs out.
    #[serde(default = "default_lease")]
    pub lease_ms: u64,
    /// Decompressed evaluation keys held in memory, at most (about 180 MB
    /// each); the least recently used is dropped first.
    #[serde(default = "default_key_cache")]
    pub key_cache: usize,
}

/// Who evaluates a coordinator's decision jobs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Evaluation {
    /// The process that accepted them.
    #[default]
    Local,
    /// Worker processes claiming them from the database.
    Workers,
}

fn default_lease() -> u64 {
    30_000
}

fn default_key_cache() -> usize {
    4
}

fn default_shutdown_grace() -> u64 {
    20_000
}

fn default_psi_open_deadline() -> u64 {
    300_000
}

fn default_listen() -> String {
    "127.0.0.1:7100".into()
}
fn default_queue() -> usize {
    64
}
fn default_workers() -> usize {
    1
}
fn default_deadline() -> u64 {
    30_000
}

impl CoordinatorConfig {
    /// A configuration with every default and the given store.
    pub fn with_store(store: PathBuf) -> CoordinatorConfig {
        CoordinatorConfig {
            listen: default_listen(),
            store,
            queue_capacity: default_queue(),
            eval_workers: default_workers(),
            party_deadline_ms: default_deadline(),
            lenders: Vec::new(),
            consortium: None,
            identity: None,
            psi_open_deadline_ms: default_psi_open_deadline(),
            shutdown_grace_ms: default_shutdown_grace(),
            evaluation: Evaluation::Local,
            lease_ms: default_lease(),
            key_cache: default_key_cache(),
        }
    }

    /// Reads a configuration file; a relative `store` is taken relative to
    /// the file's directory.
    pub fn load(path: &Path) -> Result<CoordinatorConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CoordinatorError::Config(format!("cannot read {}: {e}", path.display())))?;
        let mut config = CoordinatorConfig::from_toml(&text)
            .map_err(|e| CoordinatorError::Config(format!("{}: {e}", path.display())))?;
        if let Some(dir) = path.parent() {
            // A PostgreSQL URL is no file.
            let store = (crate::store::postgres_url(&config.store).is_none()).then_some(&mut config.store);
            for file in [store, config.consortium.as_mut(), config.identity.as_mut()].into_iter().flatten() {
                if file.is_relative() {
                    *file = dir.join(&*file);
                }
            }
        }
        Ok(config)
    }

    /// Parses and checks a configuration.
    pub fn from_toml(text: &str) -> Result<CoordinatorConfig> {
        let config: CoordinatorConfig =
            toml::from_str(text).map_err(|e| CoordinatorError::Config(e.message().to_string()))?;
        if config.identity.is_some() && config.consortium.is_none() {
            // The ledger would record attestations nobody checked, and one
            // junk signature would make it fail verification for good.
            return Err(CoordinatorError::Config(
                "`identity` (the audit ledger) needs `consortium`, to check what it records".into(),
            ));
        }
        if config.evaluation == Evaluation::Workers && crate::store::postgres_url(&config.store).is_none() {
            return Err(CoordinatorError::Config(
                "`evaluation = \"workers\"` needs a PostgreSQL `store` (workers on other machines share it)".into(),
            ));
        }
        if config.queue_capacity == 0
            || config.eval_workers == 0
            || config.lease_ms < 300
            || config.key_cache == 0
            || config.party_deadline_ms == 0
            || config.psi_open_deadline_ms == 0
        {
            return Err(CoordinatorError::Config(
                "`queue_capacity`, `eval_workers`, `key_cache`, `party_deadline_ms` and `psi_open_deadline_ms` must be \
                 at least 1, and `lease_ms` at least 300"
                    .into(),
            ));
        }
        Ok(config)
    }

    /// The per-party deadline.
    pub fn party_deadline(&self) -> Duration {
        Duration::from_millis(self.party_deadline_ms)
    }

    /// The deadline for a party to open a PSI session.
    pub fn psi_open_deadline(&self) -> Duration {
        Duration::from_millis(self.psi_open_deadline_ms)
    }

    /// How long a graceful shutdown waits for calls and jobs in flight.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        let c = CoordinatorConfig::from_toml("store = \"c.sqlite\"\n").expect("valid");
        assert_eq!((c.queue_capacity, c.eval_workers, c.party_deadline_ms), (64, 1, 30_000));
        assert_eq!(c.shutdown_grace(), Duration::from_secs(20));
        let e = CoordinatorConfig::from_toml("store = \"c.sqlite\"\nqueue_capacity = 0\n").unwrap_err();
        assert!(e.to_string().contains("at least 1"), "{e}");
        let e = CoordinatorConfig::from_toml("stor = \"c.sqlite\"\n").unwrap_err();
        assert!(e.to_string().contains("stor"), "{e}");
    }
}
