//! `jointscore consortium init` and `jointscore audit verify | show |
//! receipts`: node identities, and checking the coordinator's ledger.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};
use jointscore_audit::{Entry, Filter, Head, filter, verify_receipts, verify_with_head};
use jointscore_circuits::proof::DEFAULT_PROOF_BLOCKS;
use jointscore_identity::Consortium;
use jointscore_lender::fetch_ledger;
use jointscore_testkit::cluster::{Membership, init_consortium};

use crate::CliError;
use crate::nodes::{Connection, runtime};

#[derive(Subcommand)]
pub(crate) enum ConsortiumCommand {
    /// Create identity keys (0600) for a coordinator, parties and lenders,
    /// and the consortium file listing their public keys and certificates
    /// (self-signed by each key), in one directory.
    Init {
        /// Directory for `coordinator.key`, `<name>.key` and `consortium.toml`.
        #[arg(long)]
        dir: PathBuf,
        /// A party (repeatable).
        #[arg(long, required = true)]
        party: Vec<String>,
        /// A lender (repeatable): it registers keys and requests decisions.
        #[arg(long)]
        lender: Vec<String>,
        /// The consortium's name.
        #[arg(long, default_value = "jointscore")]
        name: String,
        /// Leave mutual TLS off (`mtls = false`): traffic is plaintext and
        /// callers are not authenticated. For trials on one machine only.
        #[arg(long)]
        no_mtls: bool,
        /// Strict mode: generate a CRS (`crs.bin`, pinned in the file) so
        /// every contribution must carry zero-knowledge proofs that its
        /// ciphertexts are well formed. Proving costs each party seconds per
        /// decision (docs/security.md).
        #[arg(long)]
        proofs: bool,
        /// Blocks one proof covers (strict mode); a longer contribution
        /// carries several proofs.
        #[arg(long, default_value_t = DEFAULT_PROOF_BLOCKS, requires = "proofs")]
        proof_blocks: usize,
    },
}

#[derive(Args)]
pub(crate) struct LedgerArgs {
    /// The coordinator, and the consortium file (required here: it holds
    /// the coordinator's and members' public keys).
    #[command(flatten)]
    connection: Connection,
}

impl LedgerArgs {
    fn consortium(&self) -> Result<Arc<Consortium>, CliError> {
        self.connection
            .consortium()?
            .ok_or_else(|| CliError::Usage("--consortium is required: the ledger is checked against it".into()))
    }
}

#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    /// Fetch the whole ledger and check it: the hash chain, the
    /// coordinator's signature on every entry and on the head, every
    /// party's signature; with --receipts, that every receipt is still in it.
    Verify {
        #[command(flatten)]
        ledger: LedgerArgs,
        /// Receipts saved earlier with `audit receipts`.
        #[arg(long)]
        receipts: Option<PathBuf>,
    },
    /// Print the entries (one JSON object per line) about a subject, a
    /// party or a lender: who used whose data, when, for what.
    Show {
        #[command(flatten)]
        ledger: LedgerArgs,
        /// Only entries about this subject. The ledger shows subjects only
        /// as the lender's commitments: pass the commitment (64 hex
        /// digits), or the subject with the request's salt (`--salt`; the
        /// lender has it from `lender show`/`decide --json`).
        #[arg(long)]
        subject: Option<String>,
        /// The salt of the request whose subject `--subject` names.
        #[arg(long, requires = "subject")]
        salt: Option<String>,
        /// Only entries naming this party.
        #[arg(long)]
        party: Option<String>,
        /// Only entries naming this lender.
        #[arg(long)]
        lender: Option<String>,
    },
    /// Save the entries that concern one member (as lender, party or
    /// attester) and the signed head, to check later with `verify --receipts`.
    Receipts {
        #[command(flatten)]
        ledger: LedgerArgs,
        /// The member.
        #[arg(long = "as")]
        member: String,
        /// Where to write them (JSON lines; the head last).
        #[arg(long)]
        out: PathBuf,
    },
    /// As a party: verify the party's own log, then hold the ledger
    /// against it: each contribution the party made is `ok` (in the ledger
    /// as it signed it), `missing` (left out) or `rewritten`; a ledger
    /// contribution in its name it never made is reported too. Exit status
    /// 0 when everything reconciles, 1 when not, 2 when it cannot be run.
    Reconcile(crate::reconcile_cmd::ReconcileArgs),
}

pub(crate) fn consortium(cmd: ConsortiumCommand) -> Result<(), CliError> {
    let ConsortiumCommand::Init { dir, party, lender, name, no_mtls, proofs, proof_blocks } = cmd;
    let membership = Membership {
        name,
        parties: party,
        lenders: lender,
        revoked: Vec::new(),
        mtls: !no_mtls,
        proof_blocks: proofs.then_some(proof_blocks),
    };
    let consortium = init_consortium(&dir, &membership)?;
    println!("consortium `{}` ({}) written to {}", consortium.name, &consortium.id()[..16], dir.display());
    if let Some(p) = &consortium.proofs {
        println!("  strict mode: every contribution is proven against {} (sha256 {})", p.crs, p.crs_sha256);
    }
    for m in &consortium.members {
        println!("  {:<12} {:<11} {}  ({}.key, 0600)", m.name, m.role.as_str(), m.public_key, m.name);
    }
    Ok(())
}

/// Fetches the ledger and verifies it against the consortium file.
fn verified(args: &LedgerArgs) -> Result<(Vec<Entry>, Head), CliError> {
    let consortium = args.consortium()?;
    let (entries, head) = runtime()?.block_on(fetch_ledger(args.connection.target()?))?;
    verify_with_head(&entries, &head, &consortium)
        .map_err(|e| CliError::Usage(format!("the ledger does not verify: {e}")))?;
    Ok((entries, head))
}

pub(crate) fn audit(cmd: AuditCommand) -> Result<(), CliError> {
    match cmd {
        AuditCommand::Verify { ledger, receipts } => {
            let (entries, head) = verified(&ledger)?;
            println!("ledger of {} entries verified: chain, signatures, head {}", entries.len(), &head.hash[..16]);
            if let Some(path) = receipts {
                let (kept, old_head) = read_receipts(&path)?;
                verify_receipts(&entries, &kept)
                    .map_err(|e| CliError::Usage(format!("receipts from {}: {e}", path.display())))?;
                // The log may have grown since, never shrunk or changed.
                let consortium = ledger.consortium()?;
                verify_with_head(&entries, &old_head, &consortium)
                    .map_err(|e| CliError::Usage(format!("against the head saved in {}: {e}", path.display())))?;
                println!(
                    "all {} receipts are in it, and it extends the saved head of {} entries",
                    kept.len(),
                    old_head.len
                );
            }
            Ok(())
        }
        AuditCommand::Show { ledger, subject, salt, party, lender } => {
            let (entries, _) = verified(&ledger)?;
            let subject = match (subject, salt) {
                (Some(subject), Some(salt)) => Some(
                    jointscore_identity::LenderRequest { subject, salt, ..Default::default() }.subject_commitment(),
                ),
                (subject, _) => subject,
            };
            for entry in filter(&entries, &Filter { subject, party, lender }) {
                println!("{}", entry.to_json());
            }
            Ok(())
        }
        AuditCommand::Receipts { ledger, member, out } => {
            let (entries, head) = verified(&ledger)?;
            let mut text = String::new();
            let mut n = 0;
            for entry in entries.iter().filter(|e| e.concerns(&member)) {
                text.push_str(&entry.to_json());
                text.push('\n');
                n += 1;
            }
            text.push_str(&serde_json::to_string(&head).map_err(|e| CliError::Usage(e.to_string()))?);
            text.push('\n');
            std::fs::write(&out, text).map_err(|e| CliError::Usage(format!("cannot write {}: {e}", out.display())))?;
            println!("{n} receipts for `{member}` and the head of {} entries written to {}", head.len, out.display());
            Ok(())
        }
        AuditCommand::Reconcile(args) => crate::reconcile_cmd::run(args),
    }
}

/// Receipts file: entries, one per line, then the head.
fn read_receipts(path: &PathBuf) -> Result<(Vec<Entry>, Head), CliError> {
    let text = std::fs::read_to_string(path).map_err(|source| CliError::Read { path: path.clone(), source })?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let Some((head, entries)) = lines.split_last() else {
        return Err(CliError::Usage(format!("{}: no head", path.display())));
    };
    let head: Head =
        serde_json::from_str(head).map_err(|e| CliError::Usage(format!("{}: the head: {e}", path.display())))?;
    let entries = entries
        .iter()
        .enumerate()
        .map(|(i, l)| {
            Entry::from_json(l).map_err(|e| CliError::Usage(format!("{} line {}: {e}", path.display(), i + 1)))
        })
        .collect::<Result<_, _>>()?;
    Ok((entries, head))
}
