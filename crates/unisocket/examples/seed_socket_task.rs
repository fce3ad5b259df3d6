//! The "return value" sample of `uni.connectSocket(OBJECT)` in the uni-app
//! documentation, in Rust:
//!
//! ```javascript
//! var socketTask = uni.connectSocket({
//!     //仅为示例，并非真实接口地址。
//!     // Only for illustration, not a true interface address.
//!     url: 'wss://www.example.com/socket',
//!     complete: ()=> {}
//! });
//! ```
//!
//! In uni-app the task is returned only when one of `success` / `fail` /
//! `complete` is passed (otherwise a Promise is); `connect_socket` always
//! returns the [`SocketTask`](unisocket::SocketTask), and awaiting it is the
//! Promise form. The rest of the program uses the task's own methods
//! (`SocketTask.onOpen`, `send`, `onMessage`, `close`, `onClose`): it sends
//! one message, prints the reply and closes.
//!
//! ```text
//! cargo run --example seed_socket_task -- ws://127.0.0.1:9001
//! ```
//!
//! Against an echo server it prints, and exits with 0:
//!
//! ```text
//! complete: connectSocket:ok
//! onOpen
//! send success: sendSocketMessage:ok
//! onMessage: hello from the socket task
//! onClose: code=1000 reason="" wasClean=true
//! close success: closeSocket:ok
//! ```
//!
//! It exits with 1 if the connection fails or the flow does not end within 10 s.

use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use unisocket::{connect_socket, CloseOptions, ConnectOptions, Data, SendOptions};

/// How long the whole flow may take.
const FLOW_TIMEOUT: Duration = Duration::from_secs(10);

/// The message sent once the socket is open.
const MESSAGE: &str = "hello from the socket task";

fn main() -> ExitCode {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:9001".to_owned());

    // `complete` receives the result; "ok" means the request is under way,
    // as in uni-app (the open event says when the handshake is done).
    let socket_task = connect_socket(ConnectOptions::new(url).complete(|res| match res {
        Ok(ok) => println!("complete: {}", ok.err_msg),
        Err(e) => println!("complete: {}", e.err_msg()),
    }));

    let (tx, rx) = mpsc::channel::<bool>();
    let task = socket_task.clone();
    socket_task.on_open(move |_res| {
        println!("onOpen");
        let options = SendOptions::new(MESSAGE).complete(|res| match res {
            Ok(ok) => println!("send success: {}", ok.err_msg),
            Err(e) => println!("send fail: {}", e.err_msg()),
        });
        // The returned Completion may be dropped: the callbacks still run.
        task.send(options);
    });
    let task = socket_task.clone();
    let tx_close = tx.clone();
    socket_task.on_message(move |res| {
        match &res.data {
            Data::Text(text) => println!("onMessage: {text}"),
            Data::Binary(bytes) => println!("onMessage: {:?}", &bytes[..]),
        }
        let tx_close = tx_close.clone();
        let options = CloseOptions::default().complete(move |res| {
            match res {
                Ok(ok) => println!("close success: {}", ok.err_msg),
                Err(e) => println!("close fail: {}", e.err_msg()),
            }
            let _ = tx_close.send(res.is_ok());
        });
        task.close(options);
    });
    socket_task.on_error(|res| println!("onError: {}", res.err_msg));
    socket_task.on_close(move |res| {
        println!(
            "onClose: code={} reason={:?} wasClean={}",
            res.code, res.reason, res.was_clean
        );
        // A close we did not ask for (the connection failed or the server
        // closed first) ends the flow as a failure.
        if res.code != 1000 {
            let _ = tx.send(false);
        }
    });

    match rx.recv_timeout(FLOW_TIMEOUT) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(_) => {
            eprintln!("the flow did not end within {FLOW_TIMEOUT:?}");
            ExitCode::FAILURE
        }
    }
}
