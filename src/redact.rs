//! `Redacted<T>`: a wrapper for values that must never be printed (digit values, card
//! numbers). Its `Debug` and `Display` print `[redacted]`; the value only comes out through
//! an explicit [`Redacted::expose`], which is easy to grep for in review.
//!
//! Must never: implement `Serialize`, `Display` or `Debug` in a way that shows the value.

use core::fmt;

/// A value that must not reach logs, events, metrics or error messages.
///
/// ```
/// use tonewall::Redacted;
/// let pan = Redacted::new("4111111111111111");
/// assert_eq!(format!("{pan} {pan:?}"), "[redacted] [redacted]");
/// assert_eq!(*pan.expose(), "4111111111111111");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Redacted<T>(T);

impl<T> Redacted<T> {
    /// Wrap a sensitive value.
    pub const fn new(value: T) -> Self {
        Self(value)
    }

    /// The value itself. Call this only on the way to the secure digit sink, or in the
    /// diagnostic `detect` command that shows a user the digits in their own file.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> fmt::Display for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_value() {
        let r = Redacted::new(4111_1111_1111_1111u64);
        assert_eq!(format!("{r}"), "[redacted]");
        assert_eq!(format!("{r:?}"), "[redacted]");
        assert_eq!(format!("{:#?}", Some(r)), "Some(\n    [redacted],\n)");
        assert_eq!(*r.expose(), 4111_1111_1111_1111);
    }
}
