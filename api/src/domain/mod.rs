//! Typed values, parsed once at the edge.
//!
//! Every value that reaches the service layer has been through one of these `parse`
//! functions, which are the only way to build them. A parse failure names the field it
//! concerns, so GraphQL and REST can both say exactly what was wrong.

use std::fmt;

use crate::error::ServiceError;

pub mod metadata;
pub mod picture;

pub use picture::{Picture, PictureLimits};

/// Largest price, in rupiah.
pub const MAX_PRICE: i64 = 1_000_000_000;
/// Largest quantity a product may hold; it keeps every sum of quantities and deltas far
/// from overflow and inside GraphQL's 32-bit `Int`.
pub const MAX_QUANTITY: i64 = 1_000_000_000;

fn invalid(field: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError::invalid(field, message)
}

/// A partner's login name: 3–32 characters of `a-z 0-9 _ . -`.
///
/// Input is lower-cased first, so `Saif` and `saif` are the same account: uniqueness is
/// case-insensitive because only one spelling can ever be stored.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Username(String);

impl Username {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, ServiceError> {
        let name = raw.to_ascii_lowercase();
        let len = name.chars().count();
        if !(3..=32).contains(&len) {
            return Err(invalid(field, "must be 3 to 32 characters long"));
        }
        if !name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        }) {
            return Err(invalid(
                field,
                "may contain only letters a-z, digits 0-9, '_', '.' and '-'",
            ));
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A password as typed: 8–128 characters. Its `Debug` never shows it.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, ServiceError> {
        let len = raw.chars().count();
        if !(8..=128).contains(&len) {
            return Err(invalid(field, "must be 8 to 128 characters long"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(…)")
    }
}

/// Checks a free-text field: trimmed, within `min..=max` characters, no control
/// characters other than newlines and tabs (which only `multiline` fields accept).
fn text(
    field: &'static str,
    raw: &str,
    min: usize,
    max: usize,
    multiline: bool,
) -> Result<String, ServiceError> {
    let value = raw.trim();
    let len = value.chars().count();
    if len < min || len > max {
        return Err(if min > 0 && len == 0 {
            invalid(field, "must not be empty")
        } else {
            invalid(field, format!("must be at most {max} characters long"))
        });
    }
    let allowed = |c: char| !c.is_control() || (multiline && matches!(c, '\n' | '\r' | '\t'));
    if !value.chars().all(allowed) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(value.to_owned())
}

/// A product name: 1–100 characters after trimming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductName(String);

impl ProductName {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, ServiceError> {
        text(field, raw, 1, 100, false).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key that sorting and searching use: the same on SQLite and PostgreSQL.
    pub fn key(&self) -> String {
        self.0.to_lowercase()
    }
}

/// A product description: at most 1000 characters; may be empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description(String);

impl Description {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, ServiceError> {
        text(field, raw, 0, 1000, true).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A category: 1–40 characters, stored lower-case so `Makanan` and `makanan` are one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Category(String);

impl Category {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, ServiceError> {
        text(field, raw, 1, 40, false).map(|c| Self(c.to_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A price in rupiah: an integer from 0 to [`MAX_PRICE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price(i64);

impl Price {
    pub fn parse(field: &'static str, raw: i64) -> Result<Self, ServiceError> {
        if !(0..=MAX_PRICE).contains(&raw) {
            return Err(invalid(
                field,
                format!("must be between 0 and {MAX_PRICE} rupiah"),
            ));
        }
        Ok(Self(raw))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// A stock quantity: an integer from 0 to [`MAX_QUANTITY`]. Also used for low-stock
/// thresholds and expected quantities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity(i64);

impl Quantity {
    pub fn parse(field: &'static str, raw: i64) -> Result<Self, ServiceError> {
        if !(0..=MAX_QUANTITY).contains(&raw) {
            return Err(invalid(
                field,
                format!("must be between 0 and {MAX_QUANTITY}"),
            ));
        }
        Ok(Self(raw))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// A change of stock: a non-zero integer within ±[`MAX_QUANTITY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockDelta(i64);

impl StockDelta {
    pub fn parse(field: &'static str, raw: i64) -> Result<Self, ServiceError> {
        if raw == 0 {
            return Err(invalid(field, "must not be zero"));
        }
        if !(-MAX_QUANTITY..=MAX_QUANTITY).contains(&raw) {
            return Err(invalid(
                field,
                format!("must be between -{MAX_QUANTITY} and {MAX_QUANTITY}"),
            ));
        }
        Ok(Self(raw))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// Why stock changed. Stored as its upper-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StockReason {
    Restock,
    Sale,
    Waste,
    Correction,
    Count,
    Other,
}

impl StockReason {
    pub const ALL: [StockReason; 6] = [
        Self::Restock,
        Self::Sale,
        Self::Waste,
        Self::Correction,
        Self::Count,
        Self::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Restock => "RESTOCK",
            Self::Sale => "SALE",
            Self::Waste => "WASTE",
            Self::Correction => "CORRECTION",
            Self::Count => "COUNT",
            Self::Other => "OTHER",
        }
    }

    /// Case-insensitive, so the REST routes can accept `"sale"`.
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, ServiceError> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(raw.trim()))
            .ok_or_else(|| {
                invalid(
                    field,
                    "must be one of RESTOCK, SALE, WASTE, CORRECTION, COUNT, OTHER",
                )
            })
    }
}

/// An optional note on a stock movement: at most 500 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note(String);

impl Note {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, ServiceError> {
        text(field, raw, 0, 500, true).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A client-chosen idempotency key: 1–128 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, ServiceError> {
        if raw.is_empty() || raw.len() > 128 {
            return Err(invalid(field, "must be 1 to 128 characters long"));
        }
        if !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(field, "may contain only visible ASCII characters"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The name of an API token: 1–60 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenName(String);

impl TokenName {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, ServiceError> {
        text(field, raw, 1, 60, false).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A database id given by a client, as GraphQL's `ID` string or a REST number.
pub fn parse_id(field: &'static str, raw: &str) -> Result<i64, ServiceError> {
    raw.trim()
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| invalid(field, "is not a valid id"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn usernames_are_lower_cased_and_checked() {
        assert_eq!(
            Username::parse("u", "Saif_01").map(|u| u.0).ok(),
            Some("saif_01".into())
        );
        assert!(Username::parse("u", "ab").is_err());
        assert!(Username::parse("u", &"a".repeat(33)).is_err());
        assert!(Username::parse("u", "has space").is_err());
        assert!(Username::parse("u", "ünï").is_err());
    }

    #[test]
    fn password_debug_hides_the_secret() {
        let p = Password::parse("p", "correct horse").ok();
        assert!(!format!("{p:?}").contains("horse"));
        assert!(Password::parse("p", "short").is_err());
        assert!(Password::parse("p", &"x".repeat(129)).is_err());
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(
            ProductName::parse("n", "  Nasi  ").ok().map(|n| n.0),
            Some("Nasi".into())
        );
        assert!(ProductName::parse("n", "   ").is_err());
        assert!(ProductName::parse("n", &"é".repeat(101)).is_err());
        assert!(ProductName::parse("n", &"é".repeat(100)).is_ok());
        assert!(ProductName::parse("n", "a\u{0}b").is_err());
        assert!(Description::parse("d", "line\nline").is_ok());
    }

    #[test]
    fn reasons_parse_case_insensitively() {
        assert_eq!(
            StockReason::parse("r", "sale").ok(),
            Some(StockReason::Sale)
        );
        assert!(StockReason::parse("r", "gift").is_err());
    }

    #[test]
    fn errors_name_their_field() {
        match Price::parse("input.price", -1) {
            Err(ServiceError::Invalid { field, .. }) => assert_eq!(field, "input.price"),
            other => panic!("expected an invalid-input error, got {other:?}"),
        }
    }

    proptest! {
        #[test]
        fn usernames_accept_exactly_the_documented_alphabet(s in "\\PC{0,40}") {
            let ok = Username::parse("u", &s).is_ok();
            let lower = s.to_ascii_lowercase();
            let expected = (3..=32).contains(&lower.chars().count())
                && lower.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
            prop_assert_eq!(ok, expected);
        }

        #[test]
        fn prices_accept_exactly_their_range(p in any::<i64>()) {
            prop_assert_eq!(Price::parse("p", p).is_ok(), (0..=MAX_PRICE).contains(&p));
        }

        #[test]
        fn quantities_accept_exactly_their_range(q in any::<i64>()) {
            prop_assert_eq!(Quantity::parse("q", q).is_ok(), (0..=MAX_QUANTITY).contains(&q));
        }

        #[test]
        fn deltas_are_nonzero_and_bounded(d in any::<i64>()) {
            prop_assert_eq!(
                StockDelta::parse("d", d).is_ok(),
                d != 0 && (-MAX_QUANTITY..=MAX_QUANTITY).contains(&d)
            );
        }

        #[test]
        fn idempotency_keys_are_visible_ascii(k in "\\PC{0,140}") {
            let expected = !k.is_empty() && k.len() <= 128 && k.bytes().all(|b| b.is_ascii_graphic());
            prop_assert_eq!(IdempotencyKey::parse("k", &k).is_ok(), expected);
        }

        #[test]
        fn ids_roundtrip(id in 1..i64::MAX) {
            prop_assert_eq!(parse_id("id", &id.to_string()).ok(), Some(id));
        }

        #[test]
        fn ids_are_positive_decimal_integers(s in "[ +-]?[0-9a-z ]{0,22}") {
            let expected = s.trim().parse::<i64>().ok().filter(|id| *id > 0);
            prop_assert_eq!(parse_id("id", &s).ok(), expected);
        }

        #[test]
        fn passwords_are_8_to_128_characters_of_anything(p in "\\PC{0,140}") {
            let expected = (8..=128).contains(&p.chars().count());
            let parsed = Password::parse("p", &p);
            prop_assert_eq!(parsed.is_ok(), expected);
            if let Ok(parsed) = parsed {
                prop_assert_eq!(parsed.expose(), p.as_str());
            }
        }

        /// Names, descriptions, categories, notes and token names: trimmed, bounded in
        /// characters (not bytes), and free of control characters (descriptions and
        /// notes may hold line breaks and tabs).
        #[test]
        fn text_fields_are_trimmed_bounded_and_free_of_controls(
            s in "[ \t\n\r]{0,2}(\\PC|[\u{0}-\u{1f}\u{7f}]){0,120}[ \t\n\r]{0,2}",
        ) {
            let trimmed = s.trim();
            let len = trimmed.chars().count();
            let plain = !trimmed.chars().any(char::is_control);
            let multiline = trimmed.chars().all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t'));
            let check = |ok: bool, min: usize, max: usize, allowed: bool| {
                ok == ((min..=max).contains(&len) && allowed)
            };
            prop_assert!(check(ProductName::parse("n", &s).is_ok(), 1, 100, plain));
            prop_assert!(check(Category::parse("c", &s).is_ok(), 1, 40, plain));
            prop_assert!(check(TokenName::parse("t", &s).is_ok(), 1, 60, plain));
            prop_assert!(check(Description::parse("d", &s).is_ok(), 0, 1000, multiline));
            prop_assert!(check(Note::parse("o", &s).is_ok(), 0, 500, multiline));
            if let Ok(name) = ProductName::parse("n", &s) {
                prop_assert_eq!(name.as_str(), trimmed);
            }
            if let Ok(category) = Category::parse("c", &s) {
                prop_assert_eq!(category.as_str(), trimmed.to_lowercase());
            }
        }

        #[test]
        fn reasons_are_the_six_names_in_any_case(
            name in proptest::sample::select(vec!["restock", "sale", "waste", "correction", "count", "other", "gift", ""]),
            upper in proptest::collection::vec(any::<bool>(), 10),
        ) {
            let s: String = name
                .chars()
                .zip(upper.iter().cycle())
                .map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c })
                .collect();
            let parsed = StockReason::parse("r", &s);
            prop_assert_eq!(parsed.is_ok(), !s.is_empty() && !s.eq_ignore_ascii_case("gift"));
            if let Ok(reason) = parsed {
                prop_assert!(reason.as_str().eq_ignore_ascii_case(&s));
            }
        }
    }
}
