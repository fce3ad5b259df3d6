//! The global functions of uni-app (`uni.onSocketOpen`, `uni.sendSocketMessage`,
//! ...): each acts on the oldest task that is still alive.
//!
//! The `on_socket_*` listeners go to the oldest live task; when no task is
//! alive, to the task made last (which replays its open, error and close
//! events at once, so nothing is lost to timing); before any task was made,
//! to the first task made.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::{Api, SocketError};
use crate::events::{CloseEvent, ErrorEvent, MessageEvent, OpenEvent};
use crate::options::{CloseOptions, CloseSuccess, SendOptions, SendSuccess};
use crate::task::{Completion, Listeners, Shared, SocketTask};

#[derive(Default)]
struct Registry {
    live: BTreeMap<u64, Arc<Shared>>,
    /// The task made last, kept after it closes: listeners registered when no
    /// task is alive go to it and replay its events, so a task that fails
    /// before the program registers its listeners still reports the failure.
    last: Option<Arc<Shared>>,
    /// Listeners registered before any task was made, given to the first one.
    pending: Listeners,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

fn with_registry<R>(f: impl FnOnce(&mut Registry) -> R) -> R {
    let mut guard = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    f(guard.get_or_insert_with(Registry::default))
}

/// Records a new live task and gives it the listeners waiting for one.
pub(crate) fn register(task: &SocketTask) {
    let pending = with_registry(|r| {
        r.live.insert(task.shared.id, task.shared.clone());
        r.last = Some(task.shared.clone());
        std::mem::take(&mut r.pending)
    });
    pending.open.into_iter().for_each(|f| task.on_open(f));
    pending.message.into_iter().for_each(|f| task.on_message(f));
    pending.close.into_iter().for_each(|f| task.on_close(f));
    pending.error.into_iter().for_each(|f| task.on_error(f));
}

/// Forgets a task once it is closed.
pub(crate) fn unregister(id: u64) {
    with_registry(|r| r.live.remove(&id));
}

/// The oldest task that is still alive (not CLOSED), if any.
///
/// ```
/// // With no task alive there is none.
/// assert!(unisocket::current_socket().is_none());
/// ```
pub fn current_socket() -> Option<SocketTask> {
    with_registry(|r| {
        r.live
            .values()
            .next()
            .map(|s| SocketTask { shared: s.clone() })
    })
}

macro_rules! global_listener {
    ($(#[$doc:meta])* $name:ident, $method:ident, $event:ty, $field:ident) => {
        $(#[$doc])*
        ///
        /// ```no_run
        /// use unisocket::{connect_socket, ConnectOptions};
        ///
        /// connect_socket(ConnectOptions::new("ws://127.0.0.1:9001"));
        #[doc = concat!("unisocket::", stringify!($name), "(|ev| println!(\"{ev:?}\"));")]
        /// ```
        pub fn $name(f: impl FnMut(&$event) + Send + 'static) {
            let f: Box<dyn FnMut(&$event) + Send> = Box::new(f);
            let target = with_registry(|r| match r.live.values().next().or(r.last.as_ref()) {
                Some(s) => Some((SocketTask { shared: s.clone() }, f)),
                None => {
                    r.pending.$field.push(f);
                    None
                }
            });
            if let Some((task, f)) = target {
                task.$method(f);
            }
        }
    };
}

global_listener!(
    /// `uni.onSocketOpen`: listens for the open event of the oldest live
    /// task. Listeners accumulate.
    on_socket_open, on_open, OpenEvent, open
);
global_listener!(
    /// `uni.onSocketMessage`: listens for the messages of the oldest live task.
    on_socket_message, on_message, MessageEvent, message
);
global_listener!(
    /// `uni.onSocketClose`: listens for the close event of the oldest live task.
    on_socket_close, on_close, CloseEvent, close
);
global_listener!(
    /// `uni.onSocketError`: listens for the errors of the oldest live task.
    on_socket_error, on_error, ErrorEvent, error
);

/// `uni.sendSocketMessage`: sends on the oldest live task. With no live task
/// it fails with `sendSocketMessage:fail WebSocket is not connected`.
///
/// ```no_run
/// use unisocket::{connect_socket, on_socket_open, send_socket_message, ConnectOptions, SendOptions};
///
/// connect_socket(ConnectOptions::new("ws://127.0.0.1:9001"));
/// on_socket_open(|_| {
///     drop(send_socket_message(
///         SendOptions::new("hello").success(|ok| println!("{}", ok.err_msg)),
///     ));
/// });
/// ```
pub fn send_socket_message(options: impl Into<SendOptions>) -> Completion<SendSuccess> {
    let options = options.into();
    match current_socket() {
        Some(task) => task.send(options),
        None => Completion::failed(
            options.callbacks,
            SocketError::not_connected(Api::SendSocketMessage),
        ),
    }
}

/// `uni.closeSocket`: closes the oldest live task. With no live task it fails
/// with `closeSocket:fail WebSocket is not connected`.
///
/// ```
/// use unisocket::{close_socket, CloseOptions};
///
/// // With no live task the call fails, through `fail` and the Completion.
/// drop(close_socket(CloseOptions::default().fail(|e| {
///     assert_eq!(e.err_msg(), "closeSocket:fail WebSocket is not connected");
/// })));
/// ```
pub fn close_socket(options: CloseOptions) -> Completion<CloseSuccess> {
    match current_socket() {
        Some(task) => task.close(options),
        None => Completion::failed(
            options.callbacks,
            SocketError::not_connected(Api::CloseSocket),
        ),
    }
}
