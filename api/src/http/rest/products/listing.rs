//! The catalogue over REST: the listing (offset pages, `Link: rel="next"`) and one product.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse as _, Response};
use axum::Json;
use serde::Deserialize;
use tower_sessions::Session;
use utoipa::IntoParams;

use super::super::error::{ErrorBody, RestError};
use super::super::reader;
use super::{product_id, render, render_all, RestProduct};
use crate::domain::Category;
use crate::http::AppState;
use crate::service::products::MAX_LISTING;
use crate::service::ProductFilter;

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
