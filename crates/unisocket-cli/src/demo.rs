//! `unisocket` with no arguments: an embedded echo server on 127.0.0.1 and a
//! short live session with it through the library's callback API, exactly
//! as a uni-app page would use `uni.connectSocket`.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use unisocket::{connect_socket, CloseOptions, ConnectOptions, Data, PingPongEvent, SendOptions};

use crate::exit;
use crate::style::{self, describe_close_code, Paint};

/// The payload of the demo's ping.
const PING: &str = "are you there?";

/// Prints one line, flushed (the callbacks run on the library's threads).
fn say(line: String) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs the demo; returns the process exit code.
pub fn run() -> i32 {
    let paint = Paint::stdout();
    let ev_name = move |s: &str| paint.cyan(s);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("unisocket: cannot start a runtime: {e}");
            return exit::FAILURE;
        }
    };
    let addr = match rt.block_on(crate::server::spawn_echo(Arc::new(|_| {}))) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("unisocket: cannot start the echo server: {e}");
            return exit::FAILURE;
        }
    };
    let url = format!("ws://{addr}/demo");
    say(paint.dim(&format!(
        "embedded echo server listening on {url} (no network needed)"
    )));
    say(format!("{}({url:?})", paint.bold("connect_socket")));

    let messages: Vec<Data> = vec![
        "hello from unisocket".into(),
        "uni-app socket API, in Rust: 你好, мир ✓".into(),
        vec![0xDE_u8, 0xAD, 0xBE, 0xEF].into(),
    ];
    let expected = messages.len();
    let (done_tx, done_rx) = mpsc::channel::<i32>();
    // The close's `success` runs after `on_close`; wait for it too.
    let (settled_tx, settled_rx) = mpsc::channel::<()>();

    // Outside a tokio runtime: the library runs the connection on a
    // background runtime of its own, as the callback API promises.
    let task = connect_socket(
        ConnectOptions::new(url).success(move |ok| say(format!("  success: {}", ok.err_msg))),
    );
    let t = task.clone();
    task.on_open(move |ev| {
        let p = ev.profile;
        say(format!(
            "{}: dns {} | connect {} | handshake {} | total {}",
            ev_name("on_open"),
            style::ms(p.dns),
            style::ms(p.connect),
            style::ms(p.handshake),
            style::ms(p.total)
        ));
        for data in messages.clone() {
            let shown = show(&data);
            drop(
                t.send(
                    SendOptions::new(data)
                        .success(move |ok| say(format!("  send {shown}: {}", ok.err_msg))),
                ),
            );
        }
    });

    let ping_sent = Arc::new(Mutex::new(None::<Instant>));
    let (t, sent) = (task.clone(), ping_sent.clone());
    let mut received = 0;
    task.on_message(move |ev| {
        received += 1;
        say(format!("{}: {}", ev_name("on_message"), show(&ev.data)));
        if received == expected {
            say(format!("{}({PING:?})", paint.bold("ping")));
            *sent.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            t.ping(PING);
        }
    });

    let t = task.clone();
    task.on_ping_pong(move |ev| {
        if let PingPongEvent::Pong(payload) = ev {
            let rtt = ping_sent
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .map(|t0| t0.elapsed())
                .unwrap_or_default();
            say(format!(
                "{}: pong {:?} after {}",
                ev_name("on_ping_pong"),
                String::from_utf8_lossy(payload),
                style::ms(rtt)
            ));
            let settled = settled_tx.clone();
            say(format!(
                "{}(code 1000, reason \"demo done\")",
                paint.bold("close")
            ));
            drop(
                t.close(
                    CloseOptions::default()
                        .code(1000)
                        .reason("demo done")
                        .success(move |ok| say(format!("  success: {}", ok.err_msg)))
                        .complete(move |_| {
                            let _ = settled.send(());
                        }),
                ),
            );
        }
    });
    task.on_error(move |ev| say(format!("{}: {}", paint.red("on_error"), ev.err_msg)));
    task.on_close(move |ev| {
        say(format!(
            "{}: code {}, reason {:?}, {}",
            ev_name("on_close"),
            describe_close_code(ev.code),
            ev.reason,
            if ev.was_clean { "clean" } else { "NOT clean" }
        ));
        let _ = done_tx.send(if ev.was_clean {
            exit::OK
        } else {
            exit::ABNORMAL
        });
    });
    let code = done_rx
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| {
            eprintln!("unisocket: the demo did not finish within 10 s");
            exit::FAILURE
        });
    if code == exit::OK {
        let _ = settled_rx.recv_timeout(Duration::from_secs(2));
    }
    drop(rt);
    code
}

fn show(data: &Data) -> String {
    match data {
        Data::Text(t) => format!("text {:?}", t.as_str()),
        Data::Binary(b) => format!("binary [{}]", style::hex(b)),
    }
}
