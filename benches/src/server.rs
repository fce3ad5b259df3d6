//! The echo servers, run in their own process (`wsbench server`), on one
//! single-threaded tokio runtime pinned to one core:
//!
//! - WebSocket echo: every data frame is sent back as it came (same opcode,
//!   same FIN bit, unmasked). Three implementations (`--kind`):
//!   - `echo` (default, the fastest here): a minimal streaming echo written
//!     for this bench: the upgrade by hand, then each read is parsed, the
//!     frames it holds (or the part of a large frame that arrived so far) are
//!     unmasked into one output buffer with fastwebsockets' SIMD `unmask`,
//!     and written back with one write. Pings get pongs, a close is echoed.
//!     Text is not validated here: the client under test validates it.
//!   - `fastwebsockets`: `WebSocket::read_frame` / `write_frame` per frame.
//!   - `tokio-websockets`: its `ServerBuilder`, `Stream` + `Sink` per message.
//! - Raw TCP echo: the length-prefixed frames come back byte for byte (a
//!   plain byte echo keeps the framing), one write per read.
//!
//! The process prints `ws=ADDR tcp=ADDR` once it listens, and exits when its
//! standard input closes (when the orchestrator ends or dies).

use std::io::{BufRead, Write};
use std::net::SocketAddr;

use base64::Engine;
use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::util::{pin_to, raise_nofile_limit, Args};

/// Which library serves WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    Echo,
    FastWebSockets,
    TokioWebSockets,
}

impl ServerKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "echo" | "own" => Some(ServerKind::Echo),
            "fastwebsockets" | "fws" => Some(ServerKind::FastWebSockets),
            "tokio-websockets" | "tws" => Some(ServerKind::TokioWebSockets),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Echo => "echo",
            ServerKind::FastWebSockets => "fastwebsockets",
            ServerKind::TokioWebSockets => "tokio-websockets",
        }
    }
}

pub fn main(args: &[String]) {
    let args = Args::parse(args, &[]).unwrap_or_else(|e| {
        eprintln!("wsbench server: {e}");
        std::process::exit(2)
    });
    let kind = ServerKind::parse(args.get("kind").unwrap_or("echo")).unwrap_or_else(|| {
        eprintln!("wsbench server: --kind is echo, fastwebsockets or tokio-websockets");
        std::process::exit(2)
    });
    let core = args.num::<usize>("core").ok().flatten();
    if core.is_some() && !pin_to(core) {
        eprintln!("wsbench server: could not pin to core {core:?}; running unpinned");
    }
    raise_nofile_limit();
    let ws_addr: SocketAddr = args.get("ws").unwrap_or("127.0.0.1:0").parse().unwrap();
    let tcp_addr: SocketAddr = args.get("tcp").unwrap_or("127.0.0.1:0").parse().unwrap();

    // Exit when the orchestrator closes our stdin.
    std::thread::spawn(|| {
        let mut sink = String::new();
        let stdin = std::io::stdin();
        let mut lock = stdin.lock();
        while matches!(lock.read_line(&mut sink), Ok(n) if n > 0) {
            sink.clear();
        }
        std::process::exit(0);
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let ws = listen(ws_addr);
        let tcp = listen(tcp_addr);
        println!(
            "ws={} tcp={}",
            ws.local_addr().unwrap(),
            tcp.local_addr().unwrap()
        );
        let _ = std::io::stdout().flush();
        tokio::spawn(accept_loop(ws, move |s| async move {
            match kind {
                ServerKind::Echo => own_echo(s).await,
                ServerKind::FastWebSockets => fws_echo(s).await,
                ServerKind::TokioWebSockets => tws_echo(s).await,
            }
        }));
        accept_loop(tcp, raw_echo).await;
    });
}

/// A listener with a backlog deep enough for 1000 connects at once.
fn listen(addr: SocketAddr) -> TcpListener {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .expect("socket");
    sock.set_reuseaddr(true).ok();
    sock.bind(addr).expect("bind");
    sock.listen(4096).expect("listen")
}

async fn accept_loop<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static,
{
    loop {
        match listener.accept().await {
            Ok((s, _)) => {
                let _ = s.set_nodelay(true);
                tokio::spawn(handler(s));
            }
            Err(e) => {
                // EMFILE and friends: back off a little rather than spin.
                eprintln!("wsbench server: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The server side of the HTTP upgrade, by hand: read the request, answer
/// 101. Returns the bytes that came after the request.
async fn upgrade(s: &mut TcpStream) -> Result<BytesMut, BoxError> {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if s.read_buf(&mut buf).await? == 0 {
            return Err("eof during handshake".into());
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf)? {
            httparse::Status::Partial => {
                if buf.len() > 16 << 10 {
                    return Err("request too large".into());
                }
                continue;
            }
            httparse::Status::Complete(n) => {
                let key = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-key"))
                    .ok_or("no Sec-WebSocket-Key")?
                    .value;
                let mut sha = sha1_smol::Sha1::new();
                sha.update(key);
                sha.update(GUID.as_bytes());
                let accept = base64::engine::general_purpose::STANDARD.encode(sha.digest().bytes());
                let resp = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                );
                s.write_all(resp.as_bytes()).await?;
                let _ = buf.split_to(n);
                return Ok(buf);
            }
        }
    }
}

async fn fws_echo(mut s: TcpStream) -> Result<(), BoxError> {
    use fastwebsockets::{Frame, OpCode, Role, WebSocket};
    if !upgrade(&mut s).await?.is_empty() {
        return Err("bytes after the upgrade request".into());
    }
    let mut ws = WebSocket::after_handshake(s, Role::Server);
    ws.set_auto_close(true);
    ws.set_auto_pong(true);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                ws.write_frame(Frame::new(frame.fin, frame.opcode, None, frame.payload))
                    .await?;
            }
            OpCode::Close => return Ok(()),
            _ => {}
        }
    }
}

async fn tws_echo(s: TcpStream) -> Result<(), BoxError> {
    let (_req, mut ws) = tokio_websockets::ServerBuilder::new().accept(s).await?;
    while let Some(msg) = ws.next().await {
        let msg = msg?;
        if msg.is_text() || msg.is_binary() {
            ws.send(msg).await?;
        }
    }
    Ok(())
}

/// Raw TCP echo: bytes come back as they arrive, so the length-prefixed
/// frames of the client come back intact.
async fn raw_echo(mut s: TcpStream) -> Result<(), BoxError> {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        s.write_all(&buf[..n]).await?;
    }
}

/// The frame being echoed by [`own_echo`].
struct Current {
    mask: [u8; 4],
    /// Payload bytes still to come.
    left: u64,
    /// Payload bytes done so far (the offset into the mask).
    done: usize,
}

/// The minimal streaming echo (see the module docs).
async fn own_echo(mut s: TcpStream) -> Result<(), BoxError> {
    let mut inb = upgrade(&mut s).await?;
    inb.reserve(64 << 10);
    let mut out: Vec<u8> = Vec::with_capacity(64 << 10);
    let mut cur: Option<Current> = None;
    loop {
        let mut closing = false;
        loop {
            if let Some(c) = cur.as_mut() {
                // Data payload: pass on what is here, unmasked.
                let n = (c.left.min(inb.len() as u64)) as usize;
                if n == 0 {
                    break;
                }
                let start = out.len();
                out.extend_from_slice(&inb[..n]);
                let mut key = c.mask;
                key.rotate_left(c.done & 3);
                fastwebsockets::unmask(&mut out[start..], key);
                let _ = inb.split_to(n);
                c.left -= n as u64;
                c.done += n;
                if c.left == 0 {
                    cur = None;
                }
                continue;
            }
            // A header: 2 bytes, the extended length, the mask.
            if inb.len() < 2 {
                break;
            }
            let (b0, b1) = (inb[0], inb[1]);
            let len7 = b1 & 0x7F;
            let ext = match len7 {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            let hlen = 2 + ext + 4;
            if inb.len() < hlen {
                break;
            }
            if b1 & 0x80 == 0 {
                return Err("unmasked client frame".into());
            }
            let len = match ext {
                0 => u64::from(len7),
                2 => u64::from(u16::from_be_bytes([inb[2], inb[3]])),
                _ => u64::from_be_bytes(inb[2..10].try_into().unwrap()),
            };
            let mask: [u8; 4] = inb[2 + ext..hlen].try_into().unwrap();
            let opcode = b0 & 0x0F;
            if opcode >= 8 {
                // Control frame (at most 125 bytes): wait for all of it.
                if inb.len() < hlen + len as usize {
                    break;
                }
                let mut payload = inb[hlen..hlen + len as usize].to_vec();
                fastwebsockets::unmask(&mut payload, mask);
                let _ = inb.split_to(hlen + len as usize);
                let reply = match opcode {
                    0x8 => {
                        closing = true;
                        Some(0x88)
                    }
                    0x9 => Some(0x8A),
                    _ => None,
                };
                if let Some(b0) = reply {
                    out.push(b0);
                    out.push(payload.len() as u8);
                    out.extend_from_slice(&payload);
                }
                if closing {
                    break;
                }
                continue;
            }
            // Data frame: the same header, unmasked, then the payload as it comes.
            out.push(b0);
            match ext {
                0 => out.push(len7),
                2 => {
                    out.push(126);
                    out.extend_from_slice(&(len as u16).to_be_bytes());
                }
                _ => {
                    out.push(127);
                    out.extend_from_slice(&len.to_be_bytes());
                }
            }
            let _ = inb.split_to(hlen);
            if len > 0 {
                cur = Some(Current {
                    mask,
                    left: len,
                    done: 0,
                });
            }
        }
        if !out.is_empty() {
            s.write_all(&out).await?;
            out.clear();
        }
        if closing {
            let _ = s.shutdown().await;
            return Ok(());
        }
        if inb.capacity() - inb.len() < 16 << 10 {
            inb.reserve(64 << 10);
        }
        if s.read_buf(&mut inb).await? == 0 {
            return Ok(());
        }
    }
}
