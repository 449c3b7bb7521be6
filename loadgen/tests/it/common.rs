//! A search API stand-in with known latency, for the integration tests.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::time::Instant;

/// How the fake server behaves.
#[derive(Clone, Default)]
pub struct Behaviour {
    /// Added to every answer.
    pub delay: Duration,
    /// Added instead of `delay` when the query is `slow`.
    pub slow: Duration,
    /// Freeze every response for `.1` starting `.0` after the first request.
    pub stall: Option<(Duration, Duration)>,
}

#[derive(Clone)]
struct Server {
    behaviour: Behaviour,
    first: Arc<OnceLock<Instant>>,
    answered: Arc<AtomicU64>,
}

/// Starts the server on 127.0.0.1:0 and returns its base URL.
pub async fn serve(behaviour: Behaviour) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Server {
        behaviour,
        first: Arc::new(OnceLock::new()),
        answered: Arc::new(AtomicU64::new(0)),
    };
    let app = Router::new()
        .route("/search", get(search))
        .with_state(state);
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{addr}")
}

async fn search(
    State(s): State<Server>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let now = Instant::now();
    let first = *s.first.get_or_init(|| now);
    if let Some((at, length)) = s.behaviour.stall {
        let (from, to) = (first + at, first + at + length);
        if now >= from && now < to {
            tokio::time::sleep_until(to).await;
        }
    }
    let q = params.get("q").map(String::as_str).unwrap_or("");
    if q == "overload" {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "1")],
            Json(json!({"error": {"code": "overloaded", "message": "shedding load"}})),
        )
            .into_response();
    }
    let delay = if q == "slow" {
        s.behaviour.slow
    } else {
        s.behaviour.delay
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let n = s.answered.fetch_add(1, Ordering::Relaxed);
    let partial = n % 10 == 0;
    Json(json!({
        "hits": [{"id": "d1", "score": 1.0, "title": "t", "snippet": "s", "shard": 0}],
        "partial": partial,
        "coverage": {"shards_total": 2, "shards_answered": if partial { 1 } else { 2 },
                     "percent": if partial { 50.0 } else { 100.0 }},
        "estimated_recall": 0.9,
        "cache": if n % 2 == 0 { "hit" } else { "miss" },
        "took_ms": 1
    }))
    .into_response()
}
