//! What a lender signs to open a private-set-intersection session. A party
//! answers a session only for the requester the statement names, so a
//! coordinator cannot open one under a lender's name, replay a lender's
//! open, or send it to another party: the party checks the signature
//! against its own consortium file, the time against its window and the
//! nonce against those it has seen, and counts the session's queries
//! against the requester's budget.
//!
//! Each query batch is signed too ([`PsiQueryStatement`]): bound to the
//! open's nonce (the one session id the requester and every responder share;
//! the coordinator relays each responder its own), a batch number counted
//! from 0 and the SHA-256 of the batch's points, so a coordinator can neither
//! add points of its own to a lender's session nor replay or reorder its
//! batches.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::consortium::{Consortium, Role};
use crate::envelope::encode_fields;
use crate::error::{IdentityError, Result};
use crate::key::{NodeKey, SIGNATURE_BYTES};

/// Domain tag of PSI opens.
pub const PSI_OPEN_DOMAIN: &str = "jointscore/psi-open/v1";
/// Domain tag of PSI query batches.
pub const PSI_QUERY_DOMAIN: &str = "jointscore/psi-query/v1";
/// Bytes of a PSI open's nonce (hex in the statement).
pub const NONCE_BYTES: usize = 16;

/// The purposes a PSI open may name, as signed.
pub const PSI_PURPOSES: [&str; 2] = ["align", "assets"];

/// A requester's statement that it opens one PSI session: with `party` for
/// an alignment, with every other consortium lender's registry for a
/// duplicate-financing check (`party` empty).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PsiOpenStatement {
    /// The requester, as the consortium file names it.
    pub requester: String,
    /// `align` or `assets`.
    pub purpose: String,
    /// The party aligned with; empty for an asset check.
    pub party: String,
    /// When the requester signed, in milliseconds since the unix epoch.
    pub time_ms: u64,
    /// Random per open, hex ([`NONCE_BYTES`] bytes): a party answers each
    /// nonce once.
    pub nonce: String,
}

impl PsiOpenStatement {
    /// The signed bytes: every field length-prefixed, in order, the time
    /// last.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        encode_fields(&mut out, &[&self.requester, &self.purpose, &self.party, &self.nonce]);
        out.extend_from_slice(&self.time_ms.to_le_bytes());
        out
    }

    /// A fresh random nonce, hex.
    pub fn fresh_nonce() -> String {
        let mut nonce = [0u8; NONCE_BYTES];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
        hex::encode(nonce)
    }

    /// Whether `nonce` is well formed: [`NONCE_BYTES`] bytes, hex.
    pub fn nonce_is_well_formed(nonce: &str) -> bool {
        nonce.len() == 2 * NONCE_BYTES && nonce.bytes().all(|b| b.is_ascii_hexdigit())
    }

    /// The requester's signature.
    pub fn sign(&self, key: &NodeKey) -> [u8; SIGNATURE_BYTES] {
        key.sign(PSI_OPEN_DOMAIN, &self.to_bytes())
    }

    /// Checks that `requester`, a current member of `consortium`, signed
    /// exactly this statement, and that its purpose and nonce are
    /// well formed. `now` is in unix seconds. An alignment must be signed
    /// by a lender; an asset check by a lender or by a party member (a
    /// consortium lender's registry node is a party member, and which
    /// members are consortium lenders is the coordinator's `lenders` list).
    /// Freshness and replays are the verifier's to check: it knows its
    /// window and the nonces it has seen.
    pub fn verify(&self, consortium: &Consortium, signature: &[u8], now: u64) -> Result<()> {
        let malformed = |what: &str| IdentityError::BadSignature { node: self.requester.clone(), what: what.into() };
        if !PSI_PURPOSES.contains(&self.purpose.as_str()) {
            return Err(malformed("PSI open purpose"));
        }
        if !PsiOpenStatement::nonce_is_well_formed(&self.nonce) {
            return Err(malformed("PSI open nonce"));
        }
        let message = self.to_bytes();
        let as_lender = consortium.verify(&self.requester, Role::Lender, now, PSI_OPEN_DOMAIN, &message, signature);
        match as_lender {
            Err(IdentityError::WrongRole { .. }) if self.purpose == "assets" => {
                consortium.verify(&self.requester, Role::Party, now, PSI_OPEN_DOMAIN, &message, signature)
            }
            other => other,
        }
    }
}

/// A requester's statement that one query batch of the session it opened
/// is its own: the session named by its open's nonce, the batch's number
/// (0, 1, 2, … in the order sent) and the hash of its points.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PsiQueryStatement {
    /// The requester that opened the session, as the consortium file names
    /// it.
    pub requester: String,
    /// The nonce of the session's signed open, hex.
    pub nonce: String,
    /// The batch's number in the session, from 0.
    pub batch: u32,
    /// SHA-256 of the batch's points, concatenated as sent.
    pub points_sha256: [u8; 32],
}

impl PsiQueryStatement {
    /// The statement for batch `batch` of the session opened with `nonce`,
    /// `points` as sent.
    pub fn new(requester: &str, nonce: &str, batch: u32, points: &[u8]) -> PsiQueryStatement {
        PsiQueryStatement {
            requester: requester.into(),
            nonce: nonce.into(),
            batch,
            points_sha256: Sha256::digest(points).into(),
        }
    }

    /// The signed bytes: requester and nonce length-prefixed, then the
    /// batch number and the points' hash.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        encode_fields(&mut out, &[&self.requester, &self.nonce]);
        out.extend_from_slice(&self.batch.to_le_bytes());
        out.extend_from_slice(&self.points_sha256);
        out
    }

    /// The requester's signature.
    pub fn sign(&self, key: &NodeKey) -> [u8; SIGNATURE_BYTES] {
        key.sign(PSI_QUERY_DOMAIN, &self.to_bytes())
    }

    /// Checks that `requester`, a current lender or party member of
    /// `consortium` (which of the two may open which session is the open's
    /// to check), signed exactly this statement. `now` is in unix seconds.
    /// That `requester` is the one that opened the session, and the batch
    /// number the next one, are the verifier's to check.
    pub fn verify(&self, consortium: &Consortium, signature: &[u8], now: u64) -> Result<()> {
        let message = self.to_bytes();
        let as_lender = consortium.verify(&self.requester, Role::Lender, now, PSI_QUERY_DOMAIN, &message, signature);
        match as_lender {
            Err(IdentityError::WrongRole { .. }) => {
                consortium.verify(&self.requester, Role::Party, now, PSI_QUERY_DOMAIN, &message, signature)
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consortium(lender: &NodeKey, party: &NodeKey, coordinator: &NodeKey) -> Consortium {
        Consortium::from_toml(&format!(
            "name = \"c\"\n[[member]]\nname = \"lender\"\nrole = \"lender\"\npublic_key = \"{}\"\n[[member]]\nname = \
             \"bank\"\nrole = \"party\"\npublic_key = \"{}\"\n[[member]]\nname = \"coordinator\"\nrole = \
             \"coordinator\"\npublic_key = \"{}\"\n[[member]]\nname = \"old\"\nrole = \"lender\"\npublic_key = \
             \"{}\"\nrevoked = true\n",
            lender.public_hex(),
            party.public_hex(),
            coordinator.public_hex(),
            NodeKey::generate().public_hex(),
        ))
        .expect("consortium")
    }

    fn statement() -> PsiOpenStatement {
        PsiOpenStatement {
            requester: "lender".into(),
            purpose: "align".into(),
            party: "bank".into(),
            time_ms: 1_000,
            nonce: PsiOpenStatement::fresh_nonce(),
        }
    }

    #[test]
    fn a_psi_open_signature_covers_every_field() {
        let (l, p, c) = (NodeKey::generate(), NodeKey::generate(), NodeKey::generate());
        let consortium = consortium(&l, &p, &c);
        let s = statement();
        let sig = s.sign(&l);
        s.verify(&consortium, &sig, 0).expect("verifies");
        let changes: [fn(&mut PsiOpenStatement); 6] = [
            |s| s.purpose = "assets".into(),
            |s| s.party = "platform".into(),
            |s| s.time_ms += 1,
            |s| s.nonce = PsiOpenStatement::fresh_nonce(),
            // Fields do not run into each other.
            |s| {
                s.purpose = "alignbank".into();
                s.party = String::new();
            },
            |s| {
                s.party = "ban".into();
                s.nonce = format!("k{}", &s.nonce[1..]);
            },
        ];
        for change in changes {
            let mut other = s.clone();
            change(&mut other);
            assert!(matches!(other.verify(&consortium, &sig, 0), Err(IdentityError::BadSignature { .. })), "{other:?}");
        }
        // Signed by another key under the lender's name.
        assert!(matches!(s.verify(&consortium, &s.sign(&p), 0), Err(IdentityError::BadSignature { .. })));
        let mut short = s.clone();
        short.nonce = "ab".into();
        let e = short.verify(&consortium, &short.sign(&l), 0).unwrap_err();
        assert!(e.to_string().contains("nonce"), "{e}");
        let mut purpose = s.clone();
        purpose.purpose = "everything".into();
        let e = purpose.verify(&consortium, &purpose.sign(&l), 0).unwrap_err();
        assert!(e.to_string().contains("purpose"), "{e}");
    }

    #[test]
    fn only_a_current_lender_opens_an_alignment() {
        let (l, p, c) = (NodeKey::generate(), NodeKey::generate(), NodeKey::generate());
        let consortium = consortium(&l, &p, &c);
        // A party's key cannot sign as a lender, nor a party align under
        // its own name; neither can the coordinator.
        let mut posing = statement();
        posing.requester = "bank".into();
        let e = posing.verify(&consortium, &posing.sign(&p), 0).unwrap_err();
        assert!(matches!(e, IdentityError::WrongRole { .. }), "{e}");
        posing.requester = "coordinator".into();
        let e = posing.verify(&consortium, &posing.sign(&c), 0).unwrap_err();
        assert!(matches!(e, IdentityError::WrongRole { .. }), "{e}");
        // A stranger, and a revoked lender.
        let mut stranger = statement();
        stranger.requester = "stranger".into();
        assert!(stranger.verify(&consortium, &stranger.sign(&NodeKey::generate()), 0).is_err());
        let mut revoked = statement();
        revoked.requester = "old".into();
        let e = revoked.verify(&consortium, &revoked.sign(&l), 0).unwrap_err();
        assert!(e.to_string().contains("old"), "{e}");
        // An asset check may come from a lender's registry node (a party
        // member), under its own name and key only; never from the
        // coordinator.
        let assets = PsiOpenStatement { purpose: "assets".into(), party: String::new(), ..statement() };
        assets.verify(&consortium, &assets.sign(&l), 0).expect("a lender checks assets");
        let node = PsiOpenStatement { requester: "bank".into(), ..assets.clone() };
        node.verify(&consortium, &node.sign(&p), 0).expect("a lender's registry node checks assets");
        assert!(matches!(node.verify(&consortium, &node.sign(&l), 0), Err(IdentityError::BadSignature { .. })));
        let coordinator = PsiOpenStatement { requester: "coordinator".into(), ..assets };
        let e = coordinator.verify(&consortium, &coordinator.sign(&c), 0).unwrap_err();
        assert!(matches!(e, IdentityError::WrongRole { .. }), "{e}");
    }

    #[test]
    fn a_psi_query_signature_covers_every_field() {
        let (l, p, c) = (NodeKey::generate(), NodeKey::generate(), NodeKey::generate());
        let consortium = consortium(&l, &p, &c);
        let nonce = PsiOpenStatement::fresh_nonce();
        let s = PsiQueryStatement::new("lender", &nonce, 3, &[7u8; 64]);
        let sig = s.sign(&l);
        s.verify(&consortium, &sig, 0).expect("verifies");
        let changes: [fn(&mut PsiQueryStatement); 6] = [
            |s| s.requester = "bank".into(),
            |s| s.nonce = PsiOpenStatement::fresh_nonce(),
            |s| s.batch += 1,
            |s| s.points_sha256 = PsiQueryStatement::new("", "", 0, &[7u8; 32]).points_sha256,
            |s| s.points_sha256[31] ^= 1,
            // Fields do not run into each other.
            |s| {
                s.requester = format!("lender{}", &s.nonce[..1]);
                s.nonce = s.nonce[1..].into();
            },
        ];
        for change in changes {
            let mut other = s.clone();
            change(&mut other);
            assert!(other.verify(&consortium, &sig, 0).is_err(), "{other:?}");
        }
        // Another key under the lender's name, the open's domain, the
        // coordinator under its own name, a revoked lender: refused.
        assert!(matches!(s.verify(&consortium, &s.sign(&p), 0), Err(IdentityError::BadSignature { .. })));
        let open_domain = l.sign(PSI_OPEN_DOMAIN, &s.to_bytes());
        assert!(matches!(s.verify(&consortium, &open_domain, 0), Err(IdentityError::BadSignature { .. })));
        let coordinator = PsiQueryStatement { requester: "coordinator".into(), ..s.clone() };
        let e = coordinator.verify(&consortium, &coordinator.sign(&c), 0).unwrap_err();
        assert!(matches!(e, IdentityError::WrongRole { .. }), "{e}");
        let old = PsiQueryStatement { requester: "old".into(), ..s.clone() };
        assert!(old.verify(&consortium, &old.sign(&l), 0).is_err());
        // A lender's registry node signs the batches of its asset check.
        let node = PsiQueryStatement { requester: "bank".into(), ..s };
        node.verify(&consortium, &node.sign(&p), 0).expect("a registry node's batch");
    }
}
