//! The eight-tone Goertzel bank, run over fixed 5 ms sub-blocks with a phase reference that
//! is continuous across sub-blocks.
//!
//! Why a hand-written bank and not the `goertzel-filter` crate: that crate has no sample-rate
//! parameter, rounds each frequency to a whole DFT bin (697 Hz lands between bins and reads a
//! small fraction of its power), allocates and prints on every call, and runs one filter at a
//! time. The benchmark `compare/goertzel_filter_crate_8k_20ms` measures it next to this bank.
//! Here the eight filters run in lock-step over one `[f32; 8]`, which the compiler vectorises,
//! over the sub-block's four quarters side by side (in one pass where the CPU has AVX), and
//! each sub-block ends with the complex DFT value referred to absolute stream time, so
//! sub-blocks can be summed coherently into any longer window and the phase drift between
//! them measures the tone's frequency error.
//!
//! Must never: allocate, lock or branch per sample on data; give results that depend on the
//! CPU it runs on (the AVX and portable paths do the same arithmetic in the same order).

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
///
/// Real and imaginary parts are kept apart, so the sums over a window's sub-blocks run
/// eight tones at a time.
#[derive(Debug, Clone, Copy, Default)]
pub struct SubBlock {
    /// Real parts of the DFT values, rows first then columns.
    pub re: [f32; TONES],
    /// Imaginary parts, in the same order.
    pub im: [f32; TONES],
    /// Sum of squared samples.
    pub energy: f32,
}

impl SubBlock {
    /// DFT value of tone `t`.
    #[inline]
    pub fn c(&self, t: usize) -> Cpx {
        Cpx {
            re: self.re[t],
            im: self.im[t],
        }
    }
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
    /// Which row of [`Tables::phase`] refers the current sub-block to absolute stream time.
    turn: usize,
    filled: usize,
    /// Samples of the sub-block being filled; the filters run once it is complete.
    buf: [f32; SUB],
}

/// Sub-blocks after which every bank frequency has turned a whole number of times: each
/// key frequency is a whole number of Hz, so over `SUB * PERIOD` samples (1 s) each makes
/// exactly that many turns, and the phase reference repeats.
const PERIOD: usize = RATE as usize / SUB;

/// What every bank computes with: per tone, the Goertzel coefficient, the factor that turns
/// the filter state into the DFT value, and the phase reference of each sub-block.
#[derive(Debug)]
struct Tables {
    coeff: [f32; TONES],
    /// The CPU runs AVX (see [`filters`]).
    avx: bool,
    /// Chain k's DFT referred to the sub-block's end is a_k s1 - b_k s2, with
    /// b_k = e^{j w L (CHAINS-1-k)} (the chain ends that much earlier) and a_k = b_k e^{j w}:
    /// real and imaginary parts.
    a_re: [[f32; TONES]; CHAINS],
    a_im: [[f32; TONES]; CHAINS],
    b_re: [[f32; TONES]; CHAINS],
    b_im: [[f32; TONES]; CHAINS],
    /// e^{-j w n_end} for a sub-block ending at sample n_end = SUB (m + 1), indexed by m mod
    /// [`PERIOD`]: the reference that makes sub-blocks add up coherently. Read from a table
    /// (one cache line per sub-block) rather than carried by a rotation, which would drift
    /// and cost a complex multiply in f64 per tone.
    phase: [Phase; PERIOD],
}

/// One sub-block's phase reference for the eight tones, in one 64-byte line.
#[derive(Debug, Clone, Copy, Default)]
#[repr(align(64))]
struct Phase {
    re: [f32; TONES],
    im: [f32; TONES],
}

static TABLES: std::sync::LazyLock<Tables> = std::sync::LazyLock::new(Tables::new);

impl Tables {
    fn new() -> Self {
        let w = |i: usize| 2.0 * std::f64::consts::PI * BANK_HZ[i] as f64 / RATE as f64;
        let mut t = Self {
            coeff: [0.0; TONES],
            #[cfg(target_arch = "x86_64")]
            avx: std::arch::is_x86_feature_detected!("avx"),
            #[cfg(not(target_arch = "x86_64"))]
            avx: false,
            a_re: [[0.0; TONES]; CHAINS],
            a_im: [[0.0; TONES]; CHAINS],
            b_re: [[0.0; TONES]; CHAINS],
            b_im: [[0.0; TONES]; CHAINS],
            phase: [Phase::default(); PERIOD],
        };
        for (i, hz) in BANK_HZ.into_iter().enumerate() {
            assert_eq!(hz.fract(), 0.0, "the phase table needs whole-Hz tones");
            t.coeff[i] = (2.0 * w(i).cos()) as f32;
            for k in 0..CHAINS {
                let b = w(i) * (SUB / CHAINS * (CHAINS - 1 - k)) as f64;
                t.b_re[k][i] = b.cos() as f32;
                t.b_im[k][i] = b.sin() as f32;
                t.a_re[k][i] = (b + w(i)).cos() as f32;
                t.a_im[k][i] = (b + w(i)).sin() as f32;
            }
            for (m, ph) in t.phase.iter_mut().enumerate() {
                // Whole turns taken out in integers: w n_end = 2 pi f n_end / RATE.
                let n_end = (SUB * (m + 1)) as u64;
                let turns = (BANK_HZ[i] as u64 * n_end) % RATE as u64;
                let a = -2.0 * std::f64::consts::PI * turns as f64 / RATE as f64;
                ph.re[i] = a.cos() as f32;
                ph.im[i] = a.sin() as f32;
            }
        }
        t
    }
}

/// Independent filter chains per sub-block (quarters of it). Each Goertzel step waits on the
/// one before, so running stretches side by side hides that latency (two halves: 0.82 to
/// 0.61 us per 20 ms frame); four fit the registers only with AVX (see [`filters`]).
const CHAINS: usize = 4;

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
            turn: 0,
            filled: 0,
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
        let k = self.k;
        let z = filters(x, k);
        let ph = &k.phase[self.turn];
        self.turn = if self.turn + 1 == PERIOD {
            0
        } else {
            self.turn + 1
        };
        let mut out = SubBlock {
            energy: z.energy,
            ..SubBlock::default()
        };
        for i in 0..TONES {
            out.re[i] = ph.re[i] * z.re[i] - ph.im[i] * z.im[i];
            out.im[i] = ph.re[i] * z.im[i] + ph.im[i] * z.re[i];
        }
        self.filled = 0;
        out
    }
}

/// The Goertzel recurrences of one sub-block, as `CHAINS` stretches, each stretch's DFT
/// referred to the sub-block's end and summed: the DFT values (not yet referred to stream
/// time) and the energy. Each chain's arithmetic, and the order the chains are summed in,
/// is the same whichever way it runs, so both ways give bit-identical results:
/// * with AVX (checked once, at start-up) all four chains run side by side, one 8-lane
///   register per state, which halves the time the recurrences wait on themselves;
/// * without it two at a time, which is what fits the sixteen SSE registers.
///
/// Kept out of line so its registers are its own: inlined into the finishing arithmetic,
/// the states spilled to the stack inside the loop.
#[inline(never)]
fn filters(x: &[f32], k: &Tables) -> Sums {
    let x: &[f32; SUB] = x[..SUB].try_into().expect("a whole sub-block");
    let mut z = Sums::default();
    #[cfg(target_arch = "x86_64")]
    if k.avx {
        // SAFETY: `avx` is true only where the CPU was found to support AVX.
        #[allow(unsafe_code)]
        unsafe {
            filters_avx(x, k, &mut z)
        };
        return z;
    }
    chains::<0, 2>(x, k, &mut z);
    chains::<2, 2>(x, k, &mut z);
    z
}

/// What [`filters`] leaves: per tone the DFT value referred to the sub-block's end, and the
/// sub-block's energy.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Sums {
    re: [f32; TONES],
    im: [f32; TONES],
    energy: f32,
}

/// [`chains`] over all four chains, compiled for AVX.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
fn filters_avx(x: &[f32; SUB], k: &Tables, z: &mut Sums) {
    chains::<0, CHAINS>(x, k, z);
}

/// Chains `FIRST..FIRST + N` of one sub-block, added to `z` in chain order.
#[inline(always)]
fn chains<const FIRST: usize, const N: usize>(x: &[f32; SUB], k: &Tables, z: &mut Sums) {
    const L: usize = SUB / CHAINS;
    let coeff = k.coeff;
    let mut s1 = [[0f32; TONES]; N];
    let mut s2 = [[0f32; TONES]; N];
    let mut e = [0f32; N];
    for n in 0..L {
        for c in 0..N {
            let v = x[(FIRST + c) * L + n];
            e[c] += v * v;
            for i in 0..TONES {
                // coeff*s1 first: shortens the dependency chain through s1.
                let a = coeff[i] * s1[c][i] + (v - s2[c][i]);
                s2[c][i] = s1[c][i];
                s1[c][i] = a;
            }
        }
    }
    // Chain c's DFT referred to the sub-block's end is b_c (e^{j w} s1 - s2), that is
    // a_c s1 - b_c s2 with a_c = b_c e^{j w}: real states times complex constants, lane by
    // lane over the eight tones.
    for c in 0..N {
        let (a_re, a_im) = (&k.a_re[FIRST + c], &k.a_im[FIRST + c]);
        let (b_re, b_im) = (&k.b_re[FIRST + c], &k.b_im[FIRST + c]);
        for i in 0..TONES {
            z.re[i] += a_re[i] * s1[c][i] - b_re[i] * s2[c][i];
            z.im[i] += a_im[i] * s1[c][i] - b_im[i] * s2[c][i];
        }
        z.energy += e[c];
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
            assert!((b.c(0).abs() - 1000.0 * SUB as f32 / 2.0).abs() < 200.0);
            sum = sum.plus(b.c(0));
        }
        // Coherent sum over 4 blocks equals the 160-sample DFT (within 1 %: the cosine's
        // negative-frequency image leaks in a little, depending on phase).
        assert!(
            (sum.abs() - 1000.0 * 160.0 / 2.0).abs() < 800.0,
            "{}",
            sum.abs()
        );
        // No phase drift between blocks for an on-bin tone.
        let rot = blocks[3].c(0).mul_conj(blocks[2].c(0)).arg();
        assert!(rot.abs() < 0.05, "rot {rot}");
    }

    #[test]
    fn phase_drift_measures_frequency_error() {
        let blocks = run(697.0 * 1.02, 1000.0, 4);
        let rot = blocks[3].c(0).mul_conj(blocks[2].c(0)).arg();
        let df = rot as f64 * 8000.0 / (2.0 * std::f64::consts::PI * SUB as f64);
        assert!((df - 697.0 * 0.02).abs() < 1.5, "df {df}");
    }

    /// The AVX path and the portable one run the same arithmetic per chain: the same bits
    /// come out, so results do not depend on the machine. And both read what one DFT over the
    /// sub-block reads.
    #[test]
    fn the_avx_and_portable_filters_agree_bit_for_bit() {
        let x: Vec<f32> = (0..SUB)
            .map(|n| ((n * 7919) % 4001) as f32 - 2000.0 + 0.37 * n as f32)
            .collect();
        let mut portable_tables = Tables::new();
        portable_tables.avx = false;
        let portable = filters(&x, &portable_tables);
        if TABLES.avx {
            assert_eq!(filters(&x, &TABLES), portable);
        }
        for (i, hz) in BANK_HZ.into_iter().enumerate() {
            // The DFT referred to the sub-block's end: sum x[n] e^{-j w (n - SUB)}.
            let w = 2.0 * std::f64::consts::PI * hz as f64 / RATE as f64;
            let (mut re, mut im) = (0f64, 0f64);
            for (n, &v) in x.iter().enumerate() {
                let a = -w * (n as f64 - SUB as f64);
                re += v as f64 * a.cos();
                im += v as f64 * a.sin();
            }
            let scale = re.hypot(im).max(1.0);
            assert!(
                (portable.re[i] as f64 - re).abs() < 1e-4 * scale,
                "{hz} Hz re"
            );
            assert!(
                (portable.im[i] as f64 - im).abs() < 1e-4 * scale,
                "{hz} Hz im"
            );
        }
        let energy: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
        assert!((portable.energy as f64 - energy).abs() < 1e-5 * energy);
    }

    /// Referred to absolute stream time, a steady tone on a bank frequency reads (nearly) the
    /// same phase in every sub-block (its negative-frequency image moves it a little), and
    /// exactly what it read one phase-table period (1 s) before, for minutes.
    #[test]
    fn the_phase_reference_holds_across_its_period() {
        for (i, &f) in BANK_HZ.iter().enumerate() {
            let blocks = run(f as f64, 1000.0, 3 * PERIOD + 7);
            for k in 1..blocks.len() {
                let rot = blocks[k].c(i).mul_conj(blocks[k - 1].c(i)).arg();
                assert!(rot.abs() < 0.1, "{f} Hz, sub-block {k}: turned {rot}");
                if k >= PERIOD {
                    let (now, then) = (blocks[k].c(i), blocks[k - PERIOD].c(i));
                    let d = Cpx {
                        re: now.re - then.re,
                        im: now.im - then.im,
                    };
                    assert!(d.abs() < 1e-3 * now.abs(), "{f} Hz, sub-block {k}");
                }
            }
        }
    }
}
