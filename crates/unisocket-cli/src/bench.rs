//! `unisocket bench URL`: drives an echo server with N connections, each
//! doing send-then-await-echo round trips (one in flight per connection),
//! and reports messages/s, MB/s and latency percentiles.

use std::future::IntoFuture;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use unisocket::{connect_socket, Bytes, CloseOptions, ConnectOptions, Data, ErrorKind, SocketTask};

use crate::exit;
use crate::style::Paint;

/// The largest message the bench sends (the library's default limit).
const MAX_SIZE: usize = 64 << 20;

/// The options of `unisocket bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// The echo server's URL.
    pub url: String,
    /// Concurrent connections.
    #[arg(short = 'c', long, value_name = "N", default_value_t = 4)]
    pub conns: usize,
    /// Message size in bytes.
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

/// What one connection measured.
struct Run {
    latencies: Vec<Duration>,
    error: Option<String>,
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

    let payload = if args.text {
        Data::from("x".repeat(args.size))
    } else {
        Data::from(Bytes::from(vec![0xA5u8; args.size]))
    };
    let rounds = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = tokio::time::Instant::from_std(started + duration);
    let mut workers = Vec::with_capacity(tasks.len());
    for task in &tasks {
        let (task, payload, rounds) = (task.clone(), payload.clone(), rounds.clone());
        workers.push(tokio::spawn(round_trips(task, payload, rounds, deadline)));
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
    for w in workers {
        match w.await {
            Ok(run) => {
                latencies.extend(run.latencies);
                errors.extend(run.error);
            }
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

/// Send, await the echo, repeat until `deadline`.
async fn round_trips(
    task: SocketTask,
    payload: Data,
    rounds: Arc<AtomicU64>,
    deadline: tokio::time::Instant,
) -> Run {
    let mut latencies = Vec::with_capacity(1 << 16);
    let fail = |latencies, e: String| Run {
        latencies,
        error: Some(e),
    };
    while tokio::time::Instant::now() < deadline {
        let start = Instant::now();
        if let Err(e) = task.send(payload.clone()).await {
            if task.ready_state() == unisocket::ReadyState::Open {
                return fail(latencies, e.err_msg().to_owned());
            }
            let ev = task.closed().await;
            return fail(latencies, closed_during_run(&ev));
        }
        match tokio::time::timeout_at(deadline, task.recv()).await {
            // The run ended with this round trip in flight: not counted.
            Err(_) => break,
            Ok(None) => {
                let ev = task.closed().await;
                return fail(latencies, closed_during_run(&ev));
            }
            Ok(Some(reply)) => {
                if reply.len() != payload.len() || reply.is_text() != payload.is_text() {
                    return fail(
                        latencies,
                        format!(
                            "the reply is not an echo: sent {} bytes, got {} bytes of {}",
                            payload.len(),
                            reply.len(),
                            if reply.is_text() { "text" } else { "binary" }
                        ),
                    );
                }
                latencies.push(start.elapsed());
                rounds.fetch_add(1, Ordering::Relaxed);
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
}
