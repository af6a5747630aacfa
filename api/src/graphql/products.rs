//! Products in GraphQL: the catalogue (public) and each partner's edits (owner only).

use async_graphql::connection::{
    Connection, CursorType, Edge, EmptyFields, OpaqueCursor, PageInfo,
};
use async_graphql::dataloader::{DataLoader, HashMapCache};
use std::io::Read as _;

use async_graphql::{Context, Enum, InputObject, MaybeUndefined, Object, Upload, ID};
use chrono::{DateTime, Utc};

use super::stock::{movements_connection, MovementConnection};
use super::users::{OwnerLoader, UserNode};
use super::{actor, datetime, id_arg, page_size, service};
use crate::domain::{Category, Description, Picture, Price, ProductName, Quantity};
use crate::error::ServiceError;
use crate::service::products::{EditGuard, ProductCursor};
use crate::service::{
    NewProduct, Product, ProductFilter, ProductOrder, ProductPatch, Service, SortField,
};

/// A product as GraphQL shows it (its description is on the `Object` impl below).
#[derive(Clone, Debug)]
pub struct ProductNode(pub Product);

/// Something a canteen partner sells. The catalogue is public: anyone, logged in or
/// not, may read every field except `stockMovements`, which only the owner may.
#[Object(name = "Product")]
impl ProductNode {
    /// The product's id: a decimal integer as a string. Ids are never reused.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// The partner who sells it (batched: one query per request for all owners).
    async fn owner(&self, ctx: &Context<'_>) -> async_graphql::Result<UserNode> {
        let loader = ctx.data::<DataLoader<OwnerLoader, HashMapCache>>()?;
        let user = loader.load_one(self.0.owner_id).await?.ok_or_else(|| {
            ServiceError::Internal(anyhow::anyhow!("product {} has no owner", self.0.id))
        })?;
        Ok(UserNode(user))
    }

    /// 1–100 characters, trimmed.
    async fn name(&self) -> &str {
        &self.0.name
    }

    /// At most 1,000 characters; empty when there is none. May hold newlines.
    async fn description(&self) -> &str {
        &self.0.description
    }

    /// Price in rupiah per unit, 0 to 1,000,000,000 (an integer; no fractions).
    async fn price(&self) -> i64 {
        self.0.price
    }

    /// Units in stock now, 0 to 1,000,000,000. Change it with `adjustStock` or
    /// `setStock`.
    async fn quantity(&self) -> i64 {
        self.0.quantity
    }

    /// Lower-case; the client offers `makanan` and `minuman`.
    async fn category(&self) -> &str {
        &self.0.category
    }

    /// Stock, in units, at or below which the product is "low" (0 to 1,000,000,000).
    /// Null: never low.
    async fn low_stock_threshold(&self) -> Option<i64> {
        self.0.low_stock_threshold
    }

    /// True when `quantity` is at or below `lowStockThreshold` (false when it has none).
    async fn is_low_stock(&self) -> bool {
        self.0.is_low_stock()
    }

    /// True when `quantity` is 0.
    async fn is_out_of_stock(&self) -> bool {
        self.0.quantity == 0
    }

    /// The picture's URL path (`/images/{sha256}.{ext}`), or null when there is none.
    async fn image_url(&self) -> Option<String> {
        self.0.image_url()
    }

    /// A JPEG of at most 256 pixels on its longer side, or null when there is no
    /// picture.
    async fn thumbnail_url(&self) -> Option<String> {
        self.0.thumbnail_url()
    }

    /// Increases with every change, stock included; pass it as `expectedVersion`.
    async fn version(&self) -> i64 {
        self.0.version
    }

    /// When the product was created (UTC, RFC 3339).
    async fn created_at(&self) -> DateTime<Utc> {
        datetime(self.0.created_at)
    }

    /// When the product last changed, stock included (UTC, RFC 3339).
    async fn updated_at(&self) -> DateTime<Utc> {
        datetime(self.0.updated_at)
    }

    /// Set once the product is deleted (seen only through stock history).
    async fn deleted_at(&self) -> Option<DateTime<Utc>> {
        self.0.deleted_at.map(datetime)
    }

    /// The stock ledger of this product, newest first. Only its owner may read it:
    /// anyone else gets FORBIDDEN, and a request without credentials UNAUTHENTICATED.
    #[graphql(
        cache_control(private, no_cache),
        complexity = "super::page_complexity(first, child_complexity)"
    )]
    async fn stock_movements(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The page size: 0 to 100 (more is read as 100; default 20). \
                          Negative is BAD_USER_INPUT.")]
        first: Option<i32>,
        #[graphql(desc = "The `endCursor` of the page before; leave it out for the \
                          newest. A cursor not given by this field is BAD_USER_INPUT.")]
        after: Option<String>,
    ) -> async_graphql::Result<MovementConnection> {
        movements_connection(ctx, self.0.id, first, after).await
    }
}

/// What the catalogue is sorted by. Products that tie are ordered by id, so pages never
/// skip or repeat one.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Default)]
pub enum ProductOrderField {
    /// The name, case-insensitively.
    #[default]
    Name,
    /// The price in rupiah.
    Price,
    /// The units in stock.
    Quantity,
    /// The time of the last change.
    UpdatedAt,
    /// The time of creation.
    CreatedAt,
    /// The id, i.e. the order of creation.
    Id,
}

/// Which way a sort goes.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Default)]
pub enum OrderDirection {
    /// Smallest, earliest or A first.
    #[default]
    Asc,
    /// Largest, latest or Z first.
    Desc,
}

/// How the catalogue is sorted. Default: by name, ascending.
#[derive(InputObject, Default)]
pub struct ProductOrderBy {
    /// What to sort by. Default: NAME.
    #[graphql(default)]
    field: ProductOrderField,
    /// Which way. Default: ASC.
    #[graphql(default)]
    direction: OrderDirection,
}

/// Which products of the catalogue to list. Every condition given must hold; leave the
/// filter out for all products that are not deleted.
#[derive(InputObject, Default)]
pub struct ProductFilterInput {
    /// Only this partner's products.
    owner_id: Option<ID>,
    /// Only this partner's products, by username.
    owner_username: Option<String>,
    /// Only this category, case-insensitively (1–40 characters, else BAD_USER_INPUT).
    category: Option<String>,
    /// Case-insensitive substring of the name.
    search: Option<String>,
    /// true: quantity > 0; false: sold out.
    in_stock: Option<bool>,
    /// true: at or below the low-stock threshold.
    low_stock: Option<bool>,
}

/// Extra fields of a product listing.
pub struct ProductListInfo {
    service: Service,
    filter: ProductFilter,
}

impl ProductListInfo {
    async fn total_count(&self) -> async_graphql::Result<i64> {
        Ok(self.service.count_products(&self.filter).await?)
    }
}

/// One page of the catalogue. The connection's own type has no description in
/// async-graphql, so this wraps it and describes each field.
pub struct ProductConnection {
    page: Connection<OpaqueCursor<ProductCursor>, ProductNode>,
    info: ProductListInfo,
}

/// One page of the catalogue, in the order asked for, at most 100 products.
#[Object]
impl ProductConnection {
    /// Where this page is: whether more follow, and the cursor to pass as `after` to
    /// read them.
    async fn page_info(&self) -> PageInfo {
        super::page_info(&self.page)
    }

    /// The products of this page, each with its cursor.
    async fn edges(&self) -> &[Edge<OpaqueCursor<ProductCursor>, ProductNode, EmptyFields>] {
        &self.page.edges
    }

    /// The products of this page, without cursors.
    async fn nodes(&self) -> Vec<&ProductNode> {
        self.page.edges.iter().map(|e| &e.node).collect()
    }

    /// How many products match the filter, on all pages (counted only when asked for).
    // Its query is charged to the listing field: see `page_complexity`.
    async fn total_count(&self) -> async_graphql::Result<i64> {
        self.info.total_count().await
    }
}

/// A new product. A value out of bounds is BAD_USER_INPUT with `extensions.field`
/// naming it (e.g. `input.price`), and nothing is written.
#[derive(InputObject)]
pub struct CreateProductInput {
    /// 1–100 characters.
    name: String,
    /// At most 1000 characters.
    #[graphql(default)]
    description: String,
    /// Rupiah, 0 to 1,000,000,000.
    price: i64,
    /// Initial stock in units, 0 to 1,000,000,000 (default 0), recorded in the ledger
    /// as a RESTOCK.
    #[graphql(default)]
    quantity: i64,
    /// 1–40 characters, e.g. `makanan` or `minuman`; stored lower-case.
    category: String,
    /// Units at or below which the product is low, 0 to 1,000,000,000. Null or left out:
    /// never low.
    low_stock_threshold: Option<i64>,
}

/// Changes to a product. A field left out (or null, except `lowStockThreshold`) keeps
/// its value; the bounds are those of `CreateProductInput`, and one out of bounds is
/// BAD_USER_INPUT with nothing written.
#[derive(InputObject)]
pub struct UpdateProductInput {
    /// A new name, 1–100 characters.
    name: Option<String>,
    /// A new description, at most 1,000 characters; "" clears it.
    description: Option<String>,
    /// A new price in rupiah, 0 to 1,000,000,000.
    price: Option<i64>,
    /// A new category, 1–40 characters.
    category: Option<String>,
    /// null clears it; leaving it out keeps it.
    low_stock_threshold: MaybeUndefined<i64>,
    /// A corrected quantity; the ledger records the difference as a CORRECTION. Prefer
    /// `adjustStock` for sales and deliveries.
    quantity: Option<i64>,
}

#[derive(Default)]
pub struct ProductQuery;

#[Object]
impl ProductQuery {
    /// One product, or null when it does not exist (or was deleted). Public: an
    /// anonymous GET of it may be cached for 5 seconds.
    #[graphql(
        cache_control(max_age = 5),
        complexity = "super::QUERY_COST + child_complexity"
    )]
    async fn product(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The product's id. One that is not a decimal integer is \
                          BAD_USER_INPUT.")]
        id: ID,
    ) -> async_graphql::Result<Option<ProductNode>> {
        let id = id_arg("id", &id)?;
        Ok(service(ctx)?.product(id).await?.map(ProductNode))
    }

    /// The catalogue: every partner's products, filtered, ordered and paged (at most
    /// 100 a page). Public: an anonymous GET of it may be cached for 5 seconds.
    #[graphql(
        cache_control(max_age = 5),
        complexity = "super::page_complexity(first, child_complexity)"
    )]
    async fn products(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The page size: 0 to 100 (more is read as 100; default 20). \
                          Negative is BAD_USER_INPUT.")]
        first: Option<i32>,
        #[graphql(desc = "The `endCursor` of the page before; leave it out for the \
                          first page. The cursor must come from a listing sorted by the \
                          same `orderBy.field`, else BAD_USER_INPUT.")]
        after: Option<String>,
        #[graphql(desc = "Which products to list. Default: all that are not deleted.")]
        filter: Option<ProductFilterInput>,
        #[graphql(desc = "The order. Default: by name, ascending.")] order_by: Option<
            ProductOrderBy,
        >,
    ) -> async_graphql::Result<ProductConnection> {
        let service = service(ctx)?;
        let first = page_size(first)?;
        let filter = product_filter(filter.unwrap_or_default())?;
        let order_by = order_by.unwrap_or_default();
        let order = ProductOrder {
            field: match order_by.field {
                ProductOrderField::Name => SortField::Name,
                ProductOrderField::Price => SortField::Price,
                ProductOrderField::Quantity => SortField::Quantity,
                ProductOrderField::UpdatedAt => SortField::UpdatedAt,
                ProductOrderField::CreatedAt => SortField::CreatedAt,
                ProductOrderField::Id => SortField::Id,
            },
            descending: order_by.direction == OrderDirection::Desc,
        };
        let after = after
            .map(|c| OpaqueCursor::<ProductCursor>::decode_cursor(&c))
            .transpose()
            .map_err(|_| ServiceError::invalid("after", "is not a valid cursor"))?;
        let page = service
            .list_products(&filter, order, first, after.as_ref().map(|c| &c.0))
            .await?;
        let info = ProductListInfo {
            service: service.clone(),
            filter,
        };
        // When the page's owners are asked for, load them all in one batch now, into the
        // request's loader cache: left to the `owner` fields, a page's hundred lookups
        // could straddle the loader's batching window and load the same owners twice.
        let look_ahead = ctx.look_ahead();
        if look_ahead.field("nodes").field("owner").exists()
            || look_ahead
                .field("edges")
                .field("node")
                .field("owner")
                .exists()
        {
            let owners: std::collections::BTreeSet<i64> =
                page.items.iter().map(|p| p.owner_id).collect();
            ctx.data::<DataLoader<OwnerLoader, HashMapCache>>()?
                .load_many(owners)
                .await?;
        }
        let mut connection = Connection::new(after.is_some(), page.has_next);
        connection.edges.extend(
            page.items
                .into_iter()
                .map(|p| Edge::new(OpaqueCursor(ProductCursor::of(order, &p)), ProductNode(p))),
        );
        Ok(ProductConnection {
            page: connection,
            info,
        })
    }
}

/// Parses a filter (the service resolves `ownerUsername`).
fn product_filter(input: ProductFilterInput) -> Result<ProductFilter, ServiceError> {
    Ok(ProductFilter {
        owner_id: input
            .owner_id
            .as_ref()
            .map(|id| id_arg("filter.ownerId", id))
            .transpose()?,
        owner_username: input.owner_username,
        category: input
            .category
            .as_deref()
            .map(|c| Category::parse("filter.category", c))
            .transpose()?,
        search: input.search,
        in_stock: input.in_stock,
        low_stock: input.low_stock,
    })
}

/// Reads and checks an uploaded picture (off the async runtime: it is file I/O and
/// image decoding).
async fn picture_arg(
    ctx: &Context<'_>,
    field: &'static str,
    upload: Option<Upload>,
) -> async_graphql::Result<Option<Picture>> {
    let Some(upload) = upload else {
        return Ok(None);
    };
    let service = service(ctx)?;
    let value = upload
        .value(ctx)
        .map_err(|_| ServiceError::invalid(field, "is not an uploaded file"))?;
    let max = service.picture_limits().max_bytes;
    let bytes = tokio::task::spawn_blocking(move || {
        let mut bytes = Vec::new();
        // One byte past the limit is enough to know it is too large.
        value
            .into_read()
            .take(max as u64 + 1)
            .read_to_end(&mut bytes)
            .map(|_| bytes)
    })
    .await
    .map_err(|e| ServiceError::Internal(e.into()))?
    .map_err(|e| ServiceError::Internal(e.into()))?;
    Ok(Some(service.parse_picture(field, bytes).await?))
}

#[derive(Default)]
pub struct ProductMutation;

#[Object]
impl ProductMutation {
    /// Adds a product owned by the caller, with an optional picture (JPEG, PNG, WebP or
    /// GIF, uploaded with the GraphQL multipart request spec).
    async fn create_product(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The product's fields.")] input: CreateProductInput,
        #[graphql(desc = "A picture: JPEG, PNG, WebP or GIF, sent as a file of a \
                          multipart request, within the replica's limits (by default 5 \
                          MiB, and 4,096 pixels on the longer side). Anything else is BAD_USER_INPUT; past the partner's \
                          picture quota, also BAD_USER_INPUT.")]
        image: Option<Upload>,
    ) -> async_graphql::Result<ProductNode> {
        let actor = actor(ctx)?;
        let new = NewProduct {
            name: ProductName::parse("input.name", &input.name)?,
            description: Description::parse("input.description", &input.description)?,
            price: Price::parse("input.price", input.price)?,
            quantity: Quantity::parse("input.quantity", input.quantity)?,
            category: Category::parse("input.category", &input.category)?,
            low_stock_threshold: input
                .low_stock_threshold
                .map(|t| Quantity::parse("input.lowStockThreshold", t))
                .transpose()?,
            picture: picture_arg(ctx, "image", image).await?,
        };
        Ok(ProductNode(
            service(ctx)?.create_product(&actor, new, None).await?,
        ))
    }

    /// Edits one of the caller's products. With `expectedVersion`, a product changed
    /// since that version is a CONFLICT and nothing is written.
    async fn update_product(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The product's id: one of the caller's (else FORBIDDEN; \
                          NOT_FOUND when there is none).")]
        id: ID,
        #[graphql(desc = "The fields to change; the others keep their values.")]
        input: UpdateProductInput,
        #[graphql(desc = "The product's `version` as the caller last read it: when \
                          the product has changed since, the answer is CONFLICT and \
                          nothing is written. Left out, the write applies regardless.")]
        expected_version: Option<i64>,
        #[graphql(
            desc = "A new picture (left out: the picture is kept): JPEG, PNG, WebP or GIF, sent as a file of a \
                          multipart request, within the replica's limits (by default 5 \
                          MiB, and 4,096 pixels on the longer side). Anything else is BAD_USER_INPUT; past the partner's \
                          picture quota, also BAD_USER_INPUT."
        )]
        image: Option<Upload>,
    ) -> async_graphql::Result<ProductNode> {
        let actor = actor(ctx)?;
        let id = id_arg("id", &id)?;
        let patch = ProductPatch {
            name: input
                .name
                .as_deref()
                .map(|n| ProductName::parse("input.name", n))
                .transpose()?,
            description: input
                .description
                .as_deref()
                .map(|d| Description::parse("input.description", d))
                .transpose()?,
            price: input
                .price
                .map(|p| Price::parse("input.price", p))
                .transpose()?,
            category: input
                .category
                .as_deref()
                .map(|c| Category::parse("input.category", c))
                .transpose()?,
            low_stock_threshold: match input.low_stock_threshold {
                MaybeUndefined::Undefined => None,
                MaybeUndefined::Null => Some(None),
                MaybeUndefined::Value(t) => {
                    Some(Some(Quantity::parse("input.lowStockThreshold", t)?))
                }
            },
            quantity: input
                .quantity
                .map(|q| Quantity::parse("input.quantity", q))
                .transpose()?,
            picture: picture_arg(ctx, "image", image).await?.map(Some),
        };
        let guard = EditGuard {
            expected_version,
            expected_quantity: None,
        };
        Ok(ProductNode(
            service(ctx)?
                .update_product(&actor, id, patch, guard, None)
                .await?,
        ))
    }

    /// Replaces the picture of one of the caller's products; `image: null` removes it.
    /// The old picture is deleted unless another product shows it too.
    async fn set_product_image(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The product's id: one of the caller's (else FORBIDDEN; \
                          NOT_FOUND when there is none).")]
        product_id: ID,
        #[graphql(
            desc = "The new picture, or null to remove it: JPEG, PNG, WebP or GIF, sent as a file of a \
                          multipart request, within the replica's limits (by default 5 \
                          MiB, and 4,096 pixels on the longer side). Anything else is BAD_USER_INPUT; past the partner's \
                          picture quota, also BAD_USER_INPUT."
        )]
        image: Option<Upload>,
        #[graphql(desc = "The product's `version` as the caller last read it: when \
                          the product has changed since, the answer is CONFLICT and \
                          nothing is written. Left out, the write applies regardless.")]
        expected_version: Option<i64>,
    ) -> async_graphql::Result<ProductNode> {
        let actor = actor(ctx)?;
        let id = id_arg("productId", &product_id)?;
        let picture = picture_arg(ctx, "image", image).await?;
        let guard = EditGuard {
            expected_version,
            expected_quantity: None,
        };
        Ok(ProductNode(
            service(ctx)?
                .set_product_image(&actor, id, picture, guard, None)
                .await?,
        ))
    }

    /// Deletes one of the caller's products; its stock history stays readable.
    async fn delete_product(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The product's id: one of the caller's (else FORBIDDEN; \
                          NOT_FOUND when there is none).")]
        id: ID,
        #[graphql(desc = "The product's `version` as the caller last read it: when \
                          the product has changed since, the answer is CONFLICT and \
                          nothing is written. Left out, the write applies regardless.")]
        expected_version: Option<i64>,
    ) -> async_graphql::Result<ProductNode> {
        let actor = actor(ctx)?;
        let id = id_arg("id", &id)?;
        let guard = EditGuard {
            expected_version,
            expected_quantity: None,
        };
        Ok(ProductNode(
            service(ctx)?
                .delete_product(&actor, id, guard, None)
                .await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::service::products::{CursorValue, SortField};

    fn cursors() -> impl Strategy<Value = ProductCursor> {
        let fields = prop_oneof![
            Just(SortField::Name),
            Just(SortField::Price),
            Just(SortField::Quantity),
            Just(SortField::UpdatedAt),
            Just(SortField::CreatedAt),
            Just(SortField::Id),
        ];
        let values = prop_oneof![
            any::<i64>().prop_map(CursorValue::Int),
            "\\PC{0,30}".prop_map(CursorValue::Text),
        ];
        (fields, values, any::<i64>()).prop_map(|(field, value, id)| ProductCursor {
            field,
            value,
            id,
        })
    }

    proptest! {
        #[test]
        fn product_cursors_roundtrip(cursor in cursors()) {
            let encoded = OpaqueCursor(cursor.clone()).encode_cursor();
            let decoded = OpaqueCursor::<ProductCursor>::decode_cursor(&encoded).map(|c| c.0);
            prop_assert_eq!(decoded.ok(), Some(cursor));
        }

        /// A cursor edited by hand, or any string at all, decodes to a cursor or to an
        /// error; never a panic.
        #[test]
        fn damaged_cursors_decode_or_fail_cleanly(
            cursor in cursors(),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
            junk in "\\PC{0,60}",
        ) {
            let mut bytes = OpaqueCursor(cursor).encode_cursor().into_bytes();
            for (at, value) in flips {
                let at = at % bytes.len().max(1);
                if let Some(b) = bytes.get_mut(at) {
                    *b = value;
                }
            }
            let damaged = String::from_utf8_lossy(&bytes).into_owned();
            let _ = OpaqueCursor::<ProductCursor>::decode_cursor(&damaged);
            let _ = OpaqueCursor::<ProductCursor>::decode_cursor(&junk);
            let _ = OpaqueCursor::<i64>::decode_cursor(&junk);
        }
    }
}
