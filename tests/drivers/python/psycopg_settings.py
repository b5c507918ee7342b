"""psycopg 3 scenario for tests/it/txn_settings_status.rs: libpq escapes strings for the
standard_conforming_strings it was told about, so that value must be the server's.

Connects with the libpq environment (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE) WITHOUT
autocommit (psycopg 3's default: BEGIN as a simple query, then the statement through the
extended protocol), so the SET happens inside a transaction block that commits.

1. SET standard_conforming_strings = off, commit;
2. print READY and wait for "go" on stdin while the test moves the client's next transaction
   to the other server connection;
3. escape a string with libpq (PQescapeStringConn) and read it back, commit.

Prints the transcript the Rust test compares; lines starting with "driver: " are informational.
"""
import sys

import psycopg
from psycopg import pq

VALUE = "a\\b'c"


def pid(conn):
    p = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    conn.commit()
    return p


conn = psycopg.connect()
conn.execute("SET standard_conforming_strings = off")
conn.commit()
before = pid(conn)
print(f"driver: psycopg {psycopg.__version__}, backend {before}")
print("READY", flush=True)
sys.stdin.readline()

after = pid(conn)
print(f"moved to another server connection: {after != before}")
told = conn.pgconn.parameter_status(b"standard_conforming_strings").decode()
print(f"told standard_conforming_strings={told}")
escaped = pq.Escaping(conn.pgconn).escape_string(VALUE.encode()).decode()
got, server = conn.execute(
    f"SELECT '{escaped}'::text, current_setting('standard_conforming_strings')"
).fetchone()
conn.commit()
print(f"server standard_conforming_strings={server}")
print("round trip: " + ("ok" if got == VALUE else f"sent {escaped!r}, read back {got!r}"))
conn.close()
