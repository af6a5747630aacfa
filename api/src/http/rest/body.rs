//! Reading REST request bodies: JSON (and forms, for `join` and `login`), integers that
//! may arrive as strings, `data:` URI pictures and the `Idempotency-Key` header.
//!
//! A malformed body is a 400 whose message names the field; a body of another media
//! type is a 415, and one over the limit a 413, before any of it is parsed.

use std::fmt;

use axum::body::{to_bytes, Body, Bytes};
use axum::http::HeaderMap;
use base64::Engine as _;
use serde::de::{self, DeserializeOwned, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::openapi::schema::{
    KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
};

use super::error::RestError;
use crate::domain::{IdempotencyKey, MAX_PRICE, MAX_QUANTITY};
use crate::http::{content_essence, declared_length};

/// An integer field: a JSON number, or a string holding a base-10 integer (`"9999"`,
/// `"-3"`), as the original clients send. `12.5`, `"12.5"`, `1e3`, `"abc"` and `true`
/// are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Int(pub i64);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IntVisitor;

        impl Visitor<'_> for IntVisitor {
            type Value = Int;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer, or a string holding a base-10 integer")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int, E> {
                Ok(Int(v))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int, E> {
                i64::try_from(v)
                    .map(Int)
                    .map_err(|_| E::custom(format!("{v} is out of range")))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Int, E> {
                Err(E::custom(format!(
                    "must be a whole number written without a fraction or exponent, not {v}"
                )))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Int, E> {
                parse_decimal(v).map(Int).map_err(E::custom)
            }
        }

        deserializer.deserialize_any(IntVisitor)
    }
}

/// A base-10 integer: an optional `-`, then digits only.
fn parse_decimal(raw: &str) -> Result<i64, String> {
    let digits = raw.strip_prefix('-').unwrap_or(raw);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "must be an integer, or a string holding a base-10 integer, not {raw:?}"
        ));
    }
    raw.parse::<i64>()
        .map_err(|_| format!("{raw:?} is out of range"))
}

/// The OpenAPI schema of an [`Int`] that must lie in `min..=max`: a JSON number, or a
/// string of digits. JSON Schema cannot bound the value of a string, so the description
/// states the range for both.
fn int_in(min: i64, max: i64, note: &str) -> Schema {
    Schema::OneOf(
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                    .minimum(Some(min))
                    .maximum(Some(max)),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^-?[0-9]+$")),
            )
            .description(Some(format!(
                "An integer from {min} to {max}{note}, as a JSON number or a string holding \
                 a base-10 integer"
            )))
            .build(),
    )
}

/// The schema of a product id in a body.
pub fn id_schema() -> Schema {
    int_in(1, i64::MAX, "")
}

/// The schema of a price, in rupiah.
pub fn price_schema() -> Schema {
    int_in(0, MAX_PRICE, "")
}

/// The schema of a quantity.
pub fn quantity_schema() -> Schema {
    int_in(0, MAX_QUANTITY, "")
}

/// The schema of a stock change.
pub fn delta_schema() -> Schema {
    int_in(-MAX_QUANTITY, MAX_QUANTITY, ", not 0")
}

/// Reads a JSON body into `T`. Another media type is a 415.
pub async fn json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<T, RestError> {
    if content_essence(headers).as_deref() != Some("application/json") {
        return Err(RestError::unsupported_media_type(
            "the body must be JSON, sent with Content-Type: application/json",
        ));
    }
    let bytes = read(headers, body, limit).await?;
    parse_json(&bytes)
}

/// Reads a JSON or a form-encoded body into `T` (`join` and `login` take both).
pub async fn json_or_form<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<T, RestError> {
    match content_essence(headers).as_deref() {
        Some("application/json") => parse_json(&read(headers, body, limit).await?),
        Some("application/x-www-form-urlencoded") => {
            let bytes = read(headers, body, limit).await?;
            serde_urlencoded::from_bytes(&bytes)
                .map_err(|err| RestError::bad_request(format!("body: {err}")))
        }
        _ => Err(RestError::unsupported_media_type(
            "the body must be JSON (application/json) or a form \
             (application/x-www-form-urlencoded)",
        )),
    }
}

async fn read(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, RestError> {
    let too_large =
        || RestError::payload_too_large(format!("the body is larger than {limit} bytes"));
    if declared_length(headers).is_some_and(|len| len > limit) {
        return Err(too_large());
    }
    to_bytes(body, limit).await.map_err(|_| too_large())
}

/// Parses JSON, naming the field that failed.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RestError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize::<_, T>(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            RestError::bad_request(format!("body: not valid JSON ({inner})"))
        } else if path == "." {
            RestError::bad_request(format!("body: {inner}"))
        } else {
            RestError::bad_request(format!("{path}: {inner}"))
        }
    })?;
    deserializer
        .end()
        .map_err(|err| RestError::bad_request(format!("body: not valid JSON ({err})")))?;
    Ok(value)
}

/// The `Idempotency-Key` header, as the OpenAPI document shows it.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyHeader {
    /// Makes a write safe to retry: a retry returns the first response, and the same key
    /// with another request is a 422. Keys are per partner (1 to 128 visible ASCII
    /// characters) and kept for a day.
    #[param(rename = "Idempotency-Key", pattern = "^[!-~]{1,128}$")]
    #[allow(dead_code)]
    idempotency_key: Option<String>,
}

/// The `Idempotency-Key` header, if the request has one.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, RestError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| RestError::bad_request("Idempotency-Key: must be visible ASCII"))?;
    IdempotencyKey::parse("Idempotency-Key", value)
        .map(Some)
        .map_err(RestError::from)
}

/// What an `image` field of a product body asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum ImageField {
    /// `""`: no picture.
    None,
    /// A `data:` URI's decoded bytes.
    Upload(Vec<u8>),
    /// The URL path of a stored picture, to reuse.
    Stored(String),
}

const IMAGE_FORMS: &str = "image: must be a data:image/...;base64,... URI, the path of a stored \
     picture (/images/{hash}.{ext}), or \"\" for none";

impl ImageField {
    /// Parses the field; `max_bytes` bounds a decoded upload (413 beyond it).
    pub fn parse(raw: &str, max_bytes: usize) -> Result<Self, RestError> {
        if raw.is_empty() {
            return Ok(Self::None);
        }
        if raw.starts_with("/images/") {
            return Ok(Self::Stored(raw.to_owned()));
        }
        let Some(rest) = raw.strip_prefix("data:") else {
            return Err(RestError::bad_request(IMAGE_FORMS));
        };
        let Some((meta, data)) = rest.split_once(',') else {
            return Err(RestError::bad_request(IMAGE_FORMS));
        };
        let Some(media_type) = meta.strip_suffix(";base64") else {
            return Err(RestError::bad_request(
                "image: a data: URI must be base64-encoded (data:image/png;base64,...)",
            ));
        };
        if !media_type.to_ascii_lowercase().starts_with("image/") {
            return Err(RestError::bad_request(format!(
                "image: a data: URI must hold an image, not {media_type:?}"
            )));
        }
        // Four base64 characters carry three bytes: refuse before decoding anything big.
        if data.len() / 4 * 3 > max_bytes + 3 {
            return Err(too_large_picture(max_bytes));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|err| RestError::bad_request(format!("image: not valid base64 ({err})")))?;
        if bytes.len() > max_bytes {
            return Err(too_large_picture(max_bytes));
        }
        Ok(Self::Upload(bytes))
    }
}

pub fn too_large_picture(max_bytes: usize) -> RestError {
    RestError::payload_too_large(format!(
        "image: the picture is larger than the limit of {max_bytes} bytes"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(json: &str) -> Result<i64, String> {
        serde_json::from_str::<Int>(json)
            .map(|i| i.0)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn integers_arrive_as_numbers_or_decimal_strings() {
        assert_eq!(int("9999"), Ok(9999));
        assert_eq!(int("\"9999\""), Ok(9999));
        assert_eq!(int("\"-3\""), Ok(-3));
        assert_eq!(int("-3"), Ok(-3));
        for bad in [
            "12.5",
            "\"12.5\"",
            "1e3",
            "\"1e3\"",
            "\"abc\"",
            "true",
            "null",
            "\"\"",
            "\"-\"",
            "\" 1\"",
            "\"+1\"",
            "\"0x10\"",
            "[1]",
            "{}",
            "9223372036854775808",
            "\"9223372036854775808\"",
        ] {
            assert!(int(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn image_fields_take_three_forms() {
        assert_eq!(ImageField::parse("", 10).ok(), Some(ImageField::None));
        assert_eq!(
            ImageField::parse("/images/ab.png", 10).ok(),
            Some(ImageField::Stored("/images/ab.png".into()))
        );
        assert_eq!(
            ImageField::parse("data:image/png;base64,AAEC", 10).ok(),
            Some(ImageField::Upload(vec![0, 1, 2]))
        );
        for bad in [
            "http://example.com/a.png",
            "data:image/png,raw",
            "data:text/plain;base64,AAEC",
            "data:image/png;base64,@@@",
        ] {
            let err = ImageField::parse(bad, 10).err();
            assert_eq!(
                err.map(|e| e.status().as_u16()),
                Some(400),
                "{bad} was accepted"
            );
        }
        let big = format!("data:image/png;base64,{}", "A".repeat(40));
        assert_eq!(
            ImageField::parse(&big, 10)
                .err()
                .map(|e| e.status().as_u16()),
            Some(413)
        );
    }

    proptest::proptest! {
        #[test]
        fn every_i64_arrives_as_a_number_or_a_string(v in proptest::prelude::any::<i64>()) {
            proptest::prop_assert_eq!(int(&v.to_string()), Ok(v));
            proptest::prop_assert_eq!(int(&format!("\"{v}\"")), Ok(v));
        }

        /// A numeric string is accepted exactly when it is an optional `-` and digits
        /// that fit in an i64; nothing else (spaces, `+`, fractions, exponents, hex).
        #[test]
        fn numeric_strings_are_exactly_base_10_integers(s in "[-+ 0-9.eEx]{0,24}") {
            let digits = s.strip_prefix('-').unwrap_or(&s);
            let well_formed = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
            let expected = s.parse::<i64>().ok().filter(|_| well_formed);
            let json = serde_json::to_string(&s).unwrap();
            proptest::prop_assert_eq!(int(&json).ok(), expected);
        }

        /// Any JSON at all is either an integer or a clear error, never a panic.
        #[test]
        fn any_json_value_is_an_integer_or_an_error(s in "\\PC{0,40}") {
            let _ = int(&s);
        }

        #[test]
        fn data_uris_carry_any_bytes_up_to_the_limit(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..300),
            kind in "(?i)image/(png|jpeg|webp|gif)",
        ) {
            use base64::Engine as _;
            let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
            let uri = format!("data:{kind};base64,{encoded}");
            match ImageField::parse(&uri, 200) {
                Ok(ImageField::Upload(decoded)) => {
                    proptest::prop_assert!(bytes.len() <= 200);
                    proptest::prop_assert_eq!(decoded, bytes);
                }
                Err(e) => {
                    proptest::prop_assert!(bytes.len() > 200);
                    proptest::prop_assert_eq!(e.status().as_u16(), 413);
                }
                Ok(other) => proptest::prop_assert!(false, "{other:?}"),
            }
        }

        /// Any image field is one of the three forms or a 400/413; never a panic.
        #[test]
        fn any_image_field_is_a_form_or_a_client_error(
            s in "(data:|/images/|)(image/png|text/plain|)(;base64|)(,|)\\PC{0,60}",
        ) {
            if let Err(e) = ImageField::parse(&s, 30) {
                proptest::prop_assert!(matches!(e.status().as_u16(), 400 | 413));
            }
        }
    }
}
