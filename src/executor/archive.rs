//! Workspace and cache archives: choosing entries of a tar taken out of a pod with
//! doublestar globs and writing them, renamed under a destination directory, into the
//! archive a step uploads ([`ArchiveWriter`]); and checking an archive before it is put
//! back into a pod ([`validate_archive`]). This is what Agola's `toolbox archive` did
//! inside the container; here the pod only hands out a tar of a directory (see
//! [`super::driver::Pod::get_archive`]) and the selection happens on the executor.
//!
//! Every archive put into a pod goes through the hardened code here (security review
//! M4): [`extract`] (the local driver's only extractor) and [`harden`] /
//! [`hardened_stream`] (what the docker driver uploads) refuse, rather than drop, any
//! entry that is absolute, has a `..` segment, lies under a symbolic link or is a hard
//! link leaving the root, refuse devices and fifos, and drop setuid, setgid and sticky
//! bits.
//!
//! Pure streaming over `Read`/`Write` (plus [`blocking_stream`], which runs such a copy
//! over a pod's byte stream): no pods, no network, no file held in memory.
//!
//! Glob semantics (Go's doublestar): `*` and `?` stay within a path segment, `**` spans
//! segments (`src/**/*.rs` matches `src/main.rs` and `src/a/b.rs`), `[abc]` and `{a,b}`.
//! A pattern that matches a directory selects everything under it, so `paths: [bin]` saves
//! the whole `bin` tree and `paths: ['*']` saves everything, as users expect. (Agola's
//! toolbox matched each walked path on its own, so there `*` saved the top-level files
//! and bare top-level directories; naming a directory is what `save_cache` of
//! `node_modules` or `target` means, and the difference only ever saves more.)

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use tar::{EntryType, Header};

/// Why an archive could not be written or was refused.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A glob in `paths` does not parse.
    #[error("bad path pattern {pattern:?}: {why}")]
    BadPattern { pattern: String, why: String },
    /// The destination directory climbs out with `..`.
    #[error("bad destination directory {0:?}: it must stay inside the archive's root (no `..`)")]
    BadDestDir(String),
    /// An entry would land outside the directory it is extracted into.
    #[error("archive entry {entry:?} escapes the root: {why}")]
    Escape { entry: String, why: &'static str },
    /// A device or fifo: an archive put into a pod holds none.
    #[error("archive entry {entry:?} is a {kind}: refused")]
    Unsupported { entry: String, kind: &'static str },
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

/// What [`validate_archive`] counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArchiveSummary {
    /// Regular files in the archive.
    pub files: u64,
    /// Their total size.
    pub bytes: u64,
}

/// The normalized name of an archive entry relative to the archive's root, or `None`
/// when it is absolute or contains a `..` segment. `./` prefixes, `.` segments and
/// trailing slashes are dropped; the root itself (`.`, `./`) is the empty path.
pub fn relative_entry_name(name: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in name.components() {
        match part {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) | Component::ParentDir => return None,
        }
    }
    Some(out)
}

/// Which entries a list of doublestar globs selects.
#[derive(Clone, Debug)]
pub struct Selection {
    /// `None`: everything.
    globs: Option<GlobSet>,
}

impl Selection {
    /// Compiles `paths`, relative to the source directory; empty selects everything, and
    /// so does a pattern that is `.` or empty (the source directory itself).
    pub fn new(paths: &[String]) -> Result<Self, ArchiveError> {
        if paths.is_empty() {
            return Ok(Self { globs: None });
        }
        let mut set = GlobSetBuilder::new();
        for pattern in paths {
            let trimmed = pattern.trim_start_matches("./").trim_end_matches('/');
            if trimmed.is_empty() || trimmed == "." {
                return Ok(Self { globs: None });
            }
            let glob = GlobBuilder::new(trimmed)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| ArchiveError::BadPattern {
                    pattern: pattern.clone(),
                    why: e.kind().to_string(),
                })?;
            set.add(glob);
        }
        let globs = set.build().map_err(|e| ArchiveError::BadPattern {
            pattern: paths.join(", "),
            why: e.to_string(),
        })?;
        Ok(Self { globs: Some(globs) })
    }

    /// Whether the entry `rel` (a normalized relative name) is selected: it, or a
    /// directory above it, matches a pattern.
    pub fn includes(&self, rel: &Path) -> bool {
        match &self.globs {
            None => true,
            Some(globs) => rel
                .ancestors()
                .filter(|p| !p.as_os_str().is_empty())
                .any(|p| globs.is_match(p)),
        }
    }
}

/// Checks and normalizes the destination directory of saved contents, a directory of the
/// archive (the workspace or the cache), never of a host: `""`, `"."` and `"/"` are its
/// root, and a leading `/` is dropped as Agola's `toolbox archive` did (its docs write
/// `dest_dir: /bin/`, which is `bin` in the archive). `..` segments are refused.
pub fn dest_prefix(dest_dir: &str) -> Result<PathBuf, ArchiveError> {
    relative_entry_name(Path::new(dest_dir.trim_start_matches('/')))
        .ok_or_else(|| ArchiveError::BadDestDir(dest_dir.to_owned()))
}

/// Writes a tar archive out of selected parts of other tar archives.
pub struct ArchiveWriter<W: Write> {
    tar: tar::Builder<W>,
}

impl<W: Write> ArchiveWriter<W> {
    pub fn new(out: W) -> Self {
        let mut tar = tar::Builder::new(out);
        tar.follow_symlinks(false);
        Self { tar }
    }

    /// Copies the entries of `source` (a tar whose names are relative to a source
    /// directory) selected by `paths` (see [`Selection`]) into this archive, renamed to
    /// `dest_dir/<name>`. Regular files, directories and symbolic links keep their mode,
    /// owner and mtime; hard links are kept when their target is selected too. Entries
    /// whose names are absolute or contain `..`, and other kinds (devices, fifos), are
    /// skipped. Returns how many entries were added.
    pub fn add_selected(
        &mut self,
        source: impl Read,
        paths: &[String],
        dest_dir: &str,
    ) -> Result<usize, ArchiveError> {
        let selection = Selection::new(paths)?;
        let dest = dest_prefix(dest_dir)?;
        let mut source = tar::Archive::new(source);
        let mut added = 0;
        for entry in source.entries()? {
            let mut entry = entry?;
            let Some(rel) = relative_entry_name(&entry.path()?) else {
                continue;
            };
            if rel.as_os_str().is_empty() || !selection.includes(&rel) {
                continue;
            }
            let name = dest.join(&rel);
            let kind = entry.header().entry_type();
            let mut header = copied_header(entry.header(), kind);
            if kind.is_file() {
                header.set_size(entry.size());
                self.tar.append_data(&mut header, &name, &mut entry)?;
            } else if kind.is_dir() {
                self.tar.append_data(&mut header, &name, io::empty())?;
            } else if kind.is_symlink() {
                let Some(target) = entry.link_name()? else {
                    continue;
                };
                self.tar.append_link(&mut header, &name, target)?;
            } else if kind.is_hard_link() {
                let target = entry.link_name()?.and_then(|t| relative_entry_name(&t));
                match target {
                    Some(t) if !t.as_os_str().is_empty() && selection.includes(&t) => {
                        self.tar.append_link(&mut header, &name, dest.join(t))?;
                    }
                    _ => continue,
                }
            } else {
                continue;
            }
            added += 1;
        }
        Ok(added)
    }

    /// Ends the archive and returns the writer.
    pub fn finish(self) -> Result<W, ArchiveError> {
        Ok(self.tar.into_inner()?)
    }
}

/// A fresh header of `kind` with the mode, owner and mtime of `from` (size 0).
fn copied_header(from: &Header, kind: EntryType) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    let default_mode = if kind.is_dir() { 0o755 } else { 0o644 };
    header.set_mode(from.mode().unwrap_or(default_mode));
    header.set_mtime(from.mtime().unwrap_or(0));
    header.set_uid(from.uid().unwrap_or(0));
    header.set_gid(from.gid().unwrap_or(0));
    header.set_size(0);
    header
}

/// The permission bits an extracted entry keeps: setuid, setgid and sticky are dropped.
const KEPT_MODE_BITS: u32 = 0o777;

/// Checks of [`validate_archive`], [`extract`] and [`harden`], entry by entry.
#[derive(Default)]
struct Checker {
    symlinks: HashSet<PathBuf>,
    summary: ArchiveSummary,
}

/// What [`Checker::check`] says to do with an entry.
enum Checked {
    /// A pax global header, or the root directory itself: nothing to write.
    Skip,
    /// Write it under this normalized name (hard links: with this normalized target).
    Keep { rel: PathBuf, link: Option<PathBuf> },
}

impl Checker {
    fn check<R: Read>(&mut self, entry: &tar::Entry<'_, R>) -> Result<Checked, ArchiveError> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(Checked::Skip); // `git archive` puts the commit id there.
        }
        let raw = entry.path()?.into_owned();
        let shown = || raw.display().to_string();
        let rel = relative_entry_name(&raw).ok_or_else(|| ArchiveError::Escape {
            entry: shown(),
            why: "absolute or contains `..`",
        })?;
        if rel.ancestors().skip(1).any(|a| self.symlinks.contains(a)) {
            return Err(ArchiveError::Escape {
                entry: shown(),
                why: "lies under a symbolic link",
            });
        }
        let unsupported = match kind {
            EntryType::Char => Some("character device"),
            EntryType::Block => Some("block device"),
            EntryType::Fifo => Some("fifo"),
            _ => None,
        };
        if let Some(kind) = unsupported {
            return Err(ArchiveError::Unsupported {
                entry: shown(),
                kind,
            });
        }
        let mut link = None;
        if kind.is_symlink() {
            self.symlinks.insert(rel.clone());
        } else {
            self.symlinks.remove(&rel);
            if kind.is_hard_link() {
                let target = entry.link_name()?.and_then(|t| relative_entry_name(&t));
                match target {
                    Some(t)
                        if !t.as_os_str().is_empty()
                            && !t.ancestors().any(|a| self.symlinks.contains(a)) =>
                    {
                        link = Some(t);
                    }
                    _ => {
                        return Err(ArchiveError::Escape {
                            entry: shown(),
                            why: "hard link target outside the root",
                        });
                    }
                }
            } else if kind.is_file() {
                self.summary.files += 1;
                self.summary.bytes += entry.size();
            }
        }
        if rel.as_os_str().is_empty() {
            return Ok(Checked::Skip);
        }
        Ok(Checked::Keep { rel, link })
    }
}

/// Reads a whole archive and refuses it if any entry would land outside the directory it
/// is extracted into: an absolute name, a `..` segment, a name under a symbolic link
/// defined earlier in the archive, or a hard link to such a place; devices and fifos are
/// refused too. Symbolic link targets themselves are data and may point anywhere
/// (extraction never follows them).
pub fn validate_archive(read: impl Read) -> Result<ArchiveSummary, ArchiveError> {
    let mut archive = tar::Archive::new(read);
    let mut checker = Checker::default();
    for entry in archive.entries()? {
        checker.check(&entry?)?;
    }
    Ok(checker.summary)
}

/// Extracts `read` into `dir` (created if missing), refusing the archive at the first
/// entry [`validate_archive`] would refuse (what came before it stays). Files, directories
/// and links are created with their modes less the setuid, setgid and sticky bits, and
/// their mtimes; owners are not kept; links are never followed, and nothing is written
/// through a symbolic link already in `dir`. Files already there are replaced.
pub fn extract(read: impl Read, dir: &Path) -> Result<ArchiveSummary, ArchiveError> {
    std::fs::create_dir_all(dir)?;
    let dir = dir.canonicalize()?;
    let mut archive = tar::Archive::new(read);
    archive.set_preserve_permissions(false);
    archive.set_preserve_ownerships(false);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    archive.set_unpack_xattrs(false);
    let mut checker = Checker::default();
    // Directories are applied last, deepest first, so their modes and mtimes neither are
    // disturbed by, nor prevent, the extraction of what they contain.
    let mut directories = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let Checked::Keep { rel, .. } = checker.check(&entry)? else {
            continue;
        };
        entry.set_mask(!KEPT_MODE_BITS & 0o7777);
        if entry.header().entry_type().is_dir() {
            directories.push((rel, entry));
        } else {
            unpack_checked(&mut entry, &dir, &rel)?;
        }
    }
    directories.sort_by(|(a, _), (b, _)| b.cmp(a));
    for (rel, mut entry) in directories {
        unpack_checked(&mut entry, &dir, &rel)?;
    }
    Ok(checker.summary)
}

/// `tar`'s own `unpack_in` (which also refuses anything landing outside `dir` through a
/// link on disk), with a skipped entry turned into a refusal.
fn unpack_checked<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    dir: &Path,
    rel: &Path,
) -> Result<(), ArchiveError> {
    match entry.unpack_in(dir) {
        Ok(true) => Ok(()),
        Ok(false) => Err(ArchiveError::Escape {
            entry: rel.display().to_string(),
            why: "it would land outside the directory",
        }),
        Err(e) if e.to_string().contains("outside of") => Err(ArchiveError::Escape {
            entry: rel.display().to_string(),
            why: "it would be written through a symbolic link",
        }),
        Err(e) => Err(ArchiveError::Io(e)),
    }
}

/// Copies the archive `read` into `out` entry by entry, refusing it at the first entry
/// [`validate_archive`] would refuse, with names normalized (no `./`), setuid, setgid and
/// sticky bits dropped and the root entry left out. What the docker driver uploads.
pub fn harden<W: Write>(read: impl Read, out: W) -> Result<(ArchiveSummary, W), ArchiveError> {
    let mut archive = tar::Archive::new(read);
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    let mut checker = Checker::default();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let Checked::Keep { rel, link } = checker.check(&entry)? else {
            continue;
        };
        let kind = entry.header().entry_type();
        let mut header = copied_header(entry.header(), kind);
        header.set_mode(header.mode().unwrap_or(0o644) & KEPT_MODE_BITS);
        if kind.is_dir() {
            tar.append_data(&mut header, &rel, io::empty())?;
        } else if kind.is_symlink() {
            let target = entry.link_name()?.unwrap_or_default().into_owned();
            tar.append_link(&mut header, &rel, target)?;
        } else if let Some(target) = link {
            tar.append_link(&mut header, &rel, target)?;
        } else {
            header.set_size(entry.size());
            tar.append_data(&mut header, &rel, &mut entry)?;
        }
    }
    let out = tar.into_inner()?;
    Ok((checker.summary, out))
}

/// [`harden`] over a pod's byte stream, off the async runtime (see [`blocking_stream`]):
/// the archive comes out as it is read; a refused one ends the stream with the refusal
/// (the entries before it were checked too). Dropping the returned stream stops the copy.
pub fn hardened_stream(input: super::driver::ByteStream) -> super::driver::ByteStream {
    use super::driver::DriverError;
    blocking_stream(input, |read, out| {
        harden(read, out)
            .map(drop)
            .map_err(|e| DriverError::Refused(e.to_string()))
    })
}

/// Runs `copy` from a pod's byte stream to a new one on a blocking thread, reading
/// through `tokio_util::io::SyncIoBridge`: what it writes comes out as it is written (in
/// 64 KiB chunks); an error it returns ends the stream. Dropping the returned stream stops
/// the copy at its next write.
pub fn blocking_stream<F>(input: super::driver::ByteStream, copy: F) -> super::driver::ByteStream
where
    F: FnOnce(&mut dyn Read, &mut dyn Write) -> Result<(), super::driver::DriverError>
        + Send
        + 'static,
{
    use super::driver::DriverError;
    use futures::{StreamExt, TryStreamExt};
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, DriverError>>(4);
    let reader =
        tokio_util::io::StreamReader::new(input.map_err(|e| io::Error::other(e.to_string())));
    let mut bridge = tokio_util::io::SyncIoBridge::new(reader);
    let mut writer = ChannelWriter {
        tx: tx.clone(),
        buf: Vec::new(),
    };
    // Owned by the returned stream: when it is dropped, the next send fails and the copy
    // ends with an error nobody reads.
    tokio::task::spawn_blocking(move || {
        let result = copy(&mut bridge, &mut writer).and_then(|()| Ok(writer.flush()?));
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(e));
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx).boxed()
}

/// A `Write` sending 64 KiB chunks to a channel (from a blocking thread).
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, super::driver::DriverError>>,
    buf: Vec<u8>,
}

const CHANNEL_CHUNK: usize = 64 * 1024;

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHANNEL_CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::take(&mut self.buf));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the reader went away"))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// One entry of a test archive.
    pub(crate) enum Item<'a> {
        File(&'a str, &'a [u8], u32),
        Dir(&'a str),
        Symlink(&'a str, &'a str),
        HardLink(&'a str, &'a str),
    }

    /// Builds a tar; names are written raw, so hostile names (`../x`, `/etc/x`) survive.
    pub(crate) fn tar_of(items: &[Item<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for item in items {
            let mut h = Header::new_gnu();
            let (name, data): (&str, &[u8]) = match item {
                Item::File(name, data, mode) => {
                    h.set_entry_type(EntryType::Regular);
                    h.set_mode(*mode);
                    (name, data)
                }
                Item::Dir(name) => {
                    h.set_entry_type(EntryType::Directory);
                    h.set_mode(0o755);
                    (name, &[])
                }
                Item::Symlink(name, target) | Item::HardLink(name, target) => {
                    let kind = if matches!(item, Item::Symlink(..)) {
                        EntryType::Symlink
                    } else {
                        EntryType::Link
                    };
                    h.set_entry_type(kind);
                    h.set_mode(0o777);
                    h.set_link_name(target).expect("short link name");
                    (name, &[])
                }
            };
            let raw = h.as_old_mut();
            raw.name = [0; 100];
            raw.name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_size(data.len() as u64);
            h.set_mtime(1_600_000_000);
            h.set_cksum();
            b.append(&h, data).expect("append to a Vec");
        }
        b.into_inner().expect("finish a Vec")
    }

    /// What an archive holds: name → (kind, mode, mtime, content or link target).
    fn listing(tar: &[u8]) -> BTreeMap<String, (char, u32, u64, String)> {
        let mut a = tar::Archive::new(tar);
        let mut out = BTreeMap::new();
        for e in a.entries().expect("entries") {
            let mut e = e.expect("entry");
            let name = e.path().expect("path").display().to_string();
            let kind = e.header().entry_type();
            let h = e.header().clone();
            let (c, body) = if kind.is_dir() {
                ('d', String::new())
            } else if kind.is_symlink() || kind.is_hard_link() {
                let t = e.link_name().expect("link").expect("target");
                (
                    if kind.is_symlink() { 'l' } else { 'h' },
                    t.display().to_string(),
                )
            } else {
                let mut s = String::new();
                e.read_to_string(&mut s).expect("utf-8 body");
                ('f', s)
            };
            let mode = h.mode().expect("mode");
            out.insert(name, (c, mode, h.mtime().expect("mtime"), body));
        }
        out
    }

    fn names(tar: &[u8]) -> Vec<String> {
        listing(tar).into_keys().collect()
    }

    fn select(source: &[u8], paths: &[&str], dest: &str) -> (usize, Vec<u8>) {
        let mut w = ArchiveWriter::new(Vec::new());
        let paths: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
        let n = w.add_selected(source, &paths, dest).expect("add_selected");
        (n, w.finish().expect("finish"))
    }

    fn project() -> Vec<u8> {
        tar_of(&[
            Item::Dir("."),
            Item::File("README.md", b"readme", 0o644),
            Item::Dir("bin"),
            Item::File("bin/tool", b"#!/bin/sh", 0o755),
            Item::Dir("bin/extra"),
            Item::File("bin/extra/helper", b"help", 0o755),
            Item::Dir("src"),
            Item::File("src/main.rs", b"fn main() {}", 0o644),
            Item::Dir("src/net"),
            Item::File("src/net/tcp.rs", b"tcp", 0o644),
            Item::File("src/net/notes.txt", b"notes", 0o644),
            Item::File("./build.rs", b"build", 0o644),
        ])
    }

    #[test]
    fn empty_paths_select_everything_but_the_root_entry() {
        let (n, out) = select(&project(), &[], "");
        assert_eq!(n, 11);
        assert_eq!(
            names(&out),
            [
                "README.md",
                "bin",
                "bin/extra",
                "bin/extra/helper",
                "bin/tool",
                "build.rs",
                "src",
                "src/main.rs",
                "src/net",
                "src/net/notes.txt",
                "src/net/tcp.rs",
            ]
        );
    }

    #[test]
    fn double_star_selects_everything() {
        let (_, all) = select(&project(), &[], "");
        let (_, out) = select(&project(), &["**"], "");
        assert_eq!(names(&out), names(&all));
    }

    #[test]
    fn star_in_a_bin_dir_selects_its_files_and_whole_subdirectories() {
        let bin = tar_of(&[
            Item::File("tool", b"t", 0o755),
            Item::File("other", b"o", 0o755),
            Item::Dir("sub"),
            Item::File("sub/deep", b"d", 0o644),
        ]);
        let (n, out) = select(&bin, &["*"], "bin");
        assert_eq!(n, 4);
        assert_eq!(
            names(&out),
            ["bin/other", "bin/sub", "bin/sub/deep", "bin/tool"]
        );
    }

    #[test]
    fn star_does_not_cross_segments_for_files() {
        let (_, out) = select(&project(), &["*.rs"], "");
        assert_eq!(names(&out), ["build.rs"]);
    }

    #[test]
    fn double_star_spans_zero_or_more_segments() {
        let (_, out) = select(&project(), &["src/**/*.rs"], "");
        assert_eq!(names(&out), ["src/main.rs", "src/net/tcp.rs"]);
    }

    #[test]
    fn question_mark_matches_one_character_of_a_segment() {
        let (_, out) = select(&project(), &["bin/too?", "src/?.rs"], "");
        assert_eq!(names(&out), ["bin/tool"]);
    }

    #[test]
    fn character_classes_and_alternatives_match() {
        let (_, out) = select(&project(), &["[bB]uild.rs", "src/net/{tcp.rs,udp.rs}"], "");
        assert_eq!(names(&out), ["build.rs", "src/net/tcp.rs"]);
    }

    #[test]
    fn a_pattern_naming_a_directory_selects_its_whole_tree() {
        let (_, out) = select(&project(), &["bin"], "");
        assert_eq!(
            names(&out),
            ["bin", "bin/extra", "bin/extra/helper", "bin/tool"]
        );
    }

    #[test]
    fn several_patterns_add_up() {
        let (_, out) = select(&project(), &["README.md", "src/net/*.txt"], "");
        assert_eq!(names(&out), ["README.md", "src/net/notes.txt"]);
    }

    #[test]
    fn dot_and_dot_slash_patterns_mean_everything() {
        let (n, _) = select(&project(), &["."], "");
        assert_eq!(n, 11);
        let (_, out) = select(&project(), &["./src/main.rs"], "");
        assert_eq!(names(&out), ["src/main.rs"]);
    }

    #[test]
    fn a_bad_pattern_is_an_error() {
        let mut w = ArchiveWriter::new(Vec::new());
        let err = w
            .add_selected(&project()[..], &["src/[".to_owned()], "")
            .expect_err("unclosed class");
        assert!(matches!(err, ArchiveError::BadPattern { .. }), "{err}");
    }

    #[test]
    fn dest_dir_prefixes_every_name() {
        let (_, out) = select(&project(), &["src/main.rs", "bin/tool"], "out/x");
        assert_eq!(names(&out), ["out/x/bin/tool", "out/x/src/main.rs"]);
        let (_, root) = select(&project(), &["bin/tool"], "./");
        assert_eq!(names(&root), ["bin/tool"]);
        let (_, dot) = select(&project(), &["bin/tool"], ".");
        assert_eq!(names(&dot), ["bin/tool"]);
    }

    /// Issue 10 (1): Agola's docs write `dest_dir: /bin/`; its toolbox archived under
    /// `bin/`, Cairn refused it.
    #[test]
    fn a_leading_slash_in_dest_dir_means_the_archive_root() {
        let (_, out) = select(&project(), &["tool"], "/bin/");
        assert!(names(&out).is_empty(), "no top-level `tool` in the project");
        let (_, out) = select(&project(), &["src/main.rs"], "/bin/");
        assert_eq!(names(&out), ["bin/src/main.rs"]);
        let (_, out) = select(&project(), &["bin/tool"], "/");
        assert_eq!(names(&out), ["bin/tool"]);
        let (_, out) = select(&project(), &["bin/tool"], "//out/./x/");
        assert_eq!(names(&out), ["out/x/bin/tool"]);
        assert_eq!(
            dest_prefix("/bin/").expect("root-relative"),
            Path::new("bin")
        );
        assert_eq!(dest_prefix("/").expect("the root"), Path::new(""));
    }

    #[test]
    fn dest_dir_must_stay_inside_the_root() {
        for bad in ["/../abs", "../up", "a/../../b", "/a/../b"] {
            let mut w = ArchiveWriter::new(Vec::new());
            let err = w
                .add_selected(&project()[..], &[], bad)
                .expect_err("refused dest dir");
            assert!(matches!(err, ArchiveError::BadDestDir(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn modes_mtimes_and_contents_are_kept() {
        let (_, out) = select(&project(), &["bin"], "ws");
        let l = listing(&out);
        assert_eq!(
            l["ws/bin/tool"],
            ('f', 0o755, 1_600_000_000, "#!/bin/sh".to_owned())
        );
        assert_eq!(l["ws/bin/extra"].0, 'd');
        assert_eq!(l["ws/bin/extra"].1, 0o755);
    }

    #[test]
    fn symlinks_are_kept_as_links_with_their_target() {
        let src = tar_of(&[
            Item::File("real", b"x", 0o644),
            Item::Symlink("rel", "real"),
            Item::Symlink("abs", "/usr/bin/env"),
        ]);
        let (n, out) = select(&src, &[], "d");
        assert_eq!(n, 3);
        let l = listing(&out);
        assert_eq!(l["d/rel"].0, 'l');
        assert_eq!(l["d/rel"].3, "real");
        assert_eq!(l["d/abs"].3, "/usr/bin/env");
    }

    #[test]
    fn hard_links_are_kept_only_with_their_target_and_renamed() {
        let src = tar_of(&[
            Item::File("a/orig", b"x", 0o644),
            Item::HardLink("a/copy", "a/orig"),
            Item::HardLink("b/copy", "a/orig"),
        ]);
        let (_, out) = select(&src, &["a"], "w");
        let l = listing(&out);
        assert_eq!(
            l["w/a/copy"],
            ('h', 0o777, 1_600_000_000, "w/a/orig".to_owned())
        );
        let (_, only_b) = select(&src, &["b"], "w");
        assert!(names(&only_b).is_empty());
    }

    #[test]
    fn escaping_entries_are_skipped_not_copied() {
        let src = tar_of(&[
            Item::File("../evil", b"x", 0o644),
            Item::File("/etc/passwd", b"x", 0o644),
            Item::File("ok/../../evil", b"x", 0o644),
            Item::File("fine", b"y", 0o644),
        ]);
        let (n, out) = select(&src, &[], "");
        assert_eq!(n, 1);
        assert_eq!(names(&out), ["fine"]);
    }

    #[test]
    fn several_sources_go_into_one_archive() {
        let mut w = ArchiveWriter::new(Vec::new());
        let a = tar_of(&[Item::File("x", b"1", 0o644)]);
        let b = tar_of(&[Item::File("y", b"2", 0o644)]);
        assert_eq!(w.add_selected(&a[..], &[], "one").expect("a"), 1);
        assert_eq!(w.add_selected(&b[..], &[], "two").expect("b"), 1);
        let out = w.finish().expect("finish");
        assert_eq!(names(&out), ["one/x", "two/y"]);
    }

    #[test]
    fn long_names_survive_rewriting() {
        let deep = format!("{}/file", "d".repeat(120));
        let mut b = tar::Builder::new(Vec::new());
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(2);
        b.append_data(&mut h, &deep, &b"hi"[..]).expect("long name");
        let src = b.into_inner().expect("finish");
        let (_, out) = select(&src, &["**/file"], "cache");
        assert_eq!(names(&out), [format!("cache/{deep}")]);
    }

    #[test]
    fn validate_counts_files_and_bytes() {
        let summary = validate_archive(&project()[..]).expect("valid");
        assert_eq!(
            summary,
            ArchiveSummary {
                files: 7,
                bytes: 44
            }
        );
    }

    #[test]
    fn validate_refuses_parent_and_absolute_names() {
        for name in ["../x", "/etc/x", "a/../../x"] {
            let tar = tar_of(&[Item::File("ok", b"", 0o644), Item::File(name, b"x", 0o644)]);
            let err = validate_archive(&tar[..]).expect_err("escaping entry");
            assert!(matches!(err, ArchiveError::Escape { .. }), "{name}: {err}");
        }
    }

    #[test]
    fn validate_refuses_entries_under_an_earlier_symlink() {
        let tar = tar_of(&[
            Item::Symlink("etc", "/etc"),
            Item::File("etc/passwd", b"x", 0o644),
        ]);
        let err = validate_archive(&tar[..]).expect_err("write through a link");
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }

    #[test]
    fn validate_accepts_symlinks_pointing_anywhere() {
        let tar = tar_of(&[
            Item::Symlink("python", "/usr/bin/python3"),
            Item::Symlink("up", "../x"),
        ]);
        assert_eq!(
            validate_archive(&tar[..]).expect("valid"),
            ArchiveSummary::default()
        );
    }

    #[test]
    fn validate_refuses_hard_links_leaving_the_root() {
        let tar = tar_of(&[Item::HardLink("shadow", "/etc/shadow")]);
        assert!(validate_archive(&tar[..]).is_err());
    }

    /// M4: the hardened extractor drops setuid/setgid/sticky bits and keeps the rest.
    #[test]
    fn extraction_drops_setuid_setgid_and_sticky_bits() {
        use std::os::unix::fs::PermissionsExt;
        let tar = tar_of(&[
            Item::Dir("bin"),
            Item::File("bin/suid", b"x", 0o4755),
            Item::File("bin/sgid", b"x", 0o2750),
            Item::File("bin/plain", b"x", 0o640),
        ]);
        let dir = tempfile::tempdir().expect("tempdir");
        let summary = extract(&tar[..], dir.path()).expect("extract");
        assert_eq!(summary.files, 3);
        let mode = |n: &str| {
            std::fs::metadata(dir.path().join(n))
                .expect("extracted")
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("bin/suid"), 0o755);
        assert_eq!(mode("bin/sgid"), 0o750);
        assert_eq!(mode("bin/plain"), 0o640);

        let (_, out) = harden(&tar[..], Vec::new()).expect("harden");
        let l = listing(&out);
        assert_eq!(l["bin/suid"].1, 0o755);
        assert_eq!(l["bin/sgid"].1, 0o750);
    }

    /// M4: escaping entries refuse the archive (they used to be silently dropped).
    #[test]
    fn extraction_refuses_escaping_entries_and_devices() {
        let outside = tempfile::tempdir().expect("tempdir");
        for (items, why) in [
            (vec![Item::File("../evil", b"x", 0o644)], "`..`"),
            (vec![Item::File("/abs/evil", b"x", 0o644)], "`..`"),
            (
                vec![
                    Item::Symlink("link", outside.path().to_str().expect("utf-8")),
                    Item::File("link/evil", b"x", 0o644),
                ],
                "symbolic link",
            ),
            (vec![Item::HardLink("h", "/etc/passwd")], "hard link"),
        ] {
            let tar = tar_of(&items);
            let dir = tempfile::tempdir().expect("tempdir");
            let e = extract(&tar[..], dir.path()).expect_err("refused");
            assert!(e.to_string().contains(why), "{e}");
            let e = harden(&tar[..], Vec::new()).expect_err("refused");
            assert!(e.to_string().contains(why), "{e}");
        }
        assert!(!outside.path().join("evil").exists());
        let mut fifo = Header::new_gnu();
        fifo.set_entry_type(EntryType::Fifo);
        fifo.set_size(0);
        let mut b = tar::Builder::new(Vec::new());
        b.append_data(&mut fifo, "pipe", io::empty())
            .expect("append");
        let tar = b.into_inner().expect("finish");
        let dir = tempfile::tempdir().expect("tempdir");
        let e = extract(&tar[..], dir.path()).expect_err("fifo");
        assert!(matches!(e, ArchiveError::Unsupported { .. }), "{e}");
    }

    /// An existing symbolic link in the destination is not written through.
    #[test]
    fn extraction_never_writes_through_a_link_on_disk() {
        let outside = tempfile::tempdir().expect("tempdir");
        let dir = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink(outside.path(), dir.path().join("out")).expect("symlink");
        let tar = tar_of(&[Item::File("out/evil", b"x", 0o644)]);
        assert!(extract(&tar[..], dir.path()).is_err());
        assert!(!outside.path().join("evil").exists());
    }

    #[test]
    fn hardened_archives_extract_like_the_original() {
        let (_, out) = harden(&project()[..], Vec::new()).expect("harden");
        let mut want = names(&project());
        want.retain(|n| n != "." && n != "./" && n != "./build.rs");
        want.push("build.rs".into());
        want.sort();
        assert_eq!(names(&out), want);
        let dir = tempfile::tempdir().expect("tempdir");
        extract(&out[..], dir.path()).expect("extract");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("bin/tool")).expect("file"),
            "#!/bin/sh"
        );
    }

    #[test]
    fn relative_entry_names_are_normalized() {
        let n = |s: &str| relative_entry_name(Path::new(s)).map(|p| p.display().to_string());
        assert_eq!(n("./a/./b/"), Some("a/b".to_owned()));
        assert_eq!(n("."), Some(String::new()));
        assert_eq!(n("/a"), None);
        assert_eq!(n("a/../b"), None);
    }
}
