//! `tonewall loadgen`: drives N concurrent real-time calls of 20 ms PCMU with DTMF through a
//! running gateway on loopback and reports what they cost and how they fared: gateway CPU
//! per call-second, packet loss, added latency percentiles and the gateway's memory over
//! time.
//!
//! Each call is one UDP socket that is both the caller (it sends to the call's caller port)
//! and the downstream leg (the call's `downstream` is the same socket), so the k-th packet
//! back is the masked k-th packet sent and its latency is one subtraction.
//!
//! Owns: the load pattern and the measurement.
//! Must never: run against anything but the gateway it was pointed at; hide loss (every
//! packet sent and not received within the drain time counts as lost).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::codec::linear_to_ulaw;
use crate::dtmf::Digit;
use crate::signal::{add_dtmf, add_white_noise, power_for_dbm0, to_i16, Rng, ToneSpec};

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Control API address of the gateway.
    pub api: SocketAddr,
    /// Bearer token, if the gateway needs one.
    pub token: Option<String>,
    /// Concurrent calls.
    pub calls: usize,
    /// Measured duration after the ramp, s.
    pub seconds: u64,
    /// Time over which calls are started, s.
    pub ramp_seconds: u64,
    /// Look-ahead asked for each call, ms.
    pub lookahead_ms: u32,
}

/// What came out.
#[derive(Debug, Serialize)]
pub struct LoadReport {
    /// Calls that ran.
    pub calls: usize,
    /// Measured seconds.
    pub seconds: f64,
    /// Packets sent in the measured period (all calls).
    pub packets_sent: u64,
    /// Of those, packets that never came back.
    pub packets_lost: u64,
    /// Loss ratio.
    pub loss: f64,
    /// Added latency (send to masked packet back), µs.
    pub latency_us_p50: u64,
    /// 99th percentile, µs.
    pub latency_us_p99: u64,
    /// 99.9th percentile, µs.
    pub latency_us_p999: u64,
    /// Worst, µs.
    pub latency_us_max: u64,
    /// Look-ahead of each call (the media delay the gateway adds on purpose), ms.
    pub lookahead_ms: u32,
    /// Gateway CPU seconds used per call-second of media.
    pub gateway_cpu_ms_per_call_second: f64,
    /// Gateway CPU use, as a share of one core.
    pub gateway_cores: f64,
    /// Gateway resident memory at the start and end of the measured period, MiB, and the
    /// samples in between (every 10 s).
    pub gateway_rss_mib: Vec<f64>,
    /// Sender ticks (1 ms each) that fell more than 5 ms behind schedule (load generator
    /// saturation; the figures are then pessimistic).
    pub late_ticks: u64,
}

/// One PCMU call's worth of audio: 10 s of line noise with a 16-digit card number in it,
/// looped.
fn payloads() -> Vec<[u8; 160]> {
    let mut x = vec![0.0; 80_000];
    let mut rng = Rng::new(11);
    add_white_noise(&mut x, power_for_dbm0(-50.0), &mut rng);
    for (i, c) in "4111111111111111".chars().enumerate() {
        if let Some(d) = Digit::from_char(c) {
            let at = 8000 + i * 1600;
            add_dtmf(&mut x, 8000, at, 640, d, ToneSpec::level(-10.0), &mut rng);
        }
    }
    to_i16(&x)
        .chunks_exact(160)
        .map(|c| {
            let mut p = [0u8; 160];
            for (o, &s) in p.iter_mut().zip(c) {
                *o = linear_to_ulaw(s);
            }
            p
        })
        .collect()
}

/// A minimal HTTP/1.1 request to the gateway's API (Connection: close).
async fn http(
    api: SocketAddr,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(api).await?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {api}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await?;
    let text = String::from_utf8_lossy(&resp).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

async fn gateway_usage(o: &LoadOptions) -> Option<(f64, f64)> {
    let (_, m) = http(o.api, o.token.as_deref(), "GET", "/metrics", "")
        .await
        .ok()?;
    Some((
        metric(&m, "process_cpu_seconds_total")?,
        metric(&m, "process_resident_memory_bytes")? / 1_048_576.0,
    ))
}

struct CallState {
    sock: UdpSocket,
    id: String,
    /// The call's caller port on the gateway.
    to: SocketAddr,
    /// Packet period (20 ms) at which this call starts (ramp).
    start_tick: u64,
    /// Offset of this call's packets within each 20 ms period, ms. Real calls are not in
    /// step; sending every call's packet in the same instant would measure a queue the
    /// load generator made, not the gateway.
    phase: u64,
    /// Send instants of the packets, by packet index modulo the ring size; `None` for
    /// packets sent outside the measured period.
    sent_at: Mutex<Vec<Option<Instant>>>,
}

const RING: usize = 256;
const TICK: Duration = Duration::from_millis(20);
/// Sender resolution: each call sends in its own 1 ms slot of the 20 ms period.
const SLOT: Duration = Duration::from_millis(1);
const SLOTS: u64 = 20;

async fn create_call(o: &LoadOptions, i: usize, ramp_ticks: u64) -> Result<CallState, String> {
    let sock = UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind: {e}"))?;
    let me = sock.local_addr().map_err(|e| e.to_string())?;
    let body = format!(
        r#"{{"downstream":"{me}","lookahead_ms":{},"sinks":{{"recording":false}},"call_id":"load-{}-{i}"}}"#,
        o.lookahead_ms,
        std::process::id()
    );
    let (code, resp) = http(o.api, o.token.as_deref(), "POST", "/v1/calls", &body)
        .await
        .map_err(|e| format!("cannot reach the gateway at {}: {e}", o.api))?;
    if code != 201 {
        return Err(format!("creating call {i}: HTTP {code} {}", resp.trim()));
    }
    let v: serde_json::Value = serde_json::from_str(&resp).map_err(|e| e.to_string())?;
    let to: SocketAddr = v["caller_rtp"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or("no caller_rtp in the answer")?;
    Ok(CallState {
        sock,
        id: v["call_id"].as_str().unwrap_or_default().to_owned(),
        to,
        start_tick: ramp_ticks * i as u64 / o.calls.max(1) as u64,
        phase: (i as u64 * 7) % SLOTS,
        sent_at: Mutex::new(vec![None; RING]),
    })
}

/// Receive one call's masked packets until 3 s pass without one; time each against its
/// send instant.
async fn receive(
    c: Arc<CallState>,
    hist: Arc<Mutex<Histogram<u64>>>,
    received: Arc<AtomicU64>,
    first_wait: Duration,
) {
    let mut buf = [0u8; 2048];
    let mut first: Option<u16> = None;
    let Ok(mut local) = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3) else {
        return;
    };
    // The call's first packet may be a whole ramp away; after that, 3 s of silence means
    // the gateway is done with it.
    let mut wait = first_wait;
    while let Ok(Ok(len)) = tokio::time::timeout(wait, c.sock.recv(&mut buf)).await {
        wait = Duration::from_secs(3);
        let now = Instant::now();
        let Ok(p) = rtp_types::RtpPacket::parse(&buf[..len]) else {
            continue;
        };
        // One masked packet comes back per packet sent, in order, with the gateway's own
        // contiguous sequence numbers: the k-th back is the k-th sent.
        let f = *first.get_or_insert(p.sequence_number());
        let k = p.sequence_number().wrapping_sub(f) as usize;
        let t = c.sent_at.lock().ok().and_then(|mut s| s[k % RING].take());
        if let Some(t) = t {
            let _ = local.record(now.duration_since(t).as_micros().max(1) as u64);
            received.fetch_add(1, Ordering::Relaxed);
        }
    }
    if let Ok(mut g) = hist.lock() {
        let _ = g.add(&local);
    }
}

/// Run the load and report.
pub async fn run(o: LoadOptions) -> Result<LoadReport, String> {
    let audio = Arc::new(payloads());
    let ramp_ticks = o.ramp_seconds * 1000 / TICK.as_millis() as u64;
    let mut calls = Vec::with_capacity(o.calls);
    for i in 0..o.calls {
        calls.push(Arc::new(create_call(&o, i, ramp_ticks).await?));
    }
    let hist = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?,
    ));
    let received = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let late_ticks = Arc::new(AtomicU64::new(0));
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));

    let receivers: Vec<_> = calls
        .iter()
        .map(|c| {
            let first_wait = Duration::from_secs(o.ramp_seconds + 5);
            tokio::spawn(receive(
                c.clone(),
                hist.clone(),
                received.clone(),
                first_wait,
            ))
        })
        .collect();

    // Senders: a few tasks, each pacing a slice of the calls every 20 ms, each call in its
    // own millisecond of the period.
    let senders = 4.min(o.calls.max(1));
    let per = o.calls.div_ceil(senders).max(1);
    let mut send_tasks = Vec::new();
    for chunk in calls.chunks(per) {
        let chunk = chunk.to_vec();
        let audio = audio.clone();
        let sent = sent.clone();
        let late = late_ticks.clone();
        let measuring = measuring.clone();
        let stop = stop.clone();
        send_tasks.push(tokio::spawn(async move {
            let mut by_slot: Vec<Vec<(usize, Arc<CallState>)>> = vec![Vec::new(); SLOTS as usize];
            for (j, c) in chunk.into_iter().enumerate() {
                by_slot[c.phase as usize].push((j, c));
            }
            let mut tick = tokio::time::interval(SLOT);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut pkt = [0u8; 256];
            let mut slot: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                let due = tick.tick().await;
                if due.elapsed() > Duration::from_millis(5) {
                    late.fetch_add(1, Ordering::Relaxed);
                }
                let m = measuring.load(Ordering::Relaxed);
                let period = slot / SLOTS;
                for (j, c) in &by_slot[(slot % SLOTS) as usize] {
                    let Some(i) = period.checked_sub(c.start_tick) else {
                        continue;
                    };
                    let payload = &audio[i as usize % audio.len()];
                    let Ok(n) = rtp_types::RtpPacketBuilder::new()
                        .payload_type(0)
                        .marker_bit(i == 0)
                        .sequence_number(i as u16)
                        .timestamp((i as u32).wrapping_mul(160))
                        .ssrc(0x5eed_0000 + *j as u32)
                        .payload(payload.as_slice())
                        .write_into(&mut pkt)
                    else {
                        continue;
                    };
                    if let Ok(mut s) = c.sent_at.lock() {
                        s[i as usize % RING] = m.then(Instant::now);
                    }
                    if m {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = c.sock.send_to(&pkt[..n], c.to).await;
                }
                slot += 1;
            }
        }));
    }

    // Ramp, then measure.
    tokio::time::sleep(Duration::from_secs(o.ramp_seconds) + Duration::from_secs(1)).await;
    let t0 = Instant::now();
    let (cpu0, rss0) = gateway_usage(&o).await.unwrap_or((0.0, 0.0));
    let mut rss = vec![rss0];
    measuring.store(true, Ordering::Relaxed);
    let end = t0 + Duration::from_secs(o.seconds);
    while Instant::now() < end {
        let left = end.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_secs(10))).await;
        if let Some((_, r)) = gateway_usage(&o).await {
            rss.push(r);
        }
    }
    measuring.store(false, Ordering::Relaxed);
    let (cpu1, _) = gateway_usage(&o).await.unwrap_or((0.0, 0.0));
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in send_tasks {
        let _ = t.await;
    }
    for c in &calls {
        let _ = http(
            o.api,
            o.token.as_deref(),
            "DELETE",
            &format!("/v1/calls/{}", c.id),
            "",
        )
        .await;
    }
    for t in receivers {
        let _ = t.await;
    }
    let h = hist.lock().map_err(|_| "histogram lock")?;
    let sent = sent.load(Ordering::Relaxed);
    let got = received.load(Ordering::Relaxed);
    let cpu = cpu1 - cpu0;
    Ok(LoadReport {
        calls: o.calls,
        seconds: secs,
        packets_sent: sent,
        packets_lost: sent.saturating_sub(got),
        loss: if sent == 0 {
            0.0
        } else {
            sent.saturating_sub(got) as f64 / sent as f64
        },
        latency_us_p50: h.value_at_quantile(0.5),
        latency_us_p99: h.value_at_quantile(0.99),
        latency_us_p999: h.value_at_quantile(0.999),
        latency_us_max: h.max(),
        lookahead_ms: o.lookahead_ms,
        gateway_cpu_ms_per_call_second: cpu * 1000.0 / (o.calls as f64 * secs),
        gateway_cores: cpu / secs,
        gateway_rss_mib: rss,
        late_ticks: late_ticks.load(Ordering::Relaxed),
    })
}
