//! The sample of `uni.onSocketError(CALLBACK)` in the uni-app documentation,
//! in Rust with the global functions:
//!
//! ```javascript
//! uni.connectSocket({
//!   url: 'wss://www.example.com/socket'
//! });
//! uni.onSocketOpen(function (res) {
//!   console.log('WebSocket connection is open!') ;
//! });
//! uni.onSocketError(function (res) {
//!   console.log('WebSocket connection failed to open. Please check it!') ;
//! });
//! ```
//!
//! Run it against a port where nothing listens to see the error:
//!
//! ```text
//! cargo run --example seed_on_socket_error -- ws://127.0.0.1:1
//! ```
//!
//! prints `WebSocket connection failed to open. Please check it!` followed by
//! the `errMsg` (e.g. `connectSocket:fail connection refused by
//! 127.0.0.1:1: Connection refused (os error 111)`). Against a live server
//! it prints `WebSocket connection is open!` and closes the socket. Either
//! way the sample has run its course and the program exits with 0; it exits
//! with 1 if neither listener is called within 10 s.

use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use unisocket::{
    close_socket, connect_socket, on_socket_error, on_socket_open, CloseOptions, ConnectOptions,
};

/// How long the whole flow may take.
const FLOW_TIMEOUT: Duration = Duration::from_secs(10);

/// What ended the flow.
enum Outcome {
    Open,
    Error,
}

fn main() -> ExitCode {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:9001".to_owned());
    let (tx, rx) = mpsc::channel::<Outcome>();

    // The listeners come first, unlike the sample: JavaScript runs no event
    // before the script's next line, but here the connection runs on other
    // threads and a refused one can close before the next line. Global
    // listeners are app-wide and hear every later task; one registered
    // when no task is alive hears nothing of a task that already closed.
    let tx_open = tx.clone();
    on_socket_open(move |_res| {
        println!("WebSocket connection is open!");
        let _ = tx_open.send(Outcome::Open);
    });
    on_socket_error(move |res| {
        println!(
            "WebSocket connection failed to open. Please check it! {}",
            res.err_msg
        );
        let _ = tx.send(Outcome::Error);
    });
    connect_socket(ConnectOptions::new(url));

    match rx.recv_timeout(FLOW_TIMEOUT) {
        Ok(Outcome::Error) => ExitCode::SUCCESS,
        Ok(Outcome::Open) => {
            // Not in the sample: close the socket before the program exits.
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
        Err(_) => {
            eprintln!("neither onSocketOpen nor onSocketError was called within {FLOW_TIMEOUT:?}");
            ExitCode::FAILURE
        }
    }
}
