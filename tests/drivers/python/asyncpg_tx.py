"""asyncpg scenario for tests/it/drivers_in_transaction.rs: prepared statements inside
`async with conn.transaction()`.

Connects with the libpq environment (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE) and uses
explicit prepared statements (conn.prepare(), made outside any transaction): asyncpg decodes
their rows (binary) with the description it got at prepare time and never retries them; inside
a transaction it could not anyway.

1. `async with conn.transaction()`: select id 1 and insert id 3, commit;
2. print READY and wait for "go" on stdin while the test migrates the table;
3. `async with conn.transaction()`: select id 1 and insert id 4, commit.

A statement that fails prints its error; the exception leaves the `async with` block, which
rolls the transaction back. Prints the transcript described in tests/it/drivers_in_transaction.rs;
the Rust test judges it.
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
    """Runs one statement and prints what the driver decoded; prints and re-raises an error."""
    try:
        rows = await stmt.fetch(*args)
    except asyncpg.PostgresError as e:
        print(
            f"{label}: error={e.sqlstate} {e.message} "
            f"routine={getattr(e, 'server_source_function', None)}"
        )
        sys.stdout.flush()
        raise
    cols = ",".join(f"{a.name}:{a.type.name}" for a in stmt.get_attributes())
    print(f"{label}: columns={cols}")
    print(f"{label}: rows={len(rows)}")
    for r in rows:
        print(f"{label}: row={'|'.join(fmt(v) for v in r.values())}")
    sys.stdout.flush()


async def transaction(conn, phase, steps):
    try:
        async with conn.transaction():
            for label, stmt, args in steps:
                await run(stmt, label, *args)
        print(f"{phase}: committed", flush=True)
    except asyncpg.PostgresError as e:
        print(f"info: {phase} raised {type(e).__module__}.{type(e).__name__}")
        print(f"{phase}: rolled back", flush=True)


async def main():
    conn = await asyncpg.connect(ssl=False)
    try:
        print(f"driver: asyncpg {asyncpg.__version__}")
        select = await conn.prepare(SELECT)
        insert = await conn.prepare(INSERT)
        await transaction(conn, "before", [
            ("before select 1", select, (1,)),
            ("before insert 3", insert, (3, Decimal("30.25"), "third")),
        ])
        print("READY", flush=True)
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        if line.strip() != "go":
            sys.exit("expected 'go' on stdin")
        await transaction(conn, "after", [
            ("after select 1", select, (1,)),
            ("after insert 4", insert, (4, Decimal("40.75"), "fourth")),
        ])
    finally:
        await conn.close()
    print("DONE", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
