//! `tonewall serve`: builds the tokio runtime, loads the config and runs the gateway until
//! SIGINT/SIGTERM.
//!
//! Owns: the command-line overrides of the config and the "listening on" line scripts wait
//! for.
//! Must never: print the token or secrets; start on a non-loopback address without a token.

use std::net::SocketAddr;
use std::path::PathBuf;

use tonewall::serve::{self, ServeConfig};

use super::CliError;

/// Arguments of `tonewall serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// TOML config (see tonewall.example.toml); defaults are used without it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Control API address (overrides server.listen); port 0 picks a free one.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Recordings directory (overrides sinks.recording_dir).
    #[arg(long)]
    recording_dir: Option<PathBuf>,
    /// Do not record calls.
    #[arg(long)]
    no_recording: bool,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, default_value = "info")]
    log_level: tracing::Level,
}

/// Run the gateway.
pub fn serve(args: ServeArgs) -> Result<(), CliError> {
    let mut cfg = match &args.config {
        Some(p) => ServeConfig::load(p).map_err(|e| CliError(e.to_string()))?,
        None => ServeConfig::default(),
    };
    if let Some(l) = args.listen {
        cfg.server.listen = l;
    }
    if let Ok(t) = std::env::var("TONEWALL_TOKEN") {
        if !t.is_empty() {
            cfg.server.token = t;
        }
    }
    if let Some(d) = args.recording_dir {
        cfg.sinks.recording_dir = Some(d);
    }
    if args.no_recording {
        cfg.sinks.recording_dir = None;
    }
    cfg.validate().map_err(|e| CliError(e.to_string()))?;
    tracing_subscriber::fmt()
        .with_max_level(args.log_level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if cfg.server.workers > 0 {
        rt.worker_threads(cfg.server.workers);
    }
    let rt = rt
        .enable_all()
        .build()
        .map_err(|e| CliError(format!("cannot start runtime: {e}")))?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(cfg.server.listen)
            .await
            .map_err(|e| CliError(format!("cannot listen on {}: {e}", cfg.server.listen)))?;
        let addr = listener.local_addr().map_err(|e| CliError(e.to_string()))?;
        // Scripts and tests wait for this line (stdout, flushed) to learn the port.
        println!("tonewall listening on http://{addr}");
        tracing::info!(%addr, auth = !cfg.server.token.is_empty(), "control API up");
        serve::run(cfg, listener, serve::signal())
            .await
            .map_err(|e| CliError(format!("server error: {e}")))
    })
}

/// Arguments of `tonewall loadgen`.
#[derive(clap::Args, Debug)]
pub struct LoadgenArgs {
    /// Control API of the gateway under test.
    #[arg(long, default_value = "127.0.0.1:8080")]
    api: SocketAddr,
    /// Concurrent calls.
    #[arg(long, default_value_t = 100)]
    calls: usize,
    /// Measured seconds (after the ramp).
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Seconds over which the calls start.
    #[arg(long, default_value_t = 5)]
    ramp_seconds: u64,
    /// Look-ahead of each call, ms.
    #[arg(long, default_value_t = 20)]
    lookahead_ms: u32,
    /// SCHED_FIFO priority of the sender thread (0: ordinary scheduling); use it when the
    /// gateway's media threads run at real-time priority on the same machine.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=99))]
    realtime_priority: u8,
}

/// Run the load generator and print its report as JSON.
pub fn loadgen(args: LoadgenArgs) -> Result<(), CliError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError(format!("cannot start runtime: {e}")))?;
    let opts = tonewall::serve::loadgen::LoadOptions {
        api: args.api,
        token: std::env::var("TONEWALL_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
        calls: args.calls,
        seconds: args.seconds,
        ramp_seconds: args.ramp_seconds,
        lookahead_ms: args.lookahead_ms,
        realtime_priority: args.realtime_priority,
    };
    let report = rt
        .block_on(tonewall::serve::loadgen::run(opts))
        .map_err(CliError)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&report).map_err(|e| CliError(e.to_string()))?
    );
    Ok(())
}
