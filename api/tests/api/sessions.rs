//! Cookie sessions: stored in the database, so every replica agrees on them.

use serde_json::json;

use crate::helpers::*;

const ME: &str = "{ me { username } }";

dual_tests! {
    async fn session_cookie_is_http_only_and_same_site_lax(app) {
        let mut c = app.client();
        c.register("cookie", PASSWORD).await;
        let response = c
            .post_raw(
                "application/json",
                json!({"query": "mutation { login(username: \"cookie\", password: \"correct horse battery\") { id } }"}).to_string(),
            )
            .await;
        let set_cookie = response.headers["set-cookie"].to_str().unwrap().to_owned();
        assert!(set_cookie.starts_with("ecanteen_session="), "{set_cookie}");
        assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
        assert!(set_cookie.contains("SameSite=Lax"), "{set_cookie}");
        assert!(!set_cookie.contains("Secure"), "Secure only when configured: {set_cookie}");
    }

    async fn the_session_id_changes_at_login(app) {
        let mut c = app.partner("fixation").await;
        let first = c.cookie.clone().unwrap();
        c.login("fixation", PASSWORD).await;
        let second = c.cookie.clone().unwrap();
        assert_ne!(first, second);
        // The old id is worthless now.
        let mut old = app.client();
        old.cookie = Some(first);
        assert_eq!(old.ok(ME, json!({})).await["me"], json!(null));
        assert_eq!(c.ok(ME, json!({})).await["me"]["username"], "fixation");
    }

    async fn a_login_on_one_replica_is_seen_by_another(app) {
        let other = app.sibling().await;
        let c = app.partner("roamer").await;
        let mut on_other = c.to(&other);
        assert_eq!(on_other.ok(ME, json!({})).await["me"]["username"], "roamer");
    }

    async fn logout_on_one_replica_kills_the_cookie_on_another(app) {
        let other = app.sibling().await;
        let mut c = app.partner("leaver").await;
        let cookie = c.cookie.clone();
        assert_eq!(c.ok("mutation { logout }", json!({})).await["logout"], true);
        let mut replay = other.client();
        replay.cookie = cookie;
        assert_eq!(replay.ok(ME, json!({})).await["me"], json!(null));
        let code = replay
            .err_code("mutation { createProduct(input: {name: \"x\", price: 1, category: \"c\"}) { id } }", json!({}))
            .await;
        assert_eq!(code, "UNAUTHENTICATED");
    }

    async fn an_expired_session_is_refused_and_cleaned_up(app) {
        let mut c = app.partner("sleeper").await;
        app.expire_sessions().await;
        assert_eq!(c.ok(ME, json!({})).await["me"], json!(null));
        use tower_sessions::ExpiredDeletion as _;
        app.state.service.db().session_store().delete_expired().await.unwrap();
        let left: i64 = ecanteen_api::with_db!(app.state.service.db(), pool => {
            let table = if app.engine() == Engine::Sqlite { "tower_sessions" } else { "tower_sessions.session" };
            sqlx::query_scalar(&format!("select count(*) from {table}")).fetch_one(pool).await.unwrap()
        });
        assert_eq!(left, 0);
    }
}

#[tokio::test]
async fn secure_cookies_when_configured() {
    let app = TestApp::with_config(Engine::Sqlite, |c| c.secure_cookies = true).await;
    let mut c = app.client();
    c.register("secure", PASSWORD).await;
    let response = c
        .post_raw(
            "application/json",
            json!({"query": "mutation { login(username: \"secure\", password: \"correct horse battery\") { id } }"}).to_string(),
        )
        .await;
    assert!(response.headers["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Secure"));
}
