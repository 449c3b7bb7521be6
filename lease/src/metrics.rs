//! Prometheus metrics of the registry and of the holder, registered on the
//! registry the caller passes in (never the global default).

use prometheus::core::Collector;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};

use crate::Role;

/// The label value of a role (`leaf` or `cache`).
pub(crate) fn role_label(role: Role) -> &'static str {
    match role {
        Role::Leaf => "leaf",
        Role::Cache => "cache",
        Role::Unspecified => "unspecified",
    }
}

/// Registers `collector` on `registry`. A collector of the same name that is
/// already there (two registries on one Prometheus registry in a test) is
/// logged and left out rather than failing the caller.
fn register<C: Collector + Clone + 'static>(registry: &prometheus::Registry, collector: &C) {
    if let Err(error) = registry.register(Box::new(collector.clone())) {
        tracing::warn!(%error, "cannot register lease metric");
    }
}

// The names and labels below are constants, so building them cannot fail.
fn counter_vec(
    registry: &prometheus::Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    register(registry, &metric);
    metric
}

fn counter(registry: &prometheus::Registry, name: &str, help: &str) -> IntCounter {
    let metric = IntCounter::new(name, help).expect("valid metric");
    register(registry, &metric);
    metric
}

/// Metrics of the embedded registry.
#[derive(Clone)]
pub(crate) struct RegistryMetrics {
    pub live: IntGaugeVec,
    pub grants: IntCounterVec,
    pub renewals: IntCounter,
    pub expirations: IntCounterVec,
    pub revocations: IntCounterVec,
    pub refusals: IntCounterVec,
}

impl RegistryMetrics {
    pub fn new(registry: &prometheus::Registry) -> Self {
        let live = IntGaugeVec::new(
            Opts::new("lease_live", "Live leases by holder role."),
            &["role"],
        )
        .expect("valid metric");
        register(registry, &live);
        let metrics = Self {
            live,
            grants: counter_vec(registry, "lease_grants_total", "Leases granted.", &["role"]),
            renewals: counter(
                registry,
                "lease_renewals_total",
                "Leases renewed by a keep-alive.",
            ),
            expirations: counter_vec(
                registry,
                "lease_expirations_total",
                "Leases that expired without a keep-alive.",
                &["role"],
            ),
            revocations: counter_vec(
                registry,
                "lease_revocations_total",
                "Leases revoked by their holder (or replaced by a new grant of the same holder).",
                &["role"],
            ),
            refusals: counter_vec(
                registry,
                "lease_refusals_total",
                "Lease requests refused, by reason.",
                &["reason"],
            ),
        };
        // Export every series from the start, so that rates and alerts see
        // zeros rather than absent series.
        for role in ["leaf", "cache"] {
            metrics.live.with_label_values(&[role]).set(0);
            metrics.grants.with_label_values(&[role]);
            metrics.expirations.with_label_values(&[role]);
            metrics.revocations.with_label_values(&[role]);
        }
        for reason in ["unauthenticated", "invalid", "not_found", "exhausted"] {
            metrics.refusals.with_label_values(&[reason]);
        }
        metrics
    }

    pub fn refused(&self, reason: &str) {
        self.refusals.with_label_values(&[reason]).inc();
    }
}

/// Metrics of the holder side.
#[derive(Clone)]
pub(crate) struct HolderMetrics {
    pub renewals: IntCounterVec,
    pub lost: IntCounter,
    pub grants: IntCounter,
    pub held: IntGauge,
}

impl HolderMetrics {
    pub fn new(registry: &prometheus::Registry) -> Self {
        let held = IntGauge::new("lease_holder_held", "Leases this process currently holds.")
            .expect("valid metric");
        register(registry, &held);
        let metrics = Self {
            renewals: counter_vec(
                registry,
                "lease_holder_renewals_total",
                "Keep-alive calls by outcome (ok, not_found, error).",
                &["outcome"],
            ),
            lost: counter(
                registry,
                "lease_holder_lost_total",
                "Leases this process counted as lost (no renewal within the term less a safety margin).",
            ),
            grants: counter(registry, "lease_holder_grants_total", "Leases granted to this process."),
            held,
        };
        for outcome in ["ok", "not_found", "error"] {
            metrics.renewals.with_label_values(&[outcome]);
        }
        metrics
    }
}

/// Metrics of a membership followed on etcd (the frontend side).
#[derive(Clone)]
pub(crate) struct MembershipMetrics {
    pub connected: IntGauge,
    pub resyncs: IntCounter,
    pub errors: IntCounter,
    /// The same series as the embedded registry's, so that dashboards work
    /// with either backend.
    pub live: IntGaugeVec,
}

impl MembershipMetrics {
    pub fn new(registry: &prometheus::Registry) -> Self {
        let connected = IntGauge::new(
            "lease_membership_connected",
            "1 while the membership backend (etcd) answers; 0 while routing on the last membership seen.",
        )
        .expect("valid metric");
        register(registry, &connected);
        let live = IntGaugeVec::new(
            Opts::new("lease_live", "Live leases by holder role."),
            &["role"],
        )
        .expect("valid metric");
        register(registry, &live);
        let metrics = Self {
            connected,
            resyncs: counter(
                registry,
                "lease_membership_resyncs_total",
                "Full reads of the member prefix after the watched revision was compacted.",
            ),
            errors: counter(
                registry,
                "lease_membership_errors_total",
                "Failed reads or watches of the member prefix (etcd unreachable or refusing).",
            ),
            live,
        };
        for role in ["leaf", "cache"] {
            metrics.live.with_label_values(&[role]).set(0);
        }
        metrics
    }
}
