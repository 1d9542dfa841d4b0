//! What every node serves beside its own service: `grpc.health.v1`, gRPC
//! server reflection, and a tracing span per call.
//!
//! Under mutual TLS these are served on the node's one TLS port. Health
//! answers any TLS client, with or without a certificate (it tells only
//! whether the node serves, so probes need no member identity); reflection
//! answers consortium members only, as the node's own service does.

use jointscore_identity::Role;
use tonic::codegen::http;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
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
