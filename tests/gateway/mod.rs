//! Test harness for the live gateway: starts the real `tonewall serve` binary on loopback,
//! talks to its control API over plain HTTP/1.1, follows a call's event stream, and sends
//! and receives RTP. Every loop is bounded by a deadline. Test-only; allocates freely.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A running gateway; killed on drop.
pub struct Gateway {
    pub child: Child,
    pub api: SocketAddr,
    pub dir: PathBuf,
    pub token: Option<String>,
    pub stderr: Arc<Mutex<String>>,
}

/// A fresh scratch directory under the target dir.
pub fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{name}-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

impl Gateway {
    /// Start `tonewall serve` with `extra_toml` appended to a config that records into the
    /// scratch dir and uses a wide loopback port range.
    pub fn start(name: &str, extra_toml: &str) -> Gateway {
        Self::start_with(name, extra_toml, None)
    }

    pub fn start_with(name: &str, extra_toml: &str, token: Option<&str>) -> Gateway {
        let dir = scratch(name);
        let cfg = dir.join("tonewall.toml");
        let rec = dir.join("recordings");
        let base = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nrtp_port_min = 20000\nrtp_port_max = 29999\nmedia_timeout_ms = 3000\n{}\n",
            token.map(|t| format!("token = \"{t}\"")).unwrap_or_default()
        );
        let text = merge_toml(&base, extra_toml, &rec);
        std::fs::write(&cfg, text).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tonewall"))
            .args(["serve", "--config"])
            .arg(&cfg)
            .args(["--log-level", "debug"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tonewall serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        let e = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(e).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("tonewall listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}: {}", stderr.lock().unwrap()))
            .parse()
            .unwrap();
        Gateway {
            child,
            api: addr,
            dir,
            token: token.map(str::to_owned),
            stderr,
        }
    }

    pub fn http(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        http(self.api, method, path, body, self.token.as_deref())
    }

    pub fn json(&self, method: &str, path: &str, body: Option<&str>) -> serde_json::Value {
        let (code, text) = self.http(method, path, body);
        assert!((200..300).contains(&code), "{method} {path}: {code} {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// Stop with SIGTERM and wait (bounded) for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!("gateway did not stop: {}", self.stderr.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The base config plus the test's own sections, with `[sinks]` defaulting to recording in
/// `rec` when the test does not set it.
fn merge_toml(base: &str, extra: &str, rec: &Path) -> String {
    let mut s = String::from(base);
    // A test's own [server] keys go into the base section.
    let mut rest = String::new();
    let mut in_server = false;
    for line in extra.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_server = t == "[server]";
            if !in_server {
                rest.push_str(line);
                rest.push('\n');
            }
            continue;
        }
        if in_server {
            // A key the test sets replaces the base config's default for it.
            if let Some((key, _)) = t.split_once('=') {
                let key = key.trim();
                s = s
                    .lines()
                    .filter(|l| l.split_once('=').map(|(k, _)| k.trim()) != Some(key))
                    .map(|l| format!("{l}\n"))
                    .collect();
            }
            s.push_str(line);
            s.push('\n');
        } else {
            rest.push_str(line);
            rest.push('\n');
        }
    }
    if !rest.contains("[sinks]") {
        rest.push_str(&format!("[sinks]\nrecording_dir = \"{}\"\n", rec.display()));
    }
    s.push_str(&rest);
    s
}

/// One HTTP/1.1 request with `Connection: close`; returns status and body.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> (u16, String) {
    let (code, _, body) = http_full(addr, method, path, "application/json", body, token);
    (code, body)
}

/// One HTTP/1.1 request with a given content type; returns status, the header block and
/// body.
pub fn http_full(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let body = body.unwrap_or("");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let text = String::from_utf8_lossy(&resp).to_string();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (code, head.to_string(), body)
}

/// The value of header `name` (lower case) in a header block from [`http_full`].
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

fn dechunk(mut b: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = b.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        b = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Follow `GET path` as Server-Sent Events until the stream ends (the call ended) or the
/// deadline passes; returns each event's JSON data.
pub fn follow_events(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    limit: Duration,
) -> JoinHandle<Vec<serde_json::Value>> {
    let path = path.to_owned();
    let token = token.map(str::to_owned);
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Accept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        let _ = tx.send(());
        let end = Instant::now() + limit;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while Instant::now() < end {
            match s.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(_) => continue,
            }
            // The stream ends with the terminating zero-length chunk.
            if buf.ends_with(b"\r\n0\r\n\r\n") {
                break;
            }
        }
        String::from_utf8_lossy(&buf)
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str(d.trim()).ok())
            .collect()
    });
    // Wait until the subscription request is out, then give the server a moment to
    // register it before the caller starts media.
    let _ = rx.recv_timeout(Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(100));
    h
}

/// Collects every UDP datagram arriving on a socket until `idle` passes without one or
/// `limit` passes in all.
pub struct Receiver {
    pub addr: SocketAddr,
    handle: JoinHandle<Vec<Vec<u8>>>,
}

impl Receiver {
    pub fn start(idle: Duration, limit: Duration) -> Receiver {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let handle = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 2048];
            let start = Instant::now();
            let mut last = Instant::now();
            while start.elapsed() < limit {
                match sock.recv(&mut buf) {
                    Ok(n) => {
                        got.push(buf[..n].to_vec());
                        last = Instant::now();
                    }
                    Err(_) => {
                        if !got.is_empty() && last.elapsed() > idle {
                            break;
                        }
                    }
                }
            }
            got
        });
        Receiver { addr, handle }
    }

    pub fn join(self) -> Vec<Vec<u8>> {
        self.handle.join().unwrap()
    }
}

/// Header fields of a received RTP packet (parsed with the same crate the gateway uses).
#[derive(Debug, Clone)]
pub struct Rtp {
    pub pt: u8,
    pub marker: bool,
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
    pub payload: Vec<u8>,
}

pub fn parse(p: &[u8]) -> Rtp {
    let r = rtp_types::RtpPacket::parse(p).expect("downstream got a packet that is not RTP");
    Rtp {
        pt: r.payload_type(),
        marker: r.marker_bit(),
        seq: r.sequence_number(),
        ts: r.timestamp(),
        ssrc: r.ssrc(),
        payload: r.payload().to_vec(),
    }
}

pub fn build(pt: u8, seq: u16, ts: u32, ssrc: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
    rtp_types::RtpPacketBuilder::new()
        .payload_type(pt)
        .sequence_number(seq)
        .timestamp(ts)
        .ssrc(ssrc)
        .marker_bit(marker)
        .payload(payload)
        .write_vec()
        .unwrap()
}

/// RFC 4733 payload: event, end bit, volume, duration.
pub fn te_payload(event: u8, end: bool, volume: u8, duration: u16) -> [u8; 4] {
    let d = duration.to_be_bytes();
    [event, (end as u8) << 7 | (volume & 0x3f), d[0], d[1]]
}

/// Send datagrams to `to`, `gap` apart.
pub fn send_all(packets: &[Vec<u8>], to: SocketAddr, gap: Duration) -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    for p in packets {
        s.send_to(p, to).unwrap();
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
    }
    s
}

/// Read a WAV written by the gateway (16-bit PCM), returning rate, channels and samples.
pub fn read_wav(path: &Path) -> (u32, u16, Vec<i16>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let w = tonewall::wav::Wav::parse(&bytes).unwrap();
    let samples = match w.data {
        tonewall::wav::WavData::Pcm16(s) => s,
        other => panic!(
            "recording is not 16-bit PCM: {:?}",
            std::mem::discriminant(&other)
        ),
    };
    (w.rate, w.channels, samples)
}

/// Whether an external tool is installed.
pub fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}
