//! Opens many `SocketTask`s at once against a local echo server: each task
//! sends one message, awaits its echo, then closes. Prints how long opening
//! all of them took, the round trips, the closes, the peak memory and the
//! failures (which must be 0).
//!
//! ```text
//! cargo run --release --example many_tasks -- 10000
//! cargo run --release --example many_tasks -- 10000 --url ws://127.0.0.1:9001
//! ```
//!
//! Without `--url` the example starts its own echo server (a minimal one,
//! written below on the library's frame codec) in a child process, so that
//! the two ends of N connections do not share one process's file-descriptor
//! limit and the memory figures are the client's alone. The client needs a
//! little more than N file descriptors (`ulimit -n`).
//!
//! The server (`many_tasks --serve`, also used by the `soak` example) echoes
//! every data frame, except three unfragmented text commands that misbehave
//! on purpose:
//!
//! - `!drop`: resets the TCP connection (`SO_LINGER` 0), without a close frame;
//! - `!eof`: shuts the TCP connection down (FIN), without a close frame;
//! - `!close`: sends a close frame 1011, drops the data frames that follow,
//!   and ends the TCP connection after the client's close frame.

#[path = "support/procfs.rs"]
mod procfs;
use procfs::{open_files_limit, status_kib};

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use unisocket::{connect_socket, CloseOptions, ConnectOptions, Data, SocketTask};
use unisocket_proto::frame::{apply_mask, FrameHeader, OpCode, MAX_HEADER_LEN};
use unisocket_proto::handshake::accept_key;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--serve") {
        serve_main();
        return;
    }
    let mut n = 10_000usize;
    let mut url = None;
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--url" => url = it.next(),
            "-h" | "--help" => {
                println!("usage: many_tasks [N] [--url ws://HOST:PORT/]");
                return;
            }
            other => match other.parse() {
                Ok(v) => n = v,
                Err(_) => {
                    eprintln!("many_tasks: not a number of tasks: {other:?}");
                    std::process::exit(2);
                }
            },
        }
    }
    let mut child = None;
    let url = match url {
        Some(u) => u,
        None => {
            let (c, port) = spawn_server();
            child = Some(c);
            format!("ws://127.0.0.1:{port}/")
        }
    };
    if let Some(limit) = open_files_limit() {
        if (n as u64) + 64 > limit {
            eprintln!(
                "warning: {n} tasks need about {} file descriptors; the limit is {limit} (ulimit -n)",
                n + 64
            );
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let failures = rt.block_on(run(n, url));
    drop(rt);
    if let Some(mut c) = child {
        let _ = c.kill();
        let _ = c.wait();
    }
    if failures > 0 {
        std::process::exit(1);
    }
}

/// One figure per task, summarized.
fn summary(mut v: Vec<Duration>) -> String {
    if v.is_empty() {
        return "-".to_owned();
    }
    v.sort();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(at(0.5)),
        ms(at(0.99)),
        ms(at(1.0))
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn run(n: usize, url: String) -> usize {
    println!("{n} tasks against {url}");
    let rss_before = status_kib("VmRSS:").unwrap_or(0);

    // 1. Open every task at once.
    let start = Instant::now();
    let opening: Vec<_> = (0..n)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let t0 = Instant::now();
                let task =
                    connect_socket(ConnectOptions::new(url).timeout(Duration::from_secs(60))).await;
                task.map(|t| (t, t0.elapsed()))
            })
        })
        .collect();
    let mut tasks: Vec<SocketTask> = Vec::with_capacity(n);
    let mut open_times = Vec::with_capacity(n);
    let mut failures = 0usize;
    let mut first_error = None;
    for h in opening {
        match h.await {
            Ok(Ok((task, t))) => {
                tasks.push(task);
                open_times.push(t);
            }
            Ok(Err(e)) => {
                failures += 1;
                first_error.get_or_insert_with(|| format!("open: {e}"));
            }
            Err(e) => {
                failures += 1;
                first_error.get_or_insert_with(|| format!("open: {e}"));
            }
        }
    }
    let open_all = start.elapsed();
    let rss_open = status_kib("VmRSS:").unwrap_or(0);
    println!(
        "open:       {} of {n} in {:.1} ms ({:.0} opens/s); per task {}",
        tasks.len(),
        ms(open_all),
        tasks.len() as f64 / open_all.as_secs_f64(),
        summary(open_times)
    );
    if !tasks.is_empty() {
        println!(
            "memory:     {:.1} MiB RSS with {} tasks open ({:.1} KiB per task over the {:.1} MiB before)",
            rss_open as f64 / 1024.0,
            tasks.len(),
            rss_open.saturating_sub(rss_before) as f64 / tasks.len() as f64,
            rss_before as f64 / 1024.0
        );
    }

    // 2. One round trip per task, all at once.
    let start = Instant::now();
    let trips: Vec<_> = tasks
        .iter()
        .enumerate()
        .map(|(i, task)| {
            let task = task.clone();
            tokio::spawn(async move {
                let msg = format!("message {i}");
                let t0 = Instant::now();
                task.send(msg.as_str())
                    .await
                    .map_err(|e| format!("send: {e}"))?;
                match task.recv().await {
                    Some(Data::Text(t)) if t == msg => Ok(t0.elapsed()),
                    other => Err(format!("echo of task {i}: {other:?}")),
                }
            })
        })
        .collect();
    let mut rtts = Vec::with_capacity(n);
    for h in trips {
        match h.await {
            Ok(Ok(t)) => rtts.push(t),
            Ok(Err(e)) => {
                failures += 1;
                first_error.get_or_insert(e);
            }
            Err(e) => {
                failures += 1;
                first_error.get_or_insert_with(|| format!("round trip: {e}"));
            }
        }
    }
    let trip_all = start.elapsed();
    println!(
        "round trip: {} of {} in {:.1} ms ({:.0} messages/s); per task {}",
        rtts.len(),
        tasks.len(),
        ms(trip_all),
        rtts.len() as f64 / trip_all.as_secs_f64(),
        summary(rtts)
    );

    // 3. Close every task at once.
    let start = Instant::now();
    let closing: Vec<_> = tasks
        .drain(..)
        .map(|task| tokio::spawn(async move { task.close(CloseOptions::default()).await }))
        .collect();
    let mut closed = 0;
    for h in closing {
        match h.await {
            Ok(Ok(_)) => closed += 1,
            Ok(Err(e)) => {
                failures += 1;
                first_error.get_or_insert_with(|| format!("close: {e}"));
            }
            Err(e) => {
                failures += 1;
                first_error.get_or_insert_with(|| format!("close: {e}"));
            }
        }
    }
    println!("close:      {closed} in {:.1} ms", ms(start.elapsed()));
    println!(
        "peak RSS:   {:.1} MiB (VmHWM)",
        status_kib("VmHWM:").unwrap_or(0) as f64 / 1024.0
    );
    println!("failures:   {failures}");
    if let Some(e) = first_error {
        println!("first failure: {e}");
    }
    failures
}

/// Starts this program again as the echo server and reads its port.
fn spawn_server() -> (Child, u16) {
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .arg("--serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the echo server process");
    let stdout = child.stdout.take().expect("child stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the server's port");
    let port = line
        .trim()
        .strip_prefix("PORT ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected line from the server: {line:?}"));
    (child, port)
}

// The echo server (child process).

/// Serves on 127.0.0.1 (a free port), prints `PORT <n>`, and exits when its
/// standard input closes (the parent ended).
fn serve_main() {
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        std::process::exit(0);
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("server runtime");
    rt.block_on(async {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let port = socket.local_addr().expect("local_addr").port();
        let listener = socket.listen(65_535).expect("listen");
        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "PORT {port}");
            let _ = out.flush();
        }
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(async move {
                        let _ = echo(stream).await;
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    });
}

fn invalid(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_owned())
}

/// A text message that makes the server misbehave on purpose.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Misbehave {
    /// Reset the TCP connection.
    Drop,
    /// Shut the TCP connection down without a close frame.
    Eof,
    /// Close with code 1011.
    Close,
}

impl Misbehave {
    fn parse(payload: &[u8]) -> Option<Self> {
        match payload {
            b"!drop" => Some(Misbehave::Drop),
            b"!eof" => Some(Misbehave::Eof),
            b"!close" => Some(Misbehave::Close),
            _ => None,
        }
    }
}

/// The close frame of `!close`: code 1011 and a reason.
fn server_close_frame(out: &mut Vec<u8>) {
    let reason = b"server close on request";
    let header = FrameHeader {
        fin: true,
        rsv1: false,
        opcode: OpCode::Close,
        mask: None,
        payload_len: (2 + reason.len()) as u64,
    };
    let mut head = [0u8; MAX_HEADER_LEN];
    let hn = header.encode(&mut head);
    out.extend_from_slice(&head[..hn]);
    out.extend_from_slice(&1011u16.to_be_bytes());
    out.extend_from_slice(reason);
}

/// One connection: the handshake, then every frame is echoed unmasked
/// (fragments one by one), pings are answered, a close is returned; the
/// [`Misbehave`] commands are obeyed instead of echoed.
async fn echo(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = BytesMut::with_capacity(4096);
    let key = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.advance(end + 4);
            let key = head.lines().find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.trim()
                    .eq_ignore_ascii_case("sec-websocket-key")
                    .then(|| value.trim().to_owned())
            });
            break key.ok_or_else(|| invalid("no Sec-WebSocket-Key"))?;
        }
        if buf.len() > 16 * 1024 || stream.read_buf(&mut buf).await? == 0 {
            return Err(invalid("incomplete handshake"));
        }
    };
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(&key)
    );
    stream.write_all(response.as_bytes()).await?;
    let mut out = Vec::new();
    // After `!close`: our close frame is sent, data frames are dropped.
    let mut closing = false;
    loop {
        while let Some((h, n)) =
            FrameHeader::decode(&buf, false).map_err(|e| invalid(&e.to_string()))?
        {
            let len = usize::try_from(h.payload_len).map_err(|_| invalid("frame too large"))?;
            if buf.len() < n + len {
                buf.reserve(n + len - buf.len());
                break;
            }
            buf.advance(n);
            let mut payload = buf.split_to(len);
            let key = h.mask.ok_or_else(|| invalid("unmasked client frame"))?;
            apply_mask(&mut payload, key, 0);
            if closing {
                if h.opcode == OpCode::Close {
                    stream.write_all(&out).await?;
                    stream.shutdown().await?;
                    return Ok(());
                }
                continue;
            }
            let command = (h.fin && h.opcode == OpCode::Text)
                .then(|| Misbehave::parse(&payload))
                .flatten();
            match command {
                Some(Misbehave::Drop) => {
                    stream.write_all(&out).await?;
                    // Dropping a socket with a zero linger sends a reset.
                    stream.set_zero_linger()?;
                    return Ok(());
                }
                Some(Misbehave::Eof) => {
                    stream.write_all(&out).await?;
                    stream.shutdown().await?;
                    return Ok(());
                }
                Some(Misbehave::Close) => {
                    server_close_frame(&mut out);
                    closing = true;
                    continue;
                }
                None => {}
            }
            let (fin, opcode) = match h.opcode {
                OpCode::Ping => (true, OpCode::Pong),
                OpCode::Pong => continue,
                op => (h.fin, op),
            };
            let header = FrameHeader {
                fin,
                rsv1: false,
                opcode,
                mask: None,
                payload_len: payload.len() as u64,
            };
            let mut head = [0u8; MAX_HEADER_LEN];
            let hn = header.encode(&mut head);
            out.extend_from_slice(&head[..hn]);
            out.extend_from_slice(&payload);
            if opcode == OpCode::Close {
                stream.write_all(&out).await?;
                stream.shutdown().await?;
                return Ok(());
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}
