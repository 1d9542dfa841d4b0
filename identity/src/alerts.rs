//! What a lender signs after a monitoring round: the alerts one loan's
//! result raised. The coordinator cannot know them (it holds only
//! ciphertexts); the lender's signature makes the ledger's alert entry the
//! lender's word, not the coordinator's.

use serde::{Deserialize, Serialize};

use crate::consortium::{Consortium, Role};
use crate::envelope::encode_fields;
use crate::error::Result;
use crate::key::{NodeKey, SIGNATURE_BYTES};

/// Domain tag of alert reports.
pub const ALERT_REPORT_DOMAIN: &str = "jointscore/alert-report/v1";

/// The alerts a monitoring job's result raised, in the lender's words.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertReport {
    /// The coordinator's job (one loan on one day).
    pub job_id: String,
    /// The lender, as the consortium file names it.
    pub lender: String,
    /// The alerts raised, by name; signed sorted and without repeats.
    pub alerts: Vec<String>,
    /// When the lender signed, in milliseconds since the unix epoch.
    pub time_ms: u64,
}

impl AlertReport {
    /// The alerts as they are signed: sorted, without repeats.
    pub fn canonical_alerts(&self) -> Vec<String> {
        let mut alerts = self.alerts.clone();
        alerts.sort();
        alerts.dedup();
        alerts
    }

    /// The signed bytes: the fields length-prefixed, the alerts counted,
    /// the time last.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        encode_fields(&mut out, &[&self.job_id, &self.lender]);
        let alerts = self.canonical_alerts();
        out.extend_from_slice(&(alerts.len() as u32).to_le_bytes());
        encode_fields(&mut out, &alerts.iter().map(String::as_str).collect::<Vec<_>>());
        out.extend_from_slice(&self.time_ms.to_le_bytes());
        out
    }

    /// The lender's signature.
    pub fn sign(&self, key: &NodeKey) -> [u8; SIGNATURE_BYTES] {
        key.sign(ALERT_REPORT_DOMAIN, &self.to_bytes())
    }

    /// Checks that `lender`, a current lender member of `consortium`, signed
    /// exactly this report. `now` is in unix seconds.
    pub fn verify(&self, consortium: &Consortium, signature: &[u8], now: u64) -> Result<()> {
        consortium.verify(&self.lender, Role::Lender, now, ALERT_REPORT_DOMAIN, &self.to_bytes(), signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signed_bytes_do_not_depend_on_the_alerts_order_but_on_everything_else() {
        let r =
            AlertReport { job_id: "j".into(), lender: "l".into(), alerts: vec!["b".into(), "a".into()], time_ms: 5 };
        let same = AlertReport { alerts: vec!["a".into(), "b".into(), "a".into()], ..r.clone() };
        assert_eq!(r.to_bytes(), same.to_bytes());
        assert_ne!(r.to_bytes(), AlertReport { alerts: vec!["a".into()], ..r.clone() }.to_bytes());
        assert_ne!(r.to_bytes(), AlertReport { job_id: "k".into(), ..r.clone() }.to_bytes());
        assert_ne!(r.to_bytes(), AlertReport { time_ms: 6, ..r }.to_bytes());
    }
}
