//! The eight-tone Goertzel bank, run over fixed 5 ms sub-blocks with a phase reference that
//! is continuous across sub-blocks.
//!
//! Why a hand-written bank and not the `goertzel-filter` crate: that crate has no sample-rate
//! parameter, rounds each frequency to a whole DFT bin (697 Hz lands between bins and reads a
//! small fraction of its power), allocates and prints on every call, and runs one filter at a
//! time. The benchmark `compare/goertzel_filter_crate_8k_20ms` measures it next to this bank.
//! Here the eight filters run in lock-step over one `[f32; 8]`, which the compiler vectorises,
//! and each sub-block ends with the complex DFT value referred to absolute stream time, so
//! sub-blocks can be summed coherently into any longer window and the phase drift between
//! them measures the tone's frequency error.
//!
//! Must never: allocate, lock or branch per sample on data.

use super::digit::{COL_HZ, ROW_HZ};

/// Detection sample rate. Everything else is resampled to this before detection.
pub const RATE: u32 = 8000;
/// Sub-block length in samples (5 ms). The unit of every decision.
pub const SUB: usize = 40;
/// Number of tones in the bank (4 rows then 4 columns).
pub const TONES: usize = 8;

/// A complex number small enough to copy around freely.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cpx {
    /// Real part.
    pub re: f32,
    /// Imaginary part.
    pub im: f32,
}

impl Cpx {
    /// Squared magnitude.
    #[inline]
    pub fn norm_sqr(self) -> f32 {
        self.re * self.re + self.im * self.im
    }
    /// Magnitude.
    #[inline]
    pub fn abs(self) -> f32 {
        self.norm_sqr().sqrt()
    }
    /// Sum.
    #[inline]
    pub fn plus(self, o: Cpx) -> Cpx {
        Cpx {
            re: self.re + o.re,
            im: self.im + o.im,
        }
    }
    /// `self * conj(o)`.
    #[inline]
    pub fn mul_conj(self, o: Cpx) -> Cpx {
        Cpx {
            re: self.re * o.re + self.im * o.im,
            im: self.im * o.re - self.re * o.im,
        }
    }
    /// Argument in radians.
    #[inline]
    pub fn arg(self) -> f32 {
        self.im.atan2(self.re)
    }
}

/// What one finished sub-block left behind: its DFT value at each of the eight frequencies
/// (absolute phase reference) and its energy.
#[derive(Debug, Clone, Copy, Default)]
pub struct SubBlock {
    /// DFT values, rows first then columns.
    pub c: [Cpx; TONES],
    /// Sum of squared samples.
    pub energy: f32,
}

/// All eight frequencies in bank order (rows, then columns).
pub const BANK_HZ: [f32; TONES] = [
    ROW_HZ[0], ROW_HZ[1], ROW_HZ[2], ROW_HZ[3], COL_HZ[0], COL_HZ[1], COL_HZ[2], COL_HZ[3],
];

/// Eight Goertzel filters sharing one sample stream.
#[derive(Debug, Clone)]
pub struct GoertzelBank {
    /// The constants, shared by every bank in the process: a gateway runs thousands of
    /// banks, and one shared copy stays in cache where a copy per call would be fetched
    /// from memory on every packet.
    k: &'static Tables,
    /// e^{-j w n_end}: phase reference at the end of the current sub-block (f64 so it does
    /// not drift over hours of audio).
    phase: [(f64, f64); TONES],
    filled: usize,
    blocks: u32,
    /// Samples of the sub-block being filled; the filters run once it is complete.
    buf: [f32; SUB],
}

/// What every bank computes with: per tone, the Goertzel coefficient, the factor that turns
/// the filter state into the DFT value, and how far the phase reference turns per sub-block.
#[derive(Debug)]
struct Tables {
    coeff: [f32; TONES],
    /// e^{+j w} per tone, to turn (s1, s2) into the DFT value.
    ejw: [Cpx; TONES],
    /// e^{-j w SUB}: how far the reference turns per sub-block.
    step: [(f64, f64); TONES],
    /// e^{j w L (CHAINS-1-k)}: turns chain k's DFT into one referred to the sub-block's end.
    part: [[Cpx; TONES]; CHAINS],
}

static TABLES: std::sync::LazyLock<Tables> = std::sync::LazyLock::new(Tables::new);

impl Tables {
    fn new() -> Self {
        let mut coeff = [0.0; TONES];
        let mut ejw = [Cpx::default(); TONES];
        let mut step = [(1.0, 0.0); TONES];
        for i in 0..TONES {
            let w = 2.0 * std::f64::consts::PI * BANK_HZ[i] as f64 / RATE as f64;
            coeff[i] = (2.0 * w.cos()) as f32;
            ejw[i] = Cpx {
                re: w.cos() as f32,
                im: w.sin() as f32,
            };
            let a = -w * SUB as f64;
            step[i] = (a.cos(), a.sin());
        }
        let mut part = [[Cpx::default(); TONES]; CHAINS];
        for (k, pk) in part.iter_mut().enumerate() {
            for (i, pki) in pk.iter_mut().enumerate() {
                let w = 2.0 * std::f64::consts::PI * BANK_HZ[i] as f64 / RATE as f64;
                let a = w * (SUB / CHAINS * (CHAINS - 1 - k)) as f64;
                *pki = Cpx {
                    re: a.cos() as f32,
                    im: a.sin() as f32,
                };
            }
        }
        Self {
            coeff,
            ejw,
            step,
            part,
        }
    }
}

/// Independent filter chains per sub-block. Each Goertzel step waits on the one before, so
/// running two halves of the sub-block side by side hides that latency (measured: 0.82 to
/// 0.61 us per 20 ms frame); four run out of registers.
const CHAINS: usize = 2;

impl Default for GoertzelBank {
    fn default() -> Self {
        Self::new()
    }
}

impl GoertzelBank {
    /// A bank tuned to the eight DTMF frequencies at 8 kHz.
    pub fn new() -> Self {
        let k: &'static Tables = &TABLES;
        Self {
            k,
            phase: k.step,
            filled: 0,
            blocks: 0,
            buf: [0.0; SUB],
        }
    }

    /// Samples still needed to finish the current sub-block.
    #[inline]
    pub fn remaining(&self) -> usize {
        SUB - self.filled
    }

    /// Feed at most [`remaining`](Self::remaining) samples. Returns the finished sub-block
    /// when this completes one.
    #[inline]
    pub fn feed(&mut self, x: &[f32]) -> Option<SubBlock> {
        debug_assert!(x.len() <= self.remaining());
        if self.filled == 0 && x.len() == SUB {
            // A whole sub-block at once (the usual case): run the filters on it where it is.
            return Some(self.finish(x));
        }
        self.buf[self.filled..self.filled + x.len()].copy_from_slice(x);
        self.filled += x.len();
        if self.filled < SUB {
            return None;
        }
        let buf = self.buf;
        Some(self.finish(&buf))
    }

    fn finish(&mut self, x: &[f32]) -> SubBlock {
        const L: usize = SUB / CHAINS;
        let k = self.k;
        let coeff = k.coeff;
        let mut s1 = [[0f32; TONES]; CHAINS];
        let mut s2 = [[0f32; TONES]; CHAINS];
        let mut e = [0f32; CHAINS];
        let (first, second) = x.split_at(L);
        for (&va, &vb) in first.iter().zip(second) {
            e[0] += va * va;
            e[1] += vb * vb;
            for i in 0..TONES {
                // coeff*s1 first: shortens the dependency chain through s1.
                let a0 = coeff[i] * s1[0][i] + (va - s2[0][i]);
                let b0 = coeff[i] * s1[1][i] + (vb - s2[1][i]);
                s2[0][i] = s1[0][i];
                s1[0][i] = a0;
                s2[1][i] = s1[1][i];
                s1[1][i] = b0;
            }
        }
        let mut out = SubBlock {
            energy: e.iter().sum(),
            ..SubBlock::default()
        };
        for i in 0..TONES {
            // Each chain's DFT is e^{-j w n_end_k} (e^{j w} s1 - s2); refer all of them to
            // the end of the sub-block, sum, then to absolute stream time.
            let mut y = Cpx::default();
            for c in 0..CHAINS {
                let yk = Cpx {
                    re: k.ejw[i].re * s1[c][i] - s2[c][i],
                    im: k.ejw[i].im * s1[c][i],
                };
                let r = k.part[c][i];
                y = y.plus(Cpx {
                    re: r.re * yk.re - r.im * yk.im,
                    im: r.re * yk.im + r.im * yk.re,
                });
            }
            let (pr, pi) = self.phase[i];
            out.c[i] = Cpx {
                re: (pr as f32) * y.re - (pi as f32) * y.im,
                im: (pr as f32) * y.im + (pi as f32) * y.re,
            };
            let (sr, si) = k.step[i];
            self.phase[i] = (pr * sr - pi * si, pr * si + pi * sr);
        }
        // Keep the references on the unit circle; in f64 the drift over 256 steps is ~1e-14.
        self.blocks = self.blocks.wrapping_add(1);
        if self.blocks.is_multiple_of(256) {
            for p in self.phase.iter_mut() {
                let m = (p.0 * p.0 + p.1 * p.1).sqrt();
                *p = (p.0 / m, p.1 / m);
            }
        }
        self.filled = 0;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(freq: f64, amp: f64, blocks: usize) -> Vec<SubBlock> {
        let mut bank = GoertzelBank::new();
        let mut out = Vec::new();
        let x: Vec<f32> = (0..blocks * SUB)
            .map(|n| (amp * (2.0 * std::f64::consts::PI * freq * n as f64 / 8000.0).cos()) as f32)
            .collect();
        for ch in x.chunks(SUB) {
            out.push(bank.feed(ch).unwrap());
        }
        out
    }

    #[test]
    fn on_frequency_tone_reads_full_amplitude_with_continuous_phase() {
        let blocks = run(697.0, 1000.0, 4);
        let mut sum = Cpx::default();
        for b in &blocks {
            // A cosine of amplitude A gives |X| = A*N/2 over N samples.
            assert!((b.c[0].abs() - 1000.0 * SUB as f32 / 2.0).abs() < 200.0);
            sum = sum.plus(b.c[0]);
        }
        // Coherent sum over 4 blocks equals the 160-sample DFT (within 1 %: the cosine's
        // negative-frequency image leaks in a little, depending on phase).
        assert!(
            (sum.abs() - 1000.0 * 160.0 / 2.0).abs() < 800.0,
            "{}",
            sum.abs()
        );
        // No phase drift between blocks for an on-bin tone.
        let rot = blocks[3].c[0].mul_conj(blocks[2].c[0]).arg();
        assert!(rot.abs() < 0.05, "rot {rot}");
    }

    #[test]
    fn phase_drift_measures_frequency_error() {
        let blocks = run(697.0 * 1.02, 1000.0, 4);
        let rot = blocks[3].c[0].mul_conj(blocks[2].c[0]).arg();
        let df = rot as f64 * 8000.0 / (2.0 * std::f64::consts::PI * SUB as f64);
        assert!((df - 697.0 * 0.02).abs() < 1.5, "df {df}");
    }
}
