//! The client's timers on simulated time: the reconnect backoff, the
//! connection timeout, the heartbeat, the close handshake's timeout and the
//! close linger, measured on tokio's paused
//! clock (`support::sim`) over real sockets on 127.0.0.1. The clock moves
//! only when a test advances it, so each test checks that nothing happens
//! 1 ms before a timer's time and that it has happened 1 ms after (tokio's
//! timers have a resolution of 1 ms), whatever the machine's load.
//!
//! The driver reads tokio's clock for the protocol's deadlines (the core
//! takes `now` as an argument), so the heartbeat and the close handshake
//! follow the paused clock too.

mod support;

use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{advance, Instant};

use support::codec::Message;
use support::events::{count, entries, log_events};
use support::sim::{settle, simulated};
use support::{ServerOptions, TestServer, WAIT_TIMEOUT};
use unisocket::{
    connect_socket, CloseOptions, ConnectOptions, ErrorKind, ReadyState, ReconnectPolicy,
};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Awaits `fut`, panicking with `what` after [`WAIT_TIMEOUT`] of real time
/// (a timer of the paused clock would never fire): for what comes over a
/// socket, which takes no simulated time.
async fn arrives<F: IntoFuture>(what: &str, fut: F) -> F::Output {
    let (alarm, rings) = oneshot::channel::<()>();
    std::thread::spawn(move || {
        std::thread::sleep(WAIT_TIMEOUT);
        let _ = alarm.send(());
    });
    tokio::select! {
        out = fut.into_future() => out,
        _ = rings => panic!("{what} did not come within {WAIT_TIMEOUT:?}"),
    }
}

/// A listener that drops each connection as soon as it accepts it, and
/// reports each accept.
async fn dropping_server() -> (String, mpsc::UnboundedReceiver<Instant>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}/", listener.local_addr().expect("local_addr"));
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
            if tx.send(Instant::now()).is_err() {
                break;
            }
        }
    });
    (url, rx)
}

#[test]
fn reconnect_attempts_wait_their_delay_which_doubles_up_to_the_maximum() {
    const MIN: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(4);
    const ATTEMPTS: u32 = 4;
    simulated(|| async {
        let (url, mut accepts) = dropping_server().await;
        let policy = ReconnectPolicy::default()
            .min_delay(MIN)
            .max_delay(MAX)
            .max_attempts(Some(ATTEMPTS));
        let task = connect_socket(
            ConnectOptions::new(url)
                .timeout(Duration::from_secs(3600))
                .no_proxy()
                .reconnect(policy),
        );
        let (tx, mut reconnecting) = mpsc::unbounded_channel();
        task.on_reconnecting(move |ev| {
            let _ = tx.send((ev.attempt, ev.delay));
        });
        let start = Instant::now();
        let first = arrives("the first try", accepts.recv()).await;
        assert_eq!(first, Some(start), "the first try waits for nothing");

        // The delay of attempt n is drawn between the minimum and a cap
        // that starts at the minimum and doubles up to the maximum.
        let mut cap = MIN;
        for n in 1..=ATTEMPTS {
            let (attempt, delay) = arrives("on_reconnecting", reconnecting.recv())
                .await
                .expect("on_reconnecting");
            assert_eq!(attempt, n);
            assert!(
                (MIN..=cap).contains(&delay),
                "attempt {n}: {delay:?} is not within [{MIN:?}, {cap:?}]"
            );
            let waiting = Instant::now();
            advance(delay - ms(1)).await;
            settle().await;
            assert!(
                accepts.try_recv().is_err(),
                "attempt {n} came before its delay of {delay:?}"
            );
            advance(ms(2)).await;
            let tried = arrives("the attempt", accepts.recv()).await;
            assert_eq!(tried, Some(waiting + delay + ms(1)), "attempt {n}");
            cap = (cap * 2).min(MAX);
        }
        assert_eq!(cap, MAX, "the caps reached the maximum");
        assert!(
            MIN * 2u32.pow(ATTEMPTS - 1) > MAX,
            "the maximum capped a delay"
        );

        // The last attempt failed too: the task gives up, tries no more.
        let close = arrives("the close", task.closed()).await;
        assert_eq!((close.code, close.was_clean), (1006, false), "{close:?}");
        assert_eq!(task.ready_state(), ReadyState::Closed);
        advance(MAX * 2).await;
        settle().await;
        assert!(accepts.try_recv().is_err(), "an attempt after giving up");
        assert!(
            reconnecting.try_recv().is_err(),
            "a reconnect after giving up"
        );
    });
}

#[test]
fn connect_timeout_fires_at_its_time_and_not_before() {
    const TIMEOUT: Duration = Duration::from_secs(5);
    simulated(|| async {
        let (tx, mut requests) = mpsc::unbounded_channel();
        let addr = support::raw_server(move |mut stream| {
            let tx = tx.clone();
            async move {
                let _ = support::read_http_head(&mut stream).await;
                let _ = tx.send(());
                // Hold the connection open and say nothing.
                std::future::pending::<()>().await;
            }
        })
        .await;
        let fails = Arc::new(Mutex::new(Vec::new()));
        let f = fails.clone();
        let task = connect_socket(
            ConnectOptions::new(format!("ws://{addr}/"))
                .timeout(TIMEOUT)
                .no_proxy()
                .fail(move |e| f.lock().unwrap().push(e.err_msg().to_owned())),
        );
        let log = log_events(&task);
        arrives("the request", requests.recv()).await;

        advance(TIMEOUT - ms(1)).await;
        settle().await;
        assert_eq!(task.ready_state(), ReadyState::Connecting);
        assert_eq!(entries(&log), Vec::<String>::new());

        advance(ms(2)).await;
        let err = arrives("the timeout", task.clone())
            .await
            .expect_err("must time out");
        let msg = "connectSocket:fail timed out after 5000 ms";
        assert_eq!(err.kind(), ErrorKind::Timeout);
        assert_eq!(err.err_msg(), msg);
        let close = arrives("the close", task.closed()).await;
        assert_eq!((close.code, close.was_clean), (1006, false), "{close:?}");
        assert_eq!(
            entries(&log),
            [
                format!("error:{msg}"),
                "close:1006:timed out after 5000 ms:false".to_owned()
            ]
        );
        // The timeout came after `success`: `fail` is not called.
        assert!(fails.lock().unwrap().is_empty());
    });
}

#[test]
fn close_lingers_for_the_servers_tcp_close_up_to_the_close_timeout() {
    const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
    simulated(|| async {
        // Answers the close frame, then keeps TCP open after the client's
        // end of it: the client lingers for a FIN that never comes.
        let (tx, mut lingering) = mpsc::unbounded_channel();
        let server = TestServer::start(ServerOptions::default(), move |mut conn| {
            let tx = tx.clone();
            async move {
                while let Some(msg) = conn.recv().await {
                    if let Message::Close(code, reason) = msg {
                        conn.send_close(code, &reason).await;
                    }
                }
                // The client shut its side down: it is lingering now.
                let _ = tx.send(());
                std::future::pending::<()>().await;
            }
        })
        .await;
        let task = connect_socket(
            ConnectOptions::new(server.url())
                .close_timeout(CLOSE_TIMEOUT)
                .no_proxy(),
        );
        let log = log_events(&task);
        arrives("the open", task.opened()).await.expect("open");
        let closing = task.close(CloseOptions::default().code(4000).reason("bye"));
        arrives("the client's FIN", lingering.recv()).await;

        advance(CLOSE_TIMEOUT - ms(1)).await;
        settle().await;
        assert_eq!(count(&log, "close:"), 0, "{:?}", entries(&log));

        advance(ms(2)).await;
        let close = arrives("the close", task.closed()).await;
        assert_eq!(
            (close.code, close.reason.as_str(), close.was_clean),
            (4000, "bye", true),
            "{close:?}"
        );
        arrives("close()", closing).await.expect("close() succeeds");
        assert_eq!(entries(&log), ["open:", "close:4000:bye:true"]);
    });
}

/// A server that takes the connection, reports every frame it gets, and
/// never answers anything (no pong, no close frame): silent, but there.
async fn silent_server() -> (TestServer, mpsc::UnboundedReceiver<Message>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let server = TestServer::start(ServerOptions::default(), move |mut conn| {
        let tx = tx.clone();
        async move {
            while let Some(msg) = conn.recv().await {
                let _ = tx.send(msg);
            }
            std::future::pending::<()>().await;
        }
    })
    .await;
    (server, rx)
}

#[test]
fn heartbeat_pings_at_its_interval_and_ends_a_silent_connection_at_its_timeout() {
    const INTERVAL: Duration = Duration::from_secs(10);
    const TIMEOUT: Duration = Duration::from_secs(5);
    simulated(|| async {
        let (server, mut frames) = silent_server().await;
        let task = connect_socket(
            ConnectOptions::new(server.url())
                .heartbeat(INTERVAL, TIMEOUT)
                .no_proxy(),
        );
        let log = log_events(&task);
        arrives("the open", task.opened()).await.expect("open");

        // The first ping goes out one interval after the open, not before.
        advance(INTERVAL - ms(1)).await;
        settle().await;
        assert!(frames.try_recv().is_err(), "a ping before the interval");
        advance(ms(2)).await;
        let ping = arrives("the heartbeat's ping", frames.recv()).await;
        assert!(matches!(ping, Some(Message::Ping(_))), "{ping:?}");

        // The server says nothing: the connection is taken as dead one
        // timeout after the ping, not before.
        advance(TIMEOUT - ms(2)).await;
        settle().await;
        assert_eq!(task.ready_state(), ReadyState::Open);
        assert_eq!(entries(&log), ["open:"]);
        advance(ms(3)).await;
        let close = arrives("the close", task.closed()).await;
        assert_eq!(
            (close.code, close.reason.as_str(), close.was_clean),
            (1006, "no pong within 5000 ms", false),
            "{close:?}"
        );
        assert_eq!(
            entries(&log),
            [
                "open:",
                "error:connectSocket:fail no pong within 5000 ms",
                "close:1006:no pong within 5000 ms:false"
            ]
        );
    });
}

#[test]
fn an_unanswered_close_ends_at_the_close_timeout_and_not_before() {
    const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
    simulated(|| async {
        let (server, mut frames) = silent_server().await;
        let task = connect_socket(
            ConnectOptions::new(server.url())
                .close_timeout(CLOSE_TIMEOUT)
                .no_proxy(),
        );
        let log = log_events(&task);
        arrives("the open", task.opened()).await.expect("open");
        let closing = task.close(CloseOptions::default().code(4000).reason("bye"));
        let frame = arrives("the close frame", frames.recv()).await;
        assert!(
            matches!(&frame, Some(Message::Close(Some(4000), reason)) if reason == "bye"),
            "{frame:?}"
        );

        advance(CLOSE_TIMEOUT - ms(1)).await;
        settle().await;
        assert_eq!(task.ready_state(), ReadyState::Closing);
        assert_eq!(count(&log, "close:"), 0, "{:?}", entries(&log));

        advance(ms(2)).await;
        let close = arrives("the close", task.closed()).await;
        assert_eq!(
            (close.code, close.reason.as_str(), close.was_clean),
            (
                1006,
                "the server did not answer the close within 3000 ms",
                false
            ),
            "{close:?}"
        );
        let closed = arrives("close()", closing).await.expect("close() succeeds");
        assert_eq!(closed.err_msg, "closeSocket:ok");
        // An unanswered close is no error: the application asked to close.
        assert_eq!(
            entries(&log),
            [
                "open:",
                "close:1006:the server did not answer the close within 3000 ms:false"
            ]
        );
    });
}
