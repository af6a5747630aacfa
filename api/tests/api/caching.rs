//! HTTP caching of GraphQL reads (`http::caching`): anonymous GETs of the public
//! catalogue carry `Cache-Control` and an `ETag`, and 304 on `If-None-Match`; the same
//! read with credentials is `private, no-cache` (the asker's own cache revalidates it);
//! anything that depends on who asks is `private, no-store`.

use ecanteen_test_client::requests;
use serde_json::json;

use crate::helpers::*;

const CATALOGUE: &str = "{ products(first: 5) { nodes { id name quantity owner { username } } } }";

fn get_uri(query: &str) -> String {
    format!(
        "/graphql?{}",
        serde_urlencoded::to_string([("query", query)]).unwrap()
    )
}

fn header<'a>(response: &'a ecanteen_test_client::Response, name: &str) -> &'a str {
    response
        .headers
        .get(name)
        .map_or("", |v| v.to_str().unwrap())
}

dual_tests! {
    async fn an_anonymous_get_of_the_catalogue_is_public_and_revalidates_to_304(app) {
        let mut owner = app.partner("cached_stall").await;
        let id = owner.create_product("Es teh", 10).await;
        let mut anonymous = app.client();
        let first = anonymous.get(&get_uri(CATALOGUE)).await;
        assert_eq!(first.status, 200, "{}", first.text());
        assert_eq!(header(&first, "cache-control"), "public, max-age=5, stale-while-revalidate=30");
        assert!(header(&first, "vary").contains("Cookie"), "{:?}", first.headers);
        assert!(header(&first, "vary").contains("Authorization"));
        let etag = header(&first, "etag").to_owned();
        assert!(etag.starts_with("W/\"") && etag.len() > 4, "{etag:?}");
        assert_eq!(first.json()["data"]["products"]["nodes"][0]["quantity"], 10);

        let conditional = |etag: &str| requests::empty("GET", &get_uri(CATALOGUE), &[("if-none-match", etag)]);
        let again = anonymous.send_built(conditional(&etag)).await;
        assert_eq!(again.status, 304);
        assert!(again.body.is_empty());
        assert_eq!(header(&again, "etag"), etag);
        assert_eq!(header(&again, "cache-control"), "public, max-age=5, stale-while-revalidate=30");

        // A change of stock changes the answer, so the old tag no longer matches.
        owner.adjust(&id, -1).await;
        let changed = anonymous.send_built(conditional(&etag)).await;
        assert_eq!(changed.status, 200);
        assert_eq!(changed.json()["data"]["products"]["nodes"][0]["quantity"], 9);
        assert_ne!(header(&changed, "etag"), etag);
    }

    async fn a_credentialed_get_of_the_catalogue_is_private_and_revalidates_to_304(app) {
        let mut partner = app.partner("private_stall").await;
        let id = partner.create_product("Nasi", 3).await;
        let token = partner.api_token("till").await;

        // The same catalogue read, with a session cookie and with a token.
        let with_cookie = partner.get(&get_uri(CATALOGUE)).await;
        assert_eq!(with_cookie.status, 200);
        assert_eq!(header(&with_cookie, "cache-control"), "private, no-cache");
        let etag = header(&with_cookie, "etag").to_owned();
        assert!(!etag.is_empty());
        let conditional = |etag: &str| requests::empty("GET", &get_uri(CATALOGUE), &[("if-none-match", etag)]);
        let again = partner.send_built(conditional(&etag)).await;
        assert_eq!(again.status, 304);
        assert_eq!(header(&again, "cache-control"), "private, no-cache");
        partner.adjust(&id, 1).await;
        assert_eq!(partner.send_built(conditional(&etag)).await.status, 200);
        let mut integrator = app.client();
        integrator.bearer = Some(token);
        let with_token = integrator.get(&get_uri(CATALOGUE)).await;
        assert_eq!(header(&with_token, "cache-control"), "private, no-cache");
    }

    async fn answers_that_depend_on_who_asks_are_private_and_not_stored(app) {
        let mut partner = app.partner("own_stall").await;
        partner.create_product("Nasi", 3).await;
        for query in [
            "{ me { id } }",
            "{ products(first: 1) { nodes { stockMovements { nodes { id } } } } }",
        ] {
            let response = partner.get(&get_uri(query)).await;
            assert_eq!(response.status, 200, "{query}: {}", response.text());
            assert!(response.json()["errors"].is_null(), "{query}: {}", response.text());
            assert_eq!(header(&response, "cache-control"), "private, no-store", "{query}");
            assert_eq!(header(&response, "etag"), "", "{query}");
        }

        // Anonymous, but a field that depends on the caller, an error, or a POST.
        let mut anonymous = app.client();
        for query in [
            "{ me { id } products(first: 1) { nodes { id } } }",
            "{ product(id: \"not-a-number\") { id } }",
            "{ products(first: 1) { nodes { stockMovements { nodes { id } } } } }",
            "{ products(first: 1) { nodes { owner { apiTokens { id } } } } }",
            "{ __typename }",
        ] {
            let response = anonymous.get(&get_uri(query)).await;
            assert_eq!(response.status, 200, "{query}: {}", response.text());
            assert_eq!(header(&response, "cache-control"), "private, no-store", "{query}");
            assert_eq!(header(&response, "etag"), "", "{query}");
        }
        let posted = anonymous.send_built(requests::graphql(CATALOGUE, json!({}))).await;
        assert_eq!(header(&posted, "cache-control"), "private, no-store");
        // Errors before execution are not stored either.
        let refused = anonymous.get("/graphql?query=%7B").await;
        assert_eq!(header(&refused, "cache-control"), "private, no-store");
    }

    async fn the_canteen_calendar_is_public_for_a_minute(app) {
        let mut anonymous = app.client();
        let response = anonymous.get(&get_uri("{ canteen { timeZone today } }")).await;
        assert_eq!(header(&response, "cache-control"), "public, max-age=60, stale-while-revalidate=30");
        // With the catalogue, the shorter of the two.
        let both = anonymous.get(&get_uri("{ canteen { today } products(first: 1) { nodes { id } } }")).await;
        assert_eq!(header(&both, "cache-control"), "public, max-age=5, stale-while-revalidate=30");
    }
}
