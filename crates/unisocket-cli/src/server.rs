//! The test server of `unisocket serve` and of the zero-setup demo: echo, or
//! broadcast to every connected client. Built on the library's frame codec.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use unisocket::proto::frame::{apply_mask, FrameHeader, OpCode, MAX_HEADER_LEN};
use unisocket::proto::handshake::accept_key;

/// What the server does with each message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Send each message back to its sender.
    Echo,
    /// Send each message to every connected client.
    Broadcast,
}

/// Largest message the server accepts.
const MAX_MESSAGE: usize = 64 << 20;

/// Binds `addr` and serves until the process ends. `log` receives one line
/// per connection event.
pub async fn serve(
    listener: TcpListener,
    mode: Mode,
    log: Arc<dyn Fn(String) + Send + Sync>,
) -> std::io::Result<()> {
    let (tx, _) = broadcast::channel::<(u8, bytes::Bytes)>(1024);
    loop {
        let (stream, peer) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let tx = tx.clone();
        let log = log.clone();
        tokio::spawn(async move {
            log(format!("{peer} connected"));
            let result = handle(stream, peer, mode, tx, &*log).await;
            match result {
                Ok(()) => log(format!("{peer} disconnected")),
                Err(e) => log(format!("{peer} disconnected: {e}")),
            }
        });
    }
}

/// Starts an echo server on 127.0.0.1 (a free port) in the background.
pub async fn spawn_echo(log: Arc<dyn Fn(String) + Send + Sync>) -> std::io::Result<SocketAddr> {
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

async fn handshake(stream: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<()> {
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
                if let Some(p) = protocol {
                    resp.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
                }
                resp.push_str("\r\n");
                stream.write_all(resp.as_bytes()).await?;
                buf.advance(n);
                return Ok(());
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
    handshake(&mut stream, &mut buf).await?;
    let mut rx = tx.subscribe();
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
                    log(format!("{peer} sent close {code}"));
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
                    let kind = if op == OpCode::Text { "text" } else { "binary" };
                    log(format!(
                        "{peer} sent {kind} message of {} bytes",
                        data.len()
                    ));
                    match mode {
                        Mode::Echo => stream.write_all(&encode(op, &data)).await?,
                        Mode::Broadcast => {
                            let _ = tx.send((op.as_u8(), data));
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
