//! Talk-off over real recorded speech and music with no DTMF (BRIEF 2.1): Debian's Asterisk
//! prompt sets (English, French, Italian speakers) and its hold-music package, about 1.6
//! hours. No digit may be reported; the share masked is printed and bounded. `.ci/run`
//! installs the packages; without them (and outside CI) the test says so and skips.

mod common;

use common::*;
use tonewall::codec::Codec;
use tonewall::dtmf::DetectorConfig;
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

fn load(which: &str) -> Vec<i16> {
    let mut files: Vec<_> = corpus_dirs(which).iter().flat_map(|d| walk(d)).collect();
    files.sort();
    let mut all = Vec::new();
    for f in files {
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        let Ok(w) = Wav::parse(&bytes) else { continue };
        if w.rate != 8000 {
            continue;
        }
        all.extend(w.channel_linear(0));
        // A short gap between files, as between prompts on a call.
        all.extend(std::iter::repeat_n(0, 800));
    }
    all
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

#[test]
fn no_false_digit_on_hours_of_real_speech_and_music() {
    let mut total_s = 0.0;
    let mut failures = Vec::new();
    for (name, dir) in CORPORA {
        let x = load(dir);
        if x.is_empty() {
            assert!(
                std::env::var("CI").is_err(),
                "{name} ({dir} under {SOUNDS}) missing in CI"
            );
            eprintln!("{name}: {dir} not installed, skipped");
            continue;
        }
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
        for la in [0, 10, 20] {
            let (_, log) = mask(&x, Codec::Pcmu, la);
            let masked = masked_samples(&log);
            let share = masked as f64 / x.len() as f64 * 100.0;
            line += &format!("; masked at look-ahead {la} ms: {share:.3} %");
            // BRIEF 2.2: under 0.1 %. Met with 20 ms of look-ahead (measured 0.027 to
            // 0.089 %). NOT MET with less (none: 0.17 to 0.51 %, where each frame tail that
            // may hold a key press's onset is masked speculatively; 10 ms: 0.10 to 0.25 %,
            // where a tone-like window cannot wait for a second); bounded at what was
            // measured.
            let limit = match (name, la) {
                (_, 20..) => 0.1,
                _ => 0.8,
            };
            if share >= limit {
                failures.push(format!("{name} la={la}: {share:.3} % masked"));
            }
        }
        println!("{line}");
        assert!(found.is_empty(), "{name}: {} false digits", found.len());
    }
    println!("talk-off corpus total {:.1} min", total_s / 60.0);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
