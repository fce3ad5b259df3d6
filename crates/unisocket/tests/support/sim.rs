//! Simulated time: a test body on a current-thread runtime whose clock
//! starts paused and moves only when the test calls
//! `tokio::time::advance`, while its sockets (real ones, on 127.0.0.1) work
//! as usual.
//!
//! tokio advances a paused clock by itself to the next timer whenever the
//! runtime has nothing to do, including while it waits for a socket: a
//! timer of the client could then fire before the bytes it waits for have
//! arrived. [`simulated`] keeps a blocking task running for the whole test,
//! which is what holds that auto-advance off (tokio's `time::pause`
//! documentation, "Preventing auto-advance"), so the test alone moves time.
//!
//! A timer-backed bound (`tokio::time::timeout`, [`super::bounded`]) never
//! fires on such a clock: [`simulated`] bounds the whole test with a thread
//! of its own instead, and a test awaits what it waits for directly.

use std::future::Future;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use super::TEST_TIMEOUT;

/// Runs `body()` on a fresh current-thread runtime with a paused clock that
/// only the test advances; panics if it has not finished after
/// [`TEST_TIMEOUT`] of real time (a hang, not a measurement), or with the
/// body's own panic.
pub fn simulated<F, Fut>(body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a runtime");
        rt.block_on(async {
            // Dropped at the end of the body, panic or not: the blocking
            // task returns, and the runtime can shut down.
            let (hold, held) = mpsc::channel::<()>();
            let holder = tokio::task::spawn_blocking(move || {
                let _ = held.recv();
            });
            body().await;
            drop(hold);
            let _ = holder.await;
        });
        let _ = done_tx.send(());
    });
    match done_rx.recv_timeout(TEST_TIMEOUT) {
        Ok(()) | Err(RecvTimeoutError::Disconnected) => {
            if let Err(panic) = thread.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(RecvTimeoutError::Timeout) => {
            panic!("the test did not finish within {TEST_TIMEOUT:?}")
        }
    }
}

/// Lets the runtime run what is ready, and the sockets deliver what is in
/// flight, for a moment of real time, without moving the paused clock (a
/// blocking task is running all along). For checking that something did
/// *not* happen yet: it gives a wrong early timer the chance to show.
pub async fn settle() {
    tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(50)))
        .await
        .expect("the pause");
}
