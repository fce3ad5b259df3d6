//! Reaching the server: DNS, the TCP connect with `TCP_NODELAY`, an optional
//! HTTP `CONNECT` or SOCKS5 proxy, and TLS for `wss://`; the typed errors
//! and the timings of each step.
//!
//! ```text
//!   connect_tcp ──► [proxy: CONNECT / SOCKS5 tunnel] ──► [TLS] ──► Stream
//!   (server or proxy)                                  (wss only)
//! ```

mod proxy;
#[cfg(feature = "tls")]
mod tls;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::error::ErrorKind;

pub(crate) use proxy::{in_use as proxy_in_use, Proxy};
#[cfg(feature = "tls")]
pub(crate) use tls::TlsConfig;

/// Without the `tls` feature there is no TLS configuration: `wss://` is
/// refused by [`TlsConfig::new`] before any connection starts.
#[cfg(not(feature = "tls"))]
#[derive(Debug, Clone)]
pub(crate) enum TlsConfig {}

#[cfg(not(feature = "tls"))]
impl TlsConfig {
    pub(crate) fn new(_: &crate::options::TlsOptions) -> Result<TlsConfig, Error> {
        Err(Error::new(
            ErrorKind::Tls,
            "wss:// needs the `tls` feature of unisocket, which this build leaves out",
        ))
    }
}

/// A failure to reach the server: what failed ([`ErrorKind`]), a sentence
/// saying so, the HTTP status of a proxy's refusal, and the error beneath.
/// The API edge turns it into a [`crate::SocketError`] with the uni-app
/// `errMsg` (`From` in `error.rs`); nothing here knows of `errMsg`.
#[derive(Debug)]
pub(crate) struct Error {
    pub kind: ErrorKind,
    pub reason: String,
    pub status: Option<u16>,
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, reason: impl std::fmt::Display) -> Error {
        Error {
            kind,
            reason: reason.to_string(),
            status: None,
            source: None,
        }
    }

    pub(crate) fn with_source(
        mut self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        self.source = Some(Box::new(source));
        self
    }

    /// With the HTTP status of a proxy's refusal.
    pub(crate) fn with_status(mut self, status: u16) -> Error {
        self.status = Some(status);
        self
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// How to reach the server: through a proxy or not, with TLS or not.
#[derive(Debug, Clone, Default)]
pub(crate) struct Route {
    pub proxy: Option<Proxy>,
    pub tls: Option<TlsConfig>,
}

/// The byte stream to the server: plain TCP or TLS over TCP (either of them
/// possibly tunnelled through a proxy).
#[derive(Debug)]
pub(crate) enum Stream {
    Plain(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// An open stream to the server and how long each step took.
pub(crate) struct Established {
    pub stream: Stream,
    /// Name resolution (of the proxy, and of the server when resolved here).
    pub dns: Duration,
    /// The TCP connect, plus the proxy's tunnel set-up.
    pub connect: Duration,
    /// The TLS handshake; zero for `ws://`.
    pub tls: Duration,
}

/// Opens the stream to `host:port` along `route`.
pub(crate) async fn connect(
    host: &str,
    port: u16,
    route: &Route,
    no_delay: bool,
) -> Result<Established, Error> {
    // The proxy and TLS futures are boxed: some kilobytes that every
    // connection would otherwise carry while it opens, used or not.
    let tcp = match &route.proxy {
        None => connect_tcp(host, port, no_delay).await?,
        Some(proxy) => Box::pin(proxy.connect(host, port, no_delay)).await?,
    };
    let (stream, tls) = match &route.tls {
        None => (Stream::Plain(tcp.stream), Duration::ZERO),
        #[cfg(feature = "tls")]
        Some(config) => {
            let start = Instant::now();
            let stream = Box::pin(config.handshake(host, tcp.stream)).await?;
            (Stream::Tls(Box::new(stream)), start.elapsed())
        }
        #[cfg(not(feature = "tls"))]
        Some(never) => match *never {},
    };
    Ok(Established {
        stream,
        dns: tcp.dns,
        connect: tcp.connect,
        tls,
    })
}

/// Whether `e` is a TLS failure (an alert from the server, a bad record)
/// rather than a failure of the socket below.
pub(crate) fn is_tls_error(e: &io::Error) -> bool {
    #[cfg(feature = "tls")]
    {
        tls::is_tls_error(e)
    }
    #[cfg(not(feature = "tls"))]
    {
        let _ = e;
        false
    }
}

/// A connected TCP stream and how long each step took.
pub(crate) struct Connected {
    pub stream: TcpStream,
    pub dns: Duration,
    pub connect: Duration,
}

/// Resolves `host` (a name or an IP literal).
async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, Error> {
    match tokio::net::lookup_host((host, port)).await {
        Ok(a) => Ok(a.collect()),
        Err(e) => Err(Error::new(
            ErrorKind::Dns,
            format_args!("cannot resolve host {host:?}: {e}"),
        )
        .with_source(e)),
    }
}

/// Resolves `host` and connects to the first address that accepts.
pub(crate) async fn connect_tcp(host: &str, port: u16, no_delay: bool) -> Result<Connected, Error> {
    let start = Instant::now();
    let addrs = resolve(host, port).await?;
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
        None => Error::new(
            ErrorKind::Dns,
            format_args!("host {host:?} has no addresses"),
        ),
    })
}

fn io_error(addr: SocketAddr, e: io::Error) -> Error {
    let (kind, what) = match e.kind() {
        io::ErrorKind::ConnectionRefused => (ErrorKind::ConnectionRefused, "connection refused by"),
        _ => (ErrorKind::Io, "cannot connect to"),
    };
    Error::new(kind, format_args!("{what} {addr}: {e}")).with_source(e)
}

/// `host:port`, with brackets around an IPv6 address.
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A transport that can wait for a number of bytes before it reports itself
/// readable.
pub(crate) trait RecvLowWater {
    /// Asks to be woken for reading only once `bytes` bytes (at least 1) can
    /// be read, or the stream ended or failed. Only a hint: it may do nothing.
    fn set_recv_low_water(&self, bytes: usize);
}

impl RecvLowWater for Stream {
    /// `SO_RCVLOWAT` on plain TCP on Linux. Not through TLS: the bytes on
    /// the wire are not the bytes read, and rustls may already hold some of
    /// them, so the mark could wait for bytes that never come.
    fn set_recv_low_water(&self, bytes: usize) {
        match self {
            Stream::Plain(s) => set_rcvlowat(s, bytes),
            #[cfg(feature = "tls")]
            Stream::Tls(_) => {}
        }
    }
}

#[cfg(target_os = "linux")]
fn set_rcvlowat(socket: &TcpStream, bytes: usize) {
    use std::os::fd::AsRawFd;
    if !rcvlowat_is_safe() {
        return;
    }
    let value = libc::c_int::try_from(bytes.max(1)).unwrap_or(libc::c_int::MAX);
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    #[allow(
        unsafe_code,
        reason = "tokio has no SO_RCVLOWAT setter: setsockopt through libc"
    )]
    // SAFETY: the descriptor belongs to `socket`, which is borrowed (so open)
    // for the whole call. The option value points to a live `c_int` and
    // `len` is its size, which is what SO_RCVLOWAT takes; the kernel copies
    // the value during the call and keeps no pointer to it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            std::ptr::from_ref(&value).cast(),
            len,
        )
    };
    // A refusal only costs the optimisation: reads work as before.
    let _ = rc;
}

#[cfg(not(target_os = "linux"))]
fn set_rcvlowat(_socket: &TcpStream, _bytes: usize) {}

/// Whether this kernel handles a TCP receive low-water mark well: Linux 5.7
/// and later. Before 4.18 the receive buffer did not grow to fit the mark,
/// and fixes for marks that could stall a connection came up to 5.7, so
/// older kernels read as before.
#[cfg(target_os = "linux")]
fn rcvlowat_is_safe() -> bool {
    static SAFE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SAFE.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .and_then(|release| kernel_version(&release))
            .is_some_and(|version| version >= (5, 7))
    })
}

/// `(major, minor)` of a kernel release such as `6.18.44-fc-v657`.
#[cfg(any(target_os = "linux", test))]
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    /// For TLS, writes out the records that rustls still holds: a write may
    /// be accepted into the TLS session before the socket takes all of it.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::kernel_version;

    #[test]
    fn kernel_versions_are_read_from_the_release() {
        assert_eq!(kernel_version("6.18.44-fc-v657\n"), Some((6, 18)));
        assert_eq!(kernel_version("5.7.0"), Some((5, 7)));
        assert_eq!(kernel_version("4.18.0-553.el8_10.x86_64"), Some((4, 18)));
        assert_eq!(kernel_version("5-rc1"), None);
        assert_eq!(kernel_version(""), None);
        assert!(kernel_version("4.19.2").unwrap() < (5, 7));
        assert!(kernel_version("10.1").unwrap() >= (5, 7));
    }
}
