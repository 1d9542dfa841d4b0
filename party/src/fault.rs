//! Fault injection for tests of dropouts, compiled in only with the
//! `fault-injection` feature, which only the test suites turn on (as a
//! dev-dependency feature): a production build has no fault to inject,
//! whatever its environment says.

/// The environment variable that injects a fault into a node built with
/// `fault-injection`: with `stall-masked-input` the node never answers
/// step 2 of an aggregation round, so a test can kill it between sharing
/// keys and masking; with `stall-fit-gram` it never answers the Gram step
/// of a fit, so a test can kill it mid-fit.
#[cfg(feature = "fault-injection")]
pub const FAULT_ENV: &str = "JOINTSCORE_FAULT";

/// Whether this node stalls at the masked-input step (never, without
/// `fault-injection`).
pub(crate) fn stall_masked_input() -> bool {
    #[cfg(feature = "fault-injection")]
    {
        std::env::var(FAULT_ENV).is_ok_and(|f| f == "stall-masked-input")
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        false
    }
}

/// Whether this node stalls at the Gram step of a fit (never, without
/// `fault-injection`).
pub(crate) fn stall_fit_gram() -> bool {
    #[cfg(feature = "fault-injection")]
    {
        std::env::var(FAULT_ENV).is_ok_and(|f| f == "stall-fit-gram")
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        false
    }
}
