//! Shared test support: a harness that runs real `cairn` processes (`store serve` and
//! `serve`), network namespaces to partition them (`netns`) on a seeded fault schedule
//! (`fault_schedule`), a scripted executor that speaks the executor protocol, the
//! register load of the fault tests (`load`) and the linearizability checker for the
//! histories they record, the run helpers of the tests that
//! drive runs, and the one poll-until helper.

pub mod cli;
#[cfg(feature = "s3")]
pub mod fault_proxy;
pub mod fault_schedule;
pub mod heartbeat;
pub mod linearizability;
pub mod load;
pub mod netns;
pub mod poll;
pub mod process;
pub mod request;
pub mod runs;
#[cfg(feature = "s3")]
pub mod s3;
pub mod scripted;
pub mod service;
pub mod webdriver;
