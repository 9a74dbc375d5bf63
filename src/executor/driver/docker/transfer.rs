//! Files in and out of container 0 through the Engine's archive API (so images need no
//! `tar`): `/etc/passwd` read out, directories made with their owner, archives uploaded
//! after the hardened copy of `executor::archive` (refusing escaping entries, dropping
//! setuid bits) with every entry given the step's owner, and archives downloaded with
//! entry names made relative to the path asked for.

use bollard::query_parameters::{
    ContainerArchiveInfoOptionsBuilder, DownloadFromContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};

use super::passwd::Owner;
use super::pod::DockerPod;
use super::{engine, status};
use crate::executor::driver::{ByteStream, DriverError};

impl DockerPod {
    /// Container 0's `/etc/passwd` (empty when it has none).
    pub(super) async fn passwd(&self) -> Result<String, DriverError> {
        let options = DownloadFromContainerOptionsBuilder::new()
            .path("/etc/passwd")
            .build();
        let archive: Vec<u8> = match self
            .docker
            .download_from_container(self.main(), Some(options))
            .try_fold(Vec::new(), |mut all, chunk| async move {
                all.extend_from_slice(&chunk);
                Ok(all)
            })
            .await
        {
            Ok(archive) => archive,
            Err(e) if status(&e) == Some(404) => return Ok(String::new()),
            Err(e) => return Err(engine(e)),
        };
        Ok(first_file(&archive)
            .map(|data| String::from_utf8_lossy(data).into_owned())
            .unwrap_or_default())
    }

    /// Whether `path` exists in container 0.
    async fn exists(&self, path: &str) -> Result<bool, DriverError> {
        let options = ContainerArchiveInfoOptionsBuilder::new().path(path).build();
        match self
            .docker
            .get_container_archive_info(self.main(), Some(options))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if status(&e) == Some(404) => Ok(false),
            Err(e) => Err(engine(e)),
        }
    }

    /// Creates the directory `dest` and its missing parents, owned by `owner`, leaving
    /// existing directories untouched.
    pub(super) async fn make_dir(&self, dest: &str, owner: Owner) -> Result<(), DriverError> {
        let mut missing = Vec::new();
        let mut existing = dest.trim_end_matches('/');
        while !existing.is_empty() && !self.exists(existing).await? {
            let (parent, name) = existing.rsplit_once('/').unwrap_or(("", existing));
            missing.push(name);
            existing = parent;
        }
        if missing.is_empty() {
            return Ok(());
        }
        missing.reverse();
        let archive = directory_archive(&missing, owner);
        let parent = if existing.is_empty() { "/" } else { existing };
        self.upload(parent, stream::iter([Ok(Bytes::from(archive))]).boxed())
            .await
    }

    async fn upload(&self, dest: &str, tar: ByteStream) -> Result<(), DriverError> {
        let options = UploadToContainerOptionsBuilder::new().path(dest).build();
        let body = bollard::body_try_stream(tar.map_err(std::io::Error::other));
        self.docker
            .upload_to_container(self.main(), Some(options), body)
            .await
            .map_err(|e| match status(&e) {
                Some(404) => DriverError::NotFound(dest.to_string()),
                _ => engine(e),
            })
    }

    /// Uploads `tar` under `dest` (which exists), every entry owned by `owner`, after the
    /// hardened copy: an archive it refuses is refused here with its reason.
    pub(super) async fn upload_owned(
        &self,
        dest: &str,
        owner: Owner,
        tar: ByteStream,
    ) -> Result<(), DriverError> {
        let rewrite = Rewrite {
            strip_root: false,
            owner: Some(owner),
        };
        // Refuses escaping entries and drops setuid/setgid bits before the Engine sees
        // the archive (security review M4).
        let refusal = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
        let seen = refusal.clone();
        let tar = crate::executor::archive::hardened_stream(tar)
            .inspect_err(move |e| {
                if let Ok(mut slot) = seen.lock() {
                    slot.get_or_insert_with(|| e.to_string());
                }
            })
            .boxed();
        let uploaded = self.upload(dest, rewrite_stream(tar, rewrite)).await;
        match refusal.lock().ok().and_then(|mut slot| slot.take()) {
            Some(why) => Err(DriverError::Refused(why)),
            None => uploaded,
        }
    }

    /// The files under `path` as a tar whose entry names are relative to it; `NotFound`
    /// when it does not exist.
    pub(super) async fn download(&self, path: &str) -> Result<ByteStream, DriverError> {
        let options = DownloadFromContainerOptionsBuilder::new()
            .path(path)
            .build();
        let mut archive = self
            .docker
            .download_from_container(self.main(), Some(options))
            .boxed();
        // The Engine's answer (a 404 for a missing path) comes with the first poll.
        let first = match archive.next().await {
            Some(Err(e)) if status(&e) == Some(404) => {
                return Err(DriverError::NotFound(path.to_string()));
            }
            first => first.map(|r| r.map_err(engine)),
        };
        let archive = stream::iter(first).chain(archive.map_err(engine)).boxed();
        let rewrite = Rewrite {
            strip_root: true,
            owner: None,
        };
        Ok(rewrite_stream(archive, rewrite))
    }
}

/// Applies a [`TarRewriter`] to a stream of tar bytes.
fn rewrite_stream(input: ByteStream, rewrite: Rewrite) -> ByteStream {
    let rewriter = TarRewriter::new(rewrite);
    stream::unfold(Some((input, rewriter)), |state| async move {
        let (mut input, mut rewriter) = state?;
        match input.next().await {
            Some(Ok(chunk)) => match rewriter.push(&chunk) {
                Ok(out) => Some((Ok(Bytes::from(out)), Some((input, rewriter)))),
                Err(e) => Some((Err(e.into()), None)),
            },
            Some(Err(e)) => Some((Err(e), None)),
            None => rewriter.finish().err().map(|e| (Err(e.into()), None)),
        }
    })
    .try_filter(|chunk| futures::future::ready(!chunk.is_empty()))
    .boxed()
}

// ---------------------------------------------------------------------------------------
// Tar archives, as far as this driver needs them: a streaming rewriter of entry names and
// owners (ustar, PAX and GNU long names), a directory-entries writer and a one-file
// reader. Pure code over bytes, no I/O.

pub(super) const BLOCK: usize = 512;

/// A malformed tar archive.
#[derive(Debug, thiserror::Error)]
#[error("malformed tar archive: {0}")]
pub(super) struct TarError(String);

impl From<TarError> for DriverError {
    fn from(e: TarError) -> Self {
        DriverError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}

/// What [`TarRewriter`] changes in each entry.
#[derive(Clone, Copy, Debug, Default)]
struct Rewrite {
    /// When the first entry is a directory, drop it and make the others' names (and hard
    /// link targets) relative to it. The Engine's archive of `/a/b` holds `b/`, `b/x`…
    strip_root: bool,
    /// Set every entry's numeric owner (and clear owner names).
    owner: Option<Owner>,
}

enum TarState {
    /// Expecting a header block.
    Header,
    /// Copying this many bytes of entry data (padding included).
    Copy(u64),
    /// Dropping this many bytes.
    Skip(u64),
    /// Collecting the data of a PAX (`x`) or GNU long name/link (`L`/`K`) header.
    Extended {
        kind: u8,
        size: usize,
        padded: usize,
    },
    /// After the end-of-archive block: everything passes through.
    Trailer,
}

/// What extended headers said about the next entry.
#[derive(Default)]
struct Pending {
    pax: PaxRecords,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

/// Rewrites a tar archive fed in arbitrary chunks, without holding more than one entry's
/// headers in memory.
struct TarRewriter {
    rewrite: Rewrite,
    state: TarState,
    buf: Vec<u8>,
    pending: Pending,
    /// `None` until the first entry; then the directory prefix to strip, if any.
    root: Option<Option<Vec<u8>>>,
}

impl TarRewriter {
    fn new(rewrite: Rewrite) -> Self {
        TarRewriter {
            rewrite,
            state: TarState::Header,
            buf: Vec::new(),
            pending: Pending::default(),
            root: None,
        }
    }

    /// Feeds the next chunk; returns the rewritten bytes ready so far.
    fn push(&mut self, input: &[u8]) -> Result<Vec<u8>, TarError> {
        self.buf.extend_from_slice(input);
        let mut out = Vec::with_capacity(self.buf.len() + BLOCK);
        let mut pos = 0;
        loop {
            let available = self.buf.len() - pos;
            match self.state {
                TarState::Trailer => {
                    out.extend_from_slice(&self.buf[pos..]);
                    pos = self.buf.len();
                    break;
                }
                TarState::Copy(left) | TarState::Skip(left) => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(available);
                    if matches!(self.state, TarState::Copy(_)) {
                        out.extend_from_slice(&self.buf[pos..pos + n]);
                    }
                    pos += n;
                    let left = left - n as u64;
                    self.state = match (left, &self.state) {
                        (0, _) => TarState::Header,
                        (_, TarState::Copy(_)) => TarState::Copy(left),
                        _ => TarState::Skip(left),
                    };
                    if left > 0 {
                        break;
                    }
                }
                TarState::Extended { kind, size, padded } => {
                    if available < padded {
                        break;
                    }
                    let data = &self.buf[pos..pos + size];
                    match kind {
                        b'x' => self.pending.pax.extend(parse_pax(data)?),
                        b'L' => self.pending.long_name = Some(c_string(data).to_vec()),
                        _ => self.pending.long_link = Some(c_string(data).to_vec()),
                    }
                    pos += padded;
                    self.state = TarState::Header;
                }
                TarState::Header => {
                    if available < BLOCK {
                        break;
                    }
                    let mut block = [0u8; BLOCK];
                    block.copy_from_slice(&self.buf[pos..pos + BLOCK]);
                    pos += BLOCK;
                    self.header(block, &mut out)?;
                }
            }
        }
        self.buf.drain(..pos);
        Ok(out)
    }

    /// Checks the archive did not stop in the middle of an entry.
    fn finish(&self) -> Result<(), TarError> {
        match self.state {
            TarState::Header | TarState::Trailer if self.buf.is_empty() => Ok(()),
            _ => Err(TarError("archive ends in the middle of an entry".into())),
        }
    }

    fn header(&mut self, mut block: [u8; BLOCK], out: &mut Vec<u8>) -> Result<(), TarError> {
        if block.iter().all(|b| *b == 0) {
            out.extend_from_slice(&block);
            self.state = TarState::Trailer;
            return Ok(());
        }
        let kind = block[156];
        let mut size = parse_number(&block[124..136])?;
        if !matches!(kind, b'x' | b'L' | b'K' | b'g')
            && let Some(v) = pax_value(&self.pending.pax, b"size")
        {
            size = parse_decimal(v)?;
        }
        let padded = padded(size);
        match kind {
            b'x' | b'L' | b'K' => {
                let size = usize::try_from(size)
                    .ok()
                    .filter(|s| *s <= 1 << 20)
                    .ok_or_else(|| TarError("extended header over 1 MiB".into()))?;
                self.state = TarState::Extended {
                    kind,
                    size,
                    padded: padded as usize,
                };
                return Ok(());
            }
            b'g' => {
                out.extend_from_slice(&block);
                self.state = TarState::Copy(padded);
                return Ok(());
            }
            _ => {}
        }
        let pending = std::mem::take(&mut self.pending);
        let mut name = match (pax_value(&pending.pax, b"path"), &pending.long_name) {
            (Some(p), _) => p.to_vec(),
            (None, Some(l)) => l.clone(),
            (None, None) => ustar_name(&block),
        };
        let mut link = match (pax_value(&pending.pax, b"linkpath"), &pending.long_link) {
            (Some(p), _) => p.to_vec(),
            (None, Some(l)) => l.clone(),
            (None, None) => c_string(&block[157..257]).to_vec(),
        };
        let root = self.root.get_or_insert_with(|| {
            (self.rewrite.strip_root && kind == b'5').then(|| trim_slashes(&name).to_vec())
        });
        if let Some(root) = root {
            let relative = strip_prefix(&name, root);
            if relative.is_empty() {
                self.state = TarState::Skip(padded);
                return Ok(());
            }
            name = relative.to_vec();
            if kind == b'1' {
                link = strip_prefix(&link, root).to_vec();
            }
        }
        let mut records: PaxRecords = pending
            .pax
            .into_iter()
            .filter(|(k, _)| {
                let owner_key = matches!(k.as_slice(), b"uid" | b"gid" | b"uname" | b"gname");
                !matches!(k.as_slice(), b"path" | b"linkpath")
                    && (!owner_key || self.rewrite.owner.is_none())
            })
            .collect();
        if let Some((uid, gid)) = self.rewrite.owner {
            for (field, id, key) in [(108..116, uid, b"uid"), (116..124, gid, b"gid")] {
                if !write_octal(&mut block[field], id) {
                    records.push((key.to_vec(), id.to_string().into_bytes()));
                }
            }
            block[265..329].fill(0);
        }
        if name.len() > 100 {
            records.push((b"path".to_vec(), name.clone()));
        }
        if link.len() > 100 {
            records.push((b"linkpath".to_vec(), link.clone()));
        }
        set_field(&mut block[0..100], &name);
        set_field(&mut block[157..257], &link);
        if &block[257..263] == b"ustar\0" {
            block[345..500].fill(0);
        }
        if !records.is_empty() {
            out.extend_from_slice(&pax_header(&records));
        }
        set_checksum(&mut block);
        out.extend_from_slice(&block);
        self.state = TarState::Copy(padded);
        Ok(())
    }
}

/// A tar of directory entries (`a/`, `a/b/`… for `["a", "b"]`), mode 0755, owned by
/// `owner`, followed by the end-of-archive blocks.
fn directory_archive(components: &[&str], owner: Owner) -> Vec<u8> {
    let mtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut out = Vec::new();
    let mut path = String::new();
    for component in components {
        path.push_str(component);
        path.push('/');
        let mut block = new_header(path.as_bytes(), b'5', 0o755, 0, mtime);
        let mut records = Vec::new();
        if path.len() > 100 {
            records.push((b"path".to_vec(), path.as_bytes().to_vec()));
        }
        for (field, id, key) in [(108..116, owner.0, b"uid"), (116..124, owner.1, b"gid")] {
            if !write_octal(&mut block[field], id) {
                records.push((key.to_vec(), id.to_string().into_bytes()));
            }
        }
        if !records.is_empty() {
            out.extend_from_slice(&pax_header(&records));
        }
        set_checksum(&mut block);
        out.extend_from_slice(&block);
    }
    out.extend_from_slice(&[0u8; 2 * BLOCK]);
    out
}

/// The data of the first regular file in a complete tar archive.
fn first_file(archive: &[u8]) -> Option<&[u8]> {
    let mut pos = 0;
    while pos + BLOCK <= archive.len() {
        let block = &archive[pos..pos + BLOCK];
        if block.iter().all(|b| *b == 0) {
            return None;
        }
        let size = usize::try_from(parse_number(&block[124..136]).ok()?).ok()?;
        let data = pos + BLOCK;
        if matches!(block[156], b'0' | 0) {
            return archive.get(data..data + size);
        }
        pos = data + padded(size as u64) as usize;
    }
    None
}

/// A header block (checksum not yet set) with ustar magic.
pub(super) fn new_header(name: &[u8], kind: u8, mode: u64, size: u64, mtime: u64) -> [u8; BLOCK] {
    let mut block = [0u8; BLOCK];
    set_field(&mut block[0..100], name);
    write_octal(&mut block[100..108], mode);
    write_octal(&mut block[108..116], 0);
    write_octal(&mut block[116..124], 0);
    write_octal(&mut block[124..136], size);
    write_octal(&mut block[136..148], mtime);
    block[156] = kind;
    block[257..263].copy_from_slice(b"ustar\0");
    block[263..265].copy_from_slice(b"00");
    block
}

/// A PAX extended header (header block and padded records) for the next entry.
pub(super) fn pax_header(records: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut data = Vec::new();
    for (key, value) in records {
        // "<len> <key>=<value>\n", where <len> counts its own digits.
        let rest = key.len() + value.len() + 3;
        let mut len = rest + 1;
        while len != rest + len.to_string().len() {
            len = rest + len.to_string().len();
        }
        data.extend_from_slice(format!("{len} ").as_bytes());
        data.extend_from_slice(key);
        data.push(b'=');
        data.extend_from_slice(value);
        data.push(b'\n');
    }
    let mut block = new_header(b"././@PaxHeader", b'x', 0o644, data.len() as u64, 0);
    set_checksum(&mut block);
    let mut out = block.to_vec();
    out.extend_from_slice(&data);
    out.resize(BLOCK + padded(data.len() as u64) as usize, 0);
    out
}

/// PAX `key=value` records, in order.
pub(super) type PaxRecords = Vec<(Vec<u8>, Vec<u8>)>;

pub(super) fn parse_pax(data: &[u8]) -> Result<PaxRecords, TarError> {
    let bad = || TarError("bad PAX record".into());
    let mut records = Vec::new();
    let mut rest = data;
    while !rest.is_empty() && rest[0] != 0 {
        let space = rest.iter().position(|b| *b == b' ').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|len| *len > space + 1 && *len <= rest.len())
            .ok_or_else(bad)?;
        let record = &rest[space + 1..len];
        let record = record.strip_suffix(b"\n").ok_or_else(bad)?;
        let eq = record.iter().position(|b| *b == b'=').ok_or_else(bad)?;
        records.push((record[..eq].to_vec(), record[eq + 1..].to_vec()));
        rest = &rest[len..];
    }
    Ok(records)
}

/// The last value of `key` (later records win).
pub(super) fn pax_value<'a>(records: &'a [(Vec<u8>, Vec<u8>)], key: &[u8]) -> Option<&'a [u8]> {
    records
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_slice())
}

pub(super) fn parse_decimal(v: &[u8]) -> Result<u64, TarError> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| TarError("bad PAX size".into()))
}

/// A numeric header field: octal text, or base-256 when its top bit is set.
pub(super) fn parse_number(field: &[u8]) -> Result<u64, TarError> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        return Ok(field[1..]
            .iter()
            .fold(u64::from(field[0] & 0x7f), |n, b| (n << 8) | u64::from(*b)));
    }
    let text = std::str::from_utf8(field).map_err(|_| TarError("bad number".into()))?;
    let text = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 8).map_err(|_| TarError(format!("bad number {text:?}")))
}

/// Writes `n` as zero-padded octal with a NUL; false when it does not fit.
pub(super) fn write_octal(field: &mut [u8], n: u64) -> bool {
    let digits = field.len() - 1;
    let text = format!("{n:0digits$o}");
    if text.len() > digits {
        field.fill(0);
        field[..digits].fill(b'0');
        return false;
    }
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
    true
}

pub(super) fn set_field(field: &mut [u8], value: &[u8]) {
    field.fill(0);
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

pub(super) fn set_checksum(block: &mut [u8; BLOCK]) {
    block[148..156].fill(b' ');
    let sum: u32 = block.iter().map(|b| u32::from(*b)).sum();
    block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// The entry name of a ustar (or older) header: `prefix/name` when the prefix is set.
pub(super) fn ustar_name(block: &[u8; BLOCK]) -> Vec<u8> {
    let name = c_string(&block[0..100]);
    let prefix = c_string(&block[345..500]);
    if &block[257..263] == b"ustar\0" && !prefix.is_empty() {
        [prefix, b"/", name].concat()
    } else {
        name.to_vec()
    }
}

/// The bytes before the first NUL.
pub(super) fn c_string(field: &[u8]) -> &[u8] {
    field
        .iter()
        .position(|b| *b == 0)
        .map_or(field, |end| &field[..end])
}

fn trim_slashes(name: &[u8]) -> &[u8] {
    let mut name = name;
    while let Some(rest) = name.strip_prefix(b"./") {
        name = rest;
    }
    while let Some(rest) = name.strip_suffix(b"/") {
        name = rest;
    }
    name
}

/// `name` relative to the directory `root` (empty for `root` itself); unchanged when not
/// under it.
fn strip_prefix<'a>(name: &'a [u8], root: &[u8]) -> &'a [u8] {
    let trimmed = {
        let mut n = name;
        while let Some(rest) = n.strip_prefix(b"./") {
            n = rest;
        }
        n
    };
    if trim_slashes(trimmed) == root {
        return &[];
    }
    match trimmed.strip_prefix(root) {
        Some(rest) if rest.starts_with(b"/") => &rest[1..],
        _ => name,
    }
}

/// `size` rounded up to whole blocks.
pub(super) fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK as u64) * BLOCK as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::driver::ExecRequest;
    use crate::executor::driver::docker::DockerOptions;
    use crate::executor::driver::docker::testbed::{
        archive, bytes_stream, collect, container, engine, entries, long_name, run, sh,
    };

    /// Feeds `input` to a rewriter in chunks of `chunk` bytes.
    fn rewrite_in_chunks(input: &[u8], rewrite: Rewrite, chunk: usize) -> Vec<u8> {
        let mut rewriter = TarRewriter::new(rewrite);
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            out.extend(rewriter.push(piece).expect("a valid archive"));
        }
        rewriter.finish().expect("a complete archive");
        out
    }

    #[test]
    fn engine_archives_get_names_relative_to_the_path_asked_for() {
        let long = long_name("ws");
        let input = archive(&[
            ("ws/", b'5', "", b""),
            ("ws/a.txt", b'0', "", b"alpha"),
            ("ws/d/", b'5', "", b""),
            ("ws/d/b.txt", b'0', "", &[7u8; 1500]),
            ("ws/d/hard", b'1', "ws/a.txt", b""),
            ("ws/d/soft", b'2', "../a.txt", b""),
            (&long, b'0', "", b"deep"),
        ]);
        let rewrite = Rewrite {
            strip_root: true,
            owner: None,
        };
        for chunk in [1, 7, 511, 512, 513, 4096, input.len()] {
            let got = entries(&rewrite_in_chunks(&input, rewrite, chunk));
            let names: Vec<&str> = got.iter().map(|e| e.name.as_str()).collect();
            assert_eq!(
                names,
                [
                    "a.txt",
                    "d/",
                    "d/b.txt",
                    "d/hard",
                    "d/soft",
                    &long["ws/".len()..]
                ],
                "chunk {chunk}"
            );
            assert_eq!(got[0].data, b"alpha");
            assert_eq!(got[2].data, vec![7u8; 1500]);
            assert_eq!(got[3].link, "a.txt", "hard links point inside the archive");
            assert_eq!(got[4].link, "../a.txt", "symlink targets are left alone");
            assert_eq!(got[5].data, b"deep");
            assert_eq!(got[0].uid, 1000, "owners are kept unless asked");
        }
    }

    #[test]
    fn an_archive_of_a_single_file_keeps_its_name() {
        let input = archive(&[("passwd", b'0', "", b"root:x:0:0::/root:/bin/sh\n")]);
        let got = entries(&rewrite_in_chunks(
            &input,
            Rewrite {
                strip_root: true,
                owner: None,
            },
            100,
        ));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].name, "passwd");
    }

    #[test]
    fn gnu_long_names_become_pax_records() {
        let long = long_name("ws");
        let mut input = Vec::new();
        let mut block = new_header(b"././@LongLink", b'L', 0o644, long.len() as u64 + 1, 0);
        set_checksum(&mut block);
        input.extend_from_slice(&block);
        let mut name = long.clone().into_bytes();
        name.push(0);
        name.resize(padded(name.len() as u64) as usize, 0);
        input.extend_from_slice(&name);
        let rest = archive(&[(&long[..100], b'0', "", b"x")]);
        input.extend_from_slice(&rest);
        let mut with_root = archive(&[("ws/", b'5', "", b"")]);
        with_root.truncate(BLOCK);
        with_root.extend_from_slice(&input);

        let got = entries(&rewrite_in_chunks(
            &with_root,
            Rewrite {
                strip_root: true,
                owner: None,
            },
            64,
        ));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].name, long["ws/".len()..]);
        assert_eq!(got[0].data, b"x");
    }

    #[test]
    fn uploaded_entries_get_the_owner_asked_for() {
        let input = archive(&[("a/", b'5', "", b""), ("a/f", b'0', "", b"f")]);
        let rewrite = Rewrite {
            strip_root: false,
            owner: Some((65534, 65534)),
        };
        let output = rewrite_in_chunks(&input, rewrite, 300);
        let got = entries(&output);
        assert_eq!(
            got.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["a/", "a/f"]
        );
        assert!(got.iter().all(|e| (e.uid, e.gid) == (65534, 65534)));
        assert_eq!(c_string(&output[265..297]), b"", "owner names are cleared");

        let huge = Rewrite {
            strip_root: false,
            owner: Some((1 << 40, 5)),
        };
        let got = entries(&rewrite_in_chunks(&input, huge, 300));
        assert_eq!(
            (got[1].uid, got[1].gid),
            (1 << 40, 5),
            "ids too big for octal go to PAX"
        );
    }

    #[test]
    fn a_truncated_archive_is_an_error() {
        let input = archive(&[("f", b'0', "", &[1u8; 2000])]);
        let mut rewriter = TarRewriter::new(Rewrite::default());
        rewriter.push(&input[..1000]).expect("a valid start");
        assert!(rewriter.finish().is_err());
    }

    #[test]
    fn directory_archives_create_each_missing_component() {
        let got = entries(&directory_archive(&["work", "ws"], (65534, 100)));
        assert_eq!(
            got.iter()
                .map(|e| (e.name.as_str(), e.kind, e.uid, e.gid))
                .collect::<Vec<_>>(),
            [("work/", b'5', 65534, 100), ("work/ws/", b'5', 65534, 100)]
        );
        let long = "x".repeat(120);
        let got = entries(&directory_archive(&[&long], (0, 0)));
        assert_eq!(got[0].name, format!("{long}/"));
    }

    #[test]
    fn pax_record_lengths_count_their_own_digits() {
        for len in 80..120 {
            let value = vec![b'v'; len];
            let header = pax_header(&[(b"path".to_vec(), value.clone())]);
            let size = parse_number(&header[124..136]).expect("size") as usize;
            let records = parse_pax(&header[BLOCK..BLOCK + size]).expect("valid records");
            assert_eq!(records, [(b"path".to_vec(), value)]);
        }
    }

    #[test]
    fn the_first_file_of_an_archive_is_read_through_pax_headers() {
        let mut input = pax_header(&[(b"mtime".to_vec(), b"1.5".to_vec())]);
        input.extend(archive(&[(
            "passwd",
            b'0',
            "",
            b"root:x:0:0::/root:/bin/sh\n",
        )]));
        assert_eq!(
            first_file(&input),
            Some(&b"root:x:0:0::/root:/bin/sh\n"[..])
        );
        assert_eq!(first_file(&archive(&[("d/", b'5', "", b"")])), None);
    }

    #[tokio::test]
    async fn workspace_and_cache_archives_round_trip() {
        let Some(engine) = engine(DockerOptions::default()).await else {
            return;
        };
        let pod = engine.pod(vec![container("")]).await;
        let long = long_name("d");
        let tree = archive(&[
            ("d/", b'5', "", b""),
            ("d/a.txt", b'0', "", b"alpha"),
            ("top.txt", b'0', "", &[9u8; 3000]),
            (&long, b'0', "", b"deep"),
        ]);
        pod.put_archive("/work/ws", "nobody", bytes_stream(tree))
            .await
            .expect("the workspace is restored");

        let got =
            entries(&collect(pod.get_archive("/work/ws").await.expect("the workspace")).await);
        let mut files: Vec<(&str, &[u8])> = got
            .iter()
            .filter(|e| e.kind == b'0')
            .map(|e| (e.name.as_str(), e.data.as_slice()))
            .collect();
        files.sort();
        let mut want: Vec<(&str, &[u8])> = vec![
            ("d/a.txt", b"alpha"),
            ("top.txt", &[9u8; 3000]),
            (&long, b"deep"),
        ];
        want.sort();
        assert_eq!(files, want);
        assert!(got.iter().any(|e| e.name == "d/" && e.kind == b'5'));
        // Entries of the archive get the user; parents it does not list (the long
        // name's) are made by the Engine as root.
        let owners: Vec<(&str, u64, u64)> = got
            .iter()
            .map(|e| (e.name.as_str(), e.uid, e.gid))
            .collect();
        assert!(
            got.iter()
                .filter(|e| e.kind == b'0' || e.name == "d/")
                .all(|e| (e.uid, e.gid) == (65534, 65534)),
            "owned by the user: {owners:?}"
        );

        let (code, output) = run(
            pod.as_ref(),
            ExecRequest {
                cmd: sh("stat -c '%U %a' /work /work/ws; echo more > /work/ws/d/a.txt"),
                working_dir: "/".into(),
                user: "nobody".into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(
            (code, output.as_str()),
            (Some(0), "nobody 755\nnobody 755\n"),
            "the user owns and can write what was restored"
        );

        // A cache of one subdirectory.
        let cache =
            entries(&collect(pod.get_archive("/work/ws/d").await.expect("the cache")).await);
        let names: Vec<&str> = cache.iter().map(|e| e.name.as_str()).collect();
        assert!(
            names.contains(&"a.txt") && names.iter().all(|n| !n.starts_with("d/")),
            "{names:?}"
        );
        pod.remove().await;
    }
}
