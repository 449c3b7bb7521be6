//! What every handler shares.

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
}
