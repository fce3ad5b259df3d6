//! Where connection tasks run: the caller's tokio runtime when there is one,
//! otherwise one background runtime started on first use, so the callback
//! API works from a plain `fn main` as it does in JavaScript.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle, Runtime};

fn background() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
        Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("unisocket")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("unisocket: cannot start the background tokio runtime: {e}"))
    })
}

/// Spawns `fut` on the current tokio runtime, or on the background runtime
/// when called outside of one.
pub(crate) fn spawn<F>(fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    match Handle::try_current() {
        Ok(handle) => drop(handle.spawn(fut)),
        Err(_) => drop(background().spawn(fut)),
    }
}
