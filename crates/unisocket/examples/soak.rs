//! A soak test: holds N `SocketTask`s (10 000 by default) open against a
//! local echo server for a while (10 minutes by default) with random
//! traffic, server-side drops and closes (the tasks reconnect) and
//! client-side closes (the task is replaced), then reports memory at start
//! and end, messages lost (must be 0), duplicate outcomes (must be 0), echoes,
//! and the fail callbacks and errors by reason.
//!
//! ```text
//! cargo build --release --examples
//! cargo run --release --example soak -- 10000 --minutes 10
//! cargo run --release --example soak -- 500 --minutes 1 --url ws://127.0.0.1:9001/
//! ```
//!
//! Options: `[N]` tasks, `--minutes M` (fractions allowed), `--warmup M`
//! (minutes of traffic before the memory at start is taken, default 1), `--url URL` (a
//! server that echoes and understands `!drop`, `!eof` and `!close`; without
//! it the `many_tasks` example next to this binary is started with
//! `--serve`), `--seed S`, `--open-rate R` (opens per second while ramping
//! up, default 2000), `--payload B` (largest random padding of a message,
//! default 200 bytes), `--no-connect-fail` (no `fail` callback on
//! `ConnectOptions`), `--steady` (no connection is ended on purpose: no
//! `!drop`, `!eof`, `!close` and no replaced task).
//!
//! Each task, every 1 to 5 s, sends a message `m <slot> <seq> <padding>`
//! (text or binary; sometimes a burst of 2-5) with `success`, `fail` and
//! `complete` callbacks, or now and then `!drop` (the server resets the TCP
//! connection), `!eof` (the server shuts the TCP connection down without a
//! close frame) or `!close` (the server closes with 1011), each followed by
//! 0-3 messages 0-3 ms apart that race with the end of the connection, or
//! closes the task itself and opens a new one in its place. Every send must
//! end in exactly one `success` or `fail` followed by one `complete`; a send
//! without an outcome once every task is closed is *lost*. A message that
//! succeeded (was handed to the transport) but whose echo never came
//! because the connection was dropped right after is counted apart, as
//! *echo lost*.
//!
//! Memory is reported as RSS (`VmRSS`, `VmHWM`) and as the live heap: the
//! bytes and blocks allocated and not freed, counted by a wrapper around the
//! system allocator. It is taken once every task is open, then at start and
//! at end: start after a warm-up minute of traffic (each connection's
//! buffers and queues are made as traffic first flows through them) and a
//! pause until every send has its outcome, end once the traffic has stopped
//! and settled the same way, so that the two compare like with like. Each
//! minute in between the heap is sampled with traffic in flight, and a line
//! fitted through the samples gives its trend. A leak grows the live heap;
//! pages of buffers touched only as traffic flows through them, or
//! allocator fragmentation, grow the RSS alone. To tell them apart with
//! glibc, the RSS at start and end is also taken after `malloc_trim` (which
//! hands whole free pages back to the kernel), and glibc's own counters
//! (`mallinfo2`) say how much of its heaps is in use and how much is free
//! space between blocks in use. Preloading another allocator
//! (`LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2`, Debian's
//! `libjemalloc2`) runs the same traffic on it. Once every task is closed
//! and every handle dropped, the heap should be back where it was before
//! the first open: what is left, per task made, is reported (and flagged as
//! a leak above 512 bytes).
//!
//! The exit status is 1 when a message is lost, an outcome or a `complete`
//! is duplicated, an echo is duplicated or unexpected, or a task does not
//! end CLOSED. A leak is reported but does not change the exit status.

#[path = "support/procfs.rs"]
mod procfs;
use procfs::{open_files_limit, status_kib};

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::watch;
use unisocket::{
    connect_socket, CloseOptions, ConnectOptions, Data, ReadyState, ReconnectPolicy, SendOptions,
    SocketTask,
};

/// Per tick of a task: the chance of each misbehaviour; the rest are messages.
const P_DROP: f64 = 0.003;
const P_EOF: f64 = 0.001;
const P_SERVER_CLOSE: f64 = 0.003;
const P_REPLACE: f64 = 0.002;
/// The chance that a message tick sends 2-5 messages at once.
const P_BURST: f64 = 0.1;
/// The share of messages sent as binary.
const P_BINARY: f64 = 0.2;
/// The wait between two ticks of a task, in milliseconds.
const TICK_MS: (u64, u64) = (1_000, 5_000);

/// The system allocator, counting the bytes and blocks in use.
struct Counting;

static HEAP_BYTES: AtomicUsize = AtomicUsize::new(0);
static HEAP_BLOCKS: AtomicUsize = AtomicUsize::new(0);
/// Live bytes by size class: class `i` holds blocks of `2^(i-1)+1..=2^i`
/// bytes (class 0: empty and 1-byte blocks).
static HEAP_BY_CLASS: [AtomicUsize; CLASSES] = [const { AtomicUsize::new(0) }; CLASSES];
const CLASSES: usize = 40;

fn class(size: usize) -> usize {
    (size.max(1).next_power_of_two().trailing_zeros() as usize).min(CLASSES - 1)
}

fn count_alloc(size: usize) {
    HEAP_BYTES.fetch_add(size, Relaxed);
    HEAP_BY_CLASS[class(size)].fetch_add(size, Relaxed);
}

fn count_free(size: usize) {
    HEAP_BYTES.fetch_sub(size, Relaxed);
    HEAP_BY_CLASS[class(size)].fetch_sub(size, Relaxed);
}

// SAFETY: every call is forwarded to `System` unchanged; the counters are
// only updated after it succeeded.
#[allow(
    unsafe_code,
    reason = "a global allocator is an unsafe trait: counting what the client holds needs one"
)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count_alloc(layout.size());
            HEAP_BLOCKS.fetch_add(1, Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count_alloc(layout.size());
            HEAP_BLOCKS.fetch_add(1, Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        count_free(layout.size());
        HEAP_BLOCKS.fetch_sub(1, Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count_alloc(new_size);
            count_free(layout.size());
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// RSS once the allocator has handed its free pages back to the kernel
/// (glibc's `malloc_trim`): what is left is memory in use, the rest of the
/// RSS is free memory the allocator keeps. `None` where there is no glibc.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trimmed_rss() -> Option<u64> {
    extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: `malloc_trim` only returns free memory of glibc's own heaps
    // to the kernel; it takes no pointer and runs under glibc's locks.
    #[allow(
        unsafe_code,
        reason = "glibc's malloc_trim has no safe binding; it hands free memory back before RSS is read"
    )]
    unsafe {
        malloc_trim(0);
    }
    status_kib("VmRSS:")
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trimmed_rss() -> Option<u64> {
    None
}

/// glibc's own view of its heaps (`mallinfo2`): KiB obtained from the
/// kernel (arenas plus mmapped blocks), KiB in use (with each block's
/// header and rounding), and KiB free inside the arenas. `None` where there
/// is no glibc.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn malloc_info() -> Option<(u64, u64, u64)> {
    #[repr(C)]
    struct Mallinfo2 {
        arena: usize,
        ordblks: usize,
        smblks: usize,
        hblks: usize,
        hblkhd: usize,
        usmblks: usize,
        fsmblks: usize,
        uordblks: usize,
        fordblks: usize,
        keepcost: usize,
    }
    extern "C" {
        fn mallinfo2() -> Mallinfo2;
    }
    // SAFETY: `mallinfo2` (glibc 2.33+) takes no argument and returns a
    // struct by value, laid out as declared above; it reads glibc's
    // counters under its own locks.
    #[allow(
        unsafe_code,
        reason = "glibc's mallinfo2 has no safe binding; it reports the heap the soak watches"
    )]
    let m = unsafe { mallinfo2() };
    let kib = |b: usize| b as u64 / 1024;
    // Nothing from the kernel: another allocator (LD_PRELOAD) serves the
    // process, and glibc's heaps are unused.
    (m.arena + m.hblkhd > 0).then_some((
        kib(m.arena + m.hblkhd),
        kib(m.uordblks + m.hblkhd),
        kib(m.fordblks),
    ))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn malloc_info() -> Option<(u64, u64, u64)> {
    None
}

/// The allocator behind `System`: the C library's, or one preloaded in its
/// place (e.g. `LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2`).
fn allocator() -> String {
    match std::env::var("LD_PRELOAD") {
        Ok(lib) if !lib.is_empty() => format!("the system allocator, LD_PRELOAD={lib}"),
        _ => "the system allocator (the C library's malloc)".to_owned(),
    }
}

/// " | glibc X MiB: Y in use, Z free" of `malloc_info()`, or nothing.
fn malloc_note(info: Option<(u64, u64, u64)>) -> String {
    info.map_or_else(String::new, |(total, used, free)| {
        format!(
            " | glibc {:.1} MiB: {:.1} in use, {:.1} free",
            mib(total),
            mib(used),
            mib(free)
        )
    })
}

/// " (X MiB once free pages are given back)", or nothing.
fn trimmed_note(trimmed: Option<u64>) -> String {
    trimmed.map_or_else(String::new, |kib| {
        format!(
            " ({:.1} MiB once the allocator gives its free pages back)",
            mib(kib)
        )
    })
}

/// The live heap: (KiB, blocks).
fn heap() -> (u64, u64) {
    (
        HEAP_BYTES.load(Relaxed) as u64 / 1024,
        HEAP_BLOCKS.load(Relaxed) as u64,
    )
}

/// The live heap by size class, in bytes.
fn heap_classes() -> [usize; CLASSES] {
    std::array::from_fn(|i| HEAP_BY_CLASS[i].load(Relaxed))
}

/// The size classes whose live bytes changed most since `then`, e.g.
/// `2K +19.5 MiB, 64 +1.2 MiB`.
fn class_changes(then: &[usize; CLASSES]) -> String {
    let now = heap_classes();
    let mut d: Vec<(usize, i64)> = (0..CLASSES)
        .map(|i| (i, now[i] as i64 - then[i] as i64))
        .filter(|&(_, d)| d.unsigned_abs() >= 256 * 1024)
        .collect();
    d.sort_by_key(|&(_, d)| std::cmp::Reverse(d.unsigned_abs()));
    let label = |i: usize| match 1u64 << i {
        s if s >= 1 << 20 => format!("{}M", s >> 20),
        s if s >= 1 << 10 => format!("{}K", s >> 10),
        s => s.to_string(),
    };
    let parts: Vec<String> = d
        .iter()
        .take(8)
        .map(|&(i, d)| format!("{} {:+.1} MiB", label(i), d as f64 / 1048576.0))
        .collect();
    if parts.is_empty() {
        "no size class changed by 0.25 MiB".to_owned()
    } else {
        parts.join(", ")
    }
}

struct Config {
    n: usize,
    connect_fail: bool,
    /// No connection ends: no `!drop`, `!eof`, `!close` and no replaced task.
    steady: bool,
    duration: Duration,
    /// Traffic before the memory at start is taken.
    warmup: Duration,
    url: Option<String>,
    seed: u64,
    open_rate: usize,
    payload: usize,
}

fn usage() -> ! {
    eprintln!(
        "usage: soak [N=10000] [--minutes 10] [--warmup 1] [--url ws://HOST:PORT/] [--seed 1] \
         [--open-rate 2000] [--payload 200] [--no-connect-fail] [--steady]"
    );
    std::process::exit(2);
}

fn parse_args() -> Config {
    let mut cfg = Config {
        n: 10_000,
        duration: Duration::from_secs(600),
        warmup: Duration::from_secs(60),
        url: None,
        seed: 1,
        open_rate: 2_000,
        payload: 200,
        connect_fail: true,
        steady: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next().unwrap_or_else(|| {
                eprintln!("soak: {name} needs a value");
                usage()
            })
        };
        let bad = |name: &str, v: &str| -> ! {
            eprintln!("soak: bad value for {name}: {v:?}");
            usage()
        };
        match arg.as_str() {
            "--minutes" => {
                let v = value("--minutes");
                match v.parse::<f64>() {
                    Ok(m) if m > 0.0 && m.is_finite() => {
                        cfg.duration = Duration::from_secs_f64(m * 60.0);
                    }
                    _ => bad("--minutes", &v),
                }
            }
            "--warmup" => {
                let v = value("--warmup");
                match v.parse::<f64>() {
                    Ok(m) if m >= 0.0 && m.is_finite() => {
                        cfg.warmup = Duration::from_secs_f64(m * 60.0);
                    }
                    _ => bad("--warmup", &v),
                }
            }
            "--url" => cfg.url = Some(value("--url")),
            "--seed" => {
                let v = value("--seed");
                cfg.seed = v.parse().unwrap_or_else(|_| bad("--seed", &v));
            }
            "--open-rate" => {
                let v = value("--open-rate");
                cfg.open_rate = match v.parse() {
                    Ok(r) if r > 0 => r,
                    _ => bad("--open-rate", &v),
                };
            }
            "--payload" => {
                let v = value("--payload");
                cfg.payload = v.parse().unwrap_or_else(|_| bad("--payload", &v));
            }
            "--no-connect-fail" => cfg.connect_fail = false,
            "--steady" => cfg.steady = true,
            "-h" | "--help" => usage(),
            other => match other.parse() {
                Ok(n) if n > 0 => cfg.n = n,
                _ => {
                    eprintln!("soak: not a number of tasks: {other:?}");
                    usage()
                }
            },
        }
    }
    cfg
}

fn main() {
    let cfg = parse_args();
    if let Some(limit) = open_files_limit() {
        if (cfg.n as u64) + 64 > limit {
            eprintln!(
                "warning: {} tasks need about {} file descriptors; the limit is {limit} (ulimit -n)",
                cfg.n,
                cfg.n + 64
            );
        }
    }
    let mut child = None;
    let url = match cfg.url.clone() {
        Some(u) => u,
        None => {
            let (c, port) = spawn_server();
            child = Some(c);
            format!("ws://127.0.0.1:{port}/")
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let ok = rt.block_on(run(&cfg, url));
    rt.shutdown_timeout(Duration::from_secs(5));
    if let Some(mut c) = child {
        let _ = c.kill();
        let _ = c.wait();
    }
    if !ok {
        std::process::exit(1);
    }
}

// Accounting.

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counters shared by every task; the reasons are grouped with their
/// numbers replaced by `N`.
#[derive(Default)]
struct Stats {
    sends: AtomicU64,
    data_sends: AtomicU64,
    binary_sends: AtomicU64,
    drops: AtomicU64,
    eofs: AtomicU64,
    server_closes: AtomicU64,
    succeeded: AtomicU64,
    data_succeeded: AtomicU64,
    failed: AtomicU64,
    duplicate_outcomes: AtomicU64,
    completes: AtomicU64,
    duplicate_completes: AtomicU64,
    /// `complete` before the outcome, or with the other result.
    complete_mismatches: AtomicU64,
    echoes: AtomicU64,
    echo_lost: AtomicU64,
    unexpected_echoes: AtomicU64,
    duplicate_echoes: AtomicU64,
    echoes_of_failed: AtomicU64,
    tasks_made: AtomicU64,
    first_opens: AtomicU64,
    reopens: AtomicU64,
    reconnecting: AtomicU64,
    /// `on_reconnecting` with an attempt number above 1 (an attempt failed).
    retries: AtomicU64,
    errors: AtomicU64,
    closes: AtomicU64,
    unexpected_closes: AtomicU64,
    replacements: AtomicU64,
    close_ok: AtomicU64,
    close_failed: AtomicU64,
    close_hung: AtomicU64,
    not_closed: AtomicU64,
    connect_fails: AtomicU64,
    fail_reasons: Mutex<BTreeMap<String, u64>>,
    error_reasons: Mutex<BTreeMap<String, u64>>,
    close_events: Mutex<BTreeMap<String, u64>>,
    connect_fail_reasons: Mutex<BTreeMap<String, u64>>,
    close_fail_reasons: Mutex<BTreeMap<String, u64>>,
}

fn add(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Relaxed)
}

/// `reason` with each run of digits replaced by `N`.
fn strip_numbers(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut in_number = false;
    for ch in reason.chars() {
        if ch.is_ascii_digit() {
            if !in_number {
                out.push('N');
            }
            in_number = true;
        } else {
            out.push(ch);
            in_number = false;
        }
    }
    out
}

fn bump(map: &Mutex<BTreeMap<String, u64>>, reason: &str) {
    *lock(map).entry(strip_numbers(reason)).or_insert(0) += 1;
}

/// One send, from the call to its outcome, its `complete` and its echo.
struct Entry {
    /// Which task of the slot sent it.
    generation: u64,
    /// A message the server echoes (not a command).
    data: bool,
    /// `Some(true)` after `success`, `Some(false)` after `fail`.
    outcome: Option<bool>,
    completed: bool,
    echoed: bool,
}

impl Entry {
    /// Nothing more is expected of it.
    fn done(&self) -> bool {
        self.completed
            && match self.outcome {
                Some(true) => !self.data || self.echoed,
                Some(false) => true,
                None => false,
            }
    }
}

/// A place for one task at a time: when the task is closed by the client a
/// new one takes its place.
struct Slot {
    id: usize,
    next_seq: AtomicU64,
    generation: AtomicU64,
    /// The generation being closed by the client.
    closing: AtomicU64,
    pending: Mutex<HashMap<u64, Entry>>,
    task: Mutex<Option<SocketTask>>,
}

impl Slot {
    fn new(id: usize) -> Self {
        Slot {
            id,
            next_seq: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            closing: AtomicU64::new(0),
            // Sized up front so that the book keeping does not grow the RSS.
            pending: Mutex::new(HashMap::with_capacity(8)),
            task: Mutex::new(None),
        }
    }

    fn current(&self) -> Option<SocketTask> {
        lock(&self.task).clone()
    }

    fn outcome(&self, seq: u64, ok: bool, stats: &Stats) {
        let mut pending = lock(&self.pending);
        match pending.get_mut(&seq) {
            Some(e) if e.outcome.is_none() => {
                e.outcome = Some(ok);
                if ok {
                    add(&stats.succeeded);
                    if e.data {
                        add(&stats.data_succeeded);
                    }
                } else {
                    add(&stats.failed);
                    if e.echoed {
                        add(&stats.echoes_of_failed);
                    }
                }
            }
            _ => {
                add(&stats.duplicate_outcomes);
                eprintln!(
                    "DUPLICATE OUTCOME: slot {} seq {seq} ({})",
                    self.id,
                    if ok { "success" } else { "fail" }
                );
            }
        }
    }

    fn complete(&self, seq: u64, ok: bool, stats: &Stats) {
        let mut pending = lock(&self.pending);
        match pending.get_mut(&seq) {
            Some(e) if !e.completed => {
                e.completed = true;
                add(&stats.completes);
                if e.outcome != Some(ok) {
                    add(&stats.complete_mismatches);
                }
                if e.done() {
                    pending.remove(&seq);
                }
            }
            _ => {
                add(&stats.duplicate_completes);
                eprintln!("DUPLICATE COMPLETE: slot {} seq {seq}", self.id);
            }
        }
    }

    fn echo(&self, seq: u64, stats: &Stats) {
        let mut pending = lock(&self.pending);
        match pending.get_mut(&seq) {
            Some(e) if e.data && !e.echoed => {
                e.echoed = true;
                add(&stats.echoes);
                if e.outcome == Some(false) {
                    add(&stats.echoes_of_failed);
                }
                if e.done() {
                    pending.remove(&seq);
                }
            }
            Some(e) if e.echoed => add(&stats.duplicate_echoes),
            _ => add(&stats.unexpected_echoes),
        }
    }

    /// The connection of task `generation` ended (`on_reconnecting` or
    /// `on_close`): the messages it sent that were not echoed never will be.
    fn connection_ended(&self, generation: u64, stats: &Stats) {
        let mut pending = lock(&self.pending);
        pending.retain(|_, e| {
            let lost_echo = e.generation == generation
                && e.data
                && e.outcome == Some(true)
                && e.completed
                && !e.echoed;
            if lost_echo {
                add(&stats.echo_lost);
            }
            !lost_echo
        });
    }

    /// Sends `data` with callbacks, accounted.
    fn send(
        self: &Arc<Self>,
        task: &SocketTask,
        generation: u64,
        data: Data,
        echo: bool,
        ctx: &Arc<Ctx>,
    ) {
        let seq = self.next_seq.fetch_add(1, Relaxed);
        // Recorded before the call: the callbacks may run inside it.
        lock(&self.pending).insert(
            seq,
            Entry {
                generation,
                data: echo,
                outcome: None,
                completed: false,
                echoed: false,
            },
        );
        add(&ctx.stats.sends);
        let (s1, c1) = (self.clone(), ctx.clone());
        let (s2, c2) = (self.clone(), ctx.clone());
        let (s3, c3) = (self.clone(), ctx.clone());
        let options = SendOptions::new(data)
            .success(move |_| s1.outcome(seq, true, &c1.stats))
            .fail(move |e| {
                bump(&c2.stats.fail_reasons, e.err_msg());
                s2.outcome(seq, false, &c2.stats);
            })
            .complete(move |r| s3.complete(seq, r.is_ok(), &c3.stats));
        task.send(options);
    }

    /// The sends still without an outcome, and those without `complete`.
    fn unsettled(&self) -> (usize, usize) {
        let pending = lock(&self.pending);
        let no_outcome = pending.values().filter(|e| e.outcome.is_none()).count();
        let no_complete = pending.values().filter(|e| !e.completed).count();
        (no_outcome, no_complete)
    }
}

/// What the tasks are told to do.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// Open and wait.
    Ramp,
    /// Random traffic.
    Traffic,
    /// No new traffic for a while (the quiet measurement after warm-up).
    Pause,
    /// Stop the traffic (the tasks stay open).
    Stop,
}

struct Ctx {
    url: String,
    seed: u64,
    payload: usize,
    connect_fail: bool,
    steady: bool,
    stats: Stats,
}

/// Makes the next task of `slot`, with its listeners.
fn open_task(slot: &Arc<Slot>, ctx: &Arc<Ctx>) -> (SocketTask, u64) {
    let generation = slot.generation.fetch_add(1, Relaxed) + 1;
    let policy = ReconnectPolicy::default()
        .min_delay(Duration::from_millis(50))
        .max_delay(Duration::from_secs(2))
        .max_attempts(None);
    let mut options = ConnectOptions::new(ctx.url.clone())
        .timeout(Duration::from_secs(10))
        .close_timeout(Duration::from_secs(3))
        .heartbeat(Duration::from_secs(30), Duration::from_secs(10))
        .queue_until_open(true)
        .reconnect(policy)
        .no_proxy();
    if ctx.connect_fail {
        let c = ctx.clone();
        options = options.fail(move |e| {
            add(&c.stats.connect_fails);
            bump(&c.stats.connect_fail_reasons, e.err_msg());
        });
    }
    let task = connect_socket(options);
    add(&ctx.stats.tasks_made);

    let c = ctx.clone();
    let mut first = true;
    task.on_open(move |_| {
        if first {
            first = false;
            add(&c.stats.first_opens);
        } else {
            add(&c.stats.reopens);
        }
    });
    let (s, c) = (slot.clone(), ctx.clone());
    task.on_reconnecting(move |ev| {
        add(&c.stats.reconnecting);
        if ev.attempt > 1 {
            add(&c.stats.retries);
        }
        s.connection_ended(generation, &c.stats);
    });
    let c = ctx.clone();
    task.on_error(move |ev| {
        add(&c.stats.errors);
        bump(&c.stats.error_reasons, &ev.err_msg);
    });
    let (s, c) = (slot.clone(), ctx.clone());
    task.on_close(move |ev| {
        add(&c.stats.closes);
        let clean = if ev.was_clean { "clean" } else { "not clean" };
        let key = format!("{} {clean}: {:?}", ev.code, strip_numbers(&ev.reason));
        *lock(&c.stats.close_events).entry(key).or_insert(0) += 1;
        if s.closing.load(Relaxed) != generation {
            add(&c.stats.unexpected_closes);
            eprintln!(
                "UNEXPECTED CLOSE: slot {} generation {generation}: {} {}",
                s.id, ev.code, ev.reason
            );
        }
        s.connection_ended(generation, &c.stats);
    });
    let (s, c) = (slot.clone(), ctx.clone());
    task.on_message(move |ev| match parse_message(ev.data.as_bytes()) {
        Some((id, seq)) if id == s.id => s.echo(seq, &c.stats),
        _ => add(&c.stats.unexpected_echoes),
    });
    *lock(&slot.task) = Some(task.clone());
    (task, generation)
}

/// `m <slot> <seq> <padding>` -> (slot, seq).
fn parse_message(bytes: &[u8]) -> Option<(usize, u64)> {
    let s = std::str::from_utf8(bytes).ok()?;
    let mut it = s.splitn(4, ' ');
    if it.next()? != "m" {
        return None;
    }
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// Closes `task` (the client's own close) and checks that it ends CLOSED.
async fn close_task(slot: &Slot, task: &SocketTask, generation: u64, stats: &Stats) -> bool {
    slot.closing.store(generation, Relaxed);
    let closing = task.close(CloseOptions::default());
    let ok = match tokio::time::timeout(Duration::from_secs(20), closing).await {
        Ok(Ok(_)) => {
            add(&stats.close_ok);
            true
        }
        Ok(Err(e)) => {
            add(&stats.close_failed);
            bump(&stats.close_fail_reasons, e.err_msg());
            false
        }
        Err(_) => {
            add(&stats.close_hung);
            eprintln!("CLOSE HUNG: slot {} generation {generation}", slot.id);
            false
        }
    };
    if task.ready_state() != ReadyState::Closed {
        add(&stats.not_closed);
        eprintln!(
            "NOT CLOSED after close: slot {} generation {generation}: {:?}",
            slot.id,
            task.ready_state()
        );
        return false;
    }
    ok
}

/// The life of one slot: open a task, wait for the traffic phase, then
/// tick at random until told to stop.
async fn slot_loop(slot: Arc<Slot>, ctx: Arc<Ctx>, mut phase: watch::Receiver<Phase>) {
    let mut rng = StdRng::seed_from_u64(
        ctx.seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(slot.id as u64),
    );
    let (mut task, mut generation) = open_task(&slot, &ctx);
    if phase.wait_for(|p| *p != Phase::Ramp).await.is_err() {
        return;
    }
    // The first tick anywhere in the first interval, so that the ticks spread.
    let mut wait = Duration::from_millis(rng.random_range(0..TICK_MS.1));
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = phase.wait_for(|p| *p == Phase::Stop) => return,
        }
        if *phase.borrow() == Phase::Pause {
            let stop = phase
                .wait_for(|p| *p != Phase::Pause)
                .await
                .map_or(true, |p| *p == Phase::Stop);
            if stop {
                return;
            }
        }
        wait = Duration::from_millis(rng.random_range(TICK_MS.0..=TICK_MS.1));
        let roll: f64 = rng.random();
        // Steady: every tick is a message tick (the roll is still drawn, so
        // the messages are those of the same seed).
        let roll = if ctx.steady { 1.0 } else { roll };
        let stats = &ctx.stats;
        if roll < P_REPLACE {
            // Messages just before the close (they go out before the close
            // frame) and just after the new task is made (they wait for its
            // open).
            for _ in 0..rng.random_range(0..=2) {
                let data = random_message(&slot, &mut rng, ctx.payload, stats);
                slot.send(&task, generation, data, true, &ctx);
            }
            close_task(&slot, &task, generation, stats).await;
            add(&stats.replacements);
            (task, generation) = open_task(&slot, &ctx);
            for _ in 0..rng.random_range(0..=2) {
                let data = random_message(&slot, &mut rng, ctx.payload, stats);
                slot.send(&task, generation, data, true, &ctx);
            }
            continue;
        }
        let command = if roll < P_REPLACE + P_DROP {
            add(&stats.drops);
            Some("!drop")
        } else if roll < P_REPLACE + P_DROP + P_EOF {
            add(&stats.eofs);
            Some("!eof")
        } else if roll < P_REPLACE + P_DROP + P_EOF + P_SERVER_CLOSE {
            add(&stats.server_closes);
            Some("!close")
        } else {
            None
        };
        // A command is followed at once by 0-3 messages, which race with
        // the end of the connection; now and then a message tick is a burst.
        let messages = match command {
            Some(c) => {
                slot.send(&task, generation, Data::from(c), false, &ctx);
                rng.random_range(0..=3)
            }
            None if rng.random_bool(P_BURST) => rng.random_range(2..=5),
            None => 1,
        };
        for _ in 0..messages {
            if command.is_some() {
                // 0-3 ms apart, to land before, during and after the end of
                // the connection.
                let pause = rng.random_range(0..=3);
                if pause > 0 {
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
            }
            let data = random_message(&slot, &mut rng, ctx.payload, stats);
            slot.send(&task, generation, data, true, &ctx);
        }
    }
}

/// `m <slot> <seq> <padding>`, text or binary, for the next send of `slot`.
fn random_message(slot: &Slot, rng: &mut StdRng, payload: usize, stats: &Stats) -> Data {
    let seq = slot.next_seq.load(Relaxed);
    let pad = rng.random_range(0..=payload);
    let fill = char::from(b'a' + rng.random_range(0..26u8));
    let mut text = format!("m {} {seq} ", slot.id);
    text.extend(std::iter::repeat_n(fill, pad));
    add(&stats.data_sends);
    if rng.random_bool(P_BINARY) {
        add(&stats.binary_sends);
        Data::from(text.into_bytes())
    } else {
        Data::from(text)
    }
}

// The run.

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The growth from `from` to `to` in percent (0 when `from` is unknown).
fn growth_pct(from: u64, to: u64) -> f64 {
    if from == 0 {
        return 0.0;
    }
    (to as f64 - from as f64) / from as f64 * 100.0
}

fn count_open(slots: &[Arc<Slot>]) -> usize {
    slots
        .iter()
        .filter(|s| {
            s.current()
                .is_some_and(|t| t.ready_state() == ReadyState::Open)
        })
        .count()
}

fn progress(
    t0: Instant,
    slots: &[Arc<Slot>],
    stats: &Stats,
    classes: &mut [usize; CLASSES],
) -> (u64, u64) {
    let rss = status_kib("VmRSS:").unwrap_or(0);
    let (heap_kib, heap_blocks) = heap();
    let pending: usize = slots.iter().map(|s| s.unsettled().0).sum();
    let secs = t0.elapsed().as_secs();
    println!(
        "[{:>2}:{:02}] rss {:.1} MiB, heap {:.1} MiB in {heap_blocks} blocks | open {}/{} | sends {} ok {} fail {} pending {} | \
         echoes {} | reconnects {} | replaced {}{}",
        secs / 60,
        secs % 60,
        mib(rss),
        mib(heap_kib),
        count_open(slots),
        slots.len(),
        get(&stats.sends),
        get(&stats.succeeded),
        get(&stats.failed),
        pending,
        get(&stats.echoes),
        get(&stats.reopens),
        get(&stats.replacements),
        malloc_note(malloc_info()),
    );
    println!(
        "        heap change by block size: {}",
        class_changes(classes)
    );
    *classes = heap_classes();
    let _ = std::io::stdout().flush();
    (rss, heap_kib)
}

/// Waits (at most 30 s) until every task is open and every send has its
/// outcome, then a moment for the last echoes.
async fn quiesce(slots: &[Arc<Slot>]) {
    let quiet = wait_until(Duration::from_secs(30), || {
        count_open(slots) == slots.len() && slots.iter().all(|s| s.unsettled() == (0, 0))
    })
    .await;
    if !quiet {
        println!("warning: the traffic did not settle within 30 s of the pause");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
}

/// The slope of the least-squares line through `points`, and the largest
/// distance of a point from it; `None` for fewer than three points.
fn fit(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let (mx, my) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
    let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = points.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    let slope = sxy / sxx;
    let spread = points
        .iter()
        .map(|(x, y)| (y - (my + slope * (x - mx))).abs())
        .fold(0.0, f64::max);
    Some((slope, spread))
}

/// Waits until `done()` or `limit` passes; returns whether it is done.
async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run(cfg: &Config, url: String) -> bool {
    let n = cfg.n;
    println!(
        "soak: {n} tasks against {url} for {:.1} min, seed {}, ticks every {}-{} ms, \
         padding up to {} bytes",
        cfg.duration.as_secs_f64() / 60.0,
        cfg.seed,
        TICK_MS.0,
        TICK_MS.1,
        cfg.payload
    );
    let (heap_before, blocks_before) = heap();
    let ctx = Arc::new(Ctx {
        url,
        seed: cfg.seed,
        payload: cfg.payload,
        connect_fail: cfg.connect_fail,
        steady: cfg.steady,
        stats: Stats::default(),
    });
    let stats = &ctx.stats;
    let slots: Vec<Arc<Slot>> = (0..n).map(|i| Arc::new(Slot::new(i))).collect();
    let (phase_tx, phase_rx) = watch::channel(Phase::Ramp);
    let rss_before = status_kib("VmRSS:").unwrap_or(0);

    // 1. Ramp up: open `open_rate` tasks per second, and wait for all.
    let t0 = Instant::now();
    let step = Duration::from_millis(50);
    let per_step = (cfg.open_rate / 20).max(1);
    let mut ticker = tokio::time::interval(step);
    let mut loops = Vec::with_capacity(n);
    for chunk in slots.chunks(per_step) {
        ticker.tick().await;
        for slot in chunk {
            loops.push(tokio::spawn(slot_loop(
                slot.clone(),
                ctx.clone(),
                phase_rx.clone(),
            )));
        }
    }
    let all_open = wait_until(Duration::from_secs(120), || {
        get(&stats.first_opens) >= n as u64
    })
    .await;
    let open_time = t0.elapsed();
    println!(
        "open: {} of {n} tasks open in {:.1} s ({} reconnect attempts while opening)",
        get(&stats.first_opens),
        open_time.as_secs_f64(),
        get(&stats.reconnecting)
    );
    if !all_open {
        println!("warning: not every task opened within 120 s; going on");
    }
    let rss_open = status_kib("VmRSS:").unwrap_or(0);
    let (heap_open, blocks_open) = heap();
    println!(
        "memory at open: {:.1} MiB RSS with {n} tasks ({:.1} MiB before opening, {:.1} KiB per task); \
         heap {:.1} MiB in {blocks_open} blocks",
        mib(rss_open),
        mib(rss_before),
        rss_open.saturating_sub(rss_before) as f64 / n as f64,
        mib(heap_open)
    );
    println!(
        "        heap by block size: {}",
        class_changes(&[0; CLASSES])
    );

    // 2. Warm-up: traffic until every connection has carried some (its
    //    buffers and queues are made as traffic first flows), then a pause.
    //    The memory at start is taken in the pause, quiet, as the memory at
    //    end is once the traffic stops: the two compare like with like.
    let _ = phase_tx.send(Phase::Traffic);
    let mut classes = heap_classes();
    if !cfg.warmup.is_zero() {
        tokio::time::sleep(cfg.warmup).await;
        let _ = phase_tx.send(Phase::Pause);
        quiesce(&slots).await;
        println!(
            "warm-up: {:.1} min of traffic, {} sends; paused until every send had its outcome",
            cfg.warmup.as_secs_f64() / 60.0,
            get(&stats.sends)
        );
    }
    let rss_start = status_kib("VmRSS:").unwrap_or(0);
    let trimmed_start = trimmed_rss();
    let malloc_start = malloc_info();
    let (heap_start, blocks_start) = heap();
    println!(
        "memory at start: {:.1} MiB RSS{}, heap {:.1} MiB in {blocks_start} blocks{}",
        mib(rss_start),
        trimmed_note(trimmed_start),
        mib(heap_start),
        malloc_note(malloc_start)
    );
    println!(
        "        heap change by block size: {}",
        class_changes(&classes)
    );
    classes = heap_classes();
    let classes_start = classes;

    // 3. Traffic, with a progress line each minute.
    let _ = phase_tx.send(Phase::Traffic);
    let soak_start = Instant::now();
    let mut by_minute = vec![(0.0, (rss_start, heap_start))];
    let mut minute = 1u32;
    loop {
        let next = Duration::from_secs(60 * u64::from(minute)).min(cfg.duration);
        tokio::time::sleep_until((soak_start + next).into()).await;
        let figures = progress(soak_start, &slots, stats, &mut classes);
        by_minute.push((next.as_secs_f64() / 60.0, figures));
        if next >= cfg.duration {
            break;
        }
        minute += 1;
    }

    // 4. Pause the traffic as after the warm-up, and take the memory at end
    //    the same way as at start (the slot loops still alive); then stop
    //    the loops (a replacement may be under way) and wait for every task
    //    to be open again.
    let _ = phase_tx.send(Phase::Pause);
    quiesce(&slots).await;
    let rss_end = status_kib("VmRSS:").unwrap_or(0);
    let hwm = status_kib("VmHWM:").unwrap_or(0);
    let trimmed_end = trimmed_rss();
    let malloc_end = malloc_info();
    let (heap_end, blocks_end) = heap();
    let open_at_end = count_open(&slots);
    let pending_at_end: usize = slots.iter().map(|s| s.unsettled().0).sum();
    println!(
        "memory at end: {:.1} MiB RSS{}, heap {:.1} MiB in {blocks_end} blocks, with {open_at_end} tasks open \
         ({pending_at_end} sends without outcome yet){}",
        mib(rss_end),
        trimmed_note(trimmed_end),
        mib(heap_end),
        malloc_note(malloc_end)
    );
    println!(
        "        heap change by block size since start: {}",
        class_changes(&classes_start)
    );
    let _ = phase_tx.send(Phase::Stop);
    let mut loops_hung = 0;
    for h in loops {
        if tokio::time::timeout(Duration::from_secs(30), h)
            .await
            .is_err()
        {
            loops_hung += 1;
        }
    }
    if !wait_until(Duration::from_secs(30), || count_open(&slots) == n).await {
        println!(
            "warning: {} of {n} tasks open 30 s after the traffic stopped",
            count_open(&slots)
        );
    }

    // 5. Close every task, check it is CLOSED, and wait for every outcome.
    let closing_start = Instant::now();
    let closers: Vec<_> = slots
        .iter()
        .map(|slot| {
            let (slot, ctx) = (slot.clone(), ctx.clone());
            tokio::spawn(async move {
                let Some(task) = slot.current() else {
                    return false;
                };
                let generation = slot.generation.load(Relaxed);
                let closed = close_task(&slot, &task, generation, &ctx.stats).await;
                let ev = tokio::time::timeout(Duration::from_secs(5), task.closed()).await;
                closed && ev.is_ok()
            })
        })
        .collect();
    let mut closed = 0usize;
    for h in closers {
        if matches!(h.await, Ok(true)) {
            closed += 1;
        }
    }
    let close_time = closing_start.elapsed();
    let settled = wait_until(Duration::from_secs(30), || {
        slots.iter().all(|s| s.unsettled() == (0, 0))
    })
    .await;
    let (lost, no_complete) = slots.iter().fold((0, 0), |(a, b), s| {
        let (x, y) = s.unsettled();
        (a + x, b + y)
    });
    if lost > 0 {
        for s in &slots {
            let pending = lock(&s.pending);
            for (seq, e) in pending.iter().filter(|(_, e)| e.outcome.is_none()).take(5) {
                eprintln!(
                    "LOST: slot {} seq {seq} generation {} (current {}) data {}",
                    s.id,
                    e.generation,
                    s.generation.load(Relaxed),
                    e.data
                );
            }
        }
    }
    let still_current = unisocket::current_socket().is_some();
    // Messages that succeeded and were never echoed and whose connection end
    // was not seen (should be none once every task closed).
    let unechoed: usize = slots
        .iter()
        .map(|s| {
            lock(&s.pending)
                .values()
                .filter(|e| e.data && e.outcome == Some(true) && !e.echoed)
                .count()
        })
        .sum();

    // 5. Drop every handle: what the heap still holds beyond what it held
    //    before the first open is kept by closed tasks.
    for s in &slots {
        *lock(&s.task) = None;
    }
    drop(slots);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (heap_after, blocks_after) = heap();
    let tasks_made = get(&stats.tasks_made).max(1);
    let kept = (heap_after as f64 - heap_before as f64) * 1024.0;
    let kept_per_task = kept / tasks_made as f64;

    // 6. The summary.
    let sends = get(&stats.sends);
    let counted_lost = sends.saturating_sub(get(&stats.succeeded) + get(&stats.failed));
    let growth = growth_pct(rss_start, rss_end);
    println!();
    println!("=== soak summary ===");
    println!(
        "tasks:            {n} slots, {:.1} min of traffic, seed {}, ConnectOptions::fail {}",
        cfg.duration.as_secs_f64() / 60.0,
        cfg.seed,
        if cfg.connect_fail { "set" } else { "not set" }
    );
    if cfg.steady {
        println!("                  --steady: no connection was ended on purpose");
    }
    println!("allocator:        {}", allocator());
    println!(
        "memory:           start {:.1} MiB, end {:.1} MiB RSS, growth {growth:+.1} %, peak {:.1} MiB (VmHWM); \
         {:.1} MiB before opening, {:.1} MiB once open",
        mib(rss_start),
        mib(rss_end),
        mib(hwm),
        mib(rss_before),
        mib(rss_open)
    );
    if let (Some(a), Some(b)) = (trimmed_start, trimmed_end) {
        println!(
            "memory in use:    start {:.1} MiB, end {:.1} MiB RSS once the allocator gave its free pages \
             back, growth {:+.1} %",
            mib(a),
            mib(b),
            growth_pct(a, b)
        );
    }
    if let (Some((_, used_a, free_a)), Some((_, used_b, free_b))) = (malloc_start, malloc_end) {
        println!(
            "glibc heaps:      start {:.1} MiB in use and {:.1} MiB free, end {:.1} MiB in use and \
             {:.1} MiB free (free space between blocks in use, which glibc cannot hand back)",
            mib(used_a),
            mib(free_a),
            mib(used_b),
            mib(free_b)
        );
    }
    let heap_growth = growth_pct(heap_start, heap_end);
    println!(
        "live heap:        start {:.1} MiB in {blocks_start} blocks, end {:.1} MiB in {blocks_end} blocks, \
         growth {heap_growth:+.1} %; {:.1} MiB once open",
        mib(heap_start),
        mib(heap_end),
        mib(heap_open),
    );
    println!(
        "after teardown:   every task closed and every handle dropped, the heap holds {:.1} MiB in \
         {blocks_after} blocks: {:+.1} MiB and {:+} blocks over the {:.1} MiB before the first open, \
         {kept_per_task:+.0} bytes per task made ({tasks_made})",
        mib(heap_after),
        kept / 1024.0 / 1024.0,
        blocks_after as i64 - blocks_before as i64,
        mib(heap_before),
    );
    let trend: Vec<String> = by_minute
        .iter()
        .map(|(m, (rss, heap))| format!("{m:.0}m {:.0}/{:.0}", mib(*rss), mib(*heap)))
        .collect();
    println!("RSS/heap by min:  {} (MiB)", trend.join(", "));
    // The per-minute samples are taken with traffic in flight; a line fitted
    // through them shows a trend that single samples hide in their noise.
    let traffic: Vec<(f64, f64)> = by_minute
        .iter()
        .skip(1)
        .map(|(m, (_, heap))| (*m, *heap as f64 / 1024.0))
        .collect();
    if let Some((slope, spread)) = fit(&traffic) {
        println!(
            "heap trend:       {slope:+.2} MiB per minute over minutes 1 to {:.0} (a line fitted through \
             the samples; they lie within {spread:.2} MiB of it)",
            traffic.last().map_or(0.0, |t| t.0)
        );
    }
    println!(
        "sends:            {sends} ({} messages, {} of them binary; {} !drop, {} !eof, {} !close)",
        get(&stats.data_sends),
        get(&stats.binary_sends),
        get(&stats.drops),
        get(&stats.eofs),
        get(&stats.server_closes)
    );
    println!(
        "outcomes:         {} succeeded, {} failed, {lost} LOST (no outcome; {counted_lost} by the counters), \
         {} duplicate outcomes",
        get(&stats.succeeded),
        get(&stats.failed),
        get(&stats.duplicate_outcomes)
    );
    println!(
        "complete:         {} calls, {no_complete} missing, {} duplicate, {} disagreeing with the outcome",
        get(&stats.completes),
        get(&stats.duplicate_completes),
        get(&stats.complete_mismatches)
    );
    println!(
        "echoes:           {} received of {} messages that succeeded; {} echo lost (connection ended first), \
         {unechoed} unaccounted, {} duplicate, {} unexpected, {} echoes of failed sends",
        get(&stats.echoes),
        get(&stats.data_succeeded),
        get(&stats.echo_lost),
        get(&stats.duplicate_echoes),
        get(&stats.unexpected_echoes),
        get(&stats.echoes_of_failed)
    );
    println!(
        "connections:      {} tasks made ({} replaced by the client), {} first opens, {} reopens, \
         {} on_reconnecting ({} after a failed attempt), {} connect fail callbacks",
        get(&stats.tasks_made),
        get(&stats.replacements),
        get(&stats.first_opens),
        get(&stats.reopens),
        get(&stats.reconnecting),
        get(&stats.retries),
        get(&stats.connect_fails)
    );
    println!(
        "close:            {} closes ok, {} failed, {} hung, {} not CLOSED after close, {} on_close events \
         ({} unexpected); final close of {n} tasks: {closed} CLOSED in {:.1} s; current_socket() {}",
        get(&stats.close_ok),
        get(&stats.close_failed),
        get(&stats.close_hung),
        get(&stats.not_closed),
        get(&stats.closes),
        get(&stats.unexpected_closes),
        close_time.as_secs_f64(),
        if still_current { "is Some (BUG)" } else { "is None" }
    );
    if loops_hung > 0 || !settled {
        println!(
            "hangs:            {loops_hung} task loops did not stop; outcomes settled: {settled}"
        );
    }
    print_reasons("fail callbacks of send by reason", &stats.fail_reasons);
    print_reasons("on_error by reason", &stats.error_reasons);
    print_reasons("on_close events", &stats.close_events);
    print_reasons(
        "connect fail callbacks by reason",
        &stats.connect_fail_reasons,
    );
    print_reasons("close failures by reason", &stats.close_fail_reasons);

    let duplicates = get(&stats.duplicate_outcomes)
        + get(&stats.duplicate_completes)
        + get(&stats.duplicate_echoes);
    let mut failures = Vec::new();
    if lost > 0 || counted_lost > 0 {
        failures.push(format!("{} messages lost", lost.max(counted_lost as usize)));
    }
    if duplicates > 0 {
        failures.push(format!(
            "{duplicates} duplicate outcomes, completes or echoes"
        ));
    }
    if no_complete > 0 || get(&stats.complete_mismatches) > 0 {
        failures.push("complete missing or wrong".to_owned());
    }
    if get(&stats.unexpected_echoes) > 0 || get(&stats.echoes_of_failed) > 0 {
        failures.push("unexpected echoes".to_owned());
    }
    if closed < n || get(&stats.not_closed) > 0 || get(&stats.close_hung) > 0 || still_current {
        failures.push("a task did not end CLOSED".to_owned());
    }
    if loops_hung > 0 {
        failures.push("task loops hung".to_owned());
    }
    // Tokio keeps some capacity (timer wheel, I/O slabs) after a burst of
    // connections; a task that is never freed costs kilobytes.
    if kept_per_task > 512.0 {
        println!(
            "memory:           LEAK: closed tasks stay allocated ({kept_per_task:.0} bytes each); \
             not counted in the exit status"
        );
    }
    if failures.is_empty() {
        println!("result:           PASS");
    } else {
        println!("result:           FAIL: {}", failures.join("; "));
    }
    let _ = std::io::stdout().flush();
    failures.is_empty()
}

fn print_reasons(title: &str, map: &Mutex<BTreeMap<String, u64>>) {
    let map = lock(map);
    println!("{title}:{}", if map.is_empty() { " none" } else { "" });
    let mut rows: Vec<_> = map.iter().collect();
    rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (reason, count) in rows {
        println!("  {count:>9}  {reason}");
    }
}

/// Starts the echo server of the `many_tasks` example (built next to this
/// one) and reads its port.
fn spawn_server() -> (Child, u16) {
    let exe = std::env::current_exe().expect("current_exe");
    let server = exe.with_file_name(format!("many_tasks{}", std::env::consts::EXE_SUFFIX));
    if !server.is_file() {
        eprintln!(
            "soak: the echo server {} is missing: build it with `cargo build --release --examples` \
             (or give a server with --url ws://HOST:PORT/)",
            server.display()
        );
        std::process::exit(2);
    }
    let mut child = Command::new(&server)
        .arg("--serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| {
            eprintln!("soak: cannot start {}: {e}", server.display());
            std::process::exit(2);
        });
    let stdout = child.stdout.take().expect("child stdout");
    let mut line = String::new();
    let _ = BufReader::new(stdout).read_line(&mut line);
    let Some(port) = line
        .trim()
        .strip_prefix("PORT ")
        .and_then(|p| p.parse().ok())
    else {
        eprintln!(
            "soak: unexpected first line from {}: {line:?}",
            server.display()
        );
        let _ = child.kill();
        std::process::exit(2);
    };
    println!(
        "echo server: {} --serve, pid {}, port {port}",
        server.display(),
        child.id()
    );
    (child, port)
}
