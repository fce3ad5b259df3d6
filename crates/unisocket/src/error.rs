//! [`SocketError`]: the one error type of the public API, carrying the
//! uni-app `errMsg` and a typed [`ErrorKind`].

use std::fmt;
use std::sync::Arc;

use crate::proto::{HandshakeError, ProtocolError, RefusedResponse, SendError};

/// Which API call an outcome belongs to; the prefix of `errMsg`.
///
/// ```
/// use unisocket::Api;
///
/// assert_eq!(Api::SendSocketMessage.name(), "sendSocketMessage");
/// assert_eq!(Api::ConnectSocket.ok_msg(), "connectSocket:ok");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// `connectSocket` (and the task's connection events).
    ConnectSocket,
    /// `sendSocketMessage` / `SocketTask.send`.
    SendSocketMessage,
    /// `closeSocket` / `SocketTask.close`.
    CloseSocket,
}

impl Api {
    /// The uni-app name: `connectSocket`, `sendSocketMessage` or `closeSocket`.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket::Api;
    ///
    /// let names = [Api::ConnectSocket, Api::SendSocketMessage, Api::CloseSocket].map(Api::name);
    /// assert_eq!(names, ["connectSocket", "sendSocketMessage", "closeSocket"]);
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Api::ConnectSocket => "connectSocket",
            Api::SendSocketMessage => "sendSocketMessage",
            Api::CloseSocket => "closeSocket",
        }
    }

    /// The success `errMsg`, e.g. `connectSocket:ok`.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket::Api;
    ///
    /// assert_eq!(Api::CloseSocket.ok_msg(), "closeSocket:ok");
    /// for api in [Api::ConnectSocket, Api::SendSocketMessage] {
    ///     assert_eq!(api.ok_msg(), format!("{}:ok", api.name()));
    /// }
    /// ```
    pub fn ok_msg(self) -> String {
        // Built on every successful send: no formatting on that path.
        match self {
            Api::ConnectSocket => "connectSocket:ok",
            Api::SendSocketMessage => "sendSocketMessage:ok",
            Api::CloseSocket => "closeSocket:ok",
        }
        .to_owned()
    }
}

/// What kind of failure a [`SocketError`] is.
///
/// ```
/// use unisocket::{connect_socket, ConnectOptions, ErrorKind};
///
/// # tokio_test_block_on(async {
/// let err = connect_socket(ConnectOptions::new("htp://x")).await.unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::InvalidUrl);
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The URL does not parse, or its scheme is not `ws`/`wss`.
    InvalidUrl,
    /// A header is forbidden (`Referer`) or has bytes HTTP does not allow.
    InvalidHeader,
    /// A subprotocol is empty, duplicated or not an HTTP token.
    InvalidProtocol,
    /// Any other argument out of range (close code, close reason, options).
    InvalidArgument,
    /// The task is not OPEN (sending before open or after close; no live task).
    NotConnected,
    /// The connection attempt (or another deadline) ran out of time.
    Timeout,
    /// The host name did not resolve.
    Dns,
    /// The server refused the TCP connection.
    ConnectionRefused,
    /// Another I/O error of the transport.
    Io,
    /// The TLS handshake or certificate verification failed.
    Tls,
    /// The proxy refused or failed.
    Proxy,
    /// The HTTP upgrade failed (non-101 status, bad headers).
    Handshake,
    /// The server broke the WebSocket protocol or exceeded a limit.
    Protocol,
    /// The connection ended: the server closed it without a close frame, or
    /// the task was closed before an operation could complete.
    Closed,
    /// The connection attempt was aborted by `close` while CONNECTING.
    Aborted,
    /// A send with callbacks found the send buffer over its high-water mark
    /// (`max_buffered_bytes`), or the queue before open full (`max_queued_bytes`).
    BufferFull,
    /// The heartbeat got no answer from the server in time.
    HeartbeatTimeout,
    /// The platform cannot do what the options or the call ask: in the
    /// browser, custom headers, proxies, TLS settings, pings and the other
    /// options of the README's "In the browser" table.
    Unsupported,
}

/// The error of every fallible call and of the `fail` callbacks.
///
/// [`SocketError::err_msg`] is the uni-app `errMsg`, e.g.
/// `connectSocket:fail timed out after 60000 ms`; [`SocketError::kind`] is
/// the typed cause to match on.
///
/// ```
/// use unisocket::{connect_socket, ConnectOptions};
///
/// let task = connect_socket(ConnectOptions::new("ws://x").header("Referer", "y").fail(|e| {
///     assert_eq!(e.err_msg(), "connectSocket:fail the Referer header cannot be set");
///     assert_eq!(e.reason(), "the Referer header cannot be set");
/// }));
/// // Bad input never touches the network: the task is closed at once.
/// assert_eq!(task.ready_state(), unisocket::ReadyState::Closed);
/// ```
#[derive(Clone)]
pub struct SocketError {
    api: Api,
    kind: ErrorKind,
    err_msg: String,
    status: Option<u16>,
    close_code: Option<u16>,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl SocketError {
    /// A new error for `api` with a reason a person can act on.
    pub(crate) fn new(api: Api, kind: ErrorKind, reason: impl fmt::Display) -> Self {
        SocketError {
            api,
            kind,
            err_msg: format!("{}:fail {reason}", api.name()),
            status: None,
            close_code: None,
            source: None,
        }
    }

    /// From a failure to reach the server (DNS, TCP, proxy, TLS): the one
    /// place where it gets its `errMsg`, for `connectSocket`.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn transport(e: crate::transport::Error) -> Self {
        let crate::transport::Error {
            kind,
            reason,
            status,
            source,
        } = e;
        let mut err = SocketError::new(Api::ConnectSocket, kind, reason);
        err.status = status;
        err.source = source.map(Arc::from);
        err
    }

    /// The close code the connection ends with for this failure.
    #[cfg(target_arch = "wasm32")]
    pub(crate) fn with_close_code(mut self, code: u16) -> Self {
        self.close_code = Some(code);
        self
    }

    pub(crate) fn with_source(
        mut self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// The same failure reported for another API (e.g. a send that fails
    /// because the connection failed).
    pub(crate) fn for_api(&self, api: Api) -> Self {
        let mut e = self.clone();
        e.api = api;
        e.err_msg = format!("{}:fail {}", api.name(), self.reason());
        e
    }

    pub(crate) fn handshake(e: HandshakeError) -> Self {
        let status = match &e {
            HandshakeError::Status { status, .. } => Some(*status),
            _ => None,
        };
        let mut err = SocketError::new(Api::ConnectSocket, ErrorKind::Handshake, &e).with_source(e);
        err.status = status;
        err
    }

    pub(crate) fn protocol(e: ProtocolError) -> Self {
        let mut err = SocketError::new(Api::ConnectSocket, ErrorKind::Protocol, &e);
        err.close_code = Some(e.close_code());
        err.with_source(e)
    }

    /// A call refused at once for one of its arguments, as the core's
    /// check named it (close code, close reason, ping payload).
    pub(crate) fn invalid_argument(api: Api, e: SendError) -> Self {
        SocketError::new(api, ErrorKind::InvalidArgument, e).with_source(e)
    }

    pub(crate) fn not_connected(api: Api) -> Self {
        SocketError::new(api, ErrorKind::NotConnected, "WebSocket is not connected")
    }

    /// A call made once `close` was called (the task is CLOSING).
    pub(crate) fn closing(api: Api) -> Self {
        SocketError::new(
            api,
            ErrorKind::NotConnected,
            "WebSocket is not connected: it is closing",
        )
    }

    /// The uni-app `errMsg`: `"<api>:fail <reason>"`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use unisocket::{connect_socket, ConnectOptions};
    ///
    /// let (tx, rx) = mpsc::channel();
    /// connect_socket(ConnectOptions::new("ftp://example.com/").fail(move |e| tx.send(e.clone()).unwrap()));
    /// let err = rx.recv().unwrap();
    /// assert_eq!(
    ///     err.err_msg(),
    ///     r#"connectSocket:fail invalid URL "ftp://example.com/": scheme must be ws or wss"#
    /// );
    /// assert_eq!(err.to_string(), err.err_msg()); // `Display` shows the same text
    /// ```
    pub fn err_msg(&self) -> &str {
        &self.err_msg
    }

    /// The reason alone, without the `"<api>:fail "` prefix.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main]
    /// # async fn main() {
    /// use unisocket::{connect_socket, ConnectOptions};
    ///
    /// let task = connect_socket(ConnectOptions::new("not a url"));
    /// let err = task.send("hi").await.unwrap_err();
    /// assert_eq!(err.err_msg(), "sendSocketMessage:fail WebSocket is not connected");
    /// assert_eq!(err.reason(), "WebSocket is not connected");
    /// # }
    /// ```
    pub fn reason(&self) -> &str {
        &self.err_msg[self.api.name().len() + ":fail ".len()..]
    }

    /// The kind of failure.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main]
    /// # async fn main() {
    /// use unisocket::{connect_socket, ConnectOptions, ErrorKind};
    ///
    /// let options = ConnectOptions::new("ws://example.com").protocols(["chat", "chat"]);
    /// let err = connect_socket(options).await.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::InvalidProtocol); // offered twice
    /// # }
    /// ```
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The API the failure is reported for.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use unisocket::{connect_socket, Api, CloseOptions, ConnectOptions};
    ///
    /// let task = connect_socket(ConnectOptions::new("not a url"));
    /// let (tx, rx) = mpsc::channel();
    /// task.close(CloseOptions::default().fail(move |e| tx.send(e.api()).unwrap()));
    /// // The task never opened: the failed `close` is reported for closeSocket.
    /// assert_eq!(rx.recv().unwrap(), Api::CloseSocket);
    /// ```
    pub fn api(&self) -> Api {
        self.api
    }

    /// The HTTP status of a refused handshake (e.g. `Some(403)`, with
    /// [`ErrorKind::Handshake`]), or of a proxy's refusal of `CONNECT` (e.g.
    /// `Some(407)`, with [`ErrorKind::Proxy`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main]
    /// # async fn main() {
    /// # use std::io::{Read, Write};
    /// use unisocket::{connect_socket, ConnectOptions, ErrorKind};
    ///
    /// // A local server that refuses every upgrade with 403 Forbidden.
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// let url = format!("ws://{}/", listener.local_addr().unwrap());
    /// std::thread::spawn(move || {
    ///     let (mut conn, _) = listener.accept().unwrap();
    ///     let _ = conn.read(&mut [0; 4096]);
    ///     conn.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n").unwrap();
    /// });
    /// let err = connect_socket(ConnectOptions::new(url)).await.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Handshake);
    /// assert_eq!(err.http_status(), Some(403));
    /// # }
    /// ```
    pub fn http_status(&self) -> Option<u16> {
        self.status
    }

    /// The headers of a response that refused the upgrade (with
    /// [`ErrorKind::Handshake`] and an [`http_status`](Self::http_status)),
    /// in order, names as sent; `None` for any other failure. A redirect's
    /// `Location` is here, and a `WWW-Authenticate` that says which
    /// credentials the server wants. Values are as sent: secrets such as
    /// `Set-Cookie` too (hide them with [`redact::header_value`](crate::redact::header_value)
    /// before printing).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main]
    /// # async fn main() {
    /// # use std::io::{Read, Write};
    /// use unisocket::{connect_socket, ConnectOptions};
    ///
    /// // A local server that wants credentials, and says so in its body too.
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// let url = format!("ws://{}/", listener.local_addr().unwrap());
    /// std::thread::spawn(move || {
    ///     let (mut conn, _) = listener.accept().unwrap();
    ///     let _ = conn.read(&mut [0; 4096]);
    ///     conn.write_all(
    ///         b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\n\
    ///           Content-Length: 13\r\n\r\ntoken expired",
    ///     )
    ///     .unwrap();
    /// });
    /// let err = connect_socket(ConnectOptions::new(url)).await.unwrap_err();
    /// assert_eq!(err.http_status(), Some(401));
    /// let headers = err.response_headers().unwrap();
    /// assert!(headers.contains(&("WWW-Authenticate".to_owned(), "Bearer".to_owned())));
    /// // The body, as far as it arrived with the headers.
    /// assert_eq!(err.response_body(), Some(&b"token expired"[..]));
    /// # }
    /// ```
    pub fn response_headers(&self) -> Option<&[(String, String)]> {
        self.refused_response().map(|r| r.headers.as_slice())
    }

    /// The first bytes of the body of a response that refused the upgrade,
    /// as far as they arrived with its headers (the client does not wait
    /// for more), at most
    /// [`MAX_REFUSED_BODY`](crate::proto::handshake::MAX_REFUSED_BODY)
    /// (512), as sent; `None` for any other failure, `Some` and empty when
    /// no body came. See [`response_headers`](Self::response_headers) for
    /// an example.
    pub fn response_body(&self) -> Option<&[u8]> {
        self.refused_response().map(|r| r.body.as_slice())
    }

    /// The response of a refused upgrade, from the source error.
    fn refused_response(&self) -> Option<&RefusedResponse> {
        match self.source.as_deref()?.downcast_ref::<HandshakeError>()? {
            HandshakeError::Status { response, .. } => Some(response),
            _ => None,
        }
    }

    /// The close code sent to the server when the connection was failed
    /// because of a protocol error (1002, 1007 or 1009).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use unisocket::{connect_socket, ConnectOptions};
    ///
    /// let task = connect_socket(ConnectOptions::new("ws://example.com").header("Bad Name", "x"));
    /// let (tx, rx) = mpsc::channel();
    /// task.on_error(move |ev| tx.send(ev.error.close_code()).unwrap());
    /// // Only protocol errors (the server broke RFC 6455) carry a close code;
    /// // invalid input, timeouts or I/O errors do not.
    /// assert_eq!(rx.recv().unwrap(), None);
    /// ```
    pub fn close_code(&self) -> Option<u16> {
        self.close_code
    }
}

impl fmt::Display for SocketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.err_msg)
    }
}

impl fmt::Debug for SocketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketError")
            .field("kind", &self.kind)
            .field("err_msg", &self.err_msg)
            .finish()
    }
}

impl PartialEq for SocketError {
    fn eq(&self, other: &Self) -> bool {
        self.api == other.api && self.kind == other.kind && self.err_msg == other.err_msg
    }
}

impl std::error::Error for SocketError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl From<crate::transport::Error> for SocketError {
    fn from(e: crate::transport::Error) -> Self {
        SocketError::transport(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn err_msg_has_the_uni_app_shape() {
        let e = SocketError::new(
            Api::ConnectSocket,
            ErrorKind::Timeout,
            "timed out after 60000 ms",
        );
        assert_eq!(e.err_msg(), "connectSocket:fail timed out after 60000 ms");
        assert_eq!(e.reason(), "timed out after 60000 ms");
        assert_eq!(e.to_string(), e.err_msg());
        let s = e.for_api(Api::SendSocketMessage);
        assert_eq!(
            s.err_msg(),
            "sendSocketMessage:fail timed out after 60000 ms"
        );
        assert_eq!(
            SocketError::not_connected(Api::CloseSocket).err_msg(),
            "closeSocket:fail WebSocket is not connected"
        );
    }
}
