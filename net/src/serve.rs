//! What every node serves beside its own service: `grpc.health.v1`, gRPC
//! server reflection, and a tracing span per call.
//!
//! Under mutual TLS these are served on the node's one TLS port. Health
//! answers any TLS client, with or without a certificate (it tells only
//! whether the node serves, so probes need no member identity); reflection
//! answers consortium members only, as the node's own service does.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use jointscore_identity::Role;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::{Stream, StreamExt};
use tonic::codegen::http;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::{Request, Status};
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::HealthReporter;
use tonic_reflection::server::{v1, v1alpha};

use crate::NodeTls;

/// The service name that stands for the whole server in `grpc.health.v1`.
const SERVER: &str = "";

/// Longest request id a span records.
const REQUEST_ID_LIMIT: usize = 128;

/// A node's health as `grpc.health.v1` reports it: for the node's own
/// service (`jointscore.v1.Coordinator` or `jointscore.v1.Party`) and for
/// the server as a whole (the empty service name).
#[derive(Clone, Debug)]
pub struct Health {
    reporter: HealthReporter,
    service: &'static str,
}

impl Health {
    /// The health of the service named `service` (its
    /// [`tonic::server::NamedService::NAME`]), not serving until
    /// [`Health::serving`]; and the `grpc.health.v1.Health` service that
    /// answers from it.
    pub async fn new(service: &'static str) -> (Health, HealthServer<impl tonic_health::pb::health_server::Health>) {
        let (reporter, server) = tonic_health::server::health_reporter();
        let health = Health { reporter, service };
        health.set(ServingStatus::NotServing).await;
        (health, server)
    }

    /// Reports SERVING.
    pub async fn serving(&self) {
        self.set(ServingStatus::Serving).await;
    }

    /// Reports NOT_SERVING: the node is draining and takes no new work.
    pub async fn draining(&self) {
        self.set(ServingStatus::NotServing).await;
    }

    /// Forgets both statuses, which ends every `Health/Watch` stream (after
    /// it has seen the last status), so open watches do not hold a server
    /// that is draining its calls.
    pub async fn close(&self) {
        let mut reporter = self.reporter.clone();
        reporter.clear_service_status(self.service).await;
        reporter.clear_service_status(SERVER).await;
    }

    async fn set(&self, status: ServingStatus) {
        self.reporter.set_service_status(self.service, status).await;
        self.reporter.set_service_status(SERVER, status).await;
    }
}

/// Admits reflection calls from consortium members only, under mutual
/// TLS; everyone without it.
#[derive(Clone, Debug)]
pub struct MembersOnly(Option<NodeTls>);

impl Interceptor for MembersOnly {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(tls) = &self.0 {
            tls.admit(&request, &[Role::Party, Role::Coordinator, Role::Lender])?;
        }
        Ok(request)
    }
}

/// A reflection service, members only under mutual TLS.
pub type Reflection<S> = InterceptedService<S, MembersOnly>;

/// gRPC server reflection (`grpc.reflection.v1` and, for older clients
/// such as grpcurl before 1.9, `grpc.reflection.v1alpha`) listing
/// `service`, `grpc.health.v1.Health` and reflection itself, with the
/// descriptors of `jointscore.v1` and `grpc.health.v1`.
#[allow(clippy::type_complexity)] // Two opaque services, named once here.
pub fn reflection(
    service: &'static str,
    tls: Option<NodeTls>,
) -> Result<
    (
        Reflection<v1::ServerReflectionServer<impl v1::ServerReflection>>,
        Reflection<v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>>,
    ),
    tonic_reflection::server::Error,
> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(jointscore_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name(service)
            .with_service_name("grpc.health.v1.Health")
    };
    let admit = MembersOnly(tls);
    Ok((
        InterceptedService::new(builder().build_v1()?, admit.clone()),
        InterceptedService::new(builder().build_v1alpha()?, admit),
    ))
}

/// The span each call runs in (`Server::trace_fn`): the gRPC method, and
/// the caller's `x-request-id` (or `request-id`) header when it sends one.
pub fn request_span(request: &http::Request<()>) -> tracing::Span {
    let span = tracing::info_span!("rpc", method = request.uri().path(), request_id = tracing::field::Empty);
    let headers = request.headers();
    let id = headers.get("x-request-id").or_else(|| headers.get("request-id")).and_then(|v| v.to_str().ok());
    if let Some(id) = id {
        let end = id.char_indices().nth(REQUEST_ID_LIMIT).map_or(id.len(), |(i, _)| i);
        span.record("request_id", &id[..end]);
    }
    span
}

/// The connections a server accepts on `listener`, and the handle that
/// cuts them all at once ([`Cut::cut`]): the end of a graceful shutdown's
/// grace period. (Tonic's graceful shutdown waits for every open call, and
/// its connections outlive the server task.)
pub fn incoming(listener: TcpListener) -> (impl Stream<Item = std::io::Result<CuttableStream>>, Cut) {
    let (cut, cut_rx) = watch::channel(false);
    let stream = TcpListenerStream::new(listener).map(move |accepted| {
        accepted.map(|io| {
            // Tonic sets TCP_NODELAY only on connections it accepts itself.
            // Without it, Nagle's algorithm holds a response's last small
            // frame (a stream's trailers) until the peer's delayed ACK,
            // ~40 ms on Linux: a result fetched, a contribution sent.
            if let Err(e) = io.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY on an accepted connection");
            }
            let mut rx = cut_rx.clone();
            let cut = Box::pin(async move {
                // Dropping the handle cuts nothing: only `Cut::cut` does.
                if rx.wait_for(|cut| *cut).await.is_err() {
                    std::future::pending::<()>().await;
                }
            });
            CuttableStream { io, cut, is_cut: false }
        })
    });
    (stream, Cut(cut))
}

/// A node's gRPC server, running as a task.
pub type ServerTask = tokio::task::JoinHandle<Result<(), tonic::transport::Error>>;

/// What a server task ended with: `Err` names why it failed or panicked,
/// for the node's own error type.
pub fn server_ended(ended: Result<Result<(), tonic::transport::Error>, tokio::task::JoinError>) -> Result<(), String> {
    ended.map_err(|e| e.to_string())?.map_err(|e| e.to_string())
}

/// Waits for a server task to end.
pub async fn server_served(task: &mut ServerTask) -> Result<(), String> {
    server_ended(task.await)
}

/// The end of a grace period: cuts the connections still open, then waits
/// a second for the server task to notice, aborting it if it does not.
pub async fn cut_calls(cut: &Cut, task: &mut ServerTask) -> Result<(), String> {
    cut.cut();
    match tokio::time::timeout(std::time::Duration::from_secs(1), &mut *task).await {
        Ok(ended) => server_ended(ended),
        Err(_) => {
            task.abort();
            Ok(())
        }
    }
}

/// Cuts every connection [`incoming`] accepted.
#[derive(Debug)]
pub struct Cut(watch::Sender<bool>);

impl Cut {
    /// Every read and write on the connections fails from now on, so
    /// their calls end and the server task can finish.
    pub fn cut(&self) {
        self.0.send_replace(true);
    }
}

/// An accepted TCP connection that [`Cut::cut`] ends.
pub struct CuttableStream {
    io: TcpStream,
    cut: Pin<Box<dyn Future<Output = ()> + Send>>,
    is_cut: bool,
}

impl std::fmt::Debug for CuttableStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CuttableStream").field("io", &self.io).field("is_cut", &self.is_cut).finish()
    }
}

impl CuttableStream {
    /// Whether the connection has been cut (registering for the cut
    /// otherwise, so a connection waiting on its peer wakes up to it).
    fn cut(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.is_cut && self.cut.as_mut().poll(cx).is_ready() {
            self.is_cut = true;
        }
        self.is_cut
    }
}

fn aborted() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "the node's shutdown grace period is over")
}

impl AsyncRead for CuttableStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.cut(cx) {
            return Poll::Ready(Err(aborted()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for CuttableStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if self.cut(cx) {
            return Poll::Ready(Err(aborted()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.cut(cx) {
            return Poll::Ready(Err(aborted()));
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl Connected for CuttableStream {
    // The TCP stream's own, so that under TLS a call's peer certificates
    // are found where `NodeTls::admit` looks for them.
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.io.connect_info()
    }
}
