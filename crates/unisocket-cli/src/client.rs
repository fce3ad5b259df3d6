//! `unisocket URL`: the interactive client. Each stdin line is sent as a
//! message; incoming messages are printed as they arrive.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use tokio::io::AsyncBufReadExt;
use unisocket::{
    connect_socket, CloseEvent, CloseOptions, ConnectOptions, Data, OpenEvent, PingPongEvent,
};

/// Exit code for a connection that could not be opened.
pub const EXIT_CONNECT: i32 = 3;
/// Exit code for a connection that ended abnormally (no clean close).
pub const EXIT_ABNORMAL: i32 = 4;
/// Exit code for bad arguments found after parsing (clap uses 2 for its own).
pub const EXIT_USAGE: i32 = 2;

/// How binary messages are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BinaryFormat {
    /// Hexadecimal bytes.
    Hex,
    /// Standard base64.
    Base64,
}

/// The options of the client mode.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The server URL: `ws://host[:port]/path` or `wss://...`
    pub url: String,
    /// A request header "Name: value" (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// A subprotocol to offer (repeatable).
    #[arg(short = 'p', long = "protocol", value_name = "NAME")]
    pub protocols: Vec<String>,
    /// Send stdin lines (and -x messages) as binary messages instead of text.
    #[arg(long)]
    pub binary: bool,
    /// How to print binary messages.
    #[arg(long, value_enum, default_value_t = BinaryFormat::Hex)]
    pub binary_format: BinaryFormat,
    /// Print one JSON object per event instead of plain lines.
    #[arg(long)]
    pub json: bool,
    /// Send MESSAGE (repeatable), print replies until --wait, then close.
    #[arg(short = 'x', long = "execute", value_name = "MESSAGE")]
    pub execute: Vec<String>,
    /// With -x: how long to wait for replies before closing.
    #[arg(short = 'w', long, value_name = "SECONDS", default_value_t = 2.0)]
    pub wait: f64,
    /// Send a ping every SECONDS.
    #[arg(long, value_name = "SECONDS")]
    pub ping_interval: Option<f64>,
    /// Print pings and pongs from the server.
    #[arg(long)]
    pub show_ping_pong: bool,
    /// Offer permessage-deflate compression.
    #[arg(long)]
    pub compress: bool,
    /// Connect through this proxy (http://, socks5://, socks5h://).
    #[arg(long, value_name = "URL")]
    pub proxy: Option<String>,
    /// Trust the CA certificates in this PEM file (for wss://).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Do not verify the server's TLS certificate (dangerous).
    #[arg(long)]
    pub insecure: bool,
    /// The close code sent when stdin ends or --wait passes.
    #[arg(long, default_value_t = 1000)]
    pub close_code: u16,
    /// The close reason sent when stdin ends or --wait passes.
    #[arg(long, default_value = "")]
    pub close_reason: String,
    /// Connection timeout.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub timeout: f64,
    /// Print handshake details (response headers, timings) to stderr.
    #[arg(short = 'v', long)]
    pub verbose: bool,
}

fn seconds(name: &str, s: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s)
        .map_err(|_| format!("--{name} must be a non-negative number of seconds"))
}

/// Builds the connect options; `Err` is a usage error.
pub fn options(args: &ClientArgs) -> Result<ConnectOptions, String> {
    let mut o = ConnectOptions::new(args.url.clone()).timeout(seconds("timeout", args.timeout)?);
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("header {h:?} is not in the form \"Name: value\""))?;
        o = o.header(name.trim(), value.trim());
    }
    if !args.protocols.is_empty() {
        o = o.protocols(args.protocols.clone());
    }
    if let Some(p) = &args.proxy {
        o = o.proxy(p.clone());
    }
    if let Some(ca) = &args.ca {
        o = o.ca_certificates_file(ca.clone());
    }
    if args.insecure {
        o = o.danger_accept_invalid_certs(true);
    }
    if args.compress {
        o = o.per_message_deflate(true);
    }
    Ok(o)
}

/// Prints events, as plain lines or JSON.
struct Printer {
    json: bool,
    color: bool,
    binary_format: BinaryFormat,
}

impl Printer {
    fn line(&self, s: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{s}");
        let _ = out.flush();
    }

    fn json(&self, v: serde_json::Value) {
        self.line(&v.to_string());
    }

    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }

    fn binary(&self, b: &[u8]) -> String {
        match self.binary_format {
            BinaryFormat::Hex => b.iter().map(|x| format!("{x:02x}")).collect(),
            BinaryFormat::Base64 => base64::engine::general_purpose::STANDARD.encode(b),
        }
    }

    fn open(&self, ev: &OpenEvent, verbose: bool) {
        if self.json {
            let headers: serde_json::Map<String, serde_json::Value> = ev
                .header
                .iter()
                .map(|(n, v)| (n.to_owned(), v.into()))
                .collect();
            self.json(serde_json::json!({
                "event": "open",
                "protocol": ev.protocol,
                "headers": headers,
                "profile_ms": {
                    "dns": ms(ev.profile.dns), "connect": ms(ev.profile.connect),
                    "tls": ms(ev.profile.tls), "handshake": ms(ev.profile.handshake),
                    "total": ms(ev.profile.total),
                },
            }));
        } else if verbose {
            eprintln!("connected (protocol {:?})", ev.protocol);
            for (n, v) in ev.header.iter() {
                eprintln!("< {n}: {v}");
            }
            let p = ev.profile;
            eprintln!(
                "dns {:.2} ms, connect {:.2} ms, tls {:.2} ms, handshake {:.2} ms, total {:.2} ms",
                ms(p.dns),
                ms(p.connect),
                ms(p.tls),
                ms(p.handshake),
                ms(p.total)
            );
        }
    }

    fn message(&self, data: &Data) {
        match (data, self.json) {
            (Data::Text(t), true) => self
                .json(serde_json::json!({"event": "message", "type": "text", "data": t.as_str()})),
            (Data::Binary(b), true) => {
                let key = match self.binary_format {
                    BinaryFormat::Hex => "hex",
                    BinaryFormat::Base64 => "base64",
                };
                self.json(
                    serde_json::json!({"event": "message", "type": "binary", key: self.binary(b)}),
                );
            }
            (Data::Text(t), false) => self.line(t),
            (Data::Binary(b), false) => self.line(&self.paint("36", &self.binary(b))),
        }
    }

    fn ping_pong(&self, ev: &PingPongEvent) {
        let (kind, data) = match ev {
            PingPongEvent::Ping(d) => ("ping", d),
            PingPongEvent::Pong(d) => ("pong", d),
        };
        if self.json {
            self.json(serde_json::json!({"event": kind, "data": String::from_utf8_lossy(data)}));
        } else {
            self.line(&self.paint("90", &format!("[{kind} {}]", String::from_utf8_lossy(data))));
        }
    }

    fn close(&self, ev: &CloseEvent) {
        if self.json {
            self.json(serde_json::json!({"event": "close", "code": ev.code, "reason": ev.reason, "clean": ev.was_clean}));
        } else {
            eprintln!(
                "{}",
                self.paint(
                    "33",
                    format!("closed: {} {}", ev.code, ev.reason).trim_end()
                )
            );
        }
    }

    fn error(&self, err_msg: &str) {
        if self.json {
            self.json(serde_json::json!({"event": "error", "message": err_msg}));
        } else {
            eprintln!("unisocket: {err_msg}");
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs the client; returns the exit code.
pub fn run(args: ClientArgs) -> i32 {
    let options = match options(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("unisocket: {e}");
            return EXIT_USAGE;
        }
    };
    if args.insecure {
        eprintln!("unisocket: warning: --insecure: the server's certificate is NOT verified; anyone on the path can read and change this connection");
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("unisocket: cannot start a runtime: {e}");
            return 1;
        }
    };
    let printer = Arc::new(Printer {
        json: args.json,
        color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        binary_format: args.binary_format,
    });
    rt.block_on(session(args, options, printer))
}

async fn session(args: ClientArgs, options: ConnectOptions, printer: Arc<Printer>) -> i32 {
    let task = connect_socket(options);
    {
        let p = printer.clone();
        task.on_error(move |ev| p.error(&ev.err_msg));
        let p = printer.clone();
        task.on_close(move |ev| p.close(ev));
        let p = printer.clone();
        let verbose = args.verbose;
        task.on_open(move |ev| p.open(ev, verbose));
        if args.show_ping_pong {
            let p = printer.clone();
            task.on_ping_pong(move |ev| p.ping_pong(ev));
        }
    }
    let task = match task.await {
        Ok(t) => t,
        Err(_) => return EXIT_CONNECT,
    };
    let printer_rx = printer.clone();
    let reader = task.clone();
    let receiving = tokio::spawn(async move {
        while let Some(data) = reader.recv().await {
            printer_rx.message(&data);
        }
    });
    if let Some(interval) = args.ping_interval {
        let interval = match seconds("ping-interval", interval) {
            Ok(d) if !d.is_zero() => d,
            _ => {
                eprintln!("unisocket: --ping-interval must be a positive number of seconds");
                return EXIT_USAGE;
            }
        };
        let t = task.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            let mut ticker = tokio::time::interval(interval);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                n += 1;
                if t.ping(n.to_string()).await.is_err() {
                    break;
                }
            }
        });
    }
    let to_data = |s: String| -> Data {
        if args.binary {
            Data::from(s.into_bytes())
        } else {
            Data::from(s)
        }
    };
    if args.execute.is_empty() {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        loop {
            tokio::select! {
                line = lines.next_line() => match line {
                    Ok(Some(line)) => {
                        if let Err(e) = task.send(to_data(line)).await {
                            eprintln!("unisocket: {}", e.err_msg());
                            break;
                        }
                    }
                    _ => break,
                },
                _ = task.closed() => break,
            }
        }
    } else {
        for m in args.execute.clone() {
            if let Err(e) = task.send(to_data(m)).await {
                eprintln!("unisocket: {}", e.err_msg());
                break;
            }
        }
        let wait = seconds("wait", args.wait).unwrap_or(Duration::from_secs(2));
        let _ = tokio::time::timeout(wait, task.closed()).await;
    }
    if task.ready_state() != unisocket::ReadyState::Closed {
        let close = CloseOptions::default()
            .code(args.close_code)
            .reason(args.close_reason.clone());
        if let Err(e) = task.close(close).await {
            eprintln!("unisocket: {}", e.err_msg());
            return EXIT_USAGE;
        }
    }
    let _ = receiving.await;
    if task.closed().await.was_clean {
        0
    } else {
        EXIT_ABNORMAL
    }
}
