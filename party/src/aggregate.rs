//! The party's side of secure-aggregation rounds: tally its own book for an
//! approved spec, then answer the protocol steps the coordinator relays.
//! Round state (masking keys, self-mask seed, held shares) lives in memory
//! only, so a node that restarts mid-round has simply dropped out.
//!
//! With a consortium file the node holds the coordinator to the roster and
//! survivor lists the members signed (issue 17, point 6): it signs its own
//! advertised keys; before sharing it checks that every roster entry is a
//! current party member's signed keys for this round, each name and id
//! once, its own entry unchanged; after the masked input it signs the
//! survivor list once; and before revealing any share it checks that the
//! list is the one it signed and that at least the threshold of the parties
//! on it signed that same list (the consistency check of Bonawitz et al.'s
//! malicious-server variant). Without a consortium file (development) it
//! keeps the structural checks and skips the signatures.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jointscore_identity::{AdvertisedKeys, Consortium, NodeKey, RoundBinding};
use jointscore_secagg::{Advertise, Client, Config, Inbox, Masked, PartyId, Roster, SessionId, Shares, Unmask};
use jointscore_stats::{StatsSpec, Tally};
use rand_core::OsRng;

use crate::error::{PartyError, Result};
use crate::store::RecordStore;

/// Rounds a node holds at once; a coordinator cannot make it hold more.
const MAX_ROUNDS: usize = 16;
/// A round not finished after this long is forgotten.
const ROUND_TTL: Duration = Duration::from_secs(15 * 60);
/// Longest round id accepted.
const ROUND_ID_LIMIT: usize = 128;
/// Most parties in a round a node takes part in: each costs it one share
/// pair and one key agreement.
const MAX_PARTIES: u32 = 10_000;

/// Where a round is at this node.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Step {
    Advertised,
    Shared,
    Masked,
    /// Signed the survivor list (the consistency check).
    Signed,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Advertised => "advertise",
            Step::Shared => "share_keys",
            Step::Masked => "masked_input",
            Step::Signed => "consistency",
        }
    }
}

struct Round {
    client: Client,
    step: Step,
    started: Instant,
    /// What this node was invited with: every signature of the round is
    /// checked under it.
    binding: RoundBinding,
    /// The roster this node accepted: each party's id and name.
    members: BTreeMap<PartyId, String>,
    /// The survivor list this node signed (once per round).
    survivors: Option<BTreeSet<PartyId>>,
}

/// One roster entry as the coordinator relays it: a party's name, its keys
/// and its signature on them.
#[derive(Clone, Debug)]
pub(crate) struct RosterEntry {
    /// The party's name (a consortium member's, with a consortium file).
    pub(crate) party: String,
    /// Its id and keys.
    pub(crate) keys: Advertise,
    /// Its signature on them for this round (empty without an identity key).
    pub(crate) signature: Vec<u8>,
}

/// A party's signature on a survivor list, as the unmask request relays it.
#[derive(Clone, Debug)]
pub(crate) struct SurvivorSignature {
    /// The signer's id in the round.
    pub(crate) party_id: PartyId,
    /// Its signature.
    pub(crate) signature: Vec<u8>,
}

/// The rounds this node is part of.
pub(crate) struct Rounds {
    party: String,
    approved: HashSet<String>,
    store: Arc<RecordStore>,
    rounds: Mutex<HashMap<String, Round>>,
    /// The consortium file, when the node has one: rosters are checked
    /// against its current party members.
    consortium: Option<Arc<Consortium>>,
    /// The node's identity key: it signs this party's keys and survivor
    /// lists. Required with a consortium file.
    identity: Option<Arc<NodeKey>>,
}

/// The coordinator's invitation to a round, its fields checked for form.
#[derive(Clone, Debug)]
pub(crate) struct Invitation {
    /// The round, as the coordinator names it.
    pub(crate) round_id: String,
    /// The party invited (must be this node).
    pub(crate) party: String,
    /// Its number in the round.
    pub(crate) party_id: PartyId,
    /// The statistics spec, by id (what the operator approves).
    pub(crate) spec_id: String,
    /// The spec file; must be `spec_id`.
    pub(crate) spec_toml: String,
    /// How many parties the round invites.
    pub(crate) parties: u32,
    /// How many must survive for the sum to be unmasked.
    pub(crate) threshold: u32,
    /// The round's session id, which binds every message to it.
    pub(crate) session: [u8; 16],
}

fn bad(message: impl Into<String>) -> PartyError {
    PartyError::BadRequest(message.into())
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn refused(round: &str, reason: impl Into<String>) -> PartyError {
    PartyError::RoundRefused { round: round.to_string(), reason: reason.into() }
}

impl Rounds {
    pub(crate) fn new(party: &str, approved: &[String], store: Arc<RecordStore>) -> Rounds {
        Rounds {
            party: party.into(),
            approved: approved.iter().cloned().collect(),
            store,
            rounds: Mutex::new(HashMap::new()),
            consortium: None,
            identity: None,
        }
    }

    /// Checks rosters against `consortium`'s current party members.
    pub(crate) fn set_consortium(&mut self, consortium: Arc<Consortium>) {
        self.consortium = Some(consortium);
    }

    /// Signs this party's advertised keys and survivor lists with `key`.
    pub(crate) fn set_identity(&mut self, key: Arc<NodeKey>) {
        self.identity = Some(key);
    }

    /// A signature by this node's identity key, or nothing without one
    /// (development only: with a consortium file [`Rounds::advertise`]
    /// refuses a node without a key).
    fn sign(&self, sign: impl FnOnce(&NodeKey) -> [u8; 64]) -> Vec<u8> {
        self.identity.as_deref().map(|key| sign(key).to_vec()).unwrap_or_default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, HashMap<String, Round>>> {
        self.rounds.lock().map_err(|_| PartyError::Transport("round table poisoned by an earlier panic".into()))
    }

    /// Step 0: checks the request and the spec's approval, tallies this
    /// party's book (on the blocking pool: it reads every record), and
    /// answers its public keys and its signature on them for this round.
    pub(crate) async fn advertise(&self, request: Invitation) -> Result<(Advertise, Vec<u8>)> {
        if self.consortium.is_some() && self.identity.is_none() {
            return Err(PartyError::Config(format!(
                "party `{}` has a consortium file but no identity key (`identity`): it cannot sign its \
                 secure-aggregation keys, which the other members require, so it takes part in no round",
                self.party
            )));
        }
        if request.round_id.is_empty() || request.round_id.len() > ROUND_ID_LIMIT {
            return Err(bad(format!("round id must be 1–{ROUND_ID_LIMIT} bytes")));
        }
        if request.party != self.party {
            return Err(bad(format!("the request is for party `{}`, this is `{}`", request.party, self.party)));
        }
        if !self.approved.contains(&request.spec_id) {
            return Err(PartyError::StatsNotApproved { party: self.party.clone(), spec_id: request.spec_id });
        }
        let spec = StatsSpec::from_toml(&request.spec_toml)?;
        if spec.id() != request.spec_id {
            return Err(bad(format!(
                "spec id {} does not match the spec sent (its id is {})",
                request.spec_id,
                spec.id()
            )));
        }
        if request.parties > MAX_PARTIES {
            return Err(bad(format!(
                "{} parties; this node takes part in rounds of at most {MAX_PARTIES}",
                request.parties
            )));
        }
        // The coordinator picks the threshold; the party holds it to the
        // spec, so a coordinator cannot lower it to learn smaller sums.
        let floor = spec.threshold(request.parties);
        if request.threshold < floor {
            return Err(bad(format!(
                "threshold {} is below the spec's {floor} for {} parties",
                request.threshold, request.parties
            )));
        }
        let config = Config::new(request.parties, request.threshold, spec.dim(), SessionId(request.session))?;
        if self.lock()?.contains_key(&request.round_id) {
            return Err(bad(format!("round `{}` is already under way at this node", request.round_id)));
        }
        let (store, parties) = (self.store.clone(), request.parties);
        let input = tokio::task::spawn_blocking(move || {
            let mut tally = Tally::new(&spec);
            store.scan(|record| Ok(tally.add(record)?))?;
            Ok::<_, PartyError>(tally.finish(parties)?)
        })
        .await
        .map_err(|e| PartyError::Transport(format!("tally task failed: {e}")))??;
        let client = Client::new(&config, request.party_id, input, &mut OsRng)?;
        let keys = client.advertise();
        let binding = RoundBinding {
            round_id: request.round_id.clone(),
            session: request.session,
            spec_id: request.spec_id.clone(),
            parties: request.parties,
            threshold: request.threshold,
        };
        let signature = self.sign(|key| binding.sign_advertise(key, &self.advertised(&keys)));
        let mut rounds = self.lock()?;
        rounds.retain(|_, r| r.started.elapsed() < ROUND_TTL);
        if rounds.len() >= MAX_ROUNDS {
            return Err(PartyError::Transport(format!(
                "this node already holds {MAX_ROUNDS} unfinished rounds; retry later"
            )));
        }
        if rounds.contains_key(&request.round_id) {
            return Err(bad(format!("round `{}` is already under way at this node", request.round_id)));
        }
        let round = Round {
            client,
            step: Step::Advertised,
            started: Instant::now(),
            binding,
            members: BTreeMap::new(),
            survivors: None,
        };
        rounds.insert(request.round_id, round);
        tracing::info!(party = %self.party, spec = %request.spec_id, "aggregation round: keys advertised");
        Ok((keys, signature))
    }

    /// This party's roster entry, as it signs it.
    fn advertised(&self, keys: &Advertise) -> AdvertisedKeys {
        AdvertisedKeys {
            party: self.party.clone(),
            party_id: keys.from,
            encryption_key: keys.encryption,
            masking_key: keys.masking,
        }
    }

    /// Runs one step on a round that is at `at`, moving it to `next`, or
    /// forgetting it on error or when `next` is `None` (the round is over
    /// for this party either way).
    fn step<T>(
        &self,
        round_id: &str,
        at: Step,
        next: Option<Step>,
        name: &'static str,
        f: impl FnOnce(&mut Round) -> Result<T>,
    ) -> Result<T> {
        let mut rounds = self.lock()?;
        let unknown =
            || PartyError::UnknownRound { party: self.party.clone(), round: round_id.to_string(), step: name };
        let round = rounds.get_mut(round_id).ok_or_else(unknown)?;
        if round.step != at {
            let done = round.step.name();
            rounds.remove(round_id);
            return Err(bad(format!("step {name} asked after {done}; this node leaves round `{round_id}`")));
        }
        match f(round) {
            Ok(out) => {
                match next {
                    Some(step) => round.step = step,
                    None => {
                        rounds.remove(round_id);
                    }
                }
                Ok(out)
            }
            Err(e) => {
                rounds.remove(round_id);
                Err(e)
            }
        }
    }

    /// Step 1: checks the roster ([`Rounds::check_roster`]), then shares
    /// this party's masking key and self-mask seed among it, each share
    /// pair sealed to its recipient. A refused roster ends the round at
    /// this node before anything is shared.
    pub(crate) fn share_keys(&self, round_id: &str, roster: &[RosterEntry]) -> Result<Shares> {
        self.step(round_id, Step::Advertised, Some(Step::Shared), "share_keys", |round| {
            let (keys, members) = self.check_roster(round_id, round, roster)?;
            let shares = round.client.share_keys(&keys, &mut OsRng)?;
            round.members = members;
            Ok(shares)
        })
    }

    /// The roster's structural checks, and with a consortium file its
    /// signatures: every name and id once, this party's own entry exactly
    /// its name, id and keys, at least the threshold of entries, and every
    /// entry signed for this round by a current party member under its own
    /// name. Returns the keys and who is who.
    fn check_roster(
        &self,
        round_id: &str,
        round: &Round,
        roster: &[RosterEntry],
    ) -> Result<(Roster, BTreeMap<PartyId, String>)> {
        let mut keys = Roster::new();
        let mut members = BTreeMap::new();
        let mut names: HashMap<&str, PartyId> = HashMap::new();
        for entry in roster {
            let id = entry.keys.from;
            if entry.party.is_empty() {
                return Err(bad(format!("`roster`: party {id} has no name")));
            }
            if let Some(first) = names.insert(&entry.party, id) {
                return Err(bad(format!("`roster` names `{}` twice (parties {first} and {id})", entry.party)));
            }
            if keys.insert(id, entry.keys.clone()).is_some() {
                return Err(bad(format!("`roster` names party {id} twice")));
            }
            members.insert(id, entry.party.clone());
        }
        let own = round.client.advertise();
        match roster.iter().find(|e| e.keys.from == own.from) {
            Some(e) if e.party == self.party && e.keys == own => {}
            Some(e) => {
                return Err(bad(format!(
                    "`roster`: the entry for this party's id {} is not its own (named `{}`{})",
                    own.from,
                    e.party,
                    if e.keys == own { "" } else { ", with other keys" }
                )));
            }
            None => return Err(bad(format!("`roster` leaves out this party (id {})", own.from))),
        }
        let need = round.binding.threshold as usize;
        if roster.len() < need {
            return Err(
                jointscore_secagg::Error::Abort { round: "share keys", party: None, have: roster.len(), need }.into()
            );
        }
        if let Some(consortium) = &self.consortium {
            let now = unix_now();
            for entry in roster {
                let keys = AdvertisedKeys {
                    party: entry.party.clone(),
                    party_id: entry.keys.from,
                    encryption_key: entry.keys.encryption,
                    masking_key: entry.keys.masking,
                };
                round
                    .binding
                    .verify_advertise(consortium, &keys, &entry.signature, now)
                    .map_err(|e| refused(round_id, format!("the roster's entry for party {}: {e}", entry.keys.from)))?;
            }
        }
        Ok((keys, members))
    }

    /// Step 2: reads the shares addressed to this party and answers its
    /// masked vector.
    pub(crate) fn masked_input(&self, round_id: &str, inbox: &Inbox) -> Result<Masked> {
        self.step(round_id, Step::Shared, Some(Step::Masked), "masked_input", |round| {
            Ok(round.client.masked_input(inbox)?)
        })
    }

    /// The consistency check: checks the survivor list as the unmask step
    /// will (itself on it, the threshold met, only parties that shared keys,
    /// none whose shares it rejected) and signs it. A node signs one list
    /// per round: asked again, it leaves the round.
    pub(crate) fn consistency(&self, round_id: &str, survivors: &[PartyId]) -> Result<Vec<u8>> {
        self.step(round_id, Step::Masked, Some(Step::Signed), "consistency", |round| {
            let list = survivor_set(survivors)?;
            round.client.check_survivors(survivors)?;
            let signature = self.sign(|key| round.binding.sign_survivors(key, &list));
            round.survivors = Some(list);
            Ok(signature)
        })
    }

    /// Step 3: the shares that unmask the sum, after which the round is
    /// forgotten. Only for the list this node signed, and, with a
    /// consortium file, only with valid signatures on it by at least the
    /// threshold of the parties on it.
    pub(crate) fn unmask(
        &self,
        round_id: &str,
        survivors: &[PartyId],
        signatures: &[SurvivorSignature],
    ) -> Result<Unmask> {
        let unmask = self.step(round_id, Step::Signed, None, "unmask", |round| {
            let list = survivor_set(survivors)?;
            if round.survivors.as_ref() != Some(&list) {
                return Err(bad(format!(
                    "the survivor list {list:?} is not the one this party signed ({:?})",
                    round.survivors.as_ref().map(|s| s.iter().collect::<Vec<_>>()).unwrap_or_default()
                )));
            }
            if let Some(consortium) = &self.consortium {
                self.check_survivor_signatures(consortium, round_id, round, &list, signatures)?;
            }
            Ok(round.client.unmask(survivors)?)
        })?;
        tracing::info!(party = %self.party, "aggregation round: unmasking shares sent");
        Ok(unmask)
    }

    /// Every signature relayed is by a distinct party on the list, a current
    /// party member by the roster this node accepted, over exactly this
    /// list for this round; and there are at least the threshold of them.
    fn check_survivor_signatures(
        &self,
        consortium: &Consortium,
        round_id: &str,
        round: &Round,
        list: &BTreeSet<PartyId>,
        signatures: &[SurvivorSignature],
    ) -> Result<()> {
        let now = unix_now();
        let mut signers = BTreeSet::new();
        for s in signatures {
            if !signers.insert(s.party_id) {
                return Err(bad(format!("`signatures` holds two signatures of party {}", s.party_id)));
            }
            if !list.contains(&s.party_id) {
                return Err(refused(
                    round_id,
                    format!("party {} signed the survivor list but is not on it", s.party_id),
                ));
            }
            let name = round.members.get(&s.party_id).ok_or_else(|| {
                refused(round_id, format!("party {} is not in the roster this party accepted", s.party_id))
            })?;
            round.binding.verify_survivors(consortium, name, list, &s.signature, now).map_err(|e| {
                refused(round_id, format!("the survivor list's signature by party {}: {e}", s.party_id))
            })?;
        }
        let need = round.binding.threshold as usize;
        if signers.len() < need {
            return Err(refused(
                round_id,
                format!(
                    "the survivor list carries the signatures of {} of its parties; at least {need} (the threshold) \
                     must sign it before this party reveals any share",
                    signers.len()
                ),
            ));
        }
        Ok(())
    }
}

/// A survivor list from the wire as a set; a party named twice is refused.
fn survivor_set(survivors: &[PartyId]) -> Result<BTreeSet<PartyId>> {
    let list: BTreeSet<PartyId> = survivors.iter().copied().collect();
    if list.len() != survivors.len() {
        return Err(bad("`survivors` names a party twice"));
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use jointscore_secagg::Server;

    use super::*;

    const SPEC: &str = r#"
        name = "book"
        [[counter]]
        name = "records"
        kind = "count"
        [[counter]]
        name = "gmv_k"
        kind = "sum"
        column = "gmv"
    "#;
    const SESSION: [u8; 16] = [5; 16];
    /// The round's parties, in id order.
    const PARTIES: [&str; 3] = ["bank", "platform", "logistics"];

    /// A consortium of the three parties, a lender, a revoked party and an
    /// expired one, with their keys by name.
    struct Members {
        consortium: Arc<Consortium>,
        keys: HashMap<&'static str, Arc<NodeKey>>,
    }

    fn members() -> Members {
        let mut text = String::from("name = \"test\"\n");
        let mut keys = HashMap::new();
        for (name, role, extra) in [
            ("bank", "party", ""),
            ("platform", "party", ""),
            ("logistics", "party", ""),
            ("lender", "lender", ""),
            ("gone", "party", "revoked = true\n"),
            ("old", "party", "expires = 1\n"),
        ] {
            let key = Arc::new(NodeKey::generate());
            text.push_str(&format!(
                "[[member]]\nname = \"{name}\"\nrole = \"{role}\"\npublic_key = \"{}\"\n{extra}",
                key.public_hex()
            ));
            keys.insert(name, key);
        }
        Members { consortium: Arc::new(Consortium::from_toml(&text).expect("consortium")), keys }
    }

    fn spec_id() -> String {
        StatsSpec::from_toml(SPEC).expect("spec").id()
    }

    /// Party `name`'s node, with `gmv` the value of its one record; with
    /// the consortium and its key when `members` is given.
    fn node(name: &str, gmv: u32, members: Option<&Members>) -> Rounds {
        let store = Arc::new(RecordStore::in_memory().expect("store"));
        store.import_csv(format!("subject,gmv\ns-{name},{gmv}\n").as_bytes()).expect("import");
        let mut rounds = Rounds::new(name, &[spec_id()], store);
        if let Some(m) = members {
            rounds.set_consortium(m.consortium.clone());
            rounds.set_identity(m.keys[name].clone());
        }
        rounds
    }

    fn invitation(round_id: &str, party: &str, party_id: PartyId) -> Invitation {
        Invitation {
            round_id: round_id.into(),
            party: party.into(),
            party_id,
            spec_id: spec_id(),
            spec_toml: SPEC.into(),
            parties: 3,
            threshold: 2,
            session: SESSION,
        }
    }

    fn binding(round_id: &str) -> RoundBinding {
        RoundBinding { round_id: round_id.into(), session: SESSION, spec_id: spec_id(), parties: 3, threshold: 2 }
    }

    /// The three nodes, each having advertised in `round_id`, and the
    /// genuine roster.
    async fn advertised(round_id: &str, members: Option<&Members>) -> (Vec<Rounds>, Vec<RosterEntry>) {
        let mut nodes = Vec::new();
        let mut roster = Vec::new();
        for (i, name) in PARTIES.into_iter().enumerate() {
            let rounds = node(name, 1000 * (i as u32 + 1), members);
            let id = i as PartyId + 1;
            let (keys, signature) = rounds.advertise(invitation(round_id, name, id)).await.expect("advertise");
            assert_eq!(signature.len(), if members.is_some() { 64 } else { 0 });
            roster.push(RosterEntry { party: name.into(), keys, signature });
            nodes.push(rounds);
        }
        (nodes, roster)
    }

    /// The three nodes through the masked input, with a server relaying.
    async fn masked(round_id: &str, members: Option<&Members>) -> (Vec<Rounds>, Server) {
        let (nodes, roster) = advertised(round_id, members).await;
        let config = Config::new(3, 2, 2, SessionId(SESSION)).expect("config");
        let mut server = Server::new(&config);
        for e in &roster {
            server.receive_advertise(e.keys.clone()).expect("advertise");
        }
        server.roster().expect("roster");
        for n in &nodes {
            server.receive_shares(n.share_keys(round_id, &roster).expect("shares")).expect("shares");
        }
        let inboxes = server.inboxes().expect("inboxes");
        for (i, n) in nodes.iter().enumerate() {
            let masked = n.masked_input(round_id, &inboxes[&(i as PartyId + 1)]).expect("masked");
            server.receive_masked(masked).expect("masked");
        }
        (nodes, server)
    }

    /// Each node's signature on the survivor list `[1, 2, 3]`.
    fn consistency(round_id: &str, nodes: &[Rounds]) -> Vec<SurvivorSignature> {
        (1..=3)
            .zip(nodes)
            .map(|(party_id, n)| SurvivorSignature {
                party_id,
                signature: n.consistency(round_id, &[1, 2, 3]).expect("signs"),
            })
            .collect()
    }

    /// `e` says `says` with `code`, and the node has left the round.
    fn assert_refused(e: PartyError, says: &str, code: tonic::Code, node: &Rounds, round_id: &str) {
        let status = tonic::Status::from(e);
        assert!(status.message().contains(says), "{round_id}: `{}` should say `{says}`", status.message());
        assert_eq!(status.code(), code, "{round_id}: {}", status.message());
        let again = node.masked_input(round_id, &Inbox::new()).expect_err("the round is over at this node");
        assert!(matches!(again, PartyError::UnknownRound { .. }), "{again}");
    }

    #[tokio::test]
    async fn a_signed_round_sums_the_books() {
        let m = members();
        let (nodes, mut server) = masked("r", Some(&m)).await;
        let survivors = server.survivors().expect("survivors");
        assert_eq!(survivors, [1, 2, 3]);
        let signatures = consistency("r", &nodes);
        for n in &nodes {
            server.receive_unmask(n.unmask("r", &survivors, &signatures).expect("unmask")).expect("unmask");
        }
        assert_eq!(server.finish().expect("sum"), [3, 6000]);
    }

    /// A roster the members did not sign as they must: each refused by
    /// name, with PERMISSION_DENIED, and the node leaves the round before
    /// sharing anything.
    #[tokio::test]
    async fn rosters_with_invented_or_unauthorised_members_are_refused_before_sharing() {
        let m = members();
        let sign_as = |signer: &str, round_id: &str, entry: &RosterEntry| {
            let keys = AdvertisedKeys {
                party: entry.party.clone(),
                party_id: entry.keys.from,
                encryption_key: entry.keys.encryption,
                masking_key: entry.keys.masking,
            };
            binding(round_id).sign_advertise(&m.keys[signer], &keys).to_vec()
        };
        type Tamper = fn(&mut Vec<RosterEntry>, &dyn Fn(&str, &RosterEntry) -> Vec<u8>);
        let cases: [(&str, Tamper, &str); 6] = [
            (
                "forged",
                |r, sign| r[1].signature = sign("logistics", &r[1]),
                "the roster's entry for party 2: the signature of `platform` on the \
                 jointscore/secagg-advertise/v1 does not verify",
            ),
            (
                "unsigned",
                |r, _| r[2].signature.clear(),
                "party 3: the signature of `logistics` on the jointscore/secagg-advertise/v1 does not verify",
            ),
            (
                "invented",
                |r, sign| {
                    r[2].party = "ghost".into();
                    r[2].signature = sign("logistics", &r[2]);
                },
                "party 3: `ghost` is not a member of the consortium",
            ),
            (
                "revoked",
                |r, sign| {
                    r[2].party = "gone".into();
                    r[2].signature = sign("gone", &r[2]);
                },
                "party 3: the identity of `gone` is revoked",
            ),
            (
                "expired",
                |r, sign| {
                    r[2].party = "old".into();
                    r[2].signature = sign("old", &r[2]);
                },
                "party 3: the identity of `old` expired",
            ),
            (
                "lender",
                |r, sign| {
                    r[2].party = "lender".into();
                    r[2].signature = sign("lender", &r[2]);
                },
                "party 3: `lender` is a lender in the consortium, not a party",
            ),
        ];
        for (case, tamper, says) in cases {
            let (nodes, mut roster) = advertised(case, Some(&m)).await;
            tamper(&mut roster, &|signer, entry| sign_as(signer, case, entry));
            let e = nodes[0].share_keys(case, &roster).expect_err(case);
            assert!(matches!(e, PartyError::RoundRefused { .. }), "{case}: {e}");
            assert_refused(e, says, tonic::Code::PermissionDenied, &nodes[0], case);
        }
    }

    /// Structural refusals, with or without a consortium file: a name twice,
    /// this party's entry altered or missing, too few entries.
    #[tokio::test]
    async fn rosters_that_repeat_a_name_or_alter_this_party_are_refused() {
        use tonic::Code::{FailedPrecondition, InvalidArgument};
        type Tamper = fn(&mut Vec<RosterEntry>);
        let m = members();
        for members in [Some(&m), None] {
            let cases: [(&str, Tamper, &str, tonic::Code); 5] = [
                (
                    "twice",
                    |r| r[2].party = "platform".into(),
                    "`roster` names `platform` twice (parties 2 and 3)",
                    InvalidArgument,
                ),
                (
                    "renamed",
                    |r| r[0].party = "bank2".into(),
                    "the entry for this party's id 1 is not its own (named `bank2`)",
                    InvalidArgument,
                ),
                (
                    "rekeyed",
                    |r| r[0].keys.masking = r[1].keys.masking,
                    "named `bank`, with other keys",
                    InvalidArgument,
                ),
                (
                    "left out",
                    |r| {
                        r.remove(0);
                    },
                    "`roster` leaves out this party (id 1)",
                    InvalidArgument,
                ),
                (
                    "short",
                    |r| r.truncate(1),
                    "round aborted in share keys: 1 parties remain, the threshold is 2",
                    FailedPrecondition,
                ),
            ];
            for (case, tamper, says, code) in cases {
                let (nodes, mut roster) = advertised(case, members).await;
                tamper(&mut roster);
                let e = nodes[0].share_keys(case, &roster).expect_err(case);
                assert_refused(e, says, code, &nodes[0], case);
            }
        }
        // Without a consortium file the signatures are not looked at.
        let (nodes, mut roster) = advertised("dev", None).await;
        roster[1].signature = vec![1; 64];
        nodes[0].share_keys("dev", &roster).expect("development mode");
    }

    /// The consistency check: a survivor list not signed by enough of its
    /// parties, or signed over another list, or another list than the one
    /// this node signed, reveals nothing.
    #[tokio::test]
    async fn survivor_lists_without_valid_signatures_reveal_nothing() {
        let m = members();
        type Tamper = fn(&mut Vec<PartyId>, &mut Vec<SurvivorSignature>, &Members);
        let cases: [(&str, Tamper, &str); 6] = [
            (
                "one signer",
                |_, s, _| s.truncate(1),
                "carries the signatures of 1 of its parties; at least 2 (the threshold) must sign it",
            ),
            (
                "other list",
                |_, s, m| {
                    s[1].signature = binding("other list").sign_survivors(&m.keys["platform"], &[1, 2].into()).to_vec();
                },
                "the survivor list's signature by party 2: the signature of `platform` on the \
                 jointscore/secagg-survivors/v1 does not verify",
            ),
            (
                "another's signature",
                |_, s, _| s[2].signature = s[1].signature.clone(),
                "signature by party 3: the signature of `logistics`",
            ),
            ("not signed", |l, _, _| l.truncate(2), "the survivor list {1, 2} is not the one this party signed"),
            ("outsider", |_, s, _| s[2].party_id = 4, "party 4 signed the survivor list but is not on it"),
            ("twice", |_, s, _| s[2].party_id = 2, "`signatures` holds two signatures of party 2"),
        ];
        for (case, tamper, says) in cases {
            let (nodes, _) = masked(case, Some(&m)).await;
            let genuine = consistency(case, &nodes);
            let (mut list, mut signatures) = (vec![1, 2, 3], genuine.clone());
            tamper(&mut list, &mut signatures, &m);
            let e = nodes[0].unmask(case, &list, &signatures).expect_err(case);
            assert!(e.to_string().contains(says), "{case}: `{e}` should say `{says}`");
            // The node left the round: even the genuine request gets nothing.
            let again = nodes[0].unmask(case, &[1, 2, 3], &genuine).map(|_| ());
            assert!(matches!(again, Err(PartyError::UnknownRound { .. })), "{case}: {again:?}");
        }
        // A node signs one list per round.
        let (nodes, _) = masked("twice signed", Some(&m)).await;
        nodes[0].consistency("twice signed", &[1, 2, 3]).expect("signs");
        let e = nodes[0].consistency("twice signed", &[1, 2]).expect_err("a second list");
        assert!(e.to_string().contains("step consistency asked after consistency"), "{e}");
        // And checks the list before signing it.
        let (nodes, _) = masked("unknown survivor", Some(&m)).await;
        let e = nodes[0].consistency("unknown survivor", &[1, 2, 7]).expect_err("a stranger on the list");
        assert!(e.to_string().contains("names unknown parties"), "{e}");
        let (nodes, _) = masked("duplicate survivor", Some(&m)).await;
        let e = nodes[0].consistency("duplicate survivor", &[1, 2, 2]).expect_err("a party twice");
        assert!(e.to_string().contains("names a party twice"), "{e}");
    }

    #[tokio::test]
    async fn development_mode_needs_no_signatures_but_the_signed_list() {
        let (nodes, mut server) = masked("dev", None).await;
        let survivors = server.survivors().expect("survivors");
        let signatures = consistency("dev", &nodes);
        assert!(signatures.iter().all(|s| s.signature.is_empty()), "no identity key, no signature");
        let e = nodes[0].unmask("dev", &[1, 2], &[]).expect_err("another list");
        assert!(e.to_string().contains("not the one this party signed"), "{e}");
        for n in &nodes[1..] {
            server.receive_unmask(n.unmask("dev", &survivors, &[]).expect("unmask")).expect("unmask");
        }
        assert_eq!(server.finish().expect("sum"), [3, 6000]);
    }

    #[tokio::test]
    async fn a_node_with_a_consortium_file_but_no_identity_key_takes_part_in_no_round() {
        let m = members();
        let mut rounds = node("bank", 1, None);
        rounds.set_consortium(m.consortium.clone());
        let e = rounds.advertise(invitation("r", "bank", 1)).await.expect_err("cannot sign");
        assert!(matches!(e, PartyError::Config(_)), "{e}");
        assert!(e.to_string().contains("has a consortium file but no identity key"), "{e}");
    }
}
