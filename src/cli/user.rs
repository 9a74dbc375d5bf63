//! Who runs the command line: the name `cairn run` puts in a run's group and `cairn runs
//! approve` records as the approver.

/// The user's name from `USER`, else `USERNAME`; `/` becomes `_` (the name is a path
/// segment of a run group); "local" when neither is set or it is empty.
pub(crate) fn user_name() -> String {
    name_from(std::env::var("USER").ok(), std::env::var("USERNAME").ok())
}

/// [`user_name`] over the two variables' values.
fn name_from(user: Option<String>, username: Option<String>) -> String {
    user.or(username)
        .filter(|u| !u.is_empty())
        .map(|u| u.replace('/', "_"))
        .unwrap_or_else(|| "local".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn user_wins_over_username_and_slashes_cannot_escape_the_group() {
        assert_eq!(name_from(some("ann"), some("bob")), "ann");
        assert_eq!(name_from(None, some("bob")), "bob");
        assert_eq!(name_from(some("a/b"), None), "a_b");
    }

    #[test]
    fn no_name_or_an_empty_one_is_local() {
        assert_eq!(name_from(None, None), "local");
        assert_eq!(name_from(some(""), some("bob")), "local");
    }
}
