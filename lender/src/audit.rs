//! Reading the coordinator's audit ledger, as any member may.

use jointscore_audit::{ENTRY_LIMIT, Entry, Head};
use jointscore_proto::v1::AuditLogRequest;
use jointscore_proto::v1::audit_chunk::Part;

use jointscore_net::Target;

use crate::client::coordinator_client;
use crate::error::{LenderError, Result};

/// Most entries read in one fetch (bounds the reader's memory).
pub const MAX_ENTRIES: usize = 1 << 20;

/// The whole ledger and the coordinator's signed head over it, as the
/// coordinator at `address` serves them. Nothing is verified here: pass
/// them to `jointscore_audit::verify_with_head` with the consortium file.
pub async fn fetch_ledger(target: impl Into<Target>) -> Result<(Vec<Entry>, Head)> {
    let mut client = coordinator_client(&target.into()).await?;
    let mut stream = client.audit_log(AuditLogRequest { from_seq: 0 }).await?.into_inner();
    let mut entries = Vec::new();
    let bad = |m: String| LenderError::Audit(m);
    while let Some(chunk) = stream.message().await? {
        match chunk.part {
            Some(Part::Entry(json)) => {
                if entries.len() >= MAX_ENTRIES {
                    return Err(bad(format!("the ledger has more than {MAX_ENTRIES} entries")));
                }
                if json.len() > ENTRY_LIMIT {
                    return Err(bad(format!("entry {} is larger than {ENTRY_LIMIT} bytes", entries.len())));
                }
                entries.push(Entry::from_json(&json).map_err(|e| bad(format!("entry {}: {e}", entries.len())))?);
            }
            Some(Part::Head(json)) => {
                let head: Head = serde_json::from_str(&json).map_err(|e| bad(format!("head: {e}")))?;
                if stream.message().await?.is_some() {
                    return Err(bad("the coordinator sent more after the head".into()));
                }
                return Ok((entries, head));
            }
            None => return Err(bad("an empty message".into())),
        }
    }
    Err(bad("the ledger ended without its signed head".into()))
}
