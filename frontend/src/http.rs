//! The HTTP surface: `/search` (GET and POST), `/cluster`, `/healthz`,
//! `/readyz`, `/metrics`. Only the frontend speaks HTTP to clients.

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{RawQuery, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::time::Instant;

use crate::admission::Admission;
use crate::api::{SearchBody, SearchParams};
use crate::cluster::cluster_view;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::root::Root;

/// Largest accepted `POST /search` body.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// Requests of any kind being served at once; past it the HTTP stage sheds
/// with an immediate 503 instead of queueing (searches are further limited
/// by admission control, which adapts to latency).
const MAX_HTTP_IN_FLIGHT: usize = 4096;

#[derive(Clone)]
pub struct AppState {
    pub root: Arc<Root>,
    pub admission: Arc<Admission>,
    pub metrics: Arc<Metrics>,
    pub membership: Arc<dyn lease::Membership>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/search", get(search_get).post(search_post))
        .route("/cluster", get(cluster))
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .merge(crate::web::router())
        .fallback(not_found)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .layer(
            tower::ServiceBuilder::new()
                .layer(axum::error_handling::HandleErrorLayer::new(shed_response))
                .load_shed()
                .concurrency_limit(MAX_HTTP_IN_FLIGHT),
        )
        .with_state(state)
}

async fn search_get(State(app): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let started = Instant::now();
    let result = match SearchParams::from_query_string(raw.as_deref()) {
        Ok(params) => run(&app, params).await,
        Err(error) => Err(error),
    };
    respond(&app, result, started)
}

async fn search_post(State(app): State<AppState>, request: Request) -> Response {
    let started = Instant::now();
    let result = match to_bytes(request.into_body(), MAX_BODY_BYTES).await {
        Ok(body) => match SearchParams::from_json(&body) {
            Ok(params) => run(&app, params).await,
            Err(error) => Err(error),
        },
        Err(_) => Err(ApiError::bad_request(
            "body_too_large",
            format!("request body larger than {MAX_BODY_BYTES} bytes or unreadable"),
        )),
    };
    respond(&app, result, started)
}

async fn run(app: &AppState, params: SearchParams) -> Result<SearchBody, ApiError> {
    let mut permit = app.admission.admit().await?;
    let result = app.root.search(&params).await;
    if let Ok(body) = &result {
        permit.set_service_time(service_time(body));
    }
    result
}

/// The request's latency less the time spent waiting for shards that never
/// answered: what admission control should judge concurrency by.
fn service_time(body: &SearchBody) -> std::time::Duration {
    let slowest = |answered_only: bool| {
        body.shards
            .iter()
            .filter(|s| !answered_only || matches!(s.state, "answered" | "partial"))
            .map(|s| s.took_ms)
            .fold(0.0, f64::max)
    };
    let waited_in_vain = (slowest(false) - slowest(true)).max(0.0);
    std::time::Duration::from_secs_f64((body.took_ms - waited_in_vain).max(0.0) / 1000.0)
}

fn respond(app: &AppState, result: Result<SearchBody, ApiError>, started: Instant) -> Response {
    let elapsed = started.elapsed().as_secs_f64();
    match result {
        Ok(body) => {
            let outcome = if body.partial { "partial" } else { "complete" };
            app.metrics.requests.with_label_values(&[outcome]).inc();
            let cache = match body.cache {
                crate::api::CacheResult::Hit => "hit",
                crate::api::CacheResult::Miss => "miss",
                crate::api::CacheResult::Bypass => "bypass",
            };
            app.metrics
                .duration
                .with_label_values(&[cache])
                .observe(elapsed);
            app.metrics.coverage.observe(body.coverage.percent / 100.0);
            app.metrics.estimated_recall.observe(body.estimated_recall);
            Json(body).into_response()
        }
        Err(error) => {
            app.metrics
                .requests
                .with_label_values(&[error.outcome()])
                .inc();
            if error.status != StatusCode::BAD_REQUEST {
                app.metrics
                    .duration
                    .with_label_values(&["none"])
                    .observe(elapsed);
            }
            error.into_response()
        }
    }
}

async fn cluster(State(app): State<AppState>) -> Response {
    Json(cluster_view(&app)).into_response()
}

async fn ready(State(app): State<AppState>) -> Response {
    let topology = app.root.fanout.routing().snapshot();
    let live = topology.shards.iter().filter(|r| !r.is_empty()).count();
    let body = serde_json::json!({
        "shards_total": topology.shards.len(),
        "shards_live": live,
    });
    // Ready once at least one shard can answer: a partial answer beats none.
    let status = if live > 0 {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(app): State<AppState>) -> Response {
    svc::metrics::response(&app.metrics.registry).into_response()
}

async fn not_found() -> Response {
    ApiError {
        status: StatusCode::NOT_FOUND,
        code: "not_found",
        message: "no such endpoint; try GET /search?q=…".into(),
        retry_after: None,
        answer: None,
    }
    .into_response()
}

async fn shed_response(_: tower::BoxError) -> Response {
    ApiError::unavailable("overloaded", "too many requests in flight", 1).into_response()
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    tracing::error!("a request handler panicked");
    ApiError::internal("internal error").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CacheResult, HedgeBody};
    use crate::merge::{Coverage, ShardReport};

    fn shard(shard: u32, state: &'static str, took_ms: f64) -> ShardReport {
        ShardReport {
            shard,
            state,
            docs_searched: 0,
            docs_total: 0,
            took_ms,
            hedges: 0,
            hedge_won: false,
            layout: 0,
        }
    }

    #[test]
    fn service_time_leaves_out_the_wait_for_shards_that_never_answered() {
        let body = SearchBody {
            hits: Vec::new(),
            partial: true,
            coverage: Coverage::default(),
            estimated_recall: 0.5,
            cache: CacheResult::Miss,
            took_ms: 152.0,
            global_stats: true,
            hedges: HedgeBody::default(),
            shards: vec![shard(0, "answered", 5.0), shard(1, "timed_out", 150.0)],
        };
        let time = service_time(&body);
        assert!((time.as_secs_f64() - 0.007).abs() < 1e-9, "{time:?}");
        let complete = SearchBody {
            partial: false,
            shards: vec![shard(0, "answered", 5.0), shard(1, "answered", 9.0)],
            took_ms: 10.0,
            ..body
        };
        assert!((service_time(&complete).as_secs_f64() - 0.010).abs() < 1e-9);
    }
}
