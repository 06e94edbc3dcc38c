//! The enclave's clock: the one "now" by which it dates records and decides key lifecycle events
//! (automatic rotation, deletion, imported material expiry, import tokens, policy time).
//!
//! In simulation only, it may run a fixed offset ahead of the machine's clock, so tests can see a
//! rotation schedule fall due without waiting 90 days. A Nitro enclave never gets one: [`Core`]
//! refuses an offset unless its attestor is the simulation's mock NSM, and on Nitro the enclave's
//! command line is part of the measured image, not something the host passes.
//!
//! What is compared with a clock outside the enclave stays on the machine's clock: the SigV4
//! skew window and replay buckets (clients sign with their own clocks) and certificate validity.
//!
//! [`Core`]: crate::Core

use chrono::{DateTime, TimeDelta, Utc};

/// Largest simulation offset: 100 years, far past any schedule (2560 days) or token validity.
pub const MAX_SIM_OFFSET_DAYS: u32 = 36_500;

/// The enclave's clock: the machine's clock, plus an offset in simulation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Clock {
    offset: TimeDelta,
}

impl Clock {
    /// The machine's clock, unshifted: the only clock of a real enclave.
    #[must_use]
    pub const fn system() -> Self {
        Self {
            offset: TimeDelta::zero(),
        }
    }

    /// SIMULATION ONLY: a clock `days` ahead of the machine's (at most
    /// [`MAX_SIM_OFFSET_DAYS`]). [`Core::with_clock`](crate::Core::with_clock) takes it only
    /// with the mock NSM.
    #[must_use]
    pub fn simulation_ahead_by_days(days: u32) -> Option<Self> {
        if days > MAX_SIM_OFFSET_DAYS {
            return None;
        }
        Some(Self {
            offset: TimeDelta::try_days(i64::from(days))?,
        })
    }

    /// Whether this clock differs from the machine's.
    #[must_use]
    pub fn is_shifted(&self) -> bool {
        !self.offset.is_zero()
    }

    /// How far ahead of the machine's clock this one runs.
    #[must_use]
    pub const fn offset(&self) -> TimeDelta {
        self.offset
    }

    /// The enclave's time now.
    #[must_use]
    pub fn now(&self) -> DateTime<Utc> {
        self.at(Utc::now())
    }

    /// The enclave's time when the machine's clock reads `machine`.
    #[must_use]
    pub fn at(&self, machine: DateTime<Utc>) -> DateTime<Utc> {
        machine.checked_add_signed(self.offset).unwrap_or(machine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_is_the_machines() {
        let c = Clock::system();
        assert!(!c.is_shifted());
        let t = Utc::now();
        assert_eq!(c.at(t), t);
        assert_eq!(Clock::default(), c);
    }

    #[test]
    fn a_simulation_clock_runs_ahead_by_whole_days() {
        let c = Clock::simulation_ahead_by_days(91).unwrap();
        assert!(c.is_shifted());
        let t = Utc::now();
        assert_eq!(c.at(t) - t, TimeDelta::days(91));
        let lead = c.now() - Utc::now();
        assert!(
            (lead - TimeDelta::days(91)).abs() < TimeDelta::seconds(5),
            "{lead}"
        );
        assert!(!Clock::simulation_ahead_by_days(0).unwrap().is_shifted());
    }

    #[test]
    fn an_offset_beyond_a_century_is_refused() {
        assert!(Clock::simulation_ahead_by_days(MAX_SIM_OFFSET_DAYS).is_some());
        assert!(Clock::simulation_ahead_by_days(MAX_SIM_OFFSET_DAYS + 1).is_none());
    }
}
