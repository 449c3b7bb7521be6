//! What every handler shares.

use std::sync::Arc;

use crate::http::client::ApiKeys;
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
