//! The caller leg: one incoming RTP stream (G.711 or L16, plus RFC 4733 telephone-events)
//! turned into one outgoing, masked RTP stream with its own SSRC, sequence numbers and
//! timestamp clock, and the same masked audio as linear samples for the sinks.
//!
//! Owns: the input stream's sequence/timestamp state (loss, reordering, duplicates, SSRC
//! changes, timestamp jumps), the output stream's numbering, silence synthesis, and turning
//! telephone-events into digits. Masking itself is the pipeline's.
//!
//! Must never: forward a telephone-event packet or an audio packet that did not pass the
//! pipeline; emit output out of order or with a hole in its numbering; repeat earlier audio
//! to conceal a loss (it could be a tone); allocate, read a clock or log a value in
//! [`CallerLeg::handle_packet`] / [`CallerLeg::handle_timeout`]; panic on any input.

use rtp_types::{RtpPacket, RtpPacketBuilder};
use serde::Deserialize;

#[cfg_attr(not(feature = "opus"), allow(unused_imports))]
use super::frames::{FrameOut, FrameSrc, FrameStage};
use super::reorder::{ReorderBuffer, SeqClass, Sequencer};
use super::rtcp::RtcpError;
use super::telephone_event::{EventState, EventTracker, Observed, TelephoneEvent};
use crate::codec::Codec;
use crate::dtmf::Digit;
use crate::event::Outputs;
use crate::pipeline::{ChannelPipeline, PipelineConfig, PipelineError};
use crate::time::{ChannelId, MediaTime};

/// Longest audio payload accepted, ms. Phones use 10 to 60 ms, but streaming tools fill the
/// MTU (ffmpeg's RTP muxer sends up to 1448 bytes of G.711, 181 ms, by default); the scratch
/// buffers are sized for this, so anything longer is malformed rather than a reason to
/// allocate.
pub const MAX_PACKET_MS: u32 = 200;
/// Audio is suppressed this long after a telephone-event's end (some senders' in-band tone
/// trails the event).
pub const EVENT_HANGOVER_MS: u32 = 40;
/// A telephone-event whose end packets never arrive is taken as over once audio runs this far
/// past the time its last packet covered (senders update at least every 50 ms or so).
pub const EVENT_EXPIRY_MS: u32 = 250;
/// An ended telephone-event is forgotten once audio is this far past it (late copies of its
/// packets are long gone by then).
pub const EVENT_FORGET_MS: u32 = 10_000;
/// A forward timestamp jump larger than this is not a pause but a new timebase: the output
/// continues contiguously instead of jumping with it.
pub const MAX_TS_JUMP_S: u32 = 60;
/// Smallest size of a held-packet slot, bytes (an Ethernet MTU's worth of RTP).
const MIN_SLOT: usize = 1500;
/// RTP header room beyond the payload a held packet may need: fixed header, 15 CSRCs, a
/// modest header extension and padding.
const HEADER_ROOM: usize = 12 + 60 + 4 + 256 + 255;
/// Largest `reorder_window` (the duplicate map covers 64 packets).
pub const MAX_REORDER_WINDOW: u16 = 64;
/// Largest `max_fill_ms`: longer gaps are resynchronised, never filled.
pub const MAX_FILL_MS: u32 = 10_000;
/// A lost frame-codec packet is concealed with silence, not extrapolation, this close to a
/// masked tone (concealment continues what it heard last, and that may be a tone's onset).
pub const CONCEAL_GUARD_MS: u32 = 200;

/// How a caller leg is set up.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LegConfig {
    /// Payload type of the audio codec.
    pub audio_pt: u8,
    /// Audio codec: PCMU, PCMA, `Pcm16` for RTP L16 (mono, big-endian on the wire), or Opus.
    pub codec: Codec,
    /// Sample rate: 8000 for G.711; L16 8000 to 192000; Opus 48000 (its RTP clock).
    pub rate: u32,
    /// Codec towards downstream when it differs from the caller's: only Opus calls can change
    /// it, to PCMU or PCMA at 8 kHz. `None` keeps the caller's codec.
    pub downstream_codec: Option<Codec>,
    /// Payload type towards downstream; `None` keeps `audio_pt`.
    pub downstream_pt: Option<u8>,
    /// Bit rate of the downstream Opus encoder, bit/s.
    pub opus_bitrate: u32,
    /// Opus to Opus: forward the caller's packets unchanged wherever the masker left their
    /// audio untouched and re-encode only around masked audio (see `rtp::splice`). `false`
    /// re-encodes every packet at `opus_bitrate` (a fixed downstream bit rate, at the cost
    /// of a libopus encode per packet, its 6.5 ms look-ahead and a generation of quality).
    pub opus_passthrough: bool,
    /// Payload type of RFC 4733 telephone-events (same clock rate as the audio), if any.
    pub telephone_event_pt: Option<u8>,
    /// Size of the silence packets the leg synthesises, ms.
    pub fill_ms: u32,
    /// Most packets held while waiting for a missing one.
    pub reorder_window: u16,
    /// Longest wait for a missing packet, ms.
    pub reorder_wait_ms: u32,
    /// Gaps up to this long are filled with silence; longer ones resynchronise, ms.
    pub max_fill_ms: u32,
    /// Our SSRC towards downstream, stable for the whole call.
    pub ssrc_out: u32,
    /// Look-ahead, detector, mask and capture settings. Its `codec` and `rate` are
    /// overwritten from the fields above.
    pub pipeline: PipelineConfig,
}

impl Default for LegConfig {
    fn default() -> Self {
        Self {
            audio_pt: 0,
            codec: Codec::Pcmu,
            rate: 8000,
            downstream_codec: None,
            downstream_pt: None,
            opus_bitrate: 32_000,
            opus_passthrough: true,
            telephone_event_pt: Some(101),
            fill_ms: 20,
            reorder_window: 4,
            reorder_wait_ms: 30,
            max_fill_ms: 500,
            ssrc_out: 0x7057_A11E,
            pipeline: PipelineConfig::default(),
        }
    }
}

/// Where a caller leg delivers what it produces.
pub trait LegOutputs: Outputs {
    /// One masked RTP packet for the downstream leg.
    fn packet(&mut self, rtp: &[u8]);
    /// The masked audio that went downstream, as linear samples, at its position on the
    /// leg's media timeline (the timeline events' `at_sample` use).
    fn audio(&mut self, at: MediaTime, samples: &[i16]);
    /// A stream-level note (no digit values).
    fn stream(&mut self, ev: StreamEvent) {
        let _ = ev;
    }
}

/// Notes about the input stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEvent {
    /// The first RTP packet of the call was accepted.
    FirstPacket,
    /// The caller's SSRC changed (new source); the output continues unchanged.
    SsrcChanged,
    /// Sequence numbers or timestamps jumped; tracking started over.
    Resync,
}

/// Counters of one leg.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct LegStats {
    /// Datagrams handed to the leg.
    pub packets_in: u64,
    /// RTP packets sent downstream.
    pub packets_out: u64,
    /// Bytes handed to the leg.
    pub bytes_in: u64,
    /// Audio packets that went through the pipeline.
    pub audio_frames: u64,
    /// Telephone-event packets consumed (in order, duplicates excluded).
    pub telephone_event_packets: u64,
    /// Digits entered from telephone-events.
    pub digits_from_events: u64,
    /// Packets declared lost (replaced with silence).
    pub lost: u64,
    /// Packets dropped because their time was already emitted, including stray packets whose
    /// sequence number was never confirmed by a successor.
    pub late: u64,
    /// Copies of packets already received or held.
    pub duplicate: u64,
    /// Datagrams that are not valid RTP, or invalid payloads (empty, too long, odd L16).
    pub malformed: u64,
    /// Payload types that are neither audio nor telephone-event (RTCP counts here).
    pub unknown_pt: u64,
    /// Silence packets synthesised (loss, gaps, telephone-event time, end of call).
    pub filled_frames: u64,
    /// Changes of the caller's SSRC.
    pub ssrc_changes: u64,
    /// Payloads the codec refused to decode (sent on as silence).
    pub decode_errors: u64,
    /// Losses concealed with the codec's extrapolation rather than silence.
    pub concealed: u64,
    /// Sequence or timestamp resynchronisations.
    pub resyncs: u64,
    /// Opus to Opus: caller packets forwarded byte for byte (their audio left the masker
    /// unchanged).
    pub forwarded: u64,
    /// Opus to Opus: caller packets or spans replaced by our own encoding (masked, concealed,
    /// synthesised, or inside the settle run after a splice).
    pub reencoded: u64,
}

/// A caller leg could not be built.
#[derive(Debug, thiserror::Error)]
pub enum LegError {
    /// Codec and rate do not go together.
    #[error(
        "codec {codec:?} cannot run at {rate} Hz (G.711 needs 8000; L16 8000 to 192000; Opus 48000)"
    )]
    Rate {
        /// The codec asked for.
        codec: Codec,
        /// The rate asked for.
        rate: u32,
    },
    /// A payload type outside 0..=127, inside RTCP's 72..=76, or audio and events sharing one.
    #[error("payload type {0} is unusable (0 to 127, not 72 to 76, audio and events distinct)")]
    PayloadType(u8),
    /// `fill_ms` must be 1 to 120.
    #[error("fill_ms must be 1 to {MAX_PACKET_MS}, got {0}")]
    FillMs(u32),
    /// `reorder_window` too large.
    #[error("reorder_window must be at most {MAX_REORDER_WINDOW}, got {0}")]
    ReorderWindow(u16),
    /// `max_fill_ms` too large.
    #[error("max_fill_ms must be at most {MAX_FILL_MS}, got {0}")]
    MaxFill(u32),
    /// The downstream codec cannot be produced from the caller's.
    #[error("cannot send {to:?} downstream from a {from:?} caller (only Opus to PCMU/PCMA)")]
    Transcode {
        /// The caller's codec.
        from: Codec,
        /// The downstream codec asked for.
        to: Codec,
    },
    /// This build has no Opus (the `opus` cargo feature is off), or libopus refused to start.
    #[error("Opus is not available: {0}")]
    Opus(&'static str),
    /// The pipeline refused its configuration (look-ahead, resampler).
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

/// The pipeline and its scratch buffers, in the codec's own sample type.
enum Pipe {
    /// G.711 bytes.
    G711 {
        p: ChannelPipeline<u8>,
        inp: Vec<u8>,
        outp: Vec<u8>,
    },
    /// Linear samples: L16, or a frame codec's decoded PCM (`frames` then decodes before and
    /// encodes after the pipeline).
    L16 {
        p: ChannelPipeline<i16>,
        inp: Vec<i16>,
        outp: Vec<i16>,
        frames: Option<Box<FrameStage>>,
    },
}

impl Pipe {
    fn delay(&self) -> usize {
        match self {
            Pipe::G711 { p, .. } => p.delay(),
            Pipe::L16 { p, .. } => p.delay(),
        }
    }

    fn in_pos(&self) -> u64 {
        match self {
            Pipe::G711 { p, .. } => p.input_time().sample,
            Pipe::L16 { p, .. } => p.input_time().sample,
        }
    }
}

/// Audio for one step: the packet's payload or synthesised silence.
#[derive(Clone, Copy)]
enum Src<'a> {
    Payload(&'a [u8]),
    /// The time of packets that never arrived (a frame codec may conceal it).
    Lost,
    Silence,
}

/// The output stream: our SSRC, our numbering, our clock.
pub(super) struct OutStream {
    ssrc: u32,
    pt: u8,
    /// Rate of the audio handed to the sinks (the input's).
    rate: u32,
    /// Input clock ticks per output clock tick (6 when 48 kHz Opus leaves as 8 kHz G.711).
    clock_div: u32,
    seq: u16,
    ts: u32,
    /// Timestamp of the last packet sent (the RTP time of the moment it left, for our own
    /// sender reports).
    last_ts: u32,
    /// Samples emitted so far.
    emitted: u64,
    /// Pipeline delay: the first `delay` samples emitted are the look-ahead's initial
    /// silence, which has no place on the media timeline.
    delay: u64,
    /// Set the marker on the next packet (start, resync, new source).
    marker_pending: bool,
    /// Timestamp advance to apply before the next packet (a pause the sender took).
    ts_jump: u32,
    packets: u64,
    /// Payload bytes sent (for RTCP sender reports).
    octets: u64,
    pkt: Vec<u8>,
    /// L16 payload in network byte order.
    be: Vec<u8>,
    lin: Vec<i16>,
}

impl OutStream {
    /// Send one packet carrying `payload` (wire bytes) whose linear form is `lin`, and hand
    /// `lin` to the sinks.
    fn send<O: LegOutputs + ?Sized>(
        &mut self,
        payload: &[u8],
        lin: &[i16],
        marker: bool,
        out: &mut O,
    ) {
        self.packet(payload, lin.len() as u32, marker, out);
        self.audio(lin, out);
    }

    /// Send one packet covering `ts_adv` ticks of the output clock.
    pub(super) fn packet<O: LegOutputs + ?Sized>(
        &mut self,
        payload: &[u8],
        ts_adv: u32,
        marker: bool,
        out: &mut O,
    ) {
        self.ts = self
            .ts
            .wrapping_add(core::mem::take(&mut self.ts_jump) / self.clock_div);
        // Take the pending marker even when the packet has its own, so it is not carried over.
        let pending = core::mem::take(&mut self.marker_pending);
        let marker = marker || pending;
        let b = RtpPacketBuilder::<&[u8], &[u8]>::new()
            .payload_type(self.pt)
            .marker_bit(marker)
            .sequence_number(self.seq)
            .timestamp(self.ts)
            .ssrc(self.ssrc)
            .payload(payload);
        // The buffer is sized for the largest payload plus the header, and the payload type
        // was validated, so this cannot fail; if it ever did, dropping is the safe choice
        // (numbering stays contiguous because nothing advanced).
        let Ok(len) = b.write_into(&mut self.pkt) else {
            return;
        };
        out.packet(&self.pkt[..len]);
        self.last_ts = self.ts;
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(ts_adv);
        self.packets += 1;
        self.octets += payload.len() as u64;
    }

    /// Let `ts_adv` ticks pass with no packet (the receiver sees a loss, never audio).
    pub(super) fn skip(&mut self, ts_adv: u32) {
        self.ts = self.ts.wrapping_add(ts_adv);
    }

    /// Masked audio leaving the pipeline, for the sinks, on the input's media timeline.
    pub(super) fn audio<O: LegOutputs + ?Sized>(&mut self, lin: &[i16], out: &mut O) {
        let n = lin.len() as u64;
        let k = self.emitted;
        self.emitted += n;
        let skip = self.delay.saturating_sub(k).min(n) as usize;
        if skip < lin.len() {
            let at = MediaTime::new(k + skip as u64 - self.delay, self.rate);
            out.audio(at, &lin[skip..]);
        }
    }
}

/// A packet already taken apart (after validation), for in-order processing.
#[derive(Clone, Copy)]
struct Parsed<'a> {
    ssrc: u32,
    ts: u32,
    marker: bool,
    kind: Kind<'a>,
}

#[derive(Clone, Copy)]
enum Kind<'a> {
    Audio(&'a [u8]),
    Event(TelephoneEvent),
    /// A payload type we do not carry (comfort noise, say) from the current source: it
    /// produces nothing, but it holds a sequence number, so it is sequenced like the rest
    /// (otherwise every one would look like a loss).
    Other,
}

/// One caller's RTP stream through the masker. Sans-IO: the caller hands in datagrams and
/// the time, and gets packets, audio and events back through [`LegOutputs`].
pub struct CallerLeg {
    cfg: LegConfig,
    channel: ChannelId,
    pipe: Pipe,
    out_stream: OutStream,
    /// Largest audio payload in samples.
    max_samples: usize,
    fill: usize,
    max_fill: u32,
    hangover: u32,
    expiry: u32,
    /// Samples after which an ended event is forgotten.
    forget: u32,
    max_jump: u32,
    held: ReorderBuffer,
    wait_us: u64,
    seq: Sequencer,
    /// A packet that jumped (new SSRC or far-off sequence number), waiting for its successor
    /// to confirm it: (ssrc, seq, bytes held in `probation`).
    probation_key: Option<(u32, u16, usize)>,
    probation: Vec<u8>,
    ssrc_in: Option<u32>,
    /// Reception figures of the caller's stream (for receiver reports of our own).
    reception: super::reception::Reception,
    /// Input timestamp of the next sample the pipeline expects (it corresponds to the
    /// pipeline's input position).
    next_ts: Option<u32>,
    /// Start of the time filled with silence on behalf of the current telephone-event.
    event_fill_from: Option<u32>,
    events: EventTracker,
    /// Pipeline position of the current telephone-event's onset.
    event_onset: u64,
    /// After an event ended: audio before this timestamp is replaced with silence.
    suppress_until: Option<u32>,
    /// A sequence resync or source change has just been counted; a timestamp jump in the same
    /// packet is part of it.
    fresh_resync: bool,
    stats: LegStats,
    last_packet_us: Option<u64>,
    finished: bool,
}

impl CallerLeg {
    /// Build a leg. Allocates every buffer the media path will use.
    pub fn new(cfg: LegConfig, channel: ChannelId) -> Result<Self, LegError> {
        let rate_ok = match cfg.codec {
            Codec::Pcmu | Codec::Pcma => cfg.rate == 8000,
            Codec::Pcm16 => (8000..=192_000).contains(&cfg.rate),
            Codec::Opus => cfg.rate == 48_000,
        };
        if !rate_ok {
            return Err(LegError::Rate {
                codec: cfg.codec,
                rate: cfg.rate,
            });
        }
        let pt_ok = |pt: u8| pt <= 127 && !(72..=76).contains(&pt);
        if !pt_ok(cfg.audio_pt) {
            return Err(LegError::PayloadType(cfg.audio_pt));
        }
        if let Some(te) = cfg.telephone_event_pt {
            if !pt_ok(te) || te == cfg.audio_pt {
                return Err(LegError::PayloadType(te));
            }
        }
        if cfg.fill_ms == 0 || cfg.fill_ms > MAX_PACKET_MS {
            return Err(LegError::FillMs(cfg.fill_ms));
        }
        if cfg.reorder_window > MAX_REORDER_WINDOW {
            return Err(LegError::ReorderWindow(cfg.reorder_window));
        }
        if cfg.max_fill_ms > MAX_FILL_MS {
            return Err(LegError::MaxFill(cfg.max_fill_ms));
        }
        let down_codec = cfg.downstream_codec.unwrap_or(cfg.codec);
        let transcode_ok = down_codec == cfg.codec
            || (cfg.codec == Codec::Opus && matches!(down_codec, Codec::Pcmu | Codec::Pcma));
        if !transcode_ok {
            return Err(LegError::Transcode {
                from: cfg.codec,
                to: down_codec,
            });
        }
        let down_pt = cfg.downstream_pt.unwrap_or(cfg.audio_pt);
        if !pt_ok(down_pt) {
            return Err(LegError::PayloadType(down_pt));
        }
        let samples = |ms: u32| (ms as u64 * cfg.rate as u64 / 1000) as usize;
        // A frame codec is masked as the linear PCM it decodes to.
        let pipe_codec = if cfg.codec == Codec::Opus {
            Codec::Pcm16
        } else {
            cfg.codec
        };
        let pcfg = PipelineConfig {
            codec: pipe_codec,
            rate: cfg.rate,
            ..cfg.pipeline
        };
        let max_samples = samples(MAX_PACKET_MS);
        let fill = samples(cfg.fill_ms).max(1);
        let (pipe, delay) = match cfg.codec {
            Codec::Pcm16 | Codec::Opus => {
                let p = ChannelPipeline::<i16>::new(pcfg, channel)?;
                let d = p.delay();
                let n = max_samples.max(d);
                let frames = match cfg.codec {
                    Codec::Opus => Some(Box::new(opus_stage(&cfg, down_codec, d, max_samples)?)),
                    _ => None,
                };
                (
                    Pipe::L16 {
                        p,
                        inp: vec![0; n],
                        outp: vec![0; n],
                        frames,
                    },
                    d,
                )
            }
            Codec::Pcmu | Codec::Pcma => {
                let p = ChannelPipeline::<u8>::new(pcfg, channel)?;
                let d = p.delay();
                let n = max_samples.max(d);
                (
                    Pipe::G711 {
                        p,
                        inp: vec![0; n],
                        outp: vec![0; n],
                    },
                    d,
                )
            }
        };
        let bytes_per_sample = if cfg.codec == Codec::Pcm16 { 2 } else { 1 };
        let max_payload = max_samples * bytes_per_sample;
        let slot = (max_payload + HEADER_ROOM).max(MIN_SLOT);
        let scratch = max_samples.max(delay);
        let cfg = LegConfig {
            pipeline: pcfg,
            ..cfg
        };
        // Start our numbering from bits of our SSRC: different per call, reproducible in tests.
        let s = cfg.ssrc_out;
        Ok(Self {
            out_stream: OutStream {
                ssrc: s,
                pt: down_pt,
                rate: cfg.rate,
                clock_div: if down_codec.is_g711() && cfg.codec == Codec::Opus {
                    cfg.rate / 8000
                } else {
                    1
                },
                seq: (s ^ s >> 16) as u16,
                ts: s.rotate_left(11) ^ 0x5A5A_0000,
                last_ts: 0,
                emitted: 0,
                delay: delay as u64,
                marker_pending: true,
                ts_jump: 0,
                octets: 0,
                packets: 0,
                pkt: vec![0; 12 + scratch * bytes_per_sample],
                be: vec![0; scratch * 2],
                lin: vec![0; scratch],
            },
            pipe,
            max_samples,
            fill,
            max_fill: samples(cfg.max_fill_ms) as u32,
            hangover: samples(EVENT_HANGOVER_MS) as u32,
            expiry: samples(EVENT_EXPIRY_MS) as u32,
            forget: samples(EVENT_FORGET_MS) as u32,
            max_jump: (MAX_TS_JUMP_S as u64 * cfg.rate as u64).min(i32::MAX as u64) as u32,
            held: ReorderBuffer::new(cfg.reorder_window as usize, slot),
            wait_us: cfg.reorder_wait_ms as u64 * 1000,
            seq: Sequencer::default(),
            probation_key: None,
            probation: vec![0; slot],
            ssrc_in: None,
            reception: super::reception::Reception::new(cfg.rate),
            next_ts: None,
            event_fill_from: None,
            events: EventTracker::default(),
            event_onset: 0,
            suppress_until: None,
            fresh_resync: false,
            stats: LegStats::default(),
            last_packet_us: None,
            finished: false,
            channel,
            cfg,
        })
    }

    /// The configuration in force (with the pipeline's codec and rate filled in).
    pub fn config(&self) -> &LegConfig {
        &self.cfg
    }

    /// The channel this leg reports events on.
    pub fn channel(&self) -> ChannelId {
        self.channel
    }

    /// Counters so far.
    pub fn stats(&self) -> LegStats {
        let (decode_errors, concealed, splice) = match &self.pipe {
            Pipe::L16 {
                frames: Some(st), ..
            } => (st.decode_errors, st.concealed, st.splice_stats()),
            _ => (0, 0, None),
        };
        let splice = splice.unwrap_or_default();
        LegStats {
            packets_out: self.out_stream.packets,
            decode_errors,
            concealed,
            forwarded: splice.forwarded,
            reencoded: splice.reencoded,
            ..self.stats
        }
    }

    /// Rewrite an RTCP compound from the caller, in place, for downstream: the caller's
    /// SSRC becomes ours, a sender report's RTP timestamp moves to our timeline for the same
    /// media instant and its counts become what we sent (see [`rtcp`](super::rtcp)).
    pub fn rtcp_to_downstream(&self, buf: &mut [u8]) -> Result<usize, RtcpError> {
        let o = &self.out_stream;
        super::rtcp::to_downstream(
            buf,
            o.ssrc,
            |ts| self.output_ts_of(ts),
            o.packets as u32,
            o.octets as u32,
        )
    }

    /// A sender report of our own towards downstream, for a caller that sends no RTCP (see
    /// [`super::rtcp::own_report`]), written into `buf`: the wall-clock instant `ntp` is
    /// `since_input_us` after the caller's latest packet was handled, which is when the last
    /// packet left, so the report's RTP time runs on from that packet's at the output clock.
    /// `block`, if any, reports on the stream from downstream. `None` before the first
    /// packet (no timeline, nothing sent).
    pub fn own_report(
        &self,
        buf: &mut [u8],
        ntp: u64,
        since_input_us: u64,
        cname: &str,
        block: Option<super::reception::ReportFigures>,
        bye: bool,
    ) -> Option<Result<usize, rtcp_types::RtcpWriteError>> {
        self.next_ts?;
        let o = &self.out_stream;
        if o.packets == 0 {
            return None;
        }
        let clock = u64::from(o.rate / o.clock_div.max(1));
        let ahead = since_input_us.saturating_mul(clock) / 1_000_000;
        let r = super::rtcp::OwnReport {
            ssrc: o.ssrc,
            ntp,
            rtp_ts: o.last_ts.wrapping_add(ahead as u32),
            packets: o.packets as u32,
            octets: o.octets as u32,
            cname,
            block,
        };
        Some(super::rtcp::own_report(buf, &r, bye))
    }

    /// How the caller's stream has fared on its way to us (loss, jitter); `None` before its
    /// first packet.
    pub fn reception(&self) -> Option<super::reception::StreamQuality> {
        self.reception.quality()
    }

    /// The caller's sender report with NTP time `ntp` arrived at `now_us` (the leg's clock):
    /// our receiver reports answer it (LSR/DLSR), so the caller can measure the round trip.
    pub fn caller_sender_report(&mut self, ssrc: u32, ntp: u64, now_us: u64) {
        self.reception.on_sender_report(ssrc, ntp, now_us);
    }

    /// A receiver report of our own about the caller's stream (see
    /// [`super::rtcp::own_receiver_report`]), as of `now_us`, from our SSRC; `None` before the
    /// caller's first packet.
    pub fn own_receiver_report(
        &mut self,
        buf: &mut [u8],
        now_us: u64,
        cname: &str,
        bye: bool,
    ) -> Option<Result<usize, rtcp_types::RtcpWriteError>> {
        let f = self.reception.report(now_us)?;
        Some(super::rtcp::own_receiver_report(
            buf,
            self.out_stream.ssrc,
            &f,
            cname,
            bye,
        ))
    }

    /// The SSRC of the caller's stream, once a packet has set it.
    pub fn caller_ssrc(&self) -> Option<u32> {
        self.ssrc_in
    }

    /// The figures of a report block about the caller's stream, as of `now_us` (for a sender
    /// report of the gateway's own to the caller). `None` before the caller's first packet.
    pub fn caller_report_block(&mut self, now_us: u64) -> Option<super::reception::ReportFigures> {
        self.reception.report(now_us)
    }

    /// Rewrite an RTCP compound from downstream, in place, for the caller: reports about our
    /// SSRC become reports about the caller's current one. Nothing changes before the
    /// caller's first packet.
    pub fn rtcp_to_caller(&self, buf: &mut [u8]) -> Result<usize, RtcpError> {
        match self.ssrc_in {
            Some(caller) => super::rtcp::to_caller(buf, self.out_stream.ssrc, caller),
            None => super::rtcp::validate(buf).map(|()| 0),
        }
    }

    /// Our output timestamp for the media instant the caller stamped `ts_in`: through the
    /// pipeline position it has (or will have) and the delay to the output sample carrying
    /// it. `None` before the first packet.
    fn output_ts_of(&self, ts_in: u32) -> Option<u32> {
        let next = self.next_ts?;
        let o = &self.out_stream;
        let div = i64::from(o.clock_div.max(1));
        let pos = self.pipe.in_pos() as i64 + i64::from(ts_in.wrapping_sub(next) as i32);
        let ahead = (pos + o.delay as i64 - o.emitted as i64).div_euclid(div);
        Some(
            o.ts.wrapping_add(o.ts_jump / o.clock_div.max(1))
                .wrapping_add(ahead as i32 as u32),
        )
    }

    /// Pipeline delay in samples: output packets carry audio this much older than the input.
    pub fn delay(&self) -> usize {
        self.pipe.delay()
    }

    /// Delay a listener downstream hears, in input samples: the pipeline's plus what the
    /// downstream encoder adds (Opus look-ahead, or the 48 to 8 kHz resampler).
    pub fn downstream_delay(&self) -> usize {
        match &self.pipe {
            Pipe::L16 {
                frames: Some(st), ..
            } => self.pipe.delay() + st.encoder_delay(),
            _ => self.pipe.delay(),
        }
    }

    /// When the last valid RTP packet (audio or event, any source) arrived, in the caller's
    /// µs; `None` before the first.
    pub fn last_packet_us(&self) -> Option<u64> {
        self.last_packet_us
    }

    /// Is a capture window open?
    pub fn capture_open(&self) -> bool {
        match &self.pipe {
            Pipe::G711 { p, .. } => p.capture_open(),
            Pipe::L16 { p, .. } => p.capture_open(),
        }
    }

    /// Open a capture window now (control input; see [`ChannelPipeline::open_capture`]).
    pub fn open_capture<O: LegOutputs + ?Sized>(
        &mut self,
        max_digits: Option<u32>,
        terminator: Option<Option<Digit>>,
        out: &mut O,
    ) {
        match &mut self.pipe {
            Pipe::G711 { p, .. } => p.open_capture(max_digits, terminator, out),
            Pipe::L16 { p, .. } => p.open_capture(max_digits, terminator, out),
        }
    }

    /// Close the capture window now (control input).
    pub fn close_capture<O: LegOutputs + ?Sized>(&mut self, out: &mut O) {
        match &mut self.pipe {
            Pipe::G711 { p, .. } => p.close_capture(out),
            Pipe::L16 { p, .. } => p.close_capture(out),
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next (µs, the caller's
    /// clock): the moment the oldest held packet has waited `reorder_wait_ms`.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.finished {
            return None;
        }
        self.held.earliest_arrival().map(|t| t + self.wait_us)
    }

    /// Time has reached `now_us`: packets held past their wait are released, and the ones
    /// missing before them are given up as lost (replaced with silence).
    pub fn handle_timeout<O: LegOutputs + ?Sized>(&mut self, now_us: u64, out: &mut O) {
        if self.finished {
            return;
        }
        while let (Some(t), Some(low)) = (self.held.earliest_arrival(), self.held.lowest()) {
            if now_us < t + self.wait_us {
                break;
            }
            self.give_up_until(low, out);
        }
    }

    /// One datagram from the caller, received at `now_us`.
    pub fn handle_packet<O: LegOutputs + ?Sized>(&mut self, data: &[u8], now_us: u64, out: &mut O) {
        self.stats.packets_in += 1;
        self.stats.bytes_in += data.len() as u64;
        if self.finished {
            return;
        }
        // A held packet may have waited long enough even if the timer has not fired yet.
        self.handle_timeout(now_us, out);
        // RTCP multiplexed onto the RTP port (RFC 5761): its packet types 200-204 read as
        // RTP payload types 72-76 with the marker bit set.
        if data.len() >= 2 && data[0] >> 6 == 2 && (200..=204).contains(&data[1]) {
            self.stats.unknown_pt += 1;
            return;
        }
        let Ok(p) = RtpPacket::parse(data) else {
            self.stats.malformed += 1;
            return;
        };
        let Some(parsed) = self.validate(&p) else {
            return;
        };
        self.last_packet_us = Some(now_us);
        self.reception
            .on_packet(parsed.ssrc, p.sequence_number(), parsed.ts, now_us);
        self.accept(data, p.sequence_number(), parsed, now_us, out);
    }

    /// End of call: release held packets (the missing ones are lost), end a telephone-event
    /// still under way, drain the look-ahead as final packets and close an open capture
    /// window (`stream_ended`). Later calls do nothing.
    pub fn finish<O: LegOutputs + ?Sized>(&mut self, out: &mut O) {
        if self.finished {
            return;
        }
        while let Some(low) = self.held.lowest() {
            self.give_up_until(low, out);
        }
        if self.probation_key.take().is_some() {
            self.stats.late += 1;
        }
        self.expire_event(out);
        self.finished = true;
        let d = self.pipe.delay();
        let o = &mut self.out_stream;
        let mut filled = 0;
        match &mut self.pipe {
            Pipe::G711 { p, outp, .. } => {
                p.finish(&mut outp[..d], out);
                let codec = p.config().codec;
                for c in outp[..d].chunks(self.fill) {
                    for (l, &b) in o.lin.iter_mut().zip(c) {
                        *l = codec.decode_byte(b);
                    }
                    let lin = core::mem::take(&mut o.lin);
                    o.send(c, &lin[..c.len()], false, out);
                    o.lin = lin;
                    filled += 1;
                }
            }
            Pipe::L16 {
                p,
                outp,
                frames: Some(st),
                ..
            } => {
                p.finish(&mut outp[..d], out);
                o.audio(&outp[..d], out);
                st.emit(&outp[..d], o, out);
                st.flush(o, out);
            }
            Pipe::L16 { p, outp, .. } => {
                p.finish(&mut outp[..d], out);
                for c in outp[..d].chunks(self.fill) {
                    for (b, &s) in o.be.chunks_exact_mut(2).zip(c) {
                        b.copy_from_slice(&s.to_be_bytes());
                    }
                    let be = core::mem::take(&mut o.be);
                    o.send(&be[..c.len() * 2], c, false, out);
                    o.be = be;
                    filled += 1;
                }
            }
        }
        self.stats.filled_frames += filled;
    }

    /// Check the payload against the negotiated types; counts and drops what does not fit.
    fn validate<'a>(&mut self, p: &'a RtpPacket<'a>) -> Option<Parsed<'a>> {
        let pt = p.payload_type();
        let payload = p.payload();
        let kind = if payload.is_empty() && p.padding_bit() {
            // Padding only (RFC 3550 5.1): WebRTC senders send these to probe bandwidth, with
            // the previous packet's timestamp. No audio, but a sequence number used up;
            // dropping it unsequenced would count every probe as a lost packet.
            Kind::Other
        } else if pt == self.cfg.audio_pt {
            let bad_l16 = self.cfg.codec == Codec::Pcm16 && !payload.len().is_multiple_of(2);
            let samples = self.samples_of(payload);
            if payload.is_empty() || bad_l16 || samples == 0 || samples > self.max_samples {
                self.stats.malformed += 1;
                return None;
            }
            Kind::Audio(payload)
        } else if Some(pt) == self.cfg.telephone_event_pt {
            let Ok(ev) = TelephoneEvent::parse(payload) else {
                self.stats.malformed += 1;
                return None;
            };
            Kind::Event(ev)
        } else {
            self.stats.unknown_pt += 1;
            if Some(p.ssrc()) != self.ssrc_in {
                return None;
            }
            Kind::Other
        };
        Some(Parsed {
            ssrc: p.ssrc(),
            ts: p.timestamp(),
            marker: p.marker_bit(),
            kind,
        })
    }

    /// A valid packet enters sequencing: source changes, reordering, loss, duplicates.
    fn accept<O: LegOutputs + ?Sized>(
        &mut self,
        data: &[u8],
        seq: u16,
        p: Parsed<'_>,
        now_us: u64,
        out: &mut O,
    ) {
        let Some(cur) = self.ssrc_in else {
            // The very first packet: nothing to confirm it against, nothing to protect.
            self.ssrc_in = Some(p.ssrc);
            self.seq.start(seq);
            out.stream(StreamEvent::FirstPacket);
            self.release(p, out);
            return;
        };
        let class = if p.ssrc == cur {
            self.seq.classify(seq)
        } else {
            SeqClass::Jump
        };
        if matches!(p.kind, Kind::Other) && !matches!(class, SeqClass::InOrder | SeqClass::Ahead(_))
        {
            // Only sequenced to keep the count; never a reason to restart or hold.
            return;
        }
        if class == SeqClass::Jump {
            // A new source or numbering is believed once a second packet follows the first
            // (RFC 3550 A.1 probation), so a stray or spoofed packet cannot derail the stream.
            match self.probation_key {
                Some((ps, pseq, len)) if ps == p.ssrc && pseq.wrapping_add(1) == seq => {
                    self.probation_key = None;
                    self.restart(p.ssrc, pseq, out);
                    let buf = core::mem::take(&mut self.probation);
                    if let Ok(pp) = RtpPacket::parse(&buf[..len]) {
                        if let Some(pp) = self.validate_held(&pp) {
                            self.process(pp, out);
                        }
                    }
                    // Its number is used up whatever happened to it.
                    self.seq.released();
                    self.probation = buf;
                    self.release(p, out);
                }
                _ => {
                    if self.probation_key.is_some() {
                        self.stats.late += 1;
                    }
                    if data.len() <= self.probation.len() {
                        self.probation[..data.len()].copy_from_slice(data);
                        self.probation_key = Some((p.ssrc, seq, data.len()));
                    } else {
                        self.probation_key = None;
                        self.stats.late += 1;
                    }
                }
            }
            return;
        }
        if p.ssrc == cur && self.probation_key.take().is_some() {
            // The candidate was not followed by its successor: a stray packet.
            self.stats.late += 1;
        }
        match class {
            SeqClass::InOrder => self.release(p, out),
            SeqClass::Duplicate => self.stats.duplicate += 1,
            SeqClass::Late => self.stats.late += 1,
            SeqClass::Ahead(e) => {
                if self.held.contains(e) {
                    self.stats.duplicate += 1;
                    return;
                }
                if self.held.is_full() {
                    // Make room: give up on the first gap (or on everything before this
                    // packet, if it is earlier than all held ones).
                    let upto = self.held.lowest().map_or(e, |l| l.min(e));
                    self.give_up_until(upto, out);
                }
                if self.seq.next() == Some(e) || !self.held.insert(e, data, now_us) {
                    // Next in line now, or it cannot be held (no window, too big): whatever
                    // is still missing before it is lost, and it goes out now.
                    self.give_up_until(e, out);
                    self.release(p, out);
                }
            }
            SeqClass::Jump => {}
        }
    }

    /// A new source or numbering starts at `seq`: finish off the old one and start over.
    fn restart<O: LegOutputs + ?Sized>(&mut self, ssrc: u32, seq: u16, out: &mut O) {
        while let Some(low) = self.held.lowest() {
            self.give_up_until(low, out);
        }
        if Some(ssrc) != self.ssrc_in {
            self.expire_event(out);
            self.events.reset();
            self.ssrc_in = Some(ssrc);
            // A new source has its own timebase: the output carries on where it is.
            self.next_ts = None;
            self.event_fill_from = None;
            self.suppress_until = None;
            if let Pipe::L16 {
                frames: Some(st), ..
            } = &mut self.pipe
            {
                st.reset();
            }
            self.stats.ssrc_changes += 1;
            out.stream(StreamEvent::SsrcChanged);
        } else {
            self.stats.resyncs += 1;
            out.stream(StreamEvent::Resync);
        }
        self.fresh_resync = true;
        self.out_stream.marker_pending = true;
        self.seq.start(seq);
    }

    /// Give up on the packets missing before extended number `upto` (held ones among them are
    /// released in order), then release what is held from there on.
    fn give_up_until<O: LegOutputs + ?Sized>(&mut self, upto: u64, out: &mut O) {
        // Nothing held may sit below the next number (it could never be released and the
        // timer would spin); drop any such packet as late rather than trust the invariant.
        if let Some(next) = self.seq.next() {
            while let Some(low) = self.held.lowest().filter(|&l| l < next) {
                if let Some((buf, _)) = self.held.take(low) {
                    self.held.give_back(buf);
                }
                self.stats.late += 1;
            }
        }
        // At most MAX_DROPOUT steps: `upto` is a held or arriving packet's number.
        while let Some(next) = self.seq.next().filter(|&n| n < upto) {
            if self.held.contains(next) {
                self.release_held(out);
            } else {
                self.stats.lost += self.seq.give_up_until(next + 1);
            }
        }
        self.release_held(out);
    }

    /// Release held packets for as long as the next expected one is among them.
    fn release_held<O: LegOutputs + ?Sized>(&mut self, out: &mut O) {
        while let Some(next) = self.seq.next() {
            let Some((buf, len)) = self.held.take(next) else {
                break;
            };
            if let Ok(pp) = RtpPacket::parse(&buf[..len]) {
                if let Some(pp) = self.validate_held(&pp) {
                    self.process(pp, out);
                }
            }
            self.held.give_back(buf);
            self.seq.released();
        }
    }

    /// Re-read a packet that was validated before it was held (never fails in practice).
    fn validate_held<'a>(&self, p: &'a RtpPacket<'a>) -> Option<Parsed<'a>> {
        let pt = p.payload_type();
        let kind = if p.payload().is_empty() && p.padding_bit() {
            Kind::Other
        } else if pt == self.cfg.audio_pt {
            Kind::Audio(p.payload())
        } else if Some(pt) == self.cfg.telephone_event_pt {
            Kind::Event(TelephoneEvent::parse(p.payload()).ok()?)
        } else {
            Kind::Other
        };
        Some(Parsed {
            ssrc: p.ssrc(),
            ts: p.timestamp(),
            marker: p.marker_bit(),
            kind,
        })
    }

    /// The next expected packet arrived: process it and whatever it unblocks.
    fn release<O: LegOutputs + ?Sized>(&mut self, p: Parsed<'_>, out: &mut O) {
        self.process(p, out);
        self.seq.released();
        self.release_held(out);
    }

    fn process<O: LegOutputs + ?Sized>(&mut self, p: Parsed<'_>, out: &mut O) {
        match p.kind {
            Kind::Audio(payload) => self.on_audio(p.ts, p.marker, payload, out),
            Kind::Event(ev) => self.on_event(p.ssrc, p.ts, ev, out),
            Kind::Other => {}
        }
    }

    /// Samples an audio payload carries (0 for a frame-codec packet that does not parse).
    fn samples_of(&self, payload: &[u8]) -> usize {
        match (&self.pipe, self.cfg.codec) {
            (
                Pipe::L16 {
                    frames: Some(st), ..
                },
                _,
            ) => st.samples(payload).unwrap_or(0),
            (_, Codec::Pcm16) => payload.len() / 2,
            _ => payload.len(),
        }
    }

    /// Is a telephone-event for a key under way (started, end not seen)?
    fn event_active(&self) -> bool {
        matches!(self.events.current(), Some(s) if !s.event.end && s.event.digit().is_some())
    }

    fn on_audio<O: LegOutputs + ?Sized>(
        &mut self,
        ts: u32,
        marker: bool,
        payload: &[u8],
        out: &mut O,
    ) {
        let n = self.samples_of(payload);
        let fresh = core::mem::take(&mut self.fresh_resync);
        if let Some(cur) = self.events.current().copied() {
            let late_by = ts.wrapping_sub(cur.covered_until()) as i32 as i64;
            if self.event_active() && late_by >= self.expiry as i64 {
                // Its end packets were lost: it ended where its last packet said.
                self.expire_event(out);
            } else if !self.event_active() && late_by >= self.forget as i64 {
                // Long over: forget it before wrap-around arithmetic could make a new event
                // look older than it.
                self.events.reset();
            }
        }
        if self
            .suppress_until
            .is_some_and(|u| ts.wrapping_sub(u) as i32 >= 0)
        {
            // Past the hangover; clearing it keeps the comparison from wrapping later.
            self.suppress_until = None;
        }
        match self.next_ts {
            None => self.next_ts = Some(ts),
            Some(exp) => {
                let d = ts.wrapping_sub(exp) as i32 as i64;
                if d >= 0 && !self.event_active() && !self.suppressing(ts) {
                    // Audio has moved past the last event's time: nothing later can be
                    // inside its fill.
                    self.event_fill_from = None;
                }
                if d > 0 {
                    if d <= self.max_fill as i64 {
                        // Loss or a short gap: silence of the missing duration, so the
                        // output and the detector's timeline stay whole.
                        self.fill_silence(d as usize, Src::Lost, out);
                    } else {
                        // A pause (DTX) or a new timebase: no fill. A pause shows downstream
                        // as the same jump in our timestamps; an implausible jump does not.
                        if d <= self.max_jump as i64 {
                            self.out_stream.ts_jump = d as u32;
                        }
                        self.resync(fresh, out);
                        self.next_ts = Some(ts);
                    }
                } else if d < 0 {
                    let in_fill = self
                        .event_fill_from
                        .is_some_and(|f| ts.wrapping_sub(f) as i32 >= 0);
                    if in_fill {
                        if d + n as i64 <= 0 {
                            // Its time was already sent as telephone-event silence.
                            self.stats.late += 1;
                            return;
                        }
                        // Partly covered: processed whole, the timeline re-anchors on it.
                    } else {
                        self.resync(fresh, out);
                    }
                    self.next_ts = Some(ts);
                }
            }
        }
        // Fail closed around telephone-events: some senders play the tone in-band as well.
        let src = if self.event_active() || self.suppressing(ts) {
            Src::Silence
        } else {
            Src::Payload(payload)
        };
        self.stats.audio_frames += 1;
        self.step(src, n, marker, out);
        self.next_ts = Some(ts.wrapping_add(n as u32));
    }

    /// Is `ts` inside the hangover after the last event's end?
    fn suppressing(&self, ts: u32) -> bool {
        self.suppress_until
            .is_some_and(|u| (ts.wrapping_sub(u) as i32) < 0)
    }

    /// The input's timestamps jumped: start a new timebase. Event bookkeeping keyed on the
    /// old timestamps goes too (a restarted clock could make a new key press look older than
    /// the last one, and it would be dropped as stale).
    fn resync<O: LegOutputs + ?Sized>(&mut self, already_counted: bool, out: &mut O) {
        self.out_stream.marker_pending = true;
        self.event_fill_from = None;
        self.expire_event(out);
        self.events.reset();
        self.suppress_until = None;
        if !already_counted {
            self.stats.resyncs += 1;
            out.stream(StreamEvent::Resync);
        }
    }

    fn on_event<O: LegOutputs + ?Sized>(
        &mut self,
        ssrc: u32,
        ts: u32,
        ev: TelephoneEvent,
        out: &mut O,
    ) {
        self.stats.telephone_event_packets += 1;
        let obs = self.events.observe(ssrc, ts, ev);
        if let Some(prev) = obs.unfinished {
            self.event_ended(prev, out);
        }
        let Some(cur) = self.events.current().copied() else {
            return;
        };
        // Events 16 and up (flash, line tones) are consumed and otherwise ignored.
        let Some(digit) = cur.event.digit() else {
            return;
        };
        match obs.kind {
            Observed::Stale | Observed::Repeat => {}
            Observed::New => {
                self.event_fill_from = None;
                if self.next_ts.is_none() {
                    self.next_ts = Some(ts);
                }
                self.cover(cur.covered_until(), out);
                let onset = self.to_pipeline(ts);
                self.event_onset = onset;
                let end = cur.event.end.then(|| onset + cur.event.duration as u64);
                self.stats.digits_from_events += 1;
                match &mut self.pipe {
                    Pipe::G711 { p, .. } => p.telephone_event(digit, onset, end, out),
                    Pipe::L16 { p, .. } => p.telephone_event(digit, onset, end, out),
                }
                if cur.event.end {
                    self.suppress_until = Some(cur.covered_until().wrapping_add(self.hangover));
                }
            }
            Observed::Update => self.cover(cur.covered_until(), out),
            Observed::End => {
                self.cover(cur.covered_until(), out);
                self.event_ended(cur, out);
            }
        }
    }

    /// The current telephone-event is over without its end packet (lost, or the stream
    /// ended or changed source).
    fn expire_event<O: LegOutputs + ?Sized>(&mut self, out: &mut O) {
        if let Some(st) = self.events.expire() {
            self.event_ended(st, out);
        }
    }

    /// Report the end of a key's event to the pipeline and start the hangover.
    fn event_ended<O: LegOutputs + ?Sized>(&mut self, st: EventState, out: &mut O) {
        if st.event.digit().is_none() {
            return;
        }
        let end = self.event_onset + st.event.duration as u64;
        match &mut self.pipe {
            Pipe::G711 { p, .. } => p.telephone_event_end(end, out),
            Pipe::L16 { p, .. } => p.telephone_event_end(end, out),
        }
        self.suppress_until = Some(st.covered_until().wrapping_add(self.hangover));
    }

    /// Pipeline position of input timestamp `ts` (clamped to what has been fed).
    fn to_pipeline(&self, ts: u32) -> u64 {
        let pos = self.pipe.in_pos();
        let Some(next) = self.next_ts else {
            return pos;
        };
        let rel = ts.wrapping_sub(next) as i32 as i64;
        (pos as i64 + rel).clamp(0, pos as i64) as u64
    }

    /// Keep the output whole while a telephone-event replaces audio: emit whole silence
    /// packets up to `until` (an input timestamp), if that is a plausible distance ahead.
    fn cover<O: LegOutputs + ?Sized>(&mut self, until: u32, out: &mut O) {
        let Some(next) = self.next_ts else {
            return;
        };
        let d = until.wrapping_sub(next) as i32 as i64;
        if d <= 0 || d > self.max_fill as i64 {
            return;
        }
        let whole = (d as usize / self.fill) * self.fill;
        if whole == 0 {
            return;
        }
        self.event_fill_from.get_or_insert(next);
        self.fill_silence(whole, Src::Silence, out);
    }

    /// Feed `samples` of silence (or, for lost packets, what the codec may conceal them with)
    /// through the pipeline as packets of `fill_ms`, advancing the input timeline by the same
    /// amount.
    fn fill_silence<O: LegOutputs + ?Sized>(&mut self, samples: usize, src: Src<'_>, out: &mut O) {
        let mut left = samples;
        while left > 0 {
            let m = left.min(self.fill);
            self.step(src, m, false, out);
            self.stats.filled_frames += 1;
            left -= m;
        }
        if let Some(t) = self.next_ts.as_mut() {
            *t = t.wrapping_add(samples as u32);
        }
    }

    /// Is extrapolating a lost packet safe now? Not inside a capture window, not during or
    /// just after a telephone-event, and not within [`CONCEAL_GUARD_MS`] of a masked tone:
    /// concealment repeats what came before, and before may have been a key tone.
    fn conceal_ok(&self) -> bool {
        let Pipe::L16 { p, .. } = &self.pipe else {
            return false;
        };
        let guard = CONCEAL_GUARD_MS as u64 * self.cfg.rate as u64 / 1000;
        !p.capture_open()
            && !p.tone_within(guard)
            && !self.event_active()
            && self.suppress_until.is_none()
    }

    /// Push `n` samples (a payload, or silence) through the pipeline and send the result.
    fn step<O: LegOutputs + ?Sized>(&mut self, src: Src<'_>, n: usize, marker: bool, out: &mut O) {
        let conceal_ok = matches!(src, Src::Lost) && self.conceal_ok();
        let o = &mut self.out_stream;
        match &mut self.pipe {
            Pipe::G711 { p, inp, outp } => {
                let codec = p.config().codec;
                match src {
                    Src::Payload(b) => inp[..n].copy_from_slice(&b[..n]),
                    Src::Lost | Src::Silence => inp[..n].fill(codec.silence_byte()),
                }
                p.process(&inp[..n], &mut outp[..n], out);
                for (l, &b) in o.lin[..n].iter_mut().zip(&outp[..n]) {
                    *l = codec.decode_byte(b);
                }
                let lin = core::mem::take(&mut o.lin);
                o.send(&outp[..n], &lin[..n], marker, out);
                o.lin = lin;
            }
            Pipe::L16 {
                p,
                inp,
                outp,
                frames: Some(st),
            } => {
                let fsrc = match src {
                    Src::Payload(b) => FrameSrc::Payload(b),
                    Src::Lost => FrameSrc::Lost,
                    Src::Silence => FrameSrc::Silence,
                };
                st.decode(fsrc, conceal_ok, &mut inp[..n]);
                p.process(&inp[..n], &mut outp[..n], out);
                if marker {
                    o.marker_pending = true;
                }
                o.audio(&outp[..n], out);
                st.emit(&outp[..n], o, out);
            }
            Pipe::L16 {
                p,
                inp,
                outp,
                frames: None,
            } => {
                match src {
                    Src::Payload(b) => {
                        for (s, c) in inp[..n].iter_mut().zip(b.chunks_exact(2)) {
                            *s = i16::from_be_bytes([c[0], c[1]]);
                        }
                    }
                    Src::Lost | Src::Silence => inp[..n].fill(0),
                }
                p.process(&inp[..n], &mut outp[..n], out);
                for (c, &s) in o.be.chunks_exact_mut(2).zip(&outp[..n]) {
                    c.copy_from_slice(&s.to_be_bytes());
                }
                let be = core::mem::take(&mut o.be);
                o.send(&be[..n * 2], &outp[..n], marker, out);
                o.be = be;
            }
        }
    }
}

/// The Opus decoder and downstream encoder of a leg.
#[cfg(feature = "opus")]
fn opus_stage(
    cfg: &LegConfig,
    down: Codec,
    delay: usize,
    max_samples: usize,
) -> Result<FrameStage, LegError> {
    use super::splice::Splicer;
    use crate::codec::{OpusDecoder, OpusEncoder};
    let dec = OpusDecoder::new().map_err(|_| LegError::Opus("libopus refused a decoder"))?;
    let out = if down.is_g711() {
        let rs = crate::pipeline::ChunkResampler::between(cfg.rate, 8000, 200)
            .map_err(PipelineError::from)?;
        let fill = (cfg.fill_ms * 8) as usize;
        FrameOut::G711 {
            codec: down,
            rs: Box::new(rs),
            bytes: vec![0; fill],
            len: 0,
            fill,
        }
    } else if cfg.opus_passthrough {
        let enc = OpusEncoder::splice(cfg.opus_bitrate)
            .map_err(|_| LegError::Opus("libopus refused an encoder"))?;
        FrameOut::Splice(Box::new(Splicer::new(Box::new(enc), delay, max_samples)))
    } else {
        let enc = OpusEncoder::new(cfg.opus_bitrate)
            .map_err(|_| LegError::Opus("libopus refused an encoder"))?;
        FrameOut::Frames(Box::new(enc))
    };
    Ok(FrameStage::new(Box::new(dec), out, max_samples))
}

/// Without the `opus` feature an Opus leg cannot be built.
#[cfg(not(feature = "opus"))]
fn opus_stage(_: &LegConfig, _: Codec, _: usize, _: usize) -> Result<FrameStage, LegError> {
    Err(LegError::Opus("built without the `opus` feature"))
}
