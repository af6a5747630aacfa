//! The sales report and the CSV exports: numbers against a ledger written by the test,
//! days of the canteen's time zone (Asia/Jakarta, UTC+7), prices recorded with each
//! change, and CSV that a standard reader parses back.

use chrono::{DateTime, Days, Utc};
use ecanteen_api::db::Sql;
use serde_json::{json, Value};

use crate::helpers::*;

const REPORT: &str = "query($from: NaiveDate!, $to: NaiveDate!, $g: ReportGrouping, $top: Int) {
    salesReport(from: $from, to: $to, groupBy: $g, top: $top) {
        from to timeZone groupBy
        groups { day productId productName productDeleted figures { ...F } }
        totals { ...F }
        topProducts { productId productName figures { unitsSold revenue } } } }
    fragment F on SalesFigures {
        unitsSold revenue unpricedUnitsSold unitsRestocked unitsWasted corrections }";

const UPDATE_PRICE: &str =
    "mutation($id: ID!, $p: Int!) { updateProduct(id: $id, input: {price: $p}) { price } }";
const SET: &str = "mutation($i: SetStockInput!) { setStock(input: $i) { movement { unitPrice } } }";
const LEDGER: &str = "query($id: ID!) { stockMovements(productId: $id, first: 50) {
    edges { node { delta reason unitPrice } } } }";

fn ms(rfc3339: &str) -> i64 {
    DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_millis()
}

/// Appends a ledger row as the service would have, at a chosen time and price.
async fn ledger_row(
    app: &TestApp,
    product: &str,
    actor: i64,
    delta: i64,
    reason: &str,
    unit_price: Option<i64>,
    at: &str,
) {
    app.state
        .service
        .db()
        .execute(
            &Sql::new(
                "insert into stock_movements
                     (product_id, actor_id, delta, quantity_after, reason, note, created_at, unit_price)
                 values ($1, $2, $3, 100, $4, 'written by the test', $5, $6)",
            )
            .arg(product.parse::<i64>().unwrap())
            .arg(actor)
            .arg(delta)
            .arg(reason)
            .arg(ms(at))
            .arg(unit_price),
        )
        .await
        .unwrap();
}

async fn my_id(c: &mut Client) -> i64 {
    c.ok("{ me { id } }", json!({})).await["me"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn figures(
    sold: i64,
    revenue: i64,
    unpriced: i64,
    restocked: i64,
    wasted: i64,
    corrections: i64,
) -> Value {
    json!({
        "unitsSold": sold, "revenue": revenue, "unpricedUnitsSold": unpriced,
        "unitsRestocked": restocked, "unitsWasted": wasted, "corrections": corrections,
    })
}

/// A ledger across three Jakarta days, with a price change, an unpriced old sale, rows
/// a millisecond either side of Jakarta's midnight, rows just outside the range and a
/// neighbour's sale. Answers the two product ids.
async fn write_ledger(app: &TestApp, c: &mut Client) -> (String, String) {
    let nasi = c.create_product("Nasi goreng", 0).await;
    let teh = c.create_product("Es teh", 0).await;
    let me = my_id(c).await;
    let mut neighbour = app.partner("tetangga").await;
    let bakso = neighbour.create_product("Bakso", 0).await;
    let them = my_id(&mut neighbour).await;

    // 2026-11-27 23:59:59.999 in Jakarta: the 27th.
    ledger_row(
        app,
        &nasi,
        me,
        -3,
        "SALE",
        Some(10_000),
        "2026-11-27T16:59:59.999Z",
    )
    .await;
    // 2026-11-28 00:00 in Jakarta: the 28th, after a price change.
    ledger_row(
        app,
        &nasi,
        me,
        -2,
        "SALE",
        Some(12_000),
        "2026-11-27T17:00:00Z",
    )
    .await;
    // Sold before prices were recorded.
    ledger_row(app, &nasi, me, -1, "SALE", None, "2026-11-28T03:00:00Z").await;
    ledger_row(
        app,
        &teh,
        me,
        -5,
        "SALE",
        Some(3_000),
        "2026-11-28T10:00:00Z",
    )
    .await;
    // 2026-11-27 01:00 in Jakarta, though the 26th in UTC.
    ledger_row(
        app,
        &teh,
        me,
        20,
        "RESTOCK",
        Some(3_000),
        "2026-11-26T18:00:00Z",
    )
    .await;
    ledger_row(
        app,
        &teh,
        me,
        -2,
        "WASTE",
        Some(3_000),
        "2026-11-28T11:00:00Z",
    )
    .await;
    // 2026-11-29 00:30 in Jakarta.
    ledger_row(
        app,
        &teh,
        me,
        1,
        "CORRECTION",
        Some(3_000),
        "2026-11-28T17:30:00Z",
    )
    .await;
    ledger_row(
        app,
        &teh,
        me,
        -3,
        "COUNT",
        Some(3_000),
        "2026-11-28T18:00:00Z",
    )
    .await;
    // Outside: 2026-11-26 23:59 and 2026-11-30 00:00 in Jakarta.
    ledger_row(
        app,
        &nasi,
        me,
        -4,
        "SALE",
        Some(10_000),
        "2026-11-26T16:59:00Z",
    )
    .await;
    ledger_row(
        app,
        &nasi,
        me,
        -7,
        "SALE",
        Some(10_000),
        "2026-11-29T17:00:00Z",
    )
    .await;
    // Another partner's sale, on a day in range.
    ledger_row(
        app,
        &bakso,
        them,
        -9,
        "SALE",
        Some(5_000),
        "2026-11-28T05:00:00Z",
    )
    .await;
    (nasi, teh)
}

dual_tests! {
    async fn the_report_matches_a_ledger_written_by_the_test(app) {
        let mut c = app.partner("warung").await;
        let (nasi, teh) = write_ledger(&app, &mut c).await;

        let vars = json!({"from": "2026-11-27", "to": "2026-11-29"});
        let report = c.ok(REPORT, vars).await["salesReport"].clone();
        assert_eq!(report["timeZone"], "Asia/Jakarta");
        assert_eq!(report["groupBy"], "DAY");
        let days: Vec<&Value> = report["groups"].as_array().unwrap().iter().collect();
        assert_eq!(
            days.iter().map(|d| d["day"].as_str().unwrap()).collect::<Vec<_>>(),
            ["2026-11-27", "2026-11-28", "2026-11-29"]
        );
        assert_eq!(days[0]["figures"], figures(3, 30_000, 0, 20, 0, 0), "the 27th");
        assert_eq!(days[1]["figures"], figures(8, 24_000 + 15_000, 1, 0, 2, 0), "the 28th");
        assert_eq!(days[2]["figures"], figures(0, 0, 0, 0, 0, -2), "the 29th");
        assert_eq!(report["totals"], figures(11, 69_000, 1, 20, 2, -2));

        let by_product = c
            .ok(REPORT, json!({"from": "2026-11-27", "to": "2026-11-29", "g": "PRODUCT", "top": 1}))
            .await["salesReport"]
            .clone();
        let groups = by_product["groups"].as_array().unwrap();
        assert_eq!(groups.len(), 2, "the neighbour's product is not in it: {groups:?}");
        assert_eq!(groups[0]["productId"], nasi.as_str());
        assert_eq!(groups[0]["productName"], "Nasi goreng");
        assert_eq!(groups[0]["productDeleted"], false);
        assert_eq!(groups[0]["figures"], figures(6, 54_000, 1, 0, 0, 0));
        assert_eq!(groups[1]["productId"], teh.as_str());
        assert_eq!(groups[1]["figures"], figures(5, 15_000, 0, 20, 2, -2));
        assert_eq!(by_product["totals"], report["totals"]);
        assert_eq!(
            by_product["topProducts"],
            json!([{"productId": nasi, "productName": "Nasi goreng", "figures": {"unitsSold": 6, "revenue": 54_000}}])
        );

        // One day alone: its midnight is where the 27th's last millisecond ends.
        let one = c.ok(REPORT, json!({"from": "2026-11-28", "to": "2026-11-28"})).await;
        assert_eq!(one["salesReport"]["totals"], figures(8, 39_000, 1, 0, 2, 0));
        // A day with nothing.
        let quiet = c.ok(REPORT, json!({"from": "2026-10-01", "to": "2026-10-01"})).await;
        assert_eq!(quiet["salesReport"]["groups"][0]["figures"], figures(0, 0, 0, 0, 0, 0));
        assert_eq!(quiet["salesReport"]["topProducts"], json!([]));
    }

    async fn each_change_records_the_price_of_its_moment(app) {
        let mut c = app.partner("harga").await;
        let id = c.create_product("Soto", 10).await; // Rp 10.000, an initial RESTOCK of 10
        c.adjust(&id, -3).await; // the fast path
        assert_eq!(c.ok(UPDATE_PRICE, json!({"id": id, "p": 12_000})).await["updateProduct"]["price"], 12_000);
        let r = c.rest("POST", &format!("/ecanteen/product/{id}/stock"), Some(json!({"delta": -2})), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        // The general path.
        let set = c.ok(SET, json!({"i": {"productId": id, "quantity": 4}})).await;
        assert_eq!(set["setStock"]["movement"]["unitPrice"], 12_000);

        let ledger = c.ok(LEDGER, json!({"id": id})).await;
        let rows: Vec<(i64, i64)> = ledger["stockMovements"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["node"]["delta"].as_i64().unwrap(), e["node"]["unitPrice"].as_i64().unwrap()))
            .collect();
        assert_eq!(rows, [(-1, 12_000), (-2, 12_000), (-3, 10_000), (10, 10_000)], "newest first");

        // Today in Jakarta lies within yesterday..tomorrow whatever the clock says.
        let today = Utc::now().date_naive();
        let vars = json!({
            "from": today.checked_sub_days(Days::new(1)).unwrap().to_string(),
            "to": today.checked_add_days(Days::new(1)).unwrap().to_string(),
        });
        let totals = c.ok(REPORT, vars).await["salesReport"]["totals"].clone();
        assert_eq!(totals, figures(5, 3 * 10_000 + 2 * 12_000, 0, 10, 0, -1));
    }

    async fn a_report_is_the_partners_own_and_its_range_is_bounded(app) {
        let mut anonymous = app.client();
        let code = anonymous.err_code(REPORT, json!({"from": "2026-11-01", "to": "2026-11-02"})).await;
        assert_eq!(code, "UNAUTHENTICATED");

        let mut c = app.partner("batas").await;
        for (vars, field) in [
            (json!({"from": "2026-11-02", "to": "2026-11-01"}), "to"),
            (json!({"from": "2025-01-01", "to": "2026-01-02"}), "to"),
            (json!({"from": "2026-11-01", "to": "2026-11-01", "top": 51}), "top"),
            (json!({"from": "2026-11-01", "to": "2026-11-01", "top": -1}), "top"),
        ] {
            let r = c.gql(REPORT, vars.clone()).await;
            assert_eq!(first_code(&r).as_deref(), Some("BAD_USER_INPUT"), "{vars}: {r}");
            assert_eq!(r["errors"][0]["extensions"]["field"], field, "{vars}: {r}");
        }
        // 366 days is the most.
        let r = c.ok(REPORT, json!({"from": "2024-01-01", "to": "2024-12-31"})).await;
        assert_eq!(r["salesReport"]["groups"].as_array().unwrap().len(), 366);
        let r = c.gql(REPORT, json!({"from": "2026-13-01", "to": "2026-11-01"})).await;
        assert_eq!(first_code(&r).as_deref(), Some("BAD_USER_INPUT"), "a date that is no date: {r}");
        // The same in the document itself: async-graphql parses a custom scalar only when
        // the resolver reads it (found by the fuzzer: it was INTERNAL).
        let r = c.gql(r#"{ salesReport(from: "__dict__", to: "0713-04-22") { groupBy } }"#, json!({})).await;
        assert_eq!(first_code(&r).as_deref(), Some("BAD_USER_INPUT"), "{r}");
        let r = c.gql(r#"{ salesReport(from: "2026-11-01", to: "2026-11-01", groupBy: null, top: null) { groupBy } }"#, json!({})).await;
        assert_eq!(r["data"]["salesReport"]["groupBy"], "DAY", "null takes the default: {r}");

        let mut rest = c.rest("GET", "/ecanteen/report?from=2026-11-01&to=2026-11-01", None, &[]).await;
        assert_eq!(rest.status, 200, "{}", rest.text());
        for query in ["from=yesterday", "from=2026-11-02&to=2026-11-01", "format=xml", "group_by=week", "top=99"] {
            rest = c.rest("GET", &format!("/ecanteen/report?{query}"), None, &[]).await;
            assert_eq!(rest.status, 400, "{query}: {}", rest.text());
            assert_eq!(rest.json()["error"]["code"], "BAD_REQUEST", "{query}");
        }
        rest = app.client().rest("GET", "/ecanteen/report", None, &[]).await;
        assert_eq!(rest.status, 401);
    }

    async fn the_rest_report_and_its_csv_say_what_graphql_says(app) {
        let mut c = app.partner("laporan").await;
        let (nasi, _teh) = write_ledger(&app, &mut c).await;
        let gql = c.ok(REPORT, json!({"from": "2026-11-27", "to": "2026-11-29"})).await["salesReport"].clone();

        let r = c.rest("GET", "/ecanteen/report?from=2026-11-27&to=2026-11-29", None, &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let rest = r.json();
        assert_eq!(rest["time_zone"], "Asia/Jakarta");
        assert_eq!(rest["totals"]["revenue"], gql["totals"]["revenue"]);
        assert_eq!(rest["totals"]["units_sold"], gql["totals"]["unitsSold"]);
        assert_eq!(rest["groups"][1]["day"], "2026-11-28");
        assert_eq!(rest["groups"][1]["unpriced_units_sold"], 1);
        assert_eq!(rest["top_products"][0]["product_id"], nasi.parse::<i64>().unwrap());

        let r = c.rest("GET", "/ecanteen/report?from=2026-11-27&to=2026-11-29&format=csv", None, &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["content-type"], "text/csv; charset=utf-8");
        assert!(r.headers["content-disposition"].to_str().unwrap().contains("sales-2026-11-27-to-2026-11-29.csv"));
        let rows = parse_csv(&r.body);
        assert_eq!(rows[0], ["day", "units_sold", "revenue", "unpriced_units_sold", "units_restocked", "units_wasted", "corrections"]);
        assert_eq!(rows.len(), 4);
        for (row, group) in rows[1..].iter().zip(gql["groups"].as_array().unwrap()) {
            let f = &group["figures"];
            assert_eq!(row[0], group["day"].as_str().unwrap());
            let numbers: Vec<i64> = row[1..].iter().map(|n| n.parse().unwrap()).collect();
            assert_eq!(numbers, ["unitsSold", "revenue", "unpricedUnitsSold", "unitsRestocked", "unitsWasted", "corrections"]
                .map(|k| f[k].as_i64().unwrap()));
        }

        let r = c.rest("GET", "/ecanteen/report?from=2026-11-27&to=2026-11-29&format=csv&group_by=product", None, &[]).await;
        let rows = parse_csv(&r.body);
        assert_eq!(rows[0][..2], ["product_id", "product_name"]);
        assert_eq!(rows[1][..4], [nasi.as_str(), "Nasi goreng", "6", "54000"]);
    }

    async fn exports_parse_back_with_a_standard_csv_reader(app) {
        let mut c = app.partner("ekspor").await;
        let awkward = "Kopi \"tubruk\", panas";
        let formula = "=HYPERLINK(\"http://x\")\nbaris dua";
        let input = json!({"name": awkward, "description": formula, "price": 9999, "quantity": 3, "category": "minuman"});
        let created = c.ok(documents::CREATE_PRODUCT, json!({"i": input})).await;
        let id = created["createProduct"]["id"].as_str().unwrap().to_owned();
        let plain = c.create_product("Teh", 1).await;
        for _ in 0..3 {
            c.adjust(&id, -1).await;
        }

        let r = c.rest("GET", "/ecanteen/export/products", None, &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.headers["cache-control"], "private, no-store");
        let rows = parse_csv(&r.body);
        assert_eq!(rows[0], ["id", "name", "description", "category", "price", "quantity", "low_stock_threshold", "created_at", "updated_at"]);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1][0], id);
        assert_eq!(rows[1][1], awkward, "quotes and commas survive");
        assert_eq!(rows[1][2], format!("'{formula}"), "a line break survives; a formula is not run by a spreadsheet");
        assert_eq!(rows[1][4..6], ["9999", "0"]);
        assert!(rows[1][7].ends_with("+07:00"), "times in the canteen's zone: {}", rows[1][7]);
        assert_eq!(rows[2][0], plain);

        let r = c.rest("GET", &format!("/ecanteen/product/{id}/stock?format=csv"), None, &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let rows = parse_csv(&r.body);
        assert_eq!(rows[0], ["id", "created_at", "reason", "delta", "quantity_after", "unit_price", "note", "actor_id"]);
        let deltas: Vec<(&str, &str, &str)> = rows[1..].iter().map(|r| (r[2].as_str(), r[3].as_str(), r[5].as_str())).collect();
        assert_eq!(deltas, [("SALE", "-1", "9999"), ("SALE", "-1", "9999"), ("SALE", "-1", "9999"), ("RESTOCK", "3", "9999")]);

        let r = c.rest("GET", &format!("/ecanteen/product/{id}/stock"), None, &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let json = r.json();
        assert_eq!(json.as_array().unwrap().len(), 4, "{json}");
        assert_eq!(json[3]["reason"], "RESTOCK");
        assert_eq!(json[0]["unit_price"], 9999);

        // Another partner's product, a missing one, a bad format.
        let mut other = app.partner("lain").await;
        assert_eq!(other.rest("GET", &format!("/ecanteen/product/{id}/stock"), None, &[]).await.status, 403);
        assert_eq!(c.rest("GET", "/ecanteen/product/999999/stock", None, &[]).await.status, 404);
        assert_eq!(c.rest("GET", &format!("/ecanteen/product/{id}/stock?format=xls"), None, &[]).await.status, 400);
        assert_eq!(app.client().rest("GET", "/ecanteen/export/products", None, &[]).await.status, 401);
    }

    async fn a_long_history_is_exported_whole_across_pages(app) {
        let mut c = app.partner("panjang").await;
        let id = c.create_product("Gorengan", 0).await;
        let me = my_id(&mut c).await;
        for i in 0..1_203 {
            ledger_row(&app, &id, me, -1, "SALE", Some(1_000), &format!("2026-11-2{}T0{}:00:00Z", 1 + i % 7, i % 10)).await;
        }
        let r = c.rest("GET", &format!("/ecanteen/product/{id}/stock?format=csv"), None, &[]).await;
        let rows = parse_csv(&r.body);
        assert_eq!(rows.len(), 1 + 1_203);
        let ids: std::collections::BTreeSet<&str> = rows[1..].iter().map(|r| r[0].as_str()).collect();
        assert_eq!(ids.len(), 1_203, "no row twice, none lost at a page's edge");
        let r = c.rest("GET", &format!("/ecanteen/product/{id}/stock"), None, &[]).await;
        assert_eq!(r.json().as_array().unwrap().len(), 1_203);
    }
}

/// Parses CSV with the `csv` crate's reader, as any standard reader would: a header row
/// and records of equal length.
fn parse_csv(body: &[u8]) -> Vec<Vec<String>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(body);
    reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect()
}

/// A zone with clock changes: the days around Europe/Berlin's change to summer time
/// (2026-03-29 01:00 UTC) are 24, 23 and 24 hours long, and each row lands on its own
/// local day.
async fn days_follow_a_zone_with_clock_changes(engine: Engine) {
    let app = TestApp::with_config(engine, |c| c.time_zone = chrono_tz::Europe::Berlin).await;
    let mut c = app.partner("berlin").await;
    let id = c.create_product("Brezel", 0).await;
    let me = my_id(&mut c).await;
    for at in [
        "2026-03-28T22:59:59.999Z", // 23:59:59.999 on the 28th (+01:00)
        "2026-03-28T23:00:00Z",     // 00:00 on the 29th
        "2026-03-29T21:59:59.999Z", // 23:59:59.999 on the 29th (+02:00)
        "2026-03-29T22:00:00Z",     // 00:00 on the 30th
    ] {
        ledger_row(&app, &id, me, -1, "SALE", Some(100), at).await;
    }
    let report = c
        .ok(REPORT, json!({"from": "2026-03-28", "to": "2026-03-30"}))
        .await;
    let sold: Vec<(String, i64)> = report["salesReport"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["day"].as_str().unwrap().to_owned(),
                g["figures"]["unitsSold"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        sold,
        [
            ("2026-03-28".to_owned(), 1),
            ("2026-03-29".to_owned(), 2),
            ("2026-03-30".to_owned(), 1)
        ]
    );
    assert_eq!(report["salesReport"]["timeZone"], "Europe/Berlin");
}

mod days_follow_a_zone_with_clock_changes {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        days_follow_a_zone_with_clock_changes(Engine::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        days_follow_a_zone_with_clock_changes(Engine::Postgres).await;
    }
}
