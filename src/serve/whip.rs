//! WHIP ingest (RFC 9725): a browser or WebRTC client publishes the caller's microphone with
//! `POST /v1/whip` (an SDP offer) and the published Opus track becomes the caller leg of an
//! ordinary call, so it gets the same masking, capture windows, sinks, events and metrics as
//! an RTP call.
//!
//! Owns: one webrtc-rs peer connection per session (ICE, DTLS-SRTP, RTCP), the offer/answer
//! exchange, CORS for browser publishers, and the bridge task that hands each received RTP
//! packet to the session's call (on its media thread) through a bounded channel of reused buffers.
//! Must never: give audio to a sink or to downstream itself (only the call's leg does, after
//! masking), block on a slow call (a full channel drops the packet and counts it), or
//! log SDP bodies (they carry ICE passwords and DTLS fingerprints).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rtc::interceptor::Registry;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_OPUS, MIME_TYPE_TELEPHONE_EVENT,
};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use rtc::shared::marshal::Marshal;
use serde::Deserialize;
use tokio::sync::{mpsc, watch, Notify};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceGatheringState, RTCPeerConnectionState, SettingEngineBuilder,
};
use webrtc::runtime::TokioRuntime;

use super::api::{ask, bad, start_call, ApiError, AppState, CreateCall, SinkOverrides};
use super::call::{Control, IngestPacket};

/// Packets in flight between the bridge and the call (about 1.3 s of 20 ms packets):
/// enough to ride out a scheduling hiccup, small enough that a stuck call drops rather
/// than buffers.
const INGEST_QUEUE: usize = 64;
/// How long the answer waits for ICE gathering (host candidates only: no STUN/TURN here).
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);
/// A session whose published track does not show up in this long is ended.
const TRACK_TIMEOUT: Duration = Duration::from_secs(20);

/// Query parameters of `POST /v1/whip`: the same call settings as `POST /v1/calls`, flat,
/// because a WHIP client sends only the SDP offer as its body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhipQuery {
    /// Call id (as for `POST /v1/calls`); generated when absent.
    pub call_id: Option<String>,
    /// Where masked RTP goes.
    pub downstream: SocketAddr,
    /// Downstream multiplexes RTCP on its RTP port (RFC 5761).
    pub downstream_rtcp_mux: Option<bool>,
    /// `opus` (default: the caller's codec), or `pcmu`/`pcma` to transcode after masking.
    pub downstream_codec: Option<String>,
    /// Payload type towards downstream.
    pub downstream_payload_type: Option<u8>,
    /// Bit rate of the downstream Opus encoder, bit/s.
    pub opus_bitrate: Option<u32>,
    /// Forward the published packets unchanged where nothing was masked (default true).
    pub opus_passthrough: Option<bool>,
    /// Look-ahead, 0 to 40 ms.
    pub lookahead_ms: Option<u32>,
    /// End the session after this long without media, ms.
    pub media_timeout_ms: Option<u64>,
    /// Record this call (default: when the server has a recording directory).
    pub recording: Option<bool>,
    /// Speech-to-text WebSocket URL for this call.
    pub stt_url: Option<String>,
}

/// Payload types the offer gives Opus and 48 kHz telephone-events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfferCodecs {
    /// `opus/48000/2`.
    pub opus: u8,
    /// `telephone-event/48000`, when offered (browsers' RTCDTMFSender uses it).
    pub telephone_event: Option<u8>,
}

/// Find the audio payload types of `sdp` (the first audio section's `a=rtpmap` lines).
pub fn offer_codecs(sdp: &str) -> Option<OfferCodecs> {
    let mut in_audio = false;
    let mut opus = None;
    let mut te = None;
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            if opus.is_some() {
                break;
            }
            in_audio = m.starts_with("audio ");
            continue;
        }
        let Some(map) = line.strip_prefix("a=rtpmap:").filter(|_| in_audio) else {
            continue;
        };
        let Some((pt, enc)) = map.split_once(' ') else {
            continue;
        };
        let Ok(pt) = pt.parse::<u8>() else { continue };
        if pt > 127 {
            continue;
        }
        let enc = enc.to_ascii_lowercase();
        if enc.starts_with("opus/48000") && opus.is_none() {
            opus = Some(pt);
        } else if enc.starts_with("telephone-event/48000") && te.is_none() {
            te = Some(pt);
        }
    }
    Some(OfferCodecs {
        opus: opus?,
        telephone_event: te,
    })
}

/// Peer-connection callbacks, forwarded to the session's bridge task.
struct Handler {
    gathered: Arc<Notify>,
    state: watch::Sender<RTCPeerConnectionState>,
    tracks: mpsc::Sender<Arc<dyn TrackRemote>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.notify_one();
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        tracing::debug!(?state, "whip peer connection state");
        let _ = self.state.send(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        if track.kind().await == RtpCodecKind::Audio {
            let _ = self.tracks.try_send(track);
        }
    }
}

/// A response with the configured CORS headers added (browser publishers read `Location`).
fn with_cors(st: &AppState, mut resp: Response) -> Response {
    let origin = &st.cfg.server.cors_allow_origin;
    if origin.is_empty() {
        return resp;
    }
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, Accept-Post"),
    );
    resp
}

fn refuse(st: &AppState, e: ApiError) -> Response {
    st.metrics.whip_refused.fetch_add(1, Ordering::Relaxed);
    with_cors(st, e.into_response())
}

/// `OPTIONS /v1/whip` and `/v1/whip/{id}`: CORS preflight and what the endpoint accepts.
pub(super) async fn preflight(State(st): State<Arc<AppState>>) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    h.insert("accept-post", HeaderValue::from_static("application/sdp"));
    if !st.cfg.server.cors_allow_origin.is_empty() {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST, DELETE, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Authorization, Content-Type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    with_cors(&st, resp)
}

/// `POST /v1/whip?downstream=...`: answer the offer and start the call.
pub(super) async fn publish(
    State(st): State<Arc<AppState>>,
    Query(q): Query<WhipQuery>,
    headers: HeaderMap,
    offer: String,
) -> Response {
    let is_sdp = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("application/sdp"));
    if !is_sdp {
        return refuse(
            &st,
            ApiError(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "a WHIP offer is Content-Type: application/sdp".into(),
            ),
        );
    }
    let Some(codecs) = offer_codecs(&offer) else {
        return refuse(&st, bad("the offer has no opus/48000 audio"));
    };
    match answer(&st, q, codecs, offer).await {
        Ok((call_id, sdp)) => {
            st.metrics.whip_sessions.fetch_add(1, Ordering::Relaxed);
            let location = format!("/v1/whip/{call_id}");
            let resp = (
                StatusCode::CREATED,
                [
                    (header::CONTENT_TYPE, "application/sdp".to_string()),
                    (header::LOCATION, location),
                ],
                sdp,
            )
                .into_response();
            with_cors(&st, resp)
        }
        Err(e) => refuse(&st, e),
    }
}

/// `DELETE /v1/whip/{id}`: end the session (the call ends with reason `api` and its sinks
/// are flushed before the answer).
pub(super) async fn unpublish(State(st): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let resp = match ask(&st, &id, Control::End).await {
        Ok(_) => StatusCode::OK.into_response(),
        Err(e) => e.into_response(),
    };
    with_cors(&st, resp)
}

/// A media engine that accepts exactly what we mask: Opus, and telephone-events (consumed).
fn media_engine(codecs: OfferCodecs) -> Result<MediaEngine, ApiError> {
    let mut me = MediaEngine::default();
    let opus = RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: codecs.opus,
    };
    me.register_codec(opus, RtpCodecKind::Audio)
        .map_err(|e| bad(format!("opus: {e}")))?;
    if let Some(pt) = codecs.telephone_event {
        let te = RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_TELEPHONE_EVENT.to_owned(),
                clock_rate: 48_000,
                channels: 0,
                sdp_fmtp_line: "0-16".to_owned(),
                rtcp_feedback: vec![],
            },
            payload_type: pt,
        };
        me.register_codec(te, RtpCodecKind::Audio)
            .map_err(|e| bad(format!("telephone-event: {e}")))?;
    }
    Ok(me)
}

/// Negotiate, start the call and its bridge; the call id and the answer SDP.
async fn answer(
    st: &Arc<AppState>,
    q: WhipQuery,
    codecs: OfferCodecs,
    offer: String,
) -> Result<(Arc<str>, String), ApiError> {
    let internal = |what: &str, e: &dyn std::fmt::Display| {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{what}: {e}"))
    };
    let offer = RTCSessionDescription::offer(offer).map_err(|e| bad(format!("offer: {e}")))?;
    let mut me = media_engine(codecs)?;
    let registry = register_default_interceptors(Registry::new(), &mut me)
        .map_err(|e| internal("interceptors", &e))?;
    // No ICE servers: the gateway is reached at its own address (host candidates). mDNS off:
    // candidates carry the real address, which is what a media server announces.
    let settings = SettingEngineBuilder::default()
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .build();
    let gathered = Arc::new(Notify::new());
    let (state_tx, state_rx) = watch::channel(RTCPeerConnectionState::New);
    let (track_tx, track_rx) = mpsc::channel(4);
    let handler = Arc::new(Handler {
        gathered: gathered.clone(),
        state: state_tx,
        tracks: track_tx,
    });
    let bind = SocketAddr::new(st.cfg.server.rtp_address, 0);
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(me)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .with_handler(handler)
        .with_runtime(Arc::new(TokioRuntime))
        .with_udp_addrs(vec![bind])
        .build()
        .await
        .map_err(|e| internal("peer connection", &e))?;
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);
    let negotiated = async {
        pc.set_remote_description(offer)
            .await
            .map_err(|e| bad(format!("offer: {e}")))?;
        let ans = pc
            .create_answer(None)
            .await
            .map_err(|e| bad(format!("answer: {e}")))?;
        // Register for the gathering notice before it can fire.
        let done = gathered.notified();
        pc.set_local_description(ans)
            .await
            .map_err(|e| internal("answer", &e))?;
        // Non-trickle: the answer carries every candidate (RFC 9725 allows trickle, but a
        // complete answer works with every client).
        let _ = tokio::time::timeout(GATHER_TIMEOUT, done).await;
        pc.local_description()
            .await
            .map(|d| d.sdp)
            .ok_or_else(|| internal("answer", &"no local description"))
    };
    let sdp = match negotiated.await {
        Ok(sdp) => sdp,
        Err(e) => {
            let _ = pc.close().await;
            return Err(e);
        }
    };
    let (pkt_tx, pkt_rx) = mpsc::channel(INGEST_QUEUE);
    let (spent_tx, spent_rx) = mpsc::channel(INGEST_QUEUE);
    let req = CreateCall {
        call_id: q.call_id,
        downstream: q.downstream,
        caller: None,
        // The publisher's RTCP ends in the WebRTC stack; downstream's side is plain RTP.
        rtcp_mux: false,
        downstream_rtcp_mux: q.downstream_rtcp_mux.unwrap_or(false),
        codec: Some("opus".into()),
        payload_type: Some(codecs.opus),
        rate: Some(48_000),
        downstream_codec: q.downstream_codec,
        downstream_payload_type: q.downstream_payload_type,
        opus_bitrate: q.opus_bitrate,
        opus_passthrough: q.opus_passthrough,
        // An unused number when the offer has no 48 kHz telephone-event: nothing will carry it.
        telephone_event_pt: Some(codecs.telephone_event.unwrap_or(if codecs.opus == 101 {
            102
        } else {
            101
        })),
        lookahead_ms: q.lookahead_ms,
        capture: None,
        media_timeout_ms: q.media_timeout_ms,
        sinks: Some(SinkOverrides {
            recording: q.recording,
            stt_url: q.stt_url,
            webhook_url: None,
            webhook_secret: None,
        }),
    };
    let created = match start_call(st, req, Some((pkt_rx, spent_tx))) {
        Ok(c) => c,
        Err(e) => {
            let _ = pc.close().await;
            return Err(e);
        }
    };
    let metrics = st.metrics.clone();
    let id = created.call_id.clone();
    tokio::spawn(bridge(
        pc, track_rx, state_rx, pkt_tx, spent_rx, metrics, id,
    ));
    Ok((created.call_id, sdp))
}

/// Hand the published track's packets to the call until the peer connection ends or the
/// call does, then close the peer connection. Dropping `pkt_tx` tells the call the peer
/// went away.
async fn bridge(
    pc: Arc<dyn PeerConnection>,
    mut tracks: mpsc::Receiver<Arc<dyn TrackRemote>>,
    mut state: watch::Receiver<RTCPeerConnectionState>,
    pkt_tx: mpsc::Sender<Box<IngestPacket>>,
    mut spent: mpsc::Receiver<Box<IngestPacket>>,
    metrics: Arc<super::metrics::Metrics>,
    call_id: Arc<str>,
) {
    let ended = |s: RTCPeerConnectionState| {
        matches!(
            s,
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
        )
    };
    let track = tokio::select! {
        t = tokio::time::timeout(TRACK_TIMEOUT, tracks.recv()) => t.ok().flatten(),
        _ = pkt_tx.closed() => None,
        _ = state.wait_for(|s| ended(*s)) => None,
    };
    if let Some(track) = track {
        tracing::info!(call_id = %call_id, "whip track published");
        loop {
            let ev = tokio::select! {
                ev = track.poll() => ev,
                _ = pkt_tx.closed() => break,
                _ = state.wait_for(|s| ended(*s)) => break,
            };
            let packet = match ev {
                Some(TrackRemoteEvent::OnRtpPacket(p)) => p,
                Some(TrackRemoteEvent::OnEnded) | None => break,
                Some(_) => continue,
            };
            let mut buf = spent.try_recv().unwrap_or_default();
            match packet.marshal_to(buf.buf_mut()) {
                Ok(n) => buf.set_len(n),
                Err(_) => {
                    metrics.malformed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
            if pkt_tx.try_send(buf).is_err() {
                if pkt_tx.is_closed() {
                    break;
                }
                metrics.whip_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    } else {
        tracing::warn!(call_id = %call_id, "whip session ended without a published audio track");
    }
    drop(pkt_tx);
    let _ = pc.close().await;
    tracing::info!(call_id = %call_id, "whip session closed");
}
