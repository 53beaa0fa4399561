//! Shared helpers for the integration tests: run the real detector and pipeline over
//! generated or recorded signals, pass signals through G.711 or an Opus round trip (see
//! [`Path`]), and measure what is left of each tone after masking. Test-only; allocates
//! freely; never prints a digit value anywhere but the test's own assertion messages.
#![allow(dead_code)]

use tonewall::codec::{alaw_to_linear, linear_to_alaw, linear_to_ulaw, ulaw_to_linear, Codec};
use tonewall::dtmf::{Detector, DetectorConfig, DetectorEvent, Digit, MaskConfig, COL_HZ, ROW_HZ};
use tonewall::event::EventLog;
use tonewall::pipeline::{ChannelPipeline, PipelineConfig};
use tonewall::signal::{add_dtmf, Rng, ToneSpec};
use tonewall::time::ChannelId;

/// A digit as the detector reported it.
#[derive(Debug, Clone, Copy)]
pub struct Found {
    pub digit: char,
    pub start_ms: f64,
    pub end_ms: f64,
    pub declared_ms: f64,
}

/// A tone placed in a generated signal (`start` and `len` in samples at `rate`).
#[derive(Debug, Clone, Copy)]
pub struct Placed {
    pub digit: char,
    pub start: usize,
    pub len: usize,
    pub rate: u32,
}

impl Placed {
    pub fn start_ms(&self) -> f64 {
        self.start as f64 * 1000.0 / self.rate as f64
    }
    pub fn end_ms(&self) -> f64 {
        (self.start + self.len) as f64 * 1000.0 / self.rate as f64
    }
}

pub const RATE: usize = 8000;

pub fn ms(n: f64) -> usize {
    ms_at(n, RATE as u32)
}

/// `n` milliseconds in samples at `rate`.
pub fn ms_at(n: f64, rate: u32) -> usize {
    (n * rate as f64 / 1000.0).round() as usize
}

/// Run the detector over 8 kHz samples in 20 ms frames.
pub fn detect(x: &[i16], cfg: &DetectorConfig) -> Vec<Found> {
    let mut det = Detector::new(cfg, &MaskConfig::default(), false);
    let mut found: Vec<Found> = Vec::new();
    let mut declared = std::collections::HashMap::new();
    let mut on = |ev: DetectorEvent| match ev {
        DetectorEvent::Digit { digit, onset, at } => {
            declared.insert(onset.to_bits(), at as f64 / 8.0);
            found.push(Found {
                digit: digit.expose().to_char(),
                start_ms: onset / 8.0,
                end_ms: f64::NAN,
                declared_ms: at as f64 / 8.0,
            });
        }
        DetectorEvent::DigitEnd { end, .. } => {
            if let Some(f) = found.last_mut() {
                f.end_ms = end / 8.0;
            }
        }
        DetectorEvent::Mask { .. } => {}
    };
    for frame in x.chunks(160) {
        det.process(frame, &mut on);
    }
    det.flush(&mut on);
    found
}

pub fn digits_string(f: &[Found]) -> String {
    f.iter().map(|d| d.digit).collect()
}

/// Encode to G.711 and back (identity for PCM16).
pub fn through(codec: Codec, x: &[i16]) -> Vec<i16> {
    match codec {
        Codec::Pcm16 => x.to_vec(),
        Codec::Pcmu => x
            .iter()
            .map(|&s| ulaw_to_linear(linear_to_ulaw(s)))
            .collect(),
        Codec::Pcma => x
            .iter()
            .map(|&s| alaw_to_linear(linear_to_alaw(s)))
            .collect(),
        Codec::Opus => panic!("Opus is a frame codec; its battery variants have their own path"),
    }
}

pub const CODECS: [Codec; 3] = [Codec::Pcm16, Codec::Pcmu, Codec::Pcma];

/// A burst train at 8 kHz: each (digit, on_ms, off_ms, spec) in turn, after `lead_ms`.
pub fn train(
    items: &[(char, f64, f64, ToneSpec)],
    lead_ms: f64,
    rng: &mut Rng,
) -> (Vec<f64>, Vec<Placed>) {
    train_at(items, lead_ms, rng, RATE as u32)
}

/// [`train`] generated directly at `rate` Hz (the same phases and placement in ms).
pub fn train_at(
    items: &[(char, f64, f64, ToneSpec)],
    lead_ms: f64,
    rng: &mut Rng,
    rate: u32,
) -> (Vec<f64>, Vec<Placed>) {
    let ms = |n: f64| ms_at(n, rate);
    let total: f64 = lead_ms + items.iter().map(|i| i.1 + i.2).sum::<f64>() + 100.0;
    let mut x = vec![0.0; ms(total)];
    let mut t = ms(lead_ms);
    let mut placed = Vec::new();
    for &(c, on, off, spec) in items {
        let len = ms(on);
        add_dtmf(
            &mut x,
            rate,
            t,
            len,
            Digit::from_char(c).unwrap(),
            spec,
            rng,
        );
        placed.push(Placed {
            digit: c,
            start: t,
            len,
            rate,
        });
        t += len + ms(off);
    }
    (x, placed)
}

/// White noise whose power in the 0 to 4 kHz band the detector sees is `band_power`
/// (16-bit scale), whatever `rate` is: S/N figures at 48 kHz mean the same as at 8 kHz.
pub fn add_band_noise(x: &mut [f64], band_power: f64, rate: u32, rng: &mut Rng) {
    tonewall::signal::add_white_noise(x, band_power * rate as f64 / RATE as f64, rng);
}

pub const KEYS: &str = "123A456B789C*0#D";

/// Mask `x` (16-bit PCM at 8 kHz, already through `codec`) with the real pipeline, in the
/// codec's own domain, returning the output aligned with the input and the events.
pub fn mask(x: &[i16], codec: Codec, lookahead_ms: u32) -> (Vec<i16>, EventLog) {
    let cfg = PipelineConfig {
        codec,
        rate: 8000,
        lookahead_ms,
        mask: mask_config(),
        ..PipelineConfig::default()
    };
    let mut log = EventLog::default();
    let out = match codec {
        Codec::Pcm16 => run_pipeline::<i16>(cfg, x.to_vec(), &mut log),
        Codec::Pcmu => {
            let b: Vec<u8> = x.iter().map(|&s| linear_to_ulaw(s)).collect();
            run_pipeline::<u8>(cfg, b, &mut log)
                .into_iter()
                .map(ulaw_to_linear)
                .collect()
        }
        Codec::Pcma => {
            let b: Vec<u8> = x.iter().map(|&s| linear_to_alaw(s)).collect();
            run_pipeline::<u8>(cfg, b, &mut log)
                .into_iter()
                .map(alaw_to_linear)
                .collect()
        }
        Codec::Opus => panic!("Opus is masked as the PCM it decodes to"),
    };
    (out, log)
}

/// Masking thresholds under test: the defaults, or a JSON `MaskConfig` in
/// `TONEWALL_TEST_MASK` (for exploring thresholds against the whole battery and corpus).
pub fn mask_config() -> tonewall::dtmf::MaskConfig {
    match std::env::var("TONEWALL_TEST_MASK") {
        Ok(j) => serde_json::from_str(&j).expect("TONEWALL_TEST_MASK is a MaskConfig in JSON"),
        Err(_) => tonewall::dtmf::MaskConfig::default(),
    }
}

/// Drive a pipeline in 20 ms frames and realign its output with its input.
pub fn run_pipeline<T: tonewall::pipeline::Sample + Default>(
    cfg: PipelineConfig,
    x: Vec<T>,
    log: &mut EventLog,
) -> Vec<T> {
    let mut p = ChannelPipeline::<T>::new(cfg, ChannelId(0)).unwrap();
    let frame = (cfg.rate / 50) as usize;
    let mut out = vec![T::default(); x.len()];
    for (i, o) in x.chunks(frame).zip(out.chunks_mut(frame)) {
        p.process(i, o, log);
    }
    let mut tail = vec![T::default(); p.delay()];
    p.finish(&mut tail, log);
    out.extend(tail);
    out.drain(..p.delay());
    out
}

/// What is left of one tone after masking: samples of it that came out unchanged, and the
/// tone's energy left in the output relative to the input (dB; -inf when all gone).
#[derive(Debug, Clone, Copy)]
pub struct Residual {
    pub leaked_ms: f64,
    pub energy_db: f64,
    pub masked_before_ms: f64,
    pub masked_after_ms: f64,
}

/// Measure residual and over-masking for each placed tone. A sample counts as leaked if it
/// is part of the tone and reached the output unchanged (not silenced). The energy check is
/// a matched filter: correlation of the output with the tone's own two frequencies over the
/// tone's known span.
pub fn residuals(input: &[i16], output: &[i16], placed: &[Placed], silence: i16) -> Vec<Residual> {
    placed
        .iter()
        .map(|p| {
            let span = p.start..(p.start + p.len).min(output.len());
            let leaked = span.clone().filter(|&i| output[i] != silence).count();
            let d = Digit::from_char(p.digit).unwrap();
            let (fl, fh) = d.frequencies();
            let e_in = tone_energy_at(&input[span.clone()], fl, fh, p.rate);
            let e_out = tone_energy_at(&output[span.clone()], fl, fh, p.rate);
            let energy_db = 10.0 * (e_out.max(1e-30) / e_in.max(1e-30)).log10();
            // Contiguous masked run around the tone.
            let mut a = p.start;
            while a > 0 && output[a - 1] == silence && input[a - 1] != silence {
                a -= 1;
            }
            let mut b = p.start + p.len;
            while b < output.len() && output[b] == silence && input[b] != silence {
                b += 1;
            }
            let per_ms = p.rate as f64 / 1000.0;
            Residual {
                leaked_ms: leaked as f64 / per_ms,
                energy_db,
                masked_before_ms: (p.start - a) as f64 / per_ms,
                masked_after_ms: (b - (p.start + p.len)) as f64 / per_ms,
            }
        })
        .collect()
}

/// What a matched-filter classifier that knows where a tone was reads from the output over
/// that tone's span (BRIEF 2.2: no digit may be recoverable "by a matched-filter classifier
/// that knows where each tone was").
#[derive(Debug, Clone, Copy)]
pub struct Classified {
    /// The key whose row and column correlate best with what is left, or `None` where nothing
    /// is left (every sample of the span masked).
    pub key: Option<char>,
    /// How much stronger the best row is than the next best, and the best column than the
    /// next best (dB).
    pub row_margin_db: f64,
    pub col_margin_db: f64,
    /// Share of the left samples' power that the two picked frequencies explain.
    pub share: f64,
}

impl Classified {
    /// A confident reading: both groups decided by at least [`CLASSIFIER_MARGIN_DB`] and the
    /// pair explaining at least [`CLASSIFIER_SHARE`] of what is left.
    pub fn confident(&self) -> bool {
        self.key.is_some()
            && self.row_margin_db >= CLASSIFIER_MARGIN_DB
            && self.col_margin_db >= CLASSIFIER_MARGIN_DB
            && self.share >= CLASSIFIER_SHARE
    }

    /// A confident reading of the key that was there: the digit is recovered.
    pub fn recovers(&self, digit: char) -> bool {
        self.confident() && self.key == Some(digit)
    }
}

/// How clearly the best row and the best column must win for a confident reading. Chosen as
/// the most sensitive setting that is still right when it is sure: over the masked leak
/// battery (seeds 0 to 6, every path and look-ahead, 87,570 tone spans) a 2 dB reading named
/// the right key 184 times and a wrong one 15 times; at 1 dB it was right 197 times and wrong
/// 212 times, no better than a guess once it is sure.
pub const CLASSIFIER_MARGIN_DB: f64 = 2.0;
/// Share of what is left that the two picked frequencies must explain (a voice under a tone
/// holds the rest).
pub const CLASSIFIER_SHARE: f64 = 0.3;

/// Classify what the output holds over a placed tone's span: in each 10 ms block of the span,
/// correlate the samples that were not masked (masked ones carry nothing) with both
/// quadratures of each of the eight DTMF frequencies, add the blocks' powers (10 ms keeps the
/// filters wide enough for a key a few percent off, narrow enough to tell neighbouring rows
/// apart), pick the strongest row and column, and say how clearly they won.
pub fn classify_tone_span(y: &[i16], p: &Placed, silence: i16) -> Classified {
    const KEYS: [[char; 4]; 4] = [
        ['1', '2', '3', 'A'],
        ['4', '5', '6', 'B'],
        ['7', '8', '9', 'C'],
        ['*', '0', '#', 'D'],
    ];
    let freqs: Vec<f64> = ROW_HZ
        .iter()
        .chain(COL_HZ.iter())
        .map(|&f| f as f64)
        .collect();
    let end = (p.start + p.len).min(y.len());
    let block = p.rate as usize / 100;
    // Per frequency: the sum over blocks of |correlation|^2 / n (the energy a sinusoid there
    // would have, A^2 n / 4, for amplitude A over n samples).
    let mut power = [0.0f64; 8];
    let (mut left, mut energy) = (0usize, 0.0f64);
    let mut b0 = p.start.min(end);
    while b0 < end {
        let b1 = (b0 + block).min(end);
        let mut acc = [(0.0f64, 0.0f64); 8];
        let mut n = 0usize;
        for (i, &v) in y.iter().enumerate().take(b1).skip(b0) {
            if v == silence {
                continue;
            }
            n += 1;
            let v = v as f64;
            energy += v * v;
            let t = (i - p.start) as f64 / p.rate as f64;
            for (a, &f) in acc.iter_mut().zip(&freqs) {
                let ph = 2.0 * std::f64::consts::PI * f * t;
                a.0 += v * ph.cos();
                a.1 += v * ph.sin();
            }
        }
        if n > 0 {
            for (pw, (re, im)) in power.iter_mut().zip(acc) {
                *pw += (re * re + im * im) / n as f64;
            }
        }
        left += n;
        b0 = b1;
    }
    if left == 0 {
        return Classified {
            key: None,
            row_margin_db: 0.0,
            col_margin_db: 0.0,
            share: 0.0,
        };
    }
    let pick = |g: &[f64]| {
        let mut idx: Vec<usize> = (0..g.len()).collect();
        idx.sort_by(|&a, &b| g[b].total_cmp(&g[a]));
        let margin = 10.0 * (g[idx[0]].max(1e-30) / g[idx[1]].max(1e-30)).log10();
        (idx[0], margin)
    };
    let (r, rm) = pick(&power[..4]);
    let (c, cm) = pick(&power[4..]);
    // A sinusoid's energy over n samples is A^2 n / 2: twice what its correlation term holds.
    let share = 2.0 * (power[r] + power[4 + c]) / energy.max(1e-30);
    Classified {
        key: Some(KEYS[r][c]),
        row_margin_db: rm,
        col_margin_db: cm,
        share,
    }
}

/// How many of `placed` the classifier reads from `y` (see [`Classified::recovers`]).
pub fn classifier_reads(y: &[i16], placed: &[Placed], silence: i16) -> usize {
    placed
        .iter()
        .filter(|p| classify_tone_span(y, p, silence).recovers(p.digit))
        .count()
}

/// Sum of the powers at the two tone frequencies (matched filter over the span), 8 kHz.
pub fn tone_energy(x: &[i16], fl: f32, fh: f32) -> f64 {
    tone_energy_at(x, fl, fh, RATE as u32)
}

/// [`tone_energy`] over samples at `rate`.
pub fn tone_energy_at(x: &[i16], fl: f32, fh: f32, rate: u32) -> f64 {
    [fl, fh]
        .iter()
        .map(|&f| {
            let w = 2.0 * std::f64::consts::PI * f as f64 / rate as f64;
            let (mut re, mut im) = (0.0, 0.0);
            for (n, &s) in x.iter().enumerate() {
                re += s as f64 * (w * n as f64).cos();
                im -= s as f64 * (w * n as f64).sin();
            }
            re * re + im * im
        })
        .sum()
}

/// Linear value of silence after decoding, per codec.
pub fn silence_linear(codec: Codec) -> i16 {
    match codec {
        Codec::Pcm16 => 0,
        Codec::Pcmu => ulaw_to_linear(0xFF),
        Codec::Pcma => alaw_to_linear(0xD5),
        Codec::Opus => 0,
    }
}

/// Percentile of a sorted slice.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// Run multimon-ng's DTMF decoder over 8 kHz samples; `None` if it is not installed.
pub fn multimon_digits(x: &[i16]) -> Option<String> {
    multimon_digits_at(x, 8000)
}

/// Run multimon-ng's DTMF decoder over samples at `rate` Hz; `None` if it is not installed.
pub fn multimon_digits_at(x: &[i16], rate: u32) -> Option<String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    if Command::new("multimon-ng").arg("-h").output().is_err() {
        return None;
    }
    // multimon-ng reads raw 22050 Hz; upsample linearly (its filters tolerate this and it
    // keeps the test free of a sox dependency).
    if x.is_empty() {
        return Some(String::new());
    }
    let n_out = (x.len() as u64 * 22050 / rate as u64) as usize;
    let mut up = Vec::with_capacity(n_out * 2);
    for i in 0..n_out {
        let t = i as f64 * rate as f64 / 22050.0;
        let k = t.floor() as usize;
        let f = t - k as f64;
        let a = x[k.min(x.len() - 1)] as f64;
        let b = x[(k + 1).min(x.len() - 1)] as f64;
        up.extend_from_slice(&((a + (b - a) * f).round() as i16).to_le_bytes());
    }
    let mut child = Command::new("multimon-ng")
        .args(["-q", "-a", "DTMF", "-t", "raw", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    child.stdin.take().unwrap().write_all(&up).ok()?;
    let out = child.wait_with_output().ok()?;
    let s = String::from_utf8_lossy(&out.stdout);
    Some(
        s.lines()
            .filter_map(|l| l.strip_prefix("DTMF: "))
            .map(|d| d.trim().to_string())
            .collect(),
    )
}

/// Samples inside `tone_masked` spans.
pub fn masked_samples(log: &EventLog) -> u64 {
    log.events
        .iter()
        .map(|e| match *e {
            tonewall::event::Event::ToneMasked {
                start_sample,
                end_sample,
                ..
            } => end_sample - start_sample,
            _ => 0,
        })
        .sum()
}

/// Over-masking from the pipeline's own `tone_masked` spans: for each span, how far it starts
/// before and ends after the tones it covers (ms), and the number of spans that cover no tone.
pub fn over_masking(log: &EventLog, placed: &[Placed]) -> (Vec<f64>, Vec<f64>, usize) {
    let (mut before, mut after, mut stray) = (Vec::new(), Vec::new(), 0);
    let per_ms = placed.first().map_or(8.0, |p| p.rate as f64 / 1000.0);
    for e in &log.events {
        if let tonewall::event::Event::ToneMasked {
            start_sample,
            end_sample,
            ..
        } = *e
        {
            let (a, b) = (start_sample as usize, end_sample as usize);
            let covered: Vec<&Placed> = placed
                .iter()
                .filter(|p| p.start < b && p.start + p.len > a)
                .collect();
            if covered.is_empty() {
                stray += 1;
                continue;
            }
            let first = covered.iter().map(|p| p.start).min().unwrap();
            let last = covered.iter().map(|p| p.start + p.len).max().unwrap();
            before.push(first.saturating_sub(a) as f64 / per_ms);
            after.push(b.saturating_sub(last) as f64 / per_ms);
        }
    }
    (before, after, stray)
}

/// Real recorded speech from the bundled fixture (its first 59 s are prompts from three
/// speakers), as f64 samples in 16-bit scale.
pub fn recorded_speech() -> Vec<f64> {
    let path = format!(
        "{}/sample-audio/speech-music-no-dtmf-8k-pcm16.wav",
        env!("CARGO_MANIFEST_DIR")
    );
    let w = tonewall::wav::Wav::parse(&std::fs::read(&path).expect(&path)).expect(&path);
    w.channel_linear(0)[..8000 * 59]
        .iter()
        .map(|&v| v as f64)
        .collect()
}

/// Mean power of the active parts of a signal (10 ms frames within 30 dB of the loudest),
/// the way speech level is usually quoted.
pub fn active_power(x: &[f64]) -> f64 {
    let frames: Vec<f64> = x
        .chunks(80)
        .map(|c| c.iter().map(|v| v * v).sum::<f64>() / c.len() as f64)
        .collect();
    let max = frames.iter().cloned().fold(0.0, f64::max);
    let active: Vec<f64> = frames.into_iter().filter(|&p| p > max / 1000.0).collect();
    active.iter().sum::<f64>() / active.len().max(1) as f64
}

/// 70 ms tones every 250 ms over recorded speech whose active level is `speech_rel_db`
/// relative to the two-tone power (-10 = speech 10 dB below the tones).
pub fn digits_over_speech(
    speech_rel_db: f64,
    tone_dbm0: f64,
    seed: u64,
) -> (Vec<i16>, Vec<Placed>) {
    digits_over_speech_at(speech_rel_db, tone_dbm0, seed, RATE as u32)
}

/// [`digits_over_speech`] at `rate`: the 8 kHz recording resampled with rubato (level set
/// on the 8 kHz original), the tones generated directly at `rate`, at the same times.
pub fn digits_over_speech_at(
    speech_rel_db: f64,
    tone_dbm0: f64,
    seed: u64,
    rate: u32,
) -> (Vec<i16>, Vec<Placed>) {
    let spec = tonewall::signal::ToneSpec::level(tone_dbm0);
    digits_over_speech_with(speech_rel_db, spec, seed, rate)
}

/// [`digits_over_speech_at`] with tones as `spec` says (level, twist, frequency error).
pub fn digits_over_speech_with(
    speech_rel_db: f64,
    spec: tonewall::signal::ToneSpec,
    seed: u64,
    rate: u32,
) -> (Vec<i16>, Vec<Placed>) {
    let ms = |n: f64| ms_at(n, rate);
    let speech = recorded_speech();
    let gain = (spec.power() * 10f64.powf(speech_rel_db / 10.0) / active_power(&speech)).sqrt();
    let speech: Vec<f64> = if rate == RATE as u32 {
        speech
    } else {
        let s16: Vec<i16> = speech.iter().map(|&v| v as i16).collect();
        resample_between(&s16, RATE as u32, rate)
            .into_iter()
            .map(|v| v as f64)
            .collect()
    };
    let mut x: Vec<f64> = speech.iter().map(|v| v * gain).collect();
    let mut rng = Rng::new(seed);
    let mut placed = Vec::new();
    let mut t = ms(300.0);
    let mut i = 0;
    while t + ms(400.0) < x.len() {
        let c = KEYS.as_bytes()[i % 16] as char;
        add_dtmf(
            &mut x,
            rate,
            t,
            ms(70.0),
            Digit::from_char(c).unwrap(),
            spec,
            &mut rng,
        );
        placed.push(Placed {
            digit: c,
            start: t,
            len: ms(70.0),
            rate,
        });
        t += ms(250.0 + rng.range(0.0, 5.0));
        i += 1;
    }
    (tonewall::signal::to_i16(&x), placed)
}

/// Resample 16-bit audio at `rate` to 8 kHz with the pipeline's own rubato wrapper (its
/// delay removed), for the 8 kHz detector.
pub fn resample_to_8k(x: &[i16], rate: u32) -> Vec<i16> {
    resample_between(x, rate, RATE as u32)
}

/// Resample 16-bit audio from `from` to `to` Hz with the pipeline's rubato wrapper, its delay
/// removed, so sample times line up (same duration in, same duration out).
pub fn resample_between(x: &[i16], from: u32, to: u32) -> Vec<i16> {
    if from == to {
        return x.to_vec();
    }
    let mut rs = tonewall::pipeline::ChunkResampler::between(from, to, 50).unwrap();
    let want = (x.len() as u64 * to as u64 / from as u64) as usize;
    let mut y = Vec::with_capacity(
        want + rs.delay_out() + rs.chunk_in() * to as usize / from as usize + 64,
    );
    let mut take =
        |c: &[f32]| y.extend(c.iter().map(|&v| v.round().clamp(-32768.0, 32767.0) as i16));
    rs.push(x, &mut take).unwrap();
    // Push enough silence that the delayed tail of `x` comes out too.
    let pad = vec![0i16; (rs.delay_out() * from as usize).div_ceil(to as usize) + rs.chunk_in()];
    rs.push(&pad, &mut take).unwrap();
    rs.flush(&mut take).unwrap();
    let d = rs.delay_out().min(y.len());
    y.drain(..d);
    y.truncate(want);
    y
}

/// How a battery signal reaches the detector and masker, as production receives it: 16-bit
/// PCM or G.711 at 8 kHz, or Opus at 48 kHz after an encode/decode round trip with libopus
/// (the project's [`OpusEncoder`](tonewall::codec::OpusEncoder): VoIP application, 20 ms
/// frames, at the given bit rate, as a softphone or browser sends it).
///
/// Detection on the Opus path is the production path for 48 kHz: the whole 48 kHz
/// [`ChannelPipeline`], which resamples to 8 kHz with rubato for the (8 kHz) detector and
/// maps verdicts back to 48 kHz media time with the resampler's delay removed (`delay()`
/// accounts for it on the output side); masking happens on the 48 kHz samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// 8 kHz, through this codec (PCM16, mu-law, A-law).
    Narrow(Codec),
    /// 48 kHz through an Opus round trip at this bit rate (bit/s).
    Opus(u32),
}

/// Bit rates of the Opus round-trip battery (BRIEF 2.1 through Opus; issue 4).
pub const OPUS_BITRATES: [u32; 3] = [16_000, 24_000, 32_000];

/// Every path the battery runs: the three 8 kHz codecs, then Opus at each bit rate (when
/// built with the `opus` feature).
pub fn paths() -> Vec<Path> {
    let mut v: Vec<Path> = CODECS.iter().map(|&c| Path::Narrow(c)).collect();
    if cfg!(feature = "opus") {
        v.extend(OPUS_BITRATES.iter().map(|&b| Path::Opus(b)));
    }
    v
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Path::Narrow(c) => write!(f, "{c:?}"),
            Path::Opus(b) => write!(f, "Opus {} kbit/s", b / 1000),
        }
    }
}

impl Path {
    /// Sample rate of the signal on this path.
    pub fn rate(self) -> u32 {
        match self {
            Path::Narrow(_) => RATE as u32,
            Path::Opus(_) => OPUS_RATE,
        }
    }

    pub fn is_opus(self) -> bool {
        matches!(self, Path::Opus(_))
    }

    /// `n` ms in samples on this path.
    pub fn ms(self, n: f64) -> usize {
        ms_at(n, self.rate())
    }

    /// The burst train of [`train`], generated at this path's rate.
    pub fn train(
        self,
        items: &[(char, f64, f64, ToneSpec)],
        lead_ms: f64,
        rng: &mut Rng,
    ) -> (Vec<f64>, Vec<Placed>) {
        train_at(items, lead_ms, rng, self.rate())
    }

    /// The codec round trip (G.711 encode/decode, or Opus encode/decode aligned by the
    /// encoder's look-ahead so tones stay where they were placed).
    pub fn through(self, x: &[i16]) -> Vec<i16> {
        match self {
            Path::Narrow(c) => through(c, x),
            Path::Opus(b) => opus_round_trip(x, b),
        }
    }

    /// Digits the production detection path reports over `x` (already through the codec).
    /// On the Opus path `declared_ms` includes the resampler's delay (the input the pipeline
    /// had consumed when it declared), and `end_ms` is not known (NaN).
    pub fn detect(self, x: &[i16], cfg: &DetectorConfig) -> Vec<Found> {
        match self {
            Path::Narrow(_) => detect(x, cfg),
            Path::Opus(_) => detect_48k_pipeline(x, cfg),
        }
    }

    /// Mask `x` (already through the codec) with the production pipeline at `lookahead_ms`;
    /// output aligned with the input, plus the events.
    pub fn mask(self, x: &[i16], lookahead_ms: u32) -> (Vec<i16>, EventLog) {
        match self {
            Path::Narrow(c) => mask(x, c, lookahead_ms),
            Path::Opus(_) => {
                let mut log = EventLog::default();
                let y = run_pipeline::<i16>(pcm48_config(lookahead_ms), x.to_vec(), &mut log);
                (y, log)
            }
        }
    }

    /// Linear value of a masked sample on this path.
    pub fn silence(self) -> i16 {
        match self {
            Path::Narrow(c) => silence_linear(c),
            Path::Opus(_) => 0,
        }
    }

    /// multimon-ng's digits over `x` at this path's rate.
    pub fn multimon(self, x: &[i16]) -> Option<String> {
        multimon_digits_at(x, self.rate())
    }
}

/// Opus's RTP clock and decode rate.
pub const OPUS_RATE: u32 = 48_000;

/// The 48 kHz PCM pipeline the Opus leg drives after decoding.
pub fn pcm48_config(lookahead_ms: u32) -> PipelineConfig {
    PipelineConfig {
        codec: Codec::Pcm16,
        rate: OPUS_RATE,
        lookahead_ms,
        mask: mask_config(),
        ..PipelineConfig::default()
    }
}

/// Run the 48 kHz pipeline over `x` with `cfg` as its detector; the digits it hands the
/// secure sink, with the onset and declaration times of their `digit` events.
pub fn detect_48k_pipeline(x: &[i16], cfg: &DetectorConfig) -> Vec<Found> {
    let pc = PipelineConfig {
        detector: *cfg,
        ..pcm48_config(20)
    };
    let mut log = EventLog::default();
    run_pipeline::<i16>(pc, x.to_vec(), &mut log);
    // The detector's decision about detector sample k needs input up to media 6k; the event
    // carries 6k minus the resampler delay. Add it back: latency as the input consumed.
    let lag_ms = resampler_delay_48k() as f64 * 1000.0 / OPUS_RATE as f64;
    let events: Vec<(f64, f64)> = log
        .events
        .iter()
        .filter_map(|e| match *e {
            tonewall::event::Event::Digit {
                start_ms,
                declared_ms,
                ..
            } => Some((start_ms, declared_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(events.len(), log.secure.len());
    log.secure
        .iter()
        .zip(events)
        .map(|(d, (start_ms, declared_ms))| Found {
            digit: d.digit.expose().to_char(),
            start_ms,
            end_ms: f64::NAN,
            declared_ms: declared_ms + lag_ms,
        })
        .collect()
}

/// The 48 to 8 kHz resampler's delay in 48 kHz samples, as the pipeline accounts for it.
pub fn resampler_delay_48k() -> usize {
    let rs = tonewall::pipeline::ChunkResampler::new(OPUS_RATE).unwrap();
    (rs.delay_out() as f64 * OPUS_RATE as f64 / RATE as f64).round() as usize
}

/// Opus encode (20 ms frames) and decode of 48 kHz mono `x` at `bitrate`, the output
/// shifted back by the encoder's look-ahead so it lines up with `x`.
#[cfg(feature = "opus")]
pub fn opus_round_trip(x: &[i16], bitrate: u32) -> Vec<i16> {
    use tonewall::codec::{FrameDecoder, FrameEncoder, OpusDecoder, OpusEncoder};
    let mut enc = OpusEncoder::new(bitrate).unwrap();
    let mut dec = OpusDecoder::new().unwrap();
    let d = enc.delay();
    let n = (x.len() + d).div_ceil(960) * 960;
    let mut padded = x.to_vec();
    padded.resize(n, 0);
    let mut pkt = vec![0u8; enc.max_packet()];
    let mut y = vec![0i16; n];
    for (i, o) in padded.chunks_exact(960).zip(y.chunks_exact_mut(960)) {
        let len = enc.encode(i, &mut pkt).unwrap();
        assert_eq!(dec.decode(&pkt[..len], o).unwrap(), 960);
    }
    y.drain(..d);
    y.truncate(x.len());
    y
}

#[cfg(not(feature = "opus"))]
pub fn opus_round_trip(_: &[i16], _: u32) -> Vec<i16> {
    unreachable!("Opus paths are only listed with the `opus` feature")
}
