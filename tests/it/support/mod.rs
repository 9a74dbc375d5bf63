//! Shared test support: a harness that runs real `cairn` processes (`store serve` and
//! `serve`), a scripted executor that speaks the executor protocol, and the
//! linearizability checker for the histories they record.

pub mod cli;
pub mod linearizability;
pub mod process;
pub mod scripted;
pub mod service;
