//! Export and import of the datamanager's contents: run configs, runs (active and
//! archived), counters, the run sequence and run events — not logs, archives or caches,
//! and not the state derived from them (indexes, executor tasks, change groups).
//!
//! The stream is newline-delimited JSON: a header `{"format":"cairn-export","version":1,
//! "revision":R}`, then one `{"key":…,"value":…}` per object in strictly increasing key
//! order, all read at store revision R, then a trailer `{"trailer":{"entries":N,
//! "sha256":…,"hmac":…}}`. The checksum covers every line before it and catches truncation
//! and corruption; the HMAC-SHA256 over the same lines is keyed by a key derived from the
//! admin secret ([`export_key`]), so an export altered by anyone without that secret is
//! refused. An import validates the whole stream (format, version, order, count, line
//! length, checksum, HMAC) before it changes anything, in time linear in its size.
//!
//! Secrets (the run configs' environment values and registry credentials) are replaced by
//! [`REDACTED`] unless the export is asked to include them; the header says which
//! (`"redacted":true|false`). An import refuses a redacted export (it would store `***` as
//! every secret), and, for an export whose header does not say, one whose run configs
//! hold a secret that is `***`.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use bytes::Bytes;
use cairn_client::run::{ExecutorTaskPhase, Run, RunTaskStatus};
use futures::Stream;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use store::{KeyRange, RangeRequest};

use super::keys;
use super::{Datamanager, DmError, delete_range, put};

pub const FORMAT: &str = "cairn-export";
pub const VERSION: u32 = 1;

/// The longest line an import accepts (a run or run config of the largest allowed run is
/// well under it); a longer one is refused as soon as it is seen.
pub const MAX_LINE_BYTES: usize = 32 << 20;

/// What replaces a secret in an export made without secrets.
pub const REDACTED: &str = "***";

/// The HMAC key of exports, derived from the admin secret (never the secret itself).
pub fn export_key(admin_secret: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(b"cairn export hmac v1\0");
    h.update(admin_secret);
    h.finalize().to_vec()
}

/// HMAC-SHA256 (RFC 2104) over `sha2`.
#[derive(Clone)]
struct HmacSha256 {
    inner: Sha256,
    outer_pad: [u8; 64],
}

impl HmacSha256 {
    fn new(key: &[u8]) -> HmacSha256 {
        let mut block = [0u8; 64];
        if key.len() > block.len() {
            block[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let mut inner = Sha256::new();
        inner.update(block.map(|b| b ^ 0x36));
        HmacSha256 {
            inner,
            outer_pad: block.map(|b| b ^ 0x5c),
        }
    }

    fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
    }

    fn finalize(self) -> [u8; 32] {
        let mut outer = Sha256::new();
        outer.update(self.outer_pad);
        outer.update(self.inner.finalize());
        outer.finalize().into()
    }
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

/// The key prefixes that make up an export, in key order.
pub const EXPORTED: [&str; 5] = [
    keys::COUNTER,
    keys::EVENT,
    keys::RUN,
    keys::RUN_CONFIG,
    keys::RUN_SEQ,
];

/// Prefixes an import clears (everything derived from the exported objects too).
const CLEARED: [&str; 11] = [
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
/// order), and the trailer whose count and checksum cover every line before it.
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
        let mut l = serde_json::to_vec(item).expect("export lines serialize");
        l.push(b'\n');
        self.hash.update(&l);
        self.mac.update(&l);
        self.count += 1;
        l
    }
}

impl Datamanager {
    /// The export stream, read at the current revision, page by page (memory does not
    /// grow with the export's size). A read failure ends the stream with an error, so the
    /// receiver sees a truncated (invalid) export.
    /// The trailer's HMAC is keyed by `key` ([`export_key`]); secrets are redacted
    /// unless `include_secrets`.
    pub fn export(
        &self,
        key: Vec<u8>,
        include_secrets: bool,
    ) -> impl Stream<Item = Result<Bytes, DmError>> + Send + 'static {
        let dm = self.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, DmError>>(16);
        tokio::spawn(async move {
            let r = dm.export_into(&tx, &key, include_secrets).await;
            if let Err(e) = r {
                let _ = tx.send(Err(e)).await;
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }

    async fn export_into(
        &self,
        tx: &tokio::sync::mpsc::Sender<Result<Bytes, DmError>>,
        key: &[u8],
        include_secrets: bool,
    ) -> Result<(), DmError> {
        let revision = self.kv().header().revision;
        // A linearizable read first, so the revision is the cluster's, not a stale one.
        self.kv().read_barrier().await?;
        let (mut writer, header) = ExportWriter::start(revision, key, Some(!include_secrets));
        if tx.send(Ok(Bytes::from(header))).await.is_err() {
            return Ok(());
        }
        for prefix in EXPORTED {
            let range = if prefix == keys::RUN_SEQ {
                KeyRange::key(prefix.as_bytes().to_vec())
            } else {
                KeyRange::prefix(prefix.as_bytes().to_vec())
            };
            let end = range.end_bound();
            let mut start = range.key.clone();
            loop {
                let mut req = RangeRequest::new(match &end {
                    Some(e) => KeyRange::interval(start.clone(), e.clone()),
                    None => KeyRange::key(start.clone()),
                });
                req.revision = revision;
                req.limit = 500;
                req.page_only = end.is_some();
                req.serializable = true;
                let resp = self.kv().range(req).await?;
                let mut out = Vec::new();
                for kv in &resp.kvs {
                    let key = String::from_utf8_lossy(&kv.key).into_owned();
                    // `rs/run/` is a prefix of `rs/runconfig/`'s keys? No: the `/` ends it.
                    if !is_exported(&key) {
                        continue;
                    }
                    let mut value = String::from_utf8_lossy(&kv.value).into_owned();
                    if !include_secrets && key.starts_with(keys::RUN_CONFIG) {
                        let mut config: cairn_client::runconfig::RunConfig =
                            serde_json::from_str(&value).map_err(|e| DmError::Corrupt {
                                key: key.clone(),
                                why: e.to_string(),
                            })?;
                        redact_secrets(&mut config);
                        value = serde_json::to_string(&config).expect("run configs serialize");
                    }
                    writer.entry(key, value, &mut out);
                }
                if !out.is_empty() && tx.send(Ok(Bytes::from(out))).await.is_err() {
                    return Ok(());
                }
                match resp.kvs.last() {
                    Some(last) if resp.more => {
                        start = last.key.clone();
                        start.push(0);
                    }
                    _ => break,
                }
            }
        }
        let _ = tx.send(Ok(Bytes::from(writer.finish()))).await;
        Ok(())
    }

    /// Replaces the datamanager's contents with a validated export (see
    /// [`Validator`]). The caller must hold maintenance mode. Run ids and counters
    /// never go backwards: the sequence and each counter become the larger of the
    /// imported and the current value. Runs that were active lose their executor tasks:
    /// their running tasks are failed ("lost in an import"), queued runs stay queued.
    pub async fn import(&self, spool: &std::path::Path) -> Result<ImportSummary, DmError> {
        let now = chrono::Utc::now();
        // What must not go backwards.
        let mut floors: BTreeMap<String, u64> = BTreeMap::new();
        for kv in self.scan(keys::COUNTER, false).await? {
            let k = String::from_utf8_lossy(&kv.key).into_owned();
            floors.insert(k, parse_u64(&kv.value));
        }
        if let Some(kv) = self.kv().get(keys::RUN_SEQ.as_bytes().to_vec()).await? {
            floors.insert(keys::RUN_SEQ.to_string(), parse_u64(&kv.value));
        }
        self.commit(vec![], vec![put(keys::IMPORTING, b"1".to_vec())])
            .await?;
        let clear: Vec<_> = CLEARED.iter().map(|p| delete_range(p)).collect();
        self.commit(vec![], clear).await?;

        let file =
            std::fs::File::open(spool).map_err(|e| invalid(format!("reading the spool: {e}")))?;
        let mut lines = std::io::BufReader::new(file).lines();
        let _header = lines.next();
        let mut summary = ImportSummary::default();
        let mut batch = Vec::new();
        // The newest run of each group, written once at the end (a transaction may not
        // put one key twice).
        let mut last: BTreeMap<String, String> = BTreeMap::new();
        let mut events = Vec::new();
        for line in lines {
            let line = line.map_err(|e| invalid(format!("reading the spool: {e}")))?;
            if line.starts_with("{\"trailer\"") {
                break;
            }
            let entry: Entry = serde_json::from_str(&line).map_err(|e| invalid(e.to_string()))?;
            summary.entries += 1;
            if let Some(id) = entry.key.strip_prefix(keys::RUN) {
                let mut run: Run = serde_json::from_str(&entry.value)
                    .map_err(|e| invalid(format!("run {id}: {e}")))?;
                lose_running_tasks(&mut run, now);
                summary.runs += 1;
                batch.push(put(
                    keys::run(&run.id),
                    serde_json::to_vec(&run).expect("runs serialize"),
                ));
                for k in keys::index_keys(&run) {
                    batch.push(put(k, Vec::new()));
                }
                last.insert(run.group.clone(), run.id.clone());
                if run.archived {
                    batch.push(put(keys::archived(&run.id), Vec::new()));
                } else {
                    batch.push(put(keys::active(&run.id), Vec::new()));
                }
            } else if entry.key.starts_with(keys::EVENT) {
                // An event's sequence is the revision that wrote it: one commit each
                // (in the order they happened), so sequences stay unique and ordered.
                let time = serde_json::from_str::<cairn_client::run::RunEvent>(&entry.value)
                    .ok()
                    .map(|e| e.time);
                events.push((time, entry.key, entry.value));
            } else if entry.key.starts_with(keys::COUNTER) || entry.key == keys::RUN_SEQ {
                let v =
                    parse_u64(entry.value.as_bytes()).max(floors.remove(&entry.key).unwrap_or(0));
                batch.push(put(entry.key, v.to_string().into_bytes()));
            } else {
                batch.push(put(entry.key, entry.value.into_bytes()));
            }
            if batch.len() >= 256 {
                self.commit(vec![], std::mem::take(&mut batch)).await?;
            }
        }
        if !batch.is_empty() {
            self.commit(vec![], std::mem::take(&mut batch)).await?;
        }
        events.sort();
        for (_, key, value) in events {
            self.commit(vec![], vec![put(key, value.into_bytes())])
                .await?;
        }
        for (group, id) in last {
            batch.push(put(keys::last(&group), id.into_bytes()));
            if batch.len() >= 256 {
                self.commit(vec![], std::mem::take(&mut batch)).await?;
            }
        }
        // Counters of roots the export does not know keep their values.
        for (k, v) in floors {
            batch.push(put(k, v.to_string().into_bytes()));
        }
        if !batch.is_empty() {
            self.commit(vec![], batch).await?;
        }
        self.commit(vec![], vec![super::delete(keys::IMPORTING)])
            .await?;
        Ok(summary)
    }
}

/// What an import wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportSummary {
    pub entries: u64,
    pub runs: u64,
}

/// A running task of an imported run has no executor task any more: it failed.
fn lose_running_tasks(run: &mut Run, now: chrono::DateTime<chrono::Utc>) {
    if run.phase.is_finished() {
        return;
    }
    for t in run.tasks.values_mut() {
        if t.status == RunTaskStatus::Running {
            t.status = RunTaskStatus::Failed;
            t.fail_error = Some("lost in an import".into());
            t.end_time = Some(now);
            for s in std::iter::once(&mut t.setup_step).chain(t.steps.iter_mut()) {
                if s.phase == ExecutorTaskPhase::Running {
                    s.phase = ExecutorTaskPhase::Failed;
                    s.end_time = Some(now);
                }
            }
        }
    }
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

/// Checks a whole export stream, line by line, while copying it to `spool`: format and
/// version, known keys in strictly increasing order, each value well-formed, and a
/// trailer whose entry count and checksum match. Returns the number of entries.
pub struct Validator<W: Write> {
    spool: W,
    hash: Sha256,
    mac: Option<HmacSha256>,
    /// Bytes of the current, unfinished line; the first `scanned` hold no newline.
    partial: Vec<u8>,
    scanned: usize,
    /// Bytes searched for a newline in all (each byte once: the parse is linear).
    searched: u64,
    header: bool,
    /// What the header says of the secrets ([`Header::redacted`]).
    redacted: Option<bool>,
    last_key: Option<String>,
    entries: u64,
    trailer: Option<TrailerBody>,
    line_no: u64,
}

impl<W: Write> Validator<W> {
    /// A validator that also checks the trailer's HMAC against `key` ([`export_key`]);
    /// `None` checks the checksum only.
    pub fn new(spool: W, key: Option<&[u8]>) -> Validator<W> {
        Validator {
            spool,
            hash: Sha256::new(),
            mac: key.map(HmacSha256::new),
            partial: Vec::new(),
            scanned: 0,
            searched: 0,
            header: false,
            redacted: None,
            last_key: None,
            entries: 0,
            trailer: None,
            line_no: 0,
        }
    }

    /// Feeds the next bytes of the stream. Only the new bytes are searched for line ends,
    /// and a line longer than [`MAX_LINE_BYTES`] is refused as soon as it is.
    pub fn push(&mut self, data: &[u8]) -> Result<(), DmError> {
        self.spool
            .write_all(data)
            .map_err(|e| invalid(format!("spooling the import: {e}")))?;
        self.partial.extend_from_slice(data);
        let mut start = 0;
        while let Some(at) = self.partial[self.scanned..]
            .iter()
            .position(|b| *b == b'\n')
        {
            let end = self.scanned + at + 1;
            self.searched += (at + 1) as u64;
            let line = std::mem::take(&mut self.partial);
            let result = self.line(&line[start..end]);
            self.partial = line;
            result?;
            start = end;
            self.scanned = end;
        }
        self.searched += (self.partial.len() - self.scanned) as u64;
        self.partial.drain(..start);
        self.scanned = self.partial.len();
        if self.partial.len() > MAX_LINE_BYTES {
            return Err(invalid(format!(
                "line {} is longer than {MAX_LINE_BYTES} bytes",
                self.line_no + 1
            )));
        }
        Ok(())
    }

    fn line(&mut self, line: &[u8]) -> Result<(), DmError> {
        self.line_no += 1;
        let n = self.line_no;
        if self.trailer.is_some() {
            return Err(invalid(format!("line {n}: data after the trailer")));
        }
        let text = std::str::from_utf8(&line[..line.len() - 1])
            .map_err(|_| invalid(format!("line {n}: not UTF-8")))?;
        if !self.header {
            let h: Header = serde_json::from_str(text)
                .map_err(|e| invalid(format!("line 1: not a cairn export header: {e}")))?;
            if h.format != FORMAT {
                return Err(invalid(format!(
                    "line 1: format {:?} is not {FORMAT}",
                    h.format
                )));
            }
            if h.version != VERSION {
                return Err(invalid(format!(
                    "line 1: export version {} is not supported (this Cairn reads version {VERSION})",
                    h.version
                )));
            }
            if h.redacted == Some(true) {
                return Err(invalid(format!("line 1: {REDACTED_IMPORT}")));
            }
            self.redacted = h.redacted;
            self.header = true;
            self.hash.update(line);
            if let Some(mac) = &mut self.mac {
                mac.update(line);
            }
            return Ok(());
        }
        if text.starts_with("{\"trailer\"") {
            let t: Trailer = serde_json::from_str(text)
                .map_err(|e| invalid(format!("line {n}: bad trailer: {e}")))?;
            self.trailer = Some(t.trailer);
            return Ok(());
        }
        self.hash.update(line);
        if let Some(mac) = &mut self.mac {
            mac.update(line);
        }
        let e: Entry = serde_json::from_str(text).map_err(|e| invalid(format!("line {n}: {e}")))?;
        if !is_exported(&e.key) {
            return Err(invalid(format!("line {n}: unexpected key {:?}", e.key)));
        }
        if self
            .last_key
            .as_deref()
            .is_some_and(|k| k >= e.key.as_str())
        {
            return Err(invalid(format!(
                "line {n}: key {:?} is out of order",
                e.key
            )));
        }
        // Task ids become executor task ids, which name directories on executors
        // (security review C2): an imported one must be a uuid.
        fn check_ids<'a>(
            mut ids: impl Iterator<Item = &'a String>,
            n: impl std::fmt::Display,
        ) -> Result<(), DmError> {
            ids.try_for_each(|id| cairn_client::ids::check_task_id(id))
                .map_err(|err| invalid(format!("line {n}: {err}")))
        }
        // A run's id keys it (and its config, active marker and index entries): it must be
        // a run id, the same in the key and in the object.
        let check_run_id = |key_id: &str, id: &str| {
            cairn_client::ids::check_run_id(key_id)
                .map_err(|err| invalid(format!("line {n}: {err}")))?;
            if id != key_id {
                return Err(invalid(format!(
                    "line {n}: key {:?} holds run {id:?}",
                    e.key
                )));
            }
            Ok(())
        };
        if let Some(key_id) = e.key.strip_prefix(keys::RUN) {
            let run = serde_json::from_str::<Run>(&e.value)
                .map_err(|err| invalid(format!("line {n}: run: {err}")))?;
            check_run_id(key_id, &run.id)?;
            check_ids(run.tasks.keys(), n)?;
        } else if let Some(key_id) = e.key.strip_prefix(keys::RUN_CONFIG) {
            let mut config = serde_json::from_str::<cairn_client::runconfig::RunConfig>(&e.value)
                .map_err(|err| invalid(format!("line {n}: run config: {err}")))?;
            check_run_id(key_id, &config.id)?;
            if self.redacted.is_none() && holds_redacted_secrets(&mut config) {
                return Err(invalid(format!(
                    "line {n}: run {key_id} has a secret `***`: {REDACTED_IMPORT}"
                )));
            }
            check_ids(config.tasks.keys(), n)?;
        } else if e.key.starts_with(keys::COUNTER) || e.key == keys::RUN_SEQ {
            e.value
                .trim()
                .parse::<u64>()
                .map_err(|_| invalid(format!("line {n}: {:?} is not a number", e.value)))?;
        }
        self.last_key = Some(e.key);
        self.entries += 1;
        Ok(())
    }

    /// Ends the stream: the trailer must be there and match.
    pub fn finish(mut self) -> Result<(u64, W), DmError> {
        if !self.partial.is_empty() {
            return Err(invalid(
                "the export is truncated (its last line is incomplete)".into(),
            ));
        }
        let Some(t) = self.trailer.take() else {
            return Err(invalid("the export is truncated (no trailer)".into()));
        };
        if t.entries != self.entries {
            return Err(invalid(format!(
                "the trailer counts {} entries, the export holds {}",
                t.entries, self.entries
            )));
        }
        let sum = hex(&self.hash.finalize_reset());
        if t.sha256 != sum {
            return Err(invalid(
                "the checksum does not match: the export is corrupt".into(),
            ));
        }
        if let Some(mac) = self.mac.take() {
            let expected = hex(&mac.finalize());
            let given = t.hmac.as_deref().unwrap_or_default();
            if !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
                return Err(invalid(
                    "the HMAC does not match: the export was altered, or made by a server with another admin token"
                        .into(),
                ));
            }
        }
        self.spool
            .flush()
            .map_err(|e| invalid(format!("spooling the import: {e}")))?;
        Ok((self.entries, self.spool))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid export of `entries` (key, value) with a correct trailer.
    const KEY: &[u8] = b"test export key";

    fn export_of(entries: &[(&str, &str)]) -> Vec<u8> {
        let (mut w, mut out) = ExportWriter::start(7, KEY, Some(false));
        for (k, v) in entries {
            w.entry(k.to_string(), v.to_string(), &mut out);
        }
        out.extend_from_slice(&w.finish());
        out
    }

    fn validate(bytes: &[u8], chunk: usize) -> Result<u64, DmError> {
        let mut v = Validator::new(Vec::new(), Some(KEY));
        for c in bytes.chunks(chunk) {
            v.push(c)?;
        }
        v.finish().map(|(n, _)| n)
    }

    const GOOD: &[(&str, &str)] = &[("rs/counter/p", "3"), ("rs/seq/run", "9")];

    #[test]
    fn a_valid_export_passes_in_any_chunking() {
        let e = export_of(GOOD);
        for chunk in [1, 7, 64, 4096] {
            assert_eq!(validate(&e, chunk).expect("valid"), 2);
        }
    }

    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        let mut mac = HmacSha256::new(b"Jefe");
        mac.update(b"what do ya want ");
        mac.update(b"for nothing?");
        assert_eq!(
            hex(&mac.finalize()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // A key longer than the block is hashed first (RFC 4231 test case 6).
        let mut mac = HmacSha256::new(&[0xaa; 131]);
        mac.update(b"Test Using Larger Than Block-Size Key - Hash Key First");
        assert_eq!(
            hex(&mac.finalize()),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    /// Security review M5: the SHA-256 can be recomputed by anyone; the HMAC cannot.
    #[test]
    fn an_altered_export_with_a_recomputed_checksum_fails_the_hmac() {
        let e = String::from_utf8(export_of(GOOD)).expect("utf8");
        let mut lines: Vec<String> = e.split_inclusive('\n').map(str::to_string).collect();
        lines[1] = lines[1].replace("\"3\"", "\"4\"");
        let mut hash = Sha256::new();
        for l in &lines[..lines.len() - 1] {
            hash.update(l.as_bytes());
        }
        let mut trailer: serde_json::Value =
            serde_json::from_str(lines.last().expect("trailer")).expect("json");
        trailer["trailer"]["sha256"] = hex(&hash.finalize()).into();
        *lines.last_mut().expect("trailer") = format!("{trailer}\n");
        let err = validate(lines.concat().as_bytes(), 64).expect_err("tampered");
        assert!(err.to_string().contains("HMAC"), "{err}");
        // Without its HMAC, or signed with another key, it is refused as well.
        trailer["trailer"]
            .as_object_mut()
            .expect("object")
            .remove("hmac");
        *lines.last_mut().expect("trailer") = format!("{trailer}\n");
        assert!(validate(lines.concat().as_bytes(), 64).is_err());
        let mut other = Validator::new(Vec::new(), Some(b"another key".as_slice()));
        other.push(&export_of(GOOD)).expect("well-formed");
        assert!(other.finish().is_err(), "another server's key");
    }

    /// Security review M5: a single line longer than the cap is refused as soon as the
    /// validator holds more than the cap, not at the end of the body.
    #[test]
    fn a_line_over_the_cap_is_refused_at_once() {
        let mut v = Validator::new(std::io::sink(), Some(KEY));
        let piece = vec![b'x'; 1 << 20];
        let mut pushed = 0;
        let err = loop {
            match v.push(&piece) {
                Ok(()) => pushed += piece.len(),
                Err(e) => break e,
            }
            assert!(pushed <= 2 * MAX_LINE_BYTES, "never refused");
        };
        assert!(err.to_string().contains("longer than"), "{err}");
        assert!(pushed <= MAX_LINE_BYTES, "{pushed}");
    }

    /// Security review M5: each byte is searched for a line end once, however the input
    /// is cut (the parser rescanned the whole pending line at every chunk: quadratic).
    #[test]
    fn parsing_is_linear_in_the_input() {
        let value = "v".repeat(200_000);
        let entries: Vec<(String, String)> = (0..50)
            .map(|i| (format!("rs/event/{i:08}"), value.clone()))
            .collect();
        let (mut w, mut out) = ExportWriter::start(7, KEY, Some(false));
        for (k, v) in entries {
            w.entry(k, v, &mut out);
        }
        out.extend_from_slice(&w.finish());
        for chunk in [1, 100, 4096, out.len()] {
            let mut v = Validator::new(std::io::sink(), Some(KEY));
            for c in out.chunks(chunk) {
                v.push(c).expect("valid");
            }
            assert_eq!(v.searched, out.len() as u64, "chunks of {chunk}");
            v.finish().expect("valid");
        }
    }

    #[test]
    fn redaction_replaces_environment_values_and_registry_secrets() {
        use cairn_client::runconfig::{RegistryAuth, RunConfig, RunConfigTask};
        let mut config = RunConfig::default();
        config.environment.insert("TOKEN".into(), "s3cret-1".into());
        config.static_environment.insert("CI".into(), "true".into());
        let mut task = RunConfigTask::default();
        task.environment.insert("KEY".into(), "s3cret-2".into());
        task.docker_registries_auth.insert(
            "ghcr.io".into(),
            RegistryAuth {
                username: "me".into(),
                password: "s3cret-3".into(),
                ..RegistryAuth::default()
            },
        );
        config.tasks.insert("t".into(), task);
        redact_secrets(&mut config);
        let text = serde_json::to_string(&config).expect("json");
        assert!(!text.contains("s3cret"), "{text}");
        assert_eq!(config.environment["TOKEN"], REDACTED);
        assert_eq!(config.static_environment["CI"], "true");
    }

    /// Issue 11: a run's id keys its run, config, marker and index entries; an import
    /// whose run (or run config) key is not a run id, or names another run than the
    /// object it holds, is refused.
    #[test]
    fn imported_runs_are_keyed_by_their_own_valid_run_id() {
        let run = |id: &str| {
            serde_json::json!({"id": id, "name": "r", "counter": 1, "group": "/p/x", "phase": "queued"})
                .to_string()
        };
        let config = |id: &str| {
            let c = cairn_client::runconfig::RunConfig {
                id: id.into(),
                ..Default::default()
            };
            serde_json::to_string(&c).expect("json")
        };
        const ID: &str = "0000000000000001";
        let good = export_of(&[
            (&format!("rs/run/{ID}"), &run(ID)),
            (&format!("rs/runconfig/{ID}"), &config(ID)),
        ]);
        assert_eq!(validate(&good, 64).expect("valid"), 2);
        for (key, value) in [
            ("rs/run/../../x".to_string(), run("../../x")),
            (format!("rs/run/{}", "1".repeat(300)), run(&"1".repeat(300))),
            (format!("rs/run/{ID}"), run("0000000000000002")),
            (format!("rs/run/{ID}"), run("../x")),
            ("rs/runconfig/abc".to_string(), config("abc")),
            (format!("rs/runconfig/{ID}"), config("x")),
        ] {
            let err = validate(&export_of(&[(&key, &value)]), 64).expect_err(&key);
            assert!(err.to_string().contains("run"), "{key}: {err}");
        }
    }

    /// Issue 11: an export made without `--include-secrets` holds `***` for every secret;
    /// importing it stored `***` as the secrets. Its header says it is redacted and the
    /// import refuses it, naming the flag; an export whose header does not say (made
    /// before it did) is refused when a run config holds a secret `***`.
    #[test]
    fn a_redacted_export_is_refused_by_import() {
        let config = |value: &str| {
            let mut c = cairn_client::runconfig::RunConfig {
                id: "0000000000000001".into(),
                ..Default::default()
            };
            c.environment.insert("DEPLOY_KEY".into(), value.into());
            serde_json::to_string(&c).expect("json")
        };
        let export = |redacted: Option<bool>, value: &str| {
            let (mut w, mut out) = ExportWriter::start(7, KEY, redacted);
            w.entry(
                "rs/runconfig/0000000000000001".into(),
                config(value),
                &mut out,
            );
            out.extend_from_slice(&w.finish());
            out
        };
        for (redacted, value) in [(Some(true), "***"), (Some(true), "s3cret"), (None, "***")] {
            let err = validate(&export(redacted, value), 64).expect_err("redacted");
            assert!(
                err.to_string().contains("--include-secrets"),
                "{redacted:?} {value}: {err}"
            );
        }
        for (redacted, value) in [
            (Some(false), "s3cret"),
            (Some(false), "***"),
            (None, "s3cret"),
        ] {
            assert_eq!(
                validate(&export(redacted, value), 64).expect("with secrets"),
                1
            );
        }
    }

    #[test]
    fn truncation_anywhere_is_detected() {
        let e = export_of(GOOD);
        for cut in 1..e.len() {
            assert!(validate(&e[..cut], 13).is_err(), "cut at {cut} passed");
        }
    }

    #[test]
    fn an_altered_value_fails_the_checksum() {
        let e = export_of(GOOD);
        let text = String::from_utf8(e)
            .expect("utf8")
            .replace("\"3\"", "\"4\"");
        let err = validate(text.as_bytes(), 64).expect_err("altered");
        assert!(err.to_string().contains("checksum"), "{err}");
    }

    #[test]
    fn keys_out_of_order_unknown_or_a_wrong_version_are_refused() {
        let swapped = export_of(&[("rs/seq/run", "9"), ("rs/counter/p", "3")]);
        assert!(
            validate(&swapped, 64)
                .expect_err("order")
                .to_string()
                .contains("out of order")
        );
        let unknown = export_of(&[("rs/executor/x", "{}")]);
        assert!(
            validate(&unknown, 64)
                .expect_err("key")
                .to_string()
                .contains("unexpected key")
        );
        let bad_number = export_of(&[("rs/counter/p", "three")]);
        assert!(validate(&bad_number, 64).is_err());
        let v2 = String::from_utf8(export_of(GOOD))
            .expect("utf8")
            .replace("\"version\":1", "\"version\":2");
        assert!(
            validate(v2.as_bytes(), 64)
                .expect_err("version")
                .to_string()
                .contains("version 2")
        );
    }

    #[tokio::test]
    async fn export_then_import_restores_runs_and_never_moves_counters_back() {
        let a = crate::datamanager::testing::TestStore::start().await;
        let dm = a.dm();
        for _ in 0..3 {
            dm.create_run("/project/p/branch/main", |id, counter| {
                let config = cairn_client::runconfig::RunConfig {
                    id: id.to_string(),
                    group: "/project/p/branch/main".into(),
                    ..Default::default()
                };
                let run = crate::runservice::new_run(&config, counter, chrono::Utc::now());
                (config, run)
            })
            .await
            .expect("create");
        }
        let mut bytes = Vec::new();
        let mut s = Box::pin(dm.export(KEY.to_vec(), true));
        while let Some(chunk) = futures::StreamExt::next(&mut s).await {
            bytes.extend_from_slice(&chunk.expect("chunk"));
        }
        let spool = tempfile::NamedTempFile::new().expect("spool");
        let mut v = Validator::new(spool.reopen().expect("reopen"), Some(KEY));
        v.push(&bytes).expect("valid");
        v.finish().expect("complete");

        // A second store already at counter 5 for the same root.
        let b = crate::datamanager::testing::TestStore::start().await;
        let db = b.dm();
        db.commit(
            vec![],
            vec![
                put(keys::counter("p"), b"5".to_vec()),
                put(keys::RUN_SEQ, b"5".to_vec()),
            ],
        )
        .await
        .expect("seed");
        let summary = db.import(spool.path()).await.expect("import");
        assert_eq!(summary.runs, 3);
        let page = db
            .list_runs(&cairn_client::api::ListRunsQuery::default())
            .await
            .expect("list");
        assert_eq!(page.runs.len(), 3);
        let next = db
            .create_run("/project/p/branch/main", |id, counter| {
                let config = cairn_client::runconfig::RunConfig {
                    id: id.to_string(),
                    group: "/project/p/branch/main".into(),
                    ..Default::default()
                };
                let run = crate::runservice::new_run(&config, counter, chrono::Utc::now());
                (config, run)
            })
            .await
            .expect("create after import");
        assert_eq!(next.run.value.counter, 6, "the counter went backwards");
        assert_eq!(next.run.value.id, keys::run_id(6));
    }
}
