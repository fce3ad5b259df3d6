//! The seam between the API layer and the engine that moves the bytes.
//!
//! The API layer ([`SocketTask`](super::SocketTask), its listeners and
//! dispatcher, [`Completion`](super::Completion)s, the global functions)
//! and an engine (today `driver`, over tokio's sockets) meet in
//! [`Shared`], and only through what this file holds:
//!
//! - commands in: the engine takes the handles' [`Command`]s
//!   ([`Shared::poll_command`], [`Shared::close_queued`],
//!   [`Shared::close_commands`]) and settles the [`Reply`] each carries;
//! - room: it asks whether the application has room for more messages
//!   before it reads ([`Shared::held_full`], [`Shared::held_empty`]), with
//!   one waker that the handles wake for what it waits for;
//! - events out: the open ([`Shared::begin_open`], [`Shared::opened`]),
//!   messages, pings and pongs, closing, errors, reconnects, the close.
//!
//! An engine calls nothing else of the API layer, so that another one (the
//! browser's `WebSocket`) can be put behind the same calls.

use std::collections::VecDeque;
use std::mem;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use super::{
    set_waker, Delivered, Job, Listeners, ReadyState, Reply, Shared, READ_AHEAD, SMALL_QUEUE,
};
use crate::data::Data;
use crate::error::{Api, SocketError};
use crate::events::{CloseEvent, ErrorEvent, MessageEvent, OpenEvent, PingPongEvent};
use crate::options::{CloseSuccess, SendSuccess};
use crate::reconnect::ReconnectEvent;

/// What the handles ask of the connection's driver.
pub(crate) enum Command {
    Send {
        data: Data,
        reply: Reply<SendSuccess>,
    },
    Ping {
        payload: Bytes,
        reply: Reply<()>,
    },
    Close {
        code: u16,
        reason: String,
        reply: Reply<CloseSuccess>,
    },
}

/// Fails a command with `err` (reported for the command's own API).
pub(crate) fn fail_command(cmd: Command, err: SocketError) {
    match cmd {
        Command::Send { reply, .. } => reply.settle(Err(err.for_api(Api::SendSocketMessage))),
        Command::Ping { reply, .. } => reply.settle(Err(err.for_api(Api::SendSocketMessage))),
        Command::Close { reply, .. } => reply.settle(Err(err.for_api(Api::CloseSocket))),
    }
}

/// The engine waits for a command ([`Shared::poll_command`]).
pub(super) const WAITS_COMMANDS: u8 = 1;
/// The engine waits for room among the held messages, or for them to be
/// taken ([`Shared::held_full`], [`Shared::held_empty`]).
pub(super) const WAITS_ROOM: u8 = 2;
/// The engine, its write buffer full, takes no commands but a `close`
/// ([`Shared::close_queued`]).
pub(super) const WAITS_CLOSE: u8 = 4;

/// The engine's one waker, and what it waits for: a handle wakes it only
/// for something it waits for (a consumer taking a message does not wake
/// an engine that only waits for commands), and every wake-up forgets all
/// the reasons: the engine's next turn asks again for what it still needs.
#[derive(Default)]
pub(super) struct EngineWaker {
    waker: Option<Waker>,
    waits: u8,
}

impl EngineWaker {
    pub(super) fn wait(&mut self, why: u8, cx: &Context<'_>) {
        set_waker(&mut self.waker, cx);
        self.waits |= why;
    }

    /// The waker, if the engine waits for any of `why`.
    pub(super) fn wake_for(&mut self, why: u8) -> Option<Waker> {
        if self.waits & why == 0 {
            return None;
        }
        self.waits = 0;
        self.waker.take()
    }
}

/// The engine's side of [`Shared`].
impl Shared {
    /// The handshake completed: OPEN, unless a `close` came first (then the
    /// connection is abandoned, as a browser abandons it).
    pub(crate) fn begin_open(&self) -> bool {
        self.transition(ReadyState::Connecting, ReadyState::Open)
    }

    pub(crate) fn opened(&self, ev: OpenEvent) {
        let mut inner = self.lock();
        inner.protocol.clone_from(&ev.protocol);
        let ev = Arc::new(ev);
        inner.open = Some(ev.clone());
        // The error of an earlier connection is over once this one is open:
        // it is not told to listeners registered from now on (and a task
        // that reconnects for hours does not keep one per task for ever).
        inner.error = None;
        let global = self.global_list(|l| &l.open);
        inner.jobs.push_back(Job::other(move |l| {
            l.open.iter_mut().for_each(|f| f(&ev));
            if let Some(list) = global {
                crate::global::fire(&list, &*ev);
            }
        }));
        // `opened()` returns once the listeners have run.
        inner.jobs.push_back(Job::Delivered(Delivered::Open));
        self.run_jobs(inner);
    }

    /// Delivers one turn's messages, in order, under one lock; says whether
    /// they were held for `recv` (no message listener took them).
    pub(crate) fn messages(&self, batch: &mut Vec<Data>) -> bool {
        if batch.is_empty() {
            return false;
        }
        let mut inner = self.lock();
        let global = crate::global::takes_messages(self.id);
        if inner.message_listeners > 0 || global {
            // Messages held before a listener came (the task became the
            // oldest live one, say) go first.
            self.held_to_jobs(&mut inner, global);
            let mut bytes = 0;
            for data in batch.drain(..) {
                bytes += data.len();
                let ev = MessageEvent { data };
                inner.jobs.push_back(Job::Message { ev, global });
            }
            self.held_bytes.fetch_add(bytes, Ordering::Relaxed);
            self.run_jobs(inner);
            false
        } else {
            for data in batch.drain(..) {
                self.held_bytes.fetch_add(data.len(), Ordering::Relaxed);
                inner.held.push_back(data);
            }
            inner.recv_wakers.drain(..).for_each(Waker::wake);
            true
        }
    }

    pub(crate) fn set_closing(&self) {
        self.transition(ReadyState::Open, ReadyState::Closing);
    }

    /// The connection was lost and another attempt is scheduled.
    pub(crate) fn reconnecting(&self, ev: ReconnectEvent) {
        let mut inner = self.lock();
        inner.open_delivered = false;
        // Unless the application called `close`: that one ends the task.
        if !self.close_queued.load(Ordering::Acquire) {
            self.state
                .store(ReadyState::Connecting as u8, Ordering::Release);
        }
        inner.jobs.push_back(Job::other(move |l| {
            l.reconnecting.iter_mut().for_each(|f| f(&ev))
        }));
        self.run_jobs(inner);
    }

    pub(crate) fn ping_pong(&self, ev: PingPongEvent) {
        let mut inner = self.lock();
        if inner.ping_pong_listeners == 0 {
            return;
        }
        let job = Job::PingPong(ev);
        self.held_bytes.fetch_add(job.held_len(), Ordering::Relaxed);
        inner.jobs.push_back(job);
        self.run_jobs(inner);
    }

    pub(crate) fn failed(&self, error: SocketError) {
        let mut inner = self.lock();
        let ev = Arc::new(ErrorEvent::from(error));
        inner.error = Some(ev.clone());
        let global = self.global_list(|l| &l.error);
        inner.jobs.push_back(Job::other(move |l| {
            l.error.iter_mut().for_each(|f| f(&ev));
            if let Some(list) = global {
                crate::global::fire(&list, &*ev);
            }
        }));
        self.run_jobs(inner);
    }

    pub(crate) fn closed(&self, ev: CloseEvent) {
        let mut inner = self.lock();
        inner.close = Some(ev.clone());
        self.state
            .store(ReadyState::Closed as u8, Ordering::Release);
        // The oldest live task when it closed: its close goes to the global
        // listeners, and the next task takes its place.
        let global = self.global_list(|l| &l.close);
        let next = crate::global::unregister(self.id);
        inner.recv_wakers.drain(..).for_each(Waker::wake);
        inner.jobs.push_back(Job::other(move |l| {
            l.close.iter_mut().for_each(|f| f(&ev));
            if let Some(list) = global {
                crate::global::fire(&list, &ev);
            }
        }));
        // `closed()` (and a failed `opened()`) return once they have run.
        inner.jobs.push_back(Job::Delivered(Delivered::Close));
        // No event follows the close: drop the listeners, and with them the
        // task handles they may hold (a listener that captures its own task
        // would otherwise keep the task alive for ever).
        inner
            .jobs
            .push_back(Job::other(|l| *l = Listeners::default()));
        self.run_jobs(inner);
        if let Some(next) = next {
            next.became_current();
        }
    }

    /// The next command for the driver; registers its waker if there is none.
    pub(crate) fn poll_command(&self, cx: &mut Context<'_>) -> Poll<Command> {
        let mut inner = self.lock();
        match inner.commands.pop_front() {
            Some(cmd) => {
                // A burst made the queue large: give the memory back once it
                // is drained, so that an idle task stays small.
                if inner.commands.is_empty() && inner.commands.capacity() > SMALL_QUEUE {
                    inner.commands = VecDeque::new();
                }
                Poll::Ready(cmd)
            }
            None => {
                inner.engine.wait(WAITS_COMMANDS, cx);
                Poll::Pending
            }
        }
    }

    /// Whether a `close` waits among the commands (or was taken already);
    /// if not, the driver is woken when one comes.
    pub(crate) fn close_queued(&self, cx: &mut Context<'_>) -> bool {
        if self.close_queued.load(Ordering::Acquire) {
            return true;
        }
        let mut inner = self.lock();
        // Under the lock, as `try_submit` sets the flag: no close is missed.
        if self.close_queued.load(Ordering::Acquire) {
            return true;
        }
        inner.engine.wait(WAITS_CLOSE, cx);
        false
    }

    /// Whether the held messages reached their limit; if so the driver's
    /// waker is kept and woken once a consumer takes messages.
    pub(crate) fn held_full(&self, cx: &mut Context<'_>) -> bool {
        // Reading far ahead of a slow consumer only fills memory that is
        // freed in bursts later; a little read-ahead keeps the pipe full.
        let limit = self.max_held.min(READ_AHEAD);
        if self.held_bytes.load(Ordering::Relaxed) < limit {
            // Consumers only lower it: no waker is needed.
            return false;
        }
        let mut inner = self.lock();
        // Again under the lock, which consumers take to lower it and wake
        // the driver: a wake-up cannot fall between the check and the waker.
        if self.held_bytes.load(Ordering::Relaxed) >= limit {
            inner.engine.wait(WAITS_ROOM, cx);
            true
        } else {
            false
        }
    }

    /// Whether more than `max` bytes of messages are held for `recv`.
    #[cfg(target_arch = "wasm32")]
    pub(crate) fn held_over(&self, max: usize) -> bool {
        self.held_bytes.load(Ordering::Relaxed) > max
    }

    /// Whether every held message has been taken; if not, the driver's
    /// waker is kept and woken when a consumer takes one.
    pub(crate) fn held_empty(&self, cx: &mut Context<'_>) -> bool {
        let mut inner = self.lock();
        if inner.held.is_empty() {
            true
        } else {
            inner.engine.wait(WAITS_ROOM, cx);
            false
        }
    }

    /// The driver ends: every later command fails at once; returns those
    /// still queued (the caller fails them, with no lock held).
    pub(crate) fn close_commands(&self) -> VecDeque<Command> {
        let mut inner = self.lock();
        inner.driver_gone = true;
        inner.engine = EngineWaker::default();
        mem::take(&mut inner.commands)
    }

    /// Fails every send still waiting for buffer space (the task closed).
    pub(crate) fn fail_waiting(&self, err: &SocketError) {
        let waiting: Vec<_> = {
            let mut inner = self.lock();
            inner.waiting_bytes = 0;
            self.has_waiting.store(false, Ordering::Release);
            inner.waiting.drain(..).map(|(_, c)| c).collect()
        };
        for cmd in waiting {
            fail_command(cmd, err.clone());
        }
    }

    /// Frees the room of the task's drained queues beyond `keep` entries.
    pub(crate) fn shrink_queues(&self, keep: usize) {
        let mut inner = self.lock();
        if inner.commands.is_empty() && inner.commands.capacity() > keep {
            inner.commands = VecDeque::new();
        }
        if inner.jobs.is_empty() && !inner.dispatching && inner.jobs.capacity() > keep {
            inner.jobs = VecDeque::new();
        }
        if inner.held.is_empty() && inner.held.capacity() > keep {
            inner.held = VecDeque::new();
        }
    }

    /// Whether the task was ever OPEN (it may be reconnecting now).
    pub(crate) fn has_opened(&self) -> bool {
        self.lock().open.is_some()
    }
}
