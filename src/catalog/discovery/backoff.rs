//! Retry delays: 1 s after the first failure, doubling up to a ceiling,
//! back to the start after a success. Pure.

use std::time::Duration;

/// The first delay after a failure.
pub const FIRST: Duration = Duration::from_secs(1);

/// A doubling delay between [`FIRST`] and a ceiling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Delays from [`FIRST`] up to `max` (at least [`FIRST`]).
    pub fn new(max: Duration) -> Self {
        Self {
            max: max.max(FIRST),
            next: FIRST,
        }
    }

    /// The delay to wait after one more failure.
    pub fn fail(&mut self) -> Duration {
        let d = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        d
    }

    /// A success: the next failure waits [`FIRST`] again.
    pub fn reset(&mut self) {
        self.next = FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_one_second_up_to_the_ceiling_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(10));
        let got: Vec<u64> = (0..6).map(|_| b.fail().as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 10, 10]);
        b.reset();
        assert_eq!(b.fail(), FIRST);
        // A ceiling below the first delay is raised to it.
        let mut tiny = Backoff::new(Duration::from_millis(10));
        assert_eq!(tiny.fail(), FIRST);
        assert_eq!(tiny.fail(), FIRST);
    }
}
