//! Registry tests on paused tokio time: every expiry is driven by
//! `tokio::time::advance`, never by the wall clock.

use std::time::Duration;

use proto::lease::lease_server::Lease;
use proto::lease::{GrantRequest, KeepAliveRequest, ListRequest, RevokeRequest};
use tonic::{Code, Request};

use super::*;
use crate::service::LeaseService;

const TTL: Duration = Duration::from_secs(3);

fn config() -> RegistryConfig {
    RegistryConfig {
        min_ttl: Duration::from_secs(1),
        max_ttl: Duration::from_secs(10),
        token: None,
    }
}

fn leaf(shard: u32, address: &str) -> HolderInfo {
    HolderInfo {
        role: Role::Leaf,
        shard,
        address: address.to_owned(),
        generation: 7,
    }
}

fn cache(address: &str) -> HolderInfo {
    HolderInfo {
        role: Role::Cache,
        shard: 0,
        address: address.to_owned(),
        generation: 0,
    }
}

/// The value of a metric series in the Prometheus registry, 0 when absent.
fn metric(registry: &prometheus::Registry, name: &str, label: Option<(&str, &str)>) -> f64 {
    registry
        .gather()
        .iter()
        .filter(|family| family.name() == name)
        .flat_map(|family| family.get_metric().iter())
        .filter(|m| {
            label.is_none_or(|(key, value)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == key && l.value() == value)
            })
        })
        .map(|m| {
            if m.get_gauge().value() != 0.0 {
                m.get_gauge().value()
            } else {
                m.get_counter().value()
            }
        })
        .sum()
}

/// Lets the reaper run after time moved.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

fn addresses(view: &MemberView) -> Vec<String> {
    view.borrow().iter().map(|m| m.address.clone()).collect()
}

#[tokio::test(start_paused = true)]
async fn grant_adds_a_member_and_counts_it() {
    let prom = prometheus::Registry::new();
    let registry = Registry::new(config(), &prom);
    let granted = registry.grant(&leaf(1, "127.0.0.1:7001"), TTL).unwrap();
    assert_ne!(granted.lease_id, 0);
    assert_eq!(granted.ttl, TTL);
    let members = registry.watch().borrow().clone();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].lease_id, granted.lease_id);
    assert_eq!(members[0].shard, 1);
    assert_eq!(members[0].generation, 7);
    assert_eq!(metric(&prom, "lease_live", Some(("role", "leaf"))), 1.0);
    assert_eq!(
        metric(&prom, "lease_grants_total", Some(("role", "leaf"))),
        1.0
    );
    assert_eq!(metric(&prom, "lease_live", Some(("role", "cache"))), 0.0);
}

#[tokio::test(start_paused = true)]
async fn keep_alive_extends_the_term() {
    let prom = prometheus::Registry::new();
    let registry = Registry::new(config(), &prom);
    let view = registry.watch();
    let id = registry.grant(&leaf(0, "a:1"), TTL).unwrap().lease_id;
    // Renew a few times, each time two thirds into the term: well past the
    // first term's end, the lease is still live.
    for _ in 0..5 {
        tokio::time::advance(TTL * 2 / 3).await;
        settle().await;
        assert_eq!(registry.keep_alive(id), Ok(TTL));
    }
    assert_eq!(addresses(&view), ["a:1"]);
    let status = registry.list();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].ttl_left, TTL);
    assert_eq!(status[0].since_renewal, Duration::ZERO);
    tokio::time::advance(Duration::from_secs(1)).await;
    let status = registry.list();
    assert_eq!(status[0].ttl_left, TTL - Duration::from_secs(1));
    assert_eq!(status[0].since_renewal, Duration::from_secs(1));
    assert_eq!(metric(&prom, "lease_renewals_total", None), 5.0);
}

#[tokio::test(start_paused = true)]
async fn expiry_removes_the_member_and_counts_it() {
    let prom = prometheus::Registry::new();
    let registry = Registry::new(config(), &prom);
    let mut view = registry.watch();
    let id = registry.grant(&cache("c:1"), TTL).unwrap().lease_id;
    view.mark_unchanged();
    tokio::time::advance(TTL - Duration::from_millis(1)).await;
    settle().await;
    assert!(!view.has_changed().unwrap(), "expired too early");
    assert_eq!(registry.list().len(), 1);
    tokio::time::advance(Duration::from_millis(1)).await;
    settle().await;
    assert!(view.has_changed().unwrap(), "not expired after its term");
    assert!(view.borrow_and_update().is_empty());
    assert!(registry.list().is_empty());
    assert_eq!(
        metric(&prom, "lease_expirations_total", Some(("role", "cache"))),
        1.0
    );
    assert_eq!(metric(&prom, "lease_live", Some(("role", "cache"))), 0.0);
    // A keep-alive after expiry is refused and counted.
    assert_eq!(registry.keep_alive(id), Err(Error::NotFound(id)));
    assert_eq!(
        metric(&prom, "lease_refusals_total", Some(("reason", "not_found"))),
        1.0
    );
}

#[tokio::test(start_paused = true)]
async fn keep_alive_past_the_deadline_is_not_found_even_before_the_reaper_runs() {
    let prom = prometheus::Registry::new();
    let registry = Registry::new(config(), &prom);
    let id = registry.grant(&leaf(0, "a:1"), TTL).unwrap().lease_id;
    // No yield after advancing: the reaper has not had a chance to run.
    tokio::time::advance(TTL).await;
    assert_eq!(registry.keep_alive(id), Err(Error::NotFound(id)));
    assert!(registry.watch().borrow().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_shorter_lease_granted_later_expires_first() {
    let registry = Registry::new(config(), &prometheus::Registry::new());
    let view = registry.watch();
    registry
        .grant(&leaf(0, "long:1"), Duration::from_secs(10))
        .unwrap();
    settle().await;
    // The reaper sleeps for the 10 s lease; the new 1 s lease must wake it.
    registry
        .grant(&leaf(1, "short:1"), Duration::from_secs(1))
        .unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    settle().await;
    assert_eq!(addresses(&view), ["long:1"]);
}

#[tokio::test(start_paused = true)]
async fn revoke_removes_at_once_and_is_idempotent() {
    let prom = prometheus::Registry::new();
    let registry = Registry::new(config(), &prom);
    let mut view = registry.watch();
    let id = registry.grant(&leaf(2, "a:1"), TTL).unwrap().lease_id;
    view.mark_unchanged();
    assert!(registry.revoke(id));
    assert!(view.has_changed().unwrap());
    assert!(view.borrow_and_update().is_empty());
    assert!(!registry.revoke(id));
    assert!(!registry.revoke(12345));
    assert!(
        !view.has_changed().unwrap(),
        "a no-op revoke must not notify"
    );
    assert_eq!(
        metric(&prom, "lease_revocations_total", Some(("role", "leaf"))),
        1.0
    );
    assert_eq!(metric(&prom, "lease_live", Some(("role", "leaf"))), 0.0);
    assert_eq!(registry.keep_alive(id), Err(Error::NotFound(id)));
}

#[tokio::test(start_paused = true)]
async fn ttl_is_clamped_to_the_configured_bounds() {
    let registry = Registry::new(config(), &prometheus::Registry::new());
    let short = registry
        .grant(&leaf(0, "a:1"), Duration::from_millis(10))
        .unwrap();
    assert_eq!(short.ttl, Duration::from_secs(1));
    let zero = registry.grant(&leaf(1, "a:1"), Duration::ZERO).unwrap();
    assert_eq!(zero.ttl, Duration::from_secs(1));
    let long = registry
        .grant(&leaf(2, "a:1"), Duration::from_secs(3600))
        .unwrap();
    assert_eq!(long.ttl, Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn invalid_holders_are_refused_and_counted() {
    let prom = prometheus::Registry::new();
    let registry = Registry::new(config(), &prom);
    let mut unspecified = leaf(0, "a:1");
    unspecified.role = Role::Unspecified;
    for holder in [
        unspecified,
        leaf(0, ""),
        leaf(0, "  "),
        leaf(0, &"x".repeat(300)),
    ] {
        assert!(matches!(
            registry.grant(&holder, TTL),
            Err(Error::InvalidArgument(_))
        ));
    }
    assert!(registry.watch().borrow().is_empty());
    assert_eq!(
        metric(&prom, "lease_refusals_total", Some(("reason", "invalid"))),
        4.0
    );
}

#[tokio::test(start_paused = true)]
async fn a_new_grant_of_the_same_holder_replaces_the_old_lease() {
    let registry = Registry::new(config(), &prometheus::Registry::new());
    let first = registry.grant(&leaf(3, "a:1"), TTL).unwrap().lease_id;
    let second = registry.grant(&leaf(3, "a:1"), TTL).unwrap().lease_id;
    assert_ne!(first, second);
    let members = registry.watch().borrow().clone();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].lease_id, second);
    assert_eq!(registry.keep_alive(first), Err(Error::NotFound(first)));
    // Another shard at the same address is another member.
    registry.grant(&leaf(4, "a:1"), TTL).unwrap();
    assert_eq!(registry.watch().borrow().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn watch_notifies_on_join_and_leave_but_not_on_renewal() {
    let registry = Registry::new(config(), &prometheus::Registry::new());
    let mut view = registry.watch();
    let a = registry.grant(&leaf(0, "a:1"), TTL).unwrap().lease_id;
    assert!(view.has_changed().unwrap());
    view.mark_unchanged();
    registry.grant(&cache("c:1"), TTL).unwrap();
    assert!(view.has_changed().unwrap());
    assert_eq!(addresses(&view), ["a:1", "c:1"]);
    view.mark_unchanged();
    tokio::time::advance(Duration::from_secs(1)).await;
    registry.keep_alive(a).unwrap();
    settle().await;
    assert!(!view.has_changed().unwrap(), "a renewal must not notify");
    registry.revoke(a);
    assert!(view.has_changed().unwrap());
    assert_eq!(addresses(&view), ["c:1"]);
    // `changed()` wakes a waiting watcher on expiry.
    view.mark_unchanged();
    let waiter = tokio::spawn(async move {
        view.changed().await.unwrap();
        view.borrow().len()
    });
    tokio::time::advance(TTL).await;
    assert_eq!(waiter.await.unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_registry_stops_the_reaper() {
    let registry = Registry::new(config(), &prometheus::Registry::new());
    registry.grant(&leaf(0, "a:1"), TTL).unwrap();
    let weak = Arc::downgrade(&registry);
    drop(registry);
    settle().await;
    assert!(weak.upgrade().is_none());
}

fn authorized<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn grant_request() -> GrantRequest {
    GrantRequest {
        holder: Some(proto::lease::Holder {
            role: Role::Leaf as i32,
            shard: 1,
            address: "127.0.0.1:7001".into(),
            generation: 1,
        }),
        ttl_ms: 3000,
    }
}

#[tokio::test(start_paused = true)]
async fn wrong_or_missing_token_is_refused_and_counted() {
    let prom = prometheus::Registry::new();
    let registry = Registry::new(
        RegistryConfig {
            token: Some("s3cret".into()),
            ..config()
        },
        &prom,
    );
    let service = LeaseService::new(registry.clone());
    let missing = service
        .grant(Request::new(grant_request()))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    let wrong = service
        .grant(authorized(grant_request(), "s3creT"))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert!(
        !wrong.message().contains("s3cre"),
        "the token must not be echoed"
    );
    assert!(registry.watch().borrow().is_empty());

    let granted = service
        .grant(authorized(grant_request(), "s3cret"))
        .await
        .unwrap();
    let lease_id = granted.into_inner().lease_id;
    let keep = service
        .keep_alive(Request::new(KeepAliveRequest { lease_id }))
        .await
        .unwrap_err();
    assert_eq!(keep.code(), Code::Unauthenticated);
    let revoke = service
        .revoke(authorized(RevokeRequest { lease_id }, "nope"))
        .await
        .unwrap_err();
    assert_eq!(revoke.code(), Code::Unauthenticated);
    assert_eq!(
        registry.watch().borrow().len(),
        1,
        "a refused revoke must not remove"
    );
    // List is open.
    let list = service.list(Request::new(ListRequest {})).await.unwrap();
    assert_eq!(list.into_inner().holders.len(), 1);
    assert_eq!(
        metric(
            &prom,
            "lease_refusals_total",
            Some(("reason", "unauthenticated"))
        ),
        4.0
    );
    let kept = service
        .keep_alive(authorized(KeepAliveRequest { lease_id }, "s3cret"))
        .await
        .unwrap();
    assert_eq!(kept.into_inner().ttl_ms, 3000);
}

#[tokio::test(start_paused = true)]
async fn grpc_requests_are_validated() {
    let registry = Registry::new(config(), &prometheus::Registry::new());
    let service = LeaseService::new(registry.clone());
    let no_holder = GrantRequest {
        holder: None,
        ttl_ms: 1000,
    };
    let status = service.grant(Request::new(no_holder)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let mut bad_role = grant_request();
    bad_role.holder.as_mut().unwrap().role = 42;
    let status = service.grant(Request::new(bad_role)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = service
        .keep_alive(Request::new(KeepAliveRequest { lease_id: 99 }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    // Revoke of an unknown lease succeeds.
    service
        .revoke(Request::new(RevokeRequest { lease_id: 99 }))
        .await
        .unwrap();
    let granted = service
        .grant(Request::new(grant_request()))
        .await
        .unwrap()
        .into_inner();
    tokio::time::advance(Duration::from_millis(500)).await;
    let list = service
        .list(Request::new(ListRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.holders.len(), 1);
    let holder = &list.holders[0];
    assert_eq!(holder.lease_id, granted.lease_id);
    assert_eq!(holder.ttl_left_ms, 2500);
    assert_eq!(holder.since_renewal_ms, 500);
    assert_eq!(holder.holder.as_ref().unwrap().address, "127.0.0.1:7001");
}
