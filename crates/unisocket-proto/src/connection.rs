//! The client side of an open WebSocket connection as a state machine with
//! no I/O: bytes from the peer go into [`Connection::read_buf`], events come
//! out of [`Connection::poll_event`], frames to send accumulate in
//! [`Connection::write_buf`], and time enters through [`Connection::close`]
//! and [`Connection::handle_timeout`].

use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};

use super::deflate::{Deflate, DeflateParams};
use super::error::ProtocolError;
use super::frame::{apply_mask, extend_masked, FrameHeader, OpCode, MAX_HEADER_LEN};
use super::utf8::Utf8Validator;
use crate::data::{Data, Text};

/// Frames at least this large are received into a buffer of their own.
const LARGE_FRAME: usize = 32 * 1024;
/// How many buffers of large frames are kept for reuse, and the largest kept.
const POOL_BUFFERS: usize = 8;
const POOL_MAX_BUFFER: usize = 1 << 20;
/// After a large frame of at most this size (header included), the next read
/// goes into a pooled buffer with room for another such frame: if one comes,
/// that buffer becomes its own buffer with no copy and no second read.
const PREPARED_READ_MAX: usize = 128 * 1024;
/// After this many frames in a row that were not large, the kept buffers
/// are freed: a connection whose traffic turned small holds none.
const POOL_IDLE_FRAMES: u32 = 64;

/// Buffers of large frames, back from the messages the application dropped.
///
/// A message of a large frame keeps its buffer (no copy) until the
/// application drops it; the buffer then comes back here for the next large
/// frame. Without this, a consumer that holds a few messages at a time
/// makes the allocator hand memory back to the system and fault it in again
/// for every message.
#[derive(Default)]
struct FramePool {
    free: std::sync::Mutex<Vec<BytesMut>>,
}

impl FramePool {
    fn free(&self) -> std::sync::MutexGuard<'_, Vec<BytesMut>> {
        self.free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An empty buffer with room for at least `n` bytes.
    fn take(&self, n: usize) -> BytesMut {
        if let Some(mut buf) = self.free().pop() {
            buf.clear();
            // A buffer that was a read buffer lost the frame header at its
            // front: reclaiming that room moves no bytes (it is empty).
            if buf.capacity() >= n || buf.try_reclaim(n) {
                return buf;
            }
        }
        BytesMut::with_capacity(n)
    }

    /// An empty buffer with room for at least `n` bytes and at most `max`:
    /// one of the pool's if one fits, otherwise a new one of `n`.
    fn take_sized(&self, n: usize, max: usize) -> BytesMut {
        let mut free = self.free();
        for i in (0..free.len()).rev() {
            let buf = &mut free[i];
            buf.clear();
            // Reclaiming may give back room at the front: check `max` again.
            let fits = buf.capacity() <= max
                && (buf.capacity() >= n || buf.try_reclaim(n))
                && buf.capacity() <= max;
            if fits {
                return free.swap_remove(i);
            }
        }
        BytesMut::with_capacity(n)
    }

    fn put(&self, buf: BytesMut) {
        if buf.capacity() <= POOL_MAX_BUFFER {
            let mut free = self.free();
            if free.len() < POOL_BUFFERS {
                free.push(buf);
            }
        }
    }
}

/// The bytes of a message received in a pooled buffer: the buffer goes back
/// to its pool when the last handle to the message is dropped.
struct Pooled {
    buf: BytesMut,
    pool: std::sync::Arc<FramePool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.put(std::mem::take(&mut self.buf));
    }
}

/// Size limits enforced on what the peer sends (SPEC section 5).
///
/// # Examples
///
/// ```
/// use unisocket_proto::{Config, Connection, Limits, ProtocolError};
///
/// let limits = Limits { max_frame_size: 4, ..Limits::default() };
/// let mut conn = Connection::new(Config { limits, ..Config::default() });
/// // The header of a 5-byte binary frame is enough to refuse it.
/// conn.read_buf().extend_from_slice(&[0x82, 0x05]);
/// let err = conn.poll_event().unwrap_err();
/// assert_eq!(err, ProtocolError::FrameTooLarge { size: 5, max: 4 });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message, after reassembly of fragments and inflating.
    /// Default 64 MiB. It bounds the frames too: a message sent as one frame
    /// (as most servers send it) is accepted up to this size, and a
    /// compressed one up to the most deflate can make of that many bytes.
    pub max_message_size: usize,
    /// Largest single frame payload, on the wire, for a tighter bound than
    /// the message's. Default: none of its own (`usize::MAX`).
    pub max_frame_size: usize,
    /// Largest HTTP upgrade response. Default 64 KiB.
    pub max_handshake_response: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 64 << 20,
            max_frame_size: usize::MAX,
            max_handshake_response: 64 << 10,
        }
    }
}

/// Settings of a [`Connection`].
///
/// # Examples
///
/// ```
/// use unisocket_proto::{Config, Connection};
///
/// // Split outgoing messages into frames of at most 2 payload bytes.
/// let config = Config { max_send_frame_size: Some(2), ..Config::default() };
/// let mut conn = Connection::new(config);
/// conn.send_text("hello").unwrap();
/// let out = conn.write_buf().split();
/// // Three masked frames of 8, 8 and 7 bytes: text, continuation, final continuation.
/// assert_eq!(out.len(), 8 + 8 + 7);
/// assert_eq!([out[0], out[8], out[16]], [0x01, 0x00, 0x80]);
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    /// Limits on what the peer sends.
    pub limits: Limits,
    /// Outgoing messages larger than this are split into frames of at most
    /// this many payload bytes. `None` (the default) sends each message as one frame.
    pub max_send_frame_size: Option<usize>,
    /// How long to wait for the peer's close frame after sending ours. Default 5 s.
    pub close_timeout: Duration,
    /// Keep delivering the messages that arrive after our close frame was
    /// sent, until the peer's close frame. Default `false`: they are
    /// dropped, as in a browser (`readyState` CLOSING).
    pub receive_while_closing: bool,
    /// Send a ping every `interval` and fail when nothing at all arrives
    /// within `timeout` after one (see [`Connection::heartbeat_failed`]).
    pub heartbeat: Option<Heartbeat>,
    /// The permessage-deflate parameters negotiated in the handshake, if any
    /// (ignored when the crate is built without the `deflate` feature).
    pub deflate: Option<DeflateParams>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            limits: Limits::default(),
            max_send_frame_size: None,
            close_timeout: Duration::from_secs(5),
            receive_while_closing: false,
            heartbeat: None,
            deflate: None,
        }
    }
}

/// Heartbeat settings: ping every `interval`; the peer must send something
/// (a pong or any other frame) within `timeout` after each ping.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use unisocket_proto::{Config, Connection, Heartbeat};
///
/// let heartbeat = Heartbeat {
///     interval: Duration::from_secs(30),
///     timeout: Duration::from_secs(10),
/// };
/// let mut conn = Connection::new(Config { heartbeat: Some(heartbeat), ..Config::default() });
/// let start = Instant::now();
/// conn.handle_timeout(start); // starts the clock
/// assert_eq!(conn.poll_timeout(), Some(start + heartbeat.interval));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// Time between pings.
    pub interval: Duration,
    /// How long to wait for any frame after a ping.
    pub timeout: Duration,
}

/// Where the heartbeat clock stands.
#[derive(Debug, Clone, Copy, Default)]
struct HeartbeatClock {
    next_ping: Option<Instant>,
    deadline: Option<Instant>,
    failed: bool,
    sent: u64,
}

/// Something the peer did.
///
/// # Examples
///
/// ```
/// use unisocket_proto::{Config, Connection, Event};
/// use bytes::Bytes;
///
/// let mut conn = Connection::new(Config::default());
/// conn.read_buf().extend_from_slice(&[0x89, 0x01, b'x']); // a ping from the server
/// assert_eq!(conn.poll_event().unwrap(), Some(Event::Ping(Bytes::from("x"))));
/// assert_eq!(conn.write_buf()[0], 0x8A); // the pong is already queued
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete text or binary message.
    Message(Data),
    /// A ping; the pong has already been queued (at most 32
    /// pongs wait in the write buffer: see
    /// [`Connection::write_buf`]).
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// The peer's close frame (code 1005 when it carried none). If we had not
    /// sent a close frame yet, the echo has been queued.
    Close {
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
}

/// Where the close handshake stands.
///
/// # Examples
///
/// ```
/// use std::time::Instant;
/// use unisocket_proto::{Config, Connection, State};
///
/// let mut conn = Connection::new(Config::default());
/// assert_eq!(conn.state(), State::Open);
/// conn.close(1000, "", Instant::now()).unwrap();
/// assert_eq!(conn.state(), State::CloseSent);
/// conn.read_buf().extend_from_slice(&[0x88, 0x02, 0x03, 0xE8]); // the server's close, 1000
/// conn.poll_event().unwrap();
/// assert_eq!(conn.state(), State::Closed);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Data flows both ways.
    Open,
    /// We sent a close frame and wait for the peer's.
    CloseSent,
    /// The close handshake is over (or the connection failed): once the
    /// write buffer is flushed, the transport may be shut down.
    Closed,
}

/// Why a connection is [`State::Closed`]: the one answer a driver reports
/// (see [`Connection::ending`]), rather than one it pieces together from
/// the state, the timeouts and the errors.
///
/// # Examples
///
/// ```
/// use std::time::Instant;
/// use unisocket_proto::{Config, Connection, Ending};
///
/// let mut conn = Connection::new(Config::default());
/// let now = Instant::now();
/// conn.close(1000, "", now).unwrap();
/// assert_eq!(conn.ending(), None); // still closing
/// conn.handle_timeout(now + conn.config().close_timeout); // never answered
/// assert_eq!(conn.ending(), Some(Ending::CloseTimedOut(conn.config().close_timeout)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ending {
    /// The peer's close frame came: its code (1005 when it gave none) and
    /// reason. A clean close, whoever closed first.
    Closed {
        /// The peer's close code.
        code: u16,
        /// The peer's close reason.
        reason: String,
    },
    /// The peer broke the protocol or a limit, and the connection was
    /// failed for it ([`Connection::fail`]; the close frame sent carries
    /// [`ProtocolError::close_code`]), or the transport ended behind the
    /// error.
    Failed(ProtocolError),
    /// The heartbeat heard nothing from the peer for this long after a ping;
    /// no close frame was sent (nobody would read it).
    HeartbeatTimedOut(Duration),
    /// Our close frame went unanswered for this long
    /// ([`Config::close_timeout`]).
    CloseTimedOut(Duration),
    /// The transport ended without the peer's close frame.
    Eof,
}

/// Why a send was refused.
///
/// # Examples
///
/// ```
/// use std::time::Instant;
/// use unisocket_proto::{Config, Connection, SendError};
///
/// let mut conn = Connection::new(Config::default());
/// let now = Instant::now();
/// assert_eq!(conn.close(1005, "", now), Err(SendError::InvalidCloseCode(1005)));
/// assert_eq!(conn.close(1000, &"x".repeat(124), now), Err(SendError::ReasonTooLong(124)));
/// conn.close(1000, "bye", now).unwrap();
/// assert_eq!(conn.send_text("late"), Err(SendError::Closing));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// A close frame has been sent or received; no more data may be sent.
    Closing,
    /// The close code is not one an endpoint may send (see
    /// [`is_valid_endpoint_code`]).
    InvalidCloseCode(u16),
    /// The close code is one an endpoint may send but a browser's
    /// `WebSocket.close` refuses (see [`check_browser_close`]).
    BrowserCloseCode(u16),
    /// The close reason is over 123 bytes.
    ReasonTooLong(usize),
    /// The ping payload is over 125 bytes.
    PingTooLong(usize),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Closing => f.write_str("the connection is closing"),
            SendError::InvalidCloseCode(code) => write!(
                f,
                "close code {code} is not allowed: use 1000-1003, 1007-1011 or 3000-4999"
            ),
            SendError::BrowserCloseCode(code) => {
                write!(f, "close code {code} is not allowed: use 1000 or 3000-4999")
            }
            SendError::ReasonTooLong(n) => {
                write!(f, "close reason is {n} bytes of UTF-8; the limit is 123")
            }
            SendError::PingTooLong(n) => {
                write!(f, "a ping payload is at most 125 bytes, not {n}")
            }
        }
    }
}

/// Checks a close code and reason an endpoint asks to send: the code must
/// be one [`is_valid_endpoint_code`] accepts, the reason at most 123 bytes
/// (a close frame's payload is at most 125, two of them the code). The one
/// place these rules live: [`Connection::close`] asks it, and so does the
/// API's `close`, through [`check_browser_close`] unless the application
/// asked for an endpoint's codes.
///
/// # Examples
///
/// ```
/// use unisocket_proto::connection::check_close;
/// use unisocket_proto::SendError;
///
/// assert_eq!(check_close(1008, "policy"), Ok(()));
/// assert_eq!(check_close(1005, ""), Err(SendError::InvalidCloseCode(1005)));
/// assert_eq!(check_close(1000, &"r".repeat(124)), Err(SendError::ReasonTooLong(124)));
/// ```
pub fn check_close(code: u16, reason: &str) -> Result<(), SendError> {
    if !is_valid_endpoint_code(code) {
        return Err(SendError::InvalidCloseCode(code));
    }
    if reason.len() > 123 {
        return Err(SendError::ReasonTooLong(reason.len()));
    }
    Ok(())
}

/// [`check_close`] with the browser's rule for the code on top: only the
/// codes [`is_valid_sent_code`] accepts (1000 and 3000-4999), as
/// `WebSocket.close` and uni-app's `SocketTask.close` take.
///
/// # Examples
///
/// ```
/// use unisocket_proto::connection::check_browser_close;
/// use unisocket_proto::SendError;
///
/// assert_eq!(check_browser_close(4000, "bye"), Ok(()));
/// assert_eq!(check_browser_close(1001, ""), Err(SendError::BrowserCloseCode(1001)));
/// ```
pub fn check_browser_close(code: u16, reason: &str) -> Result<(), SendError> {
    if !is_valid_sent_code(code) {
        return Err(SendError::BrowserCloseCode(code));
    }
    check_close(code, reason)
}

/// Checks a ping payload an application asks to send: at most 125 bytes,
/// as every control frame's (RFC 6455 section 5.5).
///
/// # Examples
///
/// ```
/// use unisocket_proto::connection::check_ping;
/// use unisocket_proto::SendError;
///
/// assert_eq!(check_ping(&[0; 125]), Ok(()));
/// assert_eq!(check_ping(&[0; 126]), Err(SendError::PingTooLong(126)));
/// ```
pub fn check_ping(payload: &[u8]) -> Result<(), SendError> {
    match payload.len() {
        n if n > 125 => Err(SendError::PingTooLong(n)),
        _ => Ok(()),
    }
}

impl std::error::Error for SendError {}

/// Whether a close code received from the peer is valid on the wire
/// (RFC 6455 section 7.4 and the IANA registry).
///
/// # Examples
///
/// ```
/// use unisocket_proto::connection::is_valid_received_code;
///
/// assert!(is_valid_received_code(1001)); // going away
/// assert!(is_valid_received_code(4000)); // private use
/// assert!(!is_valid_received_code(1005)); // "no code": never on the wire
/// assert!(!is_valid_received_code(999));
/// ```
pub fn is_valid_received_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Whether an application may send this close code (the codes the browser
/// `WebSocket.close` accepts).
///
/// # Examples
///
/// ```
/// use unisocket_proto::connection::is_valid_sent_code;
///
/// assert!(is_valid_sent_code(1000));
/// assert!(is_valid_sent_code(3000));
/// assert!(!is_valid_sent_code(1001)); // valid on the wire, but not for applications
/// ```
pub fn is_valid_sent_code(code: u16) -> bool {
    code == 1000 || (3000..=4999).contains(&code)
}

/// Whether an endpoint may send this close code (RFC 6455 section 7.4.1
/// and the IANA registry): 1000-1003, 1007-1011 and 3000-4999. What
/// [`Connection::close`] accepts; the browser API accepts fewer (see
/// [`is_valid_sent_code`]).
///
/// # Examples
///
/// ```
/// use unisocket_proto::connection::is_valid_endpoint_code;
///
/// assert!(is_valid_endpoint_code(1001)); // going away
/// assert!(is_valid_endpoint_code(1008)); // policy violation
/// assert!(!is_valid_endpoint_code(1005)); // "no code": never on the wire
/// assert!(!is_valid_endpoint_code(1012)); // service restart: a server's
/// ```
pub fn is_valid_endpoint_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

struct CurrentFrame {
    header: FrameHeader,
    /// Bytes of the payload already fed to the UTF-8 validator.
    checked: usize,
}

struct Partial {
    text: bool,
    /// RSV1 was set on the first frame: the payload is deflated.
    compressed: bool,
    /// The raw payload so far (uncompressed messages).
    buf: BytesMut,
    /// The inflated payload so far (compressed messages).
    inflated: Vec<u8>,
    /// The compressed bytes received so far (compressed messages).
    wire: usize,
}

/// The most room a frame's buffer takes ahead of the bytes that came.
const RESERVE_AHEAD: usize = 64 << 20;

/// Appends `data` to a message's buffer, growing it as a `Vec` would
/// (doubling) but never past `max`, the message limit that the frame
/// headers were checked against: a message of the limit in many fragments
/// holds the limit, not twice it.
fn append_within(buf: &mut BytesMut, data: &[u8], max: usize) {
    let need = buf.len() + data.len();
    if buf.capacity() < need {
        let target = (2 * buf.capacity()).min(max).max(need);
        // As a `Vec`, which grows exactly and in place where the allocator
        // can (a `BytesMut` would double past the limit, or a new buffer
        // beside the old one would hold both at once).
        let mut v = Vec::from(std::mem::take(buf));
        v.reserve_exact(target - v.len());
        // Unique, so no copy.
        *buf = Bytes::from(v)
            .try_into_mut()
            .unwrap_or_else(|b| BytesMut::from(&b[..]));
    }
    buf.extend_from_slice(data);
}

/// How large a compressed message of `n` bytes may be on the wire: an
/// eighth more, and 1 KiB. A compressor that falls back to stored blocks
/// adds 5 bytes per 64 KiB; one that does not (or flushes often) adds a few
/// percent to bytes it cannot shrink. What is inflated is checked against
/// `n` itself.
fn deflate_bound(n: usize) -> usize {
    n.saturating_add(n / 8).saturating_add(1024)
}

impl Partial {
    /// The bytes received so far, as sent on the wire: the frame-level
    /// message limit counts these; inflating has its own check.
    fn len(&self) -> usize {
        if self.compressed {
            self.wire
        } else {
            self.buf.len()
        }
    }
}

/// The client side of an open WebSocket connection.
///
/// # Examples
///
/// ```
/// use unisocket_proto::{Config, Connection, Event};
/// use unisocket_proto::Data;
///
/// let mut conn = Connection::new(Config::default());
/// // One read may bring several frames: poll until no whole event is left.
/// conn.read_buf().extend_from_slice(&[0x81, 0x01, b'a', 0x82, 0x01, 7]);
/// let mut events = Vec::new();
/// while let Some(event) = conn.poll_event()? {
///     events.push(event);
/// }
/// assert_eq!(
///     events,
///     [Event::Message(Data::from("a")), Event::Message(Data::from(vec![7u8]))]
/// );
/// # Ok::<(), unisocket_proto::ProtocolError>(())
/// ```
pub struct Connection {
    read: BytesMut,
    write: BytesMut,
    state: State,
    config: Config,
    frame: Option<CurrentFrame>,
    partial: Option<Partial>,
    utf8: Utf8Validator,
    close_deadline: Option<Instant>,
    timed_out: bool,
    heartbeat: HeartbeatClock,
    error: Option<ProtocolError>,
    /// The own buffer of a large frame being received (see `read_buf`).
    large: Option<BytesMut>,
    /// Buffers of large frames, for reuse; made with the first large frame
    /// (most connections never see one).
    pool: Option<std::sync::Arc<FramePool>>,
    /// Frames since the last large one (see `POOL_IDLE_FRAMES`).
    small_frames: u32,
    /// The size the next read buffer is prepared for (header included), after
    /// a large frame of at most [`PREPARED_READ_MAX`]; 0 otherwise.
    prepared_read: usize,
    /// Boxed: most connections do not compress, and the codec state is
    /// some 300 bytes.
    deflate: Option<Box<Deflate>>,
    /// Reused output buffer of the compressor.
    scratch: Vec<u8>,
    /// Bytes ever appended to `write`. The caller only removes bytes from
    /// its front, so `queued - write.len()` is how many it took.
    queued: u64,
    /// The last pong appended to `write`, while it may still wait there
    /// whole (see [`Connection::queue_pong`]).
    pong: Option<QueuedPong>,
    /// The payload of a ping newer than `pong` that could not take its
    /// place (see [`Connection::queue_pong`]); boxed: rarely there.
    next_pong: Option<Box<[u8]>>,
    /// Where the pongs appended to `write` start (stream offsets, oldest
    /// first), while they may still wait there whole: up to
    /// [`WAITING_PONGS`] of them, one per ping, before new pings take the
    /// place of the last one. Allocated at the first ping.
    pong_starts: Vec<u64>,
    /// The peer's close frame, once it came (see [`Connection::ending`]);
    /// boxed: one word until then.
    peer_close: Option<Box<(u16, String)>>,
}

/// How many pongs may wait unsent, one per ping, before a newer ping's pong
/// takes the place of the last one: a burst of pings gets all its answers
/// (as peers expect, Autobahn 2.10 and 2.11 among them), a flood of them
/// no more than this many frames (4 KiB at most).
pub const WAITING_PONGS: usize = 32;

/// Where a pong frame sits in the stream of bytes written (see
/// [`Connection::queue_pong`]).
#[derive(Debug, Clone, Copy)]
struct QueuedPong {
    /// The stream offset (counted as `Connection::queued`) of its first byte.
    start: u64,
    /// The frame's length, header included.
    len: usize,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("state", &self.state)
            .field("buffered_read", &self.read.len())
            .field("buffered_write", &self.write.len())
            .field("in_message", &self.partial.is_some())
            .field("deflate", &self.deflate.is_some())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A connection right after a successful handshake.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::{Config, Connection, State};
    ///
    /// let mut conn = Connection::new(Config::default());
    /// assert_eq!(conn.state(), State::Open);
    /// assert!(conn.write_buf().is_empty());
    /// assert_eq!(conn.poll_event(), Ok(None));
    /// ```
    pub fn new(config: Config) -> Self {
        #[cfg(feature = "deflate")]
        let deflate = config.deflate.map(|p| Box::new(Deflate::new(p)));
        #[cfg(not(feature = "deflate"))]
        let deflate: Option<Box<Deflate>> = None;
        Connection {
            // Allocated on first use: an idle connection costs no buffer.
            read: BytesMut::new(),
            write: BytesMut::new(),
            state: State::Open,
            config,
            frame: None,
            partial: None,
            utf8: Utf8Validator::new(),
            close_deadline: None,
            timed_out: false,
            heartbeat: HeartbeatClock::default(),
            error: None,
            large: None,
            pool: None,
            small_frames: 0,
            prepared_read: 0,
            deflate,
            scratch: Vec::new(),
            queued: 0,
            pong: None,
            next_pong: None,
            pong_starts: Vec::new(),
            peer_close: None,
        }
    }

    /// Where bytes read from the peer are appended.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::{Config, Connection, Event};
    /// use unisocket_proto::Data;
    ///
    /// let mut conn = Connection::new(Config::default());
    /// // "hello" in two fragments, arriving in two reads.
    /// conn.read_buf().extend_from_slice(&[0x01, 0x02, b'h', b'e']);
    /// assert_eq!(conn.poll_event(), Ok(None));
    /// conn.read_buf().extend_from_slice(&[0x80, 0x03, b'l', b'l', b'o']);
    /// assert_eq!(conn.poll_event(), Ok(Some(Event::Message(Data::from("hello")))));
    /// ```
    pub fn read_buf(&mut self) -> &mut BytesMut {
        // While a large frame arrives, its bytes go straight into a buffer of
        // its own (at least its size, reused from earlier large messages),
        // which becomes the message without a copy.
        let want = self.prepared_read;
        if self.large.is_none() && want > 0 && self.read.is_empty() && self.read.capacity() < want {
            // Large frames come one after another: read the next one into a
            // buffer that can become its own (see `decode`). Not a much
            // larger one: small messages read next are cut from it and keep
            // it alive.
            if let Some(pool) = &self.pool {
                self.read = pool.take_sized(want, 2 * want);
            }
        }
        self.current_read_buf()
    }

    /// [`Connection::read_buf`] as it is, with no buffer prepared for the
    /// next read: for looking at it (how much waits to be decoded), or for
    /// taking an empty one away while the connection is quiet, rather than
    /// for reading.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::{Config, Connection, Event};
    /// use unisocket_proto::Data;
    ///
    /// let mut conn = Connection::new(Config::default());
    /// // Two messages, "a" and "b", in one read.
    /// conn.read_buf().extend_from_slice(&[0x81, 0x01, b'a', 0x81, 0x01, b'b']);
    /// assert_eq!(conn.poll_event(), Ok(Some(Event::Message(Data::from("a")))));
    /// assert_eq!(conn.current_read_buf().len(), 3); // "b" waits to be decoded
    /// ```
    pub fn current_read_buf(&mut self) -> &mut BytesMut {
        match &mut self.large {
            Some(own) => own,
            None => &mut self.read,
        }
    }

    /// The traffic went quiet: the next read needs no buffer prepared for
    /// another large frame (see [`Connection::read_buf`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::{Config, Connection};
    ///
    /// let mut conn = Connection::new(Config::default());
    /// conn.stop_preparing_reads();
    /// assert!(!conn.keeps_large_buffers());
    /// ```
    pub fn stop_preparing_reads(&mut self) {
        self.prepared_read = 0;
    }

    /// Whether the connection keeps buffers for large frames: a pool of
    /// them, or a read buffer prepared for the next one. A driver that
    /// finds the connection idle gives them back with
    /// [`Connection::release_idle_buffers`].
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::{Config, Connection, Event};
    ///
    /// let mut conn = Connection::new(Config::default());
    /// assert!(!conn.keeps_large_buffers());
    /// // A 65535-byte binary frame: its buffer is kept for the next one.
    /// conn.read_buf().extend_from_slice(&[0x82, 126, 0xFF, 0xFF]);
    /// conn.read_buf().extend_from_slice(&[0; 65535]);
    /// assert!(matches!(conn.poll_event(), Ok(Some(Event::Message(_)))));
    /// assert!(conn.keeps_large_buffers());
    /// conn.release_idle_buffers();
    /// assert!(!conn.keeps_large_buffers());
    /// ```
    pub fn keeps_large_buffers(&self) -> bool {
        self.pool.is_some() || self.prepared_read > 0
    }

    /// The connection went idle: it drops the buffers it kept for large
    /// frames, an empty read buffer and the compressor's output buffer.
    /// Messages the application still holds keep their own buffers, which
    /// are freed with them; the next large frame starts a new pool. A large
    /// frame half received keeps its buffer.
    pub fn release_idle_buffers(&mut self) {
        self.pool = None;
        self.stop_preparing_reads();
        self.scratch = Vec::new();
        if self.read.is_empty() {
            self.read = BytesMut::new();
        }
    }

    /// How many buffers of large frames wait for reuse.
    #[cfg(test)]
    pub(crate) fn pooled_buffers(&self) -> usize {
        self.pool.as_ref().map_or(0, |p| p.free().len())
    }

    /// Whether [`Connection::read_buf`] is the own buffer of a large frame,
    /// already sized for the rest of it: the caller should not grow it.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::{Config, Connection, Event};
    ///
    /// let mut conn = Connection::new(Config::default());
    /// // The start of a 65535-byte binary frame.
    /// conn.read_buf().extend_from_slice(&[0x82, 126, 0xFF, 0xFF, 0, 0]);
    /// assert_eq!(conn.poll_event(), Ok(None));
    /// assert!(conn.receiving_large_frame());
    /// conn.read_buf().extend_from_slice(&[0; 65533]);
    /// let Ok(Some(Event::Message(data))) = conn.poll_event() else { panic!() };
    /// assert_eq!(data.len(), 65535);
    /// assert!(!conn.receiving_large_frame());
    /// ```
    pub fn receiving_large_frame(&self) -> bool {
        self.large.is_some()
    }

    /// How many bytes of a large frame's payload have not arrived yet (0
    /// when no large frame is being received): the transport is sure to
    /// bring that many before the frame is whole.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::{Config, Connection};
    ///
    /// let mut conn = Connection::new(Config::default());
    /// // A 65535-byte binary frame, of which 100 bytes came.
    /// conn.read_buf().extend_from_slice(&[0x82, 126, 0xFF, 0xFF]);
    /// conn.read_buf().extend_from_slice(&[0; 100]);
    /// assert_eq!(conn.poll_event(), Ok(None));
    /// assert_eq!(conn.large_frame_missing(), 65435);
    /// ```
    pub fn large_frame_missing(&self) -> usize {
        match (&self.frame, &self.large) {
            (Some(f), Some(own)) => (f.header.payload_len as usize).saturating_sub(own.len()),
            _ => 0,
        }
    }

    /// Bytes waiting to be written to the peer. The caller writes them and
    /// removes what was written from the front (e.g. with
    /// `BytesMut::advance` or `split_to`, or takes them all with `split`);
    /// it adds nothing.
    ///
    /// At most 32 pongs wait here unsent, one per ping: a
    /// ping that comes while that many wait, the last one still whole in
    /// the buffer, makes that pong answer the newer ping instead of
    /// queuing another (RFC 6455 section 5.5.3 allows answering only the
    /// most recent ping).
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::frame::apply_mask;
    /// use unisocket_proto::{Config, Connection};
    ///
    /// let mut conn = Connection::new(Config::default());
    /// conn.send_binary(b"abc").unwrap();
    /// let buf = conn.write_buf();
    /// assert_eq!(buf[..2], [0x82, 0x80 | 3]); // binary, masked, 3 bytes
    /// let key = [buf[2], buf[3], buf[4], buf[5]];
    /// let mut payload = buf[6..].to_vec();
    /// apply_mask(&mut payload, key, 0);
    /// assert_eq!(payload, b"abc");
    /// // Say the transport took 4 bytes: remove them; the rest waits.
    /// let _ = buf.split_to(4);
    /// assert_eq!(conn.write_buf().len(), 5);
    /// ```
    pub fn write_buf(&mut self) -> &mut BytesMut {
        self.release_next_pong();
        &mut self.write
    }

    /// How many bytes wait in the write buffer, not yet taken by the caller
    /// (what [`Connection::write_buf`] would hold, less a pong that still
    /// waits to take the place of one the caller is taking).
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::{Config, Connection};
    ///
    /// let mut conn = Connection::new(Config::default());
    /// conn.send_binary(b"abc").unwrap();
    /// assert_eq!(conn.unwritten(), 9); // 2 header bytes, the mask key, 3 bytes
    /// let _ = conn.write_buf().split_to(4); // the transport took 4
    /// assert_eq!(conn.unwritten(), 5);
    /// ```
    pub fn unwritten(&self) -> usize {
        self.write.len()
    }

    /// The state of the close handshake.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::{Config, Connection, State};
    ///
    /// let mut conn = Connection::new(Config::default());
    /// // The server closes first (code 1000): the echo is queued and the
    /// // connection is closed.
    /// conn.read_buf().extend_from_slice(&[0x88, 0x02, 0x03, 0xE8]);
    /// conn.poll_event().unwrap();
    /// assert_eq!(conn.state(), State::Closed);
    /// assert_eq!(conn.write_buf()[0], 0x88);
    /// ```
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether the close handshake ended because its timeout passed.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Instant;
    /// use unisocket_proto::{Config, Connection, State};
    ///
    /// let mut conn = Connection::new(Config::default());
    /// let now = Instant::now();
    /// conn.close(1000, "", now).unwrap();
    /// // The server never answers.
    /// conn.handle_timeout(now + conn.config().close_timeout);
    /// assert_eq!(conn.state(), State::Closed);
    /// assert!(conn.timed_out());
    /// ```
    pub fn timed_out(&self) -> bool {
        self.timed_out
    }

    /// Why the connection is closed, once it is [`State::Closed`]; `None`
    /// before. A protocol error counts first (also one found before the
    /// transport ended), then the heartbeat, the peer's close frame, our
    /// close's timeout, and last the end of the transport.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::{Config, Connection, Ending};
    ///
    /// let mut conn = Connection::new(Config::default());
    /// conn.read_buf().extend_from_slice(&[0x88, 0x02, 0x0F, 0xA0]); // the server closes, 4000
    /// conn.poll_event().unwrap();
    /// assert_eq!(conn.ending(), Some(Ending::Closed { code: 4000, reason: String::new() }));
    ///
    /// let mut conn = Connection::new(Config::default());
    /// conn.handle_eof(); // the transport ended first
    /// assert_eq!(conn.ending(), Some(Ending::Eof));
    /// ```
    pub fn ending(&self) -> Option<Ending> {
        if self.state != State::Closed {
            return None;
        }
        Some(if let Some(e) = &self.error {
            Ending::Failed(e.clone())
        } else if let Some(timeout) = self.heartbeat_failed() {
            Ending::HeartbeatTimedOut(timeout)
        } else if let Some(close) = &self.peer_close {
            Ending::Closed {
                code: close.0,
                reason: close.1.clone(),
            }
        } else if self.timed_out {
            Ending::CloseTimedOut(self.config.close_timeout)
        } else {
            Ending::Eof
        })
    }

    /// The settings.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use unisocket_proto::{Config, Connection};
    ///
    /// let conn = Connection::new(Config::default());
    /// assert_eq!(conn.config().close_timeout, Duration::from_secs(5));
    /// assert_eq!(conn.config().limits.max_message_size, 64 << 20);
    /// ```
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The next event from the bytes in the read buffer, if a whole one is there.
    ///
    /// # Errors
    /// A [`ProtocolError`] when the peer broke the protocol or a limit. No
    /// later input is decoded (every further call returns the same error),
    /// but the connection stays in its state so that the application may
    /// still answer the messages that came before the error; then call
    /// [`Connection::fail`] to queue the close frame and end.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::{Config, Connection, Event};
    /// use unisocket_proto::Data;
    ///
    /// let mut conn = Connection::new(Config::default());
    /// conn.read_buf().extend_from_slice(&[0x81, 0x02, b'h']); // half a frame
    /// assert_eq!(conn.poll_event(), Ok(None));
    /// conn.read_buf().extend_from_slice(b"i");
    /// assert_eq!(conn.poll_event(), Ok(Some(Event::Message(Data::from("hi")))));
    /// assert_eq!(conn.poll_event(), Ok(None));
    /// ```
    pub fn poll_event(&mut self) -> Result<Option<Event>, ProtocolError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.state == State::Closed {
            return Ok(None);
        }
        match self.decode() {
            Ok(ev) => Ok(ev),
            Err(e) => {
                self.error = Some(e.clone());
                self.read.clear();
                self.large = None;
                self.partial = None;
                self.frame = None;
                Err(e)
            }
        }
    }

    /// Fails the connection for `e`: queues a close frame with
    /// [`ProtocolError::close_code`] (unless one was sent already) and moves to
    /// [`State::Closed`]. Flush the write buffer, then drop the transport.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::frame::apply_mask;
    /// use unisocket_proto::{Config, Connection, ProtocolError, State};
    ///
    /// let mut conn = Connection::new(Config::default());
    /// conn.read_buf().extend_from_slice(&[0x81, 0x02, 0xC3, 0x28]); // not UTF-8
    /// let err = conn.poll_event().unwrap_err();
    /// assert_eq!(err, ProtocolError::InvalidUtf8);
    /// conn.fail(&err);
    /// assert_eq!(conn.state(), State::Closed);
    /// // The queued close frame carries code 1007.
    /// let frame = conn.write_buf().split();
    /// let mut code = [frame[6], frame[7]];
    /// apply_mask(&mut code, [frame[2], frame[3], frame[4], frame[5]], 0);
    /// assert_eq!(u16::from_be_bytes(code), 1007);
    /// ```
    pub fn fail(&mut self, e: &ProtocolError) {
        if self.state == State::Open {
            self.encode_close(e.close_code(), b"");
        }
        self.state = State::Closed;
        self.close_deadline = None;
        self.error = Some(e.clone());
        self.read.clear();
        self.large = None;
        self.partial = None;
        self.frame = None;
    }

    /// Whether received messages are delivered: while open, and after our
    /// close frame with [`Config::receive_while_closing`]. Once false, never
    /// true again (the state only moves on).
    fn receiving(&self) -> bool {
        match self.state {
            State::Open => true,
            State::CloseSent => self.config.receive_while_closing,
            State::Closed => false,
        }
    }

    fn decode(&mut self) -> Result<Option<Event>, ProtocolError> {
        loop {
            if self.frame.is_none() {
                let Some((header, len)) = FrameHeader::decode(&self.read, self.deflate.is_some())?
                else {
                    return Ok(None);
                };
                self.check_header(&header)?;
                let _ = self.read.split_to(len);
                // The header check bounds payload_len by max_frame_size (or 125).
                let payload_len = header.payload_len as usize;
                if payload_len >= LARGE_FRAME {
                    self.start_large_frame(len, payload_len);
                } else {
                    self.prepared_read = 0;
                    if self.small_frames < POOL_IDLE_FRAMES {
                        self.small_frames += 1;
                    } else if self.small_frames == POOL_IDLE_FRAMES {
                        self.small_frames += 1;
                        if let Some(pool) = &self.pool {
                            pool.free().clear();
                        }
                    }
                }
                self.frame = Some(CurrentFrame { header, checked: 0 });
            }
            let receiving = self.receiving();
            let Some(frame) = self.frame.as_mut() else {
                return Ok(None);
            };
            let len = frame.header.payload_len as usize;
            let source = match &mut self.large {
                Some(own) => own,
                None => &mut self.read,
            };
            let available = source.len().min(len);
            // Compressed text is checked after inflating, in `on_data`.
            let is_text = match frame.header.opcode {
                OpCode::Text => !frame.header.rsv1,
                OpCode::Continuation => self
                    .partial
                    .as_ref()
                    .is_some_and(|p| p.text && !p.compressed),
                _ => false,
            };
            if is_text && available > frame.checked && receiving {
                self.utf8
                    .feed(&source[frame.checked..available])
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
                frame.checked = available;
            }
            if available < len {
                // Room for the rest, but never more than a step ahead of
                // what came: a frame declared larger than memory (with the
                // limits lifted) fails when memory does, not at its header.
                let rest = len - available;
                if rest <= RESERVE_AHEAD {
                    source.reserve(rest);
                } else if source.capacity() - source.len() < RESERVE_AHEAD / 64 {
                    source.reserve(RESERVE_AHEAD);
                }
                return Ok(None);
            }
            let header = frame.header;
            self.frame = None;
            let pooled = self.large.is_some();
            let payload = match self.large.take() {
                Some(mut own) => {
                    // Bytes past the frame (if the buffer had room for more)
                    // belong to the next frames. Copied, and the buffer
                    // truncated, so that it stays one allocation to reuse.
                    if own.len() > len {
                        self.read.extend_from_slice(&own[len..]);
                        own.truncate(len);
                    }
                    own
                }
                None => self.read.split_to(len),
            };
            if let Some(ev) = self.on_frame(header, payload, pooled)? {
                return Ok(Some(ev));
            }
            if self.state == State::Closed {
                return Ok(None);
            }
        }
    }

    /// The header (`header_len` bytes) of a frame of `payload_len >=
    /// LARGE_FRAME` bytes was just taken from the read buffer: unless the
    /// frame is whole there already, it gets a buffer of its own, which
    /// becomes the message.
    fn start_large_frame(&mut self, header_len: usize, payload_len: usize) {
        self.small_frames = 0;
        // A read of exactly this frame's size ends where the next frame of
        // the same size ends.
        let frame_len = header_len + payload_len;
        self.prepared_read = if frame_len <= PREPARED_READ_MAX {
            frame_len
        } else {
            0
        };
        let pool = self.pool.get_or_insert_with(Default::default);
        let room = self.read.capacity();
        if self.read.len() <= payload_len && room >= payload_len && room <= 2 * payload_len {
            // The read buffer has room for the whole payload, and not much
            // more: it becomes the frame's own, with no copy of what came
            // with the header (reads after the frame's end would be copied).
            self.large = Some(std::mem::take(&mut self.read));
        } else if self.read.len() < payload_len {
            // The shared read buffer stays small, and is not re-allocated
            // while the application still holds earlier messages cut from it.
            // Room for the header too, left empty at the front: once back
            // in the pool, the buffer can be a prepared read buffer.
            let mut own = pool.take(frame_len.min(RESERVE_AHEAD));
            own.resize(header_len, 0);
            own.advance(header_len);
            own.extend_from_slice(&self.read);
            self.read.clear();
            self.large = Some(own);
        }
    }

    fn check_header(&self, h: &FrameHeader) -> Result<(), ProtocolError> {
        if h.mask.is_some() {
            return Err(ProtocolError::MaskedServerFrame);
        }
        let max = self.config.limits.max_frame_size;
        if h.payload_len > max as u64 {
            return Err(ProtocolError::FrameTooLarge {
                size: h.payload_len,
                max,
            });
        }
        if h.rsv1 && h.opcode == OpCode::Continuation {
            return Err(ProtocolError::ReservedBits(0x40));
        }
        match (h.opcode, &self.partial) {
            (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Text | OpCode::Binary, Some(_)) => {
                return Err(ProtocolError::ExpectedContinuation)
            }
            _ => {}
        }
        if !h.opcode.is_control() {
            let so_far = self.partial.as_ref().map_or(0, Partial::len);
            let total = so_far as u64 + h.payload_len;
            let max = self.config.limits.max_message_size;
            // A compressed message is counted on the wire here (inflating
            // has its own check), where a message that does not compress
            // takes a little more room than its size.
            let compressed = h.rsv1 || self.partial.as_ref().is_some_and(|p| p.compressed);
            let wire_max = if compressed { deflate_bound(max) } else { max };
            if total > wire_max as u64 {
                return Err(ProtocolError::MessageTooLarge { size: total, max });
            }
        }
        Ok(())
    }

    /// `pooled`: `payload` is a buffer of the pool, which the message may
    /// keep and give back when dropped.
    fn on_frame(
        &mut self,
        h: FrameHeader,
        payload: BytesMut,
        pooled: bool,
    ) -> Result<Option<Event>, ProtocolError> {
        let closing = self.state != State::Open;
        match h.opcode {
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                self.on_data(h, payload, pooled)
            }
            OpCode::Ping => {
                if closing {
                    return Ok(None);
                }
                self.queue_pong(&payload);
                Ok(Some(Event::Ping(payload.freeze())))
            }
            OpCode::Pong => Ok((!closing).then(|| Event::Pong(payload.freeze()))),
            OpCode::Close => self.on_close_frame(&payload).map(Some),
        }
    }

    /// Returns `payload` to the pool if it is one of the pool's buffers
    /// (`pooled`), once its bytes have been copied out.
    fn give_back(&self, pooled: bool, payload: BytesMut) {
        if let (true, Some(pool)) = (pooled, &self.pool) {
            pool.put(payload);
        }
    }

    fn on_data(
        &mut self,
        h: FrameHeader,
        payload: BytesMut,
        pooled: bool,
    ) -> Result<Option<Event>, ProtocolError> {
        // A whole message in one pooled buffer: it becomes the message.
        let mut whole = None;
        let mut partial = match h.opcode {
            OpCode::Continuation => self
                .partial
                .take()
                .ok_or(ProtocolError::UnexpectedContinuation)?,
            op => Partial {
                text: op == OpCode::Text,
                compressed: h.rsv1,
                buf: BytesMut::new(),
                inflated: Vec::new(),
                wire: 0,
            },
        };
        let open = self.receiving();
        if partial.compressed {
            partial.wire += payload.len();
            if open {
                let deflate = self
                    .deflate
                    .as_mut()
                    .ok_or(ProtocolError::ReservedBits(0x40))?;
                let start = partial.inflated.len();
                let max = self.config.limits.max_message_size;
                deflate.decompress(&payload, h.fin, &mut partial.inflated, max)?;
                if partial.text {
                    self.utf8
                        .feed(&partial.inflated[start..])
                        .map_err(|_| ProtocolError::InvalidUtf8)?;
                }
            }
            self.give_back(pooled, payload);
        } else if partial.buf.is_empty() && pooled && h.fin {
            whole = Some(payload);
        } else if partial.buf.is_empty() {
            partial.buf = payload;
        } else {
            append_within(
                &mut partial.buf,
                &payload,
                self.config.limits.max_message_size,
            );
            self.give_back(pooled, payload);
        }
        if !h.fin {
            self.partial = Some(partial);
            return Ok(None);
        }
        if !open {
            return Ok(None);
        }
        let bytes = if let Some(buf) = whole {
            // A pooled buffer: the pool exists.
            match &self.pool {
                Some(pool) => Bytes::from_owner(Pooled {
                    buf,
                    pool: pool.clone(),
                }),
                None => buf.freeze(),
            }
        } else if partial.compressed {
            Bytes::from(partial.inflated)
        } else {
            partial.buf.freeze()
        };
        if partial.text {
            self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
            #[allow(
                unsafe_code,
                reason = "the bytes were validated as they arrived; no second pass"
            )]
            // SAFETY: `bytes` is the whole message, and every byte of it went
            // through `self.utf8` since the message began: each frame's
            // payload in `decode` as it arrived (the connection is receiving
            // here, so it was receiving for every frame: `receiving` never
            // turns true again once false), or, when
            // compressed, each inflated piece above. The validator accepted
            // them all, and `finish` just checked that the message does not
            // end inside a character.
            let text = unsafe { Text::from_validated(bytes) };
            return Ok(Some(Event::Message(Data::Text(text))));
        }
        Ok(Some(Event::Message(Data::Binary(bytes))))
    }

    fn on_close_frame(&mut self, payload: &[u8]) -> Result<Event, ProtocolError> {
        let (code, reason) = match payload {
            [] => (1005, String::new()),
            [_] => return Err(ProtocolError::InvalidClosePayload),
            [a, b, rest @ ..] => {
                let code = u16::from_be_bytes([*a, *b]);
                if !is_valid_received_code(code) {
                    return Err(ProtocolError::InvalidCloseCode(code));
                }
                let reason = std::str::from_utf8(rest).map_err(|_| ProtocolError::InvalidUtf8)?;
                (code, reason.to_owned())
            }
        };
        if self.state == State::Open {
            // Echo the code, as RFC 6455 section 5.5.1 suggests.
            if code == 1005 {
                self.encode_frame(OpCode::Close, true, b"");
            } else {
                self.encode_close(code, b"");
            }
        }
        self.state = State::Closed;
        self.close_deadline = None;
        self.partial = None;
        self.peer_close = Some(Box::new((code, reason.clone())));
        Ok(Event::Close { code, reason })
    }

    /// Queues a text message.
    ///
    /// # Errors
    /// [`SendError::Closing`] once a close frame has been sent or received.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::{Config, Connection};
    ///
    /// let mut conn = Connection::new(Config::default());
    /// conn.send_text("hi").unwrap();
    /// let frame = conn.write_buf().split();
    /// assert_eq!(frame[..2], [0x81, 0x80 | 2]); // text, masked, 2 bytes
    /// assert_eq!(frame.len(), 2 + 4 + 2);
    /// ```
    pub fn send_text(&mut self, text: &str) -> Result<(), SendError> {
        self.send_message(OpCode::Text, text.as_bytes())
    }

    /// Queues a binary message.
    ///
    /// # Errors
    /// [`SendError::Closing`] once a close frame has been sent or received.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::{Config, Connection};
    ///
    /// let mut conn = Connection::new(Config::default());
    /// conn.send_binary(&[0u8; 200]).unwrap();
    /// let frame = conn.write_buf().split();
    /// // Binary, masked, with the 16-bit length form for 200 bytes.
    /// assert_eq!(frame[..4], [0x82, 0x80 | 126, 0x00, 200]);
    /// ```
    pub fn send_binary(&mut self, data: &[u8]) -> Result<(), SendError> {
        self.send_message(OpCode::Binary, data)
    }

    /// Queues a message of `data`'s kind.
    ///
    /// # Errors
    /// [`SendError::Closing`] once a close frame has been sent or received.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::{Config, Connection, Event};
    ///
    /// let mut conn = Connection::new(Config::default());
    /// conn.read_buf().extend_from_slice(&[0x81, 0x02, b'h', b'i']);
    /// // Echo a message back with the kind it came with.
    /// if let Some(Event::Message(data)) = conn.poll_event().unwrap() {
    ///     conn.send(&data).unwrap();
    /// }
    /// assert_eq!(conn.write_buf()[0], 0x81); // a text frame
    /// ```
    pub fn send(&mut self, data: &Data) -> Result<(), SendError> {
        match data {
            Data::Text(t) => self.send_message(OpCode::Text, t.as_bytes()),
            Data::Binary(b) => self.send_message(OpCode::Binary, b),
        }
    }

    fn send_message(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), SendError> {
        if self.state != State::Open {
            return Err(SendError::Closing);
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        let (payload, rsv1) = match self.deflate.as_mut() {
            Some(deflate) => {
                deflate.compress(payload, &mut scratch);
                if scratch.len() < payload.len() || payload.is_empty() {
                    (&scratch[..], true)
                } else {
                    // It did not shrink (random or already compressed
                    // bytes): sent as it is, which RFC 7692 allows for any
                    // message. The compressor forgets it, since the server's
                    // inflater never sees it.
                    deflate.reset_compressor();
                    (payload, false)
                }
            }
            None => (payload, false),
        };
        match self.config.max_send_frame_size {
            Some(max) if payload.len() > max && max > 0 => {
                let mut chunks = payload.chunks(max).peekable();
                let mut first = true;
                while let Some(chunk) = chunks.next() {
                    let op = if first { opcode } else { OpCode::Continuation };
                    self.encode_frame_rsv(op, chunks.peek().is_none(), rsv1 && first, chunk);
                    first = false;
                }
            }
            _ => self.encode_frame_rsv(opcode, true, rsv1, payload),
        }
        // Keep the buffer for the next message unless it grew large.
        if scratch.capacity() <= 1 << 20 {
            self.scratch = scratch;
        }
        Ok(())
    }

    /// Queues a ping.
    ///
    /// # Errors
    /// [`SendError::PingTooLong`] for a payload over 125 bytes (see
    /// [`check_ping`]), [`SendError::Closing`] once a close frame has been
    /// sent or received.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::{Config, Connection, Event, SendError};
    /// use bytes::Bytes;
    ///
    /// let mut conn = Connection::new(Config::default());
    /// assert_eq!(conn.ping(&[7; 200]), Err(SendError::PingTooLong(200)));
    /// conn.ping(&[7; 125]).unwrap();
    /// assert_eq!(conn.write_buf()[..2], [0x89, 0x80 | 125]);
    /// conn.read_buf().extend_from_slice(&[0x8A, 0x00]); // an empty pong
    /// assert_eq!(conn.poll_event(), Ok(Some(Event::Pong(Bytes::new()))));
    /// ```
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), SendError> {
        check_ping(payload)?;
        if self.state != State::Open {
            return Err(SendError::Closing);
        }
        self.encode_frame(OpCode::Ping, true, payload);
        Ok(())
    }

    /// Starts the close handshake with `code` and `reason`; the peer must
    /// answer by `now + close_timeout`.
    ///
    /// # Errors
    /// [`SendError::InvalidCloseCode`] for a code an endpoint may not send
    /// (see [`is_valid_endpoint_code`]), [`SendError::ReasonTooLong`] for a
    /// reason over 123 bytes,
    /// [`SendError::Closing`] when a close frame was already sent or received.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Instant;
    /// use unisocket_proto::{Config, Connection, Event, State};
    ///
    /// let mut conn = Connection::new(Config::default());
    /// conn.close(4000, "done", Instant::now()).unwrap();
    /// assert_eq!(conn.write_buf()[..2], [0x88, 0x80 | 6]); // code and reason: 6 bytes
    /// assert_eq!(conn.state(), State::CloseSent);
    /// conn.read_buf().extend_from_slice(&[0x88, 0x02, 0x0F, 0xA0]); // the echo, 4000
    /// let event = conn.poll_event().unwrap();
    /// assert_eq!(event, Some(Event::Close { code: 4000, reason: String::new() }));
    /// assert_eq!(conn.state(), State::Closed);
    /// ```
    pub fn close(&mut self, code: u16, reason: &str, now: Instant) -> Result<(), SendError> {
        check_close(code, reason)?;
        if self.state != State::Open {
            return Err(SendError::Closing);
        }
        self.encode_close(code, reason.as_bytes());
        self.state = State::CloseSent;
        self.close_deadline = Some(now + self.config.close_timeout);
        Ok(())
    }

    /// The next instant at which [`Connection::handle_timeout`] must be called.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Instant;
    /// use unisocket_proto::{Config, Connection};
    ///
    /// let mut conn = Connection::new(Config::default());
    /// assert_eq!(conn.poll_timeout(), None); // no heartbeat, nothing to wait for
    /// let now = Instant::now();
    /// conn.close(1000, "", now).unwrap();
    /// assert_eq!(conn.poll_timeout(), Some(now + conn.config().close_timeout));
    /// ```
    pub fn poll_timeout(&self) -> Option<Instant> {
        let hb = &self.heartbeat;
        let heartbeat = if self.state == State::Open && !hb.failed {
            [hb.next_ping, hb.deadline].into_iter().flatten().min()
        } else {
            None
        };
        [self.close_deadline, heartbeat].into_iter().flatten().min()
    }

    /// Advances time: a close handshake whose deadline has passed ends; the
    /// heartbeat sends its pings and notices a silent peer. Call it once
    /// right after creating the connection to start the heartbeat clock.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use unisocket_proto::{Config, Connection, Heartbeat};
    ///
    /// let heartbeat = Heartbeat {
    ///     interval: Duration::from_secs(30),
    ///     timeout: Duration::from_secs(10),
    /// };
    /// let mut conn = Connection::new(Config { heartbeat: Some(heartbeat), ..Config::default() });
    /// let start = Instant::now();
    /// conn.handle_timeout(start);
    /// let ping_at = conn.poll_timeout().unwrap();
    /// conn.handle_timeout(ping_at);
    /// assert_eq!(conn.write_buf()[0], 0x89); // a ping
    /// // Now the peer has until the ping deadline to send something.
    /// assert_eq!(conn.poll_timeout(), Some(ping_at + heartbeat.timeout));
    /// ```
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(deadline) = self.close_deadline {
            if now >= deadline {
                self.close_deadline = None;
                self.state = State::Closed;
                self.timed_out = true;
            }
        }
        let Some(hb) = self.config.heartbeat else {
            return;
        };
        if self.state != State::Open || self.heartbeat.failed {
            return;
        }
        if self.heartbeat.deadline.is_some_and(|d| now >= d) {
            // Nothing arrived in time: the peer (or the path to it) is gone.
            // No close frame: nobody would read it.
            self.heartbeat.failed = true;
            self.heartbeat.deadline = None;
            self.state = State::Closed;
            return;
        }
        match self.heartbeat.next_ping {
            None => self.heartbeat.next_ping = Some(now + hb.interval),
            Some(at) if now >= at => {
                self.heartbeat.sent += 1;
                let payload = self.heartbeat.sent.to_be_bytes();
                self.encode_frame(OpCode::Ping, true, &payload);
                self.heartbeat.next_ping = Some(now + hb.interval);
                if self.heartbeat.deadline.is_none() {
                    self.heartbeat.deadline = Some(now + hb.timeout);
                }
            }
            Some(_) => {}
        }
    }

    /// Bytes arrived from the peer: the heartbeat's pending deadline is met
    /// (any frame counts, not only a pong).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use unisocket_proto::{Config, Connection, Heartbeat, State};
    ///
    /// let heartbeat = Heartbeat {
    ///     interval: Duration::from_secs(30),
    ///     timeout: Duration::from_secs(10),
    /// };
    /// let mut conn = Connection::new(Config { heartbeat: Some(heartbeat), ..Config::default() });
    /// let start = Instant::now();
    /// conn.handle_timeout(start);
    /// conn.handle_timeout(start + heartbeat.interval); // sends a ping
    /// // Some bytes arrive in time, whatever they are.
    /// conn.read_buf().extend_from_slice(&[0x8A, 0x00]);
    /// conn.handle_activity();
    /// conn.handle_timeout(start + heartbeat.interval + heartbeat.timeout);
    /// assert_eq!(conn.state(), State::Open);
    /// ```
    pub fn handle_activity(&mut self) {
        self.heartbeat.deadline = None;
    }

    /// Whether a heartbeat ping waits for the peer's answer (any bytes):
    /// the caller should then read whatever arrives, and tell
    /// [`Connection::handle_activity`].
    pub fn heartbeat_waiting(&self) -> bool {
        self.heartbeat.deadline.is_some()
    }

    /// When the heartbeat found the peer silent, the timeout that passed.
    /// The connection is then [`State::Closed`] without a close frame: report
    /// close code 1006.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use unisocket_proto::{Config, Connection, Heartbeat, State};
    ///
    /// let heartbeat = Heartbeat {
    ///     interval: Duration::from_secs(30),
    ///     timeout: Duration::from_secs(10),
    /// };
    /// let mut conn = Connection::new(Config { heartbeat: Some(heartbeat), ..Config::default() });
    /// let start = Instant::now();
    /// conn.handle_timeout(start);
    /// conn.handle_timeout(start + heartbeat.interval); // sends a ping
    /// assert_eq!(conn.heartbeat_failed(), None);
    /// // Nothing arrives before the deadline.
    /// conn.handle_timeout(start + heartbeat.interval + heartbeat.timeout);
    /// assert_eq!(conn.heartbeat_failed(), Some(heartbeat.timeout));
    /// assert_eq!(conn.state(), State::Closed);
    /// ```
    pub fn heartbeat_failed(&self) -> Option<Duration> {
        match self.config.heartbeat {
            Some(hb) if self.heartbeat.failed => Some(hb.timeout),
            _ => None,
        }
    }

    /// The peer closed the transport: the connection is closed, whatever
    /// state it was in.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Instant;
    /// use unisocket_proto::{Config, Connection, State};
    ///
    /// let mut conn = Connection::new(Config::default());
    /// conn.close(1000, "", Instant::now()).unwrap();
    /// // The transport ends before the server's close frame.
    /// conn.handle_eof();
    /// assert_eq!(conn.state(), State::Closed);
    /// assert_eq!(conn.poll_timeout(), None);
    /// assert!(!conn.timed_out());
    /// ```
    pub fn handle_eof(&mut self) {
        self.state = State::Closed;
        self.close_deadline = None;
    }

    fn encode_close(&mut self, code: u16, reason: &[u8]) {
        // Nothing follows a close frame: a ping still waiting for its pong
        // goes unanswered (as do pings that come while closing); the pong
        // in the buffer answered an earlier one.
        self.next_pong = None;
        let mut payload = [0u8; 125];
        payload[..2].copy_from_slice(&code.to_be_bytes());
        let n = reason.len().min(123);
        payload[2..2 + n].copy_from_slice(&reason[..n]);
        self.encode_frame(OpCode::Close, true, &payload[..2 + n]);
    }

    fn encode_frame(&mut self, opcode: OpCode, fin: bool, payload: &[u8]) {
        self.encode_frame_rsv(opcode, fin, false, payload);
    }

    fn encode_frame_rsv(&mut self, opcode: OpCode, fin: bool, rsv1: bool, payload: &[u8]) {
        // A pong that waited for the one before it to leave goes first.
        self.release_next_pong();
        self.push_frame(opcode, fin, rsv1, payload);
    }

    /// Appends one masked frame to the write buffer.
    fn push_frame(&mut self, opcode: OpCode, fin: bool, rsv1: bool, payload: &[u8]) {
        let before = self.write.len();
        // One 32-bit draw from the thread's CSPRNG (ChaCha), not four byte draws.
        let mask = rand::random::<u32>().to_ne_bytes();
        let header = FrameHeader {
            fin,
            rsv1,
            opcode,
            mask: Some(mask),
            payload_len: payload.len() as u64,
        };
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut head);
        self.write.reserve(n + payload.len());
        self.write.extend_from_slice(&head[..n]);
        extend_masked(&mut self.write, payload, mask);
        self.queued += (self.write.len() - before) as u64;
    }

    /// How many bytes the caller has taken from the front of the write
    /// buffer so far.
    fn taken(&self) -> u64 {
        self.queued.saturating_sub(self.write.len() as u64)
    }

    /// The last pong queued, if none of its bytes has been taken yet: it
    /// still waits whole in the write buffer.
    fn waiting_pong(&self) -> Option<QueuedPong> {
        self.pong.filter(|p| p.start >= self.taken())
    }

    /// Answers a ping with `payload`, keeping at most [`WAITING_PONGS`]
    /// pongs waiting in the write buffer (RFC 6455 section 5.5.3: an
    /// endpoint may answer only the most recent of several pings). Without
    /// this, a server that sends pings and never reads would make the
    /// buffer grow by a pong per ping for as long as it likes.
    ///
    /// While fewer wait, the ping gets a pong of its own. Once that many
    /// wait and the last one still waits whole in the buffer, the new one
    /// takes its place, so that every frame queued after it stays at its
    /// stream offset (the driver counts sends done by those offsets):
    /// - the pong is the last frame queued: it is cut off, and the new pong
    ///   appended where it began;
    /// - the new pong has the same length: it is written over the old one;
    /// - otherwise the payload waits in `next_pong`, replacing any older
    ///   one there, and is queued as soon as the caller starts taking the
    ///   old pong (the next [`Connection::write_buf`] or frame queued).
    ///
    /// A pong the caller has started taking is on its way: the next ping
    /// gets a pong of its own, after whatever is queued.
    fn queue_pong(&mut self, payload: &[u8]) {
        let taken = self.taken();
        // Pongs the caller has started taking no longer wait.
        self.pong_starts.retain(|&s| s >= taken);
        if self.pong_starts.len() < WAITING_PONGS {
            // Room for an answer of its own; a pong that waited behind the
            // last one answers an older ping, and this one is newer.
            self.next_pong = None;
            self.append_pong(payload);
            return;
        }
        let Some(old) = self.waiting_pong() else {
            // This ping is newer than one still waiting for its pong.
            self.next_pong = None;
            self.append_pong(payload);
            return;
        };
        let at = (old.start - self.taken()) as usize;
        if old.start + old.len as u64 == self.queued {
            self.write.truncate(at);
            self.queued = old.start;
            self.pong_starts.pop();
            self.next_pong = None;
            self.append_pong(payload);
        } else if pong_len(payload.len()) == old.len {
            let mut frame = [0u8; MAX_PONG];
            let n = encode_pong(payload, &mut frame);
            self.write[at..at + n].copy_from_slice(&frame[..n]);
            self.next_pong = None;
        } else {
            self.next_pong = Some(payload.into());
        }
    }

    /// Appends a pong for `payload` and remembers where it is.
    fn append_pong(&mut self, payload: &[u8]) {
        let start = self.queued;
        self.push_frame(OpCode::Pong, true, false, payload);
        self.pong_starts.push(start);
        self.pong = Some(QueuedPong {
            start,
            len: (self.queued - start) as usize,
        });
    }

    /// Queues the pong of `next_pong` once the pong it waits behind has
    /// started to leave the write buffer.
    fn release_next_pong(&mut self) {
        if self.next_pong.is_some() && self.waiting_pong().is_none() {
            if let Some(payload) = self.next_pong.take() {
                self.append_pong(&payload);
            }
        }
    }
}

/// The largest client pong frame: 2 header bytes, the mask key, 125
/// payload bytes.
pub const MAX_PONG: usize = 2 + 4 + 125;

/// The length of a client pong frame with `payload_len` bytes of payload
/// (at most 125): header, mask key and payload.
fn pong_len(payload_len: usize) -> usize {
    2 + 4 + payload_len
}

/// Encodes a masked pong for `payload` (at most 125 bytes: a ping's) into
/// `out`; returns its length.
fn encode_pong(payload: &[u8], out: &mut [u8; MAX_PONG]) -> usize {
    let mask = rand::random::<u32>().to_ne_bytes();
    let header = FrameHeader {
        fin: true,
        rsv1: false,
        opcode: OpCode::Pong,
        mask: Some(mask),
        payload_len: payload.len() as u64,
    };
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = header.encode(&mut head);
    out[..n].copy_from_slice(&head[..n]);
    let end = n + payload.len();
    out[n..end].copy_from_slice(payload);
    apply_mask(&mut out[n..end], mask, 0);
    end
}
