//! [`ReconnectPolicy`]: when and how soon a task reconnects after losing
//! its connection.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::events::CloseEvent;

type Predicate = Arc<dyn Fn(&CloseEvent) -> bool + Send + Sync + 'static>;

/// How a task reconnects: exponential backoff with full jitter between a
/// minimum and a maximum delay, a bounded (or unlimited) number of attempts,
/// and a predicate on the close that decides whether to try at all.
///
/// The default reconnects after abnormal closes (1006 and every close code
/// other than 1000 and 1001), never after the application's own `close`,
/// waits between 0.5 s and 30 s, and gives up after 10 attempts in a row.
///
/// ```
/// use std::time::Duration;
/// use unisocket::{connect_socket, ConnectOptions, ReconnectPolicy};
///
/// let policy = ReconnectPolicy::default()
///     .min_delay(Duration::from_millis(200))
///     .max_delay(Duration::from_secs(10))
///     .max_attempts(None) // forever
///     .when(|close| close.code != 4001); // 4001: "banned", do not come back
/// let options = ConnectOptions::new("ws://127.0.0.1:9001").reconnect(policy);
/// # drop(options);
/// ```
#[derive(Clone)]
pub struct ReconnectPolicy {
    pub(crate) min_delay: Duration,
    pub(crate) max_delay: Duration,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) predicate: Predicate,
}

impl fmt::Debug for ReconnectPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReconnectPolicy")
            .field("min_delay", &self.min_delay)
            .field("max_delay", &self.max_delay)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_attempts: Some(10),
            predicate: Arc::new(|close| !matches!(close.code, 1000 | 1001)),
        }
    }
}

impl ReconnectPolicy {
    /// The shortest wait before an attempt (default 0.5 s).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use unisocket::ReconnectPolicy;
    ///
    /// let policy = ReconnectPolicy::default().min_delay(Duration::from_secs(2));
    /// assert!(format!("{policy:?}").contains("min_delay: 2s"));
    /// ```
    #[must_use]
    pub fn min_delay(mut self, d: Duration) -> Self {
        self.min_delay = d;
        self
    }

    /// The longest wait before an attempt (default 30 s).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use unisocket::{ConnectOptions, ReconnectPolicy};
    ///
    /// // Keep trying, backing off to one attempt every two minutes at most.
    /// let policy = ReconnectPolicy::default()
    ///     .max_delay(Duration::from_secs(120))
    ///     .max_attempts(None);
    /// let options = ConnectOptions::new("wss://example.com/feed").reconnect(policy);
    /// # drop(options);
    /// ```
    #[must_use]
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.max_delay = d;
        self
    }

    /// How many reconnection attempts in a row before giving up, not
    /// counting the connection that was lost (or the first try);
    /// `None` never gives up (default `Some(10)`). A successful open resets
    /// the count.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main]
    /// # async fn main() {
    /// use std::time::Duration;
    /// use unisocket::{connect_socket, ConnectOptions, ReconnectPolicy};
    ///
    /// // A port nothing listens on: every attempt is refused.
    /// let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    /// let policy = ReconnectPolicy::default()
    ///     .min_delay(Duration::from_millis(1))
    ///     .max_delay(Duration::from_millis(5))
    ///     .max_attempts(Some(2));
    /// let task = connect_socket(ConnectOptions::new(format!("ws://127.0.0.1:{port}/")).reconnect(policy));
    /// // The first try and two more fail: the task gives up and closes.
    /// assert_eq!(task.closed().await.code, 1006);
    /// # }
    /// ```
    #[must_use]
    pub fn max_attempts(mut self, n: Option<u32>) -> Self {
        self.max_attempts = n;
        self
    }

    /// Reconnect only when `f` returns true for the close that ended the
    /// connection (the application's own `close` never reconnects).
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket::{ConnectOptions, ReconnectPolicy};
    ///
    /// // Come back after a lost connection (1006) or a server restart (1012) only.
    /// let policy = ReconnectPolicy::default().when(|close| matches!(close.code, 1006 | 1012));
    /// let options = ConnectOptions::new("wss://example.com/feed").reconnect(policy);
    /// # drop(options);
    /// ```
    #[must_use]
    pub fn when(mut self, f: impl Fn(&CloseEvent) -> bool + Send + Sync + 'static) -> Self {
        self.predicate = Arc::new(f);
        self
    }

    /// Whether attempt number `attempt` (1-based) may follow `close`.
    pub(crate) fn allows(&self, close: &CloseEvent, attempt: u32) -> bool {
        self.max_attempts.is_none_or(|max| attempt <= max) && (self.predicate)(close)
    }

    /// The wait before attempt `attempt` (1-based): uniform between the
    /// minimum and a cap that doubles with each attempt up to the maximum
    /// ("full jitter" above the floor).
    pub(crate) fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let min = self.min_delay.min(self.max_delay);
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(31));
        let cap = min.saturating_mul(factor).clamp(min, self.max_delay);
        min + (cap - min).mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// The payload of `on_reconnecting`: a new attempt is scheduled.
///
/// ```no_run
/// use unisocket::{connect_socket, ConnectOptions, ReconnectPolicy};
///
/// let task = connect_socket(ConnectOptions::new("ws://127.0.0.1:9001").reconnect(ReconnectPolicy::default()));
/// task.on_reconnecting(|ev| println!("attempt {} in {:?}", ev.attempt, ev.delay));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectEvent {
    /// The attempt number, from 1; reset after each successful open.
    pub attempt: u32,
    /// The wait before the attempt.
    pub delay: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(code: u16) -> CloseEvent {
        CloseEvent {
            code,
            reason: String::new(),
            was_clean: code != 1006,
        }
    }

    #[test]
    fn backoff_doubles_within_bounds_and_jitters() {
        let p = ReconnectPolicy::default()
            .min_delay(Duration::from_millis(100))
            .max_delay(Duration::from_millis(1000));
        assert_eq!(p.delay(1, 1.0), Duration::from_millis(100));
        assert_eq!(p.delay(2, 1.0), Duration::from_millis(200));
        assert_eq!(p.delay(3, 1.0), Duration::from_millis(400));
        assert_eq!(p.delay(5, 1.0), Duration::from_millis(1000));
        assert_eq!(p.delay(40, 1.0), Duration::from_millis(1000));
        assert_eq!(p.delay(5, 0.0), Duration::from_millis(100));
        assert_eq!(p.delay(3, 0.5), Duration::from_millis(250));
    }

    #[test]
    fn default_predicate_and_attempt_bound() {
        let p = ReconnectPolicy::default();
        assert!(p.allows(&close(1006), 1));
        assert!(p.allows(&close(1011), 10));
        assert!(!p.allows(&close(1011), 11));
        assert!(!p.allows(&close(1000), 1));
        assert!(!p.allows(&close(1001), 1));
        let forever = ReconnectPolicy::default()
            .max_attempts(None)
            .when(|c| c.code == 4000);
        assert!(forever.allows(&close(4000), 1_000_000));
        assert!(!forever.allows(&close(1006), 1));
    }
}
