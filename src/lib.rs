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
//! * [`wav`]: reading and writing WAV files for the CLI and fixtures.
//! * [`signal`]: standard test signals (for tests, benches and fixtures only).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod capture;
pub mod codec;
pub mod dtmf;
pub mod event;
pub mod mask;
pub mod pipeline;
pub mod redact;
pub mod signal;
pub mod time;
pub mod wav;

pub use redact::Redacted;
