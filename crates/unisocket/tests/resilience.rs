//! The resilience options of `ConnectOptions` over real sockets on
//! 127.0.0.1: `heartbeat`, `reconnect` (with `on_reconnecting`),
//! `queue_until_open` with `max_queued_bytes`, and send backpressure
//! (`buffered_amount`, `max_buffered_bytes`).
//!
//! Every test runs on a runtime of its own, bounded by
//! `support::TEST_TIMEOUT`, and asserts the order and the number of events,
//! never tight timings. The global functions act on process-global state
//! (the oldest live task): the tests take [`GLOBAL`] shared, and the one
//! test that uses the global functions takes it alone and first waits until
//! no task is alive. Dropping a test's runtime ends every task it made.

mod support;

use support::{bounded, wait_until, within, WAIT_TIMEOUT};

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use support::codec::{self, Message};
use unisocket::{
    close_socket, connect_socket, current_socket, send_socket_message, CloseOptions,
    ConnectOptions, ErrorKind, ReadyState, ReconnectPolicy, SendOptions, SocketError, SocketTask,
};

/// Taken shared by every test, alone by the test of the global functions.
static GLOBAL: RwLock<()> = RwLock::new(());

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Runs `body` on a runtime of its own, next to the other tests.
fn run<F: Future<Output = ()>>(body: F) {
    let _shared = GLOBAL.read().unwrap_or_else(PoisonError::into_inner);
    let rt = runtime();
    rt.block_on(async {
        within(body).await;
    });
}

/// Runs `body` alone: no other test of this file runs meanwhile, and no task
/// is alive when it starts.
fn run_alone<F: Future<Output = ()>>(body: F) {
    let _alone = GLOBAL.write().unwrap_or_else(PoisonError::into_inner);
    let rt = runtime();
    rt.block_on(async {
        wait_until("no live task", || current_socket().is_none()).await;
        within(body).await;
    });
}

/// Polls `fut` once: `Some(output)` if it is ready, `None` if pending.
///
/// Outside tokio's cooperative budget: a loop of `poll_once` that never
/// yields would otherwise use it up, and from then on every poll of a
/// completion returns `Pending`, ready or not.
async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Option<F::Output> {
    tokio::task::unconstrained(std::future::poll_fn(|cx| {
        match Pin::new(&mut *fut).poll(cx) {
            Poll::Ready(v) => Poll::Ready(Some(v)),
            Poll::Pending => Poll::Ready(None),
        }
    }))
    .await
}

fn opts(url: &str) -> ConnectOptions {
    ConnectOptions::new(url).timeout(WAIT_TIMEOUT).no_proxy()
}

/// A text message of exactly `len` bytes: `label:xxxx...`.
fn msg(label: &str, len: usize) -> String {
    let mut s = format!("{label}:");
    assert!(s.len() <= len);
    s.extend(std::iter::repeat_n('x', len - s.len()));
    s
}

/// What the server saw: the label of a text message (the part before `:`).
fn label(text: &str) -> String {
    text.split(':').next().unwrap_or_default().to_owned()
}

// ---------------------------------------------------------------------------
// Events of a task, in the order its callbacks ran.

#[derive(Debug, Clone, PartialEq)]
enum Ev {
    Open,
    Error(ErrorKind, String),
    Reconnecting {
        attempt: u32,
        delay: Duration,
        /// `ready_state()` seen from inside the callback.
        state: ReadyState,
        /// Whether `current_socket()` found a live task from inside the callback.
        global: bool,
    },
    Close(u16, bool),
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Ev>>>);

impl Log {
    fn push(&self, ev: Ev) {
        self.0.lock().unwrap().push(ev);
    }

    fn get(&self) -> Vec<Ev> {
        self.0.lock().unwrap().clone()
    }

    fn count(&self, pred: impl Fn(&Ev) -> bool) -> usize {
        self.get().iter().filter(|e| pred(e)).count()
    }

    async fn wait_for(&self, what: &str, pred: impl Fn(&Ev) -> bool, n: usize) {
        wait_until(what, || self.count(&pred) >= n).await;
    }
}

fn is_open(e: &Ev) -> bool {
    matches!(e, Ev::Open)
}
fn is_error(e: &Ev) -> bool {
    matches!(e, Ev::Error(..))
}
fn is_close(e: &Ev) -> bool {
    matches!(e, Ev::Close(..))
}
fn is_reconnecting(e: &Ev) -> bool {
    matches!(e, Ev::Reconnecting { .. })
}

/// Records the open, error, reconnecting and close events of `task`.
fn watch(task: &SocketTask) -> Log {
    let log = Log::default();
    let l = log.clone();
    task.on_open(move |_| l.push(Ev::Open));
    let l = log.clone();
    task.on_error(move |e| l.push(Ev::Error(e.error.kind(), e.err_msg.clone())));
    let l = log.clone();
    let t = task.clone();
    task.on_reconnecting(move |r| {
        l.push(Ev::Reconnecting {
            attempt: r.attempt,
            delay: r.delay,
            state: t.ready_state(),
            global: current_socket().is_some(),
        });
    });
    let l = log.clone();
    task.on_close(move |c| l.push(Ev::Close(c.code, c.was_clean)));
    log
}

/// The error of a connection that the server dropped without a close frame
/// (EOF, or a reset when it had unread bytes).
fn is_lost_connection(e: &Ev) -> bool {
    matches!(e, Ev::Error(ErrorKind::Closed | ErrorKind::Io, m) if m.starts_with("connectSocket:fail "))
}

// ---------------------------------------------------------------------------
// A WebSocket server on 127.0.0.1 whose handler sees the connection number
// and the raw TCP stream, so that it can delay or refuse the handshake.

struct Server {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// Listens on 127.0.0.1:0 (with this `SO_RCVBUF`, inherited by the
    /// accepted sockets, if given) and runs `handler(n, stream)` for the
    /// `n`-th accepted connection (from 0).
    async fn start<F, Fut>(recv_buffer: Option<u32>, handler: F) -> Server
    where
        F: Fn(usize, TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let socket = TcpSocket::new_v4().expect("socket");
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
        }
        socket
            .bind("127.0.0.1:0".parse().unwrap())
            .expect("bind 127.0.0.1:0");
        let listener = socket.listen(64).expect("listen");
        let addr = listener.local_addr().expect("local_addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let handler = Arc::new(handler);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(ms(10)).await;
                    continue;
                };
                let n = count.fetch_add(1, Ordering::SeqCst);
                let handler = handler.clone();
                tokio::spawn(async move { handler(n, stream).await });
            }
        });
        Server {
            addr,
            accepted,
            task,
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Stops listening and waits until the port refuses connections
    /// (connections already accepted go on).
    async fn stop(self) {
        let addr = self.addr;
        drop(self);
        wait_until_refused(addr).await;
    }
}

async fn wait_until_refused(addr: SocketAddr) {
    let deadline = Instant::now() + WAIT_TIMEOUT;
    loop {
        match TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
            _ => {
                assert!(Instant::now() < deadline, "{addr} still accepts");
                tokio::time::sleep(ms(5)).await;
            }
        }
    }
}

/// Where servers report what they received: `(connection number, label)`.
type Sink = mpsc::UnboundedSender<(usize, String)>;
type Received = mpsc::UnboundedReceiver<(usize, String)>;

async fn next(rx: &mut Received) -> (usize, String) {
    bounded("a message at the server", rx.recv())
        .await
        .expect("the server's sink closed")
}

/// The server's end of one upgraded connection.
struct Peer {
    stream: TcpStream,
    codec: codec::ServerCodec,
    chunk: Vec<u8>,
}

impl Peer {
    /// Reads the opening handshake and answers 101.
    async fn accept(mut stream: TcpStream) -> Option<Peer> {
        let head = support::read_http_head(&mut stream).await?;
        let (request, consumed) = codec::parse_request(&head).ok()??;
        stream
            .write_all(&codec::response_101(&request.key, None, &[]))
            .await
            .ok()?;
        let mut codec = codec::ServerCodec::new();
        codec.feed(&head[consumed..]);
        Some(Peer {
            stream,
            codec,
            chunk: vec![0; 64 * 1024],
        })
    }

    /// Reads the opening handshake, waits `delay`, then answers `status`
    /// (not 101) and closes.
    async fn refuse(mut stream: TcpStream, delay: Duration, status: u16) {
        if support::read_http_head(&mut stream).await.is_none() {
            return;
        }
        tokio::time::sleep(delay).await;
        let _ = stream
            .write_all(&codec::response_status(status, &[], b"go away"))
            .await;
        let _ = stream.shutdown().await;
    }

    /// The next message (control frames included); `None` on EOF or error.
    /// Cancel-safe.
    async fn recv(&mut self) -> Option<Message> {
        loop {
            match self.codec.next_message() {
                Ok(Some(m)) => return Some(m),
                Ok(None) => {}
                Err(_) => return None,
            }
            let n = self.stream.read(&mut self.chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            self.codec.feed(&self.chunk[..n]);
        }
    }

    async fn send(&mut self, frame: &[u8]) {
        let _ = self.stream.write_all(frame).await;
    }

    /// Answers the client's close with the same code and reason, then closes TCP.
    async fn echo_close(&mut self, code: Option<u16>, reason: &str) {
        self.send(&codec::server_close(code, reason)).await;
        let _ = self.stream.shutdown().await;
    }

    /// Sends a close frame, waits for the client's, then closes TCP.
    async fn close_with(&mut self, code: u16) {
        self.send(&codec::server_close(Some(code), "server says bye"))
            .await;
        while let Some(m) = self.recv().await {
            if matches!(m, Message::Close(..)) {
                break;
            }
        }
        let _ = self.stream.shutdown().await;
    }

    /// Reports the label of each text message to `sink` (tagged `conn`),
    /// answers pings, and answers the close, until the client goes.
    async fn forward(mut self, conn: usize, sink: Sink) {
        while let Some(m) = self.recv().await {
            match m {
                Message::Text(t) => {
                    let _ = sink.send((conn, label(&t)));
                }
                Message::Binary(b) => {
                    let _ = sink.send((conn, format!("binary {}", b.len())));
                }
                Message::Ping(p) => self.send(&codec::server_pong(&p)).await,
                Message::Pong(_) => {}
                Message::Close(code, reason) => {
                    self.echo_close(code, &reason).await;
                    return;
                }
            }
        }
    }
}

/// A server whose every connection is [`Peer::forward`]ed to the sink.
async fn forwarding_server() -> (Server, Received) {
    let (sink, rx) = mpsc::unbounded_channel();
    let server = Server::start(None, move |n, stream| {
        let sink = sink.clone();
        async move {
            if let Some(peer) = Peer::accept(stream).await {
                peer.forward(n, sink).await;
            }
        }
    })
    .await;
    (server, rx)
}

// ---------------------------------------------------------------------------
// 1. Heartbeat

#[test]
fn heartbeat_pings_every_interval_and_answered_pings_keep_the_task_open() {
    run(async {
        let pings: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let seen = pings.clone();
        let server = Server::start(None, move |_, stream| {
            let seen = seen.clone();
            async move {
                let Some(mut peer) = Peer::accept(stream).await else {
                    return;
                };
                while let Some(m) = peer.recv().await {
                    match m {
                        Message::Ping(p) => {
                            seen.lock().unwrap().push(Instant::now());
                            peer.send(&codec::server_pong(&p)).await;
                        }
                        Message::Close(code, reason) => {
                            peer.echo_close(code, &reason).await;
                            return;
                        }
                        _ => {}
                    }
                }
            }
        })
        .await;
        let interval = ms(50);
        let task = connect_socket(opts(&server.url()).heartbeat(interval, ms(150)));
        let log = watch(&task);
        bounded("open", task.opened()).await.unwrap();
        // Six pings, i.e. well past the 150 ms timeout several times over.
        wait_until("6 pings at the server", || pings.lock().unwrap().len() >= 6).await;
        let span = {
            let p = pings.lock().unwrap();
            p[5] - p[0]
        };
        // Roughly one per interval, not a flood: five gaps take about five intervals.
        assert!(span >= interval * 3, "6 pings within {span:?}");
        assert_eq!(task.ready_state(), ReadyState::Open);
        assert_eq!(
            log.get(),
            [Ev::Open],
            "answered pings must keep the task open"
        );

        bounded("close", task.close(CloseOptions::default()))
            .await
            .unwrap();
        log.wait_for("on_close", is_close, 1).await;
        assert_eq!(log.get(), [Ev::Open, Ev::Close(1000, true)]);
    });
}

#[test]
fn heartbeat_without_answer_fails_with_heartbeat_timeout_then_closes_1006() {
    run(async {
        let pings = Arc::new(AtomicUsize::new(0));
        let seen = pings.clone();
        // Reads everything, writes nothing.
        let server = Server::start(None, move |_, stream| {
            let seen = seen.clone();
            async move {
                let Some(mut peer) = Peer::accept(stream).await else {
                    return;
                };
                while let Some(m) = peer.recv().await {
                    if matches!(m, Message::Ping(_)) {
                        seen.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        })
        .await;
        let task = connect_socket(opts(&server.url()).heartbeat(ms(50), ms(150)));
        let log = watch(&task);
        let close = bounded("close", task.closed()).await;
        assert_eq!((close.code, close.was_clean), (1006, false));
        log.wait_for("on_close", is_close, 1).await;
        assert_eq!(
            log.get(),
            [
                Ev::Open,
                Ev::Error(
                    ErrorKind::HeartbeatTimeout,
                    "connectSocket:fail no pong within 150 ms".into()
                ),
                Ev::Close(1006, false),
            ]
        );
        assert!(
            pings.load(Ordering::SeqCst) >= 1,
            "no ping reached the server"
        );
        assert_eq!(task.ready_state(), ReadyState::Closed);
    });
}

#[test]
fn heartbeat_counts_any_incoming_frame_as_life() {
    run(async {
        let pings = Arc::new(AtomicUsize::new(0));
        let ticks = Arc::new(AtomicUsize::new(0));
        let (seen, sent) = (pings.clone(), ticks.clone());
        // Never answers pings, but sends a text message every interval / 3.
        let server = Server::start(None, move |_, stream| {
            let (seen, sent) = (seen.clone(), sent.clone());
            async move {
                let Some(mut peer) = Peer::accept(stream).await else {
                    return;
                };
                let mut tick = tokio::time::interval(ms(33));
                loop {
                    tokio::select! {
                        m = peer.recv() => match m {
                            Some(Message::Ping(_)) => {
                                seen.fetch_add(1, Ordering::SeqCst);
                            }
                            Some(Message::Close(code, reason)) => {
                                peer.echo_close(code, &reason).await;
                                return;
                            }
                            Some(_) => {}
                            None => return,
                        },
                        _ = tick.tick() => {
                            let n = sent.fetch_add(1, Ordering::SeqCst);
                            peer.send(&codec::server_text(&format!("tick {n}"))).await;
                        }
                    }
                }
            }
        })
        .await;
        let task = connect_socket(opts(&server.url()).heartbeat(ms(100), ms(150)));
        let log = watch(&task);
        let messages = Arc::new(AtomicUsize::new(0));
        let m = messages.clone();
        task.on_message(move |_| {
            m.fetch_add(1, Ordering::SeqCst);
        });
        bounded("open", task.opened()).await.unwrap();
        // Several intervals, several unanswered pings.
        wait_until("4 unanswered pings and 24 messages", || {
            pings.load(Ordering::SeqCst) >= 4 && ticks.load(Ordering::SeqCst) >= 24
        })
        .await;
        assert_eq!(task.ready_state(), ReadyState::Open);
        assert_eq!(
            log.get(),
            [Ev::Open],
            "incoming messages must count as life"
        );
        assert!(messages.load(Ordering::SeqCst) > 0);

        bounded("close", task.close(CloseOptions::default()))
            .await
            .unwrap();
        log.wait_for("on_close", is_close, 1).await;
        assert_eq!(log.get(), [Ev::Open, Ev::Close(1000, true)]);
    });
}

#[test]
fn heartbeat_reports_a_dead_peer_without_waiting_for_the_close_timeout() {
    run(async {
        // Neither reads nor writes: a peer that vanished (half-open connection).
        let server = Server::start(None, |_, stream| async move {
            let Some(peer) = Peer::accept(stream).await else {
                return;
            };
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(peer);
        })
        .await;
        // close_timeout stays at its default (5 s).
        let task = connect_socket(opts(&server.url()).heartbeat(ms(50), ms(100)));
        let log = watch(&task);
        bounded("open", task.opened()).await.unwrap();
        let opened = Instant::now();
        log.wait_for("on_close", is_close, 1).await;
        let took = opened.elapsed();
        assert_eq!(
            log.get(),
            [
                Ev::Open,
                Ev::Error(
                    ErrorKind::HeartbeatTimeout,
                    "connectSocket:fail no pong within 100 ms".into()
                ),
                Ev::Close(1006, false),
            ]
        );
        // Expected about interval + timeout (150 ms); 5 s is the close timeout.
        assert!(
            took < Duration::from_secs(3),
            "the dead peer was reported {took:?} after the open"
        );
    });
}

#[test]
fn heartbeat_timeout_triggers_a_reconnect() {
    run(async {
        let (sink, mut got) = mpsc::unbounded_channel();
        // The first connection never answers; the next ones do.
        let server = Server::start(None, move |n, stream| {
            let sink = sink.clone();
            async move {
                let Some(mut peer) = Peer::accept(stream).await else {
                    return;
                };
                if n == 0 {
                    while peer.recv().await.is_some() {}
                } else {
                    peer.forward(n, sink).await;
                }
            }
        })
        .await;
        let task = connect_socket(
            opts(&server.url()).heartbeat(ms(50), ms(100)).reconnect(
                ReconnectPolicy::default()
                    .min_delay(ms(20))
                    .max_delay(ms(50)),
            ),
        );
        let log = watch(&task);
        log.wait_for("the second open", is_open, 2).await;
        let events = log.get();
        assert!(
            matches!(
                events.as_slice(),
                [
                    Ev::Open,
                    Ev::Error(ErrorKind::HeartbeatTimeout, _),
                    Ev::Reconnecting { attempt: 1, .. },
                    Ev::Open
                ]
            ),
            "{events:?}"
        );
        bounded("send", task.send("alive")).await.unwrap();
        assert_eq!(next(&mut got).await, (1, "alive".into()));
        // The pongs of the new connection keep it open.
        tokio::time::sleep(ms(400)).await;
        assert_eq!(task.ready_state(), ReadyState::Open);
        assert_eq!(log.count(is_open), 2);
        assert_eq!(log.count(is_error), 1);

        bounded("close", task.close(CloseOptions::default()))
            .await
            .unwrap();
        log.wait_for("on_close", is_close, 1).await;
        assert_eq!(log.get().last(), Some(&Ev::Close(1000, true)));
        assert_eq!(log.count(is_close), 1);
    });
}

// ---------------------------------------------------------------------------
// 2. Reconnect

#[test]
fn reconnect_after_a_dropped_connection_keeps_the_task_and_the_global_functions() {
    run_alone(async {
        let (sink, mut got) = mpsc::unbounded_channel();
        // Connection 0 takes one message, then drops TCP without a close
        // frame; the next ones forward everything.
        let server = Server::start(None, move |n, stream| {
            let sink = sink.clone();
            async move {
                let Some(mut peer) = Peer::accept(stream).await else {
                    return;
                };
                if n == 0 {
                    if let Some(Message::Text(t)) = peer.recv().await {
                        let _ = sink.send((n, t));
                    }
                    return;
                }
                peer.forward(n, sink).await;
            }
        })
        .await;
        let (min, max) = (ms(300), ms(600));
        let task = connect_socket(
            opts(&server.url()).reconnect(ReconnectPolicy::default().min_delay(min).max_delay(max)),
        );
        let log = watch(&task);
        bounded("first open", task.opened()).await.unwrap();
        assert!(current_socket().is_some());

        // The global function reaches the first connection...
        bounded("global send", send_socket_message("one"))
            .await
            .unwrap();
        assert_eq!(next(&mut got).await, (0, "one".into()));

        // ... which the server then drops: backoff, CONNECTING meanwhile.
        log.wait_for("on_reconnecting", is_reconnecting, 1).await;
        assert_eq!(task.ready_state(), ReadyState::Connecting);
        assert!(
            current_socket().is_some(),
            "the task left the globals while reconnecting"
        );
        let err = bounded("send during backoff", task.send("lost"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotConnected);
        assert_eq!(log.count(is_close), 0);

        log.wait_for("the second open", is_open, 2).await;
        assert_eq!(task.ready_state(), ReadyState::Open);
        let events = log.get();
        match events.as_slice() {
            [Ev::Open, lost, Ev::Reconnecting {
                attempt: 1,
                delay,
                state: ReadyState::Connecting,
                global: true,
            }, Ev::Open] => {
                assert!(is_lost_connection(lost), "{lost:?}");
                assert!(*delay >= min && *delay <= max, "delay {delay:?}");
            }
            other => panic!("unexpected events {other:?}"),
        }

        // Both the global function and the task reach the new connection.
        bounded("global send", send_socket_message("two"))
            .await
            .unwrap();
        bounded("send", task.send("three")).await.unwrap();
        let (c2, m2) = next(&mut got).await;
        let (c3, m3) = next(&mut got).await;
        assert_eq!((m2.as_str(), m3.as_str()), ("two", "three"));
        assert!(c2 >= 1 && c2 == c3, "sent on connections {c2} and {c3}");

        // The application's close ends it for good, with its code.
        bounded(
            "global close",
            close_socket(CloseOptions::default().code(4000).reason("bye")),
        )
        .await
        .unwrap();
        log.wait_for("on_close", is_close, 1).await;
        assert!(current_socket().is_none());
        tokio::time::sleep(max * 2).await;
        assert_eq!(server.accepted(), 2, "reconnected after the app's close");
        assert_eq!(log.count(is_reconnecting), 1);
        assert_eq!(log.count(is_open), 2);
        assert_eq!(log.count(is_close), 1);
        assert_eq!(log.get().last(), Some(&Ev::Close(4000, true)));
        assert_eq!(task.ready_state(), ReadyState::Closed);
    });
}

#[test]
fn reconnect_gives_up_after_max_attempts() {
    run(async {
        let release = Arc::new(Notify::new());
        let r = release.clone();
        // Accepts one connection and holds it until released.
        let server = Server::start(None, move |_, stream| {
            let r = r.clone();
            async move {
                let Some(_peer) = Peer::accept(stream).await else {
                    return;
                };
                r.notified().await;
            }
        })
        .await;
        let (min, max) = (ms(20), ms(80));
        let task = connect_socket(
            opts(&server.url()).reconnect(
                ReconnectPolicy::default()
                    .min_delay(min)
                    .max_delay(max)
                    .max_attempts(Some(3)),
            ),
        );
        let log = watch(&task);
        bounded("open", task.opened()).await.unwrap();
        // The port now refuses; then the open connection drops.
        server.stop().await;
        release.notify_one();

        let close = bounded("close", task.closed()).await;
        assert_eq!((close.code, close.was_clean), (1006, false));
        log.wait_for("on_close", is_close, 1).await;
        tokio::time::sleep(max * 3).await;
        let events = log.get();
        let refused = |e: &Ev| matches!(e, Ev::Error(ErrorKind::ConnectionRefused, _));
        match events.as_slice() {
            [Ev::Open, lost, r1 @ Ev::Reconnecting { attempt: 1, .. }, e1, r2 @ Ev::Reconnecting { attempt: 2, .. }, e2, r3 @ Ev::Reconnecting { attempt: 3, .. }, e3, Ev::Close(1006, false)] =>
            {
                assert!(is_lost_connection(lost), "{lost:?}");
                assert!(refused(e1) && refused(e2) && refused(e3), "{events:?}");
                for r in [r1, r2, r3] {
                    let Ev::Reconnecting { delay, state, .. } = r else {
                        unreachable!()
                    };
                    assert!(*delay >= min && *delay <= max, "delay {delay:?}");
                    assert_eq!(*state, ReadyState::Connecting);
                }
            }
            other => panic!("unexpected events {other:?}"),
        }
        assert_eq!(task.ready_state(), ReadyState::Closed);
    });
}

#[test]
fn default_policy_does_not_reconnect_after_a_normal_server_close() {
    run(async {
        let server = Server::start(None, |_, stream| async move {
            if let Some(mut peer) = Peer::accept(stream).await {
                peer.close_with(1000).await;
            }
        })
        .await;
        let task = connect_socket(
            opts(&server.url()).reconnect(
                ReconnectPolicy::default()
                    .min_delay(ms(20))
                    .max_delay(ms(50)),
            ),
        );
        let log = watch(&task);
        let close = bounded("close", task.closed()).await;
        assert_eq!((close.code, close.was_clean), (1000, true));
        tokio::time::sleep(ms(300)).await;
        assert_eq!(log.get(), [Ev::Open, Ev::Close(1000, true)]);
        assert_eq!(server.accepted(), 1);
    });
}

#[test]
fn when_predicate_reconnects_after_4000_only() {
    run(async {
        // Connection 0 closes with 4000; connection 1 drops TCP (1006).
        let server = Server::start(None, |n, stream| async move {
            let Some(mut peer) = Peer::accept(stream).await else {
                return;
            };
            if n == 0 {
                peer.close_with(4000).await;
            } else {
                tokio::time::sleep(ms(50)).await;
                drop(peer);
            }
        })
        .await;
        let task = connect_socket(
            opts(&server.url()).reconnect(
                ReconnectPolicy::default()
                    .min_delay(ms(20))
                    .max_delay(ms(50))
                    .when(|c| c.code == 4000),
            ),
        );
        let log = watch(&task);
        let close = bounded("close", task.closed()).await;
        assert_eq!((close.code, close.was_clean), (1006, false));
        tokio::time::sleep(ms(300)).await;
        let events = log.get();
        match events.as_slice() {
            [Ev::Open, Ev::Reconnecting { attempt: 1, .. }, Ev::Open, lost, Ev::Close(1006, false)] =>
            {
                assert!(is_lost_connection(lost), "{lost:?}");
            }
            other => panic!("unexpected events {other:?}"),
        }
        assert_eq!(server.accepted(), 2);
    });
}

/// A server whose connection 0 opens then drops after a moment, and whose
/// later connections get `later(n, stream)`.
async fn drop_first_server<F, Fut>(later: F) -> Server
where
    F: Fn(usize, TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let later = Arc::new(later);
    Server::start(None, move |n, stream| {
        let later = later.clone();
        async move {
            if n == 0 {
                if let Some(peer) = Peer::accept(stream).await {
                    tokio::time::sleep(ms(50)).await;
                    drop(peer);
                }
            } else {
                later(n, stream).await;
            }
        }
    })
    .await
}

/// A task whose first connection the server dropped, now CONNECTING in a
/// backoff of `delay` (its later connections are served and stay open),
/// with the server and the task's event log.
async fn in_backoff(delay: Duration) -> (Server, SocketTask, Log) {
    let server = drop_first_server(|_, stream| async move {
        if let Some(peer) = Peer::accept(stream).await {
            peer.forward(0, mpsc::unbounded_channel().0).await;
        }
    })
    .await;
    let task = connect_socket(
        opts(&server.url()).reconnect(ReconnectPolicy::default().min_delay(delay).max_delay(delay)),
    );
    let log = watch(&task);
    log.wait_for("on_reconnecting", is_reconnecting, 1).await;
    assert_eq!(task.ready_state(), ReadyState::Connecting);
    (server, task, log)
}

/// A listener registered during the backoff hears the error that ended the
/// connection; one registered once the task has opened again does not.
#[test]
fn the_last_error_is_told_to_late_listeners_until_the_task_opens_again() {
    run(async {
        let (_server, task, log) = in_backoff(ms(500)).await;
        let during_backoff: Arc<Mutex<Vec<String>>> = Arc::default();
        let d = during_backoff.clone();
        task.on_error(move |e| d.lock().unwrap().push(e.err_msg.clone()));
        log.wait_for("the second open", is_open, 2).await;
        let after_reopen: Arc<Mutex<Vec<String>>> = Arc::default();
        let a = after_reopen.clone();
        task.on_error(move |e| a.lock().unwrap().push(e.err_msg.clone()));
        tokio::time::sleep(ms(100)).await;
        let told = during_backoff.lock().unwrap().clone();
        assert_eq!(told.len(), 1, "{told:?}");
        assert!(told[0].starts_with("connectSocket:fail "), "{told:?}");
        assert!(after_reopen.lock().unwrap().is_empty());
        bounded("close", task.close(CloseOptions::default()))
            .await
            .expect("close");
    });
}

#[test]
fn close_during_backoff_ends_the_task_at_once_with_the_apps_code() {
    run(async {
        let (server, task, log) = in_backoff(Duration::from_secs(5)).await;
        // Well before the 5 s backoff ends.
        tokio::time::timeout(
            Duration::from_secs(2),
            task.close(CloseOptions::default().code(4002).reason("stop")),
        )
        .await
        .expect("close during the backoff waited")
        .unwrap();
        let close = bounded("closed", task.closed()).await;
        assert_eq!(
            (close.code, close.reason.as_str(), close.was_clean),
            (4002, "stop", false)
        );
        tokio::time::sleep(ms(300)).await;
        let events = log.get();
        match events.as_slice() {
            [Ev::Open, lost, Ev::Reconnecting { attempt: 1, .. }, Ev::Close(4002, false)] => {
                assert!(is_lost_connection(lost), "{lost:?}");
            }
            other => panic!("unexpected events {other:?}"),
        }
        assert_eq!(server.accepted(), 1);
        assert_eq!(task.ready_state(), ReadyState::Closed);
    });
}

#[test]
fn close_during_a_reconnect_attempt_ends_the_task_with_the_apps_code() {
    run(async {
        // Connection 1 never gets its handshake answered.
        let server = drop_first_server(|_, mut stream| async move {
            let _ = support::read_http_head(&mut stream).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        })
        .await;
        let task = connect_socket(
            opts(&server.url()).reconnect(
                ReconnectPolicy::default()
                    .min_delay(ms(20))
                    .max_delay(ms(50)),
            ),
        );
        let log = watch(&task);
        wait_until("the second connection", || server.accepted() >= 2).await;
        assert_eq!(task.ready_state(), ReadyState::Connecting);
        tokio::time::timeout(
            Duration::from_secs(2),
            task.close(CloseOptions::default().code(4003)),
        )
        .await
        .expect("close during the attempt waited")
        .unwrap();
        let close = bounded("closed", task.closed()).await;
        assert_eq!((close.code, close.was_clean), (4003, false));
        tokio::time::sleep(ms(300)).await;
        assert_eq!(server.accepted(), 2);
        assert_eq!(log.count(is_reconnecting), 1);
        assert_eq!(log.count(is_close), 1);
        assert_eq!(log.get().last(), Some(&Ev::Close(4003, false)));
    });
}

// ---------------------------------------------------------------------------
// 3. queue_until_open

/// A server that answers each handshake after `delay`, then forwards.
async fn slow_server(delay: Duration) -> (Server, Received) {
    let (sink, rx) = mpsc::unbounded_channel();
    let server = Server::start(None, move |n, stream| {
        let sink = sink.clone();
        async move {
            tokio::time::sleep(delay).await;
            if let Some(peer) = Peer::accept(stream).await {
                peer.forward(n, sink).await;
            }
        }
    })
    .await;
    (server, rx)
}

/// What the callbacks of one send reported, in order.
type Calls = Arc<Mutex<Vec<String>>>;

/// `data` with `success`, `fail` and `complete` callbacks that record into `calls`.
fn tracked(data: String, calls: &Calls) -> SendOptions {
    let tag = label(&data);
    let (a, b, c) = (calls.clone(), calls.clone(), calls.clone());
    let (ta, tb, tc) = (tag.clone(), tag.clone(), tag);
    SendOptions::new(data)
        .success(move |_| a.lock().unwrap().push(format!("{ta} success")))
        .fail(move |e| b.lock().unwrap().push(format!("{tb} fail {}", e.err_msg())))
        .complete(move |r| {
            c.lock()
                .unwrap()
                .push(format!("{tc} complete {}", r.is_ok()))
        })
}

fn calls_of(calls: &Calls, tag: &str) -> Vec<String> {
    calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.split(' ').next() == Some(tag))
        .cloned()
        .collect()
}

#[test]
fn queue_until_open_flushes_sends_made_while_connecting_in_order() {
    run(async {
        let (server, mut got) = slow_server(ms(300)).await;
        let task = connect_socket(opts(&server.url()).queue_until_open(true));
        let log = watch(&task);
        let calls = Calls::default();
        assert_eq!(task.ready_state(), ReadyState::Connecting);
        let completions: Vec<_> = ["q1", "q2", "q3"]
            .into_iter()
            .map(|s| task.send(tracked(s.into(), &calls)))
            .collect();
        assert_eq!(task.ready_state(), ReadyState::Connecting);
        assert_eq!(task.buffered_amount(), 6, "queued sends count as buffered");

        bounded("open", task.opened()).await.unwrap();
        for c in completions {
            bounded("queued send", c).await.unwrap();
        }
        bounded("send after open", task.send("after"))
            .await
            .unwrap();
        for want in ["q1", "q2", "q3", "after"] {
            assert_eq!(next(&mut got).await, (0, want.to_owned()));
        }
        wait_until("3 completes", || calls.lock().unwrap().len() == 6).await;
        assert_eq!(
            *calls.lock().unwrap(),
            [
                "q1 success",
                "q1 complete true",
                "q2 success",
                "q2 complete true",
                "q3 success",
                "q3 complete true"
            ]
        );
        assert_eq!(task.buffered_amount(), 0);

        bounded("close", task.close(CloseOptions::default()))
            .await
            .unwrap();
        log.wait_for("on_close", is_close, 1).await;
        assert_eq!(log.get(), [Ev::Open, Ev::Close(1000, true)]);
    });
}

#[test]
fn without_queue_until_open_a_send_while_connecting_fails() {
    run(async {
        let (server, _got) = slow_server(ms(300)).await;
        let task = connect_socket(opts(&server.url()));
        let calls = Calls::default();
        let err = bounded("send", task.send(tracked("early".into(), &calls)))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotConnected);
        assert_eq!(
            err.err_msg(),
            "sendSocketMessage:fail WebSocket is not connected"
        );
        bounded("open", task.opened()).await.unwrap();
        let _ = bounded("close", task.close(CloseOptions::default())).await;
    });
}

#[test]
fn queue_until_open_is_bounded_by_max_queued_bytes() {
    run(async {
        let (server, mut got) = slow_server(ms(800)).await;
        let task = connect_socket(
            opts(&server.url())
                .queue_until_open(true)
                .max_queued_bytes(1000),
        );
        let calls = Calls::default();
        let a = task.send(tracked(msg("a", 400), &calls));
        let b = task.send(tracked(msg("b", 400), &calls));
        let c = task.send(tracked(msg("c", 400), &calls));
        // The one that overflows fails at once, before the open.
        let err = bounded("the overflowing send", c).await.unwrap_err();
        assert_eq!(task.ready_state(), ReadyState::Connecting);
        assert_eq!(err.kind(), ErrorKind::BufferFull);
        assert!(
            err.err_msg()
                .starts_with("sendSocketMessage:fail send queue full"),
            "{}",
            err.err_msg()
        );
        // Later sends that fit are still queued.
        let d = task.send(tracked(msg("d", 100), &calls));

        bounded("open", task.opened()).await.unwrap();
        for (name, c) in [("a", a), ("b", b), ("d", d)] {
            bounded(name, c).await.unwrap();
        }
        for want in ["a", "b", "d"] {
            assert_eq!(next(&mut got).await, (0, want.to_owned()));
        }
        wait_until("every callback", || calls.lock().unwrap().len() == 8).await;
        tokio::time::sleep(ms(50)).await;
        let c_calls = calls_of(&calls, "c");
        assert_eq!(c_calls.len(), 2, "{c_calls:?}");
        assert!(c_calls[0].starts_with("c fail sendSocketMessage:fail send queue full"));
        assert_eq!(c_calls[1], "c complete false");
        for tag in ["a", "b", "d"] {
            assert_eq!(
                calls_of(&calls, tag),
                [format!("{tag} success"), format!("{tag} complete true")]
            );
        }
        let _ = bounded("close", task.close(CloseOptions::default())).await;
    });
}

/// Sends `s1` and `s2` (queued), then lets `end` end the task before it
/// opens; checks that each queued send failed exactly once.
async fn queued_sends_fail_once(task: &SocketTask, end: impl Future<Output = ()>) {
    let calls = Calls::default();
    let s1 = task.send(tracked("s1".into(), &calls));
    let s2 = task.send(tracked("s2".into(), &calls));
    assert_eq!(task.ready_state(), ReadyState::Connecting);
    end.await;
    for (name, c) in [("s1", s1), ("s2", s2)] {
        let err: SocketError = bounded(name, c).await.unwrap_err();
        assert!(
            err.err_msg().starts_with("sendSocketMessage:fail ") && !err.reason().is_empty(),
            "{}",
            err.err_msg()
        );
    }
    wait_until("every callback", || calls.lock().unwrap().len() == 4).await;
    tokio::time::sleep(ms(100)).await;
    for tag in ["s1", "s2"] {
        let got = calls_of(&calls, tag);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].starts_with(&format!("{tag} fail sendSocketMessage:fail ")));
        assert_eq!(got[1], format!("{tag} complete false"));
    }
    assert_eq!(task.buffered_amount(), 0);
    // And nothing can be sent any more.
    let err = bounded("send after the end", task.send("late"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotConnected);
}

#[test]
fn queued_sends_fail_when_close_is_called_while_connecting() {
    run(async {
        let (server, _got) = slow_server(Duration::from_secs(30)).await;
        let task = connect_socket(opts(&server.url()).queue_until_open(true));
        let log = watch(&task);
        let t = task.clone();
        queued_sends_fail_once(&task, async move {
            tokio::time::timeout(
                Duration::from_secs(2),
                t.close(CloseOptions::default().code(4001)),
            )
            .await
            .expect("close while connecting waited")
            .unwrap();
        })
        .await;
        log.wait_for("on_close", is_close, 1).await;
        assert_eq!(log.count(is_open), 0);
        assert_eq!(log.count(is_close), 1);
        // Never open: as a browser, an error and then 1006, whatever code
        // `close` was given.
        assert_eq!(log.get().last(), Some(&Ev::Close(1006, false)));
    });
}

#[test]
fn queued_sends_fail_when_the_server_refuses() {
    run(async {
        let server = Server::start(None, |_, stream| Peer::refuse(stream, ms(300), 403)).await;
        let task = connect_socket(opts(&server.url()).queue_until_open(true));
        let log = watch(&task);
        let t = task.clone();
        queued_sends_fail_once(&task, async move {
            let close = bounded("close", t.closed()).await;
            assert_eq!((close.code, close.was_clean), (1006, false));
        })
        .await;
        log.wait_for("on_close", is_close, 1).await;
        let events = log.get();
        assert!(
            matches!(
                events.as_slice(),
                [Ev::Error(ErrorKind::Handshake, _), Ev::Close(1006, false)]
            ),
            "{events:?}"
        );
    });
}

#[test]
fn with_reconnect_sends_while_reconnecting_go_to_the_new_connection_in_order() {
    run(async {
        let (sink, mut got) = mpsc::unbounded_channel();
        // 0: takes one message then drops; 1: refuses the handshake; 2+: forward.
        let server = Server::start(None, move |n, stream| {
            let sink = sink.clone();
            async move {
                match n {
                    0 => {
                        let Some(mut peer) = Peer::accept(stream).await else {
                            return;
                        };
                        if let Some(Message::Text(t)) = peer.recv().await {
                            let _ = sink.send((n, t));
                        }
                    }
                    1 => Peer::refuse(stream, ms(0), 503).await,
                    _ => {
                        if let Some(peer) = Peer::accept(stream).await {
                            peer.forward(n, sink).await;
                        }
                    }
                }
            }
        })
        .await;
        let task = connect_socket(
            opts(&server.url()).queue_until_open(true).reconnect(
                ReconnectPolicy::default()
                    .min_delay(ms(200))
                    .max_delay(ms(400)),
            ),
        );
        let log = watch(&task);
        bounded("open", task.opened()).await.unwrap();
        bounded("send", task.send("first")).await.unwrap();
        assert_eq!(next(&mut got).await, (0, "first".into()));

        log.wait_for("on_reconnecting", is_reconnecting, 1).await;
        assert_eq!(task.ready_state(), ReadyState::Connecting);
        let calls = Calls::default();
        let completions: Vec<_> = ["r1", "r2", "r3"]
            .into_iter()
            .map(|s| task.send(tracked(s.into(), &calls)))
            .collect();

        log.wait_for("the reopen", is_open, 2).await;
        for c in completions {
            bounded("queued send", c).await.unwrap();
        }
        for want in ["r1", "r2", "r3"] {
            assert_eq!(next(&mut got).await, (2, want.to_owned()));
        }
        let events = log.get();
        match events.as_slice() {
            [Ev::Open, lost, Ev::Reconnecting { attempt: 1, .. }, Ev::Error(ErrorKind::Handshake, _), Ev::Reconnecting { attempt: 2, .. }, Ev::Open] =>
            {
                assert!(is_lost_connection(lost), "{lost:?}");
            }
            other => panic!("unexpected events {other:?}"),
        }
        wait_until("every callback", || calls.lock().unwrap().len() == 6).await;
        for tag in ["r1", "r2", "r3"] {
            assert_eq!(
                calls_of(&calls, tag),
                [format!("{tag} success"), format!("{tag} complete true")]
            );
        }
        bounded("close", task.close(CloseOptions::default()))
            .await
            .unwrap();
        log.wait_for("on_close", is_close, 1).await;
        assert_eq!(log.count(is_close), 1);
    });
}

// ---------------------------------------------------------------------------
// 4. Backpressure

/// A server with a small receive buffer that reads nothing until `go` is
/// notified, then forwards everything.
async fn paused_server(go: Arc<Notify>) -> (Server, Received) {
    let (sink, rx) = mpsc::unbounded_channel();
    let server = Server::start(Some(8 * 1024), move |n, stream| {
        let (sink, go) = (sink.clone(), go.clone());
        async move {
            if let Some(peer) = Peer::accept(stream).await {
                go.notified().await;
                peer.forward(n, sink).await;
            }
        }
    })
    .await;
    (server, rx)
}

/// Big enough that the socket buffers cannot take it all while the peer
/// does not read.
const BIG: usize = 8 << 20;

#[test]
fn buffered_amount_and_the_high_water_mark_with_a_peer_that_stops_reading() {
    run(async {
        let go = Arc::new(Notify::new());
        let (server, mut got) = paused_server(go.clone()).await;
        let mark = 256 * 1024;
        let task = connect_socket(opts(&server.url()).max_buffered_bytes(mark));
        let log = watch(&task);
        bounded("open", task.opened()).await.unwrap();
        assert_eq!(task.buffered_amount(), 0, "idle");

        // A small message reaches the transport: back to 0 once written.
        bounded("small send", task.send("hello")).await.unwrap();
        assert_eq!(task.buffered_amount(), 0);

        // A message larger than the mark is still sent with an empty buffer;
        // its Completion waits while the peer does not read.
        let mut big = task.send(msg("big", BIG));
        assert!(
            task.buffered_amount() >= BIG - mark,
            "{}",
            task.buffered_amount()
        );
        tokio::time::sleep(ms(300)).await;
        assert!(
            poll_once(&mut big).await.is_none(),
            "the big send completed"
        );
        let stuck = task.buffered_amount();
        assert!(stuck > 0 && stuck <= BIG, "{stuck}");

        // Beyond the mark, a send with a callback fails at once.
        let fails = Arc::new(Mutex::new(Vec::new()));
        let f = fails.clone();
        let mut rejected = task
            .send(SendOptions::new("rejected").fail(move |e| f.lock().unwrap().push(e.clone())));
        let err = poll_once(&mut rejected)
            .await
            .expect("the send with a callback did not fail at once")
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BufferFull);
        assert!(
            err.err_msg()
                .starts_with("sendSocketMessage:fail send buffer full"),
            "{}",
            err.err_msg()
        );
        wait_until("the fail callback", || fails.lock().unwrap().len() == 1).await;

        // Sends without callbacks wait, in order, and count as buffered:
        // as many bytes as the mark, no more.
        let mut waiting: Vec<_> = (1..=4)
            .map(|i| task.send(msg(&format!("w{i}"), 64 * 1024)))
            .collect();
        assert_eq!(task.buffered_amount(), stuck + 4 * 64 * 1024);
        let mut no_room = task.send(msg("w5", 64 * 1024));
        let err = poll_once(&mut no_room)
            .await
            .expect("a send past the waiting room did not fail at once")
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BufferFull);
        assert!(
            err.err_msg().contains("no more than that may wait"),
            "{}",
            err.err_msg()
        );
        assert_eq!(task.buffered_amount(), stuck + 4 * 64 * 1024);
        tokio::time::sleep(ms(200)).await;
        for w in &mut waiting {
            assert!(poll_once(w).await.is_none(), "a waiting send completed");
        }
        assert!(poll_once(&mut big).await.is_none());

        // The peer reads again: everything completes, in order.
        go.notify_one();
        let mut last = waiting.pop().unwrap();
        bounded("the last waiting send", &mut last).await.unwrap();
        poll_once(&mut big)
            .await
            .expect("the big send completed after a later one")
            .unwrap();
        for w in &mut waiting {
            poll_once(w)
                .await
                .expect("a waiting send completed after a later one")
                .unwrap();
        }
        for want in ["hello", "big", "w1", "w2", "w3", "w4"] {
            assert_eq!(next(&mut got).await, (0, want.to_owned()));
        }
        assert_eq!(task.buffered_amount(), 0);
        tokio::time::sleep(ms(100)).await;
        assert_eq!(
            fails.lock().unwrap().len(),
            1,
            "the fail callback ran again"
        );

        bounded("close", task.close(CloseOptions::default()))
            .await
            .unwrap();
        log.wait_for("on_close", is_close, 1).await;
        assert_eq!(log.get(), [Ev::Open, Ev::Close(1000, true)]);
    });
}

#[test]
fn sends_with_callbacks_keep_the_buffer_bounded_by_the_mark() {
    run(async {
        let go = Arc::new(Notify::new());
        let (server, mut got) = paused_server(go.clone()).await;
        let (mark, size) = (100_000, 10_000);
        let task = connect_socket(opts(&server.url()).max_buffered_bytes(mark));
        bounded("open", task.opened()).await.unwrap();

        let calls = Calls::default();
        let mut accepted = Vec::new();
        let mut rejected = 0;
        let mut max_seen = 0;
        // Until 50 sends in a row were refused (the socket buffers are full;
        // under load the kernel may take a while to stop accepting).
        let mut refused_in_a_row = 0;
        for i in 0..200_000 {
            let tag = format!("m{i}");
            let mut c = task.send(tracked(msg(&tag, size), &calls));
            max_seen = max_seen.max(task.buffered_amount());
            match poll_once(&mut c).await {
                Some(Err(e)) => {
                    assert_eq!(e.kind(), ErrorKind::BufferFull, "{}", e.err_msg());
                    rejected += 1;
                    refused_in_a_row += 1;
                    if refused_in_a_row == 50 {
                        break;
                    }
                    tokio::time::sleep(ms(1)).await;
                }
                Some(Ok(_)) => {
                    accepted.push((tag, None));
                    refused_in_a_row = 0;
                }
                None => {
                    accepted.push((tag, Some(c)));
                    refused_in_a_row = 0;
                }
            }
        }
        assert_eq!(refused_in_a_row, 50, "the buffer never filled up");
        assert!(
            max_seen <= mark + size,
            "buffered_amount reached {max_seen} with a mark of {mark}"
        );
        // While the peer does not read, nothing drains.
        tokio::time::sleep(ms(100)).await;
        assert!(task.buffered_amount() <= mark + size);

        go.notify_one();
        for (tag, c) in &mut accepted {
            if let Some(c) = c {
                bounded(tag.as_str(), c).await.unwrap();
            }
            assert_eq!(next(&mut got).await, (0, tag.clone()));
        }
        let sent = accepted.len();
        wait_until("every callback", || {
            calls.lock().unwrap().len() == 2 * (sent + rejected)
        })
        .await;
        let calls = calls.lock().unwrap().clone();
        let successes = calls.iter().filter(|c| c.ends_with(" success")).count();
        let failures = calls.iter().filter(|c| c.contains(" fail ")).count();
        assert_eq!((successes, failures), (sent, rejected));
        assert_eq!(task.buffered_amount(), 0);
        let _ = bounded("close", task.close(CloseOptions::default())).await;
    });
}

#[test]
fn waiting_sends_without_callbacks_never_stall_with_a_reading_peer() {
    run(async {
        let (server, mut got) = forwarding_server().await;
        let (mark, size, n) = (4096, 1000, 20_000);
        let task = connect_socket(opts(&server.url()).max_buffered_bytes(mark));
        bounded("open", task.opened()).await.unwrap();
        // Eight at a time: four in flight, four waiting (all the room there
        // is, twice the mark), then their outcomes.
        let window = 2 * mark / size;
        for start in (0..n).step_by(window) {
            let completions: Vec<_> = (start..n.min(start + window))
                .map(|i| task.send(msg(&format!("m{i}"), size)))
                .collect();
            for (i, c) in completions.into_iter().enumerate() {
                let r = tokio::time::timeout(WAIT_TIMEOUT, c).await;
                let stuck = task.buffered_amount();
                match r {
                    Ok(r) => drop(r.unwrap()),
                    Err(_) => panic!(
                        "send {} of {n} never completed; buffered_amount {stuck}, the peer reads",
                        start + i
                    ),
                }
            }
        }
        for i in 0..n {
            assert_eq!(next(&mut got).await, (0, format!("m{i}")));
        }
        assert_eq!(task.buffered_amount(), 0);
        let _ = bounded("close", task.close(CloseOptions::default())).await;
    });
}

#[test]
fn close_with_a_peer_that_does_not_read_ends_within_the_close_timeout() {
    run(async {
        // Never reads, never closes.
        let server = Server::start(Some(8 * 1024), |_, stream| async move {
            let Some(peer) = Peer::accept(stream).await else {
                return;
            };
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(peer);
        })
        .await;
        let mark = 256 * 1024;
        let task = connect_socket(
            opts(&server.url())
                .max_buffered_bytes(mark)
                .close_timeout(ms(300)),
        );
        let log = watch(&task);
        bounded("open", task.opened()).await.unwrap();
        let big = task.send(msg("big", BIG));
        let waiting = task.send(msg("w", 1000));
        tokio::time::sleep(ms(200)).await;

        // The close frame waits behind the big message; the flush deadline
        // (close_timeout) ends the task anyway.
        bounded("close", task.close(CloseOptions::default()))
            .await
            .unwrap();
        let close = bounded("closed", task.closed()).await;
        assert_eq!((close.code, close.was_clean), (1006, false));
        for (name, c) in [("big", big), ("waiting", waiting)] {
            let err = bounded(name, c).await.unwrap_err();
            assert!(
                err.err_msg().starts_with("sendSocketMessage:fail "),
                "{}",
                err.err_msg()
            );
        }
        assert_eq!(task.buffered_amount(), 0);
        log.wait_for("on_close", is_close, 1).await;
        assert_eq!(log.count(is_close), 1);
        assert_eq!(log.get().last(), Some(&Ev::Close(1006, false)));
    });
}
