-- Pictures, and the product change feed.

-- Pictures, content-addressed: `hash` is the SHA-256 of the original bytes, so identical
-- uploads are stored once and every replica can serve every picture. The thumbnail is
-- made once, at upload.
create table images (
    hash          text   primary key,
    content_type  text   not null,
    ext           text   not null,
    width         bigint not null,
    height        bigint not null,
    bytes         bytea  not null,
    thumb_bytes   bytea  not null,
    created_at    bigint not null
);

-- A product's picture: image_ref is the hash (null: none), image_ext its file extension,
-- copied so a product's URL needs no join. The foreign key makes a dangling picture
-- impossible: a cleanup racing a new reference fails instead of deleting it.
alter table products add column image_ext text;
alter table products
    add constraint products_image_ref_fkey foreign key (image_ref) references images (hash);

create index products_image_ref_idx on products (image_ref);

-- Product changes (created, updated, deleted), in commit order: the feed that
-- productChanged subscriptions tail, as stock_movements is for stock.
create table product_events (
    id          bigint generated always as identity primary key,
    product_id  bigint not null references products (id),
    owner_id    bigint not null references users (id),
    kind        text   not null
        constraint product_events_kind_known check (kind in ('CREATED', 'UPDATED', 'DELETED')),
    version     bigint not null,
    created_at  bigint not null
);

create index product_events_owner_idx on product_events (owner_id, id);
