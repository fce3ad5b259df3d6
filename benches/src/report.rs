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
    HandshakesPerSec,
    CpuPerHandshake,
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
            Metric::HandshakesPerSec => "handshakes/s",
            Metric::CpuPerHandshake => "client CPU µs/handshake",
        }
    }

    fn higher_is_better(self) -> bool {
        matches!(
            self,
            Metric::MsgsPerSec | Metric::MbPerSec | Metric::HandshakesPerSec
        )
    }

    fn of(self, s: &Sample) -> Option<f64> {
        match self {
            Metric::MsgsPerSec => Some(s.msgs_per_sec()),
            Metric::MbPerSec => Some(s.mb_per_sec()),
            Metric::P50Us => s.p50_us,
            Metric::P99Us => s.p99_us,
            Metric::RssMib => Some(s.rss_kib as f64 / 1024.0),
            Metric::WallSecs => Some(s.secs),
            Metric::CpuPerMsg | Metric::CpuPerHandshake => s.cpu_per_msg(),
            Metric::HandshakesPerSec => Some(s.msgs_per_sec()),
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
        Workload::Setup { .. } => vec![Metric::HandshakesPerSec, Metric::CpuPerHandshake],
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

/// The headline metric of a workload: what its targets are about.
fn headline(w: &Workload) -> Metric {
    metrics(w)[0]
}

/// One cell of the targets table: the ratio, and whether it reaches `min`.
fn target_cell(r: Option<f64>, min: f64) -> String {
    bound_cell(r, min, true)
}

/// A target cell for a value that must be at least (`at_least`) or at most
/// `bound`: "met", or by how much it is short of (or over) the bound.
fn bound_cell(v: Option<f64>, bound: f64, at_least: bool) -> String {
    let Some(v) = v else {
        return "–".to_owned();
    };
    let miss = if at_least { bound - v } else { v - bound };
    let how = if at_least { "short" } else { "over" };
    if miss <= 0.0 {
        format!("{v:.2} (met)")
    } else if miss < 0.005 {
        // Missed by less than the rounding shows: not "short by 0.00".
        format!("{v:.3} ({how} by {miss:.3})")
    } else {
        format!("{v:.2} ({how} by {miss:.2})")
    }
}

/// The targets the benchmark was built to check, each from this run's
/// ratios within rounds: every stream at least 1.05x the best peer (64 KiB
/// text: 1.2x) and 0.95x raw TCP; 1 000 connections at least 1.05x the best
/// peer with at most 0.8x its peak RSS; callbacks within 5 % of async. The
/// last column says what a target asks in raw TCP's terms, from the best
/// peer's own ratio to raw TCP: above 1.00, it asks for more than the
/// raw-TCP client does with the same system calls and no framing at all.
fn targets_table(out: &mut String, results: &Results, workloads: &[Workload], clients: &[Client]) {
    let both = clients.contains(&Client::Uni) && clients.contains(&Client::UniCb);
    let raw = clients.contains(&Client::RawTcp);
    let _ = writeln!(
        out,
        "| workload | target | unisocket | unisocket-cb | the target ÷ raw TCP |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|");
    let rounds = Pairing::Rounds;
    for w in workloads {
        let name = w.name();
        let m = headline(w);
        let cell = |c: Client, against: Option<Client>, min: f64| {
            if !clients.contains(&c) {
                return "–".to_owned();
            }
            target_cell(
                against.and_then(|b| compare(results, &name, c, b, m, rounds)),
                min,
            )
        };
        let best = best_peer(results, &name, clients, m).map(|(c, _)| c);
        let peer_target = match w {
            Workload::Stream { size, text, .. } => Some(if *text && *size == 64 << 10 {
                1.2
            } else {
                1.05
            }),
            Workload::Conns { .. } | Workload::Setup { .. } => Some(1.05),
            Workload::Rtt { .. } => None,
        };
        if let Some(min) = peer_target {
            let in_raw_terms = best
                .filter(|_| raw)
                .and_then(|b| compare(results, &name, b, Client::RawTcp, m, rounds))
                .map_or_else(|| "–".to_owned(), |r| format!("{:.2}", min * r));
            let _ = writeln!(
                out,
                "| {name} | {} ≥ {min:.2}x the best peer ({}) | {} | {} | {in_raw_terms} |",
                m.unit(),
                best.map_or("–", Client::name),
                cell(Client::Uni, best, min),
                cell(Client::UniCb, best, min),
            );
        }
        if matches!(w, Workload::Stream { .. }) && raw {
            let _ = writeln!(
                out,
                "| {name} | {} ≥ 0.95x raw TCP | {} | {} | 0.95 |",
                m.unit(),
                cell(Client::Uni, Some(Client::RawTcp), 0.95),
                cell(Client::UniCb, Some(Client::RawTcp), 0.95),
            );
        }
        if matches!(w, Workload::Conns { .. }) {
            // RSS ratios are oriented as the others (best ÷ ours): at most
            // 0.8x the best peer's RSS is a ratio of at least 1.25. Shown
            // here as ours ÷ the best peer's, as the target is worded.
            let rss = Metric::RssMib;
            let best_rss = best_peer(results, &name, clients, rss).map(|(c, _)| c);
            let share = |c: Client| {
                let r = best_rss.and_then(|b| compare(results, &name, c, b, rss, rounds));
                bound_cell(r.map(|r| 1.0 / r), 0.8, false)
            };
            let _ = writeln!(
                out,
                "| {name} | peak RSS ≤ 0.80x the best peer's ({}) | {} | {} | |",
                best_rss.map_or("–", Client::name),
                share(Client::Uni),
                share(Client::UniCb),
            );
        }
        if both {
            let _ = writeln!(
                out,
                "| {name} | {} of callbacks ≥ 0.95x async | | {} | |",
                m.unit(),
                cell(Client::UniCb, Some(Client::Uni), 0.95),
            );
        }
    }
}

/// The bar below which a ratio to the best peer is marked in the table
/// across servers and listed as trailing.
const TRAILING: f64 = 1.05;

/// The table across servers: for each workload's headline metric and each
/// server, the two unisocket clients' ratios within rounds to the best peer
/// on that server (and that peer's letter), those below [`TRAILING`] in
/// bold; then the list of those below it.
pub fn render_across_servers(
    servers: &[(&str, &Results)],
    workloads: &[Workload],
    clients: &[Client],
) -> String {
    let mut out = String::new();
    let unis: Vec<Client> = clients
        .iter()
        .copied()
        .filter(|c| matches!(c, Client::Uni | Client::UniCb))
        .collect();
    let _ = writeln!(
        out,
        "## unisocket ÷ the best peer, per server\n\nEach cell: {} ÷ the best peer on that server (its letter in brackets), the median over rounds of each round's ratio, on the workload's headline metric; 1.00 = as good, below = worse. **Bold**: below {TRAILING:.2}.\n",
        unis.iter().map(|c| c.name()).collect::<Vec<_>>().join(" / ")
    );
    let _ = write!(out, "| workload | metric |");
    for (name, _) in servers {
        let _ = write!(out, " {name} |");
    }
    let _ = write!(out, "\n|---|---|");
    for _ in servers {
        let _ = write!(out, "---:|");
    }
    out.push('\n');
    let mut trailing = Vec::new();
    for w in workloads {
        let name = w.name();
        let m = headline(w);
        let _ = write!(out, "| {name} | {} |", m.unit());
        for (server, results) in servers {
            let Some((best, _)) = best_peer(results, &name, clients, m) else {
                let _ = write!(out, " – |");
                continue;
            };
            let mut parts = Vec::new();
            let mut short = Vec::new();
            for u in &unis {
                let r = compare(results, &name, *u, best, m, Pairing::Rounds);
                parts.push(match r {
                    Some(r) if r < TRAILING => {
                        // Short by less than the rounding shows: 3 digits.
                        let r = if format!("{r:.2}") == format!("{TRAILING:.2}") {
                            format!("{r:.3}")
                        } else {
                            format!("{r:.2}")
                        };
                        short.push(format!("{} {r}", u.name()));
                        format!("**{r}**")
                    }
                    r => fmt_ratio(r),
                });
            }
            if !short.is_empty() {
                trailing.push(format!(
                    "- {name} @ {server} (best peer {}): {}",
                    best.name(),
                    short.join(", ")
                ));
            }
            let _ = write!(out, " {} ({}) |", parts.join(" / "), best.letter());
        }
        out.push('\n');
    }
    let _ = writeln!(out, "\n### Below {TRAILING:.2}x the best peer\n");
    if trailing.is_empty() {
        let _ = writeln!(out, "None.");
    } else {
        for line in trailing {
            let _ = writeln!(out, "{line}");
        }
    }
    out
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
        let _ = writeln!(
            out,
            "\n## Targets\n\nEach from the ratios within rounds above. The last column is what a target against the best peer asks in raw TCP's terms (the target times the best peer's own ratio to raw TCP): above 1.00, more than the raw-TCP client does with the same system calls and no WebSocket framing.\n"
        );
        targets_table(&mut out, results, workloads, clients);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A sample of `mb` MB/s (and as many msgs/s) with `rss` MiB peak RSS.
    fn sample(mb: f64, rss: f64) -> Sample {
        Sample {
            msgs: mb as u64,
            bytes: (mb * 1e6) as u64,
            secs: 1.0,
            rss_kib: (rss * 1024.0) as u64,
            ..Sample::default()
        }
    }

    fn results(w: Workload, rows: &[(Client, f64, f64)]) -> Results {
        let mut r = Results::default();
        for &(c, mb, rss) in rows {
            // Two rounds, the second twice as fast for everyone: the ratios
            // within rounds stay the same.
            r.insert((w.name(), c), vec![sample(mb, rss), sample(2.0 * mb, rss)]);
        }
        r
    }

    fn row<'a>(report: &'a str, workload: &str, target: &str) -> &'a str {
        let targets = &report[report.find("## Targets").expect("a targets section")..];
        targets
            .lines()
            .find(|l| l.starts_with(&format!("| {workload} | ")) && l.contains(target))
            .unwrap_or_else(|| panic!("no row {workload} / {target} in\n{targets}"))
    }

    #[test]
    fn targets_say_what_is_met_and_by_how_much_what_is_not() {
        let w = Workload::Stream {
            size: 64 << 10,
            window: 16,
            text: true,
            tls: false,
        };
        let clients = [
            Client::Uni,
            Client::UniCb,
            Client::TokioWs,
            Client::FastWs,
            Client::RawTcp,
        ];
        let r = results(
            w,
            &[
                (Client::Uni, 110.0, 1.0),
                (Client::UniCb, 130.0, 1.0),
                (Client::TokioWs, 100.0, 1.0),
                (Client::FastWs, 90.0, 1.0),
                (Client::RawTcp, 125.0, 1.0),
            ],
        );
        let report = render(&r, &[w], &clients);
        // 64 KiB text asks for 1.2x the best peer, which asks 0.96x raw TCP.
        assert_eq!(
            row(&report, "stream-64k-text", "1.20x the best peer (tokio-websockets)"),
            "| stream-64k-text | MB/s ≥ 1.20x the best peer (tokio-websockets) | 1.10 (short by 0.10) | 1.30 (met) | 0.96 |"
        );
        assert_eq!(
            row(&report, "stream-64k-text", "0.95x raw TCP"),
            "| stream-64k-text | MB/s ≥ 0.95x raw TCP | 0.88 (short by 0.07) | 1.04 (met) | 0.95 |"
        );
        assert!(row(&report, "stream-64k-text", "callbacks").contains("| 1.18 (met) |"));
    }

    #[test]
    fn connections_are_held_to_the_best_peers_rate_and_a_share_of_its_memory() {
        let w = Workload::Conns {
            conns: 10,
            rtts: 10,
            tls: false,
        };
        let clients = [Client::Uni, Client::UniCb, Client::TokioWs, Client::FastWs];
        let r = results(
            w,
            &[
                (Client::Uni, 100.0, 8.0),
                (Client::UniCb, 90.0, 9.0),
                (Client::TokioWs, 95.0, 10.0),
                (Client::FastWs, 120.0, 20.0),
            ],
        );
        let report = render(&r, &[w], &clients);
        assert!(row(
            &report,
            "conns-10x10",
            "1.05x the best peer (fastwebsockets)"
        )
        .contains("| 0.83 (short by 0.22) | 0.75 (short by 0.30) | – |"));
        // Memory against the peer with the least (tokio-websockets).
        assert_eq!(
            row(&report, "conns-10x10", "peak RSS"),
            "| conns-10x10 | peak RSS ≤ 0.80x the best peer's (tokio-websockets) | 0.80 (met) | 0.90 (over by 0.10) | |"
        );
        assert!(row(&report, "conns-10x10", "callbacks").contains("| 0.90 (short by 0.05) |"));
        // Just short: the cell says so in digits that show it.
        assert_eq!(target_cell(Some(1.048), 1.05), "1.048 (short by 0.002)");
        assert_eq!(target_cell(Some(1.05), 1.05), "1.05 (met)");
        assert_eq!(target_cell(None, 1.05), "–");
        assert_eq!(bound_cell(Some(0.803), 0.8, false), "0.803 (over by 0.003)");
        assert_eq!(bound_cell(Some(0.76), 0.8, false), "0.76 (met)");
    }

    #[test]
    fn across_servers_each_server_has_its_own_best_peer_and_ratios_within_rounds() {
        let w = Workload::Setup {
            tls: true,
            concurrency: 100,
        };
        let clients = [Client::Uni, Client::UniCb, Client::TokioWs, Client::FastWs];
        // Server one: fastwebsockets is the best peer; unisocket 1.10x,
        // callbacks 1.00x of it.
        let one = results(
            w,
            &[
                (Client::Uni, 110.0, 1.0),
                (Client::UniCb, 100.0, 1.0),
                (Client::TokioWs, 90.0, 1.0),
                (Client::FastWs, 100.0, 1.0),
            ],
        );
        // Server two: tokio-websockets is; unisocket's ratios within rounds
        // are 0.90, 1.20 and 1.00 (median 1.00), its callbacks' 1.10 each.
        let mut two = Results::default();
        let rounds = |v: [f64; 3]| v.iter().map(|&x| sample(x, 1.0)).collect::<Vec<_>>();
        two.insert((w.name(), Client::Uni), rounds([90.0, 240.0, 150.0]));
        two.insert((w.name(), Client::UniCb), rounds([110.0, 220.0, 165.0]));
        two.insert((w.name(), Client::TokioWs), rounds([100.0, 200.0, 150.0]));
        two.insert((w.name(), Client::FastWs), rounds([50.0, 50.0, 50.0]));
        let report = render_across_servers(&[("one", &one), ("two", &two)], &[w], &clients);
        let row = report
            .lines()
            .find(|l| l.starts_with("| setup-wss-100 |"))
            .expect("a row");
        assert_eq!(
            row,
            "| setup-wss-100 | handshakes/s | 1.10 / **1.00** (E) | **1.00** / 1.10 (D) |"
        );
        let list = &report[report.find("### Below").expect("the list")..];
        assert!(
            list.contains("- setup-wss-100 @ one (best peer fastwebsockets): unisocket-cb 1.00")
        );
        assert!(list.contains("- setup-wss-100 @ two (best peer tokio-websockets): unisocket 1.00"));
        // Nothing short: the list says so.
        let fine = results(
            w,
            &[
                (Client::Uni, 110.0, 1.0),
                (Client::UniCb, 120.0, 1.0),
                (Client::FastWs, 100.0, 1.0),
            ],
        );
        let report = render_across_servers(&[("one", &fine)], &[w], &clients);
        assert!(report.ends_with("### Below 1.05x the best peer\n\nNone.\n"));
        // Just short: in digits that show it.
        let just = results(
            w,
            &[
                (Client::Uni, 1048.0, 1.0),
                (Client::UniCb, 1200.0, 1.0),
                (Client::FastWs, 1000.0, 1.0),
            ],
        );
        let report = render_across_servers(&[("one", &just)], &[w], &clients);
        assert!(report.contains("| **1.048** / 1.20 (E) |"), "{report}");
    }
}
