//! The HTTP edge, on two listeners:
//! - the public API ([`public_router`]): `/search` (GET and POST), the
//!   search page `/` and its assets, `/healthz`, `/readyz`;
//! - the admin surface ([`admin_router`], loopback by default): `/cluster`,
//!   the `/status` page and its script, `/metrics` (and `/healthz`,
//!   `/readyz` again, for probes that only reach it).
//!
//! Only the frontend speaks HTTP to clients, and inside it only this layer
//! knows JSON and status codes: it parses requests into [`crate::query`]'s
//! types ([`api`]), turns the query layer's results into response bodies
//! and its errors into statuses ([`error`]). It tells clients apart
//! ([`client`]) and hands admission a plain client id. [`serve`] accepts
//! and serves connections under the HTTP limits.
//!
//! **Invariant:** `http` is the only layer that knows JSON and status
//! codes; the layers below never import it.
//!
//! **Invariant:** the public listener never serves the membership
//! (`/cluster`), the status page or `/metrics`: addresses, lease ids and
//! generations are only on the admin listener.

pub mod api;
pub mod client;
pub mod cluster_view;
pub mod error;
pub mod response;
pub mod serve;
pub mod state;
pub mod web;

pub use state::AppState;

use axum::body::{to_bytes, Body};
use axum::extract::{RawQuery, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::time::Instant;

use crate::http::api::{SearchBody, SearchParams};
use crate::http::client::Client;
use crate::http::cluster_view::cluster_view;
use crate::http::error::{ApiError, ErrorCode, RequestOutcome};
use crate::metrics::Metrics;
use crate::query::answer::{Answer, CacheResult};

/// Requests of any kind being served at once; past it the HTTP stage sheds
/// with an immediate 503 instead of queueing (searches are further limited
/// by admission control, which adapts to latency).
const MAX_HTTP_IN_FLIGHT: usize = 4096;

/// The paths only the admin listener serves (what the harness and the
/// docs route to it).
pub const ADMIN_PATHS: &[&str] = &["/cluster", "/status", "/metrics", "/assets/status.js"];

/// The public API: searches, the search page, health and readiness.
pub fn public_router(state: AppState) -> Router {
    let router = Router::new()
        .route("/search", get(search_get).post(search_post))
        .merge(crate::http::web::public_router());
    finish(router, state)
}

/// The admin surface: membership, the status page and metrics.
pub fn admin_router(state: AppState) -> Router {
    let router = Router::new()
        .route("/cluster", get(cluster))
        .route("/metrics", get(metrics))
        .merge(crate::http::web::admin_router());
    finish(router, state)
}

/// Both surfaces on one router, for tests that need no listener split.
pub fn router(state: AppState) -> Router {
    let router = Router::new()
        .route("/search", get(search_get).post(search_post))
        .route("/cluster", get(cluster))
        .route("/metrics", get(metrics))
        .merge(crate::http::web::public_router())
        .merge(crate::http::web::admin_only_router());
    finish(router, state)
}

/// Health, readiness, the fallback and the layers every surface shares.
fn finish(router: Router<AppState>, state: AppState) -> Router {
    router
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/readyz", get(ready))
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

async fn search_get(
    State(app): State<AppState>,
    client: Client,
    RawQuery(raw): RawQuery,
) -> Response {
    let started = Instant::now();
    let result = match SearchParams::from_query_string(raw.as_deref()) {
        Ok(params) => run(&app, client, params).await,
        Err(error) => Err(error),
    };
    respond(&app, result, started)
}

async fn search_post(State(app): State<AppState>, client: Client, request: Request) -> Response {
    let started = Instant::now();
    let max = app.max_body_bytes;
    let result = match to_bytes(request.into_body(), max).await {
        Ok(body) => match SearchParams::from_json(&body) {
            Ok(params) => run(&app, client, params).await,
            Err(error) => Err(error),
        },
        Err(_) => Err(ApiError::bad_request(
            ErrorCode::BodyTooLarge,
            format!("request body larger than {max} bytes or unreadable"),
        )),
    };
    respond(&app, result, started)
}

async fn run(app: &AppState, client: Client, params: SearchParams) -> Result<Answer, ApiError> {
    let mut permit = app.admission.admit_client(client.id()).await?;
    let result = app.root.search(&params).await;
    if let Ok(answer) = &result {
        permit.set_service_time(answer.service_time());
    }
    Ok(result?)
}

/// The `cache` label of `frontend_search_duration_seconds` for a request
/// that got no answer.
const NO_ANSWER: &str = "none";

/// Pre-registers the series this layer labels, so that dashboards see zeros
/// from the start.
pub fn preregister(metrics: &Metrics) {
    for outcome in RequestOutcome::ALL {
        metrics.requests.with_label_values(&[outcome.label()]);
    }
    for cache in CacheResult::ALL {
        metrics.duration.with_label_values(&[cache.label()]);
    }
    metrics.duration.with_label_values(&[NO_ANSWER]);
}

fn respond(app: &AppState, result: Result<Answer, ApiError>, started: Instant) -> Response {
    let elapsed = started.elapsed().as_secs_f64();
    match result {
        Ok(answer) => {
            let outcome = if answer.partial {
                RequestOutcome::Partial
            } else {
                RequestOutcome::Complete
            };
            app.metrics
                .requests
                .with_label_values(&[outcome.label()])
                .inc();
            app.metrics
                .duration
                .with_label_values(&[answer.cache.label()])
                .observe(elapsed);
            app.metrics
                .coverage
                .observe(answer.coverage.percent / 100.0);
            app.metrics
                .estimated_recall
                .observe(answer.estimated_recall);
            Json(SearchBody::from(&answer)).into_response()
        }
        Err(error) => {
            app.metrics
                .requests
                .with_label_values(&[error.outcome().label()])
                .inc();
            if error.status != StatusCode::BAD_REQUEST {
                app.metrics
                    .duration
                    .with_label_values(&[NO_ANSWER])
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
    app.root.export_memory(true);
    svc::metrics::response(&app.metrics.registry).into_response()
}

async fn not_found() -> Response {
    ApiError {
        status: StatusCode::NOT_FOUND,
        code: ErrorCode::NotFound,
        message: "no such endpoint; try GET /search?q=…".into(),
        retry_after: None,
        answer: None,
    }
    .into_response()
}

async fn shed_response(_: tower::BoxError) -> Response {
    ApiError::unavailable(ErrorCode::Overloaded, "too many requests in flight", 1).into_response()
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    tracing::error!("a request handler panicked");
    ApiError::internal("internal error").into_response()
}
