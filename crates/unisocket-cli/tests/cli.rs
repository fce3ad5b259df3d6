//! End-to-end tests of the `unisocket` binary: the real executable against
//! `unisocket serve` (a child process) and against small servers written
//! here (raw WebSocket over TCP or TLS, an HTTP CONNECT proxy) that record
//! what the client sent or misbehave on purpose. Every child is killed after
//! at most `LIMIT`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use unisocket_proto::handshake::accept_key;

/// The longest any child may run.
const LIMIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Children with bounded lifetimes.

/// The `unisocket` binary, with the proxy variables of the environment removed
/// so that the tests connect directly.
fn unisocket() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_unisocket"));
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
        "NO_COLOR",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// A running child whose stdout and stderr are collected by threads; killed
/// when dropped.
struct Spawned {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    started: Instant,
}

fn collect(mut r: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let buf = Arc::new(Mutex::new(String::new()));
    let b = buf.clone();
    thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = r.read(&mut chunk) {
            if n == 0 {
                break;
            }
            b.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    });
    buf
}

impl Spawned {
    fn start(args: &[&str]) -> Spawned {
        Spawned::start_cmd(unisocket().args(args))
    }

    fn start_cmd(cmd: &mut Command) -> Spawned {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start unisocket");
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        Spawned {
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
            started: Instant::now(),
        }
    }

    fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn write_stdin(&mut self, data: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin.write_all(data).expect("write stdin");
        stdin.flush().expect("flush stdin");
    }

    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits until stdout contains `needle` (the child is still running, so
    /// this also checks that output is flushed as it happens).
    fn wait_stdout(&self, needle: &str) {
        wait_until(&format!("stdout to contain {needle:?}"), || {
            self.stdout().contains(needle)
        });
    }

    fn wait_stderr(&self, needle: &str) {
        wait_until(&format!("stderr to contain {needle:?}"), || {
            self.stderr().contains(needle)
        });
    }

    /// Waits for the exit (killing the child at `LIMIT`), then for the
    /// output threads to drain.
    fn finish(mut self) -> Finished {
        self.stdin = None;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if self.started.elapsed() > LIMIT {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "unisocket did not exit within {LIMIT:?}\nstdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(10));
        };
        // The pipes close with the process; give the readers a moment.
        thread::sleep(Duration::from_millis(50));
        Finished {
            status,
            stdout: self.stdout(),
            stderr: self.stderr(),
            took: self.started.elapsed(),
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a finished run printed.
#[derive(Debug)]
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Finished {
    fn code(&self) -> i32 {
        self.status.code().expect("exited with a code")
    }

    #[track_caller]
    fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            code,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// The output has no ANSI escapes (neither stream is a terminal).
    #[track_caller]
    fn expect_no_colour(&self) -> &Self {
        assert!(
            !self.stdout.contains('\x1b') && !self.stderr.contains('\x1b'),
            "colour codes on a pipe: {self:?}"
        );
        self
    }
}

/// Runs `unisocket args` with `stdin` as its whole input.
fn run(args: &[&str], stdin: &[u8]) -> Finished {
    let mut s = Spawned::start(args);
    s.write_stdin(stdin);
    s.finish()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < LIMIT, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------
// `unisocket serve` as a child process.

struct Serve {
    child: Child,
    url: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Serve {
    fn start(extra: &[&str]) -> Serve {
        let mut child = unisocket()
            .args(["serve", "--port", "0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start unisocket serve");
        let (tx, rx) = std::sync::mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        let out = child.stdout.take().unwrap();
        // Keep reading, so that the server never blocks on a full pipe.
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line.clone());
                l.lock().unwrap().push(line);
            }
        });
        let first = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("unisocket serve printed no first line within 10 s");
            }
        };
        // "listening on ws://127.0.0.1:PORT (echo mode)", or wss://
        let url = first
            .strip_prefix("listening on ")
            .and_then(|rest| rest.split(' ').next())
            .filter(|url| url.starts_with("ws://") || url.starts_with("wss://"))
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_owned();
        Serve { url, child, log }
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Sends the process `signal` (`TERM`, `INT`).
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the exit (killing the process at `LIMIT`).
    fn wait_exit(&mut self) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                started.elapsed() < LIMIT,
                "unisocket serve did not exit within {LIMIT:?}; log:\n{}",
                self.log().join("\n")
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn wait_log(&self, what: &str, f: impl Fn(&[String]) -> bool) {
        wait_until(what, || f(&self.log()));
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// A raw WebSocket server: the handshake with the library's `accept_key`,
// frames by hand, and a script per connection.

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// The upgrade request as the server saw it.
#[derive(Debug, Clone)]
struct Request {
    line: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

const CLOSE: u8 = 8;
const PING: u8 = 9;
const PONG: u8 = 10;

/// One accepted connection, after the request was read.
struct Conn {
    stream: Box<dyn Stream>,
    request: Request,
}

impl Conn {
    /// Answers 101, choosing `protocol`.
    fn accept(&mut self, protocol: Option<&str>) {
        let key = self
            .request
            .header("sec-websocket-key")
            .expect("Sec-WebSocket-Key");
        let mut resp = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n",
            accept_key(key)
        );
        if let Some(p) = protocol {
            resp.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
        }
        resp.push_str("\r\n");
        self.stream.write_all(resp.as_bytes()).unwrap();
        self.stream.flush().unwrap();
    }

    fn read_frame(&mut self) -> std::io::Result<(u8, Vec<u8>)> {
        let s = &mut self.stream;
        let mut h = [0u8; 2];
        s.read_exact(&mut h)?;
        let opcode = h[0] & 0x0f;
        let mut len = u64::from(h[1] & 0x7f);
        if len == 126 {
            let mut b = [0u8; 2];
            s.read_exact(&mut b)?;
            len = u64::from(u16::from_be_bytes(b));
        } else if len == 127 {
            let mut b = [0u8; 8];
            s.read_exact(&mut b)?;
            len = u64::from_be_bytes(b);
        }
        let mut key = [0u8; 4];
        if h[1] & 0x80 != 0 {
            s.read_exact(&mut key)?;
        }
        let mut payload = vec![0u8; len as usize];
        s.read_exact(&mut payload)?;
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
        Ok((opcode, payload))
    }

    fn write_frame(&mut self, opcode: u8, payload: &[u8]) {
        let mut f = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => f.push(n as u8),
            n if n <= 0xffff => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        let _ = self.stream.write_all(&f);
        let _ = self.stream.flush();
    }

    fn close_payload(code: u16, reason: &str) -> Vec<u8> {
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice(reason.as_bytes());
        p
    }

    /// Echoes data frames and answers pings until the client closes;
    /// returns the client's close payload.
    fn echo_until_close(&mut self) -> Option<Vec<u8>> {
        loop {
            let (op, payload) = self.read_frame().ok()?;
            match op {
                PING => self.write_frame(PONG, &payload),
                CLOSE => {
                    self.write_frame(CLOSE, &payload);
                    return Some(payload);
                }
                PONG => {}
                op => self.write_frame(op, &payload),
            }
        }
    }
}

fn read_request(stream: &mut dyn Stream) -> std::io::Result<Request> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
        assert!(head.len() < 64 * 1024, "request head too large");
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or_default().to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Ok(Request { line, headers })
}

type Script = Arc<dyn Fn(&mut Conn) + Send + Sync>;

/// A server on 127.0.0.1 that runs `script` on each connection (plain TCP,
/// or TLS with `tls`), and records the requests and what the scripts report.
struct RawServer {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<Request>>>,
    notes: Arc<Mutex<Vec<String>>>,
}

impl RawServer {
    fn start(script: impl Fn(&mut Conn, &Notes) + Send + Sync + 'static) -> RawServer {
        RawServer::start_inner(None, script)
    }

    fn start_tls(
        config: Arc<rustls::ServerConfig>,
        script: impl Fn(&mut Conn, &Notes) + Send + Sync + 'static,
    ) -> RawServer {
        RawServer::start_inner(Some(config), script)
    }

    fn start_inner(
        tls: Option<Arc<rustls::ServerConfig>>,
        script: impl Fn(&mut Conn, &Notes) + Send + Sync + 'static,
    ) -> RawServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let notes = Arc::new(Mutex::new(Vec::new()));
        let notes_for: Notes = Notes(notes.clone());
        let script: Script = {
            let n = notes_for.clone();
            Arc::new(move |c: &mut Conn| script(c, &n))
        };
        let (acc, reqs) = (accepted.clone(), requests.clone());
        thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(tcp) = tcp else { break };
                acc.fetch_add(1, Ordering::SeqCst);
                let (script, reqs, tls) = (script.clone(), reqs.clone(), tls.clone());
                thread::spawn(move || {
                    let _ = tcp.set_read_timeout(Some(LIMIT));
                    let mut stream: Box<dyn Stream> = match tls {
                        None => Box::new(tcp),
                        Some(config) => {
                            let conn = rustls::ServerConnection::new(config).unwrap();
                            Box::new(rustls::StreamOwned::new(conn, tcp))
                        }
                    };
                    let Ok(request) = read_request(&mut *stream) else {
                        return;
                    };
                    reqs.lock().unwrap().push(request.clone());
                    let mut conn = Conn { stream, request };
                    script(&mut conn);
                });
            }
        });
        RawServer {
            addr,
            accepted,
            requests,
            notes,
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/raw", self.addr)
    }

    fn request(&self) -> Request {
        wait_until("the server to see a request", || {
            !self.requests.lock().unwrap().is_empty()
        });
        self.requests.lock().unwrap()[0].clone()
    }

    fn notes(&self) -> Vec<String> {
        self.notes.lock().unwrap().clone()
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// What a script reports back to the test.
#[derive(Clone)]
struct Notes(Arc<Mutex<Vec<String>>>);

impl Notes {
    fn add(&self, s: String) {
        self.0.lock().unwrap().push(s);
    }
}

/// An echo script that notes the close code and reason it received.
fn echo_script(conn: &mut Conn, notes: &Notes) {
    conn.accept(None);
    echo_script_after_accept(conn, notes);
}

/// [`echo_script`] once the connection is accepted.
fn echo_script_after_accept(conn: &mut Conn, notes: &Notes) {
    if let Some(p) = conn.echo_until_close() {
        notes.add(close_note(&p));
    }
}

/// A close frame's payload as the scripts note it: `close 1000 "reason"`.
fn close_note(p: &[u8]) -> String {
    if p.len() >= 2 {
        let code = u16::from_be_bytes([p[0], p[1]]);
        format!("close {code} {:?}", String::from_utf8_lossy(&p[2..]))
    } else {
        "close (no code)".to_owned()
    }
}

/// A listener that counts connection attempts, for "nothing touched the
/// network" checks.
fn counting_listener() -> RawServer {
    RawServer::start(|conn, _| conn.accept(None))
}

/// A port with nothing listening on it.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------
// The demo and --help.

#[test]
fn demo_shows_open_profile_messages_ping_and_clean_close_with_reason() {
    let out = run(&[], b"");
    out.expect_code(0).expect_no_colour();
    let o = &out.stdout;
    for needle in [
        "embedded echo server listening on ws://127.0.0.1:",
        "on_open: dns ",
        "| connect ",
        "| handshake ",
        "| total ",
        "on_message: text \"hello from unisocket\"",
        "on_message: binary [deadbeef]",
        "ping(\"are you there?\")",
        "on_ping_pong: pong \"are you there?\" after ",
        "close(code 1000, reason \"demo done\")",
        "on_close: code 1000 (normal closure), reason \"demo done\", clean",
        "success: closeSocket:ok",
    ] {
        assert!(o.contains(needle), "missing {needle:?} in:\n{o}");
    }
    // Events in order: open, the three echoes, the pong, the close.
    let pos = |s: &str| o.find(s).unwrap();
    assert!(pos("on_open") < pos("on_message"));
    assert!(pos("on_message: binary") < pos("on_ping_pong"));
    assert!(pos("on_ping_pong") < pos("on_close"));
    assert!(out.took < Duration::from_secs(10));
}

#[test]
fn help_shows_an_example_for_each_mode_and_the_exit_codes() {
    let top = run(&["--help"], b"");
    top.expect_code(0).expect_no_colour();
    for needle in [
        "Examples:",
        "unisocket ws://127.0.0.1:9001",
        "-x hello",
        "unisocket serve --port",
        "unisocket bench ws://",
        "--close-code",
        "--ping-interval",
        "2 usage error",
        "3 could not connect",
        "4 abnormal close",
        "5 the server closed with an error code",
    ] {
        assert!(top.stdout.contains(needle), "--help lacks {needle:?}");
    }
    let serve = run(&["serve", "--help"], b"");
    serve.expect_code(0);
    assert!(serve.stdout.contains("Examples:"));
    assert!(serve
        .stdout
        .contains("unisocket serve --port 0 --mode broadcast"));
    let bench = run(&["bench", "--help"], b"");
    bench.expect_code(0);
    assert!(bench.stdout.contains("Examples:"));
    assert!(bench
        .stdout
        .contains("unisocket bench ws://127.0.0.1:9001 --conns"));
    let version = run(&["--version"], b"");
    version.expect_code(0);
    assert!(version.stdout.starts_with("unisocket "));
}

// ---------------------------------------------------------------------------
// The client against `unisocket serve`.

#[test]
fn stdin_lines_are_sent_and_echoes_printed_then_eof_closes_with_1000() {
    let server = Serve::start(&[]);
    let out = run(
        &[&server.url, "-w", "0.5"],
        "hello\nwörld\r\n\nlast".as_bytes(),
    );
    out.expect_code(0).expect_no_colour();
    // Each line is one message (CR LF stripped, the empty line too, the
    // unterminated last line as well), echoed in order.
    assert_eq!(out.stdout, "hello\nwörld\n\nlast\n");
    assert!(out.stderr.contains("connected to ws://127.0.0.1:"));
    assert!(
        out.stderr.contains("closed 1000 (normal closure)"),
        "{}",
        out.stderr
    );
    server.wait_log("the server to log the close", |log| {
        log.iter().any(|l| l.ends_with("sent close 1000"))
    });
    let log = server.log().join("\n");
    assert!(log.contains("connected to /"), "{log}");
    assert!(log.contains("text (5 bytes) \"hello\""), "{log}");
}

#[test]
fn piped_stdin_has_no_slash_commands() {
    let server = Serve::start(&[]);
    let lines = "/ping x\n//two slashes\n/close 4000 bye\n/help\n";
    let out = run(&[&server.url, "-w", "0.5"], lines.as_bytes());
    out.expect_code(0);
    assert_eq!(out.stdout, lines);
    assert!(!out.stderr.contains("pong"), "{}", out.stderr);
    server.wait_log("the server to log the close", |log| {
        log.iter().any(|l| l.ends_with("sent close 1000"))
    });
}

#[test]
fn execute_sends_each_message_prints_replies_and_closes_after_wait() {
    let server = Serve::start(&[]);
    let out = run(&[&server.url, "-x", "one", "-x", "two", "-w", "0.5"], b"");
    out.expect_code(0);
    assert_eq!(out.stdout, "one\ntwo\n");
}

/// `1\n2\n...n\n`, as `seq n` prints it.
fn seq(n: usize) -> String {
    (1..=n).map(|i| format!("{i}\n")).collect()
}

#[test]
fn piped_stdin_gets_every_reply_with_the_default_wait_and_with_wait_0() {
    // `seq 100000 | unisocket URL`: every echo is printed, in order, with
    // the idle wait before closing, and with -w 0 (close at the end of
    // stdin), where most echoes arrive after our close frame was sent.
    let server = Serve::start(&["-q"]);
    let input = seq(100_000);
    for wait in [None, Some("0")] {
        let mut args = vec![server.url.as_str()];
        if let Some(w) = wait {
            args.extend(["-w", w]);
        }
        let out = run(&args, input.as_bytes());
        out.expect_code(0);
        assert_eq!(
            out.stdout.lines().count(),
            100_000,
            "-w {wait:?}: {}",
            out.stderr
        );
        assert!(
            out.stdout == input,
            "-w {wait:?}: the echoes differ from stdin"
        );
    }
}

#[test]
fn the_wait_before_closing_starts_again_with_every_reply() {
    // The server answers one request with ten replies, 300 ms apart (3 s
    // in all, more than the 2 s of the default --wait), and notes how many
    // it had sent when the client's close frame came: all ten, since each
    // reply starts the client's wait again.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(LIMIT)).unwrap();
        let reader = tcp.try_clone().unwrap();
        let mut stream: Box<dyn Stream> = Box::new(tcp);
        let request = read_request(&mut *stream).unwrap();
        let mut conn = Conn {
            stream,
            request: request.clone(),
        };
        conn.accept(None);
        let _ = conn.read_frame();
        let sent = Arc::new(AtomicUsize::new(0));
        let (closed_tx, closed_rx) = std::sync::mpsc::channel();
        let s = sent.clone();
        thread::spawn(move || {
            let mut input = Conn {
                stream: Box::new(reader),
                request,
            };
            while let Ok((op, payload)) = input.read_frame() {
                if op == CLOSE {
                    let _ = closed_tx.send((s.load(Ordering::SeqCst), payload));
                    return;
                }
            }
        });
        for i in 1..=10 {
            conn.write_frame(1, format!("reply {i}").as_bytes());
            sent.store(i, Ordering::SeqCst);
            thread::sleep(Duration::from_millis(300));
        }
        let (sent_then, payload) = closed_rx.recv().unwrap();
        conn.write_frame(CLOSE, &payload);
        let _ = tx.send(sent_then);
    });
    let out = run(&[&url], b"request\n");
    out.expect_code(0);
    let expected: String = (1..=10).map(|i| format!("reply {i}\n")).collect();
    assert_eq!(out.stdout, expected);
    assert_eq!(
        rx.recv_timeout(LIMIT).unwrap(),
        10,
        "replies sent when the close came"
    );
}

#[test]
fn count_exits_after_n_messages_and_closes_with_1000() {
    // The server sends ten messages, then echoes and notes the close.
    let raw = RawServer::start(|conn, notes| {
        conn.accept(None);
        for i in 1..=10 {
            conn.write_frame(1, format!("m{i}").as_bytes());
        }
        echo_script_after_accept(conn, notes);
    });
    // stdin stays open: the count alone ends the client.
    let mut s = Spawned::start(&[&raw.url(), "--count", "3"]);
    let stdin = s.stdin.take();
    let out = s.finish();
    drop(stdin);
    out.expect_code(0);
    assert_eq!(out.stdout, "m1\nm2\nm3\n");
    wait_until("the close", || !raw.notes().is_empty());
    assert_eq!(raw.notes(), ["close 1000 \"\""]);

    // -x with --count: the replies to two requests, then exit.
    let server = Serve::start(&["-q"]);
    let out = run(
        &[
            &server.url,
            "-x",
            "a",
            "-x",
            "b",
            "-x",
            "c",
            "-n",
            "2",
            "--no-stdin",
        ],
        b"",
    );
    out.expect_code(0);
    assert_eq!(out.stdout, "a\nb\n");

    let zero = run(&[&raw.url(), "--count", "0"], b"");
    zero.expect_code(2);
}

#[test]
fn no_stdin_listens_until_the_server_closes() {
    // The server sends one message, waits for the test's word, sends one
    // more and closes; it notes every data frame the client sent.
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let go_rx = Mutex::new(go_rx);
    let raw = RawServer::start(move |conn, notes| {
        conn.accept(None);
        conn.write_frame(1, b"first");
        let _ = go_rx.lock().unwrap().recv_timeout(LIMIT);
        conn.write_frame(1, b"late");
        conn.write_frame(CLOSE, &Conn::close_payload(1000, "done"));
        while let Ok((op, p)) = conn.read_frame() {
            if op == CLOSE {
                break;
            }
            notes.add(format!("data {op} {}", String::from_utf8_lossy(&p)));
        }
        notes.add("end".to_owned());
    });
    let mut s = Spawned::start(&[&raw.url(), "--no-stdin"]);
    s.wait_stdout("first\n");
    // Lines on stdin are not sent; its end does not end the session, nor
    // does a silence longer than --wait (2 s by default).
    s.write_stdin(b"not sent\n");
    s.close_stdin();
    thread::sleep(Duration::from_millis(2500));
    go_tx.send(()).unwrap();
    let out = s.finish();
    out.expect_code(0);
    assert_eq!(out.stdout, "first\nlate\n");
    assert!(
        out.stderr.contains("closed 1000 (normal closure) \"done\""),
        "{}",
        out.stderr
    );
    wait_until("the server's notes", || !raw.notes().is_empty());
    assert_eq!(raw.notes(), ["end"]);
}

#[test]
fn binary_messages_are_sent_with_binary_and_printed_as_hex_or_base64() {
    let server = Serve::start(&[]);
    let hex = run(&[&server.url, "--binary", "-x", "hi!", "-w", "0.3"], b"");
    hex.expect_code(0);
    assert_eq!(hex.stdout, "686921\n");
    let b64 = run(
        &[
            &server.url,
            "-b",
            "--binary-format",
            "base64",
            "-x",
            "hi!",
            "-w",
            "0.3",
        ],
        b"",
    );
    b64.expect_code(0);
    assert_eq!(b64.stdout, "aGkh\n");
    // Stdin as binary too: all of it, the newline included.
    let stdin = run(&[&server.url, "--binary", "-w", "0.3"], b"\x01\x02\n");
    stdin.expect_code(0);
    assert_eq!(stdin.stdout, "01020a\n");
    server.wait_log("binary in the server log", |log| {
        log.iter().any(|l| l.contains("binary (3 bytes)"))
    });
}

/// Every byte value, newlines and CR LF among them: what a binary file
/// split into lines would lose.
fn every_byte() -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..=255).collect();
    bytes.extend_from_slice(b"\r\n\n\x00end\n");
    bytes.extend((0..=255u8).rev());
    bytes
}

/// A server that notes each data message it receives as `OPCODE HEX`
/// (and the close as `close CODE "REASON"`), echoing everything.
fn recording_server() -> RawServer {
    RawServer::start(|conn, notes| {
        conn.accept(None);
        loop {
            let Ok((op, payload)) = conn.read_frame() else {
                return;
            };
            match op {
                PING => conn.write_frame(PONG, &payload),
                PONG => {}
                CLOSE => {
                    let code = payload
                        .get(..2)
                        .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]]));
                    let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or(&[]));
                    notes.add(format!("close {code} {reason:?}"));
                    conn.write_frame(CLOSE, &payload);
                    return;
                }
                op => {
                    notes.add(format!("{op} {}", hex(&payload)));
                    conn.write_frame(op, &payload);
                }
            }
        }
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Waits for the server's notes to end with the close, then returns them.
fn notes_until_close(raw: &RawServer) -> Vec<String> {
    wait_until("the server to note the close", || {
        raw.notes().iter().any(|n| n.starts_with("close "))
    });
    raw.notes()
}

#[test]
fn binary_stdin_or_file_is_sent_verbatim_as_one_message() {
    let bytes = every_byte();
    let expected = vec![format!("2 {}", hex(&bytes)), "close 1000 \"\"".to_owned()];

    let raw = recording_server();
    let out = run(&[&raw.url(), "-b", "-w", "0.3"], &bytes);
    out.expect_code(0);
    assert_eq!(notes_until_close(&raw), expected, "{}", out.stderr);

    let path = temp_file_bytes("every-byte.bin", &bytes);
    let raw = recording_server();
    // --file: stdin is not read (it stays open here).
    let mut s = Spawned::start(&[
        &raw.url(),
        "-b",
        "--file",
        path.to_str().unwrap(),
        "-w",
        "0.3",
    ]);
    wait_until("the message to reach the server", || {
        !raw.notes().is_empty()
    });
    s.close_stdin();
    s.finish().expect_code(0);
    assert_eq!(notes_until_close(&raw), expected);

    // An empty input is one empty message.
    let raw = recording_server();
    run(&[&raw.url(), "-b", "-w", "0.3"], b"").expect_code(0);
    assert_eq!(notes_until_close(&raw), ["2 ", "close 1000 \"\""]);

    // A file that cannot be read: a usage error, before connecting.
    let raw = counting_listener();
    let out = run(
        &[&raw.url(), "-b", "--file", "/nonexistent/unisocket.bin"],
        b"",
    );
    out.expect_code(2);
    assert!(
        out.stderr
            .contains("cannot read --file /nonexistent/unisocket.bin"),
        "{}",
        out.stderr
    );
    assert_eq!(raw.accepted(), 0);
}

#[test]
fn binary_delimiter_sends_one_message_per_part() {
    for (delimiter, input, messages) in [
        (
            r"\n",
            &b"ab\n\ncd\r\nlast"[..],
            &["2 6162", "2 ", "2 63640d", "2 6c617374"][..],
        ),
        ("0x00", b"a\x00b\nc\x00", &["2 61", "2 620a63"]),
        (",", b"1,2,", &["2 31", "2 32"]),
    ] {
        let raw = recording_server();
        let out = run(
            &[
                &raw.url(),
                "-b",
                "--binary-delimiter",
                delimiter,
                "-w",
                "0.3",
            ],
            input,
        );
        out.expect_code(0);
        let notes = notes_until_close(&raw);
        assert_eq!(&notes[..notes.len() - 1], messages, "{delimiter:?}");
    }
    // Not one byte; or without -b: usage errors.
    for args in [
        &["-b", "--binary-delimiter", "ab"][..],
        &["-b", "--binary-delimiter", "0xzz"],
        &["--binary-delimiter", ","],
        &["-b", "--binary-delimiter", ",", "--input-format", "hex"],
    ] {
        let raw = counting_listener();
        let url = raw.url();
        let out = run(&[&[url.as_str()][..], args].concat(), b"");
        out.expect_code(2);
        assert_eq!(raw.accepted(), 0, "{args:?}");
    }
}

#[test]
fn hex_and_base64_input_lines_are_sent_as_binary_messages() {
    let raw = recording_server();
    let out = run(
        &[&raw.url(), "--input-format", "hex", "-w", "0.3"],
        b"00ff10\n0a 0B\r\nzz\nabc\n\n",
    );
    out.expect_code(0);
    assert_eq!(
        notes_until_close(&raw),
        ["2 00ff10", "2 0a0b", "2 ", "close 1000 \"\""]
    );
    assert!(
        out.stderr
            .contains("line 3 of stdin is not hex and was not sent"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("line 4 of stdin is not hex (an odd number of digits) and was not sent"),
        "{}",
        out.stderr
    );

    let raw = recording_server();
    let out = run(
        &[&raw.url(), "--input-format", "base64", "-w", "0.3"],
        b"aGkh\nAP8=\n!!\n",
    );
    out.expect_code(0);
    assert_eq!(
        notes_until_close(&raw),
        ["2 686921", "2 00ff", "close 1000 \"\""]
    );
    assert!(
        out.stderr
            .contains("line 3 of stdin is not base64 and was not sent"),
        "{}",
        out.stderr
    );

    // -x messages too.
    let raw = recording_server();
    run(
        &[
            &raw.url(),
            "--input-format",
            "hex",
            "-x",
            "c0ffee",
            "-w",
            "0.3",
        ],
        b"",
    )
    .expect_code(0);
    assert_eq!(notes_until_close(&raw), ["2 c0ffee", "close 1000 \"\""]);
}

/// Runs `unisocket args` with `stdin`, returning the exit status and the
/// exact bytes of stdout.
fn run_bytes(args: &[&str], stdin: &[u8]) -> (ExitStatus, Vec<u8>) {
    let mut child = unisocket()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start unisocket");
    let mut out = child.stdout.take().unwrap();
    let reader = thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = out.read_to_end(&mut bytes);
        bytes
    });
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            panic!("unisocket did not exit within {LIMIT:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    (status, reader.join().unwrap())
}

#[test]
fn raw_binary_output_is_byte_exact() {
    let server = Serve::start(&[]);
    let bytes = every_byte();
    let (status, out) = run_bytes(
        &[&server.url, "-b", "--binary-format", "raw", "-w", "0.5"],
        &bytes,
    );
    assert_eq!(status.code(), Some(0));
    assert_eq!(hex(&out), hex(&bytes));
    // Several messages: their bytes one after the other, nothing between.
    let (status, out) = run_bytes(
        &[
            &server.url,
            "-b",
            "--binary-delimiter",
            "0x00",
            "--binary-format",
            "raw",
            "-w",
            "0.5",
        ],
        b"\n\xff\x00\x01\r\n\x00",
    );
    assert_eq!(status.code(), Some(0));
    assert_eq!(hex(&out), hex(b"\n\xff\x01\r\n"));
    // JSON has no raw bytes: base64 there.
    let out = run(
        &[
            &server.url,
            "-b",
            "--binary-format",
            "raw",
            "--json",
            "-w",
            "0.5",
        ],
        b"\xff\x00",
    );
    out.expect_code(0);
    let message = out
        .stdout
        .lines()
        .find(|l| l.contains(r#""event":"message""#))
        .unwrap_or_else(|| panic!("no message event: {}", out.stdout));
    assert!(message.contains(r#""data":"/wA=""#), "{message}");
    assert!(message.contains(r#""encoding":"base64""#), "{message}");
}

#[test]
fn json_prints_one_object_per_event() {
    let server = Serve::start(&[]);
    let out = run(
        &[
            &server.url,
            "--json",
            "-x",
            "hi",
            "-x",
            "ø",
            "-w",
            "0.3",
            "--close-reason",
            "done",
        ],
        b"",
    );
    out.expect_code(0);
    let events: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["open", "message", "message", "close"], "{events:?}");
    let open = &events[0];
    assert!(open["url"].as_str().unwrap().starts_with("ws://127.0.0.1:"));
    assert!(open["profile_ms"]["total"].as_f64().unwrap() > 0.0);
    assert!(open["headers"]["Sec-WebSocket-Accept"].is_string());
    assert_eq!(events[1]["type"], "text");
    assert_eq!(events[1]["data"], "hi");
    assert_eq!(events[2]["data"], "ø");
    assert_eq!(events[3]["code"], 1000);
    assert_eq!(events[3]["reason"], "done");
    assert_eq!(events[3]["clean"], true);

    let bin = run(&[&server.url, "--json", "-b", "-x", "A", "-w", "0.3"], b"");
    bin.expect_code(0);
    let msg: serde_json::Value = serde_json::from_str(bin.stdout.lines().nth(1).unwrap()).unwrap();
    assert_eq!(msg["type"], "binary");
    assert_eq!(msg["encoding"], "hex");
    assert_eq!(msg["data"], "41");
}

#[test]
fn ping_interval_sends_pings_and_show_ping_pong_prints_the_pongs() {
    let server = Serve::start(&[]);
    let out = run(
        &[
            &server.url,
            "--ping-interval",
            "0.2",
            "--show-ping-pong",
            "-x",
            "x",
            "-w",
            "1",
        ],
        b"",
    );
    out.expect_code(0);
    assert!(out.stderr.contains("ping sent: 1"), "{}", out.stderr);
    assert!(
        out.stderr.contains("pong received: 1 (round trip "),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("pong received: 2"), "{}", out.stderr);
    // Pings are not messages: stdout has the echo only.
    assert_eq!(out.stdout, "x\n");

    let json = run(
        &[
            &server.url,
            "--json",
            "--ping-interval",
            "0.2",
            "-P",
            "-x",
            "x",
            "-w",
            "0.7",
        ],
        b"",
    );
    json.expect_code(0);
    let pong = json
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["event"] == "pong")
        .expect("a pong event");
    assert_eq!(pong["data"], "1");
    assert!(pong["rtt_ms"].as_f64().unwrap() >= 0.0);

    // Without --show-ping-pong nothing is printed about them.
    let quiet = run(
        &[
            &server.url,
            "--ping-interval",
            "0.2",
            "-x",
            "x",
            "-w",
            "0.5",
        ],
        b"",
    );
    quiet.expect_code(0);
    assert!(!quiet.stderr.contains("pong"), "{}", quiet.stderr);
}

#[test]
fn close_code_and_reason_are_sent_and_echoed_back() {
    let server = Serve::start(&[]);
    let out = run(
        &[
            &server.url,
            "--close-code",
            "4001",
            "--close-reason",
            "bye now",
        ],
        b"",
    );
    out.expect_code(0);
    assert!(
        out.stderr.contains("closed 4001 \"bye now\""),
        "{}",
        out.stderr
    );
    server.wait_log("the close in the log", |log| {
        log.iter()
            .any(|l| l.ends_with("sent close 4001 \"bye now\""))
    });

    let raw = RawServer::start(echo_script);
    run(&[&raw.url(), "--close-code", "3000"], b"").expect_code(0);
    wait_until("the close", || !raw.notes().is_empty());
    assert_eq!(raw.notes(), ["close 3000 \"\""]);
}

#[test]
fn every_close_code_a_client_may_send_is_sent() {
    let raw = RawServer::start(echo_script);
    let codes = [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999,
    ];
    for code in codes {
        run(&[&raw.url(), "--close-code", &code.to_string()], b"").expect_code(0);
    }
    wait_until("every close", || raw.notes().len() == codes.len());
    let mut notes = raw.notes();
    notes.sort();
    let mut expected: Vec<String> = codes.iter().map(|c| format!("close {c} \"\"")).collect();
    expected.sort();
    assert_eq!(notes, expected);
}

#[test]
fn fail_on_close_code_exits_5_when_the_server_closes_with_an_error_code() {
    // The server closes first with the code the client sends it.
    let raw = RawServer::start(|conn, _| {
        conn.accept(None);
        if let Ok((_, p)) = conn.read_frame() {
            let code: u16 = String::from_utf8_lossy(&p).parse().unwrap();
            conn.write_frame(CLOSE, &Conn::close_payload(code, "bye"));
            let _ = conn.read_frame();
        }
    });
    for (code, flag, exit) in [
        ("1008", true, 5),
        ("1008", false, 0),
        ("4000", true, 5),
        ("1000", true, 0),
        ("1001", true, 0),
    ] {
        let mut args = vec![raw.url(), "-x".into(), code.into(), "-w".into(), "5".into()];
        if flag {
            args.push("--fail-on-close-code".into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&args, b"");
        assert_eq!(out.code(), exit, "{args:?}: {out:?}");
        assert!(
            out.stderr.contains(&format!("closed {code}")),
            "{}",
            out.stderr
        );
    }
    // Our own code, echoed by the server, is not the server's error.
    let echo = RawServer::start(echo_script);
    run(
        &[&echo.url(), "--close-code", "4001", "--fail-on-close-code"],
        b"",
    )
    .expect_code(0);
}

#[test]
fn verbose_prints_the_handshake_on_stderr() {
    let server = Serve::start(&[]);
    let out = run(
        &[
            &server.url,
            "-v",
            "-H",
            "X-Trace: 42",
            "-p",
            "chat.v1",
            "-x",
            "a",
            "-w",
            "0.2",
        ],
        b"",
    );
    out.expect_code(0);
    let e = &out.stderr;
    for needle in [
        "* connecting to ws://127.0.0.1:",
        "> X-Trace: 42",
        "> Sec-WebSocket-Protocol: chat.v1",
        "< HTTP/1.1 101 Switching Protocols",
        "< Sec-WebSocket-Accept: ",
        "* dns ",
        "handshake ",
        "connected to ws://127.0.0.1:",
        "(subprotocol chat.v1)",
    ] {
        assert!(e.contains(needle), "missing {needle:?} in:\n{e}");
    }
    assert_eq!(out.stdout, "a\n");
}

#[test]
fn server_closing_first_ends_the_client_even_with_stdin_open() {
    // The server closes right after the handshake with a code and reason;
    // stdin stays open (a blocked read must not keep the process alive).
    let raw = RawServer::start(|conn, notes| {
        conn.accept(None);
        conn.write_frame(CLOSE, &Conn::close_payload(4002, "go away"));
        if let Ok((op, p)) = conn.read_frame() {
            notes.add(format!("{op} {p:?}"));
        }
    });
    let mut s = Spawned::start(&[&raw.url()]);
    s.wait_stderr("closed");
    // Keep stdin open until the process has exited on its own.
    let stdin = s.stdin.take();
    let out = s.finish();
    drop(stdin);
    out.expect_code(0);
    assert!(
        out.stderr.contains("closed 4002 \"go away\""),
        "{}",
        out.stderr
    );
    wait_until("the client's close echo", || !raw.notes().is_empty());
    assert!(raw.notes()[0].starts_with("8 "), "{:?}", raw.notes());
}

#[test]
fn a_line_that_is_not_utf8_is_reported_and_skipped_in_text_mode() {
    let server = Serve::start(&[]);
    let out = run(&[&server.url, "-w", "0.3"], b"ok\n\xff\xfe\nstill ok\n");
    out.expect_code(0);
    assert_eq!(out.stdout, "ok\nstill ok\n");
    assert!(
        out.stderr
            .contains("line 2 of stdin is not UTF-8 and was not sent (use --binary)"),
        "{}",
        out.stderr
    );
}

// ---------------------------------------------------------------------------
// What reaches the server: headers, subprotocols, compression, proxy, TLS.

#[test]
fn headers_and_protocols_reach_the_server_and_the_chosen_one_is_shown() {
    let raw = RawServer::start(|conn, _| {
        conn.accept(Some("chat.v1"));
        conn.echo_until_close();
    });
    let out = run(
        &[
            &raw.url(),
            "-H",
            "X-Token: abc",
            "--header",
            "X-Two:  spaced value ",
            "-p",
            "chat.v2",
            "--protocol",
            "chat.v1",
            "--json",
            "-x",
            "m",
            "-w",
            "0.2",
        ],
        b"",
    );
    out.expect_code(0);
    let req = raw.request();
    assert!(req.line.starts_with("GET /raw HTTP/1.1"), "{req:?}");
    assert_eq!(req.header("X-Token"), Some("abc"));
    assert_eq!(req.header("X-Two"), Some("spaced value"));
    assert_eq!(
        req.header("Sec-WebSocket-Protocol"),
        Some("chat.v2, chat.v1")
    );
    assert_eq!(req.header("Sec-WebSocket-Extensions"), None);
    let open: serde_json::Value = serde_json::from_str(out.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(open["protocol"], "chat.v1");
}

#[test]
fn compress_offers_permessage_deflate_and_works_when_declined() {
    let raw = RawServer::start(echo_script);
    run(&[&raw.url(), "--compress", "-x", "z", "-w", "0.2"], b"").expect_code(0);
    let offer = raw.request();
    let ext = offer
        .header("Sec-WebSocket-Extensions")
        .expect("an extension offer");
    assert!(ext.contains("permessage-deflate"), "{ext}");
    // `unisocket serve` declines the offer; the session goes on uncompressed.
    let server = Serve::start(&[]);
    let out = run(&[&server.url, "--compress", "-x", "zz", "-w", "0.2"], b"");
    out.expect_code(0);
    assert_eq!(out.stdout, "zz\n");
}

#[test]
fn server_pings_are_answered_and_shown() {
    let raw = RawServer::start(|conn, notes| {
        conn.accept(None);
        conn.write_frame(PING, b"srv");
        // The client's message may come before its pong: echo it meanwhile.
        while let Ok((op, p)) = conn.read_frame() {
            match op {
                PONG => {
                    notes.add(format!("pong {}", String::from_utf8_lossy(&p)));
                    break;
                }
                CLOSE => {
                    conn.write_frame(CLOSE, &p);
                    return;
                }
                op => conn.write_frame(op, &p),
            }
        }
        conn.echo_until_close();
    });
    let out = run(&[&raw.url(), "-P", "-x", "m", "-w", "0.3"], b"");
    out.expect_code(0);
    assert!(
        out.stderr
            .contains("ping received: srv (answered with a pong)"),
        "{}",
        out.stderr
    );
    wait_until("the pong", || !raw.notes().is_empty());
    assert_eq!(raw.notes(), ["pong srv"]);
}

/// A throw-away CA and a server certificate for 127.0.0.1 (also as PEM,
/// for `unisocket serve --cert --key`).
struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
    config: Arc<rustls::ServerConfig>,
}

/// A throw-away CA named `name` that signs certificates.
fn test_ca(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, name);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    rcgen::CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap()
}

/// A certificate for `name` with `usage`, signed by `issuer`, and its key,
/// both as PEM.
fn signed_leaf(
    issuer: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    name: &str,
    usage: rcgen::ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn pki() -> Pki {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let issuer = test_ca("unisocket-cli test CA");
    let (cert_pem, key_pem) = signed_leaf(
        &issuer,
        "127.0.0.1",
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    );
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    Pki {
        ca_pem: issuer.pem(),
        cert_pem,
        key_pem,
        config: Arc::new(config),
    }
}

fn temp_file(name: &str, contents: &str) -> std::path::PathBuf {
    temp_file_bytes(name, contents.as_bytes())
}

fn temp_file_bytes(name: &str, contents: &[u8]) -> std::path::PathBuf {
    let path =
        std::env::temp_dir().join(format!("unisocket-cli-test-{}-{name}", std::process::id()));
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn wss_needs_ca_or_insecure_and_insecure_warns() {
    let pki = pki();
    let raw = RawServer::start_tls(pki.config.clone(), echo_script);
    let url = format!("wss://127.0.0.1:{}/tls", raw.addr.port());

    // Not trusted: a connect failure.
    let untrusted = run(&[&url, "-x", "t", "-w", "0.2", "--timeout", "10"], b"");
    untrusted.expect_code(3);
    assert!(
        untrusted
            .stderr
            .starts_with("unisocket: connectSocket:fail"),
        "{}",
        untrusted.stderr
    );
    assert_eq!(untrusted.stderr.lines().count(), 1, "{}", untrusted.stderr);

    // --ca FILE: trusted.
    let ca = temp_file("ca.pem", &pki.ca_pem);
    let trusted = run(
        &[&url, "--ca", ca.to_str().unwrap(), "-x", "t", "-w", "0.2"],
        b"",
    );
    let _ = std::fs::remove_file(&ca);
    trusted.expect_code(0);
    assert_eq!(trusted.stdout, "t\n");
    assert!(!trusted.stderr.contains("warning"), "{}", trusted.stderr);

    // --insecure: works, with a warning.
    let insecure = run(&[&url, "--insecure", "-x", "t", "-w", "0.2"], b"");
    insecure.expect_code(0);
    assert_eq!(insecure.stdout, "t\n");
    assert!(
        insecure
            .stderr
            .contains("warning: --insecure: the server's TLS certificate is NOT verified"),
        "{}",
        insecure.stderr
    );
}

/// An HTTP CONNECT proxy on 127.0.0.1 that records the targets it was asked for.
fn connect_proxy() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { break };
            let s = s.clone();
            thread::spawn(move || {
                let Ok(req) = read_request(&mut client) else {
                    return;
                };
                s.lock().unwrap().push(req.line.clone());
                let target = req.line.split(' ').nth(1).unwrap_or_default().to_owned();
                let Ok(upstream) = TcpStream::connect(&target) else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
                    return;
                };
                client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .unwrap();
                let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                let mut upstream = upstream;
                thread::spawn(move || {
                    let _ = std::io::copy(&mut u2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Write);
                });
                let _ = std::io::copy(&mut client, &mut upstream);
                let _ = upstream.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (addr, seen)
}

#[test]
fn proxy_sends_the_connection_through_http_connect() {
    let server = Serve::start(&[]);
    let (proxy, seen) = connect_proxy();
    let out = run(
        &[
            &server.url,
            "--proxy",
            &format!("http://{proxy}"),
            "-x",
            "via proxy",
            "-w",
            "0.3",
        ],
        b"",
    );
    out.expect_code(0);
    assert_eq!(out.stdout, "via proxy\n");
    let target = server.url.trim_start_matches("ws://");
    assert_eq!(
        seen.lock().unwrap().clone(),
        [format!("CONNECT {target} HTTP/1.1")]
    );
}

#[test]
fn proxy_environment_is_used_unless_no_proxy() {
    let server = Serve::start(&[]);
    let dead_proxy = format!("http://127.0.0.1:{}", closed_port());
    // HTTP_PROXY points at nothing: the connection fails through it...
    let mut via_env = Spawned::start_cmd(unisocket().env("HTTP_PROXY", &dead_proxy).args([
        &server.url,
        "-x",
        "a",
        "-w",
        "0.2",
    ]));
    via_env.close_stdin();
    let out = via_env.finish();
    out.expect_code(3);
    assert!(out.stderr.contains("proxy"), "{}", out.stderr);
    // ... and --no-proxy ignores it.
    let mut direct = Spawned::start_cmd(unisocket().env("HTTP_PROXY", &dead_proxy).args([
        &server.url,
        "--no-proxy",
        "-x",
        "a",
        "-w",
        "0.2",
    ]));
    direct.close_stdin();
    let out = direct.finish();
    out.expect_code(0);
    assert_eq!(out.stdout, "a\n");
}

// ---------------------------------------------------------------------------
// Secrets never printed; server text cannot drive the terminal.

/// Asserts that `secret` is in neither output stream of `out`.
#[track_caller]
fn expect_hidden(out: &Finished, secret: &str) {
    assert!(
        !out.stdout.contains(secret) && !out.stderr.contains(secret),
        "{secret:?} was printed: {out:?}"
    );
}

#[test]
fn verbose_never_prints_passwords_or_secret_headers() {
    let raw = RawServer::start(echo_script);
    let (proxy, seen) = connect_proxy();
    let url = format!("ws://user:url-secret@{}/raw", raw.addr);
    let proxy_url = format!("http://u:proxy-secret@{proxy}");
    let out = run(
        &[
            &url,
            "-v",
            "-H",
            "Authorization: Bearer header-secret",
            "-H",
            "cookie: session=cookie-secret",
            "-H",
            "X-Trace: 42",
            "--proxy",
            &proxy_url,
            "-x",
            "hi",
            "-w",
            "0.2",
        ],
        b"",
    );
    out.expect_code(0);
    expect_hidden(&out, "secret");
    let e = &out.stderr;
    for needle in [
        &format!("* connecting to ws://user:***@{}/raw", raw.addr) as &str,
        &format!("* proxy http://u:***@{proxy}"),
        "> Authorization: Bearer ***",
        "> cookie: ***",
        "> X-Trace: 42",
        &format!("connected to ws://user:***@{}/raw", raw.addr),
    ] {
        assert!(e.contains(needle), "missing {needle:?} in:\n{e}");
    }
    // The application's Authorization header wins over the URL's user info;
    // both reached the server through the proxy.
    let req = raw.request();
    assert_eq!(req.header("Authorization"), Some("Bearer header-secret"));
    assert_eq!(req.header("Cookie"), Some("session=cookie-secret"));
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(out.stdout, "hi\n");
}

/// `-v` names the proxy in use and where it came from: `--proxy`, or the
/// environment variable that applies (its timings are then the proxy's).
#[test]
fn verbose_shows_the_response_that_refused_the_upgrade() {
    let raw = RawServer::start(|conn, _| {
        let _ = conn.stream.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"chat\"\r\n\
              Set-Cookie: session=cookie-secret\r\nContent-Type: text/plain\r\n\
              Content-Length: 32\r\n\r\ntoken expired\r\n\x1b[31mlog in again",
        );
    });
    let out = run(&[&raw.url(), "-v", "-x", "m"], b"");
    out.expect_code(3).expect_no_colour();
    for line in [
        "< HTTP 401 Unauthorized",
        "< WWW-Authenticate: Bearer realm=\"chat\"",
        "< Set-Cookie: ***",
        "< Content-Type: text/plain",
        "< Content-Length: 32",
        // On one line, the terminal's controls escaped.
        "* body, 32 bytes: token expired\\r\\n\\x1b[31mlog in again",
    ] {
        assert!(
            out.stderr.lines().any(|l| l == line),
            "missing {line:?}:\n{}",
            out.stderr
        );
    }
    expect_hidden(&out, "cookie-secret");
    // The error line is the last one, unchanged.
    assert!(
        out.stderr.lines().last().unwrap().starts_with(
            "unisocket: connectSocket:fail server answered HTTP 401 Unauthorized instead of 101"
        ),
        "{}",
        out.stderr
    );
    // Without -v: the error line alone.
    let quiet = run(&[&raw.url(), "-x", "m"], b"");
    quiet.expect_code(3);
    assert_eq!(quiet.stderr.lines().count(), 1, "{}", quiet.stderr);

    // A redirect: its Location; a body longer than what is shown is cut
    // at 512 bytes, and says so.
    let raw = RawServer::start(|conn, _| {
        let mut response = b"HTTP/1.1 302 Found\r\nLocation: /elsewhere?x=1\r\n\
              Content-Length: 2000\r\n\r\n"
            .to_vec();
        response.extend_from_slice(&[b'y'; 2000]);
        let _ = conn.stream.write_all(&response);
    });
    let out = run(&[&raw.url(), "-v", "-x", "m"], b"");
    out.expect_code(3);
    assert!(
        out.stderr.lines().any(|l| l == "< HTTP 302 Found"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .lines()
            .any(|l| l == "< Location: /elsewhere?x=1"),
        "{}",
        out.stderr
    );
    let body = out
        .stderr
        .lines()
        .find(|l| l.starts_with("* body, its first "))
        .unwrap_or_else(|| panic!("no body line:\n{}", out.stderr));
    let (what, shown) = body.split_once(": ").unwrap();
    assert!(what.ends_with(" of 2000 bytes"), "{body}");
    assert!(!shown.is_empty() && shown.len() <= 512, "{body}");
    assert!(shown.bytes().all(|b| b == b'y'), "{body}");
}

#[test]
fn verbose_names_the_proxy_and_where_it_came_from() {
    let raw = RawServer::start(echo_script);
    let (proxy, seen) = connect_proxy();
    let url = format!("ws://{}/raw", raw.addr);
    let env_url = format!("http://u:env-secret@{proxy}");
    let mut s = Spawned::start_cmd(unisocket().env("http_proxy", &env_url).args([
        &url as &str,
        "-v",
        "-x",
        "hi",
        "-w",
        "0.2",
    ]));
    s.write_stdin(b"");
    let out = s.finish();
    out.expect_code(0);
    expect_hidden(&out, "secret");
    let want = format!("* proxy http://u:***@{proxy} (from http_proxy)");
    assert!(
        out.stderr.contains(&want),
        "missing {want:?} in:\n{}",
        out.stderr
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
    // --proxy wins over the environment, and says so.
    let out = run(
        &[
            &url,
            "-v",
            "--proxy",
            &format!("http://{proxy}"),
            "-x",
            "hi",
            "-w",
            "0.2",
        ],
        b"",
    );
    out.expect_code(0);
    let want = format!("* proxy http://{proxy} (from --proxy)");
    assert!(
        out.stderr.contains(&want),
        "missing {want:?} in:\n{}",
        out.stderr
    );
    // Without one, no proxy line.
    let out = run(&[&url, "-v", "-x", "hi", "-w", "0.2"], b"");
    out.expect_code(0);
    assert!(!out.stderr.contains("* proxy"), "{}", out.stderr);
}

#[test]
fn url_user_info_is_sent_as_basic_and_json_shows_the_url_redacted() {
    use base64::Engine as _;
    let raw = RawServer::start(echo_script);
    let url = format!("ws://user:p%40ss-secret@{}/raw", raw.addr);
    let out = run(&[&url, "--json", "-v", "-x", "hi", "-w", "0.2"], b"");
    out.expect_code(0);
    expect_hidden(&out, "secret");
    let open: serde_json::Value = serde_json::from_str(out.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(open["event"], "open");
    assert_eq!(
        open["url"],
        format!("ws://user:***@{}/raw", raw.addr),
        "{open}"
    );
    assert!(
        out.stderr
            .contains("> Authorization: Basic *** (the user name and password of the URL)"),
        "{}",
        out.stderr
    );
    let basic = base64::engine::general_purpose::STANDARD.encode("user:p@ss-secret");
    assert_eq!(
        raw.request().header("Authorization"),
        Some(format!("Basic {basic}").as_str())
    );
}

#[test]
fn errors_never_print_passwords() {
    let listener = counting_listener();
    let url = listener.url();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["htp://user:url-secret@127.0.0.1/"],
            "invalid URL \"htp://user:***@127.0.0.1/\": scheme must be ws or wss",
        ),
        (
            vec!["ws://user:url-secret@127.0.0.1:notaport/"],
            "invalid URL \"ws://user:***@127.0.0.1:notaport/\"",
        ),
        (
            vec![&url, "--proxy", "ftp://u:proxy-secret@proxy"],
            "invalid proxy URL \"ftp://u:***@proxy\"",
        ),
        (
            vec![&url, "-H", "Authorization Bearer header-secret"],
            "header \"Authorization ***\" is not in the form",
        ),
        (
            vec!["bench", "htp://user:url-secret@127.0.0.1/"],
            "invalid URL \"htp://user:***@127.0.0.1/\"",
        ),
    ];
    for (args, message) in cases {
        let out = run(&args, b"");
        assert_eq!(out.code(), 2, "{args:?}: {out:?}");
        assert!(out.stderr.contains(message), "{args:?}: {}", out.stderr);
        expect_hidden(&out, "secret");
    }
    // A proxy that cannot be reached: the error names it without its password.
    let dead = format!("http://u:proxy-secret@127.0.0.1:{}", closed_port());
    let out = run(&[&url, "--proxy", &dead, "-v"], b"");
    out.expect_code(3);
    expect_hidden(&out, "secret");
    assert_eq!(listener.accepted(), 0);
}

/// Server text with a title change (OSC), colours (CSI), a carriage return,
/// a bell and a one-character CSI (U+009B).
const HOSTILE_TEXT: &str = "evil\x1b]0;pwned\x07 \x1b[31mred\x1b[0m\rover \u{9b}2J end";

/// A server that sends [`HOSTILE_TEXT`] after the handshake, then echoes.
fn hostile_text_server() -> RawServer {
    RawServer::start(|conn, _| {
        conn.accept(None);
        conn.write_frame(1, HOSTILE_TEXT.as_bytes());
        conn.echo_until_close();
    })
}

#[test]
fn piped_output_of_server_text_is_byte_exact() {
    let raw = hostile_text_server();
    let out = run(&[&raw.url(), "-w", "0.3"], b"after\n");
    out.expect_code(0);
    assert_eq!(out.stdout, format!("{HOSTILE_TEXT}\nafter\n"));
}

// ---------------------------------------------------------------------------
// Exit codes.

#[test]
fn usage_errors_exit_2_before_connecting() {
    let listener = counting_listener();
    let url = listener.url();
    let long_reason = "r".repeat(124);
    let missing_ca = std::env::temp_dir().join("unisocket-cli-test-no-such-ca.pem");
    let missing_ca = missing_ca.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![&url, "--close-code", "999"],
            "--close-code 999 is not allowed",
        ),
        (
            vec![&url, "--close-code", "1005"],
            "--close-code 1005 is not allowed: it only reports",
        ),
        (
            vec![&url, "--close-code", "1004"],
            "--close-code 1004 is not allowed: 1004 is reserved; a client may send 1000-1003, 1007-1011 or 3000-4999",
        ),
        (
            vec![&url, "--close-code", "1012"],
            "--close-code 1012 is not allowed: it is a server's",
        ),
        (
            vec![&url, "--close-code", "2999"],
            "--close-code 2999 is not allowed: 1016-2999 are reserved",
        ),
        (
            vec![&url, "--close-code", "5000"],
            "--close-code 5000 is not allowed: codes above 4999",
        ),
        (vec![&url, "--close-code", "70000"], "error: invalid value"),
        (
            vec![&url, "--close-reason", &long_reason],
            "the limit is 123",
        ),
        (
            vec![&url, "-H", "no colon"],
            "is not in the form \"Name: value\"",
        ),
        (vec![&url, "-H", ": value"], "has no name"),
        (vec![&url, "-H", "Referer: x"], "Referer"),
        (vec![&url, "-H", "X-Bad: a\rb"], "connectSocket:fail"),
        (vec![&url, "-p", "two words"], "connectSocket:fail"),
        (vec![&url, "--timeout", "0"], "--timeout must be"),
        (vec![&url, "--wait=-1"], "--wait must be"),
        (
            vec![&url, "--ping-interval", "0"],
            "--ping-interval must be",
        ),
        (vec![&url, "--ca", missing_ca], "cannot read the --ca file"),
        (vec![&url, "--proxy", "ftp://proxy"], "connectSocket:fail"),
        (vec![&url, "--no-such-flag"], "error: unexpected argument"),
        (vec!["htp://127.0.0.1/"], "scheme must be ws or wss"),
        (vec!["-x", "hello"], "need a URL"),
        (vec!["bench", &url, "--conns", "0"], "--conns must be"),
        (vec!["bench", &url, "--duration", "0"], "--duration must be"),
        (
            vec!["bench", &url, "--size", "15"],
            "--size must be at least 16 bytes (not 15)",
        ),
        (vec!["serve", "--mode", "nope"], "error: invalid value"),
    ];
    for (args, message) in cases {
        let out = run(&args, b"");
        assert_eq!(out.code(), 2, "{args:?}: {out:?}");
        assert!(out.stderr.contains(message), "{args:?}: {}", out.stderr);
        // Our own errors are one line.
        if out.stderr.starts_with("unisocket:") {
            assert_eq!(out.stderr.lines().count(), 1, "{args:?}: {}", out.stderr);
        }
        assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
    }
    thread::sleep(Duration::from_millis(200));
    assert_eq!(listener.accepted(), 0, "a usage error touched the network");
}

#[test]
fn connect_failures_exit_3_with_one_line() {
    // Nothing listening.
    let refused = run(&[&format!("ws://127.0.0.1:{}/", closed_port())], b"");
    refused.expect_code(3).expect_no_colour();
    assert_eq!(refused.stderr.lines().count(), 1, "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .starts_with("unisocket: connectSocket:fail connection refused"),
        "{}",
        refused.stderr
    );
    assert!(refused.stdout.is_empty());

    // The server refuses the upgrade.
    let forbidden = RawServer::start(|conn, _| {
        let _ = conn
            .stream
            .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
    });
    let out = run(&[&forbidden.url(), "-x", "a"], b"");
    out.expect_code(3);
    assert!(out.stderr.contains("403"), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);

    // The server never answers: --timeout.
    let silent = RawServer::start(|conn, _| {
        let mut sink = [0u8; 64];
        let _ = conn.stream.read(&mut sink);
    });
    let out = run(&[&silent.url(), "--timeout", "0.5"], b"");
    out.expect_code(3);
    assert!(out.stderr.contains("timed out"), "{}", out.stderr);
    assert!(out.took < Duration::from_secs(5), "{:?}", out.took);
}

#[test]
fn abnormal_close_exits_4() {
    // The server echoes the first message, then drops the TCP connection
    // without a close frame.
    let raw = RawServer::start(|conn, _| {
        conn.accept(None);
        if let Ok((op, p)) = conn.read_frame() {
            conn.write_frame(op, &p);
        }
    });
    let mut s = Spawned::start(&[&raw.url()]);
    s.write_stdin(b"first\n");
    // stdin stays open: the drop alone must end the client.
    let out = s.finish();
    out.expect_code(4);
    assert_eq!(out.stdout, "first\n");
    assert!(
        out.stderr.contains("closed 1006 (abnormal closure)"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("without a closing handshake"));

    // The same with --json: the close event says so.
    let raw = RawServer::start(|conn, _| {
        conn.accept(None);
        let _ = conn.read_frame();
    });
    let out = run(&[&raw.url(), "--json", "-x", "a", "-w", "5"], b"");
    out.expect_code(4);
    let last: serde_json::Value = serde_json::from_str(out.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "close");
    assert_eq!(last["code"], 1006);
    assert_eq!(last["clean"], false);
    assert!(out.took < Duration::from_secs(4), "{:?}", out.took);
}

// ---------------------------------------------------------------------------
// `unisocket serve`.

#[test]
fn broadcast_sends_each_message_to_every_client() {
    let server = Serve::start(&["--mode", "broadcast"]);
    // A listener that stays connected (stdin open) and prints JSON.
    let mut listener = Spawned::start(&[&server.url, "--json"]);
    listener.wait_stdout("\"event\":\"open\"");
    server.wait_log("the first client", |log| {
        log.iter().filter(|l| l.contains("connected to /")).count() == 1
    });
    // A second client says something and leaves.
    let talker = run(&[&server.url, "-x", "to everyone", "-w", "0.5"], b"");
    talker.expect_code(0);
    // The sender gets its own message too.
    assert_eq!(talker.stdout, "to everyone\n");
    listener.wait_stdout("to everyone");
    listener.close_stdin();
    let out = listener.finish();
    out.expect_code(0);
    let messages: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] == "message")
        .collect();
    assert_eq!(messages.len(), 1, "{}", out.stdout);
    assert_eq!(messages[0]["data"], "to everyone");
    let log = server.log().join("\n");
    assert!(log.starts_with("listening on ws://127.0.0.1:"), "{log}");
    assert!(log.contains("(broadcast mode)"), "{log}");
    assert!(
        log.contains("text (11 bytes) \"to everyone\" -> 2 client(s)"),
        "{log}"
    );
}

#[test]
fn serve_on_a_busy_port_fails_with_one_line() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let out = run(&["serve", "--port", &port], b"");
    out.expect_code(1);
    assert!(
        out.stderr
            .starts_with("unisocket: cannot listen on 127.0.0.1:"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1);
}

#[test]
fn serve_with_cert_and_key_serves_wss_to_a_client_given_the_ca() {
    let pki = pki();
    let cert = temp_file("serve-cert.pem", &pki.cert_pem);
    let key = temp_file("serve-key.pem", &pki.key_pem);
    let ca = temp_file("serve-ca.pem", &pki.ca_pem);
    let server = Serve::start(&[
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_file(&cert);
    let _ = std::fs::remove_file(&key);
    assert!(server.url.starts_with("wss://127.0.0.1:"), "{}", server.url);
    let out = run(
        &[
            &server.url,
            "--ca",
            ca.to_str().unwrap(),
            "-x",
            "over tls",
            "-w",
            "0.2",
        ],
        b"",
    );
    // Without the CA, the server's certificate is not trusted.
    let untrusted = run(&[&server.url, "-x", "t"], b"");
    // A ws:// client to the wss:// server fails its TLS handshake.
    let plain = run(
        &[&server.url.replacen("wss://", "ws://", 1), "-x", "t"],
        b"",
    );
    let _ = std::fs::remove_file(&ca);
    out.expect_code(0);
    assert_eq!(out.stdout, "over tls\n");
    untrusted.expect_code(3);
    assert!(
        untrusted
            .stderr
            .contains("not signed by a certificate authority we trust"),
        "{}",
        untrusted.stderr
    );
    plain.expect_code(3);
    server.wait_log("the TLS failures", |log| {
        log.iter()
            .filter(|l| l.contains("disconnected: TLS handshake failed"))
            .count()
            == 2
    });
    let log = server.log().join("\n");
    assert!(log.contains("connected to /"), "{log}");
    assert!(log.contains("text (8 bytes) \"over tls\""), "{log}");
    assert!(log.contains("sent close 1000"), "{log}");
}

#[test]
fn serve_refuses_unreadable_or_mismatched_cert_and_key_before_listening() {
    let pki = pki();
    let other = pki_with_other_key();
    let cert = temp_file("bad-cert.pem", &pki.cert_pem);
    let key = temp_file("bad-key.pem", &other);
    let missing = std::env::temp_dir().join("unisocket-cli-test-no-such-file.pem");
    for (args, needle) in [
        (
            vec![
                "--cert",
                missing.to_str().unwrap(),
                "--key",
                key.to_str().unwrap(),
            ],
            "cannot read the --cert file",
        ),
        // A certificate where the key should be.
        (
            vec![
                "--cert",
                cert.to_str().unwrap(),
                "--key",
                cert.to_str().unwrap(),
            ],
            "has no private key",
        ),
        (
            vec![
                "--cert",
                cert.to_str().unwrap(),
                "--key",
                key.to_str().unwrap(),
            ],
            "--cert and --key cannot be used together",
        ),
    ] {
        let mut full = vec!["serve", "--port", "0"];
        full.extend(args);
        let out = run(&full, b"");
        out.expect_code(2);
        assert!(out.stdout.is_empty(), "listened: {}", out.stdout);
        assert!(out.stderr.contains(needle), "{needle:?}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    }
    // --cert alone: clap says --key is needed.
    let out = run(&["serve", "--cert", cert.to_str().unwrap()], b"");
    out.expect_code(2);
    assert!(out.stderr.contains("--key"), "{}", out.stderr);
    let _ = std::fs::remove_file(&cert);
    let _ = std::fs::remove_file(&key);
}

/// The PEM of a key that belongs to no certificate of `pki()`.
fn pki_with_other_key() -> String {
    rcgen::KeyPair::generate().unwrap().serialize_pem()
}

#[test]
fn sigterm_closes_every_client_with_1001_and_the_server_exits_0() {
    let mut server = Serve::start(&[]);
    let mut client = Spawned::start(&[&server.url, "--json", "--no-stdin"]);
    client.wait_stdout("\"event\":\"open\"");
    server.wait_log("the client", |log| {
        log.iter().any(|l| l.contains("connected to /"))
    });
    server.signal("TERM");
    let status = server.wait_exit();
    client.close_stdin();
    let out = client.finish();
    // 1001 (going away) is a normal end for the client: exit 0.
    out.expect_code(0);
    let close: serde_json::Value = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["event"] == "close")
        .unwrap_or_else(|| panic!("no close event: {}", out.stdout));
    assert_eq!(close["code"], 1001, "{close}");
    assert_eq!(close["reason"], "server shutting down", "{close}");
    assert_eq!(close["clean"], true, "{close}");
    assert_eq!(status.code(), Some(0), "{status:?}");
    let log = server.log().join("\n");
    assert!(
        log.contains("SIGTERM: shutting down, closing 1 connection(s) with 1001 (going away)"),
        "{log}"
    );
    // The client's answer is logged like any close frame.
    assert!(log.contains("sent close 1001"), "{log}");
}

#[test]
fn ctrl_c_closes_with_1001_and_gives_up_on_a_client_that_does_not_answer() {
    let mut server = Serve::start(&[]);
    // A client that completes the upgrade, then never reads or answers.
    let addr = server.url.strip_prefix("ws://").unwrap().to_owned();
    let mut silent = TcpStream::connect(&addr).unwrap();
    silent
        .write_all(
            format!(
                "GET /silent HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                 Sec-WebSocket-Version: 13\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
    // And a well-behaved one.
    let client = Spawned::start(&[&server.url, "--json", "--no-stdin"]);
    client.wait_stdout("\"event\":\"open\"");
    server.wait_log("both clients", |log| {
        log.iter().filter(|l| l.contains("connected to /")).count() == 2
    });
    server.signal("INT");
    let status = server.wait_exit();
    let out = client.finish();
    out.expect_code(0);
    assert!(out.stdout.contains("\"code\":1001"), "{}", out.stdout);
    assert_eq!(status.code(), Some(0), "{status:?}");
    let log = server.log().join("\n");
    assert!(
        log.contains("SIGINT: shutting down, closing 2 connection(s)"),
        "{log}"
    );
    assert!(
        log.contains("disconnected: no close frame within 2 s of ours"),
        "{log}"
    );
    // What the silent client got: the 101, then our close frame with 1001.
    silent.set_read_timeout(Some(LIMIT)).unwrap();
    let mut got = Vec::new();
    let _ = silent.read_to_end(&mut got);
    let head_end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response")
        + 4;
    assert!(got.starts_with(b"HTTP/1.1 101 "), "{got:?}");
    let frame = &got[head_end..];
    assert_eq!(frame[0], 0x80 | CLOSE, "{frame:?}");
    assert_eq!(&frame[2..4], &1001u16.to_be_bytes(), "{frame:?}");
}

// ---------------------------------------------------------------------------
// `unisocket bench`.

#[test]
fn bench_reports_rate_throughput_and_latency_percentiles() {
    let server = Serve::start(&["--quiet"]);
    for extra in [&[][..], &["--text"][..]] {
        let mut args = vec![
            "bench",
            &server.url,
            "--conns",
            "3",
            "--size",
            "256",
            "--duration",
            "1",
        ];
        args.extend_from_slice(extra);
        let out = run(&args, b"");
        out.expect_code(0).expect_no_colour();
        let o = &out.stdout;
        let kind = if extra.is_empty() { "binary" } else { "text" };
        assert!(
            o.contains(&format!("3 connection(s), 256-byte {kind} messages")),
            "{o}"
        );
        for needle in ["msg/s", "MB/s each way", "p50 ", "p90 ", "p99 ", "max "] {
            assert!(o.contains(needle), "missing {needle:?} in:\n{o}");
        }
        let rounds: u64 = o
            .split(" round trips")
            .next()
            .and_then(|s| s.rsplit('(').next())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| panic!("no round-trip count in:\n{o}"));
        assert!(rounds > 0, "{o}");
        // Not a terminal: no progress line.
        assert!(!out.stderr.contains('\r'), "{:?}", out.stderr);
    }
    assert_eq!(server.log().len(), 1, "--quiet prints the first line only");
}

#[test]
fn bench_exit_codes() {
    let refused = run(
        &["bench", &format!("ws://127.0.0.1:{}/", closed_port())],
        b"",
    );
    refused.expect_code(3);
    assert_eq!(refused.stderr.lines().count(), 1, "{}", refused.stderr);
    // A server that drops the connection after the first echo.
    let raw = RawServer::start(|conn, _| {
        conn.accept(None);
        if let Ok((op, p)) = conn.read_frame() {
            conn.write_frame(op, &p);
        }
    });
    let out = run(
        &["bench", &raw.url(), "--conns", "1", "--duration", "5"],
        b"",
    );
    out.expect_code(4);
    assert!(
        out.stderr
            .contains("the connection closed during the run: 1006 (abnormal closure)"),
        "{}",
        out.stderr
    );
}

#[test]
fn bench_refuses_a_broadcast_server_and_accepts_an_echo_server() {
    // Broadcast: each of the two connections also gets the other's messages.
    let broadcast = Serve::start(&["--quiet", "--mode", "broadcast"]);
    let out = run(
        &["bench", &broadcast.url, "--conns", "2", "--duration", "5"],
        b"",
    );
    out.expect_code(1).expect_no_colour();
    let err = &out.stderr;
    assert!(
        err.starts_with("unisocket: the server does not echo: connection "),
        "{err}"
    );
    assert!(
        err.contains(" got a message it did not send (message ")
            && err.contains("; bench needs an echo server"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    // No figures made of replies that were not round trips.
    assert!(!out.stdout.contains("msg/s"), "{}", out.stdout);

    // The echo server passes, down to the smallest size (the tag alone).
    let echo = Serve::start(&["--quiet"]);
    for extra in [&[][..], &["--text"][..]] {
        let mut args = vec![
            "bench",
            &echo.url,
            "--conns",
            "2",
            "--size",
            "16",
            "--duration",
            "0.5",
        ];
        args.extend_from_slice(extra);
        let out = run(&args, b"");
        out.expect_code(0);
        assert!(out.stdout.contains("16-byte"), "{}", out.stdout);
        assert!(out.stdout.contains("msg/s"), "{}", out.stdout);
        assert!(out.stderr.is_empty(), "{}", out.stderr);
    }
}

#[test]
fn bench_refuses_replies_that_are_not_the_echo() {
    /// What the server sends back for one message's payload.
    type Answer = fn(Vec<u8>) -> Vec<Vec<u8>>;
    /// Answers each data frame with the frames `answer(payload)` returns,
    /// until a close frame, which it echoes.
    fn server(answer: Answer) -> RawServer {
        RawServer::start(move |conn, _| {
            conn.accept(None);
            while let Ok((op, p)) = conn.read_frame() {
                if op == CLOSE {
                    conn.write_frame(CLOSE, &p);
                    break;
                }
                for reply in answer(p) {
                    conn.write_frame(op, &reply);
                }
            }
        })
    }
    let cases: [(Answer, &str); 4] = [
        // The same size and type, but not the message.
        (
            |p| vec![vec![b'z'; p.len()]],
            "connection 1 got a message it did not send (64 bytes of binary)",
        ),
        // The message with its last byte changed.
        (
            |mut p| {
                *p.last_mut().unwrap() ^= 1;
                vec![p]
            },
            "connection 1 got its message 0 back changed \
             (sent 64 bytes of binary, got 64 bytes of binary)",
        ),
        // Cut short.
        (
            |mut p| {
                p.truncate(20);
                vec![p]
            },
            "connection 1 got its message 0 back changed \
             (sent 64 bytes of binary, got 20 bytes of binary)",
        ),
        // Every message twice: the second copy arrives in place of the next echo.
        (
            |p| vec![p.clone(), p],
            "connection 1 got its message 0 back while waiting for the echo of message 1",
        ),
    ];
    for (answer, expected) in cases {
        let raw = server(answer);
        let out = run(
            &[
                "bench",
                &raw.url(),
                "--conns",
                "1",
                "--size",
                "64",
                "--duration",
                "5",
            ],
            b"",
        );
        out.expect_code(1);
        assert_eq!(
            out.stderr.trim_end(),
            format!("unisocket: the server does not echo: {expected}; bench needs an echo server"),
            "{out:?}"
        );
        assert!(!out.stdout.contains("msg/s"), "{}", out.stdout);
    }
}

// ---------------------------------------------------------------------------
// A real terminal, through tmux.

/// A tmux server of its own (its own socket file), killed when dropped.
struct Tmux {
    socket: std::path::PathBuf,
}

impl Tmux {
    /// `None` (and a note on stderr) when tmux cannot be run.
    fn start(name: &str, command: &str) -> Option<Tmux> {
        if !Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            eprintln!("SKIPPED: tmux is not installed (apt-get install -y tmux)");
            return None;
        }
        let tmux = Tmux {
            socket: std::env::temp_dir()
                .join(format!("unisocket-tmux-{}-{name}", std::process::id())),
        };
        let status = tmux
            .cmd()
            .args(["new-session", "-d", "-s", "t", "-x", "150", "-y", "40"])
            .arg(command)
            .status()
            .expect("run tmux");
        assert!(status.success(), "tmux new-session failed");
        Some(tmux)
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&self.socket).args(["-f", "/dev/null"]);
        c
    }

    fn keys(&self, keys: &[&str]) {
        let status = self
            .cmd()
            .args(["send-keys", "-t", "t"])
            .args(keys)
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The process id of the binary that the pane's shell runs.
    fn client_pid(&self) -> u32 {
        let out = self
            .cmd()
            .args(["display-message", "-p", "-t", "t", "#{pane_pid}"])
            .output()
            .expect("run tmux");
        let shell = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children"))
            .unwrap_or_else(|e| panic!("the children of the pane's shell {shell}: {e}"));
        let pids: Vec<u32> = children
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        assert_eq!(pids.len(), 1, "the shell's children: {children:?}");
        pids[0]
    }

    /// The pane's text; with `escapes`, with its colour codes.
    fn screen(&self, escapes: bool) -> String {
        let mut c = self.cmd();
        c.args(["capture-pane", "-p", "-t", "t"]);
        if escapes {
            c.arg("-e");
        }
        String::from_utf8_lossy(&c.output().unwrap().stdout).into_owned()
    }

    fn wait_screen(&self, needle: &str) -> String {
        self.wait_until(&format!("{needle:?}"), |s| s.contains(needle))
    }

    /// Waits for the interactive client's banner and then its empty prompt:
    /// the line editor has the terminal, so keys sent now are its (keys sent
    /// before would be echoed by the terminal itself).
    fn wait_prompt(&self) -> String {
        self.wait_screen("Ctrl-D to close");
        self.wait_until("the prompt", |s| s.lines().any(|l| l == ">"))
    }

    /// Polls the screen until `ready` says yes; returns it.
    fn wait_until(&self, what: &str, mut ready: impl FnMut(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            // Trailing spaces of each line (the pane's width) left out.
            let s: String = self
                .screen(false)
                .lines()
                .map(|l| format!("{}\n", l.trim_end()))
                .collect();
            if ready(&s) {
                return s;
            }
            assert!(
                start.elapsed() < LIMIT,
                "timed out waiting for {what} on the screen:\n{s}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// `sh -c` command text that runs the binary with `args`, prints its exit
/// code and stays on screen. A Ctrl-C that the terminal turns into SIGINT
/// reaches the shell too (the whole foreground process group): the shell
/// catches it (the binary starts with the default action all the same),
/// and goes on to print the exit code.
fn shell_command(env: &str, args: &[&str]) -> String {
    let mut cmd = format!("{env} '{}'", env!("CARGO_BIN_EXE_unisocket"));
    for a in args {
        cmd.push_str(&format!(" '{a}'"));
    }
    format!("sh -c \"trap : INT; {cmd}; echo exit=\\$?; sleep 60\"")
}

#[test]
#[cfg_attr(no_tmux, ignore = "needs tmux")]
fn interactive_session_in_a_terminal() {
    let server = Serve::start(&[]);
    let Some(tmux) = Tmux::start(
        "interactive",
        &shell_command(
            "env -u NO_COLOR -u HTTP_PROXY -u http_proxy -u ALL_PROXY -u all_proxy",
            &[&server.url],
        ),
    ) else {
        return;
    };
    tmux.wait_prompt();
    tmux.keys(&["first line", "Enter"]);
    tmux.wait_screen("< first line");
    tmux.keys(&["second line", "Enter"]);
    tmux.wait_screen("< second line");
    // Up twice recalls the first line, which is sent again (not the
    // escape sequence of the arrow key).
    tmux.keys(&["Up"]);
    tmux.wait_screen("> second line\n< second line\n> second line");
    tmux.keys(&["Up", "Enter"]);
    tmux.wait_until("the recalled line echoed", |screen| {
        screen.matches("< first line").count() == 2
    });
    server.wait_log("the recalled line at the server", |log| {
        log.iter()
            .filter(|l| l.ends_with("text (10 bytes) \"first line\""))
            .count()
            == 2
    });
    tmux.keys(&["C-d"]);
    let screen = tmux.wait_screen("exit=");
    assert!(screen.contains("closed 1000 (normal closure)"), "{screen}");
    assert!(screen.contains("exit=0"), "{screen}");
    assert!(!screen.contains("[A"), "{screen}");
    // Typed lines (after the prompt) and replies alternate.
    let lines: Vec<&str> = screen.lines().map(str::trim_end).collect();
    assert_eq!(
        lines[1..7],
        [
            "> first line",
            "< first line",
            "> second line",
            "< second line",
            "> first line",
            "< first line",
        ],
        "{screen}"
    );
    assert!(
        !server.log().iter().any(|l| l.contains('\x1b')),
        "{:?}",
        server.log()
    );
    // On a terminal, with colours.
    assert!(
        tmux.screen(true).contains('\x1b'),
        "no colours on a terminal"
    );
}

/// The environment for the client in tmux: no proxy, no NO_COLOR.
const CLIENT_ENV: &str = "env -u NO_COLOR -u HTTP_PROXY -u http_proxy -u ALL_PROXY -u all_proxy";

/// The client in tmux, connected to `url` with `extra` arguments, once it
/// has shown that it is connected.
fn interactive_client(name: &str, url: &str, extra: &[&str]) -> Option<Tmux> {
    let tmux = Tmux::start(
        name,
        &shell_command(CLIENT_ENV, &[&[url][..], extra].concat()),
    )?;
    tmux.wait_prompt();
    Some(tmux)
}

/// The last line on the screen with text.
fn last_line(screen: &str) -> &str {
    screen
        .lines()
        .rev()
        .find(|l| !l.is_empty())
        .unwrap_or_default()
}

#[test]
#[cfg_attr(no_tmux, ignore = "needs tmux")]
fn a_message_arriving_while_typing_is_printed_above_the_half_typed_line() {
    let server = Serve::start(&["--mode", "broadcast"]);
    let Some(tmux) = interactive_client("above", &server.url, &[]) else {
        return;
    };
    tmux.keys(&["half typ"]);
    tmux.wait_screen("> half typ");
    // Another client's message, broadcast to this one.
    run(&[&server.url, "-x", "from elsewhere", "-w", "0"], b"").expect_code(0);
    let screen = tmux.wait_screen("< from elsewhere");
    // The message is above the prompt, which still holds what was typed.
    let lines: Vec<&str> = screen.lines().collect();
    let at = |s: &str| lines.iter().position(|l| *l == s);
    assert!(at("< from elsewhere") < at("> half typ"), "{screen}");
    assert_eq!(last_line(&screen), "> half typ", "{screen}");
    // Typing goes on where it was: the whole line is sent.
    tmux.keys(&["ed", "Enter"]);
    tmux.wait_screen("< half typed");
    server.wait_log("the whole line at the server", |log| {
        log.iter()
            .any(|l| l.contains("text (10 bytes) \"half typed\""))
    });
    tmux.keys(&["C-d"]);
    let screen = tmux.wait_screen("exit=");
    assert!(screen.contains("exit=0"), "{screen}");
}

#[test]
#[cfg_attr(no_tmux, ignore = "needs tmux")]
fn slash_commands_ping_binary_help_and_a_double_slash() {
    let server = Serve::start(&[]);
    let Some(tmux) = interactive_client("commands", &server.url, &[]) else {
        return;
    };
    // /ping shows its pong, without -P.
    tmux.keys(&["/ping are you there", "Enter"]);
    tmux.wait_screen("pong received: are you there (round trip ");
    tmux.keys(&["/binary 00 ff10", "Enter"]);
    tmux.wait_screen("< [binary 3 B] 00ff10");
    tmux.keys(&["/help", "Enter"]);
    let help = tmux.wait_screen("//TEXT");
    for command in [
        "/ping [DATA]",
        "/close [CODE [REASON]]",
        "/binary HEX",
        "/help",
    ] {
        assert!(help.contains(command), "{help}");
    }
    // A message that starts with a slash: written with two.
    tmux.keys(&["//not a command", "Enter"]);
    tmux.wait_screen("< /not a command");
    tmux.keys(&["/pnig", "Enter"]);
    tmux.wait_screen("unknown command /pnig");
    tmux.keys(&["/binary 0g", "Enter"]);
    tmux.wait_screen("/binary: the bytes are not hex");
    tmux.keys(&["/close 1004", "Enter"]);
    tmux.wait_screen("/close 1004 is not allowed");
    // None of the commands was sent as a message.
    let log = server.log();
    let texts: Vec<&String> = log.iter().filter(|l| l.contains(" text (")).collect();
    assert_eq!(texts.len(), 1, "{log:?}");
    assert!(texts[0].ends_with("\"/not a command\""), "{log:?}");
    assert!(
        log.iter().any(|l| l.ends_with("binary (3 bytes)")),
        "{log:?}"
    );
    tmux.keys(&["C-d"]);
    let screen = tmux.wait_screen("exit=");
    assert!(screen.contains("exit=0"), "{screen}");
}

#[test]
#[cfg_attr(no_tmux, ignore = "needs tmux")]
fn close_command_sends_its_code_and_reason() {
    let server = Serve::start(&[]);
    let Some(tmux) = interactive_client("close", &server.url, &[]) else {
        return;
    };
    tmux.keys(&["/close 4000 bye", "Enter"]);
    server.wait_log("the server to see the close", |log| {
        log.iter().any(|l| l.ends_with("sent close 4000 \"bye\""))
    });
    let screen = tmux.wait_screen("exit=");
    assert!(screen.contains("closed 4000 \"bye\""), "{screen}");
    assert!(screen.contains("exit=0"), "{screen}");
}

#[test]
#[cfg_attr(no_tmux, ignore = "needs tmux")]
fn ctrl_c_closes_with_a_closing_handshake_and_the_close_code() {
    let server = Serve::start(&[]);
    let Some(tmux) = interactive_client("ctrlc", &server.url, &["--close-code", "4001"]) else {
        return;
    };
    tmux.keys(&["not sent"]);
    tmux.wait_screen("> not sent");
    tmux.keys(&["C-c"]);
    let screen = tmux.wait_screen("exit=");
    assert!(screen.contains("closed 4001"), "{screen}");
    assert!(screen.contains("exit=0"), "{screen}");
    server.wait_log("the server to see the close", |log| {
        log.iter().any(|l| l.ends_with("sent close 4001"))
    });
    // A close frame, then the end of the connection; the half-typed line
    // was not sent.
    let log = server.log();
    assert!(log.iter().any(|l| l.ends_with(" disconnected")), "{log:?}");
    assert!(!log.iter().any(|l| l.contains(" text (")), "{log:?}");
}

#[test]
#[cfg_attr(no_tmux, ignore = "needs tmux")]
fn ctrl_c_while_connecting_abandons_the_attempt_and_exits_130() {
    // Accepts TCP and reads the upgrade request, but never answers it; notes
    // when the client drops the connection.
    let raw = RawServer::start(|conn, notes| {
        let mut rest = Vec::new();
        let _ = conn.stream.read_to_end(&mut rest);
        notes.add(format!("dropped after {} more bytes", rest.len()));
    });
    let Some(tmux) = Tmux::start(
        "ctrlc-connecting",
        &shell_command(CLIENT_ENV, &[&raw.url()]),
    ) else {
        return;
    };
    // The request is sent: the client waits for the answer.
    raw.request();
    tmux.keys(&["C-c"]);
    let screen = tmux.wait_screen("exit=");
    // Without a handler, SIGINT would end the process at once (exit 130
    // too, from the shell), without a word.
    assert!(
        screen.contains("unisocket: interrupted (Ctrl-C) while connecting: nothing was sent\n"),
        "{screen}"
    );
    assert!(screen.contains("exit=130"), "{screen}");
    assert!(!screen.contains("connected to"), "{screen}");
    wait_until("the server to see the connection dropped", || {
        !raw.notes().is_empty()
    });
    assert_eq!(raw.notes(), ["dropped after 0 more bytes"]);
}

#[test]
#[cfg_attr(no_tmux, ignore = "needs tmux")]
fn ctrl_c_again_while_closing_stops_waiting_for_the_server_and_exits_130() {
    // Notes the close frame, and never answers it.
    let raw = RawServer::start(|conn, notes| {
        conn.accept(None);
        if let Ok((CLOSE, payload)) = conn.read_frame() {
            notes.add(close_note(&payload));
            let _ = conn.read_frame();
        }
    });
    let Some(tmux) = interactive_client("ctrlc-twice", &raw.url(), &[]) else {
        return;
    };
    // The first Ctrl-C, at the prompt: the close frame goes out.
    tmux.keys(&["C-c"]);
    wait_until("the server to see the close", || !raw.notes().is_empty());
    assert_eq!(raw.notes(), ["close 1000 \"\""]);
    // The second, while the client waits for the server's close (up to 10 s).
    tmux.keys(&["C-c"]);
    let screen = tmux.wait_screen("exit=");
    assert!(
        screen.contains(
            "unisocket: interrupted (Ctrl-C) while closing: the server's close was not awaited\n"
        ),
        "{screen}"
    );
    assert!(screen.contains("exit=130"), "{screen}");
}

/// A slow server: it reads a line and answers it only after the client's
/// next frame, which it notes (with the line) before answering that too.
fn slow_echo_server() -> RawServer {
    RawServer::start(|conn, notes| {
        conn.accept(None);
        let Ok((_, line)) = conn.read_frame() else {
            return;
        };
        notes.add(format!("text {}", String::from_utf8_lossy(&line)));
        match conn.read_frame() {
            Ok((CLOSE, payload)) => {
                notes.add(close_note(&payload));
                conn.write_frame(1, &line);
                conn.write_frame(CLOSE, &payload);
                let _ = conn.read_frame();
            }
            Ok((op, _)) => notes.add(format!("frame {op} instead of a close")),
            Err(e) => notes.add(format!("no close frame: {e}")),
        }
    })
}

#[test]
#[cfg_attr(no_tmux, ignore = "needs tmux")]
fn ctrl_c_right_after_a_line_closes_with_1000_while_the_server_is_slow() {
    // How Ctrl-C comes after the line:
    // - with the line editor, pressed with Enter: read by the editor as a
    //   key, or, when it comes before the next prompt, turned into SIGINT
    //   by the terminal (which is not in raw mode between two lines);
    // - with the line editor, as SIGINT from elsewhere (`kill -INT`) while
    //   the editor reads the next line: rustyline's handler then, which
    //   gives the session's back when the line ends;
    // - without a line editor (TERM=dumb: stdin read as it is), from the
    //   terminal as SIGINT once the server has the line: the session's
    //   handler (without it, the process ends with no close frame).
    for how in ["with Enter", "kill -INT", "TERM=dumb"] {
        let raw = slow_echo_server();
        let env = if how == "TERM=dumb" {
            format!("{CLIENT_ENV} TERM=dumb")
        } else {
            CLIENT_ENV.to_owned()
        };
        let Some(tmux) = Tmux::start(
            &format!("ctrlc-slow-{}", how.replace([' ', '='], "-")),
            &shell_command(&env, &[&raw.url()]),
        ) else {
            return;
        };
        tmux.wait_screen("Ctrl-D to close");
        let has_line = || raw.notes().contains(&"text slow line".to_owned());
        match how {
            "with Enter" => {
                tmux.wait_until("the prompt", |s| s.lines().any(|l| l == ">"));
                tmux.keys(&["slow line", "Enter", "C-c"]);
            }
            "kill -INT" => {
                tmux.wait_until("the prompt", |s| s.lines().any(|l| l == ">"));
                tmux.keys(&["slow line", "Enter"]);
                wait_until("the server to have the line", has_line);
                tmux.wait_until("the next prompt", |s| last_line(s) == ">");
                let status = Command::new("kill")
                    .args(["-INT", &tmux.client_pid().to_string()])
                    .status()
                    .expect("run kill");
                assert!(status.success());
            }
            _ => {
                assert!(
                    !tmux.screen(false).contains("/help"),
                    "an editor with TERM=dumb"
                );
                tmux.keys(&["slow line", "Enter"]);
                wait_until("the server to have the line", has_line);
                tmux.keys(&["C-c"]);
            }
        }
        let screen = tmux.wait_screen("exit=");
        assert_eq!(
            raw.notes(),
            ["text slow line", "close 1000 \"\""],
            "{how}: {screen}"
        );
        // The late answer is printed, then the close, after a closing handshake.
        let answer = screen
            .find("< slow line")
            .unwrap_or_else(|| panic!("{how}: {screen}"));
        let closed = screen
            .find("closed 1000 (normal closure)")
            .unwrap_or_else(|| panic!("{how}: {screen}"));
        assert!(answer < closed, "{how}: {screen}");
        assert!(screen.contains("exit=0"), "{how}: {screen}");
    }
}

#[test]
#[cfg_attr(no_tmux, ignore = "needs tmux")]
fn the_server_closing_while_a_line_is_typed_leaves_the_terminal_as_it_was() {
    // Closes when the test says so.
    let (close_now, wait) = std::sync::mpsc::channel::<()>();
    let wait = Mutex::new(wait);
    let raw = RawServer::start(move |conn, _| {
        conn.accept(None);
        if wait.lock().unwrap().recv_timeout(LIMIT).is_ok() {
            conn.write_frame(CLOSE, &Conn::close_payload(1000, "done"));
            let _ = conn.read_frame();
        }
    });
    // After the client: whether the terminal is in canonical mode with
    // echo, as the shell left it.
    let mut cmd = format!(
        "{CLIENT_ENV} '{}' '{}'",
        env!("CARGO_BIN_EXE_unisocket"),
        raw.url()
    );
    cmd.push_str("; echo exit=$?; stty -a | tr ' ' '\\n' | grep -x -e -icanon -e icanon -e -echo -e echo | tr '\\n' ' '; echo; sleep 60");
    let Some(tmux) = Tmux::start("restore", &format!("sh -c \"{}\"", cmd.replace('$', "\\$")))
    else {
        return;
    };
    tmux.wait_prompt();
    tmux.keys(&["half"]);
    tmux.wait_screen("> half");
    close_now.send(()).unwrap();
    let screen = tmux.wait_screen("exit=");
    assert!(
        screen.contains("closed 1000 (normal closure) \"done\""),
        "{screen}"
    );
    assert!(screen.contains("exit=0"), "{screen}");
    let screen = tmux.wait_screen("icanon");
    assert!(screen.contains("icanon echo"), "{screen}");
    assert!(!screen.contains("-icanon"), "{screen}");
}

#[test]
#[cfg_attr(no_tmux, ignore = "needs tmux")]
fn colours_on_a_terminal_unless_no_color() {
    let Some(coloured) = Tmux::start("colour", &shell_command("env -u NO_COLOR", &[])) else {
        return;
    };
    coloured.wait_screen("exit=0");
    let with = coloured.screen(true);
    assert!(with.contains("\x1b[36mon_open"), "{with:?}");

    let Some(plain) = Tmux::start("nocolour", &shell_command("env NO_COLOR=1", &[])) else {
        return;
    };
    let screen = plain.wait_screen("exit=0");
    assert!(screen.contains("on_close: code 1000"), "{screen}");
    let without = plain.screen(true);
    assert!(!without.contains("\x1b[36m"), "{without:?}");
    assert!(!without.contains("\x1b[1m"), "{without:?}");

    // --no-color, as wscat spells it: the same.
    let Some(flag) = Tmux::start(
        "nocolourflag",
        &shell_command("env -u NO_COLOR", &["--no-color"]),
    ) else {
        return;
    };
    let screen = flag.wait_screen("exit=0");
    assert!(screen.contains("on_close: code 1000"), "{screen}");
    let without = flag.screen(true);
    assert!(!without.contains("\x1b[36m"), "{without:?}");
    assert!(!without.contains("\x1b[1m"), "{without:?}");
}

#[test]
#[cfg_attr(no_tmux, ignore = "needs tmux")]
fn bench_shows_a_progress_line_on_a_terminal() {
    let server = Serve::start(&["--quiet"]);
    let Some(tmux) = Tmux::start(
        "bench",
        &shell_command(
            "env -u HTTP_PROXY -u http_proxy -u ALL_PROXY -u all_proxy",
            &["bench", &server.url, "--conns", "2", "--duration", "3"],
        ),
    ) else {
        return;
    };
    // While it runs: the progress line, updated about once per second.
    let during = tmux.wait_screen("round trips");
    assert!(during.contains("msg/s"), "{during}");
    assert!(!during.contains("latency:"), "{during}");
    // At the end the progress line is replaced by the report.
    let after = tmux.wait_screen("exit=");
    assert!(after.contains("exit=0"), "{after}");
    assert!(after.contains("latency:"), "{after}");
    assert!(after.contains("p99 "), "{after}");
    assert!(
        !after.contains(" s   "),
        "the progress line was not cleared:\n{after}"
    );
}

#[test]
#[cfg_attr(no_tmux, ignore = "needs tmux")]
fn server_text_control_characters_are_escaped_on_a_terminal() {
    let raw = hostile_text_server();
    let Some(tmux) = Tmux::start(
        "escapes",
        &shell_command(
            "env -u HTTP_PROXY -u http_proxy -u ALL_PROXY -u all_proxy NO_COLOR=1",
            &[&raw.url(), "-x", "plain", "-w", "0.3"],
        ),
    ) else {
        return;
    };
    let screen = tmux.wait_screen("exit=");
    assert!(screen.contains("exit=0"), "{screen}");
    assert!(
        screen.contains(r"< evil\x1b]0;pwned\x07 \x1b[31mred\x1b[0m\x0dover \u{9b}2J end"),
        "{screen}"
    );
    assert!(screen.contains("< plain"), "{screen}");
    // Nothing reached the terminal as a control: no red cell, no title.
    let with_escapes = tmux.screen(true);
    assert!(!with_escapes.contains("\x1b[31m"), "{with_escapes:?}");
    let title = tmux
        .cmd()
        .args(["display-message", "-p", "-t", "t", "#{pane_title}"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&title.stdout).contains("pwned"),
        "{title:?}"
    );
}

// ---------------------------------------------------------------------------
// Bounded memory when stdout is blocked or the server never reads.

/// A kibibyte count from a `/proc/PID/status` line such as `VmHWM:  1234 kB`.
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Starts a server that writes `frame` over and over, up to `total` bytes,
/// never reading; returns its URL and the bytes written so far.
fn flood_server(frame: Vec<u8>, total: usize) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let written = Arc::new(AtomicUsize::new(0));
    let w = written.clone();
    thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        let mut stream: Box<dyn Stream> = Box::new(tcp);
        let request = read_request(&mut *stream).unwrap();
        let mut conn = Conn { stream, request };
        conn.accept(None);
        while w.load(Ordering::SeqCst) < total {
            if conn.stream.write_all(&frame).is_err() {
                return;
            }
            w.fetch_add(frame.len(), Ordering::SeqCst);
        }
    });
    (url, written)
}

/// Runs the client against a flooding server with its stdout unread until
/// the server stalls (what it has written stops growing for a second) or
/// has written everything; returns the client's peak resident memory in
/// MiB and what the server wrote.
fn peak_memory_against_a_flood(frame: Vec<u8>, total: usize) -> (u64, usize) {
    let (url, written) = flood_server(frame, total);
    let mut child = unisocket()
        .args([url.as_str(), "--no-stdin"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut last = usize::MAX;
    loop {
        thread::sleep(Duration::from_secs(1));
        let now = written.load(Ordering::SeqCst);
        if now == last || now >= total {
            break;
        }
        last = now;
    }
    let hwm_mib = proc_status_kib(pid, "VmHWM:") / 1024;
    let _ = child.kill();
    let _ = child.wait();
    (hwm_mib, written.load(Ordering::SeqCst))
}

#[test]
fn memory_stays_bounded_when_stdout_is_blocked_or_the_server_never_reads() {
    // 1 KiB text messages, 200 MiB in all, while nobody reads the client's
    // stdout: the client must stop reading (the server stalls) instead of
    // holding the messages. 64 MiB covers the binary, the runtime, the
    // library's 16 MiB of held messages and the socket buffers.
    const TOTAL: usize = 200 << 20;
    let mut text = vec![0x81, 126, 0x04, 0x00];
    text.extend(std::iter::repeat_n(b'x', 1024));
    let (hwm, written) = peak_memory_against_a_flood(text, TOTAL);
    eprintln!(
        "text flood: peak {hwm} MiB, the server wrote {} MiB",
        written >> 20
    );
    assert!(written < TOTAL, "the server was never slowed down");
    assert!(hwm < 64, "peak resident memory {hwm} MiB");

    // 125-byte pings from a server that never reads: the pongs cannot go
    // out, and the client must stop reading pings rather than queue pongs.
    let mut ping = vec![0x89, 125];
    ping.extend(std::iter::repeat_n(b'p', 125));
    let (hwm, written) = peak_memory_against_a_flood(ping, TOTAL);
    eprintln!(
        "ping flood: peak {hwm} MiB, the server wrote {} MiB",
        written >> 20
    );
    assert!(written < TOTAL, "the server was never slowed down");
    assert!(hwm < 64, "peak resident memory {hwm} MiB");
}

// ---------------------------------------------------------------------------
// The library's options as flags: --ping-timeout, --reconnect, --cert/--key,
// --origin, --auth, --max-message-size.

#[test]
fn ping_timeout_ends_the_session_when_the_server_goes_silent() {
    // The server accepts, then reads everything and answers nothing, as a
    // half-open connection would.
    let raw = RawServer::start(|conn, _| {
        conn.accept(None);
        while conn.read_frame().is_ok() {}
    });
    let out = run(&[&raw.url(), "--no-stdin", "--ping-timeout", "0.3"], b"");
    out.expect_code(4);
    assert!(
        out.stderr.contains(
            "unisocket: the server did not answer a ping within 0.3 s (--ping-timeout): \
             the connection is taken as dead"
        ),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("connectSocket"), "{}", out.stderr);

    // A server that answers keeps the session alive past several timeouts.
    let server = Serve::start(&[]);
    let mut s = Spawned::start(&[
        &server.url,
        "--ping-timeout",
        "1",
        "--ping-interval",
        "0.05",
        "-P",
    ]);
    for _ in 0..3 {
        s.write_stdin(b"x\n");
        s.wait_stdout("x\n");
    }
    s.wait_stderr("pong received: ");
    s.write_stdin(b"last\n");
    s.wait_stdout("last\n");
    let out = s.finish();
    out.expect_code(0);
    assert!(!out.stderr.contains("did not answer"), "{}", out.stderr);
}

#[test]
fn reconnect_connects_again_and_sends_what_was_typed_meanwhile() {
    // The first connection is dropped without a close frame after one
    // message; the next ones echo.
    let raw = RawServer::start({
        let first = Arc::new(AtomicUsize::new(0));
        move |conn, notes| {
            conn.accept(None);
            if first.fetch_add(1, Ordering::SeqCst) == 0 {
                if let Ok((_, p)) = conn.read_frame() {
                    notes.add(format!("dropped after {}", String::from_utf8_lossy(&p)));
                }
                return;
            }
            echo_script_after_accept(conn, notes);
        }
    });
    let mut s = Spawned::start(&[&raw.url(), "--reconnect", "--json", "-w", "0.5"]);
    s.wait_stdout("\"event\":\"open\"");
    s.write_stdin(b"one\n");
    s.wait_stdout("\"event\":\"reconnecting\"");
    // Typed while reconnecting: queued, then sent on the new connection.
    s.write_stdin(b"two\n");
    s.wait_stdout("\"data\":\"two\"");
    let out = s.finish();
    out.expect_code(0);
    let events: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["open", "error", "reconnecting", "open", "message", "close"],
        "{events:?}"
    );
    assert_eq!(events[2]["attempt"], 1);
    assert!(events[2]["delay_ms"].as_f64().unwrap() >= 500.0);
    assert_eq!(events[5]["code"], 1000);
    assert_eq!(raw.accepted(), 2);
    assert_eq!(raw.notes()[0], "dropped after one");

    // Without a server at all, the attempts are bounded: it gives up.
    let dead = format!("ws://127.0.0.1:{}/", closed_port());
    let out = run(
        &[
            &dead,
            "--reconnect",
            "--reconnect-attempts",
            "1",
            "--no-stdin",
        ],
        b"",
    );
    out.expect_code(3);
    // (The line "reconnecting: attempt 1 in ..." is not checked here: a
    // refusal on 127.0.0.1 can come before the listener is registered.)
    assert_eq!(
        out.stderr.matches("connection refused").count(),
        2,
        "{}",
        out.stderr
    );
}

/// A CA, a server certificate for 127.0.0.1 it signed, a server that
/// requires a client certificate from that CA, and such a client
/// certificate with its key.
struct MtlsPki {
    ca_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
    config: Arc<rustls::ServerConfig>,
}

fn mtls_pki() -> MtlsPki {
    use rcgen::ExtendedKeyUsagePurpose;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let issuer = test_ca("unisocket-cli mTLS test CA");
    let leaf = |name: &str, usage| signed_leaf(&issuer, name, usage);
    let (server_cert, server_key) = leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth);
    let (client_cert_pem, client_key_pem) = leaf("client", ExtendedKeyUsagePurpose::ClientAuth);
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(issuer.pem().as_bytes()).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    let config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(server_cert.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(server_key.as_bytes()).unwrap(),
        )
        .unwrap();
    MtlsPki {
        ca_pem: issuer.pem(),
        client_cert_pem,
        client_key_pem,
        config: Arc::new(config),
    }
}

#[test]
fn cert_and_key_authenticate_the_client_to_a_server_that_requires_it() {
    let pki = mtls_pki();
    let raw = RawServer::start_tls(pki.config.clone(), echo_script);
    let url = format!("wss://127.0.0.1:{}/mtls", raw.addr.port());
    let ca = temp_file("mtls-ca.pem", &pki.ca_pem);
    let cert = temp_file("mtls-cert.pem", &pki.client_cert_pem);
    let key = temp_file("mtls-key.pem", &pki.client_key_pem);
    let (ca_s, cert_s, key_s) = (
        ca.to_str().unwrap(),
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
    );

    let with = run(
        &[
            &url, "--ca", ca_s, "--cert", cert_s, "--key", key_s, "-x", "m", "-w", "0.2", "-v",
        ],
        b"",
    );
    let without = run(&[&url, "--ca", ca_s, "-x", "m", "-w", "0.2"], b"");
    let no_key = run(&[&url, "--ca", ca_s, "--cert", cert_s], b"");
    let missing = run(
        &[&url, "--cert", cert_s, "--key", "/nonexistent/key.pem"],
        b"",
    );
    for f in [&ca, &cert, &key] {
        let _ = std::fs::remove_file(f);
    }
    with.expect_code(0);
    assert_eq!(with.stdout, "m\n");
    // The key is never printed, not even with -v.
    assert!(!with.stderr.contains("PRIVATE KEY"), "{}", with.stderr);
    without.expect_code(3);
    no_key.expect_code(2);
    assert!(no_key.stderr.contains("--key"), "{}", no_key.stderr);
    missing.expect_code(2);
    assert!(
        missing
            .stderr
            .contains("cannot read the --key file /nonexistent/key.pem"),
        "{}",
        missing.stderr
    );
    // Only the connection with a certificate got as far as a request.
    assert_eq!(raw.requests.lock().unwrap().len(), 1);
}

#[test]
fn origin_and_auth_are_sent_and_the_password_never_printed() {
    let raw = RawServer::start(echo_script);
    let out = run(
        &[
            &raw.url(),
            "--origin",
            "https://app.example",
            "--auth",
            "alice:auth-secret",
            "-v",
            "--json",
            "-x",
            "hi",
            "-w",
            "0.2",
        ],
        b"",
    );
    out.expect_code(0);
    expect_hidden(&out, "auth-secret");
    // base64("alice:auth-secret")
    expect_hidden(&out, "YWxpY2U6YXV0aC1zZWNyZXQ=");
    for needle in [
        "> Origin: https://app.example",
        "> Authorization: Basic ***",
    ] {
        assert!(
            out.stderr.contains(needle),
            "missing {needle:?}:\n{}",
            out.stderr
        );
    }
    let req = raw.request();
    assert_eq!(req.header("Origin"), Some("https://app.example"));
    assert_eq!(
        req.header("Authorization"),
        Some("Basic YWxpY2U6YXV0aC1zZWNyZXQ=")
    );

    // Wrong spellings are usage errors that do not show the argument.
    for (args, message) in [
        (
            vec!["--auth", "only-auth-secret"],
            "--auth must be USER:PASSWORD",
        ),
        (
            vec!["--auth", "a:auth-secret", "-H", "Authorization: Bearer x"],
            "give the credentials once",
        ),
        (
            vec!["--origin", "http://a", "-H", "origin: http://b"],
            "give the origin once",
        ),
    ] {
        let url = raw.url();
        let mut all = vec![url.as_str()];
        all.extend(args);
        let out = run(&all, b"");
        out.expect_code(2);
        assert!(out.stderr.contains(message), "{all:?}: {}", out.stderr);
        expect_hidden(&out, "auth-secret");
    }
    assert_eq!(raw.accepted(), 1);
}

#[test]
fn max_message_size_refuses_larger_messages_with_1009() {
    // The server sends a 100-byte message, then echoes.
    let raw = RawServer::start(|conn, notes| {
        conn.accept(None);
        conn.write_frame(1, &[b'a'; 100]);
        echo_script_after_accept(conn, notes);
    });
    let small = run(&[&raw.url(), "--max-message-size", "64", "--no-stdin"], b"");
    small.expect_code(4);
    assert_eq!(small.stdout, "");
    assert!(
        small.stderr.contains("(raise it with --max-message-size)"),
        "{}",
        small.stderr
    );
    assert!(!small.stderr.contains("connectSocket"), "{}", small.stderr);
    wait_until("the client's close frame", || !raw.notes().is_empty());
    assert!(
        raw.notes()[0].starts_with("close 1009"),
        "{:?}",
        raw.notes()
    );

    // 1K is 1024 bytes: enough.
    let big = run(
        &[
            &raw.url(),
            "--max-message-size",
            "1K",
            "-x",
            "z",
            "-w",
            "0.2",
        ],
        b"",
    );
    big.expect_code(0);
    assert_eq!(big.stdout, format!("{}\nz\n", "a".repeat(100)));

    for bad in ["0", "12Q", "K", "99999999999G"] {
        let out = run(&[&raw.url(), "--max-message-size", bad], b"");
        out.expect_code(2);
        assert!(
            out.stderr.contains("--max-message-size"),
            "{bad}: {}",
            out.stderr
        );
    }
}

// ---------------------------------------------------------------------------
// TLS with the certificates people make, and failures as sentences.

/// A self-signed server certificate with `CA:TRUE`, as `openssl req -x509
/// -newkey rsa:2048 -nodes -subj /CN=localhost -addext
/// subjectAltName=DNS:localhost` makes it, for `names`; expired in 2001
/// with `expired`. Its PEM, and a server config that presents it.
fn self_signed(names: &[&str], expired: bool) -> (String, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    if expired {
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    }
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(cert.pem().as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
    (cert.pem(), Arc::new(config))
}

#[track_caller]
fn expect_sentence(out: &Finished, needle: &str) {
    out.expect_code(3);
    assert!(
        out.stderr.contains(needle),
        "missing {needle:?}:\n{}",
        out.stderr
    );
    for debug in [
        "Other(",
        "OtherError",
        "UnknownIssuer",
        "CaUsedAsEndEntity",
        "DnsName(",
    ] {
        assert!(!out.stderr.contains(debug), "{debug:?} in:\n{}", out.stderr);
    }
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
}

#[test]
fn a_self_signed_server_certificate_given_to_ca_is_trusted_for_its_names_only() {
    let (pem, config) = self_signed(&["127.0.0.1"], false);
    let raw = RawServer::start_tls(config, echo_script);
    let url = format!("wss://127.0.0.1:{}/self", raw.addr.port());
    let ca = temp_file("self-signed.pem", &pem);
    let (other_pem, _) = self_signed(&["127.0.0.1"], false);
    let other = temp_file("other-self-signed.pem", &other_pem);
    let trusted = run(
        &[&url, "--ca", ca.to_str().unwrap(), "-x", "t", "-w", "0.2"],
        b"",
    );
    // Not given: refused, with what to do.
    let untrusted = run(&[&url, "-x", "t"], b"");
    // Another self-signed certificate with the same name does not vouch for it.
    let wrong = run(&[&url, "--ca", other.to_str().unwrap(), "-x", "t"], b"");
    let _ = std::fs::remove_file(&ca);
    let _ = std::fs::remove_file(&other);
    trusted.expect_code(0);
    assert_eq!(trusted.stdout, "t\n");
    for out in [&untrusted, &wrong] {
        expect_sentence(
            out,
            "the server's certificate is a CA certificate (CA:TRUE, as `openssl req -x509` makes \
             them) and not one we trust: give that very certificate with --ca FILE",
        );
    }

    // Trusted, but for another name: the name is still checked.
    let (pem, config) = self_signed(&["localhost"], false);
    let raw = RawServer::start_tls(config, echo_script);
    let ca = temp_file("self-signed-localhost.pem", &pem);
    let url = format!("wss://127.0.0.1:{}/self", raw.addr.port());
    let out = run(&[&url, "--ca", ca.to_str().unwrap(), "-x", "t"], b"");
    // And its dates: an expired one is refused as expired.
    let (pem, config) = self_signed(&["127.0.0.1"], true);
    let expired_server = RawServer::start_tls(config, echo_script);
    let expired_ca = temp_file("self-signed-expired.pem", &pem);
    let expired_url = format!("wss://127.0.0.1:{}/self", expired_server.addr.port());
    let expired = run(
        &[
            &expired_url,
            "--ca",
            expired_ca.to_str().unwrap(),
            "-x",
            "t",
        ],
        b"",
    );
    let _ = std::fs::remove_file(&ca);
    let _ = std::fs::remove_file(&expired_ca);
    expect_sentence(
        &out,
        "the server's certificate is not valid for 127.0.0.1: it is for localhost; \
         connect with a name it has",
    );
    expect_sentence(&expired, "the server's certificate expired ");
    assert!(expired.stderr.contains(" days ago"), "{}", expired.stderr);
    assert_eq!(raw.requests.lock().unwrap().len(), 0);
    assert_eq!(expired_server.requests.lock().unwrap().len(), 0);
}

#[test]
fn tls_failures_are_sentences_with_a_hint() {
    let pki = pki();
    let raw = RawServer::start_tls(pki.config.clone(), echo_script);
    let unknown = run(
        &[&format!("wss://127.0.0.1:{}/", raw.addr.port()), "-x", "t"],
        b"",
    );
    expect_sentence(
        &unknown,
        "TLS handshake with 127.0.0.1 failed: the server's certificate is not signed by a \
         certificate authority we trust: give its CA certificate (or, if it is self-signed, \
         the certificate itself) with --ca FILE",
    );

    // A server that requires a client certificate, and none given.
    let mtls = mtls_pki();
    let raw = RawServer::start_tls(mtls.config.clone(), echo_script);
    let ca = temp_file("hint-mtls-ca.pem", &mtls.ca_pem);
    let out = run(
        &[
            &format!("wss://127.0.0.1:{}/", raw.addr.port()),
            "--ca",
            ca.to_str().unwrap(),
            "-x",
            "t",
        ],
        b"",
    );
    let _ = std::fs::remove_file(&ca);
    out.expect_code(3);
    assert!(
        out.stderr.contains("client certificate") && out.stderr.contains("--cert FILE --key FILE"),
        "{}",
        out.stderr
    );
}

#[test]
fn ws_to_a_tls_port_and_wss_to_a_plain_port_say_what_is_likely_wrong() {
    let pki = pki();
    let tls = RawServer::start_tls(pki.config.clone(), echo_script);
    let out = run(
        &[&format!("ws://127.0.0.1:{}/", tls.addr.port()), "-x", "t"],
        b"",
    );
    out.expect_code(3);
    assert!(
        out.stderr
            .contains("(the server did not answer in HTTP: if it expects TLS, use a wss:// URL)"),
        "{}",
        out.stderr
    );

    // `unisocket serve` closes on a TLS ClientHello.
    let server = Serve::start(&[]);
    let url = server.url.replacen("ws://", "wss://", 1);
    let out = run(&[&url, "-x", "t"], b"");
    out.expect_code(3);
    assert!(
        out.stderr
            .contains("(if it is a plain WebSocket server, use a ws:// URL)"),
        "{}",
        out.stderr
    );

    // A plain HTTP server answers the ClientHello with an HTTP error.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.read(&mut [0u8; 4096]);
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let out = run(&[&format!("wss://127.0.0.1:{port}/"), "-x", "t"], b"");
    expect_sentence(
        &out,
        "the server did not answer in TLS (if it is a plain WebSocket server, use a ws:// URL)",
    );
}

// ---------------------------------------------------------------------------
// Familiar spellings: -c, -s, http(s):// and bare host:port, -L.

#[test]
fn wscat_spellings_c_and_s_connect_and_offer_the_subprotocol() {
    let raw = RawServer::start(|conn, notes| {
        conn.accept(Some("chat.v2"));
        echo_script_after_accept(conn, notes);
    });
    let out = run(
        &[
            "-c",
            &raw.url(),
            "-s",
            "chat.v2",
            "--subprotocol",
            "x",
            "-x",
            "m",
            "-w",
            "0.2",
        ],
        b"",
    );
    out.expect_code(0);
    assert_eq!(out.stdout, "m\n");
    assert!(
        out.stderr.contains("(subprotocol chat.v2)"),
        "{}",
        out.stderr
    );
    assert_eq!(
        raw.request().header("Sec-WebSocket-Protocol"),
        Some("chat.v2, x")
    );
    // -c and a URL: which one is meant?
    let both = run(&["-c", &raw.url(), &raw.url()], b"");
    both.expect_code(2);
    assert!(both.stderr.contains("--connect"), "{}", both.stderr);
    assert_eq!(raw.accepted(), 1);
}

#[test]
fn http_urls_and_bare_host_port_are_taken_as_websocket_urls_with_a_notice() {
    let server = Serve::start(&[]);
    let host_port = server.url.strip_prefix("ws://").unwrap().to_owned();
    for (given, meant) in [
        (
            format!("http://{host_port}/a"),
            format!("ws://{host_port}/a"),
        ),
        (host_port.clone(), format!("ws://{host_port}")),
        (
            format!("{host_port}/b?c=1"),
            format!("ws://{host_port}/b?c=1"),
        ),
    ] {
        let out = run(&[&given, "-x", "m", "-w", "0.2"], b"");
        out.expect_code(0);
        assert_eq!(out.stdout, "m\n");
        assert!(
            out.stderr.contains(&format!(
                "unisocket: note: connecting to {meant} (a WebSocket URL starts with ws:// or wss://)"
            )),
            "{given}: {}",
            out.stderr
        );
    }
    // https:// is wss://: TLS to a plain server fails, with the hint.
    let out = run(&[&format!("https://{host_port}/"), "-x", "m"], b"");
    out.expect_code(3);
    assert!(
        out.stderr
            .contains(&format!("note: connecting to wss://{host_port}/")),
        "{}",
        out.stderr
    );
    // A scheme of another kind stays an error, and the URL is not changed.
    let out = run(&["htp://127.0.0.1/"], b"");
    out.expect_code(2);
    assert!(!out.stderr.contains("note:"), "{}", out.stderr);
}

#[test]
fn without_l_a_redirect_names_its_location_and_is_not_followed() {
    let raw = RawServer::start(|conn, _| {
        let _ = conn.stream.write_all(
            b"HTTP/1.1 301 Moved Permanently\r\nLocation: /new?x=1\r\n\
              Content-Length: 0\r\n\r\n",
        );
    });
    let url = format!("ws://user:redirect-secret@{}/old", raw.addr);
    let out = run(&[&url, "-x", "m"], b"");
    out.expect_code(3);
    assert_eq!(
        out.stderr,
        format!(
            "unisocket: connectSocket:fail server answered HTTP 301 Moved Permanently instead of \
             101 Switching Protocols: a redirect to ws://user:***@{}/new?x=1; -L follows \
             redirects\n",
            raw.addr
        )
    );
    expect_hidden(&out, "redirect-secret");
    assert_eq!(raw.accepted(), 1);
}

/// A server that answers `/old` with `status` to `location` and accepts
/// (and echoes) any other path.
fn redirecting(status: &'static str, location: String) -> RawServer {
    RawServer::start(move |conn, notes| {
        if conn.request.line.starts_with("GET /old ") {
            let _ = conn.stream.write_all(
                format!("HTTP/1.1 {status}\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n")
                    .as_bytes(),
            );
        } else {
            echo_script(conn, notes);
        }
    })
}

#[test]
fn l_follows_a_redirect_and_credentials_stay_on_their_origin() {
    // Another origin (another port): the message goes there, the
    // credentials do not.
    let target = RawServer::start(echo_script);
    let first = redirecting(
        "302 Found",
        format!("http://127.0.0.1:{}/new", target.addr.port()),
    );
    let url = format!("ws://user:redirect-secret@{}/old", first.addr);
    let out = run(
        &[
            &url,
            "-L",
            "-H",
            "Cookie: id=cookie-secret",
            "-H",
            "X-Trace: 7",
            "-x",
            "m",
            "-w",
            "0.2",
        ],
        b"",
    );
    out.expect_code(0);
    assert_eq!(out.stdout, "m\n");
    assert!(
        out.stderr.contains(&format!(
            "unisocket: note: HTTP 302 redirect to ws://127.0.0.1:{}/new; another origin: the \
             credentials given are not sent there\n",
            target.addr.port()
        )),
        "{}",
        out.stderr
    );
    expect_hidden(&out, "redirect-secret");
    let asked = first.request();
    assert!(asked.header("authorization").is_some(), "{asked:?}");
    assert_eq!(asked.header("cookie"), Some("id=cookie-secret"));
    let moved = target.request();
    assert!(moved.line.starts_with("GET /new "), "{moved:?}");
    assert_eq!(moved.header("authorization"), None, "{moved:?}");
    assert_eq!(moved.header("cookie"), None, "{moved:?}");
    assert_eq!(moved.header("x-trace"), Some("7"), "{moved:?}");

    // The same origin, a relative Location: the credentials go along.
    let same = redirecting("307 Temporary Redirect", "new".to_owned());
    let url = format!("ws://user:redirect-secret@{}/old", same.addr);
    let out = run(&[&url, "--location", "-x", "m", "-w", "0.2"], b"");
    out.expect_code(0);
    assert_eq!(out.stdout, "m\n");
    assert!(
        out.stderr.contains(&format!(
            "unisocket: note: HTTP 307 redirect to ws://user:***@{}/new\n",
            same.addr
        )),
        "{}",
        out.stderr
    );
    expect_hidden(&out, "redirect-secret");
    wait_until("two requests", || same.requests.lock().unwrap().len() == 2);
    let requests = same.requests.lock().unwrap().clone();
    assert!(requests[1].line.starts_with("GET /new "), "{requests:?}");
    assert_eq!(
        requests[0].header("authorization"),
        requests[1].header("authorization")
    );
    assert!(requests[1].header("authorization").is_some());
}

#[test]
fn l_stops_a_redirect_loop_and_after_max_redirs_with_exit_3() {
    // A server that redirects to itself.
    let raw = RawServer::start(|conn, _| {
        let _ = conn
            .stream
            .write_all(b"HTTP/1.1 302 Found\r\nLocation: /raw\r\nContent-Length: 0\r\n\r\n");
    });
    let out = run(&[&raw.url(), "-L", "-x", "m"], b"");
    out.expect_code(3);
    assert_eq!(
        out.stderr,
        format!(
            "unisocket: redirect loop: HTTP 302 from {0} back to {0}, where we have been\n",
            raw.url()
        )
    );
    assert_eq!(raw.accepted(), 1);

    // A server that always sends on to the next page: /1 -> /2 -> ...
    let raw = RawServer::start(|conn, _| {
        let n: u32 = conn
            .request
            .line
            .split(' ')
            .nth(1)
            .and_then(|p| p.trim_start_matches('/').parse().ok())
            .unwrap_or(0);
        let _ = conn.stream.write_all(
            format!(
                "HTTP/1.1 308 Permanent Redirect\r\nLocation: /{}\r\nContent-Length: 0\r\n\r\n",
                n + 1
            )
            .as_bytes(),
        );
    });
    let base = format!("ws://{}", raw.addr);
    let out = run(&[&format!("{base}/0"), "-L", "--max-redirs", "2"], b"");
    out.expect_code(3);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(
        lines,
        [
            format!("unisocket: note: HTTP 308 redirect to {base}/1"),
            format!("unisocket: note: HTTP 308 redirect to {base}/2"),
            format!(
                "unisocket: too many redirects: 2 followed, and HTTP 308 to {base}/3 would be \
                 one more than --max-redirs 2"
            ),
        ],
        "{}",
        out.stderr
    );
    assert_eq!(raw.accepted(), 3);
    // -L and --reconnect do not go together.
    let out = run(&[&raw.url(), "-L", "--reconnect"], b"");
    out.expect_code(2);
}
