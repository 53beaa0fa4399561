//! RTP for the caller leg (G.711, L16 and Opus), sans-IO: datagrams and the time go in, masked RTP packets, linear
//! audio for the sinks, events and secure digits come out. No sockets, no timers, no clock
//! reads; the tokio shell owns those and drives [`CallerLeg`].
//!
//! Owns: parsing and writing RTP (through `rtp-types`), RFC 4733 telephone-events, the input
//! stream's sequencing (loss, reordering, duplicates, SSRC changes, timestamp jumps) and the
//! output stream's numbering.
//! Must never: forward a telephone-event or any audio that did not pass the masker; leave a
//! hole in the output's sequence numbers or timestamps; allocate on the media path; show a
//! digit value in `Debug`, `Display`, errors or logs; panic on what arrives from the network.
//!
//! The RTP header is parsed and written with `rtp-types` (by GStreamer's maintainers): a
//! zero-copy parser over `&[u8]` and a builder that writes into a caller's `&mut [u8]`, with
//! no async, `bytes` or allocation in its path (its only dependencies are `smallvec` and
//! `thiserror`). webrtc-rs's `rtp` crate was the alternative; it is built on `bytes`, parses
//! into owned `Bytes` buffers and comes with webrtc-rs's support crates: a stack the sans-IO
//! core (built with `--no-default-features`) has no use for. Only the 4-byte RFC 4733
//! payload is parsed by hand, in [`telephone_event`], with a fuzz test.

// Only Opus constructs a frame stage today.
#[cfg_attr(not(feature = "opus"), allow(dead_code))]
mod frames;
mod leg;
pub mod reception;
pub mod reorder;
pub mod rtcp;
#[cfg_attr(not(feature = "opus"), allow(dead_code))]
mod splice;
pub mod telephone_event;

pub use leg::{
    CallerLeg, LegConfig, LegError, LegOutputs, LegStats, StreamEvent, CONCEAL_GUARD_MS,
    EVENT_EXPIRY_MS, EVENT_FORGET_MS, EVENT_HANGOVER_MS, MAX_FILL_MS, MAX_PACKET_MS,
    MAX_REORDER_WINDOW, MAX_TS_JUMP_S,
};
pub use splice::{SpliceStats, SETTLE_PACKETS};
pub use telephone_event::{TelephoneEvent, TelephoneEventError};
