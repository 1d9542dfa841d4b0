//! Statistics rounds over the services in one process: sums of the
//! books, a misbehaving party only drops itself, and requests that cannot
//! run are refused precisely.

use super::*;

/// The sums over `parties` copies of the model's party views of `book`,
/// computed directly from the book (not through the tally code).
fn expected_sums(book: &[(String, serde_json::Value)], honest_parties: u64) -> Vec<u64> {
    let int = |r: &serde_json::Value, c: &str| r.get(c).and_then(serde_json::Value::as_i64);
    let mut want = vec![0u64; 7];
    want[0] = honest_parties * book.len() as u64;
    for (_, r) in book {
        if let Some(debt) = int(r, "outstanding_debt_k") {
            let slot = match int(r, "late_repayments_12m") {
                None => 4,
                Some(l) if l < 1 => 1,
                Some(l) if l < 3 => 2,
                Some(_) => 3,
            };
            want[slot] += debt as u64;
        }
        want[5] += int(r, "gmv_12m_k").map_or(0, |x| x as u64);
        want[6] += int(r, "on_time_rate_bp").map_or(0, |x| x as u64);
    }
    want
}

fn values(result: &jointscore_lender::StatsResult) -> Vec<u64> {
    result.entries.iter().map(|(_, v)| *v).collect()
}

/// A party node that runs the real protocol but breaks one step.
#[derive(Clone, Copy, Debug)]
enum StatsFault {
    /// Breaks nothing: in a signed cluster, a registered node the
    /// consortium does not list.
    Stranger,
    /// Advertises a masking key that is not a ristretto255 point.
    BadKey,
    /// Answers the advertise step as another party.
    Impostor,
    /// Sends shares addressed to a party outside the round.
    StrangerShares,
    /// Sends its masked vector one entry short.
    ShortVector,
    /// Sends its masked vector twice over (too long).
    LongVector,
    /// Does not answer the masked-input step in time.
    Slow,
    /// Reveals a masking-key share for a party whose vector arrived (which
    /// would unmask that party's vector).
    RevealsTooMuch,
    /// Seals garbage for every recipient: no one can open its shares.
    TamperedShare,
}

struct StatsRogue {
    inner: jointscore_party::PartyService,
    fault: StatsFault,
}

#[tonic::async_trait]
impl Party for StatsRogue {
    type ContributeStream = ChunkStream;
    type PsiOpenStream = PsiStream;
    type FitStream = FitStream;

    async fn fit(&self, _: Request<tonic::Streaming<FitFrame>>) -> Result<Response<FitStream>, Status> {
        Err(Status::unimplemented("no fits"))
    }

    async fn psi_open(&self, _: Request<PsiOpenRequest>) -> Result<Response<PsiStream>, Status> {
        Err(Status::unimplemented("no PSI"))
    }

    async fn psi_query(&self, _: Request<PsiQueryRequest>) -> Result<Response<PsiAnswer>, Status> {
        Err(Status::unimplemented("no PSI"))
    }

    async fn psi_close(&self, _: Request<PsiCloseRequest>) -> Result<Response<PsiCloseReply>, Status> {
        Err(Status::unimplemented("no PSI"))
    }

    async fn contribute(&self, _: Request<ContributeRequest>) -> Result<Response<ChunkStream>, Status> {
        Err(Status::unimplemented("stats only"))
    }

    async fn sec_agg_advertise(
        &self,
        request: Request<SecAggAdvertiseRequest>,
    ) -> Result<Response<SecAggAdvertiseReply>, Status> {
        let mut reply = self.inner.sec_agg_advertise(request).await?.into_inner();
        match self.fault {
            StatsFault::BadKey => reply.masking_key = vec![0xff; 32],
            StatsFault::Impostor => reply.party = "bank".into(),
            _ => {}
        }
        Ok(Response::new(reply))
    }

    async fn sec_agg_share_keys(
        &self,
        request: Request<SecAggShareKeysRequest>,
    ) -> Result<Response<SecAggShareKeysReply>, Status> {
        let mut reply = self.inner.sec_agg_share_keys(request).await?.into_inner();
        match self.fault {
            StatsFault::StrangerShares => reply.shares.push(SecAggSealed { party_id: 99, ciphertext: vec![0; 96] }),
            StatsFault::TamperedShare => {
                for sealed in &mut reply.shares {
                    sealed.ciphertext.iter_mut().for_each(|b| *b = 7);
                }
            }
            _ => {}
        }
        Ok(Response::new(reply))
    }

    async fn sec_agg_masked_input(
        &self,
        request: Request<SecAggMaskedInputRequest>,
    ) -> Result<Response<SecAggMaskedInputReply>, Status> {
        let mut reply = self.inner.sec_agg_masked_input(request).await?.into_inner();
        match self.fault {
            StatsFault::ShortVector => reply.vector.truncate(reply.vector.len() - 4),
            StatsFault::LongVector => reply.vector = reply.vector.repeat(2),
            StatsFault::Slow => tokio::time::sleep(Duration::from_secs(4)).await,
            _ => {}
        }
        Ok(Response::new(reply))
    }

    async fn sec_agg_unmask(
        &self,
        request: Request<SecAggUnmaskRequest>,
    ) -> Result<Response<SecAggUnmaskReply>, Status> {
        let survivors = request.get_ref().survivors.clone();
        let mut reply = self.inner.sec_agg_unmask(request).await?.into_inner();
        if let StatsFault::RevealsTooMuch = self.fault {
            let other = survivors.into_iter().find(|&id| id != 4).expect("another survivor");
            reply.key_shares.push(SecAggShare { party_id: other, share: vec![1; 32] });
        }
        Ok(Response::new(reply))
    }

    async fn sec_agg_consistency(
        &self,
        request: Request<SecAggConsistencyRequest>,
    ) -> Result<Response<SecAggConsistencyReply>, Status> {
        self.inner.sec_agg_consistency(request).await
    }
}

/// Serves a rogue stats party named `zz-rogue` (so its id is 4, after the
/// three real parties) holding a book of its own, and registers it.
async fn start_stats_rogue(coordinator: &str, fault: StatsFault) -> tokio::task::JoinHandle<()> {
    let store = Arc::new(jointscore_party::RecordStore::in_memory().expect("store"));
    store.import_csv("subject,gmv_12m_k\nr1,1000\nr2,2000\n".as_bytes()).expect("rogue book");
    let config = jointscore_party::PartyConfig {
        approved_stats: vec![stats_spec().id()],
        ..jointscore_party::PartyConfig::new("zz-rogue", coordinator, "unused".into())
    };
    let inner = jointscore_party::PartyService::new(&config, store);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("address"));
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(PartyServer::new(StatsRogue { inner, fault }))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    let mut client = CoordinatorClient::connect(coordinator.to_string()).await.expect("connect");
    client.register_party(RegisterPartyRequest { name: "zz-rogue".into(), address }).await.expect("register");
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_rounds_sum_the_books_and_a_misbehaving_party_only_drops_itself() {
    let _quiet = CPU_HEAVY.lock().await;
    let spec = stats_spec();
    // Unsigned (development): the misbehaving node is not a consortium
    // member, which a signed cluster would drop at once (the next test).
    let options =
        ClusterOptions { sellers: 6, approved_stats: vec![spec.id()], signed: false, ..ClusterOptions::default() };
    let mut cluster = Cluster::start(&options).await.expect("cluster");
    let url = cluster.coordinator_url();
    let mut requester = jointscore_lender::StatsRequester::connect(&url).await.expect("connect");

    // Every party in: the exact sums, labelled in the spec's order.
    let result = requester.run(STATS_SPEC, "stats-all", WAIT).await.expect("round");
    assert_eq!(values(&result), expected_sums(&cluster.book, 3));
    assert_eq!(result.entries.iter().map(|(l, _)| l.clone()).collect::<Vec<_>>(), spec.labels());
    assert_eq!(result.included, ["bank", "logistics", "platform"]);
    assert!(result.dropped.is_empty(), "{:?}", result.dropped);
    // Idempotent: the same request id names the same job; another spec
    // under it is refused.
    let again = requester.run(STATS_SPEC, "stats-all", WAIT).await.expect("same job");
    assert_eq!(again, result);
    // A party holds the coordinator to the spec's threshold.
    let bank = format!("http://{}", cluster.parties[0].address().expect("running"));
    let mut party = jointscore_proto::v1::party_client::PartyClient::connect(bank).await.expect("connect");
    let lowered = SecAggAdvertiseRequest {
        round_id: "lowered".into(),
        spec_id: spec.id(),
        spec_toml: STATS_SPEC.into(),
        party: "platform".into(),
        party_id: 1,
        parties: 3,
        threshold: 1,
        session: vec![0; 16],
    };
    let e = party.sec_agg_advertise(lowered).await.expect_err("threshold below the spec's");
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    assert!(e.message().contains("threshold 1 is below the spec's 2"), "{}", e.message());
    let other = STATS_SPEC.replace("bands = [1, 3]", "bands = [2]");
    let e = requester.submit(&other, "stats-all").await.expect_err("other spec, same id");
    assert_eq!(e.code(), Some(Code::AlreadyExists), "{e}");

    // A member that is down drops at the first step; the others' sums come
    // out (its column, on-time rate, then sums to nothing).
    cluster.party("logistics").expect("party").stop().await.expect("stop");
    let result = requester.run(STATS_SPEC, "stats-down", WAIT).await.expect("round");
    let mut want = expected_sums(&cluster.book, 2);
    want[6] = 0;
    assert_eq!(values(&result), want);
    let [(party, at, reason)] = &result.dropped[..] else { panic!("{:?}", result.dropped) };
    assert_eq!((party.as_str(), at.as_str()), ("logistics", "advertise"), "{reason}");
    assert!(reason.contains("unreachable at http://127.0.0.1:"), "{reason}");
    cluster.party("logistics").expect("party").start().await.expect("restart");

    // A fourth party that misbehaves at one step is dropped, named with
    // the step and why, and the sum of the three others still comes out.
    for (i, (fault, step, says)) in [
        (StatsFault::BadKey, "advertise", "invalid public key"),
        (StatsFault::Impostor, "advertise", "answered as `bank`"),
        (StatsFault::StrangerShares, "share_keys", "material for party 99, which is not its neighbour"),
        (StatsFault::ShortVector, "masked_input", "masked vector of 24 bytes; the round aggregates 7 entries"),
        (StatsFault::LongVector, "masked_input", "masked vector of 56 bytes"),
        (StatsFault::Slow, "masked_input", "no answer within 2000 ms"),
    ]
    .into_iter()
    .enumerate()
    {
        let rogue = start_stats_rogue(&url, fault).await;
        let result = requester.run(STATS_SPEC, &format!("stats-rogue-{i}"), WAIT).await.expect("round");
        assert_eq!(values(&result), expected_sums(&cluster.book, 3), "{fault:?}");
        assert_eq!(result.included, ["bank", "logistics", "platform"], "{fault:?}");
        let [(party, at, reason)] = &result.dropped[..] else { panic!("{fault:?}: {:?}", result.dropped) };
        assert_eq!((party.as_str(), at.as_str()), ("zz-rogue", step), "{fault:?}: {reason}");
        assert!(reason.contains(says), "{fault:?}: `{reason}` should say `{says}`");
        rogue.abort();
    }

    // Faults after the masked vector arrived: the rogue's own vector is in
    // the sum (its book holds gmv 3000), and the round still completes.
    let mut with_rogue = expected_sums(&cluster.book, 3);
    with_rogue[0] += 2;
    with_rogue[5] += 3000;
    let rogue = start_stats_rogue(&url, StatsFault::RevealsTooMuch).await;
    let result = requester.run(STATS_SPEC, "stats-reveal", WAIT).await.expect("round");
    assert_eq!(values(&result), with_rogue);
    let [(party, at, reason)] = &result.dropped[..] else { panic!("{:?}", result.dropped) };
    assert_eq!((party.as_str(), at.as_str()), ("zz-rogue", "unmask"), "{reason}");
    assert!(reason.contains("revealed a key share for 1, not a dropped sharer"), "{reason}");
    rogue.abort();
    // Shares that fail authentication at their recipients: they report it,
    // do not mask with the sender, and the sender alone drops out.
    let rogue = start_stats_rogue(&url, StatsFault::TamperedShare).await;
    let result = requester.run(STATS_SPEC, "stats-tampered", WAIT).await.expect("round");
    assert_eq!(values(&result), expected_sums(&cluster.book, 3));
    let [(party, at, reason)] = &result.dropped[..] else { panic!("{:?}", result.dropped) };
    assert_eq!((party.as_str(), at.as_str()), ("zz-rogue", "share_keys"), "{reason}");
    assert!(reason.contains("failed authentication at `bank`, `logistics`, `platform`"), "{reason}");
    rogue.abort();
    cluster.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_requests_that_cannot_run_are_refused_precisely() {
    let spec = stats_spec();
    // No party approves the spec: all three drop at the first step.
    let options = ClusterOptions { sellers: 2, ..ClusterOptions::default() };
    let mut cluster = Cluster::start(&options).await.expect("cluster");
    let url = cluster.coordinator_url();
    let mut requester = jointscore_lender::StatsRequester::connect(&url).await.expect("connect");
    match requester.run(STATS_SPEC, "unapproved", WAIT).await {
        Err(LenderError::JobFailed { code, reason, .. }) => {
            assert_eq!(code, Code::Unavailable, "{reason}");
            for party in ["bank", "logistics", "platform"] {
                assert!(reason.contains(&format!("`{party}` at advertise: PermissionDenied")), "{reason}");
            }
            assert!(reason.contains("approved_stats"), "{reason}");
        }
        other => panic!("expected a failed round, got {other:?}"),
    }

    // Malformed requests never become jobs.
    let mut raw = CoordinatorClient::connect(url.clone()).await.expect("connect");
    for (what, spec_id, toml, want) in [
        ("wrong id", "ab".repeat(32), STATS_SPEC.to_string(), Code::InvalidArgument),
        ("invalid spec", spec.id(), STATS_SPEC.replace("kind = \"sum\"", "kind = \"max\""), Code::InvalidArgument),
        ("oversized spec", spec.id(), "#".repeat(100_000), Code::InvalidArgument),
    ] {
        let request =
            jointscore_proto::v1::RunStatsRequest { request_id: format!("bad-{what}"), spec_id, spec_toml: toml };
        let e = raw.run_stats(request).await.expect_err(what);
        assert_eq!(e.code(), want, "{what}: {}", e.message());
    }
    let e = raw
        .wait_stats(jointscore_proto::v1::WaitJobRequest { job_id: "stats-nope".into(), wait_ms: 10 })
        .await
        .expect_err("unknown job");
    assert_eq!(e.code(), Code::NotFound);

    // A party asked a step of a round it does not hold refuses.
    let bank = cluster.party("bank").expect("bank");
    let address = format!("http://{}", bank.address().expect("running"));
    let mut party = jointscore_proto::v1::party_client::PartyClient::connect(address).await.expect("connect");
    let e = party
        .sec_agg_share_keys(SecAggShareKeysRequest { round_id: "never-started".into(), roster: Vec::new() })
        .await
        .expect_err("unknown round");
    assert_eq!(e.code(), Code::NotFound, "{}", e.message());
    cluster.stop().await.expect("stop");
}

/// Signed rosters (issue 17, point 6). In a signed cluster the round runs
/// with every signature checked; a registered node the consortium does not
/// list is dropped at advertise. A rogue coordinator that relays a roster
/// with an invented party, or asks a party to unmask a survivor list that
/// another survivor did not sign, is refused before anything is shared or
/// revealed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_rosters_keep_invented_parties_out_of_a_round() {
    use jointscore_identity::{AdvertisedKeys, NodeKey, RoundBinding};
    use jointscore_proto::v1::{SecAggKeys, SecAggSurvivorSignature};

    let spec = stats_spec();
    let options = ClusterOptions { sellers: 4, approved_stats: vec![spec.id()], ..ClusterOptions::default() };
    assert!(options.signed);
    let mut cluster = Cluster::start(&options).await.expect("cluster");
    let url = cluster.coordinator_url();
    let mut requester = jointscore_lender::StatsRequester::connect(&url).await.expect("connect");
    let result = requester.run(STATS_SPEC, "signed-all", WAIT).await.expect("round");
    assert_eq!(values(&result), expected_sums(&cluster.book, 3));
    assert!(result.dropped.is_empty(), "{:?}", result.dropped);
    let stranger = start_stats_rogue(&url, StatsFault::Stranger).await;
    let result = requester.run(STATS_SPEC, "signed-stranger", WAIT).await.expect("round");
    assert_eq!(values(&result), expected_sums(&cluster.book, 3));
    let [(party, at, reason)] = &result.dropped[..] else { panic!("{:?}", result.dropped) };
    assert_eq!((party.as_str(), at.as_str()), ("zz-rogue", "advertise"), "{reason}");
    assert!(reason.contains("`zz-rogue` is not a member of the consortium"), "{reason}");
    stranger.abort();

    // The test plays a rogue coordinator with two real parties.
    let mut address = |name: &str| format!("http://{}", cluster.party(name).expect("party").address().expect("up"));
    let (bank, platform) = (address("bank"), address("platform"));
    let mut bank = jointscore_proto::v1::party_client::PartyClient::connect(bank).await.expect("connect");
    let mut platform = jointscore_proto::v1::party_client::PartyClient::connect(platform).await.expect("connect");
    let binding = |round_id: &str| RoundBinding {
        round_id: round_id.into(),
        session: [9; 16],
        spec_id: spec.id(),
        parties: 2,
        threshold: 2,
    };
    let invite = |round_id: &str, party: &str, party_id| SecAggAdvertiseRequest {
        round_id: round_id.into(),
        spec_id: spec.id(),
        spec_toml: STATS_SPEC.into(),
        party: party.into(),
        party_id,
        parties: 2,
        threshold: 2,
        session: vec![9; 16],
    };
    let entry = |r: &SecAggAdvertiseReply| SecAggKeys {
        party_id: r.party_id,
        encryption_key: r.encryption_key.clone(),
        masking_key: r.masking_key.clone(),
        party: r.party.clone(),
        signature: r.signature.clone(),
    };

    // An invented party: platform's genuine keys for the round, under a
    // name the consortium does not list, signed by a key of its own.
    let b = bank.sec_agg_advertise(invite("rogue-1", "bank", 1)).await.expect("advertise").into_inner();
    let p = platform.sec_agg_advertise(invite("rogue-1", "platform", 2)).await.expect("advertise").into_inner();
    assert_eq!(b.signature.len(), 64, "the party signs its keys");
    let mut ghost = entry(&p);
    ghost.party = "ghost".into();
    let keys = AdvertisedKeys {
        party: "ghost".into(),
        party_id: 2,
        encryption_key: p.encryption_key.clone().try_into().expect("32 bytes"),
        masking_key: p.masking_key.clone().try_into().expect("32 bytes"),
    };
    ghost.signature = binding("rogue-1").sign_advertise(&NodeKey::generate(), &keys).to_vec();
    let roster = vec![entry(&b), ghost];
    let e = bank
        .sec_agg_share_keys(SecAggShareKeysRequest { round_id: "rogue-1".into(), roster })
        .await
        .expect_err("an invented party");
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
    assert!(e.message().contains("party 2: `ghost` is not a member of the consortium"), "{}", e.message());
    // The bank left the round without sharing: the genuine roster now finds
    // no round.
    let roster = vec![entry(&b), entry(&p)];
    let e = bank
        .sec_agg_share_keys(SecAggShareKeysRequest { round_id: "rogue-1".into(), roster })
        .await
        .expect_err("the round is over at the bank");
    assert_eq!(e.code(), Code::NotFound, "{}", e.message());

    // A genuine round up to the consistency check; then the bank is asked
    // to unmask with platform's signature forged.
    let b = bank.sec_agg_advertise(invite("rogue-2", "bank", 1)).await.expect("advertise").into_inner();
    let p = platform.sec_agg_advertise(invite("rogue-2", "platform", 2)).await.expect("advertise").into_inner();
    let roster = vec![entry(&b), entry(&p)];
    let share = |roster: Vec<SecAggKeys>| SecAggShareKeysRequest { round_id: "rogue-2".into(), roster };
    let from_bank = bank.sec_agg_share_keys(share(roster.clone())).await.expect("bank shares").into_inner();
    let from_platform = platform.sec_agg_share_keys(share(roster)).await.expect("platform shares").into_inner();
    // The inbox of `to`: the share pair `from` sealed to it.
    let inbox = |from: u32, to: u32, shares: &SecAggShareKeysReply| SecAggMaskedInputRequest {
        round_id: "rogue-2".into(),
        inbox: shares
            .shares
            .iter()
            .filter(|s| s.party_id == to)
            .map(|s| SecAggSealed { party_id: from, ciphertext: s.ciphertext.clone() })
            .collect(),
    };
    bank.sec_agg_masked_input(inbox(2, 1, &from_platform)).await.expect("bank masks");
    platform.sec_agg_masked_input(inbox(1, 2, &from_bank)).await.expect("platform masks");
    let consistency = SecAggConsistencyRequest { round_id: "rogue-2".into(), survivors: vec![1, 2] };
    let signed = bank.sec_agg_consistency(consistency).await.expect("the bank signs").into_inner();
    let forged = binding("rogue-2").sign_survivors(&NodeKey::generate(), &[1, 2].into()).to_vec();
    let unmask = SecAggUnmaskRequest {
        round_id: "rogue-2".into(),
        survivors: vec![1, 2],
        signatures: vec![
            SecAggSurvivorSignature { party_id: 1, signature: signed.signature },
            SecAggSurvivorSignature { party_id: 2, signature: forged },
        ],
    };
    let e = bank.sec_agg_unmask(unmask).await.expect_err("a forged survivor signature");
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
    assert!(
        e.message().contains("signature by party 2: the signature of `platform` on the jointscore/secagg-survivors/v1"),
        "{}",
        e.message()
    );
    cluster.stop().await.expect("stop");
}
