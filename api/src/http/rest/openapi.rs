//! The OpenAPI 3.1 document of the REST routes, generated from the handlers'
//! annotations (utoipa) and served at `/ecanteen/openapi.json`.

use std::sync::LazyLock;

use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::error::{ErrorBody, ErrorDetail};
use super::products::{self, CreateProduct, ImageUpload, RestProduct, StockBody, UpdateProduct};
use super::report::{self, RestMovement, RestSalesFigures, RestSalesGroup, RestSalesReport};
use super::users::{self, Account, CreatedToken, Credentials, NewToken, PasswordChange};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "e-canteen REST compatibility API",
        description = "The routes of the original Flask e-canteen web service. Integer fields \
            take a JSON number or a string holding a base-10 integer. Every failure is \
            {\"error\": {\"code\", \"message\"}}. An Idempotency-Key header makes a product \
            write safe to retry: a retry returns the first response, and the same key with \
            another body is a 422.",
    ),
    paths(
        users::join,
        users::login,
        users::logout,
        users::logout_get,
        users::change_password,
        users::create_token,
        users::revoke_token,
        products::list,
        products::show,
        products::create,
        products::update,
        products::update_with_id_in_body,
        products::delete,
        products::adjust_stock,
        products::replace_image,
        report::report,
        report::export_products,
        report::stock_history,
    ),
    components(schemas(
        RestProduct, CreateProduct, UpdateProduct, StockBody, ImageUpload,
        Credentials, Account, PasswordChange, NewToken, CreatedToken, ErrorBody, ErrorDetail,
        RestSalesReport, RestSalesGroup, RestSalesFigures, RestMovement,
    )),
    modifiers(&SecuritySchemes),
    tags(
        (name = "auth", description = "Accounts, sessions and API tokens"),
        (name = "products", description = "The catalogue, product edits, stock and pictures"),
        (name = "reports", description = "The sales report and the CSV exports (RFC 4180, UTF-8, a header row; text cells that a spreadsheet would run as a formula are led by `'`)"),
    ),
)]
pub struct RestApi;

/// The two ways to authenticate a write.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "ecanteen_session",
                "The session cookie set by POST /ecanteen/login",
            ))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API token from POST /ecanteen/tokens"))
                    .build(),
            ),
        );
    }
}

static DOCUMENT: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(RestApi::openapi);

/// `GET /ecanteen/openapi.json`.
pub async fn document() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(&DOCUMENT)
}
