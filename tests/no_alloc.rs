//! The media path never allocates (brief section 4, "Hot path"): a counting global allocator
//! watches every frame pushed through the detector, the channel pipelines, the Opus codec
//! path and the RTP caller legs (PCMU and Opus), after a warm-up, over signals with key
//! presses in them so the digit, mask and capture-window paths all run (and, for RTP, loss,
//! reordering and telephone-events).
//!
//! Only allocations on the test's own thread while it is "armed" count. The first few
//! counted allocations print a backtrace to stderr (`cargo test --test no_alloc --
//! --nocapture` shows them), which names the allocating line in the core.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use tonewall::capture::CaptureConfig;
use tonewall::codec::{linear_to_ulaw, Codec};
use tonewall::dtmf::{Detector, DetectorConfig, DetectorEvent, Digit, MaskConfig};
use tonewall::event::{Event, Outputs, SecureDigit};
use tonewall::pipeline::{ChannelPipeline, PipelineConfig, Sample};
use tonewall::rtp::{CallerLeg, LegConfig, LegOutputs};
use tonewall::signal::ToneSpec;
use tonewall::signal::{add_dtmf, add_sine, add_white_noise, power_for_dbm0, to_i16, Rng};
use tonewall::time::ChannelId;
use tonewall::time::MediaTime;

struct Counting;

/// Allocations (alloc, alloc_zeroed, realloc) seen on armed threads.
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
/// Backtraces printed so far (a few are enough to find the culprit).
static TRACES: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Set while the current thread is inside a counted region. `const` and drop-free, so
    /// reading it from the allocator never allocates.
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

impl Counting {
    #[inline]
    fn note(&self) {
        // Disarm while recording, so the backtrace's own allocations are not counted.
        let armed = ARMED.try_with(|a| a.replace(false)).unwrap_or(false);
        if !armed {
            return;
        }
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        if TRACES.fetch_add(1, Ordering::Relaxed) < 3 {
            eprintln!(
                "allocation on the media path:\n{}",
                std::backtrace::Backtrace::force_capture()
            );
        }
        let _ = ARMED.try_with(|a| a.set(true));
    }
}

// SAFETY: every call is forwarded unchanged to `System`; counting has no effect on memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.note();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.note();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// One counted region at a time across the test binary (the counter is global).
static SERIAL: Mutex<()> = Mutex::new(());

/// Disarms on drop, so a panic inside a counted region cannot leave the thread armed.
struct Armed;

impl Armed {
    fn arm() -> Self {
        ARMED.with(|a| a.set(true));
        Armed
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        ARMED.with(|a| a.set(false));
    }
}

/// Allocations made by `f` on this thread.
fn allocations_in<F: FnOnce()>(f: F) -> usize {
    let before = ALLOCS.load(Ordering::Relaxed);
    {
        let _armed = Armed::arm();
        f();
    }
    ALLOCS.load(Ordering::Relaxed) - before
}

/// Keys pressed in [`signal`]: a card number closed by `#`, then three more digits that open a
/// second window, which the idle timeout closes.
const CARD: &str = "4111111111111111#";
const MORE: &str = "123";

/// Speech-like sound, a card number typed in, a pause, three more keys, then quiet long
/// enough for the capture window's idle timeout (1 s in [`pipeline_config`]).
fn signal(rate: u32) -> Vec<i16> {
    let ms = |v: f64| (v * rate as f64 / 1000.0) as usize;
    let mut x = vec![0.0; ms(6500.0)];
    let mut rng = Rng::new(0x00A1_10C5);
    add_white_noise(&mut x, power_for_dbm0(-55.0), &mut rng);
    // Half a second of a voiced sound: a harmonic stack on 140 Hz.
    for h in 1..24 {
        let dbm0 = -15.0 - 3.0 * h as f64;
        add_sine(
            &mut x,
            rate,
            ms(100.0),
            ms(500.0),
            140.0 * h as f64,
            dbm0,
            rng.phase(),
        );
    }
    let mut t = ms(800.0);
    for (i, key) in CARD.chars().chain(MORE.chars()).enumerate() {
        if i == CARD.len() {
            t += ms(1200.0);
        }
        let digit = Digit::from_char(key).unwrap();
        let level = -6.0 - (i % 4) as f64 * 4.0;
        add_dtmf(
            &mut x,
            rate,
            t,
            ms(70.0),
            digit,
            ToneSpec::level(level),
            &mut rng,
        );
        t += ms(140.0);
    }
    to_i16(&x)
}

/// Counts events without allocating: one slot per event kind.
#[derive(Default)]
struct Tally {
    events: [u32; 8],
    secure: u32,
}

impl Tally {
    const TONE_MASKED: usize = 0;
    const DIGIT: usize = 1;
    const CAPTURE_OPENED: usize = 2;
    const CAPTURE_CLOSED: usize = 5;
    const FAULT: usize = 7;
}

impl Outputs for Tally {
    fn event(&mut self, event: Event) {
        let k = match event {
            Event::ToneMasked { .. } => 0,
            Event::Digit { .. } => 1,
            Event::CaptureOpened { .. } => 2,
            Event::RecordingPause { .. } => 3,
            Event::CaptureProgress { .. } => 4,
            Event::CaptureClosed { .. } => 5,
            Event::RecordingResume { .. } => 6,
            Event::Fault { .. } => 7,
        };
        self.events[k] += 1;
    }
    fn secure_digit(&mut self, _digit: SecureDigit) {
        self.secure += 1;
    }
}

fn pipeline_config(codec: Codec, rate: u32, lookahead_ms: u32) -> PipelineConfig {
    PipelineConfig {
        codec,
        rate,
        lookahead_ms,
        capture: CaptureConfig {
            idle_timeout_ms: 1000,
            ..CaptureConfig::default()
        },
        ..PipelineConfig::default()
    }
}

/// Frames of `input` of the given sizes, cycling; the first `warm` frames are processed before
/// counting starts. Returns the allocations counted and the tally of everything emitted.
fn run_pipeline<T: Sample + Default>(
    cfg: PipelineConfig,
    input: &[T],
    sizes: &[usize],
    warm: usize,
) -> (usize, Tally) {
    let mut p = ChannelPipeline::<T>::new(cfg, ChannelId(7)).expect("pipeline");
    let max = sizes.iter().copied().max().unwrap();
    let mut output = vec![T::default(); max];
    let mut tally = Tally::default();
    // Cut the input into frames up front (allocates; not counted).
    let mut frames = Vec::new();
    let (mut pos, mut k) = (0, 0);
    while pos < input.len() {
        let n = sizes[k % sizes.len()].min(input.len() - pos);
        frames.push(&input[pos..pos + n]);
        pos += n;
        k += 1;
    }
    let (head, rest) = frames.split_at(warm.min(frames.len()));
    for f in head {
        p.process(f, &mut output[..f.len()], &mut tally);
    }
    let allocs = allocations_in(|| {
        for f in rest {
            p.process(f, &mut output[..f.len()], &mut tally);
        }
    });
    (allocs, tally)
}

fn check_tally(what: &str, t: &Tally) {
    let keys = (CARD.len() + MORE.len()) as u32;
    assert_eq!(t.events[Tally::FAULT], 0, "{what}: faults");
    assert!(
        t.secure >= keys - 2 && t.events[Tally::DIGIT] == t.secure,
        "{what}: {} of {keys} digits found, the digit paths did not run",
        t.secure
    );
    assert!(
        t.events[Tally::TONE_MASKED] >= keys / 2,
        "{what}: too few masked tones, the mask paths did not run"
    );
    assert!(
        t.events[Tally::CAPTURE_OPENED] >= 2 && t.events[Tally::CAPTURE_CLOSED] >= 2,
        "{what}: capture windows did not open and close twice"
    );
}

#[test]
fn detector_process_does_not_allocate() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let x = signal(8000);
    for speculate in [false, true] {
        let mut det = Detector::new(
            &DetectorConfig::default(),
            &MaskConfig::default(),
            speculate,
        );
        let (head, rest) = x.split_at(10 * 160);
        let mut digits = 0u32;
        let mut masks = 0u32;
        let mut emit = |ev: DetectorEvent| match ev {
            DetectorEvent::Digit { .. } => digits += 1,
            DetectorEvent::Mask { .. } => masks += 1,
            DetectorEvent::DigitEnd { .. } => {}
        };
        for f in head.chunks(160) {
            det.process(f, &mut emit);
        }
        let allocs = allocations_in(|| {
            for f in rest.chunks(160) {
                det.process(f, &mut emit);
            }
            det.flush(&mut emit);
        });
        assert_eq!(
            allocs, 0,
            "Detector::process allocated (speculate {speculate})"
        );
        let keys = (CARD.len() + MORE.len()) as u32;
        assert!(digits >= keys - 2, "only {digits} of {keys} digits found");
        assert!(masks > 0);
    }
}

#[test]
fn pcmu_pipeline_does_not_allocate() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let x: Vec<u8> = signal(8000).iter().map(|&s| linear_to_ulaw(s)).collect();
    for lookahead in [0, 20] {
        let cfg = pipeline_config(Codec::Pcmu, 8000, lookahead);
        let (allocs, tally) = run_pipeline(cfg, &x, &[160], 10);
        assert_eq!(
            allocs, 0,
            "PCMU pipeline, lookahead {lookahead} ms, allocated"
        );
        check_tally(&format!("PCMU lookahead {lookahead}"), &tally);
    }
    // Ragged packet sizes: partial sub-blocks, inputs longer than one internal chunk.
    let cfg = pipeline_config(Codec::Pcmu, 8000, 0);
    let (allocs, tally) = run_pipeline(cfg, &x, &[1, 37, 160, 333, 80, 7], 20);
    assert_eq!(allocs, 0, "PCMU pipeline with ragged frames allocated");
    check_tally("PCMU ragged", &tally);
}

#[test]
fn pcm16_48k_pipeline_does_not_allocate() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let x = signal(48_000);
    for lookahead in [0, 20] {
        let cfg = pipeline_config(Codec::Pcm16, 48_000, lookahead);
        let (allocs, tally) = run_pipeline(cfg, &x, &[960], 10);
        assert_eq!(
            allocs, 0,
            "48 kHz pipeline, lookahead {lookahead} ms, allocated"
        );
        check_tally(&format!("48 kHz lookahead {lookahead}"), &tally);
    }
}

/// The Opus per-frame path of an Opus caller leg, as `pipeline/opus_48k_20ms` benchmarks it:
/// libopus decode of a 20 ms packet, the 48 kHz pipeline, libopus encode of the masked frame.
/// The counter sees Rust allocations (the bindings, the pipeline); libopus itself is C and
/// would call `malloc` directly, which it does not do after `*_create` (its per-call scratch
/// lives on the stack).
#[cfg(feature = "opus")]
#[test]
fn opus_frame_path_does_not_allocate() {
    use tonewall::codec::{FrameDecoder, FrameEncoder, OpusDecoder, OpusEncoder};
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let x = signal(48_000);
    // Encode up front (allocates; not counted).
    let mut enc = OpusEncoder::new(32_000).expect("encoder");
    let mut buf = vec![0u8; enc.max_packet()];
    let packets: Vec<Vec<u8>> = x
        .chunks_exact(960)
        .map(|f| {
            let n = enc.encode(f, &mut buf).unwrap();
            buf[..n].to_vec()
        })
        .collect();
    for lookahead in [0, 20] {
        let cfg = pipeline_config(Codec::Pcm16, 48_000, lookahead);
        let mut p = ChannelPipeline::<i16>::new(cfg, ChannelId(7)).expect("pipeline");
        let mut dec = OpusDecoder::new().expect("decoder");
        let mut enc = OpusEncoder::new(32_000).expect("encoder");
        let (mut pcm, mut out) = (vec![0i16; 960], vec![0i16; 960]);
        let mut pkt = vec![0u8; enc.max_packet()];
        let mut tally = Tally::default();
        let mut bytes = 0usize;
        let mut frame = |packet: &[u8], tally: &mut Tally| {
            let n = dec.decode(packet, &mut pcm).expect("decode");
            p.process(&pcm[..n], &mut out[..n], tally);
            bytes += enc.encode(&out[..n], &mut pkt).expect("encode");
        };
        let (head, rest) = packets.split_at(10);
        for f in head {
            frame(f, &mut tally);
        }
        let allocs = allocations_in(|| {
            for f in rest {
                frame(f, &mut tally);
            }
        });
        assert_eq!(
            allocs, 0,
            "Opus frame path, lookahead {lookahead} ms, allocated"
        );
        assert!(bytes > 0);
        check_tally(&format!("Opus lookahead {lookahead}"), &tally);
    }
}

/// Counts what a caller leg emits, without allocating.
#[derive(Default)]
struct LegTally {
    inner: Tally,
    packets: u32,
    bytes: u64,
    audio_samples: u64,
}

impl Outputs for LegTally {
    fn event(&mut self, event: Event) {
        self.inner.event(event);
    }
    fn secure_digit(&mut self, digit: SecureDigit) {
        self.inner.secure_digit(digit);
    }
}

impl LegOutputs for LegTally {
    fn packet(&mut self, rtp: &[u8]) {
        self.packets += 1;
        self.bytes += rtp.len() as u64;
    }
    fn audio(&mut self, _at: MediaTime, samples: &[i16]) {
        self.audio_samples += samples.len() as u64;
    }
}

fn rtp_packet(pt: u8, marker: bool, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
    rtp_types::RtpPacketBuilder::<&[u8], &[u8]>::new()
        .payload_type(pt)
        .marker_bit(marker)
        .sequence_number(seq)
        .timestamp(ts)
        .ssrc(0x5EED)
        .payload(payload)
        .write_vec()
        .unwrap()
}

/// 500 PCMU packets through a caller leg: the in-band card number of [`signal`], one key
/// press as RFC 4733 telephone-events (start, updates, three ends), one lost packet (given up
/// through the reorder timer), one swapped pair, then the end of the call.
#[test]
fn caller_leg_does_not_allocate() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cfg = LegConfig {
        pipeline: pipeline_config(Codec::Pcmu, 8000, 20),
        ..LegConfig::default()
    };
    let mut x: Vec<u8> = signal(8000).iter().map(|&s| linear_to_ulaw(s)).collect();
    x.resize(500 * 160, 0xFF);
    // Cut into packets up front (allocates; not counted). The key press is at packet 400.
    let (mut seq, mut ts) = (65_000u16, 1_000u32);
    let mut pkts: Vec<(Vec<u8>, u64)> = Vec::new();
    let mut t = 0u64;
    let mut k = 0;
    while k < x.len() {
        if k == 400 * 160 {
            for (i, (end, dur)) in [(false, 160u16), (false, 400), (false, 800), (true, 960)]
                .into_iter()
                .chain([(true, 960), (true, 960)])
                .enumerate()
            {
                let d = dur.to_be_bytes();
                let payload = [5, (end as u8) << 7 | 10, d[0], d[1]];
                pkts.push((rtp_packet(101, i == 0, seq, ts, &payload), t));
                seq = seq.wrapping_add(1);
                t += 20_000;
            }
            ts = ts.wrapping_add(960);
            k += 960;
            continue;
        }
        pkts.push((rtp_packet(0, false, seq, ts, &x[k..k + 160]), t));
        seq = seq.wrapping_add(1);
        ts = ts.wrapping_add(160);
        t += 20_000;
        k += 160;
    }
    pkts.remove(450); // lost
    pkts.swap(300, 301); // reordered (arrival times stay in order)
    let (t300, t301) = (pkts[301].1, pkts[300].1);
    pkts[300].1 = t300;
    pkts[301].1 = t301;
    assert!(pkts.len() >= 495);

    let mut leg = CallerLeg::new(cfg, ChannelId(9)).expect("leg");
    let mut tally = LegTally::default();
    let allocs = leg_allocations(&mut leg, &pkts, &mut tally);
    assert_eq!(allocs, 0, "CallerLeg allocated");
    let st = leg.stats();
    assert_eq!((st.lost, st.digits_from_events, st.late), (1, 1, 0));
    assert_eq!(st.telephone_event_packets, 6);
    assert_eq!(tally.packets as u64, st.packets_out);
    assert!(tally.packets >= 500 && tally.audio_samples >= 499 * 160);
    check_tally("caller leg", &tally.inner);
}

/// Warm `leg` up on the first 10 packets, then count the allocations while it handles the
/// rest (honouring its timer like a shell would) and finishes.
fn leg_allocations(leg: &mut CallerLeg, pkts: &[(Vec<u8>, u64)], tally: &mut LegTally) -> usize {
    let (head, rest) = pkts.split_at(10);
    for (p, t) in head {
        leg.handle_packet(p, *t, tally);
    }
    allocations_in(|| {
        for (p, t) in rest {
            while let Some(d) = leg.poll_timeout() {
                if d > *t {
                    break;
                }
                leg.handle_timeout(d, tally);
            }
            leg.handle_packet(p, *t, tally);
        }
        leg.finish(tally);
    })
}

/// An Opus caller leg (RTP in, Opus decode, 48 kHz pipeline, Opus re-encode, RTP out) and
/// one transcoding to PCMU downstream, over the card number of [`signal`] in 20 ms packets
/// with one packet lost (silence-filled next to a tone, so no concealment).
#[cfg(feature = "opus")]
#[test]
fn opus_caller_leg_does_not_allocate() {
    use tonewall::codec::{FrameEncoder, OpusEncoder};
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let x = signal(48_000);
    let mut enc = OpusEncoder::new(24_000).expect("encoder");
    let mut buf = vec![0u8; enc.max_packet()];
    let mut pkts: Vec<(Vec<u8>, u64)> = x
        .chunks_exact(960)
        .enumerate()
        .map(|(i, f)| {
            let n = enc.encode(f, &mut buf).unwrap();
            let p = rtp_packet(111, i == 0, 500 + i as u16, 960 * i as u32, &buf[..n]);
            (p, i as u64 * 20_000)
        })
        .collect();
    pkts.remove(200); // lost
                      // Opus downstream both ways (the caller's packets forwarded where untouched, or every
                      // packet re-encoded), and PCMU downstream.
    for (downstream, passthrough) in [(None, true), (None, false), (Some(Codec::Pcmu), true)] {
        let cfg = LegConfig {
            audio_pt: 111,
            codec: Codec::Opus,
            rate: 48_000,
            downstream_codec: downstream,
            downstream_pt: downstream.map(|_| 0),
            opus_passthrough: passthrough,
            pipeline: pipeline_config(Codec::Pcm16, 48_000, 20),
            ..LegConfig::default()
        };
        let mut leg = CallerLeg::new(cfg, ChannelId(9)).expect("Opus leg");
        let mut tally = LegTally::default();
        let allocs = leg_allocations(&mut leg, &pkts, &mut tally);
        assert_eq!(
            allocs, 0,
            "Opus caller leg ({downstream:?} downstream, passthrough {passthrough}) allocated"
        );
        assert_eq!(leg.stats().lost, 1);
        if downstream.is_none() && passthrough {
            // Both ways out were taken: forwarding and the splice encoder.
            assert!(leg.stats().forwarded > 0 && leg.stats().reencoded > 0);
        }
        assert!(tally.packets as usize >= pkts.len());
        check_tally(
            &format!("Opus leg, {downstream:?} downstream"),
            &tally.inner,
        );
    }
}

/// The counter itself works: an allocation inside the region is seen.
#[test]
fn the_counter_sees_allocations() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    TRACES.store(usize::MAX / 2, Ordering::Relaxed); // no backtrace for this deliberate one
    let n = allocations_in(|| {
        std::hint::black_box(vec![1u8; 64]);
    });
    TRACES.store(0, Ordering::Relaxed);
    assert_eq!(n, 1);
}
