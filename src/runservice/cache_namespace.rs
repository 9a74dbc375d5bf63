//! The namespace of a task's caches: an unambiguous id of its cache group, handed to the
//! executor as the spec's `cache_prefix`.
//!
//! A cache group is the run config's `cache_group` when the run's creator set one (runs
//! naming one group share their caches on purpose), else the root of the run group
//! (`/project/<id>`, `/user/<id>`: the whole two elements, so a user and a project with the
//! same id never meet). The namespace is a fixed-length lowercase hex digest of the kind
//! and name of the group, so it contains no separator, no group name is a prefix of
//! another's, and a `cache_group` can never name a run group's namespace.
//!
//! The executor joins it to the rendered key as `<namespace>/<key>` and the cache store
//! keeps each namespace in its own directory (see `datamanager::caches`).

use sha2::{Digest, Sha256};

/// How many hex digits a namespace has (128 bits of SHA-256).
pub const NAMESPACE_LEN: usize = 32;

/// The cache namespace of a run of `run_group` whose config names `cache_group`.
pub fn cache_namespace(cache_group: Option<&str>, run_group: &str) -> String {
    let identity = match cache_group {
        Some(group) => format!("cache_group\0{group}"),
        None => format!("run_group\0{}", group_root(run_group)),
    };
    let digest = Sha256::digest(identity.as_bytes());
    let mut out = String::with_capacity(NAMESPACE_LEN);
    for b in &digest[..NAMESPACE_LEN / 2] {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The first two elements of a run group, with their kind: `/project/p1/branch/main` →
/// `/project/p1`; a shorter group is itself.
fn group_root(run_group: &str) -> String {
    let parts: Vec<&str> = run_group
        .trim_start_matches('/')
        .split('/')
        .filter(|p| !p.is_empty())
        .take(2)
        .collect();
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_namespace(s: &str) -> bool {
        s.len() == NAMESPACE_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }

    #[test]
    fn a_namespace_is_fixed_length_hex() {
        for ns in [
            cache_namespace(None, "/project/p1/branch/main"),
            cache_namespace(Some("alice-repo"), "/user/alice/branch/main"),
            cache_namespace(Some(""), ""),
        ] {
            assert!(is_namespace(&ns), "{ns}");
        }
        assert!(!is_namespace("app"));
        assert!(!is_namespace(&"A".repeat(NAMESPACE_LEN)));
        assert!(!is_namespace(&"a".repeat(NAMESPACE_LEN + 1)));
    }

    #[test]
    fn runs_of_one_project_share_its_namespace_whatever_their_branch() {
        assert_eq!(
            cache_namespace(None, "/project/p1/branch/main"),
            cache_namespace(None, "/project/p1/pr/12")
        );
    }

    #[test]
    fn groups_whose_names_prefix_each_other_get_unrelated_namespaces() {
        let app = cache_namespace(Some("app"), "/project/app/branch/main");
        let app_web = cache_namespace(Some("app-web"), "/project/app-web/branch/main");
        assert_ne!(app, app_web);
        assert!(!app_web.starts_with(&app) && !app.starts_with(&app_web));
        let root_app = cache_namespace(None, "/project/app/branch/main");
        let root_app_web = cache_namespace(None, "/project/app-web/branch/main");
        assert!(!root_app_web.starts_with(&root_app));
    }

    #[test]
    fn a_user_and_a_project_with_one_id_do_not_share() {
        assert_ne!(
            cache_namespace(None, "/user/x/branch/main"),
            cache_namespace(None, "/project/x/branch/main")
        );
    }

    #[test]
    fn a_cache_group_never_names_a_run_groups_namespace() {
        for name in ["x", "/project/x", "project/x", "run_group\0/project/x"] {
            assert_ne!(
                cache_namespace(Some(name), "/user/u/branch/main"),
                cache_namespace(None, "/project/x/branch/main"),
                "{name:?}"
            );
        }
    }

    #[test]
    fn runs_naming_one_cache_group_share_it_across_projects() {
        assert_eq!(
            cache_namespace(Some("shared"), "/project/p1/branch/main"),
            cache_namespace(Some("shared"), "/project/p2/branch/main")
        );
        assert_ne!(
            cache_namespace(Some("shared"), "/project/p1/branch/main"),
            cache_namespace(None, "/project/p1/branch/main")
        );
    }
}
