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

use axum_server::accept::DefaultAcceptor;

use crate::config::TlsMode;
use crate::http::serve::{Connections, Limits, serve};
use crate::state::AppState;
use crate::tls;

/// How often gathered pull times are written to the database.
const PULL_FLUSH_EVERY: Duration = Duration::from_secs(30);

/// Bound sockets, so that start-up reports "cannot listen" before anything else happens.
pub struct Listeners {
    pub main: std::net::TcpListener,
    pub http: Option<std::net::TcpListener>,
    /// `/metrics`, `/healthz`, `/readyz` without credentials (`metrics.listen`).
    pub metrics: Option<std::net::TcpListener>,
}

impl Listeners {
    /// Bind the main and plain-HTTP listeners (a failure stops start-up) and the metrics
    /// listener (a failure is a warning: a second berth on the machine, say, still serves).
    pub fn bind(
        main: SocketAddr,
        http: Option<SocketAddr>,
        metrics: Option<SocketAddr>,
    ) -> anyhow::Result<Listeners> {
        let bind = |a: SocketAddr| -> anyhow::Result<std::net::TcpListener> {
            let l =
                std::net::TcpListener::bind(a).with_context(|| format!("cannot listen on {a}"))?;
            l.set_nonblocking(true)?;
            Ok(l)
        };
        let metrics = metrics.and_then(|a| match bind(a) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(
                    "{e:#}: /metrics is served only on the main listener, with the metrics token"
                );
                None
            }
        });
        Ok(Listeners {
            main: bind(main)?,
            http: http.map(bind).transpose()?,
            metrics,
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
    let conns = Connections::new(limits(&state.config.limits));
    let mut tasks: Vec<JoinHandle<std::io::Result<()>>> = Vec::new();
    let flusher = tokio::spawn(flush_pulls(state.clone(), stop_rx.clone()));
    let collector = state.config.gc.schedule().map(|(interval, window)| {
        let registry = state.registry.clone();
        tokio::spawn(crate::core::gc::schedule::run(
            registry,
            interval,
            window,
            stop_rx.clone(),
        ))
    });
    let data = state.config.data();
    match crate::control::listen(&data) {
        Ok(l) => {
            let registry = state.registry.clone();
            tokio::spawn(crate::control::serve(l, registry, stop_rx.clone()));
        }
        // Not fatal: `berth gc` then says it cannot reach the server.
        Err(e) => tracing::warn!(
            error = %e,
            path = %data.control_socket().display(),
            "cannot open the control socket"
        ),
    }
    tokio::spawn(crate::http::memory::trim_periodically(stop_rx.clone()));

    let mode = state.config.tls.mode;
    let mut app = crate::router(state.clone());
    if mode != TlsMode::Off && state.config.tls.hsts {
        app = app.layer(axum::middleware::from_fn(crate::http::hsts));
    }
    let https_port = listeners.main.local_addr()?.port();
    let main = tokio::net::TcpListener::from_std(listeners.main)?;
    let mut http01 = None;
    let stop = || stop_rx.clone();
    match mode {
        TlsMode::Off => {
            let s = serve(main, DefaultAcceptor, app, conns.clone(), false, stop());
            tasks.push(tokio::spawn(s));
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
            tokio::spawn(tls::watch_files(config.clone(), cert, key, stop()));
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(config);
            let s = serve(main, acceptor, app, conns.clone(), true, stop());
            tasks.push(tokio::spawn(s));
        }
        TlsMode::Acme => {
            let acme = tls::acme::start(&state.config.tls, &state.config.data(), stop())
                .map_err(|e| anyhow::anyhow!(e))?;
            http01 = acme.http01;
            let s = serve(main, acme.acceptor, app, conns.clone(), true, stop());
            tasks.push(tokio::spawn(s));
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
        let s = serve(
            listener,
            DefaultAcceptor,
            redirect,
            conns.clone(),
            false,
            stop(),
        );
        tasks.push(tokio::spawn(s));
    }

    if let Some(l) = listeners.metrics {
        let addr = l.local_addr()?;
        let listener = tokio::net::TcpListener::from_std(l)?;
        let app = crate::metrics_router(state.clone());
        let s = serve(listener, DefaultAcceptor, app, conns.clone(), false, stop());
        tasks.push(tokio::spawn(s));
        tracing::info!(%addr, "metrics listener");
    }
    // Every listener is serving: tell systemd (Type=notify), if it asked.
    notify_systemd("READY=1\nSTATUS=serving");

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
    notify_systemd("STOPPING=1");
    // Listeners stop accepting; each connection finishes its request in flight and closes.
    let _ = stop_tx.send(true);
    for t in tasks {
        t.abort();
    }
    if tokio::time::timeout(grace, conns.drained()).await.is_err() {
        tracing::warn!(
            secs = grace.as_secs(),
            open = conns.count(),
            "requests still running after the grace period; stopping anyway"
        );
    }
    let _ = flusher.await;
    // Runs started through the control socket stop at their next batch too.
    state.registry.stop_collecting();
    if let Some(c) = collector {
        // A run in progress ends at its next batch: small, but give it the grace at most.
        if tokio::time::timeout(grace, c).await.is_err() {
            tracing::warn!("garbage collection still running after the grace period");
        }
    }
    let _ = std::fs::remove_file(data.control_socket());
    if let Err(e) = state.registry.flush_pulls().await {
        tracing::warn!(error = %e, "could not record pull times at shutdown");
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Send a state to systemd's notify socket (`$NOTIFY_SOCKET`, set for `Type=notify`
/// services): a datagram to a path, or to an abstract socket when it starts with `@`.
/// Without the variable, nothing.
pub fn notify_systemd(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = (|| -> std::io::Result<()> {
        use std::os::unix::ffi::OsStrExt as _;
        let sock = std::os::unix::net::UnixDatagram::unbound()?;
        let bytes = path.as_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt as _;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        } else {
            sock.send_to(state.as_bytes(), std::path::Path::new(&path))?;
        }
        Ok(())
    })();
    if let Err(e) = sent {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// The listeners' limits from the configuration, the cap fitted to the file limit (raised to
/// its hard limit first).
fn limits(l: &crate::config::Limits) -> Limits {
    let files = crate::http::serve::raise_file_limit();
    let max_connections = crate::http::serve::fitting_cap(l.max_connections, files);
    if max_connections < l.max_connections {
        tracing::warn!(
            configured = l.max_connections,
            max_connections,
            file_limit = files,
            "the open-file limit allows fewer connections than configured"
        );
    }
    Limits {
        max_connections,
        header_timeout: Duration::from_secs(l.header_timeout_secs),
        idle_timeout: Duration::from_secs(l.idle_timeout_secs),
    }
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

/// How long after the grace period a process that has not stopped is ended anyway: more than
/// the last database writes can wait on a busy database (10 s).
const WATCHDOG_MARGIN: Duration = Duration::from_secs(15);

/// Watch for ctrl-c and SIGTERM on a thread of its own, outside the server's runtime, so that
/// they are seen even when every worker is busy. The receiver completes on the first signal;
/// if the process is still running `grace` plus a margin later (or on a second signal), it
/// is ended with exit code 1. Acknowledged writes are on disk already, so nothing is lost.
pub fn signal_watchdog(grace: Duration) -> anyhow::Result<tokio::sync::oneshot::Receiver<()>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal watcher")?;
    std::thread::Builder::new()
        .name("berth-signals".into())
        .spawn(move || {
            rt.block_on(async move {
                shutdown_signal().await;
                let _ = tx.send(());
                tokio::select! {
                    _ = tokio::time::sleep(grace + WATCHDOG_MARGIN) => {
                        eprintln!("berth: still running {}s after the signal; exiting now", (grace + WATCHDOG_MARGIN).as_secs());
                    }
                    _ = shutdown_signal() => {
                        eprintln!("berth: second signal; exiting now");
                    }
                }
                std::process::exit(1);
            })
        })
        .context("cannot start the signal watcher")?;
    Ok(rx)
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
