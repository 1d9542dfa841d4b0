//! The party's side of private set intersection: it answers as responder,
//! the coordinator relaying for the requesting lender.
//!
//! A session holds this node's secret exponent in memory only, until it is
//! closed or `psi_session_ttl_s` (configuration) passes; the node keeps at
//! most [`MAX_SESSIONS`] at once, opens in progress included. What
//! leaves the node is its encoded set (`H(y)^b`, shuffled) and the query
//! points raised to `b`: the requester learns which of its own items this
//! node holds and how many items the node holds, and this node learns
//! how many items were queried, never which.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jointscore_psi::{MAX_BATCH, MAX_ITEMS, POINT_BYTES, ResponderSession, points_from_bytes, points_to_bytes};
use rand_core::{OsRng, RngCore};

use crate::config::PartyConfig;
use crate::error::{PartyError, Result};
use crate::store::RecordStore;

/// What a PSI session is for, which decides the set this node encodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// Alignment: the node's subjects.
    Align,
    /// Duplicate financing: the node's asset registry.
    Assets,
}

impl Purpose {
    fn name(self) -> &'static str {
        match self {
            Purpose::Align => "align",
            Purpose::Assets => "assets",
        }
    }
}

/// A requester's ask for a session, its purpose already known.
#[derive(Clone, Debug)]
pub(crate) struct OpenRequest {
    /// Who asks, as the coordinator names it.
    pub(crate) requester: String,
    /// What for.
    pub(crate) purpose: Purpose,
}

/// A session opened: its id, the size of the encoded set and how long it
/// lives.
#[derive(Clone, Debug)]
pub(crate) struct Opened {
    /// The session's id (random, 16 bytes hex).
    pub(crate) session_id: String,
    /// How many points the encoded set holds.
    pub(crate) set_len: u64,
    /// Milliseconds until the session expires.
    pub(crate) expires_in_ms: u64,
}

/// Sessions held at once; an open beyond this is refused until one ends.
pub const MAX_SESSIONS: usize = 32;
/// Longest requester name accepted.
const NAME_LIMIT: usize = 128;

struct Session {
    key: Arc<ResponderSession>,
    expires: Instant,
    /// Points answered or being answered; a session answers at most
    /// `MAX_ITEMS`.
    queried: usize,
}

/// Sessions held, and opens still computing their encoded set (counted
/// against the limit, so concurrent opens cannot pile up work).
#[derive(Default)]
struct State {
    sessions: HashMap<String, Session>,
    opening: usize,
}

/// The PSI sessions of one party node.
pub(crate) struct PsiSessions {
    party: String,
    asset_registry: bool,
    ttl: Duration,
    store: Arc<RecordStore>,
    state: Arc<Mutex<State>>,
}

/// A place reserved for an open in progress; given back on drop, whether
/// the open succeeded or not. It travels with the CPU work, so an open the
/// caller abandons keeps its place until that work ends.
struct Opening(Arc<Mutex<State>>);

impl Drop for Opening {
    fn drop(&mut self) {
        if let Ok(mut state) = self.0.lock() {
            state.opening = state.opening.saturating_sub(1);
        }
    }
}

impl PsiSessions {
    pub(crate) fn new(config: &PartyConfig, store: Arc<RecordStore>) -> PsiSessions {
        PsiSessions {
            party: config.name.clone(),
            asset_registry: config.asset_registry,
            ttl: Duration::from_secs(config.psi_session_ttl_s),
            store,
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>> {
        self.state.lock().map_err(|_| PartyError::Transport("PSI session lock poisoned by an earlier panic".into()))
    }

    fn busy() -> PartyError {
        PartyError::Busy(format!("{MAX_SESSIONS} PSI sessions are open or opening; try again later"))
    }

    /// Reserves a place for one more session, dropping expired ones (and
    /// their keys) first.
    fn reserve(&self) -> Result<Opening> {
        let mut state = self.lock()?;
        let now = Instant::now();
        state.sessions.retain(|_, s| s.expires > now);
        if state.sessions.len() + state.opening >= MAX_SESSIONS {
            return Err(PsiSessions::busy());
        }
        state.opening += 1;
        Ok(Opening(self.state.clone()))
    }

    /// Opens a session: a fresh key, and this node's encoded set for the
    /// purpose (its subjects for alignment, its asset registry for
    /// duplicate-financing checks).
    pub(crate) async fn open(&self, request: &OpenRequest) -> Result<(Opened, Vec<[u8; POINT_BYTES]>)> {
        let requester = request.requester.trim();
        if requester.is_empty() || requester.len() > NAME_LIMIT || requester.chars().any(char::is_control) {
            return Err(PartyError::BadRequest(format!(
                "the requester must be named (1 to {NAME_LIMIT} printable bytes)"
            )));
        }
        let purpose = request.purpose;
        match purpose {
            Purpose::Align => {}
            Purpose::Assets if !self.asset_registry => {
                return Err(PartyError::NoRegistry { party: self.party.clone() });
            }
            Purpose::Assets if requester == self.party => {
                return Err(PartyError::BadRequest(format!(
                    "lender `{requester}` asked to check its own registry; a check asks the other lenders"
                )));
            }
            Purpose::Assets => {}
        }
        let opening = self.reserve()?;
        let store = self.store.clone();
        // Reading the set, hashing and exponentiating it is CPU work.
        let (key, set, opening) = tokio::task::spawn_blocking(move || {
            let items: Vec<Vec<u8>> = if purpose == Purpose::Align {
                store.subjects()?.into_iter().map(String::into_bytes).collect()
            } else {
                store.asset_keys()?
            };
            if items.len() > MAX_ITEMS {
                return Err(PartyError::TooManyItems { party: String::new(), items: items.len(), limit: MAX_ITEMS });
            }
            let key = ResponderSession::new(&mut OsRng);
            let set = key.encode_set(&items, &mut OsRng)?;
            Ok((key, set, opening))
        })
        .await
        .map_err(|e| PartyError::Transport(format!("PSI task failed: {e}")))?
        .map_err(|e| match e {
            PartyError::TooManyItems { items, limit, .. } => {
                PartyError::TooManyItems { party: self.party.clone(), items, limit }
            }
            other => other,
        })?;
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        let session_id = hex::encode(id);
        let header = Opened {
            session_id: session_id.clone(),
            set_len: set.len() as u64,
            expires_in_ms: u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX),
        };
        let session = Session { key: Arc::new(key), expires: Instant::now() + self.ttl, queried: 0 };
        self.lock()?.sessions.insert(session_id, session);
        drop(opening);
        tracing::info!(party = %self.party, purpose = purpose.name(), %requester, set = set.len(), "PSI session opened");
        Ok((header, set))
    }

    /// Raises one batch of blinded points to the session's key. A refused
    /// batch leaves the session as it was.
    pub(crate) async fn query(&self, session_id: &str, points: &[u8]) -> Result<Vec<u8>> {
        let points = points_from_bytes(points, "query batch", MAX_BATCH)?;
        let n = points.len();
        let key = {
            let mut state = self.lock()?;
            let shown = bounded_id(session_id);
            let session = state
                .sessions
                .get_mut(session_id)
                .ok_or_else(|| PartyError::UnknownSession { party: self.party.clone(), session: shown.clone() })?;
            if session.expires <= Instant::now() {
                state.sessions.remove(session_id);
                return Err(PartyError::SessionExpired { party: self.party.clone(), session: shown });
            }
            if session.queried + n > MAX_ITEMS {
                return Err(PartyError::Psi(jointscore_psi::Error::TooLarge {
                    what: "session's queries",
                    len: session.queried + n,
                    limit: MAX_ITEMS,
                }));
            }
            // Reserved before answering, so concurrent batches cannot pass
            // the limit together.
            session.queried += n;
            session.key.clone()
        };
        let answered = tokio::task::spawn_blocking(move || key.answer(&points))
            .await
            .map_err(|e| PartyError::Transport(format!("PSI task failed: {e}")))
            .and_then(|r| r.map_err(PartyError::from));
        if answered.is_err()
            && let Some(session) = self.lock()?.sessions.get_mut(session_id)
        {
            session.queried -= n.min(session.queried);
        }
        Ok(points_to_bytes(&answered?))
    }

    /// Drops a session's key (closing an unknown session is not an error:
    /// it may have expired already).
    pub(crate) fn close(&self, session_id: &str) -> Result<()> {
        self.lock()?.sessions.remove(session_id);
        Ok(())
    }
}

/// A session id as it may appear in an error: the requester chose the
/// bytes, so they are bounded and printable.
pub(crate) fn bounded_id(id: &str) -> String {
    let shown: String = id.chars().take(64).map(|c| if c.is_control() { '?' } else { c }).collect();
    if id.chars().count() > 64 { format!("{shown}…") } else { shown }
}
