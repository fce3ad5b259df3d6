//! The driver's buffer and memory policy, in one place: how large reads
//! are, which buffers a connection keeps while it waits, which it gives to
//! its thread's spares or frees, and when. Each constant says why it is
//! there; the measurements behind them are in `benches/README.md`
//! ("Driver constants").

use std::cell::RefCell;
use std::collections::VecDeque;
use std::thread::LocalKey;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};

use super::Driver;
use crate::transport;

/// The smallest read, what a quiet connection holds; reads that fill it
/// double the next.
pub(super) const MIN_READ: usize = 512;
/// The largest read of small traffic (large frames reserve their length).
pub(super) const MAX_READ: usize = 64 * 1024;
/// Reads without large traffic before grown write buffers and queues shrink
/// back: a connection does not keep the size of its largest burst.
const QUIET_READS: u32 = 64;
/// Write buffers up to this size are kept while traffic is quiet.
const SMALL_WRITE: usize = 1024;
/// Write buffers up to this size stay with a waiting connection whose
/// thread has a spare already; larger ones are freed.
const KEEP_WRITE: usize = 256;
/// Queues (sends in flight, commands, jobs) up to this many entries are
/// kept while traffic is quiet.
pub(super) const QUIET_QUEUE: usize = 4;
/// A large frame wakes the driver only once this many bytes (at most what
/// it still misses) can be read (`SO_RCVLOWAT`): a few wake-ups per large
/// message, not one per piece that arrives.
const LOW_WATER_MAX: usize = 256 * 1024;
const _: () = assert!(MAX_READ <= LOW_WATER_MAX && LOW_WATER_MAX <= u32::MAX as usize);
/// A frame that misses fewer bytes than this is read as they come.
const LOW_WATER_MIN: usize = 16 * 1024;
/// An idle connection gives back what its traffic grew after this long
/// (one to two times it); shorter pauses keep the buffers for the next
/// burst.
const IDLE_RELEASE: Duration = Duration::from_secs(1);
/// Read buffers a thread keeps for its quiet connections.
const SPARE_READ_BUFFERS: usize = 4;
/// Write buffers a thread keeps: they are never shared, so one will do.
const SPARE_WRITE_BUFFERS: usize = 1;

/// A connection's buffer bookkeeping.
pub(super) struct Buffers {
    /// How much the next read asks for: doubles while reads fill it, halves
    /// while they do not, so idle connections hold small buffers. (This and
    /// `low_water` are `u32`, at most [`MAX_READ`] and [`LOW_WATER_MAX`]:
    /// with the flags, they fill one word of every connection's future.)
    read_hint: u32,
    /// Reads since a large frame went by (either way); buffers shrink only
    /// after many small ones, not after every large message.
    pub quiet_reads: u32,
    /// A wake-up took more than [`QUIET_QUEUE`] commands or messages at
    /// once: the queues may have grown, and shrink once the connection is
    /// quiet.
    pub burst: bool,
    /// The transport's receive low-water mark (see [`LOW_WATER_MAX`]).
    low_water: u32,
    /// Reads and writes so far (see `release_at`).
    pub activity: u64,
    /// A write of more than [`SMALL_WRITE`] bytes went out since the buffers
    /// were last given back (a written buffer's `capacity` no longer says
    /// how large it is).
    pub wrote_large: bool,
    /// While the connection holds buffers grown by its traffic: when it
    /// gives them back, unless `activity` moved on from the count kept here
    /// (see [`IDLE_RELEASE`]).
    pub release_at: Option<(Instant, u64)>,
}

impl Buffers {
    /// How much the next read asks for.
    pub(super) fn read_hint(&self) -> usize {
        self.read_hint as usize
    }

    pub(super) fn new() -> Buffers {
        Buffers {
            read_hint: MIN_READ as u32,
            quiet_reads: 0,
            burst: false,
            low_water: 1,
            activity: 0,
            wrote_large: false,
            release_at: None,
        }
    }
}

thread_local! {
    /// Read buffers that quiet connections gave back (none of their messages
    /// still held), for the next ones on this thread that read.
    pub(super) static SPARE_READS: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    /// The same for write buffers.
    pub(super) static SPARE_WRITES: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

type Spares = LocalKey<RefCell<Vec<BytesMut>>>;

/// Moves an empty buffer to the thread's `spares` if they hold fewer than
/// `max`, and says whether it did; if not, the connection keeps it (freeing
/// it, and allocating one for the next message, would cost each message two
/// calls to the allocator).
fn give_back(spares: &'static Spares, max: usize, buf: &mut BytesMut) -> bool {
    // `try_with` fails only while the thread exits.
    spares
        .try_with(|spares| {
            let mut spares = spares.borrow_mut();
            let room = spares.len() < max;
            if room {
                spares.push(std::mem::take(buf));
            }
            room
        })
        .unwrap_or(false)
}

/// Into a buffer that has no room, one of the thread's `spares`.
pub(super) fn take_spare(spares: &'static Spares, buf: &mut BytesMut) {
    if buf.capacity() == 0 {
        if let Ok(Some(b)) = spares.try_with(|spares| spares.borrow_mut().pop()) {
            *buf = b;
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + transport::RecvLowWater> Driver<S> {
    /// Moves the connection's queued bytes into `out`, to be written.
    pub(super) fn take_output(&mut self) {
        // Swap rather than split: both buffers keep their allocations, so
        // steady traffic allocates nothing.
        self.out.clear();
        // The two write buffers swap, so both shrink in turn.
        if self.mem.quiet_reads > QUIET_READS && self.out.capacity() > SMALL_WRITE {
            self.out = BytesMut::new();
        }
        std::mem::swap(&mut self.out, self.conn.write_buf());
        if self.out.len() > SMALL_WRITE {
            // Bursts are being sent: keep the buffers.
            self.mem.quiet_reads = 0;
            self.mem.wrote_large = true;
        }
        self.moved += self.out.len() as u64;
    }

    /// About to wait with buffers grown by traffic: the clock starts for
    /// giving them back (see [`IDLE_RELEASE`]).
    pub(super) fn start_release_clock(&mut self) {
        if self.mem.release_at.is_none() && self.holds_grown_buffers() {
            self.mem.release_at = Some((super::now() + IDLE_RELEASE, self.mem.activity));
        }
    }

    /// Sets the transport's low-water mark for what the current large frame
    /// still misses, or back to 1 byte (one system call, when it changes).
    /// While a heartbeat ping waits for an answer it is 1: bytes that trickle
    /// in are the answer, and must not wait in the kernel for the mark.
    pub(super) fn set_low_water(&mut self) {
        let missing = self.conn.large_frame_missing();
        let mark = if missing >= LOW_WATER_MIN && !self.conn.heartbeat_waiting() {
            missing.min(LOW_WATER_MAX)
        } else {
            1
        };
        if mark != self.mem.low_water as usize {
            self.io.set_recv_low_water(mark);
            self.mem.low_water = mark as u32;
        }
    }

    /// While the connection waits, it gives its empty buffers back to the
    /// thread's spares when they have room, unless its reads are large (a
    /// busy connection keeps them). Buffers grown by a burst are freed, so a
    /// quiet connection holds at most a small read and a small write buffer.
    pub(super) fn give_back_buffers(&mut self) {
        // (The queues of a burst give their room back once the connection
        // is idle: see `release_grown_buffers`.)
        let quiet = self.mem.read_hint() == MIN_READ && !self.conn.receiving_large_frame();
        if quiet {
            self.conn.stop_preparing_reads();
        }
        let buf = self.conn.current_read_buf();
        if quiet && buf.is_empty() && buf.capacity() > 0 {
            if buf.capacity() > MIN_READ {
                // The buffer of a burst that is over: the messages cut from
                // it keep it as long as they live, the connection does not.
                // (A new buffer also forgets the burst's size, which a
                // shared one passes on to the buffer it is replaced by.)
                *buf = BytesMut::new();
            } else if buf.try_reclaim(MIN_READ) {
                // No message shares it any more. One that does stays, to be
                // reclaimed by this connection's next read.
                give_back(&SPARE_READS, SPARE_READ_BUFFERS, buf);
            }
        }
        let write = self.conn.write_buf();
        let largest = self.out.capacity().max(write.capacity());
        if self.out.is_empty() && write.is_empty() && largest > 0 && largest <= SMALL_WRITE {
            let (larger, smaller) = if self.out.capacity() >= write.capacity() {
                (&mut self.out, write)
            } else {
                (write, &mut self.out)
            };
            if give_back(&SPARE_WRITES, SPARE_WRITE_BUFFERS, larger) {
                // Of the two write buffers, the larger was given back.
                *smaller = BytesMut::new();
            } else if largest > KEEP_WRITE {
                // The buffers of a burst: freed.
                *larger = BytesMut::new();
                *smaller = BytesMut::new();
            }
            // Otherwise the connection keeps its small buffers.
        }
    }

    /// Whether the connection holds buffers or queues that its traffic grew
    /// beyond what a quiet connection keeps, and that it could give back.
    /// (Buffers of bytes still to be written, to a peer that stopped
    /// reading, are not: a connection waiting on them sleeps until the
    /// socket takes them, rather than waking every `IDLE_RELEASE`.)
    pub(super) fn holds_grown_buffers(&mut self) -> bool {
        let write = self.conn.write_buf();
        let (write_empty, write_room) = (write.is_empty(), write.capacity());
        let writes_done = self.out.is_empty() && write_empty && self.sends.is_empty();
        self.mem.read_hint() > MIN_READ
            || self.conn.keeps_large_buffers()
            || self.mem.burst
            || self.batch.capacity() > QUIET_QUEUE
            || (writes_done
                && (self.mem.wrote_large
                    || self.out.capacity() > SMALL_WRITE
                    || write_room > SMALL_WRITE
                    || self.sends.capacity() > QUIET_QUEUE))
    }

    /// The connection was idle for [`IDLE_RELEASE`]: it gives back what its
    /// traffic grew (the next wait gives a small read buffer to the thread).
    pub(super) fn release_grown_buffers(&mut self) {
        self.mem.read_hint = MIN_READ as u32;
        self.conn.release_idle_buffers();
        let write = self.conn.write_buf();
        if self.out.is_empty() && write.is_empty() {
            // (Bytes still to be written, to a peer that reads slowly, keep
            // their buffers until the next release.)
            for buf in [&mut self.out, write] {
                if self.mem.wrote_large || buf.capacity() > SMALL_WRITE {
                    *buf = BytesMut::new();
                }
            }
            self.mem.wrote_large = false;
        }
        self.mem.burst = false;
        self.shrink_queues();
        if self.conn.poll_timeout().is_none() && self.flush_deadline.is_none() {
            // No deadline left: the timer is freed too.
            self.sleep = None;
        }
    }

    /// Sizes the next read from this one (`n` bytes into `spare` room), and
    /// shrinks the queues once large frames have stopped.
    pub(super) fn adapt_read_size(&mut self, n: usize, spare: usize) {
        let hint = self.mem.read_hint();
        if n >= spare {
            self.mem.read_hint = (hint * 2).min(MAX_READ) as u32;
        } else if n < hint / 4 {
            self.mem.read_hint = (hint / 2).max(MIN_READ) as u32;
        }
        if spare > MAX_READ {
            // A large frame is being received.
            self.mem.quiet_reads = 0;
        } else {
            self.mem.quiet_reads = self.mem.quiet_reads.saturating_add(1);
        }
        if self.mem.quiet_reads > QUIET_READS && self.mem.quiet_reads % (QUIET_READS + 1) == 0 {
            // Every `QUIET_READS` reads of a quiet spell: the queues give
            // back the room of the bursts before (a spell can last the
            // connection's whole life, with bursts now and then).
            self.shrink_queues();
        }
    }

    /// Frees the room of drained queues beyond `QUIET_QUEUE` entries.
    pub(super) fn shrink_queues(&mut self) {
        if self.sends.is_empty() && self.sends.capacity() > QUIET_QUEUE {
            self.sends = VecDeque::new();
        }
        if self.batch.capacity() > QUIET_QUEUE {
            self.batch = Vec::new();
        }
        self.shared.shrink_queues(QUIET_QUEUE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Quiet connections give empty read and write buffers back to their
    /// thread, and the next connection that reads or writes takes them; a
    /// thread keeps at most a few, and a connection keeps what they do not
    /// take.
    #[test]
    fn spare_buffers_go_round_and_stay_bounded() {
        let spares = || SPARE_READS.with(|s| s.borrow().len());
        assert_eq!(spares(), 0);
        for _ in 0..SPARE_READ_BUFFERS {
            let mut buf = BytesMut::with_capacity(MIN_READ);
            assert!(give_back(&SPARE_READS, SPARE_READ_BUFFERS, &mut buf));
            assert_eq!(buf.capacity(), 0, "given back");
        }
        // The spares are full: the connection keeps its buffer.
        let mut kept = BytesMut::with_capacity(MIN_READ);
        assert!(!give_back(&SPARE_READS, SPARE_READ_BUFFERS, &mut kept));
        assert_eq!(kept.capacity(), MIN_READ);
        assert_eq!(spares(), SPARE_READ_BUFFERS);
        let mut buf = BytesMut::new();
        take_spare(&SPARE_READS, &mut buf);
        assert!(buf.capacity() >= MIN_READ);
        assert_eq!(spares(), SPARE_READ_BUFFERS - 1);
        // A buffer with room keeps it.
        let mut other = BytesMut::with_capacity(8);
        take_spare(&SPARE_READS, &mut other);
        assert_eq!((other.capacity(), spares()), (8, SPARE_READ_BUFFERS - 1));

        let mut write = BytesMut::new();
        take_spare(&SPARE_WRITES, &mut write);
        assert_eq!(write.capacity(), 0);
        let mut spare = BytesMut::with_capacity(100);
        assert!(give_back(&SPARE_WRITES, SPARE_WRITE_BUFFERS, &mut spare));
        let mut second = BytesMut::with_capacity(100);
        assert!(!give_back(&SPARE_WRITES, SPARE_WRITE_BUFFERS, &mut second));
        take_spare(&SPARE_WRITES, &mut write);
        assert!(write.capacity() >= 100);
        let mut again = BytesMut::new();
        take_spare(&SPARE_WRITES, &mut again);
        assert_eq!(again.capacity(), 0, "the one spare was taken");
    }
}
