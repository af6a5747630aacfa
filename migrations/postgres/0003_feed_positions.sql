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

-- The horizon of the calling statement's snapshot: the oldest transaction that was
-- still running when the snapshot was taken, leaving out those known to run in another
-- database of the cluster (they cannot write to our tables), or the snapshot's xmax
-- when none is left. `stable`, so that it sees the snapshot of the statement that
-- calls it.
--
-- A transaction of the snapshot's running list that has ended by the time
-- pg_stat_activity is read is not found there, and counts as ours: the horizon is then
-- lower than it could be, never higher. pg_stat_activity shows 32-bit xids; the running
-- list spans far less than 2^32 of them, so the low 32 bits name one transaction.
create function ecanteen_feed_horizon() returns bigint
language sql stable as $$
    select coalesce(
        (select min(cast(cast(x as text) as bigint))
         from pg_snapshot_xip(pg_current_snapshot()) as x
         where cast(cast(x as text) as bigint) % 4294967296 not in (
             select cast(cast(a.backend_xid as text) as bigint)
             from pg_stat_get_activity(null) as a
             where a.backend_xid is not null
               and a.datid <> (select oid from pg_database where datname = current_database()))),
        cast(cast(pg_snapshot_xmax(pg_current_snapshot()) as text) as bigint))
$$;
