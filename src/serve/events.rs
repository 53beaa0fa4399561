//! The event envelope every consumer outside the core sees (SSE stream, webhooks, recorder
//! control): the core's [`Event`] or a call-level event, stamped with the call id, a per-call
//! sequence number and the wall-clock time it was emitted.
//!
//! Owns: the JSON shape of events on the wire.
//! Must never: carry a digit value; every field is a count, a time, an id or an enum.

use std::sync::Arc;

use serde::Serialize;

use crate::event::Event;

/// One event of one call, as serialised to webhooks and the event stream.
#[derive(Debug, Clone, Serialize)]
pub struct EventEnvelope {
    /// The call it belongs to.
    pub call_id: Arc<str>,
    /// Per-call sequence number, from 0, without gaps.
    pub seq: u64,
    /// Wall-clock time of emission, ms since the Unix epoch.
    pub unix_ms: u64,
    /// The event itself (its `"event"` tag names the kind).
    #[serde(flatten)]
    pub body: EventBody,
}

/// A core event or a call-level one.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(untagged)]
pub enum EventBody {
    /// From the masking core (tone masked, digit, capture window, recording pause/resume).
    Core(Event),
    /// About the call as a whole.
    Call(CallEvent),
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// `DELETE /v1/calls/{id}`.
    Api,
    /// No media from the caller for the configured timeout (caller hung up or went away).
    MediaTimeout,
    /// The server is shutting down.
    Shutdown,
    /// The caller's WebRTC session ended (WHIP `DELETE`, or the peer connection closed or
    /// failed).
    PeerClosed,
}

/// Call-level events.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum CallEvent {
    /// The call was created and its ports are listening.
    CallStarted {
        /// Local RTP port for the caller.
        caller_port: u16,
        /// Local RTP port facing downstream.
        downstream_port: u16,
    },
    /// The first packet from the caller arrived (symmetric RTP latched here).
    MediaStarted,
    /// The caller's SSRC changed mid-call; the stream continued.
    SsrcChanged,
    /// The caller's stream moved to another source address (NAT rebinding) and the call
    /// latched there.
    CallerMoved,
    /// The call ended; all sinks were flushed.
    CallEnded {
        /// Why.
        reason: EndReason,
        /// Packets received from the caller.
        caller_packets: u64,
        /// Packets sent downstream.
        downstream_packets: u64,
        /// Caller packets lost (concealed with silence).
        lost: u64,
    },
}
