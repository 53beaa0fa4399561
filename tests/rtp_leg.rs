//! The RTP caller leg end to end (BRIEF 2.2, 2.3, 4): RTP built with `rtp-types`' builder goes
//! into a [`CallerLeg`], and what comes out is checked as a receiver would see it: one
//! stream (our SSRC, the audio payload type only, contiguous sequence numbers and
//! timestamps), audio from which no digit can be recovered (tonewall's own detector at its
//! most sensitive and multimon-ng), digit values only through the secure sink, and the
//! leg's counters. No assertion depends on wall-clock timing: time is an argument.

mod common;

use common::*;
use rtp_types::{RtpPacket, RtpPacketBuilder};
use tonewall::capture::{CaptureConfig, CloseReason, OpenReason};
use tonewall::codec::{alaw_to_linear, linear_to_alaw, linear_to_ulaw, ulaw_to_linear, Codec};
use tonewall::dtmf::{DetectorConfig, Digit};
use tonewall::event::{DigitSource, Event, EventLog, Outputs, SecureDigit};
use tonewall::rtp::{CallerLeg, LegConfig, LegOutputs, LegStats, StreamEvent};
use tonewall::signal::{add_dtmf, add_white_noise, power_for_dbm0, to_i16, Rng, ToneSpec};
use tonewall::time::{ChannelId, MediaTime};

const TE_PT: u8 = 101;
const SSRC_OUT: u32 = 0x0B0B_0B0B;
const FRAME_US: u64 = 20_000;

/// A datagram and its arrival time, µs.
type Datagram = (Vec<u8>, u64);

/// Everything a leg emits.
#[derive(Default)]
struct Sink {
    log: EventLog,
    packets: Vec<Vec<u8>>,
    audio: Vec<(MediaTime, Vec<i16>)>,
    stream: Vec<StreamEvent>,
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
    fn stream(&mut self, ev: StreamEvent) {
        self.stream.push(ev);
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

fn config(codec: Codec, rate: u32, audio_pt: u8) -> LegConfig {
    LegConfig {
        audio_pt,
        codec,
        rate,
        ssrc_out: SSRC_OUT,
        ..LegConfig::default()
    }
}

fn rtp(pt: u8, marker: bool, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    RtpPacketBuilder::<&[u8], &[u8]>::new()
        .payload_type(pt)
        .marker_bit(marker)
        .sequence_number(seq)
        .timestamp(ts)
        .ssrc(ssrc)
        .payload(payload)
        .write_vec()
        .unwrap()
}

fn encode(codec: Codec, x: &[i16]) -> Vec<u8> {
    match codec {
        Codec::Pcmu => x.iter().map(|&s| linear_to_ulaw(s)).collect(),
        Codec::Pcma => x.iter().map(|&s| linear_to_alaw(s)).collect(),
        Codec::Pcm16 => x.iter().flat_map(|s| s.to_be_bytes()).collect(),
        Codec::Opus => panic!("Opus packets come from an encoder, not per sample"),
    }
}

fn decode(codec: Codec, b: &[u8]) -> Vec<i16> {
    match codec {
        Codec::Pcmu => b.iter().map(|&v| ulaw_to_linear(v)).collect(),
        Codec::Pcma => b.iter().map(|&v| alaw_to_linear(v)).collect(),
        Codec::Pcm16 => b
            .chunks_exact(2)
            .map(|c| i16::from_be_bytes([c[0], c[1]]))
            .collect(),
        Codec::Opus => panic!("Opus packets are decoded by a decoder, not per sample"),
    }
}

/// One caller: an SSRC with its own sequence numbers and clock.
struct Caller {
    codec: Codec,
    rate: u32,
    pt: u8,
    ssrc: u32,
    seq: u16,
    ts: u32,
}

impl Caller {
    fn new(cfg: &LegConfig, ssrc: u32, seq: u16, ts: u32) -> Self {
        Self {
            codec: cfg.codec,
            rate: cfg.rate,
            pt: cfg.audio_pt,
            ssrc,
            seq,
            ts,
        }
    }

    fn frame(&self) -> usize {
        (self.rate / 50) as usize
    }

    /// One audio packet of `x` (linear), advancing sequence and clock.
    fn audio(&mut self, x: &[i16], marker: bool) -> Vec<u8> {
        let p = rtp(
            self.pt,
            marker,
            self.seq,
            self.ts,
            self.ssrc,
            &encode(self.codec, x),
        );
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(x.len() as u32);
        p
    }

    /// `x` cut into 20 ms packets.
    fn stream(&mut self, x: &[i16]) -> Vec<Vec<u8>> {
        let f = self.frame();
        x.chunks(f).map(|c| self.audio(c, false)).collect()
    }

    /// One RFC 4733 packet for the event that started at `ts`.
    fn event(&mut self, ts: u32, code: u8, end: bool, duration: u16, marker: bool) -> Vec<u8> {
        let d = duration.to_be_bytes();
        let payload = [code, (end as u8) << 7 | 10, d[0], d[1]];
        let p = rtp(TE_PT, marker, self.seq, ts, self.ssrc, &payload);
        self.seq = self.seq.wrapping_add(1);
        p
    }
}

/// Feed datagrams with their arrival times, honouring the leg's timer like a shell would,
/// then end the call.
fn drive(leg: &mut CallerLeg, input: &[(Vec<u8>, u64)], sink: &mut Sink) {
    for (p, t) in input {
        while let Some(d) = leg.poll_timeout() {
            if d > *t {
                break;
            }
            leg.handle_timeout(d, sink);
        }
        leg.handle_packet(p, *t, sink);
    }
    leg.finish(sink);
}

/// Arrival every 20 ms.
fn paced(pkts: Vec<Vec<u8>>) -> Vec<Datagram> {
    pkts.into_iter()
        .enumerate()
        .map(|(i, p)| (p, i as u64 * FRAME_US))
        .collect()
}

fn run(cfg: LegConfig, input: &[(Vec<u8>, u64)]) -> (Sink, LegStats, usize) {
    let mut leg = CallerLeg::new(cfg, ChannelId(3)).unwrap();
    let mut sink = Sink::default();
    drive(&mut leg, input, &mut sink);
    (sink, leg.stats(), leg.delay())
}

/// The output as a receiver sees it.
struct Received {
    /// Decoded audio of every packet, in order.
    lin: Vec<i16>,
    /// Samples per packet.
    sizes: Vec<usize>,
    markers: Vec<bool>,
    /// (packet index, timestamp step beyond contiguity) for every discontinuity.
    jumps: Vec<(usize, i64)>,
}

/// Parse every output packet: one SSRC (ours), audio payload type only, sequence numbers
/// without a hole. Returns the audio and where the timestamps are not contiguous.
fn received(sink: &Sink, cfg: &LegConfig) -> Received {
    let mut r = Received {
        lin: Vec::new(),
        sizes: Vec::new(),
        markers: Vec::new(),
        jumps: Vec::new(),
    };
    let mut prev: Option<(u16, u32, usize)> = None;
    for (i, raw) in sink.packets.iter().enumerate() {
        let p = RtpPacket::parse(raw).expect("output is valid RTP");
        assert_eq!(p.payload_type(), cfg.audio_pt, "packet {i}: payload type");
        assert_eq!(p.ssrc(), SSRC_OUT, "packet {i}: SSRC");
        let samples = decode(cfg.codec, p.payload());
        assert!(!samples.is_empty());
        if let Some((seq, ts, n)) = prev {
            assert_eq!(p.sequence_number(), seq.wrapping_add(1), "packet {i}: seq");
            let step = p.timestamp().wrapping_sub(ts.wrapping_add(n as u32)) as i32 as i64;
            if step != 0 {
                r.jumps.push((i, step));
            }
        }
        prev = Some((p.sequence_number(), p.timestamp(), samples.len()));
        r.sizes.push(samples.len());
        r.markers.push(p.marker_bit());
        r.lin.extend(samples);
    }
    r
}

/// The sinks' audio: contiguous from 0, and exactly the downstream audio less the
/// look-ahead's initial silence.
fn sink_audio(sink: &Sink, rx: &Received, delay: usize, rate: u32) -> Vec<i16> {
    let mut all = Vec::new();
    for (at, s) in &sink.audio {
        assert_eq!(at.rate, rate);
        assert_eq!(at.sample, all.len() as u64, "audio timeline has a hole");
        all.extend_from_slice(s);
    }
    assert_eq!(all.len() + delay, rx.lin.len());
    assert!(all == rx.lin[delay..], "sink audio differs from downstream");
    all
}

/// Halve the rate (pair averages) until 8 kHz, for the 8 kHz detector.
fn to_8k(x: &[i16], rate: u32) -> Vec<i16> {
    let mut y = x.to_vec();
    let mut r = rate;
    while r > 8000 {
        y = y
            .chunks(2)
            .map(|c| ((c[0] as i32 + *c.last().unwrap() as i32) / 2) as i16)
            .collect();
        r /= 2;
    }
    y
}

fn assert_nothing_decodable(what: &str, x: &[i16], rate: u32) {
    let found = detect(&to_8k(x, rate), &DetectorConfig::most_sensitive());
    assert!(
        found.is_empty(),
        "{what}: our most sensitive detector found {} digit(s) in the output",
        found.len()
    );
    if let Some(m) = multimon_digits_at(x, rate) {
        assert!(
            m.is_empty(),
            "{what}: multimon-ng found {} digit(s) in the output",
            m.len()
        );
    }
}

/// The input really holds the digits (so a clean output means masking worked).
fn assert_decodable(x: &[i16], rate: u32, keys: &str) {
    let found = detect(&to_8k(x, rate), &DetectorConfig::default());
    assert_eq!(digits_string(&found), keys, "input self-check");
    if let Some(m) = multimon_digits_at(x, rate) {
        assert_eq!(m, keys, "input self-check (multimon-ng)");
    }
}

/// Quiet line noise with key presses: `on_ms` tones, `off_ms` apart, after `lead_ms`.
/// Returns the signal and each tone's (start, len) in samples.
fn keypad(
    rate: u32,
    keys: &str,
    on_ms: f64,
    off_ms: f64,
    lead_ms: f64,
    seed: u64,
) -> (Vec<i16>, Vec<(usize, usize)>) {
    let ms = |v: f64| (v * rate as f64 / 1000.0).round() as usize;
    let total = lead_ms + keys.len() as f64 * (on_ms + off_ms) + 200.0;
    let frame = (rate / 50) as usize;
    let n = ms(total).div_ceil(frame) * frame;
    let mut x = vec![0.0; n];
    let mut rng = Rng::new(seed);
    add_white_noise(&mut x, power_for_dbm0(-55.0), &mut rng);
    let mut spans = Vec::new();
    let mut t = ms(lead_ms);
    for (i, k) in keys.chars().enumerate() {
        let level = -7.0 - (i % 3) as f64 * 4.0;
        let d = Digit::from_char(k).unwrap();
        add_dtmf(
            &mut x,
            rate,
            t,
            ms(on_ms),
            d,
            ToneSpec::level(level),
            &mut rng,
        );
        spans.push((t, ms(on_ms)));
        t += ms(on_ms + off_ms);
    }
    (to_i16(&x), spans)
}

/// A clean stream of `codec` at `rate` with in-band digits: masked, contiguous, secure digits
/// exactly the typed ones.
fn clean_stream(codec: Codec, rate: u32, pt: u8) {
    let keys = "4711#*9D0";
    let cfg = config(codec, rate, pt);
    let (x, _) = keypad(rate, keys, 70.0, 80.0, 120.0, 0xC0DE ^ rate as u64);
    // What the caller's codec makes of it (the decodability self-check runs on that).
    let xin = decode(codec, &encode(codec, &x));
    assert_decodable(&xin, rate, keys);
    let mut caller = Caller::new(&cfg, 0x1234_5678, 1000, 77_000);
    let pkts = caller.stream(&x);
    let n_in = pkts.len();
    let (sink, st, delay) = run(cfg, &paced(pkts));
    let rx = received(&sink, &cfg);
    assert!(rx.jumps.is_empty(), "timestamp jumps {:?}", rx.jumps);
    let frame = (rate / 50) as usize;
    assert!(
        rx.sizes[..n_in].iter().all(|&n| n == frame),
        "payload sizes"
    );
    assert_eq!(rx.lin.len(), x.len() + delay);
    let audio = sink_audio(&sink, &rx, delay, rate);
    assert_eq!(audio.len(), x.len());
    assert_nothing_decodable("clean stream", &rx.lin, rate);
    assert_eq!(sink.secure(), keys);
    assert!(sink
        .log
        .events
        .iter()
        .any(|e| matches!(e, Event::ToneMasked { .. })));
    assert_eq!(st.packets_in, n_in as u64);
    assert_eq!(st.audio_frames, n_in as u64);
    assert_eq!(st.packets_out, sink.packets.len() as u64);
    assert_eq!(
        (st.lost, st.late, st.duplicate, st.malformed, st.resyncs),
        (0, 0, 0, 0, 0)
    );
    assert_eq!(sink.stream, [StreamEvent::FirstPacket]);
    assert!(rx.markers[0], "first packet starts a talkspurt");
}

#[test]
fn clean_pcmu_stream_is_masked_contiguous_and_captures_the_typed_digits() {
    clean_stream(Codec::Pcmu, 8000, 0);
}

#[test]
fn clean_pcma_stream() {
    clean_stream(Codec::Pcma, 8000, 8);
}

#[test]
fn clean_l16_stream_at_16khz() {
    clean_stream(Codec::Pcm16, 16_000, 96);
}

#[test]
fn packet_loss_during_a_tone_is_concealed_with_silence() {
    let cfg = config(Codec::Pcmu, 8000, 0);
    let (x, spans) = keypad(8000, "58", 140.0, 100.0, 100.0, 5);
    let mut caller = Caller::new(&cfg, 42, 7, 0);
    let pkts = caller.stream(&x);
    // Lose the two packets in the middle of the first tone.
    let k = (spans[0].0 + 40) / 160 + 1;
    let lost = [k, k + 1];
    let sent: Vec<_> = paced(pkts)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !lost.contains(i))
        .map(|(_, p)| p)
        .collect();
    let (sink, st, delay) = run(cfg, &sent);
    let rx = received(&sink, &cfg);
    assert!(rx.jumps.is_empty(), "output not contiguous: {:?}", rx.jumps);
    assert_eq!(rx.lin.len(), x.len() + delay, "lost time was filled");
    assert_eq!((st.lost, st.filled_frames, st.late), (2, 3, 0)); // 2 lost + drain at finish
    let audio = sink_audio(&sink, &rx, delay, 8000);
    // The lost packets' time is silence, never a repeat of the tone before it.
    let silence = silence_linear(Codec::Pcmu);
    assert!(audio[k * 160..(k + 2) * 160].iter().all(|&s| s == silence));
    assert_nothing_decodable("loss", &rx.lin, 8000);
}

/// The same stream in order and with neighbours swapped (and a three-way shuffle within a
/// few ms) gives byte-identical output: held packets are released in order, nothing lost.
#[test]
fn reordering_within_the_window_is_undone() {
    let cfg = config(Codec::Pcmu, 8000, 0);
    let (x, _) = keypad(8000, "3690", 70.0, 80.0, 100.0, 6);
    let mut caller = Caller::new(&cfg, 9, 100, 1 << 20);
    let pkts = paced(caller.stream(&x));
    let (clean, _, _) = run(cfg, &pkts);
    let mut shuffled = pkts.clone();
    for k in [5usize, 20, 33] {
        shuffled.swap(k, k + 1);
        // Arrival times stay in arrival order.
        let (t0, t1) = (pkts[k].1, pkts[k + 1].1);
        shuffled[k].1 = t0;
        shuffled[k + 1].1 = t1;
    }
    // k+2, k+1, k arriving 1 ms apart.
    let k = 40;
    let t = pkts[k].1;
    shuffled[k] = (pkts[k + 2].0.clone(), t);
    shuffled[k + 1] = (pkts[k + 1].0.clone(), t + 1000);
    shuffled[k + 2] = (pkts[k].0.clone(), t + 2000);
    let (sink, st, _) = run(cfg, &shuffled);
    assert_eq!((st.lost, st.late, st.duplicate), (0, 0, 0));
    assert_eq!(sink.packets, clean.packets);
    assert_eq!(sink.secure(), "3690");
}

/// A packet that comes later than `reorder_wait_ms` after its successor is given up: the
/// held successors go out when the timer says so (not before), the gap is silence, and the
/// straggler is dropped as late.
#[test]
fn reorder_beyond_the_wait_goes_through_the_timer() {
    let cfg = LegConfig {
        reorder_window: 8,
        ..config(Codec::Pcmu, 8000, 0)
    };
    let mut caller = Caller::new(&cfg, 11, 500, 0);
    let x = vec![1000i16; 160 * 10];
    let pkts = caller.stream(&x);
    let mut leg = CallerLeg::new(cfg, ChannelId(0)).unwrap();
    let mut sink = Sink::default();
    for (i, p) in pkts[..5].iter().enumerate() {
        leg.handle_packet(p, i as u64 * FRAME_US, &mut sink);
    }
    assert_eq!(sink.packets.len(), 5);
    assert_eq!(leg.poll_timeout(), None);
    // Packet 5 is late; 6 and 7 arrive and are held.
    leg.handle_packet(&pkts[6], 100_000, &mut sink);
    leg.handle_packet(&pkts[7], 110_000, &mut sink);
    assert_eq!(sink.packets.len(), 5);
    assert_eq!(leg.poll_timeout(), Some(130_000));
    leg.handle_timeout(129_999, &mut sink);
    assert_eq!(sink.packets.len(), 5, "released before the wait was over");
    leg.handle_timeout(130_000, &mut sink);
    // A silence packet for 5, then 6 and 7.
    assert_eq!(sink.packets.len(), 8);
    assert_eq!(leg.poll_timeout(), None);
    leg.handle_packet(&pkts[5], 140_000, &mut sink);
    assert_eq!(sink.packets.len(), 8, "a straggler must not be emitted");
    for (i, p) in pkts[8..].iter().enumerate() {
        leg.handle_packet(p, 160_000 + i as u64 * FRAME_US, &mut sink);
    }
    leg.finish(&mut sink);
    let st = leg.stats();
    assert_eq!((st.lost, st.late, st.filled_frames), (1, 1, 2));
    let rx = received(&sink, &cfg);
    assert!(rx.jumps.is_empty());
    let audio = sink_audio(&sink, &rx, leg.delay(), 8000);
    let silence = silence_linear(Codec::Pcmu);
    assert!(audio[5 * 160..6 * 160].iter().all(|&s| s == silence));
    assert!(audio[6 * 160..7 * 160].iter().all(|&s| s != silence));
}

/// A packet too big for a reorder slot (a huge header extension) cannot wait: the gap
/// before it is lost, what is held before it goes first, and the stream stays in order.
#[test]
fn a_packet_too_big_to_hold_releases_in_order() {
    let cfg = config(Codec::Pcmu, 8000, 0);
    let mut caller = Caller::new(&cfg, 24, 0, 0);
    let mut pkts: Vec<Vec<u8>> = (0..10u8)
        .map(|i| caller.audio(&[100 * i as i16 + 100; 160], false))
        .collect();
    let p7 = RtpPacket::parse(&pkts[7]).unwrap();
    let big = RtpPacketBuilder::<&[u8], &[u8]>::new()
        .payload_type(0)
        .sequence_number(p7.sequence_number())
        .timestamp(p7.timestamp())
        .ssrc(24)
        .extension(0xBEDE, &[0u8; 2400][..])
        .payload(p7.payload())
        .write_vec()
        .unwrap();
    pkts[7] = big;
    // 0-4, 6 (held), 7 (too big), 5 (late), 8, 9; all within the reorder wait.
    let order = [0, 1, 2, 3, 4, 6, 7, 5, 8, 9];
    let input: Vec<Datagram> = order
        .iter()
        .enumerate()
        .map(|(i, &k)| (pkts[k].clone(), i as u64 * 1000))
        .collect();
    let (sink, st, delay) = run(cfg, &input);
    assert_eq!((st.lost, st.late, st.filled_frames), (1, 1, 2));
    let rx = received(&sink, &cfg);
    assert!(rx.jumps.is_empty());
    let audio = sink_audio(&sink, &rx, delay, 8000);
    // Packet k's level is 100 * (k + 1); 5 became silence.
    let level: Vec<i16> = audio.chunks(160).map(|c| c[80]).collect();
    let want: Vec<i16> = (0..10)
        .map(|k| {
            if k == 5 {
                silence_linear(Codec::Pcmu)
            } else {
                ulaw_to_linear(linear_to_ulaw(100 * k + 100))
            }
        })
        .collect();
    assert_eq!(level, want);
}

#[test]
fn duplicates_are_dropped_and_counted() {
    let cfg = config(Codec::Pcmu, 8000, 0);
    let (x, _) = keypad(8000, "12", 70.0, 80.0, 100.0, 7);
    let mut caller = Caller::new(&cfg, 12, 65000, 0);
    let pkts = paced(caller.stream(&x));
    let (clean, _, _) = run(cfg, &pkts);
    let mut dup = Vec::new();
    let mut expected = 0;
    for (i, (p, t)) in pkts.iter().enumerate() {
        if i == 10 {
            // A duplicate of a packet that is being held: 11, 11 again, then 10.
            dup.push((pkts[11].0.clone(), *t));
            dup.push((pkts[11].0.clone(), *t + 100));
            dup.push((p.clone(), *t + 200));
            expected += 2; // the held copy, then 11 itself when it arrives in turn
            continue;
        }
        dup.push((p.clone(), *t));
        if i % 7 == 0 {
            dup.push((p.clone(), *t + 500));
            expected += 1;
        }
    }
    let (sink, st, _) = run(cfg, &dup);
    assert_eq!(st.duplicate, expected);
    assert_eq!((st.lost, st.late), (0, 0));
    assert_eq!(sink.packets, clean.packets);
    assert_eq!(sink.secure(), "12");
}

#[test]
fn padding_only_probes_use_up_a_number_and_are_not_losses() {
    // WebRTC senders (Chromium's pacer) probe bandwidth with padding-only packets: the
    // padding bit, no payload, the previous packet's timestamp, the next sequence number.
    let cfg = config(Codec::Pcmu, 8000, 0);
    let (x, _) = keypad(8000, "12", 70.0, 80.0, 100.0, 7);
    let mut caller = Caller::new(&cfg, 12, 65000, 0);
    let pkts = paced(caller.stream(&x));
    let (clean, _, _) = run(cfg, &pkts);
    let mut probed = Vec::new();
    let mut seq = 40_000u16;
    for (i, (p, t)) in pkts.iter().enumerate() {
        let r = RtpPacket::parse(p).unwrap();
        let again = rtp(
            r.payload_type(),
            r.marker_bit(),
            seq,
            r.timestamp(),
            r.ssrc(),
            r.payload(),
        );
        probed.push((again, *t));
        seq = seq.wrapping_add(1);
        if i % 5 == 2 {
            let pad = RtpPacketBuilder::<&[u8], &[u8]>::new()
                .payload_type(r.payload_type())
                .sequence_number(seq)
                .timestamp(r.timestamp())
                .ssrc(r.ssrc())
                .padding(200)
                .write_vec()
                .unwrap();
            assert!(RtpPacket::parse(&pad).unwrap().payload().is_empty());
            probed.push((pad, *t + 1_000));
            seq = seq.wrapping_add(1);
        }
    }
    let (sink, st, _) = run(cfg, &probed);
    assert_eq!((st.lost, st.late, st.malformed), (0, 0, 0), "{st:?}");
    assert_eq!(
        sink.packets, clean.packets,
        "probes change nothing downstream"
    );
    assert_eq!(sink.secure(), "12");
}

#[test]
fn sequence_and_timestamp_wrap_mid_tone() {
    let cfg = config(Codec::Pcmu, 8000, 0);
    let (x, spans) = keypad(8000, "7", 120.0, 100.0, 40.0, 8);
    // The tone covers packets 2..8: sequence numbers wrap from 65535 to 0 at packet 4 and
    // timestamps wrap at sample 800.
    assert!(spans[0].0 / 160 <= 2);
    let mut caller = Caller::new(&cfg, 13, 65532, u32::MAX - 799);
    let pkts = paced(caller.stream(&x));
    let (sink, st, delay) = run(cfg, &pkts);
    assert_eq!((st.lost, st.late, st.duplicate, st.resyncs), (0, 0, 0, 0));
    let rx = received(&sink, &cfg);
    assert!(rx.jumps.is_empty());
    assert_eq!(rx.lin.len(), x.len() + delay);
    assert_eq!(sink.secure(), "7");
    assert_nothing_decodable("wrap", &rx.lin, 8000);
}

#[test]
fn timestamp_jumps_forward_and_backward() {
    let cfg = config(Codec::Pcmu, 8000, 0);
    let x = vec![500i16; 160 * 30];
    let mut caller = Caller::new(&cfg, 14, 1, 0);
    let mut pkts = caller.stream(&x[..160 * 10]);
    // A 100 ms gap (within max_fill_ms): filled with five silence packets.
    caller.ts += 800;
    pkts.extend(caller.stream(&x[..160 * 10]));
    // 2 s of DTX: a resync, our timestamps jump by the same, no fill.
    caller.ts += 16_000;
    pkts.extend(caller.stream(&x[..160 * 10]));
    // Back by 5 s: a resync, our timestamps carry on.
    caller.ts = caller.ts.wrapping_sub(40_000);
    pkts.extend(caller.stream(&x[..160 * 10]));
    let (sink, st, _) = run(cfg, &paced(pkts));
    assert_eq!(st.resyncs, 2);
    assert_eq!(st.filled_frames, 5 + 1); // the gap, and the drain at finish
    assert_eq!(
        sink.stream,
        [
            StreamEvent::FirstPacket,
            StreamEvent::Resync,
            StreamEvent::Resync
        ]
    );
    let rx = received(&sink, &cfg);
    // Packets: 10, 5 fill, 10, then the DTX jump at index 25; the backward jump at 35 is
    // invisible downstream.
    assert_eq!(rx.jumps, [(25, 16_000)]);
    let markers: Vec<usize> = (0..rx.markers.len()).filter(|&i| rx.markers[i]).collect();
    assert_eq!(markers, [0, 25, 35]);
    assert_eq!((st.lost, st.late), (0, 0));
}

#[test]
fn ssrc_change_mid_call_keeps_one_output_stream() {
    let cfg = config(Codec::Pcmu, 8000, 0);
    let (a, _) = keypad(8000, "24", 70.0, 80.0, 100.0, 15);
    let (b, _) = keypad(8000, "68", 70.0, 80.0, 100.0, 16);
    let mut first = Caller::new(&cfg, 0xAAAA, 300, 1234);
    let mut second = Caller::new(&cfg, 0xBBBB, 40_000, 3_000_000_000);
    let mut pkts = first.stream(&a);
    let switch = pkts.len();
    pkts.extend(second.stream(&b));
    let (sink, st, delay) = run(cfg, &paced(pkts));
    assert_eq!(st.ssrc_changes, 1);
    assert_eq!((st.lost, st.late, st.resyncs), (0, 0, 0));
    assert_eq!(
        sink.stream,
        [StreamEvent::FirstPacket, StreamEvent::SsrcChanged]
    );
    let rx = received(&sink, &cfg);
    assert!(rx.jumps.is_empty(), "{:?}", rx.jumps);
    assert!(
        rx.markers[switch],
        "first packet of the new source is marked"
    );
    assert_eq!(rx.lin.len(), a.len() + b.len() + delay);
    assert_eq!(sink.secure(), "2468");
    assert_nothing_decodable("ssrc change", &rx.lin, 8000);
}

/// A far-off sequence number is believed once its successor follows (a sender restarting
/// its numbering: a resync, not 1000 losses); a lone stray one is dropped.
#[test]
fn sequence_jump_is_a_resync_and_a_stray_packet_is_ignored() {
    let cfg = config(Codec::Pcmu, 8000, 0);
    let x = vec![700i16; 160];
    let mut caller = Caller::new(&cfg, 22, 100, 0);
    let mut pkts: Vec<Vec<u8>> = (0..10).map(|_| caller.audio(&x, false)).collect();
    // A stray packet far ahead, then the stream goes on as before.
    pkts.push(rtp(
        0,
        false,
        30_000,
        caller.ts,
        22,
        &encode(Codec::Pcmu, &x),
    ));
    pkts.extend((0..10).map(|_| caller.audio(&x, false)));
    // The sender restarts its numbering; its clock runs on.
    caller.seq = caller.seq.wrapping_add(1000);
    pkts.extend((0..10).map(|_| caller.audio(&x, false)));
    let (sink, st, delay) = run(cfg, &paced(pkts));
    assert_eq!((st.resyncs, st.lost, st.late), (1, 0, 1));
    assert_eq!(sink.stream, [StreamEvent::FirstPacket, StreamEvent::Resync]);
    let rx = received(&sink, &cfg);
    assert!(rx.jumps.is_empty());
    assert_eq!(rx.lin.len(), 30 * 160 + delay);
    let markers: Vec<usize> = (0..rx.markers.len()).filter(|&i| rx.markers[i]).collect();
    assert_eq!(markers, [0, 20]);
}

/// Events 16 and up (flash, line signals) are consumed: no digit, nothing forwarded, and the
/// audio around them is not silenced.
#[test]
fn events_above_15_are_consumed_and_ignored() {
    let cfg = config(Codec::Pcmu, 8000, 0);
    let x = vec![900i16; 160];
    let mut caller = Caller::new(&cfg, 23, 0, 0);
    let mut pkts = Vec::new();
    for i in 0..20 {
        if i == 5 {
            let ets = caller.ts;
            for (end, dur) in [(false, 160), (true, 320), (true, 320)] {
                pkts.push(caller.event(ets, 16, end, dur, false));
            }
        }
        pkts.push(caller.audio(&x, false));
    }
    let (sink, st, _) = run(cfg, &paced(pkts));
    assert_eq!(st.telephone_event_packets, 3);
    assert_eq!(
        (st.digits_from_events, st.lost, st.filled_frames),
        (0, 0, 1)
    );
    assert!(sink.log.secure.is_empty());
    let rx = received(&sink, &cfg);
    assert!(rx.jumps.is_empty());
    let silence = silence_linear(Codec::Pcmu);
    assert!(sink
        .audio
        .iter()
        .flat_map(|(_, s)| s)
        .all(|&s| s != silence));
}

#[test]
fn marker_bits_are_forwarded() {
    let cfg = config(Codec::Pcma, 8000, 8);
    let x = vec![300i16; 160];
    let mut caller = Caller::new(&cfg, 17, 0, 0);
    let pkts: Vec<_> = (0..40)
        .map(|i| caller.audio(&x, i == 0 || i == 30))
        .collect();
    let (sink, _, _) = run(cfg, &paced(pkts));
    let rx = received(&sink, &cfg);
    let markers: Vec<usize> = (0..rx.markers.len()).filter(|&i| rx.markers[i]).collect();
    assert_eq!(markers, [0, 30]);
}

#[test]
fn malformed_packets_are_counted_and_dropped() {
    let cfg = config(Codec::Pcmu, 8000, 0);
    let mut caller = Caller::new(&cfg, 18, 0, 0);
    let good = caller.audio(&[100; 160], false);
    let mut bad: Vec<Vec<u8>> = vec![
        vec![],
        good[..11].to_vec(),
        {
            let mut p = good.clone();
            p[0] = 0x40; // version 1
            p
        },
        {
            let mut p = good.clone();
            p[0] |= 0x20; // padding longer than the payload
            *p.last_mut().unwrap() = 200;
            p
        },
        {
            let mut p = good[..20].to_vec();
            p[0] |= 0x0F; // 15 CSRCs in 20 bytes
            p
        },
        {
            let mut p = good[..20].to_vec();
            p[0] |= 0x10; // extension longer than the packet
            p[14] = 0xFF;
            p
        },
        rtp(0, false, 1, 160, 18, &[]),            // empty audio
        rtp(0, false, 1, 160, 18, &[0x55; 1601]),  // longer than 200 ms
        rtp(TE_PT, false, 1, 160, 18, &[1, 2, 3]), // short telephone-event
    ];
    let n_bad = bad.len() as u64;
    // RTCP on the RTP port: SR, RR, SDES, BYE, APP.
    for pt in 200..=204u8 {
        let mut p = vec![0x80, pt, 0, 6];
        p.extend([0u8; 24]);
        bad.push(p);
    }
    let mut input = vec![(good, 0)];
    input.extend(bad.into_iter().map(|p| (p, 1000)));
    // The stream goes on.
    for i in 1..10u64 {
        input.push((caller.audio(&[100; 160], false), i * FRAME_US));
    }
    let (sink, st, _) = run(cfg, &input);
    assert_eq!(st.malformed, n_bad);
    assert_eq!(st.unknown_pt, 5);
    assert_eq!(st.audio_frames, 10);
    assert_eq!(
        (st.lost, st.late, st.resyncs, st.ssrc_changes),
        (0, 0, 0, 0)
    );
    assert!(received(&sink, &cfg).jumps.is_empty());
}

/// 20,000 random datagrams and mutated copies of valid packets: no panic, everything out is
/// still one well-formed stream with nothing decodable in it, and a stream afterwards works.
#[test]
fn random_and_mutated_packets_never_break_the_leg() {
    let cfg = config(Codec::Pcmu, 8000, 0);
    // Before the noise: keys as telephone-events with the tone in band as well.
    let (mut input, _, _) = te_call("159", true, 3, 10);
    let part1: Vec<Vec<u8>> = input.iter().map(|(p, _)| p.clone()).collect();
    let (b, _) = keypad(8000, "0#", 70.0, 80.0, 100.0, 20);
    let mut rng = Rng::new(0xF022);
    let mut t = input.last().unwrap().1 + FRAME_US;
    for i in 0..20_000 {
        let p = if i % 2 == 0 {
            let n = (rng.next_u64() % 300) as usize;
            let mut p: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            if n > 2 && i % 4 == 0 {
                // Looks like RTP v2 with one of our payload types.
                p[0] = 0x80 | (p[0] & 0x3F);
                p[1] = (p[1] & 0x80) | [0, TE_PT][(i / 4) % 2];
            }
            p
        } else {
            let mut p = part1[(rng.next_u64() % part1.len() as u64) as usize].clone();
            for _ in 0..1 + rng.next_u64() % 4 {
                let k = (rng.next_u64() % p.len() as u64) as usize;
                p[k] ^= 1 << (rng.next_u64() % 8);
            }
            if rng.next_u64().is_multiple_of(4) {
                p.truncate((rng.next_u64() % p.len() as u64) as usize);
            }
            p
        };
        input.push((p, t));
        t += 1 + rng.next_u64() % 500;
    }
    // Then the same source starts over (new numbering and clock) with in-band keys.
    let mut caller = Caller::new(&cfg, 0xE4E4, 5000, 0);
    for p in caller.stream(&b) {
        input.push((p, t));
        t += FRAME_US;
    }
    let mut leg = CallerLeg::new(cfg, ChannelId(0)).unwrap();
    let mut sink = Sink::default();
    drive(&mut leg, &input, &mut sink);
    let st = leg.stats();
    assert_eq!(st.packets_in, input.len() as u64);
    assert!(
        st.malformed > 1000 && st.telephone_event_packets > 0,
        "{st:?}"
    );
    let rx = received(&sink, &cfg);
    assert_nothing_decodable("fuzz", &rx.lin, 8000);
    let secure = sink.secure();
    assert!(secure.starts_with("159"), "before the noise");
    assert!(secure.ends_with("0#"), "after the noise");
    // The same noise through an L16 leg (odd lengths, other sizes).
    let cfg16 = config(Codec::Pcm16, 16_000, 0);
    let mut leg = CallerLeg::new(cfg16, ChannelId(1)).unwrap();
    let mut sink = Sink::default();
    drive(&mut leg, &input, &mut sink);
    received(&sink, &cfg16);
}

/// State-machine fuzz: 20,000 well-formed packets with random sequence steps (reordering,
/// loss, duplicates, restarts), two sources, random timestamp steps (gaps, DTX, going
/// back), audio, telephone-events (random codes, ends, durations) and other payload types,
/// random arrival times and capture-window calls. Whatever happens, the output is one
/// contiguous stream and the sinks get exactly the downstream audio.
#[test]
fn random_valid_packet_sequences_keep_the_output_whole() {
    for (codec, rate, seed) in [(Codec::Pcmu, 8000, 1u64), (Codec::Pcm16, 16_000, 2)] {
        let cfg = LegConfig {
            reorder_window: 3,
            ..config(codec, rate, 0)
        };
        let mut rng = Rng::new(0x5EED_0000 + seed);
        let mut leg = CallerLeg::new(cfg, ChannelId(0)).unwrap();
        let mut sink = Sink::default();
        let (mut seq, mut ts) = ([0u16, 40_000], [0u32, 1 << 31]);
        let mut t = 0u64;
        let frame = rate / 50;
        for i in 0..20_000 {
            let r = rng.next_u64();
            let src = usize::from(r.is_multiple_of(50));
            let ssrc = [0xA, 0xB][src];
            let step: i32 = match r % 20 {
                0 => -(((r >> 8) % 120) as i32),
                1 => ((r >> 8) % 150) as i32,
                2 => 0,
                3 if r % 1000 == 3 => 20_000,
                _ => 1,
            };
            seq[src] = seq[src].wrapping_add(step as u16);
            let tstep: i64 = match (r >> 16) % 30 {
                0 => -(((r >> 24) % 20_000) as i64),
                1 => ((r >> 24) % 50_000) as i64,
                2 => 0,
                _ => frame as i64,
            };
            ts[src] = ts[src].wrapping_add(tstep as u32);
            let kind = (r >> 40) % 10;
            let pkt = if kind < 7 {
                let n = [frame / 2, frame, frame * 2][((r >> 44) % 3) as usize] as usize;
                let x: Vec<i16> = (0..n).map(|_| (rng.next_u64() % 2000) as i16).collect();
                rtp(
                    0,
                    r >> 50 & 1 == 1,
                    seq[src],
                    ts[src],
                    ssrc,
                    &encode(codec, &x),
                )
            } else if kind < 9 {
                let code = ((r >> 44) % 20) as u8;
                let end = r >> 50 & 3 == 0;
                let dur = ((r >> 52) % 3000) as u16;
                let d = dur.to_be_bytes();
                let back = ((r >> 56) % 4) * frame as u64;
                let ets = ts[src].wrapping_sub(back as u32);
                rtp(
                    TE_PT,
                    false,
                    seq[src],
                    ets,
                    ssrc,
                    &[code, (end as u8) << 7, d[0], d[1]],
                )
            } else {
                rtp(13, false, seq[src], ts[src], ssrc, &[1])
            };
            t += (rng.next_u64() % 40_000) + 1;
            if let Some(d) = leg.poll_timeout() {
                if d <= t && i % 3 == 0 {
                    leg.handle_timeout(t, &mut sink);
                }
            }
            leg.handle_packet(&pkt, t, &mut sink);
            match i % 2000 {
                500 => leg.open_capture(Some(3), None, &mut sink),
                1500 => leg.close_capture(&mut sink),
                _ => {}
            }
        }
        leg.finish(&mut sink);
        assert_eq!(leg.poll_timeout(), None);
        let st = leg.stats();
        assert!(
            st.lost > 0 && st.late > 0 && st.duplicate > 0 && st.resyncs > 0,
            "{st:?}"
        );
        assert!(st.ssrc_changes > 0 && st.digits_from_events > 0, "{st:?}");
        let rx = received(&sink, &cfg);
        sink_audio(&sink, &rx, leg.delay(), rate);
    }
}

#[test]
fn unknown_payload_types_are_dropped_but_keep_their_sequence_numbers() {
    let cfg = config(Codec::Pcmu, 8000, 0);
    let mut caller = Caller::new(&cfg, 21, 0, 0);
    let mut pkts = Vec::new();
    for i in 0..31 {
        if i % 5 == 4 {
            // Comfort noise (PT 13) and a stray dynamic type in the same sequence space.
            let pt = if i % 10 == 4 { 13 } else { 96 };
            pkts.push(rtp(pt, false, caller.seq, caller.ts, 21, &[40]));
            caller.seq = caller.seq.wrapping_add(1);
            caller.ts = caller.ts.wrapping_add(160);
        } else {
            pkts.push(caller.audio(&[200; 160], false));
        }
    }
    let (sink, st, _) = run(cfg, &paced(pkts));
    assert_eq!(st.unknown_pt, 6);
    assert_eq!((st.lost, st.late, st.malformed), (0, 0, 0));
    assert_eq!(st.audio_frames, 25);
    let rx = received(&sink, &cfg);
    assert!(rx.jumps.is_empty());
    // Their time was filled with silence: 25 audio + 6 fill + drain.
    assert_eq!(rx.sizes.len(), 32);
}

/// A caller that sends RFC 4733 events. `with_tone`: it also keeps sending audio, with the
/// tone in it, during each event (some do). `end_packets` copies of the end packet, then
/// `gap` quiet packets. Returns the datagrams with arrival times, the input timeline length
/// in samples, and the event timestamps relative to the first packet.
fn te_call(
    keys: &str,
    with_tone: bool,
    end_packets: usize,
    gap: usize,
) -> (Vec<Datagram>, u64, Vec<u32>) {
    let cfg = config(Codec::Pcmu, 8000, 0);
    let mut caller = Caller::new(&cfg, 0xE4E4, 60_000, 4_000_000_000);
    let ts0 = caller.ts;
    let mut rng = Rng::new(4733);
    let mut noise = vec![0.0; 160];
    let mut out = Vec::new();
    let mut t = 0u64;
    let mut event_ts = Vec::new();
    let mut quiet = |caller: &mut Caller, out: &mut Vec<Datagram>, t: &mut u64, n: usize| {
        for _ in 0..n {
            noise.fill(0.0);
            add_white_noise(&mut noise, power_for_dbm0(-50.0), &mut rng);
            out.push((caller.audio(&to_i16(&noise), false), *t));
            *t += FRAME_US;
        }
    };
    quiet(&mut caller, &mut out, &mut t, 10);
    for (i, k) in keys.chars().enumerate() {
        let code = "0123456789*#ABCD".find(k).unwrap() as u8;
        let ets = caller.ts;
        event_ts.push(ets.wrapping_sub(ts0));
        // 120 ms key press: start, updates every 50 ms, then the end packets.
        let mut tone = vec![0.0; 960];
        add_dtmf(
            &mut tone,
            8000,
            0,
            960,
            Digit::from_char(k).unwrap(),
            ToneSpec::level(-8.0),
            &mut Rng::new(i as u64),
        );
        let tone = to_i16(&tone);
        for slot in 0..6u16 {
            let at = t + slot as u64 * FRAME_US;
            if slot == 0 {
                out.push((caller.event(ets, code, false, 160, true), at));
            }
            if slot == 2 || slot == 5 {
                let dur = (slot + 1) * 160 - 80;
                out.push((caller.event(ets, code, false, dur, false), at));
                if i == 1 && slot == 2 {
                    // The network duplicates one update.
                    let again = out.last().unwrap().0.clone();
                    out.push((again, at + 300));
                }
            }
            if with_tone {
                let s = slot as usize * 160;
                out.push((caller.audio(&tone[s..s + 160], false), at + 100));
            }
        }
        t += 6 * FRAME_US;
        for e in 0..end_packets {
            out.push((
                caller.event(ets, code, true, 960, false),
                t + e as u64 * 1000,
            ));
        }
        if !with_tone {
            caller.ts = caller.ts.wrapping_add(960);
        }
        // The next audio starts after the event's time.
        quiet(&mut caller, &mut out, &mut t, gap);
    }
    let len = caller.ts.wrapping_sub(ts0) as u64;
    (out, len, event_ts)
}

fn digit_sources(log: &EventLog) -> Vec<DigitSource> {
    log.events
        .iter()
        .filter_map(|e| match e {
            Event::Digit { source, .. } => Some(*source),
            _ => None,
        })
        .collect()
}

#[test]
fn telephone_events_become_secure_digits_and_silence() {
    let keys = "4111";
    let (input, len, event_ts) = te_call(keys, false, 3, 10);
    let cfg = config(Codec::Pcmu, 8000, 0);
    let (sink, st, delay) = run(cfg, &input);
    assert_eq!(sink.secure(), keys, "each key exactly once");
    assert_eq!(st.digits_from_events, 4);
    assert_eq!(digit_sources(&sink.log), [DigitSource::TelephoneEvent; 4]);
    // 3 event packets + 3 ends per key; the duplicated update is dropped before that.
    assert_eq!(st.telephone_event_packets, 4 * 6);
    assert_eq!(st.duplicate, 1);
    assert_eq!((st.lost, st.late, st.resyncs), (0, 0, 0));
    let rx = received(&sink, &cfg); // audio payload type only: no event forwarded
    assert!(rx.jumps.is_empty(), "{:?}", rx.jumps);
    assert_eq!(
        rx.lin.len() as u64,
        len + delay as u64,
        "event time was filled"
    );
    assert_eq!(st.filled_frames, 4 * 6 + 1);
    let audio = sink_audio(&sink, &rx, delay, 8000);
    let silence = silence_linear(Codec::Pcmu);
    for &e in &event_ts {
        let e = e as usize;
        assert!(audio[e..e + 960].iter().all(|&s| s == silence));
    }
    // Digits are placed at their events' times.
    let starts: Vec<f64> = sink
        .log
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Digit { start_ms, .. } => Some(*start_ms),
            _ => None,
        })
        .collect();
    let want: Vec<f64> = event_ts.iter().map(|&e| e as f64 / 8.0).collect();
    assert_eq!(starts, want);
}

#[test]
fn telephone_events_with_in_band_tone_are_masked_and_counted_once() {
    let keys = "9#";
    let (input, len, _) = te_call(keys, true, 3, 10);
    let cfg = config(Codec::Pcmu, 8000, 0);
    let (sink, st, delay) = run(cfg, &input);
    assert_eq!(sink.secure(), keys);
    assert_eq!(digit_sources(&sink.log), [DigitSource::TelephoneEvent; 2]);
    let rx = received(&sink, &cfg);
    assert!(rx.jumps.is_empty());
    assert_eq!(rx.lin.len() as u64, len + delay as u64);
    assert_nothing_decodable("events with tone", &rx.lin, 8000);
    // The input really had the tones in band.
    let tones: Vec<i16> = input
        .iter()
        .filter_map(|(p, _)| {
            let p = RtpPacket::parse(p).unwrap();
            (p.payload_type() == 0).then(|| decode(Codec::Pcmu, p.payload()))
        })
        .flatten()
        .collect();
    assert_eq!(
        digits_string(&detect(&tones, &DetectorConfig::default())),
        keys
    );
    assert!(st.late > 0, "audio inside filled event time is dropped");
}

/// A sender that forwards each key's tone in band and also converts it to telephone-events,
/// as a media gateway upstream does once its own detector has the key: the events begin
/// `lag` frames after the tone. The leg silences the audio from the event on; the tone's
/// head before it reaches the in-band detector.
fn tone_then_late_events(keys: &str, lag: usize) -> Vec<Datagram> {
    let cfg = config(Codec::Pcmu, 8000, 0);
    let mut caller = Caller::new(&cfg, 0x1A7E, 9_000, 70_000);
    let quiet = vec![0i16; 160];
    let mut out = Vec::new();
    let mut t = 0u64;
    let frame = |p: Vec<u8>, t: &mut u64, out: &mut Vec<Datagram>| {
        out.push((p, *t));
        *t += FRAME_US;
    };
    for _ in 0..10 {
        frame(caller.audio(&quiet, false), &mut t, &mut out);
    }
    for (i, k) in keys.chars().enumerate() {
        let code = "0123456789*#ABCD".find(k).unwrap() as u8;
        let mut tone = vec![0.0; 8 * 160];
        add_dtmf(
            &mut tone,
            8000,
            0,
            8 * 160,
            Digit::from_char(k).unwrap(),
            ToneSpec::level(-8.0),
            &mut Rng::new(40 + i as u64),
        );
        let tone = to_i16(&tone);
        let mut ets = 0;
        for (slot, chunk) in tone.chunks(160).enumerate() {
            if slot == lag {
                ets = caller.ts;
                out.push((caller.event(ets, code, false, 160, true), t));
            } else if slot > lag && slot % 2 == 0 {
                let dur = ((slot - lag + 1) * 160) as u16;
                out.push((caller.event(ets, code, false, dur, false), t));
            }
            frame(caller.audio(chunk, false), &mut t, &mut out);
        }
        let dur = ((8 - lag) * 160) as u16;
        for _ in 0..3 {
            out.push((caller.event(ets, code, true, dur, false), t));
        }
        for _ in 0..10 {
            frame(caller.audio(&quiet, false), &mut t, &mut out);
        }
    }
    out
}

#[test]
fn a_key_sent_in_band_and_as_late_telephone_events_is_entered_once() {
    let keys = "4#5";
    // 40 ms: the in-band detector has declared the key before the first event packet.
    let (sink, st, _) = run(
        config(Codec::Pcmu, 8000, 0),
        &tone_then_late_events(keys, 2),
    );
    assert_eq!(st.digits_from_events, 3, "every event was read");
    let sources = digit_sources(&sink.log);
    assert!(
        sources.contains(&DigitSource::InBand),
        "the tone's head was long enough to be declared in band, so a second report was \
         possible: {sources:?}"
    );
    assert_eq!(sink.secure(), keys, "each key entered once: {sources:?}");
    assert_eq!(sources.len(), keys.len());
    let rx = received(&sink, &config(Codec::Pcmu, 8000, 0));
    assert!(rx.jumps.is_empty());
    assert_nothing_decodable("tone then late events", &rx.lin, 8000);
}

#[test]
fn telephone_event_whose_end_packets_are_lost_still_ends() {
    let (input, _, _) = te_call("37", false, 0, 30);
    let cfg = config(Codec::Pcmu, 8000, 0);
    let (sink, st, _) = run(cfg, &input);
    assert_eq!(sink.secure(), "37");
    assert_eq!(st.digits_from_events, 2);
    assert!(received(&sink, &cfg).jumps.is_empty());
    // Audio after the first event's expiry passes again (not silenced for good).
    let silence = silence_linear(Codec::Pcmu);
    let audio: Vec<i16> = sink.audio.iter().flat_map(|(_, s)| s.clone()).collect();
    let tail = &audio[audio.len() - 800..];
    assert!(tail.iter().any(|&s| s != silence));
}

/// A sender that restarts its clock (same SSRC, numbering goes on) may give the next key
/// press an older timestamp than the last: it is still a new key press.
#[test]
fn telephone_event_after_a_timestamp_restart_is_a_new_digit() {
    let cfg = config(Codec::Pcmu, 8000, 0);
    let mut caller = Caller::new(&cfg, 25, 0, 3_000_000);
    let x = vec![400i16; 160];
    let mut pkts = Vec::new();
    for key in [1u8, 2] {
        pkts.extend((0..5).map(|_| caller.audio(&x, false)));
        let ets = caller.ts;
        pkts.push(caller.event(ets, key, false, 160, true));
        for _ in 0..3 {
            pkts.push(caller.event(ets, key, true, 320, false));
        }
        caller.ts = caller.ts.wrapping_add(320);
        pkts.extend((0..5).map(|_| caller.audio(&x, false)));
        // The clock restarts a million samples back.
        caller.ts = caller.ts.wrapping_sub(1_000_000);
    }
    let (sink, st, _) = run(cfg, &paced(pkts));
    assert_eq!(sink.secure(), "12");
    assert_eq!(st.resyncs, 1);
    assert!(received(&sink, &cfg).jumps.is_empty());
}

#[test]
fn explicit_capture_window_closes_by_digit_count() {
    let (input, _, event_ts) = te_call("123456", false, 3, 10);
    let cfg = LegConfig {
        pipeline: tonewall::pipeline::PipelineConfig {
            capture: CaptureConfig {
                auto_open: false,
                ..CaptureConfig::default()
            },
            ..Default::default()
        },
        ..config(Codec::Pcmu, 8000, 0)
    };
    let mut leg = CallerLeg::new(cfg, ChannelId(5)).unwrap();
    let mut sink = Sink::default();
    leg.handle_packet(&input[0].0, 0, &mut sink);
    assert!(!leg.capture_open());
    leg.open_capture(Some(4), Some(None), &mut sink);
    assert!(leg.capture_open());
    drive(&mut leg, &input[1..], &mut sink);
    assert!(!leg.capture_open());
    let opened = sink.log.events.iter().find_map(|e| match e {
        Event::CaptureOpened { reason, window, .. } => Some((*reason, *window)),
        _ => None,
    });
    assert_eq!(opened, Some((OpenReason::Explicit, 0)));
    let closed: Vec<_> = sink
        .log
        .events
        .iter()
        .filter_map(|e| match e {
            Event::CaptureClosed {
                reason,
                digit_count,
                at_sample,
                ..
            } => Some((*reason, *digit_count, *at_sample)),
            _ => None,
        })
        .collect();
    // Closed after the fourth key's tone, at the end of its event's time.
    assert_eq!(
        closed,
        [(CloseReason::DigitCount, 4, event_ts[3] as u64 + 960)]
    );
    assert_eq!(sink.secure(), "123456");
    let windows: Vec<Option<u32>> = sink.log.secure.iter().map(|d| d.window).collect();
    assert_eq!(windows, [Some(0), Some(0), Some(0), Some(0), None, None]);
}

#[test]
fn finish_closes_an_open_window_and_drains_the_look_ahead() {
    let (input, len, _) = te_call("55", false, 3, 10);
    let cfg = config(Codec::Pcmu, 8000, 0);
    let mut leg = CallerLeg::new(cfg, ChannelId(6)).unwrap();
    let mut sink = Sink::default();
    leg.open_capture(None, Some(None), &mut sink);
    drive(&mut leg, &input, &mut sink);
    let closed = sink.log.events.iter().find_map(|e| match e {
        Event::CaptureClosed {
            reason,
            digit_count,
            ..
        } => Some((*reason, *digit_count)),
        _ => None,
    });
    assert_eq!(closed, Some((CloseReason::StreamEnded, 2)));
    assert!(matches!(
        sink.log.events.last(),
        Some(Event::RecordingResume { .. })
    ));
    let rx = received(&sink, &cfg);
    assert_eq!(rx.lin.len() as u64, len + leg.delay() as u64);
    let n = sink.packets.len();
    // After the end nothing more comes out.
    leg.finish(&mut sink);
    leg.handle_packet(&input[0].0, 10_000_000, &mut sink);
    assert_eq!(sink.packets.len(), n);
    assert_eq!(leg.poll_timeout(), None);
}

#[test]
fn invalid_configurations_are_refused() {
    let bad = [
        config(Codec::Pcmu, 16_000, 0),
        config(Codec::Pcm16, 4000, 96),
        config(Codec::Pcmu, 8000, 128),
        config(Codec::Pcmu, 8000, 72),
        LegConfig {
            telephone_event_pt: Some(0),
            ..config(Codec::Pcmu, 8000, 0)
        },
        LegConfig {
            fill_ms: 0,
            ..config(Codec::Pcmu, 8000, 0)
        },
        LegConfig {
            reorder_window: 1000,
            ..config(Codec::Pcmu, 8000, 0)
        },
        LegConfig {
            pipeline: tonewall::pipeline::PipelineConfig {
                lookahead_ms: 41,
                ..Default::default()
            },
            ..config(Codec::Pcmu, 8000, 0)
        },
    ];
    for cfg in bad {
        assert!(CallerLeg::new(cfg, ChannelId(0)).is_err(), "{cfg:?}");
    }
    assert!(CallerLeg::new(LegConfig::default(), ChannelId(0)).is_ok());
}
