//! `GET /ecanteen/report` (the sales report, as JSON or CSV) and the CSV exports:
//! `GET /ecanteen/export/products` and `GET /ecanteen/product/{id}/stock`.
//!
//! CSV is RFC 4180 (the `csv` crate's writer: a header row, `,` separated, fields
//! quoted when they hold `,`, `"` or a line break, CRLF line ends), UTF-8 with no byte
//! order mark. A text cell that a spreadsheet would run as a formula (one that begins
//! with `=`, `+`, `-`, `@`, a tab or a carriage return) is written with a leading `'`,
//! as OWASP advises against CSV injection; numbers are written as they are.
//!
//! The exports are streamed a page at a time, so a long history is never held in
//! memory whole.

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use futures_util::stream::{self, StreamExt as _};
use serde::{Deserialize, Serialize};
use tower_sessions::Session;
use utoipa::{IntoParams, ToSchema};

use super::actor;
use super::error::{ErrorBody, RestError};
use super::products::product_id;
use crate::error::{ServiceError, ServiceResult};
use crate::http::AppState;
use crate::service::report::{DaySales, ProductSales, SalesFigures, MAX_TOP_PRODUCTS};
use crate::service::{
    Actor, Product, ProductFilter, ReportGrouping, ReportGroups, ReportRequest, Service,
    StockMovement,
};

/// Rows read per page of an export.
const EXPORT_PAGE: i64 = 500;

/// How an answer is written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
}

fn format(raw: Option<&str>) -> Result<Format, RestError> {
    match raw.map(str::to_ascii_lowercase).as_deref() {
        None | Some("json") => Ok(Format::Json),
        Some("csv") => Ok(Format::Csv),
        Some(other) => Err(RestError::bad_request(format!(
            "format: must be json or csv, not {other:?}"
        ))),
    }
}

fn query<T>(params: Result<Query<T>, QueryRejection>) -> Result<T, RestError> {
    params
        .map(|Query(p)| p)
        .map_err(|e| RestError::bad_request(format!("query: {}", e.body_text())))
}

/// The sales report's query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportParams {
    /// The first day, `YYYY-MM-DD`, in the canteen's time zone (default: `to`).
    #[param(value_type = Option<String>, format = Date)]
    pub from: Option<String>,
    /// The last day, included (default: today in the canteen's time zone). At most 366
    /// days from `from`.
    #[param(value_type = Option<String>, format = Date)]
    pub to: Option<String>,
    /// `day` (default: one row per day of the range) or `product` (one row per product
    /// that changed, best-selling first).
    pub group_by: Option<String>,
    /// `json` (default) or `csv` (the groups only, one per row).
    pub format: Option<String>,
    /// How many best-selling products `top_products` lists, 0 to 50 (default 5).
    #[param(value_type = Option<i64>, minimum = 0, maximum = 50)]
    pub top: Option<String>,
}

/// What was sold and how stock moved, over a group or a whole report.
#[derive(Serialize, ToSchema)]
pub struct RestSalesFigures {
    /// Units that left with reason `SALE`.
    pub units_sold: i64,
    /// Rupiah: each sale's units times the unit price recorded with the sale.
    pub revenue: i64,
    /// Units sold before prices were recorded with sales (in `units_sold`, not in
    /// `revenue`).
    pub unpriced_units_sold: i64,
    pub units_restocked: i64,
    pub units_wasted: i64,
    /// The net change of reasons `CORRECTION`, `COUNT` and `OTHER`.
    pub corrections: i64,
}

impl From<SalesFigures> for RestSalesFigures {
    fn from(f: SalesFigures) -> Self {
        Self {
            units_sold: f.units_sold,
            revenue: f.revenue,
            unpriced_units_sold: f.unpriced_units_sold,
            units_restocked: f.units_restocked,
            units_wasted: f.units_wasted,
            corrections: f.corrections,
        }
    }
}

/// One group of the report: a day, or a product.
#[derive(Serialize, ToSchema)]
pub struct RestSalesGroup {
    /// The day (`group_by=day`), `YYYY-MM-DD`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = Date)]
    pub day: Option<String>,
    /// The product (`group_by=product`, and in `top_products`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product_name: Option<String>,
    #[serde(flatten)]
    pub figures: RestSalesFigures,
}

impl From<&DaySales> for RestSalesGroup {
    fn from(d: &DaySales) -> Self {
        Self {
            day: Some(d.day.to_string()),
            product_id: None,
            product_name: None,
            figures: d.figures.into(),
        }
    }
}

impl From<&ProductSales> for RestSalesGroup {
    fn from(p: &ProductSales) -> Self {
        Self {
            day: None,
            product_id: Some(p.product_id),
            product_name: Some(p.name.clone()),
            figures: p.figures.into(),
        }
    }
}

/// The sales report.
#[derive(Serialize, ToSchema)]
pub struct RestSalesReport {
    #[schema(format = Date)]
    pub from: String,
    #[schema(format = Date)]
    pub to: String,
    /// The IANA time zone whose days these are.
    pub time_zone: String,
    /// `day` or `product`.
    pub group_by: String,
    pub groups: Vec<RestSalesGroup>,
    pub totals: RestSalesFigures,
    pub top_products: Vec<RestSalesGroup>,
}

fn date(field: &str, raw: &str) -> Result<NaiveDate, RestError> {
    NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| {
        RestError::bad_request(format!("{field}: must be a date, YYYY-MM-DD, not {raw:?}"))
    })
}

/// The caller's sales report.
#[utoipa::path(get, path = "/ecanteen/report", tag = "reports", params(ReportParams),
    responses(
        (status = 200, description = "The report (JSON), or its groups as CSV with a header row (`format=csv`)",
            content(
                (RestSalesReport = "application/json"),
                (String = "text/csv"),
            )),
        (status = 400, description = "A bad date, range, grouping, format or `top`", body = ErrorBody),
        (status = 401, description = "Not logged in", body = ErrorBody),
    ),
    security(("session" = []), ("bearer" = [])))]
pub async fn report(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    params: Result<Query<ReportParams>, QueryRejection>,
) -> Result<Response, RestError> {
    let actor = actor(&state, &headers, session).await?;
    let params = query(params)?;
    let format = format(params.format.as_deref())?;
    let tz = state.service.time_zone();
    let to = match params.to.as_deref() {
        Some(raw) => date("to", raw)?,
        None => Utc::now().with_timezone(&tz).date_naive(),
    };
    let from = match params.from.as_deref() {
        Some(raw) => date("from", raw)?,
        None => to,
    };
    let grouping = match params
        .group_by
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("day") => ReportGrouping::Day,
        Some("product") => ReportGrouping::Product,
        Some(other) => {
            return Err(RestError::bad_request(format!(
                "group_by: must be day or product, not {other:?}"
            )))
        }
    };
    let top = match params.top.as_deref() {
        None => 5,
        // The bound itself is the service's.
        Some(raw) => raw.parse::<usize>().map_err(|_| {
            RestError::bad_request(format!(
                "top: must be an integer from 0 to {MAX_TOP_PRODUCTS}, not {raw:?}"
            ))
        })?,
    };
    let report = state
        .service
        .sales_report(
            &actor,
            ReportRequest {
                from,
                to,
                grouping,
                top,
            },
        )
        .await?;
    let groups: Vec<RestSalesGroup> = match &report.groups {
        ReportGroups::Days(days) => days.iter().map(RestSalesGroup::from).collect(),
        ReportGroups::Products(products) => products.iter().map(RestSalesGroup::from).collect(),
    };
    if format == Format::Json {
        return Ok(Json(RestSalesReport {
            from: from.to_string(),
            to: to.to_string(),
            time_zone: report.time_zone.name().to_owned(),
            group_by: match grouping {
                ReportGrouping::Day => "day",
                ReportGrouping::Product => "product",
            }
            .to_owned(),
            groups,
            totals: report.totals.into(),
            top_products: report
                .top_products
                .iter()
                .map(RestSalesGroup::from)
                .collect(),
        })
        .into_response());
    }
    let mut csv = Csv::new();
    let figures = [
        "units_sold",
        "revenue",
        "unpriced_units_sold",
        "units_restocked",
        "units_wasted",
        "corrections",
    ];
    match grouping {
        ReportGrouping::Day => csv.row(["day"].iter().chain(&figures).map(|h| Cell::Text(h)))?,
        ReportGrouping::Product => csv.row(
            ["product_id", "product_name"]
                .iter()
                .chain(&figures)
                .map(|h| Cell::Text(h)),
        )?,
    }
    for group in &groups {
        let f = &group.figures;
        let numbers = [
            f.units_sold,
            f.revenue,
            f.unpriced_units_sold,
            f.units_restocked,
            f.units_wasted,
            f.corrections,
        ]
        .map(Cell::Int);
        let day = group.day.clone().unwrap_or_default();
        let name = group.product_name.clone().unwrap_or_default();
        match grouping {
            ReportGrouping::Day => csv.row([Cell::Text(&day)].into_iter().chain(numbers))?,
            ReportGrouping::Product => csv.row(
                [Cell::Int(group.product_id.unwrap_or(0)), Cell::Text(&name)]
                    .into_iter()
                    .chain(numbers),
            )?,
        }
    }
    Ok(csv_response(
        &format!("sales-{from}-to-{to}.csv"),
        Body::from(csv.take()?),
    ))
}

/// The caller's live products, as CSV.
#[utoipa::path(get, path = "/ecanteen/export/products", tag = "reports",
    responses(
        (status = 200, description = "CSV with a header row: id, name, description, category, price (rupiah), quantity, low_stock_threshold, created_at, updated_at (RFC 3339 in the canteen's time zone)", body = String, content_type = "text/csv"),
        (status = 401, description = "Not logged in", body = ErrorBody),
    ),
    security(("session" = []), ("bearer" = [])))]
pub async fn export_products(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
) -> Result<Response, RestError> {
    let actor = actor(&state, &headers, session).await?;
    let service = state.service.clone();
    let tz = service.time_zone();
    let header = [
        "id",
        "name",
        "description",
        "category",
        "price",
        "quantity",
        "low_stock_threshold",
        "created_at",
        "updated_at",
    ];
    // Pages by offset: products are listed in id order.
    let pages = stream::try_unfold(Some(0_i64), move |offset| {
        let service = service.clone();
        async move {
            let Some(offset) = offset else {
                return ServiceResult::Ok(None);
            };
            let filter = ProductFilter {
                owner_id: Some(actor.user_id),
                ..ProductFilter::default()
            };
            let page = service
                .products_by_id(&filter, Some(EXPORT_PAGE), offset)
                .await?;
            let next = page.has_next.then_some(offset + EXPORT_PAGE);
            Ok(Some((page.items, next)))
        }
    });
    let body = csv_stream(&header, pages, move |csv, p: &Product| {
        csv.row([
            Cell::Int(p.id),
            Cell::Text(&p.name),
            Cell::Text(&p.description),
            Cell::Text(&p.category),
            Cell::Int(p.price),
            Cell::Int(p.quantity),
            p.low_stock_threshold.map_or(Cell::Empty, Cell::Int),
            Cell::Text(&local_time(tz, p.created_at)),
            Cell::Text(&local_time(tz, p.updated_at)),
        ])
    })?;
    Ok(csv_response("products.csv", body))
}

/// The stock history query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

/// One row of a product's stock history.
#[derive(Serialize, ToSchema)]
pub struct RestMovement {
    pub id: i64,
    pub product_id: i64,
    /// The partner who made the change.
    pub actor_id: i64,
    pub delta: i64,
    pub quantity_after: i64,
    /// `SALE`, `RESTOCK`, `WASTE`, `CORRECTION`, `COUNT` or `OTHER`.
    pub reason: String,
    pub note: Option<String>,
    /// The product's price (rupiah) when the change was made; null before prices were
    /// recorded.
    pub unit_price: Option<i64>,
    /// RFC 3339, in the canteen's time zone.
    pub created_at: String,
}

impl RestMovement {
    fn of(m: &StockMovement, tz: Tz) -> Self {
        Self {
            id: m.id,
            product_id: m.product_id,
            actor_id: m.actor_id,
            delta: m.delta,
            quantity_after: m.quantity_after,
            reason: m.reason.as_str().to_owned(),
            note: m.note.clone(),
            unit_price: m.unit_price,
            created_at: local_time(tz, m.created_at),
        }
    }
}

/// A product's whole stock history, newest first: for its owner only, also after the
/// product was deleted.
#[utoipa::path(get, path = "/ecanteen/product/{id}/stock", tag = "reports",
    params(("id" = i64, Path, minimum = 1, description = "The product's id"), HistoryParams),
    responses(
        (status = 200, description = "Every ledger row of the product, newest first: a JSON array, or CSV with a header row (`format=csv`)",
            content(
                (Vec<RestMovement> = "application/json"),
                (String = "text/csv"),
            )),
        (status = 400, description = "A bad format", body = ErrorBody),
        (status = 401, description = "Not logged in", body = ErrorBody),
        (status = 403, description = "Another partner's product", body = ErrorBody),
        (status = 404, description = "No such product", body = ErrorBody),
    ),
    security(("session" = []), ("bearer" = [])))]
pub async fn stock_history(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
    params: Result<Query<HistoryParams>, QueryRejection>,
) -> Result<Response, RestError> {
    let actor = actor(&state, &headers, session).await?;
    let id = product_id(&id)?;
    let format = format(query(params)?.format.as_deref())?;
    let service = state.service.clone();
    let tz = service.time_zone();
    // The first page is read before answering, so that NOT_FOUND and FORBIDDEN are
    // the status, not a broken stream.
    let first = service
        .stock_movements(&actor, id, EXPORT_PAGE, None)
        .await?;
    let pages = movement_pages(service, actor, id, first);
    if format == Format::Json {
        let mut first_row = true;
        let rows = pages.map(move |page| {
            let mut out = Vec::new();
            for m in &page? {
                if !first_row {
                    out.push(b',');
                }
                first_row = false;
                serde_json::to_writer(&mut out, &RestMovement::of(m, tz)).map_err(internal)?;
            }
            ServiceResult::Ok(Bytes::from(out))
        });
        let body = stream::once(async { ServiceResult::Ok(Bytes::from_static(b"[")) })
            .chain(rows)
            .chain(stream::once(async { Ok(Bytes::from_static(b"]")) }));
        let mut response = Response::new(Body::from_stream(body));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return Ok(response);
    }
    let header = [
        "id",
        "created_at",
        "reason",
        "delta",
        "quantity_after",
        "unit_price",
        "note",
        "actor_id",
    ];
    let body = csv_stream(&header, pages, move |csv, m: &StockMovement| {
        csv.row([
            Cell::Int(m.id),
            Cell::Text(&local_time(tz, m.created_at)),
            Cell::Text(m.reason.as_str()),
            Cell::Int(m.delta),
            Cell::Int(m.quantity_after),
            m.unit_price.map_or(Cell::Empty, Cell::Int),
            Cell::Text(m.note.as_deref().unwrap_or("")),
            Cell::Int(m.actor_id),
        ])
    })?;
    Ok(csv_response(&format!("product-{id}-stock.csv"), body))
}

/// A product's ledger page by page, newest first, from a first page already read.
fn movement_pages(
    service: Service,
    actor: Actor,
    product_id: i64,
    first: crate::service::products::Page<StockMovement>,
) -> impl futures_util::Stream<Item = ServiceResult<Vec<StockMovement>>> + Send + 'static {
    let next = first
        .has_next
        .then(|| first.items.last().map(|m| m.id))
        .flatten();
    let rest = stream::try_unfold(next, move |before| {
        let service = service.clone();
        async move {
            let Some(before) = before else {
                return ServiceResult::Ok(None);
            };
            let page = service
                .stock_movements(&actor, product_id, EXPORT_PAGE, Some(before))
                .await?;
            let next = page
                .has_next
                .then(|| page.items.last().map(|m| m.id))
                .flatten();
            Ok(Some((page.items, next)))
        }
    });
    stream::once(async move { Ok(first.items) }).chain(rest)
}

/// A time as RFC 3339 in the canteen's time zone.
fn local_time(tz: Tz, ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .with_timezone(&tz)
        .to_rfc3339()
}

fn csv_response(filename: &str, body: Body) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    response
}

/// A header row, then each page's rows, as a streamed body.
fn csv_stream<T: Send + 'static>(
    header: &[&str],
    pages: impl futures_util::Stream<Item = ServiceResult<Vec<T>>> + Send + 'static,
    write: impl Fn(&mut Csv, &T) -> ServiceResult<()> + Send + Sync + 'static,
) -> Result<Body, RestError> {
    let mut csv = Csv::new();
    csv.row(header.iter().map(|h| Cell::Text(h)))?;
    let head = csv.take()?;
    let rows = pages.map(move |page| {
        let mut csv = Csv::new();
        for item in &page? {
            write(&mut csv, item)?;
        }
        csv.take().map(Bytes::from)
    });
    Ok(Body::from_stream(
        stream::once(async move { ServiceResult::Ok(Bytes::from(head)) }).chain(rows),
    ))
}

/// One CSV cell.
enum Cell<'a> {
    Text(&'a str),
    Int(i64),
    Empty,
}

/// A CSV writer into memory.
struct Csv(csv::Writer<Vec<u8>>);

impl Csv {
    fn new() -> Self {
        Self(
            csv::WriterBuilder::new()
                .terminator(csv::Terminator::CRLF)
                .from_writer(Vec::new()),
        )
    }

    fn row<'a>(&mut self, cells: impl IntoIterator<Item = Cell<'a>>) -> ServiceResult<()> {
        let record: Vec<String> = cells
            .into_iter()
            .map(|cell| match cell {
                Cell::Text(text) => neutralised(text),
                Cell::Int(n) => n.to_string(),
                Cell::Empty => String::new(),
            })
            .collect();
        self.0.write_record(&record).map_err(internal)
    }

    fn take(self) -> ServiceResult<Vec<u8>> {
        self.0.into_inner().map_err(|e| internal(e.into_error()))
    }
}

fn internal(err: impl Into<anyhow::Error>) -> ServiceError {
    ServiceError::Internal(err.into())
}

/// A text cell that a spreadsheet would take for a formula, led by `'` (see the module
/// docs).
fn neutralised(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    }
}
