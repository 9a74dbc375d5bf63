//! Working-tree snapshots: the tar `cairn run` uploads for a direct run (names relative
//! to the repository root) and the `clone` step unpacks into the task's directory.
//! [`pack_dir`] writes one from a directory. Snapshots are extracted by the one hardened
//! extractor every archive put into a pod goes through (`executor::archive::extract`,
//! or `archive::hardened_stream` for the docker driver): there is no second extractor
//! here.
//!
//! Local file I/O only, streaming; no pods, no network.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Why a snapshot could not be packed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{path}: {source}")]
    Path { path: PathBuf, source: io::Error },
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
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
    use crate::executor::archive::{ArchiveError, extract};
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

    /// Everything under `dir` (links not followed), relative, in name order.
    fn entries(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut pending = vec![dir.to_owned()];
        while let Some(d) = pending.pop() {
            for child in fs::read_dir(&d).expect("read_dir") {
                let path = child.expect("entry").path();
                if fs::symlink_metadata(&path).expect("stat").is_dir() {
                    pending.push(path.clone());
                }
                out.push(path.strip_prefix(dir).expect("under dir").to_owned());
            }
        }
        out.sort();
        out
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
        let summary = extract(&tar[..], dst.path()).expect("unpack");
        assert_eq!(entries(dst.path()).len(), 11);
        assert_eq!(summary.files, 4);
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
        extract(&tar[..], dst.path()).expect("unpack");
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
        let err = extract(&tar[..], &inner).expect_err("escape");
        assert!(matches!(err, ArchiveError::Escape { .. }), "{err}");
        assert!(!dst.path().join("x").exists());
    }

    #[test]
    fn unpack_refuses_absolute_names() {
        let dst = tempfile::tempdir().expect("tempdir");
        let tar = tar_of(&[
            Item::File("ok", b"fine", 0o644),
            Item::File("/etc/x", b"evil", 0o644),
        ]);
        let err = extract(&tar[..], dst.path()).expect_err("absolute");
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
        let err = extract(&tar[..], dst.path()).expect_err("through a link");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(!outside.path().join("planted").exists());
    }

    #[test]
    fn unpack_refuses_writing_through_an_existing_symlink() {
        let outside = tempfile::tempdir().expect("tempdir");
        let dst = tempfile::tempdir().expect("tempdir");
        symlink(outside.path(), dst.path().join("out")).expect("symlink");
        let tar = tar_of(&[Item::File("out/planted", b"evil", 0o644)]);
        assert!(extract(&tar[..], dst.path()).is_err());
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
        extract(&tar[..], dst.path()).expect("unpack");
        assert_eq!(fs::read_to_string(&victim).expect("read"), "safe");
        let meta = fs::symlink_metadata(dst.path().join("f")).expect("stat");
        assert!(meta.file_type().is_file());
    }

    /// A snapshot goes through the same extractor as workspaces and caches: a hard link
    /// inside the directory is kept as a link, one whose target leaves it is refused, and
    /// so are devices and fifos.
    #[test]
    fn unpack_refuses_hard_links_and_devices() {
        let dst = tempfile::tempdir().expect("tempdir");
        let inside = tar_of(&[Item::File("a", b"x", 0o644), Item::HardLink("b", "a")]);
        extract(&inside[..], dst.path()).expect("a hard link inside");
        assert_eq!(fs::read_to_string(dst.path().join("b")).expect("read"), "x");
        let tar = tar_of(&[Item::File("a", b"x", 0o644), Item::HardLink("c", "../a")]);
        let err = extract(&tar[..], dst.path()).expect_err("hard link out");
        assert!(
            matches!(err, ArchiveError::Escape { why, .. } if why.contains("hard link")),
            "{err}"
        );
        let mut fifo = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Fifo);
        h.set_size(0);
        h.set_mode(0o644);
        fifo.append_data(&mut h, "pipe", io::empty())
            .expect("append to a Vec");
        let fifo = fifo.into_inner().expect("finish a Vec");
        let err = extract(&fifo[..], dst.path()).expect_err("fifo");
        assert!(
            matches!(err, ArchiveError::Unsupported { kind: "fifo", .. }),
            "{err}"
        );
        assert!(!dst.path().join("pipe").exists());
    }

    #[test]
    fn unpack_into_creates_the_directory_and_skips_the_root_entry() {
        let base = tempfile::tempdir().expect("tempdir");
        let dir = base.path().join("a/b");
        let tar = tar_of(&[Item::Dir("./"), Item::File("./x/y", b"z", 0o600)]);
        assert_eq!(extract(&tar[..], &dir).expect("unpack").files, 1);
        assert_eq!(entries(&dir), [Path::new("x"), Path::new("x/y")]);
        assert_eq!(fs::read_to_string(dir.join("x/y")).expect("read"), "z");
        assert_eq!(mode(&dir.join("x/y")), 0o600);
    }
}
