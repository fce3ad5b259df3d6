//! The sample of `uni.onSocketClose(CALLBACK)` in the uni-app documentation,
//! in Rust with the global functions: the socket is closed as soon as it is
//! open.
//!
//! ```javascript
//! uni.connectSocket({
//!   url: 'wss://www.example.com/socket'
//! });
//!
//! // 注意这里有时序问题，
//! //Note that there is a timing problem,
//! // 如果 uni.connectSocket 还没回调 uni.onSocketOpen，而先调用 uni.closeSocket，那么就做不到关闭 WebSocket 的目的。
//! //If uni.connectSocket calls uni.closeSocket before calling uni.onSocketOpen, closing WebSocket is impossible.
//! // 必须在 WebSocket 打开期间调用 uni.closeSocket 才能关闭。
//! //To close WebSocket, uni.closeSocket should be called under opened WebSocket.
//! uni.onSocketOpen(function () {
//!   uni.closeSocket();
//! });
//!
//! uni.onSocketClose(function (res) {
//!   console.log('WebSocket is closed!') ;
//! });
//! ```
//!
//! The timing problem of the comment does not exist in unisocket:
//! `close_socket` while the socket is still CONNECTING aborts the attempt and
//! the task closes. Closing from `on_socket_open` is still the way to close a
//! socket that has been open.
//!
//! ```text
//! cargo run --example seed_close_on_open -- ws://127.0.0.1:9001
//! ```
//!
//! Prints `WebSocket is closed! code=1000 reason="" wasClean=true` and exits
//! with 0; with another close (e.g. 1006 when the connection fails) or no
//! close within 10 s it exits with 1.

use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use unisocket::{
    close_socket, connect_socket, on_socket_close, on_socket_open, CloseOptions, ConnectOptions,
};

/// How long the whole flow may take.
const FLOW_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:9001".to_owned());
    let (tx, rx) = mpsc::channel::<bool>();

    let _task = connect_socket(ConnectOptions::new(url));
    on_socket_open(|_res| {
        // Code 1000, no reason: the defaults of `uni.closeSocket()`. The
        // returned Completion may be dropped: the close goes on.
        close_socket(CloseOptions::default());
    });
    on_socket_close(move |res| {
        println!(
            "WebSocket is closed! code={} reason={:?} wasClean={}",
            res.code, res.reason, res.was_clean
        );
        let _ = tx.send(res.code == 1000 && res.was_clean);
    });

    match rx.recv_timeout(FLOW_TIMEOUT) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(_) => {
            eprintln!("the socket did not close within {FLOW_TIMEOUT:?}");
            ExitCode::FAILURE
        }
    }
}
