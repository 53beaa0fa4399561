//! The sixteen DTMF keys and their frequency pairs (ITU-T Q.23).

/// Low-group (row) frequencies in Hz.
pub const ROW_HZ: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
/// High-group (column) frequencies in Hz.
pub const COL_HZ: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];

const KEYS: [[u8; 4]; 4] = [
    [b'1', b'2', b'3', b'A'],
    [b'4', b'5', b'6', b'B'],
    [b'7', b'8', b'9', b'C'],
    [b'*', b'0', b'#', b'D'],
];

/// One DTMF key. Its value is sensitive: wrap it in [`crate::Redacted`] wherever it could
/// travel near a log line.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digit {
    row: u8,
    col: u8,
}

impl core::fmt::Debug for Digit {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // A bare Digit printed by accident must not reveal the key.
        f.write_str("Digit([redacted])")
    }
}

impl Digit {
    /// All sixteen keys in keypad order.
    pub const ALL: [Digit; 16] = {
        let mut out = [Digit { row: 0, col: 0 }; 16];
        let mut i = 0;
        while i < 16 {
            out[i] = Digit {
                row: (i / 4) as u8,
                col: (i % 4) as u8,
            };
            i += 1;
        }
        out
    };

    /// The key at `row` (0..4, low group) and `col` (0..4, high group).
    pub const fn from_row_col(row: usize, col: usize) -> Option<Digit> {
        if row < 4 && col < 4 {
            Some(Digit {
                row: row as u8,
                col: col as u8,
            })
        } else {
            None
        }
    }

    /// Parse a key character (`0-9`, `*`, `#`, `A-D`, lower case accepted).
    pub fn from_char(c: char) -> Option<Digit> {
        let c = c.to_ascii_uppercase() as u32;
        for (r, row) in KEYS.iter().enumerate() {
            for (k, &key) in row.iter().enumerate() {
                if key as u32 == c {
                    return Digit::from_row_col(r, k);
                }
            }
        }
        None
    }

    /// The key as a character. This is the value itself: only for the secure sink and the
    /// diagnostic `detect` command.
    pub fn to_char(self) -> char {
        KEYS[self.row as usize][self.col as usize] as char
    }

    /// Row index (0..4).
    pub fn row(self) -> usize {
        self.row as usize
    }

    /// Column index (0..4).
    pub fn col(self) -> usize {
        self.col as usize
    }

    /// Nominal (low, high) frequencies in Hz.
    pub fn frequencies(self) -> (f32, f32) {
        (ROW_HZ[self.row as usize], COL_HZ[self.col as usize])
    }

    /// The numeric value for decimal keys 0-9, `None` for `*`, `#` and A-D.
    pub fn decimal(self) -> Option<u8> {
        let c = self.to_char();
        c.to_digit(10).map(|d| d as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keypad_round_trips() {
        for d in Digit::ALL {
            assert_eq!(Digit::from_char(d.to_char()), Some(d));
        }
        assert_eq!(
            Digit::from_char('5').unwrap().frequencies(),
            (770.0, 1336.0)
        );
        assert_eq!(
            Digit::from_char('#').unwrap().frequencies(),
            (941.0, 1477.0)
        );
        assert!(Digit::from_char('x').is_none());
        assert_eq!(
            format!("{:?}", Digit::from_char('7').unwrap()),
            "Digit([redacted])"
        );
    }
}
