//! One media channel end to end: decode, (resample), detect, mask in the codec's own domain,
//! and turn detector verdicts into events and secure-sink digits. The WAV CLI and the live
//! relay both drive this, so fixture tests exercise production code.
//!
//! Owns: the ordering of stages (nothing reaches the output without passing the masker), the
//! mapping from detector time to media time, and fail-closed behaviour on internal errors.
//! Must never: allocate, lock, log or make a syscall in [`ChannelPipeline::process`]; emit a
//! sample the detector has not decided on unless it is masked.

mod resample;

pub use resample::{ChunkResampler, ResampleError, ResampleSetupError};

use serde::Deserialize;

use crate::capture::{Capture, CaptureConfig};
use crate::codec::Codec;
use crate::dtmf::{Detector, DetectorConfig, DetectorEvent, Digit, MaskConfig, RATE};
use crate::event::{DigitSource, Event, FaultKind, Outputs};
use crate::mask::{DelayLine, SpanTable};
use crate::time::{ChannelId, MediaTime};

/// Largest accepted look-ahead, ms.
pub const MAX_LOOKAHEAD_MS: u32 = 40;

/// A sample type the pipeline can carry: G.711 bytes or 16-bit PCM.
pub trait Sample: Copy + Send + 'static {
    /// Decode to 16-bit linear under `codec`.
    fn to_linear(self, codec: Codec) -> i16;
    /// The replacement for a masked sample under `codec`.
    fn silence(codec: Codec) -> Self;
    /// Whether this sample type carries `codec`.
    fn carries(codec: Codec) -> bool;
}

impl Sample for u8 {
    #[inline]
    fn to_linear(self, codec: Codec) -> i16 {
        codec.decode_byte(self)
    }
    fn silence(codec: Codec) -> Self {
        codec.silence_byte()
    }
    fn carries(codec: Codec) -> bool {
        codec.is_g711()
    }
}

impl Sample for i16 {
    #[inline]
    fn to_linear(self, _: Codec) -> i16 {
        self
    }
    fn silence(_: Codec) -> Self {
        0
    }
    fn carries(codec: Codec) -> bool {
        codec == Codec::Pcm16
    }
}

/// Everything a channel needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Codec of the samples in and out.
    pub codec: Codec,
    /// Sample rate in Hz.
    pub rate: u32,
    /// Look-ahead between detection and output, 0 to 40 ms.
    pub lookahead_ms: u32,
    /// Digit-reporting thresholds.
    pub detector: DetectorConfig,
    /// Masking thresholds.
    pub mask: MaskConfig,
    /// Capture-window behaviour.
    pub capture: CaptureConfig,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            codec: Codec::Pcmu,
            rate: 8000,
            lookahead_ms: 20,
            detector: DetectorConfig::default(),
            mask: MaskConfig::default(),
            capture: CaptureConfig::default(),
        }
    }
}

/// A pipeline could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Look-ahead outside 0..=40 ms.
    #[error("lookahead_ms must be 0 to {MAX_LOOKAHEAD_MS}, got {0}")]
    Lookahead(u32),
    /// Sample rate not usable.
    #[error("unsupported sample rate {0} Hz (G.711 needs 8000; PCM 8000 to 192000)")]
    Rate(u32),
    /// The sample type does not carry the configured codec.
    #[error("codec {0:?} does not match the sample type")]
    CodecMismatch(Codec),
    /// Resampler setup failed.
    #[error(transparent)]
    Resample(#[from] ResampleSetupError),
}

/// Detector verdicts waiting to be turned into events (bounded; at most a handful arrive per
/// internal chunk).
struct Pending {
    items: [Option<DetectorEvent>; 32],
    len: usize,
    overflow: bool,
}

impl Pending {
    fn push(&mut self, ev: DetectorEvent) {
        if self.len < self.items.len() {
            self.items[self.len] = Some(ev);
            self.len += 1;
        } else {
            self.overflow = true;
        }
    }
}

/// One channel of media through detection and masking.
pub struct ChannelPipeline<T: Sample> {
    cfg: PipelineConfig,
    channel: ChannelId,
    detector: Detector,
    downsampler: Option<ChunkResampler>,
    /// Media-time offset of the detector's timeline (resampler delay), in media samples.
    det_lag: u64,
    /// Margin around masked spans on the resampled path (filter smear), media samples.
    margin: u64,
    /// Added to the margin after a span on the resampled path: a codec may let a tone fade
    /// out below what the detector still counts as a trace (Opus at 16 kbit/s left the last
    /// 7 samples of a tone at 48 kHz, at -47 dB of its energy, with 1 ms of margin alone).
    tail_extra: u64,
    delay_line: DelayLine<T>,
    spans: SpanTable,
    capture: Capture,
    lin: Vec<i16>,
    chunk: usize,
    pending: Pending,
    in_pos: u64,
    open_span: Option<(u64, u64)>,
    /// First sample of the open span that was still in the delay line when it was asked
    /// for: what the `tone_masked` event reports (audio already sent cannot be masked).
    open_out: u64,
    /// Media position up to which output has left the pipeline.
    released: u64,
    /// The most recent masked span, kept after it is reported (pause/resume align to it).
    last_span: Option<(u64, u64)>,
    fail_closed: bool,
    silence: T,
}

impl<T: Sample> ChannelPipeline<T> {
    /// Build a pipeline for `channel`. Allocates all buffers now; `process` never does.
    pub fn new(cfg: PipelineConfig, channel: ChannelId) -> Result<Self, PipelineError> {
        if cfg.lookahead_ms > MAX_LOOKAHEAD_MS {
            return Err(PipelineError::Lookahead(cfg.lookahead_ms));
        }
        if !T::carries(cfg.codec) {
            return Err(PipelineError::CodecMismatch(cfg.codec));
        }
        if (cfg.codec.is_g711() && cfg.rate != RATE) || !(8000..=192_000).contains(&cfg.rate) {
            return Err(PipelineError::Rate(cfg.rate));
        }
        let lookahead = (cfg.lookahead_ms as u64 * cfg.rate as u64 / 1000) as usize;
        let (downsampler, det_lag, margin, extra) = if cfg.rate == RATE {
            (None, 0, 0, 0)
        } else {
            let ds = ChunkResampler::new(cfg.rate)?;
            let ratio = cfg.rate as f64 / RATE as f64;
            let lag = (ds.delay_out() as f64 * ratio).round() as u64;
            let margin = (cfg.rate / 1000) as u64;
            // A decision about media sample t needs the resampler to have produced detector
            // sample t/ratio + its delay: one chunk of buffering plus the filter delay, plus
            // the smear margin.
            let extra = ds.chunk_in() + lag as usize + margin as usize;
            (Some(ds), lag, margin, extra)
        };
        let speculate = cfg.lookahead_ms < 10;
        let chunk = (cfg.rate / 50) as usize;
        let silence = T::silence(cfg.codec);
        Ok(Self {
            detector: {
                let d = Detector::new(&cfg.detector, &cfg.mask, speculate)
                    .with_lookahead(cfg.lookahead_ms as usize * RATE as usize / 1000);
                if downsampler.is_some() {
                    d.for_resampled_input()
                } else {
                    d
                }
            },
            downsampler,
            det_lag,
            margin,
            // A quarter of the margin: 0.25 ms. Nothing in the delay budget changes, since
            // the end of a span is decided before the audio after it arrives.
            tail_extra: margin / 4,
            delay_line: DelayLine::new(lookahead + extra, silence),
            spans: SpanTable::default(),
            capture: Capture::new(cfg.capture, channel, cfg.rate),
            lin: vec![0; chunk],
            chunk,
            pending: Pending {
                items: [None; 32],
                len: 0,
                overflow: false,
            },
            in_pos: 0,
            open_span: None,
            open_out: 0,
            released: 0,
            last_span: None,
            fail_closed: false,
            silence,
            cfg,
            channel,
        })
    }

    /// Samples of delay between a sample entering and leaving (look-ahead plus, on the
    /// resampled path, the resampler's own delay).
    pub fn delay(&self) -> usize {
        self.delay_line.delay()
    }

    /// Largest number of samples handled in one internal step (20 ms); longer inputs are
    /// split, shorter ones are fine.
    pub fn frames_max(&self) -> usize {
        self.chunk
    }

    /// Media time of the next input sample.
    pub fn input_time(&self) -> MediaTime {
        MediaTime::new(self.in_pos, self.cfg.rate)
    }

    /// The configuration this pipeline was built with.
    pub fn config(&self) -> &PipelineConfig {
        &self.cfg
    }

    /// Is a capture window open?
    pub fn capture_open(&self) -> bool {
        self.capture.is_open()
    }

    /// Is a tone being masked now (or waiting to be confirmed), or did the last masked span
    /// end less than `window` samples before the input position? (Loss concealment asks:
    /// extrapolating from a tone could re-create it.)
    pub fn tone_within(&self, window: u64) -> bool {
        self.open_span.is_some()
            || self.detector.tone_suspected()
            || self
                .last_span
                .is_some_and(|(_, end)| end.saturating_add(window) >= self.in_pos)
    }

    /// Position of the next sample to leave the pipeline (control inputs take effect here,
    /// so a pause covers everything not yet emitted).
    fn out_pos(&self) -> u64 {
        self.in_pos.saturating_sub(self.delay() as u64)
    }

    /// Open a capture window now (control input).
    pub fn open_capture<O: Outputs + ?Sized>(
        &mut self,
        max_digits: Option<u32>,
        terminator: Option<Option<Digit>>,
        out: &mut O,
    ) {
        let at = self.out_pos();
        self.capture.open(at, max_digits, terminator, out);
    }

    /// Close the capture window now (control input).
    pub fn close_capture<O: Outputs + ?Sized>(&mut self, out: &mut O) {
        let at = self.out_pos();
        self.capture.close(at, out);
    }

    /// A digit that arrived out of band (RFC 4733), entered like an in-band one.
    pub fn telephone_event<O: Outputs + ?Sized>(
        &mut self,
        digit: crate::Redacted<Digit>,
        onset: u64,
        end: Option<u64>,
        out: &mut O,
    ) {
        self.capture.on_digit(
            digit,
            onset,
            onset,
            self.in_pos,
            DigitSource::TelephoneEvent,
            out,
        );
        if let Some(e) = end {
            self.capture.on_digit_end(e, out);
        }
    }

    /// The out-of-band digit last entered with `end: None` ended at media sample `end`. RTP
    /// learns a key press's end only from a later packet than its start, and the digit is
    /// entered at the start so a window it opens pauses recording before the tone's time.
    pub fn telephone_event_end<O: Outputs + ?Sized>(&mut self, end: u64, out: &mut O) {
        self.capture.on_digit_end(end, out);
    }

    /// Process `input` and write the same number of samples, delayed by [`delay`](Self::delay)
    /// and masked, to `output`. Events and secure digits go to `out`.
    pub fn process<O: Outputs + ?Sized>(&mut self, input: &[T], output: &mut [T], out: &mut O) {
        let n = input.len().min(output.len());
        let mut i = 0;
        while i < n {
            let m = self.chunk.min(n - i);
            self.step(&input[i..i + m], &mut output[i..i + m], out);
            i += m;
        }
    }

    /// End of stream: drain the delay line into `output` (which must hold
    /// [`delay`](Self::delay) samples), close open digits and windows.
    pub fn finish<O: Outputs + ?Sized>(&mut self, output: &mut [T], out: &mut O) {
        let d = self.delay().min(output.len());
        let silence = [self.silence; 64];
        let mut i = 0;
        while i < d {
            let m = 64.min(d - i);
            self.step(&silence[..m], &mut output[i..i + m], out);
            i += m;
        }
        let mut pending = core::mem::replace(
            &mut self.pending,
            Pending {
                items: [None; 32],
                len: 0,
                overflow: false,
            },
        );
        self.detector.flush(&mut |ev| pending.push(ev));
        self.pending = pending;
        self.handle_pending(out);
        if let Some((a, b)) = self.open_span.take() {
            self.emit_span(a, b, out);
        }
        self.capture.finish(self.in_pos, out);
    }

    fn step<O: Outputs + ?Sized>(&mut self, input: &[T], output: &mut [T], out: &mut O) {
        let n = input.len();
        let codec = self.cfg.codec;
        for (l, &s) in self.lin[..n].iter_mut().zip(input) {
            *l = s.to_linear(codec);
        }
        // Detection.
        let pending = &mut self.pending;
        match self.downsampler.as_mut() {
            None => self
                .detector
                .process(&self.lin[..n], &mut |ev| pending.push(ev)),
            Some(ds) => {
                let det = &mut self.detector;
                // The frame goes in as several resampler chunks and is output whole: a
                // speculative mask over an inner chunk waits for the next one (see
                // `Detector::feed_f32`), and the frame end decides what is still held.
                let r = ds.push(&self.lin[..n], |y| {
                    det.feed_f32(y, &mut |ev| pending.push(ev))
                });
                det.end_of_frame(&mut |ev| pending.push(ev));
                if r.is_err() {
                    self.fail_closed = true;
                    tracing::warn!(
                        channel = self.channel.0,
                        "resampler failed; masking while a capture window is open"
                    );
                    out.event(Event::Fault {
                        channel: self.channel.0,
                        at_ms: Event::ms(MediaTime::new(self.in_pos, self.cfg.rate)),
                        kind: FaultKind::Resampler,
                    });
                }
            }
        }
        self.in_pos += n as u64;
        self.handle_pending(out);
        self.capture.tick(self.in_pos, out);

        // Output: delayed, masked.
        let out_end = self.in_pos as i64 - self.delay() as i64;
        let out_start = out_end - n as i64;
        self.released = out_end.max(0) as u64;
        self.delay_line.process(input, output);
        if out_end <= 0 {
            return;
        }
        let skip = (-out_start).max(0) as usize;
        let pos = out_start.max(0) as u64;
        let o = &mut output[skip..];
        self.spans.apply(pos, o, self.silence);
        // Anything the detector has not decided on yet is masked if a tone may be under way,
        // and always if the pipeline lost its analysis inside a capture window.
        let decided = self.to_media(self.detector.decided_until());
        let end = pos + o.len() as u64;
        if (self.detector.masking_active() && decided < end)
            || (self.fail_closed && self.capture.is_open())
        {
            let from = if self.fail_closed {
                0
            } else {
                decided.saturating_sub(pos) as usize
            };
            let from = from.min(o.len());
            o[from..].fill(self.silence);
        }
        if self.spans.take_overflow() {
            tracing::warn!(
                channel = self.channel.0,
                "mask span table full; spans merged"
            );
            out.event(Event::Fault {
                channel: self.channel.0,
                at_ms: Event::ms(MediaTime::new(pos, self.cfg.rate)),
                kind: FaultKind::MaskTableFull,
            });
        }
        self.spans.prune(end);
    }

    /// Detector time (8 kHz samples) to media time (samples at the stream rate).
    #[inline]
    fn to_media(&self, t: u64) -> u64 {
        if self.downsampler.is_none() {
            return t;
        }
        let m = (t as u128 * self.cfg.rate as u128 / RATE as u128) as u64;
        m.saturating_sub(self.det_lag)
    }

    fn to_media_f(&self, t: f64) -> u64 {
        if self.downsampler.is_none() {
            return t.max(0.0).round() as u64;
        }
        let m = t * self.cfg.rate as f64 / RATE as f64 - self.det_lag as f64;
        m.max(0.0).round() as u64
    }

    fn handle_pending<O: Outputs + ?Sized>(&mut self, out: &mut O) {
        let len = self.pending.len;
        self.pending.len = 0;
        if core::mem::take(&mut self.pending.overflow) {
            // Verdicts were lost: fail closed for everything still in the delay line.
            let from = self.out_pos();
            self.spans.add(from, self.in_pos + self.delay() as u64);
        }
        for idx in 0..len {
            let Some(ev) = self.pending.items[idx].take() else {
                continue;
            };
            match ev {
                DetectorEvent::Mask { from, to } => {
                    let a = self.to_media(from).saturating_sub(self.margin);
                    let b = self.to_media(to) + self.margin + self.tail_extra;
                    self.spans.add(a, b);
                    // With little look-ahead the start of a span may already have left.
                    let still_here = a.max(self.released);
                    match self.open_span {
                        Some((sa, sb)) if a <= sb => {
                            self.open_span = Some((sa.min(a), sb.max(b)));
                            self.open_out = self.open_out.min(still_here);
                        }
                        Some((sa, sb)) => {
                            self.emit_span(sa, sb, out);
                            self.open_span = Some((a, b));
                            self.open_out = still_here;
                        }
                        None => {
                            self.open_span = Some((a, b));
                            self.open_out = still_here;
                        }
                    }
                    self.last_span = self.open_span;
                }
                DetectorEvent::Digit { digit, onset, at } => {
                    let onset = self.to_media_f(onset);
                    let at = self.to_media(at);
                    // Recording pauses where the masked audio around the tone begins.
                    let masked_from = match self.last_span {
                        Some((a, b)) if a <= onset && onset < b => a,
                        _ => onset,
                    };
                    self.capture
                        .on_digit(digit, onset, masked_from, at, DigitSource::InBand, out);
                }
                DetectorEvent::DigitEnd { end, .. } => {
                    let end = self.to_media_f(end);
                    // ... and resumes where it ends, so the whole masked tone stays paused.
                    let end = match self.last_span {
                        Some((a, b)) if a <= end && end <= b => b,
                        _ => end,
                    };
                    self.capture.on_digit_end(end, out);
                }
            }
        }
        // A masked span is over once the detector has moved past it with no tone active.
        if let Some((a, b)) = self.open_span {
            if !self.detector.masking_active() && self.to_media(self.detector.decided_until()) > b {
                self.emit_span(a, b, out);
                self.open_span = None;
            }
        }
    }

    /// Report the open span `a..b` as masked: from the first of its samples that was still
    /// in the delay line when it was asked for (none: no event).
    fn emit_span<O: Outputs + ?Sized>(&self, a: u64, b: u64, out: &mut O) {
        let a = a.max(self.open_out);
        if a >= b {
            return;
        }
        let r = self.cfg.rate;
        out.event(Event::ToneMasked {
            channel: self.channel.0,
            start_ms: Event::ms(MediaTime::new(a, r)),
            end_ms: Event::ms(MediaTime::new(b, r)),
            start_sample: a,
            end_sample: b,
        });
    }
}
