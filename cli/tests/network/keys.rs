//! Key registration: unknown, mismatched and malformed keys are refused
//! and the coordinator keeps serving.

use super::*;

fn upload(header: KeyHeader, public: &[u8], evaluation: &[u8]) -> Vec<KeyUpload> {
    let mut messages = vec![KeyUpload { part: Some(KeyPart::Header(header)) }];
    messages.extend(public.chunks(1 << 20).map(|c| KeyUpload { part: Some(KeyPart::PublicChunk(c.to_vec())) }));
    messages.extend(evaluation.chunks(1 << 20).map(|c| KeyUpload { part: Some(KeyPart::EvaluationChunk(c.to_vec())) }));
    messages
}

/// The lender's identity key in a signed cluster.
fn lender_key(cluster: &Cluster) -> jointscore_identity::NodeKey {
    jointscore_identity::NodeKey::read(&cluster.dir().join("identities").join(format!("{LENDER}.key"))).expect("key")
}

/// A key upload's header, signed by the cluster's lender: the checks
/// below are about the keys, not the signature.
fn header(cluster: &Cluster, key_id: &str, public: &[u8], evaluation: &[u8]) -> KeyHeader {
    let consortium = cluster.consortium.as_ref().expect("signed cluster").name.clone();
    let statement = jointscore_identity::KeyRegistration {
        key_id: key_id.into(),
        lender: LENDER.into(),
        consortium: consortium.clone(),
    };
    KeyHeader {
        key_id: key_id.into(),
        lender: LENDER.into(),
        public_len: public.len() as u64,
        evaluation_len: evaluation.len() as u64,
        consortium,
        signature: statement.sign(&lender_key(cluster)).to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_mismatched_and_malformed_keys_are_refused_and_the_coordinator_keeps_serving() {
    let cluster = Cluster::start(&small()).await.expect("cluster");
    let mut lender = cluster.lender(keys(), PlanKind::Pushdown).await.expect("lender");
    // Not registered yet.
    let e = lender.submit("seller-0001", "k-1").await.unwrap_err();
    assert_eq!(e.code(), Some(Code::FailedPrecondition), "{e}");
    assert!(e.to_string().contains(keys().id()), "{e}");

    let mut raw = CoordinatorClient::connect(cluster.coordinator_url()).await.expect("connect");
    let k = keys();
    let public = k.public.to_bytes().expect("public bytes");
    let evaluation = &k.evaluation;
    let id = k.id();
    let header = |key_id: &str, public: &[u8], evaluation: &[u8]| header(&cluster, key_id, public, evaluation);
    let mut cut_header = header(id, &public, evaluation);
    cut_header.evaluation_len += 10;
    let mut big = header(id, &public, evaluation);
    big.evaluation_len = EVALUATION_KEY_LIMIT + 1;
    let cases: Vec<(&str, Vec<KeyUpload>, Code)> = vec![
        (
            "mismatched key id",
            upload(header("00ff00ff00ff00ff", &public, evaluation), &public, evaluation),
            Code::FailedPrecondition,
        ),
        (
            "garbage public key",
            upload(header(id, b"garbage", evaluation), b"garbage", evaluation),
            Code::InvalidArgument,
        ),
        (
            "truncated public key",
            upload(header(id, &public[..public.len() / 2], evaluation), &public[..public.len() / 2], evaluation),
            Code::InvalidArgument,
        ),
        ("garbage evaluation key", upload(header(id, &public, &public), &public, &public), Code::InvalidArgument),
        ("fewer bytes than declared", upload(cut_header, &public, evaluation), Code::InvalidArgument),
        ("oversized evaluation key", upload(big, &public, b""), Code::InvalidArgument),
        (
            "no header",
            upload(header(id, &public, evaluation), &public, evaluation)[1..].to_vec(),
            Code::InvalidArgument,
        ),
    ];
    for (what, messages, want) in cases {
        let e = raw.register_keys(tokio_stream::iter(messages)).await.expect_err(what);
        assert_eq!(e.code(), want, "{what}: {}", e.message());
    }
    // Evaluation-key chunks before the public key's.
    let mut interleaved = upload(header(id, &public, evaluation), &public, evaluation);
    let first_public = interleaved.remove(1);
    interleaved.push(first_public);
    let e = raw.register_keys(tokio_stream::iter(interleaved)).await.expect_err("out of order");
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    // More bytes than declared.
    let mut over = upload(header(id, &public, evaluation), &public, evaluation);
    over.push(KeyUpload { part: Some(KeyPart::PublicChunk(vec![0])) });
    let e = raw.register_keys(tokio_stream::iter(over)).await.expect_err("overrun");
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());

    // Still serving: the real keys register and a decision completes.
    lender.register(LENDER).await.expect("register");
    lender.register(LENDER).await.expect("registering the same keys again is harmless");
    // Nobody can swap another evaluation key in under this key set's id.
    let swapped = &other_keys().evaluation;
    let e = raw
        .register_keys(tokio_stream::iter(upload(header(id, &public, swapped), &public, swapped)))
        .await
        .expect_err("swapped evaluation key");
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    assert!(e.message().contains("not the one key set"), "{}", e.message());
    // Nor register the lender's key set unsigned, or signed by anyone else.
    let mut unsigned = header(id, &public, evaluation);
    unsigned.signature.clear();
    let e = raw.register_keys(tokio_stream::iter(upload(unsigned, &public, evaluation))).await.expect_err("unsigned");
    assert_eq!(e.code(), Code::Unauthenticated, "{}", e.message());
    let mut forged = header(id, &public, evaluation);
    forged.signature = jointscore_identity::KeyRegistration {
        key_id: id.into(),
        lender: LENDER.into(),
        consortium: forged.consortium.clone(),
    }
    .sign(&jointscore_identity::NodeKey::generate())
    .to_vec();
    let e = raw.register_keys(tokio_stream::iter(upload(forged, &public, evaluation))).await.expect_err("forged");
    assert_eq!(e.code(), Code::Unauthenticated, "{}", e.message());
    // Decision requests whose model does not hold together.
    let model_id = Model::cross_border_seller().id().to_string();
    for (what, model_id, toml) in [
        ("model id of another model", "ab".repeat(32), CROSS_BORDER_SELLER.to_string()),
        ("invalid model", model_id.clone(), CROSS_BORDER_SELLER.replace("parties =", "partys =")),
    ] {
        let signed = jointscore_identity::LenderRequest {
            request_id: format!("bad-model-{what}"),
            lender: LENDER.into(),
            key_id: id.into(),
            model_id,
            plan: "pushdown".into(),
            subject: "seller-0001".into(),
            absent: Vec::new(),
            time_ms: 1,
            salt: "ab".repeat(32),
        };
        let signature = signed.sign(&lender_key(&cluster)).to_vec();
        let request = jointscore_proto::v1::DecideRequest {
            request_id: signed.request_id,
            key_id: signed.key_id,
            model_id: signed.model_id,
            model_toml: toml,
            subject: signed.subject,
            plan: jointscore_net::plan_to_wire(PlanKind::Pushdown),
            absent: Vec::new(),
            lender: signed.lender,
            time_ms: signed.time_ms,
            salt: signed.salt,
            signature,
        };
        let e = raw.decide(request).await.expect_err(what);
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {}", e.message());
    }
    let d = lender.decide("seller-0001", "k-2").await.expect("decision");
    assert_eq!(d.bundle, cluster.reference("seller-0001").expect("reference"));
    // A party asked for a key set the coordinator does not know.
    let e = raw
        .get_public_key(jointscore_proto::v1::GetPublicKeyRequest { key_id: "00ff00ff00ff00ff".into() })
        .await
        .expect_err("unknown key");
    assert_eq!(e.code(), Code::NotFound);
    cluster.stop().await.expect("stop");
}
