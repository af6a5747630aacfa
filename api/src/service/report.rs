//! The sales report: what a partner sold, restocked, wasted and corrected over a range
//! of days, per day or per product, summed in SQL over the stock ledger.
//!
//! # Days
//!
//! A day is a calendar day in the canteen's time zone (`--time-zone`, default
//! `Asia/Jakarta`), not in UTC: a sale at 06:30 in Jakarta is 23:30 UTC the day before.
//! Neither engine is asked to know time zones (SQLite has none). Instead the range is cut
//! where the zone's UTC offset changes ([`offset_segments`]; `Asia/Jakarta` has one
//! offset, +07:00, so one segment), and each row's local day number is
//! `(created_at + offset) / 86 400 000` with the offset of its segment: an integer
//! expression that both engines evaluate alike, and that an index range scan feeds.
//!
//! # Figures
//!
//! - units sold: the units that left with `SALE` (a `SALE` that adds stock, a return,
//!   counts against them);
//! - revenue: each sale's units times the unit price recorded with it
//!   (`stock_movements.unit_price`), so a later price change does not rewrite the past;
//!   a sale recorded before prices were kept has no price, and its units are counted as
//!   unpriced instead;
//! - units restocked (`RESTOCK`), units wasted (`WASTE`);
//! - corrections: the net change of every other reason (`CORRECTION`, `COUNT`, `OTHER`).

use chrono::{DateTime, Days, NaiveDate, NaiveTime, Offset as _, TimeZone as _, Utc};
use chrono_tz::Tz;

use std::collections::BTreeMap;

use crate::db::Sql;
use crate::domain::StockReason;
use crate::error::{ServiceError, ServiceResult};
use crate::service::{Actor, Service};

/// The most days one report covers.
pub const MAX_REPORT_DAYS: u64 = 366;
/// The most best-selling products a report lists.
pub const MAX_TOP_PRODUCTS: usize = 50;

const DAY_MS: i64 = 86_400_000;

/// How a report's rows are grouped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportGrouping {
    /// One row per day of the range, days without any change included.
    Day,
    /// One row per product that changed in the range, best-selling first.
    Product,
}

/// The figures of one group, or of the whole range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SalesFigures {
    pub units_sold: i64,
    /// Rupiah.
    pub revenue: i64,
    /// Units sold whose price was not recorded (before prices were kept).
    pub unpriced_units_sold: i64,
    pub units_restocked: i64,
    pub units_wasted: i64,
    pub corrections: i64,
}

/// One day's figures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaySales {
    pub day: NaiveDate,
    pub figures: SalesFigures,
}

/// One product's figures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProductSales {
    pub product_id: i64,
    pub name: String,
    /// When the product was deleted, if it was: its history still counts.
    pub deleted_at: Option<i64>,
    pub figures: SalesFigures,
}

/// A report's groups, as it was asked for them.
#[derive(Clone, Debug)]
pub enum ReportGroups {
    /// Every day of the range, in order.
    Days(Vec<DaySales>),
    /// Every product that changed, best-selling first.
    Products(Vec<ProductSales>),
}

impl ReportGroups {
    pub fn grouping(&self) -> ReportGrouping {
        match self {
            Self::Days(_) => ReportGrouping::Day,
            Self::Products(_) => ReportGrouping::Product,
        }
    }
}

/// A partner's sales over a range of days.
#[derive(Clone, Debug)]
pub struct SalesReport {
    /// The first day, in [`SalesReport::time_zone`].
    pub from: NaiveDate,
    /// The last day, included.
    pub to: NaiveDate,
    pub time_zone: Tz,
    pub groups: ReportGroups,
    pub totals: SalesFigures,
    /// The best-selling products (most units sold, then most revenue), only those that
    /// sold.
    pub top_products: Vec<ProductSales>,
}

/// What to report.
#[derive(Clone, Copy, Debug)]
pub struct ReportRequest {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub grouping: ReportGrouping,
    /// How many best-selling products to list (at most [`MAX_TOP_PRODUCTS`]).
    pub top: usize,
}

/// The ledger rows of the owner's products (`$1`) in `[$2, $3)`.
const RANGE: &str = "from products p
    join stock_movements m on m.product_id = p.id
    where p.owner_id = $1 and m.created_at >= $2 and m.created_at < $3";

/// The sums the figures are made of, per reason: SQL sums three columns per group
/// instead of evaluating six conditions per row, and the groups are folded here.
const SUMS: &str = "
    cast(sum(m.delta) as bigint) as delta,
    cast(sum(m.delta * coalesce(m.unit_price, 0)) as bigint) as value,
    cast(sum(case when m.unit_price is null then m.delta else 0 end) as bigint) as unpriced";

/// The same sums, over groups of [`SUMS`].
const OUTER: &str = "cast(sum(delta) as bigint) as delta, cast(sum(value) as bigint) as value,
    cast(sum(unpriced) as bigint) as unpriced";

/// One group of the scan: the rows of one reason, of a product or of a day.
#[derive(sqlx::FromRow)]
struct Sums {
    /// The local day number (by day), or none (by product).
    day_number: Option<i64>,
    /// The product (by product), or none (by day).
    product_id: Option<i64>,
    #[sqlx(try_from = "String")]
    reason: StockReason,
    delta: i64,
    /// Σ delta × unit price (rupiah; unpriced rows count 0).
    value: i64,
    /// Σ delta of the rows without a price.
    unpriced: i64,
}

impl SalesFigures {
    /// Adds one group of rows, by what its reason means.
    fn count(&mut self, sums: &Sums) {
        match sums.reason {
            StockReason::Sale => {
                self.units_sold -= sums.delta;
                self.revenue -= sums.value;
                self.unpriced_units_sold -= sums.unpriced;
            }
            StockReason::Restock => self.units_restocked += sums.delta,
            StockReason::Waste => self.units_wasted -= sums.delta,
            StockReason::Correction | StockReason::Count | StockReason::Other => {
                self.corrections += sums.delta;
            }
        }
    }
}

/// A product's name and whether it was deleted.
#[derive(sqlx::FromRow)]
struct Named {
    id: i64,
    name: String,
    deleted_at: Option<i64>,
}

impl Service {
    /// The actor's own sales report: only a partner's own products are counted.
    ///
    /// One scan of the range, grouped by product and reason (and by local day, for
    /// [`ReportGrouping::Day`]), gives both the days and the products.
    pub async fn sales_report(
        &self,
        actor: &Actor,
        request: ReportRequest,
    ) -> ServiceResult<SalesReport> {
        let ReportRequest {
            from,
            to,
            grouping,
            top,
        } = request;
        if to < from {
            return Err(ServiceError::invalid("to", "is before from"));
        }
        let days = (to - from).num_days() + 1;
        if days > MAX_REPORT_DAYS as i64 {
            return Err(ServiceError::invalid(
                "to",
                format!("a report covers at most {MAX_REPORT_DAYS} days; this range has {days}"),
            ));
        }
        if top > MAX_TOP_PRODUCTS {
            return Err(ServiceError::invalid(
                "top",
                format!("must be between 0 and {MAX_TOP_PRODUCTS}"),
            ));
        }
        let tz = self.time_zone;
        let start = day_start(tz, from)?;
        let end = day_start(tz, next_day(to)?)?;

        let mut sql = Sql::new(String::new())
            .arg(actor.user_id)
            .arg(start)
            .arg(end);
        sql.text = match grouping {
            ReportGrouping::Product => format!(
                "select cast(null as bigint) as day_number, m.product_id, m.reason, {SUMS}
                 {RANGE} group by m.product_id, m.reason"
            ),
            // One scan, grouped by day, product and reason, then summed per day and
            // per product: SQL returns a row per day and reason and per product and
            // reason (about a hundred for a month), not one per day and product.
            ReportGrouping::Day => {
                let bucket = day_bucket(&mut sql, &offset_segments(tz, start, end));
                format!(
                    "with g as materialized (
                         select {bucket} as day_number, m.product_id, m.reason, {SUMS}
                         {RANGE} group by 1, m.product_id, m.reason
                     )
                     select day_number, cast(null as bigint) as product_id, reason, {OUTER}
                     from g group by day_number, reason
                     union all
                     select cast(null as bigint), product_id, reason, {OUTER}
                     from g group by product_id, reason"
                )
            }
        };
        let groups: Vec<Sums> = self.db.fetch_all(&sql).await?;

        let mut per_product: BTreeMap<i64, SalesFigures> = BTreeMap::new();
        let mut per_day: BTreeMap<i64, SalesFigures> = BTreeMap::new();
        let mut totals = SalesFigures::default();
        for group in &groups {
            if let Some(day) = group.day_number {
                per_day.entry(day).or_default().count(group);
            }
            if let Some(product) = group.product_id {
                per_product.entry(product).or_default().count(group);
                totals.count(group);
            }
        }

        let names: Vec<Named> = self
            .db
            .fetch_all(
                &Sql::new("select id, name, deleted_at from products where owner_id = $1")
                    .arg(actor.user_id),
            )
            .await?;
        let mut products: Vec<ProductSales> = names
            .into_iter()
            .filter_map(|n| {
                per_product.get(&n.id).map(|figures| ProductSales {
                    product_id: n.id,
                    name: n.name,
                    deleted_at: n.deleted_at,
                    figures: *figures,
                })
            })
            .collect();
        // Best-selling first: most units, then most revenue, then the oldest product.
        products.sort_by(|a, b| {
            (b.figures.units_sold, b.figures.revenue, a.product_id).cmp(&(
                a.figures.units_sold,
                a.figures.revenue,
                b.product_id,
            ))
        });
        let top_products = products
            .iter()
            .filter(|p| p.figures.units_sold > 0)
            .take(top)
            .cloned()
            .collect();

        let groups = match grouping {
            ReportGrouping::Product => ReportGroups::Products(products),
            ReportGrouping::Day => {
                let mut days = Vec::new();
                let mut day = from;
                while day <= to {
                    let figures = per_day.get(&day_number(day)).copied().unwrap_or_default();
                    days.push(DaySales { day, figures });
                    day = next_day(day)?;
                }
                ReportGroups::Days(days)
            }
        };
        Ok(SalesReport {
            from,
            to,
            time_zone: tz,
            groups,
            totals,
            top_products,
        })
    }
}

/// The local day number of a row, as SQL: with one offset `(created_at + offset) / day`;
/// with more, `case when created_at < <next segment's start> then <this segment's day>
/// … else <the last's> end`. Binds the offsets and starts to `sql`.
fn day_bucket(sql: &mut Sql, segments: &[Segment]) -> String {
    let mut whens = String::new();
    let mut last = String::new();
    for (i, segment) in segments.iter().enumerate() {
        let day = format!("(m.created_at + ${}) / {DAY_MS}", sql.args.len() + 1);
        sql.args.push(segment.offset_ms.into());
        match segments.get(i + 1) {
            Some(next) => {
                whens.push_str(&format!(
                    " when m.created_at < ${} then {day}",
                    sql.args.len() + 1
                ));
                sql.args.push(next.start.into());
            }
            None => last = day,
        }
    }
    if whens.is_empty() {
        last
    } else {
        format!("case{whens} else {last} end")
    }
}

/// Days since 1970-01-01 of a calendar date.
fn day_number(day: NaiveDate) -> i64 {
    (day - NaiveDate::default()).num_days()
}

fn next_day(day: NaiveDate) -> ServiceResult<NaiveDate> {
    day.checked_add_days(Days::new(1))
        .ok_or_else(|| ServiceError::invalid("to", "is past the last date there is"))
}

/// The instant (ms since the epoch) a calendar day begins in `tz`: its midnight, or, on a
/// day whose midnight a clock change skips, the first moment after it.
fn day_start(tz: Tz, day: NaiveDate) -> ServiceResult<i64> {
    let midnight = day.and_time(NaiveTime::MIN);
    (0..=24 * 60)
        .find_map(|minutes| {
            tz.from_local_datetime(&(midnight + chrono::Duration::minutes(minutes)))
                .earliest()
        })
        .map(|start| start.timestamp_millis())
        .ok_or_else(|| ServiceError::invalid("from", "is not a day of this calendar"))
}

/// A stretch of time with one UTC offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Segment {
    /// Its first instant, ms since the epoch.
    start: i64,
    /// Local time minus UTC, in ms.
    offset_ms: i64,
}

fn offset_ms(tz: Tz, at: i64) -> i64 {
    let utc = DateTime::<Utc>::from_timestamp_millis(at).unwrap_or_default();
    i64::from(
        tz.offset_from_utc_datetime(&utc.naive_utc())
            .fix()
            .local_minus_utc(),
    ) * 1000
}

/// `[start, end)` cut where `tz`'s offset changes. Offsets are read at each hour, and a
/// change is found to the millisecond by bisection (zones change offset at most a few
/// times a year, never twice within an hour).
fn offset_segments(tz: Tz, start: i64, end: i64) -> Vec<Segment> {
    const HOUR_MS: i64 = 3_600_000;
    let mut segments = vec![Segment {
        start,
        offset_ms: offset_ms(tz, start),
    }];
    let mut at = start;
    while at < end {
        let next = (at + HOUR_MS).min(end - 1);
        let current = segments.last().map_or(0, |s| s.offset_ms);
        let offset = offset_ms(tz, next);
        if offset != current {
            // The first millisecond in (at, next] with the new offset.
            let (mut before, mut after) = (at, next);
            while after - before > 1 {
                let middle = before + (after - before) / 2;
                if offset_ms(tz, middle) == current {
                    before = middle;
                } else {
                    after = middle;
                }
            }
            segments.push(Segment {
                start: after,
                offset_ms: offset,
            });
        }
        if next <= at {
            break;
        }
        at = next;
    }
    segments
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jakarta_has_one_offset_and_its_days_begin_at_17_utc() {
        let tz: Tz = "Asia/Jakarta".parse().unwrap_or(Tz::UTC);
        let day = NaiveDate::from_ymd_opt(2026, 11, 28).unwrap_or_default();
        let start = day_start(tz, day).unwrap_or(0);
        assert_eq!(
            DateTime::<Utc>::from_timestamp_millis(start).map(|t| t.to_rfc3339()),
            Some("2026-11-27T17:00:00+00:00".to_owned())
        );
        let end = start + 31 * DAY_MS;
        assert_eq!(
            offset_segments(tz, start, end),
            vec![Segment {
                start,
                offset_ms: 7 * 3_600_000
            }]
        );
    }

    #[test]
    fn a_clock_change_cuts_the_range_at_its_instant() {
        // Europe/Berlin went from +01:00 to +02:00 at 2026-03-29 01:00 UTC.
        let tz: Tz = "Europe/Berlin".parse().unwrap_or(Tz::UTC);
        let from = NaiveDate::from_ymd_opt(2026, 3, 28).unwrap_or_default();
        let start = day_start(tz, from).unwrap_or(0);
        let end = start + 3 * DAY_MS;
        let change = DateTime::parse_from_rfc3339("2026-03-29T01:00:00Z")
            .map(|t| t.timestamp_millis())
            .unwrap_or(0);
        assert_eq!(
            offset_segments(tz, start, end),
            vec![
                Segment {
                    start,
                    offset_ms: 3_600_000
                },
                Segment {
                    start: change,
                    offset_ms: 7_200_000
                },
            ]
        );
    }

    #[test]
    fn a_day_whose_midnight_is_skipped_begins_at_its_first_minute() {
        // America/Santiago skipped 2026-09-06 00:00 to 01:00.
        let tz: Tz = "America/Santiago".parse().unwrap_or(Tz::UTC);
        let day = NaiveDate::from_ymd_opt(2026, 9, 6).unwrap_or_default();
        let start = day_start(tz, day).unwrap_or(0);
        let local = DateTime::<Utc>::from_timestamp_millis(start)
            .map(|t| t.with_timezone(&tz).naive_local().to_string());
        assert_eq!(local, Some("2026-09-06 01:00:00".to_owned()));
    }
}
