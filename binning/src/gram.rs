//! The joint Gram matrix: sums of products of columns held by different
//! participants, revealed to the lender only as a total.
//!
//! Logistic-regression weights fitted with a second-order (Taylor) loss,
//! as in FATE's hetero-LR, depend on the data only through `X̃ᵀX̃` and
//! `X̃ᵀy` (`X̃` the design with an intercept column). Each participant —
//! every party and the lender, whose columns are its own features and the
//! label — holds some columns of `X̃` for the same aligned rows. The
//! blocks `XᵢᵀXⱼ` of two participants are computed by the commodity-server
//! scalar product of Du and Atallah, with the coordinator as the dealer:
//!
//! 1. The dealer ([`deal`]) gives each side of each pair a seed for a
//!    uniformly random mask `Rᵢ` (rows × columns over `Z/2⁶⁴`) and a
//!    correction `cᵢ` such that `cᵢ + cⱼ = RᵢᵀRⱼ`; `cᵢ` is uniform on its
//!    own.
//! 2. Each participant sends `X̂ᵢ = Xᵢ + Rᵢ` to the other side of each
//!    pair, sealed end to end (ristretto255 Diffie–Hellman, HKDF-SHA-256,
//!    ChaCha20-Poly1305) so the dealer, who knows `Rᵢ`, cannot read it
//!    ([`Participant::masked`]).
//! 3. The lower-numbered side computes `cᵢ − RᵢᵀX̂ⱼ`, the other
//!    `X̂ᵢᵀXⱼ + cⱼ`; the two add up to `XᵢᵀXⱼ`. Each participant seals its
//!    shares and its own block `[1 Xᵢ]ᵀ[1 Xᵢ]` to the lender
//!    ([`Participant::contribution`]).
//! 4. The lender adds the shares and assembles the whole matrix
//!    ([`assemble`]).
//!
//! # What each role learns
//!
//! - **Lender**: the Gram matrix `[1 X y]ᵀ[1 X y]` over the training rows
//!   — per feature pair one sum over all rows — and nothing per row: each
//!   share alone is uniformly random, only their sum is meaningful.
//! - **Party**: nothing. What it receives is masked by a uniform mask it
//!   does not know (a one-time pad over `Z/2⁶⁴`).
//! - **Coordinator (dealer)**: nothing. It sees only sealed messages; the
//!   masks and corrections it made are independent of the data.
//!
//! Assumptions: semi-honest roles, and a dealer that does not collude with
//! a participant (a dealer colluding with the receiver of `X̂ᵢ` can unmask
//! `Xᵢ`). Values are fixed point with [`FRACTION_BITS`] fractional bits and
//! magnitude at most [`VALUE_LIMIT`], and a round has at most [`MAX_ROWS`]
//! rows, so no sum of products wraps.

use std::collections::BTreeMap;

use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRngCore, RngCore, SeedableRng};
use rayon::prelude::*;
use zeroize::{Zeroize, ZeroizeOnDrop};

use jointscore_secagg::{KeyPair, PartyId, SessionId, decode_public, open, seal};

use crate::error::{Error, Result};

/// Fractional bits of the fixed-point encoding: a value `v` is
/// `round(v × 2¹⁶)` in two's complement.
pub const FRACTION_BITS: u32 = 16;
/// Largest magnitude of an encoded value. WoE values beyond it mean a bin
/// with next to no goods or bads; the caller clamps or refuses them.
pub const VALUE_LIMIT: f64 = 16.0;
/// Most rows of one round: `MAX_ROWS × (VALUE_LIMIT × 2¹⁶)²` stays below
/// `2⁶³`, so no entry of the Gram matrix wraps.
pub const MAX_ROWS: usize = 1 << 23;
/// HKDF label of the keys that seal masked columns.
const MASKED_LABEL: &[u8] = b"jointscore.gram.v1.masked";
/// HKDF label of the keys that seal contributions to the lender. A key per
/// kind of message: a participant sends the lender both kinds under the
/// same pair of ids, and one key with one nonce for both would leak their
/// XOR.
const CONTRIBUTION_LABEL: &[u8] = b"jointscore.gram.v1.contribution";

/// The shape of a round, which every role agrees on before it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Aligned rows every participant holds, in the same order.
    pub rows: usize,
    /// Columns each participant holds; participant `i` is index `i`.
    pub columns: Vec<usize>,
}

impl Layout {
    /// Checks the shape: 2 or more participants with at least one column
    /// each, and 1 to [`MAX_ROWS`] rows.
    pub fn validate(&self) -> Result<()> {
        if self.columns.len() < 2 {
            return Err(Error::Shape(format!("a round needs two participants or more, not {}", self.columns.len())));
        }
        if let Some(i) = self.columns.iter().position(|&c| c == 0) {
            return Err(Error::Shape(format!("participant {i} holds no column")));
        }
        if self.rows == 0 || self.rows > MAX_ROWS {
            return Err(Error::Shape(format!("{} rows: a round takes 1 to {MAX_ROWS}", self.rows)));
        }
        Ok(())
    }

    /// Columns of the assembled matrix: the intercept, then every
    /// participant's columns in participant order.
    pub fn size(&self) -> usize {
        1 + self.columns.iter().sum::<usize>()
    }

    /// Where participant `i`'s first column sits in the assembled matrix.
    pub fn offset(&self, participant: usize) -> usize {
        1 + self.columns[..participant].iter().sum::<usize>()
    }

    /// The bytes of participant `i`'s sealed contribution to the lender.
    fn contribution_words(&self, i: usize) -> usize {
        let own = (self.columns[i] + 1).pow(2);
        own + (0..self.columns.len()).filter(|&j| j != i).map(|j| self.columns[i] * self.columns[j]).sum::<usize>()
    }
}

/// One participant's columns in fixed point, column-major; wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Columns {
    rows: usize,
    cols: usize,
    data: Vec<u64>,
}

impl Columns {
    /// Encodes `columns` (each `rows` long). Refuses non-finite values and
    /// values beyond [`VALUE_LIMIT`], naming the column and row.
    pub fn encode(rows: usize, columns: &[Vec<f64>]) -> Result<Columns> {
        let mut data = Vec::with_capacity(rows * columns.len());
        for (c, column) in columns.iter().enumerate() {
            if column.len() != rows {
                return Err(Error::Shape(format!("column {c} holds {} rows, not {rows}", column.len())));
            }
            for (r, &v) in column.iter().enumerate() {
                if !(v.is_finite() && v.abs() <= VALUE_LIMIT) {
                    return Err(Error::Shape(format!(
                        "column {c}, row {r}: value beyond ±{VALUE_LIMIT} or not a number"
                    )));
                }
                data.push(fixed(v));
            }
        }
        Ok(Columns { rows, cols: columns.len(), data })
    }
}

impl Columns {
    /// `[1 X]ᵀ[1 X]` over these columns, row-major, `(cols + 1)²` words.
    fn own_block(&self) -> Vec<u64> {
        let mut with_one = vec![1u64 << FRACTION_BITS; self.rows];
        with_one.extend_from_slice(&self.data);
        let block = cross(&with_one, self.cols + 1, &with_one, self.cols + 1, self.rows);
        with_one.zeroize();
        block
    }
}

/// `v` in fixed point, two's complement in `Z/2⁶⁴`.
fn fixed(v: f64) -> u64 {
    (v * f64::from(1u32 << FRACTION_BITS)).round() as i64 as u64
}

/// What the dealer gives one side of one pair: the seed of its mask and
/// its correction. Wiped on drop: with it, the peer could unmask.
#[derive(Clone, Debug, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct PairSeed {
    /// The other side of the pair.
    pub peer: PartyId,
    /// Seed of the mask `R` (ChaCha20, rows × own columns, column-major).
    pub seed: [u8; 32],
    /// The correction `c`, in the pair block's orientation: the
    /// lower-numbered participant's columns × the higher's, row-major.
    pub correction: Vec<u64>,
}

/// Everything the dealer gives one participant, one [`PairSeed`] per peer
/// in peer order. It must reach that participant only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deal {
    /// The participant it is for.
    pub participant: PartyId,
    /// One per other participant, in increasing peer order.
    pub pairs: Vec<PairSeed>,
}

/// The mask a seed expands to: `rows × cols` uniform words, column-major.
fn mask(seed: &[u8; 32], rows: usize, cols: usize) -> Vec<u64> {
    let mut rng = ChaCha20Rng::from_seed(*seed);
    (0..rows * cols).map(|_| rng.next_u64()).collect()
}

/// `AᵀB` over `Z/2⁶⁴` for column-major `a` (`rows × p`) and `b`
/// (`rows × q`), row-major `p × q`.
fn cross(a: &[u64], p: usize, b: &[u64], q: usize, rows: usize) -> Vec<u64> {
    (0..p * q)
        .into_par_iter()
        .map(|k| {
            let (x, y) = (&a[(k / q) * rows..(k / q + 1) * rows], &b[(k % q) * rows..(k % q + 1) * rows]);
            x.iter().zip(y).fold(0u64, |s, (u, v)| s.wrapping_add(u.wrapping_mul(*v)))
        })
        .collect()
}

/// The dealer's step: fresh masks and corrections for every pair of the
/// layout. Its output is independent of any data.
pub fn deal(layout: &Layout, rng: &mut impl CryptoRngCore) -> Result<Vec<Deal>> {
    layout.validate()?;
    let n = layout.columns.len();
    let mut deals: Vec<Deal> = (0..n).map(|i| Deal { participant: i as PartyId, pairs: Vec::new() }).collect();
    for i in 0..n {
        for j in i + 1..n {
            let (mut si, mut sj) = ([0u8; 32], [0u8; 32]);
            rng.fill_bytes(&mut si);
            rng.fill_bytes(&mut sj);
            let (p, q) = (layout.columns[i], layout.columns[j]);
            let (mut ri, mut rj) = (mask(&si, layout.rows, p), mask(&sj, layout.rows, q));
            let product = cross(&ri, p, &rj, q, layout.rows);
            ri.zeroize();
            rj.zeroize();
            let ci: Vec<u64> = (0..p * q).map(|_| rng.next_u64()).collect();
            let cj: Vec<u64> = product.iter().zip(&ci).map(|(m, c)| m.wrapping_sub(*c)).collect();
            deals[i].pairs.push(PairSeed { peer: j as PartyId, seed: si, correction: ci });
            deals[j].pairs.push(PairSeed { peer: i as PartyId, seed: sj, correction: cj });
        }
    }
    for d in &mut deals {
        d.pairs.sort_by_key(|p| p.peer);
    }
    Ok(deals)
}

/// A message sealed from one participant to another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// Sender.
    pub from: PartyId,
    /// Receiver.
    pub to: PartyId,
    /// ChaCha20-Poly1305 ciphertext.
    pub bytes: Vec<u8>,
}

/// One participant's side of a round: its columns, its fresh key pair and
/// what the dealer gave it.
pub struct Participant {
    session: SessionId,
    layout: Layout,
    id: PartyId,
    own: Columns,
    keys: KeyPair,
    peers: BTreeMap<PartyId, [u8; 32]>,
}

impl Participant {
    /// Joins round `session` as participant `id` of `layout` with its own
    /// columns, under a fresh key pair (publish [`Participant::public_key`]
    /// to the others, authenticated).
    pub fn new(
        session: SessionId,
        layout: &Layout,
        id: PartyId,
        own: Columns,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Participant> {
        layout.validate()?;
        let want =
            layout.columns.get(id as usize).copied().ok_or_else(|| {
                Error::Shape(format!("participant {id} is not in a round of {}", layout.columns.len()))
            })?;
        if own.rows != layout.rows || own.cols != want {
            return Err(Error::Shape(format!(
                "participant {id} holds {} rows × {} columns; the round expects {} × {want}",
                own.rows, own.cols, layout.rows
            )));
        }
        Ok(Participant {
            session,
            layout: layout.clone(),
            id,
            own,
            keys: KeyPair::generate(rng),
            peers: BTreeMap::new(),
        })
    }

    /// This participant's public key for the round.
    pub fn public_key(&self) -> [u8; 32] {
        self.keys.public()
    }

    /// Records every participant's public key (this one's included, as
    /// received), refusing a missing or invalid one.
    pub fn set_keys(&mut self, keys: &BTreeMap<PartyId, [u8; 32]>) -> Result<()> {
        for i in 0..self.layout.columns.len() as PartyId {
            let key = keys.get(&i).ok_or_else(|| Error::Shape(format!("no key for participant {i}")))?;
            decode_public(key).ok_or(Error::InvalidEncoding("participant key"))?;
            self.peers.insert(i, *key);
        }
        if self.peers.get(&self.id) != Some(&self.keys.public()) {
            return Err(Error::Shape(format!("the key listed for participant {} is not its own", self.id)));
        }
        Ok(())
    }

    fn key_with(&self, peer: PartyId, label: &[u8]) -> Result<[u8; 32]> {
        let public = self.peers.get(&peer).ok_or_else(|| Error::Shape(format!("no key for participant {peer}")))?;
        let point = decode_public(public).ok_or(Error::InvalidEncoding("participant key"))?;
        Ok(self.keys.shared_key(&point, label, &self.session, self.id, peer))
    }

    fn check_deal(&self, deal: &Deal) -> Result<()> {
        let peers: Vec<PartyId> = deal.pairs.iter().map(|p| p.peer).collect();
        let want: Vec<PartyId> = (0..self.layout.columns.len() as PartyId).filter(|&p| p != self.id).collect();
        if deal.participant != self.id || peers != want {
            return Err(Error::Shape(format!("the deal is not for participant {} of this round", self.id)));
        }
        for pair in &deal.pairs {
            let size = self.own.cols * self.layout.columns[pair.peer as usize];
            if pair.correction.len() != size {
                return Err(Error::Shape(format!(
                    "the correction for peer {} holds {} words",
                    pair.peer,
                    pair.correction.len()
                )));
            }
        }
        Ok(())
    }

    /// Step 2: the masked columns `X + R` for each peer, sealed to it.
    pub fn masked(&self, deal: &Deal) -> Result<Vec<Sealed>> {
        self.check_deal(deal)?;
        deal.pairs
            .iter()
            .map(|pair| {
                let mut r = mask(&pair.seed, self.layout.rows, self.own.cols);
                let mut words: Vec<u8> = Vec::with_capacity(r.len() * 8);
                for (m, x) in r.iter().zip(&self.own.data) {
                    words.extend_from_slice(&m.wrapping_add(*x).to_le_bytes());
                }
                r.zeroize();
                let mut key = self.key_with(pair.peer, MASKED_LABEL)?;
                let bytes = seal(&key, &self.session, self.id, pair.peer, &words);
                key.zeroize();
                Ok(Sealed { from: self.id, to: pair.peer, bytes })
            })
            .collect()
    }

    /// Step 3: opens each peer's masked columns, computes this side's
    /// share of every pair block and its own block, and seals them to the
    /// `lender`. `inbox` must hold one message from each peer.
    pub fn contribution(&self, deal: &Deal, inbox: &[Sealed], lender: PartyId) -> Result<Sealed> {
        self.check_deal(deal)?;
        let rows = self.layout.rows;
        let mut words: Vec<u64> = Vec::with_capacity(self.layout.contribution_words(self.id as usize));
        words.extend(self.own.own_block());
        for pair in &deal.pairs {
            let peer_cols = self.layout.columns[pair.peer as usize];
            let message = inbox
                .iter()
                .find(|m| m.from == pair.peer && m.to == self.id)
                .ok_or_else(|| Error::Shape(format!("no masked columns from participant {}", pair.peer)))?;
            let mut key = self.key_with(pair.peer, MASKED_LABEL)?;
            let opened = open(&key, &self.session, pair.peer, self.id, &message.bytes);
            key.zeroize();
            let opened = opened.ok_or(Error::InvalidEncoding("sealed masked columns"))?;
            if opened.len() != rows * peer_cols * 8 {
                return Err(Error::Shape(format!(
                    "participant {} sent {} bytes of masked columns, not {}",
                    pair.peer,
                    opened.len(),
                    rows * peer_cols * 8
                )));
            }
            let theirs: Vec<u64> =
                opened.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default())).collect();
            let share: Vec<u64> = if self.id < pair.peer {
                // cᵢ − RᵢᵀX̂ⱼ, own columns × peer columns.
                let mut r = mask(&pair.seed, rows, self.own.cols);
                let product = cross(&r, self.own.cols, &theirs, peer_cols, rows);
                r.zeroize();
                pair.correction.iter().zip(&product).map(|(c, p)| c.wrapping_sub(*p)).collect()
            } else {
                // X̂ᵢᵀXⱼ + cⱼ, peer columns × own columns: blocks are
                // always lower participant first.
                let product = cross(&theirs, peer_cols, &self.own.data, self.own.cols, rows);
                product.iter().zip(&pair.correction).map(|(p, c)| p.wrapping_add(*c)).collect()
            };
            words.extend(share);
        }
        let mut bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        words.zeroize();
        let mut key = self.key_with(lender, CONTRIBUTION_LABEL)?;
        let sealed = seal(&key, &self.session, self.id, lender, &bytes);
        key.zeroize();
        bytes.zeroize();
        Ok(Sealed { from: self.id, to: lender, bytes: sealed })
    }

    /// Step 4, at the lender (this participant): opens every participant's
    /// contribution and assembles the Gram matrix.
    pub fn assemble(&self, contributions: &[Sealed]) -> Result<Gram> {
        let layout = &self.layout;
        let n = layout.columns.len();
        let mut parts: Vec<Vec<u64>> = Vec::with_capacity(n);
        for i in 0..n as PartyId {
            let message = contributions
                .iter()
                .find(|m| m.from == i && m.to == self.id)
                .ok_or_else(|| Error::Shape(format!("no contribution from participant {i}")))?;
            let mut key = self.key_with(i, CONTRIBUTION_LABEL)?;
            let opened = open(&key, &self.session, i, self.id, &message.bytes);
            key.zeroize();
            let opened = opened.ok_or(Error::InvalidEncoding("sealed contribution"))?;
            let want = layout.contribution_words(i as usize) * 8;
            if opened.len() != want {
                return Err(Error::Shape(format!("participant {i} contributed {} bytes, not {want}", opened.len())));
            }
            parts.push(opened.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default())).collect());
        }
        let size = layout.size();
        let mut sum = vec![0u64; size * size];
        let mut put = |a: usize, b: usize, v: u64| {
            sum[a * size + b] = sum[a * size + b].wrapping_add(v);
        };
        for (i, words) in parts.iter().enumerate() {
            let p = layout.columns[i];
            // Own block: index 0 is the intercept.
            let at = |k: usize| if k == 0 { 0 } else { layout.offset(i) + k - 1 };
            for a in 0..=p {
                for b in 0..=p {
                    // Every participant reports the row count; take it once.
                    if a == 0 && b == 0 && i > 0 {
                        continue;
                    }
                    put(at(a), at(b), words[a * (p + 1) + b]);
                }
            }
            let mut k = (p + 1) * (p + 1);
            for j in (0..n).filter(|&j| j != i) {
                let q = layout.columns[j];
                let (lo, hi) = if i < j { (i, j) } else { (j, i) };
                let (lp, hq) = (layout.columns[lo], layout.columns[hi]);
                debug_assert_eq!(lp * hq, p * q);
                for a in 0..lp {
                    for b in 0..hq {
                        let v = words[k + a * hq + b];
                        put(layout.offset(lo) + a, layout.offset(hi) + b, v);
                        put(layout.offset(hi) + b, layout.offset(lo) + a, v);
                    }
                }
                k += p * q;
            }
        }
        let n_rows = layout.rows as f64;
        let scale = f64::from(1u32 << FRACTION_BITS).powi(2);
        let entries: Vec<f64> = sum.iter().map(|&v| v as i64 as f64 / scale).collect();
        // Every participant reports the row count; each must be the round's.
        for (i, words) in parts.iter().enumerate() {
            let rows = words[0] as i64 as f64 / scale;
            if rows != n_rows {
                return Err(Error::Shape(format!("participant {i} counted {rows} rows, not {}", layout.rows)));
            }
        }
        Ok(Gram { rows: layout.rows, size, entries })
    }
}

/// The sizes of one round's messages, as [`simulate`] ran it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transcript {
    /// Bytes of each participant's deal (seeds and corrections), by
    /// participant.
    pub deals: Vec<usize>,
    /// Masked columns: sender, receiver, bytes.
    pub masked: Vec<(PartyId, PartyId, usize)>,
    /// Contributions to the lender: sender, bytes.
    pub contributions: Vec<(PartyId, usize)>,
}

/// Runs a whole round in one process — the dealer, every participant
/// (`columns[i]` is participant `i`'s) and the `lender` — as studies,
/// benchmarks and tests do; returns the lender's matrix and the sizes of
/// the messages that would have crossed the network.
pub fn simulate(
    layout: &Layout,
    columns: Vec<Columns>,
    lender: PartyId,
    rng: &mut impl CryptoRngCore,
) -> Result<(Gram, Transcript)> {
    layout.validate()?;
    if columns.len() != layout.columns.len() || lender as usize >= columns.len() {
        return Err(Error::Shape(format!(
            "{} participants' columns and lender {lender} for a round of {}",
            columns.len(),
            layout.columns.len()
        )));
    }
    let mut session = [0u8; 16];
    rng.fill_bytes(&mut session);
    let session = SessionId(session);
    let deals = deal(layout, rng)?;
    let mut people = Vec::with_capacity(columns.len());
    for (i, own) in columns.into_iter().enumerate() {
        people.push(Participant::new(session, layout, i as PartyId, own, rng)?);
    }
    let keys: BTreeMap<PartyId, [u8; 32]> =
        people.iter().enumerate().map(|(i, p)| (i as PartyId, p.public_key())).collect();
    for p in &mut people {
        p.set_keys(&keys)?;
    }
    let mut transcript = Transcript {
        deals: deals.iter().map(|d| d.pairs.iter().map(|p| 36 + 8 * p.correction.len()).sum()).collect(),
        ..Transcript::default()
    };
    let mut mail = Vec::new();
    for (p, d) in people.iter().zip(&deals) {
        mail.extend(p.masked(d)?);
    }
    transcript.masked = mail.iter().map(|m| (m.from, m.to, m.bytes.len())).collect();
    let mut contributions = Vec::with_capacity(people.len());
    for (p, d) in people.iter().zip(&deals) {
        let inbox: Vec<Sealed> = mail.iter().filter(|m| m.to == p.id).cloned().collect();
        contributions.push(p.contribution(d, &inbox, lender)?);
    }
    transcript.contributions = contributions.iter().map(|c| (c.from, c.bytes.len())).collect();
    Ok((people[lender as usize].assemble(&contributions)?, transcript))
}

/// The assembled Gram matrix `[1 X]ᵀ[1 X]` over the round's columns (the
/// intercept first, then each participant's columns in order).
#[derive(Clone, Debug, PartialEq)]
pub struct Gram {
    /// Rows summed over.
    pub rows: usize,
    /// Side of the square matrix.
    pub size: usize,
    /// Entries, row-major, symmetric.
    pub entries: Vec<f64>,
}

impl Gram {
    /// Entry `(a, b)`.
    pub fn get(&self, a: usize, b: usize) -> f64 {
        self.entries[a * self.size + b]
    }

    /// The same matrix computed in the clear from all columns (for tests and
    /// for a lender that holds every column itself), through the same fixed
    /// point.
    pub fn plain(columns: &[Vec<f64>]) -> Result<Gram> {
        let rows = columns.first().map_or(0, Vec::len);
        let words = Columns::encode(rows, columns)?.own_block();
        let size = columns.len() + 1;
        let scale = f64::from(1u32 << FRACTION_BITS).powi(2);
        Ok(Gram { rows, size, entries: words.iter().map(|&v| v as i64 as f64 / scale).collect() })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Runs a whole round in process: `columns[i]` are participant `i`'s
    /// columns; the last participant is the lender.
    fn round(columns: &[Vec<Vec<f64>>], seed: u64) -> Result<Gram> {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let rows = columns[0][0].len();
        let layout = Layout { rows, columns: columns.iter().map(Vec::len).collect() };
        let own = columns.iter().map(|c| Columns::encode(rows, c)).collect::<Result<Vec<_>>>()?;
        let (gram, transcript) = simulate(&layout, own, (columns.len() - 1) as PartyId, &mut rng)?;
        // Every ordered pair exchanged masked columns; everyone contributed.
        assert_eq!(transcript.masked.len(), columns.len() * (columns.len() - 1));
        assert_eq!(transcript.contributions.len(), columns.len());
        Ok(gram)
    }

    fn columns_strategy() -> impl Strategy<Value = Vec<Vec<Vec<f64>>>> {
        (1usize..40, proptest::collection::vec(1usize..4, 2..5)).prop_flat_map(|(rows, widths)| {
            widths
                .into_iter()
                .map(|w| proptest::collection::vec(proptest::collection::vec(-VALUE_LIMIT..=VALUE_LIMIT, rows), w))
                .collect::<Vec<_>>()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// The jointly computed matrix is bit for bit the plaintext one, for
        /// any split of any columns.
        #[test]
        fn the_joint_gram_equals_the_plain_gram(columns in columns_strategy(), seed in any::<u64>()) {
            let all: Vec<Vec<f64>> = columns.iter().flatten().cloned().collect();
            prop_assert_eq!(round(&columns, seed).unwrap(), Gram::plain(&all).unwrap());
        }
    }

    fn example() -> Vec<Vec<Vec<f64>>> {
        vec![
            vec![vec![0.5, -1.25, 2.0, 0.0], vec![1.0, 1.0, -3.5, 0.25]],
            vec![vec![-0.75, 0.5, 0.5, 1.5]],
            vec![vec![1.0, 0.0, 1.0, 1.0]],
        ]
    }

    #[test]
    fn entries_by_hand() {
        let g = round(&example(), 1).unwrap();
        assert_eq!(g.size, 5);
        assert_eq!(g.get(0, 0), 4.0);
        assert_eq!(g.get(0, 1), 1.25);
        // Column 0 of participant 0 with participant 1's column.
        assert_eq!(g.get(1, 3), 0.5 * -0.75 + -1.25 * 0.5 + 2.0 * 0.5);
        assert_eq!(g.get(3, 1), g.get(1, 3));
        // With the label column, at the lender.
        assert_eq!(g.get(2, 4), 1.0 - 3.5 + 0.25);
    }

    #[test]
    fn what_a_participant_receives_is_masked_and_sealed() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let layout = Layout { rows: 4, columns: vec![2, 1, 1] };
        let deals = deal(&layout, &mut rng).unwrap();
        let data = example();
        let session = SessionId([1; 16]);
        let mut people: Vec<Participant> = data
            .iter()
            .enumerate()
            .map(|(i, c)| {
                Participant::new(session, &layout, i as PartyId, Columns::encode(4, c).unwrap(), &mut rng).unwrap()
            })
            .collect();
        let keys: BTreeMap<PartyId, [u8; 32]> =
            people.iter().enumerate().map(|(i, p)| (i as PartyId, p.public_key())).collect();
        for p in &mut people {
            p.set_keys(&keys).unwrap();
        }
        let sent = people[0].masked(&deals[0]).unwrap();
        assert_eq!(sent.iter().map(|m| m.to).collect::<Vec<_>>(), [1, 2]);
        // The plaintext encoding of the columns appears nowhere in what is sent.
        let plain: Vec<u8> = Columns::encode(4, &data[0]).unwrap().data.iter().flat_map(|w| w.to_le_bytes()).collect();
        assert!(sent.iter().all(|m| !m.bytes.windows(16).any(|w| plain.windows(16).any(|p| p == w))));

        // A message for someone else, a tampered one and a missing one are refused.
        let mut inbox: Vec<Sealed> = sent.iter().filter(|m| m.to == 1).cloned().collect();
        let from_two = people[2].masked(&deals[2]).unwrap().into_iter().find(|m| m.to == 1).unwrap();
        assert!(
            matches!(people[1].contribution(&deals[1], &inbox, 2), Err(Error::Shape(m)) if m.contains("participant 2"))
        );
        inbox.push(from_two);
        let mut bad = inbox.clone();
        bad[0].bytes[3] ^= 1;
        assert_eq!(
            people[1].contribution(&deals[1], &bad, 2).err(),
            Some(Error::InvalidEncoding("sealed masked columns"))
        );
        // Another participant's deal.
        assert!(matches!(people[1].contribution(&deals[0], &inbox, 2), Err(Error::Shape(_))));
        assert!(people[1].contribution(&deals[1], &inbox, 2).is_ok());
    }

    #[test]
    fn bad_rounds_are_refused() {
        assert!(matches!(Columns::encode(2, &[vec![1.0, f64::NAN]]), Err(Error::Shape(m)) if m.contains("row 1")));
        assert!(matches!(Columns::encode(2, &[vec![1.0, 17.0]]), Err(Error::Shape(_))));
        assert!(matches!(Columns::encode(3, &[vec![1.0, 1.0]]), Err(Error::Shape(_))));
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        assert!(deal(&Layout { rows: 3, columns: vec![1] }, &mut rng).is_err());
        assert!(deal(&Layout { rows: 0, columns: vec![1, 1] }, &mut rng).is_err());
        assert!(deal(&Layout { rows: MAX_ROWS + 1, columns: vec![1, 1] }, &mut rng).is_err());
        assert!(deal(&Layout { rows: 3, columns: vec![1, 0] }, &mut rng).is_err());
        let layout = Layout { rows: 2, columns: vec![1, 1] };
        let wrong = Columns::encode(2, &[vec![1.0, 1.0], vec![0.0, 0.0]]).unwrap();
        assert!(Participant::new(SessionId([0; 16]), &layout, 0, wrong.clone(), &mut rng).is_err());
        assert!(Participant::new(SessionId([0; 16]), &layout, 5, wrong, &mut rng).is_err());
    }

    #[test]
    fn a_missing_or_foreign_contribution_is_refused() {
        let data = example();
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let layout = Layout { rows: 4, columns: vec![2, 1, 1] };
        let deals = deal(&layout, &mut rng).unwrap();
        let mut people: Vec<Participant> = data
            .iter()
            .enumerate()
            .map(|(i, c)| {
                Participant::new(SessionId([3; 16]), &layout, i as PartyId, Columns::encode(4, c).unwrap(), &mut rng)
                    .unwrap()
            })
            .collect();
        let keys: BTreeMap<PartyId, [u8; 32]> =
            people.iter().enumerate().map(|(i, p)| (i as PartyId, p.public_key())).collect();
        for p in &mut people {
            p.set_keys(&keys).unwrap();
        }
        let mail: Vec<Sealed> = people.iter().zip(&deals).flat_map(|(p, d)| p.masked(d).unwrap()).collect();
        let contributions: Vec<Sealed> = people
            .iter()
            .zip(&deals)
            .map(|(p, d)| {
                p.contribution(d, &mail.iter().filter(|m| m.to == p.id).cloned().collect::<Vec<_>>(), 2).unwrap()
            })
            .collect();
        assert!(people[2].assemble(&contributions).is_ok());
        assert!(matches!(people[2].assemble(&contributions[..2]), Err(Error::Shape(m)) if m.contains("participant 2")));
        // A contribution sealed for someone else does not open at the lender.
        let mut foreign = contributions.clone();
        foreign[0] = people[0]
            .contribution(&deals[0], &mail.iter().filter(|m| m.to == 0).cloned().collect::<Vec<_>>(), 1)
            .unwrap();
        foreign[0].to = 2;
        assert_eq!(people[2].assemble(&foreign).err(), Some(Error::InvalidEncoding("sealed contribution")));
        // Masked columns sent to the lender do not pass as a contribution:
        // each kind of message has its own key.
        let mut replayed = contributions.clone();
        replayed[0] = mail.iter().find(|m| m.from == 0 && m.to == 2).cloned().unwrap();
        assert_eq!(people[2].assemble(&replayed).err(), Some(Error::InvalidEncoding("sealed contribution")));
        // A key list that swaps the lender's own key is refused.
        let mut swapped = keys.clone();
        swapped.insert(2, keys[&0]);
        assert!(people[2].set_keys(&swapped).is_err());
    }
}
