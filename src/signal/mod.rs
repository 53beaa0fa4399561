//! Signal generators from the standards: DTMF pairs (ITU-T Q.23 frequencies), dial tone,
//! white noise, with levels in dBm0 where a full-scale sine is +3.14 dBm0.
//!
//! Owns: every synthetic signal the tests, benchmarks and fixture generator use, so a
//! fixture can always be rebuilt from committed code. Deterministic (seeded PRNG).
//! Must never: be used on the media path; it allocates freely.

use crate::dtmf::Digit;

/// Level of a full-scale sine in dBm0 (ITU-T G.711 reference; not an approximation of pi).
#[allow(clippy::approx_constant)]
pub const FULL_SCALE_SINE_DBM0: f64 = 3.14;

/// Peak amplitude (16-bit scale) of a sine at `dbm0`.
pub fn amplitude_for_dbm0(dbm0: f64) -> f64 {
    32767.0 * 10f64.powf((dbm0 - FULL_SCALE_SINE_DBM0) / 20.0)
}

/// Mean power (16-bit scale, per sample) of a sine at `dbm0`.
pub fn power_for_dbm0(dbm0: f64) -> f64 {
    let a = amplitude_for_dbm0(dbm0);
    a * a / 2.0
}

/// How to shape one DTMF burst.
#[derive(Debug, Clone, Copy)]
pub struct ToneSpec {
    /// Level of the low-group tone in dBm0.
    pub low_dbm0: f64,
    /// Level of the high-group tone in dBm0.
    pub high_dbm0: f64,
    /// Relative frequency error of the low tone (0.015 = +1.5 %).
    pub low_dev: f64,
    /// Relative frequency error of the high tone.
    pub high_dev: f64,
}

impl ToneSpec {
    /// Both tones at `dbm0`, on frequency.
    pub fn level(dbm0: f64) -> Self {
        Self {
            low_dbm0: dbm0,
            high_dbm0: dbm0,
            low_dev: 0.0,
            high_dev: 0.0,
        }
    }

    /// Twist in dB, positive = high group stronger ("normal"), keeping the stronger tone at
    /// `dbm0`.
    pub fn with_twist(dbm0: f64, twist_db: f64) -> Self {
        if twist_db >= 0.0 {
            Self {
                low_dbm0: dbm0 - twist_db,
                high_dbm0: dbm0,
                ..Self::level(dbm0)
            }
        } else {
            Self {
                low_dbm0: dbm0,
                high_dbm0: dbm0 + twist_db,
                ..Self::level(dbm0)
            }
        }
    }

    /// Total power of the pair (16-bit scale).
    pub fn power(&self) -> f64 {
        power_for_dbm0(self.low_dbm0) + power_for_dbm0(self.high_dbm0)
    }
}

/// Add a DTMF burst for `digit` into `out` starting at sample `start`, `len` samples long,
/// at `rate` Hz. Random start phases come from `rng` so repeated bursts differ.
pub fn add_dtmf(
    out: &mut [f64],
    rate: u32,
    start: usize,
    len: usize,
    digit: Digit,
    spec: ToneSpec,
    rng: &mut Rng,
) {
    let (fl, fh) = digit.frequencies();
    add_sine(
        out,
        rate,
        start,
        len,
        fl as f64 * (1.0 + spec.low_dev),
        spec.low_dbm0,
        rng.phase(),
    );
    add_sine(
        out,
        rate,
        start,
        len,
        fh as f64 * (1.0 + spec.high_dev),
        spec.high_dbm0,
        rng.phase(),
    );
}

/// Add a sine of `freq` Hz at `dbm0` into `out[start..start+len]`.
pub fn add_sine(
    out: &mut [f64],
    rate: u32,
    start: usize,
    len: usize,
    freq: f64,
    dbm0: f64,
    phase: f64,
) {
    let a = amplitude_for_dbm0(dbm0);
    let w = 2.0 * std::f64::consts::PI * freq / rate as f64;
    let end = (start + len).min(out.len());
    for (i, s) in out[start.min(end)..end].iter_mut().enumerate() {
        *s += a * (w * i as f64 + phase).sin();
    }
}

/// Add white Gaussian noise of mean power `power` (16-bit scale) to all of `out`.
pub fn add_white_noise(out: &mut [f64], power: f64, rng: &mut Rng) {
    let sigma = power.sqrt();
    for s in out.iter_mut() {
        *s += sigma * rng.gaussian();
    }
}

/// Add continuous dial tone (350 + 440 Hz, each tone at `dbm0`).
pub fn add_dial_tone(out: &mut [f64], rate: u32, dbm0: f64, rng: &mut Rng) {
    let n = out.len();
    add_sine(out, rate, 0, n, 350.0, dbm0, rng.phase());
    add_sine(out, rate, 0, n, 440.0, dbm0, rng.phase());
}

/// Round and saturate to 16-bit PCM.
pub fn to_i16(x: &[f64]) -> Vec<i16> {
    x.iter()
        .map(|v| v.round().clamp(-32768.0, 32767.0) as i16)
        .collect()
}

/// Mean power of a signal (16-bit scale).
pub fn power(x: &[f64]) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64
}

/// A small deterministic PRNG (xorshift64*), so generated fixtures are reproducible without
/// pulling a random-number crate into the core.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (0 is replaced by a fixed non-zero value).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// A random phase in [0, 2*pi).
    pub fn phase(&mut self) -> f64 {
        self.uniform() * 2.0 * std::f64::consts::PI
    }

    /// Standard normal sample (Box-Muller).
    pub fn gaussian(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_the_dbm0_convention() {
        assert!((amplitude_for_dbm0(FULL_SCALE_SINE_DBM0) - 32767.0).abs() < 1e-6);
        let mut x = vec![0.0; 8000];
        add_sine(&mut x, 8000, 0, 8000, 1000.0, -10.0, 0.0);
        let p = power(&x);
        assert!((10.0 * (p / power_for_dbm0(-10.0)).log10()).abs() < 0.01);
    }
}
