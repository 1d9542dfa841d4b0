//! The party's side of a fit session (`Party.Fit`): bin its own features
//! over the lender's training rows and sum the encrypted labels per bin,
//! then take part in the Gram round with the WoE columns of its selected
//! features. The session's state (assignments, the round's key) lives in
//! the stream only: a node that restarts or a stream that breaks ends it.
//!
//! The node answers only a spec its operator approved (`approved_fits`)
//! and, with a consortium file, only a current lender's signed request,
//! fresh and never seen before; it checks that every key of the Gram round
//! is signed by the member named for it (the lender last), so the
//! coordinator cannot take a participant's place. What leaves the node:
//! the bins' bounds (edges, category groups, its values' range), a row
//! count and an encrypted sum per bin, its masked columns sealed to each
//! peer, and its share of the Gram matrix sealed to the lender.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use jointscore_binning::gram::{Columns, Deal, Layout, Participant};
use jointscore_binning::{BinAssignment, CIPHERTEXT_BYTES, Ciphertext, PublicKey, party_sums};
use jointscore_identity::{Consortium, FitKey as SignedKey, FitRequest, NodeKey, Role};
use jointscore_learn::{FeatureKind, FeatureValues, FitSpec, MAX_ROWS, MIN_ROWS, party_bins, woe_column};
use jointscore_net::fit::{bins_to_wire, deal_from_wire, rows_sha256, sealed_from_wire, sealed_to_wire, sums_to_bytes};
use jointscore_proto::v1::fit_frame::Part;
use jointscore_proto::v1::{FitBinned, FitFrame, FitGram, FitKey, FitKeys, FitOpen};
use jointscore_proto::{fit_frames, next_fit};
use jointscore_secagg::SessionId;
use rand_core::OsRng;
use serde_json::Value;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use crate::error::{PartyError, Result};
use crate::store::RecordStore;

/// Most bytes one step of a session may carry.
const STEP_LIMIT: u64 = 1 << 30;
/// Fit ids remembered against replays.
const SEEN_LIMIT: usize = 100_000;

/// Where a node's fit sessions send their frames.
pub(crate) type Outbox = mpsc::Sender<std::result::Result<FitFrame, Status>>;

/// What every fit session of a node shares.
pub(crate) struct Fits {
    party: String,
    approved: HashSet<String>,
    store: Arc<RecordStore>,
    consortium: Option<Arc<Consortium>>,
    identity: Option<Arc<NodeKey>>,
    max_age_ms: u64,
    stall_gram: bool,
    seen: Mutex<HashSet<String>>,
}

/// One session after the binning step.
struct Session {
    fit_id: String,
    lender: String,
    rows: usize,
    features: Vec<String>,
    assignments: Vec<BinAssignment>,
}

fn fit(message: impl Into<String>) -> PartyError {
    PartyError::Fit(message.into())
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

async fn send(out: &Outbox, part: Part, data: &[u8]) -> Result<()> {
    for frame in fit_frames(part, data) {
        out.send(Ok(frame)).await.map_err(|_| fit("the coordinator left the session"))?;
    }
    Ok(())
}

async fn next(inbound: &mut Streaming<FitFrame>) -> Result<Option<(Part, Vec<u8>)>> {
    next_fit(inbound, STEP_LIMIT).await.map_err(|s| fit(format!("the coordinator's stream: {}", s.message())))
}

impl Fits {
    /// Fit sessions for party `party`, answering the specs in `approved`.
    pub(crate) fn new(
        party: &str,
        approved: &[String],
        store: Arc<RecordStore>,
        max_age_s: u64,
        stall_gram: bool,
    ) -> Fits {
        Fits {
            party: party.to_string(),
            approved: approved.iter().cloned().collect(),
            store,
            consortium: None,
            identity: None,
            max_age_ms: max_age_s.saturating_mul(1000),
            stall_gram,
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// Checks lenders' requests and round keys against `consortium`.
    pub(crate) fn set_consortium(&mut self, consortium: Arc<Consortium>) {
        self.consortium = Some(consortium);
    }

    /// Signs this node's round keys with `key`.
    pub(crate) fn set_identity(&mut self, key: Arc<NodeKey>) {
        self.identity = Some(key);
    }

    /// Runs one session to its end; a refusal goes to the coordinator as
    /// the stream's status.
    pub(crate) async fn serve(self: Arc<Self>, mut inbound: Streaming<FitFrame>, out: Outbox) {
        match self.session(&mut inbound, &out).await {
            Ok(()) => tracing::info!(party = %self.party, "fit session done"),
            Err(e) => {
                tracing::info!(party = %self.party, error = %e, "fit session refused or broken");
                let _ = out.send(Err(e.into())).await;
            }
        }
    }

    async fn session(&self, inbound: &mut Streaming<FitFrame>, out: &Outbox) -> Result<()> {
        let Some((Part::Open(open), data)) = next(inbound).await? else {
            return Err(fit("a session starts with `open`"));
        };
        let (session, binned, sums) = self.bin(&open, &data)?;
        tracing::info!(party = %self.party, fit = %session.fit_id, rows = session.rows, "fit: bins sent");
        send(out, Part::Binned(binned), &sums).await?;
        let gram = match next(inbound).await? {
            // Nothing of this party was selected: the session ends here.
            None | Some((Part::Done(_), _)) => return Ok(()),
            Some((Part::Gram(gram), _)) => gram,
            Some(_) => return Err(fit("expected `gram` after the bins")),
        };
        let (mut participant, deal, names) = self.join(&session, &gram)?;
        if self.stall_gram {
            tracing::warn!(party = %self.party, "fault injection: stalling the fit's Gram step");
            eprintln!("jointscore fault injection: party {} stalls the fit's gram step", self.party);
            std::future::pending::<()>().await;
        }
        let key = participant.public_key();
        let signature = self.identity.as_ref().map_or_else(Vec::new, |k| {
            SignedKey {
                fit_id: session.fit_id.clone(),
                session: hex::encode(&gram.session),
                participant: gram.participant,
                name: self.party.clone(),
                key: hex::encode(key),
            }
            .sign(k)
            .to_vec()
        });
        let own = FitKey { participant: gram.participant, name: self.party.clone(), key: key.to_vec(), signature };
        send(out, Part::Key(own), &[]).await?;

        let Some((Part::Keys(keys), _)) = next(inbound).await? else {
            return Err(fit("expected `keys` after this party's key"));
        };
        let keys = self.check_keys(&session, &gram, &names, &keys)?;
        participant.set_keys(&keys).map_err(|e| fit(e.to_string()))?;
        let masked = participant.masked(&deal).map_err(|e| fit(e.to_string()))?;
        let (header, bytes) = sealed_to_wire(&masked);
        send(out, Part::Masked(header), &bytes).await?;

        let Some((Part::Inbox(inbox), bytes)) = next(inbound).await? else {
            return Err(fit("expected `inbox` after the masked columns"));
        };
        let n = names.len() as u32;
        let inbox = sealed_from_wire(&inbox, &bytes, n).map_err(fit)?;
        let contribution = participant.contribution(&deal, &inbox, n - 1).map_err(|e| fit(e.to_string()))?;
        let (header, bytes) = sealed_to_wire(&[contribution]);
        send(out, Part::Contribution(header), &bytes).await?;
        match next(inbound).await? {
            None | Some((Part::Done(_), _)) => Ok(()),
            Some(_) => Err(fit("expected `done` after the contribution")),
        }
    }

    /// The open step: checks the request, reads the training rows' values
    /// and bins them; the bins and the encrypted sums to send.
    fn bin(&self, open: &FitOpen, data: &[u8]) -> Result<(Session, FitBinned, Vec<u8>)> {
        if open.party != self.party {
            return Err(fit(format!("the open is addressed to `{}`, not to this party", open.party)));
        }
        let spec = FitSpec::from_toml(&open.spec_toml).map_err(|e| fit(e.to_string()))?;
        if spec.id() != open.spec_id {
            return Err(fit(format!("spec id {} is not the spec sent, whose id is {}", open.spec_id, spec.id())));
        }
        if !self.approved.contains(&open.spec_id) {
            return Err(PartyError::FitNotApproved { party: self.party.clone(), spec_id: open.spec_id.clone() });
        }
        let rows = usize::try_from(open.rows).unwrap_or(usize::MAX);
        if !(MIN_ROWS..=MAX_ROWS).contains(&rows) {
            return Err(fit(format!("{rows} training rows; a fit takes {MIN_ROWS} to {MAX_ROWS}")));
        }
        let split = usize::try_from(open.subjects_len).map_err(|_| fit("subjects too long"))?;
        if split > data.len() || data.len() - split != rows * CIPHERTEXT_BYTES {
            return Err(fit(format!("{} bytes of labels for {rows} rows", data.len().saturating_sub(split))));
        }
        let (subjects, labels) = data.split_at(split);
        if rows_sha256(subjects, labels) != open.rows_sha256 {
            return Err(fit("the training rows do not match their digest"));
        }
        self.check_request(open)?;
        let subjects = std::str::from_utf8(subjects).map_err(|_| fit("subjects that are not UTF-8"))?;
        let subjects: Vec<&str> = subjects.split('\n').collect();
        if subjects.len() != rows {
            return Err(fit(format!("{} subjects for {rows} rows", subjects.len())));
        }
        let key: &[u8; 32] =
            open.label_key.as_slice().try_into().map_err(|_| fit("a label key that is not 32 bytes"))?;
        let public = PublicKey::from_bytes(key).map_err(|e| fit(e.to_string()))?;
        let cts = labels
            .chunks_exact(CIPHERTEXT_BYTES)
            .map(|c| {
                c.try_into()
                    .map_err(|_| fit("a label ciphertext"))
                    .and_then(|c| Ciphertext::from_bytes(c).map_err(|e| fit(e.to_string())))
            })
            .collect::<Result<Vec<_>>>()?;
        let own = spec
            .party(&self.party)
            .ok_or_else(|| fit(format!("the spec names no features of party `{}`", self.party)))?;

        let mut records = Vec::with_capacity(rows);
        let mut unknown = Vec::new();
        for subject in &subjects {
            match self.store.get(subject)? {
                Some(record) => records.push(record),
                None => unknown.push(*subject),
            }
        }
        if !unknown.is_empty() {
            let first: Vec<String> = unknown.iter().take(3).map(|s| format!("`{}`", s.escape_debug())).collect();
            return Err(PartyError::FitUnknownSubjects {
                party: self.party.clone(),
                count: unknown.len(),
                rows,
                first: first.join(", "),
            });
        }
        let data_error = |message: String| PartyError::FitData { party: self.party.clone(), message };
        let mut features = Vec::new();
        for f in &own.features {
            let mut wrong = 0usize;
            let values = match f.kind {
                FeatureKind::Numeric => {
                    let mut book = Vec::new();
                    self.store.scan(|r| {
                        book.extend(r.get(&f.name).and_then(Value::as_i64));
                        Ok(())
                    })?;
                    let train: Vec<Option<i64>> = records
                        .iter()
                        .map(|r| match r.get(&f.name) {
                            None | Some(Value::Null) => None,
                            Some(v) => v.as_i64().or_else(|| {
                                wrong += 1;
                                None
                            }),
                        })
                        .collect();
                    if wrong > 0 {
                        return Err(data_error(format!(
                            "feature `{}` is numeric but {wrong} training subjects hold a value that is not an integer",
                            f.name
                        )));
                    }
                    if book.is_empty() {
                        return Err(data_error(format!("no record holds feature `{}`", f.name)));
                    }
                    FeatureValues::Numeric { book, train }
                }
                FeatureKind::Categorical => {
                    let text = |v: &Value| match v {
                        Value::String(s) => Some(s.clone()),
                        Value::Number(n) => Some(n.to_string()),
                        Value::Bool(b) => Some(b.to_string()),
                        _ => None,
                    };
                    let mut book = Vec::new();
                    self.store.scan(|r| {
                        book.extend(r.get(&f.name).and_then(text));
                        Ok(())
                    })?;
                    let train: Vec<Option<String>> = records.iter().map(|r| r.get(&f.name).and_then(text)).collect();
                    if book.is_empty() {
                        return Err(data_error(format!("no record holds feature `{}`", f.name)));
                    }
                    FeatureValues::Categorical { book, train }
                }
            };
            features.push((f.name.clone(), values));
        }
        let binning = party_bins(&features).map_err(|e| data_error(e.to_string()))?;
        let sums = party_sums(&public, &cts, &binning.assignments).map_err(|e| fit(e.to_string()))?;
        let sums = sums_to_bytes(&sums);
        let binned = FitBinned {
            party: self.party.clone(),
            features: binning.bins.iter().map(bins_to_wire).collect(),
            sums_len: sums.len() as u64,
        };
        let session = Session {
            fit_id: open.fit_id.clone(),
            lender: open.lender.clone(),
            rows,
            features: own.features.iter().map(|f| f.name.clone()).collect(),
            assignments: binning.assignments,
        };
        Ok((session, binned, sums))
    }

    /// With a consortium file: the lender signed this request, recently,
    /// and it was not seen before.
    fn check_request(&self, open: &FitOpen) -> Result<()> {
        let Some(consortium) = &self.consortium else { return Ok(()) };
        let refused = |reason: String| PartyError::Unauthenticated {
            party: self.party.clone(),
            request_id: open.fit_id.clone(),
            reason,
        };
        let statement = FitRequest {
            fit_id: open.fit_id.clone(),
            lender: open.lender.clone(),
            spec_id: open.spec_id.clone(),
            rows: open.rows,
            label_key: hex::encode(&open.label_key),
            rows_sha256: open.rows_sha256.clone(),
            time_ms: open.time_ms,
        };
        let now = now_ms();
        statement
            .verify(consortium, &open.signature, now / 1000)
            .map_err(|e| refused(format!("the fit is not signed by a current lender: {e}")))?;
        if now.abs_diff(open.time_ms) > self.max_age_ms {
            return Err(PartyError::Replayed {
                party: self.party.clone(),
                request_id: open.fit_id.clone(),
                reason: format!("signed {} ms from now, beyond `request_max_age_s`", now.abs_diff(open.time_ms)),
            });
        }
        let mut seen = self.seen.lock().map_err(|_| PartyError::Transport("fit lock poisoned".into()))?;
        if seen.len() >= SEEN_LIMIT {
            seen.clear();
        }
        if !seen.insert(open.fit_id.clone()) {
            return Err(PartyError::Replayed {
                party: self.party.clone(),
                request_id: open.fit_id.clone(),
                reason: "this fit was answered before".into(),
            });
        }
        Ok(())
    }

    /// The gram step: this party's WoE columns and its participant.
    fn join(&self, session: &Session, gram: &FitGram) -> Result<(Participant, Deal, Vec<String>)> {
        let n = gram.names.len();
        if gram.columns.len() != n || n < 2 || gram.participant as usize >= n - 1 {
            return Err(fit("a Gram round whose participants do not add up"));
        }
        if gram.names[gram.participant as usize] != self.party {
            return Err(fit(format!(
                "the Gram round names `{}` where this party is",
                gram.names[gram.participant as usize]
            )));
        }
        if gram.rows != session.rows as u64 {
            return Err(fit(format!("a Gram round of {} rows for a fit of {}", gram.rows, session.rows)));
        }
        let mut columns = Vec::new();
        for table in &gram.woe {
            let k = session
                .features
                .iter()
                .position(|f| *f == table.feature)
                .filter(|_| table.party == self.party)
                .ok_or_else(|| fit(format!("a WoE table for `{}` of `{}`", table.feature, table.party)))?;
            columns.push(woe_column(&session.assignments[k], &table.woe).map_err(|e| fit(e.to_string()))?);
        }
        let layout = Layout { rows: session.rows, columns: gram.columns.iter().map(|&c| c as usize).collect() };
        let id: [u8; 16] = gram.session.as_slice().try_into().map_err(|_| fit("a session that is not 16 bytes"))?;
        let own = Columns::encode(session.rows, &columns).map_err(|e| fit(e.to_string()))?;
        let participant = Participant::new(SessionId(id), &layout, gram.participant, own, &mut OsRng)
            .map_err(|e| fit(e.to_string()))?;
        let deal = deal_from_wire(gram.participant, &gram.pairs).map_err(fit)?;
        Ok((participant, deal, gram.names.clone()))
    }

    /// Every participant's key, each the named member's own (with a
    /// consortium file: signed by it; the lender last, the one that signed
    /// the request).
    fn check_keys(
        &self,
        session: &Session,
        gram: &FitGram,
        names: &[String],
        keys: &FitKeys,
    ) -> Result<BTreeMap<u32, [u8; 32]>> {
        let n = names.len();
        let mut out = BTreeMap::new();
        for k in &keys.keys {
            let i = k.participant as usize;
            if i >= n || names[i] != k.name {
                return Err(fit(format!("a key for participant {} named `{}`", k.participant, k.name)));
            }
            let key: [u8; 32] = k.key.as_slice().try_into().map_err(|_| fit("a key that is not 32 bytes"))?;
            if let Some(consortium) = &self.consortium {
                let lender = i + 1 == n;
                if lender && k.name != session.lender {
                    return Err(fit(format!("the round's lender is `{}`, not `{}`", k.name, session.lender)));
                }
                let role = if lender { Role::Lender } else { Role::Party };
                let statement = SignedKey {
                    fit_id: session.fit_id.clone(),
                    session: hex::encode(&gram.session),
                    participant: k.participant,
                    name: k.name.clone(),
                    key: hex::encode(key),
                };
                statement.verify(consortium, role, &k.signature, now_ms() / 1000).map_err(|e| {
                    PartyError::RoundRefused {
                        round: session.fit_id.clone(),
                        reason: format!("the key of `{}` is not its own: {e}", k.name),
                    }
                })?;
            }
            if out.insert(k.participant, key).is_some() {
                return Err(fit(format!("two keys for participant {}", k.participant)));
            }
        }
        Ok(out)
    }
}
