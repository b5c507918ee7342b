"""asyncpg driver scenario for tests/it/drivers_heal.rs.

Connects with the libpq environment (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE) and uses
explicit prepared statements (conn.prepare()): asyncpg never retries those on "cached plan must
not change result type" and decodes rows (binary) with the description it got at prepare time.

Prints a transcript (see tests/it/drivers_heal.rs for the format), then "READY" and waits for a
line "go" on stdin while the test migrates the table straight on the server, then runs the
prepared statements again and reports rows or the error. The Rust test judges the transcript.
"""
import asyncio
import sys
from decimal import Decimal

import asyncpg

SELECT = "SELECT * FROM orders WHERE id = $1"
INSERT = "INSERT INTO orders (id, total, note) VALUES ($1, $2, $3) RETURNING *"


def fmt(v):
    return "NULL" if v is None else str(v)


async def run(stmt, label, *args):
    try:
        rows = await stmt.fetch(*args)
        cols = ",".join(f"{a.name}:{a.type.name}" for a in stmt.get_attributes())
        print(f"{label}: columns={cols}")
        print(f"{label}: rows={len(rows)}")
        for r in rows:
            print(f"{label}: row={'|'.join(fmt(v) for v in r.values())}")
    except asyncpg.PostgresError as e:
        print(
            f"{label}: error={e.sqlstate} {e.message} "
            f"routine={getattr(e, 'server_source_function', None)}"
        )
    sys.stdout.flush()


async def main():
    conn = await asyncpg.connect(ssl=False)
    try:
        print(f"driver: asyncpg {asyncpg.__version__}")
        select = await conn.prepare(SELECT)
        insert = await conn.prepare(INSERT)
        await run(select, "before select 1", 1)
        await run(insert, "before insert 3", 3, Decimal("30.25"), "third")
        print("READY", flush=True)
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        if line.strip() != "go":
            sys.exit("expected 'go' on stdin")
        await run(select, "after select 1", 1)
        await run(select, "after select 2", 2)
        await run(insert, "after insert 4", 4, Decimal("40.75"), "fourth")
    finally:
        await conn.close()
    print("DONE", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
