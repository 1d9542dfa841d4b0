//! `jointscore quickstart`: the whole system on loopback, deciding for
//! sample sellers and checking every decision against the plaintext
//! reference.

use std::sync::Arc;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use jointscore_audit::EntryKind;
use jointscore_circuits::{Plan, PlanKind};
use jointscore_lender::{
    AlignmentStore, DEFAULT_WINDOW, LenderKeys, LoanResult, MonitorBook, Schedule, StatsRequester, run_round,
};
use jointscore_monitor::{Day, MonitorPlan, SELLER_WATCH, Spec};
use jointscore_psi::AssetId;
use jointscore_stats::StatsSpec;
use jointscore_testkit::cluster::{Cluster, ClusterOptions, party_view};
use jointscore_testkit::history::expected_alerts;
use serde_json::Value;

use jointscore_lender::DEFAULT_WAIT;

use crate::{CliError, spinner};

#[derive(Args)]
pub(crate) struct QuickstartArgs {
    /// Number of sample sellers.
    #[arg(long, default_value_t = 10)]
    sellers: usize,
    /// Seed of the sample book.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Strict mode: every party proves, with a zero-knowledge proof bound to
    /// the request, that its ciphertexts are well formed, and the
    /// coordinator verifies before evaluating (seconds more per decision).
    #[arg(long)]
    strict: bool,
}

pub(crate) fn quickstart(args: QuickstartArgs) -> Result<(), CliError> {
    if args.sellers == 0 {
        return Err(CliError::Usage("--sellers must be at least 1".into()));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Usage(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(run(args))
}

/// The quickstart lender's name ([`jointscore_testkit::cluster::LENDER`]); with the
/// bank, the consortium's lenders.
const LENDER: &str = jointscore_testkit::cluster::LENDER;

/// The consortium statistic the quickstart runs (also in `examples/`).
const BOOK_HEALTH: &str = include_str!("../../examples/network/stats.toml");

async fn run(args: QuickstartArgs) -> Result<(), CliError> {
    let spec = StatsSpec::from_toml(BOOK_HEALTH).map_err(|e| CliError::Usage(e.to_string()))?;
    let watch = MonitorPlan::new(&Spec::from_toml(SELLER_WATCH)?)?;
    let today = today();
    let options = ClusterOptions {
        sellers: args.sellers,
        seed: args.seed,
        approved_stats: vec![spec.id()],
        approved_monitors: vec![watch.id().to_string()],
        history_until: Some(today),
        lenders: vec!["bank".into(), LENDER.into()],
        registries: vec!["bank".into()],
        tls: true,
        proof_blocks: args.strict.then_some(jointscore_circuits::proof::DEFAULT_PROOF_BLOCKS),
        ..ClusterOptions::default()
    };
    let bar = spinner("starting the coordinator and three party nodes on loopback, over mutual TLS");
    let cluster = Cluster::start(&options).await;
    bar.finish_and_clear();
    let mut cluster = cluster?;
    let m = cluster.model.clone();
    println!("coordinator  {}  (SQLite store in {})", cluster.coordinator_url(), cluster.dir().display());
    if let Some(c) = cluster.consortium.as_ref().filter(|c| c.mtls) {
        println!(
            "consortium   {} members; every connection is mutual TLS, each node proving the identity key its \
             certificate lists",
            c.members.len()
        );
    }
    if let Some(p) = cluster.consortium.as_ref().and_then(|c| c.proofs.as_ref()) {
        println!(
            "strict mode  every contribution carries zero-knowledge proofs, bound to its request, checked against \
             the consortium's CRS (sha256 {}…)",
            &p.crs_sha256[..16]
        );
    }
    for p in &cluster.parties {
        println!(
            "party        {:<10} {} sample sellers ({} days of dated flows), approves model {} and monitor spec {}",
            p.name,
            p.store.len()?,
            jointscore_testkit::history::FLOW_DAYS,
            &m.id()[..16],
            &watch.id()[..16]
        );
    }
    let plan = Plan::new(&m, PlanKind::Pushdown)?;
    println!("model        {} ({} PBS per decision, pushdown plan)", m.name(), plan.stats().lookups);

    let bar = spinner("lender: generating a TFHE key set (a few seconds)");
    let keys = tokio::task::spawn_blocking(LenderKeys::generate)
        .await
        .map_err(|e| CliError::Usage(format!("key generation task failed: {e}")))?;
    bar.finish_and_clear();
    let keys = Arc::new(keys?);
    let mut lender = cluster.lender(keys.clone(), PlanKind::Pushdown).await?;
    let bar = spinner(&format!(
        "lender: registering key set {} ({:.0} MB compressed evaluation key; the coordinator decompresses it)",
        keys.id(),
        keys.evaluation.len() as f64 / 1e6
    ));
    let registered = lender.register(LENDER).await;
    bar.finish_and_clear();
    println!("lender       key set {} registered; the secret key stays with the lender", registered?);

    let absent = align(&cluster).await?;

    let bar = ProgressBar::new(cluster.book.len() as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} decisions over gRPC {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut rows = Vec::new();
    let mut agree = 0;
    for (i, (subject, _)) in cluster.book.iter().enumerate() {
        let absent = absent.absent(subject, m.parties())?;
        let decision = lender.decide_with(subject, &format!("quickstart-{}-{i}", keys.id()), &absent).await?;
        agree += usize::from(decision.bundle == cluster.reference(subject)?);
        rows.push((subject.clone(), decision));
        bar.inc(1);
    }
    bar.finish_and_clear();

    println!(
        "\n{:<12} {:<9} {:<5} {:<12} {:>9} {:>8}  reasons",
        "seller", "decision", "band", "rate tier", "line k$", "latency"
    );
    for (subject, d) in &rows {
        let shown = d.bundle.describe(&m);
        let text = |k: &str| shown.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
        let reasons: Vec<String> = shown
            .get("reasons")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default();
        println!(
            "{:<12} {:<9} {:<5} {:<12} {:>9} {:>7.2}s  {}",
            subject,
            text("decision"),
            text("band"),
            text("rate_tier"),
            shown.get("credit_line").and_then(Value::as_u64).map_or("-".into(), |l| l.to_string()),
            d.phases.total.as_secs_f64(),
            reasons.join("; ")
        );
    }
    println!("\nencrypted == reference: {agree}/{}", rows.len());
    if args.strict {
        let mut verify: Vec<f64> = rows.iter().map(|(_, d)| d.phases.verify.as_secs_f64()).collect();
        let mut prove: Vec<f64> = rows.iter().map(|(_, d)| d.phases.party_encrypt.as_secs_f64()).collect();
        verify.sort_by(f64::total_cmp);
        prove.sort_by(f64::total_cmp);
        println!(
            "proofs: median {:.2} s to encrypt and prove (slowest party), {:.2} s to verify (slowest party) per decision",
            prove[prove.len() / 2],
            verify[verify.len() / 2]
        );
    }

    let (watched, watched_agree) = monitoring(&cluster, keys.clone(), &watch, today, args.seed).await?;

    let same = statistics(&cluster, &spec, args.seed).await?;
    let assets_right = duplicate_financing(&mut cluster).await?;
    let audited = audit(&cluster, rows.len() + watched).await?;
    cluster.stop().await?;
    if agree != rows.len() {
        return Err(CliError::Usage("some encrypted decisions differ from the reference".into()));
    }
    if watched_agree != watched {
        return Err(CliError::Usage("some encrypted monitoring alerts differ from the reference".into()));
    }
    if same != spec.dim() {
        return Err(CliError::Usage("some secure sums differ from the plain sums".into()));
    }
    if !assets_right {
        return Err(CliError::Usage("a duplicate-financing answer differs from the registries".into()));
    }
    if !audited {
        return Err(CliError::Usage("the audit ledger does not record every signed contribution".into()));
    }
    Ok(())
}

/// Today, UTC: the day the monitoring round's windows end.
fn today() -> Day {
    let s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Day::from_number((s / 86_400) as i64)
}

/// One monitoring round over every sample seller under the built-in spec:
/// each party decides its own conditions on 60 days of its history, the
/// coordinator runs the alert circuit, the lender decrypts one bit per
/// alert. Returns the loans evaluated and how many equal the plaintext
/// reference.
async fn monitoring(
    cluster: &Cluster,
    keys: Arc<LenderKeys>,
    watch: &MonitorPlan,
    day: Day,
    seed: u64,
) -> Result<(usize, usize), CliError> {
    let book = MonitorBook::open(&cluster.dir().join("lender-monitor.sqlite"))?;
    let subjects: Vec<String> = cluster.book.iter().map(|(s, _)| s.clone()).collect();
    let portfolio = book.add("quickstart", SELLER_WATCH, &subjects, Schedule::Daily)?;
    let mut lender = cluster.lender_for(keys, SELLER_WATCH.to_string(), PlanKind::Monitor).await?;
    let bar = ProgressBar::new(subjects.len() as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} loans monitored {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let report = run_round(&mut lender, &book, &portfolio, day, DEFAULT_WINDOW, |_| bar.inc(1)).await;
    bar.finish_and_clear();
    let report = report?;
    println!(
        "
monitoring   round {day} of spec `{}` ({}, {} PBS per loan): {} loans in {:.1} s; the lender decrypts \
         one bit per alert, never a party's sales, collections or shipments",
        watch.spec().name,
        &watch.id()[..16],
        watch.stats().lookups,
        report.loans.len(),
        report.seconds
    );
    let mut agree = 0;
    let expected = expected_alerts(watch, &cluster.book, seed, day);
    for (loan, want) in report.loans.iter().zip(&expected) {
        match &loan.result {
            LoanResult::Evaluated { raised, severity } => {
                agree += usize::from(raised == want);
                if let Some(severity) = severity {
                    println!(
                        "  {:<12} {:<9} {}",
                        loan.subject,
                        format!("{severity:?}").to_lowercase(),
                        raised.join(", ")
                    );
                }
            }
            LoanResult::Failed(reason) => println!("  {:<12} not evaluated: {reason}", loan.subject),
        }
    }
    println!("alerts: encrypted == reference: {agree}/{}", report.loans.len());
    Ok((report.loans.len(), agree))
}

/// Fetches the coordinator's audit ledger and verifies it as any member
/// would, with the consortium file; returns whether it holds one signed
/// contribution per party per decision.
async fn audit(cluster: &Cluster, decisions: usize) -> Result<bool, CliError> {
    let Some(consortium) = &cluster.consortium else { return Ok(true) };
    let (entries, head) = jointscore_lender::fetch_ledger(cluster.target(LENDER)?).await?;
    jointscore_audit::verify_with_head(&entries, &head, consortium)
        .map_err(|e| CliError::Usage(format!("the audit ledger does not verify: {e}")))?;
    let count = |kind: EntryKind| entries.iter().filter(|e| e.record.kind == kind).count();
    let signed = count(EntryKind::Contribution);
    println!(
        "\naudit ledger: {} entries verified against the consortium file (hash chain, coordinator signatures); \
         {} decision and monitoring requests, {signed} contributions each signed by its party, {} results, {} \
         alert reports signed by the lender, {} PSI sessions, {} aggregation round",
        entries.len(),
        count(EntryKind::DecisionRequest),
        count(EntryKind::Result),
        count(EntryKind::Alert),
        count(EntryKind::Psi),
        count(EntryKind::Aggregation)
    );
    // Each party holds the coordinator's ledger against its own log: the
    // coordinator is not trusted to have recorded what the parties sent.
    let mut reconciled = true;
    for party in cluster.model.parties() {
        let log = cluster.parties.iter().find(|p| &p.name == party).map(|p| p.store.log_entries(0)).transpose()?;
        let record = crate::reconcile_cmd::party_record(party, &log.unwrap_or_default())?;
        let outcome = jointscore_audit::reconcile(&record, &entries);
        reconciled &= outcome.reconciled();
        println!(
            "party log    {party:<10} {} contributions, each the lender's signed request under its signed key set; \
             {} found in the ledger as signed{}",
            record.contributions.len(),
            outcome.count(jointscore_audit::Status::Ok),
            if outcome.reconciled() { "" } else { " — NOT RECONCILED" }
        );
    }
    Ok(reconciled && signed == decisions * cluster.model.parties().len())
}

/// Applicants the lender has that no party knows: alignment finds them
/// without any party learning their ids, and no decision is asked.
const NEW_APPLICANTS: [&str; 2] = ["applicant-new-1", "applicant-new-2"];

/// The lender aligns its applicant list (the sample sellers and two new
/// applicants) with each party; returns what it learned.
async fn align(cluster: &Cluster) -> Result<AlignmentStore, CliError> {
    let mut applicants: Vec<String> = cluster.book.iter().map(|(s, _)| s.clone()).collect();
    applicants.extend(NEW_APPLICANTS.map(String::from));
    let store = AlignmentStore::in_memory()?;
    let mut requester = cluster.psi_requester(LENDER).await?;
    println!();
    for party in cluster.model.parties() {
        let aligned = requester.align(party, &applicants).await?;
        store.record(party, &applicants, &aligned.held)?;
        let held = aligned.held.iter().filter(|&&h| h).count();
        println!(
            "align        {party:<10} holds {held} of the lender's {} applicants ({:.3} s, ECDH PSI; the party learns \
             only that {} were asked about)",
            applicants.len(),
            aligned.elapsed.as_secs_f64(),
            applicants.len()
        );
    }
    for new in NEW_APPLICANTS {
        if store.absent(new, cluster.model.parties())?.len() == cluster.model.parties().len() {
            println!("align        {new}: no party holds it, so no party is asked about it");
        }
    }
    Ok(store)
}

/// The bank (a consortium lender) has financed three assets; the quickstart
/// lender checks three before financing them. Returns whether every answer
/// matches the registry.
async fn duplicate_financing(cluster: &mut Cluster) -> Result<bool, CliError> {
    let parse = |s: &str| AssetId::parse(s).map_err(|e| CliError::Usage(e.to_string()));
    let financed: Vec<(AssetId, String)> = [
        ("inv:acme trading.:inv 0001", "bank-loan-17"),
        ("wr:Rotterdam Depot:WR-19", "bank-loan-18"),
        ("order:Lisbon Tiles:PO-55", "bank-loan-19"),
    ]
    .into_iter()
    .map(|(a, r)| Ok((parse(a)?, r.to_string())))
    .collect::<Result<_, CliError>>()?;
    cluster.party("bank")?.store.register_assets(&financed)?;
    let asked =
        ["invoice:ACME Trading:INV-0001", "order:Shenzhen Widgets:PO-7781", "warehouse receipt:rotterdam depot:wr19"];
    let assets: Vec<AssetId> = asked.iter().map(|a| parse(a)).collect::<Result<_, _>>()?;
    let mut requester = cluster.psi_requester(LENDER).await?;
    let checked = requester.check_assets(&assets).await?;
    println!(
        "\nduplicate financing: {LENDER} checks {} assets against the other lenders' registries ({} lender, {:.3} s)",
        assets.len(),
        checked.lenders,
        checked.elapsed.as_secs_f64()
    );
    let mut right = true;
    for ((shown, asset), &n) in asked.iter().zip(&assets).zip(&checked.financed_by) {
        let truth = financed.iter().any(|(f, _)| f == asset);
        right &= (n > 0) == truth;
        println!("  {shown:<40} {}", if n > 0 { "already financed elsewhere" } else { "not financed elsewhere" });
    }
    Ok(right)
}

/// One secure-aggregation round over the three parties' books, compared
/// with the plain sum of their tallies; returns the entries that agree.
async fn statistics(cluster: &Cluster, spec: &StatsSpec, seed: u64) -> Result<usize, CliError> {
    let bar = spinner("consortium statistics: one secure-aggregation round over the three books");
    let mut requester = StatsRequester::connect(cluster.target(LENDER)?).await?;
    let result = requester.run(BOOK_HEALTH, &format!("quickstart-stats-{seed}-{}", spec.id()), DEFAULT_WAIT).await;
    bar.finish_and_clear();
    let result = result?;
    let n = u32::try_from(cluster.model.parties().len()).unwrap_or(u32::MAX);
    let mut plain = vec![0u64; spec.dim()];
    for index in 0..cluster.model.parties().len() {
        let views: Vec<Value> = cluster.book.iter().map(|(_, r)| party_view(&cluster.model, index, r)).collect();
        let tally = jointscore_stats::tally(spec, &views, n).map_err(|e| CliError::Usage(e.to_string()))?;
        plain.iter_mut().zip(tally).for_each(|(p, t)| *p += u64::from(t));
    }
    println!(
        "\nconsortium statistics `{}` ({}), secure aggregation over {}: no party's own numbers seen by anyone",
        spec.name,
        &spec.id()[..16],
        result.included.join(", ")
    );
    let width = result.entries.iter().map(|(l, _)| l.len()).max().unwrap_or(5);
    let mut same = 0;
    for ((label, value), want) in result.entries.iter().zip(&plain) {
        println!("  {label:<width$}  {value:>10}");
        same += usize::from(value == want);
    }
    println!("secure sum == plain sum: {same}/{} entries (round {:.3} s)", plain.len(), result.round.as_secs_f64());
    Ok(same)
}
