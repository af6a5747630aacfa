//! `/ecanteen/product…`: the catalogue, product edits, stock and pictures.
//!
//! Each handler reads its input, calls one service operation and renders the result;
//! the rules (validation, ownership, stock limits, idempotency) are the service's.
//!
//! - [`listing`]: `GET /ecanteen/product` and `GET /ecanteen/product/{id}`;
//! - [`writes`]: create, edit and delete;
//! - [`stock`]: `POST /ecanteen/product/{id}/stock`;
//! - [`image`]: `PUT /ecanteen/product/{id}/image`;
//! - here: the product as the original service shows it, and its rendering.

mod image;
mod listing;
mod stock;
mod writes;

pub use image::*;
pub use listing::*;
pub use stock::*;
pub use writes::*;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::RestError;
use super::username_of;
use crate::http::AppState;
use crate::service::Product;

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
pub(crate) fn product_id(raw: &str) -> Result<i64, RestError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| RestError::not_found("product not found"))
}
