//! A lender using the library (`jointscore-lender`): generate a TFHE key
//! set, register it with the coordinator, ask for decisions, decrypt them.
//!
//! ```sh
//! # Against a consortium it starts on loopback (a coordinator and three
//! # party nodes with sample books, mutual TLS):
//! cargo run --release --example lender_client
//! # Against your coordinator, for the given subjects; add the consortium
//! # file and this lender's identity key when the consortium runs mutual TLS
//! # (`jointscore consortium init`), as the README's network walk-through:
//! cargo run --release --example lender_client -- URL SUBJECT... [--consortium FILE --identity KEY --as NAME]
//! ```
//!
//! The secret key never leaves this process. The coordinator evaluates the
//! model on ciphertexts with the evaluation key; every party computes its
//! inputs from its own records and encrypts them under the public key.

use std::sync::Arc;
use std::time::Instant;

use jointscore_circuits::{CROSS_BORDER_SELLER, PlanKind};
use jointscore_identity::{Consortium, NodeKey};
use jointscore_lender::{Lender, LenderKeys};
use jointscore_net::{NodeTls, Target};
use jointscore_testkit::cluster::{Cluster, ClusterOptions, LENDER};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut flag = |name: &str| -> Result<Option<String>, Error> {
        match args.iter().position(|a| a == name) {
            Some(i) if i + 1 < args.len() => Ok(Some(args.drain(i..=i + 1).nth(1).unwrap_or_default())),
            Some(_) => Err(format!("{name} needs a value").into()),
            None => Ok(None),
        }
    };
    let (consortium, identity, name) = (flag("--consortium")?, flag("--identity")?, flag("--as")?);
    let name = name.unwrap_or_else(|| LENDER.to_string());

    // 1. The key set: seconds. A real lender keeps it with
    //    `KeyFiles::new(dir).write(&keys, false)` (the secret key 0600) and
    //    reads it back with `KeyFiles::read`.
    let t = Instant::now();
    let keys = Arc::new(tokio::task::spawn_blocking(LenderKeys::generate).await??);
    println!("key set {} generated in {:.1} s", keys.id(), t.elapsed().as_secs_f64());

    // 2. Where the coordinator is, and who this lender is to it.
    let (target, subjects, consortium, key, cluster) = match args.split_first() {
        Some((url, subjects)) => {
            let consortium = consortium.map(|f| Consortium::load(f.as_ref())).transpose()?.map(Arc::new);
            let key = identity.map(|k| NodeKey::read(k.as_ref())).transpose()?.map(Arc::new);
            let tls = match (&consortium, &key) {
                // Mutual TLS: this lender's identity key is its client certificate.
                (Some(c), Some(key)) => NodeTls::new(key, &name, c.clone())?,
                _ => None,
            };
            (Target::new(url.clone(), tls), subjects.to_vec(), consortium, key, None)
        }
        None => {
            // No coordinator given: start a whole consortium on loopback.
            let cluster =
                Cluster::start(&ClusterOptions { sellers: 3, tls: true, ..ClusterOptions::default() }).await?;
            println!("loopback consortium: coordinator {}", cluster.coordinator_url());
            let subjects = cluster.book.iter().map(|(s, _)| s.clone()).collect();
            let key = Arc::new(NodeKey::read(&cluster.dir().join("identities").join(format!("{LENDER}.key")))?);
            (cluster.target(LENDER)?, subjects, cluster.consortium.clone(), Some(key), Some(cluster))
        }
    };

    // 3. Connect for a model and plan (pushdown: each party sends its
    //    partial results, the cheap circuit). In a consortium the lender
    //    signs its key registration and every request with its identity key
    //    (parties contribute to nothing else), and requires every asked
    //    party's signature on each decision.
    let mut lender = Lender::connect(target, keys, CROSS_BORDER_SELLER.to_string(), PlanKind::Pushdown).await?;
    match (consortium, key) {
        (Some(c), Some(key)) => lender.sign_as(&name, key, c),
        (Some(c), None) => lender.require_signatures(c),
        _ => {}
    }
    let model = lender.plan()?.model().clone();
    println!("model {} ({})", model.name(), &model.id()[..16]);

    // 4. Register: the compact public key and the compressed evaluation key
    //    (~60 MB) are uploaded; the coordinator keeps them under the key id.
    let t = Instant::now();
    let key_id = lender.register(&name).await?;
    println!("registered key set {key_id} in {:.1} s", t.elapsed().as_secs_f64());

    // 5. Decide: submit, wait for the job, fetch the encrypted result and
    //    decrypt it. The request id makes a retried request idempotent.
    let run = std::process::id();
    for subject in &subjects {
        let d = lender.decide(subject, &format!("example-{run}-{subject}")).await?;
        println!("{subject}: {} ({:.2} s, {} PBS)", d.bundle.describe(&model), d.phases.total.as_secs_f64(), d.pbs);
        if let Some(cluster) = &cluster {
            // On loopback we know the books, so check against the reference.
            assert_eq!(d.bundle, cluster.reference(subject)?, "encrypted result differs from the reference");
        }
    }

    if let Some(cluster) = cluster {
        cluster.stop().await?;
    }
    Ok(())
}
