//! The global functions of uni-app (`on_socket_*`, `send_socket_message`,
//! `close_socket`, `current_socket`) over real sockets on 127.0.0.1.
//!
//! They act on process-global state (the oldest live task), so every test of
//! this file holds [`SERIAL`] for its whole run, runs on a runtime of its own,
//! and closes every task it made before it ends. Scenarios that need a fresh
//! process (no task made yet) or leave a task behind run in a child process.

mod support;

use support::{bounded, wait_until, WAIT_TIMEOUT};

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

const TEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Runs `body` alone (holding [`SERIAL`]) on a fresh multi-thread runtime,
/// under [`TEST_TIMEOUT`], after checking that no task is alive.
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
        tokio::time::timeout(TEST_TIMEOUT, body)
            .await
            .expect("the test did not finish within 30 s");
    });
}

fn opts(url: impl Into<String>) -> ConnectOptions {
    ConnectOptions::new(url).timeout(WAIT_TIMEOUT)
}

type Log = Arc<Mutex<Vec<String>>>;

fn entries(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

fn text_of(data: &Data) -> String {
    match data {
        Data::Text(t) => t.to_string(),
        Data::Binary(b) => format!("bin:{}", String::from_utf8_lossy(b)),
    }
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
fn global_functions_act_on_the_oldest_live_task() {
    serial_test(async {
        let server = tagging_server().await;
        let url = |path: &str| format!("ws://{}/{path}", server.addr);

        let a = connect_socket(opts(url("a")).protocols(["pa"]));
        let b = connect_socket(opts(url("b")).protocols(["pb"]));
        // Registered while A (the oldest live task) is still CONNECTING:
        // both fire for A, and only for A.
        let opens: Log = Arc::default();
        for name in ["open1", "open2"] {
            let o = opens.clone();
            on_socket_open(move |ev| o.lock().unwrap().push(format!("{name}:{}", ev.protocol)));
        }
        let a = bounded("A opens", a).await.expect("A opens");
        let b = bounded("B opens", b).await.expect("B opens");
        assert_eq!(current_protocol().as_deref(), Some("pa"));
        wait_until("both open listeners", || entries(&opens).len() == 2).await;

        // A listener registered now, after A opened, is called at once.
        let o = opens.clone();
        on_socket_open(move |ev| o.lock().unwrap().push(format!("open3:{}", ev.protocol)));
        wait_until("the late open listener", || entries(&opens).len() == 3).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(entries(&opens), ["open1:pa", "open2:pa", "open3:pa"]);

        // on_socket_message / send_socket_message act on A; listeners accumulate.
        let first: Log = Arc::default();
        let f = first.clone();
        on_socket_message(move |ev| f.lock().unwrap().push(text_of(&ev.data)));
        let closes: Log = Arc::default();
        let c = closes.clone();
        on_socket_close(move |ev| c.lock().unwrap().push(format!("{}:{}", ev.code, ev.reason)));
        let errors = Arc::new(AtomicUsize::new(0));
        let e = errors.clone();
        on_socket_error(move |_| {
            e.fetch_add(1, Ordering::SeqCst);
        });
        let sent = Arc::new(Mutex::new(Vec::new()));
        let s = sent.clone();
        let ok = bounded(
            "send on A",
            send_socket_message(
                SendOptions::new("hello")
                    .success(move |ok| s.lock().unwrap().push(ok.err_msg.clone())),
            ),
        )
        .await
        .expect("send on A");
        assert_eq!(ok.err_msg, "sendSocketMessage:ok");
        wait_until("A's echo", || entries(&first) == ["/a|hello"]).await;
        wait_until("the send success", || sent.lock().unwrap().len() == 1).await;
        assert_eq!(*sent.lock().unwrap(), ["sendSocketMessage:ok"]);
        let second: Log = Arc::default();
        let s = second.clone();
        on_socket_message(move |ev| s.lock().unwrap().push(text_of(&ev.data)));
        send_socket_message("again").await.expect("send on A");
        wait_until("both message listeners", || {
            entries(&first).len() == 2 && entries(&second).len() == 1
        })
        .await;
        assert_eq!(entries(&first), ["/a|hello", "/a|again"]);
        assert_eq!(entries(&second), ["/a|again"]);
        // B got nothing.
        assert!(
            tokio::time::timeout(Duration::from_millis(100), b.recv())
                .await
                .is_err(),
            "B received a message sent through the global functions"
        );

        // close_socket closes A, and only A.
        let closed = Arc::new(Mutex::new(Vec::new()));
        let c = closed.clone();
        let ok = bounded(
            "close A",
            close_socket(
                CloseOptions::default()
                    .code(4001)
                    .reason("A done")
                    .success(move |ok| c.lock().unwrap().push(ok.err_msg.clone())),
            ),
        )
        .await
        .expect("close A");
        assert_eq!(ok.err_msg, "closeSocket:ok");
        assert_eq!(a.ready_state(), ReadyState::Closed);
        assert_eq!(b.ready_state(), ReadyState::Open);
        wait_until("A's close event", || entries(&closes).len() == 1).await;
        assert_eq!(entries(&closes), ["4001:A done"]);
        wait_until("the close success", || closed.lock().unwrap().len() == 1).await;
        assert_eq!(*closed.lock().unwrap(), ["closeSocket:ok"]);

        // Now everything acts on B.
        assert_eq!(current_protocol().as_deref(), Some("pb"));
        send_socket_message("to b").await.expect("send on B");
        assert_eq!(
            bounded("B's echo", b.recv()).await,
            Some(Data::from("/b|to b"))
        );
        let third: Log = Arc::default();
        let t = third.clone();
        on_socket_message(move |ev| t.lock().unwrap().push(text_of(&ev.data)));
        let late_opens: Log = Arc::default();
        let o = late_opens.clone();
        on_socket_open(move |ev| o.lock().unwrap().push(ev.protocol.clone()));
        send_socket_message("b2").await.expect("send on B");
        wait_until("B's listener", || entries(&third) == ["/b|b2"]).await;
        wait_until("B's late open listener", || entries(&late_opens) == ["pb"]).await;
        bounded("close B", close_socket(CloseOptions::default()))
            .await
            .expect("close B");
        assert_eq!(b.ready_state(), ReadyState::Closed);
        assert!(current_socket().is_none());

        // A's listeners heard nothing of B.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(entries(&first), ["/a|hello", "/a|again"]);
        assert_eq!(entries(&second), ["/a|again"]);
        assert_eq!(entries(&closes), ["4001:A done"]);
        assert_eq!(entries(&opens).len(), 3);
        assert_eq!(errors.load(Ordering::SeqCst), 0);

        // And with no live task again, both fail.
        let err = send_socket_message("x").await.unwrap_err();
        assert_eq!(
            err.err_msg(),
            "sendSocketMessage:fail WebSocket is not connected"
        );
        let err = close_socket(CloseOptions::default()).await.unwrap_err();
        assert_eq!(err.err_msg(), "closeSocket:fail WebSocket is not connected");
    });
}

/// Runs `name` (an ignored test of this file) in a child process, where no
/// task was ever made, with `UNISOCKET_GLOBAL_CHILD` set.
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

/// Listeners registered before any task was made go to the first task.
/// (What listeners registered while no task is alive, after some were made,
/// attach to is left open by the contract, and not tested here.)
#[test]
fn listeners_registered_before_any_task_go_to_the_first_task() {
    run_child("listeners_before_any_task_child");
}

#[test]
#[ignore = "run by listeners_registered_before_any_task_go_to_the_first_task in a child process"]
fn listeners_before_any_task_child() {
    if !in_child() {
        return;
    }
    serial_test(async {
        // The server drops TCP right after the handshake: error, then close.
        let dropping = TestServer::start(ServerOptions::default(), |mut conn| async move {
            conn.shutdown().await;
        })
        .await;
        let log: Log = Arc::default();
        let l = log.clone();
        on_socket_open(move |_| l.lock().unwrap().push("open".into()));
        let l = log.clone();
        on_socket_error(move |ev| l.lock().unwrap().push(format!("error:{}", ev.err_msg)));
        let l = log.clone();
        on_socket_close(move |ev| l.lock().unwrap().push(format!("close:{}", ev.code)));
        let l = log.clone();
        on_socket_message(move |ev| l.lock().unwrap().push(text_of(&ev.data)));

        let first = connect_socket(opts(format!("ws://{}/", dropping.addr)));
        wait_until("the first task's close", || {
            entries(&log).iter().any(|e| e.starts_with("close:"))
        })
        .await;
        let got = entries(&log);
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0], "open");
        assert!(got[1].starts_with("error:connectSocket:fail "), "{got:?}");
        assert_eq!(got[2], "close:1006");
        assert_eq!(first.ready_state(), ReadyState::Closed);
        assert!(current_socket().is_none());

        // The listeners were used up by that task: the next one does not get them.
        let server = tagging_server().await;
        let next = bounded("open", connect_socket(opts(server.url())))
            .await
            .expect("open");
        next.send("hi").await.expect("send");
        assert_eq!(bounded("echo", next.recv()).await, Some(Data::from("/|hi")));
        bounded("close", next.close(CloseOptions::default()))
            .await
            .expect("close");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(entries(&log).len(), 3, "{:?}", entries(&log));
        assert!(current_socket().is_none());
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
