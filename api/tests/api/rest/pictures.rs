//! Pictures over REST: `PUT …/image` (multipart) and the `image` field of product
//! bodies (`data:` URIs, stored paths, `""`).

use base64::Engine as _;
use serde_json::json;

use super::{assert_error, create, fetch, id_of, rest_partner};
use crate::helpers::pictures::png;
use crate::helpers::{dual_tests, Client, Engine, HttpResponse, TestApp};

/// Sends `bytes` as the multipart field `field`.
async fn put_image(
    client: &mut Client,
    id: i64,
    field: &str,
    bytes: &[u8],
    headers: &[(&str, &str)],
) -> HttpResponse {
    let boundary = "rest-test-boundary-q3Zx";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"p.png\"\r\nContent-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    client
        .rest_raw(
            "PUT",
            &format!("/ecanteen/product/{id}/image"),
            &format!("multipart/form-data; boundary={boundary}"),
            body,
            headers,
        )
        .await
}

const PREFLIGHT: [(&str, &str); 1] = [("x-requested-with", "XMLHttpRequest")];

fn data_uri(bytes: &[u8]) -> String {
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

dual_tests! {
    async fn a_picture_is_replaced_by_a_multipart_upload(app) {
        let mut saif = rest_partner(&app, "saif").await;
        let id = id_of(&create(&mut saif, "Nasi Goreng", 1).await);
        let first = png(12, 12, 1);
        let r = put_image(&mut saif, id, "image", &first, &PREFLIGHT).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let old_url = r.json()["image"].as_str().unwrap().to_owned();
        assert_eq!(saif.get(&old_url).await.body, first);

        let second = png(12, 12, 2);
        let r = put_image(&mut saif, id, "image", &second, &PREFLIGHT).await;
        let new_url = r.json()["image"].as_str().unwrap().to_owned();
        assert_ne!(new_url, old_url);
        assert_eq!(fetch(&mut saif, id).await.json()["image"], new_url);
        assert_eq!(saif.get(&new_url).await.body, second);
        // The replaced picture, used by nothing else, is gone.
        assert_eq!(saif.get(&old_url).await.status, 404);
    }

    async fn uploads_are_checked_and_refused_cleanly(app) {
        let mut saif = rest_partner(&app, "saif").await;
        let id = id_of(&create(&mut saif, "Nasi Goreng", 1).await);
        let picture = png(8, 8, 1);
        // A cookie upload without the preflight header could be a cross-site form.
        let r = put_image(&mut saif, id, "image", &picture, &[]).await;
        assert_error(&r, 415, "UNSUPPORTED_MEDIA_TYPE");
        let r = saif.rest("PUT", &format!("/ecanteen/product/{id}/image"), Some(json!({"image": data_uri(&picture)})), &[]).await;
        assert_error(&r, 415, "UNSUPPORTED_MEDIA_TYPE");
        let r = put_image(&mut saif, id, "image", b"MZ\x90\x00 this is not a picture", &PREFLIGHT).await;
        assert!(assert_error(&r, 400, "BAD_REQUEST").contains("image"));
        let r = put_image(&mut saif, id, "photo", &picture, &PREFLIGHT).await;
        assert!(assert_error(&r, 400, "BAD_REQUEST").contains("image"));
        let r = put_image(&mut app.client(), id, "image", &picture, &PREFLIGHT).await;
        assert_error(&r, 401, "UNAUTHENTICATED");
        let mut budi = rest_partner(&app, "budi").await;
        let r = put_image(&mut budi, id, "image", &picture, &PREFLIGHT).await;
        assert_error(&r, 403, "FORBIDDEN");
        let r = put_image(&mut saif, 999_999, "image", &picture, &PREFLIGHT).await;
        assert_error(&r, 404, "NOT_FOUND");
        assert_eq!(fetch(&mut saif, id).await.json()["image"], "");

        // A bearer token needs no preflight header: a form cannot send one.
        let token = saif.rest("POST", "/ecanteen/tokens", Some(json!({"name": "till"})), &[]).await.json();
        let mut till = app.client();
        till.bearer = token["token"].as_str().map(str::to_owned);
        let r = put_image(&mut till, id, "image", &picture, &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }

    async fn product_bodies_take_a_data_uri_a_stored_path_or_nothing(app) {
        let mut saif = rest_partner(&app, "saif").await;
        let picture = png(10, 10, 7);
        let body = |image: serde_json::Value| json!({"name": "Sate", "price": 20000, "quantity": 3, "category": "makanan", "image": image});
        let r = saif.rest("POST", "/ecanteen/product", Some(body(json!(data_uri(&picture)))), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let url = r.json()["image"].as_str().unwrap().to_owned();
        assert_eq!(saif.get(&url).await.body, picture);

        // Reused by path on a second product: one stored picture, two products.
        let r = saif.rest("POST", "/ecanteen/product", Some(body(json!(url))), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let second = id_of(&r.json());
        assert_eq!(r.json()["image"], url);

        // `""` on an update removes it from that product only.
        let r = saif.rest("PUT", &format!("/ecanteen/product/{second}"), Some(json!({"image": ""})), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(fetch(&mut saif, second).await.json()["image"], "");
        assert_eq!(saif.get(&url).await.status, 200);

        for bad in [json!("https://example.com/a.png"), json!("nasi.png"), json!("/images/0000.png"),
                    json!(format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(b"not a picture"))),
                    json!("data:image/png;base64,***"), json!(5)] {
            let r = saif.rest("POST", "/ecanteen/product", Some(body(bad.clone())), &[]).await;
            let message = assert_error(&r, 400, "BAD_REQUEST");
            assert!(message.starts_with("image"), "{bad}: {message}");
        }
        let all = app.client().rest("GET", "/ecanteen/product", None, &[]).await.json();
        assert_eq!(all.as_array().map(Vec::len), Some(2));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pictures_over_the_limit_are_a_413_naming_it() {
    for engine in [Engine::Sqlite, Engine::Postgres] {
        let app = TestApp::with_config(engine, |c| c.picture_max_bytes = 2048).await;
        let mut saif = rest_partner(&app, "saif").await;
        let id = id_of(&create(&mut saif, "Nasi Goreng", 1).await);
        let big = png(200, 200, 3);
        assert!(big.len() > 2048);
        let r = put_image(&mut saif, id, "image", &big, &PREFLIGHT).await;
        assert!(assert_error(&r, 413, "PAYLOAD_TOO_LARGE").contains("2048"));
        let r = saif.rest("POST", "/ecanteen/product",
            Some(json!({"name": "Sate", "price": 1, "quantity": 1, "category": "makanan", "image": data_uri(&big)})), &[]).await;
        assert!(assert_error(&r, 413, "PAYLOAD_TOO_LARGE").contains("2048"));
        assert_eq!(fetch(&mut saif, id).await.json()["image"], "");
    }
}
