//! The end-to-end tests, in one binary (one link of the whole workspace
//! instead of one per file): each module is one area of behaviour, run
//! against real servers on loopback started by the `tests` crate's harness.

mod attacker;
mod browser;
mod cache_tier;
mod canary;
mod dashboards;
mod edge;
mod etcd_membership;
mod layers;
mod leases;
mod metrics_lint;
mod overload;
mod partitions;
mod quality;
mod rollout;
mod serving;
mod tail;
