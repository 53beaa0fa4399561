//! The masker: a delay line of `lookahead` samples between detection and output, and the
//! table of spans to silence. Samples leave in the codec's own domain, so everything not
//! masked passes bit-exact.
//!
//! Owns: the look-ahead buffer, the masked-span table and the replacement of masked samples.
//! Must never: allocate after construction, let a sample out before the detector has decided
//! on it (or, if it cannot, before it is masked), or forward a sample inside a masked span.

/// Most masked spans remembered at once. Spans older than the output position are dropped;
/// if the table ever fills, the newest spans are merged (masking more, never less).
const SPANS: usize = 32;

/// A set of half-open sample spans `[from, to)` that must be silenced.
#[derive(Debug, Clone)]
pub struct SpanTable {
    spans: [(u64, u64); SPANS],
    len: usize,
    overflowed: bool,
}

impl Default for SpanTable {
    fn default() -> Self {
        Self {
            spans: [(0, 0); SPANS],
            len: 0,
            overflowed: false,
        }
    }
}

impl SpanTable {
    /// Add `[from, to)`, merging with an overlapping or touching span.
    pub fn add(&mut self, from: u64, to: u64) {
        if to <= from {
            return;
        }
        for s in self.spans[..self.len].iter_mut() {
            if from <= s.1 && to >= s.0 {
                s.0 = s.0.min(from);
                s.1 = s.1.max(to);
                return;
            }
        }
        if self.len == SPANS {
            // Fail closed: widen the last span to cover the new one.
            self.overflowed = true;
            let last = &mut self.spans[SPANS - 1];
            last.0 = last.0.min(from);
            last.1 = last.1.max(to);
            return;
        }
        self.spans[self.len] = (from, to);
        self.len += 1;
    }

    /// True if the table had to merge spans to stay bounded since the last call.
    pub fn take_overflow(&mut self) -> bool {
        core::mem::take(&mut self.overflowed)
    }

    /// Drop spans that end at or before `pos`.
    pub fn prune(&mut self, pos: u64) {
        let mut i = 0;
        while i < self.len {
            if self.spans[i].1 <= pos {
                self.spans[i] = self.spans[self.len - 1];
                self.len -= 1;
            } else {
                i += 1;
            }
        }
    }

    /// Is sample `t` inside a span?
    #[inline]
    pub fn contains(&self, t: u64) -> bool {
        self.spans[..self.len].iter().any(|&(a, b)| t >= a && t < b)
    }

    /// Mask `out`, whose first sample is at `pos`, writing `silence` over every sample in a
    /// span.
    pub fn apply<T: Copy>(&self, pos: u64, out: &mut [T], silence: T) {
        let end = pos + out.len() as u64;
        for &(a, b) in &self.spans[..self.len] {
            if b <= pos || a >= end {
                continue;
            }
            let s = (a.max(pos) - pos) as usize;
            let e = (b.min(end) - pos) as usize;
            out[s..e].fill(silence);
        }
    }
}

/// A ring buffer that delays samples by a fixed number of samples. Starts filled with
/// silence, so output length always equals input length and the delay is constant.
#[derive(Debug, Clone)]
pub struct DelayLine<T: Copy> {
    buf: Vec<T>,
    head: usize,
    delay: usize,
}

impl<T: Copy> DelayLine<T> {
    /// A delay of `delay` samples, prefilled with `silence`.
    pub fn new(delay: usize, silence: T) -> Self {
        Self {
            buf: vec![silence; delay.max(1)],
            head: 0,
            delay,
        }
    }

    /// Delay in samples.
    pub fn delay(&self) -> usize {
        self.delay
    }

    /// Push `input` and write the same number of delayed samples to `out`.
    pub fn process(&mut self, input: &[T], out: &mut [T]) {
        debug_assert_eq!(input.len(), out.len());
        if self.delay == 0 {
            out.copy_from_slice(input);
            return;
        }
        let n = self.buf.len();
        let mut done = 0;
        while done < input.len() {
            let m = (n - self.head).min(input.len() - done);
            let (h, e) = (self.head, self.head + m);
            out[done..done + m].copy_from_slice(&self.buf[h..e]);
            self.buf[h..e].copy_from_slice(&input[done..done + m]);
            done += m;
            self.head = if e == n { 0 } else { e };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_merge_prune_and_apply() {
        let mut t = SpanTable::default();
        t.add(10, 20);
        t.add(20, 30);
        t.add(50, 60);
        assert!(t.contains(25) && !t.contains(30) && t.contains(55));
        let mut out = [1u8; 40];
        t.apply(5, &mut out, 0xFF);
        assert_eq!(out[4], 1);
        assert_eq!(out[5], 0xFF);
        assert_eq!(out[24], 0xFF);
        assert_eq!(out[25], 1);
        t.prune(30);
        assert!(!t.contains(25) && t.contains(55));
    }

    #[test]
    fn overflow_masks_more_not_less() {
        let mut t = SpanTable::default();
        for i in 0..100u64 {
            t.add(i * 10, i * 10 + 5);
        }
        assert!(t.take_overflow());
        for i in 0..100u64 {
            assert!(t.contains(i * 10 + 2));
        }
    }

    #[test]
    fn delay_line_delays() {
        let mut d = DelayLine::new(3, 0i16);
        let mut out = [0i16; 5];
        d.process(&[1, 2, 3, 4, 5], &mut out);
        assert_eq!(out, [0, 0, 0, 1, 2]);
        d.process(&[6, 7, 8, 9, 10], &mut out);
        assert_eq!(out, [3, 4, 5, 6, 7]);
    }
}
