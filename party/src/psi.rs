//! The party's side of private set intersection: it answers as responder,
//! the coordinator relaying for the requesting lender.
//!
//! A session holds this node's secret exponent in memory only, for
//! `psi_session_ttl_s` (configuration); the node keeps at most [`MAX_SESSIONS`] at once. What
//! leaves the node is its encoded set (`H(y)^b`, shuffled) and the query
//! points raised to `b`: the requester learns which of its own items this
//! node holds and how many items the node holds, and this node learns
//! how many items were queried, never which.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jointscore_proto::v1::{PsiAnswer, PsiOpenRequest, PsiPurpose, PsiQueryRequest, PsiSession};
use jointscore_psi::{MAX_BATCH, MAX_ITEMS, POINT_BYTES, ResponderSession, points_from_bytes, points_to_bytes};
use rand_core::{OsRng, RngCore};

use crate::config::PartyConfig;
use crate::error::{PartyError, Result};
use crate::store::RecordStore;

/// Sessions held at once; an open beyond this is refused until one ends.
pub const MAX_SESSIONS: usize = 32;
/// Longest requester name accepted.
const NAME_MAX: usize = 128;

struct Session {
    key: Arc<ResponderSession>,
    expires: Instant,
    /// Points answered so far; a session answers at most `MAX_ITEMS`.
    queried: usize,
}

/// The PSI sessions of one party node.
pub(crate) struct PsiSessions {
    party: String,
    asset_registry: bool,
    ttl: Duration,
    store: Arc<RecordStore>,
    sessions: Mutex<HashMap<String, Session>>,
}

impl PsiSessions {
    pub(crate) fn new(config: &PartyConfig, store: Arc<RecordStore>) -> PsiSessions {
        PsiSessions {
            party: config.name.clone(),
            asset_registry: config.asset_registry,
            ttl: Duration::from_secs(config.psi_session_ttl_s),
            store,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<String, Session>>> {
        self.sessions.lock().map_err(|_| PartyError::Transport("PSI session lock poisoned by an earlier panic".into()))
    }

    /// Opens a session: a fresh key, and this node's encoded set for the
    /// purpose (its subjects for alignment, its asset registry for
    /// duplicate-financing checks).
    pub(crate) async fn open(&self, request: &PsiOpenRequest) -> Result<(PsiSession, Vec<[u8; POINT_BYTES]>)> {
        let requester = request.requester.trim();
        if requester.is_empty() || requester.len() > NAME_MAX || requester.chars().any(char::is_control) {
            return Err(PartyError::BadRequest(format!(
                "the requester must be named (1 to {NAME_MAX} printable bytes)"
            )));
        }
        let purpose = PsiPurpose::try_from(request.purpose).unwrap_or(PsiPurpose::Unspecified);
        let store = self.store.clone();
        let items: Vec<Vec<u8>> = match purpose {
            PsiPurpose::Align => tokio::task::spawn_blocking(move || store.subjects())
                .await
                .map_err(|e| PartyError::Transport(format!("store task failed: {e}")))??
                .into_iter()
                .map(String::into_bytes)
                .collect(),
            PsiPurpose::Assets if !self.asset_registry => {
                return Err(PartyError::NoRegistry { party: self.party.clone() });
            }
            PsiPurpose::Assets if requester == self.party => {
                return Err(PartyError::BadRequest(format!(
                    "lender `{requester}` asked to check its own registry; a check asks the other lenders"
                )));
            }
            PsiPurpose::Assets => tokio::task::spawn_blocking(move || store.asset_keys())
                .await
                .map_err(|e| PartyError::Transport(format!("store task failed: {e}")))??,
            PsiPurpose::Unspecified => {
                return Err(PartyError::BadRequest(format!("unknown PSI purpose {}", request.purpose)));
            }
        };
        if items.len() > MAX_ITEMS {
            return Err(PartyError::TooManyItems { party: self.party.clone(), items: items.len(), limit: MAX_ITEMS });
        }
        {
            let mut sessions = self.lock()?;
            let now = Instant::now();
            sessions.retain(|_, s| s.expires > now);
            if sessions.len() >= MAX_SESSIONS {
                return Err(PartyError::Busy(format!("{MAX_SESSIONS} PSI sessions are open; try again later")));
            }
        }
        // Hashing and exponentiating the whole set is CPU work.
        let (key, set) = tokio::task::spawn_blocking(move || {
            let key = ResponderSession::new(&mut OsRng);
            let set = key.encode_set(&items, &mut OsRng)?;
            Ok::<_, PartyError>((key, set))
        })
        .await
        .map_err(|e| PartyError::Transport(format!("PSI task failed: {e}")))??;
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        let session_id = hex::encode(id);
        let header = PsiSession {
            session_id: session_id.clone(),
            set_len: set.len() as u64,
            per_item: 1,
            expires_in_ms: self.ttl.as_millis() as u64,
        };
        let mut sessions = self.lock()?;
        if sessions.len() >= MAX_SESSIONS {
            return Err(PartyError::Busy(format!("{MAX_SESSIONS} PSI sessions are open; try again later")));
        }
        sessions.insert(session_id, Session { key: Arc::new(key), expires: Instant::now() + self.ttl, queried: 0 });
        tracing::info!(party = %self.party, purpose = purpose.as_str_name(), %requester, set = set.len(), "PSI session opened");
        Ok((header, set))
    }

    /// Raises one batch of blinded points to the session's key. A refused
    /// batch leaves the session as it was.
    pub(crate) async fn query(&self, request: &PsiQueryRequest) -> Result<PsiAnswer> {
        let points = points_from_bytes(&request.points, "query batch", MAX_BATCH)?;
        let key = {
            let mut sessions = self.lock()?;
            let unknown =
                || PartyError::UnknownSession { party: self.party.clone(), session: bounded_id(&request.session_id) };
            let session = sessions.get_mut(&request.session_id).ok_or_else(unknown)?;
            if session.expires <= Instant::now() {
                sessions.remove(&request.session_id);
                return Err(PartyError::SessionExpired {
                    party: self.party.clone(),
                    session: bounded_id(&request.session_id),
                });
            }
            if session.queried + points.len() > MAX_ITEMS {
                return Err(PartyError::Psi(jointscore_psi::Error::TooLarge {
                    what: "session's queries",
                    len: session.queried + points.len(),
                    limit: MAX_ITEMS,
                }));
            }
            session.key.clone()
        };
        let answered = tokio::task::spawn_blocking(move || key.answer(&points))
            .await
            .map_err(|e| PartyError::Transport(format!("PSI task failed: {e}")))??;
        if let Some(session) = self.lock()?.get_mut(&request.session_id) {
            session.queried += answered.len();
        }
        Ok(PsiAnswer { points: points_to_bytes(&answered) })
    }
}

/// A session id as it may appear in an error: the requester chose the
/// bytes, so they are bounded and printable.
fn bounded_id(id: &str) -> String {
    let shown: String = id.chars().take(64).map(|c| if c.is_control() { '?' } else { c }).collect();
    if id.chars().count() > 64 { format!("{shown}…") } else { shown }
}
