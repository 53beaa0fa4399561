//! Reception statistics of the caller's stream as RFC 3550 (section 6.4.1 and appendix A)
//! defines them for a receiver report block: extended highest sequence number, packets
//! expected and lost (cumulative and since the last report), interarrival jitter, and the
//! time of the caller's last sender report. The gateway reports them to the caller itself
//! when downstream sends no RTCP of its own, so a caller's stack still learns what reaches
//! the gateway.
//!
//! Owns: that bookkeeping, fed one valid packet at a time with its arrival time (sans-IO:
//! the time is an argument). Must never: allocate, panic on any sequence number or timestamp
//! the network sends, or cost more than a few integer operations per packet.

/// Sequence numbers ahead of the highest by less than this continue the stream (RFC 3550
/// A.1's `MAX_DROPOUT`).
const MAX_DROPOUT: u16 = 3000;
/// Sequence numbers behind the highest by at most this are late or duplicate packets of the
/// same stream (`MAX_MISORDER`).
const MAX_MISORDER: u16 = 100;
/// Sequence number space.
const SEQ_MOD: u32 = 1 << 16;

/// One report block's worth of figures about the caller's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportFigures {
    /// The caller's SSRC (the source reported on).
    pub ssrc: u32,
    /// Share of packets lost since the previous report, in 256ths.
    pub fraction_lost: u8,
    /// Packets lost since the start (expected minus received; negative with duplicates),
    /// as RFC 3550's 24-bit signed field.
    pub cumulative_lost: u32,
    /// Cycles of the sequence number in the high 16 bits, highest received in the low.
    pub extended_highest: u32,
    /// Interarrival jitter, in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP time of the caller's last sender report (0: none yet).
    pub lsr: u32,
    /// Time since that report arrived, in 1/65536 s (0: none yet).
    pub dlsr: u32,
}

/// How a stream has fared, as its receiver sees it (RFC 3550's cumulative figures).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct StreamQuality {
    /// Packets received from the current source.
    pub received: u32,
    /// Packets expected but never received (negative when duplicates outnumber losses).
    pub lost: i64,
    /// Interarrival jitter, ms.
    pub jitter_ms: f64,
}

/// Reception state of the caller's current SSRC.
#[derive(Debug, Clone, Default)]
pub struct Reception {
    /// Clock rate of the caller's RTP timestamps.
    rate: u32,
    ssrc: Option<u32>,
    base_seq: u32,
    max_seq: u16,
    cycles: u32,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
    /// Previous packet's transit time (arrival minus timestamp, timestamp units).
    transit: Option<i64>,
    /// Jitter estimate scaled by 16 (RFC 3550 A.8's integer form).
    jitter16: u64,
    /// The caller's last sender report: middle 32 bits of its NTP time, and when it arrived.
    last_sr: Option<(u32, u64)>,
}

impl Reception {
    /// Statistics for a stream whose timestamps run at `rate` Hz.
    pub fn new(rate: u32) -> Self {
        Self {
            rate: rate.max(1),
            ..Self::default()
        }
    }

    fn restart(&mut self, ssrc: u32, seq: u16) {
        let (rate, last_sr) = (self.rate, self.last_sr);
        *self = Self {
            rate,
            ssrc: Some(ssrc),
            base_seq: u32::from(seq),
            max_seq: seq,
            // A sender report names its SSRC; it stays valid across our restart only if the
            // source is the same.
            last_sr: if self.ssrc == Some(ssrc) {
                last_sr
            } else {
                None
            },
            ..Self::default()
        };
    }

    /// A valid packet from the caller arrived at `now_us` (any monotonic microsecond clock).
    pub fn on_packet(&mut self, ssrc: u32, seq: u16, ts: u32, now_us: u64) {
        if self.ssrc != Some(ssrc) {
            self.restart(ssrc, seq);
        } else {
            let ahead = seq.wrapping_sub(self.max_seq);
            if ahead < MAX_DROPOUT {
                if seq < self.max_seq {
                    self.cycles += SEQ_MOD;
                }
                self.max_seq = seq;
            } else if self.max_seq.wrapping_sub(seq) > MAX_MISORDER {
                // A jump: the sender restarted its numbering. Count from here (RFC 3550
                // waits for a second packet to confirm it; the leg has already decided
                // whether to follow such a jump, so this just keeps the figures sane).
                self.restart(ssrc, seq);
            }
        }
        self.received = self.received.wrapping_add(1);
        // Jitter: how much the transit time varies from packet to packet.
        // u64 holds microseconds times a 192 kHz clock for over a year of call.
        let arrival = (now_us.saturating_mul(u64::from(self.rate)) / 1_000_000) as i64;
        let transit = arrival - i64::from(ts);
        if let Some(prev) = self.transit {
            // Timestamps wrap at 2^32: compare modulo that.
            let d = i64::from((transit - prev) as i32).unsigned_abs();
            self.jitter16 = self.jitter16 + d - ((self.jitter16 + 8) >> 4);
        }
        self.transit = Some(transit);
    }

    /// How the stream has fared so far, for status pages; `None` before the first packet.
    pub fn quality(&self) -> Option<StreamQuality> {
        self.ssrc?;
        let extended = self.cycles + u32::from(self.max_seq);
        let expected = extended.wrapping_sub(self.base_seq).wrapping_add(1);
        Some(StreamQuality {
            received: self.received,
            lost: i64::from(expected) - i64::from(self.received),
            jitter_ms: (self.jitter16 >> 4) as f64 * 1000.0 / f64::from(self.rate),
        })
    }

    /// The caller's sender report with NTP time `ntp` arrived at `now_us`.
    pub fn on_sender_report(&mut self, ssrc: u32, ntp: u64, now_us: u64) {
        if self.ssrc == Some(ssrc) {
            self.last_sr = Some(((ntp >> 16) as u32, now_us));
        }
    }

    /// The figures for a report block sent at `now_us`, and the start of the next report's
    /// interval; `None` before the first packet.
    pub fn report(&mut self, now_us: u64) -> Option<ReportFigures> {
        let ssrc = self.ssrc?;
        let extended = self.cycles + u32::from(self.max_seq);
        let expected = extended.wrapping_sub(self.base_seq).wrapping_add(1);
        let lost = i64::from(expected) - i64::from(self.received);
        // 24-bit signed, clamped.
        let cumulative = lost.clamp(-0x80_0000, 0x7f_ffff) as i32 as u32 & 0xff_ffff;
        let expected_interval = expected.wrapping_sub(self.expected_prior);
        let received_interval = self.received.wrapping_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = i64::from(expected_interval) - i64::from(received_interval);
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / i64::from(expected_interval)).min(255) as u8
        };
        let (lsr, dlsr) = match self.last_sr {
            Some((lsr, at)) => {
                let since = now_us.saturating_sub(at);
                (lsr, ((u128::from(since) << 16) / 1_000_000) as u32)
            }
            None => (0, 0),
        };
        Some(ReportFigures {
            ssrc,
            fraction_lost,
            cumulative_lost: cumulative,
            extended_highest: extended,
            jitter: (self.jitter16 >> 4) as u32,
            lsr,
            dlsr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SSRC: u32 = 0x1234_5678;

    #[test]
    fn a_steady_stream_has_no_loss_and_no_jitter() {
        let mut r = Reception::new(8000);
        for k in 0..100u32 {
            r.on_packet(
                SSRC,
                65_500u16.wrapping_add(k as u16),
                k * 160,
                1_000 + u64::from(k) * 20_000,
            );
        }
        let f = r.report(2_000_000).unwrap();
        assert_eq!(f.ssrc, SSRC);
        assert_eq!((f.fraction_lost, f.cumulative_lost, f.jitter), (0, 0, 0));
        // 65 500 + 99 wrapped once: one cycle, highest 63.
        assert_eq!(f.extended_highest, (1 << 16) + 63);
        assert_eq!((f.lsr, f.dlsr), (0, 0));
    }

    #[test]
    fn loss_reordering_and_duplicates_are_counted_as_rfc_3550_does() {
        let mut r = Reception::new(8000);
        let mut t = 0u64;
        let mut send = |r: &mut Reception, seq: u16| {
            t += 20_000;
            r.on_packet(SSRC, seq, u32::from(seq) * 160, t);
        };
        // 0..=9, with 3 and 7 missing, 5 and 6 swapped, 8 twice.
        for s in [0, 1, 2, 4, 6, 5, 8, 8, 9] {
            send(&mut r, s);
        }
        let f = r.report(1_000_000).unwrap();
        assert_eq!(f.extended_highest, 9);
        // Expected 10, received 9 (a duplicate counts): 1 lost.
        assert_eq!(f.cumulative_lost, 1);
        assert_eq!(f.fraction_lost, ((1u32 << 8) / 10) as u8);
        // The next interval: 10..=19 all there, nothing new lost.
        for s in 10..20 {
            send(&mut r, s);
        }
        let f = r.report(2_000_000).unwrap();
        assert_eq!((f.cumulative_lost, f.fraction_lost), (1, 0));
        // Half of the next ten lost.
        for s in (20..30).step_by(2) {
            send(&mut r, s);
        }
        let q = r.quality().unwrap();
        assert_eq!((q.received, q.lost), (24, 5));
        let f = r.report(3_000_000).unwrap();
        assert_eq!(f.extended_highest, 28);
        assert_eq!(f.cumulative_lost, 5);
        assert_eq!(f.fraction_lost, ((4u32 << 8) / 9) as u8);
    }

    #[test]
    fn jitter_follows_the_spread_of_arrivals() {
        let mut r = Reception::new(8000);
        // Arrivals alternately 0 and 4 ms late: |D| = 32 timestamp units per packet, so the
        // estimate converges on 32.
        for k in 0..400u32 {
            let late = if k % 2 == 0 { 0 } else { 4_000 };
            r.on_packet(SSRC, k as u16, k * 160, u64::from(k) * 20_000 + late);
        }
        let f = r.report(9_000_000).unwrap();
        assert!((30..=32).contains(&f.jitter), "jitter {}", f.jitter);
    }

    #[test]
    fn the_last_sender_report_and_the_delay_since_it_are_reported() {
        let mut r = Reception::new(8000);
        r.on_packet(SSRC, 1, 160, 0);
        // Another source's report is not ours to answer.
        r.on_sender_report(0xdead, 0x0001_2345_6789_0000, 0);
        assert_eq!(r.report(1).unwrap().lsr, 0);
        r.on_sender_report(SSRC, 0x0001_2345_6789_0000, 1_000_000);
        let f = r.report(1_500_000).unwrap();
        assert_eq!(f.lsr, 0x2345_6789);
        assert_eq!(f.dlsr, 1 << 15, "half a second in 1/65536 s");
    }

    #[test]
    fn a_new_source_or_a_renumbering_starts_the_figures_again() {
        let mut r = Reception::new(8000);
        assert!(
            r.report(0).is_none(),
            "nothing to report before the first packet"
        );
        for s in 0..10 {
            r.on_packet(SSRC, s, u32::from(s) * 160, u64::from(s) * 20_000);
        }
        r.on_packet(0x4242, 500, 0, 300_000);
        let f = r.report(400_000).unwrap();
        assert_eq!(
            (f.ssrc, f.extended_highest, f.cumulative_lost),
            (0x4242, 500, 0)
        );
        r.on_packet(0x4242, 30_000, 0, 320_000);
        let f = r.report(400_000).unwrap();
        assert_eq!((f.extended_highest, f.cumulative_lost), (30_000, 0));
    }

    #[test]
    fn any_input_is_handled() {
        let mut r = Reception::new(48_000);
        let mut x = 0x1234_5678_9abc_def0u64;
        for i in 0..50_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let ssrc = if x.is_multiple_of(97) {
                (x >> 8) as u32
            } else {
                SSRC
            };
            r.on_packet(
                ssrc,
                (x >> 16) as u16,
                (x >> 32) as u32,
                i * 20_000 + (x % 50_000),
            );
            if x.is_multiple_of(13) {
                r.on_sender_report(ssrc, x, i * 20_000);
            }
            if x.is_multiple_of(11) {
                let _ = r.report(x);
            }
        }
    }
}
