//! Products: the public catalogue, and each partner's own products.
//!
//! Writes are guarded statements, never read-modify-write: an update names the version
//! it replaces, so two edits can never silently overwrite each other. A deleted product
//! keeps its row (with `deleted_at` set) so its stock history stays readable.
//!
//! - [`listing`]: the catalogue: filters, orders, keyset and offset pages, counts;
//! - [`writes`]: create, edit, picture, delete: each a guarded, keyed transaction.

mod listing;
mod writes;

use serde::{Deserialize, Serialize};

use crate::domain::{Category, Description, Picture, Price, ProductName, Quantity};
use crate::service::pictures::{picture_url, thumbnail_url};

pub use listing::{CursorValue, Page, ProductCursor, ProductFilter, ProductOrder, SortField};

/// The most products one listing returns, and how many it returns when not told.
pub const MAX_LISTING: i64 = 1000;

/// A product row.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow, Serialize, Deserialize)]
pub struct Product {
    pub id: i64,
    pub owner_id: i64,
    pub name: String,
    pub description: String,
    pub price: i64,
    pub quantity: i64,
    pub category: String,
    pub low_stock_threshold: Option<i64>,
    /// The picture's hash (null: no picture), and its file extension.
    pub image_ref: Option<String>,
    pub image_ext: Option<String>,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub deleted_at: Option<i64>,
}

impl Product {
    /// At or below its threshold (a product without one is never "low").
    pub fn is_low_stock(&self) -> bool {
        self.low_stock_threshold.is_some_and(|t| self.quantity <= t)
    }

    /// The picture's URL path, if it has one.
    pub fn image_url(&self) -> Option<String> {
        Some(picture_url(
            self.image_ref.as_deref()?,
            self.image_ext.as_deref()?,
        ))
    }

    /// The thumbnail's URL path, if it has a picture.
    pub fn thumbnail_url(&self) -> Option<String> {
        self.image_ref.as_deref().map(thumbnail_url)
    }
}

pub(crate) const PRODUCT_COLUMNS: &str =
    "id, owner_id, name, description, price, quantity, category, \
     low_stock_threshold, image_ref, image_ext, version, created_at, updated_at, deleted_at";

/// A new product, every field already parsed.
#[derive(Clone, Debug)]
pub struct NewProduct {
    pub name: ProductName,
    pub description: Description,
    pub price: Price,
    pub quantity: Quantity,
    pub category: Category,
    pub low_stock_threshold: Option<Quantity>,
    pub picture: Option<Picture>,
}

/// The fields an edit changes; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct ProductPatch {
    pub name: Option<ProductName>,
    pub description: Option<Description>,
    pub price: Option<Price>,
    pub category: Option<Category>,
    /// `Some(None)` clears the threshold.
    pub low_stock_threshold: Option<Option<Quantity>>,
    /// A new quantity, recorded in the ledger as a CORRECTION.
    pub quantity: Option<Quantity>,
    /// A new picture, or with `Some(None)` none.
    pub picture: Option<Option<Picture>>,
}

/// Guards on an edit: stale values make it a CONFLICT that writes nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct EditGuard {
    pub expected_version: Option<i64>,
    /// REST's `before`: the quantity the client last saw.
    pub expected_quantity: Option<i64>,
}
