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
//!
//! Who asks is the requester's own word, not the coordinator's: with a
//! consortium file the node opens a session only for an open the named
//! requester signed ([`PsiOpenStatement`]: a current lender, or for an
//! asset check a lender's registry node), signed within
//! `request_max_age_s` of now, whose nonce it has not seen. It answers each
//! requester at most `psi_daily_budget` ids per UTC day, counted in its
//! store with each query. Each query batch must be signed by the requester
//! that opened the session ([`PsiQueryStatement`]) and carry the session's
//! next batch number, so a coordinator can neither add points of its own
//! nor replay or reorder the requester's batches (without a consortium
//! file only the numbers are checked). Every session opened or refused, and every query
//! answered or refused, is in the node's log ([`LogKind::Psi`]).
//!
//! With `psi_daily_encoding`, alignment sessions share one encoding per
//! requester and UTC day ([`DailyEncodings`]): a fresh random key per
//! requester and day (and per version of the subject list), kept in memory
//! only, and the subjects encoded under it once. A later alignment of that
//! requester that day costs this node reading and hashing its subject list
//! (to see that it is unchanged) and the exponentiations of the ids
//! queried. Such a session answers only within its day, so everything one
//! key answers counts against one day's budget.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jointscore_identity::{Consortium, PsiOpenStatement, PsiQueryStatement};
use jointscore_psi::{MAX_BATCH, MAX_ITEMS, POINT_BYTES, ResponderSession, points_from_bytes, points_to_bytes};
use rand_core::{OsRng, RngCore};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::config::PartyConfig;
use crate::error::{PartyError, Result};
use crate::log::LogKind;
use crate::store::RecordStore;

pub(crate) mod store;

pub(crate) use store::SCHEMA;
use store::{DAY_MS, date, utc_day};

/// What a PSI session is for, which decides the set this node encodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// Alignment: the node's subjects.
    Align,
    /// Duplicate financing: the node's asset registry.
    Assets,
}

impl Purpose {
    /// As the signed statement spells it.
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
    /// Who asks, as the requester signed it.
    pub(crate) requester: String,
    /// What for.
    pub(crate) purpose: Purpose,
    /// When the requester signed, in milliseconds since the unix epoch.
    pub(crate) time_ms: u64,
    /// The open's nonce, hex.
    pub(crate) nonce: String,
    /// The requester's signature over its [`PsiOpenStatement`] (empty
    /// when unsigned).
    pub(crate) signature: Vec<u8>,
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
/// Daily encodings kept at once (one per requester; each holds 32 bytes per
/// subject): past that, the least recently used is dropped, and that
/// requester's next alignment is encoded afresh under a fresh key.
pub(crate) const MAX_DAILY_ENCODINGS: usize = 8;
/// Longest requester name accepted.
const NAME_LIMIT: usize = 128;

struct Session {
    key: Arc<ResponderSession>,
    expires: Instant,
    /// Who opened it: its queries count against this requester's budget.
    requester: String,
    /// The nonce of its open: what the requester's batch signatures name.
    nonce: String,
    /// The number the next batch must carry (0, 1, 2, …).
    next_batch: u32,
    /// Points answered or being answered; a session answers at most
    /// `MAX_ITEMS`.
    queried: usize,
    /// For a session on a daily encoding, the UTC day of its key: it
    /// answers only on that day.
    day: Option<u64>,
}

/// One requester's encoding of this node's subjects for one UTC day.
struct DailyEncoding {
    day: u64,
    /// SHA-256 of the subject list encoded: a changed list is encoded
    /// afresh, under a fresh key.
    fingerprint: [u8; 32],
    key: Arc<ResponderSession>,
    set: Arc<Vec<[u8; POINT_BYTES]>>,
    /// When it was last handed to a session (for eviction).
    used: Instant,
}

/// The daily encodings, per requester; at most [`MAX_DAILY_ENCODINGS`].
/// The keys live in memory only and are zeroized when dropped (with the
/// last session using them): a restart draws fresh ones.
#[derive(Default)]
struct DailyEncodings(HashMap<String, DailyEncoding>);

impl DailyEncodings {
    /// The requester's encoding for `day` of the subjects `fingerprint`
    /// names, if it is kept.
    fn get(&mut self, requester: &str, day: u64, fingerprint: &[u8; 32]) -> Option<DailyHandle> {
        let e = self.0.get_mut(requester).filter(|e| e.day == day && &e.fingerprint == fingerprint)?;
        e.used = Instant::now();
        Some(DailyHandle { key: e.key.clone(), set: e.set.clone(), reused: true })
    }

    /// Keeps a new encoding for the requester, replacing its earlier one,
    /// dropping other requesters' encodings of earlier days and, past the
    /// limit, the least recently used.
    fn put(&mut self, requester: &str, encoding: DailyEncoding) {
        let day = encoding.day;
        self.0.retain(|_, e| e.day >= day);
        self.0.insert(requester.to_string(), encoding);
        while self.0.len() > MAX_DAILY_ENCODINGS {
            let Some(oldest) = self.0.iter().min_by_key(|(_, e)| e.used).map(|(r, _)| r.clone()) else { break };
            self.0.remove(&oldest);
        }
    }
}

/// A session's share of a daily encoding.
struct DailyHandle {
    key: Arc<ResponderSession>,
    set: Arc<Vec<[u8; POINT_BYTES]>>,
    /// Whether it was made for an earlier session.
    reused: bool,
}

/// SHA-256 of a list of items, each length-prefixed.
fn fingerprint(items: &[Vec<u8>]) -> [u8; 32] {
    let mut h = Sha256::new();
    for item in items {
        h.update((item.len() as u64).to_le_bytes());
        h.update(item);
    }
    h.finalize().into()
}

/// One query batch as the requester sent it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Batch<'a> {
    /// The party's session id.
    pub(crate) session_id: &'a str,
    /// The batch's number in the session.
    pub(crate) number: u32,
    /// The requester's signature over its [`PsiQueryStatement`] (empty
    /// when unsigned).
    pub(crate) signature: &'a [u8],
    /// The blinded points, as sent.
    pub(crate) points: &'a [u8],
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
    /// How far an open's signed time may be from now, in milliseconds.
    max_age_ms: u64,
    /// Ids answered per requester per UTC day.
    budget: u64,
    store: Arc<RecordStore>,
    state: Arc<Mutex<State>>,
    /// Whose signatures open sessions; `None` (a development node that
    /// trusts its coordinator) takes the requester's name as given.
    consortium: Option<Arc<Consortium>>,
    /// Whether alignments use a daily encoding per requester.
    daily: bool,
    encodings: Arc<Mutex<DailyEncodings>>,
    /// Milliseconds since the unix epoch (a test moves it).
    clock: fn() -> u64,
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
            max_age_ms: config.request_max_age_s.saturating_mul(1000),
            budget: config.psi_daily_budget,
            store,
            state: Arc::new(Mutex::new(State::default())),
            consortium: None,
            daily: config.psi_daily_encoding,
            encodings: Arc::new(Mutex::new(DailyEncodings::default())),
            clock: now_ms,
        }
    }

    /// Opens sessions only for requesters that sign as members of
    /// `consortium`.
    pub(crate) fn set_consortium(&mut self, consortium: Arc<Consortium>) {
        self.consortium = Some(consortium);
    }

    /// Appends a refusal to the party's log; a failure to log is only
    /// traced (the refusal stands either way).
    fn log_refusal(&self, body: serde_json::Value) {
        if let Err(e) = self.store.log(LogKind::Psi, body) {
            tracing::warn!(party = %self.party, error = %e, "could not log a PSI refusal");
        }
    }

    /// The open is the requester's own: with a consortium, signed by the
    /// member it names (for this party, when aligning), within
    /// `request_max_age_s` of now, its nonce never seen before.
    fn authenticate(&self, request: &OpenRequest, requester: &str) -> Result<()> {
        let Some(consortium) = &self.consortium else { return Ok(()) };
        let refuse = |reason: String| PartyError::PsiUnauthenticated {
            party: self.party.clone(),
            requester: requester.into(),
            reason,
        };
        if request.signature.is_empty() {
            return Err(refuse("the requester did not sign it".into()));
        }
        let statement = PsiOpenStatement {
            requester: requester.into(),
            purpose: request.purpose.name().into(),
            // An alignment names the party it is for; an asset check goes
            // to every other lender alike.
            party: if request.purpose == Purpose::Align { self.party.clone() } else { String::new() },
            time_ms: request.time_ms,
            nonce: request.nonce.clone(),
        };
        let now = (self.clock)();
        statement.verify(consortium, &request.signature, now / 1000).map_err(|e| refuse(e.to_string()))?;
        let skew = now.abs_diff(request.time_ms);
        if skew > self.max_age_ms {
            return Err(PartyError::PsiReplayed {
                party: self.party.clone(),
                requester: requester.into(),
                reason: format!(
                    "it was signed {} s from now, outside the {} s this party accepts (a stale or replayed open, or \
                     a clock that is off)",
                    skew / 1000,
                    self.max_age_ms / 1000
                ),
            });
        }
        if !self.store.claim_psi_nonce(requester, &request.nonce, request.time_ms, now)? {
            return Err(PartyError::PsiReplayed {
                party: self.party.clone(),
                requester: requester.into(),
                reason: "its nonce was used before: a replayed open".into(),
            });
        }
        Ok(())
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
    /// duplicate-financing checks). The session is logged, and so is a
    /// refusal, with its reason.
    pub(crate) async fn open(&self, request: &OpenRequest) -> Result<(Opened, Arc<Vec<[u8; POINT_BYTES]>>)> {
        let opened = self.try_open(request).await;
        if let Err(e) = &opened {
            self.log_refusal(json!({
                "event": "open refused",
                "requester": bounded_id(&request.requester),
                "purpose": request.purpose.name(),
                "signed_ms": request.time_ms,
                "reason": e.to_string(),
            }));
        }
        opened
    }

    async fn try_open(&self, request: &OpenRequest) -> Result<(Opened, Arc<Vec<[u8; POINT_BYTES]>>)> {
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
        self.authenticate(request, requester)?;
        let opening = self.reserve()?;
        let store = self.store.clone();
        let day = (self.daily && purpose == Purpose::Align).then(|| utc_day((self.clock)()));
        let daily = day.map(|day| (day, self.encodings.clone(), requester.to_string()));
        // Reading the set, hashing and exponentiating it is CPU work.
        let (key, set, reused, opening) = tokio::task::spawn_blocking(move || {
            let items: Vec<Vec<u8>> = if purpose == Purpose::Align {
                store.subjects()?.into_iter().map(String::into_bytes).collect()
            } else {
                store.asset_keys()?
            };
            if items.len() > MAX_ITEMS {
                return Err(PartyError::TooManyItems { party: String::new(), items: items.len(), limit: MAX_ITEMS });
            }
            let Some((day, encodings, requester)) = daily else {
                let key = ResponderSession::new(&mut OsRng);
                let set = key.encode_set(&items, &mut OsRng)?;
                return Ok((Arc::new(key), Arc::new(set), false, opening));
            };
            let lock = || {
                encodings
                    .lock()
                    .map_err(|_| PartyError::Transport("PSI encodings lock poisoned by an earlier panic".into()))
            };
            // The list is sorted by the store, so equal sets hash equal.
            let fingerprint = fingerprint(&items);
            if let Some(kept) = lock()?.get(&requester, day, &fingerprint) {
                return Ok((kept.key, kept.set, kept.reused, opening));
            }
            // A fresh key per requester, day and subject list: encodings
            // of different days, requesters or lists share nothing.
            let key = Arc::new(ResponderSession::new(&mut OsRng));
            let set = Arc::new(key.encode_set(&items, &mut OsRng)?);
            let encoding = DailyEncoding { day, fingerprint, key: key.clone(), set: set.clone(), used: Instant::now() };
            lock()?.put(&requester, encoding);
            Ok((key, set, false, opening))
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
        let mut lifetime = self.ttl;
        if let Some(day) = day {
            // A daily session ends with its day at the latest.
            let day_left = ((day + 1) * DAY_MS).saturating_sub((self.clock)());
            lifetime = lifetime.min(Duration::from_millis(day_left));
        }
        let header = Opened {
            session_id: session_id.clone(),
            set_len: set.len() as u64,
            expires_in_ms: u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX),
        };
        // Logged before it can be queried: a session not in the log is
        // never answered.
        self.store.log(
            LogKind::Psi,
            json!({
                "event": "open",
                "requester": requester,
                "purpose": purpose.name(),
                "session": session_id,
                "set_len": set.len(),
                "signed_ms": request.time_ms,
                "nonce": request.nonce,
                "signed": !request.signature.is_empty(),
                "encoding": match (day, reused) {
                    (None, _) => "session".to_string(),
                    (Some(day), false) => format!("daily {}, new", date(day)),
                    (Some(day), true) => format!("daily {}, reused", date(day)),
                },
            }),
        )?;
        let session = Session {
            key,
            expires: Instant::now() + lifetime,
            requester: requester.to_string(),
            nonce: request.nonce.clone(),
            next_batch: 0,
            queried: 0,
            day,
        };
        self.lock()?.sessions.insert(session_id, session);
        drop(opening);
        tracing::info!(party = %self.party, purpose = purpose.name(), %requester, set = set.len(), daily = day.is_some(), reused, "PSI session opened");
        Ok((header, set))
    }

    /// Raises one batch of blinded points to the session's key, counting
    /// them against the requester's budget for the day. With a consortium
    /// the batch must be signed by the member that opened the session
    /// ([`PsiQueryStatement`]); with or without, its number must be the
    /// session's next. A refused batch leaves the session and the budget as
    /// they were; the batch, answered or refused, is logged.
    pub(crate) async fn query(&self, batch: Batch<'_>) -> Result<Vec<u8>> {
        let session_id = batch.session_id;
        let points = points_from_bytes(batch.points, "query batch", MAX_BATCH)?;
        let n = points.len();
        let (key, requester, day) = {
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
            let today = utc_day((self.clock)());
            if let Some(day) = session.day.filter(|&day| day != today) {
                // Its key's answers all count against its own day.
                state.sessions.remove(session_id);
                return Err(PartyError::PsiStaleDay { party: self.party.clone(), session: shown, day: date(day) });
            }
            if let Err(e) = self.check_batch(session, &batch) {
                let requester = session.requester.clone();
                drop(state);
                self.log_refusal(json!({
                    "event": "query refused",
                    "requester": requester,
                    "session": session_id,
                    "batch": batch.number,
                    "points": n,
                    "reason": e.to_string(),
                }));
                return Err(e);
            }
            if session.queried + n > MAX_ITEMS {
                return Err(PartyError::Psi(jointscore_psi::Error::TooLarge {
                    what: "session's queries",
                    len: session.queried + n,
                    limit: MAX_ITEMS,
                }));
            }
            // Reserved before answering, so concurrent batches cannot pass
            // the limit together, nor share a number.
            session.queried += n;
            session.next_batch = batch.number.saturating_add(1);
            (session.key.clone(), session.requester.clone(), session.day.unwrap_or(today))
        };
        let answered = self.answer(key, points, &requester, session_id, day).await;
        if let Err(e) = &answered {
            if let Some(session) = self.lock()?.sessions.get_mut(session_id) {
                session.queried -= n.min(session.queried);
                // The number is the requester's to use again, unless a
                // later batch took the next one meanwhile.
                if session.next_batch == batch.number.saturating_add(1) {
                    session.next_batch = batch.number;
                }
            }
            self.log_refusal(json!({
                "event": "query refused",
                "requester": requester,
                "session": session_id,
                "batch": batch.number,
                "points": n,
                "day": date(day),
                "reason": e.to_string(),
            }));
        }
        Ok(points_to_bytes(&answered?))
    }

    /// The batch is the session's requester's own (with a consortium:
    /// signed by it, over this session's open nonce, this number and these
    /// points) and carries the session's next number.
    fn check_batch(&self, session: &Session, batch: &Batch<'_>) -> Result<()> {
        if let Some(consortium) = &self.consortium {
            let refuse = |reason: String| PartyError::PsiUnauthenticated {
                party: self.party.clone(),
                requester: session.requester.clone(),
                reason: format!("query batch {}: {reason}", batch.number),
            };
            if batch.signature.is_empty() {
                return Err(refuse("the requester did not sign it".into()));
            }
            let statement = PsiQueryStatement::new(&session.requester, &session.nonce, batch.number, batch.points);
            statement.verify(consortium, batch.signature, (self.clock)() / 1000).map_err(|e| refuse(e.to_string()))?;
        }
        if batch.number != session.next_batch {
            return Err(PartyError::PsiReplayed {
                party: self.party.clone(),
                requester: session.requester.clone(),
                reason: format!(
                    "query batch {} is not the session's next (batch {}): a replayed, reordered or skipped batch",
                    batch.number, session.next_batch
                ),
            });
        }
        Ok(())
    }

    /// The batch raised to the session's key, if the requester's budget
    /// for `day` allows it: checked before the work, and counted with the
    /// log entry once the answer is ready (so concurrent batches cannot
    /// pass it together; an answer over it is dropped unsent).
    async fn answer(
        &self,
        key: Arc<ResponderSession>,
        points: Vec<[u8; POINT_BYTES]>,
        requester: &str,
        session_id: &str,
        day: u64,
    ) -> Result<Vec<[u8; POINT_BYTES]>> {
        let n = points.len() as u64;
        let over = |used: u64| PartyError::PsiBudget {
            party: self.party.clone(),
            requester: requester.to_string(),
            asked: n,
            used,
            budget: self.budget,
        };
        let used = self.store.psi_budget_used(requester, day)?;
        if used.saturating_add(n) > self.budget {
            return Err(over(used));
        }
        let answered = tokio::task::spawn_blocking(move || key.answer(&points))
            .await
            .map_err(|e| PartyError::Transport(format!("PSI task failed: {e}")))??;
        let entry = json!({
            "event": "query",
            "requester": requester,
            "session": session_id,
            "points": n,
            "day": date(day),
        });
        match self.store.count_psi_query(requester, day, n, self.budget, entry)? {
            Some(counted) => {
                tracing::debug!(party = %self.party, %requester, points = n, used = counted.used, left = counted.left, "PSI query answered");
                Ok(answered)
            }
            None => Err(over(self.store.psi_budget_used(requester, day)?)),
        }
    }

    /// Drops a session's key (closing an unknown session is not an error:
    /// it may have expired already).
    pub(crate) fn close(&self, session_id: &str) -> Result<()> {
        self.lock()?.sessions.remove(session_id);
        Ok(())
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A session id as it may appear in an error: the requester chose the
/// bytes, so they are bounded and printable.
pub(crate) fn bounded_id(id: &str) -> String {
    let shown: String = id.chars().take(64).map(|c| if c.is_control() { '?' } else { c }).collect();
    if id.chars().count() > 64 { format!("{shown}…") } else { shown }
}

#[cfg(test)]
mod tests {
    use jointscore_identity::NodeKey;
    use jointscore_psi::RequesterSession;

    use super::*;

    struct Setup {
        sessions: PsiSessions,
        store: Arc<RecordStore>,
        lender: NodeKey,
        party: NodeKey,
        /// A second lender, `lender2`.
        other: NodeKey,
    }

    /// The node `bank` holding three subjects, with a consortium of the
    /// lenders `lender` and `lender2` and the parties `bank` and `platform`.
    fn setup(budget: u64) -> Setup {
        setup_with(budget, false)
    }

    /// As [`setup`], with or without daily encodings.
    fn setup_with(budget: u64, daily: bool) -> Setup {
        let (lender, party, other) = (NodeKey::generate(), NodeKey::generate(), NodeKey::generate());
        let consortium = Consortium::from_toml(&format!(
            "name = \"c\"\n[[member]]\nname = \"lender\"\nrole = \"lender\"\npublic_key = \"{}\"\n[[member]]\nname = \
             \"bank\"\nrole = \"party\"\npublic_key = \"{}\"\n[[member]]\nname = \"platform\"\nrole = \
             \"party\"\npublic_key = \"{}\"\n[[member]]\nname = \"lender2\"\nrole = \"lender\"\npublic_key = \"{}\"\n",
            lender.public_hex(),
            party.public_hex(),
            NodeKey::generate().public_hex(),
            other.public_hex(),
        ))
        .expect("consortium");
        let store = Arc::new(RecordStore::in_memory().expect("store"));
        let rows: Vec<(String, serde_json::Value)> =
            ["s1", "s2", "s3"].iter().map(|s| (s.to_string(), json!({}))).collect();
        store.put_all(&rows).expect("subjects");
        let config = PartyConfig {
            psi_daily_budget: budget,
            psi_daily_encoding: daily,
            request_max_age_s: 60,
            ..PartyConfig::new("bank", "http://127.0.0.1:7100", "unused".into())
        };
        let mut sessions = PsiSessions::new(&config, store.clone());
        sessions.set_consortium(Arc::new(consortium));
        Setup { sessions, store, lender, party, other }
    }

    /// An alignment with `bank` signed by `key` as `requester`, `age_ms` ago.
    fn open(requester: &str, key: &NodeKey, age_ms: u64) -> OpenRequest {
        let statement = PsiOpenStatement {
            requester: requester.into(),
            purpose: "align".into(),
            party: "bank".into(),
            time_ms: now_ms() - age_ms,
            nonce: PsiOpenStatement::fresh_nonce(),
        };
        OpenRequest {
            requester: requester.into(),
            purpose: Purpose::Align,
            time_ms: statement.time_ms,
            nonce: statement.nonce.clone(),
            signature: statement.sign(key).to_vec(),
        }
    }

    /// `n` distinct items blinded by a requester that loaded `set`.
    fn blinded(set: &[[u8; POINT_BYTES]], n: usize) -> Vec<u8> {
        let mut requester = RequesterSession::new(&mut OsRng);
        requester.load_set(set).expect("set");
        let items: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
        points_to_bytes(&requester.blind(&items).expect("blind"))
    }

    /// Batch `number` of the session `opened` by `request`, signed by `key`
    /// (as the request's requester), or unsigned.
    async fn ask(
        s: &PsiSessions,
        request: &OpenRequest,
        opened: &Opened,
        number: u32,
        key: Option<&NodeKey>,
        points: &[u8],
    ) -> Result<Vec<u8>> {
        let signature = key
            .map(|k| PsiQueryStatement::new(&request.requester, &request.nonce, number, points).sign(k).to_vec())
            .unwrap_or_default();
        s.query(Batch { session_id: &opened.session_id, number, signature: &signature, points }).await
    }

    fn psi_log(store: &RecordStore) -> Vec<serde_json::Value> {
        let entries = store.log_entries(0).expect("log");
        assert_eq!(crate::log::verify_entries(&entries), Ok(entries.len()));
        entries.into_iter().filter(|e| e.kind == LogKind::Psi).map(|e| e.body).collect()
    }

    #[tokio::test]
    async fn only_a_lender_s_fresh_signed_open_opens_a_session_and_only_once() {
        let s = setup(100);
        let signed = open("lender", &s.lender, 0);
        let (opened, set) = s.sessions.open(&signed).await.expect("a lender's open");
        assert_eq!((opened.set_len, set.len()), (3, 3));
        // Replayed (by a coordinator that kept it): refused.
        let e = s.sessions.open(&signed).await.unwrap_err();
        assert!(matches!(e, PartyError::PsiReplayed { .. }) && e.to_string().contains("nonce was used before"), "{e}");
        // Stale, or from the future, beyond the 60 s window.
        let e = s.sessions.open(&open("lender", &s.lender, 61_000)).await.unwrap_err();
        assert!(matches!(e, PartyError::PsiReplayed { .. }) && e.to_string().contains("outside the 60 s"), "{e}");
        let mut future = open("lender", &s.lender, 0);
        future.time_ms += 120_000;
        let statement = PsiOpenStatement {
            requester: "lender".into(),
            purpose: "align".into(),
            party: "bank".into(),
            time_ms: future.time_ms,
            nonce: future.nonce.clone(),
        };
        future.signature = statement.sign(&s.lender).to_vec();
        assert!(matches!(s.sessions.open(&future).await.unwrap_err(), PartyError::PsiReplayed { .. }));
        // Unsigned, signed by a party's key under the lender's name, a
        // party aligning under its own name, a stranger: unauthenticated.
        let mut unsigned = open("lender", &s.lender, 0);
        unsigned.signature.clear();
        let mut otherwise = open("lender", &s.lender, 0);
        otherwise.time_ms -= 1;
        for (request, says) in [
            (unsigned, "did not sign"),
            (open("lender", &s.party, 0), "does not verify"),
            (open("bank", &s.party, 0), "is a party in the consortium, not a lender"),
            (open("stranger", &NodeKey::generate(), 0), "not a member"),
            (otherwise, "does not verify"),
        ] {
            let e = s.sessions.open(&request).await.unwrap_err();
            assert!(matches!(e, PartyError::PsiUnauthenticated { .. }), "{says}: {e}");
            assert!(e.to_string().contains(says), "{says}: {e}");
            assert_eq!(tonic::Status::from(e).code(), tonic::Code::Unauthenticated);
        }
        // An open signed for another party is not one for this party.
        let mut elsewhere = open("lender", &s.lender, 0);
        let statement = PsiOpenStatement {
            requester: "lender".into(),
            purpose: "align".into(),
            party: "platform".into(),
            time_ms: elsewhere.time_ms,
            nonce: elsewhere.nonce.clone(),
        };
        elsewhere.signature = statement.sign(&s.lender).to_vec();
        assert!(matches!(s.sessions.open(&elsewhere).await.unwrap_err(), PartyError::PsiUnauthenticated { .. }));
        // The log has the session and every refusal, with its reason.
        let log = psi_log(&s.store);
        assert_eq!(log.len(), 10, "{log:?}");
        assert_eq!((log[0]["event"].as_str(), log[0]["requester"].as_str()), (Some("open"), Some("lender")));
        assert_eq!((log[0]["purpose"].as_str(), log[0]["set_len"].as_u64()), (Some("align"), Some(3)));
        assert_eq!(log[0]["session"], opened.session_id.as_str());
        assert!(log[1..].iter().all(|b| b["event"] == "open refused"), "{log:?}");
        assert!(log[1]["reason"].as_str().expect("reason").contains("replayed"), "{log:?}");
    }

    #[tokio::test]
    async fn queries_count_against_the_requester_s_daily_budget() {
        let s = setup(10);
        let l = Some(&s.lender);
        let first_open = open("lender", &s.lender, 0);
        let (first, set) = s.sessions.open(&first_open).await.expect("open");
        let answer = ask(&s.sessions, &first_open, &first, 0, l, &blinded(&set, 8)).await.expect("8 of 10");
        assert_eq!(answer.len(), 8 * POINT_BYTES);
        // A second session of the same requester shares the budget: 8 more
        // would pass it, so the batch is refused whole and nothing counted.
        let second_open = open("lender", &s.lender, 0);
        let (second, set) = s.sessions.open(&second_open).await.expect("open");
        let e = ask(&s.sessions, &second_open, &second, 0, l, &blinded(&set, 8)).await.unwrap_err();
        assert!(matches!(e, PartyError::PsiBudget { asked: 8, used: 8, budget: 10, .. }), "{e}");
        assert!(e.to_string().contains("`psi_daily_budget`"), "{e}");
        assert_eq!(tonic::Status::from(e).code(), tonic::Code::PermissionDenied);
        // A bad batch costs nothing either; what is left is still answered.
        // A refused batch leaves its number to be used again.
        let e = ask(&s.sessions, &second_open, &second, 0, l, &[0u8; 32]).await.unwrap_err();
        assert!(matches!(e, PartyError::Psi(_)), "{e}");
        ask(&s.sessions, &second_open, &second, 0, l, &blinded(&set, 2)).await.expect("the last 2");
        let e = ask(&s.sessions, &first_open, &first, 1, l, &blinded(&set, 1)).await.unwrap_err();
        assert!(matches!(e, PartyError::PsiBudget { used: 10, .. }), "{e}");
        let today = utc_day(now_ms());
        assert_eq!(s.store.psi_budget_used("lender", today).expect("used"), 10);
        // Every query, answered or refused, is in the log.
        let log = psi_log(&s.store);
        let events: Vec<&str> = log.iter().map(|b| b["event"].as_str().expect("event")).collect();
        assert_eq!(events, ["open", "query", "open", "query refused", "query refused", "query", "query refused"]);
        assert_eq!(
            (log[1]["points"].as_u64(), log[1]["used"].as_u64(), log[1]["left"].as_u64()),
            (Some(8), Some(8), Some(2))
        );
        assert_eq!((log[5]["used"].as_u64(), log[5]["left"].as_u64()), (Some(10), Some(0)));
        assert_eq!(log[1]["day"], date(today));
        assert!(log[3]["reason"].as_str().expect("reason").contains("PSI budget is 10"), "{log:?}");
    }

    #[tokio::test]
    async fn without_a_consortium_the_requester_is_taken_as_named() {
        let store = Arc::new(RecordStore::in_memory().expect("store"));
        let config = PartyConfig::new("bank", "http://127.0.0.1:7100", "unused".into());
        let sessions = PsiSessions::new(&config, store.clone());
        let request = OpenRequest {
            requester: "l".into(),
            purpose: Purpose::Align,
            time_ms: 0,
            nonce: String::new(),
            signature: vec![],
        };
        let (opened, set) = sessions.open(&request).await.expect("a development node trusts its coordinator");
        sessions.open(&request).await.expect("and checks no nonce");
        assert_eq!(psi_log(&store)[0]["signed"], false);
        // Unsigned batches are answered, but only in order.
        let points = blinded(&set, 2);
        ask(&sessions, &request, &opened, 0, None, &points).await.expect("batch 0, unsigned");
        for number in [0, 2] {
            let e = ask(&sessions, &request, &opened, number, None, &points).await.unwrap_err();
            assert!(matches!(e, PartyError::PsiReplayed { .. }), "{number}: {e}");
            assert_eq!(tonic::Status::from(e).code(), tonic::Code::PermissionDenied);
        }
        ask(&sessions, &request, &opened, 1, None, &points).await.expect("batch 1, unsigned");
    }

    #[tokio::test]
    async fn only_the_requester_s_own_batches_in_order_are_answered() {
        let s = setup(100);
        let request = open("lender", &s.lender, 0);
        let (opened, set) = s.sessions.open(&request).await.expect("open");
        let points = blinded(&set, 3);
        let l = Some(&s.lender);
        // Another session of the same lender: its nonce differs.
        let other_open = open("lender", &s.lender, 0);
        let (other, _) = s.sessions.open(&other_open).await.expect("open");
        let sign = |nonce: &str, number: u32, points: &[u8], key: &NodeKey| {
            PsiQueryStatement::new("lender", nonce, number, points).sign(key).to_vec()
        };
        let by_the_party = sign(&request.nonce, 0, &points, &s.party);
        let for_other_points = sign(&request.nonce, 0, &blinded(&set, 3), &s.lender);
        let for_another_session = sign(&other_open.nonce, 0, &points, &s.lender);
        let for_another_number = sign(&request.nonce, 1, &points, &s.lender);
        for (signature, says) in [
            (Vec::new(), "did not sign"),
            (by_the_party, "does not verify"),
            (for_other_points, "does not verify"),
            (for_another_session, "does not verify"),
            (for_another_number, "does not verify"),
        ] {
            let batch = Batch { session_id: &opened.session_id, number: 0, signature: &signature, points: &points };
            let e = s.sessions.query(batch).await.unwrap_err();
            assert!(matches!(e, PartyError::PsiUnauthenticated { .. }), "{says}: {e}");
            assert!(e.to_string().contains(says) && e.to_string().contains("query batch 0"), "{says}: {e}");
            assert_eq!(tonic::Status::from(e).code(), tonic::Code::Unauthenticated);
        }
        // Batch 1 signed as such, but batch 0 not yet answered: skipped.
        let e = ask(&s.sessions, &request, &opened, 1, l, &points).await.unwrap_err();
        assert!(matches!(e, PartyError::PsiReplayed { .. }) && e.to_string().contains("skipped"), "{e}");
        assert_eq!(tonic::Status::from(e).code(), tonic::Code::PermissionDenied);
        // Nothing of it answered or counted.
        let today = utc_day(now_ms());
        assert_eq!(s.store.psi_budget_used("lender", today).expect("used"), 0);
        ask(&s.sessions, &request, &opened, 0, l, &points).await.expect("batch 0");
        // Replayed (the very batch, signature and all): refused, not counted.
        let e = ask(&s.sessions, &request, &opened, 0, l, &points).await.unwrap_err();
        assert!(matches!(e, PartyError::PsiReplayed { .. }) && e.to_string().contains("replayed"), "{e}");
        assert_eq!(tonic::Status::from(e).code(), tonic::Code::PermissionDenied);
        // The other session counts its own batches from 0.
        ask(&s.sessions, &other_open, &other, 0, l, &points).await.expect("the other session's batch 0");
        ask(&s.sessions, &request, &opened, 1, l, &points).await.expect("batch 1");
        assert_eq!(s.store.psi_budget_used("lender", today).expect("used"), 9);
        let log = psi_log(&s.store);
        let events: Vec<&str> = log.iter().map(|b| b["event"].as_str().expect("event")).collect();
        assert_eq!(events[2..8], ["query refused"; 6], "{log:?}");
        assert_eq!(events[8..], ["query", "query refused", "query", "query"], "{log:?}");
        assert!(log[2]["reason"].as_str().expect("reason").contains("did not sign"), "{log:?}");
        assert_eq!((log[2]["batch"].as_u64(), log[2]["session"].as_str()), (Some(0), Some(&*opened.session_id)));
    }

    /// A requester's side of an alignment: loads the session's encoded set,
    /// asks batch `number` about `items` and returns, per item, whether
    /// `bank` holds it.
    async fn align(
        s: &PsiSessions,
        request: &OpenRequest,
        opened: &Opened,
        set: &[[u8; POINT_BYTES]],
        number: u32,
        key: &NodeKey,
        items: &[&str],
    ) -> Result<Vec<u32>> {
        let mut requester = RequesterSession::new(&mut OsRng);
        requester.load_set(set).expect("set");
        let points = points_to_bytes(&requester.blind(items).expect("blind"));
        let answer = ask(s, request, opened, number, Some(key), &points).await?;
        let answer = points_from_bytes(&answer, "answer", items.len()).expect("answer");
        Ok(requester.count(items.len(), 1, &answer).expect("count"))
    }

    fn tomorrow() -> u64 {
        now_ms() + DAY_MS
    }

    #[tokio::test]
    async fn a_daily_encoding_is_made_once_per_requester_day_and_subject_list() {
        let s = setup_with(100, true);
        let first = open("lender", &s.lender, 0);
        let (opened, set) = s.sessions.open(&first).await.expect("open");
        let again = open("lender", &s.lender, 0);
        let (opened_again, set_again) = s.sessions.open(&again).await.expect("open again");
        // The same encoding, not made again; each session its own id and
        // batch numbers, and both answer under the one key.
        assert_eq!(set, set_again);
        assert_ne!(opened.session_id, opened_again.session_id);
        assert!(opened.expires_in_ms <= 600_000);
        let l = &s.lender;
        assert_eq!(align(&s.sessions, &first, &opened, &set, 0, l, &["s1", "s9"]).await.expect("first"), [1, 0]);
        assert_eq!(align(&s.sessions, &again, &opened_again, &set, 0, l, &["s3"]).await.expect("second"), [1]);
        // Another requester: a key of its own, so nothing in common.
        let other = open("lender2", &s.other, 0);
        let (opened_other, set_other) = s.sessions.open(&other).await.expect("lender2");
        assert!(set_other.iter().all(|p| !set.contains(p)));
        let o = &s.other;
        assert_eq!(align(&s.sessions, &other, &opened_other, &set_other, 0, o, &["s2"]).await.expect("lender2"), [1]);
        // Another subject list: encoded afresh, under a fresh key.
        s.store.put_all(&[("s4".to_string(), json!({}))]).expect("a new subject");
        let changed = open("lender", &s.lender, 0);
        let (opened_changed, set_changed) = s.sessions.open(&changed).await.expect("open");
        assert_eq!(set_changed.len(), 4);
        assert!(set_changed.iter().all(|p| !set.contains(p)));
        let found = align(&s.sessions, &changed, &opened_changed, &set_changed, 0, l, &["s4", "s1"]).await;
        assert_eq!(found.expect("changed"), [1, 1]);
        // Every answered id counts against each requester's budget.
        let today = utc_day(now_ms());
        assert_eq!(s.store.psi_budget_used("lender", today).expect("used"), 5);
        assert_eq!(s.store.psi_budget_used("lender2", today).expect("used"), 1);
        let log = psi_log(&s.store);
        let encodings: Vec<&str> =
            log.iter().filter(|b| b["event"] == "open").map(|b| b["encoding"].as_str().expect("encoding")).collect();
        let day = date(today);
        assert_eq!(
            encodings,
            [
                format!("daily {day}, new"),
                format!("daily {day}, reused"),
                format!("daily {day}, new"),
                format!("daily {day}, new")
            ]
        );
    }

    #[tokio::test]
    async fn a_daily_session_answers_only_its_requester_its_day_and_within_bounds() {
        let mut s = setup_with(8, true);
        let request = open("lender", &s.lender, 0);
        let (opened, set) = s.sessions.open(&request).await.expect("open");
        let l = Some(&s.lender);
        let today = utc_day(now_ms());
        let used = || s.store.psi_budget_used("lender", today).expect("used");
        // Another requester's signature on this session's batch.
        let points = blinded(&set, 2);
        let forged = PsiQueryStatement::new("lender2", &request.nonce, 0, &points).sign(&s.other).to_vec();
        let batch = Batch { session_id: &opened.session_id, number: 0, signature: &forged, points: &points };
        let e = s.sessions.query(batch).await.unwrap_err();
        assert!(matches!(e, PartyError::PsiUnauthenticated { .. }), "{e}");
        // Oversized, malformed, over the budget: refused, nothing counted.
        let oversized = vec![0u8; (MAX_BATCH + 1) * POINT_BYTES];
        let e = ask(&s.sessions, &request, &opened, 0, l, &oversized).await.unwrap_err();
        assert!(matches!(e, PartyError::Psi(jointscore_psi::Error::TooLarge { .. })), "{e}");
        let e = ask(&s.sessions, &request, &opened, 0, l, &points[..40]).await.unwrap_err();
        assert!(e.to_string().contains("not a multiple of 32"), "{e}");
        let mut malformed = points.clone();
        malformed[POINT_BYTES..].fill(0xff);
        let e = ask(&s.sessions, &request, &opened, 0, l, &malformed).await.unwrap_err();
        assert!(matches!(e, PartyError::Psi(jointscore_psi::Error::InvalidPoint { index: 1, .. })), "{e}");
        let e = ask(&s.sessions, &request, &opened, 0, l, &blinded(&set, 9)).await.unwrap_err();
        assert!(matches!(e, PartyError::PsiBudget { asked: 9, used: 0, budget: 8, .. }), "{e}");
        assert_eq!(used(), 0);
        // Reopening the cached encoding gives no more: the budget is the
        // requester's for the day, whichever session asks.
        ask(&s.sessions, &request, &opened, 0, l, &blinded(&set, 6)).await.expect("6 of 8");
        let again = open("lender", &s.lender, 0);
        let (opened_again, set_again) = s.sessions.open(&again).await.expect("reopen");
        assert_eq!(set, set_again);
        let e = ask(&s.sessions, &again, &opened_again, 0, l, &blinded(&set, 3)).await.unwrap_err();
        assert!(matches!(e, PartyError::PsiBudget { asked: 3, used: 6, .. }), "{e}");
        assert_eq!(used(), 6);
        // After its day the session answers nothing, and is dropped; the
        // next day's open is a fresh encoding under a fresh key.
        s.sessions.clock = tomorrow;
        let e = ask(&s.sessions, &again, &opened_again, 0, l, &blinded(&set, 1)).await.unwrap_err();
        assert!(matches!(e, PartyError::PsiStaleDay { .. }) && e.to_string().contains("has ended"), "{e}");
        assert_eq!(tonic::Status::from(e).code(), tonic::Code::FailedPrecondition);
        let e = ask(&s.sessions, &again, &opened_again, 0, l, &blinded(&set, 1)).await.unwrap_err();
        assert!(matches!(e, PartyError::UnknownSession { .. }), "{e}");
        assert_eq!(used(), 6);
        assert_eq!(s.store.psi_budget_used("lender", today + 1).expect("used"), 0);
        let next = open("lender", &s.lender, 0);
        // Signed now, opened "tomorrow": outside the window. Signed for it:
        let next = OpenRequest { time_ms: tomorrow(), ..next };
        let statement = PsiOpenStatement {
            requester: "lender".into(),
            purpose: "align".into(),
            party: "bank".into(),
            time_ms: next.time_ms,
            nonce: next.nonce.clone(),
        };
        let next = OpenRequest { signature: statement.sign(&s.lender).to_vec(), ..next };
        let (_, set_next) = s.sessions.open(&next).await.expect("the next day");
        assert!(set_next.iter().all(|p| !set.contains(p)));
    }
}
