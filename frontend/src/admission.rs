//! Admission control in front of the request path. Being written: for now
//! every request is admitted.

use std::sync::Arc;

use crate::error::ApiError;
use crate::metrics::Metrics;

#[derive(Clone, Debug)]
pub struct AdmissionConfig {
    pub enabled: bool,
    pub latency_target: std::time::Duration,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            enabled: true,
            latency_target: std::time::Duration::from_millis(100),
        }
    }
}

pub struct Admission {
    _config: AdmissionConfig,
    _metrics: Arc<Metrics>,
}

/// Held while an admitted request runs.
pub struct Permit;

impl Admission {
    pub fn new(config: AdmissionConfig, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Admission {
            _config: config,
            _metrics: metrics,
        })
    }

    pub async fn admit(&self) -> Result<Permit, ApiError> {
        Ok(Permit)
    }
}
