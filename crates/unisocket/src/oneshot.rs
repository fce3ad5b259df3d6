//! A one-value channel: the outcome of a `close` or a `ping` for its
//! [`Completion`](crate::Completion). Its own (a mutex and a waker) so that
//! the API layer needs no runtime crate, in the browser as natively.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

struct State<T> {
    value: Option<T>,
    waker: Option<Waker>,
    sender_gone: bool,
    receiver_gone: bool,
}

type Slot<T> = Arc<Mutex<State<T>>>;

fn lock<T>(slot: &Slot<T>) -> MutexGuard<'_, State<T>> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The sending half: sends once; dropping it unsent ends the receiver's
/// wait with [`Dropped`].
pub(crate) struct Sender<T>(Slot<T>);

/// The receiving half: a future of the value.
pub(crate) struct Receiver<T>(Slot<T>);

/// The sender was dropped without sending.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Dropped;

pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Arc::new(Mutex::new(State {
        value: None,
        waker: None,
        sender_gone: false,
        receiver_gone: false,
    }));
    (Sender(slot.clone()), Receiver(slot))
}

impl<T> Sender<T> {
    /// Sends `value`; gives it back if the receiver is gone.
    pub(crate) fn send(self, value: T) -> Result<(), T> {
        let waker = {
            let mut state = lock(&self.0);
            if state.receiver_gone {
                return Err(value);
            }
            state.value = Some(value);
            state.waker.take()
        };
        // Woken with the lock released; `Drop` then finds nothing to wake.
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Whether the receiver is gone (nobody would see a value).
    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.0).receiver_gone
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut state = lock(&self.0);
            state.sender_gone = true;
            state.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Result<T, Dropped>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = lock(&self.0);
        if let Some(value) = state.value.take() {
            return Poll::Ready(Ok(value));
        }
        if state.sender_gone {
            return Poll::Ready(Err(Dropped));
        }
        match &mut state.waker {
            Some(w) => w.clone_from(cx.waker()),
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = lock(&self.0);
        state.receiver_gone = true;
        state.waker = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll<T>(rx: &mut Receiver<T>) -> Poll<Result<T, Dropped>> {
        Pin::new(rx).poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn value_sent_before_or_after_the_first_poll_arrives() {
        let (tx, mut rx) = channel();
        assert!(poll(&mut rx).is_pending());
        assert_eq!(tx.send(7), Ok(()));
        assert_eq!(poll(&mut rx), Poll::Ready(Ok(7)));
        let (tx, mut rx) = channel();
        tx.send("early").unwrap();
        assert_eq!(poll(&mut rx), Poll::Ready(Ok("early")));
    }

    #[test]
    fn a_dropped_sender_ends_the_wait_and_a_dropped_receiver_closes() {
        let (tx, mut rx) = channel::<u8>();
        drop(tx);
        assert_eq!(poll(&mut rx), Poll::Ready(Err(Dropped)));
        let (tx, rx) = channel();
        assert!(!tx.is_closed());
        drop(rx);
        assert!(tx.is_closed());
        assert_eq!(tx.send(1), Err(1));
    }
}
