//! The check's table as text (a terminal), Markdown (a pull-request comment) or JSON (tools).

use serde::Serialize;

use super::classify::Verdict;
use super::{Report, Row};

/// Output format of `pgheal check-migration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Markdown,
    Json,
}

/// The verdict in words.
fn verdict_text(v: &Verdict) -> &'static str {
    match v {
        Verdict::Unchanged => "unchanged",
        Verdict::HealedReprepare => "healed by pgheal (re-prepare)",
        Verdict::HealedProjection => "healed by pgheal (projection)",
        Verdict::Breaks { .. } => "BREAKS even through pgheal",
        Verdict::Fails { .. } => "FAILS outright",
    }
}

/// What happens, in one sentence.
fn what(row: &Row) -> String {
    let c = &row.class;
    match &c.verdict {
        Verdict::Unchanged if row.statement.columns.is_empty() => "returns no rows".into(),
        Verdict::Unchanged => "same result columns".into(),
        Verdict::HealedReprepare => format!(
            "{} — pgheal re-prepares and retries, rows pass as they are",
            c.detail
        ),
        Verdict::HealedProjection => format!(
            "{} — pgheal re-prepares, retries and cuts rows to the columns the app knows",
            c.detail
        ),
        Verdict::Breaks { reason } => {
            format!("{} — {reason}; deploy the code first", c.detail)
        }
        Verdict::Fails { .. } => format!("{} — the SQL itself no longer works", c.detail),
    }
}

fn direct(row: &Row) -> &'static str {
    match (&row.class.verdict, row.class.direct_0a000) {
        (_, true) => "0A000 cached plan must not change result type",
        (Verdict::Fails { .. }, false) => "the same error",
        _ => "works",
    }
}

/// The note for [`Row::already_differs`].
const STALE: &str = "the schema already differed from the recording before this migration";

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn counts(r: &Report) -> Vec<(&'static str, usize)> {
    let n = |k: &str| r.rows.iter().filter(|x| x.class.verdict.key() == k).count();
    vec![
        ("unchanged", n("unchanged")),
        ("healed (re-prepare)", n("healed_reprepare")),
        ("healed (projection)", n("healed_projection")),
        ("breaks", n("breaks")),
        ("fails", n("fails")),
    ]
}

fn where_ran(r: &Report) -> String {
    match &r.mode_reason {
        None => "the migration ran in a transaction on the upstream and was rolled back".into(),
        Some(why) => format!(
            "the migration ran in a scratch database created from the upstream's schema \
             and then dropped: {why}"
        ),
    }
}

fn summary(r: &Report) -> String {
    counts(r)
        .into_iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Plain text for a terminal.
pub fn text(r: &Report) -> String {
    let mut out = format!(
        "pgheal check-migration: {} statements; {}\n\n",
        r.rows.len(),
        where_ran(r)
    );
    for (i, row) in r.rows.iter().enumerate() {
        out.push_str(&format!(
            "{:>3}. {}\n     {}\n     how:            {}\n     without pgheal: {}\n",
            i + 1,
            verdict_text(&row.class.verdict),
            one_line(&row.statement.sql),
            what(row),
            direct(row)
        ));
        if row.already_differs {
            out.push_str(&format!("     note:           {STALE}\n"));
        }
    }
    out.push_str(&format!("\n{}\n", summary(r)));
    if r.exit_status() != 0 {
        out.push_str("Something breaks even through pgheal: exit status 1.\n");
    }
    out
}

fn md_cell(s: &str) -> String {
    one_line(s).replace('|', "\\|")
}

/// Markdown for a pull-request comment.
pub fn markdown(r: &Report) -> String {
    let mut out = String::from("### pgheal check-migration\n\n");
    out.push_str(&format!("{}; {}.\n\n", summary(r), where_ran(r)));
    out.push_str("| # | statement | result | how | without pgheal |\n|---|---|---|---|---|\n");
    for (i, row) in r.rows.iter().enumerate() {
        let mut how = md_cell(&what(row));
        if row.already_differs {
            how.push_str(&format!(" (note: {STALE})"));
        }
        out.push_str(&format!(
            "| {} | `{}` | {} | {} | {} |\n",
            i + 1,
            md_cell(&row.statement.sql).replace('`', "'"),
            verdict_text(&row.class.verdict),
            how,
            direct(row)
        ));
    }
    if r.exit_status() != 0 {
        out.push_str("\n**Something breaks even through pgheal**: deploy the code that stops using it first.\n");
    }
    out
}

#[derive(Serialize)]
struct JsonReport<'a> {
    mode: &'static str,
    mode_reason: Option<&'a str>,
    exit_status: u8,
    summary: JsonSummary,
    statements: Vec<JsonRow<'a>>,
}

#[derive(Serialize)]
struct JsonSummary {
    unchanged: usize,
    healed_reprepare: usize,
    healed_projection: usize,
    breaks: usize,
    fails: usize,
}

#[derive(Serialize)]
struct JsonRow<'a> {
    database: &'a str,
    sql: &'a str,
    param_types: &'a [u32],
    verdict: &'static str,
    detail: &'a str,
    reason: Option<&'a str>,
    sqlstate: Option<&'a str>,
    /// Without pgheal the app would have seen 0A000.
    direct_0a000: bool,
    /// The schema already differed from the recording before the migration.
    already_differs: bool,
}

/// JSON for tools.
pub fn json(r: &Report) -> String {
    let c = counts(r);
    let rep = JsonReport {
        mode: r.mode.key(),
        mode_reason: r.mode_reason.as_deref(),
        exit_status: r.exit_status(),
        summary: JsonSummary {
            unchanged: c[0].1,
            healed_reprepare: c[1].1,
            healed_projection: c[2].1,
            breaks: c[3].1,
            fails: c[4].1,
        },
        statements: r
            .rows
            .iter()
            .map(|row| {
                let (reason, sqlstate) = match &row.class.verdict {
                    Verdict::Breaks { reason } => (Some(reason.as_str()), None),
                    Verdict::Fails { sqlstate, message } => {
                        (Some(message.as_str()), Some(sqlstate.as_str()))
                    }
                    _ => (None, None),
                };
                JsonRow {
                    database: &row.statement.database,
                    sql: &row.statement.sql,
                    param_types: &row.statement.param_types,
                    verdict: row.class.verdict.key(),
                    detail: &row.class.detail,
                    reason,
                    sqlstate,
                    direct_0a000: row.class.direct_0a000,
                    already_differs: row.already_differs,
                }
            })
            .collect(),
    };
    serde_json::to_string_pretty(&rep).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// The report in `format`.
pub fn render(r: &Report, format: Format) -> String {
    match format {
        Format::Text => text(r),
        Format::Markdown => markdown(r),
        Format::Json => json(r) + "\n",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migration_check::classify::Classification;
    use crate::migration_check::record::Recorded;
    use crate::migration_check::Mode;

    fn row(sql: &str, verdict: Verdict, direct_0a000: bool) -> Row {
        Row {
            statement: Recorded {
                database: "db".into(),
                sql: sql.into(),
                param_types: vec![23],
                columns: vec![],
            },
            class: Classification {
                verdict,
                direct_0a000,
                detail: "2 columns → 3".into(),
            },
            already_differs: false,
        }
    }

    #[test]
    fn formats_carry_every_row() {
        let r = Report {
            mode: Mode::RolledBack,
            mode_reason: None,
            rows: vec![
                row(
                    "SELECT * FROM t\n WHERE id = $1",
                    Verdict::HealedProjection,
                    true,
                ),
                row(
                    "SELECT a | b FROM t",
                    Verdict::Breaks {
                        reason: "column \"b\" is gone".into(),
                    },
                    true,
                ),
            ],
        };
        assert_eq!(r.exit_status(), 1);
        let t = text(&r);
        assert!(t.contains("healed by pgheal (projection)"), "{t}");
        assert!(t.contains("SELECT * FROM t WHERE id = $1"), "{t}");
        assert!(t.contains("1 breaks"), "{t}");
        let m = markdown(&r);
        assert!(m.contains("`SELECT a \\| b FROM t`"), "{m}");
        let j: serde_json::Value = serde_json::from_str(&json(&r)).unwrap();
        assert_eq!(j["exit_status"], 1);
        assert_eq!(j["statements"][0]["verdict"], "healed_projection");
        assert_eq!(j["statements"][1]["reason"], "column \"b\" is gone");
        assert_eq!(j["summary"]["breaks"], 1);
    }
}
