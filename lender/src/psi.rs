//! The lender as PSI requester, through the coordinator: aligning its
//! subject list with a party, and checking assets against every other
//! consortium lender's registry.
//!
//! The lender's key `a` lives in this process only, for one session. Items
//! are deduplicated and sent in batches of at most `MAX_BATCH` points in
//! random order, so a responder learns how many items were asked about and
//! nothing of their order.
//!
//! With an identity key ([`PsiRequester::sign_as`]) every open carries the
//! requester's signed [`PsiOpenStatement`], and every query batch its
//! signed [`PsiQueryStatement`] (numbered from 0, bound to the open's
//! nonce): parties with a consortium file answer no other, and count what
//! each requester queries against their daily budget.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jointscore_proto::v1::coordinator_client::CoordinatorClient;
use jointscore_proto::v1::{PsiCloseRequest, PsiOpenRequest, PsiPurpose, PsiQueryRequest, PsiSession};
use jointscore_proto::{collect, collect_psi_open};
use jointscore_psi::{
    AssetId, MAX_BATCH, MAX_ITEMS, POINT_BYTES, RequesterSession, points_from_bytes, points_to_bytes,
};
use rand_core::OsRng;
use rand08::seq::SliceRandom;
use tonic::transport::Channel;

use jointscore_identity::{NodeKey, PsiOpenStatement, PsiQueryStatement};
use jointscore_net::Target;

use crate::client::coordinator_client;
use crate::error::{LenderError, Result};

/// Most responders an asset check accepts: bounds what a coordinator can
/// make the lender receive per query point.
pub const MAX_LENDERS: u32 = 256;

/// A PSI requester connected to a coordinator.
pub struct PsiRequester {
    client: CoordinatorClient<Channel>,
    /// The requester's name: its lender name, which for asset checks must
    /// be its consortium name.
    name: String,
    /// The key that signs every open, when the requester has one.
    key: Option<Arc<NodeKey>>,
}

/// Which of a subject list one party holds.
#[derive(Clone, Debug)]
pub struct Alignment {
    /// The party aligned with.
    pub party: String,
    /// Per subject of the list asked about, in its order: whether the
    /// party holds it.
    pub held: Vec<bool>,
    /// How many subjects the party holds in all (the protocol reveals it).
    pub party_size: usize,
    /// Time from opening the session to the last batch matched.
    pub elapsed: Duration,
}

/// The outcome of a duplicate-financing check.
#[derive(Clone, Debug)]
pub struct AssetCheck {
    /// Per asset asked about, in order: how many other consortium lenders
    /// have it in their registry.
    pub financed_by: Vec<u32>,
    /// How many lenders were asked.
    pub lenders: u32,
    /// Assets in their registries together (the protocol reveals the total,
    /// not each lender's).
    pub registry_size: usize,
    /// Time from opening the session to the last batch matched.
    pub elapsed: Duration,
}

impl PsiRequester {
    /// Connects to the coordinator `target` names, asking as `name` (over
    /// mutual TLS, the coordinator holds `name` to the certificate).
    pub async fn connect(target: impl Into<Target>, name: &str) -> Result<PsiRequester> {
        Ok(PsiRequester { client: coordinator_client(&target.into()).await?, name: name.to_string(), key: None })
    }

    /// Asks as the consortium member `name` and signs every open with
    /// `key`, its identity key. Parties with a consortium file answer only
    /// opens a current lender signed (for asset checks, also a lender's
    /// registry node).
    pub fn sign_as(&mut self, name: &str, key: Arc<NodeKey>) {
        self.name = name.to_string();
        self.key = Some(key);
    }

    /// The open request for one session: signed when the requester has a
    /// key, with a fresh nonce and the time either way.
    fn open_request(&self, purpose: PsiPurpose, party: &str) -> PsiOpenRequest {
        let statement = PsiOpenStatement {
            requester: self.name.clone(),
            purpose: match purpose {
                PsiPurpose::Assets => "assets",
                _ => "align",
            }
            .into(),
            party: party.into(),
            time_ms: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
            nonce: PsiOpenStatement::fresh_nonce(),
        };
        let signature = self.key.as_ref().map(|k| statement.sign(k).to_vec()).unwrap_or_default();
        PsiOpenRequest {
            purpose: purpose as i32,
            requester: statement.requester,
            party: statement.party,
            time_ms: statement.time_ms,
            nonce: statement.nonce,
            signature,
        }
    }

    /// Learns which of `subjects` `party` holds. The party learns how many
    /// subjects were asked about, never which.
    pub async fn align(&mut self, party: &str, subjects: &[String]) -> Result<Alignment> {
        let start = Instant::now();
        let items: Vec<&[u8]> = subjects.iter().map(String::as_bytes).collect();
        let (counts, session) = self.run(PsiPurpose::Align, party, &items, 1..=1).await?;
        Ok(Alignment {
            party: party.to_string(),
            held: counts.iter().map(|&c| c > 0).collect(),
            party_size: session.set_len as usize,
            elapsed: start.elapsed(),
        })
    }

    /// Learns, per asset, how many other consortium lenders have financed
    /// it. Which lender did is not revealed, nor is any lender's registry.
    pub async fn check_assets(&mut self, assets: &[AssetId]) -> Result<AssetCheck> {
        let start = Instant::now();
        let keys: Vec<Vec<u8>> = assets.iter().map(AssetId::key).collect();
        let items: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let (financed_by, session) = self.run(PsiPurpose::Assets, "", &items, 1..=MAX_LENDERS).await?;
        Ok(AssetCheck {
            financed_by,
            lenders: session.per_item,
            registry_size: session.set_len as usize,
            elapsed: start.elapsed(),
        })
    }

    /// One session: open, load the encoded set, query the distinct items
    /// in shuffled batches; per input item, how many answers matched. The
    /// session is closed at the end, whether it succeeded or not. An empty
    /// list opens no session.
    async fn run(
        &mut self,
        purpose: PsiPurpose,
        party: &str,
        items: &[&[u8]],
        per_item: std::ops::RangeInclusive<u32>,
    ) -> Result<(Vec<u32>, PsiSession)> {
        if items.len() > MAX_ITEMS {
            return Err(LenderError::Psi(jointscore_psi::Error::TooLarge {
                what: "item list",
                len: items.len(),
                limit: MAX_ITEMS,
            }));
        }
        if items.is_empty() {
            return Ok((Vec::new(), PsiSession::default()));
        }
        let request = self.open_request(purpose, party);
        let nonce = request.nonce.clone();
        let stream = self.client.psi_open(request).await?.into_inner();
        let (header, set) = collect_psi_open(stream, MAX_ITEMS as u64).await?;
        let outcome = self.matched(&header, &nonce, set, items, per_item).await;
        // Best effort: the responders' keys expire anyway.
        let _ = self.client.psi_close(PsiCloseRequest { session_id: header.session_id.clone() }).await;
        Ok((outcome?, header))
    }

    async fn matched(
        &mut self,
        header: &PsiSession,
        nonce: &str,
        set: Vec<u8>,
        items: &[&[u8]],
        per_item: std::ops::RangeInclusive<u32>,
    ) -> Result<Vec<u32>> {
        if !per_item.contains(&header.per_item) {
            return Err(LenderError::Psi(jointscore_psi::Error::Mismatch(format!(
                "the session claims {} responders; this check expects {} to {}",
                header.per_item,
                per_item.start(),
                per_item.end()
            ))));
        }
        // Distinct items in random order: positions say nothing.
        let mut index: HashMap<&[u8], usize> = HashMap::with_capacity(items.len());
        let mut distinct: Vec<&[u8]> = Vec::new();
        let slots: Vec<usize> = items
            .iter()
            .map(|item| {
                *index.entry(item).or_insert_with(|| {
                    distinct.push(item);
                    distinct.len() - 1
                })
            })
            .collect();
        let order = shuffled(distinct.len());
        let set = points_from_bytes(&set, "encoded set", MAX_ITEMS)?;
        let session = blocking(move || {
            let mut session = RequesterSession::new(&mut OsRng);
            session.load_set(&set)?;
            Ok(session)
        })
        .await?;
        let session = std::sync::Arc::new(session);
        let per_item = header.per_item as usize;
        let mut counts = vec![0u32; distinct.len()];
        for (number, batch) in (0u32..).zip(order.chunks(MAX_BATCH)) {
            let batch_items: Vec<Vec<u8>> = batch.iter().map(|&i| distinct[i].to_vec()).collect();
            let s = session.clone();
            let blinded = blocking(move || Ok(s.blind(&batch_items)?)).await?;
            let points = points_to_bytes(&blinded);
            // Signed (with a key) as this session's batch `number`: a
            // party answers only the requester's own batches, in order.
            let signature = self
                .key
                .as_ref()
                .map(|k| PsiQueryStatement::new(&self.name, nonce, number, &points).sign(k).to_vec())
                .unwrap_or_default();
            let request = PsiQueryRequest { session_id: header.session_id.clone(), points, batch: number, signature };
            let stream = self.client.psi_query(request).await?.into_inner();
            let limit = (batch.len() * per_item * POINT_BYTES) as u64;
            let answers = collect(stream, "PSI answers", limit).await?;
            let answers = points_from_bytes(&answers, "PSI answers", batch.len() * per_item)?;
            let (s, n) = (session.clone(), batch.len());
            let got = blocking(move || Ok(s.count(n, per_item, &answers)?)).await?;
            for (&i, c) in batch.iter().zip(got) {
                counts[i] = c;
            }
        }
        Ok(slots.iter().map(|&s| counts[s]).collect())
    }
}

/// A random permutation of `0..n`.
fn shuffled(n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut OsRng);
    order
}

/// CPU work off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| LenderError::Task(e.to_string()))?
}
