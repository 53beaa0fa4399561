//! The command-line front end: `tonewall detect` and `tonewall mask` over WAV files. It
//! drives the same core as the live relay, one [`ChannelPipeline`] per channel.
//!
//! Owns: argument handling, file I/O and the one-line errors users see (exit code 2).
//! Must never: print a digit value outside `detect` (a diagnostic over the user's own file)
//! and the explicitly requested `--secure-digits` file; panic on bad input.

#[cfg(feature = "serve")]
mod serve;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use serde::Serialize;

use tonewall::codec::Codec;
use tonewall::dtmf::{Detector, DetectorEvent, RATE};
use tonewall::event::{Event, Outputs, SecureDigit};
use tonewall::pipeline::{ChannelPipeline, ChunkResampler, PipelineConfig, Sample};
use tonewall::time::ChannelId;
use tonewall::wav::{Wav, WavData};

/// tonewall: removes DTMF key tones from call audio before it reaches recorders, STT or logs.
#[derive(Parser, Debug)]
#[command(name = "tonewall", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the DTMF digits in a WAV file as JSON lines (shows digit values: a diagnostic for
    /// your own recordings).
    Detect {
        /// Input WAV (16-bit PCM at any rate, mu-law or A-law; any channel count).
        input: PathBuf,
        /// JSON file with `detector` thresholds (see README).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Write a copy of a WAV file with every DTMF tone replaced by silence.
    Mask {
        /// Input WAV.
        input: PathBuf,
        /// Output WAV (same format, rate and channel count as the input).
        #[arg(short, long)]
        output: PathBuf,
        /// Write events (tone_masked, digit, recording_pause, ...) as JSON lines here.
        #[arg(long)]
        events: Option<PathBuf>,
        /// Look-ahead in ms between detection and output (0 to 40).
        #[arg(long, default_value_t = 20)]
        lookahead_ms: u32,
        /// Deliver captured digit values as JSON lines to this file (the secure digit sink).
        /// Without it, values are discarded.
        #[arg(long)]
        secure_digits: Option<PathBuf>,
        /// JSON file with pipeline settings (`detector`, `mask`, `capture`; see README).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the live gateway: control API, RTP relay, sinks (see `tonewall.example.toml`).
    #[cfg(feature = "serve")]
    Serve(serve::ServeArgs),
    /// Drive N concurrent real-time PCMU calls with DTMF through a running gateway and
    /// report CPU per call-second, loss and added latency (JSON on stdout).
    #[cfg(feature = "serve")]
    Loadgen(serve::LoadgenArgs),
}

/// A user-facing failure: one line on stderr, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CliError(String);

fn fail(path: &Path, what: impl std::fmt::Display) -> CliError {
    CliError(format!("{}: {what}", path.display()))
}

/// Run the CLI.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        #[cfg(feature = "serve")]
        Command::Serve(args) => serve::serve(args),
        #[cfg(feature = "serve")]
        Command::Loadgen(args) => serve::loadgen(args),
        Command::Detect { input, config } => detect(&input, config.as_deref()),
        Command::Mask {
            input,
            output,
            events,
            lookahead_ms,
            secure_digits,
            config,
        } => mask(
            &input,
            &output,
            events.as_deref(),
            lookahead_ms,
            secure_digits.as_deref(),
            config.as_deref(),
        ),
    }
}

fn read_wav(path: &Path) -> Result<Wav, CliError> {
    let bytes = fs::read(path).map_err(|e| fail(path, e))?;
    Wav::parse(&bytes).map_err(|e| fail(path, e))
}

fn load_config(path: Option<&Path>) -> Result<PipelineConfig, CliError> {
    let Some(path) = path else {
        return Ok(PipelineConfig::default());
    };
    let text = fs::read_to_string(path).map_err(|e| fail(path, e))?;
    serde_json::from_str(&text).map_err(|e| fail(path, format!("invalid config: {e}")))
}

#[derive(Serialize)]
struct DetectLine {
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<u16>,
    digit: String,
    start_ms: f64,
    end_ms: f64,
}

fn round_ms(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn detect(input: &Path, config: Option<&Path>) -> Result<(), CliError> {
    let wav = read_wav(input)?;
    let cfg = load_config(config)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for ch in 0..wav.channels as usize {
        let x = wav.channel_linear(ch);
        let mut det = Detector::new(&cfg.detector, &cfg.mask, false);
        // Detector time (8 kHz) to media ms, through the resampler's delay where there is one.
        let (mut ds, lag) = if wav.rate == RATE {
            (None, 0.0)
        } else {
            let ds = ChunkResampler::new(wav.rate).map_err(|e| fail(input, e))?;
            let lag = ds.delay_out() as f64;
            (Some(ds), lag)
        };
        let to_ms = |t: f64| round_ms(((t - lag) / RATE as f64 * 1000.0).max(0.0));
        let mut lines: Vec<DetectLine> = Vec::new();
        let mut on = |ev: DetectorEvent| {
            if let DetectorEvent::DigitEnd { digit, onset, end } = ev {
                lines.push(DetectLine {
                    channel: (wav.channels > 1).then_some(ch as u16),
                    digit: digit.expose().to_char().to_string(),
                    start_ms: to_ms(onset),
                    end_ms: to_ms(end),
                });
            }
        };
        match ds.as_mut() {
            None => det.process(&x, &mut on),
            Some(ds) => {
                // Pad with the resampler's latency so a tone at the very end is seen.
                let pad = vec![0i16; ds.chunk_in() * 2 + wav.rate as usize / 50];
                for part in [&x[..], &pad[..]] {
                    ds.push(part, |y| det.process_f32(y, &mut on))
                        .map_err(|_| fail(input, "resampler failed"))?;
                }
            }
        }
        det.flush(&mut on);
        for l in lines {
            let s = serde_json::to_string(&l).map_err(|e| fail(input, e))?;
            writeln!(out, "{s}").map_err(|e| CliError(format!("stdout: {e}")))?;
        }
    }
    Ok(())
}

/// Collects events and, if asked, digit values for the secure-digits file.
struct FileOutputs {
    events: Vec<Event>,
    secure: Option<Vec<SecureDigit>>,
}

impl Outputs for FileOutputs {
    fn event(&mut self, event: Event) {
        self.events.push(event);
    }
    fn secure_digit(&mut self, digit: SecureDigit) {
        if let Some(s) = self.secure.as_mut() {
            s.push(digit);
        }
    }
}

fn run_channel<T: Sample + Default>(
    cfg: PipelineConfig,
    ch: u16,
    x: Vec<T>,
    outs: &mut FileOutputs,
) -> Result<Vec<T>, String> {
    let mut p = ChannelPipeline::<T>::new(cfg, ChannelId(ch as u32)).map_err(|e| e.to_string())?;
    let frame = p.frames_max();
    let mut y = vec![T::default(); x.len() + p.delay()];
    for (i, o) in x.chunks(frame).zip(y.chunks_mut(frame)) {
        p.process(i, &mut o[..i.len()], outs);
    }
    let d = p.delay();
    let n = x.len();
    p.finish(&mut y[n..n + d], outs);
    y.drain(..d);
    Ok(y)
}

/// Write each file under a temporary name next to it, then rename them all into place; on
/// any failure remove what was written.
fn write_all_or_none(files: &[(&Path, Vec<u8>)]) -> Result<(), CliError> {
    let tmp = |p: &Path| {
        let mut name = p.as_os_str().to_owned();
        name.push(".tonewall-tmp");
        PathBuf::from(name)
    };
    let mut written: Vec<PathBuf> = Vec::new();
    for (path, bytes) in files {
        let t = tmp(path);
        if let Err(e) = fs::write(&t, bytes) {
            written.iter().for_each(|w| drop(fs::remove_file(w)));
            return Err(fail(path, e));
        }
        written.push(t);
    }
    for (path, _) in files {
        if let Err(e) = fs::rename(tmp(path), path) {
            written.iter().for_each(|w| drop(fs::remove_file(w)));
            return Err(fail(path, e));
        }
    }
    Ok(())
}

fn deinterleave<T: Copy>(v: &[T], channels: usize, ch: usize) -> Vec<T> {
    v.iter().skip(ch).step_by(channels).copied().collect()
}

fn interleave<T: Copy + Default>(chs: &[Vec<T>]) -> Vec<T> {
    let n = chs.first().map_or(0, Vec::len);
    let mut out = vec![T::default(); n * chs.len()];
    for (c, v) in chs.iter().enumerate() {
        for (i, &s) in v.iter().enumerate() {
            out[i * chs.len() + c] = s;
        }
    }
    out
}

fn mask(
    input: &Path,
    output: &Path,
    events: Option<&Path>,
    lookahead_ms: u32,
    secure: Option<&Path>,
    config: Option<&Path>,
) -> Result<(), CliError> {
    let wav = read_wav(input)?;
    let mut cfg = load_config(config)?;
    cfg.codec = wav.format.codec();
    cfg.rate = wav.rate;
    cfg.lookahead_ms = lookahead_ms;
    let mut outs = FileOutputs {
        events: Vec::new(),
        secure: secure.map(|_| Vec::new()),
    };
    let channels = wav.channels as usize;
    let data = match &wav.data {
        WavData::Pcm16(v) => {
            let mut chs = Vec::new();
            for ch in 0..channels {
                let x = deinterleave(v, channels, ch);
                chs.push(run_channel(cfg, ch as u16, x, &mut outs).map_err(|e| fail(input, e))?);
            }
            WavData::Pcm16(interleave(&chs))
        }
        WavData::G711(v) => {
            if cfg.codec == Codec::Pcm16 {
                return Err(fail(input, "internal: byte data for PCM16"));
            }
            let mut chs = Vec::new();
            for ch in 0..channels {
                let x = deinterleave(v, channels, ch);
                chs.push(run_channel(cfg, ch as u16, x, &mut outs).map_err(|e| fail(input, e))?);
            }
            WavData::G711(interleave(&chs))
        }
    };
    let out_wav = Wav { data, ..wav };
    // Render everything first and write all files or none: a user never finds a masked WAV
    // next to a missing events file and wonders which run it came from.
    let mut files: Vec<(&Path, Vec<u8>)> = vec![(output, out_wav.to_bytes())];
    if let Some(path) = events {
        let mut s = String::new();
        for e in &outs.events {
            s += &serde_json::to_string(e).map_err(|e| fail(path, e))?;
            s.push('\n');
        }
        files.push((path, s.into_bytes()));
    }
    if let (Some(path), Some(digits)) = (secure, outs.secure.as_ref()) {
        let mut s = String::new();
        for d in digits {
            let line = serde_json::json!({
                "channel": d.channel.0,
                "window": d.window,
                "index": d.index,
                "digit": d.digit.expose().to_char().to_string(),
                "start_ms": round_ms(d.at.as_ms()),
            });
            s += &line.to_string();
            s.push('\n');
        }
        files.push((path, s.into_bytes()));
    }
    write_all_or_none(&files)?;
    let count = |f: fn(&Event) -> bool| outs.events.iter().filter(|e| f(e)).count();
    eprintln!(
        "tonewall: {} -> {}: {} tone spans masked, {} digits captured (values withheld), {} capture windows, look-ahead {} ms",
        input.display(),
        output.display(),
        count(|e| matches!(e, Event::ToneMasked { .. })),
        count(|e| matches!(e, Event::Digit { .. })),
        count(|e| matches!(e, Event::CaptureOpened { .. })),
        lookahead_ms
    );
    Ok(())
}
