//! Fit sessions on the wire: the conversions the coordinator, the parties
//! and the lender share between `jointscore.v1` fit messages and the
//! learn and binning crates' types. Every conversion from the wire checks
//! sizes and counts and says what is wrong; none panics on what a peer
//! sent.

use jointscore_binning::gram::{Deal, PairSeed, Sealed};
use jointscore_binning::{CIPHERTEXT_BYTES, Ciphertext, FeatureSums};
use jointscore_learn::{BinKind, FeatureBins, WoeTable};
use jointscore_proto::v1::{FitCategoryBin, FitFeatureBins, FitPair, FitSealed, FitSealedHeader, FitWoe};
use sha2::{Digest, Sha256};

/// Bytes of one bin's sum on the wire: its rows (8 bytes) and its
/// encrypted sum.
pub const SUM_BYTES: usize = 8 + CIPHERTEXT_BYTES;

/// SHA-256 (hex) of a fit's training rows as sent: the subjects' bytes,
/// then the ciphertexts.
pub fn rows_sha256(subjects: &[u8], labels: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update((subjects.len() as u64).to_le_bytes());
    h.update(subjects);
    h.update(labels);
    hex::encode(h.finalize())
}

/// Sealed messages as one header list and their bytes.
pub fn sealed_to_wire(list: &[Sealed]) -> (FitSealed, Vec<u8>) {
    let mut bytes = Vec::with_capacity(list.iter().map(|s| s.bytes.len()).sum());
    let messages = list
        .iter()
        .map(|s| {
            bytes.extend_from_slice(&s.bytes);
            FitSealedHeader { from: s.from, to: s.to, len: s.bytes.len() as u64 }
        })
        .collect();
    (FitSealed { messages, total_len: bytes.len() as u64 }, bytes)
}

/// Sealed messages from their header list and bytes; every participant
/// below `participants`.
pub fn sealed_from_wire(sealed: &FitSealed, bytes: &[u8], participants: u32) -> Result<Vec<Sealed>, String> {
    let mut at = 0usize;
    let mut out = Vec::with_capacity(sealed.messages.len());
    for h in &sealed.messages {
        if h.from >= participants || h.to >= participants {
            return Err(format!("a sealed message names participant {} or {} of {participants}", h.from, h.to));
        }
        let len = usize::try_from(h.len).map_err(|_| "a sealed message's length overflows".to_string())?;
        let end = at.checked_add(len).filter(|&e| e <= bytes.len()).ok_or("sealed messages overrun their bytes")?;
        out.push(Sealed { from: h.from, to: h.to, bytes: bytes[at..end].to_vec() });
        at = end;
    }
    if at != bytes.len() {
        return Err(format!("{} bytes follow the sealed messages", bytes.len() - at));
    }
    Ok(out)
}

/// A participant's dealing on the wire.
pub fn deal_to_wire(deal: &Deal) -> Vec<FitPair> {
    deal.pairs
        .iter()
        .map(|p| FitPair {
            peer: p.peer,
            seed: p.seed.to_vec(),
            correction: p.correction.iter().flat_map(|w| w.to_le_bytes()).collect(),
        })
        .collect()
}

/// A participant's dealing from the wire (its shape is checked against
/// the round when used).
pub fn deal_from_wire(participant: u32, pairs: &[FitPair]) -> Result<Deal, String> {
    let pairs = pairs
        .iter()
        .map(|p| {
            let seed: [u8; 32] =
                p.seed.as_slice().try_into().map_err(|_| format!("a seed of {} bytes", p.seed.len()))?;
            if p.correction.len() % 8 != 0 {
                return Err(format!("a correction of {} bytes", p.correction.len()));
            }
            let correction = p
                .correction
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect();
            Ok(PairSeed { peer: p.peer, seed, correction })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Deal { participant, pairs })
}

/// A feature's bins on the wire.
pub fn bins_to_wire(b: &FeatureBins) -> FitFeatureBins {
    let mut out =
        FitFeatureBins { name: b.name.clone(), missing_joined: b.missing_joined, ..FitFeatureBins::default() };
    match &b.kind {
        BinKind::Numeric { edges, range } => {
            out.edges = edges.clone();
            (out.range_min, out.range_max) = (range[0], range[1]);
        }
        BinKind::Categorical { categories, bins } => {
            out.categorical = true;
            out.categories = categories.clone();
            out.bins =
                bins.iter().map(|b| FitCategoryBin { categories: b.iter().map(|&c| c as u32).collect() }).collect();
        }
    }
    out
}

/// A feature's bins from the wire, checked ([`FeatureBins::validate`]).
pub fn bins_from_wire(b: &FitFeatureBins) -> Result<FeatureBins, String> {
    let kind = if b.categorical {
        BinKind::Categorical {
            categories: b.categories.clone(),
            bins: b.bins.iter().map(|g| g.categories.iter().map(|&c| c as usize).collect()).collect(),
        }
    } else {
        BinKind::Numeric { edges: b.edges.clone(), range: [b.range_min, b.range_max] }
    };
    let bins = FeatureBins { name: b.name.clone(), kind, missing_joined: b.missing_joined };
    bins.validate().map_err(|e| e.to_string())?;
    Ok(bins)
}

/// Per-bin sums as bytes: per feature and bin, rows then the ciphertext.
pub fn sums_to_bytes(sums: &[FeatureSums]) -> Vec<u8> {
    let mut out = Vec::new();
    for (rows, ct) in sums.iter().flat_map(|f| &f.bins) {
        out.extend_from_slice(&rows.to_le_bytes());
        out.extend_from_slice(&ct.to_bytes());
    }
    out
}

/// Per-bin sums from bytes, `counts[f]` bins for feature `f`.
pub fn sums_from_bytes(bytes: &[u8], counts: &[usize]) -> Result<Vec<FeatureSums>, String> {
    let total: usize = counts.iter().sum();
    if bytes.len() != total * SUM_BYTES {
        return Err(format!("{} bytes of sums for {total} bins", bytes.len()));
    }
    let mut records = bytes.chunks_exact(SUM_BYTES);
    counts
        .iter()
        .map(|&n| {
            let bins = (0..n)
                .map(|_| {
                    let r = records.next().ok_or("sums end early")?;
                    let (rows, ct) = r.split_at(8);
                    let rows = u64::from_le_bytes(rows.try_into().map_err(|_| "a bin's rows")?);
                    let ct: &[u8; CIPHERTEXT_BYTES] = ct.try_into().map_err(|_| "a bin's ciphertext")?;
                    let ct = Ciphertext::from_bytes(ct).map_err(|e| e.to_string())?;
                    Ok((rows, ct))
                })
                .collect::<Result<Vec<_>, String>>()?;
            Ok(FeatureSums { bins })
        })
        .collect()
}

/// A WoE table on the wire.
pub fn woe_to_wire(t: &WoeTable) -> FitWoe {
    FitWoe { party: t.party.clone(), feature: t.feature.clone(), woe: t.woe.clone() }
}
