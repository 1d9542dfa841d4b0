//! `jointscore party|coordinator|lender …`: the three services and the
//! lender's client, from the command line.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use jointscore_circuits::{Bundle, CROSS_BORDER_SELLER, Model};
use jointscore_coordinator::{CoordinatorConfig, CoordinatorNode, CoordinatorWorker, open_store};
use jointscore_identity::{Consortium, NodeKey};
use jointscore_lender::{AlignmentStore, JobStatus, KeyFiles, Lender, LenderKeys};
use jointscore_net::{NodeTls, Target};
use jointscore_party::{PartyConfig, PartyNode, RecordStore};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::{BUILTIN, CliError, plan_kind, spinner};

#[derive(Subcommand)]
pub(crate) enum PartyCommand {
    /// The party's own hash-chained log of every contribution it made (the
    /// lender's signed request and its own signed envelope) and every
    /// request it refused: show it, verify its chain.
    #[command(subcommand)]
    Log(crate::party_log::LogCommand),
    /// Load records from a CSV file (a `subject` column and one column per
    /// feature) into the party's store; all rows or none.
    Import {
        /// The party's configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Keep the rows as every subject's snapshot on this day
        /// (`YYYY-MM-DD`, UTC) as well: importing the same day again
        /// replaces that day only, and the current record follows each
        /// subject's newest snapshot. Without it, the rows replace the
        /// current records only.
        #[arg(long)]
        as_of: Option<String>,
        /// The CSV file.
        file: PathBuf,
    },
    /// The sellers' consents: which subject allowed which lender to use
    /// this party's data, for what purpose, when. A party with
    /// `require_consent = true` contributes only under one.
    #[command(subcommand)]
    Consent(ConsentCommand),
    /// Register with the coordinator and answer contribution requests;
    /// SIGTERM or Ctrl-C drains the calls in flight (20 s at most), then
    /// stops.
    Serve {
        /// The party's configuration file.
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
pub(crate) enum ConsentCommand {
    /// Load consents from a CSV file with the columns
    /// `subject,lender,purpose,valid_from,valid_until,revoked`: purpose
    /// `decision` or `monitoring`; dates `YYYY-MM-DD` (UTC; `valid_until`
    /// inclusive) or RFC 3339 times; `valid_until` and `revoked` may be
    /// empty. A row with `revoked` set revokes the consent recorded under
    /// the same subject, lender, purpose and `valid_from`. All rows or
    /// none; a bad row is named by its line.
    Import {
        /// The party's configuration file.
        #[arg(long)]
        config: PathBuf,
        /// The CSV file.
        file: PathBuf,
    },
    /// List the consents held, with their ids (the ids contributions name
    /// in the ledger).
    List {
        /// The party's configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Only this subject's consents.
        #[arg(long)]
        subject: Option<String>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum CoordinatorCommand {
    /// Serve the coordinator; unfinished jobs in its store are resumed.
    /// SIGTERM or Ctrl-C drains calls and jobs in flight (for
    /// `shutdown_grace_ms`), leaves the rest unfinished in the store for
    /// the next start, and closes the store.
    Serve {
        /// The coordinator's configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Run an evaluation worker: claim decision jobs from the
    /// coordinator's PostgreSQL store under a lease, ask the parties,
    /// evaluate, and write each job's end once (docs/scale.md). Front ends
    /// on the same database run with `evaluation = "workers"`. SIGTERM or
    /// Ctrl-C lets the jobs running finish (for `shutdown_grace_ms`).
    Worker {
        /// The coordinator's configuration file (the same as the front
        /// ends': store, consortium, identity).
        #[arg(long)]
        config: PathBuf,
        /// This worker's name among the workers on the database (default:
        /// host name and process id).
        #[arg(long)]
        name: Option<String>,
    },
}

/// How a command reaches the coordinator, and as which member.
#[derive(Args, Clone)]
pub(crate) struct Connection {
    /// The coordinator's URL (`https://` when the consortium runs mutual TLS).
    #[arg(long, default_value = "http://127.0.0.1:7100")]
    pub(crate) coordinator: String,
    /// The consortium file. Decisions must then carry a valid signed
    /// envelope from each party asked, or they are refused unread; with
    /// `mtls = true` in it, the connection is mutual TLS (needs --identity).
    #[arg(long)]
    pub(crate) consortium: Option<PathBuf>,
    /// This member's identity key (`jointscore consortium init` makes it):
    /// a lender signs its key registrations and decision requests with it
    /// (parties contribute to nothing else), and it is the client
    /// certificate under mutual TLS.
    #[arg(long, requires = "consortium")]
    pub(crate) identity: Option<PathBuf>,
}

impl Connection {
    /// The consortium file, if given.
    pub(crate) fn consortium(&self) -> Result<Option<Arc<Consortium>>, CliError> {
        let consortium = self.consortium.as_deref().map(Consortium::load).transpose();
        Ok(consortium.map_err(|e| CliError::Usage(e.to_string()))?.map(Arc::new))
    }

    /// Where to reach the coordinator: over mutual TLS as the member whose
    /// key is `--identity` when the consortium runs it.
    pub(crate) fn target(&self) -> Result<Target, CliError> {
        let usage = |e: jointscore_identity::IdentityError| CliError::Usage(e.to_string());
        let tls = match (self.consortium()?, &self.identity) {
            (Some(consortium), Some(key)) => {
                NodeTls::for_key(&NodeKey::read(key).map_err(usage)?, consortium).map_err(usage)?
            }
            (Some(consortium), None) if consortium.mtls => {
                return Err(CliError::Usage(
                    "the consortium runs mutual TLS (`mtls = true`): pass this member's key with --identity".into(),
                ));
            }
            _ => None,
        };
        Ok(Target::new(self.coordinator.clone(), tls))
    }
}

#[derive(Args, Clone)]
pub(crate) struct LenderArgs {
    #[command(flatten)]
    pub(crate) connection: Connection,
    /// Directory of the key files (client.key, public.key, server.key).
    #[arg(long, default_value = "lender-keys")]
    keys: PathBuf,
    /// Model file (TOML), or `cross_border_seller` for the built-in model.
    #[arg(long, default_value = BUILTIN)]
    model: String,
    /// Ask for the coordinator-side plan instead of pushdown.
    #[arg(long)]
    coordinator_side: bool,
}

#[derive(Subcommand)]
pub(crate) enum LenderCommand {
    /// Generate a key set; the secret key is written 0600 and never sent.
    Keygen {
        /// Directory for the key files.
        #[arg(long, default_value = "lender-keys")]
        keys: PathBuf,
        /// Replace an existing key set.
        #[arg(long)]
        force: bool,
    },
    /// Upload the public and compressed evaluation keys to the coordinator.
    Register {
        #[command(flatten)]
        lender: LenderArgs,
        /// The lender's name, as the coordinator records it.
        #[arg(long, default_value = "lender")]
        name: String,
    },
    /// Ask for decisions and print them decrypted (one JSON object per line).
    Decide {
        #[command(flatten)]
        lender: LenderArgs,
        /// One subject.
        #[arg(long, conflicts_with = "subjects", required_unless_present = "subjects")]
        subject: Option<String>,
        /// A CSV file whose first column (or `subject` column) lists subjects.
        #[arg(long)]
        subjects: Option<PathBuf>,
        /// Idempotency key for a single subject (default: derived from the
        /// subject and the time). Batches use `<id>-<subject>`.
        #[arg(long)]
        request_id: Option<String>,
        /// The alignment store written by `lender align`: parties that do
        /// not hold a subject are not asked about it.
        #[arg(long, default_value = crate::psi_cmd::DEFAULT_ALIGNMENT)]
        alignment: PathBuf,
        /// Ask every party of the model without consulting an alignment. A
        /// party that does not hold the subject then learns it was asked
        /// about, and the decision fails.
        #[arg(long, conflicts_with = "alignment")]
        unaligned: bool,
    },
    /// Learn which of a subject list each party holds (ECDH PSI through the
    /// coordinator) and record it for `decide`; parties learn only how many
    /// subjects were asked about.
    Align(crate::psi_cmd::AlignArgs),
    /// Ask the other consortium lenders whether assets (orders, invoices,
    /// warehouse receipts) are already financed; reveals only that (or how
    /// many), never which lender or anything else in their registries.
    CheckAsset(crate::psi_cmd::CheckAssetArgs),
    /// Record financed assets in this lender's registry (its party node's
    /// store), which other lenders' checks match against.
    RegisterAsset(crate::psi_cmd::RegisterAssetArgs),
    /// Watch loans after disbursement: register portfolios under a monitor
    /// spec, run monitoring rounds, read and acknowledge alerts.
    #[command(subcommand)]
    Monitor(crate::lender_monitor::MonitorCommand),
    /// Fit a scorecard jointly with the parties of a spec, over the
    /// coordinator: binning round, Gram round, weights; prints progress and
    /// writes the model only once the fit has ended.
    Fit(crate::fit_cmd::FitArgs),
    /// Show a job; decrypt and print its decision if it is done.
    Show {
        #[command(flatten)]
        lender: LenderArgs,
        /// The job id.
        job: String,
    },
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Usage(format!("cannot start the async runtime: {e}")))
}

/// Logs to stderr at `info` unless RUST_LOG says otherwise; in colour only
/// when stderr is a terminal, so files and log collectors get plain lines.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// How long a party node lets calls in flight end once asked to stop.
const PARTY_SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Runs a node with `serve`, which is handed a future that completes at
/// the first SIGTERM or Ctrl-C (SIGINT) and then shuts the node down
/// gracefully. A second signal stops at once: what a coordinator has not
/// finished is resumed at its next start.
fn serve_until_signalled<F>(serve: impl FnOnce(Pin<Box<dyn Future<Output = ()> + Send>>) -> F) -> Result<(), CliError>
where
    F: Future<Output = Result<(), CliError>>,
{
    let runtime = runtime()?;
    let served = runtime.block_on(async {
        let (first, second) = shutdown_signals()?;
        tokio::select! {
            served = serve(Box::pin(first)) => served,
            () = second => {
                tracing::warn!("second shutdown signal: stopping now, without waiting for calls and jobs in flight");
                Ok(())
            }
        }
    });
    // Work still on the blocking pool (an evaluation cut short) is not
    // waited for.
    runtime.shutdown_timeout(Duration::from_secs(1));
    served
}

/// Futures that complete at the first and at the second shutdown signal
/// (SIGTERM, SIGINT). The handlers are installed before this returns, so
/// a signal from then on is never the default (immediate) exit.
fn shutdown_signals() -> Result<(impl Future<Output = ()> + Send, impl Future<Output = ()>), CliError> {
    use tokio::signal::unix::{SignalKind, signal};
    let install = |kind| signal(kind).map_err(|e| CliError::Usage(format!("cannot listen for signals: {e}")));
    let (mut term, mut interrupt) = (install(SignalKind::terminate())?, install(SignalKind::interrupt())?);
    let (tx, rx) = tokio::sync::watch::channel(0u32);
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                Some(()) = term.recv() => "SIGTERM",
                Some(()) = interrupt.recv() => "SIGINT",
                else => break,
            };
            tx.send_modify(|n| *n += 1);
            if *tx.borrow() == 1 {
                tracing::info!(signal = name, "shutting down: draining calls and jobs (signal again to stop at once)");
            }
        }
        // Never report a signal that did not come.
        std::future::pending::<()>().await;
        drop(tx);
    });
    let nth = move |n: u32| {
        let mut rx = rx.clone();
        async move {
            if rx.wait_for(|count| *count >= n).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    Ok((nth(1), nth(2)))
}

pub(crate) fn party(cmd: PartyCommand) -> Result<(), CliError> {
    match cmd {
        PartyCommand::Log(cmd) => crate::party_log::log(cmd),
        PartyCommand::Import { config, as_of: Some(day), file } => {
            let day = jointscore_party::Day::parse(&day).map_err(|e| CliError::Usage(format!("--as-of: {e}")))?;
            let config = PartyConfig::load(&config)?;
            let reader = std::fs::File::open(&file).map_err(|source| CliError::Read { path: file.clone(), source })?;
            let store = RecordStore::open(&config.store)?;
            let report = store.import_snapshot_csv(reader, day)?;
            println!(
                "party {}: snapshots on {day}: {} added, {} replaced, {} unchanged; {} subjects' current record is now this day's; {} held in {}",
                config.name,
                report.added,
                report.replaced,
                report.unchanged,
                report.current,
                store.len()?,
                config.store.display()
            );
            Ok(())
        }
        PartyCommand::Import { config, as_of: None, file } => {
            let config = PartyConfig::load(&config)?;
            let store = RecordStore::open(&config.store)?;
            let report = store.import_file(&file)?;
            println!(
                "party {}: {} subjects added, {} replaced; {} held in {}",
                config.name,
                report.added,
                report.replaced,
                store.len()?,
                config.store.display()
            );
            Ok(())
        }
        PartyCommand::Consent(cmd) => consent(cmd),
        PartyCommand::Serve { config } => {
            init_logging();
            let config = PartyConfig::load(&config)?;
            let store = Arc::new(RecordStore::open(&config.store)?);
            serve_until_signalled(|shutdown| async move {
                let listener = TcpListener::bind(&config.listen)
                    .await
                    .map_err(|e| CliError::Usage(format!("cannot listen on {}: {e}", config.listen)))?;
                // A party may start before the coordinator: keep trying.
                let node = PartyNode::start(&config, store, listener, Duration::from_secs(600)).await?;
                node.run_until(shutdown, PARTY_SHUTDOWN_GRACE).await?;
                Ok(())
            })
        }
    }
}

fn consent(cmd: ConsentCommand) -> Result<(), CliError> {
    match cmd {
        ConsentCommand::Import { config, file } => {
            let config = PartyConfig::load(&config)?;
            let store = RecordStore::open(&config.store)?;
            let report = store.import_consents_file(&file)?;
            println!(
                "party {}: {} consents added, {} revoked, {} unchanged; {} held in {}{}",
                config.name,
                report.added,
                report.revoked,
                report.unchanged,
                store.consents(None)?.len(),
                config.store.display(),
                if config.require_consent { "" } else { " (`require_consent` is off: they are not checked)" }
            );
            Ok(())
        }
        ConsentCommand::List { config, subject, json } => {
            let config = PartyConfig::load(&config)?;
            let store = RecordStore::open(&config.store)?;
            let consents = store.consents(subject.as_deref())?;
            if json {
                for consent in &consents {
                    println!("{}", serde_json::to_string(consent).map_err(|e| CliError::Json(e.to_string()))?);
                }
                return Ok(());
            }
            if consents.is_empty() {
                println!(
                    "party {}: no consents{}",
                    config.name,
                    subject.map_or(String::new(), |s| format!(" of `{s}`"))
                );
                return Ok(());
            }
            println!(
                "{:<64}  {:<16}  {:<12}  {:<10}  {:<20}  {:<20}  revoked",
                "id", "subject", "lender", "purpose", "valid_from", "valid_until"
            );
            for c in consents {
                println!(
                    "{:<64}  {:<16}  {:<12}  {:<10}  {:<20}  {:<20}  {}",
                    c.id,
                    c.subject,
                    c.lender,
                    c.purpose,
                    c.valid_from,
                    c.valid_until.as_deref().unwrap_or("-"),
                    c.revoked_at.as_deref().unwrap_or("-")
                );
            }
            Ok(())
        }
    }
}

pub(crate) fn coordinator(cmd: CoordinatorCommand) -> Result<(), CliError> {
    let config = match cmd {
        CoordinatorCommand::Serve { config } => config,
        CoordinatorCommand::Worker { config, name } => return coordinator_worker(&config, name),
    };
    init_logging();
    let config = CoordinatorConfig::load(&config)?;
    let store = open_store(&config.store)?;
    serve_until_signalled(|shutdown| async move {
        let listener = TcpListener::bind(&config.listen)
            .await
            .map_err(|e| CliError::Usage(format!("cannot listen on {}: {e}", config.listen)))?;
        let node = CoordinatorNode::start(config, store, listener).await?;
        // Logs what it drained; the store is closed when it returns.
        node.run_until(shutdown).await?;
        Ok(())
    })
}

fn coordinator_worker(config: &std::path::Path, name: Option<String>) -> Result<(), CliError> {
    init_logging();
    let config = CoordinatorConfig::load(config)?;
    let store = open_store(&config.store)?;
    let name = name.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
        format!("{}-{}", if host.is_empty() { "worker" } else { &host }, std::process::id())
    });
    serve_until_signalled(|shutdown| async move {
        let worker = CoordinatorWorker::new(config, store, name)?;
        worker.run_until(shutdown).await?;
        Ok(())
    })
}

pub(crate) fn model_source(model: &str) -> Result<String, CliError> {
    if model == BUILTIN && !std::path::Path::new(model).exists() {
        return Ok(CROSS_BORDER_SELLER.to_string());
    }
    std::fs::read_to_string(model).map_err(|source| CliError::Read { path: model.into(), source })
}

async fn connect(args: &LenderArgs) -> Result<Lender, CliError> {
    let source = model_source(&args.model)?;
    connect_for(&args.connection, &args.keys, source, plan_kind(args.coordinator_side)).await
}

/// A lender client for `source` (a model, or a monitor spec with
/// [`PlanKind::Monitor`]), signing as the member its identity key is.
pub(crate) async fn connect_for(
    connection: &Connection,
    keys: &std::path::Path,
    source: String,
    kind: jointscore_circuits::PlanKind,
) -> Result<Lender, CliError> {
    let keys = KeyFiles::new(keys).read()?;
    let target = connection.target()?;
    let mut lender = Lender::connect(target, Arc::new(keys), source, kind).await?;
    match (connection.consortium()?, &connection.identity) {
        (Some(consortium), Some(path)) => {
            // The member this identity key is: the name it signs as.
            let key = NodeKey::read(path).map_err(|e| CliError::Usage(e.to_string()))?;
            let member = consortium
                .members
                .iter()
                .find(|m| m.public_key == key.public_hex())
                .ok_or_else(|| {
                    CliError::Usage(format!("the identity key {} is not a member of the consortium", path.display()))
                })?
                .name
                .clone();
            lender.sign_as(&member, Arc::new(key), consortium);
        }
        (Some(consortium), None) => lender.require_signatures(consortium),
        _ => {}
    }
    Ok(lender)
}

pub(crate) fn subjects_from_csv(path: &std::path::Path) -> Result<Vec<String>, CliError> {
    let mut reader =
        csv::Reader::from_path(path).map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
    let column = reader
        .headers()
        .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?
        .iter()
        .position(|h| h == "subject")
        .unwrap_or(0);
    let mut out = Vec::new();
    for (i, row) in reader.records().enumerate() {
        let row = row.map_err(|e| CliError::Usage(format!("{} line {}: {e}", path.display(), i + 2)))?;
        match row.get(column).map(str::trim) {
            Some(s) if !s.is_empty() => out.push(s.to_string()),
            _ => return Err(CliError::Usage(format!("{} line {}: empty subject", path.display(), i + 2))),
        }
    }
    Ok(out)
}

pub(crate) fn now_id() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{nanos:x}")
}

fn decision_json(model: &Model, bundle: &Bundle) -> Value {
    bundle.describe(model)
}

pub(crate) fn lender(cmd: LenderCommand) -> Result<(), CliError> {
    match cmd {
        LenderCommand::Keygen { keys, force } => {
            let files = KeyFiles::new(&keys);
            let bar = spinner("generating a TFHE key set (compressed evaluation key; a few seconds)");
            let generated = LenderKeys::generate();
            bar.finish_and_clear();
            let generated = generated?;
            files.write(&generated, force)?;
            println!("key set {} written to {}", generated.id(), keys.display());
            println!("  {} (secret, 0600: never leaves this machine)", files.secret_path().display());
            println!("  {} (for parties)", files.public_path().display());
            println!(
                "  {} (compressed evaluation key, {:.1} MB, for the coordinator)",
                files.evaluation_path().display(),
                generated.evaluation.len() as f64 / 1e6
            );
            Ok(())
        }
        LenderCommand::Register { lender, name } => runtime()?.block_on(async {
            let mut client = connect(&lender).await?;
            let bar = spinner("uploading keys; the coordinator checks and decompresses the evaluation key");
            let id = client.register(&name).await;
            bar.finish_and_clear();
            println!("key set {} registered at {}", id?, lender.connection.coordinator);
            Ok(())
        }),
        LenderCommand::Fit(args) => crate::fit_cmd::fit(args),
        LenderCommand::Monitor(cmd) => crate::lender_monitor::monitor(cmd),
        LenderCommand::Align(args) => crate::psi_cmd::align(args),
        LenderCommand::CheckAsset(args) => crate::psi_cmd::check_asset(args),
        LenderCommand::RegisterAsset(args) => crate::psi_cmd::register_asset(args),
        LenderCommand::Decide { lender, subject, subjects, request_id, alignment, unaligned } => {
            runtime()?.block_on(async {
                let alignment = if unaligned {
                    None
                } else if alignment.exists() {
                    Some(AlignmentStore::open(&alignment)?)
                } else {
                    return Err(CliError::Usage(format!(
                        "no alignment store at {}: run `jointscore lender align --subjects FILE` first (or pass \
                     --unaligned to ask every party, which tells a party that does not hold a subject about it)",
                        alignment.display()
                    )));
                };
                let mut client = connect(&lender).await?;
                let prefix = request_id.clone().unwrap_or_else(now_id);
                let list = match (&subject, &subjects) {
                    (Some(s), _) => vec![(s.clone(), request_id.unwrap_or_else(|| format!("{prefix}-{s}")))],
                    (None, Some(path)) => {
                        subjects_from_csv(path)?.into_iter().map(|s| (s.clone(), format!("{prefix}-{s}"))).collect()
                    }
                    (None, None) => return Err(CliError::Usage("give --subject or --subjects".into())),
                };
                let model = client.plan()?.model().clone();
                let mut failures = 0;
                // Every request first, then every answer: the coordinator
                // evaluates the jobs that are ready together (one batch keeps
                // both cores busy), instead of one decision after another.
                let mut submitted = Vec::with_capacity(list.len());
                for (subject, request_id) in list {
                    let absent = match alignment.as_ref().map(|a| a.absent(&subject, model.parties())).transpose() {
                        Ok(Some(absent)) if absent.len() == model.parties().len() => {
                            Err(CliError::Usage("no party of the model holds this subject; no party was asked".into()))
                        }
                        Ok(absent) => Ok(absent.unwrap_or_default()),
                        Err(e) => Err(e.into()),
                    };
                    let start = std::time::Instant::now();
                    let accepted = match absent {
                        Ok(absent) => client
                            .submit_with(&subject, &request_id, &absent)
                            .await
                            .map(|a| (a, absent))
                            .map_err(CliError::from),
                        Err(e) => Err(e),
                    };
                    submitted.push((subject, request_id, start, accepted));
                }
                for (subject, request_id, start, accepted) in submitted {
                    let decided = match accepted {
                        Ok((accepted, absent)) => client
                            .complete(&accepted, &subject, &request_id, &absent, start)
                            .await
                            .map_err(CliError::from),
                        Err(e) => Err(e),
                    };
                    match decided {
                        Ok(d) => println!(
                            "{}",
                            json!({
                                "subject": subject,
                                "job_id": d.job_id,
                                "decision": decision_json(&model, &d.bundle),
                                "seconds": d.phases.total.as_secs_f64(),
                            })
                        ),
                        Err(e) => {
                            failures += 1;
                            println!("{}", json!({ "subject": subject, "error": e.to_string() }));
                        }
                    }
                }
                if failures > 0 {
                    return Err(CliError::Usage(format!("{failures} decision(s) failed")));
                }
                Ok(())
            })
        }
        LenderCommand::Show { lender, job } => runtime()?.block_on(async {
            let mut client = connect(&lender).await?;
            // The job and, if it is done, its result: one call.
            let (state, result) = client.job_and_result(&job).await?;
            // The ledger shows the subject only as this commitment; the
            // salt opens it (to an auditor, say).
            let commitment = jointscore_identity::LenderRequest {
                subject: state.subject.clone(),
                salt: state.salt.clone(),
                ..Default::default()
            }
            .subject_commitment();
            let mut out = json!({
                "job_id": state.job_id,
                "subject": state.subject,
                "salt": state.salt,
                "subject_commitment": commitment,
                "state": JobStatus::of(&state).name(),
                "timings": state.timings.map(|t| json!({
                    "collect_s": t.collect_us as f64 / 1e6,
                    "party_encrypt_s": t.party_encrypt_us as f64 / 1e6,
                    "verify_s": t.verify_us as f64 / 1e6,
                    "evaluate_s": t.evaluate_us as f64 / 1e6,
                    "pbs": t.pbs,
                })),
            });
            if JobStatus::of(&state) == JobStatus::Failed {
                out["code"] = json!(format!("{:?}", tonic_code(state.code)));
                out["reason"] = json!(state.reason);
            }
            if JobStatus::of(&state) == JobStatus::Done {
                // A job found by id: its absent list is the one it was asked
                // with, which the coordinator reports.
                client.check_signatures(&state)?;
                if let Some(result) = &result {
                    let bundle = client.decrypt(result)?;
                    out["decision"] = decision_json(client.plan()?.model(), &bundle);
                }
            }
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            Ok(())
        }),
    }
}

fn tonic_code(code: i32) -> jointscore_lender::Code {
    jointscore_lender::Code::from_i32(code)
}
