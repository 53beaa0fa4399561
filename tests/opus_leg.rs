//! Opus caller legs end to end (issue 4, BRIEF 2.1/2.2): key presses typed into 48 kHz audio
//! are Opus-encoded into RTP the way a softphone sends them, go through a [`CallerLeg`], and
//! what leaves is decoded the way the downstream receiver would: Opus again, or PCMU after
//! transcoding. Checked: one contiguous output stream, no digit recoverable (our most
//! sensitive detector and multimon-ng), digits only through the secure sink, loss never
//! concealed with codec extrapolation next to a tone, odd frame sizes and junk handled.
#![cfg(feature = "opus")]

mod common;

use common::*;
use rtp_types::{RtpPacket, RtpPacketBuilder};
use tonewall::codec::{
    ulaw_to_linear, Codec, FrameDecoder, FrameEncoder, OpusDecoder, OpusEncoder,
};
use tonewall::dtmf::{DetectorConfig, Digit};
use tonewall::event::{Event, EventLog, Outputs, SecureDigit};
use tonewall::rtp::{CallerLeg, LegConfig, LegOutputs, LegStats};
use tonewall::signal::{add_dtmf, add_white_noise, power_for_dbm0, to_i16, Rng, ToneSpec};
use tonewall::time::{ChannelId, MediaTime};

const PT: u8 = 111;
const RATE: u32 = 48_000;
const SSRC_IN: u32 = 0x0505_0505;
const SSRC_OUT: u32 = 0x0A0A_0A0A;

#[derive(Default)]
struct Sink {
    log: EventLog,
    packets: Vec<Vec<u8>>,
    audio: Vec<(MediaTime, Vec<i16>)>,
}

impl Outputs for Sink {
    fn event(&mut self, event: Event) {
        self.log.event(event);
    }
    fn secure_digit(&mut self, digit: SecureDigit) {
        self.log.secure_digit(digit);
    }
}

impl LegOutputs for Sink {
    fn packet(&mut self, rtp: &[u8]) {
        self.packets.push(rtp.to_vec());
    }
    fn audio(&mut self, at: MediaTime, samples: &[i16]) {
        self.audio.push((at, samples.to_vec()));
    }
}

impl Sink {
    fn secure(&self) -> String {
        self.log
            .secure
            .iter()
            .map(|d| d.digit.expose().to_char())
            .collect()
    }
}

fn config(lookahead_ms: u32, downstream: Option<Codec>) -> LegConfig {
    let mut cfg = LegConfig {
        audio_pt: PT,
        codec: Codec::Opus,
        rate: RATE,
        downstream_codec: downstream,
        downstream_pt: downstream.map(|_| 0),
        ssrc_out: SSRC_OUT,
        ..LegConfig::default()
    };
    cfg.pipeline.lookahead_ms = lookahead_ms;
    cfg
}

/// Quiet line noise with key presses of `on_ms`, `off_ms` apart, at 48 kHz.
fn keypad(keys: &str, on_ms: f64, off_ms: f64, seed: u64) -> Vec<i16> {
    let ms = |v: f64| (v * RATE as f64 / 1000.0).round() as usize;
    let total = 200.0 + keys.len() as f64 * (on_ms + off_ms) + 300.0;
    let n = ms(total).div_ceil(960) * 960;
    let mut x = vec![0.0; n];
    let mut rng = Rng::new(seed);
    add_white_noise(&mut x, power_for_dbm0(-50.0), &mut rng);
    let mut t = ms(200.0);
    for (i, k) in keys.chars().enumerate() {
        let level = -6.0 - (i % 3) as f64 * 5.0;
        let d = Digit::from_char(k).unwrap();
        add_dtmf(
            &mut x,
            RATE,
            t,
            ms(on_ms),
            d,
            ToneSpec::level(level),
            &mut rng,
        );
        t += ms(on_ms + off_ms);
    }
    to_i16(&x)
}

/// Opus-encode `x` into RTP packets of `frame` samples at `bitrate`.
fn opus_rtp(x: &[i16], frame: usize, bitrate: u32) -> Vec<Vec<u8>> {
    let mut enc = OpusEncoder::new(bitrate).unwrap();
    let mut buf = vec![0u8; enc.max_packet()];
    x.chunks_exact(frame)
        .enumerate()
        .map(|(i, c)| {
            let len = enc.encode(c, &mut buf).unwrap();
            rtp(i as u16, (i * frame) as u32, i == 0, &buf[..len])
        })
        .collect()
}

fn rtp(seq: u16, ts: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
    RtpPacketBuilder::<&[u8], &[u8]>::new()
        .payload_type(PT)
        .marker_bit(marker)
        .sequence_number(seq.wrapping_add(9000))
        .timestamp(ts.wrapping_add(123_456))
        .ssrc(SSRC_IN)
        .payload(payload)
        .write_vec()
        .unwrap()
}

/// Feed packets 20 ms apart (or as given) honouring the leg's timer, then end the call.
fn run(cfg: LegConfig, pkts: &[(Vec<u8>, u64)]) -> (Sink, LegStats, usize) {
    let mut leg = CallerLeg::new(cfg, ChannelId(0)).unwrap();
    let mut sink = Sink::default();
    for (p, t) in pkts {
        while let Some(d) = leg.poll_timeout().filter(|&d| d <= *t) {
            leg.handle_timeout(d, &mut sink);
        }
        leg.handle_packet(p, *t, &mut sink);
    }
    leg.finish(&mut sink);
    let st = leg.stats();
    (sink, st, leg.downstream_delay())
}

fn paced(pkts: Vec<Vec<u8>>, frame_us: u64) -> Vec<(Vec<u8>, u64)> {
    pkts.into_iter()
        .enumerate()
        .map(|(i, p)| (p, i as u64 * frame_us))
        .collect()
}

/// Decode the output as its receiver would, checking one SSRC, one payload type, contiguous
/// sequence numbers and timestamps. Returns the audio and its rate.
fn receive(sink: &Sink, pt: u8, g711: bool) -> (Vec<i16>, u32) {
    let mut dec = OpusDecoder::new().unwrap();
    let mut pcm = vec![0i16; 5760];
    let mut out = Vec::new();
    let mut prev: Option<(u16, u32, u32)> = None;
    for (i, raw) in sink.packets.iter().enumerate() {
        let p = RtpPacket::parse(raw).expect("valid RTP");
        assert_eq!(p.payload_type(), pt, "packet {i}: payload type");
        assert_eq!(p.ssrc(), SSRC_OUT, "packet {i}: SSRC");
        let n = if g711 {
            out.extend(p.payload().iter().map(|&b| ulaw_to_linear(b)));
            p.payload().len()
        } else {
            let n = dec.decode(p.payload(), &mut pcm).expect("decodable Opus");
            out.extend_from_slice(&pcm[..n]);
            n
        };
        if let Some((seq, ts, len)) = prev {
            assert_eq!(p.sequence_number(), seq.wrapping_add(1), "packet {i}: seq");
            assert_eq!(p.timestamp(), ts.wrapping_add(len), "packet {i}: timestamp");
        }
        prev = Some((p.sequence_number(), p.timestamp(), n as u32));
    }
    (out, if g711 { 8000 } else { RATE })
}

/// Decimate 48 kHz to 8 kHz (6-sample means; crude but enough for a detector that must find
/// nothing: it can only help a residual tone, whose components are all below 1.7 kHz).
fn to_8k(x: &[i16], rate: u32) -> Vec<i16> {
    if rate == 8000 {
        return x.to_vec();
    }
    x.chunks(6)
        .map(|c| (c.iter().map(|&s| s as i32).sum::<i32>() / c.len() as i32) as i16)
        .collect()
}

fn assert_nothing_decodable(what: &str, x: &[i16], rate: u32) {
    let found = detect(&to_8k(x, rate), &DetectorConfig::most_sensitive());
    assert!(
        found.is_empty(),
        "{what}: our most sensitive detector found {} digit(s)",
        found.len()
    );
    if let Some(m) = multimon_digits_at(x, rate) {
        assert!(
            m.is_empty(),
            "{what}: multimon-ng found {} digit(s)",
            m.len()
        );
    }
}

fn sink_audio(sink: &Sink) -> Vec<i16> {
    let mut all = Vec::new();
    for (at, s) in &sink.audio {
        assert_eq!(at.rate, RATE);
        assert_eq!(
            at.sample,
            all.len() as u64,
            "sink audio timeline has a hole"
        );
        all.extend_from_slice(s);
    }
    all
}

/// The caller's Opus really carries the digits (so a clean output means masking worked).
fn assert_input_decodable(pkts: &[Vec<u8>], keys: &str) {
    let mut dec = OpusDecoder::new().unwrap();
    let mut pcm = vec![0i16; 5760];
    let mut x = Vec::new();
    for p in pkts {
        let p = RtpPacket::parse(p).unwrap();
        let n = dec.decode(p.payload(), &mut pcm).unwrap();
        x.extend_from_slice(&pcm[..n]);
    }
    let found = detect(&to_8k(&x, RATE), &DetectorConfig::default());
    assert_eq!(digits_string(&found), keys, "input self-check");
}

fn clean(lookahead_ms: u32, bitrate: u32, downstream: Option<Codec>) {
    let keys = "4111#*90";
    let x = keypad(keys, 70.0, 80.0, 0x0905 ^ bitrate as u64);
    let pkts = opus_rtp(&x, 960, bitrate);
    assert_input_decodable(&pkts, keys);
    let n_in = pkts.len();
    let cfg = config(lookahead_ms, downstream);
    let (sink, st, delay) = run(cfg, &paced(pkts, 20_000));
    let g711 = downstream.is_some();
    let (rx, rate) = receive(&sink, if g711 { 0 } else { PT }, g711);
    let what = format!("lookahead {lookahead_ms} ms, {bitrate} bit/s, downstream {downstream:?}");
    assert_nothing_decodable(&format!("{what}: downstream"), &rx, rate);
    let audio = sink_audio(&sink);
    assert_eq!(audio.len(), x.len(), "{what}: sink audio covers the call");
    assert_nothing_decodable(&format!("{what}: sink audio"), &audio, RATE);
    assert_eq!(sink.secure(), keys, "{what}: secure digits");
    assert_eq!(st.audio_frames, n_in as u64);
    assert_eq!((st.lost, st.malformed, st.decode_errors), (0, 0, 0));
    // Downstream carries the whole call: the input's time plus the drained look-ahead.
    let expect = (x.len() as u64 + cfg.pipeline.lookahead_ms as u64 * 48) * rate as u64 / 48_000;
    assert!(
        rx.len() as u64 >= expect,
        "{what}: downstream has {} samples, expected at least {expect}",
        rx.len()
    );
    println!(
        "opus leg {what}: {} packets out, downstream delay {:.2} ms",
        sink.packets.len(),
        delay as f64 / 48.0
    );
}

#[test]
fn opus_in_opus_out_is_masked_at_every_lookahead() {
    for la in [0, 10, 20] {
        clean(la, 32_000, None);
    }
    clean(20, 16_000, None);
}

#[test]
fn opus_in_pcmu_out_is_masked_and_transcoded() {
    clean(20, 24_000, Some(Codec::Pcmu));
    clean(0, 24_000, Some(Codec::Pcmu));
}

#[test]
fn loss_next_to_a_tone_is_silence_and_loss_in_speech_is_concealed() {
    let keys = "58";
    let x = keypad(keys, 80.0, 600.0, 77);
    let pkts = opus_rtp(&x, 960, 32_000);
    // Drop two packets inside the first tone (which starts at 200 ms = packet 10) and two in
    // the quiet stretch well after the second one.
    let drop = [11, 12, pkts.len() - 6, pkts.len() - 5];
    let kept: Vec<(Vec<u8>, u64)> = paced(pkts, 20_000)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !drop.contains(i))
        .map(|(_, p)| p)
        .collect();
    // Windows close 300 ms after a digit, so the late losses are outside any window.
    let mut cfg = config(20, None);
    cfg.pipeline.capture.idle_timeout_ms = 300;
    let (sink, st, _) = run(cfg, &kept);
    assert_eq!(st.lost, 4);
    assert_eq!(
        st.concealed, 2,
        "only the losses far from a tone are concealed by the codec"
    );
    let (rx, rate) = receive(&sink, PT, false);
    assert_nothing_decodable("loss around tones", &rx, rate);
    // Half of the first key's 80 ms was lost on the wire: what arrived is too short for a
    // digit (it is still masked), so only the second key is captured.
    assert_eq!(sink.secure(), &keys[1..]);
}

#[test]
fn loss_inside_a_capture_window_is_never_concealed() {
    // A window opened by the first digit stays open (no idle close within the call); losses
    // in the quiet after it must be silence.
    let x = keypad("1", 80.0, 1500.0, 78);
    let pkts = opus_rtp(&x, 960, 32_000);
    let drop = [60, 61, 70];
    let kept: Vec<(Vec<u8>, u64)> = paced(pkts, 20_000)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !drop.contains(i))
        .map(|(_, p)| p)
        .collect();
    let mut cfg = config(20, None);
    cfg.pipeline.capture.idle_timeout_ms = 60_000;
    let (sink, st, _) = run(cfg, &kept);
    assert!(sink
        .log
        .events
        .iter()
        .any(|e| matches!(e, Event::RecordingPause { .. })));
    assert_eq!((st.lost, st.concealed), (3, 0));
}

#[test]
fn other_frame_sizes_are_reframed_to_whole_encoder_frames() {
    let keys = "7#";
    let x = keypad(keys, 70.0, 90.0, 79);
    for (frame, us) in [(480usize, 10_000u64), (2880, 60_000), (1920, 40_000)] {
        let n = x.len() / frame * frame;
        let pkts = opus_rtp(&x[..n], frame, 32_000);
        let (sink, st, _) = run(config(20, None), &paced(pkts, us));
        assert_eq!((st.lost, st.malformed), (0, 0), "frame {frame}");
        let (rx, rate) = receive(&sink, PT, false);
        assert_nothing_decodable(&format!("{frame}-sample frames"), &rx, rate);
        assert_eq!(sink.secure(), keys, "frame {frame}");
    }
}

#[test]
fn junk_opus_payloads_are_counted_not_fatal() {
    let x = keypad("3", 70.0, 200.0, 80);
    let mut pkts = opus_rtp(&x, 960, 32_000);
    // An empty payload, a TOC claiming far more than 120 ms, and random bytes.
    pkts[5] = rtp(5, 5 * 960, false, &[]);
    pkts[6] = rtp(6, 6 * 960, false, &[0xFB, 0x3F]);
    let mut rng = 0x1234_5678u32;
    let junk: Vec<u8> = (0..80)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            rng as u8
        })
        .collect();
    pkts[7] = rtp(7, 7 * 960, false, &junk);
    let (sink, st, _) = run(config(20, None), &paced(pkts, 20_000));
    assert!(st.malformed + st.decode_errors >= 2, "{st:?}");
    let (rx, rate) = receive(&sink, PT, false);
    assert_nothing_decodable("junk payloads", &rx, rate);
    assert_eq!(sink.secure(), "3");
}

#[test]
fn thousands_of_random_opus_payloads_never_break_the_leg() {
    // libopus is fuzzed upstream; this checks our side: size checks, decode errors, frame
    // accounting and the encoder never see a state they cannot handle.
    let mut rng = 0x9E37_79B9u32;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        rng
    };
    let mut pkts = Vec::new();
    for i in 0..3000u32 {
        let len = (next() % 300) as usize;
        let payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        pkts.push((rtp(i as u16, i * 960, false, &payload), i as u64 * 20_000));
    }
    let (sink, st, _) = run(config(0, None), &pkts);
    assert_eq!(st.packets_in, 3000);
    assert!(st.malformed + st.decode_errors + st.audio_frames >= 3000 - st.lost);
    // Whatever came out is valid, contiguous Opus.
    let _ = receive(&sink, PT, false);
}

/// Recorded speech (the fixture's prompts, resampled to 48 kHz) with no key tone in it.
fn speech_48k(seconds: usize) -> Vec<i16> {
    let s: Vec<i16> = recorded_speech()[..8000 * seconds]
        .iter()
        .map(|&v| v as i16)
        .collect();
    let mut x = resample_between(&s, 8000, RATE);
    x.truncate(x.len() / 960 * 960);
    x
}

fn payload(raw: &[u8]) -> Vec<u8> {
    RtpPacket::parse(raw).unwrap().payload().to_vec()
}

#[test]
fn untouched_opus_packets_go_downstream_byte_for_byte() {
    let x = speech_48k(30);
    let pkts = opus_rtp(&x, 960, 24_000);
    let n = pkts.len();
    let input: Vec<Vec<u8>> = pkts.iter().map(|p| payload(p)).collect();
    for la in [0, 20] {
        let cfg = config(la, None);
        let (sink, st, delay) = run(cfg, &paced(pkts.clone(), 20_000));
        let out: Vec<Vec<u8>> = sink.packets.iter().map(|p| payload(p)).collect();
        // The caller's packets come out in order, unchanged, once the look-ahead's initial
        // silence (ours) and the settle run after it have gone out.
        let pre = CallerLeg::new(cfg, ChannelId(0))
            .unwrap()
            .delay()
            .div_ceil(960);
        let first_forwarded = out
            .iter()
            .position(|p| input.contains(p))
            .expect("some packet forwarded");
        let k = input
            .iter()
            .position(|p| *p == out[first_forwarded])
            .unwrap();
        let same = out[first_forwarded..]
            .iter()
            .zip(&input[k..])
            .take_while(|(a, b)| a == b)
            .count();
        println!(
            "splice, speech only, look-ahead {la} ms: {} of {n} packets forwarded byte for \
             byte, {} re-encoded; first forwarded is input packet {k}; downstream delay \
             {:.2} ms",
            st.forwarded,
            st.reencoded,
            delay as f64 / 48.0
        );
        // Our packets up front: the look-ahead's initial silence, then the settle run.
        assert!(
            k <= pre + tonewall::rtp::SETTLE_PACKETS as usize,
            "forwarding starts right after the settle run (input packet {k})"
        );
        assert!(same >= 50, "a run of {same} caller packets from the start");
        // Speech loses a fraction of a percent to (over-)masking at 48 kHz, and every such
        // packet costs a splice and its settle run: the rest is the caller's own.
        assert!(
            st.forwarded as usize >= n * 9 / 10,
            "{} of {n} packets forwarded",
            st.forwarded
        );
        assert_eq!(st.forwarded + st.reencoded, n as u64);
    }
    // With passthrough off every packet is ours.
    let cfg = LegConfig {
        opus_passthrough: false,
        ..config(20, None)
    };
    let (sink, st, _) = run(cfg, &paced(pkts, 20_000));
    assert_eq!(st.forwarded, 0);
    assert!(sink.packets.iter().all(|p| !input.contains(&payload(p))));
}

/// Key tones over continuous recorded speech through a splicing leg: what the downstream
/// decoder makes of our packets and the caller's, spliced, must hold no digit, no more tone
/// energy where the tones were than re-encoding every packet leaves (within 3 dB, or 30 dB
/// under the tone whatever re-encoding leaves: both are codec smear at the mask's edges
/// then, and the better of two such small figures moves by several dB from one detector
/// change to the next), and no echo of a tone
/// after it (a caller packet coded against a history that held the tone, played after our
/// silence, could carry its negative). Every case also runs with every packet re-encoded.
///
/// The most sensitive detector does fire on this speech (talk-off of a setting made to
/// over-report), next to tones too; a hit counts as a leak when it overlaps a tone and
/// reports that tone's key.
#[test]
fn spliced_opus_downstream_holds_no_tone_and_no_echo_of_one() {
    let mut worst = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    for bitrate in [16_000, 24_000, 32_000] {
        let (x, placed) = digits_over_speech_at(-10.0, -8.0, 0x5011 ^ bitrate as u64, RATE);
        let n = x.len() / 960 * 960;
        let x = &x[..n];
        let pkts = opus_rtp(x, 960, bitrate);
        // What the caller's packets decode to (the audio the masker saw).
        let mut dec = OpusDecoder::new().unwrap();
        let mut pcm = vec![0i16; 960];
        let mut heard = Vec::new();
        for p in &pkts {
            let m = dec.decode(&payload(p), &mut pcm).unwrap();
            heard.extend_from_slice(&pcm[..m]);
        }
        for la in [0, 10, 20] {
            let mut reencoded_span = f64::NEG_INFINITY;
            for passthrough in [false, true] {
                let cfg = LegConfig {
                    opus_passthrough: passthrough,
                    ..config(la, None)
                };
                let (sink, st, delay) = run(cfg, &paced(pkts.clone(), 20_000));
                let (rx, rate) = receive(&sink, PT, false);
                let what = format!(
                    "{bitrate} bit/s caller, look-ahead {la} ms, passthrough {passthrough}"
                );
                let m = multimon_digits_at(&rx, rate);
                assert!(
                    m.as_ref().is_none_or(|m| m.is_empty()),
                    "{what}: multimon-ng {m:?}"
                );
                let dms = delay as f64 / 48.0;
                let found = detect(&to_8k(&rx, rate), &DetectorConfig::most_sensitive());
                let leaks = found
                    .iter()
                    .filter(|f| {
                        placed.iter().any(|p| {
                            f.digit == p.digit
                                && f.start_ms - dms < p.end_ms()
                                && f.end_ms - dms > p.start_ms()
                        })
                    })
                    .count();
                assert_eq!(
                    leaks, 0,
                    "{what}: the sensitive detector found a tone's key"
                );
                // Downstream sample `i + delay` is input sample `i` around every tone (a
                // tone is always spliced, and spliced audio carries the encoder's delay).
                let y: Vec<i16> = rx.iter().skip(delay).copied().collect();
                let (mut span, mut echo) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
                for p in &placed {
                    let (a, b) = (p.start, p.start + p.len);
                    let (fl, fh) = Digit::from_char(p.digit).unwrap().frequencies();
                    let e = |v: &[i16], from: usize, to: usize| {
                        tone_energy_at(&v[from..to.min(v.len())], fl, fh, RATE)
                    };
                    let tone = e(&heard, a, b);
                    span = span.max(10.0 * (e(&y, a, b) / tone).log10());
                    // From 15 ms after the tone (past the mask's edge) to 120 ms after it
                    // (past the settle run): tone-frequency energy against the caller's own
                    // over that stretch, with a floor 30 dB under the tone. Forwarded packets
                    // are the splice encoder's look-ahead earlier than spliced ones, so the
                    // caller's audio is taken at both alignments (at an onset 2.5 ms of
                    // shift alone reads as several dB).
                    let (w0, w1) = (b + ms_at(15.0, RATE), b + ms_at(120.0, RATE));
                    let la_enc = delay - CallerLeg::new(cfg, ChannelId(0)).unwrap().delay();
                    let own = e(&heard, w0, w1).max(e(&heard, w0 + la_enc, w1 + la_enc));
                    let ratio = e(&y, w0, w1) / (own + 1e-3 * tone);
                    echo = echo.max(10.0 * ratio.log10());
                }
                println!(
                    "{what}: {} tones, {} sensitive hits (none of a tone's key), tone energy \
                     left at most {span:.1} dB, tone-frequency energy after a tone at most \
                     {echo:+.1} dB against the caller's; {} packets forwarded, {} re-encoded",
                    placed.len(),
                    found.len(),
                    st.forwarded,
                    st.reencoded
                );
                assert_eq!(sink.secure().len(), placed.len(), "{what}: secure digits");
                assert!(
                    echo < 6.0,
                    "{what}: tone-frequency energy after a tone {echo:+.1} dB"
                );
                if passthrough {
                    assert!(
                        span < (reencoded_span + 3.0).max(-30.0),
                        "{what}: tone energy {span:.1} dB, re-encoding leaves {reencoded_span:.1}"
                    );
                    assert!(st.forwarded > 0, "{what}: nothing forwarded");
                    worst = (worst.0.max(span), worst.1.max(echo));
                } else {
                    reencoded_span = span;
                    assert_eq!(st.forwarded, 0);
                }
            }
        }
    }
    println!(
        "splice worst: tone energy left {:.1} dB, after a tone {:+.1} dB",
        worst.0, worst.1
    );
}

/// A new caller source (SSRC change) has its own encoder history, which the downstream
/// decoder never heard: its first packets are not forwarded until a settle run has passed.
/// And stereo packets are never forwarded (their side channel is not what was analysed).
#[test]
fn new_sources_and_stereo_packets_are_not_forwarded_blindly() {
    let x = speech_48k(6);
    let half = x.len() / 2 / 960 * 960;
    let a = opus_rtp(&x[..half], 960, 24_000);
    // The second half from another encoder, under another SSRC, numbering on.
    let b: Vec<Vec<u8>> = opus_rtp(&x[half..], 960, 32_000)
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let k = a.len() + i;
            RtpPacketBuilder::<&[u8], &[u8]>::new()
                .payload_type(PT)
                .sequence_number((k as u16).wrapping_add(9000))
                .timestamp(((k * 960) as u32).wrapping_add(123_456))
                .ssrc(SSRC_IN ^ 0xFFFF)
                .payload(RtpPacket::parse(&p).unwrap().payload())
                .write_vec()
                .unwrap()
        })
        .collect();
    let second: Vec<Vec<u8>> = b.iter().map(|p| payload(p)).collect();
    let all: Vec<Vec<u8>> = a.iter().chain(&b).cloned().collect();
    let (sink, st, _) = run(config(20, None), &paced(all, 20_000));
    assert_eq!(st.ssrc_changes, 1);
    let out: Vec<Vec<u8>> = sink.packets.iter().map(|p| payload(p)).collect();
    let first = second
        .iter()
        .position(|p| out.contains(p))
        .expect("the new source is forwarded once settled");
    // Its first packets are ours; the settle run's last packet is the first forwarded.
    assert!(
        first + 1 >= tonewall::rtp::SETTLE_PACKETS as usize,
        "new source forwarded from its packet {first}"
    );
    println!("new source: first forwarded packet is its number {first}");

    // Stereo: every packet re-encoded as mono.
    let mut enc =
        opus2::Encoder::new(RATE, opus2::Channels::Stereo, opus2::Application::Voip).unwrap();
    let mut buf = vec![0u8; 1500];
    let stereo: Vec<i16> = x[..half].iter().flat_map(|&s| [s, s / 2]).collect();
    let pkts: Vec<Vec<u8>> = stereo
        .chunks_exact(1920)
        .enumerate()
        .map(|(i, c)| {
            let n = enc.encode(c, &mut buf).unwrap();
            rtp(i as u16, (i * 960) as u32, i == 0, &buf[..n])
        })
        .collect();
    let (sink, st, _) = run(config(20, None), &paced(pkts.clone(), 20_000));
    assert_eq!(st.forwarded, 0, "stereo forwarded");
    assert!(st.reencoded as usize >= pkts.len());
    let (rx, _) = receive(&sink, PT, false);
    assert!(rx.len() >= half);
}
