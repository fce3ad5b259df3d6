//! The option structs of `connect_socket`, `send` and `close`, and their
//! success results.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::data::Data;
use crate::error::{Api, SocketError};
use crate::proto::deflate::DeflateConfig;
use crate::proto::{Heartbeat, Limits};
use crate::reconnect::ReconnectPolicy;
use crate::redact;

pub(crate) type SuccessFn<T> = Box<dyn FnOnce(&T) + Send + 'static>;
pub(crate) type FailFn = Box<dyn FnOnce(&SocketError) + Send + 'static>;
pub(crate) type CompleteFn<T> = Box<dyn FnOnce(&Result<T, SocketError>) + Send + 'static>;

/// The `success` / `fail` / `complete` callbacks of one call.
pub(crate) struct Callbacks<T> {
    pub success: Option<SuccessFn<T>>,
    pub fail: Option<FailFn>,
    pub complete: Option<CompleteFn<T>>,
}

impl<T> Default for Callbacks<T> {
    fn default() -> Self {
        Callbacks {
            success: None,
            fail: None,
            complete: None,
        }
    }
}

impl<T> Callbacks<T> {
    pub(crate) fn is_empty(&self) -> bool {
        self.success.is_none() && self.fail.is_none() && self.complete.is_none()
    }

    /// Calls `success` or `fail`, then `complete`.
    pub(crate) fn settle(self, result: &Result<T, SocketError>) {
        match result {
            Ok(v) => {
                if let Some(f) = self.success {
                    f(v);
                }
            }
            Err(e) => {
                if let Some(f) = self.fail {
                    f(e);
                }
            }
        }
        if let Some(f) = self.complete {
            f(result);
        }
    }
}

macro_rules! callback_setters {
    ($ok:ty) => {
        /// Called when the call succeeds.
        ///
        /// # Examples
        ///
        /// ```
        /// use std::sync::mpsc;
        /// use unisocket::{connect_socket, ConnectOptions};
        ///
        /// // `connect_socket` calls `success` as soon as the attempt is under way;
        /// // `SendOptions` and `CloseOptions` have the same setter.
        /// let (tx, rx) = mpsc::channel();
        /// let options = ConnectOptions::new("ws://127.0.0.1:9/")
        ///     .success(move |ok| tx.send(ok.err_msg.clone()).unwrap());
        /// let _task = connect_socket(options);
        /// assert_eq!(rx.recv().unwrap(), "connectSocket:ok");
        /// ```
        #[must_use]
        pub fn success(mut self, f: impl FnOnce(&$ok) + Send + 'static) -> Self {
            self.callbacks.success = Some(Box::new(f));
            self
        }

        /// Called when the call fails.
        ///
        /// # Examples
        ///
        /// ```
        /// use std::sync::mpsc;
        /// use unisocket::{connect_socket, ConnectOptions, ErrorKind, SendOptions};
        ///
        /// let task = connect_socket(ConnectOptions::new("ws://")); // no host: closed at once
        /// let (tx, rx) = mpsc::channel();
        /// task.send(SendOptions::new("hi").fail(move |e| tx.send(e.kind()).unwrap()));
        /// assert_eq!(rx.recv().unwrap(), ErrorKind::NotConnected);
        /// ```
        #[must_use]
        pub fn fail(mut self, f: impl FnOnce(&SocketError) + Send + 'static) -> Self {
            self.callbacks.fail = Some(Box::new(f));
            self
        }

        /// Called after `success` or `fail`, with the result.
        ///
        /// # Examples
        ///
        /// ```
        /// use std::sync::mpsc;
        /// use unisocket::{connect_socket, CloseOptions, ConnectOptions};
        ///
        /// let task = connect_socket(ConnectOptions::new("ws://example.com").header("Referer", "x"));
        /// let (tx, rx) = mpsc::channel();
        /// // Runs after `success` or `fail`, with the result either way.
        /// task.close(CloseOptions::default().complete(move |result| tx.send(result.is_ok()).unwrap()));
        /// assert!(!rx.recv().unwrap()); // the task never opened: nothing to close
        /// ```
        #[must_use]
        pub fn complete(
            mut self,
            f: impl FnOnce(&Result<$ok, SocketError>) + Send + 'static,
        ) -> Self {
            self.callbacks.complete = Some(Box::new(f));
            self
        }
    };
}

/// The result of a successful `connect_socket`: the task exists and the
/// connection attempt is under way.
///
/// ```no_run
/// use unisocket::{connect_socket, ConnectOptions};
///
/// connect_socket(ConnectOptions::new("ws://127.0.0.1:9001").success(|ok| {
///     assert_eq!(ok.err_msg, "connectSocket:ok");
/// }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectSuccess {
    /// `"connectSocket:ok"`.
    pub err_msg: String,
}

/// The result of a successful send: the whole frame was handed to the transport.
///
/// ```no_run
/// # async fn demo(task: unisocket::SocketTask) -> Result<(), unisocket::SocketError> {
/// let ok = task.send("hi").await?;
/// assert_eq!(ok.err_msg, "sendSocketMessage:ok");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendSuccess {
    /// `"sendSocketMessage:ok"`.
    pub err_msg: String,
}

impl SendSuccess {
    /// The success of a send, `"sendSocketMessage:ok"`.
    pub(crate) fn ok() -> Self {
        SendSuccess {
            err_msg: Api::SendSocketMessage.ok_msg(),
        }
    }
}

/// The result of a successful close: the closing handshake ended.
///
/// ```no_run
/// # async fn demo(task: unisocket::SocketTask) -> Result<(), unisocket::SocketError> {
/// let ok = task.close(unisocket::CloseOptions::default()).await?;
/// assert_eq!(ok.err_msg, "closeSocket:ok");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CloseSuccess {
    /// `"closeSocket:ok"`.
    pub err_msg: String,
}

/// The options of [`connect_socket`](crate::connect_socket): `uni.connectSocket(OBJECT)`.
///
/// `Debug` leaves secrets out: the passwords of the URL and of the proxy URL,
/// the values of `Authorization`, `Proxy-Authorization` and `Cookie` headers
/// and PEM text (a private key) do not show ([`redact`](crate::redact)).
///
/// ```no_run
/// use std::time::Duration;
/// use unisocket::{connect_socket, ConnectOptions};
///
/// let task = connect_socket(
///     ConnectOptions::new("ws://127.0.0.1:9001/chat")
///         .header("Authorization", "Bearer abc")
///         .protocols(["chat.v1"])
///         .timeout(Duration::from_secs(10))
///         .success(|ok| println!("{}", ok.err_msg))
///         .fail(|e| eprintln!("{}", e.err_msg())),
/// );
/// # drop(task);
/// ```
pub struct ConnectOptions {
    pub(crate) url: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) protocols: Vec<String>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) tcp_no_delay: bool,
    pub(crate) limits: Limits,
    pub(crate) max_held_bytes: usize,
    pub(crate) close_timeout: Duration,
    pub(crate) receive_while_closing: bool,
    pub(crate) max_send_frame_size: Option<usize>,
    pub(crate) queue_until_open: bool,
    pub(crate) deflate: Option<DeflateConfig>,
    pub(crate) heartbeat: Option<Heartbeat>,
    pub(crate) reconnect: Option<ReconnectPolicy>,
    pub(crate) max_queued_bytes: usize,
    pub(crate) max_buffered_bytes: usize,
    pub(crate) tls: TlsOptions,
    pub(crate) proxy: ProxyChoice,
    pub(crate) callbacks: Callbacks<ConnectSuccess>,
}

/// PEM text given in code or read from a file when the connection starts.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Pem {
    Bytes(Vec<u8>),
    File(PathBuf),
}

impl fmt::Debug for Pem {
    // PEM text may be a private key: its length only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pem::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            Pem::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// The TLS settings of `wss://` connections, as given; turned into a rustls
/// configuration by `transport::TlsConfig::new`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsOptions {
    /// Extra trusted CA certificates.
    pub ca: Vec<Pem>,
    /// Client certificate chain and private key, for mutual TLS.
    pub client_auth: Option<(Pem, Pem)>,
    /// Trust the Mozilla roots of `webpki-roots`.
    pub webpki_roots: bool,
    /// Skip server certificate verification.
    pub danger_accept_invalid_certs: bool,
    /// The application's own rustls configuration, which replaces the above.
    #[cfg(all(feature = "tls", not(target_arch = "wasm32")))]
    pub client_config: Option<OwnClientConfig>,
}

/// An application's rustls configuration ([`ConnectOptions::tls_client_config`]),
/// the same one if it is the same `Arc`.
#[cfg(all(feature = "tls", not(target_arch = "wasm32")))]
#[derive(Clone)]
pub(crate) struct OwnClientConfig(pub std::sync::Arc<rustls::ClientConfig>);

#[cfg(all(feature = "tls", not(target_arch = "wasm32")))]
impl PartialEq for OwnClientConfig {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

#[cfg(all(feature = "tls", not(target_arch = "wasm32")))]
impl Eq for OwnClientConfig {}

#[cfg(all(feature = "tls", not(target_arch = "wasm32")))]
impl fmt::Debug for OwnClientConfig {
    // Its parts (keys, resumption secrets) are not ours to print.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientConfig { .. }")
    }
}

impl Default for TlsOptions {
    fn default() -> Self {
        TlsOptions {
            ca: Vec::new(),
            client_auth: None,
            webpki_roots: true,
            danger_accept_invalid_certs: false,
            #[cfg(all(feature = "tls", not(target_arch = "wasm32")))]
            client_config: None,
        }
    }
}

/// The proxy a connection goes through, as
/// [`ConnectOptions::proxy_in_use`] tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProxyInUse {
    /// The proxy's URL, its password hidden.
    pub url: String,
    /// Where it was set.
    pub source: ProxySource,
}

/// Where the proxy in use was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxySource {
    /// [`ConnectOptions::proxy`].
    Options,
    /// This environment variable (`HTTPS_PROXY`, `http_proxy`, `ALL_PROXY`, ...).
    Env(&'static str),
}

impl fmt::Display for ProxySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxySource::Options => f.write_str("the options"),
            ProxySource::Env(name) => f.write_str(name),
        }
    }
}

/// How to pick a proxy.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum ProxyChoice {
    /// From `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` / `NO_PROXY`.
    FromEnv,
    /// Connect directly.
    Direct,
    /// This proxy URL.
    Url(String),
}

impl fmt::Debug for ProxyChoice {
    // The proxy URL without its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyChoice::FromEnv => f.write_str("FromEnv"),
            ProxyChoice::Direct => f.write_str("Direct"),
            ProxyChoice::Url(url) => f.debug_tuple("Url").field(&redact::url(url)).finish(),
        }
    }
}

impl fmt::Debug for ConnectOptions {
    // URL, proxy and headers without their secrets (see `unisocket::redact`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("url", &redact::url(&self.url))
            .field("headers", &redact::HeaderList(&self.headers))
            .field("protocols", &self.protocols)
            .field("timeout", &self.timeout)
            .field("proxy", &self.proxy)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl ConnectOptions {
    /// Options for connecting to `url` (`ws://` or `wss://`), with every
    /// other setting at its default.
    ///
    /// User info in the URL (`wss://user:password@host/`) is sent as
    /// `Authorization: Basic base64(user:password)`, user name and password
    /// percent-decoded, as curl does; an `Authorization` header set with
    /// [`header`](Self::header) wins over it. Error messages and `Debug`
    /// show the URL with its password as `***`.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket::{connect_socket, ConnectOptions, ReadyState};
    ///
    /// let options = ConnectOptions::new("wss://example.com/socket?room=1");
    /// assert!(format!("{options:?}").contains(r#"url: "wss://example.com/socket?room=1""#));
    /// let with_login = ConnectOptions::new("wss://alice:s3cret@example.com/");
    /// assert!(format!("{with_login:?}").contains(r#"url: "wss://alice:***@example.com/""#));
    /// // The URL is checked by `connect_socket`, not here.
    /// let task = connect_socket(ConnectOptions::new("http://example.com/"));
    /// assert_eq!(task.ready_state(), ReadyState::Closed);
    /// ```
    pub fn new(url: impl Into<String>) -> Self {
        ConnectOptions {
            url: url.into(),
            headers: Vec::new(),
            protocols: Vec::new(),
            timeout: None,
            tcp_no_delay: true,
            limits: Limits::default(),
            max_held_bytes: 16 << 20,
            close_timeout: Duration::from_secs(5),
            receive_while_closing: false,
            max_send_frame_size: None,
            queue_until_open: false,
            deflate: None,
            heartbeat: None,
            reconnect: None,
            max_queued_bytes: 16 << 20,
            max_buffered_bytes: 16 << 20,
            tls: TlsOptions::default(),
            proxy: ProxyChoice::FromEnv,
            callbacks: Callbacks::default(),
        }
    }

    /// Adds a request header (`header` in uni-app). `Referer` and the
    /// headers of the WebSocket handshake itself are refused.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use unisocket::{connect_socket, ConnectOptions};
    ///
    /// let options = ConnectOptions::new("wss://example.com/chat")
    ///     .header("Authorization", "Bearer abc")
    ///     .header("X-Client-Version", "1.2.0");
    /// # drop(options);
    /// // A header of the handshake itself is refused before any connection.
    /// let (tx, rx) = mpsc::channel();
    /// let bad = ConnectOptions::new("ws://example.com").header("Upgrade", "h2c");
    /// connect_socket(bad.fail(move |e| tx.send(e.reason().to_owned()).unwrap()));
    /// assert_eq!(rx.recv().unwrap(), "the Upgrade header is set by the WebSocket handshake itself");
    /// ```
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The subprotocols to offer (`protocols` in uni-app), in order of preference.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket::ConnectOptions;
    ///
    /// // Preferred first; `SocketTask::protocol` tells which one the server chose.
    /// let options = ConnectOptions::new("wss://example.com/graphql")
    ///     .protocols(["graphql-transport-ws", "graphql-ws"]);
    /// assert!(format!("{options:?}").contains(r#"protocols: ["graphql-transport-ws", "graphql-ws"]"#));
    /// ```
    #[must_use]
    pub fn protocols<I, S>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.protocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// How long the whole connection attempt (DNS, TCP, TLS, handshake) may
    /// take. Overrides [`set_network_timeout`](crate::set_network_timeout)
    /// and the manifest; the default is 60 s.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main]
    /// # async fn main() {
    /// use std::time::Duration;
    /// use unisocket::{connect_socket, ConnectOptions, ErrorKind};
    ///
    /// // A server that accepts the TCP connection but never answers the handshake.
    /// let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// let url = format!("ws://{}/", silent.local_addr().unwrap());
    /// let options = ConnectOptions::new(url).timeout(Duration::from_millis(100));
    /// let err = connect_socket(options).await.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Timeout);
    /// assert_eq!(err.reason(), "timed out after 100 ms");
    /// # }
    /// ```
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets `TCP_NODELAY` (default `true`).
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket::ConnectOptions;
    ///
    /// // Few, large messages: let the kernel coalesce small writes (Nagle's algorithm).
    /// let options = ConnectOptions::new("ws://127.0.0.1:9001/upload").tcp_no_delay(false);
    /// # drop(options);
    /// ```
    #[must_use]
    pub fn tcp_no_delay(mut self, on: bool) -> Self {
        self.tcp_no_delay = on;
        self
    }

    /// The largest message accepted from the server (default 64 MiB).
    /// A larger one fails the connection with close code 1009.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket::ConnectOptions;
    ///
    /// // A chat client: no message from the server is ever above 1 MiB.
    /// let options = ConnectOptions::new("wss://example.com/chat").max_message_size(1 << 20);
    /// # drop(options);
    /// ```
    #[must_use]
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.limits.max_message_size = bytes;
        self
    }

    /// The largest frame accepted from the server, on the wire. By default
    /// there is no limit of its own: frames are bounded by
    /// [`max_message_size`](Self::max_message_size), so that a message of
    /// any size up to that limit arrives however the server frames it. A
    /// larger frame fails the connection with close code 1009.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket::ConnectOptions;
    ///
    /// // Large messages are welcome, but only in fragments of at most 64 KiB.
    /// let options = ConnectOptions::new("wss://example.com/files")
    ///     .max_message_size(256 << 20)
    ///     .max_frame_size(64 << 10);
    /// # drop(options);
    /// ```
    #[must_use]
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.limits.max_frame_size = bytes;
        self
    }

    /// The largest handshake response accepted (default 64 KiB).
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket::ConnectOptions;
    ///
    /// // An embedded device: refuse a handshake response above 8 KiB.
    /// let options = ConnectOptions::new("ws://192.168.4.1/ws").max_handshake_response(8 * 1024);
    /// # drop(options);
    /// ```
    #[must_use]
    pub fn max_handshake_response(mut self, bytes: usize) -> Self {
        self.limits.max_handshake_response = bytes;
        self
    }

    /// How many bytes of received messages are held while nobody consumes
    /// them (default 16 MiB). When the limit is reached the task stops
    /// reading from the socket until messages are consumed, so nothing is
    /// dropped; the server sees TCP backpressure.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket::ConnectOptions;
    ///
    /// // Messages are taken with `recv` by a slow consumer: hold at most 1 MiB of
    /// // them, then let TCP slow the server down.
    /// let options = ConnectOptions::new("wss://example.com/ticks").max_held_bytes(1 << 20);
    /// # drop(options);
    /// ```
    #[must_use]
    pub fn max_held_bytes(mut self, bytes: usize) -> Self {
        self.max_held_bytes = bytes;
        self
    }

    /// How long `close` waits for the server's close frame (default 5 s).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use unisocket::ConnectOptions;
    ///
    /// // On shutdown, do not wait long for a slow server's close frame.
    /// let options = ConnectOptions::new("wss://example.com/chat").close_timeout(Duration::from_secs(1));
    /// # drop(options);
    /// ```
    #[must_use]
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Keep delivering the messages that arrive after `close` sent the
    /// close frame, until the server's close frame (default off: they are
    /// dropped, as in a browser, whose `readyState` is CLOSING then). The
    /// server may still be sending what it sent before it saw our close;
    /// with this, `on_message` and `recv` get all of it, in order, before
    /// `on_close`. The wait for the server's close frame stays bounded by
    /// [`close_timeout`](Self::close_timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket::ConnectOptions;
    ///
    /// // A script that sends its requests, closes, and wants every reply
    /// // the server sent before it answered the close.
    /// let options = ConnectOptions::new("ws://127.0.0.1:9001").receive_while_closing(true);
    /// # drop(options);
    /// ```
    #[must_use]
    pub fn receive_while_closing(mut self, on: bool) -> Self {
        self.receive_while_closing = on;
        self
    }

    /// Splits outgoing messages into frames of at most `bytes` payload bytes
    /// (default: one frame per message). `0` is taken as `1`.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket::ConnectOptions;
    ///
    /// // Send big uploads as 16 KiB fragments, for servers with a small frame limit.
    /// let options = ConnectOptions::new("wss://example.com/upload").max_send_frame_size(16 * 1024);
    /// # drop(options);
    /// ```
    #[must_use]
    pub fn max_send_frame_size(mut self, bytes: usize) -> Self {
        self.max_send_frame_size = Some(bytes.max(1));
        self
    }

    /// Queue sends made while CONNECTING and flush them in order on open,
    /// instead of failing them with `WebSocket is not connected`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use unisocket::{connect_socket, ConnectOptions, ErrorKind, SendOptions};
    ///
    /// // A server that never answers the handshake: the tasks stay CONNECTING.
    /// let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// let url = format!("ws://{}/", silent.local_addr().unwrap());
    /// let (tx, rx) = mpsc::channel();
    /// let plain = connect_socket(ConnectOptions::new(url.clone()));
    /// plain.send(SendOptions::new("early").fail(move |e| tx.send(e.kind()).unwrap()));
    /// assert_eq!(rx.recv().unwrap(), ErrorKind::NotConnected);
    ///
    /// let queued = connect_socket(ConnectOptions::new(url).queue_until_open(true));
    /// queued.send("early"); // waits for the open
    /// assert_eq!(queued.buffered_amount(), 5);
    /// ```
    #[must_use]
    pub fn queue_until_open(mut self, on: bool) -> Self {
        self.queue_until_open = on;
        self
    }

    /// With `queue_until_open`, the most bytes of messages that may wait for
    /// the open (default 16 MiB). A send beyond it fails with
    /// `sendSocketMessage:fail send queue full` (`ErrorKind::BufferFull`)
    /// as soon as the connection's driver takes it in, before any later send
    /// is queued; the sends already queued are kept.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use std::time::Duration;
    /// use unisocket::{connect_socket, ConnectOptions, ErrorKind, SendOptions};
    ///
    /// // A server that never answers the handshake: the task stays CONNECTING.
    /// let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// let url = format!("ws://{}/", silent.local_addr().unwrap());
    /// let task = connect_socket(ConnectOptions::new(url).queue_until_open(true).max_queued_bytes(8));
    /// task.send("12345678"); // fits
    /// let (tx, rx) = mpsc::channel();
    /// task.send(SendOptions::new("9").fail(move |e| tx.send(e.kind()).unwrap()));
    /// assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), ErrorKind::BufferFull);
    /// ```
    #[must_use]
    pub fn max_queued_bytes(mut self, bytes: usize) -> Self {
        self.max_queued_bytes = bytes;
        self
    }

    /// The high-water mark of [`SocketTask::buffered_amount`](crate::SocketTask::buffered_amount)
    /// (default 16 MiB). Past it, a send with a `success`, `fail` or
    /// `complete` callback fails at once (`send buffer full`), and a send
    /// without callbacks waits in order until the buffer drains below it, so
    /// that awaiting its `Completion` waits too. No more than the mark's
    /// worth of bytes may wait: past that, every send fails at once, whether
    /// its `Completion` is kept or dropped. So sends never hold more than
    /// twice the mark (plus one message larger than it: a single message
    /// larger than the mark is still sent when the buffer is empty).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use unisocket::{connect_socket, ConnectOptions, ErrorKind, SendOptions};
    ///
    /// // A server that never answers the handshake: sends wait in the buffer.
    /// let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// let url = format!("ws://{}/", silent.local_addr().unwrap());
    /// let task = connect_socket(ConnectOptions::new(url).queue_until_open(true).max_buffered_bytes(8));
    /// task.send("12345");
    /// let (tx, rx) = mpsc::channel();
    /// task.send(SendOptions::new("67890").fail(move |e| tx.send(e.kind()).unwrap()));
    /// assert_eq!(rx.recv().unwrap(), ErrorKind::BufferFull); // 5 + 5 > 8
    /// ```
    #[must_use]
    pub fn max_buffered_bytes(mut self, bytes: usize) -> Self {
        self.max_buffered_bytes = bytes;
        self
    }

    /// Sends a ping every `interval`; when nothing at all (a pong or any
    /// other frame) arrives within `timeout` after a ping, the task fails
    /// with `on_error` ("no pong within N ms") and `on_close` code 1006. This
    /// catches half-open connections that TCP alone notices only after
    /// minutes. Off by default.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use unisocket::{connect_socket, ConnectOptions, ErrorKind};
    ///
    /// // Ping every 30 s; a server silent for 10 s after a ping is taken as gone.
    /// let options = ConnectOptions::new("ws://127.0.0.1:9/")
    ///     .heartbeat(Duration::from_secs(30), Duration::from_secs(10));
    /// let task = connect_socket(options);
    /// task.on_error(|ev| {
    ///     if ev.error.kind() == ErrorKind::HeartbeatTimeout {
    ///         eprintln!("server went silent: {}", ev.err_msg);
    ///     }
    /// });
    /// ```
    #[must_use]
    pub fn heartbeat(mut self, interval: Duration, timeout: Duration) -> Self {
        self.heartbeat = Some(Heartbeat { interval, timeout });
        self
    }

    /// Reconnects after the connection is lost, and retries a first
    /// connection attempt that fails, as `policy` says. `on_open` fires at
    /// each successful (re)connection, `on_error` at each failure,
    /// `on_reconnecting` before each attempt, and `on_close` (with the
    /// connect `fail` callback, if the task never opened) only once, when the
    /// task gives up or is closed. The global `*_socket*` functions keep acting on the task
    /// across reconnects. Off by default.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket::{connect_socket, ConnectOptions, ReconnectPolicy};
    ///
    /// let task = connect_socket(ConnectOptions::new("ws://127.0.0.1:9/").reconnect(ReconnectPolicy::default()));
    /// task.on_open(|_| println!("connected (again)"));
    /// task.on_reconnecting(|ev| println!("attempt {} in {:?}", ev.attempt, ev.delay));
    /// task.on_close(|ev| println!("gave up: {}", ev.reason)); // once, at the very end
    /// ```
    #[must_use]
    pub fn reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = Some(policy);
        self
    }

    /// Also trusts the CA certificates in `pem` (one or more `BEGIN
    /// CERTIFICATE` blocks) for `wss://`. Calls add up; the Mozilla roots
    /// stay trusted unless [`webpki_roots(false)`](Self::webpki_roots).
    ///
    /// A `pem` without certificates fails the connection at once
    /// (`ErrorKind::Tls`).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use unisocket::{connect_socket, ConnectOptions, ErrorKind};
    ///
    /// // Usually `include_bytes!("ca.pem")`; PEM text without a certificate fails at once.
    /// let (tx, rx) = mpsc::channel();
    /// let options = ConnectOptions::new("wss://internal.example/")
    ///     .ca_certificates_pem("not a certificate")
    ///     .fail(move |e| tx.send(e.kind()).unwrap());
    /// connect_socket(options);
    /// assert_eq!(rx.recv().unwrap(), ErrorKind::Tls);
    /// ```
    #[must_use]
    pub fn ca_certificates_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls.ca.push(Pem::Bytes(pem.into()));
        self
    }

    /// Also trusts the CA certificates of the PEM file at `path` for
    /// `wss://`. The file is read by `connect_socket`; a file that cannot be
    /// read or holds no certificate fails the connection at once
    /// (`ErrorKind::Tls`).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main]
    /// # async fn main() {
    /// use unisocket::{connect_socket, ConnectOptions, ErrorKind};
    ///
    /// let options = ConnectOptions::new("wss://internal.example/").ca_certificates_file("/no/such/ca.pem");
    /// // The file is read by `connect_socket`: a missing one fails before any connection.
    /// let err = connect_socket(options).await.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Tls);
    /// assert!(err.reason().starts_with("cannot read the CA certificates file"));
    /// # }
    /// ```
    #[must_use]
    pub fn ca_certificates_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls.ca.push(Pem::File(path.into()));
        self
    }

    /// Whether to trust the Mozilla root certificates built in through
    /// `webpki-roots` (default `true`). Turn them off to trust only the
    /// certificates of [`ca_certificates_pem`](Self::ca_certificates_pem) /
    /// [`ca_certificates_file`](Self::ca_certificates_file) (and the system's
    /// CA bundle with the `native-roots` feature). With `native-roots` on
    /// macOS, iOS and Windows the operating system verifies, and the Mozilla
    /// roots are not used either way.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket::ConnectOptions;
    ///
    /// // A private service: trust the company CA, and nothing else.
    /// let options = ConnectOptions::new("wss://internal.example/")
    ///     .webpki_roots(false)
    ///     .ca_certificates_file("/etc/my-company/ca.pem");
    /// # drop(options);
    /// ```
    #[must_use]
    pub fn webpki_roots(mut self, on: bool) -> Self {
        self.tls.webpki_roots = on;
        self
    }

    /// Presents a client certificate for mutual TLS: `cert_chain_pem` holds
    /// the certificate first, then any intermediates; `key_pem` the private
    /// key (PKCS#8, PKCS#1 or SEC1).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use unisocket::{connect_socket, ConnectOptions, ErrorKind};
    ///
    /// // Usually `include_bytes!` of the chain and the key; these are not PEM at all.
    /// let options = ConnectOptions::new("wss://internal.example/").client_certificate("no cert", "no key");
    /// let task = connect_socket(options);
    /// let (tx, rx) = mpsc::channel();
    /// task.on_error(move |ev| tx.send(ev.error.kind()).unwrap());
    /// assert_eq!(rx.recv().unwrap(), ErrorKind::Tls); // refused before any connection
    /// ```
    #[must_use]
    pub fn client_certificate(
        mut self,
        cert_chain_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls.client_auth = Some((
            Pem::Bytes(cert_chain_pem.into()),
            Pem::Bytes(key_pem.into()),
        ));
        self
    }

    /// [`client_certificate`](Self::client_certificate) with both PEM
    /// documents read from files by `connect_socket`.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket::ConnectOptions;
    ///
    /// let options = ConnectOptions::new("wss://internal.example/")
    ///     .client_certificate_files("/etc/my-app/client-chain.pem", "/etc/my-app/client-key.pem");
    /// # drop(options);
    /// ```
    #[must_use]
    pub fn client_certificate_files(
        mut self,
        cert_chain_path: impl Into<PathBuf>,
        key_path: impl Into<PathBuf>,
    ) -> Self {
        self.tls.client_auth = Some((
            Pem::File(cert_chain_path.into()),
            Pem::File(key_path.into()),
        ));
        self
    }

    /// The door to the settings that weaken security, which a review
    /// should notice: [`DangerousOptions::accept_invalid_certs`]. Nothing
    /// changes until one of them is called.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket::ConnectOptions;
    ///
    /// // A throw-away local test server with a self-signed certificate.
    /// let options = ConnectOptions::new("wss://localhost:8443/")
    ///     .dangerous()
    ///     .accept_invalid_certs();
    /// # drop(options);
    /// ```
    pub fn dangerous(self) -> DangerousOptions {
        DangerousOptions(self)
    }

    /// Uses the application's own rustls (0.23) client configuration for
    /// `wss://`: its crypto provider, roots or verifier, client certificate,
    /// session cache and so on, in place of every other TLS option here
    /// (CAs, `webpki_roots`, client certificate, [`dangerous`](Self::dangerous)). Only ALPN is
    /// set: `http/1.1`, which the WebSocket upgrade needs (on a copy, which
    /// shares the original's session cache, when the configuration offers
    /// anything else).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use rustls::{ClientConfig, RootCertStore};
    /// use unisocket::ConnectOptions;
    ///
    /// # #[cfg(feature = "aws-lc-rs")] {
    /// // A configuration the application also uses for its HTTPS client.
    /// let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    /// let roots = RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    /// let config = ClientConfig::builder_with_provider(provider)
    ///     .with_safe_default_protocol_versions()
    ///     .unwrap()
    ///     .with_root_certificates(roots)
    ///     .with_no_client_auth();
    /// let options = ConnectOptions::new("wss://chat.example/").tls_client_config(Arc::new(config));
    /// # drop(options);
    /// # }
    /// ```
    #[cfg(all(feature = "tls", not(target_arch = "wasm32")))]
    #[must_use]
    pub fn tls_client_config(mut self, config: std::sync::Arc<rustls::ClientConfig>) -> Self {
        self.tls.client_config = Some(OwnClientConfig(config));
        self
    }

    /// Connects through this proxy instead of the one of the environment:
    /// `http://[user:password@]host[:port]` (HTTP `CONNECT`, port 80 by
    /// default; the credentials, percent-decoded, go in a Basic
    /// `Proxy-Authorization`), `socks5://[user:password@]host[:port]` (SOCKS5,
    /// port 1080 by default, the server's name resolved here) or `socks5h://`
    /// (the proxy resolves the name). `NO_PROXY` does not apply to it.
    ///
    /// An invalid proxy URL fails the connection at once
    /// (`ErrorKind::InvalidArgument`); a proxy that refuses fails it with
    /// `ErrorKind::Proxy`.
    ///
    /// Without this option the proxy comes from the environment:
    /// `HTTPS_PROXY` then `ALL_PROXY` for `wss://`, `HTTP_PROXY` then
    /// `ALL_PROXY` for `ws://` (each also in lower case), unless the host
    /// matches `NO_PROXY` (a comma-separated list of host names, domain
    /// suffixes with or without a leading dot, IP addresses or CIDR blocks,
    /// or `*`; ports are ignored).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use unisocket::{connect_socket, ConnectOptions, ErrorKind};
    ///
    /// let _http = ConnectOptions::new("wss://example.com/").proxy("http://user:secret@proxy.internal:3128");
    /// let _socks = ConnectOptions::new("wss://example.com/").proxy("socks5h://127.0.0.1:1080");
    /// // An unsupported proxy scheme fails at once.
    /// let (tx, rx) = mpsc::channel();
    /// let bad = ConnectOptions::new("ws://example.com/").proxy("ftp://proxy.internal");
    /// connect_socket(bad.fail(move |e| tx.send(e.kind()).unwrap()));
    /// assert_eq!(rx.recv().unwrap(), ErrorKind::InvalidArgument);
    /// ```
    #[must_use]
    pub fn proxy(mut self, url: impl Into<String>) -> Self {
        self.proxy = ProxyChoice::Url(url.into());
        self
    }

    /// The proxy that a connection with these options goes through, if
    /// any, and where it was set: [`proxy`](Self::proxy), or the environment
    /// variable that applies to the URL (`NO_PROXY` considered). Its `dns`
    /// and `connect` timings in [`Profile`](crate::Profile) are then the
    /// proxy's.
    ///
    /// # Errors
    /// The URL, or the proxy's URL, is invalid (as `connect_socket` would
    /// report it).
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket::{ConnectOptions, ProxySource};
    ///
    /// let options = ConnectOptions::new("wss://example.com/").proxy("http://user:secret@127.0.0.1:3128");
    /// let proxy = options.proxy_in_use().unwrap().unwrap();
    /// assert_eq!(proxy.url, "http://user:***@127.0.0.1:3128");
    /// assert_eq!(proxy.source, ProxySource::Options);
    /// assert_eq!(ConnectOptions::new("ws://example.com/").no_proxy().proxy_in_use().unwrap(), None);
    /// ```
    #[cfg(not(target_arch = "wasm32"))]
    pub fn proxy_in_use(&self) -> Result<Option<ProxyInUse>, SocketError> {
        let target = crate::connect::parse_url(&self.url)?;
        Ok(crate::transport::proxy_in_use(
            &self.proxy,
            &target.host,
            target.secure,
        )?)
    }

    /// In the browser: `None`, the browser's own proxy settings being
    /// invisible to a page; a [`proxy`](Self::proxy) of the options is
    /// refused, as `connect_socket` refuses it.
    ///
    /// # Errors
    /// The URL is invalid, or the options set a proxy.
    #[cfg(target_arch = "wasm32")]
    pub fn proxy_in_use(&self) -> Result<Option<ProxyInUse>, SocketError> {
        crate::connect::parse_url(&self.url)?;
        match self.proxy {
            ProxyChoice::Url(_) => Err(crate::browser::unsupported(
                "proxies are",
                "the browser uses its own proxy settings",
            )),
            _ => Ok(None),
        }
    }

    /// Connects directly: no proxy, and the proxy variables of the
    /// environment are not read.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket::ConnectOptions;
    ///
    /// // A server on the local network: ignore HTTP_PROXY / ALL_PROXY even if set.
    /// let options = ConnectOptions::new("ws://192.168.1.20:9001/").no_proxy();
    /// # drop(options);
    /// ```
    #[must_use]
    pub fn no_proxy(mut self) -> Self {
        self.proxy = ProxyChoice::Direct;
        self
    }

    /// Offers RFC 7692 permessage-deflate compression (WeChat's
    /// `perMessageDeflate`), with the default parameters: our side may be
    /// told to use a smaller window, and both sides keep their context
    /// between messages. Inflated messages obey `max_message_size`, so a
    /// "zip bomb" ends with close code 1009. Off by default.
    ///
    /// Needs the `deflate` feature (on by default); without it the option
    /// makes `connect_socket` fail at once.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket::ConnectOptions;
    ///
    /// // Compress chatty JSON; inflated messages still obey `max_message_size`.
    /// let options = ConnectOptions::new("wss://example.com/events")
    ///     .per_message_deflate(true)
    ///     .max_message_size(4 << 20);
    /// # drop(options);
    /// ```
    #[must_use]
    pub fn per_message_deflate(mut self, on: bool) -> Self {
        self.deflate = on.then(DeflateConfig::default);
        self
    }

    /// Offers permessage-deflate with explicit parameters
    /// (`server_no_context_takeover`, `client_no_context_takeover`,
    /// `server_max_window_bits`, `client_max_window_bits`).
    ///
    /// ```
    /// use unisocket::DeflateConfig;
    /// use unisocket::ConnectOptions;
    ///
    /// let options = ConnectOptions::new("ws://127.0.0.1:9001").deflate(
    ///     DeflateConfig::default()
    ///         .client_no_context_takeover(true)
    ///         .server_max_window_bits(10),
    /// );
    /// # drop(options);
    /// ```
    #[must_use]
    pub fn deflate(mut self, config: DeflateConfig) -> Self {
        self.deflate = Some(config);
        self
    }

    callback_setters!(ConnectSuccess);
}

/// Settings that weaken security, reached through
/// [`ConnectOptions::dangerous`] so that they stand out in code and review.
#[derive(Debug)]
#[must_use]
pub struct DangerousOptions(ConnectOptions);

impl DangerousOptions {
    /// **Dangerous:** a `wss://` connection accepts any server certificate
    /// (expired, self-signed, issued for another name), so anyone on the
    /// path can read and change the traffic. For tests against a throw-away
    /// server only; trust a private CA with
    /// [`ConnectOptions::ca_certificates_pem`] instead. The TLS handshake
    /// signatures are still checked. Ignored when
    /// [`ConnectOptions::tls_client_config`] gives a configuration of the
    /// application's own.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket::ConnectOptions;
    ///
    /// let options = ConnectOptions::new("wss://localhost:8443/")
    ///     .dangerous()
    ///     .accept_invalid_certs()
    ///     .timeout(std::time::Duration::from_secs(5));
    /// # drop(options);
    /// ```
    #[must_use]
    pub fn accept_invalid_certs(mut self) -> ConnectOptions {
        self.0.tls.danger_accept_invalid_certs = true;
        self.0
    }
}

/// The options of `send`: `SocketTask.send(OBJECT)`.
///
/// Anything that converts into [`Data`] converts into `SendOptions`:
/// `task.send("hi")`, `task.send(vec![1, 2, 3])`.
///
/// ```
/// use unisocket::SendOptions;
///
/// let options = SendOptions::new("hello")
///     .success(|ok| println!("{}", ok.err_msg))
///     .fail(|e| eprintln!("{}", e.err_msg()))
///     .complete(|_| println!("done"));
/// # drop(options);
/// ```
pub struct SendOptions {
    pub(crate) data: Data,
    pub(crate) callbacks: Callbacks<SendSuccess>,
}

impl fmt::Debug for SendOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendOptions")
            .field("data", &self.data)
            .finish_non_exhaustive()
    }
}

impl SendOptions {
    /// Sends `data`: text or binary.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket::{Bytes, SendOptions};
    ///
    /// let text = SendOptions::new("hello");
    /// let binary = SendOptions::new(Bytes::from_static(&[0x00, 0xFF]));
    /// assert_eq!(format!("{text:?}"), r#"SendOptions { data: Text("hello"), .. }"#);
    /// # drop(binary);
    /// ```
    pub fn new(data: impl Into<Data>) -> Self {
        SendOptions {
            data: data.into(),
            callbacks: Callbacks::default(),
        }
    }

    callback_setters!(SendSuccess);
}

impl<T: Into<Data>> From<T> for SendOptions {
    fn from(data: T) -> Self {
        SendOptions::new(data)
    }
}

/// The options of `close`: `SocketTask.close(OBJECT)`. The default is code
/// 1000 and no reason.
///
/// ```
/// use unisocket::CloseOptions;
///
/// let options = CloseOptions::default().code(4001).reason("going away");
/// # drop(options);
/// ```
pub struct CloseOptions {
    pub(crate) code: u16,
    /// Set by `endpoint_code`: every code an endpoint may send is allowed.
    pub(crate) endpoint: bool,
    pub(crate) reason: String,
    pub(crate) callbacks: Callbacks<CloseSuccess>,
}

impl fmt::Debug for CloseOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloseOptions")
            .field("code", &self.code)
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

impl Default for CloseOptions {
    fn default() -> Self {
        CloseOptions {
            code: 1000,
            endpoint: false,
            reason: String::new(),
            callbacks: Callbacks::default(),
        }
    }
}

impl CloseOptions {
    /// The close code: 1000 or 3000-4999.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main]
    /// # async fn main() {
    /// use unisocket::{connect_socket, CloseOptions, ConnectOptions, ErrorKind};
    ///
    /// let task = connect_socket(ConnectOptions::new("ws://"));
    /// // 1001 ("going away") is not for applications: use 1000 or 3000-4999.
    /// let err = task.close(CloseOptions::default().code(1001)).await.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    /// # }
    /// ```
    #[must_use]
    pub fn code(mut self, code: u16) -> Self {
        self.code = code;
        self.endpoint = false;
        self
    }

    /// The close code, any that RFC 6455 lets an endpoint send: beyond
    /// [`code`](Self::code)'s 1000 and 3000-4999 (the browser's), also
    /// 1001-1003 and 1007-1011 (going away, protocol error, unsupported
    /// data, invalid payload, policy violation, message too big, missing
    /// extension, internal error). This is beyond the uni-app API.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main]
    /// # async fn main() {
    /// use unisocket::{connect_socket, CloseOptions, ConnectOptions, ErrorKind};
    ///
    /// let task = connect_socket(ConnectOptions::new("ws://"));
    /// // 1008 passes the check (the task, which never opened, is not connected)...
    /// let err = task.close(CloseOptions::default().endpoint_code(1008)).await.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::NotConnected);
    /// // ... 1005 ("no code") never does.
    /// let err = task.close(CloseOptions::default().endpoint_code(1005)).await.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    /// # }
    /// ```
    #[must_use]
    pub fn endpoint_code(mut self, code: u16) -> Self {
        self.code = code;
        self.endpoint = true;
        self
    }

    /// The close reason: at most 123 bytes of UTF-8.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use unisocket::{connect_socket, CloseOptions, ConnectOptions};
    ///
    /// let logout = CloseOptions::default().code(4000).reason("user logged out");
    /// # drop(logout);
    /// // At most 123 bytes of UTF-8: a longer reason fails at once.
    /// let task = connect_socket(ConnectOptions::new("ws://example.com").header("Referer", "x"));
    /// let (tx, rx) = mpsc::channel();
    /// let long = CloseOptions::default().reason("é".repeat(62));
    /// task.close(long.fail(move |e| tx.send(e.reason().to_owned()).unwrap()));
    /// assert_eq!(rx.recv().unwrap(), "close reason is 124 bytes of UTF-8; the limit is 123");
    /// ```
    #[must_use]
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = reason.into();
        self
    }

    callback_setters!(CloseSuccess);
}
