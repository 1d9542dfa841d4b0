//! `jointscore lender fit`: fit a scorecard jointly with the parties of a
//! spec, over the coordinator (docs/learn.md, "Over the services").

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use jointscore_identity::NodeKey;
use jointscore_learn::{FitSpec, read_labels};
use jointscore_lender::{FitEvent, FitIdentity};

use crate::CliError;
use crate::nodes::{Connection, runtime};

#[derive(Args)]
pub(crate) struct FitArgs {
    /// The fit spec (TOML): the parties and their features, the scale, L2
    /// and cutoffs.
    #[arg(long)]
    spec: PathBuf,
    /// The training labels: a CSV with `subject` and `label` columns,
    /// `label` 1 for bad and 0 for good.
    #[arg(long, required_unless_present = "check")]
    labels: Option<PathBuf>,
    /// Where to write the model, whole and only once the fit has ended.
    #[arg(long, default_value = "model.toml")]
    out: PathBuf,
    /// Only check the spec and print its id (what party operators add to
    /// `approved_fits`).
    #[arg(long)]
    check: bool,
    /// This lender's member name in the consortium (with --identity).
    #[arg(long, default_value = "lender")]
    name: String,
    #[command(flatten)]
    connection: Connection,
}

fn read(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|source| CliError::Read { path: path.into(), source })
}

pub(crate) fn fit(args: FitArgs) -> Result<(), CliError> {
    let text = read(&args.spec)?;
    let spec = FitSpec::from_toml(&text).map_err(|e| CliError::Usage(format!("{}: {e}", args.spec.display())))?;
    if args.check {
        println!("fit spec `{}` is valid", spec.name);
        println!("id: {}", spec.id());
        for p in &spec.parties {
            let features: Vec<&str> = p.features.iter().map(|f| f.name.as_str()).collect();
            println!("  {}: {}", p.name, features.join(", "));
        }
        return Ok(());
    }
    let Some(labels_path) = args.labels else {
        return Err(CliError::Usage("--labels is required to fit".into()));
    };
    let file =
        std::fs::File::open(&labels_path).map_err(|source| CliError::Read { path: labels_path.clone(), source })?;
    let labels = read_labels(file).map_err(|e| CliError::Usage(format!("{}: {e}", labels_path.display())))?;
    let identity = match (&args.connection.identity, args.connection.consortium()?) {
        (Some(key), Some(consortium)) => Some(FitIdentity {
            name: args.name.clone(),
            key: Arc::new(NodeKey::read(key).map_err(|e| CliError::Usage(e.to_string()))?),
            consortium,
        }),
        _ => None,
    };
    let target = args.connection.target()?;
    println!(
        "fit spec {} ({}): {} training rows, {} bad",
        spec.id(),
        spec.name,
        labels.len(),
        labels.iter().filter(|l| l.1).count()
    );
    let outcome = runtime()?.block_on(jointscore_lender::fit(
        target,
        &text,
        &labels,
        identity.as_ref(),
        &mut |event| match event {
            FitEvent::Opened { rows, parties } => {
                println!("binning: {rows} encrypted labels sent to {parties} parties");
            }
            FitEvent::Binned { party, features } => println!("binning: {party}: {features} features binned"),
            FitEvent::Selected { features } => {
                for f in features {
                    println!("selection: {} IV {:.4}{}", f.name, f.iv, if f.selected { "" } else { " (dropped)" });
                }
            }
            FitEvent::Gram { participants } => println!("gram: matrix assembled from {participants} participants"),
            FitEvent::Iteration(i) => println!(
                "weights: iteration {}: {} features, loss {:.6}{}",
                i.round,
                i.features,
                i.loss,
                i.dropped.map_or(String::new(), |d| format!(", dropping feature {d} (weight not positive)"))
            ),
        },
    ))?;
    let toml = outcome.model.to_toml();
    let tmp = args.out.with_extension("partial");
    std::fs::write(&tmp, &toml)
        .and_then(|()| std::fs::rename(&tmp, &args.out))
        .map_err(|source| CliError::Read { path: args.out.clone(), source })?;
    for f in outcome.features.iter().filter(|f| f.selected) {
        println!("model: {} weight {:.4}", f.name, f.weight);
    }
    println!("model {} written to {}", outcome.model.id(), args.out.display());
    Ok(())
}
