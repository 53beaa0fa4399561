//! The detection conformance battery (BRIEF 2.1), on signals generated from the standards
//! and each family also through G.711 mu-law and A-law, and through an Opus encode/decode
//! round trip at 16, 24 and 32 kbit/s (signals generated at 48 kHz, detected by the 48 kHz
//! production pipeline, which resamples to the detector's 8 kHz with rubato and removes the
//! resampler's delay from media times; see [`Path`]). Every test asserts the "must" numbers
//! and prints the measured curve per path (run with `--nocapture` to see it).
//!
//! To keep the added run time to about a minute on two cores, the Opus paths run shorter
//! trains and sweeps: the 1000-burst noise and latency trains at 16 kbit/s only (320 bursts
//! at 24 and 32 kbit/s; see [`reps`]), the S/N curve with 64 bursts, the 21 to 39 ms
//! durations with one pause, and speech at -10/-5 dB only. Every
//! "must" row is still asserted per bit rate, with no tolerance on any path.

mod common;

use common::*;
use tonewall::dtmf::DetectorConfig;
use tonewall::signal::{add_dial_tone, add_white_noise, power, to_i16, Rng, ToneSpec};

fn all16(on: f64, off: f64, spec: ToneSpec) -> Vec<(char, f64, f64, ToneSpec)> {
    KEYS.chars().map(|c| (c, on, off, spec)).collect()
}

fn run(path: Path, items: &[(char, f64, f64, ToneSpec)], seed: u64) -> (String, Vec<Found>) {
    let (s, f, _) = run_placed(path, items, seed);
    (s, f)
}

fn run_placed(
    path: Path,
    items: &[(char, f64, f64, ToneSpec)],
    seed: u64,
) -> (String, Vec<Found>, Vec<Placed>) {
    let mut rng = Rng::new(seed);
    let (x, placed) = path.train(items, 100.0, &mut rng);
    let x = path.through(&to_i16(&x));
    let f = path.detect(&x, &DetectorConfig::default());
    (digits_string(&f), f, placed)
}

/// Tones reported (right key, start within 20 ms) and reports that match no tone. A report
/// of the right key that starts later inside the tone (a late report, see [`late`]) is
/// neither.
fn score(f: &[Found], placed: &[Placed]) -> (usize, usize) {
    let hit = |p: &Placed| {
        f.iter()
            .any(|d| d.digit == p.digit && (d.start_ms - p.start_ms()).abs() < 20.0)
    };
    let hits = placed.iter().filter(|p| hit(p)).count();
    let late = late(f, placed).len();
    (hits, f.len() - (hits + late).min(f.len()))
}

/// Reports of a tone's key that start more than 20 ms into it (its first part failed the
/// strict checks), as (report, tone). They count as missed tones in [`all_reported`].
fn late<'a>(f: &'a [Found], placed: &'a [Placed]) -> Vec<(&'a Found, &'a Placed)> {
    f.iter()
        .filter_map(|d| {
            placed
                .iter()
                .find(|p| {
                    p.digit == d.digit
                        && d.start_ms >= p.start_ms() + 20.0
                        && d.start_ms < p.end_ms()
                })
                .map(|p| (d, p))
        })
        .collect()
}

/// Each tone with the report that matches it (right key, start within 20 ms), in order.
fn matched<'a>(f: &'a [Found], placed: &'a [Placed]) -> Vec<(&'a Found, &'a Placed)> {
    placed
        .iter()
        .filter_map(|p| {
            f.iter()
                .find(|d| d.digit == p.digit && (d.start_ms - p.start_ms()).abs() < 20.0)
                .map(|d| (d, p))
        })
        .collect()
}

/// Whether a train of `placed` tones counts as all reported on `path`.
fn all_reported(f: &[Found], placed: &[Placed]) -> bool {
    score(f, placed) == (placed.len(), 0)
}

/// How many bursts a long train has on `path`: `full` on the 8 kHz paths and on Opus at
/// 16 kbit/s (the hardest bit rate), `opus` at the higher Opus bit rates.
fn reps(path: Path, full: usize, opus: usize) -> usize {
    match path {
        Path::Opus(b) if b > OPUS_BITRATES[0] => opus,
        _ => full,
    }
}

#[test]
fn decodes_160_of_160_at_minus_4_dbm0_50_on_50_off_with_latency() {
    for path in paths() {
        let mut items = Vec::new();
        for _ in 0..10 {
            items.extend(all16(50.0, 50.0, ToneSpec::level(-4.0)));
        }
        let (s, f, placed) = run_placed(path, &items, 1);
        let expect: String = items.iter().map(|i| i.0).collect();
        let (hits, wrong) = score(&f, &placed);
        assert_eq!(s, expect, "{path}");
        assert!(
            all_reported(&f, &placed),
            "{path}: {hits}/160, {wrong} wrong"
        );
        let pairs = matched(&f, &placed);
        let mut lat: Vec<f64> = pairs
            .iter()
            .map(|(d, p)| d.declared_ms - p.start_ms())
            .collect();
        lat.sort_by(f64::total_cmp);
        let onset_err: Vec<f64> = pairs
            .iter()
            .map(|(d, p)| (d.start_ms - p.start_ms()).abs())
            .collect();
        let max_onset_err = onset_err.iter().cloned().fold(0.0, f64::max);
        println!(
            "decode {path}: {hits}/160, {wrong} wrong; latency median {:.1} ms, p95 {:.1} ms, max {:.1} ms; onset estimate error max {:.2} ms",
            pct(&lat, 0.5),
            pct(&lat, 0.95),
            pct(&lat, 1.0),
            max_onset_err
        );
        assert!(pct(&lat, 1.0) <= 40.0, "{path}: latency over 40 ms");
    }
}

#[test]
fn frequency_deviation_accepts_1_5_percent_and_rejects_3_5_percent() {
    for path in paths() {
        let mut curve = String::new();
        for step in -10..=10 {
            let dev = step as f64 * 0.005;
            let mut hits = 0;
            let mut accepted = true;
            for which in 0..2 {
                let mut spec = ToneSpec::level(-4.0);
                if which == 0 {
                    spec.low_dev = dev;
                } else {
                    spec.high_dev = dev;
                }
                let (s, f, placed) = run_placed(path, &all16(60.0, 60.0, spec), 7 + step as u64);
                hits += s.len();
                accepted &= all_reported(&f, &placed);
            }
            curve += &format!(" {:+.1}%:{}/32", dev * 100.0, hits);
            if dev.abs() <= 0.0151 {
                assert!(accepted, "{path} must accept {dev}: {hits}/32");
            }
            if dev.abs() >= 0.0349 {
                assert_eq!(hits, 0, "{path} must reject {dev}");
            }
        }
        println!("freq deviation {path}:{curve}");
    }
}

/// The reject row again through Opus at 16 kbit/s, where SILK's coding noise around a tone
/// pulls the phase-turn estimate toward the key's own frequency: eight more trains of all
/// 16 keys per case (low or high tone, 3.5 % low or high), 512 tones, none reported.
#[test]
fn frequency_deviation_3_5_percent_rejected_through_opus_16_kbits_over_eight_seeds() {
    let Some(path) = paths()
        .into_iter()
        .find(|p| *p == Path::Opus(OPUS_BITRATES[0]))
    else {
        return;
    };
    let mut reported = Vec::new();
    let mut tones = 0;
    for seed in 1..=8u64 {
        for dev in [-0.035, 0.035] {
            for low in [true, false] {
                let mut spec = ToneSpec::level(-4.0);
                if low {
                    spec.low_dev = dev;
                } else {
                    spec.high_dev = dev;
                }
                let (s, _) = run(path, &all16(60.0, 60.0, spec), 1000 * seed + 7);
                tones += s.len();
                if !s.is_empty() {
                    let group = if low { "low" } else { "high" };
                    reported.push(format!("seed {seed}, {group} tone {dev:+}: {}", s.len()));
                }
            }
        }
    }
    println!("freq deviation {path}, eight more seeds: {tones} of 512 tones 3.5 % off reported");
    assert!(reported.is_empty(), "{path}: {}", reported.join("; "));
}

#[test]
fn twist_accepts_8_db_normal_and_4_db_reverse() {
    for path in paths() {
        let mut normal_limit = 0;
        let mut reverse_limit = 0;
        for t in 0..=12 {
            for sign in [1.0, -1.0] {
                let spec = ToneSpec::with_twist(-4.0, sign * t as f64);
                let (s, _) = run(path, &all16(60.0, 60.0, spec), 100 + t);
                let ok = s.len() == 16;
                if sign > 0.0 && ok && normal_limit == t as i32 {
                    normal_limit = t as i32 + 1;
                }
                if sign < 0.0 && ok && reverse_limit == t as i32 {
                    reverse_limit = t as i32 + 1;
                }
            }
        }
        println!(
            "twist {path}: all 16 detected up to {} dB normal, {} dB reverse",
            normal_limit - 1,
            reverse_limit - 1
        );
        assert!(normal_limit > 8, "{path} normal twist");
        assert!(reverse_limit > 4, "{path} reverse twist");
    }
}

#[test]
fn dynamic_range_at_least_35_db() {
    for path in paths() {
        // `floor`: every tone reported from +3 dBm0 down to here.
        let mut floor = 4;
        for level in (-50..=3).rev() {
            let (s, f, placed) =
                run_placed(path, &all16(60.0, 60.0, ToneSpec::level(level as f64)), 200);
            if s.len() == 16 && floor == level + 1 && all_reported(&f, &placed) {
                floor = level;
            }
        }
        println!(
            "level {path}: all 16 detected from +3 down to {floor} dBm0 ({} dB range)",
            3 - floor
        );
        assert!(3 - floor >= 35, "{path} dynamic range");
    }
}

#[test]
fn duration_detects_40_ms_and_never_reports_20_ms() {
    for path in paths() {
        let mut shortest_detected = f64::NAN;
        let mut longest_rejected = 0.0;
        let mut misses = 0;
        for d in 10..=60 {
            // Between 20 and 40 ms nothing is asserted (only the curve is printed): the Opus
            // paths measure it with one pause.
            let pauses: &[f64] = if path.is_opus() && d > 20 && d < 40 {
                &[50.0]
            } else {
                &[40.0, 50.0, 60.0]
            };
            for &pause in pauses {
                let (s, f, placed) =
                    run_placed(path, &all16(d as f64, pause, ToneSpec::level(-4.0)), d);
                let n = s.len();
                if n > 0 && shortest_detected.is_nan() {
                    shortest_detected = d as f64;
                }
                if n == 0 {
                    longest_rejected = d as f64;
                }
                if d >= 40 {
                    if n < 16 {
                        misses += 16 - n;
                    }
                    assert!(
                        all_reported(&f, &placed),
                        "{path} {d} ms tones, {pause} ms pause: {s}"
                    );
                }
                if d <= 20 {
                    assert_eq!(n, 0, "{path} {d} ms tones reported: {s}");
                }
            }
        }
        println!(
            "duration {path}: shortest tone detected {shortest_detected} ms, longest never reported {longest_rejected} ms; of 16 x 63 tones of 40 to 60 ms, {misses} not reported"
        );
    }
}

#[test]
fn interruptions_up_to_10_ms_are_bridged_and_40_ms_gaps_separate() {
    for path in paths() {
        let spec = ToneSpec::level(-4.0);
        let mut separated = 0;
        for gap in [2.0, 5.0, 10.0] {
            let items: Vec<_> = KEYS
                .chars()
                .flat_map(|c| [(c, 50.0, gap, spec), (c, 50.0, 80.0, spec)])
                .collect();
            let (s, _) = run(path, &items, 300);
            assert_eq!(s, KEYS, "{path} gap {gap} ms not bridged");
        }
        for gap in [40.0, 50.0, 60.0] {
            let items: Vec<_> = KEYS.chars().map(|c| (c, 50.0, gap, spec)).collect();
            let items: Vec<_> = items.iter().flat_map(|&i| [i, i]).collect();
            let (s, f, placed) = run_placed(path, &items, 301);
            let expect: String = KEYS.chars().flat_map(|c| [c, c]).collect();
            assert_eq!(s, expect, "{path} gap {gap} ms not separated");
            assert!(
                all_reported(&f, &placed),
                "{path} gap {gap} ms not separated: {s}"
            );
            separated += score(&f, &placed).0;
        }
        println!("pauses {path}: 2/5/10 ms interruptions bridged; 40/50/60 ms gaps: {separated}/96 tones reported separately");
    }
}

fn noisy_bursts(path: Path, snr_db: f64, bursts: usize, seed: u64) -> (usize, usize) {
    let mut rng = Rng::new(seed);
    let items: Vec<_> = (0..bursts)
        .map(|i| {
            let c = KEYS.as_bytes()[i % 16] as char;
            (c, 50.0, 50.0, ToneSpec::level(-4.0))
        })
        .collect();
    let (mut x, placed) = path.train(&items, 100.0, &mut rng);
    // S/N in the 0 to 4 kHz band the detector sees (at 48 kHz the noise is wider).
    let noise = ToneSpec::level(-4.0).power() / 10f64.powf(snr_db / 10.0);
    add_band_noise(&mut x, noise, path.rate(), &mut rng);
    let x = path.through(&to_i16(&x));
    let f = path.detect(&x, &DetectorConfig::default());
    // Tones reported (matched by key and time), and reports (an extra one shows as n > ok).
    (score(&f, &placed).0, f.len())
}

#[test]
fn white_noise_1000_bursts_all_decoded_at_26_db() {
    for path in paths() {
        let bursts = reps(path, 1000, 320);
        let (ok, n) = noisy_bursts(path, 26.0, bursts, 400);
        assert_eq!((ok, n), (bursts, bursts), "{path} at S/N 26 dB");
        let mut curve = String::new();
        let mut best = 26;
        let sweep = if path.is_opus() { 64 } else { 200 };
        for snr in (6..=30).rev().step_by(2) {
            let (ok, n) = noisy_bursts(path, snr as f64, sweep, 401 + snr);
            let extra = if n > ok {
                format!("+{} other", n - ok)
            } else {
                String::new()
            };
            curve += &format!(" {snr}dB:{ok}/{sweep}{extra}");
            if ok == sweep && n == sweep && best == snr + 2 {
                best = snr;
            }
        }
        println!(
            "noise {path}: {bursts}/{bursts} at 26 dB; all of {sweep} decoded down to {best} dB;{curve}"
        );
    }
}

#[test]
fn dial_tone_10_db_below_does_not_stop_decoding() {
    for path in paths() {
        let mut best = -99.0;
        for rel in [-10.0, -6.0, -3.0, 0.0, 3.0, 6.0, 9.0, 12.0] {
            let mut rng = Rng::new(500);
            let items = all16(60.0, 60.0, ToneSpec::level(-10.0));
            let (mut x, _) = path.train(&items, 100.0, &mut rng);
            add_dial_tone(&mut x, path.rate(), -10.0 + rel, &mut rng);
            let x = path.through(&to_i16(&x));
            let s = digits_string(&path.detect(&x, &DetectorConfig::default()));
            if rel <= -10.0 {
                assert_eq!(s, KEYS, "{path} with dial tone {rel} dB");
            }
            if s == KEYS {
                best = rel;
            }
        }
        println!("dial tone {path}: all 16 decoded with dial tone up to {best:+} dB relative");
    }
}

#[test]
fn white_noise_alone_produces_no_digit() {
    let mut rng = Rng::new(600);
    let mut x = vec![0.0; 8000 * 60];
    add_white_noise(&mut x, tonewall::signal::power_for_dbm0(-20.0), &mut rng);
    assert!(power(&x) > 0.0);
    let f = detect(&to_i16(&x), &DetectorConfig::default());
    assert!(f.is_empty(), "false digits in noise: {}", f.len());
}

#[test]
fn reporting_latency_at_random_alignment() {
    // 1000 tones of 60 ms at random offsets against the 5 ms decision grid.
    for path in paths() {
        let mut rng = Rng::new(700);
        let tones = reps(path, 1000, 320);
        let items: Vec<_> = (0..tones)
            .map(|i| {
                let c = KEYS.as_bytes()[i % 16] as char;
                (
                    c,
                    60.0,
                    60.0 + rng.range(0.0, 5.0),
                    ToneSpec::level(rng.range(-25.0, -4.0)),
                )
            })
            .collect();
        let (x, placed) = path.train(&items, 100.0, &mut rng);
        let x = path.through(&to_i16(&x));
        let f = path.detect(&x, &DetectorConfig::default());
        let (hits, wrong) = score(&f, &placed);
        assert!(
            all_reported(&f, &placed),
            "{path}: {hits} of {tones}, {wrong} wrong"
        );
        let pairs = matched(&f, &placed);
        let mut lat: Vec<f64> = pairs
            .iter()
            .map(|(d, p)| d.declared_ms - p.start_ms())
            .collect();
        lat.sort_by(f64::total_cmp);
        // The Opus path's pipeline reports no tone end (NaN): only starts are compared there.
        let mut err: Vec<f64> = pairs
            .iter()
            .flat_map(|(d, p)| {
                [
                    (d.start_ms - p.start_ms()).abs(),
                    (d.end_ms - p.end_ms()).abs(),
                ]
            })
            .filter(|e| !e.is_nan())
            .collect();
        err.sort_by(f64::total_cmp);
        println!(
            "latency {path} ({hits} of {tones} tones reported{}): tone start to digit declared median {:.1} ms, p95 {:.1} ms, max {:.1} ms; start/end estimate error median {:.2} ms, max {:.2} ms",
            late(&f, &placed)
                .iter()
                .map(|(d, p)| format!(
                    "; 1 late: onset {:.1} ms into the tone, declared after {:.1} ms",
                    d.start_ms - p.start_ms(),
                    d.declared_ms - p.start_ms()
                ))
                .collect::<String>(),
            pct(&lat, 0.5),
            pct(&lat, 0.95),
            pct(&lat, 1.0),
            pct(&err, 0.5),
            pct(&err, 1.0)
        );
        // A tone declared after more than 40 ms fails the row like a missed one. Through Opus
        // at 16 kbit/s 3 of these 1,000 were (40.1 to 40.6 ms) until a clean strict window
        // could declare on its own (`single_window_energy_ratio`).
        let slow = lat.iter().filter(|&&l| l > 40.0).count();
        println!("latency {path}: {slow} tones declared after more than 40 ms");
        assert!(
            hits == tones && slow == 0,
            "{path}: {slow} tones declared after more than 40 ms, {} not reported",
            tones - hits
        );
    }
}

#[test]
fn digits_over_recorded_speech_all_detected_with_speech_10_db_below() {
    for path in paths() {
        let mut curve = String::new();
        // One minute of speech per level: the Opus paths skip the easy -15 dB point.
        let levels: &[f64] = if path.is_opus() {
            &[-10.0, -5.0]
        } else {
            &[-15.0, -10.0, -5.0, 0.0]
        };
        for &rel in levels {
            let (x, placed) = digits_over_speech_at(rel, -10.0, 800, path.rate());
            let x = path.through(&x);
            let f = path.detect(&x, &DetectorConfig::default());
            let expect: String = placed.iter().map(|p| p.digit).collect();
            let got = digits_string(&f);
            // Match by time: a digit counts if it is the right key and starts within 20 ms.
            let hit = |p: &Placed| {
                f.iter()
                    .any(|d| d.digit == p.digit && (d.start_ms - p.start_ms()).abs() < 20.0)
            };
            let correct = placed.iter().filter(|p| hit(p)).count();
            let wrong = f.len() - correct.min(f.len());
            curve += &format!(
                " speech {rel:+} dB: {correct}/{} detected, {wrong} other reports;",
                placed.len()
            );
            // Through Opus at 16 kbit/s one tone was reported 24 ms late until a steady, clear
            // pair could pass on less of its window (`steady_min_energy_ratio`).
            if rel <= -10.0 {
                assert_eq!(got, expect, "{path} speech {rel} dB");
                assert_eq!(
                    correct,
                    placed.len(),
                    "{path} speech {rel} dB: {correct} in time"
                );
            }
        }
        println!("digits over speech {path}:{curve}");
    }
}
