//! Fixture generator: (re)builds every recorded fixture in `sample-audio/` and the
//! ground-truth JSON next to each WAV.
//!
//! Run with `cargo run --release --example make_fixtures`.
//!
//! Owns: how the committed fixtures were made, so any of them can be rebuilt bit for bit
//! from committed code. Everything random comes from seeded [`Rng`]s, espeak-ng is
//! deterministic and sox runs in repeatable mode (`-R`), so re-running writes identical
//! files.
//!
//! Must never: be used at runtime or from tests. Tests read the committed files; only this
//! generator needs espeak-ng, sox and the Asterisk sound packages on the machine.
//!
//! Fixtures written (each `NAME.wav` with `NAME.json`):
//! * `payment-call-8k-ulaw`: a card-payment call, 8 kHz mono mu-law.
//! * `payment-call-48k-pcm16`: the same call rendered directly at 48 kHz 16-bit PCM.
//! * `caller-agent-stereo-8k-pcm16`: caller on channel 0, agent on channel 1.
//! * `speech-music-no-dtmf-8k-pcm16`: recorded prompts and hold music, no DTMF at all.
//!
//! Ground truth is exact by construction: a tone's `start_ms`/`end_ms` are the sample
//! positions it was placed at, and no key press overlaps speech on its own channel.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use tonewall::codec::linear_to_ulaw;
use tonewall::dtmf::Digit;
use tonewall::signal::{
    add_dtmf, add_sine, add_white_noise, power, power_for_dbm0, to_i16, Rng, ToneSpec,
};
use tonewall::wav::{Wav, WavData, WavFormat};

type Res<T> = Result<T, String>;

/// All fixtures together must stay under this many bytes (the repository budget).
const BUDGET_BYTES: u64 = 5_000_000;

/// The timeline is planned in 8 kHz samples; 48 kHz positions are exactly 6 times these,
/// so both renderings share their ground-truth times to the sample.
const BASE_RATE: u32 = 8000;

/// Line noise the conversations carry everywhere: white noise plus a little mains hum.
const NOISE_DBM0: f64 = -55.0;
const HUM_HZ: f64 = 50.0;
const HUM_DBM0: f64 = -58.0;
const HUM3_DBM0: f64 = -66.0;

/// Twist range of the key presses in dB (positive = high group stronger) and their largest
/// relative frequency error per tone. Real keypads stay well inside both. The bounds are
/// also where multimon-ng, the independent decoder the masking tests use as a witness, still
/// reads every tone exactly once: it rejects twist beyond 4.8 dB (a power ratio of 3) and
/// integrates coherently over 40 ms, so past about 0.5 % error (16 Hz at 1633 Hz) the tone
/// flickers in and out of detection and is printed twice. A fixture whose unmasked digits
/// the witness cannot read would make "multimon-ng decodes nothing after masking" vacuous.
/// The wider Q.24 ranges (±1.5 %, 8 dB) are for synthetic tests, not these fixtures.
const TWIST_DB: (f64, f64) = (-3.0, 4.0);
const FREQ_ERROR: f64 = 0.005;

/// Where Debian's asterisk-core-sounds-{en,fr,it}-wav and asterisk-moh-opsound-wav put
/// their files. Speaker directories, not the `en`/`fr` alternatives, so the same recordings
/// are picked whichever language variant a machine prefers.
const SOUNDS: &str = "/usr/share/asterisk/sounds";
const MOH: &str = "/usr/share/asterisk/moh";
const SPEAKERS: [(&str, &str); 3] = [
    ("en", "en_US_f_Allison"),
    ("fr", "fr_CA_f_June"),
    ("it", "it_IT_m_Carlo"),
];

fn main() {
    if let Err(e) = run() {
        eprintln!("make_fixtures: error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Res<()> {
    check_prerequisites()?;
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-audio");
    std::fs::create_dir_all(&out).map_err(|e| format!("create {}: {e}", out.display()))?;
    let tmp = TempDir::new()?;
    let mut made = Vec::new();
    payment_call(&tmp.0, &out, &mut made)?;
    caller_agent_stereo(&tmp.0, &out, &mut made)?;
    speech_music_no_dtmf(&out, &mut made)?;
    write_readme(&out, &made)?;
    check_budget(&out)
}

// ---------------------------------------------------------------------------------------
// Prerequisites and external tools

/// Fail early, naming the missing package, rather than half-way through with a cryptic
/// spawn error.
fn check_prerequisites() -> Res<()> {
    for (tool, arg) in [("espeak-ng", "--version"), ("sox", "--version")] {
        match Command::new(tool).arg(arg).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => return Err(format!("`{tool} {arg}` failed: {}", o.status)),
            Err(e) => {
                return Err(format!(
                    "{tool} is needed to build the fixtures ({e}); install it with \
                     `apt-get install {tool}`"
                ))
            }
        }
    }
    for (lang, dir) in SPEAKERS {
        let p = Path::new(SOUNDS).join(dir);
        if !p.is_dir() {
            return Err(format!(
                "{} is missing; install it with `apt-get install asterisk-core-sounds-{lang}-wav`",
                p.display()
            ));
        }
    }
    if !Path::new(MOH).join("macroform-cold_day.wav").is_file() {
        return Err(format!(
            "{MOH} has no opsound music; install it with `apt-get install asterisk-moh-opsound-wav`"
        ));
    }
    Ok(())
}

/// A scratch directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Res<Self> {
        let p = std::env::temp_dir().join(format!("tonewall-fixtures-{}", std::process::id()));
        std::fs::create_dir_all(&p).map_err(|e| format!("create {}: {e}", p.display()))?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run_cmd(cmd: &mut Command) -> Res<()> {
    let o = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Audio material

/// A piece of speech or music, trimmed to its audible extent and scaled to its level.
/// `at48` is the same material rendered at 48 kHz, exactly 6 times as long, for the
/// conversations that exist at both rates.
struct Clip {
    at8: Vec<f64>,
    at48: Option<Vec<f64>>,
}

impl Clip {
    fn len8(&self) -> usize {
        self.at8.len()
    }

    fn at(&self, rate: u32) -> &[f64] {
        match rate {
            8000 => &self.at8,
            48000 => self.at48.as_deref().expect("clip has no 48 kHz rendering"),
            _ => unreachable!("fixtures are 8 or 48 kHz"),
        }
    }
}

/// A synthetic speaker: an espeak-ng voice with its own speed and pitch.
#[derive(Clone, Copy)]
struct Voice {
    espeak: &'static str,
    wpm: u32,
    pitch: u32,
}

/// The agent: US English, female variant, a little slower (reading a script).
const AGENT: Voice = Voice {
    espeak: "en-us+f3",
    wpm: 180,
    pitch: 55,
};

/// The caller: British English, male variant, quicker and lower.
const CALLER: Voice = Voice {
    espeak: "en-gb+m3",
    wpm: 190,
    pitch: 38,
};

/// Speak `text` with espeak-ng, then let sox band-limit it to the telephone band
/// (300-3400 Hz) and resample it to 8 and 48 kHz from the same 22.05 kHz source, so both
/// renderings are time-aligned. Scaled so its RMS is `level_dbm0`.
fn speak(tmp: &Path, voice: Voice, text: &str, level_dbm0: f64) -> Res<Clip> {
    let wav = tmp.join("tts.wav");
    run_cmd(
        Command::new("espeak-ng")
            .args(["-v", voice.espeak])
            .args(["-s", &voice.wpm.to_string()])
            .args(["-p", &voice.pitch.to_string()])
            .arg("-w")
            .arg(&wav)
            .arg(text),
    )
    .map_err(|e| format!("espeak-ng (is voice {} installed?): {e}", voice.espeak))?;
    let s8 = sox_telephone(tmp, &wav, 8000)?;
    let s48 = sox_telephone(tmp, &wav, 48000)?;
    let (a, b) =
        audible_bounds(&s8).ok_or_else(|| format!("espeak-ng produced silence for {text:?}"))?;
    let at8 = s8[a..b].to_vec();
    // Same span at 48 kHz; pad with silence if sox's output is a sample short.
    let at48: Vec<f64> = (6 * a..6 * b)
        .map(|i| s48.get(i).copied().unwrap_or(0.0))
        .collect();
    let mut clip = Clip {
        at8,
        at48: Some(at48),
    };
    set_level(&mut clip, level_dbm0);
    Ok(clip)
}

/// Band-pass 300-3400 Hz and resample with sox, reading the result back as 32-bit float
/// (no second quantisation before our own mixing). 16-bit full scale = 32768.
fn sox_telephone(tmp: &Path, wav: &Path, rate: u32) -> Res<Vec<f64>> {
    let raw = tmp.join(format!("tts-{rate}.f32"));
    run_cmd(
        Command::new("sox")
            .args(["-R", "-D"])
            .arg(wav)
            .args(["-t", "raw", "-e", "floating-point", "-b", "32", "-L"])
            .arg(&raw)
            .args(["sinc", "300-3400", "rate", "-v", &rate.to_string()]),
    )?;
    let bytes = std::fs::read(&raw).map_err(|e| format!("read {}: {e}", raw.display()))?;
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64 * 32768.0)
        .collect())
}

/// First and one-past-last sample above 2 % of the peak (about -34 dB): the audible
/// extent, which is what `speech_spans_ms` reports.
fn audible_bounds(x: &[f64]) -> Option<(usize, usize)> {
    let peak = x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if peak <= 0.0 {
        return None;
    }
    let thr = peak * 0.02;
    let a = x.iter().position(|v| v.abs() > thr)?;
    let b = x.iter().rposition(|v| v.abs() > thr)? + 1;
    Some((a, b))
}

/// Scale to an RMS of `level_dbm0` (measured on the 8 kHz rendering), never letting the
/// peak go past -1 dBFS, and fade 5 ms in and out so the trim leaves no click.
fn set_level(clip: &mut Clip, level_dbm0: f64) {
    let p = power(&clip.at8);
    let peak = clip.at8.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let g = (power_for_dbm0(level_dbm0) / p).sqrt().min(29_200.0 / peak);
    for (buf, rate) in [
        (Some(&mut clip.at8), 8000usize),
        (clip.at48.as_mut(), 48000),
    ] {
        if let Some(buf) = buf {
            buf.iter_mut().for_each(|v| *v *= g);
            fade(buf, rate * 5 / 1000);
        }
    }
}

fn fade(x: &mut [f64], n: usize) {
    let n = n.min(x.len() / 2);
    let len = x.len();
    for i in 0..n {
        let g = 0.5 - 0.5 * (std::f64::consts::PI * i as f64 / n as f64).cos();
        x[i] *= g;
        x[len - 1 - i] *= g;
    }
}

/// A recorded 8 kHz mono WAV from the Asterisk packages, as 16-bit-scale samples.
fn read_recording(path: &Path) -> Res<Vec<f64>> {
    let bytes = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let wav = Wav::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    if wav.rate != BASE_RATE || wav.channels != 1 {
        return Err(format!(
            "{}: expected 8 kHz mono, found {} Hz, {} channels",
            path.display(),
            wav.rate,
            wav.channels
        ));
    }
    Ok(wav.channel_linear(0).into_iter().map(f64::from).collect())
}

// ---------------------------------------------------------------------------------------
// Timeline: speech segments and key presses, in 8 kHz samples

fn ms(x: f64) -> usize {
    (x * BASE_RATE as f64 / 1000.0).round() as usize
}

fn to_ms(samples8: usize) -> f64 {
    samples8 as f64 * 1000.0 / BASE_RATE as f64
}

/// Speech or music placed on one channel.
struct Segment {
    channel: usize,
    start8: usize,
    clip: Clip,
    /// What it is, for the ground truth (`speech`/`music`) and where it came from.
    kind: &'static str,
    source: String,
}

/// One key press.
struct Burst {
    channel: usize,
    key: char,
    /// Which field of the payment it belongs to (`pan`, `terminator`, `expiry`, `cvv`).
    field: &'static str,
    start8: usize,
    len8: usize,
    spec: ToneSpec,
    twist_db: f64,
}

/// How a person types a group of keys.
#[derive(Clone, Copy)]
struct Typing {
    /// Digits per group (a card is read off in groups of four); a longer pause between
    /// groups.
    group: usize,
}

struct Plan {
    channels: usize,
    cursor8: usize,
    segments: Vec<Segment>,
    bursts: Vec<Burst>,
}

impl Plan {
    fn new(channels: usize) -> Self {
        Self {
            channels,
            cursor8: 0,
            segments: Vec::new(),
            bursts: Vec::new(),
        }
    }

    fn pause(&mut self, ms_: f64) {
        self.cursor8 += ms(ms_);
    }

    /// Place `clip` at the cursor and move the cursor to its end.
    fn say(&mut self, channel: usize, clip: Clip, source: &str) {
        let start = self.cursor8;
        self.cursor8 += clip.len8();
        self.place(channel, start, clip, "speech", source);
    }

    /// Place a segment at an absolute position without moving the cursor (an agent
    /// speaking over the caller's typing on the other channel).
    fn place(
        &mut self,
        channel: usize,
        start8: usize,
        clip: Clip,
        kind: &'static str,
        source: &str,
    ) {
        self.segments.push(Segment {
            channel,
            start8,
            clip,
            kind,
            source: source.to_string(),
        });
    }

    /// Type `keys` at the cursor the way a caller does: each tone 45-120 ms, 50-220 ms
    /// between keys in a group and 250-400 ms between groups; each tone at its own level
    /// (both tones within -4..-20 dBm0), twist within [`TWIST_DB`] and frequency error within
    /// [`FREQ_ERROR`].
    fn keys(
        &mut self,
        channel: usize,
        keys: &str,
        field: &'static str,
        typing: Typing,
        rng: &mut Rng,
    ) {
        for (i, key) in keys.chars().enumerate() {
            if i > 0 {
                let gap = if i.is_multiple_of(typing.group) {
                    rng.range(250.0, 400.0)
                } else {
                    rng.range(50.0, 220.0)
                };
                self.cursor8 += ms(gap);
            }
            let len8 = ms(rng.range(45.0, 120.0));
            let twist_db = round2(rng.range(TWIST_DB.0, TWIST_DB.1));
            let strongest = round2(rng.range(-20.0 + twist_db.abs(), -4.0));
            let mut spec = ToneSpec::with_twist(strongest, twist_db);
            spec.low_dev = rng.range(-FREQ_ERROR, FREQ_ERROR);
            spec.high_dev = rng.range(-FREQ_ERROR, FREQ_ERROR);
            self.bursts.push(Burst {
                channel,
                key,
                field,
                start8: self.cursor8,
                len8,
                spec,
                twist_db,
            });
            self.cursor8 += len8;
        }
    }

    fn len8(&self) -> usize {
        let seg = self.segments.iter().map(|s| s.start8 + s.clip.len8());
        let tone = self.bursts.iter().map(|b| b.start8 + b.len8);
        seg.chain(tone).chain([self.cursor8]).max().unwrap_or(0)
    }

    /// The ground truth is only unambiguous if no key press overlaps speech on its own
    /// channel; enforce it rather than trust the script.
    fn check_no_overlap(&self) -> Res<()> {
        for b in &self.bursts {
            for s in self.segments.iter().filter(|s| s.channel == b.channel) {
                let (a0, a1) = (b.start8, b.start8 + b.len8);
                let (s0, s1) = (s.start8, s.start8 + s.clip.len8());
                if a0 < s1 && s0 < a1 {
                    return Err(format!(
                        "key press at {} ms overlaps {} on channel {}",
                        to_ms(a0),
                        s.source,
                        b.channel
                    ));
                }
            }
        }
        Ok(())
    }

    /// Mix the plan at `rate` (8000 or 48000), one buffer per channel. Tone phases and
    /// noise come from seeded generators, so a rendering is reproducible.
    fn render(&self, rate: u32, line_noise: bool, seed: u64) -> Vec<Vec<f64>> {
        let k = (rate / BASE_RATE) as usize;
        let n = self.len8() * k;
        let mut chans = vec![vec![0.0; n]; self.channels];
        for s in &self.segments {
            let src = s.clip.at(rate);
            let dst = &mut chans[s.channel][s.start8 * k..];
            dst.iter_mut().zip(src).for_each(|(d, v)| *d += v);
        }
        let mut tone_rng = Rng::new(seed);
        for b in &self.bursts {
            let digit = Digit::from_char(b.key).expect("script keys are DTMF keys");
            let buf = &mut chans[b.channel];
            add_dtmf(
                buf,
                rate,
                b.start8 * k,
                b.len8 * k,
                digit,
                b.spec,
                &mut tone_rng,
            );
        }
        if line_noise {
            let mut noise_rng = Rng::new(seed ^ 0x5EED_F1A5);
            for buf in &mut chans {
                add_white_noise(buf, power_for_dbm0(NOISE_DBM0), &mut noise_rng);
                let len = buf.len();
                add_sine(buf, rate, 0, len, HUM_HZ, HUM_DBM0, noise_rng.phase());
                add_sine(
                    buf,
                    rate,
                    0,
                    len,
                    3.0 * HUM_HZ,
                    HUM3_DBM0,
                    noise_rng.phase(),
                );
            }
        }
        chans
    }

    /// Audible spans per channel in ms, overlapping ones merged.
    fn spans_ms(&self, channel: Option<usize>) -> Vec<[f64; 2]> {
        let mut v: Vec<(usize, usize)> = self
            .segments
            .iter()
            .filter(|s| channel.is_none_or(|c| c == s.channel))
            .map(|s| (s.start8, s.start8 + s.clip.len8()))
            .collect();
        v.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::new();
        for (a, b) in v {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        merged
            .into_iter()
            .map(|(a, b)| [to_ms(a), to_ms(b)])
            .collect()
    }

    fn digits_json(&self) -> Vec<Value> {
        let mut bursts: Vec<&Burst> = self.bursts.iter().collect();
        bursts.sort_by_key(|b| (b.start8, b.channel));
        bursts
            .into_iter()
            .map(|b| {
                let (fl, fh) = Digit::from_char(b.key).expect("DTMF key").frequencies();
                json!({
                    "channel": b.channel,
                    "digit": b.key.to_string(),
                    "field": b.field,
                    "start_ms": to_ms(b.start8),
                    "end_ms": to_ms(b.start8 + b.len8),
                    "low_dbm0": round2(b.spec.low_dbm0),
                    "high_dbm0": round2(b.spec.high_dbm0),
                    "twist_db": b.twist_db,
                    "low_hz": round2(fl as f64 * (1.0 + b.spec.low_dev)),
                    "high_hz": round2(fh as f64 * (1.0 + b.spec.high_dev)),
                })
            })
            .collect()
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

// ---------------------------------------------------------------------------------------
// Cards

fn luhn_valid(pan: &str) -> bool {
    let sum: u32 = pan
        .chars()
        .rev()
        .filter_map(|c| c.to_digit(10))
        .enumerate()
        .map(|(i, d)| match (i % 2, d * 2) {
            (1, x) if x > 9 => x - 9,
            (1, x) => x,
            _ => d,
        })
        .sum();
    pan.len() >= 12 && sum.is_multiple_of(10)
}

fn brand(pan: &str) -> &'static str {
    match pan.as_bytes() {
        [b'4', ..] => "visa",
        [b'5', b'1'..=b'5', ..] => "mastercard",
        [b'3', b'4' | b'7', ..] => "amex",
        _ => "unknown",
    }
}

fn card_json(pan: &str) -> Res<Value> {
    if !luhn_valid(pan) {
        return Err(format!("test card number {pan} fails the Luhn check"));
    }
    Ok(json!({"pan_digits": pan.len(), "luhn_valid": true, "brand": brand(pan)}))
}

// ---------------------------------------------------------------------------------------
// Output

/// One written fixture, for the README.
struct Made {
    file: String,
    format: &'static str,
    rate: u32,
    channels: usize,
    seconds: f64,
    bytes: u64,
    digits: usize,
    about: &'static str,
}

fn write_wav(out: &Path, file: &str, rate: u32, format: WavFormat, chans: &[Vec<f64>]) -> Res<u64> {
    let n = chans[0].len();
    let mut inter = Vec::with_capacity(n * chans.len());
    for i in 0..n {
        inter.extend(chans.iter().map(|c| c[i]));
    }
    let pcm = to_i16(&inter);
    let data = match format {
        WavFormat::Pcm16 => WavData::Pcm16(pcm),
        WavFormat::Ulaw => WavData::G711(pcm.into_iter().map(linear_to_ulaw).collect()),
        WavFormat::Alaw => unreachable!("no A-law fixture"),
    };
    let wav = Wav {
        format,
        channels: chans.len() as u16,
        rate,
        data,
    };
    let bytes = wav.to_bytes();
    let path = out.join(file);
    std::fs::write(&path, &bytes).map_err(|e| format!("write {}: {e}", path.display()))?;
    Ok(bytes.len() as u64)
}

fn write_json(out: &Path, wav_file: &str, v: &Value) -> Res<()> {
    let path = out.join(wav_file.replace(".wav", ".json"));
    let mut s = serde_json::to_string_pretty(v).map_err(|e| e.to_string())?;
    s.push('\n');
    std::fs::write(&path, s).map_err(|e| format!("write {}: {e}", path.display()))
}

fn peak_dbfs(chans: &[Vec<f64>]) -> f64 {
    let peak = chans.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs()));
    20.0 * (peak / 32768.0).log10()
}

// ---------------------------------------------------------------------------------------
// (i) and (ii): the card-payment call

/// One line of a mono call script.
#[derive(Clone, Copy)]
enum Step {
    Pause(f64),
    /// RMS level in dBm0 and what is said.
    Agent(f64, &'static str),
    Caller(f64, &'static str),
    /// Keys, payment field, keys per group.
    Keys(&'static str, &'static str, usize),
}

/// Visa test number (Luhn-valid, never issued), expiry and security code of the call.
const CALL_PAN: &str = "4012888888881881";
const CALL_EXPIRY: &str = "0927";
const CALL_CVV: &str = "315";

/// A brisk card-payment call: the agent asks for the card number, expiry and security
/// code; the caller types each in a silent gap and answers briefly. Kept to about half a
/// minute because the 48 kHz rendering costs 96 kB a second of the 5 MB budget.
fn payment_call(tmp: &Path, out: &Path, made: &mut Vec<Made>) -> Res<()> {
    let mut rng = Rng::new(0x7017_CA11);
    let mut p = Plan::new(1);
    use Step::*;
    // Pauses around key presses are generous enough that no tone touches speech; the
    // typing itself is randomised in `Plan::keys`.
    let script = [
        Pause(400.0),
        Agent(-17.0, "Northwind Energy, how can I help?"),
        Pause(350.0),
        Caller(-19.0, "Hi, I'd like to pay my bill by card."),
        Pause(350.0),
        Agent(-16.0, "Sure, type your card number, then hash."),
        Pause(700.0),
        Keys(CALL_PAN, "pan", 4),
        Pause(330.0),
        Keys("#", "terminator", 1),
        Pause(600.0),
        Caller(-18.0, "Okay, done."),
        Pause(350.0),
        Agent(-17.0, "Thanks. Now the expiry date, month then year."),
        Pause(600.0),
        Keys(CALL_EXPIRY, "expiry", 2),
        Pause(600.0),
        Agent(-15.0, "And the three digit security code on the back."),
        Pause(600.0),
        Keys(CALL_CVV, "cvv", 3),
        Pause(700.0),
        Agent(-17.0, "Thank you, that payment has gone through."),
        Pause(300.0),
        Caller(-20.0, "Great, thanks. Bye."),
        Pause(500.0),
    ];
    for step in script {
        match step {
            Pause(t) => p.pause(t),
            Agent(level, text) | Caller(level, text) => {
                let (who, v) = match step {
                    Agent(..) => ("agent", AGENT),
                    _ => ("caller", CALLER),
                };
                let clip = speak(tmp, v, text, level)?;
                p.say(0, clip, &format!("{who} (espeak-ng {}): {text}", v.espeak));
            }
            Keys(keys, field, group) => p.keys(0, keys, field, Typing { group }, &mut rng),
        }
    }
    p.check_no_overlap()?;

    let card = card_json(CALL_PAN)?;
    for (file, rate, format, fname) in [
        ("payment-call-8k-ulaw.wav", 8000, WavFormat::Ulaw, "ulaw"),
        (
            "payment-call-48k-pcm16.wav",
            48000,
            WavFormat::Pcm16,
            "pcm16",
        ),
    ] {
        // Same seed at both rates: same tone phases and noise statistics.
        let chans = p.render(rate, true, 0xCA11_0001);
        let bytes = write_wav(out, file, rate, format, &chans)?;
        write_json(
            out,
            file,
            &json!({
                "file": file,
                "rate": rate,
                "channels": 1,
                "format": fname,
                "digits": p.digits_json(),
                "card": card,
                "speech_spans_ms": p.spans_ms(None),
                "duration_ms": to_ms(p.len8()),
                "noise": {"white_dbm0": NOISE_DBM0, "hum_hz": HUM_HZ, "hum_dbm0": HUM_DBM0},
            }),
        )?;
        println!(
            "{file}: {:.1} s, {} digits, peak {:.1} dBFS, {bytes} bytes",
            to_ms(p.len8()) / 1000.0,
            p.bursts.len(),
            peak_dbfs(&chans)
        );
        made.push(Made {
            file: file.into(),
            format: fname,
            rate,
            channels: 1,
            seconds: to_ms(p.len8()) / 1000.0,
            bytes,
            digits: p.bursts.len(),
            about: if rate == 8000 {
                "Card-payment call: espeak-ng agent (en-us+f3) and caller (en-gb+m3), \
                 band-passed 300-3400 Hz; Visa test PAN, `#`, expiry, CVV typed in silent \
                 gaps over line noise."
            } else {
                "The same call rendered directly at 48 kHz (tones generated at 48 kHz, speech \
                 resampled from espeak's 22.05 kHz output), identical ground-truth times."
            },
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// (iii): caller and agent on separate channels

const STEREO_PAN: &str = "5555555555554444";
const STEREO_EXPIRY: &str = "0330";
const STEREO_CVV: &str = "842";

/// A two-leg recording: caller on channel 0 (keys and short answers), agent on channel 1.
/// The agent once speaks while the caller types, which a per-channel masker must handle
/// without touching the agent's speech.
fn caller_agent_stereo(tmp: &Path, out: &Path, made: &mut Vec<Made>) -> Res<()> {
    const CALLER_CH: usize = 0;
    const AGENT_CH: usize = 1;
    let mut rng = Rng::new(0x57E2_E0CA);
    let mut p = Plan::new(2);
    let src = |v: Voice, text: &str| format!("espeak-ng {}: {text}", v.espeak);

    p.pause(300.0);
    let t = "Please key in your card number, then hash.";
    p.say(AGENT_CH, speak(tmp, AGENT, t, -16.0)?, &src(AGENT, t));
    p.pause(600.0);
    let typing_start = p.cursor8;
    p.keys(CALLER_CH, STEREO_PAN, "pan", Typing { group: 4 }, &mut rng);
    p.pause(rng.range(300.0, 400.0));
    p.keys(CALLER_CH, "#", "terminator", Typing { group: 4 }, &mut rng);
    // The agent fills the silence while the caller is still typing.
    let t = "Take your time, there's no rush.";
    let over = speak(tmp, AGENT, t, -17.0)?;
    let over_len = over.len8();
    p.place(
        AGENT_CH,
        typing_start + ms(1300.0),
        over,
        "speech",
        &src(AGENT, t),
    );
    p.cursor8 = p.cursor8.max(typing_start + ms(1300.0) + over_len);
    p.pause(500.0);
    let t = "Done.";
    p.say(CALLER_CH, speak(tmp, CALLER, t, -18.0)?, &src(CALLER, t));
    p.pause(300.0);
    let t = "And the expiry date?";
    p.say(AGENT_CH, speak(tmp, AGENT, t, -16.0)?, &src(AGENT, t));
    p.pause(550.0);
    p.keys(
        CALLER_CH,
        STEREO_EXPIRY,
        "expiry",
        Typing { group: 2 },
        &mut rng,
    );
    p.pause(550.0);
    let t = "And the security code.";
    p.say(AGENT_CH, speak(tmp, AGENT, t, -16.0)?, &src(AGENT, t));
    p.pause(550.0);
    p.keys(CALLER_CH, STEREO_CVV, "cvv", Typing { group: 3 }, &mut rng);
    p.pause(600.0);
    let t = "That's it, thank you.";
    p.say(AGENT_CH, speak(tmp, AGENT, t, -17.0)?, &src(AGENT, t));
    p.pause(250.0);
    let t = "Cheers.";
    p.say(CALLER_CH, speak(tmp, CALLER, t, -19.0)?, &src(CALLER, t));
    p.pause(400.0);
    p.check_no_overlap()?;

    let file = "caller-agent-stereo-8k-pcm16.wav";
    let chans = p.render(8000, true, 0x57E2_0002);
    let bytes = write_wav(out, file, 8000, WavFormat::Pcm16, &chans)?;
    let agent_over_caller = {
        let s = &p
            .segments
            .iter()
            .find(|s| s.source.contains("no rush"))
            .expect("placed above");
        [to_ms(s.start8), to_ms(s.start8 + s.clip.len8())]
    };
    write_json(
        out,
        file,
        &json!({
            "file": file,
            "rate": 8000,
            "channels": 2,
            "format": "pcm16",
            "channel_roles": ["caller", "agent"],
            "digits": p.digits_json(),
            "card": card_json(STEREO_PAN)?,
            "speech_spans_ms": p.spans_ms(None),
            "speech_spans_ms_by_channel": [p.spans_ms(Some(0)), p.spans_ms(Some(1))],
            "agent_speaks_while_caller_types_ms": agent_over_caller,
            "duration_ms": to_ms(p.len8()),
            "noise": {"white_dbm0": NOISE_DBM0, "hum_hz": HUM_HZ, "hum_dbm0": HUM_DBM0},
        }),
    )?;
    println!(
        "{file}: {:.1} s, {} digits, peak {:.1} dBFS, {bytes} bytes",
        to_ms(p.len8()) / 1000.0,
        p.bursts.len(),
        peak_dbfs(&chans)
    );
    made.push(Made {
        file: file.into(),
        format: "pcm16",
        rate: 8000,
        channels: 2,
        seconds: to_ms(p.len8()) / 1000.0,
        bytes,
        digits: p.bursts.len(),
        about: "Two legs: caller (channel 0) types a Mastercard test PAN, `#`, expiry and CVV \
                and answers briefly; agent (channel 1) prompts, and talks once while the \
                caller is typing.",
    });
    Ok(())
}

// ---------------------------------------------------------------------------------------
// (iv): real speech and music, no DTMF

/// Recorded prompts: three speakers (US English female, Canadian French female, Italian
/// male), varied phrases, including a read-out of spoken digits, which is what a payment
/// IVR plays and the talk-off test most needs.
const PROMPTS: &[(&str, &[&str])] = &[
    ("en", &["demo-thanks"]),
    ("it", &["queue-periodic-announce"]),
    ("en", &["vm-intro"]),
    ("fr", &["vm-intro"]),
    (
        "en",
        &[
            "you-entered",
            "digits/4",
            "digits/0",
            "digits/1",
            "digits/2",
            "digits/8",
            "digits/8",
        ],
    ),
    ("en", &["queue-periodic-announce"]),
    ("it", &["vm-nobodyavail"]),
    ("en", &["tt-weasels"]),
    ("fr", &["pls-hold-while-try"]),
    ("it", &["demo-thanks"]),
    ("en", &["vm-instructions"]),
];

/// Hold-music excerpts: (file, offset s, length s, RMS level dBm0).
const MUSIC: &[(&str, f64, f64, f64)] = &[
    ("macroform-cold_day", 40.0, 7.0, -16.0),
    ("manolo_camp-morning_coffee", 20.0, 7.0, -18.0),
    ("reno_project-system", 60.0, 7.0, -14.0),
    ("macroform-the_simplicity", 30.0, 7.0, -20.0),
];

fn speaker_dir(lang: &str) -> PathBuf {
    let dir = SPEAKERS
        .iter()
        .find(|(l, _)| *l == lang)
        .expect("known language")
        .1;
    Path::new(SOUNDS).join(dir)
}

/// Talk-off material: real recorded speech then music on hold, each piece at its own level,
/// a faint noise floor, and not a single key press. Ground truth is an empty digit list.
fn speech_music_no_dtmf(out: &Path, made: &mut Vec<Made>) -> Res<()> {
    let mut rng = Rng::new(0x7A1C_0FF0);
    let mut p = Plan::new(1);
    p.pause(300.0);
    for (lang, parts) in PROMPTS {
        // A multi-part prompt is joined the way an IVR plays it: each file trimmed, 60 ms
        // apart.
        let mut x = Vec::new();
        for part in *parts {
            let path = speaker_dir(lang).join(format!("{part}.wav"));
            let rec = read_recording(&path)?;
            let (a, b) =
                audible_bounds(&rec).ok_or_else(|| format!("{} is silent", path.display()))?;
            if !x.is_empty() {
                x.extend(std::iter::repeat_n(0.0, ms(60.0)));
            }
            x.extend_from_slice(&rec[a..b]);
        }
        let mut clip = Clip { at8: x, at48: None };
        set_level(&mut clip, round2(rng.range(-22.0, -12.0)));
        let source = format!("asterisk-core-sounds-{lang}: {}", parts.join(" + "));
        p.say(0, clip, &source);
        p.pause(rng.range(200.0, 350.0));
    }
    p.pause(300.0);
    for &(name, offset, len, level) in MUSIC {
        let path = Path::new(MOH).join(format!("{name}.wav"));
        let rec = read_recording(&path)?;
        let a = ms(offset * 1000.0);
        let b = (a + ms(len * 1000.0)).min(rec.len());
        let mut clip = Clip {
            at8: rec[a..b].to_vec(),
            at48: None,
        };
        set_level(&mut clip, level);
        fade(&mut clip.at8, ms(150.0));
        let start = p.cursor8;
        p.cursor8 += clip.len8();
        let source = format!("asterisk-moh-opsound: {name} {offset}-{} s", offset + len);
        p.place(0, start, clip, "music", &source);
        p.pause(300.0);
    }

    // A faint noise floor only: no hum, the recordings are clean studio prompts.
    let mut chans = p.render(8000, false, 0x7A1C_0003);
    add_white_noise(
        &mut chans[0],
        power_for_dbm0(-62.0),
        &mut Rng::new(0x7A1C_0004),
    );
    let file = "speech-music-no-dtmf-8k-pcm16.wav";
    let bytes = write_wav(out, file, 8000, WavFormat::Pcm16, &chans)?;
    let sources: Vec<Value> = p
        .segments
        .iter()
        .map(|s| {
            json!({
                "kind": s.kind,
                "source": s.source,
                "start_ms": to_ms(s.start8),
                "end_ms": to_ms(s.start8 + s.clip.len8()),
            })
        })
        .collect();
    let speech_s: f64 = p
        .segments
        .iter()
        .filter(|s| s.kind == "speech")
        .map(|s| s.clip.len8() as f64)
        .sum::<f64>()
        / 8000.0;
    let music_s: f64 = p
        .segments
        .iter()
        .filter(|s| s.kind == "music")
        .map(|s| s.clip.len8() as f64)
        .sum::<f64>()
        / 8000.0;
    write_json(
        out,
        file,
        &json!({
            "file": file,
            "rate": 8000,
            "channels": 1,
            "format": "pcm16",
            "digits": [],
            "card": null,
            "speech_spans_ms": p.spans_ms(None),
            "sources": sources,
            "speech_seconds": round2(speech_s),
            "music_seconds": round2(music_s),
            "duration_ms": to_ms(p.len8()),
            "noise": {"white_dbm0": -62.0},
        }),
    )?;
    println!(
        "{file}: {:.1} s ({speech_s:.1} s speech, {music_s:.1} s music), peak {:.1} dBFS, {bytes} bytes",
        to_ms(p.len8()) / 1000.0,
        peak_dbfs(&chans)
    );
    made.push(Made {
        file: file.into(),
        format: "pcm16",
        rate: 8000,
        channels: 1,
        seconds: to_ms(p.len8()) / 1000.0,
        bytes,
        digits: 0,
        about: "Talk-off: recorded Asterisk prompts (three speakers, incl. spoken digits) then \
                opsound hold music, each at its own level; no DTMF at all.",
    });
    Ok(())
}

// ---------------------------------------------------------------------------------------
// README and budget

fn write_readme(out: &Path, made: &[Made]) -> Res<()> {
    let mut s = String::new();
    s.push_str(
        "# sample-audio\n\n\
         Recorded fixtures for tonewall's tests. **Generated, do not edit by hand**: every file \
         here (this README included) is written by `examples/make_fixtures.rs`:\n\n\
         ```sh\n\
         # needs: apt-get install espeak-ng sox asterisk-core-sounds-en-wav \\\n\
         #        asterisk-core-sounds-fr-wav asterisk-core-sounds-it-wav asterisk-moh-opsound-wav\n\
         cargo run --release --example make_fixtures\n\
         ```\n\n\
         The output is deterministic (seeded generators, `sox -R`), so re-running it gives \
         identical files. The tests only read these files; they need none of those packages.\n\n\
         ## Files\n\n\
         | file | format | length | size | digits | what |\n|---|---|---|---|---|---|\n",
    );
    for m in made {
        let fmt = match (m.format, m.channels) {
            ("ulaw", _) => format!("{} Hz mono G.711 mu-law (WAV tag 7)", m.rate),
            (_, 1) => format!("{} Hz mono 16-bit PCM", m.rate),
            (_, c) => format!("{} Hz {c}-channel 16-bit PCM", m.rate),
        };
        let _ = writeln!(
            s,
            "| `{}` | {fmt} | {:.1} s | {:.0} kB | {} | {} |",
            m.file,
            m.seconds,
            m.bytes as f64 / 1000.0,
            m.digits,
            m.about
        );
    }
    s.push_str(
        "\nEach `NAME.wav` has a ground-truth `NAME.json`:\n\n\
         * `digits`: every key press, in time order, with `channel`, `digit`, `field` (`pan`, \
         `terminator`, `expiry`, `cvv`), exact `start_ms`/`end_ms` (the sample positions the tone \
         was placed at), per-tone levels `low_dbm0`/`high_dbm0` (dBm0, full-scale sine = +3.14 \
         dBm0), `twist_db` (positive = high group stronger) and the actual `low_hz`/`high_hz` \
         (frequency errors within ±0.5 %).\n\
         * `card`: PAN length, Luhn validity and brand of the (public test) card number.\n\
         * `speech_spans_ms`: where speech or music is (merged over channels), for measuring \
         over-masking; the stereo file also has `speech_spans_ms_by_channel`, the talk-off file \
         `sources` (each prompt and music excerpt with its origin).\n\n\
         Levels: key tones -4 to -20 dBm0 per tone, twist -3 to +4 dB, frequency error ±0.5 %, 45-120 ms tones with \
         50-400 ms gaps; speech -15 to -20 dBm0 RMS band-passed to 300-3400 Hz; line noise \
         white at -55 dBm0 plus 50 Hz hum at -58 dBm0. No key press overlaps speech on its own \
         channel, so the ground truth is unambiguous; in the stereo file the agent talks on \
         channel 1 while the caller types on channel 0.\n\n\
         The 48 kHz call is the same timeline as the 8 kHz one: tones generated at 48 kHz at six \
         times the sample positions, speech rendered from the same espeak-ng output, so the \
         JSON times are identical. The calls are kept to about half a minute because the \
         48 kHz file costs 96 kB per second of the 5 MB budget for this folder, and no mu-law \
         copy of the talk-off file is kept for the same reason (the tests can encode it).\n\n\
         ## Sources and licences\n\n\
         * Synthetic speech in the call fixtures: generated with espeak-ng (voices en-us+f3 and \
         en-gb+m3). Key tones and noise: `tonewall::signal`.\n\
         * Recorded prompts in `speech-music-no-dtmf-8k-pcm16.wav`, from the Asterisk core \
         sounds (Debian packages asterisk-core-sounds-*-wav, sounds version 1.6.1):\n\
         \x20 * English (en_US): Allison Smith (theivrvoice.com), financial contribution Digium, \
         Inc.; licence **CC BY-SA 3.0**.\n\
         \x20 * French (fr_CA): June Wallack (junewallack.com), translation Clod Patry, \
         Kristopher Lalletti, June Wallack; licence **CC BY-SA 3.0**.\n\
         \x20 * Italian (it_IT): Carlo Flora (carloflora.com), translation Silvia Petrin; \
         licence **CC BY 3.0**.\n\
         * Music on hold in the same file, from the opsound collection (Debian package \
         asterisk-moh-opsound-wav), licence **CC BY-SA 3.0** by explicit permission of the \
         authors: \"Cold Day\" and \"The Simplicity\" by Paul Shuler (Macroform), \"Morning \
         Coffee\" by Manolo Camp, \"System\" by Reno Project.\n\n\
         Excerpts were trimmed, concatenated, level-scaled (prompts -12 to -22 dBm0 RMS, music \
         -14 to -20 dBm0) and mixed with a faint noise floor. \
         Under the ShareAlike terms, `speech-music-no-dtmf-8k-pcm16.wav` is distributed under \
         CC BY-SA 3.0 (https://creativecommons.org/licenses/by-sa/3.0/), with the attributions \
         above; its JSON lists every excerpt and where it came from.\n",
    );
    let path = out.join("README.md");
    std::fs::write(&path, s).map_err(|e| format!("write {}: {e}", path.display()))
}

/// The whole folder, not just what this run wrote, must fit the budget.
fn check_budget(out: &Path) -> Res<()> {
    let mut total = 0;
    let rd = std::fs::read_dir(out).map_err(|e| format!("read {}: {e}", out.display()))?;
    for e in rd {
        let md = e.and_then(|e| e.metadata()).map_err(|e| e.to_string())?;
        total += md.len();
    }
    println!("sample-audio/: {total} bytes (budget {BUDGET_BYTES})");
    if total > BUDGET_BYTES {
        return Err(format!(
            "sample-audio/ is {total} bytes, over the {BUDGET_BYTES}-byte budget; shorten a fixture"
        ));
    }
    Ok(())
}
