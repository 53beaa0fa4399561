//! Tests of the browser harness itself (tests/browser/mod.rs), with no tonewall server: the
//! network namespace is made and always removed, and real headless Chromium inside it captures
//! a fixture through its fake microphone and connects two peer connections of one page over
//! the veth addresses (loopback-selftest.html), so a WHIP test that fails later fails for a
//! reason of its own.
//!
//! Needs root (`ip netns`), Chromium and ffmpeg: without Chromium these tests fail with a
//! message saying so, because .ci/run installs it. They must never touch the host's network
//! namespace or leave a namespace or a browser process behind.

#[path = "browser/mod.rs"]
mod browser;

use browser::{chromium_available, page_url, prepare_wav, run_chromium, whip_page_url, Netns};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn namespaces() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn listed(name: &str) -> bool {
    namespaces()
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

/// A 16-bit PCM mono WAV at 8 kHz (the rate the fixtures of this project use) holding the DTMF
/// pair of key 5 (770 + 1336 Hz), each tone at -9 dBFS, for `secs`.
fn write_tone_wav(path: &Path, secs: f64) {
    let rate = 8000u32;
    let n = (secs * rate as f64) as usize;
    let mut data = Vec::with_capacity(n * 2);
    for i in 0..n {
        let t = i as f64 / rate as f64;
        let amp = 0.355 * i16::MAX as f64;
        let v = amp
            * ((2.0 * std::f64::consts::PI * 770.0 * t).sin()
                + (2.0 * std::f64::consts::PI * 1336.0 * t).sin());
        data.extend_from_slice(&(v.round() as i16).to_le_bytes());
    }
    let mut wav = Vec::new();
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&rate.to_le_bytes());
    wav.extend_from_slice(&(rate * 2).to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(data.len() as u32).to_le_bytes());
    wav.extend_from_slice(&data);
    std::fs::write(path, wav).unwrap();
}

#[test]
fn netns_is_deleted_on_drop_and_on_panic() {
    let ns = Netns::create().expect("create the namespace (needs root and iproute2)");
    let name = ns.name().to_string();
    assert!(listed(&name), "{name} not in `ip netns list`");
    // Both veth ends are inside, up, and carry the addresses the API reports.
    let out = ns
        .command("ip")
        .args(["-4", "-brief", "addr"])
        .output()
        .unwrap();
    let addrs = String::from_utf8_lossy(&out.stdout).into_owned();
    for a in [ns.addr_server(), ns.addr_client()] {
        assert!(
            addrs.contains(&format!("{a}/24")),
            "{a} missing in\n{addrs}"
        );
    }
    // A process still inside when the guard drops is ended with it.
    let mut left = KillOnDrop(ns.command("sleep").arg("30").spawn().unwrap());
    // Only once `ip netns exec` has entered the namespace is the process in it (a process
    // still on its way in when the guard drops escapes it; that is the caller's race).
    let until = Instant::now() + Duration::from_secs(5);
    let pid = left.0.id().to_string();
    loop {
        let out = Command::new("ip")
            .args(["netns", "identify", &pid])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).trim() == name {
            break;
        }
        assert!(Instant::now() < until, "sleep never entered {name}");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(ns);
    assert!(!listed(&name), "{name} survived its guard");
    let until = Instant::now() + Duration::from_secs(5);
    while left.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < until, "a process in {name} outlived it");
        std::thread::sleep(Duration::from_millis(20));
    }

    // A namespace whose test process died without its guards is removed by the next create.
    let mut gone = Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let orphan = format!("tonewall-browser-{}-0", gone.id());
    let status = Command::new("ip").args(["netns", "add", &orphan]).status();
    assert!(status.unwrap().success());
    let ns = Netns::create().unwrap();
    assert!(!listed(&orphan), "orphan {orphan} was not removed");
    drop(ns);

    let mut inside = String::new();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let ns = Netns::create().unwrap();
        inside = ns.name().to_string();
        panic!("test panics with a namespace alive");
    }));
    assert!(caught.is_err());
    assert!(
        !inside.is_empty() && !listed(&inside),
        "{inside} survived a panic"
    );
}

#[test]
fn chromium_captures_the_fixture_and_connects_over_ice_in_the_netns() {
    assert!(chromium_available(), "{}", browser::CHROMIUM_MISSING);
    let ns = Netns::create().expect("create the namespace (needs root and iproute2)");
    let dir = browser::scratch_dir("selftest").unwrap();
    let src = dir.join("key5-8k.wav");
    write_tone_wav(&src, 4.0);
    let wav = prepare_wav(&src, &dir, Duration::from_secs(1)).expect("ffmpeg converts the fixture");

    let url = page_url("loopback-selftest.html", &[("seconds", "2".to_string())]);
    let run = run_chromium(&ns, &url, &wav, Duration::from_secs(20)).expect("run Chromium");
    let _ = std::fs::remove_dir_all(&dir);
    let why = run.summary();
    println!("self-test took {:?}", run.elapsed);
    assert!(run.done, "the self-test page did not finish:\n{why}");
    assert_eq!(run.with("secure-context"), ["true"], "{why}");

    // Host candidates were gathered, and only on the namespace's veth addresses.
    let veth = [ns.addr_server().to_string(), ns.addr_client().to_string()];
    let candidates = run.with("candidate");
    assert!(!candidates.is_empty(), "no ICE candidates:\n{why}");
    for c in &candidates {
        // "<peer> <address> <port> <protocol> <type>"
        let f: Vec<&str> = c.split(' ').collect();
        assert!(
            f.len() == 5 && veth.contains(&f[1].to_string()),
            "candidate {c}:\n{why}"
        );
        assert_eq!(f[4], "host", "{why}");
    }
    let ice = run.with("ice");
    assert!(
        ice.contains(&"a connected") || ice.contains(&"a completed"),
        "{why}"
    );
    assert!(run.with("connected").len() == 1, "{why}");

    // The fake microphone played our fixture with processing off ...
    let track = run.with("track");
    assert!(
        track.len() == 1
            && track[0].contains("\"echoCancellation\":false")
            && track[0].contains("\"noiseSuppression\":false")
            && track[0].contains("\"autoGainControl\":false"),
        "{why}"
    );
    // ... and it arrived at the other peer, through Opus, at its own frequencies.
    let result = run.with("result");
    assert_eq!(result.len(), 1, "{why}");
    let field = |name: &str| -> f64 {
        result[0]
            .split(' ')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(field("packets") >= 50.0, "too few packets:\n{why}");
    assert!(
        field("level") > 0.1,
        "received audio is (nearly) silent:\n{why}"
    );
    let peaks = run.with("peaks");
    assert_eq!(peaks.len(), 1, "{why}");
    for side in ["local=", "remote="] {
        let hz: Vec<f64> = peaks[0]
            .split(' ')
            .find_map(|kv| kv.strip_prefix(side))
            .unwrap_or("")
            .split(',')
            .filter_map(|v| v.parse().ok())
            .collect();
        assert!(
            hz.len() == 2 && (hz[0] - 770.0).abs() < 12.0 && (hz[1] - 1336.0).abs() < 12.0,
            "{side} peaks {hz:?} are not the fixture's 770 + 1336 Hz:\n{why}"
        );
    }
    let offer = run.offer().expect("the page logs its offer");
    assert!(offer.contains("a=rtpmap:111 opus/48000/2"), "{offer}");
    drop(ns);
}

/// Where the stub helper learns its listen address; unset, the helper does nothing.
const STUB_ENV: &str = "TONEWALL_BROWSER_WHIP_STUB_LISTEN";
const TOKEN: &str = "browser-harness-token-1";

/// One HTTP/1.1 request off a keep-alive connection: method, path, lower-cased headers, body.
type Request = (String, String, Vec<(String, String)>, String);

fn read_request(r: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let len = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0usize);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some((
        method,
        path,
        headers,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

/// An answer that setRemoteDescription accepts but that no ICE agent stands behind: the
/// offer with the answerer's roles and credentials and no candidates or sending SSRC.
fn unreachable_answer(offer: &str) -> String {
    let mut out = String::new();
    for l in offer.lines() {
        let l = match l {
            l if l.starts_with("a=candidate") || l.starts_with("a=end-of-candidates") => continue,
            l if l.starts_with("a=ssrc") || l.starts_with("a=msid:") => continue,
            l if l.starts_with("a=ice-ufrag:") => "a=ice-ufrag:stub".to_string(),
            l if l.starts_with("a=ice-pwd:") => "a=ice-pwd:stubstubstubstubstubstub".to_string(),
            "a=setup:actpass" => "a=setup:passive".to_string(),
            "a=sendonly" => "a=recvonly".to_string(),
            l => l.to_string(),
        };
        out.push_str(&l);
        out.push_str("\r\n");
    }
    out
}

fn serve_stub(stream: TcpStream) {
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    while let Some((method, path, headers, body)) = read_request(&mut r) {
        let req =
            serde_json::json!({"method": method, "path": path, "headers": headers, "body": body});
        println!("STUB-REQ {req}");
        let (status, extra, body) = match method.as_str() {
            "OPTIONS" => ("204 No Content", String::new(), String::new()),
            "POST" => (
                "201 Created",
                "Content-Type: application/sdp\r\nLocation: sessions/1\r\n".to_string(),
                unreachable_answer(&body),
            ),
            "DELETE" => ("200 OK", String::new(), String::new()),
            _ => ("405 Method Not Allowed", String::new(), String::new()),
        };
        // What a WHIP server has to answer a file:// page (Origin: null) with.
        let cors = "Access-Control-Allow-Origin: *\r\n\
            Access-Control-Allow-Methods: POST, DELETE, OPTIONS\r\n\
            Access-Control-Allow-Headers: Authorization, Content-Type\r\n\
            Access-Control-Expose-Headers: Location\r\n";
        let resp = format!(
            "HTTP/1.1 {status}\r\n{cors}{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if w.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

/// Not a test: the WHIP stub server that `whip_page_speaks_whip_to_a_stub` runs inside its
/// namespace by running this test binary there (a thread of the test process cannot listen in
/// another namespace). Does nothing unless STUB_ENV is set.
#[test]
#[ignore = "helper process of whip_page_speaks_whip_to_a_stub"]
fn whip_stub_server() {
    let Ok(addr) = std::env::var(STUB_ENV) else {
        return;
    };
    // The parent kills us; should it die first, we still end.
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(40));
        std::process::exit(0);
    });
    let l = TcpListener::bind((addr.as_str(), 0)).unwrap();
    println!("STUB-PORT {}", l.local_addr().unwrap().port());
    for conn in l.incoming().flatten() {
        std::thread::spawn(move || serve_stub(conn));
    }
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn whip_page_speaks_whip_to_a_stub() {
    assert!(chromium_available(), "{}", browser::CHROMIUM_MISSING);
    let ns = Netns::create().expect("create the namespace (needs root and iproute2)");
    let mut stub = KillOnDrop(
        ns.command(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "whip_stub_server", "--nocapture"])
            .env(STUB_ENV, ns.addr_server().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (tx, rx) = mpsc::channel::<String>();
    let out = stub.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let until = Instant::now() + Duration::from_secs(10);
    let port = loop {
        let line = rx
            .recv_timeout(until.saturating_duration_since(Instant::now()))
            .expect("the stub reports its port within 10 s");
        if let Some(p) = line.strip_prefix("STUB-PORT ") {
            break p.trim().to_string();
        }
    };
    let base = format!("http://{}:{port}/whip", ns.addr_server());
    let whip = format!("{base}/endpoint");

    let dir = browser::scratch_dir("whip-stub").unwrap();
    let src = dir.join("key5-8k.wav");
    write_tone_wav(&src, 2.0);
    let wav = prepare_wav(&src, &dir, Duration::from_secs(1)).expect("ffmpeg converts the fixture");
    let url = whip_page_url(&whip, TOKEN, 1, Some(2000), "");
    let run = run_chromium(&ns, &url, &wav, Duration::from_secs(20)).expect("run Chromium");
    let _ = std::fs::remove_dir_all(&dir);
    let why = run.summary();
    println!("WHIP page against the stub took {:?}", run.elapsed);

    // No ICE agent behind the stub: the page must give up on the connection, and still
    // delete the session it made.
    assert!(!run.done, "{why}");
    let error = run.error.clone().unwrap_or_default();
    assert!(error.starts_with("connection"), "{why}");
    assert_eq!(run.with("post"), ["201 location \"sessions/1\""], "{why}");
    assert_eq!(
        run.with("resource"),
        [format!("{base}/sessions/1").as_str()],
        "{why}"
    );
    assert_eq!(run.with("delete"), ["200"], "{why}");
    assert!(
        !run.lines.iter().any(|l| l.contains(TOKEN)),
        "the page logged its token:\n{why}"
    );
    let offer = run.offer().expect("the page logs its offer");
    let saved = Path::new(env!("CARGO_TARGET_TMPDIR")).join("chromium-offer.sdp");
    std::fs::write(&saved, &offer).unwrap();
    println!("Chromium's WHIP offer: {}", saved.display());

    // What the stub saw: preflights, then the POST and the DELETE, all from Origin null.
    let mut reqs: Vec<serde_json::Value> = Vec::new();
    let until = Instant::now() + Duration::from_secs(2);
    while reqs.len() < 4 {
        match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(l) => {
                if let Some(j) = l.strip_prefix("STUB-REQ ") {
                    reqs.push(serde_json::from_str(j).unwrap());
                }
            }
            Err(_) => break,
        }
    }
    let header = |r: &serde_json::Value, name: &str| -> Option<String> {
        r["headers"]
            .as_array()?
            .iter()
            .find_map(|kv| (kv[0] == name).then(|| kv[1].as_str().unwrap_or("").to_string()))
    };
    let seen: Vec<String> = reqs
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["method"].as_str().unwrap(),
                r["path"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            "OPTIONS /whip/endpoint",
            "POST /whip/endpoint",
            "OPTIONS /whip/sessions/1",
            "DELETE /whip/sessions/1"
        ],
        "{reqs:#?}"
    );
    for r in &reqs {
        assert_eq!(header(r, "origin").as_deref(), Some("null"), "{r:#}");
    }
    let bearer = format!("Bearer {TOKEN}");
    // Preflights never carry the token: the server must answer OPTIONS unauthenticated.
    assert_eq!(header(&reqs[0], "authorization"), None);
    assert_eq!(
        header(&reqs[0], "access-control-request-headers").as_deref(),
        Some("authorization,content-type")
    );
    assert_eq!(header(&reqs[1], "authorization"), Some(bearer.clone()));
    assert_eq!(
        header(&reqs[1], "content-type").as_deref(),
        Some("application/sdp")
    );
    assert_eq!(header(&reqs[3], "authorization"), Some(bearer));

    // The offer is non-trickle (candidates inside, on the veth addresses only), one sendonly
    // Opus audio section.
    let body = reqs[1]["body"].as_str().unwrap();
    assert_eq!(body, offer);
    let veth = [ns.addr_server().to_string(), ns.addr_client().to_string()];
    let cands: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("a=candidate"))
        .collect();
    assert!(!cands.is_empty(), "{body}");
    for c in &cands {
        let addr = c.split(' ').nth(4).unwrap_or("");
        assert!(veth.contains(&addr.to_string()), "{c}");
    }
    assert_eq!(body.matches("m=").count(), 1, "{body}");
    for needle in ["m=audio ", "a=sendonly", "a=rtpmap:111 opus/48000/2"] {
        assert!(body.contains(needle), "{needle} not in\n{body}");
    }
    drop(stub);
    drop(ns);
}

#[test]
fn a_fixture_chromium_cannot_play_is_a_harness_error_not_silence() {
    assert!(chromium_available(), "{}", browser::CHROMIUM_MISSING);
    let ns = Netns::create().expect("create the namespace (needs root and iproute2)");
    // Chromium's fake microphone refuses mu-law and plays silence instead, which would make a
    // masking test pass for the wrong reason; the harness must say so instead.
    let wav = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-audio/payment-call-8k-ulaw.wav");
    let url = page_url("loopback-selftest.html", &[("seconds", "1".to_string())]);
    let run = run_chromium(&ns, &url, &wav, Duration::from_secs(20));
    let err = run.expect_err("a mu-law fixture must not run");
    assert!(err.contains("refused"), "{err}");
}
