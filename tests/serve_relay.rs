//! The live relay end to end through the real `tonewall serve` binary on 127.0.0.1: a
//! generated PCMU call with key presses, then one test per media fault (loss, reordering,
//! duplicates, sequence wrap, timestamp jumps, SSRC change, marker bits, malformed and
//! unknown packets, RFC 4733 events, a caller who stops sending). Each checks that
//! downstream got a continuous RTP stream of the call's codec only, that neither multimon-ng
//! nor our own detector at its most sensitive finds a digit in it, and that the gateway
//! still runs.

mod common;
mod gateway;

use std::time::Duration;

use gateway::{build, parse, send_all, te_payload, Gateway, Receiver, Rtp};
use tonewall::codec::{linear_to_ulaw, ulaw_to_linear};
use tonewall::dtmf::{DetectorConfig, Digit};
use tonewall::signal::{add_dtmf, add_white_noise, power_for_dbm0, to_i16, Rng, ToneSpec};

const SSRC: u32 = 0x1234_5678;

/// Packets the gateway adds when a call ends: the 20 ms look-ahead still in the delay line
/// goes out as one last (masked) packet.
const FLUSH: usize = 1;

/// `digits` as 70 ms tones 100 ms apart after 300 ms of quiet line noise, then 300 ms more,
/// as 8 kHz PCMU packets of 20 ms (seq from `seq0`, ts from `ts0`).
fn pcmu_call(digits: &str, seq0: u16, ts0: u32) -> (Vec<Vec<u8>>, Vec<i16>) {
    let per = 1360; // 170 ms per digit
    let n = 2400 + per * digits.len() + 2400;
    let n = n.div_ceil(160) * 160;
    let mut x = vec![0.0; n];
    let mut rng = Rng::new(7);
    add_white_noise(&mut x, power_for_dbm0(-55.0), &mut rng);
    for (i, c) in digits.chars().enumerate() {
        let d = Digit::from_char(c).unwrap();
        add_dtmf(
            &mut x,
            8000,
            2400 + i * per,
            560,
            d,
            ToneSpec::level(-8.0),
            &mut rng,
        );
    }
    let lin = to_i16(&x);
    let packets = lin
        .chunks(160)
        .enumerate()
        .map(|(i, c)| {
            let pl: Vec<u8> = c.iter().map(|&s| linear_to_ulaw(s)).collect();
            build(
                0,
                seq0.wrapping_add(i as u16),
                ts0.wrapping_add(i as u32 * 160),
                SSRC,
                i == 0,
                &pl,
            )
        })
        .collect();
    (packets, lin)
}

struct Outcome {
    got: Vec<Rtp>,
    events: Vec<serde_json::Value>,
    log: String,
}

/// Create a call, send `packets` (2 ms apart), end the call, and return what came out.
fn run_call(name: &str, create_extra: &str, packets: &[Vec<u8>]) -> Outcome {
    let gw = Gateway::start(name, "[sinks]\n");
    let rx = Receiver::start(Duration::from_millis(700), Duration::from_secs(30));
    let created = gw.json(
        "POST",
        "/v1/calls",
        Some(&format!("{{\"downstream\":\"{}\"{create_extra}}}", rx.addr)),
    );
    let id = created["call_id"].as_str().unwrap().to_string();
    let caller: std::net::SocketAddr = created["caller_rtp"].as_str().unwrap().parse().unwrap();
    let ev = gateway::follow_events(
        gw.api,
        &format!("/v1/calls/{id}/events"),
        None,
        Duration::from_secs(30),
    );
    let _sock = send_all(packets, caller, Duration::from_millis(2));
    std::thread::sleep(Duration::from_millis(200));
    let end = gw.json("DELETE", &format!("/v1/calls/{id}"), None);
    assert_eq!(end["ended"], "api");
    let got: Vec<Rtp> = rx.join().iter().map(|p| parse(p)).collect();
    let events = ev.join().unwrap();
    Outcome {
        got,
        events,
        log: gw.log(),
    }
}

/// Downstream is one continuous PCMU stream: PT 0 only, one SSRC, sequence numbers without a
/// gap and timestamps advancing by each packet's length (except where `resync_ok`).
fn assert_continuous(got: &[Rtp], resync_ok: bool) {
    assert!(!got.is_empty(), "nothing arrived downstream");
    let ssrc = got[0].ssrc;
    for w in got.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        assert_eq!(b.pt, 0, "a non-audio packet went downstream");
        assert_eq!(b.ssrc, ssrc, "downstream SSRC changed");
        assert_eq!(
            b.seq,
            a.seq.wrapping_add(1),
            "hole in downstream sequence numbers"
        );
        if !(resync_ok && b.marker) {
            assert_eq!(
                b.ts,
                a.ts.wrapping_add(a.payload.len() as u32),
                "downstream timestamps not continuous at seq {}",
                b.seq
            );
        }
    }
}

fn decoded(got: &[Rtp]) -> Vec<i16> {
    got.iter()
        .flat_map(|p| p.payload.iter().map(|&b| ulaw_to_linear(b)))
        .collect()
}

/// Neither multimon-ng nor our detector at its most sensitive finds a digit.
fn assert_no_digit(x: &[i16], what: &str) {
    let ours = common::detect(x, &DetectorConfig::most_sensitive());
    assert!(
        ours.is_empty(),
        "{what}: our detector found {} digit(s) downstream",
        ours.len()
    );
    if let Some(m) = common::multimon_digits(x) {
        assert!(
            m.is_empty(),
            "{what}: multimon-ng decoded {} digit(s)",
            m.len()
        );
    }
}

fn count(events: &[serde_json::Value], kind: &str) -> usize {
    events.iter().filter(|e| e["event"] == kind).count()
}

fn check(o: &Outcome, digits: usize, resync_ok: bool, what: &str) {
    assert_continuous(&o.got, resync_ok);
    assert_no_digit(&decoded(&o.got), what);
    assert_eq!(
        count(&o.events, "digit"),
        digits,
        "{what}: digit events {:?}",
        o.events
    );
    assert_eq!(count(&o.events, "call_ended"), 1, "{what}: no call_ended");
    assert!(!o.log.contains("panicked"), "{what}: {}", o.log);
}

#[test]
fn clean_call_is_masked_and_captured() {
    let (p, input) = pcmu_call("4111", 1000, 5000);
    // The unmasked input does hold the digits (the check below can fail).
    assert_eq!(
        common::digits_string(&common::detect(&input, &DetectorConfig::default())),
        "4111"
    );
    let o = run_call("clean", "", &p);
    check(&o, 4, false, "clean");
    assert_eq!(o.got.len(), p.len() + FLUSH, "one packet out per packet in");
    assert!(count(&o.events, "tone_masked") >= 4);
    assert_eq!(count(&o.events, "capture_opened"), 1);
    assert_eq!(count(&o.events, "recording_pause"), 1);
    // Events carry no value: no "digit" field holding a key anywhere.
    for e in &o.events {
        assert!(e.get("digit").is_none() && e.get("value").is_none(), "{e}");
    }
}

#[test]
fn packet_loss_during_a_tone_is_concealed_with_silence() {
    let (mut p, _) = pcmu_call("5", 0, 0);
    // Drop two packets in the middle of the tone (tone: samples 2400..2960 = packets 15..18).
    p.remove(16);
    p.remove(16);
    let o = run_call("loss", "", &p);
    // What is left of the 70 ms tone is two pieces of 30 and 20 ms: both masked, neither
    // long enough to be reported as a digit under Q.24.
    check(&o, 0, false, "loss");
    assert!(count(&o.events, "tone_masked") >= 2);
    assert_eq!(o.got.len(), p.len() + 2 + FLUSH, "lost packets were filled");
}

#[test]
fn reordered_packets_are_put_back_in_order() {
    let (mut p, _) = pcmu_call("7", 0, 0);
    p.swap(16, 17);
    p.swap(20, 22);
    let o = run_call("reorder", "", &p);
    check(&o, 1, false, "reorder");
    assert_eq!(o.got.len(), p.len() + FLUSH);
}

#[test]
fn duplicates_are_dropped() {
    let (mut p, _) = pcmu_call("8", 0, 0);
    let d = p[17].clone();
    p.insert(18, d.clone());
    p.insert(25, d);
    let o = run_call("dup", "", &p);
    check(&o, 1, false, "dup");
    assert_eq!(o.got.len(), p.len() - 2 + FLUSH);
}

#[test]
fn sequence_wrap_mid_tone() {
    // Packet 16 (inside the tone) has sequence number 0.
    let (p, _) = pcmu_call("9", 65520, 4_294_967_000);
    let o = run_call("wrap", "", &p);
    check(&o, 1, false, "wrap");
    assert_eq!(o.got.len(), p.len() + FLUSH);
}

#[test]
fn timestamp_jumps_forward_and_backward() {
    let (mut p, _) = pcmu_call("12", 0, 0);
    // After the first digit, the sender's clock jumps 10 s ahead (DTX or a restart), and
    // later 5 s back.
    for (i, pkt) in p.iter_mut().enumerate() {
        let mut r = parse(pkt);
        if i >= 30 {
            r.ts = r.ts.wrapping_add(80_000);
        }
        if i >= 45 {
            r.ts = r.ts.wrapping_sub(40_000);
        }
        *pkt = build(0, r.seq, r.ts, r.ssrc, r.marker, &r.payload);
    }
    let o = run_call("tsjump", "", &p);
    check(&o, 2, true, "tsjump");
}

#[test]
fn ssrc_change_mid_call() {
    let (p1, _) = pcmu_call("3", 100, 1000);
    let (p2, _) = pcmu_call("6", 9000, 777_777);
    let p2: Vec<Vec<u8>> = p2
        .iter()
        .map(|pkt| {
            let r = parse(pkt);
            build(0, r.seq, r.ts, 0xCAFE_F00D, r.marker, &r.payload)
        })
        .collect();
    let all: Vec<Vec<u8>> = p1.into_iter().chain(p2).collect();
    let o = run_call("ssrc", "", &all);
    check(&o, 2, true, "ssrc");
    assert_eq!(count(&o.events, "ssrc_changed"), 1);
}

#[test]
fn marker_bits_do_not_disturb_the_stream() {
    let (p, _) = pcmu_call("0", 0, 0);
    let p: Vec<Vec<u8>> = p
        .iter()
        .enumerate()
        .map(|(i, pkt)| {
            let r = parse(pkt);
            build(0, r.seq, r.ts, r.ssrc, i % 5 == 0, &r.payload)
        })
        .collect();
    let o = run_call("marker", "", &p);
    check(&o, 1, true, "marker");
    assert_eq!(o.got.len(), p.len() + FLUSH);
}

#[test]
fn malformed_truncated_and_unknown_packets_are_dropped() {
    let (p, _) = pcmu_call("*", 0, 0);
    let mut all = Vec::new();
    let mut rng = Rng::new(3);
    for (i, pkt) in p.iter().enumerate() {
        all.push(pkt.clone());
        if i % 3 == 0 {
            // Truncated header, random junk, wrong version, an RTCP packet, an unknown PT.
            all.push(pkt[..7].to_vec());
            all.push(
                (0..(rng.next_u64() % 200) as usize)
                    .map(|_| rng.next_u64() as u8)
                    .collect(),
            );
            let mut v1 = pkt.clone();
            v1[0] = (v1[0] & 0x3f) | 0x40;
            all.push(v1);
            all.push(vec![0x80, 200, 0, 6, 0, 0, 0, 1, 0, 0, 0, 0]);
            let r = parse(pkt);
            all.push(build(13, r.seq, r.ts, r.ssrc, false, &[0x40]));
        }
    }
    let o = run_call("malformed", "", &all);
    check(&o, 1, false, "malformed");
    assert_eq!(o.got.len(), p.len() + FLUSH);
}

#[test]
fn telephone_events_are_consumed_and_filled_with_silence() {
    // Audio, then a '5' as RFC 4733 events (start, updates every 20 ms, three end packets
    // with the same sequence number, one duplicated update), then audio again. The sender
    // stops audio during the event, as RFC 4733 senders usually do.
    let (audio, _) = pcmu_call("", 0, 0);
    let mut p: Vec<Vec<u8>> = audio[..20].to_vec();
    let mut seq = 20u16;
    let ev_ts = 20 * 160;
    for k in 0..8u16 {
        let dur = (k + 1) * 160;
        let end = k == 7;
        let pkt = build(101, seq, ev_ts, SSRC, k == 0, &te_payload(5, end, 10, dur));
        p.push(pkt.clone());
        if end {
            p.push(pkt.clone());
            p.push(pkt);
        } else if k == 3 {
            p.push(pkt);
        }
        seq += 1;
    }
    for (i, a) in audio[28..].iter().enumerate() {
        let r = parse(a);
        p.push(build(
            0,
            seq + i as u16,
            ev_ts + 1280 + i as u32 * 160,
            SSRC,
            i == 0,
            &r.payload,
        ));
    }
    let o = run_call("te", "", &p);
    check(&o, 1, false, "te");
    // The 160 ms the event covered became 8 silence packets.
    assert_eq!(o.got.len(), 20 + 8 + (audio.len() - 28) + FLUSH);
    let ev: Vec<_> = o.events.iter().filter(|e| e["event"] == "digit").collect();
    assert_eq!(ev[0]["source"], "telephone_event");
}

#[test]
fn a_caller_who_stops_sending_times_out_and_the_window_closes() {
    let gw = Gateway::start("timeout", "[sinks]\n");
    let rx = Receiver::start(Duration::from_millis(700), Duration::from_secs(20));
    let created = gw.json(
        "POST",
        "/v1/calls",
        Some(&format!(
            "{{\"downstream\":\"{}\",\"media_timeout_ms\":600}}",
            rx.addr
        )),
    );
    let id = created["call_id"].as_str().unwrap().to_string();
    let caller: std::net::SocketAddr = created["caller_rtp"].as_str().unwrap().parse().unwrap();
    let ev = gateway::follow_events(
        gw.api,
        &format!("/v1/calls/{id}/events"),
        None,
        Duration::from_secs(20),
    );
    // Two digits of a card number, then the caller hangs up mid-entry.
    let (p, _) = pcmu_call("41", 0, 0);
    let cut = p.len() - 15;
    let _s = send_all(&p[..cut], caller, Duration::from_millis(2));
    let events = ev.join().unwrap();
    let ended: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "call_ended")
        .collect();
    assert_eq!(ended.len(), 1, "{events:?}");
    assert_eq!(ended[0]["reason"], "media_timeout");
    let closed: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "capture_closed")
        .collect();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0]["reason"], "stream_ended");
    assert_eq!(closed[0]["digit_count"], 2);
    assert_eq!(count(&events, "recording_resume"), 1);
    // The call is gone from the registry.
    let (code, _) = gw.http("GET", &format!("/v1/calls/{id}"), None);
    assert_eq!(code, 404);
    let got: Vec<Rtp> = rx.join().iter().map(|p| parse(p)).collect();
    assert_no_digit(&decoded(&got), "timeout");
}

#[test]
fn a_flooding_caller_does_not_hold_up_another_call_on_the_same_media_thread() {
    // One media thread carries both calls, so the flood and the honest call compete for it.
    let gw = Gateway::start("flood", "[server]\nmedia_threads = 1\n[sinks]\n");
    let create = |down: std::net::SocketAddr| {
        let c = gw.json(
            "POST",
            "/v1/calls",
            Some(&format!("{{\"downstream\":\"{down}\"}}")),
        );
        let caller: std::net::SocketAddr = c["caller_rtp"].as_str().unwrap().parse().unwrap();
        (c["call_id"].as_str().unwrap().to_string(), caller)
    };
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (flood_id, flood_to) = create(sink.local_addr().unwrap());
    let down = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    down.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let (id, to) = create(down.local_addr().unwrap());
    let ev = gateway::follow_events(
        gw.api,
        &format!("/v1/calls/{id}/events"),
        None,
        Duration::from_secs(30),
    );

    // The flood: back-to-back PCMU packets (each one decoded, detected and masked) for as
    // long as the honest call lasts.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut n: u32 = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let p = build(
                    0,
                    n as u16,
                    n.wrapping_mul(160),
                    0xf100d,
                    false,
                    &[0xFF; 160],
                );
                let _ = s.send_to(&p, flood_to);
                n += 1;
            }
            n
        })
    };
    // The honest call, in real time, timed packet by packet: the k-th masked packet out is
    // the k-th in.
    let (packets, _) = pcmu_call("1234", 0, 0);
    let receiver = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok(n) = down.recv(&mut buf) {
            got.push((std::time::Instant::now(), buf[..n].to_vec()));
        }
        got
    });
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let t0 = std::time::Instant::now();
    let mut sent_at = Vec::new();
    for (k, p) in packets.iter().enumerate() {
        let due = t0 + Duration::from_millis(20 * k as u64);
        std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
        sent_at.push(std::time::Instant::now());
        s.send_to(p, to).unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let flooded = flood.join().unwrap();
    let end = gw.json("DELETE", &format!("/v1/calls/{id}"), None);
    let flood_end = gw.json("DELETE", &format!("/v1/calls/{flood_id}"), None);
    let got = receiver.join().unwrap();
    let events = ev.join().unwrap();

    let worst = got
        .iter()
        .zip(&sent_at)
        .map(|((at, _), sent)| at.duration_since(*sent))
        .max()
        .unwrap();
    println!(
        "flood: {flooded} packets sent, {} taken by the gateway; honest call: {} of {} packets back, worst latency {:.2} ms",
        flood_end["stats"]["packets_in"],
        got.len(),
        packets.len(),
        worst.as_secs_f64() * 1000.0
    );
    assert!(
        flood_end["stats"]["packets_in"].as_u64().unwrap() > 2 * packets.len() as u64,
        "the flood did not reach the gateway: {flood_end}"
    );
    // A slow CI machine may delay a packet, but a starved call would wait for the whole
    // flood (seconds).
    assert!(
        worst < Duration::from_millis(100),
        "worst latency {worst:?}"
    );
    let o = Outcome {
        got: got.iter().map(|(_, p)| parse(p)).collect(),
        events,
        log: gw.log(),
    };
    check(&o, 4, false, "flooded neighbour");
    assert_eq!(o.got.len(), packets.len() + FLUSH, "{end}");
}

/// The return path placed by its RTP timestamps in the recording: the agent side sends
/// 400 ms of audio, stays silent for a second without sending (DTX, as Opus and VAD
/// endpoints do: the timestamps jump), then 400 ms more. The second burst must be recorded a
/// second after the first ends, where the caller heard it, not straight after it (which is
/// where counting samples put it, so each pause pulled the agent's channel earlier). The
/// caller talks throughout, in real time, both directions 20 ms apart.
#[test]
fn return_audio_after_a_silence_gap_stays_aligned_in_the_recording() {
    let gw = Gateway::start("relay-return-gap", "");
    let rx = Receiver::start(Duration::from_millis(700), Duration::from_secs(30));
    let created = gw.json(
        "POST",
        "/v1/calls",
        Some(&format!("{{\"downstream\":\"{}\"}}", rx.addr)),
    );
    let id = created["call_id"].as_str().unwrap().to_string();
    let caller: std::net::SocketAddr = created["caller_rtp"].as_str().unwrap().parse().unwrap();
    let down: std::net::SocketAddr = created["downstream_rtp"].as_str().unwrap().parse().unwrap();
    // Caller: 2.4 s at a quiet constant level. Agent: a constant level (+3000, then -3000)
    // in its two bursts, starting 400 ms in: frames 20..40 and 90..110 of the caller's 120.
    let frames = 120;
    let agent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let phone = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let level = |v: i16| vec![linear_to_ulaw(v); 160];
    let t0 = std::time::Instant::now();
    let mut k_agent = 0u32;
    for k in 0..frames {
        let due = t0 + Duration::from_millis(20 * k as u64);
        std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
        let p = build(0, k as u16, k as u32 * 160, SSRC, k == 0, &level(40));
        phone.send_to(&p, caller).unwrap();
        let burst = match k {
            20..40 => Some(3000),
            90..110 => Some(-3000),
            _ => None,
        };
        if let Some(v) = burst {
            // The agent's clock runs through the silence: timestamp from the frame index.
            let p = build(
                0,
                k_agent as u16,
                k as u32 * 160,
                0xa9e7,
                k == 20,
                &level(v),
            );
            agent.send_to(&p, down).unwrap();
            k_agent += 1;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let end = gw.json("DELETE", &format!("/v1/calls/{id}"), None);
    assert_eq!(end["ended"], "api");
    assert!(end["return_packets"].as_u64().unwrap() >= 40, "{end}");
    drop(rx.join());
    let (rate, ch, rec) = gateway::read_wav(&gw.dir.join(format!("recordings/{id}.wav")));
    assert_eq!((rate, ch), (8000, 2));
    let right: Vec<i16> = rec.iter().skip(1).step_by(2).copied().collect();
    let first = |pred: &dyn Fn(i16) -> bool| right.iter().position(|&v| pred(v));
    let last = |pred: &dyn Fn(i16) -> bool| right.iter().rposition(|&v| pred(v));
    let a0 = first(&|v| v > 2000).expect("first burst recorded");
    let a1 = last(&|v| v > 2000).unwrap();
    let b0 = first(&|v| v < -2000).expect("second burst recorded");
    let gap_ms = (b0 - a1 - 1) as f64 / 8.0;
    println!(
        "return path: first burst {:.1} ms long at {:.1} ms, second at {:.1} ms: gap {gap_ms:.1} ms (sent 1000 ms apart)",
        (a1 + 1 - a0) as f64 / 8.0,
        a0 as f64 / 8.0,
        b0 as f64 / 8.0
    );
    assert_eq!(a1 + 1 - a0, 3200, "first burst whole and in one piece");
    assert!(
        (gap_ms - 1000.0).abs() <= 1.0,
        "the silence between the bursts is {gap_ms:.1} ms in the recording, not 1000"
    );
    // Where the agent's audio sits against the caller's: beside the caller audio that was
    // leaving the gateway when it came back (the caller's frame 20, less the look-ahead
    // still held), within a few frames.
    let want_ms = 400.0;
    assert!(
        (a0 as f64 / 8.0 - want_ms).abs() <= 60.0,
        "first burst at {:.1} ms, caller timeline says about {want_ms:.1} ms",
        a0 as f64 / 8.0
    );
}

/// Two UDP sockets on an even port and the next one (RTP and its RTCP).
fn socket_pair() -> (std::net::UdpSocket, std::net::UdpSocket) {
    loop {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = a.local_addr().unwrap().port();
        if p.is_multiple_of(2) {
            if let Ok(b) = std::net::UdpSocket::bind(("127.0.0.1", p + 1)) {
                return (a, b);
            }
        }
    }
}

/// Only the call's peers are heard. The caller's side latches onto the first RTP source
/// and takes RTCP only from its host once it has; downstream's side takes RTP and RTCP only
/// from the host the call sends to, latching the first RTP source there. An intruder on another host (127.0.0.2) who sends audio or an
/// RTCP BYE to the gateway's downstream ports reaches neither the caller nor the recording,
/// nor does a second source on downstream's host once the first is latched; each dropped
/// datagram is counted.
#[test]
fn packets_from_anyone_but_the_calls_peers_are_dropped() {
    use std::net::UdpSocket;
    let gw = Gateway::start("relay-foreign", "");
    let RtcpCall {
        id,
        caller,
        caller_rtcp,
        down,
        gw_down_rtcp,
        down_rtp,
        down_rtcp,
    } = rtcp_call(&gw);
    let (phone, phone_rtcp) = socket_pair();
    for s in [&phone, &phone_rtcp, &down_rtp, &down_rtcp] {
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
    }
    let intruder = UdpSocket::bind("127.0.0.2:0").expect("127.0.0.2 is loopback too");
    let second = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut buf = [0u8; 2048];
    let mut drain = |s: &UdpSocket| {
        let mut got = Vec::new();
        while let Ok(n) = s.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        got
    };
    let rr = |ssrc: u32| {
        use rtcp_types::{Compound, ReceiverReport, RtcpPacketWriterExt};
        let mut b = vec![0u8; 64];
        let n = Compound::builder()
            .add_packet(ReceiverReport::builder(ssrc))
            .write_into(&mut b)
            .unwrap();
        b.truncate(n);
        b
    };
    // Before the caller's first RTP, the intruder's RTCP to the caller's side: it would
    // have become the caller's RTCP address.
    intruder.send_to(&rr(0x0bad), caller_rtcp).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    // The caller's first packets latch it; downstream hears them.
    for k in 0..10u16 {
        let p = build(0, k, u32::from(k) * 160, SSRC, k == 0, &[0xff; 160]);
        phone.send_to(&p, caller).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let heard_down = drain(&down_rtp);
    assert!(!heard_down.is_empty(), "downstream heard nothing");
    // The intruder, as caller: ignored.
    intruder
        .send_to(&build(0, 10, 1600, 0x0bad, false, &[0x00; 160]), caller)
        .unwrap();
    // The intruder, as downstream: audio and a BYE, both ignored.
    intruder
        .send_to(&build(0, 0, 0, 0x0bad, true, &[0x00; 160]), down)
        .unwrap();
    let bye = {
        use rtcp_types::{Bye, Compound, RtcpPacketWriterExt};
        let mut b = vec![0u8; 64];
        let n = Compound::builder()
            .add_packet(Bye::builder().add_source(0x0bad))
            .write_into(&mut b)
            .unwrap();
        b.truncate(n);
        b
    };
    intruder.send_to(&bye, gw_down_rtcp).unwrap();
    // Downstream itself answers from its own socket (latched), then a second socket on the
    // same host tries.
    for j in 0..5u16 {
        let p = build(0, j, u32::from(j) * 160, 0xd0d0, j == 0, &[0x7f; 160]);
        down_rtp.send_to(&p, down).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    second
        .send_to(&build(0, 0, 0, 0x5ec0, true, &[0x00; 160]), down)
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let heard = drain(&phone);
    let ssrcs: Vec<u32> = heard.iter().map(|p| parse(p).ssrc).collect();
    assert_eq!(
        ssrcs,
        vec![0xd0d0; 5],
        "the caller heard something other than downstream"
    );
    assert!(
        drain(&down_rtp).iter().all(|p| parse(p).ssrc != 0x0bad),
        "the intruder's packet reached downstream"
    );
    // (The gateway's own reports may reach the caller; the intruder's BYE must not.)
    let byes: Vec<u32> = drain(&phone_rtcp)
        .iter()
        .flat_map(|c| {
            rtcp_types::Compound::parse(c)
                .unwrap()
                .filter_map(|p| match p {
                    Ok(rtcp_types::Packet::Bye(b)) => Some(b.ssrcs().collect::<Vec<_>>()),
                    _ => None,
                })
                .flatten()
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        !byes.contains(&0x0bad),
        "the intruder's RTCP reached the caller"
    );
    // Downstream's own report reaches the caller's RTCP port, not the intruder.
    down_rtcp.send_to(&rr(0xd0d0), gw_down_rtcp).unwrap();
    assert!(
        phone_rtcp.recv(&mut [0u8; 512]).is_ok(),
        "downstream's report did not reach the caller"
    );
    intruder
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    assert!(
        intruder.recv(&mut [0u8; 512]).is_err(),
        "the intruder got the call's RTCP"
    );
    let metrics = gw.http("GET", "/metrics", None).1;
    let foreign: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tonewall_foreign_packets_total "))
        .expect("no foreign-packet counter")
        .parse()
        .unwrap();
    assert_eq!(foreign, 5, "dropped datagrams counted");
    let end = gw.json("DELETE", &format!("/v1/calls/{id}"), None);
    assert_eq!(end["return_packets"], 5, "{end}");
    println!("foreign packets: 5 dropped and counted (intruder's RTCP before the caller's first packet, intruder as caller, as downstream RTP and RTCP, a second source on downstream's host); the caller heard downstream's 5 packets only and got downstream's RTCP");
}

/// A re-INVITE that moves downstream (`PATCH /v1/calls/{id}`): the caller's masked audio
/// goes to the new address from then on, downstream's media is taken from the new host
/// (its first source there latched anew), and the old one is no longer heard.
#[test]
fn an_update_moves_downstream_and_who_is_heard_from_there() {
    use std::net::UdpSocket;
    let gw = Gateway::start("relay-update", "");
    let RtcpCall {
        id,
        caller,
        down,
        down_rtp: old,
        ..
    } = rtcp_call(&gw);
    let (phone, _phone_rtcp) = socket_pair();
    let new = UdpSocket::bind("127.0.0.2:0").expect("127.0.0.2 is loopback too");
    for s in [&phone, &old, &new] {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
    }
    let mut buf = [0u8; 2048];
    let mut count = |s: &UdpSocket| {
        let mut n = 0;
        while s.recv(&mut buf).is_ok() {
            n += 1;
        }
        n
    };
    let send_caller = |from: u16, to: u16| {
        for k in from..to {
            let p = build(0, k, u32::from(k) * 160, SSRC, k == 0, &[0xff; 160]);
            phone.send_to(&p, caller).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    send_caller(0, 10);
    let before = count(&old);
    assert!(before >= 5, "{before} packets at the first downstream");
    let upd = gw.json(
        "PATCH",
        &format!("/v1/calls/{id}"),
        Some(&format!(
            r#"{{"downstream":"{}"}}"#,
            new.local_addr().unwrap()
        )),
    );
    assert_eq!(
        upd["downstream"],
        new.local_addr().unwrap().to_string(),
        "{upd}"
    );
    send_caller(10, 20);
    assert!(count(&new) >= 5, "the new downstream got too little");
    assert!(count(&old) <= 2, "the old downstream still gets the call");
    // Back from both: only the new one reaches the caller.
    for j in 0..3u16 {
        old.send_to(
            &build(0, j, u32::from(j) * 160, 0x01d0, j == 0, &[0x7f; 160]),
            down,
        )
        .unwrap();
        new.send_to(
            &build(0, j, u32::from(j) * 160, 0x0e30, j == 0, &[0x7f; 160]),
            down,
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(50));
    let mut ssrcs = Vec::new();
    while let Ok(n) = phone.recv(&mut buf) {
        ssrcs.push(parse(&buf[..n]).ssrc);
    }
    assert_eq!(ssrcs, vec![0x0e30; 3], "what the caller heard");
    gw.json("DELETE", &format!("/v1/calls/{id}"), None);
    println!("update: {before} packets to the first downstream, then the new one; the caller hears only the new one back");
}

/// RTCP multiplexed on the RTP port (RFC 5761, SDP `a=rtcp-mux`), as many SBCs and WebRTC
/// gateways send it: a caller that multiplexes has its reports rewritten and relayed to
/// downstream's RTCP port, never taken for audio, and gets downstream's reports back on
/// its RTP port from the gateway's; a downstream that multiplexes (`downstream_rtcp_mux`)
/// gets the caller's reports on its RTP port and has its own taken from the gateway's RTP
/// port.
#[test]
fn rtcp_multiplexed_on_the_rtp_port_is_relayed_both_ways() {
    use rtcp_types::{
        Compound, Packet, ReceiverReport, ReportBlock, RtcpPacketWriterExt, SenderReport,
    };
    use std::net::UdpSocket;
    let gw = Gateway::start("relay-rtcp-mux", "[server]\nrtcp_report_interval_ms = 0\n");
    let sr = |k: u32| {
        let mut b = vec![0u8; 128];
        let n = Compound::builder()
            .add_packet(
                SenderReport::builder(SSRC)
                    .ntp_timestamp(1000 << 32)
                    .rtp_timestamp(k * 160)
                    .packet_count(k + 1)
                    .octet_count((k + 1) * 160),
            )
            .write_into(&mut b)
            .unwrap();
        b.truncate(n);
        b
    };
    let rr = |about: u32| {
        let mut b = vec![0u8; 128];
        let n = Compound::builder()
            .add_packet(
                ReceiverReport::builder(0xd0d0)
                    .add_report_block(ReportBlock::builder(about).cumulative_lost(7)),
            )
            .write_into(&mut b)
            .unwrap();
        b.truncate(n);
        b
    };
    let is_rtcp = |b: &[u8]| b.len() >= 8 && (192..=223).contains(&b[1]);
    // Everything one socket got within 300 ms: (RTP packets' SSRCs, RTCP compounds).
    let take = |s: &UdpSocket| {
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let (mut rtp, mut rtcp) = (Vec::new(), Vec::new());
        let mut buf = [0u8; 2048];
        while let Ok(n) = s.recv(&mut buf) {
            if is_rtcp(&buf[..n]) {
                rtcp.push(buf[..n].to_vec());
            } else {
                rtp.push(parse(&buf[..n]));
            }
        }
        (rtp, rtcp)
    };
    // (sender SSRC, report-block SSRCs) of a compound's first report.
    let report = |c: &[u8]| match Compound::parse(c).unwrap().next() {
        Some(Ok(Packet::Sr(r))) => (r.ssrc(), r.report_blocks().map(|b| b.ssrc()).collect()),
        Some(Ok(Packet::Rr(r))) => (r.ssrc(), r.report_blocks().map(|b| b.ssrc()).collect()),
        _ => (0, Vec::<u32>::new()),
    };
    for down_mux in [false, true] {
        let (down_rtp, down_rtcp) = socket_pair();
        let created = gw.json(
            "POST",
            "/v1/calls",
            Some(&format!(
                r#"{{"downstream":"{}","rtcp_mux":{},"downstream_rtcp_mux":{down_mux}}}"#,
                down_rtp.local_addr().unwrap(),
                !down_mux
            )),
        );
        let addr =
            |k: &str| -> std::net::SocketAddr { created[k].as_str().unwrap().parse().unwrap() };
        let (caller, caller_rtcp, down) = (
            addr("caller_rtp"),
            addr("caller_rtcp"),
            addr("downstream_rtp"),
        );
        let (phone, phone_rtcp) = socket_pair();
        // The caller multiplexes in the first round, downstream in the second.
        let caller_mux = !down_mux;
        for k in 0..10u32 {
            let p = build(0, k as u16, k * 160, SSRC, k == 0, &[0xff; 160]);
            phone.send_to(&p, caller).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        if caller_mux {
            phone.send_to(&sr(9), caller).unwrap();
        } else {
            phone_rtcp.send_to(&sr(9), caller_rtcp).unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
        let (down_media, mut down_reports) = take(&down_rtp);
        if !down_mux {
            assert!(
                down_reports.is_empty(),
                "RTCP on a plain downstream's RTP port"
            );
            down_reports = take(&down_rtcp).1;
        }
        assert_eq!(down_media.len(), 10, "downstream's audio packets");
        let ours = down_media[0].ssrc;
        assert!(down_media.iter().all(|p| p.pt == 0), "RTCP taken for audio");
        assert_eq!(
            down_reports.iter().map(|c| report(c).0).collect::<Vec<_>>(),
            vec![ours],
            "the caller's report at downstream (mux {down_mux})"
        );
        // Downstream's report about our stream, back to the caller about its own.
        let gw_down_rtcp = std::net::SocketAddr::new(down.ip(), down.port() + 1);
        if down_mux {
            down_rtp.send_to(&rr(ours), down).unwrap();
        } else {
            down_rtcp.send_to(&rr(ours), gw_down_rtcp).unwrap();
        }
        let (back_media, back_reports) = if caller_mux {
            take(&phone)
        } else {
            take(&phone_rtcp)
        };
        assert!(back_media.is_empty());
        assert_eq!(
            back_reports.iter().map(|c| report(c)).collect::<Vec<_>>(),
            vec![(0xd0d0, vec![SSRC])],
            "downstream's report at the caller (caller mux {caller_mux})"
        );
        let id = created["call_id"].as_str().unwrap();
        gw.json("DELETE", &format!("/v1/calls/{id}"), None);
    }
    println!("rtcp-mux: a multiplexing caller's report reached downstream's RTCP port and downstream's came back on the caller's RTP port; a multiplexing downstream the same way round");
}

/// A caller whose stream moves to another address (a NAT rebinding on a mobile network) is
/// followed once the old address has gone quiet and the new one has sent a run of the
/// caller's own stream; a second source is never followed while the caller still sends, nor
/// is a source with another SSRC. Downstream's audio goes back to where the caller now is.
#[test]
fn a_caller_that_moves_is_followed_and_nobody_else_is() {
    use std::net::UdpSocket;
    let gw = Gateway::start("relay-move", "");
    let RtcpCall {
        id,
        caller,
        down,
        down_rtp,
        ..
    } = rtcp_call(&gw);
    let (phone, _phone_rtcp) = socket_pair();
    let (moved, _moved_rtcp) = socket_pair();
    let intruder = UdpSocket::bind("127.0.0.2:0").unwrap();
    let pkt = |k: u16, ssrc: u32| build(0, k, u32::from(k) * 160, ssrc, k == 0, &[0xff; 160]);
    let latched = || gw.json("GET", &format!("/v1/calls/{id}"), None)["caller"].clone();
    // 300 ms of the caller, with a copy of its stream from another port and a stream of
    // another SSRC from another host alongside: neither takes over.
    for k in 0..15u16 {
        phone.send_to(&pkt(k, SSRC), caller).unwrap();
        moved.send_to(&pkt(k, SSRC), caller).unwrap();
        intruder.send_to(&pkt(k, 0x0bad), caller).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(latched(), phone.local_addr().unwrap().to_string());
    // The caller goes quiet for good; the other host keeps sending its own SSRC: nothing.
    for k in 15..30u16 {
        intruder.send_to(&pkt(k, 0x0bad), caller).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(latched(), phone.local_addr().unwrap().to_string());
    // The caller's stream carries on from the new port: followed.
    for k in 30..60u16 {
        moved.send_to(&pkt(k, SSRC), caller).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(latched(), moved.local_addr().unwrap().to_string());
    // Downstream's audio goes back there.
    for s in [&phone, &moved] {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
    }
    let mut buf = [0u8; 2048];
    while phone.recv(&mut buf).is_ok() {}
    while moved.recv(&mut buf).is_ok() {}
    down_rtp.send_to(&pkt(0, 0xd0d0), down).unwrap();
    assert!(
        moved.recv(&mut buf).is_ok(),
        "downstream's audio did not follow the caller"
    );
    assert!(
        phone.recv(&mut buf).is_err(),
        "downstream's audio went to the old address"
    );
    // Taken from the caller: its 15 packets, then the new address's from the fifth in a
    // row on (the four before are its probation).
    let end = gw.json("DELETE", &format!("/v1/calls/{id}"), None);
    assert_eq!(end["stats"]["packets_in"], 15 + 26, "{end}");
    println!("caller moved: followed on the fifth consecutive packet of its stream from the new address, after the old one went quiet; a copy from another port while the caller sent, and another SSRC from another host, never followed");
}

/// RTCP both ways through the gateway with plain sockets on each side: the caller's
/// receiver report reaches downstream from the gateway's SSRC, and downstream's report
/// about the gateway's stream reaches the caller about the caller's own SSRC (so the
/// caller's stack can match it to what it sends). (`tests/serve_peers.rs` runs ffmpeg's
/// sender reports through.)
#[test]
fn rtcp_reports_name_the_stream_each_side_sees() {
    use rtcp_types::{Compound, Packet, ReceiverReport, ReportBlock, RtcpPacketWriterExt};
    let write = |c: rtcp_types::CompoundBuilder<'_>| {
        let mut b = vec![0u8; 512];
        let n = c.write_into(&mut b).unwrap();
        b.truncate(n);
        b
    };
    let gw = Gateway::start("relay-rtcp", "");
    let RtcpCall {
        id,
        caller,
        caller_rtcp,
        down: _,
        gw_down_rtcp,
        down_rtp,
        down_rtcp,
    } = rtcp_call(&gw);
    for s in [&down_rtp, &down_rtcp] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    let (phone, phone_rtcp) = socket_pair();
    phone_rtcp
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    for k in 0..10u16 {
        let p = build(0, k, u32::from(k) * 160, SSRC, k == 0, &[0xff; 160]);
        phone.send_to(&p, caller).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut buf = [0u8; 2048];
    let n = down_rtp.recv(&mut buf).unwrap();
    let ours = parse(&buf[..n]).ssrc;
    assert_ne!(ours, SSRC);

    // Caller to downstream: a receiver report from the caller (about the return stream).
    let rr = write(Compound::builder().add_packet(
        ReceiverReport::builder(SSRC).add_report_block(ReportBlock::builder(0xd0d0_d0d0)),
    ));
    phone_rtcp.send_to(&rr, caller_rtcp).unwrap();
    let n = down_rtcp.recv(&mut buf).unwrap();
    let Some(Ok(Packet::Rr(got))) = Compound::parse(&buf[..n]).unwrap().next() else {
        panic!("no receiver report downstream")
    };
    assert_eq!(
        got.ssrc(),
        ours,
        "the caller's report comes from the gateway's SSRC"
    );
    assert_eq!(got.report_blocks().next().unwrap().ssrc(), 0xd0d0_d0d0);

    // Downstream to caller: a report about the gateway's stream.
    let rr = write(
        Compound::builder().add_packet(
            ReceiverReport::builder(0xd0d0_d0d0)
                .add_report_block(ReportBlock::builder(ours).cumulative_lost(2)),
        ),
    );
    down_rtcp.send_to(&rr, gw_down_rtcp).unwrap();
    // (Skipping a receiver report of the gateway's own, should one be due already.)
    let got = loop {
        let n = phone_rtcp.recv(&mut buf).unwrap();
        match Compound::parse(&buf[..n]).unwrap().next() {
            Some(Ok(Packet::Rr(got))) if got.ssrc() != ours => break got,
            Some(Ok(Packet::Rr(_))) => continue,
            _ => panic!("no receiver report at the caller"),
        }
    };
    assert_eq!(got.ssrc(), 0xd0d0_d0d0);
    let block = got.report_blocks().next().unwrap();
    assert_eq!(
        (block.ssrc(), block.cumulative_lost()),
        (SSRC, 2),
        "the report is about the caller's own stream"
    );

    // Not RTCP at all: relayed as it came, and counted.
    phone_rtcp.send_to(b"not rtcp", caller_rtcp).unwrap();
    let n = down_rtcp.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"not rtcp");
    let metrics = gw.http("GET", "/metrics", None).1;
    assert!(
        metrics.contains("tonewall_rtcp_invalid_total 1"),
        "invalid RTCP not counted"
    );
    let end = gw.json("DELETE", &format!("/v1/calls/{id}"), None);
    assert_eq!(end["ended"], "api");
}

/// A call whose downstream is a fresh RTP/RTCP socket pair, with the addresses an RTCP test
/// needs on both sides.
struct RtcpCall {
    id: String,
    /// The gateway's caller-facing RTP and RTCP ports.
    caller: std::net::SocketAddr,
    caller_rtcp: std::net::SocketAddr,
    /// The gateway's downstream-facing RTP and RTCP ports.
    down: std::net::SocketAddr,
    gw_down_rtcp: std::net::SocketAddr,
    /// Downstream's own sockets.
    down_rtp: std::net::UdpSocket,
    down_rtcp: std::net::UdpSocket,
}

fn rtcp_call(gw: &Gateway) -> RtcpCall {
    let (down_rtp, down_rtcp) = socket_pair();
    let created = gw.json(
        "POST",
        "/v1/calls",
        Some(&format!(
            "{{\"downstream\":\"{}\"}}",
            down_rtp.local_addr().unwrap()
        )),
    );
    let addr = |k: &str| -> std::net::SocketAddr { created[k].as_str().unwrap().parse().unwrap() };
    let (caller, down) = (addr("caller_rtp"), addr("downstream_rtp"));
    RtcpCall {
        id: created["call_id"].as_str().unwrap().to_string(),
        caller,
        caller_rtcp: addr("caller_rtcp"),
        down,
        gw_down_rtcp: addr("downstream_rtcp"),
        down_rtp,
        down_rtcp,
    }
}

/// What one RTCP compound that reached downstream held, and when it arrived.
struct SeenRtcp {
    at: std::time::Instant,
    /// Its sender report.
    sr: Option<SrFields>,
    cname: Option<String>,
    bye: Vec<u32>,
    /// Report blocks of the sender report: (SSRC, cumulative lost, extended highest, LSR).
    blocks: Vec<(u32, u32, u32, u32)>,
}

/// One RTP packet as an end saw it: arrival, timestamp, SSRC, payload octets.
type SeenRtp = (std::time::Instant, u32, u32, usize);

/// A sender report's (SSRC, NTP time, RTP time, packets, octets).
type SrFields = (u32, u64, u32, u32, u32);

/// Collect one end's RTP and RTCP on the two sockets until `until` passes.
fn collect_rtp_and_rtcp(
    rtp: &std::net::UdpSocket,
    rtcp: &std::net::UdpSocket,
    until: std::time::Instant,
) -> (Vec<SeenRtp>, Vec<SeenRtcp>) {
    use rtcp_types::{Compound, Packet};
    for s in [rtp, rtcp] {
        s.set_nonblocking(true).unwrap();
    }
    let (mut media, mut reports) = (Vec::new(), Vec::new());
    let mut buf = [0u8; 2048];
    while std::time::Instant::now() < until {
        let mut idle = true;
        if let Ok(n) = rtp.recv(&mut buf) {
            let p = parse(&buf[..n]);
            media.push((std::time::Instant::now(), p.ts, p.ssrc, p.payload.len()));
            idle = false;
        }
        if let Ok(n) = rtcp.recv(&mut buf) {
            let mut seen = SeenRtcp {
                at: std::time::Instant::now(),
                sr: None,
                cname: None,
                bye: Vec::new(),
                blocks: Vec::new(),
            };
            for p in Compound::parse(&buf[..n]).expect("invalid RTCP compound") {
                match p.expect("invalid RTCP packet") {
                    Packet::Sr(sr) => {
                        seen.blocks = sr
                            .report_blocks()
                            .map(|b| {
                                (
                                    b.ssrc(),
                                    b.cumulative_lost(),
                                    b.extended_sequence_number(),
                                    b.last_sender_report_timestamp(),
                                )
                            })
                            .collect();
                        seen.sr = Some((
                            sr.ssrc(),
                            sr.ntp_timestamp(),
                            sr.rtp_timestamp(),
                            sr.packet_count(),
                            sr.octet_count(),
                        ))
                    }
                    Packet::Sdes(d) => {
                        for c in d.chunks() {
                            for i in c.items() {
                                if i.type_() == rtcp_types::SdesItem::CNAME {
                                    seen.cname = Some(String::from_utf8_lossy(i.value()).into());
                                }
                            }
                        }
                    }
                    Packet::Bye(b) => seen.bye.extend(b.ssrcs()),
                    _ => {}
                }
            }
            reports.push(seen);
            idle = false;
        }
        if idle {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    (media, reports)
}

/// The checks every sender report of the gateway's own must pass, whichever end gets it:
/// about stream `ssrc`, a CNAME naming call `id`, a packet count of what had arrived by then
/// (one may cross the report in flight), and an RTP time that is the latest packet's run on
/// at `clock_hz` to the report's arrival (not for a report with a BYE: hanging up flushes the
/// look-ahead's last packet at that moment, not at its media time). Returns how far off the
/// RTP times were at worst, ms.
fn check_own_sender_reports(
    sr: &[(&SeenRtcp, SrFields)],
    media: &[SeenRtp],
    ssrc: u32,
    id: &str,
    clock_hz: f64,
) -> f64 {
    let mut worst_ms: f64 = 0.0;
    for (r, (s, _, ts, packets, _)) in sr {
        assert_eq!(*s, ssrc, "the report is about another stream");
        assert!(
            r.cname.as_deref().is_some_and(|c| c.contains(id)),
            "no CNAME naming the call: {:?}",
            r.cname
        );
        let got = media.iter().filter(|m| m.0 <= r.at).count() as u32;
        assert!(
            *packets <= got + 1 && *packets + 2 >= got,
            "report counts {packets} packets, {got} arrived by then"
        );
        let last_media = media.iter().rev().find(|m| m.0 <= r.at);
        if let (Some((at, pts, ..)), true) = (last_media, r.bye.is_empty()) {
            let expect = *pts as f64 + r.at.duration_since(*at).as_secs_f64() * clock_hz;
            let off_ms = (*ts as f64 - expect) * 1000.0 / clock_hz;
            worst_ms = worst_ms.max(off_ms.abs());
        }
    }
    // 20 ms packets and a scheduler in between: within a packet and a half.
    assert!(
        worst_ms < 30.0,
        "report RTP time {worst_ms:.1} ms off the stream's"
    );
    worst_ms
}

/// A caller that sends no RTCP (a softphone with RTCP off; a WebRTC publisher, whose RTCP
/// ends at the gateway's WebRTC stack): downstream still gets sender reports, the gateway's
/// own, about the stream it receives (its SSRC, an RTP time that matches the packets' at the
/// wall-clock time the report names, the counts of what was sent), with a CNAME, and a BYE
/// when the call ends. A caller that does send RTCP gets its own reports rewritten and none
/// of the gateway's on top.
#[test]
fn a_caller_without_rtcp_gets_sender_reports_of_the_gateways_own() {
    use std::time::{Instant, SystemTime, UNIX_EPOCH};
    let gw = Gateway::start(
        "relay-own-rtcp",
        "[server]\nrtcp_report_interval_ms = 500\n",
    );
    let ntp_now = || {
        let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        d.as_secs_f64() + 2_208_988_800.0
    };
    let ntp_secs = |ntp: u64| (ntp >> 32) as f64 + (ntp & 0xffff_ffff) as f64 / 4_294_967_296.0;
    for caller_reports in [false, true] {
        let RtcpCall {
            id,
            caller,
            caller_rtcp,
            down,
            gw_down_rtcp,
            down_rtp,
            down_rtcp,
        } = rtcp_call(&gw);
        let (phone, phone_rtcp) = socket_pair();
        let (down_tx, down_rtcp_tx) = (
            down_rtp.try_clone().unwrap(),
            down_rtcp.try_clone().unwrap(),
        );
        let sender = std::thread::spawn(move || {
            // 2 s of 20 ms PCMU; a reporting caller sends a sender report every 300 ms with
            // an NTP time of its own (second 1000, easy to tell from the gateway's clock).
            let t0 = Instant::now();
            for k in 0..100u16 {
                // Paced by deadline, so the stream keeps 8 kHz on average on a busy machine.
                let due = t0 + Duration::from_millis(20 * u64::from(k));
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                let p = build(0, k, u32::from(k) * 160, SSRC, k == 0, &[0xff; 160]);
                phone.send_to(&p, caller).unwrap();
                // Downstream talks back (packet 30 never sent) and sends one sender report,
                // which the gateway's own reports answer in their block about its stream.
                if k != 30 {
                    let p = build(0, k, u32::from(k) * 160, 0xd0d0, k == 0, &[0xff; 160]);
                    down_tx.send_to(&p, down).unwrap();
                }
                if k == 3 {
                    use rtcp_types::{Compound, RtcpPacketWriterExt, SenderReport};
                    let mut b = vec![0u8; 128];
                    let n = Compound::builder()
                        .add_packet(
                            SenderReport::builder(0xd0d0).ntp_timestamp(0x0000_0777_8888_0000),
                        )
                        .write_into(&mut b)
                        .unwrap();
                    down_rtcp_tx.send_to(&b[..n], gw_down_rtcp).unwrap();
                }
                if caller_reports && k % 15 == 1 {
                    use rtcp_types::{Compound, RtcpPacketWriterExt, SenderReport};
                    let mut b = vec![0u8; 128];
                    let n = Compound::builder()
                        .add_packet(
                            SenderReport::builder(SSRC)
                                .ntp_timestamp(1000 << 32)
                                .rtp_timestamp(u32::from(k) * 160)
                                .packet_count(u32::from(k) + 1)
                                .octet_count((u32::from(k) + 1) * 160),
                        )
                        .write_into(&mut b)
                        .unwrap();
                    phone_rtcp.send_to(&b[..n], caller_rtcp).unwrap();
                }
            }
        });
        let (mut media, mut reports) = collect_rtp_and_rtcp(
            &down_rtp,
            &down_rtcp,
            Instant::now() + Duration::from_millis(2300),
        );
        sender.join().unwrap();
        let end = gw.json("DELETE", &format!("/v1/calls/{id}"), None);
        assert_eq!(end["ended"], "api");
        // Downstream's stream back, as the call's status shows it: 99 of 100 arrived.
        let back = &end["reception"]["downstream"];
        assert_eq!(
            (back["received"].as_u64(), back["lost"].as_i64()),
            (Some(99), Some(1)),
            "{end}"
        );
        let (m2, r2) = collect_rtp_and_rtcp(
            &down_rtp,
            &down_rtcp,
            Instant::now() + Duration::from_millis(300),
        );
        media.extend(m2);
        reports.extend(r2);
        let ours = media.first().expect("no media downstream").2;
        let sr: Vec<_> = reports
            .iter()
            .filter_map(|r| r.sr.map(|s| (r, s)))
            .collect();
        if caller_reports {
            assert!(!sr.is_empty(), "the caller's reports were not relayed");
            for (_, (ssrc, ntp, ..)) in &sr {
                assert_eq!(*ssrc, ours);
                assert_eq!(
                    ntp >> 32,
                    1000,
                    "a report of the gateway's own besides the caller's"
                );
            }
            assert!(
                reports.iter().all(|r| r.bye.is_empty()),
                "a BYE the caller never sent"
            );
            println!("own RTCP: a caller that reports gets {} of its own reports relayed, none of the gateway's", sr.len());
            continue;
        }
        // Interval 500 ms randomised to 250 to 750 ms, the first after half that: over 2 s of
        // media at least 3, plus the final one with the BYE.
        assert!(sr.len() >= 3, "{} own sender reports downstream", sr.len());
        let worst_ts_ms = check_own_sender_reports(&sr, &media, ours, &id, 8000.0);
        for (r, (_, ntp, _, packets, octets)) in &sr {
            assert_eq!(*octets, packets * 160);
            // The block about downstream's stream back: its loss, highest and last report.
            let &(bssrc, lost, highest, lsr) = r
                .blocks
                .first()
                .expect("no report block about the return stream");
            assert_eq!(bssrc, 0xd0d0);
            assert_eq!(lost, u32::from(highest > 30), "at highest {highest}");
            assert_eq!(lsr, 0x0777_8888);
            // Wall clock: the report's NTP time is now.
            let wall = ntp_now() - r.at.elapsed().as_secs_f64();
            assert!(
                (ntp_secs(*ntp) - wall).abs() < 0.5,
                "NTP time off the wall clock"
            );
        }
        // Consecutive reports advance their RTP time at 8 kHz of NTP time.
        let pairs: Vec<f64> = sr
            .windows(2)
            .filter(|w| w[1].1 .3 < 100 && w[0].1 .3 > 0)
            .map(|w| {
                let dt = ntp_secs(w[1].1 .1) - ntp_secs(w[0].1 .1);
                w[1].1 .2.wrapping_sub(w[0].1 .2) as f64 / dt
            })
            .collect();
        for rate in &pairs {
            assert!(
                (rate / 8000.0 - 1.0).abs() < 0.1,
                "RTP clock {rate:.0} Hz between reports"
            );
        }
        let last = reports.last().unwrap();
        assert_eq!(last.bye, vec![ours], "no BYE at the end of the call");
        println!(
            "own RTCP: {} sender reports downstream over 2 s at a 500 ms interval, RTP time within {worst_ts_ms:.1} ms of the stream's, RTP clock between reports {:?} Hz, each with a block on the return stream (its 1 lost packet, LSR of its sender report), BYE at the end",
            sr.len(),
            pairs.iter().map(|r| r.round()).collect::<Vec<_>>()
        );
    }
    let metrics = gw.http("GET", "/metrics", None).1;
    let sent: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tonewall_rtcp_reports_sent_total "))
        .expect("no own-report counter")
        .parse()
        .unwrap();
    assert!(sent >= 4, "{sent} own reports counted");
}

/// An Opus caller whose G.711 downstream sends no RTCP hears downstream re-encoded by the
/// gateway, so the gateway is that stream's sender and reports as one: sender reports of its
/// own about the Opus stream (downstream's SSRC, an RTP time on the 48 kHz clock that matches
/// the packets' at the report's wall-clock time, the Opus packet and octet counts) carrying
/// a block about the caller's stream, and a BYE at the end.
#[cfg(feature = "opus")]
#[test]
fn an_opus_caller_gets_sender_reports_about_the_stream_the_gateway_reencodes() {
    use std::time::Instant;
    use tonewall::codec::{FrameEncoder, OpusEncoder};
    let gw = Gateway::start(
        "relay-own-sr-return",
        "[server]\nrtcp_report_interval_ms = 500\n",
    );
    let (down_rtp, _down_rtcp) = socket_pair();
    let created = gw.json(
        "POST",
        "/v1/calls",
        Some(&format!(
            r#"{{"downstream":"{}","codec":"opus","payload_type":111,"rate":48000,"downstream_codec":"pcmu"}}"#,
            down_rtp.local_addr().unwrap()
        )),
    );
    let id = created["call_id"].as_str().unwrap().to_string();
    let addr = |k: &str| -> std::net::SocketAddr { created[k].as_str().unwrap().parse().unwrap() };
    let (caller, down) = (addr("caller_rtp"), addr("downstream_rtp"));
    let (phone, phone_rtcp) = socket_pair();
    let phone_tx = phone.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut enc = OpusEncoder::new(24_000).unwrap();
        let mut opus = vec![0u8; enc.max_packet()];
        let quiet = vec![20i16; 960];
        let t0 = Instant::now();
        // 2 s: the caller's Opus, and downstream's PCMU (a 440 Hz tone) from the fifth frame.
        for k in 0..100u32 {
            let due = t0 + Duration::from_millis(20 * u64::from(k));
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            let n = enc.encode(&quiet, &mut opus).unwrap();
            phone_tx
                .send_to(
                    &build(111, k as u16, k * 960, SSRC, k == 0, &opus[..n]),
                    caller,
                )
                .unwrap();
            if k >= 5 {
                let j = k - 5;
                let pl: Vec<u8> = (0..160)
                    .map(|i| {
                        let t = f64::from(j * 160 + i) / 8000.0;
                        linear_to_ulaw(
                            (6000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16,
                        )
                    })
                    .collect();
                down_rtp
                    .send_to(&build(0, j as u16, j * 160, 0xd0d0, j == 0, &pl), down)
                    .unwrap();
            }
        }
    });
    let (mut media, mut reports) = collect_rtp_and_rtcp(
        &phone,
        &phone_rtcp,
        Instant::now() + Duration::from_millis(2200),
    );
    sender.join().unwrap();
    let end = gw.json("DELETE", &format!("/v1/calls/{id}"), None);
    assert_eq!(end["ended"], "api");
    let (m2, r2) = collect_rtp_and_rtcp(
        &phone,
        &phone_rtcp,
        Instant::now() + Duration::from_millis(300),
    );
    media.extend(m2);
    reports.extend(r2);
    assert!(
        media.len() >= 80,
        "{} packets back at the caller",
        media.len()
    );
    let sr: Vec<_> = reports
        .iter()
        .filter_map(|r| r.sr.map(|s| (r, s)))
        .collect();
    // 500 ms randomised to 250 to 750 ms over the 1.9 s the stream flows: at least 2.
    assert!(sr.len() >= 2, "{} sender reports at the caller", sr.len());
    let worst_ts_ms = check_own_sender_reports(&sr, &media, 0xd0d0, &id, 48_000.0);
    for (r, (_, _, _, packets, octets)) in &sr {
        // Exactly the payload octets of the Opus packets counted.
        let n = *packets as usize;
        let payload: usize = media.iter().take(n).map(|m| m.3).sum();
        assert_eq!(*octets as usize, payload, "octets of the first {n} packets");
        // The block about the caller's stream: nothing lost.
        if r.bye.is_empty() {
            let &(bssrc, lost, highest, _) = r
                .blocks
                .first()
                .expect("no report block about the caller's stream");
            assert_eq!((bssrc, lost), (SSRC, 0), "at highest {highest}");
        }
    }
    let last = reports.last().unwrap();
    assert_eq!(last.bye, vec![0xd0d0], "no BYE at the end of the call");
    assert!(
        reports.iter().all(|r| r.sr.is_some()),
        "receiver reports while the gateway was sending"
    );
    println!(
        "own RTCP to an Opus caller hearing a re-encoded PCMU downstream: {} sender reports over 2 s at a 500 ms interval, RTP time within {worst_ts_ms:.1} ms of the Opus stream's, counts those of the {} packets, BYE at the end",
        sr.len(),
        media.len()
    );
}

/// A downstream that sends no RTCP (a bot or recorder that only listens) would leave the
/// caller without receiver reports: the gateway sends its own about the caller's stream
/// (loss, highest sequence number, jitter, and LSR/DLSR answering the caller's sender
/// report, so its stack can measure the round trip), and a BYE at the end. A downstream
/// that reports for itself gets its reports relayed and none of the gateway's on top.
#[test]
fn a_downstream_without_rtcp_leaves_the_caller_receiver_reports_of_the_gateways_own() {
    use rtcp_types::{Compound, Packet, RtcpPacketWriterExt, SenderReport};
    use std::time::Instant;
    let gw = Gateway::start("relay-own-rr", "[server]\nrtcp_report_interval_ms = 500\n");
    for down_reports in [false, true] {
        let RtcpCall {
            id,
            caller,
            caller_rtcp,
            down: _,
            gw_down_rtcp,
            down_rtp,
            down_rtcp,
        } = rtcp_call(&gw);
        let (phone, phone_rtcp) = socket_pair();
        phone_rtcp.set_nonblocking(true).unwrap();
        let sr_ntp: u64 = 0x0000_1234_5678_9abc;
        let mut sr_sent_at = None;
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        let t0 = Instant::now();
        // 2 s of 20 ms PCMU with packets 10, 11 and 50 never sent; one sender report early.
        for k in 0..100u16 {
            let due = t0 + Duration::from_millis(20 * u64::from(k));
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            if ![10, 11, 50].contains(&k) {
                let p = build(0, k, u32::from(k) * 160, SSRC, k == 0, &[0xff; 160]);
                phone.send_to(&p, caller).unwrap();
            }
            if k == 5 {
                let mut b = vec![0u8; 128];
                let n = Compound::builder()
                    .add_packet(
                        SenderReport::builder(SSRC)
                            .ntp_timestamp(sr_ntp)
                            .rtp_timestamp(800),
                    )
                    .write_into(&mut b)
                    .unwrap();
                phone_rtcp.send_to(&b[..n], caller_rtcp).unwrap();
                sr_sent_at = Some(Instant::now());
            }
            if down_reports && k % 20 == 1 {
                let mut b = vec![0u8; 128];
                let n = Compound::builder()
                    .add_packet(rtcp_types::ReceiverReport::builder(0xd0d0_d0d0))
                    .write_into(&mut b)
                    .unwrap();
                down_rtcp.send_to(&b[..n], gw_down_rtcp).unwrap();
            }
            // Read every 20 ms: a report's arrival is known to within that.
            while let Ok(n) = phone_rtcp.recv(&mut buf) {
                got.push((Instant::now(), buf[..n].to_vec(), true));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        let end = gw.json("DELETE", &format!("/v1/calls/{id}"), None);
        assert_eq!(end["ended"], "api");
        // The call's status shows the same figures.
        let rx = &end["reception"]["caller"];
        assert_eq!(
            (rx["received"].as_u64(), rx["lost"].as_i64()),
            (Some(97), Some(3)),
            "{end}"
        );
        assert!(rx["jitter_ms"].as_f64().unwrap() < 20.0, "{end}");
        std::thread::sleep(Duration::from_millis(200));
        while let Ok(n) = phone_rtcp.recv(&mut buf) {
            got.push((Instant::now(), buf[..n].to_vec(), false));
        }
        down_rtp.set_nonblocking(true).unwrap();
        let n = down_rtp.recv(&mut buf).expect("no media downstream");
        let ours = parse(&buf[..n]).ssrc;
        let parsed: Vec<(Option<Instant>, Vec<Packet<'_>>)> = got
            .iter()
            .map(|(at, b, timed)| {
                (
                    timed.then_some(*at),
                    Compound::parse(b).unwrap().map(|p| p.unwrap()).collect(),
                )
            })
            .collect();
        let rrs: Vec<_> = parsed
            .iter()
            .filter_map(|(at, ps)| match ps.first() {
                Some(Packet::Rr(rr)) if rr.ssrc() == ours => Some((*at, rr, ps)),
                _ => None,
            })
            .collect();
        if down_reports {
            assert!(
                rrs.is_empty(),
                "receiver reports of the gateway's own besides downstream's"
            );
            assert!(
                parsed.iter().any(
                    |(_, ps)| matches!(ps.first(), Some(Packet::Rr(rr)) if rr.ssrc() == 0xd0d0_d0d0)
                ),
                "downstream's reports were not relayed"
            );
            println!("own RTCP: a downstream that reports gets its reports relayed to the caller, none of the gateway's");
            continue;
        }
        assert!(
            rrs.len() >= 3,
            "{} own receiver reports at the caller",
            rrs.len()
        );
        let sr_at = sr_sent_at.unwrap();
        let mut worst_dlsr_ms: f64 = 0.0;
        let mut max_jitter = 0;
        for (at, rr, ps) in &rrs {
            let b = rr
                .report_blocks()
                .next()
                .expect("a report block about the caller");
            assert_eq!(b.ssrc(), SSRC, "the block is about the caller's stream");
            assert!(b.extended_sequence_number() <= 99);
            // Lost so far: the gaps the highest sequence number has passed.
            let highest = b.extended_sequence_number();
            let gaps = [10u32, 11, 50].iter().filter(|&&g| g < highest).count() as u32;
            assert_eq!(b.cumulative_lost(), gaps, "at highest {highest}");
            max_jitter = max_jitter.max(b.interarrival_jitter());
            if at.is_some_and(|at| at > sr_at + Duration::from_millis(50)) {
                let at = at.unwrap();
                assert_eq!(b.last_sender_report_timestamp(), (sr_ntp >> 16) as u32);
                let dlsr_ms =
                    f64::from(b.delay_since_last_sender_report_timestamp()) * 1000.0 / 65536.0;
                let real_ms = at.duration_since(sr_at).as_secs_f64() * 1000.0;
                worst_dlsr_ms = worst_dlsr_ms.max((dlsr_ms - real_ms).abs());
            }
            assert!(
                ps.iter().any(|p| matches!(p, Packet::Sdes(_))),
                "no SDES in the compound"
            );
        }
        let (_, last, last_ps) = rrs.last().unwrap();
        let b = last.report_blocks().next().unwrap();
        assert_eq!((b.extended_sequence_number(), b.cumulative_lost()), (99, 3));
        assert!(
            last_ps
                .iter()
                .any(|p| matches!(p, Packet::Bye(bye) if bye.ssrcs().any(|s| s == ours))),
            "no BYE at the end of the call"
        );
        // Loopback and a sleeping sender: a few ms of jitter at most (160 = a whole packet).
        assert!(max_jitter < 160, "jitter {max_jitter}");
        assert!(worst_dlsr_ms < 30.0, "DLSR off by {worst_dlsr_ms:.1} ms");
        println!(
            "own RTCP: {} receiver reports at a caller whose downstream sends none: 3 of 100 packets lost reported as 3, highest 99, jitter up to {max_jitter}, DLSR within {worst_dlsr_ms:.1} ms of the real delay since the caller's sender report, BYE at the end",
            rrs.len()
        );
    }
    let metrics = gw.http("GET", "/metrics", None).1;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("tonewall_rtcp_receiver_reports_sent_total ") && !l.ends_with(" 0")
        ),
        "own receiver reports not counted"
    );
}

/// The return path of a transcoded call through the real binary: an Opus caller whose
/// downstream leg is PCMU hears downstream's PCMU as Opus in its own payload type, the
/// recording's downstream channel (at the caller's 48 kHz) holds it, and downstream's sender
/// reports reach the caller on the Opus stream's clock with its counts.
#[cfg(feature = "opus")]
#[test]
fn an_opus_caller_hears_a_pcmu_downstream_as_opus() {
    use tonewall::codec::{FrameDecoder, FrameEncoder, OpusDecoder, OpusEncoder};
    let gw = Gateway::start("relay-return-opus", "");
    let (down_rtp, down_rtcp) = socket_pair();
    let created = gw.json(
        "POST",
        "/v1/calls",
        Some(&format!(
            r#"{{"downstream":"{}","codec":"opus","payload_type":111,"rate":48000,"downstream_codec":"pcmu"}}"#,
            down_rtp.local_addr().unwrap()
        )),
    );
    let id = created["call_id"].as_str().unwrap().to_string();
    let caller: std::net::SocketAddr = created["caller_rtp"].as_str().unwrap().parse().unwrap();
    let down: std::net::SocketAddr = created["downstream_rtp"].as_str().unwrap().parse().unwrap();
    let (phone, phone_rtcp) = socket_pair();
    phone.set_nonblocking(true).unwrap();
    let mut enc = OpusEncoder::new(24_000).unwrap();
    let mut opus = vec![0u8; enc.max_packet()];
    let quiet = vec![20i16; 960];
    let mut heard = Vec::new();
    let mut buf = [0u8; 2048];
    let t0 = std::time::Instant::now();
    for k in 0..75u32 {
        let due = t0 + Duration::from_millis(20 * u64::from(k));
        std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
        let n = enc.encode(&quiet, &mut opus).unwrap();
        let p = build(111, k as u16, k * 960, SSRC, k == 0, &opus[..n]);
        phone.send_to(&p, caller).unwrap();
        // Downstream answers with a 440 Hz tone in PCMU from the fifth frame on.
        if k >= 5 {
            let j = k - 5;
            let pl: Vec<u8> = (0..160)
                .map(|i| {
                    let t = f64::from(j * 160 + i) / 8000.0;
                    linear_to_ulaw((6000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16)
                })
                .collect();
            let p = build(0, j as u16, j * 160, 0xd0d0, j == 0, &pl);
            down_rtp.send_to(&p, down).unwrap();
        }
        while let Ok(n) = phone.recv(&mut buf) {
            heard.push(parse(&buf[..n]));
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    while let Ok(n) = phone.recv(&mut buf) {
        heard.push(parse(&buf[..n]));
    }
    // Downstream's sender report about its PCMU stream (the last packet's time, 70 packets)
    // reaches the caller on the Opus stream's 48 kHz clock, with what the caller was sent.
    {
        use rtcp_types::{Compound, Packet, RtcpPacketWriterExt, SenderReport};
        let mut b = vec![0u8; 128];
        let n = Compound::builder()
            .add_packet(
                SenderReport::builder(0xd0d0)
                    .ntp_timestamp(1000 << 32)
                    .rtp_timestamp(69 * 160)
                    .packet_count(70)
                    .octet_count(70 * 160),
            )
            .write_into(&mut b)
            .unwrap();
        let gw_down_rtcp = std::net::SocketAddr::new(down.ip(), down.port() + 1);
        down_rtcp.send_to(&b[..n], gw_down_rtcp).unwrap();
        phone_rtcp
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        // The gateway's own reports to the caller may come first (downstream sent none
        // before): receiver reports, or sender reports about the stream it re-encodes, with
        // the wall-clock time of now. Skip them: downstream's carries NTP time 1000 s.
        let sr = loop {
            let n = phone_rtcp
                .recv(&mut buf)
                .expect("no sender report at the caller");
            if let Some(Ok(Packet::Sr(sr))) = Compound::parse(&buf[..n]).unwrap().next() {
                if sr.ntp_timestamp() >> 32 == 1000 {
                    break sr;
                }
            }
        };
        let octets: usize = heard.iter().map(|p| p.payload.len()).sum();
        assert_eq!(sr.ssrc(), 0xd0d0);
        assert_eq!(
            sr.rtp_timestamp(),
            69 * 960,
            "the report's time is not on the Opus clock of the packets the caller got"
        );
        assert_eq!(
            (sr.packet_count() as usize, sr.octet_count() as usize),
            (heard.len(), octets),
            "the report's counts are not those of the Opus stream"
        );
        assert_eq!(sr.ntp_timestamp(), 1000 << 32);
        // The packets carry that clock: downstream's packet 69 went out as 69 * 960.
        assert!(heard.iter().any(|p| p.ts == 69 * 960));
    }
    let end = gw.json("DELETE", &format!("/v1/calls/{id}"), None);
    assert_eq!(end["ended"], "api");
    assert!(
        heard.len() >= 60,
        "{} packets back at the caller",
        heard.len()
    );
    assert!(
        heard.iter().all(|p| p.pt == 111),
        "the caller got another codec"
    );
    let mut dec = OpusDecoder::new().unwrap();
    let mut pcm = vec![0i16; 960];
    let mut x = Vec::new();
    for p in &heard {
        let n = dec.decode(&p.payload, &mut pcm).unwrap();
        x.extend_from_slice(&pcm[..n]);
    }
    let share = |x: &[i16], rate: f64| {
        let w = 2.0 * std::f64::consts::PI * 440.0 / rate;
        let (mut s1, mut s2, mut tot) = (0.0f64, 0.0f64, 0.0f64);
        for &v in x {
            let s0 = f64::from(v) + 2.0 * w.cos() * s1 - s2;
            s2 = s1;
            s1 = s0;
            tot += f64::from(v).powi(2);
        }
        (s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2) * 2.0 / x.len() as f64 / tot.max(1.0)
    };
    let heard_share = share(&x[9600..x.len() - 4800], 48_000.0);
    let (rate, ch, rec) = gateway::read_wav(&gw.dir.join(format!("recordings/{id}.wav")));
    assert_eq!((rate, ch), (48_000, 2));
    let right: Vec<i16> = rec.iter().skip(1).step_by(2).copied().collect();
    let first = right
        .iter()
        .position(|&v| v.abs() > 1000)
        .expect("downstream recorded");
    let rec_share = share(&right[first + 4800..first + 4800 + 48_000], 48_000.0);
    println!(
        "return path to an Opus caller: {} Opus packets, 440 Hz holds {heard_share:.2} of what the caller decodes and {rec_share:.2} of the recording's downstream channel",
        heard.len()
    );
    assert!(heard_share > 0.8, "caller hears {heard_share:.2} of 440 Hz");
    assert!(rec_share > 0.8, "recording holds {rec_share:.2} of 440 Hz");
}
