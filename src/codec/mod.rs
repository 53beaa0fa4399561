//! Codecs: G.711 mu-law and A-law conversion to and from 16-bit linear PCM, what "silence"
//! means in each codec's own domain, and frame codecs (Opus) behind a small trait.
//!
//! Owns: the bit-exact G.711 tables, the [`Codec`] enum the pipeline masks in, and the
//! [`FrameDecoder`]/[`FrameEncoder`] seam.
//! Must never: allocate, log, or touch sample values it was not asked to convert; the
//! masker relies on untouched code words passing through bit-exact.

mod frame;
mod g711;
#[cfg(feature = "opus")]
mod opus;

pub use frame::{FrameCodecError, FrameDecoder, FrameEncoder};
pub use g711::{alaw_to_linear, linear_to_alaw, linear_to_ulaw, ulaw_to_linear};
#[cfg(feature = "opus")]
pub use opus::{
    OpusDecoder, OpusEncoder, OPUS_DEFAULT_BITRATE, OPUS_MAX_PACKET_SAMPLES, OPUS_RATE,
};

/// The on-the-wire sample format of a media stream, as the masker sees it.
///
/// Masking happens in this domain: masked samples are replaced with [`Codec::silence_byte`]
/// (G.711) or zero (PCM), everything else is forwarded unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// 16-bit signed linear PCM (WAV format 1, RTP L16 after byte-order conversion).
    Pcm16,
    /// G.711 mu-law (PCMU, RTP payload type 0).
    Pcmu,
    /// G.711 A-law (PCMA, RTP payload type 8).
    Pcma,
    /// Opus (RFC 7587): decoded to 48 kHz 16-bit PCM, masked there, and re-encoded. The
    /// masker itself works on the PCM, so it never sees this variant.
    Opus,
}

impl Codec {
    /// The code word that decodes to silence. For mu-law this is 0xFF (positive zero);
    /// for A-law 0xD5, the smallest positive step (+8 in 16-bit linear), which is what
    /// the codec produces for digital silence. PCM has no byte form; its silence is 0.
    pub const fn silence_byte(self) -> u8 {
        match self {
            Codec::Pcmu => 0xFF,
            Codec::Pcma => 0xD5,
            Codec::Pcm16 | Codec::Opus => 0,
        }
    }

    /// Decode one G.711 byte to 16-bit linear. PCM16 has no byte form and yields 0.
    #[inline]
    pub fn decode_byte(self, b: u8) -> i16 {
        match self {
            Codec::Pcmu => ulaw_to_linear(b),
            Codec::Pcma => alaw_to_linear(b),
            Codec::Pcm16 | Codec::Opus => 0,
        }
    }

    /// Encode one 16-bit linear sample to a G.711 byte. PCM16 has no byte form and yields 0.
    #[inline]
    pub fn encode_byte(self, s: i16) -> u8 {
        match self {
            Codec::Pcmu => linear_to_ulaw(s),
            Codec::Pcma => linear_to_alaw(s),
            Codec::Pcm16 | Codec::Opus => 0,
        }
    }

    /// True for the 8-bit companded codecs.
    pub const fn is_g711(self) -> bool {
        matches!(self, Codec::Pcmu | Codec::Pcma)
    }
}
