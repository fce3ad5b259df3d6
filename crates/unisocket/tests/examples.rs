//! Runs the examples that translate the sample code of the uni-app
//! documentation (`examples/seed_*.rs`) against the local test server, and
//! checks the exit status and the exact lines each one prints, and what the
//! server saw.
//!
//! The example binaries are built by this test itself (see [`example_path`]),
//! so `cargo test --test examples` never runs a missing or stale one.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use support::codec::{self, Message};
use support::{ServerConn, ServerOptions, TestServer};

/// How long one example may run before it is killed.
const RUN_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the server side may take to report what it saw.
const SERVER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the delayed server holds back its handshake response, so that
/// the sends made right after `connect_socket` happen while CONNECTING.
const HANDSHAKE_DELAY: Duration = Duration::from_millis(300);

/// The examples this file runs.
const EXAMPLES: &[&str] = &[
    "seed_connect_socket",
    "seed_socket_task",
    "seed_on_socket_open",
    "seed_on_socket_error",
    "seed_message_queue",
    "seed_on_socket_message",
    "seed_close_on_open",
    "exit_after_closed",
];

/// The path of the example binary `name`, built (once per test process) by
/// the cargo that runs these tests, with the same profile.
///
/// `cargo test` builds the examples before it runs the tests, but
/// `cargo test --test examples` does not, and a binary left in
/// `target/<profile>/examples/` may be stale; so the examples are built here
/// and their paths taken from cargo's own report.
async fn example_path(name: &str) -> PathBuf {
    static PATHS: OnceLock<Result<HashMap<String, PathBuf>, String>> = OnceLock::new();
    let paths = tokio::task::spawn_blocking(|| PATHS.get_or_init(build_examples).clone())
        .await
        .expect("building the examples panicked");
    match paths {
        Ok(paths) => paths
            .get(name)
            .unwrap_or_else(|| panic!("cargo reported no executable for example {name}"))
            .clone(),
        Err(e) => panic!("{e}"),
    }
}

/// Builds [`EXAMPLES`] with `cargo build --message-format=json` and returns
/// the executable of each.
fn build_examples() -> Result<HashMap<String, PathBuf>, String> {
    // target/<profile>/deps/examples-<hash>: the profile of this build.
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .and_then(|dir| dir.file_name())
        .and_then(|name| name.to_str())
        .map_or("debug", |name| name)
        .to_owned();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let mut cmd = std::process::Command::new(cargo);
    cmd.args([
        "build",
        "--message-format=json",
        "--manifest-path",
        manifest,
    ]);
    if profile != "debug" {
        cmd.args(["--profile", &profile]);
    }
    for name in EXAMPLES {
        cmd.args(["--example", name]);
    }
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run cargo to build the examples: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "building the examples failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let mut paths = HashMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_example = msg["reason"] == "compiler-artifact"
            && msg["target"]["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == "example"));
        if let (true, Some(name), Some(path)) = (
            is_example,
            msg["target"]["name"].as_str(),
            msg["executable"].as_str(),
        ) {
            paths.insert(name.to_owned(), PathBuf::from(path));
        }
    }
    Ok(paths)
}

/// What one run of an example produced.
struct Run {
    status: ExitStatus,
    lines: Vec<String>,
    stderr: String,
}

impl Run {
    /// Asserts the exit status and the exact stdout lines, in order.
    fn assert(&self, name: &str, success: bool, expected: &[String]) {
        assert_eq!(
            self.lines, expected,
            "{name}: unexpected output (status {}, stderr: {:?})",
            self.status, self.stderr
        );
        assert_eq!(
            self.status.success(),
            success,
            "{name}: exit status {} (stderr: {:?})",
            self.status,
            self.stderr
        );
        if success {
            assert_eq!(self.status.code(), Some(0), "{name}");
        } else {
            assert_eq!(self.status.code(), Some(1), "{name}");
        }
    }
}

/// Runs the example `name` with `args`; kills it after [`RUN_TIMEOUT`].
async fn run_example(name: &str, args: &[&str]) -> Run {
    let path = example_path(name).await;
    let child = tokio::process::Command::new(&path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    // On timeout the child is dropped, which kills it.
    let output = tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{name} did not exit within {RUN_TIMEOUT:?}; killed"))
        .unwrap_or_else(|e| panic!("waiting for {name}: {e}"));
    Run {
        status: output.status,
        lines: String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_owned)
            .collect(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn lines(expected: &[&str]) -> Vec<String> {
    expected.iter().map(|s| (*s).to_owned()).collect()
}

/// What the server saw of one connection.
#[derive(Debug)]
enum Seen {
    /// The opening handshake request.
    Request(codec::Request),
    /// A message from the client (text, binary, ping, pong or close).
    Message(Message),
    /// The connection ended without a close frame, and why.
    // Only read through `Debug`, in failure messages.
    #[allow(dead_code)]
    End(Option<String>),
}

/// An echo handler (as [`support::echo_handler`]) that reports everything
/// it sees on `seen`.
fn recording_echo(
    seen: mpsc::UnboundedSender<Seen>,
) -> impl Fn(ServerConn) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
       + Send
       + Sync
       + 'static {
    move |mut conn: ServerConn| {
        let seen = seen.clone();
        Box::pin(async move {
            let _ = seen.send(Seen::Request(conn.request.clone()));
            loop {
                let Some(msg) = conn.recv().await else {
                    let _ = seen.send(Seen::End(conn.last_error().map(str::to_owned)));
                    return;
                };
                let _ = seen.send(Seen::Message(msg.clone()));
                match msg {
                    Message::Text(s) => conn.send_text(&s).await,
                    Message::Binary(b) => conn.send_binary(&b).await,
                    Message::Ping(p) => conn.send_pong(&p).await,
                    Message::Pong(_) => {}
                    Message::Close(code, reason) => {
                        conn.send_close(code, &reason).await;
                        conn.shutdown().await;
                        return;
                    }
                }
            }
        })
    }
}

/// An echo server that reports what it sees.
async fn recording_server(opts: ServerOptions) -> (TestServer, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (TestServer::start(opts, recording_echo(tx)).await, rx)
}

/// Collects what the server saw until the client's close frame (or the end
/// of the connection).
async fn seen_until_close(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Vec<Seen> {
    let mut all = Vec::new();
    loop {
        let next = tokio::time::timeout(SERVER_TIMEOUT, rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!("the server saw no close within {SERVER_TIMEOUT:?}: {all:?}")
            });
        let Some(seen) = next else { return all };
        let end = matches!(seen, Seen::Message(Message::Close(..)) | Seen::End(_));
        all.push(seen);
        if end {
            return all;
        }
    }
}

/// The messages in `seen` (without the request).
fn messages(seen: &[Seen]) -> Vec<&Message> {
    seen.iter()
        .filter_map(|s| match s {
            Seen::Message(m) => Some(m),
            _ => None,
        })
        .collect()
}

/// The handshake request in `seen`.
fn request(seen: &[Seen]) -> &codec::Request {
    seen.iter()
        .find_map(|s| match s {
            Seen::Request(r) => Some(r),
            _ => None,
        })
        .expect("the server saw no handshake request")
}

/// A port on 127.0.0.1 where nothing listens: connections to it are refused.
struct ClosedPort {
    /// Bound but not listening, so that no other test's server can take
    /// the port while this one relies on it being closed (a listener bound
    /// and dropped would leave the port free for the next `bind(":0")`).
    _socket: tokio::net::TcpSocket,
    /// `ws://127.0.0.1:PORT/`.
    url: String,
    /// The `errMsg` a connection to it fails with (the OS's own wording of
    /// "refused", read from a probe connection).
    err_msg: String,
}

fn closed_port() -> ClosedPort {
    let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind 127.0.0.1:0");
    let addr = socket.local_addr().expect("local_addr");
    let refused = std::net::TcpStream::connect(addr).expect_err("the port should be closed");
    ClosedPort {
        _socket: socket,
        url: format!("ws://{addr}/"),
        err_msg: format!("connectSocket:fail connection refused by {addr}: {refused}"),
    }
}

/// A server that reads the opening handshake, waits [`HANDSHAKE_DELAY`],
/// answers it and then echoes text messages, reporting them on `seen`, and
/// answers a close frame.
async fn delayed_echo_server() -> (String, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let addr = support::raw_server(move |mut stream| {
        let seen = tx.clone();
        async move {
            let Some(head) = support::read_http_head(&mut stream).await else {
                return;
            };
            let Ok(Some((req, consumed))) = codec::parse_request(&head) else {
                let _ = seen.send(Seen::End(Some("bad handshake request".into())));
                return;
            };
            tokio::time::sleep(HANDSHAKE_DELAY).await;
            if stream
                .write_all(&codec::response_101(&req.key, None, &[]))
                .await
                .is_err()
            {
                return;
            }
            let _ = seen.send(Seen::Request(req));
            let mut codec = codec::ServerCodec::new();
            codec.feed(&head[consumed..]);
            let mut chunk = vec![0u8; 16 * 1024];
            loop {
                match codec.next_message() {
                    Ok(Some(msg)) => {
                        let _ = seen.send(Seen::Message(msg.clone()));
                        let reply = match msg {
                            Message::Text(s) => codec::server_text(&s),
                            Message::Binary(b) => codec::server_binary(&b),
                            Message::Ping(p) => codec::server_pong(&p),
                            Message::Pong(_) => continue,
                            Message::Close(code, reason) => {
                                let _ = stream.write_all(&codec::server_close(code, &reason)).await;
                                let _ = stream.shutdown().await;
                                return;
                            }
                        };
                        if stream.write_all(&reply).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => {
                        use tokio::io::AsyncReadExt;
                        match stream.read(&mut chunk).await {
                            Ok(n) if n > 0 => codec.feed(&chunk[..n]),
                            _ => {
                                let _ = seen.send(Seen::End(Some("EOF".into())));
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = seen.send(Seen::End(Some(e)));
                        return;
                    }
                }
            }
        }
    })
    .await;
    (format!("ws://{addr}/"), rx)
}

fn text(s: &str) -> Message {
    Message::Text(s.to_owned())
}

fn close_1000() -> Message {
    Message::Close(Some(1000), String::new())
}

// (1) uni.connectSocket({url, header, protocols, method})

#[tokio::test(flavor = "multi_thread")]
async fn seed_connect_socket_sends_header_and_protocol() {
    let opts = ServerOptions {
        protocols: vec!["protocol1".to_owned()],
        ..ServerOptions::default()
    };
    let (server, mut seen) = recording_server(opts).await;
    let run = run_example("seed_connect_socket", &[&server.url()]).await;
    run.assert(
        "seed_connect_socket",
        true,
        &lines(&[
            r#"onOpen: protocol="protocol1""#,
            r#"onClose: code=1000 reason="" wasClean=true"#,
        ]),
    );
    let seen = seen_until_close(&mut seen).await;
    let req = request(&seen);
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.protocols, ["protocol1"]);
    assert_eq!(req.path, "/");
    assert_eq!(messages(&seen), [&close_1000()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_connect_socket_reports_a_refused_connection() {
    let port = closed_port();
    let (url, err_msg) = (port.url.as_str(), port.err_msg.as_str());
    let reason = err_msg.trim_start_matches("connectSocket:fail ");
    let run = run_example("seed_connect_socket", &[url]).await;
    run.assert(
        "seed_connect_socket",
        false,
        &[
            format!("onError: {err_msg}"),
            format!("onClose: code=1006 reason={reason:?} wasClean=false"),
        ],
    );
}

// (2) var socketTask = uni.connectSocket({url, complete})

#[tokio::test(flavor = "multi_thread")]
async fn seed_socket_task_sends_receives_and_closes() {
    let (server, mut seen) = recording_server(ServerOptions::default()).await;
    let run = run_example("seed_socket_task", &[&server.url()]).await;
    run.assert(
        "seed_socket_task",
        true,
        &lines(&[
            "complete: connectSocket:ok",
            "onOpen",
            "send success: sendSocketMessage:ok",
            "onMessage: hello from the socket task",
            r#"onClose: code=1000 reason="" wasClean=true"#,
            "close success: closeSocket:ok",
        ]),
    );
    let seen = seen_until_close(&mut seen).await;
    assert_eq!(
        messages(&seen),
        [&text("hello from the socket task"), &close_1000()]
    );
}

// (3) uni.connectSocket + uni.onSocketOpen

#[tokio::test(flavor = "multi_thread")]
async fn seed_on_socket_open_logs_the_open() {
    let (server, mut seen) = recording_server(ServerOptions::default()).await;
    let run = run_example("seed_on_socket_open", &[&server.url()]).await;
    run.assert(
        "seed_on_socket_open",
        true,
        &lines(&["WebSocket connection is open!"]),
    );
    let seen = seen_until_close(&mut seen).await;
    assert_eq!(messages(&seen), [&close_1000()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_on_socket_open_fails_without_a_server() {
    let port = closed_port();
    let (url, err_msg) = (port.url.as_str(), port.err_msg.as_str());
    let run = run_example("seed_on_socket_open", &[url]).await;
    run.assert(
        "seed_on_socket_open",
        false,
        &[format!("connectSocket fail: {err_msg}")],
    );
}

// (4) uni.connectSocket + uni.onSocketOpen + uni.onSocketError

#[tokio::test(flavor = "multi_thread")]
async fn seed_on_socket_error_logs_a_refused_connection() {
    let port = closed_port();
    let (url, err_msg) = (port.url.as_str(), port.err_msg.as_str());
    let run = run_example("seed_on_socket_error", &[url]).await;
    run.assert(
        "seed_on_socket_error",
        true,
        &[format!(
            "WebSocket connection failed to open. Please check it! {err_msg}"
        )],
    );
}

/// The sample registers `on_socket_open` / `on_socket_error` right after
/// `connect_socket`; a refusal on loopback can close the task before that.
/// Such listeners go to the task made last and replay its error.
#[tokio::test(flavor = "multi_thread")]
async fn seed_on_socket_error_never_loses_the_error() {
    for i in 0..200 {
        let port = closed_port();
        let (url, err_msg) = (port.url.as_str(), port.err_msg.as_str());
        let run = run_example("seed_on_socket_error", &[url]).await;
        run.assert(
            &format!("seed_on_socket_error, run {i}"),
            true,
            &[format!(
                "WebSocket connection failed to open. Please check it! {err_msg}"
            )],
        );
    }
}

/// A global listener registered while no task is alive replays nothing of
/// the task that failed before (SPEC 3: global listeners are app-wide and
/// wait for the next task); the next task's failure reaches it. A program
/// that connects first and registers after should use the task's own
/// `on_error`, which does replay (`seed_on_socket_open`).
#[tokio::test(flavor = "multi_thread")]
async fn global_error_listener_registered_after_a_fast_failure_hears_the_next_task() {
    let port = closed_port();
    let (url, err_msg) = (port.url.as_str(), port.err_msg.as_str());
    let task = unisocket::connect_socket(unisocket::ConnectOptions::new(url));
    let deadline = tokio::time::Instant::now() + SERVER_TIMEOUT;
    while task.ready_state() != unisocket::ReadyState::Closed {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the connection to a closed port did not fail"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    unisocket::on_socket_error(move |res| {
        let _ = tx.send(res.err_msg.clone());
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(rx.try_recv().is_err(), "a dead task's error was replayed");
    let _next = unisocket::connect_socket(unisocket::ConnectOptions::new(url));
    let got = tokio::time::timeout(SERVER_TIMEOUT, rx.recv())
        .await
        .expect("on_socket_error was never called for the next task")
        .expect("listener dropped");
    assert_eq!(got, err_msg);
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_on_socket_error_logs_the_open_with_a_server() {
    let (server, mut seen) = recording_server(ServerOptions::default()).await;
    let run = run_example("seed_on_socket_error", &[&server.url()]).await;
    run.assert(
        "seed_on_socket_error",
        true,
        &lines(&["WebSocket connection is open!"]),
    );
    let seen = seen_until_close(&mut seen).await;
    assert_eq!(messages(&seen), [&close_1000()]);
}

// (5) the sendSocketMessage queue before open

/// The lines of `seed_message_queue`, with `open` as its open line.
fn message_queue_lines(open: &str) -> Vec<String> {
    lines(&[
        "queued: message 1",
        "queued: message 2",
        "queued: message 3",
        open,
        "sent: message 1",
        "sent: message 2",
        "sent: message 3",
        "received: message 1",
        "received: message 2",
        "received: message 3",
        "sent: message 4",
        "received: message 4",
        "close: closeSocket:ok",
    ])
}

fn message_queue_server_side(seen: &[Seen]) {
    let expected: Vec<Message> = (1..=4)
        .map(|i| text(&format!("message {i}")))
        .chain([close_1000()])
        .collect();
    assert_eq!(messages(seen), expected.iter().collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_message_queue_flushes_the_hand_written_queue_on_open() {
    let (url, mut seen) = delayed_echo_server().await;
    let run = run_example("seed_message_queue", &[&url]).await;
    run.assert(
        "seed_message_queue",
        true,
        &message_queue_lines("open: flushing 3 queued messages"),
    );
    message_queue_server_side(&seen_until_close(&mut seen).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_message_queue_builtin_queue_until_open() {
    let (url, mut seen) = delayed_echo_server().await;
    let run = run_example("seed_message_queue", &[&url, "builtin"]).await;
    run.assert(
        "seed_message_queue builtin",
        true,
        &message_queue_lines("open: unisocket flushes its queue"),
    );
    message_queue_server_side(&seen_until_close(&mut seen).await);
}

// (6) uni.onSocketMessage

#[tokio::test(flavor = "multi_thread")]
async fn seed_on_socket_message_logs_what_the_server_sends() {
    let (tx, mut seen) = mpsc::unbounded_channel();
    let server = TestServer::start(ServerOptions::default(), move |mut conn: ServerConn| {
        let seen = tx.clone();
        async move {
            // The server speaks first: a text and a binary message, then it closes.
            conn.send_text("Hello from the server").await;
            conn.send_binary(&[1, 2, 3]).await;
            conn.send_close(Some(1000), "bye").await;
            while let Some(msg) = conn.recv().await {
                let close = matches!(msg, Message::Close(..));
                let _ = seen.send(Seen::Message(msg));
                if close {
                    conn.shutdown().await;
                    return;
                }
            }
            let _ = seen.send(Seen::End(conn.last_error().map(str::to_owned)));
        }
    })
    .await;
    let run = run_example("seed_on_socket_message", &[&server.url()]).await;
    run.assert(
        "seed_on_socket_message",
        true,
        &lines(&[
            "server content received:Hello from the server",
            "server content received:[1, 2, 3]",
            r#"closed: code=1000 reason="bye" wasClean=true"#,
        ]),
    );
    let seen = seen_until_close(&mut seen).await;
    let replies = messages(&seen);
    assert!(
        matches!(replies[..], [Message::Close(Some(1000), _)]),
        "the client should answer the close with 1000: {seen:?}"
    );
}

// (7) uni.closeSocket inside uni.onSocketOpen + uni.onSocketClose

/// A program that exits right after `closed()` returns has seen its
/// `on_close` listener run, slow as it is.
#[tokio::test(flavor = "multi_thread")]
async fn a_program_that_exits_after_closed_loses_no_on_close_output() {
    let (server, _seen) = recording_server(ServerOptions::default()).await;
    let run = run_example("exit_after_closed", &[&server.url()]).await;
    run.assert(
        "exit_after_closed",
        true,
        &lines(&["on_close: 1000", "closed() returned: 1000"]),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_close_on_open_logs_the_close() {
    let (server, mut seen) = recording_server(ServerOptions::default()).await;
    let run = run_example("seed_close_on_open", &[&server.url()]).await;
    run.assert(
        "seed_close_on_open",
        true,
        &lines(&[r#"WebSocket is closed! code=1000 reason="" wasClean=true"#]),
    );
    let seen = seen_until_close(&mut seen).await;
    assert_eq!(messages(&seen), [&close_1000()]);
}
