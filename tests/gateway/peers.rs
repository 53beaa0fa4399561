//! Shared pieces of the real-peer tests (RTP peers and WebRTC publishers): stand-in sinks
//! (webhook receiver, secure digit socket, speech-to-text WebSocket) that keep what they are
//! given, ground truth of the fixtures, and the checks every leak test makes on what left
//! the gateway. Test-only; allocates freely; every wait is bounded.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const WEBHOOK_SECRET: &str = "whsec-test";
pub const SECURE_SECRET: &str = "digits-secret";

pub fn need(tool: &str) {
    assert!(
        crate::gateway::have(tool),
        "{tool} is not installed (.ci/run installs it from Debian)"
    );
}

/// A webhook receiver: answers 200 and keeps (signature header, body) of each POST.
/// (signature header, body) of each webhook received.
pub type Hooks = Arc<Mutex<Vec<(String, String)>>>;

pub fn webhook_server() -> (SocketAddr, Hooks) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let g = g.clone();
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(10))).ok();
                let mut r = BufReader::new(s.try_clone().unwrap());
                loop {
                    let mut sig = String::new();
                    let mut len = 0usize;
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = l.split_once(':') {
                            match k.to_ascii_lowercase().as_str() {
                                "content-length" => len = v.trim().parse().unwrap_or(0),
                                "tonewall-signature" => sig = v.trim().to_string(),
                                _ => {}
                            }
                        }
                    }
                    let mut body = vec![0u8; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    g.lock()
                        .unwrap()
                        .push((sig, String::from_utf8_lossy(&body).to_string()));
                    if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, got)
}

/// The secure digit sink as a Unix socket: keeps each delivered line.
pub fn secure_socket(dir: &Path) -> (PathBuf, Arc<Mutex<Vec<String>>>) {
    let path = dir.join("digits.sock");
    let l = UnixListener::bind(&path).unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let g = g.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(s).lines().map_while(Result::ok) {
                    g.lock().unwrap().push(line);
                }
            });
        }
    });
    (path, got)
}

/// A speech-to-text stand-in: a WebSocket server that keeps every binary message.
pub fn stt_server() -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let std_l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = std_l.local_addr().unwrap();
    std_l.set_nonblocking(true).unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            use futures_util::StreamExt;
            let l = tokio::net::TcpListener::from_std(std_l).unwrap();
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                let g = g.clone();
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                        return;
                    };
                    while let Some(Ok(m)) = ws.next().await {
                        if let tokio_tungstenite::tungstenite::Message::Binary(b) = m {
                            g.lock().unwrap().extend_from_slice(&b);
                        }
                    }
                });
            }
        });
    });
    (addr, got)
}

pub fn free_udp_port() -> u16 {
    // Even, with the next port free as well, for a receiver that also wants RTCP.
    loop {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = s.local_addr().unwrap().port();
        if p.is_multiple_of(2) && UdpSocket::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

pub fn interrupt_and_wait(mut c: Child, what: &str) {
    let _ = Command::new("kill")
        .args(["-INT", &c.id().to_string()])
        .status();
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if c.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = c.kill();
    panic!("{what} did not stop");
}

pub fn ground_truth_digits(json: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    v["digits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digit"].as_str().unwrap().to_string())
        .collect()
}

/// Where the fixture's tones are, ms.
pub fn ground_truth_spans(json: &str) -> Vec<(f64, f64)> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    v["digits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["start_ms"].as_f64().unwrap(),
                d["end_ms"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// Our most sensitive detector over received audio, counting only what it finds within
/// `slack_ms` of a true tone (the receiver's clock starts with the first packet, a look-ahead
/// later). Elsewhere it also fires on the fixture's speech (talk-off, which it is allowed:
/// it reports anything remotely tone-like from 12 ms on), and that is not a leak.
pub fn sensitive_hits_at_tones(x: &[i16], rate: u32, spans: &[(f64, f64)], slack_ms: f64) -> usize {
    let found = crate::common::detect(
        &crate::common::resample_to_8k(x, rate),
        &tonewall::dtmf::DetectorConfig::most_sensitive(),
    );
    found
        .iter()
        .filter(|f| {
            spans
                .iter()
                .any(|&(a, b)| f.end_ms > a - slack_ms && f.start_ms < b + slack_ms)
        })
        .count()
}

/// Digits delivered to the secure sink, in index order, after checking each signature.
pub fn secure_digits(lines: &[String]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut v: Vec<(u64, String)> = lines
        .iter()
        .map(|l| {
            let (sig, body) = l.split_once('\t').expect("signature TAB body");
            assert!(
                tonewall::serve::sinks::verify(
                    SECURE_SECRET.as_bytes(),
                    sig,
                    body.as_bytes(),
                    300,
                    now
                ),
                "bad secure-sink signature"
            );
            let j: serde_json::Value = serde_json::from_str(body).unwrap();
            (
                j["index"].as_u64().unwrap(),
                j["digit"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v.dedup();
    v.into_iter().map(|(_, d)| d).collect()
}

pub fn check_webhooks(hooks: &[(String, String)], secret_values: &str) -> usize {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for (sig, body) in hooks {
        assert!(
            tonewall::serve::sinks::verify(
                WEBHOOK_SECRET.as_bytes(),
                sig,
                body.as_bytes(),
                300,
                now
            ),
            "bad webhook signature on {body}"
        );
        let j: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(
            j.get("digit").is_none(),
            "a webhook carries a digit field: {body}"
        );
        if secret_values.len() >= 6 {
            assert!(!body.contains(secret_values), "card number in a webhook");
        }
    }
    hooks.len()
}

pub fn sinks_toml(dir: &Path, hook: SocketAddr, stt: SocketAddr, secure: &Path) -> String {
    format!(
        "[sinks]\nrecording_dir = \"{}\"\nstt_url = \"ws://{stt}/stt\"\nwebhook_url = \"http://{hook}/hook\"\nwebhook_secret = \"{WEBHOOK_SECRET}\"\nsecure_target = {{ unix = \"{}\" }}\nsecure_secret = \"{SECURE_SECRET}\"\n",
        dir.join("recordings").display(),
        secure.display()
    )
}

pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

pub fn left(stereo: &[i16]) -> Vec<i16> {
    stereo.iter().step_by(2).copied().collect()
}

/// What left the gateway as PCMU downstream, decoded: neither multimon-ng nor our most
/// sensitive detector (within `slack_ms` of a true tone) finds a digit, and it holds at
/// least `min_secs`. Returns its length in seconds.
pub fn assert_pcmu_downstream_clean(
    got: &[Vec<u8>],
    spans: &[(f64, f64)],
    slack_ms: f64,
    min_secs: f64,
) -> f64 {
    assert!(!got.is_empty(), "nothing arrived downstream");
    let mut lin = Vec::new();
    for p in got {
        assert_eq!(crate::gateway::parse(p).pt, 0, "downstream is PCMU only");
        lin.extend(p[12..].iter().map(|&c| tonewall::codec::ulaw_to_linear(c)));
    }
    assert_downstream_audio_clean(&lin, 8000, spans, slack_ms, min_secs)
}

/// Decoded downstream audio at `rate`: at least `min_secs` long, and neither multimon-ng nor
/// our most sensitive detector (within `slack_ms` of a true tone) finds a digit in it.
/// Returns its length in seconds.
fn assert_downstream_audio_clean(
    lin: &[i16],
    rate: u32,
    spans: &[(f64, f64)],
    slack_ms: f64,
    min_secs: f64,
) -> f64 {
    let secs = lin.len() as f64 / rate as f64;
    assert!(secs > min_secs, "downstream holds only {secs:.1} s");
    assert_eq!(
        crate::common::multimon_digits_at(lin, rate).unwrap(),
        "",
        "multimon-ng decoded digits downstream"
    );
    assert_eq!(
        sensitive_hits_at_tones(lin, rate, spans, slack_ms),
        0,
        "our most sensitive detector found a digit where a tone was, downstream"
    );
    secs
}

/// What left the gateway as Opus downstream (payload type `pt`), decoded with libopus the
/// way the receiver would, packet after packet: neither multimon-ng nor our most sensitive
/// detector (within `slack_ms` of a true tone) finds a digit, and it holds at least
/// `min_secs`. Returns its length in seconds.
#[cfg(feature = "opus")]
pub fn assert_opus_downstream_clean(
    got: &[Vec<u8>],
    pt: u8,
    spans: &[(f64, f64)],
    slack_ms: f64,
    min_secs: f64,
) -> f64 {
    use tonewall::codec::{FrameDecoder, OpusDecoder};
    assert!(!got.is_empty(), "nothing arrived downstream");
    let mut dec = OpusDecoder::new().unwrap();
    let mut pcm = vec![0i16; tonewall::codec::OPUS_MAX_PACKET_SAMPLES];
    let mut lin = Vec::new();
    for p in got {
        assert_eq!(crate::gateway::parse(p).pt, pt, "downstream is Opus only");
        let n = dec
            .decode(&p[12..], &mut pcm)
            .expect("downstream Opus decodes");
        lin.extend_from_slice(&pcm[..n]);
    }
    assert_downstream_audio_clean(&lin, 48_000, spans, slack_ms, min_secs)
}

/// The call's recording: stereo at `rate`, and multimon-ng decodes nothing from its masked
/// caller channel. (Our detector is not run on it: paused spans are left out, so its clock
/// no longer lines up with the fixture's tone positions.)
pub fn assert_recording_clean(dir: &Path, call_id: &str, rate: u32) {
    let (r, ch, rec) = crate::gateway::read_wav(&dir.join(format!("recordings/{call_id}.wav")));
    assert_eq!((r, ch), (rate, 2));
    assert_eq!(
        crate::common::multimon_digits_at(&left(&rec), rate).unwrap(),
        "",
        "digits in the recording"
    );
}

/// What the STT stand-in received (16 kHz 16-bit PCM of the masked caller): at least
/// `min_secs`, nothing multimon-ng decodes. Returns its length in seconds.
pub fn assert_stt_clean(bytes: &Mutex<Vec<u8>>, min_secs: f64) -> f64 {
    let pcm: Vec<i16> = bytes
        .lock()
        .unwrap()
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let secs = pcm.len() as f64 / 16000.0;
    assert!(secs > min_secs, "STT got only {secs:.1} s");
    assert_eq!(
        crate::common::multimon_digits_at(&pcm, 16000).unwrap(),
        "",
        "digits in the STT stream"
    );
    secs
}

/// The secure sink's digits once `n` have arrived, or whatever is there after 5 s.
pub fn settled_secure_digits(secure: &Mutex<Vec<String>>, n: usize) -> String {
    wait_for(Duration::from_secs(5), || {
        let d = secure_digits(&secure.lock().unwrap());
        (d.len() >= n).then_some(d)
    })
    .unwrap_or_else(|| secure_digits(&secure.lock().unwrap()))
}
