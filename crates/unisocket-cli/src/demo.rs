//! `unisocket` with no arguments: an embedded echo server on 127.0.0.1 and a
//! short live session with it through the library's callback API.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use unisocket::{connect_socket, CloseOptions, ConnectOptions, Data, SendOptions};

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Runs the demo; returns the process exit code.
pub fn run() -> i32 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("unisocket: cannot start a runtime: {e}");
            return 1;
        }
    };
    let addr = match rt.block_on(crate::server::spawn_echo(Arc::new(|_| {}))) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("unisocket: cannot start the echo server: {e}");
            return 1;
        }
    };
    let url = format!("ws://{addr}/demo");
    println!("embedded echo server listening on {url}");
    println!("connect_socket({url:?})");

    let messages: Vec<Data> = vec![
        "hello from unisocket".into(),
        "uni-app socket API, in Rust: 你好, мир ✓".into(),
        vec![0xDE_u8, 0xAD, 0xBE, 0xEF].into(),
    ];
    let expected = messages.len();
    let (done_tx, done_rx) = mpsc::channel::<i32>();

    let task = connect_socket(ConnectOptions::new(url).success(|ok| println!("  {}", ok.err_msg)));
    let t = task.clone();
    task.on_open(move |ev| {
        let p = ev.profile;
        println!(
            "on_open: dns {} | connect {} | handshake {} | total {}",
            ms(p.dns),
            ms(p.connect),
            ms(p.handshake),
            ms(p.total)
        );
        for data in messages.clone() {
            let shown = show(&data);
            drop(
                t.send(
                    SendOptions::new(data)
                        .success(move |ok| println!("  send {shown}: {}", ok.err_msg)),
                ),
            );
        }
    });
    let t = task.clone();
    let mut received = 0;
    task.on_message(move |ev| {
        received += 1;
        println!("on_message: {}", show(&ev.data));
        if received == expected {
            println!("close(code 1000, reason \"demo done\")");
            drop(
                t.close(
                    CloseOptions::default()
                        .code(1000)
                        .reason("demo done")
                        .success(|ok| println!("  {}", ok.err_msg)),
                ),
            );
        }
    });
    task.on_error(|ev| eprintln!("on_error: {}", ev.err_msg));
    let tx = done_tx.clone();
    task.on_close(move |ev| {
        println!(
            "on_close: code {} reason {:?} clean {}",
            ev.code, ev.reason, ev.was_clean
        );
        let _ = tx.send(if ev.was_clean { 0 } else { 3 });
    });
    let code = done_rx
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| {
            eprintln!("unisocket: the demo did not finish within 10 s");
            3
        });
    drop(rt);
    code
}

fn show(data: &Data) -> String {
    match data {
        Data::Text(t) => format!("text {:?}", t.as_str()),
        Data::Binary(b) => {
            let hex: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
            format!("binary [{}]", hex.join(" "))
        }
    }
}
