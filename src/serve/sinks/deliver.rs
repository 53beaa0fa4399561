//! Signed deliveries: webhooks (events, no digit values) and the secure digit sink (the only
//! place digit values go).
//!
//! Owns: the signature scheme, HTTP POST and Unix-socket delivery, ordering and retries.
//! Must never: log, format into an error or store anywhere else the body of a secure
//! delivery; follow a redirect (a signed body goes where it was configured to go, nowhere
//! else); log a URL (it may carry a token).
//!
//! # Signature
//!
//! Header `Tonewall-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`,
//! the shape of Stripe's `Stripe-Signature`: the timestamp is signed with the body so a
//! captured request cannot be replayed later than the receiver's tolerance. Each attempt is
//! signed afresh. [`verify`] accepts a header with several `v1=` values (secret rotation).
//!
//! # Delivery
//!
//! One item at a time, in queue order: an item is retried before the next is tried, so a
//! receiver sees events in `seq` order. An attempt that fails to connect, times out (5 s),
//! or gets a 5xx or 429 is retried after 200 ms, doubling, up to 5 attempts in all; any
//! other status outside 2xx (4xx, or a 3xx: redirects are not followed) fails at once.
//!
//! * HTTP (`Target::Url`, webhooks): `POST`, `Content-Type: application/json`, the header.
//! * Unix socket (`Target::Unix`): one connection per delivery carrying one line,
//!   `<signature header value>\t<body>\n`, then the client shuts its side down. A delivery
//!   counts as done once the line is written. The body is compact JSON, so it holds no tab
//!   or newline.
//!
//! Secure body: `{"call_id":"…","channel":0,"window":1,"index":3,"digit":"5","at_ms":1234.5}`
//! (`window` may be `null`). Failures are logged with the call id and the digit's index only.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::hmac;
use tokio::sync::mpsc;

use super::{Backoff, Cancel, LogLimit, SecureDelivery, SinkError, SinkStats};
use crate::serve::events::EventEnvelope;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "Tonewall-Signature";
/// Attempts per item, the first included.
pub const ATTEMPTS: u32 = 5;
const RETRY_BASE: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// The signature header value for `body` signed at unix time `t`:
/// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn sign(secret: &[u8], t: u64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    sign_with(&key, t, body)
}

fn sign_with(key: &hmac::Key, t: u64, body: &[u8]) -> String {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(t.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let mut out = format!("t={t},v1=");
    for b in tag.as_ref() {
        out.push(char::from(HEX[(b >> 4) as usize]));
        out.push(char::from(HEX[(b & 15) as usize]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Check a signature header against `body`: its `t` must be within `tolerance_s` seconds of
/// `now` (unix seconds) and one of its `v1` values must be the HMAC (compared in constant
/// time). Malformed headers are rejected.
pub fn verify(secret: &[u8], header: &str, body: &[u8], tolerance_s: u64, now: u64) -> bool {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<u64>().ok(),
            Some(("v1", v)) => sigs.push(v),
            _ => {}
        }
    }
    let Some(t) = t else {
        return false;
    };
    if t.abs_diff(now) > tolerance_s {
        return false;
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut msg = Vec::with_capacity(24 + body.len());
    msg.extend_from_slice(t.to_string().as_bytes());
    msg.push(b'.');
    msg.extend_from_slice(body);
    sigs.iter()
        .any(|s| unhex(s).is_some_and(|tag| hmac::verify(&key, &msg, &tag).is_ok()))
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    let nib = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    b.chunks(2)
        .map(|p| Some(nib(p[0])? << 4 | nib(p[1])?))
        .collect()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Select ring as rustls's process-wide provider (the only one compiled in), so every TLS
/// client (reqwest, tokio-tungstenite) gets the same one without guessing.
pub(crate) fn ensure_tls_provider() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // Err means some provider is installed already; that one stays.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// One HTTP client for every call: it holds the TLS roots and the connection pool.
fn http_client() -> Result<reqwest::Client, SinkError> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            ensure_tls_provider();
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(ATTEMPT_TIMEOUT)
                .connect_timeout(ATTEMPT_TIMEOUT)
                .build()
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(SinkError::Http)
}

enum Via {
    Http {
        client: reqwest::Client,
        url: reqwest::Url,
    },
    Unix(PathBuf),
}

/// Where signed deliveries go, with the key they are signed with.
pub(crate) struct Endpoint {
    via: Via,
    key: hmac::Key,
}

/// What an attempt came to.
enum Attempt {
    Done,
    /// Worth another try.
    Retry(String),
    /// Another try would get the same answer.
    Fail(String),
}

impl Endpoint {
    /// An `http://` or `https://` URL, signed with `secret`.
    pub(crate) fn http(what: &'static str, url: &str, secret: &str) -> Result<Self, SinkError> {
        let bad = || SinkError::BadUrl {
            what,
            schemes: "http:// or https://",
        };
        let url = reqwest::Url::parse(url).map_err(|_| bad())?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad());
        }
        Ok(Self {
            via: Via::Http {
                client: http_client()?,
                url,
            },
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
        })
    }

    /// A Unix stream socket path, signed with `secret`.
    pub(crate) fn unix(path: &Path, secret: &str) -> Result<Self, SinkError> {
        if !cfg!(unix) {
            return Err(SinkError::NoUnixSockets);
        }
        Ok(Self {
            via: Via::Unix(path.to_path_buf()),
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
        })
    }

    async fn attempt(&self, body: &[u8]) -> Attempt {
        let sig = sign_with(&self.key, unix_now(), body);
        match &self.via {
            Via::Http { client, url } => {
                let r = client
                    .post(url.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header(SIGNATURE_HEADER, sig)
                    .body(body.to_vec())
                    .send()
                    .await;
                match r {
                    Ok(resp) => {
                        let s = resp.status();
                        if s.is_success() {
                            Attempt::Done
                        } else if s.is_server_error() || s.as_u16() == 429 {
                            Attempt::Retry(format!("status {}", s.as_u16()))
                        } else {
                            Attempt::Fail(format!("status {}", s.as_u16()))
                        }
                    }
                    // Only the kind: reqwest's message names the URL.
                    Err(e) if e.is_timeout() => Attempt::Retry("timeout".into()),
                    Err(e) if e.is_connect() => Attempt::Retry("connect".into()),
                    Err(_) => Attempt::Retry("request".into()),
                }
            }
            Via::Unix(path) => match unix_line(path, &sig, body).await {
                Ok(()) => Attempt::Done,
                Err(e) => Attempt::Retry(e.kind().to_string()),
            },
        }
    }

    /// Deliver with retries; `Err` with the last reason, or `None` if cancelled.
    async fn deliver(&self, body: &[u8], cancel: &mut Cancel) -> Result<(), Option<String>> {
        let mut backoff = Backoff::new(RETRY_BASE, RETRY_MAX);
        let mut last = String::new();
        for n in 1..=ATTEMPTS {
            let a = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(None),
                a = self.attempt(body) => a,
            };
            match a {
                Attempt::Done => return Ok(()),
                Attempt::Fail(why) => return Err(Some(why)),
                Attempt::Retry(why) => last = why,
            }
            if n < ATTEMPTS {
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return Err(None),
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
        Err(Some(last))
    }
}

#[cfg(unix)]
async fn unix_line(path: &Path, sig: &str, body: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let go = async {
        let mut s = tokio::net::UnixStream::connect(path).await?;
        let mut line = Vec::with_capacity(sig.len() + body.len() + 2);
        line.extend_from_slice(sig.as_bytes());
        line.push(b'\t');
        line.extend_from_slice(body);
        line.push(b'\n');
        s.write_all(&line).await?;
        s.shutdown().await
    };
    tokio::time::timeout(ATTEMPT_TIMEOUT, go)
        .await
        .map_err(|_| std::io::ErrorKind::TimedOut)?
}

#[cfg(not(unix))]
async fn unix_line(_: &Path, _: &str, _: &[u8]) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// Count what is still queued as failed (after a cancel).
fn drop_rest<T>(rx: &mut mpsc::Receiver<T>, errors: &std::sync::atomic::AtomicU64) {
    rx.close();
    while rx.try_recv().is_ok() {
        SinkStats::bump(errors);
    }
}

/// The webhook task of one call: each event as signed JSON, in order.
pub(crate) async fn run_webhooks(
    ep: Endpoint,
    call_id: Arc<str>,
    mut rx: mpsc::Receiver<EventEnvelope>,
    stats: Arc<SinkStats>,
    mut cancel: Cancel,
) {
    let mut log = LogLimit::new(Duration::from_secs(10));
    loop {
        let ev = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            ev = rx.recv() => match ev {
                Some(ev) => ev,
                None => return,
            },
        };
        let body = match serde_json::to_vec(&ev) {
            Ok(b) => b,
            Err(_) => {
                SinkStats::bump(&stats.webhook_errors);
                continue;
            }
        };
        match ep.deliver(&body, &mut cancel).await {
            Ok(()) => SinkStats::bump(&stats.webhook_delivered),
            Err(why) => {
                SinkStats::bump(&stats.webhook_errors);
                let Some(why) = why else { break };
                if let Some(suppressed) = log.allow() {
                    tracing::warn!(%call_id, seq = ev.seq, error = %why, suppressed, "webhook delivery failed");
                }
            }
        }
    }
    drop_rest(&mut rx, &stats.webhook_errors);
}

/// The body of a secure delivery. The only place a digit value is formatted.
fn secure_body(d: &SecureDelivery) -> Vec<u8> {
    let v = serde_json::json!({
        "call_id": &*d.call_id,
        "channel": d.channel,
        "window": d.window,
        "index": d.index,
        "digit": d.digit.expose().to_char().to_string(),
        "at_ms": d.at_ms,
    });
    // Serialising a json!() value of plain fields cannot fail.
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The secure sink task of one call: each digit as signed JSON, in order.
pub(crate) async fn run_secure(
    ep: Endpoint,
    call_id: Arc<str>,
    mut rx: mpsc::Receiver<SecureDelivery>,
    stats: Arc<SinkStats>,
    mut cancel: Cancel,
) {
    let mut log = LogLimit::new(Duration::from_secs(10));
    loop {
        let d = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            d = rx.recv() => match d {
                Some(d) => d,
                None => return,
            },
        };
        let index = d.index;
        let body = secure_body(&d);
        drop(d);
        let r = ep.deliver(&body, &mut cancel).await;
        drop(body);
        match r {
            Ok(()) => SinkStats::bump(&stats.secure_delivered),
            Err(why) => {
                SinkStats::bump(&stats.secure_errors);
                let Some(why) = why else { break };
                // Call id and index only: never the body, the value or the target.
                if let Some(suppressed) = log.allow() {
                    tracing::warn!(%call_id, index, error = %why, suppressed, "secure digit delivery failed");
                }
            }
        }
    }
    drop_rest(&mut rx, &stats.secure_errors);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        // RFC 4231 test case 2 as the HMAC underneath: key "Jefe".
        let body = br#"{"event":"x"}"#;
        let h = sign(b"Jefe", 1_700_000_000, body);
        assert!(h.starts_with("t=1700000000,v1="));
        assert_eq!(h.len(), "t=1700000000,v1=".len() + 64);
        assert!(verify(b"Jefe", &h, body, 300, 1_700_000_100));
        assert!(!verify(b"Jefe", &h, body, 300, 1_700_000_301));
        assert!(!verify(b"Jefe", &h, b"{}", 300, 1_700_000_000));
        assert!(!verify(b"jefe", &h, body, 300, 1_700_000_000));
        assert!(!verify(b"Jefe", "t=1700000000", body, 300, 1_700_000_000));
        assert!(!verify(b"Jefe", "garbage", body, 300, 1_700_000_000));
        // Rotation: any matching v1 passes.
        let v1 = h.split_once(",v1=").unwrap().1;
        let two = format!("t=1700000000,v1={},v1={v1}", "00".repeat(32));
        assert!(verify(b"Jefe", &two, body, 0, 1_700_000_000));
    }

    #[test]
    fn hmac_matches_rfc4231() {
        // RFC 4231 case 2: HMAC-SHA256("Jefe", "what do ya want for nothing?").
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
        let tag = hmac::sign(&key, b"what do ya want for nothing?");
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(unhex(&hex).unwrap(), tag.as_ref());
        assert!(unhex("0g").is_none() && unhex("abc").is_none());
    }

    #[test]
    fn secure_body_shape() {
        let d = SecureDelivery {
            call_id: "c1".into(),
            channel: 0,
            window: Some(2),
            index: 3,
            digit: crate::Redacted::new(crate::dtmf::Digit::from_char('#').unwrap()),
            at_ms: 12.5,
        };
        let v: serde_json::Value = serde_json::from_slice(&secure_body(&d)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"call_id":"c1","channel":0,"window":2,"index":3,"digit":"#","at_ms":12.5})
        );
        assert!(!format!("{d:?}").contains('#'));
    }
}
