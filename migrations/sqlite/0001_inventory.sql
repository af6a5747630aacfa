-- e-canteen inventory schema, SQLite flavour.
--
-- Rules for this folder:
-- * never edit a migration that has been applied anywhere; add a new one;
-- * keep migrations/postgres in step: the same tables, columns and constraint names;
-- * times are integer milliseconds since the Unix epoch (UTC), so both engines sort and
--   compare them the same way and the Rust code reads one type;
-- * money is an integer number of rupiah, never a float.

-- Partners. Usernames are stored lower-case: the service normalises them, and the
-- unique constraint is therefore case-insensitive by construction.
create table users (
    id            integer primary key autoincrement,
    username      text    not null constraint users_username_key unique,
    password_hash text    not null,
    created_at    integer not null
);

-- Products. A deleted product keeps its row (deleted_at is set) so that its stock history
-- stays readable and the ledger's foreign key stays valid.
create table products (
    id                  integer primary key autoincrement,
    owner_id            integer not null references users (id),
    name                text    not null,
    -- lower-cased name: the sort and search key, identical on both engines
    name_key            text    not null,
    description         text    not null default '',
    price               integer not null
        constraint products_price_range check (price between 0 and 1000000000),
    quantity            integer not null
        constraint products_quantity_non_negative check (quantity >= 0),
    category            text    not null,
    low_stock_threshold integer
        constraint products_low_stock_threshold_non_negative check (low_stock_threshold >= 0),
    -- filled in by the pictures feature; null means "no picture"
    image_ref           text,
    -- bumped by every change to the row, stock included: the optimistic-lock token
    version             integer not null default 1,
    created_at          integer not null,
    updated_at          integer not null,
    deleted_at          integer
);

create index products_owner_idx on products (owner_id, id);
create index products_name_idx on products (name_key, id);
create index products_category_idx on products (category, id);

-- The stock ledger: one row per change, never updated or deleted (triggers below).
-- It is both the audit history and the event log that replicas tail for live updates.
create table stock_movements (
    id              integer primary key autoincrement,
    product_id      integer not null references products (id),
    actor_id        integer not null references users (id),
    delta           integer not null,
    quantity_after  integer not null
        constraint stock_movements_quantity_after_non_negative check (quantity_after >= 0),
    reason          text    not null
        constraint stock_movements_reason_known
        check (reason in ('RESTOCK', 'SALE', 'WASTE', 'CORRECTION', 'COUNT', 'OTHER')),
    note            text,
    idempotency_key text,
    created_at      integer not null
);

create index stock_movements_product_idx on stock_movements (product_id, id);

create trigger stock_movements_no_update before update on stock_movements
begin
    select raise(abort, 'stock_movements is append-only');
end;

create trigger stock_movements_no_delete before delete on stock_movements
begin
    select raise(abort, 'stock_movements is append-only');
end;

-- API tokens for integrators. Only the SHA-256 of the secret is stored; the secret is
-- shown once, at creation.
create table api_tokens (
    id           integer primary key autoincrement,
    user_id      integer not null references users (id),
    name         text    not null,
    token_hash   text    not null constraint api_tokens_token_hash_key unique,
    created_at   integer not null,
    last_used_at integer,
    revoked_at   integer
);

create index api_tokens_user_idx on api_tokens (user_id, id);

-- Failed logins, per (normalised) username, so throttling holds across replicas.
create table login_failures (
    id        integer primary key autoincrement,
    username  text    not null,
    failed_at integer not null
);

create index login_failures_username_idx on login_failures (username, failed_at);

-- Idempotency records: a retried write with the same key returns the first result.
-- Keys are unique per partner; request_hash detects a key reused for another payload.
create table idempotency_keys (
    user_id      integer not null references users (id),
    key          text    not null,
    operation    text    not null,
    request_hash text    not null,
    response     text    not null,
    created_at   integer not null,
    constraint idempotency_keys_pkey primary key (user_id, key)
);
