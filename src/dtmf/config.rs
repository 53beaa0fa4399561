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
            min_relative_peak_db: 2.0,
            max_second_harmonic_db: 20.0,
            min_report_ms: 12.0,
            bridge_ms: 10.0,
        }
    }
}

/// Thresholds for masking. Deliberately weaker than [`DetectorConfig`]: anything a decoder
/// could take for a key press is removed, at the price of a little speech now and then.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaskConfig {
    /// Weakest tone (either group) that is masked, dBm0.
    pub min_level_dbm0: f32,
    /// Largest twist either way that is still masked, dB.
    pub max_twist_db: f32,
    /// Largest frequency error still masked, as a fraction.
    pub max_freq_dev: f32,
    /// Share of a 10 ms window's energy the two tones must hold to be masked.
    pub min_energy_ratio: f32,
    /// Share of a single 5 ms sub-block's energy the two tones must hold for the speculative
    /// onset check (used when there is no look-ahead).
    pub speculative_energy_ratio: f32,
}

impl Default for MaskConfig {
    fn default() -> Self {
        Self {
            min_level_dbm0: -50.0,
            max_twist_db: 16.0,
            max_freq_dev: 0.06,
            min_energy_ratio: 0.5,
            speculative_energy_ratio: 0.8,
        }
    }
}
