//! Sinks of one call: the recorder, the speech-to-text fork, webhooks and the secure digit
//! sink. Each runs as its own tokio task behind a bounded queue; the media path only ever
//! calls the non-blocking methods of [`CallSinks`], so a slow or failing sink can drop its
//! own data (counted in [`SinkStats`]) but never stall or reorder media.
//!
//! Owns: queueing, delivery, retry and signing for everything that leaves a call besides RTP.
//! Must never: block or await in the methods the media task calls; log, format or store a
//! digit value anywhere except the secure sink's own delivery; let unmasked audio in (it
//! only receives audio that already passed the masker).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Which side of the call an audio frame comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The caller, after masking.
    Caller,
    /// The downstream leg (agent, IVR, bot) on its way back to the caller.
    Downstream,
}

/// Largest frame the media task hands over: 20 ms at 48 kHz.
pub const MAX_FRAME: usize = 960;

/// One frame of linear audio, by value, so handing it over never allocates.
#[derive(Clone, Copy)]
pub struct AudioFrame {
    /// Side of the call.
    pub side: Side,
    /// Sample rate of `samples`.
    pub rate: u32,
    /// Position of the first sample on that side's media timeline (samples since the call's
    /// first packet on that side; continuous, gaps already filled with silence).
    pub at_sample: u64,
    /// Number of valid samples in `samples`.
    pub len: u16,
    /// The samples; only `..len` are valid.
    pub samples: [i16; MAX_FRAME],
}

impl AudioFrame {
    /// The valid samples.
    pub fn samples(&self) -> &[i16] {
        &self.samples[..self.len as usize]
    }
}

/// Counters shared by every call's sinks (rendered on `/metrics`).
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Frames or events a sink's queue had no room for.
    pub recorder_dropped: AtomicU64,
    /// Write errors of the recorder.
    pub recorder_errors: AtomicU64,
    /// Frames the STT fork dropped (queue full or not connected).
    pub stt_dropped: AtomicU64,
    /// STT connection failures.
    pub stt_errors: AtomicU64,
    /// Webhook deliveries that failed for good (after retries) or were dropped.
    pub webhook_errors: AtomicU64,
    /// Webhook deliveries that succeeded.
    pub webhook_delivered: AtomicU64,
    /// Secure-sink deliveries that failed for good or were dropped.
    pub secure_errors: AtomicU64,
    /// Secure-sink deliveries that succeeded.
    pub secure_delivered: AtomicU64,
}

impl SinkStats {
    /// Add one to a counter.
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Where a signed delivery goes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// POST to an `http://` or `https://` URL.
    Url(String),
    /// Write to a Unix stream socket at this path.
    Unix(PathBuf),
}

/// Sink settings of one call (from the server config, overridable per call by the API).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinkSettings {
    /// Directory for `<call_id>.wav` and `<call_id>.json`; `None` disables the recorder.
    pub recording_dir: Option<PathBuf>,
    /// `ws://` or `wss://` URL for the speech-to-text fork; `None` disables it.
    pub stt_url: Option<String>,
    /// Webhook URL for events; `None` disables webhooks.
    pub webhook_url: Option<String>,
    /// HMAC-SHA256 secret for webhook signatures (required with `webhook_url`).
    #[serde(skip_serializing)]
    pub webhook_secret: Option<String>,
    /// The secure digit sink; `None` discards digit values.
    pub secure_target: Option<Target>,
    /// HMAC-SHA256 secret for the secure sink (required with `secure_target`).
    #[serde(skip_serializing)]
    pub secure_secret: Option<String>,
}
