//! Typed errors of the protocol layer. The uni-app `errMsg` strings are made
//! from these at the API edge; nothing below it deals in strings.

use std::fmt;

/// A violation of RFC 6455 by the peer, or a limit it exceeded.
///
/// Each variant maps to the close code sent back ([`ProtocolError::close_code`]).
///
/// # Examples
///
/// ```
/// use unisocket_proto::{Config, Connection, ProtocolError};
///
/// // A server must not mask its frames.
/// let mut conn = Connection::new(Config::default());
/// conn.read_buf().extend_from_slice(&[0x81, 0x80, 1, 2, 3, 4]);
/// let err = conn.poll_event().unwrap_err();
/// assert_eq!(err, ProtocolError::MaskedServerFrame);
/// assert_eq!(err.to_string(), "server sent a masked frame");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// RSV bits set that no negotiated extension defines (the bits are given).
    ReservedBits(u8),
    /// A reserved opcode (3-7 or 11-15).
    ReservedOpCode(u8),
    /// A control frame without the FIN bit.
    FragmentedControlFrame,
    /// A control frame with a payload over 125 bytes.
    ControlFrameTooLong,
    /// A frame from the server with the MASK bit set.
    MaskedServerFrame,
    /// A 64-bit length with the most significant bit set.
    InvalidLength,
    /// A continuation frame with no message in progress.
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is in progress.
    ExpectedContinuation,
    /// A text message or close reason that is not UTF-8.
    InvalidUtf8,
    /// A close frame whose payload is a single byte.
    InvalidClosePayload,
    /// A close frame carrying a code that may not be sent on the wire.
    InvalidCloseCode(u16),
    /// A frame larger than `max_frame_size`.
    FrameTooLarge {
        /// The length the frame header announced.
        size: u64,
        /// The configured limit.
        max: usize,
    },
    /// A message larger than `max_message_size`.
    MessageTooLarge {
        /// The size the message reached (or would reach) with this frame.
        size: u64,
        /// The configured limit.
        max: usize,
    },
    /// A compressed frame that did not inflate.
    Compression(String),
}

impl ProtocolError {
    /// The close code to send when failing the connection for this error:
    /// 1007 for invalid UTF-8, 1009 for size limits, 1002 for the rest.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::ProtocolError;
    ///
    /// assert_eq!(ProtocolError::InvalidUtf8.close_code(), 1007);
    /// let too_big = ProtocolError::FrameTooLarge { size: 1 << 30, max: 16 << 20 };
    /// assert_eq!(too_big.close_code(), 1009);
    /// assert_eq!(ProtocolError::ReservedOpCode(3).close_code(), 1002);
    /// ```
    pub fn close_code(&self) -> u16 {
        match self {
            ProtocolError::InvalidUtf8 => 1007,
            ProtocolError::FrameTooLarge { .. } | ProtocolError::MessageTooLarge { .. } => 1009,
            _ => 1002,
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::ReservedBits(bits) => {
                write!(
                    f,
                    "server sent a frame with reserved bits set (0x{bits:02x})"
                )
            }
            ProtocolError::ReservedOpCode(op) => {
                write!(f, "server sent a frame with reserved opcode {op}")
            }
            ProtocolError::FragmentedControlFrame => {
                f.write_str("server sent a fragmented control frame")
            }
            ProtocolError::ControlFrameTooLong => {
                f.write_str("server sent a control frame with a payload over 125 bytes")
            }
            ProtocolError::MaskedServerFrame => f.write_str("server sent a masked frame"),
            ProtocolError::InvalidLength => {
                f.write_str("server sent a frame length with the top bit set")
            }
            ProtocolError::UnexpectedContinuation => {
                f.write_str("server sent a continuation frame with no message in progress")
            }
            ProtocolError::ExpectedContinuation => {
                f.write_str("server started a new message before finishing the fragmented one")
            }
            ProtocolError::InvalidUtf8 => f.write_str("server sent text that is not valid UTF-8"),
            ProtocolError::InvalidClosePayload => {
                f.write_str("server sent a close frame with a 1-byte payload")
            }
            ProtocolError::InvalidCloseCode(code) => {
                write!(f, "server sent invalid close code {code}")
            }
            ProtocolError::FrameTooLarge { size, max } => {
                write!(
                    f,
                    "server sent a frame of {size} bytes, over the limit of {max} bytes"
                )
            }
            ProtocolError::MessageTooLarge { size, max } => {
                write!(
                    f,
                    "server sent a message of {size} bytes or more, over the limit of {max} bytes"
                )
            }
            ProtocolError::Compression(e) => write!(
                f,
                "server sent a compressed frame that does not inflate: {e}"
            ),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Why the HTTP upgrade did not produce a WebSocket connection.
///
/// # Examples
///
/// ```
/// use unisocket_proto::handshake::parse_response;
/// use unisocket_proto::HandshakeError;
///
/// let response = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 6\r\n\r\ndenied";
/// let err = parse_response(response, "dGhlIHNhbXBsZSBub25jZQ==", &[], 1024).unwrap_err();
/// let HandshakeError::Status { status, reason, response } = &err else {
///     panic!("{err:?}");
/// };
/// assert_eq!((*status, reason.as_str()), (403, "Forbidden"));
/// assert_eq!(response.headers, [("Content-Length".to_owned(), "6".to_owned())]);
/// assert_eq!(response.body, b"denied");
/// assert_eq!(
///     err.to_string(),
///     "server answered HTTP 403 Forbidden instead of 101 Switching Protocols"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The server answered with a status other than 101.
    Status {
        /// The HTTP status code, e.g. 403.
        status: u16,
        /// The reason phrase the server gave.
        reason: String,
        /// The response's headers and the first bytes of its body (boxed:
        /// the other variants stay small).
        response: Box<RefusedResponse>,
    },
    /// The response did not end within the size limit.
    ResponseTooLarge {
        /// The configured limit in bytes.
        max: usize,
    },
    /// The bytes received are not an HTTP/1.1 response.
    Malformed(String),
    /// The `Upgrade: websocket` header is missing or has another value.
    MissingUpgrade,
    /// The `Connection: Upgrade` header is missing.
    MissingConnection,
    /// `Sec-WebSocket-Accept` is missing or does not match the key sent.
    BadAccept,
    /// The server chose a subprotocol that was not offered, or chose one when none was offered.
    UnexpectedProtocol(String),
    /// The server answered with an extension that was not offered or with parameters outside the offer.
    UnexpectedExtension(String),
    /// The connection ended before the response was complete.
    Incomplete,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Status { status, reason, .. } => {
                write!(f, "server answered HTTP {status}")?;
                if !reason.is_empty() {
                    write!(f, " {reason}")?;
                }
                f.write_str(" instead of 101 Switching Protocols")
            }
            HandshakeError::ResponseTooLarge { max } => {
                write!(f, "handshake response exceeds the limit of {max} bytes")
            }
            HandshakeError::Malformed(e) => write!(f, "handshake response is not valid HTTP: {e}"),
            HandshakeError::MissingUpgrade => {
                f.write_str("handshake response lacks the header \"Upgrade: websocket\"")
            }
            HandshakeError::MissingConnection => {
                f.write_str("handshake response lacks the header \"Connection: Upgrade\"")
            }
            HandshakeError::BadAccept => {
                f.write_str("handshake response has a wrong or missing Sec-WebSocket-Accept")
            }
            HandshakeError::UnexpectedProtocol(p) => {
                write!(f, "server chose subprotocol {p:?}, which was not offered")
            }
            HandshakeError::UnexpectedExtension(e) => {
                write!(
                    f,
                    "server answered with extension {e:?}, which was not offered"
                )
            }
            HandshakeError::Incomplete => f.write_str("connection closed during the handshake"),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// What came with a response other than `101 Switching Protocols`: its
/// headers, and the first bytes of its body that arrived with them (the
/// client does not wait for more), at most
/// [`MAX_REFUSED_BODY`](super::handshake::MAX_REFUSED_BODY). The body is as
/// sent: still chunked or compressed if the server sent it so.
///
/// `Debug` hides the values of secret headers (`Set-Cookie`, ...); the
/// fields hold them as sent.
///
/// # Examples
///
/// ```
/// use unisocket_proto::handshake::parse_response;
/// use unisocket_proto::HandshakeError;
///
/// let response = b"HTTP/1.1 302 Found\r\nLocation: /new\r\nSet-Cookie: id=s3cret\r\n\r\n";
/// let Err(HandshakeError::Status { response, .. }) =
///     parse_response(response, "dGhlIHNhbXBsZSBub25jZQ==", &[], 1024)
/// else {
///     panic!("not refused")
/// };
/// assert_eq!(response.header("location"), Some("/new"));
/// assert!(response.body.is_empty());
/// assert!(!format!("{response:?}").contains("s3cret"));
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RefusedResponse {
    /// Every header, in order, names as sent (values decoded as UTF-8,
    /// lossily).
    pub headers: Vec<(String, String)>,
    /// The first bytes of the body, as far as they arrived with the headers.
    pub body: Vec<u8>,
}

impl RefusedResponse {
    /// The value of the first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl fmt::Debug for RefusedResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, std::borrow::Cow<'_, str>)> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), crate::redact::header_value(n, v)))
            .collect();
        f.debug_struct("RefusedResponse")
            .field("headers", &headers)
            .field("body", &String::from_utf8_lossy(&self.body))
            .finish()
    }
}
