//! `jointscore bench decision`: the joint circuit of both plans, timed and
//! bootstrap-counted on the same subjects with the same keys.

use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use jointscore_circuits::fhe::{self, LocalRun};
use jointscore_circuits::{Plan, PlanKind, Record, reference};
use serde_json::json;

use jointscore_benches as workloads;

use crate::{CliError, generate_keys, load_model};

/// Options of `bench decision`.
#[derive(Args)]
pub(crate) struct DecisionArgs {
    /// Model file, or `cross_border_seller`.
    #[arg(long, default_value = "cross_border_seller")]
    model: String,
    /// Decisions timed with the pushdown plan.
    #[arg(long, default_value_t = 11)]
    runs: usize,
    /// Decisions timed with the coordinator-side plan (slow).
    #[arg(long, default_value_t = 3)]
    coordinator_side_runs: usize,
    /// Seed of the sample subjects.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also evaluate this many pushdown decisions as one batch
    /// (`EvaluationKey::evaluate_batch`) and compare its rate with the
    /// bootstrap-bound rate (0: skip).
    #[arg(long, default_value_t = 0)]
    batch: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// A batch of decisions evaluated together.
struct Batch {
    size: usize,
    seconds: f64,
    /// CPU time this process spent while the batch ran (all threads).
    cpu_seconds: f64,
    exact: usize,
    pbs: u64,
}

/// CPU time this process has used so far, all threads, user and system,
/// from `/proc/self/stat` (Linux; NaN elsewhere). Its unit is the kernel's
/// clock tick, 1/100 s on Linux's usual configuration: fine against a batch
/// of minutes.
fn process_cpu_seconds() -> f64 {
    const TICKS_PER_S: f64 = 100.0;
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // The command name (field 2) may hold spaces; fields after its closing
    // parenthesis start at field 3, so utime and stime (14, 15) are the
    // 12th and 13th.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return f64::NAN;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    match (fields.get(11).and_then(|v| v.parse::<f64>().ok()), fields.get(12).and_then(|v| v.parse::<f64>().ok())) {
        (Some(user), Some(system)) => (user + system) / TICKS_PER_S,
        _ => f64::NAN,
    }
}

/// Evaluates `subjects` as one batch and checks every result against the
/// reference.
fn run_batch(plan: &Plan, keys: &fhe::KeySet, subjects: &[Record]) -> Result<Batch, CliError> {
    let m = plan.model();
    let cpu = process_cpu_seconds();
    let run = fhe::decide_batch_locally(plan, keys, subjects)?;
    // Encryption and decryption are a few ms of the whole; the CPU time is
    // the evaluation's.
    let cpu_seconds = process_cpu_seconds() - cpu;
    let exact =
        subjects.iter().zip(&run.bundles).filter(|(r, b)| **b == reference::evaluate(m, r).restricted(m)).count();
    Ok(Batch { size: subjects.len(), seconds: run.eval.as_secs_f64(), cpu_seconds, exact, pbs: run.pbs })
}

struct Series {
    coordinator: Vec<Duration>,
    pbs: Vec<u64>,
    encrypt: Vec<Duration>,
    decrypt: Vec<Duration>,
    wire_bytes: usize,
    exact: usize,
}

pub(crate) fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2].as_secs_f64(),
        n => (v[n / 2 - 1] + v[n / 2]).as_secs_f64() / 2.0,
    }
}

fn run_series(plan: &Plan, keys: &fhe::KeySet, subjects: &[Record], bar: &ProgressBar) -> Result<Series, CliError> {
    let m = plan.model();
    let mut s = Series {
        coordinator: Vec::new(),
        pbs: Vec::new(),
        encrypt: Vec::new(),
        decrypt: Vec::new(),
        wire_bytes: 0,
        exact: 0,
    };
    for record in subjects {
        let LocalRun { bundle, encrypt, wire_bytes, eval, decrypt } = fhe::decide_locally(plan, keys, record)?;
        s.exact += usize::from(bundle == reference::evaluate(m, record).restricted(m));
        s.coordinator.push(eval.expand + eval.circuit);
        s.pbs.push(eval.pbs);
        s.encrypt.push(encrypt);
        s.decrypt.push(decrypt);
        s.wire_bytes = wire_bytes;
        bar.inc(1);
    }
    Ok(s)
}

pub(crate) fn decision(args: DecisionArgs) -> Result<(), CliError> {
    if args.runs == 0 || args.coordinator_side_runs == 0 {
        return Err(CliError::Usage("--runs and --coordinator-side-runs must be at least 1".into()));
    }
    let m = load_model(&args.model)?;
    let pushdown = Plan::new(&m, PlanKind::Pushdown)?;
    let coord = Plan::new(&m, PlanKind::CoordinatorSide)?;
    let keys = generate_keys()?;
    let n = args.runs.max(args.coordinator_side_runs);
    let subjects = workloads::decision::subjects(&m, n, args.seed).map_err(|e| CliError::Usage(e.to_string()))?;

    let bar = ProgressBar::new((args.runs + args.coordinator_side_runs) as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} evaluations")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // Warm-up: first use of a key set pays for allocations and caches.
    fhe::decide_locally(&pushdown, &keys, &subjects[0])?;
    let pd = run_series(&pushdown, &keys, &subjects[..args.runs], &bar)?;
    let probe = fhe::Contribution::encrypt(&pushdown, 0, &pushdown.contribution(0, &subjects[0])?, &keys.public)?;
    let one_pbs = keys.evaluation.pbs_probe(&probe, 21)?.as_secs_f64();
    let cs = run_series(&coord, &keys, &subjects[..args.coordinator_side_runs], &bar)?;
    bar.finish_and_clear();
    let batch = if args.batch > 0 {
        let subjects =
            workloads::decision::subjects(&m, args.batch, args.seed).map_err(|e| CliError::Usage(e.to_string()))?;
        let batch = run_batch(&pushdown, &keys, &subjects)?;
        // Right after the batch, under the same load: independent lookups
        // over the pool, the ceiling no scheduling can beat.
        let pool = keys.evaluation.pbs_throughput(&probe, 128)?;
        Some((batch, pool))
    } else {
        None
    };

    let pd_s = median(pd.coordinator.clone());
    let cs_s = median(cs.coordinator.clone());
    let pd_pbs = pd.pbs.iter().copied().max().unwrap_or(0);
    let cs_pbs = cs.pbs.iter().copied().max().unwrap_or(0);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let exact = pd.exact == args.runs
        && cs.exact == args.coordinator_side_runs
        && batch.as_ref().is_none_or(|(b, _)| b.exact == b.size);
    // What the bootstraps alone allow: every core bootstrapping all the time.
    let bound_per_s = threads as f64 / (pd_pbs.max(1) as f64 * one_pbs);
    if args.json {
        let mut v = json!({
            "model": m.name(),
            "model_id": m.id(),
            "pushdown_s": pd_s,
            "pushdown_pbs": pd_pbs,
            "pushdown_runs": args.runs,
            "coordinator_side_s": cs_s,
            "coordinator_side_pbs": cs_pbs,
            "coordinator_side_runs": args.coordinator_side_runs,
            "speedup": cs_s / pd_s,
            "pbs_ratio": cs_pbs as f64 / pd_pbs.max(1) as f64,
            "exact": exact,
            "party_encrypt_s": median(pd.encrypt),
            "lender_decrypt_s": median(pd.decrypt),
            "pushdown_wire_bytes": pd.wire_bytes,
            "coordinator_side_wire_bytes": cs.wire_bytes,
            "threads": threads,
            "one_pbs_s": one_pbs,
            "bound_decisions_per_s": bound_per_s,
        });
        if let Some((b, pool)) = &batch {
            v["batch"] = json!(b.size);
            v["pool_pbs_per_s"] = json!(pool);
            v["batch_cpu_s"] = json!(b.cpu_seconds);
            // Share of the CPU time the batch used that went to bootstraps
            // at their single-core speed: scheduling and everything around
            // the bootstraps cost the rest, whatever else loads the machine.
            v["batch_cpu_in_pbs"] = json!(b.pbs as f64 * one_pbs / b.cpu_seconds);
            v["batch_of_pool"] = json!(b.size as f64 / b.seconds * b.pbs as f64 / b.size as f64 / pool);
            v["batch_s"] = json!(b.seconds);
            v["batch_decisions_per_s"] = json!(b.size as f64 / b.seconds);
            v["batch_pbs_per_decision"] = json!(b.pbs as f64 / b.size as f64);
            v["batch_of_bound"] = json!(b.size as f64 / b.seconds / bound_per_s);
        }
        println!("{v}");
    } else {
        println!("model {} ({}), {} threads", m.name(), &m.id()[..16], threads);
        println!(
            "{:<18} {:>5} {:>10} {:>10} {:>10} {:>6} {:>8} {:>10}",
            "plan", "runs", "median s", "min s", "max s", "PBS", "depth", "wire bytes"
        );
        for (name, plan, s, runs) in
            [("pushdown", &pushdown, &pd, args.runs), ("coordinator-side", &coord, &cs, args.coordinator_side_runs)]
        {
            let min = s.coordinator.iter().min().map_or(f64::NAN, Duration::as_secs_f64);
            let max = s.coordinator.iter().max().map_or(f64::NAN, Duration::as_secs_f64);
            println!(
                "{:<18} {:>5} {:>10.3} {:>10.3} {:>10.3} {:>6} {:>8} {:>10}",
                name,
                runs,
                median(s.coordinator.clone()),
                min,
                max,
                s.pbs.iter().copied().max().unwrap_or(0),
                plan.stats().depth,
                s.wire_bytes
            );
        }
        println!("speedup (median coordinator-side / median pushdown): {:.1}x", cs_s / pd_s);
        println!(
            "one PBS on one core: {:.1} ms (median of 21); pushdown PBS x that / {threads} threads = {:.3} s",
            one_pbs * 1e3,
            pd_pbs as f64 * one_pbs / threads as f64
        );
        if let Some((b, pool)) = &batch {
            let rate = b.size as f64 / b.seconds;
            println!(
                "independent lookups over the pool right after: {pool:.1}/s; the batch ran {:.1} bootstraps/s ({:.0}%)",
                b.pbs as f64 / b.seconds,
                100.0 * b.pbs as f64 / b.seconds / pool
            );
            println!(
                "batch CPU time {:.1} s over {:.1} s wall; {} PBS x one PBS = {:.0}% of that CPU time",
                b.cpu_seconds,
                b.seconds,
                b.pbs,
                100.0 * b.pbs as f64 * one_pbs / b.cpu_seconds
            );
            println!(
                "batch of {}: {:.2} s, {rate:.3} decisions/s; bootstrap-bound {bound_per_s:.3} decisions/s \
                 ({threads} / ({pd_pbs} PBS x one PBS)); {:.0}% of the bound",
                b.size,
                b.seconds,
                100.0 * rate / bound_per_s
            );
        }
        println!(
            "party encrypt (all parties) {:.3} s, lender decrypt {:.4} s (pushdown medians)",
            median(pd.encrypt),
            median(pd.decrypt)
        );
        println!(
            "exact: {exact} ({}/{} pushdown, {}/{} coordinator-side{} equal the reference)",
            pd.exact,
            args.runs,
            cs.exact,
            args.coordinator_side_runs,
            batch.as_ref().map_or(String::new(), |(b, _)| format!(", {}/{} batched", b.exact, b.size))
        );
    }
    if !exact {
        return Err(CliError::Usage("an encrypted result differs from the reference".into()));
    }
    Ok(())
}

/// Options of `bench psi`.
#[derive(Args)]
pub(crate) struct PsiArgs {
    /// Items per side; half of each side's items are in the other's set.
    #[arg(long, default_value_t = 1 << 16)]
    size: usize,
    /// Run the cardinality-only variant instead of the intersection.
    #[arg(long)]
    cardinality: bool,
    /// Align over loopback gRPC instead: a coordinator and one party node
    /// holding the responder's items as subjects, the requester a lender
    /// (batched sessions, as `lender align` runs them).
    #[arg(long, conflicts_with = "cardinality")]
    network: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs one PSI session in process (or over loopback gRPC) and reports
/// throughput.
pub(crate) fn psi(args: PsiArgs) -> Result<(), CliError> {
    use jointscore_psi::{POINT_BYTES, Variant};

    if args.size == 0 || args.size > jointscore_psi::MAX_ITEMS {
        return Err(CliError::Usage(format!("--size must be in 1..={}", jointscore_psi::MAX_ITEMS)));
    }
    if args.network {
        return psi_network(&args);
    }
    let n = args.size;
    // The same sets and session as the criterion benchmark (benches/).
    let usage = |e: workloads::Error| CliError::Usage(e.to_string());
    let (mine, theirs) = workloads::psi::sets(n).map_err(usage)?;
    let variant = if args.cardinality { Variant::Cardinality } else { Variant::Intersection };
    let run = workloads::psi::run(&mine, &theirs, variant).map_err(usage)?;
    let (seconds, t_request, t_response, bytes) = (run.total.as_secs_f64(), run.request, run.response, run.bytes);
    let shared = n - n / 2;
    let correct = workloads::psi::correct(&run.outcome, n);
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let items_per_s = n as f64 / seconds;
    if args.json {
        let v = json!({
            "size": n,
            "variant": if args.cardinality { "cardinality" } else { "intersection" },
            "seconds": seconds,
            "items_per_s": items_per_s,
            "items_per_s_per_core": items_per_s / threads as f64,
            "bytes": bytes,
            "correct": correct,
            "request_s": t_request.as_secs_f64(),
            "response_s": t_response.as_secs_f64(),
            "threads": threads,
        });
        println!("{v}");
    } else {
        println!("PSI {n} x {n} items ({shared} shared), {threads} threads, variant {variant:?}");
        println!(
            "  total        {seconds:>9.3} s   ({items_per_s:.0} items/s per side, {:.0} per core)",
            items_per_s / threads as f64
        );
        println!("  request      {:>9.3} s   (requester hashes and blinds its items)", t_request.as_secs_f64());
        println!(
            "  response     {:>9.3} s   (responder re-blinds them, hashes and blinds its own)",
            t_response.as_secs_f64()
        );
        println!("  bytes        {bytes:>9}     ({POINT_BYTES} per point)");
        println!("  correct      {correct}");
    }
    if !correct {
        return Err(CliError::Usage("the PSI result is wrong".into()));
    }
    Ok(())
}

/// `bench psi --network`: a lender aligns `size` subjects with a party
/// node holding `size` (half shared) through a coordinator on loopback.
fn psi_network(args: &PsiArgs) -> Result<(), CliError> {
    use jointscore_coordinator::{CoordinatorConfig, CoordinatorNode, SqliteStore};
    use jointscore_lender::PsiRequester;
    use jointscore_party::{PartyConfig, PartyNode, RecordStore};
    use std::sync::Arc;
    use std::time::Duration;

    let n = args.size;
    let mine: Vec<String> = (0..n).map(|i| format!("seller-{i:012}")).collect();
    let theirs: Vec<(String, serde_json::Value)> =
        (n / 2..n / 2 + n).map(|i| (format!("seller-{i:012}"), json!({}))).collect();
    let dir = tempfile::tempdir().map_err(|e| CliError::Usage(format!("temporary directory: {e}")))?;
    let runtime = crate::nodes::runtime()?;
    let aligned = runtime.block_on(async {
        let config = CoordinatorConfig {
            listen: "127.0.0.1:0".into(),
            ..CoordinatorConfig::with_store(dir.path().join("coordinator.sqlite"))
        };
        let store = Arc::new(SqliteStore::open(&config.store)?);
        let bind = || async {
            tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| CliError::Usage(format!("bind: {e}")))
        };
        let coordinator = CoordinatorNode::start(config, store, bind().await?).await?;
        let party = PartyConfig {
            trust_coordinator: true,
            ..PartyConfig::new("platform", &coordinator.url(), dir.path().join("platform.sqlite"))
        };
        let records = Arc::new(RecordStore::open(&party.store)?);
        records.put_all(&theirs)?;
        let node = PartyNode::start(&party, records, bind().await?, Duration::from_secs(10)).await?;
        let mut lender = PsiRequester::connect(&coordinator.url(), "bench-lender").await?;
        let aligned = lender.align("platform", &mine).await?;
        node.stop().await?;
        coordinator.stop().await?;
        Ok::<_, CliError>(aligned)
    })?;
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let seconds = aligned.elapsed.as_secs_f64();
    let correct = aligned.held.iter().enumerate().all(|(i, &h)| h == (i >= n / 2)) && aligned.party_size == n;
    // The party's encoded set, the blinded queries and their answers.
    let bytes = 3 * n * jointscore_psi::POINT_BYTES;
    let items_per_s = n as f64 / seconds;
    if args.json {
        println!(
            "{}",
            json!({
                "size": n, "variant": "alignment over gRPC", "seconds": seconds, "items_per_s": items_per_s,
                "items_per_s_per_core": items_per_s / threads as f64, "bytes": bytes, "correct": correct,
                "threads": threads,
            })
        );
    } else {
        println!("PSI alignment over loopback gRPC: {n} x {n} subjects ({} shared), {threads} threads", n - n / 2);
        println!(
            "  total        {seconds:>9.3} s   ({items_per_s:.0} items/s per side, {:.0} per core)",
            items_per_s / threads as f64
        );
        println!("  bytes        {bytes:>9}     (encoded set, queries, answers)");
        println!("  correct      {correct}");
    }
    if !correct {
        return Err(CliError::Usage("the alignment is wrong".into()));
    }
    Ok(())
}

/// Options of `bench binning`.
#[derive(Args)]
pub(crate) struct BinningArgs {
    /// Rows (subjects).
    #[arg(long, default_value_t = 100_000)]
    rows: usize,
    /// Features, all held by one party.
    #[arg(long, default_value_t = 20)]
    features: usize,
    /// Initial equal-frequency bins per feature.
    #[arg(long, default_value_t = 10)]
    bins: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// One vertical binning round in process, through the wire encodings.
pub(crate) fn binning(args: BinningArgs) -> Result<(), CliError> {
    if args.rows == 0 || args.features == 0 || args.bins == 0 {
        return Err(CliError::Usage("--rows, --features and --bins must be at least 1".into()));
    }
    let err = |e: workloads::Error| CliError::Usage(e.to_string());
    // The same data and round as the criterion benchmark (benches/): labels
    // ~30% bad, each feature leaning on the label.
    let data = workloads::binning::data(args.rows, args.features, 5).map_err(err)?;
    let round = data.round(args.bins).map_err(err)?;
    let correct = data.correct(&round);
    let (t_encrypt, t_party, t_decrypt, bytes) = (round.encrypt, round.party, round.decrypt, round.bytes);
    let seconds = (t_encrypt + t_party + t_decrypt).as_secs_f64();
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    if args.json {
        println!(
            "{}",
            json!({
                "rows": args.rows, "features": args.features, "bins": args.bins, "seconds": seconds,
                "lender_encrypt_s": t_encrypt.as_secs_f64(), "party_s": t_party.as_secs_f64(),
                "lender_decrypt_s": t_decrypt.as_secs_f64(), "bytes": bytes, "correct": correct, "threads": threads,
            })
        );
    } else {
        println!(
            "binning {} rows x {} features ({} initial bins), {threads} threads",
            args.rows, args.features, args.bins
        );
        println!("  total            {seconds:>9.3} s");
        println!("  lender encrypt   {:>9.3} s", t_encrypt.as_secs_f64());
        println!("  party bin + sum  {:>9.3} s", t_party.as_secs_f64());
        println!("  lender decrypt   {:>9.3} s", t_decrypt.as_secs_f64());
        println!("  bytes            {bytes:>9}");
        println!("  correct          {correct}");
    }
    if !correct {
        return Err(CliError::Usage("the binning counts are wrong".into()));
    }
    Ok(())
}

#[derive(Args)]
pub(crate) struct SecaggArgs {
    /// Parties in the round.
    #[arg(long, default_value_t = 100)]
    parties: u32,
    /// Entries in every party's vector.
    #[arg(long, default_value_t = 1000)]
    dim: usize,
    /// Share of parties that drop after sharing their keys and before
    /// sending their masked vector (the case that costs the server most).
    #[arg(long, default_value_t = 0.0)]
    dropout: f64,
    /// Neighbours of each party: SecAgg+ (Bell et al., CCS 2020) on a
    /// random Harary graph, an even number below --parties, with threshold
    /// k/2 + 1. Without it, the complete graph (Bonawitz et al.) with
    /// threshold ⌊N/2⌋ + 1. docs/secagg.md says how to choose it.
    #[arg(long)]
    neighbours: Option<u32>,
    /// Print one JSON object instead of a line of text.
    #[arg(long)]
    json: bool,
}

pub(crate) fn secagg(args: SecaggArgs) -> Result<(), CliError> {
    // The same round as the criterion benchmark (benches/).
    let round = workloads::secagg::round(args.parties, args.dim, args.dropout, args.neighbours)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let (threshold, dropped) = (round.threshold, round.dropped);
    let bar = ProgressBar::new_spinner().with_message(format!(
        "secure aggregation: {} parties × {} entries, {dropped} dropping",
        args.parties, args.dim
    ));
    bar.enable_steady_tick(Duration::from_millis(120));
    let outcome = round.run();
    bar.finish_and_clear();
    let outcome = outcome.map_err(|e| CliError::Usage(e.to_string()))?;
    let correct = round.correct(&outcome);
    let out = json!({
        "parties": args.parties, "dim": args.dim, "dropout": args.dropout, "dropped": dropped,
        "threshold": threshold, "neighbours": args.neighbours, "server_s": outcome.server.as_secs_f64(),
        "client_s": outcome.client.as_secs_f64(), "bytes_per_client": outcome.bytes_per_client,
        "correct": correct,
    });
    if args.json {
        println!("{out}");
    } else {
        println!(
            "{} parties × {} entries, {} neighbours, {dropped} dropped (threshold {threshold}): server {:.3} s, client {:.3} s each, \
             {} bytes sent per client, sum correct: {correct}",
            args.parties,
            args.dim,
            args.neighbours.map_or("all".to_string(), |k| k.to_string()),
            outcome.server.as_secs_f64(),
            outcome.client.as_secs_f64(),
            outcome.bytes_per_client
        );
    }
    if !correct {
        return Err(CliError::Usage("the aggregate differs from the plain sum".into()));
    }
    Ok(())
}

/// Options of `bench params`.
#[derive(Args)]
pub(crate) struct ParamsArgs {
    /// Lookups timed one after another per parameter set (latency).
    #[arg(long, default_value_t = 21)]
    latency_runs: usize,
    /// Lookups spread over the thread pool per parameter set (throughput).
    #[arg(long, default_value_t = 64)]
    throughput_lookups: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Measures tfhe's 2-bit message / 2-bit carry parameter sets side by side.
pub(crate) fn params(args: ParamsArgs) -> Result<(), CliError> {
    use jointscore_circuits::params;

    if args.latency_runs == 0 || args.throughput_lookups == 0 {
        return Err(CliError::Usage("--latency-runs and --throughput-lookups must be at least 1".into()));
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let candidates = params::candidates();
    let bar = ProgressBar::new(candidates.len() as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} parameter sets {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut rows = Vec::new();
    for c in &candidates {
        bar.set_message(c.name);
        rows.push(params::measure(c, args.latency_runs, args.throughput_lookups)?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    if args.json {
        println!("{}", json!({ "threads": threads, "sets": rows }));
    } else {
        println!(
            "{threads} threads; latency: median of {} lookups; throughput: {} lookups over the pool",
            args.latency_runs, args.throughput_lookups
        );
        println!(
            "{:<12} {:<28} {:>6} {:>6} {:>9} {:>11} {:>12} {:>8}",
            "set", "pattern", "n", "N", "keygen s", "latency ms", "lookups/s", "correct"
        );
        for r in &rows {
            println!(
                "{:<12} {:<28} {:>6} {:>6} {:>9.2} {:>11.2} {:>12.1} {:>8}{}",
                r.name,
                r.pattern,
                r.lwe_dimension,
                r.polynomial_size,
                r.keygen_s,
                r.latency_s * 1e3,
                r.throughput_per_s,
                r.correct,
                if r.in_use { "  (in use)" } else { "" }
            );
        }
    }
    if rows.iter().any(|r| !r.correct) {
        return Err(CliError::Usage("a lookup decrypted to a wrong value".into()));
    }
    Ok(())
}

/// Options of `bench fit`.
#[derive(Args)]
pub(crate) struct FitArgs {
    /// Rows (subjects); 70% train the scorecard, 30% test it.
    #[arg(long, default_value_t = 100_000)]
    rows: usize,
    /// Features, dealt round-robin to three parties.
    #[arg(long, default_value_t = 20)]
    features: usize,
    /// Seed of the generated data.
    #[arg(long, default_value_t = 5)]
    seed: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Generated data for `bench fit`: two latent risk factors, each feature a
/// noisy mix of them (so features are correlated within and across
/// parties), every tenth cell of every fourth feature missing, labels from
/// a logistic model of the factors (~30% bad).
fn fit_data(rows: usize, features: usize, seed: u64) -> String {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};
    // Box–Muller.
    fn normal(rng: &mut StdRng) -> f64 {
        let (u, v): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mix: Vec<(f64, f64)> = (0..features)
        .map(|f| {
            let a = ((f * 37 % 11) as f64 - 5.0) / 5.0;
            (a, 1.0 - a.abs())
        })
        .collect();
    let mut s = (0..features).map(|f| format!("f{f}")).collect::<Vec<_>>().join(",");
    s.push_str(",label\n");
    for r in 0..rows {
        let (u, v) = (normal(&mut rng), normal(&mut rng));
        for (f, (a, b)) in mix.iter().enumerate() {
            let e = normal(&mut rng);
            if !(f % 4 == 3 && r % 10 == 0) {
                s.push_str(&format!("{}", ((a * u + b * v + 0.8 * e) * 100.0).round()));
            }
            s.push(',');
        }
        let z = 0.85 + 1.0 * u + 0.6 * v;
        s.push_str(if rng.random::<f64>() < 1.0 / (1.0 + (-z).exp()) { "good\n" } else { "bad\n" });
    }
    s
}

/// One joint fit in process: the binning round, the Gram round and the
/// weights, every message counted as it would cross the coordinator.
pub(crate) fn fit(args: FitArgs) -> Result<(), CliError> {
    if args.rows < 100 || args.features == 0 {
        return Err(CliError::Usage("--rows must be at least 100 and --features at least 1".into()));
    }
    let parties = ["platform", "logistics", "bank"];
    let split = parties
        .iter()
        .enumerate()
        .filter_map(|(p, name)| {
            let cols: Vec<String> = (p..args.features).step_by(parties.len()).map(|f| format!("f{f}")).collect();
            (!cols.is_empty()).then(|| format!("{name}={}", cols.join(",")))
        })
        .collect::<Vec<_>>()
        .join(";");
    let options = jointscore_learn::LoadOptions {
        label: "label".into(),
        bad: "bad".into(),
        good: Some("good".into()),
        parties: split.parse()?,
        test_fraction: 0.3,
        seed: args.seed,
    };
    let study = jointscore_learn::Study::read(fit_data(args.rows, args.features, args.seed).as_bytes(), &options)?;
    let bar =
        ProgressBar::new_spinner().with_message(format!("joint fit: {} rows x {} features", args.rows, args.features));
    if !args.json {
        bar.enable_steady_tick(Duration::from_millis(120));
    }
    let started = std::time::Instant::now();
    let fitted = jointscore_learn::fit(&study, &jointscore_learn::FitOptions::default(), "bench", &mut |i| {
        bar.set_message(format!("weights iteration {}: {} features, loss {:.4}", i.round, i.features, i.loss));
    })?;
    let seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let iterations = fitted.weights.as_ref().map_or(0, |w| w.iterations.len());
    let kept = fitted.features.iter().filter(|f| f.selected).count();
    let phase = |name: &str| fitted.cost.phases.iter().find(|p| p.0 == name).map_or(0.0, |p| p.1.as_secs_f64());
    // Test AUC of the fitted scorecard, in the clear (the circuits are not
    // what this measures).
    let m = &fitted.model;
    let risk = study
        .test()
        .iter()
        .map(|&i| Ok(-(jointscore_circuits::reference::evaluate(m, &study.record(m, i)?).score.unwrap_or(0) as f64)))
        .collect::<Result<Vec<f64>, jointscore_learn::Error>>()?;
    let bad: Vec<bool> = study.test().iter().map(|&i| study.labels()[i]).collect();
    let test_auc = jointscore_learn::auc(&risk, &bad)?;
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let bytes = |b: &jointscore_learn::Bytes| json!({ "sent": b.sent, "received": b.received });
    let party_bytes: serde_json::Map<String, serde_json::Value> =
        fitted.cost.parties.iter().map(|(k, b)| (k.clone(), bytes(b))).collect();
    if args.json {
        println!(
            "{}",
            json!({
                "rows": args.rows, "features": args.features, "train_rows": study.train().len(),
                "seconds": seconds, "binning_s": phase("binning"), "gram_s": phase("gram"), "weights_s": phase("weights"),
                "iterations": iterations, "features_kept": kept, "test_auc": test_auc,
                "lender_bytes": bytes(&fitted.cost.lender), "coordinator_bytes": bytes(&fitted.cost.coordinator),
                "party_bytes": party_bytes, "threads": threads,
            })
        );
    } else {
        println!(
            "joint fit: {} rows ({} train) x {} features over {} parties, {threads} threads",
            args.rows,
            study.train().len(),
            args.features,
            fitted.cost.parties.len()
        );
        println!("  total (incl. cutoffs)   {seconds:>9.3} s");
        for (name, t) in &fitted.cost.phases {
            println!("  {name:<22}  {:>9.3} s", t.as_secs_f64());
        }
        println!("  iterations              {iterations:>9}");
        println!("  features kept           {kept:>9}");
        println!("  test AUC                {test_auc:>9.3}");
        let row = |name: &str, b: &jointscore_learn::Bytes| {
            println!("  {name:<12} sent {:>12} B  received {:>12} B", b.sent, b.received)
        };
        row("lender", &fitted.cost.lender);
        row("coordinator", &fitted.cost.coordinator);
        for (name, b) in &fitted.cost.parties {
            row(name, b);
        }
    }
    Ok(())
}
