//! One back-off for every retry loop of every service: the delay doubles after each failed attempt
//! up to a cap, and a wait gives up as soon as the service is told to stop. Owns no I/O beyond the
//! sleep; gives no delivery guarantee of its own (the caller retries the same input, never skips it).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The cap every service uses unless it has a reason to wait longer between attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(5);

/// Exponential back-off: `initial`, `2 x initial`, ... up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    /// The delay the next [`wait`](Backoff::wait) sleeps.
    next: Duration,
}

impl Backoff {
    /// Starts at `initial` and doubles up to [`MAX_DELAY`].
    pub fn new(initial: Duration) -> Self {
        Self::with_max(initial, MAX_DELAY)
    }

    pub fn with_max(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            next: initial.min(max),
        }
    }

    /// The delay the next wait will sleep.
    pub fn delay(&self) -> Duration {
        self.next
    }

    /// Returns the current delay and doubles the next one (up to the cap).
    pub fn step(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// Back to the initial delay (after a success).
    pub fn reset(&mut self) {
        self.next = self.initial.min(self.max);
    }

    /// Sleeps the current delay and doubles the next. Returns `false` without finishing the sleep
    /// when `token` is cancelled first (the caller stops retrying).
    pub async fn wait(&mut self, token: &CancellationToken) -> bool {
        let d = self.step();
        tokio::select! {
            biased;
            _ = token.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }
}

/// Runs blocking work from inside async code without stalling the runtime's other tasks: in place on
/// a multi-thread runtime (`block_in_place`), directly elsewhere (a current-thread runtime or a
/// librdkafka thread, where nothing else is starved by it).
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Runs `fut` to completion from synchronous code that may be called on a tokio worker, such as
/// librdkafka's rebalance callback (it runs inside the consumer's poll): block in place on a
/// multi-thread runtime's worker, block on `handle` (the service's runtime) from a thread outside
/// any runtime. A current-thread runtime's only thread cannot block: an error.
pub fn block_on_from_sync<F: std::future::Future>(
    handle: &tokio::runtime::Handle,
    fut: F,
) -> Result<F::Output, &'static str> {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            Ok(tokio::task::block_in_place(|| h.block_on(fut)))
        }
        Ok(_) => Err("current-thread runtime: cannot block in the callback"),
        Err(_) => Ok(handle.block_on(fut)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::with_max(Duration::from_millis(100), Duration::from_millis(350));
        let seen: Vec<u128> = (0..5).map(|_| b.step().as_millis()).collect();
        assert_eq!(seen, vec![100, 200, 350, 350, 350]);
        b.reset();
        assert_eq!(b.delay(), Duration::from_millis(100));
    }

    #[tokio::test]
    async fn a_cancelled_wait_returns_false_at_once() {
        let token = CancellationToken::new();
        token.cancel();
        let mut b = Backoff::new(Duration::from_secs(60));
        let started = std::time::Instant::now();
        assert!(!b.wait(&token).await);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
