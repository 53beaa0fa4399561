//! Bad input never crashes tonewall: random corruptions of a valid WAV through the parser,
//! and the pipeline at every common sample rate with frames of random, odd sizes (including
//! empty ones), loud clipping noise and a tone, must neither panic nor change the output
//! length, and must keep masking.

mod common;

use tonewall::codec::Codec;
use tonewall::dtmf::Digit;
use tonewall::event::EventLog;
use tonewall::pipeline::{ChannelPipeline, PipelineConfig};
use tonewall::signal::{add_dtmf, add_white_noise, power_for_dbm0, to_i16, Rng, ToneSpec};
use tonewall::time::ChannelId;
use tonewall::wav::Wav;

#[test]
fn corrupted_wav_files_give_errors_not_panics() {
    let good = Wav::mono_pcm16(8000, vec![1000; 4000]).to_bytes();
    let mut rng = Rng::new(77);
    let mut parsed = 0;
    for _ in 0..20_000 {
        let mut b = good.clone();
        for _ in 0..1 + (rng.next_u64() % 4) as usize {
            let i = (rng.next_u64() as usize) % b.len();
            b[i] = rng.next_u64() as u8;
        }
        if rng.uniform() < 0.3 {
            let cut = (rng.next_u64() as usize) % b.len();
            b.truncate(cut);
        }
        if Wav::parse(&b).is_ok() {
            parsed += 1;
        }
    }
    println!("20000 corrupted files: {parsed} still parsed, the rest rejected, no panic");
}

#[test]
fn pipeline_survives_any_rate_and_frame_size_and_still_masks() {
    let mut rng = Rng::new(5);
    for rate in [8000u32, 11025, 16000, 22050, 32000, 44100, 48000, 96000] {
        let n = rate as usize * 2;
        let mut x = vec![0.0; n];
        add_white_noise(&mut x, power_for_dbm0(3.0), &mut rng); // clips hard
        let t = rate as usize;
        for v in &mut x[t - rate as usize / 5..t] {
            *v = 0.0;
        }
        let mut tone = vec![0.0; n];
        add_dtmf(
            &mut tone,
            rate,
            t,
            rate as usize / 10,
            Digit::from_char('5').unwrap(),
            ToneSpec::level(-6.0),
            &mut rng,
        );
        for (a, b) in x[t..t + rate as usize / 10].iter_mut().zip(&tone[t..]) {
            *a = *b;
        }
        let x = to_i16(&x);
        let cfg = PipelineConfig {
            codec: Codec::Pcm16,
            rate,
            lookahead_ms: 20,
            ..PipelineConfig::default()
        };
        let mut p = ChannelPipeline::<i16>::new(cfg, ChannelId(0)).unwrap();
        let mut log = EventLog::default();
        let mut out = Vec::with_capacity(n + p.delay());
        let mut i = 0;
        while i < n {
            let len = ((rng.next_u64() % 2000) as usize).min(n - i);
            let mut o = vec![0i16; len];
            p.process(&x[i..i + len], &mut o, &mut log);
            out.extend(o);
            i += len;
        }
        let mut tail = vec![0i16; p.delay()];
        p.finish(&mut tail, &mut log);
        out.extend(tail);
        assert_eq!(out.len(), n + p.delay(), "rate {rate}");
        let y = &out[p.delay()..];
        // The tone is gone: nothing of it is left in the output.
        let span = t..t + rate as usize / 10;
        let left = span.clone().filter(|&k| y[k] != 0).count();
        assert_eq!(left, 0, "rate {rate}: {left} samples of the tone left");
        assert!(
            log.secure.iter().any(|d| d.digit.expose().to_char() == '5'),
            "rate {rate}"
        );
    }
}
