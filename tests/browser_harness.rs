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

use browser::{chromium_available, page_url, prepare_wav, run_chromium, Netns};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

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
    drop(ns);
    assert!(!listed(&name), "{name} survived its guard");

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
    assert!(run.with("ice").contains(&"a connected"), "{why}");
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
