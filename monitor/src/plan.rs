//! A spec compiled for evaluation: what each party computes in the clear
//! and sends, and the alert circuit (`jointscore_circuits::alerts`) the
//! coordinator runs under the lender's key.
//!
//! Per alert, each party that holds some of its conditions' windows
//! decides *its own* conditions in the clear and sends one verdict (it
//! learns nothing it did not know: the windows are its history). A
//! condition comparing two parties' windows becomes a comparison of codes
//! ([`crate::codes`]), one code from each party. The alert is raised when
//! every verdict and every comparison holds; the lender decrypts one block
//! per alert and nothing else. [`reference`] says what the result must be,
//! in the clear.

use std::collections::BTreeMap;

use jointscore_circuits::alerts::{AlertPlan, AlertSpec, Input, InputSpec, Term};
use jointscore_circuits::{CircuitStats, PartyPlan};

use crate::codes;
use crate::error::{Error, Result};
use crate::spec::{Condition, Op, Right, Severity, Spec, WindowSpec};
use crate::window::{Day, Snapshot};

/// Window values by window name; `None` where the window holds no value.
pub type Values = BTreeMap<String, Option<i64>>;

/// Which side of a cross-party condition a code carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Left,
    Right,
}

/// Where one of a party's inputs comes from.
#[derive(Clone, Debug)]
enum Source {
    /// The party's own conditions of one alert, all of which must hold.
    Verdict { alert: usize, conditions: Vec<usize> },
    /// One side of a cross-party condition, as a code.
    Code { alert: usize, condition: usize, side: Side, precision: u32 },
}

/// A compiled monitor spec.
#[derive(Clone, Debug)]
pub struct MonitorPlan {
    spec: Spec,
    id: String,
    alerts: AlertPlan,
    sources: Vec<Vec<Source>>,
}

impl MonitorPlan {
    /// Compiles `spec`.
    pub fn new(spec: &Spec) -> Result<MonitorPlan> {
        let party_of = |window: &str| -> Result<usize> {
            let w = spec.window(window).ok_or_else(|| Error::Plan(format!("no window `{window}`")))?;
            spec.parties
                .iter()
                .position(|p| *p == w.party)
                .ok_or_else(|| Error::Plan(format!("no party `{}`", w.party)))
        };
        let mut sources: Vec<Vec<Source>> = vec![Vec::new(); spec.parties.len()];
        let mut inputs: Vec<Vec<InputSpec>> = vec![Vec::new(); spec.parties.len()];
        let mut alerts = Vec::with_capacity(spec.alerts.len());
        for (a, alert) in spec.alerts.iter().enumerate() {
            let mut own: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
            let mut terms = Vec::new();
            for (k, c) in alert.conditions.iter().enumerate() {
                let left = party_of(&c.left)?;
                match &c.right {
                    Right::Window { name, precision: Some(precision), .. } if party_of(name)? != left => {
                        let right = party_of(name)?;
                        let digits = codes::digits(*precision);
                        let mut slot = |party: usize, side: Side| {
                            let what =
                                format!("{}: {} (code)", alert.name, if side == Side::Left { &c.left } else { name });
                            inputs[party].push(InputSpec { what, kind: Input::Code { digits } });
                            sources[party].push(Source::Code { alert: a, condition: k, side, precision: *precision });
                            (party, inputs[party].len() - 1)
                        };
                        let (l, r) = (slot(left, Side::Left), slot(right, Side::Right));
                        terms.push(match c.op {
                            Op::Gt => Term::Compare { greater: l, lesser: r, ties: false },
                            Op::Ge => Term::Compare { greater: l, lesser: r, ties: true },
                            Op::Lt => Term::Compare { greater: r, lesser: l, ties: false },
                            Op::Le => Term::Compare { greater: r, lesser: l, ties: true },
                        });
                    }
                    _ => own.entry(left).or_default().push(k),
                }
            }
            for (party, conditions) in own {
                inputs[party].push(InputSpec { what: format!("{}: own conditions", alert.name), kind: Input::Verdict });
                sources[party].push(Source::Verdict { alert: a, conditions });
                terms.push(Term::Verdict { party, input: inputs[party].len() - 1 });
            }
            alerts.push(AlertSpec { name: alert.name.clone(), terms });
        }
        let parties = spec.parties.iter().cloned().zip(inputs).collect();
        let alerts = AlertPlan::new(parties, alerts).map_err(|e| Error::Plan(e.to_string()))?;
        Ok(MonitorPlan { spec: spec.clone(), id: spec.id(), alerts, sources })
    }

    /// The spec compiled.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// The spec's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The alert circuit and each party's inputs: what the evaluator runs.
    pub fn alert_plan(&self) -> &AlertPlan {
        &self.alerts
    }

    /// Per-party inputs, in party order.
    pub fn parties(&self) -> &[PartyPlan] {
        self.alerts.parties()
    }

    /// Static costs of the circuit.
    pub fn stats(&self) -> CircuitStats {
        self.alerts.stats()
    }

    /// The index of the party named `name`.
    pub fn party_index(&self, name: &str) -> Option<usize> {
        self.spec.parties.iter().position(|p| p == name)
    }

    /// The windows `party` computes.
    pub fn windows_of(&self, party: usize) -> Vec<&WindowSpec> {
        let name = self.spec.parties.get(party);
        self.spec.windows.iter().filter(|w| Some(&w.party) == name).collect()
    }

    /// `party`'s windows on `day` over one subject's history (oldest
    /// first).
    pub fn window_values(&self, party: usize, history: &[Snapshot], day: Day) -> Result<Values> {
        self.windows_of(party).into_iter().map(|w| Ok((w.name.clone(), w.window.evaluate(history, day)?))).collect()
    }

    /// `party`'s input values from its window values: a verdict `0` when
    /// its conditions hold, `1` when not; a code per cross-party side.
    pub fn values(&self, party: usize, windows: &Values) -> Result<Vec<u64>> {
        let sources = self.sources.get(party).ok_or_else(|| Error::Plan(format!("no party #{party}")))?;
        let failing = self.alerts.failing(party).map_err(|e| Error::Plan(e.to_string()))?;
        Ok(sources
            .iter()
            .zip(failing)
            .map(|(source, fail)| match source {
                Source::Verdict { alert, conditions } => {
                    let alert = &self.spec.alerts[*alert];
                    u64::from(!conditions.iter().all(|&k| holds(&alert.conditions[k], windows)))
                }
                Source::Code { alert, condition, side, precision } => {
                    let c = &self.spec.alerts[*alert].conditions[*condition];
                    match side_value(c, *side, windows) {
                        Some(v) => codes::code(v, *precision),
                        None => fail,
                    }
                }
            })
            .collect())
    }

    /// What `party` encrypts for one subject on `day`: its windows over
    /// the subject's history, then its inputs, as base-4 digits.
    pub fn contribution(&self, party: usize, history: &[Snapshot], day: Day) -> Result<Vec<u8>> {
        let values = self.values(party, &self.window_values(party, history, day)?)?;
        self.alerts.digits(party, &values).map_err(|e| Error::Plan(e.to_string()))
    }

    /// What stands in for a party that does not hold the subject: every
    /// condition on its windows fails.
    pub fn absent(&self, party: usize) -> Result<Vec<u8>> {
        let values = self.alerts.failing(party).map_err(|e| Error::Plan(e.to_string()))?;
        self.alerts.digits(party, &values).map_err(|e| Error::Plan(e.to_string()))
    }

    /// Decoded alert bits as an outcome: the alerts raised and the highest
    /// severity among them.
    pub fn outcome(&self, raised: &[bool]) -> Outcome {
        outcome(&self.spec, raised)
    }
}

/// One side of a cross-party condition, scaled: `100 × left` or
/// `percent × right`.
fn side_value(c: &Condition, side: Side, windows: &Values) -> Option<i128> {
    match (side, &c.right) {
        (Side::Left, _) => windows.get(&c.left).copied().flatten().map(|v| 100 * i128::from(v)),
        (Side::Right, Right::Window { name, percent, .. }) => {
            windows.get(name).copied().flatten().map(|v| i128::from(*percent) * i128::from(v))
        }
        (Side::Right, Right::Value(_)) => None,
    }
}

/// Whether a condition holds on window values: false when a window it reads
/// has no value; cross-party comparisons on codes at their precision.
fn holds(c: &Condition, windows: &Values) -> bool {
    let Some(left) = windows.get(&c.left).copied().flatten() else { return false };
    match &c.right {
        Right::Value(v) => c.op.holds(i128::from(left), i128::from(*v)),
        Right::Window { precision, .. } => {
            let (Some(a), Some(b)) = (side_value(c, Side::Left, windows), side_value(c, Side::Right, windows)) else {
                return false;
            };
            match precision {
                None => c.op.holds(a, b),
                Some(p) => c.op.holds(i128::from(codes::code(a, *p)), i128::from(codes::code(b, *p))),
            }
        }
    }
}

/// The plaintext reference: whether each alert of `spec` is raised on the
/// window values of every party, in spec order. The encrypted evaluation
/// must equal it bit for bit.
pub fn reference(spec: &Spec, windows: &Values) -> Vec<bool> {
    spec.alerts.iter().map(|a| a.conditions.iter().all(|c| holds(c, windows))).collect()
}

/// What a round says about one loan.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Outcome {
    /// The alerts raised, in spec order.
    pub raised: Vec<String>,
    /// The highest severity among them; `None` when nothing is raised.
    pub severity: Option<Severity>,
}

/// Alert bits (in spec order) as an outcome.
pub fn outcome(spec: &Spec, raised: &[bool]) -> Outcome {
    let hit: Vec<&crate::spec::Alert> = spec.alerts.iter().zip(raised).filter(|(_, r)| **r).map(|(a, _)| a).collect();
    Outcome { raised: hit.iter().map(|a| a.name.clone()).collect(), severity: hit.iter().map(|a| a.severity).max() }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn example() -> MonitorPlan {
        MonitorPlan::new(&Spec::from_toml(crate::SELLER_WATCH).expect("example")).expect("plan")
    }

    fn arb_window() -> impl Strategy<Value = Option<i64>> {
        prop_oneof![
            1 => Just(None),
            6 => (0i64..5_000).prop_map(Some),
            2 => (-1_000_000_000i64..1_000_000_000).prop_map(Some),
            1 => any::<i64>().prop_map(Some),
        ]
    }

    fn arb_values(spec: &Spec) -> impl Strategy<Value = Values> + use<> {
        let names: Vec<String> = spec.windows.iter().map(|w| w.name.clone()).collect();
        proptest::collection::vec(arb_window(), names.len())
            .prop_map(move |v| names.iter().cloned().zip(v).collect::<Values>())
    }

    /// Every party's digits from the same window values.
    fn digits(plan: &MonitorPlan, values: &Values) -> Vec<Vec<u8>> {
        (0..plan.parties().len())
            .map(|p| plan.alert_plan().digits(p, &plan.values(p, values).unwrap()).unwrap())
            .collect()
    }

    #[test]
    fn the_example_costs_a_comparison_and_a_combination() {
        let plan = example();
        // collections_exceed_sales: one 7-digit comparison; flows_disagree:
        // three verdicts combined; the two single-party alerts: none.
        assert_eq!(plan.stats().lookups, codes::digits(codes::DEFAULT_PRECISION) + 1);
        let blocks: Vec<usize> = plan.parties().iter().map(PartyPlan::blocks).collect();
        // platform: gmv_collapse, flows_disagree verdicts and a code; bank:
        // collections_interrupted, flows_disagree verdicts and a code;
        // logistics: its flows_disagree verdict.
        assert_eq!(blocks, vec![2 + 7, 2 + 7, 1]);
    }

    proptest! {
        /// The circuit, in the clear, equals the reference for any window
        /// values; missing windows included.
        #[test]
        fn the_circuit_equals_the_reference(values in arb_values(&example().spec)) {
            let plan = example();
            let got = plan.alert_plan().eval_plain(&digits(&plan, &values)).unwrap();
            prop_assert_eq!(got, reference(plan.spec(), &values));
        }

        /// A party that is absent raises nothing that reads it.
        #[test]
        fn an_absent_party_raises_nothing_it_is_part_of(values in arb_values(&example().spec), absent in 0usize..3) {
            let plan = example();
            let mut d = digits(&plan, &values);
            d[absent] = plan.absent(absent).unwrap();
            let got = plan.alert_plan().eval_plain(&d).unwrap();
            let reads = plan.spec().alert_parties();
            let name = &plan.spec().parties[absent];
            for (alert, raised) in plan.spec().alerts.iter().zip(got) {
                if reads[&alert.name].contains(name) {
                    prop_assert!(!raised, "{} raised without {}", alert.name, name);
                }
            }
        }
    }

    #[test]
    fn cross_party_comparisons_are_exact_apart_and_conservative_near() {
        let plan = example();
        let mut v: Values = plan.spec().windows.iter().map(|w| (w.name.clone(), Some(100))).collect();
        let exceed = |v: &Values| reference(plan.spec(), v)[3];
        // collections_30d > gmv_30d × 150%.
        v.insert("gmv_30d".into(), Some(1_000_000));
        v.insert("collections_30d".into(), Some(1_600_000));
        assert!(exceed(&v));
        v.insert("collections_30d".into(), Some(1_400_000));
        assert!(!exceed(&v));
        // Within a part in 128: may compare as equal, never as greater when
        // it is not.
        v.insert("collections_30d".into(), Some(1_500_000));
        assert!(!exceed(&v));
        v.insert("collections_30d".into(), Some(1_500_001));
        assert!(!exceed(&v), "1,500,001 vs 1,500,000 is closer than the precision");
        v.insert("gmv_30d".into(), None);
        v.insert("collections_30d".into(), Some(i64::MAX));
        assert!(!exceed(&v), "no sales history: the condition does not hold");
    }

    #[test]
    fn outcomes_carry_the_highest_severity() {
        let plan = example();
        let o = plan.outcome(&[true, true, false, false]);
        assert_eq!(o.raised, vec!["gmv_collapse", "collections_interrupted"]);
        assert_eq!(o.severity, Some(Severity::High));
        assert_eq!(plan.outcome(&[false; 4]).severity, None);
    }
}
