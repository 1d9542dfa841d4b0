//! Node identities for jointscore.
//!
//! Every node — party, coordinator, lender — holds an ed25519 identity key
//! ([`NodeKey`]: written owner-only, wiped from memory on drop, never
//! printed). The consortium is a file distributed out of band
//! ([`Consortium`]): each member's name, role, public key and address, and
//! optionally a revocation or expiry. A signature is over a domain tag and
//! a message, so a signature made for one purpose never verifies for
//! another; verifying one names the member, checks its role, that it is
//! neither revoked nor expired, and uses ed25519's strict verification.
//!
//! With `mtls = true` in the consortium file, every member also lists a
//! certificate self-signed by its identity key, and all traffic runs over
//! mutual TLS: a peer is accepted only with the exact certificate listed
//! for the member expected ([`MemberVerifier`] on the client side,
//! [`Consortium::member_by_certificate`] on the server side).
//!
//! [`KeyRegistration`] and [`LenderRequest`] are what a lender signs: that a
//! key set is its own, and each decision request, so a party can refuse a
//! key set or a request the coordinator made up. [`PsiOpenStatement`] is
//! what a lender signs to open a private-set-intersection session, so a
//! party answers only the requester named, once per nonce;
//! [`PsiQueryStatement`] signs each of the session's query batches.
//!
//! [`ContributionEnvelope`] is what a party signs for each contribution:
//! the job, subject, model, lender key set, the SHA-256 of the ciphertext
//! bytes and the time. The coordinator verifies it before evaluating, and
//! the signature travels with the result so the lender can check which
//! parties contributed.
//!
//! [`RoundBinding`] and [`AdvertisedKeys`] are what a party signs in a
//! secure-aggregation round: its advertised keys, and the survivor list it
//! agrees to unmask; every party checks the others' signatures before it
//! shares or reveals anything.

mod alerts;
mod consortium;
mod envelope;
mod error;
mod fit;
mod key;
mod psi;
mod request;
mod roster;
mod tls;

pub use alerts::{ALERT_REPORT_DOMAIN, AlertReport};
pub use consortium::{Consortium, Member, Proofs, Role};
pub use envelope::{CONTRIBUTION_DOMAIN, ContributionBinding, ContributionEnvelope, PROOF_DOMAIN, ciphertext_sha256};
pub use error::{IdentityError, Result};
pub use fit::{FIT_KEY_DOMAIN, FIT_REQUEST_DOMAIN, FIT_SEAL_KEY_DOMAIN, FitKey, FitRequest, FitSealKey};
pub use key::{NodeKey, PUBLIC_KEY_HEX, SIGNATURE_BYTES, verify_with};
pub use psi::{NONCE_BYTES, PSI_OPEN_DOMAIN, PSI_PURPOSES, PSI_QUERY_DOMAIN, PsiOpenStatement, PsiQueryStatement};
pub use request::{KEY_REGISTRATION_DOMAIN, KeyRegistration, LenderRequest, REQUEST_DOMAIN, SALT_BYTES, opens_subject};
pub use roster::{AdvertisedKeys, RoundBinding, SECAGG_ADVERTISE_DOMAIN, SECAGG_SURVIVORS_DOMAIN};
pub use tls::{MemberVerifier, certificate_der};
