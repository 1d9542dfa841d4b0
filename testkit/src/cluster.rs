//! A whole jointscore system on loopback: one coordinator and one party
//! node per party of the model, each with its own SQLite store in a
//! temporary directory, over real gRPC. Lenders connect to it like to any
//! coordinator.
//!
//! This is what the quickstart runs; tests use it to break one piece at a
//! time (stop a party, withhold a model approval, shrink the queue).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jointscore_circuits::proof::Crs;
use jointscore_circuits::{Bundle, CROSS_BORDER_SELLER, Model, PlanKind, Record, reference};
use jointscore_coordinator::{CoordinatorConfig, CoordinatorError, CoordinatorNode, Evaluation, open_store};
use jointscore_identity::{Consortium, Member, NodeKey, Proofs, Role};
use jointscore_lender::{Lender, LenderError, LenderKeys, PsiRequester};
use jointscore_monitor::Day;
use jointscore_net::{NodeTls, Target};
use jointscore_party::{PartyConfig, PartyError, PartyNode, RecordStore};
use serde_json::{Map, Value};
use tempfile::TempDir;
use tokio::net::TcpListener;

use crate::sample;

/// Why the cluster could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A coordinator error.
    #[error(transparent)]
    Coordinator(#[from] CoordinatorError),
    /// A party node error.
    #[error(transparent)]
    Party(#[from] PartyError),
    /// A lender error.
    #[error(transparent)]
    Lender(#[from] LenderError),
    /// A model or reference error.
    #[error(transparent)]
    Circuits(#[from] jointscore_circuits::Error),
    /// Sockets or temporary files.
    #[error("local system: {0}")]
    Io(#[from] std::io::Error),
    /// A name the cluster does not have.
    #[error("{0}")]
    Unknown(String),
    /// Identity keys or the consortium file.
    #[error(transparent)]
    Identity(#[from] jointscore_identity::IdentityError),
}

/// How to build the cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Sample subjects loaded into the parties' stores.
    pub sellers: usize,
    /// Seed of the sample book.
    pub seed: u64,
    /// The coordinator's queue capacity.
    pub queue_capacity: usize,
    /// The coordinator's evaluation workers.
    pub eval_workers: usize,
    /// The coordinator's per-party deadline.
    pub party_deadline: Duration,
    /// Parties whose operators have approved no model.
    pub unapproved: Vec<String>,
    /// Stats spec ids every party approves.
    pub approved_stats: Vec<String>,
    /// The consortium's lenders (the coordinator's `lenders`). In a signed
    /// cluster those that are not parties are lender members of the
    /// consortium file, beside [`LENDER`]; a party among them asks as its
    /// party node.
    pub lenders: Vec<String>,
    /// Parties whose nodes keep an asset registry (`asset_registry`).
    pub registries: Vec<String>,
    /// Give every node an identity key and the coordinator the consortium
    /// file, so contributions are signed and checked (the default).
    pub signed: bool,
    /// Parties listed as revoked in the consortium file.
    pub revoked: Vec<String>,
    /// The coordinator's deadline for a party to open a PSI session.
    pub psi_open_deadline: Duration,
    /// Run every connection over mutual TLS, each node proving its
    /// identity with its certificate (needs `signed`).
    pub tls: bool,
    /// Strict mode (needs `signed`): the consortium file pins a CRS whose
    /// proofs cover this many blocks each, and every contribution must be
    /// proven.
    pub proof_blocks: Option<usize>,
    /// Parties that contribute only for a subject that consented to the
    /// lender (`require_consent`); their stores start without consents.
    pub consent_required: Vec<String>,
    /// Monitor spec ids every party approves (`approved_monitors`).
    pub approved_monitors: Vec<String>,
    /// When set, every party also keeps [`crate::history::FLOW_DAYS`] days
    /// of dated snapshots ending this day: its record with that day's flow
    /// (see [`crate::history`]).
    pub history_until: Option<Day>,
    /// The coordinator's store: a PostgreSQL URL (a fresh schema), or
    /// `None` for a SQLite file in the cluster's directory.
    pub store: Option<String>,
    /// Where decisions are evaluated: in the coordinator, or (`Workers`)
    /// by `jointscore coordinator worker` processes the caller starts with
    /// [`Cluster::config_file`] (PostgreSQL only).
    pub evaluation: Evaluation,
}

/// The lender member of a TLS cluster's consortium.
pub const LENDER: &str = "lender";

/// The CRS file [`init_consortium`] writes in strict mode.
pub const CRS_FILE: &str = "crs.bin";

impl Default for ClusterOptions {
    fn default() -> ClusterOptions {
        ClusterOptions {
            sellers: 10,
            seed: 42,
            queue_capacity: 64,
            eval_workers: 1,
            party_deadline: Duration::from_secs(30),
            unapproved: Vec::new(),
            approved_stats: Vec::new(),
            lenders: Vec::new(),
            registries: Vec::new(),
            signed: true,
            revoked: Vec::new(),
            psi_open_deadline: Duration::from_secs(300),
            tls: false,
            proof_blocks: None,
            consent_required: Vec::new(),
            approved_monitors: Vec::new(),
            history_until: None,
            store: None,
            evaluation: Evaluation::Local,
        }
    }
}

/// One party node of the cluster.
pub struct ClusterParty {
    /// Its name in the model.
    pub name: String,
    /// Its record store.
    pub store: Arc<RecordStore>,
    /// Its configuration.
    pub config: PartyConfig,
    node: Option<PartyNode>,
}

/// A running local system.
pub struct Cluster {
    dir: TempDir,
    coordinator: CoordinatorNode,
    /// The party nodes, in model order.
    pub parties: Vec<ClusterParty>,
    /// The sample subjects and their full records.
    pub book: Vec<(String, Value)>,
    /// The model every party approved.
    pub model: Model,
    /// The consortium file the coordinator checks signatures against, when
    /// the cluster is signed.
    pub consortium: Option<Arc<Consortium>>,
    config_file: PathBuf,
}

/// Who a new consortium has, for [`init_consortium`].
#[derive(Clone, Debug, Default)]
pub struct Membership {
    /// The consortium's name.
    pub name: String,
    /// Its parties.
    pub parties: Vec<String>,
    /// Its lenders.
    pub lenders: Vec<String>,
    /// Members marked revoked in the file.
    pub revoked: Vec<String>,
    /// Whether all traffic runs over mutual TLS: each member then gets a
    /// certificate self-signed by its key.
    pub mtls: bool,
    /// Strict mode: generate a CRS whose proofs cover this many blocks each
    /// (`crs.bin`, pinned by its hash in the file), so every contribution
    /// must carry zero-knowledge proofs.
    pub proof_blocks: Option<usize>,
}

/// Writes an identity key for the coordinator and for each party and
/// lender into `dir` (`coordinator.key`, `<name>.key`, owner-only) and the
/// consortium file listing them (`consortium.toml`), and in strict mode the
/// CRS (`crs.bin`). Refuses to overwrite existing keys.
///
/// Whoever runs this holds every key and made the CRS: it sets up a local
/// or demonstration consortium. A real one generates each key on its node
/// and its CRS by a procedure the members trust (docs/security.md).
pub fn init_consortium(dir: &Path, membership: &Membership) -> Result<Consortium, ClusterError> {
    let Membership { name, parties, lenders, revoked, mtls, proof_blocks } = membership;
    let roles = std::iter::once(("coordinator", Role::Coordinator))
        .chain(parties.iter().map(|p| (p.as_str(), Role::Party)))
        .chain(lenders.iter().map(|l| (l.as_str(), Role::Lender)));
    // Every name checked before any key is written, so a bad list leaves
    // nothing behind.
    let mut seen = std::collections::BTreeSet::new();
    for (member, _) in roles.clone() {
        let plain = !member.is_empty() && member.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !plain {
            return Err(ClusterError::Unknown(format!(
                "member name `{member}` must be ASCII letters, digits, `-` or `_` (it names a key file)"
            )));
        }
        if !seen.insert(member) {
            return Err(ClusterError::Unknown(format!("member `{member}` is given twice (`coordinator` is implied)")));
        }
    }
    // The CRS first: it is the slow step and the likeliest to be refused.
    let crs = proof_blocks.map(Crs::generate).transpose()?;
    std::fs::create_dir_all(dir)?;
    let proofs = match crs {
        Some((crs, bytes)) => {
            std::fs::write(dir.join(CRS_FILE), &bytes)?;
            Some(Proofs { crs: CRS_FILE.into(), crs_sha256: crs.sha256().to_string() })
        }
        None => None,
    };
    let mut members = Vec::new();
    for (member, role) in roles {
        let key = NodeKey::generate();
        key.write(&dir.join(format!("{member}.key")), false)?;
        members.push(Member {
            name: member.into(),
            role,
            public_key: key.public_hex(),
            address: None,
            revoked: revoked.iter().any(|r| r == member),
            expires: None,
            certificate: if *mtls { Some(key.certificate(member)?) } else { None },
        });
    }
    let consortium = Consortium { name: name.clone(), mtls: *mtls, proofs, members };
    let text = consortium.to_toml()?;
    // Round trip: what is written is what every member will read.
    let consortium = Consortium::from_toml(&text)?;
    std::fs::write(dir.join("consortium.toml"), text)?;
    Ok(consortium)
}

/// Binds `address` again once the node that held it has stopped, retrying
/// for up to five seconds while the port is released.
pub async fn rebind(address: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let mut tries = 0;
    loop {
        match TcpListener::bind(address).await {
            Ok(l) => return Ok(l),
            Err(e) if tries >= 50 => return Err(e),
            Err(_) => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The part of `record` that the model assigns to `party`: what that
/// party's book holds.
pub fn party_view(model: &Model, party: usize, record: &Value) -> Value {
    let mut own = Map::new();
    for f in model.features().iter().filter(|f| f.party == party) {
        own.insert(f.name.clone(), record.get(&f.name).cloned().unwrap_or(Value::Null));
    }
    Value::Object(own)
}

/// How the party nodes of a cluster are set up.
#[derive(Clone, Debug, Default)]
pub struct PartySetup {
    /// Parties whose operators approve no model.
    pub unapproved: Vec<String>,
    /// Stats spec ids every party approves.
    pub approved_stats: Vec<String>,
    /// Parties that keep an asset registry.
    pub registries: Vec<String>,
    /// A directory holding `<name>.key` for each party and
    /// `consortium.toml`: they sign, and run mutual TLS if the file says so.
    pub identities: Option<PathBuf>,
    /// Parties that require consent (`require_consent`).
    pub consent_required: Vec<String>,
    /// Parties every node lets a lender name absent although the outputs
    /// depend on them (`allow_absent`): for decisions after an alignment.
    pub allow_absent: Vec<String>,
    /// Monitor spec ids every party approves.
    pub approved_monitors: Vec<String>,
    /// Dated snapshots ending this day, with the sample flows (and `seed`).
    pub history: Option<(Day, u64)>,
}

/// Starts one party node per party of `model`, each with a SQLite store in
/// `dir` holding its own columns of `book`, registered with the coordinator
/// at `coordinator`, set up as `setup` says.
pub async fn start_parties(
    model: &Model,
    book: &[(String, Value)],
    coordinator: &str,
    dir: &Path,
    setup: &PartySetup,
) -> Result<Vec<ClusterParty>, ClusterError> {
    let PartySetup {
        unapproved,
        approved_stats,
        registries,
        identities,
        consent_required,
        allow_absent,
        approved_monitors,
        history,
    } = setup;
    let mut parties = Vec::new();
    for (index, name) in model.parties().iter().enumerate() {
        let config = PartyConfig {
            approved_models: if unapproved.contains(name) { Vec::new() } else { vec![model.id().into()] },
            approved_stats: approved_stats.to_vec(),
            approved_monitors: approved_monitors.to_vec(),
            asset_registry: registries.contains(name),
            identity: identities.as_ref().map(|d| d.join(format!("{name}.key"))),
            consortium: identities.as_ref().map(|d| d.join("consortium.toml")),
            // An unsigned cluster has no consortium: its parties are told
            // to trust the coordinator, as a development setup would be.
            trust_coordinator: identities.is_none(),
            // Benchmarks and tests decide on the same sample subjects over
            // and over.
            subject_decision_limit: 1_000_000,
            allow_absent: allow_absent.clone(),
            require_consent: consent_required.contains(name),
            ..PartyConfig::new(name, coordinator, dir.join(format!("{name}.sqlite")))
        };
        let store = Arc::new(RecordStore::open(&config.store)?);
        let rows: Vec<(String, Value)> =
            book.iter().map(|(id, record)| (id.clone(), party_view(model, index, record))).collect();
        store.put_all(&rows)?;
        if let Some((end, seed)) = history {
            let views: Vec<Value> = rows.iter().map(|(_, v)| v.clone()).collect();
            for (day, snapshot) in crate::history::snapshots(name, book, &views, *seed, *end) {
                store.import_snapshots(&snapshot, day)?;
            }
        }
        let mut party = ClusterParty { name: name.clone(), store, config, node: None };
        party.start().await?;
        parties.push(party);
    }
    Ok(parties)
}

impl Cluster {
    /// Starts a coordinator and the built-in model's party nodes, each
    /// loaded with its own columns of a sample book.
    pub async fn start(options: &ClusterOptions) -> Result<Cluster, ClusterError> {
        let dir = tempfile::Builder::new().prefix("jointscore-").tempdir()?;
        let model = Model::cross_border_seller();
        let book = sample::subjects(&model, options.sellers, options.seed);
        let identities = dir.path().join("identities");
        if (options.tls || options.proof_blocks.is_some()) && !options.signed {
            return Err(ClusterError::Unknown(
                "a TLS or strict-mode cluster needs a consortium: set `signed` too".into(),
            ));
        }
        let consortium = if options.signed {
            let membership = Membership {
                name: "local".into(),
                parties: model.parties().to_vec(),
                // Every lender signs its key sets, requests and PSI opens:
                // the built-in one, and those of `lenders` that run no party
                // node (one that does signs as its party node).
                lenders: std::iter::once(LENDER.to_string())
                    .chain(options.lenders.iter().filter(|l| *l != LENDER && !model.parties().contains(l)).cloned())
                    .collect(),
                revoked: options.revoked.clone(),
                mtls: options.tls,
                proof_blocks: options.proof_blocks,
            };
            Some(Arc::new(init_consortium(&identities, &membership)?))
        } else {
            None
        };

        let config = CoordinatorConfig {
            listen: "127.0.0.1:0".into(),
            queue_capacity: options.queue_capacity,
            eval_workers: options.eval_workers,
            party_deadline_ms: u64::try_from(options.party_deadline.as_millis()).unwrap_or(u64::MAX),
            lenders: options.lenders.clone(),
            psi_open_deadline_ms: u64::try_from(options.psi_open_deadline.as_millis()).unwrap_or(u64::MAX),
            consortium: consortium.as_ref().map(|_| identities.join("consortium.toml")),
            identity: consortium.as_ref().map(|_| identities.join("coordinator.key")),
            evaluation: options.evaluation,
            ..CoordinatorConfig::with_store(
                options.store.as_ref().map_or_else(|| dir.path().join("coordinator.sqlite"), PathBuf::from),
            )
        };
        // Workers read the same configuration.
        let config_file = dir.path().join("coordinator.toml");
        let text = toml::to_string(&config).map_err(|e| ClusterError::Unknown(format!("coordinator config: {e}")))?;
        std::fs::write(&config_file, text)?;
        let store = open_store(&config.store)?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let coordinator = CoordinatorNode::start(config, store, listener).await?;

        let setup = PartySetup {
            unapproved: options.unapproved.clone(),
            approved_stats: options.approved_stats.clone(),
            registries: options.registries.clone(),
            identities: consortium.as_ref().map(|_| identities.clone()),
            consent_required: options.consent_required.clone(),
            allow_absent: Vec::new(),
            approved_monitors: options.approved_monitors.clone(),
            history: options.history_until.map(|day| (day, options.seed)),
        };
        let parties = start_parties(&model, &book, &coordinator.url(), dir.path(), &setup).await?;
        Ok(Cluster { dir, coordinator, parties, book, model, consortium, config_file })
    }

    /// The coordinator's configuration as a file, for worker processes
    /// (`jointscore coordinator worker --config FILE`).
    pub fn config_file(&self) -> &Path {
        &self.config_file
    }

    /// The coordinator's URL.
    pub fn coordinator_url(&self) -> String {
        self.coordinator.url()
    }

    /// The directory holding every store.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where `member` reaches the coordinator: over mutual TLS with its
    /// identity key when the cluster runs TLS, plaintext otherwise.
    pub fn target(&self, member: &str) -> Result<Target, ClusterError> {
        let tls = match &self.consortium {
            Some(consortium) if consortium.mtls => {
                let key = NodeKey::read(&self.dir.path().join("identities").join(format!("{member}.key")))?;
                NodeTls::new(&key, member, consortium.clone())?
            }
            _ => None,
        };
        Ok(Target::new(self.coordinator_url(), tls))
    }

    /// A lender ([`LENDER`]) connected to this cluster's coordinator for the
    /// built-in model. When the cluster is signed, the lender signs its key
    /// registrations and requests with its identity key and requires every
    /// decision's signatures.
    pub async fn lender(&self, keys: Arc<LenderKeys>, kind: PlanKind) -> Result<Lender, ClusterError> {
        self.lender_for(keys, CROSS_BORDER_SELLER.to_string(), kind).await
    }

    /// [`Cluster::lender`] for another file: a model, or a monitor spec
    /// with [`PlanKind::Monitor`].
    pub async fn lender_for(
        &self,
        keys: Arc<LenderKeys>,
        source: String,
        kind: PlanKind,
    ) -> Result<Lender, ClusterError> {
        let target = self.target(LENDER)?;
        let mut lender = Lender::connect(target, keys, source, kind).await?;
        if let Some(consortium) = &self.consortium {
            let key = NodeKey::read(&self.dir.path().join("identities").join(format!("{LENDER}.key")))?;
            lender.sign_as(LENDER, Arc::new(key), consortium.clone());
        }
        Ok(lender)
    }

    /// The identity key of `member`, when the cluster is signed.
    pub fn identity(&self, member: &str) -> Result<NodeKey, ClusterError> {
        if self.consortium.is_none() {
            return Err(ClusterError::Unknown("an unsigned cluster has no identity keys".into()));
        }
        Ok(NodeKey::read(&self.dir.path().join("identities").join(format!("{member}.key")))?)
    }

    /// A PSI requester asking as `member`. When the cluster is signed and
    /// `member` is one of its members, it signs every open with the
    /// member's key, as parties with a consortium file require; a name
    /// that is not a member's asks unsigned.
    pub async fn psi_requester(&self, member: &str) -> Result<PsiRequester, ClusterError> {
        let mut requester = PsiRequester::connect(self.target(member)?, member).await?;
        if self.consortium.as_ref().is_some_and(|c| c.member(member).is_ok()) {
            requester.sign_as(member, Arc::new(self.identity(member)?));
        }
        Ok(requester)
    }

    /// A party by name.
    pub fn party(&mut self, name: &str) -> Result<&mut ClusterParty, ClusterError> {
        self.parties
            .iter_mut()
            .find(|p| p.name == name)
            .ok_or_else(|| ClusterError::Unknown(format!("no party `{name}` in this cluster")))
    }

    /// The plaintext reference decision for a sample subject, restricted to
    /// what the model reveals.
    pub fn reference(&self, subject: &str) -> Result<Bundle, ClusterError> {
        let (_, record) = self
            .book
            .iter()
            .find(|(id, _)| id == subject)
            .ok_or_else(|| ClusterError::Unknown(format!("no subject `{subject}` in the sample book")))?;
        let record = Record::from_json(&self.model, record)?;
        Ok(reference::evaluate(&self.model, &record).restricted(&self.model))
    }

    /// Stops every node.
    pub async fn stop(self) -> Result<(), ClusterError> {
        for mut p in self.parties {
            p.stop().await?;
        }
        self.coordinator.stop().await?;
        Ok(())
    }
}

impl ClusterParty {
    /// Starts (or restarts, on a fresh port) the node; it registers its
    /// address with the coordinator.
    pub async fn start(&mut self) -> Result<(), ClusterError> {
        if self.node.is_none() {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let node = PartyNode::start(&self.config, self.store.clone(), listener, Duration::from_secs(10)).await?;
            self.node = Some(node);
        }
        Ok(())
    }

    /// Stops the node and starts it again on the same address, as a node
    /// process restarted in place: the coordinator's connections reach the
    /// new process, which holds none of the old one's in-memory state.
    pub async fn restart_in_place(&mut self) -> Result<(), ClusterError> {
        let Some(node) = self.node.take() else {
            return self.start().await;
        };
        let address = node.address();
        node.stop().await?;
        let listener = rebind(address).await?;
        self.node = Some(PartyNode::start(&self.config, self.store.clone(), listener, Duration::from_secs(10)).await?);
        Ok(())
    }

    /// Stops the node; the coordinator still has its address.
    pub async fn stop(&mut self) -> Result<(), ClusterError> {
        if let Some(node) = self.node.take() {
            node.stop().await?;
        }
        Ok(())
    }

    /// The address the node serves on, while it runs.
    pub fn address(&self) -> Option<std::net::SocketAddr> {
        self.node.as_ref().map(PartyNode::address)
    }

    /// Where its store lives.
    pub fn store_path(&self) -> PathBuf {
        self.config.store.clone()
    }
}
