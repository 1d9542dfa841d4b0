//! A party's own vector for a spec, from its records.

use serde_json::Value;

use crate::error::{Result, StatsError};
use crate::spec::{CounterKind, Segment, StatsSpec};

/// Counts `records` (one JSON object per subject) as `spec` asks, for a
/// round over `parties` parties: [`Tally`] over a slice.
pub fn tally<'a>(spec: &StatsSpec, records: impl IntoIterator<Item = &'a Value>, parties: u32) -> Result<Vec<u32>> {
    let mut tally = Tally::new(spec);
    records.into_iter().try_for_each(|r| tally.add(r))?;
    tally.finish(parties)
}

/// A party's vector for a spec, built one record at a time, so a book of
/// any size is counted without holding it in memory.
///
/// A record without the counter's column (absent or null) adds nothing to
/// it. Sums take non-negative integers only; any other value, or a band
/// segment column that is not an integer, is an error that says how many
/// records are at fault and names no subject. Each entry must stay at most
/// `u32::MAX / parties`, so the sum over all parties cannot wrap modulo
/// 2^32; beyond it this is an error too, rather than a wrong total.
pub struct Tally<'s> {
    spec: &'s StatsSpec,
    totals: Vec<u64>,
    faults: Vec<usize>,
}

impl<'s> Tally<'s> {
    /// An empty tally for `spec`.
    pub fn new(spec: &'s StatsSpec) -> Tally<'s> {
        Tally { spec, totals: vec![0; spec.dim()], faults: vec![0; spec.counters.len()] }
    }

    /// Counts one record.
    pub fn add(&mut self, record: &Value) -> Result<()> {
        let mut offset = 0;
        for (i, counter) in self.spec.counters.iter().enumerate() {
            let here = offset;
            offset += counter.entries();
            let value = match &counter.column {
                None => Some(&Value::Null),
                Some(column) => record.get(column).filter(|v| !v.is_null()),
            };
            let Some(value) = value else { continue };
            let amount = match counter.kind {
                CounterKind::Count => 1,
                CounterKind::Sum => match value.as_u64() {
                    Some(n) => n,
                    None => {
                        self.faults[i] += 1;
                        continue;
                    }
                },
            };
            let slot = match &counter.segment {
                None => Some(0),
                Some(segment) => segment_slot(segment, record.get(&segment.column)),
            };
            let Some(slot) = slot else {
                self.faults[i] += 1;
                continue;
            };
            let total = &mut self.totals[here + slot];
            *total = total.checked_add(amount).ok_or_else(|| too_large(&counter.name, None))?;
        }
        Ok(())
    }

    /// The vector for a round over `parties` parties.
    pub fn finish(self, parties: u32) -> Result<Vec<u32>> {
        if let Some((i, n)) = self.faults.iter().enumerate().find(|(_, n)| **n > 0) {
            let counter = &self.spec.counters[i];
            return Err(StatsError::Tally {
                counter: counter.name.clone(),
                message: format!(
                    "{n} record(s) hold a value it cannot count (sums take non-negative integers in `{}`; band \
                     segments take integers in `{}`)",
                    counter.column.as_deref().unwrap_or("-"),
                    counter.segment.as_ref().map_or("-", |s| s.column.as_str())
                ),
            });
        }
        let cap = u32::MAX / parties.max(1);
        let mut out = Vec::with_capacity(self.totals.len());
        let mut offset = 0;
        for counter in &self.spec.counters {
            for &t in &self.totals[offset..offset + counter.entries()] {
                match u32::try_from(t) {
                    Ok(t) if t <= cap => out.push(t),
                    _ => return Err(too_large(&counter.name, Some(parties))),
                }
            }
            offset += counter.entries();
        }
        Ok(out)
    }
}

fn too_large(counter: &str, parties: Option<u32>) -> StatsError {
    let message = match parties {
        Some(n) => format!(
            "this party's total exceeds 2^32 / {n} (the most each of {n} parties may add without the sum wrapping); \
             count in larger units"
        ),
        None => "this party's total exceeds 2^64; count in larger units".into(),
    };
    StatsError::Tally { counter: counter.into(), message }
}

/// The entry within a segmented counter for a record whose segment column
/// holds `value`; `None` when the value cannot be placed.
fn segment_slot(segment: &Segment, value: Option<&Value>) -> Option<usize> {
    let value = value.filter(|v| !v.is_null());
    if segment.values.is_empty() {
        let Some(value) = value else { return Some(segment.bands.len() + 1) };
        let x = value.as_i64()?;
        return Some(segment.bands.partition_point(|&edge| edge <= x));
    }
    let text = match value {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::Bool(b)) => Some(b.to_string()),
        _ => None,
    };
    Some(text.and_then(|t| segment.values.iter().position(|v| *v == t)).unwrap_or(segment.values.len()))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn spec() -> StatsSpec {
        StatsSpec::from_toml(
            r#"
            name = "portfolio"
            [[counter]]
            name = "records"
            kind = "count"
            [[counter]]
            name = "debt_k"
            kind = "sum"
            column = "debt"
            segment = { column = "late", bands = [1, 3] }
            [[counter]]
            name = "regions"
            kind = "count"
            column = "debt"
            segment = { column = "region", values = ["north", "south"] }
            "#,
        )
        .expect("valid")
    }

    #[test]
    fn counts_sums_and_segments() {
        let records = [
            json!({"debt": 10, "late": 0, "region": "north"}),
            json!({"debt": 5, "late": 1, "region": "south"}),
            json!({"debt": 7, "late": 3, "region": "east"}),
            json!({"debt": 1, "late": null}),
            json!({"late": 2, "region": "north"}),
        ];
        let v = tally(&spec(), &records, 3).expect("tally");
        // records | debt_k <1, [1,3), >=3, missing | regions north, south, other
        assert_eq!(v, [5, 10, 5, 7, 1, 1, 1, 2]);
    }

    #[test]
    fn refuses_what_it_cannot_count_without_naming_subjects() {
        for bad in [json!({"debt": -4, "late": 0}), json!({"debt": "lots", "late": 0}), json!({"debt": 4, "late": "x"})]
        {
            let e = tally(&spec(), [&json!({"debt": 1, "late": 0}), &bad], 3).expect_err("bad record");
            assert!(e.to_string().contains("counter `debt_k`: 1 record(s)"), "{e}");
        }
    }

    #[test]
    fn refuses_totals_that_could_wrap_the_sum() {
        let cap = u64::from(u32::MAX / 4);
        let fits = [json!({"debt": cap, "late": 0})];
        assert_eq!(tally(&spec(), &fits, 4).expect("fits")[1], cap as u32);
        let over = [json!({"debt": cap, "late": 0}), json!({"debt": 1, "late": 0})];
        let e = tally(&spec(), &over, 4).expect_err("over");
        assert!(e.to_string().contains("exceeds 2^32 / 4"), "{e}");
        let e = tally(&spec(), &[json!({"debt": u64::MAX, "late": 0}), json!({"debt": 1, "late": 0})], 2)
            .expect_err("u64 overflow");
        assert!(e.to_string().contains("debt_k"), "{e}");
    }

    proptest! {
        /// The total of every counter over a book equals the sum of its
        /// entries computed record by record, whatever the split into
        /// parties: tallies add.
        #[test]
        fn tallies_of_a_split_book_add_up(
            rows in prop::collection::vec((0u64..1000, prop::option::of(-2i64..6), 0usize..4), 0..60),
            split in 0usize..60,
        ) {
            let regions = ["north", "south", "east", "west"];
            let records: Vec<Value> = rows
                .iter()
                .map(|(debt, late, region)| json!({"debt": debt, "late": late, "region": regions[*region]}))
                .collect();
            let split = split.min(records.len());
            let whole = tally(&spec(), &records, 2).expect("whole");
            let a = tally(&spec(), &records[..split], 2).expect("a");
            let b = tally(&spec(), &records[split..], 2).expect("b");
            let added: Vec<u32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
            prop_assert_eq!(&added, &whole);
            prop_assert_eq!(whole[0] as usize, records.len());
            let debt: u64 = rows.iter().map(|r| r.0).sum();
            prop_assert_eq!(whole[1..5].iter().map(|&x| u64::from(x)).sum::<u64>(), debt);
        }
    }
}
