//! Where the library runs: from plain synchronous code (a background runtime
//! started on demand), inside a user's current-thread or multi-thread tokio
//! runtime, with callbacks and with `async` calls; and a thousand
//! concurrent tasks in one process. Real sockets on 127.0.0.1.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use support::{bounded, within, TestServer, WAIT_TIMEOUT};
use unisocket::{
    connect_socket, CloseOptions, ConnectOptions, Data, ReadyState, SendOptions, SocketTask,
};

fn opts(url: impl Into<String>) -> ConnectOptions {
    ConnectOptions::new(url).timeout(WAIT_TIMEOUT)
}

/// Starts an echo server on a thread and runtime of its own (so that the
/// test itself has no runtime) and returns its URL. The server lives until
/// the test process ends.
fn echo_server_on_its_own_thread() -> String {
    let (tx, rx) = std_mpsc::channel();
    std::thread::Builder::new()
        .name("echo-server".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("server runtime");
            rt.block_on(async {
                let server = TestServer::echo().await;
                tx.send(server.url()).expect("send the url");
                std::future::pending::<()>().await;
            });
        })
        .expect("spawn the server thread");
    rx.recv_timeout(WAIT_TIMEOUT).expect("the server's url")
}

/// What the callbacks of one connection report.
#[derive(Debug, PartialEq)]
enum Ev {
    ConnectOk(String),
    Open,
    SendOk(String),
    Message(Data),
    CloseOk(String),
    Close(u16, bool),
    Fail(String),
}

/// Connects with callbacks only: on open, sends "hello" and a binary
/// message; on each echo, reports it; the caller then closes. Every event
/// is reported through `report`, which must not block.
fn callback_session(url: &str, report: impl Fn(Ev) + Clone + Send + Sync + 'static) -> SocketTask {
    let (r1, r2) = (report.clone(), report.clone());
    let task = connect_socket(
        opts(url)
            .success(move |ok| r1(Ev::ConnectOk(ok.err_msg.clone())))
            .fail(move |e| r2(Ev::Fail(e.err_msg().to_owned()))),
    );
    let t = task.clone();
    let r = report.clone();
    task.on_open(move |_| {
        r(Ev::Open);
        for data in [Data::from("hello"), Data::from(vec![1u8, 2, 3])] {
            let (ok, fail) = (r.clone(), r.clone());
            // Dropping the Completion cancels nothing; the callbacks report.
            drop(
                t.send(
                    SendOptions::new(data)
                        .success(move |s| ok(Ev::SendOk(s.err_msg.clone())))
                        .fail(move |e| fail(Ev::Fail(e.err_msg().to_owned()))),
                ),
            );
        }
    });
    let r = report.clone();
    task.on_message(move |ev| r(Ev::Message(ev.data.clone())));
    let r = report.clone();
    task.on_error(move |ev| r(Ev::Fail(ev.err_msg.clone())));
    let r = report;
    task.on_close(move |ev| r(Ev::Close(ev.code, ev.was_clean)));
    task
}

fn close_with_callback(task: &SocketTask, report: impl Fn(Ev) + Clone + Send + Sync + 'static) {
    let (ok, fail) = (report.clone(), report);
    drop(
        task.close(
            CloseOptions::default()
                .success(move |s| ok(Ev::CloseOk(s.err_msg.clone())))
                .fail(move |e| fail(Ev::Fail(e.err_msg().to_owned()))),
        ),
    );
}

/// Checks the events of one callback session, in an order-insensitive way
/// where the order is not defined (send successes versus echoes).
fn check_session(events: &[Ev]) {
    assert_eq!(events[0], Ev::ConnectOk("connectSocket:ok".into()));
    assert_eq!(events[1], Ev::Open);
    let count = |e: &Ev| events.iter().filter(|x| *x == e).count();
    assert_eq!(count(&Ev::SendOk("sendSocketMessage:ok".into())), 2);
    let messages: Vec<&Data> = events
        .iter()
        .filter_map(|e| match e {
            Ev::Message(d) => Some(d),
            _ => None,
        })
        .collect();
    assert_eq!(
        messages,
        [&Data::from("hello"), &Data::from(vec![1u8, 2, 3])]
    );
    assert!(
        !events.iter().any(|e| matches!(e, Ev::Fail(_))),
        "{events:?}"
    );
}

/// The callback API from a plain `#[test]`: no tokio runtime anywhere in
/// this thread; the events are waited for with `std::sync::mpsc`.
#[test]
fn callbacks_from_synchronous_code() {
    assert!(
        tokio::runtime::Handle::try_current().is_err(),
        "the test must run outside any runtime"
    );
    let url = echo_server_on_its_own_thread();
    let (tx, rx) = std_mpsc::channel::<Ev>();
    let report = move |ev| {
        let _ = tx.send(ev);
    };
    let task = callback_session(&url, report.clone());
    let mut events = Vec::new();
    let deadline = Instant::now() + WAIT_TIMEOUT;
    while events
        .iter()
        .filter(|e| matches!(e, Ev::Message(_)))
        .count()
        < 2
    {
        let left = deadline.saturating_duration_since(Instant::now());
        events.push(rx.recv_timeout(left).expect("the next event"));
    }
    close_with_callback(&task, report);
    let deadline = Instant::now() + WAIT_TIMEOUT;
    while !events.iter().any(|e| matches!(e, Ev::Close(..)))
        || !events.iter().any(|e| matches!(e, Ev::CloseOk(_)))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        events.push(rx.recv_timeout(left).expect("the next event"));
    }
    check_session(&events);
    assert!(events.contains(&Ev::Close(1000, true)), "{events:?}");
    assert!(events.contains(&Ev::CloseOk("closeSocket:ok".into())));
    assert_eq!(task.ready_state(), ReadyState::Closed);
    // Still no runtime on this thread.
    assert!(tokio::runtime::Handle::try_current().is_err());

    // Many sessions from plain threads at once, sharing the background runtime.
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let (tx, rx) = std_mpsc::channel::<Ev>();
                let report = move |ev| {
                    let _ = tx.send(ev);
                };
                let task = callback_session(&url, report.clone());
                let mut events = Vec::new();
                let deadline = Instant::now() + WAIT_TIMEOUT;
                while events
                    .iter()
                    .filter(|e| matches!(e, Ev::Message(_)))
                    .count()
                    < 2
                {
                    let left = deadline.saturating_duration_since(Instant::now());
                    events.push(rx.recv_timeout(left).expect("the next event"));
                }
                close_with_callback(&task, report);
                while !events.iter().any(|e| matches!(e, Ev::Close(..))) {
                    let left = deadline.saturating_duration_since(Instant::now());
                    events.push(rx.recv_timeout(left).expect("the next event"));
                }
                check_session(&events);
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a session thread");
    }
}

/// Runs one callback session inside the current runtime, waiting with a
/// tokio channel (never blocking the runtime's thread).
async fn callback_session_in_runtime(url: &str) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Ev>();
    let report = move |ev| {
        let _ = tx.send(ev);
    };
    let task = callback_session(url, report.clone());
    let mut events = Vec::new();
    while events
        .iter()
        .filter(|e| matches!(e, Ev::Message(_)))
        .count()
        < 2
    {
        events.push(bounded("the next event", rx.recv()).await.expect("event"));
    }
    close_with_callback(&task, report);
    while !events.iter().any(|e| matches!(e, Ev::Close(..)))
        || !events.iter().any(|e| matches!(e, Ev::CloseOk(_)))
    {
        events.push(bounded("the next event", rx.recv()).await.expect("event"));
    }
    check_session(&events);
    assert!(events.contains(&Ev::Close(1000, true)), "{events:?}");
    assert_eq!(task.ready_state(), ReadyState::Closed);
}

/// One async session: await the open, send, recv, close.
async fn async_session(url: &str) {
    let task = bounded("open", connect_socket(opts(url)))
        .await
        .expect("open");
    assert_eq!(task.ready_state(), ReadyState::Open);
    let ok = bounded("send", task.send("ping")).await.expect("send");
    assert_eq!(ok.err_msg, "sendSocketMessage:ok");
    assert_eq!(bounded("echo", task.recv()).await, Some(Data::from("ping")));
    task.send(vec![9u8; 100_000]).await.expect("send");
    assert_eq!(
        bounded("echo", task.recv()).await,
        Some(Data::from(vec![9u8; 100_000]))
    );
    let ok = bounded("close", task.close(CloseOptions::default()))
        .await
        .expect("close");
    assert_eq!(ok.err_msg, "closeSocket:ok");
    assert_eq!(task.ready_state(), ReadyState::Closed);
    assert_eq!(task.recv().await, None);
}

#[tokio::test(flavor = "current_thread")]
async fn current_thread_runtime_callbacks() {
    within(async {
        let server = TestServer::echo().await;
        callback_session_in_runtime(&server.url()).await;
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn current_thread_runtime_async() {
    within(async {
        let server = TestServer::echo().await;
        async_session(&server.url()).await;
        // Several at once on the one thread.
        let url = server.url();
        let sessions: Vec<_> = (0..20)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { async_session(&url).await })
            })
            .collect();
        for s in sessions {
            s.await.expect("session");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_thread_runtime_callbacks() {
    within(async {
        let server = TestServer::echo().await;
        let url = server.url();
        let sessions: Vec<_> = (0..10)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { callback_session_in_runtime(&url).await })
            })
            .collect();
        for s in sessions {
            s.await.expect("session");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_thread_runtime_async() {
    within(async {
        let server = TestServer::echo().await;
        let url = server.url();
        let sessions: Vec<_> = (0..20)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { async_session(&url).await })
            })
            .collect();
        for s in sessions {
            s.await.expect("session");
        }
    })
    .await;
}

/// A thousand tasks at once against one echo server: each opens, sends one
/// message, awaits its echo and closes. Needs about 2 000 file descriptors
/// (client and server ends); `ulimit -n` must allow that.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_tasks() {
    const N: usize = 1000;
    tokio::time::timeout(Duration::from_secs(60), async {
        let server = TestServer::echo().await;
        let url = server.url();
        let done = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let sessions: Vec<_> = (0..N)
            .map(|i| {
                let url = url.clone();
                let done = done.clone();
                tokio::spawn(async move {
                    let task =
                        connect_socket(ConnectOptions::new(url).timeout(Duration::from_secs(30)))
                            .await
                            .map_err(|e| format!("task {i}: open: {e}"))?;
                    let msg = format!("message {i}");
                    task.send(msg.as_str())
                        .await
                        .map_err(|e| format!("task {i}: send: {e}"))?;
                    match task.recv().await {
                        Some(Data::Text(t)) if t == msg => {}
                        other => return Err(format!("task {i}: echo: {other:?}")),
                    }
                    task.close(CloseOptions::default())
                        .await
                        .map_err(|e| format!("task {i}: close: {e}"))?;
                    if task.ready_state() != ReadyState::Closed {
                        return Err(format!("task {i}: not CLOSED after close"));
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                    Ok::<(), String>(())
                })
            })
            .collect();
        let mut failures = Vec::new();
        for s in sessions {
            if let Err(e) = s.await.expect("session") {
                failures.push(e);
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {N} failed; first: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        assert_eq!(done.load(Ordering::SeqCst), N);
        assert_eq!(server.upgraded(), N);
        eprintln!("{N} concurrent tasks in {:?}", started.elapsed());
    })
    .await
    .expect("1000 tasks did not finish within 60 s");
}

/// When the runtime a task runs on shuts down, the connection is gone: the
/// task must say so (CLOSED, `on_close` with 1006, `recv` ends) rather
/// than stay OPEN forever.
#[test]
fn a_task_whose_runtime_shut_down_closes() {
    let url = echo_server_on_its_own_thread();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let task = rt.block_on(async {
        bounded("open", connect_socket(opts(&url)))
            .await
            .expect("open")
    });
    let (tx, rx) = std_mpsc::channel();
    let t = tx.clone();
    task.on_error(move |ev| {
        let _ = t.send(format!("error:{}", ev.err_msg));
    });
    task.on_close(move |ev| {
        let _ = tx.send(format!("close:{}", ev.code));
    });
    drop(rt);
    // A close event with 1006 (after an error event, if there is one).
    let mut events = Vec::new();
    while !events.iter().any(|e: &String| e.starts_with("close:")) {
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(e) => events.push(e),
            Err(_) => panic!(
                "no close event within 5 s after the runtime shut down; the task is {:?}",
                task.ready_state()
            ),
        }
    }
    assert_eq!(events.last().map(String::as_str), Some("close:1006"));
    assert!(events.len() <= 2, "{events:?}");
    assert_eq!(task.ready_state(), ReadyState::Closed);
    // recv ends (polled from a runtime of its own).
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    assert_eq!(
        rt.block_on(async { bounded("recv", task.recv()).await }),
        None
    );
}

/// A runtime built without the IO and time drivers cannot run the
/// connection; the task must fail (error, close) rather than hang in
/// CONNECTING.
#[test]
fn a_runtime_without_drivers_fails_instead_of_hanging() {
    let url = echo_server_on_its_own_thread();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .expect("runtime without drivers");
    let task = rt.block_on(async { connect_socket(opts(&url)) });
    let (tx, rx) = std_mpsc::channel();
    task.on_close(move |ev| {
        let _ = tx.send(ev.code);
    });
    let closed = rx.recv_timeout(Duration::from_secs(5));
    assert!(
        closed.is_ok(),
        "no close event within 5 s; the task is {:?}",
        task.ready_state()
    );
    assert_eq!(task.ready_state(), ReadyState::Closed);
}
