//! The server's side of a round: it relays, collects and, at the end,
//! removes the masks it is entitled to remove.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use curve25519_dalek::Scalar;
use curve25519_dalek::ristretto::RistrettoPoint;
use rayon::prelude::*;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::graph::Topology;
use crate::keys::{MASK_LABEL, agree, decode_public};
use crate::prg::apply_mask;
use crate::shamir::lagrange_at_zero;
use crate::{Advertise, Config, Inbox, Masked, PartyId, Roster, Shares, Unmask};

/// The server of one round. Every `receive_*` refuses a bad message with an
/// error naming the sender and leaves the state as it was, so the sender is
/// simply counted as dropped.
pub struct Server {
    config: Config,
    topology: Topology,
    advertised: Roster,
    masking_keys: BTreeMap<PartyId, RistrettoPoint>,
    roster_closed: bool,
    shares: BTreeMap<PartyId, Shares>,
    shared: Option<BTreeSet<PartyId>>,
    masked: BTreeMap<PartyId, Vec<u32>>,
    /// For each masked sender, the parties whose shares it rejected (and
    /// did not mask with).
    rejections: BTreeMap<PartyId, BTreeSet<PartyId>>,
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
            topology: config.topology(),
            advertised: BTreeMap::new(),
            masking_keys: BTreeMap::new(),
            roster_closed: false,
            shares: BTreeMap::new(),
            shared: None,
            masked: BTreeMap::new(),
            rejections: BTreeMap::new(),
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
            return Err(Error::Abort {
                round: "advertise",
                party: None,
                have: self.advertised.len(),
                need: self.need(),
            });
        }
        self.roster_closed = true;
        Ok(self.advertised.clone())
    }

    /// After [`Server::roster`]: the part of the roster `party` uses — its
    /// own keys and its advertising neighbours' — so that with SecAgg+ a
    /// party downloads O(k) keys rather than O(n). [`crate::Client`]
    /// accepts either.
    pub fn roster_for(&self, party: PartyId) -> Result<Roster> {
        if !self.roster_closed || !self.advertised.contains_key(&party) {
            return Err(Error::NotInRound { party, round: "advertise" });
        }
        Ok(self
            .advertising_neighbours(party)
            .into_iter()
            .chain([party])
            .filter_map(|v| Some((v, self.advertised.get(&v)?.clone())))
            .collect())
    }

    /// `party`'s neighbours that advertised, ascending.
    fn advertising_neighbours(&self, party: PartyId) -> Vec<PartyId> {
        if self.topology.is_complete() {
            self.advertised.keys().copied().filter(|&v| v != party).collect()
        } else {
            self.topology.neighbours(party).into_iter().filter(|v| self.advertised.contains_key(v)).collect()
        }
    }

    /// Round 1: a party's encrypted shares, one for each of its advertising
    /// neighbours (every other advertiser on the complete graph).
    pub fn receive_shares(&mut self, message: Shares) -> Result<()> {
        let party = message.from;
        if !self.roster_closed || self.shared.is_some() || !self.advertised.contains_key(&party) {
            return Err(Error::NotInRound { party, round: "share keys" });
        }
        if self.shares.contains_key(&party) {
            return Err(Error::Duplicate { party, round: "share keys" });
        }
        // Both sides are sorted: compare them in step, with no set built
        // per message (that was a tenth of the server's time at n = 500).
        if !message.to.keys().copied().eq(self.advertising_neighbours(party)) {
            if let Some(&other) = message.to.keys().find(|&&v| !self.topology.is_neighbour(party, v)) {
                return Err(Error::NotNeighbour { party, other, round: "share keys" });
            }
            return Err(Error::Protocol(format!("party {party} did not address exactly its advertising neighbours")));
        }
        // A share pair is 64 bytes plus a 16-byte tag.
        if message.to.values().any(|c| c.len() != 80) {
            return Err(Error::Protocol(format!("party {party} sent a share ciphertext of the wrong size")));
        }
        self.shares.insert(party, message);
        Ok(())
    }

    /// The first party of `parties` whose neighbourhood keeps fewer than
    /// `t` members of `members` (counting itself when `with_self` says
    /// so), as an abort of `round`. Nothing to check on the complete graph,
    /// where the round-wide count already decides.
    fn check_neighbourhoods<'a>(
        &self,
        round: &'static str,
        parties: impl Iterator<Item = &'a PartyId>,
        members: &BTreeSet<PartyId>,
        with_self: impl Fn(PartyId) -> bool,
    ) -> Result<()> {
        if self.topology.is_complete() {
            return Ok(());
        }
        for &u in parties {
            let around = self.topology.neighbours(u).iter().filter(|v| members.contains(v)).count();
            let have = around + usize::from(with_self(u));
            if have < self.need() {
                return Err(Error::Abort { round, party: Some(u), have, need: self.need() });
            }
        }
        Ok(())
    }

    /// Closes round 1: each sharer's inbox (the ciphertexts addressed to it
    /// by the other sharers).
    pub fn inboxes(&mut self) -> Result<BTreeMap<PartyId, Inbox>> {
        if self.shared.is_some() {
            return Err(Error::Protocol("the share-keys round is already closed".into()));
        }
        if self.shares.len() < self.need() {
            return Err(Error::Abort { round: "share keys", party: None, have: self.shares.len(), need: self.need() });
        }
        let shared: BTreeSet<PartyId> = self.shares.keys().copied().collect();
        // A sharer with fewer than t sharers around it cannot go on (its
        // client aborts), and once it drops its key has too few holders to
        // be rebuilt: the round cannot finish.
        self.check_neighbourhoods("share keys", shared.iter(), &shared, |_| true)?;
        // The ciphertexts are moved, not copied (the server has no further
        // use for them), into lists indexed by recipient that fill in
        // ascending sender order, so each inbox is built in one sorted bulk
        // step: n² copies and map insertions dominated this step.
        let mut lists = vec![None::<Vec<(PartyId, Vec<u8>)>>; self.config.n as usize + 1];
        for &v in &shared {
            lists[v as usize] = Some(Vec::with_capacity(shared.len()));
        }
        for (from, message) in std::mem::take(&mut self.shares) {
            for (to, sealed) in message.to {
                // Ciphertexts for parties that did not share are dropped.
                if let Some(Some(list)) = lists.get_mut(to as usize) {
                    list.push((from, sealed));
                }
            }
        }
        let inboxes = lists
            .into_iter()
            .enumerate()
            .filter_map(|(v, list)| Some((v as PartyId, list?.into_iter().collect())))
            .collect();
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
        // A party can only reject shares it was sent: a sharing neighbour.
        let sharers = self.shared.as_ref();
        if let Some(v) = message.rejected.iter().find(|&&v| {
            v == party || !sharers.is_some_and(|s| s.contains(&v)) || !self.topology.neighbours(party).contains(&v)
        }) {
            return Err(Error::Protocol(format!("party {party} reports rejecting shares party {v} never sent it")));
        }
        self.masked.insert(party, message.vector);
        self.rejections.insert(party, message.rejected);
        Ok(())
    }

    /// Closes round 2: the parties whose masked vectors count.
    pub fn survivors(&mut self) -> Result<Vec<PartyId>> {
        if self.masked.len() < self.need() {
            return Err(Error::Abort {
                round: "masked input",
                party: None,
                have: self.masked.len(),
                need: self.need(),
            });
        }
        // A party whose shares some other party rejected is dropped: that
        // party did not mask with it, so its vector cannot be unmasked.
        let accused: BTreeSet<PartyId> = self.rejections.values().flatten().copied().collect();
        let survivors: BTreeSet<PartyId> = self.masked.keys().copied().filter(|v| !accused.contains(v)).collect();
        if survivors.len() < self.need() {
            return Err(Error::Abort { round: "masked input", party: None, have: survivors.len(), need: self.need() });
        }
        // Only survivors reveal shares: each survivor's seed needs t of its
        // surviving neighbourhood, each dropped sharer's key t of its
        // surviving neighbours. Stop now rather than after the unmasking.
        if let Some(shared) = &self.shared {
            self.check_neighbourhoods("masked input", shared.iter(), &survivors, |u| survivors.contains(&u))?;
        }
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
        // Seed shares only for surviving members of the sender's
        // neighbourhood (itself included), key shares only for its
        // neighbours that shared keys and then dropped.
        for &v in message.seed_shares.keys() {
            if !survivors.contains(&v) {
                return Err(Error::Protocol(format!("party {party} revealed a seed share for non-survivor {v}")));
            }
            if v != party && !self.topology.is_neighbour(party, v) {
                return Err(Error::NotNeighbour { party, other: v, round: "unmask" });
            }
        }
        for &v in message.key_shares.keys() {
            if !shared.contains(&v) || survivors.contains(&v) {
                return Err(Error::Protocol(format!(
                    "party {party} revealed a key share for {v}, not a dropped sharer"
                )));
            }
            if !self.topology.is_neighbour(party, v) {
                return Err(Error::NotNeighbour { party, other: v, round: "unmask" });
            }
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
            return Err(Error::Abort { round: "unmask", party: None, have: self.unmasks.len(), need: self.need() });
        }
        // The dropped parties some survivor masked with: their keys are
        // needed. (A party whose shares every survivor rejected left no
        // mask behind, and no one holds its key.)
        let masked_with = |v: PartyId, u: &PartyId| !self.rejections.get(u).is_some_and(|r| r.contains(&v));
        let dropped: Vec<PartyId> = shared
            .difference(survivors)
            .copied()
            .filter(|&v| self.topology.neighbours(v).iter().any(|u| survivors.contains(u) && masked_with(v, u)))
            .collect();
        let keys = self.reconstruct_all(&dropped, |u| &u.key_shares)?;
        for (&v, secret) in dropped.iter().zip(keys.iter()) {
            if RistrettoPoint::mul_base(secret) != self.masking_keys[&v] {
                return Err(Error::Reconstruction { party: v });
            }
        }
        let survivors: Vec<PartyId> = survivors.iter().copied().collect();
        let seeds: Vec<Zeroizing<[u8; 32]>> = self
            .reconstruct_all(&survivors, |u| &u.seed_shares)?
            .iter()
            .map(|s| Zeroizing::new(s.to_bytes()))
            .collect();
        let dim = self.config.dim;
        // Every mask the server must take out: each survivor's self mask,
        // and the pairwise mask each dropped party left with each of its
        // surviving neighbours (one key agreement per pair, so the pairs are
        // listed first and their seeds derived in parallel).
        let alive: BTreeSet<PartyId> = survivors.iter().copied().collect();
        let pairs: Vec<(PartyId, usize)> = dropped
            .iter()
            .enumerate()
            .flat_map(|(i, &v)| {
                let alive = &alive;
                // Only pairs the survivor masked: not the parties it rejected.
                self.topology
                    .neighbours(v)
                    .into_iter()
                    .filter(move |u| alive.contains(u) && masked_with(v, u))
                    .map(move |u| (u, i))
            })
            .collect();
        let pairs: Vec<(Zeroizing<[u8; 32]>, bool)> = pairs
            .par_iter()
            .map(|&(u, i)| {
                let v = dropped[i];
                let seed = agree(&keys[i], &self.masking_keys[&u], MASK_LABEL, &self.config.session, u, v);
                // u added this mask when u < v: take it back out.
                (Zeroizing::new(seed), u > v)
            })
            .collect();
        let masks = seeds.iter().map(|seed| (seed, false)).chain(pairs.iter().map(|(seed, add)| (seed, *add)));
        // The mask streams are the server's main cost (|survivors| + |dropped|
        // × |survivors| streams of `dim` words): expanded in parallel, one
        // partial sum per worker, as is the sum of the masked vectors.
        let masks: Vec<(&Zeroizing<[u8; 32]>, bool)> = masks.collect();
        let unmasking = masks
            .par_iter()
            .fold(
                || vec![0u32; dim],
                |mut acc, (seed, add)| {
                    apply_mask(&mut acc, ***seed, *add);
                    acc
                },
            )
            .reduce(|| vec![0u32; dim], add_vectors);
        let mut sum = unmasking;
        let vectors: Vec<&Vec<u32>> = survivors.iter().filter_map(|u| self.masked.get(u)).collect();
        sum.par_chunks_mut(CHUNK).enumerate().for_each(|(i, chunk)| {
            let at = i * CHUNK;
            for vector in &vectors {
                for (s, x) in chunk.iter_mut().zip(&vector[at..]) {
                    *s = s.wrapping_add(*x);
                }
            }
        });
        Ok(sum)
    }

    /// The secrets of `parties`, each from the first `t` valid shares its
    /// holders (itself and its neighbours) reveal in their unmask messages
    /// (`pick` selects the kind of share); an abort naming the first party
    /// with fewer (in `parties` order). Reconstruction runs in parallel, with one set of
    /// Lagrange coefficients per distinct set of share holders (usually a
    /// single one on the complete graph).
    fn reconstruct_all(
        &self,
        parties: &[PartyId],
        pick: fn(&Unmask) -> &BTreeMap<PartyId, [u8; 32]>,
    ) -> Result<Vec<Zeroizing<Scalar>>> {
        let t = self.config.threshold as usize;
        let shares: Vec<(Vec<PartyId>, Vec<Scalar>)> = parties
            .par_iter()
            .map(|&v| {
                let share = |u: &Unmask| Some((u.from, Scalar::from_canonical_bytes(*pick(u).get(&v)?).into_option()?));
                let (xs, ys): (Vec<PartyId>, Vec<Scalar>) = if self.topology.is_complete() {
                    self.unmasks.values().filter_map(share).take(t).unzip()
                } else {
                    let mut holders = self.topology.neighbours(v);
                    holders.push(v);
                    holders.sort_unstable();
                    holders.iter().filter_map(|h| share(self.unmasks.get(h)?)).take(t).unzip()
                };
                if xs.len() < t {
                    return Err(Error::Abort { round: "unmask", party: Some(v), have: xs.len(), need: t });
                }
                Ok((xs, ys))
            })
            .collect::<Vec<Result<_>>>()
            // Sequentially, so the abort names the first short party.
            .into_iter()
            .collect::<Result<_>>()?;
        let mut distinct: HashMap<&[PartyId], usize> = HashMap::new();
        for (xs, _) in &shares {
            let next = distinct.len();
            distinct.entry(xs.as_slice()).or_insert(next);
        }
        let mut holders: Vec<(&[PartyId], usize)> = distinct.iter().map(|(xs, i)| (*xs, *i)).collect();
        holders.sort_by_key(|(_, i)| *i);
        let coefficients: Vec<Vec<Scalar>> =
            holders.par_iter().map(|(xs, _)| lagrange_at_zero(xs)).collect::<Result<_>>()?;
        Ok(shares
            .par_iter()
            .map(|(xs, ys)| {
                let c = &coefficients[distinct[xs.as_slice()]];
                Zeroizing::new(ys.iter().zip(c).map(|(y, c)| y * c).sum())
            })
            .collect())
    }

    /// What the server holds about individual vectors.
    pub fn view(&self) -> ServerView<'_> {
        ServerView { masked: &self.masked }
    }
}

/// Entries per task when the masked vectors are summed in parallel: 16 KiB
/// of the sum stays in the first-level cache while every vector is added.
const CHUNK: usize = 4096;

/// Entry-wise sum modulo 2^32.
fn add_vectors(mut a: Vec<u32>, b: Vec<u32>) -> Vec<u32> {
    a.iter_mut().zip(b).for_each(|(x, y)| *x = x.wrapping_add(y));
    a
}
