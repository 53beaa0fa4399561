//! Card-number progress computed from captured digits: Luhn validity and brand from the
//! leading digits (IIN ranges as published by the card schemes). Only yes/no answers and a
//! brand leave here, never digits.

use serde::Serialize;

/// Card brand recognised from the issuer identification number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CardBrand {
    /// Visa (4).
    Visa,
    /// Mastercard (51-55, 2221-2720).
    Mastercard,
    /// American Express (34, 37).
    Amex,
    /// Discover (6011, 644-649, 65).
    Discover,
    /// Diners Club (300-305, 36, 38, 39).
    Diners,
    /// JCB (3528-3589).
    Jcb,
    /// UnionPay (62).
    UnionPay,
    /// Maestro (50, 56-58, 6x not covered above).
    Maestro,
}

fn prefix(d: &[u8], n: usize) -> Option<u32> {
    if d.len() < n {
        return None;
    }
    Some(d[..n].iter().fold(0u32, |a, &x| a * 10 + x as u32))
}

/// The brand, once the leading digits decide it (`None` while they do not, or never do).
pub fn brand(d: &[u8]) -> Option<CardBrand> {
    let p1 = prefix(d, 1)?;
    if p1 == 4 {
        return Some(CardBrand::Visa);
    }
    let p2 = prefix(d, 2)?;
    match p2 {
        34 | 37 => return Some(CardBrand::Amex),
        51..=55 => return Some(CardBrand::Mastercard),
        36 | 38 | 39 => return Some(CardBrand::Diners),
        62 => return Some(CardBrand::UnionPay),
        65 => return Some(CardBrand::Discover),
        50 | 56..=58 => return Some(CardBrand::Maestro),
        _ => {}
    }
    let p3 = prefix(d, 3)?;
    match p3 {
        300..=305 => return Some(CardBrand::Diners),
        644..=649 => return Some(CardBrand::Discover),
        _ => {}
    }
    let p4 = prefix(d, 4)?;
    match p4 {
        2221..=2720 => Some(CardBrand::Mastercard),
        3528..=3589 => Some(CardBrand::Jcb),
        6011 => Some(CardBrand::Discover),
        _ if (60..=69).contains(&p2) => Some(CardBrand::Maestro),
        _ => None,
    }
}

/// Luhn (mod 10) check over all digits.
pub fn luhn_valid(d: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, &x) in d.iter().rev().enumerate() {
        let mut v = x as u32;
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    !d.is_empty() && sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(s: &str) -> Vec<u8> {
        s.bytes().map(|b| b - b'0').collect()
    }

    #[test]
    fn luhn_and_brands() {
        assert!(luhn_valid(&ds("4111111111111111")));
        assert!(!luhn_valid(&ds("4111111111111112")));
        assert!(luhn_valid(&ds("378282246310005")));
        assert!(luhn_valid(&ds("5555555555554444")));
        assert_eq!(brand(&ds("4")), Some(CardBrand::Visa));
        assert_eq!(brand(&ds("37")), Some(CardBrand::Amex));
        assert_eq!(brand(&ds("2223")), Some(CardBrand::Mastercard));
        assert_eq!(brand(&ds("222")), None);
        assert_eq!(brand(&ds("6011")), Some(CardBrand::Discover));
        assert_eq!(brand(&ds("3530")), Some(CardBrand::Jcb));
        assert_eq!(brand(&ds("1")), None);
    }
}
