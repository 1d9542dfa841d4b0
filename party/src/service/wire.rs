//! Conversions between `jointscore.v1` messages and the party's domain
//! types. A refused field is `INVALID_ARGUMENT` naming it.

use jointscore_net::plan_from_wire;
use jointscore_proto::v1 as pb;

use super::contribute::{Contributed, ContributionRequest};
use crate::aggregate::{Invitation, RosterEntry, SurvivorSignature};
use crate::error::PartyError;
use crate::psi::{OpenRequest, Opened, Purpose};
use crate::store::check_subject;
use jointscore_secagg::{Advertise, Inbox, Masked, PartyId, Shares, Unmask};

impl TryFrom<pb::ContributeRequest> for ContributionRequest {
    type Error = PartyError;

    fn try_from(r: pb::ContributeRequest) -> Result<ContributionRequest, PartyError> {
        let plan =
            plan_from_wire(r.plan).ok_or_else(|| PartyError::BadRequest(format!("unknown plan kind {}", r.plan)))?;
        check_subject(&r.subject).map_err(|m| PartyError::BadRequest(format!("`subject`: {m}")))?;
        for (name, value) in [("request_id", &r.request_id), ("lender", &r.lender), ("key_id", &r.key_id)] {
            if value.len() > 256 || value.chars().any(char::is_control) {
                return Err(PartyError::BadRequest(format!("`{name}` is over 256 bytes or holds control characters")));
            }
        }
        if r.request_id.is_empty() {
            return Err(PartyError::BadRequest("`request_id` is empty: the lender's request names itself".into()));
        }
        if r.salt.len() != 2 * jointscore_identity::SALT_BYTES || hex::decode(&r.salt).is_err() {
            return Err(PartyError::BadRequest("`salt` is not 64 hex digits".into()));
        }
        let signed = jointscore_identity::LenderRequest {
            request_id: r.request_id,
            lender: r.lender,
            key_id: r.key_id,
            model_id: r.model_id,
            plan: plan.name().into(),
            subject: r.subject,
            absent: r.absent,
            time_ms: r.time_ms,
            salt: r.salt,
        };
        Ok(ContributionRequest { job_id: r.job_id, model_toml: r.model_toml, signed, signature: r.signature })
    }
}

impl TryFrom<pb::PsiOpenRequest> for OpenRequest {
    type Error = PartyError;

    fn try_from(r: pb::PsiOpenRequest) -> Result<OpenRequest, PartyError> {
        let purpose = match pb::PsiPurpose::try_from(r.purpose) {
            Ok(pb::PsiPurpose::Align) => Purpose::Align,
            Ok(pb::PsiPurpose::Assets) => Purpose::Assets,
            _ => return Err(PartyError::BadRequest(format!("unknown PSI purpose {}", r.purpose))),
        };
        if !r.nonce.is_empty() && !jointscore_identity::PsiOpenStatement::nonce_is_well_formed(&r.nonce) {
            return Err(PartyError::BadRequest(format!(
                "`nonce` is not {} hex digits",
                2 * jointscore_identity::NONCE_BYTES
            )));
        }
        Ok(OpenRequest { requester: r.requester, purpose, time_ms: r.time_ms, nonce: r.nonce, signature: r.signature })
    }
}

impl From<Opened> for pb::PsiSession {
    fn from(o: Opened) -> pb::PsiSession {
        // One answer point per queried item: this responder encodes one
        // point per item of its set.
        pb::PsiSession { session_id: o.session_id, set_len: o.set_len, per_item: 1, expires_in_ms: o.expires_in_ms }
    }
}

impl TryFrom<pb::SecAggAdvertiseRequest> for Invitation {
    type Error = PartyError;

    fn try_from(r: pb::SecAggAdvertiseRequest) -> Result<Invitation, PartyError> {
        let session: [u8; 16] = r
            .session
            .as_slice()
            .try_into()
            .map_err(|_| PartyError::BadRequest(format!("`session` is {} bytes, not 16", r.session.len())))?;
        Ok(Invitation {
            round_id: r.round_id,
            party: r.party,
            party_id: r.party_id,
            spec_id: r.spec_id,
            spec_toml: r.spec_toml,
            parties: r.parties,
            threshold: r.threshold,
            session,
        })
    }
}

/// This party's advertised keys, and its signature on them, as the reply
/// to an invitation.
pub(crate) fn advertise_reply(party: &str, keys: &Advertise, signature: Vec<u8>) -> pb::SecAggAdvertiseReply {
    pb::SecAggAdvertiseReply {
        party: party.to_string(),
        party_id: keys.from,
        encryption_key: keys.encryption.to_vec(),
        masking_key: keys.masking.to_vec(),
        signature,
    }
}

fn key(bytes: &[u8], what: &str, party: PartyId) -> Result<[u8; 32], PartyError> {
    bytes.try_into().map_err(|_| {
        PartyError::BadRequest(format!("`roster`: the {what} of party {party} is {} bytes, not 32", bytes.len()))
    })
}

/// The roster the coordinator relays: each party's name, keys (32 bytes
/// each) and signature, no party id twice. The names and signatures are
/// checked by the round ([`crate::aggregate::Rounds::share_keys`]).
pub(crate) fn roster(entries: Vec<pb::SecAggKeys>) -> Result<Vec<RosterEntry>, PartyError> {
    let mut ids = std::collections::BTreeSet::new();
    let mut roster = Vec::with_capacity(entries.len());
    for k in entries {
        if !ids.insert(k.party_id) {
            return Err(PartyError::BadRequest(format!("`roster` names party {} twice", k.party_id)));
        }
        let keys = Advertise {
            from: k.party_id,
            encryption: key(&k.encryption_key, "encryption key", k.party_id)?,
            masking: key(&k.masking_key, "masking key", k.party_id)?,
        };
        roster.push(RosterEntry { party: k.party, keys, signature: k.signature });
    }
    Ok(roster)
}

/// The survivors' signatures an unmask request relays.
pub(crate) fn survivor_signatures(signatures: Vec<pb::SecAggSurvivorSignature>) -> Vec<SurvivorSignature> {
    signatures.into_iter().map(|s| SurvivorSignature { party_id: s.party_id, signature: s.signature }).collect()
}

/// The share pairs addressed to this party, at most one per sender.
pub(crate) fn inbox(sealed: Vec<pb::SecAggSealed>) -> Result<Inbox, PartyError> {
    let mut inbox = Inbox::new();
    for s in sealed {
        if inbox.insert(s.party_id, s.ciphertext).is_some() {
            return Err(PartyError::BadRequest(format!("`inbox` holds two share pairs from party {}", s.party_id)));
        }
    }
    Ok(inbox)
}

/// This party's sealed share pairs, one per recipient.
pub(crate) fn shares_reply(shares: Shares) -> pb::SecAggShareKeysReply {
    pb::SecAggShareKeysReply {
        shares: shares.to.into_iter().map(|(party_id, ciphertext)| pb::SecAggSealed { party_id, ciphertext }).collect(),
    }
}

/// This party's masked vector, little-endian `u32`s, and the senders whose
/// shares it rejected.
pub(crate) fn masked_reply(masked: Masked) -> pb::SecAggMaskedInputReply {
    let vector = masked.vector.iter().flat_map(|x| x.to_le_bytes()).collect();
    pb::SecAggMaskedInputReply { vector, rejected: masked.rejected.into_iter().collect() }
}

/// The shares that unmask the sum.
pub(crate) fn unmask_reply(unmask: Unmask) -> pb::SecAggUnmaskReply {
    let shares = |m: std::collections::BTreeMap<PartyId, [u8; 32]>| {
        m.into_iter().map(|(party_id, share)| pb::SecAggShare { party_id, share: share.to_vec() }).collect()
    };
    pb::SecAggUnmaskReply { seed_shares: shares(unmask.seed_shares), key_shares: shares(unmask.key_shares) }
}

impl Contributed {
    /// The header of the stream that carries this contribution; the bytes
    /// follow it in chunks.
    pub(crate) fn header(&self) -> pb::ContributionHeader {
        pb::ContributionHeader {
            party: self.party.clone(),
            len: self.bytes.len() as u64,
            blocks: self.blocks,
            encrypt_us: self.encrypt_us,
            signature: self.signature.clone(),
            signed_ms: self.signed_ms,
            consent: self.consent.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> pb::ContributeRequest {
        pb::ContributeRequest {
            job_id: "j".into(),
            subject: "seller-1".into(),
            model_id: "m".into(),
            model_toml: String::new(),
            key_id: "k".into(),
            plan: pb::PlanKind::Pushdown as i32,
            absent: Vec::new(),
            request_id: "r".into(),
            lender: "lender".into(),
            time_ms: 1,
            salt: "ab".repeat(32),
            signature: vec![],
        }
    }

    #[test]
    fn a_psi_open_names_a_known_purpose() {
        let r = pb::PsiOpenRequest {
            requester: "lender".into(),
            purpose: pb::PsiPurpose::Assets as i32,
            ..Default::default()
        };
        assert_eq!(OpenRequest::try_from(r).expect("assets").purpose, Purpose::Assets);
        for purpose in [pb::PsiPurpose::Unspecified as i32, 42] {
            let r = pb::PsiOpenRequest { requester: "lender".into(), purpose, ..Default::default() };
            let err = OpenRequest::try_from(r).expect_err("unknown");
            assert!(err.to_string().contains(&format!("unknown PSI purpose {purpose}")), "{err}");
        }
    }

    #[test]
    fn a_roster_with_a_short_key_or_a_party_twice_is_refused() {
        let keys = |party_id, len| pb::SecAggKeys {
            party_id,
            encryption_key: vec![1; len],
            masking_key: vec![2; 32],
            party: format!("p{party_id}"),
            signature: vec![3; 64],
        };
        let well_formed = roster(vec![keys(1, 32), keys(2, 32)]).expect("well formed");
        assert_eq!(well_formed.len(), 2);
        assert_eq!((well_formed[1].party.as_str(), well_formed[1].signature.len()), ("p2", 64));
        let err = roster(vec![keys(1, 31)]).expect_err("short key");
        assert!(err.to_string().contains("`roster`") && err.to_string().contains("31 bytes"), "{err}");
        let err = roster(vec![keys(1, 32), keys(1, 32)]).expect_err("twice");
        assert!(err.to_string().contains("names party 1 twice"), "{err}");
        let sealed = |party_id| pb::SecAggSealed { party_id, ciphertext: vec![0; 4] };
        assert!(inbox(vec![sealed(3), sealed(3)]).expect_err("twice").to_string().contains("party 3"));
    }

    #[test]
    fn an_invitation_with_a_session_not_16_bytes_is_named() {
        let r = pb::SecAggAdvertiseRequest { session: vec![0; 15], ..Default::default() };
        let err = Invitation::try_from(r).expect_err("short session");
        assert!(err.to_string().contains("`session` is 15 bytes"), "{err}");
    }

    #[test]
    fn a_well_formed_request_converts() {
        let converted = ContributionRequest::try_from(request()).expect("well formed");
        assert_eq!(converted.signed.subject, "seller-1");
        assert_eq!(converted.signed.plan, "pushdown");
    }

    #[test]
    fn an_unknown_plan_and_a_bad_subject_are_named() {
        let mut r = request();
        r.plan = 7;
        let err = ContributionRequest::try_from(r).expect_err("plan");
        assert!(err.to_string().contains("unknown plan kind 7"), "{err}");
        let mut r = request();
        r.subject = String::new();
        let err = ContributionRequest::try_from(r).expect_err("subject");
        assert!(matches!(err, PartyError::BadRequest(_)) && err.to_string().contains("`subject`"), "{err}");
    }
}
