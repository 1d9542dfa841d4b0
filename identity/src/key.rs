//! A node's ed25519 identity key and signatures over domain-tagged
//! messages.

use std::fmt;
use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand_core::OsRng;
use zeroize::Zeroizing;

use crate::error::{IdentityError, Result};

/// Hex digits of a public key (32 bytes).
pub const PUBLIC_KEY_HEX: usize = 64;
/// Bytes of a signature.
pub const SIGNATURE_BYTES: usize = 64;
/// First line of a key file: names the format.
const KEY_FILE_TAG: &str = "jointscore-node-key-v1";

/// A node's identity key. Wiped from memory on drop (ed25519-dalek's
/// `SigningKey` zeroizes itself); `Debug` shows only the public key.
pub struct NodeKey(SigningKey);

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeKey(<secret>, public {})", self.public_hex())
    }
}

/// The bytes actually signed: the domain's length, the domain, then the
/// message, so no signature for one domain verifies under another.
fn framed(domain: &str, message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + domain.len() + message.len());
    out.extend_from_slice(&(domain.len() as u32).to_le_bytes());
    out.extend_from_slice(domain.as_bytes());
    out.extend_from_slice(message);
    out
}

impl NodeKey {
    /// A fresh key from the operating system's generator.
    pub fn generate() -> NodeKey {
        NodeKey(SigningKey::generate(&mut OsRng))
    }

    /// The signing key, for the TLS encodings in this crate.
    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.0
    }

    /// The public key, hex encoded (what the consortium file lists).
    pub fn public_hex(&self) -> String {
        hex::encode(self.0.verifying_key().as_bytes())
    }

    /// Signs `message` under `domain`.
    pub fn sign(&self, domain: &str, message: &[u8]) -> [u8; SIGNATURE_BYTES] {
        self.0.sign(&framed(domain, message)).to_bytes()
    }

    /// Writes the key owner-only (`0600`); refuses to replace an existing
    /// file unless `force`.
    pub fn write(&self, path: &Path, force: bool) -> Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true);
        if force {
            options.create(true).truncate(true);
        } else {
            options.create_new(true);
        }
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(|e| {
            let hint =
                if e.kind() == std::io::ErrorKind::AlreadyExists { " (it exists; it is never replaced)" } else { "" };
            IdentityError::Key(format!("{}: {e}{hint}", path.display()))
        })?;
        // An existing file replaced by `force` keeps its old mode on open.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(|e| IdentityError::Key(format!("{}: {e}", path.display())))?;
        }
        let text = Zeroizing::new(format!("{KEY_FILE_TAG}\n{}\n", hex::encode(self.0.to_bytes())));
        std::io::Write::write_all(&mut file, text.as_bytes())
            .map_err(|e| IdentityError::Key(format!("{}: {e}", path.display())))
    }

    /// Reads a key file, refusing one that others can read.
    pub fn read(path: &Path) -> Result<NodeKey> {
        let bad = |m: String| IdentityError::Key(format!("{}: {m}", path.display()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(bad(format!("is readable by others (mode {:o}); `chmod 600` it", mode & 0o777)));
            }
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?);
        let mut lines = text.lines();
        if lines.next() != Some(KEY_FILE_TAG) {
            return Err(bad(format!("not a jointscore node key (its first line must be `{KEY_FILE_TAG}`)")));
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(lines.next().unwrap_or("").trim(), seed.as_mut_slice())
            .map_err(|_| bad("the key line is not 64 hex digits".into()))?;
        Ok(NodeKey(SigningKey::from_bytes(&seed)))
    }
}

/// Verifies `signature` by the public key `public_hex` over `message`
/// under `domain` (strict ed25519: no malleable or small-order forms).
/// `node` and `what` only name the failure.
pub fn verify_with(
    public_hex: &str,
    domain: &str,
    message: &[u8],
    signature: &[u8],
    node: &str,
    what: &str,
) -> Result<()> {
    let bad = || IdentityError::BadSignature { node: node.into(), what: what.into() };
    let mut public = [0u8; 32];
    hex::decode_to_slice(public_hex, &mut public).map_err(|_| bad())?;
    let key = VerifyingKey::from_bytes(&public).map_err(|_| bad())?;
    let signature = Signature::from_slice(signature).map_err(|_| bad())?;
    key.verify_strict(&framed(domain, message), &signature).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies_only_the_same_domain_and_bytes() {
        let key = NodeKey::generate();
        let sig = key.sign("jointscore/test/v1", b"hello");
        verify_with(&key.public_hex(), "jointscore/test/v1", b"hello", &sig, "n", "test").expect("verifies");
        for (domain, message) in [("jointscore/test/v1", &b"hellp"[..]), ("jointscore/other/v1", b"hello")] {
            let e = verify_with(&key.public_hex(), domain, message, &sig, "n", "test").unwrap_err();
            assert_eq!(e, IdentityError::BadSignature { node: "n".into(), what: "test".into() });
        }
        let other = NodeKey::generate();
        assert!(verify_with(&other.public_hex(), "jointscore/test/v1", b"hello", &sig, "n", "t").is_err());
        assert!(verify_with(&key.public_hex(), "jointscore/test/v1", b"hello", &sig[..63], "n", "t").is_err());
        assert!(verify_with("zz", "jointscore/test/v1", b"hello", &sig, "n", "t").is_err());
        assert!(!format!("{key:?}").contains(&hex::encode(key.0.to_bytes())), "Debug hides the secret");
    }

    #[test]
    fn key_files_are_private_and_never_overwritten_by_accident() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.key");
        let key = NodeKey::generate();
        key.write(&path, false).expect("write");
        assert_eq!(NodeKey::read(&path).expect("read").public_hex(), key.public_hex());
        let e = NodeKey::generate().write(&path, false).unwrap_err();
        assert!(e.to_string().contains("never replaced"), "{e}");
        NodeKey::generate().write(&path, true).expect("forced");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).expect("stat").permissions().mode() & 0o077, 0);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
            let e = NodeKey::read(&path).unwrap_err();
            assert!(e.to_string().contains("readable by others"), "{e}");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        std::fs::write(&path, "something else\n").expect("overwrite");
        assert!(NodeKey::read(&path).unwrap_err().to_string().contains("not a jointscore node key"));
        std::fs::write(&path, format!("{KEY_FILE_TAG}\nnothex\n")).expect("overwrite");
        assert!(NodeKey::read(&path).unwrap_err().to_string().contains("64 hex digits"));
    }
}
