//! Fit sessions (`Coordinator.Fit`): the coordinator relays a lender's
//! joint scorecard fit to the parties of its spec and deals the Gram round.
//!
//! The session is interactive and held in memory only: the lender keeps
//! the label key and the round's key for the whole session, so a
//! coordinator restart (or a lender that leaves) ends it, and the lender
//! starts over. Each party answers each step within the spec's
//! `deadline_ms`; a party that refuses, breaks its stream or does not
//! answer in time fails the session at once with a reason naming it and
//! the step (a fit needs every party's columns: there is no threshold).
//!
//! What the coordinator sees: the spec, the training subjects, ciphertexts
//! under the lender's key, bin bounds and row counts per bin, WoE tables,
//! and sealed messages. As the Gram round's dealer it knows the masks and
//! corrections it dealt, which are independent of the data; it must not
//! collude with a participant (docs/learn.md).

use std::sync::Arc;
use std::time::{Duration, Instant};

use jointscore_binning::gram::{self, Layout, Sealed};
use jointscore_learn::{FitSpec, LENDER_NAME};
use jointscore_net::fit::{deal_to_wire, sealed_from_wire, sealed_to_wire};
use jointscore_proto::MESSAGE_LIMIT;
use jointscore_proto::v1::fit_frame::Part;
use jointscore_proto::v1::party_client::PartyClient;
use jointscore_proto::v1::{FitDone, FitFrame, FitGram, FitKeys, FitOpen, FitSealed, FitWoe};
use jointscore_proto::{fit_frames, next_fit};
use rand_core::{OsRng, RngCore};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};

use crate::engine::{Engine, bounded};
use crate::error::CoordinatorError;

/// Most bytes one step of a session may carry.
const STEP_LIMIT: u64 = 1 << 30;
/// Most columns the lender may hold in the Gram round.
const LENDER_COLUMNS_LIMIT: u32 = 64;

/// Where a session's frames to the lender go.
pub(crate) type Outbox = mpsc::Sender<std::result::Result<FitFrame, Status>>;

/// One party's stream in the session.
struct Link {
    name: String,
    tx: mpsc::Sender<FitFrame>,
    rx: Streaming<FitFrame>,
}

/// What the ledger records of a session.
#[derive(Default)]
struct Record {
    fit_id: String,
    spec_id: String,
    lender: String,
    rows: u64,
    parties: Vec<String>,
    model_id: String,
}

fn invalid(message: impl Into<String>) -> CoordinatorError {
    CoordinatorError::Invalid(message.into())
}

/// A party's failure at `step`, naming it.
fn dropped(party: &str, step: &str, code: Code, reason: &str) -> CoordinatorError {
    let verb = if matches!(code, Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled) {
        "dropped out of the fit"
    } else {
        "refused the fit"
    };
    crate::engine::failed(code, format!("party `{party}` {verb} at step {step}: {}", bounded(reason)))
}

impl Link {
    async fn send(&self, part: Part, data: &[u8], step: &str) -> Result<(), CoordinatorError> {
        for frame in fit_frames(part, data) {
            if self.tx.send(frame).await.is_err() {
                return Err(dropped(&self.name, step, Code::Unavailable, "its stream closed"));
            }
        }
        Ok(())
    }

    /// The party's answer to `step`, within `deadline`.
    async fn receive(&mut self, step: &str, deadline: Duration) -> Result<(Part, Vec<u8>), CoordinatorError> {
        match tokio::time::timeout(deadline, next_fit(&mut self.rx, STEP_LIMIT)).await {
            Err(_) => Err(dropped(
                &self.name,
                step,
                Code::Unavailable,
                &format!("no answer within {} ms", deadline.as_millis()),
            )),
            Ok(Err(status)) => {
                // A broken connection reads as a transport error; a
                // refusal keeps the party's own code.
                let code = match status.code() {
                    Code::Unknown | Code::Internal if status.message().contains("transport") => Code::Unavailable,
                    Code::Unknown => Code::Unavailable,
                    code => code,
                };
                Err(dropped(&self.name, step, code, status.message()))
            }
            Ok(Ok(None)) => Err(dropped(&self.name, step, Code::Unavailable, "its stream ended")),
            Ok(Ok(Some(answer))) => Ok(answer),
        }
    }
}

async fn to_lender(out: &Outbox, part: Part, data: &[u8]) -> Result<(), CoordinatorError> {
    for frame in fit_frames(part, data) {
        out.send(Ok(frame)).await.map_err(|_| invalid("the lender left the fit session"))?;
    }
    Ok(())
}

async fn from_lender(lender: &mut Streaming<FitFrame>, step: &str) -> Result<(Part, Vec<u8>), CoordinatorError> {
    match next_fit(lender, STEP_LIMIT).await {
        Ok(Some(answer)) => Ok(answer),
        Ok(None) => Err(crate::engine::failed(Code::Cancelled, format!("the lender left the fit at step {step}"))),
        Err(status) => Err(crate::engine::failed(
            status.code(),
            format!("the lender's stream at step {step}: {}", status.message()),
        )),
    }
}

impl Engine {
    /// Runs one fit session for the lender on `lender`'s stream, answering
    /// on `out`; a failure ends the lender's stream with its status. The
    /// ledger records the session either way.
    pub(crate) async fn run_fit(self: Arc<Self>, mut lender: Streaming<FitFrame>, out: Outbox, caller: Option<String>) {
        let started = Instant::now();
        let mut record = Record::default();
        let result = self.fit_session(&mut lender, &out, caller.as_deref(), &mut record).await;
        if let Some(ledger) = &self.ledger {
            ledger.record(jointscore_audit::Event {
                kind: jointscore_audit::EntryKind::Fit,
                lender: (!record.lender.is_empty()).then(|| record.lender.clone()),
                job_id: (!record.fit_id.is_empty()).then(|| record.fit_id.clone()),
                model_id: (!record.model_id.is_empty()).then(|| record.model_id.clone()),
                parties: record.parties.clone(),
                detail: format!(
                    "fit spec {}; {} rows; {}",
                    record.spec_id,
                    record.rows,
                    result.as_ref().err().map_or("done".to_string(), |e| format!("failed {:?}", e.code()))
                ),
                ..jointscore_audit::Event::default()
            });
        }
        match result {
            Ok(()) => tracing::info!(fit = %record.fit_id, ms = started.elapsed().as_millis() as u64, "fit done"),
            Err(e) => {
                tracing::info!(fit = %record.fit_id, code = ?e.code(), reason = %e, "fit failed");
                let _ = out.send(Err(e.into())).await;
            }
        }
    }

    async fn open_link(&self, name: &str, address: &str, deadline: Duration) -> Result<Link, CoordinatorError> {
        let channel = self
            .party_channel(name, address, deadline)
            .map_err(|e| dropped(name, "open", Code::Unavailable, &format!("cannot dial {address}: {e}")))?;
        let mut client =
            PartyClient::new(channel).max_decoding_message_size(MESSAGE_LIMIT).max_encoding_message_size(MESSAGE_LIMIT);
        let (tx, rx) = mpsc::channel(64);
        let rx = match tokio::time::timeout(deadline, client.fit(ReceiverStream::new(rx))).await {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => {
                self.forget_channel(name, address);
                return Err(dropped(name, "open", status.code(), status.message()));
            }
            Err(_) => return Err(dropped(name, "open", Code::Unavailable, "no answer within the deadline")),
        };
        Ok(Link { name: name.to_string(), tx, rx })
    }

    async fn fit_session(
        &self,
        lender: &mut Streaming<FitFrame>,
        out: &Outbox,
        caller: Option<&str>,
        record: &mut Record,
    ) -> Result<(), CoordinatorError> {
        let (Part::Open(open), data) = from_lender(lender, "open").await? else {
            return Err(invalid("a fit session starts with `open`"));
        };
        record.fit_id = open.fit_id.chars().take(64).collect();
        record.lender = open.lender.chars().take(128).collect();
        record.spec_id = open.spec_id.chars().take(64).collect();
        record.rows = open.rows;
        self.same_member(caller, "lender", &open.lender)?;
        let spec = FitSpec::from_toml(&open.spec_toml).map_err(|e| invalid(e.to_string()))?;
        if spec.id() != open.spec_id {
            return Err(invalid(format!(
                "spec id {} does not match the spec sent, whose id is {}",
                open.spec_id,
                spec.id()
            )));
        }
        let deadline = Duration::from_millis(spec.deadline_ms);
        let registered = self.store.parties()?;
        let mut links = Vec::new();
        for p in &spec.parties {
            let (_, address) = registered.iter().find(|(name, _)| *name == p.name).ok_or_else(|| {
                CoordinatorError::Precondition(format!(
                    "party `{}` of the spec is not registered with the coordinator",
                    p.name
                ))
            })?;
            links.push(self.open_link(&p.name, address, deadline).await?);
        }
        record.parties = links.iter().map(|l| l.name.clone()).collect();
        tracing::info!(fit = %record.fit_id, parties = links.len(), rows = open.rows, "fit session opened");

        // Binning: the open to every party, then every answer.
        for link in &links {
            let open = FitOpen { party: link.name.clone(), ..open.clone() };
            link.send(Part::Open(open), &data, "open").await?;
        }
        drop(data);
        for link in &mut links {
            let (part, sums) = link.receive("binning", deadline).await?;
            let Part::Binned(binned) = part else {
                return Err(dropped(&link.name, "binning", Code::InvalidArgument, "answered with another step"));
            };
            if binned.party != link.name {
                return Err(dropped(&link.name, "binning", Code::InvalidArgument, "answered under another name"));
            }
            to_lender(out, Part::Binned(binned), &sums).await?;
        }

        // Selection: who takes part in the Gram round.
        let (Part::Select(select), _) = from_lender(lender, "select").await? else {
            return Err(invalid("expected `select` after the bins"));
        };
        if !(1..=LENDER_COLUMNS_LIMIT).contains(&select.lender_columns) {
            return Err(invalid(format!(
                "the lender holds {} columns; 1 to {LENDER_COLUMNS_LIMIT}",
                select.lender_columns
            )));
        }
        let mut participants: Vec<(usize, Vec<FitWoe>)> = Vec::new();
        for (i, p) in spec.parties.iter().enumerate() {
            let tables: Vec<FitWoe> = select.woe.iter().filter(|t| t.party == p.name).cloned().collect();
            if tables.iter().any(|t| !p.features.iter().any(|f| f.name == t.feature)) {
                return Err(invalid(format!("a WoE table names a feature party `{}` does not have", p.name)));
            }
            if !tables.is_empty() {
                participants.push((i, tables));
            }
        }
        if participants.iter().map(|(_, t)| t.len()).sum::<usize>() != select.woe.len() || participants.is_empty() {
            return Err(invalid("the selection names no feature, or one of a party outside the spec"));
        }
        let rows = usize::try_from(open.rows).map_err(|_| invalid("too many rows"))?;
        let mut columns: Vec<usize> = participants.iter().map(|(_, t)| t.len()).collect();
        columns.push(select.lender_columns as usize);
        let layout = Layout { rows, columns };
        let deals = gram::deal(&layout, &mut OsRng).map_err(|e| invalid(e.to_string()))?;
        let mut session = [0u8; 16];
        OsRng.fill_bytes(&mut session);
        let lender_name = if open.lender.is_empty() { LENDER_NAME.to_string() } else { open.lender.clone() };
        let mut names: Vec<String> = participants.iter().map(|(i, _)| spec.parties[*i].name.clone()).collect();
        names.push(lender_name.clone());
        let n = names.len();
        // Parties with nothing selected are done.
        let mut taking: Vec<Link> = Vec::new();
        for (i, link) in links.into_iter().enumerate() {
            if participants.iter().any(|(p, _)| *p == i) {
                taking.push(link);
            } else {
                link.send(Part::Done(FitDone::default()), &[], "gram").await?;
            }
        }
        let gram_for = |id: usize, woe: Vec<FitWoe>| FitGram {
            session: session.to_vec(),
            rows: open.rows,
            columns: layout.columns.iter().map(|&c| c as u32).collect(),
            names: names.clone(),
            participant: id as u32,
            pairs: deal_to_wire(&deals[id]),
            woe,
        };
        for (id, (link, (_, woe))) in taking.iter().zip(&participants).enumerate() {
            link.send(Part::Gram(gram_for(id, woe.clone())), &[], "gram").await?;
        }
        to_lender(out, Part::Gram(gram_for(n - 1, Vec::new())), &[]).await?;

        // Keys, from every participant to every participant.
        let mut keys = Vec::with_capacity(n);
        for (id, link) in taking.iter_mut().enumerate() {
            let (Part::Key(key), _) = link.receive("gram key", deadline).await? else {
                return Err(dropped(&link.name, "gram key", Code::InvalidArgument, "answered with another step"));
            };
            if key.participant as usize != id || key.name != link.name {
                return Err(dropped(&link.name, "gram key", Code::InvalidArgument, "sent a key under another name"));
            }
            keys.push(key);
        }
        let (Part::Key(key), _) = from_lender(lender, "gram key").await? else {
            return Err(invalid("expected the lender's key"));
        };
        if key.participant as usize != n - 1 || key.name != lender_name {
            return Err(invalid("the lender's key names another participant"));
        }
        keys.push(key);
        let keys = FitKeys { keys };
        for link in &taking {
            link.send(Part::Keys(keys.clone()), &[], "gram keys").await?;
        }
        to_lender(out, Part::Keys(keys), &[]).await?;

        // Masked columns, relayed sealed.
        let mut mail: Vec<Sealed> = Vec::new();
        let check = |from: usize, list: Vec<Sealed>| -> Result<Vec<Sealed>, String> {
            if list.len() != n - 1 || list.iter().any(|s| s.from as usize != from || s.to as usize == from) {
                return Err("sent masked columns that are not one per peer from itself".into());
            }
            Ok(list)
        };
        for (id, link) in taking.iter_mut().enumerate() {
            let (Part::Masked(sealed), bytes) = link.receive("gram masked", deadline).await? else {
                return Err(dropped(&link.name, "gram masked", Code::InvalidArgument, "answered with another step"));
            };
            let list = sealed_from_wire(&sealed, &bytes, n as u32)
                .and_then(|l| check(id, l))
                .map_err(|e| dropped(&link.name, "gram masked", Code::InvalidArgument, &e))?;
            mail.extend(list);
        }
        let (Part::Masked(sealed), bytes) = from_lender(lender, "gram masked").await? else {
            return Err(invalid("expected the lender's masked columns"));
        };
        mail.extend(sealed_from_wire(&sealed, &bytes, n as u32).and_then(|l| check(n - 1, l)).map_err(invalid)?);
        let inbox = |id: usize| -> (FitSealed, Vec<u8>) {
            let to: Vec<Sealed> = mail.iter().filter(|m| m.to as usize == id).cloned().collect();
            sealed_to_wire(&to)
        };
        for (id, link) in taking.iter().enumerate() {
            let (header, bytes) = inbox(id);
            link.send(Part::Inbox(header), &bytes, "gram inbox").await?;
        }
        let (header, bytes) = inbox(n - 1);
        to_lender(out, Part::Inbox(header), &bytes).await?;
        drop(mail);

        // Contributions, sealed to the lender.
        let mut contributions = Vec::with_capacity(n - 1);
        for (id, link) in taking.iter_mut().enumerate() {
            let (Part::Contribution(sealed), bytes) = link.receive("gram contribution", deadline).await? else {
                return Err(dropped(
                    &link.name,
                    "gram contribution",
                    Code::InvalidArgument,
                    "answered with another step",
                ));
            };
            let list = sealed_from_wire(&sealed, &bytes, n as u32)
                .map_err(|e| dropped(&link.name, "gram contribution", Code::InvalidArgument, &e))?;
            match list.as_slice() {
                [c] if c.from as usize == id && c.to as usize == n - 1 => contributions.push(c.clone()),
                _ => {
                    return Err(dropped(
                        &link.name,
                        "gram contribution",
                        Code::InvalidArgument,
                        "sent a contribution that is not its one share to the lender",
                    ));
                }
            }
        }
        let (header, bytes) = sealed_to_wire(&contributions);
        to_lender(out, Part::Contribution(header), &bytes).await?;

        // The lender's model.
        let (Part::Done(done), _) = from_lender(lender, "done").await? else {
            return Err(invalid("expected `done` after the contributions"));
        };
        record.model_id = done.model_id.chars().take(64).collect();
        for link in &taking {
            // The party may have closed already: its work is done.
            let _ = link.send(Part::Done(done.clone()), &[], "done").await;
        }
        Ok(())
    }
}
