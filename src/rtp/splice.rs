//! Opus to Opus without transcoding: the caller's own packets go downstream byte for byte
//! wherever the masker left their audio untouched, and only the packets that carry masked
//! (or concealed, or synthesised) audio are replaced by packets of our own encoder.
//!
//! Why: re-encoding every packet costs a libopus encode per frame (about 400 µs at the
//! default complexity here, four times the per-frame budget of BRIEF 2.4; criterion
//! `pipeline/opus_encode_48k_20ms`), adds the encoder's 6.5 ms look-ahead to all audio, and
//! costs a generation of quality. Splicing forwards what the caller's encoder made and
//! re-encodes only around tones.
//!
//! How a splice stays leak-free. An Opus decoder carries state from packet to packet (SILK's
//! long-term predictor looks back up to 18 ms, CELT predicts band energies from the last
//! frame and post-filters with up to 21 ms of pitch history, and SILK packets may carry a
//! low-bit-rate copy of the previous frame for loss recovery). A caller packet that follows a
//! tone was coded against a history that contained the tone; played after our silence it
//! could carry part of that tone, or its negative. So:
//! * a packet is forwarded only when the audio it decoded to left the masker bit-exact, and
//!   it is mono (a stereo packet could carry a tone in its side channel that the mono mix
//!   used for detection cancels), and it has no padding (where Opus 1.5 puts its extensions,
//!   deep redundancy among them, which can carry up to a second of earlier audio);
//! * once anything is spliced, [`SETTLE_PACKETS`] packets in a row must pass unchanged
//!   before forwarding resumes (the last of them is the first forwarded): by then the
//!   caller's encoder history, and the redundancy copy of the previous frame, are free of
//!   the tone;
//! * our splice encoder starts from a reset at every splice and codes each frame without
//!   inter-frame prediction, so what the downstream decoder makes of it does not depend on
//!   the history it had.
//!
//! The splice encoder is CELT-only (libopus "restricted low delay"): 2.5 ms of look-ahead
//! instead of 6.5 ms, and at complexity 2 about 40 µs a frame instead of 300. While spliced,
//! downstream audio is ours, 2.5 ms late (the first 2.5 ms after a splice starts are
//! silence, and 2.5 ms are dropped when forwarding resumes); between splices it is the
//! caller's, with no delay but the pipeline's.
//!
//! Owns: the history of decoded input the comparison needs, the queue of caller packets
//! waiting for the masker's verdict, and the splice encoder.
//! Must never: forward a packet whose audio the masker changed, forward a packet before the
//! settle run is complete, allocate per packet, or panic on what the caller sent.

use crate::codec::FrameEncoder;

use super::frames::Reframer;
use super::leg::{LegOutputs, OutStream};

/// Unchanged packets in a row after a splice before forwarding resumes: the first
/// `SETTLE_PACKETS - 1` are still re-encoded, the last is the first forwarded (so it follows
/// 40 ms of tone-free caller audio, and its FEC copy covers tone-free audio).
pub const SETTLE_PACKETS: u32 = 3;
/// Caller packets that may wait for the masker's verdict at once. Twenty-ms packets need
/// three or four (the 48 kHz pipeline's delay is the look-ahead plus about 11 ms); past this
/// the newest packets are merged and re-encoded rather than held.
const SLOTS: usize = 32;
/// Largest caller packet held for forwarding, bytes (an MTU); longer ones are re-encoded.
const SLOT_BYTES: usize = 1500;
/// Decoded history kept beyond the longest packet, samples at 48 kHz (100 ms: more than the
/// longest pipeline delay, 40 ms of look-ahead plus the resampler's).
const HISTORY_MARGIN: usize = 4800;

/// One caller packet waiting for the masker's verdict.
struct Slot {
    /// Position of its first sample on the decoded-input timeline.
    start: u64,
    samples: usize,
    /// Bytes held for forwarding; 0 when it cannot be forwarded (lost, refused, stereo,
    /// padded, too large, merged).
    len: usize,
    bytes: Box<[u8]>,
}

/// Counters of a splicing leg.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpliceStats {
    /// Caller packets forwarded byte for byte.
    pub forwarded: u64,
    /// Caller packets (or synthesised spans) replaced by our own encoding.
    pub reencoded: u64,
    /// Splices started (runs of replaced packets).
    pub splices: u64,
}

/// Forwards untouched caller packets and re-encodes the rest (see the module docs).
pub struct Splicer {
    enc: Box<dyn FrameEncoder>,
    /// Decoded input, a ring indexed by position on the decoded-input timeline.
    history: Box<[i16]>,
    in_pos: u64,
    /// Masked samples received so far (including the pipeline's initial `delay`).
    out_pos: u64,
    /// The pipeline's delay: masked sample `k` is decoded-input sample `k - delay`.
    delay: u64,
    slots: Vec<Slot>,
    head: usize,
    count: usize,
    /// Masked samples of the head slot, while it may still be forwarded.
    cur: Box<[i16]>,
    cur_len: usize,
    cur_equal: bool,
    /// Masked samples waiting for a whole splice-encoder frame.
    reframer: Reframer,
    /// Replacing packets now (true from the start: the pipeline's initial silence is ours).
    spliced: bool,
    /// Unchanged packets in a row since the splice.
    clean: u32,
    stats: SpliceStats,
}

impl Splicer {
    /// A splicer for a pipeline of `delay` samples, caller packets of up to `max_samples`,
    /// replacing with `enc` (reset at each splice).
    pub fn new(enc: Box<dyn FrameEncoder>, delay: usize, max_samples: usize) -> Self {
        let reframer = Reframer::new(max_samples, enc.max_packet());
        Self {
            enc,
            history: vec![0; max_samples + delay + HISTORY_MARGIN].into_boxed_slice(),
            in_pos: 0,
            out_pos: 0,
            delay: delay as u64,
            slots: (0..SLOTS)
                .map(|_| Slot {
                    start: 0,
                    samples: 0,
                    len: 0,
                    bytes: vec![0; SLOT_BYTES].into_boxed_slice(),
                })
                .collect(),
            head: 0,
            count: 0,
            cur: vec![0; max_samples].into_boxed_slice(),
            cur_len: 0,
            cur_equal: true,
            reframer,
            spliced: true,
            clean: 0,
            stats: SpliceStats::default(),
        }
    }

    /// What the splice encoder adds while splicing, samples (none while forwarding).
    pub fn delay(&self) -> usize {
        self.enc.delay()
    }

    /// Counters so far.
    pub fn stats(&self) -> SpliceStats {
        self.stats
    }

    /// The downstream decoder can no longer be assumed to hear what ours heard (a new
    /// caller source): splice until a settle run has passed.
    pub fn desync(&mut self) {
        if !self.spliced {
            // Splice from here on (the encoder's queue is empty while forwarding).
            self.spliced = true;
            self.enc.reset();
            self.stats.splices += 1;
        }
        self.clean = 0;
        for i in 0..self.count {
            let k = (self.head + i) % SLOTS;
            self.slots[k].len = 0;
        }
    }

    /// The caller's packet `payload` (or `None` for a lost, refused or synthesised span)
    /// decoded to `pcm`.
    pub fn input(&mut self, payload: Option<&[u8]>, pcm: &[i16]) {
        let n = pcm.len();
        if n == 0 {
            return;
        }
        // Ring writes and reads go in at most two contiguous pieces (no division per sample).
        let h = self.history.len();
        let mut at = (self.in_pos % h as u64) as usize;
        let mut rest = pcm;
        while !rest.is_empty() {
            let m = (h - at).min(rest.len());
            self.history[at..at + m].copy_from_slice(&rest[..m]);
            rest = &rest[m..];
            at = 0;
        }
        let forwardable =
            payload.filter(|p| p.len() <= SLOT_BYTES && n <= self.cur.len() && forwardable(p));
        if self.count == SLOTS || n > self.cur.len() {
            // No room to hold it (or longer than any packet): it joins the newest span and
            // is re-encoded with it. A span that cannot be held must not be forwarded.
            if self.count > 0 {
                let k = (self.head + self.count - 1) % SLOTS;
                self.slots[k].samples += n;
                self.slots[k].len = 0;
                self.in_pos += n as u64;
                return;
            }
        }
        let k = (self.head + self.count) % SLOTS;
        let slot = &mut self.slots[k];
        slot.start = self.in_pos;
        slot.samples = n;
        slot.len = match forwardable {
            Some(p) => {
                slot.bytes[..p.len()].copy_from_slice(p);
                p.len()
            }
            None => 0,
        };
        self.count += 1;
        self.in_pos += n as u64;
    }

    /// Masked samples leaving the pipeline, in order: forward or re-encode what they cover.
    pub fn output<O: LegOutputs + ?Sized>(&mut self, pcm: &[i16], o: &mut OutStream, out: &mut O) {
        let mut i = 0;
        while i < pcm.len() {
            if self.out_pos < self.delay {
                // The look-ahead's initial silence: no caller packet covers it.
                let m = ((self.delay - self.out_pos) as usize).min(pcm.len() - i);
                self.encode(&pcm[i..i + m], o, out);
                self.out_pos += m as u64;
                i += m;
                continue;
            }
            let pos = self.out_pos - self.delay;
            if self.count == 0 {
                // Masked audio with no input behind it cannot happen; if it ever does, it
                // is sent as ours, never as a caller packet.
                self.clean = 0;
                self.flush_cur(o, out);
                self.encode(&pcm[i..], o, out);
                self.out_pos += (pcm.len() - i) as u64;
                return;
            }
            let (start, samples, len) = {
                let s = &self.slots[self.head];
                (s.start, s.samples, s.len)
            };
            let end = start + samples as u64;
            if pos >= end {
                // Cannot happen (output never runs ahead of input); if it did, the slot is
                // settled as ours rather than indexed past its end.
                self.slots[self.head].len = 0;
                self.flush_cur(o, out);
                self.finish_slot(o, out);
                continue;
            }
            let m = ((end - pos) as usize).min(pcm.len() - i);
            let chunk = &pcm[i..i + m];
            if len > 0 {
                let h = self.history.len() as u64;
                let in_history = self.in_pos - pos <= h;
                if self.cur_equal {
                    self.cur_equal = in_history && self.history_equals(pos, chunk);
                }
                self.cur[self.cur_len..self.cur_len + m].copy_from_slice(chunk);
                self.cur_len += m;
            } else {
                if self.cur_len > 0 {
                    // Held for forwarding, then ruled out (merged or desynchronised).
                    self.flush_cur(o, out);
                }
                self.encode(chunk, o, out);
            }
            self.out_pos += m as u64;
            i += m;
            if pos + m as u64 == end {
                self.finish_slot(o, out);
            }
        }
    }

    /// Is `chunk` what was decoded at `pos` (which must still be in the ring)?
    fn history_equals(&self, pos: u64, chunk: &[i16]) -> bool {
        let h = self.history.len();
        let mut at = (pos % h as u64) as usize;
        let mut rest = chunk;
        while !rest.is_empty() {
            let m = (h - at).min(rest.len());
            if self.history[at..at + m] != rest[..m] {
                return false;
            }
            rest = &rest[m..];
            at = 0;
        }
        true
    }

    /// End of stream: send what is still waiting, as ours.
    pub fn flush<O: LegOutputs + ?Sized>(&mut self, o: &mut OutStream, out: &mut O) {
        self.flush_cur(o, out);
        self.count = 0;
        self.pad_out(o, out);
    }

    /// Re-encode the head slot's held samples.
    fn flush_cur<O: LegOutputs + ?Sized>(&mut self, o: &mut OutStream, out: &mut O) {
        let n = core::mem::take(&mut self.cur_len);
        self.cur_equal = true;
        if n > 0 {
            let cur = core::mem::take(&mut self.cur);
            self.encode(&cur[..n], o, out);
            self.cur = cur;
        }
    }

    /// The head slot is complete: forward it or re-encode it.
    fn finish_slot<O: LegOutputs + ?Sized>(&mut self, o: &mut OutStream, out: &mut O) {
        let k = self.head;
        self.head = (self.head + 1) % SLOTS;
        self.count -= 1;
        let (samples, len) = (self.slots[k].samples, self.slots[k].len);
        let n = core::mem::take(&mut self.cur_len);
        let equal = core::mem::replace(&mut self.cur_equal, true) && n == samples;
        if len == 0 {
            // Re-encoded as it went (and a span that is not the caller's breaks the run).
            self.clean = 0;
            self.stats.reencoded += 1;
            return;
        }
        if equal {
            if self.spliced {
                self.clean += 1;
                if self.clean >= SETTLE_PACKETS {
                    self.pad_out(o, out);
                    self.spliced = false;
                }
            }
            if !self.spliced {
                o.packet(&self.slots[k].bytes[..len], samples as u32, false, out);
                self.stats.forwarded += 1;
                return;
            }
        } else {
            self.clean = 0;
        }
        let cur = core::mem::take(&mut self.cur);
        self.encode(&cur[..n], o, out);
        self.cur = cur;
        self.stats.reencoded += 1;
    }

    /// Send `pcm` as our own packets (starting a splice if we were forwarding).
    fn encode<O: LegOutputs + ?Sized>(&mut self, pcm: &[i16], o: &mut OutStream, out: &mut O) {
        if !self.spliced {
            self.spliced = true;
            self.enc.reset();
            self.stats.splices += 1;
        }
        self.reframer.push(self.enc.as_mut(), pcm, o, out);
    }

    /// Before forwarding resumes (or at the end), the encoder's partial frame goes out,
    /// padded with silence to the 2.5 ms grid every Opus frame size is on.
    fn pad_out<O: LegOutputs + ?Sized>(&mut self, o: &mut OutStream, out: &mut O) {
        self.reframer.pad_out(self.enc.as_mut(), o, out);
    }
}

/// May this Opus packet go downstream as it is (once its audio passed unchanged)? Mono and
/// without padding (RFC 6716 section 3.2.5: only code 3 packets can be padded).
fn forwardable(p: &[u8]) -> bool {
    let Some(&toc) = p.first() else {
        return false;
    };
    let stereo = toc & 0x04 != 0;
    let code = toc & 0x03;
    let padded = code == 3 && p.get(1).is_none_or(|&b| b & 0x40 != 0);
    !stereo && !padded
}

#[cfg(test)]
mod tests {
    use super::forwardable;

    #[test]
    fn only_mono_unpadded_packets_are_forwardable() {
        // TOC: config 31 (CELT FB 20 ms), mono, code 0.
        assert!(forwardable(&[0xF8, 1, 2]));
        // Same, stereo.
        assert!(!forwardable(&[0xFC, 1, 2]));
        // Code 3, two frames, CBR, no padding.
        assert!(forwardable(&[0xFB, 0x02, 1, 2]));
        // Code 3 with the padding flag.
        assert!(!forwardable(&[0xFB, 0x42, 0x01, 1, 2]));
        // Code 3 cut before its frame-count byte.
        assert!(!forwardable(&[0xFB]));
        assert!(!forwardable(&[]));
    }
}
