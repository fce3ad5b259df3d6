//! Interop with the software users run, each scenario against real servers
//! that it starts and stops itself: Node `ws` 8, the Python stacks
//! (`websockets`, `aiohttp`, Starlette under `uvicorn` with each of its
//! WebSocket implementations), nginx as a TLS terminator, squid and
//! tinyproxy as HTTP CONNECT proxies, dante as a SOCKS5 proxy, and a lossy
//! link between network namespaces.
//!
//! Every test here is ignored: `.ci/run` installs the software (Debian
//! packages, `ws` from npm into `tests/interop/node_modules`, the PyPI
//! packages) and runs them with `--ignored`. A test whose software is
//! missing fails and names what to install.

#[path = "support/tls.rs"]
mod tls_support;
#[path = "support/wait.rs"]
mod wait;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use unisocket::{
    connect_socket, CloseOptions, ConnectOptions, Data, ErrorKind, PingPongEvent, ReadyState,
    ReconnectPolicy, SocketTask,
};

/// Where the helper scripts live (and `node_modules` with `ws`).
const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop");

/// How long a bounded wait lasts before the test fails.
const WAIT: Duration = Duration::from_secs(30);

/// The default `max_message_size`.
const LIMIT: usize = 64 << 20;

// ---------------------------------------------------------------------------
// Processes, ports and files
// ---------------------------------------------------------------------------

/// A directory of its own for one scenario's configs, logs and keys;
/// removed on drop. World-readable, for daemons that drop privileges.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "unisocket-interop-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        set_mode(&dir, 0o777);
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes `name` (mode 0644) and returns its path.
    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).unwrap();
        set_mode(&path, 0o644);
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The path of `program`, or a failure that says what to install.
fn require(program: &str, install: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    for dir in path.split(':').chain(["/usr/sbin", "/sbin", "/usr/bin"]) {
        let candidate = Path::new(dir).join(program);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "`{program}` is not installed; the interop suite needs it ({install}; .ci/run installs it)"
    );
}

/// A child process (server or daemon), killed and reaped on drop.
struct Daemon {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts `cmd` with stdin piped (the scripts exit when it closes) and
    /// stdout and stderr to `log`.
    fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Daemon {
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = cmd
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Daemon {
            name: name.to_owned(),
            child,
            log,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails the test if the process has exited, with its log.
    fn check_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited ({status}); its output:\n{}",
                self.name,
                self.log_text()
            );
        }
    }

    /// Waits until something accepts TCP connections on 127.0.0.1:`port`.
    fn wait_port(&mut self, port: u16) {
        self.wait_addr(&format!("127.0.0.1:{port}"));
    }

    fn wait_addr(&mut self, addr: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            self.check_alive();
            if TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(200))
                .is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} does not listen on {addr}; its output:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// Waits for the port that a helper script writes to `port_file`.
    fn wait_port_file(&mut self, port_file: &Path) -> u16 {
        let deadline = Instant::now() + WAIT;
        loop {
            self.check_alive();
            if let Some(port) = std::fs::read_to_string(port_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                return port;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not start; its output:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("--- output of {} ---\n{}", self.name, self.log_text());
        }
    }
}

/// A port that was free a moment ago (for daemons that take their port
/// from a config file).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A WebSocket peer started from one of the helper scripts.
struct Peer {
    port: u16,
    daemon: Daemon,
    _dir: TempDir,
}

impl Peer {
    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/", self.port)
    }
}

/// Node `ws` (`tests/interop/ws_server.js`) with `args`, in a directory of
/// its own; `wrap` runs it under another command (e.g. `ip netns exec`).
fn node_ws_in(wrap: &[&str], args: &[&str]) -> Peer {
    let node = require("node", "Debian package nodejs");
    assert!(
        Path::new(DIR).join("node_modules/ws").is_dir(),
        "the npm package `ws` is not installed: npm install --prefix {DIR} --no-save ws@8"
    );
    let dir = TempDir::new("node");
    let port_file = dir.path("port");
    let mut cmd = if wrap.is_empty() {
        Command::new(&node)
    } else {
        let mut c = Command::new(wrap[0]);
        c.args(&wrap[1..]).arg(&node);
        c
    };
    cmd.arg(Path::new(DIR).join("ws_server.js"))
        .arg(&port_file)
        .args(args);
    let mut daemon = Daemon::spawn("node ws", cmd, dir.path("log"));
    let port = daemon.wait_port_file(&port_file);
    Peer {
        port,
        daemon,
        _dir: dir,
    }
}

fn start_node(args: &[&str]) -> Peer {
    node_ws_in(&[], args)
}

/// A Python stack (`tests/interop/py_server.py STACK`).
fn python(stack: &str, deflate: bool) -> Peer {
    let python = require("python3", "Debian package python3");
    let dir = TempDir::new("py");
    let port_file = dir.path("port");
    let mut cmd = Command::new(python);
    cmd.arg(Path::new(DIR).join("py_server.py"))
        .arg(&port_file)
        .arg(stack);
    if deflate {
        cmd.arg("--deflate");
    }
    let mut daemon = Daemon::spawn(&format!("python {stack}"), cmd, dir.path("log"));
    let port = daemon.wait_port_file(&port_file);
    Peer {
        port,
        daemon,
        _dir: dir,
    }
}

// ---------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------

/// `support`'s bounded wait, with this file's bound.
async fn bounded<F: std::future::IntoFuture>(what: &str, fut: F) -> F::Output {
    wait::bounded_for(WAIT, what, fut).await
}

/// `support`'s polling wait, with this file's bound.
async fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    wait::wait_until_for(WAIT, what, cond).await;
}

/// Connects, and returns the task with the server's handshake headers
/// (`Sec-WebSocket-Extensions`, lower-cased, or "").
async fn open(options: ConnectOptions) -> (SocketTask, String) {
    let task = connect_socket(options.timeout(Duration::from_secs(20)));
    let (tx, rx) = mpsc::channel();
    task.on_open(move |ev| {
        let _ = tx.send(
            ev.header
                .get("sec-websocket-extensions")
                .unwrap_or("")
                .to_ascii_lowercase(),
        );
    });
    if let Err(e) = bounded("the opening handshake", task.opened()).await {
        panic!("connect failed: {e}");
    }
    let extensions = rx.recv_timeout(WAIT).expect("on_open ran");
    (task, extensions)
}

/// Connects and expects the connection to fail; checks that the call ended
/// in `success` alone (the request was under way) and that the failure
/// reached `on_error` with the error's errMsg, then `on_close` with 1006
/// (SPEC 3), in that order, once each.
async fn refused(options: ConnectOptions) -> unisocket::SocketError {
    let log: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let (a, b, c) = (log.clone(), log.clone(), log.clone());
    let options = options
        .timeout(Duration::from_secs(20))
        .success(move |ok| a.lock().unwrap().push(format!("success:{}", ok.err_msg)))
        .fail(move |e| b.lock().unwrap().push(format!("fail:{}", e.err_msg())))
        .complete(move |r| c.lock().unwrap().push(format!("complete:{}", r.is_ok())));
    let task = connect_socket(options);
    let l = log.clone();
    task.on_open(move |_| l.lock().unwrap().push("open".to_owned()));
    let l = log.clone();
    task.on_error(move |ev| l.lock().unwrap().push(format!("error:{}", ev.err_msg)));
    let l = log.clone();
    task.on_close(move |ev| {
        l.lock()
            .unwrap()
            .push(format!("close:{}:{}", ev.code, ev.was_clean));
    });
    let err = match bounded("the connection to fail", task.opened()).await {
        Ok(()) => panic!("connected, but a failure was expected"),
        Err(e) => e,
    };
    // `opened()` returns once the close listeners ran.
    assert_eq!(
        *log.lock().unwrap(),
        [
            "success:connectSocket:ok".to_owned(),
            "complete:true".to_owned(),
            format!("error:{}", err.err_msg()),
            "close:1006:false".to_owned(),
        ],
        "{err}"
    );
    err
}

/// `len` pseudo-random bytes (incompressible), or as many letters for
/// text: a prefix of one buffer made once per process.
fn payload(len: usize, text: bool) -> Data {
    static BYTES: std::sync::OnceLock<(Bytes, Bytes)> = std::sync::OnceLock::new();
    let (binary, letters) = BYTES.get_or_init(|| {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut out = vec![0u8; LIMIT];
        for chunk in out.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        let letters: Vec<u8> = out.iter().map(|b| b'a' + b % 26).collect();
        (Bytes::from(out), Bytes::from(letters))
    });
    if text {
        Data::from(String::from_utf8(letters[..len].to_vec()).unwrap())
    } else {
        Data::from(binary.slice(..len))
    }
}

/// Sends each size as text and as binary and checks the echo.
async fn echo_sizes(task: &SocketTask, sizes: &[usize]) {
    for &len in sizes {
        for text in [true, false] {
            let msg = payload(len, text);
            let t1 = Instant::now();
            let what = format!("the echo of {len} bytes ({})", kind(text));
            bounded(&what, task.send(msg.clone()))
                .await
                .unwrap_or_else(|e| panic!("send of {len} bytes ({}): {e}", kind(text)));
            let Some(back) = bounded(&what, task.recv()).await else {
                let ev = bounded("closed", task.closed()).await;
                panic!("closed instead of {what}: {ev:?}");
            };
            // Not assert_eq: a failure would print megabytes.
            assert!(back == msg, "{what} differs (got {} bytes)", back.len());
            if len >= 1 << 20 {
                eprintln!("{what}: {:?}", t1.elapsed());
            }
        }
    }
}

fn kind(text: bool) -> &'static str {
    if text {
        "text"
    } else {
        "binary"
    }
}

const SIZES: &[usize] = &[0, 125, 126, 65_535, 65_536, 1 << 20, 20 << 20];

/// What a stack is checked for.
struct Checks {
    /// Echo sizes (beyond `SIZES`).
    extra_sizes: &'static [usize],
    /// The server can send pings.
    pings: bool,
}

/// Echo of every size in text and binary with and without
/// permessage-deflate, server-initiated closes, server pings, subprotocol.
async fn stack_suite(start: impl Fn(bool) -> Peer, checks: Checks) {
    for deflate in [false, true] {
        let peer = start(deflate);
        let (task, extensions) = open(
            ConnectOptions::new(peer.url())
                .protocols(["v9.unknown", "chat"])
                .per_message_deflate(true),
        )
        .await;
        assert_eq!(
            extensions.contains("permessage-deflate"),
            deflate,
            "negotiated extensions: {extensions:?}"
        );
        assert_eq!(task.protocol(), "chat", "subprotocol choice");
        let mut sizes = SIZES.to_vec();
        sizes.extend_from_slice(checks.extra_sizes);
        echo_sizes(&task, &sizes).await;

        if checks.pings {
            let (tx, rx) = mpsc::channel();
            task.on_ping_pong(move |ev| {
                let _ = tx.send(ev.clone());
            });
            bounded("send", task.send("ping hello ✓")).await.unwrap();
            let reply = bounded("the answer to ping", task.recv()).await.unwrap();
            assert_eq!(reply.as_text(), Some("pinged hello ✓"));
            let ev = rx.recv_timeout(WAIT).expect("the server's ping");
            assert_eq!(ev, PingPongEvent::Ping(Bytes::from("hello ✓")));
        }

        // A server-initiated close with a code and a reason.
        let (code, reason) = if deflate {
            (4001, "custom reason ✓")
        } else {
            (1001, "going away")
        };
        bounded("send", task.send(format!("close {code} {reason}")))
            .await
            .unwrap();
        let ev = bounded("the server's close", task.closed()).await;
        assert_eq!(
            (ev.code, ev.reason.as_str(), ev.was_clean),
            (code, reason, true),
            "{}",
            peer.daemon.log_text()
        );

        // Without a subprotocol offered, none is chosen.
        let (task, _) = open(ConnectOptions::new(peer.url())).await;
        assert_eq!(task.protocol(), "");
        echo_sizes(&task, &[3]).await;
        bounded("close", task.close(CloseOptions::default().code(1000)))
            .await
            .unwrap();
        let ev = bounded("closed", task.closed()).await;
        assert_eq!((ev.code, ev.was_clean), (1000, true));
    }
}

// ---------------------------------------------------------------------------
// (1) Node ws and the Python stacks
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs node and npm ws: run by .ci/run"]
async fn node_ws() {
    stack_suite(
        |deflate| start_node(if deflate { &["--deflate"] } else { &[] }),
        Checks {
            extra_sizes: &[LIMIT],
            pings: true,
        },
    )
    .await;
}

/// A 64 MiB incompressible message, with permessage-deflate, to Node `ws`
/// with `maxPayload` 65 MiB (a peer whose frame limit is the message limit
/// plus 1 MiB): it goes uncompressed, no larger than it is.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs npm ws: run by .ci/run"]
async fn node_ws_64mib_incompressible_compressed_within_peer_limit() {
    let peer = start_node(&["--deflate", "--max-payload", &(65usize << 20).to_string()]);
    let (task, extensions) = open(ConnectOptions::new(peer.url()).per_message_deflate(true)).await;
    assert!(extensions.contains("permessage-deflate"), "{extensions:?}");
    echo_sizes(&task, &[LIMIT]).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs PyPI websockets: run by .ci/run"]
async fn python_websockets() {
    stack_suite(
        |deflate| python("websockets", deflate),
        Checks {
            extra_sizes: &[],
            pings: true,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs PyPI aiohttp: run by .ci/run"]
async fn python_aiohttp() {
    stack_suite(
        |deflate| python("aiohttp", deflate),
        Checks {
            extra_sizes: &[],
            pings: true,
        },
    )
    .await;
}

// ASGI has no server ping, so the Starlette app cannot send one.

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs PyPI starlette, uvicorn, websockets: run by .ci/run"]
async fn python_starlette_uvicorn_websockets() {
    stack_suite(
        |deflate| python("uvicorn-websockets", deflate),
        Checks {
            extra_sizes: &[],
            pings: false,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs PyPI starlette, uvicorn, websockets: run by .ci/run"]
async fn python_starlette_uvicorn_websockets_sansio() {
    stack_suite(
        |deflate| python("uvicorn-websockets-sansio", deflate),
        Checks {
            extra_sizes: &[],
            pings: false,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs PyPI starlette, uvicorn, wsproto: run by .ci/run"]
async fn python_starlette_uvicorn_wsproto() {
    stack_suite(
        |deflate| python("uvicorn-wsproto", deflate),
        Checks {
            extra_sizes: &[],
            pings: false,
        },
    )
    .await;
}

// ---------------------------------------------------------------------------
// (2) nginx terminating TLS in front of Node ws
// ---------------------------------------------------------------------------

/// nginx in the foreground with a private CA's certificate for
/// `localhost`, in front of a Node `ws` backend on `backend`:
/// - `tls`: `/` proxies WebSocket upgrades, `/idle` with 1 s read and send
///   timeouts, `/forbidden` answers 403, `/down` proxies to a closed port
///   (502), and `/unauthorized`, `/missing`, `/moved`, `/upgrade-required`
///   answer 401, 404, 301, 426; also on `[::1]`;
/// - `tls12`: `/` with TLS 1.2 only;
/// - `mtls`: the same `/`, requiring a client certificate from the CA.
struct Nginx {
    tls: u16,
    mtls: u16,
    tls12: u16,
    ca_file: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    daemon: Daemon,
    dir: TempDir,
}

fn start_nginx(backend: u16) -> Nginx {
    let nginx = require("nginx", "Debian package nginx");
    let dir = TempDir::new("nginx");
    let ca = tls_support::TestCa::new("unisocket interop CA");
    let server = ca.server_cert(&["localhost", "127.0.0.1", "::1"]);
    let client = ca.client_cert("interop-client");
    let ca_file = dir.write("ca.pem", ca.cert_pem());
    dir.write("server.pem", &server.cert_pem);
    dir.write("server.key", &server.key_pem);
    let client_cert = dir.write("client.pem", &client.cert_pem);
    let client_key = dir.write("client.key", &client.key_pem);
    let (tls, mtls, tls12, closed) = (free_port(), free_port(), free_port(), free_port());
    let d = dir.0.display();
    let upgrade = "proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;";
    let conf = format!(
        "daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    ssl_certificate {d}/server.pem;
    ssl_certificate_key {d}/server.key;
    server {{
        listen 127.0.0.1:{tls} ssl;
        listen [::1]:{tls} ssl;
        location / {{
            proxy_pass http://127.0.0.1:{backend};
            {upgrade}
            proxy_read_timeout 1h;
        }}
        location /idle {{
            proxy_pass http://127.0.0.1:{backend};
            {upgrade}
            proxy_read_timeout 1s;
            proxy_send_timeout 1s;
        }}
        location /forbidden {{ return 403; }}
        location /unauthorized {{ return 401; }}
        location /missing {{ return 404; }}
        location /moved {{ return 301 https://localhost:{tls}/; }}
        location /upgrade-required {{ return 426; }}
        location /down {{
            proxy_pass http://127.0.0.1:{closed};
            {upgrade}
        }}
    }}
    server {{
        listen 127.0.0.1:{tls12} ssl;
        ssl_protocols TLSv1.2;
        location / {{
            proxy_pass http://127.0.0.1:{backend};
            {upgrade}
        }}
    }}
    server {{
        listen 127.0.0.1:{mtls} ssl;
        ssl_client_certificate {d}/ca.pem;
        ssl_verify_client on;
        location / {{
            proxy_pass http://127.0.0.1:{backend};
            {upgrade}
        }}
    }}
}}
"
    );
    let conf_file = dir.write("nginx.conf", conf);
    let mut cmd = Command::new(nginx);
    cmd.arg("-p")
        .arg(&dir.0)
        .arg("-c")
        .arg(&conf_file)
        .arg("-e")
        .arg(dir.path("error.log"));
    let mut daemon = Daemon::spawn("nginx", cmd, dir.path("stderr"));
    daemon.wait_port(tls);
    daemon.wait_port(mtls);
    daemon.wait_port(tls12);
    daemon.wait_addr(&format!("[::1]:{tls}"));
    Nginx {
        tls,
        mtls,
        tls12,
        ca_file,
        client_cert,
        client_key,
        daemon,
        dir,
    }
}

impl Nginx {
    fn url(&self, path: &str) -> String {
        format!("wss://localhost:{}{path}", self.tls)
    }

    fn options(&self, path: &str) -> ConnectOptions {
        ConnectOptions::new(self.url(path)).ca_certificates_file(&self.ca_file)
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path("error.log")).unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs nginx, node and npm ws: run by .ci/run"]
async fn nginx_tls_private_ca_mutual_tls_and_error_answers() {
    let backend = start_node(&["--deflate"]);
    let nginx = start_nginx(backend.port);

    // wss through nginx, trusting the private CA, with compression.
    let (task, extensions) = open(nginx.options("/").per_message_deflate(true)).await;
    assert!(extensions.contains("permessage-deflate"), "{extensions:?}");
    echo_sizes(&task, &[0, 126, 65_536, 1 << 20]).await;
    bounded("close", task.close(CloseOptions::default().code(1000)))
        .await
        .unwrap();
    assert_eq!(bounded("closed", task.closed()).await.code, 1000);

    // IPv6, by address (an IP SAN), and TLS 1.2 only.
    for url in [
        format!("wss://[::1]:{}/", nginx.tls),
        format!("wss://127.0.0.1:{}/", nginx.tls12),
    ] {
        works(ConnectOptions::new(url).ca_certificates_file(&nginx.ca_file)).await;
    }

    // Without the CA: a TLS error.
    let err = refused(ConnectOptions::new(nginx.url("/"))).await;
    assert_eq!(err.kind(), ErrorKind::Tls, "{err}");

    // nginx's own answers: the status, as a handshake error.
    for (path, status) in [
        ("/forbidden", 403),
        ("/down", 502),
        ("/unauthorized", 401),
        ("/missing", 404),
        ("/moved", 301),
        ("/upgrade-required", 426),
    ] {
        let err = refused(nginx.options(path)).await;
        assert_eq!(err.kind(), ErrorKind::Handshake, "{path}: {err}");
        assert_eq!(err.http_status(), Some(status), "{path}: {err}");
    }

    // Mutual TLS: without a client certificate nginx answers 400.
    let mtls = format!("wss://localhost:{}/", nginx.mtls);
    let err = refused(ConnectOptions::new(&mtls).ca_certificates_file(&nginx.ca_file)).await;
    assert_eq!(err.kind(), ErrorKind::Handshake, "{err}");
    assert_eq!(err.http_status(), Some(400), "{err}");
    let (task, _) = open(
        ConnectOptions::new(&mtls)
            .ca_certificates_file(&nginx.ca_file)
            .client_certificate_files(&nginx.client_cert, &nginx.client_key),
    )
    .await;
    echo_sizes(&task, &[5, 70_000]).await;
    bounded("close", task.close(CloseOptions::default().code(1000)))
        .await
        .unwrap();
    assert_eq!(bounded("closed", task.closed()).await.code, 1000);
    drop(nginx.daemon);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs nginx, node and npm ws: run by .ci/run"]
async fn nginx_idle_timeout_with_and_without_heartbeat() {
    let backend = start_node(&[]);
    let nginx = start_nginx(backend.port);

    // Idle: nginx closes the connection after its 1 s read timeout.
    let (idle, _) = open(nginx.options("/idle")).await;
    let ev = bounded("nginx to close an idle connection", idle.closed()).await;
    assert!(!ev.was_clean, "{ev:?}");
    assert_eq!(ev.code, 1006, "{ev:?}");

    // With a heartbeat every 300 ms the pongs keep it busy: after several
    // of nginx's timeouts it is still open and works.
    let (task, _) = open(
        nginx
            .options("/idle")
            .heartbeat(Duration::from_millis(300), Duration::from_secs(5)),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        task.ready_state(),
        ReadyState::Open,
        "{}",
        nginx.error_log()
    );
    echo_sizes(&task, &[10]).await;
    bounded("close", task.close(CloseOptions::default().code(1000)))
        .await
        .unwrap();
    assert_eq!(bounded("closed", task.closed()).await.code, 1000);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs nginx, node and npm ws: run by .ci/run"]
async fn nginx_backend_restart_with_reconnect() {
    let mut backend = start_node(&[]);
    let port = backend.port;
    let nginx = start_nginx(port);
    let opened = Arc::new(AtomicUsize::new(0));
    let reconnecting = Arc::new(AtomicUsize::new(0));
    let task = connect_socket(
        nginx
            .options("/")
            .timeout(Duration::from_secs(10))
            .reconnect(
                ReconnectPolicy::default()
                    .min_delay(Duration::from_millis(100))
                    .max_delay(Duration::from_millis(500))
                    .max_attempts(None),
            ),
    );
    let o = opened.clone();
    task.on_open(move |_| {
        o.fetch_add(1, Ordering::SeqCst);
    });
    let r = reconnecting.clone();
    task.on_reconnecting(move |_| {
        r.fetch_add(1, Ordering::SeqCst);
    });
    bounded("open", task.opened()).await.unwrap();
    echo_sizes(&task, &[4]).await;

    // The backend goes away: nginx drops the connection, and answers 502
    // to the attempts while it is down.
    backend.daemon.stop();
    wait_until("a reconnection attempt", || {
        reconnecting.load(Ordering::SeqCst) >= 2
    })
    .await;
    assert_eq!(opened.load(Ordering::SeqCst), 1);

    // Back on the same port: the task reopens by itself.
    let _backend = start_node(&["--port", &port.to_string()]);
    wait_until("the task to reopen", || opened.load(Ordering::SeqCst) == 2).await;
    echo_sizes(&task, &[4, 100_000]).await;
    bounded("close", task.close(CloseOptions::default().code(1000)))
        .await
        .unwrap();
    assert_eq!(bounded("closed", task.closed()).await.code, 1000);
    drop(nginx);
}

// ---------------------------------------------------------------------------
// (3) HTTP CONNECT through squid and tinyproxy, (4) SOCKS5 through dante
// ---------------------------------------------------------------------------

const PROXY_USER: &str = "interop";
const PROXY_PASSWORD: &str = "s3cret-pw";

/// What a proxy is put in front of: a plain and a TLS Node `ws` server.
struct Targets {
    plain: Peer,
    tls: Peer,
    ca_file: PathBuf,
    _dir: TempDir,
}

fn start_targets() -> Targets {
    let dir = TempDir::new("targets");
    let ca = tls_support::TestCa::new("unisocket interop CA");
    let id = ca.server_cert(&["localhost", "127.0.0.1"]);
    let ca_file = dir.write("ca.pem", ca.cert_pem());
    let cert = dir.write("cert.pem", &id.cert_pem);
    let key = dir.write("key.pem", &id.key_pem);
    let tls = start_node(&["--tls", cert.to_str().unwrap(), key.to_str().unwrap()]);
    Targets {
        plain: start_node(&[]),
        tls,
        ca_file,
        _dir: dir,
    }
}

impl Targets {
    /// `ws://HOST:PORT/` and `wss://HOST:PORT/` (with the CA to trust).
    fn urls(&self, host: &str) -> [(String, Option<&Path>); 2] {
        [
            (format!("ws://{host}:{}/", self.plain.port), None),
            (
                format!("wss://{host}:{}/", self.tls.port),
                Some(self.ca_file.as_path()),
            ),
        ]
    }
}

fn with_ca(options: ConnectOptions, ca: Option<&Path>) -> ConnectOptions {
    match ca {
        Some(ca) => options.ca_certificates_file(ca),
        None => options,
    }
}

/// Opens, echoes and closes: the connection works.
async fn works(options: ConnectOptions) {
    let (task, _) = open(options).await;
    echo_sizes(&task, &[7, 200_000]).await;
    bounded("close", task.close(CloseOptions::default().code(1000)))
        .await
        .unwrap();
    assert_eq!(bounded("closed", task.closed()).await.code, 1000);
}

/// Fails with `ErrorKind::Proxy` and, for an HTTP proxy, its status.
async fn proxy_refuses(options: ConnectOptions, status: Option<u16>) {
    let err = refused(options).await;
    assert_eq!(err.kind(), ErrorKind::Proxy, "{err}");
    assert_eq!(err.http_status(), status, "{err}");
}

/// Runs the test `proxy_env_child` in a child process with `env` (the
/// proxy variables are process-wide): it connects to `url` and expects
/// `expect` ("open", or the proxy's refusal status, or "refused" for a
/// refusal without one) with the proxy from `source` ("direct" for none).
fn run_env_child(url: &str, ca: Option<&Path>, source: &str, expect: &str, env: &[(&str, &str)]) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["proxy_env_child", "--exact", "--ignored", "--nocapture"]);
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("INTEROP_CHILD_URL", url)
        .env("INTEROP_CHILD_SOURCE", source)
        .env("INTEROP_CHILD_EXPECT", expect)
        .envs(env.iter().copied());
    if let Some(ca) = ca {
        cmd.env("INTEROP_CHILD_CA", ca);
    }
    // Its libtest chatter is of no interest; a failure is on stderr.
    let status = cmd
        .stdout(Stdio::null())
        .status()
        .expect("run the child test");
    assert!(
        status.success(),
        "the child for {url} with {env:?} (expecting {expect} via {source}) failed: {status}"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "run in a child process by the proxy tests, with the proxy variables set"]
async fn proxy_env_child() {
    let Ok(url) = std::env::var("INTEROP_CHILD_URL") else {
        return; // not a child
    };
    let ca = std::env::var_os("INTEROP_CHILD_CA").map(PathBuf::from);
    let options = with_ca(ConnectOptions::new(url), ca.as_deref());
    let source = match options.proxy_in_use().unwrap() {
        Some(p) => {
            assert!(!p.url.contains(PROXY_PASSWORD), "{}", p.url);
            p.source.to_string()
        }
        None => "direct".to_owned(),
    };
    assert_eq!(source, std::env::var("INTEROP_CHILD_SOURCE").unwrap());
    match std::env::var("INTEROP_CHILD_EXPECT").unwrap().as_str() {
        "open" => works(options).await,
        "refused" => proxy_refuses(options, None).await,
        status => proxy_refuses(options, Some(status.parse().unwrap())).await,
    }
}

/// Which HTTP proxy.
#[derive(Clone, Copy, PartialEq)]
enum HttpProxy {
    Squid,
    Tinyproxy,
}

/// squid or tinyproxy in the foreground on a port of its own, with Basic
/// auth (`PROXY_USER`/`PROXY_PASSWORD`) or without; CONNECT to `blocked`
/// is forbidden (403).
struct ProxyDaemon {
    port: u16,
    _daemon: Daemon,
    _dir: TempDir,
}

fn start_http_proxy(which: HttpProxy, auth: bool, allowed: &[u16], blocked: u16) -> ProxyDaemon {
    let dir = TempDir::new("proxy");
    let port = free_port();
    let d = dir.0.display();
    let cmd = match which {
        HttpProxy::Squid => {
            let squid = require("squid", "Debian package squid");
            let mut conf = format!(
                "http_port 127.0.0.1:{port}
pid_filename {d}/squid.pid
cache_log {d}/cache.log
access_log none
cache_store_log none
cache deny all
cache_mem 8 MB
coredump_dir {d}
netdb_filename none
pinger_enable off
shutdown_lifetime 0 seconds
acl blocked port {blocked}
http_access deny blocked
"
            );
            if auth {
                let htpasswd = require("htpasswd", "Debian package apache2-utils");
                let file = dir.path("htpasswd");
                let status = Command::new(htpasswd)
                    .arg("-bc")
                    .arg(&file)
                    .args([PROXY_USER, PROXY_PASSWORD])
                    .stderr(Stdio::null())
                    .status()
                    .unwrap();
                assert!(status.success(), "htpasswd failed");
                set_mode(&file, 0o644);
                conf.push_str(&format!(
                    "auth_param basic program /usr/lib/squid/basic_ncsa_auth {d}/htpasswd
auth_param basic realm unisocket
acl authed proxy_auth REQUIRED
http_access allow authed
http_access deny all
"
                ));
            } else {
                conf.push_str("http_access allow all\n");
            }
            let file = dir.write("squid.conf", conf);
            let mut cmd = Command::new(squid);
            cmd.arg("-N").arg("-f").arg(file);
            cmd
        }
        HttpProxy::Tinyproxy => {
            let tinyproxy = require("tinyproxy", "Debian package tinyproxy");
            let mut conf = format!(
                "Port {port}
Listen 127.0.0.1
Timeout 60
MaxClients 64
Allow 127.0.0.1
LogLevel Info
PidFile \"{d}/tinyproxy.pid\"
"
            );
            for port in allowed {
                conf.push_str(&format!("ConnectPort {port}\n"));
            }
            // As root it must be told whom to run as.
            conf.push_str("User nobody\nGroup nogroup\n");
            if auth {
                conf.push_str(&format!("BasicAuth {PROXY_USER} {PROXY_PASSWORD}\n"));
            }
            let file = dir.write("tinyproxy.conf", conf);
            let mut cmd = Command::new(tinyproxy);
            cmd.arg("-d").arg("-c").arg(file);
            cmd
        }
    };
    let name = match which {
        HttpProxy::Squid => "squid",
        HttpProxy::Tinyproxy => "tinyproxy",
    };
    let mut daemon = Daemon::spawn(name, cmd, dir.path("stderr"));
    daemon.wait_port(port);
    ProxyDaemon {
        port,
        _daemon: daemon,
        _dir: dir,
    }
}

async fn http_proxy_suite(which: HttpProxy) {
    let targets = start_targets();
    let blocked = free_port();
    // Nothing listens there.
    let closed = free_port();
    let allowed = [targets.plain.port, targets.tls.port, closed];
    let open_proxy = start_http_proxy(which, false, &allowed, blocked);
    let auth_proxy = start_http_proxy(which, true, &allowed, blocked);
    let plain = format!("http://127.0.0.1:{}", open_proxy.port);
    let authed = format!(
        "http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{}",
        auth_proxy.port
    );
    let wrong = format!("http://{PROXY_USER}:wrong@127.0.0.1:{}", auth_proxy.port);
    let anonymous = format!("http://127.0.0.1:{}", auth_proxy.port);
    // Without credentials both answer 407; with wrong ones tinyproxy 1.11
    // answers 401, squid 407.
    let denied = match which {
        HttpProxy::Squid => 407,
        HttpProxy::Tinyproxy => 401,
    };
    let denied_text = denied.to_string();

    for (url, ca) in targets.urls("127.0.0.1") {
        // The library option.
        works(with_ca(ConnectOptions::new(&url), ca).proxy(&plain)).await;
        works(with_ca(ConnectOptions::new(&url), ca).proxy(&authed)).await;
        proxy_refuses(
            with_ca(ConnectOptions::new(&url), ca).proxy(&wrong),
            Some(denied),
        )
        .await;
        proxy_refuses(
            with_ca(ConnectOptions::new(&url), ca).proxy(&anonymous),
            Some(407),
        )
        .await;

        // The environment.
        let var = if url.starts_with("wss:") {
            "HTTPS_PROXY"
        } else {
            "HTTP_PROXY"
        };
        run_env_child(&url, ca, var, "open", &[(var, authed.as_str())]);
        run_env_child(&url, ca, var, &denied_text, &[(var, wrong.as_str())]);
        run_env_child(&url, ca, "ALL_PROXY", "open", &[("ALL_PROXY", &authed)]);
        let lower = var.to_ascii_lowercase();
        let lower: &'static str = Box::leak(lower.into_boxed_str());
        run_env_child(&url, ca, lower, "open", &[(lower, plain.as_str())]);
        // NO_PROXY: straight to the server, the proxy is not asked.
        run_env_child(
            &url,
            ca,
            "direct",
            "open",
            &[
                (var, anonymous.as_str()),
                ("NO_PROXY", "localhost,127.0.0.1"),
            ],
        );
    }
    // A port the proxy forbids.
    let url = format!("ws://127.0.0.1:{blocked}/");
    proxy_refuses(ConnectOptions::new(&url).proxy(&plain), Some(403)).await;
    proxy_refuses(ConnectOptions::new(&url).proxy(&authed), Some(403)).await;
    // Nothing listens behind the proxy.
    let url = format!("ws://127.0.0.1:{closed}/");
    let status = match which {
        HttpProxy::Squid => 503,
        HttpProxy::Tinyproxy => 500,
    };
    proxy_refuses(ConnectOptions::new(&url).proxy(&plain), Some(status)).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs squid, apache2-utils, node and npm ws: run by .ci/run"]
async fn squid_connect_with_and_without_auth() {
    http_proxy_suite(HttpProxy::Squid).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs tinyproxy, node and npm ws: run by .ci/run"]
async fn tinyproxy_connect_with_and_without_auth() {
    http_proxy_suite(HttpProxy::Tinyproxy).await;
}

/// The system user that dante's `username` method checks (it reads the
/// password database): made once, with `PROXY_PASSWORD`.
fn socks_user() {
    let exists = Command::new("id")
        .arg(PROXY_USER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !exists {
        let useradd = require("useradd", "Debian package passwd");
        let status = Command::new(useradd)
            .args([
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                PROXY_USER,
            ])
            .status()
            .unwrap();
        assert!(
            status.success(),
            "useradd {PROXY_USER} failed (dante's username method needs a system user; run as root)"
        );
    }
    let mut chpasswd = Command::new(require("chpasswd", "Debian package passwd"))
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    writeln!(
        chpasswd.stdin.take().unwrap(),
        "{PROXY_USER}:{PROXY_PASSWORD}"
    )
    .unwrap();
    assert!(chpasswd.wait().unwrap().success(), "chpasswd failed");
}

/// danted in the foreground, without authentication or with the
/// `username` method.
fn start_dante(auth: bool) -> ProxyDaemon {
    let danted = require("danted", "Debian package dante-server");
    let dir = TempDir::new("dante");
    let port = free_port();
    let method = if auth { "username" } else { "none" };
    let conf = format!(
        "logoutput: stderr
internal: 127.0.0.1 port = {port}
external: 127.0.0.1
clientmethod: none
socksmethod: {method}
user.privileged: root
user.unprivileged: nobody
client pass {{
    from: 127.0.0.0/8 to: 0.0.0.0/0
}}
socks pass {{
    from: 127.0.0.0/8 to: 0.0.0.0/0
    command: connect
}}
"
    );
    let file = dir.write("danted.conf", conf);
    let mut cmd = Command::new(danted);
    cmd.arg("-f")
        .arg(file)
        .arg("-p")
        .arg(dir.path("danted.pid"))
        .args(["-N", "1"]);
    let mut daemon = Daemon::spawn("danted", cmd, dir.path("stderr"));
    daemon.wait_port(port);
    ProxyDaemon {
        port,
        _daemon: daemon,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs dante-server (danted), root for its system user, node and npm ws: run by .ci/run"]
async fn dante_socks5_and_socks5h() {
    socks_user();
    let targets = start_targets();
    let open_proxy = start_dante(false);
    let auth_proxy = start_dante(true);
    for scheme in ["socks5", "socks5h"] {
        let plain = format!("{scheme}://127.0.0.1:{}", open_proxy.port);
        let authed = format!(
            "{scheme}://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{}",
            auth_proxy.port
        );
        let wrong = format!(
            "{scheme}://{PROXY_USER}:wrong@127.0.0.1:{}",
            auth_proxy.port
        );
        // socks5h: the proxy resolves `localhost`.
        for (url, ca) in targets.urls("localhost") {
            works(with_ca(ConnectOptions::new(&url), ca).proxy(&plain)).await;
            works(with_ca(ConnectOptions::new(&url), ca).proxy(&authed)).await;
            proxy_refuses(with_ca(ConnectOptions::new(&url), ca).proxy(&wrong), None).await;
            // Without credentials the proxy accepts none of our methods.
            proxy_refuses(
                with_ca(ConnectOptions::new(&url), ca)
                    .proxy(format!("{scheme}://127.0.0.1:{}", auth_proxy.port)),
                None,
            )
            .await;
            run_env_child(&url, ca, "ALL_PROXY", "open", &[("ALL_PROXY", &authed)]);
            run_env_child(&url, ca, "ALL_PROXY", "refused", &[("ALL_PROXY", &wrong)]);
        }
    }
}

// ---------------------------------------------------------------------------
// (5) A lossy link between network namespaces
// ---------------------------------------------------------------------------

/// A network namespace joined to this one by a veth pair: this side
/// `10.231.N.1`, the namespace's `10.231.N.2`. Deleted on drop.
struct Netns {
    name: String,
    host_if: String,
    ns_if: String,
    server_ip: String,
}

fn ip(args: &[&str]) {
    let out = Command::new(require("ip", "Debian package iproute2"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip {args:?} failed (the lossy-link test needs root and network namespaces): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    fn new() -> Netns {
        let pid = std::process::id();
        let name = format!("usi{pid}");
        let net = pid % 250;
        let ns = Netns {
            host_if: format!("{name}a"),
            ns_if: format!("{name}b"),
            server_ip: format!("10.231.{net}.2"),
            name,
        };
        ip(&["netns", "add", &ns.name]);
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns.ns_if,
            "netns",
            &ns.name,
        ]);
        ip(&[
            "addr",
            "add",
            &format!("10.231.{net}.1/24"),
            "dev",
            &ns.host_if,
        ]);
        ip(&["link", "set", &ns.host_if, "up"]);
        ns.exec_ip(&["link", "set", "lo", "up"]);
        ns.exec_ip(&[
            "addr",
            "add",
            &format!("{}/24", ns.server_ip),
            "dev",
            &ns.ns_if,
        ]);
        ns.exec_ip(&["link", "set", &ns.ns_if, "up"]);
        ns
    }

    fn exec_ip(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.name, "ip"];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// `iptables ARGS` inside the namespace.
    fn iptables(&self, args: &[&str]) {
        let iptables = require("iptables", "Debian package iptables");
        let out = Command::new(require("ip", "Debian package iproute2"))
            .args(["netns", "exec", &self.name])
            .arg(iptables)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "iptables {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let ip = require("ip", "Debian package iproute2");
        let _ = Command::new(&ip)
            .args(["link", "del", &self.host_if])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new(&ip)
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root, network namespaces, iptables, iproute2, node and npm ws: run by .ci/run"]
async fn lossy_link_between_namespaces() {
    let ns = Netns::new();
    // This kernel has no sch_netem: no fixed delay. A token bucket of
    // 8 Mbit/s on our side of the link queues bulk sends (up to 100 ms)
    // instead, and iptables drops 5 % of the packets each way.
    let tc = require("tc", "Debian package iproute2");
    let status = Command::new(tc)
        .args(["qdisc", "add", "dev", &ns.host_if, "root", "tbf"])
        .args(["rate", "8mbit", "burst", "32kb", "latency", "100ms"])
        .status()
        .unwrap();
    assert!(status.success(), "tc qdisc add tbf failed");
    let loss = [
        "-m",
        "statistic",
        "--mode",
        "random",
        "--probability",
        "0.05",
    ];
    for chain in ["INPUT", "OUTPUT"] {
        let mut args = vec!["-A", chain, "-i", &ns.ns_if];
        if chain == "OUTPUT" {
            args[2] = "-o";
        }
        args.extend_from_slice(&loss);
        args.extend_from_slice(&["-j", "DROP"]);
        ns.iptables(&args);
    }
    let server = node_ws_in(
        &["ip", "netns", "exec", &ns.name],
        &["--host", &ns.server_ip, "--deflate"],
    );
    let url = format!("ws://{}:{}/", ns.server_ip, server.port);

    // Over 5 % loss every message arrives, in order (TCP retransmits).
    let (task, _) = open(ConnectOptions::new(&url).per_message_deflate(true)).await;
    for i in 0..50 {
        bounded("send", task.send(format!("message {i}")))
            .await
            .unwrap();
    }
    for i in 0..50 {
        let msg = bounded("an echo over the lossy link", task.recv())
            .await
            .unwrap();
        assert_eq!(msg.as_text(), Some(format!("message {i}").as_str()));
    }
    echo_sizes(&task, &[65_536, 256 << 10]).await;
    bounded("close", task.close(CloseOptions::default().code(1000)))
        .await
        .unwrap();
    assert_eq!(bounded("closed", task.closed()).await.code, 1000);
    ns.iptables(&["-F", "INPUT"]);
    ns.iptables(&["-F", "OUTPUT"]);

    // A dead link (everything dropped): the heartbeat notices, the task
    // tries again, and comes back once the link does.
    let opened = Arc::new(AtomicUsize::new(0));
    let reconnecting = Arc::new(AtomicUsize::new(0));
    let task = connect_socket(
        ConnectOptions::new(&url)
            .timeout(Duration::from_secs(2))
            .heartbeat(Duration::from_millis(300), Duration::from_millis(1500))
            .reconnect(
                ReconnectPolicy::default()
                    .min_delay(Duration::from_millis(100))
                    .max_delay(Duration::from_millis(500))
                    .max_attempts(None),
            ),
    );
    let o = opened.clone();
    task.on_open(move |_| {
        o.fetch_add(1, Ordering::SeqCst);
    });
    let r = reconnecting.clone();
    task.on_reconnecting(move |_| {
        r.fetch_add(1, Ordering::SeqCst);
    });
    bounded("open", task.opened()).await.unwrap();
    echo_sizes(&task, &[8]).await;
    ns.iptables(&["-I", "INPUT", "1", "-j", "DROP"]);
    wait_until("the heartbeat to notice the dead link", || {
        reconnecting.load(Ordering::SeqCst) >= 1
    })
    .await;
    assert_ne!(task.ready_state(), ReadyState::Open);
    ns.iptables(&["-D", "INPUT", "1"]);
    wait_until("the task to come back", || {
        opened.load(Ordering::SeqCst) == 2
    })
    .await;
    echo_sizes(&task, &[8, 100_000]).await;
    bounded("close", task.close(CloseOptions::default().code(1000)))
        .await
        .unwrap();
    assert_eq!(bounded("closed", task.closed()).await.code, 1000);
    drop(server);
}

// ---------------------------------------------------------------------------
// The uni-app program against Node ws
// ---------------------------------------------------------------------------

/// The uni-app program, against Node `ws`: the four global listeners
/// registered once at start-up; on each open it sends a greeting, and on
/// its echo asks the server to close (4000 "round N"); the global
/// `on_socket_close` connects again, three rounds in all. Run in a child
/// process: global listeners live as long as the process.
#[test]
#[ignore = "needs npm ws: run by .ci/run"]
fn uniapp_global_reconnect_pattern_against_node_ws() {
    let peer = start_node(&[]);
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "uniapp_pattern_child",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env("INTEROP_UNIAPP_URL", peer.url())
        .stdout(Stdio::null())
        .status()
        .expect("run the child test");
    assert!(status.success(), "the uni-app pattern failed: {status}");
}

#[test]
#[ignore = "run in a child process by uniapp_global_reconnect_pattern_against_node_ws"]
fn uniapp_pattern_child() {
    use std::sync::Mutex;
    use unisocket::{
        close_socket, current_socket, on_socket_close, on_socket_error, on_socket_message,
        on_socket_open, send_socket_message,
    };
    let Ok(url) = std::env::var("INTEROP_UNIAPP_URL") else {
        return; // not a child
    };
    // A plain `fn main` program: no runtime of its own, callbacks only.
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let round = Arc::new(AtomicUsize::new(1));
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let done_tx = Mutex::new(done_tx);
    let (l, r) = (log.clone(), round.clone());
    on_socket_open(move |ev| {
        l.lock().unwrap().push(format!("open:{}", ev.protocol));
        send_socket_message(format!("hello {}", r.load(Ordering::SeqCst)));
    });
    let (l, r) = (log.clone(), round.clone());
    on_socket_message(move |ev| {
        let text = ev.data.as_text().unwrap_or("<binary>").to_owned();
        l.lock().unwrap().push(format!("message:{text}"));
        send_socket_message(format!("close 4000 round {}", r.load(Ordering::SeqCst)));
    });
    let l = log.clone();
    on_socket_error(move |ev| l.lock().unwrap().push(format!("error:{}", ev.err_msg)));
    let (l, r, u) = (log.clone(), round.clone(), url.clone());
    on_socket_close(move |ev| {
        l.lock()
            .unwrap()
            .push(format!("close:{}:{}:{}", ev.code, ev.reason, ev.was_clean));
        if r.fetch_add(1, Ordering::SeqCst) < 3 {
            connect_socket(ConnectOptions::new(u.clone()));
        } else {
            let _ = done_tx.lock().unwrap().send(());
        }
    });
    connect_socket(ConnectOptions::new(url));
    done_rx
        .recv_timeout(WAIT)
        .expect("three rounds within the wait");
    let got = log.lock().unwrap().clone();
    let want: Vec<String> = (1..=3)
        .flat_map(|n| {
            [
                "open:".to_owned(),
                format!("message:hello {n}"),
                format!("close:4000:round {n}:true"),
            ]
        })
        .collect();
    assert_eq!(got, want);
    assert!(current_socket().is_none());
    // With no live task, the global functions fail at once.
    let err = send_socket_message("late").into_ready_err();
    assert_eq!(err, "sendSocketMessage:fail WebSocket is not connected");
    let err = close_socket(CloseOptions::default()).into_ready_err();
    assert_eq!(err, "closeSocket:fail WebSocket is not connected");
}

/// The errMsg of a `Completion` that failed at once.
trait ReadyErr {
    fn into_ready_err(self) -> String;
}

impl<T> ReadyErr for unisocket::Completion<T> {
    fn into_ready_err(mut self) -> String {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::future::Future::poll(std::pin::Pin::new(&mut self), &mut cx) {
            std::task::Poll::Ready(Err(e)) => e.err_msg().to_owned(),
            _ => panic!("the call did not fail at once"),
        }
    }
}
