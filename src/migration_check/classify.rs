//! What a migration does to one recorded statement, by the rules the heal engine applies.
//!
//! Two questions per statement, from its contract (the recorded RowDescription) and its
//! description after the migration:
//!
//! 1. Would a client talking straight to PostgreSQL get `0A000 cached plan must not change
//!    result type`? PostgreSQL raises it at Bind when the re-analysed statement's result tuple
//!    descriptor is not `equalTupleDescs` to the cached one (`RevalidateCachedQuery`): another
//!    column count, or a column with another name, type, typmod or length. The column's origin
//!    (table OID, attribute number) does not count: a view or table dropped and re-created with
//!    the same columns is re-planned silently.
//! 2. If so, what does pgheal do? Exactly what `heal::repair` does with the re-prepared shape:
//!    [`Projection::compute`] of the new shape onto the contract. The identity (same columns in
//!    the same places, perhaps under new names, or with another typmod) is a plain re-prepare
//!    and retry; a selection (columns added, reordered) is a projection; a contract column gone
//!    or retyped cannot be kept, and the client gets PostgreSQL's error even through pgheal.
//!
//! A statement whose text no longer parses or plans (a renamed or dropped column it names)
//! fails outright, with or without pgheal.

use crate::protocol::backend::Field;
use crate::statements::{Projection, ProjectionError};

/// The class of one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Same result type for PostgreSQL: nothing to heal.
    Unchanged,
    /// 0A000 for a direct client; pgheal re-prepares and retries, rows pass untouched.
    HealedReprepare,
    /// 0A000 for a direct client; pgheal re-prepares, retries and projects the new rows onto the
    /// contract.
    HealedProjection,
    /// 0A000 for a direct client, and pgheal cannot keep the contract: deploy the code first.
    Breaks { reason: String },
    /// The statement itself fails (e.g. 42703 undefined column).
    Fails { sqlstate: String, message: String },
}

impl Verdict {
    /// Short machine name (JSON, Markdown).
    pub fn key(&self) -> &'static str {
        match self {
            Verdict::Unchanged => "unchanged",
            Verdict::HealedReprepare => "healed_reprepare",
            Verdict::HealedProjection => "healed_projection",
            Verdict::Breaks { .. } => "breaks",
            Verdict::Fails { .. } => "fails",
        }
    }

    /// Something the app would see even through pgheal.
    pub fn is_failure(&self) -> bool {
        matches!(self, Verdict::Breaks { .. } | Verdict::Fails { .. })
    }
}

/// The outcome for one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    pub verdict: Verdict,
    /// Without pgheal in front, the app would have seen `0A000 cached plan must not change
    /// result type`.
    pub direct_0a000: bool,
    /// How the description changed, in a few words ("3 columns → 4", ...).
    pub detail: String,
}

/// How describing the statement after the migration went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum After {
    /// RowDescription (or NoData: empty).
    Described(Vec<Field>),
    /// ErrorResponse to Parse/Describe.
    Error { sqlstate: String, message: String },
}

/// PostgreSQL's own result-type check (`equalTupleDescs` over the fields a RowDescription
/// carries): `true` when a cached plan would fail with 0A000.
pub fn result_type_changed(contract: &[Field], after: &[Field]) -> bool {
    contract.len() != after.len()
        || contract.iter().zip(after).any(|(a, b)| {
            a.name != b.name
                || a.type_oid != b.type_oid
                || a.type_mod != b.type_mod
                || a.type_len != b.type_len
        })
}

fn describe_change(contract: &[Field], after: &[Field]) -> String {
    let names = |fs: &[Field]| -> Vec<String> {
        fs.iter()
            .map(|f| String::from_utf8_lossy(&f.name).into_owned())
            .collect()
    };
    let (before, now) = (names(contract), names(after));
    let added: Vec<&String> = now.iter().filter(|n| !before.contains(n)).collect();
    let gone: Vec<&String> = before.iter().filter(|n| !now.contains(n)).collect();
    let mut parts = vec![format!("{} columns → {}", contract.len(), after.len())];
    if !added.is_empty() {
        parts.push(format!(
            "new: {}",
            added
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !gone.is_empty() {
        parts.push(format!(
            "no longer named: {}",
            gone.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let retyped: Vec<String> = contract
        .iter()
        .filter_map(|c| {
            let n = after.iter().find(|a| a.name == c.name)?;
            (n.type_oid != c.type_oid || n.type_mod != c.type_mod).then(|| {
                format!(
                    "{} type {}({}) → {}({})",
                    String::from_utf8_lossy(&c.name),
                    c.type_oid,
                    c.type_mod,
                    n.type_oid,
                    n.type_mod
                )
            })
        })
        .collect();
    if !retyped.is_empty() {
        parts.push(retyped.join(", "));
    }
    parts.join("; ")
}

/// Classify one statement: `contract` as recorded (empty: no rows), `after` as described after
/// the migration.
pub fn classify(contract: &[Field], after: &After) -> Classification {
    let after = match after {
        After::Error { sqlstate, message } => {
            return Classification {
                verdict: Verdict::Fails {
                    sqlstate: sqlstate.clone(),
                    message: message.clone(),
                },
                direct_0a000: false,
                detail: format!("ERROR {sqlstate}: {message}"),
            }
        }
        After::Described(fields) => fields,
    };
    if !result_type_changed(contract, after) {
        return Classification {
            verdict: Verdict::Unchanged,
            direct_0a000: false,
            detail: String::new(),
        };
    }
    let detail = describe_change(contract, after);
    if contract.is_empty() {
        // Not a row-returning statement when the client prepared it: the engine does not watch
        // its Binds, so the error would reach the client.
        return Classification {
            verdict: Verdict::Breaks {
                reason: "the statement returned no rows when it was prepared and returns rows now"
                    .into(),
            },
            direct_0a000: true,
            detail,
        };
    }
    let verdict = match Projection::compute(contract, after) {
        Ok(p) if p.is_identity() => Verdict::HealedReprepare,
        Ok(_) => Verdict::HealedProjection,
        Err(e) => Verdict::Breaks {
            reason: refusal(&e),
        },
    };
    Classification {
        verdict,
        direct_0a000: true,
        detail,
    }
}

fn refusal(e: &ProjectionError) -> String {
    format!("the contract cannot be kept: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, attr: i16, ty: u32, typmod: i32) -> Field {
        Field {
            name: name.into(),
            table_oid: 500,
            column_attr: attr,
            type_oid: ty,
            type_len: -1,
            type_mod: typmod,
            format: 0,
        }
    }

    fn described(fs: &[Field]) -> After {
        After::Described(fs.to_vec())
    }

    const INT4: u32 = 23;
    const INT8: u32 = 20;
    const TEXT: u32 = 25;
    const VARCHAR: u32 = 1043;

    #[test]
    fn same_description_is_unchanged() {
        let c = [f("id", 1, INT4, -1), f("name", 2, TEXT, -1)];
        let got = classify(&c, &described(&c));
        assert_eq!(got.verdict, Verdict::Unchanged);
        assert!(!got.direct_0a000);
        // Re-created table: other OIDs, same names and types: PostgreSQL re-plans silently.
        let mut moved = c.to_vec();
        moved[0].table_oid = 900;
        moved[1].table_oid = 900;
        assert_eq!(classify(&c, &described(&moved)).verdict, Verdict::Unchanged);
        // No rows before, no rows after.
        assert_eq!(classify(&[], &described(&[])).verdict, Verdict::Unchanged);
    }

    #[test]
    fn added_column_is_projected() {
        let c = [f("id", 1, INT4, -1), f("name", 2, TEXT, -1)];
        let after = [
            f("id", 1, INT4, -1),
            f("name", 2, TEXT, -1),
            f("code", 3, VARCHAR, 54),
        ];
        let got = classify(&c, &described(&after));
        assert_eq!(got.verdict, Verdict::HealedProjection);
        assert!(got.direct_0a000);
        assert!(got.detail.contains("2 columns → 3"), "{}", got.detail);
        assert!(got.detail.contains("new: code"), "{}", got.detail);
    }

    #[test]
    fn renamed_column_or_new_typmod_is_a_reprepare() {
        let c = [f("id", 1, INT4, -1), f("code", 2, VARCHAR, 54)];
        let renamed = [f("id", 1, INT4, -1), f("label", 2, VARCHAR, 54)];
        let got = classify(&c, &described(&renamed));
        assert_eq!(got.verdict, Verdict::HealedReprepare);
        assert!(got.direct_0a000);
        let wider = [f("id", 1, INT4, -1), f("code", 2, VARCHAR, 104)];
        let got = classify(&c, &described(&wider));
        assert_eq!(got.verdict, Verdict::HealedReprepare);
        assert!(got.direct_0a000, "typmod is part of PostgreSQL's check");
    }

    #[test]
    fn dropped_or_retyped_contract_column_breaks() {
        let c = [f("id", 1, INT4, -1), f("name", 2, TEXT, -1)];
        let got = classify(&c, &described(&[f("id", 1, INT4, -1)]));
        assert!(
            matches!(&got.verdict, Verdict::Breaks { reason } if reason.contains("\"name\" is gone")),
            "{got:?}"
        );
        assert!(got.direct_0a000);
        assert!(got.verdict.is_failure());
        let got = classify(
            &c,
            &described(&[f("id", 1, INT8, -1), f("name", 2, TEXT, -1)]),
        );
        assert!(
            matches!(&got.verdict, Verdict::Breaks { reason } if reason.contains("changed type")),
            "{got:?}"
        );
    }

    #[test]
    fn parse_errors_fail_outright() {
        let c = [f("id", 1, INT4, -1)];
        let got = classify(
            &c,
            &After::Error {
                sqlstate: "42703".into(),
                message: "column \"x\" does not exist".into(),
            },
        );
        assert!(matches!(&got.verdict, Verdict::Fails { sqlstate, .. } if sqlstate == "42703"));
        assert!(!got.direct_0a000);
        assert!(got.verdict.is_failure());
    }

    #[test]
    fn rows_where_there_were_none_break() {
        let got = classify(&[], &described(&[f("id", 1, INT4, -1)]));
        assert!(matches!(got.verdict, Verdict::Breaks { .. }));
        assert!(got.direct_0a000);
    }
}
