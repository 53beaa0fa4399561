//! Talk-off over real recorded speech and music with no DTMF (BRIEF 2.1): Debian's Asterisk
//! prompt sets (English, French, Italian speakers) and its hold-music package, about 1.6
//! hours, at 8 kHz (the share masked through mu-law, A-law and as 16-bit PCM) and, with the
//! `opus` feature, on the 48 kHz path with no codec and through Opus at 16, 24 and
//! 32 kbit/s. No digit may be reported; the share masked is printed and bounded. `.ci/run`
//! installs the packages; without them (and outside CI) the test says so and skips.

mod common;

use common::*;
use tonewall::codec::Codec;
use tonewall::dtmf::DetectorConfig;
#[cfg(feature = "opus")]
use tonewall::event::EventLog;
use tonewall::wav::Wav;

/// Where Debian's sound packages put the prompts: `asterisk-core-sounds-en-wav` installs
/// them under the speaker's name (`en_US_f_Allison`, `fr_CA_f_June`, `it_IT_m_Carlo`), and
/// the bare `en`/`fr`/`it` links come only with the full asterisk package, so every folder
/// named for the language is looked at.
const SOUNDS: &str = "/usr/share/asterisk/sounds";
const CORPORA: [(&str, &str); 4] = [
    ("speech en", "en"),
    ("speech fr", "fr"),
    ("speech it", "it"),
    ("music", "/usr/share/asterisk/moh"),
];

/// The folders of one corpus: an absolute path as it is, or the language's prompt folders.
fn corpus_dirs(which: &str) -> Vec<std::path::PathBuf> {
    if which.starts_with('/') {
        return vec![which.into()];
    }
    let mut dirs: Vec<_> = std::fs::read_dir(SOUNDS)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n == which || n.strip_prefix(which).is_some_and(|r| r.starts_with('_'))
            })
        })
        .collect();
    dirs.sort();
    // `en` may be a link to `en_US_f_Allison`: read each real folder once.
    dirs.dedup_by_key(|p| std::fs::canonicalize(&*p).unwrap_or_else(|_| p.clone()));
    dirs
}

/// One corpus at 8 kHz: its recordings one after another, and where each begins.
struct Corpus {
    x: Vec<i16>,
    /// Each recording's file name and first sample, in order.
    files: Vec<(String, usize)>,
}

fn load(which: &str) -> Corpus {
    let mut paths: Vec<_> = corpus_dirs(which).iter().flat_map(|d| walk(d)).collect();
    paths.sort();
    let mut all = Vec::new();
    let mut files = Vec::new();
    for f in paths {
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        let Ok(w) = Wav::parse(&bytes) else { continue };
        if w.rate != 8000 {
            continue;
        }
        let name = f
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        files.push((name, all.len()));
        all.extend(w.channel_linear(0));
        // A short gap between files, as between prompts on a call.
        all.extend(std::iter::repeat_n(0, 800));
    }
    Corpus { x: all, files }
}

/// The recordings that lost the most to masking, most first: `top` of them with the seconds
/// masked in each and their share of all that was masked. `per_sample` is the stream's rate
/// over 8 kHz. A corpus figure is a sum over hundreds of recordings; this says whether it is
/// spread over speech or comes from a few. Measured: a 16 s monkey-screech effect in every
/// prompt set (`tt-monkeys.wav`, screeches at 800 to 970 Hz with their octaves, read as keys
/// of the 1633 Hz column and as `*`) holds 36 to 41 % of what English and French lose at 0 ms
/// and 42 to 83 % at 10 and 20 ms, and half of Italian's through Opus 32 kbit/s at 10 ms;
/// one track (`macroform-cold_day.wav`) holds half or more of the hold music's.
fn most_masked(
    log: &tonewall::event::EventLog,
    files: &[(String, usize)],
    per_sample: u64,
    top: usize,
) -> String {
    let mut masked = vec![0u64; files.len()];
    for e in &log.events {
        if let tonewall::event::Event::ToneMasked {
            start_sample,
            end_sample,
            ..
        } = *e
        {
            for t in start_sample..end_sample {
                let at = (t / per_sample) as usize;
                let i = files
                    .partition_point(|&(_, first)| first <= at)
                    .saturating_sub(1);
                if let Some(m) = masked.get_mut(i) {
                    *m += 1;
                }
            }
        }
    }
    let total = masked.iter().sum::<u64>().max(1);
    let mut order: Vec<usize> = (0..files.len()).filter(|&i| masked[i] > 0).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(masked[i]));
    let rate = (8000 * per_sample) as f64;
    let named: Vec<String> = order
        .iter()
        .take(top)
        .map(|&i| {
            format!(
                "{} {:.2} s ({:.0} %)",
                files[i].0,
                masked[i] as f64 / rate,
                masked[i] as f64 / total as f64 * 100.0
            )
        })
        .collect();
    if named.is_empty() {
        "nothing".to_string()
    } else {
        named.join(", ")
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else if p.extension().is_some_and(|x| x == "wav") {
                out.push(p);
            }
        }
    }
    out
}

/// Share of a corpus the 8 kHz path may mask, per look-ahead. BRIEF 2.2: under 0.1 %. Met
/// with 20 ms of look-ahead on every corpus and codec (0.026 to 0.075 %, 0.020 to 0.072 %
/// before a key press off its frequencies under speech was masked on its steadiest tone,
/// detector.rs `LOOSE_RUN`; the hold music 0.026 to 0.031 %, which was 0.148 % as 16-bit PCM and 0.271 % as A-law while the masker
/// measured purity above a background estimate that climbs toward music with no pauses, see
/// `Detector::subtract_background`).
///
/// Met with 10 ms of look-ahead too (0.036 to 0.087 %, Italian the most; 0.036 to 0.085 %
/// before that rule; 0.032 to 0.083 %
/// before a pair through the gate could be masked at once 1.2 % off its keys; 0.034 to 0.077 %
/// with the single-window shares at 0.7, 0.23 % before a tone-like window waited for the
/// next sub-block there). NOT MET with none (0.18 to 0.55 %; 0.17 to 0.53 % while 2.5 ms
/// of a possible head were left out of the mask), where each frame tail that may hold a key
/// press's onset is masked speculatively. Bounded at what was measured, rounded up.
fn share_limit_8k(lookahead_ms: u32) -> f64 {
    match lookahead_ms {
        10.. => 0.1,
        _ => 0.6,
    }
}

/// One corpus at 8 kHz, or `None` where its package is not installed (which fails in CI).
fn corpus(name: &str, dir: &str) -> Option<Corpus> {
    let x = load(dir);
    if x.x.is_empty() {
        assert!(
            std::env::var("CI").is_err(),
            "{name} ({dir} under {SOUNDS}) missing in CI"
        );
        eprintln!("{name}: {dir} not installed, skipped");
        return None;
    }
    Some(x)
}

#[test]
fn no_false_digit_on_hours_of_real_speech_and_music() {
    let mut total_s = 0.0;
    let mut failures = Vec::new();
    for (name, dir) in CORPORA {
        let Some(Corpus { x, files }) = corpus(name, dir) else {
            continue;
        };
        let secs = x.len() as f64 / 8000.0;
        total_s += secs;
        let found = detect(&x, &DetectorConfig::default());
        let sensitive = detect(&x, &DetectorConfig::most_sensitive()).len();
        let mut line = format!(
            "talk-off {name}: {:.1} min, {} digits reported ({} at the most sensitive setting)",
            secs / 60.0,
            found.len(),
            sensitive
        );
        let mut most = format!("talk-off {name}, most masked as mu-law:");
        for codec in [Codec::Pcmu, Codec::Pcma, Codec::Pcm16] {
            line += &format!("; masked, {codec:?}:");
            for la in [0, 10, 20] {
                let (_, log) = mask(&x, codec, la);
                let share = masked_samples(&log) as f64 / x.len() as f64 * 100.0;
                line += &format!(" {share:.3} % at {la} ms");
                if share >= share_limit_8k(la) {
                    failures.push(format!("{name} {codec:?} la={la}: {share:.3} % masked"));
                }
                if codec == Codec::Pcmu {
                    most += &format!(" {la} ms: {};", most_masked(&log, &files, 1, 2));
                }
            }
        }
        println!("{line}");
        println!("{most}");
        assert!(found.is_empty(), "{name}: {} false digits", found.len());
    }
    println!("talk-off corpus total {:.1} min", total_s / 60.0);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Talk-off through Opus (BRIEF 2.1's codec row: every row holds "through G.711 mu-law and
/// A-law, and Opus"; issue 4): the same corpus resampled to 48 kHz and sent through an Opus
/// encode/decode round trip at 16, 24 and 32 kbit/s, as a softphone or browser would carry
/// these prompts, then detected and masked by the 48 kHz pipeline exactly as an Opus caller
/// leg hands it decoded audio (one thread per bit rate, one corpus at a time to keep memory
/// flat). No digit may be reported; the share masked is printed and bounded like the 8 kHz
/// one.
#[cfg(feature = "opus")]
#[test]
fn no_false_digit_through_opus_on_hours_of_real_speech_and_music() {
    let mut failures = Vec::new();
    for (name, dir) in CORPORA {
        let Some(Corpus { x, files }) = corpus(name, dir) else {
            continue;
        };
        let x48 = resample_between(&x, 8000, OPUS_RATE);
        drop(x);
        // No codec (48 kHz PCM as a WHIP or L16 leg may hand it over), then each bit rate.
        let mut legs: Vec<Option<Path>> = vec![None];
        legs.extend(paths().into_iter().filter(|p| p.is_opus()).map(Some));
        let lines: Vec<(String, Vec<String>)> = std::thread::scope(|s| {
            let runs: Vec<_> = legs
                .iter()
                .map(|&path| {
                    let (x48, files) = (&x48, &files);
                    s.spawn(move || talk_off_48k(name, path, x48, files))
                })
                .collect();
            runs.into_iter()
                .map(|h| h.join().expect("talk-off thread"))
                .collect()
        });
        for (line, f) in lines {
            println!("{line}");
            failures.extend(f);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// One corpus on the 48 kHz path, with no codec (`None`) or through one Opus bit rate: the
/// printed line and what failed.
#[cfg(feature = "opus")]
fn talk_off_48k(
    name: &str,
    path: Option<Path>,
    x48: &[i16],
    files: &[(String, usize)],
) -> (String, Vec<String>) {
    let mut failures = Vec::new();
    let (leg, xin) = match path {
        Some(p) => (p.to_string(), p.through(x48)),
        None => ("48 kHz PCM".to_string(), x48.to_vec()),
    };
    let secs = xin.len() as f64 / OPUS_RATE as f64;
    let found = detect_48k_pipeline(&xin, &DetectorConfig::default()).len();
    let sensitive = detect_48k_pipeline(&xin, &DetectorConfig::most_sensitive()).len();
    if found > 0 {
        failures.push(format!("{name} {leg}: {found} false digits"));
    }
    let mut line = format!(
        "talk-off {name} {leg}: {:.1} min, {found} digits reported ({sensitive} at the most sensitive setting); masked:",
        secs / 60.0
    );
    let mut most = format!("talk-off {name} {leg}, most masked:");
    for la in [0, 10, 20] {
        let mut log = EventLog::default();
        run_pipeline::<i16>(pcm48_config(la), xin.clone(), &mut log);
        let share = masked_samples(&log) as f64 / xin.len() as f64 * 100.0;
        line += &format!(" {share:.3} % at {la} ms");
        if share >= share_limit_48k(la) {
            failures.push(format!("{name} {leg} la={la}: {share:.3} % masked"));
        }
        let per_sample = (OPUS_RATE / 8000) as u64;
        most += &format!(" {la} ms: {};", most_masked(&log, files, per_sample, 2));
    }
    (format!("{line}\n{most}"), failures)
}

/// Share of a corpus the 48 kHz path may mask, with no codec or through Opus. BRIEF
/// 2.2: under 0.1 %. Met with 20 ms of look-ahead on every corpus (English 0.026 to 0.040 %,
/// French 0.026 to 0.039 %, Italian 0.078 to 0.095 %, hold music 0.022 to 0.039 %, 0.022 to
/// 0.038 % before a loose run could go on to a neighbouring key; English
/// 0.026 to 0.038 % and Italian 0.075 to 0.095 % before a run could hold on a tone jittering
/// about a centre near its key, detector.rs `Detector::loose`; English
/// 0.018 to 0.026 %, Italian to 0.085 % and the music 0.015 to 0.035 % before a key press off
/// its frequencies under speech was masked on its steadiest tone, detector.rs
/// `LOOSE_RUN_RESAMPLED`; the music
/// was 0.135 to 0.169 % while purity was measured above a background estimate at every
/// look-ahead, 0.728 to 0.761 % before `Detector::keyed`). Met with 10 ms too (English and
/// French 0.032 to 0.040 %, 0.028 to 0.039 % before a loose run could hold there on a pair
/// jittering about its keys; the hold music 0.049 to 0.080 %, Italian 0.071 to 0.096 %, the
/// most through Opus at 32 kbit/s; that one was 0.094 % before a pair steady on its keys
/// for 10 ms was masked at once, 0.102 % with a single window's weak-tone shares asked at
/// 0.7 of their value, and 0.243 to 0.273 % before a tone-like window waited for the next
/// sub-block there). NOT MET (issue 4) with none (0.51 to 2.19 %, where the
/// path speculates every 5 ms and masks back to the onset; 0.58 to 2.42 % while such a mask
/// stood even where the frame's next sub-block showed the pair gone): bounded at what was
/// measured, rounded up.
#[cfg(feature = "opus")]
fn share_limit_48k(lookahead_ms: u32) -> f64 {
    match lookahead_ms {
        10.. => 0.1,
        _ => 2.2,
    }
}
