//! The catalogue: which products a listing shows, in which order, a page at a time.

use serde::{Deserialize, Serialize};

use super::{Product, MAX_LISTING, PRODUCT_COLUMNS};
use crate::db::{Arg, Sql};
use crate::domain::Category;
use crate::error::{ServiceError, ServiceResult};
use crate::service::Service;

/// Which products a listing shows.
#[derive(Clone, Debug, Default)]
pub struct ProductFilter {
    pub owner_id: Option<i64>,
    /// Only this partner's products, by username. A username no partner has (or a
    /// partner other than `owner_id`) matches nothing: the rule is here, so both APIs
    /// answer it alike.
    pub owner_username: Option<String>,
    pub category: Option<Category>,
    /// Matched case-insensitively anywhere in the name.
    pub search: Option<String>,
    pub in_stock: Option<bool>,
    pub low_stock: Option<bool>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortField {
    #[default]
    Name,
    Price,
    Quantity,
    UpdatedAt,
    CreatedAt,
    Id,
}

impl SortField {
    fn column(self) -> &'static str {
        match self {
            Self::Name => "name_key",
            Self::Price => "price",
            Self::Quantity => "quantity",
            Self::UpdatedAt => "updated_at",
            Self::CreatedAt => "created_at",
            Self::Id => "id",
        }
    }

    fn key_of(self, p: &Product) -> CursorValue {
        match self {
            Self::Name => CursorValue::Text(p.name.to_lowercase()),
            Self::Price => CursorValue::Int(p.price),
            Self::Quantity => CursorValue::Int(p.quantity),
            Self::UpdatedAt => CursorValue::Int(p.updated_at),
            Self::CreatedAt => CursorValue::Int(p.created_at),
            Self::Id => CursorValue::Int(p.id),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProductOrder {
    pub field: SortField,
    pub descending: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CursorValue {
    Int(i64),
    Text(String),
}

/// A position in a listing: the sort key and id of the last product seen. Keyset
/// paging stays correct while products are added or removed between pages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductCursor {
    pub field: SortField,
    pub value: CursorValue,
    pub id: i64,
}

impl ProductCursor {
    pub fn of(order: ProductOrder, product: &Product) -> Self {
        Self {
            field: order.field,
            value: order.field.key_of(product),
            id: product.id,
        }
    }
}

/// One page of a listing.
#[derive(Clone, Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub has_next: bool,
}

impl<T> Page<T> {
    pub(crate) fn empty() -> Self {
        Self {
            items: Vec::new(),
            has_next: false,
        }
    }

    /// A page of at most `size` items from a read that asked for one more: the extra
    /// row, if it came, only says that another page follows.
    pub(crate) fn of_one_more(mut items: Vec<T>, size: i64) -> Self {
        let has_next = i64::try_from(items.len()).unwrap_or(i64::MAX) > size;
        items.truncate(usize::try_from(size).unwrap_or(0));
        Self { items, has_next }
    }
}

/// Escapes `%`, `_` and `\` for a `like … escape '\'` pattern.
fn like_contains(needle: &str) -> String {
    let mut out = String::from("%");
    for c in needle.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

fn filter_sql(sql: &mut Sql, filter: &ProductFilter) {
    sql.push(" where deleted_at is null");
    if let Some(owner) = filter.owner_id {
        sql.push(" and owner_id = ").bind(owner);
    }
    if let Some(category) = &filter.category {
        sql.push(" and category = ").bind(category.as_str());
    }
    if let Some(search) = filter
        .search
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        sql.push(" and name_key like ")
            .bind(like_contains(search))
            .push(" escape '\\'");
    }
    match filter.in_stock {
        Some(true) => {
            sql.push(" and quantity > 0");
        }
        Some(false) => {
            sql.push(" and quantity = 0");
        }
        None => {}
    }
    match filter.low_stock {
        Some(true) => {
            sql.push(" and low_stock_threshold is not null and quantity <= low_stock_threshold");
        }
        Some(false) => {
            sql.push(" and (low_stock_threshold is null or quantity > low_stock_threshold)");
        }
        None => {}
    }
}

impl Service {
    /// A live (not deleted) product.
    pub async fn product(&self, id: i64) -> ServiceResult<Option<Product>> {
        Ok(self
            .product_any(id)
            .await?
            .filter(|p| p.deleted_at.is_none()))
    }

    /// A product, deleted or not (stock history refers to deleted ones too).
    pub async fn product_any(&self, id: i64) -> ServiceResult<Option<Product>> {
        Ok(self
            .db
            .fetch_optional(
                &Sql::new(format!(
                    "select {PRODUCT_COLUMNS} from products where id = $1"
                ))
                .arg(id),
            )
            .await?)
    }

    /// The filter with its `owner_username` resolved into `owner_id`; `None` when it
    /// names no partner (or another partner than `owner_id`), so nothing matches.
    async fn resolve_owner(&self, filter: &ProductFilter) -> ServiceResult<Option<ProductFilter>> {
        let Some(username) = &filter.owner_username else {
            return Ok(Some(filter.clone()));
        };
        Ok(match self.user_by_username(username).await? {
            Some(user) if filter.owner_id.is_none_or(|id| id == user.id) => Some(ProductFilter {
                owner_id: Some(user.id),
                owner_username: None,
                ..filter.clone()
            }),
            _ => None,
        })
    }

    /// One page of live products, in a stable order (ties broken by id).
    pub async fn list_products(
        &self,
        filter: &ProductFilter,
        order: ProductOrder,
        first: i64,
        after: Option<&ProductCursor>,
    ) -> ServiceResult<Page<Product>> {
        let Some(filter) = self.resolve_owner(filter).await? else {
            return Ok(Page::empty());
        };
        let mut sql = Sql::new(format!("select {PRODUCT_COLUMNS} from products"));
        filter_sql(&mut sql, &filter);
        let column = order.field.column();
        let (cmp, dir) = if order.descending {
            ("<", "desc")
        } else {
            (">", "asc")
        };
        if let Some(cursor) = after {
            if cursor.field != order.field {
                return Err(ServiceError::invalid(
                    "after",
                    "the cursor belongs to another ordering",
                ));
            }
            let value = match &cursor.value {
                CursorValue::Int(v) => Arg::from(*v),
                CursorValue::Text(v) => Arg::from(v.as_str()),
            };
            sql.push(&format!(" and ({column} {cmp} "))
                .bind(value.clone())
                .push(&format!(" or ({column} = "))
                .bind(value)
                .push(&format!(" and id {cmp} "))
                .bind(cursor.id)
                .push("))");
        }
        sql.push(&format!(" order by {column} {dir}, id {dir} limit "))
            .bind(first + 1);
        let items: Vec<Product> = self.db.fetch_all(&sql).await?;
        Ok(Page::of_one_more(items, first))
    }

    /// Live products in id order, skipping `offset` and taking at most `limit`
    /// ([`MAX_LISTING`] when `None`, and never more): the original service's listing,
    /// for the REST routes. One request reads a bounded number of rows, however large
    /// the catalogue; `has_next` says whether there are more.
    pub async fn products_by_id(
        &self,
        filter: &ProductFilter,
        limit: Option<i64>,
        offset: i64,
    ) -> ServiceResult<Page<Product>> {
        let limit = limit.unwrap_or(MAX_LISTING).clamp(0, MAX_LISTING);
        let Some(filter) = self.resolve_owner(filter).await? else {
            return Ok(Page::empty());
        };
        let mut sql = Sql::new(format!("select {PRODUCT_COLUMNS} from products"));
        filter_sql(&mut sql, &filter);
        sql.push(" order by id limit ")
            .bind(limit + 1)
            .push(" offset ")
            .bind(offset);
        let items: Vec<Product> = self.db.fetch_all(&sql).await?;
        Ok(Page::of_one_more(items, limit))
    }

    /// How many live products match a filter.
    pub async fn count_products(&self, filter: &ProductFilter) -> ServiceResult<i64> {
        let Some(filter) = self.resolve_owner(filter).await? else {
            return Ok(0);
        };
        let mut sql = Sql::new("select count(*) from products");
        filter_sql(&mut sql, &filter);
        Ok(self.db.scalar(&sql).await?)
    }
}
