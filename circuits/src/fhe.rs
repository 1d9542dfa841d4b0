//! TFHE: lender keys, party-side encryption, coordinator-side evaluation and
//! lender-side decryption of the declared outputs only.
//!
//! Parameters are [`crate::params::DECISION_PARAMS`] (tfhe's default
//! `PARAM_MESSAGE_2_CARRY_2_KS_PBS`: 2 message bits, 2 carry bits, failure
//! probability ≤ 2^-128). Parties encrypt their
//! contribution digits under the lender's compact public key as one compact
//! list; the coordinator expands it without bootstrapping, evaluates the
//! plan's circuit level by level (the bootstraps of a level in parallel on
//! the rayon pool, lookups of one block sharing a bootstrap; many decisions
//! at once with [`EvaluationKey::evaluate_batch`]), and returns the output
//! blocks; the lender decrypts them.
//!
//! Each key set also carries a *proof* public key and the casting key that
//! brings its ciphertexts to the evaluation parameters: in a consortium's
//! strict mode parties encrypt under it with zero-knowledge proofs
//! ([`crate::proof`]), and the coordinator verifies before it evaluates.
//!
//! Why one file of ~850 lines: every type here holds or borrows tfhe key
//! material whose fields stay private to this module (the secret key above
//! all, zeroized on drop, `Debug` that hides it). Splitting it into
//! submodules would have to widen those fields to `pub(super)`; keeping the
//! key material's whole surface in one module is worth the length. A third
//! of it is the tests at the end.

use std::fmt;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use sha2::{Digest, Sha256};
use tfhe::conformance::ListSizeConstraint;
use tfhe::core_crypto::prelude::{
    CiphertextModulus as CoreCiphertextModulus, CiphertextModulusLog, Cleartext, LweCiphertext,
    LweCiphertextListConformanceParams, ModulusSwitchedLweCiphertext, Plaintext, decrypt_lwe_ciphertext,
    keyswitch_lwe_ciphertext, lwe_ciphertext_add_assign, lwe_ciphertext_cleartext_mul_assign,
    lwe_ciphertext_modulus_switch, lwe_ciphertext_plaintext_add_assign,
};
use tfhe::integer::{ClientKey as IntegerClientKey, IntegerCiphertext, RadixCiphertext, ServerKey as IntegerServerKey};
use tfhe::safe_serialization::{safe_deserialize_conformant, safe_serialize};
use tfhe::shortint::atomic_pattern::AtomicPatternServerKey;
use tfhe::shortint::ciphertext::{
    Ciphertext, CompactCiphertextList, Degree, ProvenCompactCiphertextList,
    ProvenCompactCiphertextListConformanceParams,
};
use tfhe::shortint::client_key::atomic_pattern::AtomicPatternClientKey;
use tfhe::shortint::key_switching_key::{KeySwitchingKeyMaterial, KeySwitchingKeyView};
use tfhe::shortint::parameters::{
    CiphertextListConformanceParams, CompactCiphertextListExpansionKind, ShortintCompactCiphertextListCastingMode,
};
use tfhe::shortint::{ClientKey as ShortintClientKey, CompactPrivateKey, CompactPublicKey, KeySwitchingKey, PBSOrder};
use tfhe::zk::{CompactPkeProofConformanceParams, CompactPkeZkScheme};
use zeroize::Zeroize;

use crate::circuit::{BLOCK_MAX, Circuit, DIGIT_BASE, NOISE_MAX, Op, Val};
use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::program::Program;
use crate::reference::Bundle;
use crate::wire::{Wire, WireRef};

/// Size limit for one serialized contribution: generous for the models this
/// version plans (a few hundred blocks is ~40 KB), and far below anything
/// that could exhaust the coordinator.
pub const CONTRIBUTION_SIZE_LIMIT: u64 = 1 << 22;

/// The lender's secret key. It never leaves the lender; `Debug` does not
/// print it; its secret buffers are zeroed when it is dropped.
pub struct LenderKey {
    /// Always `Some` until dropped.
    pub(crate) client: Option<IntegerClientKey>,
    pub(crate) key_id: String,
}

impl Drop for LenderKey {
    fn drop(&mut self) {
        // tfhe does not zeroize its keys; take ours apart and wipe the
        // secret key buffers ourselves.
        let Some(client) = self.client.take() else { return };
        if let AtomicPatternClientKey::Standard(key) = client.into_raw_parts().atomic_pattern {
            let (glwe, lwe, _, _) = key.into_raw_parts();
            glwe.into_container().zeroize();
            lwe.into_container().zeroize();
        }
    }
}

impl fmt::Debug for LenderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LenderKey(<secret>)")
    }
}

/// The keys parties encrypt under: one for plain contributions, one for
/// proven ones (strict mode).
#[derive(Clone)]
pub struct PublicKey {
    pub(crate) key: CompactPublicKey,
    pub(crate) proven: CompactPublicKey,
    /// SHA-256 of the serialized evaluation key of the same key set: it
    /// travels with the public keys so a party, which never sees the
    /// evaluation key, can still recompute the key set's full id.
    pub(crate) evaluation_sha256: [u8; 32],
    pub(crate) key_id: String,
}

/// The key the coordinator evaluates with, and the casting key that brings
/// proven contributions to its parameters; neither can decrypt.
#[derive(Clone)]
pub struct EvaluationKey {
    pub(crate) server: IntegerServerKey,
    pub(crate) casting: KeySwitchingKeyMaterial,
    pub(crate) key_id: String,
}

/// The secret key behind a key set's proof public key. It is only needed to
/// make the casting key: it lives for the duration of key generation and is
/// wiped when dropped.
pub(crate) struct ProofSecret(Option<CompactPrivateKey<Vec<u64>>>);

impl ProofSecret {
    pub(crate) fn generate() -> ProofSecret {
        ProofSecret(Some(CompactPrivateKey::new(crate::proof::PROOF_PARAMS)))
    }

    pub(crate) fn key(&self) -> Result<&CompactPrivateKey<Vec<u64>>> {
        self.0.as_ref().ok_or_else(|| Error::Internal("proof secret already dropped".into()))
    }

    pub(crate) fn public(&self) -> Result<CompactPublicKey> {
        Ok(CompactPublicKey::new(self.key()?))
    }
}

impl Drop for ProofSecret {
    fn drop(&mut self) {
        if let Some(key) = self.0.take() {
            let (secret, _) = key.into_raw_parts();
            secret.into_container().zeroize();
        }
    }
}

/// The three keys of a lender.
pub struct KeySet {
    /// Secret; stays with the lender.
    pub lender: LenderKey,
    /// For parties.
    pub public: PublicKey,
    /// For the coordinator.
    pub evaluation: EvaluationKey,
}

impl KeySet {
    /// Generates a fresh key set (a few seconds).
    pub fn generate() -> Result<KeySet> {
        let client = IntegerClientKey::new(crate::params::DECISION_PARAMS);
        let server = IntegerServerKey::new_radix_server_key(&client);
        let max_noise = server.as_ref().max_noise_level.get();
        if max_noise != u64::from(NOISE_MAX) {
            return Err(Error::Fhe(format!(
                "parameters allow noise level {max_noise}; circuits are built for {NOISE_MAX}"
            )));
        }
        let public = CompactPublicKey::try_new(AsRef::<ShortintClientKey>::as_ref(&client))
            .map_err(|e| Error::Fhe(e.to_string()))?;
        let secret = ProofSecret::generate();
        let proven = secret.public()?;
        let (casting, _, _) = KeySwitchingKey::new(
            (secret.key()?, None),
            (AsRef::<ShortintClientKey>::as_ref(&client), server.as_ref()),
            crate::proof::CASTING_PARAMS,
        )
        .into_raw_parts();
        drop(secret);
        // Never serialized for a registration, this key set's evaluation
        // key is still named by a digest of its serialized form, streamed
        // into the hash rather than held in memory.
        let mut digest = HashWriter(Sha256::new());
        bincode::serialize_into(&mut digest, &(&server, &casting)).map_err(|e| Error::Fhe(e.to_string()))?;
        let evaluation_sha256: [u8; 32] = digest.0.finalize().into();
        let key_id = key_id_of(&public, &proven, &evaluation_sha256);
        Ok(KeySet {
            lender: LenderKey { client: Some(client), key_id: key_id.clone() },
            public: PublicKey { key: public, proven, evaluation_sha256, key_id: key_id.clone() },
            evaluation: EvaluationKey { server, casting, key_id },
        })
    }

    /// The key set's id: a hash of its public key.
    pub fn id(&self) -> &str {
        &self.public.key_id
    }
}

/// Domain tag of key set ids.
const KEY_ID_DOMAIN: &[u8] = b"jointscore/key-set/v2";

/// A key set's id: the full SHA-256 (64 hex digits) over a domain tag, the
/// coefficients of both compact public keys (plain, then proof) and the
/// SHA-256 of the serialized evaluation key. Anyone holding the public
/// keys can recompute it; none of the three can be swapped alone, and the
/// coordinator checks the evaluation key it is given against its digest.
pub(crate) fn key_id_of(public: &CompactPublicKey, proven: &CompactPublicKey, evaluation_sha256: &[u8; 32]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(KEY_ID_DOMAIN);
    for key in [public, proven] {
        let (raw, _) = key.clone().into_raw_parts();
        for word in raw.as_ref() {
            hasher.update(word.to_le_bytes());
        }
    }
    hasher.update(evaluation_sha256);
    hex::encode(hasher.finalize())
}

/// Feeds what is written into a SHA-256.
pub(crate) struct HashWriter(pub(crate) Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A contribution's blocks, as they travel.
#[derive(Clone)]
pub(crate) enum Blocks {
    /// Under the plain public key: expanded without a bootstrap.
    Plain(CompactCiphertextList),
    /// Under the proof public key. Only two constructors make one: the
    /// party's own encryption, and [`Contribution::from_proven_bytes`],
    /// which verifies every proof first.
    Proven(ProvenCompactCiphertextList),
}

/// One party's encrypted contribution: a compact list of digit blocks.
#[derive(Clone)]
pub struct Contribution {
    pub(crate) blocks: Blocks,
    pub(crate) key_id: String,
}

impl Contribution {
    /// Encrypts a party's contribution digits (from [`Plan::contribution`]).
    pub fn encrypt(plan: &dyn Program, party: usize, digits: &[u8], key: &PublicKey) -> Result<Contribution> {
        let values = checked_digits(plan, party, digits)?;
        Ok(Contribution {
            blocks: Blocks::Plain(key.key.encrypt_slice_with_modulus(&values, DIGIT_BASE)),
            key_id: key.key_id.clone(),
        })
    }

    /// Encrypts a party's contribution digits under the proof public key,
    /// with proofs bound to `metadata` (the request, see
    /// `jointscore_identity::ContributionBinding`). Costs seconds of CPU.
    pub fn encrypt_proven(
        plan: &dyn Program,
        party: usize,
        digits: &[u8],
        key: &PublicKey,
        crs: &crate::proof::Crs,
        metadata: &[u8],
    ) -> Result<Contribution> {
        let values = checked_digits(plan, party, digits)?;
        let list = key
            .proven
            .encrypt_and_prove_slice(&values, &crs.crs, metadata, crate::proof::COMPUTE_LOAD, DIGIT_BASE)
            .map_err(|e| Error::Proof(e.to_string()))?;
        Ok(Contribution { blocks: Blocks::Proven(list), key_id: key.key_id.clone() })
    }

    /// Serialized form, versioned by tfhe.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        match &self.blocks {
            Blocks::Plain(list) => safe_serialize(&WireRef(list), &mut out, CONTRIBUTION_SIZE_LIMIT),
            Blocks::Proven(list) => safe_serialize(&WireRef(list), &mut out, CONTRIBUTION_SIZE_LIMIT),
        }
        .map_err(|e| Error::Fhe(e.to_string()))?;
        Ok(out)
    }

    /// Whether it carries zero-knowledge proofs.
    pub fn is_proven(&self) -> bool {
        matches!(self.blocks, Blocks::Proven(_))
    }

    /// Reads a proven contribution from untrusted bytes and verifies its
    /// proofs against `crs`, the key set's proof public key and `metadata`
    /// (the request the coordinator asked for): bounded in size, checked to
    /// be exactly the list the plan expects from `party`, and refused with
    /// [`Error::Proof`] unless every proof verifies. Verifying costs a
    /// fraction of a second per proof, on the rayon pool.
    pub fn from_proven_bytes(
        bytes: &[u8],
        plan: &dyn Program,
        party: usize,
        key: &PublicKey,
        crs: &crate::proof::Crs,
        metadata: &[u8],
    ) -> Result<Contribution> {
        let name = plan.parties().get(party).ok_or_else(|| Error::UnknownParty(format!("#{party}")))?.name.clone();
        check_size(bytes, &name)?;
        let params = key.proven.parameters();
        let conformance = ProvenCompactCiphertextListConformanceParams {
            encryption_lwe_dimension: params.encryption_lwe_dimension,
            message_modulus: params.message_modulus,
            carry_modulus: params.carry_modulus,
            ciphertext_modulus: params.ciphertext_modulus,
            expansion_kind: CompactCiphertextListExpansionKind::RequiresCasting,
            max_lwe_count_per_compact_list: crs.max_blocks(),
            total_expected_lwe_count: plan.parties()[party].blocks(),
            zk_conformance_params: CompactPkeProofConformanceParams::new(CompactPkeZkScheme::V2),
        };
        let Wire(list): Wire<ProvenCompactCiphertextList> =
            safe_deserialize_conformant(bytes, CONTRIBUTION_SIZE_LIMIT, &conformance).map_err(|e| {
                Error::Contribution {
                    party: name.clone(),
                    message: format!("not a well-formed proven contribution for this plan and key: {e}"),
                }
            })?;
        // Conformance admits packed lists (two digits a block); the circuits
        // take one digit a block.
        if list.clone().into_raw_parts().iter().any(|(l, _)| l.is_packed()) {
            return Err(Error::Contribution {
                party: name,
                message: "packed blocks; one digit a block expected".into(),
            });
        }
        if list.verify(&crs.crs, &key.proven, metadata).is_invalid() {
            return Err(Error::Proof(format!(
                "the proof of party `{name}` does not verify for this request, key set {} and CRS {}",
                key.key_id,
                crs.sha256()
            )));
        }
        Ok(Contribution { blocks: Blocks::Proven(list), key_id: key.key_id.clone() })
    }

    /// Reads a contribution from untrusted bytes: bounded in size and checked
    /// to be exactly the list the plan expects from `party` under `key`'s
    /// parameters. The bytes do not name the key they were encrypted under;
    /// binding a contribution to a key id is the envelope's job.
    pub fn from_bytes(bytes: &[u8], plan: &dyn Program, party: usize, key: &PublicKey) -> Result<Contribution> {
        let name = plan.parties().get(party).ok_or_else(|| Error::UnknownParty(format!("#{party}")))?.name.clone();
        check_size(bytes, &name)?;
        let params = key.key.parameters();
        let conformance = CiphertextListConformanceParams {
            ct_list_params: LweCiphertextListConformanceParams {
                lwe_dim: params.encryption_lwe_dimension,
                lwe_ciphertext_count_constraint: ListSizeConstraint::exact_size(plan.parties()[party].blocks()),
                ct_modulus: params.ciphertext_modulus,
            },
            message_modulus: params.message_modulus,
            carry_modulus: params.carry_modulus,
            degree: Degree::new(DIGIT_BASE - 1),
            expansion_kind: params.expansion_kind,
        };
        let Wire(list): Wire<CompactCiphertextList> =
            safe_deserialize_conformant(bytes, CONTRIBUTION_SIZE_LIMIT, &conformance).map_err(|e| {
                Error::Contribution {
                    party: name,
                    message: format!("not a well-formed contribution for this plan and key: {e}"),
                }
            })?;
        Ok(Contribution { blocks: Blocks::Plain(list), key_id: key.key_id.clone() })
    }

    /// Number of encrypted blocks.
    pub fn len(&self) -> usize {
        match &self.blocks {
            Blocks::Plain(list) => list.len(),
            Blocks::Proven(list) => list.ciphertext_count(),
        }
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The digits as values to encrypt, if they are exactly what the plan
/// expects from `party`.
fn checked_digits(plan: &dyn Program, party: usize, digits: &[u8]) -> Result<Vec<u64>> {
    let party = plan.parties().get(party).ok_or_else(|| Error::UnknownParty(format!("#{party}")))?;
    let (want, name) = (party.blocks(), &party.name);
    if digits.len() != want {
        return Err(Error::Contribution {
            party: name.clone(),
            message: format!("{} blocks, the plan expects {want}", digits.len()),
        });
    }
    if digits.iter().any(|&d| u64::from(d) >= DIGIT_BASE) {
        return Err(Error::Contribution { party: name.clone(), message: "a block is not a base-4 digit".into() });
    }
    Ok(digits.iter().map(|&d| u64::from(d)).collect())
}

fn check_size(bytes: &[u8], party: &str) -> Result<()> {
    if bytes.len() as u64 > CONTRIBUTION_SIZE_LIMIT {
        return Err(Error::Contribution {
            party: party.to_string(),
            message: format!("{} bytes exceeds the {CONTRIBUTION_SIZE_LIMIT}-byte limit", bytes.len()),
        });
    }
    Ok(())
}

/// The encrypted output blocks of one evaluation.
pub struct EncryptedResult {
    pub(crate) outputs: Vec<(String, Vec<Vec<Sealed>>)>,
    pub(crate) key_id: String,
}

/// Bits kept of each coefficient of an output block. The coordinator key
/// switches every output block to the small LWE key and rounds its
/// coefficients to this many bits: 2 bytes each, ~1.8 KB a block instead of
/// the ~16 KB of a bootstrapped block. Decrypting needs the rounding error
/// below half a message step (2⁻⁶ of the torus with 2 message, 2 carry and
/// one padding bit); a bootstrap's own input has the same key-switch noise
/// and is rounded much more coarsely (to 2N = 2¹² values), and tfhe's
/// parameters bound *that* at a failure probability of 2⁻¹²⁸, so 16 bits
/// fail no more often than a bootstrap.
pub(crate) const SEALED_LOG_MODULUS: usize = 16;

/// One part of an output block as the lender receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Sealed {
    /// A constant the circuit folded: public, not sent (the lender's plan
    /// has it).
    Const(u8),
    /// An LWE ciphertext under the small key: mask, then body, each
    /// coefficient modulo 2^[`SEALED_LOG_MODULUS`].
    Lwe(Vec<u16>),
}

/// Timing and cost of one evaluation.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct EvalReport {
    /// Expanding the compact lists.
    pub expand: Duration,
    /// Evaluating the circuit.
    pub circuit: Duration,
    /// Programmable bootstraps run for this evaluation, expansion included:
    /// the circuit's own (a many-lookup-table bootstrap counts once) counted
    /// by the evaluator, the casting of proven lists and the radix groups by
    /// tfhe's process-wide counter (`pbs-stats`), which evaluations running
    /// concurrently in other threads would inflate.
    pub pbs: u64,
}

/// One decision of a batch: the plan and the parties' contributions, in the
/// plan's party order.
pub type BatchItem<'a> = (&'a dyn Program, &'a [Contribution]);

/// One decision of a batch while it is being evaluated: its node values so
/// far, and what it has cost.
struct Running<'a> {
    circuit: &'a Circuit,
    vals: Vec<Option<Ciphertext>>,
    /// Non-lookup nodes per bootstrap depth.
    nodes_at: Vec<Vec<usize>>,
    /// Indices into `circuit.bootstraps` per depth.
    bootstraps_at: Vec<Vec<usize>>,
    inputs: Vec<Ciphertext>,
    expand: Duration,
    pbs: u64,
}

impl EvaluationKey {
    /// Evaluates the plan's joint circuit on the parties' contributions (in
    /// party order). Runs on the calling thread and the rayon pool; the same
    /// as a batch of one.
    pub fn evaluate(
        &self,
        plan: &dyn Program,
        contributions: &[Contribution],
    ) -> Result<(EncryptedResult, EvalReport)> {
        self.evaluate_batch(&[(plan, contributions)])
            .pop()
            .unwrap_or_else(|| Err(Error::Internal("a batch of one returned nothing".into())))
    }

    /// Evaluates many decisions together, level by level: the bootstraps of
    /// one level of *every* decision go to the rayon pool at once, so the
    /// cores stay busy where one decision's level is narrower than the
    /// machine. Returns one result per item, in order; an item that fails
    /// (a contribution that does not match its plan or key) fails alone and
    /// the others are still evaluated. Items may use different plans. Each
    /// report's `circuit` is the batch's wall time (the decisions finish
    /// together) and its `pbs` the bootstraps run for that item.
    pub fn evaluate_batch(&self, items: &[BatchItem<'_>]) -> Vec<Result<(EncryptedResult, EvalReport)>> {
        let mut running: Vec<Result<Running<'_>>> =
            items.iter().map(|&(plan, contributions)| self.start(plan, contributions)).collect();
        let start = Instant::now();
        let levels = running.iter().flatten().map(|r| r.nodes_at.len()).max().unwrap_or(0);
        for depth in 0..levels {
            // Every decision's bootstraps of this level, in parallel.
            let tasks: Vec<(usize, usize)> = running
                .iter()
                .enumerate()
                .filter_map(|(k, r)| r.as_ref().ok().map(|r| (k, r)))
                .flat_map(|(k, r)| r.bootstraps_at.get(depth).into_iter().flatten().map(move |&g| (k, g)))
                .collect();
            let done: Vec<(usize, usize, Result<Vec<Ciphertext>>)> = tasks
                .par_iter()
                .map(|&(k, g)| {
                    let out = match &running[k] {
                        Ok(r) => self.bootstrap(r, &r.circuit.bootstraps[g]),
                        Err(_) => Err(Error::Internal("a failed item was scheduled".into())),
                    };
                    (k, g, out)
                })
                .collect();
            for (k, g, out) in done {
                match (out, &mut running[k]) {
                    (Ok(cts), Ok(r)) => {
                        r.pbs += 1;
                        for (&node, ct) in r.circuit.bootstraps[g].iter().zip(cts) {
                            r.vals[node as usize] = Some(ct);
                        }
                    }
                    (Err(e), slot @ Ok(_)) => *slot = Err(e),
                    (_, Err(_)) => {}
                }
            }
            // Then each decision's radix groups, one decision at a time
            // (tfhe's integer operations use the pool themselves, and tfhe's
            // process-wide counter can only attribute their bootstraps to an
            // item when nothing else bootstraps)...
            for slot in &mut running {
                if let Ok(r) = slot
                    && let Err(e) = self.radix_level(r, depth)
                {
                    *slot = Err(e);
                }
            }
            // ...and their free linear nodes, decisions in parallel: no
            // bootstrap, but a batch has thousands of them.
            running.par_iter_mut().for_each(|slot| {
                if let Ok(r) = slot
                    && let Err(e) = self.linear_level(r, depth)
                {
                    *slot = Err(e);
                }
            });
        }
        // Sealing is a key switch per output block: on the pool too, and
        // part of the evaluation's time (the lender waits for it).
        let sealed: Vec<Result<_>> = running
            .into_par_iter()
            .map(|r| {
                let r = r?;
                Ok((self.outputs(&r)?, r.expand, r.pbs))
            })
            .collect();
        let circuit = start.elapsed();
        sealed
            .into_iter()
            .map(|item| {
                let (outputs, expand, pbs) = item?;
                Ok((EncryptedResult { outputs, key_id: self.key_id.clone() }, EvalReport { expand, circuit, pbs }))
            })
            .collect()
    }

    /// Checks one item's contributions against its plan and key and expands
    /// them into its input blocks.
    fn start<'a>(&self, plan: &'a dyn Program, contributions: &[Contribution]) -> Result<Running<'a>> {
        let parties = plan.parties();
        if contributions.len() != parties.len() {
            return Err(Error::Contribution {
                party: "*".into(),
                message: format!("{} contributions for {} parties", contributions.len(), parties.len()),
            });
        }
        if let Some(c) = contributions.iter().find(|c| c.key_id != self.key_id) {
            return Err(Error::Fhe(format!(
                "a contribution is encrypted under key {}, this evaluation key is {}",
                c.key_id, self.key_id
            )));
        }
        let circuit = plan.circuit();
        let start = Instant::now();
        let pbs_before = tfhe::shortint::server_key::get_pbs_count();
        let mut inputs: Vec<Ciphertext> = Vec::with_capacity(circuit.input_count());
        for (p, c) in contributions.iter().enumerate() {
            if c.len() != parties[p].blocks() {
                return Err(Error::Contribution {
                    party: parties[p].name.clone(),
                    message: format!("{} blocks, the plan expects {}", c.len(), parties[p].blocks()),
                });
            }
            let blocks = self
                .expand(c)
                .map_err(|e| Error::Contribution { party: parties[p].name.clone(), message: e.to_string() })?;
            inputs.extend(blocks);
        }
        // Casting a proven list bootstraps each block; tfhe counts those.
        // Plain lists expand without any, and reading the process-wide
        // counter for them would charge this item for other threads' work.
        let pbs = if contributions.iter().any(Contribution::is_proven) {
            tfhe::shortint::server_key::get_pbs_count().saturating_sub(pbs_before)
        } else {
            0
        };
        let expand = start.elapsed();
        let levels = circuit.nodes.iter().map(|n| n.depth as usize + 1).max().unwrap_or(0);
        let mut nodes_at = vec![Vec::new(); levels];
        for (i, n) in circuit.nodes.iter().enumerate() {
            if !matches!(n.op, Op::Lut { .. }) {
                nodes_at[n.depth as usize].push(i);
            }
        }
        let mut bootstraps_at = vec![Vec::new(); levels];
        for (g, group) in circuit.bootstraps.iter().enumerate() {
            bootstraps_at[circuit.nodes[group[0] as usize].depth as usize].push(g);
        }
        Ok(Running { circuit, vals: vec![None; circuit.nodes.len()], nodes_at, bootstraps_at, inputs, expand, pbs })
    }

    /// One programmable bootstrap: the lookups of `group`, which all read one
    /// block, in one blind rotation.
    fn bootstrap(&self, r: &Running<'_>, group: &[u32]) -> Result<Vec<Ciphertext>> {
        let sks = self.server.as_ref();
        let tables: Vec<&[u8; 16]> = group
            .iter()
            .map(|&n| match &r.circuit.nodes[n as usize].op {
                Op::Lut { table, .. } => Ok(table),
                _ => Err(Error::Internal("a bootstrap group holds a node that is not a lookup".into())),
            })
            .collect::<Result<_>>()?;
        let Op::Lut { input, .. } = r.circuit.nodes[group[0] as usize].op else {
            return Err(Error::Internal("empty bootstrap group".into()));
        };
        let ct = r.vals[input as usize].as_ref().ok_or_else(|| Error::Internal("lookup input not ready".into()))?;
        let read = |table: &[u8; 16], x: u64| u64::from(table[(x as usize).min(usize::from(BLOCK_MAX))]);
        if let [table] = tables[..] {
            let lut = sks.generate_lookup_table(|x| read(table, x));
            return Ok(vec![sks.apply_lookup_table(ct, &lut)]);
        }
        let functions: Vec<Box<dyn Fn(u64) -> u64 + '_>> =
            tables.iter().map(|&t| Box::new(move |x| read(t, x)) as Box<dyn Fn(u64) -> u64>).collect();
        let functions: Vec<&dyn Fn(u64) -> u64> = functions.iter().map(|f| f.as_ref()).collect();
        let lut = sks.generate_many_lookup_table(&functions);
        // The builder grouped these lookups because the block's declared
        // range fits each sub-table; a block outside it would read the next
        // function's table, so check rather than trust the grouping.
        if ct.degree.get() > lut.input_max_degree.get() {
            return Err(Error::Internal(format!(
                "a block of degree {} feeds {} lookups in one bootstrap (at most {})",
                ct.degree.get(),
                group.len(),
                lut.input_max_degree.get()
            )));
        }
        Ok(sks.apply_many_lookup_table(ct, &lut))
    }

    /// The radix groups of one level, after its lookups.
    fn radix_level(&self, r: &mut Running<'_>, depth: usize) -> Result<()> {
        // A batch runs as many levels as its deepest item; shallower ones are
        // done earlier.
        let Some(level) = r.nodes_at.get(depth).cloned() else {
            return Ok(());
        };
        for &i in &level {
            if let Op::Radix { group, index: 0 } = r.circuit.nodes[i].op {
                let before = tfhe::shortint::server_key::get_pbs_count();
                let outs = self.radix(r.circuit, group, &r.vals)?;
                r.pbs += tfhe::shortint::server_key::get_pbs_count().saturating_sub(before);
                for (k, ct) in outs.into_iter().enumerate() {
                    r.vals[i + k] = Some(ct);
                }
            }
        }
        Ok(())
    }

    /// The inputs and linear nodes of one level, after its lookups and radix
    /// groups.
    fn linear_level(&self, r: &mut Running<'_>, depth: usize) -> Result<()> {
        let Some(level) = r.nodes_at.get(depth).cloned() else {
            return Ok(());
        };
        let sks = self.server.as_ref();
        let delta = (1u64 << 63) / (sks.message_modulus.0 * sks.carry_modulus.0);
        let nodes = &r.circuit.nodes;
        // Free linear combinations, in topological order.
        for &i in &level {
            match &nodes[i].op {
                Op::Input(n) => {
                    let ct = r.inputs.get(*n).ok_or_else(|| Error::Internal("input block missing".into()))?;
                    r.vals[i] = Some(ct.clone());
                }
                Op::Linear { terms, constant } => {
                    let mut acc: Option<Ciphertext> = None;
                    for &(t, c) in terms {
                        let mut ct = r.vals[t as usize]
                            .clone()
                            .ok_or_else(|| Error::Internal("linear input not ready".into()))?;
                        if c != 1 {
                            lwe_ciphertext_cleartext_mul_assign(&mut ct.ct, Cleartext(i64::from(c) as u64));
                        }
                        match acc.as_mut() {
                            None => acc = Some(ct),
                            Some(a) => lwe_ciphertext_add_assign(&mut a.ct, &ct.ct),
                        }
                    }
                    let mut acc = acc.ok_or_else(|| Error::Internal("empty linear node".into()))?;
                    if *constant != 0 {
                        lwe_ciphertext_plaintext_add_assign(
                            &mut acc.ct,
                            Plaintext((i64::from(*constant) as u64).wrapping_mul(delta)),
                        );
                    }
                    acc.degree = Degree::new(u64::from(nodes[i].max));
                    r.vals[i] = Some(acc);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The declared outputs of a finished item, sealed for the lender: every
    /// computed block's key switch on the pool at once.
    fn outputs(&self, r: &Running<'_>) -> Result<Vec<(String, Vec<Vec<Sealed>>)>> {
        let wires: Vec<u32> = r
            .circuit
            .outputs
            .iter()
            .flat_map(|(_, blocks)| blocks.iter().flatten())
            .filter_map(|v| if let Val::Wire(w) = v { Some(*w) } else { None })
            .collect();
        let mut sealed = wires
            .par_iter()
            .map(|&w| {
                let ct = r.vals[w as usize].as_ref().ok_or_else(|| Error::Internal("output not computed".into()))?;
                self.seal(ct)
            })
            .collect::<Result<Vec<Sealed>>>()?
            .into_iter();
        let mut outputs = Vec::new();
        for (name, blocks) in &r.circuit.outputs {
            let mut enc = Vec::with_capacity(blocks.len());
            for parts in blocks {
                let mut out = Vec::with_capacity(parts.len());
                for &part in parts {
                    out.push(match part {
                        Val::Const(c) => Sealed::Const(c),
                        Val::Wire(_) => {
                            sealed.next().ok_or_else(|| Error::Internal("fewer sealed blocks than outputs".into()))?
                        }
                    });
                }
                enc.push(out);
            }
            outputs.push((name.clone(), enc));
        }
        Ok(outputs)
    }

    /// An output block made small for the wire: key switched to the small
    /// LWE key (as before any bootstrap) and its coefficients rounded to
    /// [`SEALED_LOG_MODULUS`] bits, both with tfhe's own operations.
    fn seal(&self, ct: &Ciphertext) -> Result<Sealed> {
        let AtomicPatternServerKey::Standard(ap) = &self.server.as_ref().atomic_pattern else {
            return Err(Error::Fhe("results are sealed for the standard atomic pattern only".into()));
        };
        if ap.pbs_order != PBSOrder::KeyswitchBootstrap {
            return Err(Error::Fhe("results are sealed for key-switch-then-bootstrap keys only".into()));
        }
        let ksk = &ap.key_switching_key;
        let mut small = LweCiphertext::new(0u64, ksk.output_lwe_size(), ksk.ciphertext_modulus());
        keyswitch_lwe_ciphertext(ksk, &ct.ct, &mut small);
        let switched =
            lwe_ciphertext_modulus_switch::<u64, u64, _>(small.as_view(), CiphertextModulusLog(SEALED_LOG_MODULUS));
        // Each switched coefficient is below 2^SEALED_LOG_MODULUS = 2^16.
        Ok(Sealed::Lwe(switched.mask().chain(std::iter::once(switched.body())).map(|c| c as u16).collect()))
    }

    /// Median wall time of one PBS on this machine: `n` lookups, one at a
    /// time, on the first block of `contribution`. Calibrates circuit costs.
    pub fn pbs_probe(&self, contribution: &Contribution, n: usize) -> Result<Duration> {
        let sks = self.server.as_ref();
        let blocks = self.expand(contribution)?;
        let ct = blocks.first().ok_or_else(|| Error::Fhe("empty contribution".into()))?;
        let lut = sks.generate_lookup_table(|x| (x + 1) % 4);
        let mut times: Vec<Duration> = (0..n.max(1))
            .map(|_| {
                let start = Instant::now();
                let _ = std::hint::black_box(sks.apply_lookup_table(ct, &lut));
                start.elapsed()
            })
            .collect();
        times.sort();
        Ok(times[times.len() / 2])
    }

    /// Lookups per second with `n` independent lookups (on the first block
    /// of `contribution`) spread over the rayon pool: what the cores allow
    /// when nothing else limits them, under the machine's load of the
    /// moment. A batch's rate is judged against it.
    pub fn pbs_throughput(&self, contribution: &Contribution, n: usize) -> Result<f64> {
        let sks = self.server.as_ref();
        let blocks = self.expand(contribution)?;
        let ct = blocks.first().ok_or_else(|| Error::Fhe("empty contribution".into()))?;
        let lut = sks.generate_lookup_table(|x| (x + 1) % 4);
        let start = Instant::now();
        (0..n.max(1)).into_par_iter().for_each(|_| {
            let _ = std::hint::black_box(sks.apply_lookup_table(ct, &lut));
        });
        Ok(n.max(1) as f64 / start.elapsed().as_secs_f64())
    }

    /// A contribution's blocks under the evaluation key. A proven list
    /// (verified when it was read) is cast: a key switch and one bootstrap
    /// per block, whose lookup clamps each block to a digit, so a value the
    /// proof admits but the circuits do not (4 to 15) cannot reach them.
    pub(crate) fn expand(&self, contribution: &Contribution) -> Result<Vec<Ciphertext>> {
        match &contribution.blocks {
            Blocks::Plain(list) => list.expand(ShortintCompactCiphertextListCastingMode::NoCasting),
            Blocks::Proven(list) => {
                let casting = KeySwitchingKeyView::from_raw_parts(self.casting.as_view(), self.server.as_ref(), None);
                let clamp = |x: u64| x.min(DIGIT_BASE - 1);
                let clamp: &(dyn Fn(u64) -> u64 + Sync) = &clamp;
                let functions = vec![Some(vec![clamp]); list.ciphertext_count()];
                list.expand_without_verification(ShortintCompactCiphertextListCastingMode::CastIfNecessary {
                    casting_key: casting,
                    functions: Some(&functions),
                })
            }
        }
        .map_err(|e| Error::Fhe(e.to_string()))
    }

    fn radix(
        &self,
        circuit: &crate::circuit::Circuit,
        group: usize,
        vals: &[Option<Ciphertext>],
    ) -> Result<Vec<Ciphertext>> {
        let g = &circuit.groups[group];
        let sks = &self.server;
        let mut blocks = Vec::new();
        for &d in &g.digits {
            blocks.push(match d {
                Val::Const(c) => sks.as_ref().create_trivial(u64::from(c)),
                Val::Wire(w) => {
                    vals[w as usize].clone().ok_or_else(|| Error::Internal("radix input not ready".into()))?
                }
            });
        }
        blocks.resize_with(g.work_blocks(), || sks.as_ref().create_trivial(0));
        let x = RadixCiphertext::from(blocks);
        let x = sks.scalar_min_parallelized(&x, g.clamp_max);
        let x = sks.scalar_add_parallelized(&x, g.offset);
        let x = sks.scalar_mul_parallelized(&x, g.mul);
        let x = sks.scalar_div_parallelized(&x, g.div);
        let x = sks.scalar_min_parallelized(&x, g.cap);
        Ok(x.blocks().iter().take(g.out_digits).cloned().collect())
    }
}

impl LenderKey {
    /// Decrypts an evaluation's outputs into the bundle the policy reveals.
    pub fn decrypt(&self, plan: &Plan, result: &EncryptedResult) -> Result<Bundle> {
        plan.decode(&self.open(result)?)
    }

    /// Decrypts an alert plan's outputs: whether each alert is raised, in
    /// the plan's alert order.
    pub fn decrypt_alerts(&self, plan: &crate::alerts::AlertPlan, result: &EncryptedResult) -> Result<Vec<bool>> {
        plan.decode(&self.open(result)?)
    }

    /// Every output block's parts, decrypted: per output, per block, the
    /// parts' values.
    fn open(&self, result: &EncryptedResult) -> Result<Vec<(String, Vec<Vec<u64>>)>> {
        if result.key_id != self.key_id {
            return Err(Error::Fhe(format!(
                "the result was computed for key {}, this lender key is {}",
                result.key_id, self.key_id
            )));
        }
        let client = self.client.as_ref().ok_or_else(|| Error::Internal("lender key already dropped".into()))?;
        let ck: &ShortintClientKey = client.as_ref();
        let AtomicPatternClientKey::Standard(key) = &ck.atomic_pattern else {
            return Err(Error::Fhe("results are sealed for the standard atomic pattern only".into()));
        };
        let small = key.small_lwe_secret_key();
        let delta = (1u64 << 63) / (ck.parameters().message_modulus().0 * ck.parameters().carry_modulus().0);
        let open = |part: &Sealed| -> Result<u64> {
            match part {
                Sealed::Const(c) => Ok(u64::from(*c)),
                Sealed::Lwe(coefficients) => {
                    if coefficients.len() != small.lwe_dimension().to_lwe_size().0 {
                        return Err(Error::Result(format!(
                            "an output block has {} coefficients, the key needs {}",
                            coefficients.len(),
                            small.lwe_dimension().to_lwe_size().0
                        )));
                    }
                    // Back on the native torus: exact, the low bits zero.
                    let lifted: Vec<u64> =
                        coefficients.iter().map(|&c| u64::from(c) << (64 - SEALED_LOG_MODULUS)).collect();
                    let ct = LweCiphertext::from_container(lifted, CoreCiphertextModulus::new_native());
                    let phase = decrypt_lwe_ciphertext(&small, &ct).0;
                    // Round to the nearest multiple of delta, as tfhe decodes
                    // (the padding bit included).
                    Ok((phase.wrapping_add(delta / 2) / delta) % 32)
                }
            }
        };
        result
            .outputs
            .iter()
            .map(|(n, blocks)| {
                let blocks = blocks.iter().map(|parts| parts.iter().map(open).collect::<Result<Vec<u64>>>());
                Ok((n.clone(), blocks.collect::<Result<Vec<_>>>()?))
            })
            .collect()
    }
}

/// One decision run end to end in one process, with per-phase timings.
#[derive(Clone, Debug)]
pub struct LocalRun {
    /// What the lender decrypted.
    pub bundle: Bundle,
    /// All parties' clear computation and encryption.
    pub encrypt: Duration,
    /// Serialized contribution bytes, all parties.
    pub wire_bytes: usize,
    /// Coordinator evaluation.
    pub eval: EvalReport,
    /// Lender decryption.
    pub decrypt: Duration,
}

/// Runs every role of one decision in this process: each party computes and
/// encrypts its contribution (through its serialized form, as on the wire),
/// the coordinator evaluates, the lender decrypts.
pub fn decide_locally(plan: &Plan, keys: &KeySet, record: &crate::reference::Record) -> Result<LocalRun> {
    let start = Instant::now();
    let mut wire = Vec::new();
    for p in 0..plan.parties().len() {
        let digits = plan.contribution(p, record)?;
        wire.push(Contribution::encrypt(plan, p, &digits, &keys.public)?.to_bytes()?);
    }
    let encrypt = start.elapsed();
    let wire_bytes = wire.iter().map(Vec::len).sum();
    let contributions = wire
        .iter()
        .enumerate()
        .map(|(p, bytes)| Contribution::from_bytes(bytes, plan, p, &keys.public))
        .collect::<Result<Vec<_>>>()?;
    let (result, eval) = keys.evaluation.evaluate(plan, &contributions)?;
    let start = Instant::now();
    let bundle = keys.lender.decrypt(plan, &result)?;
    Ok(LocalRun { bundle, encrypt, wire_bytes, eval, decrypt: start.elapsed() })
}

/// Many decisions run end to end in one process, their evaluation batched.
#[derive(Clone, Debug)]
pub struct BatchRun {
    /// What the lender decrypted, one per record, in order.
    pub bundles: Vec<Bundle>,
    /// All parties' clear computation and encryption, all records.
    pub encrypt: Duration,
    /// Coordinator evaluation of the whole batch
    /// ([`EvaluationKey::evaluate_batch`]).
    pub eval: Duration,
    /// Bootstraps the batch ran.
    pub pbs: u64,
    /// Lender decryption, all records.
    pub decrypt: Duration,
}

/// Like [`decide_locally`] for many records at once: every party's
/// contribution for every record is encrypted (and serialized and read
/// back, as on the wire), the decisions are evaluated as one batch and the
/// lender decrypts each. Fails on the first record that fails.
pub fn decide_batch_locally(plan: &Plan, keys: &KeySet, records: &[crate::reference::Record]) -> Result<BatchRun> {
    let start = Instant::now();
    let contributions = records
        .par_iter()
        .map(|record| {
            (0..plan.parties().len())
                .map(|p| {
                    let digits = plan.contribution(p, record)?;
                    let bytes = Contribution::encrypt(plan, p, &digits, &keys.public)?.to_bytes()?;
                    Contribution::from_bytes(&bytes, plan, p, &keys.public)
                })
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    let encrypt = start.elapsed();
    let items: Vec<BatchItem<'_>> = contributions.iter().map(|c| (plan as &dyn Program, c.as_slice())).collect();
    let start = Instant::now();
    let results = keys.evaluation.evaluate_batch(&items);
    let eval = start.elapsed();
    let start = Instant::now();
    let mut pbs = 0;
    let mut bundles = Vec::with_capacity(records.len());
    for result in results {
        let (result, report) = result?;
        pbs += report.pbs;
        bundles.push(keys.lender.decrypt(plan, &result)?);
    }
    Ok(BatchRun { bundles, encrypt, eval, pbs, decrypt: start.elapsed() })
}

impl fmt::Debug for EncryptedResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptedResult").field("key_id", &self.key_id).field("outputs", &self.output_names()).finish()
    }
}

impl EncryptedResult {
    /// Names of the outputs it carries (those the policy reveals).
    pub fn output_names(&self) -> Vec<&str> {
        self.outputs.iter().map(|(n, _)| n.as_str()).collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::OnceLock;

    use proptest::prelude::*;

    use super::*;
    use crate::model::{Model, Output};
    use crate::plan::PlanKind;
    use crate::plan::tests::arb_record;
    use crate::reference::{self, Record};

    /// One key set for the whole test binary: key generation takes seconds.
    pub(crate) fn keys() -> &'static KeySet {
        static KEYS: OnceLock<KeySet> = OnceLock::new();
        KEYS.get_or_init(|| KeySet::generate().expect("key generation"))
    }

    fn plans() -> &'static [(Model, Plan, Plan)] {
        static PLANS: OnceLock<Vec<(Model, Plan, Plan)>> = OnceLock::new();
        PLANS.get_or_init(|| {
            let default = Model::cross_border_seller();
            let all = default.with_reveal(Output::ALL).expect("every output");
            [default, all]
                .into_iter()
                .map(|m| {
                    let pd = Plan::new(&m, PlanKind::Pushdown).expect("pushdown plan");
                    let cs = Plan::new(&m, PlanKind::CoordinatorSide).expect("coordinator-side plan");
                    (m, pd, cs)
                })
                .collect()
        })
    }

    /// Encrypts every party's contribution, sends it through bytes, evaluates
    /// and decrypts.
    fn run_encrypted(plan: &Plan, blocks_per_party: &[Vec<u8>]) -> Result<Bundle> {
        let k = keys();
        let mut contributions = Vec::new();
        for (p, digits) in blocks_per_party.iter().enumerate() {
            let c = Contribution::encrypt(plan, p, digits, &k.public)?;
            contributions.push(Contribution::from_bytes(&c.to_bytes()?, plan, p, &k.public)?);
        }
        let (result, report) = k.evaluation.evaluate(plan, &contributions)?;
        assert!(report.pbs > 0);
        k.lender.decrypt(plan, &result)
    }

    fn contributions(plan: &Plan, record: &Record) -> Vec<Vec<u8>> {
        (0..plan.parties().len()).map(|p| plan.contribution(p, record).expect("contribution")).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 6, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn pushdown_encrypted_equals_reference(record in arb_record(&Model::cross_border_seller()), all in any::<bool>()) {
            let (m, plan, _) = &plans()[usize::from(all)];
            let got = run_encrypted(plan, &contributions(plan, &record)).unwrap();
            prop_assert_eq!(got, reference::evaluate(m, &record).restricted(m));
        }

        /// Dishonest parties may send any digits: the encrypted circuit still
        /// equals its plaintext run bit for bit (clamps included).
        #[test]
        fn arbitrary_contributions_encrypted_equal_plain(seed in proptest::collection::vec(0u8..4, 64)) {
            let (_, plan, _) = &plans()[1];
            let mut it = seed.iter().cycle();
            let blocks: Vec<Vec<u8>> = plan.parties().iter().map(|p| (0..p.blocks()).map(|_| *it.next().unwrap_or(&0)).collect()).collect();
            let flat: Vec<u8> = blocks.concat();
            prop_assert_eq!(run_encrypted(plan, &blocks).unwrap(), plan.eval_contributions(&flat).unwrap());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn coordinator_side_encrypted_equals_reference(record in arb_record(&Model::cross_border_seller())) {
            let (m, _, plan) = &plans()[1];
            let got = run_encrypted(plan, &contributions(plan, &record)).unwrap();
            prop_assert_eq!(got, reference::evaluate(m, &record).restricted(m));
        }
    }

    /// The second model (categorical features, per-band line clamps, every
    /// output) through both plans under TFHE.
    #[test]
    fn alt_model_encrypted_equals_reference() {
        let m = crate::plan::tests::alt_model();
        let inputs = [
            serde_json::json!({"region": "mena", "sales": 380, "debt": 40}),
            serde_json::json!({"region": null, "sales": 9999, "debt": 700}),
        ];
        for (kind, v) in [(PlanKind::Pushdown, &inputs[0]), (PlanKind::CoordinatorSide, &inputs[1])] {
            let plan = Plan::new(&m, kind).unwrap();
            let record = Record::from_json(&m, v).unwrap();
            let got = run_encrypted(&plan, &contributions(&plan, &record)).unwrap();
            assert_eq!(got, reference::evaluate(&m, &record).restricted(&m), "{kind:?}");
        }
    }

    /// A batch mixes plans and models, keeps each result its own, and lets
    /// a bad item fail alone.
    #[test]
    fn batches_equal_single_evaluations_and_fail_per_item() {
        let k = keys();
        let alt = crate::plan::tests::alt_model();
        let alt_plan = Plan::new(&alt, PlanKind::CoordinatorSide).unwrap();
        let alt_record =
            Record::from_json(&alt, &serde_json::json!({"region": "mena", "sales": 380, "debt": 40})).unwrap();
        let (m, plan, _) = &plans()[1];
        let records: Vec<Record> = crate::plan::tests::sample_records(m, 3);
        let encrypt = |plan: &Plan, record: &Record| -> Vec<Contribution> {
            contributions(plan, record)
                .iter()
                .enumerate()
                .map(|(p, digits)| Contribution::encrypt(plan, p, digits, &k.public).unwrap())
                .collect()
        };
        let mut inputs: Vec<(&Plan, Vec<Contribution>)> = records.iter().map(|r| (plan, encrypt(plan, r))).collect();
        inputs.push((&alt_plan, encrypt(&alt_plan, &alt_record)));
        // A decision missing a party's contribution.
        let mut short = encrypt(plan, &records[0]);
        short.pop();
        inputs.insert(1, (plan, short));
        let items: Vec<BatchItem<'_>> = inputs.iter().map(|(p, c)| (*p as &dyn Program, c.as_slice())).collect();
        let results = k.evaluation.evaluate_batch(&items);
        assert_eq!(results.len(), items.len());
        let mut results = results.into_iter();
        let mut next = || results.next().expect("one result per item");
        let first = next().unwrap();
        assert!(matches!(next(), Err(Error::Contribution { .. })), "the short item fails alone");
        let mut got = vec![first];
        got.extend((1..records.len()).map(|_| next().unwrap()));
        for (record, (result, report)) in records.iter().zip(&got) {
            assert_eq!(report.pbs as usize, plan.stats().lookups);
            assert_eq!(k.lender.decrypt(plan, result).unwrap(), reference::evaluate(m, record).restricted(m));
        }
        let (result, _) = next().unwrap();
        assert_eq!(
            k.lender.decrypt(&alt_plan, &result).unwrap(),
            reference::evaluate(&alt, &alt_record).restricted(&alt)
        );
        assert!(k.evaluation.evaluate_batch(&[]).is_empty());
    }

    #[test]
    fn malformed_contributions_are_rejected() {
        let (_, plan, _) = &plans()[0];
        let k = keys();
        let n = plan.parties()[0].blocks();
        let good = Contribution::encrypt(plan, 0, &vec![1; n], &k.public).unwrap().to_bytes().unwrap();

        // Truncated, garbage and oversized bytes.
        assert!(matches!(
            Contribution::from_bytes(&good[..good.len() / 2], plan, 0, &k.public),
            Err(Error::Contribution { .. })
        ));
        assert!(matches!(
            Contribution::from_bytes(b"not a contribution", plan, 0, &k.public),
            Err(Error::Contribution { .. })
        ));
        let huge = vec![0u8; CONTRIBUTION_SIZE_LIMIT as usize + 1];
        let err = Contribution::from_bytes(&huge, plan, 0, &k.public).err().unwrap();
        assert!(err.to_string().contains("limit"), "{err}");
        // A well-formed list of the wrong length for this party.
        assert!(matches!(Contribution::from_bytes(&good, plan, 1, &k.public), Err(Error::Contribution { .. })));
        // Wrong width or digit values at the party.
        assert!(Contribution::encrypt(plan, 0, &vec![1; n + 1], &k.public).is_err());
        assert!(Contribution::encrypt(plan, 0, &vec![4; n], &k.public).is_err());
        assert!(matches!(Contribution::encrypt(plan, 9, &[], &k.public), Err(Error::UnknownParty(_))));
        // A missing party.
        let one = Contribution::from_bytes(&good, plan, 0, &k.public).unwrap();
        let err = k.evaluation.evaluate(plan, &[one]).err().unwrap();
        assert!(err.to_string().contains("1 contributions for 3 parties"), "{err}");
    }

    /// A party whose values the policy never reads sends an empty list.
    #[test]
    fn a_party_with_nothing_to_send() {
        let m = Model::from_toml(&crate::model::CROSS_BORDER_SELLER.replace(
            "parties = [\"platform\", \"logistics\", \"bank\"]",
            "parties = [\"platform\", \"logistics\", \"bank\", \"observer\"]",
        ))
        .unwrap();
        let plan = Plan::new(&m, PlanKind::Pushdown).unwrap();
        assert_eq!(plan.parties()[3].blocks(), 0);
        let record =
            Record::from_json(&m, &serde_json::from_str(include_str!("../../examples/seller.json")).unwrap()).unwrap();
        let got = run_encrypted(&plan, &contributions(&plan, &record)).unwrap();
        assert_eq!(got, reference::evaluate(&m, &record).restricted(&m));
    }

    #[test]
    fn wrong_key_is_refused() {
        let (_, plan, _) = &plans()[0];
        let k = keys();
        let other = KeySet::generate().unwrap();
        assert_ne!(other.id(), k.id());
        let blocks = contributions(
            plan,
            &Record::from_json(
                plan.model(),
                &serde_json::json!({
                    "gmv_12m_k": 900, "refund_rate_bp": 200, "months_active": 30, "on_time_rate_bp": 9600,
                    "inventory_turnover_days": 40, "collection_cycle_days": 10, "late_repayments_12m": 0,
                    "outstanding_debt_k": 10, "major_violations": 0
                }),
            )
            .unwrap(),
        );
        let cs: Vec<Contribution> =
            blocks.iter().enumerate().map(|(p, d)| Contribution::encrypt(plan, p, d, &k.public).unwrap()).collect();
        let mixed: Vec<Contribution> = blocks
            .iter()
            .enumerate()
            .map(|(p, d)| Contribution::encrypt(plan, p, d, if p == 1 { &other.public } else { &k.public }).unwrap())
            .collect();
        assert!(k.evaluation.evaluate(plan, &mixed).err().unwrap().to_string().contains("encrypted under key"));
        let (result, _) = k.evaluation.evaluate(plan, &cs).unwrap();
        assert!(other.lender.decrypt(plan, &result).err().unwrap().to_string().contains("computed for key"));
        assert!(format!("{:?}", k.lender).contains("<secret>"));
    }
}
