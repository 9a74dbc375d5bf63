//! Shared test support: a harness that runs real `cairn` processes, and the
//! linearizability checker for the histories they record.

pub mod linearizability;
pub mod process;
