//! The coordinator's server: TLS, the gRPC server and its shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use jointscore_identity::{Consortium, NodeKey};
use jointscore_net::{NodeTls, strict_crs};
use jointscore_proto::MAX_MESSAGE_SIZE;
use jointscore_proto::v1::coordinator_server::CoordinatorServer;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;

use crate::config::CoordinatorConfig;
use crate::engine::Engine;
use crate::error::{CoordinatorError, Result};
use crate::ledger::Ledger;
use crate::service::CoordinatorService;
use crate::store::JobStore;

/// A running coordinator.
pub struct CoordinatorNode {
    address: SocketAddr,
    /// `https` under mutual TLS, `http` otherwise.
    scheme: &'static str,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::result::Result<(), tonic::transport::Error>>,
}

impl CoordinatorNode {
    /// Serves on `listener` over `store`, after re-running every job the
    /// store holds unfinished.
    pub async fn start(
        config: CoordinatorConfig,
        store: Arc<dyn JobStore>,
        listener: TcpListener,
    ) -> Result<CoordinatorNode> {
        let address = listener.local_addr().map_err(|e| CoordinatorError::Transport(e.to_string()))?;
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
                    "the consortium runs mutual TLS (`mtls = true`), so the coordinator needs its `identity` key"
                        .into(),
                ));
            }
            _ => None,
        };
        let mut server = Server::builder();
        match &tls {
            Some(tls) => {
                server =
                    server.tls_config(tls.server_config()).map_err(|e| CoordinatorError::Transport(e.to_string()))?;
            }
            None => tracing::warn!("serving without TLS: callers are not authenticated"),
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        let ledger = key.map(|k| Ledger::open(k, store.clone())).transpose()?;
        let crs = match (&consortium, &config.consortium) {
            (Some(consortium), Some(path)) => {
                strict_crs(consortium, path).map_err(|e| CoordinatorError::Config(e.to_string()))?.map(Arc::new)
            }
            _ => None,
        };
        let engine = Engine::new(store, config, consortium, tls, ledger, crs);
        let resumed = engine.recover()?;
        let service = CoordinatorService::new(engine);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(
            server
                .add_service(
                    CoordinatorServer::new(service)
                        .max_decoding_message_size(MAX_MESSAGE_SIZE)
                        .max_encoding_message_size(MAX_MESSAGE_SIZE),
                )
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = rx.await;
                }),
        );
        tracing::info!(%address, resumed, "coordinator serving");
        Ok(CoordinatorNode { address, scheme, shutdown: Some(tx), task })
    }

    /// The address it serves on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Its URL for clients.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.address)
    }

    /// Stops accepting requests and waits for the server to finish. Jobs in
    /// flight keep running on the runtime; whatever they have not finished
    /// when the process ends is resumed on the next start.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.task)
            .await
            .map_err(|e| CoordinatorError::Transport(e.to_string()))?
            .map_err(|e| CoordinatorError::Transport(e.to_string()))
    }

    /// Serves until the server fails.
    pub async fn wait(mut self) -> Result<()> {
        (&mut self.task)
            .await
            .map_err(|e| CoordinatorError::Transport(e.to_string()))?
            .map_err(|e| CoordinatorError::Transport(e.to_string()))
    }
}
