//! Detector and masker thresholds. Defaults follow ITU-T Q.24 (AT&T column); every number
//! is a setting so a deployment can move it, and the conformance battery prints what the
//! defaults achieve.

use serde::Deserialize;

/// Thresholds for reporting a digit (strict) and for masking tone-like audio (weak).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorConfig {
    /// Weakest tone (either group) reported as a digit, dBm0.
    pub min_level_dbm0: f32,
    /// Largest accepted normal twist (high group stronger), dB.
    pub max_normal_twist_db: f32,
    /// Largest accepted reverse twist (low group stronger), dB.
    pub max_reverse_twist_db: f32,
    /// Largest accepted frequency error of either tone, as a fraction (0.025 = 2.5 %).
    pub max_freq_dev: f32,
    /// Share of the window's energy the two tones must hold.
    pub min_energy_ratio: f32,
    /// Share they may hold instead (below `min_energy_ratio`) when the pair is steady and
    /// clear: 12 dB above the rest of each group, within 0.5 % of its keys, its amplitude
    /// within 80 % over the window, and within Q.24's twist. A key press under speech 10 dB
    /// down, through Opus at 16 kbit/s, keeps 57 to 61 % of its windows; speech and music
    /// in our talk-off corpus gave no digit with this at 0.45. At or above `min_energy_ratio`
    /// it changes nothing.
    pub steady_min_energy_ratio: f32,
    /// Share they must hold when their twist is beyond what Q.24 asks every receiver to
    /// accept (8 dB normal, 4 dB reverse) but within the limits above: a pair that is
    /// marginal on twist must be clean. Music and speech that pass every other test by a
    /// hair do it with one strong partial (a reverse twist of 4.6 to 5.1 dB and 60 to 62 %
    /// of the window, on the 48 kHz path); a key press at that twist holds nearly all of it.
    pub twisted_min_energy_ratio: f32,
    /// Share of its window a pair must hold for one strict window to declare the digit
    /// without waiting for the next (the pair must also stand 10 dB above the rest of each
    /// group, sit within 1 % of its keys and within Q.24's twist, and the tone must have
    /// lasted `min_report_ms`). Opus at 16 kbit/s builds a tone up over its first 25 ms, so
    /// its first strict window can come 30 ms in; the second would come after 40 ms. Above
    /// 1, every digit waits for a second window.
    pub single_window_energy_ratio: f32,
    /// How far the strongest tone of each group must stand above the others of its group, dB.
    pub min_relative_peak_db: f32,
    /// Largest accepted second-harmonic level relative to the high-group tone, dB.
    pub max_second_harmonic_db: f32,
    /// Shortest tone reported as a digit, ms (Q.24: report at 40 ms, never at 20 ms).
    pub min_report_ms: f32,
    /// Interruptions of the same digit shorter than this are bridged, ms.
    pub bridge_ms: f32,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            min_level_dbm0: -45.0,
            max_normal_twist_db: 9.0,
            max_reverse_twist_db: 6.0,
            max_freq_dev: 0.026,
            min_energy_ratio: 0.6,
            steady_min_energy_ratio: 0.5,
            twisted_min_energy_ratio: 0.7,
            single_window_energy_ratio: 0.75,
            min_relative_peak_db: 6.0,
            max_second_harmonic_db: -8.0,
            min_report_ms: 25.0,
            bridge_ms: 22.0,
        }
    }
}

impl DetectorConfig {
    /// The most sensitive setting: reports anything remotely like a digit from 12 ms on.
    /// Used to prove masked output holds nothing decodable, never for production reporting.
    pub fn most_sensitive() -> Self {
        Self {
            min_level_dbm0: -55.0,
            max_normal_twist_db: 20.0,
            max_reverse_twist_db: 20.0,
            max_freq_dev: 0.06,
            min_energy_ratio: 0.35,
            steady_min_energy_ratio: 0.35,
            twisted_min_energy_ratio: 0.35,
            single_window_energy_ratio: 0.35,
            min_relative_peak_db: 2.0,
            max_second_harmonic_db: 20.0,
            min_report_ms: 12.0,
            bridge_ms: 10.0,
        }
    }
}

/// Thresholds for masking. Deliberately weaker than [`DetectorConfig`]: anything a decoder
/// could take for a key press is removed. The energy ratios compare the two strongest
/// frequencies (followed in frequency, so tones a few percent off count in full) with the
/// window's power (above a steady background, on the Opus path with less than 20 ms of
/// look-ahead only).
///
/// A 10 ms window passes the gate when it is pure enough and no other row or column holds
/// more than leakage; it is then masked if it is very pure (short tones) or if the 20 ms
/// window around it is pure too (everything longer). Speech rarely passes both.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaskConfig {
    /// Weakest tone (either group) that is masked, dBm0.
    pub min_level_dbm0: f32,
    /// Largest twist either way that is still masked, dB.
    pub max_twist_db: f32,
    /// Share of a 10 ms window's power the pair must hold to pass the gate.
    pub min_energy_ratio: f32,
    /// ... to count as a possible onset (used only with no look-ahead).
    pub onset_energy_ratio: f32,
    /// ... to be masked on the 10 ms window alone.
    pub confirm_energy_ratio_10ms: f32,
    /// Share of the 20 ms window's power that confirms a gated 10 ms window.
    pub confirm_energy_ratio_20ms: f32,
    /// Largest power in a row or column two or more places from the winner, relative to the
    /// winner, dB (a second speech harmonic shows up there; a tone leaves only leakage).
    pub max_non_adjacent_db: f32,
    /// Largest second harmonic of the high-group tone, relative to it, dB.
    pub max_second_harmonic_db: f32,
    /// A 10 ms window this pure skips the non-adjacent and harmonic checks (a key press
    /// with speech underneath fails those on the speech, not on the tone).
    pub pure_energy_ratio: f32,
    /// Consecutive 5 ms sub-blocks with the same pair holding at least `min_energy_ratio`
    /// of the window (voice checks or not), at a steady frequency within the detector's
    /// `max_freq_dev`, that confirm a tone: a key press under speech.
    pub confirm_gate_run: u32,
    /// Share of the last 5 ms the pair must hold for the speculative onset check at the end
    /// of a frame (only with no look-ahead).
    pub speculative_energy_ratio: f32,
    /// ... or share of the last 10 ms, whichever passes.
    pub speculative_energy_ratio_10ms: f32,
    /// Share of a 10 ms window's power outside the stronger tone that the weaker tone must
    /// hold for the window to be masked on its purity (`confirm_energy_ratio_10ms`). A key
    /// press leaves little else; speech and music that look pure mostly owe it to one strong
    /// partial near a row frequency, with the column bin catching a small part of the rest.
    pub weak_tone_share_10ms: f32,
    /// ... of the 20 ms window, for the 20 ms confirmation (`confirm_energy_ratio_20ms`).
    pub weak_tone_share_20ms: f32,
    /// ... of the 10 ms window that completes a same-pair run (`confirm_gate_run`); lower,
    /// because speech under a key press fills the rest.
    pub weak_tone_share_run: f32,
    /// With 1 to 19 ms of look-ahead the masker cannot wait long for a clearer window (the
    /// start of the tone would leave first; from 10 ms it waits one sub-block) nor mask frame
    /// tails on speculation (as it does with none), so each weak-tone share above is asked at
    /// this fraction. 0.75: at 0.7 the Italian prompts through Opus at 32 kbit/s lost 0.102 %
    /// to masking with 10 ms of look-ahead (0.094 % at 0.75), with every leak residual the same
    /// at 0.75 on every path and seed of the battery; at 0.8 a tone at 8 kHz kept 11.50 ms
    /// (was 9.25) and one through Opus 32 kbit/s 6.17 ms (was 6.02).
    pub weak_tone_share_scale_short: f32,
}

impl Default for MaskConfig {
    fn default() -> Self {
        Self {
            min_level_dbm0: -58.0,
            max_twist_db: 16.0,
            min_energy_ratio: 0.5,
            onset_energy_ratio: 0.4,
            confirm_energy_ratio_10ms: 0.8,
            confirm_energy_ratio_20ms: 0.7,
            max_non_adjacent_db: -8.0,
            max_second_harmonic_db: -12.0,
            pure_energy_ratio: 0.85,
            confirm_gate_run: 4,
            speculative_energy_ratio: 0.8,
            speculative_energy_ratio_10ms: 0.65,
            weak_tone_share_10ms: 0.7,
            weak_tone_share_20ms: 0.6,
            weak_tone_share_run: 0.3,
            weak_tone_share_scale_short: 0.75,
        }
    }
}
