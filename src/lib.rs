//! `cairn`: the CI/CD run service binary and its library.
//!
//! Today it holds the store's front ends: [`api`] (the etcd v3 JSON API over the
//! replicated store, the peer endpoint, health) and [`app`] (starting a store node and
//! serving it until shutdown). The run service, scheduler, executor and datamanager
//! build on these (see ARCHITECTURE.md).

pub mod api;
pub mod app;
pub mod cli;
pub mod datamanager;
