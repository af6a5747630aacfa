//! The GraphQL schema: types and resolvers, one module per area, merged here.
//!
//! Resolvers parse their arguments into domain values, call [`Service`], and turn
//! [`ServiceError`]s into GraphQL errors with a stable `extensions.code`. They never
//! touch SQL. The schema needs no socket: tests and benches execute it directly, and the
//! HTTP layer only attaches per-request data ([`RequestAuth`], the owner DataLoader).

pub mod connection;
pub mod limits;
pub mod live;
pub mod products;
pub mod report;
pub mod stock;
pub mod users;

use async_graphql::connection::PageInfo;
use async_graphql::dataloader::{DataLoader, HashMapCache};
use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextRequest, NextSubscribe,
};
use async_graphql::{Context, MergedObject, Response, Schema, ServerError};
use chrono::{DateTime, Utc};
use futures_util::stream::BoxStream;
use futures_util::StreamExt as _;

use crate::domain::parse_id;
use crate::error::ServiceError;
use crate::events::EventHub;
use crate::service::{Actor, Service};
use crate::sessions::PartnerSession;

/// Reads. The catalogue (`product`, `products`) and `canteen` are public; `me` is null
/// without credentials; `stockMovements` and `salesReport` are the partner's own
/// (UNAUTHENTICATED without credentials, FORBIDDEN for another partner's products).
/// Credentials are a session cookie (from `login`) or `Authorization: Bearer <token>`.
#[derive(MergedObject, Default)]
pub struct QueryRoot(
    users::UserQuery,
    products::ProductQuery,
    stock::StockQuery,
    report::ReportQuery,
);

/// Writes. `register` and `login` need no credentials; every other mutation acts as
/// the logged-in partner (UNAUTHENTICATED without credentials) on their own products
/// only (FORBIDDEN otherwise). A write that fails writes nothing. BUSY means the
/// replica is at capacity: retry after `extensions.retryAfter` seconds.
#[derive(MergedObject, Default)]
pub struct MutationRoot(
    users::UserMutation,
    products::ProductMutation,
    stock::StockMutation,
);

pub type AppSchema = Schema<QueryRoot, MutationRoot, live::SubscriptionRoot>;

/// Limits on what one request may ask for.
#[derive(Clone, Copy, Debug)]
pub struct SchemaLimits {
    pub max_depth: usize,
    pub max_complexity: usize,
    /// Most fields at the root of an operation (aliases and fragments included).
    pub max_root_fields: usize,
    /// Most aliased fields in a document.
    pub max_aliases: usize,
    pub introspection: bool,
}

impl Default for SchemaLimits {
    fn default() -> Self {
        Self {
            max_depth: 12,
            max_complexity: 5_000,
            max_root_fields: 16,
            max_aliases: 32,
            introspection: true,
        }
    }
}

/// Builds the executable schema around a service and its replica's event hub.
pub fn build_schema(service: Service, events: EventHub, limits: SchemaLimits) -> AppSchema {
    let mut builder = Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        live::SubscriptionRoot,
    )
    .data(service)
    .data(events)
    .extension(ErrorCodes)
    .extension(connection::CheckedPerOperation)
    .extension(limits::DocumentLimits {
        max_root_fields: limits.max_root_fields,
        max_aliases: limits.max_aliases,
    })
    .limit_depth(limits.max_depth)
    .limit_complexity(limits.max_complexity);
    if !limits.introspection {
        builder = builder.disable_introspection();
    }
    builder.finish()
}

/// The SDL of the schema, as checked in at `schema.graphql`.
pub fn sdl() -> String {
    Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        live::SubscriptionRoot,
    )
    .finish()
    .sdl()
}

/// Who is asking, attached to each request by the HTTP layer.
#[derive(Clone, Debug, Default)]
pub struct RequestAuth {
    pub actor: Option<Actor>,
    /// The cookie session, which `login` and `logout` change. Absent when the schema is
    /// executed without HTTP (tests, benches).
    pub session: Option<PartnerSession>,
}

/// Builds the per-request data a request needs: who asks, and a fresh owner loader (a
/// DataLoader's cache must not outlive its request). The loader caches what it loaded:
/// without a cache, owners asked for after its first batch went out were loaded again.
pub fn request_data(
    service: &Service,
    auth: RequestAuth,
) -> (RequestAuth, DataLoader<users::OwnerLoader, HashMapCache>) {
    (
        auth,
        DataLoader::with_cache(
            users::OwnerLoader(service.clone()),
            tokio::spawn,
            HashMapCache::default(),
        ),
    )
}

/// Gives every error of a response a stable `extensions.code`.
///
/// Resolvers return [`ServiceError`]s through `?` (async-graphql keeps the original as
/// the error's source); this extension reads it back and sets the code and its details.
/// Errors raised before any resolver ran (parsing, validation, depth and complexity
/// limits) are `BAD_USER_INPUT`. Any other uncoded error is a bug: it is logged, and the
/// client sees only `INTERNAL`. Being a schema extension, it applies with or without HTTP.
pub struct ErrorCodes;

impl ExtensionFactory for ErrorCodes {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ErrorCodes)
    }
}

#[async_trait::async_trait]
impl Extension for ErrorCodes {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        with_codes(next.run(ctx).await)
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        next.run(ctx, stream).map(with_codes).boxed()
    }
}

fn with_codes(mut response: Response) -> Response {
    for err in &mut response.errors {
        add_code(err);
    }
    response
}

/// Whether an error is async-graphql's own refusal of an argument's value, raised when a
/// resolver reads its arguments: a value that passed validation but does not parse (a
/// custom scalar such as `NaiveDate` is checked only then, as `"__dict__"` for a date
/// showed), or a null where the argument has a default. Its message (`InputValueError`)
/// names the type and the value's problem: the client's mistake, with nothing internal.
fn is_argument_coercion(message: &str) -> bool {
    message.starts_with("Failed to parse \"")
        || message.starts_with("Expected input type \"")
        || message.contains("(occurred while parsing \"")
}

fn add_code(err: &mut ServerError) {
    let source = err.source.clone();
    if let Some(service_err) = source
        .as_ref()
        .and_then(|s| s.downcast_ref::<ServiceError>())
    {
        service_err.log();
        let ext = err.extensions.get_or_insert_with(Default::default);
        ext.set("code", service_err.code());
        match service_err {
            ServiceError::Invalid { field, .. } => ext.set("field", field.as_str()),
            ServiceError::IdempotencyKeyReused => ext.set("field", "idempotencyKey"),
            ServiceError::Conflict {
                current: Some(current),
                ..
            } => ext.set("current", *current),
            ServiceError::InsufficientStock { available, .. } => ext.set("available", *available),
            _ => {}
        }
        if let Some(retry_after) = service_err.retry_after() {
            ext.set("retryAfter", retry_after.as_secs().max(1));
        }
        if service_err.is_retryable() {
            ext.set("retryable", true);
        }
        return;
    }
    if err
        .extensions
        .as_ref()
        .is_some_and(|ext| ext.get("code").is_some())
    {
        return;
    }
    let code = if err.path.is_empty() || is_argument_coercion(&err.message) {
        "BAD_USER_INPUT"
    } else {
        tracing::error!(error = %err.message, path = ?err.path, "uncoded resolver error");
        err.message = "internal error".to_owned();
        "INTERNAL"
    };
    err.extensions
        .get_or_insert_with(Default::default)
        .set("code", code);
}

pub(crate) fn service<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Service> {
    ctx.data::<Service>()
}

pub(crate) fn auth<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a RequestAuth> {
    ctx.data::<RequestAuth>()
}

/// The authenticated partner, or UNAUTHENTICATED.
pub(crate) fn actor(ctx: &Context<'_>) -> async_graphql::Result<Actor> {
    auth(ctx)?
        .actor
        .ok_or_else(|| ServiceError::Unauthenticated("log in or send an API token").into())
}

pub(crate) fn id_arg(field: &'static str, id: &async_graphql::ID) -> Result<i64, ServiceError> {
    parse_id(field, id.as_str())
}

pub(crate) fn datetime(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// What one database query costs in the complexity model, in units of one resolved
/// field. Every field that runs a query charges it, so the limit bounds the database
/// work of a request, not only the size of its answer: 5,000 aliases of
/// `products(first: 0) { totalCount }` were once 5,000 page queries and 5,000 counts
/// for the price of 5,000 fields.
pub(crate) const QUERY_COST: usize = 50;

/// The complexity of a paged field: its queries (the page, and the count `totalCount`
/// may run: charged here once, since the fields beside the items are multiplied with
/// them), plus what one item costs times the items a page may hold (at least one:
/// `first: 0` still runs the query), so a wide query (100 products, each with 100
/// movements) is priced as such.
pub(crate) fn page_complexity(first: Option<i32>, child_complexity: usize) -> usize {
    let items = first.map_or(20, |n| n.clamp(1, 100));
    usize::try_from(items)
        .unwrap_or(100)
        .saturating_mul(child_complexity)
        .saturating_add(2 * QUERY_COST)
}

/// A page size: at least 0, at most 100 (larger requests are capped).
/// Where a page of a connection is, for the `pageInfo` of the connections this schema
/// describes itself (async-graphql's own connection type carries no description).
pub(crate) fn page_info<C, N>(page: &async_graphql::connection::Connection<C, N>) -> PageInfo
where
    C: async_graphql::connection::CursorType + Send + Sync,
    N: async_graphql::OutputType,
{
    PageInfo {
        has_previous_page: page.has_previous_page,
        has_next_page: page.has_next_page,
        start_cursor: page.edges.first().map(|e| e.cursor.encode_cursor()),
        end_cursor: page.edges.last().map(|e| e.cursor.encode_cursor()),
    }
}

pub(crate) fn page_size(first: Option<i32>) -> Result<i64, ServiceError> {
    match first {
        None => Ok(20),
        Some(n) if n < 0 => Err(ServiceError::invalid("first", "must not be negative")),
        Some(n) => Ok(i64::from(n.min(100))),
    }
}
