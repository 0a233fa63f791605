//! Money on the wire.

use async_graphql::SimpleObject;

use super::scalars::BigInt;

/// An amount of money in the store currency.
#[derive(Debug, Clone, SimpleObject)]
pub struct Money {
    /// Integer minor units (cents), as a JSON number that GraphQL's 32-bit `Int` cannot
    /// hold past 21,474,836.47.
    #[graphql(deprecation = "a 32-bit Int overflows for large totals; use `minorUnits`")]
    pub amount_minor: i64,
    /// Integer minor units (cents) as a 64-bit decimal string: the exact amount, for
    /// arithmetic.
    pub minor_units: BigInt,
    /// ISO 4217 currency code.
    pub currency: String,
    /// Decimal text such as `12.50`, for display (two decimals).
    pub amount: String,
}

impl Money {
    /// Money from minor units.
    pub fn new(minor: i64, currency: &str) -> Self {
        let sign = if minor < 0 { "-" } else { "" };
        let abs = minor.unsigned_abs();
        Self {
            amount_minor: minor,
            minor_units: BigInt(minor),
            currency: currency.to_owned(),
            amount: format!("{sign}{}.{:02}", abs / 100, abs % 100),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_two_decimals() {
        assert_eq!(super::Money::new(1250, "EUR").amount, "12.50");
        assert_eq!(super::Money::new(-5, "EUR").amount, "-0.05");
    }
}
