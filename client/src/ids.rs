//! The exact formats of the identifiers that name things on a file system or in a blob
//! key: task ids (uuids), run ids (the zero-padded run sequence), executor ids. Every id
//! that comes from outside (an API path, a store read, an import, a task handed to an
//! executor) is checked here before it is used; an accepted id is one plain path segment:
//! never empty, never `.` or `..`, no `/`, no NUL or other control character, never
//! absolute (security review C2: a task id `/tmp/x` or `../../x` made an executor
//! `rm -rf` that directory).
//!
//! Pure functions over `&str`; no I/O. Cache keys and group names have their own
//! validators next to their stores (`datamanager::caches::validate_key`,
//! `datamanager::keys::normalize_group`).

use std::fmt;

/// The longest executor id.
pub const MAX_EXECUTOR_ID_LEN: usize = 128;

/// The shortest and longest run id: `{seq:016}`, up to `u64::MAX`'s 20 digits.
const RUN_ID_LEN: std::ops::RangeInclusive<usize> = 16..=20;

/// An identifier that is not in its format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {shown} is not valid: it must be {format}")]
pub struct IdError {
    /// What the id names (`task id`, `run id`, `executor id`).
    pub kind: &'static str,
    /// The id as given, quoted and cut to 80 characters.
    pub shown: String,
    /// The format it must have.
    pub format: &'static str,
}

fn refuse(kind: &'static str, id: &str, format: &'static str) -> IdError {
    let cut: String = id.chars().take(80).collect();
    let shown = if cut.len() < id.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    };
    IdError {
        kind,
        shown,
        format,
    }
}

/// Checks a task id: a uuid in its hyphenated form (`8-4-4-4-12` hex digits), as the
/// config expansion and restarts make them.
pub fn check_task_id(id: &str) -> Result<(), IdError> {
    let b = id.as_bytes();
    let ok = b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        });
    if ok {
        Ok(())
    } else {
        Err(refuse(
            "task id",
            id,
            "a uuid (8-4-4-4-12 hexadecimal digits)",
        ))
    }
}

/// Checks a run id: 16 to 20 decimal digits (the run sequence, zero-padded to 16).
pub fn check_run_id(id: &str) -> Result<(), IdError> {
    if RUN_ID_LEN.contains(&id.len()) && id.bytes().all(|c| c.is_ascii_digit()) {
        Ok(())
    } else {
        Err(refuse("run id", id, "16 to 20 decimal digits"))
    }
}

/// Checks an executor id: 1 to [`MAX_EXECUTOR_ID_LEN`] characters of `[A-Za-z0-9._-]`,
/// not `.` and without `..`.
pub fn check_executor_id(id: &str) -> Result<(), IdError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_EXECUTOR_ID_LEN
        && id != "."
        && !id.contains("..")
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c));
    if ok {
        Ok(())
    } else {
        Err(refuse(
            "executor id",
            id,
            "1 to 128 characters of [A-Za-z0-9._-], not `.` and without `..`",
        ))
    }
}

/// A task id known to be in its format ([`check_task_id`]): the only way an executor
/// names a task's directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(String);

impl TaskId {
    pub fn parse(id: &str) -> Result<TaskId, IdError> {
        check_task_id(id)?;
        Ok(TaskId(id.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const UUID: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

    #[test]
    fn task_ids_are_uuids() {
        assert!(check_task_id(UUID).is_ok());
        assert!(check_task_id(&UUID.to_uppercase()).is_ok());
        for bad in [
            "",
            "t1",
            "/tmp/victim",
            "../../x",
            "0f8fad5b-d9cb-469f-a165-70867728950",
            "0f8fad5b-d9cb-469f-a165-70867728950e/",
            "0f8fad5b/d9cb-469f-a165-70867728950e",
            "0f8fad5bxd9cb-469f-a165-70867728950e",
            "0f8fad5b-d9cb-469f-a165-70867728950g",
            "..8fad5b-d9cb-469f-a165-70867728950e",
        ] {
            let e = check_task_id(bad).expect_err(bad);
            assert!(e.to_string().contains("uuid"), "{e}");
        }
    }

    #[test]
    fn run_ids_are_padded_sequences() {
        assert!(check_run_id("0000000000000001").is_ok());
        assert!(check_run_id("18446744073709551615").is_ok());
        for bad in [
            "",
            "1",
            "000000000000000a",
            "../0000000000000001",
            "0".repeat(21).as_str(),
        ] {
            assert!(check_run_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn executor_ids_are_plain_segments() {
        for good in ["a", "exec-1", "8f6e0c2d", "node_1.local", &"x".repeat(128)] {
            assert!(check_executor_id(good).is_ok(), "{good}");
        }
        for bad in [
            ".",
            "..",
            "a..b",
            "",
            "a/b",
            "/x",
            "a b",
            "a\0b",
            &"x".repeat(129),
        ] {
            assert!(check_executor_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_error_shows_a_cut_quoted_id() {
        let e = check_task_id(&"a\n".repeat(100)).expect_err("bad");
        assert!(e.shown.ends_with('…'), "{}", e.shown);
        assert!(!e.to_string().contains('\n'), "{e}");
    }

    /// What an accepted id of any kind must be: one harmless path segment.
    fn is_plain_segment(id: &str) -> bool {
        !id.is_empty()
            && !id.contains('/')
            && !id.contains('\0')
            && !id.contains("..")
            && !id.chars().any(char::is_control)
            && !std::path::Path::new(id).is_absolute()
            && std::path::Path::new(id).components().count() == 1
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic_and_accepted_ids_are_plain_segments(s in any::<String>()) {
            if check_task_id(&s).is_ok() {
                prop_assert!(is_plain_segment(&s), "{:?}", s);
                prop_assert!(TaskId::parse(&s).is_ok());
            }
            if check_run_id(&s).is_ok() {
                prop_assert!(is_plain_segment(&s), "{:?}", s);
            }
            if check_executor_id(&s).is_ok() {
                prop_assert!(is_plain_segment(&s), "{:?}", s);
            }
        }

        #[test]
        fn path_like_strings_are_refused(prefix in "[./]{1,4}", rest in "[a-f0-9/.-]{0,40}") {
            let s = format!("{prefix}{rest}");
            prop_assert!(check_task_id(&s).is_err());
            prop_assert!(check_run_id(&s).is_err());
            prop_assert!(check_executor_id(&s).is_err() || !s.starts_with('/'));
        }

        #[test]
        fn every_hyphenated_uuid_is_a_task_id(bytes in any::<[u8; 16]>()) {
            let h: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let id = format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]);
            prop_assert!(check_task_id(&id).is_ok());
        }
    }
}
