//! The TFHE parameter set decisions run on, and the measurement that chose
//! it.
//!
//! Every key set is generated from [`DECISION_PARAMS`]; nothing else in the
//! workspace names a parameter set for evaluation (the strict mode's proof
//! and casting parameters in [`crate::proof`] are tied to it). `jointscore
//! bench params` runs [`measure`] over [`candidates`] — the parameter sets
//! tfhe 1.8 offers for 2-bit message / 2-bit carry blocks at its default
//! security (128 bits) and failure probability (2⁻¹²⁸) — on the machine at
//! hand, so the choice can be re-checked wherever it is questioned;
//! docs/circuits.md records the figures and why this one is used.

use std::time::{Duration, Instant};

use rayon::prelude::*;
use tfhe::shortint::parameters::current_params::{
    V1_8_PARAM_MULTI_BIT_GROUP_2_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128,
    V1_8_PARAM_MULTI_BIT_GROUP_3_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128,
    V1_8_PARAM_MULTI_BIT_GROUP_4_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128,
};
use tfhe::shortint::parameters::{
    ClassicPBSParameters, PARAM_MESSAGE_2_CARRY_2_KS_PBS, PARAM_MESSAGE_2_CARRY_2_KS32_PBS_TUNIFORM_2M128,
};
use tfhe::shortint::{AtomicPatternParameters, ClientKey, ServerKey};

use crate::error::{Error, Result};

/// The parameter set of every key set: tfhe's classic key-switch-then-
/// bootstrap pattern for 2 message and 2 carry bits, TUniform noise,
/// failure probability 2⁻¹²⁸. See the module documentation for how it was
/// chosen.
pub(crate) const DECISION_PARAMS: ClassicPBSParameters = PARAM_MESSAGE_2_CARRY_2_KS_PBS;

/// The tfhe release every key set and evaluation uses (the workspace pins
/// it exactly; a test holds the two together).
pub const TFHE_VERSION: &str = "1.8.2";

/// What evaluating a decision needs of a process: the tfhe release and the
/// parameter set (its name and a digest of every value in it). Two
/// processes with the same fingerprint evaluate each other's jobs; a
/// coordinator worker refuses jobs accepted under another one.
pub fn evaluation_fingerprint() -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{DECISION_PARAMS:?}").as_bytes());
    format!("tfhe {TFHE_VERSION}; PARAM_MESSAGE_2_CARRY_2_KS_PBS {}", &hex::encode(digest)[..16])
}

/// A parameter set `bench params` compares.
#[derive(Clone, Copy, Debug)]
pub struct Candidate {
    /// Short name used in tables and JSON.
    pub name: &'static str,
    /// What kind of bootstrap it runs.
    pub pattern: &'static str,
    params: AtomicPatternParameters,
}

impl Candidate {
    /// Whether decisions run on this set today.
    pub fn in_use(&self) -> bool {
        self.params == AtomicPatternParameters::from(DECISION_PARAMS)
    }
}

/// The 2-bit message / 2-bit carry parameter sets tfhe offers for CPUs at
/// its default security and failure probability: the classic pattern in
/// use, the pattern whose key switch works on 32-bit integers (KS32), and
/// multi-bit bootstrapping with groups of 2, 3 and 4 key bits.
pub fn candidates() -> Vec<Candidate> {
    vec![
        Candidate { name: "classic", pattern: "KS-PBS, 64-bit key switch", params: DECISION_PARAMS.into() },
        Candidate {
            name: "ks32",
            pattern: "KS-PBS, 32-bit key switch",
            params: PARAM_MESSAGE_2_CARRY_2_KS32_PBS_TUNIFORM_2M128.into(),
        },
        Candidate {
            name: "multi-bit-2",
            pattern: "multi-bit PBS, groups of 2",
            params: V1_8_PARAM_MULTI_BIT_GROUP_2_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128.into(),
        },
        Candidate {
            name: "multi-bit-3",
            pattern: "multi-bit PBS, groups of 3",
            params: V1_8_PARAM_MULTI_BIT_GROUP_3_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128.into(),
        },
        Candidate {
            name: "multi-bit-4",
            pattern: "multi-bit PBS, groups of 4",
            params: V1_8_PARAM_MULTI_BIT_GROUP_4_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128.into(),
        },
    ]
}

/// What one parameter set costs on this machine.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Figures {
    /// [`Candidate::name`].
    pub name: &'static str,
    /// [`Candidate::pattern`].
    pub pattern: &'static str,
    /// Whether decisions run on it today.
    pub in_use: bool,
    /// Dimension of the LWE ciphertexts a bootstrap starts from.
    pub lwe_dimension: usize,
    /// GLWE polynomial size of the bootstrap.
    pub polynomial_size: usize,
    /// Client and server key generation.
    pub keygen_s: f64,
    /// Median wall time of one lookup (key switch and bootstrap) with the
    /// whole rayon pool available: what one decision's critical path pays
    /// per level. Multi-bit bootstraps use the pool's threads inside one
    /// bootstrap; the classic patterns run on one.
    pub latency_s: f64,
    /// Lookups per second when many independent ones are spread over the
    /// pool: what a batch of decisions can reach.
    pub throughput_per_s: f64,
    /// Every measured lookup decrypted to the expected value.
    pub correct: bool,
}

/// Measures one candidate: `latency_runs` lookups one after another, then
/// `throughput_lookups` spread over the rayon pool, each checked by
/// decryption.
pub fn measure(candidate: &Candidate, latency_runs: usize, throughput_lookups: usize) -> Result<Figures> {
    if latency_runs == 0 || throughput_lookups == 0 {
        return Err(Error::Fhe("measure at least one lookup of each kind".into()));
    }
    let start = Instant::now();
    let client = ClientKey::new(candidate.params);
    let server = ServerKey::new(&client);
    let keygen_s = start.elapsed().as_secs_f64();

    let f = |x: u64| (x + 1) % 4;
    let lut = server.generate_lookup_table(f);
    let ct = client.encrypt(2);
    let mut correct = true;
    let mut times: Vec<Duration> = Vec::with_capacity(latency_runs);
    for _ in 0..latency_runs {
        let start = Instant::now();
        let out = server.apply_lookup_table(&ct, &lut);
        times.push(start.elapsed());
        correct &= client.decrypt(&out) == f(2);
    }
    times.sort();

    let inputs: Vec<_> = (0..throughput_lookups as u64).map(|i| (i % 4, client.encrypt(i % 4))).collect();
    let start = Instant::now();
    let outs: Vec<_> = inputs.par_iter().map(|(x, ct)| (*x, server.apply_lookup_table(ct, &lut))).collect();
    let throughput_per_s = throughput_lookups as f64 / start.elapsed().as_secs_f64();
    correct &= outs.iter().all(|(x, ct)| client.decrypt(ct) == f(*x));

    Ok(Figures {
        name: candidate.name,
        pattern: candidate.pattern,
        in_use: candidate.in_use(),
        lwe_dimension: candidate.params.lwe_dimension().0,
        polynomial_size: candidate.params.polynomial_size().0,
        keygen_s,
        latency_s: times[times.len() / 2].as_secs_f64(),
        throughput_per_s,
        correct,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_tfhe_version_named_is_the_one_pinned() {
        let manifest = include_str!("../../Cargo.toml");
        let pin = format!("tfhe = {{ version = \"={}\"", super::TFHE_VERSION);
        assert!(manifest.contains(&pin), "bump TFHE_VERSION with the workspace's tfhe pin");
        assert!(super::evaluation_fingerprint().starts_with("tfhe 1.8.2; PARAM_MESSAGE_2_CARRY_2_KS_PBS "));
    }
}
