//! `PUT /ecanteen/product/{id}/image`: a new picture, as multipart or a `data:` URI.

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::HeaderMap;
use axum::Json;
use tower_sessions::Session;
use utoipa::ToSchema;

use super::super::actor;
use super::super::body::{self, too_large_picture, IdempotencyHeader};
use super::super::error::{ErrorBody, OwnerFailures, RestError};
use super::{product_id, render, RestProduct};
use crate::http::{content_essence, declared_length, is_preflighted, AppState};
use crate::service::products::EditGuard;

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
