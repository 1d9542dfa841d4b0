//! Sample subjects for demonstrations and benchmarks.
//!
//! For `cross_border_seller` the generator draws a latent seller quality and
//! derives correlated, plausible feature values from it (strong sellers sell
//! more, refund less, ship on time and repay); a share of values is missing
//! or out of range, as in real books. For any other model it draws values
//! bin by bin. The data is synthetic; it stands for no real seller.

use jointscore_circuits::{FeatureKind, Missing, Model};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Map, Value, json};

/// `n` subjects as `(id, inputs JSON)`, reproducible from `seed`.
pub fn subjects(model: &Model, n: usize, seed: u64) -> Vec<(String, Value)> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let inputs =
                if model.name() == "cross_border_seller" { seller(&mut rng) } else { generic(model, &mut rng) };
            (format!("seller-{:04}", i + 1), inputs)
        })
        .collect()
}

fn seller(rng: &mut StdRng) -> Value {
    let q: f64 = rng.random::<f64>().powf(0.8);
    let mut noise = |s: f64| (rng.random::<f64>() - 0.5) * 2.0 * s;
    let months = (3.0 + 90.0 * q + noise(20.0)).max(1.0).round() as i64;
    let gmv = 10f64.powf(1.2 + 2.6 * q + noise(0.5)).round() as i64;
    let mut v = json!({
        "gmv_12m_k": gmv,
        "gmv_trend_pct": (-35.0 + 80.0 * q + noise(35.0)).round() as i64,
        "refund_rate_bp": (1900.0 - 1700.0 * q + noise(500.0)).max(0.0).round() as i64,
        "months_active": months,
        "store_rating_x10": (33.0 + 16.0 * q + noise(4.0)).min(50.0).round() as i64,
        "on_time_rate_bp": (8600.0 + 1400.0 * q + noise(400.0)).min(10000.0).round() as i64,
        "inventory_turnover_days": (210.0 - 180.0 * q + noise(50.0)).max(5.0).round() as i64,
        "overseas_stock_k": 10f64.powf(0.6 + 2.4 * q + noise(0.6)).round() as i64,
        "collection_cycle_days": (75.0 - 65.0 * q + noise(15.0)).max(2.0).round() as i64,
        "late_repayments_12m": if q < 0.35 { (noise(2.0).abs() * 2.0).round() as i64 } else { i64::from(noise(1.0) > 0.8) },
        "outstanding_debt_k": 10f64.powf(2.8 - 1.8 * q + noise(0.7)).round() as i64,
        "major_violations": i64::from(noise(1.0) > 0.94),
    });
    if let Value::Object(map) = &mut v {
        // Young stores have no trend or rating yet; some sellers hold no
        // overseas stock with this logistics partner.
        if months < 12 {
            map.insert("gmv_trend_pct".into(), Value::Null);
        }
        if months < 6 || noise(1.0) > 0.85 {
            map.insert("store_rating_x10".into(), Value::Null);
        }
        if noise(1.0) > 0.8 {
            map.insert("overseas_stock_k".into(), Value::Null);
        }
    }
    v
}

fn generic(model: &Model, rng: &mut StdRng) -> Value {
    let mut map = Map::new();
    for f in model.features() {
        if !matches!(f.missing, Missing::Reject) && rng.random::<f64>() < 0.05 {
            map.insert(f.name.clone(), Value::Null);
            continue;
        }
        let bin = &f.bins[rng.random_range(0..f.bins.len())];
        let (lo, hi) = bin.ranges[rng.random_range(0..bin.ranges.len())];
        let v = rng.random_range(lo..=hi);
        let value = match &f.kind {
            FeatureKind::Integer { .. } => json!(v),
            FeatureKind::Categorical { categories } => json!(categories[v as usize]),
        };
        map.insert(f.name.clone(), value);
    }
    Value::Object(map)
}
