//! Fan-out to the parties: one connection per party and address, one
//! concurrent contribution request per party under the per-party deadline,
//! and the contributions of parties the lender marked absent.

use std::sync::Arc;
use std::time::Duration;

use jointscore_circuits::fhe::{CONTRIBUTION_SIZE_LIMIT, Contribution, PublicKey};
use jointscore_circuits::proof::Crs;
use jointscore_identity::{Consortium, ContributionBinding, Role};
use jointscore_monitor::Compiled;
use jointscore_net::{NodeTls, plan_to_wire};
use jointscore_proto::v1::contribute_chunk::Part;
use jointscore_proto::v1::party_client::PartyClient;
use jointscore_proto::v1::{ContributeChunk, ContributeRequest};
use jointscore_proto::{Assembler, MESSAGE_LIMIT};
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status, Streaming};

use super::{Engine, bounded, failed, lock, verify};
use crate::error::{CoordinatorError, Result};
use crate::job::{JobRecord, SignedContribution, Timings};
use crate::store::Write;

/// Connections are cached per party and address: under mutual TLS a
/// connection is bound to the party whose certificate it checked.
fn channel_key(name: &str, address: &str) -> String {
    format!("{name}\n{address}")
}

/// An endpoint for party `name` at `address`, over mutual TLS when `tls`.
fn party_endpoint(tls: Option<&NodeTls>, name: &str, address: &str) -> std::result::Result<Endpoint, String> {
    jointscore_net::endpoint(address, tls, name, Role::Party)
}

impl Engine {
    /// A connection to party `name`: the cached one, or a new lazy one that
    /// connects (within `deadline`) on its first call, so a party that is
    /// down costs its own call's deadline and never delays the others. The
    /// error is for an address that is not a URL, or (under mutual TLS) a
    /// party that is not a current member.
    pub(crate) fn party_channel(
        &self,
        name: &str,
        address: &str,
        deadline: Duration,
    ) -> std::result::Result<Channel, String> {
        let mut channels = lock(&self.channels).map_err(|e| e.to_string())?;
        if let Some(channel) = channels.get(&channel_key(name, address)) {
            return Ok(channel.clone());
        }
        let channel = party_endpoint(self.tls.as_ref(), name, address)?.connect_timeout(deadline).connect_lazy();
        channels.insert(channel_key(name, address), channel.clone());
        Ok(channel)
    }

    /// Drops a cached connection after a failure, so the next call dials
    /// afresh (the party may have moved or restarted).
    pub(crate) fn forget_channel(&self, name: &str, address: &str) {
        if let Ok(mut channels) = lock(&self.channels) {
            channels.remove(&channel_key(name, address));
        }
    }

    /// Asks every party of the plan for its contribution, concurrently, each
    /// under the per-party deadline. The job fails with the first party's
    /// failure in model order; the others are named in the reason.
    pub(super) async fn collect(
        &self,
        job: &JobRecord,
        plan: &Arc<Compiled>,
        public: &PublicKey,
        timings: &mut Timings,
    ) -> Result<Collected> {
        let model_toml = self.model_toml(&job.request.model_id)?;
        let absent = self.absent_contributions(job, plan, public).await?;
        // Forwarded as the lender signed it; the parties check it.
        let lender_request = job.request.lender_request();
        let attestation = &job.request.attestation;
        let commitment = lender_request.subject_commitment();
        // What a run of this job before a restart already received: those
        // parties are not asked again (they answer each request once).
        let kept = self.store.kept_contributions(&job.job_id)?;
        let mut tasks = JoinSet::new();
        for (index, name) in plan.party_names().iter().enumerate() {
            if absent[index].is_some() {
                continue;
            }
            if let Some((_, bytes, signed)) = kept.iter().find(|(p, _, _)| p == name) {
                let binding = ContributionBinding::answering(
                    &lender_request,
                    &job.job_id,
                    name,
                    signed.as_ref().map_or("", |s| s.consent.as_str()),
                );
                let (crs, name, plan, public) = (self.crs.clone(), name.clone(), plan.clone(), public.clone());
                let (bytes, signed) = (bytes.clone(), signed.clone());
                tasks.spawn(async move {
                    let len = bytes.len() as u64;
                    let got = verify::decode(crs.as_ref(), &name, bytes, binding, &plan, index, &public)
                        .await
                        .map(|(contribution, verify_us)| Received {
                            contribution,
                            signed,
                            encrypt_us: 0,
                            verify_us,
                            bytes: len,
                            raw: Vec::new(),
                            address: String::new(),
                            channel: None,
                        })
                        .map_err(|e| (None, e));
                    (index, got)
                });
                continue;
            }
            let request = ContributeRequest {
                job_id: job.job_id.clone(),
                subject: job.request.subject.clone(),
                model_id: job.request.model_id.clone(),
                model_toml: model_toml.to_string(),
                plan: plan_to_wire(job.request.plan),
                key_id: job.request.key_id.clone(),
                absent: job.request.absent.clone(),
                request_id: job.request.request_id.clone(),
                lender: attestation.lender.clone(),
                time_ms: attestation.time_ms,
                salt: attestation.salt.clone(),
                signature: hex::decode(&attestation.signature).unwrap_or_default(),
            };
            let commitment = commitment.clone();
            let address = self.store.party_address(name)?;
            let cached = address.as_ref().and_then(|a| lock(&self.channels).ok()?.get(&channel_key(name, a)).cloned());
            let tried = address.clone();
            let (name, plan, public) = (name.clone(), plan.clone(), public.clone());
            let deadline = self.config.party_deadline();
            let consortium = self.consortium.clone();
            let tls = self.tls.clone();
            let crs = self.crs.clone();
            tasks.spawn(async move {
                let call = Call { name: &name, address, cached, deadline, consortium, tls, crs, commitment };
                let got = match tokio::time::timeout(deadline, call.contribution(request, &plan, index, &public)).await
                {
                    Ok(got) => got,
                    Err(_) => Err((
                        tried,
                        failed(
                            Code::DeadlineExceeded,
                            format!("party `{name}` did not answer within {} ms", deadline.as_millis()),
                        ),
                    )),
                };
                (index, got)
            });
        }
        let mut results: Vec<Option<Answer>> = (0..plan.party_names().len()).map(|_| None).collect();
        while let Some(done) = tasks.join_next().await {
            let (index, got) =
                done.map_err(|e| CoordinatorError::Transport(format!("contribution task failed: {e}")))?;
            results[index] = Some(got);
        }
        let mut contributions = Vec::with_capacity(results.len());
        let mut signed = Vec::new();
        let mut keep = Vec::new();
        let mut channels = lock(&self.channels)?;
        let mut errors = Vec::new();
        for ((got, absent), name) in results.into_iter().zip(absent).zip(plan.party_names()) {
            let Some(got) = got else {
                contributions.extend(absent);
                continue;
            };
            match got {
                Ok(r) => {
                    if !r.raw.is_empty() {
                        // To keep, so a restart does not ask this party
                        // again.
                        keep.push(Write::Contribution {
                            job_id: job.job_id.clone(),
                            party: name.clone(),
                            bytes: r.raw,
                            signed: r.signed.clone(),
                        });
                    }
                    if let Some(channel) = r.channel {
                        channels.insert(channel_key(name, &r.address), channel);
                    }
                    timings.party_encrypt_us = timings.party_encrypt_us.max(r.encrypt_us);
                    timings.verify_us = timings.verify_us.max(r.verify_us);
                    timings.contribution_bytes += r.bytes;
                    contributions.push(r.contribution);
                    signed.extend(r.signed);
                }
                Err((address, e)) => {
                    // A fresh connection next time, in case the party moved
                    // or restarted.
                    if let Some(a) = address {
                        channels.remove(&channel_key(name, &a));
                    }
                    errors.push(e);
                }
            }
        }
        drop(channels);
        let mut errors = errors.into_iter();
        match errors.next() {
            None => Ok(Collected { contributions, signed, keep }),
            Some(first) => {
                let rest: Vec<String> = errors.map(|e| e.to_string()).collect();
                if rest.is_empty() {
                    return Err(first);
                }
                Err(failed(first.code(), format!("{first}; also: {}", rest.join("; "))))
            }
        }
    }

    /// For every party the lender's alignment marked absent, the
    /// contribution of a record with all its features missing, encrypted
    /// here under the lender's public key (the values are the model's
    /// public missing treatment, so nothing secret is encrypted); `None` for
    /// the parties to ask. A feature whose treatment is `reject` fails the
    /// job: the model cannot decide without that party.
    async fn absent_contributions(
        &self,
        job: &JobRecord,
        plan: &Arc<Compiled>,
        public: &PublicKey,
    ) -> Result<Vec<Option<Contribution>>> {
        let absent: Vec<bool> = plan.party_names().iter().map(|p| job.request.absent.contains(p)).collect();
        if !absent.contains(&true) {
            return Ok(absent.iter().map(|_| None).collect());
        }
        let (plan, public) = (plan.clone(), public.clone());
        tokio::task::spawn_blocking(move || {
            absent
                .iter()
                .enumerate()
                .map(|(index, &is_absent)| {
                    if !is_absent {
                        return Ok(None);
                    }
                    let name = &plan.party_names()[index];
                    // A model treats the party's features as missing; a
                    // monitor spec fails the conditions on its windows.
                    let missing = |e: jointscore_circuits::Error| {
                        failed(
                            Code::FailedPrecondition,
                            format!(
                                "party `{name}` does not hold the subject (per the lender's alignment) and the \
                                 model cannot treat its features as missing: {e}"
                            ),
                        )
                    };
                    let digits = plan.absent(index).map_err(missing)?;
                    Ok(Some(Contribution::encrypt(&*plan, index, &digits, &public)?))
                })
                .collect()
        })
        .await
        .map_err(|e| CoordinatorError::Transport(format!("encryption task failed: {e}")))?
    }
}

/// What a job collected.
pub(super) struct Collected {
    /// Every party's contribution, in model order (absent parties' made
    /// here).
    pub(super) contributions: Vec<Contribution>,
    /// The parties' signed envelopes.
    pub(super) signed: Vec<SignedContribution>,
    /// The contributions received in this run, to keep until the job ends.
    pub(super) keep: Vec<Write>,
}

/// One party's answer: its contribution, or the failure and the address
/// whose cached connection to drop.
type Answer = std::result::Result<Received, (Option<String>, CoordinatorError)>;

struct Received {
    contribution: Contribution,
    /// The bytes as received (empty for one kept from an earlier run).
    raw: Vec<u8>,
    /// The party's signed envelope, when it sent a signature.
    signed: Option<SignedContribution>,
    encrypt_us: u64,
    /// Proof verification, in strict mode.
    verify_us: u64,
    bytes: u64,
    address: String,
    /// The connection it came over (none for one kept from an earlier run).
    channel: Option<Channel>,
}

/// One contribution request to one party.
struct Call<'a> {
    name: &'a str,
    address: Option<String>,
    cached: Option<Channel>,
    deadline: Duration,
    consortium: Option<Arc<Consortium>>,
    tls: Option<NodeTls>,
    crs: Option<Arc<Crs>>,
    /// The lender's commitment to the subject: what envelopes name.
    commitment: String,
}

impl Call<'_> {
    /// One party's contribution: connect (or reuse the connection), request,
    /// read the header and the declared bytes, and decode them against the
    /// plan and key. An error carries the address whose connection should
    /// be dropped.
    async fn contribution(
        self,
        request: ContributeRequest,
        plan: &Arc<Compiled>,
        index: usize,
        public: &PublicKey,
    ) -> Answer {
        let name = self.name;
        let Some(address) = self.address.clone() else {
            return Err((
                None,
                failed(Code::Unavailable, format!("party `{name}` is not registered with the coordinator")),
            ));
        };
        let unreachable = |e: &dyn std::fmt::Display| {
            failed(Code::Unavailable, format!("party `{name}` is unreachable at {address}: {e}"))
        };
        let channel = match self.cached.clone() {
            Some(channel) => channel,
            None => party_endpoint(self.tls.as_ref(), self.name, &address)
                .map_err(|e| (None, unreachable(&e)))?
                .connect_timeout(self.deadline)
                .connect()
                .await
                .map_err(|e| {
                    let cause = std::error::Error::source(&e).map_or(e.to_string(), ToString::to_string);
                    (None, unreachable(&cause))
                })?,
        };
        let received = async {
            let mut client = PartyClient::new(channel.clone()).max_decoding_message_size(MESSAGE_LIMIT);
            let status = |s: Status| match s.code() {
                // Connection failures (or a party saying it cannot serve):
                // say where we tried.
                Code::Unavailable => unreachable(&bounded(s.message())),
                // Only the codes a party may end a job with pass through; a
                // party cannot make a job look like the coordinator's own
                // failure (RESOURCE_EXHAUSTED, ALREADY_EXISTS, INTERNAL, …).
                code @ (Code::NotFound
                | Code::PermissionDenied
                | Code::Unauthenticated
                | Code::FailedPrecondition
                | Code::InvalidArgument
                | Code::DeadlineExceeded) => failed(code, format!("party `{name}`: {}", bounded(s.message()))),
                other => {
                    failed(Code::Unavailable, format!("party `{name}` failed ({other:?}): {}", bounded(s.message())))
                }
            };
            let mut stream: Streaming<ContributeChunk> =
                client.contribute(request.clone()).await.map_err(status)?.into_inner();
            let header = match stream.message().await.map_err(status)? {
                Some(ContributeChunk { part: Some(Part::Header(h)) }) => h,
                _ => {
                    return Err(CoordinatorError::Invalid(format!(
                        "party `{name}` did not start its answer with a header"
                    )));
                }
            };
            if header.party != name {
                return Err(CoordinatorError::Invalid(format!("party `{name}` answered as `{}`", header.party)));
            }
            let bad = |e: jointscore_proto::ChunkError| CoordinatorError::Invalid(format!("party `{name}`: {e}"));
            let mut bytes = Assembler::new("contribution", header.len, CONTRIBUTION_SIZE_LIMIT).map_err(bad)?;
            while let Some(chunk) = stream.message().await.map_err(status)? {
                match chunk.part {
                    Some(Part::Data(data)) => bytes.push(&data).map_err(bad)?,
                    _ => return Err(CoordinatorError::Invalid(format!("party `{name}` sent a second header"))),
                }
            }
            let bytes = bytes.finish().map_err(bad)?;
            let binding = ContributionBinding {
                request_id: request.request_id.clone(),
                lender: request.lender.clone(),
                job_id: request.job_id.clone(),
                subject: self.commitment.clone(),
                model_id: request.model_id.clone(),
                key_id: request.key_id.clone(),
                party: name.to_string(),
                consent: header.consent.clone(),
            };
            let signed = verify::check_signature(self.consortium.as_deref(), name, &binding, &header, &bytes)?;
            let len = bytes.len() as u64;
            let raw = bytes.clone();
            let (contribution, verify_us) =
                verify::decode(self.crs.as_ref(), name, bytes, binding, plan, index, public).await?;
            Ok((contribution, signed, header.encrypt_us, verify_us, len, raw))
        }
        .await;
        match received {
            Ok((contribution, signed, encrypt_us, verify_us, bytes, raw)) => Ok(Received {
                contribution,
                signed,
                encrypt_us,
                verify_us,
                bytes,
                raw,
                address,
                channel: Some(channel),
            }),
            Err(e) => Err((Some(address), e)),
        }
    }
}
