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

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jointscore_proto::v1::party_client::PartyClient;
use jointscore_proto::v1::{PsiOpenRequest, PsiPurpose, PsiQueryRequest, PsiSession};
use jointscore_proto::{MAX_MESSAGE_SIZE, collect_psi_open};
use jointscore_psi::{MAX_BATCH, MAX_ITEMS, POINT_BYTES, interleave, merge_sets, points_from_bytes};
use rand_core::{OsRng, RngCore};
use tokio::task::JoinSet;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::engine::{Engine, bounded, failed};
use crate::error::{CoordinatorError, Result};

/// Sessions the coordinator relays at once.
const MAX_SESSIONS: usize = 64;
/// Longest requester or party name accepted.
const NAME_MAX: usize = 128;

/// One responder of a relayed session.
struct Responder {
    name: String,
    address: String,
    channel: Channel,
    session_id: String,
}

struct Session {
    responders: Vec<Responder>,
    expires: Instant,
}

/// The PSI sessions the coordinator relays, in memory only: a restart
/// ends them all, and the requester opens a new one.
#[derive(Default)]
pub(crate) struct PsiRelay {
    sessions: Mutex<HashMap<String, std::sync::Arc<Session>>>,
}

impl PsiRelay {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<String, std::sync::Arc<Session>>>> {
        self.sessions
            .lock()
            .map_err(|_| CoordinatorError::Store("PSI session lock poisoned by an earlier panic".into()))
    }

    /// Opens a session at every responder the request calls for and
    /// returns the merged header and encoded set (as wire bytes).
    pub(crate) async fn open(&self, engine: &Engine, request: &PsiOpenRequest) -> Result<(PsiSession, Vec<u8>)> {
        let requester = name("requester", &request.requester)?;
        let purpose = PsiPurpose::try_from(request.purpose).unwrap_or(PsiPurpose::Unspecified);
        let names: Vec<String> = match purpose {
            PsiPurpose::Align => vec![name("party", &request.party)?.to_string()],
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
                others
            }
            PsiPurpose::Unspecified => {
                return Err(CoordinatorError::Invalid(format!("unknown PSI purpose {}", request.purpose)));
            }
        };
        {
            let mut sessions = self.lock()?;
            let now = Instant::now();
            sessions.retain(|_, s| s.expires > now);
            if sessions.len() >= MAX_SESSIONS {
                return Err(busy());
            }
        }
        let deadline = engine.config.party_deadline();
        let mut responders = Vec::with_capacity(names.len());
        for party in &names {
            let address = engine.store.party_address(party)?.ok_or_else(|| {
                failed(Code::Unavailable, format!("party `{party}` is not registered with the coordinator"))
            })?;
            let channel = engine.party_channel(&address, deadline).map_err(|e| {
                failed(Code::Unavailable, format!("party `{party}` has an unusable address {address}: {e}"))
            })?;
            responders.push((party.clone(), address, channel));
        }
        let started = Instant::now();
        let mut tasks = JoinSet::new();
        for (index, (party, address, channel)) in responders.iter().cloned().enumerate() {
            let request =
                PsiOpenRequest { purpose: request.purpose, requester: requester.into(), party: party.clone() };
            tasks.spawn(async move {
                let call = async {
                    let mut client = PartyClient::new(channel).max_decoding_message_size(MAX_MESSAGE_SIZE);
                    let stream = client.psi_open(request).await?.into_inner();
                    collect_psi_open(stream, MAX_ITEMS as u64).await
                };
                let got = match tokio::time::timeout(deadline, call).await {
                    Ok(got) => got.map_err(|s| party_failure(&party, &address, &s)),
                    Err(_) => Err(late(&party, deadline)),
                };
                (index, got)
            });
        }
        let mut opened: Vec<Option<(PsiSession, Vec<u8>)>> = responders.iter().map(|_| None).collect();
        let mut errors = Vec::new();
        while let Some(done) = tasks.join_next().await {
            let (index, got) = done.map_err(|e| CoordinatorError::Transport(format!("PSI task failed: {e}")))?;
            match got {
                Ok(o) => opened[index] = Some(o),
                Err(e) => {
                    engine.forget_channel(&responders[index].1);
                    errors.push(e);
                }
            }
        }
        // A partial answer would read as "not financed" where a lender that
        // did not answer had financed: fail the whole session instead.
        first_of(errors)?;
        let mut sets = Vec::with_capacity(opened.len());
        let mut session = Session { responders: Vec::new(), expires: Instant::now() + Duration::from_secs(3600) };
        for ((party, address, channel), got) in responders.into_iter().zip(opened) {
            let (header, set) = got.ok_or_else(|| CoordinatorError::Transport("a PSI open went missing".into()))?;
            if header.per_item != 1 {
                return Err(failed(Code::Unavailable, format!("party `{party}` answered as a relay, not a responder")));
            }
            let set = points_from_bytes(&set, "responder set", MAX_ITEMS)
                .map_err(|e| failed(Code::Unavailable, format!("party `{party}`: {e}")))?;
            let lifetime = Duration::from_millis(header.expires_in_ms).saturating_sub(started.elapsed());
            session.expires = session.expires.min(started + lifetime);
            session.responders.push(Responder { name: party, address, channel, session_id: header.session_id });
            sets.push(set);
        }
        let union = merge_sets(sets, &mut OsRng)?;
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        let session_id = hex::encode(id);
        let header = PsiSession {
            session_id: session_id.clone(),
            set_len: union.len() as u64,
            per_item: u32::try_from(session.responders.len()).unwrap_or(u32::MAX),
            expires_in_ms: u64::try_from(session.expires.saturating_duration_since(Instant::now()).as_millis())
                .unwrap_or(u64::MAX),
        };
        let mut sessions = self.lock()?;
        if sessions.len() >= MAX_SESSIONS {
            return Err(busy());
        }
        sessions.insert(session_id, std::sync::Arc::new(session));
        tracing::info!(purpose = purpose.as_str_name(), %requester, responders = names.len(), set = union.len(),
            "PSI session opened");
        Ok((header, jointscore_psi::points_to_bytes(&union)))
    }

    /// Forwards one batch to every responder and returns their answers
    /// item-major, each item's answers shuffled (as wire bytes). A refused
    /// batch leaves the session as it was.
    pub(crate) async fn query(&self, engine: &Engine, request: &PsiQueryRequest) -> Result<Vec<u8>> {
        let points = points_from_bytes(&request.points, "query batch", MAX_BATCH)?;
        let id = &request.session_id;
        let shown = bounded(&id.chars().take(64).collect::<String>());
        let session = {
            let mut sessions = self.lock()?;
            let session = sessions.get(id).cloned().ok_or_else(|| CoordinatorError::UnknownSession(shown.clone()))?;
            if session.expires <= Instant::now() {
                sessions.remove(id);
                return Err(CoordinatorError::SessionExpired(shown));
            }
            session
        };
        let deadline = engine.config.party_deadline();
        let mut tasks = JoinSet::new();
        for (index, responder) in session.responders.iter().enumerate() {
            let request = PsiQueryRequest { session_id: responder.session_id.clone(), points: request.points.clone() };
            let (party, address, channel) =
                (responder.name.clone(), responder.address.clone(), responder.channel.clone());
            tasks.spawn(async move {
                let call = async {
                    let mut client = PartyClient::new(channel).max_decoding_message_size(MAX_MESSAGE_SIZE);
                    Ok::<_, Status>(client.psi_query(request).await?.into_inner().points)
                };
                let got = match tokio::time::timeout(deadline, call).await {
                    Ok(got) => got.map_err(|s| party_failure(&party, &address, &s)),
                    Err(_) => Err(late(&party, deadline)),
                };
                (index, got)
            });
        }
        let mut answers: Vec<Vec<[u8; POINT_BYTES]>> = vec![Vec::new(); session.responders.len()];
        let mut errors = Vec::new();
        while let Some(done) = tasks.join_next().await {
            let (index, got) = done.map_err(|e| CoordinatorError::Transport(format!("PSI task failed: {e}")))?;
            let party = &session.responders[index].name;
            match got.and_then(|bytes| {
                points_from_bytes(&bytes, "responder answer", MAX_BATCH)
                    .map_err(|e| failed(Code::Unavailable, format!("party `{party}`: {e}")))
            }) {
                Ok(a) if a.len() == points.len() => answers[index] = a,
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
            self.lock()?.remove(id);
        }
        first_of(errors)?;
        if points.is_empty() {
            return Ok(Vec::new());
        }
        Ok(jointscore_psi::points_to_bytes(&interleave(&answers, &mut OsRng)?))
    }
}

fn name<'a>(what: &str, value: &'a str) -> Result<&'a str> {
    if value.is_empty() || value.len() > NAME_MAX || value.chars().any(char::is_control) {
        return Err(CoordinatorError::Invalid(format!("`{what}` must have 1 to {NAME_MAX} printable bytes")));
    }
    Ok(value)
}

/// A responder's failure as the requester sees it. Bad input the party
/// refused passes through as INVALID_ARGUMENT; a lost session as
/// FAILED_PRECONDITION; anything else is the party being unavailable.
fn party_failure(party: &str, address: &str, s: &Status) -> CoordinatorError {
    let message = bounded(s.message());
    match s.code() {
        Code::InvalidArgument => failed(Code::InvalidArgument, format!("party `{party}`: {message}")),
        Code::NotFound | Code::FailedPrecondition => {
            failed(Code::FailedPrecondition, format!("party `{party}`: {message}"))
        }
        Code::PermissionDenied => failed(Code::PermissionDenied, format!("party `{party}`: {message}")),
        Code::ResourceExhausted => failed(Code::ResourceExhausted, format!("party `{party}`: {message}")),
        Code::Unavailable => {
            failed(Code::Unavailable, format!("party `{party}` is unreachable at {address}: {message}"))
        }
        other => failed(Code::Unavailable, format!("party `{party}` failed ({other:?}): {message}")),
    }
}

fn busy() -> CoordinatorError {
    failed(
        Code::ResourceExhausted,
        format!("{MAX_SESSIONS} PSI sessions are open, the most this coordinator relays; retry later"),
    )
}

fn late(party: &str, deadline: Duration) -> CoordinatorError {
    failed(Code::DeadlineExceeded, format!("party `{party}` did not answer within {} ms", deadline.as_millis()))
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
