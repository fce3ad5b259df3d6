//! The sample of `uni.onSocketMessage(CALLBACK)` in the uni-app
//! documentation, in Rust with the global functions:
//!
//! ```javascript
//! uni.connectSocket({
//!   url: 'wss://www.example.com/socket'
//! });
//!
//! uni.onSocketMessage(function (res) {
//!   console.log('server content received:' + res.data);
//! });
//! ```
//!
//! `res.data` is text or binary ([`Data`]); text prints as is, binary as its
//! bytes. Messages that arrive before the listener is registered are held
//! and delivered to it in order, so nothing is lost between `connect_socket`
//! and `on_socket_message`.
//!
//! Run it against a server that sends messages of its own (an echo server
//! sends nothing unprompted):
//!
//! ```text
//! cargo run --example seed_on_socket_message -- ws://127.0.0.1:9001
//! ```
//!
//! It prints one `server content received:<data>` line per message until
//! the server closes the connection, then `closed: code=...`,
//! and exits with 0 if at least one message came and the close was clean;
//! otherwise (or after 10 s) with 1.

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use unisocket::{connect_socket, on_socket_close, on_socket_message, ConnectOptions, Data};

/// How long the whole flow may take.
const FLOW_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:9001".to_owned());

    let _task = connect_socket(ConnectOptions::new(url));

    let received = Arc::new(AtomicUsize::new(0));
    let count = received.clone();
    on_socket_message(move |res| {
        match &res.data {
            Data::Text(text) => println!("server content received:{text}"),
            Data::Binary(bytes) => println!("server content received:{:?}", &bytes[..]),
        }
        count.fetch_add(1, Ordering::SeqCst);
    });

    // Not in the sample: the flow ends when the server closes the connection
    // (a failed connection closes too, with code 1006).
    let (tx, rx) = mpsc::channel::<bool>();
    on_socket_close(move |res| {
        println!(
            "closed: code={} reason={:?} wasClean={}",
            res.code, res.reason, res.was_clean
        );
        let _ = tx.send(res.was_clean);
    });

    match rx.recv_timeout(FLOW_TIMEOUT) {
        Ok(true) if received.load(Ordering::SeqCst) > 0 => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(_) => {
            eprintln!("the server did not close the connection within {FLOW_TIMEOUT:?}");
            ExitCode::FAILURE
        }
    }
}
