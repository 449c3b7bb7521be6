//! Admission control in front of the request path: an adaptive concurrency
//! limit with a short, bounded queue. When the frontend is overloaded it
//! answers some requests at once with 503 `overloaded` and `Retry-After`
//! rather than letting every request's latency collapse.
//!
//! # The controller
//!
//! [`Controller`] is a pure state machine (no clock, no locks): it is fed one
//! sample per finished request, the time from admission to the end of the
//! request, and evaluates the latencies in windows of [`WINDOW_SAMPLES`]
//! samples (or [`WINDOW_TIME`], given at least [`WINDOW_MIN_SAMPLES`]). Per
//! window it takes the 90th percentile (`p90`) and keeps a *floor*, an
//! estimate of the p90 without queueing: the lowest window p90 seen, which
//! drifts up toward newer p90s with a time constant of [`FLOOR_DECAY`], but
//! only in windows where the limit did not bind (fewer than half the slots
//! used), so that queueing the limit lets in is never taken for the new
//! normal, as it would be if the floor followed every window (the limit
//! would then creep up until the target stopped it). When the work itself
//! gets slower (a bigger corpus, a slow shard), the limit is cut to its
//! minimum, and a window still slow there resets the floor to its p90. The
//! floor is never taken below [`FLOOR_RESOLUTION`] of the target:
//! differences far below the objective (a cache hit against a fan-out) are
//! not queueing.
//!
//! Then, in the manner of AIMD and of Netflix's Gradient2:
//!
//! - *raise* by `√limit` (at least 1) while `p90 < floor × RAISE_TOLERANCE`
//!   and `p90 < target / 2`, but only when the window used at least half
//!   the limit: low latency at low concurrency says nothing about a higher
//!   limit;
//! - *cut* by [`BACKOFF`] (×0.9) when `p90 > target × TARGET_HIGH` or
//!   `p90 > floor × GRADIENT_LIMIT` while `p90 > target ×
//!   GRADIENT_MIN_SHARE` (queueing far below the objective is no reason to
//!   shed), at most once per round trip: after a
//!   cut, the next cut waits one p90, so that it judges requests admitted
//!   under the new limit rather than the old one;
//! - otherwise hold.
//!
//! The limit stays within `[min_limit, max_limit]`. Queue time is not part
//! of the sample, so queueing never feeds back into the limit.
//!
//! # The queue
//!
//! A request over the limit waits for a slot in a queue of at most
//! `max_queue` places (default twice the current limit) for at most
//! `queue_timeout` (default 1 ms: time spent queued is time the fan-out
//! does not get, and a shed request should learn it at once). A full queue rejects at
//! once (`queue_full`); a wait that runs out rejects then (`queue_timeout`).
//! Every request thus gets an answer within `queue_timeout`.
//!
//! A released slot goes straight to a waiter (it is never up for grabs by
//! newcomers). The queue is *adaptive LIFO*: first in, first out while the
//! oldest waiter has waited less than half the timeout, which is fair when
//! the queue only absorbs bursts; once it has waited longer the queue is
//! standing (overload) and the newest waiter goes first, because it has the
//! most of its budget left while the oldest would mostly time out anyway.
//!
//! Whether a waiter got a slot or timed out is decided under the lock by
//! whether it is still queued, so a hand-over racing a timeout, or a client
//! that goes away while queued (its future is dropped), neither leaks a slot
//! nor loses one.
//!
//! # Fairness between clients
//!
//! Every request names its client (a plain [`ClientId`]: the HTTP layer
//! derives it from an API key or the source address). The gate counts each
//! client's requests in flight and queued, and sheds the heaviest first:
//!
//! - a released slot goes to a waiter of the client with the fewest
//!   requests in flight (FIFO or LIFO, as above, among that client's
//!   waiters and any tied with it), so a client that floods the queue does
//!   not push a light client's request out to its timeout;
//! - when the queue is full, a newcomer whose client holds fewer requests
//!   (in flight and queued) than the heaviest client in the queue takes
//!   the place of that client's newest waiter, which is rejected at once
//!   (`displaced`); otherwise the newcomer is rejected (`queue_full`).
//!
//! - while more than one client has been seen in the last
//!   [`RECENT_CLIENT`], no client may hold more than the limit minus a
//!   reserve of `limit / 4` (at least one) slots: the reserve is kept for
//!   the others, so a light client finds a slot at once even when a flood's
//!   requests take long to finish (a released slot comes later than the
//!   queue timeout). A lone client may use every slot. The clients seen
//!   recently are a fixed table of [`RECENT_CLIENTS`] entries.
//! - when a client holds more than its share anyway (it took the slots
//!   while alone, or the limit fell under it), a client holding less than
//!   the reserve borrows a slot past the limit at once instead of queueing
//!   behind it: in flight stays within the limit plus the reserve.
//!
//! A flood from one client thus gets the 503s, and a client sending at a
//! modest rate from elsewhere is admitted within the queue timeout. The
//! per-client counts live only while a client has a request in flight or
//! queued, so they take at most as many entries as there are slots and
//! places in the queue.
//!
//! **Invariant:** a client holding fewer slots is never rejected for a
//! full queue while a heavier client has a request queued.
//!
//! With `enabled` off every request is admitted at once; in-flight requests
//! are still counted and the limit gauge reads 0.
//!
//! The state is one small struct under a `parking_lot` mutex, held for a few
//! hundred nanoseconds and never across an await.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus::IntCounter;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::query::error::QueryError;
pub use crate::query::error::Rejection;

/// A client seen this recently keeps the reserve away from the others.
pub const RECENT_CLIENT: Duration = Duration::from_secs(1);
/// Clients remembered as recently seen (the least recently seen is
/// forgotten first).
pub const RECENT_CLIENTS: usize = 8;

/// Seconds a shed client is told to wait before it retries.
const RETRY_AFTER_SECS: u32 = 1;

/// A verdict window closes after this many samples…
pub const WINDOW_SAMPLES: usize = 64;
/// …or after this long, if it holds at least [`WINDOW_MIN_SAMPLES`].
pub const WINDOW_TIME: Duration = Duration::from_millis(250);
/// Fewer samples than this say too little to act on.
pub const WINDOW_MIN_SAMPLES: usize = 8;
/// Raise while the window p90 is below the floor times this.
pub const RAISE_TOLERANCE: f64 = 1.5;
/// Cut when the window p90 is above the floor times this.
pub const GRADIENT_LIMIT: f64 = 2.0;
/// Cut when the window p90 is above this fraction of the latency target.
pub const TARGET_HIGH: f64 = 0.8;
/// The gradient test (`p90 > floor × GRADIENT_LIMIT`) applies only above
/// this share of the target.
pub const GRADIENT_MIN_SHARE: f64 = 0.25;
/// The multiplicative decrease.
pub const BACKOFF: f64 = 0.9;
/// Time constant with which the floor drifts up toward newer latencies
/// while the limit does not bind.
pub const FLOOR_DECAY: Duration = Duration::from_secs(20);
/// The floor is never below this fraction of the latency target.
pub const FLOOR_RESOLUTION: f64 = 0.05;

/// Who a request is for, as admission control shares its slots: a hash of
/// an API key or of a source address (the HTTP layer decides which).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientId(u64);

impl ClientId {
    /// Requests that name no client (in-process callers, tests) share one.
    pub const ANONYMOUS: ClientId = ClientId(0);

    /// The client of API key `key`.
    pub fn of_key(key: &str) -> ClientId {
        ClientId(xxhash_rust::xxh3::xxh3_64_with_seed(key.as_bytes(), 1) | 1)
    }

    /// The client at source address `addr`.
    pub fn of_addr(addr: std::net::IpAddr) -> ClientId {
        let bytes = match addr {
            std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
            std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        ClientId(xxhash_rust::xxh3::xxh3_64_with_seed(&bytes, 2) | 1)
    }

    /// A client of its own for `n` (tests).
    pub fn from_raw(n: u64) -> ClientId {
        ClientId(n)
    }
}

#[derive(Clone, Debug)]
pub struct AdmissionConfig {
    /// Off admits every request (to measure what admission control buys).
    pub enabled: bool,
    /// The latency objective: the limit is cut as the p90 approaches it.
    pub latency_target: Duration,
    /// The limit at start, before any latency is known.
    pub initial_limit: usize,
    /// The limit is never cut below this, so some work always gets through.
    pub min_limit: usize,
    /// The limit is never raised above this.
    pub max_limit: usize,
    /// Requests that may wait for a slot; `None` allows twice the current
    /// limit, `Some(0)` rejects as soon as the limit is reached.
    pub max_queue: Option<usize>,
    /// The longest a request waits for a slot before it is shed.
    pub queue_timeout: Duration,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            enabled: true,
            latency_target: Duration::from_millis(100),
            initial_limit: 32,
            min_limit: 2,
            max_limit: 1000,
            max_queue: None,
            queue_timeout: Duration::from_millis(1),
        }
    }
}

/// The admission gate shared by all requests of one frontend.
pub struct Admission {
    shared: Arc<Shared>,
}

/// Held while an admitted request runs. Dropping it frees the slot (or
/// hands it to a waiter) and reports the request's latency to the
/// controller.
pub struct Permit {
    shared: Arc<Shared>,
    client: ClientId,
    admitted_at: Instant,
    /// The latency to report instead of the time held, when the caller
    /// knows better (see [`Permit::set_service_time`]).
    service_time: Option<Duration>,
}

impl Admission {
    pub fn new(config: AdmissionConfig, metrics: Arc<Metrics>) -> Arc<Self> {
        let queue_full = metrics
            .admission_rejections
            .with_label_values(&[Rejection::QueueFull.label()]);
        let queue_timeout = metrics
            .admission_rejections
            .with_label_values(&[Rejection::QueueTimeout.label()]);
        let displaced = metrics
            .admission_rejections
            .with_label_values(&[Rejection::Displaced.label()]);
        let state = State {
            controller: Controller::new(&config),
            in_flight: 0,
            queue: VecDeque::new(),
            next_id: 0,
            clients: HashMap::new(),
            displaced: HashSet::new(),
            recent: Vec::with_capacity(RECENT_CLIENTS),
        };
        let shared = Shared {
            config,
            metrics,
            queue_full,
            queue_timeout,
            displaced,
            state: Mutex::new(state),
        };
        shared.publish(&shared.state.lock());
        Arc::new(Admission {
            shared: Arc::new(shared),
        })
    }

    /// Admits an anonymous request (see [`Admission::admit_client`]).
    pub async fn admit(&self) -> Result<Permit, QueryError> {
        self.admit_client(ClientId::ANONYMOUS).await
    }

    /// Admits a request of `client` now, after a short wait in the queue,
    /// or not at all: [`QueryError::Overloaded`], with the time to wait
    /// before a retry.
    pub async fn admit_client(&self, client: ClientId) -> Result<Permit, QueryError> {
        let (id, granted) = match self.shared.enter(client, Instant::now()) {
            Entry::Admitted => return Ok(Permit::new(&self.shared, client)),
            Entry::Rejected(reason) => return Err(self.shared.reject(reason)),
            Entry::Queued { id, granted } => (id, granted),
        };
        // Gives the slot back if this future is dropped while queued.
        let mut waiting = Waiting {
            shared: &self.shared,
            id: Some(id),
            client,
        };
        // Whichever comes first, the wake-up only ends the wait: whether
        // the slot was handed over is read from the queue under the lock.
        let _ = tokio::time::timeout(self.shared.config.queue_timeout, granted).await;
        waiting.id = None;
        match self.shared.withdraw(id, client) {
            Withdrawn::Granted => Ok(Permit::new(&self.shared, client)),
            Withdrawn::Removed => Err(self.shared.reject(Rejection::QueueTimeout)),
            Withdrawn::Displaced => Err(self.shared.reject(Rejection::Displaced)),
        }
    }

    /// The current concurrency limit (0 when admission control is off).
    pub fn limit(&self) -> usize {
        self.shared.state.lock().limit(&self.shared.config)
    }
}

impl Permit {
    fn new(shared: &Arc<Shared>, client: ClientId) -> Permit {
        Permit {
            shared: Arc::clone(shared),
            client,
            admitted_at: Instant::now(),
            service_time: None,
        }
    }
}

impl Permit {
    /// Reports `latency` to the controller instead of the time the permit
    /// was held. The request path uses it to leave out the time spent
    /// waiting for shards that never answered: a hung or dead shard makes
    /// every request wait its whole deadline without concurrency being the
    /// cause, and cutting the limit for it would shed load for nothing.
    pub fn set_service_time(&mut self, latency: Duration) {
        self.service_time = Some(latency);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let now = Instant::now();
        let latency = self
            .service_time
            .unwrap_or_else(|| now.saturating_duration_since(self.admitted_at));
        self.shared.release(self.client, Some(latency), now);
    }
}

struct Shared {
    config: AdmissionConfig,
    metrics: Arc<Metrics>,
    /// The two rejection counters, resolved once.
    queue_full: IntCounter,
    queue_timeout: IntCounter,
    displaced: IntCounter,
    state: Mutex<State>,
}

struct State {
    controller: Controller,
    /// Admitted requests whose permit is alive, plus slots handed to
    /// waiters that have not woken yet.
    in_flight: usize,
    /// Invariant: whenever `in_flight` is below the limit, every waiter's
    /// client is over its share (usually: the queue is empty), because
    /// every release, every limit change and every newcomer hands free
    /// slots out at once.
    queue: VecDeque<Waiter>,
    next_id: u64,
    /// Each client's requests in flight and queued; a client leaves when
    /// both are zero (at most `in_flight + queue.len()` entries). Not kept
    /// with admission off.
    clients: HashMap<ClientId, ClientLoad>,
    /// Waiters taken out of the queue for a lighter client, until they
    /// wake and learn it (at most the queue's length).
    displaced: HashSet<u64>,
    /// The clients seen most recently, with when (at most
    /// [`RECENT_CLIENTS`]).
    recent: Vec<(ClientId, Instant)>,
}

#[derive(Clone, Copy, Debug, Default)]
struct ClientLoad {
    in_flight: usize,
    queued: usize,
}

impl ClientLoad {
    fn total(&self) -> usize {
        self.in_flight + self.queued
    }
}

struct Waiter {
    id: u64,
    client: ClientId,
    since: Instant,
    /// Wakes the waiter; a send to a waiter that is going away is fine, as
    /// its [`Waiting`] guard gives the slot back.
    wake: oneshot::Sender<()>,
}

enum Entry {
    Admitted,
    Rejected(Rejection),
    Queued {
        id: u64,
        granted: oneshot::Receiver<()>,
    },
}

#[derive(Debug, PartialEq, Eq)]
enum Withdrawn {
    /// The waiter was still queued and is now removed.
    Removed,
    /// The waiter had been handed a slot, which it now holds.
    Granted,
    /// The waiter was taken out for a lighter client.
    Displaced,
}

/// Withdraws a queued waiter whose `admit` future is dropped.
struct Waiting<'a> {
    shared: &'a Shared,
    id: Option<u64>,
    client: ClientId,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            if self.shared.withdraw(id, self.client) == Withdrawn::Granted {
                self.shared.release(self.client, None, Instant::now());
            }
        }
    }
}

impl Shared {
    fn enter(&self, client: ClientId, now: Instant) -> Entry {
        let mut state = self.state.lock();
        if self.config.enabled {
            state.seen(client, now);
        }
        let limit = state.controller.limit();
        let entry = if !self.config.enabled {
            state.in_flight += 1;
            Entry::Admitted
        } else if (state.in_flight < limit
            && state.queue.is_empty()
            && !state.over_share(client, now))
            || state.may_borrow(client)
        {
            state.in_flight += 1;
            state.clients.entry(client).or_default().in_flight += 1;
            Entry::Admitted
        } else if state.queue.len() >= self.config.max_queue.unwrap_or(2 * limit)
            && !state.displace_heavier_than(client)
        {
            Entry::Rejected(Rejection::QueueFull)
        } else {
            let (wake, granted) = oneshot::channel();
            let id = state.next_id;
            state.next_id += 1;
            state.queue.push_back(Waiter {
                id,
                client,
                since: now,
                wake,
            });
            state.clients.entry(client).or_default().queued += 1;
            // A reserved slot may be free while the queue holds clients
            // over their share: the newcomer may take it at once.
            if state.in_flight < limit {
                state.dispatch(now, self.config.queue_timeout);
            }
            Entry::Queued { id, granted }
        };
        self.publish(&state);
        entry
    }

    /// Takes waiter `id` out of the queue, or learns it was handed a slot
    /// or displaced.
    fn withdraw(&self, id: u64, client: ClientId) -> Withdrawn {
        let mut state = self.state.lock();
        if state.displaced.remove(&id) {
            return Withdrawn::Displaced;
        }
        let Some(index) = state.queue.iter().position(|w| w.id == id) else {
            return Withdrawn::Granted;
        };
        state.queue.remove(index);
        state.forget_queued(client);
        self.publish(&state);
        Withdrawn::Removed
    }

    /// Frees one slot; `latency` is `None` for a slot that a cancelled
    /// waiter never used.
    fn release(&self, client: ClientId, latency: Option<Duration>, now: Instant) {
        let mut state = self.state.lock();
        let in_flight = state.in_flight;
        state.in_flight = in_flight.saturating_sub(1);
        if self.config.enabled {
            state.forget_in_flight(client);
        }
        let mut change = None;
        if self.config.enabled {
            if let Some(latency) = latency {
                let before = state.controller.limit();
                let after = state.controller.on_sample(latency, in_flight, now);
                if after != before {
                    change = Some((before, after, state.controller.floor()));
                }
            }
            state.dispatch(now, self.config.queue_timeout);
        }
        self.publish(&state);
        drop(state);
        if let Some((before, after, floor)) = change {
            tracing::debug!(
                before,
                after,
                floor_ms = floor.map(|f| f.as_secs_f64() * 1e3),
                "admission limit changed"
            );
        }
    }

    fn reject(&self, reason: Rejection) -> QueryError {
        match reason {
            Rejection::QueueFull => self.queue_full.inc(),
            Rejection::QueueTimeout => self.queue_timeout.inc(),
            Rejection::Displaced => self.displaced.inc(),
        }
        QueryError::Overloaded {
            reason,
            retry_after_secs: RETRY_AFTER_SECS,
        }
    }

    fn publish(&self, state: &State) {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let metrics = &self.metrics;
        metrics
            .admission_limit
            .set(gauge(state.limit(&self.config)));
        metrics.admission_in_flight.set(gauge(state.in_flight));
        metrics.admission_queue.set(gauge(state.queue.len()));
    }
}

impl State {
    fn limit(&self, config: &AdmissionConfig) -> usize {
        if config.enabled {
            self.controller.limit()
        } else {
            0
        }
    }

    /// Notes that `client` asked at `now`.
    fn seen(&mut self, client: ClientId, now: Instant) {
        if let Some(entry) = self.recent.iter_mut().find(|(c, _)| *c == client) {
            entry.1 = now;
        } else if self.recent.len() < RECENT_CLIENTS {
            self.recent.push((client, now));
        } else if let Some(oldest) = self.recent.iter_mut().min_by_key(|(_, at)| *at) {
            *oldest = (client, now);
        }
    }

    /// True when `client` already holds its share: the limit minus the
    /// reserve, while another client was seen recently.
    fn over_share(&self, client: ClientId, now: Instant) -> bool {
        let others = self
            .recent
            .iter()
            .any(|(c, at)| *c != client && now.saturating_duration_since(*at) < RECENT_CLIENT);
        if !others {
            return false;
        }
        let (share, _) = share_and_reserve(self.controller.limit());
        self.clients
            .get(&client)
            .is_some_and(|load| load.in_flight >= share)
    }

    /// True when `client` may take a slot past the limit: another client
    /// holds more than its share (it took the slots while alone, or the
    /// limit fell under it) and `client` holds less than the reserve. The
    /// reserve is owed to the light client at once, not after the heavy
    /// one's requests finish (later than the queue timeout under a flood);
    /// borrowing stops at the limit plus the reserve in all.
    fn may_borrow(&self, client: ClientId) -> bool {
        let limit = self.controller.limit();
        let (share, reserve) = share_and_reserve(limit);
        let holds = |c: &ClientId| self.clients.get(c).map_or(0, |load| load.in_flight);
        self.in_flight < limit + reserve
            && holds(&client) < reserve
            && self
                .clients
                .iter()
                .any(|(other, load)| *other != client && load.in_flight > share)
    }

    /// Hands free slots to waiters (never past a client's share: a
    /// reserved slot stays free for another client).
    fn dispatch(&mut self, now: Instant, queue_timeout: Duration) {
        while self.in_flight < self.controller.limit() {
            let Some(waiter) = self.next_waiter(now, queue_timeout) else {
                break;
            };
            self.in_flight += 1;
            let load = self.clients.entry(waiter.client).or_default();
            load.queued = load.queued.saturating_sub(1);
            load.in_flight += 1;
            let _ = waiter.wake.send(());
        }
    }

    /// A waiter of the client with the fewest requests in flight: among
    /// those, FIFO while the queue is fresh, LIFO once it is standing.
    fn next_waiter(&mut self, now: Instant, queue_timeout: Duration) -> Option<Waiter> {
        let oldest = self.queue.front()?.since;
        let in_flight = |clients: &HashMap<ClientId, ClientLoad>, client: &ClientId| {
            clients.get(client).map_or(0, |load| load.in_flight)
        };
        let lightest = self
            .queue
            .iter()
            .map(|w| in_flight(&self.clients, &w.client))
            .min()?;
        let mut candidates = self
            .queue
            .iter()
            .enumerate()
            .filter(|(_, w)| in_flight(&self.clients, &w.client) == lightest)
            .map(|(index, _)| index);
        let index = if now.saturating_duration_since(oldest) < queue_timeout / 2 {
            candidates.next()
        } else {
            candidates.next_back()
        }?;
        // The lightest is over its share only when every waiter is.
        if self.over_share(self.queue[index].client, now) {
            return None;
        }
        self.queue.remove(index)
    }

    /// With the queue full: when `client` holds fewer requests than the
    /// heaviest client with a request queued, takes that client's newest
    /// waiter out (it learns it on waking) to make room, and says so.
    fn displace_heavier_than(&mut self, client: ClientId) -> bool {
        let total = |clients: &HashMap<ClientId, ClientLoad>, client: &ClientId| {
            clients.get(client).map_or(0, ClientLoad::total)
        };
        let mine = total(&self.clients, &client);
        let Some((heaviest_client, heaviest)) = self
            .queue
            .iter()
            .map(|w| (w.client, total(&self.clients, &w.client)))
            .max_by_key(|&(_, load)| load)
        else {
            return false;
        };
        // After the swap the heavier client still holds at least as many
        // as the newcomer: no two clients displace each other in turn.
        if heaviest <= mine + 1 {
            return false;
        }
        let Some(index) = self.queue.iter().rposition(|w| w.client == heaviest_client) else {
            return false;
        };
        let Some(waiter) = self.queue.remove(index) else {
            return false;
        };
        self.forget_queued(waiter.client);
        self.displaced.insert(waiter.id);
        let _ = waiter.wake.send(());
        true
    }

    fn forget_queued(&mut self, client: ClientId) {
        if let Some(load) = self.clients.get_mut(&client) {
            load.queued = load.queued.saturating_sub(1);
            if load.total() == 0 {
                self.clients.remove(&client);
            }
        }
    }

    fn forget_in_flight(&mut self, client: ClientId) {
        if let Some(load) = self.clients.get_mut(&client) {
            load.in_flight = load.in_flight.saturating_sub(1);
            if load.total() == 0 {
                self.clients.remove(&client);
            }
        }
    }
}

/// The adaptive concurrency limit; see the module documentation. Pure: the
/// caller supplies the time, so tests can run it over logical time.
#[derive(Clone, Debug)]
pub struct Controller {
    limit: usize,
    min_limit: usize,
    max_limit: usize,
    target: Duration,
    /// Latencies of the current window.
    window: Vec<Duration>,
    window_start: Option<Instant>,
    /// The most requests in flight seen in the window, to tell a limit that
    /// is being used from one that is not.
    window_peak: usize,
    floor: Option<Duration>,
    /// No further cut before this: one round trip after the last cut.
    hold_cuts_until: Option<Instant>,
}

impl Controller {
    pub fn new(config: &AdmissionConfig) -> Controller {
        let min_limit = config.min_limit.max(1);
        let max_limit = config.max_limit.max(min_limit);
        Controller {
            limit: config.initial_limit.max(min_limit).min(max_limit),
            min_limit,
            max_limit,
            target: config.latency_target,
            window: Vec::with_capacity(WINDOW_SAMPLES),
            window_start: None,
            window_peak: 0,
            floor: None,
            hold_cuts_until: None,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The latency floor (the p90 without queueing), once known.
    pub fn floor(&self) -> Option<Duration> {
        self.floor
    }

    /// Records that a request took `latency` from admission to its end, at
    /// `now`, with `in_flight` requests admitted (itself included), and
    /// returns the limit, changed when this sample closes a window.
    pub fn on_sample(&mut self, latency: Duration, in_flight: usize, now: Instant) -> usize {
        let start = *self.window_start.get_or_insert(now);
        self.window.push(latency);
        self.window_peak = self.window_peak.max(in_flight);
        let elapsed = now.saturating_duration_since(start);
        let closed = self.window.len() >= WINDOW_SAMPLES
            || (elapsed >= WINDOW_TIME && self.window.len() >= WINDOW_MIN_SAMPLES);
        if closed {
            let p90 = percentile(&mut self.window, 0.9);
            self.evaluate(p90, elapsed, now);
            self.window.clear();
            self.window_start = None;
            self.window_peak = 0;
        }
        self.limit
    }

    fn evaluate(&mut self, p90: Duration, elapsed: Duration, now: Instant) {
        let used = self.window_peak.saturating_mul(2) >= self.limit;
        self.floor = Some(match self.floor {
            // The floor is learned while the limit does not bind, so that
            // queueing we cause is never taken for the new normal.
            Some(floor) if p90 > floor && !used => {
                let drift = 1.0 - (-elapsed.as_secs_f64() / FLOOR_DECAY.as_secs_f64()).exp();
                floor + (p90 - floor).mul_f64(drift.clamp(0.0, 1.0))
            }
            // Slow even at the least concurrency allowed: the work itself
            // got slower, and this is its latency now.
            Some(floor)
                if self.limit == self.min_limit
                    && p90.as_secs_f64() > floor.as_secs_f64() * GRADIENT_LIMIT =>
            {
                p90
            }
            Some(floor) => floor.min(p90),
            None => p90,
        });

        let target = self.target.as_secs_f64();
        let floor = self
            .floor
            .map_or(0.0, |floor| floor.as_secs_f64())
            .max(target * FLOOR_RESOLUTION);
        let latency = p90.as_secs_f64();
        // The gradient test only counts once latency is a real share of the
        // objective: queueing for a few milliseconds of CPU far below the
        // objective is no reason to shed load.
        let too_slow = latency > target * TARGET_HIGH
            || (latency > floor * GRADIENT_LIMIT && latency > target * GRADIENT_MIN_SHARE);
        let holding = self.hold_cuts_until.is_some_and(|until| now < until);
        if too_slow && !holding {
            let cut = (self.limit as f64 * BACKOFF) as usize;
            self.limit = cut.min(self.limit - 1).max(self.min_limit);
            // The next verdict on a cut waits one round trip.
            self.hold_cuts_until = now.checked_add(p90);
        } else if !too_slow && used && latency < floor * RAISE_TOLERANCE && latency < target / 2.0 {
            let step = ((self.limit as f64).sqrt() as usize).max(1);
            self.limit = self.limit.saturating_add(step).min(self.max_limit);
        }
    }
}

/// The `q` quantile of a non-empty slice (reordering it).
/// A client's share of `limit` while others are active, and the reserve
/// kept for them: `limit / 4`, at least one slot.
fn share_and_reserve(limit: usize) -> (usize, usize) {
    let reserve = (limit / 4).max(1);
    (limit.saturating_sub(reserve).max(1), reserve)
}

fn percentile(samples: &mut [Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
    *samples.select_nth_unstable(rank).1
}

#[cfg(test)]
mod tests;
