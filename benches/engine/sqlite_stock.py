"""The SQLite ceiling: one writer committing stock changes as fast as SQLite can.

Each change is the service's transaction shape: BEGIN IMMEDIATE; the guarded update with
RETURNING; the ledger row; the idempotency record; COMMIT. WAL, synchronous=NORMAL, on a
fresh file migrated with migrations/sqlite. Run by benches/engine/ceiling.sh; prints
`sqlite <changes> changes in <s> s: <n> changes/s`.
"""

import pathlib
import random
import sqlite3
import sys
import tempfile
import time

root = pathlib.Path(__file__).resolve().parents[2]
seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0

with tempfile.TemporaryDirectory() as work:
    db = sqlite3.connect(pathlib.Path(work) / "ceiling.db", isolation_level=None)
    db.execute("pragma journal_mode = wal")
    db.execute("pragma synchronous = normal")
    db.execute("pragma foreign_keys = on")
    for migration in sorted((root / "migrations" / "sqlite").glob("*.sql")):
        db.executescript(migration.read_text())
    db.execute("insert into users (username, password_hash, created_at) values ('bench', '', 0)")
    for i in range(64):
        db.execute(
            "insert into products (owner_id, name, name_key, price, quantity, category, created_at, updated_at)"
            " values (1, ?, ?, 1000, 1000000, 'makanan', 0, 0)",
            (f"p{i}", f"p{i}"),
        )
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for _ in range(100):
            n += 1
            product = random.randint(1, 64)
            delta = random.choice((-1, 1))
            key = f"k-{n}"
            db.execute("begin immediate")
            (quantity,) = db.execute(
                "update products set quantity = quantity + ?, version = version + 1, updated_at = 0"
                " where id = ? and deleted_at is null and quantity + ? >= 0 returning quantity",
                (delta, product, delta),
            ).fetchone()
            db.execute(
                "insert into stock_movements (product_id, actor_id, delta, quantity_after, reason,"
                " idempotency_key, created_at) values (?, 1, ?, ?, 'SALE', ?, 0) returning id",
                (product, delta, quantity, key),
            ).fetchone()
            db.execute(
                "insert into idempotency_keys (user_id, key, operation, request_hash, response,"
                " created_at) values (1, ?, 'adjustStock', '', '{}', 0)",
                (key,),
            )
            db.execute("commit")
    elapsed = time.perf_counter() - start
    print(f"sqlite {n} changes in {elapsed:.1f} s: {n / elapsed:.0f} changes/s")
