//! `wss://` against a rustls server on 127.0.0.1 whose certificates come
//! from a CA made for each test: trust, verification failures, the
//! `danger_` door and mutual TLS.
#![cfg(feature = "tls")]

mod support;
#[path = "support/tls.rs"]
mod tls_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::crypto::{aws_lc_rs, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::{CipherSuite, NamedGroup};
use support::{within, TestServer};
use tls_support::{server_config, Negotiated, TestCa, TlsFront};
use unisocket::{
    connect_socket, CloseOptions, ConnectOptions, Data, ErrorKind, OpenEvent, SocketError,
    SocketTask,
};

/// An echo server behind TLS with a certificate of `ca` for `names`.
async fn echo_front(ca: &TestCa, names: &[&str]) -> (TlsFront, TestServer) {
    let echo = TestServer::echo().await;
    let front = TlsFront::start(server_config(&ca.server_cert(names), None), echo.addr).await;
    (front, echo)
}

/// Opens (bounded), sends one text and one binary message, checks the echo.
async fn echo_roundtrip(options: ConnectOptions) -> SocketTask {
    let task = tokio::time::timeout(Duration::from_secs(10), connect_socket(options))
        .await
        .expect("open timed out")
        .expect("open failed");
    task.send("over TLS").await.expect("send text");
    assert_eq!(
        task.recv().await.as_ref().and_then(Data::as_text),
        Some("over TLS")
    );
    task.send(vec![1u8, 2, 3]).await.expect("send binary");
    assert_eq!(
        task.recv().await.map(Data::into_bytes).as_deref(),
        Some(&[1u8, 2, 3][..])
    );
    task
}

/// Connects and expects a failure before OPEN.
async fn open_error(options: ConnectOptions) -> SocketError {
    match tokio::time::timeout(Duration::from_secs(10), connect_socket(options))
        .await
        .expect("the attempt timed out")
    {
        Ok(_) => panic!("the connection opened, but it should have failed"),
        Err(e) => e,
    }
}

fn open_event(task: &SocketTask) -> OpenEvent {
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    task.on_open(move |ev| *s.lock().unwrap() = Some(ev.clone()));
    let ev = seen.lock().unwrap().take();
    ev.expect("on_open fires at once after the open")
}

#[tokio::test]
async fn trusted_ca_from_pem_bytes_echoes() {
    within(async {
        let ca = TestCa::new("unisocket test CA");
        let (front, _echo) = echo_front(&ca, &["localhost"]).await;
        let task = echo_roundtrip(
            ConnectOptions::new(front.url("localhost")).ca_certificates_pem(ca.cert_pem()),
        )
        .await;
        let ev = open_event(&task);
        assert!(ev.profile.tls > Duration::ZERO, "profile: {:?}", ev.profile);
        assert!(ev.profile.total >= ev.profile.tls);
        // SNI and ALPN as a browser sends them.
        assert_eq!(front.sni(), vec![Some("localhost".to_owned())]);
        assert_eq!(front.alpn(), vec![Some(b"http/1.1".to_vec())]);
        task.close(CloseOptions::default()).await.expect("close");
    })
    .await;
}

#[tokio::test]
async fn trusted_ca_from_pem_file_echoes() {
    within(async {
        let ca = TestCa::new("unisocket file CA");
        let (front, _echo) = echo_front(&ca, &["localhost"]).await;
        let path = std::env::temp_dir().join(format!(
            "unisocket-test-ca-{}-{}.pem",
            std::process::id(),
            front.addr.port()
        ));
        std::fs::write(&path, ca.cert_pem()).expect("write the CA file");
        let result = tokio::time::timeout(
            Duration::from_secs(10),
            connect_socket(
                ConnectOptions::new(front.url("localhost"))
                    .ca_certificates_file(&path)
                    .webpki_roots(false),
            ),
        )
        .await;
        let _ = std::fs::remove_file(&path);
        let task = result.expect("open timed out").expect("open failed");
        task.send("file").await.expect("send");
        assert_eq!(
            task.recv().await.as_ref().and_then(Data::as_text),
            Some("file")
        );
    })
    .await;
}

#[tokio::test]
async fn ip_address_certificate_without_sni() {
    within(async {
        let ca = TestCa::new("unisocket IP CA");
        let (front, _echo) = echo_front(&ca, &["127.0.0.1"]).await;
        echo_roundtrip(
            ConnectOptions::new(front.url("127.0.0.1")).ca_certificates_pem(ca.cert_pem()),
        )
        .await;
        // No SNI for an IP address (RFC 6066 section 3).
        assert_eq!(front.sni(), vec![None]);
    })
    .await;
}

#[tokio::test]
async fn large_messages_cross_tls_whole() {
    within(async {
        let ca = TestCa::new("unisocket bulk CA");
        let echo = TestServer::echo().await;
        let front = TlsFront::start_throttled(
            server_config(&ca.server_cert(&["localhost"]), None),
            echo.addr,
        )
        .await;
        let task = connect_socket(
            ConnectOptions::new(front.url("localhost")).ca_certificates_pem(ca.cert_pem()),
        )
        .await
        .expect("open");
        // Far larger than what rustls buffers (64 KiB), with a server that
        // reads slowly: writes keep finding the socket full.
        let big: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
        for _ in 0..3 {
            drop(task.send(big.clone()));
        }
        for _ in 0..3 {
            let got = tokio::time::timeout(Duration::from_secs(10), task.recv())
                .await
                .expect("echo timed out")
                .expect("message");
            assert_eq!(got.as_bytes(), &big[..]);
        }
        task.close(CloseOptions::default()).await.expect("close");
    })
    .await;
}

#[tokio::test]
async fn unknown_issuer_is_a_tls_error() {
    within(async {
        let ca = TestCa::new("a CA nobody trusts");
        let (front, _echo) = echo_front(&ca, &["localhost"]).await;
        let e = open_error(ConnectOptions::new(front.url("localhost"))).await;
        assert_eq!(e.kind(), ErrorKind::Tls);
        assert_eq!(
            e.err_msg(),
            "connectSocket:fail TLS handshake with localhost failed: invalid peer certificate: UnknownIssuer"
        );
        assert!(std::error::Error::source(&e).is_some());
        assert_eq!(front.handshakes(), 0);
    })
    .await;
}

#[tokio::test]
async fn wrong_host_name_is_a_tls_error() {
    within(async {
        let ca = TestCa::new("unisocket name CA");
        let (front, _echo) = echo_front(&ca, &["example.test"]).await;
        for host in ["localhost", "127.0.0.1"] {
            let e = open_error(
                ConnectOptions::new(front.url(host)).ca_certificates_pem(ca.cert_pem()),
            )
            .await;
            assert_eq!(e.kind(), ErrorKind::Tls, "{host}");
            let reason = e.reason();
            assert!(
                reason.starts_with(&format!(
                    "TLS handshake with {host} failed: invalid peer certificate: certificate not valid for name"
                )),
                "{reason}"
            );
            assert!(reason.contains("example.test"), "{reason}");
        }
    })
    .await;
}

#[tokio::test]
async fn expired_certificate_is_a_tls_error() {
    within(async {
        let ca = TestCa::new("unisocket expiry CA");
        let echo = TestServer::echo().await;
        let front = TlsFront::start(
            server_config(&ca.expired_server_cert(&["localhost"]), None),
            echo.addr,
        )
        .await;
        let e = open_error(
            ConnectOptions::new(front.url("localhost")).ca_certificates_pem(ca.cert_pem()),
        )
        .await;
        assert_eq!(e.kind(), ErrorKind::Tls);
        assert!(
            e.reason()
                .starts_with("TLS handshake with localhost failed: invalid peer certificate: certificate expired"),
            "{}",
            e.reason()
        );
    })
    .await;
}

#[tokio::test]
async fn dangerous_accept_invalid_certs_opens_anyway() {
    within(async {
        let ca = TestCa::new("untrusted CA");
        // Untrusted issuer *and* the wrong name.
        let (front, _echo) = echo_front(&ca, &["example.test"]).await;
        echo_roundtrip(
            ConnectOptions::new(front.url("localhost"))
                .dangerous()
                .accept_invalid_certs(),
        )
        .await;
        assert_eq!(front.handshakes(), 1);
    })
    .await;
}

#[tokio::test]
async fn mutual_tls_needs_the_client_certificate() {
    within(async {
        let ca = TestCa::new("unisocket mTLS CA");
        let echo = TestServer::echo().await;
        let front = TlsFront::start(
            server_config(&ca.server_cert(&["localhost"]), Some(&ca)),
            echo.addr,
        )
        .await;
        let client = ca.client_cert("client.test");
        echo_roundtrip(
            ConnectOptions::new(front.url("localhost"))
                .ca_certificates_pem(ca.cert_pem())
                .client_certificate(client.cert_pem.clone(), client.key_pem.clone()),
        )
        .await;

        // Without it the server refuses; with TLS 1.3 the client learns it
        // from an alert right after its side of the handshake.
        let e = open_error(
            ConnectOptions::new(front.url("localhost")).ca_certificates_pem(ca.cert_pem()),
        )
        .await;
        assert_eq!(e.kind(), ErrorKind::Tls, "{}", e.err_msg());
        assert!(e.reason().contains("CertificateRequired"), "{}", e.reason());
    })
    .await;
}

#[tokio::test]
async fn bad_tls_options_fail_before_any_connection() {
    within(async {
        let ca = TestCa::new("unisocket CA");
        let (front, _echo) = echo_front(&ca, &["localhost"]).await;
        let e = open_error(
            ConnectOptions::new(front.url("localhost")).ca_certificates_pem("no PEM here"),
        )
        .await;
        assert_eq!(e.kind(), ErrorKind::Tls);
        assert!(e.reason().contains("no certificate"), "{}", e.reason());

        let client = ca.client_cert("client.test");
        let e = open_error(
            ConnectOptions::new(front.url("localhost"))
                .client_certificate(client.cert_pem, "not a key"),
        )
        .await;
        assert_eq!(e.kind(), ErrorKind::Tls);
        assert!(
            e.reason().starts_with("invalid private key"),
            "{}",
            e.reason()
        );

        let e = open_error(
            ConnectOptions::new(front.url("localhost"))
                .ca_certificates_file("/nonexistent/unisocket/ca.pem"),
        )
        .await;
        assert!(
            e.reason()
                .starts_with("cannot read the CA certificates file"),
            "{}",
            e.reason()
        );
        assert_eq!(front.handshakes(), 0);
    })
    .await;
}

#[tokio::test]
async fn the_default_provider_offers_post_quantum_key_exchange() {
    within(async {
        let ca = TestCa::new("unisocket key exchange CA");
        let (front, _echo) = echo_front(&ca, &["localhost"]).await;
        echo_roundtrip(
            ConnectOptions::new(front.url("localhost")).ca_certificates_pem(ca.cert_pem()),
        )
        .await;
        let agreed = front.negotiated();
        assert_eq!(agreed.len(), 1, "{agreed:?}");
        // Nothing in this process installs a provider (the tests that do
        // run in child processes): the built-in one is used.
        assert!(CryptoProvider::get_default().is_none());
        if cfg!(feature = "aws-lc-rs") {
            // rustls's aws-lc-rs provider puts the hybrid X25519MLKEM768
            // first, and the server (aws-lc-rs too) takes it.
            assert_eq!(agreed[0].group, Some(NamedGroup::X25519MLKEM768));
        } else {
            // *ring* has no post-quantum key exchange.
            assert!(agreed[0].group.is_some(), "{agreed:?}");
            assert_ne!(agreed[0].group, Some(NamedGroup::X25519MLKEM768));
        }
        assert_eq!(agreed[0].suite, CipherSuite::TLS13_AES_256_GCM_SHA384);
    })
    .await;
}

#[tokio::test]
async fn an_application_client_config_is_used() {
    within(async {
        let ca = TestCa::new("unisocket own config CA");
        let (front, _echo) = echo_front(&ca, &["localhost"]).await;
        // The application's configuration: only ChaCha20 and P-256, trusting
        // the test CA and nothing else, with an ALPN list of its own.
        let provider = CryptoProvider {
            cipher_suites: vec![aws_lc_rs::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256],
            kx_groups: vec![aws_lc_rs::kx_group::SECP256R1],
            ..aws_lc_rs::default_provider()
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(
            rustls::pki_types::CertificateDer::pem_slice_iter(ca.cert_pem().as_bytes())
                .map(Result::unwrap),
        );
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let config = Arc::new(config);
        // Other TLS options do not count beside it.
        echo_roundtrip(
            ConnectOptions::new(front.url("localhost"))
                .webpki_roots(false)
                .tls_client_config(config.clone()),
        )
        .await;
        assert_eq!(
            front.negotiated(),
            vec![Negotiated {
                suite: CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
                group: Some(NamedGroup::secp256r1),
            }]
        );
        assert_eq!(front.alpn(), vec![Some(b"http/1.1".to_vec())]);

        // Its trust is its own: another CA's server is refused.
        let other = TestCa::new("a CA the configuration does not trust");
        let (stranger, _echo2) = echo_front(&other, &["localhost"]).await;
        let e = open_error(
            ConnectOptions::new(stranger.url("localhost"))
                .ca_certificates_pem(other.cert_pem())
                .tls_client_config(config),
        )
        .await;
        assert!(e.reason().ends_with("UnknownIssuer"), "{}", e.reason());
    })
    .await;
}

// ---- Tests that change process-wide state run in a child process each ----

/// Set in a child process started by [`run_child`].
const CHILD: &str = "UNISOCKET_TLS_CHILD";

/// Runs `name` (an ignored test of this file) in a child process with
/// `env` (`SSL_CERT_FILE` and `SSL_CERT_DIR` are unset unless given), and
/// checks that it ran and passed.
fn run_child(name: &str, env: &[(&str, &std::path::Path)]) {
    let mut command = std::process::Command::new(std::env::current_exe().expect("current_exe"));
    command
        .args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR");
    for (key, value) in env {
        command.env(key, value);
    }
    let out = command.output().expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "the child test {name} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn in_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

#[test]
fn a_provider_installed_later_is_used_by_later_connections() {
    run_child("provider_installed_later_child", &[]);
}

#[tokio::test]
#[ignore = "run in a child process by a_provider_installed_later_is_used_by_later_connections"]
async fn provider_installed_later_child() {
    if !in_child() {
        return; // it installs the process's provider, for good
    }
    within(async {
        let ca = TestCa::new("unisocket provider CA");
        let (front, _echo) = echo_front(&ca, &["localhost"]).await;
        let trusted =
            || ConnectOptions::new(front.url("localhost")).ca_certificates_pem(ca.cert_pem());
        // The built-in provider; this configuration is cached.
        echo_roundtrip(trusted()).await;
        echo_roundtrip(trusted()).await;

        // The application installs a provider of its own: ChaCha20 and
        // P-256 only, which the server reports.
        CryptoProvider {
            cipher_suites: vec![aws_lc_rs::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256],
            kx_groups: vec![aws_lc_rs::kx_group::SECP256R1],
            ..aws_lc_rs::default_provider()
        }
        .install_default()
        .expect("no provider was installed before");
        // The same options again (a configuration was cached for them
        // before), other options, and the default options' path (any
        // certificate is accepted: the handshake completes).
        echo_roundtrip(trusted()).await;
        echo_roundtrip(
            ConnectOptions::new(front.url("localhost"))
                .dangerous()
                .accept_invalid_certs(),
        )
        .await;

        let agreed = front.negotiated();
        assert_eq!(agreed.len(), 4, "{agreed:?}");
        for before in &agreed[..2] {
            assert_ne!(before.suite, CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
        }
        let installed = Negotiated {
            suite: CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
            group: Some(NamedGroup::secp256r1),
        };
        assert_eq!(agreed[2..], [installed, installed]);
    })
    .await;
}

/// `SSL_CERT_FILE` / `SSL_CERT_DIR` decide the system's CA bundle on Linux
/// and other Unix systems but macOS (rustls-native-certs).
#[cfg(all(feature = "native-roots", not(any(target_vendor = "apple", windows))))]
mod system_store {
    use super::*;
    use std::path::{Path, PathBuf};
    use tls_support::Identity;

    /// A directory of its own for a parent test and its child.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(test: &str) -> Scratch {
            let dir =
                std::env::temp_dir().join(format!("unisocket-tls-{}-{test}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("make the scratch directory");
            Scratch(dir)
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, text).expect("write a scratch file");
            path
        }

        /// Writes a server identity as NAME.pem and NAME.key.
        fn identity(&self, name: &str, id: &Identity) {
            self.write(&format!("{name}.pem"), &id.cert_pem);
            self.write(&format!("{name}.key"), &id.key_pem);
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// In the child: a server for the identity NAME of the parent's
    /// scratch directory.
    async fn server(name: &str) -> (TlsFront, TestServer) {
        let dir = PathBuf::from(std::env::var_os("UNISOCKET_TLS_SCRATCH").expect("scratch dir"));
        let read = |ext: &str| {
            std::fs::read_to_string(dir.join(format!("{name}.{ext}"))).expect("read identity")
        };
        let id = Identity {
            cert_pem: read("pem"),
            key_pem: read("key"),
        };
        let echo = TestServer::echo().await;
        let front = TlsFront::start(server_config(&id, None), echo.addr).await;
        (front, echo)
    }

    fn scratch_env(scratch: &Scratch) -> (&'static str, &Path) {
        ("UNISOCKET_TLS_SCRATCH", scratch.0.as_path())
    }

    #[test]
    fn the_system_store_is_trusted() {
        let scratch = Scratch::new("system");
        let ca = TestCa::new("unisocket system CA");
        let bundle = scratch.write("bundle.pem", &ca.cert_pem());
        scratch.identity("server", &ca.server_cert(&["localhost"]));
        run_child(
            "system_store::system_store_trusted_child",
            &[("SSL_CERT_FILE", &bundle), scratch_env(&scratch)],
        );
    }

    #[tokio::test]
    #[ignore = "run in a child process by the_system_store_is_trusted"]
    async fn system_store_trusted_child() {
        if !in_child() {
            return;
        }
        within(async {
            let (front, _echo) = server("server").await;
            // No CA given: the system's bundle has it.
            echo_roundtrip(ConnectOptions::new(front.url("localhost"))).await;
            echo_roundtrip(ConnectOptions::new(front.url("localhost")).webpki_roots(false)).await;
        })
        .await;
    }

    #[test]
    fn a_system_store_that_does_not_load_fails_naming_the_error() {
        run_child(
            "system_store::unloadable_store_child",
            &[(
                "SSL_CERT_FILE",
                Path::new("/nonexistent/unisocket/bundle.pem"),
            )],
        );
    }

    #[tokio::test]
    #[ignore = "run in a child process by a_system_store_that_does_not_load_fails_naming_the_error"]
    async fn unloadable_store_child() {
        if !in_child() {
            return;
        }
        within(async {
            // Refused before any connection (nothing listens on port 9).
            for options in [
                ConnectOptions::new("wss://localhost:9/"),
                ConnectOptions::new("wss://localhost:9/")
                    .ca_certificates_pem(TestCa::new("unisocket CA").cert_pem()),
            ] {
                let e = open_error(options).await;
                assert_eq!(e.kind(), ErrorKind::Tls);
                assert_eq!(
                    e.err_msg(),
                    "connectSocket:fail cannot load the system's root certificates (feature \
                     `native-roots`): failed to read PEM from file: No such file or directory \
                     (os error 2) at '/nonexistent/unisocket/bundle.pem'"
                );
            }
        })
        .await;
    }

    #[test]
    fn a_partly_loaded_system_store_is_used_and_its_errors_explain_an_unknown_issuer() {
        let scratch = Scratch::new("partial");
        let ca = TestCa::new("unisocket system CA");
        let bundle = scratch.write("bundle.pem", &ca.cert_pem());
        scratch.identity("trusted", &ca.server_cert(&["localhost"]));
        scratch.identity(
            "stranger",
            &TestCa::new("a CA of no store").server_cert(&["localhost"]),
        );
        run_child(
            "system_store::partly_loaded_store_child",
            &[
                ("SSL_CERT_FILE", &bundle),
                ("SSL_CERT_DIR", Path::new("/nonexistent/unisocket/certs")),
                scratch_env(&scratch),
            ],
        );
    }

    #[tokio::test]
    #[ignore = "run in a child process by a_partly_loaded_system_store_is_used_and_its_errors_explain_an_unknown_issuer"]
    async fn partly_loaded_store_child() {
        if !in_child() {
            return;
        }
        within(async {
            let (front, _echo) = server("trusted").await;
            echo_roundtrip(ConnectOptions::new(front.url("localhost"))).await;

            let (stranger, _echo2) = server("stranger").await;
            let e = open_error(ConnectOptions::new(stranger.url("localhost"))).await;
            assert_eq!(
                e.reason(),
                "TLS handshake with localhost failed: invalid peer certificate: UnknownIssuer \
                 (the system's certificate store loaded with errors: opening directory: No such \
                 file or directory (os error 2) at '/nonexistent/unisocket/certs')"
            );
            // Other failures say nothing of the store.
            let e = open_error(ConnectOptions::new(front.url("127.0.0.1"))).await;
            assert!(!e.reason().contains("system"), "{}", e.reason());
        })
        .await;
    }
}
