//! Real peers on 127.0.0.1: ffmpeg sends the bundled payment call as PCMU RTP, GStreamer
//! receives the downstream leg into a WAV, sipp plays RFC 4733 telephone-events from the
//! captures Debian ships with it. multimon-ng then looks for digits in everything that left
//! the gateway (downstream, recording, STT stream), while the secure digit sink must hold
//! exactly the typed digits and every webhook must carry a valid signature and no value.
//!
//! The tools come from Debian (`.ci/run` installs them); a missing tool fails the test.

mod common;
mod gateway;
#[path = "gateway/peers.rs"]
mod peers;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use gateway::{parse, Gateway, Receiver};
use peers::*;

/// How a real-peer run sends and receives: the fixture, the call's codec, ffmpeg's encoder
/// arguments and GStreamer's receiving pipeline.
struct PeerCodec {
    name: &'static str,
    fixture: &'static str,
    rate: u32,
    /// Extra fields of the create-call request.
    create: &'static str,
    ffmpeg: &'static [&'static str],
    /// `udpsrc` caps and the elements from depayloader to raw audio.
    gst_caps: &'static str,
    gst_decode: &'static [&'static str],
}

const PCMU_PEERS: PeerCodec = PeerCodec {
    name: "pcmu",
    fixture: "payment-call-8k-ulaw",
    rate: 8000,
    create: "",
    // 20 ms packets (160 bytes of payload), as a SIP phone sends them.
    ffmpeg: &["-c:a", "pcm_mulaw", "-ar", "8000", "-ac", "1", "-f", "rtp"],
    gst_caps: "caps=application/x-rtp,media=audio,clock-rate=8000,encoding-name=PCMU,payload=0",
    gst_decode: &["rtppcmudepay", "!", "mulawdec"],
};

#[cfg(feature = "opus")]
const OPUS_PEERS: PeerCodec = PeerCodec {
    name: "opus",
    fixture: "payment-call-48k-pcm16",
    rate: 48_000,
    create: r#","codec":"opus","payload_type":111"#,
    // libopus, 20 ms frames at 24 kbit/s VBR, as a WebRTC softphone sends them.
    ffmpeg: &[
        "-c:a",
        "libopus",
        "-b:a",
        "24k",
        "-frame_duration",
        "20",
        "-application",
        "voip",
        "-ar",
        "48000",
        "-ac",
        "1",
        "-payload_type",
        "111",
        "-f",
        "rtp",
    ],
    gst_caps: "caps=application/x-rtp,media=audio,clock-rate=48000,encoding-name=OPUS,payload=111",
    gst_decode: &[
        "rtpopusdepay",
        "!",
        "opusdec",
        "!",
        "audioconvert",
        "!",
        "audio/x-raw,channels=1",
    ],
};

#[test]
fn ffmpeg_to_gstreamer_through_the_gateway_leaks_nothing() {
    peers_run(&PCMU_PEERS);
}

#[test]
#[cfg(feature = "opus")]
fn ffmpeg_opus_to_gstreamer_through_the_gateway_leaks_nothing() {
    peers_run(&OPUS_PEERS);
}

fn peers_run(pc: &PeerCodec) {
    for t in ["ffmpeg", "gst-launch-1.0", "multimon-ng"] {
        need(t);
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let fixture = format!("{root}/sample-audio/{}.wav", pc.fixture);
    let truth = ground_truth_digits(&format!("{root}/sample-audio/{}.json", pc.fixture));
    let tag = format!("peers-ffmpeg-{}", pc.name);
    let call_id = format!("ffmpeg-{}", pc.name);
    let dir = gateway::scratch(&tag);
    let (hook, hooks) = webhook_server();
    let (stt, stt_bytes) = stt_server();
    let (sock, secure) = secure_socket(&dir);
    let gw = Gateway::start(&format!("{tag}-gw"), &sinks_toml(&dir, hook, stt, &sock));

    // GStreamer receives the downstream leg into a WAV.
    let down_port = free_udp_port();
    let down_wav = dir.join("downstream.wav");
    let gst = Command::new("gst-launch-1.0")
        .args(["-q", "-e", "udpsrc"])
        .arg(format!("port={down_port}"))
        .arg(pc.gst_caps)
        .arg("!")
        .args(pc.gst_decode)
        .args(["!", "wavenc", "!", "filesink"])
        .arg(format!("location={}", down_wav.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let c = gw.json(
        "POST",
        "/v1/calls",
        Some(&format!(
            r#"{{"downstream":"127.0.0.1:{down_port}","call_id":"{call_id}"{}}}"#,
            pc.create
        )),
    );
    let caller = c["caller_rtp"].as_str().unwrap().to_string();
    let ev = gateway::follow_events(
        gw.api,
        &format!("/v1/calls/{call_id}/events"),
        None,
        Duration::from_secs(90),
    );
    // ffmpeg sends the recording as RTP in real time.
    let st = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re", "-i", &fixture])
        .args(pc.ffmpeg)
        .arg(format!("rtp://{caller}?pkt_size=172"))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "ffmpeg failed");
    std::thread::sleep(Duration::from_millis(500));
    let end = gw.json("DELETE", &format!("/v1/calls/{call_id}"), None);
    interrupt_and_wait(gst, "gst-launch-1.0");
    let events = ev.join().unwrap();

    // Downstream: continuous, and no digit in it.
    let (rate, ch, down) = gateway::read_wav(&down_wav);
    assert_eq!((rate, ch), (pc.rate, 1));
    let secs = down.len() as f64 / pc.rate as f64;
    assert!(secs > 25.0, "downstream holds only {secs:.1} s");
    assert_eq!(
        common::multimon_digits_at(&down, pc.rate).unwrap(),
        "",
        "multimon-ng decoded digits downstream"
    );
    let spans = ground_truth_spans(&format!("{root}/sample-audio/{}.json", pc.fixture));
    assert_eq!(
        sensitive_hits_at_tones(&down, pc.rate, &spans, 150.0),
        0,
        "our most sensitive detector found a digit where a tone was, downstream"
    );
    // Recording: stereo, masked caller on the left.
    assert_recording_clean(&dir, &call_id, pc.rate);
    let sidecar: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("recordings/{call_id}.json"))).unwrap(),
    )
    .unwrap();
    assert!(
        !sidecar["pauses"].as_array().unwrap().is_empty(),
        "{sidecar}"
    );
    // STT: 16 kHz 16-bit PCM of the masked caller.
    let stt_secs = assert_stt_clean(&stt_bytes, 25.0);
    // The secure sink holds exactly the typed digits.
    let got = settled_secure_digits(&secure, truth.len());
    assert_eq!(got, truth, "secure sink digits");
    // Webhooks: every event arrived, signed, without values.
    let n = wait_for(Duration::from_secs(5), || {
        let h = hooks.lock().unwrap();
        (h.len() >= events.len()).then_some(h.len())
    });
    assert!(
        n.is_some(),
        "webhooks {} < events {}",
        hooks.lock().unwrap().len(),
        events.len()
    );
    check_webhooks(&hooks.lock().unwrap(), &truth);
    assert_eq!(end["stats"]["lost"], 0, "{end}");
    if pc.name == "opus" {
        // Opus to Opus: the caller's own packets go downstream wherever nothing was masked.
        let fwd = end["stats"]["forwarded"].as_u64().unwrap();
        let re = end["stats"]["reencoded"].as_u64().unwrap();
        println!("opus downstream: {fwd} caller packets forwarded unchanged, {re} re-encoded");
        assert!(fwd > re, "{end}");
    }
    // The card number reaches no log line and no event.
    let log = gw.log();
    assert!(log.contains("call created"), "no debug log captured");
    assert!(
        !log.contains(&truth[..16]),
        "card number in the gateway log"
    );
    let ev_text = serde_json::to_string(&events).unwrap();
    assert!(!ev_text.contains(&truth[..16]), "card number in events");
    println!(
        "ffmpeg ({}) -> tonewall -> gstreamer: {:.1} s downstream, {} digits to the secure sink, {} events, {} webhooks, {:.1} s to STT; multimon-ng found nothing downstream, in the recording or in STT",
        pc.name,
        secs,
        got.len(),
        events.len(),
        hooks.lock().unwrap().len(),
        stt_secs
    );
}

const UAS: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="tonewall test UAS: answers with the gateway as media address">
  <recv request="INVITE" crlf="true"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]tw[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=tonewall 1 1 IN IP4 127.0.0.1
      s=-
      c=IN IP4 127.0.0.1
      t=0 0
      m=audio GATEWAY_PORT RTP/AVP 8 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000
    ]]>
  </send>
  <recv request="ACK" crlf="true"/>
  <recv request="BYE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]>
  </send>
</scenario>
"#;

fn uac(digits: &[&str]) -> String {
    let mut plays = String::new();
    for d in digits {
        plays.push_str(&format!(
            "  <nop><action><exec play_pcap_audio=\"pcap/dtmf_2833_{d}.pcap\"/></action></nop>\n  <pause milliseconds=\"400\"/>\n"
        ));
    }
    format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="tonewall test UAC: speech, then keys as RFC 4733 events">
  <send retrans="500">
    <![CDATA[
      INVITE sip:pay@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: caller <sip:caller@[local_ip]:[local_port]>;tag=[pid]c[call_number]
      To: <sip:pay@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:caller@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=caller 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[local_ip_type] [local_ip]
      t=0 0
      m=audio [auto_media_port] RTP/AVP 8 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="200"/>
  <send>
    <![CDATA[
      ACK sip:pay@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: caller <sip:caller@[local_ip]:[local_port]>;tag=[pid]c[call_number]
      To: <sip:pay@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <nop><action><exec play_pcap_audio="pcap/g711a.pcap"/></action></nop>
  <pause milliseconds="7500"/>
{plays}  <send retrans="500">
    <![CDATA[
      BYE sip:pay@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: caller <sip:caller@[local_ip]:[local_port]>;tag=[pid]c[call_number]
      To: <sip:pay@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200"/>
</scenario>
"#
    )
}

#[test]
fn sipp_telephone_events_are_captured_and_never_forwarded() {
    for t in ["sipp", "multimon-ng"] {
        need(t);
    }
    let pcaps = Path::new("/usr/share/sip-tester");
    assert!(
        pcaps.join("dtmf_2833_1.pcap").exists(),
        "sip-tester pcaps missing"
    );
    let dir = gateway::scratch("peers-sipp");
    let (hook, hooks) = webhook_server();
    let (stt, _stt) = stt_server();
    let (sock, secure) = secure_socket(&dir);
    let gw = Gateway::start("peers-sipp-gw", &sinks_toml(&dir, hook, stt, &sock));
    let rx = Receiver::start(Duration::from_millis(1500), Duration::from_secs(40));
    let c = gw.json(
        "POST",
        "/v1/calls",
        Some(&format!(
            r#"{{"downstream":"{}","call_id":"sipp-1","codec":"pcma","telephone_event_pt":101}}"#,
            rx.addr
        )),
    );
    let port = c["caller_rtp"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let ev = gateway::follow_events(
        gw.api,
        "/v1/calls/sipp-1/events",
        None,
        Duration::from_secs(40),
    );
    std::os::unix::fs::symlink(pcaps, dir.join("pcap")).unwrap();
    std::fs::write(dir.join("uas.xml"), UAS.replace("GATEWAY_PORT", &port)).unwrap();
    // The captures come from one session; played in their order, as a phone sends them.
    let keys = ["1", "4", "5", "pound"];
    std::fs::write(dir.join("uac.xml"), uac(&keys)).unwrap();
    let sip_uas = free_udp_port();
    let mut uas = Command::new("sipp")
        .current_dir(&dir)
        .args([
            "-sf",
            "uas.xml",
            "-i",
            "127.0.0.1",
            "-p",
            &sip_uas.to_string(),
            "-m",
            "1",
        ])
        .args(["-nostdin", "-timeout", "40s", "-timeout_error"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let st = Command::new("sipp")
        .current_dir(&dir)
        .args([
            "-sf",
            "uac.xml",
            "-i",
            "127.0.0.1",
            "-m",
            "1",
            "-timeout",
            "30s",
        ])
        .args(["-timeout_error", "-nostdin"])
        .arg(format!("127.0.0.1:{sip_uas}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "sipp UAC failed");
    let uas_ok = wait_for(Duration::from_secs(5), || uas.try_wait().unwrap());
    if uas_ok.is_none() {
        let _ = uas.kill();
    }
    assert!(uas_ok.is_some_and(|s| s.success()), "sipp UAS failed");
    std::thread::sleep(Duration::from_millis(300));
    let end = gw.json("DELETE", "/v1/calls/sipp-1", None);
    let events = ev.join().unwrap();
    let got: Vec<_> = rx.join().iter().map(|p| parse(p)).collect();
    // 7.1 s of speech (236 packets of 30 ms) and the keys' silence fill.
    assert!(
        got.len() >= 236,
        "downstream got {} packets; {end}",
        got.len()
    );
    for p in &got {
        assert_eq!(
            p.pt, 8,
            "a telephone-event or foreign packet went downstream"
        );
    }
    for w in got.windows(2) {
        assert_eq!(
            w[1].seq,
            w[0].seq.wrapping_add(1),
            "hole in downstream sequence"
        );
    }
    let pcm: Vec<i16> = got
        .iter()
        .flat_map(|p| {
            p.payload
                .iter()
                .map(|&b| tonewall::codec::alaw_to_linear(b))
        })
        .collect();
    assert_eq!(common::multimon_digits(&pcm).unwrap(), "");
    let want = "145#";
    let d = wait_for(Duration::from_secs(5), || {
        let d = secure_digits(&secure.lock().unwrap());
        (d.len() >= want.len()).then_some(d)
    })
    .unwrap_or_else(|| secure_digits(&secure.lock().unwrap()));
    assert_eq!(d, want, "secure sink digits");
    let digit_events: Vec<_> = events.iter().filter(|e| e["event"] == "digit").collect();
    assert!(digit_events
        .iter()
        .all(|e| e["source"] == "telephone_event"));
    assert_eq!(end["stats"]["digits_from_events"], 4, "{end}");
    check_webhooks(&hooks.lock().unwrap(), "");
    let (_, _, rec) = gateway::read_wav(&dir.join("recordings/sipp-1.wav"));
    assert_eq!(common::multimon_digits(&left(&rec)).unwrap(), "");
    println!(
        "sipp (pcap g711a + RFC 4733 keys {keys:?}) -> tonewall: {} packets downstream, all PCMA, secure sink got {} digits",
        got.len(),
        d.len()
    );
}

/// ffmpeg's RTCP through the gateway: the sender reports ffmpeg sends beside its RTP reach
/// downstream naming the stream downstream actually receives (the gateway's SSRC, its
/// timestamps, its counts), so a receiver that maps RTP time to NTP time by them (a
/// recorder aligning streams, lip sync) can use them. Relayed as they came they named a
/// stream downstream never sees.
#[test]
fn ffmpeg_sender_reports_reach_downstream_about_the_stream_it_receives() {
    rtcp_run(&PCMU_PEERS);
}

/// The same with an Opus caller, whose packets the gateway mostly forwards (spliced).
#[cfg(feature = "opus")]
#[test]
fn ffmpeg_opus_sender_reports_reach_downstream_about_the_stream_it_receives() {
    rtcp_run(&OPUS_PEERS);
}

fn rtcp_run(pc: &PeerCodec) {
    need("ffmpeg");
    let root = env!("CARGO_MANIFEST_DIR");
    let fixture = format!("{root}/sample-audio/{}.wav", pc.fixture);
    let gw = Gateway::start(&format!("peers-rtcp-{}", pc.name), "");
    let down_port = free_udp_port();
    let rtp = std::net::UdpSocket::bind(("127.0.0.1", down_port)).unwrap();
    let rtcp = std::net::UdpSocket::bind(("127.0.0.1", down_port + 1)).unwrap();
    rtp.set_nonblocking(true).unwrap();
    rtcp.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let c = gw.json(
        "POST",
        "/v1/calls",
        Some(&format!(
            r#"{{"downstream":"127.0.0.1:{down_port}"{}}}"#,
            pc.create
        )),
    );
    let id = c["call_id"].as_str().unwrap().to_string();
    let caller = c["caller_rtp"].as_str().unwrap().to_string();
    // Both downstream sockets are read until ffmpeg is done and a little after; each RTCP
    // compound is kept with how many RTP packets had arrived before it.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let st = stop.clone();
    let reader = std::thread::spawn(move || {
        let (mut got_rtp, mut got_rtcp) = (Vec::new(), Vec::new());
        let (mut buf, mut cbuf) = ([0u8; 2048], [0u8; 2048]);
        while !st.load(std::sync::atomic::Ordering::Relaxed) {
            while let Ok(n) = rtp.recv(&mut buf) {
                got_rtp.push(parse(&buf[..n]));
            }
            if let Ok(n) = rtcp.recv(&mut cbuf) {
                // The RTP that left before this report, counted before it.
                while let Ok(m) = rtp.recv(&mut buf) {
                    got_rtp.push(parse(&buf[..m]));
                }
                got_rtcp.push((got_rtp.len(), cbuf[..n].to_vec()));
            }
        }
        (got_rtp, got_rtcp)
    });
    let status = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-re",
            "-t",
            "12",
            "-i",
            &fixture,
        ])
        .args(pc.ffmpeg)
        .arg(format!("rtp://{caller}?pkt_size=172"))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "ffmpeg failed");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (got_rtp, got_rtcp) = reader.join().unwrap();
    let end = gw.json("DELETE", &format!("/v1/calls/{id}"), None);
    assert_eq!(end["ended"], "api");

    assert!(
        got_rtp.len() > 400,
        "{} RTP packets downstream",
        got_rtp.len()
    );
    let ours = got_rtp[0].ssrc;
    let (ts_lo, ts_hi) = (got_rtp[0].ts, got_rtp.last().unwrap().ts);
    let mut srs = 0;
    for (seen, b) in &got_rtcp {
        let compound = rtcp_types::Compound::parse(b).expect("valid RTCP downstream");
        for p in compound {
            match p.unwrap() {
                rtcp_types::Packet::Sr(sr) => {
                    srs += 1;
                    assert_eq!(sr.ssrc(), ours, "sender report names the gateway's stream");
                    let ts = sr.rtp_timestamp();
                    // The same media instant on the gateway's timeline: inside what
                    // downstream received (give or take the look-ahead and a packet).
                    assert!(
                        ts.wrapping_sub(ts_lo) as i32 >= 0
                            && ts_hi.wrapping_sub(ts) as i32 >= -(pc.rate as i32 / 25),
                        "SR timestamp {ts} outside the stream's {ts_lo}..{ts_hi}"
                    );
                    let pc = sr.packet_count() as usize;
                    let oc = sr.octet_count() as usize;
                    eprintln!("SR: {pc} packets, {oc} octets; downstream had {seen}");
                    // What the gateway had sent when the report passed: no more than had
                    // arrived when the test read it (it reads a little late under load),
                    // and its octets exactly the payload bytes of those packets.
                    assert!(
                        pc <= *seen && *seen - pc <= 50,
                        "SR counts {pc} packets, downstream had {seen}"
                    );
                    let bytes: usize = got_rtp[..pc].iter().map(|p| p.payload.len()).sum();
                    assert_eq!(oc, bytes, "octets of the first {pc} packets downstream");
                }
                rtcp_types::Packet::Sdes(sdes) => {
                    for ch in sdes.chunks().take(1) {
                        assert_eq!(ch.ssrc(), ours, "SDES names the gateway's stream");
                    }
                }
                rtcp_types::Packet::Bye(bye) => {
                    assert!(
                        bye.ssrcs().all(|s| s == ours),
                        "BYE names the gateway's stream"
                    );
                }
                _ => {}
            }
        }
    }
    println!(
        "ffmpeg ({}) RTCP through the gateway: {} compounds, {srs} sender reports downstream, all about SSRC {ours:#x}; {} RTP packets",
        pc.name,
        got_rtcp.len(),
        got_rtp.len()
    );
    assert!(srs >= 2, "ffmpeg's sender reports did not reach downstream");
}
