//! The frame-codec seam: codecs that turn a compressed packet into a block of 16-bit PCM and
//! back (Opus today), as opposed to G.711's one byte per sample.
//!
//! Owns: the two small traits the RTP leg and the battery drive, and their error type.
//! Must never: allocate or format in an error (the media path hands errors around per
//! packet), or expose which library implements a codec to the code that drives it.

/// A frame codec could not do what was asked. No payload or sample value is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameCodecError {
    /// The packet is not a valid packet of this codec (or decodes to more than fits).
    #[error("malformed packet")]
    Malformed,
    /// The frame size is not one the encoder accepts.
    #[error("unsupported frame size")]
    FrameSize,
    /// The codec library refused its settings or failed internally.
    #[error("codec library error")]
    Internal,
}

/// Compressed packets in, 16-bit mono PCM out, at [`rate`](Self::rate).
pub trait FrameDecoder: Send {
    /// Output sample rate, Hz.
    fn rate(&self) -> u32;
    /// How many samples `packet` decodes to, without decoding it.
    fn samples(&self, packet: &[u8]) -> Result<usize, FrameCodecError>;
    /// Decode one packet into the front of `out`; returns the samples written.
    fn decode(&mut self, packet: &[u8], out: &mut [i16]) -> Result<usize, FrameCodecError>;
    /// Conceal a lost packet: fill the whole of `out` with the codec's best guess.
    fn conceal(&mut self, out: &mut [i16]) -> Result<usize, FrameCodecError>;
    /// Forget everything heard so far (a new source starts).
    fn reset(&mut self);
}

/// 16-bit mono PCM in, compressed packets out.
pub trait FrameEncoder: Send {
    /// Input sample rate, Hz.
    fn rate(&self) -> u32;
    /// Whether one packet may carry `samples` samples.
    fn frame_ok(&self, samples: usize) -> bool;
    /// Encode exactly one frame (`frame_ok(pcm.len())`) into `out`; returns the bytes written.
    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, FrameCodecError>;
    /// The encoder's algorithmic delay (what a decoder's output lags its input), samples.
    fn delay(&self) -> usize;
    /// Largest packet [`encode`](Self::encode) can produce, bytes.
    fn max_packet(&self) -> usize;
    /// Forget everything encoded so far: the next packet is coded as if it were the first.
    fn reset(&mut self);
}
