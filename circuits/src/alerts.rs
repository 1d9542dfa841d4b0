//! Alert circuits: many per-loan alerts, each raised when all of its terms
//! hold, compiled into a circuit of the same kind a model's plan is, and run
//! by the same evaluator.
//!
//! A term is one of two things:
//!
//! * a **verdict** a party reached in the clear on its own data (a condition
//!   on its own windows): the party sends one block, `0` when the condition
//!   holds and anything else when it does not. An alert's verdicts and
//!   failed comparisons are *summed*, and the alert is raised when the sum
//!   is zero; blocks are never negative, so no party can cancel another's
//!   failed condition, and a party can move an alert no further than lying
//!   about its own condition could;
//! * a **comparison** of two parties' values: each sends an order-preserving
//!   code of its side as base-4 digits, and the circuit compares them with
//!   one bootstrap per digit. A side with no value sends the code at which
//!   the comparison fails (`0` on the greater side, the largest code on the
//!   lesser); codes of real values lie strictly between those ends, so a
//!   missing value never raises an alert. (A party that sends an end code
//!   for a value it has only forces its own side, as lying about its
//!   value could.)
//!
//! The lender decrypts one block per alert; nothing else leaves the
//! circuit. An alert made of one verdict costs no bootstrap, a single
//! comparison costs its digits, and any other alert one more bootstrap to
//! combine its terms.

use serde::Serialize;

use crate::circuit::gadgets::{nonzero_sum, outranks};
use crate::circuit::{Builder, Circuit, CircuitStats, DIGIT_BASE, Val, to_digits};
use crate::error::{Error, Result};
use crate::plan::{PartyPlan, Slot};

/// Most base-4 digits a comparison code may have (a code below 4³²).
pub const MAX_CODE_DIGITS: usize = 32;

/// What one input of a party is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Input {
    /// A condition the party decided in the clear: `0` when it holds.
    Verdict,
    /// An order-preserving code of a value, as `digits` base-4 digits.
    Code {
        /// Its width.
        digits: usize,
    },
}

/// One input a party contributes, named for reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InputSpec {
    /// What it is, for people.
    pub what: String,
    /// Its kind.
    pub kind: Input,
}

/// One term of an alert; inputs are named by (party index, input index).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Term {
    /// A party's verdict.
    Verdict {
        /// The party's index.
        party: usize,
        /// The input's index among the party's inputs.
        input: usize,
    },
    /// `greater > lesser`, or `greater >= lesser` when `ties`, of two codes.
    Compare {
        /// The code that must be greater.
        greater: (usize, usize),
        /// The code that must be smaller.
        lesser: (usize, usize),
        /// Whether equal codes satisfy the term.
        ties: bool,
    },
}

/// An alert: raised when all of its terms hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AlertSpec {
    /// Its name (the output's name).
    pub name: String,
    /// At least one term.
    pub terms: Vec<Term>,
}

/// A compiled set of alerts: what each party sends and the joint circuit.
#[derive(Clone, Debug)]
pub struct AlertPlan {
    parties: Vec<PartyPlan>,
    inputs: Vec<Vec<InputSpec>>,
    /// Per party and input, the value sent when the party has nothing.
    failing: Vec<Vec<u64>>,
    alerts: Vec<String>,
    /// Per alert, the decrypted value that means "raised".
    raised: Vec<u64>,
    circuit: Circuit,
}

/// Largest code of `digits` base-4 digits.
pub fn code_max(digits: usize) -> u64 {
    if digits >= MAX_CODE_DIGITS { u64::MAX } else { DIGIT_BASE.pow(digits as u32) - 1 }
}

impl AlertPlan {
    /// Compiles alerts over the parties' inputs (parties in order, each
    /// with its inputs in wire order).
    ///
    /// Refused: an alert with no term, a term naming an input that does not
    /// exist or is of the other kind, two codes of different widths
    /// compared, a code read by more than one term or on both sides, and an
    /// input no alert reads (a party would send it for nothing).
    pub fn new(parties: Vec<(String, Vec<InputSpec>)>, alerts: Vec<AlertSpec>) -> Result<AlertPlan> {
        let inputs: Vec<Vec<InputSpec>> = parties.iter().map(|(_, i)| i.clone()).collect();
        let mut failing: Vec<Vec<Option<u64>>> = inputs.iter().map(|i| vec![None; i.len()]).collect();
        let input = |(party, input): (usize, usize)| -> Result<&InputSpec> {
            inputs.get(party).and_then(|i| i.get(input)).ok_or_else(|| {
                Error::Plan(format!("a term reads input #{input} of party #{party}, which does not exist"))
            })
        };
        for alert in &alerts {
            if alert.terms.is_empty() {
                return Err(Error::Plan(format!("alert `{}` has no term", alert.name)));
            }
            for term in &alert.terms {
                match *term {
                    Term::Verdict { party, input: i } => {
                        if input((party, i))?.kind != Input::Verdict {
                            return Err(Error::Plan(format!("alert `{}` reads a code as a verdict", alert.name)));
                        }
                        failing[party][i] = Some(1);
                    }
                    Term::Compare { greater, lesser, .. } => {
                        let (g, l) = (input(greater)?, input(lesser)?);
                        let (Input::Code { digits }, Input::Code { digits: other }) = (&g.kind, &l.kind) else {
                            return Err(Error::Plan(format!("alert `{}` compares a verdict", alert.name)));
                        };
                        if digits != other || *digits == 0 || *digits > MAX_CODE_DIGITS {
                            return Err(Error::Plan(format!(
                                "alert `{}` compares codes of {digits} and {other} digits (equal, 1 to \
                                 {MAX_CODE_DIGITS}, expected)",
                                alert.name
                            )));
                        }
                        for ((party, i), value) in [(greater, 0), (lesser, code_max(*digits))] {
                            if failing[party][i].replace(value).is_some() {
                                return Err(Error::Plan(format!(
                                    "code `{}` is read by more than one comparison",
                                    inputs[party][i].what
                                )));
                            }
                        }
                    }
                }
            }
        }
        let failing = failing
            .into_iter()
            .enumerate()
            .map(|(p, f)| {
                f.into_iter()
                    .enumerate()
                    .map(|(i, v)| {
                        v.ok_or_else(|| {
                            Error::Plan(format!(
                                "input `{}` of `{}` is read by no alert",
                                inputs[p][i].what, parties[p].0
                            ))
                        })
                    })
                    .collect::<Result<Vec<u64>>>()
            })
            .collect::<Result<Vec<_>>>()?;

        let mut b = Builder::new();
        let blocks: Vec<Vec<Vec<Val>>> = inputs
            .iter()
            .map(|party| {
                party
                    .iter()
                    .map(|i| match i.kind {
                        Input::Verdict => vec![b.input(3)],
                        Input::Code { digits } => b.input_digits(digits),
                    })
                    .collect()
            })
            .collect();
        let mut raised = Vec::with_capacity(alerts.len());
        b.phase("comparisons and combinations");
        for alert in &alerts {
            let compare = |b: &mut Builder, g: (usize, usize), l: (usize, usize), ties: bool| {
                let (a, c) = (&blocks[g.0][g.1], &blocks[l.0][l.1]);
                let max = code_max(a.len());
                outranks(b, (a, max), (c, max), ties)
            };
            let (out, value) = match alert.terms[..] {
                [Term::Verdict { party, input }] => (blocks[party][input][0], 0),
                [Term::Compare { greater, lesser, ties }] => (compare(&mut b, greater, lesser, ties)?, 1),
                _ => {
                    let mut failed = Vec::with_capacity(alert.terms.len());
                    for term in &alert.terms {
                        failed.push(match *term {
                            Term::Verdict { party, input } => blocks[party][input][0],
                            Term::Compare { greater, lesser, ties } => {
                                let holds = compare(&mut b, greater, lesser, ties)?;
                                b.linear(&[(holds, -1)], 1)?
                            }
                        });
                    }
                    let sum = nonzero_sum(&mut b, &failed)?;
                    (b.lut(sum, |x| u8::from(x == 0))?, 1)
                }
            };
            b.output(&alert.name, vec![vec![out]]);
            raised.push(value);
        }
        let circuit = b.finish();
        let party_plans = parties
            .iter()
            .zip(&inputs)
            .map(|((name, _), inputs)| PartyPlan {
                name: name.clone(),
                slots: inputs
                    .iter()
                    .map(|i| match i.kind {
                        Input::Verdict => Slot { what: i.what.clone(), digits: 1, max: 1 },
                        Input::Code { digits } => Slot { what: i.what.clone(), digits, max: code_max(digits) },
                    })
                    .collect(),
            })
            .collect();
        Ok(AlertPlan {
            parties: party_plans,
            inputs,
            failing,
            alerts: alerts.into_iter().map(|a| a.name).collect(),
            raised,
            circuit,
        })
    }

    /// Per-party inputs, in party order.
    pub fn parties(&self) -> &[PartyPlan] {
        &self.parties
    }

    /// The alerts' names, in output order.
    pub fn alerts(&self) -> &[String] {
        &self.alerts
    }

    /// The joint circuit.
    pub fn circuit(&self) -> &Circuit {
        &self.circuit
    }

    /// Static costs of the joint circuit.
    pub fn stats(&self) -> CircuitStats {
        self.circuit.stats()
    }

    /// The values a party sends when it has nothing for the loan (absent,
    /// or no history): every verdict fails and every code sits where its
    /// comparison fails.
    pub fn failing(&self, party: usize) -> Result<Vec<u64>> {
        self.failing.get(party).cloned().ok_or_else(|| Error::UnknownParty(format!("#{party}")))
    }

    /// A party's input values (one per input: a verdict `0` when it holds,
    /// `1` when not; a code within its width) as the base-4 digits it
    /// encrypts, in wire order.
    pub fn digits(&self, party: usize, values: &[u64]) -> Result<Vec<u8>> {
        let inputs = self.inputs.get(party).ok_or_else(|| Error::UnknownParty(format!("#{party}")))?;
        let name = &self.parties[party].name;
        if values.len() != inputs.len() {
            return Err(Error::Contribution {
                party: name.clone(),
                message: format!("{} values for {} inputs", values.len(), inputs.len()),
            });
        }
        let mut out = Vec::with_capacity(self.parties[party].blocks());
        for (input, &v) in inputs.iter().zip(values) {
            let (digits, max) = match input.kind {
                Input::Verdict => (1, 1),
                Input::Code { digits } => (digits, code_max(digits)),
            };
            if v > max {
                return Err(Error::Contribution {
                    party: name.clone(),
                    message: format!("`{}` is {v}, above its largest value {max}", input.what),
                });
            }
            out.extend(to_digits(v, digits));
        }
        Ok(out)
    }

    /// Runs the circuit in the clear on every party's digits (in party
    /// order): whether each alert is raised. What the encrypted run must
    /// equal.
    pub fn eval_plain(&self, digits: &[Vec<u8>]) -> Result<Vec<bool>> {
        let flat: Vec<u8> = digits.concat();
        let outputs = self.circuit.eval_plain(&flat)?;
        let outputs: Vec<(String, Vec<Vec<u64>>)> = outputs
            .into_iter()
            .map(|(n, blocks)| (n, blocks.into_iter().map(|p| p.into_iter().map(u64::from).collect()).collect()))
            .collect();
        self.decode(&outputs)
    }

    /// Decrypted outputs to alert bits, checking each is a value the
    /// circuit can produce.
    pub(crate) fn decode(&self, outputs: &[(String, Vec<Vec<u64>>)]) -> Result<Vec<bool>> {
        if outputs.len() != self.alerts.len() {
            return Err(Error::Result(format!("{} outputs for {} alerts", outputs.len(), self.alerts.len())));
        }
        outputs
            .iter()
            .zip(&self.alerts)
            .zip(&self.raised)
            .map(|(((name, blocks), alert), &raised)| {
                let value: u64 = match &blocks[..] {
                    [parts] if name == alert => parts.iter().sum(),
                    _ => return Err(Error::Result(format!("output `{name}` is not alert `{alert}`"))),
                };
                // A verdict passes through as its party sent it (a digit);
                // a computed bit is 0 or 1.
                let top = if raised == 0 { DIGIT_BASE - 1 } else { 1 };
                if value > top {
                    return Err(Error::Fhe(format!(
                        "alert `{alert}` decrypted to {value}; was it decrypted with the key it was made for?"
                    )));
                }
                Ok(value == raised)
            })
            .collect()
    }
}

impl crate::program::Program for AlertPlan {
    fn parties(&self) -> &[PartyPlan] {
        &self.parties
    }

    fn circuit(&self) -> &Circuit {
        &self.circuit
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;

    fn verdict(what: &str) -> InputSpec {
        InputSpec { what: what.into(), kind: Input::Verdict }
    }

    fn code(what: &str, digits: usize) -> InputSpec {
        InputSpec { what: what.into(), kind: Input::Code { digits } }
    }

    /// Three parties: one alert of one verdict, one of three verdicts, one
    /// comparison, one comparison with a verdict.
    pub(crate) fn sample() -> AlertPlan {
        AlertPlan::new(
            vec![
                ("platform".into(), vec![verdict("collapse"), verdict("up"), code("sales", 4)]),
                ("bank".into(), vec![verdict("down"), code("collections", 4), code("collections2", 3)]),
                ("logistics".into(), vec![verdict("down"), code("shipments", 3)]),
            ],
            vec![
                AlertSpec { name: "collapse".into(), terms: vec![Term::Verdict { party: 0, input: 0 }] },
                AlertSpec {
                    name: "disagree".into(),
                    terms: vec![
                        Term::Verdict { party: 0, input: 1 },
                        Term::Verdict { party: 1, input: 0 },
                        Term::Verdict { party: 2, input: 0 },
                    ],
                },
                AlertSpec {
                    name: "exceed".into(),
                    terms: vec![Term::Compare { greater: (1, 1), lesser: (0, 2), ties: false }],
                },
                AlertSpec {
                    name: "mixed".into(),
                    terms: vec![
                        Term::Compare { greater: (1, 2), lesser: (2, 1), ties: true },
                        Term::Verdict { party: 2, input: 0 },
                    ],
                },
            ],
        )
        .expect("sample alert plan")
    }

    /// What the alerts mean, written directly.
    fn expected(values: &[Vec<u64>]) -> Vec<bool> {
        let (p, b, l) = (&values[0], &values[1], &values[2]);
        vec![p[0] == 0, p[1] == 0 && b[0] == 0 && l[0] == 0, b[1] > p[2], b[2] >= l[1] && l[0] == 0]
    }

    pub(crate) fn arb_values() -> impl Strategy<Value = Vec<Vec<u64>>> {
        ((0u64..=1, 0u64..=1, 0u64..=255), (0u64..=1, 0u64..=255, 0u64..=63), (0u64..=1, 0u64..=63))
            .prop_map(|((a, b, c), (d, e, f), (g, h))| vec![vec![a, b, c], vec![d, e, f], vec![g, h]])
    }

    pub(crate) fn digits_of(plan: &AlertPlan, values: &[Vec<u64>]) -> Vec<Vec<u8>> {
        values.iter().enumerate().map(|(p, v)| plan.digits(p, v).expect("digits")).collect()
    }

    proptest! {
        #[test]
        fn the_circuit_computes_what_the_alerts_mean(values in arb_values()) {
            let plan = sample();
            prop_assert_eq!(plan.eval_plain(&digits_of(&plan, &values)).unwrap(), expected(&values));
        }

        /// A party may send any digits: its verdict blocks 0 to 3, its codes
        /// anything of their width. It never raises an alert another party's
        /// failed condition blocks.
        #[test]
        fn no_party_overrides_another(raw in proptest::collection::vec(0u8..=3, 10)) {
            let plan = sample();
            let bank = plan.digits(1, &[1, 0, 0]).unwrap();
            let digits = vec![raw[..6].to_vec(), bank, raw[6..].to_vec()];
            let got = plan.eval_plain(&digits).unwrap();
            prop_assert!(!got[1], "the bank's failed verdict holds `disagree` down");
            // Collections of 0 exceed no sales.
            prop_assert!(!got[2]);
        }
    }

    /// Under TFHE, in one batch: the lender decrypts exactly the plain run.
    #[test]
    fn encrypted_alerts_equal_the_plain_run() {
        use crate::fhe::{BatchItem, Contribution};
        use crate::program::Program;
        let k = crate::fhe::tests::keys();
        let plan = sample();
        let cases = [
            vec![vec![0, 0, 17], vec![0, 200, 9], vec![0, 9]],
            vec![vec![1, 1, 200], vec![1, 17, 3], vec![1, 40]],
            vec![vec![0, 0, 255], vec![0, 255, 63], vec![1, 63]],
        ];
        let contributions: Vec<Vec<Contribution>> = cases
            .iter()
            .map(|values| {
                digits_of(&plan, values)
                    .iter()
                    .enumerate()
                    .map(|(p, d)| Contribution::encrypt(&plan, p, d, &k.public).expect("encrypt"))
                    .collect()
            })
            .collect();
        let items: Vec<BatchItem<'_>> = contributions.iter().map(|c| (&plan as &dyn Program, c.as_slice())).collect();
        for (values, outcome) in cases.iter().zip(k.evaluation.evaluate_batch(&items)) {
            let (result, report) = outcome.expect("evaluate");
            assert_eq!(report.pbs, plan.stats().lookups as u64);
            let got = k.lender.decrypt_alerts(&plan, &result).expect("decrypt");
            assert_eq!(got, expected(values), "{values:?}");
            assert_eq!(got, plan.eval_plain(&digits_of(&plan, values)).unwrap());
        }
    }

    #[test]
    fn a_party_with_nothing_raises_nothing() {
        let plan = sample();
        // Real values' codes lie strictly between the two ends (as
        // `jointscore_monitor::codes` makes them).
        let holds = vec![vec![0, 0, 5], vec![0, 200, 40], vec![0, 7]];
        assert_eq!(plan.eval_plain(&digits_of(&plan, &holds)).unwrap(), vec![true, true, true, true]);
        for absent in 0..3 {
            let mut values = holds.clone();
            values[absent] = plan.failing(absent).unwrap();
            let got = plan.eval_plain(&digits_of(&plan, &values)).unwrap();
            // Only the alerts that do not read the absent party stay raised.
            let reads = [[true, true, true, false], [false, true, true, true], [false, true, false, true]];
            let want: Vec<bool> = reads[absent].iter().map(|r| !r).collect();
            assert_eq!(got, want, "party {absent} absent");
        }
    }

    #[test]
    fn costs_are_one_bootstrap_per_digit_and_one_to_combine() {
        let stats = sample().stats();
        // exceed: 4 digits; mixed: 3 digits + 1; disagree: 1; collapse: 0.
        assert_eq!(stats.lookups, 4 + 3 + 1 + 1);
    }

    #[test]
    fn malformed_plans_are_refused() {
        let one = |inputs: Vec<InputSpec>, terms: Vec<Term>| {
            AlertPlan::new(vec![("a".into(), inputs)], vec![AlertSpec { name: "x".into(), terms }])
        };
        let err = |r: Result<AlertPlan>| r.expect_err("refused").to_string();
        assert!(err(one(vec![verdict("v")], vec![])).contains("no term"));
        assert!(err(one(vec![verdict("v")], vec![Term::Verdict { party: 0, input: 1 }])).contains("does not exist"));
        assert!(
            err(one(vec![verdict("v"), verdict("w")], vec![Term::Verdict { party: 0, input: 0 }]))
                .contains("read by no alert")
        );
        let compare = Term::Compare { greater: (0, 0), lesser: (0, 1), ties: false };
        assert!(err(one(vec![code("a", 2), code("b", 3)], vec![compare.clone()])).contains("2 and 3 digits"));
        assert!(err(one(vec![verdict("a"), code("b", 3)], vec![compare.clone()])).contains("compares a verdict"));
        assert!(err(one(vec![code("a", 2), code("b", 2)], vec![compare.clone(), compare])).contains("more than one"));
        let plan = sample();
        assert!(plan.digits(0, &[0, 0]).expect_err("short").to_string().contains("2 values for 3 inputs"));
        assert!(plan.digits(0, &[0, 2, 0]).expect_err("verdict").to_string().contains("above its largest value 1"));
        assert!(plan.digits(2, &[0, 64]).expect_err("code").to_string().contains("above its largest value 63"));
    }
}
