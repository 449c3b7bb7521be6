//! Coalescing: identical cache misses in flight share one fan-out, when
//! that fan-out can serve the newcomer.
//!
//! The first request for a key (the leader) starts the work as a tracked
//! task of its own, so that it finishes, and leaves the map, even if every
//! waiter goes away; requests for the same key that arrive meanwhile (the
//! followers) wait for the same result, but only when the work's
//! [`Window`] serves them: it runs to a deadline no earlier than the
//! follower's, or gives its shard calls at least the follower's budget.
//! Otherwise the newcomer starts work of its own, which replaces the older
//! entry for later arrivals (the older work still finishes for its waiters).
//!
//! **Invariant:** a joined request never gets less budget than it asked
//! for: it joins only work whose deadline or budget is no smaller than its
//! own, and the caller ([`crate::query::root`]) fans out by itself for the
//! rest of its deadline when the shared work ended earlier incomplete.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::future::{BoxFuture, FutureExt, Shared};
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

/// The shared result of one piece of work; `None` when its task failed.
pub type Joined<T> = Shared<BoxFuture<'static, Option<T>>>;

/// The time a piece of work runs under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// When it started: its shard calls run from then…
    pub started: Instant,
    /// …until this deadline.
    pub deadline: Instant,
}

impl Window {
    pub fn new(started: Instant, deadline: Instant) -> Self {
        Window { started, deadline }
    }

    /// The time its shard calls get.
    pub fn budget(&self) -> std::time::Duration {
        self.deadline.saturating_duration_since(self.started)
    }

    /// Work in this window can stand in for work in `wanted`: it runs to a
    /// deadline no earlier, or it gives its shard calls at least as much
    /// time (an identical request that came a little later). In the second
    /// case the joiner may have time left when the shared work ends: a
    /// joiner that gets an incomplete result then carries on by itself
    /// ([`Window::outlives`]).
    pub fn serves(&self, wanted: &Window) -> bool {
        self.deadline >= wanted.deadline || self.budget() >= wanted.budget()
    }

    /// True when `self` ends after `other`'s deadline.
    pub fn outlives(&self, other: &Window) -> bool {
        self.deadline > other.deadline
    }
}

/// Decides whether work in flight may serve a newcomer.
pub trait Joinable: Copy + Send + 'static {
    fn serves(&self, wanted: &Self) -> bool;
}

impl Joinable for Window {
    fn serves(&self, wanted: &Self) -> bool {
        Window::serves(self, wanted)
    }
}

/// Work whose result fits every caller alike (nothing to compare).
impl Joinable for () {
    fn serves(&self, _: &Self) -> bool {
        true
    }
}

struct Entry<T, W> {
    /// Tells this entry from one that replaced it under the same key.
    id: u64,
    window: W,
    joined: Joined<T>,
}

/// Work in flight by key. Cheap to clone: the clones share the map.
pub struct Coalescer<T, W = Window> {
    in_flight: Arc<Mutex<HashMap<String, Entry<T, W>>>>,
    next_id: Arc<AtomicU64>,
}

impl<T, W> Clone for Coalescer<T, W> {
    fn clone(&self) -> Self {
        Coalescer {
            in_flight: Arc::clone(&self.in_flight),
            next_id: Arc::clone(&self.next_id),
        }
    }
}

impl<T, W> Default for Coalescer<T, W> {
    fn default() -> Self {
        Coalescer {
            in_flight: Arc::new(Mutex::new(HashMap::new())),
            next_id: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl<T: Clone + Send + Sync + 'static, W: Joinable> Coalescer<T, W> {
    /// Joins the work in flight for `key` when its window serves `window`,
    /// or starts `start()` on `tasks` for it; true when this caller started
    /// it (the leader).
    pub fn join_or_start<F>(
        &self,
        key: String,
        window: W,
        tasks: &TaskTracker,
        start: impl FnOnce() -> F,
    ) -> (Joined<T>, bool)
    where
        F: Future<Output = T> + Send + 'static,
    {
        let mut in_flight = self.in_flight.lock();
        if let Some(entry) = in_flight.get(&key) {
            if entry.window.serves(&window) {
                return (entry.joined.clone(), false);
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let work = start();
        let map = Arc::clone(&self.in_flight);
        let cleanup_key = key.clone();
        let task = tasks.spawn(async move {
            let value = work.await;
            let mut map = map.lock();
            // A newer entry under the same key belongs to other work.
            if map.get(&cleanup_key).is_some_and(|entry| entry.id == id) {
                map.remove(&cleanup_key);
            }
            value
        });
        let joined = async move { task.await.ok() }.boxed().shared();
        in_flight.insert(
            key,
            Entry {
                id,
                window,
                joined: joined.clone(),
            },
        );
        (joined, true)
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
    use std::time::Duration;

    use super::*;

    /// A window opening `started_ms` from now for `budget_ms`.
    fn window(started_ms: u64, budget_ms: u64) -> Window {
        let started = Instant::now() + Duration::from_millis(started_ms);
        Window::new(started, started + Duration::from_millis(budget_ms))
    }

    #[tokio::test(start_paused = true)]
    async fn followers_share_the_leaders_work_and_the_key_is_released() {
        let coalescer: Coalescer<u32> = Coalescer::default();
        let tasks = TaskTracker::new();
        let (release, wait) = tokio::sync::oneshot::channel::<()>();
        let (first, leader) =
            coalescer.join_or_start("k".into(), window(0, 100), &tasks, || async move {
                let _ = wait.await;
                7
            });
        // A shorter budget is served by the leader's longer one.
        let (second, follower_leads) =
            coalescer.join_or_start("k".into(), window(10, 60), &tasks, || async { 0 });
        assert!(leader && !follower_leads);
        assert_eq!(coalescer.len(), 1);
        release.send(()).unwrap();
        assert_eq!((first.await, second.await), (Some(7), Some(7)));
        tasks.close();
        tasks.wait().await;
        assert!(coalescer.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_longer_budget_never_joins_shorter_work() {
        let coalescer: Coalescer<u32> = Coalescer::default();
        let tasks = TaskTracker::new();
        let (release, wait) = tokio::sync::oneshot::channel::<()>();
        let (short, leader) =
            coalescer.join_or_start("k".into(), window(0, 60), &tasks, || async move {
                let _ = wait.await;
                1
            });
        let (long, long_leads) =
            coalescer.join_or_start("k".into(), window(10, 3000), &tasks, || async { 2 });
        assert!(leader && long_leads, "the 3 s request runs its own work");
        // Later arrivals find the newer, longer work.
        let (third, third_leads) =
            coalescer.join_or_start("k".into(), window(20, 2000), &tasks, || async { 3 });
        assert!(!third_leads);
        assert_eq!(long.await, Some(2));
        assert_eq!(third.await, Some(2));
        // The older work's end does not remove the newer entry, and vice versa.
        release.send(()).unwrap();
        assert_eq!(short.await, Some(1));
        tasks.close();
        tasks.wait().await;
        assert!(coalescer.is_empty());
    }

    #[test]
    fn an_identical_request_a_little_later_is_served_by_the_same_budget() {
        let leader = window(0, 500);
        assert!(leader.serves(&window(5, 500)));
        assert!(window(5, 500).outlives(&leader));
        assert!(leader.serves(&window(5, 60)));
        assert!(!leader.serves(&window(5, 501)));
        assert!(!window(0, 60).serves(&window(10, 3000)));
    }
}
