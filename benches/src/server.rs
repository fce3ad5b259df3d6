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
//!   - `batching`: the same parsing, but the way a busy event-loop server
//!     behaves: it reads everything there is, queues the echoes, and writes
//!     them in one batch only when a read would block (or the stream ends,
//!     or a close came, or 16 MiB wait).
//!   - `fastwebsockets`: `WebSocket::read_frame` / `write_frame` per frame.
//!   - `tokio-websockets`: its `ServerBuilder`, `Stream` + `Sink` per message.
//! - Raw TCP echo: the length-prefixed frames come back byte for byte (a
//!   plain byte echo keeps the framing), one write per read.
//! - The same two over TLS (rustls, aws-lc-rs): `wss` and `tls` listeners
//!   whose connections go through a `TlsAcceptor` and then to the same
//!   echo. The certificate is signed by a throw-away CA made at start
//!   (rcgen), whose PEM is written to a file for the clients. Session
//!   resumption is off (no session cache, no tickets): every TLS handshake
//!   is a full one, whatever the client caches.
//!
//! The process prints `ws=ADDR tcp=ADDR wss=ADDR tls=ADDR ca=PATH` once it
//! listens, and exits when its standard input closes (when the orchestrator
//! ends or dies).

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine;
use bytes::BytesMut;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::util::{pin_to, raise_nofile_limit, Args};

/// Which library serves WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    Echo,
    Batching,
    FastWebSockets,
    TokioWebSockets,
}

/// Every kind, in report order (`--server all`).
pub const ALL: [ServerKind; 4] = [
    ServerKind::Echo,
    ServerKind::Batching,
    ServerKind::FastWebSockets,
    ServerKind::TokioWebSockets,
];

impl ServerKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "echo" | "own" | "streaming" => Some(ServerKind::Echo),
            "batching" | "batch" => Some(ServerKind::Batching),
            "fastwebsockets" | "fws" => Some(ServerKind::FastWebSockets),
            "tokio-websockets" | "tws" => Some(ServerKind::TokioWebSockets),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Echo => "echo",
            ServerKind::Batching => "batching",
            ServerKind::FastWebSockets => "fastwebsockets",
            ServerKind::TokioWebSockets => "tokio-websockets",
        }
    }

    /// One line for the report.
    pub fn describe(self) -> &'static str {
        match self {
            ServerKind::Echo => "streaming echo: each read parsed and echoed with one write",
            ServerKind::Batching => {
                "batching echo: reads until a read would block, then writes every queued echo in one write"
            }
            ServerKind::FastWebSockets => "fastwebsockets read_frame / write_frame, one write per frame",
            ServerKind::TokioWebSockets => "tokio-websockets Stream / Sink, one send (write + flush) per message",
        }
    }
}

pub fn main(args: &[String]) {
    let args = Args::parse(args, &[]).unwrap_or_else(|e| {
        eprintln!("wsbench server: {e}");
        std::process::exit(2)
    });
    let kind = ServerKind::parse(args.get("kind").unwrap_or("echo")).unwrap_or_else(|| {
        eprintln!("wsbench server: --kind is echo, batching, fastwebsockets or tokio-websockets");
        std::process::exit(2)
    });
    let core = args.num::<usize>("core").ok().flatten();
    if core.is_some() && !pin_to(core) {
        eprintln!("wsbench server: could not pin to core {core:?}; running unpinned");
    }
    raise_nofile_limit();
    let ws_addr: SocketAddr = args.get("ws").unwrap_or("127.0.0.1:0").parse().unwrap();
    let tcp_addr: SocketAddr = args.get("tcp").unwrap_or("127.0.0.1:0").parse().unwrap();
    let wss_addr: SocketAddr = args.get("wss").unwrap_or("127.0.0.1:0").parse().unwrap();
    let tls_addr: SocketAddr = args.get("tls").unwrap_or("127.0.0.1:0").parse().unwrap();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let (acceptor, ca_path) = tls_setup();

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
        let wss = listen(wss_addr);
        let tls = listen(tls_addr);
        println!(
            "ws={} tcp={} wss={} tls={} ca={}",
            ws.local_addr().unwrap(),
            tcp.local_addr().unwrap(),
            wss.local_addr().unwrap(),
            tls.local_addr().unwrap(),
            ca_path.display()
        );
        let _ = std::io::stdout().flush();
        tokio::spawn(accept_loop(ws, move |s| ws_echo(kind, s)));
        let a = acceptor.clone();
        tokio::spawn(accept_loop(wss, move |s| {
            let a = a.clone();
            async move { ws_echo(kind, a.accept(s).await?).await }
        }));
        tokio::spawn(accept_loop(tls, move |s| {
            let a = acceptor.clone();
            async move { raw_echo(a.accept(s).await?).await }
        }));
        accept_loop(tcp, raw_echo).await;
    });
}

/// The WebSocket echo of `kind` on a plain or TLS stream.
async fn ws_echo<S>(kind: ServerKind, s: S) -> Result<(), BoxError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match kind {
        ServerKind::Echo => own_echo(s, false).await,
        ServerKind::Batching => own_echo(s, true).await,
        ServerKind::FastWebSockets => fws_echo(s).await,
        ServerKind::TokioWebSockets => tws_echo(s).await,
    }
}

/// A throw-away CA, a certificate for 127.0.0.1 and localhost signed by
/// it, the acceptor that presents it, and the CA's PEM in a file for the
/// clients (removed by the orchestrator).
fn tls_setup() -> (TlsAcceptor, PathBuf) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "wsbench throw-away CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let issuer = rcgen::CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("CA key"))
        .expect("CA certificate");
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("leaf params");
    leaf.distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().expect("leaf key");
    let cert = leaf.signed_by(&key, &issuer).expect("leaf certificate");
    let chain = vec![
        cert.der().clone(),
        CertificateDer::from(issuer.der().to_vec()),
    ];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server TLS config");
    // Full handshakes only: nothing to resume from.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    let path = std::env::temp_dir().join(format!("wsbench-ca-{}.pem", std::process::id()));
    std::fs::write(&path, issuer.pem()).expect("write the CA file");
    (TlsAcceptor::from(Arc::new(config)), path)
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
    Fut: std::future::Future<Output = Result<(), BoxError>> + Send + 'static,
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
async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> Result<BytesMut, BoxError> {
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
                s.flush().await?;
                let _ = buf.split_to(n);
                return Ok(buf);
            }
        }
    }
}

async fn fws_echo<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> Result<(), BoxError> {
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
                // A no-op on TCP; TLS buffers the record until flushed.
                ws.flush().await?;
            }
            // Answered by auto_close; then the stream is shut down (TLS:
            // close_notify).
            OpCode::Close => {
                let _ = ws.into_inner().shutdown().await;
                return Ok(());
            }
            _ => {}
        }
    }
}

async fn tws_echo<S: AsyncRead + AsyncWrite + Unpin>(s: S) -> Result<(), BoxError> {
    let (_req, mut ws) = tokio_websockets::ServerBuilder::new().accept(s).await?;
    while let Some(msg) = ws.next().await {
        let msg = msg?;
        if msg.is_text() || msg.is_binary() {
            ws.send(msg).await?;
        }
    }
    // The close was answered; shut the stream down (TLS: close_notify).
    let _ = ws.close().await;
    Ok(())
}

/// Raw TCP echo: bytes come back as they arrive, so the length-prefixed
/// frames of the client come back intact.
async fn raw_echo<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> Result<(), BoxError> {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            let _ = s.shutdown().await;
            return Ok(());
        }
        s.write_all(&buf[..n]).await?;
        s.flush().await?;
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

/// What the batching echo may queue before it writes even though more
/// could be read (the clients' windows keep it far below).
const BATCH_MAX: usize = 16 << 20;

/// The minimal streaming echo (see the module docs); with `batch`, the
/// batching echo: echoes are written only once a read would block.
async fn own_echo<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    batch: bool,
) -> Result<(), BoxError> {
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
        if inb.capacity() - inb.len() < 16 << 10 {
            inb.reserve(64 << 10);
        }
        if batch && !closing && out.len() < BATCH_MAX {
            // Read on while there is something to read; write only when a
            // read would block. A future polled once and dropped: the read
            // happens or nothing does.
            match s.read_buf(&mut inb).now_or_never() {
                Some(Ok(0)) => {
                    if !out.is_empty() {
                        s.write_all(&out).await?;
                        s.flush().await?;
                    }
                    return Ok(());
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
                None => {}
            }
        }
        if !out.is_empty() {
            s.write_all(&out).await?;
            // A no-op on TCP; TLS may hold the end of the last record.
            s.flush().await?;
            out.clear();
        }
        if closing {
            let _ = s.shutdown().await;
            return Ok(());
        }
        if s.read_buf(&mut inb).await? == 0 {
            return Ok(());
        }
    }
}
