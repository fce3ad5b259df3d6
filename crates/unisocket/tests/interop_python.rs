//! Interop with a third-party server: Python `websockets` (PyPI), over
//! loopback. Text, binary, compression on and off, and TLS.
//!
//! Needs `python3` with `websockets` installed; `.ci/run` installs it and
//! runs these tests with `--ignored`.

#[path = "support/tls.rs"]
mod tls_support;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use unisocket::{connect_socket, CloseOptions, ConnectOptions, Data, SocketTask};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../scripts/interop/websockets_server.py"
);

/// A running Python server; killed on drop.
struct PyServer {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("unisocket-interop-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start(tag: &str, args: &[&str], tls: Option<&tls_support::Identity>) -> PyServer {
    let dir = TempDir::new(tag);
    let port_file = dir.0.join("port");
    let mut cmd = Command::new("python3");
    cmd.arg(SCRIPT).arg(&port_file).args(args);
    if let Some(id) = tls {
        let cert = dir.0.join("cert.pem");
        let key = dir.0.join("key.pem");
        std::fs::write(&cert, &id.cert_pem).unwrap();
        std::fs::write(&key, &id.key_pem).unwrap();
        cmd.arg("--tls").arg(cert).arg(key);
    }
    let child = cmd
        .stdin(Stdio::piped())
        .spawn()
        .expect("python3 must be installed for the interop tests");
    // Owned by the guard at once, so the process is reaped even on a panic.
    let mut server = PyServer {
        child,
        port: 0,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(port) = std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            server.port = port;
            return server;
        }
        assert!(
            Instant::now() < deadline,
            "the Python websockets server did not start (is `websockets` installed? pip install websockets)"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn whoami(task: &SocketTask) -> serde_json::Value {
    task.send("whoami").await.unwrap();
    let reply = task.recv().await.expect("whoami reply");
    serde_json::from_str(reply.as_text().expect("text")).unwrap()
}

async fn round_trips(task: &SocketTask) {
    let text = "interop ✓ ".repeat(10_000);
    let binary: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    for msg in [
        Data::from("hello"),
        Data::from(""),
        Data::from(text),
        Data::from(binary),
        Data::from(vec![0u8; 1 << 20]),
    ] {
        task.send(msg.clone()).await.unwrap();
        assert_eq!(task.recv().await.as_ref(), Some(&msg));
    }
}

async fn session(
    url: String,
    options: impl FnOnce(ConnectOptions) -> ConnectOptions,
    compressed: bool,
) {
    let task = tokio::time::timeout(Duration::from_secs(20), async {
        connect_socket(options(
            ConnectOptions::new(url)
                .protocols(["superchat", "chat"])
                .timeout(Duration::from_secs(10)),
        ))
        .await
    })
    .await
    .expect("connect in time")
    .expect("connects");
    let info = whoami(&task).await;
    let expected: Vec<&str> = if compressed {
        vec!["permessage-deflate"]
    } else {
        vec![]
    };
    assert_eq!(info["extensions"], serde_json::json!(expected), "{info}");
    assert_eq!(info["subprotocol"], "chat", "{info}");
    assert_eq!(task.protocol(), "chat");
    round_trips(&task).await;
    task.close(CloseOptions::default().code(1000))
        .await
        .unwrap();
    let ev = task.closed().await;
    assert_eq!((ev.code, ev.was_clean), (1000, true));
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Python websockets; .ci/run installs it and runs this with --ignored"]
async fn python_websockets_plain_and_compressed() {
    let server = start("plain", &[], None);
    let url = format!("ws://127.0.0.1:{}/", server.port);
    session(url.clone(), |o| o, false).await;
    session(url.clone(), |o| o.per_message_deflate(true), true).await;
    let no_compression = start("nocomp", &["--no-compression"], None);
    let url = format!("ws://127.0.0.1:{}/", no_compression.port);
    // Offering compression to a server that declines it still works, uncompressed.
    session(url, |o| o.per_message_deflate(true), false).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Python websockets; .ci/run installs it and runs this with --ignored"]
async fn python_websockets_over_tls() {
    let ca = tls_support::TestCa::new("unisocket interop CA");
    let id = ca.server_cert(&["localhost"]);
    let server = start("tls", &[], Some(&id));
    let url = format!("wss://localhost:{}/", server.port);
    let ca_pem = ca.cert_pem();
    session(
        url.clone(),
        |o| o.ca_certificates_pem(ca_pem.clone()),
        false,
    )
    .await;
    session(
        url.clone(),
        |o| {
            o.ca_certificates_pem(ca_pem.clone())
                .per_message_deflate(true)
        },
        true,
    )
    .await;
    // Without the CA the handshake must fail with rustls's reason.
    let err = connect_socket(
        ConnectOptions::new(url)
            .protocols(["chat"])
            .timeout(Duration::from_secs(10)),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), unisocket::ErrorKind::Tls, "{err}");
    let _ = std::io::stdout().flush();
}
