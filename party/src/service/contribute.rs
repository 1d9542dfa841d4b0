//! Contributions: the rules a party applies before it encrypts anything,
//! and the encryption itself. No protobuf type reaches this module; the
//! adapter converts a `ContributeRequest` first (`super::wire`).

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use jointscore_circuits::fhe::{Contribution, PublicKey};
use jointscore_circuits::{Plan, PlanKind, Record};
use jointscore_identity::{ContributionBinding, LenderRequest, ciphertext_sha256};
use jointscore_monitor::{Compiled, Day};

use crate::consent::Purpose;
use crate::log::{Claim, ClaimLimits, ContributionRecord, LogKind};

use super::{PartyService, lock};
use crate::error::{PartyError, Result};

/// A contribution request from the coordinator, its fields checked for
/// form. Everything but `job_id` and `model_toml` is the lender's signed
/// request, forwarded unchanged.
#[derive(Clone, Debug)]
pub(crate) struct ContributionRequest {
    /// The coordinator's job.
    pub(crate) job_id: String,
    /// The model file sent with the request; must be the request's model.
    pub(crate) model_toml: String,
    /// The lender's request, as it signed it.
    pub(crate) signed: LenderRequest,
    /// The lender's signature over it (empty without an identity).
    pub(crate) signature: Vec<u8>,
}

impl ContributionRequest {
    /// The plan kind the lender asked for.
    fn plan(&self) -> Result<PlanKind> {
        PlanKind::parse(&self.signed.plan)
            .ok_or_else(|| PartyError::BadRequest(format!("unknown plan kind `{}`", self.signed.plan)))
    }
}

/// What is kept with an answer's bytes, to send the same answer again.
#[derive(serde::Serialize, serde::Deserialize)]
struct KeptHeader {
    party: String,
    blocks: u32,
    encrypt_us: u64,
    signature: String,
    signed_ms: u64,
    consent: String,
}

/// An encrypted, signed contribution.
pub(crate) struct Contributed {
    /// This party's name, as the model spells it.
    pub(crate) party: String,
    /// The serialized ciphertext list.
    pub(crate) bytes: Vec<u8>,
    /// How many ciphertext blocks it holds.
    pub(crate) blocks: u32,
    /// Time spent computing and encrypting, in microseconds.
    pub(crate) encrypt_us: u64,
    /// The party's signature over the envelope (empty without identity).
    pub(crate) signature: Vec<u8>,
    /// When it was signed, in milliseconds since the epoch.
    pub(crate) signed_ms: u64,
    /// The consent record relied on (empty where none are kept).
    pub(crate) consent: String,
}

/// How long a party waits for its own answer to the same job, still
/// being made, before telling the coordinator to ask again later.
const PENDING_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// Distinct thresholds on one window (or ratio) at which a party refuses a
/// monitor spec, as `jointscore monitor lint` does by default.
const MONITOR_LINT_LIMIT: usize = 3;

/// What a party holds for one request: the current record (a decision) or
/// the history up to the day asked (monitoring).
enum Held {
    Record(serde_json::Value),
    History(Vec<jointscore_monitor::Snapshot>, Day),
}

/// A monitoring request's subject, `subject@YYYY-MM-DD`: the loan's
/// subject and the day the spec's windows end (the last `@` splits them,
/// so subject ids may hold `@`).
pub(crate) fn monitored(subject: &str) -> Result<(&str, Day)> {
    let bad = || {
        PartyError::BadRequest(format!(
            "a monitoring request names `subject@YYYY-MM-DD`, the day its windows end; got `{subject}`"
        ))
    };
    let (id, day) = subject.rsplit_once('@').ok_or_else(bad)?;
    if id.is_empty() {
        return Err(bad());
    }
    Ok((id, Day::parse(day).map_err(|_| bad())?))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl PartyService {
    /// The plan for a model approved for `lender` under `kind`, parsed
    /// once per model id and kind.
    fn plan(&self, model_id: &str, toml: &str, kind: PlanKind, lender: &str) -> Result<Arc<Compiled>> {
        self.config.approves(model_id, lender, kind).map_err(|scope| PartyError::NotApproved {
            party: self.name.clone(),
            model_id: model_id.into(),
            scope,
        })?;
        let cache_key = (model_id.to_string(), kind);
        if let Some(plan) = lock(&self.plans)?.get(&cache_key) {
            return Ok(plan.clone());
        }
        let compiled = Compiled::new(toml, model_id, kind)?;
        // A model whose revealed output is one party's feature in disguise
        // would hand that feature to the lender: refused unless the
        // operator named it. (A monitor spec reveals one bit per alert; its
        // thresholds are the operator's to read before approving the id,
        // with `jointscore monitor lint`.)
        if let Compiled::Model(plan) = &compiled
            && !self.lint_override.contains(model_id)
        {
            let lint = jointscore_circuits::lint::lint(plan.model());
            if let Some((output, r)) = lint.outputs.iter().find_map(|o| o.revealing.as_ref().map(|r| (o.output, r))) {
                return Err(PartyError::LintFailed {
                    party: self.name.clone(),
                    model_id: model_id.into(),
                    detail: format!("its {} shows {}'s `{}` ({})", output.name(), r.party, r.feature, r.detail),
                });
            }
        }
        // A monitor spec whose alerts would read one party's window (or a
        // ratio) through many thresholds is refused likewise.
        if let Compiled::Monitor(plan) = &compiled
            && !self.lint_override.contains(model_id)
            && let Some((party, window, thresholds)) = plan.spec().lint(MONITOR_LINT_LIMIT).into_iter().next()
        {
            return Err(PartyError::LintFailed {
                party: self.name.clone(),
                model_id: model_id.into(),
                detail: format!(
                    "its alerts compare {party}'s `{window}` with {} thresholds, reading it almost exactly",
                    thresholds.len()
                ),
            });
        }
        let plan = Arc::new(compiled);
        lock(&self.plans)?.insert(cache_key, plan.clone());
        Ok(plan)
    }

    /// Refuses to contribute when it is named absent, when too few parties
    /// would contribute (a decision on this party's data with the others
    /// named absent would be a function of this party's data alone), and
    /// when a party whose features a revealed output depends on is named
    /// absent (the lender could difference out one party's contribution by
    /// asking with and without it), unless the operator allows that party
    /// in `allow_absent`.
    fn check_present(&self, compiled: &Compiled, absent: &[String]) -> Result<()> {
        if absent.contains(&self.name) {
            return Err(PartyError::BadRequest(format!("party `{}` is asked while named absent", self.name)));
        }
        let parties = compiled.party_names();
        let present = parties.iter().filter(|p| !absent.contains(p)).count();
        let required = self.min_present_parties.min(parties.len());
        if present < required {
            return Err(PartyError::TooFewPresent { party: self.name.clone(), present, required });
        }
        // A monitor spec's alerts fail where a party they read is absent:
        // naming a party absent never raises an alert about the others.
        let Compiled::Model(plan) = compiled else { return Ok(()) };
        if absent.is_empty() {
            return Ok(());
        }
        let needed = self.output_parties(plan)?;
        if let Some(missing) = needed.iter().find(|p| absent.contains(p) && !self.config.allow_absent.contains(p)) {
            return Err(PartyError::BadRequest(format!(
                "party `{}` contributes only when every party the revealed outputs depend on is present; the \
                 request names `{missing}` absent (its operator may list it in `allow_absent`)",
                self.name
            )));
        }
        Ok(())
    }

    /// The parties a model's revealed outputs depend on (from its lint),
    /// worked out once per model.
    fn output_parties(&self, plan: &Plan) -> Result<Arc<Vec<String>>> {
        let id = plan.model().id();
        if let Some(parties) = lock(&self.output_parties)?.get(id) {
            return Ok(parties.clone());
        }
        let lint = jointscore_circuits::lint::lint(plan.model());
        let mut parties: Vec<String> = lint.outputs.iter().flat_map(|o| o.parties.iter().cloned()).collect();
        parties.sort();
        parties.dedup();
        let parties = Arc::new(parties);
        lock(&self.output_parties)?.insert(id.to_string(), parties.clone());
        Ok(parties)
    }

    /// The lender's request is its own: with a consortium, signed by a
    /// current lender; in any case signed within `request_max_age_s` of
    /// now (either way, for clock skew).
    fn check_signed(&self, request: &ContributionRequest) -> Result<()> {
        let signed = &request.signed;
        let refuse = |reason: String| PartyError::Unauthenticated {
            party: self.name.clone(),
            request_id: signed.request_id.clone(),
            reason,
        };
        if let Some(consortium) = &self.consortium {
            if request.signature.is_empty() || signed.lender.is_empty() {
                return Err(refuse("the lender did not sign it".into()));
            }
            signed.verify(consortium, &request.signature, now_ms() / 1000).map_err(|e| refuse(e.to_string()))?;
        }
        let max_age_ms = self.config.request_max_age_s * 1000;
        let skew = now_ms().abs_diff(signed.time_ms);
        if skew > max_age_ms {
            return Err(PartyError::Replayed {
                party: self.name.clone(),
                request_id: signed.request_id.clone(),
                reason: format!(
                    "it was signed {} s from now, outside the {} s this party accepts (a stale or replayed request, \
                     or a clock that is off)",
                    skew / 1000,
                    self.config.request_max_age_s
                ),
            });
        }
        Ok(())
    }

    /// Claims the request in the store: refused if answered before for
    /// another job (a replay) or if the lender has asked about this subject
    /// too often. The same job asking again gets the answer already made,
    /// unchanged (`Some`).
    fn claim(&self, signed: &LenderRequest, job_id: &str) -> Result<Option<Contributed>> {
        let window_ms = self.config.subject_window_s.saturating_mul(1000);
        let limits = ClaimLimits {
            per_subject: self.config.subject_decision_limit,
            window_ms,
            keep_ms: self.config.request_max_age_s.saturating_mul(1000),
        };
        match self.store.claim_request(&signed.lender, &signed.request_id, job_id, &signed.subject, &limits)? {
            Claim::New => Ok(None),
            Claim::Resend(bytes, header) => {
                let kept: KeptHeader =
                    serde_json::from_str(&header).map_err(|e| PartyError::Store(format!("a kept answer: {e}")))?;
                Ok(Some(Contributed {
                    party: kept.party,
                    bytes,
                    blocks: kept.blocks,
                    encrypt_us: kept.encrypt_us,
                    signature: hex::decode(&kept.signature).unwrap_or_default(),
                    signed_ms: kept.signed_ms,
                    consent: kept.consent,
                }))
            }
            Claim::Pending => Err(PartyError::Busy(format!(
                "request {} of `{}` is being answered for this job; ask again shortly",
                signed.request_id, signed.lender
            ))),
            Claim::Replayed(reason) => {
                Err(PartyError::Replayed { party: self.name.clone(), request_id: signed.request_id.clone(), reason })
            }
            Claim::Limited => Err(PartyError::RateLimited {
                party: self.name.clone(),
                lender: signed.lender.clone(),
                limit: self.config.subject_decision_limit,
                window_s: self.config.subject_window_s,
            }),
        }
    }

    /// Computes, encrypts and signs this party's contribution to one
    /// request, and logs it.
    ///
    /// Refused before any record is read: a request not signed by a
    /// current lender (with a consortium), stale or answered before; a
    /// model this party has not approved for that lender and plan kind; a
    /// model file that is not the approved id; a model whose lint fails
    /// (unless overridden by name); a model without this party; a request
    /// naming this party absent, leaving too few parties present, or
    /// naming absent a party the outputs depend on; a key set the
    /// coordinator cannot show, or one the requesting lender did not sign;
    /// with `require_consent`, a subject without a valid consent to the
    /// lender (`PERMISSION_DENIED`, "no consent"); too many decisions about
    /// the subject. An unknown subject is `NOT_FOUND`. Every refusal is
    /// logged in full; the lender is told only its kind (see `coarse`).
    pub(crate) async fn contribution(&self, request: ContributionRequest) -> Result<Contributed> {
        let outcome = self.try_contribution(request.clone()).await;
        if let Err(e) = &outcome {
            let mut body = serde_json::json!({
                "request_id": request.signed.request_id,
                "lender": request.signed.lender,
                "job_id": request.job_id,
                "subject": request.signed.subject,
                "model_id": request.signed.model_id,
                "reason": e.to_string(),
            });
            // What the lender is not told, in the party's own log.
            if let PartyError::NoConsent { detail, .. } = e {
                body["detail"] = detail.clone().into();
            }
            if let Err(log) = self.store.log(LogKind::Refusal, body) {
                tracing::warn!(party = %self.name, error = %log, "could not log a refusal");
            }
        }
        outcome
    }

    async fn try_contribution(&self, request: ContributionRequest) -> Result<Contributed> {
        self.check_signed(&request)?;
        let signed = request.signed.clone();
        let kind = request.plan()?;
        let plan = self.plan(&signed.model_id, &request.model_toml, kind, &signed.lender)?;
        let party = plan.party_names().iter().position(|p| *p == self.name).ok_or_else(|| {
            PartyError::BadRequest(format!("model {} has no party named `{}`", signed.model_id, self.name))
        })?;
        // A monitoring request names the loan as of a day: `subject@day`.
        let (subject, day) = match kind {
            PlanKind::Monitor => {
                let (subject, day) = monitored(&signed.subject)?;
                (subject, Some(day))
            }
            PlanKind::Pushdown | PlanKind::CoordinatorSide => (signed.subject.as_str(), None),
        };
        self.check_present(&plan, &signed.canonical_absent())?;
        let key: PublicKey = self.public_key(&signed.key_id, &signed.lender).await?;
        // Before the record is read: a lender without consent does not
        // learn whether this party holds the subject.
        let consent = self.consent_for(&signed, subject, day.is_some())?;
        let held = match day {
            None => self.store.get(subject)?.map(Held::Record),
            Some(day) => {
                // The windows end on `day`: nothing imported later is read.
                let history = self.store.history(subject, Some(day))?;
                (!history.is_empty()).then_some(Held::History(history, day))
            }
        };
        let Some(held) = held else {
            // Whether a subject is held is what alignment's budget guards:
            // asking decisions about ids a party does not hold spends it too.
            self.charge_unknown_subject(&signed)?;
            return Err(PartyError::UnknownSubject { subject: subject.to_string(), party: self.name.clone() });
        };
        // Last: a request refused above may be sent again once fixed.
        if let Some(again) = self.claim_or_wait(&signed, &request.job_id).await? {
            tracing::info!(party = %self.name, request = %signed.request_id, "the same job asked again: the answer made is sent again");
            return Ok(again);
        }
        let (lender, request_id) = (signed.lender.clone(), signed.request_id.clone());
        let identity = self.identity.clone();
        let crs = self.crs.clone();
        let store = self.store.clone();
        let request_signature = hex::encode(&request.signature);
        // Encryption is CPU work: keep it off the async workers.
        let made = tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            let digits = match (&*plan, held) {
                (Compiled::Model(plan), Held::Record(record)) => {
                    plan.contribution(party, &Record::for_party(plan.model(), party, &record)?)?
                }
                // A history the windows cannot read (text where a number
                // belongs): the lender learns that much, the log the rest.
                (Compiled::Monitor(plan), Held::History(history, day)) => {
                    plan.contribution(party, &history, day).map_err(|e| {
                        PartyError::Circuits(jointscore_circuits::Error::Input {
                            feature: "a monitor window".into(),
                            message: e.to_string(),
                        })
                    })?
                }
                _ => return Err(PartyError::BadRequest("a record where a history is needed, or the reverse".into())),
            };
            let name = plan.party_names()[party].clone();
            let binding = ContributionBinding::answering(&signed, &request.job_id, &name, &consent);
            let contribution = match &crs {
                Some(crs) => {
                    Contribution::encrypt_proven(&*plan, party, &digits, &key, crs, &binding.proof_metadata())?
                }
                None => Contribution::encrypt(&*plan, party, &digits, &key)?,
            };
            let bytes = contribution.to_bytes()?;
            let signed_ms = now_ms();
            let envelope = binding.envelope(ciphertext_sha256(&bytes), signed_ms);
            let signature = identity.map_or_else(Vec::new, |key| envelope.sign(&key).to_vec());
            // Logged before it is sent (below): the party's record never
            // lacks a contribution that left it.
            let logged =
                ContributionRecord { request: signed, request_signature, envelope, signature: hex::encode(&signature) };
            let body = serde_json::to_value(&logged).map_err(|e| PartyError::Store(e.to_string()))?;
            let kept = KeptHeader {
                party: name.clone(),
                blocks: u32::try_from(contribution.len()).unwrap_or(u32::MAX),
                encrypt_us: u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX),
                signature: hex::encode(&signature),
                signed_ms,
                consent: consent.clone(),
            };
            let header = serde_json::to_string(&kept).map_err(|e| PartyError::Store(e.to_string()))?;
            // Logged and kept in one transaction, before it is sent.
            store.log_and_keep(body, &logged.request.lender, &logged.request.request_id, &bytes, &header)?;
            Ok(Contributed {
                party: name,
                blocks: u32::try_from(contribution.len()).unwrap_or(u32::MAX),
                encrypt_us: u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX),
                bytes,
                signature,
                signed_ms,
                consent,
            })
        })
        .await
        .map_err(|e| PartyError::Transport(format!("encryption task failed: {e}")))
        .and_then(|made| made);
        if made.is_err() {
            // Nothing was sent: the request may be answered once the cause
            // is fixed.
            self.store.release_request(&lender, &request_id)?;
        }
        made
    }

    /// [`PartyService::claim`], waiting while the same job's answer is
    /// still being made (a coordinator restarted mid-collection asks again
    /// at once): up to [`PENDING_WAIT`], then `Busy`.
    async fn claim_or_wait(&self, signed: &LenderRequest, job_id: &str) -> Result<Option<Contributed>> {
        let deadline = Instant::now() + PENDING_WAIT;
        loop {
            match self.claim(signed, job_id) {
                Err(PartyError::Busy(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }

    /// Counts a decision about a subject this party does not hold against
    /// the lender's daily alignment budget (`psi_daily_budget`), and logs
    /// it: otherwise decisions would be an unbounded membership probe.
    fn charge_unknown_subject(&self, signed: &LenderRequest) -> Result<()> {
        let now = now_ms();
        let day = crate::psi::store::utc_day(now);
        let body = serde_json::json!({
            "event": "unknown subject",
            "requester": signed.lender,
            "request_id": signed.request_id,
            "subject": signed.subject,
        });
        let counted = self.store.count_psi_query(&signed.lender, day, 1, self.config.psi_daily_budget, body)?;
        if counted.is_none() {
            return Err(PartyError::RateLimited {
                party: self.name.clone(),
                lender: signed.lender.clone(),
                limit: u32::try_from(self.config.psi_daily_budget).unwrap_or(u32::MAX),
                window_s: 86_400,
            });
        }
        Ok(())
    }

    /// The id of the consent this request relies on: with
    /// `require_consent`, one of the subject to the requesting lender for
    /// `decision`, valid when the lender signed the request and not revoked,
    /// or `NoConsent`; without, none (empty).
    fn consent_for(&self, signed: &LenderRequest, subject: &str, monitoring: bool) -> Result<String> {
        if !self.config.require_consent {
            return Ok(String::new());
        }
        let purpose = if monitoring { Purpose::Monitoring } else { Purpose::Decision };
        // Valid when the lender signed and now: the freshness window must
        // not stretch a consent's dates.
        let at_now = self.store.consent(subject, &signed.lender, purpose, now_ms())?;
        let at_signing = self.store.consent(subject, &signed.lender, purpose, signed.time_ms)?;
        at_now.filter(|_| at_signing.is_some()).ok_or_else(|| PartyError::NoConsent {
            party: self.name.clone(),
            detail: format!(
                "no `{}` consent of subject `{}` for lender `{}` valid both at {} ms (the request's signed time) \
                     and now, and not revoked",
                purpose.name(),
                subject,
                signed.lender,
                signed.time_ms
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use jointscore_circuits::{CROSS_BORDER_SELLER, Model, PlanKind};

    use super::*;
    use crate::config::PartyConfig;
    use crate::store::RecordStore;

    /// The shipped model with a credit line that shows `gmv_12m_k` unit by
    /// unit (divisor 1, granularity 1).
    fn leaky() -> (String, String) {
        let toml = CROSS_BORDER_SELLER
            .replace("formula = \"band_multiplier * gmv_12m_k / 12\"", "formula = \"band_multiplier * gmv_12m_k / 1\"")
            .replace("granularity = 5", "granularity = 1");
        let id = Model::from_toml(&toml).expect("valid model").id().to_string();
        (toml, id)
    }

    fn service(extra: &str) -> PartyService {
        let (_, id) = leaky();
        let text = format!(
            "name = \"platform\"\ncoordinator = \"http://127.0.0.1:7100\"\nstore = \"p.sqlite\"\napproved_models = \
             [\"{id}\"]\n{extra}"
        );
        let config = PartyConfig::from_toml(&text).expect("config");
        PartyService::new(&config, Arc::new(RecordStore::in_memory().expect("store")))
    }

    #[test]
    fn a_monitor_spec_probing_a_window_is_refused_unless_overridden_and_needs_its_own_approval() {
        let mut toml = jointscore_monitor::SELLER_WATCH.to_string();
        for (k, t) in [1000, 2000, 4000].iter().enumerate() {
            toml.push_str(&format!(
                "\n[[alerts]]\nname = \"probe{k}\"\nseverity = \"info\"\nconditions = [{{ left = \"gmv_30d\", op = \"<\", value = {t} }}]\n"
            ));
        }
        let id = jointscore_monitor::Spec::from_toml(&toml).expect("spec").id();
        // Approved as a model, not as a monitor spec: not approved.
        let err =
            service(&format!("approved_models = [\"{id}\"]\n").replace("approved_models = [", "lint_override = ["))
                .plan(&id, &toml, PlanKind::Monitor, "lender")
                .expect_err("not approved");
        assert!(matches!(err, PartyError::NotApproved { .. }), "{err}");
        let approved = format!("approved_monitors = [\"{id}\"]\n");
        let err = service(&approved).plan(&id, &toml, PlanKind::Monitor, "lender").expect_err("lint fails");
        assert!(matches!(err, PartyError::LintFailed { .. }), "{err}");
        assert!(err.to_string().contains("`gmv_30d` with 3 thresholds"), "{err}");
        let overridden = format!("{approved}lint_override = [\"{id}\"]\n");
        service(&overridden).plan(&id, &toml, PlanKind::Monitor, "lender").expect("the operator named it");
        // A monitor approval does not approve a decision under the same id.
        assert!(service(&approved).config.approves(&id, "lender", PlanKind::Pushdown).is_err());
    }

    #[test]
    fn an_approved_model_whose_lint_fails_is_refused_unless_overridden_by_name() {
        let (toml, id) = leaky();
        let err = service("").plan(&id, &toml, PlanKind::Pushdown, "lender").expect_err("lint fails");
        assert!(matches!(err, PartyError::LintFailed { .. }), "{err}");
        let message = err.to_string();
        assert_eq!(tonic::Status::from(err).code(), tonic::Code::PermissionDenied);
        assert!(message.contains("credit_line") && message.contains("gmv_12m_k"), "{message}");
        assert!(message.contains("lint_override"), "{message}");

        let overridden = service(&format!("lint_override = [\"{id}\"]\n"));
        overridden.plan(&id, &toml, PlanKind::Pushdown, "lender").expect("the operator named it");
    }

    #[test]
    fn a_lender_may_not_name_absent_a_party_the_outputs_depend_on_unless_the_operator_allows_it() {
        let plan = Compiled::Model(Plan::new(&Model::cross_border_seller(), PlanKind::Pushdown).expect("plan"));
        let absent = vec!["bank".to_string()];
        let err = service("").check_present(&plan, &absent).expect_err("bank's features decide the outputs");
        let message = err.to_string();
        assert!(message.contains("`bank` absent") && message.contains("allow_absent"), "{message}");
        assert_eq!(tonic::Status::from(err).code(), tonic::Code::InvalidArgument);
        service("allow_absent = [\"bank\"]\n").check_present(&plan, &absent).expect("the operator allows it");
        // Never this party itself, whatever the operator allows.
        let me = vec!["platform".to_string()];
        assert!(service("allow_absent = [\"platform\"]\n").check_present(&plan, &me).is_err());
    }

    #[test]
    fn the_shipped_model_passes_the_lint_at_the_party() {
        let model = Model::cross_border_seller();
        let text = format!(
            "name = \"platform\"\ncoordinator = \"http://127.0.0.1:7100\"\nstore = \"p.sqlite\"\napproved_models = \
             [\"{}\"]\n",
            model.id()
        );
        let config = PartyConfig::from_toml(&text).expect("config");
        let service = PartyService::new(&config, Arc::new(RecordStore::in_memory().expect("store")));
        service.plan(model.id(), CROSS_BORDER_SELLER, PlanKind::Pushdown, "lender").expect("no lint finding");
    }
}

#[cfg(test)]
mod consent_tests {
    use jointscore_identity::LenderRequest;

    use super::*;
    use crate::config::PartyConfig;
    use crate::store::RecordStore;

    fn service(require_consent: bool, consents: &str) -> PartyService {
        let config =
            PartyConfig { require_consent, ..PartyConfig::new("bank", "http://127.0.0.1:7100", "unused".into()) };
        let store = RecordStore::in_memory().expect("store");
        store
            .import_consents_csv(
                format!("subject,lender,purpose,valid_from,valid_until,revoked\n{consents}").as_bytes(),
            )
            .expect("consents");
        PartyService::new(&config, Arc::new(store))
    }

    fn request(subject: &str, lender: &str) -> LenderRequest {
        // 2025-06-01T00:00:00Z.
        LenderRequest {
            subject: subject.into(),
            lender: lender.into(),
            time_ms: 1_748_736_000_000,
            ..LenderRequest::default()
        }
    }

    #[test]
    fn without_a_valid_consent_the_party_refuses_saying_only_no_consent() {
        let service = service(
            true,
            "s1,lender,decision,2025-01-01,,\ns2,lender,monitoring,2025-01-01,,\ns3,lender,decision,2024-01-01,\
             2024-12-31,\ns4,lender,decision,2025-01-01,,\ns4,lender,decision,2025-01-01,,2025-03-01\n",
        );
        let id = service.consent_for(&request("s1", "lender"), "s1", false).expect("consented");
        assert_eq!(id, service.store.consents(Some("s1")).expect("list")[0].id);

        for (subject, lender) in
            [("s1", "other"), ("s2", "lender"), ("s3", "lender"), ("s4", "lender"), ("s5", "lender")]
        {
            let err = service.consent_for(&request(subject, lender), subject, false).expect_err(subject);
            let PartyError::NoConsent { detail, .. } = &err else { panic!("{err}") };
            assert!(detail.contains(&format!("subject `{subject}`")) && detail.contains(lender), "{detail}");
            assert_eq!(err.to_string(), "party `bank`: no consent");
            let status = super::super::coarse("bank", err);
            assert_eq!(status.code(), tonic::Code::PermissionDenied);
            assert_eq!(status.message(), "party `bank`: no consent");
        }
    }

    #[test]
    fn a_party_that_does_not_require_consent_relies_on_none() {
        let service = service(false, "s1,lender,decision,2025-01-01,,\n");
        assert_eq!(service.consent_for(&request("s1", "lender"), "s1", false).expect("no check"), "");
        assert_eq!(service.consent_for(&request("s9", "anyone"), "s9", false).expect("no check"), "");
    }
}
