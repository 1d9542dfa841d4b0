//! Sample histories for monitoring: daily flows per seller at each party
//! (the platform's sales `gmv`, the bank's `collections`, the logistics
//! firm's `shipments`), with a few sellers whose last month goes wrong in
//! the ways the built-in spec (`seller_watch`) watches for.
//!
//! The flows are synthetic, drawn around each seller's yearly sales; they
//! stand for no real seller.

use jointscore_monitor::{Day, MonitorPlan, Snapshot, Values};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};

/// Days of history each party keeps for every seller.
pub const FLOW_DAYS: i64 = 60;

/// What a seller's last 30 days look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// Steady flows, agreeing with one another.
    Steady,
    /// Sales fall to about a third of the month before.
    GmvCollapse,
    /// Sales up a third while collections and shipments fall by a third.
    FlowsDisagree,
    /// Collections about twice the recorded sales.
    CollectionsExceedSales,
    /// No collection for the last three weeks.
    CollectionsStop,
}

/// The pattern of the `index`-th seller (0-based): the first four show
/// one trouble each, then one seller in ten shows one of them in turn.
pub fn pattern(index: usize) -> Pattern {
    const TROUBLE: [Pattern; 4] =
        [Pattern::GmvCollapse, Pattern::FlowsDisagree, Pattern::CollectionsExceedSales, Pattern::CollectionsStop];
    match index {
        0..4 => TROUBLE[index],
        _ if index % 10 == 7 => TROUBLE[(index / 10) % 4],
        _ => Pattern::Steady,
    }
}

/// One seller's daily flows over the [`FLOW_DAYS`] days ending `end`:
/// `(day, gmv, collections, shipments)`, oldest first.
pub fn flows(index: usize, record: &Value, seed: u64, end: Day) -> Vec<(Day, i64, i64, i64)> {
    let mut rng = StdRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let yearly_k = record.get("gmv_12m_k").and_then(Value::as_i64).unwrap_or(100).clamp(1, 10_000_000);
    let daily = (yearly_k * 1000 / 365).max(50) as f64;
    let p = pattern(index);
    (0..FLOW_DAYS)
        .map(|k| {
            let day = Day::from_number(end.number() - (FLOW_DAYS - 1 - k));
            let recent = k >= FLOW_DAYS - 30;
            let mut noise = |s: f64| 1.0 + (rng.random::<f64>() - 0.5) * 2.0 * s;
            let (mut g, mut c, mut s) = (daily * noise(0.1), daily * 0.97 * noise(0.1), daily / 40.0 * noise(0.1));
            if recent {
                match p {
                    Pattern::Steady => {}
                    Pattern::GmvCollapse => {
                        g *= 0.35;
                        c *= 0.5;
                        s *= 0.4;
                    }
                    Pattern::FlowsDisagree => {
                        g *= 1.35;
                        c *= 0.65;
                        s *= 0.65;
                    }
                    Pattern::CollectionsExceedSales => c *= 2.1,
                    Pattern::CollectionsStop if k >= FLOW_DAYS - 21 => c = 0.0,
                    Pattern::CollectionsStop => {}
                }
            }
            (day, g.round() as i64, c.round() as i64, s.round().max(1.0) as i64)
        })
        .collect()
}

/// The field each party of the sample book reports its flow under.
pub fn flow_field(party: &str) -> Option<&'static str> {
    match party {
        "platform" => Some("gmv"),
        "bank" => Some("collections"),
        "logistics" => Some("shipments"),
        _ => None,
    }
}

/// A party's snapshots of the sample book, per day: its current record
/// (`view`) with that day's flow beside it, so the newest snapshot is still
/// the record decisions read.
pub fn snapshots(
    party: &str,
    book: &[(String, Value)],
    views: &[Value],
    seed: u64,
    end: Day,
) -> Vec<(Day, Vec<(String, Value)>)> {
    let Some(field) = flow_field(party) else { return Vec::new() };
    let all: Vec<Vec<(Day, i64, i64, i64)>> =
        book.iter().enumerate().map(|(i, (_, record))| flows(i, record, seed, end)).collect();
    (0..FLOW_DAYS as usize)
        .map(|k| {
            let day = all.first().map_or(end, |f| f[k].0);
            let rows = book
                .iter()
                .zip(views)
                .zip(&all)
                .map(|(((id, _), view), f)| {
                    let (_, g, c, s) = f[k];
                    let mut row = view.clone();
                    row[field] = json!(match field {
                        "gmv" => g,
                        "collections" => c,
                        _ => s,
                    });
                    (id.clone(), row)
                })
                .collect();
            (day, rows)
        })
        .collect()
}

/// Every window of `plan`'s spec for the `index`-th seller on `end`, from
/// the same flows the parties hold: what the plaintext reference reads.
pub fn window_values(plan: &MonitorPlan, index: usize, record: &Value, seed: u64, end: Day) -> Values {
    let f = flows(index, record, seed, end);
    let mut values = Values::new();
    for (p, party) in plan.spec().parties.iter().enumerate() {
        let Some(field) = flow_field(party) else { continue };
        let history: Vec<Snapshot> = f
            .iter()
            .map(|&(day, g, c, s)| Snapshot {
                day,
                record: json!({ field: match field { "gmv" => g, "collections" => c, _ => s } }),
            })
            .collect();
        // The sample flows are integers: every window computes.
        if let Ok(v) = plan.window_values(p, &history, end) {
            values.extend(v);
        }
    }
    values
}

/// The alerts the plaintext reference raises for every seller of `book`
/// on `end`, in book order: what a monitoring round must decrypt.
pub fn expected_alerts(plan: &MonitorPlan, book: &[(String, Value)], seed: u64, end: Day) -> Vec<Vec<String>> {
    book.iter()
        .enumerate()
        .map(|(i, (_, record))| {
            let bits = jointscore_monitor::reference(plan.spec(), &window_values(plan, i, record, seed, end));
            jointscore_monitor::outcome(plan.spec(), &bits).raised
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use jointscore_monitor::{Spec, reference};

    use super::*;

    #[test]
    fn each_trouble_raises_its_alert_and_steady_sellers_raise_none() {
        let plan = MonitorPlan::new(&Spec::from_toml(jointscore_monitor::SELLER_WATCH).expect("spec")).expect("plan");
        let end = Day::parse("2026-11-30").expect("day");
        let record = json!({ "gmv_12m_k": 900 });
        let raised = |i: usize| {
            let bits = reference(plan.spec(), &window_values(&plan, i, &record, 7, end));
            jointscore_monitor::outcome(plan.spec(), &bits).raised
        };
        assert_eq!(raised(0), vec!["gmv_collapse"]);
        assert_eq!(raised(1), vec!["flows_disagree"]);
        assert_eq!(raised(2), vec!["collections_exceed_sales"]);
        assert_eq!(raised(3), vec!["collections_interrupted"]);
        for i in [4, 5, 6, 8, 9, 10] {
            assert!(raised(i).is_empty(), "seller {i}: {:?}", raised(i));
        }
    }
}
