//! WAV files: reading 16-bit PCM, mu-law and A-law (plain or WAVE_FORMAT_EXTENSIBLE) at any
//! rate and channel count, and writing them back in the same format.
//!
//! Owns: every byte-level check on files users hand us. Bad input is a [`WavError`], never a
//! panic; a declared size larger than the file is "truncated", not silently shortened.
//! Must never: be used on the live media path (it allocates whole files).

/// Sample encoding of a WAV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WavFormat {
    /// 16-bit signed little-endian PCM.
    Pcm16,
    /// G.711 mu-law, 8 bits per sample.
    Ulaw,
    /// G.711 A-law, 8 bits per sample.
    Alaw,
}

impl WavFormat {
    /// The codec samples of this format carry.
    pub fn codec(self) -> crate::codec::Codec {
        match self {
            WavFormat::Pcm16 => crate::codec::Codec::Pcm16,
            WavFormat::Ulaw => crate::codec::Codec::Pcmu,
            WavFormat::Alaw => crate::codec::Codec::Pcma,
        }
    }
}

/// Interleaved sample data in the file's own format.
#[derive(Debug, Clone, PartialEq)]
pub enum WavData {
    /// 16-bit PCM samples.
    Pcm16(Vec<i16>),
    /// G.711 bytes (mu-law or A-law, see [`WavFormat`]).
    G711(Vec<u8>),
}

impl WavData {
    /// Number of samples over all channels.
    pub fn len(&self) -> usize {
        match self {
            WavData::Pcm16(v) => v.len(),
            WavData::G711(v) => v.len(),
        }
    }
    /// True if there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A decoded WAV file.
#[derive(Debug, Clone, PartialEq)]
pub struct Wav {
    /// Sample encoding.
    pub format: WavFormat,
    /// Channel count (1 to 16).
    pub channels: u16,
    /// Sample rate in Hz.
    pub rate: u32,
    /// Interleaved samples.
    pub data: WavData,
}

/// Why a file could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WavError {
    /// Zero-length input.
    #[error("empty file")]
    Empty,
    /// Not a RIFF/WAVE file.
    #[error("not a WAV file (no RIFF/WAVE header)")]
    NotWav,
    /// A chunk or the sample data ends early.
    #[error("truncated WAV file: {0}")]
    Truncated(&'static str),
    /// No `fmt ` chunk before the data.
    #[error("WAV file has no fmt chunk")]
    NoFormat,
    /// No `data` chunk.
    #[error("WAV file has no data chunk")]
    NoData,
    /// A format we do not process.
    #[error("unsupported WAV encoding: {0} (supported: 16-bit PCM, mu-law, A-law)")]
    Unsupported(String),
    /// Nonsense header fields.
    #[error("invalid WAV header: {0}")]
    Invalid(&'static str),
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

impl Wav {
    /// Parse a whole WAV file.
    pub fn parse(b: &[u8]) -> Result<Wav, WavError> {
        if b.is_empty() {
            return Err(WavError::Empty);
        }
        if b.len() < 12 {
            return if b.starts_with(&b"RIFF"[..b.len().min(4)]) {
                Err(WavError::Truncated("header"))
            } else {
                Err(WavError::NotWav)
            };
        }
        if &b[0..4] != b"RIFF" || &b[8..12] != b"WAVE" {
            return Err(WavError::NotWav);
        }
        let mut pos = 12;
        let mut fmt: Option<(WavFormat, u16, u32)> = None;
        while pos + 8 <= b.len() {
            let id = &b[pos..pos + 4];
            let size = u32_at(b, pos + 4) as usize;
            let body = pos + 8;
            if id == b"data" {
                let (format, channels, rate) = fmt.ok_or(WavError::NoFormat)?;
                // Some writers leave 0 or 0xFFFFFFFF in a streamed file's data size.
                let avail = b.len() - body;
                let size = if size == 0 || size == u32::MAX as usize {
                    avail
                } else {
                    size
                };
                if size > avail {
                    return Err(WavError::Truncated("data chunk shorter than declared"));
                }
                let bytes = &b[body..body + size];
                let bps = if format == WavFormat::Pcm16 { 2 } else { 1 };
                let frame = bps * channels as usize;
                if !bytes.len().is_multiple_of(frame) {
                    return Err(WavError::Truncated("partial sample frame at end of data"));
                }
                if bytes.is_empty() {
                    return Err(WavError::Invalid("no audio samples"));
                }
                let data = match format {
                    WavFormat::Pcm16 => WavData::Pcm16(
                        bytes
                            .chunks_exact(2)
                            .map(|c| i16::from_le_bytes([c[0], c[1]]))
                            .collect(),
                    ),
                    _ => WavData::G711(bytes.to_vec()),
                };
                return Ok(Wav {
                    format,
                    channels,
                    rate,
                    data,
                });
            }
            if body + size > b.len() {
                return Err(WavError::Truncated("chunk runs past end of file"));
            }
            if id == b"fmt " {
                fmt = Some(parse_fmt(&b[body..body + size])?);
            }
            // Chunks are word aligned.
            pos = body + size + (size & 1);
        }
        if fmt.is_none() {
            Err(WavError::NoFormat)
        } else {
            Err(WavError::NoData)
        }
    }

    /// Serialise as a WAV file in this file's format.
    pub fn to_bytes(&self) -> Vec<u8> {
        let (tag, bits, bps) = match self.format {
            WavFormat::Pcm16 => (1u16, 16u16, 2u32),
            WavFormat::Alaw => (6, 8, 1),
            WavFormat::Ulaw => (7, 8, 1),
        };
        let data_len = self.data.len() as u32 * bps;
        let pcm = self.format == WavFormat::Pcm16;
        let fmt_len: u32 = if pcm { 16 } else { 18 };
        let fact_len: u32 = if pcm { 0 } else { 12 };
        let mut o = Vec::with_capacity(44 + data_len as usize + 16);
        o.extend_from_slice(b"RIFF");
        o.extend_from_slice(
            &(4 + 8 + fmt_len + fact_len + 8 + data_len + (data_len & 1)).to_le_bytes(),
        );
        o.extend_from_slice(b"WAVEfmt ");
        o.extend_from_slice(&fmt_len.to_le_bytes());
        o.extend_from_slice(&tag.to_le_bytes());
        o.extend_from_slice(&self.channels.to_le_bytes());
        o.extend_from_slice(&self.rate.to_le_bytes());
        o.extend_from_slice(&(self.rate * bps * self.channels as u32).to_le_bytes());
        o.extend_from_slice(&(bps as u16 * self.channels).to_le_bytes());
        o.extend_from_slice(&bits.to_le_bytes());
        if !pcm {
            o.extend_from_slice(&0u16.to_le_bytes());
            o.extend_from_slice(b"fact");
            o.extend_from_slice(&4u32.to_le_bytes());
            o.extend_from_slice(&(self.data.len() as u32 / self.channels as u32).to_le_bytes());
        }
        o.extend_from_slice(b"data");
        o.extend_from_slice(&data_len.to_le_bytes());
        match &self.data {
            WavData::Pcm16(v) => v.iter().for_each(|s| o.extend_from_slice(&s.to_le_bytes())),
            WavData::G711(v) => o.extend_from_slice(v),
        }
        if data_len & 1 == 1 {
            o.push(0);
        }
        o
    }

    /// Frames (samples per channel).
    pub fn frames(&self) -> usize {
        self.data.len() / self.channels.max(1) as usize
    }

    /// One channel decoded to 16-bit linear.
    pub fn channel_linear(&self, ch: usize) -> Vec<i16> {
        let n = self.channels as usize;
        match &self.data {
            WavData::Pcm16(v) => v.iter().skip(ch).step_by(n).copied().collect(),
            WavData::G711(v) => {
                let c = self.format.codec();
                v.iter()
                    .skip(ch)
                    .step_by(n)
                    .map(|&b| c.decode_byte(b))
                    .collect()
            }
        }
    }

    /// A mono 16-bit PCM file.
    pub fn mono_pcm16(rate: u32, samples: Vec<i16>) -> Wav {
        Wav {
            format: WavFormat::Pcm16,
            channels: 1,
            rate,
            data: WavData::Pcm16(samples),
        }
    }
}

fn parse_fmt(f: &[u8]) -> Result<(WavFormat, u16, u32), WavError> {
    if f.len() < 16 {
        return Err(WavError::Truncated("fmt chunk"));
    }
    let mut tag = u16_at(f, 0);
    let channels = u16_at(f, 2);
    let rate = u32_at(f, 4);
    let bits = u16_at(f, 14);
    if tag == 0xFFFE {
        // WAVE_FORMAT_EXTENSIBLE: the real tag is the first two bytes of the sub-format GUID.
        if f.len() < 26 {
            return Err(WavError::Truncated("extensible fmt chunk"));
        }
        tag = u16_at(f, 24);
    }
    if channels == 0 || channels > 16 {
        return Err(WavError::Invalid("channel count must be 1 to 16"));
    }
    if !(1000..=384_000).contains(&rate) {
        return Err(WavError::Invalid("sample rate out of range"));
    }
    let format = match (tag, bits) {
        (1, 16) => WavFormat::Pcm16,
        (7, 8) => WavFormat::Ulaw,
        (6, 8) => WavFormat::Alaw,
        (1, b) => return Err(WavError::Unsupported(format!("{b}-bit PCM"))),
        (3, _) => return Err(WavError::Unsupported("IEEE float".into())),
        (t, b) => {
            return Err(WavError::Unsupported(format!(
                "format tag {t:#06x}, {b} bits"
            )))
        }
    };
    Ok((format, channels, rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_format() {
        for (format, data) in [
            (WavFormat::Pcm16, WavData::Pcm16(vec![1, -2, 3, -4])),
            (WavFormat::Ulaw, WavData::G711(vec![0xFF, 0x7F, 0x00])),
            (WavFormat::Alaw, WavData::G711(vec![0xD5, 0x55, 0x2A])),
        ] {
            let channels = if data.len() % 2 == 0 { 2 } else { 1 };
            let w = Wav {
                format,
                channels,
                rate: 8000,
                data,
            };
            assert_eq!(Wav::parse(&w.to_bytes()).unwrap(), w);
        }
    }

    #[test]
    fn rejects_bad_files_without_panicking() {
        let good = Wav::mono_pcm16(8000, vec![0; 100]).to_bytes();
        assert_eq!(Wav::parse(b""), Err(WavError::Empty));
        assert_eq!(Wav::parse(b"hello world, not a wav"), Err(WavError::NotWav));
        assert!(matches!(
            Wav::parse(&good[..60]),
            Err(WavError::Truncated(_))
        ));
        assert!(matches!(
            Wav::parse(&good[..30]),
            Err(WavError::Truncated(_))
        ));
        assert!(matches!(
            Wav::parse(&good[..5]),
            Err(WavError::Truncated(_))
        ));
        // Every prefix and a few corruptions: errors only, never a panic.
        for n in 0..good.len() {
            let _ = Wav::parse(&good[..n]);
        }
        let mut bad = good.clone();
        bad[20] = 3; // float
        assert!(matches!(Wav::parse(&bad), Err(WavError::Unsupported(_))));
        let mut bad = good;
        bad[22] = 0; // zero channels
        assert!(matches!(Wav::parse(&bad), Err(WavError::Invalid(_))));
    }
}
