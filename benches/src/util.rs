//! Small shared pieces: the per-run result, CPU pinning, peak RSS, and a
//! tiny `--key value` argument parser.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What one client run reports to the orchestrator (one JSON line on stdout).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Sample {
    /// Echoes received in the measured window (or in total, for `conns`).
    pub msgs: u64,
    /// Length of the measured window, seconds.
    pub secs: f64,
    /// Payload bytes received in the window.
    pub bytes: u64,
    /// Round-trip latency percentiles (rtt workload), microseconds.
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    /// CPU time (user + system, all threads) the client process spent in
    /// the measured window, µs.
    pub cpu_us: Option<f64>,
    /// Peak resident set size of the client process (VmHWM), KiB.
    pub rss_kib: u64,
    /// Set when the run failed; the numbers are then meaningless.
    pub error: Option<String>,
}

impl Sample {
    pub fn msgs_per_sec(&self) -> f64 {
        if self.secs > 0.0 {
            self.msgs as f64 / self.secs
        } else {
            0.0
        }
    }

    /// Client CPU time per echoed message, µs.
    pub fn cpu_per_msg(&self) -> Option<f64> {
        self.cpu_us
            .filter(|_| self.msgs > 0)
            .map(|c| c / self.msgs as f64)
    }

    pub fn mb_per_sec(&self) -> f64 {
        if self.secs > 0.0 {
            self.bytes as f64 / self.secs / 1e6
        } else {
            0.0
        }
    }
}

/// Peak resident set size of this process, KiB (`VmHWM` of /proc/self/status).
pub fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// CPU time (user + system) of this process so far, µs.
pub fn cpu_time_us() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut ru) != 0 {
            return 0.0;
        }
        let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
        us(ru.ru_utime) + us(ru.ru_stime)
    }
}

/// Pins the calling thread (and so every thread it starts later) to `core`.
/// Returns false when the core does not exist or pinning failed.
pub fn pin_to(core: Option<usize>) -> bool {
    let Some(core) = core else { return false };
    let ids = core_affinity::get_core_ids().unwrap_or_default();
    match ids.into_iter().find(|c| c.id == core) {
        Some(id) => core_affinity::set_for_current(id),
        None => false,
    }
}

/// Raises the soft open-files limit to the hard limit (1000 connections on
/// each side need more than the usual 1024).
pub fn raise_nofile_limit() {
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Reports a failed run on stdout (so the orchestrator records it) and exits.
pub fn fail(msg: impl std::fmt::Display) -> ! {
    let s = Sample {
        error: Some(msg.to_string()),
        rss_kib: peak_rss_kib(),
        ..Sample::default()
    };
    println!("{}", serde_json::to_string(&s).unwrap_or_default());
    std::process::exit(2);
}

/// `--key value` pairs and bare `--flag`s.
pub struct Args {
    values: HashMap<String, String>,
    flags: Vec<String>,
}

impl Args {
    /// Parses `args`; `flags` lists the options that take no value.
    pub fn parse(args: &[String], flags: &[&str]) -> Result<Args, String> {
        let mut values = HashMap::new();
        let mut found = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let Some(key) = a.strip_prefix("--") else {
                return Err(format!("unexpected argument {a:?}"));
            };
            if let Some((k, v)) = key.split_once('=') {
                values.insert(k.to_owned(), v.to_owned());
            } else if flags.contains(&key) {
                found.push(key.to_owned());
            } else {
                let v = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
                values.insert(key.to_owned(), v.clone());
            }
        }
        Ok(Args {
            values,
            flags: found,
        })
    }

    pub fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    pub fn num<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| format!("--{name}: cannot parse {v:?}")),
        }
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.values
            .keys()
            .map(String::as_str)
            .chain(self.flags.iter().map(String::as_str))
    }
}

/// Round-trip latencies taken after a warm-up, until a deadline.
pub struct LatencyRecorder {
    warm_end: Instant,
    end: Instant,
    first: Option<Instant>,
    last: Option<Instant>,
    cpu_first: f64,
    nanos: Vec<u32>,
}

impl LatencyRecorder {
    pub fn new(warmup: Duration, secs: Duration) -> Self {
        let now = Instant::now();
        LatencyRecorder {
            warm_end: now + warmup,
            end: now + warmup + secs,
            first: None,
            last: None,
            cpu_first: 0.0,
            nanos: Vec::with_capacity(1 << 20),
        }
    }

    /// Records the round trip that started at `sent`; returns false once the
    /// measured window is over.
    pub fn record(&mut self, sent: Instant) -> bool {
        let now = Instant::now();
        if now >= self.warm_end {
            if self.first.is_none() {
                self.first = Some(sent);
                self.cpu_first = cpu_time_us();
            }
            self.last = Some(now);
            let ns = now.duration_since(sent).as_nanos();
            self.nanos.push(ns.min(u32::MAX as u128) as u32);
        }
        now < self.end
    }

    pub fn finish(mut self, size: usize) -> Sample {
        let cpu = self.first.map(|_| cpu_time_us() - self.cpu_first);
        self.nanos.sort_unstable();
        let pct = |p: f64| -> Option<f64> {
            let n = self.nanos.len();
            (n > 0).then(|| {
                let i = ((n as f64 * p).ceil() as usize).clamp(1, n) - 1;
                f64::from(self.nanos[i]) / 1000.0
            })
        };
        let secs = match (self.first, self.last) {
            (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
            _ => 0.0,
        };
        Sample {
            msgs: self.nanos.len() as u64,
            secs,
            bytes: (self.nanos.len() * size) as u64,
            p50_us: pct(0.50),
            p99_us: pct(0.99),
            cpu_us: cpu,
            ..Sample::default()
        }
    }
}
