//! A program that closes its socket and exits as soon as `closed()`
//! returns: what its `on_close` listener prints is not lost, because
//! `closed()` (like `opened()` and the `Completion` of `close`) returns only
//! once the listeners of its event have run, on whichever thread runs them.
//!
//! ```text
//! cargo run --example exit_after_closed -- ws://127.0.0.1:9001
//! ```
//!
//! Prints `on_close: 1000` and then `closed() returned: 1000`, and exits
//! with 0 (1 if the connection fails).

use std::process::ExitCode;
use std::time::Duration;

use unisocket::{connect_socket, CloseOptions, ConnectOptions};

#[tokio::main]
async fn main() -> ExitCode {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:9001".to_owned());
    let task = connect_socket(ConnectOptions::new(url));
    task.on_close(|ev| {
        // A slow listener: the program waits for it.
        std::thread::sleep(Duration::from_millis(100));
        println!("on_close: {}", ev.code);
    });
    let task = match task.await {
        Ok(task) => task,
        Err(e) => {
            println!("{}", e.err_msg());
            return ExitCode::FAILURE;
        }
    };
    task.close(CloseOptions::default());
    let ev = task.closed().await;
    println!("closed() returned: {}", ev.code);
    ExitCode::SUCCESS
}
