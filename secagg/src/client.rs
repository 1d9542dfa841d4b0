//! A participant's side of a round.

use std::collections::{BTreeMap, BTreeSet};

use curve25519_dalek::Scalar;
use curve25519_dalek::ristretto::RistrettoPoint;
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::keys::{ENCRYPT_LABEL, KeyPair, MASK_LABEL, agree, decode_public, open, seal};
use crate::prg::apply_mask;
use crate::shamir::share;
use crate::{Advertise, Config, Inbox, Masked, PartyId, Roster, Shares, Unmask};

/// One party's state through a round. Each step consumes the server's
/// relay of the previous round and produces this party's next message.
pub struct Client {
    config: Config,
    id: PartyId,
    input: Vec<u32>,
    encryption: KeyPair,
    masking: KeyPair,
    /// The self-mask seed `b_u`.
    seed: Zeroizing<[u8; 32]>,
    seed_scalar: Scalar,
    /// This party's neighbours in the round's graph.
    neighbours: BTreeSet<PartyId>,
    /// Advertising neighbours' (encryption, masking) public keys.
    roster: BTreeMap<PartyId, (RistrettoPoint, RistrettoPoint)>,
    /// This party and its neighbours that shared keys with it, once known.
    shared: BTreeSet<PartyId>,
    /// Shares held for each party: (masking-key share, seed share).
    held: BTreeMap<PartyId, (Scalar, Scalar)>,
    /// Parties whose shares failed authentication.
    rejected: BTreeSet<PartyId>,
}

impl Client {
    /// A participant with id `id` (1..=n) contributing `input`.
    pub fn new(config: &Config, id: PartyId, input: Vec<u32>, rng: &mut impl CryptoRngCore) -> Result<Client> {
        if id == 0 || id > config.n {
            return Err(Error::Config(format!("party id {id} is outside 1..={}", config.n)));
        }
        if input.len() != config.dim {
            return Err(Error::WrongLength { party: id, got: input.len(), want: config.dim });
        }
        let seed_scalar = Scalar::random(rng);
        Ok(Client {
            config: config.clone(),
            id,
            neighbours: config.neighbours(id).into_iter().collect(),
            input,
            encryption: KeyPair::generate(rng),
            masking: KeyPair::generate(rng),
            seed: Zeroizing::new(seed_scalar.to_bytes()),
            seed_scalar,
            roster: BTreeMap::new(),
            shared: BTreeSet::new(),
            held: BTreeMap::new(),
            rejected: BTreeSet::new(),
        })
    }

    /// This party's id.
    pub fn id(&self) -> PartyId {
        self.id
    }

    /// Parties whose shares this party could not authenticate: it does not
    /// mask with them and reports them in its [`Masked`] message, and the
    /// server drops them from the round.
    pub fn rejected(&self) -> &BTreeSet<PartyId> {
        &self.rejected
    }

    /// Round 0: the public keys to advertise.
    pub fn advertise(&self) -> Advertise {
        Advertise { from: self.id, encryption: self.encryption.public, masking: self.masking.public }
    }

    /// Round 1: checks the roster and shares this party's masking key and
    /// self-mask seed among itself and its neighbours on the roster. The
    /// roster may be the whole one or only this party's neighbourhood
    /// ([`crate::Server::roster_for`]): entries for other parties are
    /// checked for consistency and otherwise ignored.
    pub fn share_keys(&mut self, roster: &Roster, rng: &mut impl CryptoRngCore) -> Result<Shares> {
        if roster.get(&self.id) != Some(&self.advertise()) {
            return Err(Error::Protocol(format!("the roster does not hold party {}'s own keys", self.id)));
        }
        for (&v, keys) in roster {
            if v == 0 || v > self.config.n || keys.from != v {
                return Err(Error::Protocol(format!("the roster names party {v} inconsistently")));
            }
            if !self.neighbours.contains(&v) {
                continue;
            }
            let (Some(e), Some(m)) = (decode_public(&keys.encryption), decode_public(&keys.masking)) else {
                return Err(Error::InvalidKey { party: v });
            };
            self.roster.insert(v, (e, m));
        }
        // The share holders: this party and its advertising neighbours.
        let holders = self.roster.len() + 1;
        let need = self.config.threshold as usize;
        if holders < need {
            return Err(Error::Abort { round: "share keys", party: self.party(), have: holders, need });
        }
        let t = self.config.threshold;
        let ids: Vec<PartyId> =
            self.roster.keys().copied().chain([self.id]).collect::<BTreeSet<_>>().into_iter().collect();
        let key_shares = share(&self.masking.secret, t, ids.iter().copied(), rng);
        let seed_shares = share(&self.seed_scalar, t, ids.iter().copied(), rng);
        let mut to = BTreeMap::new();
        for ((v, s), (_, b)) in key_shares.into_iter().zip(seed_shares) {
            if v == self.id {
                self.held.insert(v, (s, b));
                continue;
            }
            let mut plain = Zeroizing::new([0u8; 64]);
            plain[..32].copy_from_slice(s.as_bytes());
            plain[32..].copy_from_slice(b.as_bytes());
            let Some(&(enc, _)) = self.roster.get(&v) else { continue };
            let key =
                Zeroizing::new(agree(&self.encryption.secret, &enc, ENCRYPT_LABEL, &self.config.session, self.id, v));
            to.insert(v, seal(&key, &self.config.session, self.id, v, &plain[..]));
        }
        Ok(Shares { from: self.id, to })
    }

    /// The party to name in an abort: this one, when its neighbourhood is
    /// smaller than the round (on the complete graph the whole round is
    /// short, which names no one).
    fn party(&self) -> Option<PartyId> {
        (self.neighbours.len() + 1 < self.config.n as usize).then_some(self.id)
    }

    /// Round 2: reads the shares addressed to this party and sends its
    /// masked vector.
    pub fn masked_input(&mut self, inbox: &Inbox) -> Result<Masked> {
        for &v in inbox.keys() {
            if !self.neighbours.contains(&v) {
                return Err(Error::NotNeighbour { party: v, other: self.id, round: "share keys" });
            }
            if !self.roster.contains_key(&v) {
                return Err(Error::NotInRound { party: v, round: "share keys" });
            }
        }
        let mut shared: BTreeSet<PartyId> = inbox.keys().copied().collect();
        shared.insert(self.id);
        let need = self.config.threshold as usize;
        if shared.len() < need {
            return Err(Error::Abort { round: "masked input", party: self.party(), have: shared.len(), need });
        }
        for (&v, sealed) in inbox {
            let Some(&(enc, _)) = self.roster.get(&v) else {
                return Err(Error::NotInRound { party: v, round: "share keys" });
            };
            let key =
                Zeroizing::new(agree(&self.encryption.secret, &enc, ENCRYPT_LABEL, &self.config.session, v, self.id));
            let plain = open(&key, &self.config.session, v, self.id, sealed).map(Zeroizing::new);
            let parsed = plain.as_deref().and_then(|p| {
                let s = Scalar::from_canonical_bytes(p.get(..32)?.try_into().ok()?).into_option()?;
                let b = Scalar::from_canonical_bytes(p.get(32..64)?.try_into().ok()?).into_option()?;
                (p.len() == 64).then_some((s, b))
            });
            match parsed {
                Some(pair) => {
                    self.held.insert(v, pair);
                }
                None => {
                    self.rejected.insert(v);
                }
            }
        }
        let mut vector = self.input.clone();
        apply_mask(&mut vector, *self.seed, true);
        // No mask with a party whose shares failed authentication here: the
        // server drops it (this party reports it), and could not remove
        // such a mask without shares this party does not hold.
        for &v in shared.iter().filter(|&&v| v != self.id && !self.rejected.contains(&v)) {
            let Some(&(_, mask)) = self.roster.get(&v) else { continue };
            let seed = Zeroizing::new(agree(&self.masking.secret, &mask, MASK_LABEL, &self.config.session, self.id, v));
            // Opposite signs at the two ends of a pair: they cancel in the sum.
            apply_mask(&mut vector, *seed, self.id < v);
        }
        self.shared = shared;
        Ok(Masked { from: self.id, vector, rejected: self.rejected.clone() })
    }

    /// Checks a survivor list as [`Client::unmask`] does, without revealing
    /// anything: itself and at least `t` of its neighbourhood among the
    /// survivors, no surviving neighbour that never shared keys with it, and
    /// no party whose shares it rejected. A network layer calls it before
    /// signing the list (the consistency check of Bonawitz et al.'s
    /// malicious-server variant). Returns the list as a set.
    pub fn check_survivors(&self, survivors: &[PartyId]) -> Result<BTreeSet<PartyId>> {
        let survivors: BTreeSet<PartyId> = survivors.iter().copied().collect();
        if !survivors.contains(&self.id) || survivors.iter().any(|&v| v == 0 || v > self.config.n) {
            return Err(Error::Protocol("the survivor list names unknown parties or not this one".into()));
        }
        let local: BTreeSet<PartyId> =
            survivors.iter().copied().filter(|v| *v == self.id || self.neighbours.contains(v)).collect();
        let need = self.config.threshold as usize;
        if local.len() < need {
            return Err(Error::Abort { round: "unmask", party: self.party(), have: local.len(), need });
        }
        if !local.is_subset(&self.shared) {
            return Err(Error::Protocol("the survivor list is not a subset of the parties that shared keys".into()));
        }
        if let Some(v) = self.rejected.iter().find(|v| survivors.contains(v)) {
            return Err(Error::Protocol(format!(
                "the survivor list holds party {v}, whose shares this party rejected and did not mask with"
            )));
        }
        Ok(survivors)
    }

    /// Round 3: given the parties whose masked input the server received,
    /// reveals seed shares for the surviving members of its neighbourhood
    /// and masking-key shares for the neighbours that shared keys but sent
    /// no input — never both for one party. It first checks the list
    /// ([`Client::check_survivors`]).
    pub fn unmask(&self, survivors: &[PartyId]) -> Result<Unmask> {
        let survivors = self.check_survivors(survivors)?;
        let mut out = Unmask { from: self.id, seed_shares: BTreeMap::new(), key_shares: BTreeMap::new() };
        for (&v, (key_share, seed_share)) in self.held.iter().filter(|(v, _)| self.shared.contains(v)) {
            if survivors.contains(&v) {
                out.seed_shares.insert(v, seed_share.to_bytes());
            } else {
                out.key_shares.insert(v, key_share.to_bytes());
            }
        }
        Ok(out)
    }
}
