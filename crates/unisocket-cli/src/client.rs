//! `unisocket URL`: the interactive client. Each stdin line is sent as a
//! message; incoming messages are printed on stdout as they arrive; status
//! lines (connected, ping/pong, closed, errors) go to stderr. With `--json`,
//! stdout carries one JSON object per event instead.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::sync::{mpsc, oneshot, Notify};
use unisocket::redact;
use unisocket::{
    connect_socket, CloseEvent, CloseOptions, Completion, ConnectOptions, Data, ErrorKind,
    OpenEvent, PingPongEvent, ProxySource, ReconnectEvent, ReconnectPolicy, SendSuccess,
    SocketError,
};
use unisocket_proto::connection::is_valid_endpoint_code;

use crate::diagnose;
use crate::editor::{self, Command, LineEditor, Typed};
use crate::exit;
use crate::redirect;
use crate::signals;
use crate::style::{self, describe_close_code, Paint};

/// How binary messages are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BinaryFormat {
    /// Hexadecimal bytes.
    Hex,
    /// Standard base64.
    Base64,
    /// The bytes as they came, with no newline added (to a pipe or a file;
    /// a terminal shows hex, and --json base64).
    Raw,
}

/// How the lines of stdin (or --file) and the -x messages are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InputFormat {
    /// As they are: text messages (binary with -b).
    Text,
    /// Hexadecimal bytes (spaces allowed): one binary message per line.
    Hex,
    /// Standard base64: one binary message per line.
    Base64,
}

/// The options of the client mode (`unisocket URL`).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Client options")]
pub struct ClientArgs {
    /// The server URL, `ws://host[:port]/path` or `wss://...`; without it,
    /// the demo runs.
    pub url: Option<String>,
    /// The server URL, as wscat takes it (`-c URL`): the same as giving it
    /// without -c.
    #[arg(
        short = 'c',
        long = "connect",
        value_name = "URL",
        conflicts_with = "url"
    )]
    pub connect: Option<String>,
    /// Follow redirects (HTTP 301, 302, 303, 307, 308) to their Location,
    /// http(s):// taken as ws(s)://; the URL's user name and password, and
    /// the credentials of -H and --auth, are sent to the first URL's origin
    /// only.
    #[arg(short = 'L', long = "location", conflicts_with = "reconnect")]
    pub location: bool,
    /// With -L: stop with an error (exit code 3) at the redirect after N.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub max_redirs: u32,
    /// A request header "Name: value" (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// The Origin header, as a browser page at ORIGIN would send it.
    #[arg(long, value_name = "ORIGIN")]
    pub origin: Option<String>,
    /// Basic authentication: sends `Authorization: Basic base64(USER:PASS)`
    /// (never printed).
    #[arg(long, value_name = "USER:PASS")]
    pub auth: Option<String>,
    /// A subprotocol to offer, in order of preference (repeatable; also -s
    /// and --subprotocol, as in wscat).
    #[arg(
        short = 'p',
        long = "protocol",
        value_name = "NAME",
        short_alias = 's',
        alias = "subprotocol"
    )]
    pub protocols: Vec<String>,
    /// Send binary messages instead of text: stdin (or --file) verbatim as
    /// one message, or one per --binary-delimiter; each -x message and
    /// each line typed on a terminal as one message.
    #[arg(short = 'b', long)]
    pub binary: bool,
    /// With -b: one message per BYTE-separated part of the input (the
    /// separator not sent): a character (`,`), an escape (`\n`, `\r`, `\t`,
    /// `\0`) or a hex byte (`0x0a`).
    #[arg(long, value_name = "BYTE", value_parser = parse_delimiter, requires = "binary")]
    pub binary_delimiter: Option<u8>,
    /// Read the messages from FILE instead of stdin (as stdin would be read:
    /// lines, or with -b the whole file).
    #[arg(long, value_name = "PATH", conflicts_with_all = ["execute", "no_stdin"])]
    pub file: Option<PathBuf>,
    /// How input lines (stdin, --file, -x, typed) are read: text, or hex or
    /// base64 with one binary message per line.
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        default_value_t = InputFormat::Text,
        conflicts_with = "binary_delimiter"
    )]
    pub input_format: InputFormat,
    /// How to print received binary messages.
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = BinaryFormat::Hex)]
    pub binary_format: BinaryFormat,
    /// Print one JSON object per event on stdout (open, message, ping, pong,
    /// error, close).
    #[arg(long)]
    pub json: bool,
    /// Send MESSAGE instead of reading stdin (repeatable), print replies
    /// until --wait, then close.
    #[arg(short = 'x', long = "execute", value_name = "MESSAGE")]
    pub execute: Vec<String>,
    /// After the last message (of -x, or of stdin when it is not a
    /// terminal): close once no message has arrived for SECONDS (each
    /// message starts the wait again); 0 closes at once. Messages that
    /// arrive until the server's close frame are printed, after ours too.
    /// Ctrl-D on a terminal closes at once.
    #[arg(short = 'w', long, value_name = "SECONDS", default_value_t = 2.0)]
    pub wait: f64,
    /// Close (with --close-code) and exit once N messages have arrived;
    /// later ones are not printed.
    #[arg(short = 'n', long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Do not read stdin: listen (after the -x messages, if any) until the
    /// server closes or --count messages have arrived.
    #[arg(long)]
    pub no_stdin: bool,
    /// Send a ping every SECONDS.
    #[arg(long, value_name = "SECONDS")]
    pub ping_interval: Option<f64>,
    /// Take the server as gone when nothing arrives within SECONDS after a
    /// ping: the session ends with an error and exit code 4. Pings go out
    /// every --ping-interval (default: every SECONDS).
    #[arg(long, value_name = "SECONDS")]
    pub ping_timeout: Option<f64>,
    /// When the connection is lost (or the first attempt fails), connect
    /// again, waiting 0.5 s to 30 s (doubling) between attempts; stdin lines
    /// and -x messages wait meanwhile and are sent on the new connection.
    /// A close with 1000 or 1001 ends the session as usual.
    #[arg(long)]
    pub reconnect: bool,
    /// With --reconnect: give up after N failed attempts in a row (0: never).
    #[arg(long, value_name = "N", default_value_t = 10, requires = "reconnect")]
    pub reconnect_attempts: u32,
    /// Print pings and pongs (with the round-trip time of our pings).
    #[arg(short = 'P', long)]
    pub show_ping_pong: bool,
    /// Offer permessage-deflate compression (RFC 7692).
    #[arg(long)]
    pub compress: bool,
    /// Connect through this proxy: http://[user:pass@]host[:port],
    /// socks5://... or socks5h://... (default: HTTPS_PROXY, HTTP_PROXY,
    /// ALL_PROXY, NO_PROXY).
    #[arg(long, value_name = "URL", conflicts_with = "no_proxy")]
    pub proxy: Option<String>,
    /// Connect directly, ignoring the proxy environment variables.
    #[arg(long)]
    pub no_proxy: bool,
    /// Also trust the CA certificates of this PEM file (for wss://); a
    /// self-signed server certificate can be given as it is (its host name
    /// and dates are still checked).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// A client certificate (PEM, with its chain) for mutual TLS; needs --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Do not verify the server's TLS certificate (dangerous: prints a warning).
    #[arg(short = 'k', long)]
    pub insecure: bool,
    /// The close code we send (at the end of stdin or -x, or at --count):
    /// 1000-1003, 1007-1011 or 3000-4999.
    #[arg(long, value_name = "CODE", default_value_t = 1000)]
    pub close_code: u16,
    /// Exit 5 when the server closes with a code other than 1000 (normal),
    /// 1001 (going away), none, or the echo of our --close-code.
    #[arg(long)]
    pub fail_on_close_code: bool,
    /// The close reason sent with it (at most 123 bytes of UTF-8).
    #[arg(
        long,
        value_name = "TEXT",
        default_value = "",
        hide_default_value = true
    )]
    pub close_reason: String,
    /// The largest message accepted from the server, in bytes (suffixes
    /// K, M, G: powers of 1024; default 64M); a larger one ends the
    /// connection with close code 1009 and exit code 4.
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub max_message_size: Option<usize>,
    /// How long opening the connection may take (DNS, TCP, TLS, handshake).
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub timeout: f64,
    /// Print handshake details (request and response headers, timings) to stderr.
    #[arg(short = 'v', long)]
    pub verbose: bool,
}

/// What to do, checked before anything touches the network.
struct Plan {
    url: String,
    options: ConnectOptions,
    /// The request headers of -H, --origin and --auth, for -v.
    headers: Vec<(String, String)>,
    wait: Duration,
    ping_interval: Option<Duration>,
    ping_timeout: Option<Duration>,
    close_code: u16,
    close_reason: String,
    /// `--file`, opened.
    file: Option<std::fs::File>,
}

fn seconds(name: &str, s: f64, allow_zero: bool) -> Result<Duration, String> {
    match Duration::try_from_secs_f64(s) {
        Ok(d) if allow_zero || !d.is_zero() => Ok(d),
        _ if allow_zero => Err(format!(
            "--{name} must be a number of seconds, 0 or more (not {s})"
        )),
        _ => Err(format!(
            "--{name} must be a number of seconds greater than 0 (not {s})"
        )),
    }
}

/// Checks the arguments and builds the connect options; `Err` is a usage
/// error, reported before connecting.
fn plan(url: String, args: &ClientArgs) -> Result<Plan, String> {
    let timeout = seconds("timeout", args.timeout, false)?;
    let wait = seconds("wait", args.wait, true)?;
    let ping_interval = args
        .ping_interval
        .map(|s| seconds("ping-interval", s, false))
        .transpose()?;
    let ping_timeout = args
        .ping_timeout
        .map(|s| seconds("ping-timeout", s, false))
        .transpose()?;
    check_close(
        args.close_code,
        &args.close_reason,
        ("--close-code", "--close-reason"),
    )?;
    let mut o = ConnectOptions::new(url.clone()).timeout(timeout);
    let mut headers = Vec::new();
    for h in &args.headers {
        let (name, value) = h.split_once(':').ok_or_else(|| {
            format!(
                "header {:?} is not in the form \"Name: value\"",
                header_arg_shown(h)
            )
        })?;
        if name.trim().is_empty() {
            return Err(format!("header {h:?} has no name"));
        }
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let given = |headers: &[(String, String)], name: &str| {
        headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    };
    if let Some(origin) = &args.origin {
        if given(&headers, "origin") {
            return Err("give the origin once: --origin or -H 'Origin: ...', not both".into());
        }
        headers.push(("Origin".to_owned(), origin.clone()));
    }
    if let Some(auth) = &args.auth {
        if given(&headers, "authorization") {
            return Err(
                "give the credentials once: --auth or -H 'Authorization: ...', not both".into(),
            );
        }
        if !auth.contains(':') {
            // The argument is not shown: it may be the password alone.
            return Err("--auth must be USER:PASSWORD, with a colon between them".into());
        }
        let basic = base64::engine::general_purpose::STANDARD.encode(auth);
        headers.push(("Authorization".to_owned(), format!("Basic {basic}")));
    }
    for (name, value) in &headers {
        o = o.header(name.clone(), value.clone());
    }
    if !args.protocols.is_empty() {
        o = o.protocols(args.protocols.clone());
    }
    if let Some(p) = &args.proxy {
        o = o.proxy(p.clone());
    } else if args.no_proxy {
        o = o.no_proxy();
    }
    if let Some(ca) = &args.ca {
        std::fs::File::open(ca)
            .map_err(|e| format!("cannot read the --ca file {}: {e}", ca.display()))?;
        o = o.ca_certificates_file(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        for (file, flag) in [(cert, "--cert"), (key, "--key")] {
            std::fs::File::open(file)
                .map_err(|e| format!("cannot read the {flag} file {}: {e}", file.display()))?;
        }
        o = o.client_certificate_files(cert.clone(), key.clone());
    }
    if args.insecure {
        o = o.dangerous().accept_invalid_certs();
    }
    if let Some(timeout) = ping_timeout {
        // The heartbeat sends the pings (every --ping-interval, else every
        // --ping-timeout) and fails the connection when nothing answers.
        o = o.heartbeat(ping_interval.unwrap_or(timeout), timeout);
    }
    if args.reconnect {
        let attempts = (args.reconnect_attempts > 0).then_some(args.reconnect_attempts);
        o = o
            .reconnect(ReconnectPolicy::default().max_attempts(attempts))
            // What is sent while reconnecting waits for the new connection.
            .queue_until_open(true);
    }
    if let Some(max) = args.max_message_size {
        o = o.max_message_size(max);
    }
    if args.compress {
        o = o.per_message_deflate(true);
    }
    // What the server sent before it saw our close frame is printed too.
    o = o.receive_while_closing(true);
    let file = match &args.file {
        Some(path) => Some(
            std::fs::File::open(path)
                .map_err(|e| format!("cannot read --file {}: {e}", path.display()))?,
        ),
        None => None,
    };
    Ok(Plan {
        url,
        options: o,
        headers,
        wait,
        ping_interval,
        ping_timeout,
        close_code: args.close_code,
        close_reason: args.close_reason.clone(),
        file,
    })
}

/// A size in bytes: digits, then an optional K, M or G (powers of 1024,
/// with or without `iB`/`B`).
fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(digits);
    let n: usize = n
        .parse()
        .map_err(|_| format!("{s:?} is not a size in bytes (like 65536, 64K or 16M)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => {
            return Err(format!(
                "{s:?}: the unit must be K, M or G (powers of 1024)"
            ))
        }
    };
    match n.checked_mul(1 << shift) {
        Some(0) => Err("the size must be at least 1 byte".to_owned()),
        Some(v) => Ok(v),
        None => Err(format!("{s:?} is too large")),
    }
}

/// Whether we may close with `code` and `reason`; `names` are how the
/// user gave them, for the message.
fn check_close(code: u16, reason: &str, names: (&str, &str)) -> Result<(), String> {
    if !is_valid_endpoint_code(code) {
        return Err(format!(
            "{} {code} is not allowed: {}; a client may send 1000-1003, 1007-1011 or 3000-4999",
            names.0,
            why_not_sent(code)
        ));
    }
    if reason.len() > 123 {
        return Err(format!(
            "{} is {} bytes of UTF-8; the limit is 123",
            names.1,
            reason.len()
        ));
    }
    Ok(())
}

/// The byte of `--binary-delimiter`: one ASCII character, an escape
/// (`\n`, `\r`, `\t`, `\0`, `\\`) or a hex byte (`0x0a`).
fn parse_delimiter(s: &str) -> Result<u8, String> {
    let byte = match s {
        "\\n" => Some(b'\n'),
        "\\r" => Some(b'\r'),
        "\\t" => Some(b'\t'),
        "\\0" => Some(0),
        "\\\\" => Some(b'\\'),
        _ => match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(hex) if hex.len() == 2 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                u8::from_str_radix(hex, 16).ok()
            }
            _ if s.len() == 1 && s.is_ascii() => Some(s.as_bytes()[0]),
            _ => None,
        },
    };
    byte.ok_or_else(|| {
        format!(
            "{s:?} is not one byte: give a character (,), an escape (\\n \\r \\t \\0) or a hex byte (0x0a)"
        )
    })
}

/// Decodes one line of `--input-format hex` (spaces between bytes allowed)
/// or `base64`.
fn decode_line(format: InputFormat, line: &[u8]) -> Result<Vec<u8>, &'static str> {
    let text = std::str::from_utf8(line).map_err(|_| "not UTF-8")?;
    match format {
        InputFormat::Text => Ok(line.to_vec()),
        InputFormat::Hex => {
            let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
            if digits.len() % 2 != 0 {
                return Err("not hex (an odd number of digits)");
            }
            let nibble = |d: u8| match d {
                b'0'..=b'9' => Some(d - b'0'),
                b'a'..=b'f' => Some(d - b'a' + 10),
                b'A'..=b'F' => Some(d - b'A' + 10),
                _ => None,
            };
            digits
                .chunks(2)
                .map(|pair| match (nibble(pair[0]), nibble(pair[1])) {
                    (Some(high), Some(low)) => Ok(high << 4 | low),
                    _ => Err("not hex"),
                })
                .collect()
        }
        InputFormat::Base64 => base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| "not base64"),
    }
}

/// Why a client may not send close `code` (one `is_valid_endpoint_code`
/// refuses), after RFC 6455 section 7.4 and the IANA registry.
fn why_not_sent(code: u16) -> &'static str {
    match code {
        0..=999 => "codes below 1000 are not used",
        1004 => "1004 is reserved",
        1005 | 1006 | 1015 => "it only reports a close that had no code, no closing handshake or a failed TLS handshake, and is never sent",
        1012..=1014 => "it is a server's (service restart, try again later, bad gateway)",
        1016..=2999 => "1016-2999 are reserved for the protocol and its extensions",
        _ => "codes above 4999 do not exist",
    }
}

/// A `-H` argument without a colon, as an error may show it: the value of
/// a secret header (`Authorization Bearer t0k`) hidden.
fn header_arg_shown(h: &str) -> Cow<'_, str> {
    let name = h
        .trim_start()
        .split([' ', '\t', '='])
        .next()
        .unwrap_or_default();
    if redact::is_secret_header(name) {
        Cow::Owned(format!("{name} {}", redact::MASK))
    } else {
        Cow::Borrowed(h)
    }
}

/// Whether a connection failure is the caller's fault (exit 2) rather than
/// the network's (exit 3).
fn is_usage_error(e: &SocketError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::InvalidUrl
            | ErrorKind::InvalidHeader
            | ErrorKind::InvalidProtocol
            | ErrorKind::InvalidArgument
    )
}

/// Prints events: messages on stdout, status lines on stderr; or one JSON
/// object per event on stdout.
struct Printer {
    json: bool,
    verbose: bool,
    /// stdout is a terminal: prefix received messages with `< ` and escape
    /// their control characters.
    tty: bool,
    /// stderr is a terminal: escape control characters of server text in
    /// status lines.
    err_tty: bool,
    out: Paint,
    err: Paint,
    binary_format: BinaryFormat,
    /// When each of our pings was sent, by payload, for the pong's RTT.
    pings: Mutex<HashMap<Vec<u8>, Instant>>,
    /// What the "connected" line says about typing (stdin is a terminal).
    hint: &'static str,
    /// While the line editor runs: prints lines meant for the terminal
    /// above the line being typed.
    above: Mutex<Option<editor::Above>>,
}

impl Printer {
    fn stdout_line(&self, s: &str) {
        if self.tty && self.print_above(s) {
            return;
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{s}");
        let _ = out.flush();
    }

    fn stderr_line(&self, s: &str) {
        if self.err_tty && self.print_above(s) {
            return;
        }
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{s}");
        let _ = err.flush();
    }

    /// Prints `s` above the prompt when the line editor runs; `false` when
    /// it does not.
    fn print_above(&self, s: &str) -> bool {
        let mut above = self.above.lock().unwrap_or_else(|e| e.into_inner());
        match above.as_mut() {
            Some(printer) => printer.print(format!("{s}\n")).is_ok(),
            None => false,
        }
    }

    /// The editor is gone: lines go straight to stdout and stderr again.
    fn stop_printing_above(&self) {
        self.above.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// A line for the user (`/help`), on stderr.
    fn info(&self, s: &str) {
        self.stderr_line(&self.err.dim(s));
    }

    /// Server text for a status line: control characters escaped when
    /// stderr is a terminal.
    fn err_text<'a>(&self, s: &'a str) -> Cow<'a, str> {
        if self.err_tty {
            style::escape_controls(s)
        } else {
            Cow::Borrowed(s)
        }
    }

    fn json(&self, v: serde_json::Value) {
        self.stdout_line(&v.to_string());
    }

    /// The text form of a binary message: `--binary-format raw` has none,
    /// and is shown as hex on a terminal and as base64 in JSON.
    fn binary(&self, b: &[u8]) -> String {
        match self.text_format() {
            BinaryFormat::Base64 => base64::engine::general_purpose::STANDARD.encode(b),
            _ => style::hex(b),
        }
    }

    fn text_format(&self) -> BinaryFormat {
        match self.binary_format {
            BinaryFormat::Raw if self.json => BinaryFormat::Base64,
            BinaryFormat::Raw => BinaryFormat::Hex,
            f => f,
        }
    }

    fn format_name(&self) -> &'static str {
        match self.text_format() {
            BinaryFormat::Base64 => "base64",
            _ => "hex",
        }
    }

    /// `-v`: what we are about to send, secrets hidden. `url` is the URL as
    /// given; it is shown redacted.
    fn request(
        &self,
        url: &str,
        args: &ClientArgs,
        headers: &[(String, String)],
        options: &ConnectOptions,
    ) {
        if !self.verbose {
            return;
        }
        let d = |s: &str| self.err.dim(s);
        let shown = redact::url(url);
        self.stderr_line(&d(&format!(
            "* connecting to {shown} (timeout {} s)",
            args.timeout
        )));
        // The proxy in use and where it was set (--proxy, or which
        // environment variable): the timings are then the proxy's.
        if let Ok(Some(proxy)) = options.proxy_in_use() {
            let from = match proxy.source {
                ProxySource::Env(name) => format!("from {name}"),
                _ => "from --proxy".to_owned(),
            };
            self.stderr_line(&d(&format!("* proxy {} ({from})", proxy.url)));
        }
        let mut authorization = false;
        for (n, v) in headers {
            authorization |= n.eq_ignore_ascii_case("authorization");
            self.stderr_line(&d(&format!("> {n}: {}", redact::header_value(n, v))));
        }
        // User info in the URL (the redacted URL differs) is sent as Basic
        // credentials, unless -H set an Authorization header.
        if !authorization && shown != url {
            self.stderr_line(&d(&format!(
                "> Authorization: Basic {} (the user name and password of the URL)",
                redact::MASK
            )));
        }
        if !args.protocols.is_empty() {
            self.stderr_line(&d(&format!(
                "> Sec-WebSocket-Protocol: {}",
                args.protocols.join(", ")
            )));
        }
        if args.compress {
            self.stderr_line(&d(
                "> Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
            ));
        }
    }

    /// `-v`: the response that refused the upgrade, if there was one.
    fn refused(&self, e: &SocketError) {
        if self.verbose {
            for line in diagnose::refused_response(e) {
                self.stderr_line(&self.err.dim(&self.err_text(&line)));
            }
        }
    }

    /// The open event; `url` is already redacted.
    fn open(&self, url: &str, ev: &OpenEvent) {
        let p = ev.profile;
        if self.json {
            let mut headers = serde_json::Map::new();
            for (n, v) in ev.header.iter() {
                let v = redact::header_value(n, v);
                let joined = match headers.get(n).and_then(|old| old.as_str()) {
                    Some(old) => format!("{old}, {v}"),
                    None => v.into_owned(),
                };
                headers.insert(n.to_owned(), joined.into());
            }
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            self.json(serde_json::json!({
                "event": "open",
                "url": url,
                "protocol": ev.protocol,
                "headers": headers,
                "profile_ms": {
                    "dns": ms(p.dns), "connect": ms(p.connect), "tls": ms(p.tls),
                    "handshake": ms(p.handshake), "total": ms(p.total),
                },
            }));
            return;
        }
        if self.verbose {
            let d = |s: &str| self.err.dim(s);
            self.stderr_line(&d("< HTTP/1.1 101 Switching Protocols"));
            for (n, v) in ev.header.iter() {
                let v = redact::header_value(n, v);
                self.stderr_line(&d(&format!("< {n}: {}", self.err_text(&v))));
            }
            self.stderr_line(&d(&format!(
                "* dns {}, connect {}, tls {}, handshake {}, total {}",
                style::ms(p.dns),
                style::ms(p.connect),
                style::ms(p.tls),
                style::ms(p.handshake),
                style::ms(p.total)
            )));
        }
        let mut line = format!("connected to {url}");
        if !ev.protocol.is_empty() {
            line.push_str(&format!(" (subprotocol {})", self.err_text(&ev.protocol)));
        }
        if let Some(ext) = ev.header.get("sec-websocket-extensions") {
            line.push_str(&format!(" [{}]", self.err_text(ext)));
        }
        line.push_str(self.hint);
        self.stderr_line(&self.err.green(&line));
    }

    fn message(&self, data: &Data) {
        match (data, self.json) {
            (Data::Text(t), true) => self.json(serde_json::json!({
                "event": "message", "type": "text", "data": t.as_str(),
            })),
            (Data::Binary(b), true) => self.json(serde_json::json!({
                "event": "message", "type": "binary",
                "encoding": self.format_name(), "data": self.binary(b),
            })),
            // On a terminal, control characters are escaped; piped, the
            // text is written byte for byte.
            (Data::Text(t), false) if self.tty => self.stdout_line(&format!(
                "{}{}",
                self.out.cyan("< "),
                style::escape_controls(t)
            )),
            (Data::Text(t), false) => self.stdout_line(t),
            (Data::Binary(b), false) if self.tty => self.stdout_line(&format!(
                "{}{}",
                self.out.cyan("< "),
                self.out
                    .yellow(&format!("[binary {} B] {}", b.len(), self.binary(b)))
            )),
            (Data::Binary(b), false) if self.binary_format == BinaryFormat::Raw => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(b);
                let _ = out.flush();
            }
            (Data::Binary(b), false) => self.stdout_line(&self.binary(b)),
        }
    }

    fn sent_ping(&self, payload: &[u8]) {
        let mut pings = self.pings.lock().unwrap_or_else(|e| e.into_inner());
        if pings.len() > 1000 {
            pings.clear();
        }
        pings.insert(payload.to_vec(), Instant::now());
        drop(pings);
        if self.json {
            self.json(serde_json::json!({
                "event": "ping_sent", "data": String::from_utf8_lossy(payload),
            }));
        } else {
            self.stderr_line(
                &self
                    .err
                    .dim(&format!("ping sent: {}", String::from_utf8_lossy(payload))),
            );
        }
    }

    /// A ping or pong received; with `all` false, only the pongs of pings
    /// we showed as sent (`/ping`).
    fn ping_pong(&self, ev: &PingPongEvent, all: bool) {
        let (kind, data) = match ev {
            PingPongEvent::Ping(d) => ("ping", d),
            PingPongEvent::Pong(d) => ("pong", d),
        };
        let rtt = match ev {
            PingPongEvent::Pong(d) => self
                .pings
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&d[..])
                .map(|t| t.elapsed()),
            PingPongEvent::Ping(_) => None,
        };
        if !all && rtt.is_none() {
            return;
        }
        let text = String::from_utf8_lossy(data);
        if self.json {
            let mut v = serde_json::json!({"event": kind, "data": text});
            if let Some(rtt) = rtt {
                v["rtt_ms"] = (rtt.as_secs_f64() * 1000.0).into();
            }
            self.json(v);
        } else {
            let mut line = format!("{kind} received: {}", self.err_text(&text));
            match rtt {
                Some(rtt) => line.push_str(&format!(" (round trip {})", style::ms(rtt))),
                None if kind == "ping" => line.push_str(" (answered with a pong)"),
                None => {}
            }
            self.stderr_line(&self.err.dim(&line));
        }
    }

    fn close(&self, ev: &CloseEvent) {
        if self.json {
            self.json(serde_json::json!({
                "event": "close", "code": ev.code, "reason": ev.reason, "clean": ev.was_clean,
            }));
            return;
        }
        let mut line = format!("closed {}", describe_close_code(ev.code));
        if !ev.reason.is_empty() {
            line.push_str(&format!(" {:?}", ev.reason));
        }
        if ev.was_clean {
            self.stderr_line(&self.err.green(&line));
        } else {
            line.push_str(", without a closing handshake");
            self.stderr_line(&self.err.red(&line));
        }
    }

    fn reconnecting(&self, ev: &ReconnectEvent) {
        if self.json {
            self.json(serde_json::json!({
                "event": "reconnecting", "attempt": ev.attempt,
                "delay_ms": ev.delay.as_secs_f64() * 1000.0,
            }));
            return;
        }
        self.stderr_line(&self.err.yellow(&format!(
            "reconnecting: attempt {} in {:.2} s",
            ev.attempt,
            ev.delay.as_secs_f64()
        )));
    }

    fn error(&self, err_msg: &str) {
        if self.json {
            self.json(serde_json::json!({"event": "error", "message": err_msg}));
        }
        self.stderr_line(&format!(
            "unisocket: {}",
            self.err.red(&self.err_text(err_msg))
        ));
    }
}

/// Runs the client; returns the exit code.
pub fn run(url: String, args: ClientArgs) -> i32 {
    let url = match websocket_url(&url) {
        Some(ws) => {
            eprintln!(
                "unisocket: note: connecting to {} (a WebSocket URL starts with ws:// or wss://)",
                redact::url(&ws)
            );
            ws
        }
        None => url,
    };
    let plan = match plan(url, &args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("unisocket: {e}");
            return exit::USAGE;
        }
    };
    if args.insecure {
        eprintln!(
            "unisocket: {}",
            Paint::stderr().yellow(
                "warning: --insecure: the server's TLS certificate is NOT verified; \
                 anyone on the path can read and change this connection"
            )
        );
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("unisocket: cannot start a runtime: {e}");
            return exit::FAILURE;
        }
    };
    // Lines typed on a terminal are read with a line editor (when the
    // terminal can have one); piped stdin is read as it is.
    let typing = args.execute.is_empty()
        && !args.no_stdin
        && args.file.is_none()
        && std::io::stdin().is_terminal();
    let mut line_editor = typing.then(LineEditor::new).flatten();
    let hint = match (&line_editor, typing) {
        (Some(_), _) => "; type messages (/help for commands), Ctrl-D to close",
        (None, true) => "; type messages, Ctrl-D to close",
        (None, false) => "",
    };
    let printer = Arc::new(Printer {
        json: args.json,
        verbose: args.verbose,
        tty: std::io::stdout().is_terminal(),
        err_tty: std::io::stderr().is_terminal(),
        out: Paint::stdout(),
        err: Paint::stderr(),
        binary_format: args.binary_format,
        pings: Mutex::new(HashMap::new()),
        hint,
        above: Mutex::new(line_editor.as_mut().and_then(LineEditor::take_above)),
    });
    // In an interactive session, Ctrl-C outside the editor's reading of a
    // line (while connecting, between lines, without an editor, while
    // closing) is a signal: it closes the connection instead of ending the
    // process without a closing handshake. (Where it cannot be caught, it
    // ends the process, as it does outside interactive sessions.)
    let interrupts = Interrupts(if typing {
        let _runtime = rt.enter();
        signals::forward(false).ok()
    } else {
        None
    });
    let code = rt.block_on(follow_redirects(
        args,
        plan,
        printer,
        line_editor,
        interrupts,
    ));
    // The stdin thread may be blocked in a read: do not wait for it.
    rt.shutdown_background();
    code
}

/// [`session`], and with -L another one for each redirect that answers
/// the upgrade (see `redirect`).
async fn follow_redirects(
    mut args: ClientArgs,
    first: Plan,
    printer: Arc<Printer>,
    mut line_editor: Option<LineEditor>,
    mut interrupts: Interrupts,
) -> i32 {
    let mut follow = redirect::Follow::new(&first.url, args.max_redirs);
    let secret = |h: &String| redact::is_secret_header(h.split(':').next().unwrap_or_default());
    let mut credentials = redact::url(&first.url) != first.url
        || args.auth.is_some()
        || args.headers.iter().any(secret);
    let mut current = first;
    loop {
        let mut redirected = None;
        let code = session(
            args.clone(),
            current,
            printer.clone(),
            &mut line_editor,
            &mut interrupts,
            &mut redirected,
        )
        .await;
        let Some((e, (status, location))) = redirected
            .as_ref()
            .and_then(|e| Some((e, redirect::location(e)?)))
        else {
            return code;
        };
        let Some(follow) = follow.as_mut() else {
            // A URL the library took and the URL parser not: said as is.
            printer.error(e.err_msg());
            return code;
        };
        let next = match follow.next(status, location) {
            Ok(next) => next,
            Err(why) => {
                printer.error(&why);
                return exit::CONNECT;
            }
        };
        let mut note = format!(
            "unisocket: note: HTTP {} redirect to {}",
            next.status,
            redact::url(&next.url)
        );
        if next.other_origin && credentials {
            // The credentials were given for the first URL's origin.
            args.headers.retain(|h| !secret(h));
            args.auth = None;
            credentials = false;
            note.push_str("; another origin: the credentials given are not sent there");
        }
        printer.stderr_line(&note);
        current = match plan(next.url, &args) {
            Ok(p) => p,
            Err(e) => {
                printer.error(&e);
                return exit::USAGE;
            }
        };
    }
}

/// A failure once the connection was open, as a sentence: the reason
/// without the name of the library call (`connectSocket:fail`), which is
/// not what the user did; the limit it hit named by its option.
fn after_open(e: &SocketError, ping_timeout: Option<Duration>) -> String {
    match (e.kind(), ping_timeout) {
        (ErrorKind::HeartbeatTimeout, Some(t)) => format!(
            "the server did not answer a ping within {} s (--ping-timeout): the connection is taken as dead",
            t.as_secs_f64()
        ),
        (ErrorKind::Protocol, _) if e.close_code() == Some(1009) => {
            format!("{} (raise it with --max-message-size)", e.reason())
        }
        _ => e.reason().to_owned(),
    }
}

/// The WebSocket URL meant by `url` when it is not one: `http://` and
/// `https://` become `ws://` and `wss://`, and a bare `host[:port][/path]`
/// gets `ws://`; `None` when `url` is already `ws://` or `wss://`, or has
/// another scheme (refused later, with the reason).
fn websocket_url(url: &str) -> Option<String> {
    let lower = url.to_ascii_lowercase();
    for (from, to) in [("http://", "ws://"), ("https://", "wss://")] {
        if lower.starts_with(from) {
            return Some(format!("{to}{}", &url[from.len()..]));
        }
    }
    if url.contains("://") || url.is_empty() || url.starts_with(['/', ':']) {
        return None;
    }
    // `host`, `host:port`, `host:port/path`, `[::1]:9001`, `user:pw@host`:
    // no scheme at all. A word with a colon and no digits after it
    // (`mailto:x`) is a scheme of another kind, left for the URL parser.
    let authority = url.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let port_ok = match host_port.rsplit_once(':') {
        // A bare IPv6 address without brackets: not a URL.
        Some((host, _)) if host.contains(':') && !host.ends_with(']') => false,
        Some((_, port)) => !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()),
        None => true,
    };
    port_ok.then(|| format!("ws://{url}"))
}

/// Waits for the server to close, until no message has arrived for `idle`
/// (every message, signalled by `activity`, starts the wait again; `None`:
/// no limit) or until `count_done` is signalled; `None` if the server did
/// not close.
async fn wait_for_close(
    idle: Option<Duration>,
    activity: &Notify,
    count_done: &Notify,
    done_rx: &mut oneshot::Receiver<CloseEvent>,
) -> Option<CloseEvent> {
    if idle.is_some_and(|d| d.is_zero()) {
        return None;
    }
    loop {
        tokio::select! {
            biased;
            ev = &mut *done_rx => return ev.ok(),
            () = count_done.notified() => return None,
            () = activity.notified() => {}
            () = async {
                match idle {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            } => return None,
        }
    }
}

/// The most stdin lines sent and not yet written to the connection.
const SENDS_IN_FLIGHT: usize = 64;

/// Waits for the oldest send in flight; reports its failure.
async fn settle_oldest(sending: &mut VecDeque<Completion<SendSuccess>>, printer: &Printer) {
    if let Some(send) = sending.pop_front() {
        if let Err(e) = send.await {
            printer.error(&format!("cannot send: {}", e.reason()));
        }
    }
}

/// How the input is cut into messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    /// One message per line, without its `\n` or `\r\n`.
    Lines,
    /// The whole input as one message, byte for byte.
    Whole,
    /// One message per part ending with this byte (the byte not sent); the
    /// last part also when it does not end with it.
    At(u8),
}

/// Reads `file` (or stdin) on a thread of its own (a blocking read must not
/// hold the runtime), one item per message, cut as `split` says.
fn read_input(
    file: Option<std::fs::File>,
    split: Split,
) -> mpsc::Receiver<std::io::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(64);
    std::thread::spawn(move || {
        let mut input: Box<dyn BufRead> = match file {
            Some(f) => Box::new(std::io::BufReader::new(f)),
            None => Box::new(std::io::stdin().lock()),
        };
        loop {
            let mut chunk = Vec::new();
            let read = match split {
                Split::Whole => input.read_to_end(&mut chunk).map(|_| true),
                Split::Lines => input.read_until(b'\n', &mut chunk).map(|n| n > 0),
                Split::At(byte) => input.read_until(byte, &mut chunk).map(|n| n > 0),
            };
            match read {
                Ok(false) => break,
                Ok(true) => {
                    match split {
                        Split::Lines if chunk.last() == Some(&b'\n') => {
                            chunk.pop();
                            if chunk.last() == Some(&b'\r') {
                                chunk.pop();
                            }
                        }
                        Split::At(byte) if chunk.last() == Some(&byte) => {
                            chunk.pop();
                        }
                        _ => {}
                    }
                    if tx.blocking_send(Ok(chunk)).is_err() || split == Split::Whole {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
    });
    rx
}

/// Ctrl-C (SIGINT) in an interactive session; none otherwise, where Ctrl-C
/// ends the process.
struct Interrupts(Option<mpsc::UnboundedReceiver<&'static str>>);

impl Interrupts {
    /// The next Ctrl-C; never, when they are not caught.
    async fn next(&mut self) {
        let caught = match &mut self.0 {
            Some(rx) => rx.recv().await.is_some(),
            None => false,
        };
        if !caught {
            std::future::pending::<()>().await;
        }
    }
}

/// One connection. With -L, a redirect that answered the upgrade is put
/// in `redirected` instead of being reported. The line editor is taken
/// only once the connection is open (a redirect leaves it for the next).
async fn session(
    args: ClientArgs,
    plan: Plan,
    printer: Arc<Printer>,
    line_editor: &mut Option<LineEditor>,
    interrupts: &mut Interrupts,
    redirected: &mut Option<SocketError>,
) -> i32 {
    let Plan {
        url,
        options,
        headers,
        wait,
        ping_interval,
        ping_timeout,
        mut close_code,
        mut close_reason,
        file,
    } = plan;
    printer.request(&url, &args, &headers, &options);
    // "connected to" and --json show the URL without its password.
    let shown_url = redact::url(&url).into_owned();
    let opened = Arc::new(AtomicBool::new(false));
    // Ctrl-C while connecting: the attempt's failure is not reported.
    let abandoned = Arc::new(AtomicBool::new(false));
    let failed_after_open = Arc::new(AtomicBool::new(false));
    let (done_tx, mut done_rx) = oneshot::channel::<CloseEvent>();
    let done_tx = Mutex::new(Some(done_tx));
    // Signalled by every message: the wait before closing starts again.
    let activity = Arc::new(Notify::new());
    // Signalled once --count messages have arrived.
    let count_done = Arc::new(Notify::new());

    // Every event is printed from the task's callbacks, which run one at a
    // time and in order (open, messages, error, close), so what is printed
    // is in the order it happened.
    let task = connect_socket(options);
    {
        // First: an attempt may fail (and the next be scheduled) at once,
        // and the library does not replay this event to later listeners.
        if args.reconnect {
            let p = printer.clone();
            task.on_reconnecting(move |ev| p.reconnecting(ev));
        }
        let (p, o, u) = (printer.clone(), opened.clone(), shown_url.clone());
        task.on_open(move |ev| {
            o.store(true, Ordering::SeqCst);
            p.open(&u, ev);
        });
        let (p, a, c) = (printer.clone(), activity.clone(), count_done.clone());
        let count = args.count;
        let mut received = 0u64;
        task.on_message(move |ev| {
            // With --count, the messages after the Nth are not printed.
            if count.is_some_and(|n| received >= n) {
                return;
            }
            received += 1;
            p.message(&ev.data);
            a.notify_one();
            if count == Some(received) {
                c.notify_one();
            }
        });
        // The pongs of /ping are shown without -P.
        if args.show_ping_pong || line_editor.is_some() {
            let (p, all) = (printer.clone(), args.show_ping_pong);
            task.on_ping_pong(move |ev| p.ping_pong(ev, all));
        }
        let (p, o, f) = (printer.clone(), opened.clone(), failed_after_open.clone());
        let gone = abandoned.clone();
        let given = diagnose::Given {
            url: url.clone(),
            client_cert: args.cert.is_some(),
        };
        let follow = args.location;
        task.on_error(move |ev| {
            if o.load(Ordering::SeqCst) {
                f.store(true, Ordering::SeqCst);
                p.error(&after_open(&ev.error, ping_timeout));
            } else if !gone.load(Ordering::SeqCst) {
                p.refused(&ev.error);
                // With -L, a redirect is followed, or why not said, later.
                if !(follow && redirect::location(&ev.error).is_some()) {
                    p.error(&diagnose::connect_failure(&ev.error, &given));
                }
            }
        });
        if args.reconnect {
            // A connection lost and made again is not a failure of the session.
            let f = failed_after_open.clone();
            task.on_open(move |_| f.store(false, Ordering::SeqCst));
        }
        let (p, o) = (printer.clone(), opened.clone());
        task.on_close(move |ev| {
            if o.load(Ordering::SeqCst) {
                p.close(ev);
            }
            if let Some(tx) = done_tx.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = tx.send(ev.clone());
            }
        });
    }

    let connecting = tokio::select! {
        connected = task.opened() => connected,
        () = interrupts.next() => {
            // Closing while CONNECTING aborts the attempt (and, with
            // --reconnect, the next ones).
            abandoned.store(true, Ordering::SeqCst);
            drop(task.close(CloseOptions::default()));
            let _ = tokio::time::timeout(Duration::from_secs(2), done_rx).await;
            printer.error("interrupted (Ctrl-C) while connecting: nothing was sent");
            return exit::INTERRUPTED;
        }
    };
    if let Err(e) = connecting {
        // The error line comes from `on_error`; wait for `on_close`, which
        // runs after it, so that it is printed before we exit.
        let _ = tokio::time::timeout(Duration::from_secs(2), done_rx).await;
        if args.location && redirect::location(&e).is_some() {
            *redirected = Some(e);
            return exit::CONNECT;
        }
        return if is_usage_error(&e) {
            exit::USAGE
        } else {
            exit::CONNECT
        };
    }

    // With --ping-timeout, the heartbeat sends the pings.
    if let Some(interval) = ping_interval.filter(|_| ping_timeout.is_none()) {
        let (t, p, show) = (task.clone(), printer.clone(), args.show_ping_pong);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.tick().await;
            for n in 1u64.. {
                ticker.tick().await;
                let payload = n.to_string();
                if show {
                    p.sent_ping(payload.as_bytes());
                }
                if t.ping(payload).await.is_err() {
                    break;
                }
            }
        });
    }

    // One message of the input (a line, the whole input, or a part) as the
    // message to send; `Err`: why it is not sent.
    let to_data = |bytes: Vec<u8>| -> Result<Data, String> {
        match args.input_format {
            InputFormat::Text if args.binary => Ok(Data::from(bytes)),
            InputFormat::Text => String::from_utf8(bytes)
                .map(Data::from)
                .map_err(|_| "is not UTF-8 and was not sent (use --binary)".to_owned()),
            format => decode_line(format, &bytes)
                .map(Data::from)
                .map_err(|why| format!("is {why} and was not sent")),
        }
    };
    let source = match &args.file {
        Some(path) => path.display().to_string(),
        None => "stdin".to_owned(),
    };

    // After the last message, wait for the replies to stop before closing
    // (a script's requests are answered first); those that still arrive
    // after our close frame are printed too, until the server's close.
    // `None`: we close.
    // The line editor, once started; its terminal is put back at the end.
    let mut running: Option<editor::Running> = None;
    let closed_by_server = 'sending: {
        if !args.execute.is_empty() {
            for (i, m) in args.execute.iter().enumerate() {
                let data = match to_data(m.clone().into_bytes()) {
                    Ok(data) => data,
                    Err(why) => {
                        printer.error(&format!("-x message {} {why}", i + 1));
                        continue;
                    }
                };
                if let Err(e) = task.send(data).await {
                    printer.error(&format!("cannot send: {}", e.reason()));
                    break;
                }
            }
        } else if let Some(line_editor) = line_editor.take() {
            let editing = running.insert(line_editor.start());
            loop {
                let typed = tokio::select! {
                    ev = &mut done_rx => break 'sending ev.ok(),
                    () = count_done.notified() => break 'sending None,
                    // Ctrl-C while no line is being read (just after
                    // Enter): as Ctrl-C at the prompt.
                    () = interrupts.next() => Some(Typed::Interrupt),
                    typed = editing.typed.recv() => typed,
                };
                let line = match typed {
                    Some(Typed::Line(line)) => line,
                    Some(Typed::Failed(e)) => {
                        printer.error(&format!("cannot read the terminal: {e}"));
                        break;
                    }
                    // Ctrl-C, Ctrl-D: close.
                    Some(Typed::Interrupt | Typed::Eof) | None => break,
                };
                let send = |data: Data| {
                    let (p, sent) = (printer.clone(), task.send(data));
                    tokio::spawn(async move {
                        if let Err(e) = sent.await {
                            p.error(&format!("cannot send: {}", e.reason()));
                        }
                    });
                };
                match editor::parse(&line) {
                    Command::Send(text) => match to_data(text.as_bytes().to_vec()) {
                        Ok(data) => send(data),
                        Err(why) => printer.error(&format!("the line {why}")),
                    },
                    Command::Binary(hex) => match decode_line(InputFormat::Hex, hex.as_bytes()) {
                        Ok(bytes) => send(Data::from(bytes)),
                        Err(why) => printer.error(&format!("/binary: the bytes are {why}")),
                    },
                    Command::Ping(payload) => {
                        printer.sent_ping(payload.as_bytes());
                        let (p, pinged) = (printer.clone(), task.ping(payload.to_owned()));
                        tokio::spawn(async move {
                            if let Err(e) = pinged.await {
                                p.error(&format!("cannot ping: {}", e.reason()));
                            }
                        });
                    }
                    Command::Close(None) => break,
                    Command::Close(Some((code, reason))) => {
                        match check_close(code, reason, ("/close", "the reason")) {
                            Ok(()) => {
                                close_code = code;
                                close_reason = reason.to_owned();
                                break;
                            }
                            Err(why) => printer.error(&why),
                        }
                    }
                    Command::Help => printer.info(editor::HELP),
                    Command::Wrong(why) => printer.error(&why),
                }
                editing.next_line();
            }
            break 'sending None;
        } else if !args.no_stdin {
            let interactive = file.is_none() && std::io::stdin().is_terminal();
            // A terminal is read line by line, even with -b.
            let split = match (args.input_format, args.binary, args.binary_delimiter) {
                (InputFormat::Text, true, None) if !interactive => Split::Whole,
                (InputFormat::Text, true, Some(byte)) if !interactive => Split::At(byte),
                _ => Split::Lines,
            };
            let mut lines = read_input(file, split);
            let mut n = 0u64;
            // Sends in flight, oldest first: a few are awaited together so
            // that stdin is not read one round trip at a time; at most
            // `SENDS_IN_FLIGHT`, so that a slow server slows stdin down.
            let mut sending = VecDeque::new();
            loop {
                tokio::select! {
                    ev = &mut done_rx => break 'sending ev.ok(),
                    () = count_done.notified() => break 'sending None,
                    // Ctrl-C on a terminal without a line editor: as Ctrl-D.
                    () = interrupts.next() => break,
                    line = lines.recv() => match line {
                        Some(Ok(bytes)) => {
                            n += 1;
                            match to_data(bytes) {
                                Ok(data) => {
                                    sending.push_back(task.send(data));
                                    if sending.len() >= SENDS_IN_FLIGHT {
                                        settle_oldest(&mut sending, &printer).await;
                                    }
                                }
                                Err(why) if split == Split::Lines => {
                                    printer.error(&format!("line {n} of {source} {why}"));
                                }
                                Err(why) => printer.error(&format!("message {n} of {source} {why}")),
                            }
                        }
                        Some(Err(e)) => {
                            printer.error(&format!("cannot read {source}: {e}"));
                            break;
                        }
                        None => break,
                    },
                }
            }
            while !sending.is_empty() {
                settle_oldest(&mut sending, &printer).await;
            }
            // Ctrl-D on a terminal: the user has seen the replies; close
            // now. So with an empty stdin: there is nothing to wait for.
            if interactive || n == 0 {
                break 'sending None;
            }
        }
        // --no-stdin: listen until the server closes or --count is reached.
        let idle = (!args.no_stdin).then_some(wait);
        wait_for_close(idle, &activity, &count_done, &mut done_rx).await
    };

    let we_closed = closed_by_server.is_none();
    let ev = match closed_by_server {
        Some(ev) => ev,
        None => {
            let close = CloseOptions::default()
                .endpoint_code(close_code)
                .reason(close_reason);
            let closing = async {
                // A failure here (the server closed first) shows in the close event.
                let _ = task.close(close).await;
                match tokio::time::timeout(Duration::from_secs(10), done_rx).await {
                    Ok(Ok(ev)) => ev,
                    _ => task.closed().await,
                }
            };
            tokio::select! {
                ev = closing => ev,
                // Ctrl-C (again) while waiting for the server's close.
                () = interrupts.next() => {
                    if let Some(editing) = running {
                        printer.stop_printing_above();
                        editing.finish();
                    }
                    printer.error(
                        "interrupted (Ctrl-C) while closing: the server's close was not awaited",
                    );
                    return exit::INTERRUPTED;
                }
            }
        }
    };
    if let Some(editing) = running {
        printer.stop_printing_above();
        editing.finish();
    }
    // The server's code is fine when normal, going away, absent, or the
    // echo of ours.
    let fine_code = matches!(ev.code, 1000 | 1001 | 1005) || (we_closed && ev.code == close_code);
    if !ev.was_clean || failed_after_open.load(Ordering::SeqCst) {
        exit::ABNORMAL
    } else if args.fail_on_close_code && !fine_code {
        exit::CLOSE_CODE
    } else {
        exit::OK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_without_a_websocket_scheme_are_mapped() {
        for (given, meant) in [
            ("http://h:1/p", Some("ws://h:1/p")),
            ("HTTPS://h/p?q", Some("wss://h/p?q")),
            ("localhost:9001", Some("ws://localhost:9001")),
            ("127.0.0.1:9001/chat", Some("ws://127.0.0.1:9001/chat")),
            ("[::1]:9001", Some("ws://[::1]:9001")),
            ("example.com", Some("ws://example.com")),
            ("u:pw@h:80", Some("ws://u:pw@h:80")),
            ("ws://h/", None),
            ("wss://h/", None),
            ("htp://h/", None),
            ("mailto:x", None),
            ("::1", None),
            ("/path", None),
        ] {
            assert_eq!(websocket_url(given).as_deref(), meant, "{given:?}");
        }
    }

    #[test]
    fn binary_delimiters_are_one_byte() {
        for (given, byte) in [
            (r"\n", b'\n'),
            (r"\r", b'\r'),
            (r"\t", b'\t'),
            (r"\0", 0),
            (r"\\", b'\\'),
            ("0x0a", b'\n'),
            ("0XFF", 0xff),
            (",", b','),
            ("0", b'0'),
        ] {
            assert_eq!(parse_delimiter(given), Ok(byte), "{given:?}");
        }
        for given in ["", "ab", "0x", "0x1", "0x+a", "0xzz", "é", r"\x"] {
            assert!(parse_delimiter(given).is_err(), "{given:?}");
        }
    }

    #[test]
    fn hex_and_base64_lines_are_decoded() {
        let hex = |s: &str| decode_line(InputFormat::Hex, s.as_bytes());
        assert_eq!(hex("00ff7F"), Ok(vec![0, 0xff, 0x7f]));
        assert_eq!(hex(" de ad\tbe ef "), Ok(vec![0xde, 0xad, 0xbe, 0xef]));
        assert_eq!(hex(""), Ok(vec![]));
        assert!(hex("abc").is_err());
        assert!(hex("+a").is_err());
        assert!(hex("zz").is_err());
        let b64 = |s: &str| decode_line(InputFormat::Base64, s.as_bytes());
        assert_eq!(b64("aGkh"), Ok(b"hi!".to_vec()));
        assert_eq!(b64(" AP8= "), Ok(vec![0, 0xff]));
        assert!(b64("!!").is_err());
        assert!(decode_line(InputFormat::Hex, b"\xff").is_err());
    }

    #[test]
    fn a_header_argument_without_colon_hides_secret_values() {
        for (arg, shown) in [
            ("Authorization Bearer t0k", "Authorization ***"),
            ("  cookie=a=t0k", "cookie ***"),
            ("Proxy-Authorization\tBasic t0k", "Proxy-Authorization ***"),
            ("no colon", "no colon"),
            ("X-Token t0k", "X-Token t0k"),
        ] {
            assert_eq!(header_arg_shown(arg), shown, "{arg:?}");
        }
    }
}
