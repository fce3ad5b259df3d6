//! Bounds on the waits of the integration tests: one test at most
//! [`TEST_TIMEOUT`], one wait inside it at most [`WAIT_TIMEOUT`]. A hang is
//! a failure instead of a stuck run; no bound is a measurement.
//!
//! Standalone (it uses tokio only), so that a test binary that must not run
//! the codec's tests beside its own can include it alone with `#[path]`.

#![allow(dead_code)]

use std::future::{Future, IntoFuture};
use std::time::Duration;

/// How long one whole test may take.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(40);

/// How long one wait inside an integration test may take.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs a test body under [`TEST_TIMEOUT`].
pub async fn within<F: Future<Output = ()>>(body: F) {
    if tokio::time::timeout(TEST_TIMEOUT, body).await.is_err() {
        panic!("the test did not finish within {TEST_TIMEOUT:?}");
    }
}

/// Polls `cond` until it holds; panics with `what` after [`WAIT_TIMEOUT`].
pub async fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    wait_until_for(WAIT_TIMEOUT, what, cond).await;
}

/// [`wait_until`] with a bound of the caller's.
pub async fn wait_until_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Awaits `fut` for at most [`WAIT_TIMEOUT`], panicking with `what` on timeout.
pub async fn bounded<F: IntoFuture>(what: &str, fut: F) -> F::Output {
    bounded_for(WAIT_TIMEOUT, what, fut).await
}

/// [`bounded`] with a bound of the caller's.
pub async fn bounded_for<F: IntoFuture>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut.into_future()).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}
