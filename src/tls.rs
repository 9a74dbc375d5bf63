//! TLS on the HTTP port (security review M2): rustls on the `ring` provider, certificate
//! and key from PEM files that are read again when they change (checked on each new
//! connection), and optional client certificates verified against the cluster CA
//! (`--tls-client-ca`).
//!
//! One port serves clients, executors and peers, so client certificates are optional on
//! the listener. What a connection proved is a [`ConnPeer`]: a client certificate that
//! chains to the cluster CA *and* is valid for server authentication is a node
//! certificate (`cairn cert issue --kind node`); client and executor certificates are
//! issued for client authentication only. The peer route `/raft/rpc` on a TLS port
//! answers only connections that presented a node certificate ([`peer_route_refusal`]),
//! in addition to the peer credential it checks itself.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio_rustls::TlsAcceptor;

/// The PEM files of a TLS listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain (leaf first).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The CA that signs client certificates (the cluster CA); `None`: no client
    /// certificates are asked for, and the peer route is closed.
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate in it")]
    NoCertificate { path: String },
    #[error("{path}: no PEM private key in it ({message})")]
    NoKey { path: String, message: String },
    #[error("TLS setup: {0}")]
    Config(String),
}

/// What a connection proved about its client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnPeer {
    /// The connection is TLS.
    pub tls: bool,
    /// It presented a node certificate signed by the cluster CA.
    pub node_cert: bool,
}

/// Why a request on a connection must be refused before routing, if it must: the peer
/// route on a TLS connection without a node certificate.
pub fn peer_route_refusal(path: &str, conn: ConnPeer) -> Option<&'static str> {
    (conn.tls && !conn.node_cert && path == crate::api::peer::RPC_PATH).then_some(
        "the peer route needs mutual TLS with a node certificate signed by the cluster CA",
    )
}

/// The `ring` provider every TLS config of this process uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .filter_map(Result::ok)
        .collect::<Vec<_>>();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

/// Reads the first private key of a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::NoKey {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// A file's identity for change detection: modification time, length and inode.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

struct Loaded {
    stamps: Vec<Stamp>,
    acceptor: TlsAcceptor,
    roots: Option<Arc<RootCertStore>>,
}

/// The TLS side of a listener; reloads its files when they change.
pub struct ReloadingTls {
    files: TlsFiles,
    current: Mutex<Loaded>,
}

impl ReloadingTls {
    /// Loads the files; fails when they do not make a valid config.
    pub fn load(files: TlsFiles) -> Result<ReloadingTls, TlsError> {
        let loaded = load(&files)?;
        Ok(ReloadingTls {
            files,
            current: Mutex::new(loaded),
        })
    }

    /// The files' stamps, in a fixed order.
    fn stamps(&self) -> Vec<Stamp> {
        let mut v = vec![stamp(&self.files.cert), stamp(&self.files.key)];
        if let Some(ca) = &self.files.client_ca {
            v.push(stamp(ca));
        }
        v
    }

    /// The acceptor for a new connection (and the client CA), after reloading the files
    /// if any changed. A reload that fails keeps the previous config (and says so once
    /// per change).
    pub fn acceptor(&self) -> (TlsAcceptor, Option<Arc<RootCertStore>>) {
        let stamps = self.stamps();
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if cur.stamps != stamps {
            match load(&self.files) {
                Ok(new) => {
                    tracing::info!(cert = %self.files.cert.display(), "reloaded the TLS certificate");
                    *cur = new;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "TLS files changed but do not load; serving the previous ones");
                    cur.stamps = stamps;
                }
            }
        }
        (cur.acceptor.clone(), cur.roots.clone())
    }
}

fn load(files: &TlsFiles) -> Result<Loaded, TlsError> {
    // Stamps first: a change while loading is seen on the next connection.
    let mut stamps = vec![stamp(&files.cert), stamp(&files.key)];
    let certs = read_certs(&files.cert)?;
    let key = read_key(&files.key)?;
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let (builder, roots) = match &files.client_ca {
        Some(ca) => {
            stamps.push(stamp(ca));
            let mut roots = RootCertStore::empty();
            for c in read_certs(ca)? {
                roots
                    .add(c)
                    .map_err(|e| TlsError::Config(format!("{}: {e}", ca.display())))?;
            }
            let roots = Arc::new(roots);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            (builder.with_client_cert_verifier(verifier), Some(roots))
        }
        None => (builder.with_no_client_auth(), None),
    };
    let mut cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(format!("{}: {e}", files.cert.display())))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Loaded {
        stamps,
        acceptor: TlsAcceptor::from(Arc::new(cfg)),
        roots,
    })
}

/// Whether a verified client chain is a node certificate: it chains to `roots` and is
/// valid for server authentication (client and executor certificates are not).
pub fn is_node_cert(chain: &[CertificateDer<'_>], roots: &RootCertStore) -> bool {
    let Some((leaf, intermediates)) = chain.split_first() else {
        return false;
    };
    let Ok(ee) = webpki::EndEntityCert::try_from(leaf) else {
        return false;
    };
    ee.verify_for_usage(
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .all,
        &roots.roots,
        intermediates,
        UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_route_needs_a_node_certificate_on_tls_only() {
        let rpc = crate::api::peer::RPC_PATH;
        let plain = ConnPeer::default();
        let client = ConnPeer {
            tls: true,
            node_cert: false,
        };
        let node = ConnPeer {
            tls: true,
            node_cert: true,
        };
        assert!(peer_route_refusal(rpc, plain).is_none());
        assert!(peer_route_refusal(rpc, client).is_some());
        assert!(peer_route_refusal(rpc, node).is_none());
        assert!(peer_route_refusal("/api/v1/runs", client).is_none());
        assert!(peer_route_refusal("/raft/rpc/", client).is_none());
    }
}
