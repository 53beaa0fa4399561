//! Sinks of one call: the recorder, the speech-to-text fork, webhooks and the secure digit
//! sink. Each runs as its own tokio task behind a bounded queue; the media path only ever
//! calls the non-blocking methods of [`CallSinks`], so a slow or failing sink can drop its
//! own data (counted in [`SinkStats`]) but never stall or reorder media.
//!
//! Owns: queueing, delivery, retry and signing for everything that leaves a call besides RTP.
//! Must never: block or await in the methods the media task calls; log, format or store a
//! digit value anywhere except the secure sink's own delivery; let unmasked audio in (it
//! only receives audio that already passed the masker).
//!
//! # The four sinks
//!
//! | sink | queue | task | on trouble |
//! |---|---|---|---|
//! | recorder ([`recorder`]) | 500 frames + 64 pause/resume | writes `<call_id>.wav` and, on close, `<call_id>.json` | queue full: frame dropped (`recorder_dropped`), the gap is silence in the file |
//! | STT fork ([`stt`]) | 500 caller frames | 16 kHz mono s16le over a WebSocket | not connected or queue full: frame dropped (`stt_dropped`); reconnects with backoff |
//! | webhooks ([`deliver`]) | 1000 events | signed POST per event, in order, with retries | `webhook_errors` |
//! | secure digit sink ([`deliver`]) | 1000 digits | signed POST or Unix-socket line per digit | `secure_errors`; no target: discarded |
//!
//! Media-path methods ([`CallSinks::audio`], [`CallSinks::event`],
//! [`CallSinks::secure_digit`]) only `try_send` into the queues: they never await, block or
//! log, and the only thing they allocate is what a tokio channel block needs now and then
//! (frames travel by value, events hold an `Arc`).
//!
//! # Signatures
//!
//! Webhooks and secure deliveries carry `Tonewall-Signature: t=<unix seconds>,v1=<hex>`,
//! where the hex is HMAC-SHA256(secret, `"<t>.<body>"`), the same shape as Stripe's
//! `Stripe-Signature`. [`sign`] and [`verify`] compute and check it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::dtmf::Digit;
use crate::event::Event;
use crate::serve::events::{EventBody, EventEnvelope};
use crate::Redacted;

pub mod deliver;
pub mod recorder;
pub mod stt;

pub use deliver::{sign, verify, SIGNATURE_HEADER};

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
    /// Frames the recorder's queue had no room for (their span is silence in the file).
    pub recorder_dropped: AtomicU64,
    /// Write errors of the recorder (file, sidecar), and pause/resume events it had no room
    /// for (it then stops recording: fail closed).
    pub recorder_errors: AtomicU64,
    /// Downstream samples the recorder could not place (arrived after their position was
    /// written, or too far ahead of the caller), or skipped because their rate differs.
    pub recorder_misaligned: AtomicU64,
    /// Samples of a paused span that were already in the file when the pause arrived (the
    /// pause came later than the recorder's hold-back; see [`recorder`]). Should stay 0.
    pub recorder_late_pause_samples: AtomicU64,
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
    /// How long [`CallSinks::close`] lets the queues drain before it cancels what is left
    /// (default 5000 ms). Undelivered events and digits are then counted as errors.
    pub close_timeout_ms: Option<u64>,
}

/// Default of [`SinkSettings::close_timeout_ms`].
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// After the close timeout and the cancel signal, how long tasks get to count what they
/// drop and return before they are aborted.
const CANCEL_GRACE: Duration = Duration::from_secs(1);
/// Recorder queue: 500 frames is 10 s of 20 ms frames.
pub const AUDIO_QUEUE: usize = 500;
/// Recorder pause/resume queue. Windows open and close a few times per call at most.
const CONTROL_QUEUE: usize = 64;
/// Webhook and secure-digit queues.
pub const EVENT_QUEUE: usize = 1000;

/// A digit value on its way to the secure digit sink. `Debug` shows `[redacted]` for the
/// value (through [`Redacted`]); there is no `Serialize`: only the secure sink builds its body.
#[derive(Clone)]
pub struct SecureDelivery {
    /// The call.
    pub call_id: Arc<str>,
    /// Channel it was entered on.
    pub channel: u32,
    /// Capture window, if one was open.
    pub window: Option<u32>,
    /// Running index on the channel (matches the `digit` event's `index`).
    pub index: u64,
    /// The key.
    pub digit: Redacted<Digit>,
    /// Estimated start of the tone, media ms.
    pub at_ms: f64,
}

impl std::fmt::Debug for SecureDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureDelivery")
            .field("call_id", &self.call_id)
            .field("channel", &self.channel)
            .field("window", &self.window)
            .field("index", &self.index)
            .field("digit", &self.digit)
            .finish()
    }
}

/// Why the sinks of a call could not start. Messages name the setting, never a secret, a
/// URL (it may carry a token) or a digit.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// [`CallSinks::start`] was called outside a tokio runtime.
    #[error("sinks must be started inside a tokio runtime")]
    NoRuntime,
    /// The call id cannot name a file (the recorder uses it as the file name).
    #[error(
        "call id {0:?} cannot name a recording: use 1-128 of A-Z a-z 0-9 . _ - and no leading dot"
    )]
    BadCallId(String),
    /// The recording directory or file could not be created.
    #[error("recording {path}: {source}")]
    Recording {
        /// The directory or file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A sink that signs was configured without its secret.
    #[error("{0} is set but its secret is missing")]
    MissingSecret(&'static str),
    /// A URL setting has the wrong scheme or does not parse.
    #[error("{what} must be a {schemes} URL")]
    BadUrl {
        /// The setting.
        what: &'static str,
        /// The schemes it accepts.
        schemes: &'static str,
    },
    /// The HTTP client could not be built (TLS setup).
    #[error("HTTP client: {0}")]
    Http(String),
    /// Unix-socket targets need a Unix platform.
    #[error("secure_target unix sockets are not supported on this platform")]
    NoUnixSockets,
}

/// A cancel signal the tasks watch: set by [`CallSinks::close`] once the drain time is up,
/// or seen as set when the [`CallSinks`] was dropped without `close`.
#[derive(Clone)]
pub(crate) struct Cancel(watch::Receiver<bool>);

impl Cancel {
    /// Resolves once cancelled (or once the owner is gone).
    pub(crate) async fn cancelled(&mut self) {
        let _ = self.0.wait_for(|c| *c).await;
    }
}

/// Exponential backoff: `base` doubling up to `max`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            next: base,
        }
    }
    /// The delay before the next attempt; doubles the one after.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }
    pub(crate) fn reset(&mut self) {
        self.next = self.base;
    }
}

/// Lets a warning through at most once per `every`, counting the ones it held back, so a
/// sink that fails on every item cannot flood the log.
#[derive(Debug)]
pub(crate) struct LogLimit {
    every: Duration,
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl LogLimit {
    pub(crate) fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            suppressed: 0,
        }
    }
    /// `Some(suppressed since the last line)` if a line may be logged now.
    pub(crate) fn allow(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// The media path's handle to the recorder.
struct RecorderQueues {
    frames: mpsc::Sender<AudioFrame>,
    control: mpsc::Sender<recorder::Control>,
    /// Set when a pause/resume could not be queued: the recorder then stops writing.
    control_lost: Arc<AtomicBool>,
}

/// The sinks of one call. Built by [`CallSinks::start`], fed by the media task through
/// non-blocking methods, ended by [`CallSinks::close`]. Dropping it without `close` ends the
/// tasks too (the recorder still finalizes its file; webhooks and the secure sink drop what
/// is queued).
pub struct CallSinks {
    stats: Arc<SinkStats>,
    recorder: Option<RecorderQueues>,
    stt: Option<mpsc::Sender<AudioFrame>>,
    webhooks: Option<mpsc::Sender<EventEnvelope>>,
    secure: Option<mpsc::Sender<SecureDelivery>>,
    tasks: JoinSet<()>,
    cancel: watch::Sender<bool>,
    close_timeout: Duration,
}

impl std::fmt::Debug for CallSinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallSinks")
            .field("recorder", &self.recorder.is_some())
            .field("stt", &self.stt.is_some())
            .field("webhooks", &self.webhooks.is_some())
            .field("secure", &self.secure.is_some())
            .finish()
    }
}

impl CallSinks {
    /// Spawn the tasks the settings enable. Must be called inside a tokio runtime; returns
    /// an error (never panics) for a missing runtime, a bad call id, a recording directory or
    /// file that cannot be created, a URL with the wrong scheme, or a signing sink without
    /// its secret. Nothing is spawned when it fails.
    pub fn start(
        call_id: Arc<str>,
        settings: &SinkSettings,
        stats: Arc<SinkStats>,
    ) -> Result<CallSinks, SinkError> {
        tokio::runtime::Handle::try_current().map_err(|_| SinkError::NoRuntime)?;

        // Validate and prepare everything first, so a failure leaves no task behind; the
        // recording file last, so a bad URL does not leave an empty file that would block a
        // retry under the same call id.
        if let Some(url) = &settings.stt_url {
            if !(url.starts_with("ws://") || url.starts_with("wss://")) {
                return Err(SinkError::BadUrl {
                    what: "stt_url",
                    schemes: "ws:// or wss://",
                });
            }
            deliver::ensure_tls_provider();
        }
        let webhook = match &settings.webhook_url {
            Some(url) => {
                let secret = settings
                    .webhook_secret
                    .as_deref()
                    .filter(|s| !s.is_empty())
                    .ok_or(SinkError::MissingSecret("webhook_url"))?;
                Some(deliver::Endpoint::http("webhook_url", url, secret)?)
            }
            None => None,
        };
        let secure = match &settings.secure_target {
            Some(target) => {
                let secret = settings
                    .secure_secret
                    .as_deref()
                    .filter(|s| !s.is_empty())
                    .ok_or(SinkError::MissingSecret("secure_target"))?;
                Some(match target {
                    Target::Url(url) => deliver::Endpoint::http("secure_target", url, secret)?,
                    Target::Unix(path) => deliver::Endpoint::unix(path, secret)?,
                })
            }
            None => None,
        };

        let recording = match &settings.recording_dir {
            Some(dir) => Some(recorder::Files::create(dir, &call_id)?),
            None => None,
        };

        let (cancel, cancel_rx) = watch::channel(false);
        let cancel_rx = Cancel(cancel_rx);
        let mut tasks = JoinSet::new();
        let mut sinks = CallSinks {
            stats: stats.clone(),
            recorder: None,
            stt: None,
            webhooks: None,
            secure: None,
            tasks: JoinSet::new(),
            cancel,
            close_timeout: settings
                .close_timeout_ms
                .map(Duration::from_millis)
                .unwrap_or(CLOSE_TIMEOUT),
        };
        if let Some(files) = recording {
            let (ftx, frx) = mpsc::channel(AUDIO_QUEUE);
            let (ctx, crx) = mpsc::channel(CONTROL_QUEUE);
            let lost = Arc::new(AtomicBool::new(false));
            let task = recorder::Recorder::new(call_id.clone(), files, stats.clone(), lost.clone());
            tasks.spawn(task.run(frx, crx));
            sinks.recorder = Some(RecorderQueues {
                frames: ftx,
                control: ctx,
                control_lost: lost,
            });
        }
        if let Some(url) = &settings.stt_url {
            let (tx, rx) = mpsc::channel(AUDIO_QUEUE);
            tasks.spawn(stt::run(
                url.clone(),
                call_id.clone(),
                rx,
                stats.clone(),
                cancel_rx.clone(),
            ));
            sinks.stt = Some(tx);
        }
        if let Some(ep) = webhook {
            let (tx, rx) = mpsc::channel(EVENT_QUEUE);
            tasks.spawn(deliver::run_webhooks(
                ep,
                call_id.clone(),
                rx,
                stats.clone(),
                cancel_rx.clone(),
            ));
            sinks.webhooks = Some(tx);
        }
        if let Some(ep) = secure {
            let (tx, rx) = mpsc::channel(EVENT_QUEUE);
            tasks.spawn(deliver::run_secure(
                ep,
                call_id.clone(),
                rx,
                stats.clone(),
                cancel_rx,
            ));
            sinks.secure = Some(tx);
        }
        sinks.tasks = tasks;
        Ok(sinks)
    }

    /// Whether any sink takes audio from `side` (so the media task can skip building frames
    /// nobody reads).
    pub fn wants_audio(&self, side: Side) -> bool {
        self.recorder.is_some() || (side == Side::Caller && self.stt.is_some())
    }

    /// Hand a frame to the recorder and (caller side only) to the STT fork. Never blocks:
    /// a full queue drops the frame and counts it, as does a malformed frame (`len` over
    /// [`MAX_FRAME`] or rate 0).
    pub fn audio(&self, frame: &AudioFrame) {
        if frame.len as usize > MAX_FRAME || frame.rate == 0 {
            // A malformed frame would make a sink task panic on `samples()`; drop it here.
            if self.recorder.is_some() {
                SinkStats::bump(&self.stats.recorder_dropped);
            }
            if self.stt.is_some() && frame.side == Side::Caller {
                SinkStats::bump(&self.stats.stt_dropped);
            }
            return;
        }
        if let Some(r) = &self.recorder {
            if r.frames.try_send(*frame).is_err() {
                SinkStats::bump(&self.stats.recorder_dropped);
            }
        }
        if frame.side == Side::Caller {
            if let Some(tx) = &self.stt {
                if tx.try_send(*frame).is_err() {
                    SinkStats::bump(&self.stats.stt_dropped);
                }
            }
        }
    }

    /// Hand an event to the webhooks and, for recording pause/resume, to the recorder.
    /// Never blocks: a full webhook queue drops the event and counts it in `webhook_errors`;
    /// a full recorder control queue makes the recorder stop recording (fail closed).
    pub fn event(&self, ev: &EventEnvelope) {
        if let Some(r) = &self.recorder {
            let ctl = match ev.body {
                EventBody::Core(Event::RecordingPause { at_sample, .. }) => {
                    Some(recorder::Control::Pause(at_sample))
                }
                EventBody::Core(Event::RecordingResume { at_sample, .. }) => {
                    Some(recorder::Control::Resume(at_sample))
                }
                _ => None,
            };
            if let Some(c) = ctl {
                if r.control.try_send(c).is_err() {
                    // A lost pause could let a capture window into the file; a lost resume
                    // is only lost audio. Either way, stop recording rather than guess.
                    r.control_lost.store(true, Ordering::Release);
                    SinkStats::bump(&self.stats.recorder_errors);
                }
            }
        }
        if let Some(tx) = &self.webhooks {
            if tx.try_send(ev.clone()).is_err() {
                SinkStats::bump(&self.stats.webhook_errors);
            }
        }
    }

    /// Hand a digit value to the secure sink. Never blocks. Without a secure target the
    /// value is discarded (the safe default, not an error); a full queue counts in
    /// `secure_errors`.
    pub fn secure_digit(&self, d: SecureDelivery) {
        if let Some(tx) = &self.secure {
            if tx.try_send(d).is_err() {
                SinkStats::bump(&self.stats.secure_errors);
            }
        }
    }

    /// End the call's sinks: close the queues, let every task drain what is queued (the
    /// recorder writes the rest of the WAV and its sidecar, STT sends the tail and a close
    /// frame), and after the close timeout (default 5 s) cancel what is still going; tasks
    /// count what they drop as errors and are aborted one second later if still running.
    pub async fn close(mut self) {
        // Dropping the senders is the "no more input" signal: each task's recv() returns
        // None once its queue is empty.
        self.recorder = None;
        self.stt = None;
        self.webhooks = None;
        self.secure = None;
        let mut tasks = std::mem::take(&mut self.tasks);
        if join_all(&mut tasks, self.close_timeout).await {
            return;
        }
        let _ = self.cancel.send(true);
        if !join_all(&mut tasks, CANCEL_GRACE).await {
            tracing::warn!(
                tasks = tasks.len(),
                "sink tasks did not stop in time; aborted"
            );
            tasks.shutdown().await;
        }
    }
}

impl Drop for CallSinks {
    fn drop(&mut self) {
        // Without close(): let the tasks wind down on their own (the recorder finalizes its
        // file; the network sinks see the cancel signal go away and stop) instead of the
        // JoinSet aborting them mid-write.
        self.tasks.detach_all();
    }
}

/// Wait for every task, up to `limit`; true if all ended.
async fn join_all(tasks: &mut JoinSet<()>, limit: Duration) -> bool {
    let all = async {
        while let Some(r) = tasks.join_next().await {
            if let Err(e) = r {
                if e.is_panic() {
                    tracing::error!("a sink task panicked");
                }
            }
        }
    };
    tokio::time::timeout(limit, all).await.is_ok()
}
