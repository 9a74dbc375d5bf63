//! The cluster under test: three `cairn serve` nodes over mutual TLS (certificates from
//! `cairn cert`, the admin token on the nodes only), two standalone executors that
//! register with a registration token, and a user token for the clients; and the faults
//! of [`super::schedule`] applied to its processes and links.
//!
//! Given a [`Net`], each node runs in its own namespace and listens and advertises on
//! its namespace address (its certificate carries that address too), so the links
//! between nodes can be cut; the executors and the clients stay in the test's namespace
//! and reach every node over the host veth, which no cut drops. Without one, the nodes
//! listen on loopback and the rig has no partitions. The object storage directory is a
//! local path either way (every process shares the file system).

use std::path::Path;
use std::time::Duration;

use cairn_client::api::{CreateTokenRequest, TokenRole};
use cairn_client::{ClientTls, RunClient};

use crate::security::tls::Certs;
use crate::support::netns::Net;
use crate::support::poll::wait_for;
use crate::support::process::{Place, TOKEN};
use crate::support::service::{ExecutorProc, ServiceProc};

use super::schedule::{EXECUTORS, NODES};

/// How many lost attempts of a task run again (the default, 2, is too few when an
/// executor can be killed every few seconds).
pub const RETRY_LOST_TASKS: &str = "10";

/// The running processes and the credentials of the clients.
pub struct Rig {
    pub nodes: Vec<ServiceProc>,
    pub executors: Vec<ExecutorProc>,
    pub tls: ClientTls,
    /// A `--role user` token: what the clients create runs and read logs with.
    pub user_token: String,
    pub urls: Vec<String>,
    _certs: Certs,
    /// The nodes' namespaces, when they have them. Declared after the processes: they
    /// are killed before it goes (its drop removes the namespaces and every cut).
    net: Option<Net>,
}

impl Rig {
    /// Starts the nodes (n1 with `--init`, the others joining it), node `i` in `net`'s
    /// namespace `i` when given, on loopback otherwise; makes the tokens and starts the
    /// executors. `node_env` is extra environment of the nodes (`CAIRN_LOG`).
    pub async fn start(dir: &Path, node_env: &[(&str, &str)], net: Option<Net>) -> Rig {
        let names: Vec<String> = (1..=NODES).map(|i| format!("n{i}")).collect();
        let issued: Vec<(&str, &str)> = names.iter().map(|n| ("node", n.as_str())).collect();
        let places: Vec<Place> = match &net {
            Some(net) => net.places(),
            None => (0..NODES).map(|_| Place::loopback()).collect(),
        };
        let certs = Certs::make_with_sans(&dir.join("certs"), &issued, |name| {
            let i = names.iter().position(|n| n == name).expect("a node's name");
            vec![places[i].ip.to_string()]
        });
        let objects = dir.join("objects").display().to_string();
        let mut nodes: Vec<ServiceProc> = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let mut extra = certs.serve_args(name);
            extra.extend(
                [
                    "--objects",
                    &objects,
                    "--retry-lost-tasks",
                    RETRY_LOST_TASKS,
                ]
                .map(String::from),
            );
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            let join = nodes.first().map(|n| n.url.clone());
            let mut node = tokio::task::block_in_place(|| {
                ServiceProc::start_at(
                    &dir.join(name),
                    places[i].clone(),
                    i == 0,
                    join.as_deref(),
                    &extra,
                    node_env,
                )
            });
            node.url = format!("https://{}:{}", places[i].ip, places[i].port);
            nodes.push(node);
        }
        let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
        let tls = certs.client_tls(None);
        let admin = RunClient::with_tls(&urls, Some(TOKEN.to_string()), &tls).expect("client");
        let token = |role: TokenRole| {
            let admin = admin.clone();
            async move {
                let req = CreateTokenRequest {
                    role,
                    name: format!("chaos {role:?}"),
                };
                wait_for(Duration::from_secs(60), "a token", || async {
                    admin.create_token(&req).await.ok()
                })
                .await
                .token
            }
        };
        let user_token = token(TokenRole::User).await;
        let registration = token(TokenRole::Registration).await;
        let servers = urls.join(",");
        let ca = certs.ca();
        let executors = (0..EXECUTORS)
            .map(|i| {
                tokio::task::block_in_place(|| {
                    ExecutorProc::start_with_token(
                        &servers,
                        &dir.join(format!("ex{i}")),
                        &registration,
                        &["--ca-file", &ca, "--active-tasks-limit", "4"],
                    )
                })
            })
            .collect();
        Rig {
            nodes,
            executors,
            tls,
            user_token,
            urls,
            _certs: certs,
            net,
        }
    }

    /// The nodes' network (a partition fault on a rig without one is a bug of the
    /// schedule).
    pub fn net(&self) -> &Net {
        self.net
            .as_ref()
            .expect("partitions are scheduled only when the nodes have namespaces")
    }

    /// A user's client over every node (the request timeout short enough that a frozen
    /// node costs a read little).
    pub fn client(&self) -> RunClient {
        RunClient::with_tls(&self.urls, Some(self.user_token.clone()), &self.tls)
            .expect("client")
            .with_request_timeout(Duration::from_secs(10))
    }

    /// A user's client of node `i` alone, asking once, for the monitor's polls.
    pub fn node_client(&self, i: usize, timeout: Duration) -> RunClient {
        RunClient::with_tls(
            std::slice::from_ref(&self.urls[i]),
            Some(self.user_token.clone()),
            &self.tls,
        )
        .expect("client")
        .with_request_timeout(timeout)
        .with_failover_window(Duration::ZERO)
    }

    /// kill -9 node `i`.
    pub fn kill_node(&mut self, i: usize) {
        self.nodes[i].kill9();
    }

    /// Starts killed node `i` again over its data dir (blocks until it serves).
    pub fn restart_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        tokio::task::block_in_place(|| node.restart());
    }

    pub fn freeze_node(&self, i: usize) {
        self.nodes[i].pause();
    }

    pub fn thaw_node(&self, i: usize) {
        self.nodes[i].resume();
    }

    pub fn kill_executor(&mut self, i: usize) {
        self.executors[i].kill9();
    }

    /// Starts killed executor `i` again (same id, its credential from its data dir).
    pub fn restart_executor(&mut self, i: usize) {
        let executor = &mut self.executors[i];
        tokio::task::block_in_place(|| executor.restart());
    }
}
