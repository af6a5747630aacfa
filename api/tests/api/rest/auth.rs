//! `join`, `login`, `logout` and `tokens`.

use serde_json::json;

use super::{assert_error, create, rest_partner};
use crate::helpers::{dual_tests, SendTo as _, PASSWORD};

dual_tests! {
    async fn join_takes_json_or_a_form_and_refuses_bad_or_taken_names(app) {
        let mut c = app.client();
        let r = c.rest("POST", "/ecanteen/join", Some(json!({"username": "Saif", "password": PASSWORD})), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let account = r.json();
        assert_eq!(account["username"], "saif");
        assert!(account["id"].as_i64().is_some());
        assert_eq!(account.as_object().map(|o| o.len()), Some(2), "{account}");

        let form = c.rest_raw("POST", "/ecanteen/join", "application/x-www-form-urlencoded",
            "username=budi&password=correct+horse+battery", &[]).await;
        assert_eq!(form.status, 200, "{}", form.text());
        assert_eq!(form.json()["username"], "budi");

        // Taken, in any letter case.
        let taken = c.rest("POST", "/ecanteen/join", Some(json!({"username": "SAIF", "password": PASSWORD})), &[]).await;
        assert_error(&taken, 409, "CONFLICT");
        let invalid = c.rest("POST", "/ecanteen/join", Some(json!({"username": "a b", "password": PASSWORD})), &[]).await;
        assert!(assert_error(&invalid, 400, "BAD_REQUEST").contains("username"));
        let short = c.rest("POST", "/ecanteen/join", Some(json!({"username": "citra", "password": "x"})), &[]).await;
        assert!(assert_error(&short, 400, "BAD_REQUEST").contains("password"));
        let missing = c.rest("POST", "/ecanteen/join", Some(json!({"username": "dewi"})), &[]).await;
        assert!(assert_error(&missing, 400, "BAD_REQUEST").contains("password"));
        let not_json = c.rest_raw("POST", "/ecanteen/join", "application/json", "{\"username\": ", &[]).await;
        assert_error(&not_json, 400, "BAD_REQUEST");
        let text = c.rest_raw("POST", "/ecanteen/join", "text/plain", "username=eka", &[]).await;
        assert_error(&text, 415, "UNSUPPORTED_MEDIA_TYPE");
    }

    async fn login_sets_a_session_that_writes_and_refuses_wrong_credentials(app) {
        let mut c = app.client();
        c.rest("POST", "/ecanteen/join", Some(json!({"username": "saif", "password": PASSWORD})), &[]).await;
        let wrong = c.rest("POST", "/ecanteen/login", Some(json!({"username": "saif", "password": "wrong password"})), &[]).await;
        assert_error(&wrong, 401, "UNAUTHENTICATED");
        let unknown = c.rest("POST", "/ecanteen/login", Some(json!({"username": "nobody", "password": PASSWORD})), &[]).await;
        assert_error(&unknown, 401, "UNAUTHENTICATED");
        assert!(c.cookie.is_none());

        let r = c.rest_raw("POST", "/ecanteen/login", "application/x-www-form-urlencoded",
            "username=saif&password=correct%20horse%20battery", &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["username"], "saif");
        let set_cookie = r.headers.get("set-cookie").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(set_cookie.starts_with("ecanteen_session=") && set_cookie.contains("HttpOnly"), "{set_cookie}");
        // The session works on another replica.
        let mut other = c.to(&app.sibling().await);
        create(&mut other, "Nasi Goreng", 1).await;
    }

    async fn a_cross_site_form_login_is_refused(app) {
        let mut c = app.client();
        c.rest("POST", "/ecanteen/join", Some(json!({"username": "saif", "password": PASSWORD})), &[]).await;
        let body = "username=saif&password=correct+horse+battery";
        let foreign = c.rest_raw("POST", "/ecanteen/login", "application/x-www-form-urlencoded", body,
            &[("origin", "https://evil.example"), ("host", "canteen.example")]).await;
        assert_error(&foreign, 403, "FORBIDDEN");
        assert!(c.cookie.is_none());
        let own = c.rest_raw("POST", "/ecanteen/login", "application/x-www-form-urlencoded", body,
            &[("origin", "https://canteen.example"), ("host", "canteen.example")]).await;
        assert_eq!(own.status, 200, "{}", own.text());
    }

    async fn login_is_throttled_after_repeated_failures(app) {
        let mut c = app.client();
        c.rest("POST", "/ecanteen/join", Some(json!({"username": "saif", "password": PASSWORD})), &[]).await;
        for _ in 0..5 {
            let r = c.rest("POST", "/ecanteen/login", Some(json!({"username": "saif", "password": "wrong password"})), &[]).await;
            assert_error(&r, 401, "UNAUTHENTICATED");
        }
        let r = c.rest("POST", "/ecanteen/login", Some(json!({"username": "saif", "password": PASSWORD})), &[]).await;
        assert_error(&r, 429, "TOO_MANY_REQUESTS");
        let retry_after: u64 = r.headers.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).expect("Retry-After");
        assert!(retry_after >= 1);
    }

    async fn logout_by_get_or_post_kills_the_session_on_every_replica(app) {
        for method in ["GET", "POST"] {
            let mut c = rest_partner(&app, &format!("kasir{}", method.to_lowercase())).await;
            let mut elsewhere = c.to(&app.sibling().await);
            let r = c.rest(method, "/ecanteen/logout", None, &[]).await;
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.json(), json!("logged out"));
            let write = elsewhere.rest("POST", "/ecanteen/product",
                Some(json!({"name": "Teh", "price": 1, "quantity": 1, "category": "minuman"})), &[]).await;
            assert_error(&write, 401, "UNAUTHENTICATED");
        }
        // Logging out without a session is harmless.
        let r = app.client().rest("POST", "/ecanteen/logout", None, &[]).await;
        assert_eq!(r.status, 200);
    }

    async fn a_logout_by_get_from_another_site_is_refused_and_the_session_lives(app) {
        let mut c = rest_partner(&app, "kasirlintas").await;
        for cross_site in [
            &[("sec-fetch-site", "cross-site")][..],
            &[("sec-fetch-site", "same-site")][..],
            &[("origin", "https://evil.example")][..],
        ] {
            let r = c.rest("GET", "/ecanteen/logout", None, cross_site).await;
            assert_error(&r, 403, "FORBIDDEN");
        }
        let still = c.rest("POST", "/ecanteen/product",
            Some(json!({"name": "Teh", "price": 1, "quantity": 1, "category": "minuman"})), &[]).await;
        assert_eq!(still.status, 200, "{}", still.text());
        // From the client's own page, or typed in the address bar, it still works.
        for own in [[("sec-fetch-site", "same-origin")], [("sec-fetch-site", "none")]] {
            let r = c.rest("GET", "/ecanteen/logout", None, &own).await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
    }

    async fn api_tokens_are_created_used_and_revoked(app) {
        let mut c = rest_partner(&app, "saif").await;
        let anonymous = app.client().rest("POST", "/ecanteen/tokens", Some(json!({"name": "till"})), &[]).await;
        assert_error(&anonymous, 401, "UNAUTHENTICATED");
        let bad = c.rest("POST", "/ecanteen/tokens", Some(json!({"name": ""})), &[]).await;
        assert!(assert_error(&bad, 400, "BAD_REQUEST").contains("name"));

        let r = c.rest("POST", "/ecanteen/tokens", Some(json!({"name": "till"})), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let token = r.json();
        let id = token["id"].as_i64().expect("id");
        let secret = token["token"].as_str().expect("token").to_owned();

        let mut till = app.client();
        till.bearer = Some(secret.clone());
        let product = create(&mut till, "Es Teh", 3).await;
        assert_eq!(product["user_id"], "saif");

        let anonymous = app.client().rest("DELETE", &format!("/ecanteen/tokens/{id}"), None, &[]).await;
        assert_error(&anonymous, 401, "UNAUTHENTICATED");
        let mut stranger = rest_partner(&app, "budi").await;
        let not_theirs = stranger.rest("DELETE", &format!("/ecanteen/tokens/{id}"), None, &[]).await;
        assert_error(&not_theirs, 404, "NOT_FOUND");
        let unknown = c.rest("DELETE", "/ecanteen/tokens/999999", None, &[]).await;
        assert_error(&unknown, 404, "NOT_FOUND");

        let revoked = c.rest("DELETE", &format!("/ecanteen/tokens/{id}"), None, &[]).await;
        assert_eq!(revoked.status, 200, "{}", revoked.text());
        let refused = till.rest("POST", "/ecanteen/product",
            Some(json!({"name": "Kopi", "price": 1, "quantity": 1, "category": "minuman"})), &[]).await;
        assert_error(&refused, 401, "UNAUTHENTICATED");
    }
}
