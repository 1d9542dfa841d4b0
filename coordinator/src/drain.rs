//! Jobs in flight at shutdown: each finishes within the grace period, or
//! is stopped and left in the store as it was (accepted, collecting or
//! evaluating), which `recover` re-runs at the next start. A job stopped
//! this way is never marked failed: nothing about it failed.

use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::task::JoinSet;
use tokio::time::Instant;

/// The decision and statistics jobs running in the background.
#[derive(Default)]
pub(crate) struct JobTasks {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    tasks: JoinSet<()>,
    draining: bool,
}

/// What a graceful shutdown did with the jobs in flight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Drained {
    /// Jobs that ran to their end (done or failed) during the grace period.
    pub jobs_finished: usize,
    /// Jobs still running when the grace period ended, stopped where they
    /// were.
    pub jobs_interrupted: usize,
    /// Jobs the store holds unfinished at close (the interrupted ones,
    /// those accepted while the node drained and those queued): the next
    /// start resumes them.
    pub jobs_unfinished: usize,
    /// Whether calls were still open when the grace period ended; their
    /// connections were cut (the clients see the call fail, UNAVAILABLE,
    /// and retry against the next start).
    pub calls_cut: bool,
}

impl JobTasks {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The set stays consistent whatever panicked while holding it.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `job` in the background, unless the node is draining: then it
    /// is dropped unstarted (its job stays in the store for the next start)
    /// and `false` is returned.
    pub(crate) fn spawn(&self, job: impl Future<Output = ()> + Send + 'static) -> bool {
        let mut inner = self.lock();
        if inner.draining {
            return false;
        }
        // Forget the jobs that have ended, so the set holds running ones.
        while inner.tasks.try_join_next().is_some() {}
        inner.tasks.spawn(job);
        true
    }

    /// Starts no job any more, waits for the running ones until
    /// `deadline`, then stops the rest where they are. Returns how many
    /// finished and how many were stopped.
    pub(crate) async fn drain(&self, deadline: Instant) -> (usize, usize) {
        let mut tasks = {
            let mut inner = self.lock();
            inner.draining = true;
            std::mem::take(&mut inner.tasks)
        };
        while tasks.try_join_next().is_some() {}
        let mut finished = 0;
        loop {
            match tokio::time::timeout_at(deadline, tasks.join_next()).await {
                Ok(None) => return (finished, 0),
                Ok(Some(ended)) => {
                    if let Err(e) = ended {
                        tracing::error!(error = %e, "a job task panicked");
                    }
                    finished += 1;
                }
                Err(_) => break,
            }
        }
        tasks.abort_all();
        let mut interrupted = 0;
        while let Some(ended) = tasks.join_next().await {
            match ended {
                Err(e) if e.is_cancelled() => interrupted += 1,
                _ => finished += 1,
            }
        }
        (finished, interrupted)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_drain_waits_for_quick_jobs_stops_slow_ones_and_starts_none() {
        let tasks = JobTasks::default();
        let ended = Arc::new(AtomicUsize::new(0));
        for pause in [10, 20, 60_000] {
            let ended = ended.clone();
            assert!(tasks.spawn(async move {
                tokio::time::sleep(Duration::from_millis(pause)).await;
                ended.fetch_add(1, Ordering::SeqCst);
            }));
        }
        let (finished, interrupted) = tasks.drain(Instant::now() + Duration::from_millis(500)).await;
        assert_eq!((finished, interrupted), (2, 1));
        assert_eq!(ended.load(Ordering::SeqCst), 2, "the slow job was stopped, not run to its end");
        assert!(!tasks.spawn(async {}), "no job starts while draining");
    }
}
