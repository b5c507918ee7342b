"""psycopg 3 pipeline mode (libpq pipeline mode) with errors, for tests/it/drivers_pipeline.rs.

In pipeline mode psycopg sends Parse/Bind/Describe/Execute and a Flush when it needs a result,
and a Sync only at the end of the pipeline or at commit. An error therefore arrives in a segment
that no Sync ended; PostgreSQL discards what follows up to the Sync. These scenarios are the
ones psycopg's own test suite checks (tests/test_pipeline.py): an aborted pipeline, errors raised
at commit, an error in a prepared statement. Table `pipe(id int primary key)` exists and is
empty.

Prints one line per fact; the Rust test compares the transcript straight to PostgreSQL and
through pgheal. No READY handshake: the script runs to the end.
"""
import psycopg
from psycopg import errors as e


def fact(label, value):
    print(f"{label}: {value}", flush=True)


def error_name(exc):
    return f"{type(exc).__name__} {exc.sqlstate}"


def aborted_pipeline(conn):
    conn.autocommit = True
    with conn.pipeline() as p:
        c1 = conn.execute("select 1")
        conn.execute("insert into pipe values (1)")
        try:
            conn.execute("select * from doesnotexist").fetchone()
            fact("aborted", "no error")
        except e.UndefinedTable as exc:
            fact("aborted", f"first error {error_name(exc)}")
        try:
            conn.execute("select 'aborted'").fetchone()
            fact("aborted", "ran after the error")
        except e.PipelineAborted:
            fact("aborted", "later statement: PipelineAborted")
        # Sync restores the connection to a usable state.
        p.sync()
        c2 = conn.execute("select 2")
    fact("aborted", f"c1={c1.fetchone()[0]}")
    fact("aborted", f"c2={c2.fetchone()[0]}")


def errors_on_commit(conn):
    conn.autocommit = False
    with conn.pipeline() as p:
        conn.execute("insert into pipe values (2)")
        conn.execute("select 1 from nosuchtable")
        try:
            conn.commit()
            fact("commit", "committed")
        except e.UndefinedTable as exc:
            fact("commit", f"error at commit {error_name(exc)}")
        # commit() raises at the first error result; whether libpq has read the Sync's result
        # by then depends on how the bytes arrived. Drain to the Sync so that the ROLLBACK below
        # is not queued in the aborted part of the pipeline (with PostgreSQL alone, too).
        try:
            p.sync()
        except e.Error:
            pass
        conn.rollback()
        cur1 = conn.execute("select 1")
    cur2 = conn.execute("select 2")
    fact("commit", f"cur1={cur1.fetchone()[0]}")
    fact("commit", f"cur2={cur2.fetchone()[0]}")
    conn.commit()


def error_in_prepare(conn):
    conn.autocommit = True
    with conn.pipeline() as p:
        try:
            conn.execute("select %s::int + no_such_column", [1], prepare=True).fetchone()
            fact("prepare", "no error")
        except e.UndefinedColumn as exc:
            fact("prepare", f"error {error_name(exc)}")
        p.sync()
        conn.execute("insert into pipe values (3)")
        cur = conn.execute("select %s::int + 1", [41], prepare=True)
        p.sync()
        fact("prepare", f"after sync={cur.fetchone()[0]}")
    # Prepared for real this time: run it again outside the pipeline.
    for i in range(3):
        fact("prepare", f"again {i}={conn.execute('select %s::int + 1', [i], prepare=True).fetchone()[0]}")


def many_segments(conn):
    """Several results fetched (Flush) before an error, then more work in the same pipeline."""
    conn.autocommit = True
    with conn.pipeline() as p:
        values = [conn.execute("select %s::int * 10", [i]).fetchone()[0] for i in range(5)]
        fact("segments", f"before={values}")
        try:
            conn.execute("insert into pipe values (3)").fetchone()
            fact("segments", "duplicate accepted")
        except e.UniqueViolation as exc:
            fact("segments", f"error {error_name(exc)}")
        except psycopg.ProgrammingError:
            fact("segments", "no result to fetch")
        for sql in ["select 'skipped 1'", "select 'skipped 2'"]:
            try:
                conn.execute(sql).fetchone()
                fact("segments", "ran after the error")
            except e.PipelineAborted:
                fact("segments", "PipelineAborted")
        p.sync()
        fact("segments", f"after={conn.execute('select 99').fetchone()[0]}")


def main():
    fact("driver", f"psycopg {psycopg.__version__}, libpq {psycopg.pq.version()}")
    with psycopg.connect() as conn:
        for scenario in (aborted_pipeline, errors_on_commit, error_in_prepare, many_segments):
            try:
                scenario(conn)
            except Exception as exc:  # reported, judged by the test
                fact(scenario.__name__, f"unexpected {type(exc).__name__}: {exc}")
        conn.autocommit = True
        rows = conn.execute("select id from pipe order by id").fetchall()
        fact("table", f"ids={[r[0] for r in rows]}")
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
