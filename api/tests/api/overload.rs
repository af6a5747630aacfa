//! Graceful overload: past a bound, the excess is refused at once with a retryable
//! answer, and what was admitted is served.

use serde_json::json;

use crate::helpers::*;

const LOGIN: &str =
    "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { id } }";

/// One password worker, a queue of one, a short wait: a handful of concurrent logins is
/// already a storm.
async fn tight_app(engine: Engine) -> TestApp {
    TestApp::with_config(engine, |c| {
        c.password_workers = 1;
        c.password_queue = 1;
        c.password_wait_ms = 50;
    })
    .await
}

dual_tests! {
    async fn a_login_storm_past_the_password_workers_is_refused_as_busy_with_retry_after(app) {
        let app = tight_app(app.engine()).await;
        app.client().register("ramai", PASSWORD).await;

        let attempts: Vec<_> = (0..12)
            .map(|i| {
                let mut c = app.client();
                tokio::spawn(async move {
                    if i % 2 == 0 {
                        let r = c.send(gql_request(LOGIN, json!({"u": "ramai", "p": PASSWORD}))).await;
                        (r.status.as_u16(), r.headers.contains_key("retry-after"), r.json())
                    } else {
                        let r = c.rest("POST", "/ecanteen/login",
                            Some(json!({"username": "ramai", "password": PASSWORD})), &[]).await;
                        (r.status.as_u16(), r.headers.contains_key("retry-after"), r.json())
                    }
                })
            })
            .collect();
        let (mut admitted, mut busy) = (0, 0);
        for attempt in attempts {
            let (status, retry_after, body) = attempt.await.unwrap();
            match status {
                200 if body.get("errors").is_none() => admitted += 1,
                503 => {
                    assert!(retry_after, "a 503 without Retry-After: {body}");
                    // GraphQL says BUSY; REST keeps to its contract's codes.
                    let code = body["errors"][0]["extensions"]["code"].as_str()
                        .or(body["error"]["code"].as_str());
                    assert!(matches!(code, Some("BUSY" | "INTERNAL")), "{body}");
                    assert!(body.to_string().contains("busy"), "{body}");
                    if let Some(ext) = body["errors"][0]["extensions"].as_object() {
                        assert_eq!(ext["retryAfter"], 1, "{body}");
                        assert_eq!(ext["retryable"], true, "{body}");
                    }
                    busy += 1;
                }
                _ => panic!("neither admitted nor BUSY: {status} {body}"),
            }
        }
        assert!(admitted >= 1, "the first logins were served");
        assert!(busy >= 1, "the excess was refused: {admitted} admitted");
        // A refusal is not a failed login: the account is not throttled by the storm.
        app.client().login("ramai", PASSWORD).await;
    }

    async fn one_request_holds_at_most_one_login_or_register(app) {
        let mut c = app.client();
        c.register("sekali", PASSWORD).await;
        let bomb = format!(
            "mutation {{ {} }}",
            (0..50).map(|i| format!("a{i}: login(username: \"sekali\", password: \"guess{i}xx\") {{ id }}"))
                .collect::<Vec<_>>().join(" ")
        );
        let r = c.gql(&bomb, json!({})).await;
        assert_eq!(first_code(&r).as_deref(), Some("BAD_USER_INPUT"), "{r}");
        assert!(r["errors"][0]["message"].as_str().unwrap().contains("at most one login or register"), "{r}");
        // Through fragments too, and a register beside a login.
        let mixed = "mutation { ...L register(input: {username: \"dua\", password: \"correct horse battery\"}) { id } }
            fragment L on MutationRoot { login(username: \"sekali\", password: \"correct horse battery\") { id } }";
        assert_eq!(first_code(&c.gql(mixed, json!({})).await).as_deref(), Some("BAD_USER_INPUT"));
        assert!(app.client().gql("{ products { totalCount } }", json!({})).await.get("errors").is_none());

        // Across a batch: two documents of one login each.
        let one = json!({"query": LOGIN, "variables": {"u": "sekali", "p": "wrong guess 1"}});
        let batch = json!([one, {"query": LOGIN, "variables": {"u": "sekali", "p": "wrong guess 2"}}]);
        let r = c.post_raw("application/json", batch.to_string()).await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains("at most one login or register"), "{}", r.text());
        // One login in a batch with a query is fine.
        let fine = json!([{"query": "{ products { totalCount } }"}, {"query": LOGIN, "variables": {"u": "sekali", "p": PASSWORD}}]);
        let r = c.post_raw("application/json", fine.to_string()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.json()[1].get("errors").is_none(), "{}", r.text());

        // None of the refused guesses was tried: no failure counts against the account.
        for _ in 0..4 {
            c.gql(LOGIN, json!({"u": "sekali", "p": "wrong guess!"})).await;
        }
        assert!(c.gql(LOGIN, json!({"u": "sekali", "p": PASSWORD})).await.get("errors").is_none(),
            "five failures would have throttled the account");
    }
}
