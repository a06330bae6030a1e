//! TLS for the tests: a throwaway certificate authority made with the
//! `openssl` command, and a TLS client (rustls) that speaks SIP to wisp.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// `openssl req` arguments for a new P-256 key, unencrypted.
const NEW_EC_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// A certificate and its key, PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

/// A certificate authority in a temporary folder.
pub struct Pki {
    dir: tempfile::TempDir,
    /// The CA's certificate (PEM).
    pub ca: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run openssl (Debian: apt-get install openssl)")?;
    if !out.status.success() {
        bail!(
            "openssl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

impl Pki {
    pub fn new() -> Result<Pki> {
        let dir = tempfile::tempdir()?;
        openssl(
            dir.path(),
            &[
                &["req", "-x509"][..],
                &NEW_EC_KEY,
                &["-keyout", "ca.key", "-out", "ca.pem", "-days", "30"],
                &["-subj", "/CN=wisp test CA"],
            ]
            .concat(),
        )?;
        let ca = dir.path().join("ca.pem");
        Ok(Pki { dir, ca })
    }

    /// A certificate for `names` (`DNS:...`, `IP:...`, comma-separated),
    /// for servers and clients alike, in files named after `file`.
    pub fn issue(&self, file: &str, names: &str) -> Result<CertFiles> {
        let dir = self.dir.path();
        let key = format!("{file}.key");
        let csr = format!("{file}.csr");
        let pem = format!("{file}.pem");
        let ext = format!("{file}.ext");
        std::fs::write(
            dir.join(&ext),
            format!(
                "subjectAltName={names}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n"
            ),
        )?;
        openssl(
            dir,
            &[
                &["req"][..],
                &NEW_EC_KEY,
                &[
                    "-keyout",
                    &key,
                    "-out",
                    &csr,
                    "-subj",
                    &format!("/CN={file}"),
                ],
            ]
            .concat(),
        )?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "30",
                "-extfile",
                &ext,
            ],
        )?;
        Ok(CertFiles {
            certificate: dir.join(pem),
            private_key: dir.join(key),
        })
    }

    /// The folder the files are in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The DER of the first certificate of a PEM file.
pub fn certificate_der(pem: &Path) -> Result<Vec<u8>> {
    let cert = CertificateDer::pem_file_iter(pem)?
        .next()
        .context("no certificate")??;
    Ok(cert.to_vec())
}

/// A TLS connection to wisp.
pub struct TlsClient {
    stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl TlsClient {
    /// Connects and completes the handshake, asking for `server_name`
    /// (SNI) and trusting `ca`; with `client`, presenting that certificate.
    pub fn connect(
        addr: SocketAddr,
        server_name: &str,
        ca: &Path,
        client: Option<&CertFiles>,
    ) -> Result<TlsClient> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca)? {
            roots.add(cert?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let config = match client {
            Some(files) => {
                let chain = CertificateDer::pem_file_iter(&files.certificate)?
                    .collect::<Result<Vec<_>, _>>()?;
                let key = PrivateKeyDer::from_pem_file(&files.private_key)?;
                builder.with_client_auth_cert(chain, key)?
            }
            None => builder.with_no_client_auth(),
        };
        let name = ServerName::try_from(server_name.to_owned())?;
        let conn = rustls::ClientConnection::new(Arc::new(config), name)?;
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .context("TLS handshake")?;
        }
        Ok(TlsClient { stream })
    }

    /// The DER of the certificate the server presented.
    pub fn server_certificate(&self) -> Vec<u8> {
        self.stream
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default()
    }

    /// Sends `message` and reads one reply without a body.
    pub fn exchange(&mut self, message: &str) -> Result<String> {
        self.stream.write_all(message.as_bytes())?;
        self.stream.flush()?;
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        while !reply.ends_with(b"\r\n\r\n") {
            let n = self.stream.read(&mut buf)?;
            if n == 0 {
                bail!("closed before a reply: {}", String::from_utf8_lossy(&reply));
            }
            reply.extend_from_slice(&buf[..n]);
        }
        Ok(String::from_utf8_lossy(&reply).into_owned())
    }
}
