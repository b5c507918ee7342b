// pgjdbc scenario for tests/it/drivers_in_transaction.rs: cached statements inside a transaction.
// Run as a single-file program:
//   java -cp /usr/share/java/postgresql.jar tests/drivers/java/PgjdbcTx.java
//
// Connects to PGHOST/PGPORT/PGDATABASE as PGUSER/PGPASSWORD (from the environment, never the
// command line) with autocommit=false and prepareThreshold=1: a PreparedStatement is a named
// server-side statement from its first execution, and later executions send Bind/Execute/Sync,
// decoding the rows with the fields pgjdbc cached at the first Describe. pgjdbc sends BEGIN in
// the same batch as the first statement of each transaction. Inside a transaction pgjdbc does
// not retry "cached plan must not change result type" (autosave is off): it raises it.
//
// 1. one transaction: select id 1 and insert id 3, commit;
// 2. print READY and wait for "go" on stdin while the test migrates the table;
// 3. one transaction: select id 1 and insert id 4 with the same PreparedStatements, commit.
//
// A statement that fails prints its error and the transaction is rolled back. Prints the
// transcript described in tests/it/drivers_in_transaction.rs; the Rust test judges it.

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.math.BigDecimal;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

import org.postgresql.util.PSQLException;
import org.postgresql.util.ServerErrorMessage;

public class PgjdbcTx {
    static String env(String name, String fallback) {
        String v = System.getenv(name);
        return v == null || v.isEmpty() ? fallback : v;
    }

    static String fmt(Object v) {
        if (v == null) return "NULL";
        if (v instanceof BigDecimal) return ((BigDecimal) v).toPlainString();
        return v.toString();
    }

    /** One step of a transaction: a label, a statement and its parameters. */
    record Step(String label, PreparedStatement ps, Object... args) {}

    /** Runs one statement and prints what the driver decoded; prints and rethrows an error. */
    static void run(Step step) throws SQLException {
        List<String> rows = new ArrayList<>();
        String cols;
        try {
            for (int i = 0; i < step.args.length; i++) {
                step.ps.setObject(i + 1, step.args[i]);
            }
            try (ResultSet rs = step.ps.executeQuery()) {
                ResultSetMetaData md = rs.getMetaData();
                List<String> names = new ArrayList<>();
                for (int i = 1; i <= md.getColumnCount(); i++) {
                    names.add(md.getColumnName(i) + ":" + md.getColumnTypeName(i));
                }
                cols = String.join(",", names);
                while (rs.next()) {
                    List<String> values = new ArrayList<>();
                    for (int i = 1; i <= md.getColumnCount(); i++) {
                        values.add(fmt(rs.getObject(i)));
                    }
                    rows.add(String.join("|", values));
                }
            }
        } catch (PSQLException e) {
            ServerErrorMessage m = e.getServerErrorMessage();
            if (m == null) throw e;
            System.out.println(step.label + ": error=" + m.getSQLState() + " " + m.getMessage()
                    + " routine=" + m.getRoutine());
            System.out.flush();
            throw e;
        }
        System.out.println(step.label + ": columns=" + cols);
        System.out.println(step.label + ": rows=" + rows.size());
        for (String row : rows) System.out.println(step.label + ": row=" + row);
        System.out.flush();
    }

    static void transaction(Connection conn, String phase, Step... steps) throws SQLException {
        try {
            for (Step step : steps) run(step);
            conn.commit();
            System.out.println(phase + ": committed");
        } catch (PSQLException e) {
            if (e.getServerErrorMessage() == null) throw e;
            System.out.println("info: " + phase + " raised " + e.getClass().getName());
            conn.rollback();
            System.out.println(phase + ": rolled back");
        }
        System.out.flush();
    }

    public static void main(String[] argv) throws Exception {
        String url = "jdbc:postgresql://" + env("PGHOST", "127.0.0.1") + ":" + env("PGPORT", "5432")
                + "/" + env("PGDATABASE", "postgres");
        Properties props = new Properties();
        props.setProperty("user", env("PGUSER", "postgres"));
        props.setProperty("password", env("PGPASSWORD", ""));
        props.setProperty("prepareThreshold", "1");
        props.setProperty("autosave", "never");
        props.setProperty("sslmode", "disable");
        try (Connection conn = DriverManager.getConnection(url, props)) {
            conn.setAutoCommit(false);
            System.out.println("driver: pgjdbc " + conn.getMetaData().getDriverVersion()
                    + " (java " + System.getProperty("java.version") + ", autocommit off)");
            PreparedStatement select = conn.prepareStatement("SELECT * FROM orders WHERE id = ?");
            PreparedStatement insert = conn.prepareStatement(
                    "INSERT INTO orders (id, total, note) VALUES (?, ?, ?) RETURNING *");
            transaction(conn, "before",
                    new Step("before select 1", select, 1),
                    new Step("before insert 3", insert, 3, new BigDecimal("30.25"), "third"));
            System.out.println("READY");
            System.out.flush();
            BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
            String line = in.readLine();
            if (line == null || !line.trim().equals("go")) {
                throw new IllegalStateException("expected 'go' on stdin, got " + line);
            }
            transaction(conn, "after",
                    new Step("after select 1", select, 1),
                    new Step("after insert 4", insert, 4, new BigDecimal("40.75"), "fourth"));
        }
        System.out.println("DONE");
    }
}
