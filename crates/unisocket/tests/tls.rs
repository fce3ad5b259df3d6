//! `wss://` against a rustls server on 127.0.0.1 whose certificates come
//! from a CA made for each test: trust, verification failures, the
//! `danger_` door and mutual TLS.
#![cfg(feature = "tls")]

mod support;
#[path = "support/tls.rs"]
mod tls_support;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::TestServer;
use tls_support::{server_config, TestCa, TlsFront};
use unisocket::{
    connect_socket, CloseOptions, ConnectOptions, Data, ErrorKind, OpenEvent, SocketError,
    SocketTask,
};

/// The overall limit of one test.
const TEST_TIMEOUT: Duration = Duration::from_secs(20);

async fn within<F: Future<Output = ()>>(body: F) {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("the test did not finish within 20 s");
}

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
async fn danger_accept_invalid_certs_opens_anyway() {
    within(async {
        let ca = TestCa::new("untrusted CA");
        // Untrusted issuer *and* the wrong name.
        let (front, _echo) = echo_front(&ca, &["example.test"]).await;
        echo_roundtrip(
            ConnectOptions::new(front.url("localhost")).danger_accept_invalid_certs(true),
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
