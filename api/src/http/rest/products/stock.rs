//! `POST /ecanteen/product/{id}/stock`: a stock change.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use tower_sessions::Session;
use utoipa::ToSchema;

use super::super::actor;
use super::super::body::{self, delta_schema, quantity_schema, IdempotencyHeader, Int};
use super::super::error::{BodyFailures, ErrorBody, OwnerFailures, RestError};
use super::{product_id, render, RestProduct};
use crate::domain::{Note, Quantity, StockDelta, StockReason};
use crate::http::AppState;
use crate::service::AdjustStock;

/// A stock change: `delta` units in (positive) or out (negative).
#[derive(Deserialize, ToSchema)]
pub struct StockBody {
    #[schema(schema_with = delta_schema)]
    pub delta: Int,
    /// `sale`, `restock`, `waste`, `correction`, `count` or `other`, in any letter case
    /// (default: `sale` for a negative delta, `restock` for a positive one).
    pub reason: Option<String>,
    #[schema(max_length = 500)]
    pub note: Option<String>,
    /// The quantity the client last saw: when the stock differs, nothing is written
    /// (409).
    #[schema(schema_with = quantity_schema)]
    pub before: Option<Int>,
}

/// Adds or removes stock, never below zero.
#[utoipa::path(post, path = "/ecanteen/product/{id}/stock", tag = "products",
    params(("id" = i64, Path, minimum = 1, description = "The product's id"),
        IdempotencyHeader),
    request_body = StockBody,
    responses(
        (status = 200, description = "The product after the change", body = RestProduct),
        BodyFailures, OwnerFailures,
        (status = 409, description = "INSUFFICIENT_STOCK, or `before` is stale (CONFLICT)", body = ErrorBody),
    ),
    security(("session" = []), ("bearer" = [])))]
pub async fn adjust_stock(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<RestProduct>, RestError> {
    let id = product_id(&id)?;
    let actor = actor(&state, &headers, session).await?;
    let input: StockBody = body::json(&headers, body, state.settings.body_limit).await?;
    let delta = StockDelta::parse("delta", input.delta.0)?;
    let reason = input
        .reason
        .as_deref()
        .map(|reason| StockReason::parse("reason", reason))
        .transpose()?;
    let change = state
        .service
        .adjust_stock(
            &actor,
            AdjustStock {
                product_id: id,
                delta,
                reason,
                note: input
                    .note
                    .as_deref()
                    .map(|n| Note::parse("note", n))
                    .transpose()?,
                expected_quantity: input
                    .before
                    .map(|b| Quantity::parse("before", b.0))
                    .transpose()?,
                idempotency_key: body::idempotency_key(&headers)?,
            },
        )
        .await?;
    Ok(Json(render(&state, change.product).await?))
}
