//! Byte forms of lender keys and encrypted results, for key files and the
//! wire.
//!
//! Every reader here takes untrusted bytes: it is bounded in size
//! (`safe_deserialize` refuses anything longer than the limit before
//! allocating for it) and checks that what it read is conformant with the
//! parameters this crate uses, so a malformed key or result is an error, not
//! a panic or an oversized allocation later.
//!
//! The lender generates keys with [`export_keys`]; it keeps the secret key
//! ([`LenderKey::to_bytes`], written 0600 by the caller) and ships the public
//! keys (to parties, through the coordinator) and the *compressed* evaluation
//! key with its casting key (to the coordinator, ~3× smaller than the
//! expanded ones).
//!
//! A public key and an evaluation key each travel as two length-prefixed
//! parts (plain then proof public key; server key then casting key), each
//! part a `safe_serialize` stream under its own name.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tfhe::conformance::ParameterSetConformant;
use tfhe::core_crypto::prelude::LweKeyswitchKeyConformanceParams;
use tfhe::integer::{ClientKey as IntegerClientKey, CompressedServerKey, ServerKey as IntegerServerKey};
use tfhe::named::Named;
use tfhe::safe_serialization::{safe_deserialize, safe_deserialize_conformant, safe_serialize};
use tfhe::shortint::ciphertext::{CompactCiphertextList, MaxDegree, ProvenCompactCiphertextList};
use tfhe::shortint::key_switching_key::{
    CompressedKeySwitchingKeyMaterial, KeySwitchingKeyConformanceParams, KeySwitchingKeyDestinationAtomicPattern,
};
use tfhe::shortint::parameters::CompactPublicKeyEncryptionParameters;
use tfhe::shortint::{
    AtomicPatternParameters, ClientKey as ShortintClientKey, CompactPublicKey, CompressedKeySwitchingKey,
    CompressedServerKey as ShortintCompressedServerKey, EncryptionKeyChoice,
};
use tfhe_versionable::{Unversionize, UnversionizeError, Versionize, VersionizeOwned};
use zeroize::Zeroizing;

use crate::circuit::Val;
use crate::circuit::{DIGIT_BASE, NOISE_MAX};
use crate::error::{Error, Result};
use crate::fhe::{EncryptedResult, EvaluationKey, LenderKey, ProofSecret, PublicKey, Sealed, key_id_of};
use crate::params::DECISION_PARAMS;
use crate::program::Program;
use crate::proof::{CASTING_PARAMS, PROOF_PARAMS};

/// Largest part of a public key accepted (each of the two real ones is
/// ~33 KB).
pub const PUBLIC_KEY_LIMIT: u64 = 1 << 22;
/// Largest compressed evaluation key accepted (the real one is ~25 MB).
pub const EVALUATION_KEY_LIMIT: u64 = 1 << 28;
/// First bytes of a serialized public key of this version: its key set id
/// covers the evaluation key. Keys from before it lack the tag and are
/// refused with how to migrate.
const PUBLIC_KEY_TAG: &[u8] = b"jointscore-public-key-v2\n";
/// Largest secret key file accepted.
pub const LENDER_KEY_LIMIT: u64 = 1 << 22;
/// Largest encrypted result accepted (a sealed block is ~1.8 KB; a few
/// hundred blocks stay well under 1 MB).
pub const RESULT_LIMIT: u64 = 1 << 22;

/// The name `safe_serialize` writes in a header before a type's bytes, and
/// checks when reading them back. tfhe names its high-level types but not
/// the shortint and integer ones this crate uses, so they get names here.
pub(crate) trait WireName {
    const NAME: &'static str;
}

impl WireName for CompactPublicKey {
    const NAME: &'static str = "jointscore::PublicKey";
}
impl WireName for ShortintCompressedServerKey {
    const NAME: &'static str = "jointscore::CompressedEvaluationKey";
}
impl WireName for IntegerClientKey {
    const NAME: &'static str = "jointscore::LenderKey";
}
impl WireName for CompactCiphertextList {
    const NAME: &'static str = "jointscore::Contribution";
}
impl WireName for ProvenCompactCiphertextList {
    const NAME: &'static str = "jointscore::ProvenContribution";
}
impl WireName for CompressedKeySwitchingKeyMaterial {
    const NAME: &'static str = "jointscore::CompressedCastingKey";
}

/// Appends one length-prefixed part.
fn put_part(out: &mut Vec<u8>, part: &[u8]) {
    out.extend_from_slice(&(part.len() as u32).to_le_bytes());
    out.extend_from_slice(part);
}

/// Takes one length-prefixed part of at most `limit` bytes off the front.
fn take_part<'a>(rest: &mut &'a [u8], limit: u64) -> std::result::Result<&'a [u8], String> {
    let (len, tail) = rest.split_first_chunk::<4>().ok_or("truncated before a part's length")?;
    let len = u32::from_le_bytes(*len) as usize;
    if len as u64 > limit || len > tail.len() {
        return Err(format!("a part's length {len} is out of bounds"));
    }
    let (part, tail) = tail.split_at(len);
    *rest = tail;
    Ok(part)
}

/// An owned tfhe value under its [`WireName`], for reading.
#[derive(Deserialize)]
#[serde(transparent)]
pub(crate) struct Wire<T>(pub(crate) T);

/// A borrowed tfhe value under its [`WireName`], for writing without a copy
/// (a copy of a secret key would escape the wiping on drop).
#[derive(Serialize)]
#[serde(transparent)]
pub(crate) struct WireRef<'a, T>(pub(crate) &'a T);

impl<T: WireName> Named for Wire<T> {
    const NAME: &'static str = T::NAME;
}

impl<T: WireName> Named for WireRef<'_, T> {
    const NAME: &'static str = T::NAME;
}

impl<T: Versionize> Versionize for WireRef<'_, T> {
    type Versioned<'vers>
        = T::Versioned<'vers>
    where
        Self: 'vers;
    fn versionize(&self) -> Self::Versioned<'_> {
        self.0.versionize()
    }
}

impl<T: VersionizeOwned> VersionizeOwned for Wire<T> {
    type VersionedOwned = T::VersionedOwned;
    fn versionize_owned(self) -> Self::VersionedOwned {
        self.0.versionize_owned()
    }
}

impl<T: Unversionize> Unversionize for Wire<T> {
    fn unversionize(versioned: Self::VersionedOwned) -> std::result::Result<Self, UnversionizeError> {
        T::unversionize(versioned).map(Wire)
    }
}

impl<T: ParameterSetConformant> ParameterSetConformant for Wire<T> {
    type ParameterSet = T::ParameterSet;
    fn is_conformant(&self, params: &Self::ParameterSet) -> bool {
        self.0.is_conformant(params)
    }
}

/// A freshly generated key set in the forms a lender stores and ships.
pub struct ExportedKeys {
    /// Secret; stays with the lender.
    pub lender: LenderKey,
    /// For parties.
    pub public: PublicKey,
    /// The compressed evaluation key, serialized, for the coordinator.
    pub evaluation: Vec<u8>,
}

/// Generates a key set whose evaluation key is produced compressed (seeded),
/// ready to be written and uploaded.
pub fn export_keys() -> Result<ExportedKeys> {
    let client = IntegerClientKey::new(DECISION_PARAMS);
    let shortint_client: &ShortintClientKey = client.as_ref();
    let compressed = CompressedServerKey::new_radix_compressed_server_key(&client).into_raw_parts();
    let public = CompactPublicKey::try_new(shortint_client).map_err(|e| Error::Fhe(e.to_string()))?;
    let secret = ProofSecret::generate();
    let proven = secret.public()?;
    let (casting, _, _) =
        CompressedKeySwitchingKey::new((secret.key()?, None), (shortint_client, &compressed), CASTING_PARAMS)
            .into_raw_parts();
    drop(secret);
    let (mut server_part, mut casting_part) = (Vec::new(), Vec::new());
    safe_serialize(&WireRef(&compressed), &mut server_part, EVALUATION_KEY_LIMIT)
        .map_err(|e| Error::Fhe(e.to_string()))?;
    safe_serialize(&WireRef(&casting), &mut casting_part, EVALUATION_KEY_LIMIT)
        .map_err(|e| Error::Fhe(e.to_string()))?;
    let mut evaluation = Vec::with_capacity(server_part.len() + casting_part.len() + 8);
    put_part(&mut evaluation, &server_part);
    put_part(&mut evaluation, &casting_part);
    let evaluation_sha256: [u8; 32] = Sha256::digest(&evaluation).into();
    let key_id = key_id_of(&public, &proven, &evaluation_sha256);
    Ok(ExportedKeys {
        lender: LenderKey { client: Some(client), key_id: key_id.clone() },
        public: PublicKey { key: public, proven, evaluation_sha256, key_id },
        evaluation,
    })
}

fn public_params() -> Result<CompactPublicKeyEncryptionParameters> {
    CompactPublicKeyEncryptionParameters::try_from(DECISION_PARAMS).map_err(|e| Error::Fhe(e.to_string()))
}

fn key_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Key(format!("{what} is not well formed for this version's parameters: {e}"))
}

impl PublicKey {
    /// The id of the key set this public key belongs to.
    pub fn id(&self) -> &str {
        &self.key_id
    }

    /// SHA-256 of the key set's serialized evaluation key, which its id
    /// covers.
    pub fn evaluation_sha256(&self) -> &[u8; 32] {
        &self.evaluation_sha256
    }

    /// Serialized form: a format tag, then the plain and the proof public
    /// key (versioned by tfhe), then the evaluation key's SHA-256.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = PUBLIC_KEY_TAG.to_vec();
        for key in [&self.key, &self.proven] {
            let mut part = Vec::new();
            safe_serialize(&WireRef(key), &mut part, PUBLIC_KEY_LIMIT).map_err(|e| Error::Fhe(e.to_string()))?;
            put_part(&mut out, &part);
        }
        put_part(&mut out, &self.evaluation_sha256);
        Ok(out)
    }

    /// Reads public keys from untrusted bytes (bounded, conformance checked
    /// against each key's parameters, nothing trailing); the key set's id is
    /// recomputed from the keys themselves.
    pub fn from_bytes(bytes: &[u8]) -> Result<PublicKey> {
        if bytes.len() as u64 > 2 * PUBLIC_KEY_LIMIT {
            return Err(key_error("public key", format!("{} bytes is over the limit", bytes.len())));
        }
        let Some(mut rest) = bytes.strip_prefix(PUBLIC_KEY_TAG) else {
            return Err(Error::Key(
                "the public key is from an earlier version of jointscore, whose key set ids covered only the \
                 public keys: generate a new key set (`jointscore lender keygen --force`) and register it again"
                    .into(),
            ));
        };
        let mut read = |params: &CompactPublicKeyEncryptionParameters| -> Result<CompactPublicKey> {
            let part = take_part(&mut rest, PUBLIC_KEY_LIMIT).map_err(|e| key_error("public key", e))?;
            let Wire(key) =
                safe_deserialize_conformant(part, PUBLIC_KEY_LIMIT, params).map_err(|e| key_error("public key", e))?;
            Ok(key)
        };
        let key = read(&public_params()?)?;
        let proven = read(&PROOF_PARAMS)?;
        let evaluation_sha256: [u8; 32] = take_part(&mut rest, 32)
            .map_err(|e| key_error("public key", e))?
            .try_into()
            .map_err(|_| key_error("public key", "the evaluation key digest is not 32 bytes"))?;
        if !rest.is_empty() {
            return Err(key_error("public key", format!("{} trailing bytes", rest.len())));
        }
        let key_id = key_id_of(&key, &proven, &evaluation_sha256);
        Ok(PublicKey { key, proven, evaluation_sha256, key_id })
    }
}

impl EvaluationKey {
    /// The id of the key set this evaluation key belongs to.
    pub fn id(&self) -> &str {
        &self.key_id
    }

    /// Reads and decompresses an evaluation key from untrusted bytes
    /// (bounded, conformance checked; a few seconds). It is filed under the
    /// id of `public`, which the lender registered with it: nothing in an
    /// evaluation key names its public key, so binding the two is the
    /// registration's job.
    pub fn from_compressed_bytes(bytes: &[u8], public: &PublicKey) -> Result<EvaluationKey> {
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        if digest != public.evaluation_sha256 {
            return Err(Error::Key(format!(
                "the evaluation key is not the one key set {} names (its SHA-256 differs)",
                public.key_id
            )));
        }
        let params = AtomicPatternParameters::from(DECISION_PARAMS);
        let (msg, carry) = (params.message_modulus(), params.carry_modulus());
        // The radix server key keeps one carry's worth of headroom.
        let max_degree = MaxDegree::new(msg.0 * carry.0 - 1 - (carry.0 - 1));
        let bad = |e: String| key_error("evaluation key", e);
        let mut rest = bytes;
        let server_part = take_part(&mut rest, EVALUATION_KEY_LIMIT).map_err(bad)?;
        let casting_part = take_part(&mut rest, EVALUATION_KEY_LIMIT).map_err(bad)?;
        if !rest.is_empty() {
            return Err(bad(format!("{} trailing bytes", rest.len())));
        }
        let Wire(compressed): Wire<ShortintCompressedServerKey> =
            safe_deserialize_conformant(server_part, EVALUATION_KEY_LIMIT, &(params, max_degree))
                .map_err(|e| bad(e.to_string()))?;
        // The casting key goes from the proof key (its input) to the
        // evaluation key's small LWE key (its output); conformance here is
        // what keeps tfhe's dimension asserts from firing later.
        let casting_params = KeySwitchingKeyConformanceParams {
            keyswitch_key_conformance_params: LweKeyswitchKeyConformanceParams {
                decomp_base_log: CASTING_PARAMS.ks_base_log,
                decomp_level_count: CASTING_PARAMS.ks_level,
                output_lwe_size: params.lwe_dimension().to_lwe_size(),
                input_lwe_dimension: PROOF_PARAMS.encryption_lwe_dimension,
                ciphertext_modulus: params.ciphertext_modulus(),
            },
            cast_rshift: 0,
            destination_key: EncryptionKeyChoice::Small,
            destination_atomic_pattern: KeySwitchingKeyDestinationAtomicPattern::Standard,
        };
        let Wire(casting): Wire<CompressedKeySwitchingKeyMaterial> =
            safe_deserialize_conformant(casting_part, EVALUATION_KEY_LIMIT, &casting_params)
                .map_err(|e| bad(format!("casting key: {e}")))?;
        let server = IntegerServerKey::from_raw_parts(compressed.decompress());
        if server.as_ref().max_noise_level.get() != u64::from(NOISE_MAX) {
            return Err(Error::Key("evaluation key allows another noise level than the circuits assume".into()));
        }
        Ok(EvaluationKey { server, casting: casting.decompress(), key_id: public.key_id.clone() })
    }
}

impl LenderKey {
    /// The id of the key set this secret key belongs to.
    pub fn id(&self) -> &str {
        &self.key_id
    }

    /// Serialized secret key, in a buffer wiped on drop. The caller writes
    /// it with owner-only permissions.
    pub fn to_bytes(&self) -> Result<Zeroizing<Vec<u8>>> {
        let client = self.client.as_ref().ok_or_else(|| Error::Internal("lender key already dropped".into()))?;
        // Sized for the largest key up front: a growing Vec would free
        // earlier copies of the secret without wiping them.
        let mut out = Zeroizing::new(Vec::with_capacity(LENDER_KEY_LIMIT as usize));
        safe_serialize(&WireRef(client), &mut *out, LENDER_KEY_LIMIT).map_err(|e| Error::Fhe(e.to_string()))?;
        Ok(out)
    }

    /// Reads a secret key and checks that it belongs to `public` (it
    /// decrypts a fresh encryption under `public`), so a key file mixed up
    /// with another key set's public key is caught here, not as garbage
    /// decisions later.
    pub fn from_bytes(bytes: &[u8], public: &PublicKey) -> Result<LenderKey> {
        let Wire(client): Wire<IntegerClientKey> =
            safe_deserialize(bytes, LENDER_KEY_LIMIT).map_err(|e| key_error("secret key", e))?;
        let key = LenderKey { client: Some(client), key_id: public.key_id.clone() };
        let ck: &ShortintClientKey =
            key.client.as_ref().map(AsRef::as_ref).ok_or_else(|| Error::Internal("lender key missing".into()))?;
        let expected = AtomicPatternParameters::from(DECISION_PARAMS);
        if ck.parameters().message_modulus() != expected.message_modulus()
            || ck.parameters().carry_modulus() != expected.carry_modulus()
            || ck.parameters().lwe_dimension() != expected.lwe_dimension()
            || ck.parameters().glwe_dimension() != expected.glwe_dimension()
            || ck.parameters().polynomial_size() != expected.polynomial_size()
        {
            return Err(Error::Key("secret key uses other parameters than this version".into()));
        }
        let probe = [1u64, 2, 3, 0];
        let list = public.key.encrypt_slice_with_modulus(&probe, DIGIT_BASE);
        let expanded = list
            .expand(tfhe::shortint::parameters::ShortintCompactCiphertextListCastingMode::NoCasting)
            .map_err(|e| Error::Fhe(e.to_string()))?;
        let back: Vec<u64> = expanded.iter().map(|ct| ck.decrypt_message_and_carry(ct)).collect();
        if back != probe {
            return Err(Error::Key(format!("secret key does not belong to key set {}", public.key_id)));
        }
        Ok(key)
    }
}

impl EncryptedResult {
    /// The id of the key set the result is encrypted under.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Serialized form: [`RESULT_MAGIC`], then for each output in order, for
    /// each block, each part that is not a constant folded by the circuit
    /// (the lender's plan has those) as its sealed coefficients, 2 bytes
    /// each, little-endian: mask, then body.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = RESULT_MAGIC.to_vec();
        for (_, blocks) in &self.outputs {
            for part in blocks.iter().flatten() {
                if let Sealed::Lwe(coefficients) = part {
                    out.extend(coefficients.iter().flat_map(|c| c.to_le_bytes()));
                }
            }
        }
        Ok(out)
    }

    /// Reads a result from untrusted bytes: it must carry exactly one sealed
    /// block of this version's size for each part of `plan`'s outputs that
    /// the circuit computes, and nothing else. Any coefficients are a valid
    /// ciphertext; what they decrypt to is the coordinator's word (a
    /// deviating coordinator could send anything it can compute), checked
    /// for range when the lender decodes the bundle.
    pub fn from_bytes(bytes: &[u8], plan: &dyn Program, key_id: &str) -> Result<EncryptedResult> {
        let bad = |m: String| Error::Result(m);
        if bytes.len() as u64 > RESULT_LIMIT {
            return Err(bad(format!("{} bytes exceeds the {RESULT_LIMIT}-byte limit", bytes.len())));
        }
        let Some(mut rest) = bytes.strip_prefix(RESULT_MAGIC) else {
            return Err(bad("not a result of this version (unknown format tag)".into()));
        };
        let block_len = sealed_block_len();
        let expected: usize = plan
            .circuit()
            .outputs
            .iter()
            .flat_map(|(_, blocks)| blocks.iter().flatten())
            .filter(|v| matches!(v, Val::Wire(_)))
            .count();
        if rest.len() != expected * block_len {
            return Err(bad(format!(
                "{} bytes of output blocks, the plan's outputs need {} ({expected} blocks of {block_len})",
                rest.len(),
                expected * block_len
            )));
        }
        let mut outputs = Vec::new();
        for (name, blocks) in &plan.circuit().outputs {
            let mut enc = Vec::with_capacity(blocks.len());
            for parts in blocks {
                let mut sealed = Vec::with_capacity(parts.len());
                for part in parts {
                    sealed.push(match part {
                        Val::Const(c) => Sealed::Const(*c),
                        Val::Wire(_) => {
                            let (one, tail) = rest.split_at(block_len);
                            rest = tail;
                            Sealed::Lwe(one.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect())
                        }
                    });
                }
                enc.push(sealed);
            }
            outputs.push((name.clone(), enc));
        }
        Ok(EncryptedResult { outputs, key_id: key_id.to_string() })
    }
}

/// First bytes of a serialized result: names the sealed format, so a result
/// of the earlier format (full ciphertexts) is refused by name.
pub const RESULT_MAGIC: &[u8; 4] = b"jsr2";

/// Bytes of one sealed output block: a coefficient per small-key dimension
/// plus the body, 2 bytes each.
fn sealed_block_len() -> usize {
    (DECISION_PARAMS.lwe_dimension.0 + 1) * 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhe::Contribution;
    use crate::fhe::tests::keys;
    use crate::model::Model;
    use crate::plan::{Plan, PlanKind};
    use crate::reference::{self, Record};

    fn sample_record(model: &Model) -> Record {
        let json = serde_json::json!({
            "gmv_12m_k": 900, "gmv_trend_pct": 12, "refund_rate_bp": 300, "months_active": 40,
            "store_rating_x10": 47, "on_time_rate_bp": 9700, "inventory_turnover_days": 45,
            "overseas_stock_k": 200, "collection_cycle_days": 20, "late_repayments_12m": 0,
            "outstanding_debt_k": 50, "major_violations": 0,
        });
        Record::from_json(model, &json).expect("sample record")
    }

    fn encrypted_result(plan: &Plan) -> EncryptedResult {
        let k = keys();
        let record = sample_record(plan.model());
        let contributions: Vec<Contribution> = (0..plan.parties().len())
            .map(|p| {
                let digits = plan.contribution(p, &record).expect("digits");
                Contribution::encrypt(plan, p, &digits, &k.public).expect("encrypt")
            })
            .collect();
        k.evaluation.evaluate(plan, &contributions).expect("evaluate").0
    }

    #[test]
    fn exported_keys_round_trip_and_decide() {
        let model = Model::cross_border_seller();
        let plan = Plan::new(&model, PlanKind::Pushdown).expect("plan");
        let exported = export_keys().expect("export");
        let public = PublicKey::from_bytes(&exported.public.to_bytes().expect("bytes")).expect("public key");
        assert_eq!(public.id(), exported.public.id());
        let secret = LenderKey::from_bytes(&exported.lender.to_bytes().expect("bytes"), &public).expect("secret key");
        assert_eq!(secret.id(), public.id());
        let evaluation = EvaluationKey::from_compressed_bytes(&exported.evaluation, &public).expect("evaluation key");
        assert_eq!(evaluation.id(), public.id());

        let record = sample_record(&model);
        let contributions: Vec<Contribution> = (0..plan.parties().len())
            .map(|p| Contribution::encrypt(&plan, p, &plan.contribution(p, &record).expect("digits"), &public))
            .collect::<Result<_>>()
            .expect("encrypt");
        let (result, _) = evaluation.evaluate(&plan, &contributions).expect("evaluate");
        let back = EncryptedResult::from_bytes(&result.to_bytes().expect("bytes"), &plan, public.id()).expect("read");
        assert_eq!(
            secret.decrypt(&plan, &back).expect("decrypt"),
            reference::evaluate(&model, &record).restricted(&model)
        );

        // A secret key presented with another key set's public key.
        let other = &keys().public;
        let e = LenderKey::from_bytes(&exported.lender.to_bytes().expect("bytes"), other).unwrap_err();
        assert!(e.to_string().contains("does not belong to key set"), "{e}");
    }

    #[test]
    fn malformed_key_bytes_are_refused() {
        let public = keys().public.to_bytes().expect("bytes");
        for bad in [&b"not a key"[..], &public[..public.len() / 2], &[]] {
            assert!(matches!(PublicKey::from_bytes(bad), Err(Error::Key(_))));
            assert!(matches!(LenderKey::from_bytes(bad, &keys().public), Err(Error::Key(_))));
            assert!(matches!(EvaluationKey::from_compressed_bytes(bad, &keys().public), Err(Error::Key(_))));
        }
        // A public key where an evaluation key belongs.
        assert!(matches!(EvaluationKey::from_compressed_bytes(&public, &keys().public), Err(Error::Key(_))));
    }

    #[test]
    fn results_round_trip_and_malformed_results_are_refused() {
        let model = Model::cross_border_seller();
        let plan = Plan::new(&model, PlanKind::Pushdown).expect("plan");
        let result = encrypted_result(&plan);
        let bytes = result.to_bytes().expect("bytes");
        let back = EncryptedResult::from_bytes(&bytes, &plan, keys().id()).expect("read");
        assert_eq!(back.key_id(), keys().id());
        let want = reference::evaluate(&model, &sample_record(&model)).restricted(&model);
        assert_eq!(keys().lender.decrypt(&plan, &back).expect("decrypt"), want);

        // Sealed: a few KB, not ~16 KB a block.
        let blocks = plan.circuit().outputs.iter().flat_map(|(_, b)| b.iter().flatten()).count();
        assert!(bytes.len() <= RESULT_MAGIC.len() + blocks * sealed_block_len(), "{} bytes", bytes.len());
        assert!(bytes.len() < 32 * 1024, "{} bytes for {blocks} blocks", bytes.len());

        let mut trailing = bytes.clone();
        trailing.push(0);
        let mut bad_length = bytes.clone();
        bad_length[..4].copy_from_slice(b"jsr1");
        let mut flipped = bytes.clone();
        flipped[40] ^= 0xff;
        let oversized = vec![0u8; RESULT_LIMIT as usize + 1];
        let other_plan = Plan::new(&model, PlanKind::CoordinatorSide).expect("plan");
        for (bad, plan) in [
            (&bytes[..bytes.len() - 1], &plan),
            (&trailing[..], &plan),
            (&bad_length[..], &plan),
            (&flipped[..], &plan),
            (&oversized[..], &plan),
            (&[][..], &plan),
            (&bytes[..], &other_plan),
        ] {
            match EncryptedResult::from_bytes(bad, plan, keys().id()) {
                Err(Error::Result(_)) => {}
                Err(e) => panic!("wrong error: {e}"),
                // Any coefficients are a well-formed sealed block (a
                // flipped byte decrypts to noise); only the framing is
                // checked here.
                Ok(_) if std::ptr::eq(bad, &flipped[..]) => {}
                Ok(_) => panic!("malformed result accepted"),
            }
        }
    }
}
