//! Password change: the current password is checked and throttled as a login is, every
//! other session of the partner ends on every replica, the caller's session is kept
//! under a new id, and API tokens are kept.

use std::str::FromStr as _;

use serde_json::json;
use tower_sessions::session::Id;
use tower_sessions::SessionStore as _;

use crate::helpers::*;

const CHANGE: &str = "mutation($c: String!, $n: String!) { changePassword(current: $c, new: $n) }";
const ME: &str = "{ me { username } }";
const NEW: &str = "a new password, longer";

fn session_id(client: &Client) -> Id {
    let cookie = client.cookie.as_deref().unwrap();
    let value = cookie.split_once('=').map_or(cookie, |(_, v)| v);
    Id::from_str(value).unwrap()
}

dual_tests! {
    async fn an_older_session_dies_when_the_password_changes(app) {
        let other = app.sibling().await;
        let mut phone = app.partner("ganti").await;
        let mut laptop = app.client();
        laptop.login("ganti", PASSWORD).await;
        let mut till = app.client();
        till.bearer = Some(laptop.api_token("kasir").await);
        let before = phone.cookie.clone();

        assert_eq!(phone.ok(CHANGE, json!({"c": PASSWORD, "n": NEW})).await["changePassword"], true);

        // The laptop's session is gone, on this replica and on the other.
        assert_eq!(laptop.ok(ME, json!({})).await["me"], json!(null));
        assert_eq!(laptop.to(&other).ok(ME, json!({})).await["me"], json!(null));
        // The phone keeps its session, under a new id; the old id is worthless.
        assert_ne!(phone.cookie, before, "a new session id");
        assert_eq!(phone.ok(ME, json!({})).await["me"]["username"], "ganti");
        assert_eq!(phone.to(&other).ok(ME, json!({})).await["me"]["username"], "ganti");
        let mut stale = app.client();
        stale.cookie = before;
        assert_eq!(stale.ok(ME, json!({})).await["me"], json!(null));
        // The API token still works.
        assert_eq!(till.ok(ME, json!({})).await["me"]["username"], "ganti");
        // The old password no longer logs in; the new one does.
        let r = app.client().gql(documents::LOGIN, json!({"u": "ganti", "p": PASSWORD})).await;
        assert_eq!(first_code(&r).as_deref(), Some("UNAUTHENTICATED"), "{r}");
        app.client().login("ganti", NEW).await;
    }

    // The store's save is an upsert: a refresh that read a session before the change
    // and writes it after would bring it back. It must not.
    async fn a_refresh_racing_a_password_change_does_not_bring_a_session_back(app) {
        let mut phone = app.partner("balapan").await;
        let mut laptop = app.client();
        laptop.login("balapan", PASSWORD).await;
        let store = ecanteen_api::sessions::Store::new(app.state.service.db());
        let id = session_id(&laptop);
        let record = store.load(&id).await.unwrap().expect("the laptop's session is stored");

        phone.ok(CHANGE, json!({"c": PASSWORD, "n": NEW})).await;
        store.save(&record).await.unwrap();

        assert_eq!(store.partner(&id).await.unwrap(), None);
        assert_eq!(laptop.ok(ME, json!({})).await["me"], json!(null));
    }

    // A login checks the password, then its session is stored when the answer goes
    // out. A change that commits in between must leave that login nothing.
    async fn a_login_that_raced_a_password_change_stores_no_session(app) {
        let mut phone = app.partner("selisih").await;
        let store = ecanteen_api::sessions::Store::new(app.state.service.db());
        // What the login stores: the session of a partner, at the version it verified.
        let login = app.state.service.login("selisih", PASSWORD).await.unwrap();
        let partner = json!({
            "user_id": login.user.id, "touched_at": 0, "password_version": login.password_version,
        });
        let mut record = tower_sessions::session::Record {
            id: Id::default(),
            data: [("partner".to_owned(), partner)].into_iter().collect(),
            expiry_date: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        };
        let mut stale = record.clone();
        stale.id = Id::default();

        // Before the change, it is stored; the change ends it as any other.
        store.create(&mut record).await.unwrap();
        assert_eq!(store.partner(&record.id).await.unwrap(), Some(login.user.id));
        phone.ok(CHANGE, json!({"c": PASSWORD, "n": NEW})).await;
        assert_eq!(store.partner(&record.id).await.unwrap(), None);

        // After the change, the same login's session is refused and not kept.
        assert!(store.create(&mut stale).await.is_err());
        assert_eq!(store.partner(&stale.id).await.unwrap(), None);
        // The phone's own session, renewed at the new version, lives on.
        assert_eq!(phone.ok(ME, json!({})).await["me"]["username"], "selisih");
    }

    async fn a_password_change_needs_the_current_password_and_is_throttled_as_a_login(app) {
        let mut c = app.partner("kunci").await;
        let r = c.gql(CHANGE, json!({"c": "not the password", "n": NEW})).await;
        assert_eq!(first_code(&r).as_deref(), Some("BAD_USER_INPUT"), "{r}");
        assert_eq!(r["errors"][0]["extensions"]["field"], "currentPassword");
        for (new, field) in [("short", "newPassword"), (PASSWORD, "newPassword")] {
            let r = c.gql(CHANGE, json!({"c": PASSWORD, "n": new})).await;
            assert_eq!(first_code(&r).as_deref(), Some("BAD_USER_INPUT"), "{new}: {r}");
            assert_eq!(r["errors"][0]["extensions"]["field"], field, "{new}: {r}");
        }
        // Four more wrong guesses make five failures: then even the right one waits.
        for _ in 0..4 {
            let r = c.gql(CHANGE, json!({"c": "still not it", "n": NEW})).await;
            assert_eq!(first_code(&r).as_deref(), Some("BAD_USER_INPUT"), "{r}");
        }
        let r = c.gql(CHANGE, json!({"c": PASSWORD, "n": NEW})).await;
        assert_eq!(first_code(&r).as_deref(), Some("TOO_MANY_REQUESTS"), "{r}");
        // The same count as login's.
        let r = app.client().gql(documents::LOGIN, json!({"u": "kunci", "p": PASSWORD})).await;
        assert_eq!(first_code(&r).as_deref(), Some("TOO_MANY_REQUESTS"), "{r}");
        // Nothing changed, and the session lives.
        assert_eq!(c.ok(ME, json!({})).await["me"]["username"], "kunci");
    }

    async fn only_a_session_may_change_the_password(app) {
        let mut c = app.partner("token").await;
        let mut integrator = app.client();
        integrator.bearer = Some(c.api_token("pos").await);
        let r = integrator.gql(CHANGE, json!({"c": PASSWORD, "n": NEW})).await;
        assert_eq!(first_code(&r).as_deref(), Some("FORBIDDEN"), "{r}");
        let r = app.client().gql(CHANGE, json!({"c": PASSWORD, "n": NEW})).await;
        assert_eq!(first_code(&r).as_deref(), Some("UNAUTHENTICATED"), "{r}");
        app.client().login("token", PASSWORD).await;
    }

    async fn rest_put_password_changes_it_and_ends_the_other_sessions(app) {
        let mut phone = app.partner("rest").await;
        let mut laptop = app.client();
        laptop.login("rest", PASSWORD).await;
        let body = |c: &str, n: &str| Some(json!({"current": c, "new": n}));

        let r = phone.rest("PUT", "/ecanteen/password", body("wrong password", NEW), &[]).await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(r.json()["error"]["code"], "BAD_REQUEST");
        let r = phone.rest("PUT", "/ecanteen/password", body(PASSWORD, "short"), &[]).await;
        assert_eq!(r.status, 400, "{}", r.text());
        let r = app.client().rest("PUT", "/ecanteen/password", body(PASSWORD, NEW), &[]).await;
        assert_eq!(r.status, 401, "{}", r.text());

        let before = phone.cookie.clone();
        let r = phone.rest("PUT", "/ecanteen/password", body(PASSWORD, NEW), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json(), json!("password changed"));
        assert_ne!(phone.cookie, before);
        assert_eq!(phone.ok(ME, json!({})).await["me"]["username"], "rest");
        assert_eq!(laptop.ok(ME, json!({})).await["me"], json!(null));
        let r = app.client().rest("POST", "/ecanteen/login", Some(json!({"username": "rest", "password": NEW})), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
}
