//! `jointscore study`: fit a scorecard on vertically split data through the
//! binning protocol, score the test rows through the full encrypted path,
//! and compare with a plaintext logistic regression.

mod data;
mod eval;
mod fit;

use std::path::{Path, PathBuf};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use jointscore_circuits::fhe;
use jointscore_circuits::{Model, Plan, PlanKind, Record, reference};
use serde_json::{Map, Value};

use crate::{CliError, generate_keys};

/// Options of `study`.
#[derive(Args)]
pub(crate) struct StudyArgs {
    /// The CSV file: a header row, one row per subject.
    #[arg(long)]
    data: PathBuf,
    /// The label column.
    #[arg(long)]
    label: String,
    /// The label value that means bad (defaulted).
    #[arg(long)]
    bad: String,
    /// Which party holds which columns: `platform=colA,colB;logistics=colC`
    /// (`col:num` / `col:cat` declare a type); other columns stay with the
    /// lender, which also holds the label.
    #[arg(long, default_value = "")]
    parties: String,
    /// Share of rows held out for testing (stratified).
    #[arg(long, default_value_t = 0.3)]
    test_fraction: f64,
    /// Seed of the split.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Points to double the odds.
    #[arg(long, default_value_t = 20.0)]
    pdo: f64,
    /// Score at the base odds.
    #[arg(long, default_value_t = 600.0)]
    base_score: f64,
    /// Base odds (good : bad).
    #[arg(long, default_value_t = 50.0)]
    base_odds: f64,
    /// Folder for the model file and the plots.
    #[arg(long, default_value = "study-out")]
    out: PathBuf,
}

/// Writes a file whole or not at all.
fn write_atomic(path: &Path, text: &str) -> Result<(), CliError> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| CliError::Read { path: path.into(), source })
}

/// The inputs of row `i` for the model's features, as JSON.
fn inputs(study: &data::Study, model: &Model, i: usize) -> Value {
    let mut map = Map::new();
    for f in study.features.iter().filter(|f| model.feature_index(&f.name).is_some()) {
        let v = match &f.column {
            data::Column::Numeric { values, .. } => values[i].map_or(Value::Null, Value::from),
            data::Column::Categorical { categories, values } => {
                values[i].map_or(Value::Null, |c| Value::from(categories[c].clone()))
            }
        };
        map.insert(f.name.clone(), v);
    }
    Value::Object(map)
}

pub(crate) fn study(args: StudyArgs) -> Result<(), CliError> {
    let study = data::load(&args.data, &args.label, &args.bad, &args.parties, args.test_fraction, args.seed)?;
    println!(
        "{} rows ({} train, {} test), {} features over {} parties",
        study.labels.len(),
        study.train.len(),
        study.test.len(),
        study.features.len(),
        study.parties.len()
    );
    let scale = fit::Scale { pdo: args.pdo, base_score: args.base_score, base_odds: args.base_odds };
    let fitted = fit::fit(&study, &scale, "study")?;
    let selected: Vec<&fit::Fitted> = fitted.features.iter().filter(|f| f.selected).collect();
    println!(
        "fitted through the binning protocol; {} of {} features kept by IV:",
        selected.len(),
        fitted.features.len()
    );
    for f in &fitted.features {
        println!("  {:<50} IV {:.3}{}", f.name, f.iv, if f.selected { "" } else { "  (dropped)" });
    }

    // Cutoffs and bands from training-score quantiles, scored by the
    // reference of a provisional model with the same points.
    let provisional = format!(
        "{}[cutoffs]\napprove = 0\nrefer = 0\n\n[[bands]]\nname = \"all\"\nrate_tier = \"-\"\n\n[reasons]\ncount = 0\n",
        fitted.toml
    );
    let provisional = Model::from_toml(&provisional)?;
    let train_scores = study
        .train
        .iter()
        .map(|&i| {
            Ok(reference::evaluate(&provisional, &Record::from_json(&provisional, &inputs(&study, &provisional, i))?)
                .score
                .unwrap_or(0))
        })
        .collect::<Result<Vec<i64>, CliError>>()?;
    let toml = format!("{}{}", fitted.toml, fit::decision_section(&train_scores));
    let model = Model::from_toml(&toml)?;

    // The test rows through the full encrypted path.
    let plan = Plan::new(&model, PlanKind::Pushdown)?;
    println!("model {}; pushdown plan: {} PBS per decision", &model.id()[..16], plan.stats().lookups);
    let keys = generate_keys()?;
    let bar = ProgressBar::new(study.test.len() as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} encrypted decisions")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut enc_scores = Vec::new();
    let mut agree = 0;
    for &i in &study.test {
        let record = Record::from_json(&model, &inputs(&study, &model, i))?;
        let run = fhe::decide_locally(&plan, &keys, &record)?;
        agree += usize::from(run.bundle == reference::evaluate(&model, &record).restricted(&model));
        enc_scores.push(run.bundle.score.ok_or_else(|| CliError::Usage("the study model reveals no score".into()))?);
        bar.inc(1);
    }
    bar.finish_and_clear();

    let bad: Vec<bool> = study.test.iter().map(|&i| study.labels[i]).collect();
    let risk: Vec<f64> = enc_scores.iter().map(|&s| -(s as f64)).collect();
    let lr = eval::reference_lr(&study);
    let test_auc = eval::auc(&risk, &bad);
    let ref_auc = eval::auc(&lr, &bad);
    let ks = eval::ks(&risk, &bad);
    // Outputs are written only now, each whole: a failed study leaves none.
    std::fs::create_dir_all(&args.out).map_err(|source| CliError::Read { path: args.out.clone(), source })?;
    write_atomic(&args.out.join("model.toml"), &toml)?;
    write_atomic(
        &args.out.join("roc.svg"),
        &eval::roc_svg(&[("encrypted scorecard", "#3366cc", &risk), ("reference LR", "#cc3333", &lr)], &bad),
    )?;
    write_atomic(&args.out.join("scores.svg"), &eval::distribution_svg(&enc_scores, &bad))?;
    println!("written: {} (model), roc.svg, scores.svg", args.out.join("model.toml").display());
    println!("test AUC: {test_auc:.3}");
    println!("reference AUC: {ref_auc:.3}");
    println!("KS: {ks:.3}");
    println!("encrypted == reference: {agree}/{}", study.test.len());
    if agree != study.test.len() {
        return Err(CliError::Usage("some encrypted decisions differ from the reference".into()));
    }
    Ok(())
}
