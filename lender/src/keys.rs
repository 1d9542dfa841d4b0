//! The lender's key files.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use jointscore_circuits::fhe::{LenderKey, PublicKey};
use jointscore_circuits::wire::{self, EVALUATION_KEY_LIMIT};
use zeroize::Zeroizing;

use crate::error::{LenderError, Result};

/// A lender's key set in the forms it keeps and ships.
pub struct LenderKeys {
    /// The secret key; never sent.
    pub secret: LenderKey,
    /// For parties, through the coordinator.
    pub public: PublicKey,
    /// The compressed evaluation key, serialized, for the coordinator.
    pub evaluation: Vec<u8>,
}

/// Where a key set lives on disk: `client.key` (secret, 0600),
/// `public.key` and `server.key` (compressed evaluation key).
#[derive(Clone, Debug)]
pub struct KeyFiles {
    dir: PathBuf,
}

impl LenderKeys {
    /// Generates a fresh key set (seconds).
    pub fn generate() -> Result<LenderKeys> {
        let keys = wire::export_keys()?;
        Ok(LenderKeys { secret: keys.lender, public: keys.public, evaluation: keys.evaluation })
    }

    /// The key set's id.
    pub fn id(&self) -> &str {
        self.public.id()
    }
}

fn io(path: &Path, e: std::io::Error) -> LenderError {
    LenderError::Keys(format!("{}: {e}", path.display()))
}

fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let len = std::fs::metadata(path).map_err(|e| io(path, e))?.len();
    if len > limit {
        return Err(LenderError::Keys(format!("{} is {len} bytes, over the {limit}-byte limit", path.display())));
    }
    std::fs::read(path).map_err(|e| io(path, e))
}

impl KeyFiles {
    /// Key files in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> KeyFiles {
        KeyFiles { dir: dir.into() }
    }

    /// The secret key file.
    pub fn secret_path(&self) -> PathBuf {
        self.dir.join("client.key")
    }
    /// The public key file.
    pub fn public_path(&self) -> PathBuf {
        self.dir.join("public.key")
    }
    /// The compressed evaluation key file.
    pub fn evaluation_path(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    /// Writes a key set; refuses to overwrite an existing secret key unless
    /// `force`, since that would orphan every result encrypted under it.
    pub fn write(&self, keys: &LenderKeys, force: bool) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io(&self.dir, e))?;
        let secret_path = self.secret_path();
        if secret_path.exists() && !force {
            return Err(LenderError::Keys(format!(
                "{} exists; pass --force to replace the key set (results encrypted under it become unreadable)",
                secret_path.display()
            )));
        }
        let secret: Zeroizing<Vec<u8>> = keys.secret.to_bytes()?;
        write_private(&secret_path, &secret)?;
        std::fs::write(self.public_path(), keys.public.to_bytes()?).map_err(|e| io(&self.public_path(), e))?;
        std::fs::write(self.evaluation_path(), &keys.evaluation).map_err(|e| io(&self.evaluation_path(), e))?;
        Ok(())
    }

    /// Reads the key set back, checking that the secret key belongs to the
    /// public key beside it.
    pub fn read(&self) -> Result<LenderKeys> {
        let public = PublicKey::from_bytes(&read_bounded(&self.public_path(), wire::PUBLIC_KEY_LIMIT)?)?;
        let secret_bytes = Zeroizing::new(read_bounded(&self.secret_path(), wire::LENDER_KEY_LIMIT)?);
        let secret = LenderKey::from_bytes(&secret_bytes, &public)?;
        let evaluation = read_bounded(&self.evaluation_path(), EVALUATION_KEY_LIMIT)?;
        Ok(LenderKeys { secret, public, evaluation })
    }
}

/// Writes a file only its owner can read, created with that mode so it is
/// never readable by others, even briefly.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| io(path, e))?;
    // An existing file keeps its old mode when reopened: tighten it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(|e| io(path, e))?;
    }
    file.write_all(bytes).map_err(|e| io(path, e))?;
    file.sync_all().map_err(|e| io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip_owner_only_and_refuse_overwrite_and_mixups() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = KeyFiles::new(dir.path().join("keys"));
        let keys = LenderKeys::generate().expect("keys");
        files.write(&keys, false).expect("write");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(files.secret_path()).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let back = files.read().expect("read");
        assert_eq!(back.id(), keys.id());
        assert_eq!(back.evaluation, keys.evaluation);

        let e = files.write(&keys, false).unwrap_err();
        assert!(e.to_string().contains("--force"), "{e}");
        files.write(&keys, true).expect("forced");

        // A public key from another key set beside this secret key.
        let other = KeyFiles::new(dir.path().join("other"));
        let mut fake = LenderKeys::generate().expect("keys");
        fake.evaluation.truncate(16);
        other.write(&fake, false).expect("write");
        std::fs::copy(other.public_path(), files.public_path()).expect("copy");
        let e = files.read().err().expect("mixed-up key files are refused");
        assert!(e.to_string().contains("does not belong"), "{e}");

        std::fs::write(files.public_path(), b"garbage").expect("write");
        assert!(files.read().is_err());
        files.write(&keys, true).expect("restored");
        std::fs::remove_file(files.secret_path()).expect("remove");
        let e = files.read().err().expect("missing secret key");
        assert!(e.to_string().contains("client.key"), "{e}");
    }
}
