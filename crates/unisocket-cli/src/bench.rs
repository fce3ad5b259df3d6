//! `unisocket bench URL`: drives an echo server with N connections, each
//! doing send-then-await-echo round trips (one in flight per connection),
//! and reports messages/s, MB/s and latency percentiles.
//!
//! Every message starts with a tag, its connection's number and its own
//! sequence number ([`TAG_LEN`] ASCII hex digits, so text stays UTF-8), and
//! every reply must be, byte for byte and of the same type, the message that
//! connection sent last. Anything else (another connection's message, as a
//! broadcast server sends; an old one; a changed one; one that was never
//! sent) stops the run with an error instead of being counted as an echo.

use std::future::IntoFuture;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use unisocket::{connect_socket, CloseOptions, ConnectOptions, Data, ErrorKind, SocketTask};

use crate::exit;
use crate::style::Paint;

/// The largest message the bench sends (the library's default limit).
const MAX_SIZE: usize = 64 << 20;

/// The length of the tag that starts every message: the connection's number
/// (from 1) and the message's sequence number (from 0, wrapping), each as 8
/// lowercase hex digits. It is also the smallest `--size`.
const TAG_LEN: usize = 16;

/// The options of `unisocket bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// The echo server's URL.
    pub url: String,
    /// Concurrent connections.
    #[arg(short = 'c', long, value_name = "N", default_value_t = 4)]
    pub conns: usize,
    /// Message size in bytes (at least 16: each message starts with its
    /// connection's number and its sequence number, so that a reply can be
    /// checked to be the echo of what that connection sent).
    #[arg(short = 's', long, value_name = "BYTES", default_value_t = 1024)]
    pub size: usize,
    /// How long to run.
    #[arg(short = 'd', long, value_name = "SECONDS", default_value_t = 5.0)]
    pub duration: f64,
    /// Send text messages instead of binary.
    #[arg(long)]
    pub text: bool,
    /// How long opening each connection may take.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub timeout: f64,
}

/// Checks the arguments; `Err` is a usage error.
fn check(args: &BenchArgs) -> Result<(Duration, Duration), String> {
    if args.conns == 0 || args.conns > 100_000 {
        return Err(format!(
            "--conns must be between 1 and 100000 (not {})",
            args.conns
        ));
    }
    if args.size < TAG_LEN {
        return Err(format!(
            "--size must be at least {TAG_LEN} bytes (not {}): each message starts with \
             its connection's number and its sequence number, to check that replies are echoes",
            args.size
        ));
    }
    if args.size > MAX_SIZE {
        return Err(format!(
            "--size must be at most {MAX_SIZE} bytes (not {})",
            args.size
        ));
    }
    let positive = |name: &str, s: f64| match Duration::try_from_secs_f64(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(format!(
            "--{name} must be a number of seconds greater than 0 (not {s})"
        )),
    };
    Ok((
        positive("duration", args.duration)?,
        positive("timeout", args.timeout)?,
    ))
}

/// Runs the benchmark; returns the exit code.
pub fn run(args: &BenchArgs) -> i32 {
    let (duration, timeout) = match check(args) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("unisocket: {e}");
            return exit::USAGE;
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("unisocket: cannot start a runtime: {e}");
            return exit::FAILURE;
        }
    };
    rt.block_on(bench(args, duration, timeout))
}

async fn bench(args: &BenchArgs, duration: Duration, timeout: Duration) -> i32 {
    let kind = if args.text { "text" } else { "binary" };
    println!(
        "bench {}: {} connection(s), {}-byte {kind} messages, {} s",
        unisocket::redact::url(&args.url),
        args.conns,
        args.size,
        duration.as_secs_f64()
    );

    // Open every connection before the clock starts.
    let mut opening = Vec::with_capacity(args.conns);
    for _ in 0..args.conns {
        let options = ConnectOptions::new(args.url.clone()).timeout(timeout);
        opening.push(tokio::spawn(connect_socket(options).into_future()));
    }
    let mut tasks = Vec::with_capacity(args.conns);
    let mut failure = None;
    for handle in opening {
        match handle.await {
            Ok(Ok(task)) => tasks.push(task),
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            Err(e) => {
                eprintln!("unisocket: {e}");
                return exit::FAILURE;
            }
        }
    }
    if let Some(e) = failure {
        eprintln!("unisocket: {}", e.err_msg());
        close_all(&tasks).await;
        return match e.kind() {
            ErrorKind::InvalidUrl
            | ErrorKind::InvalidHeader
            | ErrorKind::InvalidProtocol
            | ErrorKind::InvalidArgument => exit::USAGE,
            _ => exit::CONNECT,
        };
    }

    let rounds = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = tokio::time::Instant::from_std(started + duration);
    let mut workers = tokio::task::JoinSet::new();
    for (conn, task) in (1..).zip(&tasks) {
        let sender = Sender {
            conn,
            size: args.size,
            text: args.text,
        };
        workers.spawn(round_trips(task.clone(), sender, rounds.clone(), deadline));
    }

    let progress = std::io::stderr().is_terminal();
    let ticker = progress.then(|| {
        let (rounds, size) = (rounds.clone(), args.size);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            let mut last = 0u64;
            loop {
                tick.tick().await;
                let now = rounds.load(Ordering::Relaxed);
                let rate = now - last;
                last = now;
                let mut err = std::io::stderr().lock();
                let _ = write!(
                    err,
                    "\r\x1b[K  {:>4.0} s  {rate:>9} msg/s  {:>9.2} MB/s  {now:>10} round trips",
                    started.elapsed().as_secs_f64(),
                    rate as f64 * size as f64 / 1e6,
                );
                let _ = err.flush();
            }
        })
    });

    let mut latencies = Vec::new();
    let mut errors = Vec::new();
    let mut not_echo = None;
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(run) => {
                latencies.extend(run.latencies);
                match run.error {
                    // The run stops at the first reply that is not an echo.
                    Some(Failure::NotEcho(e)) => {
                        not_echo.get_or_insert(e);
                        workers.abort_all();
                    }
                    Some(Failure::Other(e)) => errors.push(e),
                    None => {}
                }
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => errors.push(e.to_string()),
        }
    }
    let elapsed = started.elapsed();
    if let Some(t) = ticker {
        t.abort();
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K");
        let _ = err.flush();
    }
    close_all(&tasks).await;

    // No figures: they would count replies that were not round trips.
    if let Some(e) = not_echo {
        eprintln!("unisocket: {e}");
        return exit::FAILURE;
    }
    report(args, elapsed, &mut latencies);
    for e in &errors {
        eprintln!("unisocket: {e}");
    }
    if !errors.is_empty() {
        exit::ABNORMAL
    } else if latencies.is_empty() {
        eprintln!("unisocket: no message came back: is this an echo server?");
        exit::FAILURE
    } else {
        exit::OK
    }
}

/// Why a connection stopped before the deadline.
enum Failure {
    /// A reply was not the echo of the message sent: the server is not an
    /// echo server (stops the whole run).
    NotEcho(String),
    /// The connection failed or closed.
    Other(String),
}

/// What one connection measured.
struct Run {
    latencies: Vec<Duration>,
    error: Option<Failure>,
}

/// Makes the messages of one connection: its tag, then filler up to `size`.
#[derive(Debug, Clone, Copy)]
struct Sender {
    /// The connection's number, from 1.
    conn: u32,
    size: usize,
    text: bool,
}

impl Sender {
    /// Message `seq` of this connection.
    fn message(&self, seq: u32) -> Data {
        let tag = format!("{:08x}{seq:08x}", self.conn);
        debug_assert_eq!(tag.len(), TAG_LEN);
        let fill = self.size.saturating_sub(TAG_LEN);
        if self.text {
            let mut s = String::with_capacity(self.size);
            s.push_str(&tag);
            s.extend(std::iter::repeat_n('x', fill));
            Data::from(s)
        } else {
            let mut v = Vec::with_capacity(self.size);
            v.extend_from_slice(tag.as_bytes());
            v.resize(TAG_LEN + fill, 0xA5);
            Data::from(v)
        }
    }

    /// `None` when `reply` is the echo of `sent`, message `seq` of this
    /// connection: the same bytes, and text if and only if `sent` is.
    /// Otherwise the error that stops the run.
    fn check_echo(&self, seq: u32, sent: &Data, reply: &Data) -> Option<String> {
        if reply.is_text() == sent.is_text() && reply.as_bytes() == sent.as_bytes() {
            return None;
        }
        let conn = self.conn;
        let what = match parse_tag(reply.as_bytes()) {
            Some((c, s)) if c == conn && s == seq => format!(
                "got its message {seq} back changed (sent {}, got {})",
                describe(sent),
                describe(reply)
            ),
            Some((c, s)) if c == conn => {
                format!("got its message {s} back while waiting for the echo of message {seq}")
            }
            Some((c, s)) => {
                format!("got a message it did not send (message {s} of connection {c})")
            }
            None => format!("got a message it did not send ({})", describe(reply)),
        };
        Some(format!(
            "the server does not echo: connection {conn} {what}; bench needs an echo server"
        ))
    }
}

/// The connection and sequence numbers at the start of a bench message.
fn parse_tag(bytes: &[u8]) -> Option<(u32, u32)> {
    let tag = bytes.get(..TAG_LEN)?;
    if !tag.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let tag = std::str::from_utf8(tag).ok()?;
    let (conn, seq) = tag.split_at(TAG_LEN / 2);
    Some((
        u32::from_str_radix(conn, 16).ok()?,
        u32::from_str_radix(seq, 16).ok()?,
    ))
}

fn describe(d: &Data) -> String {
    let kind = if d.is_text() { "text" } else { "binary" };
    format!("{} bytes of {kind}", d.len())
}

/// Send, await the echo, check it, repeat until `deadline`.
async fn round_trips(
    task: SocketTask,
    sender: Sender,
    rounds: Arc<AtomicU64>,
    deadline: tokio::time::Instant,
) -> Run {
    let mut latencies = Vec::with_capacity(1 << 16);
    let fail = |latencies, e: Failure| Run {
        latencies,
        error: Some(e),
    };
    let mut seq = 0u32;
    while tokio::time::Instant::now() < deadline {
        let message = sender.message(seq);
        let start = Instant::now();
        if let Err(e) = task.send(message.clone()).await {
            if task.ready_state() == unisocket::ReadyState::Open {
                return fail(latencies, Failure::Other(e.err_msg().to_owned()));
            }
            let ev = task.closed().await;
            return fail(latencies, Failure::Other(closed_during_run(&ev)));
        }
        match tokio::time::timeout_at(deadline, task.recv()).await {
            // The run ended with this round trip in flight: not counted.
            Err(_) => break,
            Ok(None) => {
                let ev = task.closed().await;
                return fail(latencies, Failure::Other(closed_during_run(&ev)));
            }
            Ok(Some(reply)) => {
                let elapsed = start.elapsed();
                if let Some(e) = sender.check_echo(seq, &message, &reply) {
                    return fail(latencies, Failure::NotEcho(e));
                }
                latencies.push(elapsed);
                rounds.fetch_add(1, Ordering::Relaxed);
                seq = seq.wrapping_add(1);
            }
        }
    }
    Run {
        latencies,
        error: None,
    }
}

fn closed_during_run(ev: &unisocket::CloseEvent) -> String {
    let mut s = format!(
        "the connection closed during the run: {}",
        crate::style::describe_close_code(ev.code)
    );
    if !ev.reason.is_empty() {
        s.push_str(&format!(" {:?}", ev.reason));
    }
    s
}

async fn close_all(tasks: &[SocketTask]) {
    let closing: Vec<_> = tasks
        .iter()
        .map(|t| t.close(CloseOptions::default()))
        .collect();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        for c in closing {
            let _ = c.await;
        }
    })
    .await;
}

/// The nearest-rank percentile `p` (0-100) of sorted values.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn latency(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

fn report(args: &BenchArgs, elapsed: Duration, latencies: &mut [Duration]) {
    latencies.sort_unstable();
    let n = latencies.len() as f64;
    let secs = elapsed.as_secs_f64().max(f64::EPSILON);
    let bold = Paint::stdout();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{}  {:.0} msg/s ({} round trips in {:.2} s)",
        bold.bold("messages:  "),
        n / secs,
        latencies.len(),
        secs
    );
    let _ = writeln!(
        out,
        "{}  {:.2} MB/s each way ({:.2} MB/s both ways)",
        bold.bold("throughput:"),
        n * args.size as f64 / secs / 1e6,
        2.0 * n * args.size as f64 / secs / 1e6
    );
    let _ = writeln!(
        out,
        "{}  p50 {}  p90 {}  p99 {}  max {}",
        bold.bold("latency:   "),
        latency(percentile(latencies, 50.0)),
        latency(percentile(latencies, 90.0)),
        latency(percentile(latencies, 99.0)),
        latency(latencies.last().copied().unwrap_or_default())
    );
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 90.0), Duration::from_millis(90));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&v[..1], 99.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn messages_carry_their_connection_and_sequence_number() {
        for text in [false, true] {
            let sender = Sender {
                conn: 3,
                size: 40,
                text,
            };
            let m = sender.message(0x1_0000);
            assert_eq!(m.len(), 40);
            assert_eq!(m.is_text(), text);
            assert_eq!(&m.as_bytes()[..TAG_LEN], b"0000000300010000");
            assert_eq!(parse_tag(m.as_bytes()), Some((3, 0x1_0000)));
            assert_eq!(sender.check_echo(0x1_0000, &m, &m), None);
        }
        // The smallest size is the tag alone.
        let tiny = Sender {
            conn: 100_000,
            size: TAG_LEN,
            text: true,
        };
        let m = tiny.message(u32::MAX);
        assert_eq!(m.as_text(), Some("000186a0ffffffff"));
        assert_eq!(parse_tag(m.as_bytes()), Some((100_000, u32::MAX)));
        assert_eq!(parse_tag(b"000186a0ffffff"), None, "too short");
        assert_eq!(parse_tag(b"000186A0ffffffff"), None, "upper case");
    }

    #[test]
    fn replies_other_than_the_echo_are_named() {
        let one = Sender {
            conn: 1,
            size: 32,
            text: false,
        };
        let two = Sender { conn: 2, ..one };
        let sent = one.message(5);
        let check = |reply: &Data| one.check_echo(5, &sent, reply).expect("not an echo");
        for e in [
            check(&two.message(5)),
            check(&one.message(4)),
            check(&Data::from("hello")),
        ] {
            assert!(
                e.starts_with("the server does not echo: connection 1 got "),
                "{e}"
            );
            assert!(e.ends_with("; bench needs an echo server"), "{e}");
        }
        assert!(check(&two.message(5))
            .contains("connection 1 got a message it did not send (message 5 of connection 2)"));
        assert!(check(&one.message(4))
            .contains("got its message 4 back while waiting for the echo of message 5"));
        assert!(
            check(&Data::from("hello")).contains("got a message it did not send (5 bytes of text)")
        );
        // The same bytes as text.
        let text = Sender { text: true, ..one };
        let as_text = Data::from(text.message(5).as_bytes().to_vec());
        assert_eq!(text.check_echo(5, &text.message(5), &text.message(5)), None);
        assert!(text
            .check_echo(5, &text.message(5), &as_text)
            .expect("not an echo")
            .contains(
                "got its message 5 back changed (sent 32 bytes of text, got 32 bytes of binary)"
            ));
        let mut changed = sent.as_bytes().to_vec();
        changed[31] ^= 1;
        assert!(check(&Data::from(changed)).contains(
            "got its message 5 back changed (sent 32 bytes of binary, got 32 bytes of binary)"
        ));
    }
}
