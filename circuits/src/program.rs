//! What the evaluator needs of a compiled program: each party's input
//! blocks and the joint circuit. A model's [`Plan`](crate::Plan) is one; a
//! monitor spec's [`AlertPlan`](crate::alerts::AlertPlan) is another. Both
//! run through the same contributions, evaluator and sealed results.

use std::sync::Arc;

use crate::circuit::Circuit;
use crate::plan::{PartyPlan, Plan};

/// A compiled program the evaluator runs: what each party sends, in party
/// order, and the circuit that reads those blocks in that order.
pub trait Program: Send + Sync {
    /// Per-party inputs, in party order.
    fn parties(&self) -> &[PartyPlan];
    /// The joint circuit; it reads every party's blocks, in party order.
    fn circuit(&self) -> &Circuit;
}

impl Program for Plan {
    fn parties(&self) -> &[PartyPlan] {
        Plan::parties(self)
    }

    fn circuit(&self) -> &Circuit {
        Plan::circuit(self)
    }
}

impl<T: Program + ?Sized> Program for Arc<T> {
    fn parties(&self) -> &[PartyPlan] {
        (**self).parties()
    }

    fn circuit(&self) -> &Circuit {
        (**self).circuit()
    }
}
