//! # unisocket
//!
//! The uni-app socket API — `uni.connectSocket`, `SocketTask` and the global
//! `uni.*Socket*` functions — for Rust, on an RFC 6455 client of its own.
//!
//! Callback style, as in uni-app (works from a plain `fn main`):
//!
//! ```no_run
//! use unisocket::{connect_socket, ConnectOptions, SendOptions};
//!
//! let task = connect_socket(ConnectOptions::new("ws://127.0.0.1:9001"));
//! let t = task.clone();
//! task.on_open(move |_| {
//!     t.send(SendOptions::new("hello").success(|ok| println!("{}", ok.err_msg)));
//! });
//! task.on_message(|ev| println!("got {:?}", ev.data));
//! task.on_close(|ev| println!("closed: {} {}", ev.code, ev.reason));
//! # std::thread::sleep(std::time::Duration::from_millis(100));
//! ```
//!
//! Async style:
//!
//! ```no_run
//! # async fn demo() -> Result<(), unisocket::SocketError> {
//! use unisocket::{connect_socket, CloseOptions, ConnectOptions};
//!
//! let task = connect_socket(ConnectOptions::new("ws://127.0.0.1:9001")).await?;
//! task.send("hello").await?;
//! if let Some(reply) = task.recv().await {
//!     println!("got {reply:?}");
//! }
//! task.close(CloseOptions::default()).await?;
//! # Ok(()) }
//! ```
//!
//! ## Threads
//!
//! A task's callbacks run one at a time, in order: its `on_*` listeners, the
//! global `on_socket_*` listeners that hear it, and the
//! `success`/`fail`/`complete` callbacks of its `send` and `close` calls.
//! Where they run:
//!
//! - Events of the connection (open, message, ping and pong, error, close,
//!   reconnecting) and the callbacks of the sends it completes run on the
//!   thread that drives the connection, inside its turn: a worker of the
//!   tokio runtime that was current when [`connect_socket`] was called (on a
//!   current-thread runtime, its one thread), or, outside any runtime, of a
//!   background multi-thread runtime started on first use (threads named
//!   `unisocket`, one per core, at most 4).
//! - A listener registered after its event is called at once on the calling
//!   thread, before `on_*` returns; so are the callbacks of a call that
//!   fails at once (a `send` before OPEN or past
//!   [`max_buffered_bytes`](ConnectOptions::max_buffered_bytes), a `close`
//!   with an invalid code or reason). If the task's callbacks are running on
//!   another thread at that moment, these join the queue there instead.
//! - The `success`/`fail`/`complete` of [`connect_socket`] itself run on the
//!   calling thread before it returns.
//!
//! ```
//! use std::sync::mpsc;
//! use unisocket::{connect_socket, ConnectOptions};
//!
//! let task = connect_socket(ConnectOptions::new("htp://x")); // invalid: failed at once
//! let (tx, rx) = mpsc::channel();
//! task.on_error(move |_| tx.send(std::thread::current().id()).unwrap());
//! // Registered after the error: called at once, on this thread.
//! assert_eq!(rx.try_recv(), Ok(std::thread::current().id()));
//! ```
//!
//! A callback must not block. While it runs on the connection's thread, the
//! connection does nothing else (it reads nothing, writes nothing and
//! answers no ping) and that runtime thread runs no other task. Events that
//! arrive while a callback runs on another thread wait behind it, counted in
//! [`max_held_bytes`](ConnectOptions::max_held_bytes): reading pauses once
//! 512 KiB of them (or `max_held_bytes`, if lower) wait, and nothing is
//! dropped. Long work goes to a thread, a channel or
//! `tokio::task::spawn_blocking`. A callback that waits for another callback
//! of its task waits for ever (that one runs after it returns), and one that
//! waits for a [`Completion`] of its task may too (the send needs the thread
//! the callback holds).
//!
//! ```no_run
//! use unisocket::{connect_socket, ConnectOptions, Data};
//!
//! let task = connect_socket(ConnectOptions::new("ws://127.0.0.1:9001"));
//! let (tx, rx) = std::sync::mpsc::channel::<Data>();
//! task.on_message(move |ev| drop(tx.send(ev.data.clone()))); // returns at once
//! std::thread::spawn(move || {
//!     for data in rx {
//!         println!("slow work on {data:?}");
//!     }
//! });
//! ```
//!
//! The layers: [`proto`] is a sans-io RFC 6455 client (no sockets, no
//! clocks); one tokio task per connection drives it over TCP; [`SocketTask`]
//! and the callbacks are a thin layer over that task.

#![warn(missing_docs)]
// The browser engine leaves out what only a socket of our own needs (pings
// and pongs, read pauses, response headers, the transport's targets).
#![cfg_attr(target_arch = "wasm32", allow(dead_code))]

/// The code blocks of README.md, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

mod attempt;
#[cfg(target_arch = "wasm32")]
mod browser;
mod connect;
#[cfg(not(target_arch = "wasm32"))]
mod driver;
mod error;
mod events;
mod global;
mod ledger;
mod manifest;
mod oneshot;
mod options;
mod reconnect;
#[cfg(not(target_arch = "wasm32"))]
mod runtime;
mod task;
#[cfg(not(target_arch = "wasm32"))]
mod transport;

pub use connect::{connect_socket, network_timeout, set_network_timeout};
pub use unisocket_proto::deflate::DeflateConfig;
pub use unisocket_proto::redact;
pub use unisocket_proto::{Data, HandshakeError, ProtocolError, Text};

// The protocol core, under the names this crate's modules use.
pub use error::{Api, ErrorKind, SocketError};
pub use events::{
    CloseEvent, ErrorEvent, Headers, MessageEvent, OpenEvent, PingPongEvent, Profile,
};
pub use global::{
    close_socket, current_socket, on_socket_close, on_socket_error, on_socket_message,
    on_socket_open, send_socket_message,
};
pub use manifest::{Manifest, ManifestError};
pub use options::{
    CloseOptions, CloseSuccess, ConnectOptions, ConnectSuccess, DangerousOptions, ProxyInUse,
    ProxySource, SendOptions, SendSuccess,
};
pub use reconnect::{ReconnectEvent, ReconnectPolicy};
pub use task::{Completion, ReadyState, SocketTask};
use unisocket_proto as proto;
use unisocket_proto::data;

/// Re-exported so that binary payloads can be built without a direct dependency.
pub use bytes::Bytes;
