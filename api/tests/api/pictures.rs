//! Product pictures: uploads checked by content, stored once, served with caching.

use image::ImageFormat;
use serde_json::{json, Value};

use crate::helpers::pictures::{encode, png, png_claiming};
use crate::helpers::*;

const CREATE: &str = "mutation($i: CreateProductInput!, $image: Upload) {
    createProduct(input: $i, image: $image) { id imageUrl thumbnailUrl version } }";
const SET_IMAGE: &str = "mutation($id: ID!, $image: Upload) {
    setProductImage(productId: $id, image: $image) { id imageUrl thumbnailUrl } }";

fn input(name: &str) -> Value {
    json!({"name": name, "price": 5000, "quantity": 1, "category": "makanan"})
}

fn file(bytes: Vec<u8>, filename: &str) -> UploadFile<'_> {
    UploadFile {
        variable: "image",
        filename,
        content_type: "image/png",
        bytes,
    }
}

async fn create_with(c: &mut Client, name: &str, bytes: Vec<u8>) -> Value {
    let response = c
        .upload(
            CREATE,
            json!({"i": input(name), "image": null}),
            vec![file(bytes, "p.png")],
            true,
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

async fn count(app: &TestApp, table: &str) -> i64 {
    app.state
        .service
        .db()
        .scalar(&Sql::new(format!("select count(*) from {table}")))
        .await
        .unwrap()
}

dual_tests! {
    async fn every_accepted_format_is_stored_served_and_thumbnailed(app) {
        let mut c = app.partner("photographer").await;
        for (format, ext, content_type) in [
            (ImageFormat::Png, "png", "image/png"),
            (ImageFormat::Jpeg, "jpg", "image/jpeg"),
            (ImageFormat::WebP, "webp", "image/webp"),
            (ImageFormat::Gif, "gif", "image/gif"),
        ] {
            let bytes = encode(640, 320, format, 7);
            let r = create_with(&mut c, ext, bytes.clone()).await;
            let product = &r["data"]["createProduct"];
            let url = product["imageUrl"].as_str().unwrap_or_else(|| panic!("{ext}: {r}")).to_owned();
            assert!(url.starts_with("/images/") && url.ends_with(&format!(".{ext}")), "{url}");

            let served = c.get(&url).await;
            assert_eq!(served.status, 200);
            assert_eq!(served.headers["content-type"], content_type);
            assert_eq!(served.headers["cache-control"], "public, max-age=31536000, immutable");
            assert_eq!(served.headers["x-content-type-options"], "nosniff");
            assert_eq!(served.body, bytes, "served byte for byte");
            let etag = served.headers["etag"].to_str().unwrap().to_owned();

            let req = axum::http::Request::get(&url).header("if-none-match", &etag).body(axum::body::Body::empty()).unwrap();
            let cached = c.send(req).await;
            assert_eq!(cached.status, 304);
            assert!(cached.body.is_empty());

            let thumb = c.get(product["thumbnailUrl"].as_str().unwrap()).await;
            assert_eq!(thumb.status, 200);
            assert_eq!(thumb.headers["content-type"], "image/jpeg");
            let decoded = image::load_from_memory(&thumb.body).unwrap();
            assert_eq!((decoded.width(), decoded.height()), (256, 128));
            let req = axum::http::Request::get(product["thumbnailUrl"].as_str().unwrap())
                .header("if-none-match", thumb.headers["etag"].to_str().unwrap())
                .body(axum::body::Body::empty()).unwrap();
            assert_eq!(c.send(req).await.status, 304);
        }
    }

    async fn bad_pictures_are_refused_cleanly_and_nothing_is_written(app) {
        let mut c = app.partner("prankster").await;
        let mut truncated = png(300, 300, 3);
        truncated.truncate(truncated.len() / 2);
        let mut exe = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff".to_vec();
        exe.extend(vec![0u8; 2048]);
        let svg = br#"<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><script>alert(1)</script></svg>"#.to_vec();
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("truncated", truncated, "could not be decoded"),
            ("renamed exe", exe, "is not a JPEG, PNG, WebP or GIF"),
            ("svg", svg, "is not a JPEG, PNG, WebP or GIF"),
            ("too wide", png(4097, 2, 1), "4096 pixels"),
            ("bomb", png_claiming(100_000, 100_000), "4096 pixels"),
            ("empty", Vec::new(), "empty"),
        ];
        for (what, bytes, message) in cases {
            let response = c
                .upload(CREATE, json!({"i": input(what), "image": null}), vec![file(bytes, "cute.png")], true)
                .await;
            let body = response.json();
            assert_eq!(first_code(&body).as_deref(), Some("BAD_USER_INPUT"), "{what}: {body}");
            assert_eq!(body["errors"][0]["extensions"]["field"], "image", "{what}");
            let text = body["errors"][0]["message"].as_str().unwrap();
            assert!(text.contains(message), "{what}: {text}");
        }
        assert_eq!(count(&app, "products").await, 0);
        assert_eq!(count(&app, "images").await, 0);
    }

    async fn identical_pictures_are_stored_once_and_shared_safely(app) {
        let mut c = app.partner("sharer").await;
        let picture = png(64, 64, 9);
        let a = create_with(&mut c, "A", picture.clone()).await["data"]["createProduct"].clone();
        let b = create_with(&mut c, "B", picture.clone()).await["data"]["createProduct"].clone();
        assert_eq!(a["imageUrl"], b["imageUrl"]);
        assert_eq!(count(&app, "images").await, 1, "kept once");
        let shared_url = a["imageUrl"].as_str().unwrap().to_owned();

        // Replacing A's picture leaves B's in place.
        let response = c
            .upload(SET_IMAGE, json!({"id": a["id"], "image": null}), vec![file(png(32, 32, 1), "new.png")], true)
            .await;
        let replaced = response.json()["data"]["setProductImage"].clone();
        assert_ne!(replaced["imageUrl"], a["imageUrl"]);
        assert_eq!(c.get(&shared_url).await.status, 200, "B's picture still served");
        assert_eq!(count(&app, "images").await, 2);

        // Deleting B releases the shared picture, now used by nobody: it is removed.
        c.ok("mutation($id: ID!) { deleteProduct(id: $id) { id } }", json!({"id": b["id"]})).await;
        assert_eq!(c.get(&shared_url).await.status, 404);
        assert_eq!(count(&app, "images").await, 1);

        // Removing A's picture (image: null) leaves no picture at all.
        let removed = c.ok(SET_IMAGE, json!({"id": a["id"], "image": null})).await;
        assert_eq!(removed["setProductImage"]["imageUrl"], json!(null));
        assert_eq!(removed["setProductImage"]["thumbnailUrl"], json!(null));
        assert_eq!(count(&app, "images").await, 0);
    }

    async fn update_product_can_replace_the_picture(app) {
        let mut c = app.partner("updater").await;
        let p = create_with(&mut c, "P", png(20, 20, 2)).await["data"]["createProduct"].clone();
        let old = p["imageUrl"].as_str().unwrap().to_owned();
        let response = c
            .upload(
                "mutation($id: ID!, $image: Upload) { updateProduct(id: $id, input: {price: 7000}, image: $image) { price imageUrl } }",
                json!({"id": p["id"], "image": null}),
                vec![file(png(21, 21, 2), "q.png")],
                true,
            )
            .await;
        let updated = response.json()["data"]["updateProduct"].clone();
        assert_eq!(updated["price"], 7000);
        assert_ne!(updated["imageUrl"].as_str().unwrap(), old);
        assert_eq!(c.get(&old).await.status, 404, "the unreferenced picture was cleaned up");
    }

    async fn another_partner_cannot_change_a_picture(app) {
        let mut owner = app.partner("pic_owner").await;
        let mut other = app.partner("pic_other").await;
        let p = create_with(&mut owner, "Mine", png(10, 10, 4)).await["data"]["createProduct"].clone();
        let response = other
            .upload(SET_IMAGE, json!({"id": p["id"], "image": null}), vec![file(png(10, 10, 5), "x.png")], true)
            .await;
        assert_eq!(first_code(&response.json()).as_deref(), Some("FORBIDDEN"));
        assert_eq!(other.err_code(SET_IMAGE, json!({"id": p["id"], "image": null})).await, "FORBIDDEN");
        assert_eq!(count(&app, "images").await, 1);
    }
}

#[tokio::test]
async fn cookie_uploads_need_a_preflight_header_but_token_uploads_do_not() {
    let app = TestApp::new(Engine::Sqlite).await;
    let mut c = app.partner("uploader").await;
    let response = c
        .upload(
            CREATE,
            json!({"i": input("x"), "image": null}),
            vec![file(png(8, 8, 1), "a.png")],
            false,
        )
        .await;
    assert_eq!(response.status, 415);
    assert!(response.text().contains("X-Requested-With"));
    assert_eq!(count(&app, "products").await, 0);

    let token = c.api_token("cam").await;
    let mut bot = app.client();
    bot.bearer = Some(token);
    let response = bot
        .upload(
            CREATE,
            json!({"i": input("x"), "image": null}),
            vec![file(png(8, 8, 1), "a.png")],
            false,
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(response.json()["data"]["createProduct"]["imageUrl"].is_string());
}

#[tokio::test]
async fn size_and_file_count_limits_name_the_limit() {
    let app = TestApp::with_config(Engine::Sqlite, |c| {
        c.picture_max_bytes = 2048;
        c.max_files = 1;
    })
    .await;
    let mut c = app.partner("heavy").await;
    let big = png(200, 200, 3);
    assert!(big.len() > 2048);
    let response = c
        .upload(
            CREATE,
            json!({"i": input("x"), "image": null}),
            vec![file(big, "big.png")],
            true,
        )
        .await;
    assert_eq!(response.status, 413, "{}", response.text());
    assert!(
        response.text().contains("2048 bytes"),
        "{}",
        response.text()
    );

    let two = vec![file(png(4, 4, 1), "a.png"), file(png(4, 4, 2), "b.png")];
    let response = c
        .upload(CREATE, json!({"i": input("x"), "image": null}), two, true)
        .await;
    assert!(
        response.status == 400 || response.status == 413,
        "{}",
        response.status
    );
    assert_eq!(count(&app, "products").await, 0);
    assert_eq!(count(&app, "images").await, 0);
}

#[tokio::test]
async fn unknown_pictures_are_json_404s() {
    let app = TestApp::new(Engine::Sqlite).await;
    let mut c = app.client();
    for url in [
        format!("/images/{}.png", "a".repeat(64)),
        format!("/images/{}/thumb.jpg", "b".repeat(64)),
        "/images/../../etc/passwd".to_owned(),
        format!("/images/{}.exe", "a".repeat(64)),
    ] {
        let response = c.get(&url).await;
        assert_eq!(response.status, 404, "{url}");
    }
}

#[tokio::test]
async fn a_field_takes_exactly_one_file() {
    let app = TestApp::new(Engine::Sqlite).await;
    let mut c = app.partner("doubler").await;
    let two = vec![file(png(4, 4, 1), "a.png"), file(png(4, 4, 2), "b.png")];
    let response = c
        .upload(CREATE, json!({"i": input("x"), "image": null}), two, true)
        .await;
    assert_eq!(response.status, 400);
    assert!(response.text().contains("one file"), "{}", response.text());
    assert_eq!(count(&app, "products").await, 0);
}

dual_tests! {
    async fn a_partners_pictures_stay_within_the_quota(app) {
        let app = TestApp::on(app.db.clone(), |c| c.picture_quota_mib = 1).await;
        let mut c = app.partner("kolektor").await;
        // Noise pictures of about 400 KB: two fit in 1 MiB, three do not.
        let pictures: Vec<Vec<u8>> = (1..=4).map(|seed| png(330, 330, seed)).collect();
        let size = pictures[0].len();
        assert!(2 * size < 1024 * 1024 && 3 * size > 1024 * 1024, "{size} bytes a picture");

        let first = create_with(&mut c, "satu", pictures[0].clone()).await;
        let second = create_with(&mut c, "dua", pictures[1].clone()).await;
        assert!(first.get("errors").is_none() && second.get("errors").is_none(), "{first} {second}");
        let third = create_with(&mut c, "tiga", pictures[2].clone()).await;
        assert_eq!(first_code(&third).as_deref(), Some("BAD_USER_INPUT"), "{third}");
        assert_eq!(third["errors"][0]["extensions"]["field"], "image");
        let message = third["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains("over your quota of 1 MiB"), "{message}");
        assert_eq!(count(&app, "images").await, 2, "nothing of the refused picture was stored");

        // Replacing a picture counts the new one instead of the old one.
        let replaced = c
            .upload(SET_IMAGE, json!({"id": second["data"]["createProduct"]["id"], "image": null}),
                vec![file(pictures[2].clone(), "tiga.png")], true)
            .await
            .json();
        assert!(replaced.get("errors").is_none(), "{replaced}");
        // The same picture on another product is stored once, and counted once.
        let again = create_with(&mut c, "satu lagi", pictures[0].clone()).await;
        assert!(again.get("errors").is_none(), "{again}");

        // Another partner has a quota of their own.
        let mut other = app.partner("tetangga").await;
        let theirs = create_with(&mut other, "milik", pictures[3].clone()).await;
        assert!(theirs.get("errors").is_none(), "{theirs}");
    }
}

/// `on_constraint` turns the named constraint's refusal into what the call site says it
/// means (a product write that met a picture's cleanup is `Raced`, and tried again),
/// and leaves any other failure as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_constraint_refusal_means_what_the_call_site_says() {
    use ecanteen_api::error::{OnConstraint as _, ServiceError};
    let app = TestApp::new(Engine::Postgres).await;
    let mut c = app.partner("constrained").await;
    let id: i64 = c.create_product("Kue Lapis", 1).await.parse().unwrap();
    let db = app.state.service.db();
    let dangling = Sql::new("update products set image_ref = 'removed' where id = $1").arg(id);
    let raced = db
        .execute(&dangling)
        .await
        .on_constraint("products_image_ref_fkey", || ServiceError::Raced("removed"));
    assert!(matches!(raced, Err(ServiceError::Raced(_))), "{raced:?}");
    let other = db
        .execute(&dangling)
        .await
        .on_constraint("another_constraint", || ServiceError::Raced("removed"));
    assert!(matches!(other, Err(ServiceError::Internal(_))), "{other:?}");
}
