//! Where the outcomes of a task's sends wait for their [`Completion`]s,
//! without an allocation per send.
//!
//! Each send takes the next number and an entry in a queue that the task
//! keeps (under its lock, which `send` takes anyway). The driver settles the
//! entry; the `Completion` takes the outcome from it, or, dropped, says that
//! nobody will. An entry leaves the queue once both are done, so the queue
//! keeps room for the sends in flight and nothing per send. (A channel per
//! send, as `Completion`s of `close` and `ping` have, costs an allocation
//! each.)
//!
//! [`Completion`]: crate::Completion

use std::collections::{HashMap, VecDeque};
use std::task::{Context, Poll, Waker};

use crate::error::SocketError;

/// How many entries may wait behind a settled one whose `Completion` is held
/// but not polled, before that outcome moves aside (to `parked`): a caller
/// that keeps one `Completion` for a long time must not make the queue grow
/// with every later send.
const PARK_AFTER: usize = 64;

/// The outcome of a send as the ledger keeps it: the success carries nothing
/// (its `SendSuccess` is made when a `Completion` takes it), and the rare
/// error is boxed, so that entries stay small.
pub(crate) type Outcome = Result<(), Box<SocketError>>;

enum Entry {
    /// Not settled yet; `watched` while its `Completion` is held, with the
    /// waker of the task that polled it last.
    Pending { watched: bool, waker: Option<Waker> },
    /// Settled, its `Completion` held and not polled since.
    Settled(Outcome),
    /// Nothing is left to do: leaves once it reaches the front.
    Done,
}

/// The outcomes of one task's sends, numbered in the order they were made.
#[derive(Default)]
pub(crate) struct Ledger {
    /// The number of `entries[0]`.
    base: u64,
    entries: VecDeque<Entry>,
    /// Settled outcomes moved out of the queue (see [`PARK_AFTER`]), made
    /// only when a caller holds `Completion`s that long. Boxed: every task
    /// has a ledger, and few ever park an outcome (8 bytes instead of 48).
    #[allow(clippy::box_collection)]
    parked: Option<Box<HashMap<u64, Outcome>>>,
}

impl Ledger {
    /// An entry for a new send, watched by its `Completion`; returns its
    /// number.
    pub(crate) fn open(&mut self) -> u64 {
        self.entries.push_back(Entry::Pending {
            watched: true,
            waker: None,
        });
        let seq = self.base + self.entries.len() as u64 - 1;
        if self.entries.len() > PARK_AFTER {
            self.compact();
        }
        seq
    }

    fn entry(&mut self, seq: u64) -> Option<&mut Entry> {
        let i = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        self.entries.get_mut(i)
    }

    /// Settles send `seq` with `outcome`; returns the waker to wake (after
    /// the lock is released) if its `Completion` waits for it. Settling a
    /// send twice keeps the first outcome.
    pub(crate) fn settle(&mut self, seq: u64, outcome: Outcome) -> Option<Waker> {
        let entry = self.entry(seq)?;
        let waker = match entry {
            Entry::Pending {
                watched: true,
                waker,
            } => {
                let waker = waker.take();
                *entry = Entry::Settled(outcome);
                waker
            }
            Entry::Pending { watched: false, .. } => {
                *entry = Entry::Done;
                None
            }
            Entry::Settled(_) | Entry::Done => return None,
        };
        self.compact();
        waker
    }

    /// The outcome of send `seq` if it is settled (once: `None` after it
    /// was taken); otherwise keeps the waker of `cx` for it.
    pub(crate) fn poll(&mut self, seq: u64, cx: &Context<'_>) -> Poll<Option<Outcome>> {
        if seq < self.base {
            return Poll::Ready(self.take_parked(seq));
        }
        let Some(entry) = self.entry(seq) else {
            return Poll::Ready(None);
        };
        match entry {
            Entry::Pending {
                watched: true,
                waker,
            } => {
                if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            Entry::Settled(_) => {
                let Entry::Settled(outcome) = std::mem::replace(entry, Entry::Done) else {
                    unreachable!("matched above")
                };
                self.compact();
                Poll::Ready(Some(outcome))
            }
            Entry::Pending { watched: false, .. } | Entry::Done => Poll::Ready(None),
        }
    }

    /// The `Completion` of send `seq` was dropped: its outcome, if any, goes.
    pub(crate) fn forget(&mut self, seq: u64) {
        if seq < self.base {
            self.take_parked(seq);
            return;
        }
        let Some(entry) = self.entry(seq) else { return };
        match entry {
            Entry::Pending { watched, waker } => {
                *watched = false;
                *waker = None;
            }
            Entry::Settled(_) => {
                *entry = Entry::Done;
                self.compact();
            }
            Entry::Done => {}
        }
    }

    fn take_parked(&mut self, seq: u64) -> Option<Outcome> {
        let parked = self.parked.as_mut()?;
        let outcome = parked.remove(&seq);
        if parked.is_empty() {
            self.parked = None;
        }
        outcome
    }

    /// Drops the entries at the front that are done; parks a settled one
    /// that holds up more than [`PARK_AFTER`] others.
    fn compact(&mut self) {
        loop {
            match self.entries.front() {
                Some(Entry::Done) => {}
                Some(Entry::Settled(_)) if self.entries.len() > PARK_AFTER => {
                    if let Some(Entry::Settled(outcome)) = self.entries.pop_front() {
                        self.parked
                            .get_or_insert_with(Default::default)
                            .insert(self.base, outcome);
                    }
                    self.base += 1;
                    continue;
                }
                _ => break,
            }
            self.entries.pop_front();
            self.base += 1;
        }
        // A burst made the queue long: give the room back once it drained.
        if self.entries.is_empty() && self.entries.capacity() > PARK_AFTER {
            self.entries = VecDeque::new();
        }
    }

    /// Entries in the queue and outcomes parked (for tests).
    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        (
            self.entries.len(),
            self.parked.as_ref().map_or(0, |p| p.len()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Api, ErrorKind};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn waker() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (count.clone(), Waker::from(count))
    }

    fn error(reason: &str) -> Outcome {
        Err(Box::new(SocketError::new(
            Api::SendSocketMessage,
            ErrorKind::Closed,
            reason,
        )))
    }

    fn reason(outcome: Poll<Option<Outcome>>) -> String {
        match outcome {
            Poll::Ready(Some(Err(e))) => e.err_msg().to_owned(),
            other => panic!("not an error: {:?}", other.map(|o| o.map(|r| r.is_ok()))),
        }
    }

    #[test]
    fn a_polled_send_is_woken_once_settled_and_takes_its_outcome_once() {
        let mut l = Ledger::default();
        let (count, w) = waker();
        let cx = Context::from_waker(&w);
        let seq = l.open();
        assert!(l.poll(seq, &cx).is_pending());
        assert!(l.poll(seq, &cx).is_pending(), "polled again");
        let to_wake = l.settle(seq, Ok(()));
        to_wake.expect("a waker").wake();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(matches!(l.poll(seq, &cx), Poll::Ready(Some(Ok(())))));
        assert!(matches!(l.poll(seq, &cx), Poll::Ready(None)), "taken once");
        assert_eq!(l.len(), (0, 0));
    }

    #[test]
    fn outcomes_settled_out_of_order_reach_their_own_sends() {
        let mut l = Ledger::default();
        let (_, w) = waker();
        let cx = Context::from_waker(&w);
        let seqs: Vec<u64> = (0..4).map(|_| l.open()).collect();
        // The third fails at once; the others are written later.
        assert!(l.settle(seqs[2], error("third")).is_none());
        for &s in &seqs[..2] {
            l.settle(s, Ok(()));
        }
        l.settle(seqs[2], Ok(()));
        assert_eq!(reason(l.poll(seqs[2], &cx)), "sendSocketMessage:fail third");
        assert!(matches!(l.poll(seqs[0], &cx), Poll::Ready(Some(Ok(())))));
        assert!(l.poll(seqs[3], &cx).is_pending());
        assert!(matches!(l.poll(seqs[1], &cx), Poll::Ready(Some(Ok(())))));
        l.settle(seqs[3], Ok(()));
        assert!(matches!(l.poll(seqs[3], &cx), Poll::Ready(Some(Ok(())))));
        assert_eq!(l.len(), (0, 0));
    }

    #[test]
    fn dropped_completions_leave_nothing_behind() {
        let mut l = Ledger::default();
        // Dropped before the send settles, and after.
        let a = l.open();
        let b = l.open();
        l.forget(a);
        l.settle(b, error("b"));
        l.forget(b);
        assert_eq!(l.len(), (2, 0), "`a` is not settled yet");
        assert!(l.settle(a, Ok(())).is_none(), "nobody to wake");
        assert_eq!(l.len(), (0, 0));
        // Many fire-and-forget sends keep no room once drained.
        for _ in 0..10_000 {
            let s = l.open();
            l.forget(s);
        }
        for s in 2..10_002 {
            l.settle(s, Ok(()));
        }
        assert_eq!(l.len(), (0, 0));
        assert_eq!(l.entries.capacity(), 0);
    }

    #[test]
    fn a_completion_held_for_long_does_not_make_the_queue_grow() {
        let mut l = Ledger::default();
        let (_, w) = waker();
        let cx = Context::from_waker(&w);
        let held = l.open();
        l.settle(held, error("kept"));
        for _ in 0..10_000 {
            let s = l.open();
            l.settle(s, Ok(()));
            l.forget(s);
        }
        assert_eq!(l.len(), (0, 1), "the held outcome is parked");
        assert_eq!(reason(l.poll(held, &cx)), "sendSocketMessage:fail kept");
        assert_eq!(l.len(), (0, 0));
        assert!(l.parked.is_none());
        // Held and then dropped unpolled: the parked outcome goes too.
        let held = l.open();
        l.settle(held, Ok(()));
        for _ in 0..PARK_AFTER + 1 {
            l.open();
        }
        assert_eq!(l.len(), (PARK_AFTER + 1, 1));
        l.forget(held);
        assert!(l.parked.is_none());
    }

    #[test]
    fn a_settled_send_settled_again_keeps_its_first_outcome() {
        let mut l = Ledger::default();
        let (_, w) = waker();
        let cx = Context::from_waker(&w);
        let s = l.open();
        l.settle(s, Ok(()));
        l.settle(s, error("late"));
        assert!(matches!(l.poll(s, &cx), Poll::Ready(Some(Ok(())))));
        assert!(l.settle(s, error("later")).is_none());
        assert_eq!(l.len(), (0, 0));
    }
}
