//! A data owner's own service with the jointscore party node embedded in it.
//!
//! ```sh
//! # Demo: starts a coordinator on loopback too (only because there is none),
//! # imports examples/network/platform.csv, shows a lender aligning with the
//! # node, serves for 3 s.
//! cargo run --release --example party_operator
//! # Your node: a party configuration file (see examples/network/*.toml),
//! # optionally a CSV to import first; serves until Ctrl-C (or SECONDS).
//! cargo run --release --example party_operator -- CONFIG.toml [RECORDS.csv] [--for SECONDS]
//! ```
//!
//! The node answers the coordinator's contribution requests for the models
//! its configuration approves, from the records in its own SQLite store;
//! nothing leaves it unencrypted. Everything else in this process is the
//! operator's: here, one task of its own that reports the store's size.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jointscore_party::{PartyConfig, PartyNode, RecordStore};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let serve_for = match args.iter().position(|a| a == "--for") {
        Some(i) => {
            let seconds: u64 = args.get(i + 1).ok_or("--for needs SECONDS")?.parse()?;
            args.drain(i..=i + 1);
            Some(Duration::from_secs(seconds))
        }
        None => None,
    };
    match args.as_slice() {
        [] => demo(serve_for.unwrap_or(Duration::from_secs(3))).await,
        [config] => operate(&PartyConfig::load(config.as_ref())?, None, serve_for).await,
        [config, csv] => operate(&PartyConfig::load(config.as_ref())?, Some(csv.into()), serve_for).await,
        _ => Err("usage: party_operator [CONFIG.toml [RECORDS.csv]] [--for SECONDS]".into()),
    }
}

/// What an operator runs: import, serve beside its own tasks, stop cleanly.
async fn operate(config: &PartyConfig, csv: Option<PathBuf>, serve_for: Option<Duration>) -> Result<(), Error> {
    let (node, reporter) = start(config, csv).await?;
    // Until Ctrl-C, or for a while.
    match serve_for {
        Some(d) => tokio::time::sleep(d).await,
        None => tokio::signal::ctrl_c().await?,
    }
    reporter.abort();
    node.stop().await?;
    println!("party `{}` stopped", config.name);
    Ok(())
}

/// Imports `csv` if given, starts the node, and starts the operator's own
/// task beside it.
async fn start(config: &PartyConfig, csv: Option<PathBuf>) -> Result<(PartyNode, JoinHandle<()>), Error> {
    // The node's records live in its own SQLite store (owner-only file).
    let store = Arc::new(RecordStore::open(&config.store)?);
    if let Some(csv) = csv {
        // One transaction: a bad row stores nothing and names its line.
        let report = store.import_file(&csv)?;
        println!("imported {}: {} added, {} replaced", csv.display(), report.added, report.replaced);
    }
    // Serve on the configured address; the node registers it with the
    // coordinator (retrying for 10 s while the coordinator is not up yet)
    // before `start` returns.
    let listener = TcpListener::bind(&config.listen).await?;
    let node = PartyNode::start(config, store.clone(), listener, Duration::from_secs(10)).await?;
    println!("party `{}` serving on {}, registered with {}", config.name, node.address(), config.coordinator);

    // The operator's own work shares the runtime with the node.
    let reporter = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            match store.len() {
                Ok(n) => println!("operator: {n} subjects held"),
                Err(e) => eprintln!("operator: cannot read the store: {e}"),
            }
        }
    });
    Ok((node, reporter))
}

/// The demo: a throwaway coordinator, a configuration written the way an
/// operator writes one, and a lender's alignment to show the node answers.
async fn demo(serve_for: Duration) -> Result<(), Error> {
    use jointscore_coordinator::{CoordinatorConfig, CoordinatorNode, SqliteStore};

    let dir = tempfile::tempdir()?;
    let config = CoordinatorConfig {
        listen: "127.0.0.1:0".into(),
        ..CoordinatorConfig::with_store(dir.path().join("coordinator.sqlite"))
    };
    let coordinator_store = Arc::new(SqliteStore::open(&config.store)?);
    let coordinator =
        CoordinatorNode::start(config, coordinator_store, TcpListener::bind("127.0.0.1:0").await?).await?;

    // The party's configuration file. A real one names its identity key and
    // the consortium file (and the coordinator is https): then it checks
    // every lender's signature itself. This demonstration on loopback has
    // no consortium, so it must say that it trusts the coordinator.
    let model = jointscore_circuits::Model::cross_border_seller();
    let path = dir.path().join("platform.toml");
    std::fs::write(
        &path,
        format!(
            "name = \"platform\"\nlisten = \"127.0.0.1:0\"\ncoordinator = \"{}\"\nstore = \"platform.sqlite\"\n\
             approved_models = [\"{}\"]\ntrust_coordinator = true\n",
            coordinator.url(),
            model.id()
        ),
    )?;
    let config = PartyConfig::load(&path)?;
    let csv = std::fs::canonicalize(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/network/platform.csv"))?;

    let (node, reporter) = start(&config, Some(csv)).await?;

    // A lender aligns three applicants with this party by PSI through the
    // coordinator: the party learns only that three were asked about, the
    // lender only which of them it holds.
    let mut lender = jointscore_lender::PsiRequester::connect(coordinator.url(), "lender").await?;
    let applicants = vec!["seller-a".to_string(), "seller-b".to_string(), "seller-zz".to_string()];
    let aligned = lender.align("platform", &applicants).await?;
    for (subject, held) in applicants.iter().zip(&aligned.held) {
        println!("lender: platform {} {subject}", if *held { "holds" } else { "does not hold" });
    }
    tokio::time::sleep(serve_for).await;
    reporter.abort();
    node.stop().await?;
    println!("party `{}` stopped", config.name);
    coordinator.stop().await?;
    Ok(())
}
