//! The sans-io RFC 6455 client: no tokio, no sockets, no clocks. Bytes and
//! `Instant`s go in; bytes, events and deadlines come out.
//!
//! - [`handshake`]: the HTTP upgrade request and the checks on the response.
//! - [`Connection`]: frames, fragmentation, UTF-8, control frames, the close
//!   handshake and limits on an open connection.

pub mod connection;
pub mod deflate;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod utf8;

#[cfg(all(test, feature = "deflate"))]
mod deflate_tests;
#[cfg(test)]
mod heartbeat_tests;
#[cfg(test)]
mod test_server;
#[cfg(test)]
mod tests;

pub use connection::{Config, Connection, Event, Heartbeat, Limits, SendError, State};
pub use error::{HandshakeError, ProtocolError};
