//! The frame-codec side of a caller leg (Opus): decoding each payload to 48 kHz PCM before the
//! pipeline, deciding what a lost packet becomes, and turning the masked PCM back into
//! downstream packets: the caller's own Opus packets where nothing was masked and ours around
//! what was ([`Splicer`]), Opus re-encoded throughout, or G.711 at 8 kHz when the call asks
//! for PCMU/PCMA downstream.
//!
//! Owns: the decoder and encoder states, the partial frame waiting for the encoder, and the
//! 48 kHz to 8 kHz transcoding path.
//! Must never: encode a sample that did not come out of the pipeline (the masker), conceal a
//! loss with codec extrapolation inside a capture window or next to a tone (it could re-create
//! the tone), allocate per packet, or panic on a payload the decoder rejects.

use crate::codec::{Codec, FrameDecoder, FrameEncoder};
use crate::pipeline::ChunkResampler;

use super::leg::{LegOutputs, OutStream};
use super::splice::Splicer;

/// How the masked PCM leaves.
pub(super) enum FrameOut {
    /// Re-encoded with a frame codec, on the input's clock.
    Frames(Box<dyn FrameEncoder>),
    /// The caller's own packets where the masker left them untouched, re-encoded around
    /// what it changed (Opus to Opus; see [`Splicer`]).
    Splice(Box<Splicer>),
    /// Resampled to 8 kHz and sent as G.711 packets of `fill` samples.
    G711 {
        codec: Codec,
        rs: Box<ChunkResampler>,
        bytes: Vec<u8>,
        len: usize,
        fill: usize,
    },
}

/// Decoder, concealment rule and output encoder of a frame-codec leg.
pub(super) struct FrameStage {
    dec: Box<dyn FrameDecoder>,
    out: FrameOut,
    /// Masked samples not yet a whole encoder frame (for `FrameOut::Frames`).
    reframer: Reframer,
    /// Payloads the decoder refused (sent on as silence).
    pub(super) decode_errors: u64,
    /// Losses concealed with the decoder's extrapolation (the rest are silence).
    pub(super) concealed: u64,
}

/// What one step feeds the decoder.
#[derive(Clone, Copy)]
pub(super) enum FrameSrc<'a> {
    Payload(&'a [u8]),
    /// A lost packet's time: conceal if allowed, else silence.
    Lost,
    Silence,
}

/// Frame sizes the encoder is tried with, longest first (60 ms down to 2.5 ms at 48 kHz).
const FRAME_SIZES: [usize; 6] = [2880, 1920, 960, 480, 240, 120];

impl FrameStage {
    /// A stage decoding with `dec` and sending through `out`; `max_samples` bounds a packet.
    pub(super) fn new(dec: Box<dyn FrameDecoder>, out: FrameOut, max_samples: usize) -> Self {
        let max_pkt = match &out {
            FrameOut::Frames(e) => e.max_packet(),
            FrameOut::Splice(_) | FrameOut::G711 { .. } => 0,
        };
        Self {
            dec,
            out,
            reframer: Reframer::new(max_samples, max_pkt),
            decode_errors: 0,
            concealed: 0,
        }
    }

    /// Samples a payload decodes to, or `None` if it is not a valid packet.
    pub(super) fn samples(&self, payload: &[u8]) -> Option<usize> {
        self.dec.samples(payload).ok()
    }

    /// Samples of delay the output encoder adds (what a listener downstream hears late).
    pub(super) fn encoder_delay(&self) -> usize {
        match &self.out {
            FrameOut::Frames(e) => e.delay(),
            FrameOut::Splice(s) => s.delay(),
            FrameOut::G711 { rs, .. } => rs.delay_out() * 6,
        }
    }

    /// Forwarding counters, when the stage splices.
    pub(super) fn splice_stats(&self) -> Option<super::splice::SpliceStats> {
        match &self.out {
            FrameOut::Splice(s) => Some(s.stats()),
            _ => None,
        }
    }

    /// Fill `pcm` from `src`. `conceal_ok` says whether extrapolating a loss is safe now.
    pub(super) fn decode(&mut self, src: FrameSrc<'_>, conceal_ok: bool, pcm: &mut [i16]) {
        let n = pcm.len();
        let mut decoded = None;
        match src {
            FrameSrc::Payload(p) => match self.dec.decode(p, pcm) {
                Ok(m) if m == n => decoded = Some(p),
                _ => {
                    // A payload that passed the size check but failed to decode: fail closed.
                    self.decode_errors += 1;
                    pcm.fill(0);
                }
            },
            FrameSrc::Lost if conceal_ok => match self.dec.conceal(pcm) {
                Ok(m) if m == n => self.concealed += 1,
                _ => pcm.fill(0),
            },
            FrameSrc::Lost | FrameSrc::Silence => pcm.fill(0),
        }
        if let FrameOut::Splice(s) = &mut self.out {
            // Only a packet that decoded is a candidate for forwarding.
            s.input(decoded, pcm);
        }
    }

    /// A new source: the decoder must not carry the old one's state into it.
    pub(super) fn reset(&mut self) {
        self.dec.reset();
        if let FrameOut::Splice(s) = &mut self.out {
            // The downstream decoder still holds the old source's state.
            s.desync();
        }
    }

    /// Send masked samples downstream (whole encoder frames now, the rest later).
    pub(super) fn emit<O: LegOutputs + ?Sized>(
        &mut self,
        pcm: &[i16],
        o: &mut OutStream,
        out: &mut O,
    ) {
        match &mut self.out {
            FrameOut::Splice(s) => s.output(pcm, o, out),
            FrameOut::Frames(enc) => self.reframer.push(enc.as_mut(), pcm, o, out),
            FrameOut::G711 {
                codec,
                rs,
                bytes,
                len,
                fill,
            } => {
                let codec = *codec;
                let fill = *fill;
                let r = rs.push(pcm, |y| {
                    for &s in y {
                        let v = s.round().clamp(i16::MIN as f32, i16::MAX as f32) as i16;
                        if *len < bytes.len() {
                            bytes[*len] = codec.encode_byte(v);
                            *len += 1;
                        }
                        if *len == fill {
                            o.packet(&bytes[..fill], fill as u32, false, out);
                            *len = 0;
                        }
                    }
                });
                if r.is_err() {
                    // Resampler refused a chunk: what it held is dropped, never sent raw.
                    self.decode_errors += 1;
                }
            }
        }
    }

    /// End of stream: whatever is left goes out, padded with silence to a whole frame.
    pub(super) fn flush<O: LegOutputs + ?Sized>(&mut self, o: &mut OutStream, out: &mut O) {
        match &mut self.out {
            FrameOut::Splice(s) => s.flush(o, out),
            FrameOut::Frames(enc) => self.reframer.pad_out(enc.as_mut(), o, out),
            FrameOut::G711 {
                codec, bytes, len, ..
            } => {
                if *len > 0 {
                    let n = *len;
                    bytes[n..].fill(codec.silence_byte());
                    let fill = bytes.len();
                    o.packet(&bytes[..fill], fill as u32, false, out);
                    *len = 0;
                }
            }
        }
    }
}

/// Masked samples on their way into whole encoder frames, and the packet they are encoded
/// into. Allocated once; pushing never allocates.
pub(super) struct Reframer {
    acc: Box<[i16]>,
    len: usize,
    pkt: Box<[u8]>,
}

impl Reframer {
    /// Room for `max_samples` beyond a longest frame, packets of up to `max_packet` bytes.
    pub(super) fn new(max_samples: usize, max_packet: usize) -> Self {
        Self {
            acc: vec![0; max_samples + FRAME_SIZES[0]].into_boxed_slice(),
            len: 0,
            pkt: vec![0; max_packet].into_boxed_slice(),
        }
    }

    /// Queue `pcm` and send every whole frame `enc` accepts; the remainder waits.
    pub(super) fn push<O: LegOutputs + ?Sized>(
        &mut self,
        enc: &mut dyn FrameEncoder,
        pcm: &[i16],
        o: &mut OutStream,
        out: &mut O,
    ) {
        let mut i = 0;
        while i < pcm.len() {
            let m = (self.acc.len() - self.len).min(pcm.len() - i);
            self.acc[self.len..self.len + m].copy_from_slice(&pcm[i..i + m]);
            self.len += m;
            i += m;
            self.send_frames(enc, o, out);
        }
    }

    /// Send what waits, padded with silence to the 2.5 ms grid every Opus frame size is on.
    pub(super) fn pad_out<O: LegOutputs + ?Sized>(
        &mut self,
        enc: &mut dyn FrameEncoder,
        o: &mut OutStream,
        out: &mut O,
    ) {
        if self.len > 0 {
            let step = FRAME_SIZES[FRAME_SIZES.len() - 1];
            let whole = self.len.div_ceil(step) * step;
            self.acc[self.len..whole].fill(0);
            self.len = whole;
            self.send_frames(enc, o, out);
        }
    }

    /// Encode and send every whole frame at the front of the queue, keeping the remainder.
    fn send_frames<O: LegOutputs + ?Sized>(
        &mut self,
        enc: &mut dyn FrameEncoder,
        o: &mut OutStream,
        out: &mut O,
    ) {
        let mut start = 0;
        while let Some(&f) = FRAME_SIZES
            .iter()
            .find(|&&f| f <= self.len - start && enc.frame_ok(f))
        {
            let frame = &self.acc[start..start + f];
            match enc.encode(frame, &mut self.pkt) {
                Ok(len) => o.packet(&self.pkt[..len], f as u32, false, out),
                // The encoder refused: the frame's time passes with no packet (a gap the
                // receiver conceals), never with unmasked audio.
                Err(_) => o.skip(f as u32),
            }
            start += f;
        }
        self.acc.copy_within(start..self.len, 0);
        self.len -= start;
    }
}
