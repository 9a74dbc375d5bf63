//! `cairn cert init|issue`: a cluster CA and the certificates it signs (rcgen on ring).
//!
//! `init --dir D` writes `D/ca.pem` and `D/ca-key.pem` (0600). `issue --ca-dir D --kind
//! K --name N [--san S]...` writes `N.pem` and `N-key.pem` (0600) into `--out-dir`
//! (default `D`). A **node** certificate is valid for server and client authentication
//! (a node serves TLS and dials its peers with it; the peer route accepts only these);
//! **executor** and **client** certificates are for client authentication only.
//! Certificates are ECDSA P-256; the CA lasts 10 years, the others 2.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};

/// The CA's subject; `issue` rebuilds the issuer from it and the CA key.
const CA_NAME: &str = "cairn cluster CA";
const CA_DAYS: i64 = 3650;
const LEAF_DAYS: i64 = 730;

#[derive(Subcommand, Debug)]
pub enum CertCommand {
    /// Make a cluster CA: DIR/ca.pem and DIR/ca-key.pem.
    Init {
        /// Where to write the CA (made if missing; existing CA files are not replaced).
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue a node, executor or client certificate signed by the CA of --ca-dir.
    Issue(IssueArgs),
}

#[derive(Args, Debug)]
pub struct IssueArgs {
    /// The directory `cert init` wrote the CA to.
    #[arg(long)]
    pub ca_dir: PathBuf,
    /// node (serves TLS and talks to peers), executor or client.
    #[arg(long, value_enum)]
    pub kind: CertKind,
    /// The certificate's name (its common name and file name).
    #[arg(long)]
    pub name: String,
    /// A host name or IP address the node is reached at (repeatable; default: NAME).
    #[arg(long = "san")]
    pub sans: Vec<String>,
    /// Where to write NAME.pem and NAME-key.pem (default: the CA directory).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CertKind {
    Node,
    Executor,
    Client,
}

pub fn run(cmd: CertCommand) -> anyhow::Result<()> {
    match cmd {
        CertCommand::Init { dir } => {
            let (cert, key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
            if cert.exists() || key.exists() {
                bail!("{} already holds a CA (ca.pem / ca-key.pem)", dir.display());
            }
            let (cert_pem, key_pem) = make_ca()?;
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            write_file(&key, key_pem.as_bytes(), true)?;
            write_file(&cert, cert_pem.as_bytes(), false)?;
            outln!("wrote {} and {}", cert.display(), key.display())?;
        }
        CertCommand::Issue(args) => {
            check_name(&args.name)?;
            let key_pem = std::fs::read_to_string(args.ca_dir.join("ca-key.pem"))
                .with_context(|| format!("reading the CA key in {}", args.ca_dir.display()))?;
            let (cert_pem, leaf_key) = issue(&key_pem, args.kind, &args.name, &args.sans)?;
            let out = args.out_dir.unwrap_or(args.ca_dir);
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let (cert, key) = (
                out.join(format!("{}.pem", args.name)),
                out.join(format!("{}-key.pem", args.name)),
            );
            write_file(&key, leaf_key.as_bytes(), true)?;
            write_file(&cert, cert_pem.as_bytes(), false)?;
            outln!("wrote {} and {}", cert.display(), key.display())?;
        }
    }
    Ok(())
}

/// A name is a file name: letters, digits, `.`, `-`, `_`, not starting with `.`.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if !ok {
        bail!("invalid certificate name {name:?} (letters, digits, '.', '-', '_'; at most 64)");
    }
    Ok(())
}

fn validity(params: &mut CertificateParams, days: i64) {
    let day = |d: chrono::DateTime<chrono::Utc>| {
        use chrono::Datelike;
        rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8)
    };
    let now = chrono::Utc::now();
    params.not_before = day(now - chrono::Duration::days(1));
    params.not_after = day(now + chrono::Duration::days(days));
}

fn serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive
    SerialNumber::from_slice(&bytes)
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// A new CA: (certificate PEM, key PEM).
pub fn make_ca() -> anyhow::Result<(String, String)> {
    let key = KeyPair::generate().context("generating the CA key")?;
    let mut params = ca_params();
    validity(&mut params, CA_DAYS);
    params.serial_number = Some(serial());
    let cert = params.self_signed(&key).context("signing the CA")?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A certificate of `kind` for `name` signed by the CA key: (certificate PEM, key PEM).
pub fn issue(
    ca_key_pem: &str,
    kind: CertKind,
    name: &str,
    sans: &[String],
) -> anyhow::Result<(String, String)> {
    let ca_key = KeyPair::from_pem(ca_key_pem).context("reading the CA key")?;
    let issuer = Issuer::new(ca_params(), ca_key);
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(
        DnType::OrganizationalUnitName,
        match kind {
            CertKind::Node => "cairn node",
            CertKind::Executor => "cairn executor",
            CertKind::Client => "cairn client",
        },
    );
    params.distinguished_name = dn;
    let names: Vec<String> = if sans.is_empty() {
        vec![name.to_string()]
    } else {
        sans.to_vec()
    };
    params.subject_alt_names = names
        .iter()
        .map(|s| match s.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => s
                .as_str()
                .try_into()
                .map(SanType::DnsName)
                .with_context(|| format!("invalid host name {s:?}")),
        })
        .collect::<anyhow::Result<_>>()?;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = match kind {
        CertKind::Node => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        CertKind::Executor | CertKind::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(serial());
    validity(&mut params, LEAF_DAYS);
    let key = KeyPair::generate().context("generating a key")?;
    let cert = params.signed_by(&key, &issuer).context("signing")?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes `bytes` to `path` through a temporary file; keys are 0600.
fn write_file(path: &Path, bytes: &[u8], private: bool) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("test setup")
    }

    #[test]
    fn node_certificates_are_node_certificates_and_client_ones_are_not() {
        let (ca, ca_key) = make_ca().expect("test setup");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der(&ca)).expect("test setup");
        let (node, _) =
            issue(&ca_key, CertKind::Node, "n1", &["127.0.0.1".into()]).expect("test setup");
        let (client, _) = issue(&ca_key, CertKind::Client, "alice", &[]).expect("test setup");
        let (exec, _) = issue(&ca_key, CertKind::Executor, "e1", &[]).expect("test setup");
        assert!(crate::tls::is_node_cert(&[der(&node)], &roots));
        assert!(!crate::tls::is_node_cert(&[der(&client)], &roots));
        assert!(!crate::tls::is_node_cert(&[der(&exec)], &roots));
        // Signed by another CA: not a node of this cluster.
        let (_, other_key) = make_ca().expect("test setup");
        let (foreign, _) = issue(&other_key, CertKind::Node, "n9", &[]).expect("test setup");
        assert!(!crate::tls::is_node_cert(&[der(&foreign)], &roots));
    }

    #[test]
    fn names_are_file_names() {
        assert!(check_name("node-1.example").is_ok());
        assert!(check_name("../x").is_err());
        assert!(check_name(".hidden").is_err());
        assert!(check_name("").is_err());
        assert!(check_name("a/b").is_err());
    }
}
