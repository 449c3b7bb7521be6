//! What every handler shares.

use std::collections::HashSet;
use std::sync::Arc;

use crate::metrics::Metrics;
use crate::query::admission::Admission;
use crate::query::root::Root;

#[derive(Clone)]
pub struct AppState {
    pub root: Arc<Root>,
    pub admission: Arc<Admission>,
    pub metrics: Arc<Metrics>,
    pub membership: Arc<dyn lease::Membership>,
    /// The API keys that name a client to admission control (none: clients
    /// are told apart by source address).
    pub api_keys: Arc<ApiKeys>,
    /// The largest `POST /search` body.
    pub max_body_bytes: usize,
}

/// The configured API keys (empty: none).
#[derive(Clone, Debug, Default)]
pub struct ApiKeys(HashSet<String>);

impl ApiKeys {
    pub fn new(keys: impl IntoIterator<Item = String>) -> ApiKeys {
        ApiKeys(keys.into_iter().filter(|key| !key.is_empty()).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.0.contains(key)
    }
}
