//! `cairn cluster status`: the whole service on one screen, the command an operator runs
//! first. It asks one node for the membership, then every member for its own view
//! (`GET /api/v1/cluster`, concurrently, a few seconds each), and prints each node's role,
//! version, term, commit and apply points, lag behind the leader and scheduler state,
//! with the cluster's leader, scheduler holder, maintenance mode, executors and alarms
//! above and a warning per problem below. What to print is decided by [`report`], a
//! pure function of the answers.

use std::time::Duration;

use cairn_client::api::{ClusterMember, NodeInfo};
use clap::Subcommand;

use super::args::{Connection, Output, ServerArgs};
use super::terminal::escape_controls;

/// How long one member may take to answer.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(3);
/// A member this many entries behind the leader's commit point gets a warning.
const LAG_WARNING: u64 = 1_000;

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Every node's role, version, term, commit/apply points and lag, the scheduler
    /// holder, maintenance mode, executors and alarms. Exits 1 when something needs the
    /// operator (a member down, no leader or scheduler, two schedulers, mixed versions,
    /// a lagging member, an alarm).
    Status,
}

/// One member and what it answered.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MemberView {
    pub member: ClusterMember,
    pub voter: bool,
    /// Its own view, or why it did not answer.
    pub info: Result<NodeInfo, String>,
}

/// The printed status and whether anything needs the operator.
#[derive(Debug, PartialEq, Eq)]
pub struct Report {
    pub text: String,
    pub warnings: Vec<String>,
}

pub async fn cluster(cmd: ClusterCommand, args: ServerArgs) -> anyhow::Result<u8> {
    let ClusterCommand::Status = cmd;
    let conn = Connection::open(&args).await?;
    let result = async {
        let first = printable(conn.client.cluster().await?);
        let executors = conn.client.executors().await.map(|e| e.executors.len());
        let views = ask_members(&conn.client, &first).await;
        let executors = executors.map_err(|e| e.to_string());
        if args.output == Output::Json {
            let out = serde_json::json!({
                "answered_by": first.node_id,
                "executors": executors.as_ref().ok(),
                "members": views,
            });
            outln!("{}", serde_json::to_string_pretty(&out)?)?;
            return Ok(u8::from(
                !report(&first, &views, &executors).warnings.is_empty(),
            ));
        }
        let r = report(&first, &views, &executors);
        outln!("{}", r.text.trim_end())?;
        Ok(u8::from(!r.warnings.is_empty()))
    }
    .await;
    conn.close().await;
    result
}

/// Every member's own answer, the answering node's reused.
async fn ask_members(client: &cairn_client::RunClient, first: &NodeInfo) -> Vec<MemberView> {
    let members = first
        .voters
        .iter()
        .map(|m| (m.clone(), true))
        .chain(first.learners.iter().map(|m| (m.clone(), false)));
    let asks = members.map(|(member, voter)| async move {
        let info = if member.id == first.node_id {
            Ok(first.clone())
        } else {
            match client.to_node(&member.addr) {
                Ok(c) => c
                    .with_request_timeout(MEMBER_TIMEOUT)
                    .cluster()
                    .await
                    .map(printable)
                    .map_err(|e| shown(&e.to_string())),
                Err(e) => Err(shown(&e.to_string())),
            }
        };
        MemberView {
            member,
            voter,
            info,
        }
    });
    futures::future::join_all(asks).await
}

/// `s` with its control characters shown, not obeyed ([`escape_controls`]): what a node
/// answers reaches the operator's terminal.
fn shown(s: &str) -> String {
    escape_controls(s).into_owned()
}

/// A node's answer with every text it carries made safe to print, as it enters.
fn printable(mut info: NodeInfo) -> NodeInfo {
    for s in [&mut info.version, &mut info.addr, &mut info.state]
        .into_iter()
        .chain(info.alarms.iter_mut())
        .chain(info.voters.iter_mut().map(|m| &mut m.addr))
        .chain(info.learners.iter_mut().map(|m| &mut m.addr))
    {
        *s = shown(s);
    }
    info
}

/// What `cairn cluster status` prints for the answers, and its warnings.
pub fn report(first: &NodeInfo, views: &[MemberView], executors: &Result<usize, String>) -> Report {
    let mut warnings = Vec::new();
    let answered: Vec<&NodeInfo> = views.iter().filter_map(|v| v.info.as_ref().ok()).collect();
    let leader_id = answered
        .iter()
        .find(|i| i.state == "leader")
        .map(|i| i.node_id)
        .or(first.leader_id);
    let leader_commit = answered
        .iter()
        .find(|i| Some(i.node_id) == leader_id)
        .and_then(|i| i.committed);
    let schedulers: Vec<u64> = answered
        .iter()
        .filter(|i| i.scheduler_active)
        .map(|i| i.node_id)
        .collect();

    let mut text = String::new();
    let id_or = |id: Option<u64>, none: &str| id.map_or(none.to_string(), |i| format!("{i:x}"));
    text += &format!("cluster   {:x}\n", first.cluster_id);
    text += &format!("leader    {}\n", id_or(leader_id, "none"));
    text += &format!(
        "scheduler {}\n",
        match schedulers.as_slice() {
            [] => "none active".to_string(),
            [one] => format!("active on {one:x}"),
            many => format!(
                "active on {} nodes at once: {}",
                many.len(),
                many.iter()
                    .map(|i| format!("{i:x}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    );
    let in_maintenance: Vec<String> = answered
        .iter()
        .filter(|i| i.maintenance)
        .map(|i| format!("{:x}", i.node_id))
        .collect();
    text += &format!(
        "maintenance {}\n",
        if in_maintenance.is_empty() {
            "off".to_string()
        } else {
            format!("on ({})", in_maintenance.join(", "))
        }
    );
    text += &format!(
        "executors {}\n",
        match executors {
            Ok(n) => n.to_string(),
            Err(e) => format!("unknown ({e})"),
        }
    );
    text += &format!(
        "alarms    {}\n\n",
        if first.alarms.is_empty() {
            "none".to_string()
        } else {
            first.alarms.join(", ")
        }
    );

    text += &format!(
        "{:<14} {:<9} {:<30} {:<8} {:>5} {:>9} {:>9} {:>6} {:>9} {:>9}  {}\n",
        "ID",
        "ROLE",
        "ADDRESS",
        "VERSION",
        "TERM",
        "COMMITTED",
        "APPLIED",
        "LAG",
        "REVISION",
        "DB",
        "SCHEDULER"
    );
    for v in views {
        let id = format!("{:x}", v.member.id);
        match &v.info {
            Ok(i) => {
                let lag = match (leader_commit, i.applied) {
                    (Some(c), Some(a)) => Some(c.saturating_sub(a)),
                    _ => None,
                };
                let opt = |o: Option<u64>| o.map_or("-".to_string(), |n| n.to_string());
                text += &format!(
                    "{:<14} {:<9} {:<30} {:<8} {:>5} {:>9} {:>9} {:>6} {:>9} {:>9}  {}\n",
                    id,
                    i.state,
                    v.member.addr,
                    i.version,
                    i.term,
                    opt(i.committed),
                    opt(i.applied),
                    opt(lag),
                    i.revision,
                    human_bytes(i.db_size),
                    if i.scheduler_active {
                        "active"
                    } else {
                        "standby"
                    },
                );
                if lag.is_some_and(|l| l >= LAG_WARNING) {
                    warnings.push(format!(
                        "{id} is {} entries behind the leader",
                        lag.unwrap_or(0)
                    ));
                }
                if state_contradicts(&i.state, v.voter) {
                    warnings.push(format!(
                        "{id} is a {} but reports state {}",
                        if v.voter { "voter" } else { "learner" },
                        i.state
                    ));
                }
            }
            Err(e) => {
                text += &format!(
                    "{:<14} {:<9} {:<30} unreachable: {e}\n",
                    id,
                    if v.voter { "voter" } else { "learner" },
                    v.member.addr
                );
                warnings.push(format!("{id} ({}) does not answer", v.member.addr));
            }
        }
    }
    if leader_id.is_none() {
        warnings.push("no leader: the store cannot take writes (is a majority up?)".into());
    }
    match schedulers.len() {
        0 => warnings.push(
            "no scheduler is active: runs do not advance (maintenance, or a node taking over)"
                .into(),
        ),
        1 => {}
        n => warnings.push(format!(
            "{n} schedulers report active at once (each is fenced; one is stale)"
        )),
    }
    let mut versions: Vec<&str> = answered.iter().map(|i| i.version.as_str()).collect();
    versions.sort_unstable();
    versions.dedup();
    if versions.len() > 1 {
        warnings.push(format!(
            "mixed versions: {} (finish the rolling upgrade)",
            versions.join(", ")
        ));
    }
    if !first.alarms.is_empty() {
        warnings.push(format!(
            "alarm: {} (free space, then `cairn store alarm disarm`)",
            first.alarms.join(", ")
        ));
    }
    if !warnings.is_empty() {
        text.push('\n');
        for w in &warnings {
            text += &format!("warning: {w}\n");
        }
    }
    Report { text, warnings }
}

/// Whether a node's state contradicts its place in the membership (a voter that says
/// learner, a learner that says leader, follower or candidate).
fn state_contradicts(state: &str, voter: bool) -> bool {
    match state {
        "learner" => voter,
        "leader" | "follower" | "candidate" => !voter,
        _ => false,
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64) -> ClusterMember {
        ClusterMember {
            id,
            addr: format!("http://10.0.0.{id}:7070"),
        }
    }

    fn node(id: u64, state: &str, applied: u64, scheduler: bool) -> NodeInfo {
        NodeInfo {
            node_id: id,
            leader_id: Some(1),
            scheduler_active: scheduler,
            revision: 40,
            version: "0.1.0".into(),
            peer_protocol: 1,
            cluster_id: 0xabc,
            addr: member(id).addr,
            state: state.into(),
            term: 3,
            committed: Some(applied),
            applied: Some(applied),
            voters: vec![member(1), member(2), member(3)],
            learners: vec![],
            maintenance: false,
            alarms: vec![],
            db_size: 3 << 20,
        }
    }

    fn view(info: Result<NodeInfo, String>, id: u64) -> MemberView {
        MemberView {
            member: member(id),
            voter: true,
            info,
        }
    }

    #[test]
    fn what_a_node_answers_cannot_drive_the_terminal() {
        let mut hostile = node(2, "follower\x1b[2J", 10, false);
        hostile.version = "0.1.0\x1b]0;pwned\x07".into();
        hostile.voters[0].addr = "http://x\nwarning: none".into();
        let clean = printable(hostile);
        assert_eq!(clean.state, "follower^[[2J");
        assert_eq!(clean.version, "0.1.0^[]0;pwned^G");
        assert_eq!(clean.voters[0].addr, "http://x^Jwarning: none");
    }

    #[test]
    fn a_healthy_cluster_has_no_warnings_and_shows_the_leader_and_scheduler() {
        let first = node(2, "follower", 100, false);
        let views = [
            view(Ok(node(1, "leader", 100, true)), 1),
            view(Ok(first.clone()), 2),
            view(Ok(node(3, "follower", 99, false)), 3),
        ];
        let r = report(&first, &views, &Ok(2));
        assert_eq!(r.warnings, Vec::<String>::new());
        assert!(r.text.contains("leader    1\n"), "{}", r.text);
        assert!(r.text.contains("scheduler active on 1\n"), "{}", r.text);
        assert!(r.text.contains("executors 2\n"), "{}", r.text);
        assert!(r.text.contains("3.0 MiB"), "{}", r.text);
        let row3 = r
            .text
            .lines()
            .find(|l| l.starts_with("3 "))
            .expect("a row for node 3");
        assert!(row3.contains(" 1 "), "lag of 1 entry: {row3}");
    }

    #[test]
    fn a_silent_member_no_scheduler_and_mixed_versions_are_warnings() {
        let first = node(1, "leader", 5_000, false);
        let mut newer = node(2, "follower", 3_000, false);
        newer.version = "0.2.0".into();
        let views = [
            view(Ok(first.clone()), 1),
            view(Ok(newer), 2),
            view(Err("connection refused".into()), 3),
        ];
        let r = report(&first, &views, &Err("timed out".into()));
        let all = r.warnings.join("\n");
        assert!(
            all.contains("3 (http://10.0.0.3:7070) does not answer"),
            "{all}"
        );
        assert!(all.contains("no scheduler is active"), "{all}");
        assert!(all.contains("mixed versions: 0.1.0, 0.2.0"), "{all}");
        assert!(all.contains("2 is 2000 entries behind the leader"), "{all}");
        assert!(
            r.text.contains("unreachable: connection refused"),
            "{}",
            r.text
        );
        assert!(
            r.text.contains("executors unknown (timed out)"),
            "{}",
            r.text
        );
    }

    #[test]
    fn two_active_schedulers_no_leader_and_an_alarm_are_warnings() {
        let mut first = node(1, "candidate", 10, true);
        first.leader_id = None;
        first.alarms = vec!["memberID:2 alarm:NOSPACE".into()];
        let mut other = node(2, "candidate", 10, true);
        other.leader_id = None;
        let views = [view(Ok(first.clone()), 1), view(Ok(other), 2)];
        let r = report(&first, &views, &Ok(0));
        let all = r.warnings.join("\n");
        assert!(all.contains("no leader"), "{all}");
        assert!(all.contains("2 schedulers report active at once"), "{all}");
        assert!(all.contains("alarm: memberID:2 alarm:NOSPACE"), "{all}");
        assert!(
            r.text.contains("active on 2 nodes at once: 1, 2"),
            "{}",
            r.text
        );
    }

    #[test]
    fn a_learner_is_shown_as_one_and_a_voter_claiming_to_be_one_is_a_warning() {
        let first = node(1, "leader", 10, true);
        let learner = MemberView {
            member: member(4),
            voter: false,
            info: Ok(node(4, "learner", 10, false)),
        };
        let confused = view(Ok(node(2, "learner", 10, false)), 2);
        let r = report(
            &first,
            &[view(Ok(first.clone()), 1), learner, confused],
            &Ok(1),
        );
        assert_eq!(
            r.warnings,
            vec!["2 is a voter but reports state learner".to_string()]
        );
        assert!(
            r.text
                .lines()
                .any(|l| l.starts_with("4 ") && l.contains("learner"))
        );
    }
}
