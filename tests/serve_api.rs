//! The control API of the real `tonewall serve` binary: health, auth, validation, explicit
//! capture windows, metrics, refusing unsafe configs, and a clean shutdown on SIGTERM.

mod gateway;

use std::process::Command;
use std::time::Duration;

use gateway::{build, send_all, Gateway, Receiver};

#[test]
fn health_metrics_and_validation() {
    let gw = Gateway::start("api-basic", "[sinks]\n");
    assert_eq!(gw.http("GET", "/healthz", None), (200, "ok\n".into()));
    let (code, body) = gw.http("GET", "/metrics", None);
    assert_eq!(code, 200);
    for m in [
        "tonewall_calls_active 0",
        "tonewall_caller_packets_total",
        "tonewall_tones_masked_total",
        "tonewall_capture_windows_total",
        "tonewall_sink_errors_total{sink=\"webhook\"}",
        "tonewall_packet_processing_seconds_bucket{le=\"+Inf\"}",
        "process_cpu_seconds_total",
    ] {
        assert!(body.contains(m), "metrics lack {m}:\n{body}");
    }
    for (req, what) in [
        (r#"{"downstream":"127.0.0.1:9","codec":"g729"}"#, "codec"),
        (
            r#"{"downstream":"127.0.0.1:9","lookahead_ms":41}"#,
            "lookahead",
        ),
        (
            r#"{"downstream":"127.0.0.1:9","codec":"pcmu","rate":16000}"#,
            "G.711",
        ),
        (r#"{"downstream":"127.0.0.1:9","call_id":"a b"}"#, "call_id"),
        (r#"{"downstream":"nowhere"}"#, "address"),
        (r#"{"downstream":"0.0.0.0:4000"}"#, "unspecified downstream"),
        (r#"{"downstream":"127.0.0.1:0"}"#, "downstream port 0"),
        (
            r#"{"downstream":"255.255.255.255:4000"}"#,
            "broadcast downstream",
        ),
        (
            r#"{"downstream":"[::1]:4000"}"#,
            "IPv6 downstream, IPv4 media",
        ),
        (r#"{"downstream":"127.0.0.1:9","bogus":1}"#, "unknown field"),
    ] {
        let (code, body) = gw.http("POST", "/v1/calls", Some(req));
        assert!((400..500).contains(&code), "{what}: {code} {body}");
    }
    assert_eq!(gw.http("GET", "/v1/calls/none", None).0, 404);
    assert_eq!(gw.http("DELETE", "/v1/calls/none", None).0, 404);
    assert_eq!(gw.http("POST", "/v1/calls/none/capture", Some("{}")).0, 404);
    // A call id given twice is a conflict.
    let body = r#"{"downstream":"127.0.0.1:9","call_id":"dup-1"}"#;
    assert_eq!(gw.http("POST", "/v1/calls", Some(body)).0, 201);
    assert_eq!(gw.http("POST", "/v1/calls", Some(body)).0, 409);
    // An update is held to the same rules as a new call.
    for req in [
        r#"{"downstream":"0.0.0.0:4000"}"#,
        r#"{"downstream":"[::1]:4000"}"#,
    ] {
        let (code, body) = gw.http("PATCH", "/v1/calls/dup-1", Some(req));
        assert_eq!(code, 400, "{req}: {body}");
    }
    let list = gw.json("GET", "/v1/calls", None);
    assert_eq!(list, serde_json::json!(["dup-1"]));
    let m = gw.http("GET", "/metrics", None).1;
    assert!(m.contains("tonewall_calls_active 1"), "{m}");
}

#[test]
fn bearer_token_is_enforced() {
    let mut gw = Gateway::start_with("api-auth", "[sinks]\n", Some("s3cret-token"));
    let api = gw.api;
    assert_eq!(gateway::http(api, "GET", "/metrics", None, None).0, 401);
    assert_eq!(
        gateway::http(api, "GET", "/metrics", None, Some("wrong")).0,
        401
    );
    assert_eq!(
        gateway::http(
            api,
            "POST",
            "/v1/calls",
            Some(r#"{"downstream":"127.0.0.1:9"}"#),
            None
        )
        .0,
        401
    );
    assert_eq!(
        gateway::http(api, "GET", "/metrics", None, Some("s3cret-token")).0,
        200
    );
    // Health stays open for load balancers.
    assert_eq!(gateway::http(api, "GET", "/healthz", None, None).0, 200);
    assert!(gw.stop().success());
    assert!(!gw.log().contains("s3cret-token"), "token in the log");
}

#[test]
fn non_loopback_without_token_is_refused() {
    let dir = gateway::scratch("api-refuse");
    let cfg = dir.join("t.toml");
    std::fs::write(&cfg, "[server]\nlisten = \"0.0.0.0:0\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tonewall"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without server.token"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // A typo in the file is named, not ignored.
    std::fs::write(&cfg, "[server]\nlisten_addr = \"127.0.0.1:0\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tonewall"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen_addr"));
}

#[test]
fn explicit_capture_window_pauses_recording_and_closes_by_count() {
    let gw = Gateway::start(
        "api-capture",
        "[media.pipeline.capture]\nauto_open = false\n[sinks]\n",
    );
    let rx = Receiver::start(Duration::from_millis(500), Duration::from_secs(20));
    let c = gw.json(
        "POST",
        "/v1/calls",
        Some(&format!(
            r#"{{"downstream":"{}","call_id":"cap-1"}}"#,
            rx.addr
        )),
    );
    let caller: std::net::SocketAddr = c["caller_rtp"].as_str().unwrap().parse().unwrap();
    let ev = gateway::follow_events(
        gw.api,
        "/v1/calls/cap-1/events",
        None,
        Duration::from_secs(20),
    );
    let open = gw.json(
        "POST",
        "/v1/calls/cap-1/capture",
        Some(r#"{"max_digits":2,"terminator":""}"#),
    );
    assert_eq!(open["capture_open"], true);
    // Two key presses as RFC 4733 events: the window closes itself after the second.
    let mut p = Vec::new();
    let mut seq = 0u16;
    for (i, key) in [4u8, 2].into_iter().enumerate() {
        let ts = 1000 + i as u32 * 4000;
        for k in 0..5u16 {
            let pl = gateway::te_payload(key, k == 4, 10, (k + 1) * 160);
            p.push(build(101, seq, ts, 42, k == 0, &pl));
            seq += 1;
        }
        for k in 0..10u32 {
            p.push(build(0, seq, ts + 800 + k * 160, 42, false, &[0xFF; 160]));
            seq += 1;
        }
    }
    let _s = send_all(&p, caller, Duration::from_millis(2));
    std::thread::sleep(Duration::from_millis(300));
    let st = gw.json("GET", "/v1/calls/cap-1", None);
    assert_eq!(st["capture_open"], false, "{st}");
    assert_eq!(st["stats"]["digits_from_events"], 2, "{st}");
    let end = gw.json("DELETE", "/v1/calls/cap-1", None);
    assert_eq!(end["ended"], "api");
    let events = ev.join().unwrap();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    let pos = |k: &str| {
        kinds
            .iter()
            .position(|x| *x == k)
            .unwrap_or_else(|| panic!("no {k} in {kinds:?}"))
    };
    assert!(pos("capture_opened") < pos("recording_pause"));
    assert!(pos("recording_pause") < pos("capture_closed"));
    assert!(pos("capture_closed") < pos("recording_resume"));
    let closed = &events[pos("capture_closed")];
    assert_eq!(closed["reason"], "digit_count");
    assert_eq!(closed["digit_count"], 2);
    assert_eq!(events[pos("capture_opened")]["reason"], "explicit");
    // Nothing of PT 101 went downstream.
    for pkt in rx.join() {
        assert_eq!(gateway::parse(&pkt).pt, 0);
    }
    let m = gw.http("GET", "/metrics", None).1;
    assert!(m.contains("tonewall_capture_windows_total 1"), "{m}");
    assert!(m.contains("tonewall_calls_ended_total 1"), "{m}");
}

#[test]
fn sigterm_ends_calls_and_exits_cleanly() {
    let mut gw = Gateway::start("api-term", "[sinks]\n");
    gw.json(
        "POST",
        "/v1/calls",
        Some(r#"{"downstream":"127.0.0.1:9","call_id":"t1"}"#),
    );
    let ev = gateway::follow_events(gw.api, "/v1/calls/t1/events", None, Duration::from_secs(20));
    assert!(gw.stop().success(), "{}", gw.log());
    let events = ev.join().unwrap();
    let ended: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "call_ended")
        .collect();
    assert_eq!(ended.len(), 1, "{events:?}");
    assert_eq!(ended[0]["reason"], "shutdown");
}

#[test]
fn loadgen_drives_calls_through_the_gateway_without_loss() {
    let gw = Gateway::start("api-load", "[sinks]\n");
    let out = Command::new(env!("CARGO_BIN_EXE_tonewall"))
        .args(["loadgen", "--api", &gw.api.to_string()])
        .args(["--calls", "20", "--seconds", "3", "--ramp-seconds", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // 20 calls x 50 packets/s x 3 s, every one back (a loaded CI machine may shift a tick).
    let sent = r["packets_sent"].as_u64().unwrap();
    assert!(sent >= 2800, "{r}");
    assert_eq!(r["packets_lost"], 0, "{r}");
    assert!(r["latency_us_p50"].as_u64().unwrap() > 0, "{r}");
    assert!(
        r["gateway_cpu_ms_per_call_second"].as_f64().unwrap() > 0.0,
        "{r}"
    );
    // The calls were ended: none left behind.
    let calls = gw.json("GET", "/v1/calls", None);
    assert_eq!(calls, serde_json::json!([]), "{r}");
    let m = gw.http("GET", "/metrics", None).1;
    assert!(m.contains("tonewall_calls_ended_total 20"), "{m}");
}

#[test]
fn the_example_config_starts_the_gateway() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/tonewall.example.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tonewall"))
        .args([
            "serve",
            "--config",
            example,
            "--listen",
            "127.0.0.1:0",
            "--no-recording",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        line.starts_with("tonewall listening on http://127.0.0.1:"),
        "{line:?}"
    );
}
