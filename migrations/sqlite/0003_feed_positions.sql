-- Feed positions (see migrations/postgres/0003_feed_positions.sql).
--
-- SQLite's writers are serialised, so ids already become visible in commit order: every
-- row's txid stays 0 and a feed position is its id alone. The column and index exist so
-- that both engines have the same schema and the same feed queries.

alter table stock_movements add column txid integer not null default 0;
create index stock_movements_feed_idx on stock_movements (txid, id);

alter table product_events add column txid integer not null default 0;
create index product_events_feed_idx on product_events (txid, id);
