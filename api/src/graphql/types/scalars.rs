//! Scalars of Till's own.

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};
use chrono::NaiveDate;

/// A whole number that may need 64 bits (money in minor units, log positions, counts
/// over all time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BigInt(pub i64);

/// A signed 64-bit integer as a decimal string, e.g. `"2500000000"`: GraphQL's `Int` is 32
/// bits, and JavaScript numbers are exact only up to 2^53. As input, a string or an
/// integer.
#[Scalar(name = "BigInt")]
impl ScalarType for BigInt {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(s) => s
                .trim()
                .parse::<i64>()
                .map(BigInt)
                .map_err(|_| InputValueError::custom("not a 64-bit integer")),
            Value::Number(n) => n
                .as_i64()
                .map(BigInt)
                .ok_or_else(|| InputValueError::custom("not a 64-bit integer")),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_string())
    }
}

/// A calendar day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Date(pub NaiveDate);

/// A calendar day without a time zone: an ISO 8601 string `YYYY-MM-DD`, e.g.
/// `"2026-12-06"`. Days in reports and order filters are UTC days.
#[Scalar(name = "Date")]
impl ScalarType for Date {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(s) => NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map(Date)
                .map_err(|_| InputValueError::custom("not a date YYYY-MM-DD")),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.format("%Y-%m-%d").to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_ints_travel_as_strings_both_ways() {
        let big = BigInt(i64::MAX);
        assert_eq!(big.to_value(), Value::String("9223372036854775807".into()));
        assert_eq!(BigInt::parse(big.to_value()).ok(), Some(big));
        assert_eq!(BigInt::parse(Value::from(42)).ok(), Some(BigInt(42)));
        assert!(BigInt::parse(Value::String("12.5".into())).is_err());
        assert!(BigInt::parse(Value::String("9223372036854775808".into())).is_err());
        assert!(BigInt::parse(Value::Boolean(true)).is_err());
    }

    #[test]
    fn dates_are_iso_days() {
        let day = Date::parse(Value::String("2026-12-06".into())).ok();
        assert_eq!(
            day.map(|d| d.to_value()),
            Some(Value::String("2026-12-06".into()))
        );
        for bad in ["2026-13-01", "06.12.2026", "2026-12-06T00:00:00Z", ""] {
            assert!(Date::parse(Value::String(bad.into())).is_err(), "{bad}");
        }
    }
}
