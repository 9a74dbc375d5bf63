//! The executor: runs tasks handed out by the run service. A plain client of the API
//! (`cairn_client::RunClient`), in-process in `cairn serve` or standalone as
//! `cairn executor`; it only dials out.
//!
//! - [`driver`]: where steps run (`local` host processes, `docker` containers).

pub mod driver;
