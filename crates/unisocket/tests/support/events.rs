//! An ordered log of a task's events, as strings a test compares.

use std::sync::{Arc, Mutex};

use unisocket::{Data, SocketTask};

use super::wait_until;

/// A shared, ordered log of events.
pub type Log = Arc<Mutex<Vec<String>>>;

/// What the log holds so far.
pub fn entries(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

/// How many entries start with `prefix`.
pub fn count(log: &Log, prefix: &str) -> usize {
    entries(log)
        .iter()
        .filter(|e| e.starts_with(prefix))
        .count()
}

/// Registers `on_open`, `on_error` and `on_close` listeners that append
/// `open:<protocol>`, `error:<err_msg>` and `close:<code>:<reason>:<was_clean>`
/// to a new log. (No `on_message` listener: messages stay available to `recv`.)
pub fn log_events(task: &SocketTask) -> Log {
    let log = Log::default();
    log_events_into(task, &log);
    log
}

/// [`log_events`] into a log of the caller's.
pub fn log_events_into(task: &SocketTask, log: &Log) {
    let l = log.clone();
    task.on_open(move |ev| l.lock().unwrap().push(format!("open:{}", ev.protocol)));
    let l = log.clone();
    task.on_error(move |ev| l.lock().unwrap().push(format!("error:{}", ev.err_msg)));
    let l = log.clone();
    task.on_close(move |ev| {
        l.lock()
            .unwrap()
            .push(format!("close:{}:{}:{}", ev.code, ev.reason, ev.was_clean));
    });
}

/// Waits until the log holds a close entry.
pub async fn wait_closed(log: &Log) {
    wait_until("the close event", || count(log, "close:") > 0).await;
}

/// A message as a log entry: the text, or `bin:` and the bytes (lossy UTF-8).
pub fn text_of(data: &Data) -> String {
    match data {
        Data::Text(t) => t.to_string(),
        Data::Binary(b) => format!("bin:{}", String::from_utf8_lossy(b)),
    }
}
