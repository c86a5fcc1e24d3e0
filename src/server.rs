//! Running the server: the listeners of the configured TLS mode, serving until a shutdown
//! signal, draining within a deadline, and stopping background work.
//!
//! - `tls.mode = off`: plain HTTP on `listen`.
//! - `files` / `acme`: HTTPS on `listen` (HTTP/2 and HTTP/1.1, HSTS), and a plain-HTTP
//!   listener (`tls.http_listen`) that answers HTTP-01 challenges and redirects everything
//!   else to HTTPS.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::routing::any;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::TlsMode;
use crate::state::AppState;
use crate::tls;

/// How often gathered pull times are written to the database.
const PULL_FLUSH_EVERY: Duration = Duration::from_secs(30);

/// Bound sockets, so that start-up reports "cannot listen" before anything else happens.
pub struct Listeners {
    pub main: std::net::TcpListener,
    pub http: Option<std::net::TcpListener>,
}

impl Listeners {
    pub fn bind(main: SocketAddr, http: Option<SocketAddr>) -> anyhow::Result<Listeners> {
        let bind = |a: SocketAddr| -> anyhow::Result<std::net::TcpListener> {
            let l =
                std::net::TcpListener::bind(a).with_context(|| format!("cannot listen on {a}"))?;
            l.set_nonblocking(true)?;
            Ok(l)
        };
        Ok(Listeners {
            main: bind(main)?,
            http: http.map(bind).transpose()?,
        })
    }
}

/// Serve until `shutdown` completes, then give in-flight requests the grace period.
pub async fn run(
    state: AppState,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    tls::install_default_provider();
    let (stop_tx, stop_rx) = watch::channel(false);
    let grace = Duration::from_secs(state.config.shutdown_grace_secs);
    let handle = axum_server::Handle::new();
    let mut tasks: Vec<JoinHandle<std::io::Result<()>>> = Vec::new();
    let flusher = tokio::spawn(flush_pulls(state.clone(), stop_rx.clone()));

    let mode = state.config.tls.mode;
    let mut app = crate::router(state.clone());
    if mode != TlsMode::Off && state.config.tls.hsts {
        app = app.layer(axum::middleware::from_fn(crate::http::hsts));
    }
    let https_port = listeners.main.local_addr()?.port();
    let mut http01 = None;
    match mode {
        TlsMode::Off => {
            let listener = tokio::net::TcpListener::from_std(listeners.main)?;
            tasks.push(tokio::spawn(plain(listener, app, stop_rx.clone())));
        }
        TlsMode::Files => {
            let t = &state.config.tls;
            let (cert, key) = (
                t.cert_file.clone().unwrap_or_default(),
                t.key_file.clone().unwrap_or_default(),
            );
            let (c, k) = (cert.clone(), key.clone());
            let config = tokio::task::spawn_blocking(move || {
                tls::FileCertificate::load(&c, &k)?.rustls_config()
            })
            .await?
            .map_err(|e| anyhow::anyhow!(e))?;
            let config = axum_server::tls_rustls::RustlsConfig::from_config(config);
            tokio::spawn(tls::watch_files(config.clone(), cert, key, stop_rx.clone()));
            let server =
                axum_server::from_tcp_rustls(listeners.main, config)?.handle(handle.clone());
            tasks.push(tokio::spawn(
                server.serve(app.into_make_service_with_connect_info::<SocketAddr>()),
            ));
        }
        TlsMode::Acme => {
            let acme = tls::acme::start(&state.config.tls, &state.config.data_dir, stop_rx.clone())
                .map_err(|e| anyhow::anyhow!(e))?;
            http01 = acme.http01;
            let server = axum_server::from_tcp(listeners.main)?
                .acceptor(acme.acceptor)
                .handle(handle.clone());
            tasks.push(tokio::spawn(
                server.serve(app.into_make_service_with_connect_info::<SocketAddr>()),
            ));
        }
    }
    if let Some(http) = listeners.http {
        let mut redirect = Router::new();
        if let Some(svc) = http01 {
            redirect = redirect.route_service("/.well-known/acme-challenge/{token}", svc);
        }
        let redirect = redirect
            .fallback(any(crate::http::redirect_to_https))
            .with_state(https_port);
        let listener = tokio::net::TcpListener::from_std(http)?;
        tasks.push(tokio::spawn(plain(listener, redirect, stop_rx.clone())));
    }

    // Run until the signal, or until a listener fails.
    let mut failed = None;
    let watch_tasks = futures_util::future::select_all(tasks.iter_mut());
    tokio::select! {
        _ = shutdown => tracing::info!("shutting down: finishing requests in flight"),
        (result, _, _) = watch_tasks => {
            failed = Some(match result {
                Ok(Ok(())) => anyhow::anyhow!("a listener stopped unexpectedly"),
                Ok(Err(e)) => anyhow::Error::from(e).context("a listener failed"),
                Err(e) => anyhow::Error::from(e).context("a listener task failed"),
            });
        }
    }
    let _ = stop_tx.send(true);
    handle.graceful_shutdown(Some(grace));
    let drained = tokio::time::timeout(
        grace + Duration::from_secs(1),
        futures_util::future::join_all(tasks),
    )
    .await;
    if drained.is_err() {
        tracing::warn!(
            secs = grace.as_secs(),
            "requests still running after the grace period; stopping anyway"
        );
    }
    let _ = flusher.await;
    if let Err(e) = state.registry.flush_pulls().await {
        tracing::warn!(error = %e, "could not record pull times at shutdown");
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// axum's own server for plain HTTP, with the peer address available to handlers.
async fn plain(
    listener: tokio::net::TcpListener,
    app: Router,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = stop.wait_for(|s| *s).await;
    })
    .await
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
