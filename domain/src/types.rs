//! Parse-don't-validate newtypes for command input. A value of one of these types has
//! passed its rules, so commands never re-check them.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::DomainError;

fn invalid(field: &'static str, message: impl Into<String>) -> DomainError {
    DomainError::Validation {
        field,
        message: message.into(),
    }
}

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new, time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_newtype!(
    /// Identifies a category.
    CategoryId
);
id_newtype!(
    /// Identifies a product (and its inventory row).
    ProductId
);
id_newtype!(
    /// Identifies a customer account (customers, staff and admins alike).
    CustomerId
);
id_newtype!(
    /// Identifies an order.
    OrderId
);

/// A stock keeping unit: 1-64 characters of letters, digits, `.`, `_`, `-`, starting
/// with a letter or digit. Stored as given; unique across products.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sku(String);

impl Sku {
    /// Parses and validates a SKU.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let s = raw.trim();
        let mut chars = s.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
        let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !first_ok || !rest_ok || s.len() > 64 {
            return Err(invalid(
                "sku",
                "a SKU is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// The SKU text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A URL-safe category slug: lowercase letters and digits in dash-separated words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slug(String);

impl Slug {
    /// Parses and validates a slug.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let s = raw.trim();
        let ok = !s.is_empty()
            && s.len() <= 100
            && s.split('-').all(|w| {
                !w.is_empty()
                    && w.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            });
        if !ok {
            return Err(invalid(
                "slug",
                "a slug is lowercase letters and digits in words separated by single dashes (at most 100 characters)",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// The slug text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A display name (product, category, customer): 1-200 characters after trimming.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Name(String);

impl Name {
    /// Parses a name for the given input field.
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, DomainError> {
        let s = raw.trim();
        let len = s.chars().count();
        if len == 0 || len > 200 {
            return Err(invalid(field, "must be 1 to 200 characters"));
        }
        Ok(Self(s.to_owned()))
    }

    /// The name text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A product description: at most 10,000 characters.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Description(String);

impl Description {
    /// Parses a description.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        if raw.chars().count() > 10_000 {
            return Err(invalid("description", "must be at most 10000 characters"));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The description text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An email address, kept as typed but compared case-insensitively by the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Email(String);

impl Email {
    /// Parses an email: one `@` with a non-empty local part and a dotted domain.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let s = raw.trim();
        let valid = s.len() <= 254
            && !s.chars().any(char::is_whitespace)
            && match s.split_once('@') {
                Some((local, domain)) => {
                    !local.is_empty()
                        && !domain.contains('@')
                        && domain.contains('.')
                        && !domain.starts_with('.')
                        && !domain.ends_with('.')
                }
                None => false,
            };
        if !valid {
            return Err(invalid("email", "is not a valid email address"));
        }
        Ok(Self(s.to_owned()))
    }

    /// The address text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A quantity of units in an order line: 1 to 10,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Quantity(i32);

impl Quantity {
    /// Largest quantity one order line may ask for.
    pub const MAX: i64 = 10_000;

    /// Parses a line quantity.
    pub fn parse(raw: i64) -> Result<Self, DomainError> {
        if !(1..=Self::MAX).contains(&raw) {
            return Err(invalid(
                "quantity",
                format!("must be between 1 and {}", Self::MAX),
            ));
        }
        Ok(Self(raw as i32))
    }

    /// The number of units.
    pub fn get(self) -> i32 {
        self.0
    }
}

/// A stock movement: a positive restock, or a signed adjustment, bounded to +-1,000,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockDelta(i32);

impl StockDelta {
    /// Parses a restock quantity (strictly positive).
    pub fn restock(raw: i64) -> Result<Self, DomainError> {
        if !(1..=1_000_000).contains(&raw) {
            return Err(invalid("quantity", "must be between 1 and 1000000"));
        }
        Ok(Self(raw as i32))
    }

    /// Parses an adjustment (non-zero, either sign).
    pub fn adjustment(raw: i64) -> Result<Self, DomainError> {
        if raw == 0 || !(-1_000_000..=1_000_000).contains(&raw) {
            return Err(invalid("delta", "must be non-zero and within +-1000000"));
        }
        Ok(Self(raw as i32))
    }

    /// The signed number of units.
    pub fn get(self) -> i32 {
        self.0
    }
}

/// An amount of money in integer minor units (cents) of the store currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Money(i64);

impl Money {
    /// Largest price accepted for one unit (one billion minor units).
    pub const MAX_PRICE: i64 = 1_000_000_000;

    /// Parses a unit price: 0 to [`Money::MAX_PRICE`] minor units.
    pub fn price(raw: i64) -> Result<Self, DomainError> {
        if !(0..=Self::MAX_PRICE).contains(&raw) {
            return Err(invalid(
                "priceMinor",
                format!("must be between 0 and {} minor units", Self::MAX_PRICE),
            ));
        }
        Ok(Self(raw))
    }

    /// Wraps a stored amount.
    pub fn from_minor(minor: i64) -> Self {
        Self(minor)
    }

    /// Minor units.
    pub fn minor(self) -> i64 {
        self.0
    }

    /// `self * qty`, or `None` on overflow.
    pub fn times(self, qty: Quantity) -> Option<Self> {
        self.0.checked_mul(i64::from(qty.get())).map(Self)
    }

    /// `self + other`, or `None` on overflow.
    pub fn plus(self, other: Self) -> Option<Self> {
        self.0.checked_add(other.0).map(Self)
    }
}

/// An ISO 4217 currency code (three uppercase letters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Currency(String);

impl Currency {
    /// Parses a currency code such as `EUR`.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        if raw.len() != 3 || !raw.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(invalid("currency", "must be an ISO 4217 code such as EUR"));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! str_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// The stored text of this value.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }

            /// Parses the stored text.
            pub fn from_db(s: &str) -> Result<Self, DomainError> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => Err(DomainError::Internal(format!(
                        concat!("unknown ", stringify!($name), " {:?} in database"), other))),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

str_enum!(
    /// Lifecycle of a product.
    ProductStatus {
        /// Not yet for sale.
        Draft => "DRAFT",
        /// For sale.
        Active => "ACTIVE",
        /// No longer for sale; kept for order history.
        Archived => "ARCHIVED",
    }
);

str_enum!(
    /// Lifecycle of an order.
    OrderStatus {
        /// Placed, stock reserved, waiting for payment.
        PendingPayment => "PENDING_PAYMENT",
        /// Payment captured; reserved stock moved out.
        Paid => "PAID",
        /// Handed to the carrier.
        Shipped => "SHIPPED",
        /// Cancelled before payment; stock released.
        Cancelled => "CANCELLED",
        /// Payment declined; stock released.
        PaymentFailed => "PAYMENT_FAILED",
        /// Not paid in time; stock released.
        Expired => "EXPIRED",
    }
);

impl OrderStatus {
    /// The order state machine: PENDING_PAYMENT -> PAID -> SHIPPED, or from
    /// PENDING_PAYMENT to CANCELLED, PAYMENT_FAILED or EXPIRED.
    pub fn can_become(self, to: OrderStatus) -> bool {
        use OrderStatus::*;
        matches!(
            (self, to),
            (PendingPayment, Paid | Cancelled | PaymentFailed | Expired) | (Paid, Shipped)
        )
    }
}

str_enum!(
    /// What an account may do.
    Role {
        /// A shopper: sees the catalog and their own orders.
        Customer => "CUSTOMER",
        /// Back office: catalog, inventory, all orders, reports.
        Staff => "STAFF",
        /// Staff plus account administration.
        Admin => "ADMIN",
    }
);

impl Role {
    /// STAFF and ADMIN may use the back office.
    pub fn is_staff(self) -> bool {
        matches!(self, Role::Staff | Role::Admin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sku_rules() {
        assert!(Sku::parse("ABC-123_x.9").is_ok());
        assert!(Sku::parse("-abc").is_err());
        assert!(Sku::parse("").is_err());
        assert!(Sku::parse("has space").is_err());
        assert!(Sku::parse(&"A".repeat(65)).is_err());
    }

    #[test]
    fn slug_rules() {
        assert!(Slug::parse("home-and-garden").is_ok());
        assert!(Slug::parse("Home").is_err());
        assert!(Slug::parse("a--b").is_err());
        assert!(Slug::parse("-a").is_err());
    }

    #[test]
    fn email_rules() {
        assert!(Email::parse("Ann@Example.com").is_ok());
        assert!(Email::parse("ann@example").is_err());
        assert!(Email::parse("@example.com").is_err());
        assert!(Email::parse("a b@example.com").is_err());
    }

    #[test]
    fn quantities_and_money() {
        assert!(Quantity::parse(0).is_err());
        assert!(Quantity::parse(10_001).is_err());
        let q = Quantity::parse(3).map_err(|e| e.to_string());
        assert_eq!(q.map(Quantity::get), Ok(3));
        assert!(Money::price(-1).is_err());
        assert_eq!(Money::from_minor(i64::MAX).plus(Money::from_minor(1)), None);
        assert!(StockDelta::adjustment(0).is_err());
        assert!(StockDelta::restock(-5).is_err());
    }

    #[test]
    fn enums_round_trip() {
        for s in [
            "PENDING_PAYMENT",
            "PAID",
            "SHIPPED",
            "CANCELLED",
            "PAYMENT_FAILED",
            "EXPIRED",
        ] {
            assert_eq!(OrderStatus::from_db(s).map(|v| v.as_str()).ok(), Some(s));
        }
        assert!(Role::from_db("ROOT").is_err());
    }

    #[test]
    fn order_state_machine() {
        use OrderStatus::*;
        assert!(PendingPayment.can_become(Paid));
        assert!(PendingPayment.can_become(Cancelled));
        assert!(Paid.can_become(Shipped));
        assert!(!Paid.can_become(Cancelled));
        assert!(!Shipped.can_become(Paid));
        assert!(!Cancelled.can_become(Paid));
        assert!(!PendingPayment.can_become(Shipped));
    }
}
