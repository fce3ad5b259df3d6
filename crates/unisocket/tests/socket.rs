//! Integration tests of `unisocket` over real sockets on 127.0.0.1: the
//! client against the test server of `tests/support` (no mocks).
//!
//! Every test runs under an overall timeout so that a client bug shows up as
//! a failure, never as a hang.

mod support;

use support::events::{count, entries, log_events, wait_closed};
use support::{answer_close, bounded, wait_until, within};

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_core::Stream;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use support::codec::{self, Message};
use support::{ServerConn, ServerOptions, TestServer};
use unisocket::{
    connect_socket, CloseOptions, ConnectOptions, Data, ErrorKind, ReadyState, SendOptions,
    SocketTask,
};

/// Starts a server whose handler is `handler(conn, tx)`, where `tx` reports
/// what the server saw back to the test.
async fn server_with<T, F, Fut>(
    opts: ServerOptions,
    handler: F,
) -> (TestServer, mpsc::UnboundedReceiver<T>)
where
    T: Send + 'static,
    F: Fn(ServerConn, mpsc::UnboundedSender<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let server = TestServer::start(opts, move |conn| handler(conn, tx.clone())).await;
    (server, rx)
}

/// Receives the next message from the client, skipping pongs.
async fn recv_skip_pongs(conn: &mut ServerConn) -> Option<Message> {
    loop {
        match conn.recv().await {
            Some(Message::Pong(_)) => {}
            other => return other,
        }
    }
}

/// `n` bytes of binary data with a pattern that catches shifted or dropped bytes.
fn binary_payload(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 9)) as u8)
        .collect()
}

/// Exactly `n` bytes of UTF-8, mostly 2-, 3- and 4-byte characters
/// (padded with ASCII where the next multi-byte character would not fit).
fn text_payload(n: usize) -> String {
    const PIECES: [&str; 5] = ["é", "☃", "😀", "ß", "中"];
    let mut s = String::with_capacity(n);
    let mut i = 0;
    while s.len() < n {
        let piece = PIECES[i % PIECES.len()];
        if s.len() + piece.len() <= n {
            s.push_str(piece);
        } else {
            s.push('a');
        }
        i += 1;
    }
    assert_eq!(s.len(), n);
    s
}

/// Sends `data` and checks that the echo is exactly equal.
async fn round_trip(task: &SocketTask, data: Data) {
    let desc = format!(
        "{} message of {} bytes",
        if data.is_text() { "text" } else { "binary" },
        data.len()
    );
    let ok = bounded(&desc, task.send(data.clone()))
        .await
        .unwrap_or_else(|e| panic!("send of {desc} failed: {e}"));
    assert_eq!(ok.err_msg, "sendSocketMessage:ok");
    let got = bounded(&desc, task.recv())
        .await
        .unwrap_or_else(|| panic!("no echo for {desc}"));
    assert_eq!(got.is_text(), data.is_text(), "kind of the echo of {desc}");
    assert_eq!(got.len(), data.len(), "length of the echo of {desc}");
    assert!(got == data, "the echo of {desc} differs");
}

const SIZES: [usize; 7] = [0, 1, 125, 126, 65535, 65536, 1 << 20];

// 1. Round trips.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_and_binary_round_trips_of_every_length_form() {
    within(async {
        let server = TestServer::echo().await;
        let task = connect_socket(ConnectOptions::new(server.url()))
            .await
            .expect("connect");
        for n in SIZES {
            round_trip(&task, Data::from(binary_payload(n))).await;
            round_trip(&task, Data::from(text_payload(n))).await;
        }
        let done = task.close(CloseOptions::default()).await.expect("close");
        assert_eq!(done.err_msg, "closeSocket:ok");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_round_trip_of_16_mib() {
    within(async {
        let server = TestServer::echo().await;
        let task = connect_socket(ConnectOptions::new(server.url()))
            .await
            .expect("connect");
        // Exactly the default max_frame_size: must pass.
        round_trip(&task, Data::from(binary_payload(16 << 20))).await;
        round_trip(&task, Data::from("still alive")).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multibyte_text_round_trip_of_16_mib() {
    within(async {
        let server = TestServer::echo().await;
        let task = connect_socket(ConnectOptions::new(server.url()))
            .await
            .expect("connect");
        round_trip(&task, Data::from(text_payload(16 << 20))).await;
        round_trip(&task, Data::from(vec![7u8; 3])).await;
    })
    .await;
}

// 2. Server-initiated close.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_initiated_close_with_code_and_reason() {
    within(async {
        let (server, mut seen) = server_with(ServerOptions::default(), |mut conn, tx| async move {
            conn.send_close(Some(4001), "bye").await;
            let reply = recv_skip_pongs(&mut conn).await;
            let _ = tx.send(reply);
            conn.shutdown().await;
        })
        .await;
        let task = connect_socket(ConnectOptions::new(server.url()));
        let log = log_events(&task);
        let task = task.await.expect("connect");
        assert_eq!(bounded("recv after the close", task.recv()).await, None);
        wait_closed(&log).await;
        assert_eq!(task.ready_state(), ReadyState::Closed);
        assert_eq!(entries(&log), ["open:", "close:4001:bye:true"]);
        // The client echoes the code (RFC 6455 section 5.5.1); echoing the
        // reason is optional.
        let echoed = bounded("the server's report", seen.recv()).await.unwrap();
        assert!(
            matches!(echoed, Some(Message::Close(Some(4001), _))),
            "the server expected a close frame with 4001, got {echoed:?}"
        );
        // The close event is delivered once, and again at once to a late listener.
        let late = Arc::new(Mutex::new(Vec::new()));
        let l = late.clone();
        task.on_close(move |ev| {
            l.lock()
                .unwrap()
                .push((ev.code, ev.reason.clone(), ev.was_clean))
        });
        wait_until("the late close listener", || {
            !late.lock().unwrap().is_empty()
        })
        .await;
        assert_eq!(*late.lock().unwrap(), [(4001, "bye".to_owned(), true)]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(count(&log, "close:"), 1);
        // Nothing can be sent any more.
        let err = task.send("late").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotConnected);
        assert_eq!(
            err.err_msg(),
            "sendSocketMessage:fail WebSocket is not connected"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_come_in_order_before_the_close_event() {
    within(async {
        let server = TestServer::start(ServerOptions::default(), |mut conn| async move {
            conn.send_text("m1").await;
            conn.send_binary(b"m2").await;
            conn.send_text("m3").await;
            conn.send_close(Some(1000), "").await;
            let _ = recv_skip_pongs(&mut conn).await;
            conn.shutdown().await;
        })
        .await;
        let task = connect_socket(ConnectOptions::new(server.url()));
        let log = log_events(&task);
        let l = log.clone();
        task.on_message(move |ev| {
            let text = match &ev.data {
                Data::Text(t) => format!("text:{t}"),
                Data::Binary(b) => format!("binary:{}", String::from_utf8_lossy(b)),
            };
            l.lock().unwrap().push(text);
        });
        let _task = task.await.expect("connect");
        wait_closed(&log).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            entries(&log),
            [
                "open:",
                "text:m1",
                "binary:m2",
                "text:m3",
                "close:1000::true"
            ]
        );
    })
    .await;
}

// 3. Server pings.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_ping_is_answered_with_the_same_pong() {
    within(async {
        let (server, mut seen) = server_with(ServerOptions::default(), |mut conn, tx| async move {
            conn.send_ping(b"p1").await;
            let _ = tx.send(conn.recv().await);
            support::echo_handler(conn).await;
        })
        .await;
        let task = connect_socket(ConnectOptions::new(server.url()))
            .await
            .expect("connect");
        let pong = bounded("the pong", seen.recv()).await.unwrap();
        assert_eq!(pong, Some(Message::Pong(b"p1".to_vec())));
        // The connection keeps working.
        round_trip(&task, Data::from("after the ping")).await;
        round_trip(&task, Data::from(vec![1u8, 2, 3])).await;
        assert_eq!(task.ready_state(), ReadyState::Open);
        task.close(CloseOptions::default()).await.expect("close");
    })
    .await;
}

// 4. Subprotocols.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subprotocol_negotiation() {
    within(async {
        let opts = ServerOptions {
            protocols: vec!["b".into()],
            ..ServerOptions::default()
        };
        let (server, mut seen) = server_with(opts, |conn, tx| async move {
            let _ = tx.send(conn.request.protocols.clone());
            support::echo_handler(conn).await;
        })
        .await;
        let task = connect_socket(ConnectOptions::new(server.url()).protocols(["a", "b"]));
        let opened = Arc::new(Mutex::new(Vec::new()));
        let o = opened.clone();
        task.on_open(move |ev| {
            o.lock().unwrap().push((
                ev.protocol.clone(),
                ev.header.get("sec-websocket-protocol").map(str::to_owned),
            ));
        });
        assert_eq!(task.protocol(), "");
        let task = task.await.expect("connect");
        assert_eq!(task.protocol(), "b");
        wait_until("on_open", || !opened.lock().unwrap().is_empty()).await;
        assert_eq!(
            *opened.lock().unwrap(),
            [("b".to_owned(), Some("b".to_owned()))]
        );
        let offered = bounded("the server's report", seen.recv()).await.unwrap();
        assert_eq!(offered, ["a", "b"]);
        round_trip(&task, Data::from("with a protocol")).await;

        // A server that supports none of them picks none.
        let plain = TestServer::echo().await;
        let task = connect_socket(ConnectOptions::new(plain.url()).protocols(["a", "b"]));
        let log = log_events(&task);
        let task = task.await.expect("connect");
        assert_eq!(task.protocol(), "");
        wait_until("on_open", || count(&log, "open") == 1).await;
        assert_eq!(entries(&log), ["open:"]);
        round_trip(&task, Data::from("without a protocol")).await;
    })
    .await;
}

// 5. Refused handshake.

/// A server that answers every upgrade request with `response`, written
/// at once (head and body in one write).
async fn answering(response: &'static [u8]) -> String {
    let addr = support::raw_server(move |mut stream| async move {
        if support::read_http_head(&mut stream).await.is_some() {
            let _ = stream.write_all(response).await;
            let _ = stream.shutdown().await;
        }
    })
    .await;
    format!("ws://{addr}/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_handshake_keeps_the_response_headers_and_body() {
    within(async {
        let unauthorized = answering(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"ws\"\r\n\
              Content-Type: text/plain\r\nContent-Length: 19\r\n\r\nlog in first, \x1bplz",
        )
        .await;
        let err = connect_socket(ConnectOptions::new(unauthorized))
            .await
            .expect_err("a 401 must fail");
        assert_eq!(err.kind(), ErrorKind::Handshake);
        assert_eq!(err.http_status(), Some(401));
        assert_eq!(
            err.response_headers(),
            Some(
                &[
                    (
                        "WWW-Authenticate".to_owned(),
                        "Basic realm=\"ws\"".to_owned()
                    ),
                    ("Content-Type".to_owned(), "text/plain".to_owned()),
                    ("Content-Length".to_owned(), "19".to_owned()),
                ][..]
            )
        );
        assert_eq!(err.response_body(), Some(&b"log in first, \x1bplz"[..]));
        // The errMsg is the one it always was.
        assert_eq!(
            err.err_msg(),
            "connectSocket:fail server answered HTTP 401 Unauthorized instead of 101 \
             Switching Protocols"
        );
        // Reported for another API, the response is still there.
        let task = connect_socket(ConnectOptions::new(
            answering(b"HTTP/1.1 302 Found\r\nLocation: ws://127.0.0.1:1/elsewhere\r\n\r\n").await,
        ));
        let _ = task.clone().await;
        let send = task.send("x").await.expect_err("not connected");
        assert_eq!(send.response_headers(), None, "{send:?}");
        let err = task.clone().await.expect_err("a 302 must fail");
        assert_eq!(err.http_status(), Some(302));
        let location = err
            .response_headers()
            .and_then(|h| h.iter().find(|(n, _)| n == "Location"));
        assert_eq!(
            location.map(|(_, v)| v.as_str()),
            Some("ws://127.0.0.1:1/elsewhere")
        );
        assert_eq!(err.response_body(), Some(&b""[..]));

        // A body longer than 512 bytes: its first 512.
        let long = answering(Box::leak(
            [
                &b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2000\r\n\r\n"[..],
                &[b'z'; 2000][..],
            ]
            .concat()
            .into_boxed_slice(),
        ))
        .await;
        let err = connect_socket(ConnectOptions::new(long)).await.unwrap_err();
        assert_eq!(err.http_status(), Some(503));
        let body = err.response_body().expect("a body");
        assert!(body.len() <= 512, "{}", body.len());
        assert!(body.iter().all(|&b| b == b'z'));

        // Failures without a response have neither.
        let refused = connect_socket(ConnectOptions::new("ws://127.0.0.1:1/"))
            .await
            .unwrap_err();
        assert_eq!(refused.response_headers(), None);
        assert_eq!(refused.response_body(), None);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_handshake_reports_the_http_status() {
    within(async {
        let opts = ServerOptions {
            reject: Some((403, "nope".into())),
            ..ServerOptions::default()
        };
        let server = TestServer::start(opts, support::echo_handler).await;
        let fails = Arc::new(Mutex::new(Vec::new()));
        let f = fails.clone();
        let task = connect_socket(
            ConnectOptions::new(server.url()).fail(move |e| f.lock().unwrap().push(e.clone())),
        );
        let log = log_events(&task);
        let err = task.clone().await.expect_err("a 403 must fail");
        assert_eq!(err.kind(), ErrorKind::Handshake);
        assert_eq!(err.http_status(), Some(403));
        assert!(
            err.err_msg()
                .starts_with("connectSocket:fail server answered HTTP 403"),
            "{}",
            err.err_msg()
        );
        wait_closed(&log).await;
        let log = entries(&log);
        assert_eq!(log.len(), 2, "{log:?}");
        assert_eq!(log[0], format!("error:{}", err.err_msg()));
        assert!(log[1].starts_with("close:1006:"), "{log:?}");
        assert!(log[1].ends_with(":false"), "{log:?}");
        // The failure came after `success`: `fail` is not called.
        assert!(fails.lock().unwrap().is_empty());
        assert_eq!(task.ready_state(), ReadyState::Closed);
        assert_eq!(server.upgraded(), 0);
    })
    .await;
}

// 6. Closed port.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_port_is_connection_refused() {
    within(async {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("local_addr").port()
        };
        let task = connect_socket(ConnectOptions::new(format!("ws://127.0.0.1:{port}/")));
        let log = log_events(&task);
        let err = task.clone().await.expect_err("nothing listens there");
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
        assert!(
            err.err_msg().starts_with("connectSocket:fail "),
            "{}",
            err.err_msg()
        );
        assert!(
            err.err_msg().contains("connection refused"),
            "{}",
            err.err_msg()
        );
        wait_closed(&log).await;
        let log = entries(&log);
        assert_eq!(log.len(), 2, "{log:?}");
        assert!(log[0].starts_with("error:connectSocket:fail "), "{log:?}");
        assert!(log[1].starts_with("close:1006:"), "{log:?}");
        assert_eq!(task.recv().await, None);
    })
    .await;
}

// 7. Client-initiated close.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_initiated_close() {
    within(async {
        let (server, mut seen) = server_with(ServerOptions::default(), |mut conn, tx| async move {
            let _ = tx.send(answer_close(&mut conn).await);
        })
        .await;
        let task = connect_socket(ConnectOptions::new(server.url()));
        let log = log_events(&task);
        let task = task.await.expect("connect");
        let successes = Arc::new(Mutex::new(Vec::new()));
        let s = successes.clone();
        let done = bounded(
            "close",
            task.close(
                CloseOptions::default()
                    .code(4000)
                    .reason("done")
                    .success(move |ok| s.lock().unwrap().push(ok.err_msg.clone())),
            ),
        )
        .await
        .expect("close");
        assert_eq!(done.err_msg, "closeSocket:ok");
        let got = bounded("the server's report", seen.recv()).await.unwrap();
        assert_eq!(got, Some((Some(4000), "done".to_owned())));
        wait_closed(&log).await;
        assert_eq!(task.ready_state(), ReadyState::Closed);
        assert_eq!(task.recv().await, None);
        wait_until("the success callback", || {
            !successes.lock().unwrap().is_empty()
        })
        .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(*successes.lock().unwrap(), ["closeSocket:ok"]);
        assert_eq!(entries(&log), ["open:", "close:4000:done:true"]);
        // A second close fails: the task is closed.
        let err = task.close(CloseOptions::default()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotConnected);
        assert_eq!(count(&log, "close:"), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]

async fn close_completion_resolves_after_the_task_is_closed() {
    within(async {
        for _ in 0..100 {
            let server = TestServer::echo().await;
            let task = connect_socket(ConnectOptions::new(server.url()))
                .await
                .expect("connect");
            task.close(CloseOptions::default()).await.expect("close");
            assert_eq!(
                task.ready_state(),
                ReadyState::Closed,
                "close resolved while the task was not CLOSED"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_close_arguments_fail_at_once() {
    within(async {
        let server = TestServer::echo().await;
        let task = connect_socket(ConnectOptions::new(server.url()))
            .await
            .expect("connect");
        for code in [999, 1001, 1005, 1006, 2999, 5000] {
            let err = task
                .close(CloseOptions::default().code(code))
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "code {code}");
            assert!(err.err_msg().starts_with("closeSocket:fail "), "{err}");
        }
        let err = task
            .close(CloseOptions::default().reason("x".repeat(124)))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert_eq!(task.ready_state(), ReadyState::Open);
        round_trip(&task, Data::from("still open")).await;
        task.close(CloseOptions::default().reason("x".repeat(123)))
            .await
            .expect("a 123-byte reason is allowed");
    })
    .await;
}

// 8. Protocol errors from the server.

/// Starts a server that sends `frame` right after the handshake and reports
/// the client's answer; connects with `configure(ConnectOptions::new(url))`
/// and checks the error event, the close event, their order and the close
/// code the server receives.
async fn run_protocol_case(
    frame: Vec<u8>,
    configure: impl FnOnce(ConnectOptions) -> ConnectOptions,
    expected_code: u16,
) {
    let frame = Arc::new(frame);
    let (tx, mut seen) = mpsc::unbounded_channel();
    let server = TestServer::start(ServerOptions::default(), move |mut conn| {
        let (frame, tx) = (frame.clone(), tx.clone());
        async move {
            conn.send_raw(&frame).await;
            let got = recv_skip_pongs(&mut conn).await;
            let _ = tx.send(got);
            conn.shutdown().await;
        }
    })
    .await;
    let task = connect_socket(configure(ConnectOptions::new(server.url())));
    let log = log_events(&task);
    let errors = Arc::new(Mutex::new(Vec::new()));
    let e = errors.clone();
    task.on_error(move |ev| e.lock().unwrap().push(ev.error.clone()));
    let task = task.await.expect("connect");
    assert_eq!(bounded("recv after the failure", task.recv()).await, None);
    wait_closed(&log).await;
    let log = entries(&log);
    assert_eq!(log.len(), 3, "{log:?}");
    assert_eq!(log[0], "open:");
    assert!(
        log[1].starts_with("error:connectSocket:fail "),
        "the error must come before the close: {log:?}"
    );
    assert!(
        log[2].starts_with(&format!("close:{expected_code}:")),
        "{log:?}"
    );
    assert!(log[2].ends_with(":false"), "{log:?}");
    let errors = errors.lock().unwrap().clone();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].kind(), ErrorKind::Protocol);
    assert_eq!(errors[0].close_code(), Some(expected_code));
    let got = bounded("the server's report", seen.recv()).await.unwrap();
    match got {
        Some(Message::Close(Some(code), _)) => assert_eq!(code, expected_code),
        other => panic!("the server expected a close frame, got {other:?}"),
    }
    assert_eq!(task.ready_state(), ReadyState::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_from_the_server_closes_with_1007() {
    within(async {
        let frame = codec::encode_frame(true, 0, codec::OP_TEXT, &[b'o', b'k', 0xC3, 0x28], None);
        run_protocol_case(frame, |o| o, 1007).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_bits_from_the_server_close_with_1002() {
    within(async {
        let frame = codec::encode_frame(true, 4, codec::OP_TEXT, b"x", None);
        run_protocol_case(frame, |o| o, 1002).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_over_max_frame_size_closes_with_1009() {
    within(async {
        let frame = codec::encode_frame(true, 0, codec::OP_BINARY, &[0u8; 1025], None);
        run_protocol_case(frame, |o| o.max_frame_size(1024), 1009).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_of_exactly_max_frame_size_passes() {
    within(async {
        let server = TestServer::echo().await;
        let task = connect_socket(ConnectOptions::new(server.url()).max_frame_size(1024))
            .await
            .expect("connect");
        round_trip(&task, Data::from(binary_payload(1024))).await;
        task.close(CloseOptions::default()).await.expect("close");
    })
    .await;
}

// 9. Broken handshakes and the connect timeout.

/// Connects to a raw server that reads the request and answers `reply`
/// (then closes TCP); returns the error, which must be a handshake or I/O
/// failure reported through the task, `on_error` and `on_close`.
async fn broken_handshake(reply: &'static [u8]) -> unisocket::SocketError {
    let addr = support::raw_server(move |mut stream| async move {
        if support::read_http_head(&mut stream).await.is_some() {
            let _ = stream.write_all(reply).await;
        }
        let _ = stream.shutdown().await;
    })
    .await;
    let task = connect_socket(ConnectOptions::new(format!("ws://{addr}/")));
    let log = log_events(&task);
    let err = bounded("the handshake failure", task.clone())
        .await
        .expect_err("a broken handshake must fail");
    assert!(
        matches!(err.kind(), ErrorKind::Handshake | ErrorKind::Io),
        "reply {:?}: {:?}",
        String::from_utf8_lossy(reply),
        err
    );
    assert!(
        err.err_msg().starts_with("connectSocket:fail "),
        "{}",
        err.err_msg()
    );
    wait_closed(&log).await;
    let log = entries(&log);
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0], format!("error:{}", err.err_msg()));
    assert!(log[1].starts_with("close:1006:"), "{log:?}");
    assert_eq!(task.ready_state(), ReadyState::Closed);
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_or_truncated_handshake_responses_fail() {
    within(async {
        let replies: [&'static [u8]; 7] = [
            b"garbage\r\n\r\n",
            b"\x00\xff\xfe\x01 not HTTP at all\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n",
            b"HTTP/1.1 101 Swi",
            b"",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
        ];
        for reply in replies {
            broken_handshake(reply).await;
        }
        // The clearly structured ones have clear kinds.
        let err = broken_handshake(b"HTTP/1.1 101 Swi").await;
        assert_eq!(err.kind(), ErrorKind::Handshake, "{err:?}");
        let err = broken_handshake(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi").await;
        assert_eq!(err.kind(), ErrorKind::Handshake, "{err:?}");
        assert_eq!(err.http_status(), Some(200));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_handshake_response_hits_the_limit() {
    within(async {
        let addr = support::raw_server(|mut stream| async move {
            if support::read_http_head(&mut stream).await.is_none() {
                return;
            }
            let _ = stream
                .write_all(b"HTTP/1.1 101 Switching Protocols\r\n")
                .await;
            let line = format!("X-Pad: {}\r\n", "a".repeat(1000));
            for _ in 0..1000 {
                if stream.write_all(line.as_bytes()).await.is_err() {
                    return;
                }
            }
            // Never finish the head; wait for the client to give up.
            let mut scratch = [0u8; 1024];
            while matches!(
                tokio::io::AsyncReadExt::read(&mut stream, &mut scratch).await,
                Ok(n) if n > 0
            ) {}
        })
        .await;
        let err = connect_socket(ConnectOptions::new(format!("ws://{addr}/")))
            .await
            .expect_err("an endless response must fail");
        assert_eq!(err.kind(), ErrorKind::Handshake, "{err:?}");
        assert!(err.err_msg().contains("limit"), "{}", err.err_msg());
    })
    .await;
}

// 10. The server drops TCP without a close frame.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_close_without_close_frame_is_1006() {
    within(async {
        let server = TestServer::start(ServerOptions::default(), |mut conn| async move {
            // Wait for the client's go, then close TCP without a close frame.
            let _ = recv_skip_pongs(&mut conn).await;
            conn.shutdown().await;
        })
        .await;
        let task = connect_socket(ConnectOptions::new(server.url()));
        let log = log_events(&task);
        let task = task.await.expect("connect");
        let t = task.clone();
        let pending = tokio::spawn(async move { t.recv().await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !pending.is_finished(),
            "recv returned before anything happened"
        );
        task.send("go").await.expect("send");
        let got = bounded("the pending recv", pending).await.expect("join");
        assert_eq!(got, None);
        wait_closed(&log).await;
        let log = entries(&log);
        assert_eq!(log.len(), 3, "{log:?}");
        assert_eq!(log[0], "open:");
        assert!(log[1].starts_with("error:connectSocket:fail "), "{log:?}");
        assert!(log[2].starts_with("close:1006:"), "{log:?}");
        assert!(log[2].ends_with(":false"), "{log:?}");
        assert_eq!(task.ready_state(), ReadyState::Closed);
        assert_eq!(task.recv().await, None);
    })
    .await;
}

// 11. The Stream impl.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_through_the_stream_impl() {
    within(async {
        let server = TestServer::start(ServerOptions::default(), |mut conn| async move {
            conn.send_text("one").await;
            conn.send_binary(&[2, 2]).await;
            conn.send_text("three").await;
            answer_close(&mut conn).await;
        })
        .await;
        let mut task = connect_socket(ConnectOptions::new(server.url()))
            .await
            .expect("connect");
        let mut got = Vec::new();
        for _ in 0..3 {
            let next = bounded(
                "the next stream item",
                std::future::poll_fn(|cx| Pin::new(&mut task).poll_next(cx)),
            )
            .await;
            got.push(next.expect("a message"));
        }
        assert_eq!(
            got,
            [
                Data::from("one"),
                Data::from(vec![2u8, 2]),
                Data::from("three")
            ]
        );
        task.close(CloseOptions::default()).await.expect("close");
        let end = bounded(
            "the end of the stream",
            std::future::poll_fn(|cx| Pin::new(&mut task).poll_next(cx)),
        )
        .await;
        assert_eq!(end, None);
    })
    .await;
}

// 12. Every send ends in exactly one success or one fail.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_send_settles_once_when_the_server_dies() {
    within(async {
        let server = TestServer::start(ServerOptions::default(), |mut conn| async move {
            // Take one message, then drop the socket with data unread (RST).
            let _ = recv_skip_pongs(&mut conn).await;
            drop(conn);
        })
        .await;
        let task = connect_socket(ConnectOptions::new(server.url()));
        let log = log_events(&task);
        let task = task.await.expect("connect");

        const N: usize = 100;
        let payload = unisocket::Bytes::from(binary_payload(256 << 10));
        let successes = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(AtomicUsize::new(0));
        let completes = Arc::new(AtomicUsize::new(0));
        let per_send: Arc<Vec<AtomicUsize>> =
            Arc::new((0..N).map(|_| AtomicUsize::new(0)).collect());
        let fail_msgs = Arc::new(Mutex::new(Vec::new()));
        let mut completions = Vec::with_capacity(N);
        for i in 0..N {
            let (s, f, c) = (successes.clone(), failures.clone(), completes.clone());
            let (p1, p2) = (per_send.clone(), per_send.clone());
            let msgs = fail_msgs.clone();
            completions.push(
                task.send(
                    SendOptions::new(payload.clone())
                        .success(move |ok| {
                            assert_eq!(ok.err_msg, "sendSocketMessage:ok");
                            s.fetch_add(1, Ordering::SeqCst);
                            p1[i].fetch_add(1, Ordering::SeqCst);
                        })
                        .fail(move |e| {
                            msgs.lock().unwrap().push(e.err_msg().to_owned());
                            f.fetch_add(1, Ordering::SeqCst);
                            p2[i].fetch_add(1, Ordering::SeqCst);
                        })
                        .complete(move |_| {
                            c.fetch_add(1, Ordering::SeqCst);
                        }),
                ),
            );
        }
        let mut ok = 0;
        let mut failed = 0;
        for (i, completion) in completions.into_iter().enumerate() {
            match bounded(&format!("completion {i}"), completion).await {
                Ok(s) => {
                    assert_eq!(s.err_msg, "sendSocketMessage:ok");
                    ok += 1;
                }
                Err(e) => {
                    assert!(
                        e.err_msg().starts_with("sendSocketMessage:fail "),
                        "{}",
                        e.err_msg()
                    );
                    failed += 1;
                }
            }
        }
        assert_eq!(ok + failed, N);
        wait_until("every callback", || {
            successes.load(Ordering::SeqCst) + failures.load(Ordering::SeqCst) == N
                && completes.load(Ordering::SeqCst) == N
        })
        .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(successes.load(Ordering::SeqCst), ok);
        assert_eq!(failures.load(Ordering::SeqCst), failed);
        assert_eq!(completes.load(Ordering::SeqCst), N);
        for (i, n) in per_send.iter().enumerate() {
            assert_eq!(n.load(Ordering::SeqCst), 1, "send {i} settled {n:?} times");
        }
        for m in fail_msgs.lock().unwrap().iter() {
            assert!(m.starts_with("sendSocketMessage:fail "), "{m}");
        }
        // 25 MiB cannot all fit in the socket buffers of a dead peer.
        assert!(failed > 0, "no send failed ({ok} succeeded)");
        wait_closed(&log).await;
        let log = entries(&log);
        assert_eq!(log.len(), 3, "{log:?}");
        assert!(log[1].starts_with("error:connectSocket:fail "), "{log:?}");
        assert!(log[2].starts_with("close:1006:"), "{log:?}");
        // After the end, sends fail at once.
        let err = task.send("late").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotConnected);
    })
    .await;
}
