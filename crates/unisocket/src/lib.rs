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
//! The layers: [`proto`] is a sans-io RFC 6455 client (no sockets, no
//! clocks); one tokio task per connection drives it over TCP; [`SocketTask`]
//! and the callbacks are a thin layer over that task.

#![warn(missing_docs)]

mod connect;
mod data;
mod driver;
mod error;
mod events;
mod global;
mod ledger;
mod manifest;
mod options;
pub mod proto;
mod reconnect;
pub mod redact;
mod runtime;
mod task;
mod transport;

pub use connect::{connect_socket, network_timeout, set_network_timeout};
pub use data::{Data, Text};
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

/// Re-exported so that binary payloads can be built without a direct dependency.
pub use bytes::Bytes;
