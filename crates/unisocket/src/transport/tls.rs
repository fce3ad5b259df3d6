//! TLS for `wss://` with rustls: the client configuration built from
//! [`TlsOptions`] (and cached), the handshake, and its errors.
//!
//! Defaults: the Mozilla roots of `webpki-roots` (plus the system's trust
//! with the `native-roots` feature), SNI and host name verification, ALPN
//! `http/1.1`, TLS 1.2 and 1.3. The crypto provider is the process-wide one
//! if the application installed one (`CryptoProvider::install_default`),
//! else the built-in one: aws-lc-rs (feature `aws-lc-rs`, the default) or
//! *ring* (feature `ring`; aws-lc-rs wins when both are on).

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::Error;
use crate::error::ErrorKind;
use crate::options::{Pem, TlsOptions};

/// How many non-default configurations are kept for reuse.
const CACHED_CONFIGS: usize = 16;

/// The ALPN protocol offered, as browsers do for WebSocket.
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// A ready rustls client configuration, shared by every connection made
/// with the same TLS options and crypto provider.
#[derive(Clone)]
pub(crate) struct TlsConfig {
    config: Arc<ClientConfig>,
    /// What went wrong loading the system's certificate store (some of it
    /// loaded), added to the reason of a handshake that fails for an
    /// unknown issuer, which a certificate that did not load may explain.
    roots_note: Option<Arc<str>>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("alpn", &self.config.alpn_protocols)
            .finish_non_exhaustive()
    }
}

fn tls_error(reason: impl fmt::Display) -> Error {
    Error::new(ErrorKind::Tls, reason)
}

/// A cached configuration, for the provider at this address.
struct Cached {
    provider: usize,
    material: Material,
    config: TlsConfig,
}

impl TlsConfig {
    /// The configuration for `options`: the application's own, or one built
    /// with the crypto provider of [`provider`] (see there), once per
    /// provider and distinct set of certificates; the default options' one
    /// and the [`CACHED_CONFIGS`] others used last are kept. A provider the
    /// application installs later is used from then on: a configuration is
    /// reused only with the provider it was built with. Sharing a
    /// configuration also shares its TLS session cache, so later connections
    /// resume sessions. PEM files are read here, on each call, so that
    /// changes to them count.
    pub(crate) fn new(options: &TlsOptions) -> Result<TlsConfig, Error> {
        if let Some(own) = &options.client_config {
            return Ok(TlsConfig::of_application(&own.0));
        }
        TlsConfig::with_provider(options, provider()?)
    }

    /// [`TlsConfig::new`] with `provider`, which must live as long as the
    /// process.
    fn with_provider(
        options: &TlsOptions,
        provider: &'static Arc<CryptoProvider>,
    ) -> Result<TlsConfig, Error> {
        // Providers are never freed (the process default is `'static`, the
        // built-in one too): the address is the provider's identity.
        let id = Arc::as_ptr(provider) as usize;
        if *options == TlsOptions::default() {
            static DEFAULT: Mutex<Option<(usize, TlsConfig)>> = Mutex::new(None);
            let lock = || DEFAULT.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((built_with, config)) = &*lock() {
                if *built_with == id {
                    return Ok(config.clone());
                }
            }
            let config = build(&Material::default(), provider)?;
            let mut slot = lock();
            match &*slot {
                // Another thread was first: keep one configuration, so
                // that connections share its session cache.
                Some((built_with, first)) if *built_with == id => return Ok(first.clone()),
                _ => *slot = Some((id, config.clone())),
            }
            return Ok(config);
        }
        let material = Material::load(options)?;
        // Most recently used last.
        static CACHE: Mutex<Vec<Cached>> = Mutex::new(Vec::new());
        let lock = || CACHE.lock().unwrap_or_else(PoisonError::into_inner);
        let position = |cache: &[Cached]| {
            cache
                .iter()
                .position(|c| c.provider == id && c.material == material)
        };
        {
            let mut cache = lock();
            if let Some(i) = position(&cache) {
                let hit = cache.remove(i);
                let config = hit.config.clone();
                cache.push(hit);
                return Ok(config);
            }
        }
        // Built outside the lock: another thread may build the same config
        // meanwhile, which costs time but is still correct.
        let config = build(&material, provider)?;
        let mut cache = lock();
        if let Some(i) = position(&cache) {
            cache.remove(i);
        }
        if cache.len() >= CACHED_CONFIGS {
            cache.remove(0);
        }
        cache.push(Cached {
            provider: id,
            material,
            config: config.clone(),
        });
        Ok(config)
    }

    /// The application's own configuration, used as it is but for ALPN,
    /// which must be `http/1.1` for the WebSocket upgrade (a copy is made if
    /// it is not; a copy shares the original's session cache).
    fn of_application(own: &Arc<ClientConfig>) -> TlsConfig {
        let config = if own.alpn_protocols == [ALPN_HTTP11] {
            own.clone()
        } else {
            let mut copy = ClientConfig::clone(own);
            copy.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
            Arc::new(copy)
        };
        TlsConfig {
            config,
            roots_note: None,
        }
    }

    /// The TLS handshake over `tcp`, sending `host` as SNI (unless it is an
    /// IP address) and checking the certificate against it.
    pub(crate) async fn handshake(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, Error> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| tls_error(format_args!("invalid TLS server name {host:?}: {e}")))?;
        TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| handshake_error(host, e, self.roots_note.as_deref()))
    }
}

/// `TLS handshake with HOST failed: REASON`, with rustls's own reason
/// (`invalid peer certificate: UnknownIssuer`, `... not valid for name ...`,
/// `... certificate expired ...`, `received fatal alert: ...`), and for an
/// unknown issuer the `roots_note` of the configuration if it has one.
fn handshake_error(host: &str, e: io::Error, roots_note: Option<&str>) -> Error {
    let reason = match rustls_error(&e) {
        Some(tls) => match (tls, roots_note) {
            (
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
                Some(note),
            ) => format!("{tls} ({note})"),
            _ => tls.to_string(),
        },
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
    fn load(options: &TlsOptions) -> Result<Material, Error> {
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

fn read(pem: &Pem, what: &str) -> Result<Vec<u8>, Error> {
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

fn certificates(pem: &Pem, what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
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

fn private_key(pem: &Pem) -> Result<PrivateKeyDer<'static>, Error> {
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

/// The crypto provider of new configurations: the process default if the
/// application installed one (rustls's advice: libraries use the provider
/// the application chose), else the built-in one of the crate features.
fn provider() -> Result<&'static Arc<CryptoProvider>, Error> {
    CryptoProvider::get_default()
        .or_else(built_in_provider)
        .ok_or_else(|| {
            tls_error(
                "no TLS crypto provider: enable the `aws-lc-rs` or `ring` feature of \
                 unisocket, or install one with rustls's CryptoProvider::install_default",
            )
        })
}

/// The provider of the `aws-lc-rs` feature, else of the `ring` feature;
/// made once, so that its address identifies it.
fn built_in_provider() -> Option<&'static Arc<CryptoProvider>> {
    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    {
        static BUILT_IN: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
        Some(BUILT_IN.get_or_init(|| {
            #[cfg(feature = "aws-lc-rs")]
            let provider = rustls::crypto::aws_lc_rs::default_provider();
            // Deprecated in rustls 0.23.48 (no post-quantum key exchange);
            // the `ring` feature asks for it all the same.
            #[cfg(not(feature = "aws-lc-rs"))]
            #[allow(deprecated)]
            let provider = rustls::crypto::ring::default_provider();
            Arc::new(provider)
        }))
    }
    #[cfg(not(any(feature = "aws-lc-rs", feature = "ring")))]
    {
        None
    }
}

/// The system's CA bundle, as trust anchors, and what went wrong loading
/// it (`native-roots` where the operating system does not verify).
#[cfg(all(feature = "native-roots", not(any(target_vendor = "apple", windows))))]
struct SystemRoots {
    anchors: Vec<rustls_pki_types::TrustAnchor<'static>>,
    /// The load errors and unparsable certificates, or `None`.
    errors: Option<Arc<str>>,
}

/// The system's CA bundle (`SSL_CERT_FILE` / `SSL_CERT_DIR` if set),
/// loaded once per process. A bundle from which no certificate loads, with
/// errors, fails every configuration that uses it, naming the errors (as
/// curl does with a CA file it cannot read), and is tried again next time;
/// one that partly loads is used, and its errors are kept to explain an
/// unknown issuer later.
#[cfg(all(feature = "native-roots", not(any(target_vendor = "apple", windows))))]
fn system_roots() -> Result<Arc<SystemRoots>, Error> {
    static LOADED: Mutex<Option<Arc<SystemRoots>>> = Mutex::new(None);
    let mut loaded = LOADED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(roots) = &*loaded {
        return Ok(roots.clone());
    }
    let result = rustls_native_certs::load_native_certs();
    let mut store = rustls::RootCertStore::empty();
    let (_, unparsable) = store.add_parsable_certificates(result.certs);
    let mut problems: Vec<String> = result.errors.iter().map(ToString::to_string).collect();
    if unparsable > 0 {
        problems.push(format!("{unparsable} certificates could not be parsed"));
    }
    let errors = (!problems.is_empty()).then(|| summary(&problems));
    if store.is_empty() {
        if let Some(errors) = errors {
            return Err(tls_error(format_args!(
                "cannot load the system's root certificates (feature `native-roots`): {errors}"
            )));
        }
    }
    let roots = Arc::new(SystemRoots {
        anchors: store.roots,
        errors: errors
            .map(|e| format!("the system's certificate store loaded with errors: {e}").into()),
    });
    *loaded = Some(roots.clone());
    Ok(roots)
}

/// Up to three problems, then how many more.
#[cfg(all(feature = "native-roots", not(any(target_vendor = "apple", windows))))]
fn summary(problems: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut out = problems[..problems.len().min(SHOWN)].join("; ");
    if problems.len() > SHOWN {
        out.push_str(&format!("; and {} more", problems.len() - SHOWN));
    }
    out
}

fn build(material: &Material, provider: &Arc<CryptoProvider>) -> Result<TlsConfig, Error> {
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(format_args!("unusable TLS crypto provider: {e}")))?;
    let (verifier, roots_note): (Arc<dyn ServerCertVerifier>, _) =
        if material.danger_accept_invalid_certs {
            (Arc::new(AcceptAnyCertificate(provider.clone())), None)
        } else {
            verifier(material, provider)?
        };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match &material.client_auth {
        None => builder.with_no_client_auth(),
        Some(auth) => builder
            .with_client_auth_cert(auth.chain.clone(), auth.key.clone_key())
            .map_err(|e| tls_error(format_args!("unusable client certificate or key: {e}")))?,
    };
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(TlsConfig {
        config: Arc::new(config),
        roots_note,
    })
}

/// A certificate verifier and the note on the system's store it comes with.
type Verifier = (Arc<dyn ServerCertVerifier>, Option<Arc<str>>);

/// webpki against the Mozilla roots (unless turned off), the system's CA
/// bundle (`native-roots`) and the application's CAs.
#[cfg(not(all(feature = "native-roots", any(target_vendor = "apple", windows))))]
fn verifier(material: &Material, provider: &Arc<CryptoProvider>) -> Result<Verifier, Error> {
    use rustls::client::WebPkiServerVerifier;
    use rustls::RootCertStore;

    let mut roots = RootCertStore::empty();
    if !material.no_webpki_roots {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    #[cfg(feature = "native-roots")]
    let note = {
        let system = system_roots()?;
        roots.extend(system.anchors.iter().cloned());
        system.errors.clone()
    };
    #[cfg(not(feature = "native-roots"))]
    let note = None;
    add_ca(&mut roots, material)?;
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| {
            let system = if cfg!(feature = "native-roots") {
                ", and the system's store has none"
            } else {
                ""
            };
            tls_error(format_args!(
                "no trusted root certificates ({e}{system}): add a CA or keep the webpki roots"
            ))
        })?;
    if material.ca.is_empty() {
        return Ok((verifier, note));
    }
    let verifier = TrustedSelfSigned {
        platform: None,
        webpki: verifier,
        trusted: material.ca.clone(),
    };
    Ok((Arc::new(verifier), note))
}

/// Adds the application's CA certificates to `roots`.
fn add_ca(roots: &mut rustls::RootCertStore, material: &Material) -> Result<(), Error> {
    for cert in &material.ca {
        roots
            .add(cert.clone())
            .map_err(|e| tls_error(format_args!("unusable CA certificate: {e}")))?;
    }
    Ok(())
}

/// webpki, plus one case it refuses: a server certificate that is itself
/// one of the application's trusted certificates and has `CA:TRUE` (what
/// `openssl req -x509` makes by default, a self-signed certificate given as
/// the CA). webpki never takes a CA certificate as a server's own
/// (`CaUsedAsEndEntity`); OpenSSL, and so curl and websocat with
/// `--cacert`, accept a presented certificate that is a trust anchor. So
/// do we, with the host name still checked. The dates were checked before
/// webpki looked at the basic constraints: an expired one is still refused
/// as expired, and so is any other failure.
///
/// Where the operating system verifies (`native-roots` on macOS, iOS and
/// Windows), it decides first, and its refusals stand, but one: a server
/// certificate that is exactly one of the application's trusted ones is
/// then verified as on the other platforms, by webpki over the
/// application's CAs. The application trusts that very certificate: the
/// system's policies (Apple's limit on a server certificate's lifetime,
/// say) are not asked, while its host name and dates are checked all the
/// same, and a refusal names what webpki found wrong with it.
#[derive(Debug)]
struct TrustedSelfSigned {
    /// The operating system's verifier; `None` where webpki verifies alone.
    platform: Option<Arc<dyn ServerCertVerifier>>,
    /// webpki: over every root without `platform`, over the application's
    /// CAs alone with it.
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    trusted: Vec<CertificateDer<'static>>,
}

impl TrustedSelfSigned {
    /// The verifier of the handshake's signatures: the one that decides first.
    fn first(&self) -> &dyn ServerCertVerifier {
        match &self.platform {
            Some(platform) => platform.as_ref(),
            None => self.webpki.as_ref(),
        }
    }
}

/// Whether `e` is webpki's refusal of a CA certificate as a server's own.
/// rustls passes that one on as an opaque `Other` error: its text is all
/// there is to tell it by (a webpki that spelled it differently would make
/// the certificate refused, never accepted).
fn is_ca_used_as_end_entity(e: &rustls::Error) -> bool {
    match e {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
            other.0.to_string() == "CaUsedAsEndEntity"
        }
        _ => false,
    }
}

impl ServerCertVerifier for TrustedSelfSigned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let trusted = self.trusted.iter().any(|t| t[..] == end_entity[..]);
        let webpki = || match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(e) if trusted && is_ca_used_as_end_entity(&e) => {
                let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_name(&cert, server_name)?;
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        };
        let Some(platform) = &self.platform else {
            return webpki();
        };
        match platform.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            // webpki's refusal when it could judge the certificate (its
            // name or dates), the system's when it could not (an issuer
            // that is not among the application's CAs).
            Err(refused) if trusted => webpki().map_err(|e| match e {
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => {
                    refused
                }
                e => e,
            }),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.first().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.first().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.first().supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.first().requires_raw_public_keys()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.first().root_hint_subjects()
    }
}

/// The operating system's verifier (`native-roots` on macOS, iOS and
/// Windows: its own roots, distrust decisions and revocation checks),
/// trusting the application's CAs besides the system's, and accepting a
/// server certificate that is one of them as the other platforms do
/// ([`TrustedSelfSigned`]). The Mozilla roots are left out: given as extra
/// roots they would be trusted whatever the system's own distrust
/// decisions say.
#[cfg(all(feature = "native-roots", any(target_vendor = "apple", windows)))]
fn verifier(material: &Material, provider: &Arc<CryptoProvider>) -> Result<Verifier, Error> {
    let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(
        material.ca.iter().cloned(),
        provider.clone(),
    )
    .map_err(|e| {
        tls_error(format_args!(
            "cannot use the system's certificate verifier: {e}"
        ))
    })?;
    if material.ca.is_empty() {
        return Ok((Arc::new(verifier), None));
    }
    let mut roots = rustls::RootCertStore::empty();
    add_ca(&mut roots, material)?;
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| tls_error(format_args!("unusable CA certificates: {e}")))?;
    let verifier = TrustedSelfSigned {
        platform: Some(Arc::new(verifier)),
        webpki,
        trusted: material.ca.clone(),
    };
    Ok((Arc::new(verifier), None))
}

/// The verifier behind `dangerous().accept_invalid_certs()`: any certificate
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
        assert!(Arc::ptr_eq(&a.config, &b.config));
        assert_eq!(a.config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn same_options_share_a_config() {
        let options = TlsOptions {
            danger_accept_invalid_certs: true,
            ..TlsOptions::default()
        };
        let a = TlsConfig::new(&options).unwrap().config;
        drop(TlsConfig::new(&options).unwrap());
        let b = TlsConfig::new(&options).unwrap().config;
        assert!(Arc::ptr_eq(&a, &b));
        let other = TlsOptions {
            danger_accept_invalid_certs: true,
            webpki_roots: false,
            ..TlsOptions::default()
        };
        assert!(!Arc::ptr_eq(&a, &TlsConfig::new(&other).unwrap().config));
    }

    /// A provider that lives as long as the process, as installed ones do.
    fn leaked(provider: CryptoProvider) -> &'static Arc<CryptoProvider> {
        Box::leak(Box::new(Arc::new(provider)))
    }

    #[test]
    fn a_config_is_reused_only_with_its_provider() {
        let base = provider().expect("a provider feature is on");
        let other = leaked(CryptoProvider::clone(base));
        for options in [
            TlsOptions::default(),
            TlsOptions {
                webpki_roots: false,
                danger_accept_invalid_certs: true,
                ..TlsOptions::default()
            },
        ] {
            let first = TlsConfig::with_provider(&options, base).unwrap().config;
            assert!(Arc::ptr_eq(first.crypto_provider(), base));
            // Another provider (one the application installed): a
            // configuration of its own, with it.
            let second = TlsConfig::with_provider(&options, other).unwrap().config;
            assert!(!Arc::ptr_eq(&first, &second));
            assert!(Arc::ptr_eq(second.crypto_provider(), other));
            assert!(Arc::ptr_eq(
                &second,
                &TlsConfig::with_provider(&options, other).unwrap().config
            ));
        }
    }

    #[test]
    fn no_provider_is_a_clear_error() {
        if CryptoProvider::get_default().is_some() || built_in_provider().is_some() {
            return; // only a build with `tls` alone has none
        }
        let e = TlsConfig::new(&TlsOptions::default()).unwrap_err();
        assert!(
            e.reason.starts_with("no TLS crypto provider"),
            "{}",
            e.reason
        );
    }

    #[test]
    fn an_application_config_is_used_with_http11_alpn() {
        let Ok(provider) = provider() else { return };
        let own = |alpn: &[&[u8]]| {
            let mut config = ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Arc::new(config)
        };
        let options = |config: &Arc<ClientConfig>| TlsOptions {
            client_config: Some(crate::options::OwnClientConfig(config.clone())),
            ..TlsOptions::default()
        };
        let ready = own(&[b"http/1.1"]);
        let used = TlsConfig::new(&options(&ready)).unwrap().config;
        assert!(Arc::ptr_eq(&used, &ready));
        for alpn in [&[][..], &[&b"h2"[..], b"http/1.1"]] {
            let given = own(alpn);
            let used = TlsConfig::new(&options(&given)).unwrap().config;
            assert_eq!(used.alpn_protocols, vec![b"http/1.1".to_vec()]);
            assert!(Arc::ptr_eq(used.crypto_provider(), given.crypto_provider()));
        }
    }

    #[test]
    fn bad_pem_fails_with_a_tls_error() {
        let options = TlsOptions {
            ca: vec![Pem::Bytes(b"not a certificate".to_vec())],
            ..TlsOptions::default()
        };
        let e = TlsConfig::new(&options).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Tls);
        assert!(e.reason.contains("no certificate"), "{}", e.reason);

        let options = TlsOptions {
            ca: vec![Pem::File("/nonexistent/ca.pem".into())],
            ..TlsOptions::default()
        };
        let e = TlsConfig::new(&options).unwrap_err();
        assert!(
            e.reason
                .starts_with("cannot read the CA certificates file \"/nonexistent/ca.pem\""),
            "{}",
            e.reason
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
            e.reason.starts_with("no trusted root certificates"),
            "{}",
            e.reason
        );
    }
}
