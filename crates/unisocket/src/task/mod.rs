//! [`SocketTask`]: the handle to one connection, its shared state, and the
//! dispatcher that runs a task's callbacks one at a time.

use std::collections::VecDeque;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::mem;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use crate::data::Data;
use crate::error::{Api, ErrorKind, SocketError};
use crate::events::{CloseEvent, ErrorEvent, MessageEvent, OpenEvent, PingPongEvent};
use crate::ledger::{Aside, Ledger, Outcome};
use crate::oneshot;
use crate::options::{Callbacks, CloseOptions, CloseSuccess, SendOptions, SendSuccess};
use crate::proto::connection::{check_browser_close, check_close, check_ping};
use crate::reconnect::ReconnectEvent;

pub(crate) mod engine;

pub(crate) use engine::{fail_command, Command};
use engine::{EngineWaker, WAITS_CLOSE, WAITS_COMMANDS, WAITS_ROOM};

/// How far the driver reads ahead of a consumer that takes messages with
/// `recv` (the held messages stay bounded by `max_held_bytes` as well).
const READ_AHEAD: usize = 512 * 1024;

/// The most entries a drained queue of a task (jobs, held messages,
/// commands) keeps room for.
const SMALL_QUEUE: usize = 16;

/// The state of a task, as `WebSocket.readyState` in a browser.
///
/// ```
/// use unisocket::{connect_socket, ConnectOptions, ReadyState};
///
/// let task = connect_socket(ConnectOptions::new("not a url"));
/// assert_eq!(task.ready_state(), ReadyState::Closed);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ReadyState {
    /// The connection is being opened.
    Connecting = 0,
    /// The connection is open: messages can be sent.
    Open = 1,
    /// The closing handshake has started.
    Closing = 2,
    /// The connection is closed (or could not be opened).
    Closed = 3,
}

impl ReadyState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => ReadyState::Connecting,
            1 => ReadyState::Open,
            2 => ReadyState::Closing,
            _ => ReadyState::Closed,
        }
    }
}

/// Adds the task's waker to `wakers` unless it is there already: a future
/// polled many times must not grow the list.
fn register(wakers: &mut Vec<Waker>, cx: &Context<'_>) {
    if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
        wakers.push(cx.waker().clone());
    }
}

/// Keeps the task's waker in `slot`, cloning it only if it changed;
/// returns the waker it replaced, for a caller that must drop it after its
/// lock.
pub(crate) fn set_waker(slot: &mut Option<Waker>, cx: &Context<'_>) -> Option<Waker> {
    if slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
        return None;
    }
    slot.replace(cx.waker().clone())
}

/// The pending outcome of one `send` or `close`: settling it resolves the
/// [`Completion`] and runs the call's callbacks on the task's dispatcher.
/// Dropping it unsettled fails the call, so no call is ever left hanging.
pub(crate) struct Reply<T: Clone + Send + 'static> {
    api: Api,
    /// Bytes this call counts in `buffered_amount` until it settles.
    bytes: usize,
    /// Where the outcome goes; `None` once settled.
    sink: Option<Sink<T>>,
    /// Boxed, and only when there are any: keeps every queued command small.
    callbacks: Option<Box<Settled<T>>>,
    shared: Arc<Shared>,
}

/// Where a call's outcome goes: a `send`'s to the task's [`Ledger`] (no
/// allocation per send), a `close`'s or a `ping`'s to a channel of its own.
enum Sink<T> {
    Channel(oneshot::Sender<Result<T, SocketError>>),
    Ledger(u64),
}

/// A call's callbacks and, once it settled, its outcome: one box, made with
/// the call, that becomes the dispatcher's job.
struct Settled<T> {
    callbacks: Callbacks<T>,
    result: Option<Result<T, SocketError>>,
    /// A `close`'s or a `ping`'s `Completion`, told after the callbacks.
    tx: Option<oneshot::Sender<Result<T, SocketError>>>,
}

/// A [`Settled`] of any result type, as a job runs it.
trait SettledCall: Send {
    fn run(self: Box<Self>);
}

impl<T: Send> SettledCall for Settled<T> {
    fn run(self: Box<Self>) {
        let Settled {
            callbacks,
            result,
            tx,
        } = *self;
        if let Some(result) = result {
            callbacks.settle(&result);
            if let Some(tx) = tx {
                let _ = tx.send(result);
            }
        }
    }
}

impl<T: Clone + Send + 'static> Reply<T> {
    fn new(
        api: Api,
        bytes: usize,
        callbacks: Callbacks<T>,
        shared: &Arc<Shared>,
    ) -> (Self, Completion<T>) {
        let (tx, rx) = oneshot::channel();
        let reply = Reply::with_sink(api, bytes, callbacks, shared, Sink::Channel(tx));
        (reply, Completion::of(api, Way::Channel(rx)))
    }

    fn with_sink(
        api: Api,
        bytes: usize,
        callbacks: Callbacks<T>,
        shared: &Arc<Shared>,
        sink: Sink<T>,
    ) -> Self {
        shared.buffered.fetch_add(bytes, Ordering::Relaxed);
        Reply {
            api,
            bytes,
            sink: Some(sink),
            callbacks: (!callbacks.is_empty()).then(|| {
                Box::new(Settled {
                    callbacks,
                    result: None,
                    tx: None,
                })
            }),
            shared: shared.clone(),
        }
    }

    /// Resolves the call with `result`.
    pub(crate) fn settle(mut self, result: Result<T, SocketError>) {
        self.settle_inner(result);
    }

    /// Resolves the call with the success that `success` makes, if anyone
    /// would see it: its `Completion` is still held, or it has callbacks. A
    /// success that nobody watches makes no result (with its `err_msg`
    /// string): it releases the call's bytes and, for a send, settles its
    /// ledger entry, whose `Completion` makes the success only if it is
    /// awaited. (Callbacks, even a `fail` alone, go through the dispatcher
    /// as ever: they are dropped there, in order and with a panic caught.)
    pub(crate) fn succeed(mut self, success: impl FnOnce() -> T) {
        match &self.sink {
            _ if self.callbacks.is_some() => self.settle_inner(Ok(success())),
            Some(Sink::Channel(tx)) if !tx.is_closed() => self.settle_inner(Ok(success())),
            Some(Sink::Channel(_)) => {
                self.sink = None;
                self.release_bytes();
            }
            // The ledger keeps no `T`: its `Completion` makes the success.
            Some(Sink::Ledger(seq)) => {
                let seq = *seq;
                self.sink = None;
                self.release_bytes();
                self.shared.settle_send(seq, Ok(()));
            }
            None => {}
        }
    }

    /// The call's bytes no longer count in `buffered_amount`.
    fn release_bytes(&self) {
        if self.bytes > 0 {
            self.shared.buffered.fetch_sub(self.bytes, Ordering::AcqRel);
            if self.shared.has_waiting.load(Ordering::Acquire) {
                self.shared.release_waiting();
            }
        }
    }

    fn settle_inner(&mut self, result: Result<T, SocketError>) {
        let Some(sink) = self.sink.take() else { return };
        self.release_bytes();
        match sink {
            Sink::Channel(tx) => {
                // Through the dispatcher, after the callbacks and after the
                // listeners of the events before it (the close event, for a
                // `close`): an awaiting caller sees them all done.
                let mut call = self.callbacks.take().unwrap_or_else(|| {
                    Box::new(Settled {
                        callbacks: Callbacks::default(),
                        result: None,
                        tx: None,
                    })
                });
                call.result = Some(result);
                // A `Completion` that is gone has nothing to be told.
                call.tx = (!tx.is_closed()).then_some(tx);
                self.shared.dispatch(Job::Settled(call));
            }
            Sink::Ledger(seq) => {
                let outcome = match &result {
                    Ok(_) => Ok(()),
                    Err(e) => Err(Box::new(e.clone())),
                };
                match self.callbacks.take() {
                    Some(mut call) => {
                        call.result = Some(result);
                        self.shared
                            .dispatch_settled(Job::Settled(call), seq, outcome);
                    }
                    None => self.shared.settle_send(seq, outcome),
                }
            }
        }
    }
}

impl<T: Clone + Send + 'static> Drop for Reply<T> {
    fn drop(&mut self) {
        if self.sink.is_some() {
            let e = SocketError::new(
                self.api,
                ErrorKind::Closed,
                "the connection ended before the call completed",
            );
            self.settle_inner(Err(e));
        }
    }
}

/// The outcome of `send` or `close`: a future that may be awaited or dropped
/// (dropping it cancels nothing; the callbacks still run). Polled again after
/// it returned its outcome, it fails with [`ErrorKind::InvalidArgument`].
///
/// Since dropping it cancels nothing, it is not `#[must_use]`: callback-style
/// code reads as in uni-app, with no `let _ =` or `drop(...)`.
///
/// ```no_run
/// #![deny(unused_must_use)]
/// # async fn demo(task: unisocket::SocketTask) -> Result<(), unisocket::SocketError> {
/// use unisocket::{close_socket, CloseOptions, SendOptions};
///
/// // Await it: resolves once the frame reached the transport.
/// let ok = task.send("hello").await?;
/// assert_eq!(ok.err_msg, "sendSocketMessage:ok");
/// // Or leave it: the message is still sent, and the callbacks run.
/// task.send("fire and forget");
/// task.send(SendOptions::new("x").fail(|e| eprintln!("{}", e.err_msg())));
/// close_socket(CloseOptions::default());
/// # Ok(()) }
/// ```
pub struct Completion<T> {
    api: Api,
    way: Way<T>,
}

/// How a [`Completion`] learns its outcome.
enum Way<T> {
    /// A `close` or a `ping`: a channel of its own.
    Channel(oneshot::Receiver<Result<T, SocketError>>),
    /// A `send`: its entry in the task's [`Ledger`], and how to make the
    /// success (which the ledger does not keep).
    Ledger {
        shared: Arc<Shared>,
        seq: u64,
        success: fn() -> T,
    },
    /// Already settled, or taken (`None`).
    Ready(Option<Result<T, SocketError>>),
}

// No `Pin<&mut T>` is ever made: `T` is only moved out, whole.
impl<T> Unpin for Completion<T> {}

impl<T> fmt::Debug for Completion<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completion")
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

impl<T: Clone + Send + 'static> Completion<T> {
    /// A completion that has already failed, its callbacks run at once (for
    /// calls that have no task to run on).
    pub(crate) fn failed(callbacks: Callbacks<T>, error: SocketError) -> Self {
        let api = error.api();
        let result = Err(error);
        callbacks.settle(&result);
        Completion::of(api, Way::Ready(Some(result)))
    }
}

impl<T> Completion<T> {
    fn of(api: Api, way: Way<T>) -> Self {
        Completion { api, way }
    }
}

/// The error of a [`Completion`] polled again after it returned its outcome.
fn spent(api: Api) -> SocketError {
    SocketError::new(
        api,
        ErrorKind::InvalidArgument,
        "the Completion was polled again after it returned its outcome",
    )
}

impl<T> Future for Completion<T> {
    type Output = Result<T, SocketError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let api = self.api;
        let result = match &mut self.way {
            Way::Channel(rx) => std::task::ready!(Pin::new(rx).poll(cx)).unwrap_or_else(|_| {
                Err(SocketError::new(
                    api,
                    ErrorKind::Closed,
                    "the connection task ended",
                ))
            }),
            Way::Ledger {
                shared,
                seq,
                success,
            } => {
                let success = *success;
                let (poll, aside) = shared.lock().sends.poll(*seq, cx);
                aside.finish();
                match std::task::ready!(poll) {
                    Some(Ok(())) => Ok(success()),
                    Some(Err(e)) => Err(*e),
                    None => Err(spent(api)),
                }
            }
            Way::Ready(result) => result.take().unwrap_or_else(|| Err(spent(api))),
        };
        // Returned: a later poll gets `spent`, and dropping the Completion
        // has nothing left to tell the ledger.
        self.way = Way::Ready(None);
        Poll::Ready(result)
    }
}

impl<T> Drop for Completion<T> {
    fn drop(&mut self) {
        if let Way::Ledger { shared, seq, .. } = &self.way {
            shared.forget_send(*seq);
        }
    }
}

pub(crate) type OpenFn = Box<dyn FnMut(&OpenEvent) + Send + 'static>;
pub(crate) type MessageFn = Box<dyn FnMut(&MessageEvent) + Send + 'static>;
pub(crate) type CloseFn = Box<dyn FnMut(&CloseEvent) + Send + 'static>;
pub(crate) type ReconnectFn = Box<dyn FnMut(&ReconnectEvent) + Send + 'static>;
pub(crate) type PingPongFn = Box<dyn FnMut(&PingPongEvent) + Send + 'static>;
pub(crate) type ErrorFn = Box<dyn FnMut(&ErrorEvent) + Send + 'static>;

/// The listeners of one task.
#[derive(Default)]
pub(crate) struct Listeners {
    pub(crate) open: Vec<OpenFn>,
    pub(crate) message: Vec<MessageFn>,
    pub(crate) close: Vec<CloseFn>,
    pub(crate) error: Vec<ErrorFn>,
    pub(crate) ping_pong: Vec<PingPongFn>,
    pub(crate) reconnecting: Vec<ReconnectFn>,
}

impl Listeners {
    /// Appends the listeners registered while `self` was out being run.
    fn merge(&mut self, newer: &mut Listeners) {
        self.open.append(&mut newer.open);
        self.message.append(&mut newer.message);
        self.close.append(&mut newer.close);
        self.error.append(&mut newer.error);
        self.ping_pong.append(&mut newer.ping_pong);
        self.reconnecting.append(&mut newer.reconnecting);
    }
}

/// Work for the task's dispatcher, run in order with no lock held. The
/// jobs of every message and every settled call are not boxed closures:
/// they cost no allocation of their own.
enum Job {
    /// A message for the `on_message` listeners, and for the global ones
    /// if the task was the oldest live one when it arrived.
    Message { ev: MessageEvent, global: bool },
    /// A ping or pong for the `on_ping_pong` listeners.
    PingPong(PingPongEvent),
    /// The callbacks of a settled call, with its outcome.
    Settled(Box<dyn SettledCall>),
    /// Any other event.
    Other(Box<dyn FnOnce(&mut Listeners) + Send + 'static>),
    /// The listeners of the open (or the close) have run: `opened()` (or
    /// `closed()`) may return. Run by the dispatcher itself, under its lock.
    Delivered(Delivered),
}

/// Which event's listeners have run, for [`Job::Delivered`].
#[derive(Clone, Copy)]
enum Delivered {
    Open,
    Close,
}

impl Job {
    fn other(f: impl FnOnce(&mut Listeners) + Send + 'static) -> Self {
        Job::Other(Box::new(f))
    }

    fn run(self, listeners: &mut Listeners) {
        match self {
            Job::Message { ev, global } => {
                listeners.message.iter_mut().for_each(|f| f(&ev));
                if global {
                    crate::global::fire_message(&ev);
                }
            }
            Job::PingPong(ev) => listeners.ping_pong.iter_mut().for_each(|f| f(&ev)),
            Job::Settled(call) => call.run(),
            Job::Other(f) => f(listeners),
            // Handled by the dispatcher before it gets here.
            Job::Delivered(_) => {}
        }
    }

    /// What the job counts in the task's held bytes until it has run: what
    /// a server can make the task queue (its messages, pings and pongs)
    /// counts there, whoever will take it, so that reading pauses while a
    /// busy listener falls behind.
    fn held_len(&self) -> usize {
        match self {
            Job::Message { ev, .. } => ev.data.len(),
            Job::PingPong(PingPongEvent::Ping(p) | PingPongEvent::Pong(p)) => {
                p.len() + mem::size_of::<Job>()
            }
            Job::Settled(_) | Job::Other(_) | Job::Delivered(_) => 0,
        }
    }
}

/// The fields that every message and every send touch come first, in this
/// order (`repr(C)`), next to the lock's own word: with many connections,
/// each one's state is out of the CPU's cache by the time its next message
/// comes, and every cache line touched costs a miss.
#[repr(C)]
struct Inner {
    /// Commands for the driver, in order. A queue under this lock rather
    /// than a channel: `send` takes the lock anyway, and an idle task keeps
    /// no channel blocks (a tokio channel holds 4 KiB blocks per task).
    commands: VecDeque<Command>,
    /// The driver's one waker, and what it waits for.
    engine: EngineWaker,
    held: VecDeque<Data>,
    recv_wakers: Vec<Waker>,
    message_listeners: usize,
    ping_pong_listeners: usize,
    /// The outcomes of sends, for their `Completion`s.
    sends: Ledger,
    /// Sends without callbacks that wait, in order, for `buffered` to drop
    /// below the high-water mark (they are counted in `buffered` already).
    waiting: VecDeque<(usize, Command)>,
    /// The driver ended: commands fail at once.
    driver_gone: bool,
    dispatching: bool,
    jobs: VecDeque<Job>,
    waiting_bytes: usize,
    /// The last open and error events, for listeners registered late;
    /// shared with the jobs that deliver them rather than copied.
    open: Option<Arc<OpenEvent>>,
    error: Option<Arc<ErrorEvent>>,
    close: Option<CloseEvent>,
    protocol: String,
    /// Woken once an open or close event has been delivered.
    open_wakers: Vec<Waker>,
    /// The listeners of the last open have run (reset by a reconnect).
    open_delivered: bool,
    /// The listeners of the close have run.
    close_delivered: bool,
    listeners: Listeners,
}

/// The state shared by the handles of a task and its driver.
pub(crate) struct Shared {
    pub(crate) id: u64,
    /// Bytes of sends accepted but not yet handed to the transport.
    buffered: AtomicUsize,
    /// The high-water mark of `buffered`.
    max_buffered: usize,
    /// Bytes of the messages held for `recv`. Changed under the lock; read
    /// without it by the driver's check before every read.
    held_bytes: AtomicUsize,
    /// Whether `Inner::waiting` holds sends (read without the lock on the
    /// hot path of every settled send).
    has_waiting: AtomicBool,
    /// A `close` was handed to the driver: it takes every command at once
    /// (the close deadline starts only once the close frame is queued).
    close_queued: AtomicBool,
    /// Whether `forgotten` holds numbers (read without its lock).
    has_forgotten: AtomicBool,
    state: AtomicU8,
    max_held: usize,
    queue_until_open: bool,
    inner: Mutex<Inner>,
    /// Sends whose `Completion` was dropped while `inner` was locked.
    forgotten: Mutex<Vec<u64>>,
}

impl Shared {
    pub(crate) fn new(max_held: usize, queue_until_open: bool, max_buffered: usize) -> Arc<Self> {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Arc::new(Shared {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            buffered: AtomicUsize::new(0),
            max_buffered,
            held_bytes: AtomicUsize::new(0),
            has_waiting: AtomicBool::new(false),
            close_queued: AtomicBool::new(false),
            has_forgotten: AtomicBool::new(false),
            state: AtomicU8::new(ReadyState::Connecting as u8),
            max_held,
            queue_until_open,
            inner: Mutex::new(Inner {
                open: None,
                error: None,
                close: None,
                protocol: String::new(),
                held: VecDeque::new(),
                recv_wakers: Vec::new(),
                open_wakers: Vec::new(),
                open_delivered: false,
                close_delivered: false,
                listeners: Listeners::default(),
                message_listeners: 0,
                ping_pong_listeners: 0,
                sends: Ledger::default(),
                jobs: VecDeque::new(),
                dispatching: false,
                waiting: VecDeque::new(),
                waiting_bytes: 0,
                commands: VecDeque::new(),
                engine: EngineWaker::default(),
                driver_gone: false,
            }),
            forgotten: Mutex::new(Vec::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn ready_state(&self) -> ReadyState {
        ReadyState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Moves the state from `from` to `to`; says whether it was `from`.
    fn transition(&self, from: ReadyState, to: ReadyState) -> bool {
        self.state
            .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// A `close` was called: CLOSING from now on, whether the task was open
    /// or still connecting (as `WebSocket.close()` in a browser).
    fn begin_close(&self) {
        if !self.transition(ReadyState::Connecting, ReadyState::Closing) {
            self.set_closing();
        }
    }

    /// Queues a job and runs the queue unless another thread is running it.
    /// Jobs run one at a time, in order, with no lock held, so callbacks may
    /// call back into the task.
    fn dispatch(&self, job: Job) {
        let mut inner = self.lock();
        inner.jobs.push_back(job);
        self.run_jobs(inner);
    }

    fn run_jobs(&self, inner: MutexGuard<'_, Inner>) {
        drop(self.run_jobs_locked(inner));
    }

    /// Runs the jobs as [`Shared::run_jobs`] does; returns with the lock
    /// held again.
    fn run_jobs_locked<'a>(&'a self, mut inner: MutexGuard<'a, Inner>) -> MutexGuard<'a, Inner> {
        if inner.dispatching {
            return inner;
        }
        inner.dispatching = true;
        // Out of the lock while the jobs run; listeners registered meanwhile
        // join them after each job, so the next job sees them.
        let mut listeners = mem::take(&mut inner.listeners);
        while let Some(job) = inner.jobs.pop_front() {
            if let Job::Delivered(which) = job {
                match which {
                    Delivered::Open => inner.open_delivered = true,
                    Delivered::Close => inner.close_delivered = true,
                }
                inner.open_wakers.drain(..).for_each(Waker::wake);
                continue;
            }
            drop(inner);
            let held = job.held_len();
            // A panicking callback must not take the connection down with it.
            let _ = catch_unwind(AssertUnwindSafe(|| job.run(&mut listeners)));
            inner = self.lock();
            listeners.merge(&mut inner.listeners);
            if held > 0 {
                self.held_bytes.fetch_sub(held, Ordering::Relaxed);
                // A driver that paused for this listener reads again.
                if let Some(w) = inner.engine.wake_for(WAITS_ROOM) {
                    w.wake();
                }
            }
        }
        inner.listeners = listeners;
        inner.dispatching = false;
        // Queues keep the room of their longest burst: give it back once
        // drained, so that a task that is idle now stays small.
        if inner.jobs.capacity() > SMALL_QUEUE {
            inner.jobs = VecDeque::new();
        }
        inner
    }

    /// The global listeners that an event of this task goes to now: those of
    /// `kind` if the task is the oldest live one, else none. (Taken when the
    /// event happens, under the task's lock: a listener registered later
    /// gets the event replayed instead, never twice.)
    fn global_list<E>(
        &self,
        kind: impl FnOnce(&crate::global::Lists) -> &crate::global::List<E>,
    ) -> Option<crate::global::List<E>> {
        crate::global::is_current(self.id).then(|| kind(&crate::global::lists()).clone())
    }

    /// Adds a global listener while this task is the oldest live one, and
    /// tells it at once what a late task listener would be told: the open or
    /// the error that already happened, the messages held for a consumer.
    /// Gives the listener back if the task has closed (it is no longer the
    /// oldest live one).
    pub(crate) fn add_global(
        &self,
        listener: crate::global::NewListener,
    ) -> Result<(), crate::global::NewListener> {
        use crate::global::{NewListener, Slot};
        /// A job that tells `slot` alone the event that already happened.
        fn replay<E: Clone + Send + Sync + 'static>(
            slot: Slot<E>,
            ev: &Option<Arc<E>>,
        ) -> Option<Job> {
            let ev = ev.clone()?;
            let list = Arc::new(vec![slot]);
            Some(Job::other(move |_| crate::global::fire(&list, &*ev)))
        }
        let mut inner = self.lock();
        if inner.close.is_some() {
            return Err(listener);
        }
        listener.add_to_lists();
        let job = match listener {
            NewListener::Open(slot) => replay(slot, &inner.open),
            NewListener::Error(slot) => replay(slot, &inner.error),
            NewListener::Message(_) => {
                self.held_to_jobs(&mut inner, true);
                None
            }
            NewListener::Close(_) => None,
        };
        inner.jobs.extend(job);
        self.run_jobs(inner);
        Ok(())
    }

    /// Moves the held messages to the dispatcher, in order (they stay
    /// counted in the held bytes until their job has run).
    fn held_to_jobs(&self, inner: &mut Inner, global: bool) {
        while let Some(data) = inner.held.pop_front() {
            let ev = MessageEvent { data };
            inner.jobs.push_back(Job::Message { ev, global });
        }
    }

    /// This task became the oldest live one: the messages it held go to the
    /// global `on_socket_message` listeners, if there are any.
    fn became_current(&self) {
        if !crate::global::takes_messages(self.id) {
            return;
        }
        let mut inner = self.lock();
        if inner.close.is_none() && !inner.held.is_empty() {
            self.held_to_jobs(&mut inner, true);
            self.run_jobs(inner);
        }
    }

    /// Settles send `seq` in the ledger and wakes its `Completion` (with
    /// the lock released).
    fn settle_send(&self, seq: u64, outcome: Outcome) {
        self.settle_send_locked(self.lock(), seq, outcome);
    }

    /// Runs the callbacks of send `seq` (`job`), then settles it in the
    /// ledger, under one lock (but for the callbacks themselves).
    fn dispatch_settled(&self, job: Job, seq: u64, outcome: Outcome) {
        let mut inner = self.lock();
        inner.jobs.push_back(job);
        let inner = self.run_jobs_locked(inner);
        self.settle_send_locked(inner, seq, outcome);
    }

    fn settle_send_locked(&self, mut inner: MutexGuard<'_, Inner>, seq: u64, outcome: Outcome) {
        let forgotten = self.take_forgotten(&mut inner);
        let aside = inner.sends.settle(seq, outcome);
        drop(inner);
        aside.finish();
        drop(forgotten);
    }

    /// A send's `Completion` was dropped. It never waits for the lock: a
    /// `Completion` may be dropped while this thread holds it (by a waker or
    /// a value that owned it and that the lock's holder dropped), or while
    /// another thread does. Then the number waits in `forgotten` for the
    /// next send or settle.
    fn forget_send(&self, seq: u64) {
        let mut inner = match self.inner.try_lock() {
            Ok(inner) => inner,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                self.forgotten
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(seq);
                self.has_forgotten.store(true, Ordering::Release);
                return;
            }
        };
        let aside = inner.sends.forget(seq);
        drop(inner);
        aside.finish();
    }

    /// Forgets the sends of `Completion`s dropped while the lock was taken;
    /// returns what to drop once it is released.
    fn take_forgotten(&self, inner: &mut Inner) -> Vec<Aside> {
        if !self.has_forgotten.load(Ordering::Acquire) {
            return Vec::new();
        }
        self.has_forgotten.store(false, Ordering::Release);
        let seqs = mem::take(
            &mut *self
                .forgotten
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        seqs.into_iter()
            .map(|seq| inner.sends.forget(seq))
            .collect()
    }

    /// Queues a command for the driver and wakes it (after the lock is
    /// released); gives the command back if the driver is gone.
    fn try_submit(&self, mut inner: MutexGuard<'_, Inner>, cmd: Command) -> Result<(), Command> {
        if inner.driver_gone {
            return Err(cmd);
        }
        let why = if matches!(cmd, Command::Close { .. }) {
            self.begin_close();
            self.close_queued.store(true, Ordering::Release);
            WAITS_COMMANDS | WAITS_CLOSE
        } else {
            WAITS_COMMANDS
        };
        inner.commands.push_back(cmd);
        let waker = inner.engine.wake_for(why);
        drop(inner);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Moves waiting sends to the driver, in order, while the buffer is
    /// below its high-water mark. The hand-over happens under the lock, so
    /// that two threads releasing at once cannot swap two messages.
    fn release_waiting(&self) {
        let mut waker = None;
        {
            let mut inner = self.lock();
            if inner.driver_gone {
                // Every waiting send fails: all of them at once, so that
                // failing one (which releases its bytes, and so calls this
                // again) finds none left, however many there are.
                drop(inner);
                self.fail_waiting(&SocketError::not_connected(Api::SendSocketMessage));
                return;
            }
            while let Some(&(len, _)) = inner.waiting.front() {
                let in_flight = self.buffered.load(Ordering::Acquire) - inner.waiting_bytes;
                if in_flight > 0 && in_flight + len > self.max_buffered {
                    break;
                }
                let Some((_, cmd)) = inner.waiting.pop_front() else {
                    break;
                };
                inner.waiting_bytes -= len;
                if inner.waiting.is_empty() {
                    self.has_waiting.store(false, Ordering::Release);
                }
                inner.commands.push_back(cmd);
                waker = waker.or(inner.engine.wake_for(WAITS_COMMANDS));
            }
        }
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn take_held(&self, inner: &mut Inner) -> Option<Data> {
        let data = inner.held.pop_front()?;
        self.held_bytes.fetch_sub(data.len(), Ordering::Relaxed);
        if inner.held.is_empty() && inner.held.capacity() > SMALL_QUEUE {
            inner.held = VecDeque::new();
        }
        if let Some(w) = inner.engine.wake_for(WAITS_ROOM) {
            w.wake();
        }
        Some(data)
    }

    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<Data>> {
        let mut inner = self.lock();
        if let Some(data) = self.take_held(&mut inner) {
            return Poll::Ready(Some(data));
        }
        if inner.close.is_some() {
            return Poll::Ready(None);
        }
        register(&mut inner.recv_wakers, cx);
        Poll::Pending
    }

    /// The error that kept the task from opening, once it closed unopened.
    pub(crate) fn open_failure(&self) -> Option<SocketError> {
        let inner = self.lock();
        if inner.open.is_some() || inner.close.is_none() {
            return None;
        }
        Some(inner.error.as_ref().map_or_else(
            || {
                SocketError::new(
                    Api::ConnectSocket,
                    ErrorKind::Aborted,
                    "closed before the connection was established",
                )
            },
            |e| e.error.clone(),
        ))
    }

    fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<CloseEvent> {
        let mut inner = self.lock();
        if let (Some(ev), true) = (&inner.close, inner.close_delivered) {
            return Poll::Ready(ev.clone());
        }
        register(&mut inner.open_wakers, cx);
        Poll::Pending
    }

    fn poll_open(&self, cx: &mut Context<'_>) -> Poll<Result<(), SocketError>> {
        let mut inner = self.lock();
        // While reconnecting (CONNECTING after an open), wait for the new
        // open; and for its listeners (or the close's) to have run.
        let delivered = inner.open_delivered || inner.close_delivered;
        if inner.open.is_some() && self.ready_state() != ReadyState::Connecting && delivered {
            return Poll::Ready(Ok(()));
        }
        if inner.close.is_some() && inner.close_delivered {
            drop(inner);
            return Poll::Ready(Err(self.open_failure().unwrap_or_else(|| {
                SocketError::new(
                    Api::ConnectSocket,
                    ErrorKind::Closed,
                    "the connection closed",
                )
            })));
        }
        register(&mut inner.open_wakers, cx);
        Poll::Pending
    }
}

/// One WebSocket connection: what `uni.connectSocket` returns.
///
/// The handle is cheap to clone; every clone refers to the same connection.
/// The connection lives on while it is open even when every handle is
/// dropped, as in JavaScript: close it with [`SocketTask::close`].
///
/// Await the task (or call [`SocketTask::opened`]) to wait until it is OPEN:
///
/// ```no_run
/// # async fn demo() -> Result<(), unisocket::SocketError> {
/// use unisocket::{connect_socket, CloseOptions, ConnectOptions};
///
/// let task = connect_socket(ConnectOptions::new("ws://127.0.0.1:9001")).await?;
/// task.send("hello").await?;
/// while let Some(msg) = task.recv().await {
///     println!("{msg:?}");
///     break;
/// }
/// task.close(CloseOptions::default()).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SocketTask {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for SocketTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketTask")
            .field("ready_state", &self.ready_state())
            .finish_non_exhaustive()
    }
}

impl SocketTask {
    /// Sends a text or binary message (`SocketTask.send`).
    ///
    /// ```no_run
    /// # async fn demo(task: unisocket::SocketTask) {
    /// use unisocket::SendOptions;
    ///
    /// task.send("text");
    /// task.send(vec![1u8, 2, 3]);
    /// task.send(SendOptions::new("with callbacks").fail(|e| eprintln!("{}", e.err_msg())));
    /// # }
    /// ```
    ///
    /// Returns at once; the [`Completion`] resolves when the whole frame has
    /// been handed to the transport, or with the reason it could not be.
    /// Sending before OPEN fails with `WebSocket is not connected` unless the
    /// task was made with `queue_until_open(true)`.
    pub fn send(&self, options: impl Into<SendOptions>) -> Completion<SendSuccess> {
        let SendOptions { data, callbacks } = options.into();
        let len = data.len();
        let fail_fast = !callbacks.is_empty();
        let shared = &self.shared;
        let before = shared.buffered.load(Ordering::Acquire);
        let state = self.ready_state();
        let mut inner = shared.lock();
        // Dropped at the end, when every path below has released the lock.
        let _forgotten = shared.take_forgotten(&mut inner);
        // The outcome goes to an entry of the ledger, made under the lock
        // that the command takes anyway: a send allocates nothing of its own.
        let seq = inner.sends.open();
        let api = Api::SendSocketMessage;
        let reply = Reply::with_sink(api, len, callbacks, shared, Sink::Ledger(seq));
        let completion = Completion::of(
            api,
            Way::Ledger {
                shared: shared.clone(),
                seq,
                success: SendSuccess::ok,
            },
        );
        let queued = state == ReadyState::Connecting && shared.queue_until_open;
        if state != ReadyState::Open && !queued {
            drop(inner);
            let err = if state == ReadyState::Closing {
                SocketError::closing(Api::SendSocketMessage)
            } else {
                SocketError::not_connected(Api::SendSocketMessage)
            };
            reply.settle(Err(err));
            return completion;
        }
        let over = before > 0 && before + len > shared.max_buffered;
        if over || !inner.waiting.is_empty() {
            // Sends without callbacks wait past the mark, for at most as
            // many bytes again: whether or not their `Completion` is kept,
            // sends never hold more than twice the mark (plus one message
            // larger than it).
            let no_room =
                !inner.waiting.is_empty() && inner.waiting_bytes + len > shared.max_buffered;
            if fail_fast || no_room {
                let waiting = inner.waiting_bytes;
                drop(inner);
                let limit = shared.max_buffered;
                let reason = if no_room {
                    format!(
                        "send buffer full: {before} bytes wait for the network, {waiting} of them past the limit of {limit} (max_buffered_bytes); no more than that may wait"
                    )
                } else {
                    format!(
                        "send buffer full: {before} bytes wait for the network, the limit is {limit} (max_buffered_bytes)"
                    )
                };
                reply.settle(Err(SocketError::new(
                    Api::SendSocketMessage,
                    ErrorKind::BufferFull,
                    reason,
                )));
            } else {
                inner.waiting_bytes += len;
                inner
                    .waiting
                    .push_back((len, Command::Send { data, reply }));
                shared.has_waiting.store(true, Ordering::Release);
                drop(inner);
                // The driver may have drained the buffer between our reading
                // `before` and queuing: look again, or this send would wait
                // for a release that never comes.
                shared.release_waiting();
            }
            return completion;
        }
        if let Err(cmd) = shared.try_submit(inner, Command::Send { data, reply }) {
            fail_command(cmd, SocketError::not_connected(Api::SendSocketMessage));
        }
        completion
    }

    /// Closes the connection (`SocketTask.close`), by default with code 1000.
    ///
    /// ```no_run
    /// # async fn demo(task: unisocket::SocketTask) -> Result<(), unisocket::SocketError> {
    /// use unisocket::CloseOptions;
    ///
    /// task.close(CloseOptions::default().code(4000).reason("bye")).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// The code must be 1000 or 3000-4999 (or, with
    /// [`CloseOptions::endpoint_code`], 1001-1003 and 1007-1011 too) and the
    /// reason at most 123 bytes
    /// of UTF-8, or the call fails at once. Closing while CONNECTING aborts
    /// the attempt. The [`Completion`] resolves when the closing handshake
    /// has completed or its timeout has passed.
    pub fn close(&self, options: CloseOptions) -> Completion<CloseSuccess> {
        let CloseOptions {
            code,
            endpoint,
            reason,
            callbacks,
        } = options;
        let (reply, completion) = Reply::new(Api::CloseSocket, 0, callbacks, &self.shared);
        let checked = if endpoint {
            check_close(code, &reason)
        } else {
            check_browser_close(code, &reason)
        };
        if let Err(e) = checked {
            reply.settle(Err(SocketError::invalid_argument(Api::CloseSocket, e)));
        } else if cfg!(target_arch = "wasm32") && check_browser_close(code, &reason).is_err() {
            // A valid endpoint code, which a page may not send.
            reply.settle(Err(SocketError::new(
                Api::CloseSocket,
                ErrorKind::Unsupported,
                format_args!(
                    "close code {code} is not supported in the browser (a page may close with 1000 or 3000-4999 only)"
                ),
            )));
        } else if self.ready_state() == ReadyState::Closed {
            reply.settle(Err(SocketError::not_connected(Api::CloseSocket)));
        } else if let Err(cmd) = self.shared.try_submit(
            self.shared.lock(),
            Command::Close {
                code,
                reason,
                reply,
            },
        ) {
            fail_command(cmd, SocketError::not_connected(Api::CloseSocket));
        }
        completion
    }

    /// Sends a ping with `payload` (at most 125 bytes); the server answers
    /// with a pong, seen by [`SocketTask::on_ping_pong`]. This is beyond the
    /// uni-app API.
    ///
    /// ```no_run
    /// # async fn demo(task: unisocket::SocketTask) -> Result<(), unisocket::SocketError> {
    /// task.on_ping_pong(|ev| println!("{ev:?}"));
    /// task.ping("are you there?").await?;
    /// # Ok(()) }
    /// ```
    pub fn ping(&self, payload: impl Into<Bytes>) -> Completion<()> {
        let payload = payload.into();
        let (reply, completion) = Reply::new(
            Api::SendSocketMessage,
            0,
            Callbacks::default(),
            &self.shared,
        );
        if let Err(e) = check_ping(&payload) {
            reply.settle(Err(SocketError::invalid_argument(
                Api::SendSocketMessage,
                e,
            )));
        } else if self.ready_state() != ReadyState::Open {
            reply.settle(Err(SocketError::not_connected(Api::SendSocketMessage)));
        } else if let Err(cmd) = self
            .shared
            .try_submit(self.shared.lock(), Command::Ping { payload, reply })
        {
            fail_command(cmd, SocketError::not_connected(Api::SendSocketMessage));
        }
        completion
    }

    /// Listens for pings and pongs from the server (pings are answered
    /// automatically). This is beyond the uni-app API.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::io::{Read, Write};
    /// # let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// # let url = format!("ws://{}/", listener.local_addr().unwrap());
    /// # std::thread::spawn(move || {
    /// #     let (mut conn, _) = listener.accept().unwrap();
    /// #     let mut buf = [0; 4096];
    /// #     let n = conn.read(&mut buf).unwrap();
    /// #     let request = String::from_utf8_lossy(&buf[..n]).into_owned();
    /// #     let key = request.lines().find_map(|l| l.strip_prefix("Sec-WebSocket-Key: ")).unwrap();
    /// #     let accept = unisocket_proto::handshake::accept_key(key);
    /// #     let head = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n");
    /// #     conn.write_all(head.as_bytes()).unwrap();
    /// #     let _ = conn.read(&mut buf); conn.write_all(&[0x89, 2, b'h', b'i']).unwrap(); std::thread::sleep(std::time::Duration::from_secs(5));
    /// # });
    /// use std::sync::mpsc;
    /// use std::time::Duration;
    /// use unisocket::{connect_socket, Bytes, ConnectOptions, PingPongEvent};
    ///
    /// // `url`: a local test server that pings with "hi" once it has heard from us.
    /// let task = connect_socket(ConnectOptions::new(url).queue_until_open(true));
    /// let (tx, rx) = mpsc::channel();
    /// task.on_ping_pong(move |ev| drop(tx.send(ev.clone())));
    /// task.send("hello");
    /// let ev = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    /// assert_eq!(ev, PingPongEvent::Ping(Bytes::from_static(b"hi"))); // already answered
    /// ```
    pub fn on_ping_pong(&self, f: impl FnMut(&PingPongEvent) + Send + 'static) {
        let mut inner = self.shared.lock();
        if inner.close.is_none() {
            inner.listeners.ping_pong.push(Box::new(f));
            inner.ping_pong_listeners += 1;
        }
    }

    /// Listens for reconnection attempts (with
    /// [`ConnectOptions::reconnect`](crate::ConnectOptions::reconnect)):
    /// called with the attempt number and the delay before it, each time the
    /// connection was lost and the task is about to try again. The task is
    /// CONNECTING meanwhile.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use std::time::Duration;
    /// use unisocket::{connect_socket, ConnectOptions, ReconnectPolicy};
    ///
    /// // A port nothing listens on: every attempt is refused.
    /// let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    /// let policy = ReconnectPolicy::default().min_delay(Duration::from_millis(10)).max_attempts(Some(3));
    /// let task = connect_socket(ConnectOptions::new(format!("ws://127.0.0.1:{port}/")).reconnect(policy));
    /// let (tx, rx) = mpsc::channel();
    /// task.on_reconnecting(move |ev| drop(tx.send(*ev)));
    /// let ev = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    /// assert!(ev.attempt >= 1 && ev.delay >= Duration::from_millis(10));
    /// ```
    pub fn on_reconnecting(&self, f: impl FnMut(&ReconnectEvent) + Send + 'static) {
        let mut inner = self.shared.lock();
        if inner.close.is_none() {
            inner.listeners.reconnecting.push(Box::new(f));
        }
    }

    /// Receives the next message, or `None` once the connection is closed and
    /// every held message has been taken.
    ///
    /// ```no_run
    /// # async fn demo(task: unisocket::SocketTask) {
    /// while let Some(data) = task.recv().await {
    ///     println!("{data:?}");
    /// }
    /// # }
    /// ```
    ///
    /// Messages go to `on_message` listeners when there are any, and are held
    /// for `recv` otherwise.
    pub async fn recv(&self) -> Option<Data> {
        std::future::poll_fn(|cx| self.shared.poll_recv(cx)).await
    }

    /// Polls for the next message (the poll form of [`SocketTask::recv`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::task::{Context, Poll, Waker};
    /// use unisocket::{connect_socket, ConnectOptions};
    ///
    /// let task = connect_socket(ConnectOptions::new("ws://"));
    /// let mut cx = Context::from_waker(Waker::noop());
    /// // Closed (no host in the URL) with nothing held: the messages have ended.
    /// assert_eq!(task.poll_recv(&mut cx), Poll::Ready(None));
    /// ```
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<Data>> {
        self.shared.poll_recv(cx)
    }

    /// Waits until the connection is OPEN, or fails with the reason it could not open.
    ///
    /// # Errors
    /// The connection failure (timeout, refused, handshake, ...).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main]
    /// # async fn main() {
    /// use unisocket::{connect_socket, ConnectOptions, ErrorKind};
    ///
    /// let task = connect_socket(ConnectOptions::new("ws://example.com/#top"));
    /// let err = task.opened().await.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::InvalidUrl); // a WebSocket URL has no fragment
    /// # }
    /// ```
    pub async fn opened(&self) -> Result<(), SocketError> {
        std::future::poll_fn(|cx| self.shared.poll_open(cx)).await
    }

    /// Waits until the task is CLOSED and returns its close event (the same
    /// one `on_close` receives).
    ///
    /// ```no_run
    /// # async fn demo(task: unisocket::SocketTask) {
    /// let ev = task.closed().await;
    /// println!("closed with {} ({})", ev.code, ev.reason);
    /// # }
    /// ```
    pub async fn closed(&self) -> CloseEvent {
        std::future::poll_fn(|cx| self.shared.poll_closed(cx)).await
    }

    /// The connection state.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main]
    /// # async fn main() {
    /// use unisocket::{connect_socket, CloseOptions, ConnectOptions, ReadyState};
    ///
    /// // A server that accepts the TCP connection but never answers the handshake.
    /// let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// let task = connect_socket(ConnectOptions::new(format!("ws://{}/", silent.local_addr().unwrap())));
    /// assert_eq!(task.ready_state(), ReadyState::Connecting);
    /// let _ = task.close(CloseOptions::default()).await; // aborts the attempt
    /// assert_eq!(task.ready_state(), ReadyState::Closed);
    /// # }
    /// ```
    pub fn ready_state(&self) -> ReadyState {
        self.shared.ready_state()
    }

    /// Bytes of messages passed to `send` that have not been handed to the
    /// transport yet (as `WebSocket.bufferedAmount`).
    ///
    /// ```no_run
    /// # async fn demo(task: unisocket::SocketTask) {
    /// if task.buffered_amount() < 1 << 20 {
    ///     task.send(vec![0u8; 64 * 1024]);
    /// }
    /// # }
    /// ```
    pub fn buffered_amount(&self) -> usize {
        self.shared.buffered.load(Ordering::Relaxed)
    }

    /// The subprotocol the server chose, or `""` (before OPEN or if none).
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket::{connect_socket, ConnectOptions};
    ///
    /// let task = connect_socket(ConnectOptions::new("ws://127.0.0.1:9/").protocols(["chat.v2", "chat.v1"]));
    /// // Empty until OPEN, and after it too if the server picked none of them.
    /// assert_eq!(task.protocol(), "");
    /// ```
    pub fn protocol(&self) -> String {
        self.shared.lock().protocol.clone()
    }

    /// Listens for the open event. Registered after the task opened, the
    /// listener is called once at once.
    ///
    /// ```no_run
    /// let task = unisocket::connect_socket(unisocket::ConnectOptions::new("ws://127.0.0.1:9001"));
    /// let t = task.clone();
    /// task.on_open(move |_| { t.send("hello"); });
    /// ```
    pub fn on_open(&self, f: impl FnMut(&OpenEvent) + Send + 'static) {
        let mut f: OpenFn = Box::new(f);
        let mut inner = self.shared.lock();
        // Once closed, listeners are called (if at all) and not kept.
        let keep = inner.close.is_none();
        if let Some(ev) = inner.open.clone() {
            inner.jobs.push_back(Job::other(move |l| {
                f(&ev);
                if keep {
                    l.open.push(f);
                }
            }));
            self.shared.run_jobs(inner);
        } else if keep {
            inner.listeners.open.push(f);
        }
    }

    /// Listens for messages. Messages held while no one listened are
    /// delivered to the first listener, in order.
    ///
    /// ```no_run
    /// let task = unisocket::connect_socket(unisocket::ConnectOptions::new("ws://127.0.0.1:9001"));
    /// task.on_message(|ev| println!("{:?}", ev.data));
    /// ```
    pub fn on_message(&self, mut f: impl FnMut(&MessageEvent) + Send + 'static) {
        let mut inner = self.shared.lock();
        if inner.close.is_some() {
            // Closed: hand this listener what is still held, then drop it.
            let held: Vec<Data> =
                std::iter::from_fn(|| self.shared.take_held(&mut inner)).collect();
            if !held.is_empty() {
                inner.jobs.push_back(Job::other(move |_| {
                    for data in held {
                        f(&MessageEvent { data });
                    }
                }));
                self.shared.run_jobs(inner);
            }
            return;
        }
        inner.listeners.message.push(Box::new(f));
        inner.message_listeners += 1;
        let global = crate::global::takes_messages(self.shared.id);
        self.shared.held_to_jobs(&mut inner, global);
        self.shared.run_jobs(inner);
    }

    /// Listens for the close event (exactly one per task). Registered after
    /// the task closed, the listener is called once at once.
    ///
    /// ```no_run
    /// let task = unisocket::connect_socket(unisocket::ConnectOptions::new("ws://127.0.0.1:9001"));
    /// task.on_close(|ev| println!("closed: {} {}", ev.code, ev.reason));
    /// ```
    pub fn on_close(&self, f: impl FnMut(&CloseEvent) + Send + 'static) {
        let mut f: CloseFn = Box::new(f);
        let mut inner = self.shared.lock();
        if let Some(ev) = inner.close.clone() {
            inner.jobs.push_back(Job::other(move |_| f(&ev)));
            self.shared.run_jobs(inner);
        } else {
            inner.listeners.close.push(f);
        }
    }

    /// Listens for errors. Registered after an error happened, the listener
    /// is called once at once with it, unless the task has opened again
    /// since (a reconnect).
    ///
    /// ```
    /// use std::sync::mpsc;
    ///
    /// let task = unisocket::connect_socket(unisocket::ConnectOptions::new("htp://x"));
    /// // The task already failed; a late listener still hears about it.
    /// let (tx, rx) = mpsc::channel();
    /// task.on_error(move |ev| tx.send(ev.err_msg.clone()).unwrap());
    /// assert!(rx.recv().unwrap().starts_with("connectSocket:fail invalid URL"));
    /// ```
    pub fn on_error(&self, f: impl FnMut(&ErrorEvent) + Send + 'static) {
        let mut f: ErrorFn = Box::new(f);
        let mut inner = self.shared.lock();
        let keep = inner.close.is_none();
        if let Some(ev) = inner.error.clone() {
            inner.jobs.push_back(Job::other(move |l| {
                f(&ev);
                if keep {
                    l.error.push(f);
                }
            }));
            self.shared.run_jobs(inner);
        } else if keep {
            inner.listeners.error.push(f);
        }
    }
}

/// Waits until the task is OPEN (the Promise form of `uni.connectSocket`).
impl IntoFuture for SocketTask {
    type Output = Result<SocketTask, SocketError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            self.opened().await?;
            Ok(self)
        })
    }
}

/// The messages of the task, ending when it closes.
impl futures_core::Stream for SocketTask {
    type Item = Data;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Data>> {
        self.shared.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each task keeps a few queued jobs' room while idle: a message job is
    /// not boxed, but it must not make every job large.
    #[test]
    fn jobs_stay_small() {
        let size = std::mem::size_of::<Job>();
        assert!(size <= 48, "Job: {size} bytes");
    }
}
