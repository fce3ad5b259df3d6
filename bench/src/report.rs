//! Turns the samples of every round into markdown tables: medians, spread,
//! and ratios to the best third-party WebSocket client ("best peer") and
//! to the raw-TCP baseline.

use std::collections::HashMap;
use std::fmt::Write;

use crate::clients::Client;
use crate::util::Sample;
use crate::workload::Workload;

/// Every sample, by workload name and client, in round order.
pub type Results = HashMap<(String, Client), Vec<Sample>>;

/// What a workload's headline number is.
#[derive(Clone, Copy, PartialEq)]
enum Metric {
    MsgsPerSec,
    MbPerSec,
    P50Us,
    P99Us,
    RssMib,
    WallSecs,
    CpuPerMsg,
}

impl Metric {
    fn unit(self) -> &'static str {
        match self {
            Metric::MsgsPerSec => "msgs/s",
            Metric::MbPerSec => "MB/s",
            Metric::P50Us => "p50 µs",
            Metric::P99Us => "p99 µs",
            Metric::RssMib => "peak RSS MiB",
            Metric::WallSecs => "wall s",
            Metric::CpuPerMsg => "client CPU µs/msg",
        }
    }

    fn higher_is_better(self) -> bool {
        matches!(self, Metric::MsgsPerSec | Metric::MbPerSec)
    }

    fn of(self, s: &Sample) -> Option<f64> {
        match self {
            Metric::MsgsPerSec => Some(s.msgs_per_sec()),
            Metric::MbPerSec => Some(s.mb_per_sec()),
            Metric::P50Us => s.p50_us,
            Metric::P99Us => s.p99_us,
            Metric::RssMib => Some(s.rss_kib as f64 / 1024.0),
            Metric::WallSecs => Some(s.secs),
            Metric::CpuPerMsg => s.cpu_per_msg(),
        }
    }
}

/// The rows a workload contributes: its headline first.
fn metrics(w: &Workload) -> Vec<Metric> {
    match w {
        Workload::Rtt { .. } => vec![
            Metric::MsgsPerSec,
            Metric::P50Us,
            Metric::P99Us,
            Metric::CpuPerMsg,
        ],
        Workload::Stream { .. } if w.bandwidth_bound() => {
            vec![Metric::MbPerSec, Metric::MsgsPerSec, Metric::CpuPerMsg]
        }
        Workload::Stream { .. } => vec![Metric::MsgsPerSec, Metric::MbPerSec, Metric::CpuPerMsg],
        Workload::Conns { .. } => vec![
            Metric::MsgsPerSec,
            Metric::WallSecs,
            Metric::RssMib,
            Metric::CpuPerMsg,
        ],
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

struct Stat {
    median: f64,
    min: f64,
    max: f64,
    n: usize,
    failed: usize,
}

fn stat(samples: Option<&Vec<Sample>>, m: Metric) -> Option<Stat> {
    let samples = samples?;
    let failed = samples.iter().filter(|s| s.error.is_some()).count();
    let vals: Vec<f64> = samples
        .iter()
        .filter(|s| s.error.is_none())
        .filter_map(|s| m.of(s))
        .collect();
    let min = vals.iter().copied().fold(f64::INFINITY, f64::min);
    let max = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let n = vals.len();
    Some(Stat {
        median: median(vals)?,
        min,
        max,
        n,
        failed,
    })
}

fn fmt_num(v: f64) -> String {
    if v >= 100_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 10_000.0 {
        format!("{:.1}k", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// `value ÷ reference`, oriented so that < 1.00 always means "worse than
/// the reference" (for latency, RSS and wall time the inverse is taken).
fn ratio(m: Metric, value: f64, reference: f64) -> Option<f64> {
    if value <= 0.0 || reference <= 0.0 {
        return None;
    }
    Some(if m.higher_is_better() {
        value / reference
    } else {
        reference / value
    })
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "–".to_owned(), |r| format!("{r:.2}"))
}

/// The best peer's median for `m`, and which peer it is.
fn best_peer(results: &Results, w: &str, clients: &[Client], m: Metric) -> Option<(Client, f64)> {
    clients
        .iter()
        .filter(|c| c.is_peer())
        .filter_map(|c| stat(results.get(&(w.to_owned(), *c)), m).map(|s| (*c, s.median)))
        .reduce(|a, b| {
            let b_better = if m.higher_is_better() {
                b.1 > a.1
            } else {
                b.1 < a.1
            };
            if b_better {
                b
            } else {
                a
            }
        })
}

/// How a ratio table sets a client against its reference.
#[derive(Clone, Copy)]
enum Pairing {
    /// The ratio of the two clients' medians over rounds.
    Medians,
    /// The median over rounds of the ratio within each round.
    Rounds,
}

/// `a` against `b` on metric `m` of workload `w`, oriented as [`ratio`].
fn compare(results: &Results, w: &str, a: Client, b: Client, m: Metric, p: Pairing) -> Option<f64> {
    let (sa, sb) = (
        results.get(&(w.to_owned(), a))?,
        results.get(&(w.to_owned(), b))?,
    );
    match p {
        Pairing::Medians => ratio(m, stat(Some(sa), m)?.median, stat(Some(sb), m)?.median),
        // Samples are in round order, failed ones included.
        Pairing::Rounds => median(
            sa.iter()
                .zip(sb)
                .filter(|(x, y)| x.error.is_none() && y.error.is_none())
                .filter_map(|(x, y)| ratio(m, m.of(x)?, m.of(y)?))
                .collect(),
        ),
    }
}

/// The rows of the unisocket clients against the best peer and raw TCP.
fn ratio_table(
    out: &mut String,
    results: &Results,
    workloads: &[Workload],
    clients: &[Client],
    unis: &[Client],
    pairing: Pairing,
) {
    let raw = clients.contains(&Client::RawTcp);
    let _ = write!(out, "| workload | metric | best peer |");
    for u in unis {
        let _ = write!(out, " {} ÷ best peer |", u.name());
    }
    if raw {
        for u in unis {
            let _ = write!(out, " {} ÷ raw TCP |", u.name());
        }
        let _ = write!(out, " best peer ÷ raw TCP |");
    }
    let cols = 3 + unis.len() * if raw { 2 } else { 1 } + usize::from(raw);
    let _ = write!(out, "\n|---|---|---|");
    for _ in 3..cols {
        let _ = write!(out, "---:|");
    }
    out.push('\n');
    for w in workloads {
        let name = w.name();
        for m in metrics(w) {
            if m == Metric::P99Us || m == Metric::WallSecs {
                continue;
            }
            if m == Metric::MbPerSec && !w.bandwidth_bound() {
                continue;
            }
            if m == Metric::MsgsPerSec && w.bandwidth_bound() {
                continue;
            }
            let best = best_peer(results, &name, clients, m);
            let _ = write!(
                out,
                "| {name} | {} | {} |",
                m.unit(),
                best.map_or_else(
                    || "–".to_owned(),
                    |(c, v)| format!("{} ({})", c.name(), fmt_num(v))
                )
            );
            let against = |a: Client, b: Option<Client>| {
                fmt_ratio(b.and_then(|b| compare(results, &name, a, b, m, pairing)))
            };
            for u in unis {
                let _ = write!(out, " {} |", against(*u, best.map(|(c, _)| c)));
            }
            if raw {
                for u in unis {
                    let _ = write!(out, " {} |", against(*u, Some(Client::RawTcp)));
                }
                let cell =
                    best.map_or_else(|| "–".to_owned(), |(c, _)| against(c, Some(Client::RawTcp)));
                let _ = write!(out, " {cell} |");
            }
            out.push('\n');
        }
    }
}

/// The whole report.
pub fn render(results: &Results, workloads: &[Workload], clients: &[Client]) -> String {
    let mut out = String::new();

    // Summary: every client's median, one row per workload metric.
    let _ = writeln!(
        out,
        "## Summary (median over rounds; msgs/s and MB/s: higher is better)\n"
    );
    let _ = write!(out, "| workload | unit |");
    for c in clients {
        let _ = write!(out, " {} |", c.name());
    }
    let _ = write!(out, "\n|---|---|");
    for _ in clients {
        let _ = write!(out, "---:|");
    }
    out.push('\n');
    for w in workloads {
        let name = w.name();
        for m in metrics(w) {
            let _ = write!(out, "| {name} | {} |", m.unit());
            for c in clients {
                let cell = stat(results.get(&(name.clone(), *c)), m)
                    .map_or_else(|| "–".to_owned(), |s| fmt_num(s.median));
                let _ = write!(out, " {cell} |");
            }
            out.push('\n');
        }
    }

    // Ratios of the unisocket clients.
    let unis: Vec<Client> = clients
        .iter()
        .copied()
        .filter(|c| matches!(c, Client::Uni | Client::UniCb))
        .collect();
    if !unis.is_empty() {
        let tables = [
            (
                "unisocket vs the best peer and vs raw TCP\n\nRatios of medians, oriented so that 1.00 = as good, < 1.00 = worse (for latency, wall time and RSS the inverse is taken: 0.50 = twice the latency/memory).",
                Pairing::Medians,
            ),
            (
                "The same ratios, within rounds\n\nThe median over rounds of each round's ratio, against the same best peer. The clients of one round run one after the other, within seconds; the machine drifts between a fast and a slow mode within a run, and a ratio of medians can set one client's fast rounds against another's slow ones.",
                Pairing::Rounds,
            ),
        ];
        for (heading, pairing) in tables {
            let _ = writeln!(out, "\n## {heading}\n");
            ratio_table(&mut out, results, workloads, clients, &unis, pairing);
        }
    }

    // Detail: spread per client.
    let _ = writeln!(out, "\n## Detail per workload\n");
    for w in workloads {
        let name = w.name();
        let _ = writeln!(out, "### {name}: {}\n", w.describe());
        let ms = metrics(w);
        let head = ms[0];
        let _ = write!(
            out,
            "| client | {} median | min – max | runs |",
            head.unit()
        );
        for m in &ms[1..] {
            let _ = write!(out, " {} |", m.unit());
        }
        let _ = writeln!(out, " ÷ best peer | ÷ raw TCP |");
        let _ = write!(out, "|---|---:|---:|---:|");
        for _ in &ms[1..] {
            let _ = write!(out, "---:|");
        }
        let _ = writeln!(out, "---:|---:|");
        let best = best_peer(results, &name, clients, head);
        let raw_v = stat(results.get(&(name.clone(), Client::RawTcp)), head).map(|s| s.median);
        for c in clients {
            let Some(s) = stat(results.get(&(name.clone(), *c)), head) else {
                let failed = results
                    .get(&(name.clone(), *c))
                    .map_or(0, |v| v.iter().filter(|s| s.error.is_some()).count());
                if failed > 0 {
                    let _ = writeln!(out, "| {} | failed ({failed} runs) |", c.name());
                }
                continue;
            };
            let runs = if s.failed > 0 {
                format!("{} ({} failed)", s.n, s.failed)
            } else {
                s.n.to_string()
            };
            let _ = write!(
                out,
                "| {} | {} | {} – {} | {runs} |",
                c.name(),
                fmt_num(s.median),
                fmt_num(s.min),
                fmt_num(s.max)
            );
            for m in &ms[1..] {
                let cell = stat(results.get(&(name.clone(), *c)), *m)
                    .map_or_else(|| "–".to_owned(), |s| fmt_num(s.median));
                let _ = write!(out, " {cell} |");
            }
            let rb = best.and_then(|(_, b)| ratio(head, s.median, b));
            let rr = raw_v.and_then(|rv| ratio(head, s.median, rv));
            let _ = writeln!(out, " {} | {} |", fmt_ratio(rb), fmt_ratio(rr));
        }
        out.push('\n');
    }

    // Errors, verbatim (first of each kind).
    let mut errors: Vec<String> = Vec::new();
    for ((w, c), samples) in results {
        for s in samples {
            if let Some(e) = &s.error {
                let line = format!("- {w} / {}: {e}", c.name());
                if !errors.contains(&line) {
                    errors.push(line);
                }
            }
        }
    }
    if !errors.is_empty() {
        errors.sort();
        let _ = writeln!(out, "## Failed runs\n");
        for e in errors {
            let _ = writeln!(out, "{e}");
        }
    }
    out
}
