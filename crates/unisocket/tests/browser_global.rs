//! The global functions of uni-app in a real browser (see
//! `tests/browser.rs`): alone in their page, since they act on its oldest
//! live task.
#![cfg(target_arch = "wasm32")]

use std::sync::{Arc, Mutex};

use unisocket::{
    close_socket, connect_socket, current_socket, on_socket_close, on_socket_message,
    on_socket_open, send_socket_message, CloseOptions, ConnectOptions, SendOptions,
};
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

#[path = "support/browser.rs"]
mod support;
use support::{entries, log, push, text, until, url};

/// The global functions, written as uni-app programs write them: the
/// listeners registered once, and a new task made from `on_socket_close`.
#[wasm_bindgen_test]
async fn global_functions_reconnect_pattern() {
    until("no live task", || current_socket().is_none()).await;
    let log = log();
    let rounds = Arc::new(Mutex::new(0));
    on_socket_open({
        let log = log.clone();
        move |_| {
            push(&log, "open");
            send_socket_message(SendOptions::new("ping-round"));
        }
    });
    on_socket_message({
        let log = log.clone();
        move |ev| {
            push(&log, format!("message {}", text(&ev.data)));
            close_socket(CloseOptions::default());
        }
    });
    on_socket_close({
        let log = log.clone();
        let rounds = rounds.clone();
        move |ev| {
            push(&log, format!("close {}", ev.code));
            let mut rounds = rounds.lock().unwrap();
            *rounds += 1;
            if *rounds < 3 {
                drop(connect_socket(ConnectOptions::new(url())));
            }
        }
    });
    drop(connect_socket(ConnectOptions::new(url())));
    until("three rounds", || entries(&log).len() == 9).await;
    let round = ["open", "message ping-round", "close 1000"];
    assert_eq!(entries(&log), round.repeat(3));
    until("no live task", || current_socket().is_none()).await;
}
