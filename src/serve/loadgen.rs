//! `tonewall loadgen`: drives N concurrent real-time calls of 20 ms PCMU with DTMF through a
//! running gateway on loopback and reports what they cost and how they fared: gateway CPU
//! per call-second, packet loss, added latency percentiles and the gateway's memory over
//! time.
//!
//! The generator must cost far less than the gateway it measures, or on a small machine it
//! measures itself. So the media path is two plain threads and two sockets, not a task per
//! call: one socket is every call's caller (a `sendmmsg` per 100 µs slot carries the packets
//! of the calls whose turn it is), one is every call's downstream (a `recvmmsg` takes what
//! arrived, each datagram stamped by the kernel). A packet's latency is the kernel's receive
//! stamp minus the instant just before its batch was handed to the kernel, so it includes
//! both kernel paths and never the generator's own scheduling on the way back.
//!
//! Owns: the load pattern and the measurement.
//! Must never: run against anything but the gateway it was pointed at; hide loss (every
//! packet sent and not received within the drain time counts as lost).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::metrics::process_usage;
use super::sys::{
    realtime_ns, set_realtime_priority, set_receive_buffer, set_send_buffer, BatchReceiver,
    BatchSender, BATCH,
};

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
    /// Run the sender and receiver under `SCHED_FIFO` at this priority (0: ordinary), so
    /// the simulated phones keep time when the gateway's media threads run at real-time
    /// priority too.
    pub realtime_priority: u8,
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
    /// Added latency (caller packet handed to the kernel to the masked packet's kernel
    /// receive stamp downstream), µs.
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
    /// The load generator's own CPU, as a share of one core (it shares the machine).
    pub loadgen_cores: f64,
    /// Gateway resident memory at the start and end of the measured period, MiB, and the
    /// samples in between (every 10 s).
    pub gateway_rss_mib: Vec<f64>,
    /// Sender slots (100 µs each) that started more than 5 ms behind schedule (load
    /// generator saturation; the figures are then pessimistic).
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

/// Packets of one call remembered by send time; a packet later than this many periods
/// (2.56 s) is counted lost.
const RING: usize = 128;
const PERIOD: Duration = Duration::from_millis(20);
/// Sender resolution: each call sends in its own 100 µs slot of the 20 ms period, so at
/// 2,000 calls ten packets leave together, not a hundred (real phones are not in step, and
/// a burst the generator makes would be measured as gateway queueing).
const SLOT: Duration = Duration::from_micros(100);
const SLOTS: u64 = 200;
/// How often the receiver looks for masked packets.
const RECEIVE_POLL: Duration = Duration::from_micros(500);

/// A call as the generator sees it.
struct LoadCall {
    id: String,
    /// The call's caller port on the gateway.
    to: SocketAddr,
    /// The gateway port its masked packets come from.
    from_port: u16,
    /// Packet period at which this call starts (ramp).
    start_period: u64,
    /// Its slot within each 20 ms period.
    slot: u64,
}

async fn create_call(
    o: &LoadOptions,
    i: usize,
    downstream: SocketAddr,
    ramp_periods: u64,
) -> Result<LoadCall, String> {
    let body = format!(
        r#"{{"downstream":"{downstream}","lookahead_ms":{},"sinks":{{"recording":false}},"call_id":"load-{}-{i}"}}"#,
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
    let addr = |k: &str| -> Result<SocketAddr, String> {
        v[k].as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no {k} in the answer"))
    };
    Ok(LoadCall {
        id: v["call_id"].as_str().unwrap_or_default().to_owned(),
        to: addr("caller_rtp")?,
        from_port: addr("downstream_rtp")?.port(),
        start_period: ramp_periods * i as u64 / o.calls.max(1) as u64,
        // 67 is prime to 200: consecutive calls land far apart and every slot is used.
        slot: (i as u64 * 67) % SLOTS,
    })
}

/// State the sender and receiver threads share: the send time of every packet in flight,
/// by call and packet index modulo [`RING`] (0: not measured).
struct Shared {
    sent_ns: Vec<AtomicU64>,
    measuring: AtomicBool,
    stop: AtomicBool,
    sent: AtomicU64,
    late_slots: AtomicU64,
}

impl Shared {
    fn slot(&self, call: usize, k: u64) -> &AtomicU64 {
        &self.sent_ns[call * RING + (k as usize % RING)]
    }
}

/// The sender thread: every 100 µs, the calls of that slot send their next packet, all in
/// one `sendmmsg`, stamped just before it (so a packet's latency includes the kernel's
/// send path, never less than the gateway's share).
fn send_loop(
    sock: UdpSocket,
    calls: Arc<Vec<LoadCall>>,
    sh: Arc<Shared>,
    audio: Vec<[u8; 160]>,
    priority: u8,
) {
    if priority > 0 {
        if let Err(e) = set_realtime_priority(priority.into()) {
            eprintln!("loadgen: sender keeps ordinary scheduling: {e}");
        }
    }
    let mut by_slot: Vec<Vec<usize>> = vec![Vec::new(); SLOTS as usize];
    for (i, c) in calls.iter().enumerate() {
        by_slot[c.slot as usize].push(i);
    }
    let mut batch = BatchSender::new();
    let mut idx: Vec<usize> = Vec::with_capacity(BATCH);
    let t0 = Instant::now();
    let mut n: u64 = 0;
    while !sh.stop.load(Ordering::Relaxed) {
        let due = t0 + SLOT * n as u32;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else if now - due > Duration::from_millis(5) {
            sh.late_slots.fetch_add(1, Ordering::Relaxed);
        }
        let measuring = sh.measuring.load(Ordering::Relaxed);
        let period = n / SLOTS;
        let mut list = by_slot[(n % SLOTS) as usize].iter().peekable();
        while list.peek().is_some() {
            idx.clear();
            for &ci in list.by_ref() {
                let c = &calls[ci];
                let Some(k) = period.checked_sub(c.start_period) else {
                    continue;
                };
                let payload = &audio[k as usize % audio.len()];
                let built = batch.push(c.to, |buf| {
                    rtp_types::RtpPacketBuilder::new()
                        .payload_type(0)
                        .marker_bit(k == 0)
                        .sequence_number(k as u16)
                        .timestamp((k as u32).wrapping_mul(160))
                        .ssrc(0x5eed_0000 + ci as u32)
                        .payload(payload.as_slice())
                        .write_into(buf)
                        .ok()
                });
                if built.is_ok() {
                    idx.push(ci);
                }
                if batch.is_full() {
                    break;
                }
            }
            if batch.is_empty() {
                continue;
            }
            let at = if measuring { realtime_ns() } else { 0 };
            for &ci in &idx {
                let k = period - calls[ci].start_period;
                sh.slot(ci, k).store(at, Ordering::Relaxed);
            }
            if measuring {
                sh.sent.fetch_add(idx.len() as u64, Ordering::Relaxed);
            }
            let _ = batch.flush(&sock);
        }
        n += 1;
    }
}

/// The receiver thread: takes every masked packet off the one downstream socket, finds its
/// call by the gateway port it came from, and times it from send to kernel receive. Stops
/// once asked to and nothing has arrived for `drain`.
fn receive_loop(
    sock: UdpSocket,
    calls: Arc<Vec<LoadCall>>,
    sh: Arc<Shared>,
    drain: Duration,
) -> Result<(Histogram<u64>, u64), String> {
    let mut by_port = vec![u32::MAX; 65_536];
    for (i, c) in calls.iter().enumerate() {
        by_port[c.from_port as usize] = i as u32;
    }
    let mut first: Vec<Option<u16>> = vec![None; calls.len()];
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let mut received = 0u64;
    let mut rx =
        BatchReceiver::new(&sock, Duration::from_millis(100)).map_err(|e| e.to_string())?;
    let mut quiet_since: Option<Instant> = None;
    loop {
        // Poll rather than block: a blocked receiver is a thread the gateway's every send
        // must wake (a cross-core wake-up that costs the gateway more than the send), while
        // the kernel's receive stamps keep the figures exact however late we look.
        let n = rx.recv(&sock, false).map_err(|e| format!("receive: {e}"))?;
        if n < BATCH {
            std::thread::sleep(RECEIVE_POLL);
        }
        if n == 0 && sh.stop.load(Ordering::Relaxed) {
            let q = *quiet_since.get_or_insert_with(Instant::now);
            if q.elapsed() >= drain {
                break;
            }
            continue;
        }
        if n > 0 {
            quiet_since = None;
        }
        for i in 0..n {
            let Some((m, bytes)) = rx.get(i) else {
                continue;
            };
            let Some(&ci) = by_port.get(m.from.port() as usize) else {
                continue;
            };
            if ci == u32::MAX {
                continue;
            }
            let Ok(p) = rtp_types::RtpPacket::parse(bytes) else {
                continue;
            };
            // One masked packet comes back per packet sent, in order, with the gateway's
            // own contiguous sequence numbers: the k-th back is the k-th sent.
            let f = *first[ci as usize].get_or_insert(p.sequence_number());
            let k = p.sequence_number().wrapping_sub(f) as u64;
            let sent = sh.slot(ci as usize, k).swap(0, Ordering::Relaxed);
            if sent == 0 {
                continue;
            }
            let at = if m.at_ns != 0 { m.at_ns } else { realtime_ns() };
            let _ = hist.record((at.saturating_sub(sent) / 1000).max(1));
            received += 1;
        }
    }
    Ok((hist, received))
}

async fn end_calls(o: &LoadOptions, calls: &[LoadCall]) {
    for c in calls {
        let path = format!("/v1/calls/{}", c.id);
        let _ = http(o.api, o.token.as_deref(), "DELETE", &path, "").await;
    }
}

/// Run the load and report.
pub async fn run(o: LoadOptions) -> Result<LoadReport, String> {
    let audio = payloads();
    let ramp_periods = o.ramp_seconds * 1000 / PERIOD.as_millis() as u64;
    // One socket is every call's caller (the gateway latches each call onto it), one is
    // every call's downstream: two batched system calls stand for thousands of phones.
    let tx = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let rx = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let _ = set_send_buffer(&tx, 4 << 20);
    let _ = set_receive_buffer(&rx, 32 << 20);
    let downstream = rx.local_addr().map_err(|e| e.to_string())?;
    let mut calls = Vec::with_capacity(o.calls);
    for i in 0..o.calls {
        match create_call(&o, i, downstream, ramp_periods).await {
            Ok(c) => calls.push(c),
            Err(e) => {
                // Leave the gateway as we found it.
                end_calls(&o, &calls).await;
                return Err(e);
            }
        }
    }
    let calls = Arc::new(calls);
    let sh = Arc::new(Shared {
        sent_ns: (0..calls.len() * RING).map(|_| AtomicU64::new(0)).collect(),
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        sent: AtomicU64::new(0),
        late_slots: AtomicU64::new(0),
    });
    let receiver = {
        let (calls, sh) = (calls.clone(), sh.clone());
        std::thread::Builder::new()
            .name("loadgen-rx".into())
            .spawn(move || {
                if o.realtime_priority > 0 {
                    if let Err(e) = set_realtime_priority(o.realtime_priority.into()) {
                        eprintln!("loadgen: receiver keeps ordinary scheduling: {e}");
                    }
                }
                receive_loop(rx, calls, sh, Duration::from_secs(3))
            })
            .map_err(|e| e.to_string())?
    };
    let sender = {
        let (calls, sh) = (calls.clone(), sh.clone());
        std::thread::Builder::new()
            .name("loadgen-tx".into())
            .spawn(move || send_loop(tx, calls, sh, audio, o.realtime_priority))
            .map_err(|e| e.to_string())?
    };

    // Ramp, then measure.
    tokio::time::sleep(Duration::from_secs(o.ramp_seconds) + Duration::from_secs(1)).await;
    let t0 = Instant::now();
    let (cpu0, rss0) = gateway_usage(&o).await.unwrap_or((0.0, 0.0));
    let own0 = process_usage().map(|u| u.0).unwrap_or(0.0);
    let mut rss = vec![rss0];
    sh.measuring.store(true, Ordering::Relaxed);
    let end = t0 + Duration::from_secs(o.seconds);
    while Instant::now() < end {
        let left = end.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_secs(10))).await;
        if let Some((_, r)) = gateway_usage(&o).await {
            rss.push(r);
        }
    }
    sh.measuring.store(false, Ordering::Relaxed);
    let (cpu1, _) = gateway_usage(&o).await.unwrap_or((0.0, 0.0));
    let own1 = process_usage().map(|u| u.0).unwrap_or(0.0);
    let secs = t0.elapsed().as_secs_f64();
    sh.stop.store(true, Ordering::Relaxed);
    let _ = tokio::task::spawn_blocking(move || sender.join()).await;
    end_calls(&o, &calls).await;
    let (h, got) = tokio::task::spawn_blocking(move || receiver.join())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|_| "receiver thread panicked".to_owned())??;
    let sent = sh.sent.load(Ordering::Relaxed);
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
        loadgen_cores: (own1 - own0) / secs,
        gateway_rss_mib: rss,
        late_ticks: sh.late_slots.load(Ordering::Relaxed),
    })
}
