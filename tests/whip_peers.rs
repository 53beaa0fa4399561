//! WHIP ingest with a real WebRTC publisher on 127.0.0.1: a webrtc-rs peer connection in this
//! test (ICE, DTLS-SRTP, RTCP, the same stack a Rust voice bot would use) publishes the
//! bundled 48 kHz payment call as Opus to `tonewall serve`'s `POST /v1/whip`. Downstream is
//! PCMU (transcoded after masking). multimon-ng and our most sensitive detector then look for
//! digits downstream, in the recording and in the STT stream, while the secure digit sink
//! must hold exactly the typed digits. Also: bad offers are refused and counted.
//!
//! Built only with `--features whip`; the tools come from Debian (`.ci/run` installs them).
#![cfg(feature = "whip")]

mod common;
mod gateway;
#[path = "gateway/peers.rs"]
mod peers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::{Gateway, Receiver};
use peers::*;
use rtc::peer_connection::configuration::media_engine::{MediaEngine, MIME_TYPE_OPUS};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use tokio::sync::{watch, Notify};
use tonewall::codec::{FrameEncoder, OpusEncoder};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::MediaStreamTrack;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceGatheringState, RTCPeerConnectionState, SettingEngineBuilder,
};
use webrtc::runtime::TokioRuntime;

struct ClientHandler {
    gathered: Arc<Notify>,
    state: watch::Sender<RTCPeerConnectionState>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for ClientHandler {
    async fn on_ice_gathering_state_change(&self, s: RTCIceGatheringState) {
        if s == RTCIceGatheringState::Complete {
            self.gathered.notify_one();
        }
    }
    async fn on_connection_state_change(&self, s: RTCPeerConnectionState) {
        let _ = self.state.send(s);
    }
}

fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// A publisher: peer connection on 127.0.0.1 with one Opus track, and the offer it makes.
async fn publisher() -> (
    Arc<dyn PeerConnection>,
    Arc<TrackLocalStaticRTP>,
    watch::Receiver<RTCPeerConnectionState>,
    String,
) {
    let mut me = MediaEngine::default();
    me.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: opus_codec(),
            payload_type: 111,
        },
        RtpCodecKind::Audio,
    )
    .unwrap();
    let gathered = Arc::new(Notify::new());
    let (state_tx, state_rx) = watch::channel(RTCPeerConnectionState::New);
    let settings = SettingEngineBuilder::default()
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .build();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(me)
        .with_setting_engine(settings)
        .with_handler(Arc::new(ClientHandler {
            gathered: gathered.clone(),
            state: state_tx,
        }))
        .with_runtime(Arc::new(TokioRuntime))
        .with_udp_addrs(vec!["127.0.0.1:0"])
        .build()
        .await
        .unwrap();
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);
    let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "caller".to_owned(),
        "mic".to_owned(),
        "mic".to_owned(),
        RtpCodecKind::Audio,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(0x5eed_0001),
                ..Default::default()
            },
            codec: opus_codec(),
            ..Default::default()
        }],
    )));
    pc.add_track(track.clone() as Arc<dyn TrackLocal>)
        .await
        .unwrap();
    let offer = pc.create_offer(None).await.unwrap();
    let done = gathered.notified();
    pc.set_local_description(offer).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), done)
        .await
        .expect("ICE gathering completes");
    let sdp = pc.local_description().await.unwrap().sdp;
    (pc, track, state_rx, sdp)
}

/// 20 ms Opus packets of a 48 kHz mono recording at 24 kbit/s, as a softphone sends them.
fn opus_packets(pcm: &[i16]) -> Vec<Vec<u8>> {
    let mut enc = OpusEncoder::new(24_000).unwrap();
    let mut out = [0u8; 1500];
    pcm.chunks_exact(960)
        .map(|f| {
            let n = enc.encode(f, &mut out).unwrap();
            out[..n].to_vec()
        })
        .collect()
}

#[test]
fn rust_webrtc_publisher_through_whip_leaks_nothing() {
    assert!(
        gateway::have("multimon-ng"),
        "multimon-ng is not installed (.ci/run installs it)"
    );
    let root = env!("CARGO_MANIFEST_DIR");
    let fixture = "payment-call-48k-pcm16";
    let json = format!("{root}/sample-audio/{fixture}.json");
    let truth = ground_truth_digits(&json);
    let spans = ground_truth_spans(&json);
    let dir = gateway::scratch("whip-rust");
    let (hook, hooks) = webhook_server();
    let (stt, stt_bytes) = stt_server();
    let (sock, secure) = secure_socket(&dir);
    let gw = Gateway::start("whip-rust-gw", &sinks_toml(&dir, hook, stt, &sock));
    let (rate, ch, pcm) = gateway::read_wav(std::path::Path::new(&format!(
        "{root}/sample-audio/{fixture}.wav"
    )));
    assert_eq!((rate, ch), (48_000, 1));
    let packets = opus_packets(&pcm);
    let down = Receiver::start(Duration::from_secs(2), Duration::from_secs(90));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let call_id = "whip-rust";
    let t0 = Instant::now();
    let (pc, track, mut state) = rt.block_on(async {
        let (pc, track, state, offer) = publisher().await;
        let path = format!(
            "/v1/whip?downstream={}&downstream_codec=pcmu&call_id={call_id}",
            down.addr
        );
        let api = gw.api;
        let (code, head, answer) = tokio::task::spawn_blocking(move || {
            gateway::http_full(api, "POST", &path, "application/sdp", Some(&offer), None)
        })
        .await
        .unwrap();
        assert_eq!(code, 201, "{head}\n{answer}");
        assert_eq!(
            gateway::header(&head, "location"),
            Some("/v1/whip/whip-rust")
        );
        assert_eq!(
            gateway::header(&head, "content-type"),
            Some("application/sdp")
        );
        assert!(answer.contains("a=candidate:"), "answer has no candidate");
        pc.set_remote_description(RTCSessionDescription::answer(answer).unwrap())
            .await
            .unwrap();
        (pc, track, state)
    });
    let ev = gateway::follow_events(
        gw.api,
        &format!("/v1/calls/{call_id}/events"),
        None,
        Duration::from_secs(90),
    );
    let connected_after = rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(10),
            state.wait_for(|s| *s == RTCPeerConnectionState::Connected),
        )
        .await
        .expect("publisher connects within 10 s")
        .unwrap();
        t0.elapsed()
    });
    // Send at twice real time: the leg works on RTP timestamps, not arrival times, so this
    // halves the test without changing what is masked.
    rt.block_on(async {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        for (i, payload) in packets.iter().enumerate() {
            tick.tick().await;
            let mut p = rtc::rtp::Packet::default();
            p.header.version = 2;
            p.header.payload_type = 111;
            p.header.sequence_number = 1000u16.wrapping_add(i as u16);
            p.header.timestamp = 48_000u32.wrapping_add(960 * i as u32);
            p.header.ssrc = 0x5eed_0001;
            p.header.marker = i == 0;
            p.payload = bytes::Bytes::copy_from_slice(payload);
            track.write_rtp(p).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    });
    let (code, _) = gw.http("DELETE", &format!("/v1/whip/{call_id}"), None);
    assert_eq!(code, 200);
    // The session is gone: a second DELETE finds nothing, and the publisher sees the close.
    assert_eq!(
        gw.http("DELETE", &format!("/v1/whip/{call_id}"), None).0,
        404
    );
    rt.block_on(async {
        let _ = pc.close().await;
    });
    let events = ev.join().unwrap();
    let got = down.join();

    // Downstream, recording, STT, secure sink, webhooks: as for an RTP call.
    let secs = assert_pcmu_downstream_clean(&got, &spans, 150.0, 25.0);
    assert_recording_clean(&dir, call_id, 48_000);
    let stt_secs = assert_stt_clean(&stt_bytes, 25.0);
    let digits = settled_secure_digits(&secure, truth.len());
    assert_eq!(digits, truth, "secure sink digits");
    check_webhooks(&hooks.lock().unwrap(), &truth);
    let ended = events
        .iter()
        .find(|e| e["event"] == "call_ended")
        .unwrap_or_else(|| panic!("no call_ended in {events:?}"));
    assert_eq!(ended["reason"], "api", "{ended}");
    assert_eq!(ended["lost"], 0, "{ended}");
    assert!(events.iter().any(|e| e["event"] == "recording_pause"));
    let log = gw.log();
    assert!(
        !log.contains(&truth[..16]),
        "card number in the gateway log"
    );
    assert!(
        !serde_json::to_string(&events)
            .unwrap()
            .contains(&truth[..16]),
        "card number in events"
    );
    let (_, metrics) = gw.http("GET", "/metrics", None);
    assert!(
        metrics.contains("tonewall_whip_sessions_total 1"),
        "{metrics}"
    );
    // The publisher's RTCP ends at the gateway's WebRTC stack, so downstream's sender reports
    // are the gateway's own (every 5 s on average over the publish, and a BYE).
    let own_reports: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tonewall_rtcp_reports_sent_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(
        own_reports >= 2,
        "{own_reports} own RTCP reports downstream"
    );
    println!(
        "webrtc-rs -> WHIP -> tonewall -> PCMU: connected {:.0} ms after the offer, {:.1} s downstream, {} digits to the secure sink, {} events, {:.1} s to STT, {own_reports} RTCP sender reports of the gateway's own downstream; multimon-ng found nothing downstream, in the recording or in STT",
        connected_after.as_secs_f64() * 1000.0,
        secs,
        digits.len(),
        events.len(),
        stt_secs
    );
}

#[test]
fn bad_offers_are_refused() {
    let gw = Gateway::start("whip-bad", "");
    let q = "/v1/whip?downstream=127.0.0.1:9";
    let post = |path: &str, ct: &str, body: &str| {
        gateway::http_full(gw.api, "POST", path, ct, Some(body), None)
    };
    // Not SDP at all, wrong content type, SDP without Opus, garbage that claims Opus.
    assert_eq!(post(q, "application/json", "{}").0, 415);
    assert_eq!(post(q, "application/sdp", "hello").0, 400);
    let pcmu_only = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=rtpmap:0 PCMU/8000\r\n";
    assert_eq!(post(q, "application/sdp", pcmu_only).0, 400);
    let broken = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n";
    let (code, _, body) = post(q, "application/sdp", broken);
    assert_eq!(code, 400, "{body}");
    // Missing downstream, unknown parameter.
    assert_eq!(post("/v1/whip", "application/sdp", broken).0, 400);
    assert_eq!(
        post(&format!("{q}&bogus=1"), "application/sdp", broken).0,
        400
    );
    assert_eq!(gw.http("DELETE", "/v1/whip/none", None).0, 404);
    // No trickle ICE or ICE restart: RFC 9725 asks for 405 to any PATCH of a session URL,
    // and the Allow header says what is.
    let candidate = "a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n";
    let (code, head, _) = gateway::http_full(
        gw.api,
        "PATCH",
        "/v1/whip/none",
        "application/trickle-ice-sdpfrag",
        Some(candidate),
        None,
    );
    assert_eq!(code, 405);
    let allow = gateway::header(&head, "allow")
        .unwrap_or_default()
        .to_uppercase();
    assert!(
        allow.contains("DELETE") && !allow.contains("PATCH"),
        "Allow: {allow}"
    );
    let (code, head, _) =
        gateway::http_full(gw.api, "OPTIONS", "/v1/whip", "text/plain", None, None);
    assert_eq!(code, 204);
    assert_eq!(
        gateway::header(&head, "accept-post"),
        Some("application/sdp")
    );
    let (_, metrics) = gw.http("GET", "/metrics", None);
    assert!(
        metrics.contains("tonewall_whip_refused_total 4"),
        "{metrics}"
    );
    // The gateway is still up and serves calls.
    assert_eq!(gw.http("GET", "/healthz", None).0, 200);
}

/// Mutations of a real offer: lines dropped, repeated or swapped, bytes flipped, truncation,
/// numbers replaced. None may take the gateway down or leave a session behind.
fn mutate(offer: &str, rng: &mut tonewall::signal::Rng) -> String {
    let mut lines: Vec<String> = offer.lines().map(str::to_owned).collect();
    let pick =
        |rng: &mut tonewall::signal::Rng, n: usize| (rng.next_u64() % n.max(1) as u64) as usize;
    for _ in 0..1 + pick(rng, 4) {
        let n = lines.len();
        match pick(rng, 6) {
            0 if n > 1 => {
                lines.remove(pick(rng, n));
            }
            1 => {
                let l = lines[pick(rng, n)].clone();
                lines.insert(pick(rng, n), l);
            }
            2 => lines.swap(pick(rng, n), pick(rng, n)),
            3 => {
                let i = pick(rng, n);
                let mut b = lines[i].clone().into_bytes();
                if !b.is_empty() {
                    let j = pick(rng, b.len());
                    b[j] = b" :/=0123456789abcz\x7f"[pick(rng, 19)];
                }
                lines[i] = String::from_utf8_lossy(&b).into_owned();
            }
            4 => {
                let i = pick(rng, n);
                lines[i] = lines[i]
                    .split(' ')
                    .map(|w| {
                        if w.parse::<u64>().is_ok() {
                            "4294967296"
                        } else {
                            w
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" ");
            }
            _ => {
                let keep = pick(rng, n);
                lines.truncate(keep.max(1));
            }
        }
    }
    lines.join("\r\n") + "\r\n"
}

#[test]
fn mutated_offers_never_take_the_gateway_down() {
    let gw = Gateway::start("whip-fuzz", "");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (pc, _track, _state, offer) = rt.block_on(publisher());
    let mut rng = tonewall::signal::Rng::new(0x5d9);
    let (mut answered, mut refused) = (0, 0);
    for i in 0..150 {
        let body = if i == 0 {
            offer.clone()
        } else {
            mutate(&offer, &mut rng)
        };
        let path = format!("/v1/whip?downstream=127.0.0.1:9&call_id=fuzz-{i}&recording=false");
        let (code, _, answer) =
            gateway::http_full(gw.api, "POST", &path, "application/sdp", Some(&body), None);
        match code {
            201 => {
                answered += 1;
                assert!(answer.starts_with("v=0"), "{answer}");
                let (c, _) = gw.http("DELETE", &format!("/v1/whip/fuzz-{i}"), None);
                assert_eq!(c, 200, "DELETE after 201 for mutation {i}");
            }
            400..=499 => refused += 1,
            other => panic!("mutation {i}: status {other} {answer}\n{body}"),
        }
    }
    rt.block_on(async {
        let _ = pc.close().await;
    });
    assert_eq!(gw.http("GET", "/healthz", None).0, 200, "{}", gw.log());
    let (_, calls) = gw.http("GET", "/v1/calls", None);
    assert_eq!(calls.trim(), "[]", "sessions left behind");
    assert!(
        answered >= 1 && refused >= 10,
        "{answered} answered, {refused} refused"
    );
    assert!(!gw.log().contains("panicked"), "{}", gw.log());
    println!(
        "150 offers (1 real, 149 mutated): {answered} answered, {refused} refused, gateway healthy"
    );
}
