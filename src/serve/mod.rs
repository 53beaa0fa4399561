//! The live gateway: tokio shells that own sockets, timers, HTTP and sinks and drive the
//! sans-IO core. Built only with the `serve` feature.
//!
//! Owns: everything with IO in it.
//! Must never: decide anything about tones itself (the core does), or let audio reach a sink
//! or the downstream leg without passing the masker.

pub mod api;
pub mod call;
pub mod config;
pub mod events;
pub mod loadgen;
pub mod metrics;
#[cfg(feature = "opus")]
pub mod return_leg;
pub mod sinks;
pub mod sys;
#[cfg(feature = "whip")]
pub mod whip;
pub mod worker;

pub use api::AppState;
pub use config::ServeConfig;
use std::future::Future;

/// Serve the control API on `listener` until `shutdown` resolves, then end every call
/// (reason `shutdown`) and wait for their sinks to flush.
pub async fn run(
    cfg: ServeConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = AppState::new(cfg)?;
    let app = api::router(state.clone());
    // Calls end first: that closes their event streams, which lets open SSE connections
    // finish so the HTTP server can stop.
    let graceful = async move {
        shutdown.await;
        state.shutdown().await;
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(graceful)
        .await
}

/// Resolves on SIGINT or SIGTERM.
pub async fn signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
