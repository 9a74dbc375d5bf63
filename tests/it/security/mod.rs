//! Issue 11's attacks, one test per attack of the security review behind it (SECURITY.md
//! describes the defences): each was a working attack on the code before the fix; the
//! submodules are grouped by trust boundary.

mod auth;
mod config;
mod containers;
mod ids;
mod isolation;
mod limits;
mod store;
pub(crate) mod tls;
