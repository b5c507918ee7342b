//! The summary the test prints (and a failure prints too): per pool mode, what the clients did
//! and saw and what the ledger check found; the migrations by kind and way; the final shapes
//! of the relations; error classes and samples.

use std::fmt::Write as _;

use crate::common::load::Mode;
use crate::stress_migrations::checks::ModeResult;
use crate::stress_migrations::migrator::{way_name, MigratorStats, KINDS, WAYS};
use crate::stress_migrations::Settings;

pub fn report(
    s: &Settings,
    results: &[ModeResult; 2],
    m: &MigratorStats,
    elapsed: f64,
    shapes: &[(&str, (i64, i64))],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "stress_migrations: {} clients ({} session, {} transaction on a pool of {}), {elapsed:.1} s, \
         savepoint guard {}, schema watch on, a migration every {} ms + its run time",
        s.clients,
        s.session_clients(),
        s.clients - s.session_clients(),
        s.tx_pool_size,
        s.guard,
        s.pause.as_millis()
    );
    let modes = [Mode::Session, Mode::Transaction];
    let _ = writeln!(out);
    out += &table(
        &[
            "mode",
            "clients",
            "tx committed",
            "tx rolled back",
            "tx failed",
            "stmts in tx",
            "stmts outside",
            "healed",
            "projected",
            "refused",
            "fwd in tx",
            "guarded Binds",
            "0A000 in tx",
            "0A000 outside",
            "other errors",
            "bad rows",
        ],
        modes.iter().zip(results).map(|(mode, r)| {
            vec![
                mode.name().to_string(),
                r.clients.to_string(),
                r.committed.to_string(),
                r.rolled_back.to_string(),
                r.failed_tx.to_string(),
                r.in_tx.to_string(),
                r.outside.to_string(),
                r.healed.to_string(),
                r.projected.to_string(),
                r.refused.to_string(),
                r.forwarded_in_tx.to_string(),
                r.guarded.to_string(),
                r.in_tx_cached_plan().to_string(),
                (r.cached_plan() - r.in_tx_cached_plan()).to_string(),
                (r.errors.total() - r.cached_plan()).to_string(),
                r.bad_rows.to_string(),
            ]
        }),
    );
    let _ = writeln!(out);
    out += &table(
        &[
            "ledger",
            "acknowledged",
            "present once",
            "duplicates",
            "missing",
            "id mismatch",
            "failed (present)",
            "rolled back (present)",
            "uncertain (present)",
            "unknown rows",
            "balances ok",
        ],
        modes.iter().zip(results).map(|(mode, r)| {
            let w = &r.writes;
            vec![
                mode.name().to_string(),
                w.acked.to_string(),
                w.confirmed.to_string(),
                w.duplicates.to_string(),
                w.missing.to_string(),
                w.id_mismatch.to_string(),
                format!("{} ({})", w.failed, w.failed_present),
                format!("{} ({})", w.rolled_back, w.rolled_back_present),
                format!("{} ({})", w.uncertain, w.uncertain_present),
                w.unknown.to_string(),
                format!(
                    "{}/{}",
                    r.balances_checked - r.balance_mismatches,
                    r.balances_checked
                ),
            ]
        }),
    );
    if s.guard == "off" {
        let _ = writeln!(
            out,
            "savepoint guard off: the 0A000 errors inside transactions are expected (a Bind that \
             waited for a migration's lock fails when it commits) and not asserted"
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "migrations: {} succeeded, {} failed, {} skipped (column limit)",
        m.total(),
        m.errors.len(),
        m.skipped
    );
    let ways: Vec<String> = WAYS.iter().map(|w| way_name(*w)).collect();
    let mut header = vec!["kind"];
    header.extend(ways.iter().map(String::as_str));
    header.push("total");
    out += &table(
        &header,
        KINDS.iter().map(|kind| {
            let row = &m.done[*kind as usize];
            let mut cells = vec![kind.name().to_string()];
            cells.extend(row.iter().map(u32::to_string));
            cells.push(row.iter().sum::<u32>().to_string());
            cells
        }),
    );
    let shape: Vec<String> = shapes
        .iter()
        .map(|(rel, (live, dropped))| format!("{rel} {live} columns (+{dropped} dropped)"))
        .collect();
    let _ = writeln!(out, "final shapes: {}", shape.join(", "));
    for (mode, r) in modes.iter().zip(results) {
        if r.errors.total() > 0 {
            let _ = writeln!(out);
            let _ = writeln!(out, "{} client errors by class:", mode.name());
            for ((class, code), n) in &r.errors.counts {
                let _ = writeln!(out, "  {class} {code}: {n}");
            }
        }
        if r.reprepared > 0 {
            let _ = writeln!(
                out,
                "{}: statements prepared again by clients after a cached-plan error: {}",
                mode.name(),
                r.reprepared
            );
        }
        for line in r
            .errors
            .all_samples()
            .chain(&r.bad_samples)
            .chain(&r.writes.samples)
            .chain(&r.balance_samples)
        {
            let _ = writeln!(out, "    {line}");
        }
    }
    for e in &m.errors {
        let _ = writeln!(out, "  migrator: {e}");
    }
    out
}

/// A Markdown table: the first column left-aligned, the others right-aligned, padded so the
/// table also reads as plain text.
fn table(header: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows.collect();
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].len())
            .chain([header[i].len()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let line = |cells: Vec<String>| {
        let cells: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| match i {
                0 => format!("{c:<w$}", w = widths[i]),
                _ => format!("{c:>w$}", w = widths[i]),
            })
            .collect();
        format!("| {} |\n", cells.join(" | "))
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(i, w)| match i {
            0 => "-".repeat(w + 2),
            _ => format!("{}:", "-".repeat(w + 1)),
        })
        .collect();
    out += &format!("|{}|\n", rule.join("|"));
    for r in rows {
        out += &line(r);
    }
    out
}
