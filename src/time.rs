//! Media time: a sample index together with the rate it counts at.
//!
//! Owns: the conversion between sample counts and milliseconds used in every event.
//! Must never: read a clock. Time in the core only ever comes in as an argument.

use serde::Serialize;

/// A position on a stream's media timeline: `sample` samples since the stream began, at
/// `rate` Hz. Copy, so it can travel in events without allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct MediaTime {
    /// Samples since the start of the stream.
    pub sample: u64,
    /// Sample rate of the stream in Hz.
    pub rate: u32,
}

impl MediaTime {
    /// A position `sample` samples into a stream at `rate` Hz.
    pub const fn new(sample: u64, rate: u32) -> Self {
        Self { sample, rate }
    }

    /// Milliseconds since the start of the stream.
    pub fn as_ms(self) -> f64 {
        if self.rate == 0 {
            return 0.0;
        }
        self.sample as f64 * 1000.0 / self.rate as f64
    }

    /// The same instant counted at another rate (rounded to the nearest sample).
    pub fn at_rate(self, rate: u32) -> Self {
        if self.rate == rate || self.rate == 0 {
            return Self::new(self.sample, rate);
        }
        let s = (self.sample as u128 * rate as u128 + self.rate as u128 / 2) / self.rate as u128;
        Self::new(s as u64, rate)
    }
}

/// Identifies one media channel (one direction of one call, or one channel of a file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ChannelId(pub u32);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_between_rates_and_ms() {
        let t = MediaTime::new(48_000, 48_000);
        assert_eq!(t.as_ms(), 1000.0);
        assert_eq!(t.at_rate(8000), MediaTime::new(8000, 8000));
        assert_eq!(MediaTime::new(1, 8000).at_rate(48_000).sample, 6);
    }
}
