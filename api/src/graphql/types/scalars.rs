//! Scalars of Till's own.

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};

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
}
