-- Automatic persisted queries (Apollo's APQ protocol): the text of each query a client
-- has sent with its SHA-256, so that any replica answers the hash alone once one of them
-- learned it. Bounded: service::persisted_queries keeps at most a fixed number of rows,
-- dropping the oldest (lowest id), and never stores a text longer than its limit.
create table persisted_queries (
    id         integer primary key autoincrement,
    sha256     text    not null constraint persisted_queries_sha256_key unique,
    query      text    not null,
    created_at integer not null
);
