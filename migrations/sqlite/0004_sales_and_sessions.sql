-- Sales report and password change (see migrations/postgres/0004_sales_and_sessions.sql).

-- The product's unit price, in rupiah, when the change was made: a later price change
-- does not rewrite what was sold. Rows written before this migration have none, and the
-- report counts their units as unpriced.
alter table stock_movements add column unit_price integer
    constraint stock_movements_unit_price_range check (unit_price between 0 and 1000000000);

-- The sales report reads a partner's products' ledgers by time; the index holds every
-- column it needs, so a month of a busy stall is read from the index alone.
create index stock_movements_report_idx
    on stock_movements (product_id, created_at, reason, delta, unit_price);

-- Which partner each stored session belongs to. The session store keeps its data as an
-- opaque blob, so the sessions of a partner could not be found without this; a password
-- change ends them in the same transaction that changes the hash.
create table partner_sessions (
    session_id text    primary key,
    user_id    integer not null references users (id),
    expires_at integer not null
);

create index partner_sessions_user_idx on partner_sessions (user_id);
