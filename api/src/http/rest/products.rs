//! `/ecanteen/product…`: the catalogue, product edits, stock and pictures.
//!
//! Each handler reads its input, calls one service operation and renders the result;
//! the rules (validation, ownership, stock limits, idempotency) are the service's.

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse as _, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tower_sessions::Session;
use utoipa::{IntoParams, ToSchema};

use super::body::{
    self, delta_schema, id_schema, price_schema, quantity_schema, too_large_picture,
    IdempotencyHeader, ImageField, Int,
};
use super::error::{BodyFailures, ErrorBody, OwnerFailures, RestError};
use super::{actor, reader, username_of};
use crate::domain::{
    Category, Description, Note, Picture, Price, ProductName, Quantity, StockDelta, StockReason,
};
use crate::http::{content_essence, declared_length, is_preflighted, AppState};
use crate::service::products::{EditGuard, MAX_LISTING};
use crate::service::{Actor, AdjustStock, NewProduct, Product, ProductFilter, ProductPatch};

/// A product, as the original service shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RestProduct {
    pub id: i64,
    /// The owner's username.
    pub user_id: String,
    pub name: String,
    pub desc: String,
    /// In the smallest currency unit (rupiah).
    pub price: i64,
    pub quantity: i64,
    pub category: String,
    /// The picture's URL path, or `""` when there is none.
    pub image: String,
}

impl RestProduct {
    pub fn of(product: Product, owner: String) -> Self {
        Self {
            image: product.image_url().unwrap_or_default(),
            id: product.id,
            user_id: owner,
            name: product.name,
            desc: product.description,
            price: product.price,
            quantity: product.quantity,
            category: product.category,
        }
    }
}

/// Renders products with their owners' usernames.
async fn render_all(
    state: &AppState,
    products: Vec<Product>,
) -> Result<Vec<RestProduct>, RestError> {
    let mut owners: Vec<i64> = products.iter().map(|p| p.owner_id).collect();
    owners.sort_unstable();
    owners.dedup();
    let users = state.service.users_by_ids(&owners).await?;
    Ok(products
        .into_iter()
        .map(|p| {
            let owner = users
                .get(&p.owner_id)
                .map(|u| u.username.clone())
                .unwrap_or_default();
            RestProduct::of(p, owner)
        })
        .collect())
}

async fn render(state: &AppState, product: Product) -> Result<RestProduct, RestError> {
    let owner = username_of(state, product.owner_id).await?;
    Ok(RestProduct::of(product, owner))
}

/// A path id; one that is not a positive integer names no product.
fn product_id(raw: &str) -> Result<i64, RestError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| RestError::not_found("product not found"))
}

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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only this partner's products (by username).
    pub user_id: Option<String>,
    /// Only this category.
    pub category: Option<String>,
    /// At most this many products (default and maximum 1000). When more follow, the
    /// answer has a `Link` header to the next page (`rel="next"`).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// Skip this many first (default 0).
    #[param(value_type = Option<i64>, minimum = 0)]
    pub offset: Option<String>,
}

const MAX_LIMIT: i64 = MAX_LISTING;

/// Lists products in id order: all of them (the original "view all"), or one partner's
/// (`user_id`, the original "view"), optionally by category and paged.
#[utoipa::path(get, path = "/ecanteen/product", tag = "products", params(ListParams),
    responses(
        (status = 200, description = "The products, ordered by id; at most `limit` (1000 when absent), with a `Link: <…>; rel=\"next\"` header when more follow", body = [RestProduct]),
        (status = 400, description = "Bad paging or filter", body = ErrorBody),
        (status = 401, description = "A bearer token was sent, and it is unknown or revoked (public reads need none)", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    // The full URL: a nested router's `Uri` has lost its `/ecanteen` prefix.
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, RestError> {
    reader(&state, &headers, session).await?;
    let Query(params) =
        params.map_err(|e| RestError::bad_request(format!("query: {}", e.body_text())))?;
    let limit = params
        .limit
        .as_deref()
        .map(|raw| match raw.parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(RestError::bad_request(format!(
                "limit: must be an integer from 1 to {MAX_LIMIT}, not {raw:?}"
            ))),
        })
        .transpose()?;
    let offset = match params.offset.as_deref() {
        None => 0,
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) if n >= 0 => n,
            _ => {
                return Err(RestError::bad_request(format!(
                    "offset: must be an integer of 0 or more, not {raw:?}"
                )))
            }
        },
    };
    let mut filter = ProductFilter::default();
    if let Some(category) = params.category.as_deref() {
        filter.category = Some(Category::parse("category", category)?);
    }
    filter.owner_username = params.user_id.clone();
    let page = state.service.products_by_id(&filter, limit, offset).await?;
    let shown = i64::try_from(page.items.len()).unwrap_or(i64::MAX);
    let mut response = Json(render_all(&state, page.items).await?).into_response();
    if page.has_next {
        let next = next_page(&uri, offset.saturating_add(shown));
        if let Ok(value) = axum::http::HeaderValue::from_str(&format!("<{next}>; rel=\"next\"")) {
            response
                .headers_mut()
                .insert(axum::http::header::LINK, value);
        }
    }
    Ok(response)
}

/// The listing's URL with `offset` moved on, every other parameter kept.
fn next_page(uri: &axum::http::Uri, offset: i64) -> String {
    let mut query: Vec<(String, String)> = uri
        .query()
        .map(|q| serde_urlencoded::from_str(q).unwrap_or_default())
        .unwrap_or_default();
    query.retain(|(name, _)| name != "offset");
    query.push(("offset".to_owned(), offset.to_string()));
    let query = serde_urlencoded::to_string(&query).unwrap_or_default();
    format!("{}?{query}", uri.path())
}

/// One product.
#[utoipa::path(get, path = "/ecanteen/product/{id}", tag = "products",
    params(("id" = i64, Path, minimum = 1, description = "The product's id")),
    responses(
        (status = 200, body = RestProduct),
        (status = 401, description = "A bearer token was sent, and it is unknown or revoked (public reads need none)", body = ErrorBody),
        (status = 404, description = "No such product", body = ErrorBody),
    ))]
pub async fn show(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<RestProduct>, RestError> {
    reader(&state, &headers, session).await?;
    let id = product_id(&id)?;
    match state.service.product(id).await? {
        Some(product) => Ok(Json(render(&state, product).await?)),
        None => Err(RestError::not_found("product not found")),
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

/// Replaces a product's picture with the multipart field `image`.
#[utoipa::path(put, path = "/ecanteen/product/{id}/image", tag = "products",
    params(("id" = i64, Path, minimum = 1, description = "The product's id"),
        IdempotencyHeader),
    request_body(content_type = "multipart/form-data", content = ImageUpload),
    responses(
        (status = 200, description = "The product with its new picture", body = RestProduct),
        (status = 400, description = "Not a JPEG, PNG, WebP or GIF picture, or no `image` field", body = ErrorBody),
        OwnerFailures,
        (status = 413, description = "The picture is too large", body = ErrorBody),
        (status = 415, description = "Not multipart, or a cookie-authenticated upload without X-Requested-With", body = ErrorBody),
        (status = 422, description = "The Idempotency-Key was used for another request", body = ErrorBody),
    ),
    security(("session" = []), ("bearer" = [])))]
pub async fn replace_image(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
    request: Request,
) -> Result<Json<RestProduct>, RestError> {
    let id = product_id(&id)?;
    let actor = actor(&state, &headers, session).await?;
    if content_essence(&headers).as_deref() != Some("multipart/form-data") {
        return Err(RestError::unsupported_media_type(
            "the picture must be sent as multipart/form-data, in the field `image`",
        ));
    }
    if !is_preflighted(&headers) {
        return Err(RestError::unsupported_media_type(
            "a multipart request must carry an X-Requested-With or Apollo-Require-Preflight header",
        ));
    }
    let bytes = read_image_field(&state, request).await?;
    let picture = state.service.parse_picture("image", bytes).await?;
    // The service fingerprints the picture by its hash: a retry sends the same bytes.
    let idempotency = body::idempotency_key(&headers)?;
    let product = state
        .service
        .set_product_image(&actor, id, Some(picture), EditGuard::default(), idempotency)
        .await?;
    Ok(Json(render(&state, product).await?))
}

/// The multipart body of a picture upload.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ImageUpload {
    /// A JPEG, PNG, WebP or GIF file.
    #[schema(value_type = String, format = Binary)]
    image: Vec<u8>,
}

/// The bytes of the one `image` field of a multipart body, within the picture limit.
/// (The route turns axum's default body limit off; this one bounds the whole body.)
async fn read_image_field(state: &AppState, request: Request) -> Result<Vec<u8>, RestError> {
    let max = state.settings.pictures.max_bytes;
    let limit = max.saturating_add(state.settings.body_limit);
    if declared_length(request.headers()).is_some_and(|len| len > limit) {
        return Err(too_large_picture(max));
    }
    let (parts, body) = request.into_parts();
    let request = Request::from_parts(parts, Body::new(http_body_util::Limited::new(body, limit)));
    let mut multipart = Multipart::from_request(request, state)
        .await
        .map_err(|e| RestError::bad_request(format!("body: {}", e.body_text())))?;
    let mut image = None;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(err) if err.status().as_u16() == 413 => return Err(too_large_picture(max)),
            Err(err) => return Err(RestError::bad_request(format!("body: {}", err.body_text()))),
        };
        if field.name() != Some("image") {
            continue;
        }
        if image.is_some() {
            return Err(RestError::bad_request(
                "image: send one picture, not several",
            ));
        }
        let mut bytes = Vec::new();
        let mut field = field;
        loop {
            match field.chunk().await {
                Ok(Some(chunk)) => {
                    if bytes.len() + chunk.len() > max {
                        return Err(too_large_picture(max));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(err) if err.status().as_u16() == 413 => return Err(too_large_picture(max)),
                Err(err) => {
                    return Err(RestError::bad_request(format!(
                        "image: {}",
                        err.body_text()
                    )))
                }
            }
        }
        image = Some(bytes);
    }
    image.ok_or_else(|| {
        RestError::bad_request("image: is required (a multipart file field named `image`)")
    })
}
