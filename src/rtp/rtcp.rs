//! RTCP across the gateway. Downstream receives the caller's audio under the gateway's own
//! SSRC, sequence numbers and timestamps (the leg renumbers it to keep the stream whole
//! through loss, telephone-events and resyncs), so the caller's RTCP relayed as it came
//! described a stream downstream never sees: its sender reports were ignored (no lip sync or
//! NTP mapping for a recorder that aligns by them) and the reports coming back named an SSRC
//! the caller does not have. Here each compound is rewritten in place on its way through:
//!
//! * caller to downstream: the caller's SSRC as sender (SR, RR, the first SDES chunk, BYE,
//!   feedback) becomes the gateway's; a sender report's RTP timestamp is moved to the
//!   gateway's timeline for the same media instant, and its packet and octet counts become
//!   what the gateway sent.
//! * downstream to caller: report blocks and feedback about the gateway's SSRC are made about
//!   the caller's, so the caller's stack matches them to its stream (round-trip time from
//!   LSR/DLSR then works end to end, since the caller's own sender reports reached downstream
//!   with their NTP times intact).
//!
//! Everything else (report blocks about other streams, APP, XR, the other SDES chunks) passes
//! unchanged. A compound that `rtcp-types` cannot validate is left alone and reported, and
//! the caller decides (the gateway relays it unchanged, as before).
//!
//! RTCP comes every few seconds per call, not per audio frame: validating a compound costs a
//! small allocation or two (here and in `rtcp-types`' SDES parse), which the audio path
//! never does.
//!
//! Owns: the field offsets of RFC 3550 / RFC 4585 packets it patches, after `rtcp-types` has
//! validated the lengths. Must never: write outside a packet it validated, or change a
//! packet's length.

use rtcp_types::Compound;

/// Why a compound was not rewritten.
#[derive(Debug, thiserror::Error)]
pub enum RtcpError {
    /// It does not validate; nothing was changed.
    #[error("RTCP compound not valid: {0}")]
    Invalid(String),
    /// It holds a sender report whose RTP time cannot be mapped yet (no media received):
    /// nothing was changed, and relaying it would hand downstream a wrong time mapping.
    #[error("RTCP sender report before any media")]
    NoTimeline,
}

const PT_SR: u8 = 200;
const PT_RR: u8 = 201;
const PT_SDES: u8 = 202;
const PT_BYE: u8 = 203;
const PT_RTPFB: u8 = 205;
const PT_PSFB: u8 = 206;
/// Size of a report block.
const BLOCK: usize = 24;

fn rd(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn wr(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// Validate `buf` as a compound and return each packet's (offset, length, type, count).
fn packets(buf: &[u8]) -> Result<impl Iterator<Item = (usize, usize, u8, usize)> + '_, RtcpError> {
    let c = Compound::parse(buf).map_err(|e| RtcpError::Invalid(e.to_string()))?;
    for p in c {
        if let Err(e) = p {
            return Err(RtcpError::Invalid(e.to_string()));
        }
    }
    let mut off = 0;
    Ok(std::iter::from_fn(move || {
        if off + 4 > buf.len() {
            return None;
        }
        let len = (usize::from(u16::from_be_bytes([buf[off + 2], buf[off + 3]])) + 1) * 4;
        let item = (off, len, buf[off + 1], usize::from(buf[off] & 0x1f));
        off += len;
        Some(item)
    }))
}

/// Rewrite a compound from the caller for downstream: the caller's SSRC as sender becomes
/// `ssrc_out`; a sender report's RTP timestamp goes through `map_ts` and its counts become
/// `packets` and `octets`. Returns how many packets were changed; if `map_ts` cannot map a
/// sender report's time ([`RtcpError::NoTimeline`]) nothing is changed.
pub fn to_downstream(
    buf: &mut [u8],
    ssrc_out: u32,
    map_ts: impl Fn(u32) -> Option<u32>,
    packets_sent: u32,
    octets_sent: u32,
) -> Result<usize, RtcpError> {
    let list: Vec<_> = packets(buf)?.collect();
    // The sender is whoever the first report names; RFC 3550 compounds start with one.
    let sender = list
        .iter()
        .find(|&&(_, len, pt, _)| (pt == PT_SR || pt == PT_RR) && len >= 8)
        .map(|&(off, ..)| rd(buf, off + 4));
    let Some(sender) = sender else {
        return Ok(0);
    };
    // Every sender report's time must map before anything is written.
    for &(off, len, pt, _) in &list {
        if pt == PT_SR
            && len >= 28
            && rd(buf, off + 4) == sender
            && map_ts(rd(buf, off + 16)).is_none()
        {
            return Err(RtcpError::NoTimeline);
        }
    }
    let mut changed = 0;
    for (off, len, pt, count) in list {
        match pt {
            PT_SR if len >= 28 && rd(buf, off + 4) == sender => {
                wr(buf, off + 4, ssrc_out);
                if let Some(ts) = map_ts(rd(buf, off + 16)) {
                    wr(buf, off + 16, ts);
                }
                wr(buf, off + 20, packets_sent);
                wr(buf, off + 24, octets_sent);
                changed += 1;
            }
            PT_RR | PT_RTPFB | PT_PSFB if len >= 8 && rd(buf, off + 4) == sender => {
                wr(buf, off + 4, ssrc_out);
                changed += 1;
            }
            PT_SDES if count > 0 && len >= 8 && rd(buf, off + 4) == sender => {
                wr(buf, off + 4, ssrc_out);
                changed += 1;
            }
            PT_BYE => {
                let mut hit = false;
                for i in 0..count {
                    let at = off + 4 + 4 * i;
                    if at + 4 <= off + len && rd(buf, at) == sender {
                        wr(buf, at, ssrc_out);
                        hit = true;
                    }
                }
                changed += usize::from(hit);
            }
            _ => {}
        }
    }
    Ok(changed)
}

/// Rewrite a compound from downstream for the caller: report blocks and feedback about
/// `ssrc_out` become about `caller_ssrc`. Returns how many packets were changed.
pub fn to_caller(buf: &mut [u8], ssrc_out: u32, caller_ssrc: u32) -> Result<usize, RtcpError> {
    let list: Vec<_> = packets(buf)?.collect();
    let mut changed = 0;
    for (off, len, pt, count) in list {
        let blocks = match pt {
            PT_SR => Some(off + 28),
            PT_RR => Some(off + 8),
            _ => None,
        };
        if let Some(first) = blocks {
            let mut hit = false;
            for i in 0..count {
                let at = first + BLOCK * i;
                if at + BLOCK <= off + len && rd(buf, at) == ssrc_out {
                    wr(buf, at, caller_ssrc);
                    hit = true;
                }
            }
            changed += usize::from(hit);
        }
        if (pt == PT_RTPFB || pt == PT_PSFB) && len >= 12 && rd(buf, off + 8) == ssrc_out {
            wr(buf, off + 8, caller_ssrc);
            changed += 1;
        }
    }
    Ok(changed)
}

/// Check that `buf` is a valid compound, changing nothing.
pub fn validate(buf: &[u8]) -> Result<(), RtcpError> {
    packets(buf).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtcp_types::{
        Bye, Compound, Packet, ReceiverReport, ReportBlock, RtcpPacketWriterExt, Sdes, SdesChunk,
        SdesItem, SenderReport,
    };

    fn write(c: rtcp_types::CompoundBuilder<'_>) -> Vec<u8> {
        let mut b = vec![0u8; 1500];
        let n = c.write_into(&mut b).unwrap();
        b.truncate(n);
        b
    }

    const CALLER: u32 = 0x1111_1111;
    const OURS: u32 = 0x7057_a11e;
    const OTHER: u32 = 0x2222_2222;

    fn caller_compound() -> Vec<u8> {
        write(
            Compound::builder()
                .add_packet(
                    SenderReport::builder(CALLER)
                        .ntp_timestamp(0x0102_0304_0506_0708)
                        .rtp_timestamp(1000)
                        .packet_count(7)
                        .octet_count(1120)
                        .add_report_block(ReportBlock::builder(OTHER).fraction_lost(3)),
                )
                .add_packet(Sdes::builder().add_chunk(
                    SdesChunk::builder(CALLER).add_item(SdesItem::builder(1, "caller@host")),
                ))
                .add_packet(Bye::builder().add_source(CALLER)),
        )
    }

    #[test]
    fn the_callers_report_names_the_gateways_stream() {
        let mut b = caller_compound();
        let n = to_downstream(&mut b, OURS, |ts| Some(ts + 500), 9, 1440).unwrap();
        assert_eq!(n, 3);
        let mut it = Compound::parse(&b).unwrap();
        let Some(Ok(Packet::Sr(sr))) = it.next() else {
            panic!("no SR")
        };
        assert_eq!(sr.ssrc(), OURS);
        assert_eq!(
            sr.ntp_timestamp(),
            0x0102_0304_0506_0708,
            "NTP time untouched"
        );
        assert_eq!(sr.rtp_timestamp(), 1500);
        assert_eq!((sr.packet_count(), sr.octet_count()), (9, 1440));
        let rb: Vec<_> = sr.report_blocks().collect();
        assert_eq!(
            (rb[0].ssrc(), rb[0].fraction_lost()),
            (OTHER, 3),
            "block kept"
        );
        let Some(Ok(Packet::Sdes(sdes))) = it.next() else {
            panic!("no SDES")
        };
        let chunk = sdes.chunks().next().unwrap();
        assert_eq!(chunk.ssrc(), OURS);
        assert_eq!(chunk.items().next().unwrap().value(), b"caller@host");
        let Some(Ok(Packet::Bye(bye))) = it.next() else {
            panic!("no BYE")
        };
        assert_eq!(bye.ssrcs().collect::<Vec<_>>(), vec![OURS]);
    }

    #[test]
    fn a_sender_report_before_any_media_is_refused_untouched() {
        let mut b = caller_compound();
        let before = b.clone();
        assert!(matches!(
            to_downstream(&mut b, OURS, |_| None, 0, 0),
            Err(RtcpError::NoTimeline)
        ));
        assert_eq!(b, before);
    }

    #[test]
    fn reports_about_the_gateways_stream_come_back_about_the_callers() {
        let mut b = write(
            Compound::builder().add_packet(
                ReceiverReport::builder(OTHER)
                    .add_report_block(ReportBlock::builder(OURS).cumulative_lost(4))
                    .add_report_block(ReportBlock::builder(0x3333_3333)),
            ),
        );
        assert_eq!(to_caller(&mut b, OURS, CALLER).unwrap(), 1);
        let mut it = Compound::parse(&b).unwrap();
        let Some(Ok(Packet::Rr(rr))) = it.next() else {
            panic!("no RR")
        };
        assert_eq!(rr.ssrc(), OTHER, "the reporter stays itself");
        let rb: Vec<_> = rr.report_blocks().collect();
        assert_eq!((rb[0].ssrc(), rb[0].cumulative_lost()), (CALLER, 4));
        assert_eq!(rb[1].ssrc(), 0x3333_3333);
    }

    #[test]
    fn invalid_compounds_are_refused_untouched() {
        let good = caller_compound();
        for cut in [0, 3, 7, 27, good.len() - 1] {
            let mut b = good[..cut].to_vec();
            let before = b.clone();
            assert!(
                to_downstream(&mut b, OURS, Some, 0, 0).is_err(),
                "cut {cut}"
            );
            assert!(to_caller(&mut b, OURS, CALLER).is_err());
            assert_eq!(b, before);
        }
        // Version 1, or a length past the end.
        let mut v1 = good.clone();
        v1[0] = (v1[0] & 0x3f) | 0x40;
        assert!(validate(&v1).is_err());
        let mut long = good.clone();
        long[3] = 0xff;
        assert!(validate(&long).is_err());
    }

    /// Random bytes and random corruptions of a valid compound never panic and never change
    /// the length.
    #[test]
    fn fuzzed_input_never_panics() {
        let mut rng = crate::signal::Rng::new(4733);
        let good = caller_compound();
        for i in 0..20_000 {
            let mut b = if i % 2 == 0 {
                let n = ((rng.next_u64() as u32) % 96) as usize;
                (0..n)
                    .map(|_| (rng.next_u64() as u32) as u8)
                    .collect::<Vec<u8>>()
            } else {
                let mut b = good.clone();
                for _ in 0..1 + (rng.next_u64() as u32) % 4 {
                    let at = ((rng.next_u64() as u32) as usize) % b.len();
                    b[at] = (rng.next_u64() as u32) as u8;
                }
                b
            };
            let n = b.len();
            let _ = to_downstream(&mut b, OURS, |t| Some(t ^ 5), 1, 2);
            let _ = to_caller(&mut b, OURS, CALLER);
            assert_eq!(b.len(), n);
        }
    }
}
