-- Feed positions: the change feeds are tailed without a global lock.
--
-- Ids come from sequences at insert time, so two writers can commit ids 11 then 10,
-- and a tailer reading "after id 11" would never see 10. Until now every writer took
-- one advisory lock before appending, so ids became visible in commit order, and all
-- writers on all replicas ran one at a time through their commit.
--
-- Now each feed row records the transaction that wrote it (`txid`, its 64-bit
-- `pg_current_xact_id()`), and a tailer reads in (txid, id) order only the rows of
-- transactions older than the oldest one still running
-- (`pg_snapshot_xmin(pg_current_snapshot())`): those are final, committed or gone, and
-- no row can appear before them later. See `service::feed`.
--
-- Rows written before this migration keep txid 0: they come first, in id order, as
-- before. The default is set after the column is added, so existing rows are not
-- rewritten.

alter table stock_movements add column txid bigint not null default 0;
alter table stock_movements alter column txid set default (pg_current_xact_id()::text::bigint);
create index stock_movements_feed_idx on stock_movements (txid, id);

alter table product_events add column txid bigint not null default 0;
alter table product_events alter column txid set default (pg_current_xact_id()::text::bigint);
create index product_events_feed_idx on product_events (txid, id);
