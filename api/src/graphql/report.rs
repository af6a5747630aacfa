//! The sales report in GraphQL: `salesReport(from, to, groupBy)`.

use async_graphql::{Context, Enum, Object, SimpleObject, ID};
use chrono::NaiveDate;

use super::{actor, service, QUERY_COST};
use crate::service::report::{
    DaySales, ProductSales, ReportGrouping, ReportGroups, ReportRequest, SalesFigures, SalesReport,
};

/// How a sales report's groups are formed.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "ReportGrouping")]
pub enum ReportGroupingGql {
    /// One group per day of the range in the canteen's time zone, in order, days
    /// without any change included.
    Day,
    /// One group per product that changed in the range, best-selling first.
    Product,
}

impl From<ReportGroupingGql> for ReportGrouping {
    fn from(g: ReportGroupingGql) -> Self {
        match g {
            ReportGroupingGql::Day => Self::Day,
            ReportGroupingGql::Product => Self::Product,
        }
    }
}

/// What was sold and how stock moved, summed over a group or a whole report.
#[derive(SimpleObject, Clone, Copy)]
#[graphql(name = "SalesFigures")]
pub struct SalesFiguresGql {
    /// Units that left with reason SALE (a SALE that added stock, a return, counts
    /// against them).
    units_sold: i64,
    /// Rupiah: each sale's units times the unit price recorded with the sale.
    revenue: i64,
    /// Units sold before prices were recorded with sales: in `unitsSold`, not in
    /// `revenue`.
    unpriced_units_sold: i64,
    /// Units added with reason RESTOCK.
    units_restocked: i64,
    /// Units removed with reason WASTE.
    units_wasted: i64,
    /// The net change of every other reason (CORRECTION, COUNT, OTHER).
    corrections: i64,
}

impl From<SalesFigures> for SalesFiguresGql {
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

/// One group of a sales report: a day, or a product.
#[derive(SimpleObject)]
pub struct SalesGroup {
    /// The day (grouped by DAY), in the canteen's time zone.
    day: Option<NaiveDate>,
    /// The product (grouped by PRODUCT, and in `topProducts`).
    product_id: Option<ID>,
    /// The product's name as it is now.
    product_name: Option<String>,
    /// Whether the product was deleted since (its history still counts).
    product_deleted: Option<bool>,
    /// What was sold and how stock moved in this group.
    figures: SalesFiguresGql,
}

impl From<DaySales> for SalesGroup {
    fn from(d: DaySales) -> Self {
        Self {
            day: Some(d.day),
            product_id: None,
            product_name: None,
            product_deleted: None,
            figures: d.figures.into(),
        }
    }
}

impl From<ProductSales> for SalesGroup {
    fn from(p: ProductSales) -> Self {
        Self {
            day: None,
            product_id: Some(ID(p.product_id.to_string())),
            product_name: Some(p.name),
            product_deleted: Some(p.deleted_at.is_some()),
            figures: p.figures.into(),
        }
    }
}

/// A sales report as GraphQL shows it (described on the `Object` impl below).
pub struct SalesReportNode(SalesReport);

/// A partner's sales and stock movements over a range of days, read from the stock
/// ledger. Only the partner may see their own report.
#[Object(name = "SalesReport")]
impl SalesReportNode {
    /// The first day of the range.
    async fn from(&self) -> NaiveDate {
        self.0.from
    }

    /// The last day of the range, included.
    async fn to(&self) -> NaiveDate {
        self.0.to
    }

    /// The IANA time zone whose days these are (the replica's `--time-zone`).
    async fn time_zone(&self) -> &str {
        self.0.time_zone.name()
    }

    /// How `groups` are formed, as asked for.
    async fn group_by(&self) -> ReportGroupingGql {
        match self.0.groups.grouping() {
            ReportGrouping::Day => ReportGroupingGql::Day,
            ReportGrouping::Product => ReportGroupingGql::Product,
        }
    }

    /// The groups: every day of the range in order, or every product that changed,
    /// best-selling first.
    async fn groups(&self) -> Vec<SalesGroup> {
        match &self.0.groups {
            ReportGroups::Days(days) => days.iter().cloned().map(SalesGroup::from).collect(),
            ReportGroups::Products(products) => {
                products.iter().cloned().map(SalesGroup::from).collect()
            }
        }
    }

    /// The whole range.
    async fn totals(&self) -> SalesFiguresGql {
        self.0.totals.into()
    }

    /// The best-selling products (most units, then most revenue) that sold at all.
    async fn top_products(&self) -> Vec<SalesGroup> {
        self.0
            .top_products
            .iter()
            .cloned()
            .map(SalesGroup::from)
            .collect()
    }
}

/// The canteen's calendar: what "today" and a report's days mean.
#[derive(SimpleObject)]
pub struct Canteen {
    /// The IANA time zone the canteen's days follow (the replica's `--time-zone`,
    /// default Asia/Jakarta).
    time_zone: String,
    /// Today's date there.
    today: NaiveDate,
}

#[derive(Default)]
pub struct ReportQuery;

#[Object]
impl ReportQuery {
    /// The canteen's time zone and today's date in it (anyone may ask; an anonymous GET
    /// may be cached for 60 seconds).
    #[graphql(cache_control(max_age = 60))]
    async fn canteen(&self, ctx: &Context<'_>) -> async_graphql::Result<Canteen> {
        let tz = service(ctx)?.time_zone();
        Ok(Canteen {
            time_zone: tz.name().to_owned(),
            today: chrono::Utc::now().with_timezone(&tz).date_naive(),
        })
    }

    /// The logged-in partner's own sales report: their products only. Days are
    /// calendar days in the canteen's time zone. At most 366 days (else
    /// BAD_USER_INPUT on `to`); UNAUTHENTICATED without a partner.
    #[graphql(
        cache_control(private, no_cache),
        complexity = "4 * QUERY_COST + child_complexity"
    )]
    async fn sales_report(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The first day (YYYY-MM-DD).")] from: NaiveDate,
        #[graphql(desc = "The last day, included (YYYY-MM-DD); not before `from`.")] to: NaiveDate,
        #[graphql(desc = "DAY (when absent or null) or PRODUCT.")] group_by: Option<
            ReportGroupingGql,
        >,
        #[graphql(
            desc = "How many best-selling products `topProducts` lists, 0 to 50 (5 when absent or null)."
        )]
        top: Option<i32>,
    ) -> async_graphql::Result<SalesReportNode> {
        let actor = actor(ctx)?;
        let group_by = group_by.unwrap_or(ReportGroupingGql::Day);
        // A negative `top` is out of range as much as 51 is: the service says so.
        let top = usize::try_from(top.unwrap_or(5)).unwrap_or(usize::MAX);
        let report = service(ctx)?
            .sales_report(
                &actor,
                ReportRequest {
                    from,
                    to,
                    grouping: group_by.into(),
                    top,
                },
            )
            .await?;
        Ok(SalesReportNode(report))
    }
}
