//! The one tokio task per connection: it opens the connection, then drives
//! [`proto::Connection`](crate::proto::Connection) over the transport (read
//! loop, write queue, close deadline) and reports to the shared task state.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Sleep;

use crate::attempt::{
    end_during_backoff, take_abort, wait_backoff, wait_for_abort, Abort, Early, EndGuard, Ended,
};
use crate::connect::Target;
use crate::data::Data;
use crate::error::{Api, ErrorKind, SocketError};
use crate::events::{CloseEvent, Headers, OpenEvent, PingPongEvent, Profile};
use crate::options::{CloseSuccess, SendSuccess};
use crate::proto::connection::{MAX_PONG, WAITING_PONGS};
use crate::proto::deflate::{DeflateConfig, DeflateParams};
use crate::proto::{self, handshake, Connection, Ending, Event, HandshakeError, State};
use crate::reconnect::ReconnectPolicy;
use crate::task::{Command, Reply, Shared};
use crate::transport;

mod buffers;

use buffers::{take_spare, Buffers, MAX_READ, QUIET_QUEUE, SPARE_READS, SPARE_WRITES};

/// Everything the driver needs to open and run one connection.
pub(crate) struct Params {
    pub target: Target,
    pub headers: Vec<(String, String)>,
    pub protocols: Vec<String>,
    pub timeout: Duration,
    pub no_delay: bool,
    /// Proxy and TLS, settled by `connect_socket`.
    pub route: transport::Route,
    pub config: proto::Config,
    /// The permessage-deflate offer, if compression was asked for.
    pub deflate: Option<DeflateConfig>,
    /// Whether and how to reconnect after the connection is lost.
    pub reconnect: Option<ReconnectPolicy>,
    /// Whether sends made before open wait for it (else they fail).
    pub queue_until_open: bool,
    /// The bound of the queue of sends made before open.
    pub max_queued_bytes: usize,
    pub started: Instant,
}

struct Opened<S> {
    io: S,
    response: handshake::Response,
    deflate: Option<DeflateParams>,
    leftover: BytesMut,
    profile: Profile,
}

/// Runs a connection from start to end.
///
/// The future lives as long as the connection, once per task, so it is kept
/// small: `params` comes boxed (an `async fn` keeps its arguments twice), the
/// opened connection is boxed until the driver takes it, and without a
/// reconnect policy the parameters are dropped once the connection is open.
pub(crate) async fn run(shared: Arc<Shared>, mut params: Box<Params>) {
    let _guard = EndGuard {
        shared: shared.clone(),
        stopped: "the connection task stopped: its tokio runtime shut down, or lacks the time and I/O drivers",
    };
    let mut early = Early::new(params.queue_until_open, params.max_queued_bytes);
    let reconnect = params.reconnect.take();
    let mut params = Some(params);
    let mut attempt: u32 = 0;
    while let Some(p) = params.as_deref() {
        let timeout = p.timeout;
        // Boxed: the opening state lives only while connecting, not in every
        // connection's task for its whole life.
        let opening = Box::pin(tokio::time::timeout(timeout, open(p)));
        let mut outcome = tokio::select! {
            r = opening => r.unwrap_or_else(|_| Err(SocketError::new(
                Api::ConnectSocket,
                ErrorKind::Timeout,
                format_args!("timed out after {} ms", timeout.as_millis()),
            ))).map_err(Abort::Failed),
            abort = wait_for_abort(&shared, &mut early) => Err(abort),
        };
        // A `close` came while the handshake completed: the connection is
        // abandoned, as a browser abandons it, without an open.
        // (In place: a second binding would take room in every task's
        // future.)
        if outcome.is_ok() && !shared.begin_open() {
            outcome = Err(take_abort(&shared, &mut early));
        }
        let ended = match outcome {
            Err(abort) => Ended::unopened(&shared, abort),
            Ok(opened) => {
                attempt = 0;
                let mut driver = Driver::open(&shared, p, *opened);
                if reconnect.is_none() {
                    // Nothing will open this connection again.
                    params = None;
                }
                for cmd in early.drain() {
                    driver.command(cmd);
                }
                early.shrink();
                // Frames that came in the same read as the handshake response.
                driver.process_events();
                let result = poll_fn(|cx| driver.poll(cx)).await;
                // Boxed: the lingering close lives only at the end.
                let close = Box::pin(driver.end(result)).await;
                Ended::closed(close, driver.close_replies)
            }
        };
        if let Some(delay) = ended.reconnect_delay(&shared, reconnect.as_ref(), &mut attempt) {
            // Boxed, as the opening: a state of the waits only.
            let backoff = Box::pin(wait_backoff(&shared, &mut early, tokio::time::sleep(delay)));
            match backoff.await {
                None => continue,
                Some(abort) => return end_during_backoff(&shared, &mut early, abort),
            }
        }
        return ended.end_task(&shared, &mut early);
    }
}

/// The driver's clock, for the protocol's deadlines: tokio's, which is the
/// system's monotonic clock, and a paused one in tests that move time
/// themselves (`tests/timers.rs`): the deadlines the core is given and the
/// sleeps that wait for them then agree.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

async fn open(params: &Params) -> Result<Box<Opened<transport::Stream>>, SocketError> {
    let t = &params.target;
    let est = transport::connect(&t.host, t.port, &params.route, params.no_delay).await?;
    let mut io = est.stream;
    let hs_start = Instant::now();
    let key = handshake::generate_key();
    let offer = params.deflate.map(|d| d.offer());
    let request = handshake::Request {
        host: &t.host_header,
        target: &t.request_target,
        key: &key,
        protocols: &params.protocols,
        extensions: offer.as_deref(),
        headers: &params.headers,
    };
    io.write_all(&request.encode())
        .await
        .map_err(|e| io_failure("cannot send the handshake", e))?;
    let max = params.config.limits.max_handshake_response;
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if let Some((response, n)) = handshake::parse_response(&buf, &key, &params.protocols, max)
            .map_err(SocketError::handshake)?
        {
            let deflate = match (&params.deflate, &response.extensions) {
                (Some(offer), answer) => offer
                    .negotiate(answer.as_deref())
                    .map_err(SocketError::handshake)?,
                (None, Some(ext)) => {
                    return Err(SocketError::handshake(HandshakeError::UnexpectedExtension(
                        ext.clone(),
                    )))
                }
                (None, None) => None,
            };
            buf.advance(n);
            return Ok(Box::new(Opened {
                io,
                response,
                deflate,
                leftover: buf,
                profile: Profile {
                    dns: est.dns,
                    connect: est.connect,
                    tls: est.tls,
                    handshake: hs_start.elapsed(),
                    total: Duration::ZERO,
                },
            }));
        }
        buf.reserve(1024);
        let n = io
            .read_buf(&mut buf)
            .await
            .map_err(|e| io_failure("cannot read the handshake response", e))?;
        if n == 0 {
            return Err(SocketError::handshake(HandshakeError::Incomplete));
        }
    }
}

fn io_failure(what: &str, e: std::io::Error) -> SocketError {
    // With TLS 1.3 a server that refuses our client certificate says so
    // only after the handshake, with an alert read here.
    let (kind, layer) = if transport::is_tls_error(&e) {
        (ErrorKind::Tls, "TLS error: ")
    } else {
        (ErrorKind::Io, "")
    };
    SocketError::new(Api::ConnectSocket, kind, format_args!("{what}: {layer}{e}")).with_source(e)
}

/// How the open phase ended.
enum End {
    /// The protocol reached [`State::Closed`] and everything was written.
    Closed,
    /// The peer is gone or stopped reading (heartbeat failure, close
    /// timeout, flush deadline): drop the transport without lingering.
    Abandoned,
    /// The transport failed.
    Io(std::io::Error),
}

struct Driver<S> {
    io: S,
    conn: Connection,
    shared: Arc<Shared>,
    /// Bytes taken from the connection's write buffer and being written.
    out: BytesMut,
    /// Total bytes ever moved into `out`.
    moved: u64,
    /// Total bytes ever written to the transport.
    written: u64,
    /// Sends waiting for their last byte (a stream offset) to be written.
    sends: VecDeque<(u64, Reply<SendSuccess>)>,
    close_replies: Vec<Reply<CloseSuccess>>,
    sleep: Option<Pin<Box<Sleep>>>,
    /// A protocol error found while messages before it are still held: the
    /// connection fails once they are consumed, so that the application can
    /// still answer them (as a pull-based client would).
    pending_failure: Option<proto::ProtocolError>,
    eof: bool,
    /// Once the protocol is closed, how long the last bytes may take to
    /// leave; a peer that stopped reading must not hold the task open.
    flush_deadline: Option<Instant>,
    /// Messages of the current read, handed to the task together.
    batch: Vec<Data>,
    /// The read buffer may hold more whole events than the last turn took.
    more_events: bool,
    /// Buffer sizes and the clock for giving grown buffers back (see
    /// `buffers.rs`, where the memory policy lives).
    mem: Buffers,
}

// How the driver takes turns between the handles, the socket and the
// application. The measurements behind each value are in
// `benches/README.md` ("Driver constants").

/// Commands one wake-up takes before it writes: sends are batched, and the
/// socket still gets data early.
const COMMAND_BATCH: usize = 64;
/// Bytes of frames encoded ahead of the socket: small messages go out in
/// one write, and the buffer stays in the CPU's cache.
const WRITE_AHEAD: usize = 16 * 1024;
/// Messages one turn hands to the application before the driver writes its
/// answers: both ends work at once instead of in turn.
const DELIVER_MESSAGES: usize = 16;
/// Bytes of messages one turn hands over (see [`DELIVER_MESSAGES`]).
const DELIVER_BYTES: usize = 16 * 1024;
/// Bytes read in a row, while reads fill their buffer, before writing
/// again: large messages are read in runs and answered in runs.
const READ_BURST: usize = 1024 * 1024;
/// Bytes of the connection's own frames (pongs, close, heartbeat pings)
/// that may wait unwritten before reading pauses: a peer that makes us
/// answer and never reads cannot keep us reading. Below what the waiting
/// pongs reach, so that a ping flood at a peer that does not read pauses
/// reading (`tests/hostile.rs`).
const WRITE_BACKLOG_MAX: usize = 2 * 1024;
const _: () = assert!(WRITE_BACKLOG_MAX < WAITING_PONGS * MAX_PONG);

impl Driver<transport::Stream> {
    /// The driver of a connection that just opened; reports the open.
    fn open(shared: &Arc<Shared>, params: &Params, opened: Opened<transport::Stream>) -> Self {
        let mut conn = Connection::new(proto::Config {
            deflate: opened.deflate,
            ..params.config.clone()
        });
        conn.read_buf().extend_from_slice(&opened.leftover);
        // Starts the heartbeat clock.
        conn.handle_timeout(now());
        let mut profile = opened.profile;
        profile.total = params.started.elapsed();
        shared.opened(OpenEvent {
            header: Headers::new(&opened.response.headers),
            protocol: opened.response.protocol.unwrap_or_default(),
            profile,
        });
        Driver {
            io: opened.io,
            conn,
            shared: shared.clone(),
            out: BytesMut::new(),
            moved: 0,
            written: 0,
            sends: VecDeque::new(),
            close_replies: Vec::new(),
            sleep: None,
            pending_failure: None,
            eof: false,
            flush_deadline: None,
            batch: Vec::new(),
            more_events: false,
            mem: Buffers::new(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + transport::RecvLowWater> Driver<S> {
    fn command(&mut self, cmd: Command) {
        take_spare(&SPARE_WRITES, self.conn.write_buf());
        match cmd {
            Command::Send { data, reply } => match self.conn.send(&data) {
                Ok(()) => {
                    let end = self.moved + self.conn.write_buf().len() as u64;
                    self.sends.push_back((end, reply));
                }
                Err(_) => reply.settle(Err(SocketError::closing(Api::SendSocketMessage))),
            },
            Command::Ping { payload, reply } => match self.conn.ping(&payload) {
                Ok(()) => reply.settle(Ok(())),
                Err(_) => reply.settle(Err(SocketError::not_connected(Api::SendSocketMessage))),
            },
            Command::Close {
                code,
                reason,
                reply,
            } => {
                if self.pending_failure.is_some() {
                    // The server already broke the protocol (behind a message
                    // nobody took yet): report that, with its close code,
                    // rather than closing as if all were well.
                    self.fail_pending();
                } else if self.conn.state() == State::Open
                    && self.conn.close(code, &reason, now()).is_ok()
                {
                    self.shared.set_closing();
                }
                self.close_replies.push(reply);
            }
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        let end = std::task::ready!(self.poll_turns(cx));
        if let End::Io(_) = end {
            // The transport failed (a write, say, after the server left):
            // what was read before still goes to the application.
            self.deliver_the_rest();
        }
        Poll::Ready(end)
    }

    /// The driver's turns, until the connection ends or must wait: each
    /// takes the handles' commands, writes, ends the connection if it is
    /// over, reads (or delivers what an earlier read left), and keeps the
    /// protocol's deadlines.
    fn poll_turns(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        loop {
            let mut progress = self.take_commands(cx);
            match self.write(cx) {
                Ok(wrote) => progress |= wrote,
                Err(e) => return Poll::Ready(End::Io(e)),
            }
            if self.fail_after_held_messages(cx) {
                continue;
            }
            if let Some(end) = self.ended() {
                return Poll::Ready(end);
            }
            let (read, yield_to_app) = match self.read_or_deliver(cx) {
                Ok(turn) => turn,
                Err(e) => return Poll::Ready(End::Io(e)),
            };
            progress |= read;
            if !progress && !yield_to_app {
                self.start_release_clock();
            }
            progress |= self.poll_deadlines(cx);
            if yield_to_app {
                // Let the application take the messages (and answer them)
                // before the next turn writes and delivers the rest.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if !progress {
                self.give_back_buffers();
                return Poll::Pending;
            }
        }
    }

    /// Takes commands from the handles, up to [`COMMAND_BATCH`], while the
    /// connection's write buffer has room ([`WRITE_AHEAD`]; a `close` is
    /// taken regardless). Says whether it took any.
    fn take_commands(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        for taken in 0..COMMAND_BATCH {
            if self.conn.write_buf().len() >= WRITE_AHEAD && !self.shared.close_queued(cx) {
                // Taken once these bytes are written (the write makes
                // progress, or wakes the task when it can).
                break;
            }
            match self.shared.poll_command(cx) {
                Poll::Ready(cmd) => {
                    self.command(cmd);
                    self.mem.burst |= taken == QUIET_QUEUE;
                    progress = true;
                }
                Poll::Pending => break,
            }
        }
        progress
    }

    /// Writes what the connection queued until the transport would block;
    /// settles the sends whose last byte went out. Says whether it wrote.
    fn write(&mut self, cx: &mut Context<'_>) -> std::io::Result<bool> {
        let mut progress = false;
        loop {
            if self.out.is_empty() {
                if self.conn.write_buf().is_empty() {
                    // TLS may hold records the socket did not take yet.
                    if let Poll::Ready(Err(e)) = Pin::new(&mut self.io).poll_flush(cx) {
                        return Err(e);
                    }
                    return Ok(progress);
                }
                self.take_output();
            }
            match Pin::new(&mut self.io).poll_write(cx, &self.out) {
                Poll::Ready(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    self.out.advance(n);
                    self.written += n as u64;
                    self.mem.activity += 1;
                    self.settle_written();
                    progress = true;
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(progress),
            }
        }
    }

    /// Fails the connection for the protocol error found behind messages
    /// that were held, once the application has taken them. Says whether
    /// it did (the turn starts again, to write the close frame).
    fn fail_after_held_messages(&mut self, cx: &mut Context<'_>) -> bool {
        self.pending_failure.is_some() && self.shared.held_empty(cx) && self.fail_pending()
    }

    /// Fails the connection for the protocol error waiting behind held
    /// messages, if there is one (its close frame is queued; the error is
    /// the connection's `ending`). Says whether there was.
    fn fail_pending(&mut self) -> bool {
        let Some(e) = self.pending_failure.take() else {
            return false;
        };
        self.conn.fail(&e);
        self.shared.set_closing();
        true
    }

    /// How the connection ends, if it does now: the heartbeat found the
    /// peer gone, or the protocol is closed and its last bytes were written
    /// (or may no longer be: the close or flush deadline passed).
    fn ended(&mut self) -> Option<End> {
        if self.conn.heartbeat_failed().is_some() {
            self.shared.set_closing();
            // The peer is gone: nothing more will be written to it.
            return Some(End::Abandoned);
        }
        if self.conn.state() != State::Closed {
            return None;
        }
        let flushed = self.out.is_empty() && self.conn.write_buf().is_empty();
        let deadline = *self
            .flush_deadline
            .get_or_insert_with(|| now() + self.conn.config().close_timeout);
        if self.conn.timed_out() || (!flushed && now() >= deadline) {
            return Some(End::Abandoned);
        }
        flushed.then_some(End::Closed)
    }

    /// Delivers the rest of an earlier read, or reads, while the
    /// application has room for more and the output is not backed up (see
    /// [`Driver::write_backlog_full`]; the write wakes the task as it
    /// drains). Says whether it made progress and whether to yield to the
    /// application (see [`Driver::process_events`]).
    fn read_or_deliver(&mut self, cx: &mut Context<'_>) -> std::io::Result<(bool, bool)> {
        if self.conn.state() == State::Closed {
            Ok((false, false))
        } else if self.more_events && !self.shared.held_full(cx) {
            Ok((true, self.process_events()))
        } else if !self.eof
            && self.pending_failure.is_none()
            && !self.shared.held_full(cx)
            && !self.write_backlog_full()
        {
            self.read(cx)
        } else {
            Ok((false, false))
        }
    }

    /// Keeps the protocol's deadlines (close handshake, heartbeat), the
    /// flush deadline and the release of grown buffers: sleeps until the
    /// earliest, and handles it once it has passed. Says whether one did.
    fn poll_deadlines(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = [
            self.conn.poll_timeout(),
            self.flush_deadline,
            self.mem.release_at.map(|(at, _)| at),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(deadline) = deadline else {
            return false;
        };
        let deadline = tokio::time::Instant::from_std(deadline);
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        if sleep.as_mut().poll(cx).is_pending() {
            return false;
        }
        let now = now();
        self.conn.handle_timeout(now);
        if let Some((at, seen)) = self.mem.release_at {
            if now >= at {
                // Idle all along: give them back. Otherwise the clock starts
                // again at the next wait.
                self.mem.release_at = None;
                if self.mem.activity == seen {
                    self.release_grown_buffers();
                }
            }
        }
        // A ping may have gone out: lowering the mark wakes the reader for
        // what already came.
        self.set_low_water();
        true
    }

    /// Reads and hands over what the socket has. While reads fill their
    /// buffer (more is waiting), it reads on, up to [`READ_BURST`] bytes,
    /// before the driver takes commands and writes again. Says whether it
    /// made progress, and whether the driver should yield to the
    /// application (see [`Driver::process_events`]).
    fn read(&mut self, cx: &mut Context<'_>) -> std::io::Result<(bool, bool)> {
        let (mut progress, mut yield_to_app, mut burst) = (false, false, 0);
        loop {
            let hint = self.mem.read_hint();
            let large = self.conn.receiving_large_frame();
            let buf = self.conn.read_buf();
            take_spare(&SPARE_READS, buf);
            if !large && buf.capacity() - buf.len() < hint / 2 {
                // Large frames reserve their whole length in the codec;
                // this only sizes reads of small traffic.
                buf.reserve(hint);
            }
            let spare = buf.capacity() - buf.len();
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, self.conn.read_buf()) {
                Poll::Ready(Ok(0)) => {
                    yield_to_app |= self.deliver_the_rest();
                    self.eof = true;
                    self.conn.handle_eof();
                    return Ok((true, yield_to_app));
                }
                Poll::Ready(Ok(n)) => {
                    self.mem.activity += 1;
                    self.conn.handle_activity();
                    self.adapt_read_size(n, spare);

                    yield_to_app |= self.process_events();
                    self.set_low_water();
                    progress = true;
                    burst += n;
                    if n < spare
                        || burst >= READ_BURST
                        // Messages wait for their turn: read on only while
                        // they fit in about one read, so that the buffer
                        // does not grow past what the held limit allows.
                        || (self.more_events && self.conn.current_read_buf().len() >= MAX_READ)
                        || self.conn.state() != State::Open
                        || self.pending_failure.is_some()
                        || self.shared.held_full(cx)
                        || self.write_backlog_full()
                    {
                        return Ok((progress, yield_to_app));
                    }
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok((progress, yield_to_app)),
            }
        }
    }

    /// Whether more than [`WRITE_BACKLOG_MAX`] bytes that no send of the
    /// application asked for wait to be written to the socket (taken for
    /// writing or still in the connection's write buffer): reading then
    /// pauses until the peer takes some, so that what reading makes us
    /// write cannot pile up behind a peer that does not read.
    ///
    /// Counted from the end of the last send not yet written: the bytes
    /// queued after it are the connection's own. The application's messages
    /// are left out on purpose: sends have their own limit
    /// (`max_buffered_bytes`), and pausing reads behind them deadlocks with
    /// servers that stop reading while they write, as simple echo servers
    /// do (`tests/support`'s, `unisocket serve`): four 8 MiB messages sent
    /// at once to the test echo server never came back when reads paused
    /// over 1 MiB of any output.
    fn write_backlog_full(&self) -> bool {
        let queued = self.moved + self.conn.unwritten() as u64;
        let sent = self.sends.back().map_or(0, |(end, _)| *end);
        queued.saturating_sub(sent.max(self.written)) > WRITE_BACKLOG_MAX as u64
    }

    /// Hands over every whole message still in the read buffer, when the
    /// stream ended or failed: they came before the end (a burst reads on
    /// while some wait for their turn), so they are delivered first. A
    /// protocol error found among them is what ends the connection.
    fn deliver_the_rest(&mut self) -> bool {
        let mut yield_to_app = false;
        while self.more_events {
            yield_to_app |= self.process_events();
        }
        self.fail_pending();
        yield_to_app
    }

    /// Decodes and hands over one turn's messages; says whether the driver
    /// should yield so that the application can take them (they were held
    /// for `recv` and the read buffer has more). Listeners have run by now,
    /// and their sends are written before the next turn.
    fn process_events(&mut self) -> bool {
        let mut batch = std::mem::take(&mut self.batch);
        self.decode_into(&mut batch);
        self.mem.burst |= batch.len() > QUIET_QUEUE;
        let held = self.shared.messages(&mut batch);
        self.batch = batch;
        held && self.more_events
    }

    /// Decodes the whole events in the read buffer, up to one turn's worth
    /// of messages ([`DELIVER_MESSAGES`], [`DELIVER_BYTES`]); they are
    /// gathered in `batch` and handed over together.
    fn decode_into(&mut self, batch: &mut Vec<Data>) {
        self.more_events = false;
        let mut bytes = 0;
        loop {
            if batch.len() >= DELIVER_MESSAGES || bytes >= DELIVER_BYTES {
                self.more_events = true;
                return;
            }
            match self.conn.poll_event() {
                Ok(Some(Event::Message(data))) => {
                    bytes += data.len();
                    batch.push(data);
                }
                Ok(Some(Event::Ping(p))) => {
                    // Keep the order: messages before this ping go first.
                    self.shared.messages(batch);
                    self.shared.ping_pong(PingPongEvent::Ping(p));
                }
                Ok(Some(Event::Pong(p))) => {
                    self.shared.messages(batch);
                    self.shared.ping_pong(PingPongEvent::Pong(p));
                }
                Ok(Some(Event::Close { .. })) => {
                    // How it closed is the connection's `ending`.
                    self.shared.set_closing();
                }
                Ok(None) => return,
                Err(e) => {
                    self.pending_failure = Some(e);
                    return;
                }
            }
        }
    }

    fn settle_written(&mut self) {
        while let Some((end, _)) = self.sends.front() {
            if *end > self.written {
                break;
            }
            if let Some((_, reply)) = self.sends.pop_front() {
                reply.succeed(SendSuccess::ok);
            }
        }
    }

    /// After the protocol is done: linger for the server's TCP close, then
    /// settle every outstanding call and say how the connection closed.
    async fn end(&mut self, result: End) -> CloseEvent {
        let close_timeout = self.conn.config().close_timeout;
        let io_error = match result {
            End::Closed => {
                if !self.eof {
                    let io = &mut self.io;
                    let _ = tokio::time::timeout(close_timeout, async {
                        let _ = io.shutdown().await;
                        // On the heap, and only while lingering: in the
                        // future, an array would cost every task 4 KiB.
                        let mut scratch = vec![0u8; 4096];
                        while matches!(io.read(&mut scratch).await, Ok(n) if n > 0) {}
                    })
                    .await;
                }
                None
            }
            End::Abandoned => None,
            End::Io(e) => Some(e),
        };
        let lost = |err: SocketError| {
            let close = CloseEvent {
                code: err.close_code().unwrap_or(1006),
                reason: err.reason().to_owned(),
                was_clean: false,
            };
            (close, Some(err))
        };
        // Why it ended, as the connection saw it; an I/O error counts after
        // a failure and a clean close, which it may have followed.
        let (close, error) = match (self.conn.ending(), io_error) {
            (Some(Ending::Failed(e)), _) => lost(SocketError::protocol(e)),
            (Some(Ending::HeartbeatTimedOut(timeout)), _) => lost(SocketError::new(
                Api::ConnectSocket,
                ErrorKind::HeartbeatTimeout,
                format_args!("no pong within {} ms", timeout.as_millis()),
            )),
            (Some(Ending::Closed { code, reason }), _) => (
                CloseEvent {
                    code,
                    reason,
                    was_clean: true,
                },
                None,
            ),
            (_, Some(e)) => lost(
                SocketError::new(
                    Api::ConnectSocket,
                    ErrorKind::Io,
                    format_args!("connection lost: {e}"),
                )
                .with_source(e),
            ),
            (Some(Ending::CloseTimedOut(timeout)), None) => (
                CloseEvent {
                    code: 1006,
                    reason: format!(
                        "the server did not answer the close within {} ms",
                        timeout.as_millis()
                    ),
                    was_clean: false,
                },
                None,
            ),
            _ => lost(SocketError::new(
                Api::ConnectSocket,
                ErrorKind::Closed,
                "the server closed the connection without a close frame",
            )),
        };
        let send_err = error.as_ref().map_or_else(
            || {
                SocketError::new(
                    Api::SendSocketMessage,
                    ErrorKind::Closed,
                    "the connection closed before the message was sent",
                )
            },
            |e| e.for_api(Api::SendSocketMessage),
        );
        for (_, reply) in self.sends.drain(..) {
            reply.settle(Err(send_err.clone()));
        }
        if let Some(err) = error {
            self.shared.failed(err);
        }
        close
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Params {
        Params {
            target: Target {
                host: "127.0.0.1".into(),
                port: 9,
                secure: false,
                host_header: "127.0.0.1:9".into(),
                request_target: "/".into(),
            },
            headers: Vec::new(),
            protocols: Vec::new(),
            timeout: Duration::from_secs(1),
            no_delay: true,
            route: transport::Route {
                proxy: None,
                tls: None,
            },
            config: proto::Config::default(),
            deflate: None,
            reconnect: None,
            queue_until_open: false,
            max_queued_bytes: 0,
            started: Instant::now(),
        }
    }

    /// Each connection keeps its `run` future for its whole life, and every
    /// connection that opens at once keeps an `open` future: both are
    /// measured in the `conns` benchmark's peak RSS. An `async fn` stores
    /// what it holds across an `.await` inline, so a large future creeps in
    /// unnoticed (the proxy and TLS futures once made `open` 4 KiB, and
    /// `run` held its parameters twice); these bounds catch it.
    #[test]
    fn per_connection_futures_stay_small() {
        let shared = Shared::new(1 << 20, false, 1 << 20);
        let params = Box::new(params());
        let opening = open(&params);
        let open_size = std::mem::size_of_val(&opening);
        drop(opening);
        let running = run(shared, params);
        let run_size = std::mem::size_of_val(&running);
        drop(running);
        assert!(open_size <= 1024, "open future: {open_size} bytes");
        assert!(run_size <= 1280, "run future: {run_size} bytes");
    }
}
