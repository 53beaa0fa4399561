//! The return path of a transcoded call: an Opus caller whose downstream leg was made G.711
//! (`downstream_codec`) hears downstream's G.711 as Opus again, in its own payload type at
//! 48 kHz. Relayed as it came, the caller's Opus decoder got G.711 packets it cannot play,
//! and the recorder (at the caller's 48 kHz) had nothing to put in its downstream channel.
//!
//! Each downstream packet is decoded, resampled 8 to 48 kHz (rubato's FFT resampler, 20 ms
//! chunks) and encoded as 20 ms Opus frames. The packets keep downstream's SSRC (so
//! downstream's RTCP still describes them); sequence numbers are our own, consecutive, and
//! timestamps are downstream's times six, so a pause downstream took (DTX) stays a pause.
//! The 48 kHz audio also goes to the recorder, placed by those timestamps, and downstream's
//! sender reports about the stream reach the caller on the same clock, with the counts of
//! what the caller was sent.
//!
//! Owns: that conversion and its numbering. Must never: allocate per packet (every buffer is
//! made with the call), or send the caller anything but its own codec.

use crate::codec::{Codec, FrameEncoder, OpusEncoder};
use crate::pipeline::ChunkResampler;
use crate::rtp::LegConfig;

/// Caller-side frame: 20 ms at 48 kHz.
const FRAME: usize = 960;
/// Largest G.711 payload taken (120 ms).
const MAX_IN: usize = 960;

/// Downstream G.711 back to an Opus caller.
pub struct ReturnTranscoder {
    down: Codec,
    down_pt: u8,
    caller_pt: u8,
    ratio: u32,
    up: ChunkResampler,
    enc: OpusEncoder,
    lin: Vec<i16>,
    pcm: Vec<i16>,
    filled: usize,
    opus: Vec<u8>,
    pkt: Vec<u8>,
    seq: u16,
    /// Caller-clock timestamp of the next frame out, once the first packet set it.
    ts: Option<u32>,
    /// Downstream timestamp expected next (to see pauses).
    next_in: Option<u32>,
    ssrc: u32,
    /// Caller-clock samples the frames out run behind downstream's time six since the last
    /// jump (audio still buffered then).
    behind: u32,
    /// Opus packets and payload octets sent to the caller (for downstream's sender reports).
    packets: u32,
    octets: u32,
    /// Timestamp of the last packet sent to the caller.
    last_sent: Option<u32>,
}

impl ReturnTranscoder {
    /// Downstream's sender reports about the stream this re-encodes, moved onto the caller's
    /// clock and counts (in place); other sources' reports pass as they came.
    pub fn rewrite_rtcp(&self, buf: &mut [u8]) -> Result<usize, crate::rtp::rtcp::RtcpError> {
        let (ratio, behind) = (self.ratio, self.behind);
        crate::rtp::rtcp::rescale_sender_reports(
            buf,
            self.ssrc,
            |t| t.wrapping_mul(ratio).wrapping_sub(behind),
            self.packets,
            self.octets,
        )
    }

    /// A sender report of the gateway's own about the stream it re-encodes for the caller,
    /// for when downstream sends no RTCP (whose reports [`rewrite_rtcp`](Self::rewrite_rtcp)
    /// would move onto this stream): its SSRC, wall-clock time `ntp`, the RTP time of that
    /// instant (the last packet's, run on by `since_us`, the time since it went out, on the
    /// 48 kHz clock), the Opus packet and octet counts, and `block` about the caller's stream.
    /// `None` before the first packet went out.
    pub fn own_report(
        &self,
        buf: &mut [u8],
        ntp: u64,
        since_us: u64,
        cname: &str,
        block: Option<crate::rtp::reception::ReportFigures>,
        bye: bool,
    ) -> Option<Result<usize, rtcp_types::RtcpWriteError>> {
        let last = self.last_sent?;
        let rate = u64::from(self.ratio) * 8000;
        let run_on = (since_us.min(3_600_000_000) * rate / 1_000_000) as u32;
        let r = crate::rtp::rtcp::OwnReport {
            ssrc: self.ssrc,
            ntp,
            rtp_ts: last.wrapping_add(run_on),
            packets: self.packets,
            octets: self.octets,
            cname,
            block,
        };
        Some(crate::rtp::rtcp::own_report(buf, &r, bye))
    }

    /// A transcoder for `leg`, if it is an Opus caller with a G.711 downstream leg.
    pub fn new(leg: &LegConfig) -> Option<Self> {
        let down = leg.downstream_codec?;
        if leg.codec != Codec::Opus || !down.is_g711() || !leg.rate.is_multiple_of(8000) {
            return None;
        }
        let up = ChunkResampler::between(8000, leg.rate, 50).ok()?;
        let enc = OpusEncoder::new(leg.opus_bitrate).ok()?;
        let max = enc.max_packet();
        Some(Self {
            down,
            down_pt: leg.downstream_pt.unwrap_or(leg.audio_pt),
            caller_pt: leg.audio_pt,
            ratio: leg.rate / 8000,
            up,
            enc,
            lin: vec![0; MAX_IN],
            pcm: vec![0; FRAME],
            filled: 0,
            opus: vec![0; max],
            pkt: vec![0; max + 12],
            seq: 0,
            ts: None,
            next_in: None,
            ssrc: 0,
            behind: 0,
            packets: 0,
            octets: 0,
            last_sent: None,
        })
    }

    /// One packet from downstream: `send` gets each Opus RTP packet for the caller, `audio`
    /// each 48 kHz frame with its SSRC and caller-clock timestamp (for the recorder). Anything
    /// that is not downstream's audio (telephone-events, comfort noise, junk) is dropped.
    pub fn packet(
        &mut self,
        buf: &[u8],
        mut send: impl FnMut(&[u8]),
        mut audio: impl FnMut(u32, u32, &[i16]),
    ) {
        let Ok(p) = rtp_types::RtpPacket::parse(buf) else {
            return;
        };
        if p.payload_type() != self.down_pt {
            return;
        }
        let pl = p.payload();
        let n = pl.len().min(MAX_IN);
        if n == 0 {
            return;
        }
        let (ts_in, ssrc) = (p.timestamp(), p.ssrc());
        let scaled = ts_in.wrapping_mul(self.ratio);
        // A new source, the first packet, or a jump (a pause, a restart): the frames out
        // continue from this packet's time. Audio still in the resampler and the frame
        // buffer belongs before the jump and goes out with the old times.
        let jumped = self.next_in != Some(ts_in) || ssrc != self.ssrc;
        if jumped {
            self.behind = self.filled as u32;
            self.ts = Some(scaled.wrapping_sub(self.behind));
            self.ssrc = ssrc;
        }
        self.next_in = Some(ts_in.wrapping_add(n as u32));
        for (o, &b) in self.lin[..n].iter_mut().zip(pl) {
            *o = self.down.decode_byte(b);
        }
        let Self {
            up,
            pcm,
            filled,
            enc,
            opus,
            pkt,
            seq,
            ts,
            ssrc,
            caller_pt,
            packets,
            octets,
            last_sent,
            ..
        } = self;
        let _ = up.push(&self.lin[..n], |y| {
            let mut i = 0;
            while i < y.len() {
                let m = (FRAME - *filled).min(y.len() - i);
                for (d, &v) in pcm[*filled..*filled + m].iter_mut().zip(&y[i..i + m]) {
                    *d = v.round().clamp(-32768.0, 32767.0) as i16;
                }
                *filled += m;
                i += m;
                if *filled == FRAME {
                    *filled = 0;
                    let at = ts.unwrap_or(0);
                    audio(*ssrc, at, pcm);
                    if let Ok(len) = enc.encode(pcm, opus) {
                        let b = rtp_types::RtpPacketBuilder::<&[u8], &[u8]>::new()
                            .payload_type(*caller_pt)
                            .sequence_number(*seq)
                            .timestamp(at)
                            .ssrc(*ssrc)
                            .payload(&opus[..len]);
                        if let Ok(w) = b.write_into(pkt) {
                            send(&pkt[..w]);
                            *seq = seq.wrapping_add(1);
                            *packets = packets.wrapping_add(1);
                            *octets = octets.wrapping_add(len as u32);
                            *last_sent = Some(at);
                        }
                    }
                    *ts = Some(at.wrapping_add(FRAME as u32));
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{linear_to_ulaw, FrameDecoder, OpusDecoder};

    fn leg() -> LegConfig {
        LegConfig {
            audio_pt: 111,
            codec: Codec::Opus,
            rate: 48_000,
            downstream_codec: Some(Codec::Pcmu),
            downstream_pt: Some(0),
            ..LegConfig::default()
        }
    }

    fn pcmu(seq: u16, ts: u32, f: f64) -> Vec<u8> {
        let pl: Vec<u8> = (0..160)
            .map(|i| {
                let t = (ts as f64 + i as f64) / 8000.0;
                linear_to_ulaw((8000.0 * (2.0 * std::f64::consts::PI * f * t).sin()) as i16)
            })
            .collect();
        let mut b = vec![0u8; 200];
        let n = rtp_types::RtpPacketBuilder::<&[u8], &[u8]>::new()
            .payload_type(0)
            .sequence_number(seq)
            .timestamp(ts)
            .ssrc(0xd0d0)
            .payload(pl.as_slice())
            .write_into(&mut b)
            .unwrap();
        b.truncate(n);
        b
    }

    /// Only for an Opus caller with a G.711 downstream leg.
    #[test]
    fn only_transcoded_opus_calls_get_one() {
        assert!(ReturnTranscoder::new(&leg()).is_some());
        assert!(ReturnTranscoder::new(&LegConfig::default()).is_none());
        let mut same = leg();
        same.downstream_codec = None;
        assert!(ReturnTranscoder::new(&same).is_none());
    }

    /// A 440 Hz tone from downstream reaches the caller as Opus in its payload type, one
    /// 20 ms frame per 20 ms packet, consecutive numbers, timestamps at 48 kHz that keep a
    /// pause downstream took, and decodes back to 440 Hz.
    #[test]
    fn g711_from_downstream_reaches_the_caller_as_opus() {
        let mut t = ReturnTranscoder::new(&leg()).unwrap();
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut frames = 0;
        for k in 0..50u32 {
            // 25 packets, then a 400 ms pause without packets (DTX), then 25 more.
            let ts = 1000 + 160 * k + if k >= 25 { 3200 } else { 0 };
            t.packet(
                &pcmu(k as u16, ts, 440.0),
                |p| out.push(p.to_vec()),
                |_, _, a| {
                    assert_eq!(a.len(), FRAME);
                    frames += 1;
                },
            );
        }
        assert_eq!(out.len(), 50);
        assert_eq!(frames, 50);
        let mut dec = OpusDecoder::new().unwrap();
        let mut pcm = vec![0i16; 960];
        let mut energy = (0.0, 0.0);
        for (i, b) in out.iter().enumerate() {
            let p = rtp_types::RtpPacket::parse(b).unwrap();
            assert_eq!(p.payload_type(), 111);
            assert_eq!(p.ssrc(), 0xd0d0);
            assert_eq!(p.sequence_number(), i as u16);
            if i > 0 && i != 25 {
                let prev = rtp_types::RtpPacket::parse(&out[i - 1])
                    .unwrap()
                    .timestamp();
                assert_eq!(p.timestamp().wrapping_sub(prev), 960, "packet {i}");
            }
            let n = dec.decode(p.payload(), &mut pcm).unwrap();
            if i >= 10 {
                // Goertzel at 440 Hz against the total.
                let w = 2.0 * std::f64::consts::PI * 440.0 / 48_000.0;
                let (mut s1, mut s2) = (0.0f64, 0.0f64);
                let mut tot = 0.0;
                for &x in &pcm[..n] {
                    let s0 = x as f64 + 2.0 * w.cos() * s1 - s2;
                    s2 = s1;
                    s1 = s0;
                    tot += (x as f64).powi(2);
                }
                let p440 = (s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2) * 2.0 / n as f64;
                energy.0 += p440;
                energy.1 += tot;
            }
        }
        let first = rtp_types::RtpPacket::parse(&out[0]).unwrap().timestamp();
        let after = rtp_types::RtpPacket::parse(&out[25]).unwrap().timestamp();
        assert_eq!(
            after.wrapping_sub(first),
            (25 * 160 + 3200) * 6,
            "the pause is kept"
        );
        assert!(
            energy.0 / energy.1 > 0.8,
            "440 Hz holds {:.2} of the decoded energy",
            energy.0 / energy.1
        );
    }
}
