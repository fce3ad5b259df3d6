#![allow(dead_code)]
//! TLS for the integration tests: a throw-away CA made with rcgen, and a
//! TLS terminator on 127.0.0.1 in front of a plain test server (the
//! WebSocket logic stays that of `tests/support/mod.rs`).
//!
//! Declare it with `#[path = "support/tls.rs"] mod tls_support;`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{CipherSuite, NamedGroup, RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A certificate authority that exists only for one test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        TestCa {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn server_cert(&self, names: &[&str]) -> Identity {
        self.issue(names, ExtendedKeyUsagePurpose::ServerAuth, false)
    }

    /// A server certificate for `names` that expired in 2001.
    pub fn expired_server_cert(&self, names: &[&str]) -> Identity {
        self.issue(names, ExtendedKeyUsagePurpose::ServerAuth, true)
    }

    /// A client certificate (for mutual TLS).
    pub fn client_cert(&self, name: &str) -> Identity {
        self.issue(&[name], ExtendedKeyUsagePurpose::ClientAuth, false)
    }

    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose, expired: bool) -> Identity {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, names[0].as_str());
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        if expired {
            params.not_before = date_time_ymd(2000, 1, 1);
            params.not_after = date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        Identity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A rustls server configuration presenting `id`; with `client_ca`, a
/// client certificate issued by it is required.
pub fn server_config(id: &Identity, client_ca: Option<&TestCa>) -> Arc<ServerConfig> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("server chain");
    let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).expect("server key");
    let provider = server_provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions");
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca.cert_pem().as_bytes()) {
                roots.add(cert.expect("CA cert")).expect("add CA");
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .expect("server certificate");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// The server's crypto: aws-lc-rs, named rather than left to rustls, since
/// the tests may build rustls with both providers. It supports every key
/// exchange either client provider offers, X25519MLKEM768 first.
pub fn server_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// What a completed handshake agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub suite: CipherSuite,
    pub group: Option<NamedGroup>,
}

/// A TLS terminator on 127.0.0.1: every accepted connection is TLS-accepted
/// and then piped to `backend` (a plain test server). The accept loop stops
/// when this is dropped.
pub struct TlsFront {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
    handshakes: Arc<AtomicUsize>,
    alpn: Arc<std::sync::Mutex<Vec<Option<Vec<u8>>>>>,
    sni: Arc<std::sync::Mutex<Vec<Option<String>>>>,
    negotiated: Arc<std::sync::Mutex<Vec<Negotiated>>>,
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsFront {
    pub async fn start(config: Arc<ServerConfig>, backend: SocketAddr) -> TlsFront {
        TlsFront::start_inner(config, backend, false).await
    }

    /// Like [`TlsFront::start`], but reads from the client slowly (16 KiB
    /// per millisecond), so that the client's writes often find the socket
    /// full.
    pub async fn start_throttled(config: Arc<ServerConfig>, backend: SocketAddr) -> TlsFront {
        TlsFront::start_inner(config, backend, true).await
    }

    async fn start_inner(
        config: Arc<ServerConfig>,
        backend: SocketAddr,
        throttle: bool,
    ) -> TlsFront {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr");
        let acceptor = TlsAcceptor::from(config);
        let handshakes = Arc::new(AtomicUsize::new(0));
        let alpn = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sni = Arc::new(std::sync::Mutex::new(Vec::new()));
        let negotiated = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (count, alpn_log, sni_log, agreed_log) = (
            handshakes.clone(),
            alpn.clone(),
            sni.clone(),
            negotiated.clone(),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let acceptor = acceptor.clone();
                let (count, alpn_log, sni_log, agreed_log) = (
                    count.clone(),
                    alpn_log.clone(),
                    sni_log.clone(),
                    agreed_log.clone(),
                );
                tokio::spawn(async move {
                    let mut tls = match acceptor.accept(tcp).into_fallible().await {
                        Ok(tls) => tls,
                        Err((_, tcp)) => {
                            linger(tcp).await;
                            return;
                        }
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    let (_, session) = tls.get_ref();
                    alpn_log
                        .lock()
                        .unwrap()
                        .push(session.alpn_protocol().map(<[u8]>::to_vec));
                    sni_log
                        .lock()
                        .unwrap()
                        .push(session.server_name().map(str::to_owned));
                    agreed_log.lock().unwrap().push(Negotiated {
                        suite: session
                            .negotiated_cipher_suite()
                            .expect("a suite after the handshake")
                            .suite(),
                        group: session.negotiated_key_exchange_group().map(|g| g.name()),
                    });
                    let Ok(mut plain) = TcpStream::connect(backend).await else {
                        return;
                    };
                    if throttle {
                        slow_pipe(tls, plain).await;
                    } else {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    }
                });
            }
        });
        TlsFront {
            addr,
            task,
            handshakes,
            alpn,
            sni,
            negotiated,
        }
    }

    /// `wss://HOST:PORT/` for this front.
    pub fn url(&self, host: &str) -> String {
        format!("wss://{host}:{}/", self.addr.port())
    }

    /// How many TLS handshakes completed.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }

    /// The ALPN protocol agreed on each completed handshake.
    pub fn alpn(&self) -> Vec<Option<Vec<u8>>> {
        self.alpn.lock().unwrap().clone()
    }

    /// The SNI name the client sent on each completed handshake.
    pub fn sni(&self) -> Vec<Option<String>> {
        self.sni.lock().unwrap().clone()
    }

    /// The cipher suite and key exchange of each completed handshake.
    pub fn negotiated(&self) -> Vec<Negotiated> {
        self.negotiated.lock().unwrap().clone()
    }
}

/// Pipes `tls` and `plain` both ways, reading from the client at most
/// 16 KiB per millisecond.
async fn slow_pipe(tls: tokio_rustls::server::TlsStream<TcpStream>, plain: TcpStream) {
    let (mut tls_r, mut tls_w) = tokio::io::split(tls);
    let (mut plain_r, mut plain_w) = plain.into_split();
    let up = async move {
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            match tls_r.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if plain_w.write_all(&chunk[..n]).await.is_err() {
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let _ = plain_w.shutdown().await;
    };
    let down = async move {
        let _ = tokio::io::copy(&mut plain_r, &mut tls_w).await;
        let _ = tls_w.shutdown().await;
    };
    tokio::join!(up, down);
}

/// After a failed handshake (the alert is already written), reads what the
/// client still sends for a moment before closing, so that the close is a
/// FIN rather than a reset that could overtake the alert.
async fn linger(mut tcp: TcpStream) {
    let mut scratch = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while matches!(tcp.read(&mut scratch).await, Ok(n) if n > 0) {}
    })
    .await;
}
