//! The global functions of uni-app (`on_socket_*`, `send_socket_message`,
//! `close_socket`, `current_socket`) over real sockets on 127.0.0.1.
//!
//! They act on process-global state (the oldest live task), so every test of
//! this file holds [`SERIAL`] for its whole run, runs on a runtime of its own,
//! and closes every task it made before it ends. Scenarios that need a fresh
//! process (no task made yet) or leave a task behind run in a child process.

mod support;

use support::events::{entries, text_of, Log};
use support::{bounded, wait_until, within, WAIT_TIMEOUT};

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use support::codec::Message;
use support::{ServerConn, ServerOptions, TestServer};
use unisocket::{
    close_socket, connect_socket, current_socket, on_socket_close, on_socket_error,
    on_socket_message, on_socket_open, send_socket_message, CloseOptions, ConnectOptions, Data,
    ErrorKind, ReadyState, SendOptions, SocketTask,
};

/// Serializes the tests of this file.
static SERIAL: Mutex<()> = Mutex::new(());

/// Runs `body` alone (holding [`SERIAL`]) on a fresh multi-thread runtime,
/// under the tests' bound, after checking that no task is alive.
fn serial_test<F: Future<Output = ()>>(body: F) {
    let _guard: MutexGuard<'_, ()> = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        wait_until("no live task (a previous test left one alive)", || {
            current_socket().is_none()
        })
        .await;
        within(body).await;
    });
}

fn opts(url: impl Into<String>) -> ConnectOptions {
    ConnectOptions::new(url).timeout(WAIT_TIMEOUT)
}

/// A server that offers the subprotocols `pa`..`pd` (so a test can tell its
/// tasks apart through `protocol()`), answers each text message with
/// `<path>|<text>`, and answers a close with the same code and reason.
async fn tagging_server() -> TestServer {
    let protocols = ["pa", "pb", "pc", "pd"].map(String::from).to_vec();
    TestServer::start(
        ServerOptions {
            protocols,
            ..ServerOptions::default()
        },
        |mut conn: ServerConn| async move {
            let path = conn.request.path.clone();
            while let Some(msg) = conn.recv().await {
                match msg {
                    Message::Text(t) => conn.send_text(&format!("{path}|{t}")).await,
                    Message::Ping(p) => conn.send_pong(&p).await,
                    Message::Close(code, reason) => {
                        conn.send_close(code, &reason).await;
                        conn.shutdown().await;
                        return;
                    }
                    _ => {}
                }
            }
        },
    )
    .await
}

/// The subprotocol of the current socket, `None` with no live task.
fn current_protocol() -> Option<String> {
    current_socket().map(|t| t.protocol())
}

#[test]
fn with_no_live_task_send_and_close_fail_not_connected() {
    serial_test(async {
        assert!(current_socket().is_none());
        let log: Log = Arc::default();
        let (a, b, c) = (log.clone(), log.clone(), log.clone());
        let completion = send_socket_message(
            SendOptions::new("nobody")
                .success(move |ok| a.lock().unwrap().push(format!("success:{}", ok.err_msg)))
                .fail(move |e| b.lock().unwrap().push(format!("fail:{}", e.err_msg())))
                .complete(move |r| c.lock().unwrap().push(format!("complete:{}", r.is_ok()))),
        );
        // The callbacks ran at once.
        assert_eq!(
            entries(&log),
            [
                "fail:sendSocketMessage:fail WebSocket is not connected",
                "complete:false"
            ]
        );
        let err = bounded("send", completion).await.unwrap_err();
        assert_eq!(
            err.err_msg(),
            "sendSocketMessage:fail WebSocket is not connected"
        );
        assert_eq!(err.kind(), ErrorKind::NotConnected);
        // Plain data converts into SendOptions too.
        let err = bounded("send", send_socket_message("plain"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotConnected);

        let log: Log = Arc::default();
        let (a, b, c) = (log.clone(), log.clone(), log.clone());
        let completion = close_socket(
            CloseOptions::default()
                .success(move |ok| a.lock().unwrap().push(format!("success:{}", ok.err_msg)))
                .fail(move |e| b.lock().unwrap().push(format!("fail:{}", e.err_msg())))
                .complete(move |r| c.lock().unwrap().push(format!("complete:{}", r.is_ok()))),
        );
        assert_eq!(
            entries(&log),
            [
                "fail:closeSocket:fail WebSocket is not connected",
                "complete:false"
            ]
        );
        let err = bounded("close", completion).await.unwrap_err();
        assert_eq!(err.err_msg(), "closeSocket:fail WebSocket is not connected");
        assert_eq!(err.kind(), ErrorKind::NotConnected);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(entries(&log).len(), 2, "a callback ran twice");
    });
}

#[test]
fn current_socket_follows_the_oldest_live_task() {
    serial_test(async {
        let server = tagging_server().await;
        assert!(current_socket().is_none());
        let tasks: Vec<SocketTask> = ["pa", "pb", "pc"]
            .iter()
            .map(|p| connect_socket(opts(server.url()).protocols([*p])))
            .collect();
        // A task is current from connect_socket on (while CONNECTING too).
        let current = current_socket().expect("a current socket");
        for t in &tasks {
            bounded("open", t.opened()).await.expect("open");
        }
        assert_eq!(current.protocol(), "pa");
        assert_eq!(current_protocol().as_deref(), Some("pa"));
        // Closing a younger task does not change the current one.
        bounded("close B", tasks[1].close(CloseOptions::default()))
            .await
            .expect("close B");
        assert_eq!(current_protocol().as_deref(), Some("pa"));
        bounded("close A", tasks[0].close(CloseOptions::default()))
            .await
            .expect("close A");
        assert_eq!(current_protocol().as_deref(), Some("pc"));
        // A task that failed before opening is not current.
        let refused = connect_socket(ConnectOptions::new("htp://x"));
        assert_eq!(refused.ready_state(), ReadyState::Closed);
        assert_eq!(current_protocol().as_deref(), Some("pc"));
        bounded("close C", close_socket(CloseOptions::default()))
            .await
            .expect("close C");
        assert_eq!(tasks[2].ready_state(), ReadyState::Closed);
        assert!(current_socket().is_none());
    });
}

/// Runs in a child process (see the test below): a task whose runtime has
/// been shut down is not alive, so the globals must move on to the next task.
#[test]
#[ignore = "run by dead_runtime_task_is_not_current in a child process"]
fn dead_runtime_child() {
    if !in_child() {
        return;
    }
    // The server lives on its own thread and runtime for the whole test.
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("server runtime");
        rt.block_on(async {
            let server = tagging_server().await;
            addr_tx.send(server.url()).expect("send url");
            std::future::pending::<()>().await;
        });
    });
    let url = addr_rx
        .recv_timeout(WAIT_TIMEOUT)
        .expect("the server's url");

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let a = rt.block_on(async {
        bounded("A opens", connect_socket(opts(&url).protocols(["pa"])))
            .await
            .expect("A opens")
    });
    drop(rt);
    // A's connection went down with its runtime.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let b = bounded("B opens", connect_socket(opts(&url).protocols(["pb"])))
            .await
            .expect("B opens");
        // The globals act on B, the oldest task still alive.
        assert_eq!(
            current_protocol().as_deref(),
            Some("pb"),
            "the globals still point at A, whose runtime has ended"
        );
        let send_a = bounded("send on A", a.send("to a")).await;
        assert!(
            send_a.is_err(),
            "a send on A succeeded after its runtime ended"
        );
        wait_until("A to be CLOSED", || a.ready_state() == ReadyState::Closed).await;
        assert_eq!(bounded("A's recv", a.recv()).await, None);
        send_socket_message("to b").await.expect("send on B");
        assert_eq!(bounded("echo", b.recv()).await, Some(Data::from("/|to b")));
    });
}

#[test]
fn dead_runtime_task_is_not_current() {
    run_child("dead_runtime_child");
}

/// Runs `name` (an ignored test of this file) in a child process, with
/// `UNISOCKET_GLOBAL_CHILD` set. Global listeners are app-wide and stay for
/// the life of the process, as in uni-app: every test that registers any
/// runs in a process of its own, where no task was made before it.
fn run_child(name: &str) {
    let status = std::process::Command::new(std::env::current_exe().expect("current_exe"))
        .args([name, "--exact", "--ignored", "--nocapture"])
        .env("UNISOCKET_GLOBAL_CHILD", "1")
        .status()
        .expect("run the child");
    assert!(status.success(), "the child test {name} failed: {status}");
}

/// Whether this process is a child started by [`run_child`].
fn in_child() -> bool {
    std::env::var_os("UNISOCKET_GLOBAL_CHILD").is_some()
}

/// A test `$name` that runs `$body` (a future) by [`serial_test`] in a child
/// process of its own, as the ignored test `$child`.
macro_rules! child_test {
    ($(#[$doc:meta])* $name:ident, $child:ident, $body:expr) => {
        $(#[$doc])*
        #[test]
        fn $name() {
            run_child(stringify!($child));
        }

        #[test]
        #[ignore = "run in a child process by the test of the same name without `_child`"]
        fn $child() {
            if in_child() {
                serial_test($body);
            }
        }
    };
}

/// Registers the four global listeners, each writing to `log`:
/// `open:<protocol>`, `message:<text>`, `error:<errMsg>`,
/// `close:<code>:<reason>:<was_clean>`.
fn log_globals(log: &Log) {
    let l = log.clone();
    on_socket_open(move |ev| l.lock().unwrap().push(format!("open:{}", ev.protocol)));
    let l = log.clone();
    on_socket_message(move |ev| {
        l.lock()
            .unwrap()
            .push(format!("message:{}", text_of(&ev.data)))
    });
    let l = log.clone();
    on_socket_error(move |ev| l.lock().unwrap().push(format!("error:{}", ev.err_msg)));
    let l = log.clone();
    on_socket_close(move |ev| {
        l.lock()
            .unwrap()
            .push(format!("close:{}:{}:{}", ev.code, ev.reason, ev.was_clean));
    });
}

/// Waits until `log` has `n` entries, then a little longer, and checks that
/// no more came.
async fn settled(log: &Log, n: usize) -> Vec<String> {
    let within = tokio::time::timeout(WAIT_TIMEOUT, async {
        while entries(log).len() < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    if within.await.is_err() {
        panic!("timed out waiting for {n} entries: {:?}", entries(log));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let got = entries(log);
    assert_eq!(got.len(), n, "{got:?}");
    got
}

child_test!(
    /// The uni-app program: the four listeners registered once at start-up,
    /// then connect, send, get the echo, close, and connect again, three
    /// times. Every round's events reach the same listeners.
    the_reconnect_pattern_reaches_the_global_listeners_every_round,
    the_reconnect_pattern_reaches_the_global_listeners_every_round_child,
    async {
        let server = tagging_server().await;
        let log: Log = Arc::default();
        log_globals(&log);
        for round in 1..=3 {
            log.lock().unwrap().clear();
            let task = connect_socket(opts(format!("ws://{}/r{round}", server.addr)).protocols(["pa"]));
            wait_until("the open", || entries(&log).len() == 1).await;
            send_socket_message(format!("hello {round}"))
                .await
                .expect("send");
            wait_until("the echo", || entries(&log).len() == 2).await;
            close_socket(CloseOptions::default())
                .await
                .expect("close");
            let got = settled(&log, 3).await;
            assert_eq!(
                got,
                [
                    "open:pa".to_owned(),
                    format!("message:/r{round}|hello {round}"),
                    "close:1000::true".to_owned(),
                ],
                "round {round}"
            );
            assert_eq!(task.ready_state(), ReadyState::Closed);
            assert!(current_socket().is_none());
        }
    }
);

child_test!(
    /// The server drops every connection after its greeting; the program
    /// reconnects from inside the global `on_socket_close`, as uni-app
    /// programs do, and each new task's events reach the same listeners.
    reconnecting_from_inside_on_socket_close_keeps_the_listeners,
    reconnecting_from_inside_on_socket_close_keeps_the_listeners_child,
    async {
        let server = TestServer::start(ServerOptions::default(), |mut conn: ServerConn| async move {
            let path = conn.request.path.clone();
            conn.send_text(&format!("hello from {path}")).await;
            // Wait for the client's answer, then drop the TCP connection
            // without a close frame.
            let _ = conn.recv().await;
            conn.shutdown().await;
        })
        .await;
        let addr = server.addr;
        let log: Log = Arc::default();
        log_globals(&log);
        on_socket_message(|_| {
            send_socket_message("thanks");
        });
        let rounds = Arc::new(AtomicUsize::new(1));
        let r = rounds.clone();
        on_socket_close(move |_| {
            let round = r.fetch_add(1, Ordering::SeqCst) + 1;
            if round <= 3 {
                connect_socket(opts(format!("ws://{addr}/r{round}")));
                // The new task is the current one at once.
                assert!(current_socket().is_some());
            }
        });
        connect_socket(opts(format!("ws://{addr}/r1")));
        let got = settled(&log, 12).await;
        for (round, events) in got.chunks(4).enumerate() {
            let round = round + 1;
            assert_eq!(events[0], "open:", "{got:?}");
            assert_eq!(events[1], format!("message:hello from /r{round}"), "{got:?}");
            assert!(
                events[2].starts_with("error:connectSocket:fail "),
                "{got:?}"
            );
            assert!(events[3].starts_with("close:1006:"), "{got:?}");
            assert!(events[3].ends_with(":false"), "{got:?}");
        }
        wait_until("no live task", || current_socket().is_none()).await;
        assert_eq!(server.upgraded(), 3);
    }
);

child_test!(
    /// Registered with no live task, a global listener replays nothing of
    /// the task that closed before; it fires for the next task. Registered
    /// while the oldest live task is open, it gets that open at once, once.
    global_listeners_replay_only_the_live_tasks_open,
    global_listeners_replay_only_the_live_tasks_open_child,
    async {
        let server = tagging_server().await;
        // A task that opened, failed and closed before any listener.
        let dropping = TestServer::start(ServerOptions::default(), |mut conn: ServerConn| async move {
            conn.shutdown().await;
        })
        .await;
        let gone = connect_socket(opts(dropping.url()));
        bounded("the dropped task", gone.closed()).await;
        assert!(current_socket().is_none());
        let log: Log = Arc::default();
        log_globals(&log);
        settled(&log, 0).await;

        // The next task's events reach them.
        let a = connect_socket(opts(server.url()).protocols(["pa"]));
        wait_until("A's open", || entries(&log) == ["open:pa"]).await;
        // A listener registered now gets A's open at once, and only once.
        let late: Log = Arc::default();
        let l = late.clone();
        on_socket_open(move |ev| l.lock().unwrap().push(format!("late:{}", ev.protocol)));
        assert_eq!(settled(&late, 1).await, ["late:pa"]);
        assert_eq!(entries(&log), ["open:pa"]);
        bounded("close A", a.close(CloseOptions::default().code(4000).reason("bye")))
            .await
            .expect("close A");
        assert_eq!(settled(&log, 2).await, ["open:pa", "close:4000:bye:true"]);
        // The late listener fires for the next task too.
        let b = connect_socket(opts(server.url()).protocols(["pb"]));
        assert_eq!(settled(&late, 2).await, ["late:pa", "late:pb"]);
        bounded("close B", b.close(CloseOptions::default()))
            .await
            .expect("close B");
    }
);

child_test!(
    /// While an older task is alive, a younger one's events do not reach
    /// the global listeners; once the older one closes, the younger one is
    /// the current socket: its messages reach them, the ones it held first.
    the_global_listeners_follow_the_oldest_live_task,
    the_global_listeners_follow_the_oldest_live_task_child,
    async {
        let server = tagging_server().await;
        let url = |path: &str| format!("ws://{}/{path}", server.addr);
        let log: Log = Arc::default();
        log_globals(&log);
        let a = bounded("A", connect_socket(opts(url("a")).protocols(["pa"])))
            .await
            .expect("A opens");
        let b = bounded("B", connect_socket(opts(url("b")).protocols(["pb"])))
            .await
            .expect("B opens");
        // B's open happened while A was the oldest: only A's reached them.
        assert_eq!(settled(&log, 1).await, ["open:pa"]);
        send_socket_message("to a").await.expect("send on A");
        // A message to B, held by B (no listener of its own, not current).
        b.send("to b").await.expect("send on B");
        assert_eq!(settled(&log, 2).await, ["open:pa", "message:/a|to a"]);
        close_socket(CloseOptions::default().code(4001).reason("A done"))
            .await
            .expect("close A");
        assert_eq!(a.ready_state(), ReadyState::Closed);
        assert_eq!(current_protocol().as_deref(), Some("pb"));
        // B's held message comes out now, then the next ones.
        send_socket_message("b2").await.expect("send on B");
        assert_eq!(
            settled(&log, 5).await[2..],
            ["close:4001:A done:true", "message:/b|to b", "message:/b|b2"]
        );
        close_socket(CloseOptions::default()).await.expect("close B");
        assert_eq!(settled(&log, 6).await[5], "close:1000::true");
        assert!(current_socket().is_none());
    }
);

child_test!(
    /// Inside `connect_socket`'s `success` the task is already the current
    /// socket: the global functions act on it.
    inside_connect_success_the_task_is_current,
    inside_connect_success_the_task_is_current_child,
    async {
        let server = tagging_server().await;
        let log: Log = Arc::default();
        let l = log.clone();
        let task = connect_socket(opts(server.url()).protocols(["pa"]).queue_until_open(true).success(
            move |ok| {
                let current = current_socket().expect("the task is current inside success");
                l.lock().unwrap().push(format!("{}:{:?}", ok.err_msg, current.ready_state()));
                let l2 = l.clone();
                on_socket_message(move |ev| l2.lock().unwrap().push(text_of(&ev.data)));
                // Queued until the open (queue_until_open), on this task.
                send_socket_message("from success");
            },
        ));
        assert_eq!(
            settled(&log, 2).await,
            ["connectSocket:ok:Connecting", "/|from success"]
        );
        assert_eq!(task.protocol(), "pa");

        bounded("close", task.close(CloseOptions::default()))
            .await
            .expect("close");
        assert!(current_socket().is_none());

        // close_socket inside success aborts the attempt, as a browser does:
        // error, then close 1006; the close call succeeds.
        let log: Log = Arc::default();
        log_globals(&log);
        let l = log.clone();
        let aborted = connect_socket(opts(server.url()).success(move |_| {
            let l = l.clone();
            close_socket(CloseOptions::default().success(move |ok| {
                l.lock().unwrap().push(ok.err_msg.clone());
            }));
            assert_eq!(
                current_socket().map(|t| t.ready_state()),
                Some(ReadyState::Closing)
            );
        }));
        let ev = bounded("the aborted task", aborted.closed()).await;
        assert_eq!((ev.code, ev.was_clean), (1006, false));
        let why = "closed before the connection was established";
        assert_eq!(
            settled(&log, 3).await,
            [
                format!("error:connectSocket:fail {why}"),
                format!("close:1006:{why}:false"),
                "closeSocket:ok".to_owned(),
            ]
        );
        assert!(current_socket().is_none());
    }
);

child_test!(
    /// Listeners registered before any task, with a task that opens and is
    /// dropped by its server: open, error, close, in that order, and then
    /// the next task's events too.
    listeners_registered_before_any_task_hear_every_task,
    listeners_registered_before_any_task_hear_every_task_child,
    async {
        let dropping = TestServer::start(ServerOptions::default(), |mut conn: ServerConn| async move {
            conn.shutdown().await;
        })
        .await;
        let log: Log = Arc::default();
        log_globals(&log);
        let first = connect_socket(opts(dropping.url()));
        let got = settled(&log, 3).await;
        assert_eq!(got[0], "open:");
        assert!(got[1].starts_with("error:connectSocket:fail "), "{got:?}");
        assert!(got[2].starts_with("close:1006:"), "{got:?}");
        assert_eq!(first.ready_state(), ReadyState::Closed);
        assert!(current_socket().is_none());

        let server = tagging_server().await;
        let next = bounded("open", connect_socket(opts(server.url())))
            .await
            .expect("open");
        next.send("hi").await.expect("send");
        // (Messages that come after `close` are dropped, as in a browser.)
        wait_until("the echo", || entries(&log).len() == 5).await;
        bounded("close", next.close(CloseOptions::default()))
            .await
            .expect("close");
        let got = settled(&log, 6).await;
        assert_eq!(got[3..], ["open:", "message:/|hi", "close:1000::true"]);
    }
);
