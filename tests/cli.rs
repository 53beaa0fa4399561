//! End-to-end tests of the `tonewall` binary as a user drives it (BRIEF section 3): `detect`
//! and `mask` over the recorded fixtures in `sample-audio/`, checked against their ground-truth
//! JSON; bit-exact pass-through outside the masked spans; one-line errors (exit code 2, never a
//! panic) on bad input; over-masking on the 48 kHz path. Prints the measured figures
//! (`cargo test --release --test cli -- --nocapture`).

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;
use tonewall::wav::{Wav, WavData};

const BIN: &str = env!("CARGO_BIN_EXE_tonewall");
const LOOKAHEADS: [u32; 3] = [0, 10, 20];
const FIXTURE_NAMES: [&str; 4] = [
    "caller-agent-stereo-8k-pcm16",
    "payment-call-48k-pcm16",
    "payment-call-8k-ulaw",
    "speech-music-no-dtmf-8k-pcm16",
];

// ---------------------------------------------------------------------------------------------
// Scaffolding: temp dirs, running the binary, fixtures and their ground truth.

/// A per-test scratch directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("tonewall-cli-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run the real binary with `args`, without a backtrace setting from the environment (so a
/// panic shows its usual "RUST_BACKTRACE" note).
fn tonewall<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run tonewall binary")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

fn assert_no_panic(out: &Output, what: &str) {
    let err = text(&out.stderr);
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{what}: the binary panicked\n{}",
        describe(out)
    );
    // A panic exits with 101; a signal has no code.
    assert!(
        out.status.code().is_some(),
        "{what}: killed by a signal\n{}",
        describe(out)
    );
    assert_ne!(
        out.status.code(),
        Some(101),
        "{what}: panic exit code\n{}",
        describe(out)
    );
}

fn assert_success(out: &Output, what: &str) {
    assert_no_panic(out, what);
    assert!(out.status.success(), "{what} failed\n{}", describe(out));
}

/// One key press from a fixture's ground truth.
#[derive(Debug, Clone)]
struct Tone {
    channel: u16,
    digit: char,
    field: String,
    start_ms: f64,
    end_ms: f64,
}

#[derive(Debug, Clone)]
struct Card {
    brand: String,
    luhn_valid: bool,
    pan_digits: u32,
}

#[derive(Debug, Clone)]
struct Fixture {
    name: String,
    wav: PathBuf,
    rate: u32,
    channels: u16,
    tones: Vec<Tone>,
    card: Option<Card>,
}

impl Fixture {
    fn load(name: &str) -> Fixture {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-audio");
        let wav = dir.join(format!("{name}.wav"));
        let json = dir.join(format!("{name}.json"));
        let v: Value = serde_json::from_str(
            &std::fs::read_to_string(&json).unwrap_or_else(|e| panic!("{}: {e}", json.display())),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", json.display()));
        let tones = v["digits"]
            .as_array()
            .expect("digits array")
            .iter()
            .map(|d| Tone {
                channel: d["channel"].as_u64().expect("channel") as u16,
                digit: d["digit"]
                    .as_str()
                    .expect("digit")
                    .chars()
                    .next()
                    .expect("digit char"),
                field: d["field"].as_str().unwrap_or("").to_string(),
                start_ms: d["start_ms"].as_f64().expect("start_ms"),
                end_ms: d["end_ms"].as_f64().expect("end_ms"),
            })
            .collect();
        let card = (!v["card"].is_null()).then(|| Card {
            brand: v["card"]["brand"].as_str().expect("brand").to_string(),
            luhn_valid: v["card"]["luhn_valid"].as_bool().expect("luhn_valid"),
            pan_digits: v["card"]["pan_digits"].as_u64().expect("pan_digits") as u32,
        });
        Fixture {
            name: name.to_string(),
            wav,
            rate: v["rate"].as_u64().expect("rate") as u32,
            channels: v["channels"].as_u64().expect("channels") as u16,
            tones,
            card,
        }
    }

    fn all() -> Vec<Fixture> {
        FIXTURE_NAMES.iter().map(|n| Fixture::load(n)).collect()
    }

    fn read_wav(&self) -> Wav {
        let w = read_wav(&self.wav);
        assert_eq!(
            (w.rate, w.channels),
            (self.rate, self.channels),
            "{}: JSON vs WAV",
            self.name
        );
        w
    }

    /// Ground-truth digits of one channel, in time order.
    fn digits(&self, ch: u16) -> String {
        self.tones
            .iter()
            .filter(|t| t.channel == ch)
            .map(|t| t.digit)
            .collect()
    }

    /// The card number's digits, in order (the `pan` field).
    fn pan(&self) -> Vec<&Tone> {
        self.tones.iter().filter(|t| t.field == "pan").collect()
    }

    fn sample(&self, ms: f64) -> u64 {
        (ms * self.rate as f64 / 1000.0).round() as u64
    }
}

fn read_wav(path: &Path) -> Wav {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Wav::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn parse_json_lines(s: &str, what: &str) -> Vec<Value> {
    s.lines()
        .enumerate()
        .map(|(i, l)| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{what} line {}: not JSON ({e}): {l:?}", i + 1));
            assert!(
                v.is_object(),
                "{what} line {}: not a JSON object: {l}",
                i + 1
            );
            v
        })
        .collect()
}

/// A line of `tonewall detect` output.
#[derive(Debug, Clone, Copy)]
struct Detected {
    channel: u16,
    digit: char,
    start_ms: f64,
    end_ms: f64,
}

/// Parse `detect` stdout, checking every line has exactly the contract's keys.
fn parse_detect(stdout: &str, multichannel: bool, what: &str) -> Vec<Detected> {
    let mut want = vec!["digit", "end_ms", "start_ms"];
    if multichannel {
        want.push("channel");
        want.sort();
    }
    parse_json_lines(stdout, what)
        .into_iter()
        .map(|v| {
            let o = v.as_object().unwrap();
            let mut keys: Vec<&str> = o.keys().map(String::as_str).collect();
            keys.sort();
            assert_eq!(keys, want, "{what}: keys of detect line {v}");
            let digit = v["digit"].as_str().expect("digit is a string");
            assert_eq!(digit.chars().count(), 1, "{what}: digit {digit:?}");
            Detected {
                channel: if multichannel {
                    v["channel"].as_u64().expect("channel") as u16
                } else {
                    0
                },
                digit: digit.chars().next().unwrap(),
                start_ms: v["start_ms"].as_f64().expect("start_ms is a number"),
                end_ms: v["end_ms"].as_f64().expect("end_ms is a number"),
            }
        })
        .collect()
}

/// Union of the `tone_masked` spans of one channel, in samples, sorted and merged.
fn masked_spans(events: &[Value], ch: u16) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = events
        .iter()
        .filter(|e| e["event"] == "tone_masked" && e["channel"].as_u64() == Some(ch as u64))
        .map(|e| {
            let a = e["start_sample"].as_u64().expect("start_sample");
            let b = e["end_sample"].as_u64().expect("end_sample");
            assert!(a < b, "empty or reversed tone_masked span {e}");
            (a, b)
        })
        .collect();
    v.sort();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (a, b) in v {
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    merged
}

/// The merged masked span that covers the whole of `[a, b)`, if any.
fn covering(spans: &[(u64, u64)], a: u64, b: u64) -> Option<(u64, u64)> {
    spans.iter().copied().find(|&(s, e)| s <= a && e >= b)
}

fn in_spans(spans: &[(u64, u64)], i: u64) -> bool {
    // Spans are sorted and disjoint.
    let k = spans.partition_point(|&(_, e)| e <= i);
    k < spans.len() && spans[k].0 <= i
}

/// One channel's samples in the file's own encoding (bytes for G.711), widened to i32.
fn raw_channel(w: &Wav, ch: usize) -> Vec<i32> {
    let n = w.channels as usize;
    match &w.data {
        WavData::Pcm16(v) => v.iter().skip(ch).step_by(n).map(|&s| s as i32).collect(),
        WavData::G711(v) => v.iter().skip(ch).step_by(n).map(|&s| s as i32).collect(),
    }
}

/// Run `tonewall mask` and return (events, secure digit lines, the mask command's output).
struct Masked {
    out_wav: PathBuf,
    events_text: String,
    events: Vec<Value>,
    secure: Vec<Value>,
    run: Output,
}

fn run_mask(fx: &Fixture, tmp: &TempDir, lookahead: u32) -> Masked {
    let out_wav = tmp.path(&format!("{}-la{lookahead}.wav", fx.name));
    let ev = tmp.path(&format!("{}-la{lookahead}.events.jsonl", fx.name));
    let sd = tmp.path(&format!("{}-la{lookahead}.secure.jsonl", fx.name));
    let la = lookahead.to_string();
    let run = tonewall([
        OsStr::new("mask"),
        fx.wav.as_os_str(),
        OsStr::new("-o"),
        out_wav.as_os_str(),
        OsStr::new("--events"),
        ev.as_os_str(),
        OsStr::new("--lookahead-ms"),
        OsStr::new(&la),
        OsStr::new("--secure-digits"),
        sd.as_os_str(),
    ]);
    assert_success(
        &run,
        &format!("mask {} --lookahead-ms {lookahead}", fx.name),
    );
    let events_text = std::fs::read_to_string(&ev).expect("events file written");
    let events = parse_json_lines(&events_text, "events");
    let secure = parse_json_lines(
        &std::fs::read_to_string(&sd).expect("secure-digits file written"),
        "secure digits",
    );
    Masked {
        out_wav,
        events_text,
        events,
        secure,
        run,
    }
}

// ---------------------------------------------------------------------------------------------
// multimon-ng as an independent decoder.

/// Is multimon-ng there? Missing is a skip locally and a failure in CI.
fn multimon_available() -> bool {
    let ok = Command::new("multimon-ng")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "multimon-ng is required in CI (.ci/run installs it)"
        );
        eprintln!(
            "multimon-ng not installed: skipping the independent-decoder check (CI installs it)"
        );
    }
    ok
}

/// Digits multimon-ng decodes from `x` (16-bit linear at `rate` Hz), converted by linear
/// interpolation to the raw 22050 Hz s16le it reads.
fn multimon_digits(x: &[i16], rate: u32) -> String {
    common::multimon_digits_at(x, rate).expect("multimon-ng ran")
}

// ---------------------------------------------------------------------------------------------
// 1. detect

/// Failed checks gathered over a whole test, so one run reports all of them.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) -> bool {
        if !ok {
            let m = msg();
            eprintln!("FAIL: {m}");
            self.0.push(m);
        }
        ok
    }

    fn finish(self, test: &str) {
        assert!(
            self.0.is_empty(),
            "{test}: {} failed checks:\n{}",
            self.0.len(),
            self.0.join("\n")
        );
    }
}

#[test]
fn detect_prints_exactly_the_ground_truth_digits() {
    // Edges are placed to within a sub-block from its energy share: the battery's median
    // error is 0.4 ms; on these fixtures (line noise, twist) the worst is about 3 ms.
    const TOLERANCE_MS: f64 = 4.0;
    let mut f = Failures::default();
    for fx in Fixture::all() {
        let out = tonewall([OsStr::new("detect"), fx.wav.as_os_str()]);
        assert_success(&out, &format!("detect {}", fx.name));
        let stdout = text(&out.stdout);
        let found = parse_detect(&stdout, fx.channels > 1, &fx.name);
        if fx.tones.is_empty() {
            f.check(stdout.is_empty(), || {
                format!("{}: no-DTMF fixture printed {stdout:?}", fx.name)
            });
            println!("detect {}: no digits, stdout empty", fx.name);
            continue;
        }
        // Channels are printed one after the other, each in time order.
        let order: Vec<u16> = found.iter().map(|d| d.channel).collect();
        f.check(order.windows(2).all(|w| w[0] <= w[1]), || {
            format!("{}: channel order {order:?}", fx.name)
        });
        let mut worst: (f64, String) = (0.0, String::new());
        for ch in 0..fx.channels {
            let got: Vec<&Detected> = found.iter().filter(|d| d.channel == ch).collect();
            let want: Vec<&Tone> = fx.tones.iter().filter(|t| t.channel == ch).collect();
            let got_s: String = got.iter().map(|d| d.digit).collect();
            if !f.check(got_s == fx.digits(ch), || {
                format!(
                    "{} channel {ch}: detect printed digits {got_s:?}, ground truth {:?}",
                    fx.name,
                    fx.digits(ch)
                )
            }) {
                continue;
            }
            for (i, (g, t)) in got.iter().zip(&want).enumerate() {
                for (which, e) in [
                    ("start", g.start_ms - t.start_ms),
                    ("end", g.end_ms - t.end_ms),
                ] {
                    if e.abs() > worst.0.abs() || worst.1.is_empty() {
                        worst = (e, format!("channel {ch} digit #{i} '{}' {which}", t.digit));
                    }
                    f.check(e.abs() <= TOLERANCE_MS, || {
                        format!(
                            "{} channel {ch} digit #{i} '{}': {which} {e:+.3} ms off (detected {:.3}..{:.3} ms, truth {:.3}..{:.3} ms; limit {TOLERANCE_MS} ms)",
                            fx.name, t.digit, g.start_ms, g.end_ms, t.start_ms, t.end_ms
                        )
                    });
                }
            }
        }
        println!(
            "detect {}: {} digits, worst timing error {:+.3} ms ({})",
            fx.name,
            found.len(),
            worst.0,
            worst.1
        );
    }
    f.finish("detect");
}

// ---------------------------------------------------------------------------------------------
// 2. mask: format, no recoverable digit, secure digits, events without values

/// Keys that could carry a digit value; no event may have one, at any depth.
fn check_no_value_keys(v: &Value, what: &str, f: &mut Failures) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                f.check(k != "digit" && k != "value", || {
                    format!("{what}: event has a {k:?} key: {v}")
                });
                check_no_value_keys(x, what, f);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| check_no_value_keys(x, what, f)),
        _ => {}
    }
}

fn check_capture_events(fx: &Fixture, m: &Masked, what: &str, f: &mut Failures) {
    let ev = &m.events;
    let by = |kind: &str| -> Vec<&Value> { ev.iter().filter(|e| e["event"] == kind).collect() };
    let Some(card) = &fx.card else {
        for kind in [
            "recording_pause",
            "recording_resume",
            "capture_opened",
            "capture_closed",
            "digit",
        ] {
            f.check(by(kind).is_empty(), || {
                format!(
                    "{what}: no card in this file, yet {kind} events: {:?}",
                    by(kind)
                )
            });
        }
        return;
    };
    let pan = fx.pan();
    assert_eq!(
        pan.len() as u32,
        card.pan_digits,
        "{}: ground truth PAN length",
        fx.name
    );
    let ch = pan[0].channel;
    assert!(
        pan.iter().all(|t| t.channel == ch),
        "{}: PAN spread over channels",
        fx.name
    );
    let ms = |s: u64| s as f64 * 1000.0 / fx.rate as f64;
    let first = fx.sample(pan[0].start_ms);
    let last_end = fx.sample(pan[pan.len() - 1].end_ms);
    let on_ch = |kind: &str| -> Vec<&Value> {
        by(kind)
            .into_iter()
            .filter(|e| e["channel"].as_u64() == Some(ch as u64))
            .collect()
    };
    let pauses = on_ch("recording_pause");
    let resumes = on_ch("recording_resume");
    let closes = on_ch("capture_closed");
    let at = |e: &Value| e["at_sample"].as_u64().expect("at_sample");
    let window_of = |e: &Value| e["window"].as_u64().expect("window");
    // Every pause has its resume, after it.
    for p in &pauses {
        let r = resumes.iter().find(|r| window_of(r) == window_of(p));
        f.check(r.is_some_and(|r| at(r) >= at(p)), || {
            format!("{what}: recording_pause {p} has no recording_resume after it ({r:?})")
        });
    }
    // The window holding the card number: the one whose pause..resume overlaps the PAN.
    let win = pauses.iter().find(|p| {
        let w = window_of(p);
        let end = resumes
            .iter()
            .find(|r| window_of(r) == w)
            .map_or(u64::MAX, |r| at(r));
        at(p) <= last_end && end >= first
    });
    let Some(win) = win else {
        f.check(false, || {
            format!("{what}: no recording_pause/resume window around the card number; pauses {pauses:?}")
        });
        return;
    };
    let w = window_of(win);
    let pause = at(win);
    let resume = resumes.iter().find(|r| window_of(r) == w).map(|r| at(r));
    let close = closes.iter().find(|c| window_of(c) == w);
    println!(
        "  {what}: window {w}: recording_pause at {:.3} ms ({:+.3} ms from the first card tone's start), recording_resume at {} (last card tone ends {:.3} ms), capture_closed {}",
        ms(pause),
        ms(pause) - pan[0].start_ms,
        resume.map_or("none".into(), |r| format!("{:.3} ms", ms(r))),
        pan[pan.len() - 1].end_ms,
        close.map_or("none".into(), |c| c.to_string()),
    );
    f.check(pause <= first, || {
        format!(
            "{what}: recording_pause at sample {pause} ({:.3} ms) is after the first card digit's tone starts at sample {first} ({:.3} ms): the tone's first {} samples are not paused",
            ms(pause),
            pan[0].start_ms,
            pause - first
        )
    });
    f.check(resume.is_some_and(|r| r >= last_end), || {
        format!(
            "{what}: recording_resume {resume:?} missing or before the last card digit's tone ends at sample {last_end}"
        )
    });
    let Some(close) = close else {
        f.check(false, || {
            format!("{what}: window {w} has no capture_closed")
        });
        return;
    };
    f.check(at(close) >= last_end, || {
        format!("{what}: capture_closed before the card number ended: {close}")
    });
    f.check(
        close["digit_count"].as_u64() == Some(card.pan_digits as u64)
            && close["luhn_valid"].as_bool() == Some(card.luhn_valid)
            && close["card_brand"].as_str() == Some(card.brand.as_str()),
        || {
            format!(
                "{what}: capture_closed {close} does not match the card ({} digits, luhn_valid {}, {})",
                card.pan_digits, card.luhn_valid, card.brand
            )
        },
    );
}

#[test]
fn mask_removes_every_digit_and_leaks_no_value() {
    let tmp = TempDir::new("mask");
    let multimon = multimon_available();
    let mut f = Failures::default();
    for fx in Fixture::all() {
        let input = fx.read_wav();
        if multimon {
            // Positive control: the decoder, fed the same way, does hear the input's digits.
            let heard: String = (0..fx.channels as usize)
                .map(|ch| multimon_digits(&input.channel_linear(ch), fx.rate))
                .collect();
            println!("multimon-ng on the unmasked {}: {:?}", fx.name, heard);
            if !fx.tones.is_empty() {
                assert!(
                    !heard.is_empty(),
                    "{}: multimon-ng hears nothing even in the input",
                    fx.name
                );
            }
        }
        let pan: String = fx.pan().iter().map(|t| t.digit).collect();
        for la in LOOKAHEADS {
            let what = format!("{} look-ahead {la} ms", fx.name);
            let m = run_mask(&fx, &tmp, la);
            // Same format, rate, channels, length.
            let out = read_wav(&m.out_wav);
            assert_eq!(out.format, input.format, "{what}: format");
            assert_eq!(out.rate, input.rate, "{what}: rate");
            assert_eq!(out.channels, input.channels, "{what}: channels");
            assert_eq!(out.frames(), input.frames(), "{what}: length in frames");

            // tonewall's own detector finds nothing.
            let det = tonewall([OsStr::new("detect"), m.out_wav.as_os_str()]);
            assert_success(&det, &format!("detect on masked {what}"));
            f.check(det.stdout.is_empty(), || {
                format!(
                    "{what}: detect finds digits in the output:\n{}",
                    text(&det.stdout)
                )
            });

            // Neither does multimon-ng, on any channel.
            if multimon {
                for ch in 0..out.channels as usize {
                    let d = multimon_digits(&out.channel_linear(ch), out.rate);
                    f.check(d.is_empty(), || {
                        format!("{what}: multimon-ng decodes {d:?} from channel {ch} of the output")
                    });
                }
            }

            // The secure sink gets exactly the ground-truth digits, in order, per channel.
            for ch in 0..fx.channels {
                let got: String = m
                    .secure
                    .iter()
                    .filter(|s| s["channel"].as_u64() == Some(ch as u64))
                    .map(|s| {
                        let d = s["digit"].as_str().expect("secure digit value");
                        assert_eq!(d.chars().count(), 1, "{what}: secure digit line {s}");
                        d.chars().next().unwrap()
                    })
                    .collect();
                f.check(got == fx.digits(ch), || {
                    format!(
                        "{what}: secure digits on channel {ch} are {got:?}, ground truth {:?}",
                        fx.digits(ch)
                    )
                });
            }
            f.check(m.secure.len() == fx.tones.len(), || {
                format!(
                    "{what}: {} secure digit lines for {} tones",
                    m.secure.len(),
                    fx.tones.len()
                )
            });

            // Every tone lies inside a masked span of its channel. The spans are what was
            // replaced: with less than 20 ms of look-ahead a tone's first few ms may have
            // left before it was recognised (BRIEF 2.2 allows 5 with none; with 10 ms a
            // tone-like window waits one sub-block for confirmation, and up to 2.1 ms of
            // these fixtures' heads leave), and the span says so.
            let spans: BTreeMap<u16, Vec<(u64, u64)>> = (0..fx.channels)
                .map(|ch| (ch, masked_spans(&m.events, ch)))
                .collect();
            let head = if la < 20 { fx.sample(5.0) } else { 0 };
            for t in &fx.tones {
                let (a, b) = (fx.sample(t.start_ms) + head, fx.sample(t.end_ms));
                f.check(covering(&spans[&t.channel], a, b).is_some(), || {
                    format!(
                        "{what}: tone '{}' {:.3}..{:.3} ms on channel {} is not covered by tone_masked spans (nearby: {:?})",
                        t.digit,
                        t.start_ms,
                        t.end_ms,
                        t.channel,
                        spans[&t.channel]
                            .iter()
                            .filter(|&&(s, e)| e + fx.rate as u64 / 10 > a && s < b + fx.rate as u64 / 10)
                            .collect::<Vec<_>>()
                    )
                });
            }
            let n_spans = m
                .events
                .iter()
                .filter(|e| e["event"] == "tone_masked")
                .count();
            println!(
                "mask {what}: {} tones, {n_spans} tone_masked events, {} events in all",
                fx.tones.len(),
                m.events.len()
            );

            // Recording control and card progress.
            check_capture_events(&fx, &m, &what, &mut f);

            // No value anywhere but the secure file.
            for e in &m.events {
                check_no_value_keys(e, &what, &mut f);
            }
            if !pan.is_empty() {
                for (name, s) in [
                    ("events file", m.events_text.clone()),
                    ("mask stdout", text(&m.run.stdout)),
                    ("mask stderr", text(&m.run.stderr)),
                ] {
                    f.check(!s.contains(&pan), || {
                        format!("{what}: the card number appears in the {name}")
                    });
                }
            }
        }
    }
    f.finish("mask");
}

// ---------------------------------------------------------------------------------------------
// 3. Bit-exact outside masked spans

#[test]
fn audio_outside_masked_spans_is_bit_exact() {
    let tmp = TempDir::new("exact");
    let mut failures = Vec::new();
    for name in ["payment-call-8k-ulaw", "caller-agent-stereo-8k-pcm16"] {
        let fx = Fixture::load(name);
        let input = fx.read_wav();
        for la in LOOKAHEADS {
            let m = run_mask(&fx, &tmp, la);
            let out = read_wav(&m.out_wav);
            assert_eq!(out.frames(), input.frames(), "{name}: length");
            for ch in 0..fx.channels {
                let spans = masked_spans(&m.events, ch);
                let x = raw_channel(&input, ch as usize);
                let y = raw_channel(&out, ch as usize);
                let masked: u64 = spans
                    .iter()
                    .map(|&(a, b)| b.min(x.len() as u64).saturating_sub(a))
                    .sum();
                let changed = x.iter().zip(&y).filter(|(a, b)| a != b).count();
                let bad: Vec<usize> = (0..x.len())
                    .filter(|&i| x[i] != y[i] && !in_spans(&spans, i as u64))
                    .collect();
                let role = match (fx.channels, ch) {
                    (1, _) => "",
                    (_, 0) => " (caller)",
                    _ => " (agent)",
                };
                println!(
                    "bit-exact {name} look-ahead {la} ms channel {ch}{role}: {:.3} ms masked in {} spans, {} samples changed, {} changed outside the spans",
                    masked as f64 * 1000.0 / fx.rate as f64,
                    spans.len(),
                    changed,
                    bad.len()
                );
                if !bad.is_empty() {
                    // Group the offending samples into runs for the report.
                    let mut runs: Vec<(usize, usize)> = Vec::new();
                    for &i in &bad {
                        match runs.last_mut() {
                            Some(r) if i <= r.1 + 8 => r.1 = i,
                            _ => runs.push((i, i)),
                        }
                    }
                    let ms = |i: usize| i as f64 * 1000.0 / fx.rate as f64;
                    failures.push(format!(
                        "{name} look-ahead {la} ms channel {ch}: {} samples changed outside tone_masked spans, in {} runs; first runs (ms): {:?}",
                        bad.len(),
                        runs.len(),
                        runs.iter().take(6).map(|&(a, b)| (ms(a), ms(b + 1))).collect::<Vec<_>>()
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "audio changed outside the reported masked spans:\n{}",
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Bad input: one line on stderr, exit code 2, never a panic

/// A WAV header (+ `data_len` zero bytes) with arbitrary fields.
fn wav_bytes(tag: u16, channels: u16, rate: u32, bits: u16, data_len: u32) -> Vec<u8> {
    let block = channels as u32 * bits as u32 / 8;
    let mut o = Vec::new();
    o.extend_from_slice(b"RIFF");
    o.extend_from_slice(&(36 + data_len).to_le_bytes());
    o.extend_from_slice(b"WAVEfmt ");
    o.extend_from_slice(&16u32.to_le_bytes());
    o.extend_from_slice(&tag.to_le_bytes());
    o.extend_from_slice(&channels.to_le_bytes());
    o.extend_from_slice(&rate.to_le_bytes());
    o.extend_from_slice(&(rate * block).to_le_bytes());
    o.extend_from_slice(&(block as u16).to_le_bytes());
    o.extend_from_slice(&bits.to_le_bytes());
    o.extend_from_slice(b"data");
    o.extend_from_slice(&data_len.to_le_bytes());
    o.resize(o.len() + data_len as usize, 0);
    o
}

fn assert_one_line_error(out: &Output, what: &str) {
    assert_no_panic(out, what);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{what}: exit code\n{}",
        describe(out)
    );
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: stderr must be exactly one line\n{}",
        describe(out)
    );
    assert!(
        lines[0].starts_with("tonewall:"),
        "{what}: stderr must start with \"tonewall:\"\n{}",
        describe(out)
    );
    assert!(
        out.stdout.is_empty(),
        "{what}: stdout must be empty\n{}",
        describe(out)
    );
}

#[test]
fn bad_input_gives_one_line_and_exit_code_2() {
    let tmp = TempDir::new("bad");
    let stereo = Fixture::load("caller-agent-stereo-8k-pcm16");
    let good = std::fs::read(&stereo.wav).unwrap();
    assert_eq!(
        &good[36..40],
        b"data",
        "fixture layout changed: expected a 44-byte header"
    );
    let mut zero_channels = wav_bytes(1, 1, 8000, 16, 1600);
    zero_channels[22] = 0;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty file", Vec::new()),
        (
            "text file",
            b"this is a text file, not audio\nsecond line\n".to_vec(),
        ),
        (
            "truncated mid data chunk",
            good[..good.len() / 2 + 1].to_vec(),
        ),
        ("WAV header only", good[..44].to_vec()),
        ("24-bit PCM", wav_bytes(1, 1, 8000, 24, 2400)),
        ("IEEE float", wav_bytes(3, 1, 8000, 32, 3200)),
        ("0 channels", zero_channels),
    ];
    let mut summary = Vec::new();
    for (i, (what, bytes)) in cases.iter().enumerate() {
        let path = tmp.path(&format!("bad{i}.wav"));
        std::fs::write(&path, bytes).unwrap();
        let out_path = tmp.path(&format!("bad{i}-out.wav"));
        let det = tonewall([OsStr::new("detect"), path.as_os_str()]);
        assert_one_line_error(&det, &format!("detect, {what}"));
        let mask = tonewall([
            OsStr::new("mask"),
            path.as_os_str(),
            OsStr::new("-o"),
            out_path.as_os_str(),
        ]);
        assert_one_line_error(&mask, &format!("mask, {what}"));
        assert!(
            !out_path.exists(),
            "mask, {what}: an output file was written"
        );
        summary.push(format!("{what}: {}", text(&mask.stderr).trim_end()));
    }

    // Missing input.
    let missing = tmp.path("no-such-file.wav");
    let out_path = tmp.path("missing-out.wav");
    let det = tonewall([OsStr::new("detect"), missing.as_os_str()]);
    assert_one_line_error(&det, "detect, missing input");
    let mask = tonewall([
        OsStr::new("mask"),
        missing.as_os_str(),
        OsStr::new("-o"),
        out_path.as_os_str(),
    ]);
    assert_one_line_error(&mask, "mask, missing input");
    assert!(!out_path.exists());
    summary.push(format!("missing input: {}", text(&mask.stderr).trim_end()));

    // Unwritable output (its directory does not exist), and events/secure files likewise.
    let nowhere = tmp.path("no-such-dir").join("out.wav");
    let mask = tonewall([
        OsStr::new("mask"),
        stereo.wav.as_os_str(),
        OsStr::new("-o"),
        nowhere.as_os_str(),
    ]);
    assert_one_line_error(&mask, "mask, unwritable output");
    summary.push(format!(
        "unwritable output: {}",
        text(&mask.stderr).trim_end()
    ));
    let ok_out = tmp.path("ok-out.wav");
    for flag in ["--events", "--secure-digits"] {
        let mask = tonewall([
            OsStr::new("mask"),
            stereo.wav.as_os_str(),
            OsStr::new("-o"),
            ok_out.as_os_str(),
            OsStr::new(flag),
            nowhere.with_extension("jsonl").as_os_str(),
        ]);
        assert_one_line_error(&mask, &format!("mask, unwritable {flag} path"));
        let pan: String = stereo.pan().iter().map(|t| t.digit).collect();
        assert!(
            !text(&mask.stderr).contains(&pan),
            "card number in an error message"
        );
    }

    // Look-ahead out of range is refused with a message that says so; 40 is fine.
    let out41 = tmp.path("la41.wav");
    let mask = tonewall([
        OsStr::new("mask"),
        stereo.wav.as_os_str(),
        OsStr::new("-o"),
        out41.as_os_str(),
        OsStr::new("--lookahead-ms"),
        OsStr::new("41"),
    ]);
    assert_one_line_error(&mask, "mask --lookahead-ms 41");
    let msg = text(&mask.stderr);
    assert!(
        msg.contains("lookahead") && msg.contains("40") && msg.contains("41"),
        "--lookahead-ms 41: the message must name the setting, the limit and the value: {msg}"
    );
    assert!(
        !out41.exists(),
        "--lookahead-ms 41: an output file was written"
    );
    summary.push(format!("--lookahead-ms 41: {}", msg.trim_end()));
    let out40 = tmp.path("la40.wav");
    let mask = tonewall([
        OsStr::new("mask"),
        stereo.wav.as_os_str(),
        OsStr::new("-o"),
        out40.as_os_str(),
        OsStr::new("--lookahead-ms"),
        OsStr::new("40"),
    ]);
    assert_success(&mask, "mask --lookahead-ms 40");

    // Usage errors are clap's: exit code 2, its own (multi-line) message, no panic.
    let usage: Vec<Vec<&OsStr>> = vec![
        vec![OsStr::new("frobnicate")],
        vec![
            OsStr::new("detect"),
            stereo.wav.as_os_str(),
            OsStr::new("--bogus-flag"),
        ],
        vec![
            OsStr::new("mask"),
            stereo.wav.as_os_str(),
            OsStr::new("-o"),
            ok_out.as_os_str(),
            OsStr::new("--lookahead-ms"),
            OsStr::new("abc"),
        ],
        vec![OsStr::new("mask"), stereo.wav.as_os_str()],
        vec![],
    ];
    for args in usage {
        let what = format!("usage error {:?}", args);
        let out = tonewall(&args);
        assert_no_panic(&out, &what);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{what}: exit code\n{}",
            describe(&out)
        );
        assert!(!out.stderr.is_empty(), "{what}: says nothing on stderr");
        summary.push(format!(
            "{what}: {}",
            text(&out.stderr).lines().next().unwrap_or("")
        ));
    }
    for s in summary {
        println!("{s}");
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Over-masking on the 48 kHz path

#[test]
fn masked_spans_at_48k_cover_each_tone_tightly() {
    const LIMIT_MS: f64 = 12.0;
    let tmp = TempDir::new("48k");
    let fx = Fixture::load("payment-call-48k-pcm16");
    let m = run_mask(&fx, &tmp, 20);
    let spans = masked_spans(&m.events, 0);
    let ms = |s: u64| s as f64 * 1000.0 / fx.rate as f64;
    let (mut max_before, mut max_after) = (0.0f64, 0.0f64);
    let mut problems = Vec::new();
    println!("48 kHz, look-ahead 20 ms: tone vs masked span (ms)");
    for t in &fx.tones {
        let (a, b) = (fx.sample(t.start_ms), fx.sample(t.end_ms));
        // The merged span the tone's first sample falls in (or the nearest one after it).
        let Some(&(s, e)) = spans.iter().find(|&&(_, e)| e > a) else {
            problems.push(format!(
                "tone '{}' at {:.3} ms: no masked span at or after it",
                t.digit, t.start_ms
            ));
            continue;
        };
        let before = ms(a) - ms(s);
        let after = ms(e) - ms(b);
        max_before = max_before.max(before);
        max_after = max_after.max(after);
        println!(
            "  '{}' tone {:9.3}..{:9.3} ({:6.3} long)  span {:9.3}..{:9.3} ({:6.3} long)  before {:+6.3}  after {:+6.3}",
            t.digit,
            t.start_ms,
            t.end_ms,
            t.end_ms - t.start_ms,
            ms(s),
            ms(e),
            ms(e) - ms(s),
            before,
            after
        );
        if s > a {
            problems.push(format!(
                "tone '{}' {:.3} ms: span starts {:.3} ms after the tone",
                t.digit, t.start_ms, -before
            ));
        }
        if e < b {
            problems.push(format!(
                "tone '{}' {:.3} ms: span ends {:.3} ms before the tone ends",
                t.digit, t.start_ms, -after
            ));
        }
        if before > LIMIT_MS {
            problems.push(format!(
                "tone '{}' {:.3} ms: span starts {before:.3} ms early (limit {LIMIT_MS})",
                t.digit, t.start_ms
            ));
        }
        if after > LIMIT_MS {
            problems.push(format!(
                "tone '{}' {:.3} ms: span ends {after:.3} ms late (limit {LIMIT_MS})",
                t.digit, t.start_ms
            ));
        }
    }
    println!("  max over-masking: {max_before:.3} ms before, {max_after:.3} ms after");
    assert!(
        problems.is_empty(),
        "48 kHz masked spans:\n{}",
        problems.join("\n")
    );
}
