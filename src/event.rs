//! Events the core emits: where tones were masked, that a digit was captured (never which),
//! capture-window progress and recording pause/resume. They are `Copy` and carry no strings,
//! so emitting one never allocates, and they cannot hold a digit value by construction.
//!
//! Must never: gain a field that can hold a key value or a card number.

use serde::Serialize;

use crate::capture::{CardBrand, CloseReason, OpenReason};
use crate::time::{ChannelId, MediaTime};

/// One event, serialised as a JSON object with an `"event"` tag.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A span of audio was replaced with silence because it held, or looked like, a tone. It
    /// covers only what was replaced: audio that had already left (a tone recognised after
    /// its first ms with little look-ahead) is not in it.
    ToneMasked {
        /// Channel the span was on.
        channel: u32,
        /// First masked instant, ms.
        start_ms: f64,
        /// End of the masked span, ms.
        end_ms: f64,
        /// First masked sample.
        start_sample: u64,
        /// One past the last masked sample.
        end_sample: u64,
    },
    /// A key press was recognised. The value went to the secure digit sink only.
    Digit {
        /// Channel.
        channel: u32,
        /// Running index of the digit on this channel, from 0.
        index: u64,
        /// Estimated start of the tone, ms.
        start_ms: f64,
        /// When the digit was declared, ms.
        declared_ms: f64,
        /// Capture window the digit belongs to, if any.
        window: Option<u32>,
        /// Where the digit came from.
        source: DigitSource,
    },
    /// A capture window opened.
    CaptureOpened {
        /// Channel.
        channel: u32,
        /// Window id, unique per channel.
        window: u32,
        /// Media time of the opening, ms.
        at_ms: f64,
        /// Media time of the opening, samples.
        at_sample: u64,
        /// Why it opened.
        reason: OpenReason,
    },
    /// Recording must stop including audio from this instant.
    RecordingPause {
        /// Channel.
        channel: u32,
        /// Window that caused it.
        window: u32,
        /// Media time, ms.
        at_ms: f64,
        /// Media time, samples (sample-accurate).
        at_sample: u64,
    },
    /// A digit was added to the open window.
    CaptureProgress {
        /// Channel.
        channel: u32,
        /// Window id.
        window: u32,
        /// Digits in the window so far.
        digit_count: u32,
        /// Luhn check of the digits so far, once there are at least 12.
        luhn_valid: Option<bool>,
        /// Card brand from the leading digits, once they decide it.
        card_brand: Option<CardBrand>,
    },
    /// A capture window closed.
    CaptureClosed {
        /// Channel.
        channel: u32,
        /// Window id.
        window: u32,
        /// Media time of the closing, ms.
        at_ms: f64,
        /// Media time of the closing, samples.
        at_sample: u64,
        /// Why it closed.
        reason: CloseReason,
        /// Digits captured.
        digit_count: u32,
        /// Luhn check over all digits (at least 12 needed).
        luhn_valid: Option<bool>,
        /// Card brand.
        card_brand: Option<CardBrand>,
    },
    /// Recording may include audio again from this instant.
    RecordingResume {
        /// Channel.
        channel: u32,
        /// Window that caused the pause.
        window: u32,
        /// Media time, ms.
        at_ms: f64,
        /// Media time, samples (sample-accurate).
        at_sample: u64,
    },
    /// Something went wrong inside the core; the affected audio was masked (fail closed).
    Fault {
        /// Channel.
        channel: u32,
        /// Media time, ms.
        at_ms: f64,
        /// What failed.
        kind: FaultKind,
    },
}

/// Where a digit was recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DigitSource {
    /// In-band tone in the audio.
    InBand,
    /// RFC 4733 telephone-event.
    TelephoneEvent,
}

/// Internal failures that made the core mask audio it could not analyse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The resampler feeding the detector failed.
    Resampler,
    /// The mask interval table overflowed; the span was merged and masked whole.
    MaskTableFull,
}

impl Event {
    /// Build the time fields of an event from a media time.
    pub(crate) fn ms(t: MediaTime) -> f64 {
        (t.as_ms() * 1000.0).round() / 1000.0
    }
}

/// A digit value on its way to the secure digit sink. No `Debug` that shows it, no
/// `Serialize`: the sink decides how to deliver it.
#[derive(Clone, Copy)]
pub struct SecureDigit {
    /// Channel it was entered on.
    pub channel: ChannelId,
    /// Capture window, if one was open.
    pub window: Option<u32>,
    /// Running index on the channel (matches the `digit` event's `index`).
    pub index: u64,
    /// The key itself.
    pub digit: crate::Redacted<crate::dtmf::Digit>,
    /// Estimated start of the tone.
    pub at: MediaTime,
}

impl core::fmt::Debug for SecureDigit {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SecureDigit")
            .field("channel", &self.channel)
            .field("window", &self.window)
            .field("index", &self.index)
            .field("digit", &self.digit)
            .finish()
    }
}

/// Where the core delivers what it produces besides audio. Implementations must not block:
/// the shells put a bounded queue behind this.
pub trait Outputs {
    /// An event with no digit value in it.
    fn event(&mut self, event: Event);
    /// A digit value: the only path one ever takes out of the core. The default discards it,
    /// which is the safe behaviour when no secure sink is configured.
    fn secure_digit(&mut self, digit: SecureDigit) {
        let _ = digit;
    }
}

/// Collects events into a vector (for the CLI and tests; allocates).
#[derive(Debug, Default)]
pub struct EventLog {
    /// Events in emission order.
    pub events: Vec<Event>,
    /// Digits delivered to the secure sink, in order.
    pub secure: Vec<SecureDigit>,
}

impl Outputs for EventLog {
    fn event(&mut self, event: Event) {
        self.events.push(event);
    }
    fn secure_digit(&mut self, digit: SecureDigit) {
        self.secure.push(digit);
    }
}
