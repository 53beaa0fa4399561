//! The four sinks of a call against real servers on 127.0.0.1:0 (and a Unix socket) started
//! inside each test: recorder files, the STT WebSocket stream with a reconnect, signed
//! webhooks with retries and order, the secure digit sink over HTTP and a Unix socket, a
//! sink that never answers, and no digit value in any log line.
//!
//! Every wait is a poll with a deadline (a failure, not a pause), every server stops with
//! its test, and request loops are bounded.
#![cfg(feature = "serve")]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use futures_util::StreamExt;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tonewall::dtmf::Digit;
use tonewall::event::Event;
use tonewall::serve::events::{CallEvent, EventBody, EventEnvelope};
use tonewall::serve::sinks::{
    verify, AudioFrame, CallSinks, SecureDelivery, Side, SinkError, SinkSettings, SinkStats,
    Target, MAX_FRAME, SIGNATURE_HEADER,
};
use tonewall::Redacted;

const WEBHOOK_SECRET: &str = "whsec-test";
const SECURE_SECRET: &str = "secure-test";

fn tmpdir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("sinks-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn frame(side: Side, rate: u32, at: u64, v: i16, len: usize) -> AudioFrame {
    let mut f = AudioFrame {
        side,
        rate,
        at_sample: at,
        len: len as u16,
        samples: [0; MAX_FRAME],
    };
    f.samples[..len].fill(v);
    f
}

fn envelope(call_id: &str, seq: u64, body: EventBody) -> EventEnvelope {
    EventEnvelope {
        call_id: call_id.into(),
        seq,
        unix_ms: 1_700_000_000_000 + seq,
        body,
    }
}

fn pause(at_sample: u64) -> EventBody {
    EventBody::Core(Event::RecordingPause {
        channel: 0,
        window: 1,
        at_ms: at_sample as f64 / 8.0,
        at_sample,
    })
}

fn resume(at_sample: u64) -> EventBody {
    EventBody::Core(Event::RecordingResume {
        channel: 0,
        window: 1,
        at_ms: at_sample as f64 / 8.0,
        at_sample,
    })
}

fn digit(call_id: &str, index: u64, key: char) -> SecureDelivery {
    SecureDelivery {
        call_id: call_id.into(),
        channel: 0,
        window: Some(1),
        index,
        digit: Redacted::new(Digit::from_char(key).unwrap()),
        at_ms: 1000.0 + index as f64 * 200.0,
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Poll until `f` holds; fail after 20 s (a hang is a failure, not a wait).
async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(tokio::time::Instant::now() < end, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A port nothing listens on: bound, then released.
async fn refused_addr() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

// ---------------------------------------------------------------- recorder

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorder_cuts_a_late_pause_and_aligns_both_sides() {
    let dir = tmpdir("rec");
    let stats = Arc::new(SinkStats::default());
    let settings = SinkSettings {
        recording_dir: Some(dir.clone()),
        ..Default::default()
    };
    let sinks = CallSinks::start("rec-1".into(), &settings, stats.clone()).unwrap();
    // 2 s at 8 kHz in 20 ms frames. Caller: 100 before the pause, 200 inside (frames 40..60,
    // samples 6400..9600), 300 after. Downstream starts 100 ms later (its sample 800 on the
    // shared timeline) with -100 / -200 / -300 over the same regions.
    let value = |i: u64| match i {
        0..40 => 1,
        40..60 => 2,
        _ => 3,
    };
    for i in 0..100u64 {
        sinks.audio(&frame(Side::Caller, 8000, i * 160, 100 * value(i), 160));
        if i >= 5 {
            sinks.audio(&frame(
                Side::Downstream,
                8000,
                i * 160,
                -100 * value(i),
                160,
            ));
        }
        // The pause arrives when frames past it (up to sample 7360) are already queued,
        // the resume likewise 100 ms late.
        if i == 45 {
            sinks.event(&envelope("rec-1", 0, pause(6400)));
        }
        if i == 63 {
            sinks.event(&envelope("rec-1", 1, resume(9600)));
        }
    }
    sinks.close().await;

    let mut r = hound::WavReader::open(dir.join("rec-1.wav")).unwrap();
    let spec = r.spec();
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (2, 8000, 16)
    );
    let s: Vec<i16> = r.samples::<i16>().map(Result::unwrap).collect();
    // 16000 positions less the 3200 paused ones, two channels each.
    assert_eq!(s.len(), 2 * 12_800);
    let left: Vec<i16> = s.iter().step_by(2).copied().collect();
    let right: Vec<i16> = s.iter().skip(1).step_by(2).copied().collect();
    assert!(left[..6400].iter().all(|&v| v == 100));
    assert!(left[6400..].iter().all(|&v| v == 300));
    assert!(
        right[..800].iter().all(|&v| v == 0),
        "silence before downstream"
    );
    assert!(right[800..6400].iter().all(|&v| v == -100));
    assert!(right[6400..].iter().all(|&v| v == -300));
    assert!(
        !s.iter().any(|&v| v == 200 || v == -200),
        "paused audio in the file"
    );

    let sc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("rec-1.json")).unwrap()).unwrap();
    assert_eq!(sc["call_id"], "rec-1");
    assert_eq!(sc["rate"], 8000);
    assert_eq!(
        sc["channels"],
        serde_json::json!(["caller_masked", "downstream"])
    );
    assert_eq!(
        sc["pauses"],
        serde_json::json!([{"start_ms": 800.0, "end_ms": 1200.0, "start_sample": 6400,
            "end_sample": 9600, "file_offset_samples": 6400}])
    );
    assert_eq!(sc["duration_ms"], 2000.0);
    assert_eq!(sc["written_samples"], 12_800);
    assert_eq!(sc["late_pause_samples"], 0);
    assert_eq!(get(&stats.recorder_dropped), 0);
    assert_eq!(get(&stats.recorder_errors), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorder_without_downstream_and_with_a_pause_open_at_the_end() {
    let dir = tmpdir("rec2");
    let stats = Arc::new(SinkStats::default());
    let settings = SinkSettings {
        recording_dir: Some(dir.clone()),
        ..Default::default()
    };
    let sinks = CallSinks::start("rec-2".into(), &settings, stats.clone()).unwrap();
    for i in 0..50u64 {
        sinks.audio(&frame(Side::Caller, 16000, i * 320, 1000, 320));
        if i == 40 {
            sinks.event(&envelope("rec-2", 0, pause(12_000)));
        }
    }
    sinks.close().await;
    let mut r = hound::WavReader::open(dir.join("rec-2.wav")).unwrap();
    assert_eq!((r.spec().channels, r.spec().sample_rate), (2, 16000));
    let s: Vec<i16> = r.samples::<i16>().map(Result::unwrap).collect();
    assert_eq!(s.len(), 2 * 12_000);
    assert!(s.chunks(2).all(|c| c == [1000, 0]));
    let sc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("rec-2.json")).unwrap()).unwrap();
    assert_eq!(
        sc["pauses"][0]["end_sample"], 16_000,
        "open pause ends at the call's end"
    );
    assert_eq!(sc["pauses"][0]["end_ms"], 1000.0);
    assert_eq!(sc["duration_ms"], 1000.0);
    assert_eq!(sc["written_samples"], 12_000);

    // An id that could escape the directory, and a directory that cannot be created, are
    // errors at start.
    assert!(matches!(
        CallSinks::start("../x".into(), &settings, stats.clone()),
        Err(SinkError::BadCallId(_))
    ));
    // A bad setting elsewhere fails the start before the recording file is created.
    let bad_url = SinkSettings {
        recording_dir: Some(dir.clone()),
        stt_url: Some("http://127.0.0.1:9/".into()),
        ..Default::default()
    };
    assert!(matches!(
        CallSinks::start("rec-4".into(), &bad_url, stats.clone()),
        Err(SinkError::BadUrl { .. })
    ));
    assert!(!dir.join("rec-4.wav").exists());
    let file = dir.join("rec-2.wav");
    let bad = SinkSettings {
        recording_dir: Some(file.join("sub")),
        ..Default::default()
    };
    assert!(matches!(
        CallSinks::start("rec-3".into(), &bad, stats.clone()),
        Err(SinkError::Recording { .. })
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn start_outside_a_runtime_and_missing_secrets_are_errors() {
    let stats = Arc::new(SinkStats::default());
    assert!(matches!(
        CallSinks::start("c".into(), &SinkSettings::default(), stats.clone()),
        Err(SinkError::NoRuntime)
    ));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = SinkSettings {
            webhook_url: Some("http://127.0.0.1:9/hook".into()),
            ..Default::default()
        };
        assert!(matches!(
            CallSinks::start("c".into(), &s, stats.clone()),
            Err(SinkError::MissingSecret("webhook_url"))
        ));
        let s = SinkSettings {
            secure_target: Some(Target::Url("http://127.0.0.1:9/".into())),
            ..Default::default()
        };
        assert!(matches!(
            CallSinks::start("c".into(), &s, stats.clone()),
            Err(SinkError::MissingSecret("secure_target"))
        ));
        let s = SinkSettings {
            stt_url: Some("http://127.0.0.1:9/".into()),
            ..Default::default()
        };
        assert!(matches!(
            CallSinks::start("c".into(), &s, stats.clone()),
            Err(SinkError::BadUrl { .. })
        ));
    });
}

// ---------------------------------------------------------------- STT

#[derive(Default)]
struct SttLog {
    /// Per connection: the hello message and the binary message sizes.
    conns: Vec<(serde_json::Value, Vec<usize>)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stt_streams_16k_and_reconnects_after_a_drop() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(SttLog::default()));
    let (done_tx, done_rx) = oneshot::channel();
    let server = {
        let log = log.clone();
        tokio::spawn(async move {
            // Connection 1 is dropped after 10 audio messages; connection 2 runs to the
            // client's close frame.
            for conn in 0..2 {
                let (tcp, _) = listener.accept().await.unwrap();
                let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
                let hello = match ws.next().await {
                    Some(Ok(Message::Text(t))) => serde_json::from_str(&t).unwrap(),
                    other => panic!("expected a hello, got {other:?}"),
                };
                log.lock().unwrap().conns.push((hello, Vec::new()));
                let mut n = 0;
                while let Some(Ok(m)) = ws.next().await {
                    match m {
                        Message::Binary(b) => {
                            log.lock().unwrap().conns[conn].1.push(b.len());
                            n += 1;
                            if conn == 0 && n == 10 {
                                break;
                            }
                        }
                        Message::Close(_) => break,
                        _ => {}
                    }
                }
                drop(ws);
            }
            let _ = done_tx.send(());
        })
    };

    let stats = Arc::new(SinkStats::default());
    let settings = SinkSettings {
        stt_url: Some(format!("ws://{addr}/stt")),
        ..Default::default()
    };
    let sinks = CallSinks::start("stt-1".into(), &settings, stats.clone()).unwrap();
    let frames = 150u64;
    for i in 0..frames {
        sinks.audio(&frame(Side::Caller, 8000, i * 160, 1000, 160));
        // Downstream audio never goes to STT.
        sinks.audio(&frame(Side::Downstream, 8000, i * 160, 2000, 160));
        // Paced at half real time so the drop and the reconnect happen mid-stream.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sinks.close().await;
    tokio::time::timeout(Duration::from_secs(10), done_rx)
        .await
        .expect("server saw the close frame")
        .unwrap();
    server.await.unwrap();

    let log = log.lock().unwrap();
    assert_eq!(log.conns.len(), 2, "reconnected once");
    for (hello, _) in &log.conns {
        assert_eq!(
            *hello,
            serde_json::json!({"call_id": "stt-1", "rate": 16000, "encoding": "pcm_s16le",
                "channels": 1})
        );
    }
    let (first, second) = (&log.conns[0].1, &log.conns[1].1);
    assert_eq!(first.len(), 10);
    assert!(!second.is_empty(), "frames after the reconnect arrived");
    // 20 ms messages of 640 bytes; only each connection's last may be shorter.
    for m in first.iter().chain(&second[..second.len() - 1]) {
        assert_eq!(*m, 640);
    }
    let received: usize = first.iter().chain(second).sum();
    let dropped = get(&stats.stt_dropped) as usize;
    assert!(dropped > 0, "frames while disconnected are counted");
    assert!(get(&stats.stt_errors) >= 1);
    // 16 kHz x 2 bytes x 3 s, less what was dropped (640 bytes per 20 ms input frame), less
    // a few frames in flight when the server hung up and the resampler's trimmed delay.
    let expect = frames as usize * 640;
    println!("received {received} bytes, {dropped} frames dropped, expected {expect} bytes");
    assert!(
        received + dropped * 640 <= expect,
        "{received} + {dropped} frames"
    );
    assert!(
        received + dropped * 640 >= expect - 8 * 640,
        "{received} bytes + {dropped} dropped frames, expected about {expect}"
    );
}

// ---------------------------------------------------------------- HTTP receiver

/// Records signed POSTs; answers `fail_first` 500s, then `status`.
struct Receiver {
    secret: &'static str,
    fail_first: AtomicU32,
    status: u16,
    attempts: AtomicU32,
    bad_signatures: AtomicU32,
    bodies: Mutex<Vec<serde_json::Value>>,
}

struct Server {
    addr: SocketAddr,
    state: Arc<Receiver>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(secret: &'static str, fail_first: u32, status: u16) -> Server {
        async fn handle(
            State(s): State<Arc<Receiver>>,
            headers: HeaderMap,
            body: Bytes,
        ) -> StatusCode {
            s.attempts.fetch_add(1, Ordering::SeqCst);
            let sig = headers
                .get(SIGNATURE_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let json = headers
                .get("content-type")
                .is_some_and(|v| v == "application/json");
            if !json || !verify(s.secret.as_bytes(), sig, &body, 300, now()) {
                s.bad_signatures.fetch_add(1, Ordering::SeqCst);
                return StatusCode::UNAUTHORIZED;
            }
            if s.fail_first
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return StatusCode::INTERNAL_SERVER_ERROR;
            }
            s.bodies
                .lock()
                .unwrap()
                .push(serde_json::from_slice(&body).unwrap());
            StatusCode::from_u16(s.status).unwrap()
        }
        let state = Arc::new(Receiver {
            secret,
            fail_first: AtomicU32::new(fail_first),
            status,
            attempts: AtomicU32::new(0),
            bad_signatures: AtomicU32::new(0),
            bodies: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .route("/in", axum::routing::post(handle))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Server {
            addr,
            state,
            stop: Some(stop),
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/in", self.addr)
    }

    fn bodies(&self) -> Vec<serde_json::Value> {
        self.state.bodies.lock().unwrap().clone()
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

// ---------------------------------------------------------------- webhooks

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_retried_and_in_order() {
    let srv = Server::start(WEBHOOK_SECRET, 1, 200).await;
    let stats = Arc::new(SinkStats::default());
    let settings = SinkSettings {
        webhook_url: Some(srv.url()),
        webhook_secret: Some(WEBHOOK_SECRET.into()),
        ..Default::default()
    };
    let sinks = CallSinks::start("wh-1".into(), &settings, stats.clone()).unwrap();
    sinks.event(&envelope(
        "wh-1",
        0,
        EventBody::Call(CallEvent::MediaStarted),
    ));
    sinks.event(&envelope("wh-1", 1, pause(8000)));
    for seq in 2..6 {
        sinks.event(&envelope("wh-1", seq, resume(8000 + seq)));
    }
    wait_until("6 webhooks delivered", || {
        get(&stats.webhook_delivered) == 6
    })
    .await;
    sinks.close().await;

    let bodies = srv.bodies();
    let seqs: Vec<u64> = bodies.iter().map(|b| b["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [0, 1, 2, 3, 4, 5], "in order, the 500 retried first");
    assert_eq!(bodies[0]["event"], "media_started");
    assert_eq!(bodies[0]["call_id"], "wh-1");
    assert_eq!(bodies[1]["event"], "recording_pause");
    assert_eq!(bodies[1]["at_sample"], 8000);
    assert_eq!(srv.state.attempts.load(Ordering::SeqCst), 7);
    assert_eq!(srv.state.bad_signatures.load(Ordering::SeqCst), 0);
    assert_eq!(get(&stats.webhook_errors), 0);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_4xx_fails_at_once_and_a_down_url_counts_errors() {
    // 400: one attempt per event, counted as an error.
    let srv = Server::start(WEBHOOK_SECRET, 0, 400).await;
    let stats = Arc::new(SinkStats::default());
    let settings = SinkSettings {
        webhook_url: Some(srv.url()),
        webhook_secret: Some(WEBHOOK_SECRET.into()),
        ..Default::default()
    };
    let sinks = CallSinks::start("wh-2".into(), &settings, stats.clone()).unwrap();
    for seq in 0..3 {
        sinks.event(&envelope(
            "wh-2",
            seq,
            EventBody::Call(CallEvent::SsrcChanged),
        ));
    }
    wait_until("3 rejected", || get(&stats.webhook_errors) == 3).await;
    sinks.close().await;
    assert_eq!(srv.state.attempts.load(Ordering::SeqCst), 3);
    assert_eq!(get(&stats.webhook_delivered), 0);
    srv.stop().await;

    // Nothing listening: event() still returns at once, 10,000 times; every event ends up
    // counted as an error (queue overflow at once, the rest when close() gives up).
    let stats = Arc::new(SinkStats::default());
    let settings = SinkSettings {
        webhook_url: Some(format!("http://{}/in", refused_addr().await)),
        webhook_secret: Some(WEBHOOK_SECRET.into()),
        close_timeout_ms: Some(300),
        ..Default::default()
    };
    let sinks = CallSinks::start("wh-3".into(), &settings, stats.clone()).unwrap();
    let mut calls = 0;
    for seq in 0..10_000 {
        sinks.event(&envelope(
            "wh-3",
            seq,
            EventBody::Call(CallEvent::MediaStarted),
        ));
        calls += 1;
    }
    assert_eq!(calls, 10_000);
    assert!(get(&stats.webhook_errors) >= 10_000 - 1001);
    sinks.close().await;
    assert_eq!(get(&stats.webhook_errors), 10_000);
    assert_eq!(get(&stats.webhook_delivered), 0);
}

// ---------------------------------------------------------------- secure sink

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_digits_over_http() {
    let srv = Server::start(SECURE_SECRET, 1, 200).await;
    let stats = Arc::new(SinkStats::default());
    let settings = SinkSettings {
        secure_target: Some(Target::Url(srv.url())),
        secure_secret: Some(SECURE_SECRET.into()),
        ..Default::default()
    };
    let sinks = CallSinks::start("sec-1".into(), &settings, stats.clone()).unwrap();
    for (i, k) in "41#".chars().enumerate() {
        sinks.secure_digit(digit("sec-1", i as u64, k));
    }
    wait_until("3 digits delivered", || get(&stats.secure_delivered) == 3).await;
    sinks.close().await;
    let bodies = srv.bodies();
    assert_eq!(
        bodies[2],
        serde_json::json!({"call_id": "sec-1", "channel": 0, "window": 1, "index": 2,
            "digit": "#", "at_ms": 1400.0})
    );
    let keys: String = bodies
        .iter()
        .map(|b| b["digit"].as_str().unwrap())
        .collect();
    assert_eq!(keys, "41#");
    assert_eq!(srv.state.bad_signatures.load(Ordering::SeqCst), 0);
    assert_eq!(get(&stats.secure_errors), 0);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_digits_over_a_unix_socket() {
    use tokio::io::AsyncReadExt;
    let dir = tmpdir("unix");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("secure.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let server = tokio::spawn(async move {
        let mut lines = Vec::new();
        for _ in 0..3 {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = String::new();
            s.read_to_string(&mut buf).await.unwrap();
            lines.push(buf);
        }
        lines
    });
    let stats = Arc::new(SinkStats::default());
    let settings = SinkSettings {
        secure_target: Some(Target::Unix(path.clone())),
        secure_secret: Some(SECURE_SECRET.into()),
        ..Default::default()
    };
    let sinks = CallSinks::start("sec-2".into(), &settings, stats.clone()).unwrap();
    for (i, k) in "907".chars().enumerate() {
        sinks.secure_digit(digit("sec-2", i as u64, k));
    }
    let lines = tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .unwrap()
        .unwrap();
    sinks.close().await;
    let mut keys = String::new();
    for (i, line) in lines.iter().enumerate() {
        // One line per connection: "<signature>\t<body>\n".
        let line = line.strip_suffix('\n').expect("newline-terminated");
        assert!(!line.contains('\n'));
        let (sig, body) = line.split_once('\t').unwrap();
        assert!(verify(
            SECURE_SECRET.as_bytes(),
            sig,
            body.as_bytes(),
            300,
            now()
        ));
        assert!(!verify(
            WEBHOOK_SECRET.as_bytes(),
            sig,
            body.as_bytes(),
            300,
            now()
        ));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["call_id"], "sec-2");
        assert_eq!(v["index"], i as u64);
        keys += v["digit"].as_str().unwrap();
    }
    assert_eq!(keys, "907");
    assert_eq!(get(&stats.secure_delivered), 3);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secure_target_digits_go_nowhere() {
    // The only configured receiver is the webhook; digits must not show up there.
    let srv = Server::start(WEBHOOK_SECRET, 0, 200).await;
    let stats = Arc::new(SinkStats::default());
    let settings = SinkSettings {
        webhook_url: Some(srv.url()),
        webhook_secret: Some(WEBHOOK_SECRET.into()),
        ..Default::default()
    };
    let sinks = CallSinks::start("sec-3".into(), &settings, stats.clone()).unwrap();
    for i in 0..5 {
        sinks.secure_digit(digit("sec-3", i, '5'));
    }
    sinks.close().await;
    assert_eq!(srv.state.attempts.load(Ordering::SeqCst), 0);
    assert_eq!(get(&stats.secure_delivered), 0);
    assert_eq!(get(&stats.secure_errors), 0, "discarding is not an error");
    srv.stop().await;
}

// ---------------------------------------------------------------- slow sinks

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_never_answers_blocks_nothing() {
    // Accepts TCP connections and never says a word (no HTTP response, no WebSocket
    // handshake).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hole = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let dir = tmpdir("slow");
    let stats = Arc::new(SinkStats::default());
    let settings = SinkSettings {
        recording_dir: Some(dir.clone()),
        stt_url: Some(format!("ws://{addr}/stt")),
        webhook_url: Some(format!("http://{addr}/in")),
        webhook_secret: Some(WEBHOOK_SECRET.into()),
        secure_target: Some(Target::Url(format!("http://{addr}/in"))),
        secure_secret: Some(SECURE_SECRET.into()),
        close_timeout_ms: Some(500),
    };
    let sinks = CallSinks::start("slow-1".into(), &settings, stats.clone()).unwrap();
    let mut calls = 0u32;
    for i in 0..10_000u64 {
        sinks.audio(&frame(Side::Caller, 8000, i * 160, 1, 160));
        sinks.event(&envelope(
            "slow-1",
            i,
            EventBody::Call(CallEvent::SsrcChanged),
        ));
        sinks.secure_digit(digit("slow-1", i, '1'));
        calls += 1;
    }
    assert_eq!(calls, 10_000);
    // The STT task is stuck in its handshake, so its queue filled and the rest was counted.
    assert!(get(&stats.stt_dropped) >= 10_000 - 501);
    assert!(get(&stats.webhook_errors) >= 10_000 - 1001);
    assert!(get(&stats.secure_errors) >= 10_000 - 1001);

    // close(): 0.5 s to drain, then cancel, then at most 1 s before tasks are aborted.
    tokio::time::timeout(Duration::from_secs(5), sinks.close())
        .await
        .expect("close() returned within its bound");
    assert_eq!(get(&stats.webhook_errors), 10_000);
    assert_eq!(get(&stats.secure_errors), 10_000);
    assert_eq!(
        get(&stats.webhook_delivered) + get(&stats.secure_delivered),
        0
    );
    // The recorder still finished its file (frames it had no room for became silence).
    let r = hound::WavReader::open(dir.join("slow-1.wav")).unwrap();
    assert_eq!(r.spec().channels, 2);
    assert!(dir.join("slow-1.json").exists());
    hole.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------- no digit in logs

mod capture {
    use std::sync::{Arc, Mutex};
    use tracing::field::{Field, Visit};
    use tracing_subscriber::layer::Context;
    use tracing_subscriber::Layer;

    /// One log record as "target level field=value ...", and its field names.
    pub type Record = (String, Vec<String>);

    /// Every log record in the process.
    #[derive(Clone, Default)]
    pub struct Capture(pub Arc<Mutex<Vec<Record>>>);

    struct Fields(String, Vec<String>);

    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0 += &format!(" {}={:?}", field.name(), value);
            self.1.push(field.name().to_string());
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0 += &format!(" {}={}", field.name(), value);
            self.1.push(field.name().to_string());
        }
    }

    impl<S: tracing::Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            let m = event.metadata();
            let mut f = Fields(format!("{} {}", m.target(), m.level()), Vec::new());
            event.record(&mut f);
            self.0.lock().unwrap().push((f.0, f.1));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_secure_deliveries_log_no_digit_value() {
    use tracing_subscriber::layer::SubscriberExt;
    let cap = capture::Capture::default();
    // Global, so the sink tasks on the runtime's worker threads are captured too (and any
    // other test running at the same time: all the better).
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(cap.clone()))
        .expect("the only test that installs a subscriber");

    // An HTTP receiver that always answers 500, and a Unix path nobody listens on.
    let srv = Server::start(SECURE_SECRET, u32::MAX, 200).await;
    let dir = tmpdir("nolog");
    std::fs::create_dir_all(&dir).unwrap();
    let stats = Arc::new(SinkStats::default());
    let mut all = Vec::new();
    for (id, target) in [
        ("nolog-http", Target::Url(srv.url())),
        ("nolog-unix", Target::Unix(dir.join("nobody.sock"))),
    ] {
        let settings = SinkSettings {
            secure_target: Some(target),
            secure_secret: Some(SECURE_SECRET.into()),
            // The other two digits are cancelled at close (and counted): no need to wait
            // for their retries.
            close_timeout_ms: Some(100),
            ..Default::default()
        };
        let sinks = CallSinks::start(id.into(), &settings, stats.clone()).unwrap();
        // '#' and 'D' are rare in ordinary log text; '7' checks the JSON form.
        for (i, k) in "#D7".chars().enumerate() {
            let d = digit(id, i as u64, k);
            let dbg = format!("{d:?}");
            assert!(dbg.contains("digit: [redacted]") && !dbg.contains(&format!("'{k}'")));
            sinks.secure_digit(d);
        }
        all.push(sinks);
    }
    // The first digit of each call exhausts its 5 attempts (about 3 s of backoff).
    wait_until("both first digits failed", || {
        get(&stats.secure_errors) >= 2
    })
    .await;
    for s in all {
        s.close().await;
    }
    assert_eq!(get(&stats.secure_errors), 6);
    assert!(srv.state.attempts.load(Ordering::SeqCst) >= 5);
    srv.stop().await;

    let logs = cap.0.lock().unwrap();
    let failures: Vec<&String> = logs
        .iter()
        .map(|(l, _)| l)
        .filter(|l| l.contains("secure digit delivery failed"))
        .collect();
    assert!(
        failures.iter().any(|l| l.contains("nolog-http"))
            && failures.iter().any(|l| l.contains("nolog-unix")),
        "the failures were logged; the checks below would prove nothing otherwise: {failures:?}"
    );
    for (line, fields) in logs.iter() {
        assert!(!line.contains("\"digit\""), "digit body in log: {line}");
        assert!(
            !line.contains("digit=#") && !line.contains("digit=D"),
            "{line}"
        );
        assert!(!line.contains("\"#\"") && !line.contains("\"D\""), "{line}");
        for f in fields {
            assert!(
                f != "digit" && f != "body" && f != "value",
                "field {f}: {line}"
            );
        }
    }
    for l in &failures {
        assert!(l.contains("index="), "failures name the index: {l}");
    }
    println!(
        "{} log lines checked, e.g. {}",
        logs.len(),
        failures.first().unwrap()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
