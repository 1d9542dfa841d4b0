//! Joint scorecard fitting over the services, between separate processes:
//! a coordinator, two party nodes and `jointscore lender fit`.

use std::path::Path;

use jointscore_learn::{FitOptions, LoadOptions, PartySplit, Study};

use super::*;

/// Rows of the generated book.
const ROWS: usize = 400;

const FIT_SPEC: &str = r#"
name = "generated-card"
deadline_ms = 20000

[[party]]
name = "platform"
features = [{ name = "risk", kind = "numeric" }, { name = "region", kind = "categorical" }]

[[party]]
name = "bank"
features = [{ name = "safety", kind = "numeric" }, { name = "noise", kind = "numeric" }]
"#;

/// One generated subject: (subject, risk, region, safety, noise, bad).
type Row = (String, u32, &'static str, Option<u32>, u32, bool);

/// `ROWS` generated subjects: `risk` raises the bad rate, `safety` lowers
/// it, `noise` does nothing, `region` has a risky category; a few `safety`
/// cells are missing.
fn generated() -> Vec<Row> {
    let mut x: u64 = 7;
    let mut next = || {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (x >> 33) as f64 / (1u64 << 31) as f64
    };
    (0..ROWS)
        .map(|i| {
            let (risk, safety, noise) = ((next() * 1000.0) as u32, (next() * 50.0) as u32, (next() * 10.0) as u32);
            let region = ["north", "south", "east"][((next() * 3.0) as usize).min(2)];
            let p = 0.05
                + 0.5 * f64::from(risk) / 1000.0
                + 0.3 * (1.0 - f64::from(safety) / 50.0)
                + if region == "south" { 0.1 } else { 0.0 };
            let bad = next() < p * 0.8;
            (format!("s{i:04}"), risk, region, (i % 17 != 0).then_some(safety), noise, bad)
        })
        .collect()
}

/// The in-process study over the same rows, its training rows in order.
fn study() -> Study {
    let mut csv = String::from("risk,region,safety,noise,label\n");
    for (_, risk, region, safety, noise, bad) in generated() {
        let safety = safety.map_or(String::new(), |s| s.to_string());
        csv.push_str(&format!("{risk},{region},{safety},{noise},{}\n", if bad { "bad" } else { "good" }));
    }
    let options = LoadOptions {
        label: "label".into(),
        bad: "bad".into(),
        good: Some("good".into()),
        parties: "platform=risk,region;bank=safety,noise".parse::<PartySplit>().expect("split"),
        test_fraction: 0.25,
        seed: 5,
    };
    Study::read(csv.as_bytes(), &options).expect("study")
}

/// The model's bins, points, parties and base score: what both fits must
/// agree on (name, description, cutoffs and bands differ by design).
fn scorecard(toml_text: &str) -> toml::Value {
    let value: toml::Value = toml::from_str(toml_text).expect("model TOML");
    let mut table = toml::map::Map::new();
    for key in ["features", "parties", "base_points"] {
        if let Some(v) = value.get(key) {
            table.insert(key.to_string(), v.clone());
        }
    }
    toml::Value::Table(table)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.to_string_lossy().into_owned()
}

/// Starts `party serve` for `name`, with `fault` injected if given; its
/// stderr lines go to the receiver.
fn spawn_party(config: &str, fault: Option<&str>) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_jointscore"));
    command.args(["party", "serve", "--config", config]).env("RUST_LOG", "warn");
    if let Some(fault) = fault {
        command.env(jointscore_party::FAULT_ENV, fault);
    }
    let mut child =
        command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().expect("party");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

#[test]
fn a_label_that_is_not_0_or_1_is_refused_with_its_line_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = write(dir.path(), "fit.toml", FIT_SPEC);
    let mut labels = String::from("subject,label\n");
    for i in 0..60 {
        labels.push_str(&format!(
            "s{i},{}\n",
            if i == 4 {
                "2"
            } else if i % 3 == 0 {
                "1"
            } else {
                "0"
            }
        ));
    }
    let labels = write(dir.path(), "labels.csv", &labels);
    let out_path = dir.path().join("model.toml");
    let out = run(&[
        "lender",
        "fit",
        "--spec",
        &spec,
        "--labels",
        &labels,
        "--out",
        &out_path.to_string_lossy(),
        // Nothing listens there: the labels are refused before any call.
        "--coordinator",
        "http://127.0.0.1:9",
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("line 6 holds `2`"), "{}", text(&out));
    assert!(!out_path.exists() && !out_path.with_extension("partial").exists());
}

#[test]
fn a_fit_over_processes_matches_the_in_process_fit_and_a_party_dropping_out_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    write(dir.path(), "coordinator.toml", &format!("listen = \"127.0.0.1:{port}\"\nstore = \"coordinator.sqlite\"\n"));
    let mut processes = Processes(vec![spawn(&["coordinator", "serve", "--config", &path("coordinator.toml")])]);
    let spec = write(dir.path(), "fit.toml", FIT_SPEC);
    let out = run(&["lender", "fit", "--spec", &spec, "--check"]);
    assert!(out.status.success(), "{}", text(&out));
    let id = jointscore_learn::FitSpec::from_toml(FIT_SPEC).expect("spec").id();
    assert!(text(&out).contains(&format!("id: {id}")), "{}", text(&out));

    // Each party's book: every subject, training and test rows alike.
    let rows = generated();
    let (platform, bank) = books();
    for (name, book) in [("platform", &platform), ("bank", &bank)] {
        let config = write(
            dir.path(),
            &format!("{name}.toml"),
            &format!(
                "name = \"{name}\"\nlisten = \"127.0.0.1:0\"\ncoordinator = \"{url}\"\nstore = \"{name}.sqlite\"\napproved_fits = [\"{id}\"]\ntrust_coordinator = true\n"
            ),
        );
        let csv = write(dir.path(), &format!("{name}.csv"), book);
        let out = run(&["party", "import", "--config", &config, &csv]);
        assert!(out.status.success(), "{}", text(&out));
    }
    processes.0.push(spawn(&["party", "serve", "--config", &path("platform.toml")]));
    let (bank_node, _) = spawn_party(&path("bank.toml"), None);
    processes.0.push(bank_node);

    // The lender's labels: the study's training rows, in its order.
    let study = study();
    let mut labels = String::from("subject,label\n");
    for &i in study.train() {
        labels.push_str(&format!("{},{}\n", rows[i].0, u8::from(study.labels()[i])));
    }
    let labels = write(dir.path(), "labels.csv", &labels);
    let fit_args = |out: &str| -> Vec<String> {
        ["lender", "fit", "--spec", &spec, "--labels", &labels, "--out", out, "--coordinator", &url]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let args = fit_args(&path("model.toml"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Parties register as they come up: retry until both are in (a loaded
    // machine may take a while to start two processes).
    let mut fitted = Err(String::new());
    let until = std::time::Instant::now() + Duration::from_secs(120);
    while std::time::Instant::now() < until {
        let out = run(&args);
        if out.status.success() {
            fitted = Ok(out);
            break;
        }
        assert!(!Path::new(&path("model.toml")).exists(), "a failed fit wrote a model");
        fitted = Err(text(&out));
        std::thread::sleep(Duration::from_millis(250));
    }
    let out = fitted.unwrap_or_else(|e| panic!("no fit with both parties: {e}"));
    let said = text(&out);
    for phase in [
        "binning: platform: 2 features binned",
        "binning: bank: 2 features binned",
        "gram: matrix assembled from",
        "weights: iteration 1:",
        "written to",
    ] {
        assert!(said.contains(phase), "{phase} missing from: {said}");
    }
    let written = std::fs::read_to_string(path("model.toml")).expect("model written");
    let remote = jointscore_circuits::Model::from_toml(&written).expect("a valid model");
    assert!(remote.feature_index("risk").is_some() && remote.feature_index("safety").is_some(), "{written}");

    let local = jointscore_learn::fit(&study, &FitOptions::default(), "generated-card", &mut |_| {}).expect("fit");
    let features = scorecard(&written).get("features").and_then(|f| f.as_array()).map_or(0, Vec::len);
    assert!(features >= 2, "{written}");
    assert_eq!(scorecard(&written), scorecard(&local.model.to_toml()), "the fits differ:\n{written}");

    // A subject no party holds is named, and nothing is written.
    let unknown = write(
        dir.path(),
        "unknown.csv",
        &std::fs::read_to_string(&labels).expect("labels").replace("s0001,", "nobody,"),
    );
    let mut args = fit_args(&path("unknown-model.toml"));
    args[5] = unknown;
    let out = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("holds no record of 1 of the") && text(&out).contains("`nobody`"), "{}", text(&out));
    assert!(!Path::new(&path("unknown-model.toml")).exists());

    // The bank restarts with a fault that stalls it at the Gram step; once
    // it stalls it is killed, mid-fit: the fit fails naming it, and no
    // model file is written.
    let mut bank_node = processes.0.pop().expect("bank");
    bank_node.kill().expect("stop bank");
    bank_node.wait().expect("reaped");
    let (stalling, stalled) = spawn_party(&path("bank.toml"), Some("stall-fit-gram"));
    let mut bank = Processes(vec![stalling]);
    let dropped = path("dropped-model.toml");
    let mut failure = None;
    let until = std::time::Instant::now() + Duration::from_secs(180);
    while failure.is_none() && std::time::Instant::now() < until {
        let args = fit_args(&dropped);
        let fit = std::process::Command::new(env!("CARGO_BIN_EXE_jointscore"))
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("fit starts");
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let mut stalls = false;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match stalled.recv_timeout(left) {
                Ok(line) if line.contains("stalls the fit's gram step") => {
                    stalls = true;
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        if stalls {
            let mut child = bank.0.pop().expect("bank");
            child.kill().expect("kill bank");
            child.wait().expect("reaped");
            failure = Some(fit.wait_with_output().expect("fit ends"));
            break;
        }
        // The bank had not re-registered yet. Again.
        let _ = fit.wait_with_output();
        std::thread::sleep(Duration::from_millis(250));
    }
    let out = failure.expect("the bank stalled in a fit and was killed");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("party `bank` dropped out of the fit at step gram key"), "{}", text(&out));
    assert!(!Path::new(&dropped).exists() && !Path::new(&dropped).with_extension("partial").exists());
    drop(processes);
}

/// The generated book as each party holds it: (platform CSV, bank CSV).
fn books() -> (String, String) {
    let mut platform = String::from("subject,risk,region\n");
    let mut bank = String::from("subject,safety,noise\n");
    for (subject, risk, region, safety, noise, _) in &generated() {
        platform.push_str(&format!("{subject},{risk},{region}\n"));
        bank.push_str(&format!("{subject},{},{noise}\n", safety.map_or(String::new(), |s| s.to_string())));
    }
    (platform, bank)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_fit_needs_the_lenders_signature_and_is_in_the_ledger() {
    use jointscore_testkit::cluster::{Membership, init_consortium};

    let dir = tempfile::tempdir().expect("tempdir");
    let identities = dir.path().join("identities");
    let membership = Membership {
        name: "local".into(),
        parties: vec!["platform".into(), "bank".into()],
        lenders: vec![LENDER.into()],
        ..Membership::default()
    };
    let consortium = Arc::new(init_consortium(&identities, &membership).expect("consortium"));
    let config = jointscore_coordinator::CoordinatorConfig {
        listen: "127.0.0.1:0".into(),
        consortium: Some(identities.join("consortium.toml")),
        identity: Some(identities.join("coordinator.key")),
        ..jointscore_coordinator::CoordinatorConfig::with_store(dir.path().join("coordinator.sqlite"))
    };
    let store = Arc::new(jointscore_coordinator::SqliteStore::open(&config.store).expect("store"));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let coordinator =
        jointscore_coordinator::CoordinatorNode::start(config, store, listener).await.expect("coordinator");
    let url = coordinator.url();
    let id = jointscore_learn::FitSpec::from_toml(FIT_SPEC).expect("spec").id();
    let (platform, bank) = books();
    let mut nodes = Vec::new();
    for (name, book) in [("platform", platform), ("bank", bank)] {
        let config = jointscore_party::PartyConfig {
            approved_fits: vec![id.clone()],
            identity: Some(identities.join(format!("{name}.key"))),
            consortium: Some(identities.join("consortium.toml")),
            ..jointscore_party::PartyConfig::new(name, &url, dir.path().join(format!("{name}.sqlite")))
        };
        let records = Arc::new(jointscore_party::RecordStore::open(&config.store).expect("party store"));
        records.import_csv(book.as_bytes()).expect("book");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let node = jointscore_party::PartyNode::start(&config, records.clone(), listener, Duration::from_secs(10))
            .await
            .expect("party");
        nodes.push((node, records));
    }
    let study = study();
    let rows = generated();
    let labels: Vec<(String, bool)> = study.train().iter().map(|&i| (rows[i].0.clone(), study.labels()[i])).collect();

    // Unsigned: refused before any party sees the subjects.
    let e = jointscore_lender::fit(url.clone(), FIT_SPEC, &labels, None, &mut |_| {}).await.expect_err("unsigned");
    assert_eq!(e.code(), Some(jointscore_lender::Code::Unauthenticated), "{e}");
    assert!(e.to_string().contains("not signed by a current lender"), "{e}");

    let identity = jointscore_lender::FitIdentity {
        name: LENDER.into(),
        key: Arc::new(jointscore_identity::NodeKey::read(&identities.join(format!("{LENDER}.key"))).expect("key")),
        consortium,
    };
    let mut iterations = 0;
    let outcome = jointscore_lender::fit(url.clone(), FIT_SPEC, &labels, Some(&identity), &mut |event| {
        if matches!(event, jointscore_lender::FitEvent::Iteration(_)) {
            iterations += 1;
        }
    })
    .await
    .expect("a signed fit");
    assert!(iterations >= 1);
    let local = jointscore_learn::fit(&study, &FitOptions::default(), "generated-card", &mut |_| {}).expect("fit");
    assert_eq!(scorecard(&outcome.model.to_toml()), scorecard(&local.model.to_toml()));

    let (entries, _) = jointscore_lender::fetch_ledger(url.clone()).await.expect("ledger");
    let fits: Vec<&jointscore_audit::Event> =
        entries.iter().map(|e| &e.record).filter(|r| r.kind == jointscore_audit::EntryKind::Fit).collect();
    assert_eq!(fits.len(), 2, "{fits:?}");
    assert!(fits[0].detail.contains("failed") && fits[1].detail.ends_with("done"), "{fits:?}");
    assert_eq!(fits[1].model_id.as_deref(), Some(outcome.model.id()));
    assert_eq!(fits[1].parties, ["platform", "bank"]);

    // Each party's own log has the session, with the lender's signature.
    for (_, records) in &nodes {
        let log = records.log_entries(0).expect("party log");
        let fit = log.iter().find(|e| e.kind == jointscore_party::LogKind::Fit).expect("a fit entry");
        assert_eq!(fit.body["outcome"], "done", "{:?}", fit.body);
        assert_eq!(fit.body["lender"], LENDER);
        assert!(!fit.body["signature"].as_str().unwrap_or_default().is_empty());
    }
}
