//! Creating, editing and deleting a product over REST.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::{Deserialize, Serialize};
use tower_sessions::Session;
use utoipa::ToSchema;

use super::super::body::{
    self, id_schema, price_schema, quantity_schema, IdempotencyHeader, ImageField, Int,
};
use super::super::error::{BodyFailures, ErrorBody, OwnerFailures, RestError};
use super::super::{actor, username_of};
use super::{product_id, render, RestProduct};
use crate::domain::{Category, Description, Picture, Price, ProductName, Quantity};
use crate::http::AppState;
use crate::service::products::EditGuard;
use crate::service::{Actor, NewProduct, ProductPatch};

/// The largest product body: the fields, plus a picture as a base64 `data:` URI.
fn product_body_limit(state: &AppState) -> usize {
    let picture = state.settings.pictures.max_bytes;
    state
        .settings
        .body_limit
        .saturating_add(picture / 3 * 4 + 64)
}

/// Loads the picture an `image` field asks for: `Some(None)` for `""`.
async fn picture_of(
    state: &AppState,
    image: Option<&str>,
) -> Result<Option<Option<Picture>>, RestError> {
    let Some(raw) = image else {
        return Ok(None);
    };
    match ImageField::parse(raw, state.settings.pictures.max_bytes)? {
        ImageField::None => Ok(Some(None)),
        ImageField::Upload(bytes) => Ok(Some(Some(
            state.service.parse_picture("image", bytes).await?,
        ))),
        ImageField::Stored(url) => match state.service.stored_picture(&url).await? {
            Some(picture) => Ok(Some(Some(picture))),
            None => Err(RestError::bad_request(format!(
                "image: no picture is stored at {url}"
            ))),
        },
    }
}

/// Refuses a `user_id` that is not the caller's own username.
async fn check_user_id(
    state: &AppState,
    actor: &Actor,
    user_id: Option<&str>,
) -> Result<(), RestError> {
    let Some(user_id) = user_id else {
        return Ok(());
    };
    let me = username_of(state, actor.user_id).await?;
    if user_id.trim().eq_ignore_ascii_case(&me) {
        Ok(())
    } else {
        Err(RestError::forbidden(format!(
            "user_id: you are {me}; products can only be written as yourself"
        )))
    }
}

/// The body of a create, as the original clients send it.
#[derive(Deserialize, Serialize, ToSchema)]
pub struct CreateProduct {
    /// The caller's username; any other is a 403.
    pub user_id: Option<String>,
    /// Surrounding spaces are trimmed; no control characters.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// Surrounding spaces are trimmed.
    #[schema(max_length = 1000)]
    pub desc: Option<String>,
    #[schema(schema_with = price_schema)]
    pub price: Int,
    #[schema(schema_with = quantity_schema)]
    pub quantity: Int,
    /// Stored lower-case.
    #[schema(min_length = 1, max_length = 40)]
    pub category: String,
    /// A `data:image/...;base64,` URI, a stored picture's path, or `""`.
    pub image: Option<String>,
}

/// Creates a product owned by the caller.
#[utoipa::path(post, path = "/ecanteen/product", tag = "products",
    request_body = CreateProduct,
    params(IdempotencyHeader),
    responses(
        (status = 200, description = "The new product", body = RestProduct),
        BodyFailures,
        (status = 401, description = "Not logged in", body = ErrorBody),
        (status = 403, description = "user_id is not the caller", body = ErrorBody),
        (status = 413, description = "The picture is too large", body = ErrorBody),
    ),
    security(("session" = []), ("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<RestProduct>, RestError> {
    let actor = actor(&state, &headers, session).await?;
    let input: CreateProduct = body::json(&headers, body, product_body_limit(&state)).await?;
    check_user_id(&state, &actor, input.user_id.as_deref()).await?;
    let idempotency = body::idempotency_key(&headers)?;
    let new = NewProduct {
        name: ProductName::parse("name", &input.name)?,
        description: Description::parse("desc", input.desc.as_deref().unwrap_or(""))?,
        price: Price::parse("price", input.price.0)?,
        quantity: Quantity::parse("quantity", input.quantity.0)?,
        category: Category::parse("category", &input.category)?,
        low_stock_threshold: None,
        picture: picture_of(&state, input.image.as_deref()).await?.flatten(),
    };
    let product = state
        .service
        .create_product(&actor, new, idempotency)
        .await?;
    Ok(Json(render(&state, product).await?))
}

/// The body of an update: the fields present are changed.
#[derive(Deserialize, Serialize, ToSchema)]
pub struct UpdateProduct {
    /// The product's id: required by `PUT /ecanteen/product`, and when given to
    /// `PUT /ecanteen/product/{id}` it must match the path.
    #[schema(schema_with = id_schema)]
    pub id: Option<Int>,
    /// The caller's username; any other is a 403.
    pub user_id: Option<String>,
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    #[schema(max_length = 1000)]
    pub desc: Option<String>,
    #[schema(schema_with = price_schema)]
    pub price: Option<Int>,
    #[schema(schema_with = quantity_schema)]
    pub quantity: Option<Int>,
    #[schema(min_length = 1, max_length = 40)]
    pub category: Option<String>,
    /// A `data:image/...;base64,` URI, a stored picture's path, or `""` to remove it.
    pub image: Option<String>,
    /// The quantity the client last saw: when the stock differs, nothing is written
    /// and the answer is 409 with the current product.
    #[schema(schema_with = quantity_schema)]
    pub before: Option<Int>,
}

/// Updates the fields present in the body.
#[utoipa::path(put, path = "/ecanteen/product/{id}", tag = "products",
    params(("id" = i64, Path, minimum = 1, description = "The product's id"),
        IdempotencyHeader),
    request_body = UpdateProduct,
    responses(
        (status = 200, description = "\"product {id} updated\"", body = String),
        BodyFailures, OwnerFailures,
        (status = 409, description = "`before` is stale: nothing written; the current product is in `product`", body = ErrorBody),
        (status = 413, description = "The picture is too large", body = ErrorBody),
    ),
    security(("session" = []), ("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<String>, RestError> {
    let id = product_id(&id)?;
    let actor = actor(&state, &headers, session).await?;
    let input: UpdateProduct = body::json(&headers, body, product_body_limit(&state)).await?;
    if input.id.is_some_and(|body_id| body_id.0 != id) {
        return Err(RestError::bad_request(format!(
            "id: the body names product {}, the path product {id}",
            input.id.map_or(0, |i| i.0)
        )));
    }
    apply_update(&state, &actor, &headers, id, input).await
}

/// The original form of an update, with the id in the body.
#[utoipa::path(put, path = "/ecanteen/product", tag = "products",
    params(IdempotencyHeader),
    request_body = UpdateProduct,
    responses(
        (status = 200, description = "\"product {id} updated\"", body = String),
        BodyFailures, OwnerFailures,
        (status = 409, description = "`before` is stale: nothing written; the current product is in `product`", body = ErrorBody),
        (status = 413, description = "The picture is too large", body = ErrorBody),
    ),
    security(("session" = []), ("bearer" = [])))]
pub async fn update_with_id_in_body(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<String>, RestError> {
    let actor = actor(&state, &headers, session).await?;
    let input: UpdateProduct = body::json(&headers, body, product_body_limit(&state)).await?;
    let Some(Int(id)) = input.id else {
        return Err(RestError::bad_request("id: is required"));
    };
    apply_update(&state, &actor, &headers, id, input).await
}

async fn apply_update(
    state: &AppState,
    actor: &Actor,
    headers: &HeaderMap,
    id: i64,
    input: UpdateProduct,
) -> Result<Json<String>, RestError> {
    check_user_id(state, actor, input.user_id.as_deref()).await?;
    let idempotency = body::idempotency_key(headers)?;
    let patch = ProductPatch {
        name: input
            .name
            .as_deref()
            .map(|n| ProductName::parse("name", n))
            .transpose()?,
        description: input
            .desc
            .as_deref()
            .map(|d| Description::parse("desc", d))
            .transpose()?,
        price: input
            .price
            .map(|p| Price::parse("price", p.0))
            .transpose()?,
        category: input
            .category
            .as_deref()
            .map(|c| Category::parse("category", c))
            .transpose()?,
        low_stock_threshold: None,
        quantity: input
            .quantity
            .map(|q| Quantity::parse("quantity", q.0))
            .transpose()?,
        picture: picture_of(state, input.image.as_deref()).await?,
    };
    let guard = EditGuard {
        expected_version: None,
        expected_quantity: input.before.map(|b| b.0),
    };
    match state
        .service
        .update_product(actor, id, patch, guard, idempotency)
        .await
    {
        Ok(_) => Ok(Json(format!("product {id} updated"))),
        Err(err) => Err(with_current_product(state, id, err.into()).await),
    }
}

/// Attaches the product as it is now to a conflict, so the client can merge.
async fn with_current_product(state: &AppState, id: i64, err: RestError) -> RestError {
    if !err.is_conflict() {
        return err;
    }
    match state.service.product(id).await {
        Ok(Some(product)) => match render(state, product).await {
            Ok(current) => err.with_product(current),
            Err(_) => err,
        },
        _ => err,
    }
}

/// Deletes a product of the caller's.
#[utoipa::path(delete, path = "/ecanteen/product/{id}", tag = "products",
    params(("id" = i64, Path, minimum = 1, description = "The product's id"),
        IdempotencyHeader),
    responses(
        (status = 200, description = "\"product {id} deleted\"", body = String),
        OwnerFailures,
    ),
    security(("session" = []), ("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<String>, RestError> {
    let id = product_id(&id)?;
    let actor = actor(&state, &headers, session).await?;
    let idempotency = body::idempotency_key(&headers)?;
    state
        .service
        .delete_product(&actor, id, EditGuard::default(), idempotency)
        .await?;
    Ok(Json(format!("product {id} deleted")))
}
