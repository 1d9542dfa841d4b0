//! `jointscore lender align | check-asset | register-asset`: private set
//! intersection from the command line.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use jointscore_identity::NodeKey;
use jointscore_lender::{AlignmentStore, PsiRequester};
use jointscore_party::{PartyConfig, RecordStore};
use jointscore_psi::AssetId;
use serde_json::json;

use crate::nodes::{Connection, model_source, runtime, subjects_from_csv};
use crate::{CliError, spinner};

/// Where the lender keeps what alignment taught it, unless told otherwise.
pub(crate) const DEFAULT_ALIGNMENT: &str = "lender-alignment.sqlite";

#[derive(Args)]
pub(crate) struct AlignArgs {
    #[command(flatten)]
    connection: Connection,
    /// The lender's name, as the parties see the requester: its consortium
    /// member name. With --identity every open is signed as it (parties
    /// with a consortium file answer nothing else).
    #[arg(long = "as", default_value = "lender")]
    name: String,
    /// A CSV file whose first column (or `subject` column) lists the
    /// lender's subjects (applicants, customers).
    #[arg(long)]
    subjects: PathBuf,
    /// A party to align with (repeatable); default: every party of the model.
    #[arg(long)]
    party: Vec<String>,
    /// Model file (TOML), or `cross_border_seller`: whose parties to align with.
    #[arg(long, default_value = crate::BUILTIN)]
    model: String,
    /// The lender's alignment store (SQLite; created owner-only).
    #[arg(long, default_value = DEFAULT_ALIGNMENT)]
    alignment: PathBuf,
}

#[derive(Args)]
pub(crate) struct CheckAssetArgs {
    #[command(flatten)]
    connection: Connection,
    /// This lender's consortium name (listed in the coordinator's
    /// `lenders`); with --identity the open is signed as it.
    #[arg(long = "as")]
    name: String,
    /// An asset as KIND:ISSUER:NUMBER, e.g. `invoice:ACME Trading:INV-0001`
    /// (repeatable).
    #[arg(long, required_unless_present = "file")]
    id: Vec<String>,
    /// A CSV file of assets: an `asset` column (KIND:ISSUER:NUMBER), or
    /// `kind`, `issuer` and `number` columns.
    #[arg(long, conflicts_with = "id")]
    file: Option<PathBuf>,
    /// Also print how many other lenders financed each asset (the protocol
    /// reveals the count to the requester either way).
    #[arg(long)]
    count: bool,
}

#[derive(Args)]
pub(crate) struct RegisterAssetArgs {
    /// The configuration of this lender's party node, whose store holds the
    /// registry (`asset_registry = true`).
    #[arg(long)]
    config: PathBuf,
    /// An asset as KIND:ISSUER:NUMBER (repeatable).
    #[arg(long, required_unless_present = "file")]
    id: Vec<String>,
    /// A CSV file of assets (as for check-asset), optionally with a
    /// `reference` column (the lender's own loan or contract number).
    #[arg(long, conflicts_with = "id")]
    file: Option<PathBuf>,
    /// The lender's reference for assets given with --id.
    #[arg(long, default_value = "")]
    reference: String,
}

pub(crate) fn align(args: AlignArgs) -> Result<(), CliError> {
    let subjects = subjects_from_csv(&args.subjects)?;
    let parties = if args.party.is_empty() {
        jointscore_circuits::Model::from_toml(&model_source(&args.model)?)?.parties().to_vec()
    } else {
        args.party.clone()
    };
    let store = AlignmentStore::open(&args.alignment)?;
    runtime()?.block_on(async {
        let mut requester = requester(&args.connection, &args.name).await?;
        for party in &parties {
            let bar = spinner(&format!("aligning {} subjects with `{party}` (ECDH PSI)", subjects.len()));
            let aligned = requester.align(party, &subjects).await;
            bar.finish_and_clear();
            let aligned = aligned?;
            store.record(party, &subjects, &aligned.held)?;
            println!(
                "{}",
                json!({
                    "party": party,
                    "asked": subjects.len(),
                    "held": aligned.held.iter().filter(|&&h| h).count(),
                    "party_holds": aligned.party_size,
                    "seconds": aligned.elapsed.as_secs_f64(),
                })
            );
        }
        eprintln!("alignment recorded in {}", args.alignment.display());
        Ok(())
    })
}

pub(crate) fn check_asset(args: CheckAssetArgs) -> Result<(), CliError> {
    let assets: Vec<AssetId> = match &args.file {
        Some(path) => assets_from_csv(path)?.into_iter().map(|(a, _)| a).collect(),
        None => args.id.iter().map(|s| parse_asset(s)).collect::<Result<_, _>>()?,
    };
    runtime()?.block_on(async {
        let mut requester = requester(&args.connection, &args.name).await?;
        let bar = spinner(&format!("checking {} asset(s) against the other lenders' registries", assets.len()));
        let checked = requester.check_assets(&assets).await;
        bar.finish_and_clear();
        let checked = checked?;
        for (asset, &n) in assets.iter().zip(&checked.financed_by) {
            let mut line = json!({ "asset": asset.to_string(), "financed": n > 0 });
            if args.count {
                line["financed_by"] = json!(n);
            }
            println!("{line}");
        }
        if checked.lenders == 1 {
            eprintln!(
                "note: the consortium has one other lender, so \"financed elsewhere\" names it, and its registry \
                 size is revealed"
            );
        }
        eprintln!(
            "{} asset(s) checked against {} lender(s) ({} registered assets in all) in {:.2} s",
            assets.len(),
            checked.lenders,
            checked.registry_size,
            checked.elapsed.as_secs_f64()
        );
        Ok(())
    })
}

/// A PSI requester asking as `name`. With --identity (a consortium
/// member's key) every open is signed with it under `name`: a party with a
/// consortium file opens a session only for the member that signed, so a
/// `name` that is not the key's member is refused there (and, under mutual
/// TLS, by the coordinator).
async fn requester(connection: &Connection, name: &str) -> Result<PsiRequester, CliError> {
    let mut requester = PsiRequester::connect(connection.target()?, name).await?;
    if let (Some(consortium), Some(path)) = (connection.consortium()?, &connection.identity) {
        let key = NodeKey::read(path).map_err(|e| CliError::Usage(e.to_string()))?;
        if !consortium.members.iter().any(|m| m.public_key == key.public_hex()) {
            return Err(CliError::Usage(format!(
                "the identity key {} is not a member of the consortium",
                path.display()
            )));
        }
        requester.sign_as(name, Arc::new(key));
    }
    Ok(requester)
}

pub(crate) fn register_asset(args: RegisterAssetArgs) -> Result<(), CliError> {
    let config = PartyConfig::load(&args.config)?;
    if !config.asset_registry {
        return Err(CliError::Usage(format!(
            "{}: `asset_registry` is off, so no check would ever see this registry; set `asset_registry = true`",
            args.config.display()
        )));
    }
    let assets = match &args.file {
        Some(path) => assets_from_csv(path)?,
        None => {
            args.id.iter().map(|s| Ok((parse_asset(s)?, args.reference.clone()))).collect::<Result<_, CliError>>()?
        }
    };
    let store = RecordStore::open(&config.store)?;
    let report = store.register_assets(&assets)?;
    println!(
        "registry of `{}`: {} asset(s) added, {} already registered; {} held in {}",
        config.name,
        report.added,
        report.already,
        store.asset_count()?,
        config.store.display()
    );
    Ok(())
}

fn parse_asset(s: &str) -> Result<AssetId, CliError> {
    AssetId::parse(s).map_err(|e| CliError::Usage(format!("`{s}`: {e}")))
}

/// Assets (and references) from a CSV file: all rows valid, or an error
/// naming the first bad line.
fn assets_from_csv(path: &Path) -> Result<Vec<(AssetId, String)>, CliError> {
    let at = |line: usize, e: &dyn std::fmt::Display| CliError::Usage(format!("{} line {line}: {e}", path.display()));
    let mut reader =
        csv::Reader::from_path(path).map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
    let headers = reader.headers().map_err(|e| at(1, &e))?.clone();
    let column = |name: &str| headers.iter().position(|h| h.trim() == name);
    let reference = column("reference");
    let layout = match (column("asset"), column("kind"), column("issuer"), column("number")) {
        (Some(a), ..) => Err(a),
        (None, Some(k), Some(i), Some(n)) => Ok((k, i, n)),
        _ => {
            return Err(CliError::Usage(format!(
                "{}: give an `asset` column (KIND:ISSUER:NUMBER) or `kind`, `issuer` and `number` columns",
                path.display()
            )));
        }
    };
    let mut out = Vec::new();
    for (i, row) in reader.records().enumerate() {
        let line = i + 2;
        let row = row.map_err(|e| at(line, &e))?;
        let get = |c: usize| row.get(c).unwrap_or("");
        let asset = match layout {
            Err(a) => AssetId::parse(get(a)),
            Ok((k, i, n)) => AssetId::new(get(k), get(i), get(n)),
        }
        .map_err(|e| at(line, &e))?;
        out.push((asset, reference.map(|c| get(c).to_string()).unwrap_or_default()));
    }
    Ok(out)
}
