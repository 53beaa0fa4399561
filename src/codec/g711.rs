//! G.711 companding (ITU-T G.711, 1988), written from the segment/step definitions.
//!
//! Decoding uses 256-entry tables built at compile time; encoding is a few integer ops.
//! Both are pure functions with no allocation; the tests check every code word against
//! the standard's reconstruction formula.

const fn ulaw_decode_calc(code: u8) -> i16 {
    // Code words are transmitted inverted. Segment s (3 bits) and step q (4 bits) give a
    // 14-bit magnitude of ((2q + 33) << s) - 33, i.e. 4x that in 16-bit units.
    let u = !code;
    let s = ((u >> 4) & 0x07) as i32;
    let q = (u & 0x0F) as i32;
    let mag = (((q << 3) + 0x84) << s) - 0x84;
    if u & 0x80 != 0 {
        -mag as i16
    } else {
        mag as i16
    }
}

const fn alaw_decode_calc(code: u8) -> i16 {
    // Even bits are inverted on the line (XOR 0x55). Segment 0 is linear with step 2 (in
    // 13-bit units); segments 1..7 double the step each time. Reconstruction is at the
    // middle of each interval.
    let a = code ^ 0x55;
    let s = ((a >> 4) & 0x07) as i32;
    let q = (a & 0x0F) as i32;
    let mag = if s == 0 {
        (q << 4) + 8
    } else {
        ((q << 4) + 0x108) << (s - 1)
    };
    // Sign bit set means positive in A-law.
    if a & 0x80 != 0 {
        mag as i16
    } else {
        -mag as i16
    }
}

const fn build_table(alaw: bool) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if alaw {
            alaw_decode_calc(i as u8)
        } else {
            ulaw_decode_calc(i as u8)
        };
        i += 1;
    }
    t
}

static ULAW_TABLE: [i16; 256] = build_table(false);
static ALAW_TABLE: [i16; 256] = build_table(true);

/// Decode a mu-law code word to 16-bit linear PCM.
#[inline]
pub fn ulaw_to_linear(code: u8) -> i16 {
    ULAW_TABLE[code as usize]
}

/// Decode an A-law code word to 16-bit linear PCM.
#[inline]
pub fn alaw_to_linear(code: u8) -> i16 {
    ALAW_TABLE[code as usize]
}

/// Encode 16-bit linear PCM to mu-law (14-bit magnitude, bias 33, clip at 8158 steps).
#[inline]
pub fn linear_to_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let mut pcm = sample as i32;
    let sign: u8 = if pcm < 0 {
        pcm = -pcm;
        0x80
    } else {
        0
    };
    let mag = pcm.min(CLIP) + BIAS;
    // Segment = position of the highest set bit above bit 7.
    let seg = (31 - (mag as u32).leading_zeros()) as i32 - 7;
    let seg = seg.clamp(0, 7);
    let mantissa = ((mag >> (seg + 3)) & 0x0F) as u8;
    !(sign | ((seg as u8) << 4) | mantissa)
}

/// Encode 16-bit linear PCM to A-law (13-bit magnitude).
#[inline]
pub fn linear_to_alaw(sample: i16) -> u8 {
    let mut pcm = (sample as i32) >> 3;
    let mask: u8 = if pcm >= 0 {
        0xD5
    } else {
        pcm = -pcm - 1;
        0x55
    };
    // Segment ends in 13-bit units: 0x1F, 0x3F, ..., 0xFFF.
    let seg = if pcm <= 0x1F {
        0
    } else {
        (32 - (pcm as u32).leading_zeros()) as i32 - 5
    };
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let mut aval = (seg as u8) << 4;
    aval |= if seg < 2 {
        ((pcm >> 1) & 0x0F) as u8
    } else {
        ((pcm >> seg) & 0x0F) as u8
    };
    aval ^ mask
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ITU-T G.711 Table 2a (mu-law): for code word value (after inversion) with segment
    /// s and step q, the decoder output in 14-bit units is +/-(((2q + 33) * 2^s) - 33).
    fn ulaw_itu(code: u8) -> i32 {
        let u = !code;
        let s = ((u >> 4) & 7) as i32;
        let q = (u & 15) as i32;
        let v = ((2 * q + 33) << s) - 33;
        let v = v * 4;
        if u & 0x80 != 0 {
            -v
        } else {
            v
        }
    }

    /// ITU-T G.711 Table 1a (A-law): segment 0 reconstructs at 2q + 1, segment s >= 1 at
    /// (2q + 33) * 2^(s-1), in 12-bit units; 16-bit output is that times 8.
    fn alaw_itu(code: u8) -> i32 {
        let a = code ^ 0x55;
        let s = ((a >> 4) & 7) as i32;
        let q = (a & 15) as i32;
        let v = if s == 0 {
            2 * q + 1
        } else {
            (2 * q + 33) << (s - 1)
        };
        let v = v * 8;
        if a & 0x80 != 0 {
            v
        } else {
            -v
        }
    }

    #[test]
    fn every_ulaw_code_word_decodes_to_the_itu_value_and_round_trips() {
        for c in 0..=255u8 {
            assert_eq!(ulaw_to_linear(c) as i32, ulaw_itu(c), "code {c:#04x}");
            let back = linear_to_ulaw(ulaw_to_linear(c));
            // 0x7F is "negative zero"; it decodes to 0, which encodes as positive zero 0xFF.
            let expect = if c == 0x7F { 0xFF } else { c };
            assert_eq!(back, expect, "code {c:#04x}");
        }
    }

    #[test]
    fn every_alaw_code_word_decodes_to_the_itu_value_and_round_trips() {
        for c in 0..=255u8 {
            assert_eq!(alaw_to_linear(c) as i32, alaw_itu(c), "code {c:#04x}");
            assert_eq!(linear_to_alaw(alaw_to_linear(c)), c, "code {c:#04x}");
        }
    }

    /// The encoder must pick the code word whose decision interval contains the input:
    /// across all 65536 inputs the decoded value is monotonic in the input and the error
    /// never exceeds half the local step.
    #[test]
    fn encoders_are_monotonic_and_within_half_a_step() {
        for (enc, dec) in [
            (
                linear_to_ulaw as fn(i16) -> u8,
                ulaw_to_linear as fn(u8) -> i16,
            ),
            (linear_to_alaw, alaw_to_linear),
        ] {
            let mut prev = i32::MIN;
            for x in i16::MIN..=i16::MAX {
                let y = dec(enc(x)) as i32;
                assert!(y >= prev, "not monotonic at {x}");
                prev = y;
                let err = (y - x as i32).abs();
                // Largest step is 1024 (mu-law) / 1024 (A-law) in 16-bit units; clipping
                // at the top adds at most one more step.
                assert!(err <= 1100, "error {err} at {x}");
            }
        }
    }

    #[test]
    fn silence_code_words_decode_to_near_zero() {
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_alaw(0), 0xD5);
    }
}
