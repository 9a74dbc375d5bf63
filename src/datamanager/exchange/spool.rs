//! Reading a validated export back from its spool file, line by line: where each section
//! starts ([`Sections`]), and readers that start at a section and stop at its end, so an
//! import can walk several sections side by side (a run with its config and events)
//! holding one line of each. Every line was checked by the [`super::Validator`]; a line
//! that does not parse now is an error, never a panic.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::Path;

use serde::Deserialize;

use super::{ARCHIVED_LINE, ArchivedLine, DmError, Entry, TRAILER_LINE, invalid, keys};
use crate::datamanager::segments::ArchivedRun;

/// One line of the spool after the header.
pub(super) enum Line {
    Entry(Entry),
    Archived(Box<ArchivedRun>),
}

/// A reader of the spool's lines from a byte offset on, up to the trailer.
pub(super) struct SpoolReader {
    reader: BufReader<File>,
    offset: u64,
    buf: String,
}

fn spool_error(e: impl std::fmt::Display) -> DmError {
    invalid(format!("reading the spool: {e}"))
}

impl SpoolReader {
    /// A reader from byte `offset` (a line's start) of the spool at `path`.
    pub(super) fn open(path: &Path, offset: u64) -> Result<SpoolReader, DmError> {
        let mut file = File::open(path).map_err(spool_error)?;
        file.seek(SeekFrom::Start(offset)).map_err(spool_error)?;
        Ok(SpoolReader {
            reader: BufReader::with_capacity(256 << 10, file),
            offset,
            buf: String::new(),
        })
    }

    /// The next raw line (without its newline) and the offset it starts at; `None` at the
    /// trailer or the end.
    fn next_raw(&mut self) -> Result<Option<(u64, &str)>, DmError> {
        self.buf.clear();
        let at = self.offset;
        let n = self.reader.read_line(&mut self.buf).map_err(spool_error)?;
        self.offset += n as u64;
        let line = self.buf.trim_end_matches('\n');
        if n == 0 || line.starts_with(TRAILER_LINE) {
            return Ok(None);
        }
        Ok(Some((at, line)))
    }

    /// The next line, parsed; `None` at the trailer.
    pub(super) fn next_line(&mut self) -> Result<Option<Line>, DmError> {
        let Some((_, text)) = self.next_raw()? else {
            return Ok(None);
        };
        if text.starts_with(ARCHIVED_LINE) {
            let l: ArchivedLine = serde_json::from_str(text).map_err(spool_error)?;
            return Ok(Some(Line::Archived(Box::new(l.archived))));
        }
        serde_json::from_str(text)
            .map(|e| Some(Line::Entry(e)))
            .map_err(spool_error)
    }

    /// Skips the header line.
    pub(super) fn skip_header(&mut self) -> Result<(), DmError> {
        self.next_raw().map(|_| ())
    }
}

/// Where each part of a spooled export starts (byte offsets of the first line of each).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Sections {
    /// The first entry (right after the header).
    pub entries: u64,
    pub events: Option<u64>,
    pub runs: Option<u64>,
    pub configs: Option<u64>,
    pub archived: Option<u64>,
}

/// A line's key, read without its value.
#[derive(Deserialize)]
struct KeyOnly<'a> {
    #[serde(borrow)]
    key: Cow<'a, str>,
}

impl Sections {
    /// Finds the sections of the spool at `path` in one pass.
    pub(super) fn find(path: &Path) -> Result<Sections, DmError> {
        let mut r = SpoolReader::open(path, 0)?;
        r.skip_header()?;
        let mut s = Sections {
            entries: r.offset,
            ..Sections::default()
        };
        while let Some((at, text)) = r.next_raw()? {
            if text.starts_with(ARCHIVED_LINE) {
                s.archived = Some(at);
                break;
            }
            let k: KeyOnly = serde_json::from_str(text).map_err(spool_error)?;
            let slot = if k.key.starts_with(keys::EVENT) {
                &mut s.events
            } else if k.key.starts_with(keys::RUN) {
                &mut s.runs
            } else if k.key.starts_with(keys::RUN_CONFIG) {
                &mut s.configs
            } else {
                continue;
            };
            slot.get_or_insert(at);
        }
        Ok(s)
    }
}

/// The entries of one key prefix, from the section's start to its end, with one line of
/// look-ahead.
pub(super) struct EntryCursor {
    reader: Option<SpoolReader>,
    prefix: &'static str,
    next: Option<Entry>,
}

impl EntryCursor {
    /// A cursor over the entries under `prefix`, whose first line is at `start` (`None`:
    /// the export has none).
    pub(super) fn open(
        path: &Path,
        start: Option<u64>,
        prefix: &'static str,
    ) -> Result<EntryCursor, DmError> {
        let mut c = EntryCursor {
            reader: start.map(|at| SpoolReader::open(path, at)).transpose()?,
            prefix,
            next: None,
        };
        c.advance()?;
        Ok(c)
    }

    fn advance(&mut self) -> Result<(), DmError> {
        self.next = None;
        let Some(reader) = &mut self.reader else {
            return Ok(());
        };
        match reader.next_line()? {
            Some(Line::Entry(e)) if e.key.starts_with(self.prefix) => self.next = Some(e),
            _ => self.reader = None,
        }
        Ok(())
    }

    /// The next entry.
    pub(super) fn peek(&self) -> Option<&Entry> {
        self.next.as_ref()
    }

    /// The next entry's id: its key after the prefix, up to the next `/`.
    pub(super) fn peek_id(&self) -> Option<&str> {
        self.next.as_ref().map(|e| {
            let rest = &e.key[self.prefix.len()..];
            rest.split_once('/').map_or(rest, |(id, _)| id)
        })
    }

    /// Takes the next entry.
    pub(super) fn take(&mut self) -> Result<Option<Entry>, DmError> {
        let e = self.next.take();
        if e.is_some() {
            self.advance()?;
        }
        Ok(e)
    }
}

/// The archived runs of the spool, in id order.
pub(super) struct ArchivedCursor {
    reader: Option<SpoolReader>,
    next: Option<Box<ArchivedRun>>,
}

impl ArchivedCursor {
    pub(super) fn open(path: &Path, start: Option<u64>) -> Result<ArchivedCursor, DmError> {
        let mut c = ArchivedCursor {
            reader: start.map(|at| SpoolReader::open(path, at)).transpose()?,
            next: None,
        };
        c.advance()?;
        Ok(c)
    }

    fn advance(&mut self) -> Result<(), DmError> {
        self.next = None;
        let Some(reader) = &mut self.reader else {
            return Ok(());
        };
        match reader.next_line()? {
            Some(Line::Archived(a)) => self.next = Some(a),
            _ => self.reader = None,
        }
        Ok(())
    }

    pub(super) fn peek_id(&self) -> Option<&str> {
        self.next.as_ref().map(|a| a.run.id.as_str())
    }

    pub(super) fn take(&mut self) -> Result<Option<Box<ArchivedRun>>, DmError> {
        let a = self.next.take();
        if a.is_some() {
            self.advance()?;
        }
        Ok(a)
    }
}
