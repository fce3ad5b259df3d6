//! Compares the rustls crypto providers as unisocket's TLS default: the
//! `wss://` handshake time and the echo throughput of each, against a local
//! TLS echo server. The figures in benches/README.md ("TLS crypto
//! providers") and in the README's TLS section come from it.
//!
//! ```text
//! cargo run --release --example tls_measure --features ring -- [--runs 5] [--handshakes 200]
//! ```
//!
//! (Without `--features ring`, only the aws-lc-rs figures.)
//!
//! The server (`tls_measure --serve`) runs in a child process of its own,
//! on rustls with aws-lc-rs whatever the client's provider (so that it can
//! agree to the post-quantum key exchange when the client offers it). It
//! issues no session tickets and keeps no sessions: every handshake is a
//! full one. It echoes every data frame; the text message `!kx` is answered
//! with the cipher suite and key exchange of the connection.
//!
//! Each client run (`tls_measure --client PROVIDER ...`) is a child process
//! too, which installs its provider as the process default before the first
//! connection: unisocket then builds its configurations with it, as it does
//! with the provider of its default feature. The providers:
//!
//! - `aws-lc-rs`: rustls's aws-lc-rs provider as it is (X25519MLKEM768 first);
//! - `ring`: rustls's *ring* provider as it is (no post-quantum key
//!   exchange; rustls 0.23.48 puts P-384 first);
//! - `aws-lc-rs-x25519`, `ring-x25519`: each with X25519 alone, the same
//!   classical key exchange on both, to tell the cost of the key exchange
//!   from the cost of the library.
//!
//! Runs alternate between providers (in a rotating order); the summary is
//! the median of the runs' figures, with their range.
//!
//! Each run measures, on one connection at a time:
//!
//! - handshakes: N sequential `connect_socket`s, each closed before the
//!   next; the TLS handshake time of `OpenEvent::profile.tls` (client hello
//!   to finished, both ends' crypto included) and the whole open
//!   (`profile.total`: TCP, TLS and the HTTP upgrade), median and p90;
//! - throughput: binary messages of 64 KiB and of 1 KiB echoed, with a
//!   window of messages in flight, in messages per second;
//! - the client process's CPU time per handshake and per message (the
//!   server's is the same for every client provider), which depends less on
//!   what else the machine runs than times do.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use rustls::crypto::{aws_lc_rs, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use unisocket::{connect_socket, CloseOptions, ConnectOptions, Data};
use unisocket_proto::frame::{apply_mask, FrameHeader, OpCode, MAX_HEADER_LEN};
use unisocket_proto::handshake::accept_key;

/// The providers compared; *ring*'s with the `ring` feature.
fn providers() -> Vec<&'static str> {
    let mut all = vec!["aws-lc-rs", "aws-lc-rs-x25519"];
    if cfg!(feature = "ring") {
        all.extend(["ring", "ring-x25519"]);
    }
    all
}

/// Throughput workloads: message size, messages, messages in flight.
const WORKLOADS: [(usize, usize, usize); 2] = [(64 * 1024, 3_000, 16), (1024, 100_000, 256)];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--serve") => serve_main(&args[1..]),
        Some("--client") => client_main(&args[1..]),
        _ => parent_main(&args),
    }
}

fn usage() -> ! {
    eprintln!("usage: tls_measure [--runs N] [--handshakes N]");
    std::process::exit(2);
}

fn parent_main(args: &[String]) {
    let mut runs = 5usize;
    let mut handshakes = 200usize;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let value = |it: &mut std::slice::Iter<String>| {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage())
        };
        match arg.as_str() {
            "--runs" => runs = value(&mut it),
            "--handshakes" => handshakes = value(&mut it),
            _ => usage(),
        }
    }

    // A throw-away CA and server certificate (ECDSA P-256, as rcgen makes
    // by default; also what most public servers present).
    let dir = std::env::temp_dir().join(format!("unisocket-tls-measure-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let (ca_pem, cert_pem, key_pem) = certificates();
    let paths = ["ca.pem", "server.pem", "server.key"].map(|name| dir.join(name));
    for (path, text) in paths.iter().zip([&ca_pem, &cert_pem, &key_pem]) {
        std::fs::write(path, text).expect("write a certificate");
    }

    let providers = providers();
    let exe = std::env::current_exe().expect("current_exe");
    let mut server = Command::new(&exe)
        .arg("--serve")
        .args([&paths[1], &paths[2]])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the server");
    let port = read_port(&mut server);

    println!(
        "{runs} runs x {} providers; {handshakes} full handshakes per run; \
         throughput {}",
        providers.len(),
        WORKLOADS
            .iter()
            .map(|(size, n, window)| format!("{n} x {} KiB (window {window})", size / 1024))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut results: Vec<(&str, Figures)> = Vec::new();
    for run in 0..runs {
        for i in 0..providers.len() {
            let provider = providers[(run + i) % providers.len()];
            let out = Command::new(&exe)
                .args(["--client", provider, &port.to_string()])
                .arg(&paths[0])
                .arg(handshakes.to_string())
                .output()
                .expect("run a client");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let Some(figures) = stdout.lines().find_map(Figures::parse) else {
                eprintln!(
                    "client {provider} failed: {}\n{stdout}\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
                std::process::exit(1);
            };
            println!("run {} {provider:<20} {}", run + 1, figures.row());
            results.push((provider, figures));
        }
    }
    drop(server.stdin.take());
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);

    println!();
    println!("median of {runs} runs [min-max]:");
    println!(
        "{:<20} {:>18} {:>18} {:>18} {:>20} {:>22} {:>18} {:>18} {:>18}",
        "provider",
        "TLS ms median",
        "TLS ms p90",
        "open ms median",
        "64 KiB msg/s",
        "1 KiB msg/s",
        "CPU ms/handshake",
        "CPU us/64 KiB",
        "CPU us/1 KiB"
    );
    for &provider in &providers {
        let mine: Vec<&Figures> = results
            .iter()
            .filter(|(p, _)| *p == provider)
            .map(|(_, f)| f)
            .collect();
        let col = |f: fn(&Figures) -> f64, digits: usize| {
            let mut v: Vec<f64> = mine.iter().map(|x| f(x)).collect();
            v.sort_by(f64::total_cmp);
            format!(
                "{:.d$} [{:.d$}-{:.d$}]",
                median(&v),
                v[0],
                v[v.len() - 1],
                d = digits
            )
        };
        println!(
            "{:<20} {:>18} {:>18} {:>18} {:>20} {:>22} {:>18} {:>18} {:>18}",
            provider,
            col(|f| f.tls_median_ms, 2),
            col(|f| f.tls_p90_ms, 2),
            col(|f| f.open_median_ms, 2),
            col(|f| f.msgs_64k, 0),
            col(|f| f.msgs_1k, 0),
            col(|f| f.cpu_handshake_ms, 2),
            col(|f| f.cpu_64k_us, 1),
            col(|f| f.cpu_1k_us, 2),
        );
        println!("{:<20} agreed: {}", "", mine[0].negotiated);
    }
}

/// The figures of one client run.
struct Figures {
    tls_median_ms: f64,
    tls_p90_ms: f64,
    open_median_ms: f64,
    msgs_64k: f64,
    msgs_1k: f64,
    /// The client process's CPU time (user and system) per handshake (the
    /// whole connect and close), and per message echoed.
    cpu_handshake_ms: f64,
    cpu_64k_us: f64,
    cpu_1k_us: f64,
    negotiated: String,
}

impl Figures {
    fn line(&self) -> String {
        format!(
            "RESULT {} {} {} {} {} {} {} {} {}",
            self.tls_median_ms,
            self.tls_p90_ms,
            self.open_median_ms,
            self.msgs_64k,
            self.msgs_1k,
            self.cpu_handshake_ms,
            self.cpu_64k_us,
            self.cpu_1k_us,
            self.negotiated
        )
    }

    fn parse(line: &str) -> Option<Figures> {
        let mut it = line.strip_prefix("RESULT ")?.split(' ');
        let mut num = || it.next()?.parse::<f64>().ok();
        let (a, b, c, d, e) = (num()?, num()?, num()?, num()?, num()?);
        let (f, g, h) = (num()?, num()?, num()?);
        Some(Figures {
            tls_median_ms: a,
            tls_p90_ms: b,
            open_median_ms: c,
            msgs_64k: d,
            msgs_1k: e,
            cpu_handshake_ms: f,
            cpu_64k_us: g,
            cpu_1k_us: h,
            negotiated: it.next()?.to_owned(),
        })
    }

    fn row(&self) -> String {
        format!(
            "TLS {:5.2} ms (p90 {:5.2}), open {:5.2} ms, 64 KiB {:5.0} msg/s, 1 KiB {:6.0} msg/s; \
             CPU {:4.2} ms/handshake, {:5.1} us/64 KiB, {:4.2} us/1 KiB; {}",
            self.tls_median_ms,
            self.tls_p90_ms,
            self.open_median_ms,
            self.msgs_64k,
            self.msgs_1k,
            self.cpu_handshake_ms,
            self.cpu_64k_us,
            self.cpu_1k_us,
            self.negotiated
        )
    }
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// The value at `p` (0..=1) of sorted `v`, nearest rank.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The CPU time (user and system) of this process so far, in seconds
/// (Linux: `/proc/self/stat`, in ticks of 1/100 s; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // The fields after the command name, which is in parentheses.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line.
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => (user + system) / 100.0,
        _ => 0.0,
    }
}

/// CA certificate, server certificate for `localhost` and its key, PEM.
fn certificates() -> (String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "tls_measure CA");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
        .expect("CA certificate");
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("server params");
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().expect("server key");
    let cert = params.signed_by(&key, &ca).expect("server certificate");
    (ca.pem(), cert.pem(), key.serialize_pem())
}

fn read_port(child: &mut Child) -> u16 {
    let stdout = child.stdout.take().expect("server stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the server's port");
    line.trim()
        .strip_prefix("PORT ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected server output {line:?}"))
}

// ---- The client ----

fn client_main(args: &[String]) {
    let [provider, port, ca, handshakes] = args else {
        usage()
    };
    let port: u16 = port.parse().unwrap_or_else(|_| usage());
    let handshakes: usize = handshakes.parse().unwrap_or_else(|_| usage());
    let chosen = match provider.as_str() {
        "aws-lc-rs" => aws_lc_rs::default_provider(),
        "aws-lc-rs-x25519" => CryptoProvider {
            kx_groups: vec![aws_lc_rs::kx_group::X25519],
            ..aws_lc_rs::default_provider()
        },
        #[cfg(feature = "ring")]
        #[allow(deprecated)] // the point is to measure it
        "ring" => rustls::crypto::ring::default_provider(),
        #[cfg(feature = "ring")]
        #[allow(deprecated)]
        "ring-x25519" => CryptoProvider {
            kx_groups: vec![rustls::crypto::ring::kx_group::X25519],
            ..rustls::crypto::ring::default_provider()
        },
        _ => usage(),
    };
    chosen
        .install_default()
        .expect("the process has no provider yet");
    let ca = std::fs::read(ca).expect("read the CA");
    let url = format!("wss://localhost:{port}/");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let figures = rt.block_on(async {
        let options = || {
            ConnectOptions::new(url.as_str())
                .ca_certificates_pem(ca.clone())
                .webpki_roots(false)
                .no_proxy()
        };
        // One connection first: the configuration is built then (and
        // cached), outside the timings; it also reports what was agreed.
        let task = connect_socket(options()).await.expect("open");
        task.send("!kx").await.expect("send");
        let negotiated = match task.recv().await {
            Some(Data::Text(t)) => t.as_str().to_owned(),
            other => panic!("unexpected answer to !kx: {other:?}"),
        };
        task.close(CloseOptions::default()).await.expect("close");

        let mut tls = Vec::with_capacity(handshakes);
        let mut open = Vec::with_capacity(handshakes);
        let cpu = cpu_seconds();
        for _ in 0..handshakes {
            let task = connect_socket(options()).await.expect("open");
            // A listener registered after the open hears it (on the
            // dispatcher's thread).
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            task.on_open(move |ev| {
                let _ = tx.send(ev.profile);
            });
            let profile = rx.recv().await.expect("on_open after open");
            tls.push(profile.tls.as_secs_f64() * 1e3);
            open.push(profile.total.as_secs_f64() * 1e3);
            task.close(CloseOptions::default()).await.expect("close");
        }
        let cpu_per_handshake = (cpu_seconds() - cpu) / handshakes as f64;
        tls.sort_by(f64::total_cmp);
        open.sort_by(f64::total_cmp);

        let mut rates = Vec::new();
        let mut cpu_per_message = Vec::new();
        for (size, count, window) in WORKLOADS {
            let task = connect_socket(options().max_buffered_bytes(64 << 20))
                .await
                .expect("open");
            let payload = Bytes::from((0..size).map(|i| (i * 7 % 251) as u8).collect::<Vec<_>>());
            let gate = Arc::new(tokio::sync::Semaphore::new(window));
            let cpu = cpu_seconds();
            let start = Instant::now();
            let sender = {
                let (task, gate, payload) = (task.clone(), gate.clone(), payload.clone());
                tokio::spawn(async move {
                    for _ in 0..count {
                        gate.acquire().await.expect("gate").forget();
                        drop(task.send(payload.clone()));
                    }
                })
            };
            for _ in 0..count {
                let echo = tokio::time::timeout(Duration::from_secs(30), task.recv())
                    .await
                    .expect("an echo within 30 s")
                    .expect("an echo");
                assert_eq!(echo.as_bytes().len(), size);
                gate.add_permits(1);
            }
            let elapsed = start.elapsed();
            cpu_per_message.push((cpu_seconds() - cpu) / count as f64);
            sender.await.expect("sender");
            rates.push(count as f64 / elapsed.as_secs_f64());
            task.close(CloseOptions::default()).await.expect("close");
        }
        Figures {
            tls_median_ms: median(&tls),
            tls_p90_ms: percentile(&tls, 0.9),
            open_median_ms: median(&open),
            msgs_64k: rates[0],
            msgs_1k: rates[1],
            cpu_handshake_ms: cpu_per_handshake * 1e3,
            cpu_64k_us: cpu_per_message[0] * 1e6,
            cpu_1k_us: cpu_per_message[1] * 1e6,
            negotiated,
        }
    });
    println!("{}", figures.line());
}

// ---- The server ----

fn serve_main(args: &[String]) {
    let [cert, key] = args else { usage() };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .expect("server certificate")
        .collect::<Result<_, _>>()
        .expect("server certificate");
    let key = PrivateKeyDer::from_pem_file(key).expect("server key");
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
    // Full handshakes only.
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

    // The parent closes stdin when it is done.
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
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("local_addr").port();
        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "PORT {port}");
            let _ = out.flush();
        }
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                if let Ok(tls) = acceptor.accept(tcp).await {
                    let _ = echo(tls).await;
                }
            });
        }
    });
}

fn invalid(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_owned())
}

/// What the connection agreed on, e.g. `TLS13_AES_256_GCM_SHA384/X25519MLKEM768`.
fn negotiated(stream: &TlsStream<TcpStream>) -> String {
    let (_, session) = stream.get_ref();
    format!(
        "{:?}/{:?}",
        session.negotiated_cipher_suite().map(|s| s.suite()),
        session.negotiated_key_exchange_group().map(|g| g.name())
    )
    .replace("Some(", "")
    .replace(')', "")
}

fn frame(out: &mut Vec<u8>, opcode: OpCode, fin: bool, payload: &[u8]) {
    let header = FrameHeader {
        fin,
        rsv1: false,
        opcode,
        mask: None,
        payload_len: payload.len() as u64,
    };
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = header.encode(&mut head);
    out.extend_from_slice(&head[..n]);
    out.extend_from_slice(payload);
}

/// The handshake, then every data frame back unmasked, `!kx` answered,
/// pings answered and a close returned.
async fn echo(mut stream: TlsStream<TcpStream>) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(16 * 1024);
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
            let mask = h.mask.ok_or_else(|| invalid("unmasked client frame"))?;
            apply_mask(&mut payload, mask, 0);
            match h.opcode {
                OpCode::Text if h.fin && &payload[..] == b"!kx" => {
                    frame(&mut out, OpCode::Text, true, negotiated(&stream).as_bytes());
                }
                OpCode::Ping => frame(&mut out, OpCode::Pong, true, &payload),
                OpCode::Pong => {}
                OpCode::Close => {
                    frame(&mut out, OpCode::Close, true, &payload);
                    stream.write_all(&out).await?;
                    stream.shutdown().await?;
                    return Ok(());
                }
                op => frame(&mut out, op, h.fin, &payload),
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}
