//! The built-in recorder: `<recording_dir>/<call_id>.wav`, stereo 16-bit PCM at the caller's
//! rate (left: the masked caller, right: the downstream leg), and on close a sidecar
//! `<call_id>.json` that says where recording was paused.
//!
//! Owns: placing both sides on one timeline, honouring pause/resume, the WAV and sidecar.
//! Must never: write a sample whose caller-timeline position lies in a paused span; resample
//! (a downstream leg at another rate is left out and the sidecar says so).
//!
//! # Timeline
//!
//! File position `p` holds caller sample `p` and downstream sample `p`, both counted by
//! their `at_sample`. The caller's timeline starts at its first packet and has no gaps; the
//! call places the downstream leg on it by that leg's RTP timestamps, anchored beside the
//! caller audio that was leaving when the return audio began (`DownAnchor` in `call.rs`), so
//! a return path that stops sending while its user is silent stays in step.
//! Where a side has no audio (not started yet, a dropped frame, a shorter side) the file has
//! silence. Positions in a paused span are left out of the file altogether, so the file is
//! shorter than the call by the paused time; the sidecar maps the cuts.
//!
//! # Why a hold-back, not truncation
//!
//! A `recording_pause` can reach the recorder after frames at or past its `at_sample`: the
//! core declares it while the masker still holds look-ahead audio, an automatic window opens
//! at the first digit's onset some tens of ms in the past, and the event and the frames
//! travel in different queues. The recorder therefore keeps the newest [`HOLD_MS`] of the
//! caller timeline in memory and writes a position only once the caller has moved that far
//! past it, so a pause up to [`HOLD_MS`] late still cuts every paused sample. Truncating the
//! file instead would mean rewriting hound's header by hand after the fact, and a crash
//! between the write and the truncation would leave the paused audio on disk; holding it
//! back means it never gets there. A pause later than that (not produced by the pipeline,
//! whose lag is look-ahead plus detection, at most about 100 ms) cannot be undone: its
//! written samples are counted in `recorder_late_pause_samples` and in the sidecar.
//!
//! Pause/resume events come through their own small queue so a burst of audio can never
//! crowd one out; if one is lost anyway the recorder stops recording for the rest of the call
//! (fail closed) and the sidecar says `"control_lost": true`.
//!
//! The file is flushed (header included) every second, so a crash leaves a valid WAV with
//! at most a second and the hold-back missing. Writes are plain buffered file IO on the
//! runtime: a few hundred bytes per frame into a `BufWriter`, one small `write` per 8 KiB.

use std::collections::VecDeque;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;

use super::{AudioFrame, LogLimit, Side, SinkError, SinkStats};

/// How much of the caller timeline the recorder holds back before writing, so a late
/// pause still cuts the file.
pub const HOLD_MS: u64 = 200;
/// How far downstream audio may run ahead of the caller's newest sample and still be placed.
const DOWN_LEAD_MS: u64 = 2000;
/// Downstream frames kept while the caller's rate is not known yet (1 s of 20 ms frames).
const PENDING_DOWN: usize = 50;
/// Rate of the (empty) file when no caller audio ever arrived.
const DEFAULT_RATE: u32 = 8000;
/// Periodic flush so a crash leaves a valid file.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Pause/resume on the caller timeline, from `recording_pause` / `recording_resume`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Leave out everything from this caller sample on.
    Pause(u64),
    /// Record again from this caller sample on.
    Resume(u64),
}

/// The WAV file (created at start so a bad directory fails the call's setup, not its end)
/// and where the sidecar goes.
#[derive(Debug)]
pub(crate) struct Files {
    file: File,
    wav_path: PathBuf,
    json_path: PathBuf,
}

/// A call id usable as a file name: 1 to 128 of `A-Z a-z 0-9 . _ -`, not starting with a dot
/// (no path separators, no `..`, no hidden files).
pub fn valid_call_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Files {
    /// Create the directory if needed and the WAV file (it must not exist: an earlier
    /// recording is never overwritten).
    pub(crate) fn create(dir: &Path, call_id: &str) -> Result<Files, SinkError> {
        if !valid_call_id(call_id) {
            return Err(SinkError::BadCallId(call_id.to_string()));
        }
        std::fs::create_dir_all(dir).map_err(|source| SinkError::Recording {
            path: dir.to_path_buf(),
            source,
        })?;
        let wav_path = dir.join(format!("{call_id}.wav"));
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&wav_path)
            .map_err(|source| SinkError::Recording {
                path: wav_path.clone(),
                source,
            })?;
        Ok(Files {
            file,
            json_path: dir.join(format!("{call_id}.json")),
            wav_path,
        })
    }
}

/// One pause on the caller timeline.
#[derive(Debug, Clone)]
struct Span {
    start: u64,
    end: Option<u64>,
    /// Frames in the file before the cut, set when writing reaches `start`.
    file_offset: Option<u64>,
}

/// A pause as the sidecar lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PauseRecord {
    /// Start on the caller timeline, ms.
    pub start_ms: f64,
    /// End on the caller timeline, ms (the end of the call if it was never resumed).
    pub end_ms: f64,
    /// Start on the caller timeline, samples.
    pub start_sample: u64,
    /// End on the caller timeline, samples (exclusive).
    pub end_sample: u64,
    /// Frames in the file before the cut: where the span would have been.
    pub file_offset_samples: u64,
}

/// `<call_id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sidecar {
    /// The call.
    pub call_id: String,
    /// Sample rate of the file (the caller's).
    pub rate: u32,
    /// What the file's channels hold, left first.
    pub channels: [&'static str; 2],
    /// Paused spans, in order.
    pub pauses: Vec<PauseRecord>,
    /// Length of the call's timeline, paused time included, ms.
    pub duration_ms: f64,
    /// Frames (stereo sample pairs) in the file: the timeline less the paused spans.
    pub written_samples: u64,
    /// Rate of a downstream leg that was left out because it differs from the caller's.
    pub downstream_skipped_rate: Option<u32>,
    /// Samples of paused spans already in the file when their pause arrived (should be 0).
    pub late_pause_samples: u64,
    /// A pause/resume could not be queued; recording stopped there (fail closed).
    pub control_lost: bool,
    /// Writing the WAV failed; the file ends at the last successful flush.
    pub write_failed: bool,
}

/// Both sides on the caller timeline, pauses applied, written with a hold-back. Sans-IO:
/// it hands interleaved stereo samples to a callback.
pub(crate) struct Timeline {
    stats: Arc<SinkStats>,
    rate: Option<u32>,
    hold: u64,
    lead: usize,
    /// Every position below this has been written or skipped.
    w: u64,
    /// Caller samples from `w`.
    caller: VecDeque<i16>,
    /// Downstream samples from `w` (silence where it had none).
    down: VecDeque<i16>,
    /// Downstream frames that came before the first caller frame.
    pending: Vec<AudioFrame>,
    down_skipped_rate: Option<u32>,
    spans: Vec<Span>,
    written: u64,
    late: u64,
    control_lost: bool,
    scratch: Vec<i16>,
}

/// Interleaved frames handed to the writer at once.
const CHUNK: usize = 2048;

impl Timeline {
    pub(crate) fn new(stats: Arc<SinkStats>) -> Self {
        Self {
            stats,
            rate: None,
            hold: 0,
            lead: 0,
            w: 0,
            caller: VecDeque::new(),
            down: VecDeque::new(),
            pending: Vec::new(),
            down_skipped_rate: None,
            spans: Vec::new(),
            written: 0,
            late: 0,
            control_lost: false,
            scratch: Vec::with_capacity(2 * CHUNK),
        }
    }

    fn misaligned(&self, n: usize) {
        if n > 0 {
            self.stats
                .recorder_misaligned
                .fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    fn set_rate(&mut self, rate: u32, out: &mut impl FnMut(&[i16])) {
        self.rate = Some(rate);
        self.hold = rate as u64 * HOLD_MS / 1000;
        self.lead = (rate as u64 * DOWN_LEAD_MS / 1000) as usize;
        for f in std::mem::take(&mut self.pending) {
            self.push(&f, out);
        }
    }

    /// Add a frame; writes whatever has left the hold-back through `out`.
    pub(crate) fn push(&mut self, f: &AudioFrame, out: &mut impl FnMut(&[i16])) {
        match f.side {
            Side::Caller => self.push_caller(f, out),
            Side::Downstream => self.push_down(f),
        }
    }

    fn caller_end(&self) -> u64 {
        self.w + self.caller.len() as u64
    }

    fn push_caller(&mut self, f: &AudioFrame, out: &mut impl FnMut(&[i16])) {
        let rate = match self.rate {
            Some(r) => r,
            None => {
                self.set_rate(f.rate, out);
                f.rate
            }
        };
        let s = f.samples();
        if f.rate != rate {
            // A codec change mid-call cannot go into the same file without resampling.
            SinkStats::bump(&self.stats.recorder_errors);
            return;
        }
        let end = self.caller_end();
        // A duplicate or overlapping frame: the first copy stays.
        let skip = end.saturating_sub(f.at_sample).min(s.len() as u64) as usize;
        if skip == s.len() {
            return;
        }
        // A gap (frames dropped on the way in): silence, written out a second at a time so
        // a long one never sits in memory.
        let mut gap = f.at_sample.saturating_sub(end);
        while gap > 0 {
            let n = gap.min(rate as u64);
            self.caller.extend(std::iter::repeat_n(0, n as usize));
            gap -= n;
            self.drain_to(self.caller_end().saturating_sub(self.hold), out);
        }
        self.caller.extend(&s[skip..]);
        self.drain_to(self.caller_end().saturating_sub(self.hold), out);
    }

    fn push_down(&mut self, f: &AudioFrame) {
        let s = f.samples();
        let Some(rate) = self.rate else {
            if self.pending.len() < PENDING_DOWN {
                self.pending.push(*f);
            } else {
                self.misaligned(s.len());
            }
            return;
        };
        if f.rate != rate {
            self.down_skipped_rate = Some(f.rate);
            self.misaligned(s.len());
            return;
        }
        // Part before `w` is too late: those positions are already in the file.
        let k = self.w.saturating_sub(f.at_sample).min(s.len() as u64) as usize;
        let rel = f.at_sample.saturating_sub(self.w) as usize;
        let room = (self.caller.len() + self.lead).saturating_sub(rel);
        let n = (s.len() - k).min(room);
        self.misaligned(s.len() - n);
        if n == 0 {
            return;
        }
        if self.down.len() < rel + n {
            self.down.resize(rel + n, 0);
        }
        for (d, &x) in self.down.range_mut(rel..rel + n).zip(&s[k..k + n]) {
            *d = x;
        }
    }

    /// `recording_pause` at a caller sample. A pause while paused keeps the earlier start.
    pub(crate) fn pause(&mut self, at: u64) {
        if self.spans.last().is_some_and(|s| s.end.is_none()) {
            return;
        }
        let late = self.w.saturating_sub(at);
        let file_offset = if late > 0 {
            self.late += late;
            self.stats
                .recorder_late_pause_samples
                .fetch_add(late, Ordering::Relaxed);
            tracing::warn!(
                late_samples = late,
                "recording pause arrived after its audio was written"
            );
            Some(self.written.saturating_sub(late))
        } else {
            None
        };
        self.spans.push(Span {
            start: at,
            end: None,
            file_offset,
        });
    }

    /// `recording_resume` at a caller sample. Without an open pause it does nothing.
    pub(crate) fn resume(&mut self, at: u64) {
        if let Some(s) = self.spans.last_mut().filter(|s| s.end.is_none()) {
            s.end = Some(at.max(s.start));
        }
    }

    /// A pause/resume was lost: nothing more is written (an open pause from here to the end).
    pub(crate) fn fail_closed(&mut self) {
        if !self.control_lost {
            self.control_lost = true;
            let at = self.w;
            if let Some(s) = self.spans.last_mut().filter(|s| s.end.is_none()) {
                s.start = s.start.min(at);
            } else {
                self.spans.push(Span {
                    start: at,
                    end: None,
                    file_offset: None,
                });
            }
        }
    }

    /// Write every position below `upto` (or skip it if paused).
    fn drain_to(&mut self, upto: u64, out: &mut impl FnMut(&[i16])) {
        let mut p = self.w;
        while p < upto {
            for s in &mut self.spans {
                if s.file_offset.is_none() && s.start <= p {
                    s.file_offset = Some(self.written);
                }
            }
            let covering = self
                .spans
                .iter()
                .filter(|s| s.start <= p && s.end.is_none_or(|e| e > p))
                .map(|s| s.end.unwrap_or(u64::MAX))
                .max();
            if let Some(e) = covering {
                let n = (e.min(upto) - p) as usize;
                self.caller.drain(..n.min(self.caller.len()));
                self.down.drain(..n.min(self.down.len()));
                p += n as u64;
                continue;
            }
            let next = self
                .spans
                .iter()
                .filter(|s| s.start > p)
                .map(|s| s.start)
                .min()
                .unwrap_or(u64::MAX)
                .min(upto)
                .min(p + CHUNK as u64);
            let n = (next - p) as usize;
            self.scratch.clear();
            for _ in 0..n {
                self.scratch.push(self.caller.pop_front().unwrap_or(0));
                self.scratch.push(self.down.pop_front().unwrap_or(0));
            }
            out(&self.scratch);
            self.written += n as u64;
            p = next;
        }
        self.w = self.w.max(upto);
    }

    /// The rate the file has: the caller's, else a pending downstream leg's, else 8 kHz.
    pub(crate) fn settle_rate(&mut self, out: &mut impl FnMut(&[i16])) -> u32 {
        if let Some(r) = self.rate {
            return r;
        }
        let r = self.pending.first().map_or(DEFAULT_RATE, |f| f.rate);
        self.set_rate(r, out);
        r
    }

    /// End of the call: write everything held back, close an open pause at the end.
    pub(crate) fn finish(&mut self, out: &mut impl FnMut(&[i16])) {
        self.settle_rate(out);
        let end = self.w + self.caller.len().max(self.down.len()) as u64;
        if let Some(s) = self.spans.last_mut().filter(|s| s.end.is_none()) {
            s.end = Some(end.max(s.start));
        }
        self.drain_to(end, out);
        let written = self.written;
        for s in &mut self.spans {
            s.file_offset.get_or_insert(written);
        }
    }

    /// The sidecar as of now (after [`Timeline::finish`]).
    pub(crate) fn sidecar(&self, call_id: &str, write_failed: bool) -> Sidecar {
        let rate = self.rate.unwrap_or(DEFAULT_RATE);
        let ms = |s: u64| ((s as f64) * 1e6 / rate as f64).round() / 1000.0;
        Sidecar {
            call_id: call_id.to_string(),
            rate,
            channels: ["caller_masked", "downstream"],
            pauses: self
                .spans
                .iter()
                .map(|s| {
                    let end = s.end.unwrap_or(self.w).max(s.start);
                    PauseRecord {
                        start_ms: ms(s.start),
                        end_ms: ms(end),
                        start_sample: s.start,
                        end_sample: end,
                        file_offset_samples: s.file_offset.unwrap_or(self.written),
                    }
                })
                .collect(),
            duration_ms: ms(self.w),
            written_samples: self.written,
            downstream_skipped_rate: self.down_skipped_rate,
            late_pause_samples: self.late,
            control_lost: self.control_lost,
            write_failed,
        }
    }
}

type Writer = hound::WavWriter<BufWriter<File>>;

/// The recorder task of one call.
pub(crate) struct Recorder {
    call_id: Arc<str>,
    files: Option<Files>,
    json_path: PathBuf,
    wav_path: PathBuf,
    stats: Arc<SinkStats>,
    control_lost: Arc<AtomicBool>,
    writer: Option<Writer>,
    failed: bool,
    log: LogLimit,
}

impl Recorder {
    pub(crate) fn new(
        call_id: Arc<str>,
        files: Files,
        stats: Arc<SinkStats>,
        control_lost: Arc<AtomicBool>,
    ) -> Self {
        Self {
            call_id,
            json_path: files.json_path.clone(),
            wav_path: files.wav_path.clone(),
            files: Some(files),
            stats,
            control_lost,
            writer: None,
            failed: false,
            log: LogLimit::new(Duration::from_secs(10)),
        }
    }

    /// Create the WAV writer on the file opened at start, once the rate is known.
    fn open(&mut self, rate: u32) {
        let Some(files) = self.files.take() else {
            return;
        };
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        match hound::WavWriter::new(BufWriter::new(files.file), spec) {
            Ok(w) => self.writer = Some(w),
            Err(e) => self.fail(&e),
        }
    }

    fn fail(&mut self, e: &hound::Error) {
        SinkStats::bump(&self.stats.recorder_errors);
        self.failed = true;
        self.writer = None;
        if self.log.allow().is_some() {
            tracing::warn!(call_id = %self.call_id, error = %e, "recording failed; file ends at the last flush");
        }
    }

    fn write(&mut self, s: &[i16]) {
        if let Some(w) = &mut self.writer {
            let r = s.iter().try_for_each(|&x| w.write_sample(x));
            if let Err(e) = r {
                self.fail(&e);
            }
        }
    }

    fn flush(&mut self) {
        if let Some(w) = &mut self.writer {
            if let Err(e) = w.flush() {
                self.fail(&e);
            }
        }
    }

    fn frame(&mut self, tl: &mut Timeline, f: &AudioFrame) {
        if self.control_lost.load(Ordering::Acquire) {
            tl.fail_closed();
        }
        if f.side == Side::Caller && self.files.is_some() {
            // The first caller frame sets the file's rate.
            self.open(f.rate);
        }
        tl.push(f, &mut |s| self.write(s));
    }

    /// Run until the frame queue is closed and empty, then finalize the WAV and write the
    /// sidecar.
    pub(crate) async fn run(
        mut self,
        mut frames: mpsc::Receiver<AudioFrame>,
        mut control: mpsc::Receiver<Control>,
    ) {
        let mut tl = Timeline::new(self.stats.clone());
        let apply = |tl: &mut Timeline, c: Control| match c {
            Control::Pause(at) => tl.pause(at),
            Control::Resume(at) => tl.resume(at),
        };
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut control_open = true;
        loop {
            tokio::select! {
                biased;
                c = control.recv(), if control_open => match c {
                    Some(c) => apply(&mut tl, c),
                    None => control_open = false,
                },
                f = frames.recv() => match f {
                    Some(f) => {
                        // A pause queued before this frame was sent may have landed after
                        // the control branch was polled; take it first.
                        while let Ok(c) = control.try_recv() {
                            apply(&mut tl, c);
                        }
                        self.frame(&mut tl, &f);
                    }
                    None => break,
                },
                _ = tick.tick() => self.flush(),
            }
        }
        while let Ok(c) = control.try_recv() {
            apply(&mut tl, c);
        }
        if self.control_lost.load(Ordering::Acquire) {
            tl.fail_closed();
        }
        if self.files.is_some() {
            let rate = tl.settle_rate(&mut |_| {});
            self.open(rate);
        }
        tl.finish(&mut |s| self.write(s));
        if let Some(w) = self.writer.take() {
            if let Err(e) = w.finalize() {
                self.fail(&e);
            }
        }
        let sidecar = tl.sidecar(&self.call_id, self.failed);
        if let Err(e) = write_sidecar(&self.json_path, &sidecar) {
            SinkStats::bump(&self.stats.recorder_errors);
            tracing::warn!(call_id = %self.call_id, error = %e, "recording sidecar not written");
        }
        tracing::debug!(
            call_id = %self.call_id,
            path = %self.wav_path.display(),
            written_samples = sidecar.written_samples,
            pauses = sidecar.pauses.len(),
            "recording finished"
        );
    }
}

/// Write the sidecar next to the WAV, atomically (temp file, then rename).
fn write_sidecar(path: &Path, s: &Sidecar) -> std::io::Result<()> {
    let body = serde_json::to_vec_pretty(s).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, body)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::sinks::MAX_FRAME;

    fn frame(side: Side, rate: u32, at: u64, v: i16, len: usize) -> AudioFrame {
        let mut f = AudioFrame {
            side,
            rate,
            at_sample: at,
            len: len as u16,
            samples: [0; MAX_FRAME],
        };
        f.samples[..len].fill(v);
        f
    }

    /// Feed frames, return the interleaved output.
    fn run(tl: &mut Timeline, frames: &[AudioFrame], ctl: &[(usize, Control)]) -> Vec<i16> {
        let mut out = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            for (_, c) in ctl.iter().filter(|(j, _)| *j == i) {
                match *c {
                    Control::Pause(a) => tl.pause(a),
                    Control::Resume(a) => tl.resume(a),
                }
            }
            tl.push(f, &mut |s| out.extend_from_slice(s));
        }
        tl.finish(&mut |s| out.extend_from_slice(s));
        out
    }

    #[test]
    fn late_pause_within_hold_back_cuts_exactly() {
        let stats = Arc::new(SinkStats::default());
        let mut tl = Timeline::new(stats.clone());
        // 1 s of caller audio at 8 kHz in 20 ms frames; value = frame index + 1.
        let frames: Vec<_> = (0..50)
            .map(|i| frame(Side::Caller, 8000, i * 160, i as i16 + 1, 160))
            .collect();
        // Pause at frame 20 (sample 3200) arrives when frame 25 is being pushed; resume at
        // frame 30 arrives with frame 31.
        let out = run(
            &mut tl,
            &frames,
            &[(25, Control::Pause(3200)), (31, Control::Resume(4800))],
        );
        assert_eq!(out.len(), 2 * (8000 - 1600));
        let left: Vec<i16> = out.iter().step_by(2).copied().collect();
        assert!(!left.iter().any(|&v| (21..=30).contains(&v)));
        assert_eq!(left[3199], 20);
        assert_eq!(left[3200], 31);
        assert!(out.iter().skip(1).step_by(2).all(|&v| v == 0));
        let sc = tl.sidecar("c", false);
        assert_eq!(sc.written_samples, 6400);
        assert_eq!(sc.duration_ms, 1000.0);
        assert_eq!(
            sc.pauses,
            vec![PauseRecord {
                start_ms: 400.0,
                end_ms: 600.0,
                start_sample: 3200,
                end_sample: 4800,
                file_offset_samples: 3200
            }]
        );
        assert_eq!(stats.recorder_late_pause_samples.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn downstream_aligned_and_open_pause_ends_at_call_end() {
        let stats = Arc::new(SinkStats::default());
        let mut tl = Timeline::new(stats.clone());
        let mut frames = Vec::new();
        // Downstream starts first (pending), at its own sample 0, value 7.
        frames.push(frame(Side::Downstream, 8000, 0, 7, 160));
        for i in 0..10u64 {
            frames.push(frame(Side::Caller, 8000, i * 160, 1, 160));
        }
        frames.push(frame(Side::Downstream, 8000, 160, 8, 160));
        // A downstream leg at another rate is skipped.
        frames.push(frame(Side::Downstream, 16000, 320, 9, 320));
        let out = run(&mut tl, &frames, &[(5, Control::Pause(1200))]);
        assert_eq!(out.len(), 2 * 1200);
        assert!(out[..320].chunks(2).all(|c| c == [1, 7]));
        assert!(out[320..640].chunks(2).all(|c| c == [1, 8]));
        assert!(out[640..].chunks(2).all(|c| c == [1, 0]));
        let sc = tl.sidecar("c", false);
        assert_eq!(sc.pauses[0].end_sample, 1600);
        assert_eq!(sc.pauses[0].file_offset_samples, 1200);
        assert_eq!(sc.downstream_skipped_rate, Some(16000));
        assert_eq!(stats.recorder_misaligned.load(Ordering::Relaxed), 320);
    }

    #[test]
    fn gaps_are_silence_and_duplicates_ignored() {
        let stats = Arc::new(SinkStats::default());
        let mut tl = Timeline::new(stats);
        let frames = [
            frame(Side::Caller, 8000, 0, 1, 160),
            frame(Side::Caller, 8000, 0, 2, 160),
            frame(Side::Caller, 8000, 480, 3, 160),
        ];
        let out = run(&mut tl, &frames, &[]);
        let left: Vec<i16> = out.iter().step_by(2).copied().collect();
        assert_eq!(left.len(), 640);
        assert!(left[..160].iter().all(|&v| v == 1));
        assert!(left[160..480].iter().all(|&v| v == 0));
        assert!(left[480..].iter().all(|&v| v == 3));
    }

    #[test]
    fn lost_control_stops_recording() {
        let stats = Arc::new(SinkStats::default());
        let mut tl = Timeline::new(stats);
        let mut out = Vec::new();
        for i in 0..30u64 {
            if i == 20 {
                tl.fail_closed();
            }
            tl.push(&frame(Side::Caller, 8000, i * 160, 1, 160), &mut |s| {
                out.extend_from_slice(s)
            });
        }
        tl.finish(&mut |s| out.extend_from_slice(s));
        // Written before the loss: everything up to the hold-back frontier at that time.
        assert_eq!(out.len() / 2, 20 * 160 - 1600);
        assert!(tl.sidecar("c", false).control_lost);
    }

    #[test]
    fn call_ids() {
        assert!(valid_call_id("abc-123_X.y"));
        for bad in ["", ".x", "../x", "a/b", "a b", &"x".repeat(129)] {
            assert!(!valid_call_id(bad), "{bad}");
        }
    }
}
