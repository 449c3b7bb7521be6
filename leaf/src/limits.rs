//! Admission control for searches (a SEDA stage with a bounded queue).
//!
//! At most `max_concurrent` searches run at once (inline or on the blocking
//! pool). A search that finds every slot taken waits in a queue of at most
//! `max_queue` places, for at most `max_queue_wait` and never past its
//! deadline. The
//! decided behaviour when full: answer RESOURCE_EXHAUSTED at once, so the
//! caller can hedge to another replica instead of waiting.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{LeafError, Result};
use crate::metrics::Metrics;

/// Bounds of the search stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Searches running at once on the blocking pool.
    pub max_concurrent: usize,
    /// Searches waiting for a slot; 0 rejects as soon as all slots are busy.
    pub max_queue: usize,
    /// The longest a search waits for a slot when it has no earlier deadline.
    pub max_queue_wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        Limits {
            max_concurrent: (2 * cores).max(2),
            max_queue: 64,
            max_queue_wait: Duration::from_secs(1),
        }
    }
}

/// The admission gate shared by all calls of one server.
pub(crate) struct Admission {
    slots: Arc<Semaphore>,
    queued: AtomicUsize,
    limits: Limits,
    metrics: Metrics,
}

impl Admission {
    pub(crate) fn new(limits: Limits, metrics: Metrics) -> Admission {
        metrics
            .search_slots
            .set(i64::try_from(limits.max_concurrent.max(1)).unwrap_or(i64::MAX));
        Admission {
            slots: Arc::new(Semaphore::new(limits.max_concurrent.max(1))),
            queued: AtomicUsize::new(0),
            limits,
            metrics,
        }
    }

    /// Takes a search slot, waiting in the queue if there is room. The slot
    /// is released when the permit is dropped, which the caller does when
    /// the blocking search really ends (not when the call is cancelled).
    pub(crate) async fn admit(&self, deadline: Option<Instant>) -> Result<OwnedSemaphorePermit> {
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(permit);
        }
        let Some(_place) = self.enqueue() else {
            self.metrics.rejections.inc();
            return Err(LeafError::Overloaded("search queue full".to_string()));
        };
        let mut wait = self.limits.max_queue_wait;
        let mut deadline_bound = false;
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left <= wait {
                wait = left;
                deadline_bound = true;
            }
        }
        match tokio::time::timeout(wait, Arc::clone(&self.slots).acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_closed)) => Err(LeafError::ShuttingDown),
            Err(_elapsed) if deadline_bound => Err(LeafError::DeadlineExceeded),
            Err(_elapsed) => {
                self.metrics.rejections.inc();
                Err(LeafError::Overloaded(
                    "waited too long for a search slot".to_string(),
                ))
            }
        }
    }

    /// Takes a queue place, or None when the queue is full.
    fn enqueue(&self) -> Option<QueuePlace<'_>> {
        let taken = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued < self.limits.max_queue).then_some(queued + 1)
            })
            .is_ok();
        taken.then(|| {
            self.metrics.queue_depth.inc();
            QueuePlace(self)
        })
    }
}

/// A place in the queue, given back on drop (also when the call is dropped).
struct QueuePlace<'a>(&'a Admission);

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.queue_depth.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(max_concurrent: usize, max_queue: usize) -> Arc<Admission> {
        let metrics = Metrics::new(&prometheus::Registry::new(), 0).unwrap();
        Arc::new(Admission::new(
            Limits {
                max_concurrent,
                max_queue,
                max_queue_wait: Duration::from_secs(30),
            },
            metrics,
        ))
    }

    #[tokio::test]
    async fn rejects_when_slots_and_queue_are_full() {
        let gate = admission(1, 1);
        let slot = gate.admit(None).await.unwrap();
        // The second call queues.
        let queued = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.admit(None).await.map(drop) })
        };
        while gate.metrics.queue_depth.get() != 1 {
            tokio::task::yield_now().await;
        }
        // The third finds the queue full and is rejected at once.
        let error = gate.admit(None).await.unwrap_err();
        assert!(matches!(error, LeafError::Overloaded(_)), "{error}");
        assert_eq!(gate.metrics.rejections.get(), 1);
        // Releasing the slot lets the queued call in.
        drop(slot);
        queued.await.unwrap().unwrap();
        assert_eq!(gate.metrics.queue_depth.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn queue_wait_ends_at_the_deadline() {
        let gate = admission(1, 4);
        let _slot = gate.admit(None).await.unwrap();
        let deadline = Instant::now() + Duration::from_millis(100);
        let error = gate.admit(Some(deadline)).await.unwrap_err();
        assert!(matches!(error, LeafError::DeadlineExceeded), "{error}");
        // Without a deadline the wait is bounded by max_queue_wait.
        let error = gate.admit(None).await.unwrap_err();
        assert!(matches!(error, LeafError::Overloaded(_)), "{error}");
        assert_eq!(gate.metrics.queue_depth.get(), 0);
    }

    #[tokio::test]
    async fn zero_queue_rejects_immediately() {
        let gate = admission(1, 0);
        let _slot = gate.admit(None).await.unwrap();
        assert!(matches!(
            gate.admit(None).await.unwrap_err(),
            LeafError::Overloaded(_)
        ));
    }
}
