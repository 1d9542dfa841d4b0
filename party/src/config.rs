//! `party.toml`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{PartyError, Result};

/// A party node's configuration, one TOML file per node.
///
/// ```toml
/// name = "bank"                        # the party's name in models
/// listen = "127.0.0.1:7103"            # where the node serves gRPC
/// coordinator = "http://127.0.0.1:7100"
/// store = "bank.sqlite"                # relative to this file
/// approved_models = ["5f0c…"]          # model ids this operator allows
/// approved_stats = ["9a1e…"]           # stats spec ids this operator allows
/// asset_registry = true                # a consortium lender's node: answer
///                                      # duplicate-financing checks
/// identity = "bank.key"                # signs every contribution
/// consortium = "consortium.toml"       # members; with `mtls = true` in it,
///                                      # all traffic is mutual TLS
/// ```
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PartyConfig {
    /// The party's name, as the models it serves spell it.
    pub name: String,
    /// Socket address to serve on; port 0 picks a free one.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The URL the coordinator dials; defaults to `http://` (`https://`
    /// under mutual TLS) + the bound address, which is right unless the node sits behind a proxy or NAT.
    #[serde(default)]
    pub advertise: Option<String>,
    /// The coordinator's URL.
    pub coordinator: String,
    /// The SQLite file holding this party's records.
    pub store: PathBuf,
    /// Model ids (SHA-256 of the canonical model) this node contributes to.
    /// Empty means none: an operator approves each model explicitly.
    #[serde(default)]
    pub approved_models: Vec<String>,
    /// Statistics spec ids (`jointscore stats check`) this node contributes
    /// its tally to. Empty means none, as for models.
    #[serde(default)]
    pub approved_stats: Vec<String>,
    /// Whether this node belongs to a consortium lender and answers
    /// duplicate-financing checks from the asset registry in its store
    /// (`jointscore lender register-asset`). Off by default: a data-only
    /// party holds no registry.
    #[serde(default)]
    pub asset_registry: bool,
    /// How long a PSI session's key is kept after it opened, in seconds
    /// (1 to 3600); queries after that are refused and the requester opens
    /// a new session.
    #[serde(default = "default_psi_ttl")]
    pub psi_session_ttl_s: u64,
    /// This node's identity key file (relative to this file;
    /// `jointscore consortium init` makes one). With it the node signs every
    /// contribution; a coordinator that has a consortium file refuses
    /// unsigned ones.
    #[serde(default)]
    pub identity: Option<PathBuf>,
    /// The consortium file (relative to this file). When it has
    /// `mtls = true`, the node serves and dials only over mutual TLS, as
    /// the member `name` (which needs `identity`), and answers only the
    /// consortium's coordinator.
    #[serde(default)]
    pub consortium: Option<PathBuf>,
    /// Fewest parties of a model, this one included, that must contribute
    /// to a decision for this node to (default 2): when a lender names the
    /// other parties absent, the decision would be a function of this
    /// node's data alone.
    #[serde(default = "default_min_present")]
    pub min_present_parties: usize,
    /// Approved model ids this node contributes to even though
    /// `jointscore model lint` finds that a revealed output shows one
    /// party's feature (an explicit, named override; default none).
    #[serde(default)]
    pub lint_override: Vec<String>,
}

fn default_min_present() -> usize {
    2
}

fn default_psi_ttl() -> u64 {
    600
}

fn default_listen() -> String {
    "127.0.0.1:7101".into()
}

impl PartyConfig {
    /// Reads a configuration file; a relative `store` is taken relative to
    /// the file's directory.
    pub fn load(path: &Path) -> Result<PartyConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| PartyError::Config(format!("cannot read {}: {e}", path.display())))?;
        let mut config =
            PartyConfig::from_toml(&text).map_err(|e| PartyError::Config(format!("{}: {e}", path.display())))?;
        if let Some(dir) = path.parent() {
            for file in
                [Some(&mut config.store), config.identity.as_mut(), config.consortium.as_mut()].into_iter().flatten()
            {
                if file.is_relative() {
                    *file = dir.join(&*file);
                }
            }
        }
        Ok(config)
    }

    /// Parses and checks a configuration.
    pub fn from_toml(text: &str) -> Result<PartyConfig> {
        let config: PartyConfig = toml::from_str(text).map_err(|e| PartyError::Config(e.message().to_string()))?;
        if config.name.trim().is_empty() {
            return Err(PartyError::Config("`name` must not be empty".into()));
        }
        if !config.coordinator.starts_with("http://") && !config.coordinator.starts_with("https://") {
            return Err(PartyError::Config(format!(
                "`coordinator` must be a URL such as http://127.0.0.1:7100, not `{}`",
                config.coordinator
            )));
        }
        if config.min_present_parties == 0 {
            return Err(PartyError::Config("`min_present_parties` must be at least 1".into()));
        }
        if !(1..=3600).contains(&config.psi_session_ttl_s) {
            return Err(PartyError::Config("`psi_session_ttl_s` must be 1 to 3600".into()));
        }
        let ids = config
            .approved_models
            .iter()
            .map(|id| (id, "model", "model"))
            .chain(config.lint_override.iter().map(|id| (id, "model", "model")))
            .chain(config.approved_stats.iter().map(|id| (id, "stats spec", "stats")));
        for (id, what, command) in ids {
            if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(PartyError::Config(format!(
                    "approved {what} `{id}` is not a {what} id (64 hex digits; `jointscore {command} check` prints it)"
                )));
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_defaults() {
        let c =
            PartyConfig::from_toml("name = \"bank\"\ncoordinator = \"http://127.0.0.1:7100\"\nstore = \"b.sqlite\"\n")
                .expect("valid");
        assert_eq!(c.listen, "127.0.0.1:7101");
        assert!(c.approved_models.is_empty() && c.approved_stats.is_empty());
        assert!(!c.asset_registry);
        assert_eq!(c.psi_session_ttl_s, 600);
    }

    #[test]
    fn refuses_bad_fields() {
        let base = "name = \"bank\"\nstore = \"b.sqlite\"\n";
        let e = PartyConfig::from_toml(&format!("{base}coordinator = \"127.0.0.1:7100\"\n")).unwrap_err();
        assert!(e.to_string().contains("must be a URL"), "{e}");
        let e = PartyConfig::from_toml(&format!("{base}coordinator = \"http://x\"\napproved_models = [\"abc\"]\n"))
            .unwrap_err();
        assert!(e.to_string().contains("not a model id"), "{e}");
        let e = PartyConfig::from_toml(&format!("{base}coordinator = \"http://x\"\napproved_stats = [\"x\"]\n"))
            .unwrap_err();
        assert!(e.to_string().contains("not a stats spec id (64 hex digits; `jointscore stats check`"), "{e}");
        let e =
            PartyConfig::from_toml(&format!("{base}coordinator = \"http://x\"\npsi_session_ttl_s = 0\n")).unwrap_err();
        assert!(e.to_string().contains("`psi_session_ttl_s` must be 1 to 3600"), "{e}");
        let e = PartyConfig::from_toml(&format!("{base}coordinator = \"http://x\"\ncolour = 1\n")).unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
    }
}
