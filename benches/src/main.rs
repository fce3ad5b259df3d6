//! `wsbench`: unisocket against tokio-tungstenite, tokio-websockets,
//! fastwebsockets and a raw-TCP baseline, on the same workloads and the same
//! echo server. See benches/README.md.
//!
//! One binary, three roles:
//! - `wsbench [OPTIONS]`: the orchestrator. Starts the echo servers (one
//!   process per server kind, pinned to core 1), then runs every client on
//!   every workload against every server in interleaved rounds, each run in
//!   a fresh child process pinned to core 0, and prints markdown tables.
//! - `wsbench server ...`: the echo servers.
//! - `wsbench client ...`: one measured run, printing one JSON line.

mod clients;
mod report;
mod server;
mod util;
mod workload;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clients::Client;
use server::ServerKind;
use util::{Args, Sample};
use workload::Workload;

const USAGE: &str = "\
wsbench: WebSocket client benchmark (unisocket vs peers vs raw TCP)

USAGE:
    cargo run --release --manifest-path benches/Cargo.toml -- [OPTIONS]

OPTIONS:
    --quick               short smoke run: 1 round, 0.3 s windows, conns-100x20
    --rounds N            interleaved rounds (default 5)
    --secs S              measured window of each time-based run (default 1.0)
    --warmup S            warm-up before each window (default 0.3)
    --only W1,W2          workloads by name or prefix: rtt-32, stream-32-bin,
                          stream-1k-text, stream-64k, stream-1m-bin, stream,
                          conns, conns-200x50 (any NxM), wss (every TLS
                          workload), wss-stream-64k-bin, wss-conns-1000x100,
                          setup (ws and wss), setup-ws-1, setup-wss-100, ...
    --clients A,B         clients by letter or name:
                          A unisocket (async SocketTask)   B unisocket-cb (callbacks)
                          C tokio-tungstenite   D tokio-websockets
                          E fastwebsockets      F raw-tcp
    --server KIND         WebSocket echo server: echo (default: a minimal
                          streaming echo, one write per read), batching
                          (writes the queued echoes only once a read would
                          block), fastwebsockets or tokio-websockets; several
                          (echo,batching) or all: each workload runs against
                          each in every round, reported per server
    --server-core N       core of the echo servers (default 1)
    --client-core N       core of the clients (default 0)
    --no-pin              do not pin anything
    --out FILE            also write the markdown report to FILE
    --json FILE           also write every sample as JSON to FILE

    wsbench report SAMPLES.json
                          the tables again from a run's --json samples (for
                          a report made before a table was added)
";

struct Config {
    rounds: usize,
    secs: f64,
    warmup: f64,
    workloads: Vec<Workload>,
    clients: Vec<Client>,
    servers: Vec<ServerKind>,
    server_core: Option<usize>,
    client_core: Option<usize>,
    out: Option<PathBuf>,
    json: Option<PathBuf>,
    quick: bool,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("server") => server::main(&args[1..]),
        Some("client") => clients::main(&args[1..]),
        Some("report") => match rerender(&args[1..]) {
            Ok(doc) => print!("{doc}"),
            Err(e) => {
                eprintln!("wsbench report: {e}");
                std::process::exit(2);
            }
        },
        Some("-h" | "--help" | "help") => print!("{USAGE}"),
        _ => match config(&args) {
            Ok(cfg) => orchestrate(&cfg),
            Err(e) => {
                eprintln!("wsbench: {e}\n\n{USAGE}");
                std::process::exit(2);
            }
        },
    }
}

/// The report's tables from the samples of an earlier run (`--json`): its
/// workloads in the order they first appear there, its clients in the
/// report's order.
fn rerender(args: &[String]) -> Result<String, String> {
    let [path] = args else {
        return Err("usage: wsbench report SAMPLES.json".to_owned());
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    #[derive(serde::Deserialize)]
    struct Entry {
        /// Absent in the samples of runs against one server.
        server: Option<String>,
        workload: String,
        client: String,
        sample: Sample,
    }
    let entries: Vec<Entry> =
        serde_json::from_str(&text).map_err(|e| format!("{path} is not a samples file: {e}"))?;
    let (mut per_server, mut workloads, mut clients) = (
        Vec::<(ServerKind, report::Results)>::new(),
        Vec::new(),
        Vec::new(),
    );
    for e in entries {
        let server = match &e.server {
            None => ServerKind::Echo,
            Some(s) => {
                ServerKind::parse(s).ok_or_else(|| format!("unknown server {s:?} in {path}"))?
            }
        };
        let i = match per_server.iter().position(|(k, _)| *k == server) {
            Some(i) => i,
            None => {
                per_server.push((server, report::Results::default()));
                per_server.len() - 1
            }
        };
        let results = &mut per_server[i].1;
        let w = Workload::parse(&e.workload)
            .ok_or_else(|| format!("unknown workload {:?} in {path}", e.workload))?;
        let c = Client::parse(&e.client)
            .ok_or_else(|| format!("unknown client {:?} in {path}", e.client))?;
        if !workloads.contains(&w) {
            workloads.push(w);
        }
        if !clients.contains(&c) {
            clients.push(c);
        }
        results.entry((w.name(), c)).or_default().push(e.sample);
    }
    clients.sort_by_key(|c| c.letter());
    per_server.sort_by_key(|(k, _)| server::ALL.iter().position(|a| a == k));
    Ok(format!(
        "# wsbench results, from the samples in {path}\n\n{}",
        render(&per_server, &workloads, &clients)
    ))
}

/// The report of one server as before; of several, the table across them
/// first, then each one's report.
fn render(
    per_server: &[(ServerKind, report::Results)],
    workloads: &[Workload],
    clients: &[Client],
) -> String {
    if let [(_, results)] = per_server {
        return report::render(results, workloads, clients);
    }
    let named: Vec<(&str, &report::Results)> =
        per_server.iter().map(|(k, r)| (k.name(), r)).collect();
    let mut doc = report::render_across_servers(&named, workloads, clients);
    for (k, results) in per_server {
        doc.push_str(&format!(
            "\n# Server: {} ({})\n\n{}",
            k.name(),
            k.describe(),
            report::render(results, workloads, clients)
        ));
    }
    doc
}

fn config(args: &[String]) -> Result<Config, String> {
    let a = Args::parse(args, &["quick", "no-pin"])?;
    const KNOWN: &[&str] = &[
        "quick",
        "no-pin",
        "rounds",
        "secs",
        "warmup",
        "only",
        "clients",
        "server",
        "server-core",
        "client-core",
        "out",
        "json",
    ];
    if let Some(k) = a.keys().find(|k| !KNOWN.contains(k)) {
        return Err(format!("unknown option --{k}"));
    }
    let quick = a.flag("quick");
    let mut workloads = workload::all(quick);
    if let Some(only) = a.get("only") {
        let mut chosen = Vec::new();
        for item in only.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let matched: Vec<Workload> = workloads
                .iter()
                .copied()
                .filter(|w| w.name() == item || w.name().starts_with(&format!("{item}-")))
                .collect();
            if !matched.is_empty() {
                chosen.extend(matched);
            } else if let Some(w) = Workload::parse(item) {
                chosen.push(w);
            } else if item == "conns" || item == "rtt" || item == "stream" {
                chosen.extend(
                    workloads
                        .iter()
                        .copied()
                        .filter(|w| w.name().starts_with(item)),
                );
            } else {
                return Err(format!("--only: unknown workload {item:?}"));
            }
        }
        chosen.dedup();
        workloads = chosen;
    }
    let clients = match a.get("clients") {
        None => clients::ALL.to_vec(),
        Some(list) => {
            let mut v = Vec::new();
            for item in list.split(',').filter(|s| !s.trim().is_empty()) {
                let c = Client::parse(item)
                    .ok_or_else(|| format!("--clients: unknown client {item:?}"))?;
                if !v.contains(&c) {
                    v.push(c);
                }
            }
            // Report order, whatever the order given.
            clients::ALL.into_iter().filter(|c| v.contains(c)).collect()
        }
    };
    let servers = match a.get("server") {
        None => vec![ServerKind::Echo],
        Some("all") => server::ALL.to_vec(),
        Some(list) => {
            let mut v = Vec::new();
            for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let k = ServerKind::parse(item).ok_or(
                    "--server: echo, batching, fastwebsockets, tokio-websockets, a list of them, or all",
                )?;
                if !v.contains(&k) {
                    v.push(k);
                }
            }
            if v.is_empty() {
                return Err("--server: no server given".to_owned());
            }
            v
        }
    };
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let pin = !a.flag("no-pin") && cores.len() >= 2;
    if !a.flag("no-pin") && cores.len() < 2 {
        eprintln!("wsbench: fewer than 2 cores usable: running unpinned");
    }
    Ok(Config {
        rounds: a.num("rounds")?.unwrap_or(if quick { 1 } else { 5 }),
        secs: a.num("secs")?.unwrap_or(if quick { 0.3 } else { 1.0 }),
        warmup: a.num("warmup")?.unwrap_or(if quick { 0.1 } else { 0.3 }),
        workloads,
        clients,
        servers,
        server_core: pin
            .then(|| a.num("server-core"))
            .transpose()?
            .map(|c| c.unwrap_or(1)),
        client_core: pin
            .then(|| a.num("client-core"))
            .transpose()?
            .map(|c| c.unwrap_or(0)),
        out: a.get("out").map(PathBuf::from),
        json: a.get("json").map(PathBuf::from),
        quick,
    })
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn cpu_model() -> String {
    read_trimmed("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

/// The git revision of the measured sources, and whether the unisocket crate
/// had uncommitted changes when the bench ran.
fn source_revision() -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(rev) => {
            let dirty = git(&["status", "--porcelain", "--", "crates/unisocket/src"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{rev} + uncommitted changes in crates/unisocket/src")
            } else {
                rev
            }
        }
        None => "unknown (not a git checkout)".to_owned(),
    }
}

fn load_average() -> String {
    read_trimmed("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

struct Server {
    kind: ServerKind,
    child: Child,
    ws: String,
    tcp: String,
    wss: String,
    tls: String,
    ca: String,
}

fn start_server(exe: &PathBuf, cfg: &Config, kind: ServerKind) -> Server {
    let mut cmd = Command::new(exe);
    cmd.args(["server", "--kind", kind.name()]);
    if let Some(core) = cfg.server_core {
        cmd.args(["--core", &core.to_string()]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the echo server: {e}"));
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("server stdout"))
        .read_line(&mut line)
        .expect("server address line");
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|part| part.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("no {key}= in the server line {line:?}"))
            .to_owned()
    };
    Server {
        kind,
        ws: field("ws"),
        tcp: field("tcp"),
        wss: field("wss"),
        tls: field("tls"),
        ca: field("ca"),
        child,
    }
}

/// Ends a server and removes its CA file.
fn stop_server(server: Server) {
    let mut child = server.child;
    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&server.ca);
}

/// One measured run in its own process; a run that hangs is killed.
fn run_client(exe: &PathBuf, cfg: &Config, server: &Server, c: Client, w: &Workload) -> Sample {
    let mut cmd = Command::new(exe);
    cmd.args([
        "client",
        "--client",
        c.name(),
        "--workload",
        &w.name(),
        "--ws",
        &server.ws,
        "--tcp",
        &server.tcp,
        "--wss",
        &server.wss,
        "--tls",
        &server.tls,
        "--ca",
        &server.ca,
        "--secs",
        &cfg.secs.to_string(),
        "--warmup",
        &cfg.warmup.to_string(),
    ]);
    if let Some(core) = cfg.client_core {
        cmd.args(["--core", &core.to_string()]);
    }
    let mut child = match cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return Sample {
                error: Some(format!("spawn: {e}")),
                ..Sample::default()
            }
        }
    };
    let limit = Duration::from_secs_f64(cfg.warmup + cfg.secs + 60.0);
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if started.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => break None,
        }
    };
    let mut out = String::new();
    if let Some(mut so) = child.stdout.take() {
        let _ = so.read_to_string(&mut out);
    }
    let parsed = out
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Sample>(l).ok());
    match (status, parsed) {
        (_, Some(s)) => s,
        (None, None) => Sample {
            error: Some(format!("timed out after {} s", limit.as_secs())),
            ..Sample::default()
        },
        (Some(st), None) => Sample {
            error: Some(format!("exited with {st} and no result")),
            ..Sample::default()
        },
    }
}

fn summary(c: Client, w: &Workload, s: &Sample) -> String {
    if let Some(e) = &s.error {
        return format!("{} FAILED: {e}", c.name());
    }
    let main = if w.bandwidth_bound() {
        format!("{:.0} MB/s", s.mb_per_sec())
    } else {
        format!("{:.0} msgs/s", s.msgs_per_sec())
    };
    let extra = match w {
        Workload::Rtt { .. } => format!(" p50 {:.1} µs", s.p50_us.unwrap_or(0.0)),
        Workload::Conns { .. } => format!(
            " in {:.2} s, peak RSS {:.1} MiB",
            s.secs,
            s.rss_kib as f64 / 1024.0
        ),
        _ => String::new(),
    };
    let main = if matches!(w, Workload::Setup { .. }) {
        main.replace("msgs/s", "handshakes/s")
    } else {
        main
    };
    format!("{} {main}{extra}", c.name())
}

fn orchestrate(cfg: &Config) {
    let exe = std::env::current_exe().expect("current exe");
    let servers: Vec<Server> = cfg
        .servers
        .iter()
        .map(|&k| start_server(&exe, cfg, k))
        .collect();
    let load_before = load_average();
    // Read before the run: sources edited while it runs are not measured.
    let revision = source_revision();
    let started = Instant::now();
    for server in &servers {
        eprintln!(
            "wsbench: {} server at ws={} tcp={} wss={} tls={} (core {})",
            server.kind.name(),
            server.ws,
            server.tcp,
            server.wss,
            server.tls,
            cfg.server_core.map_or("any".to_owned(), |c| c.to_string()),
        );
    }
    eprintln!(
        "wsbench: clients on core {}, {} round(s), {} s windows after {} s warm-up",
        cfg.client_core.map_or("any".to_owned(), |c| c.to_string()),
        cfg.rounds,
        cfg.secs,
        cfg.warmup
    );
    let mut per_server: Vec<(ServerKind, report::Results)> = cfg
        .servers
        .iter()
        .map(|&k| (k, report::Results::default()))
        .collect();
    let mut raw_log = Vec::new();
    for round in 0..cfg.rounds {
        for w in &cfg.workloads {
            for (server, (_, results)) in servers.iter().zip(per_server.iter_mut()) {
                // Rotate the order each round so no client always runs first.
                let mut order = cfg.clients.clone();
                if !order.is_empty() {
                    let k = round % order.len();
                    order.rotate_left(k);
                }
                let letters: String = order.iter().map(|c| c.letter()).collect();
                let on = if servers.len() > 1 {
                    format!(" @{}", server.kind.name())
                } else {
                    String::new()
                };
                eprint!(
                    "[round {}/{}] {:<16}{on} {letters}:",
                    round + 1,
                    cfg.rounds,
                    w.name()
                );
                for c in order {
                    let s = run_client(&exe, cfg, server, c, w);
                    eprint!(" {} |", summary(c, w, &s));
                    let _ = std::io::stderr().flush();
                    raw_log.push(serde_json::json!({
                        "round": round + 1,
                        "server": server.kind.name(),
                        "workload": w.name(),
                        "client": c.name(),
                        "sample": s,
                    }));
                    results.entry((w.name(), c)).or_default().push(s);
                    // Let the server drop the closed connections before the next run.
                    let pause = if matches!(w, Workload::Conns { .. } | Workload::Setup { .. }) {
                        300
                    } else {
                        30
                    };
                    std::thread::sleep(Duration::from_millis(pause));
                }
                eprintln!();
            }
        }
    }
    let elapsed = started.elapsed();
    let load_after = load_average();
    for server in servers {
        stop_server(server);
    }

    let mut doc = String::new();
    doc.push_str("# wsbench results\n\n");
    doc.push_str(&format!(
        "- machine: {} × {} ({}), Linux {}\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model(),
        if cfg.server_core.is_some() {
            "pinned"
        } else {
            "unpinned"
        },
        read_trimmed("/proc/sys/kernel/osrelease")
    ));
    doc.push_str(&format!("- unisocket sources: {}\n", revision));
    let names: Vec<&str> = cfg.servers.iter().map(|k| k.name()).collect();
    doc.push_str(&format!(
        "- echo server{}: {} (WebSocket, ws:// and wss://) + length-prefixed raw TCP (plain and TLS), one process per server, current-thread tokio runtime, core {}; TLS: rustls with aws-lc-rs, a throw-away CA, full handshakes only (no resumption)\n",
        if names.len() > 1 { "s, each workload against each in every round" } else { "" },
        names.join(", "),
        cfg.server_core.map_or("any".to_owned(), |c| c.to_string())
    ));
    doc.push_str(&format!(
        "- clients: one process per run, current-thread tokio runtime, core {}; {} interleaved round(s){}; time-based runs measure {} s after {} s of warm-up\n",
        cfg.client_core.map_or("any".to_owned(), |c| c.to_string()),
        cfg.rounds,
        if cfg.quick { " (--quick)" } else { "" },
        cfg.secs,
        cfg.warmup
    ));
    doc.push_str(&format!(
        "- load average before / after: {load_before} / {load_after}; run took {:.0} s\n\n",
        elapsed.as_secs_f64()
    ));
    doc.push_str(&render(&per_server, &cfg.workloads, &cfg.clients));
    print!("{doc}");
    if let Some(path) = &cfg.out {
        if let Err(e) = std::fs::write(path, &doc) {
            eprintln!("wsbench: cannot write {}: {e}", path.display());
        }
    }
    if let Some(path) = &cfg.json {
        let text = serde_json::to_string_pretty(&raw_log).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("wsbench: cannot write {}: {e}", path.display());
        }
    }
}
