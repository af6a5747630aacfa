//! Product writes: create, edit, picture and delete. Each is one transaction: its
//! idempotency key claimed first, the row guarded by the version it read, the ledger
//! and the product feed appended, the first result stored under the key.

use super::{EditGuard, NewProduct, Product, ProductPatch, PRODUCT_COLUMNS};
use crate::db::{now_ms, Sql, Tx};
use crate::domain::{
    Category, Description, IdempotencyKey, Picture, Price, ProductName, Quantity, StockReason,
};
use crate::error::{OnConstraint as _, ServiceError, ServiceResult};
use crate::service::idempotency::{stored_result, Idempotency};
use crate::service::pictures::{picture_raced, retry_picture_race, PICTURE_REFERENCE};
use crate::service::stock::NewMovement;
use crate::service::{ownership_error, Actor, Service};

/// A field of a fingerprint: `-` when absent, `=value` when given, so an absent field
/// and an empty one differ.
fn part(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("={}", v.to_string()))
}

impl NewProduct {
    /// What tells a genuine retry from a key reused for another product: every field,
    /// the picture by its hash. The same on every transport.
    fn fingerprint_parts(&self) -> Vec<String> {
        vec![
            self.name.as_str().to_owned(),
            self.description.as_str().to_owned(),
            self.price.get().to_string(),
            self.quantity.get().to_string(),
            self.category.as_str().to_owned(),
            part(self.low_stock_threshold.map(Quantity::get)),
            part(self.picture.as_ref().map(|p| p.hash.as_str())),
        ]
    }
}

impl ProductPatch {
    /// What tells a genuine retry of an edit from another edit under the same key.
    fn fingerprint_parts(&self) -> Vec<String> {
        vec![
            part(self.name.as_ref().map(ProductName::as_str)),
            part(self.description.as_ref().map(Description::as_str)),
            part(self.price.map(Price::get)),
            part(self.category.as_ref().map(Category::as_str)),
            part(self.low_stock_threshold.map(|t| part(t.map(Quantity::get)))),
            part(self.quantity.map(Quantity::get)),
            part(
                self.picture
                    .as_ref()
                    .map(|p| part(p.as_ref().map(|p| p.hash.as_str()))),
            ),
        ]
    }
}

impl EditGuard {
    fn fingerprint_parts(self) -> [String; 2] {
        [part(self.expected_version), part(self.expected_quantity)]
    }
}

/// The idempotency of a product write: its key, fingerprinted by the operation, the
/// product and the request's own parts.
fn keyed(
    key: Option<IdempotencyKey>,
    operation: &str,
    id: Option<i64>,
    parts: &[String],
) -> Option<Idempotency> {
    key.map(|key| {
        let mut all = vec![operation.to_owned(), part(id)];
        all.extend_from_slice(parts);
        Idempotency::new(key, &all)
    })
}

const CHANGED_CONCURRENTLY: &str = "the product was changed concurrently; reload and retry";

impl Tx {
    /// Appends to the product change feed inside this transaction (see
    /// [`Tx::appends_to_feed`]).
    async fn append_product_event(&mut self, p: &Product, kind: &str) -> ServiceResult<()> {
        self.appends_to_feed();
        self.execute(
            &Sql::new(
                "insert into product_events (product_id, owner_id, kind, version, created_at)
                 values ($1, $2, $3, $4, $5)",
            )
            .arg(p.id)
            .arg(p.owner_id)
            .arg(kind)
            .arg(p.version)
            .arg(p.updated_at),
        )
        .await?;
        Ok(())
    }

    /// Claims an idempotency key for a product write, if it has one: the product the
    /// first attempt returned when this is a retry.
    async fn claim_product(
        &mut self,
        actor: &Actor,
        operation: &str,
        idempotency: Option<&Idempotency>,
        now: i64,
    ) -> ServiceResult<Option<Product>> {
        let Some(idem) = idempotency else {
            return Ok(None);
        };
        self.claim_key(actor.user_id, operation, idem, now)
            .await?
            .map(|response| stored_result::<Product>(&response))
            .transpose()
    }

    /// Stores the product a write returns under its idempotency key, if it has one.
    async fn record_product(
        &mut self,
        actor: &Actor,
        idempotency: Option<&Idempotency>,
        product: &Product,
    ) -> ServiceResult<()> {
        match idempotency {
            Some(idem) => self.record_key(actor.user_id, idem, product).await,
            None => Ok(()),
        }
    }

    /// Loads a live product for a write by `actor`: NOT_FOUND or FORBIDDEN otherwise,
    /// and a CONFLICT when the guard's expectations are stale.
    async fn load_for_write(
        &mut self,
        id: i64,
        actor: &Actor,
        guard: EditGuard,
    ) -> ServiceResult<Product> {
        let current: Option<Product> = self
            .fetch_optional(
                &Sql::new(format!(
                    "select {PRODUCT_COLUMNS} from products where id = $1 and deleted_at is null"
                ))
                .arg(id),
            )
            .await?;
        match current {
            Some(p) if p.owner_id == actor.user_id => {
                check_guard(&p, guard)?;
                Ok(p)
            }
            other => Err(ownership_error(other.map(|p| p.owner_id), actor)
                .unwrap_or(ServiceError::NotFound("product"))),
        }
    }
}

impl Service {
    /// Creates a product owned by the actor, with its picture if one is given. Initial
    /// stock is recorded in the ledger as a RESTOCK, so the ledger always sums to the
    /// quantity.
    ///
    /// With an idempotency key, a retry returns the product the first attempt created.
    pub async fn create_product(
        &self,
        actor: &Actor,
        new: NewProduct,
        key: Option<IdempotencyKey>,
    ) -> ServiceResult<Product> {
        let idempotency = keyed(key, "createProduct", None, &new.fingerprint_parts());
        let (service, actor) = (self.clone(), *actor);
        self.detached(async move {
            retry_picture_race(|| service.try_create_product(&actor, &new, idempotency.as_ref()))
                .await
        })
        .await
    }

    async fn try_create_product(
        &self,
        actor: &Actor,
        new: &NewProduct,
        idempotency: Option<&Idempotency>,
    ) -> ServiceResult<Product> {
        let now = now_ms();
        let mut tx = self.db.begin_write().await?;
        if let Some(first) = tx
            .claim_product(actor, "createProduct", idempotency, now)
            .await?
        {
            return Ok(first);
        }
        if let Some(picture) = &new.picture {
            tx.store_picture(picture, actor.user_id, None, self.pictures.quota_bytes)
                .await?;
        }
        let product: Product = tx
            .fetch_one(
                &Sql::new(format!(
                    "insert into products (owner_id, name, name_key, description, price, quantity,
                         category, low_stock_threshold, image_ref, image_ext, created_at, updated_at)
                     values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)
                     returning {PRODUCT_COLUMNS}"
                ))
                .arg(actor.user_id)
                .arg(new.name.as_str())
                .arg(new.name.key())
                .arg(new.description.as_str())
                .arg(new.price.get())
                .arg(new.quantity.get())
                .arg(new.category.as_str())
                .arg(new.low_stock_threshold.map(Quantity::get))
                .arg(new.picture.as_ref().map(|p| p.hash.as_str()))
                .arg(new.picture.as_ref().map(|p| p.ext))
                .arg(now),
            )
            .await
            .on_constraint(PICTURE_REFERENCE, picture_raced)?;
        if product.quantity > 0 {
            tx.append_movement(&NewMovement {
                product_id: product.id,
                actor_id: actor.user_id,
                delta: product.quantity,
                quantity_after: product.quantity,
                reason: StockReason::Restock,
                note: Some("initial stock"),
                idempotency_key: None,
                at: now,
                unit_price: product.price,
            })
            .await?;
        }
        tx.append_product_event(&product, "CREATED").await?;
        tx.record_product(actor, idempotency, &product).await?;
        tx.commit().await?;
        Ok(product)
    }

    /// Edits a product of the actor's. The write is guarded by the version it read, so
    /// a concurrent change in between makes this a CONFLICT rather than a lost update.
    pub async fn update_product(
        &self,
        actor: &Actor,
        id: i64,
        patch: ProductPatch,
        guard: EditGuard,
        key: Option<IdempotencyKey>,
    ) -> ServiceResult<Product> {
        let mut parts = patch.fingerprint_parts();
        parts.extend(guard.fingerprint_parts());
        let idempotency = keyed(key, "updateProduct", Some(id), &parts);
        let (service, actor) = (self.clone(), *actor);
        self.detached(async move {
            service
                .replacing_picture(|| {
                    service.try_update_product(
                        &actor,
                        id,
                        &patch,
                        guard,
                        idempotency.as_ref(),
                        "updateProduct",
                    )
                })
                .await
        })
        .await
    }

    /// Runs a write that may give a product another picture (retrying when it lost a
    /// race with a cleanup), then releases the picture it replaced.
    async fn replacing_picture<F, Fut>(&self, attempt: F) -> ServiceResult<Product>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = ServiceResult<(Product, Option<String>)>>,
    {
        let (updated, replaced) = retry_picture_race(attempt).await?;
        if replaced.as_deref() != updated.image_ref.as_deref() {
            self.release_picture(replaced.as_deref()).await;
        }
        Ok(updated)
    }

    /// Returns the updated product and the picture it had before. `operation` names
    /// the write its idempotency key is claimed for (an edit, or a new picture).
    async fn try_update_product(
        &self,
        actor: &Actor,
        id: i64,
        patch: &ProductPatch,
        guard: EditGuard,
        idempotency: Option<&Idempotency>,
        operation: &'static str,
    ) -> ServiceResult<(Product, Option<String>)> {
        let now = now_ms();
        let mut tx = self.db.begin_write().await?;
        if let Some(first) = tx.claim_product(actor, operation, idempotency, now).await? {
            return Ok((first, None));
        }
        let current = tx.load_for_write(id, actor, guard).await?;
        if let Some(Some(picture)) = &patch.picture {
            tx.store_picture(picture, actor.user_id, Some(id), self.pictures.quota_bytes)
                .await?;
        }
        let name = patch
            .name
            .as_ref()
            .map_or(current.name.clone(), |n| n.as_str().to_owned());
        let quantity = patch.quantity.map_or(current.quantity, Quantity::get);
        let (image_ref, image_ext) = match &patch.picture {
            Some(Some(p)) => (Some(p.hash.clone()), Some(p.ext.to_owned())),
            Some(None) => (None, None),
            None => (current.image_ref.clone(), current.image_ext.clone()),
        };
        let updated: Product = tx
            .fetch_optional(
                &Sql::new(format!(
                    "update products set name = $1, name_key = $2, description = $3, price = $4,
                         category = $5, low_stock_threshold = $6, quantity = $7, image_ref = $8,
                         image_ext = $9, version = version + 1, updated_at = $10
                     where id = $11 and version = $12
                     returning {PRODUCT_COLUMNS}"
                ))
                .arg(name.as_str())
                .arg(name.to_lowercase())
                .arg(
                    patch
                        .description
                        .as_ref()
                        .map_or(current.description.as_str(), |d| d.as_str()),
                )
                .arg(patch.price.map_or(current.price, Price::get))
                .arg(
                    patch
                        .category
                        .as_ref()
                        .map_or(current.category.as_str(), |c| c.as_str()),
                )
                .arg(match patch.low_stock_threshold {
                    Some(t) => t.map(Quantity::get),
                    None => current.low_stock_threshold,
                })
                .arg(quantity)
                .arg(image_ref)
                .arg(image_ext)
                .arg(now)
                .arg(id)
                .arg(current.version),
            )
            .await
            .on_constraint(PICTURE_REFERENCE, picture_raced)?
            // Only PostgreSQL can get here: another transaction changed the row between
            // our read and our write (SQLite's BEGIN IMMEDIATE rules that out).
            .ok_or_else(|| ServiceError::conflict(CHANGED_CONCURRENTLY, None))?;
        if quantity != current.quantity {
            tx.append_movement(&NewMovement {
                product_id: id,
                actor_id: actor.user_id,
                delta: quantity - current.quantity,
                quantity_after: quantity,
                reason: StockReason::Correction,
                note: Some("edited"),
                idempotency_key: None,
                at: now,
                unit_price: updated.price,
            })
            .await?;
        }
        tx.append_product_event(&updated, "UPDATED").await?;
        tx.record_product(actor, idempotency, &updated).await?;
        tx.commit().await?;
        Ok((updated, current.image_ref))
    }

    /// Replaces (or, with `None`, removes) the picture of a product of the actor's: an
    /// edit of its picture alone, under an idempotency key of its own operation.
    pub async fn set_product_image(
        &self,
        actor: &Actor,
        id: i64,
        picture: Option<Picture>,
        guard: EditGuard,
        key: Option<IdempotencyKey>,
    ) -> ServiceResult<Product> {
        let mut parts = vec![part(picture.as_ref().map(|p| p.hash.as_str()))];
        parts.extend(guard.fingerprint_parts());
        let idempotency = keyed(key, "setProductImage", Some(id), &parts);
        let patch = ProductPatch {
            picture: Some(picture),
            ..ProductPatch::default()
        };
        let (service, actor) = (self.clone(), *actor);
        self.detached(async move {
            service
                .replacing_picture(|| {
                    service.try_update_product(
                        &actor,
                        id,
                        &patch,
                        guard,
                        idempotency.as_ref(),
                        "setProductImage",
                    )
                })
                .await
        })
        .await
    }

    /// Deletes a product of the actor's, keeping its row for the stock history. Its
    /// picture is released (and removed, unless another product shows it too).
    pub async fn delete_product(
        &self,
        actor: &Actor,
        id: i64,
        guard: EditGuard,
        key: Option<IdempotencyKey>,
    ) -> ServiceResult<Product> {
        let idempotency = keyed(key, "deleteProduct", Some(id), &guard.fingerprint_parts());
        let (service, actor) = (self.clone(), *actor);
        self.detached(async move {
            service
                .try_delete_product(&actor, id, guard, idempotency.as_ref())
                .await
        })
        .await
    }

    async fn try_delete_product(
        &self,
        actor: &Actor,
        id: i64,
        guard: EditGuard,
        idempotency: Option<&Idempotency>,
    ) -> ServiceResult<Product> {
        let now = now_ms();
        let mut tx = self.db.begin_write().await?;
        if let Some(first) = tx
            .claim_product(actor, "deleteProduct", idempotency, now)
            .await?
        {
            // A retry: nothing to write, nothing to release.
            return Ok(first);
        }
        let current = tx.load_for_write(id, actor, guard).await?;
        let deleted: Product = tx
            .fetch_optional(
                &Sql::new(format!(
                    "update products set deleted_at = $1, updated_at = $1, version = version + 1,
                         image_ref = null, image_ext = null
                     where id = $2 and version = $3 returning {PRODUCT_COLUMNS}"
                ))
                .arg(now)
                .arg(id)
                .arg(current.version),
            )
            .await?
            .ok_or_else(|| ServiceError::conflict(CHANGED_CONCURRENTLY, None))?;
        tx.append_product_event(&deleted, "DELETED").await?;
        tx.record_product(actor, idempotency, &deleted).await?;
        tx.commit().await?;
        let picture = current.image_ref;
        self.release_picture(picture.as_deref()).await;
        Ok(deleted)
    }
}

fn check_guard(current: &Product, guard: EditGuard) -> ServiceResult<()> {
    if let Some(expected) = guard.expected_version {
        if expected != current.version {
            return Err(ServiceError::conflict(
                format!(
                    "expectedVersion: the product is at version {}, not {expected}; it was changed by someone else",
                    current.version
                ),
                Some(current.version),
            ));
        }
    }
    if let Some(expected) = guard.expected_quantity {
        if expected != current.quantity {
            return Err(ServiceError::conflict(
                format!(
                    "expectedQuantity: the stock is {}, not {expected}; it was changed by someone else",
                    current.quantity
                ),
                Some(current.quantity),
            ));
        }
    }
    Ok(())
}
