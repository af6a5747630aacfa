//! GraphQL over HTTP's media type: `application/graphql-response+json` when the client
//! prefers it, with 400 and no `data` for a request that fails before execution;
//! `application/json` as before otherwise. (`tests/graphql-http` runs the spec's own
//! audit suite against the real stack.)

use axum::body::Body;
use axum::http::Request;
use serde_json::{json, Value};

use crate::helpers::*;

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

async fn post(c: &mut Client, accept: &str, body: &str) -> HttpResponse {
    let request = Request::post("/graphql")
        .header("content-type", "application/json")
        .header("accept", accept)
        .body(Body::from(body.to_owned()))
        .unwrap();
    c.send(request).await
}

fn content_type(r: &HttpResponse) -> String {
    r.headers["content-type"].to_str().unwrap().to_owned()
}

dual_tests! {
    async fn failures_before_execution_are_400_without_data_when_the_client_accepts_the_media_type(app) {
        let mut c = app.client();
        let typename = json!({ "query": "{ __typename }" }).to_string();
        let r = post(&mut c, GRAPHQL_RESPONSE, &typename).await;
        assert_eq!(r.status, 200);
        assert!(content_type(&r).starts_with(GRAPHQL_RESPONSE), "{}", content_type(&r));
        assert_eq!(r.json()["data"]["__typename"], "QueryRoot");

        let adjust = "query($n: Int!) { products(first: $n) { totalCount } }";
        for (what, body) in [
            ("a document that does not parse", json!({ "query": "{" })),
            ("a document that does not validate", json!({ "query": "{ noSuchField }" })),
            ("variables that do not coerce", json!({ "query": adjust, "variables": { "n": "many" } })),
        ] {
            let r = post(&mut c, GRAPHQL_RESPONSE, &body.to_string()).await;
            assert_eq!(r.status, 400, "{what}: {}", r.text());
            assert!(content_type(&r).starts_with(GRAPHQL_RESPONSE), "{what}");
            let answer: Value = r.json();
            assert!(answer.get("data").is_none(), "{what}: {answer}");
            assert!(answer["errors"][0]["message"].is_string(), "{what}: {answer}");

            // application/json keeps its behaviour: 200, data null, the same errors.
            let r = post(&mut c, "application/json", &body.to_string()).await;
            assert_eq!(r.status, 200, "{what}");
            assert!(content_type(&r).starts_with("application/json"), "{what}");
            assert_eq!(r.json()["data"], Value::Null, "{what}");
        }

        // An operation that reached execution answers 200 with its data entry.
        let executed = json!({ "query": "mutation { logout }" }).to_string();
        let r = post(&mut c, GRAPHQL_RESPONSE, &executed).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.json().get("data").is_some());

        // A body that is not JSON is 400 in either media type.
        for accept in [GRAPHQL_RESPONSE, "application/json"] {
            let r = post(&mut c, accept, "{not json").await;
            assert_eq!(r.status, 400, "{accept}");
        }
    }
}
