//! The party's side of secure-aggregation rounds: tally its own book for an
//! approved spec, then answer the four protocol steps the coordinator
//! relays. Round state (masking keys, self-mask seed, held shares) lives in
//! memory only, so a node that restarts mid-round has simply dropped out.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jointscore_proto::v1::{
    SecAggAdvertiseReply, SecAggAdvertiseRequest, SecAggMaskedInputReply, SecAggMaskedInputRequest, SecAggSealed,
    SecAggShare, SecAggShareKeysReply, SecAggShareKeysRequest, SecAggUnmaskReply, SecAggUnmaskRequest,
};
use jointscore_secagg::{Advertise, Client, Config, Inbox, PartyId, Roster, SessionId};
use jointscore_stats::{StatsSpec, Tally};
use rand_core::OsRng;

use crate::error::{PartyError, Result};
use crate::store::RecordStore;

/// Rounds a node holds at once; a coordinator cannot make it hold more.
const MAX_ROUNDS: usize = 16;
/// A round not finished after this long is forgotten.
const ROUND_TTL: Duration = Duration::from_secs(15 * 60);
/// Longest round id accepted.
const ROUND_ID_MAX: usize = 128;
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
}

fn bad(message: impl Into<String>) -> PartyError {
    PartyError::BadRequest(message.into())
}

fn key(bytes: &[u8], what: &str, party: PartyId) -> Result<[u8; 32]> {
    bytes.try_into().map_err(|_| bad(format!("{what} of party {party} is {} bytes, not 32", bytes.len())))
}

impl Rounds {
    pub(crate) fn new(party: &str, approved: &[String], store: Arc<RecordStore>) -> Rounds {
        Rounds {
            party: party.into(),
            approved: approved.iter().cloned().collect(),
            store,
            rounds: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, HashMap<String, Round>>> {
        self.rounds.lock().map_err(|_| PartyError::Transport("round table poisoned by an earlier panic".into()))
    }

    /// Step 0: checks the request and the spec's approval, tallies this
    /// party's book (on the blocking pool: it reads every record), and
    /// answers its public keys.
    pub(crate) async fn advertise(&self, request: SecAggAdvertiseRequest) -> Result<SecAggAdvertiseReply> {
        if request.round_id.is_empty() || request.round_id.len() > ROUND_ID_MAX {
            return Err(bad(format!("round id must be 1–{ROUND_ID_MAX} bytes")));
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
        let session: [u8; 16] =
            request.session.as_slice().try_into().map_err(|_| bad("the session id must be 16 bytes"))?;
        let config = Config::new(request.parties, request.threshold, spec.dim(), SessionId(session))?;
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
        Ok(SecAggAdvertiseReply {
            party: self.party.clone(),
            party_id: keys.from,
            encryption_key: keys.encryption.to_vec(),
            masking_key: keys.masking.to_vec(),
        })
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
    pub(crate) fn share_keys(&self, request: SecAggShareKeysRequest) -> Result<SecAggShareKeysReply> {
        let mut roster = Roster::new();
        for k in &request.roster {
            let advertise = Advertise {
                from: k.party_id,
                encryption: key(&k.encryption_key, "encryption key", k.party_id)?,
                masking: key(&k.masking_key, "masking key", k.party_id)?,
            };
            if roster.insert(k.party_id, advertise).is_some() {
                return Err(bad(format!("the roster names party {} twice", k.party_id)));
            }
        }
        let shares = self.step(&request.round_id, Step::Advertised, Some(Step::Shared), "share_keys", |client| {
            Ok(client.share_keys(&roster, &mut OsRng)?)
        })?;
        Ok(SecAggShareKeysReply {
            shares: shares.to.into_iter().map(|(party_id, ciphertext)| SecAggSealed { party_id, ciphertext }).collect(),
        })
    }

    /// Step 2: reads the shares addressed to this party and answers its
    /// masked vector.
    pub(crate) fn masked_input(&self, request: SecAggMaskedInputRequest) -> Result<SecAggMaskedInputReply> {
        let mut inbox = Inbox::new();
        for sealed in request.inbox {
            if inbox.insert(sealed.party_id, sealed.ciphertext).is_some() {
                return Err(bad(format!("the inbox holds two share pairs from party {}", sealed.party_id)));
            }
        }
        let masked = self.step(&request.round_id, Step::Shared, Some(Step::Masked), "masked_input", |client| {
            Ok(client.masked_input(&inbox)?)
        })?;
        let mut vector = Vec::with_capacity(masked.vector.len() * 4);
        for x in &masked.vector {
            vector.extend_from_slice(&x.to_le_bytes());
        }
        Ok(SecAggMaskedInputReply { vector, rejected: masked.rejected.into_iter().collect() })
    }

    /// Step 3: the shares that unmask the sum, after which the round is
    /// forgotten.
    pub(crate) fn unmask(&self, request: SecAggUnmaskRequest) -> Result<SecAggUnmaskReply> {
        let unmask = self
            .step(&request.round_id, Step::Masked, None, "unmask", |client| Ok(client.unmask(&request.survivors)?))?;
        let shares = |m: BTreeMap<PartyId, [u8; 32]>| {
            m.into_iter().map(|(party_id, share)| SecAggShare { party_id, share: share.to_vec() }).collect()
        };
        tracing::info!(party = %self.party, "aggregation round: unmasking shares sent");
        Ok(SecAggUnmaskReply { seed_shares: shares(unmask.seed_shares), key_shares: shares(unmask.key_shares) })
    }
}
