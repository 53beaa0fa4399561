//! The live gateway: tokio shells that own sockets, timers, HTTP and sinks and drive the
//! sans-IO core. Built only with the `serve` feature.
//!
//! Owns: everything with IO in it.
//! Must never: decide anything about tones itself (the core does), or let audio reach a sink
//! or the downstream leg without passing the masker.

pub mod events;
pub mod sinks;
