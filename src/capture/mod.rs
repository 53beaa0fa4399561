//! Capture windows: the spans during which a caller types card data. Owns when a window
//! opens and closes, the `recording_pause`/`recording_resume` events with sample-accurate
//! times, card-number progress, and the hand-off of digit values to the secure sink.
//!
//! Must never: put a digit value in an event, a log line or an error; keep digits after the
//! window closes (they are wiped), or the last key longer than the quarter second needed to
//! recognise a second report of it; allocate per digit.

mod card;

pub use card::{brand, luhn_valid, CardBrand};

use serde::{Deserialize, Serialize};

use crate::dtmf::Digit;
use crate::event::{DigitSource, Event, Outputs, SecureDigit};
use crate::redact::Redacted;
use crate::time::{ChannelId, MediaTime};

/// Most digits one window holds (longest PAN is 19; leave room for expiry/CVV in one window).
pub const MAX_WINDOW_DIGITS: usize = 32;

/// Why a window opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpenReason {
    /// The control API (agent, bot or IVR) asked for it.
    Explicit,
    /// The first digit after an idle period opened it.
    Automatic,
}

/// Why a window closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// The control API closed it.
    Explicit,
    /// The expected number of digits arrived.
    DigitCount,
    /// The terminator key was pressed.
    Terminator,
    /// No digit for the idle timeout.
    IdleTimeout,
    /// The media stream ended with the window open (caller hung up mid-entry).
    StreamEnded,
}

/// How capture windows behave on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureConfig {
    /// Open a window on the first digit after `auto_open_idle_ms` without digits.
    pub auto_open: bool,
    /// Quiet time (no digits) before a digit may open a window automatically, ms.
    pub auto_open_idle_ms: u32,
    /// Close an open window after this long without a digit, ms.
    pub idle_timeout_ms: u32,
    /// Close after this many digits (0: no limit) unless the open call says otherwise.
    pub max_digits: u32,
    /// Close on this key (e.g. `#`) unless the open call says otherwise; the key itself is
    /// not counted as a card digit.
    #[serde(with = "opt_key")]
    pub terminator: Option<Digit>,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            auto_open: true,
            auto_open_idle_ms: 0,
            idle_timeout_ms: 4000,
            max_digits: 0,
            terminator: Digit::from_char('#'),
        }
    }
}

mod opt_key {
    use crate::dtmf::Digit;
    use serde::{Deserialize, Deserializer};
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Digit>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        match s.as_deref() {
            None | Some("") => Ok(None),
            Some(k) if k.chars().count() == 1 => Digit::from_char(k.chars().next().unwrap())
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom("terminator must be a DTMF key")),
            Some(_) => Err(serde::de::Error::custom("terminator must be one key")),
        }
    }
}

#[derive(Clone, Copy)]
struct Window {
    id: u32,
    digits: [u8; MAX_WINDOW_DIGITS],
    count: usize,
    max_digits: u32,
    terminator: Option<Digit>,
    last_activity: u64,
    closing: Option<CloseReason>,
}

/// Capture-window state for one channel.
pub struct Capture {
    cfg: CaptureConfig,
    channel: ChannelId,
    rate: u32,
    open: Option<Window>,
    next_id: u32,
    digits_seen: u64,
    last_digit_end: Option<u64>,
    /// The last key entered: its value (never shown), where it was recognised and its onset,
    /// so the same press arriving from the other source is entered once.
    last_key: Option<(Redacted<Digit>, DigitSource, u64)>,
}

/// Two reports of the same key from different sources (in-band and RFC 4733) whose onsets lie
/// this close are one key press: a key cannot be pressed twice within 80 ms (40 ms on, 40 ms
/// off, BRIEF 2.1), while a sender that forwards the tone and also converts it to
/// telephone-events does so after its own detector's 25 to 40 ms, and an event packet can
/// arrive a packet or two after the tone began.
const SAME_PRESS_MS: u32 = 60;
/// How long past its onset the last key is kept for that comparison: [`SAME_PRESS_MS`] plus
/// the latest a report arrives after its onset (the in-band detector declares within 40 ms;
/// a reordered or late event packet within the leg's 30 ms reorder wait), with room to spare.
const LAST_KEY_KEEP_MS: u32 = 250;

impl Capture {
    /// Capture state for `channel`, whose media time counts at `rate` Hz.
    pub fn new(cfg: CaptureConfig, channel: ChannelId, rate: u32) -> Self {
        Self {
            cfg,
            channel,
            rate,
            open: None,
            next_id: 0,
            digits_seen: 0,
            last_digit_end: None,
            last_key: None,
        }
    }

    /// Is a window open?
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    fn samples(&self, ms: u32) -> u64 {
        ms as u64 * self.rate as u64 / 1000
    }

    fn t(&self, sample: u64) -> MediaTime {
        MediaTime::new(sample, self.rate)
    }

    /// Open a window now (explicit control input). `max_digits`/`terminator` override the
    /// channel's defaults for this window. No-op if one is open.
    pub fn open<O: Outputs + ?Sized>(
        &mut self,
        at: u64,
        max_digits: Option<u32>,
        terminator: Option<Option<Digit>>,
        out: &mut O,
    ) {
        if self.open.is_none() {
            self.open_window(at, OpenReason::Explicit, max_digits, terminator, out);
        }
    }

    fn open_window<O: Outputs + ?Sized>(
        &mut self,
        at: u64,
        reason: OpenReason,
        max_digits: Option<u32>,
        terminator: Option<Option<Digit>>,
        out: &mut O,
    ) {
        let id = self.next_id;
        self.next_id += 1;
        self.open = Some(Window {
            id,
            digits: [0; MAX_WINDOW_DIGITS],
            count: 0,
            max_digits: max_digits.unwrap_or(self.cfg.max_digits),
            terminator: terminator.unwrap_or(self.cfg.terminator),
            last_activity: at,
            closing: None,
        });
        let ch = self.channel.0;
        let t = self.t(at);
        tracing::debug!(
            channel = ch,
            window = id,
            at_ms = t.as_ms(),
            ?reason,
            "capture window opened, recording paused"
        );
        out.event(Event::CaptureOpened {
            channel: ch,
            window: id,
            at_ms: Event::ms(t),
            at_sample: at,
            reason,
        });
        out.event(Event::RecordingPause {
            channel: ch,
            window: id,
            at_ms: Event::ms(t),
            at_sample: at,
        });
    }

    /// Close the open window now (explicit control input).
    pub fn close<O: Outputs + ?Sized>(&mut self, at: u64, out: &mut O) {
        self.close_window(at, CloseReason::Explicit, out);
    }

    fn close_window<O: Outputs + ?Sized>(&mut self, at: u64, reason: CloseReason, out: &mut O) {
        let Some(mut w) = self.open.take() else {
            return;
        };
        let digits = &w.digits[..w.count];
        let (luhn, card) = progress(digits);
        let ch = self.channel.0;
        let t = self.t(at);
        tracing::debug!(
            channel = ch,
            window = w.id,
            at_ms = t.as_ms(),
            ?reason,
            digit_count = w.count,
            luhn_valid = ?luhn,
            card_brand = ?card,
            "capture window closed, recording resumed"
        );
        out.event(Event::CaptureClosed {
            channel: ch,
            window: w.id,
            at_ms: Event::ms(t),
            at_sample: at,
            reason,
            digit_count: w.count as u32,
            luhn_valid: luhn,
            card_brand: card,
        });
        out.event(Event::RecordingResume {
            channel: ch,
            window: w.id,
            at_ms: Event::ms(t),
            at_sample: at,
        });
        // Wipe the digits before the window is dropped.
        w.digits = [0; MAX_WINDOW_DIGITS];
        w.count = 0;
        core::hint::black_box(&w.digits);
    }

    /// A digit was recognised (in-band or telephone-event). `onset` is the tone's estimated
    /// first sample, `now` the sample at which it was declared, and `masked_from` where the
    /// masked audio around it begins (at or before `onset`): a window this digit opens pauses
    /// the recording from there, so not even the tone's first sample is recorded.
    #[allow(clippy::too_many_arguments)]
    pub fn on_digit<O: Outputs + ?Sized>(
        &mut self,
        digit: Redacted<Digit>,
        onset: u64,
        masked_from: u64,
        now: u64,
        source: DigitSource,
        out: &mut O,
    ) {
        // The same key press reported by the other source (a sender that sends the tone in
        // band and as telephone-events): entered once, by whichever report came first.
        if let Some((d, s, t)) = self.last_key {
            if s != source
                && d.expose() == digit.expose()
                && onset.abs_diff(t) <= self.samples(SAME_PRESS_MS)
            {
                tracing::debug!(
                    channel = self.channel.0,
                    ?source,
                    first = ?s,
                    "key already entered from the other source; this report is dropped"
                );
                return;
            }
        }
        self.last_key = Some((digit, source, onset));
        // An idle timeout that expired before this digit closes the window first.
        self.tick(onset, out);
        if self.open.is_none() && self.cfg.auto_open {
            let quiet = match self.last_digit_end {
                None => true,
                Some(e) => onset.saturating_sub(e) >= self.samples(self.cfg.auto_open_idle_ms),
            };
            if quiet {
                self.open_window(
                    masked_from.min(onset),
                    OpenReason::Automatic,
                    None,
                    None,
                    out,
                );
            }
        }
        let index = self.digits_seen;
        self.digits_seen += 1;
        let ch = self.channel.0;
        let window = self.open.as_ref().map(|w| w.id);
        // The value is Redacted: this line shows where and which one, and prints "[redacted]"
        // for the value (the no-digit-values test checks it).
        let redacted_value = digit;
        tracing::trace!(channel = ch, index, ?window, ?source, value = %redacted_value, "key captured");
        out.event(Event::Digit {
            channel: ch,
            index,
            start_ms: Event::ms(self.t(onset)),
            declared_ms: Event::ms(self.t(now)),
            window,
            source,
        });
        out.secure_digit(SecureDigit {
            channel: self.channel,
            window,
            index,
            digit,
            at: self.t(onset),
        });
        self.last_digit_end = Some(now);
        let Some(w) = self.open.as_mut() else {
            return;
        };
        w.last_activity = now;
        let d = *digit.expose();
        if Some(d) == w.terminator {
            w.closing = Some(CloseReason::Terminator);
            return;
        }
        if let Some(v) = d.decimal() {
            if w.count < MAX_WINDOW_DIGITS {
                w.digits[w.count] = v;
                w.count += 1;
            }
        }
        let (luhn, card) = progress(&w.digits[..w.count]);
        let (id, count, max) = (w.id, w.count as u32, w.max_digits);
        out.event(Event::CaptureProgress {
            channel: ch,
            window: id,
            digit_count: count,
            luhn_valid: luhn,
            card_brand: card,
        });
        if max > 0 && count >= max {
            if let Some(w) = self.open.as_mut() {
                w.closing = Some(CloseReason::DigitCount);
            }
        }
    }

    /// The tone of the last digit ended at `end` (the end of its masked audio): a window
    /// that is due to close (count reached, terminator) closes here, after the tone, so the
    /// whole tone stays paused.
    pub fn on_digit_end<O: Outputs + ?Sized>(&mut self, end: u64, out: &mut O) {
        self.last_digit_end = Some(end);
        if let Some(w) = self.open.as_mut() {
            w.last_activity = w.last_activity.max(end);
            if let Some(reason) = w.closing {
                self.close_window(end, reason, out);
            }
        }
    }

    /// Advance media time to `now`: closes a window whose idle timeout expired, at the
    /// instant it expired.
    pub fn tick<O: Outputs + ?Sized>(&mut self, now: u64, out: &mut O) {
        if self
            .last_key
            .is_some_and(|(_, _, t)| now > t + self.samples(LAST_KEY_KEEP_MS))
        {
            self.last_key = None;
        }
        let timeout = self.samples(self.cfg.idle_timeout_ms);
        if let Some(w) = self.open {
            if timeout > 0 && now >= w.last_activity + timeout {
                self.close_window(w.last_activity + timeout, CloseReason::IdleTimeout, out);
            }
        }
    }

    /// End of stream at `now`: a window still open closes with `stream_ended`.
    pub fn finish<O: Outputs + ?Sized>(&mut self, now: u64, out: &mut O) {
        self.tick(now, out);
        if let Some(w) = self.open {
            let reason = w.closing.unwrap_or(CloseReason::StreamEnded);
            self.close_window(now, reason, out);
        }
    }
}

fn progress(digits: &[u8]) -> (Option<bool>, Option<CardBrand>) {
    let luhn = (digits.len() >= 12).then(|| luhn_valid(digits));
    (luhn, brand(digits))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventLog;

    fn d(c: char) -> Redacted<Digit> {
        Redacted::new(Digit::from_char(c).unwrap())
    }

    /// Keys as the secure sink got them, and the sources of the `digit` events.
    fn entered(log: &EventLog) -> (String, Vec<DigitSource>) {
        let keys = log
            .secure
            .iter()
            .map(|s| s.digit.expose().to_char())
            .collect();
        let sources = log
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Digit { source, .. } => Some(*source),
                _ => None,
            })
            .collect();
        (keys, sources)
    }

    #[test]
    fn a_key_sent_in_band_and_as_a_telephone_event_is_entered_once() {
        use DigitSource::{InBand, TelephoneEvent as Te};
        let mut cap = Capture::new(CaptureConfig::default(), ChannelId(0), 8000);
        let mut log = EventLog::default();
        // A gateway upstream forwards the tone and converts it to events 40 ms later.
        cap.on_digit(d('4'), 8000, 8000, 8240, InBand, &mut log);
        cap.on_digit(d('4'), 8320, 8320, 8320, Te, &mut log);
        cap.on_digit_end(8960, &mut log);
        // The event first, the in-band report of the same press after it.
        cap.on_digit(d('1'), 16000, 16000, 16000, Te, &mut log);
        cap.on_digit(d('1'), 16008, 16000, 16250, InBand, &mut log);
        cap.on_digit_end(16960, &mut log);
        // The same key pressed again 100 ms later is a second press, whatever its source.
        cap.on_digit(d('1'), 16800, 16800, 16800, Te, &mut log);
        // A different key from the other source inside the 60 ms is a different report.
        cap.on_digit(d('2'), 17000, 17000, 17000, Te, &mut log);
        cap.on_digit(d('3'), 17100, 17100, 17300, InBand, &mut log);
        assert_eq!(
            entered(&log),
            ("41123".to_string(), vec![InBand, Te, Te, Te, InBand])
        );
    }

    #[test]
    fn the_last_key_is_not_kept_past_a_quarter_second() {
        let mut cap = Capture::new(CaptureConfig::default(), ChannelId(0), 8000);
        let mut log = EventLog::default();
        cap.on_digit(d('7'), 8000, 8000, 8240, DigitSource::InBand, &mut log);
        cap.tick(8000 + 1999, &mut log);
        assert!(cap.last_key.is_some());
        cap.tick(8000 + 2001, &mut log);
        assert!(
            cap.last_key.is_none(),
            "the value is wiped once it cannot matter"
        );
    }

    #[test]
    fn auto_window_counts_digits_and_closes_on_terminator_after_the_tone() {
        let mut cap = Capture::new(CaptureConfig::default(), ChannelId(0), 8000);
        let mut log = EventLog::default();
        let mut t = 8000;
        for c in "4111111111111111#".chars() {
            cap.on_digit(d(c), t, t, t + 200, DigitSource::InBand, &mut log);
            cap.on_digit_end(t + 480, &mut log);
            t += 1600;
        }
        let kinds: Vec<_> = log
            .events
            .iter()
            .map(|e| {
                serde_json::to_value(e).unwrap()["event"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(kinds[0], "capture_opened");
        assert_eq!(kinds[1], "recording_pause");
        assert_eq!(kinds.last().unwrap(), "recording_resume");
        let closed = log
            .events
            .iter()
            .find(|e| matches!(e, Event::CaptureClosed { .. }))
            .unwrap();
        match *closed {
            Event::CaptureClosed {
                reason,
                digit_count,
                luhn_valid,
                card_brand,
                at_sample,
                ..
            } => {
                assert_eq!(reason, CloseReason::Terminator);
                assert_eq!(digit_count, 16);
                assert_eq!(luhn_valid, Some(true));
                assert_eq!(card_brand, Some(CardBrand::Visa));
                assert_eq!(at_sample, 8000 + 16 * 1600 + 480);
            }
            _ => unreachable!(),
        }
        match log.events[1] {
            Event::RecordingPause { at_sample, .. } => assert_eq!(at_sample, 8000),
            _ => unreachable!(),
        }
        assert_eq!(log.secure.len(), 17);
    }

    #[test]
    fn idle_timeout_and_digit_count_close_windows() {
        let cfg = CaptureConfig {
            max_digits: 3,
            terminator: None,
            ..CaptureConfig::default()
        };
        let mut cap = Capture::new(cfg, ChannelId(1), 8000);
        let mut log = EventLog::default();
        for i in 0..3u64 {
            cap.on_digit(
                d('1'),
                i * 800,
                i * 800,
                i * 800 + 200,
                DigitSource::InBand,
                &mut log,
            );
            cap.on_digit_end(i * 800 + 400, &mut log);
        }
        assert!(!cap.is_open());
        cap.on_digit(
            d('2'),
            100_000,
            99_990,
            100_200,
            DigitSource::InBand,
            &mut log,
        );
        assert!(cap.is_open());
        cap.tick(100_200 + 32_000, &mut log);
        assert!(!cap.is_open());
        let reasons: Vec<_> = log
            .events
            .iter()
            .filter_map(|e| match e {
                Event::CaptureClosed { reason, .. } => Some(*reason),
                _ => None,
            })
            .collect();
        assert_eq!(reasons, [CloseReason::DigitCount, CloseReason::IdleTimeout]);
    }
}
