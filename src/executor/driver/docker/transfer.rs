//! Files in and out of container 0 through the Engine's archive API (so images need no
//! `tar`): `/etc/passwd` read out, missing directories made with their owner, archives
//! uploaded after the hardened copy of `executor::archive` (refusing escaping entries,
//! dropping setuid bits) with every entry given the step's owner, and archives downloaded
//! with entry names made relative to the path asked for.
//!
//! Archives are read and written by the `tar` crate, streamed on a blocking thread
//! (`archive::blocking_stream`): one entry's headers in memory at a time, never a whole
//! archive (but `/etc/passwd`'s).

use std::borrow::Cow;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use bollard::query_parameters::{
    ContainerArchiveInfoOptionsBuilder, DownloadFromContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use tar::{EntryType, Header};

use super::passwd::Owner;
use super::pod::DockerPod;
use super::status;
use crate::executor::archive;
use crate::executor::driver::{ByteStream, DriverError};

/// The most of `/etc/passwd` (with its tar framing) read into memory: an image, or a step
/// before the lookup, can make the file any size.
const MAX_PASSWD_ARCHIVE: usize = 4 << 20;

/// The whole of `input` in memory, or `None` as soon as it passes `max` bytes.
async fn read_bounded<E>(
    mut input: impl futures::Stream<Item = Result<Bytes, E>> + Unpin,
    max: usize,
) -> Result<Option<Vec<u8>>, E> {
    let mut all = Vec::new();
    while let Some(chunk) = input.next().await {
        let chunk = chunk?;
        if all.len() + chunk.len() > max {
            return Ok(None);
        }
        all.extend_from_slice(&chunk);
    }
    Ok(Some(all))
}

impl DockerPod {
    /// Container 0's `/etc/passwd` (empty when it has none).
    pub(super) async fn passwd(&self) -> Result<String, DriverError> {
        let options = DownloadFromContainerOptionsBuilder::new()
            .path("/etc/passwd")
            .build();
        let download = self
            .docker
            .download_from_container(self.main(), Some(options));
        let archive = match read_bounded(download, MAX_PASSWD_ARCHIVE).await {
            Ok(Some(archive)) => archive,
            Ok(None) => {
                return Err(DriverError::Refused(format!(
                    "/etc/passwd in the task's first container is over {MAX_PASSWD_ARCHIVE} bytes"
                )));
            }
            Err(e) if status(&e) == Some(404) => return Ok(String::new()),
            Err(e) => return Err(DriverError::Engine(e)),
        };
        Ok(first_file(&archive)
            .map(|data| String::from_utf8_lossy(&data).into_owned())
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
            Err(e) => Err(DriverError::Engine(e)),
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
        let archive = directory_archive(&missing, owner)?;
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
                _ => DriverError::Engine(e),
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
        let changes = Rewrite {
            strip_root: false,
            owner: Some(owner),
        };
        // Refuses escaping entries and drops setuid/setgid bits before the Engine sees
        // the archive (security review M4).
        let refusal = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
        let seen = refusal.clone();
        let tar = archive::hardened_stream(tar)
            .inspect_err(move |e| {
                if let Ok(mut slot) = seen.lock() {
                    slot.get_or_insert_with(|| e.to_string());
                }
            })
            .boxed();
        let uploaded = self.upload(dest, rewrite_stream(tar, changes)).await;
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
            first => first.map(|r| r.map_err(DriverError::Engine)),
        };
        let archive = stream::iter(first)
            .chain(archive.map_err(DriverError::Engine))
            .boxed();
        let changes = Rewrite {
            strip_root: true,
            owner: None,
        };
        Ok(rewrite_stream(archive, changes))
    }
}

/// What [`rewrite`] changes in each entry.
#[derive(Clone, Copy, Debug, Default)]
struct Rewrite {
    /// When the first entry is a directory, drop it and make the others' names (and hard
    /// link targets) relative to it. The Engine's archive of `/a/b` holds `b/`, `b/x`…
    strip_root: bool,
    /// Set every entry's numeric owner (and clear owner names).
    owner: Option<Owner>,
}

/// [`rewrite`] over a stream of tar bytes, on a blocking thread (see
/// [`archive::blocking_stream`]); an archive it cannot read ends the stream with an error.
fn rewrite_stream(input: ByteStream, changes: Rewrite) -> ByteStream {
    archive::blocking_stream(input, move |read, out| {
        rewrite(read, out, changes)
            .map(drop)
            .map_err(DriverError::Io)
    })
}

/// Copies the archive `read` to `out` entry by entry (one entry's headers in memory, data
/// streamed), with the changes `changes` asks for. Everything else of an entry is kept:
/// its kind, mode, mtime, device numbers and, unless replaced, its owner; its PAX records
/// too, but for the name and link ones (written again as the `tar` crate does for long
/// names). PAX global headers pass through. GNU sparse entries are refused: the Engine
/// never writes them.
fn rewrite<W: Write>(read: impl Read, out: W, changes: Rewrite) -> io::Result<W> {
    let mut archive = tar::Archive::new(read);
    let mut tar = tar::Builder::new(out);
    // `None` until the first entry; then the directory prefix to strip, if any.
    let mut root: Option<Option<Vec<u8>>> = None;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            let header = entry.header().clone();
            tar.append(&header, &mut entry)?;
            continue;
        }
        if kind.is_gnu_sparse() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "GNU sparse entries are not supported",
            ));
        }
        let mut name = entry.path_bytes().into_owned();
        let mut link = entry.link_name_bytes().map(Cow::into_owned);
        let root = root.get_or_insert_with(|| {
            (changes.strip_root && kind.is_dir()).then(|| trim_slashes(&name).to_vec())
        });
        if let Some(root) = root {
            let relative = strip_prefix(&name, root);
            if relative.is_empty() {
                continue;
            }
            name = relative.to_vec();
            if kind.is_hard_link() {
                link = link.map(|l| strip_prefix(&l, root).to_vec());
            }
        }
        let records = kept_pax_records(&mut entry, changes.owner.is_some())?;
        let mut header = copied_header(entry.header(), entry.size(), changes.owner)?;
        if !records.is_empty() {
            tar.append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
        }
        let path = Path::new(OsStr::from_bytes(&name));
        match link {
            Some(target) if !target.is_empty() && (kind.is_symlink() || kind.is_hard_link()) => {
                tar.append_link(&mut header, path, Path::new(OsStr::from_bytes(&target)))?;
            }
            _ => tar.append_data(&mut header, path, &mut entry)?,
        }
    }
    tar.into_inner()
}

/// The PAX records of `entry` that [`rewrite`] writes again: all but the name and link
/// ones, and but the owner ones when `new_owner`.
fn kept_pax_records<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    new_owner: bool,
) -> io::Result<Vec<(String, Vec<u8>)>> {
    let Some(records) = entry.pax_extensions()? else {
        return Ok(Vec::new());
    };
    let mut kept = Vec::new();
    for record in records {
        let record = record?;
        let key = record
            .key()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let owner_key = matches!(key, "uid" | "gid" | "uname" | "gname");
        let name_key = matches!(key, "path" | "linkpath");
        if !(name_key || owner_key && new_owner) {
            kept.push((key.to_string(), record.value_bytes().to_vec()));
        }
    }
    Ok(kept)
}

/// A GNU header of `from`'s kind, mode, mtime, device numbers and owner (`owner` instead,
/// with no owner names, when given), of `size` bytes; its name and link are set when it
/// is appended.
fn copied_header(from: &Header, size: u64, owner: Option<Owner>) -> io::Result<Header> {
    let kind = from.entry_type();
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    // Fields that do not parse (empty ones) are zero, as `archive::harden` reads them.
    let default_mode = if kind.is_dir() { 0o755 } else { 0o644 };
    header.set_mode(from.mode().unwrap_or(default_mode));
    header.set_mtime(from.mtime().unwrap_or(0));
    header.set_size(size);
    match owner {
        Some((uid, gid)) => {
            header.set_uid(uid);
            header.set_gid(gid);
        }
        None => {
            header.set_uid(from.uid().unwrap_or(0));
            header.set_gid(from.gid().unwrap_or(0));
            if let Some(Ok(name)) = from.username_bytes().map(std::str::from_utf8) {
                header.set_username(name)?;
            }
            if let Some(Ok(name)) = from.groupname_bytes().map(std::str::from_utf8) {
                header.set_groupname(name)?;
            }
        }
    }
    if matches!(kind, EntryType::Char | EntryType::Block)
        && let (Some(major), Some(minor)) = (from.device_major()?, from.device_minor()?)
    {
        header.set_device_major(major)?;
        header.set_device_minor(minor)?;
    }
    Ok(header)
}

/// A tar of directory entries (`a/`, `a/b/`… for `["a", "b"]`), mode 0755, owned by
/// `owner`, followed by the end-of-archive blocks.
fn directory_archive(components: &[&str], owner: Owner) -> io::Result<Vec<u8>> {
    let mtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut tar = tar::Builder::new(Vec::new());
    let mut path = String::new();
    for component in components {
        path.push_str(component);
        path.push('/');
        let mut header = Header::new_gnu();
        header.set_entry_type(EntryType::Directory);
        header.set_mode(0o755);
        header.set_uid(owner.0);
        header.set_gid(owner.1);
        header.set_mtime(mtime);
        header.set_size(0);
        tar.append_data(&mut header, &path, io::empty())?;
    }
    tar.into_inner()
}

/// The data of the first regular file in a complete tar archive.
fn first_file(archive: &[u8]) -> Option<Vec<u8>> {
    let mut archive = tar::Archive::new(archive);
    for entry in archive.entries().ok()? {
        let mut entry = entry.ok()?;
        if entry.header().entry_type().is_file() {
            let mut data = Vec::new();
            entry.read_to_end(&mut data).ok()?;
            return (data.len() as u64 == entry.size()).then_some(data);
        }
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::driver::ExecRequest;
    use crate::executor::driver::docker::DockerOptions;
    use crate::executor::driver::docker::testbed::{
        archive, bytes_stream, collect, container, engine, entries, long_name, run, sh,
    };

    /// A reader handing out at most `chunk` bytes a call, as a stream of chunks would.
    struct Chunked<'a> {
        data: &'a [u8],
        chunk: usize,
    }

    impl Read for Chunked<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.chunk.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// Rewrites `input` read in chunks of `chunk` bytes.
    fn rewrite_in_chunks(input: &[u8], changes: Rewrite, chunk: usize) -> Vec<u8> {
        let read = Chunked { data: input, chunk };
        rewrite(read, Vec::new(), changes).expect("a valid archive")
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

    /// GNU long-name entries in the input are understood (the name is historical: the
    /// hand-written rewriter turned them into PAX records; the `tar` crate writes long
    /// names back as GNU long-name entries).
    #[test]
    fn gnu_long_names_become_pax_records() {
        let long = long_name("ws");
        let mut tar = tar::Builder::new(Vec::new());
        let mut root = Header::new_gnu();
        root.set_entry_type(EntryType::Directory);
        root.set_mode(0o755);
        root.set_size(0);
        tar.append_data(&mut root, "ws/", io::empty())
            .expect("a directory");
        let mut file = Header::new_gnu();
        file.set_entry_type(EntryType::Regular);
        file.set_mode(0o644);
        file.set_size(1);
        // A GNU header has no prefix field: a name over 100 bytes takes an `L` entry.
        tar.append_data(&mut file, &long, &b"x"[..])
            .expect("a file");
        let with_root = tar.into_inner().expect("an archive");
        assert_eq!(
            with_root[512 + 156],
            b'L',
            "the fixture has a GNU long name"
        );

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
        assert!(
            entries(&input).iter().all(|e| e.uname == "someone"),
            "the fixture has owner names"
        );
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
        assert!(
            got.iter().all(|e| e.uname.is_empty() && e.gname.is_empty()),
            "owner names are cleared"
        );

        let huge = Rewrite {
            strip_root: false,
            owner: Some((1 << 40, 5)),
        };
        let got = entries(&rewrite_in_chunks(&input, huge, 300));
        assert_eq!(
            (got[1].uid, got[1].gid),
            (1 << 40, 5),
            "ids too big for octal are kept (base-256)"
        );
    }

    #[test]
    fn a_truncated_archive_is_an_error() {
        let input = archive(&[("f", b'0', "", &[1u8; 2000])]);
        assert!(rewrite(&input[..1000], Vec::new(), Rewrite::default()).is_err());
    }

    #[test]
    fn directory_archives_create_each_missing_component() {
        let got = entries(&directory_archive(&["work", "ws"], (65534, 100)).expect("an archive"));
        assert_eq!(
            got.iter()
                .map(|e| (e.name.as_str(), e.kind, e.uid, e.gid))
                .collect::<Vec<_>>(),
            [("work/", b'5', 65534, 100), ("work/ws/", b'5', 65534, 100)]
        );
        let long = "x".repeat(120);
        let got = entries(&directory_archive(&[&long], (0, 0)).expect("an archive"));
        assert_eq!(got[0].name, format!("{long}/"));
    }

    /// PAX records around the lengths where a record's length gains a digit survive the
    /// rewrite: the name read from a `path` record, and the others written again.
    #[test]
    fn pax_record_lengths_count_their_own_digits() {
        for len in 80..120 {
            let value = vec![b'v'; len];
            let mut tar = tar::Builder::new(Vec::new());
            tar.append_pax_extensions([("path", &value[..]), ("comment", &value[..])])
                .expect("pax records");
            let mut header = Header::new_ustar();
            header.set_entry_type(EntryType::Regular);
            header.set_mode(0o644);
            header.set_size(0);
            header.as_old_mut().name[..80].copy_from_slice(&value[..80]);
            header.set_cksum();
            tar.append(&header, io::empty()).expect("an entry");
            let input = tar.into_inner().expect("an archive");

            let output = rewrite_in_chunks(&input, Rewrite::default(), 4096);
            let mut archive = tar::Archive::new(&output[..]);
            let mut entry = archive
                .entries()
                .expect("entries")
                .next()
                .expect("one entry")
                .expect("a valid entry");
            assert_eq!(entry.path_bytes(), value.as_slice(), "length {len}");
            let records: Vec<(Vec<u8>, Vec<u8>)> = entry
                .pax_extensions()
                .expect("readable")
                .expect("pax records")
                .map(|r| {
                    let r = r.expect("a valid record");
                    (r.key_bytes().to_vec(), r.value_bytes().to_vec())
                })
                .collect();
            assert_eq!(records, [(b"comment".to_vec(), value)]);
        }
    }

    #[test]
    fn the_first_file_of_an_archive_is_read_through_pax_headers() {
        let mut tar = tar::Builder::new(Vec::new());
        tar.append_pax_extensions([("mtime", &b"1.5"[..])])
            .expect("a pax record");
        let mut header = Header::new_ustar();
        header.set_entry_type(EntryType::Regular);
        header.set_mode(0o644);
        let passwd = b"root:x:0:0::/root:/bin/sh\n";
        header.set_size(passwd.len() as u64);
        tar.append_data(&mut header, "passwd", &passwd[..])
            .expect("a file");
        let input = tar.into_inner().expect("an archive");
        assert_eq!(
            first_file(&input).as_deref(),
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

    #[tokio::test]
    async fn a_download_past_its_bound_is_refused_without_reading_the_rest() {
        let chunks = |n: usize| {
            stream::iter(
                (0..n).map(|_| Ok::<_, std::convert::Infallible>(Bytes::from(vec![b'x'; 1024]))),
            )
        };
        let whole = read_bounded(chunks(4), 4096).await.unwrap();
        assert_eq!(whole.map(|v| v.len()), Some(4096));
        assert_eq!(read_bounded(chunks(5), 4096).await.unwrap(), None);
        // An endless stream (a hostile file of any size) ends at the bound.
        let endless = stream::repeat_with(|| {
            Ok::<_, std::convert::Infallible>(Bytes::from_static(b"root:x:0:0::/root:/bin/sh\n"))
        });
        assert_eq!(
            read_bounded(endless, MAX_PASSWD_ARCHIVE).await.unwrap(),
            None
        );
    }
}
