//! The simulated network: nodes of one process call each other directly, through a
//! fault matrix that can cut any directed link, isolate a node or heal everything. No
//! sockets; used by the cluster tests to elect, partition, heal and restart nodes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{PeerHandler, Transport, TransportError};
use crate::rpc::{PeerRequest, PeerResponse};
use crate::types::NodeAddr;

#[derive(Default)]
struct Fabric {
    /// addr → handler of the node currently listening there.
    nodes: HashMap<String, Arc<dyn PeerHandler>>,
    /// Cut directed links (from addr, to addr).
    cut: HashSet<(String, String)>,
}

/// The shared network. Each node gets its own transport from [`SimNetwork::transport`].
#[derive(Clone, Default)]
pub struct SimNetwork {
    fabric: Arc<Mutex<Fabric>>,
}

impl SimNetwork {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Fabric> {
        self.fabric.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `handler` reachable at `addr` (replacing a previous node there).
    pub fn register(&self, addr: &str, handler: Arc<dyn PeerHandler>) {
        self.lock().nodes.insert(addr.to_string(), handler);
    }

    /// Takes the node at `addr` off the network (a crashed or stopped process).
    pub fn unregister(&self, addr: &str) {
        self.lock().nodes.remove(addr);
    }

    /// The transport a node at `from` uses.
    pub fn transport(&self, from: &str) -> Arc<dyn Transport> {
        Arc::new(SimTransport {
            from: from.to_string(),
            net: self.clone(),
        })
    }

    /// Cuts both directions between `a` and every other node.
    pub fn isolate(&self, a: &str) {
        let mut f = self.lock();
        let others: Vec<String> = f
            .nodes
            .keys()
            .filter(|k| k.as_str() != a)
            .cloned()
            .collect();
        for o in others {
            f.cut.insert((a.to_string(), o.clone()));
            f.cut.insert((o, a.to_string()));
        }
    }

    /// Cuts the directed link `from → to`.
    pub fn cut(&self, from: &str, to: &str) {
        self.lock().cut.insert((from.to_string(), to.to_string()));
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.lock().cut.clear();
    }

    fn route(&self, from: &str, to: &str) -> Option<Arc<dyn PeerHandler>> {
        let f = self.lock();
        if f.cut.contains(&(from.to_string(), to.to_string())) {
            return None;
        }
        f.nodes.get(to).cloned()
    }

    fn link_up(&self, from: &str, to: &str) -> bool {
        !self
            .lock()
            .cut
            .contains(&(from.to_string(), to.to_string()))
    }
}

struct SimTransport {
    from: String,
    net: SimNetwork,
}

impl Transport for SimTransport {
    fn send(
        &self,
        target: &NodeAddr,
        req: PeerRequest,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<PeerResponse, TransportError>> {
        let (from, to, net) = (self.from.clone(), target.addr.clone(), self.net.clone());
        async move {
            let Some(handler) = net.route(&from, &to) else {
                return Err(TransportError::Unreachable(format!(
                    "{from} → {to} is cut or down"
                )));
            };
            let resp = tokio::time::timeout(timeout, handler.handle(req))
                .await
                .map_err(|_| {
                    TransportError::Timeout(format!("{to} did not answer in {timeout:?}"))
                })?;
            // The answer travels back over the reverse link.
            if !net.link_up(&to, &from) {
                return Err(TransportError::Timeout(format!(
                    "answer {to} → {from} lost"
                )));
            }
            Ok(resp)
        }
        .boxed()
    }
}
