//! The party node's server: TLS, the gRPC server, registration with the
//! coordinator and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jointscore_identity::{Consortium, NodeKey};
use jointscore_net::{NodeTls, Target, strict_crs};
use jointscore_proto::MAX_MESSAGE_SIZE;
use jointscore_proto::v1::RegisterPartyRequest;
use jointscore_proto::v1::coordinator_client::CoordinatorClient;
use jointscore_proto::v1::party_server::PartyServer;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;

use crate::config::PartyConfig;
use crate::error::{PartyError, Result};
use crate::service::PartyService;
use crate::store::RecordStore;

/// A running party node.
pub struct PartyNode {
    address: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::result::Result<(), tonic::transport::Error>>,
}

impl PartyNode {
    /// Serves `store` on `listener` and registers with the coordinator
    /// (retrying for `register_for` while it is not up yet).
    pub async fn start(
        config: &PartyConfig,
        store: Arc<RecordStore>,
        listener: TcpListener,
        register_for: Duration,
    ) -> Result<PartyNode> {
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
            service = match strict_crs(consortium, path).map_err(|e| PartyError::Config(e.to_string()))? {
                Some(crs) => service.with_crs(Arc::new(crs)),
                None => service,
            };
        }
        let mut server = Server::builder();
        if let Some(tls) = &tls {
            server = server.tls_config(tls.server_config()).map_err(|e| PartyError::Transport(e.to_string()))?;
            service = service.with_tls(tls.clone());
        } else {
            tracing::warn!(party = %config.name, "serving without TLS: any client that reaches this port is answered");
        }
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(
            server
                .add_service(PartyServer::new(service).max_decoding_message_size(MAX_MESSAGE_SIZE))
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
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
        tracing::info!(party = %config.name, %address, "party node serving");
        Ok(PartyNode { address, shutdown: Some(tx), task })
    }

    /// The address the node serves on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops serving and waits for the server to finish.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.task)
            .await
            .map_err(|e| PartyError::Transport(e.to_string()))?
            .map_err(|e| PartyError::Transport(e.to_string()))
    }

    /// Serves until the server fails or the process is stopped.
    pub async fn wait(mut self) -> Result<()> {
        (&mut self.task)
            .await
            .map_err(|e| PartyError::Transport(e.to_string()))?
            .map_err(|e| PartyError::Transport(e.to_string()))
    }
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
