//! [`Validator`]: checks a whole export stream while it is spooled, before an import
//! changes anything.

use std::io::Write;

use cairn_client::run::{Run, RunEvent};
use cairn_client::runconfig::RunConfig;
use sha2::{Digest, Sha256};

use super::{
    ARCHIVED_LINE, ArchivedLine, DmError, Entry, FORMAT, Header, HmacSha256, MAX_LINE_BYTES,
    OLDEST_VERSION, REDACTED_IMPORT, TRAILER_LINE, Trailer, TrailerBody, VERSION, constant_time_eq,
    hex, holds_redacted_secrets, invalid, is_exported, keys,
};
use crate::datamanager::segments::format::check_archived;

/// Checks a whole export stream, line by line, while copying it to `spool`: format and
/// version, known keys in strictly increasing order, each value well-formed and keyed by
/// its own valid ids, the archived runs after every entry in strictly increasing id
/// order, each whole and valid, and a trailer whose line count, checksum and HMAC match.
/// Returns the number of lines between the header and the trailer.
pub struct Validator<W: Write> {
    spool: W,
    hash: Sha256,
    mac: Option<HmacSha256>,
    /// Bytes of the current, unfinished line; the first `scanned` hold no newline.
    partial: Vec<u8>,
    scanned: usize,
    /// Bytes searched for a newline in all (each byte once: the parse is linear).
    pub(super) searched: u64,
    /// The header's version, once read.
    version: Option<u32>,
    /// What the header says of the secrets ([`Header::redacted`]).
    redacted: Option<bool>,
    last_key: Option<String>,
    /// The id of the last archived run; set once the archived section has begun.
    last_archived: Option<String>,
    entries: u64,
    trailer: Option<TrailerBody>,
    line_no: u64,
}

impl<W: Write> Validator<W> {
    /// A validator that also checks the trailer's HMAC against `key` ([`super::export_key`]);
    /// `None` checks the checksum only.
    pub fn new(spool: W, key: Option<&[u8]>) -> Validator<W> {
        Validator {
            spool,
            hash: Sha256::new(),
            mac: key.map(HmacSha256::new),
            partial: Vec::new(),
            scanned: 0,
            searched: 0,
            version: None,
            redacted: None,
            last_key: None,
            last_archived: None,
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
        if self.version.is_none() {
            self.header(text)?;
        } else if text.starts_with(TRAILER_LINE) {
            let t: Trailer = serde_json::from_str(text)
                .map_err(|e| invalid(format!("line {n}: bad trailer: {e}")))?;
            self.trailer = Some(t.trailer);
            return Ok(());
        } else if text.starts_with(ARCHIVED_LINE) {
            self.archived(text)?;
            self.entries += 1;
        } else {
            self.entry(text)?;
            self.entries += 1;
        }
        self.hash.update(line);
        if let Some(mac) = &mut self.mac {
            mac.update(line);
        }
        Ok(())
    }

    fn header(&mut self, text: &str) -> Result<(), DmError> {
        let h: Header = serde_json::from_str(text)
            .map_err(|e| invalid(format!("line 1: not a cairn export header: {e}")))?;
        if h.format != FORMAT {
            return Err(invalid(format!(
                "line 1: format {:?} is not {FORMAT}",
                h.format
            )));
        }
        if !(OLDEST_VERSION..=VERSION).contains(&h.version) {
            return Err(invalid(format!(
                "line 1: export version {} is not supported (this Cairn reads versions {OLDEST_VERSION} to {VERSION}; export with the same Cairn version as the importing cluster)",
                h.version
            )));
        }
        if h.redacted == Some(true) {
            return Err(invalid(format!("line 1: {REDACTED_IMPORT}")));
        }
        self.redacted = h.redacted;
        self.version = Some(h.version);
        Ok(())
    }

    /// One store entry: a known key, after the previous one, before any archived run,
    /// with a well-formed value keyed by its own valid ids.
    fn entry(&mut self, text: &str) -> Result<(), DmError> {
        let n = self.line_no;
        let e: Entry = serde_json::from_str(text).map_err(|e| invalid(format!("line {n}: {e}")))?;
        if !is_exported(&e.key) {
            return Err(invalid(format!("line {n}: unexpected key {:?}", e.key)));
        }
        if self.last_archived.is_some()
            || self
                .last_key
                .as_deref()
                .is_some_and(|k| k >= e.key.as_str())
        {
            return Err(invalid(format!(
                "line {n}: key {:?} is out of order",
                e.key
            )));
        }
        if let Some(key_id) = e.key.strip_prefix(keys::RUN) {
            let run = serde_json::from_str::<Run>(&e.value)
                .map_err(|err| invalid(format!("line {n}: run: {err}")))?;
            check_run_id(n, &e.key, key_id, &run.id)?;
            check_task_ids(n, run.tasks.keys())?;
        } else if let Some(key_id) = e.key.strip_prefix(keys::RUN_CONFIG) {
            let mut config = serde_json::from_str::<RunConfig>(&e.value)
                .map_err(|err| invalid(format!("line {n}: run config: {err}")))?;
            check_run_id(n, &e.key, key_id, &config.id)?;
            self.check_secrets(key_id, &mut config)?;
            check_task_ids(n, config.tasks.keys())?;
        } else if let Some(rest) = e.key.strip_prefix(keys::EVENT) {
            check_event(n, &e.key, rest, &e.value)?;
        } else if e.key.starts_with(keys::COUNTER) || e.key == keys::RUN_SEQ {
            e.value
                .trim()
                .parse::<u64>()
                .map_err(|_| invalid(format!("line {n}: {:?} is not a number", e.value)))?;
        }
        self.last_key = Some(e.key);
        Ok(())
    }

    /// One run archived in a segment (version 2 on): after every entry and the previous
    /// archived run, whole (run, config and events of one valid run id, finished, group
    /// in canonical form), with valid task ids and, unless said, no redacted secret.
    fn archived(&mut self, text: &str) -> Result<(), DmError> {
        let n = self.line_no;
        if self.version < Some(2) {
            return Err(invalid(format!(
                "line {n}: an archived run in a version 1 export"
            )));
        }
        let ArchivedLine { archived } = serde_json::from_str(text)
            .map_err(|e| invalid(format!("line {n}: archived run: {e}")))?;
        check_archived(&archived).map_err(|e| invalid(format!("line {n}: archived run: {e}")))?;
        let id = archived.run.id.clone();
        if self
            .last_archived
            .as_deref()
            .is_some_and(|last| last >= id.as_str())
        {
            return Err(invalid(format!(
                "line {n}: archived run {id} is out of order"
            )));
        }
        check_task_ids(n, archived.run.tasks.keys())?;
        check_task_ids(n, archived.config.tasks.keys())?;
        let mut config = archived.config;
        self.check_secrets(&id, &mut config)?;
        self.last_archived = Some(id);
        Ok(())
    }

    /// Refuses a run config with a `***` secret in an export whose header does not say
    /// whether it is redacted.
    fn check_secrets(&self, id: &str, config: &mut RunConfig) -> Result<(), DmError> {
        if self.redacted.is_none() && holds_redacted_secrets(config) {
            return Err(invalid(format!(
                "line {}: run {id} has a secret `***`: {REDACTED_IMPORT}",
                self.line_no
            )));
        }
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

/// Task ids become executor task ids, which name directories on executors (security
/// review C2): an imported one must be a uuid.
fn check_task_ids<'a>(line: u64, mut ids: impl Iterator<Item = &'a String>) -> Result<(), DmError> {
    ids.try_for_each(|id| cairn_client::ids::check_task_id(id))
        .map_err(|err| invalid(format!("line {line}: {err}")))
}

/// A run's id keys it (and its config, markers, events and index entries): it must be a
/// run id, the same in the key and in the object.
fn check_run_id(line: u64, key: &str, key_id: &str, id: &str) -> Result<(), DmError> {
    cairn_client::ids::check_run_id(key_id)
        .map_err(|err| invalid(format!("line {line}: {err}")))?;
    if id != key_id {
        return Err(invalid(format!(
            "line {line}: key {key:?} holds run {id:?}"
        )));
    }
    Ok(())
}

/// An event is keyed `rs/event/<run id>/<name>` by the run it is of: the import finds a
/// run's events by that id (an archived run's go into its segment).
fn check_event(line: u64, key: &str, rest: &str, value: &str) -> Result<(), DmError> {
    let (key_id, name) = rest.split_once('/').unwrap_or((rest, ""));
    if name.is_empty() || name.contains('/') {
        return Err(invalid(format!(
            "line {line}: event key {key:?} is not rs/event/<run id>/<name>"
        )));
    }
    let event = serde_json::from_str::<RunEvent>(value)
        .map_err(|err| invalid(format!("line {line}: run event: {err}")))?;
    check_run_id(line, key, key_id, &event.run_id)
}
