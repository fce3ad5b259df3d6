//! Connections through an HTTP `CONNECT` proxy and a SOCKS5 proxy, both
//! written here as small tokio tasks on 127.0.0.1, with and without
//! credentials; and the `*_PROXY` / `NO_PROXY` environment variables.
//!
//! Every test takes [`ENV_LOCK`]: one of them changes the process's
//! environment, which must not race with name resolution (`getaddrinfo`
//! reads the environment) in the others.

mod support;
#[cfg(feature = "tls")]
#[path = "support/tls.rs"]
mod tls_support;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use support::TestServer;
use unisocket::{connect_socket, ConnectOptions, Data, ErrorKind, SocketError, SocketTask};

/// Serializes the tests of this file (see the file's doc).
static ENV_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs a test body under the tests' bound, holding [`ENV_LOCK`].
async fn within<F: Future<Output = ()>>(body: F) {
    let _env = ENV_LOCK.lock().await;
    support::within(body).await;
}

/// What a test proxy was asked for, in order.
type Log = Arc<Mutex<Vec<String>>>;

/// A proxy task on 127.0.0.1; the accept loop stops when this is dropped.
struct TestProxy {
    addr: SocketAddr,
    log: Log,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestProxy {
    async fn start<F, Fut>(handler: F) -> TestProxy
    where
        F: Fn(TcpStream, Log) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local_addr");
        let log = Log::default();
        let handler = Arc::new(handler);
        let l = log.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(handler(stream, l.clone()));
            }
        });
        TestProxy { addr, log, task }
    }

    /// An HTTP proxy that answers `CONNECT host:port` (and only that); with
    /// `auth`, a matching Basic `Proxy-Authorization` is required (407
    /// otherwise). Logs each CONNECT target.
    async fn http(auth: Option<(&str, &str)>) -> TestProxy {
        let expected = auth.map(|(u, p)| format!("Basic {}", STANDARD.encode(format!("{u}:{p}"))));
        TestProxy::start(move |mut client, log| {
            let expected = expected.clone();
            async move {
                let Some(head) = support::read_http_head(&mut client).await else {
                    return;
                };
                let head = String::from_utf8_lossy(&head).into_owned();
                let mut lines = head.split("\r\n");
                let request_line = lines.next().unwrap_or_default().to_owned();
                let mut parts = request_line.split(' ');
                let (method, target) = (parts.next(), parts.next().unwrap_or_default());
                if method != Some("CONNECT") {
                    let _ = client
                        .write_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                        .await;
                    return;
                }
                log.lock().unwrap().push(target.to_owned());
                let given = lines.find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("proxy-authorization")
                        .then(|| value.trim().to_owned())
                });
                if let Some(expected) = expected {
                    if given.as_deref() != Some(expected.as_str()) {
                        let _ = client
                            .write_all(
                                b"HTTP/1.1 407 Proxy Authentication Required\r\n\
                                  Proxy-Authenticate: Basic realm=\"test\"\r\n\
                                  Content-Length: 0\r\n\r\n",
                            )
                            .await;
                        return;
                    }
                }
                let Ok(mut server) = TcpStream::connect(target).await else {
                    let _ = client
                        .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                        .await;
                    return;
                };
                if client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .is_ok()
                {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            }
        })
        .await
    }

    /// A SOCKS5 proxy (RFC 1928, CONNECT only); with `auth`, the
    /// username/password method (RFC 1929) is required. Logs each request
    /// as `ipv4 ADDR:PORT`, `ipv6 [ADDR]:PORT` or `name HOST:PORT`.
    async fn socks5(auth: Option<(&str, &str)>) -> TestProxy {
        let auth = auth.map(|(u, p)| (u.to_owned(), p.to_owned()));
        TestProxy::start(move |client, log| {
            let auth = auth.clone();
            async move {
                let _ = socks5_session(client, auth, log).await;
            }
        })
        .await
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

async fn socks5_session(
    mut client: TcpStream,
    auth: Option<(String, String)>,
    log: Log,
) -> std::io::Result<()> {
    let mut head = [0u8; 2];
    client.read_exact(&mut head).await?;
    let mut methods = vec![0u8; usize::from(head[1])];
    client.read_exact(&mut methods).await?;
    let method = if auth.is_some() { 2 } else { 0 };
    if head[0] != 5 || !methods.contains(&method) {
        client.write_all(&[5, 0xFF]).await?;
        return Ok(());
    }
    client.write_all(&[5, method]).await?;
    if let Some((user, password)) = auth {
        let mut ver_len = [0u8; 2];
        client.read_exact(&mut ver_len).await?;
        let mut given_user = vec![0u8; usize::from(ver_len[1])];
        client.read_exact(&mut given_user).await?;
        let mut len = [0u8; 1];
        client.read_exact(&mut len).await?;
        let mut given_password = vec![0u8; usize::from(len[0])];
        client.read_exact(&mut given_password).await?;
        let ok = given_user == user.as_bytes() && given_password == password.as_bytes();
        client.write_all(&[1, if ok { 0 } else { 1 }]).await?;
        if !ok {
            return Ok(());
        }
    }
    let mut req = [0u8; 4];
    client.read_exact(&mut req).await?;
    let (entry, target) = match req[3] {
        1 => {
            let mut a = [0u8; 6];
            client.read_exact(&mut a).await?;
            let addr =
                SocketAddr::from(([a[0], a[1], a[2], a[3]], u16::from_be_bytes([a[4], a[5]])));
            (format!("ipv4 {addr}"), addr.to_string())
        }
        4 => {
            let mut a = [0u8; 18];
            client.read_exact(&mut a).await?;
            let ip: [u8; 16] = a[..16].try_into().unwrap();
            let addr = SocketAddr::from((ip, u16::from_be_bytes([a[16], a[17]])));
            (format!("ipv6 {addr}"), addr.to_string())
        }
        3 => {
            let mut len = [0u8; 1];
            client.read_exact(&mut len).await?;
            let mut name = vec![0u8; usize::from(len[0]) + 2];
            client.read_exact(&mut name).await?;
            let port = u16::from_be_bytes([name[name.len() - 2], name[name.len() - 1]]);
            let host = String::from_utf8_lossy(&name[..name.len() - 2]).into_owned();
            (format!("name {host}:{port}"), format!("{host}:{port}"))
        }
        _ => return Ok(()),
    };
    log.lock().unwrap().push(entry);
    match TcpStream::connect(target).await {
        Ok(mut server) => {
            client.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
            tokio::io::copy_bidirectional(&mut client, &mut server).await?;
        }
        // Reply 5: connection refused.
        Err(_) => client.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]).await?,
    }
    Ok(())
}

/// Opens (bounded) and checks one echo.
async fn echo_through(options: ConnectOptions) -> SocketTask {
    let task = tokio::time::timeout(Duration::from_secs(10), connect_socket(options))
        .await
        .expect("open timed out")
        .expect("open failed");
    task.send("via proxy").await.expect("send");
    assert_eq!(
        task.recv().await.as_ref().and_then(Data::as_text),
        Some("via proxy")
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

/// A port on 127.0.0.1 where nothing listens.
async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("local_addr").port()
}

#[tokio::test]
async fn ws_through_http_connect() {
    within(async {
        let echo = TestServer::echo().await;
        let proxy = TestProxy::http(None).await;
        let task =
            echo_through(ConnectOptions::new(echo.url()).proxy(format!("http://{}", proxy.addr)))
                .await;
        assert_eq!(proxy.log(), vec![echo.addr.to_string()]);
        let seen = Arc::new(Mutex::new(None));
        let s = seen.clone();
        task.on_open(move |ev| *s.lock().unwrap() = Some(ev.profile));
        let profile = seen.lock().unwrap().take().expect("open event");
        assert!(profile.connect > Duration::ZERO, "{profile:?}");
    })
    .await;
}

#[tokio::test]
async fn http_connect_with_percent_encoded_credentials() {
    within(async {
        let echo = TestServer::echo().await;
        let proxy = TestProxy::http(Some(("us@er", "p@ss:word"))).await;
        echo_through(
            ConnectOptions::new(echo.url())
                .proxy(format!("http://us%40er:p%40ss%3Aword@{}", proxy.addr)),
        )
        .await;
        assert_eq!(proxy.log().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn http_connect_wrong_credentials_is_a_proxy_error() {
    within(async {
        let echo = TestServer::echo().await;
        let proxy = TestProxy::http(Some(("user", "right"))).await;
        for url in [
            format!("http://user:wrong@{}", proxy.addr),
            format!("http://{}", proxy.addr),
        ] {
            let e = open_error(ConnectOptions::new(echo.url()).proxy(url)).await;
            assert_eq!(e.kind(), ErrorKind::Proxy);
            // The proxy's status, without parsing the message.
            assert_eq!(e.http_status(), Some(407));
            assert_eq!(
                e.err_msg(),
                format!(
                    "connectSocket:fail proxy {} refused CONNECT to {}: HTTP 407 Proxy Authentication Required",
                    proxy.addr, echo.addr
                )
            );
        }
        assert_eq!(echo.accepted(), 0);
    })
    .await;
}

#[tokio::test]
async fn http_connect_forbidden_is_a_proxy_error_naming_the_answer() {
    within(async {
        let echo = TestServer::echo().await;
        // A proxy whose policy forbids the destination.
        let proxy = TestProxy::start(|mut client, _| async move {
            let _ = support::read_http_head(&mut client).await;
            let _ = client
                .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                .await;
        })
        .await;
        let e = open_error(ConnectOptions::new(echo.url()).proxy(format!("http://{}", proxy.addr)))
            .await;
        assert_eq!(e.kind(), ErrorKind::Proxy);
        assert_eq!(
            e.err_msg(),
            format!(
                "connectSocket:fail proxy {} refused CONNECT to {}: HTTP 403 Forbidden",
                proxy.addr, echo.addr
            )
        );
        assert_eq!(echo.accepted(), 0);
    })
    .await;
}

#[tokio::test]
async fn http_proxy_oversized_answer_is_bounded() {
    within(async {
        // A "proxy" that answers with an endless header.
        let proxy = TestProxy::start(|mut client, _| async move {
            let _ = support::read_http_head(&mut client).await;
            let _ = client.write_all(b"HTTP/1.1 200 OK\r\nX-Junk: ").await;
            let junk = vec![b'a'; 64 * 1024];
            while client.write_all(&junk).await.is_ok() {}
        })
        .await;
        let e = open_error(
            ConnectOptions::new("ws://127.0.0.1:9/").proxy(format!("http://{}", proxy.addr)),
        )
        .await;
        assert_eq!(e.kind(), ErrorKind::Proxy);
        assert!(
            e.reason().contains("larger than 16384 bytes"),
            "{}",
            e.reason()
        );
    })
    .await;
}

#[tokio::test]
async fn unreachable_proxy_is_a_proxy_error() {
    within(async {
        let port = closed_port().await;
        let e = open_error(
            ConnectOptions::new("ws://127.0.0.1:9/").proxy(format!("socks5://127.0.0.1:{port}")),
        )
        .await;
        assert_eq!(e.kind(), ErrorKind::Proxy);
        assert!(
            e.reason().starts_with(&format!(
                "cannot reach proxy 127.0.0.1:{port}: connection refused"
            )),
            "{}",
            e.reason()
        );
    })
    .await;
}

#[cfg(feature = "tls")]
#[tokio::test]
async fn wss_through_http_connect() {
    use tls_support::{server_config, TestCa, TlsFront};
    within(async {
        let ca = TestCa::new("unisocket proxy CA");
        let echo = TestServer::echo().await;
        let front = TlsFront::start(
            server_config(&ca.server_cert(&["localhost"]), None),
            echo.addr,
        )
        .await;
        let proxy = TestProxy::http(Some(("u", "p"))).await;
        echo_through(
            ConnectOptions::new(front.url("localhost"))
                .ca_certificates_pem(ca.cert_pem())
                .proxy(format!("http://u:p@{}", proxy.addr)),
        )
        .await;
        // The proxy gets the name; TLS still checks the certificate for it.
        assert_eq!(
            proxy.log(),
            vec![format!("localhost:{}", front.addr.port())]
        );
        assert_eq!(front.sni(), vec![Some("localhost".to_owned())]);
    })
    .await;
}

#[tokio::test]
async fn ws_through_socks5() {
    within(async {
        let echo = TestServer::echo().await;
        let proxy = TestProxy::socks5(None).await;
        echo_through(ConnectOptions::new(echo.url()).proxy(format!("socks5://{}", proxy.addr)))
            .await;
        assert_eq!(proxy.log(), vec![format!("ipv4 {}", echo.addr)]);
    })
    .await;
}

#[tokio::test]
async fn socks5_resolves_here_and_socks5h_at_the_proxy() {
    within(async {
        let echo = TestServer::echo().await;
        let url = format!("ws://localhost:{}/", echo.addr.port());
        let proxy = TestProxy::socks5(None).await;
        echo_through(ConnectOptions::new(url.clone()).proxy(format!("socks5h://{}", proxy.addr)))
            .await;
        assert_eq!(
            proxy.log(),
            vec![format!("name localhost:{}", echo.addr.port())]
        );

        let proxy = TestProxy::socks5(None).await;
        echo_through(ConnectOptions::new(url).proxy(format!("socks5://{}", proxy.addr))).await;
        // "localhost" may resolve to ::1 first, where nothing listens: the
        // client then asks again for the next address.
        let log = proxy.log();
        assert_eq!(
            log.last().map(String::as_str),
            Some(format!("ipv4 {}", echo.addr).as_str()),
            "{log:?}"
        );
        assert!(log.iter().all(|l| !l.starts_with("name ")), "{log:?}");
    })
    .await;
}

#[tokio::test]
async fn socks5_with_credentials() {
    within(async {
        let echo = TestServer::echo().await;
        let proxy = TestProxy::socks5(Some(("alice", "s3cret"))).await;
        echo_through(
            ConnectOptions::new(echo.url()).proxy(format!("socks5://alice:s3cret@{}", proxy.addr)),
        )
        .await;

        let e = open_error(
            ConnectOptions::new(echo.url()).proxy(format!("socks5://alice:nope@{}", proxy.addr)),
        )
        .await;
        assert_eq!(e.kind(), ErrorKind::Proxy);
        assert_eq!(
            e.reason(),
            format!(
                "SOCKS5 proxy {} rejected the user name and password (status 1)",
                proxy.addr
            )
        );

        let e =
            open_error(ConnectOptions::new(echo.url()).proxy(format!("socks5://{}", proxy.addr)))
                .await;
        assert_eq!(e.kind(), ErrorKind::Proxy);
        assert!(
            e.reason().contains("requires authentication"),
            "{}",
            e.reason()
        );
    })
    .await;
}

#[tokio::test]
async fn socks5_refusal_names_the_reply() {
    within(async {
        let proxy = TestProxy::socks5(None).await;
        let port = closed_port().await;
        let e = open_error(
            ConnectOptions::new(format!("ws://127.0.0.1:{port}/"))
                .proxy(format!("socks5://{}", proxy.addr)),
        )
        .await;
        assert_eq!(e.kind(), ErrorKind::Proxy);
        assert_eq!(
            e.err_msg(),
            format!(
                "connectSocket:fail SOCKS5 proxy {} refused the connection to 127.0.0.1:{port}: \
                 connection refused by destination host (reply 5)",
                proxy.addr
            )
        );
    })
    .await;
}

#[tokio::test]
async fn invalid_proxy_url_fails_at_once() {
    within(async {
        let e = open_error(ConnectOptions::new("ws://127.0.0.1:9/").proxy("ftp://proxy:21")).await;
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(
            e.reason()
                .starts_with("invalid proxy URL \"ftp://proxy:21\""),
            "{}",
            e.reason()
        );
    })
    .await;
}

/// The proxy variables this test touches, saved and restored around it.
const PROXY_VARS: [&str; 8] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// Restores the saved variables when dropped, even if the test panics.
struct EnvRestore(Vec<(&'static str, Option<std::ffi::OsString>)>);

impl Drop for EnvRestore {
    fn drop(&mut self) {
        for (name, value) in &self.0 {
            match value {
                Some(v) => std::env::set_var(name, v),
                None => std::env::remove_var(name),
            }
        }
    }
}

#[tokio::test]
async fn proxy_from_the_environment_and_no_proxy() {
    within(async {
        let _restore = EnvRestore(
            PROXY_VARS
                .iter()
                .map(|n| (*n, std::env::var_os(n)))
                .collect(),
        );
        for name in PROXY_VARS {
            std::env::remove_var(name);
        }
        let echo = TestServer::echo().await;
        let http = TestProxy::http(None).await;
        let socks = TestProxy::socks5(None).await;

        // ws:// takes HTTP_PROXY.
        std::env::set_var("HTTP_PROXY", format!("http://{}", http.addr));
        echo_through(ConnectOptions::new(echo.url())).await;
        assert_eq!(http.log(), vec![echo.addr.to_string()]);

        // NO_PROXY by IP (with a port, which is ignored), by "*".
        for no_proxy in [
            format!("example.com, 127.0.0.1:{}", echo.addr.port()),
            "*".into(),
        ] {
            std::env::set_var("no_proxy", no_proxy);
            echo_through(ConnectOptions::new(echo.url())).await;
            assert_eq!(http.log().len(), 1);
        }
        std::env::remove_var("no_proxy");

        // no_proxy() in code ignores the environment.
        echo_through(ConnectOptions::new(echo.url()).no_proxy()).await;
        assert_eq!(http.log().len(), 1);

        // ALL_PROXY when HTTP_PROXY is unset (lower case too).
        std::env::remove_var("HTTP_PROXY");
        std::env::set_var("all_proxy", format!("socks5://{}", socks.addr));
        echo_through(ConnectOptions::new(echo.url())).await;
        assert_eq!(socks.log(), vec![format!("ipv4 {}", echo.addr)]);

        // A proxy given in code wins over the environment.
        echo_through(ConnectOptions::new(echo.url()).proxy(format!("http://{}", http.addr))).await;
        assert_eq!(http.log().len(), 2);
        assert_eq!(socks.log().len(), 1);

        // A broken variable is reported, naming it.
        std::env::set_var("all_proxy", "gopher://x");
        let e = open_error(ConnectOptions::new(echo.url())).await;
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.reason().contains("in all_proxy"), "{}", e.reason());
    })
    .await;
}
