//! Running the server: bind, serve until a shutdown signal, drain within a deadline, and
//! stop background work.

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::state::AppState;

/// How often gathered pull times are written to the database.
const PULL_FLUSH_EVERY: Duration = Duration::from_secs(30);

/// Serve on `listener` until `shutdown` completes, then give in-flight requests the
/// configured grace period.
pub async fn run(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let flusher = tokio::spawn(flush_pulls(state.clone(), stop_rx.clone()));
    let grace = Duration::from_secs(state.config.shutdown_grace_secs);
    let app = crate::router(state.clone());

    let mut rx = stop_rx.clone();
    let make = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let serve = axum::serve(listener, make).with_graceful_shutdown(async move {
        let _ = rx.wait_for(|s| *s).await;
    });
    let serve = tokio::spawn(async move { serve.await });
    shutdown.await;
    tracing::info!("shutting down: finishing requests in flight");
    let _ = stop_tx.send(true);
    let result = match tokio::time::timeout(grace, serve).await {
        Ok(Ok(r)) => r,
        Ok(Err(join)) => Err(std::io::Error::other(join.to_string())),
        Err(_) => {
            tracing::warn!(
                secs = grace.as_secs(),
                "requests still running after the grace period; stopping anyway"
            );
            Ok(())
        }
    };
    let _ = flusher.await;
    if let Err(e) = state.registry.flush_pulls().await {
        tracing::warn!(error = %e, "could not record pull times at shutdown");
    }
    result
}

async fn flush_pulls(state: AppState, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PULL_FLUSH_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Err(e) = state.registry.flush_pulls().await {
            tracing::warn!(error = %e, "could not record pull times");
        }
    }
}

/// Completes on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
