//! Configuration of `tonewall serve`: a TOML file (see `tonewall.example.toml`) with safe
//! defaults for everything, so the gateway starts with no file at all.
//!
//! Owns: parsing and validating the server settings, and the per-call defaults the control
//! API starts from.
//! Must never: accept a setting that exposes the API beyond loopback without a token, or
//! print secrets (the token and HMAC secrets are skipped when the config is shown).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::sinks::SinkSettings;
use crate::pipeline::PipelineConfig;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// HTTP control API and RTP sockets.
    pub server: ServerConfig,
    /// Defaults for each call's media handling (look-ahead, thresholds, capture windows).
    pub media: MediaDefaults,
    /// Default sinks of each call.
    pub sinks: SinkSettings,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            media: MediaDefaults::default(),
            sinks: SinkSettings {
                recording_dir: Some(PathBuf::from("./recordings")),
                ..SinkSettings::default()
            },
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the control API.
    pub listen: SocketAddr,
    /// Bearer token the API requires; empty means none (allowed on loopback only).
    pub token: String,
    /// Address the RTP/RTCP sockets bind to.
    pub rtp_address: IpAddr,
    /// First port of the RTP range (RTP on even ports, RTCP on the next odd one).
    pub rtp_port_min: u16,
    /// Last port of the RTP range.
    pub rtp_port_max: u16,
    /// A call with no packet from the caller for this long is ended (`media_timeout`).
    pub media_timeout_ms: u64,
    /// Most calls at once; more are refused with 503.
    pub max_calls: usize,
    /// Worker threads of the runtime (API, sinks, WebRTC; 0: one per core).
    pub workers: usize,
    /// Media threads that relay and mask every call's packets (0: one per core).
    pub media_threads: usize,
    /// How often a media thread takes what arrived, µs. Packets wait at most this long in
    /// the kernel (half of it on average), and a busy gateway wakes once per tick instead of
    /// once per packet.
    pub media_tick_us: u64,
    /// Run the media threads under `SCHED_FIFO` at this priority (1 to 99; 0: ordinary
    /// scheduling). Needs root or `CAP_SYS_NICE`; refused with a warning otherwise.
    pub media_priority: u8,
    /// RTCP of the gateway's own where a side sends none, about this often on average, ms
    /// (RFC 3550's 5 s minimum by default; each interval is randomised to 0.5 to 1.5 times
    /// it): sender reports downstream for callers that send no RTCP (WebRTC publishers, RTP
    /// endpoints with RTCP off), receiver reports to callers whose downstream sends none.
    /// 0 sends none. A side's own RTCP is rewritten and relayed instead.
    pub rtcp_report_interval_ms: u64,
    /// `Access-Control-Allow-Origin` for the WHIP endpoint, so a web page on that origin can
    /// publish (`*` for any); empty sends no CORS headers.
    pub cors_allow_origin: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("literal address"),
            token: String::new(),
            rtp_address: "127.0.0.1".parse().expect("literal address"),
            rtp_port_min: 30_000,
            rtp_port_max: 39_999,
            media_timeout_ms: 30_000,
            max_calls: 10_000,
            workers: 0,
            media_threads: 0,
            media_tick_us: 250,
            media_priority: 0,
            rtcp_report_interval_ms: 5_000,
            cors_allow_origin: String::new(),
        }
    }
}

/// `[media]`: what a call gets unless its create request says otherwise.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaDefaults {
    /// Look-ahead, thresholds and capture-window behaviour (the same JSON/TOML shape as
    /// `tonewall mask --config`).
    pub pipeline: PipelineConfig,
    /// Packets held while waiting for a missing one.
    pub reorder_window: u16,
    /// Longest wait for a missing packet before it counts as lost, ms.
    pub reorder_wait_ms: u32,
    /// Gaps up to this long are filled with silence; longer ones are a resync, ms.
    pub max_fill_ms: u32,
}

impl Default for MediaDefaults {
    fn default() -> Self {
        Self {
            pipeline: PipelineConfig::default(),
            reorder_window: 4,
            reorder_wait_ms: 30,
            max_fill_ms: 500,
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax or an unknown key.
    #[error("config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (it names the key, never prints secrets).
        message: String,
    },
    /// A setting is out of range or unsafe.
    #[error("config: {0}")]
    Invalid(String),
}

impl ServeConfig {
    /// Read and validate a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let cfg: ServeConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.message().to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Check the settings that would make the gateway unsafe or unusable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        if !s.listen.ip().is_loopback() && s.token.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "refusing to listen on non-loopback {} without server.token",
                s.listen
            )));
        }
        if s.rtp_port_min == 0 || s.rtp_port_min >= s.rtp_port_max {
            return Err(ConfigError::Invalid(
                "server.rtp_port_min must be above 0 and below rtp_port_max".into(),
            ));
        }
        if s.media_timeout_ms < 100 {
            return Err(ConfigError::Invalid(
                "server.media_timeout_ms must be at least 100".into(),
            ));
        }
        if !(50..=5_000).contains(&s.media_tick_us) {
            return Err(ConfigError::Invalid(format!(
                "server.media_tick_us must be 50 to 5000, got {}",
                s.media_tick_us
            )));
        }
        if s.rtcp_report_interval_ms != 0 && !(500..=60_000).contains(&s.rtcp_report_interval_ms) {
            return Err(ConfigError::Invalid(format!(
                "server.rtcp_report_interval_ms must be 0 (off) or 500 to 60000, got {}",
                s.rtcp_report_interval_ms
            )));
        }
        if s.media_priority > 99 {
            return Err(ConfigError::Invalid(
                "server.media_priority must be 0 to 99".into(),
            ));
        }
        let la = self.media.pipeline.lookahead_ms;
        if la > crate::pipeline::MAX_LOOKAHEAD_MS {
            return Err(ConfigError::Invalid(format!(
                "media.pipeline.lookahead_ms must be 0 to {}, got {la}",
                crate::pipeline::MAX_LOOKAHEAD_MS
            )));
        }
        if self.sinks.webhook_url.is_some() && self.sinks.webhook_secret.is_none() {
            return Err(ConfigError::Invalid(
                "sinks.webhook_url needs sinks.webhook_secret (events are signed)".into(),
            ));
        }
        if self.sinks.secure_target.is_some() && self.sinks.secure_secret.is_none() {
            return Err(ConfigError::Invalid(
                "sinks.secure_target needs sinks.secure_secret (digits are signed)".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ServeConfig, String> {
        let c: ServeConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn media_thread_settings_default_sensibly_and_are_range_checked() {
        let d = parse("").unwrap().server;
        assert_eq!(
            (d.media_threads, d.media_tick_us, d.media_priority),
            (0, 250, 0)
        );
        let c = parse("[server]\nmedia_threads = 2\nmedia_tick_us = 100\nmedia_priority = 10\n")
            .unwrap()
            .server;
        assert_eq!(
            (c.media_threads, c.media_tick_us, c.media_priority),
            (2, 100, 10)
        );
        for bad in [
            "media_tick_us = 10",
            "media_tick_us = 6000",
            "media_priority = 100",
        ] {
            let e = parse(&format!("[server]\n{bad}\n")).unwrap_err();
            assert!(e.contains("server.media_"), "{bad}: {e}");
        }
    }

    #[test]
    fn own_rtcp_interval_defaults_to_five_seconds_and_is_range_checked() {
        assert_eq!(parse("").unwrap().server.rtcp_report_interval_ms, 5_000);
        for ok in [0, 500, 60_000] {
            let c = parse(&format!("[server]\nrtcp_report_interval_ms = {ok}\n")).unwrap();
            assert_eq!(c.server.rtcp_report_interval_ms, ok);
        }
        for bad in [1, 499, 60_001] {
            let e = parse(&format!("[server]\nrtcp_report_interval_ms = {bad}\n")).unwrap_err();
            assert!(e.contains("rtcp_report_interval_ms"), "{bad}: {e}");
        }
    }
}
