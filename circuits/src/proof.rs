//! Proven contributions (a consortium's strict mode).
//!
//! In strict mode a party encrypts its digits under the key set's *proof*
//! public key, which uses tfhe's zero-knowledge-ready encryption parameters
//! (`PARAM_PKE_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128`, proof scheme v2),
//! and attaches a proof of knowledge that every ciphertext is a well-formed
//! encryption of a digit under that key: noise within the bound the
//! parameters assume and the padding bit clear. The proof is bound to the
//! request by its metadata (job, subject, model, key set, party), so it
//! verifies for that request only.
//!
//! The coordinator verifies every proof against the consortium's common
//! reference string ([`Crs`]) before it spends anything on the list, then
//! casts the blocks to the evaluation parameters: a key switch and one
//! bootstrap per block (tfhe's casting key, part of the evaluation key),
//! which also resets whatever noise a dishonest prover could hide within the
//! proof's slack. Lists without a proof are not accepted in strict mode.
//!
//! What this does not prove: that the digits are the party's true data.
//! A proof shows a well-formed encryption of *some* digits, which bounds
//! what a dishonest party can do to the evaluation to choosing its own
//! inputs.

use sha2::{Digest, Sha256};
use tfhe::core_crypto::prelude::LweCiphertextCount;
use tfhe::safe_serialization::{safe_deserialize, safe_serialize};
use tfhe::shortint::parameters::{
    CompactPublicKeyEncryptionParameters, PARAM_KEYSWITCH_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128,
    PARAM_PKE_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128, ShortintKeySwitchingParameters,
};
use tfhe::zk::{CompactPkeCrs, CompactPkeZkScheme, Compressible, ZkComputeLoad};

use crate::error::{Error, Result};

/// Encryption parameters of the proof public key.
pub(crate) const PROOF_PARAMS: CompactPublicKeyEncryptionParameters = PARAM_PKE_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128;

/// Key-switching parameters from the proof key to the evaluation key.
pub(crate) const CASTING_PARAMS: ShortintKeySwitchingParameters =
    PARAM_KEYSWITCH_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128;

/// Who does the extra work of a proof. tfhe's `Proof` load makes the prover
/// compute more so that verifying is cheaper: the coordinator verifies every
/// party's proofs for every decision, while each party proves only its own,
/// in parallel with the others.
pub(crate) const COMPUTE_LOAD: ZkComputeLoad = ZkComputeLoad::Proof;

/// Largest serialized CRS read (the default one is a few MB).
pub const CRS_LIMIT: u64 = 1 << 28;

/// Default number of blocks one proof covers. A longer contribution carries
/// several proofs; a CRS is larger and each proof slower the more blocks it
/// covers.
pub const DEFAULT_PROOF_BLOCKS: usize = 64;

/// Most blocks one proof may cover.
pub const MAX_PROOF_BLOCKS: usize = 2048;

/// A consortium's common reference string for contribution proofs.
///
/// Whoever generates it could forge proofs, so its generation is trusted
/// (see docs/security.md); its bytes are pinned by their SHA-256 in the
/// consortium file, and every node loads it through [`Crs::from_bytes`],
/// which checks that hash before reading anything.
pub struct Crs {
    pub(crate) crs: CompactPkeCrs,
    sha256: String,
}

/// SHA-256 of bytes, hex: how the consortium file names a CRS.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Crs {
    /// Generates a CRS for proofs of at most `max_blocks` blocks each, with
    /// the serialized form it is pinned by.
    pub fn generate(max_blocks: usize) -> Result<(Crs, Vec<u8>)> {
        if max_blocks == 0 || max_blocks > MAX_PROOF_BLOCKS {
            return Err(Error::Proof(format!("a proof covers 1 to {MAX_PROOF_BLOCKS} blocks, not {max_blocks}")));
        }
        let crs = CompactPkeCrs::from_shortint_params(PROOF_PARAMS, LweCiphertextCount(max_blocks))
            .map_err(|e| Error::Proof(e.to_string()))?;
        let mut bytes = Vec::new();
        safe_serialize(&crs.compress(), &mut bytes, CRS_LIMIT).map_err(|e| Error::Proof(e.to_string()))?;
        let sha256 = sha256_hex(&bytes);
        Ok((Crs { crs, sha256 }, bytes))
    }

    /// Reads a CRS whose bytes must hash to `expected_sha256` (from the
    /// consortium file), and checks that it was made for this version's
    /// proof parameters.
    pub fn from_bytes(bytes: &[u8], expected_sha256: &str) -> Result<Crs> {
        let sha256 = sha256_hex(bytes);
        if !sha256.eq_ignore_ascii_case(expected_sha256) {
            return Err(Error::Proof(format!(
                "the CRS has SHA-256 {sha256}, the consortium file pins {expected_sha256}"
            )));
        }
        let crs: CompactPkeCrs =
            safe_deserialize(bytes, CRS_LIMIT).map_err(|e| Error::Proof(format!("the CRS is not well formed: {e}")))?;
        let plaintext = PROOF_PARAMS.message_modulus.0 * PROOF_PARAMS.carry_modulus.0 * 2;
        let fits = crs.lwe_dimension() == PROOF_PARAMS.encryption_lwe_dimension
            && crs.plaintext_modulus() == plaintext
            && matches!(crs.scheme_version(), CompactPkeZkScheme::V2)
            && (1..=MAX_PROOF_BLOCKS).contains(&crs.max_num_messages().0);
        if !fits {
            return Err(Error::Proof("the CRS was made for other parameters than this version's proofs".into()));
        }
        Ok(Crs { crs, sha256 })
    }

    /// Reads the CRS file at `path` (at most [`CRS_LIMIT`] bytes) and checks
    /// it as [`Crs::from_bytes`] does.
    pub fn read(path: &std::path::Path, expected_sha256: &str) -> Result<Crs> {
        let bad = |m: String| Error::Proof(format!("{}: {m}", path.display()));
        let size = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?.len();
        if size > CRS_LIMIT {
            return Err(bad(format!("{size} bytes is larger than the {CRS_LIMIT}-byte limit")));
        }
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        Crs::from_bytes(&bytes, expected_sha256).map_err(|e| match e {
            Error::Proof(m) => bad(m),
            other => other,
        })
    }

    /// SHA-256 of its serialized form, hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Most blocks one proof covers.
    pub fn max_blocks(&self) -> usize {
        self.crs.max_num_messages().0
    }
}

impl std::fmt::Debug for Crs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Crs({} blocks per proof, sha256 {})", self.max_blocks(), self.sha256)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;
    use std::time::Instant;

    use super::*;
    use crate::fhe::tests::keys;
    use crate::fhe::{Blocks, Contribution, KeySet};
    use crate::model::Model;
    use crate::plan::{Plan, PlanKind};
    use crate::reference::{self, Record};

    /// One CRS for the test binary; sized so the bank's contribution needs
    /// two proofs, which exercises the chunking.
    fn crs() -> &'static (Crs, Vec<u8>) {
        static CRS: OnceLock<(Crs, Vec<u8>)> = OnceLock::new();
        CRS.get_or_init(|| Crs::generate(16).expect("crs"))
    }

    fn plan() -> &'static Plan {
        static PLAN: OnceLock<Plan> = OnceLock::new();
        PLAN.get_or_init(|| Plan::new(&Model::cross_border_seller(), PlanKind::Pushdown).expect("plan"))
    }

    fn record() -> Record {
        Record::from_json(plan().model(), &serde_json::from_str(include_str!("../../examples/seller.json")).unwrap())
            .unwrap()
    }

    fn metadata(job: &str, party: usize) -> Vec<u8> {
        format!("{job}/{party}").into_bytes()
    }

    /// Each party's proven contribution for `job`, serialized.
    fn proven_bytes(job: &str) -> Vec<Vec<u8>> {
        let (crs, _) = crs();
        (0..plan().parties().len())
            .map(|p| {
                let digits = plan().contribution(p, &record()).unwrap();
                let start = Instant::now();
                let c =
                    Contribution::encrypt_proven(plan(), p, &digits, &keys().public, crs, &metadata(job, p)).unwrap();
                eprintln!("party {p}: {} blocks proven in {:?}", c.len(), start.elapsed());
                assert!(c.is_proven());
                c.to_bytes().unwrap()
            })
            .collect()
    }

    #[test]
    fn proven_contributions_decide_like_the_reference() {
        let (crs, bytes) = crs();
        let crs = Crs::from_bytes(bytes, crs.sha256()).expect("the CRS reads back under its hash");
        let k = keys();
        let wire = proven_bytes("job-1");
        let start = Instant::now();
        let contributions: Vec<Contribution> = wire
            .iter()
            .enumerate()
            .map(|(p, b)| Contribution::from_proven_bytes(b, plan(), p, &k.public, &crs, &metadata("job-1", p)))
            .collect::<crate::Result<_>>()
            .unwrap();
        eprintln!("verified in {:?}", start.elapsed());
        let (result, report) = k.evaluation.evaluate(plan(), &contributions).unwrap();
        eprintln!("cast in {:?}, circuit {:?}", report.expand, report.circuit);
        let got = k.lender.decrypt(plan(), &result).unwrap();
        let m = plan().model();
        assert_eq!(got, reference::evaluate(m, &record()).restricted(m));
    }

    #[test]
    fn proofs_bound_elsewhere_or_broken_are_refused() {
        let (crs, _) = crs();
        let k = keys();
        let wire = proven_bytes("job-2");
        let read = |bytes: &[u8], party: usize, public: &crate::fhe::PublicKey, md: &[u8]| {
            Contribution::from_proven_bytes(bytes, plan(), party, public, crs, md).err().expect("refused")
        };
        // The proof names job-2: presented for job-3, or as another party's
        // answer, it does not verify.
        let e = read(&wire[0], 0, &k.public, &metadata("job-3", 0));
        assert!(matches!(e, Error::Proof(_)), "{e}");
        assert!(e.to_string().contains("party `platform`"), "{e}");
        // Another key set's proof key.
        let other = KeySet::generate().unwrap();
        assert!(matches!(read(&wire[0], 0, &other.public, &metadata("job-2", 0)), Error::Proof(_)));
        // One ciphertext coefficient changed after proving.
        let Blocks::Proven(list) =
            Contribution::from_proven_bytes(&wire[2], plan(), 2, &k.public, crs, &metadata("job-2", 2)).unwrap().blocks
        else {
            panic!("proven")
        };
        let (first, _) = list.into_raw_parts().remove(0);
        let word = first.into_raw_parts().0.into_container()[5].to_le_bytes();
        let at = wire[2].windows(8).position(|w| w == word).expect("the coefficient is in the bytes");
        let mut tampered = wire[2].clone();
        tampered[at] ^= 1;
        assert!(matches!(read(&tampered, 2, &k.public, &metadata("job-2", 2)), Error::Proof(_)));
        // A plain list where a proven one is required, truncated bytes, and
        // a list of another party's length.
        let digits = plan().contribution(0, &record()).unwrap();
        let plain = Contribution::encrypt(plan(), 0, &digits, &k.public).unwrap().to_bytes().unwrap();
        assert!(matches!(read(&plain, 0, &k.public, &metadata("job-2", 0)), Error::Contribution { .. }));
        assert!(matches!(read(&wire[0][..100], 0, &k.public, &metadata("job-2", 0)), Error::Contribution { .. }));
        assert!(matches!(read(&wire[1], 0, &k.public, &metadata("job-2", 1)), Error::Contribution { .. }));
    }

    /// Blocks past a digit: packed lists (degree 15) are refused; a proven
    /// value of 4 to 15 in an unpacked list reaches the circuit clamped to 3.
    #[test]
    fn blocks_past_a_digit_never_reach_the_circuit() {
        let (crs, _) = crs();
        let k = keys();
        let plan = plan();
        let md = metadata("job-4", 0);
        let n = plan.parties()[0].blocks();
        let wide = |values: &[u64], modulus: u64| {
            let list = k
                .public
                .proven
                .encrypt_and_prove_slice(values, &crs.crs, &md, COMPUTE_LOAD, modulus)
                .expect("tfhe proves any value below 16");
            Contribution { blocks: Blocks::Proven(list), key_id: k.id().to_string() }.to_bytes().unwrap()
        };
        let packed = wide(&vec![9; n], 16);
        let e = Contribution::from_proven_bytes(&packed, plan, 0, &k.public, crs, &md).err().expect("refused");
        assert!(e.to_string().contains("packed"), "{e}");

        // Degree 3 declared, 7 encrypted: the proof holds (it bounds the
        // block below 16), the cast clamps it.
        let digits = plan.contribution(0, &record()).unwrap();
        let mut values: Vec<u64> = digits.iter().map(|&d| u64::from(d)).collect();
        values[0] = 7;
        let c = Contribution::from_proven_bytes(&wide(&values, 4), plan, 0, &k.public, crs, &md).expect("verifies");
        let mut clamped = digits.clone();
        clamped[0] = 3;
        let mut blocks = k.evaluation.expand(&c).unwrap();
        let ck: &tfhe::shortint::ClientKey = k.lender.client.as_ref().unwrap().as_ref();
        let got: Vec<u64> = blocks.drain(..).map(|ct| ck.decrypt_message_and_carry(&ct)).collect();
        assert_eq!(got, clamped.iter().map(|&d| u64::from(d)).collect::<Vec<_>>());
    }

    #[test]
    fn a_crs_is_pinned_by_its_hash() {
        let (crs, bytes) = crs();
        assert_eq!(crs.max_blocks(), 16);
        let e = Crs::from_bytes(bytes, &"0".repeat(64)).unwrap_err();
        assert!(e.to_string().contains("pins"), "{e}");
        let cut = &bytes[..bytes.len() / 2];
        let e = Crs::from_bytes(cut, &sha256_hex(cut)).unwrap_err();
        assert!(e.to_string().contains("not well formed"), "{e}");
        assert!(Crs::generate(0).is_err());
        assert!(Crs::generate(MAX_PROOF_BLOCKS + 1).is_err());
    }
}
