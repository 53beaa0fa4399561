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
//!   with their NTP times intact). Where the caller hears downstream re-encoded (G.711 back to
//!   Opus), downstream's sender reports are moved onto the re-encoded stream's clock and
//!   counts ([`rescale_sender_reports`]).
//!
//! Everything else (report blocks about other streams, APP, XR, the other SDES chunks) passes
//! unchanged. A compound that `rtcp-types` cannot validate is left alone and reported, and
//! the caller decides (the gateway relays it unchanged, as before).
//!
//! A caller that sends no RTCP at all gets sender reports of the gateway's own towards
//! downstream instead ([`own_report`]), every few seconds and a BYE at the end; a downstream
//! that sends none leaves the caller with receiver reports of the gateway's own about the
//! caller's stream ([`own_receiver_report`], figures from [`super::reception`]).
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

/// A sender report of the gateway's own about the stream it sends downstream, for a caller
/// that sends no RTCP (a WebRTC publisher, whose RTCP ends at the gateway's WebRTC stack, or
/// a plain RTP endpoint with RTCP off): without one, downstream has no wall-clock mapping for
/// the stream and no counts to measure loss against.
#[derive(Debug, Clone, Copy)]
pub struct OwnReport<'a> {
    /// The SSRC of the stream reported on (the gateway's towards downstream, or the one it
    /// re-encodes for the caller).
    pub ssrc: u32,
    /// Wall-clock time of the report, NTP format (see [`ntp_time`]).
    pub ntp: u64,
    /// The RTP timestamp of the same instant on the gateway's timeline.
    pub rtp_ts: u32,
    /// Packets sent so far.
    pub packets: u32,
    /// Payload octets sent so far.
    pub octets: u32,
    /// The canonical name of the source (RFC 3550 requires it in every compound).
    pub cname: &'a str,
    /// A report block about the stream coming the other way (downstream's return stream, as
    /// the caller would have sent it; or the caller's).
    pub block: Option<super::reception::ReportFigures>,
}

/// Seconds from the NTP era (1900) to the Unix epoch.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// `since_unix` (time since the Unix epoch) as a 64-bit NTP timestamp: seconds since 1900 in
/// the high word, the fraction of a second in the low one.
pub fn ntp_time(since_unix: std::time::Duration) -> u64 {
    let secs = since_unix.as_secs() + NTP_UNIX_OFFSET;
    let frac = (u64::from(since_unix.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// Write `r` into `buf` as a compound: a sender report (with its report block, if any), then
/// an SDES with the CNAME, then with `bye` a BYE for the SSRC (the stream has ended). Returns
/// its length.
pub fn own_report(
    buf: &mut [u8],
    r: &OwnReport<'_>,
    bye: bool,
) -> Result<usize, rtcp_types::RtcpWriteError> {
    use rtcp_types::{Bye, RtcpPacketWriterExt, Sdes, SdesChunk, SdesItem, SenderReport};
    let mut sr = SenderReport::builder(r.ssrc)
        .ntp_timestamp(r.ntp)
        .rtp_timestamp(r.rtp_ts)
        .packet_count(r.packets)
        .octet_count(r.octets);
    if let Some(f) = &r.block {
        sr = sr.add_report_block(report_block(f));
    }
    let sdes = Sdes::builder().add_chunk(
        SdesChunk::builder(r.ssrc).add_item(SdesItem::builder(SdesItem::CNAME, r.cname)),
    );
    let mut c = Compound::builder().add_packet(sr).add_packet(sdes);
    if bye {
        c = c.add_packet(Bye::builder().add_source(r.ssrc));
    }
    c.write_into(buf)
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

/// Write a receiver report of the gateway's own about the caller's stream into `buf`, for a
/// caller whose downstream sends no RTCP: one report block with `f`, from `reporter` (the
/// gateway's SSRC), then an SDES with `cname`, then with `bye` a BYE for `reporter`. Returns
/// its length.
pub fn own_receiver_report(
    buf: &mut [u8],
    reporter: u32,
    f: &super::reception::ReportFigures,
    cname: &str,
    bye: bool,
) -> Result<usize, rtcp_types::RtcpWriteError> {
    use rtcp_types::{Bye, ReceiverReport, RtcpPacketWriterExt, Sdes, SdesChunk, SdesItem};
    let block = report_block(f);
    let sdes = Sdes::builder().add_chunk(
        SdesChunk::builder(reporter).add_item(SdesItem::builder(SdesItem::CNAME, cname)),
    );
    let mut c = Compound::builder()
        .add_packet(ReceiverReport::builder(reporter).add_report_block(block))
        .add_packet(sdes);
    if bye {
        c = c.add_packet(Bye::builder().add_source(reporter));
    }
    c.write_into(buf)
}

fn report_block(f: &super::reception::ReportFigures) -> rtcp_types::ReportBlockBuilder {
    rtcp_types::ReportBlock::builder(f.ssrc)
        .fraction_lost(f.fraction_lost)
        .cumulative_lost(f.cumulative_lost)
        .extended_sequence_number(f.extended_highest)
        .interarrival_jitter(f.jitter)
        .last_sender_report_timestamp(f.lsr)
        .delay_since_last_sender_report_timestamp(f.dlsr)
}

/// The sender and NTP time of the first sender report in a valid compound.
pub fn sender_report_time(buf: &[u8]) -> Option<(u32, u64)> {
    Compound::parse(buf).ok()?.find_map(|p| match p {
        Ok(rtcp_types::Packet::Sr(sr)) => Some((sr.ssrc(), sr.ntp_timestamp())),
        _ => None,
    })
}

/// Rewrite the sender reports of `ssrc` in a compound for a receiver that gets that source's
/// stream re-encoded by the gateway (a G.711 downstream heard by an Opus caller): the RTP
/// timestamp goes through `map_ts` onto the re-encoded stream's clock, and the counts become
/// what the gateway sent of it. Everything else is left as it came. Returns how many
/// reports were changed.
pub fn rescale_sender_reports(
    buf: &mut [u8],
    ssrc: u32,
    map_ts: impl Fn(u32) -> u32,
    packets_sent: u32,
    octets_sent: u32,
) -> Result<usize, RtcpError> {
    let list: Vec<_> = packets(buf)?.collect();
    let mut changed = 0;
    for (off, len, pt, _) in list {
        if pt == PT_SR && len >= 28 && rd(buf, off + 4) == ssrc {
            wr(buf, off + 16, map_ts(rd(buf, off + 16)));
            wr(buf, off + 20, packets_sent);
            wr(buf, off + 24, octets_sent);
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

    #[test]
    fn own_report_is_a_valid_compound_with_what_was_asked() {
        let r = OwnReport {
            ssrc: OURS,
            ntp: ntp_time(std::time::Duration::new(1_700_000_000, 500_000_000)),
            rtp_ts: 123_456,
            packets: 250,
            octets: 40_000,
            cname: "tonewall-call-1",
            block: None,
        };
        for bye in [false, true] {
            let mut b = [0u8; 256];
            let n = own_report(&mut b, &r, bye).unwrap();
            let got: Vec<_> = Compound::parse(&b[..n])
                .unwrap()
                .map(|p| p.unwrap())
                .collect();
            assert_eq!(got.len(), 2 + usize::from(bye));
            let Packet::Sr(sr) = &got[0] else {
                panic!("a compound starts with the sender report")
            };
            assert_eq!(
                (
                    sr.ssrc(),
                    sr.rtp_timestamp(),
                    sr.packet_count(),
                    sr.octet_count()
                ),
                (OURS, 123_456, 250, 40_000)
            );
            // 1 700 000 000 s after 1970 is 3 908 988 800 s after 1900; half a second is 2^31.
            assert_eq!(sr.ntp_timestamp(), (3_908_988_800u64 << 32) | (1 << 31));
            assert_eq!(sr.n_reports(), 0);
            let Packet::Sdes(sdes) = &got[1] else {
                panic!("then the SDES")
            };
            let chunk = sdes.chunks().next().unwrap();
            assert_eq!(chunk.ssrc(), OURS);
            let item = chunk.items().next().unwrap();
            assert_eq!(
                (item.type_(), item.value()),
                (SdesItem::CNAME, &b"tonewall-call-1"[..])
            );
            if bye {
                let Packet::Bye(b) = &got[2] else {
                    panic!("then the BYE")
                };
                assert_eq!(b.ssrcs().collect::<Vec<_>>(), vec![OURS]);
            }
            // What the gateway writes, its own relay path reads as valid too.
            validate(&b[..n]).unwrap();
        }
        // A buffer too small is an error, never a panic or a cut compound.
        assert!(own_report(&mut [0u8; 20], &r, true).is_err());
    }

    #[test]
    fn sender_reports_of_a_reencoded_source_move_to_its_clock() {
        let sr = |ssrc| {
            SenderReport::builder(ssrc)
                .ntp_timestamp(7 << 32)
                .rtp_timestamp(16_000)
                .packet_count(100)
                .octet_count(16_000)
        };
        let mut b = write(
            Compound::builder()
                .add_packet(sr(OTHER))
                .add_packet(sr(CALLER).add_report_block(ReportBlock::builder(OURS))),
        );
        let n = rescale_sender_reports(&mut b, OTHER, |t| t * 6 - 480, 98, 9_000).unwrap();
        assert_eq!(n, 1);
        let got: Vec<_> = Compound::parse(&b).unwrap().map(|p| p.unwrap()).collect();
        let (Packet::Sr(a), Packet::Sr(other)) = (&got[0], &got[1]) else {
            panic!("two sender reports")
        };
        assert_eq!(
            (
                a.ssrc(),
                a.ntp_timestamp(),
                a.rtp_timestamp(),
                a.packet_count(),
                a.octet_count()
            ),
            (OTHER, 7 << 32, 95_520, 98, 9_000)
        );
        // Another source's report, and its blocks, are left as they came.
        assert_eq!((other.rtp_timestamp(), other.packet_count()), (16_000, 100));
        assert_eq!(other.report_blocks().next().unwrap().ssrc(), OURS);
        assert!(rescale_sender_reports(&mut [0x80, 200, 0, 9], OTHER, |t| t, 0, 0).is_err());
    }

    #[test]
    fn own_receiver_report_carries_the_figures() {
        let f = crate::rtp::reception::ReportFigures {
            ssrc: CALLER,
            fraction_lost: 25,
            cumulative_lost: 3,
            extended_highest: (1 << 16) + 7,
            jitter: 12,
            lsr: 0x2345_6789,
            dlsr: 1 << 15,
        };
        let mut b = [0u8; 256];
        let n = own_receiver_report(&mut b, OURS, &f, "tonewall-x", true).unwrap();
        let got: Vec<_> = Compound::parse(&b[..n])
            .unwrap()
            .map(|p| p.unwrap())
            .collect();
        let Packet::Rr(rr) = &got[0] else {
            panic!("a receiver report first")
        };
        assert_eq!(rr.ssrc(), OURS);
        let blk = rr.report_blocks().next().unwrap();
        assert_eq!(
            (
                blk.ssrc(),
                blk.fraction_lost(),
                blk.cumulative_lost(),
                blk.extended_sequence_number(),
                blk.interarrival_jitter(),
                blk.last_sender_report_timestamp(),
                blk.delay_since_last_sender_report_timestamp()
            ),
            (CALLER, 25, 3, (1 << 16) + 7, 12, 0x2345_6789, 1 << 15)
        );
        assert!(matches!(got[1], Packet::Sdes(_)));
        assert!(matches!(&got[2], Packet::Bye(b) if b.ssrcs().collect::<Vec<_>>() == vec![OURS]));
        assert_eq!(sender_report_time(&b[..n]), None);
        let sr =
            write(Compound::builder().add_packet(SenderReport::builder(CALLER).ntp_timestamp(77)));
        assert_eq!(sender_report_time(&sr), Some((CALLER, 77)));
        assert_eq!(sender_report_time(b"junk"), None);
    }

    #[test]
    fn own_sender_report_carries_a_block_about_the_return_stream() {
        let f = crate::rtp::reception::ReportFigures {
            ssrc: OTHER,
            fraction_lost: 3,
            cumulative_lost: 9,
            extended_highest: 500,
            jitter: 40,
            lsr: 0x1111_2222,
            dlsr: 777,
        };
        let r = OwnReport {
            ssrc: OURS,
            ntp: 1 << 32,
            rtp_ts: 1,
            packets: 2,
            octets: 3,
            cname: "c",
            block: Some(f),
        };
        let mut b = [0u8; 256];
        let n = own_report(&mut b, &r, false).unwrap();
        let Some(Ok(Packet::Sr(sr))) = Compound::parse(&b[..n]).unwrap().next() else {
            panic!("no sender report")
        };
        let blk = sr.report_blocks().next().unwrap();
        assert_eq!(
            (
                blk.ssrc(),
                blk.fraction_lost(),
                blk.cumulative_lost(),
                blk.extended_sequence_number()
            ),
            (OTHER, 3, 9, 500)
        );
        assert_eq!(
            (
                blk.interarrival_jitter(),
                blk.last_sender_report_timestamp(),
                blk.delay_since_last_sender_report_timestamp()
            ),
            (40, 0x1111_2222, 777)
        );
    }
}
