//! `connect_socket`: input checks, then a task and its driver.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
#[cfg(not(target_arch = "wasm32"))]
use std::time::Instant;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

#[cfg(not(target_arch = "wasm32"))]
use crate::driver::{self, Params};
use crate::error::{Api, ErrorKind, SocketError};
use crate::events::CloseEvent;
use crate::options::{ConnectOptions, ConnectSuccess};
#[cfg(not(target_arch = "wasm32"))]
use crate::options::{ProxyChoice, TlsOptions};
use crate::redact;
use crate::task::{Shared, SocketTask};
#[cfg(not(target_arch = "wasm32"))]
use crate::{proto, runtime, transport};

/// Where to connect, checked and split up by `connect_socket`.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub host: String,
    pub port: u16,
    /// `wss://`: TLS over the connection.
    pub secure: bool,
    pub host_header: String,
    pub request_target: String,
}

static NETWORK_TIMEOUT_MS: AtomicU64 = AtomicU64::new(60_000);

/// Sets the default connection timeout of every later `connect_socket` (the
/// `networkTimeout.connectSocket` of `manifest.json`). The default is 60 s;
/// [`ConnectOptions::timeout`] overrides it per call.
///
/// ```
/// use std::time::Duration;
///
/// unisocket::set_network_timeout(Duration::from_secs(15));
/// assert_eq!(unisocket::network_timeout(), Duration::from_secs(15));
/// # unisocket::set_network_timeout(Duration::from_secs(60));
/// ```
pub fn set_network_timeout(timeout: Duration) {
    let ms = u64::try_from(timeout.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    NETWORK_TIMEOUT_MS.store(ms, Ordering::Relaxed);
}

/// The current default connection timeout.
///
/// ```
/// // 60 s unless changed by `set_network_timeout` or `Manifest::apply`.
/// println!("connect timeout: {:?}", unisocket::network_timeout());
/// ```
pub fn network_timeout() -> Duration {
    Duration::from_millis(NETWORK_TIMEOUT_MS.load(Ordering::Relaxed))
}

/// Opens a WebSocket connection: `uni.connectSocket(OBJECT)`.
///
/// Always returns a [`SocketTask`]. Invalid input (a bad URL, a `Referer`
/// header, an invalid subprotocol, ...) fails at once through `fail` and
/// leaves the task CLOSED, with awaiting it giving the same error; nothing
/// touches the network. Otherwise `success` fires at once (the request is
/// under way, as in uni-app), and `on_open` fires when the handshake completes.
/// If the attempt then fails (timeout, DNS, refused, TLS, an HTTP status, a
/// proxy's refusal), `on_error` fires with the `connectSocket:fail ...`
/// errMsg, then `on_close` with 1006, and awaiting the task gives the error;
/// `fail` is not called, since `success` was.
///
/// Outside a tokio runtime the connection runs on a background runtime
/// started on first use, so this works from a plain `fn main`.
///
/// ```no_run
/// use unisocket::{connect_socket, ConnectOptions};
///
/// let task = connect_socket(ConnectOptions::new("ws://127.0.0.1:9001"));
/// task.on_open(|ev| println!("open, protocol {:?}", ev.protocol));
/// task.on_message(|ev| println!("message: {:?}", ev.data));
/// task.on_close(|ev| println!("closed with {}", ev.code));
/// ```
pub fn connect_socket(mut options: ConnectOptions) -> SocketTask {
    #[cfg(not(target_arch = "wasm32"))]
    let started = Instant::now();
    let shared = Shared::new(
        options.max_held_bytes,
        options.queue_until_open,
        options.max_buffered_bytes,
    );
    let task = SocketTask {
        shared: shared.clone(),
    };
    let callbacks = std::mem::take(&mut options.callbacks);
    #[cfg(not(target_arch = "wasm32"))]
    let prepared = prepare(options, started);
    #[cfg(target_arch = "wasm32")]
    let prepared = crate::browser::prepare(options);
    let params = match prepared {
        Ok(params) => params,
        Err(err) => {
            shared.failed(err.clone());
            shared.closed(CloseEvent {
                code: 1006,
                reason: err.reason().to_owned(),
                was_clean: false,
            });
            callbacks.settle(&Err(err));
            return task;
        }
    };
    // Registered first: inside `success` the task is the current socket
    // (when no older one is alive), and the global functions act on it.
    crate::global::register(&task);
    // The request is under way: `success` now, as in uni-app. What goes
    // wrong on the network from here on reaches `on_error` and `on_close`
    // (and the awaited task's `Err`), never `fail`: a call ends in one of
    // the two.
    callbacks.settle(&Ok(ConnectSuccess {
        err_msg: Api::ConnectSocket.ok_msg(),
    }));
    #[cfg(not(target_arch = "wasm32"))]
    runtime::spawn(driver::run(shared, params));
    #[cfg(target_arch = "wasm32")]
    crate::browser::spawn(shared, params);
    task
}

/// The checks of every engine: the URL, the headers, the subprotocols, and
/// the features the options need.
pub(crate) fn check(options: &ConnectOptions) -> Result<Target, SocketError> {
    let target = parse_url(&options.url)?;
    check_headers(&options.headers)?;
    check_protocols(&options.protocols)?;
    if options.deflate.is_some() && !cfg!(feature = "deflate") {
        return Err(invalid(
            ErrorKind::InvalidArgument,
            "per_message_deflate needs the `deflate` feature of unisocket",
        ));
    }
    Ok(target)
}

/// The native driver's parameters, once the options are checked. PEM files
/// and the proxy variables of the environment are read here, so that a bad
/// one fails at once, before any connection.
#[cfg(not(target_arch = "wasm32"))]
fn prepare(options: ConnectOptions, started: Instant) -> Result<Box<Params>, SocketError> {
    let target = check(&options)?;
    let ConnectOptions {
        url,
        headers,
        protocols,
        timeout,
        tcp_no_delay,
        limits,
        max_held_bytes: _,
        close_timeout,
        receive_while_closing,
        max_send_frame_size,
        queue_until_open,
        tls,
        proxy,
        deflate,
        heartbeat,
        reconnect,
        max_queued_bytes,
        max_buffered_bytes: _,
        callbacks: _,
    } = options;
    let route = route(&target, &tls, &proxy)?;
    Ok(Box::new(Params {
        target,
        headers: with_url_credentials(&url, headers),
        protocols,
        timeout: timeout.unwrap_or_else(network_timeout),
        no_delay: tcp_no_delay,
        route,
        config: proto::Config {
            limits,
            max_send_frame_size,
            close_timeout,
            receive_while_closing,
            deflate: None,
            heartbeat,
        },
        deflate,
        reconnect,
        queue_until_open,
        max_queued_bytes,
        started,
    }))
}

/// The proxy and the TLS configuration for `target`.
#[cfg(not(target_arch = "wasm32"))]
fn route(
    target: &Target,
    tls: &TlsOptions,
    proxy: &ProxyChoice,
) -> Result<transport::Route, SocketError> {
    Ok(transport::Route {
        proxy: transport::Proxy::choose(proxy, &target.host, target.secure)?,
        tls: if target.secure {
            Some(transport::TlsConfig::new(tls)?)
        } else {
            None
        },
    })
}

fn invalid(kind: ErrorKind, reason: impl std::fmt::Display) -> SocketError {
    SocketError::new(Api::ConnectSocket, kind, reason)
}

pub(crate) fn parse_url(raw: &str) -> Result<Target, SocketError> {
    // Errors show the URL without its password.
    let shown = redact::url(raw);
    let url = url::Url::parse(raw).map_err(|e| {
        invalid(
            ErrorKind::InvalidUrl,
            format_args!("invalid URL {shown:?}: {e}"),
        )
    })?;
    let (default_port, secure) = match url.scheme() {
        "ws" => (80, false),
        "wss" => (443, true),
        _ => {
            return Err(invalid(
                ErrorKind::InvalidUrl,
                format_args!("invalid URL {shown:?}: scheme must be ws or wss"),
            ))
        }
    };
    if url.fragment().is_some() {
        return Err(invalid(
            ErrorKind::InvalidUrl,
            format_args!("invalid URL {shown:?}: a WebSocket URL cannot have a fragment"),
        ));
    }
    let host = match url.host() {
        Some(url::Host::Ipv6(a)) => a.to_string(),
        Some(h) => h.to_string(),
        None => {
            return Err(invalid(
                ErrorKind::InvalidUrl,
                format_args!("invalid URL {shown:?}: no host"),
            ))
        }
    };
    let port = url.port().unwrap_or(default_port);
    let host_str = url.host_str().unwrap_or_default();
    let host_header = match url.port() {
        Some(p) => format!("{host_str}:{p}"),
        None => host_str.to_owned(),
    };
    let mut request_target = url.path().to_owned();
    if request_target.is_empty() {
        request_target.push('/');
    }
    if let Some(q) = url.query() {
        request_target.push('?');
        request_target.push_str(q);
    }
    Ok(Target {
        host,
        port,
        secure,
        host_header,
        request_target,
    })
}

/// `headers` with `Authorization: Basic base64(user:password)` added when the
/// URL `raw` has user info, as curl and websocat send it: user name and
/// password percent-decoded (any bytes, not only UTF-8), the password empty
/// when the URL has none. A header the application set itself
/// (`Authorization` in any case) wins, and then the user info is not sent.
#[cfg(not(target_arch = "wasm32"))]
fn with_url_credentials(raw: &str, mut headers: Vec<(String, String)>) -> Vec<(String, String)> {
    if let Some(value) = url_credentials(raw) {
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("authorization"))
        {
            headers.push(("Authorization".to_owned(), value));
        }
    }
    headers
}

/// The `Basic` credentials of the user info of `raw`, if it has some.
pub(crate) fn url_credentials(raw: &str) -> Option<String> {
    let url = url::Url::parse(raw).ok()?;
    let password = url.password().unwrap_or_default();
    if url.username().is_empty() && password.is_empty() {
        return None;
    }
    let mut pair: Vec<u8> = percent_encoding::percent_decode_str(url.username()).collect();
    pair.push(b':');
    pair.extend(percent_encoding::percent_decode_str(password));
    Some(format!("Basic {}", STANDARD.encode(pair)))
}

/// Whether `s` is an HTTP token (RFC 9110 section 5.6.2).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Headers the handshake sets itself, or that uni-app forbids.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "content-length",
    "transfer-encoding",
];

fn check_headers(headers: &[(String, String)]) -> Result<(), SocketError> {
    for (name, value) in headers {
        if !is_token(name) {
            return Err(invalid(
                ErrorKind::InvalidHeader,
                format_args!("invalid header name {name:?}: it must be an HTTP token"),
            ));
        }
        if name.eq_ignore_ascii_case("referer") {
            return Err(invalid(
                ErrorKind::InvalidHeader,
                "the Referer header cannot be set",
            ));
        }
        if RESERVED_HEADERS
            .iter()
            .any(|r| name.eq_ignore_ascii_case(r))
        {
            let hint = if name.eq_ignore_ascii_case("sec-websocket-protocol") {
                "; use protocols"
            } else {
                ""
            };
            return Err(invalid(
                ErrorKind::InvalidHeader,
                format_args!("the {name} header is set by the WebSocket handshake itself{hint}"),
            ));
        }
        if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7F) {
            return Err(invalid(
                ErrorKind::InvalidHeader,
                format_args!(
                    "invalid value for header {name}: it contains CR, LF or another control byte"
                ),
            ));
        }
    }
    Ok(())
}

fn check_protocols(protocols: &[String]) -> Result<(), SocketError> {
    for (i, p) in protocols.iter().enumerate() {
        if p.is_empty() {
            return Err(invalid(
                ErrorKind::InvalidProtocol,
                "a subprotocol cannot be empty",
            ));
        }
        if !is_token(p) {
            return Err(invalid(
                ErrorKind::InvalidProtocol,
                format_args!("invalid subprotocol {p:?}: it must be an HTTP token"),
            ));
        }
        if protocols[..i].contains(p) {
            return Err(invalid(
                ErrorKind::InvalidProtocol,
                format_args!("subprotocol {p:?} is listed twice"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_target_and_host_header() {
        let t = parse_url("ws://example.com/chat?room=1").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("example.com", 80));
        assert_eq!(t.host_header, "example.com");
        assert_eq!(t.request_target, "/chat?room=1");
        let t = parse_url("ws://127.0.0.1:9001").unwrap();
        assert_eq!(t.port, 9001);
        assert_eq!(t.host_header, "127.0.0.1:9001");
        assert_eq!(t.request_target, "/");
        let t = parse_url("ws://[::1]:8080/x").unwrap();
        assert_eq!(t.host, "::1");
        assert_eq!(t.host_header, "[::1]:8080");
        assert!(!t.secure);
        let t = parse_url("wss://example.com/x").unwrap();
        assert_eq!((t.port, t.secure), (443, true));
        assert_eq!(t.host_header, "example.com");
    }

    #[test]
    fn wss_routes_follow_the_tls_feature() {
        let t = parse_url("wss://example.com").unwrap();
        let secure = route(&t, &TlsOptions::default(), &ProxyChoice::Direct);
        if cfg!(feature = "tls") {
            assert!(secure.unwrap().tls.is_some());
        } else {
            let e = secure.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Tls);
            assert_eq!(
                e.reason(),
                "wss:// needs the `tls` feature of unisocket, which this build leaves out"
            );
        }
        let t = parse_url("ws://example.com").unwrap();
        let plain = route(&t, &TlsOptions::default(), &ProxyChoice::Direct).unwrap();
        assert!(plain.tls.is_none() && plain.proxy.is_none());
    }

    #[test]
    fn bad_urls_fail_with_reasons() {
        let e = parse_url("htp://x").unwrap_err();
        assert_eq!(
            e.err_msg(),
            "connectSocket:fail invalid URL \"htp://x\": scheme must be ws or wss"
        );
        assert_eq!(e.kind(), ErrorKind::InvalidUrl);
        assert!(parse_url("not a url").is_err());
        assert!(parse_url("ws://x/#frag").is_err());
    }

    #[test]
    fn url_errors_hide_the_password() {
        for raw in [
            "htp://u:s3cret@x",
            "ws://u:s3cret@x/#frag",
            "ws://u:s3cret@x:notaport/",
            "ws://u:s3cret@/",
            "ws://s3cret@:1/",
        ] {
            let e = parse_url(raw).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidUrl, "{raw}");
            assert!(!e.err_msg().contains("s3cret"), "{}", e.err_msg());
            assert!(!format!("{e:?}").contains("s3cret"), "{e:?}");
        }
        assert_eq!(
            parse_url("htp://u:s3cret@x").unwrap_err().err_msg(),
            "connectSocket:fail invalid URL \"htp://u:***@x\": scheme must be ws or wss"
        );
    }

    #[test]
    fn url_user_info_becomes_basic_credentials() {
        let h = |n: &str, v: &str| (n.to_owned(), v.to_owned());
        let basic = |pair: &str| format!("Basic {}", STANDARD.encode(pair));
        assert_eq!(
            with_url_credentials("ws://alice:pw@h/", vec![h("X-A", "1")]),
            [h("X-A", "1"), h("Authorization", &basic("alice:pw"))]
        );
        // Percent-decoded, as curl sends them; bytes that are not UTF-8 too.
        assert_eq!(
            url_credentials("wss://a%40b:p%3Aw%20x@h/"),
            Some(basic("a@b:p:w x"))
        );
        assert_eq!(
            url_credentials("ws://u:%FF@h/"),
            Some(format!("Basic {}", STANDARD.encode(b"u:\xff")))
        );
        // A user name alone, or a password alone.
        assert_eq!(url_credentials("ws://t0ken@h/"), Some(basic("t0ken:")));
        assert_eq!(url_credentials("ws://:pw@h/"), Some(basic(":pw")));
        // No user info: nothing added.
        assert_eq!(url_credentials("ws://h/"), None);
        assert_eq!(url_credentials("ws://@h/"), None);
        assert_eq!(with_url_credentials("ws://h/", Vec::new()), []);
        // The application's own Authorization header (any case) wins.
        let own = vec![h("authorization", "Bearer mine")];
        assert_eq!(with_url_credentials("ws://u:pw@h/", own.clone()), own);
    }

    #[test]
    fn header_and_protocol_checks() {
        let h = |n: &str, v: &str| vec![(n.to_owned(), v.to_owned())];
        assert!(check_headers(&h("X-Token", "abc")).is_ok());
        assert_eq!(
            check_headers(&h("referer", "x")).unwrap_err().kind(),
            ErrorKind::InvalidHeader
        );
        assert!(check_headers(&h("X-A", "a\r\nb")).is_err());
        assert!(check_headers(&h("X A", "a")).is_err());
        assert!(check_headers(&h("Sec-WebSocket-Key", "a")).is_err());
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_protocols(&p(&["a", "b"])).is_ok());
        assert!(check_protocols(&p(&["a", "a"])).is_err());
        assert!(check_protocols(&p(&[""])).is_err());
        assert!(check_protocols(&p(&["a b"])).is_err());
    }
}
