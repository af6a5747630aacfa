//! What the criterion benches in `benches/` share: a replica's state (service and
//! GraphQL schema, no sockets) on a fresh database, with one partner and some products.
//!
//! SQLite is a file in a temporary directory. PostgreSQL is the database
//! `ecanteen_bench`, dropped and created again on the server of
//! `ECANTEEN_BENCH_POSTGRES_URL` (default: the local server, as the tests use).
//!
//! Run them with `cargo bench -p ecanteen-benches`; results are in `docs/BENCHMARKS.md`.

use anyhow::Context as _;
use ecanteen_api::config::Config;
use ecanteen_api::domain::{Category, Description, Price, ProductName, Quantity};
use ecanteen_api::http::AppState;
use ecanteen_api::service::{Actor, AuthMethod, NewProduct, Product};
use ecanteen_api::startup::build_state;
use sqlx::Connection as _;

pub const PASSWORD: &str = "bench-password-1";
const PG_DATABASE: &str = "ecanteen_bench";

/// Which database a fixture runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// A replica's state on a fresh database, one partner, and the partner's products.
pub struct Fixture {
    pub state: AppState,
    pub actor: Actor,
    pub products: Vec<Product>,
    _dir: Option<tempfile::TempDir>,
}

impl Fixture {
    /// A fresh database with one partner owning `products` products (stock 1,000 each).
    pub async fn new(engine: Engine, products: usize) -> anyhow::Result<Self> {
        let (url, dir) = match engine {
            Engine::Sqlite => {
                let dir = tempfile::tempdir()?;
                let url = format!("sqlite://{}", dir.path().join("bench.db").display());
                (url, Some(dir))
            }
            Engine::Postgres => (fresh_postgres().await?, None),
        };
        let mut config = Config::defaults();
        config.database_url = url;
        let state = build_state(&config).await?;
        let user = state
            .service
            .register("bencher", PASSWORD, None)
            .await
            .context("register")?;
        let actor = Actor {
            user_id: user.id,
            method: AuthMethod::Session,
        };
        let mut created = Vec::with_capacity(products);
        for n in 0..products {
            let product = state
                .service
                .create_product(&actor, new_product(n)?, None)
                .await
                .context("create a product")?;
            created.push(product);
        }
        Ok(Self {
            state,
            actor,
            products: created,
            _dir: dir,
        })
    }
}

/// A fixture with `products` products on each engine that can be reached; an engine
/// that cannot (no PostgreSQL server, say) is reported and left out.
pub fn fixtures(rt: &tokio::runtime::Runtime, products: usize) -> Vec<(Engine, Fixture)> {
    [Engine::Sqlite, Engine::Postgres]
        .into_iter()
        .filter_map(|engine| match rt.block_on(Fixture::new(engine, products)) {
            Ok(fixture) => Some((engine, fixture)),
            Err(err) => {
                eprintln!("skipped on {}: {err:#}", engine.name());
                None
            }
        })
        .collect()
}

/// The `n`th product of a fixture: a plausible canteen item.
pub fn new_product(n: usize) -> anyhow::Result<NewProduct> {
    Ok(NewProduct {
        name: ProductName::parse("name", &format!("Nasi goreng {n}"))?,
        description: Description::parse("description", "Fried rice with egg and chicken")?,
        price: Price::parse("price", 15_000 + (n as i64 % 10) * 1_000)?,
        quantity: Quantity::parse("quantity", 1_000)?,
        category: Category::parse("category", if n % 2 == 0 { "makanan" } else { "minuman" })?,
        low_stock_threshold: None,
        picture: None,
    })
}

/// Drops and creates the bench database; answers its URL.
async fn fresh_postgres() -> anyhow::Result<String> {
    let admin = std::env::var("ECANTEEN_BENCH_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .with_context(|| format!("cannot reach PostgreSQL at {admin}"))?;
    sqlx::query(&format!(
        "drop database if exists {PG_DATABASE} with (force)"
    ))
    .execute(&mut conn)
    .await?;
    sqlx::query(&format!("create database {PG_DATABASE}"))
        .execute(&mut conn)
        .await?;
    let base = admin
        .rsplit_once('/')
        .map_or(admin.as_str(), |(base, _)| base);
    Ok(format!("{base}/{PG_DATABASE}"))
}
