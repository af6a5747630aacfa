-- Pictures, and the product change feed.

-- Pictures, content-addressed: `hash` is the SHA-256 of the original bytes, so identical
-- uploads are stored once and every replica can serve every picture. The thumbnail is
-- made once, at upload.
create table images (
    hash          text    primary key,
    content_type  text    not null,
    ext           text    not null,
    width         integer not null,
    height        integer not null,
    bytes         blob    not null,
    thumb_bytes   blob    not null,
    created_at    integer not null
);

-- A product's picture: image_ref is the hash (null: none), image_ext its file extension,
-- copied so a product's URL needs no join. SQLite cannot add a foreign key to an existing
-- table; its writers are serialised, so the cleanup's "not referenced" check is exact.
alter table products add column image_ext text;

create index products_image_ref_idx on products (image_ref);

-- Product changes (created, updated, deleted), in commit order: the feed that
-- productChanged subscriptions tail, as stock_movements is for stock.
create table product_events (
    id          integer primary key autoincrement,
    product_id  integer not null references products (id),
    owner_id    integer not null references users (id),
    kind        text    not null
        constraint product_events_kind_known check (kind in ('CREATED', 'UPDATED', 'DELETED')),
    version     integer not null,
    created_at  integer not null
);

create index product_events_owner_idx on product_events (owner_id, id);
