//! Capped exponential backoff with jitter, for holders and for the etcd
//! membership's reconnects.

use std::time::Duration;

/// The first pause between failed attempts; it doubles up to [`MAX_BACKOFF`].
pub(crate) const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Somewhere in the upper half of `backoff`, so that holders restarted
/// together do not retry in lockstep.
pub(crate) fn jitter(backoff: Duration) -> Duration {
    let half = backoff / 2;
    half + half.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_the_upper_half() {
        for _ in 0..100 {
            let delay = jitter(Duration::from_millis(800));
            assert!(delay >= Duration::from_millis(400) && delay <= Duration::from_millis(800));
        }
    }
}
