//! The web pages the frontend serves itself: a search page at `/` on the
//! public listener and a live cluster page at `/status` on the admin
//! listener (whose `/` redirects to it).
//!
//! There is no build step and nothing is fetched from elsewhere: the HTML,
//! the vanilla JavaScript and the stylesheet live in `frontend-core/assets/` and
//! are compiled into the binary with `include_str!`. The pages only call the
//! frontend's own JSON and text endpoints:
//!
//! - `/` (`index.html`, `app.js`) reads the query from the URL (`?q=…`, and
//!   optionally `k`, `timeout_ms`, `nocache`), calls `GET /search` with it
//!   and renders hits, coverage and the partial-answer notice. A new search
//!   is pushed onto the browser history, so a search can be shared and the
//!   back button works. Without JavaScript the form still navigates.
//! - `/status` (`status.html`, `status.js`) polls `GET /cluster` every second
//!   for shards, replicas, leases and cache servers, and `GET /metrics`
//!   every two seconds; it keeps the last five minutes of samples in a ring
//!   buffer in the page and draws them as inline SVG sparklines. The
//!   latency objective drawn on the latency chart is the page's
//!   `data-objective-ms` attribute (100 ms, the default objective),
//!   overridable with `?objective_ms=…`.
//!
//! Every response carries `Cache-Control: no-cache` (a new binary's pages are
//! picked up at once) and a Content-Security-Policy that allows only this
//! origin's scripts, styles and connections: the pages build their DOM with
//! text nodes, and the policy is a second line of defence.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::http::state::AppState;

/// The search page.
const INDEX_HTML: &str = include_str!("../../assets/index.html");
/// The cluster status page.
const STATUS_HTML: &str = include_str!("../../assets/status.html");
const APP_JS: &str = include_str!("../../assets/app.js");
const STATUS_JS: &str = include_str!("../../assets/status.js");
const STYLE_CSS: &str = include_str!("../../assets/style.css");

const HTML: &str = "text/html; charset=utf-8";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Only this origin, for everything; inline scripts and styles are refused.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// A page or asset: its path, content type and body.
type Asset = (&'static str, &'static str, &'static str);

/// The search page and its assets (public listener).
const PUBLIC_ASSETS: &[Asset] = &[
    ("/", HTML, INDEX_HTML),
    ("/assets/app.js", JAVASCRIPT, APP_JS),
    ("/assets/style.css", CSS, STYLE_CSS),
];

/// The status page and its script (admin listener only).
const ADMIN_ONLY_ASSETS: &[Asset] = &[
    ("/status", HTML, STATUS_HTML),
    ("/assets/status.js", JAVASCRIPT, STATUS_JS),
];

/// Every page and asset, once.
#[cfg(test)]
const ASSETS: &[Asset] = &[
    ("/", HTML, INDEX_HTML),
    ("/status", HTML, STATUS_HTML),
    ("/assets/app.js", JAVASCRIPT, APP_JS),
    ("/assets/status.js", JAVASCRIPT, STATUS_JS),
    ("/assets/style.css", CSS, STYLE_CSS),
];

/// The search page and its assets, for the public router.
pub fn public_router() -> Router<AppState> {
    routes(PUBLIC_ASSETS)
}

/// The status page, its script and the stylesheet, with `/` redirecting
/// to `/status`, for the admin router.
pub fn admin_router() -> Router<AppState> {
    routes(ADMIN_ONLY_ASSETS)
        .merge(routes(&[("/assets/style.css", CSS, STYLE_CSS)]))
        .route(
            "/",
            get(|| async { axum::response::Redirect::to("/status") }),
        )
}

/// The status page and its script alone, for a router that already serves
/// the public pages.
pub fn admin_only_router() -> Router<AppState> {
    routes(ADMIN_ONLY_ASSETS)
}

/// The routes need no state; generic so that tests can serve them alone.
fn routes<S: Clone + Send + Sync + 'static>(assets: &'static [Asset]) -> Router<S> {
    assets
        .iter()
        .fold(Router::new(), |router, &(path, content_type, body)| {
            router.route(path, get(move || async move { asset(content_type, body) }))
        })
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
}

#[cfg(test)]
mod tests {
    use axum::body::{to_bytes, Body};
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    async fn get(path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        let response = routes::<()>(PUBLIC_ASSETS)
            .merge(routes(ADMIN_ONLY_ASSETS))
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn every_asset_is_served_with_its_type_and_no_cache() {
        for &(path, content_type, body) in ASSETS {
            let (status, headers, served) = get(path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(headers[header::CONTENT_TYPE], content_type, "{path}");
            assert_eq!(headers[header::CACHE_CONTROL], "no-cache", "{path}");
            assert!(headers.contains_key(header::CONTENT_SECURITY_POLICY));
            assert_eq!(served, body, "{path}");
            assert!(!served.trim().is_empty(), "{path} is empty");
        }
    }

    #[tokio::test]
    async fn unknown_paths_are_not_pages() {
        let (status, _, _) = get("/assets/missing.js").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn nothing_is_loaded_from_elsewhere() {
        for &(path, _, body) in ASSETS {
            for needle in ["http://", "https://", "src=\"//", "href=\"//", "@import"] {
                assert!(!body.contains(needle), "{path} contains {needle:?}");
            }
        }
    }

    #[test]
    fn pages_reference_only_served_assets() {
        for page in [INDEX_HTML, STATUS_HTML] {
            for attribute in ["src=\"", "href=\""] {
                for (_, rest) in page.match_indices(attribute).map(|(i, _)| page.split_at(i)) {
                    let target = &rest[attribute.len()..];
                    let target = &target[..target.find('"').unwrap()];
                    if target.starts_with("data:") || target.starts_with('#') {
                        continue;
                    }
                    let path = target.split('?').next().unwrap();
                    assert!(
                        ASSETS.iter().any(|&(p, _, _)| p == path),
                        "{target} is not served"
                    );
                }
            }
        }
    }
}
