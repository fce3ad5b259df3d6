//! The test server of `unisocket serve` and of the zero-setup demo: echo, or
//! broadcast to every connected client, over TCP or TLS (`--cert --key`).
//! Built on the library's frame codec. On Ctrl-C or SIGTERM it closes every
//! connection with 1001 (going away) and waits briefly for the answers.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use unisocket_proto::frame::{apply_mask, FrameHeader, OpCode, MAX_HEADER_LEN};
use unisocket_proto::handshake::accept_key;

use crate::exit;
use crate::signals;

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
    /// Serve wss://: the server's certificate (PEM, followed by its chain);
    /// needs --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
}

/// One log line on stdout, flushed at once (the output is often a pipe read
/// by a script). A closed stdout is not an error worth stopping for.
fn print_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The TLS server configuration of `--cert` and `--key`; `Err` says which
/// file is wrong and why.
fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    use rustls::pki_types::pem::{self, PemObject};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let read = |flag: &str, file: &Path, e: pem::Error| match e {
        pem::Error::Io(e) => format!("cannot read the {flag} file {}: {e}", file.display()),
        pem::Error::NoItemsFound if flag == "--key" => format!(
            "the --key file {} has no private key (BEGIN PRIVATE KEY, RSA PRIVATE KEY or \
             EC PRIVATE KEY)",
            file.display()
        ),
        e => format!("the {flag} file {} is not valid PEM: {e}", file.display()),
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| read("--cert", cert, e))?;
    if chain.is_empty() {
        return Err(format!(
            "the --cert file {} has no certificate (BEGIN CERTIFICATE)",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| read("--key", key, e))?;
    // The provider the process installed, else the library's default one.
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("--cert and --key cannot be used together: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Runs `unisocket serve` until Ctrl-C or SIGTERM; returns the exit code.
pub fn run(args: &ServeArgs) -> i32 {
    let tls = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => match tls_acceptor(cert, key) {
            Ok(acceptor) => Some(acceptor),
            Err(e) => {
                eprintln!("unisocket: {e}");
                return exit::USAGE;
            }
        },
        _ => None,
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("unisocket: cannot start a runtime: {e}");
            return exit::FAILURE;
        }
    };
    rt.block_on(async {
        // Registered before the server listens, so that no signal is missed
        // once a client can connect.
        let signals = match signals::forward(true) {
            Ok(rx) => rx,
            Err(e) => {
                eprintln!("unisocket: cannot listen for Ctrl-C and SIGTERM: {e}");
                return exit::FAILURE;
            }
        };
        let (host, port) = (args.host.as_str(), args.port);
        let listener = match TcpListener::bind((host, port)).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("unisocket: cannot listen on {host}:{port}: {e}");
                return exit::FAILURE;
            }
        };
        let scheme = if tls.is_some() { "wss" } else { "ws" };
        match listener.local_addr() {
            Ok(addr) => print_line(&format!(
                "listening on {scheme}://{addr} ({} mode)",
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
        match serve_until(listener, args.mode, tls, log, signals).await {
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

/// How long a client has to answer our close frame (1001) at shutdown.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Serves `listener` until the process ends. `log` receives one line per
/// connection event and message.
pub async fn serve(listener: TcpListener, mode: Mode, log: Log) -> std::io::Result<()> {
    let (_keep, never) = mpsc::unbounded_channel();
    serve_until(listener, mode, None, log, never).await
}

/// Serves `listener` (with TLS when `tls` is given) until the first item of
/// `shutdown`; then closes every connection with 1001 (going away), waits
/// up to [`CLOSE_WAIT`] for the clients' close frames, and returns. A
/// second item ends the wait at once.
pub async fn serve_until(
    listener: TcpListener,
    mode: Mode,
    tls: Option<TlsAcceptor>,
    log: Log,
    mut shutdown: mpsc::UnboundedReceiver<&'static str>,
) -> std::io::Result<()> {
    let (tx, _) = broadcast::channel::<(u8, bytes::Bytes)>(1024);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let why = loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = accepted?;
                let _ = stream.set_nodelay(true);
                let (tx, log, tls) = (tx.clone(), log.clone(), tls.clone());
                let stop = stop_rx.clone();
                conns.spawn(async move {
                    let result = handle(stream, peer, mode, tls, tx, stop, &*log).await;
                    match result {
                        Ok(()) => log(format!("{peer} disconnected")),
                        Err(e) => log(format!("{peer} disconnected: {e}")),
                    }
                });
            }
            // Forget the connections that ended.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            why = shutdown.recv() => match why {
                Some(why) => break why,
                // Nobody can ask any more: serve on.
                None => std::future::pending().await,
            },
        }
    };
    drop(listener);
    log(format!(
        "{why}: shutting down, closing {} connection(s) with 1001 (going away)",
        conns.len()
    ));
    let _ = stop_tx.send(true);
    // Each connection waits CLOSE_WAIT for its client; a little more here
    // for the last writes.
    let all_done = async { while conns.join_next().await.is_some() {} };
    tokio::select! {
        () = all_done => {}
        _ = tokio::time::sleep(CLOSE_WAIT + Duration::from_millis(500)) => {}
        Some(why) = shutdown.recv() => log(format!("{why} again: not waiting any longer")),
    }
    conns.abort_all();
    Ok(())
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

/// Returns once the server shuts down.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stopped| *stopped).await.is_err() {
        // The server is gone without a shutdown: nothing to wait for.
        std::future::pending::<()>().await;
    }
}

fn invalid(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_owned())
}

/// Answers the HTTP upgrade; returns the request path and the subprotocol
/// chosen (the client's first).
async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
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

/// One connection: the TLS handshake with `tls`, then [`session`]. A
/// connection still in its handshakes at shutdown is dropped.
async fn handle(
    tcp: TcpStream,
    peer: SocketAddr,
    mode: Mode,
    tls: Option<TlsAcceptor>,
    tx: broadcast::Sender<(u8, bytes::Bytes)>,
    mut stop: watch::Receiver<bool>,
    log: &(dyn Fn(String) + Send + Sync),
) -> std::io::Result<()> {
    // Subscribe first: once the client sees the handshake response it may
    // count on receiving broadcasts.
    let rx = tx.subscribe();
    let Some(tls) = tls else {
        return session(tcp, peer, mode, tx, rx, stop, log).await;
    };
    let stream = tokio::select! {
        s = tls.accept(tcp) => s.map_err(|e| {
            std::io::Error::new(e.kind(), format!("TLS handshake failed: {e}"))
        })?,
        () = stopped(&mut stop) => return Ok(()),
    };
    session(stream, peer, mode, tx, rx, stop, log).await
}

async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    peer: SocketAddr,
    mode: Mode,
    tx: broadcast::Sender<(u8, bytes::Bytes)>,
    mut rx: broadcast::Receiver<(u8, bytes::Bytes)>,
    mut stop: watch::Receiver<bool>,
    log: &(dyn Fn(String) + Send + Sync),
) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let (path, protocol) = tokio::select! {
        r = handshake(&mut stream, &mut buf) => r?,
        () = stopped(&mut stop) => return Ok(()),
    };
    match protocol {
        Some(p) => log(format!("{peer} connected to {path} (subprotocol {p})")),
        None => log(format!("{peer} connected to {path}")),
    }
    let mut message: Option<(OpCode, BytesMut)> = None;
    // Set once we sent our close frame (at shutdown): until the client's
    // answer or this deadline, frames are still read and logged, and
    // nothing more is sent.
    let mut closing: Option<tokio::time::Instant> = None;
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
                OpCode::Ping if closing.is_some() => {}
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
                    if closing.is_none() {
                        let echo = if payload.len() >= 2 {
                            &payload[..]
                        } else {
                            &[][..]
                        };
                        stream.write_all(&encode(OpCode::Close, echo)).await?;
                    }
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
                        _ if closing.is_some() => log(format!("{peer} {what} (closing: not sent)")),
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
            msg = rx.recv(), if mode == Mode::Broadcast && closing.is_none() => {
                if let Ok((op, data)) = msg {
                    let op = if op == OpCode::Text.as_u8() { OpCode::Text } else { OpCode::Binary };
                    stream.write_all(&encode(op, &data)).await?;
                }
            }
            () = stopped(&mut stop), if closing.is_none() => {
                let mut close = 1001u16.to_be_bytes().to_vec();
                close.extend_from_slice(b"server shutting down");
                stream.write_all(&encode(OpCode::Close, &close)).await?;
                log(format!("closing {peer} with 1001 (going away)"));
                closing = Some(tokio::time::Instant::now() + CLOSE_WAIT);
            }
            () = tokio::time::sleep_until(closing.unwrap_or_else(tokio::time::Instant::now)),
                if closing.is_some() =>
            {
                return Err(invalid(&format!(
                    "no close frame within {} s of ours",
                    CLOSE_WAIT.as_secs()
                )));
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
