//! The party's side of secure-aggregation rounds: tally its own book for an
//! approved spec, then answer the four protocol steps the coordinator
//! relays. Round state (masking keys, self-mask seed, held shares) lives in
//! memory only, so a node that restarts mid-round has simply dropped out.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

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
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Advertised => "advertise",
            Step::Shared => "share_keys",
            Step::Masked => "masked_input",
        }
    }
}

struct Round {
    client: Client,
    step: Step,
    started: Instant,
}

/// The rounds this node is part of.
pub(crate) struct Rounds {
    party: String,
    approved: HashSet<String>,
    store: Arc<RecordStore>,
    rounds: Mutex<HashMap<String, Round>>,
    /// The consortium file, when the node has one: rosters are checked
    /// against its current party members.
    consortium: Option<Arc<jointscore_identity::Consortium>>,
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

impl Rounds {
    pub(crate) fn new(party: &str, approved: &[String], store: Arc<RecordStore>) -> Rounds {
        Rounds {
            party: party.into(),
            approved: approved.iter().cloned().collect(),
            store,
            rounds: Mutex::new(HashMap::new()),
            consortium: None,
        }
    }

    /// Checks rosters against `consortium`'s current party members.
    pub(crate) fn set_consortium(&mut self, consortium: Arc<jointscore_identity::Consortium>) {
        self.consortium = Some(consortium);
    }

    fn lock(&self) -> Result<MutexGuard<'_, HashMap<String, Round>>> {
        self.rounds.lock().map_err(|_| PartyError::Transport("round table poisoned by an earlier panic".into()))
    }

    /// Step 0: checks the request and the spec's approval, tallies this
    /// party's book (on the blocking pool: it reads every record), and
    /// answers its public keys.
    pub(crate) async fn advertise(&self, request: Invitation) -> Result<Advertise> {
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
        rounds.insert(request.round_id, Round { client, step: Step::Advertised, started: Instant::now() });
        tracing::info!(party = %self.party, spec = %request.spec_id, "aggregation round: keys advertised");
        Ok(keys)
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
        f: impl FnOnce(&mut Client) -> Result<T>,
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
        match f(&mut round.client) {
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

    /// Step 1: shares this party's masking key and self-mask seed among the
    /// roster, each share pair sealed to its recipient.
    pub(crate) fn share_keys(&self, round_id: &str, roster: &Roster) -> Result<Shares> {
        self.step(round_id, Step::Advertised, Some(Step::Shared), "share_keys", |client| {
            Ok(client.share_keys(roster, &mut OsRng)?)
        })
    }

    /// Step 2: reads the shares addressed to this party and answers its
    /// masked vector.
    pub(crate) fn masked_input(&self, round_id: &str, inbox: &Inbox) -> Result<Masked> {
        self.step(round_id, Step::Shared, Some(Step::Masked), "masked_input", |client| Ok(client.masked_input(inbox)?))
    }

    /// Step 3: the shares that unmask the sum, after which the round is
    /// forgotten.
    pub(crate) fn unmask(&self, round_id: &str, survivors: &[PartyId]) -> Result<Unmask> {
        let unmask = self.step(round_id, Step::Masked, None, "unmask", |client| Ok(client.unmask(survivors)?))?;
        tracing::info!(party = %self.party, "aggregation round: unmasking shares sent");
        Ok(unmask)
    }
}
