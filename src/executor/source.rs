//! Working-tree snapshots: the tar `cairn run` uploads for a direct run (names relative
//! to the repository root) and the `clone` step unpacks into the task's directory.
//! [`pack_dir`] writes one from a directory, [`unpack_into`] extracts one safely: no
//! entry lands outside the directory (absolute names and `..` are refused, and so is
//! anything that would be written through a symbolic link), links are recreated as links
//! and never followed, modes (the executable bit) and mtimes are kept, owners are not.
//!
//! Local file I/O only, streaming both ways; no pods, no network.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use tar::EntryType;

use super::archive::relative_entry_name;

/// Why a snapshot could not be packed or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// An entry would land outside the directory: the snapshot is refused.
    #[error("snapshot entry {entry:?} escapes the directory: {why}")]
    Escape { entry: String, why: &'static str },
    /// Devices, fifos, hard links…: a working tree holds none.
    #[error("snapshot entry {entry:?} has unsupported type {kind}")]
    Unsupported { entry: String, kind: String },
    #[error("{path}: {source}")]
    Path { path: PathBuf, source: io::Error },
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

/// Extracts the snapshot `read` into `dir` (created if missing) and returns how many
/// entries it held. Files already there are replaced (a link in the way is removed, not
/// followed). On error the directory may hold part of the snapshot.
pub fn unpack_into(read: impl Read, dir: &Path) -> Result<usize, SourceError> {
    fs::create_dir_all(dir).map_err(|source| SourceError::Path {
        path: dir.to_owned(),
        source,
    })?;
    let dir = dir.canonicalize().map_err(|source| SourceError::Path {
        path: dir.to_owned(),
        source,
    })?;
    let mut archive = tar::Archive::new(read);
    archive.set_preserve_permissions(false);
    archive.set_preserve_ownerships(false);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    archive.set_unpack_xattrs(false);

    // Directories are applied last, deepest first, so that their modes and mtimes are not
    // disturbed by (or do not prevent) the extraction of what they contain.
    let mut directories = Vec::new();
    let mut count = 0;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = entry.path()?.into_owned();
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            continue; // `git archive` puts the commit id there.
        }
        let rel = relative_entry_name(&raw).ok_or_else(|| SourceError::Escape {
            entry: raw.display().to_string(),
            why: "absolute or contains `..`",
        })?;
        if rel.as_os_str().is_empty() {
            continue; // The root directory itself.
        }
        if !(kind.is_file() || kind.is_dir() || kind.is_symlink()) {
            return Err(SourceError::Unsupported {
                entry: rel.display().to_string(),
                kind: kind_name(kind),
            });
        }
        refuse_links_above(&dir, &rel)?;
        count += 1;
        if kind.is_dir() {
            directories.push((rel, entry));
        } else {
            entry.unpack_in(&dir)?;
        }
    }
    directories.sort_by(|(a, _), (b, _)| b.cmp(a));
    for (rel, mut entry) in directories {
        refuse_links_above(&dir, &rel)?;
        entry.unpack_in(&dir)?;
    }
    Ok(count)
}

/// Refuses `rel` when a directory above it inside `dir` is a symbolic link.
fn refuse_links_above(dir: &Path, rel: &Path) -> Result<(), SourceError> {
    let mut above: Vec<&Path> = rel
        .ancestors()
        .skip(1)
        .filter(|a| !a.as_os_str().is_empty())
        .collect();
    above.reverse();
    for ancestor in above {
        match fs::symlink_metadata(dir.join(ancestor)) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(SourceError::Escape {
                    entry: rel.display().to_string(),
                    why: "lies under a symbolic link",
                });
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(SourceError::Path {
                    path: dir.join(ancestor),
                    source,
                });
            }
        }
    }
    Ok(())
}

fn kind_name(kind: EntryType) -> String {
    match kind {
        EntryType::Link => "hard link".to_owned(),
        EntryType::Char => "character device".to_owned(),
        EntryType::Block => "block device".to_owned(),
        EntryType::Fifo => "fifo".to_owned(),
        other => format!("{other:?}"),
    }
}

/// Writes the tree under `dir` as a snapshot tar into `out`, names relative to `dir`,
/// and returns how many entries it wrote. `include` is asked about every path
/// (relative to `dir`); a directory it refuses is skipped with everything under it.
/// Regular files, directories and symbolic links (never followed) are packed with their
/// modes and mtimes; sockets, fifos and devices are left out. Parents come before their
/// children and siblings in name order, so the same tree gives the same archive order.
pub fn pack_dir(
    dir: &Path,
    out: impl Write,
    include: impl Fn(&Path) -> bool,
) -> Result<usize, SourceError> {
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    let mut count = 0;
    let mut pending = vec![PathBuf::new()];
    while let Some(rel_dir) = pending.pop() {
        let full_dir = dir.join(&rel_dir);
        let listing = fs::read_dir(&full_dir).map_err(|source| SourceError::Path {
            path: full_dir.clone(),
            source,
        })?;
        let mut children = Vec::new();
        for child in listing {
            let child = child.map_err(|source| SourceError::Path {
                path: full_dir.clone(),
                source,
            })?;
            children.push(child.file_name());
        }
        children.sort();
        let mut subdirs = Vec::new();
        for name in children {
            let rel = rel_dir.join(&name);
            if !include(&rel) {
                continue;
            }
            let full = full_dir.join(&name);
            let meta = fs::symlink_metadata(&full).map_err(|source| SourceError::Path {
                path: full.clone(),
                source,
            })?;
            let kind = meta.file_type();
            if !(kind.is_file() || kind.is_dir() || kind.is_symlink()) {
                continue;
            }
            tar.append_path_with_name(&full, &rel)
                .map_err(|source| SourceError::Path {
                    path: full.clone(),
                    source,
                })?;
            count += 1;
            if kind.is_dir() {
                subdirs.push(rel);
            }
        }
        pending.extend(subdirs.into_iter().rev());
    }
    tar.into_inner()?.flush()?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::archive::tests::{Item, tar_of};
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn write(path: &Path, data: &str) {
        fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
        fs::write(path, data).expect("write");
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path)
            .expect("stat")
            .permissions()
            .mode()
            & 0o777
    }

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path();
        write(&root.join("README.md"), "hello");
        write(&root.join("src/main.rs"), "fn main() {}");
        write(&root.join("src/net/deep/tcp.rs"), "tcp");
        write(&root.join("scripts/build.sh"), "#!/bin/sh\necho hi\n");
        fs::set_permissions(
            root.join("scripts/build.sh"),
            fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        fs::create_dir_all(root.join("empty")).expect("mkdir");
        symlink("src/main.rs", root.join("main-link")).expect("symlink");
        symlink("/nonexistent/target", root.join("dangling")).expect("symlink");
        write(&root.join(".git/HEAD"), "ref: refs/heads/main");
        t
    }

    fn pack(dir: &Path, include: impl Fn(&Path) -> bool) -> (usize, Vec<u8>) {
        let mut out = Vec::new();
        let n = pack_dir(dir, &mut out, include).expect("pack");
        (n, out)
    }

    fn names(tar: &[u8]) -> Vec<String> {
        let mut a = tar::Archive::new(tar);
        a.entries()
            .expect("entries")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn pack_lists_parents_before_children_in_name_order() {
        let src = tree();
        let (n, tar) = pack(src.path(), |_| true);
        assert_eq!(n, 13);
        assert_eq!(
            names(&tar),
            [
                ".git",
                "README.md",
                "dangling",
                "empty",
                "main-link",
                "scripts",
                "src",
                ".git/HEAD",
                "scripts/build.sh",
                "src/main.rs",
                "src/net",
                "src/net/deep",
                "src/net/deep/tcp.rs",
            ]
        );
    }

    #[test]
    fn round_trip_keeps_contents_modes_symlinks_and_empty_dirs() {
        let src = tree();
        let (_, tar) = pack(src.path(), |p| !p.starts_with(".git"));
        let dst = tempfile::tempdir().expect("tempdir");
        let n = unpack_into(&tar[..], dst.path()).expect("unpack");
        assert_eq!(n, 11);
        let d = dst.path();
        assert_eq!(
            fs::read_to_string(d.join("src/net/deep/tcp.rs")).expect("read"),
            "tcp"
        );
        assert_eq!(
            fs::read_to_string(d.join("README.md")).expect("read"),
            "hello"
        );
        assert_eq!(mode(&d.join("scripts/build.sh")), 0o755);
        assert_eq!(
            mode(&d.join("README.md")),
            mode(&src.path().join("README.md"))
        );
        assert!(d.join("empty").is_dir());
        assert_eq!(
            fs::read_link(d.join("main-link")).expect("link"),
            Path::new("src/main.rs")
        );
        assert_eq!(
            fs::read_link(d.join("dangling")).expect("link"),
            Path::new("/nonexistent/target")
        );
        assert!(!d.join(".git").exists());
    }

    #[test]
    fn round_trip_keeps_mtimes() {
        let src = tree();
        let (_, tar) = pack(src.path(), |_| true);
        let dst = tempfile::tempdir().expect("tempdir");
        unpack_into(&tar[..], dst.path()).expect("unpack");
        let mtime = |p: &Path| {
            fs::metadata(p)
                .expect("stat")
                .modified()
                .expect("mtime")
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after the epoch")
                .as_secs()
        };
        for f in ["src/main.rs", "src/net/deep", "scripts/build.sh"] {
            assert_eq!(
                mtime(&dst.path().join(f)),
                mtime(&src.path().join(f)),
                "{f}"
            );
        }
    }

    #[test]
    fn an_excluded_directory_is_skipped_with_its_contents() {
        let src = tree();
        let (_, tar) = pack(src.path(), |p| p != Path::new("src"));
        let got = names(&tar);
        assert!(got.iter().all(|n| !n.starts_with("src")), "{got:?}");
        assert!(got.contains(&"README.md".to_owned()));
    }

    #[test]
    fn unpack_refuses_parent_escapes() {
        let dst = tempfile::tempdir().expect("tempdir");
        let inner = dst.path().join("inner");
        let tar = tar_of(&[Item::File("../x", b"evil", 0o644)]);
        let err = unpack_into(&tar[..], &inner).expect_err("escape");
        assert!(matches!(err, SourceError::Escape { .. }), "{err}");
        assert!(!dst.path().join("x").exists());
    }

    #[test]
    fn unpack_refuses_absolute_names() {
        let dst = tempfile::tempdir().expect("tempdir");
        let tar = tar_of(&[
            Item::File("ok", b"fine", 0o644),
            Item::File("/etc/x", b"evil", 0o644),
        ]);
        let err = unpack_into(&tar[..], dst.path()).expect_err("absolute");
        assert!(err.to_string().contains("/etc/x"), "{err}");
        assert!(!dst.path().join("etc").exists());
    }

    #[test]
    fn unpack_refuses_writing_through_a_symlink_in_the_archive() {
        let outside = tempfile::tempdir().expect("tempdir");
        let dst = tempfile::tempdir().expect("tempdir");
        let target = outside.path().display().to_string();
        let tar = tar_of(&[
            Item::Symlink("out", &target),
            Item::File("out/planted", b"evil", 0o644),
        ]);
        let err = unpack_into(&tar[..], dst.path()).expect_err("through a link");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(!outside.path().join("planted").exists());
    }

    #[test]
    fn unpack_refuses_writing_through_an_existing_symlink() {
        let outside = tempfile::tempdir().expect("tempdir");
        let dst = tempfile::tempdir().expect("tempdir");
        symlink(outside.path(), dst.path().join("out")).expect("symlink");
        let tar = tar_of(&[Item::File("out/planted", b"evil", 0o644)]);
        assert!(unpack_into(&tar[..], dst.path()).is_err());
        assert!(!outside.path().join("planted").exists());
    }

    #[test]
    fn a_file_replaces_a_symlink_instead_of_following_it() {
        let outside = tempfile::tempdir().expect("tempdir");
        let victim = outside.path().join("victim");
        fs::write(&victim, "safe").expect("write");
        let dst = tempfile::tempdir().expect("tempdir");
        let target = victim.display().to_string();
        let tar = tar_of(&[Item::Symlink("f", &target), Item::File("f", b"evil", 0o644)]);
        unpack_into(&tar[..], dst.path()).expect("unpack");
        assert_eq!(fs::read_to_string(&victim).expect("read"), "safe");
        let meta = fs::symlink_metadata(dst.path().join("f")).expect("stat");
        assert!(meta.file_type().is_file());
    }

    #[test]
    fn unpack_refuses_hard_links_and_devices() {
        let dst = tempfile::tempdir().expect("tempdir");
        let tar = tar_of(&[Item::File("a", b"x", 0o644), Item::HardLink("b", "a")]);
        let err = unpack_into(&tar[..], dst.path()).expect_err("hard link");
        assert!(matches!(err, SourceError::Unsupported { ref kind, .. } if kind == "hard link"));
    }

    #[test]
    fn unpack_into_creates_the_directory_and_skips_the_root_entry() {
        let base = tempfile::tempdir().expect("tempdir");
        let dir = base.path().join("a/b");
        let tar = tar_of(&[Item::Dir("./"), Item::File("./x/y", b"z", 0o600)]);
        assert_eq!(unpack_into(&tar[..], &dir).expect("unpack"), 1);
        assert_eq!(fs::read_to_string(dir.join("x/y")).expect("read"), "z");
        assert_eq!(mode(&dir.join("x/y")), 0o600);
    }
}
