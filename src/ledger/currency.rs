//! The currency table: upper-case codes and their exponents (minor units per major unit as a
//! power of ten). Configured by `TALLY_CURRENCIES`; synced into the `currencies` table at start
//! so accounts can reference it. An exponent can never change once stored: every amount in that
//! currency would silently change value.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// The defaults of the contract.
pub const CURRENCIES_DEFAULT: &str = "USD:2,EUR:2,GBP:2,CAD:2,JPY:0,BTC:8";
/// More would be a configuration mistake, not a product.
const CURRENCIES_MAX: usize = 200;
/// Codes an unknown-currency error lists.
const UNKNOWN_CODES_SHOWN_MAX: usize = 8;
const EXPONENT_MAX: u8 = 18;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Currencies {
    exponents: BTreeMap<String, u8>,
}

impl Currencies {
    /// Parses `CODE:EXPONENT,CODE:EXPONENT,...`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut exponents = BTreeMap::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (code, exponent) = item
                .split_once(':')
                .ok_or_else(|| format!("{item:?} is not CODE:EXPONENT"))?;
            let code = code.trim();
            if !is_code(code) {
                return Err(format!("{code:?} is not 3 to 5 upper-case letters"));
            }
            let exponent: u8 = exponent
                .trim()
                .parse()
                .ok()
                .filter(|e| *e <= EXPONENT_MAX)
                .ok_or_else(|| format!("{code}: exponent must be 0 to {EXPONENT_MAX}"))?;
            if exponents.insert(code.to_owned(), exponent).is_some() {
                return Err(format!("{code} is listed twice"));
            }
        }
        if exponents.is_empty() {
            return Err("at least one currency is required".into());
        }
        if exponents.len() > CURRENCIES_MAX {
            return Err(format!("at most {CURRENCIES_MAX} currencies"));
        }
        Ok(Self { exponents })
    }

    /// Validates a requested currency code against the table.
    pub fn require(&self, field: &'static str, code: &str) -> Result<String> {
        if code.is_empty() {
            return Err(Error::invalid(field, "is required"));
        }
        if self.exponents.contains_key(code) {
            Ok(code.to_owned())
        } else {
            // At most a few codes, so the message stays short however long the table is.
            let shown: Vec<&str> = self
                .exponents
                .keys()
                .take(UNKNOWN_CODES_SHOWN_MAX)
                .map(String::as_str)
                .collect();
            let more = self.exponents.len().saturating_sub(shown.len());
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            Err(Error::invalid(
                field,
                format!("unknown currency; one of {}{more}", shown.join(", ")),
            ))
        }
    }

    /// The exponent of `code`, if the table has it.
    pub fn exponent(&self, code: &str) -> Option<u8> {
        self.exponents.get(code).copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, u8)> {
        self.exponents.iter().map(|(c, e)| (c.as_str(), *e))
    }
}

impl Default for Currencies {
    fn default() -> Self {
        Self::parse(CURRENCIES_DEFAULT).expect("the default currency table is valid")
    }
}

/// A currency code as a request may name one (3 to 5 upper-case letters); whether the ledger
/// knows it is [`Currencies::require`]'s question.
pub fn code(field: &'static str, code: &str) -> Result<String> {
    if code.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if !is_code(code) {
        return Err(Error::invalid(field, "must be 3 to 5 upper-case letters"));
    }
    Ok(code.to_owned())
}

fn is_code(code: &str) -> bool {
    (3..=5).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_table_has_the_contract_currencies() {
        let c = Currencies::default();
        let all: Vec<_> = c.iter().collect();
        assert_eq!(
            all,
            [
                ("BTC", 8),
                ("CAD", 2),
                ("EUR", 2),
                ("GBP", 2),
                ("JPY", 0),
                ("USD", 2)
            ]
        );
        assert_eq!(c.require("currency", "JPY").unwrap(), "JPY");
        assert!(c.require("currency", "usd").is_err());
        assert!(c.require("currency", "XXX").is_err());
        assert!(c.require("currency", "").is_err());
    }

    #[test]
    fn malformed_tables_are_refused() {
        for bad in [
            "",
            "USD",
            "USD:2,USD:2",
            "usd:2",
            "USD:19",
            "USD:-1",
            "TOOLONG:2",
        ] {
            assert!(Currencies::parse(bad).is_err(), "{bad}");
        }
        assert!(Currencies::parse(" EUR:2 , JPY:0 ").is_ok());
    }
}
