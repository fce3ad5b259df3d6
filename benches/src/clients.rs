//! The measured clients (`wsbench client`): one process per run, pinned to
//! one core, on a single-threaded tokio runtime. Every client does the same
//! workload against the same echo server, checks every echo (kind and
//! length; text is UTF-8-validated by each library, and by simdutf for the
//! raw-TCP baseline), prints one JSON [`Sample`] line and exits.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};

use crate::util::{cpu_time_us, fail, peak_rss_kib, pin_to, raise_nofile_limit, Args, Sample};
use crate::workload::{payload, Workload};

/// The clients, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Client {
    /// unisocket through `SocketTask`: `connect_socket(..).await`,
    /// `task.send(..).await`, `task.recv().await`.
    Uni,
    /// unisocket through callbacks: `on_open`, `on_message`, and `send`
    /// with a `success` callback.
    UniCb,
    Tungstenite,
    TokioWs,
    FastWs,
    RawTcp,
}

pub const ALL: [Client; 6] = [
    Client::Uni,
    Client::UniCb,
    Client::Tungstenite,
    Client::TokioWs,
    Client::FastWs,
    Client::RawTcp,
];

impl Client {
    pub fn name(self) -> &'static str {
        match self {
            Client::Uni => "unisocket",
            Client::UniCb => "unisocket-cb",
            Client::Tungstenite => "tokio-tungstenite",
            Client::TokioWs => "tokio-websockets",
            Client::FastWs => "fastwebsockets",
            Client::RawTcp => "raw-tcp",
        }
    }

    /// The letter used in `--clients A,C` and in the run log.
    pub fn letter(self) -> char {
        match self {
            Client::Uni => 'A',
            Client::UniCb => 'B',
            Client::Tungstenite => 'C',
            Client::TokioWs => 'D',
            Client::FastWs => 'E',
            Client::RawTcp => 'F',
        }
    }

    pub fn parse(s: &str) -> Option<Client> {
        let s = s.trim();
        ALL.into_iter().find(|c| {
            c.name().eq_ignore_ascii_case(s)
                || (s.len() == 1 && s.eq_ignore_ascii_case(&c.letter().to_string()))
                || match c {
                    Client::Uni => s == "uni",
                    Client::UniCb => s == "uni-cb" || s == "callback",
                    Client::Tungstenite => s == "tungstenite" || s == "tt",
                    Client::TokioWs => s == "tws",
                    Client::FastWs => s == "fws",
                    Client::RawTcp => s == "raw" || s == "tcp",
                }
        })
    }

    /// A third-party WebSocket client: what unisocket is compared with.
    pub fn is_peer(self) -> bool {
        matches!(self, Client::Tungstenite | Client::TokioWs | Client::FastWs)
    }
}

/// What a run needs to know.
struct Ctx {
    ws: SocketAddr,
    tcp: SocketAddr,
    /// The TLS listeners (WebSocket and raw) and the CA that signed their
    /// certificate, for the workloads over TLS.
    wss: Option<SocketAddr>,
    tls_tcp: Option<SocketAddr>,
    ca_pem: Vec<u8>,
    /// Whether this workload runs over TLS.
    tls: bool,
    /// The peers' rustls configuration: the process default provider
    /// (aws-lc-rs), the CA as the only root; one for the whole run, as an
    /// application keeps one.
    tls_config: Option<Arc<rustls::ClientConfig>>,
    size: usize,
    text: bool,
    payload: Bytes,
    warmup: Duration,
    secs: Duration,
}

impl Ctx {
    /// The WebSocket echo's address: plain or TLS.
    fn ws_addr(&self) -> SocketAddr {
        if self.tls {
            self.wss.expect("checked in main")
        } else {
            self.ws
        }
    }

    /// The raw echo's address: plain or TLS.
    fn raw_addr(&self) -> SocketAddr {
        if self.tls {
            self.tls_tcp.expect("checked in main")
        } else {
            self.tcp
        }
    }

    fn url(&self) -> String {
        format!(
            "{}://{}/",
            if self.tls { "wss" } else { "ws" },
            self.ws_addr()
        )
    }

    fn tls_config(&self) -> Arc<rustls::ClientConfig> {
        self.tls_config.clone().expect("checked in main")
    }

    /// TCP, then the TLS handshake with the peers' configuration.
    async fn tls_connect(&self, addr: SocketAddr) -> tokio_rustls::client::TlsStream<TcpStream> {
        let s = tcp(addr).await;
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        tokio_rustls::TlsConnector::from(self.tls_config())
            .connect(name, s)
            .await
            .unwrap_or_else(|e| fail(format_args!("TLS handshake: {e}")))
    }

    /// Fails the run unless an echo is of the kind and size sent.
    fn check(&self, len: usize, is_text: bool) {
        if len != self.size || is_text != self.text {
            fail(format_args!(
                "bad echo: {} bytes ({}), expected {} bytes ({})",
                len,
                if is_text { "text" } else { "binary" },
                self.size,
                if self.text { "text" } else { "binary" }
            ));
        }
    }
}

pub fn main(args: &[String]) {
    let args = Args::parse(args, &[]).unwrap_or_else(|e| fail(e));
    let client = args
        .get("client")
        .and_then(Client::parse)
        .unwrap_or_else(|| fail("--client: unknown or missing"));
    let workload = args
        .get("workload")
        .and_then(Workload::parse)
        .unwrap_or_else(|| fail("--workload: unknown or missing"));
    let addr = |k: &str| -> SocketAddr {
        args.get(k)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| fail(format_args!("--{k}: missing or not an address")))
    };
    let secs = |k: &str, d: f64| Duration::from_secs_f64(args.num(k).ok().flatten().unwrap_or(d));
    if let Some(core) = args.num::<usize>("core").ok().flatten() {
        if !pin_to(Some(core)) {
            eprintln!("wsbench client: could not pin to core {core}");
        }
    }
    raise_nofile_limit();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let tls = workload.tls();
    let (wss, tls_tcp, ca_pem, tls_config) = if tls {
        let ca_path = args
            .get("ca")
            .unwrap_or_else(|| fail("--ca: needed for a workload over TLS"));
        let pem =
            std::fs::read(ca_path).unwrap_or_else(|e| fail(format_args!("--ca {ca_path}: {e}")));
        let config = peer_tls_config(&pem);
        (Some(addr("wss")), Some(addr("tls")), pem, Some(config))
    } else {
        (None, None, Vec::new(), None)
    };
    let ctx = Arc::new(Ctx {
        ws: addr("ws"),
        tcp: addr("tcp"),
        wss,
        tls_tcp,
        ca_pem,
        tls,
        tls_config,
        size: workload.size(),
        text: workload.text(),
        payload: payload(workload.size(), workload.text()),
        warmup: secs("warmup", 0.3),
        secs: secs("secs", 1.0),
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut sample = rt.block_on(run(client, workload, ctx));
    sample.rss_kib = peak_rss_kib();
    println!("{}", serde_json::to_string(&sample).expect("json"));
    // Connections are left open on purpose: the process exit closes them.
    std::process::exit(0);
}

/// The peers' client configuration: the process default provider, the
/// throw-away CA as the only root.
fn peer_tls_config(ca_pem: &[u8]) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.unwrap_or_else(|e| fail(format_args!("CA PEM: {e}")));
        roots
            .add(cert)
            .unwrap_or_else(|e| fail(format_args!("CA certificate: {e}")));
    }
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

async fn run(client: Client, w: Workload, ctx: Arc<Ctx>) -> Sample {
    match w {
        Workload::Rtt { .. } => match client {
            Client::Uni => uni::rtt(ctx).await,
            Client::UniCb => uni_cb::rtt(ctx).await,
            Client::Tungstenite => tung::rtt(ctx).await,
            Client::TokioWs => tws::rtt(ctx).await,
            Client::FastWs => fws::rtt(ctx).await,
            Client::RawTcp => raw::rtt(ctx).await,
        },
        Workload::Stream { window, .. } => match client {
            Client::Uni => uni::stream(ctx, window).await,
            Client::UniCb => uni_cb::stream(ctx, window).await,
            Client::Tungstenite => tung::stream(ctx, window).await,
            Client::TokioWs => tws::stream(ctx, window).await,
            Client::FastWs => fws::stream(ctx, window).await,
            Client::RawTcp => raw::stream(ctx, window).await,
        },
        Workload::Conns { conns, rtts, .. } => match client {
            Client::Uni => run_conns(ctx, conns, rtts, uni::conn_job).await,
            Client::UniCb => uni_cb::conns(ctx, conns, rtts).await,
            Client::Tungstenite => run_conns(ctx, conns, rtts, tung::conn_job).await,
            Client::TokioWs => run_conns(ctx, conns, rtts, tws::conn_job).await,
            Client::FastWs => run_conns(ctx, conns, rtts, fws::conn_job).await,
            Client::RawTcp => run_conns(ctx, conns, rtts, raw::conn_job).await,
        },
        Workload::Setup { concurrency, .. } => match client {
            Client::Uni => run_setup(ctx, concurrency, uni::setup).await,
            Client::UniCb => run_setup(ctx, concurrency, uni_cb::setup).await,
            Client::Tungstenite => run_setup(ctx, concurrency, tung::setup).await,
            Client::TokioWs => run_setup(ctx, concurrency, tws::setup).await,
            Client::FastWs => run_setup(ctx, concurrency, fws::setup).await,
            Client::RawTcp => run_setup(ctx, concurrency, raw::setup).await,
        },
    }
}

/// The `setup` workloads: `concurrency` loops, each opening and closing one
/// connection after the other; handshakes counted over the measured window.
async fn run_setup<F, Fut>(ctx: Arc<Ctx>, concurrency: usize, once: F) -> Sample
where
    F: Fn(Arc<Ctx>) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let done = Arc::new(AtomicU64::new(0));
    for _ in 0..concurrency {
        let (cx, d) = (ctx.clone(), done.clone());
        tokio::spawn(async move {
            loop {
                once(cx.clone()).await;
                d.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    measure_window(&ctx, &done).await
}

/// Counts down the connections of the `conns` workload.
struct Done {
    left: AtomicUsize,
    notify: Notify,
}

impl Done {
    fn new(n: usize) -> Arc<Done> {
        Arc::new(Done {
            left: AtomicUsize::new(n),
            notify: Notify::new(),
        })
    }

    fn one(&self) {
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.notify.notify_one();
        }
    }

    async fn wait(&self) {
        if self.left.load(Ordering::Acquire) > 0 {
            self.notify.notified().await;
        }
    }
}

/// The `conns` workload for clients written as one async job per connection:
/// each job connects, does its round trips, reports done and then keeps its
/// connection open until the process exits.
async fn run_conns<F, Fut>(ctx: Arc<Ctx>, n: usize, rtts: usize, job: F) -> Sample
where
    F: Fn(Arc<Ctx>, usize, Arc<Done>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let done = Done::new(n);
    let (start, cpu) = (Instant::now(), cpu_time_us());
    for _ in 0..n {
        tokio::spawn(job(ctx.clone(), rtts, done.clone()));
    }
    done.wait().await;
    conns_sample(&ctx, n, rtts, start, cpu)
}

fn conns_sample(ctx: &Ctx, n: usize, rtts: usize, start: Instant, cpu: f64) -> Sample {
    let msgs = (n * rtts) as u64;
    Sample {
        msgs,
        secs: start.elapsed().as_secs_f64(),
        bytes: msgs * ctx.size as u64,
        cpu_us: Some(cpu_time_us() - cpu),
        ..Sample::default()
    }
}

/// Counts echoes over the measured window, after the warm-up.
async fn measure_window(ctx: &Ctx, received: &AtomicU64) -> Sample {
    tokio::time::sleep(ctx.warmup).await;
    let (c0, t0, cpu0) = (
        received.load(Ordering::Relaxed),
        Instant::now(),
        cpu_time_us(),
    );
    tokio::time::sleep(ctx.secs).await;
    let (c1, t1, cpu1) = (
        received.load(Ordering::Relaxed),
        Instant::now(),
        cpu_time_us(),
    );
    let msgs = c1 - c0;
    Sample {
        msgs,
        secs: t1.duration_since(t0).as_secs_f64(),
        bytes: msgs * ctx.size as u64,
        cpu_us: Some(cpu1 - cpu0),
        ..Sample::default()
    }
}

/// The pipelined writers' rhythm: wait for room for one message, then take
/// all the room the window has; returns how many messages to queue before
/// the next flush.
async fn take_room(room: &Semaphore) -> usize {
    room.acquire().await.expect("semaphore").forget();
    let mut n = 1;
    while let Ok(p) = room.try_acquire() {
        p.forget();
        n += 1;
    }
    n
}

async fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| fail(format_args!("connect {addr}: {e}")));
    s.set_nodelay(true)
        .unwrap_or_else(|e| fail(format_args!("TCP_NODELAY: {e}")));
    s
}

/// unisocket, async: `SocketTask`.
mod uni {
    use super::*;
    use unisocket::{connect_socket, CloseOptions, ConnectOptions, Data, SocketTask, Text};

    /// Over TLS: the throw-away CA as the only root, as the peers have it
    /// (unisocket builds its configuration, with the process default
    /// provider, and caches it).
    pub(super) fn options(ctx: &Ctx) -> ConnectOptions {
        let options = ConnectOptions::new(ctx.url()).no_proxy();
        if ctx.tls {
            options
                .ca_certificates_pem(ctx.ca_pem.clone())
                .webpki_roots(false)
        } else {
            options
        }
    }

    pub(super) fn data(ctx: &Ctx) -> Data {
        if ctx.text {
            Data::Text(Text::try_from_bytes(ctx.payload.clone()).expect("UTF-8 payload"))
        } else {
            Data::Binary(ctx.payload.clone())
        }
    }

    async fn connect(ctx: &Ctx) -> SocketTask {
        connect_socket(options(ctx))
            .await
            .unwrap_or_else(|e| fail(e))
    }

    async fn round_trip(ctx: &Ctx, task: &SocketTask, data: &Data) {
        if let Err(e) = task.send(data.clone()).await {
            fail(e);
        }
        match task.recv().await {
            Some(d) => ctx.check(d.len(), d.is_text()),
            None => fail("connection closed"),
        }
    }

    pub(super) async fn rtt(ctx: Arc<Ctx>) -> Sample {
        let task = connect(&ctx).await;
        let data = data(&ctx);
        let mut rec = crate::util::LatencyRecorder::new(ctx.warmup, ctx.secs);
        loop {
            let t = Instant::now();
            round_trip(&ctx, &task, &data).await;
            if !rec.record(t) {
                break;
            }
        }
        rec.finish(ctx.size)
    }

    pub(super) async fn stream(ctx: Arc<Ctx>, window: usize) -> Sample {
        let task = connect(&ctx).await;
        let received = Arc::new(AtomicU64::new(0));
        let room = Arc::new(Semaphore::new(window));
        let (w, r, data) = (task.clone(), task.clone(), data(&ctx));
        let sem = room.clone();
        tokio::spawn(async move {
            loop {
                // `send` returns at once; awaiting the batch's last
                // Completion is the flush.
                let n = take_room(&sem).await;
                let mut last = None;
                for _ in 0..n {
                    last = Some(w.send(data.clone()));
                }
                if let Some(c) = last {
                    if let Err(e) = c.await {
                        fail(e);
                    }
                }
            }
        });
        let (c, cx) = (received.clone(), ctx.clone());
        tokio::spawn(async move {
            while let Some(d) = r.recv().await {
                cx.check(d.len(), d.is_text());
                c.fetch_add(1, Ordering::Relaxed);
                room.add_permits(1);
            }
            fail("connection closed");
        });
        measure_window(&ctx, &received).await
    }

    pub(super) async fn conn_job(ctx: Arc<Ctx>, rtts: usize, done: Arc<Done>) {
        let task = connect(&ctx).await;
        let data = data(&ctx);
        for _ in 0..rtts {
            round_trip(&ctx, &task, &data).await;
        }
        done.one();
        std::future::pending::<()>().await;
        drop(task);
    }

    pub(super) async fn setup(ctx: Arc<Ctx>) {
        let task = connect(&ctx).await;
        if let Err(e) = task.close(CloseOptions::default()).await {
            fail(e);
        }
    }
}

/// unisocket, callbacks: `on_open`, `on_message`, `send` with `success`.
mod uni_cb {
    use super::*;
    use unisocket::{connect_socket, CloseOptions, Data, SendOptions, SocketTask};

    /// A send with `success` and `fail` callbacks, the uni-app way.
    fn send(task: &SocketTask, data: &Data, sent: &Arc<AtomicU64>) {
        let sent = sent.clone();
        // The Completion is dropped: the callbacks carry the outcome.
        drop(
            task.send(
                SendOptions::new(data.clone())
                    .success(move |_| {
                        sent.fetch_add(1, Ordering::Relaxed);
                    })
                    .fail(|e| fail(e)),
            ),
        );
    }

    fn task(ctx: &Ctx) -> SocketTask {
        let task = connect_socket(super::uni::options(ctx));
        task.on_error(|e| fail(&e.err_msg));
        task
    }

    pub(super) async fn rtt(ctx: Arc<Ctx>) -> Sample {
        let task = task(&ctx);
        let data = super::uni::data(&ctx);
        let sent = Arc::new(AtomicU64::new(0));
        let (tx, rx) = tokio::sync::oneshot::channel::<Sample>();
        let (t, d, s) = (task.clone(), data.clone(), sent.clone());
        task.on_open(move |_| send(&t, &d, &s));
        let t = task.clone();
        let cx = ctx.clone();
        let mut tx = Some(tx);
        let mut rec: Option<crate::util::LatencyRecorder> = None;
        let mut last = Instant::now();
        task.on_message(move |ev| {
            cx.check(ev.data.len(), ev.data.is_text());
            let more = match rec.as_mut() {
                // The first echo starts the clock.
                None => {
                    rec = Some(crate::util::LatencyRecorder::new(cx.warmup, cx.secs));
                    true
                }
                Some(r) => r.record(last),
            };
            if more {
                last = Instant::now();
                send(&t, &data, &sent);
            } else if let (Some(tx), Some(r)) = (tx.take(), rec.take()) {
                let _ = tx.send(r.finish(cx.size));
            }
        });
        rx.await.unwrap_or_else(|_| fail("no result"))
    }

    pub(super) async fn stream(ctx: Arc<Ctx>, window: usize) -> Sample {
        let task = task(&ctx);
        let data = super::uni::data(&ctx);
        let sent = Arc::new(AtomicU64::new(0));
        let received = Arc::new(AtomicU64::new(0));
        let (open_tx, open_rx) = tokio::sync::oneshot::channel::<()>();
        let mut open_tx = Some(open_tx);
        let (t, d, s) = (task.clone(), data.clone(), sent.clone());
        task.on_open(move |_| {
            for _ in 0..window {
                send(&t, &d, &s);
            }
            if let Some(tx) = open_tx.take() {
                let _ = tx.send(());
            }
        });
        let (t, c, cx) = (task.clone(), received.clone(), ctx.clone());
        task.on_message(move |ev| {
            cx.check(ev.data.len(), ev.data.is_text());
            c.fetch_add(1, Ordering::Relaxed);
            send(&t, &data, &sent);
        });
        open_rx.await.unwrap_or_else(|_| fail("never opened"));
        measure_window(&ctx, &received).await
    }

    pub(super) async fn conns(ctx: Arc<Ctx>, n: usize, rtts: usize) -> Sample {
        let done = Done::new(n);
        let data = super::uni::data(&ctx);
        let sent = Arc::new(AtomicU64::new(0));
        let (start, cpu) = (Instant::now(), cpu_time_us());
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let task = task(&ctx);
            let (t, d, s) = (task.clone(), data.clone(), sent.clone());
            task.on_open(move |_| send(&t, &d, &s));
            let (t, d, s, cx, dn) = (
                task.clone(),
                data.clone(),
                sent.clone(),
                ctx.clone(),
                done.clone(),
            );
            let mut got = 0;
            task.on_message(move |ev| {
                cx.check(ev.data.len(), ev.data.is_text());
                got += 1;
                if got < rtts {
                    send(&t, &d, &s);
                } else if got == rtts {
                    dn.one();
                }
            });
            tasks.push(task);
        }
        done.wait().await;
        conns_sample(&ctx, n, rtts, start, cpu)
    }

    /// `close` from `on_open`; `on_close` ends the round.
    pub(super) async fn setup(ctx: Arc<Ctx>) {
        let task = task(&ctx);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut t = Some(task.clone());
        task.on_open(move |_| {
            if let Some(t) = t.take() {
                drop(t.close(CloseOptions::default().fail(|e| fail(e))));
            }
        });
        let mut tx = Some(tx);
        task.on_close(move |_| {
            if let Some(tx) = tx.take() {
                let _ = tx.send(());
            }
        });
        rx.await.unwrap_or_else(|_| fail("never closed"));
    }
}

/// tokio-tungstenite. Over TLS: `client_async_tls_with_config` with
/// `Connector::Rustls` and the peers' configuration.
mod tung {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncRead, AsyncWrite};
    use tokio_tungstenite::tungstenite::{Error, Message, Utf8Bytes};
    use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

    async fn connect(ctx: &Ctx) -> WebSocketStream<TcpStream> {
        let s = tcp(ctx.ws).await;
        tokio_tungstenite::client_async(ctx.url(), s)
            .await
            .map(|(ws, _)| ws)
            .unwrap_or_else(|e| fail(e))
    }

    async fn connect_tls(ctx: &Ctx) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        let s = tcp(ctx.ws_addr()).await;
        let connector = Connector::Rustls(ctx.tls_config());
        tokio_tungstenite::client_async_tls_with_config(ctx.url(), s, None, Some(connector))
            .await
            .map(|(ws, _)| ws)
            .unwrap_or_else(|e| fail(e))
    }

    fn message(ctx: &Ctx) -> Message {
        if ctx.text {
            Message::Text(Utf8Bytes::try_from(ctx.payload.clone()).expect("UTF-8"))
        } else {
            Message::Binary(ctx.payload.clone())
        }
    }

    fn check(ctx: &Ctx, m: Option<Result<Message, Error>>) {
        match m {
            Some(Ok(Message::Text(t))) => ctx.check(t.len(), true),
            Some(Ok(Message::Binary(b))) => ctx.check(b.len(), false),
            Some(Ok(other)) => fail(format_args!("unexpected message {other:?}")),
            Some(Err(e)) => fail(e),
            None => fail("connection closed"),
        }
    }

    async fn round_trip<S>(ctx: &Ctx, ws: &mut WebSocketStream<S>, msg: &Message)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if let Err(e) = ws.send(msg.clone()).await {
            fail(e);
        }
        check(ctx, ws.next().await);
    }

    pub(super) async fn rtt(ctx: Arc<Ctx>) -> Sample {
        // Plain only (no rtt workload over TLS).
        let mut ws = connect(&ctx).await;
        let msg = message(&ctx);
        let mut rec = crate::util::LatencyRecorder::new(ctx.warmup, ctx.secs);
        loop {
            let t = Instant::now();
            round_trip(&ctx, &mut ws, &msg).await;
            if !rec.record(t) {
                break;
            }
        }
        rec.finish(ctx.size)
    }

    pub(super) async fn stream(ctx: Arc<Ctx>, window: usize) -> Sample {
        if ctx.tls {
            let ws = connect_tls(&ctx).await;
            stream_on(ctx, ws, window).await
        } else {
            let ws = connect(&ctx).await;
            stream_on(ctx, ws, window).await
        }
    }

    async fn stream_on<S>(ctx: Arc<Ctx>, ws: WebSocketStream<S>, window: usize) -> Sample
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sink, mut stream) = ws.split();
        let received = Arc::new(AtomicU64::new(0));
        let room = Arc::new(Semaphore::new(window));
        let (sem, msg) = (room.clone(), message(&ctx));
        tokio::spawn(async move {
            loop {
                let n = take_room(&sem).await;
                for _ in 0..n {
                    if let Err(e) = sink.feed(msg.clone()).await {
                        fail(e);
                    }
                }
                if let Err(e) = sink.flush().await {
                    fail(e);
                }
            }
        });
        let (c, cx) = (received.clone(), ctx.clone());
        tokio::spawn(async move {
            loop {
                check(&cx, stream.next().await);
                c.fetch_add(1, Ordering::Relaxed);
                room.add_permits(1);
            }
        });
        measure_window(&ctx, &received).await
    }

    pub(super) async fn conn_job(ctx: Arc<Ctx>, rtts: usize, done: Arc<Done>) {
        if ctx.tls {
            let ws = connect_tls(&ctx).await;
            conn_on(ctx, ws, rtts, done).await
        } else {
            let ws = connect(&ctx).await;
            conn_on(ctx, ws, rtts, done).await
        }
    }

    async fn conn_on<S>(ctx: Arc<Ctx>, mut ws: WebSocketStream<S>, rtts: usize, done: Arc<Done>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let msg = message(&ctx);
        for _ in 0..rtts {
            round_trip(&ctx, &mut ws, &msg).await;
        }
        done.one();
        std::future::pending::<()>().await;
        drop(ws);
    }

    pub(super) async fn setup(ctx: Arc<Ctx>) {
        if ctx.tls {
            close(connect_tls(&ctx).await).await
        } else {
            close(connect(&ctx).await).await
        }
    }

    /// A close frame, then read until the server's answer ends the stream.
    async fn close<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocketStream<S>) {
        if let Err(e) = ws.close(None).await {
            fail(e);
        }
        loop {
            match ws.next().await {
                None | Some(Err(Error::ConnectionClosed)) => return,
                Some(Ok(Message::Close(_))) => {}
                Some(Ok(other)) => fail(format_args!("unexpected message {other:?}")),
                Some(Err(e)) => fail(e),
            }
        }
    }
}

/// tokio-websockets. Over TLS: its `Connector::Rustls` with the peers'
/// configuration, then `connect_on`.
mod tws {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncRead, AsyncWrite};
    use tokio_websockets::{
        ClientBuilder, Connector, MaybeTlsStream, Message, Payload, WebSocketStream,
    };

    async fn connect_on<S: AsyncRead + AsyncWrite + Unpin>(ctx: &Ctx, s: S) -> WebSocketStream<S> {
        ClientBuilder::new()
            .uri(&ctx.url())
            .unwrap_or_else(|e| fail(e))
            .connect_on(s)
            .await
            .map(|(ws, _)| ws)
            .unwrap_or_else(|e| fail(e))
    }

    async fn connect(ctx: &Ctx) -> WebSocketStream<TcpStream> {
        let s = tcp(ctx.ws).await;
        connect_on(ctx, s).await
    }

    async fn connect_tls(ctx: &Ctx) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        let s = tcp(ctx.ws_addr()).await;
        let connector = Connector::Rustls(tokio_rustls::TlsConnector::from(ctx.tls_config()));
        let host = ctx.ws_addr().ip().to_string();
        let s = connector
            .wrap(&host, s)
            .await
            .unwrap_or_else(|e| fail(format_args!("TLS handshake: {e}")));
        connect_on(ctx, s).await
    }

    fn message(ctx: &Ctx) -> Message {
        let p = Payload::from(ctx.payload.clone());
        if ctx.text {
            Message::text(p)
        } else {
            Message::binary(p)
        }
    }

    fn check(ctx: &Ctx, m: Option<Result<Message, tokio_websockets::Error>>) {
        match m {
            Some(Ok(m)) if m.is_text() || m.is_binary() => {
                ctx.check(m.as_payload().len(), m.is_text())
            }
            Some(Ok(other)) => fail(format_args!("unexpected message {other:?}")),
            Some(Err(e)) => fail(e),
            None => fail("connection closed"),
        }
    }

    async fn round_trip<S>(ctx: &Ctx, ws: &mut WebSocketStream<S>, msg: &Message)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if let Err(e) = ws.send(msg.clone()).await {
            fail(e);
        }
        check(ctx, ws.next().await);
    }

    pub(super) async fn rtt(ctx: Arc<Ctx>) -> Sample {
        let mut ws = connect(&ctx).await;
        let msg = message(&ctx);
        let mut rec = crate::util::LatencyRecorder::new(ctx.warmup, ctx.secs);
        loop {
            let t = Instant::now();
            round_trip(&ctx, &mut ws, &msg).await;
            if !rec.record(t) {
                break;
            }
        }
        rec.finish(ctx.size)
    }

    pub(super) async fn stream(ctx: Arc<Ctx>, window: usize) -> Sample {
        if ctx.tls {
            let ws = connect_tls(&ctx).await;
            stream_on(ctx, ws, window).await
        } else {
            let ws = connect(&ctx).await;
            stream_on(ctx, ws, window).await
        }
    }

    async fn stream_on<S>(ctx: Arc<Ctx>, ws: WebSocketStream<S>, window: usize) -> Sample
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sink, mut stream) = ws.split();
        let received = Arc::new(AtomicU64::new(0));
        let room = Arc::new(Semaphore::new(window));
        let (sem, msg) = (room.clone(), message(&ctx));
        tokio::spawn(async move {
            loop {
                let n = take_room(&sem).await;
                for _ in 0..n {
                    if let Err(e) = sink.feed(msg.clone()).await {
                        fail(e);
                    }
                }
                if let Err(e) = sink.flush().await {
                    fail(e);
                }
            }
        });
        let (c, cx) = (received.clone(), ctx.clone());
        tokio::spawn(async move {
            loop {
                check(&cx, stream.next().await);
                c.fetch_add(1, Ordering::Relaxed);
                room.add_permits(1);
            }
        });
        measure_window(&ctx, &received).await
    }

    pub(super) async fn conn_job(ctx: Arc<Ctx>, rtts: usize, done: Arc<Done>) {
        if ctx.tls {
            let ws = connect_tls(&ctx).await;
            conn_on(ctx, ws, rtts, done).await
        } else {
            let ws = connect(&ctx).await;
            conn_on(ctx, ws, rtts, done).await
        }
    }

    async fn conn_on<S>(ctx: Arc<Ctx>, mut ws: WebSocketStream<S>, rtts: usize, done: Arc<Done>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let msg = message(&ctx);
        for _ in 0..rtts {
            round_trip(&ctx, &mut ws, &msg).await;
        }
        done.one();
        std::future::pending::<()>().await;
        drop(ws);
    }

    pub(super) async fn setup(ctx: Arc<Ctx>) {
        if ctx.tls {
            close(connect_tls(&ctx).await).await
        } else {
            close(connect(&ctx).await).await
        }
    }

    /// A close frame, then read until the server's answer ends the stream.
    async fn close<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocketStream<S>) {
        if let Err(e) = ws.send(Message::close(None, "")).await {
            fail(e);
        }
        while let Some(m) = ws.next().await {
            match m {
                Ok(m) if m.is_close() => {}
                Ok(other) => fail(format_args!("unexpected message {other:?}")),
                Err(e) => fail(e),
            }
        }
    }
}

/// fastwebsockets: hyper for the client handshake, as its docs do. Over
/// TLS: tokio-rustls with the peers' configuration under it (fastwebsockets
/// has no TLS of its own; its examples do the same).
mod fws {
    use super::*;
    use fastwebsockets::{
        FragmentCollector, FragmentCollectorRead, Frame, OpCode, Payload, WebSocket, WebSocketError,
    };
    use http_body_util::Empty;
    use hyper::header::{CONNECTION, UPGRADE};
    use hyper::upgrade::Upgraded;
    use hyper::Request;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncRead, AsyncWrite};

    struct SpawnExecutor;

    impl<Fut> hyper::rt::Executor<Fut> for SpawnExecutor
    where
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        fn execute(&self, fut: Fut) {
            tokio::task::spawn(fut);
        }
    }

    async fn handshake(ctx: &Ctx) -> WebSocket<TokioIo<Upgraded>> {
        if ctx.tls {
            let s = ctx.tls_connect(ctx.ws_addr()).await;
            handshake_on(ctx, s).await
        } else {
            let s = tcp(ctx.ws).await;
            handshake_on(ctx, s).await
        }
    }

    async fn handshake_on<S>(ctx: &Ctx, s: S) -> WebSocket<TokioIo<Upgraded>>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let req = Request::builder()
            .method("GET")
            .uri(ctx.url().replacen("ws", "http", 1))
            .header("Host", ctx.ws_addr().to_string())
            .header(UPGRADE, "websocket")
            .header(CONNECTION, "upgrade")
            .header(
                "Sec-WebSocket-Key",
                fastwebsockets::handshake::generate_key(),
            )
            .header("Sec-WebSocket-Version", "13")
            .body(Empty::<Bytes>::new())
            .unwrap_or_else(|e| fail(e));
        fastwebsockets::handshake::client(&SpawnExecutor, req, s)
            .await
            .map(|(ws, _)| ws)
            .unwrap_or_else(|e| fail(e))
    }

    fn opcode(ctx: &Ctx) -> OpCode {
        if ctx.text {
            OpCode::Text
        } else {
            OpCode::Binary
        }
    }

    fn check(ctx: &Ctx, f: Result<Frame<'_>, WebSocketError>) {
        match f {
            Ok(f) if matches!(f.opcode, OpCode::Text | OpCode::Binary) => {
                ctx.check(f.payload.len(), f.opcode == OpCode::Text)
            }
            Ok(f) => fail(format_args!("unexpected frame {:?}", f.opcode)),
            Err(e) => fail(e),
        }
    }

    async fn round_trip(ctx: &Ctx, ws: &mut FragmentCollector<TokioIo<Upgraded>>) {
        let frame = Frame::new(true, opcode(ctx), None, Payload::Borrowed(&ctx.payload));
        if let Err(e) = ws.write_frame(frame).await {
            fail(e);
        }
        // `FragmentCollector` has no flush; over TLS, tokio-rustls writes the
        // record through unless the socket is full, which a round trip of
        // 32 B never makes it.
        check(ctx, ws.read_frame().await);
    }

    pub(super) async fn rtt(ctx: Arc<Ctx>) -> Sample {
        let mut ws = FragmentCollector::new(handshake(&ctx).await);
        let mut rec = crate::util::LatencyRecorder::new(ctx.warmup, ctx.secs);
        loop {
            let t = Instant::now();
            round_trip(&ctx, &mut ws).await;
            if !rec.record(t) {
                break;
            }
        }
        rec.finish(ctx.size)
    }

    pub(super) async fn stream(ctx: Arc<Ctx>, window: usize) -> Sample {
        // Buffered write half, so that a batch of frames goes out in one
        // write at `flush` (fastwebsockets writes each frame straight through).
        let (rx, mut tx) = handshake(&ctx).await.split(|s| {
            let (r, w) = tokio::io::split(s);
            (r, tokio::io::BufWriter::with_capacity(64 << 10, w))
        });
        let mut rx = FragmentCollectorRead::new(rx);
        let received = Arc::new(AtomicU64::new(0));
        let room = Arc::new(Semaphore::new(window));
        let (sem, cx) = (room.clone(), ctx.clone());
        tokio::spawn(async move {
            let op = opcode(&cx);
            loop {
                let n = take_room(&sem).await;
                for _ in 0..n {
                    let frame = Frame::new(true, op, None, Payload::Borrowed(&cx.payload));
                    if let Err(e) = tx.write_frame(frame).await {
                        fail(e);
                    }
                }
                if let Err(e) = tx.flush().await {
                    fail(e);
                }
            }
        });
        let (c, cx) = (received.clone(), ctx.clone());
        tokio::spawn(async move {
            // The server sends no ping or close here, so nothing is obligated.
            let mut obligated = |_: Frame<'_>| async { Ok::<(), std::convert::Infallible>(()) };
            loop {
                check(&cx, rx.read_frame(&mut obligated).await);
                c.fetch_add(1, Ordering::Relaxed);
                room.add_permits(1);
            }
        });
        measure_window(&ctx, &received).await
    }

    pub(super) async fn conn_job(ctx: Arc<Ctx>, rtts: usize, done: Arc<Done>) {
        let mut ws = FragmentCollector::new(handshake(&ctx).await);
        for _ in 0..rtts {
            round_trip(&ctx, &mut ws).await;
        }
        done.one();
        std::future::pending::<()>().await;
        drop(ws);
    }

    /// A close frame, then the server's answer.
    pub(super) async fn setup(ctx: Arc<Ctx>) {
        let mut ws = handshake(&ctx).await;
        // The close is ours: no automatic answer to the server's.
        ws.set_auto_close(false);
        if let Err(e) = ws.write_frame(Frame::close(1000, &[])).await {
            fail(e);
        }
        if let Err(e) = ws.flush().await {
            fail(e);
        }
        match ws.read_frame().await {
            Ok(f) if f.opcode == OpCode::Close => {}
            Ok(f) => fail(format_args!("unexpected frame {:?}", f.opcode)),
            Err(e) => fail(e),
        }
    }
}

/// The floor: 4-byte length + payload over plain TCP (or TLS with
/// tokio-rustls and the peers' configuration), same sizes, same windows,
/// same write rhythm (a `BufWriter` flushed once per batch).
mod raw {
    use super::*;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

    fn frame(ctx: &Ctx) -> Vec<u8> {
        let mut f = Vec::with_capacity(4 + ctx.size);
        f.extend_from_slice(&(ctx.size as u32).to_be_bytes());
        f.extend_from_slice(&ctx.payload);
        f
    }

    async fn read_echo<R: AsyncRead + Unpin>(ctx: &Ctx, r: &mut R, buf: &mut Vec<u8>) {
        let mut head = [0u8; 4];
        if let Err(e) = r.read_exact(&mut head).await {
            fail(e);
        }
        let len = u32::from_be_bytes(head) as usize;
        buf.resize(len, 0);
        if let Err(e) = r.read_exact(buf).await {
            fail(e);
        }
        if ctx.text && !simdutf::validate_utf8(buf) {
            fail("echo is not UTF-8");
        }
        ctx.check(len, ctx.text);
    }

    /// One message and its echo; the flush is a no-op on TCP.
    async fn round_trip<S>(ctx: &Ctx, s: &mut BufReader<S>, f: &[u8], buf: &mut Vec<u8>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if let Err(e) = s.get_mut().write_all(f).await {
            fail(e);
        }
        if let Err(e) = s.get_mut().flush().await {
            fail(e);
        }
        read_echo(ctx, s, buf).await;
    }

    pub(super) async fn rtt(ctx: Arc<Ctx>) -> Sample {
        let mut s = BufReader::with_capacity(64 << 10, tcp(ctx.tcp).await);
        let f = frame(&ctx);
        let mut buf = Vec::new();
        let mut rec = crate::util::LatencyRecorder::new(ctx.warmup, ctx.secs);
        loop {
            let t = Instant::now();
            round_trip(&ctx, &mut s, &f, &mut buf).await;
            if !rec.record(t) {
                break;
            }
        }
        rec.finish(ctx.size)
    }

    pub(super) async fn stream(ctx: Arc<Ctx>, window: usize) -> Sample {
        if ctx.tls {
            let (r, w) = tokio::io::split(ctx.tls_connect(ctx.raw_addr()).await);
            stream_on(ctx, r, w, window).await
        } else {
            let (r, w) = tcp(ctx.tcp).await.into_split();
            stream_on(ctx, r, w, window).await
        }
    }

    async fn stream_on<R, W>(ctx: Arc<Ctx>, r: R, w: W, window: usize) -> Sample
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let mut w = tokio::io::BufWriter::with_capacity(64 << 10, w);
        let received = Arc::new(AtomicU64::new(0));
        let room = Arc::new(Semaphore::new(window));
        let (sem, f) = (room.clone(), frame(&ctx));
        tokio::spawn(async move {
            loop {
                let n = take_room(&sem).await;
                for _ in 0..n {
                    if let Err(e) = w.write_all(&f).await {
                        fail(e);
                    }
                }
                if let Err(e) = w.flush().await {
                    fail(e);
                }
            }
        });
        let (c, cx) = (received.clone(), ctx.clone());
        tokio::spawn(async move {
            let mut r = BufReader::with_capacity(64 << 10, r);
            let mut buf = Vec::new();
            loop {
                read_echo(&cx, &mut r, &mut buf).await;
                c.fetch_add(1, Ordering::Relaxed);
                room.add_permits(1);
            }
        });
        measure_window(&ctx, &received).await
    }

    pub(super) async fn conn_job(ctx: Arc<Ctx>, rtts: usize, done: Arc<Done>) {
        if ctx.tls {
            let s = ctx.tls_connect(ctx.raw_addr()).await;
            conn_on(ctx, s, rtts, done).await
        } else {
            let s = tcp(ctx.tcp).await;
            conn_on(ctx, s, rtts, done).await
        }
    }

    async fn conn_on<S>(ctx: Arc<Ctx>, s: S, rtts: usize, done: Arc<Done>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // Small messages: a small buffer, so RSS shows the floor.
        let mut s = BufReader::with_capacity(4 << 10, s);
        let f = frame(&ctx);
        let mut buf = Vec::new();
        for _ in 0..rtts {
            round_trip(&ctx, &mut s, &f, &mut buf).await;
        }
        done.one();
        std::future::pending::<()>().await;
        drop(s);
    }

    /// Connect (TCP, or TCP and TLS), then shut down (TLS: close_notify)
    /// and read until the server's end.
    pub(super) async fn setup(ctx: Arc<Ctx>) {
        if ctx.tls {
            close(ctx.tls_connect(ctx.raw_addr()).await).await
        } else {
            close(tcp(ctx.tcp).await).await
        }
    }

    async fn close<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
        if let Err(e) = s.shutdown().await {
            fail(e);
        }
        let mut buf = [0u8; 64];
        match s.read(&mut buf).await {
            Ok(0) => {}
            Ok(n) => fail(format_args!("{n} unexpected bytes")),
            Err(e) => fail(e),
        }
    }
}
