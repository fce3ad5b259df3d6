//! The sample of `uni.sendSocketMessage(OBJECT)` in the uni-app
//! documentation, in Rust with the global functions: messages sent before
//! the socket is open wait in a queue that is flushed on open.
//!
//! ```javascript
//! var socketOpen = false;
//! var socketMsgQueue = [];
//!
//! uni.connectSocket({
//!   url: 'wss://www.example.com/socket'
//! });
//!
//! uni.onSocketOpen(function (res) {
//!   socketOpen = true;
//!   for (var i = 0; i < socketMsgQueue.length; i++) {
//!     sendSocketMessage(socketMsgQueue[i]);
//!   }
//!   socketMsgQueue = [];
//! });
//!
//! function sendSocketMessage(msg) {
//!   if (socketOpen) {
//!     uni.sendSocketMessage({
//!       data: msg
//!     });
//!   } else {
//!     socketMsgQueue.push(msg);
//!   }
//! }
//! ```
//!
//! unisocket has this queue built in: `ConnectOptions::queue_until_open(true)`
//! keeps the sends made while CONNECTING and sends them, in order, on open
//! (without it they fail with `sendSocketMessage:fail WebSocket is not
//! connected`). Pass `builtin` as the second argument to run the same flow
//! with it instead of the hand-written queue:
//!
//! ```text
//! cargo run --example seed_message_queue -- ws://127.0.0.1:9001
//! cargo run --example seed_message_queue -- ws://127.0.0.1:9001 builtin
//! ```
//!
//! The program sends three messages at once (before the socket is open),
//! then, once their echoes are back, a fourth one (through the "open" branch
//! of `sendSocketMessage`), and closes. Against an echo server it prints,
//! and exits with 0:
//!
//! ```text
//! queued: message 1
//! queued: message 2
//! queued: message 3
//! open: flushing 3 queued messages          (builtin: "open: unisocket flushes its queue")
//! sent: message 1
//! sent: message 2
//! sent: message 3
//! received: message 1
//! received: message 2
//! received: message 3
//! sent: message 4
//! received: message 4
//! close: closeSocket:ok
//! ```
//!
//! It exits with 1 if a send or the connection fails, or the flow does not
//! end within 10 s.

use std::process::ExitCode;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use unisocket::{
    close_socket, connect_socket, current_socket, on_socket_close, on_socket_message,
    on_socket_open, send_socket_message, CloseOptions, ConnectOptions, Data, ReadyState,
    SendOptions,
};

/// How long the whole flow may take.
const FLOW_TIMEOUT: Duration = Duration::from_secs(10);

/// What the callbacks tell `main`.
enum Event {
    Received(String),
    Failed,
}

/// `socketOpen` and `socketMsgQueue` of the sample. In JavaScript both are
/// safe as plain variables because everything runs on one thread; here the
/// open callback runs on the library's thread while `main` keeps sending, so
/// the flag and the queue live behind one lock, and the flush happens while
/// holding it (a message sent meanwhile cannot overtake the queued ones).
#[derive(Default)]
struct Outbox {
    socket_open: bool,
    socket_msg_queue: Vec<String>,
}

/// The `sendSocketMessage(msg)` helper of the sample.
fn send_socket_message_queued(outbox: &mut Outbox, msg: String, events: &Sender<Event>) {
    if outbox.socket_open {
        send_now(msg, events);
    } else {
        println!("queued: {msg}");
        outbox.socket_msg_queue.push(msg);
    }
}

/// `uni.sendSocketMessage({data: msg})`, plus callbacks that report the outcome.
fn send_now(msg: String, events: &Sender<Event>) {
    let events = events.clone();
    let options = SendOptions::new(msg.clone()).complete(move |res| match res {
        Ok(_) => println!("sent: {msg}"),
        Err(e) => {
            println!("send fail: {msg}: {}", e.err_msg());
            let _ = events.send(Event::Failed);
        }
    });
    // The returned Completion may be dropped: the callbacks still run.
    send_socket_message(options);
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "ws://127.0.0.1:9001".to_owned());
    let builtin = match args.next().as_deref() {
        None => false,
        Some("builtin") => true,
        Some(other) => {
            eprintln!("unknown mode {other:?}: the second argument may only be `builtin`");
            return ExitCode::FAILURE;
        }
    };
    let (tx, rx) = mpsc::channel::<Event>();

    // The hand-written queue of the sample, or the built-in one:
    // `ConnectOptions::queue_until_open(true)` makes unisocket keep the sends
    // made while CONNECTING and flush them in order on open, which is all
    // that `socketOpen`, `socketMsgQueue` and the open listener do by hand.
    let outbox = Arc::new(Mutex::new(Outbox::default()));
    let _task = connect_socket(ConnectOptions::new(url).queue_until_open(builtin));
    if builtin {
        on_socket_open(|_res| println!("open: unisocket flushes its queue"));
    } else {
        let outbox = outbox.clone();
        let tx = tx.clone();
        on_socket_open(move |_res| {
            let mut outbox = outbox.lock().unwrap_or_else(PoisonError::into_inner);
            outbox.socket_open = true;
            let queue = std::mem::take(&mut outbox.socket_msg_queue);
            println!("open: flushing {} queued messages", queue.len());
            for msg in queue {
                send_socket_message_queued(&mut outbox, msg, &tx);
            }
        });
    }

    // Not in the sample: show the server's replies and the end of the connection.
    let tx_message = tx.clone();
    on_socket_message(move |res| {
        let text = match &res.data {
            Data::Text(text) => text.to_string(),
            Data::Binary(bytes) => format!("{:?}", &bytes[..]),
        };
        println!("received: {text}");
        let _ = tx_message.send(Event::Received(text));
    });
    let tx_close = tx.clone();
    on_socket_close(move |res| {
        if res.code != 1000 {
            println!(
                "closed: code={} reason={:?} wasClean={}",
                res.code, res.reason, res.was_clean
            );
            let _ = tx_close.send(Event::Failed);
        }
    });

    let send = |msg: String| {
        if builtin {
            // With `queue_until_open(true)` a send while CONNECTING is kept
            // by unisocket; the state is read here only to print the line.
            let connecting =
                current_socket().is_some_and(|t| t.ready_state() == ReadyState::Connecting);
            if connecting {
                println!("queued: {msg}");
            }
            send_now(msg, &tx);
        } else {
            let mut outbox = outbox.lock().unwrap_or_else(PoisonError::into_inner);
            send_socket_message_queued(&mut outbox, msg, &tx);
        }
    };

    // Sent right after connect_socket: the socket is not open yet.
    let first: Vec<String> = (1..=3).map(|i| format!("message {i}")).collect();
    for msg in &first {
        send(msg.clone());
    }
    if !expect_echoes(&rx, &first) {
        return ExitCode::FAILURE;
    }
    // Sent while open: through the "socketOpen" branch.
    let last = vec!["message 4".to_owned()];
    send(last[0].clone());
    if !expect_echoes(&rx, &last) {
        return ExitCode::FAILURE;
    }

    let (done_tx, done_rx) = mpsc::channel();
    close_socket(CloseOptions::default().complete(move |res| {
        match res {
            Ok(ok) => println!("close: {}", ok.err_msg),
            Err(e) => println!("close: {}", e.err_msg()),
        }
        let _ = done_tx.send(res.is_ok());
    }));
    match done_rx.recv_timeout(FLOW_TIMEOUT) {
        Ok(true) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

/// Waits for the echoes of `sent`, in order; `false` on a failure, another
/// message, or the timeout.
fn expect_echoes(rx: &mpsc::Receiver<Event>, sent: &[String]) -> bool {
    for msg in sent {
        match rx.recv_timeout(FLOW_TIMEOUT) {
            Ok(Event::Received(got)) if got == *msg => {}
            Ok(Event::Received(got)) => {
                eprintln!("expected the echo of {msg:?}, got {got:?}");
                return false;
            }
            Ok(Event::Failed) => return false,
            Err(_) => {
                eprintln!("no echo of {msg:?} within {FLOW_TIMEOUT:?}");
                return false;
            }
        }
    }
    true
}
