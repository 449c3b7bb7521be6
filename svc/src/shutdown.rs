//! One shutdown path: SIGINT or SIGTERM cancels a token that every task of
//! the server watches. Draining under a time limit is the caller's job
//! (see [`drain`]).

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Resolves when the process receives SIGINT (Ctrl-C) or SIGTERM.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for sigterm");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("received sigint, shutting down"),
        () = term => tracing::info!("received sigterm, shutting down"),
    }
}

/// A token cancelled by the first SIGINT/SIGTERM.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let child = token.clone();
    tokio::spawn(async move {
        signal().await;
        child.cancel();
    });
    token
}

/// Awaits `work` for at most `limit`; logs and gives up when it takes longer.
pub async fn drain<F: Future>(what: &str, limit: Duration, work: F) {
    if tokio::time::timeout(limit, work).await.is_err() {
        tracing::warn!(what, limit = ?limit, "drain did not finish in time, stopping anyway");
    }
}
