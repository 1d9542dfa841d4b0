//! Mutual TLS between consortium members, for tonic servers and clients.
//!
//! A node that holds an identity key and a consortium file with `mtls = true`
//! serves only over TLS, asks every client for its certificate, and dials
//! other nodes only over TLS, accepting a server only if it presents the
//! certificate the file lists for the member it meant to reach. On the
//! server side, [`NodeTls::admit`] names the member behind a request and
//! checks its role: no certificate is UNAUTHENTICATED; a member in the wrong
//! role, revoked or expired is PERMISSION_DENIED. A certificate the file
//! does not list fails the handshake itself.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use jointscore_identity::{Consortium, IdentityError, Member, MemberVerifier, NodeKey, Role, certificate_der};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};
use tonic::{Request, Status};

/// This node's side of mutual TLS: its certificate and key, and the
/// consortium it trusts.
#[derive(Clone)]
pub struct NodeTls {
    name: String,
    identity: Identity,
    consortium: Arc<Consortium>,
    /// Each member's certificate (DER) and name, decoded once: every call
    /// is matched against them.
    certificates: Arc<Vec<(Vec<u8>, String)>>,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeTls({} in {})", self.name, self.consortium.name)
    }
}

/// Seconds since the epoch, for expiry checks.
fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl NodeTls {
    /// TLS for the member holding `key`, which must be `name` in the
    /// consortium; `None` when the consortium does not run mutual TLS.
    pub fn new(key: &NodeKey, name: &str, consortium: Arc<Consortium>) -> Result<Option<NodeTls>, IdentityError> {
        if !consortium.mtls {
            return Ok(None);
        }
        let member = consortium.member(name)?;
        if member.public_key != key.public_hex() {
            return Err(IdentityError::Key(format!(
                "this identity key is not the one the consortium file lists for `{name}`"
            )));
        }
        let certificate = member
            .certificate
            .clone()
            .ok_or_else(|| IdentityError::Consortium(format!("member `{name}` has no `certificate`")))?;
        let identity = Identity::from_pem(certificate, key.pkcs8_pem()?.as_bytes());
        let mut certificates = Vec::with_capacity(consortium.members.len());
        for m in &consortium.members {
            if let Some(pem) = &m.certificate {
                certificates.push((certificate_der(pem)?.as_ref().to_vec(), m.name.clone()));
            }
        }
        Ok(Some(NodeTls { name: name.into(), identity, consortium, certificates: Arc::new(certificates) }))
    }

    /// TLS for whichever member `key` is: for clients that know their key
    /// but need not repeat their name. `None` when the consortium does not
    /// run mutual TLS.
    pub fn for_key(key: &NodeKey, consortium: Arc<Consortium>) -> Result<Option<NodeTls>, IdentityError> {
        let public = key.public_hex();
        let name = consortium
            .members
            .iter()
            .find(|m| m.public_key == public)
            .map(|m| m.name.clone())
            .ok_or_else(|| IdentityError::Key("this identity key is not one the consortium file lists".into()))?;
        NodeTls::new(key, &name, consortium)
    }

    /// The member this node is.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The consortium it trusts.
    pub fn consortium(&self) -> &Arc<Consortium> {
        &self.consortium
    }

    /// The server side: this node's certificate, and client certificates
    /// accepted only if the consortium file lists them. A client without a
    /// certificate completes the handshake so that [`NodeTls::admit`] can
    /// refuse it with UNAUTHENTICATED rather than an anonymous TLS alert.
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(Certificate::from_pem(self.consortium.certificates_pem()))
            .client_auth_optional(true)
    }

    /// An endpoint for `address` that reaches only the member `peer` in
    /// `role` (current, with a certificate), presenting this node's
    /// certificate. `address` must be an `https://` URL: a plain one would
    /// silently skip TLS.
    pub fn endpoint(&self, address: &str, peer: &str, role: Role) -> Result<Endpoint, String> {
        if !address.starts_with("https://") {
            return Err(format!(
                "`{address}`: the consortium runs mutual TLS, so the address must start with https://"
            ));
        }
        let verifier = MemberVerifier::new(&self.consortium, peer, role, now()).map_err(|e| e.to_string())?;
        Endpoint::from_shared(address.to_string())
            .map_err(|e| format!("`{address}`: {e}"))?
            .tls_config_with_verifier(ClientTlsConfig::new().identity(self.identity.clone()), verifier)
            .map_err(|e| format!("`{address}`: {e}"))
    }

    /// The member whose listed certificate `request` came with, whatever
    /// its role or standing.
    pub fn member_of<T>(&self, request: &Request<T>) -> Option<&Member> {
        let presented = request.peer_certs()?;
        let der = presented.first()?;
        let (_, name) = self.certificates.iter().find(|(c, _)| c.as_slice() == der.as_ref())?;
        self.consortium.member(name).ok()
    }

    /// The member that made `request`, if it is current and has one of
    /// `roles`.
    pub fn admit<T>(&self, request: &Request<T>, roles: &[Role]) -> Result<&Member, Status> {
        if request.peer_certs().is_none_or(|c| c.is_empty()) {
            return Err(Status::unauthenticated("no client certificate: this node serves consortium members only"));
        }
        let member = self
            .member_of(request)
            .ok_or_else(|| Status::unauthenticated("the client certificate is not one the consortium file lists"))?;
        let denied = |e: IdentityError| Status::permission_denied(e.to_string());
        let Some(role) = roles.iter().find(|r| **r == member.role) else {
            let allowed: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            return Err(Status::permission_denied(format!(
                "`{}` is a {} in the consortium; this call is for: {}",
                member.name,
                member.role.as_str(),
                allowed.join(", ")
            )));
        };
        self.consortium.require(&member.name, *role, now()).map_err(denied)
    }
}

/// An endpoint for `address`: over mutual TLS to the member `peer` in
/// `role` when `tls` is given, plaintext otherwise.
pub fn endpoint(address: &str, tls: Option<&NodeTls>, peer: &str, role: Role) -> Result<Endpoint, String> {
    match tls {
        Some(tls) => tls.endpoint(address, peer, role),
        None => Endpoint::from_shared(address.to_string()).map_err(|e| format!("`{address}`: {e}")),
    }
}

/// Where a client reaches the coordinator, and whether over mutual TLS.
#[derive(Clone, Debug)]
pub struct Target {
    /// The coordinator's URL.
    pub address: String,
    /// This client's TLS, when the consortium runs mutual TLS.
    pub tls: Option<NodeTls>,
}

impl Target {
    /// The coordinator at `address`, over mutual TLS as `tls` says.
    pub fn new(address: impl Into<String>, tls: Option<NodeTls>) -> Target {
        Target { address: address.into(), tls }
    }

    /// An endpoint that reaches only the consortium's coordinator (over
    /// TLS), or the address as it is (plaintext).
    pub fn endpoint(&self) -> Result<Endpoint, String> {
        match &self.tls {
            Some(tls) => {
                let coordinator = tls.consortium.coordinator().map_err(|e| e.to_string())?;
                tls.endpoint(&self.address, &coordinator.name, Role::Coordinator)
            }
            None => endpoint(&self.address, None, "", Role::Coordinator),
        }
    }
}

impl From<&str> for Target {
    fn from(address: &str) -> Target {
        Target::new(address, None)
    }
}

impl From<String> for Target {
    fn from(address: String) -> Target {
        Target::new(address, None)
    }
}

impl From<&String> for Target {
    fn from(address: &String) -> Target {
        Target::new(address.as_str(), None)
    }
}

impl From<&Target> for Target {
    fn from(target: &Target) -> Target {
        target.clone()
    }
}
