//! The option structs of `connect_socket`, `send` and `close`, and their
//! success results.

use std::fmt;
use std::time::Duration;

use crate::data::Data;
use crate::error::SocketError;
use crate::proto::Limits;

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
    pub fn is_empty(&self) -> bool {
        self.success.is_none() && self.fail.is_none() && self.complete.is_none()
    }

    /// Calls `success` or `fail`, then `complete`.
    pub fn settle(self, result: &Result<T, SocketError>) {
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
        #[must_use]
        pub fn success(mut self, f: impl FnOnce(&$ok) + Send + 'static) -> Self {
            self.callbacks.success = Some(Box::new(f));
            self
        }

        /// Called when the call fails.
        #[must_use]
        pub fn fail(mut self, f: impl FnOnce(&SocketError) + Send + 'static) -> Self {
            self.callbacks.fail = Some(Box::new(f));
            self
        }

        /// Called after `success` or `fail`, with the result.
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectSuccess {
    /// `"connectSocket:ok"`.
    pub err_msg: String,
}

/// The result of a successful send: the whole frame was handed to the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendSuccess {
    /// `"sendSocketMessage:ok"`.
    pub err_msg: String,
}

/// The result of a successful close: the closing handshake ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseSuccess {
    /// `"closeSocket:ok"`.
    pub err_msg: String,
}

/// The options of [`connect_socket`](crate::connect_socket): `uni.connectSocket(OBJECT)`.
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
    pub(crate) max_send_frame_size: Option<usize>,
    pub(crate) queue_until_open: bool,
    pub(crate) callbacks: Callbacks<ConnectSuccess>,
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("url", &self.url)
            .field("headers", &self.headers)
            .field("protocols", &self.protocols)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ConnectOptions {
    /// Options for connecting to `url` (`ws://` or `wss://`), with every
    /// other setting at its default.
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
            max_send_frame_size: None,
            queue_until_open: false,
            callbacks: Callbacks::default(),
        }
    }

    /// Adds a request header (`header` in uni-app). `Referer` and the
    /// headers of the WebSocket handshake itself are refused.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The subprotocols to offer (`protocols` in uni-app), in order of preference.
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
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets `TCP_NODELAY` (default `true`).
    #[must_use]
    pub fn tcp_no_delay(mut self, on: bool) -> Self {
        self.tcp_no_delay = on;
        self
    }

    /// The largest message accepted from the server (default 64 MiB).
    /// A larger one fails the connection with close code 1009.
    #[must_use]
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.limits.max_message_size = bytes;
        self
    }

    /// The largest frame accepted from the server (default 16 MiB).
    /// A larger one fails the connection with close code 1009.
    #[must_use]
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.limits.max_frame_size = bytes;
        self
    }

    /// The largest handshake response accepted (default 64 KiB).
    #[must_use]
    pub fn max_handshake_response(mut self, bytes: usize) -> Self {
        self.limits.max_handshake_response = bytes;
        self
    }

    /// How many bytes of received messages are held while nobody consumes
    /// them (default 16 MiB). When the limit is reached the task stops
    /// reading from the socket until messages are consumed, so nothing is
    /// dropped; the server sees TCP backpressure.
    #[must_use]
    pub fn max_held_bytes(mut self, bytes: usize) -> Self {
        self.max_held_bytes = bytes;
        self
    }

    /// How long `close` waits for the server's close frame (default 5 s).
    #[must_use]
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Splits outgoing messages into frames of at most `bytes` payload bytes
    /// (default: one frame per message).
    #[must_use]
    pub fn max_send_frame_size(mut self, bytes: usize) -> Self {
        self.max_send_frame_size = Some(bytes.max(1));
        self
    }

    /// Queue sends made while CONNECTING and flush them in order on open,
    /// instead of failing them with `WebSocket is not connected`.
    #[must_use]
    pub fn queue_until_open(mut self, on: bool) -> Self {
        self.queue_until_open = on;
        self
    }

    callback_setters!(ConnectSuccess);
}

/// The options of `send`: `SocketTask.send(OBJECT)`.
///
/// Anything that converts into [`Data`] converts into `SendOptions`:
/// `task.send("hi")`, `task.send(vec![1, 2, 3])`.
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
pub struct CloseOptions {
    pub(crate) code: u16,
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
            reason: String::new(),
            callbacks: Callbacks::default(),
        }
    }
}

impl CloseOptions {
    /// The close code: 1000 or 3000-4999.
    #[must_use]
    pub fn code(mut self, code: u16) -> Self {
        self.code = code;
        self
    }

    /// The close reason: at most 123 bytes of UTF-8.
    #[must_use]
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = reason.into();
        self
    }

    callback_setters!(CloseSuccess);
}
