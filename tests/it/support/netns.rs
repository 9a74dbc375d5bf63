//! Real network partitions for the store's tests (issue 14): a [`Net`] of Linux network
//! namespaces, one per node, each with a veth pair on one private bridge, so the links
//! between nodes can be cut and restored, both ways or one way, while the test process
//! keeps reaching every node.
//!
//! Layout, for a `Net` numbered `k` of process `pid` (all names start `cairnpt-{pid}-{k}`,
//! so a later run finds and removes what a crashed one left):
//!
//! - a hub namespace `…-hub` holding the bridge `br0`. The bridge is not in the root
//!   namespace on purpose: where Docker runs, `br_netfilter` sends bridged frames through
//!   the root namespace's `FORWARD` chain, whose policy Docker sets to `DROP`, so a root
//!   bridge would silently drop node-to-node traffic. In its own namespace the bridge
//!   sees an empty filter table.
//! - node namespaces `…-n{i}`, each with `lo` up and `eth0` at `10.A.B.(i+1)/24`, its
//!   peer end `n{i}` on the bridge;
//! - a veth `cpt{pid}x{k}` in the root namespace at `10.A.B.254/24`, its peer `host` on
//!   the bridge: how the test reaches the nodes. `10.A.B` is unique per `Net`, so tests
//!   run in parallel.
//!
//! A cut from `a` to `b` is an iptables `DROP` of packets from `a`'s address in `b`'s
//! `INPUT` chain, so it breaks established connections too; the test's own traffic (from
//! `.254`) is never dropped. Everything is removed on drop: deleting a namespace deletes
//! its veth ends and its rules.
//!
//! Needs root. [`Net::new`] returns `None` with the reason printed when namespaces cannot
//! be made, or panics with it where root tests are required (`CI` or
//! `CAIRN_REQUIRE_ROOT_TESTS` set), as `tests/it/nospace.rs` does for its tmpfs.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::support::process::{Cluster, Place};

/// The port every node listens on: each namespace has its own address, so no two nodes
/// share one.
pub const NODE_PORT: u16 = 2379;

/// Prefix of every namespace a `Net` makes.
const PREFIX: &str = "cairnpt-";

/// Numbers the `Net`s of this process (their names and subnets).
static NEXT: AtomicU32 = AtomicU32::new(0);

/// Why the network could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("not root (euid {0}): network namespaces need root")]
    NotRoot(u32),
    #[error("`{command}` failed: {why}")]
    Command { command: String, why: String },
    #[error("no free 10.x.y.0/24 subnet for the test network")]
    NoSubnet,
}

/// Whether tests that need root must fail rather than skip (CI runs as root).
pub fn root_tests_required() -> bool {
    ["CI", "CAIRN_REQUIRE_ROOT_TESTS"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
}

/// N node namespaces on a private bridge, with link faults between them.
pub struct Net {
    name: String,
    subnet: [u8; 3],
    nodes: usize,
    /// Directed cuts in force: `(from, to)`.
    cuts: Mutex<BTreeSet<(usize, usize)>>,
}

impl Net {
    /// A network of `nodes` namespaces, or `None` (printed) when this machine cannot make
    /// one and root tests are not required; panics with the reason when they are.
    pub fn new(nodes: usize) -> Option<Net> {
        match Net::try_new(nodes) {
            Ok(net) => Some(net),
            Err(e) => {
                assert!(
                    !root_tests_required(),
                    "network namespaces are required here (CI or CAIRN_REQUIRE_ROOT_TESTS) \
                     but cannot be made: {e}"
                );
                eprintln!("skipped: the partition tests need network namespaces ({e})");
                None
            }
        }
    }

    /// A network of `nodes` namespaces, or why this machine cannot make one (for a test
    /// that has a fallback without namespaces; [`Net::new`] for one that has none).
    pub fn try_new(nodes: usize) -> Result<Net, NetError> {
        assert!(nodes < 254, "a /24 holds the nodes and the host");
        let euid = nix::unistd::geteuid().as_raw();
        if euid != 0 {
            return Err(NetError::NotRoot(euid));
        }
        remove_leftovers();
        let pid = std::process::id();
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let subnet = free_subnet(pid, k)?;
        // Made before anything else, so Drop removes whatever exists if setup fails.
        let net = Net {
            name: format!("{PREFIX}{pid}-{k}"),
            subnet,
            nodes,
            cuts: Mutex::default(),
        };
        net.build(pid, k)?;
        Ok(net)
    }

    fn build(&self, pid: u32, k: u32) -> Result<(), NetError> {
        let hub = self.hub();
        ip(&["netns", "add", &hub])?;
        in_ns(&hub, &["ip", "link", "set", "lo", "up"])?;
        in_ns(&hub, &["ip", "link", "add", "br0", "type", "bridge"])?;
        in_ns(&hub, &["ip", "link", "set", "br0", "up"])?;
        // Best effort: where br_netfilter is per namespace, keep bridged frames out of
        // iptables altogether (the hub has no rules either way).
        let _ = in_ns(
            &hub,
            &["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0"],
        );
        for i in 0..self.nodes {
            let ns = self.netns(i);
            let end = format!("n{i}");
            ip(&["netns", "add", &ns])?;
            in_ns(&ns, &["ip", "link", "set", "lo", "up"])?;
            ip(&[
                "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &end, "netns",
                &hub,
            ])?;
            let addr = format!("{}/24", self.ip(i));
            in_ns(&ns, &["ip", "addr", "add", &addr, "dev", "eth0"])?;
            in_ns(&ns, &["ip", "link", "set", "eth0", "up"])?;
            in_ns(&hub, &["ip", "link", "set", &end, "master", "br0", "up"])?;
            // Fail now, not at the first cut, when iptables cannot be used here.
            in_ns(&ns, &["iptables", "-w", "-F", "INPUT"])?;
        }
        let host_if = format!("cpt{pid}x{k}");
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", "host", "netns", &hub,
        ])?;
        in_ns(&hub, &["ip", "link", "set", "host", "master", "br0", "up"])?;
        let addr = format!("{}/24", self.host_ip());
        ip(&["addr", "add", &addr, "dev", &host_if])?;
        ip(&["link", "set", &host_if, "up"])?;
        Ok(())
    }

    fn hub(&self) -> String {
        format!("{}-hub", self.name)
    }

    /// The namespace of node `i`.
    pub fn netns(&self, i: usize) -> String {
        format!("{}-n{i}", self.name)
    }

    /// Node `i`'s address.
    pub fn ip(&self, i: usize) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, i as u8 + 1)
    }

    /// The test process's address on the bridge.
    pub fn host_ip(&self) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, 254)
    }

    /// Where node `i` runs: its namespace, its address, [`NODE_PORT`].
    pub fn place(&self, i: usize) -> Place {
        Place {
            ip: IpAddr::V4(self.ip(i)),
            port: NODE_PORT,
            netns: Some(self.netns(i)),
        }
    }

    /// Every node's place, in order.
    pub fn places(&self) -> Vec<Place> {
        (0..self.nodes).map(|i| self.place(i)).collect()
    }

    /// Drops what `from` sends to `to` (`to` still reaches `from`, though TCP, needing
    /// both ways, mostly stalls either way: the asymmetry is which packets get through).
    pub fn cut_one_way(&self, from: usize, to: usize) {
        let mut cuts = self.cuts.lock().unwrap();
        if cuts.insert((from, to)) {
            let src = self.ip(from).to_string();
            in_ns(
                &self.netns(to),
                &["iptables", "-w", "-I", "INPUT", "-s", &src, "-j", "DROP"],
            )
            .expect("add a DROP rule");
        }
    }

    /// Lets `from` reach `to` again.
    pub fn heal_one_way(&self, from: usize, to: usize) {
        let mut cuts = self.cuts.lock().unwrap();
        if cuts.remove(&(from, to)) {
            let src = self.ip(from).to_string();
            in_ns(
                &self.netns(to),
                &["iptables", "-w", "-D", "INPUT", "-s", &src, "-j", "DROP"],
            )
            .expect("remove a DROP rule");
        }
    }

    /// Cuts the link between `a` and `b`, both ways.
    pub fn cut(&self, a: usize, b: usize) {
        self.cut_one_way(a, b);
        self.cut_one_way(b, a);
    }

    /// Restores the link between `a` and `b`, both ways.
    pub fn heal(&self, a: usize, b: usize) {
        self.heal_one_way(a, b);
        self.heal_one_way(b, a);
    }

    /// Cuts `n` from every other node (the test still reaches it).
    pub fn isolate(&self, n: usize) {
        for other in (0..self.nodes).filter(|&o| o != n) {
            self.cut(n, other);
        }
    }

    /// Splits the nodes into `side` and the rest: no link across.
    pub fn split(&self, side: &[usize]) {
        for &a in side {
            for b in (0..self.nodes).filter(|b| !side.contains(b)) {
                self.cut(a, b);
            }
        }
    }

    /// Removes every cut.
    pub fn heal_all(&self) {
        let cuts: Vec<_> = self.cuts.lock().unwrap().iter().copied().collect();
        for (from, to) in cuts {
            self.heal_one_way(from, to);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for i in 0..self.nodes {
            remove_netns(&self.netns(i));
        }
        // Takes the bridge and the host veth (its peer is in the hub) with it.
        remove_netns(&self.hub());
    }
}

/// Runs `ip ARGS`.
fn ip(args: &[&str]) -> Result<(), NetError> {
    run("ip", args)
}

/// Runs `ARGS` inside namespace `ns`.
fn in_ns(ns: &str, args: &[&str]) -> Result<(), NetError> {
    let mut all = vec!["netns", "exec", ns];
    all.extend_from_slice(args);
    run("ip", &all)
}

fn run(program: &str, args: &[&str]) -> Result<(), NetError> {
    let command = format!("{program} {}", args.join(" "));
    match Command::new(program).args(args).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(NetError::Command {
            command,
            why: format!(
                "{}: {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
        }),
        Err(e) => Err(NetError::Command {
            command,
            why: e.to_string(),
        }),
    }
}

fn stdout(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Kills what still runs in `ns` (a node of a crashed run) and deletes it.
fn remove_netns(ns: &str) {
    for pid in stdout("ip", &["netns", "pids", ns]).split_whitespace() {
        if let Ok(pid) = pid.parse::<i32>() {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    let _ = ip(&["netns", "del", ns]);
}

/// Removes the namespaces of earlier test processes that are gone (a crash or a kill
/// skipped their Drop).
fn remove_leftovers() {
    let listing = stdout("ip", &["netns", "list"]);
    for ns in listing.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = ns.strip_prefix(PREFIX) else {
            continue;
        };
        let owner = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        let alive = owner.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            remove_netns(ns);
        }
    }
}

/// A `10.A.B.0/24` no route of the root namespace uses yet: `A` from the process id,
/// `B` the `Net`'s number, so concurrent tests and test processes pick different ones.
fn free_subnet(pid: u32, k: u32) -> Result<[u8; 3], NetError> {
    let routes = stdout("ip", &["-4", "route", "show"]);
    let first = 180 + (pid % 40) as u8;
    (0..40u32)
        .flat_map(|da| (0..256u32).map(move |db| (da, db)))
        .map(|(da, db)| {
            let a = 180 + ((u32::from(first) - 180 + da) % 40) as u8;
            let b = ((k + db) % 256) as u8;
            [10, a, b]
        })
        .find(|[x, a, b]| !routes.contains(&format!("{x}.{a}.{b}.")))
        .ok_or(NetError::NoSubnet)
}

/// A store cluster with one node per namespace of its [`Net`]: link faults through
/// `net`, process faults (SIGSTOP, SIGCONT) here.
pub struct NetCluster {
    /// Declared first: its nodes are killed before their namespaces go.
    pub cluster: Cluster,
    pub net: Net,
    frozen: Mutex<BTreeSet<usize>>,
}

impl NetCluster {
    /// `n` nodes (engine redb, timing `lan`), or `None` as [`Net::new`].
    pub fn start(n: usize) -> Option<NetCluster> {
        let net = Net::new(n)?;
        let cluster = Cluster::start_at(net.places(), "redb");
        for node in &cluster.nodes {
            let pid = node.pid().expect("a started node runs");
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            assert_eq!(
                comm.trim(),
                "cairn",
                "`ip netns exec` should exec the node, so its pid is the node's"
            );
        }
        Some(NetCluster {
            cluster,
            net,
            frozen: Mutex::default(),
        })
    }

    /// SIGSTOPs node `i`: it keeps its sockets, and answers nothing until thawed.
    pub fn freeze(&self, i: usize) {
        self.signal(i, Signal::SIGSTOP);
        self.frozen.lock().unwrap().insert(i);
    }

    /// SIGCONTs node `i`.
    pub fn thaw(&self, i: usize) {
        self.signal(i, Signal::SIGCONT);
        self.frozen.lock().unwrap().remove(&i);
    }

    /// Thaws every frozen node and heals every link.
    pub fn heal_everything(&self) {
        let frozen: Vec<usize> = self.frozen.lock().unwrap().iter().copied().collect();
        for i in frozen {
            self.thaw(i);
        }
        self.net.heal_all();
    }

    fn signal(&self, i: usize, signal: Signal) {
        let pid = self.cluster.nodes[i].pid().expect("a running node");
        nix::sys::signal::kill(Pid::from_raw(pid as i32), signal)
            .unwrap_or_else(|e| panic!("{signal} to node {i}: {e}"));
    }
}
