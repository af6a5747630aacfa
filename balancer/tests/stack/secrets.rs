//! No secret reaches the logs, at any level, of a replica or the balancer.

use std::fs::File;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::harness::*;

const PASSWORD: &str = "Pa55-word-never-logged-7f1e";
const WRONG_PASSWORD: &str = "Wr0ng-guess-never-logged-91ab";
const BOGUS_TOKEN: &str = "ect_bogus_token_never_logged_c0ffee";

fn log_file(dir: &tempfile::TempDir, name: &str) -> (File, File) {
    let file = File::create(dir.path().join(name)).unwrap();
    (file.try_clone().unwrap(), file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_token_or_session_id_is_logged_even_at_trace_level() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::new();
    let (out, err) = log_file(&dir, "replica.log");
    let (child, line) = spawn_listening(
        Command::new(api_bin())
            .args(["--listen", "127.0.0.1:0", "--database-url", &db.url])
            .env("RUST_LOG", "trace")
            .stderr(Stdio::from(err)),
        Some(out),
    );
    let addr = listening_addr(&line, "http://");
    let _replica = Proc { child };
    let (out, err) = log_file(&dir, "balancer.log");
    let args = ["--upstream".to_owned(), addr.to_string()];
    let balancer = Balancer::start_logging(&args, "trace", Some(out), Stdio::from(err));
    balancer.wait_ready(1);
    let url = balancer.url.clone();

    // Every way a secret enters: registration, failed and good logins (GraphQL and
    // REST), the session cookie, a token created and used, an unknown token, logout.
    let mut c = anonymous(&url);
    c.register("quiet", PASSWORD).await;
    // The password also arrives written into a document, not only as a variable.
    let wrong = format!(
        r#"mutation {{ login(username: "quiet", password: "{WRONG_PASSWORD}") {{ id }} }}"#
    );
    assert!(c.gql(&wrong, json!({})).await.get("errors").is_some());
    let credentials = json!({ "username": "quiet", "password": PASSWORD });
    let rest_login = c
        .rest("POST", "/ecanteen/login", Some(credentials), &[])
        .await;
    assert_eq!(rest_login.status, 200);
    let login =
        format!(r#"mutation {{ login(username: "quiet", password: "{PASSWORD}") {{ id }} }}"#);
    assert!(c.gql(&login, json!({})).await.get("errors").is_none());
    let cookie = c.cookie.clone().unwrap();
    let session_id = cookie
        .split(';')
        .find_map(|c| c.trim().strip_prefix("ecanteen_session="))
        .unwrap()
        .to_owned();
    let token = c.api_token("till").await;
    let anonymous = client();
    for bearer in [token.as_str(), BOGUS_TOKEN] {
        let _ = anonymous
            .post(format!("{url}/graphql"))
            .bearer_auth(bearer)
            .json(&json!({ "query": "{ me { id } }" }))
            .send()
            .await
            .unwrap();
        let _ = anonymous
            .get(format!("{url}/ecanteen/product"))
            .bearer_auth(bearer)
            .send()
            .await
            .unwrap();
    }
    c.logout().await;

    // Logs are written as they happen; give the last lines a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    for name in ["replica.log", "balancer.log"] {
        let log = read(name);
        // The test means something only if trace-level lines were written.
        assert!(
            log.contains("TRACE") || log.contains("DEBUG"),
            "{name} is quiet"
        );
        for (what, secret) in [
            ("password", PASSWORD),
            ("wrong password", WRONG_PASSWORD),
            ("session id", session_id.as_str()),
            ("API token", token.as_str()),
            ("unknown token", BOGUS_TOKEN),
            ("password hash", "$argon2id$"),
        ] {
            if let Some(line) = log.lines().find(|l| l.contains(secret)) {
                panic!("{name} shows the {what}: {line}");
            }
        }
    }
}
