//! Certificates bound to node identities, for mutual TLS.
//!
//! A member's certificate is self-signed by its ed25519 identity key and
//! listed, with that key, in the consortium file. There is no certificate
//! authority: a peer is accepted when it presents exactly the certificate
//! the file lists for the member expected and proves, in the handshake,
//! that it holds the identity key. So whoever can forge a member's TLS
//! session can also forge its signatures, and no one else can.

use std::sync::Arc;

use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use zeroize::Zeroizing;

use crate::consortium::{Consortium, Member, Role};
use crate::error::{IdentityError, Result};
use crate::key::NodeKey;

impl NodeKey {
    /// The key in PKCS#8 PEM form, as TLS libraries read it. Wiped on drop.
    pub fn pkcs8_pem(&self) -> Result<Zeroizing<String>> {
        self.signing_key()
            .to_pkcs8_pem(Default::default())
            .map_err(|e| IdentityError::Key(format!("PKCS#8 encoding: {e}")))
    }

    /// A certificate for this key, self-signed by it, naming `name` (PEM).
    /// It is usable for both ends of a TLS connection and never expires by
    /// itself: expiry and revocation are the consortium file's.
    pub fn certificate(&self, name: &str) -> Result<String> {
        let bad = |e: rcgen::Error| IdentityError::Key(format!("certificate for `{name}`: {e}"));
        let der = Zeroizing::new(
            self.signing_key()
                .to_pkcs8_der()
                .map_err(|e| IdentityError::Key(format!("PKCS#8 encoding: {e}")))?
                .as_bytes()
                .to_vec(),
        );
        let pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(der.as_slice()),
            &rcgen::PKCS_ED25519,
        )
        .map_err(bad)?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(bad)?;
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "jointscore");
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        // Not a CA: a self-signed certificate is accepted only as itself.
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        Ok(params.self_signed(&pair).map_err(bad)?.pem())
    }
}

/// The DER bytes of a PEM certificate.
pub fn certificate_der(pem: &str) -> Result<CertificateDer<'static>> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| IdentityError::Consortium(format!("not a PEM certificate: {e}")))
}

/// Checks that `member`'s certificate parses and certifies its listed key.
pub(crate) fn check_certificate(member: &Member, pem: &str) -> Result<()> {
    let bad = |m: String| IdentityError::Consortium(format!("member `{}`: `certificate` {m}", member.name));
    let der = certificate_der(pem).map_err(|e| bad(e.to_string()))?;
    let cert = webpki::EndEntityCert::try_from(&der).map_err(|e| bad(format!("does not parse: {e}")))?;
    let mut key = [0u8; 32];
    hex::decode_to_slice(&member.public_key, &mut key).map_err(|_| bad("has no valid key to match".into()))?;
    let listed = ed25519_dalek::VerifyingKey::from_bytes(&key)
        .ok()
        .and_then(|k| k.to_public_key_der().ok())
        .ok_or_else(|| bad("has no valid key to match".into()))?;
    if cert.subject_public_key_info().as_ref() != listed.as_bytes() {
        return Err(bad("certifies another key than `public_key`".into()));
    }
    Ok(())
}

impl Consortium {
    /// Every member's certificate, PEM, one after the other: what a server
    /// trusts client certificates from. Revoked and expired members stay
    /// in, so that they are refused by name after the handshake rather
    /// than with an anonymous TLS alert.
    pub fn certificates_pem(&self) -> String {
        self.members.iter().filter_map(|m| m.certificate.as_deref()).collect::<Vec<_>>().join("\n")
    }

    /// The member whose listed certificate is exactly `der`.
    pub fn member_by_certificate(&self, der: &[u8]) -> Option<&Member> {
        self.members.iter().find(|m| {
            m.certificate.as_deref().and_then(|pem| certificate_der(pem).ok()).is_some_and(|c| c.as_ref() == der)
        })
    }
}

/// Accepts a TLS server only if it presents the certificate the consortium
/// file lists for one member, and proves it holds that member's key.
#[derive(Debug)]
pub struct MemberVerifier {
    name: String,
    certificate: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl MemberVerifier {
    /// A verifier for `name`, which must be a current member with `role`
    /// at `now` (unix seconds) and have a certificate.
    pub fn new(consortium: &Consortium, name: &str, role: Role, now: u64) -> Result<Arc<MemberVerifier>> {
        let member = consortium.require(name, role, now)?;
        let pem = member
            .certificate
            .as_deref()
            .ok_or_else(|| IdentityError::Consortium(format!("member `{name}` has no `certificate`")))?;
        Ok(Arc::new(MemberVerifier {
            name: name.into(),
            certificate: certificate_der(pem)?,
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }))
    }

    /// The member it accepts.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl ServerCertVerifier for MemberVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        // The name and validity dates in the certificate carry nothing: the
        // consortium file binds the exact certificate to the member.
        if end_entity.as_ref() == self.certificate.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::PrivateKeyDer;
    use rustls::server::WebPkiClientVerifier;
    use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig, ServerConnection};

    struct Node {
        key: NodeKey,
        name: &'static str,
    }

    fn consortium(nodes: &[(&Node, Role)]) -> Consortium {
        let members = nodes
            .iter()
            .map(|(n, role)| Member {
                name: n.name.into(),
                role: *role,
                public_key: n.key.public_hex(),
                address: None,
                revoked: false,
                expires: None,
                certificate: Some(n.key.certificate(n.name).expect("certificate")),
            })
            .collect();
        let c = Consortium { name: "t".into(), mtls: true, proofs: None, members };
        Consortium::from_toml(&c.to_toml().expect("toml")).expect("valid")
    }

    fn node(name: &'static str) -> Node {
        Node { key: NodeKey::generate(), name }
    }

    fn key_der(key: &NodeKey) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(key.pkcs8_pem().expect("pem").as_bytes()).expect("key")
    }

    /// One handshake in memory: `client` (as `client_name`) dials `server`
    /// expecting the member `expect`. Returns the member the server sees.
    fn handshake(
        consortium: &Consortium,
        client: &Node,
        server: &Node,
        expect: &str,
    ) -> std::result::Result<String, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(consortium.certificates_pem().as_bytes()) {
            roots.add(c.expect("pem")).expect("root");
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().expect("verifier");
        let server_cert = certificate_der(&server.key.certificate(server.name).expect("cert")).expect("der");
        let server_config = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![server_cert], key_der(&server.key))?;
        let client_cert = certificate_der(&client.key.certificate(client.name).expect("cert")).expect("der");
        let expected = MemberVerifier::new(consortium, expect, Role::Coordinator, 0).expect("expected member");
        let client_config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(expected)
            .with_client_auth_cert(vec![client_cert], key_der(&client.key))?;
        let name = ServerName::try_from("jointscore.invalid").expect("name");
        let mut c = Connection::Client(ClientConnection::new(Arc::new(client_config), name)?);
        let mut s = Connection::Server(ServerConnection::new(Arc::new(server_config))?);
        for _ in 0..16 {
            if !c.is_handshaking() && !s.is_handshaking() {
                break;
            }
            pass(&mut c, &mut s)?;
            pass(&mut s, &mut c)?;
        }
        let Connection::Server(s) = s else { unreachable!("the server stays a server") };
        let seen = s.peer_certificates().and_then(|c| c.first()).expect("client certificate");
        Ok(consortium.member_by_certificate(seen.as_ref()).expect("a member").name.clone())
    }

    /// Moves what `from` has to send to `to`, and lets `to` process it.
    fn pass(from: &mut Connection, to: &mut Connection) -> std::result::Result<(), rustls::Error> {
        let mut bytes = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut bytes).expect("write");
        }
        to.read_tls(&mut bytes.as_slice()).expect("read");
        to.process_new_packets().map(|_| ())
    }

    #[test]
    fn members_meet_over_mutual_tls_and_strangers_do_not() {
        let (coordinator, bank, other) = (node("coordinator"), node("bank"), node("other"));
        let c = consortium(&[(&coordinator, Role::Coordinator), (&bank, Role::Party), (&other, Role::Party)]);
        assert_eq!(handshake(&c, &bank, &coordinator, "coordinator").expect("handshake"), "bank");

        // A server that is not the member expected: refused by the client,
        // although its certificate is another member's.
        let c2 = consortium(&[(&other, Role::Coordinator), (&bank, Role::Party)]);
        let e = handshake(&c2, &bank, &coordinator, "other").unwrap_err();
        assert!(
            matches!(e, rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)),
            "{e}"
        );

        // A client whose certificate the file does not list: refused by the
        // server.
        let stranger = node("stranger");
        let e = handshake(&c, &stranger, &coordinator, "coordinator").unwrap_err();
        assert!(matches!(e, rustls::Error::InvalidCertificate(_)), "{e}");

        // A certificate that names a member but was made with another key
        // proves nothing: same name, new key.
        let impostor = Node { key: NodeKey::generate(), name: "bank" };
        assert!(handshake(&c, &impostor, &coordinator, "coordinator").is_err());
    }

    #[test]
    fn certificates_must_certify_the_listed_key() {
        let (a, b) = (node("a"), node("b"));
        let good = consortium(&[(&a, Role::Coordinator), (&b, Role::Party)]);
        let mut swapped = good.clone();
        swapped.members[0].certificate = good.members[1].certificate.clone();
        let e = Consortium::from_toml(&swapped.to_toml().expect("toml")).unwrap_err();
        assert!(e.to_string().contains("certifies another key"), "{e}");
        let mut missing = good.clone();
        missing.members[1].certificate = None;
        let e = Consortium::from_toml(&missing.to_toml().expect("toml")).unwrap_err();
        assert!(e.to_string().contains("has no `certificate`, and `mtls` is on"), "{e}");
        missing.mtls = false;
        Consortium::from_toml(&missing.to_toml().expect("toml")).expect("without mtls a certificate is optional");
        let mut garbage = good.clone();
        garbage.members[0].certificate = Some("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into());
        assert!(Consortium::from_toml(&garbage.to_toml().expect("toml")).is_err());
        assert_eq!(good.member_by_certificate(b"not a certificate"), None);
        let b_der = certificate_der(good.members[1].certificate.as_deref().expect("cert")).expect("der");
        assert_eq!(good.member_by_certificate(b_der.as_ref()).map(|m| m.name.as_str()), Some("b"));
    }
}
