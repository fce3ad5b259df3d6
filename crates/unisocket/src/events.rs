//! The event payloads of `on_open`, `on_message`, `on_close` and `on_error`.

use std::time::Duration;

use crate::data::Data;
use crate::error::SocketError;

/// HTTP headers in the order the server sent them; names compare
/// case-insensitively in [`Headers::get`]. `Debug` shows the values of
/// secret headers (`Set-Cookie`, ...) as `***` ([`redact`](crate::redact)).
///
/// ```no_run
/// # async fn demo() -> Result<(), unisocket::SocketError> {
/// let task = unisocket::connect_socket(unisocket::ConnectOptions::new("ws://127.0.0.1:9001"));
/// task.on_open(|ev| {
///     if let Some(server) = ev.header.get("server") {
///         println!("server: {server}");
///     }
///     for (name, value) in ev.header.iter() {
///         println!("{name}: {value}");
///     }
/// });
/// # Ok(()) }
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers {
    /// Every name and value, one after the other: a task keeps the headers
    /// of its last open for as long as it lives, in two blocks rather than
    /// two per header.
    text: String,
    /// Where each name ends and where its value ends, in `text`.
    ends: Vec<(u32, u32)>,
}

impl Headers {
    pub(crate) fn new(list: &[(String, String)]) -> Self {
        let len = list.iter().map(|(n, v)| n.len() + v.len()).sum();
        let mut text = String::with_capacity(len);
        let mut ends = Vec::with_capacity(list.len());
        for (name, value) in list {
            text.push_str(name);
            let name_end = text.len();
            text.push_str(value);
            // A handshake response is at most a few KiB (the parser's limit).
            if let (Ok(n), Ok(v)) = (u32::try_from(name_end), u32::try_from(text.len())) {
                ends.push((n, v));
            }
        }
        Headers { text, ends }
    }

    fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut start = 0;
        self.ends.iter().map(move |&(name_end, value_end)| {
            let (n, v) = (name_end as usize, value_end as usize);
            let pair = (&self.text[start..n], &self.text[n..v]);
            start = v;
            pair
        })
    }

    /// The first value of the header `name` (any case).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::io::{Read, Write};
    /// # let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// # let url = format!("ws://{}/", listener.local_addr().unwrap());
    /// # std::thread::spawn(move || {
    /// #     let (mut conn, _) = listener.accept().unwrap();
    /// #     let mut buf = [0; 4096];
    /// #     let n = conn.read(&mut buf).unwrap();
    /// #     let request = String::from_utf8_lossy(&buf[..n]).into_owned();
    /// #     let key = request.lines().find_map(|l| l.strip_prefix("Sec-WebSocket-Key: ")).unwrap();
    /// #     let accept = unisocket_proto::handshake::accept_key(key);
    /// #     let head = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nServer: demo/1.0\r\n\r\n");
    /// #     conn.write_all(head.as_bytes()).unwrap();
    /// #     std::thread::sleep(std::time::Duration::from_secs(5));
    /// # });
    /// use std::sync::mpsc;
    /// use std::time::Duration;
    /// use unisocket::{connect_socket, ConnectOptions};
    ///
    /// // `url`: a local test server whose handshake response has `Server: demo/1.0`.
    /// let task = connect_socket(ConnectOptions::new(url));
    /// let (tx, rx) = mpsc::channel();
    /// task.on_open(move |ev| tx.send(ev.header.clone()).unwrap());
    /// let header = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    /// assert_eq!(header.get("SERVER"), Some("demo/1.0")); // any case
    /// assert_eq!(header.get("x-missing"), None);
    /// ```
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Every `(name, value)` pair, in order.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::io::{Read, Write};
    /// # let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// # let url = format!("ws://{}/", listener.local_addr().unwrap());
    /// # std::thread::spawn(move || {
    /// #     let (mut conn, _) = listener.accept().unwrap();
    /// #     let mut buf = [0; 4096];
    /// #     let n = conn.read(&mut buf).unwrap();
    /// #     let request = String::from_utf8_lossy(&buf[..n]).into_owned();
    /// #     let key = request.lines().find_map(|l| l.strip_prefix("Sec-WebSocket-Key: ")).unwrap();
    /// #     let accept = unisocket_proto::handshake::accept_key(key);
    /// #     let head = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n");
    /// #     conn.write_all(head.as_bytes()).unwrap();
    /// #     std::thread::sleep(std::time::Duration::from_secs(5));
    /// # });
    /// use std::sync::mpsc;
    /// use std::time::Duration;
    /// use unisocket::{connect_socket, ConnectOptions};
    ///
    /// // `url`: a local test server that sets two cookies in its handshake response.
    /// let task = connect_socket(ConnectOptions::new(url));
    /// let (tx, rx) = mpsc::channel();
    /// task.on_open(move |ev| tx.send(ev.header.clone()).unwrap());
    /// let header = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    /// let cookies: Vec<&str> = header
    ///     .iter()
    ///     .filter(|(name, _)| name.eq_ignore_ascii_case("set-cookie"))
    ///     .map(|(_, value)| value)
    ///     .collect();
    /// assert_eq!(cookies, ["a=1", "b=2"]);
    /// assert_eq!(header.get("set-cookie"), Some("a=1")); // `get` gives the first only
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs()
    }

    /// The number of header lines.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket::Headers;
    ///
    /// let header = Headers::default();
    /// assert_eq!(header.len(), 0);
    /// assert_eq!(header.len(), header.iter().count());
    /// ```
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are no headers.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket::OpenEvent;
    ///
    /// // An open event built by hand, e.g. to test a handler, has no headers.
    /// let ev = OpenEvent::default();
    /// assert!(ev.header.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

impl std::fmt::Debug for Headers {
    // Secret values (`Set-Cookie`, ...) are redacted, as `unisocket::redact` says.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.pairs()
                    .map(|(n, v)| (n, crate::redact::header_value(n, v))),
            )
            .finish()
    }
}

/// How long each step of opening the connection took (the timings WeChat
/// reports as `profile`).
///
/// ```no_run
/// unisocket::connect_socket(unisocket::ConnectOptions::new("ws://127.0.0.1:9001"))
///     .on_open(|ev| println!("opened in {:?} (handshake {:?})", ev.profile.total, ev.profile.handshake));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Profile {
    /// Name resolution.
    pub dns: Duration,
    /// The TCP connect (to the server or the proxy).
    pub connect: Duration,
    /// The TLS handshake (zero for `ws://`).
    pub tls: Duration,
    /// The HTTP upgrade, from sending the request to the 101 response.
    pub handshake: Duration,
    /// From `connect_socket` to OPEN.
    pub total: Duration,
}

/// The payload of `on_open`.
///
/// ```no_run
/// let task = unisocket::connect_socket(unisocket::ConnectOptions::new("ws://127.0.0.1:9001"));
/// task.on_open(|ev| println!("protocol {:?}, {} headers", ev.protocol, ev.header.len()));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenEvent {
    /// The server's handshake response headers.
    pub header: Headers,
    /// The subprotocol the server chose, or `""`.
    pub protocol: String,
    /// Timings of the connection steps.
    pub profile: Profile,
}

/// The payload of `on_message`.
///
/// ```no_run
/// use unisocket::Data;
///
/// let task = unisocket::connect_socket(unisocket::ConnectOptions::new("ws://127.0.0.1:9001"));
/// task.on_message(|ev| match &ev.data {
///     Data::Text(text) => println!("text: {text}"),
///     Data::Binary(bytes) => println!("{} bytes", bytes.len()),
/// });
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MessageEvent {
    /// The message: text or binary.
    pub data: Data,
}

/// The payload of `on_close`.
///
/// ```no_run
/// let task = unisocket::connect_socket(unisocket::ConnectOptions::new("ws://127.0.0.1:9001"));
/// task.on_close(|ev| {
///     if !ev.was_clean {
///         eprintln!("connection lost: {} {}", ev.code, ev.reason);
///     }
/// });
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CloseEvent {
    /// The close code: the server's, or 1006 when the connection ended
    /// without a close frame, or the code we sent when we failed it.
    pub code: u16,
    /// The close reason.
    pub reason: String,
    /// Whether the closing handshake completed.
    pub was_clean: bool,
}

/// A ping or pong from the server (see `SocketTask::on_ping_pong`).
///
/// ```no_run
/// use unisocket::PingPongEvent;
///
/// let task = unisocket::connect_socket(unisocket::ConnectOptions::new("ws://127.0.0.1:9001"));
/// task.on_ping_pong(|ev| {
///     if let PingPongEvent::Pong(payload) = ev {
///         println!("pong {payload:?}");
///     }
/// });
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PingPongEvent {
    /// The server sent a ping (already answered with a pong).
    Ping(bytes::Bytes),
    /// The server sent a pong.
    Pong(bytes::Bytes),
}

/// The payload of `on_error`.
///
/// ```no_run
/// use unisocket::ErrorKind;
///
/// let task = unisocket::connect_socket(unisocket::ConnectOptions::new("ws://127.0.0.1:9001"));
/// task.on_error(|ev| match ev.error.kind() {
///     ErrorKind::Timeout => eprintln!("too slow: {}", ev.err_msg),
///     _ => eprintln!("{}", ev.err_msg),
/// });
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ErrorEvent {
    /// The uni-app `errMsg`, e.g. `connectSocket:fail timed out after 60000 ms`.
    pub err_msg: String,
    /// The typed error behind it.
    pub error: SocketError,
}

impl From<SocketError> for ErrorEvent {
    fn from(error: SocketError) -> Self {
        ErrorEvent {
            err_msg: error.err_msg().to_owned(),
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Headers;

    fn pair(n: &str, v: &str) -> (String, String) {
        (n.to_owned(), v.to_owned())
    }

    #[test]
    fn headers_keep_order_values_and_repeats() {
        let h = Headers::new(&[
            pair("Upgrade", "websocket"),
            pair("Set-Cookie", "a=1"),
            pair("X-Empty", ""),
            pair("set-cookie", "b=2"),
            pair("Server", "démo/1.0"),
        ]);
        assert_eq!(h.len(), 5);
        assert!(!h.is_empty());
        assert_eq!(
            h.iter().collect::<Vec<_>>(),
            [
                ("Upgrade", "websocket"),
                ("Set-Cookie", "a=1"),
                ("X-Empty", ""),
                ("set-cookie", "b=2"),
                ("Server", "démo/1.0"),
            ]
        );
        assert_eq!(h.get("SET-COOKIE"), Some("a=1"), "the first of repeats");
        assert_eq!(h.get("x-empty"), Some(""));
        assert_eq!(h.get("server"), Some("démo/1.0"));
        assert_eq!(h.get("Upgrad"), None);
        assert_eq!(
            format!("{h:?}"),
            r#"[("Upgrade", "websocket"), ("Set-Cookie", "***"), ("X-Empty", ""), ("set-cookie", "***"), ("Server", "démo/1.0")]"#
        );
        assert_eq!(h, h.clone());
        assert_ne!(h, Headers::default());
    }

    #[test]
    fn no_headers() {
        let h = Headers::new(&[]);
        assert!(h.is_empty());
        assert_eq!(h.iter().count(), 0);
        assert_eq!(h.get("a"), None);
        assert_eq!(h, Headers::default());
    }
}
