"""psycopg 3's own prepared-statement scenarios around a type that is dropped and created again
inside one transaction (tests/test_prepared.py: test_change_type, test_change_type_execute,
test_change_type_executemany), for tests/it/txn_change_type.rs.

With prepare_threshold=0 every statement is prepared. After `DROP ...` psycopg sends
`DEALLOCATE ALL` and prepares the INSERT again with a fresh Parse; straight to PostgreSQL the
fresh Parse resolves the new type. Prints one line per fact; the Rust test compares the
transcript straight to PostgreSQL and through pgheal.
"""
import psycopg

INSERT = "INSERT INTO preptable (bar) VALUES (%(enum_col)s::prepenum[])"


def fact(label, value):
    print(f"{label}: {value}", flush=True)


def attempt(label, fn):
    try:
        fact(label, fn())
    except psycopg.Error as exc:
        fact(label, f"error {exc.sqlstate} {type(exc).__name__}")


def change_type(conn):
    conn.prepare_threshold = 0
    conn.execute("CREATE TYPE prepenum AS ENUM ('foo', 'bar', 'baz')")
    conn.execute("CREATE TABLE preptable(id integer, bar prepenum[])")
    attempt("change_type first", lambda: conn.cursor().execute(INSERT, {"enum_col": ["foo"]}).rowcount)
    conn.execute("DROP TABLE preptable")
    conn.execute("DROP TYPE prepenum")
    conn.execute("CREATE TYPE prepenum AS ENUM ('foo', 'bar', 'baz')")
    conn.execute("CREATE TABLE preptable(id integer, bar prepenum[])")
    attempt("change_type second", lambda: conn.cursor().execute(INSERT, {"enum_col": ["foo"]}).rowcount)
    attempt("change_type rows", lambda: conn.execute("SELECT bar::text FROM preptable").fetchall())
    conn.rollback()


def change_type_execute(conn):
    conn.prepare_threshold = 0
    for i in range(3):
        conn.execute("CREATE TYPE prepenum AS ENUM ('foo', 'bar', 'baz')")
        conn.execute("CREATE TABLE preptable(id integer, bar prepenum[])")
        attempt(f"execute {i}", lambda: conn.cursor().execute(INSERT, {"enum_col": ["foo"]}).rowcount)
        conn.rollback()


def change_type_executemany(conn):
    for i in range(3):
        conn.execute("CREATE TYPE prepenum AS ENUM ('foo', 'bar', 'baz')")
        conn.execute("CREATE TABLE preptable(id integer, bar prepenum[])")
        attempt(
            f"executemany {i}",
            lambda: conn.cursor().executemany(INSERT, [{"enum_col": ["foo"]}, {"enum_col": ["foo", "bar"]}]),
        )
        attempt(f"executemany {i} rows", lambda: conn.execute("SELECT count(*) FROM preptable").fetchone()[0])
        conn.rollback()


def main():
    fact("driver", f"psycopg {psycopg.__version__}")
    with psycopg.connect() as conn:
        for scenario in (change_type, change_type_execute, change_type_executemany):
            try:
                scenario(conn)
            except Exception as exc:  # reported, judged by the test
                fact(scenario.__name__, f"unexpected {type(exc).__name__}: {exc}")
                conn.rollback()
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
