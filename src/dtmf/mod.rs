//! In-band DTMF detection at 8 kHz: the Goertzel bank, the strict digit reporter and the
//! weak tone-likeness test the masker acts on.
//!
//! Owns: every decision about whether audio is, or may be, a key press.
//! Must never: allocate, lock, read a clock or log a digit value.

mod bank;
mod config;
mod detector;
mod digit;

pub use bank::{Cpx, GoertzelBank, SubBlock, BANK_HZ, RATE, SUB};
pub use config::{DetectorConfig, MaskConfig};
pub use detector::{Detector, DetectorEvent};
pub use digit::{Digit, COL_HZ, ROW_HZ};
