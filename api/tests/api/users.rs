//! Registration, login, and login throttling.

use serde_json::json;

use crate::helpers::*;
use ecanteen_test_client::documents::{LOGIN, REGISTER};

dual_tests! {
    async fn usernames_are_lower_cased_and_unique_in_any_case(app) {
        let mut c = app.client();
        let user = c.register("Saif", PASSWORD).await;
        assert_eq!(user["username"], "saif");
        let response = c.gql(REGISTER, json!({"u": "SAIF", "p": PASSWORD})).await;
        assert_eq!(first_code(&response).as_deref(), Some("CONFLICT"));
        assert!(response["errors"][0]["message"].as_str().unwrap().contains("taken"));
        // Login works in any letter case too.
        c.login("sAiF", PASSWORD).await;
    }

    async fn registration_rejects_bad_fields_and_names_them(app) {
        let mut c = app.client();
        for (username, password, field) in [
            ("ab", PASSWORD, "username"),
            ("has space", PASSWORD, "username"),
            ("x".repeat(33).as_str(), PASSWORD, "username"),
            ("valid_name", "short", "password"),
            ("valid_name", "p".repeat(129).as_str(), "password"),
        ] {
            let response = c.gql(REGISTER, json!({"u": username, "p": password})).await;
            assert_eq!(first_code(&response).as_deref(), Some("BAD_USER_INPUT"), "{username}");
            assert_eq!(response["errors"][0]["extensions"]["field"], field);
        }
        // Nothing was written.
        let count: i64 = app.state.service.db().scalar(&Sql::new("select count(*) from users")).await.unwrap();
        assert_eq!(count, 0);
    }

    async fn passwords_are_stored_only_as_argon2id_hashes(app) {
        app.client().register("hasher", PASSWORD).await;
        let hash: String = app.state.service.db().scalar(&Sql::new("select password_hash from users")).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(!hash.contains(PASSWORD));
    }

    async fn wrong_password_and_unknown_user_are_the_same_error(app) {
        let mut c = app.client();
        c.register("known", PASSWORD).await;
        let wrong = c.gql(LOGIN, json!({"u": "known", "p": "wrong password"})).await;
        let unknown = c.gql(LOGIN, json!({"u": "nobody", "p": PASSWORD})).await;
        assert_eq!(first_code(&wrong).as_deref(), Some("UNAUTHENTICATED"));
        assert_eq!(wrong["errors"][0]["message"], unknown["errors"][0]["message"]);
        assert_eq!(first_code(&unknown).as_deref(), Some("UNAUTHENTICATED"));
        assert!(c.cookie.is_none(), "no session after a failed login");
    }

    async fn login_is_throttled_after_five_failures_across_replicas(app) {
        let other = app.sibling().await;
        let mut a = app.client();
        a.register("target", PASSWORD).await;
        for _ in 0..5 {
            let r = a.gql(LOGIN, json!({"u": "target", "p": "wrong password"})).await;
            assert_eq!(first_code(&r).as_deref(), Some("UNAUTHENTICATED"));
        }
        // The sixth attempt, through another replica and with the right password.
        let mut b = other.client();
        let r = b.gql(LOGIN, json!({"u": "TARGET", "p": PASSWORD})).await;
        assert_eq!(first_code(&r).as_deref(), Some("TOO_MANY_REQUESTS"), "{r:#}");
        assert!(r["errors"][0]["extensions"]["retryAfter"].as_u64().unwrap() > 0);
        assert!(b.cookie.is_none());
        // Other accounts are unaffected.
        b.register("bystander", PASSWORD).await;
        b.login("bystander", PASSWORD).await;
    }

    async fn me_is_null_when_anonymous_and_the_partner_when_logged_in(app) {
        let mut c = app.client();
        assert_eq!(c.ok("{ me { username } }", json!({})).await["me"], json!(null));
        c.register("who", PASSWORD).await;
        c.login("who", PASSWORD).await;
        assert_eq!(c.ok("{ me { username } }", json!({})).await["me"]["username"], "who");
    }
}
