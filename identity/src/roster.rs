//! What a party signs in a secure-aggregation round, so that a coordinator
//! relaying the round cannot invent parties or tell parties different
//! survivor lists (the consistency check of the malicious-server variant of
//! Bonawitz et al., CCS 2017).
//!
//! - At the advertise step each party signs its two public keys together
//!   with the round ([`RoundBinding`]) and its name and id in it
//!   ([`AdvertisedKeys`]). Before sharing its secrets, every party checks
//!   each roster entry's signature against the consortium file: only a
//!   current party member can stand in the roster, under its own name.
//! - After the masked-input step each survivor signs the list of parties
//!   whose masked vectors arrived ([`RoundBinding::sign_survivors`]), once
//!   per round; before revealing any share, every party checks that the list
//!   it is asked to unmask is the one it signed and carries enough valid
//!   signatures of the parties on it.
//!
//! Every field is length-prefixed (or of fixed size) and the domain tags
//! differ, so no signature made for one purpose or one round verifies for
//! another.

use std::collections::BTreeSet;

use crate::consortium::{Consortium, Role};
use crate::error::Result;
use crate::key::{NodeKey, SIGNATURE_BYTES};

/// Domain tag of a party's signature on its advertised keys.
pub const SECAGG_ADVERTISE_DOMAIN: &str = "jointscore/secagg-advertise/v1";

/// Domain tag of a party's signature on a round's survivor list.
pub const SECAGG_SURVIVORS_DOMAIN: &str = "jointscore/secagg-survivors/v1";

/// The round a signature is bound to: what every party of the round was
/// invited with, identical for all of them. A party checks the others'
/// signatures under its own binding, so parties invited with different
/// sessions, specs, sizes or thresholds do not accept each other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoundBinding {
    /// The coordinator's name for the round.
    pub round_id: String,
    /// The round's 16 random bytes (the secure-aggregation session id).
    pub session: [u8; 16],
    /// The statistics spec's id.
    pub spec_id: String,
    /// How many parties the round invites.
    pub parties: u32,
    /// How many must survive for the sum to be unmasked.
    pub threshold: u32,
}

/// One party's entry in a round's roster: who it is and its two public
/// keys (compressed ristretto255 points).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdvertisedKeys {
    /// The party's name, as the consortium file lists it.
    pub party: String,
    /// Its id in the round (1..=parties).
    pub party_id: u32,
    /// Its public key for encrypting shares to it.
    pub encryption_key: [u8; 32],
    /// Its public key for pairwise masks.
    pub masking_key: [u8; 32],
}

fn put(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u32).to_le_bytes());
    out.extend_from_slice(field);
}

impl RoundBinding {
    /// The round's fields, each length-prefixed, in order.
    fn encode(&self, out: &mut Vec<u8>) {
        put(out, self.round_id.as_bytes());
        put(out, &self.session);
        put(out, self.spec_id.as_bytes());
        out.extend_from_slice(&self.parties.to_le_bytes());
        out.extend_from_slice(&self.threshold.to_le_bytes());
    }

    /// The bytes a party signs for its roster entry.
    pub fn advertise_bytes(&self, keys: &AdvertisedKeys) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + self.round_id.len() + self.spec_id.len() + keys.party.len());
        self.encode(&mut out);
        put(&mut out, keys.party.as_bytes());
        out.extend_from_slice(&keys.party_id.to_le_bytes());
        put(&mut out, &keys.encryption_key);
        put(&mut out, &keys.masking_key);
        out
    }

    /// A party's signature on its roster entry for this round.
    pub fn sign_advertise(&self, key: &NodeKey, keys: &AdvertisedKeys) -> [u8; SIGNATURE_BYTES] {
        key.sign(SECAGG_ADVERTISE_DOMAIN, &self.advertise_bytes(keys))
    }

    /// Checks that `keys.party` is a current party member of `consortium`
    /// (at `now`, unix seconds) and signed exactly this entry for this
    /// round. The error names the member: unknown, wrong role, revoked,
    /// expired, or a signature that does not verify.
    pub fn verify_advertise(
        &self,
        consortium: &Consortium,
        keys: &AdvertisedKeys,
        signature: &[u8],
        now: u64,
    ) -> Result<()> {
        let message = self.advertise_bytes(keys);
        consortium.verify(&keys.party, Role::Party, now, SECAGG_ADVERTISE_DOMAIN, &message, signature)
    }

    /// The bytes a survivor signs for the list of parties whose masked
    /// vectors arrived: the round, then the ids in ascending order (a set,
    /// so there is one encoding per list).
    pub fn survivors_bytes(&self, survivors: &BTreeSet<u32>) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.round_id.len() + self.spec_id.len() + 4 * survivors.len());
        self.encode(&mut out);
        out.extend_from_slice(&(survivors.len() as u32).to_le_bytes());
        for id in survivors {
            out.extend_from_slice(&id.to_le_bytes());
        }
        out
    }

    /// A survivor's signature on the survivor list of this round.
    pub fn sign_survivors(&self, key: &NodeKey, survivors: &BTreeSet<u32>) -> [u8; SIGNATURE_BYTES] {
        key.sign(SECAGG_SURVIVORS_DOMAIN, &self.survivors_bytes(survivors))
    }

    /// Checks that `signer`, a current party member of `consortium`, signed
    /// exactly this survivor list for this round.
    pub fn verify_survivors(
        &self,
        consortium: &Consortium,
        signer: &str,
        survivors: &BTreeSet<u32>,
        signature: &[u8],
        now: u64,
    ) -> Result<()> {
        let message = self.survivors_bytes(survivors);
        consortium.verify(signer, Role::Party, now, SECAGG_SURVIVORS_DOMAIN, &message, signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::IdentityError;

    struct Members {
        consortium: Consortium,
        bank: NodeKey,
        platform: NodeKey,
        lender: NodeKey,
        revoked: NodeKey,
    }

    fn members() -> Members {
        let (bank, platform, lender, revoked) =
            (NodeKey::generate(), NodeKey::generate(), NodeKey::generate(), NodeKey::generate());
        let mut text = String::from("name = \"t\"\n");
        for (name, role, key, extra) in [
            ("bank", "party", &bank, ""),
            ("platform", "party", &platform, "expires = 1000\n"),
            ("lender", "lender", &lender, ""),
            ("gone", "party", &revoked, "revoked = true\n"),
        ] {
            text.push_str(&format!(
                "[[member]]\nname = \"{name}\"\nrole = \"{role}\"\npublic_key = \"{}\"\n{extra}",
                key.public_hex()
            ));
        }
        let consortium = Consortium::from_toml(&text).expect("consortium");
        Members { consortium, bank, platform, lender, revoked }
    }

    fn round() -> RoundBinding {
        RoundBinding {
            round_id: "stats-1-abcd".into(),
            session: [7; 16],
            spec_id: "ab".repeat(32),
            parties: 3,
            threshold: 2,
        }
    }

    fn entry(party: &str, party_id: u32) -> AdvertisedKeys {
        AdvertisedKeys { party: party.into(), party_id, encryption_key: [1; 32], masking_key: [2; 32] }
    }

    #[test]
    fn an_advertise_signature_covers_the_round_and_every_field() {
        let m = members();
        let (binding, keys) = (round(), entry("bank", 1));
        let sig = binding.sign_advertise(&m.bank, &keys);
        binding.verify_advertise(&m.consortium, &keys, &sig, 10).expect("verifies");
        let rounds: [fn(&mut RoundBinding); 6] = [
            |b| b.round_id.push('x'),
            |b| b.session[0] ^= 1,
            |b| b.spec_id = "cd".repeat(32),
            |b| b.parties += 1,
            |b| b.threshold += 1,
            // Moving bytes between fields changes the encoding too.
            |b| {
                b.round_id = format!("{}{}", b.round_id, b.spec_id);
                b.spec_id = String::new();
            },
        ];
        for change in rounds {
            let mut other = round();
            change(&mut other);
            let e = other.verify_advertise(&m.consortium, &keys, &sig, 10).unwrap_err();
            assert!(matches!(e, IdentityError::BadSignature { ref node, .. } if node == "bank"), "{other:?}: {e}");
        }
        let entries: [fn(&mut AdvertisedKeys); 3] =
            [|k| k.party_id = 2, |k| k.encryption_key[31] ^= 1, |k| k.masking_key = k.encryption_key];
        for change in entries {
            let mut other = keys.clone();
            change(&mut other);
            let e = binding.verify_advertise(&m.consortium, &other, &sig, 10).unwrap_err();
            assert!(matches!(e, IdentityError::BadSignature { .. }), "{other:?}: {e}");
        }
        // The survivor domain never accepts an advertise signature.
        let survivors: BTreeSet<u32> = [1, 2].into();
        assert!(binding.verify_survivors(&m.consortium, "bank", &survivors, &sig, 10).is_err());
    }

    /// Forged, unknown, revoked, expired and wrong-role signers are refused
    /// by name.
    #[test]
    fn only_current_party_members_sign_roster_entries() {
        let m = members();
        let binding = round();
        // bank's entry signed by platform's key: a forgery.
        let forged = binding.sign_advertise(&m.platform, &entry("bank", 1));
        let e = binding.verify_advertise(&m.consortium, &entry("bank", 1), &forged, 10).unwrap_err();
        assert_eq!(e.to_string(), format!("the signature of `bank` on the {SECAGG_ADVERTISE_DOMAIN} does not verify"));
        let stranger = NodeKey::generate();
        let ghost = entry("ghost", 2);
        let e = binding.verify_advertise(&m.consortium, &ghost, &binding.sign_advertise(&stranger, &ghost), 10);
        assert_eq!(e.unwrap_err(), IdentityError::UnknownNode("ghost".into()));
        let gone = entry("gone", 2);
        let e = binding.verify_advertise(&m.consortium, &gone, &binding.sign_advertise(&m.revoked, &gone), 10);
        assert_eq!(e.unwrap_err(), IdentityError::Revoked("gone".into()));
        let lender = entry("lender", 3);
        let e = binding.verify_advertise(&m.consortium, &lender, &binding.sign_advertise(&m.lender, &lender), 10);
        assert_eq!(e.unwrap_err().to_string(), "`lender` is a lender in the consortium, not a party");
        let platform = entry("platform", 3);
        let sig = binding.sign_advertise(&m.platform, &platform);
        binding.verify_advertise(&m.consortium, &platform, &sig, 999).expect("not yet expired");
        let e = binding.verify_advertise(&m.consortium, &platform, &sig, 1000).unwrap_err();
        assert_eq!(e, IdentityError::Expired { node: "platform".into(), expires: 1000 });
        let e = binding.verify_advertise(&m.consortium, &platform, &[], 10).unwrap_err();
        assert!(matches!(e, IdentityError::BadSignature { .. }), "an empty signature: {e}");
    }

    #[test]
    fn a_survivor_signature_covers_the_round_and_the_exact_list() {
        let m = members();
        let binding = round();
        let list: BTreeSet<u32> = [1, 3].into();
        let sig = binding.sign_survivors(&m.bank, &list);
        binding.verify_survivors(&m.consortium, "bank", &list, &sig, 10).expect("verifies");
        for other in [BTreeSet::from([1]), BTreeSet::from([1, 2, 3]), BTreeSet::from([1, 2]), BTreeSet::new()] {
            let e = binding.verify_survivors(&m.consortium, "bank", &other, &sig, 10).unwrap_err();
            assert!(matches!(e, IdentityError::BadSignature { .. }), "{other:?}");
        }
        let mut later = round();
        later.round_id = "stats-2-abcd".into();
        assert!(later.verify_survivors(&m.consortium, "bank", &list, &sig, 10).is_err(), "another round");
        // Another member cannot pass off bank's signature as its own.
        assert!(binding.verify_survivors(&m.consortium, "platform", &list, &sig, 10).is_err());
        assert!(binding.survivors_bytes(&list) != binding.survivors_bytes(&BTreeSet::from([1, 3, 0])));
    }
}
