//! TLS for `wss://` with rustls: the client configuration built from
//! [`TlsOptions`] (and cached), the handshake, and its errors.
//!
//! Defaults: the Mozilla roots of `webpki-roots` (plus the system's store
//! with the `native-roots` feature), SNI and host name verification, ALPN
//! `http/1.1`, TLS 1.2 and 1.3, the process-wide rustls crypto provider if
//! the application installed one and *ring* otherwise.

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::error::{Api, ErrorKind, SocketError};
use crate::options::{Pem, TlsOptions};

/// How many non-default configurations are kept for reuse.
const CACHED_CONFIGS: usize = 16;

/// A ready rustls client configuration, shared by every connection made
/// with the same TLS options.
#[derive(Clone)]
pub(crate) struct TlsConfig(Arc<ClientConfig>);

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("alpn", &self.0.alpn_protocols)
            .finish_non_exhaustive()
    }
}

fn tls_error(reason: impl fmt::Display) -> SocketError {
    SocketError::new(Api::ConnectSocket, ErrorKind::Tls, reason)
}

impl TlsConfig {
    /// The configuration for `options`: the default one is built once per
    /// process; others once per distinct set of certificates (the
    /// [`CACHED_CONFIGS`] used last are kept). Sharing a configuration also
    /// shares its TLS session cache, so later connections resume sessions.
    /// PEM files are read here, on each call, so that changes to them count.
    pub(crate) fn new(options: &TlsOptions) -> Result<TlsConfig, SocketError> {
        if *options == TlsOptions::default() {
            static DEFAULT: OnceLock<Result<TlsConfig, SocketError>> = OnceLock::new();
            return DEFAULT
                .get_or_init(|| build(&Material::default()).map(|c| TlsConfig(Arc::new(c))))
                .clone();
        }
        let material = Material::load(options)?;
        // Most recently used last.
        static CACHE: Mutex<Vec<(Material, Arc<ClientConfig>)>> = Mutex::new(Vec::new());
        let lock = || CACHE.lock().unwrap_or_else(PoisonError::into_inner);
        {
            let mut cache = lock();
            if let Some(i) = cache.iter().position(|(m, _)| *m == material) {
                let hit = cache.remove(i);
                let config = hit.1.clone();
                cache.push(hit);
                return Ok(TlsConfig(config));
            }
        }
        // Built outside the lock: another thread may build the same config
        // meanwhile, which costs time but is still correct.
        let config = Arc::new(build(&material)?);
        let mut cache = lock();
        cache.retain(|(m, _)| *m != material);
        if cache.len() >= CACHED_CONFIGS {
            cache.remove(0);
        }
        cache.push((material, config.clone()));
        Ok(TlsConfig(config))
    }

    /// The TLS handshake over `tcp`, sending `host` as SNI (unless it is an
    /// IP address) and checking the certificate against it.
    pub(crate) async fn handshake(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, SocketError> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| tls_error(format_args!("invalid TLS server name {host:?}: {e}")))?;
        TlsConnector::from(self.0.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| handshake_error(host, e))
    }
}

/// `TLS handshake with HOST failed: REASON`, with rustls's own reason
/// (`invalid peer certificate: UnknownIssuer`, `... not valid for name ...`,
/// `... certificate expired ...`, `received fatal alert: ...`).
fn handshake_error(host: &str, e: io::Error) -> SocketError {
    let reason = match rustls_error(&e) {
        Some(tls) => tls.to_string(),
        None if e.kind() == io::ErrorKind::UnexpectedEof => {
            "the server closed the connection during the handshake".to_owned()
        }
        None => e.to_string(),
    };
    tls_error(format_args!("TLS handshake with {host} failed: {reason}")).with_source(e)
}

/// The rustls error inside an I/O error of tokio-rustls, if any.
fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

pub(crate) fn is_tls_error(e: &io::Error) -> bool {
    rustls_error(e).is_some()
}

/// Everything a configuration is built from, as DER: the cache key.
#[derive(Default, PartialEq, Eq)]
struct Material {
    no_webpki_roots: bool,
    danger_accept_invalid_certs: bool,
    ca: Vec<CertificateDer<'static>>,
    client_auth: Option<ClientAuth>,
}

struct ClientAuth {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl PartialEq for ClientAuth {
    fn eq(&self, other: &Self) -> bool {
        self.chain == other.chain && self.key.secret_der() == other.key.secret_der()
    }
}

impl Eq for ClientAuth {}

impl Material {
    fn load(options: &TlsOptions) -> Result<Material, SocketError> {
        let mut ca = Vec::new();
        for pem in &options.ca {
            ca.extend(certificates(pem, "CA certificates")?);
        }
        let client_auth = match &options.client_auth {
            None => None,
            Some((chain, key)) => Some(ClientAuth {
                chain: certificates(chain, "client certificate")?,
                key: private_key(key)?,
            }),
        };
        Ok(Material {
            no_webpki_roots: !options.webpki_roots,
            danger_accept_invalid_certs: options.danger_accept_invalid_certs,
            ca,
            client_auth,
        })
    }
}

/// Where a PEM document came from, for error messages.
fn origin(pem: &Pem) -> String {
    match pem {
        Pem::Bytes(_) => "PEM data".to_owned(),
        Pem::File(path) => format!("{:?}", path.display().to_string()),
    }
}

fn read(pem: &Pem, what: &str) -> Result<Vec<u8>, SocketError> {
    match pem {
        Pem::Bytes(b) => Ok(b.clone()),
        Pem::File(path) => std::fs::read(path).map_err(|e| {
            tls_error(format_args!(
                "cannot read the {what} file {}: {e}",
                origin(pem)
            ))
            .with_source(e)
        }),
    }
}

fn certificates(pem: &Pem, what: &str) -> Result<Vec<CertificateDer<'static>>, SocketError> {
    let bytes = read(pem, what)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            tls_error(format_args!("invalid {what} in {}: {e}", origin(pem))).with_source(e)
        })?;
    if certs.is_empty() {
        return Err(tls_error(format_args!(
            "no certificate (BEGIN CERTIFICATE) in the {what} {}",
            origin(pem)
        )));
    }
    Ok(certs)
}

fn private_key(pem: &Pem) -> Result<PrivateKeyDer<'static>, SocketError> {
    let bytes = read(pem, "private key")?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        let why = match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "no PKCS#8, PKCS#1 or SEC1 private key found".to_owned()
            }
            e => e.to_string(),
        };
        tls_error(format_args!(
            "invalid private key in {}: {why}",
            origin(pem)
        ))
    })
}

/// The process-wide provider if the application installed one, else *ring*.
fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// The certificates of the operating system's store, loaded once.
#[cfg(feature = "native-roots")]
fn native_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    // Certificates the store holds but that do not load are skipped, as
    // browsers do; the rest still count.
    ROOTS.get_or_init(|| rustls_native_certs::load_native_certs().certs)
}

fn build(material: &Material) -> Result<ClientConfig, SocketError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(format_args!("unusable TLS crypto provider: {e}")))?;
    let builder = if material.danger_accept_invalid_certs {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
    } else {
        let mut roots = RootCertStore::empty();
        if !material.no_webpki_roots {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        #[cfg(feature = "native-roots")]
        roots.add_parsable_certificates(native_roots().iter().cloned());
        for cert in &material.ca {
            roots
                .add(cert.clone())
                .map_err(|e| tls_error(format_args!("unusable CA certificate: {e}")))?;
        }
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| {
                tls_error(format_args!(
                    "no trusted root certificates ({e}): add a CA or keep the webpki roots"
                ))
            })?;
        builder.with_webpki_verifier(verifier)
    };
    let mut config = match &material.client_auth {
        None => builder.with_no_client_auth(),
        Some(auth) => builder
            .with_client_auth_cert(auth.chain.clone(), auth.key.clone_key())
            .map_err(|e| tls_error(format_args!("unusable client certificate or key: {e}")))?,
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The verifier behind `danger_accept_invalid_certs(true)`: any certificate
/// chain and name pass; the handshake signatures are still checked, so the
/// peer must at least hold the key of the certificate it shows.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_built_once_with_alpn() {
        let a = TlsConfig::new(&TlsOptions::default()).unwrap();
        let b = TlsConfig::new(&TlsOptions::default()).unwrap();
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(a.0.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn same_options_share_a_config() {
        let options = TlsOptions {
            danger_accept_invalid_certs: true,
            ..TlsOptions::default()
        };
        let a = TlsConfig::new(&options).unwrap().0;
        drop(TlsConfig::new(&options).unwrap());
        let b = TlsConfig::new(&options).unwrap().0;
        assert!(Arc::ptr_eq(&a, &b));
        let other = TlsOptions {
            danger_accept_invalid_certs: true,
            webpki_roots: false,
            ..TlsOptions::default()
        };
        assert!(!Arc::ptr_eq(&a, &TlsConfig::new(&other).unwrap().0));
    }

    #[test]
    fn bad_pem_fails_with_a_tls_error() {
        let options = TlsOptions {
            ca: vec![Pem::Bytes(b"not a certificate".to_vec())],
            ..TlsOptions::default()
        };
        let e = TlsConfig::new(&options).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Tls);
        assert!(e.reason().contains("no certificate"), "{}", e.reason());

        let options = TlsOptions {
            ca: vec![Pem::File("/nonexistent/ca.pem".into())],
            ..TlsOptions::default()
        };
        let e = TlsConfig::new(&options).unwrap_err();
        assert!(
            e.reason()
                .starts_with("cannot read the CA certificates file \"/nonexistent/ca.pem\""),
            "{}",
            e.reason()
        );
    }

    #[test]
    fn no_roots_at_all_is_refused_up_front() {
        let options = TlsOptions {
            webpki_roots: false,
            ..TlsOptions::default()
        };
        if cfg!(feature = "native-roots") {
            return; // the system's store may supply roots
        }
        let e = TlsConfig::new(&options).unwrap_err();
        assert!(
            e.reason().starts_with("no trusted root certificates"),
            "{}",
            e.reason()
        );
    }
}
