//! Tests of sealing, verification, tampering, receipts, heads and decoding.
//!
//! One file of ~750 lines on purpose: the cases share one consortium and one
//! ledger builder, and each tampering case is written beside the check that
//! catches it.

use std::sync::OnceLock;

use jointscore_identity::{CONTRIBUTION_DOMAIN, Consortium, ContributionEnvelope, IdentityError, NodeKey, Role};
use proptest::prelude::*;

use crate::*;

/// Domain a lender signs its requests under, in these tests.
const REQUEST_DOMAIN: &str = "jointscore/test-request/v1";
/// Domain a party signs model approvals under, in these tests.
const APPROVAL_DOMAIN: &str = "jointscore/test-approval/v1";
/// A time before `retired` expires (unix ms).
const T0: u64 = 1_750_000_000_000;
/// When `retired` expires (unix s).
const RETIRED_EXPIRES: u64 = 1_760_000_000;

struct Keys {
    coordinator: NodeKey,
    bank: NodeKey,
    platform: NodeKey,
    lender: NodeKey,
    old: NodeKey,
    retired: NodeKey,
    outsider: NodeKey,
    consortium: Consortium,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let (coordinator, bank, platform, lender) =
            (NodeKey::generate(), NodeKey::generate(), NodeKey::generate(), NodeKey::generate());
        let (old, retired, outsider) = (NodeKey::generate(), NodeKey::generate(), NodeKey::generate());
        let mut text = String::from("name = \"audit-test\"\n");
        for (name, role, key, extra) in [
            ("coordinator", "coordinator", &coordinator, String::new()),
            ("bank", "party", &bank, String::new()),
            ("platform", "party", &platform, String::new()),
            ("lender", "lender", &lender, String::new()),
            ("old", "party", &old, "revoked = true\n".to_string()),
            ("retired", "party", &retired, format!("expires = {RETIRED_EXPIRES}\n")),
        ] {
            text.push_str(&format!(
                "[[member]]\nname = \"{name}\"\nrole = \"{role}\"\npublic_key = \"{}\"\n{extra}",
                key.public_hex()
            ));
        }
        let consortium = Consortium::from_toml(&text).expect("consortium");
        Keys { coordinator, bank, platform, lender, old, retired, outsider, consortium }
    })
}

fn party_key(name: &str) -> &'static NodeKey {
    let k = keys();
    match name {
        "bank" => &k.bank,
        "platform" => &k.platform,
        "old" => &k.old,
        "retired" => &k.retired,
        _ => &k.outsider,
    }
}

/// The attestation a party makes by signing a contribution envelope.
fn contribution(party: &str, subject: &str, time_ms: u64) -> (Attestation, String) {
    let digest = hex::encode([party.len() as u8; 32]);
    let envelope = ContributionEnvelope {
        request_id: format!("r-{subject}"),
        lender: "lender".into(),
        job_id: format!("job-{subject}"),
        subject: subject.into(),
        model_id: "model-1".into(),
        key_id: "key-1".into(),
        party: party.into(),
        consent: String::new(),
        ciphertext_sha256: digest.clone(),
        time_ms,
    };
    let signature = envelope.sign(party_key(party));
    (Attestation::new(party, Role::Party, CONTRIBUTION_DOMAIN, &envelope.to_bytes(), &signature), digest)
}

/// The record of event `i` of a mixed log.
fn record(i: u64) -> Event {
    let k = keys();
    let time_ms = T0 + i * 1000;
    let subject = format!("subject-{}", i % 4);
    let parties = vec!["bank".to_string(), "platform".to_string()];
    let base = Event {
        time_ms,
        lender: Some("lender".into()),
        subject: Some(subject.clone()),
        job_id: Some(format!("job-{subject}")),
        model_id: Some("model-1".into()),
        key_id: Some("key-1".into()),
        ..Default::default()
    };
    match i % 8 {
        0 => Event {
            kind: EntryKind::KeyRegistration,
            subject: None,
            job_id: None,
            model_id: None,
            detail: "lender key set key-1".into(),
            ..base
        },
        1 => {
            let message = b"model-1";
            let signature = k.bank.sign(APPROVAL_DOMAIN, message);
            Event {
                kind: EntryKind::ModelApproval,
                lender: None,
                subject: None,
                job_id: None,
                parties: vec!["bank".into()],
                attestations: vec![Attestation::new("bank", Role::Party, APPROVAL_DOMAIN, message, &signature)],
                ..base
            }
        }
        2 => {
            let message = format!("request {subject} model-1");
            let signature = k.lender.sign(REQUEST_DOMAIN, message.as_bytes());
            Event {
                kind: EntryKind::DecisionRequest,
                parties,
                attestations: vec![Attestation::new(
                    "lender",
                    Role::Lender,
                    REQUEST_DOMAIN,
                    message.as_bytes(),
                    &signature,
                )],
                ..base
            }
        }
        3 => {
            let party = if i.is_multiple_of(2) { "bank" } else { "platform" };
            let (attestation, digest) = contribution(party, &subject, time_ms);
            Event {
                kind: EntryKind::Contribution,
                parties: vec![party.into()],
                digest: Some(digest),
                request_id: Some(format!("r-{subject}")),
                attestations: vec![attestation],
                ..base
            }
        }
        4 => Event { kind: EntryKind::Result, parties, digest: Some(hex::encode([7u8; 32])), ..base },
        5 => Event {
            kind: EntryKind::Aggregation,
            lender: None,
            subject: None,
            parties,
            digest: Some(hex::encode([9u8; 32])),
            detail: "round 3: 2 of 2".into(),
            ..base
        },
        6 => Event { kind: EntryKind::Psi, parties, detail: "12 in common".into(), ..base },
        _ => Event { kind: EntryKind::Refusal, parties, detail: "contribution over the size limit".into(), ..base },
    }
}

/// A mixed log of `n` entries sealed by the coordinator.
fn log(n: u64) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::new();
    for i in 0..n {
        let entry = Entry::seal(record(i), entries.last(), &keys().coordinator);
        entries.push(entry);
    }
    entries
}

/// Re-seals `entries[from..]` with `key`, as a coordinator rewriting history
/// would.
fn reseal(entries: &mut [Entry], from: usize, key: &NodeKey) {
    for i in from..entries.len() {
        let prev = if i == 0 { None } else { Some(entries[i - 1].clone()) };
        entries[i] = Entry::seal(entries[i].record.clone(), prev.as_ref(), key);
    }
}

#[test]
fn a_mixed_log_of_twenty_verifies() {
    let k = keys();
    let entries = log(20);
    assert_eq!(entries[0].prev, GENESIS);
    assert!(entries.windows(2).all(|w| w[1].prev == w[0].hash && w[1].seq == w[0].seq + 1));
    let kinds: std::collections::BTreeSet<_> = entries.iter().map(|e| format!("{:?}", e.record.kind)).collect();
    assert_eq!(kinds.len(), 8, "every kind appears");
    assert!(entries.iter().filter(|e| !e.record.attestations.is_empty()).count() >= 6);
    verify_chain(&entries, &k.consortium).expect("chain verifies");
    verify_chain(&[], &k.consortium).expect("an empty log verifies");
    let head = Head::of(&entries, &k.coordinator);
    assert_eq!((head.len, head.hash.as_str()), (20, entries[19].hash.as_str()));
    verify_with_head(&entries, &head, &k.consortium).expect("head matches");
    let receipts: Vec<Entry> = entries.iter().filter(|e| e.concerns("bank")).cloned().collect();
    assert!(receipts.len() >= 10);
    verify_receipts(&entries, &receipts).expect("receipts present");
}

#[test]
fn golden_hash_pins_the_canonical_encoding() {
    let record = Event {
        kind: EntryKind::Contribution,
        time_ms: 1_700_000_000_123,
        lender: Some("lender".into()),
        subject: Some("subject-42".into()),
        parties: vec!["bank".into(), "platform".into()],
        job_id: Some("job-7".into()),
        model_id: Some("model-1".into()),
        key_id: None,
        request_id: None,
        consent: None,
        digest: Some("ab".repeat(32)),
        detail: "ok \"quoted\" é".into(),
        attestations: vec![Attestation {
            node: "bank".into(),
            role: Role::Party,
            domain: CONTRIBUTION_DOMAIN.into(),
            message: "00ff".into(),
            signature: "11".repeat(64),
        }],
    };
    // The hash does not depend on the signing key.
    let a = Entry::seal(record.clone(), None, &NodeKey::generate());
    let b = Entry::seal(record, None, &NodeKey::generate());
    assert_eq!((a.seq, a.prev.as_str()), (0, GENESIS));
    assert_eq!(a.hash, b.hash);
    assert_eq!(a.hash, "14dc459b30724d6839a87c057448277876aca81e4b6d70c36af85f8155fc0199");
    // The encoding, spelled out: the length-prefixed domain, then compact
    // JSON in declaration order with absent options as `null`.
    let json = format!(
        concat!(
            r#"{{"seq":0,"prev":"{zeros}","record":{{"kind":"contribution","time_ms":1700000000123,"#,
            r#""lender":"lender","subject":"subject-42","parties":["bank","platform"],"job_id":"job-7","#,
            r#""model_id":"model-1","key_id":null,"digest":"{ab}","detail":"{detail}","#,
            r#""attestations":[{{"node":"bank","role":"party","domain":"{domain}","message":"00ff","#,
            r#""signature":"{sig}"}}]}}}}"#
        ),
        zeros = GENESIS,
        ab = "ab".repeat(32),
        domain = CONTRIBUTION_DOMAIN,
        sig = "11".repeat(64),
        detail = r#"ok \"quoted\" é"#,
    );
    let mut bytes = (ENTRY_DOMAIN.len() as u32).to_le_bytes().to_vec();
    bytes.extend_from_slice(ENTRY_DOMAIN.as_bytes());
    bytes.extend_from_slice(json.as_bytes());
    assert_eq!(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)), a.hash);
}

#[test]
fn an_edited_entry_is_located() {
    let k = keys();
    let mut entries = log(12);
    entries[5].record.detail.push_str(" (amended)");
    assert_eq!(verify_chain(&entries, &k.consortium), Err(AuditError::Edited { seq: 5 }));
    // Recomputing the hash without the coordinator's key does not help.
    entries[5].hash = entries[5].compute_hash();
    assert_eq!(verify_chain(&entries, &k.consortium), Err(AuditError::Unsigned { seq: 5 }));
}

#[test]
fn an_entry_resealed_by_another_key_is_unsigned() {
    let k = keys();
    let mut entries = log(12);
    let mut edited = entries[5].record.clone();
    edited.subject = Some("someone-else".into());
    entries[5] = Entry::seal(edited, Some(&entries[4]), &k.outsider);
    assert_eq!(verify_chain(&entries, &k.consortium), Err(AuditError::Unsigned { seq: 5 }));
    // Re-sealing everything after it with the wrong key still stops at 5.
    reseal(&mut entries, 5, &k.lender);
    assert_eq!(verify_chain(&entries, &k.consortium), Err(AuditError::Unsigned { seq: 5 }));
}

#[test]
fn a_deleted_entry_is_located_at_its_position() {
    let k = keys();
    let mut entries = log(12);
    entries.remove(7);
    // The entry now at position 7 carries seq 8.
    assert_eq!(verify_chain(&entries, &k.consortium), Err(AuditError::OutOfOrder { index: 7, seq: 8 }));
    // Renumbering the rest leaves the link broken at 7.
    for (i, e) in entries.iter_mut().enumerate().skip(7) {
        e.seq = i as u64;
    }
    assert_eq!(verify_chain(&entries, &k.consortium), Err(AuditError::Broken { seq: 7 }));
    // Relinking too leaves the content not matching its hash.
    entries[7].prev = entries[6].hash.clone();
    assert_eq!(verify_chain(&entries, &k.consortium), Err(AuditError::Edited { seq: 7 }));
}

#[test]
fn a_deleted_first_entry_is_located() {
    let k = keys();
    let mut entries = log(6);
    entries.remove(0);
    assert_eq!(verify_chain(&entries, &k.consortium), Err(AuditError::OutOfOrder { index: 0, seq: 1 }));
    entries[0].seq = 0;
    assert_eq!(verify_chain(&entries, &k.consortium), Err(AuditError::Broken { seq: 0 }));
}

#[test]
fn reordered_entries_are_located() {
    let k = keys();
    let mut entries = log(12);
    entries.swap(3, 9);
    assert_eq!(verify_chain(&entries, &k.consortium), Err(AuditError::OutOfOrder { index: 3, seq: 9 }));
    let mut adjacent = log(12);
    adjacent.swap(4, 5);
    assert_eq!(verify_chain(&adjacent, &k.consortium), Err(AuditError::OutOfOrder { index: 4, seq: 5 }));
}

#[test]
fn an_inserted_forged_entry_is_unsigned() {
    let k = keys();
    let mut entries = log(12);
    let forged = Entry::seal(
        Event { kind: EntryKind::Refusal, time_ms: T0, detail: "forged".into(), ..Default::default() },
        Some(&entries[5]),
        &k.outsider,
    );
    entries.insert(6, forged);
    assert_eq!(verify_chain(&entries, &k.consortium), Err(AuditError::Unsigned { seq: 6 }));
    // A forged entry that copies a real signature fails the same way.
    entries[6].signature = entries[7].signature.clone();
    assert_eq!(verify_chain(&entries, &k.consortium), Err(AuditError::Unsigned { seq: 6 }));
}

#[test]
fn truncation_is_caught_only_with_the_head() {
    let k = keys();
    let mut entries = log(20);
    let head = Head::of(&entries, &k.coordinator);
    entries.truncate(15);
    verify_chain(&entries, &k.consortium).expect("a truncated log is still a valid chain");
    assert_eq!(verify_with_head(&entries, &head, &k.consortium), Err(AuditError::Truncated { len: 15, head_len: 20 }));
    // An older head still matches a log that grew since.
    let old = Head::of(&entries[..10], &k.coordinator);
    let grown = log(20);
    verify_with_head(&grown, &old, &k.consortium).expect("log grew");
    // The head of an empty log.
    let empty = Head::of(&[], &k.coordinator);
    assert_eq!((empty.len, empty.hash.as_str()), (0, GENESIS));
    verify_with_head(&grown, &empty, &k.consortium).expect("empty head");
    // The coordinator rewriting history from 5 and re-signing is a valid
    // chain, but not the one its old head vouched for.
    let mut rewritten = log(20);
    rewritten[5].record.detail = "rewritten".into();
    reseal(&mut rewritten, 5, &k.coordinator);
    verify_chain(&rewritten, &k.consortium).expect("re-signed by the coordinator");
    assert_eq!(verify_with_head(&rewritten, &old, &k.consortium), Err(AuditError::HeadMismatch { len: 10 }));
    // The chain is checked before the head.
    let mut edited = grown.clone();
    edited[2].record.time_ms += 1;
    assert_eq!(verify_with_head(&edited, &old, &k.consortium), Err(AuditError::Edited { seq: 2 }));
}

#[test]
fn a_head_not_signed_by_the_coordinator_is_refused() {
    let k = keys();
    let entries = log(8);
    let bad = || IdentityError::BadSignature { node: "coordinator".into(), what: HEAD_DOMAIN.into() };
    let forged = Head::of(&entries[..4], &k.outsider);
    assert_eq!(forged.verify(&k.consortium), Err(AuditError::Identity(bad())));
    assert_eq!(verify_with_head(&entries, &forged, &k.consortium), Err(AuditError::Identity(bad())));
    // A genuine head with its length changed no longer verifies.
    let mut stretched = Head::of(&entries, &k.coordinator);
    stretched.len = 9;
    assert_eq!(stretched.verify(&k.consortium), Err(AuditError::Identity(bad())));
    let mut garbled = Head::of(&entries, &k.coordinator);
    garbled.signature = "zz".into();
    assert_eq!(garbled.verify(&k.consortium), Err(AuditError::Identity(bad())));
    garbled.hash = "not hex".into();
    assert!(matches!(garbled.verify(&k.consortium), Err(AuditError::Malformed(_))));
}

#[test]
fn receipts_catch_deleted_and_rewritten_entries() {
    let k = keys();
    let entries = log(16);
    let receipts: Vec<Entry> = entries.iter().filter(|e| e.concerns("platform")).cloned().collect();
    verify_receipts(&entries, &receipts).expect("all present");
    verify_receipts(&entries, &[]).expect("no receipts");
    let seq = receipts[2].seq;
    // Deleted, and the rest re-signed by the coordinator: a valid chain.
    let mut deleted = entries.clone();
    deleted.remove(seq as usize);
    for (i, e) in deleted.iter_mut().enumerate() {
        e.seq = i as u64;
    }
    reseal(&mut deleted, 0, &k.coordinator);
    verify_chain(&deleted, &k.consortium).expect("re-signed");
    assert_eq!(verify_receipts(&deleted, &receipts), Err(AuditError::MissingReceipt { seq }));
    // Rewritten in place and re-signed: also a valid chain.
    let mut rewritten = entries.clone();
    rewritten[seq as usize].record.parties.clear();
    reseal(&mut rewritten, seq as usize, &k.coordinator);
    verify_chain(&rewritten, &k.consortium).expect("re-signed");
    assert_eq!(verify_receipts(&rewritten, &receipts), Err(AuditError::MissingReceipt { seq }));
    // Truncated before the last receipt.
    let last = receipts.last().expect("receipts").seq;
    assert_eq!(verify_receipts(&entries[..last as usize], &receipts), Err(AuditError::MissingReceipt { seq: last }));
}

#[test]
fn bad_attestations_are_located_and_named() {
    let k = keys();
    let base = log(4);
    let message = b"contribution bytes";
    let cases: Vec<(Attestation, u64, IdentityError)> = vec![
        (
            Attestation::new(
                "mallory",
                Role::Party,
                APPROVAL_DOMAIN,
                message,
                &k.outsider.sign(APPROVAL_DOMAIN, message),
            ),
            T0,
            IdentityError::UnknownNode("mallory".into()),
        ),
        (
            Attestation::new("lender", Role::Party, APPROVAL_DOMAIN, message, &k.lender.sign(APPROVAL_DOMAIN, message)),
            T0,
            IdentityError::WrongRole { node: "lender".into(), role: "lender", expected: "party" },
        ),
        (
            Attestation::new("old", Role::Party, APPROVAL_DOMAIN, message, &k.old.sign(APPROVAL_DOMAIN, message)),
            T0,
            IdentityError::Revoked("old".into()),
        ),
        (
            Attestation::new(
                "bank",
                Role::Party,
                APPROVAL_DOMAIN,
                b"other bytes",
                &k.bank.sign(APPROVAL_DOMAIN, message),
            ),
            T0,
            IdentityError::BadSignature { node: "bank".into(), what: APPROVAL_DOMAIN.into() },
        ),
        (
            // Signed by another member's key.
            Attestation::new("bank", Role::Party, APPROVAL_DOMAIN, message, &k.platform.sign(APPROVAL_DOMAIN, message)),
            T0,
            IdentityError::BadSignature { node: "bank".into(), what: APPROVAL_DOMAIN.into() },
        ),
        (
            Attestation::new(
                "retired",
                Role::Party,
                APPROVAL_DOMAIN,
                message,
                &k.retired.sign(APPROVAL_DOMAIN, message),
            ),
            RETIRED_EXPIRES * 1000,
            IdentityError::Expired { node: "retired".into(), expires: RETIRED_EXPIRES },
        ),
    ];
    for (attestation, time_ms, source) in cases {
        let mut entries = base.clone();
        let node = attestation.node.clone();
        let record = Event {
            kind: EntryKind::ModelApproval,
            time_ms,
            parties: vec![node.clone()],
            attestations: vec![record(3).attestations[0].clone(), attestation],
            ..Default::default()
        };
        entries.push(Entry::seal(record, entries.last(), &k.coordinator));
        assert_eq!(verify_chain(&entries, &k.consortium), Err(AuditError::Attestation { seq: 4, node, source }));
    }
    // The expired member's attestation counted while it was current.
    let message = b"approval";
    let early =
        Attestation::new("retired", Role::Party, APPROVAL_DOMAIN, message, &k.retired.sign(APPROVAL_DOMAIN, message));
    let entry = Entry::seal(
        Event { time_ms: RETIRED_EXPIRES * 1000 - 1, attestations: vec![early], ..Default::default() },
        None,
        &k.coordinator,
    );
    verify_chain(&[entry], &k.consortium).expect("attested before expiry");
    let e = AuditError::Attestation { seq: 4, node: "old".into(), source: IdentityError::Revoked("old".into()) };
    assert_eq!(e.to_string(), "entry 4: the attestation by `old` does not verify: the identity of `old` is revoked");
}

#[test]
fn json_round_trips_and_decoding_is_strict() {
    let entries = log(8);
    for entry in &entries {
        let line = entry.to_json();
        assert!(!line.contains('\n'));
        assert_eq!(&Entry::from_json(&line).expect("decodes"), entry);
    }
    let line = entries[3].to_json();
    // Oversized input is refused before parsing.
    let padded = format!("{line}{}", " ".repeat(ENTRY_LIMIT));
    let e = Entry::from_json(&padded).unwrap_err();
    assert!(matches!(&e, AuditError::Malformed(m) if m.contains("limit")), "{e}");
    let mut big = entries[3].clone();
    big.record.detail = "x".repeat(ENTRY_LIMIT);
    assert!(matches!(Entry::from_json(&big.to_json()), Err(AuditError::Malformed(_))));
    // Unknown fields, at the top and inside the record and attestations.
    for (from, to) in [
        ("{\"seq\"", "{\"colour\":1,\"seq\""),
        ("\"record\":{", "\"record\":{\"colour\":1,"),
        ("\"attestations\":[{", "\"attestations\":[{\"colour\":1,"),
    ] {
        assert!(line.contains(from), "{from}");
        let e = Entry::from_json(&line.replacen(from, to, 1)).unwrap_err();
        assert!(matches!(&e, AuditError::Malformed(m) if m.contains("colour")), "{e}");
    }
    // Missing fields, trailing data, an unknown kind, bad hex.
    let hash = &entries[3].hash;
    for bad in [
        line.replacen(&format!(",\"hash\":\"{hash}\""), "", 1),
        format!("{line} {{}}"),
        line.replacen("\"kind\":\"contribution\"", "\"kind\":\"bribe\"", 1),
        line.replacen(hash.as_str(), &hash.to_uppercase(), 1),
        line.replacen(hash.as_str(), &hash[..62], 1),
        line.replacen(&entries[3].signature, "00", 1),
        "not json".into(),
    ] {
        assert_ne!(bad, line);
        assert!(matches!(Entry::from_json(&bad), Err(AuditError::Malformed(_))), "{bad}");
    }
}

#[test]
fn filters_select_by_subject_party_and_lender() {
    let entries = log(16);
    let by_subject = filter(&entries, &Filter { subject: Some("subject-2".into()), ..Default::default() });
    assert!(!by_subject.is_empty());
    assert!(by_subject.iter().all(|e| e.record.subject.as_deref() == Some("subject-2")));
    assert_eq!(by_subject.len(), entries.iter().filter(|e| e.record.subject.as_deref() == Some("subject-2")).count());
    let by_party = filter(&entries, &Filter { party: Some("platform".into()), ..Default::default() });
    assert!(by_party.iter().all(|e| e.concerns("platform")));
    assert!(
        by_party
            .iter()
            .all(|e| e.record.kind != EntryKind::KeyRegistration && e.record.kind != EntryKind::ModelApproval)
    );
    let by_lender = filter(&entries, &Filter { lender: Some("lender".into()), ..Default::default() });
    assert!(by_lender.iter().all(|e| e.record.lender.as_deref() == Some("lender")));
    assert!(by_lender.len() < entries.len());
    assert_eq!(filter(&entries, &Filter::default()).len(), entries.len());
    let all = Filter { subject: Some("subject-3".into()), party: Some("bank".into()), lender: Some("lender".into()) };
    let both = filter(&entries, &all);
    assert!(!both.is_empty());
    assert!(both.iter().all(|e| e.record.subject.as_deref() == Some("subject-3") && e.concerns("bank")));
    assert!(filter(&entries, &Filter { lender: Some("nobody".into()), ..Default::default() }).is_empty());
    // In log order.
    assert!(by_party.windows(2).all(|w| w[0].seq < w[1].seq));
}

#[test]
fn concerns_names_lender_parties_and_attesters() {
    let k = keys();
    let message = b"m";
    let entry = Entry::seal(
        Event {
            lender: Some("lender".into()),
            parties: vec!["bank".into()],
            attestations: vec![Attestation::new("platform", Role::Party, "d", message, &k.platform.sign("d", message))],
            subject: Some("subject-1".into()),
            ..Default::default()
        },
        None,
        &k.coordinator,
    );
    for node in ["lender", "bank", "platform"] {
        assert!(entry.concerns(node), "{node}");
    }
    assert!(!entry.concerns("subject-1"));
    assert!(!entry.concerns("coordinator"));
}

#[test]
fn detail_is_cut_on_a_character_boundary() {
    let k = keys();
    let detail = format!("{}é and more", "a".repeat(DETAIL_LIMIT - 1));
    let entry = Entry::seal(Event { detail, ..Default::default() }, None, &k.coordinator);
    assert_eq!(entry.record.detail, "a".repeat(DETAIL_LIMIT - 1));
    let exact = "é".repeat(DETAIL_LIMIT / 2);
    let entry = Entry::seal(Event { detail: exact.clone(), ..Default::default() }, None, &k.coordinator);
    assert_eq!(entry.record.detail, exact);
    verify_chain(&[entry], &k.consortium).expect("verifies");
}

#[test]
fn a_consortium_without_a_coordinator_verifies_nothing() {
    let k = keys();
    let text = format!(
        "name = \"t\"\n[[member]]\nname = \"bank\"\nrole = \"party\"\npublic_key = \"{}\"\n",
        k.bank.public_hex()
    );
    let consortium = Consortium::from_toml(&text).expect("consortium");
    let entries = log(2);
    assert!(matches!(verify_chain(&entries, &consortium), Err(AuditError::Identity(IdentityError::Consortium(_)))));
    let head = Head::of(&entries, &k.coordinator);
    assert!(matches!(head.verify(&consortium), Err(AuditError::Identity(IdentityError::Consortium(_)))));
    // A member holding another coordinator's key rejects everything.
    let other = k.consortium.to_toml().expect("toml").replace(&k.coordinator.public_hex(), &k.outsider.public_hex());
    let other = Consortium::from_toml(&other).expect("consortium");
    assert_eq!(verify_chain(&entries, &other), Err(AuditError::Unsigned { seq: 0 }));
}

#[test]
fn a_member_verifies_the_log_from_files_alone() {
    let k = keys();
    let dir = tempfile::tempdir().expect("tempdir");
    let consortium_path = dir.path().join("consortium.toml");
    std::fs::write(&consortium_path, k.consortium.to_toml().expect("toml")).expect("write");
    let entries = log(10);
    let lines: String = entries.iter().map(|e| e.to_json() + "\n").collect();
    let log_path = dir.path().join("audit.jsonl");
    std::fs::write(&log_path, lines).expect("write");

    let consortium = Consortium::load(&consortium_path).expect("load");
    let read: Vec<Entry> = std::fs::read_to_string(&log_path)
        .expect("read")
        .lines()
        .map(Entry::from_json)
        .collect::<Result<_>>()
        .expect("decode");
    assert_eq!(read, entries);
    verify_with_head(&read, &Head::of(&entries, &k.coordinator), &consortium).expect("verifies");
}

/// One generated event: kind, time offset, subject, detail, digest, and
/// which parties attest it.
type Generated = (u8, u32, Option<String>, String, Option<[u8; 32]>, Vec<bool>);

fn event() -> impl Strategy<Value = Generated> {
    (
        0u8..8,
        0u32..1_000_000,
        proptest::option::of("[a-z0-9-]{0,12}"),
        ".{0,40}",
        proptest::option::of(any::<[u8; 32]>()),
        proptest::collection::vec(any::<bool>(), 1..3),
    )
}

const KINDS: [EntryKind; 8] = [
    EntryKind::KeyRegistration,
    EntryKind::ModelApproval,
    EntryKind::DecisionRequest,
    EntryKind::Contribution,
    EntryKind::Result,
    EntryKind::Aggregation,
    EntryKind::Psi,
    EntryKind::Refusal,
];

fn build(events: &[Generated]) -> Vec<Entry> {
    let k = keys();
    let mut entries: Vec<Entry> = Vec::new();
    for (kind, dt, subject, detail, digest, attesters) in events {
        let time_ms = T0 + u64::from(*dt);
        let attestations = attesters
            .iter()
            .map(|&bank| {
                let party = if bank { "bank" } else { "platform" };
                contribution(party, subject.as_deref().unwrap_or(""), time_ms).0
            })
            .collect();
        let mut record = Event {
            kind: KINDS[*kind as usize],
            time_ms,
            lender: Some("lender".into()),
            subject: subject.clone(),
            parties: vec!["bank".into()],
            digest: digest.map(hex::encode),
            detail: detail.clone(),
            attestations,
            ..Default::default()
        };
        if record.kind == EntryKind::Contribution && !record.attestations.is_empty() {
            // A contribution entry carries exactly its party's envelope.
            record.attestations.truncate(1);
            let party = record.attestations[0].node.clone();
            let subject = record.subject.clone().unwrap_or_default();
            let (attestation, digest) = contribution(&party, &subject, time_ms);
            record.attestations = vec![attestation];
            record.request_id = Some(format!("r-{subject}"));
            record.subject = Some(subject.clone());
            record.job_id = Some(format!("job-{subject}"));
            record.model_id = Some("model-1".into());
            record.key_id = Some("key-1".into());
            record.parties = vec![party];
            record.digest = Some(digest);
        }
        let entry = Entry::seal(record, entries.last(), &k.coordinator);
        entries.push(entry);
    }
    entries
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_logs_verify_and_any_single_edit_is_located(
        events in proptest::collection::vec(event(), 1..12),
        at in any::<proptest::sample::Index>(),
        field in 0u8..5,
    ) {
        let k = keys();
        let mut entries = build(&events);
        verify_chain(&entries, &k.consortium).expect("verifies");
        let i = at.index(entries.len());
        let r = &mut entries[i].record;
        match field {
            0 => r.subject = Some(r.subject.take().map_or_else(|| "x".into(), |s| s + "x")),
            1 => r.detail.push('x'),
            2 => r.digest = Some(r.digest.take().map_or_else(|| "00".repeat(32), |d| d.replacen(&d[..2], if &d[..2] == "00" { "01" } else { "00" }, 1))),
            3 => r.time_ms += 1,
            _ => {
                let s = &mut r.attestations[0].signature;
                let flipped = if s.starts_with('0') { "1" } else { "0" };
                s.replace_range(..1, flipped);
            }
        }
        prop_assert_eq!(verify_chain(&entries, &k.consortium), Err(AuditError::Edited { seq: i as u64 }));
    }
}

#[test]
fn a_genuine_envelope_moved_to_another_entry_does_not_vouch_for_it() {
    let k = keys();
    let entries = log(8);
    verify_chain(&entries, &k.consortium).expect("verifies");
    // Entry 3 is the platform's contribution for subject-3; claim it for another
    // subject, job or digest, re-sealed by the coordinator itself.
    assert_eq!(entries[3].record.parties, ["platform"]);
    let moves: [fn(&mut Event); 5] = [
        |r| r.subject = Some("subject-0".into()),
        |r| r.job_id = Some("job-other".into()),
        |r| r.model_id = Some("model-2".into()),
        |r| r.digest = Some("00".repeat(32)),
        |r| r.parties = vec!["bank".into()],
    ];
    for change in moves {
        let mut forged = entries.clone();
        change(&mut forged[3].record);
        reseal(&mut forged, 3, &k.coordinator);
        let node = forged[3].record.attestations[0].node.clone();
        assert!(
            matches!(verify_chain(&forged, &k.consortium), Err(AuditError::Attestation { seq: 3, node: n, .. }) if n == node),
            "{:?}",
            verify_chain(&forged, &k.consortium)
        );
    }
}
