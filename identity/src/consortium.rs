//! The consortium file: who is a member, in which role, with which key.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{IdentityError, Result};
use crate::key::{PUBLIC_KEY_HEX, verify_with};

/// A member's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A data owner running a party node.
    Party,
    /// The coordinator.
    Coordinator,
    /// A lender.
    Lender,
}

impl Role {
    /// Its name in the file and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Party => "party",
            Role::Coordinator => "coordinator",
            Role::Lender => "lender",
        }
    }
}

/// One member of the consortium.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Its name: a party's name as models spell it, the lender's name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its ed25519 public key, hex.
    pub public_key: String,
    /// Where it serves, for nodes that serve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Whether its identity is revoked: its signatures no longer count.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revoked: bool,
    /// When its identity expires, in unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    /// Its TLS certificate (PEM), self-signed by its identity key; required
    /// of every member when the consortium runs mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
}

/// Strict mode: every contribution carries zero-knowledge proofs that its
/// ciphertexts are well formed, checked against this common reference
/// string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proofs {
    /// The CRS file, relative to the consortium file's directory.
    pub crs: String,
    /// SHA-256 of the CRS file, hex: the file is refused unless it hashes
    /// to this.
    pub crs_sha256: String,
}

/// The consortium file, distributed to every member out of band.
///
/// ```toml
/// name = "cross-border-demo"
/// mtls = true                   # every member below lists a certificate
///
/// [proofs]                      # optional: strict mode
/// crs = "crs.bin"               # next to this file
/// crs_sha256 = "…"              # 64 hex digits
///
/// [[member]]
/// name = "coordinator"
/// role = "coordinator"
/// public_key = "3b6a…"          # 64 hex digits
/// address = "https://127.0.0.1:7100"
/// certificate = """
/// -----BEGIN CERTIFICATE-----
/// …                              # self-signed by the identity key
/// -----END CERTIFICATE-----
/// """
///
/// [[member]]
/// name = "bank"
/// role = "party"
/// public_key = "…"
/// expires = 1830297600          # optional, unix seconds
/// revoked = false               # optional
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consortium {
    /// The consortium's name.
    pub name: String,
    /// Whether all traffic between members runs over mutual TLS, each
    /// member proving its identity with its listed certificate.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mtls: bool,
    /// Strict mode, when present: contributions must carry proofs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proofs: Option<Proofs>,
    /// Its members.
    #[serde(rename = "member", default)]
    pub members: Vec<Member>,
}

/// Largest consortium file read.
const FILE_LIMIT: u64 = 1 << 20;

impl Consortium {
    /// Reads and checks a consortium file.
    pub fn load(path: &Path) -> Result<Consortium> {
        let bad = |m: String| IdentityError::Consortium(format!("{}: {m}", path.display()));
        let size = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?.len();
        if size > FILE_LIMIT {
            return Err(bad(format!("{size} bytes is larger than the {FILE_LIMIT}-byte limit")));
        }
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        Consortium::from_toml(&text).map_err(|e| bad(e.to_string()))
    }

    /// Parses and checks: names present, printable and unique, every key a
    /// valid ed25519 public key, every certificate one that certifies its
    /// member's key (and one for every member when `mtls` is on), at most
    /// one coordinator.
    pub fn from_toml(text: &str) -> Result<Consortium> {
        let c: Consortium = toml::from_str(text).map_err(|e| IdentityError::Consortium(e.message().to_string()))?;
        let bad = |m: String| Err(IdentityError::Consortium(m));
        if c.name.trim().is_empty() {
            return bad("`name` must not be empty".into());
        }
        let mut names = BTreeSet::new();
        for (i, m) in c.members.iter().enumerate() {
            if m.name.is_empty() || m.name.len() > 128 || m.name.chars().any(char::is_control) {
                return bad(format!("member {i}: `name` must have 1 to 128 printable bytes"));
            }
            if !names.insert(m.name.as_str()) {
                return bad(format!("member `{}` is listed twice", m.name));
            }
            let mut key = [0u8; 32];
            let valid = m.public_key.len() == PUBLIC_KEY_HEX
                && hex::decode_to_slice(&m.public_key, &mut key).is_ok()
                && ed25519_dalek::VerifyingKey::from_bytes(&key).is_ok_and(|k| !k.is_weak());
            if !valid {
                return bad(format!("member `{}`: `public_key` is not an ed25519 public key (64 hex digits)", m.name));
            }
            match &m.certificate {
                Some(pem) => crate::tls::check_certificate(m, pem)?,
                None if c.mtls => return bad(format!("member `{}` has no `certificate`, and `mtls` is on", m.name)),
                None => {}
            }
        }
        if let Some(p) = &c.proofs {
            if p.crs.trim().is_empty() {
                return bad("`proofs.crs` must name the CRS file".into());
            }
            if p.crs_sha256.len() != 64 || hex::decode(&p.crs_sha256).is_err() {
                return bad("`proofs.crs_sha256` must be 64 hex digits".into());
            }
        }
        if c.members.iter().filter(|m| m.role == Role::Coordinator).count() > 1 {
            return bad("more than one member has the role `coordinator`".into());
        }
        Ok(c)
    }

    /// The file's TOML form.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| IdentityError::Consortium(e.to_string()))
    }

    /// SHA-256 of the canonical (JSON) form: names one version of the
    /// membership.
    pub fn id(&self) -> String {
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(canonical))
    }

    /// Strict mode's CRS file, resolved against the directory of the
    /// consortium file at `path`; `None` when the consortium does not
    /// require proofs.
    pub fn crs_path(&self, path: &Path) -> Option<PathBuf> {
        let proofs = self.proofs.as_ref()?;
        Some(path.parent().unwrap_or(Path::new(".")).join(&proofs.crs))
    }

    /// The member named `name`.
    pub fn member(&self, name: &str) -> Result<&Member> {
        self.members.iter().find(|m| m.name == name).ok_or_else(|| IdentityError::UnknownNode(name.into()))
    }

    /// The coordinator, if the file names one.
    pub fn coordinator(&self) -> Result<&Member> {
        self.members
            .iter()
            .find(|m| m.role == Role::Coordinator)
            .ok_or_else(|| IdentityError::Consortium("no member has the role `coordinator`".into()))
    }

    /// The member named `name`, if it has `role` and its identity is
    /// neither revoked nor expired at `now` (unix seconds).
    pub fn require(&self, name: &str, role: Role, now: u64) -> Result<&Member> {
        let m = self.member(name)?;
        if m.role != role {
            return Err(IdentityError::WrongRole { node: name.into(), role: m.role.as_str(), expected: role.as_str() });
        }
        if m.revoked {
            return Err(IdentityError::Revoked(name.into()));
        }
        if let Some(expires) = m.expires
            && expires <= now
        {
            return Err(IdentityError::Expired { node: name.into(), expires });
        }
        Ok(m)
    }

    /// Verifies that `signer`, a current member with `role`, signed
    /// `message` under `domain`.
    pub fn verify(
        &self,
        signer: &str,
        role: Role,
        now: u64,
        domain: &str,
        message: &[u8],
        signature: &[u8],
    ) -> Result<()> {
        let m = self.require(signer, role, now)?;
        verify_with(&m.public_key, domain, message, signature, signer, domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::NodeKey;

    fn file(keys: &[(&str, &str, &NodeKey)]) -> String {
        let mut t = String::from("name = \"test\"\n");
        for (name, role, key) in keys {
            t.push_str(&format!(
                "[[member]]\nname = \"{name}\"\nrole = \"{role}\"\npublic_key = \"{}\"\n",
                key.public_hex()
            ));
        }
        t
    }

    #[test]
    fn members_roles_revocation_and_expiry() {
        let (c, p, l) = (NodeKey::generate(), NodeKey::generate(), NodeKey::generate());
        let mut text = file(&[("coordinator", "coordinator", &c), ("bank", "party", &p), ("lender", "lender", &l)]);
        text.push_str("[[member]]\nname = \"old\"\nrole = \"party\"\npublic_key = \"");
        text.push_str(&NodeKey::generate().public_hex());
        text.push_str("\"\nexpires = 100\n");
        let consortium = Consortium::from_toml(&text).expect("valid");
        assert_eq!(consortium.coordinator().expect("coordinator").name, "coordinator");
        let sig = p.sign("d", b"m");
        consortium.verify("bank", Role::Party, 50, "d", b"m", &sig).expect("verifies");
        let e = consortium.verify("bank", Role::Lender, 50, "d", b"m", &sig).unwrap_err();
        assert_eq!(e.to_string(), "`bank` is a party in the consortium, not a lender");
        let e = consortium.verify("lender", Role::Lender, 50, "d", b"m", &sig).unwrap_err();
        assert_eq!(e, IdentityError::BadSignature { node: "lender".into(), what: "d".into() });
        assert_eq!(
            consortium.require("nobody", Role::Party, 50).unwrap_err(),
            IdentityError::UnknownNode("nobody".into())
        );
        consortium.require("old", Role::Party, 99).expect("not yet expired");
        assert_eq!(
            consortium.require("old", Role::Party, 100).unwrap_err(),
            IdentityError::Expired { node: "old".into(), expires: 100 }
        );
        let revoked = Consortium::from_toml(
            &text.replace("role = \"party\"\npublic_key", "role = \"party\"\nrevoked = true\npublic_key"),
        )
        .expect("valid");
        assert_eq!(revoked.require("bank", Role::Party, 1).unwrap_err(), IdentityError::Revoked("bank".into()));
        let again = Consortium::from_toml(&consortium.to_toml().expect("toml")).expect("round trip");
        assert_eq!(again, consortium);
        assert_eq!(again.id(), consortium.id());
        assert_ne!(revoked.id(), consortium.id());
    }

    #[test]
    fn bad_files_are_refused_with_the_field() {
        let k = NodeKey::generate();
        let good = file(&[("a", "party", &k)]);
        for (text, says) in [
            (good.replace("name = \"test\"", "name = \"\""), "`name` must not be empty"),
            (format!("{good}{}", file(&[("a", "party", &k)]).replace("name = \"test\"\n", "")), "listed twice"),
            (good.replace(&k.public_hex(), "abcd"), "not an ed25519 public key"),
            (good.replace(&k.public_hex(), &"00".repeat(32)), "not an ed25519 public key"),
            (good.replace("role = \"party\"", "role = \"auditor\""), "auditor"),
            (format!("{good}colour = 1\n"), "colour"),
            (
                file(&[("c1", "coordinator", &k), ("c2", "coordinator", &NodeKey::generate())]),
                "more than one member has the role `coordinator`",
            ),
        ] {
            let e = Consortium::from_toml(&text).unwrap_err();
            assert!(e.to_string().contains(says), "{e} should say {says}");
        }
    }

    /// Strict mode: the CRS is named relative to the file and pinned by a
    /// well-formed hash.
    #[test]
    fn strict_mode_names_and_pins_its_crs() {
        let k = NodeKey::generate();
        let members = file(&[("a", "party", &k)]).replace("name = \"test\"\n", "");
        let with = |proofs: &str| format!("name = \"test\"\n{proofs}\n{members}");
        let pin = "ab".repeat(32);
        let c = Consortium::from_toml(&with(&format!("[proofs]\ncrs = \"crs.bin\"\ncrs_sha256 = \"{pin}\"\n")))
            .expect("valid");
        assert_eq!(c.crs_path(Path::new("/etc/js/consortium.toml")), Some(PathBuf::from("/etc/js/crs.bin")));
        assert_eq!(Consortium::from_toml(&c.to_toml().expect("toml")).expect("round trip"), c);
        let plain = Consortium::from_toml(&with("")).expect("valid");
        assert_eq!(plain.crs_path(Path::new("consortium.toml")), None);
        for (proofs, says) in [
            (format!("[proofs]\ncrs = \" \"\ncrs_sha256 = \"{pin}\"\n"), "must name the CRS file"),
            ("[proofs]\ncrs = \"crs.bin\"\ncrs_sha256 = \"abcd\"\n".to_string(), "64 hex digits"),
            (format!("[proofs]\ncrs = \"crs.bin\"\ncrs_sha256 = \"{}\"\n", "zz".repeat(32)), "64 hex digits"),
            ("[proofs]\ncrs = \"crs.bin\"\n".to_string(), "crs_sha256"),
        ] {
            let e = Consortium::from_toml(&with(&proofs)).unwrap_err();
            assert!(e.to_string().contains(says), "{e} should say {says}");
        }
    }
}
