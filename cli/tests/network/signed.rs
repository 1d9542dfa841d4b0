//! Signed contributions: the coordinator refuses what its consortium file
//! cannot attribute, and the lender checks who contributed.

use jointscore_identity::NodeKey;
use jointscore_party::PartyService;
use jointscore_proto::v1::ContributionHeader;
use tokio::sync::Mutex;
use tonic::Code;

use super::*;

/// What a party in the middle does to the real bank's signed answer.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Forgery {
    /// Drops the signature.
    Unsigned,
    /// Changes one ciphertext byte after signing.
    Tampered,
    /// Signs with a key the consortium does not list.
    ForeignKey,
    /// Answers with the signed contribution it gave for the previous job.
    Replayed,
    /// Strict mode: answers with the proven list it gave for the previous
    /// job, signed anew by the bank for this one (the bank itself cheating:
    /// its signature verifies, the proof is bound to the other job).
    ProofFromPreviousJob,
    /// Strict mode: the bank answers with an honest, signed, but unproven
    /// list.
    Unproven,
}

pub(crate) struct Forger {
    inner: PartyService,
    forgery: Forgery,
    previous: Mutex<Option<(ContributionHeader, Vec<u8>)>>,
    /// The real bank's identity key.
    key: Arc<NodeKey>,
}

/// The lender's request a contribution request forwards.
fn lender_request(asked: &ContributeRequest) -> jointscore_identity::LenderRequest {
    jointscore_identity::LenderRequest {
        request_id: asked.request_id.clone(),
        lender: asked.lender.clone(),
        key_id: asked.key_id.clone(),
        model_id: asked.model_id.clone(),
        plan: "pushdown".into(),
        subject: asked.subject.clone(),
        absent: asked.absent.clone(),
        time_ms: asked.time_ms,
        salt: asked.salt.clone(),
    }
}

impl Forger {
    async fn honest(&self, request: Request<ContributeRequest>) -> Result<(ContributionHeader, Vec<u8>), Status> {
        let mut stream = self.inner.contribute(request).await?.into_inner();
        let mut header = None;
        let mut bytes = Vec::new();
        while let Some(chunk) = tokio_stream::StreamExt::next(&mut stream).await {
            match chunk?.part {
                Some(Part::Header(h)) => header = Some(h),
                Some(Part::Data(d)) => bytes.extend(d),
                None => {}
            }
        }
        Ok((header.ok_or_else(|| Status::internal("no header"))?, bytes))
    }
}

#[tonic::async_trait]
impl Party for Forger {
    type ContributeStream = ChunkStream;
    type PsiOpenStream = PsiStream;
    type FitStream = FitStream;

    async fn fit(&self, _: Request<tonic::Streaming<FitFrame>>) -> Result<Response<FitStream>, Status> {
        Err(Status::unimplemented("no fits"))
    }

    async fn contribute(&self, request: Request<ContributeRequest>) -> Result<Response<ChunkStream>, Status> {
        let asked = request.get_ref().clone();
        let (mut header, mut bytes) = self.honest(request).await?;
        match self.forgery {
            Forgery::Unsigned => header.signature.clear(),
            Forgery::Tampered => {
                let last = bytes.len() - 1;
                bytes[last] ^= 1;
            }
            Forgery::ForeignKey => {
                // The right envelope over the right bytes, by a key the
                // consortium does not list for the bank.
                let envelope = jointscore_identity::ContributionBinding::answering(
                    &lender_request(&asked),
                    &asked.job_id,
                    "bank",
                    &header.consent,
                )
                .envelope(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)), header.signed_ms);
                header.signature = envelope.sign(&NodeKey::generate()).to_vec();
            }
            Forgery::Replayed => {
                let mut previous = self.previous.lock().await;
                match previous.take() {
                    Some(old) => (header, bytes) = old,
                    None => *previous = Some((header.clone(), bytes.clone())),
                }
            }
            Forgery::ProofFromPreviousJob => {
                let mut previous = self.previous.lock().await;
                match previous.take() {
                    Some((_, old)) => {
                        bytes = old;
                        let binding = jointscore_identity::ContributionBinding::answering(
                            &lender_request(&asked),
                            &asked.job_id,
                            "bank",
                            &header.consent,
                        );
                        let envelope =
                            binding.envelope(jointscore_identity::ciphertext_sha256(&bytes), header.signed_ms);
                        header.signature = envelope.sign(&self.key).to_vec();
                        header.len = bytes.len() as u64;
                    }
                    None => *previous = Some((header.clone(), bytes.clone())),
                }
            }
            Forgery::Unproven => {}
        }
        let mut messages = vec![Ok(ContributeChunk { part: Some(Part::Header(header)) })];
        messages.extend(bytes.chunks(1 << 20).map(|c| Ok(ContributeChunk { part: Some(Part::Data(c.to_vec())) })));
        Ok(Response::new(Box::pin(tokio_stream::iter(messages))))
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

    async fn sec_agg_advertise(
        &self,
        _: Request<SecAggAdvertiseRequest>,
    ) -> Result<Response<SecAggAdvertiseReply>, Status> {
        Err(Status::unimplemented("contributions only"))
    }

    async fn sec_agg_share_keys(
        &self,
        _: Request<SecAggShareKeysRequest>,
    ) -> Result<Response<SecAggShareKeysReply>, Status> {
        Err(Status::unimplemented("contributions only"))
    }

    async fn sec_agg_masked_input(
        &self,
        _: Request<SecAggMaskedInputRequest>,
    ) -> Result<Response<SecAggMaskedInputReply>, Status> {
        Err(Status::unimplemented("contributions only"))
    }

    async fn sec_agg_unmask(&self, _: Request<SecAggUnmaskRequest>) -> Result<Response<SecAggUnmaskReply>, Status> {
        Err(Status::unimplemented("contributions only"))
    }

    async fn sec_agg_consistency(
        &self,
        _: Request<SecAggConsistencyRequest>,
    ) -> Result<Response<SecAggConsistencyReply>, Status> {
        Err(Status::unimplemented("contributions only"))
    }
}

/// Serves a forger in front of the cluster's real bank store and key, and
/// registers it as the bank. In a strict-mode cluster it proves what it
/// encrypts (except for [`Forgery::Unproven`]).
pub(crate) async fn start_forger(cluster: &mut Cluster, forgery: Forgery) -> tokio::task::JoinHandle<()> {
    let bank = cluster.party("bank").expect("bank");
    bank.stop().await.expect("stop the real node");
    let key = Arc::new(NodeKey::read(bank.config.identity.as_deref().expect("signed cluster")).expect("bank key"));
    let mut inner = PartyService::new(&bank.config, bank.store.clone()).with_identity(key.clone());
    let path = bank.config.consortium.clone().expect("signed cluster");
    let consortium = jointscore_identity::Consortium::load(&path).expect("consortium");
    if let Some(crs) = jointscore_net::strict_crs(&consortium, &path).expect("crs")
        && !matches!(forgery, Forgery::Unproven)
    {
        inner = inner.with_crs(Arc::new(crs));
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("address"));
    let forger = Forger { inner, forgery, previous: Mutex::new(None), key };
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(PartyServer::new(forger))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    let mut client = CoordinatorClient::connect(cluster.coordinator_url()).await.expect("connect");
    client.register_party(RegisterPartyRequest { name: "bank".into(), address }).await.expect("register");
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contributions_the_consortium_cannot_attribute_are_refused() {
    let (mut cluster, mut lender) = cluster(small()).await;
    // Signed by every party: the decision verifies at the lender too.
    let d = lender.decide("seller-0001", "signed-0").await.expect("decision");
    let job = lender.job(&d.job_id).await.expect("job");
    let mut signers: Vec<&str> = job.contributions.iter().map(|c| c.party.as_str()).collect();
    signers.sort_unstable();
    assert_eq!(signers, ["bank", "logistics", "platform"]);
    assert!(job.contributions.iter().all(|c| c.signature.len() == 64 && c.ciphertext_sha256.len() == 64));

    for (i, (forgery, says)) in [
        (Forgery::Unsigned, "unsigned contribution"),
        (Forgery::Tampered, "signature of `bank`"),
        (Forgery::ForeignKey, "signature of `bank`"),
    ]
    .into_iter()
    .enumerate()
    {
        let server = start_forger(&mut cluster, forgery).await;
        let e = lender.decide("seller-0001", &format!("forged-{i}")).await.unwrap_err();
        assert_eq!(e.code(), Some(Code::Unauthenticated), "{forgery:?}: {e}");
        assert!(e.to_string().contains(says), "{forgery:?}: {e}");
        server.abort();
    }
    // A signed contribution from one job replayed into the next is refused:
    // the envelope names its job.
    let server = start_forger(&mut cluster, Forgery::Replayed).await;
    lender.decide("seller-0001", "replay-source").await.expect("first answer is honest");
    let e = lender.decide("seller-0001", "replay-target").await.unwrap_err();
    assert_eq!(e.code(), Some(Code::Unauthenticated), "{e}");
    server.abort();

    // The real bank again: decisions verify.
    cluster.party("bank").expect("bank").start().await.expect("restart");
    lender.decide("seller-0001", "signed-1").await.expect("decision");
    cluster.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_party_cannot_contribute_and_a_lender_checks_signatures() {
    let options = ClusterOptions { revoked: vec!["logistics".into()], ..small() };
    let (revoked, mut lender) = cluster(options).await;
    let e = lender.decide("seller-0001", "revoked-1").await.unwrap_err();
    assert_eq!(e.code(), Some(Code::PermissionDenied), "{e}");
    assert!(e.to_string().contains("the identity of `logistics` is revoked"), "{e}");
    revoked.stop().await.expect("stop");

    // An unsigned deployment: a lender that requires signatures refuses the
    // decision it gets, naming what is missing.
    let options = ClusterOptions { signed: false, ..small() };
    let (unsigned, _) = cluster(options).await;
    let mut strict = unsigned.lender(keys(), PlanKind::Pushdown).await.expect("lender");
    strict.register(LENDER).await.expect("the same keys, by their owner");
    let consortium = {
        let dir = tempfile::tempdir().expect("tempdir");
        let parties: Vec<String> = unsigned.model.parties().to_vec();
        let membership =
            jointscore_testkit::cluster::Membership { name: "other".into(), parties, ..Default::default() };
        jointscore_testkit::cluster::init_consortium(dir.path(), &membership).expect("consortium")
    };
    strict.require_signatures(Arc::new(consortium));
    let e = strict.decide("seller-0001", "strict-1").await.unwrap_err();
    assert!(matches!(e, LenderError::Unverified { .. }), "{e}");
    assert!(e.to_string().contains("no signed contribution from party `platform`"), "{e}");
    unsigned.stop().await.expect("stop");
}
