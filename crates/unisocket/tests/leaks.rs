//! Listeners do not outlive their task: once the close event has run, every
//! listener (and whatever it captured, such as a clone of its own task) is
//! dropped, so a closed task is freed.

mod support;

use support::wait_until;

use std::sync::Arc;

use unisocket::{connect_socket, CloseOptions, ConnectOptions};

/// Uses a captured value, so that the closure owns it.
fn touch<T>(_: &T) {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_capturing_their_task_are_dropped_after_close() {
    let server = support::TestServer::echo().await;
    let sentinel = Arc::new(());
    let task = connect_socket(ConnectOptions::new(server.url()).fail(|_| {}));
    for _ in 0..3 {
        let (t, s) = (task.clone(), sentinel.clone());
        task.on_open(move |_| touch(&(&t, &s)));
        let (t, s) = (task.clone(), sentinel.clone());
        task.on_message(move |_| touch(&(&t, &s)));
        let (t, s) = (task.clone(), sentinel.clone());
        task.on_close(move |_| touch(&(&t, &s)));
        let (t, s) = (task.clone(), sentinel.clone());
        task.on_error(move |_| touch(&(&t, &s)));
        let (t, s) = (task.clone(), sentinel.clone());
        task.on_ping_pong(move |_| touch(&(&t, &s)));
    }
    task.clone().await.expect("opens");
    task.send("hi").await.unwrap();
    task.close(CloseOptions::default()).await.unwrap();
    wait_until("dropping the listeners", || {
        Arc::strong_count(&sentinel) == 1
    })
    .await;
    // Listeners registered after the close are called (or not) and dropped.
    let s = sentinel.clone();
    task.on_close(move |_| touch(&s));
    let s = sentinel.clone();
    task.on_open(move |_| touch(&s));
    let s = sentinel.clone();
    task.on_message(move |_| touch(&s));
    wait_until("dropping the late listeners", || {
        Arc::strong_count(&sentinel) == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_connect_with_a_fail_callback_keeps_nothing() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let sentinel = Arc::new(());
    let s = sentinel.clone();
    let task = connect_socket(
        ConnectOptions::new(format!("ws://127.0.0.1:{port}/")).fail(move |_| touch(&s)),
    );
    let (t, s) = (task.clone(), sentinel.clone());
    task.on_error(move |_| touch(&(&t, &s)));
    let ev = task.closed().await;
    assert_eq!(ev.code, 1006);
    wait_until("dropping the callbacks", || {
        Arc::strong_count(&sentinel) == 1
    })
    .await;
}
