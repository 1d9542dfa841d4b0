//! `jointscore audit reconcile`: a party holds the coordinator's ledger
//! against its own log of what it contributed.

use std::path::{Path, PathBuf};

use clap::Args;
use jointscore_audit::{
    Entry, Head, PartyContribution, PartyLogCheck, PartyRecord, Reconciliation, Status, reconcile, verify_chain,
    verify_with_head,
};
use jointscore_identity::Consortium;
use jointscore_lender::fetch_ledger;
use jointscore_party::{GENESIS, LogEntry, verify_entries};
use serde_json::json;

use crate::CliError;
use crate::nodes::{Connection, runtime};

#[derive(Args)]
pub(crate) struct ReconcileArgs {
    /// The party's configuration file: its name, its store (read while the
    /// node serves), and by default its coordinator, consortium file and
    /// identity key.
    #[arg(long)]
    config: PathBuf,
    /// Read the ledger from this file — the whole ledger as `audit show`
    /// prints it (one entry per line), optionally followed by its signed
    /// head as `audit receipts` writes it — instead of fetching it.
    #[arg(long, conflicts_with_all = ["coordinator", "identity"])]
    ledger: Option<PathBuf>,
    /// The coordinator's URL (default: the party's `coordinator`).
    #[arg(long)]
    coordinator: Option<String>,
    /// The consortium file (default: the party's `consortium`): with one,
    /// the ledger is verified as `audit verify` does.
    #[arg(long)]
    consortium: Option<PathBuf>,
    /// The identity key to connect with under mutual TLS (default: the
    /// party's `identity`).
    #[arg(long)]
    identity: Option<PathBuf>,
    /// One JSON object instead of lines of text.
    #[arg(long)]
    json: bool,
}

/// Runs the reconciliation; exits 1 when anything does not reconcile, 2
/// when it could not be run (a bad file, an unreachable coordinator).
pub(crate) fn run(args: ReconcileArgs) -> ! {
    match reconciled(args) {
        Ok(true) => std::process::exit(0),
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2)
        }
    }
}

/// The party's log as a reconciliation takes it: whether its chain holds,
/// and its contributions (an entry past a break is taken as it reads).
pub(crate) fn party_record(party: &str, entries: &[LogEntry]) -> Result<PartyRecord, CliError> {
    let log = match verify_entries(entries) {
        Ok(n) => PartyLogCheck::Verified {
            entries: n as u64,
            head: entries.last().map_or(GENESIS, |e| e.hash.as_str()).to_string(),
        },
        Err(broken) => PartyLogCheck::Broken { seq: broken.seq, reason: broken.reason },
    };
    let verified = matches!(log, PartyLogCheck::Verified { .. });
    let mut contributions = Vec::new();
    for entry in entries {
        match entry.contribution() {
            Some(Ok(record)) => contributions.push(PartyContribution {
                seq: entry.seq,
                envelope: record.envelope,
                signature: record.signature,
            }),
            // A verified entry this version cannot read is a usage error;
            // in a broken log it is part of the break.
            Some(Err(e)) if verified => return Err(e.into()),
            _ => {}
        }
    }
    Ok(PartyRecord { party: party.to_string(), log, contributions })
}

/// Where the ledger came from and whether it verified.
struct Ledger {
    source: String,
    entries: Vec<Entry>,
    /// `None`: no consortium file to verify it with.
    verified: Option<Result<String, String>>,
}

fn reconciled(args: ReconcileArgs) -> Result<bool, CliError> {
    let (config, store) = crate::party_log::open(&args.config)?;
    let entries = store.log_entries(0)?;
    let record = party_record(&config.name, &entries)?;
    let consortium_path = args.consortium.clone().or_else(|| config.consortium.clone());
    let consortium =
        consortium_path.as_deref().map(Consortium::load).transpose().map_err(|e| CliError::Usage(e.to_string()))?;
    let ledger = match &args.ledger {
        Some(path) => {
            let (entries, head) = read_ledger(path)?;
            let verified = consortium.as_ref().map(|c| match &head {
                Some(head) => verify_with_head(&entries, head, c).map(|()| "chain, signatures, head".to_string()),
                None => verify_chain(&entries, c).map(|()| "chain, signatures (the file has no head)".to_string()),
            });
            Ledger {
                source: path.display().to_string(),
                entries,
                verified: verified.map(|r| r.map_err(|e| e.to_string())),
            }
        }
        None => {
            let connection = Connection {
                coordinator: args.coordinator.clone().unwrap_or_else(|| config.coordinator.clone()),
                consortium: consortium_path.clone(),
                identity: args.identity.clone().or_else(|| config.identity.clone()),
            };
            let (entries, head) = runtime()?.block_on(fetch_ledger(connection.target()?))?;
            let verified = consortium.as_ref().map(|c| {
                verify_with_head(&entries, &head, c)
                    .map(|()| "chain, signatures, head".to_string())
                    .map_err(|e| e.to_string())
            });
            Ledger { source: connection.coordinator, entries, verified }
        }
    };
    let outcome = reconcile(&record, &ledger.entries);
    let ledger_ok = !matches!(ledger.verified, Some(Err(_)));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report_json(&outcome, &ledger)).unwrap_or_default());
    } else {
        print_report(&outcome, &ledger);
    }
    Ok(ledger_ok && outcome.reconciled())
}

/// The ledger from a file: entries, one per line, and perhaps a head last.
fn read_ledger(path: &Path) -> Result<(Vec<Entry>, Option<Head>), CliError> {
    let text = std::fs::read_to_string(path).map_err(|source| CliError::Read { path: path.to_path_buf(), source })?;
    let mut lines: Vec<(usize, &str)> = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).collect();
    let head = match lines.last() {
        Some((_, last)) => serde_json::from_str::<Head>(last).ok(),
        None => None,
    };
    if head.is_some() {
        lines.pop();
    }
    let entries = lines
        .into_iter()
        .map(|(i, l)| {
            Entry::from_json(l).map_err(|e| CliError::Usage(format!("{} line {}: {e}", path.display(), i + 1)))
        })
        .collect::<Result<_, _>>()?;
    Ok((entries, head))
}

fn label(status: Status) -> &'static str {
    match status {
        Status::NotInPartyLog => "not in the party's log",
        other => other.as_str(),
    }
}

const SHOWN: [Status; 6] =
    [Status::Ok, Status::Missing, Status::Rewritten, Status::NotInPartyLog, Status::Unused, Status::Pending];

fn print_report(outcome: &Reconciliation, ledger: &Ledger) {
    match &outcome.party_log {
        PartyLogCheck::Verified { entries, head } => {
            println!("party `{}`: its log of {entries} entries verified, head {}", outcome.party, &head[..16])
        }
        PartyLogCheck::Broken { seq, reason } => {
            println!("party `{}`: its log does NOT verify: entry {seq}: {reason}", outcome.party)
        }
    }
    let check = match &ledger.verified {
        Some(Ok(what)) => format!("verified ({what})"),
        Some(Err(e)) => format!("does NOT verify: {e}"),
        None => "not verified (no consortium file)".into(),
    };
    println!("ledger: {} entries from {}, {check}", ledger.entries.len(), ledger.source);
    for f in &outcome.findings {
        let at = match (f.party_seq, f.ledger_seqs.as_slice()) {
            (Some(p), []) => format!("party log {p}"),
            (Some(p), seqs) => format!("party log {p}, ledger {}", join(seqs)),
            (None, seqs) => format!("ledger {}", join(seqs)),
        };
        let detail = if f.detail.is_empty() { String::new() } else { format!(": {}", f.detail) };
        println!("{:<22}  job {}  request {}  ({at}){detail}", label(f.status), f.job_id, f.request_id);
    }
    let counts: Vec<String> = SHOWN.iter().map(|&s| format!("{} {}", outcome.count(s), label(s))).collect();
    println!(
        "{} contributions in the party's log; {}",
        outcome.findings.iter().filter(|f| f.party_seq.is_some()).count(),
        counts.join(", ")
    );
    let ledger_ok = !matches!(ledger.verified, Some(Err(_)));
    println!("{}", if outcome.reconciled() && ledger_ok { "reconciled" } else { "does NOT reconcile" });
}

fn join(seqs: &[u64]) -> String {
    seqs.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

fn report_json(outcome: &Reconciliation, ledger: &Ledger) -> serde_json::Value {
    let summary: serde_json::Map<String, serde_json::Value> =
        SHOWN.iter().map(|&s| (s.as_str().to_string(), json!(outcome.count(s)))).collect();
    let ledger_ok = !matches!(ledger.verified, Some(Err(_)));
    json!({
        "party": outcome.party,
        "party_log": outcome.party_log,
        "ledger": {
            "source": ledger.source,
            "entries": ledger.entries.len(),
            "verified": ledger.verified.as_ref().map(Result::is_ok),
            "error": ledger.verified.as_ref().and_then(|v| v.as_ref().err()),
        },
        "findings": outcome.findings,
        "summary": summary,
        "reconciled": outcome.reconciled() && ledger_ok,
    })
}
