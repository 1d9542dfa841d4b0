//! PSI sessions relayed to party nodes: alignment (a lender and one party)
//! and duplicate-financing checks (a consortium lender and every other
//! lender's registry).
//!
//! The coordinator opens a session at each responder, merges their encoded
//! sets into one shuffled union, and for each query batch forwards the
//! blinded points to every responder and returns their answers item-major,
//! each item's answers in a fresh random order (`jointscore_psi::relay`).
//! It sees only blinded points and exponentiated hashes, which reveal
//! nothing of the items under DDH, and it holds no PSI key. It must not
//! collude with the requester: it knows which responder sent which point.
//!
//! With a consortium file it relays alignments only for current lender
//! members, a first line only: the requester's signed open
//! (`jointscore_identity::PsiOpenStatement`) is forwarded unchanged, and
//! each party checks it for itself, with its own budget per requester; so
//! are each batch's number and signature
//! (`jointscore_identity::PsiQueryStatement`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jointscore_identity::Role;

use jointscore_proto::v1::party_client::PartyClient;
use jointscore_proto::v1::{PsiCloseRequest, PsiOpenRequest, PsiPurpose, PsiQueryRequest, PsiSession};
use jointscore_proto::{MESSAGE_LIMIT, collect_psi_open};
use jointscore_psi::{MAX_BATCH, MAX_ITEMS, POINT_BYTES, interleave, merge_sets, points_from_bytes};
use rand_core::{OsRng, RngCore};
use tokio::task::JoinSet;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::engine::{Engine, bounded, failed};
use crate::error::{CoordinatorError, Result};

/// Sessions the coordinator relays at once, opens in progress included.
const MAX_SESSIONS: usize = 64;
/// Longest requester or party name accepted.
const NAME_LIMIT: usize = 128;
/// How long closing a session at a responder may take; closing is best
/// effort (the responder's key expires anyway).
const CLOSE_DEADLINE: Duration = Duration::from_secs(5);

/// One responder of a relayed session.
#[derive(Clone)]
struct Responder {
    name: String,
    address: String,
    channel: Channel,
    /// The responder's own session id, once opened.
    session_id: String,
}

struct Session {
    responders: Vec<Responder>,
    expires: Instant,
    /// Who opened it: under mutual TLS only that member may use it.
    requester: String,
}

#[derive(Default)]
struct State {
    sessions: HashMap<String, Arc<Session>>,
    opening: usize,
}

/// The PSI sessions the coordinator relays, in memory only: a restart
/// ends them all, and the requester opens a new one.
#[derive(Default)]
pub(crate) struct PsiRelay {
    state: Mutex<State>,
}

/// A place reserved for an open in progress; given back on drop.
struct Opening<'a>(&'a PsiRelay);

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        if let Ok(mut state) = self.0.state.lock() {
            state.opening = state.opening.saturating_sub(1);
        }
    }
}

impl PsiRelay {
    fn lock(&self) -> Result<MutexGuard<'_, State>> {
        self.state.lock().map_err(|_| CoordinatorError::Store("PSI session lock poisoned by an earlier panic".into()))
    }

    /// Reserves a place for one more session, forgetting expired ones.
    fn reserve(&self) -> Result<Opening<'_>> {
        let mut state = self.lock()?;
        let now = Instant::now();
        state.sessions.retain(|_, s| s.expires > now);
        if state.sessions.len() + state.opening >= MAX_SESSIONS {
            return Err(failed(
                Code::ResourceExhausted,
                format!("{MAX_SESSIONS} PSI sessions are open, the most this coordinator relays; retry later"),
            ));
        }
        state.opening += 1;
        Ok(Opening(self))
    }

    /// The parties a request is answered by.
    fn responders(engine: &Engine, request: &PsiOpenRequest, requester: &str) -> Result<Vec<String>> {
        match PsiPurpose::try_from(request.purpose).unwrap_or(PsiPurpose::Unspecified) {
            PsiPurpose::Align => {
                let party = name("party", &request.party)?.to_string();
                if let Some(consortium) = &engine.consortium {
                    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
                    consortium
                        .require(requester, Role::Lender, now)
                        .map_err(|e| CoordinatorError::Denied(format!("only current lenders align: {e}")))?;
                }
                Ok(vec![party])
            }
            PsiPurpose::Assets => {
                if !request.party.is_empty() {
                    return Err(CoordinatorError::Invalid(
                        "a duplicate-financing check asks every other lender; leave `party` empty".into(),
                    ));
                }
                let lenders = &engine.config.lenders;
                if !lenders.iter().any(|l| l == requester) {
                    return Err(CoordinatorError::Denied(format!(
                        "`{requester}` is not a consortium lender (the coordinator's `lenders`); only lenders check \
                         assets"
                    )));
                }
                let others: Vec<String> = lenders.iter().filter(|l| *l != requester).cloned().collect();
                if others.is_empty() {
                    return Err(CoordinatorError::Precondition(
                        "the consortium has no other lender to check against".into(),
                    ));
                }
                Ok(others)
            }
            PsiPurpose::Unspecified => {
                Err(CoordinatorError::Invalid(format!("unknown PSI purpose {}", request.purpose)))
            }
        }
    }

    /// Opens a session at every responder the request calls for and
    /// returns the merged header and encoded set (as wire bytes). If any
    /// responder fails, the sessions the others opened are closed and the
    /// whole open fails: a partial answer would read "not held" where the
    /// missing responder held the item.
    pub(crate) async fn open(&self, engine: &Engine, request: &PsiOpenRequest) -> Result<(PsiSession, Vec<u8>)> {
        let requester = name("requester", &request.requester)?;
        let names = PsiRelay::responders(engine, request, requester)?;
        let opening = self.reserve()?;
        let deadline = engine.config.party_deadline();
        let mut responders = Vec::with_capacity(names.len());
        for party in names {
            let address = engine.store.party_address(&party)?.ok_or_else(|| {
                failed(Code::Unavailable, format!("party `{party}` is not registered with the coordinator"))
            })?;
            let channel = engine.party_channel(&party, &address, deadline).map_err(|e| {
                failed(Code::Unavailable, format!("party `{party}` has an unusable address {address}: {e}"))
            })?;
            responders.push(Responder { name: party, address, channel, session_id: String::new() });
        }
        let started = Instant::now();
        let open_deadline = engine.config.psi_open_deadline();
        // The requester's signed statement travels unchanged; only `party`
        // names each responder.
        let asked = PsiOpenRequest { requester: requester.into(), party: String::new(), ..request.clone() };
        let results = fan_out(engine, &responders, open_deadline, |mut client, r| {
            let request = PsiOpenRequest { party: r.name.clone(), ..asked.clone() };
            async move { collect_psi_open(client.psi_open(request).await?.into_inner(), MAX_ITEMS as u64).await }
        })
        .await?;
        let mut errors = Vec::new();
        let mut sets = Vec::with_capacity(results.len());
        let mut expires = started + open_deadline.max(Duration::from_secs(3600));
        for (responder, got) in responders.iter_mut().zip(results) {
            let party = &responder.name;
            let checked = got.and_then(|(header, set)| {
                responder.session_id = header.session_id.clone();
                if header.per_item != 1 {
                    return Err(failed(Code::Unavailable, format!("party `{party}` answered as a relay")));
                }
                let set = points_from_bytes(&set, "responder set", MAX_ITEMS)
                    .map_err(|e| failed(Code::Unavailable, format!("party `{party}`: {e}")))?;
                // Its lifetime runs from when it opened, at the latest now.
                expires = expires.min(started + Duration::from_millis(header.expires_in_ms));
                Ok(set)
            });
            match checked {
                Ok(set) => sets.push(set),
                Err(e) => errors.push(e),
            }
        }
        let union = match first_of(errors).and_then(|()| Ok(merge_sets(sets, &mut OsRng)?)) {
            Ok(union) => union,
            Err(e) => {
                close_at(engine, &responders).await;
                return Err(e);
            }
        };
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        let session_id = hex::encode(id);
        let header = PsiSession {
            session_id: session_id.clone(),
            set_len: union.len() as u64,
            per_item: u32::try_from(responders.len()).unwrap_or(u32::MAX),
            expires_in_ms: u64::try_from(expires.saturating_duration_since(Instant::now()).as_millis())
                .unwrap_or(u64::MAX),
        };
        let count = responders.len();
        if let Some(ledger) = &engine.ledger {
            let purpose = PsiPurpose::try_from(request.purpose).unwrap_or(PsiPurpose::Unspecified);
            ledger.record(jointscore_audit::Event {
                kind: jointscore_audit::EntryKind::Psi,
                lender: Some(requester.to_string()),
                parties: responders.iter().map(|r| r.name.clone()).collect(),
                // Not the set size: for an alignment it is the party's
                // customer count.
                detail: purpose.as_str_name().to_string(),
                ..jointscore_audit::Event::default()
            });
        }
        self.lock()?
            .sessions
            .insert(session_id, Arc::new(Session { responders, expires, requester: requester.into() }));
        drop(opening);
        tracing::info!(%requester, responders = count, set = union.len(), "PSI session opened");
        Ok((header, jointscore_psi::points_to_bytes(&union)))
    }

    /// The session, or why it cannot be used. With a `caller` (an
    /// authenticated member), a session another member opened is unknown
    /// to it, so session ids cannot be probed across members.
    fn session(&self, id: &str, caller: Option<&str>) -> Result<Arc<Session>> {
        let shown = bounded(&id.chars().take(64).collect::<String>());
        let mut state = self.lock()?;
        let session = state
            .sessions
            .get(id)
            .filter(|s| caller.is_none_or(|c| c == s.requester))
            .cloned()
            .ok_or_else(|| CoordinatorError::UnknownSession(shown.clone()))?;
        if session.expires <= Instant::now() {
            state.sessions.remove(id);
            return Err(CoordinatorError::SessionExpired(shown));
        }
        Ok(session)
    }

    /// Forwards one batch to every responder and returns their answers
    /// item-major, each item's answers shuffled (as wire bytes). A refused
    /// batch leaves the session as it was.
    pub(crate) async fn query(
        &self,
        engine: &Engine,
        request: &PsiQueryRequest,
        caller: Option<&str>,
    ) -> Result<Vec<u8>> {
        let points = points_from_bytes(&request.points, "query batch", MAX_BATCH)?;
        let session = self.session(&request.session_id, caller)?;
        let results = fan_out(engine, &session.responders, engine.config.party_deadline(), |mut client, r| {
            // The batch number and the requester's signature travel
            // unchanged; only the session id is each responder's own.
            let request = PsiQueryRequest { session_id: r.session_id.clone(), ..request.clone() };
            async move { Ok(client.psi_query(request).await?.into_inner().points) }
        })
        .await?;
        let mut answers = Vec::with_capacity(results.len());
        let mut errors = Vec::new();
        for (responder, got) in session.responders.iter().zip(results) {
            let party = &responder.name;
            match got.and_then(|bytes| {
                points_from_bytes(&bytes, "responder answer", MAX_BATCH)
                    .map_err(|e| failed(Code::Unavailable, format!("party `{party}`: {e}")))
            }) {
                Ok(a) if a.len() == points.len() => answers.push(a),
                Ok(a) => errors.push(failed(
                    Code::Unavailable,
                    format!("party `{party}` answered {} points for {}", a.len(), points.len()),
                )),
                Err(e) => errors.push(e),
            }
        }
        if errors.iter().any(|e| e.code() == Code::FailedPrecondition) {
            // A responder lost its key (restart or expiry): the session
            // cannot be completed.
            self.close(engine, &request.session_id, caller).await?;
        }
        first_of(errors)?;
        if points.is_empty() {
            return Ok(Vec::new());
        }
        let answers: Vec<Vec<[u8; POINT_BYTES]>> = answers;
        Ok(jointscore_psi::points_to_bytes(&interleave(&answers, &mut OsRng)?))
    }

    /// Ends a session: forgets it and asks every responder to drop its key.
    /// Closing an unknown session is not an error; with a `caller`, only
    /// the member that opened a session closes it.
    pub(crate) async fn close(&self, engine: &Engine, id: &str, caller: Option<&str>) -> Result<()> {
        let session = {
            let mut state = self.lock()?;
            match state.sessions.get(id) {
                Some(s) if caller.is_none_or(|c| c == s.requester) => state.sessions.remove(id),
                _ => None,
            }
        };
        if let Some(session) = session {
            close_at(engine, &session.responders).await;
        }
        Ok(())
    }
}

/// Asks each responder that opened a session to drop its key, best
/// effort: a responder that cannot be reached drops it when it expires.
async fn close_at(engine: &Engine, responders: &[Responder]) {
    let opened: Vec<Responder> = responders.iter().filter(|r| !r.session_id.is_empty()).cloned().collect();
    let _ = fan_out(engine, &opened, CLOSE_DEADLINE, |mut client, r| {
        let request = PsiCloseRequest { session_id: r.session_id.clone() };
        async move { client.psi_close(request).await.map(|_| ()) }
    })
    .await;
}

/// Calls every responder at once, each under `deadline`; one result per
/// responder, in order, failures mapped to what the requester sees. A
/// failed connection is dropped from the cache.
async fn fan_out<T, F, Fut>(
    engine: &Engine,
    responders: &[Responder],
    deadline: Duration,
    call: F,
) -> Result<Vec<Result<T>>>
where
    T: Send + 'static,
    F: Fn(PartyClient<Channel>, &Responder) -> Fut,
    Fut: Future<Output = std::result::Result<T, Status>> + Send + 'static,
{
    let mut tasks = JoinSet::new();
    for (index, responder) in responders.iter().enumerate() {
        let client = PartyClient::new(responder.channel.clone()).max_decoding_message_size(MESSAGE_LIMIT);
        let future = call(client, responder);
        let (party, address) = (responder.name.clone(), responder.address.clone());
        tasks.spawn(async move {
            let got = match tokio::time::timeout(deadline, future).await {
                Ok(got) => got.map_err(|s| party_failure(&party, &address, &s)),
                Err(_) => Err(failed(
                    Code::DeadlineExceeded,
                    format!("party `{party}` did not answer within {} ms", deadline.as_millis()),
                )),
            };
            (index, got)
        });
    }
    let mut results: Vec<Option<Result<T>>> = responders.iter().map(|_| None).collect();
    while let Some(done) = tasks.join_next().await {
        let (index, got) = done.map_err(|e| CoordinatorError::Transport(format!("PSI task failed: {e}")))?;
        if got.as_ref().is_err_and(|e| matches!(e.code(), Code::Unavailable | Code::DeadlineExceeded)) {
            engine.forget_channel(&responders[index].name, &responders[index].address);
        }
        results[index] = Some(got);
    }
    results
        .into_iter()
        .map(|r| r.ok_or_else(|| CoordinatorError::Transport("a PSI call went missing".into())))
        .collect()
}

fn name<'a>(what: &str, value: &'a str) -> Result<&'a str> {
    if value.is_empty() || value.len() > NAME_LIMIT || value.chars().any(char::is_control) {
        return Err(CoordinatorError::Invalid(format!("`{what}` must have 1 to {NAME_LIMIT} printable bytes")));
    }
    Ok(value)
}

/// A responder's failure as the requester sees it. Bad input the party
/// refused passes through as INVALID_ARGUMENT; a lost session as
/// FAILED_PRECONDITION; a refusal of the requester (its signature, its
/// budget) with its code; anything else is the party being unavailable.
fn party_failure(party: &str, address: &str, s: &Status) -> CoordinatorError {
    let message = bounded(s.message());
    let code = match s.code() {
        Code::InvalidArgument => Code::InvalidArgument,
        Code::NotFound | Code::FailedPrecondition => Code::FailedPrecondition,
        Code::PermissionDenied => Code::PermissionDenied,
        Code::Unauthenticated => Code::Unauthenticated,
        Code::ResourceExhausted => Code::ResourceExhausted,
        Code::Unavailable => {
            return failed(Code::Unavailable, format!("party `{party}` is unreachable at {address}: {message}"));
        }
        other => return failed(Code::Unavailable, format!("party `{party}` failed ({other:?}): {message}")),
    };
    failed(code, format!("party `{party}`: {message}"))
}

/// Ok when there is no error; otherwise the first, naming the rest.
fn first_of(errors: Vec<CoordinatorError>) -> Result<()> {
    let mut errors = errors.into_iter();
    let Some(first) = errors.next() else { return Ok(()) };
    let rest: Vec<String> = errors.map(|e| e.to_string()).collect();
    if rest.is_empty() {
        return Err(first);
    }
    Err(failed(first.code(), format!("{first}; also: {}", rest.join("; "))))
}
