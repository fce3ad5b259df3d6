//! The global functions of uni-app (`uni.onSocketOpen`, `uni.sendSocketMessage`,
//! ...): each acts on the oldest task that is still alive, uni-app's
//! `socketTasks[0]`.
//!
//! The `on_socket_*` listeners are app-wide, as in every uni-app
//! implementation: they are kept here, not by a task, and fire for each event
//! of whichever task is the oldest live one when that event happens. A
//! program registers them once and reconnects as often as it likes.
//!
//! Locks: the registry of live tasks and the lists of listeners each have a
//! lock of their own. A task's lock may be held while either is taken, never
//! the other way round, and no lock is held while a listener runs.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

use crate::error::{Api, SocketError};
use crate::events::{CloseEvent, ErrorEvent, MessageEvent, OpenEvent};
use crate::options::{CloseOptions, CloseSuccess, SendOptions, SendSuccess};
use crate::task::{Completion, Shared, SocketTask};

/// One global listener. Its own lock keeps it from running on two threads
/// at once (two tasks can hand over the oldest place while one of them still
/// reports an event).
pub(crate) type Slot<E> = Arc<Mutex<Box<dyn FnMut(&E) + Send + 'static>>>;

/// The listeners of one kind, as they were when an event happened: an event
/// takes the list without copying it, a registration makes a new one.
pub(crate) type List<E> = Arc<Vec<Slot<E>>>;

/// The app-wide listeners.
#[derive(Default)]
pub(crate) struct Lists {
    pub(crate) open: List<OpenEvent>,
    pub(crate) message: List<MessageEvent>,
    pub(crate) close: List<CloseEvent>,
    pub(crate) error: List<ErrorEvent>,
}

/// A global listener on its way into [`Lists`].
pub(crate) enum NewListener {
    Open(Slot<OpenEvent>),
    Message(Slot<MessageEvent>),
    Close(Slot<CloseEvent>),
    Error(Slot<ErrorEvent>),
}

impl NewListener {
    /// Adds the listener to the lists (under their lock).
    pub(crate) fn add_to_lists(&self) {
        let mut lists = lists();
        fn push<E>(list: &mut List<E>, slot: &Slot<E>) {
            let mut new = Vec::with_capacity(list.len() + 1);
            new.extend(list.iter().cloned());
            new.push(slot.clone());
            *list = Arc::new(new);
        }
        match self {
            NewListener::Open(s) => push(&mut lists.open, s),
            NewListener::Message(s) => {
                push(&mut lists.message, s);
                MESSAGE_LISTENERS.store(true, Ordering::Release);
            }
            NewListener::Close(s) => push(&mut lists.close, s),
            NewListener::Error(s) => push(&mut lists.error, s),
        }
    }
}

/// The live tasks, oldest (smallest id) first.
static LIVE: Mutex<BTreeMap<u64, Arc<Shared>>> = Mutex::new(BTreeMap::new());
static LISTS: LazyLock<Mutex<Lists>> = LazyLock::new(Mutex::default);
/// The id of the oldest live task, 0 when none: read without a lock on the
/// path of every message.
static CURRENT: AtomicU64 = AtomicU64::new(0);
/// Whether any global `on_socket_message` listener was registered.
static MESSAGE_LISTENERS: AtomicBool = AtomicBool::new(false);

fn live() -> MutexGuard<'static, BTreeMap<u64, Arc<Shared>>> {
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn lists() -> MutexGuard<'static, Lists> {
    LISTS.lock().unwrap_or_else(PoisonError::into_inner)
}

fn set_current(live: &BTreeMap<u64, Arc<Shared>>) -> u64 {
    let id = live.keys().next().copied().unwrap_or(0);
    CURRENT.store(id, Ordering::Release);
    id
}

/// Records a new live task (before its `success` runs, so that the task is
/// the current socket inside it).
pub(crate) fn register(task: &SocketTask) {
    let mut live = live();
    live.insert(task.shared.id, task.shared.clone());
    set_current(&live);
}

/// Forgets a task once it is closed; returns the task that became the
/// oldest live one by this, if any.
pub(crate) fn unregister(id: u64) -> Option<Arc<Shared>> {
    let mut live = live();
    let was = CURRENT.load(Ordering::Acquire);
    live.remove(&id)?;
    let now = set_current(&live);
    (now != was && now != 0).then(|| live[&now].clone())
}

/// Whether task `id` is the oldest live one: its events go to the global
/// listeners.
pub(crate) fn is_current(id: u64) -> bool {
    CURRENT.load(Ordering::Acquire) == id
}

/// Whether the messages of task `id` go to global listeners now.
pub(crate) fn takes_messages(id: u64) -> bool {
    MESSAGE_LISTENERS.load(Ordering::Acquire) && is_current(id)
}

thread_local! {
    /// Whether this thread is running global listeners.
    static FIRING: Cell<bool> = const { Cell::new(false) };
    /// Events that reached the global listeners while this thread was
    /// already running one of them (a listener that closed or opened a task
    /// whose events are reported at once): they run, in order, once that
    /// listener has returned, rather than inside it (where a listener could
    /// find itself locked by its own thread).
    static DEFERRED: RefCell<VecDeque<Box<dyn FnOnce()>>> = const { RefCell::new(VecDeque::new()) };
}

/// Runs every listener of `list` with `ev`, one at a time.
pub(crate) fn fire<E: Clone + Send + 'static>(list: &List<E>, ev: &E) {
    if list.is_empty() {
        return;
    }
    if FIRING.with(|f| f.replace(true)) {
        let (list, ev) = (list.clone(), ev.clone());
        DEFERRED.with(|d| {
            d.borrow_mut()
                .push_back(Box::new(move || call_each(&list, &ev)))
        });
        return;
    }
    call_each(list, ev);
    while let Some(job) = DEFERRED.with(|d| d.borrow_mut().pop_front()) {
        job();
    }
    FIRING.with(|f| f.set(false));
}

fn call_each<E>(list: &List<E>, ev: &E) {
    for slot in list.iter() {
        let mut f = slot.lock().unwrap_or_else(PoisonError::into_inner);
        // A panicking listener must not silence the others, nor this thread.
        let _ = catch_unwind(AssertUnwindSafe(|| f(ev)));
    }
}

/// Runs the global `on_socket_message` listeners with `ev` (they are read
/// when the message is delivered, so that none is missed or called twice).
pub(crate) fn fire_message(ev: &MessageEvent) {
    let list = lists().message.clone();
    fire(&list, ev);
}

/// Adds a global listener: at once to the oldest live task's events (which
/// replays its open or error to it, as a task listener's registration does),
/// or, with no live task, for the next one.
fn add(mut listener: NewListener) {
    loop {
        let live = live();
        let Some(current) = live.values().next().cloned() else {
            // Under the registry's lock: no task can become live meanwhile
            // and open unseen.
            listener.add_to_lists();
            return;
        };
        drop(live);
        match current.add_global(listener) {
            Ok(()) => return,
            // It closed meanwhile: the next oldest (or none) is current.
            Err(back) => listener = back,
        }
    }
}

/// The oldest task that is still alive (not CLOSED), if any.
///
/// ```
/// // With no task alive there is none.
/// assert!(unisocket::current_socket().is_none());
/// ```
pub fn current_socket() -> Option<SocketTask> {
    live()
        .values()
        .next()
        .map(|s| SocketTask { shared: s.clone() })
}

macro_rules! global_listener {
    ($(#[$doc:meta])* $name:ident, $event:ty, $variant:ident) => {
        $(#[$doc])*
        pub fn $name(f: impl FnMut(&$event) + Send + 'static) {
            let f: Box<dyn FnMut(&$event) + Send> = Box::new(f);
            add(NewListener::$variant(Arc::new(Mutex::new(f))));
        }
    };
}

global_listener!(
    /// `uni.onSocketOpen`: listens for the open event of whichever task is
    /// the oldest live one when it opens, for the rest of the program.
    /// Listeners accumulate. Registered while the oldest live task is open,
    /// the listener is called once at once with that task's open event; with
    /// no live task it waits for the next one.
    ///
    /// The pattern of uni-app programs, registered once and reconnecting
    /// whenever the socket closes:
    ///
    /// ```no_run
    /// use unisocket::{connect_socket, on_socket_close, on_socket_message, on_socket_open};
    /// use unisocket::{send_socket_message, ConnectOptions};
    ///
    /// const URL: &str = "ws://127.0.0.1:9001";
    /// on_socket_open(|_| {
    ///     send_socket_message("hello");
    /// });
    /// on_socket_message(|ev| println!("{:?}", ev.data));
    /// on_socket_close(|ev| {
    ///     println!("closed with {}; connecting again", ev.code);
    ///     connect_socket(ConnectOptions::new(URL));
    /// });
    /// connect_socket(ConnectOptions::new(URL));
    /// ```
    on_socket_open, OpenEvent, Open
);
global_listener!(
    /// `uni.onSocketMessage`: listens for the messages of whichever task is
    /// the oldest live one when they arrive. Messages that task held while
    /// nobody listened are delivered to it, in order.
    ///
    /// ```no_run
    /// unisocket::connect_socket(unisocket::ConnectOptions::new("ws://127.0.0.1:9001"));
    /// unisocket::on_socket_message(|ev| println!("{:?}", ev.data));
    /// ```
    on_socket_message, MessageEvent, Message
);
global_listener!(
    /// `uni.onSocketClose`: listens for the close event of whichever task is
    /// the oldest live one when it closes. A listener may call
    /// [`connect_socket`](crate::connect_socket) to reconnect: the new task
    /// is then the oldest live one.
    ///
    /// ```no_run
    /// unisocket::on_socket_close(|ev| println!("closed: {} {}", ev.code, ev.reason));
    /// unisocket::connect_socket(unisocket::ConnectOptions::new("ws://127.0.0.1:9001"));
    /// ```
    on_socket_close, CloseEvent, Close
);
global_listener!(
    /// `uni.onSocketError`: listens for the errors of whichever task is the
    /// oldest live one when they happen. Registered while that task has
    /// failed (and not opened again since), the listener is called once at
    /// once with the error.
    ///
    /// ```no_run
    /// unisocket::on_socket_error(|ev| eprintln!("{}", ev.err_msg));
    /// unisocket::connect_socket(unisocket::ConnectOptions::new("ws://127.0.0.1:9001"));
    /// ```
    on_socket_error, ErrorEvent, Error
);

/// `uni.sendSocketMessage`: sends on the oldest live task. With no live task
/// it fails with `sendSocketMessage:fail WebSocket is not connected`.
///
/// ```no_run
/// use unisocket::{connect_socket, on_socket_open, send_socket_message, ConnectOptions, SendOptions};
///
/// connect_socket(ConnectOptions::new("ws://127.0.0.1:9001"));
/// on_socket_open(|_| {
///     send_socket_message(SendOptions::new("hello").success(|ok| println!("{}", ok.err_msg)));
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
/// close_socket(CloseOptions::default().fail(|e| {
///     assert_eq!(e.err_msg(), "closeSocket:fail WebSocket is not connected");
/// }));
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
