//! What the browser tests share (`tests/browser.rs`,
//! `tests/browser_global.rs`): the server's address, timers of the page,
//! and an event log.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use unisocket::Data;
use wasm_bindgen::JsCast;

pub fn url() -> String {
    let port = option_env!("UNISOCKET_BROWSER_PORT").unwrap_or("9002");
    format!("ws://127.0.0.1:{port}/")
}

/// A port with nothing listening (the script keeps it free).
pub fn refused_url() -> String {
    let port = option_env!("UNISOCKET_BROWSER_REFUSED_PORT").unwrap_or("9003");
    format!("ws://127.0.0.1:{port}/")
}

/// A server that accepts connections and never answers the upgrade.
pub fn silent_url() -> String {
    let port = option_env!("UNISOCKET_BROWSER_SILENT_PORT").unwrap_or("9004");
    format!("ws://127.0.0.1:{port}/")
}

/// Waits `ms` on the page's event loop.
pub async fn sleep(ms: i32) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        let global = js_sys::global();
        let set_timeout = js_sys::Reflect::get(&global, &"setTimeout".into())
            .expect("setTimeout")
            .unchecked_into::<js_sys::Function>();
        set_timeout
            .call2(&global, &resolve, &ms.into())
            .expect("setTimeout call");
    });
    wasm_bindgen_futures::JsFuture::from(promise)
        .await
        .expect("timer");
}

/// Waits until `done` holds, for at most 10 s.
pub async fn until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        sleep(10).await;
    }
    panic!("timed out waiting for {what}");
}

pub type Log = Arc<Mutex<Vec<String>>>;

pub fn log() -> Log {
    Arc::new(Mutex::new(Vec::new()))
}

pub fn entries(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

pub fn push(log: &Log, entry: impl Into<String>) {
    log.lock().unwrap().push(entry.into());
}

pub fn text(data: &Data) -> String {
    match data {
        Data::Text(t) => t.to_string(),
        Data::Binary(b) => format!("binary {:?}", &b[..]),
    }
}
