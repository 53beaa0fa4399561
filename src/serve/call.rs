//! One call: its four UDP sockets (RTP and RTCP facing the caller and facing downstream), the
//! sans-IO [`CallerLeg`] that masks the caller's audio, its sinks, and the control messages
//! the API sends it. A media thread ([`super::worker`]) owns the call outright while it
//! runs and drives it through the `on_*`/`take_*` methods here, so calls never share a lock
//! on the media path; the end of a call (flushing sinks) runs on the tokio runtime.
//!
//! Owns: symmetric-RTP latching, relaying in both directions, driving the leg's timers, the
//! media timeout, and turning core outputs into packets, sink frames and event envelopes.
//! Must never: send a caller packet downstream without passing it through the leg (the leg
//! is the only producer of downstream RTP), forward a telephone-event, or log a digit value.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::UdpSocket;
use serde::Serialize;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::events::{CallEvent, EndReason, EventBody, EventEnvelope};
use super::metrics::{LocalHistogram, Metrics};
use super::sinks::{AudioFrame, CallSinks, SecureDelivery, Side, SinkSettings, MAX_FRAME};
use crate::codec::{Codec, FrameDecoder};
use crate::dtmf::Digit;
use crate::event::{Event, Outputs, SecureDigit};
use crate::rtp::reception::StreamQuality;
use crate::rtp::rtcp::RtcpError;
use crate::rtp::{CallerLeg, LegConfig, LegOutputs, LegStats, StreamEvent};
use crate::time::{ChannelId, MediaTime};

/// Largest UDP datagram we read.
const MAX_DATAGRAM: usize = 2048;
/// Caller packets between two updates of the gateway-wide counters (1 s of 20 ms packets):
/// the shared counters live on cache lines every core writes, so the per-packet path only
/// counts locally.
const ACCOUNT_EVERY: u32 = 50;
/// How long the latched caller must have been quiet before its stream may move to another
/// address (a NAT rebinding leaves no overlap; a live caller is never taken over).
const MOVE_QUIET: Duration = Duration::from_millis(200);
/// Consecutive packets of the caller's stream the new address must send first.
const MOVE_PACKETS: u32 = 5;

/// What the API asks of a new call, validated.
#[derive(Debug)]
pub struct CallSpec {
    /// Call id.
    pub id: Arc<str>,
    /// Media settings of the caller leg.
    pub leg: LegConfig,
    /// Where masked RTP goes (RTCP to the next port).
    pub downstream: SocketAddr,
    /// Fixed caller address; `None` latches onto the first packet's source.
    pub caller: Option<SocketAddr>,
    /// The caller multiplexes RTCP on its RTP port (RFC 5761) from the start; learned anyway
    /// from its first RTCP packet on that port.
    pub caller_rtcp_mux: bool,
    /// The same for downstream.
    pub downstream_rtcp_mux: bool,
    /// End the call after this long without caller media.
    pub media_timeout: Duration,
    /// Mean interval of the gateway's own RTCP reports when the caller sends none; `None`
    /// sends none.
    pub rtcp_interval: Option<Duration>,
    /// Sinks of this call.
    pub sinks: SinkSettings,
}

/// The four sockets of a call (non-blocking; the media thread polls them).
pub struct CallSockets {
    /// RTP from/to the caller.
    pub caller_rtp: UdpSocket,
    /// RTCP from/to the caller.
    pub caller_rtcp: UdpSocket,
    /// RTP to/from downstream.
    pub down_rtp: UdpSocket,
    /// RTCP to/from downstream.
    pub down_rtcp: UdpSocket,
}

impl CallSockets {
    /// The sockets in [`Port`] order.
    pub fn all_mut(&mut self) -> [&mut UdpSocket; 4] {
        [
            &mut self.caller_rtp,
            &mut self.down_rtp,
            &mut self.caller_rtcp,
            &mut self.down_rtcp,
        ]
    }

    fn get(&self, p: Port) -> &UdpSocket {
        match p {
            Port::CallerRtp => &self.caller_rtp,
            Port::DownRtp => &self.down_rtp,
            Port::CallerRtcp => &self.caller_rtcp,
            Port::DownRtcp => &self.down_rtcp,
        }
    }
}

/// Which of a call's sockets a datagram arrives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// RTP from the caller.
    CallerRtp = 0,
    /// RTP back from downstream.
    DownRtp = 1,
    /// RTCP from the caller.
    CallerRtcp = 2,
    /// RTCP back from downstream.
    DownRtcp = 3,
}

impl Port {
    /// The port of index `i` in [`CallSockets::all_mut`] order.
    pub fn from_index(i: usize) -> Self {
        match i & 3 {
            0 => Port::CallerRtp,
            1 => Port::DownRtp,
            2 => Port::CallerRtcp,
            _ => Port::DownRtcp,
        }
    }
}

/// How the API reaches a running call: the control queue, and the flag that tells the
/// call's media thread to look at its calls' queues on its next tick (so the thread never
/// polls thousands of idle queues).
#[derive(Clone)]
pub struct CallControl {
    tx: mpsc::Sender<Control>,
    nudge: Arc<super::worker::Nudge>,
}

impl CallControl {
    /// A handle over `tx` that raises `nudge` after each message.
    pub fn new(tx: mpsc::Sender<Control>, nudge: Arc<super::worker::Nudge>) -> Self {
        Self { tx, nudge }
    }

    /// Queue `c` for the call; fails when the call has ended.
    pub async fn send(&self, c: Control) -> Result<(), ()> {
        self.tx.send(c).await.map_err(|_| ())?;
        self.nudge.raise();
        Ok(())
    }
}

/// Why a call stops, with the API's reply channel when the API ended it.
pub type Ending = (EndReason, Option<oneshot::Sender<CallStatus>>);

/// A control message from the API to a call.
pub enum Control {
    /// Open a capture window now.
    OpenCapture {
        /// Close after this many digits (`None`: the configured default).
        max_digits: Option<u32>,
        /// Terminator key (`None`: configured default; `Some(None)`: no terminator).
        terminator: Option<Option<Digit>>,
        /// Whether a window is open afterwards.
        reply: oneshot::Sender<bool>,
    },
    /// Close the capture window now.
    CloseCapture {
        /// Whether a window is open afterwards.
        reply: oneshot::Sender<bool>,
    },
    /// Send masked RTP somewhere else from now on (re-INVITE).
    SetDownstream(SocketAddr),
    /// Report the call's state.
    Status(oneshot::Sender<CallStatus>),
    /// End the call; the reply comes after the sinks were flushed.
    End(oneshot::Sender<CallStatus>),
    /// The server is stopping: end the call (reason `shutdown`).
    Shutdown,
}

/// One RTP packet handed to a call by an in-process transport (the WHIP bridge) instead of
/// the caller socket. Fixed size so the hand-off allocates nothing per packet.
pub struct IngestPacket {
    len: u16,
    buf: [u8; MAX_DATAGRAM],
}

impl IngestPacket {
    /// An empty packet; fill it through [`buf_mut`](Self::buf_mut) and
    /// [`set_len`](Self::set_len).
    pub fn new() -> Self {
        Self {
            len: 0,
            buf: [0; MAX_DATAGRAM],
        }
    }
    /// The whole buffer to write a datagram into.
    pub fn buf_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }
    /// How many bytes of the buffer are the datagram.
    pub fn set_len(&mut self, n: usize) {
        self.len = n.min(MAX_DATAGRAM) as u16;
    }
    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
}

impl Default for IngestPacket {
    fn default() -> Self {
        Self::new()
    }
}

/// What `GET /v1/calls/{id}` shows.
#[derive(Debug, Clone, Serialize)]
pub struct CallStatus {
    /// Call id.
    pub call_id: Arc<str>,
    /// Seconds since the call was created.
    pub age_s: f64,
    /// Caller address latched (or configured).
    pub caller: Option<SocketAddr>,
    /// Where masked RTP goes.
    pub downstream: SocketAddr,
    /// Is a capture window open?
    pub capture_open: bool,
    /// Delay downstream hears, ms: look-ahead, resampler and the downstream encoder (as in
    /// the create answer).
    pub delay_ms: f64,
    /// Counters of the caller leg.
    pub stats: LegStatsView,
    /// Packets relayed from downstream back to the caller.
    pub return_packets: u64,
    /// How each stream has fared on its way to the gateway (RFC 3550 figures: loss from the
    /// sequence numbers, interarrival jitter); `null` until it has sent a packet.
    pub reception: Reception,
    /// Set when the call has ended.
    pub ended: Option<EndReason>,
}

/// [`CallStatus::reception`].
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Reception {
    /// The caller's stream.
    pub caller: Option<StreamQuality>,
    /// Downstream's stream back.
    pub downstream: Option<StreamQuality>,
}

/// Serialisable copy of [`LegStats`].
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LegStatsView {
    packets_in: u64,
    packets_out: u64,
    audio_frames: u64,
    telephone_event_packets: u64,
    digits_from_events: u64,
    lost: u64,
    late: u64,
    duplicate: u64,
    malformed: u64,
    unknown_pt: u64,
    filled_frames: u64,
    ssrc_changes: u64,
    resyncs: u64,
    decode_errors: u64,
    concealed: u64,
    forwarded: u64,
    reencoded: u64,
}

impl From<LegStats> for LegStatsView {
    fn from(s: LegStats) -> Self {
        Self {
            packets_in: s.packets_in,
            packets_out: s.packets_out,
            audio_frames: s.audio_frames,
            telephone_event_packets: s.telephone_event_packets,
            digits_from_events: s.digits_from_events,
            lost: s.lost,
            late: s.late,
            duplicate: s.duplicate,
            malformed: s.malformed,
            unknown_pt: s.unknown_pt,
            filled_frames: s.filled_frames,
            ssrc_changes: s.ssrc_changes,
            resyncs: s.resyncs,
            decode_errors: s.decode_errors,
            concealed: s.concealed,
            forwarded: s.forwarded,
            reencoded: s.reencoded,
        }
    }
}

/// Stamps events of one call with its id and a gap-free sequence number, and hands them to
/// the event stream and the sinks.
pub struct EventEmitter {
    id: Arc<str>,
    seq: u64,
    tx: broadcast::Sender<EventEnvelope>,
}

impl EventEmitter {
    /// An emitter for call `id` publishing on `tx`.
    pub fn new(id: Arc<str>, tx: broadcast::Sender<EventEnvelope>) -> Self {
        Self { id, seq: 0, tx }
    }

    /// Publish a call-level event.
    pub fn emit_call(&mut self, ev: CallEvent, sinks: &CallSinks) {
        self.emit(EventBody::Call(ev), sinks);
    }

    fn emit(&mut self, body: EventBody, sinks: &CallSinks) {
        let env = EventEnvelope {
            call_id: self.id.clone(),
            seq: self.seq,
            unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            body,
        };
        self.seq += 1;
        sinks.event(&env);
        // No subscriber is fine: the stream is for whoever listens.
        let _ = self.tx.send(env);
    }
}

/// Masked packets the leg produced for one input, sent after the leg returns so the time
/// measured in the core is the core's alone. Preallocated once per call.
struct PacketQueue {
    bytes: Vec<u8>,
    lens: Vec<usize>,
}

impl PacketQueue {
    const BYTES: usize = 4 * MAX_DATAGRAM;
    const PACKETS: usize = 16;

    fn new() -> Self {
        Self {
            bytes: Vec::with_capacity(Self::BYTES),
            lens: Vec::with_capacity(Self::PACKETS),
        }
    }

    /// Queue `p`; false when it does not fit in the preallocated space (send it directly).
    fn push(&mut self, p: &[u8]) -> bool {
        if self.lens.len() == Self::PACKETS || self.bytes.len() + p.len() > Self::BYTES {
            return false;
        }
        self.bytes.extend_from_slice(p);
        self.lens.push(p.len());
        true
    }

    fn flush(&mut self, sock: &UdpSocket, to: SocketAddr, metrics: &Metrics) {
        let mut at = 0;
        for &n in &self.lens {
            send(sock, &self.bytes[at..at + n], to, metrics);
            at += n;
        }
        self.bytes.clear();
        self.lens.clear();
    }
}

/// Send without waiting: a full socket buffer drops the packet (counted) rather than
/// stalling every other packet of the call.
fn send(sock: &UdpSocket, p: &[u8], to: SocketAddr, metrics: &Metrics) {
    if sock.send_to(p, to).is_err() {
        metrics.send_errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// Everything the leg's outputs go to while one packet is processed.
struct LegOut<'a> {
    down: &'a UdpSocket,
    queue: &'a mut PacketQueue,
    down_addr: SocketAddr,
    sinks: &'a CallSinks,
    emitter: &'a mut EventEmitter,
    metrics: &'a Metrics,
    rate: u32,
    ssrc_changed: bool,
    caller_audio_end: &'a mut u64,
}

impl Outputs for LegOut<'_> {
    fn event(&mut self, event: Event) {
        match event {
            Event::ToneMasked { .. } => {
                self.metrics.tones_masked.fetch_add(1, Ordering::Relaxed);
            }
            Event::Digit { .. } => {
                self.metrics.digits.fetch_add(1, Ordering::Relaxed);
            }
            Event::CaptureOpened { .. } => {
                self.metrics.capture_windows.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        self.emitter.emit(EventBody::Core(event), self.sinks);
    }

    fn secure_digit(&mut self, d: SecureDigit) {
        self.sinks.secure_digit(SecureDelivery {
            call_id: self.emitter.id.clone(),
            channel: d.channel.0,
            window: d.window,
            index: d.index,
            digit: d.digit,
            at_ms: d.at.as_ms(),
        });
    }
}

impl LegOutputs for LegOut<'_> {
    fn packet(&mut self, rtp: &[u8]) {
        if !self.queue.push(rtp) {
            send(self.down, rtp, self.down_addr, self.metrics);
        }
    }

    fn audio(&mut self, at: MediaTime, samples: &[i16]) {
        *self.caller_audio_end = at.sample + samples.len() as u64;
        send_audio(self.sinks, Side::Caller, self.rate, at.sample, samples);
    }

    fn stream(&mut self, ev: StreamEvent) {
        match ev {
            StreamEvent::FirstPacket => self
                .emitter
                .emit(EventBody::Call(CallEvent::MediaStarted), self.sinks),
            StreamEvent::SsrcChanged => self.ssrc_changed = true,
            StreamEvent::Resync => {}
        }
    }
}

fn send_audio(sinks: &CallSinks, side: Side, rate: u32, at: u64, samples: &[i16]) {
    if !sinks.wants_audio(side) {
        return;
    }
    for (i, chunk) in samples.chunks(MAX_FRAME).enumerate() {
        let mut f = AudioFrame {
            side,
            rate,
            at_sample: at + (i * MAX_FRAME) as u64,
            len: chunk.len() as u16,
            samples: [0; MAX_FRAME],
        };
        f.samples[..chunk.len()].copy_from_slice(chunk);
        sinks.audio(&f);
    }
}

/// The outputs of `$call`'s leg, borrowing the call's fields apart from the leg itself.
macro_rules! leg_out {
    ($call:ident) => {
        LegOut {
            down: &$call.socks.down_rtp,
            queue: &mut $call.queue,
            down_addr: $call.spec.downstream,
            sinks: &$call.sinks,
            emitter: &mut $call.emitter,
            metrics: &$call.metrics,
            rate: $call.spec.leg.rate,
            ssrc_changed: false,
            caller_audio_end: &mut $call.caller_audio_end,
        }
    };
}

/// The running call.
pub struct Call {
    spec: CallSpec,
    socks: CallSockets,
    leg: CallerLeg,
    sinks: CallSinks,
    emitter: EventEmitter,
    metrics: Arc<Metrics>,
    ctrl: mpsc::Receiver<Control>,
    created: Instant,
    caller_addr: Option<SocketAddr>,
    caller_rtcp_addr: Option<SocketAddr>,
    last_caller: Instant,
    return_packets: u64,
    /// End of the caller audio handed to the sinks so far, on the caller's timeline.
    caller_audio_end: u64,
    /// Where the return path's RTP timestamps sit on the caller's timeline (see
    /// [`DownAnchor`]); `None` until both directions carry audio.
    down_anchor: Option<DownAnchor>,
    /// Decoder for the return path's audio when it is a frame codec (for the recorder).
    down_dec: Option<Box<dyn FrameDecoder>>,
    /// The gateway's own RTCP towards downstream, for a caller that sends none.
    own_rtcp: OwnRtcp,
    /// Reception figures of the stream from downstream (for the report block in our own
    /// sender reports).
    down_reception: crate::rtp::reception::Reception,
    /// When the latest packet from downstream arrived.
    last_down: Option<Instant>,
    /// The address downstream's RTP comes from (latched on its first packet).
    down_source: Option<SocketAddr>,
    /// Another source sending the caller's stream: its address, last sequence number and
    /// how many packets in a row (see `caller_moved_to`).
    move_candidate: Option<(SocketAddr, u16, u32)>,
    /// RTCP to the caller goes on its RTP port, from ours (RFC 5761): told, or learned when
    /// its RTCP came that way.
    caller_mux: bool,
    /// The same towards downstream.
    down_mux: bool,
    /// The return path of an Opus caller whose downstream leg is G.711: back to Opus.
    #[cfg(feature = "opus")]
    ret: Option<Box<super::return_leg::ReturnTranscoder>>,
    stats_seen: LegStats,
    process_time: LocalHistogram,
    unaccounted: u32,
    queue: PacketQueue,
    /// When the media timeout is next checked (re-armed from `last_caller` when it fires,
    /// so the timer is not moved on every packet).
    timeout_check: Instant,
    /// Caller packets from an in-process transport (WHIP) instead of the caller socket.
    ingest: Option<mpsc::Receiver<Box<IngestPacket>>>,
    /// Where packets handed back by the transport go (the bridge refills them).
    ingest_return: Option<mpsc::Sender<Box<IngestPacket>>>,
}

impl Call {
    /// Assemble a call; a worker (`super::worker`) drives it through
    /// [`on_readable`](Self::on_readable) and [`on_deadline`](Self::on_deadline).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        spec: CallSpec,
        socks: CallSockets,
        leg: CallerLeg,
        sinks: CallSinks,
        emitter: EventEmitter,
        metrics: Arc<Metrics>,
        ctrl: mpsc::Receiver<Control>,
    ) -> Self {
        let now = Instant::now();
        let spec_timeout = spec.media_timeout;
        let (spec_id, spec_rtcp) = (spec.id.clone(), spec.rtcp_interval);
        let (caller_mux, down_mux) = (spec.caller_rtcp_mux, spec.downstream_rtcp_mux);
        // The return stream's RTP clock: G.711 runs at 8 kHz, the rest at the leg's rate.
        let down_rate = match spec.leg.downstream_codec {
            Some(c) if c.is_g711() => 8000,
            _ => spec.leg.rate,
        };
        let down_dec = return_decoder(&spec.leg);
        #[cfg(feature = "opus")]
        let ret = super::return_leg::ReturnTranscoder::new(&spec.leg).map(Box::new);
        Self {
            caller_addr: spec.caller,
            caller_rtcp_addr: spec.caller.map(|a| rtcp_addr(a, caller_mux)),
            spec,
            socks,
            leg,
            sinks,
            emitter,
            metrics,
            ctrl,
            created: now,
            last_caller: now,
            return_packets: 0,
            caller_audio_end: 0,
            own_rtcp: OwnRtcp::new(&spec_id, spec_rtcp, now),
            down_reception: crate::rtp::reception::Reception::new(down_rate),
            last_down: None,
            down_source: None,
            move_candidate: None,
            caller_mux,
            down_mux,
            down_anchor: None,
            down_dec,
            #[cfg(feature = "opus")]
            ret,
            stats_seen: LegStats::default(),
            process_time: LocalHistogram::default(),
            unaccounted: 0,
            queue: PacketQueue::new(),
            timeout_check: now + spec_timeout,
            ingest: None,
            ingest_return: None,
        }
    }

    /// Take the caller's media from an in-process transport instead of the caller socket:
    /// packets arrive on `packets`, and each one is handed back on `spent` for reuse. When
    /// the transport drops its sender the call ends (reason `peer_closed`).
    pub fn with_ingest(
        mut self,
        packets: mpsc::Receiver<Box<IngestPacket>>,
        spent: mpsc::Sender<Box<IngestPacket>>,
    ) -> Self {
        self.ingest = Some(packets);
        self.ingest_return = Some(spent);
        self
    }

    fn now_us(&self) -> u64 {
        self.created.elapsed().as_micros() as u64
    }

    fn status(&self, ended: Option<EndReason>) -> CallStatus {
        CallStatus {
            call_id: self.spec.id.clone(),
            age_s: self.created.elapsed().as_secs_f64(),
            caller: self.caller_addr,
            downstream: self.spec.downstream,
            capture_open: self.leg.capture_open(),
            delay_ms: self.leg.downstream_delay() as f64 * 1000.0 / self.spec.leg.rate as f64,
            stats: self.leg.stats().into(),
            return_packets: self.return_packets,
            reception: Reception {
                caller: self.leg.reception(),
                downstream: self.down_reception.quality(),
            },
            ended,
        }
    }

    fn flush_packets(&mut self) {
        self.queue
            .flush(&self.socks.down_rtp, self.spec.downstream, &self.metrics);
    }

    /// Publish what this call counted since the last time to the gateway-wide metrics.
    fn account(&mut self) {
        let now = self.leg.stats();
        self.metrics.add_leg_delta(&self.stats_seen, &now);
        self.stats_seen = now;
        self.metrics.process_time.merge(&mut self.process_time);
        self.unaccounted = 0;
    }

    fn on_caller_rtp(&mut self, buf: &[u8], from: SocketAddr) {
        match self.caller_addr {
            // Symmetric RTP: the first source is the caller; packets from anywhere else are
            // not the call's media and are ignored.
            None => {
                self.caller_addr = Some(from);
                self.caller_rtcp_addr
                    .get_or_insert(rtcp_addr(from, self.caller_mux));
            }
            Some(a) if a != from => {
                if !self.caller_moved_to(buf, from) {
                    self.foreign();
                    return;
                }
            }
            Some(_) => {}
        }
        self.on_caller_packet(buf);
    }

    /// A packet from somewhere else than the latched caller: has the caller moved there (a
    /// NAT rebinding on a mobile network, a failover)? Only if the caller's address was not
    /// fixed by the API, the latched source has gone quiet for [`MOVE_QUIET`], and the new
    /// source has sent [`MOVE_PACKETS`] packets in a row of the caller's own stream (its
    /// SSRC, consecutive sequence numbers): an off-path sender does not know those, and
    /// nobody takes over a caller who is still sending. Then the caller (and its RTCP)
    /// latches there, and an event says so.
    fn caller_moved_to(&mut self, buf: &[u8], from: SocketAddr) -> bool {
        if self.spec.caller.is_some() {
            return false;
        }
        let (Ok(p), Some(ssrc)) = (rtp_types::RtpPacket::parse(buf), self.leg.caller_ssrc()) else {
            return false;
        };
        if p.ssrc() != ssrc {
            return false;
        }
        let seq = p.sequence_number();
        let run = match self.move_candidate {
            Some((a, last, n)) if a == from && seq == last.wrapping_add(1) => n + 1,
            _ => 1,
        };
        self.move_candidate = Some((from, seq, run));
        if run < MOVE_PACKETS || self.last_caller.elapsed() < MOVE_QUIET {
            return false;
        }
        self.move_candidate = None;
        self.caller_addr = Some(from);
        self.caller_rtcp_addr = Some(rtcp_addr(from, self.caller_mux));
        self.emitter
            .emit(EventBody::Call(CallEvent::CallerMoved), &self.sinks);
        true
    }

    /// A datagram from an address that is not the peer on its side was dropped.
    fn foreign(&self) {
        self.metrics.foreign_packets.fetch_add(1, Ordering::Relaxed);
    }

    /// Is `from` downstream? Its media and reports come from the host the call sends to:
    /// anything from elsewhere would be injected into what the caller hears and into the
    /// recording. On that host the first RTP source is latched, as on the caller's side
    /// (an endpoint may send from another port than it receives on, but from one).
    fn is_downstream(&mut self, from: SocketAddr, rtp: bool) -> bool {
        if from.ip() != self.spec.downstream.ip() {
            self.foreign();
            return false;
        }
        if !rtp {
            return true;
        }
        match self.down_source {
            None => {
                self.down_source = Some(from);
                true
            }
            Some(a) if a == from => true,
            Some(_) => {
                self.foreign();
                false
            }
        }
    }

    /// A caller packet from the in-process transport: already authenticated by it (DTLS-SRTP),
    /// so there is no address to latch; the same leg masks it.
    fn on_ingest(&mut self, p: Box<IngestPacket>) {
        self.on_caller_packet(p.bytes());
        if let Some(back) = &self.ingest_return {
            // A full return queue just means the bridge allocates a fresh buffer.
            let _ = back.try_send(p);
        }
    }

    fn on_caller_packet(&mut self, buf: &[u8]) {
        self.last_caller = Instant::now();
        let now = self.now_us();
        let t0 = Instant::now();
        let mut out = leg_out!(self);
        self.leg.handle_packet(buf, now, &mut out);
        let changed = out.ssrc_changed;
        self.process_time.observe_ns(t0.elapsed().as_nanos() as u64);
        self.flush_packets();
        if changed {
            self.emitter
                .emit(EventBody::Call(CallEvent::SsrcChanged), &self.sinks);
        }
        self.unaccounted += 1;
        if self.unaccounted >= ACCOUNT_EVERY {
            self.account();
        }
    }

    fn on_down_rtp(&mut self, buf: &[u8]) {
        let Some(caller) = self.caller_addr else {
            return;
        };
        if let Ok(p) = rtp_types::RtpPacket::parse(buf) {
            let at = Instant::now();
            self.last_down = Some(at);
            let now = at.duration_since(self.created).as_micros() as u64;
            self.down_reception
                .on_packet(p.ssrc(), p.sequence_number(), p.timestamp(), now);
        }
        #[cfg(feature = "opus")]
        if let Some(t) = self.ret.as_mut() {
            // Transcoded call: the caller hears downstream's G.711 as Opus again.
            let (sock, metrics, sinks) = (&self.socks.caller_rtp, &self.metrics, &self.sinks);
            let (anchor, now) = (&mut self.down_anchor, self.caller_audio_end);
            let rate = self.spec.leg.rate;
            let max_skew = u64::from(rate) * DOWN_MAX_SKEW_MS / 1000;
            let record = now > 0 && sinks.wants_audio(Side::Downstream);
            let mut sent = 0u64;
            t.packet(
                buf,
                |p| {
                    if sock.send_to(p, caller).is_err() {
                        metrics.send_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    sent += 1;
                },
                |ssrc, ts, a| {
                    if record {
                        let at = DownAnchor::place(anchor, ssrc, ts, now, max_skew);
                        send_audio(sinks, Side::Downstream, rate, at, a);
                    }
                },
            );
            self.return_packets += sent;
            self.metrics
                .return_packets
                .fetch_add(sent, Ordering::Relaxed);
            if sent > 0 {
                self.own_rtcp.return_sent = Some(Instant::now());
            }
            return;
        }
        if self.socks.caller_rtp.send_to(buf, caller).is_err() {
            self.metrics.send_errors.fetch_add(1, Ordering::Relaxed);
        }
        self.return_packets += 1;
        self.metrics.return_packets.fetch_add(1, Ordering::Relaxed);
        // The recorder's second channel: what the caller hears.
        if !self.sinks.wants_audio(Side::Downstream) {
            return;
        }
        // Before the caller's first audio there is no timeline to place it on (the recorder
        // starts with the caller).
        if self.caller_audio_end == 0 {
            return;
        }
        let mut lin = [0i16; MAX_RETURN_SAMPLES];
        let Some((n, ssrc, ts)) = decode_payload(buf, &self.spec.leg, &mut self.down_dec, &mut lin)
        else {
            return;
        };
        let max_skew = u64::from(self.spec.leg.rate) * DOWN_MAX_SKEW_MS / 1000;
        let at = DownAnchor::place(
            &mut self.down_anchor,
            ssrc,
            ts,
            self.caller_audio_end,
            max_skew,
        );
        send_audio(
            &self.sinks,
            Side::Downstream,
            self.spec.leg.rate,
            at,
            &lin[..n],
        );
    }
}

impl Call {
    fn on_caller_rtcp(&mut self, buf: &mut [u8], from: SocketAddr) {
        // The caller's RTCP comes from the caller's host, and only once its RTP has told us
        // who the caller is: before that anyone could make us relay reports (a BYE) to
        // downstream, or latch the caller's RTCP address onto themselves.
        if self.caller_addr.is_none_or(|a| a.ip() != from.ip()) {
            self.foreign();
            return;
        }
        self.caller_rtcp_addr = Some(from);
        // The caller reports for itself: its reports are rewritten, ours would only repeat
        // them with another clock.
        self.own_rtcp.caller_reported = Some(Instant::now());
        // Our own receiver reports answer its sender reports (LSR/DLSR).
        if let Some((ssrc, ntp)) = crate::rtp::rtcp::sender_report_time(buf) {
            let now = self.now_us();
            self.leg.caller_sender_report(ssrc, ntp, now);
        }
        // Downstream sees the caller's audio under our SSRC and timeline: so must its RTCP.
        // A compound that does not validate goes through as it came (it names no stream of
        // ours to fix, and dropping it would only hide the peer's problem); it is counted. A
        // sender report from before the first audio packet has no time on our timeline yet
        // and is held back (the caller sends another within seconds).
        match self.leg.rtcp_to_downstream(buf) {
            Ok(_) => {}
            Err(RtcpError::NoTimeline) => return,
            Err(RtcpError::Invalid(_)) => {
                self.metrics.rtcp_invalid.fetch_add(1, Ordering::Relaxed);
            }
        }
        let (sock, to) = self.down_rtcp_out();
        send(sock, buf, to, &self.metrics);
        self.metrics.rtcp_packets.fetch_add(1, Ordering::Relaxed);
    }

    /// Where RTCP to downstream goes and from which socket: its RTCP port from ours, or with
    /// RTCP multiplexed its RTP port from ours.
    fn down_rtcp_out(&self) -> (&UdpSocket, SocketAddr) {
        if self.down_mux {
            (&self.socks.down_rtp, self.spec.downstream)
        } else {
            (&self.socks.down_rtcp, next_port(self.spec.downstream))
        }
    }

    /// The socket RTCP to the caller leaves from (its address is `caller_rtcp_addr`).
    fn caller_rtcp_sock(&self) -> &UdpSocket {
        if self.caller_mux {
            &self.socks.caller_rtp
        } else {
            &self.socks.caller_rtcp
        }
    }

    fn on_down_rtcp(&mut self, buf: &mut [u8]) {
        // Downstream reports to the caller itself: ours would only repeat it.
        self.own_rtcp.down_reported = Some(Instant::now());
        // Our own sender reports answer its sender reports (LSR/DLSR).
        if let Some((ssrc, ntp)) = crate::rtp::rtcp::sender_report_time(buf) {
            let now = self.now_us();
            self.down_reception.on_sender_report(ssrc, ntp, now);
        }
        if let Some(to) = self.caller_rtcp_addr {
            if self.leg.rtcp_to_caller(buf).is_err() {
                self.metrics.rtcp_invalid.fetch_add(1, Ordering::Relaxed);
            }
            // The caller hears downstream re-encoded: its reports go onto that stream's clock
            // (an invalid compound was counted above and passes as it came).
            #[cfg(feature = "opus")]
            if let Some(r) = &self.ret {
                let _ = r.rewrite_rtcp(buf);
            }
            send(self.caller_rtcp_sock(), buf, to, &self.metrics);
            self.metrics.rtcp_packets.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn on_timer(&mut self) {
        let now = self.now_us();
        let mut out = leg_out!(self);
        self.leg.handle_timeout(now, &mut out);
        self.flush_packets();
        self.account();
    }

    /// Apply a control message; returns the reply channel when the message ends the call.
    fn on_control(&mut self, c: Control) -> Option<oneshot::Sender<CallStatus>> {
        match c {
            Control::OpenCapture {
                max_digits,
                terminator,
                reply,
            } => {
                let mut out = leg_out!(self);
                self.leg.open_capture(max_digits, terminator, &mut out);
                self.flush_packets();
                let _ = reply.send(self.leg.capture_open());
            }
            Control::CloseCapture { reply } => {
                let mut out = leg_out!(self);
                self.leg.close_capture(&mut out);
                self.flush_packets();
                let _ = reply.send(self.leg.capture_open());
            }
            Control::SetDownstream(a) => {
                // A re-INVITE moved downstream: its media now comes from the new address.
                self.spec.downstream = a;
                self.down_source = None;
            }
            Control::Status(reply) => {
                self.account();
                let _ = reply.send(self.status(None));
            }
            Control::End(reply) => return Some(reply),
            // Handled by the run loop before it gets here.
            Control::Shutdown => {}
        }
        None
    }

    /// When [`on_deadline`](Self::on_deadline) is next due: the leg's next timer or the
    /// next media-timeout check, whichever comes first.
    pub fn deadline(&self) -> Instant {
        let first = self
            .own_rtcp
            .next
            .map_or(self.timeout_check, |t| t.min(self.timeout_check));
        match self.leg.poll_timeout() {
            Some(us) => first.min(self.created + Duration::from_micros(us)),
            None => first,
        }
    }

    /// Read up to `budget` datagrams queued on socket `port` and handle each; true when the
    /// socket is drained (the next read would block), false when the budget ran out first.
    pub fn on_readable(&mut self, port: Port, buf: &mut [u8], budget: usize) -> bool {
        for _ in 0..budget {
            match self.socks.get(port).recv_from(buf) {
                Ok((n, from)) => {
                    let b = &mut buf[..n];
                    match port {
                        // RFC 5761: RTCP on the RTP port, told apart by its packet type.
                        Port::CallerRtp if is_rtcp(b) => {
                            if self.caller_addr.is_some_and(|a| a == from) {
                                self.caller_mux = true;
                            }
                            self.on_caller_rtcp(b, from)
                        }
                        Port::CallerRtp => self.on_caller_rtp(b, from),
                        Port::DownRtp if is_rtcp(b) => {
                            if self.is_downstream(from, false) {
                                self.down_mux = true;
                                self.on_down_rtcp(b)
                            }
                        }
                        Port::DownRtp => {
                            if self.is_downstream(from, true) {
                                self.on_down_rtp(b)
                            }
                        }
                        // RTCP is rewritten in the read buffer itself. RTCP on its own port
                        // means the peer does not multiplex (any more).
                        Port::CallerRtcp => {
                            if self.caller_addr.is_some_and(|a| a.ip() == from.ip()) {
                                self.caller_mux = false;
                            }
                            self.on_caller_rtcp(b, from)
                        }
                        Port::DownRtcp => {
                            if self.is_downstream(from, false) {
                                self.down_mux = false;
                                self.on_down_rtcp(b)
                            }
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                // ICMP errors surface on the next receive; the socket stays usable, and the
                // error used up one read of the budget so a storm of them cannot spin.
                Err(_) => {}
            }
        }
        false
    }

    /// Apply the control messages queued for the call; `Some` when one of them ends it
    /// (or every handle to it is gone, so nobody could end it any more).
    pub fn take_control(&mut self) -> Option<Ending> {
        loop {
            match self.ctrl.try_recv() {
                Ok(Control::Shutdown) => return Some((EndReason::Shutdown, None)),
                Ok(m) => {
                    if let Some(reply) = self.on_control(m) {
                        return Some((EndReason::Api, Some(reply)));
                    }
                }
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Disconnected) => return Some((EndReason::Shutdown, None)),
            }
        }
    }

    /// The call's sockets (for the media thread to register).
    pub fn sockets_mut(&mut self) -> &mut CallSockets {
        &mut self.socks
    }

    /// Whether caller packets come from an in-process transport.
    pub fn has_ingest(&self) -> bool {
        self.ingest.is_some()
    }

    /// Handle the packets the in-process transport queued; `Some` when it hung up.
    pub fn take_ingest(&mut self) -> Option<EndReason> {
        loop {
            let p = match self.ingest.as_mut()?.try_recv() {
                Ok(p) => p,
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Disconnected) => return Some(EndReason::PeerClosed),
            };
            self.on_ingest(p);
        }
    }

    /// The deadline passed: run the leg's timers, or end the call when the caller has been
    /// silent for the media timeout.
    pub fn on_deadline(&mut self, now: Instant) -> Option<EndReason> {
        if now >= self.timeout_check {
            let due = self.last_caller + self.spec.media_timeout;
            if now >= due {
                return Some(EndReason::MediaTimeout);
            }
            self.timeout_check = due;
        }
        if self.own_rtcp.next.is_some_and(|t| now >= t) {
            self.own_reports(now, false);
        }
        self.on_timer();
        None
    }

    /// RTCP of our own where a side sends none (with `bye`, the last, ending the streams),
    /// and the next one scheduled: see [`Self::own_sender_report`] and
    /// [`Self::own_receiver_report`].
    fn own_reports(&mut self, now: Instant, bye: bool) {
        let Some(interval) = self.own_rtcp.interval else {
            return;
        };
        self.own_rtcp.schedule(now, interval);
        // A side silent for two intervals has stopped (RFC 3550's timeout, shortened).
        let recent =
            |t: Option<Instant>| t.is_some_and(|t| now.saturating_duration_since(t) < interval * 2);
        // RFC 3550: only an active sender sends sender reports, and a report block is only
        // about a source heard lately; a BYE ends what was reported, however long ago the
        // caller went quiet.
        let sending = recent(Some(self.last_caller));
        if !recent(self.own_rtcp.caller_reported) {
            let back = recent(self.last_down);
            self.own_sender_report(now, sending, back, bye);
        }
        if !recent(self.own_rtcp.down_reported) {
            #[cfg(feature = "opus")]
            if self.own_return_report(now, sending, recent(self.own_rtcp.return_sent), bye) {
                return;
            }
            self.own_receiver_report(sending, bye);
        }
    }

    /// On a call whose caller hears downstream re-encoded (Opus caller, G.711 downstream),
    /// the gateway is the sender of the stream the caller gets, so with downstream silent on
    /// RTCP it reports as that sender: a sender report about the re-encoded stream while it
    /// is `flowing` (or the last one, with `bye`), carrying the block about the caller's
    /// stream a receiver report would have. Returns whether it took the report's place.
    #[cfg(feature = "opus")]
    fn own_return_report(&mut self, now: Instant, sending: bool, flowing: bool, bye: bool) -> bool {
        let (Some(ret), Some(sent_at), Some(to)) = (
            self.ret.as_deref(),
            self.own_rtcp.return_sent,
            self.caller_rtcp_addr,
        ) else {
            return false;
        };
        let last_one = bye && self.own_rtcp.return_sr_sent > 0;
        if !(flowing || last_one) {
            return false;
        }
        let t = self.now_us();
        let block = if sending {
            self.leg.caller_report_block(t)
        } else {
            None
        };
        let since = now.saturating_duration_since(sent_at).as_micros() as u64;
        let mut buf = [0u8; 512];
        match ret.own_report(&mut buf, ntp_now(), since, &self.own_rtcp.cname, block, bye) {
            Some(Ok(n)) => {
                send(self.caller_rtcp_sock(), &buf[..n], to, &self.metrics);
                self.own_rtcp.return_sr_sent += 1;
                self.metrics
                    .rtcp_reports_sent
                    .fetch_add(1, Ordering::Relaxed);
                true
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "own RTCP sender report to the caller not written");
                true
            }
            None => false,
        }
    }

    /// Send the caller a receiver report of our own about its stream (downstream sends no
    /// RTCP, which would carry its own figures) if the caller is `sending`, or with `bye` the
    /// last one after those sent.
    fn own_receiver_report(&mut self, sending: bool, bye: bool) {
        let Some(to) = self.caller_rtcp_addr else {
            return;
        };
        if (bye && self.own_rtcp.rr_sent == 0) || (!bye && !sending) {
            return;
        }
        let mut buf = [0u8; 512];
        let t = self.now_us();
        match self
            .leg
            .own_receiver_report(&mut buf, t, &self.own_rtcp.cname, bye)
        {
            Some(Ok(n)) => {
                send(self.caller_rtcp_sock(), &buf[..n], to, &self.metrics);
                self.own_rtcp.rr_sent += 1;
                self.metrics
                    .rtcp_receiver_reports_sent
                    .fetch_add(1, Ordering::Relaxed);
            }
            Some(Err(e)) => tracing::warn!(error = %e, "own RTCP receiver report not written"),
            None => {}
        }
    }

    /// Send downstream a sender report of our own (the caller sends no RTCP) if the caller
    /// is `sending`, or with `bye` the last one after those sent; with a report block about
    /// downstream's stream if it came `back` lately.
    fn own_sender_report(&mut self, now: Instant, sending: bool, back: bool, bye: bool) {
        if (bye && self.own_rtcp.sent == 0) || (!bye && !sending) {
            return;
        }
        let since = now.saturating_duration_since(self.last_caller).as_micros() as u64;
        let ntp = ntp_now();
        let mut buf = [0u8; 512];
        // Downstream's stream back, reported as the caller would have.
        let block = if back {
            self.down_reception.report(self.now_us())
        } else {
            None
        };
        match self
            .leg
            .own_report(&mut buf, ntp, since, &self.own_rtcp.cname, block, bye)
        {
            Some(Ok(n)) => {
                let (sock, to) = self.down_rtcp_out();
                send(sock, &buf[..n], to, &self.metrics);
                self.own_rtcp.sent += 1;
                self.metrics
                    .rtcp_reports_sent
                    .fetch_add(1, Ordering::Relaxed);
            }
            Some(Err(e)) => tracing::warn!(error = %e, "own RTCP report not written"),
            None => {}
        }
    }

    /// Finish the call: flush the leg, emit `call_ended`, close the sinks, answer the API.
    pub async fn finish(mut self, (reason, reply): Ending) -> CallStatus {
        {
            let mut out = leg_out!(self);
            self.leg.finish(&mut out);
        }
        self.flush_packets();
        // The stream ends: a BYE after the reports we sent in either side's stead.
        self.own_reports(Instant::now(), true);
        self.account();
        let st = self.leg.stats();
        self.emitter.emit(
            EventBody::Call(CallEvent::CallEnded {
                reason,
                caller_packets: st.packets_in,
                downstream_packets: st.packets_out,
                lost: st.lost,
            }),
            &self.sinks,
        );
        self.metrics.calls_ended.fetch_add(1, Ordering::Relaxed);
        if reason == EndReason::MediaTimeout {
            self.metrics.calls_timed_out.fetch_add(1, Ordering::Relaxed);
        }
        let status = self.status(Some(reason));
        self.sinks.close().await;
        if let Some(r) = reply {
            let _ = r.send(status.clone());
        }
        status
    }
}

/// Schedule and state of the gateway's own RTCP reports towards downstream.
struct OwnRtcp {
    /// Mean interval; `None` when turned off.
    interval: Option<Duration>,
    /// When the next report is due.
    next: Option<Instant>,
    /// When the caller's own RTCP last came through.
    caller_reported: Option<Instant>,
    /// When downstream's own RTCP last came through.
    down_reported: Option<Instant>,
    /// Sender reports sent downstream so far.
    sent: u64,
    /// Receiver reports sent to the caller so far.
    rr_sent: u64,
    /// When the last packet of a return stream the gateway re-encodes went to the caller.
    #[cfg(feature = "opus")]
    return_sent: Option<Instant>,
    /// Sender reports about that stream sent to the caller so far.
    #[cfg(feature = "opus")]
    return_sr_sent: u64,
    /// The source's canonical name (SDES CNAME): the gateway and the call id, so a
    /// downstream recorder can tell calls apart. It holds no caller data.
    cname: Box<str>,
    /// Randomises the intervals (RFC 3550 6.2): state of a xorshift generator.
    rng: u32,
}

impl OwnRtcp {
    fn new(call_id: &str, interval: Option<Duration>, now: Instant) -> Self {
        // SDES items hold at most 255 octets.
        let mut cname = format!("tonewall-{call_id}");
        while cname.len() > 255 {
            cname.pop();
        }
        let seed = call_id.bytes().fold(0x9e37_79b9u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        let mut s = Self {
            interval,
            next: None,
            caller_reported: None,
            down_reported: None,
            sent: 0,
            rr_sent: 0,
            #[cfg(feature = "opus")]
            return_sent: None,
            #[cfg(feature = "opus")]
            return_sr_sent: 0,
            cname: cname.into(),
            rng: seed | 1,
        };
        if let Some(i) = interval {
            // The first report comes after half an interval (RFC 3550 6.2), so a short call
            // gets one too.
            s.schedule(now, i / 2);
        }
        s
    }

    /// Next report `interval` times a random factor of 0.5 to 1.5 from `now`.
    fn schedule(&mut self, now: Instant, interval: Duration) {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 17;
        self.rng ^= self.rng << 5;
        let f = 0.5 + f64::from(self.rng % 1000) / 1000.0;
        self.next = Some(now + interval.mul_f64(f));
    }
}

/// The RTCP address paired with an RTP address (RFC 3550: the next port).
fn next_port(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip(), a.port().wrapping_add(1))
}

/// Longest return-path payload decoded for the recorder, samples (120 ms of 48 kHz Opus).
const MAX_RETURN_SAMPLES: usize = 5760;

/// A decoder for the return path when the downstream speaks a frame codec (Opus).
#[cfg(feature = "opus")]
fn return_decoder(leg: &LegConfig) -> Option<Box<dyn FrameDecoder>> {
    let down = leg.downstream_codec.unwrap_or(leg.codec);
    if down != Codec::Opus {
        return None;
    }
    crate::codec::OpusDecoder::new()
        .ok()
        .map(|d| Box::new(d) as Box<dyn FrameDecoder>)
}

#[cfg(not(feature = "opus"))]
fn return_decoder(_: &LegConfig) -> Option<Box<dyn FrameDecoder>> {
    None
}

/// How far the return path's timestamps may put its audio from the caller's newest sample
/// before they are no longer believed (a sender that reset its clock) and the stream is
/// placed afresh at the caller's newest sample. Jitter and the look-ahead are well inside.
const DOWN_MAX_SKEW_MS: u64 = 1000;

/// The return path on the caller's timeline. Its audio is placed by its RTP timestamps, not
/// by counting samples: a sender that stops while its user is silent (DTX, VAD with comfort
/// noise) leaves a gap in timestamps, and counting would pull everything after the gap
/// early, so the recording's two channels drift apart by every pause the agent makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DownAnchor {
    ssrc: u32,
    /// RTP timestamp placed at `at0`.
    ts0: u32,
    at0: u64,
}

impl DownAnchor {
    /// Where the packet with `ssrc` and `ts` goes, given the caller's newest sample `now`;
    /// (re)anchors at `now` for a new stream, or when the timestamps would place it more than
    /// `max_skew` samples from `now`.
    fn place(anchor: &mut Option<Self>, ssrc: u32, ts: u32, now: u64, max_skew: u64) -> u64 {
        if let Some(a) = *anchor {
            if a.ssrc == ssrc {
                // Signed distance, so a packet from just before the anchor (reordered) is
                // placed before it rather than four billion samples on.
                let at = a.at0 as i64 + i64::from(ts.wrapping_sub(a.ts0) as i32);
                if at >= 0 && (at as u64).abs_diff(now) <= max_skew {
                    return at as u64;
                }
            }
        }
        *anchor = Some(Self {
            ssrc,
            ts0: ts,
            at0: now,
        });
        now
    }
}

/// Decode a return-path packet for the recorder: samples written to `out`, and the packet's
/// SSRC and RTP timestamp; `None` for anything that is not the call's audio codec
/// (telephone-events, comfort noise, junk).
fn decode_payload(
    buf: &[u8],
    leg: &LegConfig,
    dec: &mut Option<Box<dyn FrameDecoder>>,
    out: &mut [i16],
) -> Option<(usize, u32, u32)> {
    let p = rtp_types::RtpPacket::parse(buf).ok()?;
    let (ssrc, ts) = (p.ssrc(), p.timestamp());
    if p.payload_type() != leg.downstream_pt.unwrap_or(leg.audio_pt) {
        return None;
    }
    if leg.downstream_codec.is_some_and(|c| c != leg.codec) {
        // Transcoded call: its return path goes through `return_leg` instead (back to
        // Opus, recorded at the caller's rate); nothing to decode here.
        return None;
    }
    let pl = p.payload();
    match leg.codec {
        Codec::Opus => {
            let d = dec.as_mut()?;
            let n = d.samples(pl).ok()?;
            if n > out.len() {
                return None;
            }
            let n = d.decode(pl, &mut out[..n]).ok()?;
            Some((n, ssrc, ts))
        }
        Codec::Pcmu | Codec::Pcma => {
            let n = pl.len().min(out.len());
            for (o, &b) in out[..n].iter_mut().zip(pl) {
                *o = leg.codec.decode_byte(b);
            }
            Some((n, ssrc, ts))
        }
        Codec::Pcm16 => {
            let n = (pl.len() / 2).min(out.len());
            for (o, s) in out[..n].iter_mut().zip(pl.chunks_exact(2)) {
                *o = i16::from_be_bytes([s[0], s[1]]);
            }
            Some((n, ssrc, ts))
        }
    }
}

/// Bind a pair of UDP sockets on consecutive ports (even RTP, odd RTCP) within the range,
/// starting the search at `*cursor`. The sockets are non-blocking.
pub fn bind_pair(
    ip: std::net::IpAddr,
    lo: u16,
    hi: u16,
    cursor: &mut u16,
) -> std::io::Result<(UdpSocket, UdpSocket)> {
    let lo = lo + (lo & 1);
    let span = ((hi - lo) / 2).max(1);
    for _ in 0..span {
        if *cursor < lo || *cursor >= hi {
            *cursor = lo;
        }
        let p = *cursor & !1;
        *cursor = p.saturating_add(2);
        let Ok(rtp) = std::net::UdpSocket::bind((ip, p)) else {
            continue;
        };
        let Ok(rtcp) = std::net::UdpSocket::bind((ip, p + 1)) else {
            continue;
        };
        rtp.set_nonblocking(true)?;
        rtcp.set_nonblocking(true)?;
        return Ok((UdpSocket::from_std(rtp), UdpSocket::from_std(rtcp)));
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no free RTP port pair in the configured range",
    ))
}

/// Channel id of the caller leg (one masked channel per call).
pub const CALLER_CHANNEL: ChannelId = ChannelId(0);

/// Where a peer sending RTP from `rtp` takes its RTCP: the same address when it
/// multiplexes (RFC 5761), the next port otherwise.
fn rtcp_addr(rtp: SocketAddr, mux: bool) -> SocketAddr {
    if mux {
        rtp
    } else {
        next_port(rtp)
    }
}

/// Is this datagram RTCP rather than RTP (RFC 5761 section 4: version 2 and a packet type of
/// 192 to 223 in the second octet, which RTP with multiplexing never uses)?
fn is_rtcp(b: &[u8]) -> bool {
    b.len() >= 8 && b[0] >> 6 == 2 && (192..=223).contains(&b[1])
}

/// The wall-clock time now in NTP format, for the gateway's own sender reports.
fn ntp_now() -> u64 {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    crate::rtp::rtcp::ntp_time(wall)
}

#[cfg(test)]
mod tests {
    use super::DownAnchor;

    /// Return-path placement: timestamps keep their spacing across a silence gap, a
    /// reordered packet lands before its successor, the 32-bit wrap is seamless, and a new
    /// SSRC or a timestamp jump beyond the skew re-anchors at the caller's newest sample.
    #[test]
    fn return_audio_is_placed_by_its_timestamps() {
        let mut a = None;
        let skew = 8000;
        // First packet: anchored where the caller is.
        assert_eq!(DownAnchor::place(&mut a, 7, 1000, 50_000, skew), 50_000);
        // A packet from before the anchor, reordered: before it, not at the end of time.
        assert_eq!(DownAnchor::place(&mut a, 7, 840, 50_000, skew), 49_840);
        // 20 ms on, then a second of DTX: the caller moved on as far.
        assert_eq!(DownAnchor::place(&mut a, 7, 1160, 50_160, skew), 50_160);
        assert_eq!(DownAnchor::place(&mut a, 7, 9320, 58_400, skew), 58_320);
        // Across the timestamp wrap.
        let mut w = None;
        assert_eq!(
            DownAnchor::place(&mut w, 1, u32::MAX - 159, 10_000, skew),
            10_000
        );
        assert_eq!(DownAnchor::place(&mut w, 1, 0, 10_160, skew), 10_160);
        // A new stream is placed afresh.
        assert_eq!(DownAnchor::place(&mut a, 8, 5, 60_000, skew), 60_000);
        assert_eq!(DownAnchor::place(&mut a, 8, 165, 60_160, skew), 60_160);
        // A sender that reset its clock: the timestamps would say a minute off.
        assert_eq!(DownAnchor::place(&mut a, 8, 480_165, 60_320, skew), 60_320);
        assert_eq!(DownAnchor::place(&mut a, 8, 480_325, 60_480, skew), 60_480);
        // Timestamps that would fall before the call began re-anchor too.
        let mut e = None;
        assert_eq!(DownAnchor::place(&mut e, 3, 100_000, 100, skew), 100);
        assert_eq!(DownAnchor::place(&mut e, 3, 99_000, 100, skew), 100);
    }
}
