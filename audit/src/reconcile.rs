//! Holding the coordinator's ledger against a party's own record
//! (`jointscore audit reconcile`).
//!
//! A party appends every contribution it makes to its own hash-chained log:
//! the envelope it signed and its signature. The ledger should hold, for
//! each, a contribution entry for the same job and party whose attestation
//! is that very envelope and signature. [`reconcile`] pairs the two and says,
//! per contribution, whether the ledger has it unchanged ([`Status::Ok`]),
//! left it out ([`Status::Missing`]) or holds another one in its place
//! ([`Status::Rewritten`]); and which ledger contributions in the party's
//! name the party never logged ([`Status::NotInPartyLog`]).
//!
//! The party's log is the party's business (this crate does not read it):
//! the caller passes its envelopes, signatures and whether its chain
//! verified, as plain values. Nothing here checks signatures; verify the
//! ledger with [`verify_chain`](crate::verify_chain) for that.

use jointscore_identity::{CONTRIBUTION_DOMAIN, ContributionEnvelope};
use serde::{Deserialize, Serialize};

use crate::entry::{Entry, EntryKind};

/// A contribution as the party logged it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartyContribution {
    /// Its entry in the party's log.
    pub seq: u64,
    /// The envelope the party signed.
    pub envelope: ContributionEnvelope,
    /// The party's signature over it, hex (empty where it signs nothing).
    pub signature: String,
}

/// Whether the party's own log verified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum PartyLogCheck {
    /// The chain holds: `entries` entries, the last with hash `head`.
    Verified {
        /// Entries in the log.
        entries: u64,
        /// The last entry's hash (64 zeros for an empty log).
        head: String,
    },
    /// The chain breaks at entry `seq`: what follows cannot be relied on.
    Broken {
        /// The first entry at fault.
        seq: u64,
        /// What is wrong with it.
        reason: String,
    },
}

/// What a party brings to a reconciliation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartyRecord {
    /// The party's name in the consortium.
    pub party: String,
    /// Whether its log verified.
    pub log: PartyLogCheck,
    /// Every contribution its log holds, in log order.
    pub contributions: Vec<PartyContribution>,
}

/// How one contribution reconciles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The ledger holds the contribution exactly as the party signed it.
    Ok,
    /// The party contributed, and the ledger records the job's result (or
    /// nothing of the job at all) without the contribution: the coordinator
    /// left it out.
    Missing,
    /// The ledger holds a contribution for this job in the party's name, but
    /// not the one the party signed: another envelope, another signature, or
    /// entry fields that differ from the envelope.
    Rewritten,
    /// The ledger holds a contribution in the party's name that the party's
    /// log does not.
    NotInPartyLog,
    /// The ledger records the job as refused: the coordinator writes no
    /// contribution entries for a job that failed (another party refused,
    /// a deadline passed), so none is expected. Not a discrepancy.
    Unused,
    /// The ledger records the request but neither a result nor a refusal:
    /// the job has not ended yet. Not a discrepancy (run again later).
    Pending,
}

impl Status {
    /// Whether this status means the ledger and the party's log disagree.
    pub fn is_discrepancy(self) -> bool {
        matches!(self, Status::Missing | Status::Rewritten | Status::NotInPartyLog)
    }

    /// Its name, as the JSON form spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Missing => "missing",
            Status::Rewritten => "rewritten",
            Status::NotInPartyLog => "not_in_party_log",
            Status::Unused => "unused",
            Status::Pending => "pending",
        }
    }
}

/// One finding of a reconciliation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// What was found.
    pub status: Status,
    /// The coordinator's job.
    pub job_id: String,
    /// The lender's request id.
    pub request_id: String,
    /// The contribution's entry in the party's log (none for
    /// [`Status::NotInPartyLog`]).
    pub party_seq: Option<u64>,
    /// The ledger entries concerned: the matching contribution, the
    /// differing ones, or the job's end.
    pub ledger_seqs: Vec<u64>,
    /// In words: what differs, or what the ledger says of the job.
    pub detail: String,
}

/// The outcome of [`reconcile`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconciliation {
    /// The party.
    pub party: String,
    /// Whether its own log verified.
    pub party_log: PartyLogCheck,
    /// One finding per contribution in the party's log, in log order, then
    /// one per ledger contribution the party did not log, in ledger order.
    pub findings: Vec<Finding>,
}

impl Reconciliation {
    /// Whether everything reconciles: the party's log verifies and no
    /// finding is a discrepancy.
    pub fn reconciled(&self) -> bool {
        matches!(self.party_log, PartyLogCheck::Verified { .. })
            && !self.findings.iter().any(|f| f.status.is_discrepancy())
    }

    /// How many findings have `status`.
    pub fn count(&self, status: Status) -> usize {
        self.findings.iter().filter(|f| f.status == status).count()
    }
}

/// Holds the ledger's contribution entries against the party's record.
///
/// For each contribution the party logged, in order: the first ledger
/// contribution entry for the same job in the party's name that matches it
/// exactly — the attestation by the party carries the envelope's bytes, under
/// the contribution domain, with the party's signature, and the entry's own
/// fields (request, lender, subject commitment, model, key set, consent,
/// digest, parties) are the envelope's — is `Ok` and used up. A contribution
/// left without a match is `Rewritten` when the ledger holds other
/// contribution entries for that job in the party's name (the detail says
/// what differs), else `Missing` — unless the ledger records the job as
/// refused without a result (`Unused`) or has not recorded its end
/// (`Pending`). Ledger contributions in the party's name (naming it among
/// their parties, or carrying its attestation) left over are
/// `NotInPartyLog`.
pub fn reconcile(party: &PartyRecord, ledger: &[Entry]) -> Reconciliation {
    let name = party.party.as_str();
    let mine: Vec<&Entry> = ledger
        .iter()
        .filter(|e| {
            e.record.kind == EntryKind::Contribution
                && (e.record.parties.iter().any(|p| p == name) || e.record.attestations.iter().any(|a| a.node == name))
        })
        .collect();
    let mut used = vec![false; mine.len()];
    let mut matched: Vec<Option<usize>> = vec![None; party.contributions.len()];
    for (c, slot) in party.contributions.iter().zip(&mut matched) {
        let found = mine
            .iter()
            .enumerate()
            .find(|(i, e)| !used[*i] && same_job(e, &c.envelope.job_id) && differences(c, e).is_empty());
        if let Some((i, _)) = found {
            used[i] = true;
            *slot = Some(i);
        }
    }
    let mut findings = Vec::new();
    for (c, slot) in party.contributions.iter().zip(&matched) {
        let envelope = &c.envelope;
        let finding = |status, ledger_seqs, detail| Finding {
            status,
            job_id: envelope.job_id.clone(),
            request_id: envelope.request_id.clone(),
            party_seq: Some(c.seq),
            ledger_seqs,
            detail,
        };
        if let Some(i) = slot {
            findings.push(finding(Status::Ok, vec![mine[*i].seq], String::new()));
            continue;
        }
        let others: Vec<usize> = (0..mine.len()).filter(|&i| !used[i] && same_job(mine[i], &envelope.job_id)).collect();
        if let Some(&first) = others.first() {
            let detail = differences(c, mine[first]).join("; ");
            for &i in &others {
                used[i] = true;
            }
            findings.push(finding(Status::Rewritten, others.iter().map(|&i| mine[i].seq).collect(), detail));
            continue;
        }
        let (status, seqs, detail) = job_end(ledger, envelope);
        findings.push(finding(status, seqs, detail));
    }
    for (i, entry) in mine.iter().enumerate() {
        if used[i] {
            continue;
        }
        let job_id = entry.record.job_id.clone().unwrap_or_default();
        // A contribution logged for this job matched another entry (else
        // this one would be reported as its rewrite).
        let logged = party.contributions.iter().zip(&matched).find(|(c, _)| c.envelope.job_id == job_id);
        let detail = match logged {
            Some((c, Some(m))) => format!(
                "a second contribution to job {job_id} in `{name}`'s name: the party logged one (its entry {}), \
                 which ledger entry {} holds",
                c.seq, mine[*m].seq
            ),
            _ => format!("the ledger holds a contribution by `{name}` to job {job_id} that the party never logged"),
        };
        findings.push(Finding {
            status: Status::NotInPartyLog,
            job_id,
            request_id: entry.record.request_id.clone().unwrap_or_default(),
            party_seq: None,
            ledger_seqs: vec![entry.seq],
            detail,
        });
    }
    Reconciliation { party: party.party.clone(), party_log: party.log.clone(), findings }
}

fn same_job(entry: &Entry, job_id: &str) -> bool {
    entry.record.job_id.as_deref() == Some(job_id)
}

/// What the ledger says of the end of the job a contribution without any
/// ledger entry answered.
fn job_end(ledger: &[Entry], envelope: &ContributionEnvelope) -> (Status, Vec<u64>, String) {
    let job = &envelope.job_id;
    let of_job = |kind: EntryKind| ledger.iter().filter(move |e| e.record.kind == kind && same_job(e, job));
    if let Some(result) = of_job(EntryKind::Result).next() {
        let named = if result.record.parties.contains(&envelope.party) {
            format!(", which names `{}` among its contributors", envelope.party)
        } else {
            String::new()
        };
        return (
            Status::Missing,
            vec![result.seq],
            format!("the ledger records the job's result (entry {}{named}) but not this contribution", result.seq),
        );
    }
    if let Some(refusal) = of_job(EntryKind::Refusal).next() {
        return (
            Status::Unused,
            vec![refusal.seq],
            format!("the ledger records the job as refused (entry {}): {}", refusal.seq, refusal.record.detail),
        );
    }
    if let Some(request) = of_job(EntryKind::DecisionRequest).next() {
        return (
            Status::Pending,
            vec![request.seq],
            format!("the ledger records the request (entry {}) but not yet the job's end", request.seq),
        );
    }
    (Status::Missing, Vec::new(), format!("the ledger holds no entry for job {job} at all"))
}

/// How a ledger contribution entry differs from what the party logged;
/// empty when it is exactly the party's.
fn differences(c: &PartyContribution, entry: &Entry) -> Vec<String> {
    let (e, r) = (&c.envelope, &entry.record);
    let mut out = Vec::new();
    let mut field = |name: &str, ours: &str, theirs: Option<&str>| {
        let theirs = theirs.unwrap_or_default();
        if ours != theirs {
            out.push(format!(
                "entry {}: its {name} is {}, the party's envelope has {}",
                entry.seq,
                show(theirs),
                show(ours)
            ));
        }
    };
    field("request id", &e.request_id, r.request_id.as_deref());
    field("lender", &e.lender, r.lender.as_deref());
    field("subject commitment", &e.subject, r.subject.as_deref());
    field("model id", &e.model_id, r.model_id.as_deref());
    field("key id", &e.key_id, r.key_id.as_deref());
    field("consent", &e.consent, r.consent.as_deref());
    field("digest", &e.ciphertext_sha256, r.digest.as_deref());
    if r.parties != [e.party.clone()] {
        out.push(format!("entry {}: it names parties [{}], not `{}` alone", entry.seq, r.parties.join(", "), e.party));
    }
    let Some(attestation) = r.attestations.iter().find(|a| a.node == e.party) else {
        out.push(format!("entry {}: it carries no attestation by `{}`", entry.seq, e.party));
        return out;
    };
    if attestation.domain != CONTRIBUTION_DOMAIN {
        out.push(format!(
            "entry {}: the attestation is under `{}`, not `{CONTRIBUTION_DOMAIN}`",
            entry.seq, attestation.domain
        ));
    }
    if attestation.message != hex::encode(e.to_bytes()) {
        match decode_envelope(&attestation.message) {
            Some(theirs) => {
                let mut named = false;
                for ((name, ours), (_, theirs)) in envelope_fields(e).into_iter().zip(envelope_fields(&theirs)) {
                    if ours != theirs {
                        named = true;
                        out.push(format!(
                            "entry {}: the attested envelope's {name} is {}, the party signed {}",
                            entry.seq,
                            show(&theirs),
                            show(&ours)
                        ));
                    }
                }
                if !named {
                    out.push(format!("entry {}: the attested envelope is not the one the party signed", entry.seq));
                }
            }
            None => out.push(format!("entry {}: the attested message is not a contribution envelope", entry.seq)),
        }
    }
    if attestation.signature != c.signature {
        out.push(format!(
            "entry {}: the attestation's signature {} is not the party's {}",
            entry.seq,
            show(&attestation.signature),
            show(&c.signature)
        ));
    }
    out
}

/// A value for a message: long hex cut to its first 16 digits.
fn show(value: &str) -> String {
    if value.is_empty() {
        "(none)".into()
    } else if value.len() > 20 {
        format!("{}…", value.chars().take(16).collect::<String>())
    } else {
        format!("`{value}`")
    }
}

/// An envelope's fields, named, as text.
fn envelope_fields(e: &ContributionEnvelope) -> [(&'static str, String); 10] {
    [
        ("request id", e.request_id.clone()),
        ("lender", e.lender.clone()),
        ("job id", e.job_id.clone()),
        ("subject commitment", e.subject.clone()),
        ("model id", e.model_id.clone()),
        ("key id", e.key_id.clone()),
        ("party", e.party.clone()),
        ("consent", e.consent.clone()),
        ("ciphertext digest", e.ciphertext_sha256.clone()),
        ("signing time", e.time_ms.to_string()),
    ]
}

/// Reads an envelope back from its signed bytes (hex): nine length-prefixed
/// fields, then the time (8 bytes, little endian), nothing after.
fn decode_envelope(message: &str) -> Option<ContributionEnvelope> {
    let bytes = hex::decode(message).ok()?;
    let mut rest = bytes.as_slice();
    let mut fields = Vec::with_capacity(9);
    for _ in 0..9 {
        let (len, tail) = rest.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        if tail.len() < len {
            return None;
        }
        fields.push(String::from_utf8(tail[..len].to_vec()).ok()?);
        rest = &tail[len..];
    }
    let time: [u8; 8] = rest.try_into().ok()?;
    let mut f = fields.into_iter();
    let mut next = || f.next().unwrap_or_default();
    Some(ContributionEnvelope {
        request_id: next(),
        lender: next(),
        job_id: next(),
        subject: next(),
        model_id: next(),
        key_id: next(),
        party: next(),
        consent: next(),
        ciphertext_sha256: next(),
        time_ms: u64::from_le_bytes(time),
    })
}

#[cfg(test)]
mod tests {
    use jointscore_identity::{NodeKey, Role};

    use super::*;
    use crate::entry::{Attestation, Event};

    const T0: u64 = 1_750_000_000_000;

    struct Keys {
        coordinator: NodeKey,
        bank: NodeKey,
        platform: NodeKey,
    }

    fn keys() -> &'static Keys {
        static KEYS: std::sync::OnceLock<Keys> = std::sync::OnceLock::new();
        KEYS.get_or_init(|| Keys {
            coordinator: NodeKey::generate(),
            bank: NodeKey::generate(),
            platform: NodeKey::generate(),
        })
    }

    fn envelope(party: &str, job: &str) -> ContributionEnvelope {
        ContributionEnvelope {
            request_id: format!("r-{job}"),
            lender: "lender".into(),
            job_id: job.into(),
            subject: format!("{:0>64}", job.len()),
            model_id: "model-1".into(),
            key_id: "key-1".into(),
            party: party.into(),
            consent: String::new(),
            ciphertext_sha256: hex::encode([party.len() as u8; 32]),
            time_ms: T0 + 5,
        }
    }

    fn signed(party: &str, job: &str) -> (ContributionEnvelope, Vec<u8>) {
        let key = if party == "bank" { &keys().bank } else { &keys().platform };
        let e = envelope(party, job);
        let signature = e.sign(key).to_vec();
        (e, signature)
    }

    /// The entry the coordinator writes for a contribution (as `audit_end`
    /// does).
    fn contribution_event(e: &ContributionEnvelope, signature: &[u8]) -> Event {
        Event {
            kind: EntryKind::Contribution,
            time_ms: T0 + 10,
            lender: Some(e.lender.clone()),
            subject: Some(e.subject.clone()),
            request_id: Some(e.request_id.clone()),
            consent: (!e.consent.is_empty()).then(|| e.consent.clone()),
            parties: vec![e.party.clone()],
            job_id: Some(e.job_id.clone()),
            model_id: Some(e.model_id.clone()),
            key_id: Some(e.key_id.clone()),
            digest: Some(e.ciphertext_sha256.clone()),
            detail: String::new(),
            attestations: vec![Attestation::new(&e.party, Role::Party, CONTRIBUTION_DOMAIN, &e.to_bytes(), signature)],
        }
    }

    fn job_event(kind: EntryKind, job: &str, parties: &[&str], detail: &str) -> Event {
        Event {
            kind,
            time_ms: T0,
            job_id: Some(job.into()),
            parties: parties.iter().map(|p| p.to_string()).collect(),
            detail: detail.into(),
            ..Event::default()
        }
    }

    /// Seals events into a ledger.
    fn seal(events: Vec<Event>) -> Vec<Entry> {
        let mut ledger: Vec<Entry> = Vec::new();
        for event in events {
            let entry = Entry::seal(event, ledger.last(), &keys().coordinator);
            ledger.push(entry);
        }
        ledger
    }

    /// A decision on `job` with bank and platform contributing: the
    /// request, both contributions (each event passed through `edit`), the
    /// result.
    fn decision(job: &str, edit: impl Fn(Event) -> Option<Event>) -> Vec<Event> {
        let mut events = vec![job_event(EntryKind::DecisionRequest, job, &[], "")];
        for party in ["bank", "platform"] {
            let (e, s) = signed(party, job);
            events.extend(edit(contribution_event(&e, &s)));
        }
        events.push(job_event(EntryKind::Result, job, &["bank", "platform"], ""));
        events
    }

    /// The bank's record of contributing to `jobs`: log entries 0, 2, 4…
    /// (refusals between).
    fn bank(jobs: &[&str]) -> PartyRecord {
        let contributions = jobs
            .iter()
            .enumerate()
            .map(|(i, job)| {
                let (envelope, signature) = signed("bank", job);
                PartyContribution { seq: 2 * i as u64, envelope, signature: hex::encode(signature) }
            })
            .collect();
        PartyRecord {
            party: "bank".into(),
            log: PartyLogCheck::Verified { entries: 2 * jobs.len() as u64, head: "ab".repeat(32) },
            contributions,
        }
    }

    fn statuses(r: &Reconciliation) -> Vec<Status> {
        r.findings.iter().map(|f| f.status).collect()
    }

    fn untouched(e: Event) -> Option<Event> {
        Some(e)
    }

    #[test]
    fn every_contribution_in_the_ledger_reconciles() {
        let mut events = Vec::new();
        for job in ["j1", "j2", "j3"] {
            events.extend(decision(job, untouched));
        }
        let ledger = seal(events);
        let r = reconcile(&bank(&["j1", "j2", "j3"]), &ledger);
        assert_eq!(statuses(&r), [Status::Ok; 3], "{r:?}");
        assert!(r.reconciled());
        // Request, bank, platform, result per job: the bank's entries.
        assert_eq!(r.findings.iter().map(|f| f.ledger_seqs.clone()).collect::<Vec<_>>(), [[1], [5], [9]]);
        assert_eq!(r.findings[1].party_seq, Some(2));
        assert_eq!(r.findings[1].request_id, "r-j2");
        // The platform's contributions are not the bank's business.
        assert_eq!(r.count(Status::NotInPartyLog), 0);
    }

    #[test]
    fn an_entry_left_out_is_missing() {
        let mut events = decision("j1", untouched);
        events.extend(decision("j2", |e| (e.parties != ["bank"]).then_some(e)));
        let ledger = seal(events);
        // j3 left no trace in the ledger at all.
        let r = reconcile(&bank(&["j1", "j2", "j3"]), &ledger);
        assert_eq!(statuses(&r), [Status::Ok, Status::Missing, Status::Missing], "{r:?}");
        assert!(!r.reconciled());
        let result = ledger.iter().find(|e| e.record.kind == EntryKind::Result && same_job(e, "j2")).expect("result");
        assert_eq!(r.findings[1].ledger_seqs, [result.seq]);
        assert!(r.findings[1].detail.contains("records the job's result"), "{}", r.findings[1].detail);
        assert!(r.findings[1].detail.contains("names `bank` among its contributors"), "{}", r.findings[1].detail);
        assert!(r.findings[2].detail.contains("no entry for job j3"), "{}", r.findings[2].detail);
    }

    #[test]
    fn an_entry_rewritten_is_found_and_what_differs_is_named() {
        // Another envelope: the coordinator swapped in other ciphertexts and
        // re-wrote the entry to match (no party signed it).
        let other_ciphertext = |mut e: Event| {
            if e.parties == ["bank"] {
                let mut forged = envelope("bank", "j1");
                forged.ciphertext_sha256 = "cd".repeat(32);
                e.digest = Some(forged.ciphertext_sha256.clone());
                e.attestations[0].message = hex::encode(forged.to_bytes());
            }
            Some(e)
        };
        let r = reconcile(&bank(&["j1"]), &seal(decision("j1", other_ciphertext)));
        assert_eq!(statuses(&r), [Status::Rewritten], "{r:?}");
        let detail = &r.findings[0].detail;
        assert!(detail.contains("its digest is cdcdcdcd") && detail.contains("ciphertext digest"), "{detail}");
        assert_eq!(r.findings[0].ledger_seqs, [1]);

        // The party's envelope, another signature (the platform's).
        let swapped = |mut e: Event| {
            if e.parties == ["bank"] {
                e.attestations[0].signature = hex::encode(signed("platform", "j1").1);
            }
            Some(e)
        };
        let r = reconcile(&bank(&["j1"]), &seal(decision("j1", swapped)));
        assert_eq!(statuses(&r), [Status::Rewritten]);
        assert!(r.findings[0].detail.contains("signature"), "{}", r.findings[0].detail);
        assert!(!r.findings[0].detail.contains("envelope"), "{}", r.findings[0].detail);

        // The attestation intact, the entry's own fields changed.
        let other_subject = |mut e: Event| {
            if e.parties == ["bank"] {
                e.subject = Some("ef".repeat(32));
                e.lender = Some("other-lender".into());
            }
            Some(e)
        };
        let r = reconcile(&bank(&["j1"]), &seal(decision("j1", other_subject)));
        assert_eq!(statuses(&r), [Status::Rewritten]);
        let detail = &r.findings[0].detail;
        assert!(
            detail.contains("subject commitment is efefefef") && detail.contains("lender is `other-lender`"),
            "{detail}"
        );

        // The attestation dropped.
        let unattested = |mut e: Event| {
            e.attestations.clear();
            Some(e)
        };
        let r = reconcile(&bank(&["j1"]), &seal(decision("j1", unattested)));
        assert_eq!(statuses(&r), [Status::Rewritten]);
        assert!(r.findings[0].detail.contains("no attestation by `bank`"), "{}", r.findings[0].detail);
    }

    #[test]
    fn a_ledger_entry_the_party_never_logged_is_reported() {
        let mut events = decision("j1", untouched);
        events.extend(decision("j2", untouched));
        // And a second copy of the bank's j1 contribution, forged from
        // another ciphertext.
        let mut copy = contribution_event(&envelope("bank", "j1"), &signed("bank", "j1").1);
        copy.digest = Some("99".repeat(32));
        events.push(copy);
        let ledger = seal(events);
        let r = reconcile(&bank(&["j1"]), &ledger);
        assert_eq!(statuses(&r), [Status::Ok, Status::NotInPartyLog, Status::NotInPartyLog], "{r:?}");
        assert!(!r.reconciled());
        assert_eq!(r.findings[1].job_id, "j2");
        assert_eq!(r.findings[1].party_seq, None);
        assert!(r.findings[1].detail.contains("never logged"), "{}", r.findings[1].detail);
        assert_eq!(r.findings[2].job_id, "j1");
        assert_eq!(r.findings[2].ledger_seqs, [ledger.len() as u64 - 1]);
        assert!(r.findings[2].detail.contains("second contribution"), "{}", r.findings[2].detail);
    }

    #[test]
    fn a_broken_party_log_does_not_reconcile() {
        let ledger = seal(decision("j1", untouched));
        let mut record = bank(&["j1"]);
        record.log = PartyLogCheck::Broken { seq: 1, reason: "its hash does not match its content".into() };
        let r = reconcile(&record, &ledger);
        assert_eq!(statuses(&r), [Status::Ok], "the entries are still compared");
        assert!(!r.reconciled());
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["party_log"]["state"], "broken");
        assert_eq!(json["party_log"]["seq"], 1);
        assert_eq!(json["findings"][0]["status"], "ok");
    }

    #[test]
    fn refused_and_running_jobs_are_no_discrepancy() {
        let mut events = vec![job_event(EntryKind::DecisionRequest, "j1", &[], "")];
        events.push(job_event(EntryKind::Refusal, "j1", &[], "NotFound: platform does not hold the subject"));
        events.push(job_event(EntryKind::DecisionRequest, "j2", &[], ""));
        let r = reconcile(&bank(&["j1", "j2"]), &seal(events));
        assert_eq!(statuses(&r), [Status::Unused, Status::Pending], "{r:?}");
        assert!(r.findings[0].detail.contains("does not hold"), "{}", r.findings[0].detail);
        assert!(r.reconciled());
    }

    #[test]
    fn envelopes_read_back_from_their_bytes() {
        let e = envelope("bank", "j1");
        assert_eq!(decode_envelope(&hex::encode(e.to_bytes())), Some(e.clone()));
        let mut long = e.to_bytes();
        long.push(0);
        assert_eq!(decode_envelope(&hex::encode(long)), None);
        assert_eq!(decode_envelope("zz"), None);
        assert_eq!(decode_envelope(&hex::encode(&e.to_bytes()[..20])), None);
    }
}
