//! End-to-end tests of the `jointscore` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn jointscore(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_jointscore")).args(args).output().expect("run jointscore")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn model_text() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../models/cross_border_seller.toml"))
        .expect("shipped model")
}

/// Writes `text` to a file unique to this test.
fn temp_file(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("jointscore-cli-{}-{name}", std::process::id()));
    std::fs::write(&path, text).expect("write temp file");
    path
}

#[test]
fn lint_passes_the_shipped_model_and_fails_one_whose_credit_line_is_a_feature() {
    let shipped = jointscore(&["model", "lint", "cross_border_seller", "--json"]);
    assert!(shipped.status.success(), "{}", stderr(&shipped));
    let report: Value = serde_json::from_str(&stdout(&shipped)).expect("JSON");
    assert_eq!(report["passes"], true);
    assert_eq!(report["outputs"][0]["output"], "decision");

    let leaky = model_text()
        .replace("formula = \"band_multiplier * gmv_12m_k / 12\"", "formula = \"band_multiplier * gmv_12m_k / 1\"")
        .replace("granularity = 5", "granularity = 1");
    let file = temp_file("leaky.toml", &leaky);
    let out = jointscore(&["model", "lint", file.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains("REVEALS platform's `gmv_12m_k`") && text.contains("lint: fails"), "{text}");
}

#[test]
fn check_prints_the_model_id() {
    let builtin = jointscore(&["model", "check", "cross_border_seller"]);
    assert!(builtin.status.success(), "{}", stderr(&builtin));
    let id_line = stdout(&builtin).lines().find(|l| l.starts_with("model id: ")).map(str::to_string).expect("id line");
    assert_eq!(id_line.len(), "model id: ".len() + 64);

    let file = temp_file("model.toml", &model_text());
    let from_file = jointscore(&["model", "check", file.to_str().unwrap()]);
    assert!(stdout(&from_file).contains(&id_line));
}

#[test]
fn bad_models_and_files_fail_with_the_field_and_line() {
    let text = model_text().replacen("party = \"bank\"", "party = \"banc\"", 1);
    let line = text[..text.find("\"banc\"").unwrap()].matches('\n').count() + 1;
    let file = temp_file("bad.toml", &text);
    let out = jointscore(&["model", "check", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("line {line}")) && err.contains("features[8].party") && err.contains("banc"),
        "{err}"
    );

    let out = jointscore(&["model", "check", "/nonexistent/model.toml"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cannot read /nonexistent/model.toml"), "{}", stderr(&out));
}

#[test]
fn static_plan_reports_parties_and_costs() {
    let out = jointscore(&["model", "plan", "cross_border_seller", "--static", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(v["parties"].as_array().map(Vec::len), Some(3));
    let lookups = v["circuit"]["lookups"].as_u64().expect("lookups");
    assert!(lookups > 0 && lookups <= 80, "{lookups}");
    let text = jointscore(&["model", "plan", "cross_border_seller", "--static", "--coordinator-side"]);
    assert!(stdout(&text).contains("raw gmv_12m_k"), "{}", stdout(&text));
}

#[test]
fn eval_rejects_bad_inputs_by_feature() {
    let out = jointscore(&["model", "eval", "cross_border_seller", "--inputs", r#"{"gmv_12m_k": "a lot"}"#]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("gmv_12m_k") && stderr(&out).contains("expected an integer"), "{}", stderr(&out));
    let out = jointscore(&["model", "eval", "cross_border_seller", "--inputs", r#"{"fico": 700}"#]);
    assert!(stderr(&out).contains("unknown feature `fico`"), "{}", stderr(&out));
    let out = jointscore(&["model", "eval", "cross_border_seller", "--inputs", "{not json"]);
    assert!(stderr(&out).contains("not valid JSON"), "{}", stderr(&out));
}

#[test]
fn encrypted_eval_agrees_with_the_reference() {
    let seller = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/seller.json");
    let out = jointscore(&["model", "eval", "cross_border_seller", "--inputs", seller, "--encrypted"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(v["agree"], Value::Bool(true));
    assert_eq!(v["reference"]["decision"], "approve");
    assert_eq!(v["encrypted"]["credit_line"], 230);
    assert!(v["pbs"].as_u64().unwrap_or(0) > 0);
}

#[test]
fn bench_decision_json_has_the_documented_fields() {
    let out = jointscore(&["bench", "decision", "--json", "--runs", "1", "--coordinator-side-runs", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).expect("one JSON object");
    for key in ["pushdown_s", "pushdown_pbs", "coordinator_side_s", "coordinator_side_pbs"] {
        assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key}: {v}");
    }
    assert_eq!(v["exact"], Value::Bool(true));
    assert!(v["coordinator_side_pbs"].as_u64() > v["pushdown_pbs"].as_u64());
}

#[test]
fn quickstart_decides_and_matches_the_reference() {
    let out = jointscore(&["quickstart", "--sellers", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.lines().any(|l| l.starts_with("seller-0003")), "{text}");
    assert!(text.lines().any(|l| l == "encrypted == reference: 3/3"), "{text}");
    // The consortium statistics round: every entry equals the plain sum.
    assert!(text.contains("secure aggregation over bank, logistics, platform"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("  records") && l.ends_with(" 9")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("secure sum == plain sum: 7/7 entries")), "{text}");
    // Alignment: each party holds the 3 sample sellers of the 5 applicants;
    // the two new applicants are found held by none.
    for party in ["platform", "logistics", "bank"] {
        let line = format!("align        {party:<10} holds 3 of the lender's 5 applicants");
        assert!(text.lines().any(|l| l.starts_with(&line)), "{line}: {text}");
    }
    assert!(text.contains("applicant-new-2: no party holds it, so no party is asked about it"), "{text}");
    // Duplicate financing: the two registered assets, written differently,
    // are found; the other is not.
    assert!(text.contains("invoice:ACME Trading:INV-0001            already financed elsewhere"), "{text}");
    assert!(text.contains("order:Shenzhen Widgets:PO-7781           not financed elsewhere"), "{text}");
    assert!(text.contains("warehouse receipt:rotterdam depot:wr19   already financed elsewhere"), "{text}");
    // The monitoring round: each of the three sellers' troubles raises its
    // alert, equal to the reference.
    assert!(text.lines().any(|l| l.starts_with("  seller-0001") && l.ends_with("gmv_collapse")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("  seller-0002") && l.ends_with("flows_disagree")), "{text}");
    assert!(text.lines().any(|l| l == "alerts: encrypted == reference: 3/3"), "{text}");
    // The ledger: 1 key registration, 3 decision and 3 monitoring requests,
    // 18 signed contributions, 6 results, 3 alert reports, 4 PSI sessions
    // and 1 aggregation round, all verified.
    assert!(text.contains("audit ledger: 39 entries verified against the consortium file"), "{text}");
    assert!(text.contains("18 contributions each signed by its party"), "{text}");
    assert!(text.contains("3 alert reports signed by the lender"), "{text}");
    let bad = jointscore(&["quickstart", "--sellers", "0"]);
    assert!(!bad.status.success());
}

#[test]
fn bench_psi_json_has_the_documented_fields() {
    for extra in [&[][..], &["--cardinality"][..], &["--network"][..]] {
        let mut args = vec!["bench", "psi", "--size", "600", "--json"];
        args.extend_from_slice(extra);
        let out = jointscore(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        let v: Value = serde_json::from_str(&stdout(&out)).expect("one JSON object");
        for key in ["items_per_s", "seconds"] {
            assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key}: {v}");
        }
        assert_eq!(v["bytes"], 600 * 3 * 32);
        assert_eq!(v["correct"], Value::Bool(true));
    }
    assert!(!jointscore(&["bench", "psi", "--size", "0"]).status.success());
}

#[test]
fn bench_binning_json_has_the_documented_fields() {
    let out = jointscore(&["bench", "binning", "--rows", "800", "--features", "3", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).expect("one JSON object");
    assert_eq!(v["rows"], 800);
    assert_eq!(v["features"], 3);
    assert!(v["seconds"].as_f64().is_some_and(|s| s > 0.0));
    assert_eq!(v["correct"], Value::Bool(true));
    assert!(!jointscore(&["bench", "binning", "--rows", "0"]).status.success());
}

/// A small generated dataset: numeric and categorical columns with missing
/// values; the label depends on them so the scorecard has something to find.
fn generated_csv(rows: usize) -> String {
    let mut s = String::from("amount,region,tenure,score,city,label\n");
    let mut x: u64 = 12345;
    let mut next = || {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (x >> 33) as f64 / (1u64 << 31) as f64
    };
    for i in 0..rows {
        let risk = next();
        let amount = (100.0 + risk * 900.0 + next() * 300.0).round();
        // Category names a model file must escape: a quote (written as a
        // CSV-quoted cell) and a combining accent.
        let region = ["north", "\"so\"\"uth\"", "east", "we\u{301}st"][(risk * 3.9) as usize];
        let tenure = if i % 13 == 0 { String::new() } else { format!("{:.1}", 10.0 - risk * 8.0 + next() * 3.0) };
        let score = (next() * 100.0).round();
        let label = if next() < 0.15 + risk * 0.6 { "bad" } else { "good" };
        // More cities than a model takes categories: rare ones are pooled.
        let city = format!("city{}", (next() * 30.0) as u32);
        s.push_str(&format!("{amount},{region},{tenure},{score},{city},{label}\n"));
    }
    s
}

#[test]
fn study_runs_end_to_end_on_generated_data() {
    let csv = temp_file("study.csv", &generated_csv(160));
    let out = std::env::temp_dir().join(format!("jointscore-study-{}", std::process::id()));
    let o = jointscore(&[
        "study",
        "--data",
        csv.to_str().unwrap(),
        "--label",
        "label",
        "--bad",
        "bad",
        "--parties",
        "platform=amount,region;bank=tenure:num",
        "--test-fraction",
        "0.1",
        "--seed",
        "7",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let text = stdout(&o);
    for prefix in ["test AUC: ", "reference AUC: ", "KS: "] {
        let line =
            text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no `{prefix}` line in {text}"));
        let v: f64 = line[prefix.len()..].parse().expect("a number");
        assert!((0.0..=1.0).contains(&v), "{line}");
    }
    // 10% of each class is held out: 16 or 17 rows, every one equal.
    let last = text.lines().last().unwrap_or_default();
    let (n, m) = last.strip_prefix("encrypted == reference: ").and_then(|r| r.split_once('/')).expect("final line");
    assert!(n == m && ["16", "17"].contains(&n), "{last}");
    for file in ["model.toml", "roc.svg", "scores.svg"] {
        assert!(out.join(file).exists(), "{file} missing");
    }
    let model = std::fs::read_to_string(out.join("model.toml")).unwrap();
    // The 30 cities exceed what a model takes; the rarest were pooled.
    assert!(model.contains("\"(other)\""), "{model}");
    let check = jointscore(&["model", "check", out.join("model.toml").to_str().unwrap()]);
    assert!(check.status.success(), "{model}\n{}", stderr(&check));
}

#[test]
fn study_refuses_bad_data_naming_the_column() {
    let good = generated_csv(60);
    let run = |csv: &str, label: &str, parties: &str| {
        let path = temp_file(&format!("bad-{}.csv", csv.len() + label.len() + parties.len()), csv);
        let out = std::env::temp_dir().join(format!("jointscore-study-bad-{}", std::process::id()));
        let o = jointscore(&[
            "study",
            "--data",
            path.to_str().unwrap(),
            "--label",
            label,
            "--bad",
            "bad",
            "--parties",
            parties,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(!o.status.success());
        // Nothing half-written: a refused study leaves no output behind.
        assert!(!out.exists());
        stderr(&o)
    };
    assert!(run(&good, "outcome", "").contains("label column `outcome`"));
    assert!(run(&good.replace(",bad\n", ",good\n"), "label", "").contains("needs both"));
    assert!(run(&good, "label", "platform=amount,colour").contains("column `colour`"));
    let constant: String =
        good.lines().map(|l| format!("{l},{}\n", if l.starts_with("amount") { "flag" } else { "1" })).collect();
    assert!(run(&constant, "label", "").contains("column `flag` is constant"));
    let text = good.replacen('\n', "\nabc,north,1.0,5,city1,good\n", 1);
    assert!(run(&text, "label", "platform=amount:num").contains("column `amount` is numeric but row 2 holds `abc`"));
    assert!(run(&good, "label", "p=amount;p=region").contains("party `p` is listed twice"));
    let dup = good.replacen("amount,region", "amount,Amount", 1);
    assert!(run(&dup, "label", "").contains("columns `amount` and `Amount` both become feature `amount`"));
    let twice = good.replacen("amount,region", "amount,amount", 1);
    assert!(run(&twice, "label", "").contains("column `amount` appears twice"));
    // One bad row: whichever side gets it, the other has one class only.
    let one_bad: String = good
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let l = l.replace(",bad", ",good");
            if i == 1 { format!("{}bad\n", l.trim_end_matches("good")) } else { format!("{l}\n") }
        })
        .collect();
    assert!(run(&one_bad, "label", "").contains("only one class"));
}

#[test]
fn the_example_configurations_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/network");
    let coordinator =
        jointscore_coordinator::CoordinatorConfig::load(&dir.join("coordinator.toml")).expect("coordinator");
    assert_eq!(coordinator.lenders, ["bank", "lender"]);
    assert_eq!(coordinator.consortium, Some(dir.join("identities/consortium.toml")));
    assert_eq!(coordinator.identity, Some(dir.join("identities/coordinator.key")));
    for party in ["platform", "logistics", "bank"] {
        let config = jointscore_party::PartyConfig::load(&dir.join(format!("{party}.toml"))).expect(party);
        assert_eq!(config.name, party);
        assert_eq!(config.asset_registry, party == "bank", "only the bank is a consortium lender");
        assert_eq!(config.identity, Some(dir.join(format!("identities/{party}.key"))));
        assert_eq!(config.consortium, Some(dir.join("identities/consortium.toml")));
        assert!(config.coordinator.starts_with("https://"), "the example consortium runs mutual TLS");
        assert!(!config.approved_models.is_empty() && !config.approved_stats.is_empty(), "{party}");
    }
}

#[test]
fn party_consent_import_stores_good_files_and_names_the_line_of_a_bad_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("party.toml");
    std::fs::write(
        &config,
        "name = \"bank\"\ncoordinator = \"http://127.0.0.1:7100\"\nstore = \"bank.sqlite\"\nrequire_consent = true\n",
    )
    .expect("config");
    let config = config.to_str().expect("utf-8 path");
    let header = "subject,lender,purpose,valid_from,valid_until,revoked\n";
    let write = |name: &str, rows: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{header}{rows}")).expect("consent file");
        path.to_str().expect("utf-8 path").to_string()
    };

    let good = write("good.csv", "s1,lender,decision,2025-01-01,2025-12-31,\ns2,lender,monitoring,2025-01-01,,\n");
    let out = jointscore(&["party", "consent", "import", "--config", config, &good]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("party bank: 2 consents added, 0 revoked, 0 unchanged; 2 held"), "{}", stdout(&out));

    let bad = write("bad.csv", "s3,lender,decision,2025-01-01,,\ns4,lender,marketing,2025-01-01,,\n");
    let out = jointscore(&["party", "consent", "import", "--config", config, &bad]);
    assert!(!out.status.success(), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("line 3") && err.contains("purpose `marketing`") && err.contains("nothing stored"), "{err}");

    let revoke = write("revoke.csv", "s1,lender,decision,2025-01-01,,2025-06-01\n");
    let out = jointscore(&["party", "consent", "import", "--config", config, &revoke]);
    assert!(stdout(&out).contains("0 consents added, 1 revoked"), "{}{}", stdout(&out), stderr(&out));

    let out = jointscore(&["party", "consent", "list", "--config", config, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: Vec<Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(listed.len(), 2, "the bad file stored nothing");
    assert_eq!(listed[0]["subject"], "s1");
    assert_eq!(listed[0]["revoked_at"], "2025-06-01");
    assert_eq!(listed[0]["id"].as_str().map(str::len), Some(64));
    let out = jointscore(&["party", "consent", "list", "--config", config, "--subject", "s2"]);
    let table = stdout(&out);
    assert!(table.contains("s2") && table.contains("monitoring") && !table.contains("s1"), "{table}");
}

#[test]
fn party_import_as_of_keeps_dated_snapshots_idempotently_and_refuses_a_bad_day() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("party.toml");
    std::fs::write(&config, "name = \"platform\"\ncoordinator = \"http://127.0.0.1:7100\"\nstore = \"p.sqlite\"\n")
        .expect("config");
    let config = config.to_str().expect("utf-8 path");
    let write = |name: &str, rows: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("subject,gmv\n{rows}")).expect("csv");
        path.to_str().expect("utf-8 path").to_string()
    };
    let day1 = write("d1.csv", "s1,100\ns2,40\n");
    let import = |day: &str, file: &str| jointscore(&["party", "import", "--config", config, "--as-of", day, file]);
    let out = import("2026-11-01", &day1);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("snapshots on 2026-11-01: 2 added, 0 replaced, 0 unchanged"), "{}", stdout(&out));
    let out = import("2026-11-01", &day1);
    assert!(stdout(&out).contains("0 added, 0 replaced, 2 unchanged"), "{}", stdout(&out));
    let out = import("2026-11-02", &write("d2.csv", "s1,20\n"));
    assert!(
        stdout(&out).contains("1 added") && stdout(&out).contains("1 subjects' current record"),
        "{}",
        stdout(&out)
    );

    for bad_day in ["2026-02-30", "01/11/2026"] {
        let out = import(bad_day, &day1);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(bad_day), "{}", stderr(&out));
    }
    let store = jointscore_party::RecordStore::open(&dir.path().join("p.sqlite")).expect("store");
    let history = store.history("s1", None).expect("history");
    assert_eq!(history.len(), 2);
    assert_eq!(store.get("s1").expect("get"), Some(serde_json::json!({"gmv": 20})));
    assert_eq!(store.get("s2").expect("get"), Some(serde_json::json!({"gmv": 40})));
}

#[test]
fn monitor_check_and_lint_name_bad_fields_and_probing_thresholds() {
    let out = jointscore(&["monitor", "check", "seller_watch"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("alert flows_disagree (critical): joint, reads bank, logistics, platform"), "{text}");
    assert!(text.contains("alert gmv_collapse (high): one party's, reads platform"), "{text}");
    assert!(jointscore(&["monitor", "lint", "seller_watch"]).status.success());

    let dir = tempfile::tempdir().expect("temp dir");
    let example = jointscore_monitor::SELLER_WATCH;
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("spec");
        path.to_str().expect("utf-8 path").to_string()
    };
    let bad = write("bad.toml", &example.replacen("party = \"bank\"", "party = \"insurer\"", 1));
    let out = jointscore(&["monitor", "check", &bad]);
    assert!(!out.status.success());
    let line = example.lines().position(|l| l.contains("party = \"bank\"")).expect("line") + 1;
    assert!(stderr(&out).contains(&format!("(line {line})")) && stderr(&out).contains("insurer"), "{}", stderr(&out));

    let mut probing = example.to_string();
    for (k, t) in [1000, 2000, 4000].iter().enumerate() {
        probing.push_str(&format!(
            "\n[[alerts]]\nname = \"probe{k}\"\nseverity = \"info\"\nconditions = [{{ left = \"gmv_30d\", op = \"<\", value = {t} }}]\n"
        ));
    }
    let out = jointscore(&["monitor", "lint", &write("probing.toml", &probing), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(report["passes"], false);
    assert_eq!(report["findings"][0]["window"], "gmv_30d");
    assert_eq!(report["findings"][0]["party"], "platform");
}

/// The tfhe-free fuzz targets (`fuzz/`: cargo-fuzz, run with nightly) must
/// keep compiling as the decoders they feed change: this type-checks the
/// package on the toolchain running the tests, in a target directory of its
/// own. (The targets that link tfhe are compiled into this test binary
/// instead, below, so tfhe is not compiled a third time for a check.)
#[test]
fn the_fuzz_targets_compile() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(&cargo)
        .args(["check", "--quiet", "--manifest-path"])
        .arg(root.join("fuzz/Cargo.toml"))
        .env("CARGO_TARGET_DIR", root.join("target/fuzz-check"))
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "fuzz/Cargo.toml does not compile:\n{}", stderr(&out));
}

/// Stands in for `libfuzzer_sys::fuzz_target!`: the body of each tfhe fuzz
/// target becomes a function this binary can call.
#[macro_export]
macro_rules! fuzz_target {
    (|$data:ident: &[u8]| $body:block) => {
        pub(crate) fn run($data: &[u8]) $body
    };
}

// The fuzz targets say `use libfuzzer_sys::fuzz_target;`: here that name is
// this test crate, whose `fuzz_target!` is the stand-in above.
extern crate self as libfuzzer_sys;

// The targets of `fuzz/tfhe/` (decoders that link tfhe), compiled with the
// same tfhe build as everything else rather than in a workspace of their
// own. Each file's `#![no_main]` is for cargo-fuzz.
#[allow(unused_attributes, unused_imports)]
#[path = "../../fuzz/tfhe/fuzz_targets/model_file.rs"]
mod fuzz_model_file;
#[allow(unused_attributes, unused_imports)]
#[path = "../../fuzz/tfhe/fuzz_targets/node_config.rs"]
mod fuzz_node_config;
#[allow(unused_attributes, unused_imports)]
#[path = "../../fuzz/tfhe/fuzz_targets/proto_messages.rs"]
mod fuzz_proto_messages;
#[allow(unused_attributes, unused_imports, dead_code)] // type-checked only: its fixture generates TFHE keys
#[path = "../../fuzz/tfhe/fuzz_targets/tfhe_wire.rs"]
mod fuzz_tfhe_wire;

/// Every seed of the tfhe fuzz corpora (but `tfhe_wire`'s, whose fixture
/// costs a key generation) goes through its target without a panic, as
/// libFuzzer would run it.
#[test]
fn the_tfhe_fuzz_targets_take_their_corpora() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/tfhe/corpus");
    type Target = (&'static str, fn(&[u8]));
    let targets: [Target; 3] = [
        ("model_file", fuzz_model_file::run),
        ("node_config", fuzz_node_config::run),
        ("proto_messages", fuzz_proto_messages::run),
    ];
    for (name, run) in targets {
        let mut seeds = 0;
        for entry in std::fs::read_dir(corpus.join(name)).expect(name) {
            let bytes = std::fs::read(entry.expect("entry").path()).expect("seed");
            run(&bytes);
            run(&bytes[..bytes.len() / 2]);
            seeds += 1;
        }
        assert!(seeds > 0, "{name} has no seed");
    }
}

/// A party's configuration and store in `dir`, its log holding a refusal,
/// a contribution to job `j1`, another refusal and a PSI query; returns the
/// configuration's path and the contribution's envelope and signature.
fn party_with_a_log(dir: &Path) -> (String, jointscore_identity::ContributionEnvelope, String) {
    let config = dir.join("party.toml");
    std::fs::write(&config, "name = \"bank\"\ncoordinator = \"http://127.0.0.1:1\"\nstore = \"bank.sqlite\"\n")
        .expect("config");
    let store = jointscore_party::RecordStore::open(&dir.join("bank.sqlite")).expect("store");
    let refusal = |reason: &str| {
        serde_json::json!({
            "request_id": "r0", "lender": "lender", "job_id": "j0", "subject": "seller-0001",
            "model_id": "m", "reason": reason,
        })
    };
    store.log(jointscore_party::LogKind::Refusal, refusal("party `bank`: the request is stale")).expect("log");
    let request = jointscore_identity::LenderRequest {
        request_id: "r1".into(),
        lender: "lender".into(),
        key_id: "k".into(),
        model_id: "m".into(),
        plan: "pushdown".into(),
        subject: "seller-0002".into(),
        salt: "00".repeat(16),
        ..Default::default()
    };
    let envelope = jointscore_identity::ContributionBinding::answering(&request, "j1", "bank", "")
        .envelope("ab".repeat(32), 1_750_000_000_000);
    let key = jointscore_identity::NodeKey::generate();
    let signature = hex::encode(envelope.sign(&key));
    let record = jointscore_party::ContributionRecord {
        request,
        request_signature: String::new(),
        envelope: envelope.clone(),
        signature: signature.clone(),
    };
    store.log(jointscore_party::LogKind::Contribution, serde_json::to_value(&record).expect("json")).expect("log");
    store.log(jointscore_party::LogKind::Refusal, refusal("party `bank`: a replayed request")).expect("log");
    let query = serde_json::json!({
        "event": "query", "requester": "lender", "session": "s-1", "points": 8, "day": "2025-06-15", "left": 2,
        "budget": 10,
    });
    store.log(jointscore_party::LogKind::Psi, query).expect("log");
    (config.to_str().expect("utf-8 path").to_string(), envelope, signature)
}

#[test]
fn party_log_show_and_verify_find_an_entry_edited_in_the_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "name = \"bank\"\ncoordinator = \"http://127.0.0.1:1\"\nstore = \"empty.sqlite\"\n")
        .expect("config");
    let empty = empty.to_str().expect("utf-8 path");
    let out = jointscore(&["party", "log", "show", "--config", empty]);
    assert!(!out.status.success(), "no store there, and none is made");
    assert!(stderr(&out).contains("no store there"), "{}", stderr(&out));
    drop(jointscore_party::RecordStore::open(&dir.path().join("empty.sqlite")).expect("an empty store"));
    let out = jointscore(&["party", "log", "show", "--config", empty]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "the log of party `bank` holds no entries");
    let out = jointscore(&["party", "log", "verify", "--config", empty]);
    assert_eq!(stdout(&out).trim(), format!("0 entries verified, head {}", "0".repeat(64)));

    let (config, _, _) = party_with_a_log(dir.path());
    let out = jointscore(&["party", "log", "show", "--config", &config]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[1].contains("contribution") && lines[1].contains("request r1"), "{text}");
    assert!(lines[1].contains("job j1") && lines[1].contains("subject seller-0002"), "{text}");
    assert!(lines[2].contains("refused: party `bank`: a replayed request"), "{text}");
    assert!(
        lines[3].contains("psi") && lines[3].contains("requester lender  session s-1  query, 8 points, 2 left"),
        "{text}"
    );
    let time = lines[0].split_whitespace().nth(1).expect("a time");
    assert!(time.len() == 24 && time.as_bytes()[10] == b'T' && time.ends_with('Z'), "a UTC time: {text}");
    let out = jointscore(&["party", "log", "show", "--config", &config, "--from", "1", "--json"]);
    let entries: Vec<Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0]["seq"], 1);
    assert_eq!(entries[0]["body"]["envelope"]["job_id"], "j1");
    let out = jointscore(&["party", "log", "verify", "--config", &config]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("4 entries verified, head "), "{}", stdout(&out));

    // An operator (or an intruder) rewrites the reason of the last refusal.
    let db = rusqlite::Connection::open(dir.path().join("bank.sqlite")).expect("store");
    let entry: String = db.query_row("SELECT entry FROM party_log WHERE seq = 2", [], |r| r.get(0)).expect("row");
    let edited = entry.replace("a replayed request", "an ordinary request");
    assert_ne!(edited, entry);
    db.execute("UPDATE party_log SET entry = ?1 WHERE seq = 2", [&edited]).expect("edit");
    let out = jointscore(&["party", "log", "verify", "--config", &config]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains("party log entry 2: its hash does not match its content"), "{}", stderr(&out));
    // Removed instead: the gap is named.
    db.execute("UPDATE party_log SET entry = ?1 WHERE seq = 2", [&entry]).expect("undo");
    db.execute("DELETE FROM party_log WHERE seq = 1", []).expect("delete");
    let out = jointscore(&["party", "log", "verify", "--config", &config]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("party log entry 1: holds seq 2"), "{}", stderr(&out));
}

#[test]
fn audit_reconcile_holds_a_ledger_file_against_the_party_log() {
    use jointscore_audit::{Attestation, Entry, EntryKind, Event};
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, envelope, signature) = party_with_a_log(dir.path());
    let coordinator = jointscore_identity::NodeKey::generate();
    let ledger_file = |events: Vec<Event>| {
        let mut entries: Vec<Entry> = Vec::new();
        for event in events {
            let entry = Entry::seal(event, entries.last(), &coordinator);
            entries.push(entry);
        }
        let path = dir.path().join("ledger.jsonl");
        std::fs::write(&path, entries.iter().map(|e| e.to_json() + "\n").collect::<String>()).expect("ledger");
        path.to_str().expect("utf-8 path").to_string()
    };
    let contribution = Event {
        kind: EntryKind::Contribution,
        lender: Some(envelope.lender.clone()),
        subject: Some(envelope.subject.clone()),
        request_id: Some(envelope.request_id.clone()),
        parties: vec!["bank".into()],
        job_id: Some("j1".into()),
        model_id: Some(envelope.model_id.clone()),
        key_id: Some(envelope.key_id.clone()),
        digest: Some(envelope.ciphertext_sha256.clone()),
        attestations: vec![Attestation::new(
            "bank",
            jointscore_identity::Role::Party,
            jointscore_identity::CONTRIBUTION_DOMAIN,
            &envelope.to_bytes(),
            &hex::decode(&signature).expect("hex"),
        )],
        ..Event::default()
    };
    let request = Event { kind: EntryKind::DecisionRequest, job_id: Some("j1".into()), ..Event::default() };
    let result =
        Event { kind: EntryKind::Result, job_id: Some("j1".into()), parties: vec!["bank".into()], ..Event::default() };

    let whole = ledger_file(vec![request.clone(), contribution.clone(), result.clone()]);
    let out = jointscore(&["audit", "reconcile", "--config", &config, "--ledger", &whole]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("its log of 4 entries verified") && text.contains("not verified (no consortium file)"),
        "{text}"
    );
    assert!(text.contains("1 ok, 0 missing, 0 rewritten") && text.trim_end().ends_with("reconciled"), "{text}");

    // The coordinator left the contribution out.
    let cut = ledger_file(vec![request, result]);
    let out = jointscore(&["audit", "reconcile", "--config", &config, "--ledger", &cut, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}{}", stdout(&out), stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).expect("one JSON object");
    assert_eq!(report["reconciled"], false);
    assert_eq!(report["summary"]["missing"], 1);
    assert_eq!(report["findings"][0]["status"], "missing");
    assert_eq!(report["findings"][0]["party_seq"], 1);
    assert_eq!(report["party_log"]["state"], "verified");

    // Not run: exit status 2.
    let out = jointscore(&["audit", "reconcile", "--config", &config, "--ledger", "/nonexistent/ledger.jsonl"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot read /nonexistent/ledger.jsonl"), "{}", stderr(&out));
}
