//! A fault-injecting TCP proxy on loopback, put between a client and a server to break the
//! server on purpose: pass bytes through, cut each connection once it has sent a number of
//! bytes upstream (an upload that fails midway), or stop forwarding after a number of bytes
//! while holding the connection open (a server that stalls). Bytes from the server always
//! flow back unchanged.
//!
//! The fault can be changed while connections are open: a connection applies the current
//! fault to its next bytes and counts its budget from the moment it saw that fault change.
//! Budgets count every byte a connection sends upstream (request lines, headers, bodies),
//! so a budget of 64 KiB lets small requests through and cuts or stalls bodies.
//!
//! One task accepts connections and owns one task per connection; dropping the proxy ends
//! them all and closes every socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// Bytes read from a client at a time.
const BUF_LEN: usize = 64 * 1024;

/// What the proxy does to the bytes a client sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything.
    Pass,
    /// Forward this many bytes of each connection, then close it (both sides).
    CutAfter(u64),
    /// Forward this many bytes of each connection, then forward nothing more and never
    /// close it.
    StallAfter(u64),
}

/// How often the faults fired.
#[derive(Debug, Default)]
struct Counters {
    cut: AtomicU64,
    stalled: AtomicU64,
}

/// A running proxy; it stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    fault: watch::Sender<Fault>,
    counters: Arc<Counters>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards each connection to `upstream`,
    /// passing everything until told otherwise.
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (fault, faults) = watch::channel(Fault::Pass);
        let counters = Arc::new(Counters::default());
        let accept = tokio::spawn(accept_loop(listener, upstream, faults, counters.clone()));
        FaultProxy {
            addr,
            fault,
            counters,
            accept,
        }
    }

    /// The proxy's endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Applies `fault` from now on, to open connections and new ones.
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// Connections cut so far.
    pub fn cut(&self) -> u64 {
        self.counters.cut.load(Ordering::Relaxed)
    }

    /// Connections stalled so far.
    pub fn stalled(&self) -> u64 {
        self.counters.stalled.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // The accept task owns the connection tasks: aborting it drops them all.
        self.accept.abort();
    }
}

/// Accepts connections until aborted; each connection's task lives in `conns`.
async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    faults: watch::Receiver<Fault>,
    counters: Arc<Counters>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { return };
                conns.spawn(relay(client, upstream, faults.clone(), counters.clone()));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// How the client-to-server direction of a connection ended.
enum Upstream {
    /// The client closed its side, or a socket failed.
    Closed,
    /// The fault cut the connection.
    Cut,
    /// The fault stalled the connection.
    Stalled,
}

/// Relays one connection both ways, applying the fault to the bytes sent upstream.
async fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    faults: watch::Receiver<Fault>,
    counters: Arc<Counters>,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_rd, mut client_wr) = client.into_split();
    let (mut server_rd, mut server_wr) = server.into_split();
    let up = forward_up(&mut client_rd, &mut server_wr, faults);
    let down = tokio::io::copy(&mut server_rd, &mut client_wr);
    tokio::pin!(down);
    let ended = tokio::select! {
        ended = up => ended,
        _ = &mut down => return,
    };
    match ended {
        Upstream::Closed => {
            let _ = server_wr.shutdown().await;
            let _ = down.await;
        }
        Upstream::Cut => {
            counters.cut.fetch_add(1, Ordering::Relaxed);
        }
        Upstream::Stalled => {
            counters.stalled.fetch_add(1, Ordering::Relaxed);
            // Hold both sockets open, answering nothing, until the proxy is dropped.
            std::future::pending::<()>().await;
        }
    }
}

/// Copies client bytes to the server within the current fault's budget.
async fn forward_up(
    client: &mut OwnedReadHalf,
    server: &mut OwnedWriteHalf,
    mut faults: watch::Receiver<Fault>,
) -> Upstream {
    let mut buf = vec![0u8; BUF_LEN];
    let mut fault = *faults.borrow_and_update();
    let mut sent: u64 = 0;
    loop {
        let n = match client.read(&mut buf).await {
            Ok(0) | Err(_) => return Upstream::Closed,
            Ok(n) => n,
        };
        if faults.has_changed().unwrap_or(false) {
            fault = *faults.borrow_and_update();
            sent = 0;
        }
        let budget = match fault {
            Fault::Pass => u64::MAX,
            Fault::CutAfter(limit) | Fault::StallAfter(limit) => limit.saturating_sub(sent),
        };
        let take = usize::try_from(budget).map_or(n, |budget| budget.min(n));
        if server.write_all(&buf[..take]).await.is_err() {
            return Upstream::Closed;
        }
        sent += take as u64;
        if take < n {
            return match fault {
                Fault::StallAfter(_) => Upstream::Stalled,
                Fault::CutAfter(_) | Fault::Pass => Upstream::Cut,
            };
        }
    }
}
