//! Product pictures: stored once per content, served by every replica, cleaned up when
//! no live product uses them any more.
//!
//! A picture row is written in the same transaction as the product that references it.
//! Cleanup runs after the referencing change has committed and deletes a picture only
//! where no product refers to it. On SQLite, writers are serialised, so that check is
//! exact. On PostgreSQL, a foreign key from `products.image_ref` backs it: a cleanup
//! that races a new reference fails (and is ignored) rather than leaving the new one
//! dangling, and a reference that races a cleanup fails and is retried.

use crate::db::{now_ms, Sql, Tx};
use crate::domain::picture::{kind_of_ext, THUMBNAIL_CONTENT_TYPE};
use crate::domain::{Picture, PictureLimits};
use crate::error::{ServiceError, ServiceResult};
use crate::service::Service;

/// A stored file, ready to serve.
#[derive(Clone, Debug)]
pub struct StoredFile {
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// The public URL path of a picture.
pub fn picture_url(hash: &str, ext: &str) -> String {
    format!("/images/{hash}.{ext}")
}

/// The public URL path of a picture's thumbnail.
pub fn thumbnail_url(hash: &str) -> String {
    format!(
        "/images/{hash}/thumb.{}",
        crate::domain::picture::THUMBNAIL_EXT
    )
}

impl Tx {
    /// Inserts a picture for a product of `owner`'s (`product`: its id, none for a new
    /// one) unless the same content is already stored, inside this transaction, so the
    /// picture and its first reference commit together.
    ///
    /// First it checks the partner's quota: the pictures their other live products
    /// show (each distinct picture once; pictures are stored once per content) plus
    /// this one, with thumbnails, may take at most `quota` bytes. Over it, the write is
    /// refused with a clear error and nothing is stored.
    pub(crate) async fn store_picture(
        &mut self,
        p: &Picture,
        owner: i64,
        product: Option<i64>,
        quota: u64,
    ) -> ServiceResult<()> {
        let others: i64 = self
            .scalar_one(
                &Sql::new(
                    "select coalesce(sum(length(bytes) + length(thumb_bytes)), 0) from images
                     where hash <> $3 and hash in (
                         select image_ref from products
                         where owner_id = $1 and deleted_at is null and id <> $2
                           and image_ref is not null)",
                )
                .arg(owner)
                .arg(product.unwrap_or(0))
                .arg(p.hash.as_str()),
            )
            .await?;
        let this = u64::try_from(p.bytes.len() + p.thumbnail.len()).unwrap_or(u64::MAX);
        let used = u64::try_from(others).unwrap_or(0).saturating_add(this);
        if used > quota {
            return Err(over_quota(used, quota));
        }
        self.execute(
            &Sql::new(
                "insert into images (hash, content_type, ext, width, height, bytes, thumb_bytes, created_at)
                 values ($1, $2, $3, $4, $5, $6, $7, $8) on conflict (hash) do nothing",
            )
            .arg(p.hash.as_str())
            .arg(p.content_type)
            .arg(p.ext)
            .arg(i64::from(p.width))
            .arg(i64::from(p.height))
            .arg(p.bytes.as_slice())
            .arg(p.thumbnail.as_slice())
            .arg(now_ms()),
        )
        .await?;
        Ok(())
    }
}

/// The error of a picture write past its partner's quota.
pub(crate) fn over_quota(used: u64, quota: u64) -> ServiceError {
    let mib = |bytes: u64| bytes.div_ceil(1024 * 1024);
    ServiceError::invalid(
        "image",
        format!(
            "your products' pictures would take {} MiB, over your quota of {} MiB; remove or \
             replace some pictures first",
            mib(used),
            mib(quota)
        ),
    )
}

/// PostgreSQL's foreign key from `products.image_ref`: it refuses a reference to a
/// picture that a concurrent cleanup just deleted.
pub(crate) const PICTURE_REFERENCE: &str = "products_image_ref_fkey";

/// What a product write that met [`PICTURE_REFERENCE`] answers: it is tried again
/// ([`retry_picture_race`]), and after a few losses the client is told to send it again.
pub(crate) fn picture_raced() -> ServiceError {
    ServiceError::Raced("the picture was removed while it was being stored; send the request again")
}

impl Service {
    pub fn picture_limits(&self) -> &PictureLimits {
        &self.pictures
    }

    /// Checks uploaded bytes and makes the thumbnail, once admitted among the picture
    /// decoders (one per core, a short queue; past it BUSY), on their low-priority
    /// threads: decoding a large photo takes a core for hundreds of milliseconds.
    pub async fn parse_picture(&self, field: &str, bytes: Vec<u8>) -> ServiceResult<Picture> {
        let limits = self.pictures;
        let field = field.to_owned();
        self.decodes
            .run(move || Picture::parse(&field, bytes, &limits))
            .await?
    }

    /// A stored picture by hash, with the extension it was stored under.
    pub async fn picture_file(&self, hash: &str, ext: &str) -> ServiceResult<Option<StoredFile>> {
        let row: Option<(String, Vec<u8>)> = self
            .db
            .fetch_optional(
                &Sql::new("select content_type, bytes from images where hash = $1 and ext = $2")
                    .arg(hash)
                    .arg(ext),
            )
            .await?;
        Ok(row.map(|(content_type, bytes)| StoredFile {
            content_type,
            bytes,
        }))
    }

    /// A picture already stored, by the URL path it is served at
    /// (`/images/{hash}.{ext}`), ready to be given to another product. `None` when no
    /// such picture is stored.
    pub async fn stored_picture(&self, url: &str) -> ServiceResult<Option<Picture>> {
        let Some((hash, ext)) = url
            .strip_prefix("/images/")
            .and_then(|name| name.split_once('.'))
        else {
            return Ok(None);
        };
        let Some((ext, content_type)) = kind_of_ext(ext) else {
            return Ok(None);
        };
        let row: Option<(i64, i64, Vec<u8>, Vec<u8>)> = self
            .db
            .fetch_optional(
                &Sql::new(
                    "select width, height, bytes, thumb_bytes from images where hash = $1 and ext = $2",
                )
                .arg(hash)
                .arg(ext),
            )
            .await?;
        Ok(row.map(|(width, height, bytes, thumbnail)| Picture {
            hash: hash.to_owned(),
            content_type,
            ext,
            width: u32::try_from(width).unwrap_or(0),
            height: u32::try_from(height).unwrap_or(0),
            bytes,
            thumbnail,
        }))
    }

    /// A stored picture's thumbnail.
    pub async fn thumbnail_file(&self, hash: &str) -> ServiceResult<Option<StoredFile>> {
        let row: Option<Vec<u8>> = self
            .db
            .scalar_optional(&Sql::new("select thumb_bytes from images where hash = $1").arg(hash))
            .await?;
        Ok(row.map(|bytes| StoredFile {
            content_type: THUMBNAIL_CONTENT_TYPE.to_owned(),
            bytes,
        }))
    }

    /// Deletes a picture that no product refers to any more. A picture that is (or
    /// has just become) referenced again stays.
    pub(crate) async fn release_picture(&self, hash: Option<&str>) {
        let Some(hash) = hash else { return };
        let result = self
            .db
            .execute(
                &Sql::new(
                    "delete from images where hash = $1
                     and not exists (select 1 from products where image_ref = $1)",
                )
                .arg(hash),
            )
            .await;
        if let Err(err) = result {
            // A foreign-key refusal means a new reference won the race: keep it.
            if !err
                .as_database_error()
                .is_some_and(|e| e.is_foreign_key_violation())
            {
                ServiceError::from(err).log();
            }
        }
    }

    /// Deletes every picture no product refers to (run periodically, for pictures whose
    /// release was interrupted, e.g. by a crash between commit and cleanup).
    pub async fn sweep_pictures(&self) -> ServiceResult<u64> {
        let cutoff = now_ms() - 60_000;
        let result = self
            .db
            .execute(
                &Sql::new(
                    "delete from images where created_at < $1
                     and not exists (select 1 from products where image_ref = images.hash)",
                )
                .arg(cutoff),
            )
            .await;
        match result {
            Ok(n) => Ok(n),
            Err(err)
                if err
                    .as_database_error()
                    .is_some_and(|e| e.is_foreign_key_violation()) =>
            {
                Ok(0)
            }
            Err(err) => Err(err.into()),
        }
    }
}

/// Runs a write that references a picture, retrying when it lost a race against the
/// cleanup of that same picture (PostgreSQL only; see the module docs).
pub(crate) async fn retry_picture_race<T, F, Fut>(mut attempt: F) -> ServiceResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ServiceResult<T>>,
{
    let mut tries = 0;
    loop {
        match attempt().await {
            Err(ServiceError::Raced(_)) if tries < 3 => tries += 1,
            other => return other,
        }
    }
}
