//! Users and file owners in a container, from its `/etc/passwd` text: a user's home (what
//! `~` and relative working directories are under) and the numeric owner a `user[:group]`
//! spec stands for (what uploaded entries are given). Pure functions over text; reading
//! the file out of the container is the pod's job.

/// A line of `/etc/passwd`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct PasswdEntry {
    pub(super) uid: u64,
    pub(super) gid: u64,
    pub(super) home: String,
}

/// The entry of `user` (a name or a numeric uid) in a passwd file.
pub(super) fn passwd_entry(passwd: &str, user: &str) -> Option<PasswdEntry> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        let [name, _, uid, gid, _, home, ..] = fields.as_slice() else {
            return None;
        };
        if *name != user && *uid != user {
            return None;
        }
        Some(PasswdEntry {
            uid: uid.parse().ok()?,
            gid: gid.parse().ok()?,
            home: (*home).to_string(),
        })
    })
}

/// The user part of a `user[:group]` spec.
pub(super) fn user_name(user: &str) -> &str {
    user.split_once(':').map_or(user, |(u, _)| u)
}

/// The home of a user the passwd file does not know.
pub(super) fn default_home(user: &str) -> &'static str {
    match user {
        "" | "root" | "0" => "/root",
        _ => "/",
    }
}

/// Numeric owner of files, `(uid, gid)`.
pub(super) type Owner = (u64, u64);

/// The owner for a `user[:group]` spec: names through the passwd file, numbers as they
/// are (a numeric user unknown to passwd gets group 0, as with docker). `None` for an
/// unknown name.
pub(super) fn resolve_owner(passwd: &str, user: &str) -> Option<Owner> {
    let (name, group) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let entry = passwd_entry(passwd, name);
    let (uid, gid) = match (entry, name.parse::<u64>()) {
        (Some(e), _) => (e.uid, e.gid),
        (None, Ok(uid)) => (uid, 0),
        (None, Err(_)) if name == "root" => (0, 0),
        (None, Err(_)) => return None,
    };
    let gid = match group.map(str::parse::<u64>) {
        Some(Ok(g)) => g,
        _ => gid,
    };
    Some((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                          nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n\
                          dev:x:1000:1001::/home/dev:/bin/sh\n";

    #[test]
    fn users_resolve_through_passwd_by_name_or_uid() {
        assert_eq!(
            passwd_entry(PASSWD, "dev").map(|e| e.home),
            Some("/home/dev".into())
        );
        assert_eq!(passwd_entry(PASSWD, "1000").map(|e| e.gid), Some(1001));
        assert_eq!(passwd_entry(PASSWD, "ghost"), None);
        assert_eq!(resolve_owner(PASSWD, "nobody"), Some((65534, 65534)));
        assert_eq!(resolve_owner(PASSWD, "dev:50"), Some((1000, 50)));
        assert_eq!(resolve_owner(PASSWD, "4242"), Some((4242, 0)));
        assert_eq!(resolve_owner("", "root"), Some((0, 0)));
        assert_eq!(resolve_owner(PASSWD, "ghost"), None);
        assert_eq!(user_name("dev:50"), "dev");
        assert_eq!(default_home("root"), "/root");
        assert_eq!(default_home("4242"), "/");
    }
}
