//! Products: create, read, update, delete, and the catalogue listing.

use serde_json::{json, Value};

use crate::helpers::*;

const CREATE: &str = "mutation($i: CreateProductInput!) { createProduct(input: $i) {
    id name description price quantity category lowStockThreshold isLowStock isOutOfStock
    version imageUrl owner { username } createdAt updatedAt } }";
const UPDATE: &str = "mutation($id: ID!, $i: UpdateProductInput!, $v: Int) {
    updateProduct(id: $id, input: $i, expectedVersion: $v) { id name price quantity category lowStockThreshold version } }";
const DELETE: &str = "mutation($id: ID!) { deleteProduct(id: $id) { id deletedAt } }";
const GET: &str = "query($id: ID!) { product(id: $id) { id name price quantity version } }";

fn nasi() -> Value {
    json!({ "name": "  Nasi Goreng ", "description": "pedas", "price": 15000, "quantity": 12,
            "category": "Makanan", "lowStockThreshold": 3 })
}

dual_tests! {
    async fn a_product_is_created_read_updated_and_deleted(app) {
        let mut c = app.partner("cook").await;
        let p = c.ok(CREATE, json!({"i": nasi()})).await["createProduct"].clone();
        assert_eq!(p["name"], "Nasi Goreng");
        assert_eq!(p["category"], "makanan");
        assert_eq!(p["price"], 15000);
        assert_eq!(p["quantity"], 12);
        assert_eq!(p["version"], 1);
        assert_eq!(p["isLowStock"], false);
        assert_eq!(p["imageUrl"], json!(null));
        assert_eq!(p["owner"]["username"], "cook");
        let id = p["id"].as_str().unwrap().to_owned();

        // Catalogue reads are public.
        let mut anonymous = app.client();
        assert_eq!(anonymous.ok(GET, json!({"id": id})).await["product"]["name"], "Nasi Goreng");

        let u = c.ok(UPDATE, json!({"id": id, "i": {"name": "Nasi Goreng Spesial", "price": 18000, "lowStockThreshold": null}, "v": 1})).await;
        assert_eq!(u["updateProduct"]["name"], "Nasi Goreng Spesial");
        assert_eq!(u["updateProduct"]["price"], 18000);
        assert_eq!(u["updateProduct"]["lowStockThreshold"], json!(null));
        assert_eq!(u["updateProduct"]["quantity"], 12, "untouched fields keep their values");
        assert_eq!(u["updateProduct"]["version"], 2);

        let d = c.ok(DELETE, json!({"id": id})).await;
        assert!(d["deleteProduct"]["deletedAt"].is_string());
        assert_eq!(anonymous.ok(GET, json!({"id": id})).await["product"], json!(null));
        assert_eq!(c.err_code(DELETE, json!({"id": id})).await, "NOT_FOUND");
        assert_eq!(c.err_code(UPDATE, json!({"id": id, "i": {"price": 1}})).await, "NOT_FOUND");
    }

    async fn every_product_field_is_validated_and_named(app) {
        let mut c = app.partner("strict").await;
        let cases: Vec<(Value, &str)> = vec![
            (json!({"name": ""}), "input.name"),
            (json!({"name": "n".repeat(101)}), "input.name"),
            (json!({"description": "d".repeat(1001)}), "input.description"),
            (json!({"price": -1}), "input.price"),
            (json!({"price": 1_000_000_001_i64}), "input.price"),
            (json!({"quantity": -1}), "input.quantity"),
            (json!({"category": ""}), "input.category"),
            (json!({"category": "c".repeat(41)}), "input.category"),
            (json!({"lowStockThreshold": -5}), "input.lowStockThreshold"),
        ];
        for (patch, field) in cases {
            let mut input = nasi();
            for (k, v) in patch.as_object().unwrap() {
                input[k] = v.clone();
            }
            let r = c.gql(CREATE, json!({"i": input})).await;
            assert_eq!(first_code(&r).as_deref(), Some("BAD_USER_INPUT"), "{field}: {r:#}");
            assert_eq!(r["errors"][0]["extensions"]["field"], field);
        }
        // A wrong type is refused by the schema, also as BAD_USER_INPUT.
        let r = c.gql(CREATE, json!({"i": {"name": "x", "price": "abc", "category": "c"}})).await;
        assert_eq!(first_code(&r).as_deref(), Some("BAD_USER_INPUT"));
        assert!(r["errors"][0]["message"].as_str().unwrap().contains("price"));
        let total = c.ok("{ products { totalCount } }", json!({})).await;
        assert_eq!(total["products"]["totalCount"], 0, "nothing was written");
    }

    async fn a_stale_expected_version_is_a_conflict_that_writes_nothing(app) {
        let mut c = app.partner("editor").await;
        let id = c.create_product("Soto", 5).await;
        c.ok(UPDATE, json!({"id": id, "i": {"price": 20000}, "v": 1})).await;
        let r = c.gql(UPDATE, json!({"id": id, "i": {"price": 1}, "v": 1})).await;
        assert_eq!(first_code(&r).as_deref(), Some("CONFLICT"));
        assert_eq!(r["errors"][0]["extensions"]["current"], 2);
        let now = c.ok(GET, json!({"id": id})).await;
        assert_eq!(now["product"]["price"], 20000);
        assert_eq!(now["product"]["version"], 2);
        // A stock change also moves the version, so an edit based on old stock conflicts.
        c.adjust(&id, -1).await;
        assert_eq!(c.err_code(UPDATE, json!({"id": id, "i": {"quantity": 5}, "v": 2})).await, "CONFLICT");
        assert_eq!(c.quantity(&id).await, 4);
    }

    async fn editing_the_quantity_is_recorded_in_the_ledger(app) {
        let mut c = app.partner("counter").await;
        let id = c.create_product("Tempe", 5).await;
        c.ok(UPDATE, json!({"id": id, "i": {"quantity": 9}})).await;
        let ledger = c.ok("query($id: ID!) { stockMovements(productId: $id) { edges { node { delta quantityAfter reason } } } }", json!({"id": id})).await;
        let edges = ledger["stockMovements"]["edges"].as_array().unwrap();
        assert_eq!(edges.len(), 2);
        assert_eq!(edges[0]["node"], json!({"delta": 4, "quantityAfter": 9, "reason": "CORRECTION"}));
        assert_eq!(edges[1]["node"], json!({"delta": 5, "quantityAfter": 5, "reason": "RESTOCK"}));
    }

    async fn a_deleted_products_stock_history_stays_readable(app) {
        let mut c = app.partner("historian").await;
        let id = c.create_product("Kerupuk", 4).await;
        c.adjust(&id, -1).await;
        c.ok(DELETE, json!({"id": id})).await;
        let ledger = c.ok("query($id: ID!) { stockMovements(productId: $id) { edges { node { delta } } } }", json!({"id": id})).await;
        assert_eq!(ledger["stockMovements"]["edges"].as_array().unwrap().len(), 2);
    }

    async fn the_catalogue_pages_filters_and_orders(app) {
        let mut a = app.partner("stall_a").await;
        let mut b = app.partner("stall_b").await;
        for (name, price, qty) in [("Apel", 5000, 0), ("bakso", 12000, 7), ("Cendol", 8000, 2)] {
            let id = a.create_product(name, qty).await;
            a.ok(UPDATE, json!({"id": id, "i": {"price": price, "lowStockThreshold": 2}})).await;
        }
        b.ok(CREATE, json!({"i": {"name": "Es Jeruk", "price": 6000, "quantity": 10, "category": "minuman"}})).await;

        let q = "query($f: Int, $a: String, $filter: ProductFilterInput, $o: ProductOrderBy) {
            products(first: $f, after: $a, filter: $filter, orderBy: $o) {
              totalCount pageInfo { hasNextPage hasPreviousPage endCursor }
              edges { node { name price owner { username } } } } }";
        let names = |v: &Value| -> Vec<String> {
            v["products"]["edges"].as_array().unwrap().iter()
                .map(|e| e["node"]["name"].as_str().unwrap().to_owned()).collect()
        };

        // Default order: by name, case-insensitively; paged with cursors.
        let p1 = a.ok(q, json!({"f": 2})).await;
        assert_eq!(names(&p1), ["Apel", "bakso"]);
        assert_eq!(p1["products"]["totalCount"], 4);
        assert_eq!(p1["products"]["pageInfo"]["hasNextPage"], true);
        let cursor = p1["products"]["pageInfo"]["endCursor"].clone();
        let p2 = a.ok(q, json!({"f": 2, "a": cursor})).await;
        assert_eq!(names(&p2), ["Cendol", "Es Jeruk"]);
        assert_eq!(p2["products"]["pageInfo"]["hasNextPage"], false);
        assert_eq!(p2["products"]["pageInfo"]["hasPreviousPage"], true);

        let by_price = a.ok(q, json!({"o": {"field": "PRICE", "direction": "DESC"}})).await;
        assert_eq!(names(&by_price), ["bakso", "Cendol", "Es Jeruk", "Apel"]);
        let owners: Vec<&str> = by_price["products"]["edges"].as_array().unwrap().iter()
            .map(|e| e["node"]["owner"]["username"].as_str().unwrap()).collect();
        assert_eq!(owners, ["stall_a", "stall_a", "stall_b", "stall_a"]);

        let minuman = a.ok(q, json!({"filter": {"category": "MINUMAN"}})).await;
        assert_eq!(names(&minuman), ["Es Jeruk"]);
        let search = a.ok(q, json!({"filter": {"search": "KS"}})).await;
        assert_eq!(names(&search), ["bakso"]);
        let like_chars = a.ok(q, json!({"filter": {"search": "%"}})).await;
        assert_eq!(like_chars["products"]["totalCount"], 0, "LIKE wildcards are escaped");
        let in_stock = a.ok(q, json!({"filter": {"inStock": true, "ownerUsername": "stall_a"}})).await;
        assert_eq!(names(&in_stock), ["bakso", "Cendol"]);
        let sold_out = a.ok(q, json!({"filter": {"inStock": false}})).await;
        assert_eq!(names(&sold_out), ["Apel"]);
        let low = a.ok(q, json!({"filter": {"lowStock": true}})).await;
        assert_eq!(names(&low), ["Apel", "Cendol"]);
        let b_id = b.ok("{ me { id } }", json!({})).await["me"]["id"].clone();
        let by_owner = a.ok(q, json!({"filter": {"ownerId": b_id}})).await;
        assert_eq!(names(&by_owner), ["Es Jeruk"]);
        let nobody = a.ok(q, json!({"filter": {"ownerUsername": "ghost"}})).await;
        assert_eq!(nobody["products"]["totalCount"], 0);

        // A cursor from another ordering, and a malformed one, are bad input.
        assert_eq!(a.err_code(q, json!({"a": cursor, "o": {"field": "PRICE"}})).await, "BAD_USER_INPUT");
        assert_eq!(a.err_code(q, json!({"a": "not-a-cursor"})).await, "BAD_USER_INPUT");
        assert_eq!(a.err_code(q, json!({"f": -1})).await, "BAD_USER_INPUT");
    }

    async fn pages_are_capped_at_one_hundred(app) {
        let mut c = app.partner("bulk").await;
        let db = app.state.service.db();
        // Insert 120 products directly: the cap, not the API, is under test.
        let owner: i64 = db.scalar(&Sql::new("select id from users")).await.unwrap();
        for i in 0..120 {
            db.execute(&Sql::new("insert into products (owner_id, name, name_key, price, quantity, category, created_at, updated_at)
                                  values ($1, $2, $2, 1, 1, 'makanan', 0, 0)").arg(owner).arg(format!("p{i:03}")))
                .await.unwrap();
        }
        let r = c.ok("{ products(first: 1000) { totalCount pageInfo { hasNextPage } edges { node { id } } } }", json!({})).await;
        assert_eq!(r["products"]["edges"].as_array().unwrap().len(), 100);
        assert_eq!(r["products"]["totalCount"], 120);
        assert_eq!(r["products"]["pageInfo"]["hasNextPage"], true);
    }
}
