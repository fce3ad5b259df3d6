//! The `unisocket` binary against third-party servers: Node `ws` 8 and
//! Python `websockets`, started from the helper scripts of the library's
//! interop suite (`crates/unisocket/tests/interop`: `ws_server.js` and
//! `py_server.py`, which echo, and close with a code on `close CODE
//! REASON`).
//!
//! Every test here is ignored: `.ci/run` installs `ws` (npm, into
//! `crates/unisocket/tests/interop/node_modules`) and `websockets` (PyPI)
//! and runs them with `--ignored`. A test whose software is missing fails
//! and names what to install. Every child is killed after at most `LIMIT`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// The library's interop helpers (and `node_modules` with `ws`).
const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../unisocket/tests/interop");

/// The longest any child may run.
const LIMIT: Duration = Duration::from_secs(60);

/// A server from one of the helper scripts, in a directory of its own;
/// killed, and the directory removed, on drop.
struct Peer {
    name: &'static str,
    child: Child,
    dir: PathBuf,
    url: String,
}

impl Peer {
    /// Runs `program script PORT_FILE args` and waits for the port the
    /// script writes.
    fn start(name: &'static str, program: &str, script: &str, args: &[&str]) -> Peer {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "unisocket-cli-interop-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let port_file = dir.join("port");
        let log = std::fs::File::create(dir.join("log")).unwrap();
        let child = Command::new(program)
            .arg(Path::new(DIR).join(script))
            .arg(&port_file)
            .args(args)
            // The scripts exit when stdin closes.
            .stdin(Stdio::piped())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({program}): {e}"));
        let mut peer = Peer {
            name,
            child,
            dir,
            url: String::new(),
        };
        let started = Instant::now();
        let port: u16 = loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                break port;
            }
            if let Ok(Some(status)) = peer.child.try_wait() {
                panic!("{name} exited ({status}); its output:\n{}", peer.log());
            }
            assert!(
                started.elapsed() < LIMIT,
                "{name} did not start; its output:\n{}",
                peer.log()
            );
            thread::sleep(Duration::from_millis(30));
        };
        peer.url = format!("ws://127.0.0.1:{port}/");
        peer
    }

    /// Node `ws` (`ws_server.js`).
    fn node() -> Peer {
        assert!(
            Path::new(DIR).join("node_modules/ws").is_dir(),
            "the npm package `ws` is not installed: npm install --prefix {DIR} --no-save ws@8.18.3"
        );
        Peer::start("node ws", "node", "ws_server.js", &[])
    }

    /// Python `websockets` (`py_server.py websockets`).
    fn websockets() -> Peer {
        Peer::start(
            "python websockets",
            "python3",
            "py_server.py",
            &["websockets"],
        )
    }

    /// What the server printed (Node `ws` logs each close: `close CODE REASON`).
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    fn wait_log(&self, needle: &str) {
        let started = Instant::now();
        while !self.log().contains(needle) {
            assert!(
                started.elapsed() < LIMIT,
                "{} did not log {needle:?}; its output:\n{}",
                self.name,
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("--- output of {} ---\n{}", self.name, self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a run of the binary printed.
struct Run {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
}

impl Run {
    #[track_caller]
    fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.status.code(),
            Some(code),
            "stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&self.stdout),
            self.stderr
        );
        self
    }

    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Runs the binary with `args` and `stdin` as its whole input (proxy
/// variables removed); kills it at `LIMIT`.
fn run(args: &[&str], stdin: &[u8]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_unisocket"));
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        cmd.env_remove(var);
    }
    let mut child = cmd
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start unisocket");
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    // A broken pipe (the client exits before reading it all) is not an error.
    let writer = thread::spawn(move || drop(input.write_all(&stdin)));
    let reader = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = reader(Box::new(child.stdout.take().unwrap()));
    let err = reader(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("unisocket {args:?} did not exit within {LIMIT:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let _ = writer.join();
    Run {
        status,
        stdout: out.join().unwrap(),
        stderr: String::from_utf8_lossy(&err.join().unwrap()).into_owned(),
    }
}

/// Both servers.
fn peers() -> [Peer; 2] {
    [Peer::node(), Peer::websockets()]
}

#[test]
#[ignore = "needs Node ws / Python websockets: run by .ci/run"]
fn piped_lines_all_come_back_in_order_from_node_ws() {
    let peer = Peer::node();
    let lines: String = (1..=100_000).map(|n| format!("{n}\n")).collect();
    let out = run(&[&peer.url], lines.as_bytes());
    out.expect_code(0);
    // Not assert_eq: a failure would print megabytes.
    let got = out.stdout_text();
    assert!(
        got == lines,
        "{} lines back of 100000; stderr:\n{}",
        got.lines().count(),
        out.stderr
    );
    peer.wait_log("close 1000");
}

#[test]
#[ignore = "needs Node ws / Python websockets: run by .ci/run"]
fn count_stops_after_n_messages_with_a_normal_close() {
    for peer in peers() {
        let out = run(
            &[
                &peer.url, "-x", "one", "-x", "two", "-x", "three", "-n", "2", "-w", "10",
            ],
            b"",
        );
        out.expect_code(0);
        assert_eq!(out.stdout_text(), "one\ntwo\n", "{}", peer.name);
        assert!(
            out.stderr.contains("closed 1000 (normal closure)"),
            "{}: {}",
            peer.name,
            out.stderr
        );
    }
}

#[test]
#[ignore = "needs Node ws / Python websockets: run by .ci/run"]
fn a_server_close_with_1008_exits_5_with_fail_on_close_code() {
    for peer in peers() {
        let args = [&peer.url[..], "-x", "close 1008 policy", "--no-stdin"];
        let plain = run(&args, b"");
        let failing = run(&[&args[..], &["--fail-on-close-code"]].concat(), b"");
        for out in [&plain, &failing] {
            assert!(
                out.stderr
                    .contains("closed 1008 (policy violation) \"policy\""),
                "{}: {}",
                peer.name,
                out.stderr
            );
        }
        plain.expect_code(0);
        failing.expect_code(5);
    }
}

#[test]
#[ignore = "needs Node ws / Python websockets: run by .ci/run"]
fn ping_timeout_keeps_an_answering_server_and_drops_one_that_stops() {
    // Pings every 0.2 s, answered, while the client waits 1 s for more replies.
    for peer in peers() {
        let out = run(
            &[&peer.url, "-x", "hello", "-w", "1", "--ping-timeout", "0.2"],
            b"",
        );
        out.expect_code(0);
        assert_eq!(out.stdout_text(), "hello\n", "{}", peer.name);
    }
    // websockets stops reading the connection on "mute": the pings wait
    // in its socket, unanswered.
    let peer = Peer::websockets();
    let out = run(
        &[
            &peer.url,
            "-x",
            "mute",
            "--no-stdin",
            "--ping-timeout",
            "0.3",
        ],
        b"",
    );
    out.expect_code(4);
    assert!(
        out.stderr.contains(
            "the server did not answer a ping within 0.3 s (--ping-timeout): the connection is \
             taken as dead"
        ),
        "{}",
        out.stderr
    );
}

#[test]
#[ignore = "needs Node ws / Python websockets: run by .ci/run"]
fn binary_file_comes_back_byte_for_byte() {
    // Every byte value, then 1 MiB of pseudo-random bytes.
    let mut bytes: Vec<u8> = (0..=255).collect();
    let mut x: u32 = 0x9E37_79B9;
    bytes.extend((0..1 << 20).map(|_| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x as u8
    }));
    for peer in peers() {
        let file = peer.dir.join("blob.bin");
        std::fs::write(&file, &bytes).unwrap();
        let out = run(
            &[
                &peer.url,
                "-b",
                "--file",
                file.to_str().unwrap(),
                "--binary-format",
                "raw",
            ],
            b"",
        );
        out.expect_code(0);
        assert!(
            out.stdout == bytes,
            "{}: {} bytes back of {}; stderr:\n{}",
            peer.name,
            out.stdout.len(),
            bytes.len(),
            out.stderr
        );
    }
}
