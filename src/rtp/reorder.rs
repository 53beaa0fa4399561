//! Sequence-number bookkeeping for one input stream: extended (wrap-aware) sequence numbers,
//! duplicate and late detection, and the small buffer of packets held while an earlier one
//! is missing.
//!
//! Owns: the decision of where a packet stands relative to the next one expected, and the
//! held copies. Must never: allocate after construction (slots are preallocated and their
//! buffers are lent out and given back, never dropped), release packets out of order, or
//! look at payloads.

/// Largest forward step still treated as reordering/loss within one numbering; beyond it the
/// sender probably restarted its sequence (RFC 3550 appendix A.1 uses the same idea).
pub const MAX_DROPOUT: i64 = 100;
/// Largest backward step still treated as a late or duplicated packet.
pub const MAX_MISORDER: i64 = 100;

/// Where a packet stands relative to the next one expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqClass {
    /// Exactly the next one.
    InOrder,
    /// Later than the next one by a plausible amount; carries its extended number.
    Ahead(u64),
    /// Already released (or declared lost and then seen).
    Duplicate,
    /// Older than what was already released and not seen before: it was declared lost.
    Late,
    /// Too far from the expected number either way: a new numbering, or a stray packet.
    Jump,
}

/// Extended sequence numbers of one input stream.
#[derive(Debug, Clone, Default)]
pub struct Sequencer {
    /// Extended number of the next packet to release; `None` before the first packet.
    next: Option<u64>,
    /// Bit `i` set: packet `next - 1 - i` was released (received, not declared lost).
    seen: u64,
}

impl Sequencer {
    /// Start a numbering at `seq`. Extended numbers start one cycle up so that steps back
    /// from the first packet never underflow.
    pub fn start(&mut self, seq: u16) {
        self.next = Some((1 << 16) + seq as u64);
        self.seen = 0;
    }

    /// Extended number of the next packet to release.
    pub fn next(&self) -> Option<u64> {
        self.next
    }

    /// Forget the numbering (new stream).
    pub fn reset(&mut self) {
        self.next = None;
        self.seen = 0;
    }

    /// Where `seq` stands. Before [`start`](Self::start) everything is a [`SeqClass::Jump`].
    pub fn classify(&self, seq: u16) -> SeqClass {
        let Some(next) = self.next else {
            return SeqClass::Jump;
        };
        let d = seq.wrapping_sub(next as u16) as i16 as i64;
        match d {
            0 => SeqClass::InOrder,
            1..=MAX_DROPOUT => SeqClass::Ahead(next + d as u64),
            d if d > 0 => SeqClass::Jump,
            d if -d <= MAX_MISORDER => {
                let i = (-d - 1) as u32;
                if i < 64 && self.seen >> i & 1 == 1 {
                    SeqClass::Duplicate
                } else {
                    SeqClass::Late
                }
            }
            _ => SeqClass::Jump,
        }
    }

    /// The next packet was released.
    pub fn released(&mut self) {
        if let Some(n) = self.next.as_mut() {
            *n += 1;
            self.seen = self.seen << 1 | 1;
        }
    }

    /// Give up on every packet before extended number `upto`; returns how many were lost.
    pub fn give_up_until(&mut self, upto: u64) -> u64 {
        let Some(n) = self.next.as_mut() else {
            return 0;
        };
        let lost = upto.saturating_sub(*n);
        *n += lost;
        self.seen = if lost >= 64 { 0 } else { self.seen << lost };
        lost
    }
}

struct Slot {
    /// Extended sequence number of the packet held here.
    seq: u64,
    /// Bytes of the packet in `data`; 0 when the slot is free.
    len: usize,
    /// When it arrived, µs (caller's clock).
    arrived_us: u64,
    data: Vec<u8>,
}

/// Packets held until the one before them arrives. At most `window` of them, each up to
/// `slot_size` bytes, all allocated up front.
pub struct ReorderBuffer {
    slots: Vec<Slot>,
    slot_size: usize,
    held: usize,
}

impl ReorderBuffer {
    /// Room for `window` packets of at most `slot_size` bytes.
    pub fn new(window: usize, slot_size: usize) -> Self {
        Self {
            slots: (0..window)
                .map(|_| Slot {
                    seq: 0,
                    len: 0,
                    arrived_us: 0,
                    data: vec![0; slot_size],
                })
                .collect(),
            slot_size,
            held: 0,
        }
    }

    /// Packets held.
    pub fn len(&self) -> usize {
        self.held
    }

    /// Nothing held?
    pub fn is_empty(&self) -> bool {
        self.held == 0
    }

    /// Every slot taken (or there are none)?
    pub fn is_full(&self) -> bool {
        self.held >= self.slots.len()
    }

    /// Is packet `seq` held?
    pub fn contains(&self, seq: u64) -> bool {
        self.slots.iter().any(|s| s.len > 0 && s.seq == seq)
    }

    /// Smallest extended number held.
    pub fn lowest(&self) -> Option<u64> {
        self.slots.iter().filter(|s| s.len > 0).map(|s| s.seq).min()
    }

    /// Arrival time of the packet that has waited longest.
    pub fn earliest_arrival(&self) -> Option<u64> {
        self.slots
            .iter()
            .filter(|s| s.len > 0)
            .map(|s| s.arrived_us)
            .min()
    }

    /// Hold a copy of `data` as packet `seq`. Returns false (and holds nothing) if it is
    /// empty, does not fit, or no slot is free.
    pub fn insert(&mut self, seq: u64, data: &[u8], now_us: u64) -> bool {
        if data.is_empty() || data.len() > self.slot_size {
            return false;
        }
        let Some(s) = self.slots.iter_mut().find(|s| s.len == 0) else {
            return false;
        };
        s.data[..data.len()].copy_from_slice(data);
        s.len = data.len();
        s.seq = seq;
        s.arrived_us = now_us;
        self.held += 1;
        true
    }

    /// Take packet `seq` out: its buffer and length. The buffer must come back through
    /// [`give_back`](Self::give_back) (that is what keeps this allocation-free).
    pub fn take(&mut self, seq: u64) -> Option<(Vec<u8>, usize)> {
        let s = self.slots.iter_mut().find(|s| s.len > 0 && s.seq == seq)?;
        let len = core::mem::take(&mut s.len);
        self.held -= 1;
        Some((core::mem::take(&mut s.data), len))
    }

    /// Return a buffer lent out by [`take`](Self::take) to the slot that lacks one.
    pub fn give_back(&mut self, buf: Vec<u8>) {
        if let Some(s) = self.slots.iter_mut().find(|s| s.data.capacity() == 0) {
            s.data = buf;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_across_the_wrap() {
        let mut s = Sequencer::default();
        assert_eq!(s.classify(5), SeqClass::Jump);
        s.start(65534);
        assert_eq!(s.classify(65534), SeqClass::InOrder);
        s.released();
        assert_eq!(s.classify(65535), SeqClass::InOrder);
        assert_eq!(s.classify(0), SeqClass::Ahead((1 << 16) + 65536));
        assert_eq!(s.classify(65534), SeqClass::Duplicate);
        assert_eq!(s.classify(65500), SeqClass::Late);
        assert_eq!(s.classify(30000), SeqClass::Jump);
        s.released();
        assert_eq!(s.classify(0), SeqClass::InOrder);
        // Give up on 0 and 1: they are then late, 2 is next.
        assert_eq!(s.give_up_until(s.next().unwrap() + 2), 2);
        assert_eq!(s.classify(1), SeqClass::Late);
        assert_eq!(s.classify(65535), SeqClass::Duplicate);
        assert_eq!(s.classify(2), SeqClass::InOrder);
    }

    #[test]
    fn buffer_lends_and_takes_back_its_slots() {
        let mut b = ReorderBuffer::new(2, 8);
        assert!(b.insert(10, &[1, 2, 3], 100));
        assert!(!b.insert(11, &[0; 9], 100), "too big");
        assert!(!ReorderBuffer::new(0, 8).insert(1, &[1], 0), "no window");
        assert!(b.insert(12, &[4], 200));
        assert!(b.is_full());
        assert!(!b.insert(13, &[5], 300));
        assert_eq!(b.lowest(), Some(10));
        assert_eq!(b.earliest_arrival(), Some(100));
        let (buf, len) = b.take(10).unwrap();
        assert_eq!(&buf[..len], &[1, 2, 3]);
        b.give_back(buf);
        assert!(b.insert(14, &[6, 7], 400));
        assert!(b.contains(14) && b.contains(12) && !b.contains(10));
        assert_eq!(b.earliest_arrival(), Some(200));
    }
}
