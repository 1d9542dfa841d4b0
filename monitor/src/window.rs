//! Calendar days, dated snapshots and features windowed over them.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// A calendar day (UTC), as days since 1970-01-01.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(i64);

impl Day {
    /// The day `number` days after 1970-01-01.
    pub fn from_number(number: i64) -> Day {
        Day(number)
    }

    /// Reads `YYYY-MM-DD`, refusing anything that is not a calendar date.
    pub fn parse(text: &str) -> Result<Day> {
        let b = text.as_bytes();
        let num = |range: std::ops::Range<usize>| -> Option<i64> {
            let digits = b.get(range)?;
            digits.iter().all(u8::is_ascii_digit).then(|| digits.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
        };
        let bad = || Error::Date(text.to_string());
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return Err(bad());
        }
        let (year, month, day) = (num(0..4).ok_or_else(bad)?, num(5..7).ok_or_else(bad)?, num(8..10).ok_or_else(bad)?);
        if year == 0 || !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return Err(bad());
        }
        Ok(Day(days_from_civil(year, month, day)))
    }

    /// Days since 1970-01-01.
    pub fn number(self) -> i64 {
        self.0
    }

    /// The day `days` before this one.
    pub fn minus(self, days: u32) -> Day {
        Day(self.0 - i64::from(days))
    }
}

impl fmt::Display for Day {
    /// `YYYY-MM-DD` (H. Hinnant's `civil_from_days`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let z = self.0 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        write!(f, "{year:04}-{month:02}-{day:02}")
    }
}

/// Days in `month` of `year` (proleptic Gregorian).
pub fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// One subject's record on one day.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// The day it describes.
    pub day: Day,
    /// The record: a JSON object, as imported.
    pub record: Value,
}

/// How a [`Window`] reduces the values it sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    /// The sum of present values (0 when none is present).
    Sum,
    /// The mean of present values, rounded half away from zero; none when
    /// no value is present.
    Mean,
    /// The smallest present value.
    Min,
    /// The largest present value.
    Max,
    /// How many snapshots in the window carry a value above 0.
    CountPositive,
    /// The newest present value.
    Last,
    /// Days from the window's end back to the newest snapshot with a value
    /// above 0 (0 when it is on the last day), looking at the whole history
    /// before the end; none when there never was one.
    DaysSincePositive,
}

/// A feature computed from a subject's history: `aggregate` of `field` over
/// the snapshots dated in `(end − days, end]`, where `end` is the
/// evaluation day minus `offset_days`. `days = 30, offset_days = 0` is "the
/// last 30 days"; `days = 90, offset_days = 30` is "the 90 days before
/// that".
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Window {
    /// The record field it reads.
    pub field: String,
    /// The reduction.
    pub aggregate: Aggregate,
    /// Length of the window in days (at least 1).
    pub days: u32,
    /// How far before the evaluation day the window ends.
    pub offset_days: u32,
}

impl Window {
    /// The window's value on `day` for a subject's `history` (oldest
    /// first): `None` when the window holds no value for it. Refuses a
    /// field that holds something other than an integer, naming the field
    /// and the day.
    pub fn evaluate(&self, history: &[Snapshot], day: Day) -> Result<Option<i64>> {
        let fail = |message: String| Error::Window { field: self.field.clone(), message };
        if self.days == 0 {
            return Err(fail("days must be at least 1".into()));
        }
        let end = day.minus(self.offset_days);
        let start = end.minus(self.days);
        let value = |s: &Snapshot| -> Result<Option<i64>> {
            match s.record.get(&self.field) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => {
                    v.as_i64().map(Some).ok_or_else(|| fail(format!("the value on {} is not an integer", s.day)))
                }
            }
        };
        if self.aggregate == Aggregate::DaysSincePositive {
            for s in history.iter().rev().filter(|s| s.day <= end) {
                if value(s)?.is_some_and(|v| v > 0) {
                    return Ok(Some(end.0 - s.day.0));
                }
            }
            return Ok(None);
        }
        let mut values = Vec::new();
        for s in history.iter().filter(|s| s.day > start && s.day <= end) {
            if let Some(v) = value(s)? {
                values.push(v);
            }
        }
        let overflow = || fail("the sum does not fit 64 bits".into());
        Ok(match self.aggregate {
            Aggregate::Sum => Some(values.iter().try_fold(0i64, |a, v| a.checked_add(*v)).ok_or_else(overflow)?),
            Aggregate::Mean if values.is_empty() => None,
            Aggregate::Mean => {
                let sum: i128 = values.iter().map(|v| i128::from(*v)).sum();
                let n = values.len() as i128;
                // Round half away from zero.
                let q = (2 * sum.abs() + n) / (2 * n);
                Some(i64::try_from(if sum < 0 { -q } else { q }).map_err(|_| overflow())?)
            }
            Aggregate::Min => values.iter().min().copied(),
            Aggregate::Max => values.iter().max().copied(),
            Aggregate::CountPositive => Some(values.iter().filter(|v| **v > 0).count() as i64),
            Aggregate::Last => values.last().copied(),
            Aggregate::DaysSincePositive => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn day(s: &str) -> Day {
        Day::parse(s).expect("date")
    }

    #[test]
    fn days_parse_print_and_refuse_non_dates() {
        assert_eq!(day("1970-01-01").number(), 0);
        assert_eq!(day("2026-03-01").minus(1).to_string(), "2026-02-28");
        assert_eq!(day("2024-03-01").minus(1).to_string(), "2024-02-29");
        assert_eq!(Day::from_number(-1).to_string(), "1969-12-31");
        for bad in ["2026-02-30", "2026-13-01", "26-01-01", "2026-01-01T00:00:00Z", "yesterday", "", "0000-01-01"] {
            assert_eq!(Day::parse(bad), Err(Error::Date(bad.to_string())), "{bad}");
        }
    }

    #[test]
    fn windows_sum_average_count_and_measure_gaps() {
        // Daily sales and collections over ten days; collections stop after
        // day 4; day 6's sales are missing.
        let h: Vec<Snapshot> = (1..=10)
            .map(|d| Snapshot {
                day: day(&format!("2026-11-{d:02}")),
                record: json!({
                    "sales": if d == 6 { Value::Null } else { json!(d * 10) },
                    "collections": if d <= 4 { 7 } else { 0 },
                }),
            })
            .collect();
        let on = day("2026-11-10");
        let w = |field: &str, aggregate, days, offset_days| {
            Window { field: field.into(), aggregate, days, offset_days }.evaluate(&h, on).expect("window")
        };
        // Days 8, 9, 10.
        assert_eq!(w("sales", Aggregate::Sum, 3, 0), Some(270));
        // Days 5..=7 with day 6 missing: the mean of 50 and 70.
        assert_eq!(w("sales", Aggregate::Mean, 3, 3), Some(60));
        assert_eq!(w("sales", Aggregate::Min, 10, 0), Some(10));
        assert_eq!(w("sales", Aggregate::Max, 10, 0), Some(100));
        assert_eq!(w("sales", Aggregate::Last, 5, 0), Some(100));
        assert_eq!(w("collections", Aggregate::CountPositive, 10, 0), Some(4));
        assert_eq!(w("collections", Aggregate::DaysSincePositive, 1, 0), Some(6));
        assert_eq!(w("collections", Aggregate::DaysSincePositive, 1, 8), Some(0));
        // Outside the history: nothing to average, a sum of nothing, no gap known.
        assert_eq!(w("sales", Aggregate::Mean, 5, 30), None);
        assert_eq!(w("sales", Aggregate::Sum, 5, 30), Some(0));
        assert_eq!(w("refunds", Aggregate::DaysSincePositive, 1, 0), None);
        // Negative means round half away from zero.
        let neg = vec![
            Snapshot { day: day("2026-11-01"), record: json!({"x": -1}) },
            Snapshot { day: day("2026-11-02"), record: json!({"x": -2}) },
        ];
        let mean = Window { field: "x".into(), aggregate: Aggregate::Mean, days: 5, offset_days: 0 };
        assert_eq!(mean.evaluate(&neg, day("2026-11-02")), Ok(Some(-2)));
    }

    #[test]
    fn text_values_overflow_and_empty_windows_are_refused() {
        let h = vec![
            Snapshot { day: day("2026-11-01"), record: json!({"sales": i64::MAX}) },
            Snapshot { day: day("2026-11-02"), record: json!({"sales": 1, "note": "lots"}) },
        ];
        let on = day("2026-11-02");
        let w = |field: &str, days| Window { field: field.into(), aggregate: Aggregate::Sum, days, offset_days: 0 };
        let err = w("note", 5).evaluate(&h, on).expect_err("text");
        assert!(err.to_string().contains("`note`") && err.to_string().contains("2026-11-02"), "{err}");
        assert!(w("sales", 5).evaluate(&h, on).expect_err("overflow").to_string().contains("64 bits"));
        assert!(w("sales", 0).evaluate(&h, on).expect_err("zero").to_string().contains("at least 1"));
    }
}
