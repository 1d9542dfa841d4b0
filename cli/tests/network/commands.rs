//! The command line runs the system as separate processes.

use super::*;

#[test]
fn the_command_line_runs_the_system_as_separate_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");
    // Identities and certificates for every node and the consortium file
    // (mutual TLS on), as an operator would make them.
    let out = run(&[
        "consortium",
        "init",
        "--dir",
        &path(""),
        "--party",
        "platform",
        "--party",
        "logistics",
        "--party",
        "bank",
        "--lender",
        "lender",
    ]);
    assert!(out.status.success() && text(&out).contains("bank         party"), "{}", text(&out));
    assert!(text(&out).contains("lender       lender"), "{}", text(&out));
    let out = run(&["consortium", "init", "--dir", &path(""), "--party", "bank"]);
    assert!(
        !out.status.success() && text(&out).contains("never replaced"),
        "keys are never overwritten: {}",
        text(&out)
    );
    let out = run(&["consortium", "init", "--dir", &path("bad"), "--party", "bank", "--party", "../x"]);
    assert!(!out.status.success() && text(&out).contains("names a key file"), "{}", text(&out));
    assert!(!dir.path().join("bad").join("coordinator.key").exists(), "a refused list writes no key");
    std::fs::write(
        path("coordinator.toml"),
        format!(
            "listen = \"127.0.0.1:{port}\"\nstore = \"coordinator.sqlite\"\nlenders = [\"bank\", \"lender\"]\n\
             consortium = \"consortium.toml\"\nidentity = \"coordinator.key\"\n"
        ),
    )
    .expect("config");
    let mut processes = Processes(vec![spawn(&["coordinator", "serve", "--config", &path("coordinator.toml")])]);

    let model = Model::cross_border_seller();
    let book = sample::subjects(&model, 3, 5);
    let watch_id = jointscore_monitor::Spec::from_toml(jointscore_monitor::SELLER_WATCH).expect("spec").id();
    let registry = |name: &str| if name == "bank" { "asset_registry = true\n" } else { "" };
    for (index, name) in model.parties().iter().enumerate() {
        let config = path(&format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "name = \"{name}\"\nlisten = \"127.0.0.1:0\"\ncoordinator = \"{url}\"\nstore = \"{name}.sqlite\"\napproved_models = [\"{}\"]\napproved_monitors = [\"{}\"]\nidentity = \"{name}.key\"\nconsortium = \"consortium.toml\"\n{}",
                model.id(),
                watch_id,
                registry(name)
            ),
        )
        .expect("party config");
        let columns: Vec<&str> =
            model.features().iter().filter(|f| f.party == index).map(|f| f.name.as_str()).collect();
        let mut csv = format!("subject,{}\n", columns.join(","));
        for (subject, record) in &book {
            let view = party_view(&model, index, record);
            let cells: Vec<String> = columns
                .iter()
                .map(|c| match &view[*c] {
                    serde_json::Value::Null => String::new(),
                    serde_json::Value::String(s) => s.clone(),
                    v => v.to_string(),
                })
                .collect();
            csv.push_str(&format!("{subject},{}\n", cells.join(",")));
        }
        std::fs::write(path(&format!("{name}.csv")), csv).expect("csv");
        let out = run(&["party", "import", "--config", &config, &path(&format!("{name}.csv"))]);
        assert!(out.status.success() && text(&out).contains("3 subjects added"), "{}", text(&out));
        processes.0.push(spawn(&["party", "serve", "--config", &config]));
    }

    let keys_dir = path("lender-keys");
    let out = run(&["lender", "keygen", "--keys", &keys_dir]);
    assert!(out.status.success(), "{}", text(&out));
    let consortium_file = path("consortium.toml");
    let lender_key = path("lender.key");
    let member = ["--coordinator", url.as_str(), "--consortium", consortium_file.as_str(), "--identity", &lender_key];
    let lender = [&member[..], &["--keys", keys_dir.as_str()]].concat();
    let mut registered = false;
    for _ in 0..100 {
        let out = run(&[&["lender", "register"][..], &lender].concat());
        if out.status.success() {
            registered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(registered, "the lender could not register");
    // Under mutual TLS a client must prove a member's identity, in the
    // role the call is for.
    let plain = ["lender", "register", "--coordinator", &url, "--keys", &keys_dir, "--consortium", &consortium_file];
    let out = run(&plain);
    assert!(!out.status.success() && text(&out).contains("pass this member's key with --identity"), "{}", text(&out));
    let out = run(&[&plain[..], &["--identity", &path("bank.key")]].concat());
    assert!(
        !out.status.success() && text(&out).contains("`bank` is a party in the consortium; this call is for: lender"),
        "{}",
        text(&out)
    );

    // Without an alignment the lender refuses to ask, rather than tell a
    // party about a subject it may not hold.
    let alignment = path("alignment.sqlite");
    let out =
        run(&[&["lender", "decide", "--subject", "seller-0001", "--alignment", &alignment][..], &lender].concat());
    assert!(!out.status.success() && text(&out).contains("run `jointscore lender align"), "{}", text(&out));

    // Parties register as they come up; retry until all three align.
    let applicants = path("applicants.csv");
    std::fs::write(&applicants, "subject\nseller-0001\nseller-0002\nnobody\n").expect("applicants");
    let align =
        [&["lender", "align", "--as", "lender", "--subjects", &applicants, "--alignment", &alignment][..], &member]
            .concat();
    let mut aligned = None;
    for _ in 0..40 {
        let out = run(&align);
        if out.status.success() {
            aligned = Some(String::from_utf8_lossy(&out.stdout).into_owned());
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let aligned = aligned.expect("alignment through the command line");
    for (line, party) in aligned.lines().zip(model.parties()) {
        let v: serde_json::Value = serde_json::from_str(line).expect("one JSON line per party");
        assert_eq!(
            (v["party"].as_str(), v["asked"].as_u64(), v["held"].as_u64()),
            (Some(party.as_str()), Some(3), Some(2))
        );
        assert_eq!(v["party_holds"], 3, "{line}");
    }

    let mut decided = None;
    for attempt in 0..40 {
        let id = format!("cli-{attempt}");
        let out = run(&[
            &["lender", "decide", "--subject", "seller-0001", "--request-id", &id, "--alignment", &alignment][..],
            &lender,
        ]
        .concat());
        if out.status.success() {
            decided = Some(String::from_utf8_lossy(&out.stdout).into_owned());
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let decided = decided.expect("a decision through the command line");
    let line: serde_json::Value = serde_json::from_str(decided.trim()).expect("one JSON line");
    let record = jointscore_circuits::Record::from_json(&model, &book[0].1).expect("record");
    let want = jointscore_circuits::reference::evaluate(&model, &record).restricted(&model);
    assert_eq!(line["decision"], want.describe(&model), "{decided}");

    let job = line["job_id"].as_str().expect("job id").to_string();
    let out = run(&[&["lender", "show", &job][..], &lender].concat());
    assert!(out.status.success(), "{}", text(&out));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(shown["state"], "done");
    assert_eq!(shown["decision"], want.describe(&model));
    // What opens the ledger's commitment to the subject.
    let salt = shown["salt"].as_str().expect("salt").to_string();
    let commitment = shown["subject_commitment"].as_str().expect("commitment").to_string();
    assert!(jointscore_identity::opens_subject(&commitment, "seller-0001", &salt));

    // Aligned, a subject nobody holds is not asked about at all; unaligned,
    // the parties are asked and refuse it.
    let out = run(&[&["lender", "decide", "--subject", "nobody", "--alignment", &alignment][..], &lender].concat());
    assert!(!out.status.success());
    assert!(text(&out).contains("no party of the model holds this subject; no party was asked"), "{}", text(&out));
    let out = run(&[&["lender", "decide", "--subject", "nobody", "--unaligned"][..], &lender].concat());
    assert!(!out.status.success());
    assert!(text(&out).contains("NotFound") && text(&out).contains("nobody"), "{}", text(&out));

    // Many subjects: every request is sent before the first answer is
    // awaited; each line is its subject's, in file order, and a subject no
    // party holds fails alone.
    let out = run(&[
        &["lender", "decide", "--subjects", &applicants, "--request-id", "bulk", "--alignment", &alignment][..],
        &lender,
    ]
    .concat());
    assert!(!out.status.success() && text(&out).contains("1 decision(s) failed"), "{}", text(&out));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(lines.len(), 3, "{}", text(&out));
    for (line, subject) in lines.iter().zip(["seller-0001", "seller-0002"]) {
        let (_, values) = book.iter().find(|(s, _)| s == subject).expect("in the book");
        let record = jointscore_circuits::Record::from_json(&model, values).expect("record");
        let want = jointscore_circuits::reference::evaluate(&model, &record).restricted(&model);
        assert_eq!((line["subject"].as_str(), &line["decision"]), (Some(subject), &want.describe(&model)));
    }
    assert_eq!(lines[2]["subject"], "nobody");
    assert!(lines[2]["error"].as_str().is_some_and(|e| e.contains("no party was asked")), "{}", lines[2]);

    // Duplicate financing: the bank records a financing; the lender checks
    // a variant spelling of it and an asset nobody financed.
    let bank = path("bank.toml");
    let out = run(&["lender", "register-asset", "--config", &bank, "--id", "invoice:ACME Trading:INV-0001"]);
    assert!(out.status.success() && text(&out).contains("1 asset(s) added, 0 already registered"), "{}", text(&out));
    let assets = path("assets.csv");
    std::fs::write(
        &assets,
        "kind,issuer,number,reference\ninv,acme trading,0001-b,L2\ninvoice,ACME Trading,inv 0001,L3\n",
    )
    .expect("assets");
    let out = run(&["lender", "register-asset", "--config", &bank, "--file", &assets]);
    assert!(
        out.status.success() && text(&out).contains("1 asset(s) added, 1 already registered; 2 held"),
        "{}",
        text(&out)
    );
    let check = [&["lender", "check-asset", "--as", "lender", "--count"][..], &member].concat();
    let out = run(&[&check[..], &["--id", "inv:acme trading.:inv-0001", "--id", "po:acme trading:1"]].concat());
    assert!(out.status.success(), "{}", text(&out));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines[0],
        serde_json::json!({"asset": "invoice:acme trading:inv0001", "financed": true, "financed_by": 1})
    );
    assert_eq!(lines[1], serde_json::json!({"asset": "order:acme trading:1", "financed": false, "financed_by": 0}));
    // Refusals: a registry that is off, a malformed asset, a stranger.
    let out = run(&["lender", "register-asset", "--config", &path("platform.toml"), "--id", "po:a:1"]);
    assert!(!out.status.success() && text(&out).contains("`asset_registry` is off"), "{}", text(&out));
    let out = run(&[&check[..], &["--id", "invoice:acme"]].concat());
    assert!(!out.status.success() && text(&out).contains("expected KIND:ISSUER:NUMBER"), "{}", text(&out));
    std::fs::write(&assets, "kind,issuer,number\ninv,acme,1\nbond,acme,2\n").expect("assets");
    let out = run(&["lender", "register-asset", "--config", &bank, "--file", &assets]);
    assert!(
        !out.status.success() && text(&out).contains("line 3: invalid asset id: unknown asset kind `bond`"),
        "{}",
        text(&out)
    );
    let out = run(&[&["lender", "check-asset", "--as", "stranger", "--id", "po:a:1"][..], &member].concat());
    assert!(
        !out.status.success() && text(&out).contains("the requester `stranger` is not the caller `lender`"),
        "{}",
        text(&out)
    );
    // The bank's node key asks as the bank (a consortium lender); its one
    // other lender runs no node here, so the check fails naming it.
    let as_bank = ["--coordinator", &url, "--consortium", &consortium_file, "--identity", &path("bank.key")];
    let out = run(&[&["lender", "check-asset", "--as", "bank", "--id", "po:a:1"][..], &as_bank].concat());
    assert!(
        !out.status.success() && text(&out).contains("party `lender` is not registered with the coordinator"),
        "{}",
        text(&out)
    );

    // The audit ledger, checked by a member with the consortium file alone.
    let ledger = &as_bank;
    let receipts = path("bank.receipts");
    let out = run(&[&["audit", "receipts", "--as", "bank", "--out", &receipts][..], ledger].concat());
    assert!(out.status.success() && text(&out).contains("receipts for `bank`"), "{}", text(&out));
    let out = run(&[&["audit", "verify", "--receipts", &receipts][..], ledger].concat());
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("entries verified") && text(&out).contains("receipts are in it"), "{}", text(&out));
    let show = ["audit", "show", "--party", "bank", "--subject", "seller-0001", "--salt", &salt];
    let out = run(&[&show[..], ledger].concat());
    assert!(out.status.success(), "{}", text(&out));
    let shown: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert!(shown.iter().any(|e| e["record"]["kind"] == "contribution"), "{shown:?}");
    assert!(shown.iter().all(|e| e["record"]["subject"] == commitment.as_str()), "{shown:?}");
    assert!(!text(&out).contains("seller-0001"), "the ledger names no subject");
    // Under another consortium's file the coordinator's certificate is not
    // the one listed: the client refuses it in the handshake.
    let other = path("other");
    assert!(run(&["consortium", "init", "--dir", &other, "--party", "bank"]).status.success());
    let out = run(&[
        "audit",
        "verify",
        "--coordinator",
        &url,
        "--consortium",
        &format!("{other}/consortium.toml"),
        "--identity",
        &format!("{other}/bank.key"),
    ]);
    assert!(!out.status.success() && text(&out).contains("certificate"), "{}", text(&out));

    monitoring(&path, &model, &book, &lender);
    drop(processes);
}

/// After the loan: each party imports dated snapshots of its flows with
/// `party import --as-of`, the lender registers a portfolio, runs a round
/// over mutual TLS and reads and acknowledges its alerts, each command
/// answering with the exit status scripts use.
fn monitoring(path: &dyn Fn(&str) -> String, model: &Model, book: &[(String, serde_json::Value)], lender: &[&str]) {
    use jointscore_monitor::Day;
    use jointscore_testkit::history::{flow_field, flows};
    let end = Day::parse("2026-11-30").expect("day");
    // Snapshots every ten days, each holding the ten days' flow that ends
    // on it: the windows' sums are those of the daily flows.
    let daily: Vec<_> = book.iter().enumerate().map(|(i, (_, r))| flows(i, r, 5, end)).collect();
    for name in model.parties() {
        let field = flow_field(name).expect("a flow");
        for k in 0..6 {
            let day = Day::from_number(end.number() - 50 + 10 * k);
            let mut csv = format!("subject,{field}\n");
            for ((subject, _), f) in book.iter().zip(&daily) {
                let total: i64 = f
                    .iter()
                    .filter(|(d, ..)| d.number() > day.number() - 10 && *d <= day)
                    .map(|&(_, g, c, s)| match field {
                        "gmv" => g,
                        "collections" => c,
                        _ => s,
                    })
                    .sum();
                csv.push_str(&format!("{subject},{total}\n"));
            }
            let file = path(&format!("{name}-{day}.csv"));
            std::fs::write(&file, csv).expect("csv");
            let config = path(&format!("{name}.toml"));
            let out = run(&["party", "import", "--config", &config, "--as-of", &day.to_string(), &file]);
            assert!(out.status.success(), "{}", text(&out));
        }
    }
    let book_file = path("monitor.sqlite");
    let loans = path("loans.csv");
    std::fs::write(&loans, "subject\nseller-0001\nseller-0002\nseller-0003\n").expect("loans");
    let add = ["lender", "monitor", "add", "--book", &book_file, "--portfolio", "sellers", "--subjects", &loans];
    let out = run(&add);
    assert!(out.status.success() && text(&out).contains("3 loans under spec"), "{}", text(&out));
    let bad = path("bad.toml");
    std::fs::write(&bad, jointscore_monitor::SELLER_WATCH.replacen("days = 30", "days = 0", 1)).expect("bad");
    let out = run(&[
        "lender",
        "monitor",
        "add",
        "--book",
        &book_file,
        "--portfolio",
        "bad",
        "--subjects",
        &loans,
        "--spec",
        &bad,
    ]);
    assert!(!out.status.success() && text(&out).contains("windows[0].days` (line"), "{}", text(&out));

    let keys = lender.to_vec();
    let run_round = [
        &["lender", "monitor", "run", "--book", &book_file, "--portfolio", "sellers", "--day", "2026-11-30"][..],
        &keys,
    ]
    .concat();
    let out = run(&run_round);
    assert_eq!(out.status.code(), Some(2), "alerts raised: {}", text(&out));
    let shown = text(&out);
    for (seller, alert) in [
        ("seller-0001", "gmv_collapse"),
        ("seller-0002", "flows_disagree"),
        ("seller-0003", "collections_exceed_sales"),
    ] {
        assert!(shown.lines().any(|l| l.contains(seller) && l.contains(alert)), "{seller} {alert}: {shown}");
    }
    // Run again: every loan is settled, nothing is asked, nothing new.
    let out = run(&run_round);
    assert!(text(&out).contains("(0 asked now)"), "{}", text(&out));
    let alerts = ["lender", "monitor", "alerts", "--book", &book_file, "--json"];
    let out = run(&alerts);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3, "{}", text(&out));
    let out = run(&["lender", "monitor", "ack", "--book", &book_file, "--portfolio", "sellers"]);
    assert!(out.status.success() && text(&out).contains("3 alerts acknowledged"), "{}", text(&out));
    let out = run(&alerts);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}
