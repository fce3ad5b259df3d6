//! The sans-io RFC 6455 client of `unisocket`: no tokio, no sockets, no
//! clocks. Bytes and `Instant`s go in; bytes, events and deadlines come out.
//!
//! This crate is `unisocket`'s protocol core, a crate of its own so that its
//! items are not part of `unisocket`'s API: `unisocket` re-exports the few
//! it needs ([`Data`], [`Text`], [`deflate::DeflateConfig`] and the error
//! types its errors carry as their source). It keeps its own version.
//!
//! - [`Data`], [`Text`]: message payloads.
//! - [`handshake`]: the HTTP upgrade request and the checks on the response.
//! - [`Connection`]: frames, fragmentation, UTF-8, control frames, the close
//!   handshake and limits on an open connection.
//! - [`deflate`]: RFC 7692 permessage-deflate negotiation and compression.
//!
//! Driving a connection by hand, with bytes in and out:
//!
//! ```
//! use std::time::Instant;
//! use unisocket_proto::{Config, Connection, Event};
//! use unisocket_proto::Data;
//!
//! let mut conn = Connection::new(Config::default());
//! // An unmasked text frame "hi" from the server arrives...
//! conn.read_buf().extend_from_slice(&[0x81, 0x02, b'h', b'i']);
//! assert_eq!(conn.poll_event().unwrap(), Some(Event::Message(Data::from("hi"))));
//! // ...and we answer; the masked frame waits in the write buffer.
//! conn.send_text("hello").unwrap();
//! let frame = conn.write_buf().split();
//! assert_eq!(frame.len(), 2 + 4 + 5); // header, mask key, payload
//! conn.close(1000, "bye", Instant::now()).unwrap();
//! ```

pub mod connection;
pub mod data;
pub mod deflate;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod redact;
pub mod utf8;

#[cfg(all(test, feature = "deflate"))]
mod deflate_tests;
#[cfg(test)]
mod heartbeat_tests;
#[cfg(test)]
mod pong_tests;
#[cfg(test)]
mod test_server;
#[cfg(test)]
mod tests;

pub use connection::{Config, Connection, Ending, Event, Heartbeat, Limits, SendError, State};
pub use data::{Data, Text};
pub use error::{HandshakeError, ProtocolError, RefusedResponse};
