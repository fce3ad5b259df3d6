//! The sample of `uni.onSocketOpen(CALLBACK)` in the uni-app documentation,
//! in Rust with the global functions:
//!
//! ```javascript
//! uni.connectSocket({
//!   url: 'wss://www.example.com/socket'
//! });
//! uni.onSocketOpen(function (res) {
//!   console.log('WebSocket connection is open!') ;
//! });
//! ```
//!
//! `on_socket_open` listens on the oldest live task, the one `connect_socket`
//! just made. Registering it after `connect_socket` is safe even if the
//! socket were already open: a late open listener is called at once.
//!
//! ```text
//! cargo run --example seed_on_socket_open -- ws://127.0.0.1:9001
//! ```
//!
//! Prints `WebSocket connection is open!`, closes the socket with
//! `close_socket` and exits with 0. If the connection fails it prints
//! `connectSocket fail: <errMsg>` and exits with 1 (also after 10 s without
//! an outcome).

use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use unisocket::{close_socket, connect_socket, on_socket_open, CloseOptions, ConnectOptions};

/// How long the whole flow may take.
const FLOW_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:9001".to_owned());
    let (tx, rx) = mpsc::channel::<bool>();

    // Not in the sample: the task's `on_error`, so that the program ends at
    // once when it cannot connect instead of waiting for an open that never
    // comes. (`fail` is for invalid input only: once `connect_socket` has
    // succeeded, a failure on the network reaches `on_error` and `on_close`.
    // A task listener also hears of a failure that came before it was
    // registered; a global one registered with no live task would not.)
    let tx_fail = tx.clone();
    let task = connect_socket(ConnectOptions::new(url));
    task.on_error(move |e| {
        println!("connectSocket fail: {}", e.err_msg);
        let _ = tx_fail.send(false);
    });
    on_socket_open(move |_res| {
        println!("WebSocket connection is open!");
        let _ = tx.send(true);
    });

    match rx.recv_timeout(FLOW_TIMEOUT) {
        Ok(true) => {}
        Ok(false) => return ExitCode::FAILURE,
        Err(_) => {
            eprintln!("the connection did not open within {FLOW_TIMEOUT:?}");
            return ExitCode::FAILURE;
        }
    }

    // The sample stops here; the program closes the socket before it exits.
    let (done_tx, done_rx) = mpsc::channel();
    close_socket(CloseOptions::default().complete(move |res| {
        let _ = done_tx.send(res.is_ok());
    }));
    match done_rx.recv_timeout(FLOW_TIMEOUT) {
        Ok(true) => ExitCode::SUCCESS,
        _ => {
            eprintln!("the socket did not close cleanly");
            ExitCode::FAILURE
        }
    }
}
