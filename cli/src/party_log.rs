//! `jointscore party log show | verify`: the party's own record of what it
//! contributed and refused, read from its store (also while its node
//! serves).

use std::path::{Path, PathBuf};

use clap::Subcommand;
use jointscore_party::{GENESIS, LogEntry, LogKind, PartyConfig, RecordStore, verify_entries};
use serde_json::Value;

use crate::CliError;

#[derive(Subcommand)]
pub(crate) enum LogCommand {
    /// Print the log, one line per entry: its number, time (UTC), kind,
    /// and for contributions and refusals the lender's request id, the
    /// lender, the coordinator's job, the subject (in clear: the log is the
    /// party's own) and the outcome; for PSI sessions the requester, the
    /// session and what was opened, answered or refused.
    Show {
        /// The party's configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Start at this entry.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// The entries whole, one JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Check the hash chain from the first entry: exit status 0 with the
    /// number of entries and the last hash, 1 naming the first entry that
    /// was edited, removed or moved.
    Verify {
        /// The party's configuration file.
        #[arg(long)]
        config: PathBuf,
    },
}

/// The party's store, opened for reading.
pub(crate) fn open(config: &Path) -> Result<(PartyConfig, RecordStore), CliError> {
    let config = PartyConfig::load(config)?;
    let store = RecordStore::open_read_only(&config.store)?;
    Ok((config, store))
}

pub(crate) fn log(cmd: LogCommand) -> Result<(), CliError> {
    match cmd {
        LogCommand::Show { config, from, json } => {
            let (config, store) = open(&config)?;
            let entries = store.log_entries(from)?;
            if json {
                for entry in &entries {
                    println!("{}", serde_json::to_string(entry).map_err(|e| CliError::Json(e.to_string()))?);
                }
            } else if entries.is_empty() {
                let after = if from > 0 { format!(" from entry {from}") } else { String::new() };
                println!("the log of party `{}` holds no entries{after}", config.name);
            } else {
                for entry in &entries {
                    println!("{}", line(entry));
                }
            }
            Ok(())
        }
        LogCommand::Verify { config } => {
            let (config, store) = open(&config)?;
            let entries = store.log_entries(0)?;
            let n =
                verify_entries(&entries).map_err(|e| CliError::Usage(format!("{}: {e}", config.store.display())))?;
            let head = entries.last().map_or(GENESIS, |e| e.hash.as_str());
            println!("{n} entries verified, head {head}");
            Ok(())
        }
    }
}

/// One entry on one line.
fn line(entry: &LogEntry) -> String {
    let body = &entry.body;
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let what = match entry.kind {
        LogKind::Contribution => {
            let request = &body["request"];
            let envelope = &body["envelope"];
            let digest = envelope["ciphertext_sha256"].as_str().unwrap_or_default();
            let signed = if body["signature"].as_str().is_some_and(|s| !s.is_empty()) { "signed" } else { "unsigned" };
            format!(
                "contribution  request {}  lender {}  job {}  subject {}  contributed, {signed}, ciphertexts {}",
                text(&request["request_id"]),
                text(&request["lender"]),
                text(&envelope["job_id"]),
                text(&request["subject"]),
                &digest[..digest.len().min(16)]
            )
        }
        LogKind::Refusal => format!(
            "refusal       request {}  lender {}  job {}  subject {}  refused: {}",
            text(&body["request_id"]),
            text(&body["lender"]),
            text(&body["job_id"]),
            text(&body["subject"]),
            text(&body["reason"])
        ),
        LogKind::Fit => format!(
            "fit           fit {}  lender {}  spec {}  rows {}  features {}  gram {}  {}",
            text(&body["fit_id"]),
            text(&body["lender"]),
            text(&body["spec_id"]).chars().take(16).collect::<String>(),
            text(&body["rows"]),
            text(&body["features"]),
            text(&body["gram"]),
            text(&body["outcome"])
        ),
        LogKind::Psi => {
            // An alignment or asset-check session: its open, its queries,
            // their refusals (party/src/psi.rs writes these fields).
            let mut outcome = text(&body["event"]);
            for (field, unit) in [("purpose", ""), ("set_len", " ids"), ("points", " points"), ("left", " left today")]
            {
                if !body[field].is_null() {
                    outcome.push_str(&format!(", {}{unit}", text(&body[field])));
                }
            }
            if !body["reason"].is_null() {
                outcome.push_str(&format!(": {}", text(&body["reason"])));
            }
            format!(
                "psi           requester {}  session {}  {outcome}",
                text(&body["requester"]),
                text(&body["session"])
            )
        }
    };
    format!("{:>5}  {}  {what}", entry.seq, utc(entry.time_ms))
}

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn utc(ms: u64) -> String {
    let rest = ms % 86_400_000;
    let (h, m, s, milli) = (rest / 3_600_000, rest / 60_000 % 60, rest / 1000 % 60, rest % 1000);
    format!("{}T{h:02}:{m:02}:{s:02}.{milli:03}Z", jointscore_party::utc_date(ms / 86_400_000))
}
