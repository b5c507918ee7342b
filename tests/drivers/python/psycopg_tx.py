"""psycopg 3 scenario for tests/it/drivers_in_transaction.rs: cached statements inside a transaction.

Connects with the libpq environment (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE) WITHOUT
autocommit (psycopg 3's default: the first statement of a transaction is preceded by BEGIN, a
separate simple query) and prepare_threshold=0, so every statement is prepared server-side on
its first execution and later executions send Bind/Describe P/Execute/Sync for the cached name.

1. one transaction: select id 1 and insert id 3 (both statements get prepared), commit;
2. print READY and wait for "go" on stdin while the test migrates the table;
3. one transaction: select id 1 and insert id 4 with the cached statements, commit.

A statement that fails prints its error and aborts the transaction, which is rolled back (as an
application's `try: ... except: conn.rollback()` would). Prints the transcript described in
tests/it/drivers_in_transaction.rs; the Rust test judges it.
"""
import sys
from decimal import Decimal

import psycopg

SELECT = "SELECT * FROM orders WHERE id = %s"
INSERT = "INSERT INTO orders (id, total, note) VALUES (%s, %s, %s) RETURNING *"


def fmt(v):
    return "NULL" if v is None else str(v)


def type_name(conn, oid):
    info = conn.adapters.types.get(oid)
    return info.name if info else str(oid)


def run(conn, label, sql, params):
    """Runs one statement and prints what the driver decoded; prints and re-raises an error."""
    try:
        cur = conn.execute(sql, params)
        cols = ",".join(f"{d.name}:{type_name(conn, d.type_code)}" for d in cur.description)
        rows = cur.fetchall()
    except psycopg.Error as e:
        diag = e.diag
        print(f"{label}: error={e.sqlstate} {diag.message_primary} routine={diag.source_function}")
        sys.stdout.flush()
        raise
    print(f"{label}: columns={cols}")
    print(f"{label}: rows={len(rows)}")
    for r in rows:
        print(f"{label}: row={'|'.join(fmt(v) for v in r)}")
    sys.stdout.flush()


def transaction(conn, phase, steps):
    try:
        for label, sql, params in steps:
            run(conn, label, sql, params)
        conn.commit()
        print(f"{phase}: committed", flush=True)
    except psycopg.Error as e:
        print(f"info: {phase} raised {type(e).__module__}.{type(e).__name__}")
        conn.rollback()
        print(f"{phase}: rolled back", flush=True)


def main():
    with psycopg.connect(autocommit=False, prepare_threshold=0) as conn:
        print(f"driver: psycopg {psycopg.__version__} (libpq {psycopg.pq.version()})")
        transaction(conn, "before", [
            ("before select 1", SELECT, (1,)),
            ("before insert 3", INSERT, (3, Decimal("30.25"), "third")),
        ])
        print("READY", flush=True)
        if sys.stdin.readline().strip() != "go":
            sys.exit("expected 'go' on stdin")
        transaction(conn, "after", [
            ("after select 1", SELECT, (1,)),
            ("after insert 4", INSERT, (4, Decimal("40.75"), "fourth")),
        ])
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
