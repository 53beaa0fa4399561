//! Chunked resampling with rubato's FFT resampler (fixed input and output chunk), with the
//! delay it adds reported so media times and the look-ahead can account for it. The
//! pipeline uses it down to the detector's 8 kHz; the STT fork up to 16 kHz.
//!
//! Must never: allocate in [`ChunkResampler::push`] or [`ChunkResampler::flush`]; rubato's
//! `process_into_buffer` is allocation-free with preallocated buffers.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler};

use crate::dtmf::RATE;

/// Feeds audio at one rate and hands out chunks at another.
pub struct ChunkResampler {
    rs: Fft<f32>,
    chunk_in: usize,
    input: Vec<f32>,
    filled: usize,
    output: Vec<f32>,
    delay_out: usize,
}

/// Resampler construction failed (unsupported rate pair).
#[derive(Debug, thiserror::Error)]
#[error("cannot resample {rate} Hz to {to} Hz: {reason}")]
pub struct ResampleSetupError {
    rate: u32,
    to: u32,
    reason: String,
}

impl ChunkResampler {
    /// A resampler from `rate` Hz to the detector's 8 kHz working in chunks of about 5 ms,
    /// which keeps the added delay small.
    pub fn new(rate: u32) -> Result<Self, ResampleSetupError> {
        Self::between(rate, RATE, 200)
    }

    /// A resampler from `rate` Hz to `to` Hz working in chunks of about 1/`chunks_per_s` s.
    pub fn between(rate: u32, to: u32, chunks_per_s: u32) -> Result<Self, ResampleSetupError> {
        let err = |reason: String| ResampleSetupError { rate, to, reason };
        let gcd = gcd(rate as usize, to as usize);
        let step_in = rate as usize / gcd;
        // The FFT block must be a whole number of input steps.
        let want = (rate as usize / chunks_per_s.max(1) as usize).max(1);
        let chunk_in = want.div_ceil(step_in) * step_in;
        let rs = Fft::<f32>::new(rate as usize, to as usize, chunk_in, 1, FixedSync::Both)
            .map_err(|e| err(e.to_string()))?;
        let chunk_in = rs.input_frames_next();
        let out_max = rs.output_frames_max();
        let delay_out = rs.output_delay();
        Ok(Self {
            rs,
            chunk_in,
            input: vec![0.0; chunk_in],
            filled: 0,
            output: vec![0.0; out_max],
            delay_out,
        })
    }

    /// Input samples per resampler chunk.
    pub fn chunk_in(&self) -> usize {
        self.chunk_in
    }

    /// Delay of the resampler itself, in output samples.
    pub fn delay_out(&self) -> usize {
        self.delay_out
    }

    /// Add samples; for every complete chunk call `f` with the 8 kHz output. Returns an
    /// error if rubato refused a chunk (the caller fails closed).
    pub fn push<F: FnMut(&[f32])>(&mut self, x: &[i16], mut f: F) -> Result<(), ResampleError> {
        let mut i = 0;
        while i < x.len() {
            let n = (self.chunk_in - self.filled).min(x.len() - i);
            for (d, &s) in self.input[self.filled..self.filled + n]
                .iter_mut()
                .zip(&x[i..i + n])
            {
                *d = s as f32;
            }
            self.filled += n;
            i += n;
            if self.filled == self.chunk_in {
                self.filled = 0;
                self.process(None, &mut f)?;
            }
        }
        Ok(())
    }

    /// End of stream: resample what a partial last chunk holds and call `f` with it.
    pub fn flush<F: FnMut(&[f32])>(&mut self, mut f: F) -> Result<(), ResampleError> {
        if self.filled == 0 {
            return Ok(());
        }
        let n = self.filled;
        self.input[n..].fill(0.0);
        self.filled = 0;
        self.process(Some(n), &mut f)
    }

    fn process<F: FnMut(&[f32])>(
        &mut self,
        partial: Option<usize>,
        f: &mut F,
    ) -> Result<(), ResampleError> {
        let out_len = self.output.len();
        let inp =
            InterleavedSlice::new(&self.input[..], 1, self.chunk_in).map_err(|_| ResampleError)?;
        let mut out = InterleavedSlice::new_mut(&mut self.output[..], 1, out_len)
            .map_err(|_| ResampleError)?;
        let idx = partial.map(|n| Indexing::default().partial_len(n));
        let (_, produced) = self
            .rs
            .process_into_buffer(&inp, &mut out, idx.as_ref())
            .map_err(|_| ResampleError)?;
        f(&self.output[..produced]);
        Ok(())
    }
}

/// rubato refused to process a chunk.
#[derive(Debug, thiserror::Error)]
#[error("resampler failed to process a chunk")]
pub struct ResampleError;

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}
