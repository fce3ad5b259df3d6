//! Where the outcomes of a task's sends wait for their [`Completion`]s,
//! without an allocation per send.
//!
//! Each send takes the next number and an entry in a queue that the task
//! keeps (under its lock, which `send` takes anyway). The driver settles the
//! entry; the `Completion` takes the outcome from it or, dropped, gives it
//! up. An entry is done once either happens, and done entries leave from
//! the front of the queue. So that one entry that stays (a send still in
//! flight, or a `Completion` held and not polled) does not hold up the
//! others behind it, an entry with more than [`PARK_AFTER`] behind it moves
//! aside, to a map. The queue thus keeps room for the sends whose
//! `Completion`s are held and little more. (A channel per send, as the
//! `Completion`s of `close` and `ping` have, costs an allocation each.)
//!
//! [`Completion`]: crate::Completion

use std::collections::{HashMap, VecDeque};
use std::task::{Context, Poll, Waker};

use crate::error::SocketError;
use crate::task::set_waker;

/// How many entries may wait behind one that is not done before that one
/// moves aside (to `parked`).
const PARK_AFTER: usize = 64;

/// How many entries' room a drained queue keeps.
const KEEP: usize = 16;

/// The outcome of a send as the ledger keeps it: the success carries nothing
/// (its `SendSuccess` is made when a `Completion` takes it), and the rare
/// error is boxed, so that entries stay small.
pub(crate) type Outcome = Result<(), Box<SocketError>>;

enum Entry {
    /// Not settled yet; its `Completion` is held, and polled last by the
    /// task of this waker.
    Pending(Option<Waker>),
    /// Settled; its `Completion` is held and has not taken the outcome.
    Settled(Outcome),
    /// Nobody will look at it again: leaves once it reaches the front.
    Done,
}

/// What a ledger call leaves for after the task's lock is released: the
/// waker of a `Completion` to wake, and what to drop (an entry, or a waker
/// replaced). A waker, or the source of an error, may own anything, even
/// another `Completion` of this task, whose drop takes the lock.
#[derive(Default)]
#[must_use = "wake and drop it once the lock is released"]
pub(crate) struct Aside {
    wake: Option<Waker>,
    old: Option<Entry>,
}

impl Aside {
    /// Wakes the `Completion` (if any) and drops the rest; call it with no
    /// lock held.
    pub(crate) fn finish(self) {
        if let Some(w) = self.wake {
            w.wake();
        }
    }
}

/// The ledger's queue: the first entry in place, the others on the heap. A
/// task that awaits each send before the next (most do) has one entry at a
/// time, and then touches no memory beyond the task's own state: with many
/// connections, each other cache line is a miss.
#[derive(Default)]
struct Entries {
    first: Option<Entry>,
    rest: VecDeque<Entry>,
}

impl Entries {
    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// Room on the heap.
    fn capacity(&self) -> usize {
        self.rest.capacity()
    }

    fn push_back(&mut self, entry: Entry) {
        if self.first.is_none() {
            self.first = Some(entry);
        } else {
            self.rest.push_back(entry);
        }
    }

    fn front(&self) -> Option<&Entry> {
        self.first.as_ref()
    }

    fn pop_front(&mut self) -> Option<Entry> {
        let first = self.first.take();
        self.first = self.rest.pop_front();
        first
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut Entry> {
        match i.checked_sub(1) {
            None => self.first.as_mut(),
            Some(i) => self.rest.get_mut(i),
        }
    }
}

/// The outcomes of one task's sends, numbered in the order they were made.
#[derive(Default)]
pub(crate) struct Ledger {
    /// The number of `entries[0]`.
    base: u64,
    entries: Entries,
    /// Entries moved out of the queue, never `Done`; made only when a
    /// `Completion` is held, or a send stays in flight, while more than
    /// [`PARK_AFTER`] others are made. Boxed: every task has a ledger, and
    /// few ever park an entry (8 bytes instead of 48).
    #[allow(clippy::box_collection)]
    parked: Option<Box<HashMap<u64, Entry>>>,
}

impl Ledger {
    /// An entry for a new send, watched by its `Completion`; returns its
    /// number.
    pub(crate) fn open(&mut self) -> u64 {
        self.entries.push_back(Entry::Pending(None));
        let seq = self.base + self.entries.len() as u64 - 1;
        self.compact();
        seq
    }

    /// The entry of send `seq`, in the queue or parked; `None` once it is
    /// gone.
    fn entry(&mut self, seq: u64) -> Option<&mut Entry> {
        match seq.checked_sub(self.base) {
            Some(i) => self.entries.get_mut(usize::try_from(i).ok()?),
            None => self.parked.as_mut()?.get_mut(&seq),
        }
    }

    /// Takes the entry of send `seq`, which is done from now on: a parked
    /// one leaves at once, one in the queue once it reaches the front.
    fn take(&mut self, seq: u64) -> Option<Entry> {
        if seq < self.base {
            let parked = self.parked.as_mut()?;
            let old = parked.remove(&seq);
            if parked.is_empty() {
                self.parked = None;
            }
            return old;
        }
        let entry = self.entry(seq)?;
        let old = std::mem::replace(entry, Entry::Done);
        self.compact();
        Some(old)
    }

    /// Settles send `seq` with `outcome`; the [`Aside`] wakes its
    /// `Completion`. A send whose `Completion` is gone, or that was settled
    /// already, keeps nothing.
    pub(crate) fn settle(&mut self, seq: u64, outcome: Outcome) -> Aside {
        let mut aside = Aside::default();
        match self.entry(seq) {
            Some(entry @ Entry::Pending(_)) => {
                if let Entry::Pending(waker) = std::mem::replace(entry, Entry::Settled(outcome)) {
                    aside.wake = waker;
                }
            }
            _ => aside.old = Some(Entry::Settled(outcome)),
        }
        aside
    }

    /// The outcome of send `seq` if it is settled (once: `None` after it
    /// was taken); otherwise keeps the waker of `cx` for it.
    pub(crate) fn poll(&mut self, seq: u64, cx: &Context<'_>) -> (Poll<Option<Outcome>>, Aside) {
        let mut aside = Aside::default();
        let poll = match self.entry(seq) {
            Some(Entry::Pending(waker)) => {
                if let Some(old) = set_waker(waker, cx) {
                    aside.old = Some(Entry::Pending(Some(old)));
                }
                Poll::Pending
            }
            Some(Entry::Settled(_)) => Poll::Ready(match self.take(seq) {
                Some(Entry::Settled(outcome)) => Some(outcome),
                _ => None,
            }),
            Some(Entry::Done) | None => Poll::Ready(None),
        };
        (poll, aside)
    }

    /// The `Completion` of send `seq` was dropped: nobody will take its
    /// outcome.
    pub(crate) fn forget(&mut self, seq: u64) -> Aside {
        Aside {
            wake: None,
            old: self.take(seq),
        }
    }

    /// Drops the done entries at the front; moves aside one that is not
    /// done but has more than [`PARK_AFTER`] entries behind it.
    fn compact(&mut self) {
        loop {
            match self.entries.front() {
                Some(Entry::Done) => {}
                Some(_) if self.entries.len() > PARK_AFTER => {
                    if let Some(entry) = self.entries.pop_front() {
                        self.parked
                            .get_or_insert_with(Default::default)
                            .insert(self.base, entry);
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
        if self.entries.is_empty() && self.entries.capacity() > KEEP {
            self.entries.rest = VecDeque::new();
        }
    }

    /// Entries in the queue and parked (for tests).
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

    /// Polls as a `Completion` does, finishing the [`Aside`].
    fn poll(l: &mut Ledger, seq: u64, cx: &Context<'_>) -> Poll<Option<Outcome>> {
        let (poll, aside) = l.poll(seq, cx);
        aside.finish();
        poll
    }

    fn ok(p: Poll<Option<Outcome>>) -> bool {
        matches!(p, Poll::Ready(Some(Ok(()))))
    }

    fn reason(p: Poll<Option<Outcome>>) -> String {
        match p {
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
        assert!(poll(&mut l, seq, &cx).is_pending());
        assert!(poll(&mut l, seq, &cx).is_pending(), "polled again");
        l.settle(seq, Ok(())).finish();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(ok(poll(&mut l, seq, &cx)));
        assert!(
            matches!(poll(&mut l, seq, &cx), Poll::Ready(None)),
            "taken once"
        );
        assert_eq!(l.len(), (0, 0));
    }

    #[test]
    fn outcomes_settled_out_of_order_reach_their_own_sends() {
        let mut l = Ledger::default();
        let (_, w) = waker();
        let cx = Context::from_waker(&w);
        let seqs: Vec<u64> = (0..4).map(|_| l.open()).collect();
        // The third fails at once; the others are written later.
        l.settle(seqs[2], error("third")).finish();
        for &s in &seqs[..2] {
            l.settle(s, Ok(())).finish();
        }
        l.settle(seqs[2], Ok(())).finish();
        assert_eq!(
            reason(poll(&mut l, seqs[2], &cx)),
            "sendSocketMessage:fail third"
        );
        assert!(ok(poll(&mut l, seqs[0], &cx)));
        assert!(poll(&mut l, seqs[3], &cx).is_pending());
        assert!(ok(poll(&mut l, seqs[1], &cx)));
        l.settle(seqs[3], Ok(())).finish();
        assert!(ok(poll(&mut l, seqs[3], &cx)));
        assert_eq!(l.len(), (0, 0));
    }

    #[test]
    fn dropped_completions_leave_nothing_behind() {
        let mut l = Ledger::default();
        // Dropped before the send settles, and after.
        let a = l.open();
        let b = l.open();
        l.settle(b, error("b")).finish();
        l.forget(b).finish();
        assert_eq!(l.len(), (2, 0), "`a` is still watched");
        l.forget(a).finish();
        assert_eq!(l.len(), (0, 0));
        assert!(l.settle(a, Ok(())).wake.is_none(), "nobody to wake");
        // Fire-and-forget sends leave at once, settled or not.
        for _ in 0..10_000 {
            let s = l.open();
            l.forget(s).finish();
            assert_eq!(l.len(), (0, 0));
        }
        for s in 2..10_002 {
            l.settle(s, Ok(())).finish();
        }
        // A burst of held ones keeps no room once they are dropped.
        let held: Vec<u64> = (0..1_000).map(|_| l.open()).collect();
        assert_eq!(l.len(), (PARK_AFTER, 1_000 - PARK_AFTER));
        for s in held {
            l.forget(s).finish();
        }
        assert_eq!(l.len(), (0, 0));
        assert!(l.parked.is_none());
        assert_eq!(l.entries.capacity(), 0);
    }

    /// One entry that stays (a held `Completion`, settled or not) does not
    /// hold up the entries behind it: the queue stays short whatever comes
    /// after, and the entry keeps its outcome.
    #[test]
    fn an_entry_that_stays_does_not_make_the_queue_grow() {
        for settled_first in [true, false] {
            let mut l = Ledger::default();
            let (count, w) = waker();
            let cx = Context::from_waker(&w);
            let held = l.open();
            assert!(poll(&mut l, held, &cx).is_pending());
            if settled_first {
                l.settle(held, error("kept")).finish();
            }
            for i in 0..10_000 {
                let s = l.open();
                // Later sends fail at once (a full buffer), or are written.
                if i % 2 == 0 {
                    l.settle(s, error("full")).finish();
                    l.forget(s).finish();
                } else {
                    l.forget(s).finish();
                    l.settle(s, Ok(())).finish();
                }
                assert!(l.len().0 <= PARK_AFTER + 1, "{:?} after {i}", l.len());
            }
            assert_eq!(l.len(), (0, 1), "the held entry is parked");
            if !settled_first {
                assert!(poll(&mut l, held, &cx).is_pending());
                l.settle(held, error("kept")).finish();
                assert_eq!(
                    count.0.load(Ordering::SeqCst),
                    1,
                    "woken where it is parked"
                );
            }
            assert_eq!(
                reason(poll(&mut l, held, &cx)),
                "sendSocketMessage:fail kept"
            );
            assert_eq!(l.len(), (0, 0));
            assert!(l.parked.is_none());
        }
        // Held and then dropped: the parked entry goes too.
        let mut l = Ledger::default();
        let held = l.open();
        for _ in 0..PARK_AFTER {
            l.open();
        }
        assert_eq!(l.len(), (PARK_AFTER, 1));
        l.forget(held).finish();
        assert!(l.parked.is_none());
    }

    #[test]
    fn a_settled_send_settled_again_keeps_its_first_outcome() {
        let mut l = Ledger::default();
        let (_, w) = waker();
        let cx = Context::from_waker(&w);
        let s = l.open();
        l.settle(s, Ok(())).finish();
        let late = l.settle(s, error("late"));
        assert!(late.wake.is_none());
        assert!(
            matches!(late.old, Some(Entry::Settled(Err(_)))),
            "dropped by the caller"
        );
        assert!(ok(poll(&mut l, s, &cx)));
        assert!(l.settle(s, error("later")).wake.is_none());
        assert_eq!(l.len(), (0, 0));
    }

    /// A waker replaced by a poll from another task is handed out, to be
    /// dropped after the lock; the new one is woken.
    #[test]
    fn a_replaced_waker_is_dropped_outside_and_the_new_one_woken() {
        let mut l = Ledger::default();
        let (first, w1) = waker();
        let (second, w2) = waker();
        let s = l.open();
        let (p, aside) = l.poll(s, &Context::from_waker(&w1));
        assert!(p.is_pending() && aside.old.is_none());
        let (p, aside) = l.poll(s, &Context::from_waker(&w2));
        assert!(p.is_pending());
        assert!(matches!(aside.old, Some(Entry::Pending(Some(_)))));
        drop(aside);
        l.settle(s, Ok(())).finish();
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
    }
}
