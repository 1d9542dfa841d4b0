//! `party.toml`.

use std::path::{Path, PathBuf};

use jointscore_circuits::PlanKind;
use serde::{Deserialize, Serialize};

use crate::error::{PartyError, Result};

/// A party node's configuration, one TOML file per node.
///
/// ```toml
/// name = "bank"                        # the party's name in models
/// listen = "127.0.0.1:7103"            # where the node serves gRPC
/// coordinator = "http://127.0.0.1:7100"
/// store = "bank.sqlite"                # relative to this file
/// approved_models = ["5f0c…"]          # model ids this operator allows,
///                                      # for every current lender, pushdown
///                                      # plan only
/// [[approval]]                         # or per lender and plan kind
/// model = "5f0c…"
/// lenders = ["lender"]
/// plans = ["pushdown", "coordinator-side"]   # the second is an opt-in
/// approved_stats = ["9a1e…"]           # stats spec ids this operator allows
/// approved_fits = ["77c2…"]            # fit spec ids this operator allows
/// approved_monitors = ["3b9d…"]        # monitor spec ids this operator
///                                      # allows, for every current lender
///                                      # (or per lender: an [[approval]]
///                                      # with plans = ["monitor"])
/// asset_registry = true                # a consortium lender's node: answer
///                                      # duplicate-financing checks
/// identity = "bank.key"                # signs every contribution
/// consortium = "consortium.toml"       # members; with `mtls = true` in it,
///                                      # all traffic is mutual TLS
/// require_consent = true               # contribute only for a subject that
///                                      # consented to the lender
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
    /// Fit spec ids (`jointscore lender fit --spec FILE --check`) this
    /// node bins its features for and takes part in the Gram round of.
    /// Empty means none, as for models.
    #[serde(default)]
    pub approved_fits: Vec<String>,
    /// Monitor spec ids (`jointscore monitor check`) this node answers
    /// monitoring requests for, from any current lender. Empty means none,
    /// as for models; an `[[approval]]` with `plans = ["monitor"]` approves
    /// one for named lenders only.
    #[serde(default)]
    pub approved_monitors: Vec<String>,
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
    /// Most ids (query points) one requester may have this node answer in
    /// PSI sessions per UTC day, all its sessions together (default
    /// 100,000; at least 1). Counted in the store with each query; a query
    /// that would pass it is refused whole.
    #[serde(default = "default_psi_budget")]
    pub psi_daily_budget: u64,
    /// Whether alignment sessions use one encoding of this node's subjects
    /// per requester and UTC day (a fresh key for each requester and day,
    /// held in memory only), so that a requester's later alignments that
    /// day cost this node only the exponentiations of the ids queried, not
    /// a new encoding of every subject. Off by default: the requester can
    /// then tell its sessions of one day apart from a fresh encoding, and
    /// whether the subjects changed between them (docs/psi.md, "Daily
    /// encoding").
    #[serde(default)]
    pub psi_daily_encoding: bool,
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
    /// Approvals naming lenders and plan kinds (beside `approved_models`).
    #[serde(default, rename = "approval")]
    pub approvals: Vec<Approval>,
    /// Without a consortium file a party cannot check who asks: it then
    /// serves only when its operator says so here (development setups).
    #[serde(default)]
    pub trust_coordinator: bool,
    /// How old (or how far in the future, for clock skew) a lender's signed
    /// request may be, in seconds (default 300). A request is answered once
    /// and only inside this window, so a coordinator cannot replay it.
    #[serde(default = "default_request_max_age")]
    pub request_max_age_s: u64,
    /// Most decisions about one subject one lender may ask of this party
    /// per `subject_window_s` (default 20): repeated decisions on the same
    /// subject are an oracle on its features.
    #[serde(default = "default_subject_limit")]
    pub subject_decision_limit: u32,
    /// The window of `subject_decision_limit`, in seconds (default 86400).
    #[serde(default = "default_subject_window")]
    pub subject_window_s: u64,
    /// Parties this node lets a lender name absent although a revealed
    /// output depends on their features (default none): otherwise a
    /// request must leave present every party the outputs depend on, so a
    /// lender cannot difference out one party's contribution.
    #[serde(default)]
    pub allow_absent: Vec<String>,
    /// Approved model ids this node contributes to even though
    /// `jointscore model lint` finds that a revealed output shows one
    /// party's feature (an explicit, named override; default none).
    #[serde(default)]
    pub lint_override: Vec<String>,
    /// Contribute to a decision only for a subject holding a consent to the
    /// requesting lender for `decision`, valid when the lender signed its
    /// request and not revoked (`jointscore party consent import`); the
    /// consent's id goes into the signed envelope and the ledger. Off by
    /// default so that development setups and the quickstart run without
    /// consent records; a production party sets it.
    #[serde(default)]
    pub require_consent: bool,
}

fn default_min_present() -> usize {
    2
}

fn default_request_max_age() -> u64 {
    300
}

fn default_subject_limit() -> u32 {
    20
}

fn default_subject_window() -> u64 {
    86_400
}

/// One approval: a model, the lenders it is approved for, and the plan
/// kinds.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// The model id.
    pub model: String,
    /// The lenders (consortium member names) it is approved for; at least
    /// one.
    pub lenders: Vec<String>,
    /// The plan kinds: `pushdown` (the default) and, as an explicit opt-in,
    /// `coordinator-side`, which sends the party's raw (clamped) features
    /// into the circuit.
    #[serde(default = "default_plans")]
    pub plans: Vec<String>,
}

fn default_plans() -> Vec<String> {
    vec!["pushdown".into()]
}

impl PartyConfig {
    /// Whether `lender` may have `model_id` evaluated under `plan`:
    /// `Err` names what is missing (for the refusal's message).
    pub fn approves(&self, model_id: &str, lender: &str, plan: PlanKind) -> std::result::Result<(), String> {
        let listed = self.approvals.iter().filter(|a| a.model == model_id).collect::<Vec<_>>();
        // The shorthand lists: models for the pushdown plan, monitor specs
        // for monitoring; neither stands for the other.
        let shorthand = match plan {
            PlanKind::Monitor => self.approved_monitors.iter().any(|m| m == model_id),
            PlanKind::Pushdown => self.approved_models.iter().any(|m| m == model_id),
            PlanKind::CoordinatorSide => false,
        };
        let any_shorthand = self.approved_models.iter().chain(&self.approved_monitors).any(|m| m == model_id);
        if listed.is_empty() && !any_shorthand {
            return Err(String::new());
        }
        let for_lender = listed.iter().filter(|a| a.lenders.iter().any(|l| l == lender)).collect::<Vec<_>>();
        if for_lender.is_empty() && !any_shorthand {
            return Err(format!(" for lender `{lender}`"));
        }
        let planned = for_lender.iter().any(|a| a.plans.iter().any(|p| p == plan.name())) || shorthand;
        if !planned {
            return Err(format!(" for the {} plan", plan.name()));
        }
        Ok(())
    }
}

fn default_psi_ttl() -> u64 {
    600
}

fn default_psi_budget() -> u64 {
    100_000
}

fn default_listen() -> String {
    "127.0.0.1:7101".into()
}

impl PartyConfig {
    /// A configuration with every default: named `name`, serving on any
    /// free loopback port, its records in `store`, approving nothing, with
    /// no identity and no consortium (so it serves only with
    /// `trust_coordinator` set).
    pub fn new(name: &str, coordinator: &str, store: PathBuf) -> PartyConfig {
        PartyConfig {
            name: name.into(),
            listen: "127.0.0.1:0".into(),
            advertise: None,
            coordinator: coordinator.into(),
            store,
            approved_models: Vec::new(),
            approved_stats: Vec::new(),
            approved_fits: Vec::new(),
            approved_monitors: Vec::new(),
            asset_registry: false,
            psi_session_ttl_s: default_psi_ttl(),
            psi_daily_budget: default_psi_budget(),
            psi_daily_encoding: false,
            identity: None,
            consortium: None,
            min_present_parties: default_min_present(),
            approvals: Vec::new(),
            trust_coordinator: false,
            request_max_age_s: default_request_max_age(),
            subject_decision_limit: default_subject_limit(),
            subject_window_s: default_subject_window(),
            allow_absent: Vec::new(),
            lint_override: Vec::new(),
            require_consent: false,
        }
    }

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
        if config.psi_daily_budget == 0 {
            return Err(PartyError::Config("`psi_daily_budget` must be at least 1 (ids per requester per day)".into()));
        }
        if !(1..=86_400).contains(&config.request_max_age_s) {
            return Err(PartyError::Config("`request_max_age_s` must be 1 to 86400".into()));
        }
        if config.subject_decision_limit == 0 || config.subject_window_s == 0 {
            return Err(PartyError::Config("`subject_decision_limit` and `subject_window_s` must be positive".into()));
        }
        for approval in &config.approvals {
            if approval.lenders.is_empty() || approval.lenders.iter().any(|l| l.trim().is_empty()) {
                return Err(PartyError::Config(format!(
                    "the approval of model `{}` must name its lenders (`lenders = [\"…\"]`)",
                    approval.model
                )));
            }
            if approval.plans.is_empty() {
                return Err(PartyError::Config(format!("the approval of model `{}` names no plan", approval.model)));
            }
            if let Some(plan) = approval.plans.iter().find(|p| PlanKind::parse(p).is_none()) {
                return Err(PartyError::Config(format!(
                    "the approval of model `{}` names plan `{plan}`; plans are `pushdown`, `coordinator-side` and `monitor`",
                    approval.model
                )));
            }
        }
        let ids = config
            .approved_models
            .iter()
            .chain(config.approvals.iter().map(|a| &a.model))
            .map(|id| (id, "model", "model"))
            .chain(config.lint_override.iter().map(|id| (id, "model", "model")))
            .chain(config.approved_stats.iter().map(|id| (id, "stats spec", "stats")))
            .chain(config.approved_fits.iter().map(|id| (id, "fit spec", "lender fit --check")))
            .chain(config.approved_monitors.iter().map(|id| (id, "monitor spec", "monitor")));
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
        assert_eq!(c.psi_daily_budget, 100_000);
        assert!(!c.require_consent);
    }

    #[test]
    fn approvals_name_lenders_and_plans_and_the_coordinator_side_plan_is_an_opt_in() {
        let (m, n) = ("a".repeat(64), "b".repeat(64));
        let c = PartyConfig::from_toml(&format!(
            "name = \"bank\"\ncoordinator = \"http://x\"\nstore = \"b.sqlite\"\napproved_models = [\"{m}\"]\n\
             [[approval]]\nmodel = \"{n}\"\nlenders = [\"alpha\"]\nplans = [\"pushdown\", \"coordinator-side\"]\n"
        ))
        .expect("valid");
        // The shorthand: every lender, pushdown only.
        c.approves(&m, "anyone", PlanKind::Pushdown).expect("shorthand");
        assert_eq!(c.approves(&m, "anyone", PlanKind::CoordinatorSide).unwrap_err(), " for the coordinator-side plan");
        // A named approval: its lenders only, its plans.
        c.approves(&n, "alpha", PlanKind::CoordinatorSide).expect("opted in");
        assert_eq!(c.approves(&n, "beta", PlanKind::Pushdown).unwrap_err(), " for lender `beta`");
        assert_eq!(c.approves(&"c".repeat(64), "alpha", PlanKind::Pushdown).unwrap_err(), "");
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
        for (extra, says) in [
            ("[[approval]]\nmodel = \"abc\"\nlenders = [\"l\"]\n", "not a model id"),
            (&format!("[[approval]]\nmodel = \"{}\"\nlenders = []\n", "a".repeat(64)), "must name its lenders"),
            (
                &format!("[[approval]]\nmodel = \"{}\"\nlenders = [\"l\"]\nplans = [\"raw\"]\n", "a".repeat(64)),
                "plans are `pushdown`, `coordinator-side` and `monitor`",
            ),
            ("request_max_age_s = 0\n", "`request_max_age_s` must be 1 to 86400"),
            ("psi_daily_budget = 0\n", "`psi_daily_budget` must be at least 1"),
            ("subject_decision_limit = 0\n", "must be positive"),
        ] {
            let e = PartyConfig::from_toml(&format!("{base}coordinator = \"http://x\"\n{extra}")).unwrap_err();
            assert!(e.to_string().contains(says), "{e} should say {says}");
        }
        let e = PartyConfig::from_toml(&format!("{base}coordinator = \"http://x\"\ncolour = 1\n")).unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
    }
}
