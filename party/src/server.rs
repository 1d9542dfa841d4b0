//! The party node's server: TLS, the gRPC server beside `grpc.health.v1`
//! and reflection, registration with the coordinator, and its graceful
//! shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jointscore_identity::{Consortium, NodeKey};
use jointscore_net::{Cut, Health, NodeTls, ServerTask, Target, reflection, request_span, strict_crs};
use jointscore_proto::MESSAGE_LIMIT;
use jointscore_proto::v1::RegisterPartyRequest;
use jointscore_proto::v1::coordinator_client::CoordinatorClient;
use jointscore_proto::v1::party_server::PartyServer;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::server::NamedService;
use tonic::transport::Server;

use crate::config::PartyConfig;
use crate::error::{PartyError, Result};
use crate::service::PartyService;
use crate::store::RecordStore;

/// The service's name, as `grpc.health.v1` and reflection know it.
const SERVICE: &str = <PartyServer<PartyService> as NamedService>::NAME;

/// A running party node.
pub struct PartyNode {
    name: String,
    address: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    /// Cuts the connections still open when a shutdown's grace ends.
    cut: Cut,
    task: ServerTask,
    health: Health,
}

impl PartyNode {
    /// Serves `store` on `listener` and registers with the coordinator
    /// (retrying for `register_for` while it is not up yet). Beside the
    /// party service it serves `grpc.health.v1.Health` (SERVING once
    /// registered, until it drains) and server reflection, and runs each
    /// call in a span ([`request_span`]).
    pub async fn start(
        config: &PartyConfig,
        store: Arc<RecordStore>,
        listener: TcpListener,
        register_for: Duration,
    ) -> Result<PartyNode> {
        if config.consortium.is_none() && !config.trust_coordinator {
            return Err(PartyError::Config(format!(
                "party `{}` has no `consortium` file, so it cannot check who asks for its data: set `consortium` \
                 (and `identity`), or, for a development setup only, `trust_coordinator = true`",
                config.name
            )));
        }
        if config.consortium.is_none() {
            tracing::warn!(
                party = %config.name,
                "trust_coordinator: no consortium file; lender signatures on requests and key sets are not checked"
            );
        }
        let address = listener.local_addr().map_err(|e| PartyError::Transport(e.to_string()))?;
        let mut service = PartyService::new(config, store);
        let key = config.identity.as_deref().map(NodeKey::read).transpose();
        let key = key.map_err(|e| PartyError::Config(e.to_string()))?.map(Arc::new);
        let consortium = match &config.consortium {
            Some(path) => Some(Arc::new(Consortium::load(path).map_err(|e| PartyError::Config(e.to_string()))?)),
            None => None,
        };
        let tls = node_tls(config, key.as_deref(), consortium.clone())?;
        if let Some(key) = key {
            service = service.with_identity(key);
        }
        if let (Some(consortium), Some(path)) = (&consortium, &config.consortium) {
            service = service.with_consortium(consortium.clone());
            service = match strict_crs(consortium, path).map_err(|e| PartyError::Config(e.to_string()))? {
                Some(crs) => service.with_crs(Arc::new(crs)),
                None => service,
            };
        }
        let mut server = Server::builder().trace_fn(request_span);
        let (reflection_v1, reflection_v1alpha) =
            reflection(SERVICE, tls.clone()).map_err(|e| PartyError::Config(format!("reflection: {e}")))?;
        let (health, health_service) = Health::new(SERVICE).await;
        if let Some(tls) = &tls {
            server = server.tls_config(tls.server_config()).map_err(|e| PartyError::Transport(e.to_string()))?;
            service = service.with_tls(tls.clone());
        } else {
            tracing::warn!(party = %config.name, "serving without TLS: any client that reaches this port is answered");
        }
        let (tx, rx) = oneshot::channel::<()>();
        let (incoming, cut) = jointscore_net::incoming(listener);
        let task = tokio::spawn(
            server
                .add_service(health_service)
                .add_service(reflection_v1)
                .add_service(reflection_v1alpha)
                .add_service(PartyServer::new(service).max_decoding_message_size(MESSAGE_LIMIT))
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = rx.await;
                }),
        );
        let scheme = if tls.is_some() { "https" } else { "http" };
        let advertise = config.advertise.clone().unwrap_or_else(|| format!("{scheme}://{address}"));
        let coordinator = Target::new(config.coordinator.clone(), tls);
        if let Err(e) = register(config, &coordinator, &advertise, register_for).await {
            task.abort();
            return Err(e);
        }
        health.serving().await;
        tracing::info!(party = %config.name, %address, "party node serving");
        Ok(PartyNode { name: config.name.clone(), address, shutdown: Some(tx), cut, task, health })
    }

    /// The address the node serves on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops accepting requests and waits for the calls in flight to end.
    pub async fn stop(mut self) -> Result<()> {
        self.health.draining().await;
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.health.close().await;
        served(&mut self.task).await
    }

    /// Serves until the server fails or the process is stopped.
    pub async fn wait(mut self) -> Result<()> {
        served(&mut self.task).await
    }

    /// Serves until the server fails, or until `signal` completes: then
    /// shuts down gracefully within `grace` ([`PartyNode::shutdown`]).
    pub async fn run_until(mut self, signal: impl Future<Output = ()>, grace: Duration) -> Result<()> {
        tokio::select! {
            ended = &mut self.task => {
                served_as(ended)?;
                Err(PartyError::Transport("the server stopped on its own".into()))
            }
            () = signal => self.shutdown(grace).await,
        }
    }

    /// Shuts down gracefully: reports NOT_SERVING, stops accepting
    /// connections and lets the calls in flight (contributions being
    /// encrypted, aggregation steps, PSI queries) end, for at most `grace`;
    /// then cuts the calls still open. The coordinator treats a cut call as
    /// a party that did not answer.
    pub async fn shutdown(mut self, grace: Duration) -> Result<()> {
        tracing::info!(
            party = %self.name,
            grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
            "party node draining"
        );
        self.health.draining().await;
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.health.close().await;
        let (calls_cut, served) = match tokio::time::timeout(grace, &mut self.task).await {
            Ok(ended) => (false, served_as(ended)),
            Err(_) => (true, cut_calls(&self.cut, &mut self.task).await),
        };
        tracing::info!(party = %self.name, calls_cut, "party node stopped");
        served
    }
}

/// What the server task ended with.
async fn served(task: &mut ServerTask) -> Result<()> {
    jointscore_net::server_served(task).await.map_err(PartyError::Transport)
}

fn served_as(
    ended: std::result::Result<std::result::Result<(), tonic::transport::Error>, tokio::task::JoinError>,
) -> Result<()> {
    jointscore_net::server_ended(ended).map_err(PartyError::Transport)
}

/// Cuts the connections still open and waits (briefly) for the server to
/// notice.
async fn cut_calls(cut: &Cut, task: &mut ServerTask) -> Result<()> {
    jointscore_net::cut_calls(cut, task).await.map_err(PartyError::Transport)
}

/// The node's mutual TLS, when its consortium file runs it.
fn node_tls(
    config: &PartyConfig,
    key: Option<&NodeKey>,
    consortium: Option<Arc<Consortium>>,
) -> Result<Option<NodeTls>> {
    let Some(consortium) = consortium else {
        return Ok(None);
    };
    match key {
        Some(key) => NodeTls::new(key, &config.name, consortium).map_err(|e| PartyError::Config(e.to_string())),
        None if consortium.mtls => Err(PartyError::Config(
            "the consortium runs mutual TLS (`mtls = true`), so the node needs its `identity` key".into(),
        )),
        None => Ok(None),
    }
}

async fn register(config: &PartyConfig, coordinator: &Target, advertise: &str, patience: Duration) -> Result<()> {
    let deadline = Instant::now() + patience;
    loop {
        let attempt = async {
            let channel = coordinator
                .endpoint()?
                .connect()
                .await
                .map_err(|e| std::error::Error::source(&e).map_or(e.to_string(), ToString::to_string))?;
            let mut client = CoordinatorClient::new(channel);
            client
                .register_party(RegisterPartyRequest { name: config.name.clone(), address: advertise.into() })
                .await
                .map_err(|s| s.message().to_string())
        };
        match attempt.await {
            Ok(_) => return Ok(()),
            Err(message) if Instant::now() >= deadline => {
                return Err(PartyError::Coordinator { address: config.coordinator.clone(), message });
            }
            Err(message) => {
                tracing::warn!(coordinator = %config.coordinator, %message, "registration failed; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}
