//! Hostile servers on 127.0.0.1: each one tries to make the client hold
//! memory without bound, crash the process or hang, and each scenario checks
//! that the client ends with the error a user expects, within a memory bound
//! written in the test.
//!
//! Memory is measured by a counting allocator (this binary's global
//! allocator): the peak of the live heap during the scenario, over the heap
//! at its start. The peak RSS (`VmHWM` of `/proc/self/status`, reset at the
//! start where the kernel allows it) is printed beside it. Both are
//! process-wide, so every scenario runs in a child process of its own (see
//! [`isolated`]); the servers run in that process too and are written to
//! allocate little (a reused buffer each), which the bounds' slack covers.
//!
//! No test asserts a time. Servers that flood until the client stops
//! reading are watched for a stall ([`STALL`] without progress) only to know
//! when to go on; a hang is caught by the bounded waits of `support` and by
//! [`SCENARIO_TIMEOUT`].

mod support;

use std::future::Future;
use std::pin::Pin;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::alloc::{self, Counting};
use support::codec::{self, ServerCodec};
use support::{bounded, raw_server, raw_server_with, read_http_head, wait_until};
use unisocket::{
    connect_socket, Bytes, CloseEvent, CloseOptions, Completion, ConnectOptions, Data, ErrorKind,
    ReadyState, SendOptions, SendSuccess, SocketError, SocketTask,
};
use unisocket_proto::deflate::{Deflate, DeflateConfig, INFLATE_CHUNK};

// ---------------------------------------------------------------------------
// Measuring memory
// ---------------------------------------------------------------------------

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// What the runtime, a connection's buffers (a read buffer of up to 64 KiB,
/// write buffers, queues of a burst) and a flooding server's reused buffer
/// take on top of what a scenario's limit allows; measured at under 1 MiB
/// in every scenario that passes, taken four times over.
const SLACK: usize = 4 * MIB;

// `status_kib`: a field of `/proc/self/status` (`VmRSS`, `VmHWM`), as the
// examples read it.
#[allow(dead_code, reason = "the examples' open-files limit is not used here")]
#[path = "../examples/support/procfs.rs"]
mod procfs;
use procfs::status_kib;

/// The memory a scenario uses from the moment it is made.
struct Meter {
    /// The live heap at the start.
    heap: isize,
    /// The RSS at the start, in KiB.
    rss: Option<u64>,
    /// Whether `VmHWM` was reset to the RSS at the start (else it is the
    /// peak since the process started, which is only an upper bound).
    hwm_reset: bool,
}

impl Meter {
    fn start() -> Meter {
        // Resets VmHWM to the current RSS (Linux 4.0 and later).
        let hwm_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        let heap = alloc::reset_peak();
        Meter {
            heap,
            rss: status_kib("VmRSS:"),
            hwm_reset,
        }
    }

    /// The peak of the heap since the start, over the heap at the start.
    fn heap_peak(&self) -> usize {
        usize::try_from(alloc::peak() - self.heap).unwrap_or(0)
    }

    /// Prints the peaks, and asserts that the heap's stayed within `bound`
    /// bytes over the start.
    fn assert_within(&self, what: &str, bound: usize) {
        let heap = self.heap_peak();
        let rss = match (self.rss, status_kib("VmHWM:")) {
            (Some(start), Some(peak)) if self.hwm_reset => {
                format!("{:+.1} MiB", (peak as f64 - start as f64) / 1024.0)
            }
            (_, Some(peak)) => format!("{:.1} MiB since the process started", peak as f64 / 1024.0),
            _ => "unknown".to_owned(),
        };
        println!(
            "hostile: {what}: peak heap {:+.2} MiB (bound {:.2} MiB), peak RSS {rss}",
            heap as f64 / MIB as f64,
            bound as f64 / MIB as f64,
        );
        assert!(
            heap <= bound,
            "{what}: the heap grew by {heap} bytes ({:.1} MiB) at its peak, over the bound of {bound} bytes ({:.1} MiB)",
            heap as f64 / MIB as f64,
            bound as f64 / MIB as f64,
        );
    }
}

// ---------------------------------------------------------------------------
// One process per scenario
// ---------------------------------------------------------------------------

/// Set (to the scenario's name) in the child process that runs it.
const CHILD_ENV: &str = "UNISOCKET_HOSTILE_CHILD";
/// What the child prints once the scenario returned (and, for the teardown
/// scenarios, once its runtime was shut down).
const DONE: &str = "hostile scenario done:";
/// The bound of a whole scenario: a hang is a failure, not a stuck run.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `scenario` in a child process of its own, this test binary started
/// again for the test `name` alone: the memory it measures is its own, and
/// a crash (a stack overflow, an abort) fails this test instead of the
/// whole run. The child's output is printed here; the child must exit
/// normally and say that it ran the scenario to the end.
fn isolated(name: &str, scenario: impl FnOnce()) {
    if std::env::var(CHILD_ENV).as_deref() == Ok(name) {
        scenario();
        println!("{DONE} {name}");
        return;
    }
    let exe = std::env::current_exe().expect("current_exe");
    let out = Command::new(exe)
        .args([name, "--exact", "--include-ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(CHILD_ENV, name)
        .output()
        .expect("start the scenario's process");
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "{name}: the scenario's process ended with {}",
        out.status
    );
    assert!(
        stdout.contains(&format!("{DONE} {name}\n")),
        "{name}: the child process did not run the scenario to its end"
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Runs `body` on a runtime of its own, under [`SCENARIO_TIMEOUT`].
fn on_runtime<F: Future<Output = ()>>(body: F) {
    runtime().block_on(async {
        tokio::time::timeout(SCENARIO_TIMEOUT, body)
            .await
            .expect("the scenario did not end within 60 s");
    });
}

// ---------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------

/// Reads the client's opening handshake and answers 101 with the `extra`
/// headers; the codec holds what came after the request.
async fn upgrade(stream: &mut TcpStream, extra: &[(&str, &str)]) -> Option<ServerCodec> {
    let head = read_http_head(stream).await?;
    let (request, used) = codec::parse_request(&head).ok()??;
    stream
        .write_all(&codec::response_101(&request.key, None, extra))
        .await
        .ok()?;
    let mut codec = ServerCodec::new();
    codec.feed(&head[used..]);
    Some(codec)
}

/// The client's next frame; `None` once the connection ended.
async fn next_frame(
    stream: &mut (impl AsyncRead + Unpin),
    codec: &mut ServerCodec,
) -> Option<codec::Frame> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(frame) = codec.next_frame().ok()? {
            return Some(frame);
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => codec.feed(&chunk[..n]),
        }
    }
}

/// Reads frames until the client's close frame: its code (`Some(None)` for
/// an empty one), or `None` if the connection ended first.
async fn close_code(
    stream: &mut (impl AsyncRead + Unpin),
    codec: &mut ServerCodec,
) -> Option<Option<u16>> {
    loop {
        let frame = next_frame(stream, codec).await?;
        if frame.opcode == codec::OP_CLOSE {
            let p = &frame.payload;
            return Some((p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]])));
        }
    }
}

/// Reads and drops what comes until the client closes TCP.
async fn drain(stream: &mut TcpStream) {
    let mut chunk = [0u8; 4096];
    while matches!(stream.read(&mut chunk).await, Ok(n) if n > 0) {}
}

/// How long a flooding server's writes may make no progress before a
/// scenario takes it that the client stopped reading (TCP backpressure) and
/// goes on (the ping flood at a server that never reads asserts that it
/// stalls: a client that read on would let it finish).
const STALL: Duration = Duration::from_millis(500);

/// How far a flooding server got.
#[derive(Default)]
struct Progress {
    /// Bytes written so far.
    written: AtomicU64,
    /// Everything it meant to send was written.
    done: AtomicBool,
}

/// Watches a [`Progress`] for its end or a stall.
struct StallCheck {
    last: u64,
    since: Instant,
}

impl StallCheck {
    fn new() -> Self {
        StallCheck {
            last: 0,
            since: Instant::now(),
        }
    }

    /// `Some(false)` once the server is done, `Some(true)` once its writes
    /// made no progress for [`STALL`], `None` meanwhile.
    fn check(&mut self, progress: &Progress) -> Option<bool> {
        if progress.done.load(Ordering::SeqCst) {
            return Some(false);
        }
        let written = progress.written.load(Ordering::SeqCst);
        if written != self.last {
            self.last = written;
            self.since = Instant::now();
            None
        } else {
            (self.since.elapsed() >= STALL).then_some(true)
        }
    }
}

/// Waits until the server wrote everything or stalled; says whether it
/// stalled.
async fn done_or_stalled(progress: &Progress) -> bool {
    let mut check = StallCheck::new();
    let bound = Instant::now() + SCENARIO_TIMEOUT / 2;
    loop {
        if let Some(stalled) = check.check(progress) {
            return stalled;
        }
        assert!(
            Instant::now() < bound,
            "the server neither ended nor stalled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`done_or_stalled`] for a thread outside the runtime (a listener).
fn done_or_stalled_blocking(progress: &Progress) -> bool {
    let mut check = StallCheck::new();
    let bound = Instant::now() + SCENARIO_TIMEOUT / 2;
    loop {
        if let Some(stalled) = check.check(progress) {
            return stalled;
        }
        assert!(
            Instant::now() < bound,
            "the server neither ended nor stalled"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes all of `bytes`, counting them in `progress`; `false` if the
/// client went away.
async fn write_counted(stream: &mut TcpStream, bytes: &[u8], progress: &Progress) -> bool {
    let mut at = 0;
    while at < bytes.len() {
        match stream.write(&bytes[at..]).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => {
                at += n;
                progress.written.fetch_add(n as u64, Ordering::SeqCst);
            }
        }
    }
    true
}

/// The payload of the flood's text messages.
const FLOOD_MESSAGE: usize = KIB;
/// How many messages a flood sends: 64 MiB of them, far more than the
/// limits under test let the client hold.
const FLOOD_MESSAGES: u64 = 64 * 1024;
/// Messages per write of a flood.
const FLOOD_BATCH: u64 = 64;
/// A flood frame: 4 header bytes (126 and a 16-bit length), then the payload.
const FLOOD_FRAME: usize = 4 + FLOOD_MESSAGE;

/// Writes text messages of [`FLOOD_MESSAGE`] bytes numbered `first`,
/// `first + 1`, ... (`count` of them; the first 8 bytes are the number in
/// decimal), [`FLOOD_BATCH`] to a write from one reused buffer, counting
/// in `progress`; `false` if the client went away first.
async fn flood_text(stream: &mut TcpStream, first: u64, count: u64, progress: &Progress) -> bool {
    let mut frame =
        codec::encode_header_raw(true, 0, codec::OP_TEXT, FLOOD_MESSAGE as u64, 1, None);
    frame.resize(FLOOD_FRAME, b'x');
    let mut batch = frame.repeat(FLOOD_BATCH as usize);
    let mut n = first;
    while n < first + count {
        let in_batch = FLOOD_BATCH.min(first + count - n) as usize;
        for (k, frame) in batch.chunks_mut(FLOOD_FRAME).take(in_batch).enumerate() {
            frame[4..12].copy_from_slice(format!("{:08}", n + k as u64).as_bytes());
        }
        if !write_counted(stream, &batch[..in_batch * FLOOD_FRAME], progress).await {
            return false;
        }
        n += in_batch as u64;
    }
    true
}

/// Counts the flood's messages and checks their order.
#[derive(Default)]
struct Tally {
    /// Messages seen.
    seen: AtomicU64,
    /// Messages whose number was not the next one.
    out_of_order: AtomicU64,
}

impl Tally {
    fn see(&self, data: &Data) {
        let n = self.seen.fetch_add(1, Ordering::SeqCst);
        let number = std::str::from_utf8(&data.as_bytes()[..8.min(data.len())])
            .ok()
            .and_then(|s| s.parse::<u64>().ok());
        if data.len() != FLOOD_MESSAGE || number != Some(n) {
            self.out_of_order.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn assert_all(&self, count: u64) {
        assert_eq!(
            self.seen.load(Ordering::SeqCst),
            count,
            "messages delivered"
        );
        assert_eq!(
            self.out_of_order.load(Ordering::SeqCst),
            0,
            "messages out of order or changed"
        );
    }
}

// ---------------------------------------------------------------------------
// Watching a task
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Ev {
    Open,
    Error(SocketError),
    Close(CloseEvent),
}

/// A task whose open, error and close events are logged in order.
struct Watch {
    task: SocketTask,
    log: Arc<Mutex<Vec<Ev>>>,
}

impl Watch {
    fn connect(options: ConnectOptions) -> Watch {
        let task = connect_socket(options);
        let log: Arc<Mutex<Vec<Ev>>> = Arc::default();
        let l = log.clone();
        task.on_open(move |_| l.lock().unwrap().push(Ev::Open));
        let l = log.clone();
        task.on_error(move |ev| {
            assert_eq!(ev.err_msg, ev.error.err_msg());
            l.lock().unwrap().push(Ev::Error(ev.error.clone()));
        });
        let l = log.clone();
        task.on_close(move |ev| l.lock().unwrap().push(Ev::Close(ev.clone())));
        Watch { task, log }
    }

    /// Closes with a server that never answers the close: the close
    /// timeout (300 ms in these scenarios) ends it with 1006, no error, and
    /// `close()` still succeeds.
    async fn close_unanswered(&self) {
        let close = self.task.close(CloseOptions::default());
        let event = self.ends(true, None).await;
        assert_eq!(event.code, 1006, "{event:?}");
        assert!(!event.was_clean);
        assert_eq!(
            event.reason,
            "the server did not answer the close within 300 ms"
        );
        let closed = bounded("close()", close).await.expect("close() succeeds");
        assert_eq!(closed.err_msg, "closeSocket:ok");
    }

    async fn open(&self) {
        bounded("the open", self.task.opened())
            .await
            .expect("the connection opens");
    }

    fn events(&self) -> Vec<Ev> {
        self.log.lock().unwrap().clone()
    }

    /// Waits for the close, and checks that the events were the open (if
    /// `opened`), then an error of `error`'s kind whose reason contains its
    /// wording (if `error` is given, else none), then the close, whose event
    /// it returns.
    async fn ends(&self, opened: bool, error: Option<(ErrorKind, &str)>) -> CloseEvent {
        let close = bounded("the close", self.task.closed()).await;
        // The close event reaches the listeners after what the dispatcher
        // still has to deliver; then let a stray late event show up.
        wait_until("the close event", || {
            matches!(self.log.lock().unwrap().last(), Some(Ev::Close(_)))
        })
        .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let events = self.events();
        let mut rest = &events[..];
        if opened {
            let [Ev::Open, tail @ ..] = rest else {
                panic!("expected the open first: {events:?}");
            };
            rest = tail;
        }
        match (error, rest) {
            (Some((kind, wording)), [Ev::Error(err), Ev::Close(logged)]) => {
                assert_eq!(*logged, close);
                assert_eq!(err.kind(), kind, "{err:?}");
                assert!(
                    err.err_msg().starts_with("connectSocket:fail "),
                    "{}",
                    err.err_msg()
                );
                assert!(
                    err.reason().contains(wording),
                    "{:?} does not contain {wording:?}",
                    err.reason()
                );
            }
            (None, [Ev::Close(logged)]) => assert_eq!(*logged, close),
            _ => panic!("expected an error {error:?} then the close: {events:?}"),
        }
        assert_eq!(self.task.ready_state(), ReadyState::Closed);
        close
    }
}

/// Options every scenario starts from: no proxy from the environment.
fn opts(url: &str) -> ConnectOptions {
    ConnectOptions::new(url).no_proxy()
}

fn url(addr: std::net::SocketAddr) -> String {
    format!("ws://{addr}/")
}

/// Polls `fut` once, with a waker that does nothing.
fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    Pin::new(fut).poll(&mut Context::from_waker(Waker::noop()))
}

// ---------------------------------------------------------------------------
// Pings
// ---------------------------------------------------------------------------

/// A ping with a 125-byte payload (the most a control frame may carry),
/// its last 8 bytes the number `n` in decimal.
fn numbered_ping(n: u64) -> Vec<u8> {
    let mut payload = [b'p'; 125];
    payload[117..].copy_from_slice(format!("{:08}", n % 100_000_000).as_bytes());
    codec::server_ping(&payload)
}

/// How many pings the server that never reads sends at most: 256 MiB of
/// them. Answered ping by ping, 64 MiB would fill every socket buffer on
/// the way back many times over; coalesced, the client writes about a
/// twentieth of what it reads (about 3 MiB of pongs for 64 MiB of pings,
/// measured), and its send buffer grows to 4 MiB (`tcp_wmem`) before the
/// pongs back up.
const PINGS: u64 = (256 * MIB / 127) as u64;
/// How many pings the server that reads sends: 8 MiB of them, each one
/// answered or coalesced (the client is a debug build in `cargo test`).
const LINE_RATE_PINGS: u64 = (8 * MIB / 127) as u64;

/// The server floods pings with 125-byte payloads and never reads (nor
/// has room to hold much of what it is sent: a 4 KiB receive buffer): the
/// client may not queue a pong per ping (past a few they coalesce to the
/// latest, RFC 6455 5.5.3) nor read on while what it must write piles up: once the socket buffers are full and a few pongs wait,
/// it stops reading, and the server stalls long before the end of its
/// flood. The heap stays small. The client stays OPEN (pings are a live
/// server), so the application ends it: its close frame cannot reach a
/// server that does not read, and the close timeout ends the task with
/// 1006, with no error event (as any close the server does not answer).
#[test]
fn ping_flood_from_a_server_that_never_reads() {
    isolated("ping_flood_from_a_server_that_never_reads", || {
        on_runtime(async {
            let progress = Arc::new(Progress::default());
            let p = progress.clone();
            let addr = raw_server_with(Some(4096), move |mut stream| {
                let p = p.clone();
                async move {
                    if upgrade(&mut stream, &[]).await.is_none() {
                        return;
                    }
                    let batch: Vec<u8> = (0..512).flat_map(numbered_ping).collect();
                    let mut sent = 0;
                    while sent < PINGS {
                        if !write_counted(&mut stream, &batch, &p).await {
                            return;
                        }
                        sent += 512;
                    }
                    p.done.store(true, Ordering::SeqCst);
                    // Never reads, never closes.
                    tokio::time::sleep(SCENARIO_TIMEOUT).await;
                }
            })
            .await;
            let meter = Meter::start();
            let watch = Watch::connect(opts(&url(addr)).close_timeout(Duration::from_millis(300)));
            watch.open().await;
            let stalled = done_or_stalled(&progress).await;
            println!(
                "hostile: the server wrote {} MiB of pings ({})",
                progress.written.load(Ordering::SeqCst) >> 20,
                if stalled {
                    "then stalled"
                } else {
                    "all of them"
                }
            );
            assert!(
                stalled,
                "the client read the whole flood from a server that never reads its pongs"
            );
            assert_eq!(watch.task.ready_state(), ReadyState::Open);
            watch.close_unanswered().await;
            meter.assert_within("ping flood, server never reads", SLACK);
        });
    });
}

/// The server floods pings with 125-byte payloads at line rate and reads
/// what comes back: the client keeps up (pongs coalesced, at least the
/// latest ping answered), holds little, and the connection ends cleanly
/// when the server closes with 1000.
#[test]
fn ping_flood_at_line_rate_from_a_server_that_reads() {
    isolated("ping_flood_at_line_rate_from_a_server_that_reads", || {
        on_runtime(async {
            let pongs = Arc::new(AtomicU64::new(0));
            let last_answered = Arc::new(AtomicBool::new(false));
            let (pg, la) = (pongs.clone(), last_answered.clone());
            let addr = raw_server(move |mut stream| {
                let (pongs, last_answered) = (pg.clone(), la.clone());
                async move {
                    let Some(mut codec) = upgrade(&mut stream, &[]).await else {
                        return;
                    };
                    let (mut rd, mut wr) = stream.into_split();
                    let last = numbered_ping(LINE_RATE_PINGS);
                    let last_payload = last[2..].to_vec();
                    let (tx, mut got_last) = tokio::sync::mpsc::unbounded_channel();
                    let reader = tokio::spawn(async move {
                        let mut chunk = [0u8; 16 * 1024];
                        let mut told = false;
                        loop {
                            while let Ok(Some(frame)) = codec.next_frame() {
                                match frame.opcode {
                                    codec::OP_PONG => {
                                        pongs.fetch_add(1, Ordering::SeqCst);
                                        if frame.payload == last_payload && !told {
                                            told = true;
                                            let _ = tx.send(());
                                        }
                                    }
                                    codec::OP_CLOSE => return Some(frame.payload),
                                    _ => {}
                                }
                            }
                            match rd.read(&mut chunk).await {
                                Ok(0) | Err(_) => return None,
                                Ok(n) => codec.feed(&chunk[..n]),
                            }
                        }
                    });
                    let batch: Vec<u8> = (0..512).flat_map(numbered_ping).collect();
                    let mut sent = 0;
                    while sent < LINE_RATE_PINGS {
                        if wr.write_all(&batch).await.is_err() {
                            return;
                        }
                        sent += 512;
                    }
                    // The last ping must be answered: pongs coalesce to the
                    // latest ping, never to none.
                    let _ = wr.write_all(&last).await;
                    if got_last.recv().await.is_some() {
                        last_answered.store(true, Ordering::SeqCst);
                    }
                    let _ = wr.write_all(&codec::server_close(Some(1000), "done")).await;
                    let _ = reader.await;
                    let _ = wr.shutdown().await;
                }
            })
            .await;
            let meter = Meter::start();
            let watch = Watch::connect(opts(&url(addr)));
            watch.open().await;
            let event = watch.ends(true, None).await;
            assert_eq!(event.code, 1000, "{event:?}");
            assert!(event.was_clean);
            assert!(
                last_answered.load(Ordering::SeqCst),
                "the last ping was not answered"
            );
            let pongs = pongs.load(Ordering::SeqCst);
            println!("hostile: {} pings, {pongs} pongs", LINE_RATE_PINGS + 1);
            assert!((1..=LINE_RATE_PINGS + 1).contains(&pongs), "{pongs} pongs");
            meter.assert_within("ping flood at line rate", SLACK);
        });
    });
}

// ---------------------------------------------------------------------------
// Floods of messages
// ---------------------------------------------------------------------------

/// `max_held_bytes` in the flood scenarios: the client may hold this much
/// of the messages nobody took yet.
const MAX_HELD: usize = MIB;

/// A server that upgrades and sends `first` messages (numbered from 0)
/// and a ping at once; once the pong comes (the client has read the
/// messages: they come before the ping), sets `first_read`. Then it waits
/// for a text frame from the client (the go-ahead), floods
/// [`FLOOD_MESSAGES`] more and closes with 1000 (reading to the end).
async fn flood_server(
    first: u64,
    first_read: Arc<AtomicBool>,
    progress: Arc<Progress>,
) -> std::net::SocketAddr {
    raw_server(move |mut stream| {
        let (first_read, progress) = (first_read.clone(), progress.clone());
        async move {
            let Some(mut codec) = upgrade(&mut stream, &[]).await else {
                return;
            };
            if !flood_text(&mut stream, 0, first, &Progress::default()).await
                || stream.write_all(&codec::server_ping(b"")).await.is_err()
            {
                return;
            }
            let mut go = false;
            while !go {
                let Some(frame) = next_frame(&mut stream, &mut codec).await else {
                    return;
                };
                first_read.fetch_or(frame.opcode == codec::OP_PONG, Ordering::SeqCst);
                go = frame.opcode == codec::OP_TEXT;
            }
            if !flood_text(&mut stream, first, FLOOD_MESSAGES, &progress).await {
                return;
            }
            progress.done.store(true, Ordering::SeqCst);
            let _ = stream
                .write_all(&codec::server_close(Some(1000), "done"))
                .await;
            let _ = close_code(&mut stream, &mut codec).await;
            let _ = stream.shutdown().await;
        }
    })
    .await
}

/// The end of a flood scenario: every message delivered in order, the
/// server's close 1000, and the heap within `max_held_bytes` and the slack.
async fn flood_ends(watch: &Watch, tally: &Tally, expected: u64, meter: &Meter, what: &str) {
    let event = watch.ends(true, None).await;
    assert_eq!(event.code, 1000, "{event:?}");
    assert!(event.was_clean);
    tally.assert_all(expected);
    meter.assert_within(what, MAX_HELD + SLACK);
}

/// The server floods 1 KiB text messages while the task's dispatcher is
/// busy: an `on_open` listener registered late, from a thread of the
/// application, runs long (until the server has sent everything or stalls).
/// The messages queued for `on_message` meanwhile must count in
/// `max_held_bytes`, so that reading pauses and the server is held back by
/// TCP; then everything is delivered, in order, and the server's close
/// 1000 ends the task.
#[test]
fn flood_while_a_late_on_open_listener_runs_long() {
    isolated("flood_while_a_late_on_open_listener_runs_long", || {
        on_runtime(async {
            let progress = Arc::new(Progress::default());
            let addr = flood_server(0, Arc::default(), progress.clone()).await;
            let meter = Meter::start();
            let watch = Watch::connect(opts(&url(addr)).max_held_bytes(MAX_HELD));
            let tally = Arc::new(Tally::default());
            let t = tally.clone();
            watch.task.on_message(move |ev| t.see(&ev.data));
            watch.open().await;
            // The dispatcher ran the open listeners (on the driver's thread)
            // and is idle: the late listener will run on its own thread.
            wait_until("the open event", || !watch.events().is_empty()).await;
            tokio::time::sleep(Duration::from_millis(50)).await;

            let started = Arc::new(AtomicBool::new(false));
            let (task, s, p) = (watch.task.clone(), started.clone(), progress.clone());
            let listener = std::thread::spawn(move || {
                let here = std::thread::current().id();
                let ran_here = Arc::new(AtomicBool::new(false));
                let r = ran_here.clone();
                // Registered after the open: called at once, on this thread.
                task.on_open(move |_| {
                    r.store(std::thread::current().id() == here, Ordering::SeqCst);
                    s.store(true, Ordering::SeqCst);
                    done_or_stalled_blocking(&p);
                });
                ran_here.load(Ordering::SeqCst)
            });
            wait_until("the late on_open listener to start", || {
                started.load(Ordering::SeqCst)
            })
            .await;
            watch.task.send("go");
            wait_until("the late on_open listener to return", || {
                listener.is_finished()
            })
            .await;
            assert!(
                listener.join().expect("the listener's thread"),
                "the late listener did not run on the thread that registered it"
            );
            flood_ends(
                &watch,
                &tally,
                FLOOD_MESSAGES,
                &meter,
                "flood while a late on_open listener runs long",
            )
            .await;
        });
    });
}

/// As above, with the other way a dispatcher gets busy on another thread:
/// a message is held (no listener yet), then an `on_message` listener is
/// registered from a thread of the application, which takes the held
/// message on that thread and runs long on it. The messages that arrive
/// meanwhile queue behind it and must count in `max_held_bytes`.
#[test]
fn flood_while_an_on_message_listener_registered_late_runs_long() {
    isolated(
        "flood_while_an_on_message_listener_registered_late_runs_long",
        || {
            on_runtime(async {
                let progress = Arc::new(Progress::default());
                let first_read = Arc::new(AtomicBool::new(false));
                let addr = flood_server(1, first_read.clone(), progress.clone()).await;
                let meter = Meter::start();
                let watch = Watch::connect(opts(&url(addr)).max_held_bytes(MAX_HELD));
                watch.open().await;
                // No listener yet: the first message is held.
                wait_until("the client to read the first message", || {
                    first_read.load(Ordering::SeqCst)
                })
                .await;

                let tally = Arc::new(Tally::default());
                let started = Arc::new(AtomicBool::new(false));
                let (task, t, s, p) = (
                    watch.task.clone(),
                    tally.clone(),
                    started.clone(),
                    progress.clone(),
                );
                let listener = std::thread::spawn(move || {
                    let here = std::thread::current().id();
                    let first_here = Arc::new(AtomicBool::new(false));
                    let f = first_here.clone();
                    task.on_message(move |ev| {
                        t.see(&ev.data);
                        if !s.swap(true, Ordering::SeqCst) {
                            f.store(std::thread::current().id() == here, Ordering::SeqCst);
                            done_or_stalled_blocking(&p);
                        }
                    });
                    first_here.load(Ordering::SeqCst)
                });
                wait_until("the held message to reach the listener", || {
                    started.load(Ordering::SeqCst)
                })
                .await;
                watch.task.send("go");
                flood_ends(
                    &watch,
                    &tally,
                    FLOOD_MESSAGES + 1,
                    &meter,
                    "flood while an on_message listener registered late runs long",
                )
                .await;
                assert!(
                    listener.join().expect("the listener's thread"),
                    "the held message was not delivered on the thread that registered the listener"
                );
            });
        },
    );
}

/// The same flood with no listener: messages are held for `recv`, and
/// nobody takes any until the server has sent everything or stalls. The
/// held messages stay within `max_held_bytes` (reading pauses); then `recv`
/// takes them all, in order, and ends after the server's close.
#[test]
fn flood_held_for_a_consumer_that_does_not_take() {
    isolated("flood_held_for_a_consumer_that_does_not_take", || {
        on_runtime(async {
            let progress = Arc::new(Progress::default());
            let addr = flood_server(0, Arc::default(), progress.clone()).await;
            let meter = Meter::start();
            let watch = Watch::connect(opts(&url(addr)).max_held_bytes(MAX_HELD));
            watch.open().await;
            watch.task.send("go");
            let stalled = done_or_stalled(&progress).await;
            assert!(
                stalled,
                "the client read the whole 64 MiB flood with nobody taking it \
                 (far more than the socket buffers hold)"
            );
            let tally = Tally::default();
            while let Some(data) = bounded("a held message", watch.task.recv()).await {
                tally.see(&data);
            }
            flood_ends(
                &watch,
                &tally,
                FLOOD_MESSAGES,
                &meter,
                "flood held for recv",
            )
            .await;
        });
    });
}

/// The application closes while the server floods messages and never
/// answers the close (nor reads): the close frame never comes, and the data
/// that keeps coming must not keep the task alive. The close timeout ends it
/// with 1006 and no error event; the heap stays within the held limit.
#[test]
fn close_frame_that_never_comes_while_data_keeps_coming() {
    isolated(
        "close_frame_that_never_comes_while_data_keeps_coming",
        || {
            on_runtime(async {
                let addr = raw_server(|mut stream| async move {
                    if upgrade(&mut stream, &[]).await.is_none() {
                        return;
                    }
                    // Until the client goes away; never reads.
                    flood_text(&mut stream, 0, u64::MAX / 2, &Progress::default()).await;
                })
                .await;
                let meter = Meter::start();
                let watch = Watch::connect(
                    opts(&url(addr))
                        .max_held_bytes(MAX_HELD)
                        .close_timeout(Duration::from_millis(500)),
                );
                let tally = Arc::new(Tally::default());
                let t = tally.clone();
                watch.task.on_message(move |ev| t.see(&ev.data));
                watch.open().await;
                wait_until("a thousand messages", || {
                    tally.seen.load(Ordering::SeqCst) >= 1000
                })
                .await;
                let close = watch.task.close(CloseOptions::default());
                let event = watch.ends(true, None).await;
                assert_eq!(event.code, 1006, "{event:?}");
                assert!(!event.was_clean);
                assert_eq!(
                    event.reason,
                    "the server did not answer the close within 500 ms"
                );
                let closed = bounded("close()", close).await.expect("close() succeeds");
                assert_eq!(closed.err_msg, "closeSocket:ok");
                let seen = tally.seen.load(Ordering::SeqCst);
                tally.assert_all(seen);
                println!("hostile: {seen} messages before the close");
                meter.assert_within("close that never comes under a flood", MAX_HELD + SLACK);
            });
        },
    );
}

// ---------------------------------------------------------------------------
// Large messages
// ---------------------------------------------------------------------------

/// The default `max_message_size`, 64 MiB.
const DEFAULT_MAX_MESSAGE: usize = 64 * MIB;

/// The payload of a compressed message (RFC 7692) that inflates to `mib`
/// MiB of zeros: a first MiB, then the same compressed MiB over and over
/// (with the window full of zeros, each one inflates the same), each ended
/// by the sync flush's empty block; the last one's `00 00 ff ff` left off,
/// as permessage-deflate sends it. (Compressing 65 MiB takes seconds in a
/// debug build; this takes two compressions of 1 MiB.)
fn zeros_bomb(mib: usize) -> Vec<u8> {
    const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
    let params = DeflateConfig::default()
        .negotiate(Some("permessage-deflate"))
        .expect("an answer the client accepts")
        .expect("compression in force");
    let mut deflate = Deflate::new(params);
    let zeros = vec![0u8; MIB];
    let (mut packed, mut next) = (Vec::new(), Vec::new());
    deflate.compress(&zeros, &mut packed);
    deflate.compress(&zeros, &mut next);
    for _ in 1..mib {
        packed.extend_from_slice(&TAIL);
        packed.extend_from_slice(&next);
    }
    packed.shrink_to_fit();
    packed
}

/// A permessage-deflate bomb: a frame of about 650 KB that inflates to
/// 65 MiB of zeros, against the default 64 MiB `max_message_size`. The
/// client fails with 1009 (and says so in its close frame), having inflated
/// no more than the limit plus one inflate chunk (64 KiB), which is also
/// the most it holds of the message.
#[test]
fn deflate_bomb_against_the_default_message_size() {
    isolated("deflate_bomb_against_the_default_message_size", || {
        on_runtime(async {
            let packed = zeros_bomb(DEFAULT_MAX_MESSAGE / MIB + 1);
            let frame = Arc::new(codec::encode_frame(
                true,
                4,
                codec::OP_BINARY,
                &packed,
                None,
            ));
            drop(packed);
            let frame_len = frame.len();
            println!("hostile: the bomb is a frame of {frame_len} bytes");

            let (tx, mut sent) = tokio::sync::mpsc::unbounded_channel();
            let addr = raw_server(move |mut stream| {
                let (frame, tx) = (frame.clone(), tx.clone());
                async move {
                    let extensions = [("Sec-WebSocket-Extensions", "permessage-deflate")];
                    let Some(mut codec) = upgrade(&mut stream, &extensions).await else {
                        return;
                    };
                    let _ = stream.write_all(&frame).await;
                    let _ = tx.send(close_code(&mut stream, &mut codec).await);
                    drain(&mut stream).await;
                }
            })
            .await;
            let meter = Meter::start();
            let watch = Watch::connect(opts(&url(addr)).per_message_deflate(true));
            watch.open().await;
            let event = watch
                .ends(
                    true,
                    Some((ErrorKind::Protocol, "over the limit of 67108864 bytes")),
                )
                .await;
            assert_eq!(event.code, 1009, "{event:?}");
            assert!(!event.was_clean);
            // "server sent a message of N bytes or more, ...": N is what had
            // inflated when it stopped.
            let inflated: usize = event
                .reason
                .strip_prefix("server sent a message of ")
                .and_then(|r| r.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{:?}", event.reason));
            assert!(
                inflated > DEFAULT_MAX_MESSAGE && inflated <= DEFAULT_MAX_MESSAGE + INFLATE_CHUNK,
                "inflated {inflated} bytes"
            );
            let code = bounded("the server's report", sent.recv()).await;
            assert_eq!(code, Some(Some(Some(1009))), "the client's close frame");
            // The inflated message (the limit and one chunk), the compressed
            // frame in the read buffer, and the slack.
            meter.assert_within(
                "deflate bomb",
                DEFAULT_MAX_MESSAGE + INFLATE_CHUNK + frame_len + SLACK,
            );
        });
    });
}

/// Fragments of a message that never ends: a first frame without FIN, then
/// continuation frames without FIN for ever, 65 000 bytes each (a size
/// that is no power of two, so that a buffer grown by doubling overshoots).
/// The default 64 MiB `max_message_size` stops it with 1009, and the client
/// never holds much more than the limit.
#[test]
fn endless_continuation_frames() {
    isolated("endless_continuation_frames", || {
        on_runtime(async {
            const FRAGMENT: usize = 65_000;
            let (tx, mut sent) = tokio::sync::mpsc::unbounded_channel();
            let addr = raw_server(move |mut stream| {
                let tx = tx.clone();
                async move {
                    let Some(mut codec) = upgrade(&mut stream, &[]).await else {
                        return;
                    };
                    let payload = vec![0x42u8; FRAGMENT];
                    let first = codec::encode_frame(false, 0, codec::OP_BINARY, &payload, None);
                    let more =
                        codec::encode_frame(false, 0, codec::OP_CONTINUATION, &payload, None);
                    drop(payload);
                    let (mut rd, mut wr) = stream.into_split();
                    let writer = tokio::spawn(async move {
                        if wr.write_all(&first).await.is_err() {
                            return;
                        }
                        while wr.write_all(&more).await.is_ok() {}
                    });
                    let _ = tx.send(close_code(&mut rd, &mut codec).await);
                    writer.abort();
                }
            })
            .await;
            let meter = Meter::start();
            let watch = Watch::connect(opts(&url(addr)));
            watch.open().await;
            let event = watch
                .ends(
                    true,
                    Some((
                        ErrorKind::Protocol,
                        "bytes or more, over the limit of 67108864 bytes",
                    )),
                )
                .await;
            assert_eq!(event.code, 1009, "{event:?}");
            assert!(!event.was_clean);
            let code = bounded("the server's report", sent.recv()).await;
            assert_eq!(code, Some(Some(Some(1009))), "the client's close frame");
            // The message up to the limit, one fragment in the read buffer,
            // and the slack.
            meter.assert_within(
                "endless continuation frames",
                DEFAULT_MAX_MESSAGE + FRAGMENT + SLACK,
            );
        });
    });
}

/// A million empty continuation frames: the message does not grow, so no
/// size limit applies, but each frame must not cost memory of its own. The
/// message arrives whole once its last fragment comes, and the server's
/// close 1000 ends the task.
#[test]
fn a_million_empty_continuation_frames() {
    isolated("a_million_empty_continuation_frames", || {
        on_runtime(async {
            let addr = raw_server(|mut stream| async move {
                let Some(mut codec) = upgrade(&mut stream, &[]).await else {
                    return;
                };
                let empty = codec::encode_frame(false, 0, codec::OP_CONTINUATION, b"", None);
                let batch = empty.repeat(32 * 1024);
                let mut out = codec::encode_frame(false, 0, codec::OP_TEXT, b"begin,", None);
                if stream.write_all(&out).await.is_err() {
                    return;
                }
                for _ in 0..32 {
                    if stream.write_all(&batch).await.is_err() {
                        return;
                    }
                }
                out = codec::encode_frame(true, 0, codec::OP_CONTINUATION, b"end", None);
                out.extend_from_slice(&codec::server_close(Some(1000), "done"));
                let _ = stream.write_all(&out).await;
                let _ = close_code(&mut stream, &mut codec).await;
                let _ = stream.shutdown().await;
            })
            .await;
            let meter = Meter::start();
            let watch = Watch::connect(opts(&url(addr)));
            let got: Arc<Mutex<Vec<Data>>> = Arc::default();
            let g = got.clone();
            watch
                .task
                .on_message(move |ev| g.lock().unwrap().push(ev.data.clone()));
            watch.open().await;
            let event = watch.ends(true, None).await;
            assert_eq!(event.code, 1000, "{event:?}");
            assert!(event.was_clean);
            assert_eq!(*got.lock().unwrap(), [Data::from("begin,end")]);
            meter.assert_within("a million empty continuation frames", SLACK);
        });
    });
}

/// A frame header that declares 2^63 - 1 bytes (the largest length the
/// 64-bit field allows) and no payload: refused from its header, before
/// any allocation, with 1009. With the frame limit lifted, the message
/// limit refuses it the same way.
#[test]
fn frame_declaring_2_pow_63_minus_1_bytes() {
    isolated("frame_declaring_2_pow_63_minus_1_bytes", || {
        on_runtime(async {
            let (tx, mut sent) = tokio::sync::mpsc::unbounded_channel();
            let addr = raw_server(move |mut stream| {
                let tx = tx.clone();
                async move {
                    let Some(mut codec) = upgrade(&mut stream, &[]).await else {
                        return;
                    };
                    let header =
                        codec::encode_header_raw(true, 0, codec::OP_BINARY, (1 << 63) - 1, 2, None);
                    let _ = stream.write_all(&header).await;
                    let _ = tx.send(close_code(&mut stream, &mut codec).await);
                    drain(&mut stream).await;
                }
            })
            .await;
            let meter = Meter::start();
            let cases = [
                (
                    opts(&url(addr)),
                    "server sent a message of 9223372036854775807 bytes or more, over the limit of 67108864 bytes",
                ),
                (
                    opts(&url(addr)).max_frame_size(16 << 20),
                    "server sent a frame of 9223372036854775807 bytes, over the limit of 16777216 bytes",
                ),
            ];
            for (options, wording) in cases {
                let watch = Watch::connect(options);
                watch.open().await;
                let event = watch.ends(true, Some((ErrorKind::Protocol, wording))).await;
                assert_eq!(event.code, 1009, "{event:?}");
                assert!(!event.was_clean);
                let code = bounded("the server's report", sent.recv()).await;
                assert_eq!(code, Some(Some(Some(1009))), "the client's close frame");
            }
            meter.assert_within("a frame declaring 2^63 - 1 bytes", SLACK);
        });
    });
}

// ---------------------------------------------------------------------------
// Servers that do not read
// ---------------------------------------------------------------------------

/// A server that upgrades and then neither reads nor writes.
async fn deaf_server() -> std::net::SocketAddr {
    raw_server(|mut stream| async move {
        if upgrade(&mut stream, &[]).await.is_some() {
            tokio::time::sleep(SCENARIO_TIMEOUT).await;
        }
    })
    .await
}

/// `max_buffered_bytes` in the send scenarios.
const MAX_BUFFERED: usize = MIB;
/// The size of each message they send.
const SEND_SIZE: usize = 64 * KIB;
/// The bound of `buffered_amount()` in [`dropped_sends_cannot_park_past_max_buffered_bytes`]:
/// the documented limit of the bytes sends may hold, twice
/// `max_buffered_bytes` (as much in flight, as much waiting) and one
/// message (README, limits; `ConnectOptions::max_buffered_bytes`).
const SEND_LIMIT: usize = 2 * MAX_BUFFERED + SEND_SIZE;

/// To a server that never reads, the application sends 64 KiB messages and
/// drops every `Completion`, as fire-and-forget code does, 64 MiB in all:
/// the bytes the sends hold (`buffered_amount()`) and the heap stay within
/// the documented limit whether or not a `Completion` is kept. Past it a
/// send fails at once, with a clear errMsg, through its `Completion` as
/// through its `fail` callback. Closing then ends with the close timeout
/// (the server reads nothing).
#[test]
fn dropped_sends_cannot_park_past_max_buffered_bytes() {
    isolated("dropped_sends_cannot_park_past_max_buffered_bytes", || {
        on_runtime(async {
            let addr = deaf_server().await;
            let meter = Meter::start();
            let watch = Watch::connect(
                opts(&url(addr))
                    .max_buffered_bytes(MAX_BUFFERED)
                    .close_timeout(Duration::from_millis(300)),
            );
            watch.open().await;
            let mut highest = 0;
            for _ in 0..64 * MIB / SEND_SIZE {
                // A new buffer per message, as an application makes them.
                watch.task.send(vec![0x5Au8; SEND_SIZE]);
                highest = highest.max(watch.task.buffered_amount());
            }
            println!(
                "hostile: buffered_amount() reached {highest} bytes ({:.1} MiB), limit {SEND_LIMIT}",
                highest as f64 / MIB as f64
            );
            // The sends' bytes up to the limit, one message being made, the
            // slack.
            meter.assert_within(
                "sends to a server that never reads",
                SEND_LIMIT + SEND_SIZE + SLACK,
            );
            assert!(
                highest <= SEND_LIMIT,
                "buffered_amount() reached {highest} bytes, over the limit of {SEND_LIMIT}"
            );
            // Past the limit, a send fails at once: through its Completion...
            // (The server's kernel may still take a little now and then, as
            // its receive buffer grows: a send may find room; the next ones
            // fill it again.)
            let err = (0..64)
                .find_map(|_| {
                    let mut kept: Completion<SendSuccess> =
                        watch.task.send(vec![0x5Au8; SEND_SIZE]);
                    match poll_once(&mut kept) {
                        Poll::Ready(Err(err)) => Some(err),
                        _ => None,
                    }
                })
                .expect("no send past the limit failed at once");
            assert!(watch.task.buffered_amount() <= SEND_LIMIT);
            assert_eq!(err.kind(), ErrorKind::BufferFull, "{err:?}");
            assert!(
                err.err_msg()
                    .starts_with("sendSocketMessage:fail send buffer full")
                    && err.err_msg().contains("max_buffered_bytes"),
                "{}",
                err.err_msg()
            );
            // ...and through its fail callback.
            let (tx, rx) = std::sync::mpsc::channel();
            watch
                .task
                .send(SendOptions::new(vec![0x5Au8; SEND_SIZE]).fail(move |e| {
                    let _ = tx.send(e.clone());
                }));
            let err = rx.try_recv().expect("the fail callback, at once");
            assert_eq!(err.kind(), ErrorKind::BufferFull, "{err:?}");

            watch.close_unanswered().await;
        });
    });
}

/// The server reads the first MiB of a 32 MiB message, then stops reading
/// (mid-message). `buffered_amount()` holds that one message (sent alone,
/// as a message larger than the mark may be) and no more: later sends fail
/// at once with `send buffer full`. `close` cannot get its frame out behind
/// the message: the close timeout ends the task with 1006, and the message's
/// send fails with "closed before the message was sent".
#[test]
fn server_stops_reading_mid_message() {
    isolated("server_stops_reading_mid_message", || {
        on_runtime(async {
            const BIG: usize = 32 * MIB;
            let read_some = Arc::new(AtomicBool::new(false));
            let r = read_some.clone();
            let addr = raw_server(move |mut stream| {
                let read_some = r.clone();
                async move {
                    if upgrade(&mut stream, &[]).await.is_none() {
                        return;
                    }
                    let mut chunk = vec![0u8; 64 * KIB];
                    let mut total = 0;
                    while total < MIB {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => total += n,
                        }
                    }
                    drop(chunk);
                    read_some.store(true, Ordering::SeqCst);
                    tokio::time::sleep(SCENARIO_TIMEOUT).await;
                }
            })
            .await;
            let meter = Meter::start();
            let watch = Watch::connect(opts(&url(addr)).close_timeout(Duration::from_millis(300)));
            watch.open().await;
            let big = watch.task.send(Bytes::from(vec![7u8; BIG]));
            wait_until("the server to read the start of the message", || {
                read_some.load(Ordering::SeqCst)
            })
            .await;
            // The rest fills the socket buffers, then waits: 31 MiB is more
            // than they hold (a receive buffer grows only while its
            // application reads, from `tcp_rmem`'s default of 128 KiB).
            tokio::time::sleep(Duration::from_millis(200)).await;
            let held = watch.task.buffered_amount();
            assert!(held > 0 && held <= BIG, "buffered_amount() {held}");
            let failures = Arc::new(AtomicUsize::new(0));
            for _ in 0..16 {
                let f = failures.clone();
                watch
                    .task
                    .send(SendOptions::new(vec![1u8; SEND_SIZE]).fail(move |e| {
                        assert_eq!(e.kind(), ErrorKind::BufferFull, "{e:?}");
                        f.fetch_add(1, Ordering::SeqCst);
                    }));
                assert!(watch.task.buffered_amount() <= held);
            }
            assert_eq!(failures.load(Ordering::SeqCst), 16, "sends failed at once");

            watch.close_unanswered().await;
            let err = bounded("the message's send", big)
                .await
                .expect_err("the message could not be sent");
            assert_eq!(err.kind(), ErrorKind::Closed, "{err:?}");
            assert_eq!(
                err.err_msg(),
                "sendSocketMessage:fail the connection closed before the message was sent"
            );
            assert_eq!(watch.task.buffered_amount(), 0);
            // The message, its masked copy in the write buffer, and the slack.
            meter.assert_within("a server that stops reading mid-message", 2 * BIG + SLACK);
        });
    });
}

/// A 101, then nothing at all (the server neither writes nor reads). Without
/// a heartbeat the client cannot tell a quiet server from a dead one, and
/// a WebSocket has no idle timeout: the task stays OPEN, with no error,
/// until the application closes it (then the close timeout ends it with
/// 1006, no error event: the server did not answer). With a heartbeat, the
/// application asked to detect this: `HeartbeatTimeout`, 1006 (as in
/// `tests/faults.rs`). Both against the same server, side by side.
#[test]
fn switching_protocols_then_silence() {
    isolated("switching_protocols_then_silence", || {
        on_runtime(async {
            let addr = deaf_server().await;
            let meter = Meter::start();
            let quiet = Watch::connect(opts(&url(addr)).close_timeout(Duration::from_millis(300)));
            let watched = Watch::connect(
                opts(&url(addr)).heartbeat(Duration::from_millis(200), Duration::from_millis(300)),
            );
            quiet.open().await;
            watched.open().await;
            let event = watched
                .ends(
                    true,
                    Some((ErrorKind::HeartbeatTimeout, "no pong within 300 ms")),
                )
                .await;
            assert_eq!(event.code, 1006, "{event:?}");
            // As long as the heartbeat took to give up, and longer.
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(quiet.task.ready_state(), ReadyState::Open);
            assert!(
                matches!(quiet.events()[..], [Ev::Open]),
                "{:?}",
                quiet.events()
            );
            assert!(poll_once(&mut Box::pin(quiet.task.recv())).is_pending());
            quiet.close_unanswered().await;
            meter.assert_within("a 101 then silence", SLACK);
        });
    });
}

// ---------------------------------------------------------------------------
// Hostile handshakes
// ---------------------------------------------------------------------------

/// The server drips its 101 response one byte every 100 ms, header lines
/// without end: each byte is progress, but the connect timeout (1 s here)
/// bounds the whole attempt. `Timeout`, 1006, and the awaited task fails.
#[test]
fn slow_drip_handshake() {
    isolated("slow_drip_handshake", || {
        on_runtime(async {
            let addr = raw_server(|mut stream| async move {
                if read_http_head(&mut stream).await.is_none() {
                    return;
                }
                let response = b"HTTP/1.1 101 Switching Protocols\r\n"
                    .iter()
                    .copied()
                    .chain(std::iter::repeat(b"X-Drip: a\r\n".iter().copied()).flatten());
                for byte in response {
                    if stream.write_all(&[byte]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
            .await;
            let meter = Meter::start();
            let watch = Watch::connect(opts(&url(addr)).timeout(Duration::from_secs(1)));
            let event = watch
                .ends(false, Some((ErrorKind::Timeout, "timed out after 1000 ms")))
                .await;
            assert_eq!(event.code, 1006, "{event:?}");
            let err = watch
                .task
                .clone()
                .await
                .expect_err("the connection never opens");
            assert_eq!(err.kind(), ErrorKind::Timeout);
            assert_eq!(err.err_msg(), "connectSocket:fail timed out after 1000 ms");
            meter.assert_within("slow-drip handshake", SLACK);
        });
    });
}

/// The server answers `101` and then one header line that never ends, in
/// 16 KiB writes: the default 64 KiB limit of the handshake response stops
/// it. `Handshake`, 1006, and the client reads no more than the limit.
#[test]
fn endless_handshake_header() {
    isolated("endless_handshake_header", || {
        on_runtime(async {
            let addr = raw_server(|mut stream| async move {
                if read_http_head(&mut stream).await.is_none() {
                    return;
                }
                let start = b"HTTP/1.1 101 Switching Protocols\r\nX-Endless: ";
                if stream.write_all(start).await.is_err() {
                    return;
                }
                let line = vec![b'a'; 16 * KIB];
                // Up to 64 MiB, or until the client goes away.
                for _ in 0..4096 {
                    if stream.write_all(&line).await.is_err() {
                        return;
                    }
                }
            })
            .await;
            let meter = Meter::start();
            let watch = Watch::connect(opts(&url(addr)));
            let event = watch
                .ends(
                    false,
                    Some((
                        ErrorKind::Handshake,
                        "handshake response exceeds the limit of 65536 bytes",
                    )),
                )
                .await;
            assert_eq!(event.code, 1006, "{event:?}");
            meter.assert_within("endless handshake header", SLACK);
        });
    });
}

// ---------------------------------------------------------------------------
// Teardown
// ---------------------------------------------------------------------------

/// Sends `count` messages of 64 KiB (one buffer, shared) to a server that
/// never reads, on a runtime of its own, keeping their `Completion`s if
/// `keep`; then drops the task and shuts the runtime down, as a `main` on
/// `#[tokio::main]` that returns. The server runs on another runtime, which
/// lives on (a server elsewhere), until the kept `Completion`s have been
/// awaited by `check`.
fn sends_then_teardown(count: usize, keep: bool, check: impl FnOnce(Vec<Completion<SendSuccess>>)) {
    let server = runtime();
    let addr = server.block_on(deaf_server());
    let client = runtime();
    let kept = client.block_on(async {
        let meter = Meter::start();
        let task = connect_socket(opts(&url(addr)));
        bounded("the open", task.opened()).await.expect("open");
        let message = Bytes::from(vec![0x5Au8; SEND_SIZE]);
        let mut kept = Vec::new();
        for _ in 0..count {
            let completion = task.send(message.clone());
            if keep {
                kept.push(completion);
            }
        }
        // Give the driver time to write what the socket takes.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(task.ready_state(), ReadyState::Open);
        println!(
            "hostile: {count} sends made, buffered_amount() {} bytes",
            task.buffered_amount()
        );
        // Each send's command and its entry in the task's ledger, in queues
        // that grow by doubling (the message is one shared buffer, and one
        // masked copy of it at a time is written), and the slack.
        meter.assert_within("sends before the teardown", count * 512 + SLACK);
        kept
    });
    // Drops the task's driver, and with it what waits to be sent.
    drop(client);
    check(kept);
    drop(server);
}

/// 4 096 sends of 64 KiB whose `Completion`s were dropped, to a server that
/// never reads; then the runtime shuts down. Settling the waiting sends
/// must not recurse once per send: the process exits normally.
#[test]
fn teardown_with_4096_dropped_sends() {
    isolated("teardown_with_4096_dropped_sends", || {
        sends_then_teardown(4096, false, |kept| assert!(kept.is_empty()));
    });
}

/// The same with 10 000 sends whose `Completion`s are kept: after the
/// runtime shut down, each of them settles (a success for what the socket
/// took, a failure for the rest), and the process exits normally.
#[test]
fn teardown_with_10000_waiting_sends() {
    isolated("teardown_with_10000_waiting_sends", || {
        sends_then_teardown(10_000, true, |kept| {
            assert_eq!(kept.len(), 10_000);
            let (mut ok, mut failed) = (0, 0);
            runtime().block_on(async {
                for completion in kept {
                    match bounded("a send's outcome", completion).await {
                        Ok(_) => ok += 1,
                        Err(e) => {
                            assert!(
                                matches!(
                                    e.kind(),
                                    ErrorKind::Closed
                                        | ErrorKind::NotConnected
                                        | ErrorKind::BufferFull
                                ),
                                "{e:?}"
                            );
                            assert!(e.err_msg().starts_with("sendSocketMessage:fail "), "{e:?}");
                            failed += 1;
                        }
                    }
                }
            });
            println!("hostile: after the teardown, {ok} sends succeeded and {failed} failed");
            assert_eq!(ok + failed, 10_000);
            assert!(
                failed > 0,
                "640 MB cannot have reached a server that never reads"
            );
        });
    });
}
