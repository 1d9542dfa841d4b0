//! Parties that misbehave on purpose: malformed, oversized or slow
//! contributions fail the job naming the party, and a full queue is
//! RESOURCE_EXHAUSTED while retries still find their job.

use super::*;

/// A party that misbehaves in one chosen way.
#[derive(Clone, Copy, Debug)]
enum Rogue {
    Garbage,
    Truncated,
    Oversized,
    Impostor,
    Slow,
    /// Answers with a status only the coordinator itself may use.
    Overloaded,
}

#[tonic::async_trait]
impl Party for Rogue {
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
        let head = |party: &str, len: u64| ContributeChunk {
            part: Some(Part::Header(ContributionHeader {
                party: party.into(),
                len,
                blocks: 1,
                encrypt_us: 1,
                ..Default::default()
            })),
        };
        let data = |bytes: &[u8]| ContributeChunk { part: Some(Part::Data(bytes.to_vec())) };
        let messages = match self {
            Rogue::Garbage => vec![head("bank", 10), data(b"0123456789")],
            Rogue::Truncated => vec![head("bank", 1000), data(b"0123456789")],
            Rogue::Oversized => vec![head("bank", CONTRIBUTION_SIZE_LIMIT + 1), data(b"0")],
            Rogue::Impostor => vec![head("platform", 1), data(b"0")],
            Rogue::Overloaded => return Err(Status::resource_exhausted("x".repeat(100_000))),
            Rogue::Slow => {
                tokio::time::sleep(Duration::from_secs(6)).await;
                vec![head("bank", 1), data(b"0")]
            }
        };
        Ok(Response::new(Box::pin(tokio_stream::iter(messages.into_iter().map(Ok)))))
    }

    async fn sec_agg_advertise(
        &self,
        _: Request<SecAggAdvertiseRequest>,
    ) -> Result<Response<SecAggAdvertiseReply>, Status> {
        Err(Status::unimplemented("rogue"))
    }

    async fn sec_agg_share_keys(
        &self,
        _: Request<SecAggShareKeysRequest>,
    ) -> Result<Response<SecAggShareKeysReply>, Status> {
        Err(Status::unimplemented("rogue"))
    }

    async fn sec_agg_masked_input(
        &self,
        _: Request<SecAggMaskedInputRequest>,
    ) -> Result<Response<SecAggMaskedInputReply>, Status> {
        Err(Status::unimplemented("rogue"))
    }

    async fn sec_agg_unmask(&self, _: Request<SecAggUnmaskRequest>) -> Result<Response<SecAggUnmaskReply>, Status> {
        Err(Status::unimplemented("rogue"))
    }

    async fn sec_agg_consistency(
        &self,
        _: Request<SecAggConsistencyRequest>,
    ) -> Result<Response<SecAggConsistencyReply>, Status> {
        Err(Status::unimplemented("rogue"))
    }
}

/// Serves `rogue` and registers it with the coordinator as the bank.
async fn impersonate_bank(coordinator: &str, rogue: Rogue) -> tokio::task::JoinHandle<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("address"));
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(PartyServer::new(rogue))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    let mut client = CoordinatorClient::connect(coordinator.to_string()).await.expect("connect");
    client.register_party(RegisterPartyRequest { name: "bank".into(), address }).await.expect("register");
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_contributions_and_slow_parties_fail_the_job_naming_the_party() {
    let _quiet = CPU_HEAVY.lock().await;
    // Unsigned: the rogues' bytes are to reach the decoder (signature
    // failures are tested on their own).
    let options = ClusterOptions { party_deadline: Duration::from_secs(4), signed: false, ..small() };
    let (mut cluster, mut lender) = cluster(options).await;
    // The honest parties fetch the lender's key once: a warm-up, so that
    // under a loaded machine they answer well within the deadline below.
    // A cold first fetch may itself miss the deadline; the key is cached
    // all the same, so the warm-up is tried again.
    for attempt in 0.. {
        match lender.decide("seller-0002", &format!("rogue-warm-{attempt}")).await {
            Ok(_) => break,
            Err(e) if attempt < 2 => eprintln!("warm-up {attempt}: {e}"),
            Err(e) => panic!("the honest parties never answered within the deadline: {e}"),
        }
    }
    for (i, (rogue, want, says)) in [
        (Rogue::Garbage, Code::InvalidArgument, "malformed"),
        (Rogue::Truncated, Code::InvalidArgument, "truncated"),
        (Rogue::Oversized, Code::InvalidArgument, "exceeds the limit"),
        (Rogue::Impostor, Code::InvalidArgument, "answered as `platform`"),
        (Rogue::Slow, Code::DeadlineExceeded, "did not answer within 4000 ms"),
        (Rogue::Overloaded, Code::Unavailable, "failed (ResourceExhausted)"),
    ]
    .into_iter()
    .enumerate()
    {
        let server = impersonate_bank(&cluster.coordinator_url(), rogue).await;
        let (code, reason) = failure(&mut lender, "seller-0001", &format!("rogue-{i}")).await;
        assert_eq!(code, want, "{rogue:?}: {reason}");
        assert!(reason.contains("`bank`") && reason.contains(says), "{rogue:?}: {reason}");
        assert!(reason.len() < 2000, "a party's message is bounded: {} bytes", reason.len());
        server.abort();
    }
    // The real bank registers again (a restart) and the coordinator, still
    // serving, decides correctly.
    let bank = cluster.party("bank").expect("bank");
    bank.stop().await.expect("stop");
    bank.start().await.expect("start");
    let d = lender.decide("seller-0001", "rogue-after").await.expect("decision");
    assert_eq!(d.bundle, cluster.reference("seller-0001").expect("reference"));
    cluster.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_resource_exhausted_and_retries_still_find_their_job() {
    // Unsigned, so the rogue's bytes reach the decoder and are refused there.
    let options = ClusterOptions { queue_capacity: 1, signed: false, ..small() };
    let (cluster, mut lender) = cluster(options).await;
    let _slow = impersonate_bank(&cluster.coordinator_url(), Rogue::Slow).await;
    let first = lender.submit("seller-0001", "q-1").await.expect("accepted");
    let e = lender.submit("seller-0002", "q-2").await.unwrap_err();
    assert_eq!(e.code(), Some(Code::ResourceExhausted), "{e}");
    let retry = lender.submit("seller-0001", "q-1").await.expect("a retry is not refused");
    assert!(retry.existing && retry.job_id == first.job_id);
    let e = lender.fetch(&first.job_id).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::FailedPrecondition), "a result before the job ends: {e}");
    // Once the slow job ends (the rogue's bytes are refused), there is room.
    let e = lender.wait(&first.job_id, WAIT).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::InvalidArgument), "{e}");
    lender.submit("seller-0002", "q-2").await.expect("accepted once there is room");
    cluster.stop().await.expect("stop");
}
