//! The vertical binning round: the lender encrypts its labels, each party
//! sums them per bin of each of its features, the lender decrypts the sums.

use rand_core::OsRng;
use rayon::prelude::*;

use crate::elgamal::{Ciphertext, DlogTable, PublicKey, SecretKey};
use crate::error::{Error, Result};

/// Good and bad counts of one bin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BinCounts {
    /// Rows in the bin (known to the party that owns the feature).
    pub rows: u64,
    /// Rows labelled bad (learned by the lender only).
    pub bad: u64,
}

impl<'a> std::iter::Sum<&'a BinCounts> for BinCounts {
    fn sum<I: Iterator<Item = &'a BinCounts>>(iter: I) -> BinCounts {
        iter.fold(BinCounts::default(), |a, b| BinCounts { rows: a.rows + b.rows, bad: a.bad + b.bad })
    }
}

impl BinCounts {
    /// Rows labelled good.
    pub fn good(&self) -> u64 {
        self.rows - self.bad
    }
}

/// One feature's bins as a party assigns them: a bin index per row, and the
/// number of bins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinAssignment {
    /// Bin of each row, in the lender's row order.
    pub bins: Vec<u32>,
    /// Number of bins (indices are below it).
    pub count: u32,
}

/// Per bin: its row count in the clear and the encrypted sum of labels,
/// re-randomised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeatureSums {
    /// `(rows, Enc(bad))` per bin.
    pub bins: Vec<(u64, Ciphertext)>,
}

/// The lender's side of a round: it holds the labels and the key they
/// are encrypted under. (Named for its role in this protocol, apart from
/// `jointscore_lender::Lender`, the decision client.)
pub struct LabelHolder {
    key: SecretKey,
    rows: usize,
}

impl LabelHolder {
    /// Encrypts the labels (`true` = bad), in row order; returns the state
    /// to decrypt with and what to send to every party.
    pub fn encrypt(labels: &[bool]) -> (LabelHolder, PublicKey, Vec<Ciphertext>) {
        let (key, public) = SecretKey::generate(&mut OsRng);
        let cts = public.encrypt_bits(labels);
        (LabelHolder { key, rows: labels.len() }, public, cts)
    }

    /// Decrypts one party's sums into per-bin counts. Refuses sums that do
    /// not add up (a count above its bin's rows, or rows that do not total
    /// the round's rows).
    pub fn decrypt(&self, sums: &[FeatureSums]) -> Result<Vec<Vec<BinCounts>>> {
        let table = DlogTable::new(self.rows as u64);
        sums.par_iter()
            .map(|f| {
                let total = f.bins.iter().try_fold(0u64, |acc, (rows, _)| acc.checked_add(*rows));
                if total != Some(self.rows as u64) {
                    return Err(Error::Shape(format!("bins hold {total:?} rows, the round has {}", self.rows)));
                }
                f.bins
                    .iter()
                    .map(|(rows, c)| {
                        let bad = self.key.decrypt(c, &table)?;
                        if bad > *rows {
                            return Err(Error::Shape(format!("{bad} bad labels in a bin of {rows} rows")));
                        }
                        Ok(BinCounts { rows: *rows, bad })
                    })
                    .collect()
            })
            .collect()
    }
}

/// The counts in the clear, for features the lender holds itself and as
/// the reference the protocol must reproduce.
pub fn plain_counts(assignment: &BinAssignment, labels: &[bool]) -> Vec<BinCounts> {
    let mut counts = vec![BinCounts::default(); assignment.count as usize];
    for (&bin, &bad) in assignment.bins.iter().zip(labels) {
        if let Some(c) = counts.get_mut(bin as usize) {
            c.rows += 1;
            c.bad += u64::from(bad);
        }
    }
    counts
}

/// A party's side of a round: sums the encrypted labels per bin of each of
/// its features (features in parallel) and re-randomises each sum, so the
/// lender learns nothing beyond the sums.
pub fn party_sums(public: &PublicKey, labels: &[Ciphertext], features: &[BinAssignment]) -> Result<Vec<FeatureSums>> {
    features
        .par_iter()
        .enumerate()
        .map(|(f, a)| {
            if a.bins.len() != labels.len() {
                return Err(Error::Shape(format!(
                    "feature {f} assigns {} rows, the round has {}",
                    a.bins.len(),
                    labels.len()
                )));
            }
            let mut acc = vec![(0u64, Ciphertext::zero()); a.count as usize];
            for (&bin, c) in a.bins.iter().zip(labels) {
                let slot = acc
                    .get_mut(bin as usize)
                    .ok_or_else(|| Error::Shape(format!("feature {f} uses bin {bin} of {}", a.count)))?;
                slot.0 += 1;
                slot.1 = slot.1.add(c);
            }
            let mut rng = OsRng;
            Ok(FeatureSums { bins: acc.into_iter().map(|(n, c)| (n, public.rerandomize(&c, &mut rng))).collect() })
        })
        .collect()
}
