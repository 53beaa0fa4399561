//! RFC 4733 telephone-events: the 4-byte event payload and the bookkeeping that turns a
//! sender's redundant packet train (a start, updates every ~50 ms, usually three copies of the
//! end) into exactly one digit per key press.
//!
//! Owns: parsing of the payload (hand-written: it is four bytes, and no RTP crate we would
//! trust more covers it) and deduplication keyed on SSRC + event timestamp.
//! Must never: reveal an event code through `Debug`, `Display` or an error (the code *is* the
//! key the caller pressed); allocate; panic on any input.

use crate::dtmf::Digit;
use crate::redact::Redacted;

/// Size of one event block on the wire.
pub const EVENT_BLOCK_LEN: usize = 4;

/// Event codes 0-15 in RFC 4733 order (section 3.2): 0-9, `*` = 10, `#` = 11, A-D = 12-15.
const KEYS: &[u8; 16] = b"0123456789*#ABCD";

/// One RFC 4733 event block.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// The event code (0-15 are DTMF keys). Redacted: for keys this is the value itself.
    pub code: Redacted<u8>,
    /// E bit: this packet reports the end of the event.
    pub end: bool,
    /// Power level of the tone, expressed in dBm0 after dropping the sign (0-63).
    pub volume: u8,
    /// Duration so far, in timestamp units counted from the event timestamp.
    pub duration: u16,
}

impl core::fmt::Debug for TelephoneEvent {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TelephoneEvent")
            .field("code", &self.code)
            .field("end", &self.end)
            .field("volume", &self.volume)
            .field("duration", &self.duration)
            .finish()
    }
}

/// A telephone-event payload could not be parsed. Carries no byte of the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TelephoneEventError {
    /// Fewer than four bytes.
    #[error("telephone-event payload of {0} bytes is shorter than one 4-byte block")]
    Truncated(usize),
}

impl TelephoneEvent {
    /// Parse the first event block of `payload`. Later blocks (RFC 4733 allows several per
    /// packet for redundancy) are not used by senders of DTMF in practice and are ignored;
    /// trailing bytes that do not form a block are ignored too.
    pub fn parse(payload: &[u8]) -> Result<Self, TelephoneEventError> {
        let Some(b) = payload.first_chunk::<EVENT_BLOCK_LEN>() else {
            return Err(TelephoneEventError::Truncated(payload.len()));
        };
        Ok(Self {
            code: Redacted::new(b[0]),
            end: b[1] & 0x80 != 0,
            // Bit 0x40 is the reserved R bit: senders set it to 0, receivers ignore it.
            volume: b[1] & 0x3F,
            duration: u16::from_be_bytes([b[2], b[3]]),
        })
    }

    /// The DTMF key this event stands for, or `None` for codes 16 and up (flash, line
    /// tones...), which the gateway consumes without acting on.
    pub fn digit(&self) -> Option<Redacted<Digit>> {
        let k = *KEYS.get(*self.code.expose() as usize)?;
        Digit::from_char(k as char).map(Redacted::new)
    }
}

/// What the tracker knows about one event (one key press).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct EventState {
    /// SSRC of the stream that sent it.
    pub ssrc: u32,
    /// RTP timestamp of the event (its start; the same in every packet of the event).
    pub ts: u32,
    /// The event as first seen (code, volume), with `duration` and `end` kept up to date.
    pub event: TelephoneEvent,
}

impl core::fmt::Debug for EventState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EventState")
            .field("ssrc", &self.ssrc)
            .field("ts", &self.ts)
            .field("event", &self.event)
            .finish()
    }
}

impl EventState {
    /// End of the time the event covers so far, as an RTP timestamp.
    pub fn covered_until(&self) -> u32 {
        self.ts.wrapping_add(self.event.duration as u32)
    }
}

/// What one packet meant for the event it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// First packet of a new event (it may already carry the E bit).
    New,
    /// A later packet of the current event that extends it.
    Update,
    /// The first end packet of the current event.
    End,
    /// Nothing new: a retransmitted end, a reordered update, a copy.
    Repeat,
    /// A packet of an event older than the current one: ignored.
    Stale,
}

/// The outcome of [`EventTracker::observe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// How the packet relates to the events seen so far.
    pub kind: Observed,
    /// When a new event starts while the previous one never showed its end (all end packets
    /// lost), the previous one, so its end can be reported.
    pub unfinished: Option<EventState>,
}

/// Deduplicates the packet train of RFC 4733 events: one [`Observed::New`] per key press,
/// whatever the sender's redundancy and the network's duplication.
#[derive(Debug, Default, Clone)]
pub struct EventTracker {
    current: Option<EventState>,
}

impl EventTracker {
    /// The event most recently started, if any.
    pub fn current(&self) -> Option<&EventState> {
        self.current.as_ref()
    }

    /// Is an event under way (started, its end not yet seen)?
    pub fn active(&self) -> bool {
        matches!(self.current, Some(s) if !s.event.end)
    }

    /// Mark the current event as over without an end packet (the sender's end packets were
    /// lost, or its stream ended). Returns it if it was still under way.
    pub fn expire(&mut self) -> Option<EventState> {
        let s = self.current.as_mut()?;
        if s.event.end {
            return None;
        }
        s.event.end = true;
        Some(*s)
    }

    /// Forget everything (a new input stream starts).
    pub fn reset(&mut self) {
        self.current = None;
    }

    /// Account for one event packet from `ssrc` with RTP timestamp `ts`.
    pub fn observe(&mut self, ssrc: u32, ts: u32, ev: TelephoneEvent) -> Observation {
        let mut unfinished = None;
        if let Some(cur) = self.current.as_mut() {
            if cur.ssrc == ssrc && cur.ts == ts {
                let kind = if cur.event.end {
                    // Retransmitted end packets, or an update that overtook the end.
                    Observed::Repeat
                } else if ev.end {
                    cur.event.end = true;
                    cur.event.duration = cur.event.duration.max(ev.duration);
                    Observed::End
                } else if ev.duration > cur.event.duration {
                    cur.event.duration = ev.duration;
                    Observed::Update
                } else {
                    Observed::Repeat
                };
                return Observation { kind, unfinished };
            }
            // Same stream, earlier start: a packet of an event we have moved past.
            if cur.ssrc == ssrc && (ts.wrapping_sub(cur.ts) as i32) < 0 {
                return Observation {
                    kind: Observed::Stale,
                    unfinished,
                };
            }
            if !cur.event.end {
                cur.event.end = true;
                unfinished = Some(*cur);
            }
        }
        self.current = Some(EventState {
            ssrc,
            ts,
            event: ev,
        });
        Observation {
            kind: Observed::New,
            unfinished,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::Rng;

    fn block(code: u8, end: bool, volume: u8, duration: u16) -> [u8; 4] {
        let d = duration.to_be_bytes();
        [code, (end as u8) << 7 | (volume & 0x3F), d[0], d[1]]
    }

    #[test]
    fn parses_fields_and_maps_codes_to_keys() {
        let e = TelephoneEvent::parse(&block(11, true, 10, 800)).unwrap();
        assert!(e.end);
        assert_eq!(e.volume, 10);
        assert_eq!(e.duration, 800);
        assert_eq!(e.digit().unwrap().expose().to_char(), '#');
        // The R bit is ignored, not mistaken for volume or E.
        let e = TelephoneEvent::parse(&[5, 0x40 | 7, 0, 160]).unwrap();
        assert!(!e.end);
        assert_eq!(e.volume, 7);
        let keys: String = (0..16u8)
            .map(|c| {
                TelephoneEvent::parse(&block(c, false, 0, 0))
                    .unwrap()
                    .digit()
                    .unwrap()
                    .expose()
                    .to_char()
            })
            .collect();
        assert_eq!(keys, "0123456789*#ABCD");
        for c in 16..=255u8 {
            assert!(TelephoneEvent::parse(&block(c, false, 0, 0))
                .unwrap()
                .digit()
                .is_none());
        }
        // Only the first block counts; short payloads are errors.
        let mut two = [0u8; 8];
        two[..4].copy_from_slice(&block(3, false, 0, 320));
        two[4..].copy_from_slice(&block(9, true, 0, 9));
        assert_eq!(TelephoneEvent::parse(&two).unwrap().duration, 320);
        for n in 0..4 {
            assert_eq!(
                TelephoneEvent::parse(&two[..n]),
                Err(TelephoneEventError::Truncated(n))
            );
        }
    }

    #[test]
    fn debug_never_shows_the_code() {
        let e = TelephoneEvent::parse(&block(7, false, 10, 160)).unwrap();
        let s = format!(
            "{e:?} {:?}",
            EventState {
                ssrc: 1,
                ts: 2,
                event: e
            }
        );
        assert!(s.contains("[redacted]"), "{s}");
        assert!(!s.contains("code: 7"), "{s}");
    }

    /// Random bytes of random length: parsing never panics, accepts exactly the payloads of
    /// four bytes or more, and reads the fields back as written.
    #[test]
    fn fuzz_parse_random_bytes() {
        let mut rng = Rng::new(0x4733);
        let mut buf = [0u8; 16];
        for _ in 0..200_000 {
            let n = (rng.next_u64() % 17) as usize;
            for b in buf[..n].iter_mut() {
                *b = rng.next_u64() as u8;
            }
            match TelephoneEvent::parse(&buf[..n]) {
                Ok(e) => {
                    assert!(n >= 4);
                    assert_eq!(*e.code.expose(), buf[0]);
                    assert_eq!(e.end, buf[1] >= 0x80);
                    assert!(e.volume < 64);
                    assert_eq!(e.duration, (buf[2] as u16) << 8 | buf[3] as u16);
                    assert_eq!(e.digit().is_some(), buf[0] < 16);
                }
                Err(TelephoneEventError::Truncated(m)) => {
                    assert!(n < 4);
                    assert_eq!(m, n);
                }
            }
        }
    }

    #[test]
    fn a_key_press_with_redundant_ends_and_copies_is_one_event() {
        let mut t = EventTracker::default();
        let ev = |end, d| TelephoneEvent::parse(&block(1, end, 10, d)).unwrap();
        let seq = [
            (ev(false, 0), Observed::New),
            (ev(false, 400), Observed::Update),
            (ev(false, 400), Observed::Repeat), // network duplicate
            (ev(false, 800), Observed::Update),
            (ev(true, 960), Observed::End),
            (ev(true, 960), Observed::Repeat),
            (ev(true, 960), Observed::Repeat),
            (ev(false, 800), Observed::Repeat), // late update
        ];
        for (e, want) in seq {
            let o = t.observe(9, 1000, e);
            assert_eq!(o.kind, want);
            assert_eq!(o.unfinished, None);
        }
        assert_eq!(t.current().unwrap().covered_until(), 1960);
        assert!(!t.active());
        // An older event from the same stream is stale; the next one is new.
        assert_eq!(t.observe(9, 500, ev(false, 0)).kind, Observed::Stale);
        assert_eq!(t.observe(9, 3000, ev(false, 0)).kind, Observed::New);
        assert!(t.active());
        // Its end was lost: the next event reports it as unfinished.
        let o = t.observe(9, 5000, ev(false, 0));
        assert_eq!(o.kind, Observed::New);
        assert_eq!(o.unfinished.unwrap().ts, 3000);
        // Same timestamp from another SSRC is a different event.
        assert_eq!(t.observe(10, 5000, ev(true, 160)).kind, Observed::New);
        assert_eq!(t.expire(), None);
        // Timestamps wrap.
        let mut t = EventTracker::default();
        t.observe(1, u32::MAX - 10, ev(true, 160));
        assert_eq!(t.observe(1, 150, ev(false, 0)).kind, Observed::New);
        assert_eq!(
            t.observe(1, u32::MAX - 10, ev(true, 0)).kind,
            Observed::Stale
        );
        assert!(t.expire().is_some());
    }
}
