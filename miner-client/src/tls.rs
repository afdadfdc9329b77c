//! TLS to the pool: which server certificates to trust, and the connector built from it.
//!
//! Trust comes from the platform's root store by default, from a PEM file
//! (`--ca-file`), from a pinned leaf-certificate fingerprint (`--tls-fingerprint`), or
//! from nothing at all (`--insecure`, only when asked for). Pinned and insecure modes
//! still verify the handshake signatures, so the peer must hold the certificate's key.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use sha2::{Digest, Sha256};

/// A SHA-256 certificate fingerprint: 32 bytes, written as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 32]);

/// A fingerprint that is not 64 hex digits (colons, spaces and case aside).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("TLS fingerprint {0:?} is not 64 hex digits (SHA-256; colons and case are ignored)")]
pub struct FingerprintError(pub String);

impl Fingerprint {
    /// Parses `AB:CD:…` or `abcd…`, ignoring colons, whitespace and case.
    ///
    /// # Errors
    /// [`FingerprintError`] unless 64 hex digits remain.
    pub fn parse(text: &str) -> Result<Fingerprint, FingerprintError> {
        let digits: String = text
            .chars()
            .filter(|c| *c != ':' && !c.is_whitespace())
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(&digits, &mut bytes)
            .map_err(|_| FingerprintError(text.chars().take(100).collect()))?;
        Ok(Fingerprint(bytes))
    }

    /// The fingerprint of a DER certificate.
    pub fn of(der: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(der).into())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Which server certificates the miner accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The operating system's root certificates.
    Platform,
    /// The CA certificates in a PEM file.
    CaFile(PathBuf),
    /// Exactly the leaf certificate with this SHA-256 fingerprint.
    Pinned(Fingerprint),
    /// Any certificate (no authentication of the pool).
    Insecure,
}

/// Builds the TLS connector for `trust`.
///
/// # Errors
/// Unreadable CA files, or no usable root certificates.
pub fn connector(trust: &Trust) -> anyhow::Result<tokio_rustls::TlsConnector> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let config = match trust {
        Trust::Platform => builder
            .with_root_certificates(platform_roots()?)
            .with_no_client_auth(),
        Trust::CaFile(path) => builder
            .with_root_certificates(file_roots(path)?)
            .with_no_client_auth(),
        Trust::Pinned(fingerprint) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                pinned: Some(*fingerprint),
                algorithms,
            }))
            .with_no_client_auth(),
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                pinned: None,
                algorithms,
            }))
            .with_no_client_auth(),
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// The server name to present and check, from a URL host.
///
/// # Errors
/// A host that is neither a DNS name nor an IP address.
pub fn server_name(host: &str) -> anyhow::Result<ServerName<'static>> {
    ServerName::try_from(host.to_owned())
        .with_context(|| format!("{host:?} is not a valid TLS server name"))
}

fn platform_roots() -> anyhow::Result<rustls::RootCertStore> {
    let loaded = rustls_native_certs::load_native_certs();
    for error in &loaded.errors {
        tracing::warn!(%error, "while loading the platform's root certificates");
    }
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(loaded.certs);
    if added == 0 {
        bail!("no root certificates could be loaded from the platform; pass --ca-file PEM or --tls-fingerprint SHA256HEX");
    }
    tracing::debug!(roots = added, "platform root certificates loaded");
    Ok(roots)
}

fn file_roots(path: &Path) -> anyhow::Result<rustls::RootCertStore> {
    let pem = std::fs::read(path).with_context(|| format!("reading CA file {}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        let cert = cert.with_context(|| format!("parsing CA file {}", path.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("CA file {}: unusable certificate", path.display()))?;
    }
    if roots.is_empty() {
        bail!("CA file {} holds no certificate", path.display());
    }
    Ok(roots)
}

/// A TLS failure in words: rustls formats a rejected certificate's own error with
/// `Debug`, so a fingerprint mismatch is pulled out and displayed as itself.
pub fn explain(error: &std::io::Error) -> String {
    let rustls_error = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::InvalidCertificate(CertificateError::Other(other))) => {
            format!("invalid peer certificate: {}", other.0)
        }
        _ => error.to_string(),
    }
}

/// The leaf certificate's fingerprint differs from the pinned one.
#[derive(Debug, thiserror::Error)]
#[error("server certificate fingerprint {actual} does not match the pinned {pinned}")]
struct FingerprintMismatch {
    pinned: Fingerprint,
    actual: Fingerprint,
}

/// Accepts the leaf certificate by fingerprint (or any, when `pinned` is `None`) and
/// verifies the handshake signatures with the ring provider's algorithms.
#[derive(Debug)]
struct PinnedVerifier {
    pinned: Option<Fingerprint>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(pinned) = self.pinned else {
            return Ok(ServerCertVerified::assertion());
        };
        let actual = Fingerprint::of(end_entity);
        if actual == pinned {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(FingerprintMismatch { pinned, actual })),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn fingerprints_ignore_colons_spaces_and_case() {
        let plain = Fingerprint::parse(HEX).unwrap();
        let colons: Vec<String> = HEX
            .as_bytes()
            .chunks(2)
            .map(|pair| String::from_utf8_lossy(pair).to_uppercase())
            .collect();
        assert_eq!(Fingerprint::parse(&colons.join(":")).unwrap(), plain);
        assert_eq!(Fingerprint::parse(&format!(" {HEX}\n")).unwrap(), plain);
        assert_eq!(plain.to_string(), HEX);
    }

    #[test]
    fn bad_fingerprints_are_refused() {
        assert!(Fingerprint::parse(&HEX[..62]).is_err());
        assert!(Fingerprint::parse(&format!("{HEX}00")).is_err());
        let err = Fingerprint::parse(&HEX.replace('a', "g")).unwrap_err();
        assert!(err.to_string().contains("64 hex digits"), "{err}");
    }

    #[test]
    fn the_verifier_compares_the_leaf_fingerprint() {
        let der = CertificateDer::from(vec![1u8, 2, 3]);
        let verifier = PinnedVerifier {
            pinned: Some(Fingerprint::of(&[1, 2, 3])),
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        };
        let name = server_name("127.0.0.1").unwrap();
        assert!(verifier
            .verify_server_cert(&der, &[], &name, &[], UnixTime::now())
            .is_ok());
        let other = CertificateDer::from(vec![9u8]);
        let err = verifier
            .verify_server_cert(&other, &[], &name, &[], UnixTime::now())
            .unwrap_err();
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, err);
        let text = explain(&io);
        assert_eq!(
            text,
            format!(
                "invalid peer certificate: server certificate fingerprint {} does not match the pinned {}",
                Fingerprint::of(&[9]),
                Fingerprint::of(&[1, 2, 3])
            )
        );
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let Err(err) = connector(&Trust::CaFile("/nonexistent/ca.pem".into())) else {
            panic!("a missing CA file was accepted");
        };
        assert!(format!("{err:#}").contains("/nonexistent/ca.pem"));
    }
}
