//! The first sample of `uni.connectSocket(OBJECT)` in the uni-app
//! documentation, in Rust:
//!
//! ```javascript
//! uni.connectSocket({
//!     url: 'wss://www.example.com/socket',
//!     data() {
//!         return {
//!             x: '',
//!             y: ''
//!         };
//!     },
//!     header: {
//!         'content-type': 'application/json'
//!     },
//!     protocols: ['protocol1'],
//!     method: 'GET'
//! });
//! ```
//!
//! The sample registers no listener, so it shows nothing; this program adds
//! `on_open` / `on_error` / `on_close` listeners on the returned task to
//! print what happens, and closes the socket once it is open.
//!
//! ```text
//! cargo run --example seed_connect_socket -- ws://127.0.0.1:9001
//! ```
//!
//! Prints `onOpen: protocol="..."` (the subprotocol the server chose) and
//! `onClose: code=1000 reason="" wasClean=true`, and exits with 0; exits
//! with 1 if the connection fails or the flow does not end within 10 s.

use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use unisocket::{connect_socket, CloseOptions, ConnectOptions};

/// How long the whole flow may take.
const FLOW_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:9001".to_owned());

    // `data` and `method` have no meaning for a WebSocket: the opening
    // handshake is always a GET with no body, so they have no counterpart in
    // `ConnectOptions` and are left out.
    let task = connect_socket(
        ConnectOptions::new(url)
            .header("content-type", "application/json")
            .protocols(["protocol1"]),
    );

    // Not in the sample: listeners to show the outcome, and the end of the flow.
    let (tx, rx) = mpsc::channel::<bool>();
    let t = task.clone();
    task.on_open(move |res| {
        println!("onOpen: protocol={:?}", res.protocol);
        t.close(CloseOptions::default());
    });
    // An error is always followed by the close event (code 1006), which ends the flow.
    task.on_error(|res| println!("onError: {}", res.err_msg));
    task.on_close(move |res| {
        println!(
            "onClose: code={} reason={:?} wasClean={}",
            res.code, res.reason, res.was_clean
        );
        let _ = tx.send(res.code == 1000 && res.was_clean);
    });

    match rx.recv_timeout(FLOW_TIMEOUT) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(_) => {
            eprintln!("the connection did not open and close within {FLOW_TIMEOUT:?}");
            ExitCode::FAILURE
        }
    }
}
