//! The test server of `unisocket serve` and of the zero-setup demo: echo, or
//! broadcast to every connected client. Built on the library's frame codec.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use unisocket_proto::frame::{apply_mask, FrameHeader, OpCode, MAX_HEADER_LEN};
use unisocket_proto::handshake::accept_key;

use crate::exit;

/// What the server does with each message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Send each message back to its sender.
    Echo,
    /// Send each message to every connected client (the sender included).
    Broadcast,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::Broadcast => "broadcast",
        }
    }
}

/// The options of `unisocket serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Port to listen on (0 picks a free one; the first stdout line tells which).
    #[arg(long, default_value_t = 9001)]
    pub port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// What to do with each message.
    #[arg(long, value_enum, default_value_t = Mode::Echo)]
    pub mode: Mode,
    /// Print only the `listening on` line, not every connection and message.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// One log line on stdout, flushed at once (the output is often a pipe read
/// by a script). A closed stdout is not an error worth stopping for.
fn print_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs `unisocket serve` until the process is stopped; returns the exit code.
pub fn run(args: &ServeArgs) -> i32 {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("unisocket: cannot start a runtime: {e}");
            return exit::FAILURE;
        }
    };
    rt.block_on(async {
        let (host, port) = (args.host.as_str(), args.port);
        let listener = match TcpListener::bind((host, port)).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("unisocket: cannot listen on {host}:{port}: {e}");
                return exit::FAILURE;
            }
        };
        match listener.local_addr() {
            Ok(addr) => print_line(&format!(
                "listening on ws://{addr} ({} mode)",
                args.mode.name()
            )),
            Err(e) => {
                eprintln!("unisocket: {e}");
                return exit::FAILURE;
            }
        }
        let log: Log = if args.quiet {
            Arc::new(|_| {})
        } else {
            Arc::new(|line| print_line(&line))
        };
        match serve(listener, args.mode, log).await {
            Ok(()) => exit::OK,
            Err(e) => {
                eprintln!("unisocket: the server stopped: {e}");
                exit::FAILURE
            }
        }
    })
}

/// Where the server's log lines go.
pub type Log = Arc<dyn Fn(String) + Send + Sync>;

/// Largest message the server accepts.
const MAX_MESSAGE: usize = 64 << 20;

/// Serves `listener` until the process ends. `log` receives one line per
/// connection event and message.
pub async fn serve(listener: TcpListener, mode: Mode, log: Log) -> std::io::Result<()> {
    let (tx, _) = broadcast::channel::<(u8, bytes::Bytes)>(1024);
    loop {
        let (stream, peer) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let tx = tx.clone();
        let log = log.clone();
        tokio::spawn(async move {
            let result = handle(stream, peer, mode, tx, &*log).await;
            match result {
                Ok(()) => log(format!("{peer} disconnected")),
                Err(e) => log(format!("{peer} disconnected: {e}")),
            }
        });
    }
}

/// Starts an echo server on 127.0.0.1 (a free port) in the background.
pub async fn spawn_echo(log: Log) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = serve(listener, Mode::Echo, log).await;
    });
    Ok(addr)
}

fn invalid(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_owned())
}

/// Answers the HTTP upgrade; returns the request path and the subprotocol
/// chosen (the client's first).
async fn handshake(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
) -> std::io::Result<(String, Option<String>)> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(buf).map_err(|e| invalid(&e.to_string()))? {
            httparse::Status::Complete(n) => {
                let get = |name: &str| {
                    req.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
                };
                let Some(key) = get("sec-websocket-key") else {
                    stream
                        .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                        .await?;
                    return Err(invalid("not a WebSocket request"));
                };
                let protocol = get("sec-websocket-protocol")
                    .and_then(|p| p.split(',').next().map(|s| s.trim().to_owned()));
                let mut resp = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Accept: {}\r\n",
                    accept_key(&key)
                );
                if let Some(p) = &protocol {
                    resp.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
                }
                resp.push_str("\r\n");
                let path = req.path.unwrap_or("/").to_owned();
                stream.write_all(resp.as_bytes()).await?;
                buf.advance(n);
                return Ok((path, protocol));
            }
            httparse::Status::Partial => {
                if buf.len() > 64 * 1024 || stream.read_buf(buf).await? == 0 {
                    return Err(invalid("incomplete handshake"));
                }
            }
        }
    }
}

fn encode(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let header = FrameHeader {
        fin: true,
        rsv1: false,
        opcode,
        mask: None,
        payload_len: payload.len() as u64,
    };
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = header.encode(&mut head);
    let mut out = Vec::with_capacity(n + payload.len());
    out.extend_from_slice(&head[..n]);
    out.extend_from_slice(payload);
    out
}

async fn handle(
    mut stream: TcpStream,
    peer: SocketAddr,
    mode: Mode,
    tx: broadcast::Sender<(u8, bytes::Bytes)>,
    log: &(dyn Fn(String) + Send + Sync),
) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    // Subscribe first: once the client sees the handshake response it may
    // count on receiving broadcasts.
    let mut rx = tx.subscribe();
    let (path, protocol) = handshake(&mut stream, &mut buf).await?;
    match protocol {
        Some(p) => log(format!("{peer} connected to {path} (subprotocol {p})")),
        None => log(format!("{peer} connected to {path}")),
    }
    let mut message: Option<(OpCode, BytesMut)> = None;
    loop {
        // Decode every whole frame in the buffer.
        while let Some((h, n)) =
            FrameHeader::decode(&buf, false).map_err(|e| invalid(&e.to_string()))?
        {
            let len = usize::try_from(h.payload_len).unwrap_or(usize::MAX);
            if len > MAX_MESSAGE {
                stream
                    .write_all(&encode(OpCode::Close, &1009u16.to_be_bytes()))
                    .await?;
                return Err(invalid("message too large"));
            }
            if buf.len() < n + len {
                buf.reserve(n + len - buf.len());
                break;
            }
            buf.advance(n);
            let mut payload = buf.split_to(len);
            let Some(key) = h.mask else {
                return Err(invalid("unmasked client frame"));
            };
            apply_mask(&mut payload, key, 0);
            match h.opcode {
                OpCode::Ping => stream.write_all(&encode(OpCode::Pong, &payload)).await?,
                OpCode::Pong => {}
                OpCode::Close => {
                    let code = payload
                        .get(..2)
                        .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]]));
                    let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or(&[]));
                    if reason.is_empty() {
                        log(format!("{peer} sent close {code}"));
                    } else {
                        log(format!("{peer} sent close {code} {reason:?}"));
                    }
                    let echo = if payload.len() >= 2 {
                        &payload[..]
                    } else {
                        &[][..]
                    };
                    stream.write_all(&encode(OpCode::Close, echo)).await?;
                    stream.shutdown().await?;
                    return Ok(());
                }
                op => {
                    let (op, mut data) = match (op, message.take()) {
                        (OpCode::Continuation, Some((op, mut data))) => {
                            data.extend_from_slice(&payload);
                            (op, data)
                        }
                        (OpCode::Continuation, None) => {
                            return Err(invalid("unexpected continuation"))
                        }
                        (op, _) => (op, payload),
                    };
                    if data.len() > MAX_MESSAGE {
                        return Err(invalid("message too large"));
                    }
                    if !h.fin {
                        message = Some((op, data));
                        continue;
                    }
                    let data = std::mem::take(&mut data).freeze();
                    let what = describe(op, &data);
                    match mode {
                        Mode::Echo => {
                            log(format!("{peer} {what}"));
                            stream.write_all(&encode(op, &data)).await?;
                        }
                        Mode::Broadcast => {
                            let n = tx.send((op.as_u8(), data)).unwrap_or(0);
                            log(format!("{peer} {what} -> {n} client(s)"));
                        }
                    }
                }
            }
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
        tokio::select! {
            n = stream.read_buf(&mut buf) => {
                if n? == 0 {
                    return Ok(());
                }
            }
            msg = rx.recv(), if mode == Mode::Broadcast => {
                if let Ok((op, data)) = msg {
                    let op = if op == OpCode::Text.as_u8() { OpCode::Text } else { OpCode::Binary };
                    stream.write_all(&encode(op, &data)).await?;
                }
            }
        }
    }
}

/// `text (5 bytes) "hello"` or `binary (4 bytes)`, for the log.
fn describe(op: OpCode, data: &[u8]) -> String {
    if op != OpCode::Text {
        return format!("binary ({} bytes)", data.len());
    }
    let text = String::from_utf8_lossy(data);
    let shown: String = text.chars().take(80).collect();
    let more = if shown.len() < text.len() { "..." } else { "" };
    format!("text ({} bytes) {shown:?}{more}", data.len())
}
