"""psycopg 3 driver scenario for tests/it/drivers_heal.rs.

Connects with the libpq environment (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE), in
autocommit with prepare_threshold=0, so every statement is prepared server-side on its first
execution and later executions send Bind/Describe/Execute/Sync for the cached name.

Prints a transcript (see tests/it/drivers_heal.rs for the format), then "READY" and waits for a
line "go" on stdin while the test migrates the table straight on the server, then runs the
cached statements again and reports rows or the error. The Rust test judges the transcript.
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
    try:
        cur = conn.execute(sql, params)
        cols = ",".join(f"{d.name}:{type_name(conn, d.type_code)}" for d in cur.description)
        rows = cur.fetchall()
        print(f"{label}: columns={cols}")
        print(f"{label}: rows={len(rows)}")
        for r in rows:
            print(f"{label}: row={'|'.join(fmt(v) for v in r)}")
    except psycopg.Error as e:
        diag = e.diag
        print(f"{label}: error={e.sqlstate} {diag.message_primary} routine={diag.source_function}")
    sys.stdout.flush()


def main():
    with psycopg.connect(autocommit=True, prepare_threshold=0) as conn:
        print(f"driver: psycopg {psycopg.__version__} (libpq {psycopg.pq.version()})")
        run(conn, "before select 1", SELECT, (1,))
        run(conn, "before insert 3", INSERT, (3, Decimal("30.25"), "third"))
        print("READY", flush=True)
        if sys.stdin.readline().strip() != "go":
            sys.exit("expected 'go' on stdin")
        run(conn, "after select 1", SELECT, (1,))
        run(conn, "after select 2", SELECT, (2,))
        run(conn, "after insert 4", INSERT, (4, Decimal("40.75"), "fourth"))
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
