//! The seller's consent: a party that requires it contributes only for a
//! subject that consented to the requesting lender for decisions, says no
//! more than "no consent" otherwise, and names the consent it relied on.

use jointscore_party::{ContributionRecord, LogKind, Purpose};

use super::*;

const HEADER: &str = "subject,lender,purpose,valid_from,valid_until,revoked\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_party_requiring_consent_contributes_only_under_one_and_names_it() {
    let options = ClusterOptions { consent_required: vec!["bank".into()], ..small() };
    let (mut cluster, mut lender) = cluster(options).await;

    // No consent at all: refused, and the lender learns only that.
    let (code, reason) = failure(&mut lender, "seller-0001", "consent-1").await;
    assert_eq!(code, Code::PermissionDenied, "{reason}");
    assert!(reason.contains("party `bank`: no consent"), "{reason}");
    assert!(!reason.contains("revoked") && !reason.contains("valid at"), "no detail for the lender: {reason}");

    // Consents of other subjects, for another lender, for monitoring only,
    // expired, or revoked do not count.
    let bank = cluster.party("bank").expect("bank");
    let report = bank
        .store
        .import_consents_csv(
            format!(
                "{HEADER}seller-0001,other-lender,decision,2020-01-01,,\nseller-0001,{LENDER},monitoring,2020-01-01,,\n\
                 seller-0001,{LENDER},decision,2020-01-01,2020-12-31,\nseller-0001,{LENDER},decision,2021-01-01,,\n\
                 seller-0001,{LENDER},decision,2021-01-01,,2021-06-01\nseller-0002,other-lender,decision,2020-01-01,,\n"
            )
            .as_bytes(),
        )
        .expect("consents");
    assert_eq!((report.added, report.revoked), (5, 1));
    let (code, reason) = failure(&mut lender, "seller-0001", "consent-2").await;
    assert_eq!(code, Code::PermissionDenied, "{reason}");
    assert!(reason.contains("party `bank`: no consent"), "{reason}");

    // The bank's own log has what the lender was not told.
    let log = cluster.party("bank").expect("bank").store.log_entries(0).expect("log");
    let refusals: Vec<_> = log.iter().filter(|e| e.kind == LogKind::Refusal).collect();
    assert_eq!(refusals.len(), 2);
    for refusal in &refusals {
        assert_eq!(refusal.body["reason"], "party `bank`: no consent");
        let detail = refusal.body["detail"].as_str().expect("detail");
        assert!(
            detail.contains("`decision`")
                && detail.contains("`seller-0001`")
                && detail.contains(&format!("`{LENDER}`")),
            "{detail}"
        );
    }

    // The seller consents to this lender for decisions: the bank
    // contributes, and its signed contribution names the consent.
    let bank = cluster.party("bank").expect("bank");
    bank.store
        .import_consents_csv(format!("{HEADER}seller-0001,{LENDER},decision,2022-01-01T00:00:00Z,,\n").as_bytes())
        .expect("consent");
    let now =
        u64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis())
            .expect("ms");
    let consent = bank.store.consent("seller-0001", LENDER, Purpose::Decision, now).expect("lookup").expect("in force");
    let decision = lender.decide("seller-0001", "consent-3").await.expect("decided under consent");
    let job = lender.job(&decision.job_id).await.expect("job");
    let named = |party: &str| job.contributions.iter().find(|c| c.party == party).map(|c| c.consent.clone());
    assert_eq!(named("bank"), Some(consent.clone()), "the bank's contribution names its consent");
    assert_eq!(named("platform"), Some(String::new()), "a party that does not require consent names none");

    // In the bank's own log too, in the envelope it signed.
    let log = cluster.party("bank").expect("bank").store.log_entries(0).expect("log");
    let contributed: Vec<ContributionRecord> = log
        .iter()
        .filter(|e| e.kind == LogKind::Contribution)
        .map(|e| serde_json::from_value(e.body.clone()).expect("contribution record"))
        .collect();
    assert_eq!(contributed.len(), 1);
    assert_eq!(contributed[0].envelope.consent, consent);

    // Another subject, consented only to another lender: refused.
    let (code, reason) = failure(&mut lender, "seller-0002", "consent-4").await;
    assert_eq!(code, Code::PermissionDenied, "{reason}");
    let bank = cluster.party("bank").expect("bank");
    bank.store
        .import_consents_csv(
            format!("{HEADER}seller-0001,{LENDER},decision,2022-01-01T00:00:00Z,,2030-01-01\n").as_bytes(),
        )
        .expect("revocation");
    // Revoked: refused again.
    let (code, reason) = failure(&mut lender, "seller-0001", "consent-5").await;
    assert_eq!(code, Code::PermissionDenied, "{reason}");
    assert!(reason.contains("party `bank`: no consent"), "{reason}");
    cluster.stop().await.expect("stop");
}
