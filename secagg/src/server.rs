//! The server's side of a round: it relays, collects and, at the end,
//! removes the masks it is entitled to remove.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use curve25519_dalek::Scalar;
use curve25519_dalek::ristretto::RistrettoPoint;
use rayon::prelude::*;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::keys::{MASK_LABEL, agree, decode_public};
use crate::prg::apply_mask;
use crate::shamir::lagrange_at_zero;
use crate::{Advertise, Config, Inbox, Masked, PartyId, Roster, Shares, Unmask};

/// The server of one round. Every `receive_*` refuses a bad message with an
/// error naming the sender and leaves the state as it was, so the sender is
/// simply counted as dropped.
pub struct Server {
    config: Config,
    advertised: Roster,
    masking_keys: BTreeMap<PartyId, RistrettoPoint>,
    roster_closed: bool,
    shares: BTreeMap<PartyId, Shares>,
    shared: Option<BTreeSet<PartyId>>,
    masked: BTreeMap<PartyId, Vec<u32>>,
    survivors: Option<BTreeSet<PartyId>>,
    unmasks: BTreeMap<PartyId, Unmask>,
}

/// Everything the server holds about parties' vectors: only masked ones.
pub struct ServerView<'a> {
    /// Masked vectors by sender.
    pub masked: &'a BTreeMap<PartyId, Vec<u32>>,
}

impl Server {
    /// A server for a round with `config`.
    pub fn new(config: &Config) -> Server {
        Server {
            config: config.clone(),
            advertised: BTreeMap::new(),
            masking_keys: BTreeMap::new(),
            roster_closed: false,
            shares: BTreeMap::new(),
            shared: None,
            masked: BTreeMap::new(),
            survivors: None,
            unmasks: BTreeMap::new(),
        }
    }

    fn need(&self) -> usize {
        self.config.threshold as usize
    }

    /// Round 0: a party's public keys.
    pub fn receive_advertise(&mut self, message: Advertise) -> Result<()> {
        let party = message.from;
        if self.roster_closed || party == 0 || party > self.config.n {
            return Err(Error::NotInRound { party, round: "advertise" });
        }
        if self.advertised.contains_key(&party) {
            return Err(Error::Duplicate { party, round: "advertise" });
        }
        let (Some(_), Some(masking)) = (decode_public(&message.encryption), decode_public(&message.masking)) else {
            return Err(Error::InvalidKey { party });
        };
        self.masking_keys.insert(party, masking);
        self.advertised.insert(party, message);
        Ok(())
    }

    /// Closes round 0: the roster every advertiser receives.
    pub fn roster(&mut self) -> Result<Roster> {
        if self.advertised.len() < self.need() {
            return Err(Error::Abort { round: "advertise", have: self.advertised.len(), need: self.need() });
        }
        self.roster_closed = true;
        Ok(self.advertised.clone())
    }

    /// Round 1: a party's encrypted shares, one for every other advertiser.
    pub fn receive_shares(&mut self, message: Shares) -> Result<()> {
        let party = message.from;
        if !self.roster_closed || self.shared.is_some() || !self.advertised.contains_key(&party) {
            return Err(Error::NotInRound { party, round: "share keys" });
        }
        if self.shares.contains_key(&party) {
            return Err(Error::Duplicate { party, round: "share keys" });
        }
        let expected: BTreeSet<PartyId> = self.advertised.keys().copied().filter(|&v| v != party).collect();
        let addressed: BTreeSet<PartyId> = message.to.keys().copied().collect();
        if addressed != expected {
            return Err(Error::Protocol(format!("party {party} did not address exactly the other advertisers")));
        }
        // A share pair is 64 bytes plus a 16-byte tag.
        if message.to.values().any(|c| c.len() != 80) {
            return Err(Error::Protocol(format!("party {party} sent a share ciphertext of the wrong size")));
        }
        self.shares.insert(party, message);
        Ok(())
    }

    /// Closes round 1: each sharer's inbox (the ciphertexts addressed to it
    /// by the other sharers).
    pub fn inboxes(&mut self) -> Result<BTreeMap<PartyId, Inbox>> {
        if self.shares.len() < self.need() {
            return Err(Error::Abort { round: "share keys", have: self.shares.len(), need: self.need() });
        }
        let shared: BTreeSet<PartyId> = self.shares.keys().copied().collect();
        let mut inboxes: BTreeMap<PartyId, Inbox> = shared.iter().map(|&v| (v, Inbox::new())).collect();
        for (&from, message) in &self.shares {
            for (to, sealed) in &message.to {
                if let Some(inbox) = inboxes.get_mut(to) {
                    inbox.insert(from, sealed.clone());
                }
            }
        }
        self.shared = Some(shared);
        Ok(inboxes)
    }

    /// Round 2: a party's masked vector.
    pub fn receive_masked(&mut self, message: Masked) -> Result<()> {
        let party = message.from;
        let in_round = self.survivors.is_none() && self.shared.as_ref().is_some_and(|s| s.contains(&party));
        if !in_round {
            return Err(Error::NotInRound { party, round: "masked input" });
        }
        if self.masked.contains_key(&party) {
            return Err(Error::Duplicate { party, round: "masked input" });
        }
        if message.vector.len() != self.config.dim {
            return Err(Error::WrongLength { party, got: message.vector.len(), want: self.config.dim });
        }
        self.masked.insert(party, message.vector);
        Ok(())
    }

    /// Closes round 2: the parties whose masked vectors count.
    pub fn survivors(&mut self) -> Result<Vec<PartyId>> {
        if self.masked.len() < self.need() {
            return Err(Error::Abort { round: "masked input", have: self.masked.len(), need: self.need() });
        }
        let survivors: BTreeSet<PartyId> = self.masked.keys().copied().collect();
        let list = survivors.iter().copied().collect();
        self.survivors = Some(survivors);
        Ok(list)
    }

    /// Round 3: a survivor's shares.
    pub fn receive_unmask(&mut self, message: Unmask) -> Result<()> {
        let party = message.from;
        let (Some(shared), Some(survivors)) = (&self.shared, &self.survivors) else {
            return Err(Error::NotInRound { party, round: "unmask" });
        };
        if !survivors.contains(&party) {
            return Err(Error::NotInRound { party, round: "unmask" });
        }
        if self.unmasks.contains_key(&party) {
            return Err(Error::Duplicate { party, round: "unmask" });
        }
        let seeds_ok = message.seed_shares.keys().all(|v| survivors.contains(v));
        let keys_ok = message.key_shares.keys().all(|v| shared.contains(v) && !survivors.contains(v));
        if !seeds_ok || !keys_ok {
            return Err(Error::Protocol(format!("party {party} revealed shares it must not")));
        }
        self.unmasks.insert(party, message);
        Ok(())
    }

    /// Closes round 3: the sum of the survivors' vectors.
    pub fn finish(&self) -> Result<Vec<u32>> {
        let (Some(shared), Some(survivors)) = (&self.shared, &self.survivors) else {
            return Err(Error::Protocol("the round has not reached unmasking".into()));
        };
        if self.unmasks.len() < self.need() {
            return Err(Error::Abort { round: "unmask", have: self.unmasks.len(), need: self.need() });
        }
        let t = self.config.threshold as usize;
        // Usually every secret is shared among the same first t holders:
        // their Lagrange coefficients are computed once.
        let mut coefficients: HashMap<Vec<PartyId>, Vec<Scalar>> = HashMap::new();
        let mut collect = |v: PartyId, pick: fn(&Unmask) -> &BTreeMap<PartyId, [u8; 32]>| -> Result<Scalar> {
            let shares: Vec<(PartyId, Scalar)> = self
                .unmasks
                .values()
                .filter_map(|u| {
                    let bytes = pick(u).get(&v)?;
                    Some((u.from, Scalar::from_canonical_bytes(*bytes).into_option()?))
                })
                .take(t)
                .collect();
            if shares.len() < t {
                return Err(Error::Abort { round: "unmask", have: shares.len(), need: t });
            }
            let xs: Vec<PartyId> = shares.iter().map(|(x, _)| *x).collect();
            let c = match coefficients.get(&xs) {
                Some(c) => c,
                None => {
                    let c = lagrange_at_zero(&xs)?;
                    coefficients.entry(xs).or_insert(c)
                }
            };
            Ok(shares.iter().zip(c).map(|((_, y), c)| y * c).sum())
        };
        let mut sum = vec![0u32; self.config.dim];
        for vector in self.masked.values() {
            for (s, x) in sum.iter_mut().zip(vector) {
                *s = s.wrapping_add(*x);
            }
        }
        let mut dropped = Vec::new();
        for &v in shared.difference(survivors) {
            let secret = collect(v, |u| &u.key_shares)?;
            if RistrettoPoint::mul_base(&secret) != self.masking_keys[&v] {
                return Err(Error::Reconstruction { party: v });
            }
            dropped.push((v, Zeroizing::new(secret)));
        }
        // The dropped parties' pairwise masks are the server's main cost
        // (|dropped| × |survivors| streams of `dim` words): expand them in
        // parallel, one partial sum per worker.
        let dim = self.config.dim;
        let leftover = survivors
            .par_iter()
            .fold(
                || vec![0u32; dim],
                |mut acc, &u| {
                    for (v, secret) in &dropped {
                        let seed = agree(secret, &self.masking_keys[&u], MASK_LABEL, &self.config.session, u, *v);
                        // u added this mask when u < v: take it back out.
                        apply_mask(&mut acc, seed, u > *v);
                    }
                    acc
                },
            )
            .reduce(|| vec![0u32; dim], add_vectors);
        for (s, x) in sum.iter_mut().zip(leftover) {
            *s = s.wrapping_add(x);
        }
        let mut seeds = Vec::with_capacity(survivors.len());
        for &u in survivors {
            seeds.push(Zeroizing::new(collect(u, |m| &m.seed_shares)?.to_bytes()));
        }
        let self_masks = seeds
            .par_iter()
            .fold(
                || vec![0u32; dim],
                |mut acc, seed| {
                    apply_mask(&mut acc, **seed, true);
                    acc
                },
            )
            .reduce(|| vec![0u32; dim], add_vectors);
        for (s, m) in sum.iter_mut().zip(self_masks) {
            *s = s.wrapping_sub(m);
        }
        Ok(sum)
    }

    /// What the server holds about individual vectors.
    pub fn view(&self) -> ServerView<'_> {
        ServerView { masked: &self.masked }
    }
}

/// Entry-wise sum modulo 2^32.
fn add_vectors(mut a: Vec<u32>, b: Vec<u32>) -> Vec<u32> {
    a.iter_mut().zip(b).for_each(|(x, y)| *x = x.wrapping_add(y));
    a
}
