//! End-to-end tests of the `jointscore` binary.

use std::path::PathBuf;
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
    assert_eq!(text.lines().last(), Some("encrypted == reference: 3/3"));
    let bad = jointscore(&["quickstart", "--sellers", "0"]);
    assert!(!bad.status.success());
}

#[test]
fn bench_psi_json_has_the_documented_fields() {
    for extra in [&[][..], &["--cardinality"][..]] {
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
