//! Automatic persisted queries (Apollo's APQ protocol) at the HTTP edge.
//!
//! A request may carry `extensions: {"persistedQuery": {"version": 1, "sha256Hash":
//! "…"}}` (in the JSON body, or as the `extensions` parameter of a GET):
//! - with the hash alone, its text is looked up (`service::persisted_queries`): when no
//!   replica has been sent it, the answer is the error `PERSISTED_QUERY_NOT_FOUND`
//!   (HTTP 200, as Apollo's servers answer), and the client sends hash and text;
//! - with hash and text, the hash must be the text's SHA-256 (else BAD_USER_INPUT), and
//!   once the text has parsed and validated it is kept, for every replica.
//!
//! The text is put back into the request here, before anything else reads it, so every
//! rule that reads a request's text (a mutation refused over GET, one password field
//! per batch, the document limits, depth and cost) applies to a hash as it does to the
//! text. async-graphql's own `ApolloPersistedQueries` extension resolves the hash only
//! inside the schema, after those checks of the HTTP layer have run on an empty text,
//! and keeps its store in one process; so it is not used.

use async_graphql::Request;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::ServiceError;
use crate::service::persisted_queries::parse_sha256;
use crate::service::Service;

/// The code of the answer to a hash no replica knows.
pub const NOT_FOUND: &str = "PERSISTED_QUERY_NOT_FOUND";
/// Its message, as Apollo's clients match it.
pub const NOT_FOUND_MESSAGE: &str = "PersistedQueryNotFound";

#[derive(Deserialize)]
struct PersistedQuery {
    version: i64,
    #[serde(rename = "sha256Hash")]
    sha256_hash: String,
}

/// A text sent with its hash, to keep once it has parsed and validated.
#[derive(Debug)]
pub struct ToLearn {
    pub sha256: String,
    pub query: String,
}

/// Why a request's persisted query could not be used.
#[derive(Debug)]
pub enum Refusal {
    /// No replica knows the hash: the client should send the text with it.
    NotFound,
    /// The extension is malformed, or the hash is not the text's.
    Invalid(ServiceError),
    /// The store could not be read.
    Failed(ServiceError),
}

/// Puts a persisted query's text into `request`: looked up by its hash, or checked
/// against it (then returned, to keep once it has run). A request without the extension
/// is left as it is.
pub async fn resolve(service: &Service, request: &mut Request) -> Result<Option<ToLearn>, Refusal> {
    let Some(value) = request.extensions.remove("persistedQuery") else {
        return Ok(None);
    };
    let invalid = |message: &str| {
        Refusal::Invalid(ServiceError::invalid("extensions.persistedQuery", message))
    };
    let json = value
        .into_json()
        .map_err(|_| invalid("must be {\"version\": 1, \"sha256Hash\": \"…\"}"))?;
    let persisted: PersistedQuery = serde_json::from_value(json)
        .map_err(|_| invalid("must be {\"version\": 1, \"sha256Hash\": \"…\"}"))?;
    if persisted.version != 1 {
        return Err(invalid("only version 1 is supported"));
    }
    let sha256 = parse_sha256(
        "extensions.persistedQuery.sha256Hash",
        &persisted.sha256_hash,
    )
    .map_err(Refusal::Invalid)?;
    if request.query.is_empty() {
        return match service.persisted_query(&sha256).await {
            Ok(Some(query)) => {
                request.query = query.to_string();
                Ok(None)
            }
            Ok(None) => Err(Refusal::NotFound),
            Err(err) => Err(Refusal::Failed(err)),
        };
    }
    let actual = format!("{:x}", Sha256::digest(request.query.as_bytes()));
    if actual != sha256 {
        return Err(Refusal::Invalid(ServiceError::invalid(
            "extensions.persistedQuery.sha256Hash",
            "is not the SHA-256 of the query",
        )));
    }
    Ok(Some(ToLearn {
        sha256,
        query: request.query.clone(),
    }))
}
