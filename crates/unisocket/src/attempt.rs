//! What every engine does around its connections, whatever moves the
//! bytes: the sends queued before open ([`Early`]), a `close` while
//! connecting or waiting to reconnect ([`Abort`]), and the end of the task.
//! The native driver and the browser engine both run their attempts on
//! these, so that `queue_until_open`, `reconnect` and the order of the
//! events are the same on both.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::error::{Api, ErrorKind, SocketError};
use crate::events::CloseEvent;
use crate::options::CloseSuccess;
use crate::reconnect::{ReconnectEvent, ReconnectPolicy};
use crate::task::{fail_command, Command, Reply, Shared};

/// How a `close` (with `code` and `reason`) while CONNECTING ends the task,
/// and the error that queued sends fail with. Before the task ever opened,
/// as a browser ends it: an error event (`unopened`), then a close with
/// 1006; the code and reason go nowhere, no connection being open. While it
/// reconnects, with the code and reason the application gave, and no error
/// event: the connection it knew was lost, and reported, already.
fn closed_while_connecting(
    shared: &Shared,
    code: u16,
    reason: String,
    unopened: &str,
    reconnecting: &str,
) -> (CloseEvent, SocketError) {
    if shared.has_opened() {
        let err = SocketError::new(Api::ConnectSocket, ErrorKind::Aborted, reconnecting);
        let close = CloseEvent {
            code,
            reason,
            was_clean: false,
        };
        return (close, err);
    }
    let err = SocketError::new(Api::ConnectSocket, ErrorKind::Aborted, unopened);
    shared.failed(err.clone());
    let close = CloseEvent {
        code: 1006,
        reason: err.reason().to_owned(),
        was_clean: false,
    };
    (close, err)
}

/// Closes the task if the driver stops without having closed it: its
/// runtime shut down (the future was dropped) or it panicked (e.g. a runtime
/// built without the time or I/O driver). Without this the task would stay
/// OPEN or CONNECTING forever.
pub(crate) struct EndGuard {
    pub shared: Arc<Shared>,
    /// Why the engine may stop without closing the task (its errMsg).
    pub stopped: &'static str,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        // Commands sent from now on, and those nobody will take, fail.
        for cmd in self.shared.close_commands() {
            fail_command(cmd, SocketError::not_connected(Api::SendSocketMessage));
        }
        if self.shared.ready_state() == crate::task::ReadyState::Closed {
            return;
        }
        let err = SocketError::new(Api::ConnectSocket, ErrorKind::Closed, self.stopped);
        let reason = err.reason().to_owned();
        self.shared.failed(err);
        self.shared.closed(CloseEvent {
            code: 1006,
            reason,
            was_clean: false,
        });
    }
}

/// How one attempt ended: the close it reports, the `close` calls it
/// answers (the application's own close), and the error that what is still
/// queued fails with.
pub(crate) struct Ended {
    close: CloseEvent,
    close_replies: Vec<Reply<CloseSuccess>>,
    cause: Option<SocketError>,
}

impl Ended {
    /// The connection closed after it was open; `close_replies` holds the
    /// application's `close` calls, if it closed it.
    pub(crate) fn closed(close: CloseEvent, close_replies: Vec<Reply<CloseSuccess>>) -> Self {
        Ended {
            close,
            close_replies,
            cause: None,
        }
    }

    /// The attempt never opened: it failed (reported now), or the
    /// application closed the task while it connected.
    pub(crate) fn unopened(shared: &Shared, abort: Abort) -> Self {
        Self::aborted(
            shared,
            abort,
            "closed before the connection was established",
            "closed while reconnecting",
        )
    }

    /// How `abort` ends the attempt; a `close` is reported with `unopened`
    /// before the task ever opened, with `reconnecting` after.
    fn aborted(shared: &Shared, abort: Abort, unopened: &str, reconnecting: &str) -> Self {
        match abort {
            Abort::ByUser {
                code,
                reason,
                reply,
            } => {
                let (close, err) =
                    closed_while_connecting(shared, code, reason, unopened, reconnecting);
                Ended {
                    close,
                    close_replies: vec![reply],
                    cause: Some(err),
                }
            }
            Abort::Failed(err) => {
                shared.failed(err.clone());
                let close = CloseEvent {
                    code: 1006,
                    reason: err.reason().to_owned(),
                    was_clean: false,
                };
                Ended {
                    close,
                    close_replies: Vec::new(),
                    cause: Some(err),
                }
            }
        }
    }

    /// Whether `policy` reconnects after this end (never after the
    /// application's close), and after how long: the `attempt` is counted
    /// and the reconnect reported.
    pub(crate) fn reconnect_delay(
        &self,
        shared: &Shared,
        policy: Option<&ReconnectPolicy>,
        attempt: &mut u32,
    ) -> Option<Duration> {
        let policy = policy.filter(|_| self.close_replies.is_empty())?;
        *attempt += 1;
        if !policy.allows(&self.close, *attempt) {
            return None;
        }
        let delay = policy.delay(*attempt, rand::random::<f64>());
        shared.reconnecting(ReconnectEvent {
            attempt: *attempt,
            delay,
        });
        Some(delay)
    }

    /// The final close of the task: fails what is still queued, reports the
    /// close, then settles the `close` calls (after the close event, so that
    /// an awaiting caller sees CLOSED).
    pub(crate) fn end_task(self, shared: &Arc<Shared>, early: &mut Early) {
        let Ended {
            close,
            close_replies,
            cause,
        } = self;
        let err = cause.unwrap_or_else(|| {
            SocketError::new(
                Api::ConnectSocket,
                ErrorKind::Closed,
                format_args!("the connection closed ({})", close.code),
            )
        });
        fail_commands(&mut early.cmds, &err);
        shared.fail_waiting(&SocketError::not_connected(Api::SendSocketMessage));
        finish(shared, close);
        for reply in close_replies {
            reply.settle(Ok(CloseSuccess {
                err_msg: Api::CloseSocket.ok_msg(),
            }));
        }
    }
}

/// The application's `close` while waiting to reconnect ends the task.
pub(crate) fn end_during_backoff(shared: &Arc<Shared>, early: &mut Early, abort: Abort) {
    let why = "closed while waiting to reconnect";
    Ended::aborted(shared, abort, why, why).end_task(shared, early);
}

/// Sends made before open (with `queue_until_open`), bounded in bytes.
pub(crate) struct Early {
    cmds: VecDeque<Command>,
    bytes: usize,
    max: usize,
    /// `queue_until_open`: without it, sends that reach the driver while it
    /// is not connected (sent just before the connection dropped) fail.
    enabled: bool,
}

impl Early {
    pub(crate) fn new(enabled: bool, max: usize) -> Self {
        Early {
            cmds: VecDeque::new(),
            bytes: 0,
            max,
            enabled,
        }
    }

    pub(crate) fn push(&mut self, cmd: Command) {
        let len = match &cmd {
            Command::Send { data, .. } => data.len(),
            _ => 0,
        };
        if !self.enabled && !matches!(cmd, Command::Close { .. }) {
            fail_command(cmd, SocketError::not_connected(Api::SendSocketMessage));
            return;
        }
        if self.bytes + len > self.max && len > 0 {
            let err = SocketError::new(
                Api::SendSocketMessage,
                ErrorKind::BufferFull,
                format_args!(
                    "send queue full: {} bytes wait for the open, the limit is {} (max_queued_bytes)",
                    self.bytes, self.max
                ),
            );
            fail_command(cmd, err);
            return;
        }
        self.bytes += len;
        self.cmds.push_back(cmd);
    }

    pub(crate) fn drain(&mut self) -> impl Iterator<Item = Command> + '_ {
        self.bytes = 0;
        self.cmds.drain(..)
    }

    /// Gives back the room of the queue once drained: it is used only while
    /// the connection is down, and a task that kept it would hold the
    /// largest queue of all its reconnects.
    pub(crate) fn shrink(&mut self) {
        if self.cmds.is_empty() {
            self.cmds = VecDeque::new();
        }
    }
}

/// Why the connection never opened.
pub(crate) enum Abort {
    Failed(SocketError),
    /// A `close`, with the code and reason it was given.
    ByUser {
        code: u16,
        reason: String,
        reply: Reply<CloseSuccess>,
    },
}

/// Waits for a `close` during CONNECTING; sends made meanwhile (with
/// `queue_until_open`) are kept for the open.
pub(crate) async fn wait_for_abort(shared: &Shared, early: &mut Early) -> Abort {
    loop {
        let cmd = poll_fn(|cx| shared.poll_command(cx)).await;
        if let Some(abort) = abort_or_keep(cmd, early) {
            return abort;
        }
    }
}

/// A `close` while CONNECTING aborts; other commands wait for the open.
fn abort_or_keep(cmd: Command, early: &mut Early) -> Option<Abort> {
    match cmd {
        Command::Close {
            code,
            reason,
            reply,
        } => Some(Abort::ByUser {
            code,
            reason,
            reply,
        }),
        cmd => {
            early.push(cmd);
            None
        }
    }
}

/// The `close` that made the task CLOSING before it could open. It is
/// queued already: `close` queues it under the lock that this takes.
pub(crate) fn take_abort(shared: &Shared, early: &mut Early) -> Abort {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    while let Poll::Ready(cmd) = shared.poll_command(&mut cx) {
        if let Some(abort) = abort_or_keep(cmd, early) {
            return abort;
        }
    }
    // Not reached: CLOSING before OPEN comes from a queued `close` alone.
    Abort::Failed(SocketError::new(
        Api::ConnectSocket,
        ErrorKind::Aborted,
        "closed before the connection was established",
    ))
}

/// Waits `delay` before a reconnect; a `close` meanwhile ends the wait.
/// Waits for `sleep` (the engine's timer of the backoff delay) before a
/// reconnect; a `close` meanwhile ends the wait.
pub(crate) async fn wait_backoff(
    shared: &Shared,
    early: &mut Early,
    sleep: impl Future<Output = ()>,
) -> Option<Abort> {
    let mut sleep = pin!(sleep);
    let mut abort = pin!(wait_for_abort(shared, early));
    poll_fn(|cx| {
        if let Poll::Ready(abort) = abort.as_mut().poll(cx) {
            return Poll::Ready(Some(abort));
        }
        sleep.as_mut().poll(cx).map(|()| None)
    })
    .await
}

fn fail_commands(cmds: &mut VecDeque<Command>, err: &SocketError) {
    for cmd in cmds.drain(..) {
        fail_command(cmd, err.clone());
    }
}

/// Reports the close and fails whatever was asked after the end.
fn finish(shared: &Arc<Shared>, close: CloseEvent) {
    shared.closed(close);
    for cmd in shared.close_commands() {
        fail_command(cmd, SocketError::not_connected(Api::SendSocketMessage));
    }
}
