//! The control API (HTTP/JSON with axum): create, inspect, update and end calls, open and
//! close capture windows, stream a call's events as Server-Sent Events, health and metrics.
//!
//! Owns: request validation, bearer-token auth, port allocation and the call registry.
//! Must never: hold the registry lock across an await or touch media (calls run in their own
//! tasks and only receive control messages); echo a secret or a digit in a response.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::call::{
    bind_pair, Call, CallControl, CallSockets, CallSpec, CallStatus, Control, EventEmitter,
    IngestPacket, CALLER_CHANNEL,
};
use super::config::ServeConfig;
use super::events::{CallEvent, EventBody, EventEnvelope};
use super::metrics::Metrics;
use super::sinks::CallSinks;
use super::worker::MediaThreads;
use crate::capture::CaptureConfig;
use crate::codec::Codec;
use crate::dtmf::Digit;
use crate::rtp::{CallerLeg, LegConfig};

/// A registered call as the API sees it.
struct CallEntry {
    ctrl: CallControl,
    events: broadcast::Sender<EventEnvelope>,
}

/// Shared state of the API.
pub struct AppState {
    pub(super) cfg: ServeConfig,
    calls: Mutex<HashMap<Arc<str>, CallEntry>>,
    port_cursor: Mutex<u16>,
    next_id: std::sync::atomic::AtomicU64,
    /// Gateway-wide counters.
    pub metrics: Arc<Metrics>,
    closing: std::sync::atomic::AtomicBool,
    tasks: task_count::TaskCount,
    media: MediaThreads,
}

/// Counts running calls (from creation until their sinks are flushed) so shutdown can wait.
mod task_count {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tokio::sync::Notify;

    /// Running-task counter with a wake-up when it reaches zero.
    #[derive(Clone, Default)]
    pub struct TaskCount(Arc<(AtomicUsize, Notify)>);

    /// Decrements the count when dropped.
    pub struct Guard(TaskCount);

    impl TaskCount {
        /// One more task.
        pub fn enter(&self) -> Guard {
            self.0 .0.fetch_add(1, Ordering::SeqCst);
            Guard(self.clone())
        }
        /// Wait until no task runs.
        pub async fn idle(&self) {
            loop {
                let n = self.0 .1.notified();
                if self.0 .0.load(Ordering::SeqCst) == 0 {
                    return;
                }
                n.await;
            }
        }
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            if self.0 .0 .0.fetch_sub(1, Ordering::SeqCst) == 1 {
                self.0 .0 .1.notify_waiters();
            }
        }
    }
}

impl AppState {
    /// State for a server with `cfg`.
    pub fn new(cfg: ServeConfig) -> std::io::Result<Arc<Self>> {
        let metrics = Arc::new(Metrics::default());
        let media = MediaThreads::start(
            cfg.server.media_threads,
            Duration::from_micros(cfg.server.media_tick_us),
            cfg.server.media_priority,
        )?;
        Ok(Arc::new(Self {
            media,
            port_cursor: Mutex::new(cfg.server.rtp_port_min),
            cfg,
            calls: Mutex::new(HashMap::new()),
            next_id: Default::default(),
            metrics,
            closing: Default::default(),
            tasks: Default::default(),
        }))
    }

    /// End every call (reason `shutdown`) and wait until their sinks are flushed.
    pub async fn shutdown(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let ctrls: Vec<_> = self
            .calls
            .lock()
            .map(|c| c.values().map(|e| e.ctrl.clone()).collect())
            .unwrap_or_default();
        for c in ctrls {
            let _ = c.send(Control::Shutdown).await;
        }
        self.tasks.idle().await;
    }

    fn active(&self) -> usize {
        self.calls.lock().map(|c| c.len()).unwrap_or(0)
    }

    fn entry(&self, id: &str) -> Option<(CallControl, broadcast::Sender<EventEnvelope>)> {
        let calls = self.calls.lock().ok()?;
        calls.get(id).map(|e| (e.ctrl.clone(), e.events.clone()))
    }
}

/// An API error: status code and a one-line message as `{"error": "..."}`.
pub struct ApiError(pub(super) StatusCode, pub(super) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

pub(super) fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn not_found() -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "no such call".into())
}

/// The router with every route, auth applied where a token is configured.
pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/v1/calls", post(create_call).get(list_calls))
        .route(
            "/v1/calls/{id}",
            get(get_call).patch(update_call).delete(end_call),
        )
        .route(
            "/v1/calls/{id}/capture",
            post(open_capture).delete(close_capture),
        )
        .route("/v1/calls/{id}/events", get(call_events))
        .route("/metrics", get(metrics));
    #[cfg(feature = "whip")]
    let api = {
        use super::whip;
        api.route("/v1/whip", post(whip::publish).options(whip::preflight))
            .route(
                "/v1/whip/{id}",
                axum::routing::delete(whip::unpublish).options(whip::preflight),
            )
    };
    let api = api.route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(api)
        .with_state(state)
}

/// Bearer-token check (constant time) when a token is configured.
async fn auth(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let token = &st.cfg.server.token;
    // A CORS preflight never carries credentials; it is answered without touching a call.
    if token.is_empty() || req.method() == axum::http::Method::OPTIONS {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), token.as_bytes()) {
        next.run(req).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(serde_json::json!({ "error": "missing or wrong bearer token" })),
        )
            .into_response()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `POST /v1/calls` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateCall {
    /// Call id (letters, digits, `-`, `_`, `.`; up to 64); generated when absent.
    pub call_id: Option<String>,
    /// Where masked RTP goes (RTCP to the next port, or to the same one with
    /// `downstream_rtcp_mux`).
    pub downstream: SocketAddr,
    /// The caller's RTP address, if known; otherwise the first packet's source is latched.
    pub caller: Option<SocketAddr>,
    /// The caller multiplexes RTCP on its RTP port (RFC 5761, SDP `a=rtcp-mux`). Learned
    /// anyway from the caller's first RTCP on the RTP port; saying so lets the gateway's own
    /// reports go there before.
    #[serde(default)]
    pub rtcp_mux: bool,
    /// The same for downstream.
    #[serde(default)]
    pub downstream_rtcp_mux: bool,
    /// `pcmu` (default), `pcma`, `l16` or `opus`.
    pub codec: Option<String>,
    /// Payload type of the audio codec (default 0 for PCMU, 8 for PCMA, 96 for L16, 111 for
    /// Opus).
    pub payload_type: Option<u8>,
    /// Clock rate (8000 for G.711; L16 8000 to 48000; Opus 48000).
    pub rate: Option<u32>,
    /// Codec towards downstream: the caller's (default), or `pcmu`/`pcma` for an Opus caller
    /// (transcoded to 8 kHz G.711 after masking).
    pub downstream_codec: Option<String>,
    /// Payload type towards downstream (default: the codec's usual one).
    pub downstream_payload_type: Option<u8>,
    /// Bit rate of the downstream Opus encoder, bit/s (6000 to 510000, default 32000).
    pub opus_bitrate: Option<u32>,
    /// Opus to Opus: forward the caller's packets unchanged where nothing was masked
    /// (default true); `false` re-encodes every packet at `opus_bitrate`.
    pub opus_passthrough: Option<bool>,
    /// Payload type of RFC 4733 telephone-events (default 101).
    pub telephone_event_pt: Option<u8>,
    /// Look-ahead, 0 to 40 ms (default from the config).
    pub lookahead_ms: Option<u32>,
    /// Capture-window behaviour (default from the config).
    pub capture: Option<CaptureConfig>,
    /// End the call after this long without caller media, ms.
    pub media_timeout_ms: Option<u64>,
    /// Per-call sink overrides.
    pub sinks: Option<SinkOverrides>,
}

/// Sinks a create request may change. The secure digit sink is server configuration only:
/// an API client cannot redirect card digits.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkOverrides {
    /// Record this call (default: when the server has a recording directory).
    pub recording: Option<bool>,
    /// Speech-to-text WebSocket URL for this call.
    pub stt_url: Option<String>,
    /// Webhook URL for this call's events.
    pub webhook_url: Option<String>,
    /// HMAC secret for that webhook.
    pub webhook_secret: Option<String>,
}

/// `POST /v1/calls` answer.
#[derive(Debug, Serialize)]
pub struct Created {
    /// The call id.
    pub call_id: Arc<str>,
    /// Send the caller's RTP here.
    pub caller_rtp: SocketAddr,
    /// The caller's RTCP goes here.
    pub caller_rtcp: SocketAddr,
    /// Masked RTP leaves from here (and the downstream leg's RTP comes back here).
    pub downstream_rtp: SocketAddr,
    /// Downstream RTCP.
    pub downstream_rtcp: SocketAddr,
    /// Delay added before downstream hears the audio, ms (look-ahead, resampler and, for
    /// Opus, the encoder's look-ahead).
    pub delay_ms: f64,
    /// The call's event stream.
    pub events_url: String,
}

/// A codec name and its usual payload type.
fn parse_codec(name: &str) -> Result<(Codec, u8), ApiError> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "pcmu" => (Codec::Pcmu, 0),
        "pcma" => (Codec::Pcma, 8),
        "l16" => (Codec::Pcm16, 96),
        "opus" if cfg!(feature = "opus") => (Codec::Opus, 111),
        _ => {
            return Err(bad(format!(
                "codec {name:?} is not supported (pcmu, pcma, l16, opus)"
            )))
        }
    })
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

async fn create_call(
    State(st): State<Arc<AppState>>,
    Json(req): Json<CreateCall>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let created = start_call(&st, req, None)?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// The caller media of a call that does not come from its caller socket: packets from an
/// in-process transport (WHIP) and the channel their buffers go back on.
pub(super) type Ingest = (
    mpsc::Receiver<Box<IngestPacket>>,
    mpsc::Sender<Box<IngestPacket>>,
);

/// Validate `req`, bind the call's sockets, start its sinks and its task. Shared by
/// `POST /v1/calls` and WHIP ingest, so both get the same pipeline, sinks and events.
pub(super) fn start_call(
    st: &Arc<AppState>,
    req: CreateCall,
    ingest: Option<Ingest>,
) -> Result<Created, ApiError> {
    let cfg = &st.cfg;
    let id: Arc<str> = match req.call_id {
        Some(id) if valid_id(&id) => id.into(),
        Some(_) => return Err(bad("call_id: 1 to 64 of A-Z a-z 0-9 - _ .")),
        None => {
            let n = st.next_id.fetch_add(1, Ordering::Relaxed);
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0);
            format!("c{t:x}-{n}").into()
        }
    };
    check_downstream(req.downstream, cfg.server.rtp_address)?;
    let (codec, default_pt) = parse_codec(req.codec.as_deref().unwrap_or("pcmu"))?;
    let rate = req
        .rate
        .unwrap_or(if codec == Codec::Opus { 48_000 } else { 8000 });
    if codec == Codec::Opus && rate != 48_000 {
        return Err(bad("Opus runs at 48000 Hz (RFC 7587)"));
    }
    let (downstream_codec, downstream_pt) = match req.downstream_codec.as_deref() {
        None => (None, req.downstream_payload_type),
        Some(c) => {
            let (c, pt) = parse_codec(c)?;
            (Some(c), Some(req.downstream_payload_type.unwrap_or(pt)))
        }
    };
    if let Some(c) = downstream_codec {
        if c != codec && !(codec == Codec::Opus && c.is_g711()) {
            return Err(bad(
                "downstream_codec may differ from codec only for an Opus caller (pcmu or pcma)",
            ));
        }
    }
    let opus_bitrate = req.opus_bitrate.unwrap_or(32_000);
    if !(6_000..=510_000).contains(&opus_bitrate) {
        return Err(bad("opus_bitrate must be 6000 to 510000"));
    }
    if codec.is_g711() && rate != 8000 {
        return Err(bad("G.711 runs at 8000 Hz"));
    }
    if !(8000..=48000).contains(&rate) {
        return Err(bad("rate must be 8000 to 48000"));
    }
    let audio_pt = req.payload_type.unwrap_or(default_pt);
    let te_pt = req.telephone_event_pt.unwrap_or(101);
    if audio_pt > 127 || te_pt > 127 || audio_pt == te_pt {
        return Err(bad("payload types must be 0 to 127 and differ"));
    }
    let mut pipeline = cfg.media.pipeline;
    if let Some(la) = req.lookahead_ms {
        if la > crate::pipeline::MAX_LOOKAHEAD_MS {
            return Err(bad("lookahead_ms must be 0 to 40"));
        }
        pipeline.lookahead_ms = la;
    }
    if let Some(c) = req.capture {
        pipeline.capture = c;
    }
    pipeline.codec = codec;
    pipeline.rate = rate;
    let leg_cfg = LegConfig {
        audio_pt,
        codec,
        rate,
        downstream_codec,
        downstream_pt,
        opus_bitrate,
        opus_passthrough: req.opus_passthrough.unwrap_or(true),
        telephone_event_pt: Some(te_pt),
        fill_ms: 20,
        reorder_window: cfg.media.reorder_window,
        reorder_wait_ms: cfg.media.reorder_wait_ms,
        max_fill_ms: cfg.media.max_fill_ms,
        ssrc_out: ssrc_for(&id),
        pipeline,
    };
    let mut sinks = cfg.sinks.clone();
    if let Some(o) = req.sinks {
        if o.recording == Some(false) {
            sinks.recording_dir = None;
        }
        if let Some(u) = o.stt_url {
            sinks.stt_url = Some(u);
        }
        if let Some(u) = o.webhook_url {
            if o.webhook_secret.is_none() && sinks.webhook_secret.is_none() {
                return Err(bad("webhook_url needs webhook_secret"));
            }
            sinks.webhook_url = Some(u);
        }
        if let Some(s) = o.webhook_secret {
            sinks.webhook_secret = Some(s);
        }
    }
    let media_timeout = Duration::from_millis(
        req.media_timeout_ms
            .unwrap_or(cfg.server.media_timeout_ms)
            .max(100),
    );

    if st.closing.load(Ordering::SeqCst) {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down".into(),
        ));
    }
    if st.active() >= cfg.server.max_calls {
        st.metrics.calls_refused.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "call limit reached".into(),
        ));
    }
    if st.calls.lock().map(|c| c.contains_key(&id)).unwrap_or(true) {
        return Err(ApiError(StatusCode::CONFLICT, "call_id exists".into()));
    }
    let leg = CallerLeg::new(leg_cfg, CALLER_CHANNEL).map_err(|e| bad(e.to_string()))?;
    let delay_ms = leg.downstream_delay() as f64 * 1000.0 / rate as f64;
    let socks = {
        let mut cur = st
            .port_cursor
            .lock()
            .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "lock".into()))?;
        let s = &cfg.server;
        let caller = bind_pair(s.rtp_address, s.rtp_port_min, s.rtp_port_max, &mut cur);
        let down = bind_pair(s.rtp_address, s.rtp_port_min, s.rtp_port_max, &mut cur);
        match (caller, down) {
            (Ok((caller_rtp, caller_rtcp)), Ok((down_rtp, down_rtcp))) => CallSockets {
                caller_rtp,
                caller_rtcp,
                down_rtp,
                down_rtcp,
            },
            (Err(e), _) | (_, Err(e)) => {
                st.metrics.calls_refused.fetch_add(1, Ordering::Relaxed);
                return Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()));
            }
        }
    };
    let local = |s: &mio::net::UdpSocket| s.local_addr().map_err(|e| bad(e.to_string()));
    let created = Created {
        call_id: id.clone(),
        caller_rtp: local(&socks.caller_rtp)?,
        caller_rtcp: local(&socks.caller_rtcp)?,
        downstream_rtp: local(&socks.down_rtp)?,
        downstream_rtcp: local(&socks.down_rtcp)?,
        delay_ms,
        events_url: format!("/v1/calls/{id}/events"),
    };
    let call_sinks = CallSinks::start(id.clone(), &sinks, st.metrics.sinks.clone())
        .map_err(|e| bad(e.to_string()))?;
    let (ctrl_tx, ctrl_rx) = mpsc::channel(16);
    // Events are sparse (a few per key press); a subscriber that falls 128 behind is told
    // so (counted in tonewall_events_lagged_total) rather than every call reserving more.
    let (ev_tx, _) = broadcast::channel(128);
    let mut emitter = EventEmitter::new(id.clone(), ev_tx.clone());
    emitter.emit_call(
        CallEvent::CallStarted {
            caller_port: created.caller_rtp.port(),
            downstream_port: created.downstream_rtp.port(),
        },
        &call_sinks,
    );
    let spec = CallSpec {
        id: id.clone(),
        leg: leg_cfg,
        downstream: req.downstream,
        caller: req.caller,
        caller_rtcp_mux: req.rtcp_mux,
        downstream_rtcp_mux: req.downstream_rtcp_mux,
        media_timeout,
        rtcp_interval: (cfg.server.rtcp_report_interval_ms > 0)
            .then(|| Duration::from_millis(cfg.server.rtcp_report_interval_ms)),
        sinks,
    };
    let mut call = Call::new(
        spec,
        socks,
        leg,
        call_sinks,
        emitter,
        st.metrics.clone(),
        ctrl_rx,
    );
    if let Some((packets, spent)) = ingest {
        call = call.with_ingest(packets, spent);
    }
    let call = Box::new(call);
    let (thread, nudge) = st.media.pick();
    if let Ok(mut calls) = st.calls.lock() {
        calls.insert(
            id.clone(),
            CallEntry {
                ctrl: CallControl::new(ctrl_tx, nudge),
                events: ev_tx,
            },
        );
    }
    st.metrics.calls_created.fetch_add(1, Ordering::Relaxed);
    let ended = match st.media.run(thread, call) {
        Ok(rx) => rx,
        Err(_) => {
            if let Ok(mut calls) = st.calls.lock() {
                calls.remove(&id);
            }
            st.metrics.calls_refused.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "media threads busy".into(),
            ));
        }
    };
    let guard = st.tasks.enter();
    let st2 = st.clone();
    let call_id = id.clone();
    tokio::spawn(async move {
        // The media thread hands the call back when it ends; flushing its sinks awaits, so
        // it happens here on the runtime.
        match ended.await {
            Ok(Some((call, ending))) => {
                let status = call.finish(ending).await;
                tracing::info!(call_id = %status.call_id, reason = ?status.ended, "call ended");
            }
            _ => {
                st2.metrics.calls_ended.fetch_add(1, Ordering::Relaxed);
                tracing::error!(call_id = %call_id, "call ended without a flush (media fault)");
            }
        }
        if let Ok(mut calls) = st2.calls.lock() {
            calls.remove(&call_id);
        }
        drop(guard);
    });
    tracing::info!(call_id = %id, caller_rtp = %created.caller_rtp, "call created");
    Ok(created)
}

/// A stable SSRC per call id (FNV-1a), so restarts of a call keep it.
fn ssrc_for(id: &str) -> u32 {
    id.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ b as u32).wrapping_mul(0x0100_0193)
    })
}

async fn list_calls(State(st): State<Arc<AppState>>) -> Json<Vec<Arc<str>>> {
    let ids = st
        .calls
        .lock()
        .map(|c| c.keys().cloned().collect())
        .unwrap_or_default();
    Json(ids)
}

pub(super) async fn ask<T>(
    st: &AppState,
    id: &str,
    make: impl FnOnce(oneshot::Sender<T>) -> Control,
) -> Result<T, ApiError> {
    let (ctrl, _) = st.entry(id).ok_or_else(not_found)?;
    let (tx, rx) = oneshot::channel();
    ctrl.send(make(tx)).await.map_err(|_| not_found())?;
    rx.await.map_err(|_| not_found())
}

async fn get_call(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<CallStatus>, ApiError> {
    ask(&st, &id, Control::Status).await.map(Json)
}

/// `PATCH /v1/calls/{id}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateCall {
    /// New downstream address (after a re-INVITE).
    pub downstream: Option<SocketAddr>,
}

async fn update_call(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    Json(req): Json<UpdateCall>,
) -> Result<Json<CallStatus>, ApiError> {
    let (ctrl, _) = st.entry(&id).ok_or_else(not_found)?;
    if let Some(a) = req.downstream {
        check_downstream(a, st.cfg.server.rtp_address)?;
        ctrl.send(Control::SetDownstream(a))
            .await
            .map_err(|_| not_found())?;
    }
    ask(&st, &id, Control::Status).await.map(Json)
}

/// A downstream address the call's sockets can send to: a port, a host (not 0.0.0.0 or
/// `::`, which the kernel would quietly turn into this machine), not a broadcast, and the
/// address family of the gateway's media sockets (`rtp_address`).
fn check_downstream(a: SocketAddr, media: std::net::IpAddr) -> Result<(), ApiError> {
    if a.port() == 0 {
        return Err(bad("downstream: port 0"));
    }
    if a.ip().is_unspecified() {
        return Err(bad(
            "downstream: an unspecified address (0.0.0.0 or ::) is no host",
        ));
    }
    if let std::net::IpAddr::V4(v4) = a.ip() {
        if v4.is_broadcast() {
            return Err(bad("downstream: a broadcast address"));
        }
    }
    if a.is_ipv4() != media.is_ipv4() {
        return Err(bad(format!(
            "downstream: {} address, but media sockets are bound to {media} (server.rtp_address)",
            if a.is_ipv4() { "an IPv4" } else { "an IPv6" }
        )));
    }
    Ok(())
}

async fn end_call(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<CallStatus>, ApiError> {
    ask(&st, &id, Control::End).await.map(Json)
}

/// `POST /v1/calls/{id}/capture` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenCapture {
    /// Close after this many digits.
    pub max_digits: Option<u32>,
    /// Close on this key (`"#"`); `""` for none; absent for the configured default.
    pub terminator: Option<String>,
}

async fn open_capture(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Option<Json<OpenCapture>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let req = body.map(|b| b.0).unwrap_or_default();
    let terminator = match req.terminator.as_deref() {
        None => None,
        Some("") => Some(None),
        Some(k) => {
            let mut ch = k.chars();
            match (ch.next().and_then(Digit::from_char), ch.next()) {
                (Some(d), None) => Some(Some(d)),
                _ => return Err(bad("terminator must be one DTMF key or empty")),
            }
        }
    };
    let open = ask(&st, &id, |reply| Control::OpenCapture {
        max_digits: req.max_digits,
        terminator,
        reply,
    })
    .await?;
    Ok(Json(serde_json::json!({ "capture_open": open })))
}

async fn close_capture(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let open = ask(&st, &id, |reply| Control::CloseCapture { reply }).await?;
    Ok(Json(serde_json::json!({ "capture_open": open })))
}

async fn call_events(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let (_, events) = st.entry(&id).ok_or_else(not_found)?;
    let rx = events.subscribe();
    drop(events);
    let metrics = st.metrics.clone();
    let stream = futures_util::stream::unfold(rx, move |mut rx| {
        let metrics = metrics.clone();
        async move {
            loop {
                match rx.recv().await {
                    Ok(env) => {
                        let name = event_name(&env.body);
                        let ev = SseEvent::default().event(name).json_data(&env);
                        return Some((ev, rx));
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        metrics.events_lagged.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The `"event"` tag of an envelope's body.
fn event_name(body: &EventBody) -> String {
    serde_json::to_value(body)
        .ok()
        .and_then(|v| v.get("event").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "event".into())
}

async fn metrics(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(st.active()),
    )
}
