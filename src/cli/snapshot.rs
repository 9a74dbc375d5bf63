//! A local working tree as `cairn run` sends it: the files to include (tracked and
//! untracked, ignored ones only on request; every file outside git), the repository's
//! identity (a uuid kept in its git config, or under `.cairn/` outside git), its
//! current branch, the commit a run of it is for (HEAD when the tree is clean, else a
//! content hash of what is sent), and the tar of it all.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The commit a direct run is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeCommit {
    /// HEAD's sha when the tree is clean, else [`content_hash`] of the files sent.
    pub sha: String,
    /// Whether `sha` is HEAD's (else it is the snapshot's content hash).
    pub from_head: bool,
    /// HEAD's subject (`cairn direct run` without a commit).
    pub message: String,
}

/// The message of a direct run without a commit (Agola's is `agola direct run`).
pub const NO_COMMIT_MESSAGE: &str = "cairn direct run";

/// What `cairn run` knows about the directory it runs.
pub struct WorkTree {
    pub root: PathBuf,
    pub git: bool,
}

impl WorkTree {
    /// `dir` (files are sent relative to it), inside a git work tree or not.
    pub fn open(dir: &Path) -> anyhow::Result<WorkTree> {
        let dir = std::fs::canonicalize(dir)
            .with_context(|| format!("{} does not exist", dir.display()))?;
        if !dir.is_dir() {
            bail!("{} is not a directory", dir.display());
        }
        let git =
            git(&dir, &["rev-parse", "--is-inside-work-tree"]).is_ok_and(|v| v.trim() == "true");
        Ok(WorkTree { root: dir, git })
    }

    /// The repository's uuid, created on first use: `git config cairn.repouuid` (Agola's
    /// `agola.repouuid` is honoured too), or `.cairn/repo-uuid` outside git.
    pub fn repo_uuid(&self) -> anyhow::Result<String> {
        if self.git {
            for key in ["cairn.repouuid", "agola.repouuid"] {
                if let Ok(v) = git(&self.root, &["config", "--local", "--get", key])
                    && !v.trim().is_empty()
                {
                    return Ok(v.trim().to_string());
                }
            }
            let id = uuid::Uuid::new_v4().to_string();
            git(&self.root, &["config", "--local", "cairn.repouuid", &id])
                .context("storing the repository's uuid in its git config")?;
            return Ok(id);
        }
        let path = self.root.join(".cairn").join("repo-uuid");
        if let Ok(v) = std::fs::read_to_string(&path)
            && !v.trim().is_empty()
        {
            return Ok(v.trim().to_string());
        }
        let id = uuid::Uuid::new_v4().to_string();
        std::fs::create_dir_all(self.root.join(".cairn"))
            .with_context(|| format!("creating {}", self.root.join(".cairn").display()))?;
        std::fs::write(&path, format!("{id}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(id)
    }

    /// The current branch (`None` outside git or on a detached HEAD).
    pub fn branch(&self) -> Option<String> {
        if !self.git {
            return None;
        }
        let b = git(&self.root, &["rev-parse", "--abbrev-ref", "HEAD"]).ok()?;
        let b = b.trim();
        (!b.is_empty() && b != "HEAD").then(|| b.to_string())
    }

    /// The commit a run of `files` is for: HEAD when the repository has a commit and
    /// `git status` shows nothing (ignored files count when they are sent), else the
    /// content hash of `files`.
    pub fn commit(&self, files: &BTreeSet<PathBuf>, ignored: bool) -> anyhow::Result<TreeCommit> {
        let head = self
            .git
            .then(|| git(&self.root, &["rev-parse", "--verify", "-q", "HEAD"]).ok())
            .flatten()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty());
        let Some(head) = head else {
            return Ok(TreeCommit {
                sha: content_hash(&self.root, files)?,
                from_head: false,
                message: NO_COMMIT_MESSAGE.to_string(),
            });
        };
        let message = git(&self.root, &["log", "-1", "--format=%s", "HEAD"])?
            .trim()
            .to_string();
        let mut status = vec!["status", "--porcelain"];
        if ignored {
            status.push("--ignored");
        }
        let clean = git(&self.root, &status)?.trim().is_empty();
        Ok(TreeCommit {
            sha: if clean {
                head
            } else {
                content_hash(&self.root, files)?
            },
            from_head: clean,
            message: if message.is_empty() {
                NO_COMMIT_MESSAGE.to_string()
            } else {
                message
            },
        })
    }

    /// Paths (relative to the root) of the files to send.
    pub fn files(&self, ignored: bool) -> anyhow::Result<BTreeSet<PathBuf>> {
        let mut out = BTreeSet::new();
        if self.git {
            let mut lists = vec![git(
                &self.root,
                &[
                    "ls-files",
                    "-z",
                    "--cached",
                    "--others",
                    "--exclude-standard",
                ],
            )?];
            if ignored {
                lists.push(git(
                    &self.root,
                    &[
                        "ls-files",
                        "-z",
                        "--others",
                        "--ignored",
                        "--exclude-standard",
                    ],
                )?);
            }
            for list in lists {
                for name in list.split('\0').filter(|n| !n.is_empty()) {
                    let rel = PathBuf::from(name);
                    // Deleted but still in the index: nothing to send.
                    if std::fs::symlink_metadata(self.root.join(&rel)).is_ok() {
                        out.insert(rel);
                    }
                }
            }
        } else {
            walk(&self.root, Path::new(""), &mut out)?;
        }
        Ok(out)
    }

    /// Writes the tar of `files` to `out`; returns how many entries it holds.
    pub fn pack(
        &self,
        files: &BTreeSet<PathBuf>,
        out: impl std::io::Write,
    ) -> anyhow::Result<usize> {
        let mut dirs = BTreeSet::new();
        for f in files {
            let mut p = f.parent();
            while let Some(d) = p {
                if d.as_os_str().is_empty() {
                    break;
                }
                dirs.insert(d.to_path_buf());
                p = d.parent();
            }
        }
        let n = crate::executor::source::pack_dir(&self.root, out, |rel| {
            rel.as_os_str().is_empty() || files.contains(rel) || dirs.contains(rel)
        })?;
        Ok(n)
    }
}

/// The sha256 (hex) of `files` under `root`: for each, in order, its path, whether it is
/// a symlink, and its content (a symlink's target). Same files, same hash; times and
/// permissions do not count.
pub fn content_hash(root: &Path, files: &BTreeSet<PathBuf>) -> anyhow::Result<String> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for rel in files {
        let path = root.join(rel);
        let meta = std::fs::symlink_metadata(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let content = if meta.file_type().is_symlink() {
            std::fs::read_link(&path)
                .with_context(|| format!("reading {}", path.display()))?
                .to_string_lossy()
                .into_owned()
                .into_bytes()
        } else {
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?
        };
        let name = rel.to_string_lossy();
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update([u8::from(meta.file_type().is_symlink())]);
        h.update((content.len() as u64).to_le_bytes());
        h.update(&content);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Every file under `dir` (relative to the walk's root), skipping `.git`.
fn walk(root: &Path, rel: &Path, out: &mut BTreeSet<PathBuf>) -> anyhow::Result<()> {
    let dir = root.join(rel);
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        if name == ".git" {
            continue;
        }
        let path = rel.join(&name);
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(root, &path, out)?;
        } else {
            out.insert(path);
        }
    }
    Ok(())
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .context("running git")?;
    if !out.status.success() {
        bail!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit_all(d: &Path) {
        git(
            d,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@example.com",
                "commit",
                "-q",
                "-m",
                "first line\n\nbody",
            ],
        )
        .expect("commit");
    }

    #[test]
    fn a_clean_tree_runs_heads_commit_and_a_dirty_one_its_content_hash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        if git(d, &["init", "-q"]).is_err() {
            return;
        }
        std::fs::write(d.join("a"), "1").expect("write");
        git(d, &["add", "a"]).expect("add");
        commit_all(d);
        let tree = WorkTree::open(d).expect("open");
        let head = git(d, &["rev-parse", "HEAD"])
            .expect("head")
            .trim()
            .to_string();
        let files = tree.files(false).expect("files");
        let clean = tree.commit(&files, false).expect("commit");
        assert_eq!(
            clean,
            TreeCommit {
                sha: head.clone(),
                from_head: true,
                message: "first line".into()
            }
        );

        std::fs::write(d.join("a"), "2").expect("write");
        let files = tree.files(false).expect("files");
        let dirty = tree.commit(&files, false).expect("commit");
        assert!(!dirty.from_head);
        assert_eq!(dirty.sha.len(), 64, "{}", dirty.sha);
        assert_ne!(dirty.sha, head);
        assert_eq!(dirty.message, "first line");
        assert_eq!(tree.commit(&files, false).expect("again").sha, dirty.sha);

        // An untracked file is sent, so it makes the tree dirty too.
        std::fs::write(d.join("a"), "1").expect("write");
        std::fs::write(d.join("b"), "new").expect("write");
        let files = tree.files(false).expect("files");
        let untracked = tree.commit(&files, false).expect("commit");
        assert!(!untracked.from_head);
        assert_ne!(untracked.sha, dirty.sha);
    }

    #[test]
    fn the_content_hash_follows_paths_and_contents_only() {
        let one = tempfile::tempdir().expect("tempdir");
        let two = tempfile::tempdir().expect("tempdir");
        for d in [one.path(), two.path()] {
            std::fs::write(d.join("x"), "same").expect("write");
        }
        let files: BTreeSet<PathBuf> = [PathBuf::from("x")].into();
        let a = content_hash(one.path(), &files).expect("hash");
        assert_eq!(a, content_hash(two.path(), &files).expect("hash"));
        std::fs::write(two.path().join("x"), "other").expect("write");
        assert_ne!(a, content_hash(two.path(), &files).expect("hash"));
    }

    #[test]
    fn outside_git_every_file_is_sent_and_the_uuid_is_kept_under_dot_cairn() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("src")).expect("mkdir");
        std::fs::write(dir.path().join("src/main.rs"), "fn main() {}").expect("write");
        std::fs::write(dir.path().join("README"), "hi").expect("write");
        let tree = WorkTree::open(dir.path()).expect("open");
        if tree.git {
            // The temp dir sits inside a git repository on this machine: nothing to test.
            return;
        }
        let id = tree.repo_uuid().expect("uuid");
        assert_eq!(tree.repo_uuid().expect("uuid again"), id);
        let files = tree.files(false).expect("files");
        assert!(files.contains(Path::new("src/main.rs")));
        assert!(files.contains(Path::new("README")));
        let mut tar = Vec::new();
        assert!(tree.pack(&files, &mut tar).expect("pack") >= 3);
    }

    #[test]
    fn in_git_tracked_and_untracked_files_go_and_ignored_ones_only_on_request() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        if git(d, &["init", "-q"]).is_err() {
            return;
        }
        std::fs::write(d.join(".gitignore"), "target/\n").expect("write");
        std::fs::write(d.join("tracked"), "1").expect("write");
        git(d, &["add", "tracked", ".gitignore"]).expect("add");
        std::fs::write(d.join("untracked"), "2").expect("write");
        std::fs::create_dir_all(d.join("target")).expect("mkdir");
        std::fs::write(d.join("target/out"), "3").expect("write");
        let tree = WorkTree::open(d).expect("open");
        assert!(tree.git);
        let files = tree.files(false).expect("files");
        assert!(files.contains(Path::new("tracked")));
        assert!(files.contains(Path::new("untracked")));
        assert!(!files.contains(Path::new("target/out")));
        let all = tree.files(true).expect("files");
        assert!(all.contains(Path::new("target/out")));
        let id = tree.repo_uuid().expect("uuid");
        assert_eq!(
            git(d, &["config", "--local", "cairn.repouuid"])
                .expect("config")
                .trim(),
            id
        );
    }
}
