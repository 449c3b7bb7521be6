use std::sync::atomic::{AtomicUsize, Ordering};

use futures::FutureExt;
use prometheus::Registry;

use super::*;

fn start(config: AdmissionConfig) -> (Arc<Admission>, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new(Registry::new()).expect("metrics register"));
    (Admission::new(config, Arc::clone(&metrics)), metrics)
}

/// A limit fixed at `limit` with a queue of `queue` places.
fn fixed(limit: usize, queue: Option<usize>) -> AdmissionConfig {
    AdmissionConfig {
        initial_limit: limit,
        min_limit: limit,
        max_limit: limit,
        max_queue: queue,
        ..AdmissionConfig::default()
    }
}

fn rejections(metrics: &Metrics, reason: &str) -> u64 {
    metrics
        .admission_rejections
        .with_label_values(&[reason])
        .get()
}

/// Shed as overloaded, with a time to retry after (`http::error` maps
/// this to a 503 `overloaded` with `Retry-After`).
fn assert_overloaded(error: &QueryError) {
    let QueryError::Overloaded {
        retry_after_secs, ..
    } = error
    else {
        panic!("not overloaded: {error:?}");
    };
    assert!(*retry_after_secs > 0);
}

#[tokio::test(start_paused = true)]
async fn excess_requests_are_shed_at_once_and_slots_come_back() {
    let (admission, metrics) = start(fixed(1, Some(1)));
    assert_eq!(metrics.admission_limit.get(), 1);
    let first = admission.admit().await.expect("first is admitted");

    let queued = tokio::spawn({
        let admission = Arc::clone(&admission);
        async move { admission.admit().await }
    });
    tokio::task::yield_now().await;
    assert_eq!(metrics.admission_queue.get(), 1);

    // The queue is full: shed without waiting (logical time stands still).
    let before = Instant::now();
    let error = admission.admit().await.err().expect("third is shed");
    assert_eq!(Instant::now(), before);
    assert_overloaded(&error);
    assert_eq!(rejections(&metrics, "queue_full"), 1);

    drop(first);
    let second = queued
        .await
        .expect("task ran")
        .expect("queued one is admitted");
    assert_eq!(metrics.admission_in_flight.get(), 1);
    assert_eq!(metrics.admission_queue.get(), 0);
    drop(second);
    assert_eq!(metrics.admission_in_flight.get(), 0);

    for _ in 0..10 {
        let permit = admission.admit().now_or_never().expect("no wait");
        drop(permit.expect("admitted after permits were dropped"));
    }
    assert_eq!(metrics.admission_in_flight.get(), 0);
    assert_eq!(rejections(&metrics, "queue_timeout"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_queued_request_times_out() {
    let config = fixed(1, None);
    let queue_timeout = config.queue_timeout;
    let (admission, metrics) = start(config);
    let held = admission.admit().await.expect("admitted");

    let before = Instant::now();
    let error = admission.admit().await.err().expect("times out");
    let waited = before.elapsed();
    assert_overloaded(&error);
    assert!(waited >= queue_timeout && waited < 2 * queue_timeout);
    assert_eq!(rejections(&metrics, "queue_timeout"), 1);
    assert_eq!(rejections(&metrics, "queue_full"), 0);
    assert_eq!(metrics.admission_queue.get(), 0);
    assert_eq!(metrics.admission_in_flight.get(), 1);

    drop(held);
    assert_eq!(metrics.admission_in_flight.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_queued_request_frees_its_place() {
    let (admission, metrics) = start(fixed(1, Some(1)));
    let held = admission.admit().await.expect("admitted");

    let mut gone = Box::pin(admission.admit());
    assert!(futures::poll!(&mut gone).is_pending());
    assert_eq!(metrics.admission_queue.get(), 1);
    let error = admission.admit().await.err().expect("queue is full");
    assert_overloaded(&error);

    // The client goes away: its place is free for the next one.
    drop(gone);
    assert_eq!(metrics.admission_queue.get(), 0);
    let mut next = Box::pin(admission.admit());
    assert!(futures::poll!(&mut next).is_pending());
    drop(held);
    let permit = next.await.expect("the next one gets the slot");
    assert_eq!(metrics.admission_in_flight.get(), 1);
    drop(permit);
    assert_eq!(metrics.admission_in_flight.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_request_dropped_after_being_handed_a_slot_gives_it_back() {
    let (admission, metrics) = start(fixed(1, None));
    let held = admission.admit().await.expect("admitted");
    let mut gone = Box::pin(admission.admit());
    assert!(futures::poll!(&mut gone).is_pending());

    // The slot passes to the waiter, which goes away before it wakes.
    drop(held);
    assert_eq!(metrics.admission_in_flight.get(), 1);
    assert_eq!(metrics.admission_queue.get(), 0);
    drop(gone);
    assert_eq!(metrics.admission_in_flight.get(), 0);

    let permit = admission.admit().now_or_never().expect("no wait");
    assert!(permit.is_ok());
}

#[tokio::test(start_paused = true)]
async fn the_queue_is_fifo_when_fresh_and_lifo_when_standing() {
    let config = fixed(1, Some(4));
    let queue_timeout = config.queue_timeout;
    let (admission, metrics) = start(config);
    let held = admission.admit().await.expect("admitted");
    let mut a = Box::pin(admission.admit());
    let mut b = Box::pin(admission.admit());
    assert!(futures::poll!(&mut a).is_pending());
    assert!(futures::poll!(&mut b).is_pending());

    // Fresh queue: the oldest goes first.
    drop(held);
    let held = a.await.expect("a is first");
    assert!(futures::poll!(&mut b).is_pending());

    // B has now waited past half the timeout: the newest goes first.
    tokio::time::advance(queue_timeout / 2 + Duration::from_millis(1)).await;
    let mut c = Box::pin(admission.admit());
    assert!(futures::poll!(&mut c).is_pending());
    drop(held);
    let held = c.await.expect("c overtakes b");
    let error = b.await.err().expect("b times out");
    assert_overloaded(&error);
    assert_eq!(rejections(&metrics, "queue_timeout"), 1);
    drop(held);
    assert_eq!(metrics.admission_in_flight.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn every_request_gets_an_answer() {
    const REQUESTS: usize = 200;
    const LIMIT: usize = 4;
    let (admission, metrics) = start(fixed(LIMIT, None));
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let admission = Arc::clone(&admission);
            let running = Arc::clone(&running);
            let peak = Arc::clone(&peak);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis((i % 20) as u64)).await;
                let permit = admission.admit().await?;
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(3)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                drop(permit);
                Ok::<(), QueryError>(())
            })
        })
        .collect();

    let all = futures::future::join_all(tasks);
    let results = tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("no request is left hanging");
    let mut admitted = 0;
    let mut shed = 0;
    for result in results {
        match result.expect("task ran") {
            Ok(()) => admitted += 1,
            Err(error) => {
                assert_overloaded(&error);
                shed += 1;
            }
        }
    }
    assert_eq!(admitted + shed, REQUESTS);
    assert!(admitted >= LIMIT, "admitted {admitted}");
    assert!(shed > 0, "200 requests in 20 ms must overload 4 slots");
    assert!(peak.load(Ordering::SeqCst) <= LIMIT);
    let counted = rejections(&metrics, "queue_full") + rejections(&metrics, "queue_timeout");
    assert_eq!(counted, shed as u64);
    assert_eq!(metrics.admission_in_flight.get(), 0);
    assert_eq!(metrics.admission_queue.get(), 0);
}

#[tokio::test]
async fn disabled_admits_everything_but_still_counts() {
    let config = AdmissionConfig {
        enabled: false,
        ..fixed(1, Some(0))
    };
    let (admission, metrics) = start(config);
    let mut permits = Vec::new();
    for _ in 0..100 {
        let permit = admission.admit().now_or_never().expect("no wait");
        permits.push(permit.expect("admitted"));
    }
    assert_eq!(metrics.admission_in_flight.get(), 100);
    assert_eq!(metrics.admission_limit.get(), 0);
    drop(permits);
    assert_eq!(metrics.admission_in_flight.get(), 0);
}

/// Feeds `windows` full windows of `latency`, one sample a millisecond,
/// with `in_flight` requests running; returns the limit after each window.
fn feed(
    controller: &mut Controller,
    now: &mut Instant,
    windows: usize,
    latency: Duration,
    in_flight: impl Fn(usize) -> usize,
) -> Vec<usize> {
    let mut limits = Vec::new();
    for _ in 0..windows {
        for _ in 0..WINDOW_SAMPLES {
            *now += Duration::from_millis(1);
            let running = in_flight(controller.limit());
            controller.on_sample(latency, running, *now);
        }
        limits.push(controller.limit());
    }
    limits
}

#[test]
fn the_controller_raises_the_limit_while_latency_stays_near_its_floor() {
    let mut controller = Controller::new(&AdmissionConfig::default());
    let mut now = Instant::now();
    let limits = feed(&mut controller, &mut now, 10, ms(10), |limit| limit);
    let mut last = 32;
    for limit in limits {
        assert!(limit > last, "limit {limit} after {last}");
        last = limit;
    }
    assert_eq!(controller.floor(), Some(ms(10)));
}

#[test]
fn the_controller_does_not_raise_a_limit_it_does_not_use() {
    let mut controller = Controller::new(&AdmissionConfig::default());
    let mut now = Instant::now();
    let limits = feed(&mut controller, &mut now, 10, ms(10), |_| 3);
    assert!(limits.iter().all(|&limit| limit == 32));
}

#[test]
fn the_controller_cuts_the_limit_as_latency_nears_the_target() {
    let mut controller = Controller::new(&AdmissionConfig::default());
    let mut now = Instant::now();
    feed(&mut controller, &mut now, 5, ms(10), |limit| limit);
    let raised = controller.limit();

    // Near the 100 ms target: cut, but at most once per round trip.
    let limits = feed(&mut controller, &mut now, 6, ms(90), |limit| limit);
    assert!(limits[0] < raised);
    assert_eq!(limits[0], (raised as f64 * BACKOFF) as usize);
    assert_eq!(limits[1], limits[0], "a second cut waits one round trip");
    assert!(limits.windows(2).all(|pair| pair[1] <= pair[0]));
    assert!(*limits.last().unwrap_or(&raised) < limits[0]);
}

#[test]
fn the_controller_cuts_the_limit_when_latency_grows_past_its_floor() {
    let mut controller = Controller::new(&AdmissionConfig::default());
    let mut now = Instant::now();
    feed(&mut controller, &mut now, 5, ms(10), |limit| limit);
    let raised = controller.limit();
    // Well under the target, but three times the floor: queueing.
    let limits = feed(&mut controller, &mut now, 1, ms(30), |limit| limit);
    assert!(limits[0] < raised);
    // Between the raise and the cut thresholds: hold.
    let held = controller.limit();
    let limits = feed(&mut controller, &mut now, 3, ms(17), |limit| limit);
    assert!(limits.iter().all(|&limit| limit == held));
}

#[test]
fn the_controller_settles_where_latency_starts_to_grow() {
    // A backend that runs 50 requests at once in 10 ms; beyond that,
    // requests queue and latency grows in proportion.
    let latency = |limit: usize| ms(10).mul_f64((limit as f64 / 50.0).max(1.0));
    let mut controller = Controller::new(&AdmissionConfig::default());
    let mut now = Instant::now();
    for _ in 0..400 {
        let limit = controller.limit();
        feed(&mut controller, &mut now, 1, latency(limit), |limit| limit);
    }
    let mut seen = Vec::new();
    for _ in 0..100 {
        let limit = controller.limit();
        seen.extend(feed(&mut controller, &mut now, 1, latency(limit), |l| l));
    }
    // Raised past 50 while latency stays at its floor, cut before the
    // queueing doubles it.
    assert!(
        seen.iter().all(|&limit| (50..=110).contains(&limit)),
        "{seen:?}"
    );
}

#[test]
fn the_controller_stays_within_its_bounds() {
    let config = AdmissionConfig {
        min_limit: 2,
        max_limit: 40,
        ..AdmissionConfig::default()
    };
    let mut controller = Controller::new(&config);
    let mut now = Instant::now();
    feed(&mut controller, &mut now, 50, ms(1), |limit| limit);
    assert_eq!(controller.limit(), 40);
    feed(&mut controller, &mut now, 200, ms(500), |limit| limit);
    assert_eq!(controller.limit(), 2);

    // Nonsense bounds are repaired rather than panicking.
    let config = AdmissionConfig {
        initial_limit: 0,
        min_limit: 10,
        max_limit: 5,
        ..AdmissionConfig::default()
    };
    assert_eq!(Controller::new(&config).limit(), 10);
}

#[test]
fn a_window_also_closes_on_time() {
    let mut controller = Controller::new(&AdmissionConfig::default());
    let start = Instant::now();
    for _ in 1..WINDOW_MIN_SAMPLES {
        controller.on_sample(ms(10), 32, start);
    }
    controller.on_sample(ms(10), 32, start + WINDOW_TIME);
    assert_eq!(controller.floor(), Some(ms(10)));
    assert!(controller.limit() > 32);

    // Too few samples, however long it took.
    let start = start + 4 * WINDOW_TIME;
    controller.on_sample(ms(8), 32, start);
    for _ in 2..WINDOW_MIN_SAMPLES {
        controller.on_sample(ms(8), 32, start + 4 * WINDOW_TIME);
    }
    assert_eq!(controller.floor(), Some(ms(10)));
    controller.on_sample(ms(8), 32, start + 4 * WINDOW_TIME);
    assert_eq!(controller.floor(), Some(ms(8)));
}

#[test]
fn the_floor_follows_latency_only_while_the_limit_does_not_bind() {
    let mut controller = Controller::new(&AdmissionConfig::default());
    let mut now = Instant::now();
    feed(&mut controller, &mut now, 5, ms(10), |limit| limit);
    // Busy: 15 ms is queueing; the floor stays.
    feed(&mut controller, &mut now, 100, ms(15), |limit| limit);
    assert_eq!(controller.floor(), Some(ms(10)));
    // Quiet: 15 ms is what the work takes now; the floor follows.
    feed(&mut controller, &mut now, 1000, ms(15), |_| 1);
    let floor = controller.floor().unwrap_or_default();
    assert!(floor > ms(14) && floor <= ms(15), "{floor:?}");
}

#[test]
fn the_controller_recovers_when_the_work_itself_gets_slower() {
    let mut controller = Controller::new(&AdmissionConfig::default());
    let mut now = Instant::now();
    feed(&mut controller, &mut now, 5, ms(10), |limit| limit);
    // Three times slower at any concurrency: cut to the minimum, where the
    // floor is reset; then raised again.
    let limits = feed(&mut controller, &mut now, 200, ms(30), |limit| limit);
    assert!(limits.contains(&2));
    assert_eq!(controller.floor(), Some(ms(30)));
    assert!(controller.limit() > 32, "{limits:?}");
}

#[test]
fn percentile_picks_the_nearest_rank() {
    let mut samples: Vec<Duration> = (1..=10).rev().map(ms).collect();
    assert_eq!(percentile(&mut samples, 0.9), ms(9));
    assert_eq!(percentile(&mut samples, 1.0), ms(10));
    assert_eq!(percentile(&mut samples, 0.0), ms(1));
    assert_eq!(percentile(&mut [], 0.9), Duration::ZERO);
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

const HEAVY: ClientId = ClientId(101);
const LIGHT: ClientId = ClientId(202);

#[tokio::test(start_paused = true)]
async fn a_freed_slot_goes_to_the_client_with_the_fewest_in_flight() {
    // A limit of 4: a share of 3 while another client is active, and a
    // reserve of 1.
    let (admission, metrics) = start(fixed(4, Some(4)));
    let heavy_a = admission.admit_client(HEAVY).await.expect("admitted");
    let heavy_b = admission.admit_client(HEAVY).await.expect("admitted");
    let heavy_c = admission.admit_client(HEAVY).await.expect("admitted");
    let light_first = admission.admit_client(LIGHT).await.expect("the reserve");
    let mut heavy_queued = Box::pin(admission.admit_client(HEAVY));
    assert!(futures::poll!(&mut heavy_queued).is_pending());
    // The light client holds the reserve already: it queues too.
    let mut light = Box::pin(admission.admit_client(LIGHT));
    assert!(futures::poll!(&mut light).is_pending());

    // The heavy client queued first, but holds more slots: the light one
    // goes first.
    drop(heavy_a);
    let light = light.await.expect("the light client gets the slot");
    assert!(futures::poll!(&mut heavy_queued).is_pending());
    drop(heavy_b);
    let heavy = heavy_queued.await.expect("then the heavy one");
    drop((heavy_c, light_first));
    drop((light, heavy));
    assert_eq!(metrics.admission_in_flight.get(), 0);
    assert!(
        admission.shared.state.lock().clients.is_empty(),
        "no client is remembered once it holds nothing"
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_displaces_the_heaviest_clients_newest_waiter() {
    let (admission, metrics) = start(AdmissionConfig {
        queue_timeout: Duration::from_secs(1),
        ..fixed(1, Some(2))
    });
    let held = admission.admit_client(HEAVY).await.expect("admitted");
    let mut older = Box::pin(admission.admit_client(HEAVY));
    let mut newer = Box::pin(admission.admit_client(HEAVY));
    assert!(futures::poll!(&mut older).is_pending());
    assert!(futures::poll!(&mut newer).is_pending());

    // The heavy client itself is refused when the queue is full…
    let error = admission
        .admit_client(HEAVY)
        .await
        .err()
        .expect("queue is full for the heavy client");
    assert_overloaded(&error);
    assert_eq!(rejections(&metrics, "queue_full"), 1);

    // …but a light client takes the place of its newest waiter.
    let mut light = Box::pin(admission.admit_client(LIGHT));
    assert!(futures::poll!(&mut light).is_pending());
    let error = newer
        .await
        .err()
        .expect("the newest heavy waiter is displaced");
    assert_overloaded(&error);
    assert_eq!(rejections(&metrics, "displaced"), 1);
    assert_eq!(metrics.admission_queue.get(), 2);

    // Released, the heavy client holds nothing in flight either: the tie
    // goes to the oldest waiter, then the light client.
    drop(held);
    let older = older.await.expect("the oldest waiter");
    assert!(futures::poll!(&mut light).is_pending());
    drop(older);
    let light = light.await.expect("then the light client");
    drop(light);
    assert_eq!(metrics.admission_in_flight.get(), 0);
    assert!(admission.shared.state.lock().displaced.is_empty());
}

#[tokio::test(start_paused = true)]
async fn clients_holding_as_much_as_each_other_do_not_displace_each_other() {
    let (admission, metrics) = start(fixed(1, Some(1)));
    let held = admission.admit_client(LIGHT).await.expect("admitted");
    let mut queued = Box::pin(admission.admit_client(HEAVY));
    assert!(futures::poll!(&mut queued).is_pending());
    // HEAVY holds one (queued), a third client holds none: one more would
    // leave them even, so no displacement, a plain refusal.
    let error = admission
        .admit_client(ClientId(303))
        .await
        .err()
        .expect("refused");
    assert_overloaded(&error);
    assert_eq!(rejections(&metrics, "displaced"), 0);
    drop(held);
    drop(queued.await.expect("still served"));
}

#[test]
fn client_ids_of_keys_and_addresses_differ_and_are_never_anonymous() {
    let addr = ClientId::of_addr("127.0.0.1".parse().unwrap());
    let other = ClientId::of_addr("127.0.0.2".parse().unwrap());
    let key = ClientId::of_key("127.0.0.1");
    assert_ne!(addr, other);
    assert_ne!(addr, key);
    for id in [addr, other, key] {
        assert_ne!(id, ClientId::ANONYMOUS);
    }
}

#[tokio::test(start_paused = true)]
async fn a_flooding_client_leaves_a_reserved_slot_for_another_seen_recently() {
    let (admission, _metrics) = start(AdmissionConfig {
        queue_timeout: Duration::from_millis(20),
        ..fixed(8, Some(16))
    });
    // Alone, a client may use every slot.
    let mut held: Vec<_> = Vec::new();
    for _ in 0..8 {
        held.push(
            admission
                .admit_client(HEAVY)
                .await
                .expect("alone: every slot"),
        );
    }
    drop(held);
    // Once another client has been seen, the heavy one stops short of the
    // reserve (8 - 8/4 = 6 slots)…
    drop(admission.admit_client(LIGHT).await.expect("admitted"));
    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(
            admission
                .admit_client(HEAVY)
                .await
                .expect("within its share"),
        );
    }
    let error = admission
        .admit_client(HEAVY)
        .await
        .err()
        .expect("past its share it waits and is shed");
    assert_overloaded(&error);
    // …which the light client gets at once.
    let light = admission
        .admit_client(LIGHT)
        .now_or_never()
        .expect("no wait")
        .expect("the reserve");
    drop((light, held));
}

#[tokio::test(start_paused = true)]
async fn a_light_client_borrows_the_reserve_from_a_client_that_took_every_slot_alone() {
    let (admission, metrics) = start(AdmissionConfig {
        queue_timeout: Duration::from_millis(20),
        ..fixed(8, Some(16))
    });
    // Alone, the heavy client holds every slot…
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(admission.admit_client(HEAVY).await.expect("alone"));
    }
    // …yet the light one gets the reserve (8 / 4 = 2 slots) at once, past
    // the limit, without waiting for the heavy client's requests.
    let mut light = Vec::new();
    for _ in 0..2 {
        light.push(
            admission
                .admit_client(LIGHT)
                .now_or_never()
                .expect("no wait")
                .expect("borrowed from the reserve"),
        );
    }
    // Not more than the reserve, and never for the heavy client.
    for client in [LIGHT, HEAVY] {
        let error = admission
            .admit_client(client)
            .await
            .err()
            .expect("no slot: waits and is shed");
        assert_overloaded(&error);
    }
    assert_eq!(rejections(&metrics, "queue_timeout"), 2);
    drop((light, held));
}
