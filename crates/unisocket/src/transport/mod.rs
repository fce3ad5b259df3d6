//! Reaching the server: DNS, the TCP connect with `TCP_NODELAY`, and the
//! typed errors of each step.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::error::{Api, ErrorKind, SocketError};

/// A connected TCP stream and how long each step took.
pub(crate) struct Connected {
    pub stream: TcpStream,
    pub dns: Duration,
    pub connect: Duration,
}

/// Resolves `host` and connects to the first address that accepts.
pub(crate) async fn connect_tcp(
    host: &str,
    port: u16,
    no_delay: bool,
) -> Result<Connected, SocketError> {
    let start = Instant::now();
    let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((host, port)).await {
        Ok(a) => a.collect(),
        Err(e) => {
            return Err(SocketError::new(
                Api::ConnectSocket,
                ErrorKind::Dns,
                format_args!("cannot resolve host {host:?}: {e}"),
            )
            .with_source(e))
        }
    };
    let dns = start.elapsed();
    let start = Instant::now();
    let mut last: Option<(SocketAddr, io::Error)> = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                stream
                    .set_nodelay(no_delay)
                    .map_err(|e| io_error(addr, e))?;
                return Ok(Connected {
                    stream,
                    dns,
                    connect: start.elapsed(),
                });
            }
            Err(e) => last = Some((addr, e)),
        }
    }
    Err(match last {
        Some((addr, e)) => io_error(addr, e),
        None => SocketError::new(
            Api::ConnectSocket,
            ErrorKind::Dns,
            format_args!("host {host:?} has no addresses"),
        ),
    })
}

fn io_error(addr: SocketAddr, e: io::Error) -> SocketError {
    let (kind, what) = match e.kind() {
        io::ErrorKind::ConnectionRefused => (ErrorKind::ConnectionRefused, "connection refused by"),
        _ => (ErrorKind::Io, "cannot connect to"),
    };
    SocketError::new(Api::ConnectSocket, kind, format_args!("{what} {addr}: {e}")).with_source(e)
}
