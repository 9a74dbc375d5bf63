//! TLS settings of Cairn's clients: the CA file that signs the servers' certificates
//! (`cairn cert init`'s `ca.pem`) and, for mutual TLS, a client certificate and its key
//! (PEM files). Without a CA file an `https://` server is checked against no root at
//! all, so it fails: Cairn's clients trust only the CA they are given.

use std::path::{Path, PathBuf};

/// Where a client's TLS files are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// PEM file of the CA(s) that sign the servers' certificates.
    pub ca_file: Option<PathBuf>,
    /// PEM file of a client certificate (mutual TLS), with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("a client certificate needs its key, and a key its certificate")]
    Incomplete,
    #[error("TLS client setup: {0}")]
    Client(String),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsConfigError> {
    std::fs::read(path).map_err(|source| TlsConfigError::Read {
        path: path.display().to_string(),
        source,
    })
}

impl ClientTls {
    /// Adds the CA roots and the client identity to a reqwest client builder.
    pub fn apply(
        &self,
        mut builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, TlsConfigError> {
        builder = builder.tls_built_in_root_certs(false);
        if let Some(ca) = &self.ca_file {
            let invalid = |e: reqwest::Error| TlsConfigError::Invalid {
                path: ca.display().to_string(),
                message: e.to_string(),
            };
            let certs = reqwest::Certificate::from_pem_bundle(&read(ca)?).map_err(invalid)?;
            if certs.is_empty() {
                return Err(TlsConfigError::Invalid {
                    path: ca.display().to_string(),
                    message: "no PEM certificate in it".into(),
                });
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                let mut pem = read(cert)?;
                pem.push(b'\n');
                pem.extend(read(key)?);
                let id =
                    reqwest::Identity::from_pem(&pem).map_err(|e| TlsConfigError::Invalid {
                        path: cert.display().to_string(),
                        message: e.to_string(),
                    })?;
                builder = builder.identity(id);
            }
            (None, None) => {}
            _ => return Err(TlsConfigError::Incomplete),
        }
        Ok(builder)
    }
}
