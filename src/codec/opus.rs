//! Opus (RFC 6716, RTP payload per RFC 7587) behind the frame-codec traits, at 48 kHz mono.
//!
//! Binding: `opus2` 0.4 against Debian's libopus-dev (dynamic link, no bundled C build, no
//! cmake). It is maintained (2025-2026 releases), and its decode/encode calls write into
//! caller buffers, so the per-packet path allocates nothing. `audiopus` is unmaintained
//! (RustSec advisory since May 2026, bundled build broken with CMake 4); `opus` 0.4 bundles
//! libopus 1.6 and needs cmake at build time for no gain we need.
//!
//! Owns: one libopus decoder or encoder per stream and the RTP conventions of RFC 7587 (48 kHz
//! clock whatever the coded bandwidth; stereo packets are folded to mono by the decoder,
//! which is what detection needs).
//! Must never: allocate per packet, or conceal a loss on its own initiative: the leg decides
//! whether concealment is safe (it is not inside a capture window or next to a tone).

use opus2::{Application, Bitrate, Channels, Decoder, Encoder, Signal};

use super::frame::{FrameCodecError, FrameDecoder, FrameEncoder};

/// The RTP clock and the rate we decode and encode at (RFC 7587 section 4.1).
pub const OPUS_RATE: u32 = 48_000;
/// Longest Opus packet, samples at 48 kHz (120 ms).
pub const OPUS_MAX_PACKET_SAMPLES: usize = 5760;
/// Default bit rate of the downstream encoder, bit/s: wideband speech with headroom.
pub const OPUS_DEFAULT_BITRATE: u32 = 32_000;
/// Largest packet we let the encoder write (RFC 6716 caps a frame at 1275 bytes).
const MAX_OPUS_PACKET: usize = 1500;

/// A libopus decoder producing 48 kHz mono.
pub struct OpusDecoder {
    dec: Decoder,
}

impl OpusDecoder {
    /// A decoder at 48 kHz, mono output.
    pub fn new() -> Result<Self, FrameCodecError> {
        let dec = Decoder::new(OPUS_RATE, Channels::Mono).map_err(|_| FrameCodecError::Internal)?;
        Ok(Self { dec })
    }
}

impl FrameDecoder for OpusDecoder {
    fn rate(&self) -> u32 {
        OPUS_RATE
    }

    fn samples(&self, packet: &[u8]) -> Result<usize, FrameCodecError> {
        if packet.is_empty() {
            return Err(FrameCodecError::Malformed);
        }
        match opus2::packet::get_nb_samples(packet, OPUS_RATE) {
            Ok(n) if n > 0 && n <= OPUS_MAX_PACKET_SAMPLES => Ok(n),
            _ => Err(FrameCodecError::Malformed),
        }
    }

    fn decode(&mut self, packet: &[u8], out: &mut [i16]) -> Result<usize, FrameCodecError> {
        if packet.is_empty() {
            // libopus reads an empty packet as "lost"; that is conceal's job, not decode's.
            return Err(FrameCodecError::Malformed);
        }
        self.dec
            .decode(packet, out, false)
            .map_err(|_| FrameCodecError::Malformed)
    }

    fn conceal(&mut self, out: &mut [i16]) -> Result<usize, FrameCodecError> {
        self.dec
            .decode(&[], out, false)
            .map_err(|_| FrameCodecError::Internal)
    }

    fn reset(&mut self) {
        // Recreating is the fallback if the reset control ever fails; never panics.
        if self.dec.reset_state().is_err() {
            if let Ok(d) = Decoder::new(OPUS_RATE, Channels::Mono) {
                self.dec = d;
            }
        }
    }
}

/// Complexity of the splice encoder: at 2 a CELT frame costs about 40 µs here (10 costs
/// about 100); it codes masked silence and a few frames of speech after it.
const SPLICE_COMPLEXITY: i32 = 2;

/// A libopus encoder taking 48 kHz mono, tuned for speech.
pub struct OpusEncoder {
    enc: Encoder,
    delay: usize,
}

impl OpusEncoder {
    /// An encoder at 48 kHz mono, VoIP application, at `bitrate` bit/s.
    pub fn new(bitrate: u32) -> Result<Self, FrameCodecError> {
        let mut enc = Encoder::new(OPUS_RATE, Channels::Mono, Application::Voip)
            .map_err(|_| FrameCodecError::Internal)?;
        enc.set_bitrate(Bitrate::Bits(bitrate.clamp(6_000, 510_000) as i32))
            .map_err(|_| FrameCodecError::Internal)?;
        enc.set_signal(Signal::Voice)
            .map_err(|_| FrameCodecError::Internal)?;
        let delay = enc.get_lookahead().map_err(|_| FrameCodecError::Internal)?;
        Ok(Self {
            enc,
            delay: delay.max(0) as usize,
        })
    }

    /// The encoder that replaces caller packets around masked audio when Opus goes downstream
    /// unchanged (see `rtp::splice`): CELT-only ("restricted low delay", 2.5 ms of
    /// look-ahead), low complexity, and no inter-frame prediction, so each packet decodes
    /// the same whatever the decoder heard before it.
    pub fn splice(bitrate: u32) -> Result<Self, FrameCodecError> {
        let mut enc = Encoder::new(OPUS_RATE, Channels::Mono, Application::LowDelay)
            .map_err(|_| FrameCodecError::Internal)?;
        enc.set_bitrate(Bitrate::Bits(bitrate.clamp(6_000, 510_000) as i32))
            .map_err(|_| FrameCodecError::Internal)?;
        enc.set_complexity(SPLICE_COMPLEXITY)
            .map_err(|_| FrameCodecError::Internal)?;
        enc.set_prediction_disabled(true)
            .map_err(|_| FrameCodecError::Internal)?;
        let delay = enc.get_lookahead().map_err(|_| FrameCodecError::Internal)?;
        Ok(Self {
            enc,
            delay: delay.max(0) as usize,
        })
    }
}

impl FrameEncoder for OpusEncoder {
    fn rate(&self) -> u32 {
        OPUS_RATE
    }

    fn frame_ok(&self, samples: usize) -> bool {
        // 2.5, 5, 10, 20, 40 and 60 ms.
        matches!(samples, 120 | 240 | 480 | 960 | 1920 | 2880)
    }

    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, FrameCodecError> {
        if !self.frame_ok(pcm.len()) {
            return Err(FrameCodecError::FrameSize);
        }
        self.enc
            .encode(pcm, out)
            .map_err(|_| FrameCodecError::Internal)
    }

    fn delay(&self) -> usize {
        self.delay
    }

    fn max_packet(&self) -> usize {
        MAX_OPUS_PACKET
    }

    fn reset(&mut self) {
        // A failed reset leaves the old state: the next packets are still valid Opus, only
        // predicted from older audio (and the splice encoder predicts nothing across frames).
        let _ = self.enc.reset_state();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(n: usize, f: f64) -> Vec<i16> {
        (0..n)
            .map(|i| (8000.0 * (2.0 * std::f64::consts::PI * f * i as f64 / 48_000.0).sin()) as i16)
            .collect()
    }

    #[test]
    fn round_trip_keeps_a_tone() {
        let mut enc = OpusEncoder::new(32_000).unwrap();
        let mut dec = OpusDecoder::new().unwrap();
        let x = tone(48_000, 770.0);
        let mut pkt = vec![0u8; enc.max_packet()];
        let mut y = Vec::new();
        let mut frame = vec![0i16; 960];
        for c in x.chunks(960) {
            let len = enc.encode(c, &mut pkt).unwrap();
            assert_eq!(dec.samples(&pkt[..len]).unwrap(), 960);
            let n = dec.decode(&pkt[..len], &mut frame).unwrap();
            y.extend_from_slice(&frame[..n]);
        }
        assert_eq!(y.len(), x.len());
        let e = |v: &[i16]| v.iter().map(|&s| (s as f64).powi(2)).sum::<f64>();
        // Past the codec's start-up, the energy comes through within a few dB.
        let r = e(&y[9600..]) / e(&x[9600..]);
        assert!((0.5..2.0).contains(&r), "energy ratio {r}");
        assert!(enc.delay() > 0 && enc.delay() < 960);
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let mut dec = OpusDecoder::new().unwrap();
        let mut out = vec![0i16; OPUS_MAX_PACKET_SAMPLES];
        assert_eq!(dec.samples(&[]), Err(FrameCodecError::Malformed));
        assert_eq!(dec.decode(&[], &mut out), Err(FrameCodecError::Malformed));
        // Code 3 packet claiming 63 frames of 60 ms: far over 120 ms.
        assert_eq!(
            dec.samples(&[0xF8 | 3, 0x3F]),
            Err(FrameCodecError::Malformed)
        );
        for b in 0..=255u8 {
            let _ = dec.decode(&[b, b ^ 0x55, 7], &mut out);
        }
        assert_eq!(dec.conceal(&mut out[..960]), Ok(960));
    }

    #[test]
    fn encoder_refuses_odd_frames() {
        let mut enc = OpusEncoder::new(16_000).unwrap();
        let mut pkt = vec![0u8; enc.max_packet()];
        assert_eq!(
            enc.encode(&[0; 100], &mut pkt),
            Err(FrameCodecError::FrameSize)
        );
        assert!(enc.encode(&[0; 480], &mut pkt).unwrap() > 0);
    }
}
