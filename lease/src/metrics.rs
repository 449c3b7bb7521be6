//! Prometheus metrics of the registry and of the holder, registered on the
//! registry the caller passes in (never the global default).

use prometheus::core::Collector;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};

use crate::error::Error;
use crate::member::{Role, RoleLabel};

/// The outcome of a keep-alive, the `outcome` label of
/// `lease_holder_renewals_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RenewalOutcome {
    Ok,
    /// The registry no longer knows the lease: grant anew.
    NotFound,
    Error,
}

impl RenewalOutcome {
    pub const ALL: &'static [RenewalOutcome] = &[
        RenewalOutcome::Ok,
        RenewalOutcome::NotFound,
        RenewalOutcome::Error,
    ];

    pub fn label(&self) -> &'static str {
        match self {
            RenewalOutcome::Ok => "ok",
            RenewalOutcome::NotFound => "not_found",
            RenewalOutcome::Error => "error",
        }
    }
}

/// Why the registry refused a request, the `reason` label of
/// `lease_refusals_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    Unauthenticated,
    Invalid,
    NotFound,
    Exhausted,
    /// The backend could not be reached (etcd; never the embedded registry).
    Unavailable,
}

impl Refusal {
    /// The reasons the embedded registry refuses with, pre-registered.
    pub const ALL: &'static [Refusal] = &[
        Refusal::Unauthenticated,
        Refusal::Invalid,
        Refusal::NotFound,
        Refusal::Exhausted,
    ];

    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Unauthenticated => "unauthenticated",
            Refusal::Invalid => "invalid",
            Refusal::NotFound => "not_found",
            Refusal::Exhausted => "exhausted",
            Refusal::Unavailable => "unavailable",
        }
    }

    /// The reason a request failed with `error`.
    pub fn of(error: &Error) -> Refusal {
        match error {
            Error::InvalidArgument(_) => Refusal::Invalid,
            Error::NotFound(_) => Refusal::NotFound,
            Error::Unauthenticated => Refusal::Unauthenticated,
            Error::TooManyLeases(_) => Refusal::Exhausted,
            Error::Etcd(_) => Refusal::Unavailable,
        }
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
        for role in Role::ALL.iter().map(Role::label) {
            metrics.live.with_label_values(&[role]).set(0);
            metrics.grants.with_label_values(&[role]);
            metrics.expirations.with_label_values(&[role]);
            metrics.revocations.with_label_values(&[role]);
        }
        for reason in Refusal::ALL {
            metrics.refusals.with_label_values(&[reason.label()]);
        }
        metrics
    }

    pub fn refused(&self, reason: Refusal) {
        self.refusals.with_label_values(&[reason.label()]).inc();
    }
}

/// Metrics of the holder side, one set per process: every holder set of a
/// process (a leaf serving several shards holds one per shard) shares it.
#[derive(Clone)]
pub struct HolderMetrics {
    pub renewals: IntCounterVec,
    pub lost: IntCounter,
    pub grants: IntCounter,
    pub held: IntGauge,
}

impl HolderMetrics {
    /// Creates the holder metrics and registers them on `registry`.
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
        for outcome in RenewalOutcome::ALL {
            metrics.renewals.with_label_values(&[outcome.label()]);
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
        for role in Role::ALL.iter().map(Role::label) {
            metrics.live.with_label_values(&[role]).set(0);
        }
        metrics
    }
}
