#![allow(dead_code)]
//! What the client's integration tests share: a small WebSocket server on
//! 127.0.0.1 built on the sans-io codec in `crates/unisocket-proto/src/test_server.rs`, the
//! tests' bounded waits ([`within`], [`bounded`], [`wait_until`]), an event
//! log ([`events`]), a counting allocator ([`alloc`]) and simulated time
//! ([`sim`]).

pub mod alloc;
#[path = "../../../unisocket-proto/src/test_server.rs"]
pub mod codec;
pub mod events;
pub mod sim;
mod wait;

pub use wait::*;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How long the server waits for a complete opening handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Size of one socket read.
const READ_CHUNK: usize = 16 * 1024;

/// How the test server answers opening handshakes.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Pick the first offered protocol that is in this list.
    pub protocols: Vec<String>,
    /// Answer the handshake with this status and body instead of 101 (e.g. 403).
    pub reject: Option<(u16, String)>,
    /// Extra response headers on the 101.
    pub extra_headers: Vec<(String, String)>,
}

/// A WebSocket server listening on 127.0.0.1; the accept loop stops when this
/// is dropped (connections already accepted run on until their handler ends).
pub struct TestServer {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The accept loop.
    task: JoinHandle<()>,
    /// How many TCP connections have been accepted so far.
    accepted: Arc<AtomicUsize>,
    /// How many handshakes have completed with a 101 so far.
    upgraded: Arc<AtomicUsize>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    /// Binds 127.0.0.1:0; for each accepted TCP connection performs the
    /// handshake (or the rejection in `opts.reject`) and then runs
    /// `handler(conn)` in its own tokio task. A request that is not a valid
    /// WebSocket upgrade is answered with 400 and the connection closed.
    pub async fn start<F, Fut>(opts: ServerOptions, handler: F) -> TestServer
    where
        F: Fn(ServerConn) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr");
        let opts = Arc::new(opts);
        let handler = Arc::new(handler);
        let accepted = Arc::new(AtomicUsize::new(0));
        let upgraded = Arc::new(AtomicUsize::new(0));
        let (acc, upg) = (accepted.clone(), upgraded.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // e.g. out of file descriptors: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                acc.fetch_add(1, Ordering::SeqCst);
                let (opts, handler, upg) = (opts.clone(), handler.clone(), upg.clone());
                tokio::spawn(async move {
                    if let Some(conn) = handshake(stream, &opts).await {
                        upg.fetch_add(1, Ordering::SeqCst);
                        handler(conn).await;
                    }
                });
            }
        });
        TestServer {
            addr,
            task,
            accepted,
            upgraded,
        }
    }

    /// A ready-made echo server: echoes text and binary messages, answers
    /// pings with pongs, ignores pongs, and answers a close with the same
    /// code and reason, then closes TCP.
    pub async fn echo() -> TestServer {
        TestServer::start(ServerOptions::default(), echo_handler).await
    }

    /// `ws://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// How many TCP connections have been accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// How many connections have completed the handshake with a 101 so far.
    pub fn upgraded(&self) -> usize {
        self.upgraded.load(Ordering::SeqCst)
    }
}

/// The handler behind [`TestServer::echo`], usable with [`TestServer::start`].
pub async fn echo_handler(mut conn: ServerConn) {
    while let Some(msg) = conn.recv().await {
        match msg {
            codec::Message::Text(s) => conn.send_text(&s).await,
            codec::Message::Binary(b) => conn.send_binary(&b).await,
            codec::Message::Ping(p) => conn.send_pong(&p).await,
            codec::Message::Pong(_) => {}
            codec::Message::Close(code, reason) => {
                conn.send_close(code, &reason).await;
                conn.shutdown().await;
                return;
            }
        }
    }
}

/// Reads and answers the opening handshake; `Some` once a 101 has been sent.
async fn handshake(mut stream: TcpStream, opts: &ServerOptions) -> Option<ServerConn> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; READ_CHUNK];
    let parsed = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        loop {
            match codec::parse_request(&buf) {
                Ok(Some(done)) => return Ok(done),
                Ok(None) => {}
                Err(e) => return Err(Some(e)),
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return Err(None),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let (request, consumed) = match parsed {
        Ok(Ok(done)) => done,
        Ok(Err(Some(reason))) => {
            let body = format!("bad WebSocket handshake: {reason}");
            let _ = stream
                .write_all(&codec::response_status(400, &[], body.as_bytes()))
                .await;
            let _ = stream.shutdown().await;
            return None;
        }
        Ok(Err(None)) | Err(_) => return None,
    };

    if let Some((status, body)) = &opts.reject {
        let _ = stream
            .write_all(&codec::response_status(*status, &[], body.as_bytes()))
            .await;
        let _ = stream.shutdown().await;
        return None;
    }

    let protocol = request
        .protocols
        .iter()
        .find(|p| opts.protocols.contains(p))
        .cloned();
    let extra: Vec<(&str, &str)> = opts
        .extra_headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let response = codec::response_101(&request.key, protocol.as_deref(), &extra);
    stream.write_all(&response).await.ok()?;

    let mut codec = codec::ServerCodec::new();
    codec.feed(&buf[consumed..]);
    Some(ServerConn {
        request,
        protocol,
        stream: Some(stream),
        codec,
        chunk,
        last_error: None,
    })
}

/// The server's end of one upgraded connection.
pub struct ServerConn {
    /// The client's opening handshake.
    pub request: codec::Request,
    /// The subprotocol the server picked, if any.
    protocol: Option<String>,
    /// The socket; `None` after [`ServerConn::shutdown`].
    stream: Option<TcpStream>,
    /// Decoder of the client's frames.
    codec: codec::ServerCodec,
    /// Read buffer.
    chunk: Vec<u8>,
    /// Why the last `recv`/`recv_frame` returned `None` (EOF, I/O or protocol error).
    last_error: Option<String>,
}

impl ServerConn {
    /// Reads more bytes into the codec; `false` (and `last_error` set) on EOF or error.
    async fn fill(&mut self) -> bool {
        let Some(stream) = self.stream.as_mut() else {
            self.last_error = Some("connection already shut down".into());
            return false;
        };
        match stream.read(&mut self.chunk).await {
            Ok(0) => {
                self.last_error = Some("EOF".into());
                false
            }
            Ok(n) => {
                self.codec.feed(&self.chunk[..n]);
                true
            }
            Err(e) => {
                self.last_error = Some(format!("read error: {e}"));
                false
            }
        }
    }

    /// The next message from the client (fragments assembled, control frames
    /// returned as they come); `None` on EOF, I/O error or protocol
    /// violation (see [`ServerConn::last_error`]). Does NOT auto-reply to pings.
    pub async fn recv(&mut self) -> Option<codec::Message> {
        loop {
            match self.codec.next_message() {
                Ok(Some(m)) => return Some(m),
                Ok(None) => {}
                Err(e) => {
                    self.last_error = Some(format!("protocol error: {e}"));
                    return None;
                }
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// The next raw frame from the client (no assembly, no RSV/opcode
    /// checks); `None` on EOF, I/O error or an unmasked/invalid header.
    pub async fn recv_frame(&mut self) -> Option<codec::Frame> {
        loop {
            match self.codec.next_frame() {
                Ok(Some(f)) => return Some(f),
                Ok(None) => {}
                Err(e) => {
                    self.last_error = Some(format!("protocol error: {e}"));
                    return None;
                }
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// Why the last `recv`/`recv_frame` returned `None`: `"EOF"`,
    /// `"read error: ..."` or `"protocol error: ..."`.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Sends an unmasked text frame.
    pub async fn send_text(&mut self, s: &str) {
        self.send_raw(&codec::server_text(s)).await;
    }

    /// Sends an unmasked binary frame.
    pub async fn send_binary(&mut self, b: &[u8]) {
        self.send_raw(&codec::server_binary(b)).await;
    }

    /// Sends a ping.
    pub async fn send_ping(&mut self, b: &[u8]) {
        self.send_raw(&codec::server_ping(b)).await;
    }

    /// Sends a pong.
    pub async fn send_pong(&mut self, b: &[u8]) {
        self.send_raw(&codec::server_pong(b)).await;
    }

    /// Sends a close frame (empty payload if `code` is `None`).
    pub async fn send_close(&mut self, code: Option<u16>, reason: &str) {
        self.send_raw(&codec::server_close(code, reason)).await;
    }

    /// Writes exactly these bytes. Write errors (the client went away) and
    /// writes after [`ServerConn::shutdown`] are ignored.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        if let Some(stream) = self.stream.as_mut() {
            let _ = stream.write_all(bytes).await;
            let _ = stream.flush().await;
        }
    }

    /// Closes TCP: shuts down the write half (FIN) and drops the socket.
    pub async fn shutdown(&mut self) {
        if let Some(mut stream) = self.stream.take() {
            let _ = stream.shutdown().await;
        }
    }

    /// The decoder, e.g. for `masks_seen()` and `last_message_frames()`.
    pub fn codec(&self) -> &codec::ServerCodec {
        &self.codec
    }

    /// The subprotocol the server answered with, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }
}

/// Binds 127.0.0.1:0 and runs `handler(stream)` in its own task for every
/// accepted TCP connection, before any handshake (for garbage, partial or
/// refused handshake tests). The accept loop runs until the runtime ends.
pub async fn raw_server<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    raw_server_with(None, handler).await
}

/// [`raw_server`] whose accepted connections have a receive buffer of
/// `recv_buffer` bytes (`SO_RCVBUF`, which the kernel doubles), when given:
/// a server that does not read then holds little of what the client
/// writes, and the client's own buffers fill soon.
pub async fn raw_server_with<F, Fut>(recv_buffer: Option<u32>, handler: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
    }
    socket
        .bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind 127.0.0.1:0");
    let listener = socket.listen(128).expect("listen");
    let addr = listener.local_addr().expect("local_addr");
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move { handler(stream).await });
        }
    });
    addr
}

/// Reads from `stream` until a complete HTTP head (`\r\n\r\n`) has arrived,
/// and returns everything read (the head and anything after it); `None` on
/// EOF or error first. Handy in `raw_server` handlers.
pub async fn read_http_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            return Some(buf);
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Reads until the client's close frame arrives, answers it with the same
/// code and reason, closes TCP, and returns what the close frame carried
/// (`None` if the connection ended without one).
pub async fn answer_close(conn: &mut ServerConn) -> Option<(Option<u16>, String)> {
    loop {
        match conn.recv().await? {
            codec::Message::Close(code, reason) => {
                conn.send_close(code, &reason).await;
                conn.shutdown().await;
                return Some((code, reason));
            }
            _ => continue,
        }
    }
}
