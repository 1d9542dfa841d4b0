//! Fitting a scorecard jointly over the services (`Coordinator.Fit`): the
//! lender encrypts its labels, the parties of the spec bin their features
//! and sum the labels per bin, the lender decrypts the counts, merges the
//! bins and selects features, then takes part in the Gram round with its
//! label column and fits the weights; it alone assembles the Gram matrix
//! and writes the model.
//!
//! Everything the lender learns is what the in-process fit gives it
//! (`jointscore_learn::fit`): counts per initial bin, the bins' bounds and
//! the Gram matrix of the selected WoE columns and the label. Nothing is
//! written here: the caller writes the model once the session has ended.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use jointscore_binning::LabelHolder;
use jointscore_binning::gram::{Columns, Layout, Participant};
use jointscore_circuits::Model;
use jointscore_identity::{Consortium, FitKey as SignedKey, FitRequest, NodeKey, Role};
use jointscore_learn::{FeatureFit, FitSpec, Iteration, LENDER_NAME, Selection, Weights, fit_weights};
use jointscore_net::Target;
use jointscore_net::fit::{
    bins_from_wire, deal_from_wire, rows_sha256, sealed_from_wire, sealed_to_wire, sums_from_bytes, woe_to_wire,
};
use jointscore_proto::v1::fit_frame::Part;
use jointscore_proto::v1::{FitDone, FitFrame, FitKey, FitOpen, FitSelect};
use jointscore_proto::{fit_frames, next_fit};
use jointscore_secagg::SessionId;
use rand_core::{OsRng, RngCore};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::client::coordinator_client;
use crate::error::{LenderError, Result};

/// Most bytes one step of a session may carry.
const STEP_LIMIT: u64 = 1 << 30;

/// What a fit reports as it goes.
#[derive(Clone, Debug)]
pub enum FitEvent {
    /// The labels are encrypted and sent.
    Opened {
        /// Training rows.
        rows: usize,
        /// Parties asked.
        parties: usize,
    },
    /// A party's bins arrived and were decrypted.
    Binned {
        /// The party.
        party: String,
        /// Its features binned.
        features: usize,
    },
    /// Features merged and selected by IV.
    Selected {
        /// Every feature's IV and whether it is selected.
        features: Vec<FeatureFit>,
    },
    /// The Gram matrix is assembled.
    Gram {
        /// Participants of the round, the lender included.
        participants: usize,
    },
    /// One weight-fitting iteration.
    Iteration(Iteration),
}

/// A finished fit.
#[derive(Clone, Debug)]
pub struct FitOutcome {
    /// The fitted, validated model.
    pub model: Model,
    /// Every feature: IV, selected, weight.
    pub features: Vec<FeatureFit>,
    /// The weights' fit, iteration by iteration.
    pub weights: Weights,
    /// The spec's id.
    pub spec_id: String,
}

/// Who the lender is in a consortium: its member name, its identity key
/// (signing the request and its round key) and the consortium file (to
/// check the parties' round keys).
#[derive(Clone)]
pub struct FitIdentity {
    /// The lender's member name.
    pub name: String,
    /// Its identity key.
    pub key: Arc<NodeKey>,
    /// The consortium.
    pub consortium: Arc<Consortium>,
}

fn fit_error(message: impl Into<String>) -> LenderError {
    LenderError::Spec(message.into())
}

fn learn(e: jointscore_learn::Error) -> LenderError {
    LenderError::Spec(e.to_string())
}

async fn send(tx: &mpsc::Sender<FitFrame>, part: Part, data: &[u8]) -> Result<()> {
    for frame in fit_frames(part, data) {
        tx.send(frame).await.map_err(|_| fit_error("the coordinator ended the fit session"))?;
    }
    Ok(())
}

async fn next(rx: &mut Streaming<FitFrame>, step: &str) -> Result<(Part, Vec<u8>)> {
    next_fit(rx, STEP_LIMIT).await?.ok_or_else(|| fit_error(format!("the coordinator ended the fit before {step}")))
}

/// Runs one fit of `spec_toml` over the coordinator at `target`, with
/// `labels` (subject, `true` = bad) as the training rows in order.
/// `progress` sees each phase and weights iteration. The model is
/// returned, never written: a failure (a party that refuses or drops out,
/// a bad answer) leaves nothing behind.
pub async fn fit(
    target: impl Into<Target>,
    spec_toml: &str,
    labels: &[(String, bool)],
    identity: Option<&FitIdentity>,
    progress: &mut dyn FnMut(&FitEvent),
) -> Result<FitOutcome> {
    let spec = FitSpec::from_toml(spec_toml).map_err(learn)?;
    let spec_id = spec.id();
    if let Some((subject, _)) = labels.iter().find(|(s, _)| s.contains('\n') || s.is_empty()) {
        return Err(fit_error(format!("subject `{}` is empty or spans lines", subject.escape_debug())));
    }
    let bads: Vec<bool> = labels.iter().map(|(_, b)| *b).collect();
    let rows = bads.len();
    let (holder, public, cts) = LabelHolder::encrypt(&bads);
    let subjects = labels.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>().join("\n").into_bytes();
    let ciphertexts: Vec<u8> = cts.iter().flat_map(|c| c.to_bytes()).collect();
    let mut id = [0u8; 16];
    OsRng.fill_bytes(&mut id);
    let fit_id = hex::encode(id);
    let time_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let lender = identity.map_or(String::new(), |i| i.name.clone());
    let request = FitRequest {
        fit_id: fit_id.clone(),
        lender: lender.clone(),
        spec_id: spec_id.clone(),
        rows: rows as u64,
        label_key: hex::encode(public.to_bytes()),
        rows_sha256: rows_sha256(&subjects, &ciphertexts),
        time_ms,
    };
    let signature = identity.map_or_else(Vec::new, |i| request.sign(&i.key).to_vec());
    let open = FitOpen {
        fit_id: fit_id.clone(),
        spec_id: spec_id.clone(),
        spec_toml: spec_toml.to_string(),
        lender: lender.clone(),
        time_ms,
        rows: rows as u64,
        label_key: public.to_bytes().to_vec(),
        subjects_len: subjects.len() as u64,
        labels_len: ciphertexts.len() as u64,
        rows_sha256: request.rows_sha256.clone(),
        signature,
        party: String::new(),
    };
    let mut client = coordinator_client(&target.into()).await?;
    let (tx, outbound) = mpsc::channel(64);
    let mut rx = client.fit(ReceiverStream::new(outbound)).await?.into_inner();
    let data = [subjects, ciphertexts].concat();
    send(&tx, Part::Open(open), &data).await?;
    drop(data);
    progress(&FitEvent::Opened { rows, parties: spec.parties.len() });

    // Binning: one answer per party, in spec order.
    let mut answers = Vec::new();
    for p in &spec.parties {
        let (Part::Binned(binned), sums) = next(&mut rx, "the bins").await? else {
            return Err(fit_error("the coordinator sent another step where bins were due"));
        };
        if binned.party != p.name {
            return Err(fit_error(format!("bins of `{}` arrived where `{}`'s were due", binned.party, p.name)));
        }
        let bins = binned
            .features
            .iter()
            .map(bins_from_wire)
            .collect::<std::result::Result<Vec<_>, String>>()
            .map_err(|e| fit_error(format!("party `{}`: {e}", p.name)))?;
        let counts: Vec<usize> = bins.iter().map(|b| b.count()).collect();
        let sums = sums_from_bytes(&sums, &counts).map_err(|e| fit_error(format!("party `{}`: {e}", p.name)))?;
        let counts = holder.decrypt(&sums).map_err(|e| fit_error(format!("party `{}`: {e}", p.name)))?;
        progress(&FitEvent::Binned { party: p.name.clone(), features: bins.len() });
        answers.push((p.name.clone(), bins, counts));
    }
    let selection = Selection::new(&spec, &bads, &answers).map_err(learn)?;
    progress(&FitEvent::Selected { features: selection.features().to_vec() });
    let tables = selection.woe_tables();
    send(&tx, Part::Select(FitSelect { woe: tables.iter().map(woe_to_wire).collect(), lender_columns: 1 }), &[])
        .await?;

    // The Gram round, as its last participant.
    let (Part::Gram(gram), _) = next(&mut rx, "the Gram round").await? else {
        return Err(fit_error("the coordinator sent another step where the Gram round was due"));
    };
    let n = gram.names.len();
    let me = n.checked_sub(1).ok_or_else(|| fit_error("a Gram round without participants"))?;
    let lender_name = if lender.is_empty() { LENDER_NAME.to_string() } else { lender.clone() };
    if gram.participant as usize != me || gram.names[me] != lender_name || gram.rows != rows as u64 {
        return Err(fit_error("the Gram round does not name this lender last, over its rows"));
    }
    if gram.columns.len() != n
        || gram.columns[me] != 1
        || gram.columns[..me].iter().sum::<u32>() as usize != tables.len()
    {
        return Err(fit_error("the Gram round's columns are not the selected features and the label"));
    }
    let layout = Layout { rows, columns: gram.columns.iter().map(|&c| c as usize).collect() };
    let session: [u8; 16] = gram.session.as_slice().try_into().map_err(|_| fit_error("a session of the wrong size"))?;
    let good: Vec<f64> = bads.iter().map(|&b| if b { 0.0 } else { 1.0 }).collect();
    let gram_error = |e: jointscore_binning::Error| fit_error(format!("Gram round: {e}"));
    let own = Columns::encode(rows, &[good]).map_err(gram_error)?;
    let mut participant =
        Participant::new(SessionId(session), &layout, me as u32, own, &mut OsRng).map_err(gram_error)?;
    let deal = deal_from_wire(me as u32, &gram.pairs).map_err(fit_error)?;
    let key = participant.public_key();
    let statement = |participant: u32, name: &str, key: &[u8]| SignedKey {
        fit_id: fit_id.clone(),
        session: hex::encode(session),
        participant,
        name: name.to_string(),
        key: hex::encode(key),
    };
    let signature = identity.map_or_else(Vec::new, |i| statement(me as u32, &lender_name, &key).sign(&i.key).to_vec());
    send(
        &tx,
        Part::Key(FitKey { participant: me as u32, name: lender_name.clone(), key: key.to_vec(), signature }),
        &[],
    )
    .await?;
    let (Part::Keys(keys), _) = next(&mut rx, "the round's keys").await? else {
        return Err(fit_error("the coordinator sent another step where the round's keys were due"));
    };
    let mut map = BTreeMap::new();
    for k in &keys.keys {
        let i = k.participant as usize;
        if i >= n || gram.names[i] != k.name {
            return Err(fit_error(format!("a round key for participant {} named `{}`", k.participant, k.name)));
        }
        let bytes: [u8; 32] = k.key.as_slice().try_into().map_err(|_| fit_error("a round key of the wrong size"))?;
        if let (Some(identity), true) = (identity, i != me) {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            statement(k.participant, &k.name, &bytes)
                .verify(&identity.consortium, Role::Party, &k.signature, now)
                .map_err(|e| fit_error(format!("the round key of `{}` is not its own: {e}", k.name)))?;
        }
        map.insert(k.participant, bytes);
    }
    participant.set_keys(&map).map_err(gram_error)?;
    let (header, bytes) = sealed_to_wire(&participant.masked(&deal).map_err(gram_error)?);
    send(&tx, Part::Masked(header), &bytes).await?;
    let (Part::Inbox(inbox), bytes) = next(&mut rx, "the masked columns").await? else {
        return Err(fit_error("the coordinator sent another step where the masked columns were due"));
    };
    let inbox = sealed_from_wire(&inbox, &bytes, n as u32).map_err(fit_error)?;
    let own = participant.contribution(&deal, &inbox, me as u32).map_err(gram_error)?;
    let (Part::Contribution(sealed), bytes) = next(&mut rx, "the contributions").await? else {
        return Err(fit_error("the coordinator sent another step where the contributions were due"));
    };
    let mut contributions = sealed_from_wire(&sealed, &bytes, n as u32).map_err(fit_error)?;
    contributions.push(own);
    let matrix = participant.assemble(&contributions).map_err(gram_error)?;
    progress(&FitEvent::Gram { participants: n });

    let features: Vec<usize> = (1..=tables.len()).collect();
    let weights = fit_weights(&matrix, &features, matrix.size - 1, spec.l2, &mut |i| {
        progress(&FitEvent::Iteration(i.clone()));
    })
    .map_err(learn)?;
    let (model, features) = selection.model(&weights).map_err(learn)?;
    let done = FitDone { model_id: model.id().to_string(), features: model.features().len() as u32 };
    send(&tx, Part::Done(done), &[]).await?;
    drop(tx);
    // The coordinator ends its stream once it has told the parties.
    while let Ok(Some(_)) = rx.message().await {}
    Ok(FitOutcome { model, features, weights, spec_id })
}
