//! Vertical binning of split data: the lender learns good/bad counts per
//! bin of every party's features; parties learn nothing about the labels.
//!
//! # Round
//!
//! 1. The lender encrypts its labels (1 = bad) row by row with exponential
//!    ElGamal on ristretto255 under a fresh key ([`LabelHolder::encrypt`]) and
//!    sends the ciphertexts, in the lender's row order, to each party.
//!    (Rows are aligned beforehand, for example with `jointscore-psi`.)
//! 2. Each party bins its own columns in the clear ([`NumericBins`], or one
//!    bin per category; missing values get their own bin), adds the
//!    ciphertexts per bin, re-randomises each sum and returns it with the
//!    bin's row count ([`party_sums`]).
//! 3. The lender decrypts each sum by baby-step giant-step ([`DlogTable`])
//!    and gets per-bin good and bad counts ([`LabelHolder::decrypt`]); it then
//!    computes WoE and IV ([`woe_iv`]) and merges bins for monotone WoE and
//!    a minimum share ([`merge_monotone`]), and tells parties the merged
//!    bins (they appear in the model file anyway).
//!
//! # What each side learns
//!
//! - **Lender**: the number of rows and bad labels in each *initial* bin of
//!   every party feature (finer than the final bins), and the bins' row
//!   counts. Not the parties' values, nor which row is in which bin.
//! - **Party**: nothing about labels — it sees only ciphertexts under a key
//!   it does not hold (semantic security of ElGamal under DDH in
//!   ristretto255) — and, at the end, the merged bin boundaries.
//!
//! Assumptions: semi-honest parties and lender. A party that returns wrong
//! sums changes the lender's statistics (the lender checks that counts are
//! in range and that bin rows total the round's rows). A bin's count is a
//! sum of that bin's labels, so parties must not send bins of a few rows:
//! `jointscore study` makes every initial bin at least 5% of the rows
//! before the round.
//!
//! # Weights
//!
//! [`gram`] is the second round of fitting: the Gram matrix of the
//! weight-of-evidence columns across participants, from which the lender
//! fits logistic-regression weights (see that module for what each role
//! learns).

mod bins;
mod elgamal;
mod error;
pub mod gram;
mod protocol;

pub use bins::{NumericBins, merge_monotone, woe_iv};
pub use elgamal::{CIPHERTEXT_BYTES, Ciphertext, DlogTable, PublicKey, SecretKey};
pub use error::{Error, Result};
pub use protocol::{BinAssignment, BinCounts, FeatureSums, LabelHolder, party_sums, plain_counts};

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;

    #[test]
    fn elgamal_round_trip_addition_and_rerandomisation() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let (sk, pk) = SecretKey::generate(&mut rng);
        let table = DlogTable::new(1000);
        let a = pk.encrypt(17, &mut rng);
        let b = pk.encrypt(25, &mut rng);
        assert_eq!(sk.decrypt(&a, &table), Ok(17));
        assert_eq!(sk.decrypt(&a.add(&b), &table), Ok(42));
        let r = pk.rerandomize(&a, &mut rng);
        assert_ne!(r.to_bytes(), a.to_bytes());
        assert_eq!(sk.decrypt(&r, &table), Ok(17));
        assert_eq!(Ciphertext::from_bytes(&r.to_bytes()), Ok(r));
        // Out of the table's range, and the wrong key.
        assert_eq!(sk.decrypt(&pk.encrypt(1001, &mut rng), &table), Err(Error::OutOfRange(1000)));
        let (other, _) = SecretKey::generate(&mut rng);
        assert_eq!(other.decrypt(&a, &table), Err(Error::OutOfRange(1000)));
        // Bad encodings.
        assert_eq!(Ciphertext::from_bytes(&[0xff; 64]), Err(Error::InvalidEncoding("ciphertext")));
        assert!(PublicKey::from_bytes(&[0u8; 32]).is_err());
        assert_eq!(PublicKey::from_bytes(&pk.to_bytes()).map(|k| k.to_bytes()), Ok(pk.to_bytes()));
        assert!(format!("{sk:?}").contains("<secret>"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        /// The lender's counts equal the plaintext counts, for any labels
        /// and assignments.
        #[test]
        fn protocol_counts_equal_plain_counts(rows in proptest::collection::vec((any::<bool>(), 0u32..4, 0u32..3), 0..120)) {
            let labels: Vec<bool> = rows.iter().map(|r| r.0).collect();
            let features = vec![
                BinAssignment { bins: rows.iter().map(|r| r.1).collect(), count: 4 },
                BinAssignment { bins: rows.iter().map(|r| r.2).collect(), count: 3 },
            ];
            let (lender, public, cts) = LabelHolder::encrypt(&labels);
            let sums = party_sums(&public, &cts, &features).unwrap();
            let counts = lender.decrypt(&sums).unwrap();
            for (f, a) in features.iter().enumerate() {
                prop_assert_eq!(&counts[f], &plain_counts(a, &labels));
                for bin in 0..a.count {
                    let rows_in = a.bins.iter().filter(|&&b| b == bin).count() as u64;
                    prop_assert_eq!(counts[f][bin as usize].rows, rows_in);
                }
            }
        }
    }

    #[test]
    fn bad_shapes_are_refused() {
        let (lender, public, cts) = LabelHolder::encrypt(&[true, false, true]);
        let short = BinAssignment { bins: vec![0, 1], count: 2 };
        assert!(matches!(party_sums(&public, &cts, &[short]), Err(Error::Shape(_))));
        let beyond = BinAssignment { bins: vec![0, 5, 1], count: 2 };
        assert!(matches!(party_sums(&public, &cts, &[beyond]), Err(Error::Shape(_))));
        let mut sums = party_sums(&public, &cts, &[BinAssignment { bins: vec![0, 0, 1], count: 2 }]).unwrap();
        sums[0].bins[1].0 = 0; // a party lying about its rows
        assert!(matches!(lender.decrypt(&sums), Err(Error::Shape(_))));
    }

    /// Hand-computed: bins (good, bad) = (40, 10), (30, 20), (30, 70);
    /// good = 100, bad = 100, so WoE = ln(4), ln(1.5), ln(3/7) and
    /// IV = 0.3 ln 4 + 0.1 ln 1.5 - 0.4 ln(3/7).
    #[test]
    fn woe_and_iv_by_hand() {
        let bins = [BinCounts { rows: 50, bad: 10 }, BinCounts { rows: 50, bad: 20 }, BinCounts { rows: 100, bad: 70 }];
        let (woe, iv) = woe_iv(&bins);
        let want = [4f64.ln(), 1.5f64.ln(), (3.0f64 / 7.0).ln()];
        for (w, x) in woe.iter().zip(want) {
            assert!((w - x).abs() < 1e-12, "{w} vs {x}");
        }
        let want_iv = 0.3 * 4f64.ln() + 0.1 * 1.5f64.ln() - 0.4 * (3.0f64 / 7.0).ln();
        assert!((iv - want_iv).abs() < 1e-12);
    }

    #[test]
    fn merging_makes_woe_monotone_and_bins_big_enough() {
        // Non-monotone bad rates 10%, 40%, 20%, 60%, plus a tiny bin and a
        // missing bin that must stay alone.
        let bins = [
            BinCounts { rows: 100, bad: 10 },
            BinCounts { rows: 100, bad: 40 },
            BinCounts { rows: 100, bad: 20 },
            BinCounts { rows: 100, bad: 60 },
            BinCounts { rows: 5, bad: 5 },
            BinCounts { rows: 30, bad: 3 },
        ];
        let groups = merge_monotone(&bins, 5, 0.05);
        assert_eq!(groups.last(), Some(&(5..6)));
        let merged: Vec<BinCounts> =
            groups[..groups.len() - 1].iter().map(|g| bins[g.clone()].iter().sum::<BinCounts>()).collect();
        let (woe, _) = woe_iv(&merged);
        assert!(woe.windows(2).all(|w| w[1] <= w[0]) || woe.windows(2).all(|w| w[1] >= w[0]), "{woe:?}");
        assert!(merged.iter().all(|b| b.rows as f64 >= 0.05 * 535.0));
        // Groups are contiguous and cover every bin once.
        assert_eq!(groups.iter().map(|g| g.len()).sum::<usize>(), bins.len());
    }

    #[test]
    fn equal_frequency_bins() {
        let values: Vec<Option<f64>> =
            (0..100).map(|i| if i % 10 == 0 { None } else { Some(f64::from(i / 3)) }).collect();
        let b = NumericBins::fit(&values, 5);
        assert!(b.missing);
        assert_eq!(b.count(), b.edges.len() as u32 + 2);
        let a = b.assign(&values);
        assert_eq!(a.bins[0], b.count() - 1);
        // Equal values share a bin; bins are roughly equal in size.
        for (i, v) in values.iter().enumerate() {
            for (j, w) in values.iter().enumerate() {
                if v.is_some() && v == w {
                    assert_eq!(a.bins[i], a.bins[j]);
                }
            }
        }
        for bin in 0..b.edges.len() as u32 + 1 {
            let n = a.bins.iter().filter(|&&x| x == bin).count();
            assert!((12..=24).contains(&n), "bin {bin} holds {n}");
        }
    }
}
