//! Export and import of the datamanager's contents: run configs, runs (live, archived in
//! the store, and archived in segments in object storage), counters, the run sequence and
//! run events — not logs, archives or caches, and not the state derived from them
//! (indexes, markers, executor tasks, change groups, segment records).
//!
//! The stream is newline-delimited JSON (version 2):
//!
//! ```text
//! {"format":"cairn-export","version":2,"revision":R,"redacted":false}   header
//! {"key":"rs/counter/…","value":"…"}        store entries, strictly increasing key order,
//! …                                         all read at store revision R
//! {"archived":{"run":…,"config":…,"events":[…]}}   runs archived in segments (recorded at
//! …                                         R), strictly increasing run id order
//! {"trailer":{"entries":N,"sha256":…,"hmac":…}}    N counts both kinds of lines
//! ```
//!
//! The checksum covers every line before the trailer and catches truncation and
//! corruption; the HMAC-SHA256 over the same lines is keyed by a key derived from the
//! admin secret ([`export_key`]), so an export altered by anyone without that secret is
//! refused. An import validates the whole stream (format, version, order, ids, count, line
//! length, checksum, HMAC) before it changes anything, in time linear in its size
//! ([`Validator`]). Version 1 (entries only) is still read.
//!
//! Secrets (the run configs' environment values and registry credentials, archived runs'
//! configs included) are replaced by [`REDACTED`] unless the export is asked to include
//! them; the header says which (`"redacted":true|false`). An import refuses a redacted
//! export (it would store `***` as every secret), and, for an export whose header does not
//! say, one whose run configs hold a secret that is `***`.
//!
//! Both ends are streamed: the export reads the store page by page and one segment at a
//! time (several only where their run-id ranges overlap); the import reads its spool file
//! line by line and writes finished, archived runs into new segments, holding at most one
//! segment's worth of runs ([`import`]).

mod export;
mod hmac;
pub mod import;
mod spool;
mod validator;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::segments::{ArchivedRun, SegmentError};
use super::{DmError, keys};
use hmac::HmacSha256;
pub use import::ImportSummary;
pub use validator::Validator;

pub const FORMAT: &str = "cairn-export";
/// The version this build writes.
pub const VERSION: u32 = 2;
/// The oldest version this build still reads (entries only, no archived runs).
pub const OLDEST_VERSION: u32 = 1;

/// The longest line an import accepts (a run or run config of the largest allowed run is
/// well under it); a longer one is refused as soon as it is seen.
pub const MAX_LINE_BYTES: usize = 32 << 20;

/// What replaces a secret in an export made without secrets.
pub const REDACTED: &str = "***";

/// Why an export or an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error(transparent)]
    Dm(#[from] DmError),
    /// A segment could not be read (export) or written (import).
    #[error("segment {segment}: {source}")]
    Segment {
        segment: String,
        #[source]
        source: Box<SegmentError>,
    },
    /// A worker thread of the export (one converting runs into lines) panicked.
    #[error("an export worker failed: {0}")]
    Worker(#[from] tokio::task::JoinError),
}

impl ExchangeError {
    fn segment(segment: impl Into<String>, source: SegmentError) -> ExchangeError {
        ExchangeError::Segment {
            segment: segment.into(),
            source: Box::new(source),
        }
    }
}

/// The HMAC key of exports, derived from the admin secret (never the secret itself).
pub fn export_key(admin_secret: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(b"cairn export hmac v1\0");
    h.update(admin_secret);
    h.finalize().to_vec()
}

/// Calls `f` on every secret of a run config: the per-run, task, container and step
/// environment values and the non-empty registry credentials. The static environment
/// (CI, repository data) is no secret.
fn each_secret(config: &mut cairn_client::runconfig::RunConfig, mut f: impl FnMut(&mut String)) {
    config.environment.values_mut().for_each(&mut f);
    for task in config.tasks.values_mut() {
        task.environment.values_mut().for_each(&mut f);
        for c in &mut task.runtime.containers {
            c.environment.values_mut().for_each(&mut f);
        }
        for step in &mut task.steps {
            if let cairn_client::runconfig::Step::Run(run) = step {
                run.environment.values_mut().for_each(&mut f);
            }
        }
        for auth in task.docker_registries_auth.values_mut() {
            for secret in [&mut auth.password, &mut auth.auth] {
                if !secret.is_empty() {
                    f(secret);
                }
            }
        }
    }
}

/// Replaces the secrets of a run config by [`REDACTED`]: the per-run, task, container and
/// step environment values and the registry credentials. The static environment (CI,
/// repository data) stays.
pub fn redact_secrets(config: &mut cairn_client::runconfig::RunConfig) {
    each_secret(config, |v| *v = REDACTED.to_string());
}

/// Whether a secret of the run config is [`REDACTED`].
fn holds_redacted_secrets(config: &mut cairn_client::runconfig::RunConfig) -> bool {
    let mut redacted = false;
    each_secret(config, |v| redacted |= v == REDACTED);
    redacted
}

/// Why a redacted export is not imported.
const REDACTED_IMPORT: &str = "it was made without `--include-secrets`: its secrets are `***`, and importing it would store `***` as every secret; export again with `cairn export --include-secrets`";

/// The key prefixes that make up an export's entries, in key order.
pub const EXPORTED: [&str; 5] = [
    keys::COUNTER,
    keys::EVENT,
    keys::RUN,
    keys::RUN_CONFIG,
    keys::RUN_SEQ,
];

/// Prefixes an import clears (everything derived from the exported objects too, and the
/// records of the segments that held the archived runs it replaces).
const CLEARED: [&str; 12] = [
    keys::COUNTER,
    keys::EVENT,
    keys::RUN,
    keys::RUN_CONFIG,
    keys::ACTIVE,
    keys::ARCHIVED,
    keys::INDEX,
    keys::LAST,
    keys::EXECUTOR_TASK,
    keys::EXECUTOR_TASK_BY_EXECUTOR,
    keys::CHANGE_GROUP,
    keys::SEGMENT,
];

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
    revision: i64,
    /// Whether the secrets were replaced by [`REDACTED`]; `None` in exports made before
    /// the header said so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    redacted: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    key: String,
    value: String,
}

/// How an archived-run line starts (the trailer's is told apart the same way).
const ARCHIVED_LINE: &str = "{\"archived\"";
/// How the trailer line starts.
const TRAILER_LINE: &str = "{\"trailer\"";

/// A run archived in a segment, as written.
#[derive(Serialize)]
struct ArchivedLineRef<'a> {
    archived: &'a ArchivedRun,
}

/// A run archived in a segment, as read.
#[derive(Deserialize)]
struct ArchivedLine {
    archived: ArchivedRun,
}

#[derive(Debug, Serialize, Deserialize)]
struct TrailerBody {
    entries: u64,
    sha256: String,
    /// HMAC-SHA256 of the same lines, keyed by [`export_key`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hmac: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Trailer {
    trailer: TrailerBody,
}

fn is_exported(key: &str) -> bool {
    EXPORTED.iter().any(|p| {
        if *p == keys::RUN_SEQ {
            key == *p
        } else {
            key.starts_with(p)
        }
    })
}

/// Writes the lines of an export: the header, the entries (the caller keeps them in key
/// order), the archived runs (the caller keeps them in id order, after every entry), and
/// the trailer whose count and checksum cover every line before it.
pub struct ExportWriter {
    hash: Sha256,
    mac: HmacSha256,
    count: u64,
}

impl ExportWriter {
    /// Starts an export read at `revision`, authenticated with `key` (see
    /// [`export_key`]), whose header says whether its secrets are `redacted` (`None`
    /// leaves it unsaid, as older exports did): the writer, and the header line.
    pub fn start(revision: i64, key: &[u8], redacted: Option<bool>) -> (ExportWriter, Vec<u8>) {
        let mut w = ExportWriter {
            hash: Sha256::new(),
            mac: HmacSha256::new(key),
            count: 0,
        };
        let header = Header {
            format: FORMAT.into(),
            version: VERSION,
            revision,
            redacted,
        };
        let line = w.line(&header);
        w.count = 0;
        (w, line)
    }

    /// Appends the line of one entry to `out`.
    pub fn entry(&mut self, key: String, value: String, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.line(&Entry { key, value }));
    }

    /// Appends the line of one run archived in a segment to `out`.
    pub fn archived(&mut self, run: &ArchivedRun, out: &mut Vec<u8>) {
        self.archived_line(&archived_line(run), out);
    }

    /// Appends one run's line made by [`archived_line`] (on any thread) to `out`.
    pub fn archived_line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        self.count_line(line);
        out.extend_from_slice(line);
    }

    /// The trailer line.
    pub fn finish(self) -> Vec<u8> {
        let trailer = Trailer {
            trailer: TrailerBody {
                entries: self.count,
                sha256: hex(&self.hash.finalize()),
                hmac: Some(hex(&self.mac.finalize())),
            },
        };
        let mut l = serde_json::to_vec(&trailer).expect("trailers serialize");
        l.push(b'\n');
        l
    }

    /// One hashed, counted line.
    fn line(&mut self, item: &impl Serialize) -> Vec<u8> {
        let l = json_line(item);
        self.count_line(&l);
        l
    }

    fn count_line(&mut self, line: &[u8]) {
        self.hash.update(line);
        self.mac.update(line);
        self.count += 1;
    }
}

/// The export line of one run archived in a segment, not yet hashed or counted (see
/// [`ExportWriter::archived_line`]). Pure.
pub fn archived_line(run: &ArchivedRun) -> Vec<u8> {
    json_line(&ArchivedLineRef { archived: run })
}

fn json_line(item: &impl Serialize) -> Vec<u8> {
    let mut l = serde_json::to_vec(item).expect("export lines serialize");
    l.push(b'\n');
    l
}

fn invalid(why: String) -> DmError {
    DmError::Invalid {
        what: "export",
        why,
    }
}

fn parse_u64(v: &[u8]) -> u64 {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
