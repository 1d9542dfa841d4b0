//! Statistics rounds of a consortium over separate processes, surviving
//! a party killed mid-round.

use super::*;

pub(super) const CONSORTIUM_SPEC: &str = r#"
name = "consortium-q4"
deadline_ms = 5000

[[counter]]
name = "loans"
kind = "sum"
column = "loans"

[[counter]]
name = "defaults"
kind = "sum"
column = "defaults"

[[counter]]
name = "exposure_k"
kind = "sum"
column = "exposure_k"
segment = { column = "segment", values = ["retail", "sme"] }
"#;

/// Member `p`'s book: five loans files, as CSV, and its vector computed
/// by hand (loans, defaults, exposure retail, sme, other).
pub(super) fn member_book(p: u64) -> (String, [u64; 5]) {
    let segments = ["retail", "sme", "corporate"];
    let mut csv = String::from("subject,loans,defaults,exposure_k,segment\n");
    let mut sums = [0u64; 5];
    for i in 0..5u64 {
        let (loans, defaults, exposure) = (10 * p + i, i % 3, 100 * p + 7 * i);
        csv.push_str(&format!("m{p}-s{i},{loans},{defaults},{exposure},{}\n", segments[(i % 3) as usize]));
        sums[0] += loans;
        sums[1] += defaults;
        sums[2 + (i % 3) as usize] += exposure;
    }
    (csv, sums)
}

/// Starts `party serve --config CONFIG` with the fault hook that stalls it
/// at the masked-input step; the receiver gets a message each time it
/// stalls in a round.
pub(super) fn spawn_stalling_party(config: &str) -> (std::process::Child, std::sync::mpsc::Receiver<()>) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_jointscore"))
        .args(["party", "serve", "--config", config])
        .env("RUST_LOG", "warn")
        .env(jointscore_party::FAULT_ENV, "stall-masked-input")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the stalling party starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("stalls masked_input") {
                let _ = tx.send(());
            }
        }
    });
    (child, rx)
}

/// A statistics requester, once the coordinator at `url` accepts connections.
pub(super) async fn stats_requester_when_up(url: &str) -> jointscore_lender::StatsRequester {
    for _ in 0..200 {
        if let Ok(requester) = jointscore_lender::StatsRequester::connect(url).await {
            return requester;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("coordinator at {url} did not come up");
}

fn stats_json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

fn sums_of(result: &serde_json::Value) -> Vec<u64> {
    result["entries"].as_array().expect("entries").iter().map(|e| e["value"].as_u64().expect("value")).collect()
}

#[test]
fn a_stats_round_over_processes_survives_a_party_killed_mid_round() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    std::fs::write(
        path("coordinator.toml"),
        format!("listen = \"127.0.0.1:{port}\"\nstore = \"coordinator.sqlite\"\n"),
    )
    .expect("config");
    let mut processes = Processes(vec![spawn(&["coordinator", "serve", "--config", &path("coordinator.toml")])]);
    std::fs::write(path("stats.toml"), CONSORTIUM_SPEC).expect("spec");
    let out = run(&["stats", "check", "--spec", &path("stats.toml")]);
    assert!(out.status.success(), "{}", text(&out));
    let id = jointscore_stats::StatsSpec::from_toml(CONSORTIUM_SPEC).expect("spec").id();
    assert!(text(&out).contains(&format!("id: {id}")), "{}", text(&out));
    assert!(text(&out).contains("exposure_k[segment=sme]"), "{}", text(&out));

    let members = ["alpha", "beta", "gamma"];
    let mut books = Vec::new();
    for (p, name) in members.iter().enumerate() {
        let config = path(&format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "name = \"{name}\"\nlisten = \"127.0.0.1:0\"\ncoordinator = \"{url}\"\nstore = \"{name}.sqlite\"\napproved_stats = [\"{id}\"]\ntrust_coordinator = true\n"
            ),
        )
        .expect("party config");
        let (csv, sums) = member_book(p as u64);
        std::fs::write(path(&format!("{name}.csv")), csv).expect("csv");
        let out = run(&["party", "import", "--config", &config, &path(&format!("{name}.csv"))]);
        assert!(out.status.success(), "{}", text(&out));
        books.push(sums);
        processes.0.push(spawn(&["party", "serve", "--config", &config]));
    }
    let total =
        |members: &[usize]| -> Vec<u64> { (0..5).map(|k| members.iter().map(|&p| books[p][k]).sum()).collect() };
    let stats = |request_id: &str| {
        let args = ["stats", "run", "--spec", &path("stats.toml"), "--coordinator", &url, "--request-id", request_id];
        [&args[..], &["--json"]].concat().into_iter().map(String::from).collect::<Vec<_>>()
    };

    // Parties register as they come up: retry until all three are in.
    let mut all = None;
    for attempt in 0..60 {
        let out = run(&stats(&format!("all-{attempt}")).iter().map(String::as_str).collect::<Vec<_>>());
        if out.status.success() {
            let result = stats_json(&out);
            if result["included"].as_array().is_some_and(|a| a.len() == 3) {
                all = Some(result);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let all = all.expect("a round with every member");
    assert_eq!(sums_of(&all), total(&[0, 1, 2]), "{all}");

    // gamma restarts with a fault that stalls it at the masked-input step;
    // once it stalls, its process is killed, mid-round.
    let mut first = processes.0.pop().expect("gamma");
    first.kill().expect("stop gamma");
    first.wait().expect("reaped");
    let mut gamma = Processes(Vec::new());
    let (stalled, rx) = spawn_stalling_party(&path("gamma.toml"));
    gamma.0.push(stalled);
    let mut killed = None;
    for attempt in 0..20 {
        let args = stats(&format!("kill-{attempt}"));
        let round = std::process::Command::new(env!("CARGO_BIN_EXE_jointscore"))
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("stats run starts");
        if rx.recv_timeout(Duration::from_secs(8)).is_ok() {
            let mut child = gamma.0.pop().expect("gamma");
            child.kill().expect("kill gamma");
            child.wait().expect("reaped");
            killed = Some(round.wait_with_output().expect("round ends"));
            break;
        }
        // gamma had not re-registered yet: it dropped at advertise. Again.
        let _ = round.wait_with_output();
    }
    let out = killed.expect("gamma stalled in a round and was killed");
    assert!(out.status.success(), "{}", text(&out));
    let result = stats_json(&out);
    assert_eq!(sums_of(&result), total(&[0, 1]), "{result}");
    assert_eq!(result["included"], serde_json::json!(["alpha", "beta"]), "{result}");
    let dropped = &result["dropped"][0];
    assert_eq!(
        (dropped["party"].as_str(), dropped["step"].as_str()),
        (Some("gamma"), Some("masked_input")),
        "{result}"
    );
    drop(processes);
}
