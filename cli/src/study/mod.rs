//! `jointscore study`: fit a scorecard on vertically split data through the
//! binning protocol (`jointscore-learn`), score the test rows through the
//! full encrypted path, and compare with a plaintext logistic regression.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use jointscore_circuits::fhe;
use jointscore_circuits::{Plan, PlanKind, reference};
use jointscore_learn::{Curve, FitOptions, LoadOptions, PartySplit, Scale, Study, Weighting};

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
    /// The label value that means good. When given, every label must be
    /// this or --bad; otherwise every present value but --bad is good.
    #[arg(long)]
    good: Option<String>,
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
    /// How feature weights are fitted: `joint` (logistic-regression weights
    /// fitted across the parties without revealing rows) or `woe-naive`
    /// (every weight 1, the naive-Bayes WoE scorecard).
    #[arg(long, value_enum, default_value_t = WeightsArg::Joint)]
    weights: WeightsArg,
    /// L2 strength of the joint weights.
    #[arg(long, default_value_t = 1.0)]
    l2: f64,
    /// Folder for the model file and the plots.
    #[arg(long, default_value = "study-out")]
    out: PathBuf,
}

/// `--weights`.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum WeightsArg {
    /// Logistic-regression weights fitted jointly.
    Joint,
    /// Every weight 1.
    WoeNaive,
}

/// Test decisions evaluated together in one batch.
const STUDY_BATCH: usize = 100;

/// Writes a file whole or not at all.
fn write_atomic(path: &Path, text: &str) -> Result<(), CliError> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| CliError::Read { path: path.into(), source })
}

pub(crate) fn study(args: StudyArgs) -> Result<(), CliError> {
    let options = LoadOptions {
        label: args.label,
        bad: args.bad,
        good: args.good,
        parties: args.parties.parse::<PartySplit>()?,
        test_fraction: args.test_fraction,
        seed: args.seed,
    };
    let study = Study::load(&args.data, &options)?;
    println!(
        "{} rows ({} train, {} test), {} features over {} parties",
        study.rows(),
        study.train().len(),
        study.test().len(),
        study.features().len(),
        study.parties().len()
    );
    let scale = Scale { pdo: args.pdo, base_score: args.base_score, base_odds: args.base_odds };
    let weighting = match args.weights {
        WeightsArg::Joint => Weighting::Joint,
        WeightsArg::WoeNaive => Weighting::WoeNaive,
    };
    let fit_options = FitOptions { scale, weighting, l2: args.l2 };
    let fitted = jointscore_learn::fit(&study, &fit_options, "study", &mut |i| {
        let dropped = i.dropped.map_or(String::new(), |f| format!("; weight not positive, dropping feature {f}"));
        println!("  weights iteration {}: {} features, surrogate loss {:.4}{dropped}", i.round, i.features, i.loss);
    })?;
    let how = match weighting {
        Weighting::Joint => "joint logistic-regression weights",
        Weighting::WoeNaive => "WoE weights fixed at 1",
    };
    println!(
        "fitted through the binning protocol with {how}; {} of {} features kept:",
        fitted.features.iter().filter(|f| f.selected).count(),
        fitted.features.len()
    );
    for f in &fitted.features {
        let weight = if f.selected { format!("  weight {:.3}", f.weight) } else { "  (dropped)".into() };
        println!("  {:<50} IV {:.3}{weight}", f.name, f.iv);
    }
    let model = fitted.model;

    // The test rows through the full encrypted path.
    let plan = Plan::new(&model, PlanKind::Pushdown)?;
    println!("model {}; pushdown plan: {} PBS per decision", &model.id()[..16], plan.stats().lookups);
    let keys = generate_keys()?;
    let bar = ProgressBar::new(study.test().len() as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} encrypted decisions")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut enc_scores = Vec::new();
    let mut agree = 0;
    // Batched as the coordinator batches waiting jobs: level by level over
    // many decisions, so both cores stay busy. A chunk bounds the memory the
    // decisions' intermediate ciphertexts take (a few MB each).
    for chunk in study.test().chunks(STUDY_BATCH) {
        let records = chunk.iter().map(|&i| study.record(&model, i)).collect::<Result<Vec<_>, _>>()?;
        let run = fhe::decide_batch_locally(&plan, &keys, &records)?;
        for (record, bundle) in records.iter().zip(run.bundles) {
            agree += usize::from(bundle == reference::evaluate(&model, record).restricted(&model));
            enc_scores.push(bundle.score.ok_or_else(|| CliError::Usage("the study model reveals no score".into()))?);
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();

    let bad: Vec<bool> = study.test().iter().map(|&i| study.labels()[i]).collect();
    let risk: Vec<f64> = enc_scores.iter().map(|&s| -(s as f64)).collect();
    let lr = jointscore_learn::reference_lr(&study);
    let test_auc = jointscore_learn::auc(&risk, &bad)?;
    let ref_auc = jointscore_learn::auc(&lr, &bad)?;
    let ks = jointscore_learn::ks(&risk, &bad)?;
    // Outputs are written only now, each whole: a failed study leaves none.
    std::fs::create_dir_all(&args.out).map_err(|source| CliError::Read { path: args.out.clone(), source })?;
    write_atomic(&args.out.join("model.toml"), &model.to_toml())?;
    let curves = [
        Curve { name: "encrypted scorecard (fitted)", colour: "#3366cc", scores: &risk },
        Curve { name: "reference LR", colour: "#cc3333", scores: &lr },
    ];
    write_atomic(&args.out.join("roc.svg"), &jointscore_learn::roc_svg(&curves, &bad))?;
    // The reference's P(bad) on the scorecard's points scale.
    let factor = scale.pdo / std::f64::consts::LN_2;
    let offset = scale.base_score - factor * scale.base_odds.ln();
    let ref_scores: Vec<i64> =
        lr.iter().map(|p| (offset + factor * ((1.0 - p) / p.max(1e-12)).max(1e-12).ln()).round() as i64).collect();
    let plot = jointscore_learn::distribution_svg(&enc_scores, &ref_scores, &bad);
    write_atomic(&args.out.join("scores.svg"), &plot)?;
    println!("written: {} (model), roc.svg, scores.svg", args.out.join("model.toml").display());
    println!("test AUC: {test_auc:.3}");
    println!("reference AUC: {ref_auc:.3}");
    println!("KS: {ks:.3}");
    println!("encrypted == reference: {agree}/{}", study.test().len());
    if agree != study.test().len() {
        return Err(CliError::Usage("some encrypted decisions differ from the reference".into()));
    }
    Ok(())
}
