//! The public API's contract (SPEC sections 2 and 3) over real sockets on
//! 127.0.0.1: input checks that never touch the network, the exact `errMsg`
//! of every outcome, timeouts, event order and delivery guarantees, late
//! listeners, `buffered_amount` and the open event.
//!
//! Every test runs under an overall timeout so that a bug shows up as a
//! failure, never as a hang. The default connection timeout is
//! process-global: only `global_network_timeout_and_manifest` changes it, and
//! every other connection here passes its own `timeout` so that it is immune.

mod support;

use support::events::{count, entries, log_events, log_events_into, text_of, Log};
use support::{answer_close, bounded, wait_until, within};

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, Notify};

use support::codec::{self, Message};
use support::{ServerConn, ServerOptions, TestServer};
use unisocket::{
    connect_socket, CloseEvent, CloseOptions, ConnectOptions, Data, ErrorKind, Manifest, OpenEvent,
    ReadyState, SendOptions, SocketError,
};

/// The explicit connection timeout of every connection of this file (except
/// in the test of the global default).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `ConnectOptions` with an explicit timeout (immune to the global default).
fn opts(url: impl Into<String>) -> ConnectOptions {
    ConnectOptions::new(url).timeout(CONNECT_TIMEOUT)
}

/// What the `success` / `fail` / `complete` callbacks of one call saw.
#[derive(Debug, Default)]
struct Calls {
    success: Vec<String>,
    fail: Vec<(String, ErrorKind)>,
    complete: Vec<Result<String, String>>,
}

type Rec = Arc<Mutex<Calls>>;

/// Adds recording `success`, `fail` and `complete` callbacks to any of the
/// three option structs.
macro_rules! recorded {
    ($opts:expr) => {{
        let rec: Rec = Arc::default();
        let (a, b, c) = (rec.clone(), rec.clone(), rec.clone());
        let o = $opts
            .success(move |ok| a.lock().unwrap().success.push(ok.err_msg.clone()))
            .fail(move |e| {
                b.lock()
                    .unwrap()
                    .fail
                    .push((e.err_msg().to_owned(), e.kind()))
            })
            .complete(move |r| {
                c.lock().unwrap().complete.push(match r {
                    Ok(ok) => Ok(ok.err_msg.clone()),
                    Err(e) => Err(e.err_msg().to_owned()),
                })
            });
        (o, rec)
    }};
}

/// Waits until the call settled, then checks that `fail` ran exactly once
/// with `msg` and `kind`, `success` never, and `complete` once with the error.
async fn assert_failed_once(rec: &Rec, msg: &str, kind: ErrorKind) {
    wait_until("the complete callback", || {
        !rec.lock().unwrap().complete.is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let calls = rec.lock().unwrap();
    assert_eq!(calls.fail, [(msg.to_owned(), kind)], "{calls:?}");
    assert!(calls.success.is_empty(), "{calls:?}");
    assert_eq!(calls.complete, [Err(msg.to_owned())], "{calls:?}");
}

/// Waits until the call settled, then checks that `success` ran exactly once
/// with `msg`, `fail` never, and `complete` once with the success.
async fn assert_succeeded_once(rec: &Rec, msg: &str) {
    wait_until("the complete callback", || {
        !rec.lock().unwrap().complete.is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let calls = rec.lock().unwrap();
    assert_eq!(calls.success, [msg.to_owned()], "{calls:?}");
    assert!(calls.fail.is_empty(), "{calls:?}");
    assert_eq!(calls.complete, [Ok(msg.to_owned())], "{calls:?}");
}

/// A TCP server that accepts, reads the request and never answers; it
/// counts accepted connections.
async fn silent_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = accepted.clone();
    let addr = support::raw_server(move |mut stream| {
        a.fetch_add(1, Ordering::SeqCst);
        async move {
            let _ = support::read_http_head(&mut stream).await;
            std::future::pending::<()>().await;
        }
    })
    .await;
    (addr, accepted)
}

/// A server that holds each handshake until `gate` is notified, then
/// answers 101 and reports every data message it receives; it answers a
/// close frame with the same code and reason.
struct GatedServer {
    addr: SocketAddr,
    gate: Arc<Notify>,
    messages: mpsc::UnboundedReceiver<Message>,
}

async fn gated_server() -> GatedServer {
    let gate = Arc::new(Notify::new());
    let (tx, messages) = mpsc::unbounded_channel();
    let g = gate.clone();
    let addr = support::raw_server(move |mut stream| {
        let (gate, tx) = (g.clone(), tx.clone());
        async move {
            let Some(head) = support::read_http_head(&mut stream).await else {
                return;
            };
            let Ok(Some((request, consumed))) = codec::parse_request(&head) else {
                return;
            };
            gate.notified().await;
            if stream
                .write_all(&codec::response_101(&request.key, None, &[]))
                .await
                .is_err()
            {
                return;
            }
            let mut codec = codec::ServerCodec::new();
            codec.feed(&head[consumed..]);
            let mut chunk = vec![0u8; 16 * 1024];
            loop {
                match codec.next_message() {
                    Ok(Some(Message::Close(code, reason))) => {
                        let _ = stream.write_all(&codec::server_close(code, &reason)).await;
                        let _ = stream.shutdown().await;
                        return;
                    }
                    Ok(Some(Message::Ping(p))) => {
                        let _ = stream.write_all(&codec::server_pong(&p)).await;
                    }
                    Ok(Some(m)) => {
                        let _ = tx.send(m);
                    }
                    Ok(None) => {
                        use tokio::io::AsyncReadExt;
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => codec.feed(&chunk[..n]),
                        }
                    }
                    Err(_) => return,
                }
            }
        }
    })
    .await;
    GatedServer {
        addr,
        gate,
        messages,
    }
}

/// A server that discards data messages, answers the close, and reports
/// the close frame it received.
async fn close_reporting_server() -> (TestServer, mpsc::UnboundedReceiver<(Option<u16>, String)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let server = TestServer::start(ServerOptions::default(), move |mut conn| {
        let tx = tx.clone();
        async move {
            if let Some(close) = answer_close(&mut conn).await {
                let _ = tx.send(close);
            }
        }
    })
    .await;
    (server, rx)
}

// 1. Bad input fails at once and never touches the network.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_connect_input_fails_at_once_without_network() {
    within(async {
        let (addr, accepted) = silent_server().await;
        let ws = format!("ws://{addr}/");
        let http = format!("http://{addr}/");
        let not_token = |name: &str| {
            format!("connectSocket:fail invalid header name {name:?}: it must be an HTTP token")
        };
        let bad_value =
            "connectSocket:fail invalid value for header X-A: it contains CR, LF or another control byte";
        let referer = "connectSocket:fail the Referer header cannot be set";
        let cases: Vec<(&str, ConnectOptions, String, ErrorKind)> = vec![
            (
                "unparsable URL",
                ConnectOptions::new("not a url"),
                r#"connectSocket:fail invalid URL "not a url": relative URL without a base"#
                    .to_owned(),
                ErrorKind::InvalidUrl,
            ),
            (
                "scheme htp",
                ConnectOptions::new("htp://x"),
                r#"connectSocket:fail invalid URL "htp://x": scheme must be ws or wss"#.to_owned(),
                ErrorKind::InvalidUrl,
            ),
            (
                "scheme http",
                ConnectOptions::new(http.clone()),
                format!(r#"connectSocket:fail invalid URL "{http}": scheme must be ws or wss"#),
                ErrorKind::InvalidUrl,
            ),
            (
                "Referer",
                opts(&ws).header("Referer", "http://x/"),
                referer.to_owned(),
                ErrorKind::InvalidHeader,
            ),
            (
                "referer",
                opts(&ws).header("X-Ok", "1").header("referer", "http://x/"),
                referer.to_owned(),
                ErrorKind::InvalidHeader,
            ),
            (
                "REFERER",
                opts(&ws).header("REFERER", "http://x/"),
                referer.to_owned(),
                ErrorKind::InvalidHeader,
            ),
            (
                "header name with a space",
                opts(&ws).header("X A", "1"),
                not_token("X A"),
                ErrorKind::InvalidHeader,
            ),
            (
                "header name with a colon",
                opts(&ws).header("X:A", "1"),
                not_token("X:A"),
                ErrorKind::InvalidHeader,
            ),
            (
                "empty header name",
                opts(&ws).header("", "1"),
                not_token(""),
                ErrorKind::InvalidHeader,
            ),
            (
                "header value with CR",
                opts(&ws).header("X-A", "a\rb"),
                bad_value.to_owned(),
                ErrorKind::InvalidHeader,
            ),
            (
                "header value with LF",
                opts(&ws).header("X-A", "a\nX-Injected: 1"),
                bad_value.to_owned(),
                ErrorKind::InvalidHeader,
            ),
            (
                "header value with NUL",
                opts(&ws).header("X-A", "a\0b"),
                bad_value.to_owned(),
                ErrorKind::InvalidHeader,
            ),
            (
                "empty subprotocol",
                opts(&ws).protocols(["chat", ""]),
                "connectSocket:fail a subprotocol cannot be empty".to_owned(),
                ErrorKind::InvalidProtocol,
            ),
            (
                "duplicate subprotocol",
                opts(&ws).protocols(["chat", "v2", "chat"]),
                r#"connectSocket:fail subprotocol "chat" is listed twice"#.to_owned(),
                ErrorKind::InvalidProtocol,
            ),
            (
                "subprotocol with a space",
                opts(&ws).protocols(["a b"]),
                r#"connectSocket:fail invalid subprotocol "a b": it must be an HTTP token"#
                    .to_owned(),
                ErrorKind::InvalidProtocol,
            ),
            (
                "subprotocol with a comma",
                opts(&ws).protocols(["a,b"]),
                r#"connectSocket:fail invalid subprotocol "a,b": it must be an HTTP token"#
                    .to_owned(),
                ErrorKind::InvalidProtocol,
            ),
        ];
        for (what, options, msg, kind) in cases {
            let (options, rec) = recorded!(options);
            let task = connect_socket(options);
            // "At once": the callbacks have run when connect_socket returns.
            {
                let calls = rec.lock().unwrap();
                assert_eq!(calls.fail, [(msg.clone(), kind)], "{what}: {calls:?}");
                assert!(calls.success.is_empty(), "{what}: {calls:?}");
                assert_eq!(calls.complete, [Err(msg.clone())], "{what}: {calls:?}");
            }
            assert_eq!(task.ready_state(), ReadyState::Closed, "{what}");
            let err = bounded(what, task.clone()).await.expect_err(what);
            assert_eq!(err.err_msg(), msg, "{what}");
            assert_eq!(err.to_string(), msg, "{what}");
            assert_eq!(err.kind(), kind, "{what}");
            let err = bounded(what, task.opened()).await.expect_err(what);
            assert_eq!(err.err_msg(), msg, "{what}");
            // The events happened too: late listeners see them once.
            let log = log_events(&task);
            wait_until("the late close event", || count(&log, "close:") == 1).await;
            let log = entries(&log);
            assert_eq!(log.len(), 2, "{what}: {log:?}");
            assert_eq!(log[0], format!("error:{msg}"), "{what}");
            assert!(log[1].starts_with("close:1006:"), "{what}: {log:?}");
            assert_eq!(task.recv().await, None, "{what}");
            // The callbacks do not run again.
            tokio::time::sleep(Duration::from_millis(10)).await;
            assert_eq!(rec.lock().unwrap().fail.len(), 1, "{what}");
            assert_eq!(rec.lock().unwrap().complete.len(), 1, "{what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            0,
            "invalid input reached the network"
        );
        // The counter works: a valid attempt is accepted.
        let task = connect_socket(opts(&ws));
        wait_until("the valid attempt", || accepted.load(Ordering::SeqCst) == 1).await;
        bounded("abort", task.close(CloseOptions::default()))
            .await
            .expect("abort");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_codes_and_reasons_are_checked() {
    within(async {
        let server = TestServer::echo().await;
        let task = bounded("connect", connect_socket(opts(server.url())))
            .await
            .expect("connect");
        for code in [0, 999, 1001, 1002, 1005, 1006, 1015, 2999, 5000, u16::MAX] {
            let (options, rec) = recorded!(CloseOptions::default().code(code));
            let msg =
                format!("closeSocket:fail close code {code} is not allowed: use 1000 or 3000-4999");
            let err = bounded("close", task.close(options)).await.unwrap_err();
            assert_eq!(err.err_msg(), msg);
            assert_eq!(err.kind(), ErrorKind::InvalidArgument);
            assert_failed_once(&rec, &msg, ErrorKind::InvalidArgument).await;
        }
        // 41 × "中" is 123 bytes; one more byte makes 124.
        let reason = format!("{}a", "中".repeat(41));
        assert_eq!(reason.len(), 124);
        let (options, rec) = recorded!(CloseOptions::default().reason(reason));
        let msg = "closeSocket:fail close reason is 124 bytes of UTF-8; the limit is 123";
        let err = bounded("close", task.close(options)).await.unwrap_err();
        assert_eq!(err.err_msg(), msg);
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert_failed_once(&rec, msg, ErrorKind::InvalidArgument).await;
        assert_eq!(task.ready_state(), ReadyState::Open);
        task.send("still open").await.expect("send");
        assert_eq!(
            bounded("echo", task.recv()).await,
            Some(Data::from("still open"))
        );
        drop(task);

        // Allowed codes, and a reason of exactly 123 bytes, reach the server.
        let (server, mut closes) = close_reporting_server().await;
        for (code, reason) in [
            (1000, String::new()),
            (3000, "中".repeat(41)),
            (4999, "bye".to_owned()),
        ] {
            let task = bounded("connect", connect_socket(opts(server.url())))
                .await
                .expect("connect");
            let log = log_events(&task);
            let (options, rec) = recorded!(CloseOptions::default().code(code).reason(&reason));
            let ok = bounded("close", task.close(options))
                .await
                .unwrap_or_else(|e| panic!("close {code}: {e}"));
            assert_eq!(ok.err_msg, "closeSocket:ok");
            assert_succeeded_once(&rec, "closeSocket:ok").await;
            assert_eq!(task.ready_state(), ReadyState::Closed);
            let seen = bounded("the server's view", closes.recv()).await;
            assert_eq!(seen, Some((Some(code), reason.clone())));
            wait_until("close event", || count(&log, "close:") == 1).await;
            assert_eq!(
                entries(&log),
                ["open:".to_owned(), format!("close:{code}:{reason}:true")]
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_before_open_fails_unless_queued() {
    within(async {
        const NOT_CONNECTED: &str = "sendSocketMessage:fail WebSocket is not connected";
        // Without queue_until_open: fails at once, the task stays CONNECTING.
        let (addr, accepted) = silent_server().await;
        let task = connect_socket(opts(format!("ws://{addr}/")));
        assert_eq!(task.ready_state(), ReadyState::Connecting);
        let (options, rec) = recorded!(SendOptions::new("too early"));
        let err = bounded("send", task.send(options)).await.unwrap_err();
        assert_eq!(err.err_msg(), NOT_CONNECTED);
        assert_eq!(err.kind(), ErrorKind::NotConnected);
        assert_failed_once(&rec, NOT_CONNECTED, ErrorKind::NotConnected).await;
        assert_eq!(task.buffered_amount(), 0);
        wait_until("the attempt", || accepted.load(Ordering::SeqCst) == 1).await;
        assert_eq!(task.ready_state(), ReadyState::Connecting);
        bounded("abort", task.close(CloseOptions::default()))
            .await
            .expect("abort");

        // With queue_until_open: held, then sent in order once open.
        let mut server = gated_server().await;
        let task = connect_socket(opts(format!("ws://{}/", server.addr)).queue_until_open(true));
        let mut completions = Vec::new();
        let mut recs = Vec::new();
        for i in 0..5 {
            assert_eq!(task.ready_state(), ReadyState::Connecting);
            let data = if i % 2 == 0 {
                Data::from(format!("q{i}"))
            } else {
                Data::from(format!("q{i}").into_bytes())
            };
            let (options, rec) = recorded!(SendOptions::new(data));
            completions.push(task.send(options));
            recs.push(rec);
        }
        assert!(task.buffered_amount() > 0);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(task.ready_state(), ReadyState::Connecting);
        for rec in &recs {
            assert!(
                rec.lock().unwrap().complete.is_empty(),
                "a queued send settled before open"
            );
        }
        server.gate.notify_one();
        for i in 0..5 {
            let got = bounded("a queued message", server.messages.recv())
                .await
                .expect("message");
            let want = if i % 2 == 0 {
                Message::Text(format!("q{i}"))
            } else {
                Message::Binary(format!("q{i}").into_bytes())
            };
            assert_eq!(got, want, "message {i}");
        }
        for (completion, rec) in completions.into_iter().zip(&recs) {
            let ok = bounded("queued send", completion)
                .await
                .expect("queued send");
            assert_eq!(ok.err_msg, "sendSocketMessage:ok");
            assert_succeeded_once(rec, "sendSocketMessage:ok").await;
        }
        assert_eq!(task.ready_state(), ReadyState::Open);
        bounded("close", task.close(CloseOptions::default()))
            .await
            .expect("close");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_after_close_fails() {
    within(async {
        const NOT_CONNECTED: &str = "sendSocketMessage:fail WebSocket is not connected";
        let server = TestServer::echo().await;
        for queue in [false, true] {
            let task = bounded(
                "connect",
                connect_socket(opts(server.url()).queue_until_open(queue)),
            )
            .await
            .expect("connect");
            bounded("close", task.close(CloseOptions::default()))
                .await
                .expect("close");
            assert_eq!(task.ready_state(), ReadyState::Closed);
            let (options, rec) = recorded!(SendOptions::new("too late"));
            let err = bounded("send", task.send(options)).await.unwrap_err();
            assert_eq!(err.err_msg(), NOT_CONNECTED);
            assert_eq!(err.kind(), ErrorKind::NotConnected);
            assert_failed_once(&rec, NOT_CONNECTED, ErrorKind::NotConnected).await;
            // A second close fails too, but a valid one is still checked first.
            let err = bounded("close", task.close(CloseOptions::default()))
                .await
                .unwrap_err();
            assert_eq!(err.err_msg(), "closeSocket:fail WebSocket is not connected");
            assert_eq!(err.kind(), ErrorKind::NotConnected);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_err_msgs() {
    within(async {
        let mut server = gated_server().await;
        let opened = Arc::new(AtomicUsize::new(0));
        let (options, rec) = recorded!(opts(format!("ws://{}/", server.addr)));
        let task = connect_socket(options);
        let o = opened.clone();
        task.on_open(move |_| {
            o.fetch_add(1, Ordering::SeqCst);
        });
        // connectSocket:ok fires at once, before the handshake completes.
        {
            let calls = rec.lock().unwrap();
            assert_eq!(calls.success, ["connectSocket:ok"], "{calls:?}");
            assert_eq!(calls.complete, [Ok("connectSocket:ok".to_owned())]);
            assert!(calls.fail.is_empty());
        }
        assert_eq!(task.ready_state(), ReadyState::Connecting);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(opened.load(Ordering::SeqCst), 0);
        server.gate.notify_one();
        let task = bounded("open", task).await.expect("open");
        // (The await may resolve just before the listener has run.)
        wait_until("on_open", || opened.load(Ordering::SeqCst) == 1).await;

        let (options, rec) = recorded!(SendOptions::new("hi"));
        let ok = bounded("send", task.send(options)).await.expect("send");
        assert_eq!(ok.err_msg, "sendSocketMessage:ok");
        assert_succeeded_once(&rec, "sendSocketMessage:ok").await;
        assert_eq!(
            bounded("message", server.messages.recv()).await,
            Some(Message::Text("hi".into()))
        );

        let (options, close_rec) = recorded!(CloseOptions::default());
        let ok = bounded("close", task.close(options)).await.expect("close");
        assert_eq!(ok.err_msg, "closeSocket:ok");
        assert_succeeded_once(&close_rec, "closeSocket:ok").await;
        // The connect callbacks never run again (no late `fail`).
        tokio::time::sleep(Duration::from_millis(50)).await;
        let calls = rec.lock().unwrap();
        assert_eq!(calls.success.len(), 1);
        assert!(calls.fail.is_empty(), "{calls:?}");
        assert_eq!(calls.complete.len(), 1);
    })
    .await;
}

// 2. Timeouts.

/// Restores the 60 s default even when the test fails.
struct RestoreTimeout;

impl Drop for RestoreTimeout {
    fn drop(&mut self) {
        unisocket::set_network_timeout(Duration::from_secs(60));
    }
}

/// Connects to a silent server with `options` and checks that `fail`,
/// `on_error` and `on_close` report a timeout after `ms`, error first.
async fn expect_timeout(options: ConnectOptions, ms: u64) {
    let msg = format!("connectSocket:fail timed out after {ms} ms");
    let (options, rec) = recorded!(options);
    let task = connect_socket(options);
    let log = log_events(&task);
    let err = bounded("the timeout", task.clone())
        .await
        .expect_err("must time out");
    // Which timeout applied is in the message; that it fires at its time
    // and not before is checked on simulated time (timers.rs).
    assert_eq!(err.err_msg(), msg);
    assert_eq!(err.kind(), ErrorKind::Timeout);
    wait_until("the close event", || count(&log, "close:") == 1).await;
    let log = entries(&log);
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0], format!("error:{msg}"));
    assert!(log[1].starts_with("close:1006:"), "{log:?}");
    assert!(log[1].ends_with(":false"), "{log:?}");
    assert_eq!(task.ready_state(), ReadyState::Closed);
    // success ran at once (the attempt was under way), and only success:
    // the timeout went to on_error and on_close.
    assert_succeeded_once(&rec, "connectSocket:ok").await;
}

/// The only test of this file that changes the process-global default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_network_timeout_and_manifest() {
    within(async {
        let _restore = RestoreTimeout;
        let (addr, _) = silent_server().await;
        let url = format!("ws://{addr}/");
        assert_eq!(unisocket::network_timeout(), Duration::from_secs(60));

        unisocket::set_network_timeout(Duration::from_millis(300));
        assert_eq!(unisocket::network_timeout(), Duration::from_millis(300));
        expect_timeout(ConnectOptions::new(&url), 300).await;

        let manifest =
            Manifest::from_json(r#"{"networkTimeout":{"connectSocket":250}}"#).expect("manifest");
        assert_eq!(
            manifest.connect_socket_timeout(),
            Some(Duration::from_millis(250))
        );
        manifest.apply();
        assert_eq!(unisocket::network_timeout(), Duration::from_millis(250));
        expect_timeout(ConnectOptions::new(&url), 250).await;

        // ConnectOptions::timeout overrides the global default.
        expect_timeout(
            ConnectOptions::new(&url).timeout(Duration::from_millis(400)),
            400,
        )
        .await;

        // A manifest without the setting leaves the default alone.
        Manifest::from_json("{}").expect("manifest").apply();
        assert_eq!(unisocket::network_timeout(), Duration::from_millis(250));

        unisocket::set_network_timeout(Duration::from_secs(60));
        assert_eq!(unisocket::network_timeout(), Duration::from_secs(60));
    })
    .await;
}

// 3. Event order and delivery guarantees.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_messages_arrive_in_order_between_open_and_close() {
    within(async {
        const N: usize = 1000;
        let server = TestServer::start(ServerOptions::default(), |mut conn| async move {
            // Wait until the client has registered its listeners and says go
            // (else a listener registered late would, rightly, get the held
            // messages after the close event).
            match conn.recv().await {
                Some(Message::Text(t)) if t == "go" => {}
                _ => return,
            }
            // All frames in one write, as fast as possible; text and binary.
            let mut burst = Vec::new();
            for i in 0..N {
                if i % 3 == 2 {
                    burst.extend(codec::server_binary(i.to_string().as_bytes()));
                } else {
                    burst.extend(codec::server_text(&i.to_string()));
                }
            }
            burst.extend(codec::server_close(Some(1000), "done"));
            conn.send_raw(&burst).await;
            let _ = conn.recv().await;
            conn.shutdown().await;
        })
        .await;

        // Callbacks.
        let task = connect_socket(opts(server.url()).queue_until_open(true));
        let log = log_events(&task);
        let l = log.clone();
        task.on_message(move |ev| l.lock().unwrap().push(text_of(&ev.data)));
        let _go = task.send("go");
        wait_until("the close event", || count(&log, "close:") > 0).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut want = vec!["open:".to_owned()];
        want.extend((0..N).map(|i| {
            if i % 3 == 2 {
                format!("bin:{i}")
            } else {
                i.to_string()
            }
        }));
        want.push("close:1000:done:true".to_owned());
        assert_eq!(entries(&log), want);

        // recv.
        let task = bounded("connect", connect_socket(opts(server.url())))
            .await
            .expect("connect");
        let log = log_events(&task);
        task.send("go").await.expect("go");
        for i in 0..N {
            let got = bounded("a message", task.recv()).await.expect("message");
            let want = if i % 3 == 2 {
                Data::from(i.to_string().into_bytes())
            } else {
                Data::from(i.to_string())
            };
            assert_eq!(got, want, "message {i}");
        }
        assert_eq!(bounded("the end", task.recv()).await, None);
        wait_until("the close event", || count(&log, "close:") > 0).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(entries(&log), ["open:", "close:1000:done:true"]);
    })
    .await;
}

/// Detects two callbacks of one task running at the same time.
#[derive(Clone, Default)]
struct Exclusive {
    inside: Arc<AtomicBool>,
    overlaps: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
}

impl Exclusive {
    fn enter(&self) {
        if self.inside.swap(true, Ordering::SeqCst) {
            self.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        std::thread::sleep(Duration::from_micros(300));
        self.inside.store(false, Ordering::SeqCst);
        self.calls.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn callbacks_of_one_task_never_run_concurrently_and_every_send_settles_once() {
    within(async {
        const UNSOLICITED: usize = 300;
        const THREADS: usize = 4;
        const PER_THREAD: usize = 50;
        const SENDS: usize = THREADS * PER_THREAD;
        let server = TestServer::start(ServerOptions::default(), |mut conn| async move {
            for i in 0..UNSOLICITED {
                conn.send_text(&format!("server {i}")).await;
            }
            support::echo_handler(conn).await;
        })
        .await;
        let ex = Exclusive::default();
        let task = connect_socket(opts(server.url()));
        let e = ex.clone();
        task.on_open(move |_| e.enter());
        let e = ex.clone();
        let received = Arc::new(Mutex::new(Vec::new()));
        let r = received.clone();
        task.on_message(move |ev| {
            e.enter();
            r.lock().unwrap().push(text_of(&ev.data));
        });
        let e = ex.clone();
        task.on_error(move |_| e.enter());
        let e = ex.clone();
        let closed = Arc::new(AtomicUsize::new(0));
        let c = closed.clone();
        task.on_close(move |_| {
            e.enter();
            c.fetch_add(1, Ordering::SeqCst);
        });
        let task = bounded("connect", task).await.expect("connect");

        // Sends and late listeners from plain threads while messages arrive.
        let settled: Arc<Vec<AtomicUsize>> =
            Arc::new((0..SENDS).map(|_| AtomicUsize::new(0)).collect());
        let completes = Arc::new(AtomicUsize::new(0));
        let late_opens = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (task, ex) = (task.clone(), ex.clone());
                let (settled, completes) = (settled.clone(), completes.clone());
                let late_opens = late_opens.clone();
                std::thread::spawn(move || {
                    let mut completions = Vec::new();
                    for i in 0..PER_THREAD {
                        let n = t * PER_THREAD + i;
                        let (e1, e2, e3) = (ex.clone(), ex.clone(), ex.clone());
                        let (s1, s2) = (settled.clone(), settled.clone());
                        let c = completes.clone();
                        completions.push(
                            task.send(
                                SendOptions::new(format!("client {n}"))
                                    .success(move |_| {
                                        e1.enter();
                                        s1[n].fetch_add(1, Ordering::SeqCst);
                                    })
                                    .fail(move |_| {
                                        e2.enter();
                                        s2[n].fetch_add(1, Ordering::SeqCst);
                                    })
                                    .complete(move |_| {
                                        e3.enter();
                                        c.fetch_add(1, Ordering::SeqCst);
                                    }),
                            ),
                        );
                        if i % 10 == 0 {
                            let (e, l) = (ex.clone(), late_opens.clone());
                            task.on_open(move |_| {
                                e.enter();
                                l.fetch_add(1, Ordering::SeqCst);
                            });
                        }
                    }
                    completions
                })
            })
            .collect();
        let mut completions = Vec::new();
        for t in threads {
            completions.extend(t.join().expect("sender thread"));
        }
        for (i, c) in completions.into_iter().enumerate() {
            let ok = bounded("send", c)
                .await
                .unwrap_or_else(|e| panic!("send {i}: {e}"));
            assert_eq!(ok.err_msg, "sendSocketMessage:ok");
        }
        wait_until("every message", || {
            received.lock().unwrap().len() == UNSOLICITED + SENDS
        })
        .await;
        let (close_opts, close_rec) = recorded!(CloseOptions::default());
        let e = ex.clone();
        let close_opts = close_opts.success(move |_| e.enter());
        // (success replaced the recording one; complete still records.)
        bounded("close", task.close(close_opts))
            .await
            .expect("close");
        wait_until("the close event", || closed.load(Ordering::SeqCst) == 1).await;
        wait_until("the close callbacks", || {
            !close_rec.lock().unwrap().complete.is_empty()
        })
        .await;
        tokio::time::sleep(Duration::from_millis(50)).await;

        // Every send settled exactly once.
        for (n, s) in settled.iter().enumerate() {
            assert_eq!(s.load(Ordering::SeqCst), 1, "send {n}");
        }
        assert_eq!(completes.load(Ordering::SeqCst), SENDS);
        assert_eq!(late_opens.load(Ordering::SeqCst), THREADS * PER_THREAD / 10);
        assert_eq!(closed.load(Ordering::SeqCst), 1);
        // Messages: the server's in order, each thread's echoes in order.
        let received = received.lock().unwrap().clone();
        let server_part: Vec<_> = received
            .iter()
            .filter(|m| m.starts_with("server "))
            .cloned()
            .collect();
        let want: Vec<_> = (0..UNSOLICITED).map(|i| format!("server {i}")).collect();
        assert_eq!(server_part, want);
        for t in 0..THREADS {
            let mine: Vec<usize> = received
                .iter()
                .filter_map(|m| m.strip_prefix("client ")?.parse().ok())
                .filter(|n| n / PER_THREAD == t)
                .collect();
            let want: Vec<usize> = (t * PER_THREAD..(t + 1) * PER_THREAD).collect();
            assert_eq!(mine, want, "echoes of thread {t}");
        }
        let calls = 1 + (UNSOLICITED + SENDS) + 2 * SENDS + THREADS * PER_THREAD / 10 + 1 + 1;
        assert_eq!(ex.calls.load(Ordering::SeqCst), calls);
        assert_eq!(
            ex.overlaps.load(Ordering::SeqCst),
            0,
            "callbacks of one task ran concurrently"
        );
    })
    .await;
}

/// Sends settle in a ledger the task keeps, not a channel each: a
/// `Completion` held through thousands of later sends, and ones awaited in
/// reverse order, still get their own outcomes, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_held_long_or_awaited_out_of_order_get_their_outcomes() {
    within(async {
        const N: usize = 2_000;
        let server = TestServer::echo().await;
        let task = bounded("connect", connect_socket(opts(server.url())))
            .await
            .expect("connect");
        let mut first = task.send("first");
        for i in 0..N {
            drop(task.send(format!("dropped {i}")));
        }
        let kept: Vec<_> = (0..N).map(|i| task.send(format!("kept {i}"))).collect();
        for c in kept.into_iter().rev() {
            let ok = bounded("a kept send", c).await.expect("sent");
            assert_eq!(ok.err_msg, "sendSocketMessage:ok");
        }
        let ok = bounded("the first send", &mut first).await.expect("sent");
        assert_eq!(ok.err_msg, "sendSocketMessage:ok");
        // Polled again, it says so rather than hang or panic.
        let again = bounded("the first send again", &mut first)
            .await
            .unwrap_err();
        assert_eq!(
            again.err_msg(),
            "sendSocketMessage:fail the Completion was polled again after it returned its outcome"
        );
        assert_eq!(again.kind(), ErrorKind::InvalidArgument);
        // A ping's (a channel of its own) says so too.
        let mut ping = task.ping("p");
        bounded("a ping", &mut ping).await.expect("pinged");
        let again = bounded("the ping again", &mut ping).await.unwrap_err();
        assert_eq!(again.kind(), ErrorKind::InvalidArgument);
        let mut echoes = Vec::new();
        for _ in 0..2 * N + 1 {
            let data = bounded("an echo", task.recv()).await.expect("an echo");
            echoes.push(text_of(&data));
        }
        assert_eq!(echoes[0], "first");
        assert_eq!(echoes[N], format!("dropped {}", N - 1));
        assert_eq!(echoes[2 * N], format!("kept {}", N - 1));
        assert_eq!(task.buffered_amount(), 0);

        // A held send that fails keeps its error until it is awaited.
        bounded("close", task.close(CloseOptions::default()))
            .await
            .expect("close");
        let late = task.send("late");
        for _ in 0..10 {
            drop(task.send("later"));
        }
        let err = bounded("the late send", late).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotConnected);
    })
    .await;
}

/// A `Completion` dropped while its task's lock is held does not deadlock:
/// here a waker owns it, and the driver drops the waker as it wakes it,
/// under the lock, when a message comes. The send is forgotten later.
///
/// The scenario runs on a runtime of its own, in a thread of its own: a
/// deadlocked driver can stop that runtime's timers, and the test then
/// fails after its limit instead of hanging.
#[test]
fn a_completion_dropped_under_the_tasks_lock_does_not_deadlock() {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(completion_dropped_under_the_lock());
        let _ = done_tx.send(());
    });
    // An `Err` here is a deadlock, or a panic in the scenario (printed
    // above).
    done_rx
        .recv_timeout(support::TEST_TIMEOUT)
        .expect("the scenario did not finish (a deadlock?), or it failed");
}

async fn completion_dropped_under_the_lock() {
    struct Owner(Mutex<Option<unisocket::Completion<unisocket::SendSuccess>>>);
    impl std::task::Wake for Owner {
        fn wake(self: Arc<Self>) {}
    }
    let server = TestServer::echo().await;
    let task = bounded("connect", connect_socket(opts(server.url())))
        .await
        .expect("connect");
    let owner = Arc::new(Owner(Mutex::new(None)));
    let waker = std::task::Waker::from(owner.clone());
    // The task keeps a clone of the waker, for the next message.
    let mut cx = std::task::Context::from_waker(&waker);
    assert!(task.poll_recv(&mut cx).is_pending());
    *owner.0.lock().unwrap() = Some(task.send("owned"));
    // From now on the task's clone is the only one: when the echo comes,
    // the driver wakes it and drops it, and the `Completion` with it.
    drop((owner, waker));
    let echo = bounded("the echo", task.recv()).await.expect("an echo");
    assert_eq!(text_of(&echo), "owned");
    for i in 0..3 {
        bounded("a later send", task.send(format!("later {i}")))
            .await
            .expect("sent");
        let echo = bounded("its echo", task.recv()).await.expect("an echo");
        assert_eq!(text_of(&echo), format!("later {i}"));
    }
    assert_eq!(task.buffered_amount(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_send_settles_once_when_closed_with_sends_queued() {
    within(async {
        const N: usize = 50;
        let server = TestServer::start(ServerOptions::default(), |mut conn| async move {
            let _ = answer_close(&mut conn).await;
        })
        .await;
        let task = bounded("connect", connect_socket(opts(server.url())))
            .await
            .expect("connect");
        let payload = unisocket::Bytes::from(vec![7u8; 256 << 10]);
        let settled: Arc<Vec<AtomicUsize>> =
            Arc::new((0..N).map(|_| AtomicUsize::new(0)).collect());
        let completes = Arc::new(AtomicUsize::new(0));
        let mut completions = Vec::new();
        for i in 0..N {
            let (s1, s2, c) = (settled.clone(), settled.clone(), completes.clone());
            completions.push(
                task.send(
                    SendOptions::new(payload.clone())
                        .success(move |_| {
                            s1[i].fetch_add(1, Ordering::SeqCst);
                        })
                        .fail(move |_| {
                            s2[i].fetch_add(1, Ordering::SeqCst);
                        })
                        .complete(move |_| {
                            c.fetch_add(1, Ordering::SeqCst);
                        }),
                ),
            );
        }
        let close = task.close(CloseOptions::default());
        // Sends after close was asked for fail (CLOSING or CLOSED).
        let late = task.send("after close");
        bounded("close", close).await.expect("close");
        let err = bounded("late send", late).await.unwrap_err();
        assert!(
            err.err_msg().starts_with("sendSocketMessage:fail "),
            "{err}"
        );
        for (i, c) in completions.into_iter().enumerate() {
            match bounded("send", c).await {
                Ok(ok) => assert_eq!(ok.err_msg, "sendSocketMessage:ok"),
                Err(e) => assert!(
                    e.err_msg().starts_with("sendSocketMessage:fail "),
                    "{i}: {e}"
                ),
            }
        }
        wait_until("every complete", || completes.load(Ordering::SeqCst) == N).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        for (i, s) in settled.iter().enumerate() {
            assert_eq!(s.load(Ordering::SeqCst), 1, "send {i}");
        }
        assert_eq!(completes.load(Ordering::SeqCst), N);
        assert_eq!(task.buffered_amount(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_listeners_are_called_once_at_once() {
    within(async {
        // Open, then close.
        let server = TestServer::start(
            ServerOptions {
                protocols: vec!["chat".into()],
                ..ServerOptions::default()
            },
            |mut conn| async move {
                let _ = answer_close(&mut conn).await;
            },
        )
        .await;
        let task = bounded(
            "connect",
            connect_socket(opts(server.url()).protocols(["chat"])),
        )
        .await
        .expect("connect");
        let opens: Arc<Mutex<Vec<OpenEvent>>> = Arc::default();
        for _ in 0..2 {
            let o = opens.clone();
            task.on_open(move |ev| o.lock().unwrap().push(ev.clone()));
        }
        wait_until("the late open listeners", || {
            opens.lock().unwrap().len() == 2
        })
        .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        {
            let opens = opens.lock().unwrap();
            assert_eq!(opens.len(), 2, "a late on_open ran more than once");
            assert_eq!(opens[0].protocol, "chat");
            assert_eq!(opens[0], opens[1]);
        }
        bounded(
            "close",
            task.close(CloseOptions::default().code(4000).reason("bye")),
        )
        .await
        .expect("close");
        let closes: Arc<Mutex<Vec<CloseEvent>>> = Arc::default();
        for _ in 0..2 {
            let c = closes.clone();
            task.on_close(move |ev| c.lock().unwrap().push(ev.clone()));
        }
        let o = opens.clone();
        task.on_open(move |ev| o.lock().unwrap().push(ev.clone()));
        let errors = Arc::new(AtomicUsize::new(0));
        let e = errors.clone();
        task.on_error(move |_| {
            e.fetch_add(1, Ordering::SeqCst);
        });
        wait_until("the late close listeners", || {
            closes.lock().unwrap().len() == 2
        })
        .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let seen: Vec<_> = closes
            .lock()
            .unwrap()
            .iter()
            .map(|c| (c.code, c.reason.clone(), c.was_clean))
            .collect();
        assert_eq!(seen, vec![(4000, "bye".to_string(), true); 2]);
        assert_eq!(opens.lock().unwrap().len(), 3);
        assert_eq!(errors.load(Ordering::SeqCst), 0, "no error happened");

        // An error, then the close: late listeners get both, once each.
        let server = TestServer::start(ServerOptions::default(), |mut conn| async move {
            conn.shutdown().await;
        })
        .await;
        let task = bounded("connect", connect_socket(opts(server.url())))
            .await
            .expect("connect");
        wait_until("CLOSED", || task.ready_state() == ReadyState::Closed).await;
        let log: Log = Arc::default();
        let l = log.clone();
        task.on_error(move |ev| l.lock().unwrap().push(format!("error:{}", ev.err_msg)));
        let l = log.clone();
        task.on_close(move |ev| l.lock().unwrap().push(format!("close:{}", ev.code)));
        wait_until("the late listeners", || log.lock().unwrap().len() == 2).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let log = entries(&log);
        assert_eq!(log.len(), 2, "{log:?}");
        assert!(log[0].starts_with("error:connectSocket:fail "), "{log:?}");
        assert_eq!(log[1], "close:1006");

        // A task that never opened never calls a late on_open.
        let (addr, accepted) = silent_server().await;
        let task = connect_socket(opts(format!("ws://{addr}/")));
        wait_until("the attempt", || accepted.load(Ordering::SeqCst) == 1).await;
        bounded("abort", task.close(CloseOptions::default()))
            .await
            .expect("abort");
        let log = log_events(&task);
        wait_until("the late close", || count(&log, "close:") == 1).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(count(&log, "open"), 0, "{:?}", entries(&log));
        assert_eq!(count(&log, "close:"), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_messages_go_in_order_to_the_first_listener() {
    within(async {
        let (sent_tx, mut sent_rx) = mpsc::unbounded_channel::<()>();
        let server = TestServer::start(ServerOptions::default(), move |mut conn| {
            let sent_tx = sent_tx.clone();
            async move {
                for i in 0..5 {
                    conn.send_text(&format!("h{i}")).await;
                }
                let _ = sent_tx.send(());
                // Wait for the client's go, then send live messages.
                match conn.recv().await {
                    Some(Message::Text(t)) if t == "go" => {}
                    _ => return,
                }
                for i in 0..5 {
                    conn.send_text(&format!("l{i}")).await;
                }
                let _ = answer_close(&mut conn).await;
            }
        })
        .await;
        let task = bounded("connect", connect_socket(opts(server.url())))
            .await
            .expect("connect");
        bounded("the server's messages", sent_rx.recv()).await;
        // Let the client read them while nobody listens.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let first: Log = Arc::default();
        let f = first.clone();
        task.on_message(move |ev| f.lock().unwrap().push(text_of(&ev.data)));
        wait_until("the held messages", || first.lock().unwrap().len() == 5).await;
        let second: Log = Arc::default();
        let s = second.clone();
        task.on_message(move |ev| s.lock().unwrap().push(text_of(&ev.data)));
        task.send("go").await.expect("send");
        wait_until("the live messages", || first.lock().unwrap().len() == 10).await;
        wait_until("the live messages", || second.lock().unwrap().len() == 5).await;
        bounded("close", task.close(CloseOptions::default()))
            .await
            .expect("close");
        let want: Vec<String> = (0..5)
            .map(|i| format!("h{i}"))
            .chain((0..5).map(|i| format!("l{i}")))
            .collect();
        assert_eq!(entries(&first), want);
        assert_eq!(entries(&second), want[5..]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_listener_registered_mid_stream_gets_every_message_in_order() {
    within(async {
        const N: usize = 5000;
        let server = TestServer::start(ServerOptions::default(), |mut conn| async move {
            for i in 0..N {
                conn.send_text(&i.to_string()).await;
                if i % 100 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            let _ = answer_close(&mut conn).await;
        })
        .await;
        for delay_ms in [0, 1, 3, 10] {
            let task = bounded("connect", connect_socket(opts(server.url())))
                .await
                .expect("connect");
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            let got: Arc<Mutex<Vec<usize>>> = Arc::default();
            let g = got.clone();
            task.on_message(move |ev| {
                g.lock()
                    .unwrap()
                    .push(ev.data.as_text().unwrap().parse().unwrap())
            });
            wait_until("every message", || got.lock().unwrap().len() >= N).await;
            bounded("close", task.close(CloseOptions::default()))
                .await
                .expect("close");
            let got = got.lock().unwrap().clone();
            assert_eq!(got.len(), N, "after {delay_ms} ms");
            assert!(
                got.iter().enumerate().all(|(i, n)| i == *n),
                "out of order after {delay_ms} ms"
            );
        }
    })
    .await;
}

/// A listener that a message callback registers hears the very next
/// message, even one that arrived in the same read and waits in the same
/// run of the dispatcher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_registered_by_a_callback_gets_the_next_message() {
    within(async {
        const N: usize = 100;
        let server = TestServer::start(ServerOptions::default(), |mut conn| async move {
            // One write: the messages come in one read.
            let mut frames = Vec::new();
            for i in 0..N {
                let text = i.to_string();
                frames.push(0x81);
                frames.push(text.len() as u8);
                frames.extend_from_slice(text.as_bytes());
            }
            conn.send_raw(&frames).await;
            let _ = answer_close(&mut conn).await;
        })
        .await;
        let task = connect_socket(opts(server.url()));
        let first: Arc<Mutex<Vec<usize>>> = Arc::default();
        let second: Arc<Mutex<Vec<usize>>> = Arc::default();
        let (t, f, s) = (task.clone(), first.clone(), second.clone());
        task.on_message(move |ev| {
            let n: usize = ev.data.as_text().unwrap().parse().unwrap();
            f.lock().unwrap().push(n);
            if n == 0 {
                let s = s.clone();
                t.on_message(move |ev| {
                    s.lock()
                        .unwrap()
                        .push(ev.data.as_text().unwrap().parse().unwrap())
                });
            }
        });
        wait_until("every message", || second.lock().unwrap().len() >= N - 1).await;
        bounded("close", task.close(CloseOptions::default()))
            .await
            .expect("close");
        assert_eq!(*first.lock().unwrap(), (0..N).collect::<Vec<_>>());
        assert_eq!(*second.lock().unwrap(), (1..N).collect::<Vec<_>>());
    })
    .await;
}

/// A server whose handler runs `then` once the client says "go", so that
/// what it sends does not come in the same read as the handshake response.
async fn server_after_go<F, Fut>(then: F) -> TestServer
where
    F: Fn(ServerConn) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let then = Arc::new(then);
    TestServer::start(ServerOptions::default(), move |mut conn| {
        let then = then.clone();
        async move {
            assert_eq!(conn.recv().await, Some(Message::Text("go".into())));
            then(conn).await;
        }
    })
    .await
}

/// Waits until `log` (see [`log_events`]) has the close event.
async fn wait_for_close(log: &Log) {
    wait_until("the close", || {
        log.lock().unwrap().iter().any(|e| e.starts_with("close:"))
    })
    .await;
}

/// A connection that reads nothing for a second or two gives back the
/// buffers its traffic grew (`tests/memory.rs`), and that loses nothing: a
/// large frame half received before it is whole after it, so is a frame
/// whose header came before it and its payload after, and large messages
/// after it (which start a new pool of buffers) are whole too.
#[tokio::test]
async fn messages_across_an_idle_release_arrive_whole() {
    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8 ^ seed).collect()
    }
    within(async {
        let server = server_after_go(|mut conn| async move {
            // A large message first, so that there are buffers to give back.
            conn.send_binary(&pattern(70_000, 1)).await;
            let large = codec::server_binary(&pattern(300_000, 2));
            conn.send_raw(&large[..150_000]).await;
            // The release comes 1 to 2 s after the last read.
            tokio::time::sleep(Duration::from_millis(2500)).await;
            conn.send_raw(&large[150_000..]).await;
            let text = codec::server_text("after the pause");
            conn.send_raw(&text[..2]).await;
            tokio::time::sleep(Duration::from_millis(2500)).await;
            conn.send_raw(&text[2..]).await;
            for seed in 3..6 {
                conn.send_binary(&pattern(70_000, seed)).await;
            }
            // Open until the client leaves.
            let _ = conn.recv().await;
        })
        .await;
        let task = bounded("open", connect_socket(opts(server.url())))
            .await
            .expect("open");
        drop(task.send("go"));
        let next = || async { bounded("a message", task.recv()).await.expect("a message") };
        assert!(next().await.as_bytes() == pattern(70_000, 1));
        assert!(
            next().await.as_bytes() == pattern(300_000, 2),
            "the frame cut by the pause"
        );
        assert_eq!(next().await, Data::from("after the pause"));
        for seed in 3..6 {
            assert!(
                next().await.as_bytes() == pattern(70_000, seed),
                "message {seed}"
            );
        }
    })
    .await;
}

/// `n` one-byte text frames, "0" to "9" over and over (3 bytes each).
fn digit_frames(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| [0x81, 1, b'0' + (i % 10) as u8])
        .collect()
}

/// Messages that arrived before the server dropped the connection (no
/// close frame) are all delivered, however many came in one read: the
/// driver hands them over in turns, reads on while reads fill their buffer,
/// and meeting the end of the stream must not drop the turns still to come.
/// 512 one-byte messages (1 536 bytes) fill the first two reads (512 and
/// 1 024 bytes) exactly, so the third read meets the end while 480
/// messages wait; the sizes around it and a large burst are checked too.
/// (The boundary follows the driver's read sizes: if those change, this test
/// checks less, but it cannot fail wrongly.)
#[tokio::test]
async fn every_message_before_an_abrupt_end_is_delivered() {
    within(async {
        for n in (500..=530).chain([5000]) {
            let server = server_after_go(move |mut conn| async move {
                conn.send_raw(&digit_frames(n)).await;
                // The TCP stream ends right after the messages: no close frame.
                conn.shutdown().await;
            })
            .await;
            let task = bounded("open", connect_socket(opts(server.url())))
                .await
                .expect("open");
            drop(task.send("go"));
            let mut got = 0;
            while let Some(data) = bounded("a message or the end", task.recv()).await {
                let expected = b'0' + (got % 10) as u8;
                assert_eq!(data.as_bytes(), [expected], "message {got} of {n}");
                got += 1;
            }
            assert_eq!(got, n, "messages lost before the end of {n}");
        }
    })
    .await;
}

/// The same when a write fails first: listeners answer each message of a
/// burst, the server is gone, and an answer's write fails while most of the
/// burst still waits for its turn. Every message that was read is delivered.
#[tokio::test]
async fn messages_read_before_a_failed_write_are_delivered() {
    within(async {
        const N: usize = 100;
        let server = server_after_go(|mut conn| async move {
            conn.send_raw(&digit_frames(N)).await;
            // Gone at once: the answers meet a closed socket.
            drop(conn);
        })
        .await;
        let task = connect_socket(opts(server.url()));
        let log = log_events(&task);
        let t = task.clone();
        task.on_open(move |_| drop(t.send("go")));
        let got = Arc::new(AtomicUsize::new(0));
        let (t, g) = (task.clone(), got.clone());
        task.on_message(move |_| {
            g.fetch_add(1, Ordering::SeqCst);
            drop(t.send("answer"));
        });
        wait_for_close(&log).await;
        assert_eq!(got.load(Ordering::SeqCst), N, "{:?}", log.lock().unwrap());
    })
    .await;
}

/// A protocol error among the messages still waiting for their turn when
/// the stream ends is what the close reports (1002), after the messages
/// before it: 511 messages and a frame with a reserved opcode make 1 536
/// bytes, the size at which the read burst meets the end (see
/// `every_message_before_an_abrupt_end_is_delivered`).
#[tokio::test]
async fn a_protocol_error_just_before_the_end_is_reported() {
    within(async {
        const N: usize = 511;
        let server = server_after_go(|mut conn| async move {
            let mut frames = digit_frames(N);
            frames.extend_from_slice(&[0x83, 1, b'x']);
            conn.send_raw(&frames).await;
            conn.shutdown().await;
        })
        .await;
        let task = bounded("open", connect_socket(opts(server.url())))
            .await
            .expect("open");
        let log = log_events(&task);
        drop(task.send("go"));
        let mut got = 0;
        while bounded("a message or the end", task.recv()).await.is_some() {
            got += 1;
        }
        assert_eq!(got, N);
        wait_for_close(&log).await;
        let log = log.lock().unwrap();
        assert!(
            log.iter().any(|e| e.starts_with("close:1002:")),
            "expected a 1002 close: {log:?}"
        );
    })
    .await;
}

/// The frame of a binary message of `len` bytes (`i % 251` each), with the
/// 8-byte length form.
fn large_frame(len: usize) -> Vec<u8> {
    let mut frame = vec![0x82, 127];
    frame.extend_from_slice(&(len as u64).to_be_bytes());
    frame.extend((0..len).map(|i| (i % 251) as u8));
    frame
}

fn check_large(data: &Data, len: usize) {
    assert_eq!(data.len(), len);
    assert!(data
        .as_bytes()
        .iter()
        .enumerate()
        .all(|(i, &b)| b == (i % 251) as u8));
}

/// A large message that arrives in pieces, with pauses, is delivered, and so
/// is a small one sent after another pause, on a connection that then stays
/// quiet: the driver waits for the rest of a large frame with a receive
/// low-water mark, which must never ask for more than the frame still
/// misses, nor outlive the frame.
#[tokio::test]
async fn a_large_message_in_pieces_and_the_next_one_are_delivered() {
    within(async {
        const LEN: usize = 300 * 1024;
        let server = server_after_go(|mut conn| async move {
            let frame = large_frame(LEN);
            // The frame's head and 200 KiB, then 99 KiB, then the last KiB.
            let cuts = [10 + 200 * 1024, 10 + 299 * 1024, frame.len()];
            let mut from = 0;
            for to in cuts {
                conn.send_raw(&frame[from..to]).await;
                from = to;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // A small message on its own, then quiet until the client
            // closes: nothing else would wake a reader that waits for more.
            conn.send_text("next").await;
            let _ = answer_close(&mut conn).await;
        })
        .await;
        let task = bounded("open", connect_socket(opts(server.url())))
            .await
            .expect("open");
        drop(task.send("go"));
        let large = bounded("the large message", task.recv()).await;
        check_large(&large.expect("a message"), LEN);
        let next = bounded("the message after it", task.recv()).await;
        assert_eq!(next.as_ref().and_then(Data::as_text), Some("next"));
        bounded("close", task.close(CloseOptions::default()))
            .await
            .expect("close");
    })
    .await;
}

/// A large message that trickles in slower than the heartbeat's timeout
/// would allow for a whole low-water mark keeps the connection alive: while
/// a ping waits for its answer, whatever arrives is read and counts.
#[tokio::test]
async fn a_slow_large_message_keeps_the_heartbeat_satisfied() {
    within(async {
        const LEN: usize = 512 * 1024;
        let server = server_after_go(|mut conn| async move {
            // 8 KiB every 10 ms (about 800 KB/s): a 256 KiB mark would take
            // about 320 ms to fill, twice the heartbeat's timeout. The
            // server reads nothing meanwhile, so pings get no pong.
            for piece in large_frame(LEN).chunks(8 * 1024) {
                conn.send_raw(piece).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let _ = answer_close(&mut conn).await;
        })
        .await;
        let options =
            opts(server.url()).heartbeat(Duration::from_millis(100), Duration::from_millis(150));
        let task = bounded("open", connect_socket(options))
            .await
            .expect("open");
        let log = log_events(&task);
        drop(task.send("go"));
        let large = bounded("the large message", task.recv()).await;
        assert!(large.is_some(), "{:?}", log.lock().unwrap());
        check_large(&large.expect("a message"), LEN);
        bounded("close", task.close(CloseOptions::default()))
            .await
            .expect("close");
        assert!(
            !log.lock().unwrap().iter().any(|e| e.starts_with("error:")),
            "{:?}",
            log.lock().unwrap()
        );
    })
    .await;
}

/// A server that, once the client says "go", sends `n` small text messages
/// ("0", "1", ...) in one write (so that they arrive in one read), then
/// answers the close.
async fn burst_server(n: usize) -> TestServer {
    server_after_go(move |mut conn| async move {
        let mut frames = Vec::new();
        for i in 0..n {
            let text = i.to_string();
            frames.push(0x81);
            frames.push(text.len() as u8);
            frames.extend_from_slice(text.as_bytes());
        }
        conn.send_raw(&frames).await;
        let _ = answer_close(&mut conn).await;
    })
    .await
}

/// An answer to the first message of a burst is written before the burst
/// has been delivered in full: the driver hands messages over 16 at a time
/// and writes between turns, so the peer is not kept waiting for the whole
/// read to be processed. Callbacks: the answer's `success` (run once its
/// bytes are written) comes before the 17th message.
#[tokio::test]
async fn an_answer_to_a_burst_is_written_before_the_burst_is_all_delivered_callbacks() {
    within(async {
        const N: usize = 100;
        let server = burst_server(N).await;
        let task = connect_socket(opts(server.url()));
        let t = task.clone();
        task.on_open(move |_| drop(t.send("go")));
        let written = Arc::new(AtomicBool::new(false));
        // For each message: whether the answer to the first was written.
        let seen: Arc<Mutex<Vec<bool>>> = Arc::default();
        let (t, w, s) = (task.clone(), written.clone(), seen.clone());
        task.on_message(move |ev| {
            if ev.data.as_text() == Some("0") {
                let w = w.clone();
                drop(t.send(
                    SendOptions::new("answer").success(move |_| w.store(true, Ordering::SeqCst)),
                ));
            }
            s.lock().unwrap().push(w.load(Ordering::SeqCst));
        });
        wait_until("every message", || seen.lock().unwrap().len() == N).await;
        bounded("close", task.close(CloseOptions::default()))
            .await
            .expect("close");
        let first_after = seen.lock().unwrap().iter().position(|&w| w);
        assert!(
            first_after.is_some_and(|i| i <= 16),
            "the answer was written only before message {first_after:?}"
        );
    })
    .await;
}

/// The same through `recv`: the driver yields after each turn of 16 held
/// messages, so the answer's `Completion` is settled by the 17th `recv`.
/// The application is a spawned task, as in a server's handler: tokio's
/// `block_on` runs spawned tasks (the driver among them) many times over
/// before it polls its own future again, so a yield could not reach it.
#[tokio::test]
async fn an_answer_to_a_burst_is_written_before_the_burst_is_all_delivered_async() {
    within(async {
        const N: usize = 100;
        let server = burst_server(N).await;
        let task = bounded("open", connect_socket(opts(server.url())))
            .await
            .expect("open");
        let app = tokio::spawn(async move {
            drop(task.send("go"));
            let first = bounded("message 0", task.recv()).await;
            assert_eq!(first.as_ref().and_then(Data::as_text), Some("0"));
            let mut answer = task.send("answer");
            let mut settled_by = None;
            for i in 1..N {
                let got = bounded("a message", task.recv()).await;
                assert_eq!(
                    got.as_ref().and_then(Data::as_text),
                    Some(i.to_string().as_str())
                );
                if settled_by.is_none() {
                    let settled = std::future::poll_fn(|cx| {
                        Poll::Ready(Pin::new(&mut answer).poll(cx).is_ready())
                    })
                    .await;
                    settled_by = settled.then_some(i);
                }
            }
            bounded("close", task.close(CloseOptions::default()))
                .await
                .expect("close");
            settled_by
        });
        let settled_by = app.await.expect("the application task");
        assert!(
            settled_by.is_some_and(|i| i <= 16),
            "the answer was written only by message {settled_by:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_while_connecting_aborts() {
    within(async {
        let (addr, accepted) = silent_server().await;
        let (options, rec) = recorded!(opts(format!("ws://{addr}/")));
        let task = connect_socket(options);
        let log = log_events(&task);
        let queued = connect_socket(opts(format!("ws://{addr}/")).queue_until_open(true));
        wait_until("the attempts", || accepted.load(Ordering::SeqCst) == 2).await;
        assert_eq!(task.ready_state(), ReadyState::Connecting);

        let (close_opts, close_rec) = recorded!(CloseOptions::default());
        let closing = task.close(close_opts);
        // CLOSING as soon as `close` returns, as in a browser (or CLOSED
        // already, if the driver was quick); a send fails at once.
        let state = task.ready_state();
        assert!(
            matches!(state, ReadyState::Closing | ReadyState::Closed),
            "{state:?}"
        );
        let err = task.send("late").await.unwrap_err();
        assert!(
            err.err_msg()
                .starts_with("sendSocketMessage:fail WebSocket is not connected"),
            "{err}"
        );
        let ok = bounded("the abort", closing)
            .await
            .expect("close while connecting");
        assert_eq!(ok.err_msg, "closeSocket:ok");
        assert_eq!(task.ready_state(), ReadyState::Closed);
        assert_succeeded_once(&close_rec, "closeSocket:ok").await;
        let err = bounded("the task", task.clone()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Aborted);
        let msg = "connectSocket:fail closed before the connection was established";
        assert_eq!(err.err_msg(), msg);
        // As a browser: an error, then a close with 1006, not clean; the
        // connect call itself ended in `success`.
        wait_until("the close event", || count(&log, "close:") == 1).await;
        assert_succeeded_once(&rec, "connectSocket:ok").await;
        assert_eq!(
            entries(&log),
            [
                format!("error:{msg}"),
                "close:1006:closed before the connection was established:false".to_owned()
            ]
        );
        assert_eq!(task.recv().await, None);

        // Queued sends fail when the attempt is aborted; none is lost.
        let pending = queued.send("never");
        bounded("abort", queued.close(CloseOptions::default()))
            .await
            .expect("abort");
        let err = bounded("the queued send", pending).await.unwrap_err();
        assert!(
            err.err_msg().starts_with("sendSocketMessage:fail "),
            "{err}"
        );
        assert_eq!(queued.buffered_amount(), 0);
        let err = bounded("the task", queued).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Aborted);
    })
    .await;
}

// 4. buffered_amount and the open event.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_amount_counts_unsent_bytes() {
    within(async {
        const BIG: usize = 8 << 20;
        // A server that never reads.
        let server = TestServer::start(ServerOptions::default(), |conn| async move {
            let _conn = conn;
            std::future::pending::<()>().await;
        })
        .await;
        let task = bounded("connect", connect_socket(opts(server.url())))
            .await
            .expect("connect");
        assert_eq!(task.buffered_amount(), 0);
        let _pending = task.send(vec![1u8; BIG]);
        let queued = task.buffered_amount();
        assert!(queued > 0, "nothing buffered right after a send of 8 MiB");
        assert!(queued >= BIG / 2, "buffered {queued} after a send of {BIG}");

        // A server that reads: back to 0 once the send completed.
        let server = TestServer::echo().await;
        let task = bounded("connect", connect_socket(opts(server.url())))
            .await
            .expect("connect");
        assert_eq!(task.buffered_amount(), 0);
        let completion = task.send(vec![2u8; BIG]);
        assert!(task.buffered_amount() > 0);
        bounded("the big send", completion).await.expect("send");
        assert_eq!(task.buffered_amount(), 0);
        let echo = bounded("the echo", task.recv()).await.expect("echo");
        assert_eq!(echo.len(), BIG);
        assert_eq!(task.buffered_amount(), 0);
        bounded("close", task.close(CloseOptions::default()))
            .await
            .expect("close");
        assert_eq!(task.buffered_amount(), 0);
    })
    .await;
}

/// Sends whose `Completion` is dropped wait past the high-water mark for at
/// most as many bytes again; past that they fail at once, with a reason,
/// and none is dropped silently: each one ends in `success` or `fail`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_sends_past_the_limit_fail_at_once() {
    within(async {
        const MARK: usize = 64 * 1024;
        const MESSAGE: usize = 4 * 1024;
        // A server that never reads: the socket buffers fill, then the task's.
        let server = TestServer::start(ServerOptions::default(), |conn| async move {
            let _conn = conn;
            std::future::pending::<()>().await;
        })
        .await;
        let task = bounded(
            "connect",
            connect_socket(
                opts(server.url())
                    .max_buffered_bytes(MARK)
                    .close_timeout(Duration::from_millis(100)),
            ),
        )
        .await
        .expect("connect");
        let mut peak = 0;
        let mut first_failure = None;
        for i in 0..4000 {
            let mut sent = std::pin::pin!(task.send(vec![0u8; MESSAGE]));
            peak = peak.max(task.buffered_amount());
            // A send that fails at once has failed by the time it returns.
            if let Poll::Ready(Err(e)) = poll_once(sent.as_mut()) {
                first_failure = Some((i, e));
                break;
            }
            // Dropped here, as uni-app code does.
        }
        // Twice the mark, plus one message that may exceed it.
        assert!(peak <= 2 * MARK + MESSAGE, "buffered_amount reached {peak}");
        let (i, err) = first_failure.expect("no send failed past the limit");
        assert_eq!(err.kind(), ErrorKind::BufferFull, "{err}");
        assert!(
            err.err_msg()
                .starts_with("sendSocketMessage:fail send buffer full: "),
            "{err}"
        );
        assert!(err.err_msg().contains("(max_buffered_bytes)"), "{err}");
        assert!(i > 0, "the first send already failed");
        // Every one of them is accounted for once the task ends.
        let outcomes: Rec = Arc::default();
        let (a, b) = (outcomes.clone(), outcomes.clone());
        task.send(
            SendOptions::new(vec![0u8; MESSAGE])
                .success(move |ok| a.lock().unwrap().success.push(ok.err_msg.clone()))
                .fail(move |e| {
                    b.lock()
                        .unwrap()
                        .fail
                        .push((e.err_msg().to_owned(), e.kind()))
                }),
        );
        wait_until("the callback", || {
            let o = outcomes.lock().unwrap();
            o.success.len() + o.fail.len() == 1
        })
        .await;
        assert_eq!(outcomes.lock().unwrap().fail[0].1, ErrorKind::BufferFull);
        let _ = bounded("close", task.close(CloseOptions::default())).await;
    })
    .await;
}

/// Polls `fut` once, with a waker that does nothing.
fn poll_once<F: Future>(fut: Pin<&mut F>) -> Poll<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    fut.poll(&mut cx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_event_has_response_headers_and_profile() {
    within(async {
        let server = TestServer::start(
            ServerOptions {
                extra_headers: vec![
                    ("X-Test".into(), "1".into()),
                    ("X-Other".into(), "two words".into()),
                ],
                ..ServerOptions::default()
            },
            support::echo_handler,
        )
        .await;
        let task = connect_socket(opts(server.url()));
        let seen: Arc<Mutex<Option<OpenEvent>>> = Arc::default();
        let s = seen.clone();
        task.on_open(move |ev| *s.lock().unwrap() = Some(ev.clone()));
        let task = bounded("connect", task).await.expect("connect");
        wait_until("on_open", || seen.lock().unwrap().is_some()).await;
        let ev = seen.lock().unwrap().clone().unwrap();
        assert_eq!(ev.header.get("x-test"), Some("1"));
        assert_eq!(ev.header.get("X-TEST"), Some("1"));
        assert_eq!(ev.header.get("x-other"), Some("two words"));
        assert!(ev.header.get("sec-websocket-accept").is_some());
        assert!(ev
            .header
            .get("upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket")));
        assert_eq!(ev.header.get("x-missing"), None);
        assert!(ev.header.iter().any(|(n, v)| n == "X-Test" && v == "1"));
        assert_eq!(ev.protocol, "");
        assert_eq!(task.protocol(), "");
        assert!(ev.profile.total > Duration::ZERO, "{:?}", ev.profile);
        assert!(ev.profile.total >= ev.profile.handshake, "{:?}", ev.profile);
        assert!(
            ev.profile.total >= ev.profile.dns + ev.profile.connect,
            "{:?}",
            ev.profile
        );
        assert_eq!(ev.profile.tls, Duration::ZERO);
        bounded("close", task.close(CloseOptions::default()))
            .await
            .expect("close");
    })
    .await;
}

/// Connects with every callback and event recorded in one log, in the order
/// they ran; returns the log once the task closed, with the awaited task's
/// error.
async fn connect_outcome(options: ConnectOptions) -> (Vec<String>, SocketError) {
    let log: Log = Arc::default();
    let (a, b, c) = (log.clone(), log.clone(), log.clone());
    let options = options
        .success(move |ok| a.lock().unwrap().push(format!("success:{}", ok.err_msg)))
        .fail(move |e| b.lock().unwrap().push(format!("fail:{}", e.err_msg())))
        .complete(move |r| {
            c.lock().unwrap().push(match r {
                Ok(ok) => format!("complete:{}", ok.err_msg),
                Err(e) => format!("complete:{}", e.err_msg()),
            })
        });
    let task = connect_socket(options);
    log_events_into(&task, &log);
    let err = bounded("the failure", task.clone())
        .await
        .expect_err("the connection must fail");
    wait_until("the close event", || count(&log, "close:") == 1).await;
    // Anything that would come late (a second outcome) has had its chance.
    tokio::time::sleep(Duration::from_millis(50)).await;
    (entries(&log), err)
}

/// What goes wrong on the network after `success` reaches `on_error` (with
/// the `connectSocket:fail ...` errMsg), then `on_close` with 1006, and the
/// awaited task's `Err`; never `fail`. Each kind of failure, over real
/// sockets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_failures_after_success_reach_on_error_and_on_close_never_fail() {
    within(async {
        let refused = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let (silent, _) = silent_server().await;
        let rejecting = TestServer::start(
            ServerOptions {
                reject: Some((403, "no".to_owned())),
                ..ServerOptions::default()
            },
            |_conn| async {},
        )
        .await;
        let plain = TestServer::echo().await;
        // An HTTP proxy that refuses every CONNECT with 407.
        let proxy = support::raw_server(|mut stream| async move {
            let _ = support::read_http_head(&mut stream).await;
            let _ = tokio::io::AsyncWriteExt::write_all(
                &mut stream,
                b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n",
            )
            .await;
        })
        .await;
        let cases = [
            (
                "refused",
                opts(format!("ws://{refused}/")),
                ErrorKind::ConnectionRefused,
            ),
            ("dns", opts("ws://no-such-host.invalid/"), ErrorKind::Dns),
            (
                "tls",
                opts(format!("wss://{}/", plain.addr)),
                ErrorKind::Tls,
            ),
            ("http status", opts(rejecting.url()), ErrorKind::Handshake),
            (
                "proxy refusal",
                opts(plain.url()).proxy(format!("http://{proxy}")),
                ErrorKind::Proxy,
            ),
            (
                "timeout",
                ConnectOptions::new(format!("ws://{silent}/")).timeout(Duration::from_millis(200)),
                ErrorKind::Timeout,
            ),
        ];
        for (what, options, kind) in cases {
            let (log, err) = connect_outcome(options).await;
            assert_eq!(err.kind(), kind, "{what}: {err}");
            let status = match what {
                "http status" => Some(403),
                "proxy refusal" => Some(407),
                _ => None,
            };
            assert_eq!(err.http_status(), status, "{what}");
            assert!(
                err.err_msg().starts_with("connectSocket:fail "),
                "{what}: {err}"
            );
            assert_eq!(
                log,
                [
                    "success:connectSocket:ok".to_owned(),
                    "complete:connectSocket:ok".to_owned(),
                    format!("error:{}", err.err_msg()),
                    format!("close:1006:{}:false", err.reason()),
                ],
                "{what}"
            );
        }
        // Invalid input is the one case of `fail`: at once, inside
        // `connect_socket`; the task's error and close reach the listeners
        // registered after it returned.
        let (log, err) = connect_outcome(ConnectOptions::new("htp://x")).await;
        assert_eq!(err.kind(), ErrorKind::InvalidUrl);
        assert_eq!(
            log,
            [
                format!("fail:{}", err.err_msg()),
                format!("complete:{}", err.err_msg()),
                format!("error:{}", err.err_msg()),
                format!("close:1006:{}:false", err.reason()),
            ]
        );
    })
    .await;
}

/// Teardown with many sends waiting for buffer space settles each of them
/// and returns normally: failing one send must not reach the next one by
/// recursion (which overflowed the stack with a few thousand).
#[test]
fn teardown_with_ten_thousand_waiting_sends_settles_each() {
    const MARK: usize = 1 << 20;
    const MESSAGE: usize = 100;
    const SENDS: usize = 2 * MARK / MESSAGE + 10;
    let server_rt = tokio::runtime::Runtime::new().expect("server runtime");
    let server = server_rt.block_on(TestServer::start(
        ServerOptions::default(),
        |conn| async move {
            // Never reads.
            let _conn = conn;
            std::future::pending::<()>().await;
        },
    ));
    let url = server.url();
    // A small stack, smaller than a runtime worker's 2 MiB: a recursion per
    // waiting send would overflow it.
    let outcome = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let (task, completions) = rt.block_on(async {
                let task = connect_socket(opts(url).max_buffered_bytes(MARK))
                    .await
                    .expect("connect");
                let message = bytes::Bytes::from(vec![7u8; MESSAGE]);
                // The driver does not run meanwhile (one thread): the first
                // MARK bytes go to it, the next MARK bytes wait.
                let completions: Vec<_> = (0..SENDS).map(|_| task.send(message.clone())).collect();
                (task, completions)
            });
            let buffered = task.buffered_amount();
            // The runtime ends with the connection's driver in it.
            drop(rt);
            let mut failed = 0;
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            for mut c in completions {
                match Pin::new(&mut c).poll(&mut cx) {
                    Poll::Ready(Err(_)) => failed += 1,
                    other => panic!("a send was left {other:?}"),
                }
            }
            (buffered, failed, task.ready_state(), task.buffered_amount())
        })
        .expect("thread")
        .join();
    let (buffered, failed, state, after) = outcome.expect("the teardown panicked");
    // MARK bytes in flight and as many waiting (10 485 sends), to the byte.
    assert!(
        buffered >= 2 * MARK - 2 * MESSAGE,
        "only {buffered} bytes were buffered"
    );
    assert_eq!(failed, SENDS);
    assert_eq!(state, ReadyState::Closed);
    assert_eq!(after, 0);
    drop(server);
}

/// `opened()`, awaiting the task, `closed()` and the `Completion` of
/// `close` return only once the listeners of their event have run, even
/// when those are slow: a program that exits right after loses no output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awaited_events_return_after_their_listeners_ran() {
    within(async {
        let server = TestServer::echo().await;
        let task = connect_socket(opts(server.url()));
        let log: Log = Arc::default();
        let l = log.clone();
        task.on_open(move |_| {
            std::thread::sleep(Duration::from_millis(200));
            l.lock().unwrap().push("on_open".to_owned());
        });
        let l = log.clone();
        task.on_close(move |ev| {
            std::thread::sleep(Duration::from_millis(200));
            l.lock().unwrap().push(format!("on_close:{}", ev.code));
        });
        bounded("opened", task.opened()).await.expect("open");
        log.lock().unwrap().push("opened()".to_owned());
        let t = task.clone();
        let l = log.clone();
        let waiter = tokio::spawn(async move {
            let ev = t.closed().await;
            l.lock().unwrap().push(format!("closed():{}", ev.code));
        });
        bounded("close", task.close(CloseOptions::default()))
            .await
            .expect("close");
        log.lock().unwrap().push("close()".to_owned());
        bounded("the waiter", waiter).await.expect("waiter");
        let got = entries(&log);
        assert_eq!(
            got[..3],
            ["on_open", "opened()", "on_close:1000"],
            "{got:?}"
        );
        let mut rest = got[3..].to_vec();
        rest.sort();
        assert_eq!(rest, ["close()", "closed():1000"], "{got:?}");

        // A failed open, too: its error and close listeners ran first.
        let refused = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let task = connect_socket(opts(format!("ws://{refused}/")));
        let log: Log = Arc::default();
        let l = log.clone();
        task.on_close(move |_| {
            std::thread::sleep(Duration::from_millis(200));
            l.lock().unwrap().push("on_close".to_owned());
        });
        let err = bounded("the failure", task.clone()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
        assert_eq!(entries(&log), ["on_close"]);
    })
    .await;
}
