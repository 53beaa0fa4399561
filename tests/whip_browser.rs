//! End to end with a real browser: headless Chromium publishes the bundled 48 kHz payment call
//! through its fake microphone to `tonewall serve`'s WHIP endpoint, then presses four keys
//! with RTCDTMFSender (RFC 4733 telephone-events). Chromium gathers no ICE candidates on
//! loopback, so the test makes a network namespace with a veth pair, moves its own thread
//! into it, and runs the gateway, its stand-in sinks, the downstream receiver and Chromium
//! there; nothing leaves that namespace.
//!
//! Checked: multimon-ng and our most sensitive detector find no digit in what reached
//! downstream (Opus, Chromium's own packets forwarded where nothing was masked and
//! tonewall's around every tone: decoded with libopus), the recording or the STT stream; the secure digit sink holds exactly
//! the fixture's 24 keys followed by the four telephone-event keys; no webhook, event or log
//! line carries a value; the session ends cleanly with the page's DELETE.
//!
//! Needs root (namespaces), Chromium, ffmpeg and multimon-ng: `.ci/run` installs them.
#![cfg(feature = "whip")]

mod browser;
mod common;
mod gateway;
#[path = "gateway/peers.rs"]
mod peers;

use std::time::{Duration, Instant};

use browser::{chromium_available, publish_with_chromium, Netns, CHROMIUM_MISSING};
use gateway::{Gateway, Receiver};
use peers::*;

const TOKEN: &str = "browser-test-token";
/// Keys pressed with RTCDTMFSender after the fixture.
const KEYS: &str = "91*#";

#[test]
fn chromium_publishes_through_whip_and_nothing_leaks() {
    assert!(chromium_available(), "{CHROMIUM_MISSING}");
    for t in ["multimon-ng", "ffmpeg"] {
        assert!(
            gateway::have(t),
            "{t} is not installed (.ci/run installs it)"
        );
    }
    let ns = Netns::create().expect("network namespace");
    ns.enter_current_thread().expect("enter the namespace");
    let server = ns.addr_server();

    let root = env!("CARGO_MANIFEST_DIR");
    let fixture = "payment-call-48k-pcm16";
    let json = format!("{root}/sample-audio/{fixture}.json");
    let truth = ground_truth_digits(&json);
    let spans = ground_truth_spans(&json);
    let dir = gateway::scratch("whip-chromium");
    // Everything below is created from this thread, so it lives in the namespace.
    let (hook, hooks) = webhook_server();
    let (stt, stt_bytes) = stt_server();
    let (sock, secure) = secure_socket(&dir);
    let extra = format!(
        "[server]\nlisten = \"{server}:0\"\nrtp_address = \"{server}\"\ncors_allow_origin = \"*\"\n{}",
        sinks_toml(&dir, hook, stt, &sock)
    );
    let gw = Gateway::start_with("whip-chromium-gw", &extra, Some(TOKEN));
    let down = Receiver::start(Duration::from_secs(3), Duration::from_secs(120));
    let call_id = "whip-chromium";
    let whip = format!(
        "http://{}/v1/whip?downstream={}&call_id={call_id}",
        gw.api, down.addr
    );

    // The call appears once the page has posted its offer: follow its events and sample its
    // status (delay, packets) while Chromium publishes.
    let api = gw.api;
    let watcher = std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            let (code, _) = gateway::http(
                api,
                "GET",
                &format!("/v1/calls/{call_id}"),
                None,
                Some(TOKEN),
            );
            if code == 200 {
                let ev = gateway::follow_events(
                    api,
                    &format!("/v1/calls/{call_id}/events"),
                    Some(TOKEN),
                    Duration::from_secs(90),
                );
                std::thread::sleep(Duration::from_secs(5));
                let (_, status) = gateway::http(
                    api,
                    "GET",
                    &format!("/v1/calls/{call_id}"),
                    None,
                    Some(TOKEN),
                );
                return Some((ev, status));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    });
    let wav = std::path::PathBuf::from(format!("{root}/sample-audio/{fixture}.wav"));
    let secs = 29; // the 27.8 s fixture and the harness's 1 s of silence after it
    let run = publish_with_chromium(
        &ns,
        &whip,
        TOKEN,
        &wav,
        secs,
        KEYS,
        Duration::from_secs(secs as u64 + 40),
    )
    .expect("Chromium ran");
    assert!(run.done, "the page did not finish:\n{}", run.summary());
    assert_eq!(run.with("delete"), vec!["200"], "{}", run.summary());
    let (ev, status) = watcher
        .join()
        .unwrap()
        .expect("the WHIP call appeared in the API");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let events = ev.join().unwrap();
    let got = down.join();

    // The answer's candidate is the gateway's veth address, and Chromium connected to it.
    let answer = run.json_string("answer").expect("answer logged");
    assert!(
        answer.contains(&format!(" {server} ")),
        "answer candidates are not on {server}:\n{answer}"
    );
    assert!(answer.contains("telephone-event/48000"), "{answer}");

    // Downstream (Opus only: no telephone-event), recording and STT: nothing decodable.
    // Chromium starts the fixture when the page opens the microphone, just after the first
    // packets, so tone positions downstream are within a fraction of a second of the
    // fixture's; 300 ms of slack covers that and the look-ahead.
    // The offer's Opus payload type (the answer keeps it), not its telephone-event's.
    let opus_pt = gateway::parse(got.first().expect("downstream packets")).pt;
    assert!(
        answer.contains(&format!("a=rtpmap:{opus_pt} opus/48000")),
        "{answer}"
    );
    let down_secs = assert_opus_downstream_clean(&got, opus_pt, &spans, 300.0, 27.0);
    assert_recording_clean(&dir, call_id, 48_000);
    let stt_secs = assert_stt_clean(&stt_bytes, 25.0);
    // The secure sink: the 24 in-band keys, then the four telephone-events, each once.
    let want = format!("{truth}{KEYS}");
    let digits = settled_secure_digits(&secure, want.len());
    assert_eq!(digits, want, "secure sink digits");
    check_webhooks(&hooks.lock().unwrap(), &truth);
    let ended = events
        .iter()
        .find(|e| e["event"] == "call_ended")
        .unwrap_or_else(|| panic!("no call_ended in {events:?}"));
    assert_eq!(ended["reason"], "api", "{ended}");
    let log = gw.log();
    assert!(
        !log.contains(&truth[..16]),
        "card number in the gateway log"
    );
    assert!(
        !serde_json::to_string(&events)
            .unwrap()
            .contains(&truth[..16]),
        "card number in events"
    );
    let (_, metrics) = gateway::http(gw.api, "GET", "/metrics", None, Some(TOKEN));
    let metric = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert_eq!(metric("tonewall_whip_sessions_total"), 1, "{metrics}");
    // Chromium's packets went on unchanged wherever nothing was masked.
    let forwarded = metric("tonewall_opus_packets_forwarded_total");
    let reencoded = metric("tonewall_opus_packets_reencoded_total");
    assert!(
        forwarded > reencoded,
        "{forwarded} forwarded, {reencoded} re-encoded"
    );
    let dropped = metric("tonewall_whip_dropped_packets_total");
    // Chromium's bandwidth probes (padding-only packets) are not losses; only packets the
    // bridge had to drop may be missing.
    assert!(
        ended["lost"].as_u64().unwrap() <= dropped,
        "{ended} with {dropped} dropped by the bridge"
    );
    let packets = run
        .with("stats")
        .last()
        .map(|s| s.to_string())
        .unwrap_or_default();
    println!(
        "Chromium -> WHIP -> tonewall -> Opus: page ran {:.1} s ({packets}), {:.1} s downstream ({forwarded} of Chromium's packets forwarded unchanged, {reencoded} re-encoded), delay {} ms, caller packets {} lost {} (bridge dropped {dropped}), {} digits to the secure sink ({} in-band + {} telephone-events), {} events, {:.1} s to STT; multimon-ng found nothing downstream, in the recording or in STT",
        run.elapsed.as_secs_f64(),
        down_secs,
        status["delay_ms"],
        ended["caller_packets"],
        ended["lost"],
        digits.len(),
        truth.len(),
        KEYS.len(),
        events.len(),
        stt_secs
    );
}
