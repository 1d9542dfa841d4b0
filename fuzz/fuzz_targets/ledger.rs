//! Ledger entries, heads and receipt files as a member reads them from the
//! coordinator or from disk: one JSON document per line, then the chain,
//! head and receipts checked against a consortium file.
#![no_main]

use std::sync::LazyLock;

use jointscore_audit::{Entry, Head, verify_chain, verify_receipts, verify_with_head};
use jointscore_identity::{Consortium, Member, NodeKey, Role};
use libfuzzer_sys::fuzz_target;

static CONSORTIUM: LazyLock<Consortium> = LazyLock::new(|| {
    let member = |name: &str, role| Member {
        name: name.into(),
        role,
        public_key: NodeKey::generate().public_hex(),
        address: None,
        revoked: false,
        expires: None,
        certificate: None,
    };
    Consortium {
        name: "fuzz".into(),
        mtls: false,
        proofs: None,
        members: vec![member("coordinator", Role::Coordinator), member("bank", Role::Party)],
    }
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut entries = Vec::new();
    let mut head = None;
    for line in text.lines() {
        if let Ok(entry) = Entry::from_json(line) {
            entries.push(entry);
        } else if let Ok(h) = serde_json::from_str::<Head>(line) {
            head = Some(h);
        }
    }
    let _ = verify_chain(&entries, &CONSORTIUM);
    if let Some(head) = &head {
        let _ = verify_with_head(&entries, head, &CONSORTIUM);
    }
    let (a, b) = entries.split_at(entries.len() / 2);
    let _ = verify_receipts(a, b);
});
