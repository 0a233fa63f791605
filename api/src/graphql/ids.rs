//! Relay global ids: base64 of `Type:uuid`, so `node(id:)` can tell types apart.

use async_graphql::ID;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use uuid::Uuid;

use super::codes::{coded, Code};

/// Types that have global ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A product.
    Product,
    /// A category.
    Category,
    /// An order.
    Order,
    /// A customer account.
    Customer,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Product => "Product",
            Kind::Category => "Category",
            Kind::Order => "Order",
            Kind::Customer => "Customer",
        }
    }

    fn from_prefix(s: &str) -> Option<Self> {
        [Kind::Product, Kind::Category, Kind::Order, Kind::Customer]
            .into_iter()
            .find(|k| k.prefix() == s)
    }
}

/// Encodes a global id.
pub fn encode(kind: Kind, id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{id}", kind.prefix()))
}

/// Encodes a global id as a GraphQL `ID`.
pub fn id(kind: Kind, uuid: Uuid) -> ID {
    ID(encode(kind, uuid))
}

/// Decodes any global id.
pub fn decode_any(id: &str) -> Option<(Kind, Uuid)> {
    let raw = URL_SAFE_NO_PAD.decode(id.trim_end_matches('=')).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (prefix, uuid) = text.split_once(':')?;
    Some((Kind::from_prefix(prefix)?, Uuid::parse_str(uuid).ok()?))
}

/// Decodes a global id that must be of `kind` (BAD_USER_INPUT otherwise).
pub fn decode(kind: Kind, id: &ID, field: &str) -> Result<Uuid, async_graphql::Error> {
    match decode_any(id) {
        Some((k, uuid)) if k == kind => Ok(uuid),
        _ => Err(coded(
            Code::BadUserInput,
            format!("{field}: not a {} id", kind.prefix()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_types_are_checked() {
        let u = Uuid::now_v7();
        let g = id(Kind::Order, u);
        assert_eq!(decode_any(&g), Some((Kind::Order, u)));
        assert!(decode(Kind::Product, &g, "id").is_err());
        assert!(decode_any("not-base64!").is_none());
        assert!(decode_any(&URL_SAFE_NO_PAD.encode("Order:nope")).is_none());
    }
}
