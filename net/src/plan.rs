//! Plan kinds between the wire enum and the planner's.

use jointscore_circuits::PlanKind;

use jointscore_proto::v1;

/// The planner's kind for a wire value; `None` for unspecified or unknown
/// values, which receivers refuse.
pub fn plan_from_wire(value: i32) -> Option<PlanKind> {
    match v1::PlanKind::try_from(value).ok()? {
        v1::PlanKind::Pushdown => Some(PlanKind::Pushdown),
        v1::PlanKind::CoordinatorSide => Some(PlanKind::CoordinatorSide),
        v1::PlanKind::Monitor => Some(PlanKind::Monitor),
        v1::PlanKind::Unspecified => None,
    }
}

/// The wire value for a planner kind.
pub fn plan_to_wire(kind: PlanKind) -> i32 {
    match kind {
        PlanKind::Pushdown => v1::PlanKind::Pushdown as i32,
        PlanKind::CoordinatorSide => v1::PlanKind::CoordinatorSide as i32,
        PlanKind::Monitor => v1::PlanKind::Monitor as i32,
    }
}
