//! TLS for the Stratum listener: certificates from PEM files or a self-signed one
//! made on first start (and reused), reloadable on SIGHUP without a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use sha2::{Digest, Sha256};

/// Where the certificate comes from.
#[derive(Debug, Clone)]
pub enum CertSource {
    /// Operator-provided PEM files.
    Files { cert: PathBuf, key: PathBuf },
    /// A self-signed certificate kept in the data directory.
    SelfSigned { dir: PathBuf },
}

/// The current TLS server configuration, swapped atomically on reload.
pub struct Tls {
    source: CertSource,
    config: ArcSwap<ServerConfig>,
    fingerprint: ArcSwap<String>,
}

impl Tls {
    /// Loads (or, for [`CertSource::SelfSigned`], creates on first start) the certificate.
    ///
    /// # Errors
    /// Unreadable or invalid PEM files, named.
    pub fn load(source: CertSource) -> anyhow::Result<Tls> {
        let (config, fingerprint) = build(&source)?;
        Ok(Tls {
            source,
            config: ArcSwap::from_pointee(config),
            fingerprint: ArcSwap::from_pointee(fingerprint),
        })
    }

    /// Re-reads the certificate files; on error the old certificate stays in use.
    ///
    /// # Errors
    /// As [`Tls::load`].
    pub fn reload(&self) -> anyhow::Result<()> {
        let (config, fingerprint) = build(&self.source)?;
        self.config.store(Arc::new(config));
        self.fingerprint.store(Arc::new(fingerprint));
        Ok(())
    }

    /// An acceptor with the current certificate.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.load_full())
    }

    /// SHA-256 over the DER of the leaf certificate, lower-case hex.
    pub fn fingerprint(&self) -> String {
        self.fingerprint.load().as_ref().clone()
    }
}

fn build(source: &CertSource) -> anyhow::Result<(ServerConfig, String)> {
    let (certs, key) = match source {
        CertSource::Files { cert, key } => (read_certs(cert)?, read_key(key)?),
        CertSource::SelfSigned { dir } => self_signed(dir)?,
    };
    let leaf = certs
        .first()
        .context("certificate file holds no certificate")?;
    let fingerprint = hex::encode(Sha256::digest(leaf.as_ref()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("certificate and key do not form a usable pair")?;
    Ok((config, fingerprint))
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing certificates in {}", path.display()))
}

fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .with_context(|| format!("parsing the private key in {}", path.display()))?
        .with_context(|| format!("{} holds no private key", path.display()))
}

/// Reads `dir/tls-cert.pem` + `dir/tls-key.pem`, creating them first if absent.
fn self_signed(
    dir: &Path,
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let cert_path = dir.join("tls-cert.pem");
    let key_path = dir.join("tls-key.pem");
    if !cert_path.exists() || !key_path.exists() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let names = vec!["localhost".to_owned(), "quarry-pool".to_owned()];
        let generated = rcgen::generate_simple_self_signed(names)
            .context("generating a self-signed certificate")?;
        write_private(&key_path, generated.key_pair.serialize_pem().as_bytes())?;
        std::fs::write(&cert_path, generated.cert.pem())
            .with_context(|| format!("writing {}", cert_path.display()))?;
        tracing::info!(cert = %cert_path.display(), "created a self-signed TLS certificate");
    }
    Ok((read_certs(&cert_path)?, read_key(&key_path)?))
}

fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_certificate_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let source = CertSource::SelfSigned {
            dir: dir.path().to_owned(),
        };
        let first = Tls::load(source.clone()).unwrap().fingerprint();
        let second = Tls::load(source).unwrap().fingerprint();
        assert_eq!(first, second);
        assert_eq!(first.len(), 64);
    }

    #[test]
    fn reload_picks_up_a_renewed_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let write = |name: &str| {
            let generated = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
            std::fs::write(&cert, generated.cert.pem()).unwrap();
            std::fs::write(&key, generated.key_pair.serialize_pem()).unwrap();
        };
        write("one.example");
        let tls = Tls::load(CertSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        })
        .unwrap();
        let before = tls.fingerprint();
        write("two.example");
        tls.reload().unwrap();
        assert_ne!(before, tls.fingerprint());
        std::fs::write(&cert, "garbage").unwrap();
        assert!(tls.reload().is_err());
        assert_ne!(
            before,
            tls.fingerprint(),
            "a failed reload keeps the last good certificate"
        );
    }
}
