//! Coalescing: identical cache misses in flight share one fan-out.
//!
//! The first request for a key (the leader) starts the work as a tracked
//! task of its own, so that it finishes, and leaves the map, even if every
//! waiter goes away; requests for the same key that arrive meanwhile (the
//! followers) wait for the same result.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use futures::future::{BoxFuture, FutureExt, Shared};
use parking_lot::Mutex;
use tokio_util::task::TaskTracker;

/// The shared result of one piece of work; `None` when its task failed.
pub type Joined<T> = Shared<BoxFuture<'static, Option<T>>>;

/// Work in flight by key. Cheap to clone: the clones share the map.
pub struct Coalescer<T> {
    in_flight: Arc<Mutex<HashMap<String, Joined<T>>>>,
}

impl<T> Clone for Coalescer<T> {
    fn clone(&self) -> Self {
        Coalescer {
            in_flight: Arc::clone(&self.in_flight),
        }
    }
}

impl<T> Default for Coalescer<T> {
    fn default() -> Self {
        Coalescer {
            in_flight: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl<T: Clone + Send + Sync + 'static> Coalescer<T> {
    /// Joins the work in flight for `key`, or starts `start()` on `tasks`
    /// for it; true when this caller started it (the leader).
    pub fn join_or_start<F>(
        &self,
        key: String,
        tasks: &TaskTracker,
        start: impl FnOnce() -> F,
    ) -> (Joined<T>, bool)
    where
        F: Future<Output = T> + Send + 'static,
    {
        let mut in_flight = self.in_flight.lock();
        if let Some(shared) = in_flight.get(&key) {
            return (shared.clone(), false);
        }
        let work = start();
        let map = Arc::clone(&self.in_flight);
        let cleanup_key = key.clone();
        let task = tasks.spawn(async move {
            let value = work.await;
            map.lock().remove(&cleanup_key);
            value
        });
        let future = async move { task.await.ok() }.boxed().shared();
        in_flight.insert(key, future.clone());
        (future, true)
    }

    /// Keys in flight now.
    pub fn len(&self) -> usize {
        self.in_flight.lock().len()
    }

    /// True when nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_share_the_leaders_work_and_the_key_is_released() {
        let coalescer: Coalescer<u32> = Coalescer::default();
        let tasks = TaskTracker::new();
        let (release, wait) = tokio::sync::oneshot::channel::<()>();
        let (first, leader) = coalescer.join_or_start("k".into(), &tasks, || async move {
            let _ = wait.await;
            7
        });
        let (second, follower_leads) = coalescer.join_or_start("k".into(), &tasks, || async { 0 });
        assert!(leader && !follower_leads);
        assert_eq!(coalescer.len(), 1);
        release.send(()).unwrap();
        assert_eq!((first.await, second.await), (Some(7), Some(7)));
        tasks.close();
        tasks.wait().await;
        assert!(coalescer.is_empty());
    }
}
