//! Fit sessions on the wire: the conversions the coordinator, the parties
//! and the lender share between `jointscore.v1` fit messages and the
//! learn and binning crates' types. Every conversion from the wire checks
//! sizes and counts and says what is wrong; none panics on what a peer
//! sent.

use jointscore_binning::gram::{Deal, PairSeed, Sealed};
use jointscore_binning::{CIPHERTEXT_BYTES, Ciphertext, FeatureSums};
use jointscore_identity::FitRequest;
use jointscore_learn::{BinKind, FeatureBins, WoeTable};
use jointscore_proto::v1::{
    FitBins, FitCategoryBin, FitFeatureBins, FitOpen, FitPair, FitSealed, FitSealedHeader, FitWoe, FitWoeTables,
};
use jointscore_secagg::{KeyPair, SessionId, decode_public};
use prost::Message;
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

/// The statement the lender signed for the fit `open` starts: what the
/// coordinator and every party verify its signature against.
pub fn fit_statement(open: &FitOpen) -> FitRequest {
    FitRequest {
        fit_id: open.fit_id.clone(),
        lender: open.lender.clone(),
        spec_id: open.spec_id.clone(),
        rows: open.rows,
        label_key: hex::encode(&open.label_key),
        rows_sha256: open.rows_sha256.clone(),
        time_ms: open.time_ms,
        seal_key: hex::encode(&open.seal_key),
    }
}

/// HKDF label of the keys a party and the lender seal a fit's bins and WoE
/// tables under.
pub const SEAL_LABEL: &[u8] = b"jointscore.fit.v1.bins";
/// Most bytes of one party's sealed WoE tables.
pub const SEALED_WOE_LIMIT: usize = 4 << 20;

/// The sealed link between the lender and one party of a fit: the key
/// their ephemeral keys share (ristretto255 Diffie–Hellman, HKDF-SHA-256
/// salted with the fit id's first 16 bytes), bins sealed from the party
/// (id `index + 1`) to the lender (id 0), WoE tables the other way, so
/// the two directions never share a nonce. The key is wiped on drop.
pub struct SealChannel {
    key: [u8; 32],
    session: SessionId,
    party: u32,
}

impl Drop for SealChannel {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

impl std::fmt::Debug for SealChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("SealChannel").field("party", &self.party).finish_non_exhaustive()
    }
}

impl SealChannel {
    /// The channel of `own` (either end's ephemeral pair) with `peer`'s
    /// public key, for the party at `index` in the spec, in fit `fit_id`
    /// (32 hex digits).
    pub fn new(own: &KeyPair, peer: &[u8], fit_id: &str, index: usize) -> Result<SealChannel, String> {
        let bytes = hex::decode(fit_id).map_err(|_| "a fit id that is not hex".to_string())?;
        let session: [u8; 16] =
            bytes.get(..16).and_then(|b| b.try_into().ok()).ok_or("a fit id shorter than 16 bytes")?;
        let peer: &[u8; 32] = peer.try_into().map_err(|_| format!("a sealing key of {} bytes", peer.len()))?;
        let point = decode_public(peer).ok_or("a sealing key that is not a valid point")?;
        let party = u32::try_from(index).ok().and_then(|i| i.checked_add(1)).ok_or("too many parties")?;
        let session = SessionId(session);
        Ok(SealChannel { key: own.shared_key(&point, SEAL_LABEL, &session, party, 0), session, party })
    }

    /// A party's bins and per-bin sums, sealed to the lender.
    pub fn seal_bins(&self, features: Vec<FitFeatureBins>, sums: Vec<u8>) -> Vec<u8> {
        let plain = FitBins { features, sums }.encode_to_vec();
        jointscore_secagg::seal(&self.key, &self.session, self.party, 0, &plain)
    }

    /// What [`SealChannel::seal_bins`] sealed; an error when it does not
    /// open (tampered, or sealed under another key) or does not parse.
    pub fn open_bins(&self, sealed: &[u8]) -> Result<FitBins, String> {
        let plain = jointscore_secagg::open(&self.key, &self.session, self.party, 0, sealed)
            .ok_or("its sealed bins do not open under the key it shares with the lender")?;
        FitBins::decode(plain.as_slice()).map_err(|e| format!("its sealed bins do not parse: {e}"))
    }

    /// The party's WoE tables, sealed to it.
    pub fn seal_woe(&self, woe: Vec<FitWoe>) -> Vec<u8> {
        let plain = FitWoeTables { woe }.encode_to_vec();
        jointscore_secagg::seal(&self.key, &self.session, 0, self.party, &plain)
    }

    /// What [`SealChannel::seal_woe`] sealed.
    pub fn open_woe(&self, sealed: &[u8]) -> Result<Vec<FitWoe>, String> {
        let plain = jointscore_secagg::open(&self.key, &self.session, 0, self.party, sealed)
            .ok_or("the WoE tables do not open under the key this party shares with the lender")?;
        Ok(FitWoeTables::decode(plain.as_slice()).map_err(|e| format!("the WoE tables do not parse: {e}"))?.woe)
    }
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

#[cfg(test)]
mod tests {
    use jointscore_binning::LabelHolder;
    use jointscore_learn::{FeatureValues, party_bins};
    use rand_core::OsRng;

    use super::*;

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn bins_and_woe_tables_travel_sealed_and_open_only_at_their_end() {
        let fit_id = "00112233445566778899aabbccddeeff";
        let (lender, party, other) =
            (KeyPair::generate(&mut OsRng), KeyPair::generate(&mut OsRng), KeyPair::generate(&mut OsRng));
        let at_party = SealChannel::new(&party, &lender.public(), fit_id, 1).unwrap();
        let at_lender = SealChannel::new(&lender, &party.public(), fit_id, 1).unwrap();

        let edge = 123_456.789_f64;
        let bins = FitFeatureBins {
            name: "gmv".into(),
            edges: vec![edge, 987_654.25],
            range_min: 1_000_003,
            range_max: 2_000_029,
            ..FitFeatureBins::default()
        };
        let sums: Vec<u8> = (0..SUM_BYTES as u8 * 3).collect();
        let sealed = at_party.seal_bins(vec![bins.clone()], sums.clone());
        // What the coordinator relays: no clear edge, range, name or sums.
        for clear in [
            edge.to_le_bytes().to_vec(),
            1_000_003i64.to_le_bytes()[..3].to_vec(),
            b"gmv".to_vec(),
            bins.encode_to_vec(),
            sums[..16].to_vec(),
        ] {
            assert!(!contains(&sealed, &clear), "clear bytes {clear:?} in the sealed bins");
        }
        let opened = at_lender.open_bins(&sealed).unwrap();
        assert_eq!((opened.features, opened.sums), (vec![bins], sums));

        let mut tampered = sealed.clone();
        tampered[5] ^= 1;
        assert!(at_lender.open_bins(&tampered).unwrap_err().contains("do not open"));
        // Another key, another party's slot or the other direction: refused.
        let stranger = SealChannel::new(&lender, &other.public(), fit_id, 1).unwrap();
        assert!(stranger.open_bins(&sealed).is_err());
        assert!(SealChannel::new(&lender, &party.public(), fit_id, 0).unwrap().open_bins(&sealed).is_err());
        assert!(at_party.open_woe(&sealed).is_err());

        let woe = 0.731_852_f64;
        let tables = vec![FitWoe { party: "bank".into(), feature: "gmv".into(), woe: vec![woe, -1.25, 0.0] }];
        let sealed = at_lender.seal_woe(tables.clone());
        assert!(!contains(&sealed, &woe.to_le_bytes()) && !contains(&sealed, &(-1.25f64).to_le_bytes()));
        assert!(!contains(&sealed, b"gmv"));
        assert_eq!(at_party.open_woe(&sealed).unwrap(), tables);
        let mut tampered = sealed.clone();
        tampered[0] ^= 0x80;
        assert!(at_party.open_woe(&tampered).unwrap_err().contains("do not open"));
        assert!(at_lender.open_bins(&sealed).is_err());

        assert!(SealChannel::new(&party, &[0; 32], fit_id, 1).is_err(), "the identity point");
        assert!(SealChannel::new(&party, &lender.public(), "zz", 1).is_err());
        assert!(SealChannel::new(&party, &lender.public()[..31], fit_id, 1).is_err());
    }

    #[test]
    fn sealed_messages_round_trip_and_overruns_are_refused() {
        let list = vec![
            Sealed { from: 0, to: 1, bytes: vec![1, 2, 3] },
            Sealed { from: 0, to: 2, bytes: Vec::new() },
            Sealed { from: 2, to: 0, bytes: vec![9; 40] },
        ];
        let (header, bytes) = sealed_to_wire(&list);
        assert_eq!(sealed_from_wire(&header, &bytes, 3).unwrap(), list);
        assert!(sealed_from_wire(&header, &bytes, 2).unwrap_err().contains("participant"));
        assert!(sealed_from_wire(&header, &bytes[1..], 3).unwrap_err().contains("overrun"));
        assert!(
            sealed_from_wire(&header, &[bytes.as_slice(), &[0]].concat(), 3).unwrap_err().contains("1 bytes follow")
        );
    }

    #[test]
    fn bins_and_sums_round_trip_and_are_checked() {
        let train: Vec<Option<i64>> = (0..60).map(Some).collect();
        let binning = party_bins(&[("x".into(), FeatureValues::Numeric { book: Vec::new(), train })]).unwrap();
        let wire = bins_to_wire(&binning.bins[0]);
        assert_eq!(bins_from_wire(&wire).unwrap(), binning.bins[0]);
        let mut bad = wire.clone();
        bad.edges.reverse();
        assert!(bins_from_wire(&bad).is_err());

        let labels: Vec<bool> = (0..60).map(|i| i % 3 == 0).collect();
        let (holder, public, cts) = LabelHolder::encrypt(&labels);
        let sums = jointscore_binning::party_sums(&public, &cts, &binning.assignments).unwrap();
        let bytes = sums_to_bytes(&sums);
        let counts = [binning.bins[0].count()];
        let back = sums_from_bytes(&bytes, &counts).unwrap();
        assert_eq!(back, sums);
        assert_eq!(holder.decrypt(&back).unwrap()[0].iter().map(|c| c.bad).sum::<u64>(), 20);
        assert!(sums_from_bytes(&bytes[..bytes.len() - 1], &counts).is_err());
        assert!(sums_from_bytes(&bytes, &[counts[0] + 1]).is_err());
    }
}
