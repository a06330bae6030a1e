//! TLS on stream connections, with rustls: the certificates a listener
//! serves (several, chosen by the client's server name), reloadable while
//! established connections go on; the roots peers are verified against.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Deserialize;
use tokio_rustls::TlsAcceptor;

/// A certificate chain and its private key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

/// What a TLS listener serves: the files of its `[[listen]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFiles {
    /// Served when no other certificate is for the name the client asked.
    pub default: CertificateFiles,
    /// Chosen by the client's server name (SNI), in this order.
    pub more: Vec<CertificateFiles>,
    /// Clients must present a certificate issued by one of these (PEM).
    pub client_ca: Option<PathBuf>,
}

/// A certificate, key or CA file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {why}")]
    File { path: PathBuf, why: String },
    #[error("{certificate} and {private_key}: {why}")]
    Pair {
        certificate: PathBuf,
        private_key: PathBuf,
        why: String,
    },
    #[error("TLS: {0}")]
    Config(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_error(path: &Path, why: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        why: why.to_string(),
    }
}

/// Reads the certificates of a PEM file; none is an error.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no certificate (PEM) in it"));
    }
    Ok(certs)
}

/// Loads a certificate chain and its key, checking that they go together.
fn certified_key(files: &CertificateFiles) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = certificates(&files.certificate)?;
    let key = PrivateKeyDer::from_pem_file(&files.private_key).map_err(|e| {
        file_error(
            &files.private_key,
            format!("no usable private key (PEM): {e}"),
        )
    })?;
    // The end-entity certificate must parse, or no handshake will.
    webpki::EndEntityCert::try_from(&chain[0]).map_err(|e| {
        file_error(
            &files.certificate,
            format!("not a usable certificate: {e:?}"),
        )
    })?;
    CertifiedKey::from_der(chain, key, &provider())
        .map(Arc::new)
        .map_err(|e| TlsError::Pair {
            certificate: files.certificate.clone(),
            private_key: files.private_key.clone(),
            why: e.to_string(),
        })
}

fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path)? {
        roots
            .add(cert)
            .map_err(|e| file_error(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// Picks the certificate for the name a client asked for.
#[derive(Debug)]
struct BySni {
    /// Default first.
    keys: Vec<Arc<CertifiedKey>>,
}

impl BySni {
    fn for_name(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        let name = ServerName::try_from(name).ok()?;
        self.keys.iter().find(|key| {
            key.end_entity_cert()
                .ok()
                .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
                .is_some_and(|cert| cert.verify_is_valid_for_subject_name(&name).is_ok())
        })
    }
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        hello
            .server_name()
            .and_then(|name| self.for_name(name))
            .or_else(|| self.keys.first())
            .cloned()
    }
}

/// Builds what a listener serves from its files.
pub fn server_config(files: &ServerFiles) -> Result<Arc<ServerConfig>, TlsError> {
    build_server(files, rustls::DEFAULT_VERSIONS).map(Arc::new)
}

/// What a QUIC listener serves: the same certificates, over TLS 1.3 (QUIC
/// has no other), offering `alpn` only.
pub(super) fn quic_server_config(
    files: &ServerFiles,
    alpn: &[u8],
) -> Result<ServerConfig, TlsError> {
    let mut config = build_server(files, &[&rustls::version::TLS13])?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

fn build_server(
    files: &ServerFiles,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<ServerConfig, TlsError> {
    let mut keys = vec![certified_key(&files.default)?];
    for more in &files.more {
        keys.push(certified_key(more)?);
    }
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                    .build()
                    .map_err(|e| file_error(ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    Ok(builder.with_cert_resolver(Arc::new(BySni { keys })))
}

/// A TLS listener's certificates, swapped whole on reload: a handshake
/// uses the ones current when it starts, and an established connection
/// keeps its session.
pub struct TlsServer {
    files: ServerFiles,
    config: RwLock<Arc<ServerConfig>>,
}

impl TlsServer {
    pub fn load(files: ServerFiles) -> Result<TlsServer, TlsError> {
        let config = server_config(&files)?;
        Ok(TlsServer {
            files,
            config: RwLock::new(config),
        })
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        let config = self.config.read().unwrap_or_else(|e| e.into_inner());
        TlsAcceptor::from(config.clone())
    }

    /// Reads the files again; on an error the certificates in use stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.files)?;
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }
}

/// The roots we verify the servers we connect to against: `ca` (PEM) when
/// given, else the system's.
pub fn client_config(ca: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    build_client(ca, rustls::DEFAULT_VERSIONS).map(Arc::new)
}

/// For the QUIC connections we open: TLS 1.3, offering `alpn` only.
pub(super) fn quic_client_config(ca: Option<&Path>, alpn: &[u8]) -> Result<ClientConfig, TlsError> {
    let mut config = build_client(ca, &[&rustls::version::TLS13])?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

fn build_client(
    ca: Option<&Path>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<ClientConfig, TlsError> {
    let roots = match ca {
        Some(ca) => roots(ca)?,
        None => {
            let found = rustls_native_certs::load_native_certs();
            for err in &found.errors {
                tracing::warn!(%err, "a system CA certificate could not be read");
            }
            let mut roots = RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!(
                    ignored,
                    "no system CA certificates: outgoing TLS will fail to verify any peer; set [tls] ca"
                );
            }
            roots
        }
    };
    Ok(ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// `[tls]`: outgoing TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// CA certificates (PEM) that servers we connect to must chain to,
    /// instead of the system's.
    pub ca: Option<PathBuf>,
}
