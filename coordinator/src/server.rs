//! The coordinator's server: TLS, the gRPC server beside `grpc.health.v1`
//! and reflection, and its graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jointscore_identity::{Consortium, NodeKey};
use jointscore_net::{Cut, Health, NodeTls, ServerTask, reflection, request_span, strict_crs};
use jointscore_proto::MESSAGE_LIMIT;
use jointscore_proto::v1::coordinator_server::CoordinatorServer;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tonic::server::NamedService;
use tonic::transport::Server;

use crate::commit::Committer;
use crate::config::CoordinatorConfig;
use crate::drain::Drained;
use crate::engine::Engine;
use crate::error::{CoordinatorError, Result};
use crate::ledger::{Chain, Ledger};
use crate::service::CoordinatorService;
use crate::store::JobStore;

/// The service's name, as `grpc.health.v1` and reflection know it.
const SERVICE: &str = <CoordinatorServer<CoordinatorService> as NamedService>::NAME;

/// A running coordinator.
pub struct CoordinatorNode {
    address: SocketAddr,
    /// `https` under mutual TLS, `http` otherwise.
    scheme: &'static str,
    shutdown: Option<oneshot::Sender<()>>,
    /// Cuts the connections still open when a shutdown's grace ends.
    cut: Cut,
    task: ServerTask,
    engine: Arc<Engine>,
    health: Health,
    /// How long a graceful shutdown waits for calls and jobs in flight.
    grace: Duration,
}

impl CoordinatorNode {
    /// Serves on `listener` over `store`, after re-running every job the
    /// store holds unfinished; beside the coordinator service, serves
    /// `grpc.health.v1.Health` (SERVING from now until it drains) and server
    /// reflection, and runs each call in a span ([`request_span`]).
    pub async fn start(
        config: CoordinatorConfig,
        store: Arc<dyn JobStore>,
        listener: TcpListener,
    ) -> Result<CoordinatorNode> {
        let address = listener.local_addr().map_err(|e| CoordinatorError::Transport(e.to_string()))?;
        let grace = config.shutdown_grace();
        let Assembled { engine, tls } = assemble(config, store, None)?;
        let mut server = Server::builder().trace_fn(request_span);
        match &tls {
            Some(tls) => {
                server =
                    server.tls_config(tls.server_config()).map_err(|e| CoordinatorError::Transport(e.to_string()))?;
            }
            None => tracing::warn!("serving without TLS: callers are not authenticated"),
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        let (reflection_v1, reflection_v1alpha) =
            reflection(SERVICE, tls.clone()).map_err(|e| CoordinatorError::Config(format!("reflection: {e}")))?;
        let resumed = engine.recover()?;
        let service = CoordinatorService::new(engine.clone());
        let (health, health_service) = Health::new(SERVICE).await;
        let (tx, rx) = oneshot::channel::<()>();
        let (incoming, cut) = jointscore_net::incoming(listener);
        let task = tokio::spawn(
            server
                .add_service(health_service)
                .add_service(reflection_v1)
                .add_service(reflection_v1alpha)
                .add_service(
                    CoordinatorServer::new(service)
                        .max_decoding_message_size(MESSAGE_LIMIT)
                        .max_encoding_message_size(MESSAGE_LIMIT),
                )
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = rx.await;
                }),
        );
        health.serving().await;
        tracing::info!(%address, resumed, "coordinator serving");
        Ok(CoordinatorNode { address, scheme, shutdown: Some(tx), cut, task, engine, health, grace })
    }

    /// The address it serves on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Its URL for clients.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.address)
    }

    /// Stops accepting requests and waits for the calls in flight to end.
    /// Jobs in flight keep running on the runtime; whatever they have not
    /// finished when the process ends is resumed on the next start. (A
    /// process that exits uses [`CoordinatorNode::shutdown`].)
    pub async fn stop(mut self) -> Result<()> {
        self.health.draining().await;
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.health.close().await;
        served(&mut self.task).await
    }

    /// Serves until the server fails.
    pub async fn wait(mut self) -> Result<()> {
        served(&mut self.task).await
    }

    /// Serves until the server fails, or until `signal` completes: then
    /// shuts down gracefully ([`CoordinatorNode::shutdown`]).
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> Result<Drained> {
        tokio::select! {
            ended = &mut self.task => {
                served_as(ended)?;
                Err(CoordinatorError::Transport("the server stopped on its own".into()))
            }
            () = signal => self.shutdown().await,
        }
    }

    /// Shuts down gracefully within `shutdown_grace_ms`: reports
    /// NOT_SERVING, stops accepting connections, lets the calls in flight
    /// end and the jobs running finish, starts no job any more (one
    /// accepted meanwhile stays in the store); when the grace period ends,
    /// cuts the calls still open and stops the jobs still running where
    /// they are, unfinished in the store, for the next start to resume.
    /// Then closes the store. No job is marked failed for the shutdown.
    pub async fn shutdown(self) -> Result<Drained> {
        let grace = self.grace;
        self.shutdown_within(grace).await
    }

    /// [`CoordinatorNode::shutdown`] with another grace period.
    pub async fn shutdown_within(mut self, grace: Duration) -> Result<Drained> {
        let deadline = Instant::now() + grace;
        tracing::info!(grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX), "coordinator draining");
        self.health.draining().await;
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.health.close().await;
        // Calls and jobs drain together: a lender's WaitJob ends when its
        // job does.
        let CoordinatorNode { task, engine, cut, .. } = &mut self;
        let calls = async {
            match tokio::time::timeout_at(deadline, &mut *task).await {
                Ok(ended) => (false, served_as(ended)),
                Err(_) => (true, cut_calls(cut, task).await),
            }
        };
        let ((calls_cut, served), (jobs_finished, jobs_interrupted)) =
            tokio::join!(calls, engine.tasks.drain(deadline));
        // What was queued for the store is committed before it closes.
        let commits = engine.commits.clone();
        tokio::task::spawn_blocking(move || commits.close())
            .await
            .map_err(|e| CoordinatorError::Store(format!("the store's writer did not stop: {e}")))?;
        let store = &engine.store;
        let jobs_unfinished = store.unfinished()?.len() + store.unfinished_stats()?.len();
        store.close()?;
        let drained = Drained { jobs_finished, jobs_interrupted, jobs_unfinished, calls_cut };
        tracing::info!(
            jobs_finished,
            jobs_interrupted,
            jobs_unfinished,
            calls_cut,
            "coordinator stopped; store closed (unfinished jobs resume at the next start)"
        );
        served.map(|()| drained)
    }
}

/// A coordinator's engine as a front end or a worker runs it, and the TLS
/// it serves and dials parties with.
pub(crate) struct Assembled {
    pub(crate) engine: Arc<Engine>,
    pub(crate) tls: Option<NodeTls>,
}

/// Loads the consortium and identity key, checks them against each other,
/// opens the ledger's chain and the store's writer, and builds the engine
/// (`worker`: a worker process's name).
pub(crate) fn assemble(
    config: CoordinatorConfig,
    store: Arc<dyn JobStore>,
    worker: Option<String>,
) -> Result<Assembled> {
    let consortium = config.consortium.as_deref().map(Consortium::load).transpose();
    let consortium = consortium.map_err(|e| CoordinatorError::Config(e.to_string()))?;
    let key = config.identity.as_deref().map(NodeKey::read).transpose();
    let key = key.map_err(|e| CoordinatorError::Config(e.to_string()))?;
    if let (Some(consortium), Some(key)) = (&consortium, &key) {
        let listed = consortium.coordinator().map_err(|e| CoordinatorError::Config(e.to_string()))?;
        if listed.public_key != key.public_hex() {
            return Err(CoordinatorError::Config(format!(
                "the identity key is not the one the consortium file lists for coordinator `{}`",
                listed.name
            )));
        }
    }
    let consortium = consortium.map(Arc::new);
    let tls = match (&consortium, &key) {
        (Some(consortium), Some(key)) => {
            let name = &consortium.coordinator().map_err(|e| CoordinatorError::Config(e.to_string()))?.name;
            NodeTls::new(key, name, consortium.clone()).map_err(|e| CoordinatorError::Config(e.to_string()))?
        }
        (Some(consortium), None) if consortium.mtls => {
            return Err(CoordinatorError::Config(
                "the consortium runs mutual TLS (`mtls = true`), so the coordinator needs its `identity` key".into(),
            ));
        }
        _ => None,
    };
    let chain = key.map(|k| Chain::open(k, &*store)).transpose()?.map(Arc::new);
    let commits = Committer::start(store.clone(), chain.clone())?;
    let ledger = chain.map(|chain| Ledger::new(chain, commits.clone(), store.clone()));
    let crs = match (&consortium, &config.consortium) {
        (Some(consortium), Some(path)) => {
            strict_crs(consortium, path).map_err(|e| CoordinatorError::Config(e.to_string()))?.map(Arc::new)
        }
        _ => None,
    };
    let engine = Engine::new(store, commits, config, consortium, tls.clone(), ledger, crs, worker);
    Ok(Assembled { engine, tls })
}

/// What the server task ended with.
async fn served(task: &mut ServerTask) -> Result<()> {
    jointscore_net::server_served(task).await.map_err(CoordinatorError::Transport)
}

fn served_as(
    ended: std::result::Result<std::result::Result<(), tonic::transport::Error>, tokio::task::JoinError>,
) -> Result<()> {
    jointscore_net::server_ended(ended).map_err(CoordinatorError::Transport)
}

/// Cuts the connections still open and waits (briefly) for the server to
/// notice.
async fn cut_calls(cut: &Cut, task: &mut ServerTask) -> Result<()> {
    jointscore_net::cut_calls(cut, task).await.map_err(CoordinatorError::Transport)
}
