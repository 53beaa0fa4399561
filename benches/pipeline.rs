//! Per-frame cost of the media path (brief section 2.4), measured with criterion:
//!
//! * `detector/8k_20ms`: the DTMF detector alone on one 160-sample frame.
//! * `pipeline/pcmu_8k_20ms`: one 160-byte mu-law frame through decode + detect + mask.
//! * `pipeline/pcm16_48k_20ms`: one 960-sample 48 kHz PCM frame through resample (rubato) +
//!   detect + mask.
//! * `pipeline/opus_48k_20ms`: one 20 ms Opus RTP packet (pre-encoded at 32 kbit/s, VoIP
//!   application) through a real Opus caller leg with Opus downstream, as production runs it:
//!   libopus decode + resample + detect + mask at 48 kHz, then the caller's packet forwarded
//!   unchanged or replaced by the splice encoder's (feature `opus`; the variants, for the
//!   every-packet-spliced worst case, re-encoding every packet, PCMU downstream and the codec
//!   calls alone, are listed at `opus_48k`).
//! * `pipeline/pcmu_leg_20ms`, `pipeline/pcmu_leg_2000_calls_20ms`: one PCMU RTP packet
//!   through a real caller leg, with one leg and round-robin over 2,000 (cold caches, as on a
//!   loaded gateway).
//! * `compare/goertzel_filter_crate_8k_20ms`: the `goertzel-filter` 0.2 crate doing the eight
//!   DTMF frequencies over one frame (why the hand-written bank replaces it).
//! * `compare/spandsp_dtmf_rx_8k_20ms` (feature `spandsp`): spandsp's `dtmf_rx` over the same
//!   frames as `detector/8k_20ms`, through FFI to Debian's libspandsp (linked by `build.rs`).
//!
//! Every benchmark cycles through a long generated signal (phrases of speech-like sound
//! alternating with runs of key presses at varying levels and durations) cut into 20 ms frames,
//! so detector and masker state evolve as on a real call instead of replaying one frame.
//! The setup prints, once, what each decoder makes of that signal, so the speed comparison is
//! between decoders that do the same work.
//!
//! `cargo bench --bench pipeline [--features spandsp]`; the criterion median is the middle
//! value of each `time: [low median high]` line.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};

use tonewall::codec::{linear_to_ulaw, Codec};
use tonewall::dtmf::{Detector, DetectorConfig, DetectorEvent, Digit, GoertzelBank, MaskConfig};
use tonewall::dtmf::{BANK_HZ, RATE, SUB};
use tonewall::event::{Event, Outputs, SecureDigit};
use tonewall::pipeline::{ChannelPipeline, PipelineConfig};
use tonewall::signal::{
    add_dtmf, add_sine, add_white_noise, amplitude_for_dbm0, power_for_dbm0, to_i16, Rng, ToneSpec,
};
use tonewall::time::ChannelId;

/// Seconds of generated signal the benchmarks cycle through.
const SECONDS: f64 = 12.0;
/// Keys pressed, in order, cycling.
const KEYS: &str = "4111111111111111#0123456789*#ABCD";

/// The benchmark signal at `rate` Hz and the keys pressed in it, in order.
///
/// Phrases of speech-like sound (voiced syllables: a harmonic stack on a random pitch with a
/// falling spectrum, plus fricative noise bursts) alternate with runs of three to nine key
/// presses, 50 to 110 ms on, 50 to 150 ms off, -20 to -4 dBm0 per tone, over a -60 dBm0 noise
/// floor.
fn bench_signal(rate: u32) -> (Vec<i16>, String) {
    let n = (rate as f64 * SECONDS) as usize;
    let ms = |v: f64| (v * rate as f64 / 1000.0) as usize;
    let mut x = vec![0.0; n];
    let mut rng = Rng::new(0x70_4E_3A_11);
    add_white_noise(&mut x, power_for_dbm0(-60.0), &mut rng);
    let mut keys = KEYS.chars().cycle();
    let mut pressed = String::new();
    let mut t = ms(150.0);
    while t < n {
        // A phrase.
        let phrase_end = (t + ms(rng.range(300.0, 1000.0))).min(n);
        while t < phrase_end {
            let len = ms(rng.range(80.0, 220.0));
            if rng.uniform() < 0.25 {
                let end = (t + len).min(n);
                add_white_noise(
                    &mut x[t..end],
                    power_for_dbm0(rng.range(-35.0, -25.0)),
                    &mut rng,
                );
            } else {
                let f0 = rng.range(95.0, 230.0);
                let level = rng.range(-22.0, -10.0);
                let mut h = 1.0;
                while h * f0 < 3400.0 {
                    // About -9 dB per octave above the fundamental.
                    let dbm0 = level - 30.0 * h.log10();
                    add_sine(&mut x, rate, t, len, h * f0, dbm0, rng.phase());
                    h += 1.0;
                }
            }
            t += len + ms(rng.range(10.0, 60.0));
        }
        t += ms(rng.range(150.0, 400.0));
        // A run of key presses.
        let presses = rng.range(3.0, 10.0) as usize;
        for _ in 0..presses {
            let on = ms(rng.range(50.0, 110.0));
            if t + on > n {
                break;
            }
            let key = keys.next().unwrap();
            let digit = Digit::from_char(key).unwrap();
            let spec = ToneSpec::level(rng.range(-20.0, -4.0));
            add_dtmf(&mut x, rate, t, on, digit, spec, &mut rng);
            pressed.push(key);
            t += on + ms(rng.range(50.0, 150.0));
        }
        t += ms(rng.range(150.0, 400.0));
    }
    (to_i16(&x), pressed)
}

/// Criterion settings that keep `cargo bench` for every id well under a minute.
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
}

/// An `Outputs` that only keeps the optimiser from discarding events.
struct Discard;

impl Outputs for Discard {
    fn event(&mut self, event: Event) {
        black_box(event);
    }
    fn secure_digit(&mut self, digit: SecureDigit) {
        black_box(digit);
    }
}

impl tonewall::rtp::LegOutputs for Discard {
    fn packet(&mut self, rtp: &[u8]) {
        black_box(rtp);
    }
    fn audio(&mut self, at: tonewall::time::MediaTime, samples: &[i16]) {
        black_box((at, samples));
    }
}

/// Keys tonewall's detector reports over `frames` (setup only; allocates).
fn tonewall_keys(frames: &[&[i16]]) -> String {
    let mut det = Detector::new(&DetectorConfig::default(), &MaskConfig::default(), false);
    let mut keys = String::new();
    for f in frames {
        det.process(f, &mut |ev| {
            if let DetectorEvent::Digit { digit, .. } = ev {
                keys.push(digit.expose().to_char());
            }
        });
    }
    keys
}

fn detector(c: &mut Criterion) {
    let (x, pressed) = bench_signal(RATE);
    let frames: Vec<&[i16]> = x.chunks_exact(160).collect();
    let found = tonewall_keys(&frames);
    eprintln!(
        "detector/8k_20ms: {} frames; {} keys pressed, tonewall reports {} (sequence {})",
        frames.len(),
        pressed.len(),
        found.len(),
        if found == pressed {
            "identical"
        } else {
            "differs"
        },
    );
    if found != pressed {
        eprintln!("  pressed:  {pressed}\n  tonewall: {found}");
    }
    let mut det = Detector::new(&DetectorConfig::default(), &MaskConfig::default(), false);
    let mut i = 0;
    let mut g = c.benchmark_group("detector");
    g.bench_function("8k_20ms", |b| {
        b.iter(|| {
            let f = frames[i];
            i = (i + 1) % frames.len();
            det.process(f, &mut |ev| {
                black_box(ev);
            });
        })
    });
    g.finish();
}

fn pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");

    // PCMU: mu-law bytes in, mu-law bytes out. Masking happens in the codec's own domain
    // (masked samples become the silence code word 0xFF, all others pass bit-exact), so the
    // pipeline never re-encodes: this is decode + detect + mask, and it is the whole cost of
    // the brief's "G.711 decode + detect + mask + encode" budget.
    let (x, _) = bench_signal(RATE);
    let ulaw: Vec<u8> = x.iter().map(|&s| linear_to_ulaw(s)).collect();
    let frames: Vec<&[u8]> = ulaw.chunks_exact(160).collect();
    let cfg = PipelineConfig::default();
    assert_eq!(
        (cfg.codec, cfg.rate, cfg.lookahead_ms),
        (Codec::Pcmu, 8000, 20)
    );
    let mut p = ChannelPipeline::<u8>::new(cfg, ChannelId(0)).expect("PCMU pipeline");
    let mut out = [0u8; 160];
    let mut i = 0;
    g.bench_function("pcmu_8k_20ms", |b| {
        b.iter(|| {
            let f = frames[i];
            i = (i + 1) % frames.len();
            p.process(f, &mut out, &mut Discard);
            black_box(&out);
        })
    });

    // 16-bit PCM at 48 kHz: rubato's FFT resampler down to 8 kHz inside, then detect + mask.
    let (x, _) = bench_signal(48_000);
    let frames: Vec<&[i16]> = x.chunks_exact(960).collect();
    let cfg = PipelineConfig {
        codec: Codec::Pcm16,
        rate: 48_000,
        ..PipelineConfig::default()
    };
    let mut p = ChannelPipeline::<i16>::new(cfg, ChannelId(0)).expect("48 kHz pipeline");
    let mut out = [0i16; 960];
    let mut i = 0;
    g.bench_function("pcm16_48k_20ms", |b| {
        b.iter(|| {
            let f = frames[i];
            i = (i + 1) % frames.len();
            p.process(f, &mut out, &mut Discard);
            black_box(&out);
        })
    });
    #[cfg(feature = "opus")]
    opus_48k(&mut g, &x);
    pcmu_legs(&mut g);
    g.finish();
}

/// `pcmu_leg_20ms` and `pcmu_leg_2000_calls_20ms`: one 20 ms PCMU RTP packet into a real
/// caller leg (parse, reorder, decode + detect + mask, packetise downstream), first with one
/// leg, then handed round-robin to 2,000 legs as a busy gateway does. The second is the cost
/// a packet has on a loaded gateway: each leg's state has left the caches by the time its next
/// packet comes, so the gap between the two is what the per-call footprint costs.
fn pcmu_legs(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    use tonewall::rtp::{CallerLeg, LegConfig};
    let (x, _) = bench_signal(RATE);
    let ulaw: Vec<u8> = x.iter().map(|&s| linear_to_ulaw(s)).collect();
    let payloads: Vec<&[u8]> = ulaw.chunks_exact(160).collect();
    for (id, calls) in [
        ("pcmu_leg_20ms", 1usize),
        ("pcmu_leg_2000_calls_20ms", 2000),
    ] {
        let mut legs: Vec<CallerLeg> = (0..calls)
            .map(|_| CallerLeg::new(LegConfig::default(), ChannelId(0)).expect("PCMU leg"))
            .collect();
        let mut buf = [0u8; 12 + 160];
        // Packet k goes to leg k % calls, carrying that leg's next frame of the signal; legs
        // start at different points of it so they are not all in a key press at once.
        let mut k: u64 = 0;
        g.bench_function(id, |b| {
            b.iter(|| {
                let leg = (k % calls as u64) as usize;
                let n = k / calls as u64;
                let p = payloads[((n as usize) + leg * 7) % payloads.len()];
                buf[0] = 0x80;
                buf[1] = 0;
                buf[2..4].copy_from_slice(&(n as u16).to_be_bytes());
                buf[4..8].copy_from_slice(&((n as u32).wrapping_mul(160)).to_be_bytes());
                buf[8..12].copy_from_slice(&(0x1000_0000u32 + leg as u32).to_be_bytes());
                buf[12..].copy_from_slice(p);
                legs[leg].handle_packet(&buf, n * 20_000, &mut Discard);
                k += 1;
            })
        });
    }
}

/// Opus at 48 kHz: the benchmark signal encoded at 32 kbit/s (VoIP application, as a
/// softphone sends it) into 20 ms RTP packets up front.
///
/// * `opus_48k_20ms`: each iteration hands one RTP packet to a real Opus [`CallerLeg`] with
///   Opus downstream in its default mode: parse, decode, resample, detect, mask, then forward
///   the caller's packet unchanged or replace it with the splice encoder's (`rtp::splice`).
///   The signal is about half key presses, so about half the packets are replaced.
/// * `opus_48k_20ms_every_packet_spliced`: the same leg over a continuous key tone, so every
///   packet is masked and re-encoded: the per-packet worst case.
/// * `opus_48k_20ms_reencode_all`: the same leg with `opus_passthrough: false` (every packet
///   re-encoded by the VoIP encoder at libopus's default complexity).
/// * `opus_48k_to_pcmu_20ms`: decode + pipeline + 48 to 8 kHz resampler + mu-law (the
///   `downstream_codec: pcmu` path).
/// * `opus_{decode,encode,encode_splice}_48k_20ms`: the codec calls alone.
///
/// [`CallerLeg`]: tonewall::rtp::CallerLeg
#[cfg(feature = "opus")]
fn opus_48k(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>, x: &[i16]) {
    use tonewall::codec::{FrameDecoder, FrameEncoder, OpusDecoder, OpusEncoder};
    use tonewall::rtp::LegConfig;
    const BITRATE: u32 = 32_000;
    let encode_all = |x: &[i16]| -> Vec<Vec<u8>> {
        let mut enc = OpusEncoder::new(BITRATE).expect("Opus encoder");
        let mut buf = vec![0u8; enc.max_packet()];
        x.chunks_exact(960)
            .map(|f| {
                let n = enc.encode(f, &mut buf).expect("encode");
                buf[..n].to_vec()
            })
            .collect()
    };
    let packets = encode_all(x);
    let bytes: usize = packets.iter().map(Vec::len).sum();
    let cfg = PipelineConfig {
        codec: Codec::Pcm16,
        rate: 48_000,
        ..PipelineConfig::default()
    };
    let leg_cfg = LegConfig {
        audio_pt: 111,
        codec: Codec::Opus,
        rate: 48_000,
        pipeline: cfg,
        ..LegConfig::default()
    };
    let delay = ChannelPipeline::<i16>::new(cfg, ChannelId(0))
        .expect("pipeline")
        .delay();
    eprintln!(
        "pipeline/opus_48k_20ms: {} packets, mean {:.0} bytes ({} kbit/s, VoIP); pipeline \
         delay() {delay} samples ({:.2} ms) at look-ahead {} ms",
        packets.len(),
        bytes as f64 / packets.len() as f64,
        BITRATE / 1000,
        delay as f64 / 48.0,
        cfg.lookahead_ms,
    );

    // The production leg, splicing.
    opus_leg(g, "opus_48k_20ms", leg_cfg, &packets);
    // Every packet masked: a key held down for the whole signal.
    let mut held = vec![0.0; x.len()];
    let mut rng = Rng::new(5);
    add_white_noise(&mut held, power_for_dbm0(-60.0), &mut rng);
    add_dtmf(
        &mut held,
        48_000,
        0,
        x.len(),
        Digit::from_char('5').expect("key"),
        ToneSpec::level(-10.0),
        &mut rng,
    );
    let tone_packets = encode_all(&to_i16(&held));
    opus_leg(
        g,
        "opus_48k_20ms_every_packet_spliced",
        leg_cfg,
        &tone_packets,
    );
    // Every packet re-encoded with the VoIP encoder.
    let reencode = LegConfig {
        opus_passthrough: false,
        ..leg_cfg
    };
    opus_leg(g, "opus_48k_20ms_reencode_all", reencode, &packets);

    // Transcoded to PCMU downstream: resample the masked frame to 8 kHz, encode mu-law.
    let mut rs = tonewall::pipeline::ChunkResampler::between(48_000, 8000, 200).expect("rs");
    let mut ulaw = [0u8; 160];
    opus_path(g, "opus_48k_to_pcmu_20ms", cfg, &packets, |pcm| {
        let mut n = 0;
        let _ = rs.push(pcm, |y| {
            for &v in y {
                if n < ulaw.len() {
                    ulaw[n] = linear_to_ulaw(v.round().clamp(-32768.0, 32767.0) as i16);
                    n += 1;
                }
            }
        });
        black_box(&ulaw[..n]);
        n
    });

    // The codec parts alone.
    let mut dec = OpusDecoder::new().expect("Opus decoder");
    let mut pcm = [0i16; 960];
    let mut i = 0;
    g.bench_function("opus_decode_48k_20ms", |b| {
        b.iter(|| {
            let packet = &packets[i];
            i = (i + 1) % packets.len();
            black_box(dec.decode(packet, &mut pcm).unwrap_or(0));
        })
    });
    let frames: Vec<&[i16]> = x.chunks_exact(960).collect();
    for (id, enc) in [
        ("opus_encode_48k_20ms", OpusEncoder::new(BITRATE)),
        ("opus_encode_splice_48k_20ms", OpusEncoder::splice(BITRATE)),
    ] {
        let mut enc = enc.expect("Opus encoder");
        let mut pkt = vec![0u8; enc.max_packet()];
        let mut i = 0;
        g.bench_function(id, |b| {
            b.iter(|| {
                let f = frames[i];
                i = (i + 1) % frames.len();
                black_box(enc.encode(f, &mut pkt).unwrap_or(0));
            })
        });
    }
}

/// Benchmark `id`: one RTP packet of `payloads` (cycled, with sequence numbers and
/// timestamps running on) into a real caller leg per iteration. Prints how many packets the
/// leg forwarded and re-encoded over the run.
#[cfg(feature = "opus")]
fn opus_leg(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: &str,
    cfg: tonewall::rtp::LegConfig,
    payloads: &[Vec<u8>],
) {
    use tonewall::rtp::CallerLeg;
    let mut leg = CallerLeg::new(cfg, ChannelId(0)).expect("Opus leg");
    let mut buf = vec![0u8; 12 + 1500];
    let mut k: u32 = 0;
    g.bench_function(id, |b| {
        b.iter(|| {
            let p = &payloads[k as usize % payloads.len()];
            buf[0] = 0x80;
            buf[1] = 111;
            buf[2..4].copy_from_slice(&(k as u16).to_be_bytes());
            buf[4..8].copy_from_slice(&k.wrapping_mul(960).to_be_bytes());
            buf[8..12].copy_from_slice(&0x1234_5678u32.to_be_bytes());
            buf[12..12 + p.len()].copy_from_slice(p);
            leg.handle_packet(&buf[..12 + p.len()], k as u64 * 20_000, &mut Discard);
            k = k.wrapping_add(1);
        })
    });
    let st = leg.stats();
    eprintln!(
        "pipeline/{id}: {} packets in, {} forwarded unchanged, {} re-encoded",
        st.packets_in, st.forwarded, st.reencoded
    );
}

/// Benchmark `id`: decode one packet, the 48 kHz pipeline, `encode` the masked frame.
#[cfg(feature = "opus")]
fn opus_path<E: FnMut(&[i16]) -> usize>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: &str,
    cfg: PipelineConfig,
    packets: &[Vec<u8>],
    mut encode: E,
) {
    use tonewall::codec::{FrameDecoder, OpusDecoder};
    let mut p = ChannelPipeline::<i16>::new(cfg, ChannelId(0)).expect("48 kHz pipeline");
    let mut dec = OpusDecoder::new().expect("Opus decoder");
    let mut pcm = [0i16; 960];
    let mut out = [0i16; 960];
    let mut i = 0;
    g.bench_function(id, |b| {
        b.iter(|| {
            let packet = &packets[i];
            i = (i + 1) % packets.len();
            let n = dec.decode(packet, &mut pcm).unwrap_or(0);
            p.process(&pcm[..n], &mut out[..n], &mut Discard);
            black_box(encode(&out[..n]));
        })
    });
}

/// The `goertzel-filter` 0.2 crate, as it has to be driven.
///
/// Its `dft_power(input, linear_freq)` takes no sample rate: it computes the bin as
/// `floor(linear_freq * N / (4 pi^2))` and evaluates the DFT there, over the first N-1
/// samples. To land on the bin nearest below `hz` at 8 kHz one must pass
/// `4 pi^2 hz / 8000`; passing plain hertz (as its README suggests) lands far outside
/// the band. Every call whose frequency is not exactly on a bin prints a warning line to
/// stdout, and every call allocates a vector as long as the input.
mod goertzel_crate {
    use std::f64::consts::PI;

    /// The argument that makes the crate evaluate the bin nearest below `hz` at `rate`.
    pub fn arg_for_hz(hz: f64, rate: f64) -> f64 {
        4.0 * PI * PI * hz / rate
    }

    /// DFT power at the eight frequencies over `frame`.
    #[allow(clippy::ptr_arg)] // the crate's API takes `&Vec<f64>`
    pub fn powers(frame: &Vec<f64>, args: &[f64; 8]) -> [f64; 8] {
        args.map(|a| goertzel_filter::dft_power(frame, a))
    }
}

/// Sends the process's stdout to /dev/null while alive (the `goertzel-filter` crate prints a
/// line on every call; with 8 calls per frame that would bury criterion's report). The crate's
/// cost still includes formatting those lines and one `write(2)` to /dev/null per line, which
/// is the cheapest place its output can go.
struct QuietStdout {
    saved: std::os::fd::OwnedFd,
}

mod fd {
    use std::ffi::c_int;
    extern "C" {
        pub fn dup2(old: c_int, new: c_int) -> c_int;
    }
}

impl QuietStdout {
    fn new() -> Self {
        use std::io::Write;
        use std::os::fd::{AsFd, AsRawFd};
        let stdout = std::io::stdout();
        stdout.lock().flush().expect("flush stdout");
        let saved = stdout.as_fd().try_clone_to_owned().expect("dup stdout");
        let null = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .expect("open /dev/null");
        // SAFETY: dup2 on two descriptors this process owns; fd 1 stays open throughout.
        let r = unsafe { fd::dup2(null.as_raw_fd(), 1) };
        assert!(r == 1, "dup2 /dev/null onto stdout failed");
        Self { saved }
    }
}

impl Drop for QuietStdout {
    fn drop(&mut self) {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let _ = std::io::stdout().lock().flush();
        // SAFETY: as above; `saved` is a descriptor we own, duplicated from the original fd 1.
        unsafe { fd::dup2(self.saved.as_raw_fd(), 1) };
    }
}

/// What the `goertzel-filter` crate and tonewall's bank read for a 697 Hz tone, relative to
/// the true DFT power at 697 Hz over a 20 ms frame, averaged over start phases.
fn goertzel_accuracy() {
    const N: usize = 160;
    let amp = amplitude_for_dbm0(-4.0);
    let expected = (amp * N as f64 / 2.0).powi(2);
    let phases = 16;
    let (mut mapped, mut naive, mut bank) = (0.0, 0.0, 0.0);
    for k in 0..phases {
        let ph = 2.0 * std::f64::consts::PI * k as f64 / phases as f64;
        let x: Vec<f64> = (0..N)
            .map(|n| amp * (2.0 * std::f64::consts::PI * 697.0 * n as f64 / 8000.0 + ph).cos())
            .collect();
        {
            let _quiet = QuietStdout::new();
            mapped += goertzel_filter::dft_power(&x, goertzel_crate::arg_for_hz(697.0, 8000.0));
            naive += goertzel_filter::dft_power(&x, 697.0);
        }
        // tonewall's bank: four coherent 5 ms sub-blocks summed into the 20 ms DFT value.
        let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let mut g = GoertzelBank::new();
        let (mut re, mut im) = (0.0f64, 0.0f64);
        for ch in xf.chunks(SUB) {
            let sb = g.feed(ch).expect("whole sub-block");
            re += sb.re[0] as f64;
            im += sb.im[0] as f64;
        }
        bank += re * re + im * im;
    }
    let p = phases as f64;
    let db = |r: f64| 10.0 * r.log10();
    let (mapped, naive, bank) = (
        mapped / p / expected,
        naive / p / expected,
        bank / p / expected,
    );
    eprintln!(
        "compare/goertzel_filter_crate_8k_20ms: a 697 Hz tone over 160 samples at 8 kHz reads \
         {mapped:.4} of its power ({:.1} dB) through goertzel-filter at the nearest bin it can \
         reach (bin 13 = 650 Hz), {naive:.2e} ({:.1} dB) when called with 697.0 as its README \
         suggests, and {bank:.4} ({:+.2} dB) through tonewall's bank at {} Hz",
        db(mapped),
        db(naive),
        db(bank),
        BANK_HZ[0],
    );
}

fn goertzel_filter_crate(c: &mut Criterion) {
    goertzel_accuracy();
    let (x, _) = bench_signal(RATE);
    let frames: Vec<&[i16]> = x.chunks_exact(160).collect();
    let args = BANK_HZ.map(|hz| goertzel_crate::arg_for_hz(hz as f64, RATE as f64));
    let mut buf = vec![0f64; 160];
    let mut i = 0;
    let mut g = c.benchmark_group("compare");
    g.bench_function("goertzel_filter_crate_8k_20ms", |b| {
        let _quiet = QuietStdout::new();
        b.iter(|| {
            let f = frames[i];
            i = (i + 1) % frames.len();
            for (d, &s) in buf.iter_mut().zip(f) {
                *d = s as f64;
            }
            black_box(goertzel_crate::powers(&buf, &args));
        })
    });
    g.finish();
}

/// spandsp's DTMF receiver through FFI (`/usr/include/spandsp/dtmf.h`, spandsp 0.0.6).
#[cfg(feature = "spandsp")]
mod spandsp {
    use std::ffi::{c_char, c_int, c_void};
    use std::marker::{PhantomData, PhantomPinned};
    use std::ptr::NonNull;

    /// `dtmf_rx_state_t`, opaque.
    #[repr(C)]
    pub struct DtmfRxState {
        _data: [u8; 0],
        _marker: PhantomData<(*mut u8, PhantomPinned)>,
    }

    /// `typedef void (*digits_rx_callback_t)(void *user_data, const char *digits, int len);`
    pub type DigitsRxCallback =
        Option<unsafe extern "C" fn(user_data: *mut c_void, digits: *const c_char, len: c_int)>;

    extern "C" {
        /// `dtmf_rx_state_t *dtmf_rx_init(dtmf_rx_state_t *s, digits_rx_callback_t callback,
        /// void *user_data);` allocates the state when `s` is NULL.
        fn dtmf_rx_init(
            s: *mut DtmfRxState,
            callback: DigitsRxCallback,
            user_data: *mut c_void,
        ) -> *mut DtmfRxState;
        /// `int dtmf_rx(dtmf_rx_state_t *s, const int16_t amp[], int samples);`
        fn dtmf_rx(s: *mut DtmfRxState, amp: *const i16, samples: c_int) -> c_int;
        /// `int dtmf_rx_free(dtmf_rx_state_t *s);`
        fn dtmf_rx_free(s: *mut DtmfRxState) -> c_int;
    }

    /// Digits the callback has delivered; the first `KEEP` are kept for comparison.
    const KEEP: usize = 256;
    struct Received {
        count: usize,
        keys: [u8; KEEP],
    }

    unsafe extern "C" fn on_digits(user_data: *mut c_void, digits: *const c_char, len: c_int) {
        // SAFETY: `user_data` is the `Received` owned by the `DtmfRx` that registered this
        // callback, alive until after `dtmf_rx_free`; spandsp passes `len` valid bytes.
        let r = unsafe { &mut *user_data.cast::<Received>() };
        if digits.is_null() || len <= 0 {
            return;
        }
        let d = unsafe { std::slice::from_raw_parts(digits.cast::<u8>(), len as usize) };
        for &k in d {
            if r.count < KEEP {
                r.keys[r.count] = k;
            }
            r.count += 1;
        }
    }

    /// One spandsp DTMF receiver with default settings.
    pub struct DtmfRx {
        s: NonNull<DtmfRxState>,
        received: *mut Received,
    }

    impl DtmfRx {
        pub fn new() -> Self {
            let received = Box::into_raw(Box::new(Received {
                count: 0,
                keys: [0; KEEP],
            }));
            // SAFETY: NULL asks spandsp to allocate; the callback matches
            // `digits_rx_callback_t` and `received` outlives the state (freed in Drop after
            // `dtmf_rx_free`).
            let s = unsafe { dtmf_rx_init(std::ptr::null_mut(), Some(on_digits), received.cast()) };
            Self {
                s: NonNull::new(s).expect("dtmf_rx_init returned NULL"),
                received,
            }
        }

        /// Feed 16-bit samples at 8 kHz.
        #[inline]
        pub fn process(&mut self, x: &[i16]) {
            // SAFETY: `s` is a live receiver; `x` is valid for `x.len()` samples.
            unsafe { dtmf_rx(self.s.as_ptr(), x.as_ptr(), x.len() as c_int) };
        }

        /// Digits delivered so far and the first of them as text.
        pub fn received(&self) -> (usize, String) {
            // SAFETY: no call into spandsp is running, so nothing else touches `received`.
            let r = unsafe { &*self.received };
            let kept = r.count.min(KEEP);
            (
                r.count,
                String::from_utf8_lossy(&r.keys[..kept]).into_owned(),
            )
        }
    }

    impl Drop for DtmfRx {
        fn drop(&mut self) {
            // SAFETY: `s` came from `dtmf_rx_init` and is freed once; `received` came from
            // `Box::into_raw` and spandsp holds no reference to it after the free.
            unsafe {
                dtmf_rx_free(self.s.as_ptr());
                drop(Box::from_raw(self.received));
            }
        }
    }
}

#[cfg(feature = "spandsp")]
fn spandsp_dtmf_rx(c: &mut Criterion) {
    let (x, pressed) = bench_signal(RATE);
    let frames: Vec<&[i16]> = x.chunks_exact(160).collect();
    let mut check = spandsp::DtmfRx::new();
    for f in &frames {
        check.process(f);
    }
    let (count, keys) = check.received();
    eprintln!(
        "compare/spandsp_dtmf_rx_8k_20ms: {} keys pressed, spandsp dtmf_rx decodes {count} \
         (sequence {})",
        pressed.len(),
        if keys == pressed {
            "identical"
        } else {
            "differs"
        },
    );
    if keys != pressed {
        eprintln!("  pressed: {pressed}\n  spandsp: {keys}");
    }
    let mut rx = spandsp::DtmfRx::new();
    let mut i = 0;
    let mut g = c.benchmark_group("compare");
    g.bench_function("spandsp_dtmf_rx_8k_20ms", |b| {
        b.iter(|| {
            let f = frames[i];
            i = (i + 1) % frames.len();
            rx.process(black_box(f));
        })
    });
    g.finish();
}

#[cfg(feature = "spandsp")]
criterion_group! {
    name = benches;
    config = config();
    targets = detector, pipeline, goertzel_filter_crate, spandsp_dtmf_rx
}
#[cfg(not(feature = "spandsp"))]
criterion_group! {
    name = benches;
    config = config();
    targets = detector, pipeline, goertzel_filter_crate
}
criterion_main!(benches);
