//! `schema.graphql` is the exported SDL; this test fails when code and file differ.
//! Regenerate with `UPDATE_SCHEMA=1 cargo test -p ecanteen-api --test api schema`.

#[test]
fn checked_in_schema_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../schema.graphql");
    let sdl = ecanteen_api::graphql::sdl();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(path, &sdl).expect("write schema.graphql");
    }
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        checked_in == sdl,
        "schema.graphql is out of date; run UPDATE_SCHEMA=1 cargo test -p ecanteen-api --test api schema"
    );
}
