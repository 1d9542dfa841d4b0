//! The workloads of jointscore's benchmarks: what each plane is fed, built
//! once here and used both by the criterion benchmarks of this package
//! (`cargo bench -p jointscore-benches`) and by the researcher's front door
//! (`jointscore bench psi|secagg|binning|decision`), so both measure the
//! same thing.
//!
//! Each module builds one plane's inputs at a requested size, runs the
//! plane's protocol in process where a benchmark needs more than one call
//! of the crate, and says whether the result is right. [`Scale`] picks the
//! sizes: the smallest honest ones when criterion runs a benchmark once
//! under `cargo test`, reduced ones for `cargo bench`, and the figures the
//! README reports with `JOINTSCORE_BENCH_FULL=1`.
//!
//! The README's library snippet is compiled and type-checked as this
//! crate's doctest ([`readme`]).

use std::time::{Duration, Instant};

/// Why a workload could not be built or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A size or parameter the plane does not accept.
    #[error("{0}")]
    Invalid(String),
    /// The PSI protocol refused.
    #[error(transparent)]
    Psi(#[from] jointscore_psi::Error),
    /// Secure aggregation refused.
    #[error(transparent)]
    Secagg(#[from] jointscore_secagg::Error),
    /// Vertical binning refused.
    #[error(transparent)]
    Binning(#[from] jointscore_binning::Error),
    /// A model, plan or TFHE operation failed.
    #[error(transparent)]
    Circuits(#[from] jointscore_circuits::Error),
    /// Identity keys or the consortium file.
    #[error(transparent)]
    Identity(#[from] jointscore_identity::IdentityError),
    /// The audit ledger did not verify.
    #[error(transparent)]
    Audit(#[from] jointscore_audit::AuditError),
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The environment variable that selects the full sizes.
pub const FULL_ENV: &str = "JOINTSCORE_BENCH_FULL";

/// Which sizes a benchmark runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// Criterion's test mode (`cargo test`, or `cargo bench -- --test`):
    /// every benchmark runs once, so the smallest honest inputs.
    Test,
    /// `cargo bench`: sizes that finish in minutes on two cores.
    Reduced,
    /// `cargo bench` with `JOINTSCORE_BENCH_FULL=1`: the sizes the README
    /// reports (long).
    Full,
}

impl Scale {
    /// The scale this benchmark process runs at, read from its arguments as
    /// criterion reads them (no `--bench`, or `--test`, is test mode) and
    /// from [`FULL_ENV`].
    pub fn from_env() -> Scale {
        let args: Vec<String> = std::env::args().collect();
        let flag = |f: &str| args.iter().any(|a| a == f);
        if !flag("--bench") || flag("--test") {
            Scale::Test
        } else if std::env::var(FULL_ENV).is_ok_and(|v| !v.is_empty() && v != "0") {
            Scale::Full
        } else {
            Scale::Reduced
        }
    }

    /// One of three values, by scale.
    pub fn pick<T>(self, test: T, reduced: T, full: T) -> T {
        match self {
            Scale::Test => test,
            Scale::Reduced => reduced,
            Scale::Full => full,
        }
    }
}

/// Private set intersection (`jointscore-psi`): two sets of invoice ids, half
/// shared, and one whole session in process.
pub mod psi {
    use super::*;
    use jointscore_psi::{Outcome, POINT_BYTES, Requester, Responder, Variant};

    /// One side's items.
    pub type Items = Vec<Vec<u8>>;

    /// The requester's `n` items and the responder's `n`, of which the last
    /// `n - n/2` of the requester's are shared.
    pub fn sets(n: usize) -> Result<(Items, Items)> {
        if n == 0 || n > jointscore_psi::MAX_ITEMS {
            return Err(Error::Invalid(format!("the set size must be in 1..={}", jointscore_psi::MAX_ITEMS)));
        }
        let item = |i: usize| format!("invoice:{i:012}").into_bytes();
        Ok(((0..n).map(item).collect(), (n / 2..n / 2 + n).map(item).collect()))
    }

    /// One session's result and where its time went.
    #[derive(Debug)]
    pub struct Run {
        /// What the requester learnt.
        pub outcome: Outcome,
        /// Requester: hash and blind its items.
        pub request: Duration,
        /// Responder: re-blind them, hash and blind its own.
        pub response: Duration,
        /// The whole session, the requester's finish included.
        pub total: Duration,
        /// Points sent both ways.
        pub bytes: usize,
    }

    /// Runs one session of `variant` between `mine` (requester) and
    /// `theirs` (responder).
    pub fn run(mine: &[Vec<u8>], theirs: &[Vec<u8>], variant: Variant) -> Result<Run> {
        let mut rng = rand_core::OsRng;
        let start = Instant::now();
        let (requester, request) = Requester::new(mine, variant, &mut rng)?;
        let t_request = start.elapsed();
        let (response, _) = Responder::respond(theirs, &request, variant, &mut rng)?;
        let t_response = start.elapsed() - t_request;
        let (outcome, _) = requester.finish(&response)?;
        let bytes = (request.points.len() + response.doubly.len() + response.theirs.len()) * POINT_BYTES;
        Ok(Run { outcome, request: t_request, response: t_response, total: start.elapsed(), bytes })
    }

    /// Whether `outcome` is right for [`sets`]`(n)`.
    pub fn correct(outcome: &Outcome, n: usize) -> bool {
        match outcome {
            Outcome::Intersection(positions) => positions.iter().copied().eq(n / 2..n),
            Outcome::Cardinality(count) => *count == n - n / 2,
        }
    }
}

/// Secure aggregation (`jointscore-secagg`): one whole round in process,
/// with a share of parties dropping at the costliest moment.
pub mod secagg {
    use super::*;
    use jointscore_secagg::{Config, Dropouts, Outcome, SessionId, simulate};

    /// One round's configuration and every party's vector.
    #[derive(Clone, Debug)]
    pub struct Round {
        /// Parties, threshold, vector length, graph.
        pub config: Config,
        /// Party `p`'s vector is `inputs[p - 1]`.
        pub inputs: Vec<Vec<u32>>,
        /// Who drops, and when.
        pub dropouts: Dropouts,
        /// Shares needed to reconstruct a secret.
        pub threshold: u32,
        /// How many parties drop.
        pub dropped: u32,
    }

    /// A round of `parties` × `dim` entries in which a `dropout` share of
    /// parties drop after sharing their keys and before sending their masked
    /// vector (what costs the server most). `neighbours`: SecAgg+ on a
    /// random Harary graph with that many neighbours each (threshold k/2 +
    /// 1); `None`, the complete graph (threshold ⌊N/2⌋ + 1).
    pub fn round(parties: u32, dim: usize, dropout: f64, neighbours: Option<u32>) -> Result<Round> {
        if !(0.0..1.0).contains(&dropout) {
            return Err(Error::Invalid("the dropout share must be in [0, 1)".into()));
        }
        let threshold = neighbours.map_or(parties / 2 + 1, |k| k / 2 + 1);
        let mut session = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut session);
        let config = match neighbours {
            None => Config::new(parties, threshold, dim, SessionId(session)),
            Some(k) => Config::neighbourhood(parties, k, threshold, dim, SessionId(session)),
        }?;
        let dropped = (dropout * f64::from(parties)).floor() as u32;
        if parties - dropped < threshold {
            return Err(Error::Invalid(format!(
                "{dropped} of {parties} parties dropping leaves fewer than the threshold {threshold}"
            )));
        }
        // Counters below 2^20 so that sums over up to 2^12 parties do not wrap.
        let inputs = (0..parties)
            .map(|p| (0..dim).map(|i| ((p as usize * 7919 + i * 104_729) % (1 << 20)) as u32).collect())
            .collect();
        // Which parties drop: spread evenly over the ids.
        let dropouts = Dropouts {
            before_masked: (0..dropped).map(|k| 1 + k * parties / dropped.max(1)).collect(),
            ..Dropouts::default()
        };
        Ok(Round { config, inputs, dropouts, threshold, dropped })
    }

    impl Round {
        /// Runs the round: every client's and the server's state machine.
        pub fn run(&self) -> Result<Outcome> {
            Ok(simulate(&self.config, &self.inputs, &self.dropouts, &mut rand_core::OsRng)?)
        }

        /// Whether the round's sum is the plain sum of its contributors'
        /// vectors.
        pub fn correct(&self, outcome: &Outcome) -> bool {
            let mut expected = vec![0u32; self.config.dim];
            for &p in &outcome.contributors {
                for (s, x) in expected.iter_mut().zip(&self.inputs[p as usize - 1]) {
                    *s = s.wrapping_add(*x);
                }
            }
            expected == outcome.sum
        }
    }
}

/// Vertical binning (`jointscore-binning`): the lender's labels encrypted
/// under exponential ElGamal, one party's features binned and summed under
/// encryption, through the wire encodings.
pub mod binning {
    use super::*;
    use jointscore_binning::{
        BinAssignment, BinCounts, Ciphertext, FeatureSums, LabelHolder, NumericBins, party_sums, plain_counts,
    };
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    /// Synthetic data: the lender's labels and one party's feature columns.
    #[derive(Clone, Debug)]
    pub struct Data {
        /// Bad (`true`) or good, per row; about 30% bad.
        pub labels: Vec<bool>,
        /// Per feature, per row; about 3% missing.
        pub columns: Vec<Vec<Option<f64>>>,
    }

    /// `rows` × `features`, reproducible from `seed`; each feature leans on
    /// the label.
    pub fn data(rows: usize, features: usize, seed: u64) -> Result<Data> {
        if rows == 0 || features == 0 {
            return Err(Error::Invalid("rows and features must be at least 1".into()));
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let labels: Vec<bool> = (0..rows).map(|_| rng.random::<f64>() < 0.3).collect();
        let columns = (0..features)
            .map(|f| {
                labels
                    .iter()
                    .map(|&bad| {
                        (rng.random::<f64>() > 0.03)
                            .then(|| rng.random::<f64>() * 100.0 + if bad { 10.0 + f as f64 } else { 0.0 })
                    })
                    .collect()
            })
            .collect();
        Ok(Data { labels, columns })
    }

    /// One round's result and where its time went.
    #[derive(Debug)]
    pub struct Round {
        /// Per feature, the lender's decrypted counts per bin.
        pub counts: Vec<Vec<BinCounts>>,
        /// The party's bin of every row, per feature.
        pub assignments: Vec<BinAssignment>,
        /// Lender: encrypt and encode the labels.
        pub encrypt: Duration,
        /// Party: decode, bin, sum under encryption, encode.
        pub party: Duration,
        /// Lender: decode and decrypt the sums.
        pub decrypt: Duration,
        /// Bytes both ways.
        pub bytes: usize,
    }

    impl Data {
        /// One round with `bins` initial equal-frequency bins per feature.
        pub fn round(&self, bins: usize) -> Result<Round> {
            if bins == 0 {
                return Err(Error::Invalid("bins must be at least 1".into()));
            }
            let start = Instant::now();
            let (lender, public, cts) = LabelHolder::encrypt(&self.labels);
            let wire: Vec<[u8; 64]> = cts.iter().map(Ciphertext::to_bytes).collect();
            let encrypt = start.elapsed();

            let t = Instant::now();
            let received = wire.iter().map(Ciphertext::from_bytes).collect::<Result<Vec<_>, _>>()?;
            let assignments: Vec<_> = self.columns.iter().map(|c| NumericBins::fit(c, bins).assign(c)).collect();
            let sums = party_sums(&public, &received, &assignments)?;
            let sent: Vec<Vec<(u64, [u8; 64])>> =
                sums.iter().map(|f| f.bins.iter().map(|(n, c)| (*n, c.to_bytes())).collect()).collect();
            let party = t.elapsed();

            let t = Instant::now();
            let back = sent
                .iter()
                .map(|f| {
                    f.iter()
                        .map(|(n, b)| Ciphertext::from_bytes(b).map(|c| (*n, c)))
                        .collect::<Result<Vec<_>, _>>()
                        .map(|bins| FeatureSums { bins })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let counts = lender.decrypt(&back)?;
            let decrypt = t.elapsed();
            let bytes = wire.len() * 64 + sent.iter().map(|f| f.len() * (64 + 8)).sum::<usize>();
            Ok(Round { counts, assignments, encrypt, party, decrypt, bytes })
        }

        /// Whether a round's counts equal the plain counts.
        pub fn correct(&self, round: &Round) -> bool {
            round.counts.len() == round.assignments.len()
                && round.assignments.iter().zip(&round.counts).all(|(a, got)| &plain_counts(a, &self.labels) == got)
        }
    }
}

/// The audit ledger (`jointscore-audit`): what the coordinator appends for
/// decisions, sealed into a chain and verified as any member would.
pub mod ledger {
    use super::*;
    use jointscore_audit::{Attestation, Entry, EntryKind, Event, verify_chain};
    use jointscore_identity::{
        CONTRIBUTION_DOMAIN, Consortium, ContributionEnvelope, NodeKey, Role, ciphertext_sha256,
    };

    /// The parties of the benchmark consortium.
    pub const PARTIES: [&str; 3] = ["platform", "logistics", "bank"];

    /// Entries one decision appends: the request, one contribution per
    /// party (carrying its signed envelope) and the result.
    pub const ENTRIES_PER_DECISION: usize = 2 + PARTIES.len();

    /// A consortium of a coordinator, three parties and a lender, with
    /// every key.
    pub struct Ledger {
        coordinator: NodeKey,
        parties: Vec<NodeKey>,
        /// The consortium file every member verifies against.
        pub consortium: Consortium,
    }

    impl Ledger {
        /// Fresh keys and the consortium file listing them.
        pub fn new() -> Result<Ledger> {
            let coordinator = NodeKey::generate();
            let parties: Vec<NodeKey> = PARTIES.iter().map(|_| NodeKey::generate()).collect();
            let lender = NodeKey::generate();
            let mut text = String::from("name = \"bench\"\n");
            let members = std::iter::once(("coordinator", "coordinator", &coordinator))
                .chain(PARTIES.iter().zip(&parties).map(|(name, key)| (*name, "party", key)))
                .chain(std::iter::once(("lender", "lender", &lender)));
            for (name, role, key) in members {
                text.push_str(&format!(
                    "[[member]]\nname = \"{name}\"\nrole = \"{role}\"\npublic_key = \"{}\"\n",
                    key.public_hex()
                ));
            }
            let consortium = Consortium::from_toml(&text)?;
            Ok(Ledger { coordinator, parties, consortium })
        }

        /// The records `decisions` decisions make, in order: for each, the
        /// request, every party's signed contribution and the result.
        pub fn records(&self, decisions: usize) -> Vec<Event> {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
            let time_ms = u64::try_from(now).unwrap_or(u64::MAX);
            let model_id = "c51c325b5dc810010116c405b482f0fb05d996f0e45a5f947c13284716c75fe9".to_string();
            let key_id = "0bf57927f412123d".to_string();
            let mut out = Vec::with_capacity(decisions * ENTRIES_PER_DECISION);
            for d in 0..decisions {
                let job_id = format!("job-{d:08}");
                let subject = format!("seller-{d:08}");
                let base = Event {
                    time_ms,
                    lender: Some("lender".into()),
                    subject: Some(subject.clone()),
                    job_id: Some(job_id.clone()),
                    model_id: Some(model_id.clone()),
                    key_id: Some(key_id.clone()),
                    ..Event::default()
                };
                out.push(Event {
                    kind: EntryKind::DecisionRequest,
                    parties: PARTIES.iter().map(|p| p.to_string()).collect(),
                    ..base.clone()
                });
                for (name, key) in PARTIES.iter().zip(&self.parties) {
                    let digest = ciphertext_sha256(format!("{job_id}/{name}").as_bytes());
                    let envelope = ContributionEnvelope {
                        request_id: format!("r-{job_id}"),
                        lender: "lender".into(),
                        job_id: job_id.clone(),
                        subject: subject.clone(),
                        model_id: model_id.clone(),
                        key_id: key_id.clone(),
                        party: (*name).into(),
                        consent: String::new(),
                        ciphertext_sha256: digest.clone(),
                        time_ms,
                    };
                    let signature = envelope.sign(key);
                    out.push(Event {
                        kind: EntryKind::Contribution,
                        lender: Some("lender".into()),
                        request_id: Some(format!("r-{job_id}")),
                        parties: vec![(*name).into()],
                        digest: Some(digest),
                        attestations: vec![Attestation::new(
                            name,
                            Role::Party,
                            CONTRIBUTION_DOMAIN,
                            &envelope.to_bytes(),
                            &signature,
                        )],
                        ..base.clone()
                    });
                }
                out.push(Event {
                    kind: EntryKind::Result,
                    digest: Some(ciphertext_sha256(job_id.as_bytes())),
                    detail: "59 PBS".into(),
                    ..base
                });
            }
            out
        }

        /// Seals `records` into a chain, as the coordinator appends them.
        pub fn append(&self, records: &[Event]) -> Vec<Entry> {
            let mut entries: Vec<Entry> = Vec::with_capacity(records.len());
            for r in records {
                let entry = Entry::seal(r.clone(), entries.last(), &self.coordinator);
                entries.push(entry);
            }
            entries
        }

        /// Verifies a chain as any member would: hashes, links, the
        /// coordinator's signatures and every attestation.
        pub fn verify(&self, entries: &[Entry]) -> Result<()> {
            Ok(verify_chain(entries, &self.consortium)?)
        }
    }
}

/// The decision circuit (`jointscore-circuits`): sample subjects, and the
/// parties' encrypted contributions the coordinator evaluates.
pub mod decision {
    use super::*;
    use jointscore_circuits::fhe::{Contribution, PublicKey};
    use jointscore_circuits::{Model, Plan, Record};

    /// `n` sample subjects of `model` ([`jointscore_testkit::sample`]),
    /// reproducible from `seed`.
    pub fn subjects(model: &Model, n: usize, seed: u64) -> Result<Vec<Record>> {
        jointscore_testkit::sample::subjects(model, n, seed)
            .into_iter()
            .map(|(_, v)| Record::from_json(model, &v).map_err(Error::from))
            .collect()
    }

    /// Every party's contribution for `record`: its plan inputs computed
    /// in the clear and encrypted under the lender's public key.
    pub fn contributions(plan: &Plan, record: &Record, public: &PublicKey) -> Result<Vec<Contribution>> {
        (0..plan.parties().len())
            .map(|p| Ok(Contribution::encrypt(plan, p, &plan.contribution(p, record)?, public)?))
            .collect()
    }
}

/// The README's "Using the library" section, compiled as a doctest (see
/// `build.rs`).
#[doc = include_str!(concat!(env!("OUT_DIR"), "/readme_library.md"))]
pub mod readme {}
