//! Exchange rates as exact decimals, and the one rounding rule of every conversion.
//!
//! A rate is a decimal string (how many quote units one base unit buys), at most
//! [`SIGNIFICANT_DIGITS_MAX`] significant digits, kept as an integer mantissa and a scale:
//! never a float. A conversion multiplies a minor-unit amount by the rate, the spread and the
//! difference of the two currencies' exponents, all as one exact fraction, and rounds against
//! the user:
//!
//! - given what the user pays, what they receive is rounded **down** (they receive less than the
//!   exact value by less than one minor unit of the target currency);
//! - given what the user wants to receive, what they pay is rounded **up** (they pay more than
//!   the exact value by less than one minor unit of the source currency).
//!
//! So the user never gains value from rounding, and loses less than one minor unit of the side
//! that was rounded. A result of zero is refused rather than taken for free.

use std::fmt;

/// Significant digits a rate may carry.
pub const SIGNIFICANT_DIGITS_MAX: usize = 18;
/// Digits after the point a rate may carry (a rate of 1e-30 is not a market).
pub const SCALE_MAX: u32 = 30;
/// The spread is in basis points of the mid rate, below 100%.
pub const SPREAD_BPS_MAX: u32 = 5_000;
const BPS: u128 = 10_000;

/// A positive decimal `mantissa × 10^-scale`, in lowest terms (no trailing zero in the
/// mantissa's fraction digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    mantissa: u128,
    scale: u32,
}

impl Rate {
    /// Parses `123.456` (digits, at most one point; no sign, no exponent, no spaces).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        if whole.is_empty() && fraction.is_empty()
            || !whole
                .bytes()
                .chain(fraction.bytes())
                .all(|b| b.is_ascii_digit())
        {
            return Err("must be a decimal number such as 1.0842".into());
        }
        let digits = format!("{whole}{fraction}");
        let significant = digits.trim_start_matches('0').trim_end_matches('0');
        if significant.is_empty() {
            return Err("must be greater than zero".into());
        }
        if significant.len() > SIGNIFICANT_DIGITS_MAX {
            return Err(format!(
                "at most {SIGNIFICANT_DIGITS_MAX} significant digits"
            ));
        }
        let fraction = fraction.trim_end_matches('0');
        let scale = u32::try_from(fraction.len()).unwrap_or(u32::MAX);
        if scale > SCALE_MAX {
            return Err(format!("at most {SCALE_MAX} digits after the point"));
        }
        let mantissa = format!("{whole}{fraction}")
            .parse::<u128>()
            .map_err(|_| format!("at most {SIGNIFICANT_DIGITS_MAX} significant digits"))?;
        Ok(Self { mantissa, scale })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", decimal(self.mantissa, self.scale))
    }
}

/// `mantissa × 10^-scale` as a decimal string.
fn decimal(mantissa: u128, scale: u32) -> String {
    let digits = mantissa.to_string();
    let scale = scale as usize;
    if scale == 0 {
        return digits;
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (whole, fraction) = padded.split_at(padded.len() - scale);
    format!("{whole}.{fraction}")
}

fn pow10(exponent: u32) -> u128 {
    10u128.pow(exponent)
}

/// An exact positive fraction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fraction {
    pub numerator: u128,
    pub denominator: u128,
}

impl Fraction {
    /// As a decimal string of at most [`SIGNIFICANT_DIGITS_MAX`] significant digits, rounded
    /// down (for display: what one major unit buys).
    pub fn to_decimal(self) -> String {
        if self.denominator == 0 {
            return "0".into();
        }
        let whole = self.numerator / self.denominator;
        let mut remainder = self.numerator % self.denominator;
        let mut significant = if whole == 0 {
            0
        } else {
            whole.to_string().len()
        };
        let mut fraction = String::new();
        while remainder != 0 && significant < SIGNIFICANT_DIGITS_MAX && fraction.len() < 36 {
            // remainder < denominator ≤ u128::MAX / 10 in practice; checked to stay exact.
            let Some(scaled) = remainder.checked_mul(10) else {
                break;
            };
            let digit = scaled / self.denominator;
            remainder = scaled % self.denominator;
            if digit != 0 || significant != 0 {
                significant += 1;
            }
            fraction.push(char::from(b'0' + digit as u8));
        }
        let fraction = fraction.trim_end_matches('0');
        if fraction.is_empty() {
            whole.to_string()
        } else {
            format!("{whole}.{fraction}")
        }
    }
}

/// How a conversion prices: minor units of the source times this factor is the exact amount of
/// minor units of the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pricing {
    factor: Fraction,
}

/// Why an amount cannot be converted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConvertError {
    /// The rounded result is zero: too little to convert at this rate.
    TooSmall,
    /// The exact arithmetic would not fit (an absurd amount for this rate).
    TooLarge,
}

impl Pricing {
    /// The pricing of converting `from` into `to` at `rate` (one `from` buys `rate` `to` when
    /// `direct`, else one `to` buys `rate` `from`), less `spread_bps`, between currencies of
    /// exponents `from_exponent` and `to_exponent`.
    pub fn new(
        rate: Rate,
        direct: bool,
        spread_bps: u32,
        from_exponent: u8,
        to_exponent: u8,
    ) -> Result<Self, ConvertError> {
        let keep = BPS - u128::from(spread_bps.min(SPREAD_BPS_MAX));
        let (rate_num, rate_den) = if direct {
            (rate.mantissa, pow10(rate.scale))
        } else {
            (pow10(rate.scale), rate.mantissa)
        };
        let up = u32::from(to_exponent.saturating_sub(from_exponent));
        let down = u32::from(from_exponent.saturating_sub(to_exponent));
        let numerator = rate_num
            .checked_mul(keep)
            .and_then(|n| n.checked_mul(pow10(up)))
            .ok_or(ConvertError::TooLarge)?;
        let denominator = rate_den
            .checked_mul(BPS)
            .and_then(|d| d.checked_mul(pow10(down)))
            .ok_or(ConvertError::TooLarge)?;
        Ok(Self {
            factor: Fraction {
                numerator,
                denominator,
            },
        })
    }

    /// What paying `from` minor units receives, rounded down.
    pub fn receive(&self, from: i64) -> Result<i64, ConvertError> {
        let from = u128::try_from(from).map_err(|_| ConvertError::TooSmall)?;
        let exact = from
            .checked_mul(self.factor.numerator)
            .ok_or(ConvertError::TooLarge)?;
        let to = exact / self.factor.denominator;
        Self::amount(to)
    }

    /// What receiving `to` minor units costs, rounded up.
    pub fn pay(&self, to: i64) -> Result<i64, ConvertError> {
        let to = u128::try_from(to).map_err(|_| ConvertError::TooSmall)?;
        let exact = to
            .checked_mul(self.factor.denominator)
            .ok_or(ConvertError::TooLarge)?;
        let from = exact.div_ceil(self.factor.numerator.max(1));
        Self::amount(from)
    }

    /// What `units` (signed: an overdrawn balance is negative) are worth, rounded toward zero;
    /// `None` when the exact arithmetic would not fit.
    pub fn value(&self, units: i128) -> Option<i128> {
        let exact =
            units.unsigned_abs().checked_mul(self.factor.numerator)? / self.factor.denominator;
        let exact = i128::try_from(exact).ok()?;
        Some(if units < 0 { -exact } else { exact })
    }

    /// The effective rate in major units, spread included, for display.
    pub fn major_unit_rate(&self, from_exponent: u8, to_exponent: u8) -> String {
        // minor factor × 10^from_exponent / 10^to_exponent.
        let up = u32::from(from_exponent);
        let down = u32::from(to_exponent);
        let numerator = self.factor.numerator.checked_mul(pow10(up));
        let denominator = self.factor.denominator.checked_mul(pow10(down));
        match (numerator, denominator) {
            (Some(numerator), Some(denominator)) => Fraction {
                numerator,
                denominator,
            }
            .to_decimal(),
            _ => self.factor.to_decimal(),
        }
    }

    fn amount(units: u128) -> Result<i64, ConvertError> {
        match i64::try_from(units) {
            Ok(0) => Err(ConvertError::TooSmall),
            Ok(units) => Ok(units),
            Err(_) => Err(ConvertError::TooLarge),
        }
    }

    #[cfg(test)]
    fn factor(&self) -> Fraction {
        self.factor
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn rates_parse_exactly_and_print_canonically() {
        for (text, shown) in [
            ("1.0842", "1.0842"),
            ("1.084200", "1.0842"),
            ("0150", "150"),
            ("0.000000000012345", "0.000000000012345"),
            (".5", "0.5"),
            ("7.", "7"),
            ("123456789012345678", "123456789012345678"),
        ] {
            assert_eq!(Rate::parse(text).unwrap().to_string(), shown, "{text}");
        }
        for bad in [
            "",
            ".",
            "0",
            "0.000",
            "-1",
            "+1",
            "1e5",
            "1,5",
            " 1",
            "1.2.3",
            "NaN",
            "1234567890123456789",
        ] {
            assert!(Rate::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn the_rounding_is_against_the_user_and_stated_cases_hold() {
        // 1 USD buys 0.92 EUR with no spread: 100.00 USD → 92.00 EUR exactly.
        let rate = Rate::parse("0.92").unwrap();
        let usd_eur = Pricing::new(rate, true, 0, 2, 2).unwrap();
        assert_eq!(usd_eur.receive(10_000), Ok(9_200));
        // 0.01 USD → 0.0092 EUR: rounded down to 0 is refused, not given away.
        assert_eq!(usd_eur.receive(1), Err(ConvertError::TooSmall));
        // Receiving 1.00 EUR costs 1.0869... USD: rounded up to 1.09.
        assert_eq!(usd_eur.pay(100), Ok(109));
        // 50 bps of spread: 100.00 USD → 91.54 EUR (92 × 0.995 = 91.54).
        let spread = Pricing::new(rate, true, 50, 2, 2).unwrap();
        assert_eq!(spread.receive(10_000), Ok(9_154));
        // The other way: 1 EUR costs 1/0.92 USD; 1 BTC = 65,000 USD into sats and yen.
        let eur_usd = Pricing::new(rate, false, 0, 2, 2).unwrap();
        assert_eq!(eur_usd.receive(9_200), Ok(10_000));
        let btc = Rate::parse("65000").unwrap();
        assert_eq!(
            Pricing::new(btc, false, 0, 2, 8)
                .unwrap()
                .receive(6_500_000),
            Ok(100_000_000)
        );
        assert_eq!(
            Pricing::new(Rate::parse("150").unwrap(), true, 0, 2, 0)
                .unwrap()
                .receive(12_345),
            Ok(18_517)
        );
        assert_eq!(spread.major_unit_rate(2, 2), "0.9154");
    }

    fn exponents() -> impl Strategy<Value = u8> {
        prop::sample::select(vec![0u8, 2, 8])
    }

    proptest! {
        /// For random amounts, rates and spreads over the configured exponents (JPY 0, USD 2,
        /// BTC 8): the user never gains, and loses less than one minor unit of the rounded side.
        #[test]
        fn the_user_never_gains_and_loses_less_than_one_minor_unit(
            amount in 1i64..1_000_000_000_000,
            mantissa in 1u128..1_000_000_000_000,
            scale in 0u32..12,
            spread in 0u32..=500,
            direct in any::<bool>(),
            from_exponent in exponents(),
            to_exponent in exponents(),
        ) {
            let rate = Rate::parse(&decimal(mantissa, scale)).unwrap();
            let pricing = Pricing::new(rate, direct, spread, from_exponent, to_exponent).unwrap();
            let Fraction { numerator, denominator } = pricing.factor();
            // Paying `amount`: received × den ≤ amount × num < (received + 1) × den.
            if let Ok(received) = pricing.receive(amount) {
                let (received, paid) = (received as u128, amount as u128);
                prop_assert!(received * denominator <= paid * numerator, "gained");
                prop_assert!(paid * numerator < (received + 1) * denominator, "lost a unit");
            }
            // Receiving `amount`: paid × num ≥ amount × den > (paid − 1) × num.
            if let Ok(paid) = pricing.pay(amount) {
                let (paid, received) = (paid as u128, amount as u128);
                prop_assert!(paid * numerator >= received * denominator, "gained");
                prop_assert!((paid - 1) * numerator < received * denominator, "lost a unit");
            }
        }
    }
}
