-- Texts persisted by anonymous callers are kept apart (issue #33): they have a quota of
-- their own, and an anonymous text only ever pushes out the oldest anonymous one, so no
-- stranger can evict the texts signed-in partners' clients rely on.
alter table persisted_queries add column anonymous boolean not null default false;
create index persisted_queries_anonymous_idx on persisted_queries (anonymous, id);
