//! Delay of the 48 kHz path an Opus caller takes (issue 4, BRIEF 2.4): the pipeline's
//! `delay()` is the look-ahead plus what the 48 to 8 kHz resampler adds (one 5 ms chunk of
//! buffering, rubato's filter delay, 1 ms of smear margin), and the output is the input
//! shifted by exactly `delay()` samples: bit-exact where nothing was masked, silent over the
//! tone. Prints the delay per look-ahead and the Opus encoder's own look-ahead on top.
//!
//! Owns: these delay figures. Must never: time anything (speed is criterion's job) or print
//! a digit value.

mod common;

use common::*;
use tonewall::dtmf::Digit;
use tonewall::event::{Event, EventLog};
use tonewall::pipeline::{ChannelPipeline, ChunkResampler};
use tonewall::signal::{add_dtmf, add_white_noise, power_for_dbm0, to_i16, Rng, ToneSpec};
use tonewall::time::ChannelId;

#[test]
fn delay_is_lookahead_plus_resampler_and_output_is_shifted_by_exactly_that() {
    let rate = OPUS_RATE;
    let per_ms = (rate / 1000) as usize;
    let rs = ChunkResampler::new(rate).unwrap();
    let resampler = rs.chunk_in() + resampler_delay_48k() + per_ms;
    // Quiet line noise with one 60 ms key press at 500 ms (off the 20 ms frame grid).
    let mut x = vec![0.0; rate as usize];
    let mut rng = Rng::new(48);
    add_white_noise(&mut x, power_for_dbm0(-45.0), &mut rng);
    let (t0, len) = (ms_at(500.0, rate) + 137, ms_at(60.0, rate));
    let five = Digit::from_char('5').unwrap();
    add_dtmf(
        &mut x,
        rate,
        t0,
        len,
        five,
        ToneSpec::level(-10.0),
        &mut rng,
    );
    let x = to_i16(&x);
    for la in [0u32, 10, 20, 40] {
        let mut p = ChannelPipeline::<i16>::new(pcm48_config(la), ChannelId(0)).unwrap();
        let d = p.delay();
        assert_eq!(d, la as usize * per_ms + resampler, "look-ahead {la} ms");
        let mut log = EventLog::default();
        let mut y = vec![0i16; x.len()];
        for (i, o) in x.chunks(960).zip(y.chunks_mut(960)) {
            p.process(i, o, &mut log);
        }
        // The first `d` samples out are the delay line's initial silence.
        assert!(y[..d].iter().all(|&s| s == 0));
        // Everything not masked is the input, `d` samples later, bit-exact.
        let changed = (d..y.len())
            .filter(|&n| y[n] != 0 && y[n] != x[n - d])
            .count();
        assert_eq!(
            changed, 0,
            "look-ahead {la} ms: output is not input shifted by {d}"
        );
        // The tone is silent in the output at its own position plus `d`, and so is each
        // reported span, shifted by `d`.
        assert!(
            y[t0 + d..t0 + len + d].iter().all(|&s| s == 0),
            "look-ahead {la} ms: tone not masked at its shifted position"
        );
        let spans: Vec<(usize, usize)> = log
            .events
            .iter()
            .filter_map(|e| match *e {
                Event::ToneMasked {
                    start_sample,
                    end_sample,
                    ..
                } => Some((start_sample as usize, end_sample as usize)),
                _ => None,
            })
            .collect();
        assert_eq!(spans.len(), 1, "look-ahead {la} ms: {spans:?}");
        let (a, b) = spans[0];
        assert!(a <= t0 && b >= t0 + len);
        assert!(y[a + d..b + d].iter().all(|&s| s == 0));
        println!(
            "48 kHz pipeline look-ahead {la:>2} ms: delay() {d} samples = {:.3} ms (look-ahead {} + resampler {resampler} = chunk {} + filter {} + margin {per_ms}); masked span {:.2} ms before / {:.2} ms after the tone",
            d as f64 / per_ms as f64,
            la as usize * per_ms,
            rs.chunk_in(),
            resampler_delay_48k(),
            (t0 - a) as f64 / per_ms as f64,
            (b - t0 - len) as f64 / per_ms as f64,
        );
    }
    #[cfg(feature = "opus")]
    for b in OPUS_BITRATES {
        use tonewall::codec::FrameEncoder;
        let enc = tonewall::codec::OpusEncoder::new(b).unwrap();
        println!(
            "Opus encoder at {} kbit/s adds its look-ahead on top: {} samples = {:.2} ms",
            b / 1000,
            enc.delay(),
            enc.delay() as f64 / per_ms as f64
        );
    }
}
