//! Statistics jobs: one secure-aggregation round (`jointscore-secagg`) over
//! every registered party, the coordinator playing the protocol's server.
//!
//! The coordinator relays keys and sealed shares, collects masked vectors
//! and, at the end, the shares that remove the masks from their sum. It
//! never holds an unmasked vector of any party. Each step is asked of every
//! remaining party at once under the spec's deadline; a party that fails to
//! answer, answers late, or answers something the protocol refuses (a bad
//! key, a vector of the wrong length, shares it must not reveal, another
//! party's name) is dropped from the round with the reason recorded, and the
//! round goes on while at least the threshold remains.
//!
//! Signed rosters (issue 17, point 6): each party signs its advertised keys
//! for the round, and the coordinator relays every entry with its party's
//! name and signature, so the parties can check the roster against their
//! consortium file before sharing. Between the masked input and the unmask
//! step runs the consistency check of Bonawitz et al.'s malicious-server
//! variant: each survivor signs the survivor list U3, and the parties that
//! signed (U4, at least the threshold, or the round aborts) are asked to
//! unmask U3 with all of U4's signatures. A survivor that does not sign is
//! dropped from U4 only: its vector is in the sum already, U3 does not
//! change, so no party is ever asked to sign a second list. With a
//! consortium the coordinator checks the signatures too and drops a party
//! whose signature does not count, so one bad signer cannot make every
//! honest party refuse the round; the parties check for themselves either
//! way.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jointscore_identity::{AdvertisedKeys, Consortium, RoundBinding};
use jointscore_proto::MESSAGE_LIMIT;
use jointscore_proto::v1::party_client::PartyClient;
use jointscore_proto::v1::{
    SecAggAdvertiseRequest, SecAggConsistencyRequest, SecAggKeys, SecAggMaskedInputRequest, SecAggSealed,
    SecAggShareKeysRequest, SecAggSurvivorSignature, SecAggUnmaskRequest,
};
use jointscore_secagg::{Advertise, Config, Masked, PartyId, Server, SessionId, Shares, Unmask};
use jointscore_stats::StatsSpec;
use rand_core::{OsRng, RngCore};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinSet;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::engine::{Engine, bounded, failed, micros};
use crate::error::CoordinatorError;
use crate::job::{DroppedParty, StatsEntry, StatsJobRecord, StatsOutcome};

/// The four steps, as named in dropout records.
const ADVERTISE: &str = "advertise";
const SHARE_KEYS: &str = "share_keys";
const MASKED_INPUT: &str = "masked_input";
const CONSISTENCY: &str = "consistency";
const UNMASK: &str = "unmask";

/// A registered party invited to the round.
#[derive(Clone)]
struct Invitee {
    name: String,
    address: String,
}

/// The round in progress: the protocol server, who is invited, and who
/// dropped so far.
struct Round {
    server: Server,
    invited: BTreeMap<PartyId, Invitee>,
    dropped: BTreeMap<PartyId, DroppedParty>,
    round_id: String,
    deadline: Duration,
    /// What every party is invited with, which its signatures cover.
    binding: RoundBinding,
    /// The consortium, when signatures are checked.
    consortium: Option<Arc<Consortium>>,
    /// Each advertiser's signature on its keys, relayed in the roster.
    signatures: BTreeMap<PartyId, Vec<u8>>,
}

impl Round {
    fn drop_party(&mut self, id: PartyId, step: &str, reason: String) {
        let party = self.invited[&id].name.clone();
        tracing::info!(%party, step, reason = %reason, round = %self.round_id, "party dropped from the round");
        self.dropped.entry(id).or_insert(DroppedParty { party, step: step.into(), reason: bounded(&reason) });
    }

    fn outcome(&self, entries: Vec<StatsEntry>, included: &[PartyId], started: Instant) -> StatsOutcome {
        StatsOutcome {
            entries,
            included: included.iter().map(|id| self.invited[id].name.clone()).collect(),
            dropped: self.dropped.values().cloned().collect(),
            round_us: micros(started.elapsed()),
        }
    }

    /// Why the round cannot go on, naming every party that dropped.
    fn abort(&self, e: &jointscore_secagg::Error) -> CoordinatorError {
        let who: Vec<String> =
            self.dropped.values().map(|d| format!("`{}` at {}: {}", d.party, d.step, d.reason)).collect();
        let code = match e {
            jointscore_secagg::Error::Abort { .. } => Code::Unavailable,
            _ => Code::Aborted,
        };
        let detail = if who.is_empty() { String::new() } else { format!("; dropped: {}", who.join("; ")) };
        failed(code, format!("statistics round failed: {e}{detail}"))
    }
}

fn key(bytes: &[u8]) -> std::result::Result<[u8; 32], String> {
    bytes.try_into().map_err(|_| format!("sent a key of {} bytes, not 32", bytes.len()))
}

fn share(bytes: &[u8]) -> std::result::Result<[u8; 32], String> {
    bytes.try_into().map_err(|_| format!("sent a share of {} bytes, not 32", bytes.len()))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A party's refusal or failure, as a dropout reason.
fn status_reason(s: &Status) -> String {
    format!("{:?}: {}", s.code(), bounded(s.message()))
}

impl Engine {
    /// Runs a statistics job to a terminal state in the background; while
    /// the node drains, leaves it in the store for the next start instead.
    pub(crate) fn spawn_stats(self: &Arc<Self>, job: StatsJobRecord, permit: OwnedSemaphorePermit) -> bool {
        let (engine, id) = (self.clone(), job.job_id.clone());
        let started = self.tasks.spawn(async move { engine.run_stats(job, permit).await });
        if !started {
            tracing::info!(job = %id, "draining: statistics job left for the next start");
        }
        started
    }

    async fn run_stats(self: Arc<Self>, job: StatsJobRecord, permit: OwnedSemaphorePermit) {
        let started = Instant::now();
        let (outcome, failure) = match self.stats_round(&job, started).await {
            Ok(outcome) => (outcome, None),
            Err((e, outcome)) => (outcome, Some(e)),
        };
        let failure_ref = failure.as_ref().map(|e| (e.code() as i32, e.to_string()));
        self.record_end(&job.job_id, || {
            self.store.end_stats_job(&job.job_id, &outcome, failure_ref.as_ref().map(|(c, r)| (*c, r.as_str())))
        })
        .await;
        if let Some(ledger) = &self.ledger {
            let dropped: Vec<String> = outcome.dropped.iter().map(|d| format!("{} at {}", d.party, d.step)).collect();
            ledger.record(jointscore_audit::Event {
                kind: jointscore_audit::EntryKind::Aggregation,
                job_id: Some(job.job_id.clone()),
                parties: outcome.included.clone(),
                detail: format!(
                    "spec {}; {}; dropped: {}",
                    job.request.spec_id,
                    failure.as_ref().map_or("done".to_string(), |e| format!("failed {:?}", e.code())),
                    if dropped.is_empty() { "none".into() } else { dropped.join(", ") }
                ),
                ..jointscore_audit::Event::default()
            });
        }
        match &failure {
            // The sum is the requester's: it is stored, never logged.
            None => tracing::info!(job = %job.job_id, included = outcome.included.len(), "statistics job done"),
            Some(e) => tracing::info!(job = %job.job_id, code = ?e.code(), reason = %e, "statistics job failed"),
        }
        self.announce_end(permit);
    }

    /// One round; on failure, the error and what is known of the round.
    async fn stats_round(
        self: &Arc<Self>,
        job: &StatsJobRecord,
        started: Instant,
    ) -> std::result::Result<StatsOutcome, (CoordinatorError, StatsOutcome)> {
        let early = |e: CoordinatorError| (e, StatsOutcome::default());
        let spec = StatsSpec::from_toml(&job.request.spec_toml)
            .map_err(|e| early(CoordinatorError::Invalid(e.to_string())))?;
        let parties = self.store.parties().map_err(early)?;
        let n = u32::try_from(parties.len()).unwrap_or(u32::MAX);
        if n < 2 {
            return Err(early(CoordinatorError::Precondition(format!(
                "a statistics round needs at least 2 registered parties; {n} registered"
            ))));
        }
        let threshold = spec.threshold(n);
        let mut session = [0u8; 16];
        OsRng.fill_bytes(&mut session);
        let config = Config::new(n, threshold, spec.dim(), SessionId(session))
            .map_err(|e| early(CoordinatorError::Invalid(e.to_string())))?;
        self.store.start_stats_job(&job.job_id).map_err(early)?;
        let round_id = format!("{}-{}", job.job_id, hex::encode(&session[..8]));
        let binding = RoundBinding {
            round_id: round_id.clone(),
            session,
            spec_id: job.request.spec_id.clone(),
            parties: n,
            threshold,
        };
        let mut round = Round {
            server: Server::new(&config),
            invited: (1..=n).zip(parties).map(|(id, (name, address))| (id, Invitee { name, address })).collect(),
            dropped: BTreeMap::new(),
            round_id,
            deadline: Duration::from_millis(spec.deadline_ms),
            binding,
            consortium: self.consortium.clone(),
            signatures: BTreeMap::new(),
        };
        let result = self.steps(&mut round, job, &spec, &config).await;
        match result {
            Ok((sum, included)) => {
                let entries = spec
                    .labels()
                    .into_iter()
                    .zip(sum)
                    .map(|(label, value)| StatsEntry { label, value: u64::from(value) })
                    .collect();
                Ok(round.outcome(entries, &included, started))
            }
            Err(e) => Err((round.abort(&e), round.outcome(Vec::new(), &[], started))),
        }
    }

    /// The four steps and the consistency check; the sum and the ids of the
    /// parties in it.
    async fn steps(
        self: &Arc<Self>,
        round: &mut Round,
        job: &StatsJobRecord,
        spec: &StatsSpec,
        config: &Config,
    ) -> jointscore_secagg::Result<(Vec<u32>, Vec<PartyId>)> {
        // Step 0: advertise.
        let everyone: Vec<PartyId> = round.invited.keys().copied().collect();
        let replies = self
            .ask(round, &everyone, |mut client, id, invitee, round_id| {
                let request = SecAggAdvertiseRequest {
                    round_id,
                    spec_id: job.request.spec_id.clone(),
                    spec_toml: job.request.spec_toml.clone(),
                    party: invitee.name.clone(),
                    party_id: id,
                    parties: config.n,
                    threshold: config.threshold,
                    session: config.session.0.to_vec(),
                };
                async move { client.sec_agg_advertise(request).await.map(tonic::Response::into_inner) }
            })
            .await;
        for (id, reply) in replies {
            let received = reply.and_then(|r| {
                if r.party != round.invited[&id].name || r.party_id != id {
                    return Err(format!("answered as `{}` (id {})", bounded(&r.party), r.party_id));
                }
                let message =
                    Advertise { from: id, encryption: key(&r.encryption_key)?, masking: key(&r.masking_key)? };
                if let Some(consortium) = &round.consortium {
                    let keys = AdvertisedKeys {
                        party: r.party.clone(),
                        party_id: id,
                        encryption_key: message.encryption,
                        masking_key: message.masking,
                    };
                    round
                        .binding
                        .verify_advertise(consortium, &keys, &r.signature, unix_now())
                        .map_err(|e| format!("its keys are not signed as the consortium requires: {e}"))?;
                }
                round.server.receive_advertise(message).map_err(|e| e.to_string())?;
                round.signatures.insert(id, r.signature);
                Ok(())
            });
            if let Err(reason) = received {
                round.drop_party(id, ADVERTISE, reason);
            }
        }
        let roster = round.server.roster()?;
        let roster_wire: Vec<SecAggKeys> = roster
            .values()
            .map(|a| SecAggKeys {
                party_id: a.from,
                encryption_key: a.encryption.to_vec(),
                masking_key: a.masking.to_vec(),
                party: round.invited[&a.from].name.clone(),
                signature: round.signatures.get(&a.from).cloned().unwrap_or_default(),
            })
            .collect();

        // Step 1: share keys.
        let advertisers: Vec<PartyId> = roster.keys().copied().collect();
        let replies = self
            .ask(round, &advertisers, |mut client, _, _, round_id| {
                let request = SecAggShareKeysRequest { round_id, roster: roster_wire.clone() };
                async move { client.sec_agg_share_keys(request).await.map(tonic::Response::into_inner) }
            })
            .await;
        for (id, reply) in replies {
            let received = reply.and_then(|r| {
                let mut to = BTreeMap::new();
                for s in r.shares {
                    if to.insert(s.party_id, s.ciphertext).is_some() {
                        return Err(format!("sent two share pairs for party {}", s.party_id));
                    }
                }
                round.server.receive_shares(Shares { from: id, to }).map_err(|e| e.to_string())
            });
            if let Err(reason) = received {
                round.drop_party(id, SHARE_KEYS, reason);
            }
        }
        let inboxes = round.server.inboxes()?;

        // Step 2: masked input.
        let mut rejections: BTreeMap<PartyId, BTreeSet<PartyId>> = BTreeMap::new();
        let sharers: Vec<PartyId> = inboxes.keys().copied().collect();
        let replies = self
            .ask(round, &sharers, |mut client, id, _, round_id| {
                let inbox = inboxes[&id]
                    .iter()
                    .map(|(&party_id, ciphertext)| SecAggSealed { party_id, ciphertext: ciphertext.clone() })
                    .collect();
                let request = SecAggMaskedInputRequest { round_id, inbox };
                async move { client.sec_agg_masked_input(request).await.map(tonic::Response::into_inner) }
            })
            .await;
        for (id, reply) in replies {
            let received = reply.and_then(|r| {
                if r.vector.len() != 4 * spec.dim() {
                    return Err(format!(
                        "sent a masked vector of {} bytes; the round aggregates {} entries of 4 bytes",
                        r.vector.len(),
                        spec.dim()
                    ));
                }
                let vector = r.vector.chunks_exact(4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])).collect();
                let rejected: BTreeSet<PartyId> = r.rejected.into_iter().collect();
                let message = Masked { from: id, vector, rejected: rejected.clone() };
                round.server.receive_masked(message).map_err(|e| e.to_string())?;
                rejections.insert(id, rejected);
                Ok(())
            });
            if let Err(reason) = received {
                round.drop_party(id, MASKED_INPUT, reason);
            }
        }
        let survivors = round.server.survivors()?;
        // Parties whose shares failed authentication somewhere were
        // dropped by the protocol server: name where.
        for &v in rejections.keys().filter(|v| !survivors.contains(v)) {
            let at: Vec<String> = rejections
                .iter()
                .filter(|(_, r)| r.contains(&v))
                .map(|(u, _)| format!("`{}`", round.invited[u].name))
                .collect();
            round.drop_party(v, SHARE_KEYS, format!("its share pairs failed authentication at {}", at.join(", ")));
        }

        // Consistency check: each survivor signs the survivor list once.
        let list: BTreeSet<PartyId> = survivors.iter().copied().collect();
        let replies = self
            .ask(round, &survivors, |mut client, _, _, round_id| {
                let request = SecAggConsistencyRequest { round_id, survivors: survivors.clone() };
                async move { client.sec_agg_consistency(request).await.map(tonic::Response::into_inner) }
            })
            .await;
        let mut signed = Vec::new();
        for (id, reply) in replies {
            let received = reply.and_then(|r| {
                if let Some(consortium) = &round.consortium {
                    let name = &round.invited[&id].name;
                    round
                        .binding
                        .verify_survivors(consortium, name, &list, &r.signature, unix_now())
                        .map_err(|e| format!("its signature on the survivor list does not count: {e}"))?;
                }
                Ok(r.signature)
            });
            match received {
                Ok(signature) => signed.push(SecAggSurvivorSignature { party_id: id, signature }),
                // Its vector is in the sum; it only is not asked to unmask.
                Err(reason) => round.drop_party(id, CONSISTENCY, reason),
            }
        }
        let need = config.threshold as usize;
        if signed.len() < need {
            return Err(jointscore_secagg::Error::Abort {
                round: "consistency check",
                party: None,
                have: signed.len(),
                need,
            });
        }

        // Step 3: unmask, asked of the parties that signed, with every
        // signature.
        let signers: Vec<PartyId> = signed.iter().map(|s| s.party_id).collect();
        let replies = self
            .ask(round, &signers, |mut client, _, _, round_id| {
                let request =
                    SecAggUnmaskRequest { round_id, survivors: survivors.clone(), signatures: signed.clone() };
                async move { client.sec_agg_unmask(request).await.map(tonic::Response::into_inner) }
            })
            .await;
        for (id, reply) in replies {
            let received = reply.and_then(|r| {
                let collect = |shares: Vec<jointscore_proto::v1::SecAggShare>| {
                    let mut out = BTreeMap::new();
                    for s in shares {
                        if out.insert(s.party_id, share(&s.share)?).is_some() {
                            return Err(format!("sent two shares for party {}", s.party_id));
                        }
                    }
                    Ok(out)
                };
                let message =
                    Unmask { from: id, seed_shares: collect(r.seed_shares)?, key_shares: collect(r.key_shares)? };
                round.server.receive_unmask(message).map_err(|e| e.to_string())
            });
            if let Err(reason) = received {
                // Its vector is in the sum already; it only fails to help
                // unmask, and the others' shares suffice above the threshold.
                round.drop_party(id, UNMASK, reason);
            }
        }
        let sum = round.server.finish()?;
        Ok((sum, survivors))
    }

    /// Asks each of `ids` one step at once, each under the round's deadline
    /// (connecting included); answers in id order. A failure is a reason
    /// string for the dropout record.
    async fn ask<T, F, Fut>(
        self: &Arc<Self>,
        round: &Round,
        ids: &[PartyId],
        mut make: F,
    ) -> Vec<(PartyId, std::result::Result<T, String>)>
    where
        T: Send + 'static,
        F: FnMut(PartyClient<Channel>, PartyId, &Invitee, String) -> Fut,
        Fut: Future<Output = std::result::Result<T, Status>> + Send + 'static,
    {
        let mut tasks = JoinSet::new();
        let deadline = round.deadline;
        let mut undialable = Vec::new();
        for &id in ids {
            let invitee = round.invited[&id].clone();
            let channel = match self.party_channel(&invitee.name, &invitee.address, deadline) {
                Ok(channel) => channel,
                Err(e) => {
                    undialable.push((id, Err(format!("cannot dial {}: {}", invitee.address, bounded(&e)))));
                    continue;
                }
            };
            let client = PartyClient::new(channel)
                .max_decoding_message_size(MESSAGE_LIMIT)
                .max_encoding_message_size(MESSAGE_LIMIT);
            let call = make(client, id, &invitee, round.round_id.clone());
            let engine = self.clone();
            tasks.spawn(async move {
                let answer = match tokio::time::timeout(deadline, call).await {
                    Ok(Ok(reply)) => Ok(reply),
                    Ok(Err(status)) if status.code() == Code::Unavailable => {
                        // A fresh connection next time: the party may have
                        // restarted elsewhere.
                        engine.forget_channel(&invitee.name, &invitee.address);
                        Err(format!("unreachable at {}: {}", invitee.address, status_reason(&status)))
                    }
                    Ok(Err(status)) => Err(status_reason(&status)),
                    Err(_) => Err(format!("no answer within {} ms", deadline.as_millis())),
                };
                (id, answer)
            });
        }
        let mut answers: BTreeMap<PartyId, std::result::Result<T, String>> = undialable.into_iter().collect();
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok((id, answer)) => {
                    answers.insert(id, answer);
                }
                Err(e) => tracing::error!(error = %e, "aggregation step task failed"),
            }
        }
        // A task that panicked leaves its party without an answer: dropped.
        let asked: BTreeSet<PartyId> = ids.iter().copied().collect();
        for id in asked {
            answers.entry(id).or_insert_with(|| Err("the coordinator's task for this party failed".into()));
        }
        answers.into_iter().collect()
    }
}
