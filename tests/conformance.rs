//! The detection conformance battery (BRIEF 2.1), on signals generated from the standards
//! and each family also through G.711 mu-law and A-law. Every test asserts the "must"
//! numbers and prints the measured curve (run with `--nocapture` to see it).

mod common;

use common::*;
use tonewall::codec::Codec;
use tonewall::dtmf::DetectorConfig;
use tonewall::signal::{add_dial_tone, add_white_noise, power, to_i16, Rng, ToneSpec};

fn all16(on: f64, off: f64, spec: ToneSpec) -> Vec<(char, f64, f64, ToneSpec)> {
    KEYS.chars().map(|c| (c, on, off, spec)).collect()
}

fn run(codec: Codec, items: &[(char, f64, f64, ToneSpec)], seed: u64) -> (String, Vec<Found>) {
    let mut rng = Rng::new(seed);
    let (x, _) = train(items, 100.0, &mut rng);
    let x = through(codec, &to_i16(&x));
    let f = detect(&x, &DetectorConfig::default());
    (digits_string(&f), f)
}

#[test]
fn decodes_160_of_160_at_minus_4_dbm0_50_on_50_off_with_latency() {
    for codec in CODECS {
        let mut items = Vec::new();
        for _ in 0..10 {
            items.extend(all16(50.0, 50.0, ToneSpec::level(-4.0)));
        }
        let mut rng = Rng::new(1);
        let (x, placed) = train(&items, 100.0, &mut rng);
        let x = through(codec, &to_i16(&x));
        let f = detect(&x, &DetectorConfig::default());
        let expect: String = items.iter().map(|i| i.0).collect();
        assert_eq!(digits_string(&f), expect, "{codec:?}");
        let mut lat: Vec<f64> = f
            .iter()
            .zip(&placed)
            .map(|(d, p)| d.declared_ms - p.start as f64 / 8.0)
            .collect();
        lat.sort_by(f64::total_cmp);
        let onset_err: Vec<f64> = f
            .iter()
            .zip(&placed)
            .map(|(d, p)| (d.start_ms - p.start as f64 / 8.0).abs())
            .collect();
        let max_onset_err = onset_err.iter().cloned().fold(0.0, f64::max);
        println!(
            "decode {codec:?}: 160/160; latency median {:.1} ms, p95 {:.1} ms, max {:.1} ms; onset estimate error max {:.2} ms",
            pct(&lat, 0.5),
            pct(&lat, 0.95),
            pct(&lat, 1.0),
            max_onset_err
        );
        assert!(pct(&lat, 1.0) <= 40.0, "latency over 40 ms");
    }
}

#[test]
fn frequency_deviation_accepts_1_5_percent_and_rejects_3_5_percent() {
    for codec in CODECS {
        let mut curve = String::new();
        for step in -10..=10 {
            let dev = step as f64 * 0.005;
            let mut hits = 0;
            for which in 0..2 {
                let mut spec = ToneSpec::level(-4.0);
                if which == 0 {
                    spec.low_dev = dev;
                } else {
                    spec.high_dev = dev;
                }
                let (s, _) = run(codec, &all16(60.0, 60.0, spec), 7 + step as u64);
                hits += s.len();
            }
            curve += &format!(" {:+.1}%:{}/32", dev * 100.0, hits);
            if dev.abs() <= 0.0151 {
                assert_eq!(hits, 32, "{codec:?} must accept {dev}");
            }
            if dev.abs() >= 0.0349 {
                assert_eq!(hits, 0, "{codec:?} must reject {dev}");
            }
        }
        println!("freq deviation {codec:?}:{curve}");
    }
}

#[test]
fn twist_accepts_8_db_normal_and_4_db_reverse() {
    for codec in CODECS {
        let mut normal_limit = 0;
        let mut reverse_limit = 0;
        for t in 0..=12 {
            for sign in [1.0, -1.0] {
                let spec = ToneSpec::with_twist(-4.0, sign * t as f64);
                let (s, _) = run(codec, &all16(60.0, 60.0, spec), 100 + t);
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
            "twist {codec:?}: all 16 detected up to {} dB normal, {} dB reverse",
            normal_limit - 1,
            reverse_limit - 1
        );
        assert!(normal_limit > 8, "{codec:?} normal twist");
        assert!(reverse_limit > 4, "{codec:?} reverse twist");
    }
}

#[test]
fn dynamic_range_at_least_35_db() {
    for codec in CODECS {
        let mut floor = 4;
        for level in (-50..=3).rev() {
            let (s, _) = run(
                codec,
                &all16(60.0, 60.0, ToneSpec::level(level as f64)),
                200,
            );
            if s.len() == 16 && floor == level + 1 {
                floor = level;
            }
        }
        println!(
            "level {codec:?}: all 16 detected from +3 down to {floor} dBm0 ({} dB range)",
            3 - floor
        );
        assert!(3 - floor >= 35, "{codec:?} dynamic range");
    }
}

#[test]
fn duration_detects_40_ms_and_never_reports_20_ms() {
    for codec in CODECS {
        let mut shortest_detected = f64::NAN;
        let mut longest_rejected = 0.0;
        for d in 10..=60 {
            for pause in [40.0, 50.0, 60.0] {
                let (s, _) = run(codec, &all16(d as f64, pause, ToneSpec::level(-4.0)), d);
                let n = s.len();
                if n > 0 && shortest_detected.is_nan() {
                    shortest_detected = d as f64;
                }
                if n == 0 {
                    longest_rejected = d as f64;
                }
                if d >= 40 {
                    assert_eq!(n, 16, "{codec:?} {d} ms tones, {pause} ms pause: {s}");
                }
                if d <= 20 {
                    assert_eq!(n, 0, "{codec:?} {d} ms tones reported: {s}");
                }
            }
        }
        println!(
            "duration {codec:?}: shortest tone detected {shortest_detected} ms, longest never reported {longest_rejected} ms"
        );
    }
}

#[test]
fn interruptions_up_to_10_ms_are_bridged_and_40_ms_gaps_separate() {
    for codec in CODECS {
        let spec = ToneSpec::level(-4.0);
        for gap in [2.0, 5.0, 10.0] {
            let items: Vec<_> = KEYS
                .chars()
                .flat_map(|c| [(c, 50.0, gap, spec), (c, 50.0, 80.0, spec)])
                .collect();
            let (s, _) = run(codec, &items, 300);
            assert_eq!(s, KEYS, "{codec:?} gap {gap} ms not bridged");
        }
        for gap in [40.0, 50.0, 60.0] {
            let items: Vec<_> = KEYS.chars().map(|c| (c, 50.0, gap, spec)).collect();
            let items: Vec<_> = items.iter().flat_map(|&i| [i, i]).collect();
            let (s, _) = run(codec, &items, 301);
            let expect: String = KEYS.chars().flat_map(|c| [c, c]).collect();
            assert_eq!(s, expect, "{codec:?} gap {gap} ms not separated");
        }
        println!("pauses {codec:?}: 2/5/10 ms interruptions bridged, 40/50/60 ms gaps separate");
    }
}

fn noisy_bursts(codec: Codec, snr_db: f64, bursts: usize, seed: u64) -> (usize, usize) {
    let mut rng = Rng::new(seed);
    let items: Vec<_> = (0..bursts)
        .map(|i| {
            let c = KEYS.as_bytes()[i % 16] as char;
            (c, 50.0, 50.0, ToneSpec::level(-4.0))
        })
        .collect();
    let (mut x, _) = train(&items, 100.0, &mut rng);
    let noise = ToneSpec::level(-4.0).power() / 10f64.powf(snr_db / 10.0);
    add_white_noise(&mut x, noise, &mut rng);
    let x = through(codec, &to_i16(&x));
    let f = detect(&x, &DetectorConfig::default());
    let expect: Vec<char> = items.iter().map(|i| i.0).collect();
    // Count correct digits in order (an extra or missing digit shows as an error).
    let got: Vec<char> = f.iter().map(|d| d.digit).collect();
    let correct = got.iter().zip(&expect).filter(|(a, b)| a == b).count();
    (correct, got.len())
}

#[test]
fn white_noise_1000_bursts_all_decoded_at_26_db() {
    for codec in CODECS {
        let (ok, n) = noisy_bursts(codec, 26.0, 1000, 400);
        assert_eq!((ok, n), (1000, 1000), "{codec:?} at S/N 26 dB");
        let mut curve = String::new();
        let mut best = 26;
        for snr in (6..=30).rev().step_by(2) {
            let (ok, n) = noisy_bursts(codec, snr as f64, 200, 401 + snr);
            curve += &format!(" {snr}dB:{ok}/{n}");
            if ok == 200 && n == 200 && best == snr + 2 {
                best = snr;
            }
        }
        println!(
            "noise {codec:?}: 1000/1000 at 26 dB; all of 200 decoded down to {best} dB;{curve}"
        );
    }
}

#[test]
fn dial_tone_10_db_below_does_not_stop_decoding() {
    for codec in CODECS {
        let mut best = -99.0;
        for rel in [-10.0, -6.0, -3.0, 0.0, 3.0, 6.0, 9.0, 12.0] {
            let mut rng = Rng::new(500);
            let items = all16(60.0, 60.0, ToneSpec::level(-10.0));
            let (mut x, _) = train(&items, 100.0, &mut rng);
            add_dial_tone(&mut x, 8000, -10.0 + rel, &mut rng);
            let x = through(codec, &to_i16(&x));
            let s = digits_string(&detect(&x, &DetectorConfig::default()));
            if rel <= -10.0 {
                assert_eq!(s, KEYS, "{codec:?} with dial tone {rel} dB");
            }
            if s == KEYS {
                best = rel;
            }
        }
        println!("dial tone {codec:?}: all 16 decoded with dial tone up to {best:+} dB relative");
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
    for codec in CODECS {
        let mut rng = Rng::new(700);
        let items: Vec<_> = (0..1000)
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
        let (x, placed) = train(&items, 100.0, &mut rng);
        let x = through(codec, &to_i16(&x));
        let f = detect(&x, &DetectorConfig::default());
        assert_eq!(f.len(), 1000, "{codec:?}");
        let mut lat: Vec<f64> = f
            .iter()
            .zip(&placed)
            .map(|(d, p)| d.declared_ms - p.start as f64 / 8.0)
            .collect();
        lat.sort_by(f64::total_cmp);
        let mut err: Vec<f64> = f
            .iter()
            .zip(&placed)
            .flat_map(|(d, p)| {
                [
                    (d.start_ms - p.start as f64 / 8.0).abs(),
                    (d.end_ms - (p.start + p.len) as f64 / 8.0).abs(),
                ]
            })
            .collect();
        err.sort_by(f64::total_cmp);
        println!(
            "latency {codec:?}: tone start to digit declared median {:.1} ms, p95 {:.1} ms, max {:.1} ms; start/end estimate error median {:.2} ms, max {:.2} ms",
            pct(&lat, 0.5),
            pct(&lat, 0.95),
            pct(&lat, 1.0),
            pct(&err, 0.5),
            pct(&err, 1.0)
        );
        assert!(pct(&lat, 1.0) <= 40.0);
    }
}

#[test]
fn digits_over_recorded_speech_all_detected_with_speech_10_db_below() {
    for codec in CODECS {
        let mut curve = String::new();
        for rel in [-15.0, -10.0, -5.0, 0.0] {
            let (x, placed) = digits_over_speech(rel, -10.0, 800);
            let x = through(codec, &x);
            let f = detect(&x, &DetectorConfig::default());
            let expect: String = placed.iter().map(|p| p.digit).collect();
            let got = digits_string(&f);
            // Match by time: a digit counts if it is the right key and starts within 20 ms.
            let hit = |p: &Placed| {
                f.iter()
                    .any(|d| d.digit == p.digit && (d.start_ms - p.start as f64 / 8.0).abs() < 20.0)
            };
            let correct = placed.iter().filter(|p| hit(p)).count();
            let wrong = f.len() - correct.min(f.len());
            curve += &format!(
                " speech {rel:+} dB: {correct}/{} detected, {wrong} other reports;",
                placed.len()
            );
            if rel <= -10.0 {
                assert_eq!(got, expect, "{codec:?} speech {rel} dB");
            }
        }
        println!("digits over speech {codec:?}:{curve}");
    }
}
