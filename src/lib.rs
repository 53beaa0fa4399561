//! tonewall: a real-time audio media gateway that removes DTMF key tones from calls before
//! the audio reaches recorders, speech-to-text or anything else downstream.
//!
//! This crate's core is sans-IO: media frames and control inputs go in, masked frames and
//! events come out, and time is always an argument. It never opens sockets, spawns threads
//! or reads clocks, and it builds with `--no-default-features` (no tokio, no CLI).
//!
//! * [`codec`]: G.711 and what silence is in each codec.
//! * [`dtmf`]: Goertzel bank, strict digit reporter, weak tone test.
//! * [`mask`]: the look-ahead delay line that replaces tones with silence.
//! * [`capture`]: capture windows, recording pause/resume, card-number progress.
//! * [`pipeline`]: one channel end to end (decode, resample, detect, mask, events).
//! * [`rtp`]: the caller's RTP leg (sequencing, loss, RFC 4733 events) around a pipeline.
//! * [`wav`]: reading and writing WAV files for the CLI and fixtures.
//! * [`signal`]: standard test signals (for tests, benches and fixtures only).
//!
//! # Example
//!
//! Mask a key press in a mu-law stream, 20 ms at a time, and collect what comes out:
//!
//! ```
//! use tonewall::codec::linear_to_ulaw;
//! use tonewall::dtmf::Digit;
//! use tonewall::event::{Event, EventLog};
//! use tonewall::pipeline::{ChannelPipeline, PipelineConfig};
//! use tonewall::signal::{add_dtmf, to_i16, Rng, ToneSpec};
//! use tonewall::time::ChannelId;
//!
//! // One second of silence with a 60 ms '7' at 0.5 s, as PCMU.
//! let mut x = vec![0.0; 8000];
//! let seven = Digit::from_char('7').unwrap();
//! add_dtmf(&mut x, 8000, 4000, 480, seven, ToneSpec::level(-6.0), &mut Rng::new(1));
//! let pcmu: Vec<u8> = to_i16(&x).into_iter().map(linear_to_ulaw).collect();
//!
//! let mut ch = ChannelPipeline::<u8>::new(PipelineConfig::default(), ChannelId(0)).unwrap();
//! let mut sinks = EventLog::default();
//! let mut out = vec![0u8; pcmu.len()];
//! for (i, o) in pcmu.chunks(160).zip(out.chunks_mut(160)) {
//!     ch.process(i, o, &mut sinks);
//! }
//! let mut tail = vec![0u8; ch.delay()];
//! ch.finish(&mut tail, &mut sinks);
//!
//! // The output is the input delayed by `delay()`; the tone became mu-law silence (0xFF).
//! out.extend(tail);
//! let y = &out[ch.delay()..];
//! assert!(y[4000..4480].iter().all(|&b| b == 0xFF));
//! // Events say where, never what; the value went to the secure sink only.
//! assert!(sinks.events.iter().any(|e| matches!(e, Event::ToneMasked { .. })));
//! assert_eq!(sinks.secure[0].digit.expose().to_char(), '7');
//! ```

// `unsafe` is denied everywhere but in `serve::sys` (Linux system calls std does not
// wrap), which allows it for its libc calls alone, and one call in `dtmf::bank` (the
// Goertzel recurrences compiled for AVX, entered only once the CPU was seen to have it).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod capture;
pub mod codec;
pub mod dtmf;
pub mod event;
pub mod mask;
pub mod pipeline;
pub mod redact;
pub mod rtp;
#[cfg(feature = "serve")]
pub mod serve;
pub mod signal;
pub mod time;
pub mod wav;

pub use redact::Redacted;
