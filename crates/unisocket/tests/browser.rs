//! The same API in a real browser: these tests are built for
//! `wasm32-unknown-unknown` and run in headless Chromium by
//! `scripts/browser-tests.sh`, against a Node `ws` echo server
//! (`tests/interop/ws_server.js`) that the script starts on
//! `UNISOCKET_BROWSER_PORT` (read when the tests are built).
//!
//! They run at once in one page; the global functions, which act on the
//! page's oldest task, are tested alone in `tests/browser_global.rs`.
#![cfg(target_arch = "wasm32")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use unisocket::{
    connect_socket, CloseOptions, ConnectOptions, Data, ErrorKind, ReadyState, ReconnectPolicy,
    SendOptions, SocketTask,
};
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

#[path = "support/browser.rs"]
mod support;
use support::{entries, log, push, refused_url, silent_url, sleep, text, until, url};

/// What the server saw of the last close of a connection to `path`.
async fn last_close_seen_by_server(path: &str) -> String {
    let task = connect_socket(ConnectOptions::new(format!("{}{path}", url())))
        .await
        .unwrap();
    task.send("last-close").await.unwrap();
    let seen = text(&task.recv().await.unwrap());
    task.close(CloseOptions::default()).await.unwrap();
    seen
}

#[wasm_bindgen_test]
async fn callbacks_in_uni_app_order() {
    let log = log();
    let task = connect_socket(
        ConnectOptions::new(url())
            .success({
                let log = log.clone();
                move |ok| push(&log, ok.err_msg.clone())
            })
            .fail({
                let log = log.clone();
                move |e| push(&log, format!("fail {}", e.err_msg()))
            }),
    );
    assert_eq!(task.ready_state(), ReadyState::Connecting);
    let t = task.clone();
    task.on_open({
        let log = log.clone();
        move |_| {
            push(&log, "open");
            t.send(SendOptions::new("hello").success({
                let log = log.clone();
                move |ok| push(&log, ok.err_msg.clone())
            }));
        }
    });
    let t = task.clone();
    task.on_message({
        let log = log.clone();
        move |ev| {
            push(&log, format!("message {}", text(&ev.data)));
            t.close(CloseOptions::default());
        }
    });
    task.on_close({
        let log = log.clone();
        move |ev| push(&log, format!("close {} {}", ev.code, ev.was_clean))
    });
    until("the close", || entries(&log).len() == 5).await;
    assert_eq!(
        entries(&log),
        [
            "connectSocket:ok",
            "open",
            "sendSocketMessage:ok",
            "message hello",
            "close 1000 true",
        ]
    );
    assert_eq!(task.ready_state(), ReadyState::Closed);
}

#[wasm_bindgen_test]
async fn async_text_and_binary_round_trips() {
    let task = connect_socket(ConnectOptions::new(url())).await.unwrap();
    assert_eq!(task.ready_state(), ReadyState::Open);
    task.send("héllo wörld").await.unwrap();
    assert_eq!(task.recv().await, Some(Data::from("héllo wörld")));
    let bytes: Vec<u8> = (0..=255).collect();
    task.send(bytes.clone()).await.unwrap();
    assert_eq!(task.recv().await, Some(Data::from(bytes)));
    // A large binary message, through the browser's buffering.
    let big = vec![7u8; 1 << 20];
    task.send(big.clone()).await.unwrap();
    assert_eq!(task.recv().await, Some(Data::from(big)));
    task.close(CloseOptions::default()).await.unwrap();
    assert_eq!(task.closed().await.code, 1000);
}

#[wasm_bindgen_test]
async fn subprotocol_is_negotiated() {
    let task = connect_socket(ConnectOptions::new(url()).protocols(["x-other", "chat"]))
        .await
        .unwrap();
    assert_eq!(task.protocol(), "chat");
    task.close(CloseOptions::default()).await.unwrap();
}

#[wasm_bindgen_test]
async fn close_code_and_reason_reach_the_server() {
    let task = connect_socket(ConnectOptions::new(format!("{}closing", url())))
        .await
        .unwrap();
    task.close(CloseOptions::default().code(4001).reason("bye now"))
        .await
        .unwrap();
    let ev = task.closed().await;
    assert_eq!((ev.code, ev.reason.as_str()), (4001, "bye now"));
    assert_eq!(
        last_close_seen_by_server("closing").await,
        "last-close 4001 bye now"
    );
}

#[wasm_bindgen_test]
async fn codes_a_browser_cannot_send_fail_at_once() {
    let task = connect_socket(ConnectOptions::new(url())).await.unwrap();
    let err = task
        .close(CloseOptions::default().code(1001))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{}", err.err_msg());
    let err = task
        .close(CloseOptions::default().endpoint_code(1001))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{}", err.err_msg());
    assert_eq!(
        err.err_msg(),
        "closeSocket:fail close code 1001 is not supported in the browser (a page may close with 1000 or 3000-4999 only)"
    );
    let err = task.ping("x").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert_eq!(
        err.err_msg(),
        "sendSocketMessage:fail pings are not supported in the browser (a page cannot send them)"
    );
    assert_eq!(task.ready_state(), ReadyState::Open);
    task.close(CloseOptions::default()).await.unwrap();
}

#[wasm_bindgen_test]
async fn server_close_with_code_and_reason() {
    let task = connect_socket(ConnectOptions::new(url())).await.unwrap();
    let log = log();
    task.on_error({
        let log = log.clone();
        move |ev| push(&log, format!("error {}", ev.error.err_msg()))
    });
    task.send("close 4002 server says bye").await.unwrap();
    let ev = task.closed().await;
    assert_eq!(
        (ev.code, ev.reason.as_str(), ev.was_clean),
        (4002, "server says bye", true)
    );
    assert_eq!(
        entries(&log),
        Vec::<String>::new(),
        "no error for a clean close"
    );
    assert!(task.send("late").await.is_err());
}

#[wasm_bindgen_test]
async fn server_drop_is_an_error_then_1006() {
    let task = connect_socket(ConnectOptions::new(url())).await.unwrap();
    let log = log();
    task.on_error({
        let log = log.clone();
        move |ev| push(&log, format!("error {:?}", ev.error.kind()))
    });
    task.send("drop").await.unwrap();
    let ev = task.closed().await;
    assert_eq!((ev.code, ev.was_clean), (1006, false));
    assert_eq!(entries(&log), ["error Closed"]);
}

#[wasm_bindgen_test]
async fn refused_connection_fails_with_error_then_close() {
    let log = log();
    let task = connect_socket(ConnectOptions::new(refused_url()));
    task.on_error({
        let log = log.clone();
        move |ev| push(&log, format!("error {:?}", ev.error.kind()))
    });
    task.on_close({
        let log = log.clone();
        move |ev| push(&log, format!("close {}", ev.code))
    });
    let err = task.clone().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert!(
        err.err_msg()
            .starts_with("connectSocket:fail the browser could not open the connection"),
        "{}",
        err.err_msg()
    );
    until("the close", || entries(&log).len() == 2).await;
    assert_eq!(entries(&log), ["error Io", "close 1006"]);
}

#[wasm_bindgen_test]
async fn send_before_open_fails_or_waits() {
    // Without queue_until_open, as in uni-app: fails at once.
    let task = connect_socket(ConnectOptions::new(url()));
    let err = task.send("early").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotConnected);
    task.close(CloseOptions::default()).await.unwrap();
    // With it: sent once open, in order.
    let task = connect_socket(ConnectOptions::new(url()).queue_until_open(true));
    let first = task.send("one");
    let second = task.send("two");
    first.await.unwrap();
    second.await.unwrap();
    assert_eq!(task.recv().await, Some(Data::from("one")));
    assert_eq!(task.recv().await, Some(Data::from("two")));
    task.close(CloseOptions::default()).await.unwrap();
}

#[wasm_bindgen_test]
async fn close_while_connecting_aborts() {
    let task = connect_socket(ConnectOptions::new(url()));
    task.close(CloseOptions::default()).await.unwrap();
    let ev = task.closed().await;
    assert_eq!(ev.code, 1006);
    assert_eq!(task.clone().await.unwrap_err().kind(), ErrorKind::Aborted);
}

#[wasm_bindgen_test]
async fn late_listeners_and_held_messages() {
    let task = connect_socket(ConnectOptions::new(url())).await.unwrap();
    task.send("held").await.unwrap();
    // No message listener yet: the message waits.
    sleep(100).await;
    let log = log();
    task.on_open({
        let log = log.clone();
        move |_| push(&log, "late open")
    });
    task.on_message({
        let log = log.clone();
        move |ev| push(&log, format!("message {}", text(&ev.data)))
    });
    until("the held message", || entries(&log).len() == 2).await;
    assert_eq!(entries(&log), ["late open", "message held"]);
    task.close(CloseOptions::default()).await.unwrap();
}

#[wasm_bindgen_test]
async fn what_a_browser_cannot_do_fails_at_once() {
    let cases: Vec<(ConnectOptions, &str)> = vec![
        (
            ConnectOptions::new(url()).header("X-Token", "abc"),
            "connectSocket:fail custom headers are not supported in the browser",
        ),
        (
            ConnectOptions::new(url()).proxy("http://127.0.0.1:3128"),
            "connectSocket:fail proxies are not supported in the browser (the browser uses its own proxy settings)",
        ),
        (
            ConnectOptions::new(url()).heartbeat(Duration::from_secs(1), Duration::from_secs(1)),
            "connectSocket:fail heartbeat pings are not supported in the browser (the browser cannot send pings)",
        ),
        (
            ConnectOptions::new("ws://user:pw@127.0.0.1:9/"),
            "connectSocket:fail credentials in the URL are not supported in the browser (the browser sends no Authorization header)",
        ),
        (
            ConnectOptions::new(url()).dangerous().accept_invalid_certs(),
            "connectSocket:fail TLS settings (CAs, client certificates, skipping verification) are not supported in the browser (the browser uses its own certificate store)",
        ),
        (
            ConnectOptions::new(url())
                .deflate(unisocket::DeflateConfig::default().client_no_context_takeover(true)),
            "connectSocket:fail permessage-deflate parameters are not supported in the browser (the browser negotiates compression itself)",
        ),
        (
            ConnectOptions::new(url()).max_frame_size(1 << 20),
            "connectSocket:fail frame and handshake size limits are not supported in the browser (the browser reads frames and the handshake itself; max_message_size works)",
        ),
    ];
    for (options, expected) in cases {
        let failed = Arc::new(Mutex::new(None));
        let task = connect_socket(options.fail({
            let failed = failed.clone();
            move |e| *failed.lock().unwrap() = Some(e.clone())
        }));
        let err = failed.lock().unwrap().take().expect("fail ran at once");
        assert_eq!(err.err_msg(), expected);
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        assert_eq!(task.ready_state(), ReadyState::Closed);
    }
}

#[wasm_bindgen_test]
async fn message_size_limit_ends_the_connection() {
    let task = connect_socket(ConnectOptions::new(url()).max_message_size(1000))
        .await
        .unwrap();
    task.send(vec![1u8; 2000]).await.unwrap();
    let ev = task.closed().await;
    assert_eq!(ev.code, 1009, "{}", ev.reason);
    assert!(ev.reason.contains("max_message_size"), "{}", ev.reason);
}

#[wasm_bindgen_test]
async fn reconnect_policy_reconnects_and_replays_nothing() {
    let task = connect_socket(
        ConnectOptions::new(url())
            .reconnect(ReconnectPolicy::default().min_delay(Duration::from_millis(50))),
    );
    let opens = log();
    task.on_open({
        let opens = opens.clone();
        move |_| push(&opens, "open")
    });
    task.clone().await.unwrap();
    task.send("drop").await.unwrap();
    until("the reconnect", || entries(&opens).len() == 2).await;
    task.send("again").await.unwrap();
    assert_eq!(task.recv().await, Some(Data::from("again")));
    task.close(CloseOptions::default()).await.unwrap();
    assert_eq!(task.closed().await.code, 1000);
}

#[wasm_bindgen_test]
async fn buffered_amount_and_stream() {
    use futures_core::Stream;
    use std::pin::Pin;
    use std::task::Poll;

    let task: SocketTask = connect_socket(ConnectOptions::new(url())).await.unwrap();
    assert_eq!(task.buffered_amount(), 0);
    task.send("a").await.unwrap();
    task.send("b").await.unwrap();
    let mut stream = task.clone();
    let mut got = Vec::new();
    while got.len() < 2 {
        let next = std::future::poll_fn(|cx| match Pin::new(&mut stream).poll_next(cx) {
            Poll::Ready(item) => Poll::Ready(item),
            Poll::Pending => Poll::Pending,
        })
        .await;
        got.push(text(&next.unwrap()));
    }
    assert_eq!(got, ["a", "b"]);
    task.close(CloseOptions::default()).await.unwrap();
}

#[wasm_bindgen_test]
async fn default_compression_is_the_browsers() {
    let task = connect_socket(ConnectOptions::new(url()).per_message_deflate(true))
        .await
        .unwrap();
    task.send("x".repeat(10_000)).await.unwrap();
    assert_eq!(task.recv().await, Some(Data::from("x".repeat(10_000))));
    task.close(CloseOptions::default()).await.unwrap();
}

#[wasm_bindgen_test]
async fn unanswered_close_times_out() {
    let task = connect_socket(ConnectOptions::new(url()).close_timeout(Duration::from_millis(300)))
        .await
        .unwrap();
    task.send("mute").await.unwrap();
    sleep(50).await;
    task.close(CloseOptions::default()).await.unwrap();
    let ev = task.closed().await;
    assert_eq!(
        (ev.code, ev.reason.as_str(), ev.was_clean),
        (
            1006,
            "the server did not answer the close within 300 ms",
            false
        )
    );
}

#[wasm_bindgen_test]
async fn unread_messages_past_max_held_bytes_end_the_connection() {
    let task = connect_socket(ConnectOptions::new(url()).max_held_bytes(10_000))
        .await
        .unwrap();
    let log = log();
    task.on_error({
        let log = log.clone();
        move |ev| push(&log, format!("{:?}", ev.error.kind()))
    });
    // Nobody calls `recv`: the echoes pile up.
    for _ in 0..5 {
        task.send(vec![0u8; 4000]).await.unwrap();
    }
    let ev = task.closed().await;
    assert_eq!(ev.code, 1006, "{}", ev.reason);
    assert!(ev.reason.contains("max_held_bytes"), "{}", ev.reason);
    assert_eq!(entries(&log), ["BufferFull"]);
}

#[wasm_bindgen_test]
async fn connect_timeout_against_a_server_that_never_answers() {
    let log = log();
    let task =
        connect_socket(ConnectOptions::new(silent_url()).timeout(Duration::from_millis(300)));
    task.on_close({
        let log = log.clone();
        move |ev| push(&log, format!("close {}", ev.code))
    });
    let err = task.clone().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(err.err_msg(), "connectSocket:fail timed out after 300 ms");
    until("the close", || entries(&log).len() == 1).await;
    assert_eq!(entries(&log), ["close 1006"]);
}
