//! The speech-to-text fork: the masked caller audio, resampled to 16 kHz mono, streamed over
//! a WebSocket (`ws://` or `wss://`, rustls with the ring provider).
//!
//! Owns: the connection, resampling to 16 kHz, reconnecting.
//! Must never: receive the downstream leg or unmasked audio; queue audio while disconnected
//! (an STT engine wants live audio, not a backlog: frames that arrive while there is no
//! connection are dropped and counted in `stt_dropped`).
//!
//! # Wire format
//!
//! On every (re)connection the first message is a JSON text message
//! `{"call_id":"…","rate":16000,"encoding":"pcm_s16le","channels":1}`. Then each binary
//! message is 20 ms of audio: 320 samples, 640 bytes of signed 16-bit little-endian PCM
//! (the last one before a close may be shorter). On [`CallSinks::close`](super::CallSinks::close)
//! the tail is sent and the client sends a WebSocket close frame.
//!
//! # Resampling
//!
//! 16 kHz input passes through untouched; any other rate goes through rubato's FFT resampler
//! (the pipeline's `ChunkResampler`), one 20 ms input chunk at a time; the resampler's own delay
//! is trimmed from the start of each connection's stream so it starts with the call's audio.
//! Each connection gets a fresh resampler, so a reconnect never splices stale history in.
//!
//! # Reconnecting
//!
//! Connects at start; on a failed connect (counted in `stt_errors`) or a lost connection
//! (also counted) it retries after 100 ms, doubling up to 5 s. The delay only falls back to
//! 100 ms after a connection stayed up for 5 s, so a server that accepts and drops at once
//! is not hammered.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{AudioFrame, Backoff, Cancel, LogLimit, SinkStats};
use crate::pipeline::ChunkResampler;

/// Rate of the audio sent to the STT engine.
pub const STT_RATE: u32 = 16_000;
/// Samples per binary message: 20 ms at 16 kHz.
pub const MESSAGE_SAMPLES: usize = 320;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const SEND_TIMEOUT: Duration = Duration::from_secs(2);
const CLOSE_WAIT: Duration = Duration::from_secs(1);
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A connection that lived this long resets the backoff.
const STABLE: Duration = Duration::from_secs(5);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Linear audio at any rate in, 16 kHz out: the pipeline's [`ChunkResampler`] in 20 ms
/// chunks, with its start-up delay trimmed and samples back in 16-bit.
pub struct To16k {
    rs: Option<ChunkResampler>,
    rate: u32,
    /// Output samples still to drop at the start (the resampler's delay).
    skip: usize,
}

impl To16k {
    /// A converter from `rate` Hz; `Err` with rubato's reason for a rate it refuses.
    pub fn new(rate: u32) -> Result<Self, String> {
        if rate == STT_RATE {
            return Ok(Self {
                rs: None,
                rate,
                skip: 0,
            });
        }
        // 20 ms per chunk, the frame size the media task hands over.
        let rs = ChunkResampler::between(rate, STT_RATE, 50).map_err(|e| e.to_string())?;
        Ok(Self {
            skip: rs.delay_out(),
            rs: Some(rs),
            rate,
        })
    }

    /// Input rate.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Convert `x`, appending 16 kHz samples to `out`.
    pub fn push(&mut self, x: &[i16], out: &mut Vec<i16>) -> Result<(), String> {
        let Some(rs) = &mut self.rs else {
            out.extend_from_slice(x);
            return Ok(());
        };
        let skip = &mut self.skip;
        rs.push(x, |y| emit(y, skip, out))
            .map_err(|e| e.to_string())
    }

    /// Push out what a partial last chunk holds (end of stream).
    pub fn flush(&mut self, out: &mut Vec<i16>) -> Result<(), String> {
        let Some(rs) = &mut self.rs else {
            return Ok(());
        };
        let skip = &mut self.skip;
        rs.flush(|y| emit(y, skip, out)).map_err(|e| e.to_string())
    }
}

/// Append resampled output to `out` as 16-bit, dropping the first `skip` samples.
fn emit(y: &[f32], skip: &mut usize, out: &mut Vec<i16>) {
    let from = (*skip).min(y.len());
    *skip -= from;
    out.extend(
        y[from..]
            .iter()
            .map(|&v| v.round().clamp(-32768.0, 32767.0) as i16),
    );
}

/// One connection's stream state: the resampler and the samples not yet sent.
struct Stream {
    conv: Option<To16k>,
    pending: Vec<i16>,
}

impl Stream {
    fn new() -> Self {
        Self {
            conv: None,
            pending: Vec::with_capacity(4 * MESSAGE_SAMPLES),
        }
    }

    fn push(&mut self, f: &AudioFrame) -> Result<(), String> {
        if self.conv.as_ref().is_none_or(|c| c.rate() != f.rate) {
            self.conv = Some(To16k::new(f.rate)?);
        }
        match &mut self.conv {
            Some(c) => c.push(f.samples(), &mut self.pending),
            None => Ok(()),
        }
    }

    /// Full 20 ms messages ready to send.
    fn take_message(&mut self) -> Option<Message> {
        (self.pending.len() >= MESSAGE_SAMPLES).then(|| {
            let m = pcm_bytes(&self.pending[..MESSAGE_SAMPLES]);
            self.pending.drain(..MESSAGE_SAMPLES);
            m
        })
    }

    /// Everything left, as one last (possibly short) message.
    fn take_tail(&mut self) -> Option<Message> {
        if let Some(c) = &mut self.conv {
            let _ = c.flush(&mut self.pending);
        }
        (!self.pending.is_empty()).then(|| {
            let m = pcm_bytes(&self.pending);
            self.pending.clear();
            m
        })
    }
}

fn pcm_bytes(s: &[i16]) -> Message {
    let mut b = Vec::with_capacity(2 * s.len());
    for x in s {
        b.extend_from_slice(&x.to_le_bytes());
    }
    Message::binary(b)
}

async fn connect(url: &str, call_id: &str) -> Result<Ws, String> {
    let (mut ws, _) = timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(url))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let hello = serde_json::json!({
        "call_id": call_id,
        "rate": STT_RATE,
        "encoding": "pcm_s16le",
        "channels": 1,
    })
    .to_string();
    send(&mut ws, Message::text(hello)).await?;
    Ok(ws)
}

async fn send(ws: &mut Ws, m: Message) -> Result<(), String> {
    timeout(SEND_TIMEOUT, ws.send(m))
        .await
        .map_err(|_| "send timed out".to_string())?
        .map_err(|e| e.to_string())
}

/// The next message from the server, or never when not connected.
async fn next_msg(
    ws: &mut Option<Ws>,
) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    match ws {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

/// The STT task of one call.
pub(crate) async fn run(
    url: String,
    call_id: Arc<str>,
    mut rx: mpsc::Receiver<AudioFrame>,
    stats: Arc<SinkStats>,
    mut cancel: Cancel,
) {
    let mut ws: Option<Ws> = None;
    let mut stream = Stream::new();
    let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_MAX);
    let mut retry_at = Instant::now();
    let mut connected_at = Instant::now();
    let mut log = LogLimit::new(Duration::from_secs(10));
    let mut rs_log = LogLimit::new(Duration::from_secs(10));
    // Called when a connection attempt fails or a connection is lost.
    let mut lost = |why: &str, connected_at: Option<Instant>, retry_at: &mut Instant| {
        SinkStats::bump(&stats.stt_errors);
        if connected_at.is_some_and(|t| t.elapsed() >= STABLE) {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        *retry_at = Instant::now() + delay;
        if let Some(suppressed) = log.allow() {
            tracing::warn!(%call_id, error = why, retry_ms = delay.as_millis() as u64, suppressed, "speech-to-text connection failed");
        }
    };
    loop {
        if ws.is_none() && Instant::now() >= retry_at {
            let attempt = tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                r = connect(&url, &call_id) => r,
            };
            match attempt {
                Ok(w) => {
                    tracing::debug!(%call_id, "speech-to-text connected");
                    ws = Some(w);
                    stream = Stream::new();
                    connected_at = Instant::now();
                }
                Err(e) => lost(&e, None, &mut retry_at),
            }
        }
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            m = next_msg(&mut ws) => match m {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    ws = None;
                    lost("closed by the server", Some(connected_at), &mut retry_at);
                }
                // Pings are answered by tungstenite itself; anything else is ignored.
                Some(Ok(_)) => {}
            },
            _ = tokio::time::sleep_until(retry_at), if ws.is_none() => {}
            f = rx.recv() => match f {
                None => break,
                Some(f) => {
                    let Some(w) = &mut ws else {
                        SinkStats::bump(&stats.stt_dropped);
                        continue;
                    };
                    if let Err(e) = stream.push(&f) {
                        SinkStats::bump(&stats.stt_errors);
                        SinkStats::bump(&stats.stt_dropped);
                        if let Some(suppressed) = rs_log.allow() {
                            tracing::warn!(%call_id, error = %e, suppressed, "speech-to-text resampler failed");
                        }
                        stream.conv = None;
                        continue;
                    }
                    let mut failed = None;
                    while let Some(m) = stream.take_message() {
                        if let Err(e) = send(w, m).await {
                            failed = Some(e);
                            break;
                        }
                    }
                    if let Some(e) = failed {
                        ws = None;
                        SinkStats::bump(&stats.stt_dropped);
                        lost(&e, Some(connected_at), &mut retry_at);
                    }
                }
            },
        }
    }
    // Queue closed: send the tail and close politely, bounded by the cancel signal.
    if let Some(mut w) = ws {
        let finish = async {
            if let Some(m) = stream.take_tail() {
                send(&mut w, m).await?;
            }
            timeout(SEND_TIMEOUT, w.close(None))
                .await
                .map_err(|_| "close timed out".to_string())?
                .map_err(|e| e.to_string())?;
            // Wait briefly for the server's close reply so the TCP connection ends cleanly.
            let _ = timeout(CLOSE_WAIT, async { while w.next().await.is_some() {} }).await;
            Ok::<(), String>(())
        };
        tokio::select! {
            biased;
            _ = cancel.cancelled() => {}
            r = finish => if let Err(e) = r {
                tracing::debug!(%call_id, error = %e, "speech-to-text close incomplete");
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_to_16k() {
        for rate in [8000u32, 16000, 48000] {
            let mut c = To16k::new(rate).unwrap();
            let n = rate as usize / 50;
            // 1 s of a 400 Hz tone.
            let x: Vec<i16> = (0..rate as usize)
                .map(|i| {
                    (8000.0 * (2.0 * std::f64::consts::PI * 400.0 * i as f64 / rate as f64).sin())
                        as i16
                })
                .collect();
            let mut out = Vec::new();
            for ch in x.chunks(n) {
                c.push(ch, &mut out).unwrap();
            }
            c.flush(&mut out).unwrap();
            // The trimmed delay shortens the stream by at most a few ms.
            assert!(
                (15_800..=16_000).contains(&out.len()),
                "{rate}: {}",
                out.len()
            );
            // A tone in, the same tone out (level within 1 dB, checked on the middle).
            let rms = |s: &[i16]| {
                (s.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / s.len() as f64).sqrt()
            };
            let r = rms(&out[4000..12000]) / rms(&x[x.len() / 4..3 * x.len() / 4]);
            assert!((0.89..1.12).contains(&r), "{rate}: {r}");
        }
    }
}
